"""Dynptrs beyond what the kernel comparisons cover (tests/corpus/kfunc_corpus.c runs
bpf_dynptr_from_xdp/from_skb/from_mem, slices, reads, writes and data slices in both engines and
in the kernel; tests/verifier/dynptr/ holds the kernel's verdicts): a dynptr forged by unverified
code cannot reach outside the run's memory nor commit what no ring reserved, and
bpf_dynptr_slice_rdwr (which the running kernel
refuses to load) writes into the packet, the same in both engines."""
from __future__ import annotations

import sys

import pytest

from kfunc_run import assemble
from support import assert_case_passed, child, frame, run_child

# the start of the forged-dynptr programs: a local dynptr over an array value, whose data
# pointer the program then overwrites with 4096
_FORGED_DYNPTR = """
.map arr type=array key=4 value=16 max_entries=1
r1 = 0
*(u32 *)(r10 - 4) = r1
r1 = map[arr] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
if r0 == 0 goto out
r1 = r0
r2 = 16
r3 = 0
r4 = r10
r4 += -24
call bpf_dynptr_from_mem
r1 = 4096
*(u64 *)(r10 - 24) = r1
"""
_FORGED_END = """
out:
r0 = 0
exit
"""

# the forged dynptr read through
FORGED = _FORGED_DYNPTR + """r1 = r10
r1 += -40
r2 = 8
r3 = r10
r3 += -24
r4 = 0
r5 = 0
call bpf_dynptr_read""" + _FORGED_END

# XDP: a writable slice of the first 2 bytes, both set to 0xab
RDWR = """
r2 = 0
r3 = r10
r3 += -16
call bpf_dynptr_from_xdp
r1 = r10
r1 += -16
r2 = 0
r3 = 0
r4 = 2
call bpf_dynptr_slice_rdwr
if r0 == 0 goto out
r1 = 0xabab
*(u16 *)(r0 + 0) = r1
out:
r0 = 2
exit
"""


# a local dynptr over a map value, its type bits rewritten to RINGBUF, then submitted: the
# value is no reservation of any ring
FORGED_SUBMIT = """
.map arr type=array key=4 value=16 max_entries=1
.map rb type=ringbuf key=0 value=0 max_entries=4096
r1 = 0
*(u32 *)(r10 - 4) = r1
r1 = map[arr] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
if r0 == 0 goto out
r1 = r0
r2 = 16
r3 = 0
r4 = r10
r4 += -24
call bpf_dynptr_from_mem
r1 = 0x20000010
*(u32 *)(r10 - 16) = r1
r1 = r10
r1 += -24
r2 = 0
call bpf_ringbuf_submit_dynptr
out:
r0 = 0
exit
"""


# the forged dynptr filled and copied from: both kfuncs must check the memory it names
FORGED_OPS = _FORGED_DYNPTR + """r1 = r10
r1 += -24
r2 = 0
%s""" + _FORGED_END
FORGED_MEMSET = FORGED_OPS % "r3 = 8\nr4 = 0\ncall bpf_dynptr_memset"
FORGED_COPY = FORGED_OPS % "r3 = r1\nr4 = 0\nr5 = 8\ncall bpf_dynptr_copy"


def _forged_op(src: str, engine: str) -> str:
    import pybpf
    from pybpf.errors import MemoryAccessError
    lp = pybpf.VM().load(assemble(src), prog_type="syscall", engine=engine, verify=False)
    try:
        lp.run(ctx=bytearray(8))
    except MemoryAccessError:
        return "refused"
    return "ran"


def _forged_submit(engine: str) -> str:
    import pybpf
    vm = pybpf.VM()
    lp = vm.load(assemble(FORGED_SUBMIT), prog_type="syscall", engine=engine, verify=False)
    try:
        lp.run(ctx=bytearray(8))
    except pybpf.MapError as e:
        return f"refused errno {e.errno}"
    return "ran"


def _forged(engine: str) -> str:
    import pybpf
    from pybpf.errors import MemoryAccessError
    lp = pybpf.VM().load(assemble(FORGED), prog_type="syscall", engine=engine, verify=False)
    try:
        lp.run(ctx=bytearray(8))
    except MemoryAccessError:
        return "refused"
    return "ran"


def _rdwr(engine: str):
    import pybpf
    lp = pybpf.VM().load(assemble(RDWR), prog_type="xdp", engine=engine, verify=False)
    r0 = lp.run(data=frame())
    return r0, lp.last_data[:4].hex()


CASES = {"forged": lambda: _forged("jit"), "rdwr": lambda: list(_rdwr("jit")),
         "forged_submit": lambda: _forged_submit("jit"),
         "forged_memset": lambda: _forged_op(FORGED_MEMSET, "jit"),
         "forged_copy": lambda: _forged_op(FORGED_COPY, "jit")}


@pytest.fixture(scope="module")
def jit_results():
    return run_child(__file__, CASES)


def test_a_forged_dynptr_is_refused_by_the_interpreter():
    assert _forged("interp") == "refused"


@pytest.mark.jit
def test_a_forged_dynptr_is_refused_by_the_jit(jit_results):
    assert_case_passed(jit_results, "forged")
    assert jit_results[0]["forged"]["detail"] == "refused"


def test_a_forged_ringbuf_dynptr_commits_nothing_in_the_interpreter():
    assert _forged_submit("interp") == "refused errno 22"


@pytest.mark.jit
def test_a_forged_ringbuf_dynptr_commits_nothing_in_the_jit(jit_results):
    assert_case_passed(jit_results, "forged_submit")
    assert jit_results[0]["forged_submit"]["detail"] == "refused errno 22"


@pytest.mark.parametrize("src", [FORGED_MEMSET, FORGED_COPY], ids=["memset", "copy"])
def test_forged_dynptrs_are_refused_by_copy_and_memset_in_the_interpreter(src):
    assert _forged_op(src, "interp") == "refused"


@pytest.mark.jit
@pytest.mark.parametrize("case", ["forged_memset", "forged_copy"])
def test_forged_dynptrs_are_refused_by_copy_and_memset_in_the_jit(jit_results, case):
    assert_case_passed(jit_results, case)
    assert jit_results[0][case]["detail"] == "refused"


def test_a_writable_slice_writes_the_packet():
    assert _rdwr("interp") == (2, "abab" + frame()[2:4].hex())


def test_the_verifier_refuses_slice_rdwr_as_the_kernel_does():
    import pybpf
    from pybpf.errors import VerifierError
    with pytest.raises(VerifierError, match=r"bpf_dynptr_slice_rdwr\(\) is not allowed"):
        pybpf.VM().load(assemble(RDWR), prog_type="xdp")


@pytest.mark.jit
def test_the_jit_writes_the_same(jit_results):
    assert_case_passed(jit_results, "rdwr")
    assert tuple(jit_results[0]["rdwr"]["detail"]) == _rdwr("interp")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
