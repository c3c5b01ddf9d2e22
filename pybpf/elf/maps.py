"""Maps of a BPF object, found the way libbpf finds them.

* BTF-defined maps in ``.maps``: each variable of the ``.maps`` DATASEC is a struct whose members
  encode the definition: ``__uint(name, N)`` is ``int (*name)[N]`` (N = the array's length),
  ``__type(name, T)`` is ``T *name`` (the size of T), ``__ulong(name, N)`` a one-value enum.
* Legacy maps in ``maps``: one ``struct bpf_map_def`` (type, key_size, value_size, max_entries,
  map_flags) per symbol.
* Global data: every non-empty ``.data*``, ``.rodata*`` and ``.bss*`` section becomes a
  one-element array map named as libbpf names it (``<obj prefix>.bss``).
* ``__arena`` globals (``.addr_space.1``) go into the object's arena map at ``arena_data_off``:
  the end of the arena, ``max_entries * page - roundup(size, page)`` (newer libbpf), so that
  arena offset 0 (a NULL-looking address) stays free.
"""
from __future__ import annotations

import struct

from .btf import BTF
from .model import ElfMap
from .reader import ElfReader, Section
from ..errors import ELFError
from ..uapi import BPF_F_MMAPABLE, BPF_F_RDONLY_PROG, BPF_OBJ_NAME_LEN, MAP_TYPE_IDS, map_type_name

PAGE_SIZE = 4096
ARENA_SECTIONS = (".addr_space.1", ".arena.1")   # the name clang uses, and the pre-merge one
_INT_FIELDS = ("type", "max_entries", "map_flags", "numa_node", "key_size", "value_size",
               "pinning", "map_extra")


def is_data_section(sec: Section) -> bool:
    if sec.is_exec or not sec.flags & 0x2:   # SHF_ALLOC
        return False
    return any(sec.name == p or sec.name.startswith(p + ".") for p in (".data", ".rodata", ".bss"))


def internal_map_name(obj_name: str, real_name: str) -> str:
    """libbpf's ``internal_map_name``: up to 8 characters of the object name + the section
    name (no prefix when the section name has a second dot), within BPF_OBJ_NAME_LEN - 1."""
    sfx_len = max(7, len(real_name))
    if "." in real_name[1:]:
        pfx_len = 0
    else:
        pfx_len = min(BPF_OBJ_NAME_LEN - sfx_len - 1, len(obj_name))
    name = (obj_name[:max(pfx_len, 0)] + real_name[:sfx_len])[:BPF_OBJ_NAME_LEN - 1]
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)


# --- BTF-defined maps ------------------------------------------------------------------------
def btf_maps(rd: ElfReader, btf: BTF | None) -> list[ElfMap]:
    sec = rd.section(".maps")
    if sec is None:
        return []
    if btf is None:
        raise ELFError(f"{rd.filename}: section '.maps' needs BTF to describe its maps, "
                       f"but the object has no .BTF (build with clang -g)")
    ds = btf.datasecs().get(".maps")
    if ds is None:
        raise ELFError(f"{rd.filename}: section '.maps' has no DATASEC in .BTF")
    syms = {s.name: s for s in rd.symbols_in(sec)}
    out = []
    for vi in ds.secinfo:
        var = btf[vi.type]
        if var.kind != "var":
            raise ELFError(f"{rd.filename}: '.maps' DATASEC entry [{vi.type}] is a {var.kind}, not a variable")
        sym = syms.get(var.name)
        if sym is None:
            raise ELFError(f"{rd.filename}: map '{var.name}' in .maps has no ELF symbol")
        m = _btf_map_def(rd, btf, var.name, var.type, sym.value)
        if m._values_off is not None:
            m.init_slots = _init_slots(rd, sec, m, sym)
        out.append(m)
    return out


def _field_value(btf: BTF, map_name: str, member, filename: str) -> int:
    t = btf.resolve(member.type)
    if t.kind == "ptr":
        arr = btf.resolve(t.type)
        if arr.kind == "array":
            return arr.nelems
    if t.kind in ("enum", "enum64") and len(t.values) == 1:
        return t.values[0][1]
    raise ELFError(f"{filename}: map '{map_name}': field '{member.name}' is not encoded as "
                   f"__uint()/__ulong() (BTF {btf.type_str(member.type)})")


