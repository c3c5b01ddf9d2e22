"""Execution tracing: one event per executed instruction, printed like a debugger's step.

The interpreter's tracing variant calls :class:`Tracer` after every instruction (before it, for
jumps, calls and exit) with the frame's registers. The tracer works out which registers the
instruction changed and, for stores and atomics, which memory it wrote, and hands the user's
callback a :class:`TraceEvent` whose ``str()`` is the kernel disassembly of the instruction
(``(07) r1 += 8``, as bpftool and the verifier log print it) followed by the changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from pybpf.disasm import format_insn

from .maps.arena import Arena
from .memory import PROC, UNPACK

_STORE_KINDS = ("st", "stx")


@dataclass
class TraceEvent:
    pc: int                      # slot of the instruction
    depth: int                   # call depth (0 = main frame)
    opcode: int
    text: str                    # kernel-style disassembly
    changed: dict                # register number -> new value
    regs: tuple                  # r0..r10 after the instruction
    store: tuple | None = None   # (address, size, value) of a memory write
    note: str = ""               # e.g. the value an exit returns

    def __str__(self) -> str:
        head = f"{'  ' * self.depth}{self.pc}: ({self.opcode:02x}) {self.text}"
        notes = [f"r{i}=0x{v:x}" for i, v in sorted(self.changed.items())]
        if self.note:
            notes.append(self.note)
        if self.store is not None:
            addr, size, value = self.store
            notes.append(f"*(u{8 * size} *)0x{addr:x}=0x{value:x}")
        if not notes:
            return head
        return f"{head:<40}; " + " ".join(notes)


class Tracer:
    """Turns the generated code's hook calls into TraceEvents for ``callback``."""

    def __init__(self, prog, callback, regions, arena=None) -> None:
        self.prog, self.callback, self.regions, self.arena = prog, callback, regions, arena
        self.forms = {pc: (form, insn) for pc, form, insn in prog.instructions()}
        self.texts: dict[int, str] = {}
        self.prev: dict[int, tuple] = {}

    def enter(self, depth: int, regs: tuple) -> None:
        self.prev[depth] = regs

    sync = enter

    def insn(self, pc: int, depth: int, regs: tuple) -> None:
        before = self.prev.get(depth, regs)
        self.prev[depth] = regs
        form, insn = self.forms[pc]
        text = self.texts.get(pc)
        if text is None:
            text = self.texts[pc] = format_insn(self.prog, pc, "kernel")
        changed = {i: v for i, (a, v) in enumerate(zip(before, regs)) if a != v}
        store = None
        if form.kind in _STORE_KINDS or (form.kind == "atomic" and form.op != "load_acq"):
            store = self._stored(before[insn.dst], insn.off, form.size)
        note = f"return 0x{regs[0]:x}" if form.kind == "exit" else ""
        self.callback(TraceEvent(pc, depth, insn.opcode, text, changed, regs, store, note))

    def _stored(self, base: int, off: int, size: int) -> tuple:
        """(address, size, value now there) of a store that was checked before it ran."""
        addr = (base + off) & ((1 << 64) - 1)
        r = self.regions.find(addr, size)
        arena = r.owner if r is not None and isinstance(r.owner, Arena) else None
        if r is None and self.arena is not None and base <= 0xFFFFFFFF:
            arena, addr = self.arena, self.arena.bpf_address(base, off)   # PROBE_MEM32
        if arena is not None:       # read through the arena: it never faults
            return (addr, size, arena.load(addr, size))
        return (addr, size, UNPACK[size](PROC, addr)[0])
