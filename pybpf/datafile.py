"""Reader for bpf_conformance / uBPF ``.data`` test files (docs/architecture.md, "Tests").

A file is a sequence of ``-- name`` sections. ``#`` starts a comment anywhere on a line. This
module only parses; :mod:`pybpf.testrunner` decides what a file expects and runs it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BPFError

# Sections this reader understands; anything else makes the runner skip the file with a reason.
KNOWN_SECTIONS = {"asm", "raw", "mem", "result", "error", "error pattern", "no jit",
                  "description", "c", "no register offset"}


class DataFileError(BPFError):
    """A ``.data`` file that cannot be read (bad hex in mem/raw, bad result, duplicate section)."""

    def __init__(self, message: str, path: str = "", line: int = 0):
        super().__init__(message)
        self.path, self.line = path, line

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


@dataclass
class DataFile:
    path: str
    sections: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # name -> [(lineno, text)]
    unknown: list[str] = field(default_factory=list)
    asm_file_text: str | None = None     # asm with other lines blanked, so line numbers match the file

    def has(self, name: str) -> bool:
        return name in self.sections

    def body(self, name: str) -> list[str]:
        return [t for _, t in self.sections.get(name, [])]

    @property
    def asm(self) -> str | None:
        return self.asm_file_text

    @property
    def raw(self) -> bytes | None:
        if "raw" not in self.sections:
            return None
        out = bytearray()
        for lineno, text in self.sections["raw"]:
            toks = text.split()
            if not toks:
                continue
            try:
                if len(toks) == 8 and all(len(t) == 2 for t in toks):
                    # negative/unused-*.data spell an instruction as 8 hex bytes
                    out += bytes(int(t, 16) for t in toks)
                else:
                    for t in toks:
                        out += int(t, 0).to_bytes(8, "little")
            except (ValueError, OverflowError):
                raise DataFileError(f"bad raw instruction {text.strip()!r}", self.path, lineno) from None
        return bytes(out)

    @property
    def mem(self) -> bytes | None:
        if "mem" not in self.sections:
            return None
        out = bytearray()
        for lineno, text in self.sections["mem"]:
            if ":" in text:  # hexdump offsets, as uBPF allows
                text = text.split(":", 1)[1]
            for tok in text.split():
                if not re.fullmatch(r"[0-9a-fA-F]{2}", tok):
                    raise DataFileError(f"bad mem byte {tok!r}", self.path, lineno)
                out.append(int(tok, 16))
        return bytes(out)

    @property
    def result(self) -> int | None:
        lines = [(n, t.strip()) for n, t in self.sections.get("result", []) if t.strip()]
        if not lines:
            return None
        lineno, text = lines[-1]
        try:
            value = int(text, 16) if "0x" in text.lower() else int(text, 10)
        except ValueError:
            raise DataFileError(f"bad result {text!r}", self.path, lineno) from None
        return value & 0xFFFFFFFFFFFFFFFF

    @property
    def error(self) -> str | None:
        if "error" not in self.sections:
            return None
        lines = [t.strip() for t in self.body("error") if t.strip()]
        return lines[-1] if lines else ""

    @property
    def error_pattern(self) -> str | None:
        if "error pattern" not in self.sections:
            return None
        lines = [t.strip() for t in self.body("error pattern") if t.strip()]
        return lines[-1] if lines else ""


def parse_data_text(text: str, path: str = "<data>", base_dir: Path | None = None) -> DataFile:
    df = DataFile(path)
    current: str | None = None
    asm_lines: list[str] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, line in enumerate(lines, 1):
        stripped = line.split("#", 1)[0].rstrip()
        if line.startswith("--"):
            name = line[2:].split("#", 1)[0].strip()
            include = None
            if "@" in name:  # `-- asm @ file`: the body lives in another file
                name, include = (p.strip() for p in name.split("@", 1))
            if name in df.sections:
                raise DataFileError(f"duplicate section '-- {name}'", path, lineno)
            current = name
            df.sections[name] = []
            if name not in KNOWN_SECTIONS:
                df.unknown.append(name)
            if include is not None:
                inc = (base_dir or Path(".")) / include
                try:
                    inc_text = inc.read_text()
                except OSError as e:
                    raise DataFileError(f"cannot read included file {include!r}: {e.strerror}",
                                        path, lineno) from None
                df.sections[name] = [(lineno, t.split("#", 1)[0]) for t in inc_text.splitlines()]
                if name == "asm":
                    df.asm_file_text = inc_text
            asm_lines.append("")
            continue
        if current is not None:
            df.sections[current].append((lineno, stripped))
        asm_lines.append(line if current == "asm" else "")
    if "asm" in df.sections and df.asm_file_text is None:
        df.asm_file_text = "\n".join(asm_lines)
    return df


def parse_data_file(path: str | Path) -> DataFile:
    from .inputs import MAX_INPUT
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_INPUT + 1)
    except OSError as e:
        raise DataFileError(f"cannot read: {e.strerror}", str(path)) from None
    if len(raw) > MAX_INPUT:
        raise DataFileError(f"larger than {MAX_INPUT >> 20} MiB: not a test file", str(path))
    return parse_data_text(raw.decode("utf-8", errors="replace"), str(path), path.parent)
