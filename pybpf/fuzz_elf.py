"""Structure-aware inputs for the ``elf`` fuzz target (:mod:`pybpf.fuzz`).

Flipping random bytes of an object mostly hits instruction or string bytes, or breaks the ELF
header so that the file is refused at once. Here one to three *fields* of a committed sample
object are changed, chosen among its structures: a section header (offset, size, link, info,
entsize, type, flags, name), a symbol (name, value, size, section index, type and binding), a
relocation (offset, symbol, type), a word of the BTF header or of its types and strings, a
word of the .BTF.ext records, a field of an instruction, a byte of a section name (another
program type); each set to a boundary (0, all ones, 2^31, 2^32, the file's size, one past) or
moved by a little, or swapped with the same field of a sibling. A few cases are truncated
files. Many cases still parse, so linking, relocation and map creation run on odd input.
"""
from __future__ import annotations

import random
import struct
from pathlib import Path

_SHDR = struct.Struct("<IIQQQQIIQQ")    # name type flags addr offset size link info align entsize
_SYM = struct.Struct("<IBBHQQ")         # name info other shndx value size
_REL = struct.Struct("<QQ")             # offset info (sym << 32 | type)
SHT_SYMTAB, SHT_REL, SHT_STRTAB = 2, 9, 3

# (offset in the record, size in bytes) of each field worth changing
_SHDR_FIELDS = {"name": (0, 4), "type": (4, 4), "flags": (8, 8), "offset": (24, 8),
                "size": (32, 8), "link": (40, 4), "info": (44, 4), "align": (48, 8),
                "entsize": (56, 8)}
_SYM_FIELDS = {"name": (0, 4), "info": (4, 1), "other": (5, 1), "shndx": (6, 2),
               "value": (8, 8), "size": (16, 8)}
_REL_FIELDS = {"offset": (0, 8), "type": (8, 4), "sym": (12, 4)}


class _Elf:
    """The section headers of an ELF64 little-endian object, enough to find its structures."""

    def __init__(self, data: bytes):
        self.shoff = int.from_bytes(data[0x28:0x30], "little")
        self.shnum = int.from_bytes(data[0x3C:0x3E], "little")
        shstrndx = int.from_bytes(data[0x3E:0x40], "little")
        self.sections = []
        for i in range(self.shnum):
            at = self.shoff + 64 * i
            name, typ, _f, _a, off, size, link, info, _al, ent = _SHDR.unpack_from(data, at)
            self.sections.append(dict(index=i, at=at, name_off=name, type=typ, offset=off,
                                      size=size, link=link, info=info, entsize=ent))
        strtab = self.sections[shstrndx]
        table = data[strtab["offset"]:strtab["offset"] + strtab["size"]]
        for s in self.sections:
            end = table.find(b"\0", s["name_off"])
            s["name"] = table[s["name_off"]:end].decode("latin-1")
            s["name_at"] = strtab["offset"] + s["name_off"]

    def named(self, name: str):
        return next((s for s in self.sections if s["name"] == name), None)

    def of_type(self, typ: int):
        return [s for s in self.sections if s["type"] == typ and s["size"]]


def _boundary(rng: random.Random, old: int, size: int, file_size: int) -> int:
    top = (1 << (8 * size)) - 1
    c = rng.random()
    if c < 0.35:
        v = old + rng.choice((1, -1, 2, -2, 4, -4, 8, -8, 16, -16, 64, -64))
    elif c < 0.75:
        v = rng.choice((0, 1, top, top >> 1, (top >> 1) + 1, 1 << 31, (1 << 32) - 1, 1 << 32,
                        file_size, file_size + 1, file_size - 1, 7, 8, 24, 0x1000))
    else:
        v = rng.randrange(top + 1)
    return v & top


def _set(data: bytearray, at: int, size: int, value: int) -> None:
    if 0 <= at and at + size <= len(data):
        data[at:at + size] = value.to_bytes(size, "little")


