"""Verified runs of the context program types (flow_dissector, raw_tracepoint, sk_lookup, lwt_*,
cgroup_sock, cgroup_sock_addr, and the context-only sk_msg, sock_ops and perf_event): what the verifier's context rules let a program reach (flow keys,
socket pointers, packet pointers) is real memory of the run in both engines, and the run
refuses contexts that would break what the verifier assumed (a caller-set ``skb->sk``, a
raw_tracepoint ctx shorter than the arguments read). The JIT cases run in a child process.
The rules themselves are compared with the kernel in tests/test_verifier_calls.py and
tests/verifier/ctx/*.vt."""
from __future__ import annotations

import os
import struct

import pytest

import pybpf
from pybpf.errors import VerifierError, VMError
from pybpf.runtime.contexts import AF_INET, BpfSkLookup, BpfSockAddr
from support import asm, child_tests, frame

# ctx->sk of a connect4 program: never NULL, its family/type/protocol those of the address
SOCK_ADDR_SK = asm("r2 = *(u64 *)(r1 + 64)\nr0 = *(u32 *)(r2 + 4)\nr3 = *(u32 *)(r2 + 12)\n"
                   "r3 <<= 8\nr0 |= r3\n*(u32 *)(r1 + 24) = r0\nr3 = *(u32 *)(r1 + 4)\n"
                   "r3 += 1\n*(u32 *)(r1 + 4) = r3\nr0 = 1\nexit")
# flow keys: nhoff from the packet's first byte, n_proto read back
FLOW_KEYS = asm("r2 = *(u32 *)(r1 + 76)\nr3 = *(u32 *)(r1 + 80)\nr4 = r2\nr4 += 14\n"
                "if r4 > r3 goto +5\nr5 = *(u64 *)(r1 + 144)\nr0 = *(u8 *)(r2 + 12)\n"
                "*(u16 *)(r5 + 12) = r0\nr0 = *(u16 *)(r5 + 10)\nexit\nr0 = 1\nexit")
# sk_lookup: ctx->sk is NULL in a test run (no socket selected); the check keeps it safe
SK_LOOKUP = asm("r2 = *(u64 *)(r1 + 0)\nr0 = 1\nif r2 == 0 goto +2\nr0 = *(u32 *)(r2 + 4)\n"
                "r0 = 0\nexit")


def _sock_addr(engine: str):
    vm = pybpf.VM()
    lp = vm.load(SOCK_ADDR_SK, prog_type="cgroup_sock_addr", engine=engine,
                 attach_type="cgroup_inet4_connect")
    ctx = BpfSockAddr(user_family=AF_INET, family=AF_INET, type=1, protocol=6, user_ip4=41)
    r0 = lp.run(ctx=ctx)
    out = (r0, ctx.user_port, ctx.user_ip4, ctx.sk, lp.last_ctx.sk)
    lp.close()
    return out


def _flow(engine: str):
    lp = pybpf.VM().load(FLOW_KEYS, prog_type="flow_dissector", engine=engine)
    r0 = lp.run(data=frame())
    out = (r0, lp.last_ctx.sport)
    lp.close()
    return out


def _sk_lookup(engine: str):
    lp = pybpf.VM().load(SK_LOOKUP, prog_type="sk_lookup", engine=engine)
    r0 = lp.run(ctx=BpfSkLookup(family=AF_INET, protocol=6, local_port=80))
    lp.close()
    return r0


def case_sock_addr_sk_is_a_real_socket():
    for engine in ("interp", "jit"):
        assert _sock_addr(engine) == (1, (6 << 8) | AF_INET, 42, 0, 0), engine


def case_flow_keys_pointer():
    assert _flow("interp") == _flow("jit") == (0x0008, 0x08)


def case_sk_lookup_null_socket():
    assert _sk_lookup("interp") == _sk_lookup("jit") == 1


# --- sk_msg, sock_ops, perf_event: context only (the kernel cannot test-run them) -----------
CTX_TYPES_O = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "elf",
                           "ctx_types.o")


