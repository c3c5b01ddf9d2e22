"""pybpf's linker for the JIT's objects: x86-64 ELF relocatable in, a placeable image out.

LLVM emits one relocatable object per module (position-independent, small code model). This
module lays its allocated sections out the way a linker without a script would, code first and
read-only data after, in one block that goes into one pack allocation (executable, never
writable), and applies the object's x86-64 relocations in two steps:

* :func:`link_object` (in the compile worker) parses the object, lays out ``.text`` /
  ``.text.*``, then ``.rodata`` / ``.rodata.*`` (jump tables, constant pools), then a small GOT
  (one 8-byte slot per external symbol) and resolves everything that depends only on the
  layout: PC-relative references between sections (``R_X86_64_PC32``/``PLT32``/``PC64``, the
  jump tables' entries, RIP-relative loads from ``.rodata``) and GOT references
  (``R_X86_64_GOTPCREL``/``GOTPCRELX``/``REX_GOTPCRELX``: the code loads the address from its
  slot). What is left needs the final address: absolute references (``R_X86_64_64``, ``32``,
  ``32S``), the GOT slots' values and calls to external symbols. The result, a
  :class:`LinkImage`, depends only on the object, so it is what the code cache stores.
* :meth:`LinkImage.link` (at placement) takes the allocation's address and a resolver for the
  external symbols (helpers, maps, the arena: whatever differs between processes; their names
  come from :mod:`pybpf.jit.externs`) and returns the final bytes. A call to an external symbol
  within +-2 GiB is patched direct; farther, it goes through a 6-byte ``jmp *slot(%rip)`` stub
  laid out after the code (a PLT entry).

Anything else is a :class:`~pybpf.errors.JITError` naming the relocation, section or symbol:
relocation types this linker does not know, writable data (``.data``/``.bss``), undefined
symbols other than pybpf's externals (a library call such as ``memset`` that LLVM emitted on its
own), a ``32S`` reference whose value does not fit, a function LLVM left empty. ``.eh_frame``
and its relocations are ignored: pybpf never registers unwind tables. Non-allocated sections
(symbol and string tables, ``.comment``, notes) are ignored.

Every compile goes through here, so the object is read with ``struct`` directly (about 50 us
for a 200-instruction program), not with pyelftools.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pybpf.errors import JITError

# ELF64 little-endian layouts (System V gABI) and the x86-64 psABI relocation numbers.
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_EM_X86_64, _ELFCLASS64, _ELFDATA2LSB = 62, 2, 1
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 1, 2, 4, 8, 9
_SHF_WRITE, _SHF_ALLOC, _SHF_EXEC = 0x1, 0x2, 0x4
_SHN_UNDEF, _SHN_LORESERVE, _SHN_ABS = 0, 0xFF00, 0xFFF1
_STT_FUNC, _STT_SECTION = 2, 3

R_64, R_PC32, R_PLT32, R_GOTPCREL, R_32, R_32S, R_PC64 = 1, 2, 4, 9, 10, 11, 24
R_GOTPCRELX, R_REX_GOTPCRELX = 41, 42
_GOT_RELOCS = (R_GOTPCREL, R_GOTPCRELX, R_REX_GOTPCRELX)
_KNOWN = {R_64: "R_X86_64_64", R_PC32: "R_X86_64_PC32", R_PLT32: "R_X86_64_PLT32",
          R_GOTPCREL: "R_X86_64_GOTPCREL", R_32: "R_X86_64_32", R_32S: "R_X86_64_32S",
          R_PC64: "R_X86_64_PC64", R_GOTPCRELX: "R_X86_64_GOTPCRELX",
          R_REX_GOTPCRELX: "R_X86_64_REX_GOTPCRELX"}

# Sections that may be present and are not placed.
_IGNORED_ALLOC = (".eh_frame",)
# Undefined symbols the linker resolves at placement: pybpf's own externals.
EXTERN_PREFIX = "pybpf."
# Symbols LLVM may reference on its own (lowered intrinsics, 128-bit arithmetic).
_LIBCALLS = frozenset({"memset", "memcpy", "memmove", "memcmp", "bcmp", "__udivti3",
                       "__umodti3", "__divti3", "__modti3", "__stack_chk_fail"})
_INT3 = 0xCC
_STUB_SIZE = 8          # ff 25 <rel32> (jmp *slot(%rip)) and two int3


def reloc_name(rtype: int) -> str:
    if rtype in _KNOWN:
        return _KNOWN[rtype]
    try:
        from elftools.elf.enums import ENUM_RELOC_TYPE_x64

        for name, value in ENUM_RELOC_TYPE_x64.items():
            if value == rtype:
                return name
    except ImportError:  # pragma: no cover - pyelftools is a dependency
        pass
    return f"relocation type {rtype}"


def _undefined_hint(name: str) -> str:
    # The fix is always in the lowering; say which kind of fix.
    if name in _LIBCALLS:
        return ("LLVM emitted a library call; mark functions \"no-builtins\" and avoid "
                "memset/memcpy intrinsics with non-constant sizes")
    return (f"process-specific values must be pybpf externals (symbols named "
            f"'{EXTERN_PREFIX}...'), resolved at placement")


@dataclass(frozen=True)
class Fixup:
    """A relocation left for placement: write ``kind`` at ``offset`` for ``target`` + ``addend``.

    ``target`` is an offset in the image (a local symbol) or an external symbol's name; ``kind``
    is ``"abs64"``, ``"abs32"``, ``"abs32s"`` or ``"call32"`` (a call or jump to an external:
    direct when in range, else through the stub at ``stub``)."""

    offset: int
    kind: str
    target: int | str
    addend: int
    stub: int = -1


@dataclass(frozen=True)
class LinkImage:
    """Position-independent code and data, ready to be placed anywhere.

    ``data``: the laid-out bytes (code, call stubs, read-only data, GOT), everything resolved
    that does not depend on the address; ``code_size``: how many of them are code (the rest is
    read-only data); ``symbols``: function name -> offset; ``fixups``: what placement applies;
    ``externals``: the external symbol names it needs; ``sections``: (name, offset, size) of
    each placed section, for listings."""

    data: bytes
    code_size: int
    symbols: dict[str, int]
    fixups: tuple[Fixup, ...] = ()
    externals: tuple[str, ...] = ()
    sections: tuple[tuple[str, int, int], ...] = field(default=())

    def link(self, base: int, resolve=None) -> bytes:
        """The final bytes for an image placed at ``base``; ``resolve(name) -> int`` gives the
        value of each external symbol (a mapping works too). Raises :class:`JITError` for an
        unresolved symbol or a reference that does not fit its field."""
        if not self.fixups:
            return self.data
        if resolve is None:
            resolve = {}
        lookup = resolve.__getitem__ if hasattr(resolve, "__getitem__") else resolve
        out = bytearray(self.data)
        values: dict[str, int] = {}
        for fx in self.fixups:
            if isinstance(fx.target, str):
                value = values.get(fx.target)
                if value is None:
                    try:
                        value = values[fx.target] = int(lookup(fx.target)) & _M64
                    except (KeyError, LookupError):
                        raise JITError(f"link: undefined external symbol '{fx.target}' "
                                       "(nothing resolves it at placement)") from None
            else:
                value = base + fx.target
            s = (value + fx.addend) & _M64
            where = base + fx.offset
            if fx.kind == "abs64":
                struct.pack_into("<Q", out, fx.offset, s)
            elif fx.kind == "abs32":
                if s > 0xFFFFFFFF:
                    raise JITError(self._range(fx, "R_X86_64_32", s))
                struct.pack_into("<I", out, fx.offset, s)
            elif fx.kind == "abs32s":
                sv = s - (1 << 64) if s >> 63 else s
                if not -(1 << 31) <= sv < (1 << 31):
                    raise JITError(self._range(fx, "R_X86_64_32S", s))
                struct.pack_into("<i", out, fx.offset, sv)
            elif fx.kind == "call32":
                rel = (s - where) & _M64
                rel = rel - (1 << 64) if rel >> 63 else rel
                if not -(1 << 31) <= rel < (1 << 31):
                    if fx.stub < 0:
                        raise JITError(self._range(fx, "R_X86_64_PC32", s))
                    rel = fx.stub + fx.addend - fx.offset  # the stub jumps through the GOT
                struct.pack_into("<i", out, fx.offset, rel)
            else:  # pragma: no cover - link_object makes only the kinds above
                raise JITError(f"link: unknown fixup kind {fx.kind!r}")
        return bytes(out)

    @staticmethod
    def _range(fx: Fixup, what: str, value: int) -> str:
        name = fx.target if isinstance(fx.target, str) else f"image+0x{fx.target:x}"
        return (f"link: {what} against '{name}' at offset 0x{fx.offset:x} cannot hold "
                f"0x{value:x} at this placement")


_M64 = (1 << 64) - 1


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def link_object(obj: bytes) -> LinkImage:
    """Lay out and relocate an x86-64 ELF relocatable object (module docstring)."""
    if len(obj) < _EHDR.size or obj[:4] != b"\x7fELF":
        raise JITError("object refused: not an ELF file")
    if obj[4] != _ELFCLASS64 or obj[5] != _ELFDATA2LSB:
        raise JITError("object refused: not a 64-bit little-endian ELF file")
    (_, _, machine, _, _, _, shoff, _, _, _, _, shentsize, shnum,
     shstrndx) = _EHDR.unpack_from(obj)
    if machine != _EM_X86_64:
        raise JITError(f"object refused: it is for machine {machine}, not x86-64")
    if shentsize != _SHDR.size or not shnum or shstrndx >= shnum \
            or shoff + shnum * shentsize > len(obj):
        raise JITError("object refused: malformed section header table")
    headers = [_SHDR.unpack_from(obj, shoff + i * shentsize) for i in range(shnum)]
    for h in headers:
        if h[1] != _SHT_NOBITS and h[4] + h[5] > len(obj):
            raise JITError("object refused: a section lies outside the file")
    strtab = headers[shstrndx]
    names_blob = obj[strtab[4]:strtab[4] + strtab[5]]
    names = [_cstr(names_blob, h[0]) for h in headers]

    problems: list[str] = []
    code: list[int] = []
    rodata: list[int] = []
    relas: list[int] = []
    symtab = None
    for index, (h, name) in enumerate(zip(headers, names)):
        sh_type, flags, sh_size = h[1], h[2], h[5]
        if sh_type == _SHT_SYMTAB and name == ".symtab":
            symtab = index
        if sh_type in (_SHT_RELA, _SHT_REL):
            target = h[7]
            if not sh_size or not target or target >= shnum:
                continue
            if not headers[target][2] & _SHF_ALLOC or names[target] in _IGNORED_ALLOC:
                continue
            if sh_type == _SHT_REL:
                problems.append(f"REL (not RELA) relocation section '{name}'")
                continue
            relas.append(index)
            continue
        if not flags & _SHF_ALLOC or name in _IGNORED_ALLOC:
            continue
        if flags & _SHF_EXEC:
            code.append(index)
        elif flags & _SHF_WRITE or sh_type == _SHT_NOBITS:
            if sh_size:
                problems.append(f"allocated section '{name}' has {sh_size} bytes of writable "
                                "data (global data); the code may only use read-only data")
        elif sh_size:
            rodata.append(index)
    if symtab is None:
        problems.append("it has no symbol table")
    if not code:
        problems.append("it has no .text section")
    if problems:
        raise JITError("object refused: " + "; ".join(problems))

    # Symbols: (name, section index, value, info, size) in table order.
    sh = headers[symtab]
    sym_off, sym_size, link, entsize = sh[4], sh[5], sh[6], sh[9]
    if entsize != _SYM.size or link >= shnum:
        raise JITError("object refused: malformed symbol table")
    sh_str = headers[link]
    sym_names = obj[sh_str[4]:sh_str[4] + sh_str[5]]
    syms = []
    for k in range(sym_size // entsize):
        st_name, st_info, _, shndx, value, st_size = _SYM.unpack_from(obj, sym_off + k * entsize)
        syms.append((_cstr(sym_names, st_name), shndx, value, st_info, st_size))

    # Layout: code, then read-only data, then the GOT (stubs, between code and data, are sized
    # once the relocations are known).
    base_of: dict[int, int] = {}
    size = 0
    chunks: list[tuple[int, bytes]] = []

    def place(index: int) -> None:
        nonlocal size
        h = headers[index]
        align = max(int(h[8]), 1)
        size += (-size) % align
        base_of[index] = size
        chunks.append((size, obj[h[4]:h[4] + h[5]]))
        size += h[5]

    for index in code:
        place(index)
    text_end = size

    # Which externals need a GOT slot and which need a call stub.
    externals: list[str] = []
    got_targets: list[int | str] = []
    stubbed: list[str] = []
    parsed = []
    for index in relas:
        h = headers[index]
        target = h[7]
        for k in range(h[5] // _RELA.size):
            r_offset, r_info, addend = _RELA.unpack_from(obj, h[4] + k * _RELA.size)
            sym_i, rtype = r_info >> 32, r_info & 0xFFFFFFFF
            if sym_i >= len(syms):
                raise JITError(f"object refused: relocation in '{names[index]}' names symbol "
                               f"{sym_i}, past the symbol table")
            sname, shndx, svalue, sinfo, _ = syms[sym_i]
            where = f"'{names[target]}'+0x{r_offset:x}"
            if rtype not in _KNOWN:
                problems.append(f"relocation {reloc_name(rtype)} against "
                                f"'{sname or names[shndx] if shndx < shnum else sname}' at "
                                f"{where} is not supported by pybpf's linker")
                continue
            if shndx == _SHN_UNDEF:
                if not sname.startswith(EXTERN_PREFIX):
                    problems.append(f"relocation {reloc_name(rtype)} at {where} against "
                                    f"undefined symbol '{sname}' ({_undefined_hint(sname)})")
                    continue
                tgt: int | str = sname
                if sname not in externals:
                    externals.append(sname)
                if rtype in (R_PLT32, R_PC32) and sname not in stubbed:
                    stubbed.append(sname)
                    if sname not in got_targets:
                        got_targets.append(sname)
            elif shndx == _SHN_ABS:
                problems.append(f"relocation {reloc_name(rtype)} at {where} against absolute "
                                f"symbol '{sname}'")
                continue
            elif shndx >= _SHN_LORESERVE or shndx not in base_of and shndx not in rodata:
                problems.append(f"relocation {reloc_name(rtype)} at {where} against "
                                f"'{sname or names[shndx]}' in a section that is not placed")
                continue
            else:
                tgt = (shndx, svalue)  # resolved to an image offset once laid out
            if rtype in _GOT_RELOCS and tgt not in got_targets:
                got_targets.append(tgt)
            parsed.append((target, r_offset, rtype, tgt, addend))
    if problems:
        raise JITError("object refused: " + "; ".join(problems))

    # Call stubs right after the code, then the read-only data, then the GOT.
    if stubbed:
        size += (-size) % 8
    stub_at = {name: size + i * _STUB_SIZE for i, name in enumerate(stubbed)}
    size += len(stubbed) * _STUB_SIZE
    code_size = size
    for index in rodata:
        place(index)
    if got_targets:
        size += (-size) % 8
    got_at = {t: size + i * 8 for i, t in enumerate(got_targets)}
    size += len(got_targets) * 8

    def local(t) -> int:
        shndx, svalue = t
        return base_of[shndx] + svalue

    out = bytearray([_INT3]) * size
    for off, data in chunks:
        out[off:off + len(data)] = data
    fixups: list[Fixup] = []
    for name, at in stub_at.items():  # jmp *slot(%rip)
        out[at:at + 2] = b"\xff\x25"
        struct.pack_into("<i", out, at + 2, got_at[name] - (at + 6))
    for t, at in list(got_at.items()):
        fixups.append(Fixup(at, "abs64", t if isinstance(t, str) else local(t), 0))
    for target, r_offset, rtype, tgt, addend in parsed:
        p = base_of[target] + r_offset
        name = reloc_name(rtype)
        if rtype in _GOT_RELOCS:
            _put_pc(out, p, got_at[tgt] + addend - p, 4, name, tgt)
        elif isinstance(tgt, str):
            if rtype in (R_PLT32, R_PC32):
                fixups.append(Fixup(p, "call32", tgt, addend, stub_at[tgt]))
            elif rtype == R_64:
                fixups.append(Fixup(p, "abs64", tgt, addend))
            elif rtype == R_32:
                fixups.append(Fixup(p, "abs32", tgt, addend))
            elif rtype == R_32S:
                fixups.append(Fixup(p, "abs32s", tgt, addend))
            else:
                raise JITError(f"object refused: relocation {name} at '{names[target]}'"
                               f"+0x{r_offset:x} against external '{tgt}' cannot be satisfied")
        else:
            s = local(tgt)
            if rtype in (R_PC32, R_PLT32):
                _put_pc(out, p, s + addend - p, 4, name, tgt)
            elif rtype == R_PC64:
                _put_pc(out, p, s + addend - p, 8, name, tgt)
            else:
                fixups.append(Fixup(p, {R_64: "abs64", R_32: "abs32", R_32S: "abs32s"}[rtype],
                                    s, addend))

    symbols: dict[str, int] = {}
    empty: list[str] = []
    for sname, shndx, svalue, sinfo, st_size in syms:
        if sinfo & 0xF != _STT_FUNC or shndx == _SHN_UNDEF or shndx >= _SHN_LORESERVE:
            continue
        if shndx not in base_of or shndx not in code:
            raise JITError(f"object refused: function '{sname}' is defined in section "
                           f"'{names[shndx]}', not in .text")
        if st_size == 0:
            # LLVM emits nothing for a body it proved unreachable (undefined behaviour in the
            # IR, such as a read of an uninitialised register), and a call would run into
            # whatever follows.
            empty.append(sname)
        symbols[sname] = base_of[shndx] + svalue
    if empty:
        raise JITError("object refused: " + "; ".join(
            f"function '{n}' has no code: LLVM proved its body unreachable (undefined "
            "behaviour in the IR?)" for n in empty))
    sections = tuple((names[i], base_of[i], headers[i][5]) for i in code + rodata)
    if stubbed:
        sections += ((".plt", code_size - len(stubbed) * _STUB_SIZE, len(stubbed) * _STUB_SIZE),)
    if got_targets:
        sections += ((".got", size - len(got_targets) * 8, len(got_targets) * 8),)
    return LinkImage(bytes(out), code_size, symbols, tuple(fixups), tuple(externals), sections)


def _put_pc(out: bytearray, p: int, value: int, width: int, name: str, tgt) -> None:
    lo, hi = -(1 << (8 * width - 1)), 1 << (8 * width - 1)
    if not lo <= value < hi:
        raise JITError(f"object refused: {name} at image offset 0x{p:x} does not fit "
                       f"({value:#x})")
    struct.pack_into("<i" if width == 4 else "<q", out, p, value)
