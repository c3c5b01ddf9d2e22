"""The pieces of seeded random BPF program generators: registers, immediates, labels, stack and
buffer slots, loads and stores, and turning a list of items with labels into a Program.

A generator builds a list of items, ``("insn", form, ops)``, ``("jump", form, ops)`` and
``("call", form, ops)`` (``ops["label"]`` names the target) and ``("label", name)``;
:func:`items_to_program` resolves the labels into slot offsets. Used by the compile benchmark
(:mod:`pybpf.benchmarks.bench_compile`) and the JIT's differential test
(``tests/test_jit_diff.py``), whose generators differ in what programs they make, not in how.
"""
from __future__ import annotations

import random

from pybpf import isa
from pybpf.insn import make
from pybpf.program import Program


class ItemGenerator:
    """Random choices from one seed. ``scalars``: the registers results may go to; ``imms``:
    the immediates drawn half of the time; ``stack_use``/``mem_size``: bytes of stack below r10
    and of buffer at r6 that loads and stores reach; ``ldx``/``stores``: the load and store
    forms :meth:`mem_unit` draws from (set by the subclass)."""

    ldx: list = []
    stores: list = []

    def __init__(self, seed: int, scalars, imms, stack_use: int, mem_size: int) -> None:
        self.rnd = random.Random(seed)
        self.scalars, self.imms = tuple(scalars), tuple(imms)
        self.stack_use, self.mem_size = stack_use, mem_size
        self.nlabels = 0

    def imm(self) -> int:
        r = self.rnd.random()
        if r < 0.5:
            return self.rnd.choice(self.imms)
        return self.rnd.randint(-64, 64) if r < 0.8 else self.rnd.randint(-(1 << 31), (1 << 31) - 1)

    def label(self) -> str:
        self.nlabels += 1
        return f"L{self.nlabels}"

    def reg(self, forbidden=()) -> int:
        return self.rnd.choice([r for r in self.scalars if r not in forbidden])

    def insn(self, form, **ops) -> tuple:
        """An instruction item; ``form`` is a Form or a form name."""
        return ("insn", isa.FORMS_BY_NAME[form] if isinstance(form, str) else form, ops)

    def slot(self, size: int, stack: bool) -> tuple[int, int]:
        """(base register, offset) of an aligned ``size``-byte slot in the stack or in mem."""
        k = self.rnd.randrange((self.stack_use if stack else self.mem_size) // size)
        return (10, -self.stack_use + k * size) if stack else (6, k * size)

    def mem_unit(self, forbidden, load_share: float = 0.5) -> list:
        """A load (``load_share`` of the time) or a store, on the stack or in mem."""
        stack = self.rnd.random() < 0.5
        if self.rnd.random() < load_share:
            form = self.rnd.choice(self.ldx)
            base, off = self.slot(form.size, stack)
            return [self.insn(form, dst=self.reg(forbidden), src=base, off=off)]
        form = self.rnd.choice(self.stores)
        base, off = self.slot(form.size, stack)
        if form.kind == "st":
            return [self.insn(form, dst=base, off=off, imm=self.imm())]
        return [self.insn(form, dst=base, src=self.reg(), off=off)]


def slots_of(items: list) -> int:
    """Instruction slots the items take (labels take none)."""
    return sum(it[1].slots for it in items if it[0] != "label")


def items_to_program(items: list, name: str) -> Program:
    """The Program of ``items``: jump offsets and local call immediates from the labels; labels
    starting with "fn" name functions."""
    where, slot = {}, 0
    for it in items:
        if it[0] == "label":
            where[it[1]] = slot
        else:
            slot += it[1].slots
    insns, functions, slot = [], {}, 0
    for it in items:
        if it[0] == "label":
            if it[1].startswith("fn"):
                functions[slot] = it[1]
            continue
        form, ops = it[1], dict(it[2])
        label = ops.pop("label", None)
        if it[0] == "jump":
            ops["off"] = where[label] - slot - 1
        elif it[0] == "call":
            ops["imm"] = where[label] - slot - 1
        insns += make(form, **ops)
        slot += form.slots
    return Program(insns, functions=functions, name=name)