def _ctx_types(engine: str):
    """Each program of ctx_types.o (sections sk_msg, sockops, perf_event) on a few contexts."""
    from pybpf.runtime.contexts import BpfPerfEventData, BpfSockOps
    obj = pybpf.load_elf(CTX_TYPES_O)
    out = {}
    msg = obj.vm.load(obj.programs["msg_verdict"], engine=engine)
    for data, family in ((b"hello world", AF_INET), (b"DROP it", AF_INET), (b"ab", AF_INET),
                         (b"hello world", 10), (b"", AF_INET)):
        r0 = msg.run(ctx={"family": family, "remote_port": 0x5000}, data=data)
        out[f"msg {data!r} {family}"] = (r0, msg.last_data, msg.last_ctx.size)
    ops = obj.vm.load(obj.programs["tcp_tune"], engine=engine)
    hdr = bytes(13) + b"\x18" + bytes(6)
    for op, port, flags, data in ((3, 0x5000, 0, None), (3, 80, 0, None), (13, 0, 0x12, hdr),
                                  (13, 0, 0x12, hdr[:10]), (7, 0, 0, None)):
        ctx = BpfSockOps(op=op, remote_port=port, skb_tcp_flags=flags)
        r0 = ops.run(ctx=ctx, data=data)
        out[f"ops {op} {port} {flags} {data!r}"] = (r0, ctx.reply, ops.last_ctx.skb_len)
    pe = obj.vm.load(obj.programs["sample"], engine=engine)
    for period, ip, addr in ((7, 0x1234, 0x5000), (0, 1, 1), (1 << 40 | 2, 0xff, 0)):
        ctx = BpfPerfEventData(sample_period=period, addr=addr)
        ctx.regs[16] = ip
        out[f"pe {period} {ip} {addr}"] = pe.run(ctx=ctx)
    types = {n: (p.prog_type, p.section) for n, p in obj.programs.items()}
    for lp in (msg, ops, pe):
        lp.close()
    return out, types


def case_sk_msg_sock_ops_perf_event():
    interp, types = _ctx_types("interp")
    jit, _ = _ctx_types("jit")
    assert interp == jit, (interp, jit)
    assert types == {"msg_verdict": ("sk_msg", "sk_msg"), "tcp_tune": ("sock_ops", "sockops"),
                     "sample": ("perf_event", "perf_event")}
    assert interp["msg b'hello world' 2"] == (1, b"\x0bello world", 11)
    assert interp["msg b'DROP it' 2"][0] == 0 and interp["msg b'ab' 2"][0] == 1
    assert interp["msg b'hello world' 10"] == (1, b"hello world", 11)
    assert interp["ops 3 20480 0 None"] == (1, 40, 0)
    assert interp["ops 3 80 0 None"] == (1, 10, 0)
    assert interp["ops 13 0 18 " + repr(bytes(13) + b"\x18" + bytes(6))] == (1, 0x1218, 20)
    assert interp["ops 13 0 18 " + repr(bytes(10))][0] == 0
    assert interp["pe 7 4660 20480"] == 0x34 + 3 + 5
    assert interp["pe 0 1 1"] == 0


# A tracepoint program may read before its record (Linux 6.18 accepts negative offsets:
# tests/verifier/ctx/tracepoint_negative_off.vt): the run puts zeros there, in its own memory
TP_BEFORE = asm("r0 = *(u64 *)(r1 - 32768)\nr2 = *(u32 *)(r1 - 4)\nr0 += r2\n"
                "r2 = *(u8 *)(r1 - 1)\nr0 += r2\nr2 = *(u64 *)(r1 + 8)\nr0 += r2\nexit")


def _tp_before(engine: str):
    lp = pybpf.VM().load(TP_BEFORE, prog_type="tracepoint", engine=engine)
    record = bytes(8) + struct.pack("<Q", 0x1122334455667788)
    out = (lp.ctx_headroom, lp.run(ctx=record), lp.last_ctx)
    lp.close()
    return out


def case_tracepoint_reads_before_its_record():
    want = (32768, 0x1122334455667788, bytes(8) + struct.pack("<Q", 0x1122334455667788))
    assert _tp_before("interp") == _tp_before("jit") == want


child_tests(globals(), test_name="test_verified_context_programs_in_both_engines",
            marks=[pytest.mark.jit])


def test_sock_addr_socket_is_read_only_and_not_the_callers():
    vm = pybpf.VM()
    lp = vm.load(SOCK_ADDR_SK, prog_type="cgroup_sock_addr",
                 attach_type="cgroup_inet4_connect")
    with pytest.raises(VMError, match="set by the run itself"):
        lp.run(ctx={"sk": 0x1000, "family": AF_INET})
    # a store through ctx->sk: the verifier refuses it; unverified, the interpreter does
    store = asm("r2 = *(u64 *)(r1 + 64)\nr3 = 0\n*(u32 *)(r2 + 16) = r3\nr0 = 1\nexit")
    with pytest.raises(VerifierError, match="R2 cannot write into sock"):
        vm.load(store, prog_type="cgroup_sock_addr", attach_type="cgroup_inet4_connect")
    with pytest.raises(pybpf.errors.MemoryAccessError, match="read-only"):
        vm.load(store, prog_type="cgroup_sock_addr", verify=False).run(ctx={"family": 2})


def test_cgroup_sock_addr_needs_an_attach_type():
    """bpf_prog_load_check_attach refuses a sock_addr program without one (EINVAL); ELF
    programs get theirs from the section, as libbpf sets it."""
    with pytest.raises(VerifierError, match="needs an expected attach type"):
        pybpf.VM().load(asm("r0 = 1\nexit"), prog_type="cgroup_sock_addr")
    ok = pybpf.VM().load(asm("r0 = 1\nexit"), prog_type="cgroup_sock_addr",
                         attach_type="cgroup_udp4_recvmsg")
    assert ok.run(ctx={"family": 2}) == 1
    with pytest.raises(VerifierError, match=r"should have been in \[1, 1\]"):
        pybpf.VM().load(asm("r0 = 0\nexit"), prog_type="cgroup_sock_addr",
                        attach_type="cgroup_udp4_recvmsg")


