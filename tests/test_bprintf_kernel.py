"""bpf_snprintf and bpf_trace_printk print what the running kernel prints (bpf_bprintf_prepare +
bstr_printf, kernel/bpf/helpers.c and lib/vsprintf.c), byte for byte, in both engines: every
``%p`` form the kernel accepts (``%p %pK %px %ps %pS %pB %pI4 %pi4 %pI6 %pi6 %pks %pus``) with
flags and widths, NULL, error and bad pointers, the letters bstr_printf skips after a ``%p``
conversion, and the formats it refuses (the verifier's "Invalid format string", the same
message as the kernel's).

What cannot be byte-exact (runtime/bprintf.py's docstring): the hash ``%p`` and ``%pK`` print
(a per-boot secret in the kernel, per process in pybpf: compared in shape, 8 zero digits and 8
hex digits), and ``%pus`` through a pointer to the BPF stack (user memory in the kernel, which
prints nothing; the run's memory in pybpf, as its bpf_probe_read_user_str).

One program holds every case (one bpf_snprintf call each, its format in its own read-only map),
so the JIT compiles once (in a child process: JIT code runs unchecked)."""
from __future__ import annotations

import ctypes
import os
import re
import sys

import pytest

import pybpf
from kernel_probe import require_kernel
from support import asm, assert_case_passed, child, run_child

M64 = (1 << 64) - 1
OUT = 128                       # bytes of output per case
STACK_MEM = 96                  # bytes at fp-128 the pointer arguments point into
IP6 = bytes(range(0x20, 0x30))
MEM = b"\x0a\x00\x00\x01" + bytes(4) + IP6 + b"hello\0\0\0" + b"world\0\0\0"


def m(off: int) -> tuple:
    """An argument pointing ``off`` bytes into MEM (on the program's stack)."""
    return ("mem", off)


# (format, arguments, hashed: the output holds %p/%pK hashes)
CASES = [
    (b"%p|%p|%p", [0, -14, 0x1234], True),
    (b"%p %px %pK", [-4095, -4096, -4097], True),
    (b"%p.%p,%p;%p", [1, 2, 3, 0], True),
    (b"%08p|%-18p|%3p|", [0, 0, 0], False),
    (b"%pK|%pK|%20pK|", [0, 0x1234, 0], True),
    (b"%px|%8px|%-20px|%020px", [0xdeadbeef] * 4, False),
    (b"%08px|%-18px|%3px|%+px|% px", [0x12] * 5, False),
    (b"%ps|%pS|%pB", [0x1234] * 3, False),
    (b"%ps|%pS|%pB", [0] * 3, False),
    (b"%20ps|%-12pS|%+6pB|", [0x1234, 0x1234, 0x99], False),
    (b"%ps %pS %pB", [-1, -4096, 1], False),
    (b"%pB%pB", [1, 2], False),
    (b"%pI4 %pi4", [m(0), m(0)], False),
    (b"%pI6|%pi6", [m(8), m(8)], False),
    (b"%10pI4|%-18pI4|%0pI4|% 8pI4|", [m(0)] * 4, False),
    (b"%pI4 %pI6", [0, 0x10], False),
    (b"%pks|%s|%5pks|%-9s|", [m(24), m(24), m(24), m(24)], False),
    (b"%pks|%pus|%s", [0, 0, 0x10], False),
    (b"%pxyz|%pKab9|%psq|%pSQ|", [0xab, 0, 0x10, 0x20], False),
    (b"%pBxyz|%pI4abc|%pi6Z|%pI4_x|%pI4-x", [0x30, m(0), m(8), m(0), m(0)], False),
    (b"%px%%x|%pI4%%y", [1, m(0)], False),
    (b"%c%c|%5c|%-3c|", [0x41, 0x142, 0x43, 0x44], False),
    (b"%d %i %u %x %X %ld %lld %llu", [-1, -2, -3, 0xab, 0xcd, -4, -5, -6], False),
]
# the kernel reads user memory for %pus: a pointer to the BPF stack prints nothing there
PUS = (b"%pus|%pks", [m(32), m(32)])
# formats the kernel refuses at load ("Invalid format string")
BAD = [b"%p%", b"%pM", b"%pa", b"%pIx", b"%pI", b"%pI5", b"%pi", b"%pksx", b"%pk", b"%lpx",
       b"%llp", b"%pc", b"%pus9", b"%pZ", b"%p\x80"]


