"""From source text to statements: listing clean-up, tokens, and the listing read chunk by chunk.

:class:`Listing` reads a listing :data:`CHUNK_LINES` lines at a time and gives, for each line
with a label or a statement, its labels and an :class:`Entry` for the rest of the line. Entries
are shared by every line whose statement text is the same (a listing repeats itself a lot), so
a statement is tokenized once and the assembler analyses it once; nothing of a chunk outlives it
but what the assembler keeps. Tokens are lark ``Token`` objects (``type`` REG/NUMBER/NAME/OP,
1-based ``line`` and ``column``).

Two readers give the same tokens: the grammar (grammar.lark, a Lark LALR parser) is the
definition, and a scanner built from the grammar's own terminals, tried in Lark's order, is the
fast path (about 20 times faster; tests/test_asm_scan.py compares them). Any line the scanner
does not accept sends its chunk to Lark, so every syntax error is Lark's, with its position.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Iterator, NamedTuple

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..errors import AsmError
from ..uapi import BPF_COMPLEXITY_LIMIT_INSNS

# Lines per chunk. The grammar is line-based, so chunks read independently; limits are counted
# and parse errors found a chunk at a time, so a huge listing is never held as tokens.
CHUNK_LINES = 4096
# Distinct statement texts remembered at once (the cache is emptied when it is full).
CACHE_ENTRIES = 1 << 14
# False: every chunk goes through the Lark parser and nothing is cached (the reference path).
FAST = True


@dataclass
class Line:
    number: int                                 # 1-based source line
    labels: list[Token] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)


@cache
def parser() -> Lark:
    return Lark.open("grammar.lark", rel_to=__file__, parser="lalr", propagate_positions=True)


# --- llvm-objdump listings pasted as input ------------------------------------------------------
# Whole lines that carry nothing: "prog.o:\tfile format elf64-bpf", "Disassembly of section .text:".
_NOISE = re.compile(r"^(\S.*:\s+file format\s+\S+|Disassembly of section .*:)\s*$")
# "0000000000000038 <g>:" is a symbol header: the symbol becomes a label (a comment may follow,
# as on any line).
_SYMBOL = re.compile(r"^(\s*)[0-9a-fA-F]{8,16}\s+<([^<>\s]+)>:\s*(?:(?:#|//|;).*)?$")
# "      22:\tb7 00 00 00 00 00 00 00\tr0 = 0": the index and raw-byte columns.
_INDEX = re.compile(r"^\s*\d+:(?:[ \t]+[0-9a-fA-F]{2}(?=[ \t]))*")
_DIGIT_FIRST = re.compile(r"\s*\d")


def _clean(line: str) -> str:
    """The line with listing-only columns blanked out (columns of what remains are kept)."""
    # most lines can match none of the three: a quick look first
    if ("file format" not in line and "Disassembly of section" not in line and ">:" not in line
            and _DIGIT_FIRST.match(line) is None):
        return line
    if _NOISE.match(line):
        return ""
    m = _SYMBOL.match(line)
    if m:
        return f"{m.group(1)}{m.group(2)}:"
    m = _INDEX.match(line)
    if m:
        return " " * m.end() + line[m.end():]
    return line


# --- the scanner ---------------------------------------------------------------------------------
class Label(NamedTuple):
    name: str
    col: int
    reg: bool          # register-shaped: refused by the assembler, which says why


_WS = r"[ \t\f\r\v]"        # the grammar's WS
# `name:` at the start of a line. NAME and REG are the grammar's; no terminal that outranks
# them can start with these characters, so the scanner would read the same two tokens.
_LABEL = re.compile(rf"{_WS}*(%[rw][0-9]+|[A-Za-z_.][\w.]*){_WS}*:")
_REGISTER = re.compile(r"%?[rw][0-9]+")


@cache
def _scanner() -> tuple[re.Pattern, frozenset]:
    """Lark's lexer as one regex: the grammar's terminals in the order Lark tries them."""
    lark = parser()
    terms = sorted(lark.terminals, key=lambda t: (-t.priority, -t.pattern.max_width,
                                                  -len(t.pattern.value), t.name))
    rx = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terms))
    return rx, frozenset(lark.ignore_tokens)


def tokenize(text: str, line: int = 0, off: int = 0) -> tuple[list[Token], list[Token]] | None:
    """(label tokens, statement tokens) of one cleaned line, or None when the grammar refuses
    it (a character no terminal takes, a ':' that ends no label). Columns are ``off`` + the
    1-based column in ``text``."""
    rx, ignore = _scanner()
    toks = []
    pos, end = 0, len(text)
    while pos < end:
        m = rx.match(text, pos)
        if m is None:
            return None
        if m.lastgroup not in ignore:
            toks.append(Token(m.lastgroup, m.group(), line=line, column=off + pos + 1))
        pos = m.end()
    i = 0
    while i + 1 < len(toks) and toks[i].type in ("NAME", "REG") and toks[i + 1].type == "COLON":
        i += 2
    labels, stmt = toks[:i:2], toks[i:]
    if any(t.type == "COLON" for t in stmt):
        return None
    return labels, stmt


def split_labels(line: str) -> tuple[list[Label], int]:
    """The labels that start a cleaned line, and where the rest of it starts."""
    labels, pos = [], 0
    while True:
        m = _LABEL.match(line, pos)
        if m is None:
            return labels, pos
        name = m.group(1)
        labels.append(Label(name, m.start(1) + 1, _REGISTER.fullmatch(name) is not None))
        pos = m.end()


class Entry:
    """What the text of a statement is, wherever it stands: its tokens (columns counted from the
    start of the text) and what the assembler made of them (``info``)."""

    __slots__ = ("labels", "toks", "stmt", "first_col", "info", "llvm")

    def __init__(self, labels: list[Token], toks: list[Token]):
        self.labels = labels        # labels after an ignored token (`a <x>: ...`), rare
        self.toks = toks            # statement tokens; the assembler drops them once analysed
        self.stmt = bool(toks)
        self.first_col = toks[0].column if toks else 0
        self.info = None            # the assembler's analysis, for one dialect
        self.llvm = None            # dialect detection: only LLVM reads this statement


class Row(NamedTuple):
    number: int                 # 1-based source line
    labels: list[Label]
    off: int                    # columns of ``entry``'s tokens are counted from here
    entry: Entry


class Listing:
    """A listing's source lines, read chunk by chunk (:meth:`chunks`) as often as needed."""

    def __init__(self, source: list[str], filename: str | None):
        self.source = source
        self.filename = filename
        self.fast = FAST
        self.cache: dict[str, Entry] = {}

    def chunks(self) -> Iterator[list[Row]]:
        """Rows of each chunk. Raises, at the first line that has one, a parse error, or the
        refusal of more statements or labels than the kernel's 1,000,000-instruction limit
        (every statement is at least one slot), so memory stays bounded by a loadable program."""
        nstmts = nlabels = 0
        limit = BPF_COMPLEXITY_LIMIT_INSNS
        for start in range(0, len(self.source), CHUNK_LINES):
            rows = self._scan(start) if self.fast else None
            if rows is None:
                rows = self._parse(start)
            for row in rows:
                for lab in row.labels:
                    nlabels += 1
                    if nlabels > limit:
                        raise self._too_many("labels", row.number, lab.col)
                if row.entry.stmt:
                    nstmts += 1
                    if nstmts > limit:
                        raise self._too_many("statements", row.number, row.off + row.entry.first_col)
            yield rows

    def _scan(self, start: int) -> list[Row] | None:
        """The fast path; None when a line is refused (Lark then says why)."""
        cache, rows = self.cache, []
        for k, line in enumerate(self.source[start:start + CHUNK_LINES], start + 1):
            line = _clean(line)
            labels, off = split_labels(line)
            rest = line[off:] if off else line
            entry = cache.get(rest)
            if entry is None:
                lexed = tokenize(rest)
                if lexed is None:
                    return None
                entry = Entry(*lexed)
                if len(cache) >= CACHE_ENTRIES:
                    cache.clear()
                cache[rest] = entry
            if entry.labels:
                labels = labels + [Label(str(t), off + t.column, t.type == "REG")
                                   for t in entry.labels]
            if labels or entry.stmt:
                rows.append(Row(k, labels, off, entry))
        return rows

    def _parse(self, start: int) -> list[Row]:
        """The reference path: the chunk through the grammar (its error when it has one)."""
        out = []
        for line in _lark_chunk(self.source, start, self.filename):
            labels = [Label(str(t), t.column, t.type == "REG") for t in line.labels]
            out.append(Row(line.number, labels, 0, Entry([], line.tokens)))
        if self.fast:      # the scanner refused a line of this chunk that the grammar accepts
            raise AsmError("internal error: the scanner refused a line the grammar accepts",
                           start + 1, 1, self.source[start], self.filename)
        return out

    def tokens(self, number: int) -> list[Token]:
        """The statement tokens of line ``number``, read again."""
        line = _clean(self.source[number - 1])
        if self.fast:
            labels, off = split_labels(line)
            lexed = tokenize(line[off:], number, off)
        else:
            lexed = None
            for parsed in _lark_chunk([line], 0, self.filename):
                lexed = parsed.labels, place(parsed.tokens, number, 0)
        assert lexed is not None, "a line read before reads again"
        return lexed[1]

    def _too_many(self, what: str, number: int, col: int) -> AsmError:
        return AsmError(f"program too large: more than {BPF_COMPLEXITY_LIMIT_INSNS:,} {what}, "
                        f"the kernel's instruction limit (E2BIG)", number, col,
                        self.source[number - 1], self.filename)


