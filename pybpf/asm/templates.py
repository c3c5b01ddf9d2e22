"""The ISA table's templates as token patterns, and matching statements against them.

Every form's ``ubpf`` and ``llvm`` template (pybpf/isa.py) is parsed once with the assembler's
own grammar, placeholders standing in as names, into a pattern: literal tokens and typed slots.
A statement matches a pattern when its tokens line up with the literals and each slot accepts the
tokens at its place (docs/syntax.md says what each placeholder accepts). The mnemonic dialect
finds its candidate forms through ``isa.FORMS_BY_MNEMONIC``; the LLVM dialect through an index
keyed by the pattern's literal-token *skeleton* (operators and keywords, without registers,
numbers, names and signs), so a statement is only tried against the few forms it can be.

Matching is structural only: it binds placeholders to :class:`Reg`, :class:`Num` or :class:`Sym`
operands; ranges, labels, maps and kfuncs are checked when the instruction is encoded.
"""
from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple

from lark import Token

from .. import isa
from . import lines as _lines


class Reg(NamedTuple):
    n: int
    view: str          # "r" or "w"
    tok: Token


class Num(NamedTuple):
    value: int
    hex: bool
    tok: Token         # the NUMBER token (None for an omitted offset)


class Sym(NamedTuple):
    name: str
    tok: Token


class Fail(NamedTuple):
    pos: int           # index of the token where the statement stopped fitting
    expect: str        # what would have fitted there


# What each placeholder accepts, and how a failure there is described.
_KIND = {"rd": "reg", "rs": "reg", "wd": "reg", "ws": "reg",
         "imm": "num", "jimm": "num", "helper": "num", "imm2": "num", "imm64": "num",
         "off": "off", "tgt": "target", "tgtl": "target", "func": "target",
         "kfunc": "kfunc", "map": "map"}
_EXPECT = {"imm": "an immediate", "jimm": "an immediate", "helper": "a helper id",
           "imm2": "an immediate", "imm64": "a 64-bit immediate", "off": "an offset",
           "tgt": "a jump target (label or +N/-N)", "tgtl": "a jump target (label or +N/-N)",
           "func": "a function (label or +N/-N)", "kfunc": "a kfunc (name or id)",
           "map": "a map (name or index)"}
_VIEW = {"rd": "r", "rs": "r", "wd": "w", "ws": "w"}
# Literal tokens a placeholder may itself bring into a statement's skeleton (`kfunc(N)`).
_SKELETON_VARIANTS = {"kfunc": ((), ("(", ")"))}
_SIGNS = ("+", "-")
_PH = re.compile(r"\{(\w+)\}")


_LONG = 64    # digits beyond any field's range; longer decimals are not converted exactly


def number(tok: Token) -> int:
    s = str(tok)
    if s[:2] in ("0x", "0X"):
        return int(s, 16)
    # Python refuses int() of very long decimal strings; such a number is out of range anyway.
    return int(s, 10) if len(s) <= _LONG else 10 ** _LONG


def show(value: int, tok: Token | None) -> str:
    """A number for a message: decimal, or as written when it is far out of every range."""
    return str(value) if value.bit_length() <= 128 or tok is None else f"{str(tok)[:24]}..."


def register(tok: Token) -> tuple[str, int]:
    """(view, number) of a REG token; the number may be out of range (checked by the caller)."""
    s = tok.lstrip("%")
    return s[0], int(s[1:]) if len(s) < 8 else 1 << 32    # (beyond int()'s digit limit)


class Pattern(NamedTuple):
    form: isa.Form
    elems: tuple       # ("lit", type, value) | ("reg", n) | ("ph", name)
    strict: bool       # register views r/w must be as written (not a memory access)
    operands: int      # operand count (mnemonic dialect)


def _compile_all(specs) -> list[Pattern]:
    """Patterns for (form, template, mnemonic words to skip, strict) specs, parsed in one go."""
    text = "\n".join(_PH.sub(lambda m: f" __ph_{m.group(1)} ", t) for _, t, _, _ in specs)
    parsed = {line.number: line.tokens for line in _lines.parse(text, None)[0]}
    out = []
    for n, (form, _, skip, strict) in enumerate(specs, 1):
        toks = parsed.get(n, [])[skip:]
        elems = []
        for t in toks:
            if t.type == "NAME" and t.startswith("__ph_"):
                elems.append(("ph", t[5:]))
            elif t.type == "REG":
                elems.append(("reg", register(t)[1]))
            elif t.type == "NUMBER":
                elems.append(("lit", "NUMBER", number(t)))
            else:
                elems.append(("lit", t.type, str(t)))
        out.append(Pattern(form, tuple(elems), strict, count_operands(toks)))
    return out


def count_operands(toks) -> int:
    """Comma-separated operands at bracket depth 0 (`map_value_fd(3, 8)` is one)."""
    if not toks:
        return 0
    depth, n = 0, 1
    for t in toks:
        if t.type == "OP":
            if t in ("(", "["):
                depth += 1
            elif t in (")", "]"):
                depth -= 1
            elif t == "," and depth == 0:
                n += 1
    return n