def _program(cases: list) -> tuple:
    """Assembly text running ``cases`` (format k in map fmtk), each call's result and output
    in the ``out`` map's one value: [8-byte result][OUT bytes] per case."""
    slot = 8 + OUT
    lines = [f".map fmt{k} type=array key=4 value=64 max_entries=1 flags=128"
             for k in range(len(cases))]
    lines += [f".map out type=array key=4 value={slot * len(cases)} max_entries=1",
              "r1 = 0", "*(u32 *)(r10 - 4) = r1", "r1 = map[out] ll", "r2 = r10", "r2 += -4",
              "call bpf_map_lookup_elem", "if r0 == 0 goto out", "r6 = r0"]
    mem = MEM.ljust(STACK_MEM, b"\0")
    for k in range(0, STACK_MEM, 8):
        lines += [f"r1 = {int.from_bytes(mem[k:k + 8], 'little')} ll",
                  f"*(u64 *)(r10 - {128 - k}) = r1"]
    for k, (_, args, *_rest) in enumerate(cases):
        for j, a in enumerate(args):
            lines += ["r1 = r10", f"r1 += {-128 + a[1]}"] if isinstance(a, tuple) else \
                [f"r1 = {a & M64} ll"]
            lines.append(f"*(u64 *)(r10 - {224 - 8 * j}) = r1")
        lines += ["r1 = r6", f"r1 += {slot * k + 8}", f"r2 = {OUT}",
                  f"r3 = map_value[fmt{k}] + 0 ll", "r4 = r10", "r4 += -224",
                  f"r5 = {8 * len(args)}", "call bpf_snprintf", f"*(u64 *)(r6 + {slot * k}) = r0"]
    lines += ["r0 = 0", "exit", "out:", "r0 = 1", "exit"]
    return "\n".join(lines)


def _results(value: bytes, n: int) -> list:
    slot = 8 + OUT
    out = []
    for k in range(n):
        r = int.from_bytes(value[slot * k:slot * k + 8], "little")
        r = r - (1 << 64) if r >> 63 else r
        text = value[slot * k + 8:slot * (k + 1)]
        out.append((r, text[:text.index(b"\0")] if b"\0" in text else text))
    return out


def pybpf_outputs(cases: list, engine: str) -> list:
    vm = pybpf.VM()
    maps = {}
    for k, (fmt, *_rest) in enumerate(cases):
        f = vm.create_map("array", 4, 64, 1, flags=128, name=f"fmt{k}")
        f.sys_update(bytes(4), fmt.ljust(64, b"\0"))
        f.freeze()
        maps[f"fmt{k}"] = f
    maps["out"] = vm.create_map("array", 4, (8 + OUT) * len(cases), 1, name="out")
    lp = vm.load(asm(_program(cases)), prog_type="syscall", engine=engine, maps=maps)
    assert lp.run(ctx=bytearray(8)) == 0
    return _results(maps["out"].sys_lookup(bytes(4)), len(cases))


def _kernel_load(prog, fmts: list, extra: list):
    """Maps for ``fmts`` (frozen, read-only to the program) plus ``extra`` fds, and the
    program loaded as syscall: (prog fd or None, log message, map fds)."""
    import kernel_bpf
    import kernel_verifier as kv
    fds = []
    for fmt in fmts:
        fd = kernel_bpf.create_map("array", 4, 64, 1, 128, name="fmt")
        fds.append(fd)
        kernel_bpf.update(fd, bytes(4), fmt.ljust(64, b"\0"))
        kernel_bpf.freeze(fd)
    log = ctypes.create_string_buffer(1 << 20)
    try:
        return kv._load(prog, "syscall", fds + extra, 1, log), "", fds
    except kernel_bpf.KernelError:
        return None, kv.message_of(log.value.decode()), fds


