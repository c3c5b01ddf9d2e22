"""State pruning as the kernel prunes (is_state_visited): the same prune points, the same rules
for storing a state, hence the same figures on the log's last line and the same ``safe`` lines.

The running kernel is the oracle: each program here is loaded into it with a log, and pybpf's
processed instructions, total states and max_states_per_insn must be the kernel's, for clang
loops from the corpus (tests/corpus/syscall_corpus.c: sys_sort's nested loops, sys_log2_hist's
loop around a map lookup) and for the verifier benchmark's programs (a 100-iteration loop with
an 8-instruction body and with a 990-instruction body, straight-line code, a packet parser).
"""
from __future__ import annotations

import os
import re

import pytest

import pybpf
from pybpf.benchmarks import bench_verifier
from kernel_probe import require_kernel
from support import ROOT

CORPUS = os.path.join(ROOT, "tests", "corpus", "syscall_corpus.o")
STATS = re.compile(r"processed (\d+) insns \(limit \d+\) max_states_per_insn (\d+) "
                   r"total_states (\d+) peak_states (\d+)")
SAFE = re.compile(r"^(?:from \d+ to \d+: safe|\d+: safe)$", re.M)


def _figures(log: str) -> tuple[int, int, int]:
    """(processed insns, total states, max states per insn) from a log's last line."""
    m = STATS.search(log)
    assert m, log[-500:]
    return int(m.group(1)), int(m.group(3)), int(m.group(2))


def _kernel_elf_log(name: str, log_level: int) -> str:
    import kernel_bpf
    from pybpf.elf import parse_object
    obj = parse_object(CORPUS)
    ko = kernel_bpf.KernelObject(obj)
    try:
        ko.load(obj.programs[name], log_level=log_level)
        return ko.last_log
    finally:
        ko.close()


def _pybpf_elf_log(name: str, log_level: int) -> str:
    obj = pybpf.load_elf(CORPUS)
    return obj.vm.verify(obj.programs[name], log_level=log_level)


@pytest.mark.kernel
@pytest.mark.parametrize("name", ["sys_sort", "sys_log2_hist"])
def test_corpus_loops_take_the_kernels_number_of_insns_and_states(name):
    require_kernel("bpf")
    kernel = _kernel_elf_log(name, 2)
    mine = _pybpf_elf_log(name, 2)
    assert _figures(mine) == _figures(kernel)
    # the same states pruned, in the same order ("from 54 to 57: safe", "42: safe"...)
    assert SAFE.findall(mine) == SAFE.findall(kernel)


@pytest.mark.kernel
@pytest.mark.parametrize("name", ["straight200", "loop1000", "loop1000_body", "packet"])
def test_benchmark_programs_take_the_kernels_number_of_insns_and_states(name):
    require_kernel("bpf")
    import kernel_verifier
    prog = pybpf.assemble(bench_verifier.PROGRAMS[name][0](), syntax="llvm")
    k = kernel_verifier.kernel_verify(prog, "xdp", log_level=1, want_log=True)
    assert k.accepted, k.message
    mine = pybpf.VM().verify_result(prog, prog_type="xdp", log_level=1)
    assert _figures(mine.log) == _figures(k.log)


BRANCH_TARGET = """
    r0 = 0
    r1 = *(u32 *)(r1 + 0)
    goto +0
    r2 = 1
    r3 = 2
    r4 = 3
    r5 = 4
    if r1 > 7 goto +1
    r0 = 1
    r0 &= 1
    exit"""

# 64 iterations of a 2-instruction loop: a state stored only every 20 jumps while the loop
# is explored (skip_inf_loop_check), not one per pair of jumps (the kernel: 131 insns, 4 states)
SHORT_LOOP = """
    r1 = 0
loop:
    r1 += 1
    if r1 < 64 goto loop
    r0 = 0
    exit"""


def test_a_branch_target_is_a_prune_point():
    # both sides of `if r1 > 7` reach insn 9 (r0's value unused): the second is pruned at the
    # branch target, where the first stored a state (2 jumps and 8 insns since the start)
    log = pybpf.VM().verify(pybpf.assemble(BRANCH_TARGET, syntax="llvm"),
                            prog_type="socket_filter", log_level=2)
    assert "\nfrom 7 to 9: safe\n" in log
    assert _figures(log) == (12, 1, 0)


def test_a_loop_still_explored_stores_a_state_only_every_20_jumps():
    res = pybpf.VM().verify_result(pybpf.assemble(SHORT_LOOP, syntax="llvm"),
                                   prog_type="socket_filter", log_level=1)
    insns, states, _ = _figures(res.log)
    assert insns == 2 + 64 * 2 + 1 and states == 4


@pytest.mark.kernel
@pytest.mark.parametrize("text", [BRANCH_TARGET, SHORT_LOOP], ids=["branch_target", "loop"])
def test_small_programs_match_the_kernels_log(text):
    require_kernel("bpf")
    import kernel_verifier
    prog = pybpf.assemble(text, syntax="llvm")
    k = kernel_verifier.kernel_verify(prog, "socket_filter", log_level=2, want_log=True)
    mine = pybpf.VM().verify(prog, prog_type="socket_filter", log_level=2)
    assert _figures(mine) == _figures(k.log)
    assert SAFE.findall(mine) == SAFE.findall(k.log)
