"""Turning a command-line input (file or stdin) into a Program: detect its kind, then read it.

Kinds: ``asm`` (text in either dialect), ``bin`` (raw little-endian bytecode), ``data``
(a bpf_conformance/uBPF ``.data`` file: its raw section, else its asm section) and ``elf``
(a clang-built object). Detection looks at content, not names: ELF magic, a NUL byte (bytecode
always has some; text never does), a line starting with ``--`` (a .data section), else text.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import BPFError
from .program import Program, too_large
from .uapi import BPF_COMPLEXITY_LIMIT_INSNS

KINDS = ("asm", "bin", "data", "elf")
# The kernel loads at most BPF_COMPLEXITY_LIMIT_INSNS (1,000,000) instructions: raw bytecode
# above 8 MB cannot be a program (refused before it is decoded, program.too_large). Text and
# objects get room for symbols, comments and debug data; anything larger is refused before it
# is read whole.
MAX_INPUT = 64 << 20


class InputError(BPFError):
    """An input that cannot be read at all (missing file, undecodable text, empty, too large)."""


def _too_large(name: str, limit: int) -> InputError:
    return InputError(f"{name}: larger than {limit >> 20} MiB, more than any BPF program "
                      f"(the kernel's limit is {BPF_COMPLEXITY_LIMIT_INSNS:,} instructions)")


def read_input(path: str, limit: int = MAX_INPUT) -> tuple[bytes, str]:
    """Bytes of ``path`` (``-`` = stdin) and the name to show in messages; InputError for an
    unreadable input or one above ``limit`` bytes (checked before reading it whole)."""
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
        if len(data) > limit:
            raise _too_large("<stdin>", limit)
        return data, "<stdin>"
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None
    if len(data) > limit:
        raise _too_large(path, limit)
    return data, path


def detect_kind(data: bytes) -> str:
    if data[:4] == b"\x7fELF":
        return "elf"
    if b"\x00" in data:
        return "bin"
    text = data.decode("utf-8", errors="replace")
    if any(line.startswith("--") for line in text.splitlines()):
        return "data"
    return "asm"


def load_program(path: str, fmt: str | None = None, syntax: str = "auto",
                 section: str | None = None) -> Program:
    """Read ``path`` and build a Program, raising a BPFError subclass on bad input."""
    data, name = read_input(path)
    if not data:
        raise InputError(f"{name}: empty input")
    kind = fmt or detect_kind(data)
    if section is not None and kind != "elf":
        raise InputError(f"{name}: --section selects a program of an ELF object; this input "
                         f"is {kind}")
    if kind == "bin":
        msg = too_large(-(-len(data) // 8))      # before decoding any of it
        if msg:
            raise InputError(f"{name}: {msg}")
        return Program.from_bytes(data, name=Path(name).stem or "prog")
    if kind == "elf":
        from .elf import load_elf_program  # ELF loading arrives with the ELF/BTF loader
        return load_elf_program(data, name, section)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{name}: not UTF-8 text at byte {e.start} (use --format bin for bytecode)") from None
    if kind == "data":
        from .datafile import parse_data_text
        df = parse_data_text(text, name, Path(name).parent if name != "<stdin>" else None)
        if df.raw is not None:
            return Program.from_bytes(df.raw, name=Path(name).stem)
        if df.asm is None:
            raise InputError(f"{name}: .data file has neither an asm nor a raw section")
        text = df.asm
    from .asm import assemble
    return assemble(text, syntax=syntax, filename=name)
