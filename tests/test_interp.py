"""The reference interpreter and the VM API: semantics of every form, calls, helpers, budget, tracing."""
from __future__ import annotations


import pytest

import pybpf
from pybpf import isa
from pybpf.datafile import parse_data_file
from pybpf.errors import DecodeError, MemoryAccessError, VerifierError, VMError
from pybpf.insn import make
from pybpf.program import Program
from pybpf.runtime.helpers import Prototype, kernel_helpers, ubpf_test_helpers
from pybpf.runtime.interp_snippets import has_snippet
from pybpf.vm import VM as _VM


class VM(_VM):
    """The interpreter's own tests load with the structural checks only: they run programs the
    verifier refuses (a stray shift, an access out of bounds) to test the interpreter's
    semantics and its run-time memory checks. tests/verifier/ covers the verifier."""

    def load(self, prog, *args, verify="structural", **kw):
        return super().load(prog, *args, verify=verify, **kw)

from support import conformance_files

M64 = (1 << 64) - 1


def I(name, dst=0, src=0, off=0, imm=0, imm2=0):
    return make(name, dst, src, off, imm, imm2)


def prog(*parts, **kw) -> Program:
    return Program([i for p in parts for i in p], **kw)


def run(*parts, mem=None, helpers=None, **kw) -> int:
    vm = VM(helpers=helpers)
    return vm.load(prog(*parts), **kw).run(mem=mem)


def set64(reg, value):
    return I("lddw", reg, imm=value & 0xFFFFFFFF, imm2=(value >> 32) & 0xFFFFFFFF)


def alu(name, a, b=None, imm=0):
    """r0 after ``r0 = a; r1 = b; <name> r0, r1-or-imm``."""
    src = 1 if name.endswith("_reg") else 0
    return run(set64(0, a), set64(1, b or 0), I(name, 0, src, imm=imm), I("exit"))


# --- the table ---------------------------------------------------------------------------------
def test_every_form_has_an_interpreter_snippet():
    missing = [f.name for f in isa.FORMS if not has_snippet(f)]
    assert missing == []


# --- ALU semantics (RFC 9669 section 4, as the kernel runs them) -------------------------------
S64_MIN, S32_MIN = 1 << 63, 1 << 31