def _btf_map_def(rd: ElfReader, btf: BTF, name: str, type_id: int, offset: int) -> ElfMap:
    st = btf.resolve(type_id)
    if st.kind != "struct":
        raise ELFError(f"{rd.filename}: map '{name}' in .maps is a {st.kind}, not a struct definition")
    vals: dict[str, int] = {}
    key_type = value_type = 0
    values = None
    for m in st.members:
        if m.name in _INT_FIELDS:
            vals[m.name] = _field_value(btf, name, m, rd.filename)
        elif m.name in ("key", "value"):
            ptr = btf.resolve(m.type)
            if ptr.kind != "ptr":
                raise ELFError(f"{rd.filename}: map '{name}': '{m.name}' must be declared with __type()")
            size = btf.size_of(ptr.type)
            sfield = m.name + "_size"
            if sfield in vals and vals[sfield] != size:
                raise ELFError(f"{rd.filename}: map '{name}': conflicting {m.name} size "
                               f"{vals[sfield]} != {size} ({btf.type_str(ptr.type)})")
            vals[sfield] = size
            if m.name == "key":
                key_type = ptr.type
            else:
                value_type = ptr.type
        elif m.name == "values":
            values = _values_member(rd, btf, name, m)
        else:
            raise ELFError(f"{rd.filename}: map '{name}': unknown field '{m.name}' in its definition")
    if "type" not in vals:
        raise ELFError(f"{rd.filename}: map '{name}': definition has no 'type'")
    mtype = map_type_name(vals["type"])
    inner = None
    if values is not None:
        # libbpf: __array(values, ...) makes the value a 4-byte fd (a map or a program)
        values_off, target = values
        if mtype not in ("array_of_maps", "hash_of_maps", "prog_array"):
            raise ELFError(f"{rd.filename}: map '{name}': __array(values, ...) is only for "
                           f"map-in-map and prog_array maps, not {mtype}")
        if vals.get("value_size", 4) != 4:
            raise ELFError(f"{rd.filename}: map '{name}': conflicting value size "
                           f"{vals['value_size']} != 4 (__array(values, ...) holds fds)")
        vals["value_size"] = 4
        if mtype == "prog_array":
            if target.kind != "func_proto":
                raise ELFError(f"{rd.filename}: map '{name}': prog_array values must be "
                               f"functions (__array(values, int (void *)))")
        elif target.kind != "struct":
            raise ELFError(f"{rd.filename}: map '{name}': map-in-map values must be a map "
                           f"definition struct")
        else:
            inner = _btf_map_def(rd, btf, f"{name}.inner", target.id, 0)
    elif mtype in ("array_of_maps", "hash_of_maps"):
        raise ELFError(f"{rd.filename}: map '{name}': map-in-map definition is missing the "
                       f"inner map definition (__array(values, ...))")
    out = ElfMap(name=name, type=mtype, key_size=vals.get("key_size", 0),
                  value_size=vals.get("value_size", 0), max_entries=vals.get("max_entries", 0),
                  flags=vals.get("map_flags", 0), map_extra=vals.get("map_extra", 0),
                  origin="btf", section=".maps", sec_offset=offset, btf_key_type=key_type,
                  btf_value_type=value_type, numa_node=vals.get("numa_node", 0),
                  pinning=vals.get("pinning", 0), inner=inner)
    out._values_off = values[0] if values is not None else None
    return out


def _values_member(rd: ElfReader, btf: BTF, name: str, member):
    """(byte offset, pointee type) of ``__array(values, T)``: ``T *values[]``."""
    arr = btf.resolve(member.type)
    ptr = btf.resolve(arr.elem_type) if arr.kind == "array" else arr
    if arr.kind != "array" or ptr.kind != "ptr":
        raise ELFError(f"{rd.filename}: map '{name}': 'values' must be declared with "
                       f"__array(values, ...)")
    if member.bit_offset % 8:
        raise ELFError(f"{rd.filename}: map '{name}': 'values' is not byte aligned")
    target = btf.resolve(ptr.type)
    return member.bit_offset // 8, target