def test_skb_sk_cannot_come_from_the_caller():
    """The verifier lets a program read through __sk_buff.sk after a NULL check: a run's sk is
    NULL, and a caller-supplied one is refused as BPF_PROG_TEST_RUN refuses it."""
    prog = asm("r2 = *(u64 *)(r1 + 168)\nr0 = 0\nif r2 == 0 goto +1\nr0 = *(u32 *)(r2 + 4)\n"
               "exit")
    lp = pybpf.VM().load(prog, prog_type="sched_cls")
    assert lp.run(data=frame()) == 0
    with pytest.raises(VMError, match="sk and flow_keys must be zero"):
        lp.run(data=frame(), ctx={"sk": 0x10000})


def test_tracepoint_headroom_is_the_programs_alone():
    # unverified (trusted input), a read before the record has no headroom: the interpreter
    # refuses it; verified, the headroom is exactly what the program reads, read-only
    with pytest.raises(pybpf.errors.MemoryAccessError):
        pybpf.VM().load(asm("r0 = *(u64 *)(r1 - 8)\nexit"), prog_type="tracepoint",
                        verify=False).run(ctx=bytes(16))
    lp = pybpf.VM().load(asm("r0 = *(u16 *)(r1 - 6)\nexit"), prog_type="tracepoint")
    assert lp.ctx_headroom == 6 and lp.run(ctx=b"\xff" * 8) == 0
    assert pybpf.VM().load(asm("r0 = *(u16 *)(r1 + 8)\nexit"),
                           prog_type="tracepoint").ctx_headroom == 0


def test_raw_tracepoint_ctx_must_cover_what_the_program_reads():
    lp = pybpf.VM().load(asm("r0 = *(u64 *)(r1 + 16)\nexit"), prog_type="raw_tracepoint")
    assert lp.run(ctx=struct.pack("<3Q", 1, 2, 3)) == 3
    for short in (None, struct.pack("<2Q", 1, 2)):
        with pytest.raises(VMError, match="max_ctx_offset"):
            lp.run(ctx=short)


def test_map_in_map_lookup_gives_the_inner_map():
    """After its NULL check a lookup in an array_of_maps is the inner map (CONST_PTR_TO_MAP
    with the template's sizes), as the kernel's inner_map_meta: its value bounds are the
    inner map's."""
    vm = pybpf.VM()
    inner = vm.create_map("array", key_size=4, value_size=8, max_entries=2)
    outer = vm.create_map("array_of_maps", key_size=4, value_size=4, max_entries=1,
                          inner=inner)
    outer.update(0, inner)
    head = (f"r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nr1 = map_fd({outer.fd}) ll\n"
            f"call bpf_map_lookup_elem\nif r0 == 0 goto +6\nr1 = r0\nr2 = r10\nr2 += -4\n"
            f"call bpf_map_lookup_elem\nif r0 == 0 goto +1\n")
    good = asm(head + "r0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit")
    bad = asm(head + "r0 = *(u64 *)(r0 + 8)\nr0 = 0\nexit")
    assert vm.load(good, prog_type="sched_cls").run(data=frame()) == 0
    with pytest.raises(VerifierError, match="R0 min value is outside of the allowed memory"):
        vm.load(bad, prog_type="sched_cls")


@pytest.mark.kernel
def test_ctx_types_object_gets_the_kernels_verdict():
    """The kernel cannot BPF_PROG_TEST_RUN sk_msg, sock_ops or perf_event: the programs of
    ctx_types.o (and each with a store into its read-only context) are loaded into the running
    kernel's verifier instead, with the attach type libbpf gives their section, and pybpf's
    verdict and message must be the kernel's."""
    import dataclasses
    import kernel_verifier as kv
    from kernel_probe import require_kernel
    from pybpf.attach_types import section_attach_type
    from pybpf.insn import make
    require_kernel("bpf")
    obj = pybpf.load_elf(CTX_TYPES_O)
    for name, prog in obj.programs.items():
        attach = section_attach_type(prog.section)
        store = dataclasses.replace(prog, insns=list(make("stw", 1, off=0, imm=0)) +
                                    list(prog.insns), line_info=[], func_info={})
        for p in (prog, store):
            k = kv.kernel_verify(p, prog.prog_type, attach_type=attach)
            try:
                obj.vm.verify(p, prog_type=prog.prog_type, attach_type=attach)
                mine = (True, "")
            except VerifierError as e:
                mine = (False, e.message)
            assert mine == (k.accepted, k.message), (name, p is store, mine, k)
        assert k.message == "invalid bpf_context access off=0 size=4"

