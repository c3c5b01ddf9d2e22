"""Take the machine code out of an x86-64 ELF object that LLVM emitted for a BPF program.

pybpf copies the code into the pack allocator verbatim and never links it, so the object must
be self-contained: every helper, map and arena address is an absolute constant in the
instructions (docs/architecture.md, "The JIT"). This module checks that promise and refuses, with a
:class:`~pybpf.errors.JITError` naming the section, relocation or symbol, any object that breaks
it:

* the code lives in ``.text`` (plus ``.text.<fn>`` sections if function sections were ever turned
  on; they are concatenated in section-index order at their alignment, which is safe only
  because an object with relocations is refused anyway);
* no relocation may apply to an allocated section other than ``.eh_frame``;
* no other allocated section may have content: ``.rodata.cst8`` and friends are constant pools
  that the code would reach through a relocation, ``.data``/``.bss`` are globals;
* no symbol may be undefined (an external global, or a libcall such as ``memset`` that LLVM
  emitted on its own);
* no function may be empty, which is what LLVM makes of a body it proved unreachable.

Sections that are not allocated (``.comment``, ``.note.GNU-stack``, ``.llvm_addrsig``, the symbol
and string tables) are ignored, and so is ``.eh_frame``: pybpf never registers unwind tables,
and Python exceptions do not unwind through native frames.

Every compile goes through here, so the common case is a direct ``struct`` read of the section
headers and the symbol table (about 30 us, against 1 ms for pyelftools). Only an object that
looks wrong in any way is parsed again with pyelftools, which writes the detailed refusal.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from elftools.elf.constants import SH_FLAGS
from elftools.elf.descriptions import describe_reloc_type
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from pybpf.errors import JITError

# Allocated sections that may be present and are not copied.
_IGNORED_ALLOC = (".eh_frame",)

# Symbols LLVM may reference on its own (lowered intrinsics, 128-bit arithmetic).
_LIBCALLS = frozenset({"memset", "memcpy", "memmove", "memcmp", "bcmp", "__udivti3",
                       "__umodti3", "__divti3", "__modti3", "__stack_chk_fail"})


def _undefined_hint(name: str) -> str:
    # The fix is always in the lowering; say which kind of fix.
    if name in _LIBCALLS:
        return ("LLVM emitted a library call; mark functions \"no-builtins\" and avoid "
                "memset/memcpy intrinsics with non-constant sizes")
    return "helpers, maps and globals must be absolute addresses, not external symbols"


@dataclass(frozen=True)
class TextImage:
    """The bytes to place and where each function starts in them."""

    text: bytes
    symbols: dict[str, int]


def _is_text(name: str) -> bool:
    return name == ".text" or name.startswith(".text.")


def _reloc_summary(elf: ELFFile, sec: RelocationSection, limit: int = 3) -> str:
    symtab = elf.get_section(sec["sh_link"])
    parts = []
    for rel in list(sec.iter_relocations())[:limit]:
        sym = symtab.get_symbol(rel["r_info_sym"]) if symtab is not None else None
        sym_name = sym.name if sym is not None else "?"
        if sym is not None and not sym_name and sym["st_info"]["type"] == "STT_SECTION":
            sym_name = elf.get_section(sym["st_shndx"]).name
        kind = describe_reloc_type(rel["r_info_type"], elf)
        parts.append(f"{kind} against '{sym_name}' at offset 0x{rel['r_offset']:x}")
    more = sec.num_relocations() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return ", ".join(parts)


# ELF64 little-endian layouts (System V gABI).
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_EM_X86_64, _ELFCLASS64, _ELFDATA2LSB = 62, 2, 1
_SHT_SYMTAB, _SHT_RELA, _SHT_REL = 2, 4, 9
_SHF_ALLOC = 0x2
_SHN_LORESERVE = 0xFF00
_STT_FUNC = 2


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def _fast_extract(obj: bytes) -> TextImage | None:
    """The text image of a well-formed, acceptable object; ``None`` for anything else (the
    caller then parses again with pyelftools to say exactly what is wrong)."""
    if len(obj) < _EHDR.size or obj[:4] != b"\x7fELF" or obj[4] != _ELFCLASS64 \
            or obj[5] != _ELFDATA2LSB:
        return None
    (_, _, machine, _, _, _, shoff, _, _, _, _, shentsize, shnum,
     shstrndx) = _EHDR.unpack_from(obj)
    if machine != _EM_X86_64 or shentsize != _SHDR.size or not shnum or shstrndx >= shnum \
            or shoff + shnum * shentsize > len(obj):
        return None
    headers = [_SHDR.unpack_from(obj, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx]
    names_blob = obj[strtab[4]:strtab[4] + strtab[5]]
    names = [_cstr(names_blob, h[0]) for h in headers]
    base_of: dict[int, int] = {}
    chunks: list[bytes] = []
    size = 0
    symtab = None
    for index, (h, name) in enumerate(zip(headers, names)):
        sh_type, flags, offset, sh_size, info, align = h[1], h[2], h[4], h[5], h[7], h[8]
        if sh_type in (_SHT_RELA, _SHT_REL):
            if sh_size and info and headers[info][2] & _SHF_ALLOC \
                    and names[info] not in _IGNORED_ALLOC:
                return None
            continue
        if sh_type == _SHT_SYMTAB and name == ".symtab":
            symtab = h
        if not flags & _SHF_ALLOC or name in _IGNORED_ALLOC:
            continue
        if not _is_text(name):
            if sh_size:
                return None
            continue
        pad = (-size) % max(align, 1)
        if pad:
            chunks.append(b"\xcc" * pad)  # int3, like jit_fill_hole()
            size += pad
        base_of[index] = size
        chunks.append(obj[offset:offset + sh_size])
        size += sh_size
    if not base_of or symtab is None:
        return None
    sym_off, sym_size, link, entsize = symtab[4], symtab[5], symtab[6], symtab[9]
    if entsize != _SYM.size or link >= shnum:
        return None
    str_h = headers[link]
    sym_names = obj[str_h[4]:str_h[4] + str_h[5]]
    symbols: dict[str, int] = {}
    for k in range(sym_size // entsize):
        st_name, st_info, _, shndx, value, st_size = _SYM.unpack_from(obj, sym_off + k * entsize)
        if shndx == 0:
            if st_name:  # a named undefined symbol
                return None
            continue
        if st_info & 0xF != _STT_FUNC or shndx >= _SHN_LORESERVE:
            continue
        if shndx not in base_of or st_size == 0:
            return None
        symbols[_cstr(sym_names, st_name)] = base_of[shndx] + value
    return TextImage(b"".join(chunks), symbols)


def extract_text(obj: bytes) -> TextImage:
    """Return the ``.text`` bytes of ``obj`` and the offsets of the functions defined in it.

    Raises :class:`JITError` listing every problem found (not only the first), so that one
    failed compile says everything that is wrong with the object.
    """
    image = _fast_extract(obj)
    return image if image is not None else _checked_extract(obj)


def _checked_extract(obj: bytes) -> TextImage:
    """:func:`extract_text` with pyelftools: every check, every problem described."""
    try:
        elf = ELFFile(io.BytesIO(obj))
    except Exception as exc:  # pyelftools raises several unrelated types on garbage
        raise JITError(f"cannot parse the emitted object: {exc}") from exc
    if elf["e_machine"] != "EM_X86_64" or elf.elfclass != 64:
        raise JITError(f"object is for {elf['e_machine']}/{elf.elfclass}-bit, not x86-64")

    problems: list[str] = []
    text_parts: list[tuple[int, object]] = []  # (section index, section)
    sections = list(elf.iter_sections())  # parse the headers once; pyelftools does not cache
    symtab = None
    for index, sec in enumerate(sections):
        name = sec.name
        alloc = bool(sec["sh_flags"] & SH_FLAGS.SHF_ALLOC)
        if isinstance(sec, SymbolTableSection) and name == ".symtab":
            symtab = sec
        if isinstance(sec, RelocationSection):
            target = sections[sec["sh_info"]] if sec["sh_info"] else None
            applies_to_alloc = target is not None and bool(
                target["sh_flags"] & SH_FLAGS.SHF_ALLOC)
            if applies_to_alloc and target.name not in _IGNORED_ALLOC and sec.num_relocations():
                problems.append(f"relocation section '{name}' applies to '{target.name}': "
                                f"{_reloc_summary(elf, sec)}")
            continue
        if not alloc or name in _IGNORED_ALLOC:
            continue
        if _is_text(name):
            text_parts.append((index, sec))
        elif sec["sh_size"]:
            what = "constant pool" if name.startswith(".rodata") else "global data"
            problems.append(f"allocated section '{name}' has {sec['sh_size']} bytes ({what}); "
                            "the code must use absolute constants only")

    # Lay the text sections out one after the other, as a linker would without a script.
    base_of: dict[int, int] = {}
    chunks: list[bytes] = []
    size = 0
    for index, sec in text_parts:
        align = max(int(sec["sh_addralign"]), 1)
        pad = (-size) % align
        if pad:
            chunks.append(b"\xcc" * pad)  # int3, like jit_fill_hole()
            size += pad
        base_of[index] = size
        data = sec.data()
        chunks.append(data)
        size += len(data)

    symbols: dict[str, int] = {}
    if symtab is not None:
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            if shndx == "SHN_UNDEF":
                if sym.name:
                    problems.append(f"undefined symbol '{sym.name}' ({_undefined_hint(sym.name)})")
                continue
            if sym["st_info"]["type"] != "STT_FUNC" or not isinstance(shndx, int):
                continue
            if shndx in base_of:
                symbols[sym.name] = base_of[shndx] + sym["st_value"]
                if sym["st_size"] == 0:
                    # LLVM emits nothing for a body it proved unreachable (undefined behaviour
                    # in the IR, such as a read of an uninitialised register), and a call
                    # would run into whatever follows.
                    problems.append(f"function '{sym.name}' has no code: LLVM proved its "
                                    "body unreachable (undefined behaviour in the IR?)")
            else:
                problems.append(f"function '{sym.name}' is defined in section "
                                f"'{sections[shndx].name}', not in .text")

    if problems:
        raise JITError("object refused: " + "; ".join(problems))
    if not text_parts:
        raise JITError("object refused: it has no .text section")
    return TextImage(b"".join(chunks), symbols)
