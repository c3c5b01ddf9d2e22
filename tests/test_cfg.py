"""Structural checks (verifier/cfg.py): subprograms, leaders and the kernel's messages."""
import pytest

from pybpf.errors import VerifierError
from pybpf.insn import make
from pybpf.program import Program
from pybpf.verifier.cfg import build_cfg, check_structure


def prog(*items):
    slots = []
    for it in items:
        slots += make(*it) if isinstance(it, tuple) else make(it)
    return Program(slots)


def test_blocks_and_successors():
    cfg = check_structure(prog(("mov64_imm", 0, 0, 0, 1), ("jeq64_imm", 0, 0, 1, 0),
                               ("mov64_imm", 0, 0, 0, 2), "exit"))
    assert cfg.leaders == [0, 2, 3]
    assert sorted(cfg.blocks[0].succs) == [2, 3]
    assert cfg.blocks[2].succs == [3]
    assert cfg.blocks[3].succs == []


def test_subprograms_from_call_targets():
    cfg = check_structure(prog(("call_local", 0, 0, 0, 1), "exit", ("mov64_imm", 0, 0, 0, 2), "exit"))
    assert [(s.start, s.end) for s in cfg.subprogs] == [(0, 2), (2, 4)]
    assert cfg.subprog_of(3).start == 2


@pytest.mark.parametrize("p,msg", [
    (prog(("ja", 0, 0, 5)), "jump out of range from insn 0 to 6"),
    (prog(("mov64_imm", 0, 0, 0, 1)), "last insn is not an exit or jmp"),
    (prog("exit", ("mov64_imm", 0, 0, 0, 1), "exit"), "unreachable insn 1"),
    (prog(("ja", 0, 0, 1), ("lddw", 1, 0, 0, 5), "exit"), "jump into the middle of ldimm64 insn 1"),
    (prog(("call_local", 0, 0, 0, 5), "exit"), "call to invalid destination"),
    # a jump may not leave its subprogram
    (prog(("call_local", 0, 0, 0, 1), ("ja", 0, 0, 1), ("mov64_imm", 0, 0, 0, 2), "exit"),
     "jump out of range from insn 1 to 3"),
])
def test_kernel_messages(p, msg):
    with pytest.raises(VerifierError) as e:
        check_structure(p)
    assert str(e.value).endswith(msg)


def test_unchecked_build_accepts_what_check_refuses():
    cfg = build_cfg(prog("exit", ("mov64_imm", 0, 0, 0, 1), "exit"), check=False)
    assert cfg.leaders == [0, 1]