ALU_CASES = [
    ("add64_reg", M64, 2, 0, 1),                       # wrap-around
    ("add32_reg", 0xFFFFFFFF_FFFFFFFF, 1, 0, 0),       # 32-bit wraps and zeroes the upper half
    ("add32_imm", 0x12345678_00000001, None, 1, 2),
    ("mov64_imm", 0, None, -10, 0xFFFFFFFFFFFFFFF6),   # sign-extended imm
    ("mov32_imm", 0, None, -1, 0xFFFFFFFF),
    ("mov32_reg", 0, 0xAABBCCDD_11223344, 0, 0x11223344),
    ("sub64_imm", 0, None, 1, M64),
    ("mul32_reg", 0x80000000, 0xFFFFFFFF, 0, 0x80000000),
    ("mul64_imm", 3, None, -1, M64 - 2),
    ("div64_reg", 100, 0, 0, 0),                       # x / 0 = 0
    ("div32_reg", 0xFFFFFFFF_00000064, 0, 0, 0),
    ("div64_imm", 100, None, -10, 0),                  # divides by 0xff..f6 unsigned
    ("div32_imm", 0x1_00000064, None, 10, 10),         # upper half of dst ignored
    ("mod64_reg", 100, 0, 0, 100),                     # x % 0 = x
    ("mod32_reg", 0xFFFFFFFF_00000064, 0, 0, 100),     # ... still zero-extended
    ("mod64_imm", 100, None, 7, 2),
    ("sdiv64_reg", S64_MIN, M64, 0, S64_MIN),          # INT_MIN / -1 = INT_MIN
    ("sdiv32_reg", S32_MIN, 0xFFFFFFFF, 0, S32_MIN),
    ("sdiv64_imm", (-13) & M64, None, 3, (-4) & M64),  # truncates toward zero
    ("sdiv32_imm", (-13) & 0xFFFFFFFF, None, 3, (-4) & 0xFFFFFFFF),
    ("sdiv64_reg", 5, 0, 0, 0),
    ("smod64_reg", S64_MIN, M64, 0, 0),                # INT_MIN % -1 = 0
    ("smod64_imm", (-13) & M64, None, 3, (-1) & M64),  # sign of the dividend
    ("smod32_imm", 13, None, -3, 1),
    ("smod32_reg", 0xFFFFFFFF_FFFFFFF3, 0, 0, 0xFFFFFFF3),  # % 0 keeps dst, zero-extended
    ("smod64_reg", (-7) & M64, 0, 0, (-7) & M64),
    ("or64_imm", 0xF0, None, -256, M64 - 0xF),
    ("and32_imm", M64, None, -1, 0xFFFFFFFF),
    ("xor64_reg", 0xFF, 0x0F, 0, 0xF0),
    ("lsh64_reg", 1, 65, 0, 2),                        # count masked to 63
    ("lsh32_imm", 1, None, -4, 1 << 28),               # -4 & 31 = 28
    ("lsh32_reg", 0xFFFFFFFF, 33, 0, 0xFFFFFFFE),
    ("rsh64_imm", M64, None, 60, 0xF),
    ("rsh32_reg", M64, 36, 0, 0x0FFFFFFF),
    ("arsh64_imm", S64_MIN, None, 63, M64),
    ("arsh32_imm", 0xFFFFFFFF_80000000, None, 31, 0xFFFFFFFF),
    ("arsh32_reg", 0x80000000, 32, 0, 0x80000000),     # count 32 & 31 = 0
    ("neg64", S64_MIN, None, 0, S64_MIN),
    ("neg32", 0xFFFFFFFF_00000001, None, 0, 0xFFFFFFFF),
    ("movsx8_64", 0, 0x80, 0, 0xFFFFFFFFFFFFFF80),
    ("movsx16_64", 0, 0x1_7FFF, 0, 0x7FFF),
    ("movsx32_64", 0, 0x80000000, 0, 0xFFFFFFFF80000000),
    ("movsx8_32", 0, 0xFF, 0, 0xFFFFFFFF),
    ("movsx16_32", 0, 0x8000, 0, 0xFFFF8000),
    ("le16", 0x1122334455667788, None, 16, 0x7788),
    ("le32", 0x1122334455667788, None, 32, 0x55667788),
    ("le64", 0x1122334455667788, None, 64, 0x1122334455667788),
    ("be16", 0x1122334455667788, None, 16, 0x8877),
    ("be32", 0x1122334455667788, None, 32, 0x88776655),
    ("be64", 0x1122334455667788, None, 64, 0x8877665544332211),
    ("bswap16", 0x1122334455667788, None, 16, 0x8877),
    ("bswap32", 0x1122334455667788, None, 32, 0x88776655),
    ("bswap64", 0x1122334455667788, None, 64, 0x8877665544332211),
]


@pytest.mark.parametrize("name,a,b,imm,want", ALU_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ALU_CASES)])
def test_alu(name, a, b, imm, want):
    form = isa.FORMS_BY_NAME[name]
    if form.kind in ("neg", "end"):
        assert run(set64(0, a), I(name, 0, imm=imm), I("exit")) == want
    elif form.kind == "movsx":
        assert run(set64(1, b), I(name, 0, 1), I("exit")) == want
    else:
        assert alu(name, a, b, imm) == want


JMP_CASES = [  # (form, a, b or imm, taken?)
    ("jeq64_imm", 0xFFFFFFFF80000000, -0x80000000, True),   # imm sign-extended
    ("jeq32_imm", 0xAAAAAAAA_00000005, 5, True),            # upper half ignored
    ("jgt64_reg", M64, 1, True), ("jsgt64_reg", M64, 1, False),
    ("jge64_imm", 5, 5, True), ("jlt64_imm", 4, 5, True), ("jle32_reg", 0x1_00000006, 5, False),
    ("jslt64_imm", M64, 0, True), ("jsle32_imm", 0x7FFFFFFF, -1, False),
    ("jsge32_reg", 0xFFFFFFFF, 0xFFFFFFFF, True), ("jset64_imm", 0x10, 0x30, True),
    ("jset32_reg", 0x1_00000000, 0x1_00000000, False), ("jne64_reg", 1, 1, False),
    ("jsgt32_imm", 0x80000000, 0, False), ("jslt32_reg", 0x80000000, 0x7FFFFFFF, True),
]


