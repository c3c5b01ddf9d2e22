"""Take the machine code out of an x86-64 ELF object that LLVM emitted for a BPF program.

pybpf copies the code into the pack allocator verbatim and never links it, so the object must
be self-contained: every helper, map and arena address is an absolute constant in the
instructions (DESIGN.md, "The JIT"). This module checks that promise and refuses, with a
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
"""
from __future__ import annotations

import io
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


def extract_text(obj: bytes) -> TextImage:
    """Return the ``.text`` bytes of ``obj`` and the offsets of the functions defined in it.

    Raises :class:`JITError` listing every problem found (not only the first), so that one
    failed compile says everything that is wrong with the object.
    """
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
