"""From source text to statements: listing clean-up and the Lark parse.

The result is one :class:`Line` per source line that has a label or a statement, with the
statement's tokens (lark ``Token`` objects: ``type`` REG/NUMBER/NAME/OP, 1-based ``line`` and
``column``). Lark failures become :class:`AsmError` with the position and the offending line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..errors import AsmError
from ..uapi import BPF_COMPLEXITY_LIMIT_INSNS

# Lines per Lark parse. The grammar is line-based, so chunks parse independently; each chunk's
# tree (positions on every node) is dropped before the next, which keeps a huge listing from
# holding a whole-file tree (about 3 KiB per line before chunking).
CHUNK_LINES = 4096


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


def _clean(line: str) -> str:
    """The line with listing-only columns blanked out (columns of what remains are kept)."""
    if _NOISE.match(line):
        return ""
    m = _SYMBOL.match(line)
    if m:
        return f"{m.group(1)}{m.group(2)}:"
    m = _INDEX.match(line)
    if m:
        return " " * m.end() + line[m.end():]
    return line


def parse(text: str, filename: str | None) -> tuple[list[Line], list[str]]:
    """Parse ``text``; returns the lines with content and the source lines (for messages).

    Refuses, at the line that crosses it, text with more statements than the kernel's
    1,000,000-instruction limit (every statement is at least one slot) or more labels than
    that, so memory stays bounded by what a loadable program needs.
    """
    source = text.split("\n")
    lines: list[Line] = []
    nstmts = nlabels = 0
    for start in range(0, len(source), CHUNK_LINES):
        chunk = "\n".join(_clean(line) for line in source[start:start + CHUNK_LINES]) + "\n"
        try:
            tree = parser().parse(chunk)
        except UnexpectedInput as e:
            raise _lark_error(e, source, filename, start) from None
        except LarkError as e:  # pragma: no cover - lark raises UnexpectedInput for bad input
            raise AsmError(f"cannot parse: {e}", start + 1, 1, source[start], filename) from None
        for node in tree.children:
            toks = node.children
            for tok in toks:
                # line and column are all the assembler reads; the other positions are
                # dropped (two ints per token, a third of a listing's memory)
                tok.line += start
                tok.start_pos = tok.end_pos = tok.end_line = tok.end_column = None
            number = toks[0].line
            if not lines or lines[-1].number != number:
                lines.append(Line(number))
            if node.data == "label":
                lines[-1].labels.append(toks[0])
                nlabels += 1
                what = "labels" if nlabels > BPF_COMPLEXITY_LIMIT_INSNS else None
            else:
                lines[-1].tokens = list(toks)
                nstmts += 1
                what = "statements" if nstmts > BPF_COMPLEXITY_LIMIT_INSNS else None
            if what:
                raise AsmError(f"program too large: more than {BPF_COMPLEXITY_LIMIT_INSNS:,} "
                               f"{what}, the kernel's instruction limit (E2BIG)", number,
                               toks[0].column, source[number - 1], filename)
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
