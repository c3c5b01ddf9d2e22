"""The JIT's -O2 size limit (issue 12): -O2's time grows about with the square of the program
(bench_bigprog's branchy program: 16,000 slots 25 s of CPU, 100,000 slots over 280 s; figures
in jit/program.py), so a program larger than ``VM(max_o2_slots=...)`` (default
``pybpf.jit.program.O2_MAX_SLOTS``, 16,384) is never compiled at -O2: an explicit -O2 load is a
JITError at once, naming the limit and the tiers that load it (instead of minutes of LLVM ending
in the compile worker's timeout), and tier "auto" keeps its first tier's code with no background
-O2 compile. The quick tier and the baseline grow about linearly and stay allowed. Small limits
keep these tests cheap."""
from __future__ import annotations

import pytest

from support import in_child

from pybpf.errors import JITError, VMError
from pybpf.insn import make
from pybpf.program import Program
from pybpf.vm import VM

LIMIT = 40


def _adds(slots: int) -> Program:
    """r0 = 0; r0 += 1 ... ; exit: ``slots`` slots, r0 = slots - 2."""
    return Program(make("mov64_imm", 0, imm=0) + make("add64_imm", 0, imm=1) * (slots - 2)
                   + make("exit"))


def _writes_r10(slots: int) -> Program:
    """``r10 = r10`` first (unverified: the baseline tier refuses programs that write r10, so
    tier auto starts on LLVM's quick tier), padded with additions; r0 = slots - 3."""
    return Program(make("mov64_reg", 10, 10) + make("mov64_imm", 0, imm=0)
                   + make("add64_imm", 0, imm=1) * (slots - 3) + make("exit"))


@pytest.mark.jit
@in_child
def test_o2_refuses_a_program_over_the_limit_and_the_other_tiers_load_it():
    from pybpf.jit import tiers

    vm = VM(max_o2_slots=LIMIT)
    with pytest.raises(JITError, match=r"program too large for -O2: 41 slots, more than the 40 "
                                       r"this VM compiles at -O2 .*tier=\"auto\" .*"
                                       r'tier="baseline" or tier="quick"'):
        vm.load(_adds(LIMIT + 1), engine="jit", tier="O2")
    lp = vm.load(_adds(LIMIT), engine="jit", tier="O2")      # at the limit: -O2 code
    assert lp._jit.tier == "O2" and lp.run() == LIMIT - 2
    for tier in ("quick", "baseline", "auto"):
        lp = vm.load(_adds(LIMIT + 1), engine="jit", tier=tier)
        tiers.drain()
        assert lp._jit.tier == ("baseline" if tier == "auto" else tier), tier
        assert lp.run() == LIMIT - 1
    assert lp._jit.tier_error == ("not compiled at -O2: 41 slots, more than the 40 -O2 "
                                  "compiles (VM(max_o2_slots=...))")


@pytest.mark.jit
@in_child
def test_auto_on_the_quick_tier_starts_no_o2_compile_over_the_limit():
    from pybpf.jit import tiers

    vm = VM(max_o2_slots=LIMIT)
    big = vm.load(_writes_r10(LIMIT + 1), engine="jit", verify=False, tier="auto")
    small = vm.load(_writes_r10(LIMIT), engine="jit", verify=False, tier="auto")
    tiers.drain()
    assert big._jit.tier == "quick" and small._jit.tier == "O2"
    assert big._jit.tier_error == ("not compiled at -O2: 41 slots, more than the 40 -O2 "
                                   "compiles (VM(max_o2_slots=...))")
    assert big.run() == LIMIT - 2 and small.run() == LIMIT - 3


def test_the_limit_is_range_checked():
    for bad in (0, -1, 1.5, "10", True):
        with pytest.raises(VMError, match="max_o2_slots"):
            VM(max_o2_slots=bad)
    assert VM(max_o2_slots=7).max_o2_slots == 7 and VM().max_o2_slots is None