@pytest.mark.parametrize("name,a,b,taken", JMP_CASES,
                         ids=[c[0] + f"-{i}" for i, c in enumerate(JMP_CASES)])
def test_conditional_jumps(name, a, b, taken):
    form = isa.FORMS_BY_NAME[name]
    jump = I(name, 1, 2, off=1) if form.source == "X" else I(name, 1, off=1, imm=b)
    r0 = run(set64(1, a), set64(2, b), I("mov64_imm", 0, imm=1), jump, I("mov64_imm", 0, imm=2),
             I("exit"))
    assert r0 == (1 if taken else 2)


def test_ja_and_gotol():
    assert run(I("mov64_imm", 0, imm=1), I("ja", off=1), I("mov64_imm", 0, imm=2),
               I("gotol", imm=1), I("mov64_imm", 0, imm=3), I("exit"), verify=False) == 1
    assert run(I("mov64_imm", 0, imm=1), I("gotol", imm=2), I("mov64_imm", 0, imm=2),
               I("exit"), I("ja", off=-2), verify=False) == 1


def test_lddw_is_one_instruction_of_two_slots():
    p = prog(I("ja", off=2), set64(0, 7), I("exit"))   # jumps over both slots
    assert VM().load(p, verify=False).run() == 0
    assert run(set64(0, 0x1122334455667788), I("exit")) == 0x1122334455667788


def test_unverified_bad_jumps_raise_instead_of_running_on():
    # into the other subprogram: refused when taken
    def two_funcs(x):
        return prog(I("mov64_imm", 0, imm=x), I("jeq64_imm", 0, imm=2, off=3),
                    I("call_local", imm=1), I("exit"), I("mov64_imm", 0, imm=7), I("exit"))
    assert VM().load(two_funcs(1), verify=False).run() == 7
    with pytest.raises(VMError, match="jump out of range from insn 1 to 5"):
        VM().load(two_funcs(2), verify=False).run()
    # past the end of the program: refused at load or when taken, never run on
    p = prog(I("jeq64_imm", 0, imm=0, off=100), I("exit"))
    with pytest.raises(VMError, match="jump out of range"):
        VM().load(p, verify=False).run()
    with pytest.raises(VerifierError, match="jump out of range from insn 0 to 101"):
        VM().load(p)


