"""``Program``: a validated sequence of instruction slots plus what the assembler or loader knew.

Besides the slots it keeps the names that make listings readable and loads possible: function
and label symbols (slot index -> name), map declarations referenced by ld_imm64 index
(``.map`` directives in assembly, or an ELF object's maps), kfunc names, and per-slot source
lines when the input had them.

The slots are stored compactly, because a program may have the kernel's 1,000,000 of them:
``prog.insns`` is a :class:`Slots` sequence whose equal instructions are one shared
``Insn`` object (a program repeats most of its instructions: ``exit``, ``r0 = 0``, spills), and
``prog.instructions()`` is an :class:`Instructions` view over two arrays (the slot where each
instruction starts and its form's index) that builds its ``(slot, form, insn)`` tuples as they
are read. A 1,000,000-slot program costs tens of bytes per slot instead of ~240 for a list of
``Insn`` plus a list of tuples.
"""
from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import isa
from .errors import DecodeError
from .insn import _SLOT, Insn, encode, form_of
from .uapi import BPF_COMPLEXITY_LIMIT_INSNS


def too_large(slots: int) -> str | None:
    """The refusal of a ``slots``-slot program, None when it fits: the kernel's bpf_prog_load
    refuses more than BPF_COMPLEXITY_LIMIT_INSNS (1,000,000) slots with E2BIG (privileged
    loads; ld_imm64 counts two)."""
    if slots <= BPF_COMPLEXITY_LIMIT_INSNS:
        return None
    return (f"program too large: {slots:,} instructions, more than the kernel's "
            f"{BPF_COMPLEXITY_LIMIT_INSNS:,} (E2BIG)")


