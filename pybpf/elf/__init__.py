"""Loading clang-built BPF objects (``clang -target bpf -c x.c``), in two phases as libbpf does.

Phase 1, ``parse_object(path_or_bytes)``, only reads: it checks the ELF (64-bit, little-endian,
EM_BPF, relocatable, not truncated), reads BTF and .BTF.ext, the license, the maps (BTF-defined,
legacy, global data, arena), the global variables and the externs, and links every program
(entry function + called subprograms, relocations applied; see ``pybpf.elf.relo``). Maps are
referenced by index into each program's ``Program.maps`` (ld_imm64 src 5/6).

Phase 2, ``load_elf(path, vm=None)``, creates the maps in a VM, writes the initial values of the
global data and arena globals, binds ``variables`` to their storage and rewrites each program's
map references to the VM's map fds (``pybpf.elf.load``). ``load_elf_program`` serves the CLI.
For example (from the repository root)::

    obj = pybpf.elf.parse_object("samples/c/xdp_filter.o")
    obj.programs["xdp_filter"].prog_type      # 'xdp' (from SEC("xdp"))
    obj.map_defs["blocked_ports"].key_size    # 2 (__type(key, __u16))
    obj.variables["mode"].initial             # 1 (const volatile enum filter_mode = MODE_BLOCKLIST)

Whatever cannot be loaded fully is an ``ELFError`` naming the section, symbol or relocation.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

from .btf import BTF, LINKAGE, BTFExt
from .maps import (arena_section, btf_maps, check_map_types, data_maps, is_data_section,
                       legacy_maps, place_arena_globals)
from .model import BpfObject, ElfMap, ElfProgram, Extern, FuncInfo, Variable, _MapTable
from .reader import ElfReader
from .relo import Func, Linker, functions_of
from .sections import program_type
from ..errors import BPFError, ELFError
from ..kfunc_ids import KFUNC_IDS

__all__ = ["parse_object", "load_elf", "load_elf_program", "BpfObject", "ElfProgram", "ElfMap",
           "Variable", "Extern", "FuncInfo"]


def parse_object(src, name: str | None = None, filename: str | None = None) -> BpfObject:
    """Read a BPF object from a path or bytes into a BpfObject (nothing is created or run)."""
    data, fname = _read(src, filename)
    rd = ElfReader(data, fname)
    obj = BpfObject(name or _obj_name(fname), fname)
    obj.btf, obj.btf_ext = _read_btf(rd)
    obj.license = _cstring(rd, "license")
    obj.kern_version = _version(rd)

    maps = btf_maps(rd, obj.btf) + legacy_maps(rd) + data_maps(rd, obj.btf, obj.name)
    check_map_types(rd, maps)
    arena, obj.arena_data_off = place_arena_globals(rd, maps)
    obj.arena_map = arena.name if arena else None
    obj.map_defs = {m.name: m for m in maps}
    obj.maps = _MapTable(obj.map_defs, aliases={m.real_name: m.name for m in maps if m.real_name})
    obj.data_sections = {s.name: rd.section_data(s) for s in rd.sections if is_data_section(s)}
    obj.variables = _variables(rd, obj, maps, arena)
    obj.externs = _externs(rd, obj.btf)

    linker = Linker(rd, maps, arena, obj.arena_data_off, obj.btf, obj.btf_ext)
    for entry in _entry_points(rd, linker):
        obj.programs[entry.name] = _program(obj, linker, entry)
    return obj


def _program(obj: BpfObject, linker: Linker, entry: Func) -> ElfProgram:
    """One program, linked; what stops it from loading becomes its ``load_error`` (libbpf opens
    the object anyway; only a load of this program fails)."""
    # SEC("?tc"): libbpf does not autoload it, and "from now on forgets there was ?"
    autoload = not entry.section.name.startswith("?")
    section = entry.section.name.removeprefix("?")
    ptype, attach, sleepable = program_type(section)
    common = dict(name=entry.name, section=section, prog_type=ptype, attach_to=attach,
                  sleepable=sleepable, license=obj.license, btf=obj.btf, autoload=autoload)
    try:
        prog = ElfProgram(**common, **linker.link(entry))
    except BPFError as e:       # an ELFError from linking, a DecodeError from the linked slots
        err = ELFError(f"{obj.filename}: program '{entry.name}' (section '{section}'): "
                       f"{str(e).removeprefix(obj.filename + ': ')}")
        return ElfProgram(insns=[], **common, load_error=err)
    if ptype is None:
        prog.load_error = ELFError(f"prog '{entry.name}': missing BPF prog type, check ELF "
                                   f"section name '{section}'")
    return prog


def load_elf(path, vm=None) -> BpfObject:
    """Parse ``path`` and create its maps in ``vm`` (a new ``pybpf.VM`` when None, kept as
    ``obj.vm``); ``obj.programs[name]`` are then ready for ``obj.vm.load(...)``."""
    from .load import bind
    return bind(parse_object(path), vm)


def load_elf_program(data: bytes, name: str = "<object>", section: str | None = None) -> ElfProgram:
    """The program called (or in section) ``section`` of an object, the first when None."""
    return parse_object(data, filename=name).program(section)


# --- pieces ----------------------------------------------------------------------------------------
def _read(src, filename: str | None) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), filename or "<object>"
    if isinstance(src, (str, os.PathLike)):
        try:
            return Path(src).read_bytes(), filename or str(src)
        except OSError as e:
            raise ELFError(f"{src}: {e.strerror or e}") from None
    raise TypeError(f"expected a path or bytes, not {type(src).__name__}")


def _obj_name(filename: str) -> str:
    """libbpf's object name: the file's base name up to its first dot."""
    base = os.path.basename(filename).split(".", 1)[0]
    return base if base and not base.startswith("<") else "obj"


def _read_btf(rd: ElfReader) -> tuple[BTF | None, BTFExt | None]:
    sec = rd.section(".BTF")
    if sec is None:
        return None, None
    try:
        btf = BTF.parse(rd.section_data(sec))
        ext_sec = rd.section(".BTF.ext")
        ext = BTFExt.parse(rd.section_data(ext_sec), btf) if ext_sec is not None else None
    except ELFError as e:
        raise type(e)(f"{rd.filename}: {e.message}") from None
    return btf, ext


def _cstring(rd: ElfReader, name: str) -> str:
    sec = rd.section(name)
    if sec is None:
        return ""
    return rd.section_data(sec).split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _version(rd: ElfReader) -> int:
    sec = rd.section("version")
    if sec is None:
        return 0
    if sec.size != 4:
        raise ELFError(f"{rd.filename}: section 'version' is {sec.size} bytes, expected 4")
    return struct.unpack("<I", rd.section_data(sec))[0]


def _entry_points(rd: ElfReader, linker: Linker) -> list[Func]:
    """Programs: each global function of a non-.text executable section (libbpf's rule); an
    object with only .text offers its global functions instead."""
    out = []
    for sec in rd.sections:
        if not sec.is_exec or sec.name == ".text" or sec.size == 0:
            continue
        for f in linker.funcs[sec.index]:
            if f.bind == "local":
                raise ELFError(f"{rd.filename}: section '{sec.name}': program '{f.name}' is static; "
                               f"programs must be global functions (static ones belong in .text)")
            out.append(f)
    if not out:
        text = rd.section(".text")
        if text is not None:
            out = [f for f in functions_of(rd, text) if f.bind != "local"]
    names = [f.name for f in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ELFError(f"{rd.filename}: more than one program called '{sorted(dup)[0]}'")
    return out


def _variables(rd: ElfReader, obj: BpfObject, maps: list[ElfMap], arena: ElfMap | None) -> dict:
    btf = obj.btf
    holders = {m.section: m.name for m in maps if m.origin == "data"}
    asec = arena_section(rd)
    if asec is not None and arena is not None:
        holders[asec.name] = arena.name
    out: dict[str, Variable] = {}
    for sec_name, map_name in holders.items():
        sec = rd.section(sec_name)
        data = rd.section_data(sec)
        syms = {s.name: s for s in rd.symbols_in(sec, types=("object", "notype"))}
        ds = btf.datasecs().get(sec_name) if btf else None
        if ds is not None:
            entries = []
            for vi in ds.secinfo:
                var = btf[vi.type]
                if var.kind != "var":
                    continue
                sym = syms.get(var.name)
                off = sym.value if sym is not None else vi.offset
                size = vi.size or btf.size_of(var.type)
                entries.append((var.name, off, size, var.type, LINKAGE.get(var.linkage, "global")))
        else:   # no BTF: the ELF symbols still say where and how big, not what type
            entries = [(s.name, s.value, s.size, 0, "static" if s.bind == "local" else "global")
                       for s in syms.values() if s.type == "object"]
        for vname, off, size, tid, linkage in entries:
            if off + size > sec.size:
                raise ELFError(f"{rd.filename}: variable '{vname}' ({off}+{size}) lies outside "
                               f"section '{sec_name}' ({sec.size} bytes)")
            key = vname if vname not in out else f"{sec_name}:{vname}"
            out[key] = Variable(vname, sec_name, off, size, tid, btf, linkage, map_name,
                                data[off:off + size])
    return out


def _externs(rd: ElfReader, btf: BTF | None) -> dict[str, Extern]:
    secs = btf.datasecs() if btf is not None else {}
    members = {n: {btf[v.type].name for v in secs[n].secinfo} for n in (".ksyms", ".kconfig") if n in secs}
    out = {}
    for s in rd.symbols:
        if s.defined or not s.name:
            continue
        is_func = s.name in KFUNC_IDS or (btf is not None and btf.find(s.name, "func") is not None)
        section = next((n for n, names in members.items() if s.name in names), "")
        out[s.name] = Extern(s.name, "kfunc" if is_func else "variable", section,
                             KFUNC_IDS.get(s.name, 0), s.bind == "weak")
    return out