# --- memory ------------------------------------------------------------------------------------
def test_mem_pointer_length_and_private_copy():
    caller = bytearray(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    p = prog(I("ldxw", 0, 1, off=4), I("stb", 1, off=0, imm=0x99), I("add64_reg", 0, 2),
             I("exit"))
    lp = VM().load(p)
    assert lp.run(mem=caller) == 0x08070605 + 8
    assert lp.last_mem == b"\x99" + bytes(caller[1:])
    assert caller == bytearray(b"\x01\x02\x03\x04\x05\x06\x07\x08")   # the caller's copy
    lp2 = VM().load(prog(I("mov64_reg", 0, 1), I("or64_reg", 0, 2), I("exit")))
    assert lp2.run() == 0 and lp2.last_mem is None                      # no mem: r1 = r2 = 0


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_loads_and_stores_every_size(size):
    sn = isa.SIZE_NAME[size]
    mem = bytes(range(0x81, 0x91))
    p = prog(I(f"ldx{sn}", 3, 1, off=3), I(f"stx{sn}", 10, 3, off=-8), I(f"ldx{sn}", 0, 10, off=-8),
             I(f"st{sn}", 1, off=8, imm=-2), I("exit"))
    lp = VM().load(p)
    want = int.from_bytes(mem[3:3 + size], "little")
    assert lp.run(mem=mem) == want
    assert lp.last_mem[8:8 + size] == ((-2) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    if size < 8:
        p = prog(I(f"ldxs{sn}", 0, 1, off=3), I("exit"))
        signed = int.from_bytes(mem[3:3 + size], "little", signed=True)
        assert VM().load(p).run(mem=mem) == signed & M64


def test_stdw_sign_extends_imm():
    lp = VM().load(prog(I("stdw", 1, imm=-2), I("ldxdw", 0, 1), I("exit")))
    assert lp.run(mem=bytes(8)) == M64 - 1


ATOMIC_CASES = [  # (form, memory before, src, r0 before, memory after, src after, r0 after)
    ("atomic_add64", 5, 3, 0, 8, 3, 0),
    ("atomic_or32", 0x10, 0x1_00000001, 0, 0x11, 0x1_00000001, 0),
    ("atomic_and64", 0xFF, 0x0F, 0, 0x0F, 0x0F, 0),
    ("atomic_xor32", 0xFF, 0x0F, 0, 0xF0, 0x0F, 0),
    ("atomic_fetch_add64", 5, 3, 0, 8, 5, 0),
    ("atomic_fetch_add32", 0xFFFFFFFF, 1, 0, 0, 0xFFFFFFFF, 0),        # fetched value zero-extended
    ("atomic_fetch_or64", 1, 2, 0, 3, 1, 0),
    ("atomic_fetch_and32", 0xF0F0, 0xFF00, 0, 0xF000, 0xF0F0, 0),
    ("atomic_fetch_xor64", 6, 3, 0, 5, 6, 0),
    ("atomic_xchg64", 7, 9, 0, 9, 7, 0),
    ("atomic_xchg32", 7, 0xAB_00000009, 0, 9, 7, 0),
    ("atomic_cmpxchg64", 7, 9, 7, 9, 9, 7),                               # equal: store, r0 = old
    ("atomic_cmpxchg64", 7, 9, 6, 7, 9, 7),                               # differ: no store
    ("atomic_cmpxchg32", 7, 9, 0xFF_00000007, 9, 9, 7),                  # compares low 32 bits
]


@pytest.mark.parametrize("name,before,src,r0,after,src_after,r0_after", ATOMIC_CASES)
def test_atomics(name, before, src, r0, after, src_after, r0_after):
    size = isa.FORMS_BY_NAME[name].size
    p = prog(set64(2, src), set64(0, r0), I(name, 1, 2, off=8),
             I("stxdw", 1, 2, off=16), I("stxdw", 1, 0, off=24), I("exit"))
    lp = VM().load(p)
    lp.run(mem=bytes(8) + before.to_bytes(8, "little") + bytes(16))
    m = lp.last_mem
    assert int.from_bytes(m[8:8 + size], "little") == after
    assert int.from_bytes(m[16:24], "little") == src_after
    assert int.from_bytes(m[24:32], "little") == r0_after


def test_load_acquire_store_release():
    p = prog(I("load_acqw", 0, 1, off=0), I("store_relh", 1, 0, off=4), I("exit"))
    lp = VM().load(p)
    assert lp.run(mem=b"\x01\x02\x03\x04\0\0\0\0") == 0x04030201
    assert lp.last_mem[4:] == b"\x01\x02\0\0"


@pytest.mark.parametrize("address", [0, 8, 0xDEADBEEF, M64, 1 << 47])
def test_wild_pointers_raise_before_touching_memory(address):
    p = prog(set64(3, address), I("ldxdw", 0, 3, off=0), I("exit"))
    with pytest.raises(MemoryAccessError) as e:
        VM().load(p).run(mem=bytes(8))
    assert (e.value.pc, e.value.address, e.value.size, e.value.kind) == (2, address, 8, "read")


def test_fault_address_is_the_wrapped_64_bit_address():
    for op in (I("ldxdw", 0, 1, off=-8), I("stdw", 1, off=-8, imm=0),
               I("atomic_add64", 1, 2, off=-8)):
        with pytest.raises(MemoryAccessError) as e:
            VM().load(prog(op, I("exit"))).run()     # no mem: r1 = 0
        assert e.value.address == M64 - 7 and "0xfffffffffffffff8" in str(e.value)


def test_out_of_bounds_store_leaves_neighbours_and_mem_alone():
    mem = bytes(range(16))
    for off in (16, -1, 13):      # just past the end, just before, straddling the end
        p = prog(I("stw", 1, off=off, imm=0x41414141), I("mov64_imm", 0, imm=1), I("exit"))
        lp = VM().load(p)
        with pytest.raises(MemoryAccessError) as e:
            lp.run(mem=mem)
        assert e.value.kind == "write" and e.value.pc == 0
        assert lp.last_mem == mem                   # nothing written, not even the in-range part
        assert lp.last_buffer.guards_intact()       # the canary bytes around the copy


def test_store_to_a_callers_buffer_is_refused():
    import ctypes
    canary = ctypes.create_string_buffer(b"CANARY!!", 8)
    addr = ctypes.addressof(canary)
    p = prog(I("ldxdw", 3, 1), I("stdw", 3, imm=0), I("exit"))
    with pytest.raises(MemoryAccessError) as e:
        VM().load(p).run(mem=addr.to_bytes(8, "little"))
    assert e.value.address == addr and canary.raw[:8] == b"CANARY!!"


def test_stack_is_bounded_to_active_frames():
    # r10 - 520 is below the main frame (that would be a callee's frame): refused.
    p = prog(I("mov64_reg", 3, 10), I("ldxdw", 0, 3, off=-520), I("exit"))
    with pytest.raises(MemoryAccessError):
        VM().load(p).run()
    p = prog(I("mov64_reg", 3, 10), I("ldxdw", 0, 3, off=0), I("exit"))   # above the stack top
    with pytest.raises(MemoryAccessError):
        VM().load(p).run()


def test_a_returned_callee_frame_is_dead():
    # The callee returns a pointer into its own frame; after the return it is out of bounds.
    p = prog(I("call_local", imm=2), I("ldxdw", 0, 0), I("exit"),
             I("stdw", 10, off=-8, imm=5), I("mov64_reg", 0, 10), I("add64_imm", 0, imm=-8),
             I("exit"))
    with pytest.raises(MemoryAccessError) as e:
        VM().load(p).run()
    assert e.value.pc == 1


def test_writing_r10_does_not_move_the_frame():
    # Unverified: r10 is overwritten with a mem pointer; the frame check still uses the frame.
    p = prog(I("mov64_reg", 10, 1), I("stdw", 10, off=-8, imm=5), I("exit"))
    with pytest.raises(MemoryAccessError):
        VM().load(p, verify=False).run(mem=bytes(16))


def test_ldabs_needs_packet_and_is_big_endian():
    p = prog(I("ldabsh", imm=1), I("exit"))
    with pytest.raises(VMError, match="socket-filter"):
        VM().load(p).run()
    assert VM().load(p).run(data=b"\x00\x12\x34") == 0x1234
    assert VM().load(p).run(data=b"\x00\x12") == 0                 # out of bounds: r0 = 0
    p = prog(I("mov64_imm", 0, imm=7), I("mov64_imm", 2, imm=2), I("ldindb", 0, 2, imm=-1),
             I("exit"))
    assert VM().load(p).run(data=b"\x00\xAB") == 0xAB


# --- calls -------------------------------------------------------------------------------------
CALL_PROG = """
    r6 = 6
    r7 = 7
    r1 = 11
    *(u64 *)(r10 - 8) = r1
    r1 = r10
    r1 += -8
    call f
    r2 = *(u64 *)(r10 - 8)
    r0 += r2
    r0 += r6
    r0 += r7
    exit
f:
    r2 = *(u64 *)(r1 + 0)
    r3 = 1000
    *(u64 *)(r10 - 8) = r3
    r6 = 0
    r7 = 0
    r0 = r2
    r0 += 100
    exit
"""


def test_call_local_fresh_frame_and_callee_saved_registers():
    # The callee reads the caller's slot through a pointer, writes its own frame's -8 slot
    # (not the caller's), clobbers r6/r7, which the caller still sees as 6 and 7.
    assert VM().load(pybpf.assemble(CALL_PROG)).run() == 111 + 11 + 6 + 7


def test_call_depth_limit():
    p = prog(I("call_local", imm=-1), I("exit"))    # infinite recursion
    with pytest.raises(VMError, match="call stack of 9 frames is too deep"):
        VM().load(p, verify=False).run()
    # the structural checks walk calls as check_max_stack_depth does: its 8th nested call is
    # "8 frames ... !" (tests/verifier/subprog/dead_calls_too_deep.vt; the full verifier's
    # do_check counts 9 first, as the kernel's)
    with pytest.raises(VerifierError, match="the call stack of 8 frames is too deep !"):
        VM().load(p)
    with pytest.raises(VerifierError, match="the call stack of 9 frames is too deep$"):
        VM().load(p, verify=True)
    # 8 frames are fine: main + 7 nested calls
    chain = [I("call_local", imm=1) + I("exit") for _ in range(7)]
    p = prog(*chain, I("mov64_imm", 0, imm=8), I("exit"))
    assert VM().load(p).run() == 8
    p = prog(*chain, I("call_local", imm=1), I("exit"), I("mov64_imm", 0, imm=9), I("exit"))
    with pytest.raises(VMError, match="too deep"):
        VM().load(p, verify=False).run()


def test_combined_stack_limit_at_verify():
    big = I("stdw", 10, off=-400, imm=1)
    p = prog(big, I("call_local", imm=1), I("exit"), big, I("exit"))
    with pytest.raises(VerifierError, match="combined stack size of 2 calls is 800"):
        VM().load(p)
    assert VM().load(p, verify=False).run() == 0      # at run time each frame has 512 bytes


def test_may_goto_budget_per_frame():
    # main exhausts its may_goto budget (r6 counts the iterations), then calls f, whose own
    # fresh counter lets it fall through once (r0 = 1); a shared counter would give r0 = 0.
    p = prog(I("mov64_imm", 6, imm=0), I("may_goto", off=2), I("add64_imm", 6, imm=1),
             I("ja", off=-3), I("call_local", imm=2), I("add64_reg", 0, 6), I("exit"),
             I("mov64_imm", 0, imm=0), I("may_goto", off=1), I("mov64_imm", 0, imm=1), I("exit"))
    assert VM().load(p).run() == isa.BPF_MAX_LOOPS + 1


# --- helpers -----------------------------------------------------------------------------------
def test_ubpf_helpers_and_callx():
    h = ubpf_test_helpers()
    p = prog(*[I("mov64_imm", r, imm=v) for r, v in ((1, 0x101), (2, 2), (3, 3), (4, 4), (5, 5))],
             I("call_helper", imm=0), I("exit"))
    assert run(p.insns, helpers=h) == 0x0102030405
    p = prog(I("mov64_imm", 1, imm=10000), I("mov64_imm", 2, imm=3), I("callx", 2), I("exit"))
    assert run(p.insns, helpers=h) == 100
    p = prog(I("mov64_imm", 2, imm=77), I("callx", 2), I("exit"))
    with pytest.raises(VMError, match="callx to unknown helper id 77"):
        run(p.insns, helpers=h)


def test_unwind_stops_the_program():
    h = ubpf_test_helpers()
    body = [I("call_helper", imm=5), I("mov64_imm", 0, imm=2), I("exit")]
    assert run(I("mov64_imm", 1, imm=0), *body, helpers=h) == 0
    assert run(I("mov64_imm", 1, imm=-1), *body, helpers=h) == 2
    # from inside a subprogram too: the whole program stops
    p = prog(I("call_local", imm=2), I("mov64_imm", 0, imm=9), I("exit"),
             I("mov64_imm", 1, imm=0), *body)
    assert VM(helpers=h).load(p).run() == 0


def test_memfrob_checks_its_pointer_argument():
    h = ubpf_test_helpers()
    p = prog(I("mov64_reg", 6, 1), I("call_helper", imm=1), I("ldxb", 0, 6), I("exit"))
    lp = VM(helpers=h).load(p)
    assert lp.run(mem=b"\x01\x02") == 1 ^ 42 and lp.last_mem == bytes([1 ^ 42, 2 ^ 42])
    p = prog(I("mov64_imm", 2, imm=100), I("call_helper", imm=1), I("exit"))
    lp = VM(helpers=h).load(p)
    with pytest.raises(MemoryAccessError) as e:
        lp.run(mem=b"\x01\x02")
    assert e.value.pc == 1 and lp.last_mem == b"\x01\x02"


def test_helper_exception_propagates_unchanged():
    class Boom(Exception):
        pass

    def boom():
        raise Boom("from helper")

    vm = VM()
    vm.register_helper(200, boom, prototype=Prototype())
    with pytest.raises(Boom, match="from helper"):
        vm.load(prog(I("call_helper", imm=200), I("exit"))).run()


def test_helper_mem_args_hook_is_checked_before_the_call():
    calls = []
    vm = VM()
    vm.register_helper(201, lambda p: calls.append(p) or 0,
                       prototype=Prototype(args=("ARG_ANYTHING",)),
                       mem_args=lambda a: [(a[0], 16, "read")])
    p = prog(I("add64_imm", 1, imm=8), I("call_helper", imm=201), I("exit"))
    lp = vm.load(p)
    lp.run(mem=bytes(24))
    assert len(calls) == 1
    with pytest.raises(MemoryAccessError) as e:
        lp.run(mem=bytes(23))
    assert e.value.pc == 1 and e.value.size == 16 and len(calls) == 1


def test_vm_wide_regions_are_reachable_and_read_only_is_enforced():
    import ctypes
    from pybpf.runtime.memory import Buffer, Region
    buf = Buffer(16, init=b"\x2a" + bytes(15))
    vm = VM()
    vm.regions.append(Region(buf.address, 16, "map value", False, buf))
    ld = prog(set64(3, buf.address), I("ldxb", 0, 3, off=0), I("exit"))
    assert vm.load(ld).run() == 42
    st = prog(set64(3, buf.address), I("stb", 3, off=0, imm=1), I("exit"))
    with pytest.raises(MemoryAccessError, match="read-only"):
        vm.load(st).run()
    assert ctypes.string_at(buf.address, 1) == b"\x2a"


def test_unknown_helper_refused_at_load():
    with pytest.raises(VMError, match="invalid func unknown#999"):
        VM().load(prog(I("call_helper", imm=999), I("exit")))


def test_kernel_helpers():
    out = []
    h = kernel_helpers(output=out)
    assert sorted(h) == [5, 6, 7, 8, 125, 160, 208]
    vm = VM(seed=1)
    p = prog(I("call_helper", imm=7), I("exit"))
    a = vm.load(p).run()
    assert a == VM(seed=1).load(p).run() and a < 1 << 32
    t = prog(I("call_helper", imm=5), I("mov64_reg", 6, 0), I("call_helper", imm=5),
             I("sub64_reg", 0, 6), I("exit"))
    assert 0 <= VM().load(t).run() < 10**9


def test_trace_printk():
    fmt = int.from_bytes(b"%d = %x\0", "little")
    p = prog(set64(1, fmt), I("stxdw", 10, 1, off=-8), I("mov64_reg", 1, 10),
             I("add64_imm", 1, imm=-8), I("mov64_imm", 2, imm=8), I("mov64_imm", 3, imm=-5),
             I("mov64_imm", 4, imm=255), I("call_helper", imm=6), I("exit"))
    vm = VM()
    r0 = vm.load(p).run()
    assert vm.trace_output() == ["-5 = ff"] and r0 == len("-5 = ff")
    assert vm.trace_output() == []
    # the format must lie in the program's memory (checked before the helper runs)
    p = prog(I("mov64_reg", 1, 10), I("mov64_imm", 2, imm=8), I("call_helper", imm=6), I("exit"))
    with pytest.raises(MemoryAccessError) as e:
        vm.load(p).run()
    assert e.value.pc == 2 and e.value.address == e.value.address and e.value.size == 8


# --- budget ------------------------------------------------------------------------------------
def test_insn_limit_stops_runaway_programs():
    loop = prog(I("ja", off=-1))
    with pytest.raises(VMError, match="instruction limit of 1000 exceeded"):
        VM().load(loop, verify=False, insn_limit=1000).run()
    lp = VM().load(loop, verify=False)
    assert lp.insn_limit == 100_000_000
    with pytest.raises(VMError, match="limit of 50 exceeded"):
        lp.run(insn_limit=50)
    with pytest.raises(VMError, match="limit of 7 exceeded"):
        VM(insn_limit=7).load(loop, verify=False).run()


def test_insn_limit_is_exact():
    # 1 + 3 * 10 + 1 = 32 instructions executed
    p = prog(I("mov64_imm", 1, imm=10), I("add64_imm", 0, imm=1), I("sub64_imm", 1, imm=1),
             I("jne64_imm", 1, imm=0, off=-3), I("exit"))
    lp = VM().load(p)
    assert lp.run(insn_limit=32) == 10 and lp.last_insn_count == 32
    with pytest.raises(VMError, match="limit of 31"):
        lp.run(insn_limit=31)


# --- loading -----------------------------------------------------------------------------------
def test_all_45_unused_field_programs_are_refused_at_load(conformance_dir):
    files = conformance_files("negative", "unused-*.data")
    assert len(files) == 45
    for f in files:
        raw = parse_data_file(f).raw
        for verify in (True, False):
            with pytest.raises(DecodeError):
                VM().load(raw, verify=verify)


def test_structural_checks_on_verify():
    with pytest.raises(VerifierError, match="unreachable insn 2"):
        VM().load(prog(I("mov64_imm", 0), I("exit"), I("exit")))
    with pytest.raises(VerifierError, match="last insn is not an exit or jmp"):
        VM().load(prog(I("mov64_imm", 0)))
    with pytest.raises(VMError, match="fell off the end"):
        VM().load(prog(I("mov64_imm", 0)), verify=False).run()


def test_bad_arguments():
    with pytest.raises(VMError, match="unknown engine"):
        VM().load(prog(I("exit")), engine="nope")
    with pytest.raises(VMError, match="insn_limit"):
        VM().load(prog(I("exit")), insn_limit=0)
    with pytest.raises(TypeError):
        VM().load(42)
    with pytest.raises(VMError, match="needs maps"):
        VM().load(prog(I("lddw_map_idx", 1, imm=0), I("exit")))
    with pytest.raises(VMError, match="associated arena"):
        VM().load(prog(I("cast_kern", 1, 1), I("exit")))


def test_test_run_and_close():
    p = prog(I("ldxdw", 0, 1), I("add64_imm", 0, imm=1), I("stxdw", 1, 0), I("exit"))
    with VM().load(p) as lp:
        r0, ns = lp.test_run(mem=bytes(8), repeat=10)
        assert r0 == 10 and ns > 0                  # changes persist between repetitions
        assert lp.last_mem == (10).to_bytes(8, "little")
    with pytest.raises(VMError, match="closed"):
        lp.run()


# --- tracing -----------------------------------------------------------------------------------
def test_trace_shows_kernel_text_and_changes():
    events = []
    lp = VM().load(pybpf.assemble(CALL_PROG))
    assert lp.run(trace=events.append) == 135
    first = events[0]
    assert (first.pc, first.text, first.changed) == (0, "r6 = 6", {6: 6})
    assert str(first).startswith("0: (b7) r6 = 6") and str(first).endswith("; r6=0x6")
    store = events[3]
    assert store.text == "*(u64 *)(r10 -8) = r1" and store.store[1:] == (8, 11)
    assert [e.depth for e in events].count(1) == 8          # the callee's eight instructions
    call = next(e for e in events if e.text.startswith("call"))
    assert call.text == "call pc+5"
    assert str(events[-1]).endswith("return 0x87")
    assert len(events) == lp.last_insn_count


def _conformance_cases():
    for f in conformance_files("tests"):
        df = parse_data_file(f)
        if df.result is not None and df.error is None:
            yield f, df


def _build(df):
    return Program.from_bytes(df.raw) if df.raw is not None else pybpf.assemble(df.asm)


def test_conformance_suite_fast_and_trace_agree(conformance_dir):
    ran = 0
    for f, df in _conformance_cases():
        lp = VM(helpers=ubpf_test_helpers()).load(_build(df))
        r0 = lp.run(mem=df.mem)
        mem_fast = lp.last_mem
        events = []
        assert lp.run(mem=df.mem, trace=events.append) == r0 == df.result, f
        assert lp.last_mem == mem_fast, f
        assert events and events[-1].text == "exit" or df.asm and "call 5" in df.asm, f
        ran += 1
    assert ran > 250