class Slots(Sequence):
    """The slots of a program: ``Insn`` per slot, equal ones shared, and the encoded
    bytes once asked for (every load asks: cache keys). Compares equal to any sequence of the
    same ``Insn`` values (a list from ``make``, a tuple, another ``Slots``)."""

    __slots__ = ("_insns", "_code", "_view")

    def __init__(self, insns=(), code: bytes | None = None):
        shared: dict = {}
        self._insns = [shared.setdefault(i, i) for i in insns]
        self._code, self._view = code, None

    @classmethod
    def decode(cls, raw: bytes) -> "Slots":
        """The slots of raw bytecode (length a multiple of 8), unvalidated."""
        if len(raw) % 8:
            raise DecodeError(f"bytecode length {len(raw)} is not a multiple of 8", len(raw) // 8)
        shared: dict = {}
        out = []
        for o in range(0, len(raw), 8):
            chunk = raw[o:o + 8]
            i = shared.get(chunk)
            if i is None:
                op, regs, off, imm = _SLOT.unpack(chunk)
                i = shared[chunk] = Insn(op, regs & 0xF, regs >> 4, off, imm)
            out.append(i)
        self = cls.__new__(cls)
        self._insns, self._code, self._view = out, raw, None
        return self

    def instructions(self) -> "Instructions":
        """The validated instructions (``DecodeError`` names the first bad slot); computed once,
        shared by every program made from these slots (``dataclasses.replace``)."""
        if self._view is None:
            self._view = Instructions(self)
        return self._view

    def encode(self) -> bytes:
        if self._code is None:
            self._code = encode(self._insns)
        return self._code

    def __len__(self) -> int:
        return len(self._insns)

    def __getitem__(self, index):
        return self._insns[index]       # a slice is a list of Insn

    def __iter__(self):
        return iter(self._insns)

    def __setitem__(self, index, value) -> None:
        """Replace slots in place (as in the list ``insns`` used to be); the count stays and the
        encoded bytes follow. ``instructions()`` keeps the forms validated when the program was
        made: a new program (``dataclasses.replace(prog, insns=...)``) validates again."""
        if isinstance(index, slice):
            value = list(value)
            if len(range(*index.indices(len(self._insns)))) != len(value):
                raise ValueError("a program's slots are replaced one for one")
        self._insns[index] = value
        self._code = None

    def __eq__(self, other) -> bool:
        if isinstance(other, Slots):
            return self._insns == other._insns
        if isinstance(other, (list, tuple)):
            return self._insns == list(other)
        return NotImplemented

    __hash__ = None

    def __add__(self, other) -> list:
        return self._insns + list(other)

    def __radd__(self, other) -> list:
        return list(other) + self._insns

    def __repr__(self) -> str:
        return repr(self._insns)

    def __reduce__(self):
        return (Slots, (self._insns, self._code))


class Instructions(Sequence):
    """``(slot, form, insn)`` for every instruction of a program, ld_imm64 once: two arrays (the
    start slot of each instruction, the index of its form in a per-program table) over the
    program's slots; tuples are built as they are read."""

    __slots__ = ("_slots", "_starts", "_kinds", "_forms", "_at")

    def __init__(self, slots: Slots):
        insns = slots._insns
        starts, kinds, forms = array("I"), array("H"), []
        index: dict = {}        # id(form) -> its position in forms
        known: dict = {}        # Insn -> its form, for one-slot forms (they depend on it alone)
        pc, n = 0, len(insns)
        while pc < n:
            form = known.get(insns[pc])
            if form is None:
                form = form_of(insns, pc)
                if form.slots == 1:
                    known[insns[pc]] = form
            k = index.get(id(form))
            if k is None:
                k = index[id(form)] = len(forms)
                forms.append(form)
            starts.append(pc)
            kinds.append(k)
            pc += form.slots
        self._slots, self._starts, self._kinds, self._forms = insns, starts, kinds, forms
        self._at = None

    def form_at(self) -> "FormAt":
        """slot -> (form, insn) for instruction starts, a read-only mapping (computed once)."""
        if self._at is None:
            self._at = FormAt(self)
        return self._at

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self):
        return zip(self._starts, map(self._forms.__getitem__, self._kinds),
                   map(self._slots.__getitem__, self._starts))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        pc = self._starts[index]
        return (pc, self._forms[self._kinds[index]], self._slots[pc])

    def __eq__(self, other) -> bool:
        if isinstance(other, (Instructions, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"Instructions({list(self)!r})"


class FormAt(Mapping):
    """``{slot: (form, insn)}`` for the instruction starts of a program, over its
    :class:`Instructions`: one array of 4 bytes per slot (the instruction's index, -1 inside an
    ld_imm64) instead of a dict entry and a tuple per instruction. ``index(slot)`` is that
    instruction index (None for no instruction start)."""

    __slots__ = ("_ins", "_index")

    def __init__(self, ins: Instructions) -> None:
        index = array("i", [-1]) * len(ins._slots)
        for k, pc in enumerate(ins._starts):
            index[pc] = k
        self._ins, self._index = ins, index

    def index(self, pc: int) -> int | None:
        if 0 <= pc < len(self._index):
            k = self._index[pc]
            if k >= 0:
                return k
        return None

    def get(self, pc, default=None):
        if type(pc) is int and 0 <= pc < len(self._index):
            k = self._index[pc]
            if k >= 0:
                ins = self._ins
                return (ins._forms[ins._kinds[k]], ins._slots[pc])
        return default

    def __getitem__(self, pc):
        entry = self.get(pc)
        if entry is None:
            raise KeyError(pc)
        return entry

    def __contains__(self, pc) -> bool:
        return type(pc) is int and 0 <= pc < len(self._index) and self._index[pc] >= 0

    def __iter__(self):
        return iter(self._ins._starts)

    def __len__(self) -> int:
        return len(self._ins._starts)

    def values(self):
        ins = self._ins
        return [(ins._forms[k], ins._slots[pc]) for pc, k in zip(ins._starts, ins._kinds)]

    def items(self):
        ins = self._ins
        return [(pc, (ins._forms[k], ins._slots[pc])) for pc, k in zip(ins._starts, ins._kinds)]


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
    """Instruction slots plus symbols. ``len(prog)`` counts slots (ld_imm64 counts two).

    ``insns`` may be given as any sequence of ``Insn``; it is kept as :class:`Slots` (slots may
    be replaced in place; a program of other slots is ``dataclasses.replace(prog, insns=...)``)."""

    insns: Sequence[Insn]
    functions: dict[int, str] = field(default_factory=dict)   # entry slot -> function name
    labels: dict[int, str] = field(default_factory=dict)      # slot -> label name
    maps: list[MapDecl] = field(default_factory=list)
    kfuncs: dict[int, str] = field(default_factory=dict)      # kfunc id -> name
    lines: dict[int, str] = field(default_factory=dict)       # slot -> source line text
    name: str = "prog"

    def __post_init__(self) -> None:
        if not isinstance(self.insns, Slots):
            self.insns = Slots(self.insns)
        self._decoded = self.insns.instructions()

    @classmethod
    def from_bytes(cls, raw: bytes, name: str = "prog") -> "Program":
        """Decode raw little-endian bytecode strictly (``DecodeError`` names the slot); bytecode
        above the kernel's size limit is refused before any of it is decoded."""
        if not raw:
            raise DecodeError("empty program", 0)
        msg = too_large(-(-len(raw) // 8))
        if msg:
            raise DecodeError(msg, BPF_COMPLEXITY_LIMIT_INSNS)
        return cls(Slots.decode(bytes(raw)), name=name)

    def to_bytes(self) -> bytes:
        # computed once (until a slot is replaced): the cache keys of every load read it
        # (pybpf.verdicts, pybpf.jit.loadkey)
        return self.insns.encode()

    def __len__(self) -> int:
        return len(self.insns)

    def instructions(self) -> Instructions:
        """(slot, form, insn) for every instruction, ld_imm64 once (a read-only sequence)."""
        return self._decoded

    def map_index(self, name: str) -> int:
        for i, m in enumerate(self.maps):
            if m.name == name:
                return i
        raise KeyError(name)
