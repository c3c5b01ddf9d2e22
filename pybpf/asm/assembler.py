"""The assembler: statements -> instructions, one chunk of the listing at a time.

Pass 1 reads the listing through :class:`.lines.Listing`, chunk by chunk. It checks registers and
labels, runs directives, and matches every statement against the ISA table's templates
(:mod:`.templates`) to learn its form and so its size in slots. A statement that names nothing
(no label, map or kfunc) is encoded at once through :func:`pybpf.insn.make`, so the fixed fields of
every form come from the table; what the same statement text gives is remembered, so a listing's
repeated statements cost one dictionary look-up each. A statement that names something keeps only
its slot and line number; pass 2 reads that line again once every label is known and encodes it.
Nothing else of a chunk outlives it.

Any problem is an :class:`AsmError` with the file, line, column and the offending line. Which
error is reported does not depend on the chunking: a parse error anywhere comes first (then the
statement and label limits), then the first pass-1 error, then the first pass-2 error.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from lark import Token

from .. import isa
from ..errors import AsmError, DecodeError
from ..insn import make
from ..kfunc_ids import KFUNC_IDS
from ..program import MapDecl, Program, too_large
from . import directives
from .lines import Entry, Listing, Row, place
from .templates import Fail, Num, Reg, Sym, count_operands, match, register, show, tables

SYNTAXES = ("llvm", "ubpf", "auto")

_S16 = (-(1 << 15), (1 << 15) - 1)
_S32 = (-(1 << 31), (1 << 31) - 1)
_IMM32 = (-(1 << 31), (1 << 32) - 1)      # values >= 2^31 are the bit pattern of a negative
_IMM64 = (-(1 << 63), (1 << 64) - 1)
_FIELD = {"rd": "dst", "wd": "dst", "rs": "src", "ws": "src", "off": "off", "tgt": "off",
          "imm": "imm", "jimm": "imm", "helper": "imm", "kfunc": "imm", "map": "imm",
          "func": "imm", "tgtl": "imm", "imm2": "imm2"}
_NAMING = ("func", "kfunc")   # placeholders whose encoding records a name (pass 2, in order)
_EXIT = "exit"   # the mnemonic dialect's predefined label: the first exit instruction
_SLOT_BITS = 21  # labels pack (line << _SLOT_BITS) | slot; slots stay <= 1,000,001
_SLOT_MASK = (1 << _SLOT_BITS) - 1   # (line 0: the predefined `exit`)


def assemble(text: str, syntax: str = "auto", filename: str | None = None,
             kfuncs: dict[str, int] | None = None) -> Program:
    """Assemble ``text`` in the ``"llvm"`` or ``"ubpf"`` dialect (``"auto"``: detect it).

    ``kfuncs`` adds or overrides kfunc ids by name (default: :data:`pybpf.kfunc_ids.KFUNC_IDS`).
    Raises :class:`AsmError` for any text that is not a valid program.
    """
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown syntax {syntax!r} (expected one of {', '.join(SYNTAXES)})")
    listing = Listing(text.split("\n"), filename)
    if syntax == "auto":
        syntax = _detect(listing)
    return _Assembler(syntax, listing, {**KFUNC_IDS, **(kfuncs or {})}).run()


class _Unresolved(Exception):
    """A name that did not resolve for one candidate form (another may take it)."""

    def __init__(self, what: str, tok: Token):
        self.what, self.tok = what, tok


class _Info:
    """What one statement text means in one dialect (columns counted from the text's start)."""

    __slots__ = ("bad_reg", "directive", "error", "slots", "insns", "late", "names", "is_exit")

    def __init__(self) -> None:
        self.bad_reg = None      # (message, col): an invalid register (checked before labels)
        self.directive = False
        self.error = None        # (message, col): the statement matches no form
        self.slots = 0
        self.insns = None        # the encoded slots, when the statement names nothing
        self.late = None         # (message, col): its encoding's error (a pass-2 error)
        self.names = False       # names a label, map or kfunc, or calls a function: pass 2
        self.is_exit = False


@dataclass
class _Assembler:
    syntax: str
    listing: Listing
    kfunc_ids: dict[str, int]
    labels: dict[str, int] = field(default_factory=dict)   # name -> line << 21 | slot
    maps: list[MapDecl] = field(default_factory=list)
    functions: dict[int, str] = field(default_factory=dict)
    kfuncs: dict[int, str] = field(default_factory=dict)

    @property
    def source(self) -> list[str]:
        return self.listing.source

    @property
    def filename(self) -> str | None:
        return self.listing.filename

    def error(self, msg: str, tok: Token | None, line: int = 0, col: int = 0) -> AsmError:
        if tok is not None:
            line, col = tok.line, tok.column
        text = self.source[line - 1] if 0 < line <= len(self.source) else None
        return AsmError(msg, line, col, text, self.filename)

    def slot_of(self, name: str) -> int:
        return self.labels[name] & _SLOT_MASK

    # --- pass 1 ------------------------------------------------------------------------------
    def run(self) -> Program:
        self.insns: list = []                  # slots; None where pass 2 will encode
        self.stmt_slots, self.stmt_lines = array("l"), array("l")
        self.pending = array("l")              # slot, line of each statement left to pass 2
        self.late: tuple[int, AsmError] | None = None    # the first pass-2 error found so far
        self.first_exit: int | None = None
        first_error = None
        for rows in self.listing.chunks():
            if first_error is not None:
                continue            # read on: a parse error or the size limits come first
            try:
                for row in rows:
                    self.statement(row)
            except AsmError as e:
                first_error = e
        if first_error is not None:
            raise first_error
        nslots = len(self.insns)
        if not nslots:
            raise self.error("empty program: no instructions", None, 1, 1)
        if self.syntax == "ubpf" and _EXIT not in self.labels and self.first_exit is not None:
            self.labels[_EXIT] = self.first_exit
        return self.encode(nslots)

    def statement(self, row: Row) -> None:
        number, labels, off, entry = row
        for lab in labels:
            if lab.reg:
                raise self.error(f"invalid label name '{lab.name}' (a register)", None, number, lab.col)
        info = entry.info or self.analyse(entry)
        if info.bad_reg:
            raise self.error(info.bad_reg[0], None, number, off + info.bad_reg[1])
        slot = len(self.insns)
        for lab in labels:
            self.define(lab.name, number, lab.col, slot)
        if not entry.stmt:
            return
        if info.directive:
            directives.run(self, place(entry.toks, number, off))
            return
        if info.error:
            raise self.error(info.error[0], None, number, off + info.error[1])
        self.stmt_slots.append(slot)
        self.stmt_lines.append(number)
        if info.insns is not None:
            self.insns += info.insns
            if info.late and self.late is None:
                self.late = slot, self.error(info.late[0], None, number, off + info.late[1])
        else:
            self.insns += [None] * info.slots
            self.pending.extend((slot, number))
        if info.is_exit and self.first_exit is None:
            self.first_exit = slot
        if too_large(len(self.insns)):     # ld_imm64 counts two slots, as in the kernel
            raise self.error(too_large(len(self.insns)), None, number, off + entry.first_col)

    def analyse(self, entry: Entry) -> _Info:
        """What ``entry`` means in this dialect; remembered on the entry."""
        info = entry.info = _Info()
        toks = entry.toks
        try:
            self.check_registers(toks)
        except AsmError as e:
            info.bad_reg = e.message, e.col
            return info
        if not toks:
            return info
        if toks[0].type == "NAME" and toks[0].startswith("."):
            info.directive = True       # keeps its tokens: a directive runs where it stands
            return info
        entry.toks = None
        try:
            cands = self.match_ubpf(toks) if self.syntax == "ubpf" else self.match_llvm(toks)
        except AsmError as e:
            info.error = e.message, e.col
            return info
        form = cands[0][0]
        info.slots = form.slots
        info.is_exit = self.syntax == "ubpf" and form.kind == "exit"
        info.names = any(ph in _NAMING or isinstance(v, Sym)
                         for _, bind in cands for ph, v in bind.items())
        if not info.names:      # it encodes the same wherever it stands: once
            try:
                info.insns = tuple(make(form, **self.fields(cands[0][1], 0, 0)))
            except AsmError as e:
                info.insns = (None,) * form.slots
                info.late = e.message, e.col
        return info

    def check_registers(self, toks: list[Token]) -> None:
        for tok in toks:
            if tok.type == "REG":
                view, n = register(tok)
                if n >= isa.NREGS or (self.syntax == "ubpf" and view != "r"):
                    raise self.error(f"invalid register '{tok}'", tok)

    def define(self, name: str, number: int, col: int, slot: int) -> None:
        if name in self.labels:
            first = self.labels[name] >> _SLOT_BITS
            raise self.error(f"duplicate label '{name}' (first defined on line {first})",
                             None, number, col)
        self.labels[name] = number << _SLOT_BITS | slot

    def match_ubpf(self, toks: list[Token]) -> list:
        t = tables()
        nwords = 0
        while nwords < min(len(toks), 3) and toks[nwords].type == "NAME":
            nwords += 1
        if nwords == 0:
            raise self.error(f"expected a mnemonic, got '{toks[0]}'", toks[0])
        for k in range(nwords, 0, -1):
            mn = " ".join(toks[:k])
            if mn in t.ubpf:
                break
        else:
            if toks[0] in t.prefix_words and nwords == 1:
                raise self.error(f"invalid number of operands for {toks[0]}", toks[0])
            raise self.error(f"unknown mnemonic '{' '.join(toks[:nwords])}'", toks[0])
        given = count_operands(toks[k:])
        cands = [p for p in t.ubpf[mn] if p.operands == given]
        if not cands:
            want = " or ".join(str(n) for n in sorted({p.operands for p in t.ubpf[mn]}))
            msg = (f"invalid number of operands for {mn}: expected {want}, got {given}" if k > 1
                   else f"wrong operand count for '{mn}': expected {want}, got {given}")
            raise self.error(msg, toks[0])
        return self.pick(cands, toks, k)

    def match_llvm(self, toks: list[Token]) -> list:
        t = tables()
        skel, where = t.skeleton(toks)
        cands = t.llvm.get(skel)
        if cands:
            return self.pick(cands, toks, 0)
        # A label, map or kfunc may be spelled like a keyword (`goto exit`): read one keyword
        # after the first as a name.
        for k in range(1, len(skel)):
            if toks[where[k]].type == "NAME" and skel[:k] + skel[k + 1:] in t.llvm:
                return self.pick(t.llvm[skel[:k] + skel[k + 1:]], toks, 0)
        if toks[0].type == "NAME" and toks[0] not in t.vocab:
            raise self.error(f"unknown mnemonic '{toks[0]}'", toks[0])
        if not skel:     # registers, numbers and names only: `r0`, `r0 r1`, `5`
            if toks[0].type == "REG" and len(toks) == 1:
                raise self.end_error("incomplete instruction", toks)
            bad = toks[1] if toks[0].type == "REG" else toks[0]
            raise self.error(f"unexpected '{bad}'", bad)
        # Point at the first keyword or operator that no template has at that place.
        best = max((_common_prefix(skel, key) for key in t.llvm), default=0)
        if best < len(skel):
            raise self.error(f"unexpected '{toks[where[best]]}'", toks[where[best]])
        nxt = dict.fromkeys(f"'{key[best]}'" for key in t.llvm
                            if len(key) > best and key[:best] == skel)
        raise self.end_error("expected " + " or ".join(nxt), toks)

    def pick(self, patterns, toks: list[Token], start: int) -> list:
        found, fails = [], []
        for p in patterns:
            r = match(p, toks, start)
            if isinstance(r, Fail):
                fails.append(r)
            elif not found or p.form.slots == found[0][0].slots:
                found.append((p.form, r))
        if found:
            return found
        pos = max(f.pos for f in fails)
        expects = list(dict.fromkeys(f.expect for f in fails if f.pos == pos))
        if pos >= len(toks):
            raise self.end_error("expected " + " or ".join(expects), toks)
        if expects == ["end of statement"]:
            raise self.error(f"unexpected '{toks[pos]}'", toks[pos])
        raise self.error("expected " + " or ".join(expects), toks[pos])

    def end_error(self, msg: str, toks: list[Token]) -> AsmError:
        last = toks[-1]
        return self.error(msg, None, last.line, last.column + len(last))

    # --- pass 2 ------------------------------------------------------------------------------
    def encode(self, nslots: int) -> Program:
        insns, pending = self.insns, self.pending
        late_slot = self.late[0] if self.late else nslots
        for k in range(0, len(pending), 2):
            slot, number = pending[k], pending[k + 1]
            if slot > late_slot:
                break
            toks = self.listing.tokens(number)
            cands = self.match_ubpf(toks) if self.syntax == "ubpf" else self.match_llvm(toks)
            unresolved = []
            for form, bind in cands:
                try:
                    fields = self.fields(bind, slot, nslots)
                except _Unresolved as u:
                    unresolved.append(u)
                    continue
                insns[slot:slot + form.slots] = make(form, **fields)
                break
            else:
                tok = unresolved[0].tok
                what = " or ".join(dict.fromkeys(u.what for u in unresolved if u.tok is tok))
                raise self.error(f"unknown {what} '{tok}'", tok)
        if self.late:
            raise self.late[1]
        source = self.source
        lines = {slot: source[number - 1].strip()
                 for slot, number in zip(self.stmt_slots, self.stmt_lines)}
        labels: dict[int, str] = {}
        for name, packed in self.labels.items():
            slot = packed & _SLOT_MASK
            if packed >> _SLOT_BITS and slot <= nslots:      # not the predefined `exit`
                labels.setdefault(slot, name)
        # what only the assembler needed goes before the Program decodes its slots
        self.labels.clear()
        self.stmt_slots = self.stmt_lines = self.pending = None
        self.functions.setdefault(0, labels.get(0, Program.name))
        functions = dict(sorted(self.functions.items()))
        try:
            return Program(insns, functions=functions, labels=labels, maps=self.maps,
                           kfuncs=self.kfuncs, lines=lines)
        except DecodeError as e:  # pragma: no cover - every form comes from the table
            raise AsmError(f"internal error: {e}") from e

    def fields(self, bind: dict, slot: int, nslots: int) -> dict:
        out = {}
        for ph, v in bind.items():
            if isinstance(v, Reg):
                out[_FIELD[ph]] = v.n
            elif ph == "imm64":
                value = self.ranged(v, _IMM64, "immediate {} out of range")
                out["imm"], out["imm2"] = value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF
            elif ph == "off":
                out["off"] = self.ranged(v, _S16, "offset {} out of range for s16")
            elif ph in ("tgt", "tgtl", "func"):
                out[_FIELD[ph]] = self.target(ph, v, slot, nslots)
            elif ph == "kfunc":
                out["imm"] = self.kfunc(v)
            elif ph == "map":
                out["imm"] = self.map_index(v)
            else:
                out[_FIELD[ph]] = self.imm32(v)
        return out

    def ranged(self, v: Num, bounds: tuple[int, int], msg: str) -> int:
        if not bounds[0] <= v.value <= bounds[1]:
            raise self.error(msg.format(show(v.value, v.tok)), v.tok)
        return v.value

    def imm32(self, v: Num) -> int:
        # The mnemonic dialect takes 0x80000000..0xffffffff as bit patterns but wants decimal
        # immediates to fit int32 (`mov32 %r0, 2147483648` is an error, as in bpf_conformance).
        bounds = _S32 if self.syntax == "ubpf" and not v.hex else _IMM32
        return self.ranged(v, bounds, "immediate {} out of range")

    def target(self, ph: str, v, slot: int, nslots: int) -> int:
        if isinstance(v, Sym):
            if v.name not in self.labels:
                raise _Unresolved("label", v.tok)
            dest = self.slot_of(v.name)
            rel = Num(dest - slot - 1, False, v.tok)
        else:
            dest, rel = slot + 1 + v.value, v
        bounds, size = (_S16, "s16") if ph == "tgt" else (_S32, "s32")
        value = self.ranged(rel, bounds, "jump offset {} out of range for " + size)
        if ph == "func" and 0 <= dest < nslots and dest not in self.functions:
            name = v.name if isinstance(v, Sym) else None
            self.functions[dest] = name or next(
                (n for n, p in self.labels.items() if p & _SLOT_MASK == dest and p >> _SLOT_BITS),
                f"sub_{dest}")
        return value

    def kfunc(self, v) -> int:
        if isinstance(v, Sym):
            if v.name not in self.kfunc_ids:
                raise _Unresolved("kfunc", v.tok)
            kid = self.kfunc_ids[v.name]
            self.kfuncs[kid] = v.name
            return kid
        kid = self.imm32(v)
        name = next((n for n, i in self.kfunc_ids.items() if i == kid), None)
        if name is not None:
            self.kfuncs[kid] = name
        return kid

    def map_index(self, v) -> int:
        if isinstance(v, Sym):
            for i, m in enumerate(self.maps):
                if m.name == v.name:
                    return i
            raise _Unresolved("map", v.tok)
        return self.imm32(v)


def _detect(listing: Listing) -> str:
    """The dialect of a listing: "llvm" if any statement can only be LLVM, else "ubpf".

    Reads the listing up to the first such statement (its parse errors and size limits first).
    """
    for rows in listing.chunks():
        for row in rows:
            entry = row.entry
            if entry.stmt:
                if entry.llvm is None:
                    entry.llvm = llvm_only(entry.toks)
                if entry.llvm:
                    return "llvm"
    return "ubpf"


def llvm_only(toks: list[Token]) -> bool:
    """Whether a statement can only be LLVM.

    LLVM statements assign or compare (a token with ``=``), start with a bare ``rN``/``wN`` or
    a keyword no mnemonic starts with (``if``, ``goto``, ``callx``...), or write ``lock *(...)``
    and ``call NAME`` where the mnemonic dialect has ``lock add`` and ``call local NAME``.
    Programs of ``exit`` and ``call N`` (``call -N`` too) only read the same in both.
    """
    t = tables()
    if toks[0].startswith("."):
        return False
    first, second = toks[0], (toks[1] if len(toks) > 1 else None)
    return bool(any(x.type == "OP" and "=" in x for x in toks)
                or (first.type == "REG" and not first.startswith("%"))
                or first in t.llvm_words
                or (first in t.prefix_words and second is not None
                    # a sign is not LLVM's: `call -5` is a helper id in both dialects
                    and ((second.type == "OP" and second not in ("-", "+"))
                         or (second.type == "NAME" and second not in t.second_words))))


def _common_prefix(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