def kernel_outputs(cases: list) -> list:
    import kernel_bpf
    size = (8 + OUT) * len(cases)
    ofd = kernel_bpf.create_map("array", 4, size, 1, 0, name="out")
    pfd, msg, fds = _kernel_load(asm(_program(cases)), [c[0] for c in cases], [ofd])
    try:
        assert pfd is not None, msg
        retval, _, _ = kernel_bpf.test_run(pfd, ctx=bytes(8))
        os.close(pfd)
        assert retval == 0
        return _results(kernel_bpf.lookup(ofd, bytes(4), size), len(cases))
    finally:
        for fd in fds + [ofd]:
            os.close(fd)


HASH = re.compile(rb"00000000[0-9a-f]{8}")


def _masked(text: bytes, hashed: bool) -> bytes:
    return HASH.sub(b"<hash>", text) if hashed else text


def _kptr_restrict() -> str:
    try:
        return open("/proc/sys/kernel/kptr_restrict").read().strip()
    except OSError:
        return "?"


@pytest.mark.kernel
def test_snprintf_prints_every_pointer_form_as_the_kernel_does():
    require_kernel("bpf")
    if _kptr_restrict() != "0":
        pytest.skip(f"kptr_restrict is {_kptr_restrict()}: %pK prints zeros or the raw pointer "
                    "in the kernel, pybpf models kptr_restrict 0 (hashed)")
    mine, theirs = pybpf_outputs(CASES, "interp"), kernel_outputs(CASES)
    diffs = [(CASES[k][0], a, b) for k, (a, b) in enumerate(zip(mine, theirs))
             if (a[0], _masked(a[1], CASES[k][2])) != (b[0], _masked(b[1], CASES[k][2]))]
    assert not diffs, diffs
    # the hashes are hashes: the shape, and different from the pointer
    assert mine[0][1].startswith(b"0000000000000000|fffffffffffffff2|00000000")
    assert mine[0][1] != b"0000000000000000|fffffffffffffff2|0000000000001234"


@pytest.mark.kernel
def test_pus_reads_the_runs_memory_where_the_kernel_reads_user_memory():
    require_kernel("bpf")
    case = [(PUS[0], PUS[1], False)]
    assert kernel_outputs(case) == [(7, b"|world")]
    assert pybpf_outputs(case, "interp") == [(12, b"world|world")]


def _verdicts_pybpf() -> list:
    out = []
    for fmt in BAD:
        vm = pybpf.VM()
        f = vm.create_map("array", 4, 64, 1, flags=128, name="fmt0")
        f.sys_update(bytes(4), fmt.ljust(64, b"\0"))
        f.freeze()
        o = vm.create_map("array", 4, 8 + OUT, 1, name="out")
        try:
            vm.load(asm(_program([(fmt, [0x10])])), prog_type="syscall",
                    maps={"fmt0": f, "out": o}).close()
            out.append(("accept", ""))
        except pybpf.VerifierError as e:
            out.append(("reject", e.message))
    return out


@pytest.mark.kernel
def test_refused_formats_get_the_kernels_verdict_and_message():
    import kernel_bpf
    require_kernel("bpf")
    theirs = []
    for fmt in BAD:
        ofd = kernel_bpf.create_map("array", 4, 8 + OUT, 1, 0, name="out")
        pfd, msg, fds = _kernel_load(asm(_program([(fmt, [0x10])])), [fmt], [ofd])
        for fd in fds + [ofd] + ([pfd] if pfd is not None else []):
            os.close(fd)
        theirs.append(("accept", "") if pfd is not None else ("reject", msg))
    assert _verdicts_pybpf() == theirs
    assert {v for v, _ in theirs} == {"reject"}