class Tables:
    """Patterns for both dialects, built once from ``isa.FORMS``."""

    def __init__(self) -> None:
        specs = [(f, f.ubpf, len(isa.mnemonic(f).split()), False)
                 for forms in isa.FORMS_BY_MNEMONIC.values() for f in forms]
        # The r/w view says 64 or 32 bits for ALU and jumps; for memory accesses (loads,
        # stores, atomics: forms with an access size) it is cosmetic and either is accepted.
        specs += [(f, f.llvm, 0, not f.size) for f in isa.FORMS]
        patterns = iter(_compile_all(specs))
        self.ubpf: dict[str, list[Pattern]] = {
            mn: [next(patterns) for _ in forms] for mn, forms in isa.FORMS_BY_MNEMONIC.items()}
        # First words of multi-word mnemonics ("lock", "call"): alone they are incomplete.
        self.prefix_words = {mn.split()[0] for mn in self.ubpf if " " in mn}
        self.second_words = {mn.split()[1] for mn in self.ubpf if " " in mn}
        llvm = list(patterns)
        self.vocab = {e[2] for p in llvm for e in p.elems if e[:2] == ("lit", "NAME")}
        # Statements starting with these can only be LLVM ("if", "goto", "store_release"...).
        self.llvm_words = {p.elems[0][2] for p in llvm if p.elems[0][:2] == ("lit", "NAME")}
        self.llvm_words -= {mn.split()[0] for mn in self.ubpf}
        self.llvm: dict[tuple, list[Pattern]] = {}
        for p in llvm:
            for skel in _skeletons(p.elems):
                self.llvm.setdefault(skel, []).append(p)

    def skeleton(self, toks) -> tuple[tuple, list[int]]:
        """A statement's skeleton and the index of the token behind each of its elements."""
        skel, where = [], []
        for i, t in enumerate(toks):
            if (t.type == "OP" and t not in _SIGNS) or (t.type == "NAME" and t in self.vocab):
                skel.append(str(t))
                where.append(i)
        return tuple(skel), where


def _skeletons(elems) -> list[tuple]:
    out: list[tuple] = [()]
    for e in elems:
        if e[0] == "lit" and e[1] in ("OP", "NAME") and e[2] not in _SIGNS:
            out = [s + (e[2],) for s in out]
        elif e[0] == "ph" and e[1] in _SKELETON_VARIANTS:
            out = [s + v for s in out for v in _SKELETON_VARIANTS[e[1]]]
    return out


@cache
def tables() -> Tables:
    return Tables()


# --- matching ----------------------------------------------------------------------------------
def _is_op(toks, i, *values) -> bool:
    return i < len(toks) and toks[i].type == "OP" and toks[i] in values


def _num(toks, i):
    j, neg = i, False
    if _is_op(toks, j, *_SIGNS):
        neg = toks[j] == "-"
        j += 1
    if j < len(toks) and toks[j].type == "NUMBER":
        v = number(toks[j])
        return Num(-v if neg else v, toks[j][:2] in ("0x", "0X"), toks[j]), j + 1
    return None, j


def _slot(name: str, toks, i, strict: bool):
    """Match one placeholder at ``toks[i]``: (operand, next index) or (None, failure index)."""
    kind = _KIND[name]
    t = toks[i] if i < len(toks) else None
    if kind == "reg":
        if t is not None and t.type == "REG":
            view, n = register(t)
            if not strict or view == _VIEW[name]:
                return Reg(n, view, t), i + 1
        return None, i
    if kind == "num":
        return _num(toks, i)
    if kind == "off":
        if _is_op(toks, i, *_SIGNS):
            return _num(toks, i)
        return Num(0, False, None), i       # `[%r1]`, `(r1)`: no displacement
    if t is not None and t.type == "NAME":
        if kind == "kfunc" and t == "kfunc" and _is_op(toks, i + 1, "("):
            v, j = _num(toks, i + 2)
            if v is None:
                return None, j
            return (v, j + 1) if _is_op(toks, j, ")") else (None, j)
        return Sym(str(t), t), i + 1
    return _num(toks, i)                    # a target, kfunc or map given as a number


def _describe(elem, strict: bool) -> str:
    if elem[0] == "ph":
        if _KIND[elem[1]] == "reg":
            if strict:
                return "a 64-bit register (rN)" if _VIEW[elem[1]] == "r" else "a 32-bit register (wN)"
            return "a register"
        return _EXPECT[elem[1]]
    if elem[0] == "reg":
        return f"register r{elem[1]}"
    return f"'{elem[2]:#x}'" if elem[1] == "NUMBER" else f"'{elem[2]}'"


def match(p: Pattern, toks, start: int = 0):
    """Bind ``p``'s placeholders to ``toks[start:]``: a dict of operands, or a :class:`Fail`."""
    bind: dict = {}
    i, elems = start, p.elems
    for k, e in enumerate(elems):
        t = toks[i] if i < len(toks) else None
        if e[0] == "ph":
            v, j = _slot(e[1], toks, i, p.strict)
            if v is None:
                return Fail(j, _describe(e, p.strict))
            prev = bind.get(e[1])
            if prev is not None and prev[0] != v[0]:   # `{rd} = le16 {rd}`: one register twice
                return Fail(i, f"'{prev.tok}' again")
            bind[e[1]] = v
            i = j
            continue
        if e[0] == "reg":
            ok = t is not None and t.type == "REG" and register(t)[1] == e[1]
        elif e[1] == "NUMBER":
            ok = t is not None and t.type == "NUMBER" and number(t) == e[2]
        else:
            ok = t is not None and t.type == e[1] and t == e[2]
        if not ok:
            if e[:3] == ("lit", "OP", "[") and k + 1 < len(elems) and elems[k + 1][0] == "ph" \
                    and _KIND[elems[k + 1][1]] == "reg":
                return Fail(i, "a memory operand [reg+off]")
            return Fail(i, _describe(e, p.strict))
        i += 1
    if i < len(toks):
        return Fail(i, "end of statement")
    return bind