def place(toks: list[Token], number: int, off: int) -> list[Token]:
    """Copies of ``toks`` (columns counted from ``off``) on line ``number``."""
    return [Token(t.type, t.value, line=number, column=off + t.column) for t in toks]


def _lark_chunk(source: list[str], start: int, filename: str | None) -> list[Line]:
    """The lines with content of one chunk, through the grammar."""
    chunk = "\n".join(_clean(line) for line in source[start:start + CHUNK_LINES]) + "\n"
    try:
        tree = parser().parse(chunk)
    except UnexpectedInput as e:
        raise _lark_error(e, source, filename, start) from None
    except LarkError as e:  # pragma: no cover - lark raises UnexpectedInput for bad input
        raise AsmError(f"cannot parse: {e}", start + 1, 1, source[start], filename) from None
    lines: list[Line] = []
    for node in tree.children:
        toks = node.children
        for tok in toks:
            # line and column are all the assembler reads
            tok.line += start
            tok.start_pos = tok.end_pos = tok.end_line = tok.end_column = None
        number = toks[0].line
        if not lines or lines[-1].number != number:
            lines.append(Line(number))
        if node.data == "label":
            lines[-1].labels.append(toks[0])
        else:
            lines[-1].tokens = list(toks)
    return lines


def parse(text: str, filename: str | None) -> tuple[list[Line], list[str]]:
    """Parse ``text`` whole through the grammar; returns the lines with content and the source
    lines (for messages). For small texts (the ISA table's templates); the assembler reads
    through :class:`Listing`."""
    source = text.split("\n")
    lines: list[Line] = []
    for start in range(0, len(source), CHUNK_LINES):
        lines += _lark_chunk(source, start, filename)
    return lines, source


def _lark_error(e: UnexpectedInput, source: list[str], filename: str | None,
                first: int = 0) -> AsmError:
    """The error of a chunk's parse; ``first`` is the chunk's first line (0-based)."""
    line = first + e.line if isinstance(e.line, int) and e.line > 0 else len(source)
    col = e.column if isinstance(e.column, int) and e.column > 0 else 1
    if isinstance(e, UnexpectedCharacters):
        msg = f"unexpected character {e.char!r}"
    elif isinstance(e, UnexpectedToken) and e.token.type != "$END":
        msg = f"unexpected {e.token.value!r}"
    else:
        msg = "unexpected end of input"
    return AsmError(msg, line, col, source[line - 1] if line <= len(source) else "", filename)
