"""The open-coded numeric iterator kfuncs (bpf_iter_num_new/next/destroy) run as in the kernel,
in both engines: ranges at the int limits, empty and refused ranges (-EINVAL, -E2BIG, whose
iterators give nothing), the values next yields, and the iterator's memory checked against the
run's regions. Each program runs in the running kernel too (BPF_PROG_TEST_RUN of a syscall
program on the same argument bytes) where bpf() is permitted. The verifier side is in
tests/verifier/iters/ (the kernel's verdicts); the clang-built programs in
tests/corpus/kfunc_corpus.c."""
from __future__ import annotations

import struct
import sys

import pytest

from kernel_probe import require_kernel
from kfunc_run import kernel_run, pybpf_run
from support import assert_case_passed, cases_of, child, run_child

INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1

# ctx: start (s32 @0), end (s32 @4) -> new's r0 (u64 @8), the first two values next gives
# (u64 @16, @24; 0xdead when NULL), how many more it gives, at most 20 (u64 @32)
PROGRAM = """
r6 = r1
r1 = r10
r1 += -8
r2 = *(s32 *)(r6 + 0)
r3 = *(s32 *)(r6 + 4)
call bpf_iter_num_new
*(u64 *)(r6 + 8) = r0
r1 = r10
r1 += -8
call bpf_iter_num_next
r1 = 0xdead
if r0 == 0 goto first
r1 = *(s32 *)(r0 + 0)
first:
*(u64 *)(r6 + 16) = r1
r1 = r10
r1 += -8
call bpf_iter_num_next
r1 = 0xdead
if r0 == 0 goto second
r1 = *(s32 *)(r0 + 0)
second:
*(u64 *)(r6 + 24) = r1
r7 = 0
more:
if r7 > 19 goto done
r1 = r10
r1 += -8
call bpf_iter_num_next
if r0 == 0 goto done
r7 += 1
goto more
done:
*(u64 *)(r6 + 32) = r7
r1 = r10
r1 += -8
call bpf_iter_num_destroy
r0 = r7
exit
"""

RANGES = {
    "empty": (0, 0), "one": (5, 6), "ten": (-5, 5), "reversed": (3, 1),
    "int_min": (INT_MIN, INT_MIN + 3), "int_max": (INT_MAX - 2, INT_MAX),
    "max_loops": (0, 8 * 1024 * 1024), "too_long": (-1, 8 * 1024 * 1024),
    "whole_int": (INT_MIN, INT_MAX),
}


def _ctx(start: int, end: int) -> bytes:
    return struct.pack("<ii", start, end) + bytes(32)


def _decode(out) -> dict:
    r0, ctx = out
    ret, first, second, more = struct.unpack_from("<QqqQ", ctx, 8)
    return {"r0": r0, "new": ret, "first": first, "second": second, "more": more}


def _pybpf(name: str, engine: str) -> dict:
    return _decode(pybpf_run(PROGRAM, _ctx(*RANGES[name]), engine))


def _case(name):
    return lambda: _pybpf(name, "jit")


CASES = {f"range_{n}": _case(n) for n in RANGES}


@pytest.fixture(scope="module")
def jit_results():
    return run_child(__file__, CASES)


@pytest.mark.parametrize("name", RANGES)
def test_interpreter_matches_the_kernel(name):
    mine = _pybpf(name, "interp")
    require_kernel("bpf", "kfunc:bpf_iter_num_new", "prog:syscall")
    assert mine == _decode(kernel_run(PROGRAM, _ctx(*RANGES[name])))


@pytest.mark.jit
@pytest.mark.parametrize("name", RANGES)
def test_the_jit_matches_the_interpreter(jit_results, name):
    results, _ = jit_results
    assert_case_passed(jit_results, f"range_{name}")
    assert results[f"range_{name}"]["detail"] == _pybpf(name, "interp")


def test_the_semantics_the_kernel_gave():
    """What the comparisons above pin down, spelled out on the interpreter (so a kernel-less
    machine still checks them): -EINVAL and -E2BIG as zero-extended ints, and INT_MAX - 1
    being the last value of [INT_MAX - 2, INT_MAX)."""
    assert _pybpf("reversed", "interp")["new"] == (-22) & 0xFFFFFFFF
    assert _pybpf("too_long", "interp")["new"] == (-7) & 0xFFFFFFFF
    got = _pybpf("int_max", "interp")
    assert (got["first"], got["second"], got["more"]) == (INT_MAX - 2, INT_MAX - 1, 0)


def _wild_pointer(engine: str) -> str:
    """Without the verifier (trusted input), a wild iterator pointer still cannot reach memory:
    the engines check the iterator's 8 bytes against the run's regions before the kfunc runs."""
    import pybpf
    from pybpf.errors import MemoryAccessError
    from kfunc_run import assemble
    prog = assemble("r1 = 4096\nr2 = 0\nr3 = 3\ncall bpf_iter_num_new\nexit")
    lp = pybpf.VM().load(prog, prog_type="syscall", engine=engine, verify=False)
    try:
        lp.run(ctx=bytearray(8))
    except MemoryAccessError as e:
        return f"refused: {type(e).__name__}"
    return "ran"


CASES["wild_pointer"] = lambda: _wild_pointer("jit")


def test_an_iterator_outside_the_runs_memory_is_refused_by_the_interpreter():
    assert _wild_pointer("interp") == "refused: MemoryAccessError"


@pytest.mark.jit
def test_an_iterator_outside_the_runs_memory_is_refused_by_the_jit(jit_results):
    results, _ = jit_results
    assert_case_passed(jit_results, "wild_pointer")
    assert results["wild_pointer"]["detail"] == "refused: MemoryAccessError"


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