def _init_slots(rd: ElfReader, sec, m: ElfMap, sym) -> dict[int, str]:
    """index -> symbol name of the ``.rel.maps`` relocations inside ``m``'s values array
    (libbpf's bpf_object__collect_map_relos: 8-byte pointers, one per slot)."""
    start = sym.value + m._values_off
    end = sym.value + max(sym.size, m._values_off)
    out = {}
    for off, rel in sorted(rd.relocs_for(sec).items()):
        if not start <= off < end:
            continue
        if (off - start) % 8:
            raise ELFError(f"{rd.filename}: map '{m.name}': relocation at .maps+{off:#x} is not "
                           f"at an 8-byte slot of its values")
        out[(off - start) // 8] = rel.symbol.name
    if m.max_entries and out and max(out) >= m.max_entries:
        raise ELFError(f"{rd.filename}: map '{m.name}': initial value at index {max(out)} "
                       f"is beyond max_entries {m.max_entries}")
    return out


# --- legacy maps ------------------------------------------------------------------------------
def legacy_maps(rd: ElfReader) -> list[ElfMap]:
    sec = rd.section("maps")
    if sec is None or sec.size == 0:
        return []
    syms = [s for s in rd.symbols_in(sec, types=("object", "notype")) if s.bind != "file"]
    if not syms or sec.size % len(syms):
        raise ELFError(f"{rd.filename}: section 'maps' ({sec.size} bytes) does not divide into "
                       f"{len(syms)} map definitions")
    def_sz = sec.size // len(syms)
    if def_sz < 4 or def_sz % 4:
        raise ELFError(f"{rd.filename}: section 'maps': map definition size {def_sz} is not a "
                       f"multiple of 4")
    data = rd.section_data(sec)
    out = []
    for s in syms:
        raw = data[s.value:s.value + def_sz]
        if len(raw) < def_sz:
            raise ELFError(f"{rd.filename}: map '{s.name}' at offset {s.value} runs past section 'maps'")
        fields = list(struct.unpack_from(f"<{min(def_sz, 20) // 4}I", raw)) + [0] * 5
        if any(raw[20:]):
            raise ELFError(f"{rd.filename}: map '{s.name}': legacy definition has unknown non-zero "
                           f"fields past struct bpf_map_def (size {def_sz})")
        mtype, key, value, entries, flags = fields[:5]
        out.append(ElfMap(name=s.name, type=map_type_name(mtype), key_size=key, value_size=value,
                          max_entries=entries, flags=flags, origin="legacy", section="maps",
                          sec_offset=s.value))
    return out


# --- global data and the arena ------------------------------------------------------------------
def _mmapable(btf: BTF | None, sec_name: str) -> tuple[bool, int]:
    """(has a non-static variable, DATASEC type id): libbpf's map_is_mmapable rule."""
    if btf is None:
        return False, 0
    ds = btf.datasecs().get(sec_name)
    if ds is None:
        return False, 0
    return any(btf[v.type].kind == "var" and btf[v.type].linkage != 0 for v in ds.secinfo), ds.id


def data_maps(rd: ElfReader, btf: BTF | None, obj_name: str) -> list[ElfMap]:
    out = []
    for sec in rd.sections:
        if not is_data_section(sec) or sec.size == 0:
            continue
        mmapable, ds_id = _mmapable(btf, sec.name)
        flags = BPF_F_RDONLY_PROG if sec.name.startswith(".rodata") else 0
        if mmapable:
            flags |= BPF_F_MMAPABLE
        out.append(ElfMap(name=internal_map_name(obj_name, sec.name), type="array", key_size=4,
                          value_size=sec.size, max_entries=1, flags=flags, origin="data",
                          section=sec.name, real_name=sec.name, btf_value_type=ds_id,
                          initial=rd.section_data(sec)))
    return out


def arena_section(rd: ElfReader) -> Section | None:
    for name in ARENA_SECTIONS:
        sec = rd.section(name)
        if sec is not None:
            return sec
    return None


def place_arena_globals(rd: ElfReader, maps: list[ElfMap]) -> tuple[ElfMap | None, int]:
    """Give the arena map the arena globals' initial bytes; returns (arena map, arena_data_off)."""
    arena = next((m for m in maps if m.type == "arena"), None)
    sec = arena_section(rd)
    if sec is None or sec.size == 0:
        return arena, 0
    if arena is None:
        raise ELFError(f"{rd.filename}: section '{sec.name}' holds __arena globals but the object "
                       f"declares no BPF_MAP_TYPE_ARENA map")
    mmap_sz = arena.max_entries * PAGE_SIZE
    data_sz = -(-sec.size // PAGE_SIZE) * PAGE_SIZE
    if data_sz > mmap_sz:
        raise ELFError(f"{rd.filename}: section '{sec.name}': arena map '{arena.name}' "
                       f"({arena.max_entries} pages) is too small for {sec.size} bytes of __arena globals")
    off = mmap_sz - data_sz
    arena.initial, arena.initial_offset = rd.section_data(sec), off
    return arena, off


def check_map_types(rd: ElfReader, maps: list[ElfMap]) -> None:
    seen = set()
    for m in maps:
        if m.name in seen:
            raise ELFError(f"{rd.filename}: map '{m.name}' is defined twice")
        seen.add(m.name)
        # a map type nobody knows fails only when a program that uses it loads (as with libbpf,
        # whose BPF_MAP_CREATE the kernel refuses); load.bind records that failure
