"""A Program's memory per slot (issue 12: programs up to the kernel's 1,000,000 instructions).

``Program`` keeps its slots as one shared ``Insn`` per distinct instruction plus a list of
references, the encoded bytes, and two arrays for ``instructions()`` (pybpf/program.py). Measured
with tracemalloc on the benchmark's branchy program (benchmarks/bench_bigprog.py: 3 distinct
instructions in each 8-slot block), ``Program.from_bytes`` with its ``to_bytes()``: 236 bytes per
slot before (a list of Insn, a list of (slot, form, insn) tuples, a tuple snapshot of the slots for
the bytes memo), 59 after. The bounds leave room for allocator and Python version differences.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tracemalloc

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pybpf.benchmarks.bench_bigprog import branchy  # noqa: E402
from pybpf.errors import DecodeError  # noqa: E402
from pybpf.insn import Insn, make, validate  # noqa: E402
from pybpf.program import Program  # noqa: E402

SLOTS = 20_000
BYTES_PER_SLOT = 100        # measured 59.6 (was 235.9)
# every slot distinct (imm counts up): the shared Insn objects no longer help, the rest must
UNIQUE_BYTES_PER_SLOT = 200     # measured 135 (was 248)


def _traced(build):
    """(object, bytes it holds after a collection) for ``build()``."""
    import gc

    gc.collect()
    tracemalloc.start()
    try:
        obj = build()
        gc.collect()
        return obj, tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def _per_slot(raw: bytes) -> float:
    def build():
        p = Program.from_bytes(raw)
        p.to_bytes()
        return p
    prog, held = _traced(build)
    assert len(prog) == len(raw) // 8
    return held / len(prog)


def test_program_memory_per_slot_branchy():
    raw = branchy(SLOTS).to_bytes()
    per = _per_slot(raw)
    print(f"{per:.1f} bytes per slot")
    assert per < BYTES_PER_SLOT


def test_program_memory_per_slot_all_distinct():
    insns = make("mov64_imm", 0, imm=0)
    for i in range(SLOTS - 2):
        insns += make("add64_imm", 0, imm=100_000 + i)
    raw = Program(insns + make("exit")).to_bytes()
    per = _per_slot(raw)
    print(f"{per:.1f} bytes per slot")
    assert per < UNIQUE_BYTES_PER_SLOT


def test_program_from_insns_shares_equal_instructions():
    """A program built from a list keeps one Insn per distinct instruction (the caller's list is
    not what it holds), and its slots compare equal to that list."""
    insns = [Insn(*i) for i in make("mov64_imm", 0, imm=1) * 1000] + make("exit")
    prog = Program(insns)
    assert prog.insns == insns and insns == list(prog.insns)
    assert len({id(i) for i in prog.insns}) == 2
    assert prog.insns[0] is prog.insns[999]


def test_slots_and_instructions_behave_as_sequences():
    prog = branchy(203)
    prog.to_bytes()
    raw = prog.to_bytes()
    again = Program.from_bytes(raw, name=prog.name)
    assert again.insns == prog.insns and again == prog
    assert again.to_bytes() == raw
    expect = validate(list(prog.insns))
    got = prog.instructions()
    assert list(got) == expect and got == expect and len(got) == len(expect)
    assert got[5] == expect[5] and got[-1] == expect[-1] and got[2:9] == expect[2:9]
    assert prog.insns[3:7] == list(prog.insns)[3:7]
    # a slot replaced in place shows in the bytes (as when insns was a list)
    copy = Program.from_bytes(raw)
    copy.insns[1] = Insn(0xB7, 0, 0, 0, 9)
    assert copy.to_bytes() == raw[:8] + Insn(0xB7, 0, 0, 0, 9).encode() + raw[16:]
    with pytest.raises(ValueError):
        copy.insns[0:2] = [Insn(0x95)]
    # a program with an ld_imm64: its second slot is not an instruction
    lddw = Program(make("lddw", 0, imm=5, imm2=7) + make("exit"))
    assert [pc for pc, _, _ in lddw.instructions()] == [0, 2]
    # a copy with another field shares the slots and their decoding
    named = dataclasses.replace(prog, name="other")
    assert named.insns is prog.insns and named.instructions() is prog.instructions()
    # a copy with other slots is validated again
    with pytest.raises(DecodeError, match="unknown opcode"):
        dataclasses.replace(prog, insns=[Insn(0xFF)])