def _field(data: bytearray, rng: random.Random, at: int, fields: dict, siblings: list[int]) -> None:
    """One field of the record at ``at``: a boundary, a nudge, or the same field of a sibling."""
    off, size = rng.choice(list(fields.values()))
    old = int.from_bytes(data[at + off:at + off + size], "little")
    if siblings and rng.random() < 0.2:
        other = rng.choice(siblings) + off
        value = int.from_bytes(data[other:other + size], "little")
    else:
        value = _boundary(rng, old, size, len(data))
    _set(data, at + off, size, value)


def _word(data: bytearray, rng: random.Random, start: int, length: int) -> None:
    """One 4-byte-aligned word of a region (BTF types and .BTF.ext records are made of them)."""
    if length < 4:
        return
    at = start + 4 * rng.randrange(length // 4)
    old = int.from_bytes(data[at:at + 4], "little")
    _set(data, at, 4, _boundary(rng, old, 4, len(data)))


def _mutate(data: bytearray, elf: _Elf, rng: random.Random) -> str:
    what = rng.random()
    if what < 0.2:                                  # a section header
        s = rng.choice(elf.sections[1:] or elf.sections)
        _field(data, rng, s["at"], _SHDR_FIELDS, [t["at"] for t in elf.sections])
        return f"shdr {s['name']}"
    if what < 0.4:                                  # a symbol
        for s in elf.of_type(SHT_SYMTAB):
            n = s["size"] // 24
            at = s["offset"] + 24 * rng.randrange(1, n) if n > 1 else s["offset"]
            _field(data, rng, at, _SYM_FIELDS, [s["offset"] + 24 * k for k in range(n)])
            return "symbol"
    if what < 0.55:                                 # a relocation
        rels = elf.of_type(SHT_REL)
        if rels:
            s = rng.choice(rels)
            n = s["size"] // 16
            at = s["offset"] + 16 * rng.randrange(n)
            _field(data, rng, at, _REL_FIELDS, [s["offset"] + 16 * k for k in range(n)])
            return f"reloc {s['name']}"
    if what < 0.75:                                 # BTF: the header, a type word, a string
        btf = elf.named(".BTF")
        if btf and btf["size"] >= 24:
            base = btf["offset"]
            hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, base + 4)
            c = rng.random()
            if c < 0.2:
                _word(data, rng, base + 4, 20)
            elif c < 0.85:
                _word(data, rng, base + hdr_len + type_off, type_len)
            elif str_len:
                at = base + hdr_len + str_off + rng.randrange(str_len)
                _set(data, at, 1, rng.choice((0, 0x41, 0xFF, 0x2E)))
            return "btf"
    if what < 0.85:                                 # .BTF.ext records
        ext = elf.named(".BTF.ext")
        if ext and ext["size"] >= 8:
            _word(data, rng, ext["offset"], ext["size"] - ext["size"] % 4)
            return "btf.ext"
    if what < 0.93:                                 # an instruction field
        code = [s for s in elf.sections if s["type"] == 1 and s["size"] >= 8
                and s["name"] not in (".BTF", ".BTF.ext", "license")
                and not s["name"].startswith((".data", ".rodata", ".maps", "maps"))]
        if code:
            s = rng.choice(code)
            at = s["offset"] + 8 * rng.randrange(s["size"] // 8)
            _field(data, rng, at, {"op": (0, 1), "regs": (1, 1), "off": (2, 2), "imm": (4, 4)}, [])
            return f"insn {s['name']}"
    # a byte of a section name: another program type, a data section that is not one
    s = rng.choice(elf.sections[1:] or elf.sections)
    if s["name"]:
        at = s["name_at"] + rng.randrange(len(s["name"]))
        _set(data, at, 1, rng.choice(b"?./_abcxz0\0"))
    return f"name {s['name']}"


def elf_case(rng: random.Random, objects: list[Path]) -> dict:
    base = rng.choice(objects)
    data = bytearray(base.read_bytes())
    if rng.random() < 0.1:
        return {"hex": bytes(data[:rng.randrange(len(data))]).hex(), "base": base.name,
                "mutations": ["truncated"]}
    elf = _Elf(bytes(data))
    done = [_mutate(data, elf, rng) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    return {"hex": bytes(data).hex(), "base": base.name, "mutations": done}
