"""``Program``: a validated sequence of instruction slots plus what the assembler or loader knew.

Besides the slots it keeps the names that make listings readable and loads possible: function
and label symbols (slot index -> name), map declarations referenced by ld_imm64 index
(``.map`` directives in assembly, or an ELF object's maps), kfunc names, and per-slot source
lines when the input had them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import isa
from .errors import DecodeError
from .insn import Insn, encode, split_slots, validate
from .uapi import BPF_COMPLEXITY_LIMIT_INSNS


def too_large(slots: int) -> str | None:
    """The refusal of a ``slots``-slot program, None when it fits: the kernel's bpf_prog_load
    refuses more than BPF_COMPLEXITY_LIMIT_INSNS (1,000,000) slots with E2BIG (privileged
    loads; ld_imm64 counts two)."""
    if slots <= BPF_COMPLEXITY_LIMIT_INSNS:
        return None
    return (f"program too large: {slots:,} instructions, more than the kernel's "
            f"{BPF_COMPLEXITY_LIMIT_INSNS:,} (E2BIG)")


@dataclass
class MapDecl:
    """A map the program refers to by index (ld_imm64 src 5/6); created when the program loads."""

    name: str
    type: str
    key_size: int = 0
    value_size: int = 0
    max_entries: int = 0
    flags: int = 0
    map_extra: int = 0
    # offset of a ``struct bpf_spin_lock`` in the value (``.map ... lock=OFF``), -1 without: the
    # map then has value BTF as far as the verifier and the runtime are concerned
    spin_lock_off: int = -1


@dataclass
class Program:
    """Instruction slots plus symbols. ``len(prog)`` counts slots (ld_imm64 counts two)."""

    insns: list[Insn]
    functions: dict[int, str] = field(default_factory=dict)   # entry slot -> function name
    labels: dict[int, str] = field(default_factory=dict)      # slot -> label name
    maps: list[MapDecl] = field(default_factory=list)
    kfuncs: dict[int, str] = field(default_factory=dict)      # kfunc id -> name
    lines: dict[int, str] = field(default_factory=dict)       # slot -> source line text
    name: str = "prog"

    def __post_init__(self) -> None:
        self.insns = list(self.insns)
        self._decoded = validate(self.insns)

    @classmethod
    def from_bytes(cls, raw: bytes, name: str = "prog") -> "Program":
        """Decode raw little-endian bytecode strictly (``DecodeError`` names the slot); bytecode
        above the kernel's size limit is refused before any of it is decoded."""
        if not raw:
            raise DecodeError("empty program", 0)
        msg = too_large(-(-len(raw) // 8))
        if msg:
            raise DecodeError(msg, BPF_COMPLEXITY_LIMIT_INSNS)
        return cls(split_slots(bytes(raw)), name=name)

    def to_bytes(self) -> bytes:
        # remembered with the slots it encodes (Insn is immutable): the cache keys of every
        # load read it (pybpf.verdicts, pybpf.jit.loadkey)
        slots = tuple(self.insns)
        memo = self.__dict__.get("_bytes")
        if memo is None or memo[0] != slots:
            memo = self._bytes = (slots, encode(slots))
        return memo[1]

    def __len__(self) -> int:
        return len(self.insns)

    def instructions(self) -> list[tuple[int, isa.Form, Insn]]:
        """(slot, form, insn) for every instruction, ld_imm64 once."""
        return self._decoded

    def map_index(self, name: str) -> int:
        for i, m in enumerate(self.maps):
            if m.name == name:
                return i
        raise KeyError(name)
