"""The two-pass assembler: statements -> forms (pass 1, slots and labels) -> instructions (pass 2).

Pass 1 checks registers and labels, runs directives, and matches every statement against the ISA
table's templates (:mod:`.templates`) to learn its form and so its size in slots. Pass 2 resolves
labels, maps and kfuncs, range-checks numbers and encodes through :func:`pybpf.insn.make`, so
the fixed fields of every form come from the table. Any problem is an :class:`AsmError` with the
file, line, column and the offending line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lark import Token

from .. import isa
from ..errors import AsmError, DecodeError
from ..insn import make
from ..kfunc_ids import KFUNC_IDS
from ..program import MapDecl, Program, too_large
from . import directives
from .lines import Line, parse
from .templates import Fail, Num, Reg, Sym, count_operands, match, register, show, tables

SYNTAXES = ("llvm", "ubpf", "auto")

_S16 = (-(1 << 15), (1 << 15) - 1)
_S32 = (-(1 << 31), (1 << 31) - 1)
_IMM32 = (-(1 << 31), (1 << 32) - 1)      # values >= 2^31 are the bit pattern of a negative
_IMM64 = (-(1 << 63), (1 << 64) - 1)
_FIELD = {"rd": "dst", "wd": "dst", "rs": "src", "ws": "src", "off": "off", "tgt": "off",
          "imm": "imm", "jimm": "imm", "helper": "imm", "kfunc": "imm", "map": "imm",
          "func": "imm", "tgtl": "imm", "imm2": "imm2"}
_EXIT = "exit"   # the mnemonic dialect's predefined label: the first exit instruction


def assemble(text: str, syntax: str = "auto", filename: str | None = None,
             kfuncs: dict[str, int] | None = None) -> Program:
    """Assemble ``text`` in the ``"llvm"`` or ``"ubpf"`` dialect (``"auto"``: detect it).

    ``kfuncs`` adds or overrides kfunc ids by name (default: :data:`pybpf.kfunc_ids.KFUNC_IDS`).
    Raises :class:`AsmError` for any text that is not a valid program.
    """
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown syntax {syntax!r} (expected one of {', '.join(SYNTAXES)})")
    lines, source = parse(text, filename)
    if syntax == "auto":
        syntax = detect(lines)
    return _Assembler(syntax, source, filename, {**KFUNC_IDS, **(kfuncs or {})}).run(lines)


@dataclass
class _Stmt:
    line: Line
    slot: int
    candidates: list      # [(form, bind)] in table order; pass 2 takes the first that resolves


class _Unresolved(Exception):
    """A name that did not resolve for one candidate form (another may take it)."""

    def __init__(self, what: str, tok: Token):
        self.what, self.tok = what, tok


@dataclass
class _Assembler:
    syntax: str
    source: list[str]
    filename: str | None
    kfunc_ids: dict[str, int]
    labels: dict[str, int] = field(default_factory=dict)
    label_tokens: dict[str, Token] = field(default_factory=dict)
    maps: list[MapDecl] = field(default_factory=list)
    functions: dict[int, str] = field(default_factory=dict)
    kfuncs: dict[int, str] = field(default_factory=dict)

    def error(self, msg: str, tok: Token | None, line: int = 0, col: int = 0) -> AsmError:
        if tok is not None:
            line, col = tok.line, tok.column
        text = self.source[line - 1] if 0 < line <= len(self.source) else None
        return AsmError(msg, line, col, text, self.filename)

    # --- pass 1 ------------------------------------------------------------------------------
    def run(self, lines: list[Line]) -> Program:
        stmts: list[_Stmt] = []
        slot = 0
        for line in lines:
            self.check_registers(line)
            for tok in line.labels:
                self.define(tok, slot)
            toks = line.tokens
            if not toks:
                continue
            if toks[0].type == "NAME" and toks[0].startswith("."):
                directives.run(self, toks)
                continue
            cands = self.match_ubpf(toks) if self.syntax == "ubpf" else self.match_llvm(toks)
            stmts.append(_Stmt(line, slot, cands))
            slot += cands[0][0].slots
            if too_large(slot):     # ld_imm64 counts two slots, as in the kernel
                raise self.error(too_large(slot), toks[0])
        if not stmts:
            raise self.error("empty program: no instructions", None, 1, 1)
        if self.syntax == "ubpf" and _EXIT not in self.labels:
            first_exit = next((s.slot for s in stmts if s.candidates[0][0].kind == "exit"), None)
            if first_exit is not None:
                self.labels[_EXIT] = first_exit
        return self.encode(stmts, slot)

    def check_registers(self, line: Line) -> None:
        for tok in line.labels:
            if tok.type == "REG":
                raise self.error(f"invalid label name '{tok}' (a register)", tok)
        for tok in line.tokens:
            if tok.type == "REG":
                view, n = register(tok)
                if n >= isa.NREGS or (self.syntax == "ubpf" and view != "r"):
                    raise self.error(f"invalid register '{tok}'", tok)

    def define(self, tok: Token, slot: int) -> None:
        name = str(tok)
        if name in self.labels:
            first = self.label_tokens[name]
            raise self.error(f"duplicate label '{name}' (first defined on line {first.line})", tok)
        self.labels[name] = slot
        self.label_tokens[name] = tok

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
    def encode(self, stmts: list[_Stmt], nslots: int) -> Program:
        insns, lines = [], {}
        for st in stmts:
            unresolved = []
            for form, bind in st.candidates:
                try:
                    fields = self.fields(bind, st.slot, nslots)
                except _Unresolved as u:
                    unresolved.append(u)
                    continue
                insns += make(form, **fields)
                break
            else:
                tok = unresolved[0].tok
                what = " or ".join(dict.fromkeys(u.what for u in unresolved if u.tok is tok))
                raise self.error(f"unknown {what} '{tok}'", tok)
            lines[st.slot] = self.source[st.line.number - 1].strip()
        labels: dict[int, str] = {}
        for name, slot in self.labels.items():
            if name in self.label_tokens and slot <= nslots:
                labels.setdefault(slot, name)
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
            dest = self.labels[v.name]
            rel = Num(dest - slot - 1, False, v.tok)
        else:
            dest, rel = slot + 1 + v.value, v
        bounds, size = (_S16, "s16") if ph == "tgt" else (_S32, "s32")
        value = self.ranged(rel, bounds, "jump offset {} out of range for " + size)
        if ph == "func" and 0 <= dest < nslots and dest not in self.functions:
            name = v.name if isinstance(v, Sym) else None
            self.functions[dest] = name or next(
                (n for n, s in self.labels.items() if s == dest and n in self.label_tokens),
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


def detect(lines: list[Line]) -> str:
    """The dialect of a program: "llvm" if any statement can only be LLVM, else "ubpf".

    LLVM statements assign or compare (a token with ``=``), start with a bare ``rN``/``wN`` or
    a keyword no mnemonic starts with (``if``, ``goto``, ``callx``...), or write ``lock *(...)``
    and ``call NAME`` where the mnemonic dialect has ``lock add`` and ``call local NAME``.
    Programs of ``exit`` and ``call N`` (``call -N`` too) only read the same in both.
    """
    t = tables()
    for line in lines:
        toks = line.tokens
        if not toks or toks[0].startswith("."):
            continue
        first, second = toks[0], (toks[1] if len(toks) > 1 else None)
        if (any(x.type == "OP" and "=" in x for x in toks)
                or (first.type == "REG" and not first.startswith("%"))
                or first in t.llvm_words
                or (first in t.prefix_words and second is not None
                    # a sign is not LLVM's: `call -5` is a helper id in both dialects
                    and ((second.type == "OP" and second not in ("-", "+"))
                         or (second.type == "NAME" and second not in t.second_words)))):
            return "llvm"
    return "ubpf"


def _common_prefix(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
