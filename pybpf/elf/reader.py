"""The ELF layer of the object loader: check that a file is a BPF relocatable object, then give
its sections, symbols and relocations as plain records (pyelftools does the parsing).

Everything here is about ELF, nothing about BPF semantics; ``pybpf.elf`` builds programs, maps
and variables on top. Every refusal is an ``ELFError`` naming the section, symbol or offset.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from ..errors import ELFError

EM_BPF = 247
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
# BPF relocation types (llvm/BinaryFormat/ELFRelocs/BPF.def)
R_BPF_NAMES = {0: "R_BPF_NONE", 1: "R_BPF_64_64", 2: "R_BPF_64_ABS64", 3: "R_BPF_64_ABS32",
               4: "R_BPF_64_NODYLD32", 10: "R_BPF_64_32"}
R_BPF_64_64, R_BPF_64_32 = 1, 10
MAX_NOBITS = 1 << 30   # a .bss this large is damage, not data


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str       # "SHT_PROGBITS", "SHT_NOBITS", ...
    flags: int
    offset: int
    size: int
    info: int
    link: int

    @property
    def is_exec(self) -> bool:
        return self.type == "SHT_PROGBITS" and bool(self.flags & SHF_EXECINSTR)


@dataclass(frozen=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: str       # "func", "object", "notype", "section", "file"
    bind: str       # "local", "global", "weak"
    shndx: int | None   # None for undefined (extern) symbols; -1 for ABS/COMMON

    @property
    def defined(self) -> bool:
        return self.shndx is not None


@dataclass(frozen=True)
class Reloc:
    offset: int     # byte offset in the target section
    type: int
    symbol: Symbol

    @property
    def type_name(self) -> str:
        return R_BPF_NAMES.get(self.type, f"relocation type {self.type}")


def _enum_name(value, prefix: str) -> str:
    """pyelftools gives known enum values as names ("STT_FUNC"), unknown ones as ints."""
    return value.removeprefix(prefix).lower() if isinstance(value, str) else f"unknown_{value}"


def _machine_name(e_machine) -> str:
    return str(e_machine).removeprefix("EM_")


class ElfReader:
    """A validated little-endian 64-bit EM_BPF ET_REL object held in memory."""

    def __init__(self, data: bytes, filename: str = "<object>"):
        from elftools.common.exceptions import ELFError as PyElfError
        from elftools.elf.elffile import ELFFile

        self.data, self.filename = bytes(data), filename
        self._check_ident()
        try:
            self.elf = ELFFile(io.BytesIO(self.data))
            self._check_header()
            self.sections = self._read_sections()
            self.symbols = self._read_symbols()
            self.relocs = self._read_relocs()
        except ELFError:
            raise
        except (PyElfError, struct.error, ValueError, KeyError, IndexError, EOFError,
                OverflowError, MemoryError) as e:
            # pyelftools and construct report damage in many shapes; name the file and go on
            raise ELFError(f"{filename}: malformed ELF object ({type(e).__name__}: {e})") from None
        self.by_name = {s.name: s for s in self.sections}

    # --- validation -------------------------------------------------------------------------
    def _check_ident(self) -> None:
        d, f = self.data, self.filename
        if len(d) < 4 or d[:4] != b"\x7fELF":
            raise ELFError(f"{f}: not an ELF file (no \\x7fELF magic)")
        if len(d) < 64:
            raise ELFError(f"{f}: truncated: {len(d)} bytes is shorter than an ELF64 header")
        if d[4] != 2:
            raise ELFError(f"{f}: not a 64-bit ELF object (EI_CLASS {d[4]}); BPF objects are ELF64")
        if d[5] == 2:
            raise ELFError(f"{f}: big-endian BPF object (-target bpfeb) is not supported")
        if d[5] != 1:
            raise ELFError(f"{f}: unknown ELF byte order (EI_DATA {d[5]})")

    def _check_header(self) -> None:
        h, f = self.elf.header, self.filename
        if h["e_machine"] != "EM_BPF":
            raise ELFError(f"{f}: not a BPF object: machine is {_machine_name(h['e_machine'])} "
                           f"(expected BPF, e_machine {EM_BPF})")
        if h["e_type"] != "ET_REL":
            raise ELFError(f"{f}: not a relocatable BPF object (e_type {h['e_type']}, expected ET_REL)")
        end = h["e_shoff"] + h["e_shnum"] * h["e_shentsize"]
        if h["e_shnum"] == 0 or end > len(self.data):
            raise ELFError(f"{f}: truncated: the section header table ends at byte {end}, "
                           f"the file has {len(self.data)}")

    def _read_sections(self) -> list[Section]:
        out = []
        for i, s in enumerate(self.elf.iter_sections()):
            h = s.header
            sec = Section(i, s.name, h["sh_type"], h["sh_flags"], h["sh_offset"], h["sh_size"],
                          h["sh_info"], h["sh_link"])
            if sec.type == "SHT_NOBITS" and sec.size > MAX_NOBITS:
                raise ELFError(f"{self.filename}: section '{sec.name}' claims {sec.size} bytes "
                               f"of zeroes (more than {MAX_NOBITS})")
            if sec.type != "SHT_NOBITS" and sec.offset + sec.size > len(self.data):
                raise ELFError(f"{self.filename}: section '{sec.name}' (bytes {sec.offset}.."
                               f"{sec.offset + sec.size}) extends past the end of the file "
                               f"({len(self.data)} bytes): truncated")
            out.append(sec)
        return out

    def _read_symbols(self) -> list[Symbol]:
        from elftools.elf.sections import SymbolTableSection
        symtab = self.elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise ELFError(f"{self.filename}: no .symtab symbol table (was the object stripped?)")
        out = []
        for i, s in enumerate(symtab.iter_symbols()):
            e = s.entry
            shndx = e["st_shndx"]
            if shndx == "SHN_UNDEF":
                shndx = None
            elif not isinstance(shndx, int):
                shndx = -1
            stype = _enum_name(e["st_info"]["type"], "STT_")
            bind = _enum_name(e["st_info"]["bind"], "STB_")
            name = s.name
            if stype == "section" and isinstance(shndx, int) and 0 <= shndx < len(self.sections):
                name = self.sections[shndx].name
            out.append(Symbol(i, name, e["st_value"], e["st_size"], stype, bind, shndx))
        return out

    def _read_relocs(self) -> dict[int, dict[int, Reloc]]:
        out: dict[int, dict[int, Reloc]] = {}
        for s in self.elf.iter_sections():
            if s.header["sh_type"] == "SHT_RELA":
                raise ELFError(f"{self.filename}: section '{s.name}': RELA relocations are not "
                               f"used by BPF objects (expected SHT_REL)")
            if s.header["sh_type"] != "SHT_REL":
                continue
            target = s.header["sh_info"]
            table = out.setdefault(target, {})
            for r in s.iter_relocations():
                sym_i = r["r_info_sym"]
                if sym_i >= len(self.symbols):
                    raise ELFError(f"{self.filename}: section '{s.name}': relocation at offset "
                                   f"{r['r_offset']:#x} names symbol #{sym_i}, which does not exist")
                table[r["r_offset"]] = Reloc(r["r_offset"], r["r_info_type"], self.symbols[sym_i])
        return out

    # --- access -----------------------------------------------------------------------------
    def section_data(self, sec: Section) -> bytes:
        if sec.type == "SHT_NOBITS":
            return bytes(sec.size)
        return self.data[sec.offset:sec.offset + sec.size]

    def section(self, name: str) -> Section | None:
        return self.by_name.get(name)

    def symbols_in(self, sec: Section, types=("func", "object", "notype")) -> list[Symbol]:
        """Named symbols defined in ``sec`` (sorted by value)."""
        return sorted((s for s in self.symbols if s.shndx == sec.index and s.type in types and s.name),
                      key=lambda s: (s.value, s.index))

    def relocs_for(self, sec: Section) -> dict[int, Reloc]:
        return self.relocs.get(sec.index, {})
