"""Register liveness (verifier/liveness.py), which the JIT uses to skip dead instructions."""
from __future__ import annotations

import pytest

from pybpf import isa
from pybpf.insn import make
from pybpf.verifier.cfg import build_cfg
from pybpf.verifier.liveness import liveness
from pybpf.verifier.regs import read_regs, written_regs
from support import asm


def live(text: str):
    prog = asm(text)
    return liveness(build_cfg(prog), prog.instructions())


def regs(mask: int) -> set[int]:
    return {r for r in range(isa.NREGS) if mask >> r & 1}


def test_straight_line():
    lv = live("r1 = 1\nr2 = 2\nr0 = r1\nexit")
    assert regs(lv.after[0]) == {1} and regs(lv.after[2]) == {0}
    assert [pc for pc in range(4) if lv.dead(pc)] == [1]


def test_a_chain_feeding_only_dead_values_is_dead():
    lv = live("r3 = 5\nr4 = r3\nr4 += 1\nr0 = 0\nexit")
    assert [pc for pc in range(5) if lv.dead(pc)] == [0, 1, 2]


def test_loads_are_pure_stores_are_not():
    lv = live("r2 = *(u64 *)(r1 + 0)\n*(u64 *)(r1 + 8) = r1\nr0 = 0\nexit")
    assert lv.dead(0) and not lv.dead(1)


def test_liveness_flows_across_blocks_and_loops():
    lv = live("r1 = 10\nr6 = 3\nloop:\nr1 -= 1\nif r1 != 0 goto loop\nr0 = r6\nexit")
    assert not any(lv.dead(pc) for pc in range(6))
    loop = 2
    assert regs(lv.live_in[loop]) == {1, 6} and regs(lv.live_out[loop]) == {1, 6}


def test_branch_uses_keep_values_alive_on_one_path_only():
    lv = live("r2 = 1\nr3 = 2\nif r1 > 5 goto big\nr0 = r2\nexit\nbig:\nr0 = 7\nexit")
    assert not lv.dead(0) and lv.dead(1)


def test_calls_read_the_argument_registers():
    lv = live("r1 = 1\nr2 = 2\nr6 = 9\ncall 5\nr0 = 0\nexit")
    assert not lv.dead(0) and not lv.dead(1) and lv.dead(2)


def test_r0_set_before_a_call_stays_live_after_it():
    # A failed tail call falls through with r0 unchanged: the call does not kill r0.
    lv = live("r0 = 7\nr1 = 0\nr2 = 0\nr3 = 0\ncall 12\nexit")
    assert not lv.dead(0)


def test_subprograms_are_separate_functions():
    lv = live("r1 = 4\ncall fn\nexit\nfn:\nr3 = 1\nr0 = r1\nexit")
    assert not lv.dead(0) and lv.dead(3)
    assert regs(lv.live_in[3]) == {1}


@pytest.mark.parametrize("form", isa.FORMS, ids=lambda f: f.name)
def test_every_form_has_register_effects(form):
    """read_regs/written_regs answer for every form with registers in range."""
    f = form.fields
    insn = make(form, dst=3 if f["dst"] == "reg" else 0, src=4 if f["src"] == "reg" else 0,
                imm=1 if f["imm"] == "any" else 0)[0]
    for r in read_regs(form, insn) + written_regs(form, insn):
        assert 0 <= r < isa.NREGS
    if f["src"] == "reg" and form.kind not in ("end",):
        # a register in the src field is read (or, for fetch atomics, read and written)
        assert 4 in read_regs(form, insn), form.name