# --- bpf_trace_printk: the same formatting, three arguments, a 1024-byte line ------------------
TRACE = [(b"%d %i %u", (1, 2, 3)), (b"%d %d %d %d", (1, 2, 3)), (b"%p %px %pK", (0, 0x1000, 0)),
         (b"%s|", (0x10,)), (b"abc\0%d%d%d%d", (1,)), (b"%pI4", (0,)), (b"%pBxyz", (5,)),
         (b"%c%c%c%c", (65, 66, 67)), (b"%ps\n", (0x20,)), (b"x" * 40 + b"%0400d" * 3, (5, 6, 7)),
         (b"%q", (1,))]


def _printk(fmt: bytes, args) -> str:
    fmt = fmt.ljust((len(fmt) // 8 + 1) * 8, b"\0")
    lines = []
    for i in range(0, len(fmt), 8):
        lines += [f"r1 = {int.from_bytes(fmt[i:i + 8], 'little'):#x} ll",
                  f"*(u64 *)(r10 - {len(fmt) - i}) = r1"]
    lines += ["r1 = r10", f"r1 += -{len(fmt)}", f"r2 = {len(fmt)}"]
    lines += [f"r{3 + i} = {a:#x} ll" for i, a in enumerate(args)]
    return "\n".join(lines + ["call bpf_trace_printk", "exit"])


def _trace_pybpf(engine: str, cases=TRACE) -> list:
    out = []
    for fmt, args in cases:
        vm = pybpf.VM()
        r = vm.load(asm(_printk(fmt, args)), prog_type="syscall", engine=engine).run(
            ctx=bytearray(8))
        out.append((r - (1 << 64) if r >> 63 else r, vm.trace_output()))
    return out


@pytest.mark.kernel
def test_trace_printk_returns_what_the_kernel_returns():
    """The kernel's trace buffer is not read here (tracefs is not mounted): its return value,
    bstr_printf's length, is compared, and pybpf's line checked to be that long."""
    import kernel_bpf
    import kernel_verifier as kv
    require_kernel("bpf")
    theirs = []
    for fmt, args in TRACE:
        log = ctypes.create_string_buffer(1 << 20)
        pfd = kv._load(asm(_printk(fmt, args)), "syscall", [], 1, log)
        r, _, _ = kernel_bpf.test_run(pfd, ctx=bytes(8))
        os.close(pfd)
        theirs.append(r - (1 << 32) if r >> 31 else r)
    mine = _trace_pybpf("interp")
    assert [r for r, _ in mine] == theirs
    for (r, lines), (fmt, _) in zip(mine, TRACE):
        if r < 0:
            assert lines == []
        else:
            assert len(lines) == 1 and len(lines[0]) == min(r, 1023) - fmt.endswith(b"\n")
    assert mine[2][1] == ["0000000000000000 0000000000001000 0000000000000000"]
    assert mine[3][1] == ["|"] and mine[6][1] == ["0x5"] and mine[5][1] == ["0.0.0.0"]


# --- the JIT: the same bytes as the interpreter (one process, one hash key) --------------------
def case_jit_equals_interpreter():
    cases = CASES + [(PUS[0], PUS[1], False)]
    interp, jit = pybpf_outputs(cases, "interp"), pybpf_outputs(cases, "jit")
    assert jit == interp, [(c[0], a, b) for c, a, b in zip(cases, interp, jit) if a != b]
    assert _trace_pybpf("jit", TRACE[2:3]) == _trace_pybpf("interp", TRACE[2:3])
    return len(cases)


CHILD = {"jit": case_jit_equals_interpreter}


@pytest.fixture(scope="module")
def child_results():
    return run_child(__file__, CHILD)


@pytest.mark.jit
def test_the_jit_prints_the_same_bytes(child_results):
    assert_case_passed(child_results, "jit")
    assert child_results[0]["jit"]["detail"] == len(CASES) + 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CHILD, sys.argv[2:] or list(CHILD)))
