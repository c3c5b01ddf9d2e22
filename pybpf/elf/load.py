"""Phase 2 of ELF loading: an object's maps created in a VM, the way libbpf prepares a load.

``bind(obj, vm)`` creates every map of ``obj.map_defs`` with ``vm.create_map``, writes the
initial values (global data at key 0 of its array map; ``__arena`` globals into the arena at
``obj.arena_data_off``), binds ``obj.variables`` to that storage, and rewrites each program's
map references from indexes (ld_imm64 src 5/6, as phase 1 leaves them) to the VM maps' fds
(src 1/2), as libbpf hands the kernel fds. ``obj.maps[name]`` then are the VM's map objects.

The map objects are used through the runtime's map faces: ``.fd``; the syscall face
``sys_lookup(key: bytes) -> bytes`` / ``sys_update(key: bytes, value: bytes)`` for global data
(``map_lookup_elem(key)`` gives a value's address); the arena's ``user_vm_start`` and its Python
face ``read(addr, size)`` / ``write(addr, data)``, which fault pages in the way user-space
touches of a real arena do.
"""
from __future__ import annotations

import dataclasses
import errno

from .. import isa
from .model import BpfObject, ElfMap, ElfProgram, _MapTable
from ..errors import BPFError, ELFError

_KEY0 = bytes(4)


class ArrayValue:
    """The single value of a global-data array map."""

    def __init__(self, lmap, decl: ElfMap):
        self.map, self.decl = lmap, decl

    def read(self, off: int, size: int) -> bytes:
        return bytes(self.map.sys_lookup(_KEY0))[off:off + size]

    def write(self, off: int, data: bytes) -> None:
        value = bytearray(self.map.sys_lookup(_KEY0))
        value[off:off + len(data)] = data
        self.map.sys_update(_KEY0, bytes(value))

    def address(self, off: int) -> int:
        return self.map.map_lookup_elem(_KEY0) + off


class ArenaGlobals:
    """The ``__arena`` globals: arena memory from ``user_vm_start + arena_data_off``."""

    def __init__(self, lmap, decl: ElfMap, data_off: int):
        self.map, self.decl = lmap, decl
        start = getattr(lmap, "user_vm_start", None)
        if not isinstance(start, int) or not start:
            raise ELFError(f"arena map '{decl.name}' has no user_vm_start; cannot place its globals")
        self.base = start + data_off

    def address(self, off: int) -> int:
        return self.base + off

    def read(self, off: int, size: int) -> bytes:
        return bytes(self.map.read(self.base + off, size))

    def write(self, off: int, data: bytes) -> None:
        self.map.write(self.base + off, bytes(data))


def bind(obj: BpfObject, vm=None) -> BpfObject:
    """Create ``obj``'s maps in ``vm`` (a new pybpf.VM when None) and bind everything to them."""
    if obj.vm is not None:
        raise ELFError(f"{obj.filename}: the object is already loaded into a VM")
    if vm is None:
        from ..vm import VM
        vm = VM()
    if not callable(getattr(vm, "create_map", None)):
        raise ELFError(f"{obj.filename}: {type(vm).__name__} cannot create maps (no create_map)")
    created, storage, failed = {}, {}, {}
    # BTF the kernel would refuse (BPF_BTF_LOAD): libbpf loads the object without it
    from .btf_load import kernel_refusal
    refusal = kernel_refusal(obj.btf)
    obj.btf_error = None
    kernel_btf = obj.btf
    if refusal is not None:
        err, why = refusal
        obj.btf_error = ELFError(f"{obj.filename}: the kernel refuses the object's BTF "
                                 f"({errno.errorcode.get(err, err)}: {why}); as libbpf, it "
                                 f"loads without BTF")
        obj.btf_error.errno = err
        kernel_btf = None
    for m in obj.map_defs.values():
        try:
            lm = created[m.name] = _create(vm, m)
            from ..runtime.maps.btf_fields import attach
            offsets = {v.name: v.offset for v in obj.variables.values()
                       if v.map_name == m.name} if m.origin == "data" else None
            attach(lm, kernel_btf, m.btf_value_type, offsets)  # value BTF: lock, roots, kptrs
            if m.type == "arena":
                storage[m.name] = ArenaGlobals(lm, m, obj.arena_data_off)
                if m.initial:
                    storage[m.name].write(0, m.initial)
            elif m.origin == "data":
                storage[m.name] = ArrayValue(lm, m)
                storage[m.name].write(0, m.initial or bytes(m.value_size))
        except ELFError:
            raise
        except BPFError as e:
            if m.origin == "data" or m.type == "arena":
                raise ELFError(f"{obj.filename}: map '{m.name}' ({m.type}): {e}") from None
            # libbpf's "map 'x': failed to create"; only programs using it fail (at vm.load)
            failed[m.name] = ELFError(f"{obj.filename}: map '{m.name}' ({m.type}): failed to "
                                      f"create: {e}")
    for v in obj.variables.values():
        v._backing = storage.get(v.map_name)
    fds = {name: lm.fd for name, lm in created.items()}
    programs = {}
    for n, p in obj.programs.items():
        if kernel_btf is None and p.btf is not None:    # no prog BTF, func_info, line_info
            p = dataclasses.replace(p, btf=None, func_info={}, line_info=[])
        bad = next((failed[d.name] for d in p.maps if d.name in failed), None)
        if p.load_error is None and bad is not None:
            p = dataclasses.replace(p, load_error=bad)
        programs[n] = p if p.load_error is not None else with_map_fds(p, fds)
    _initial_slots(obj, created, programs)
    obj.programs = programs
    obj.maps = _MapTable(created, aliases=obj.maps.aliases)
    obj.map_errors = failed
    obj.vm = vm
    return obj


def _create(vm, m: ElfMap):
    kw = {}
    if m.inner is not None:     # map-in-map: the inner map's template
        kw["inner"] = dict(map_type=m.inner.type, key_size=m.inner.key_size,
                           value_size=m.inner.value_size, max_entries=m.inner.max_entries,
                           flags=m.inner.flags, map_extra=m.inner.map_extra)
    return vm.create_map(m.type, key_size=m.key_size, value_size=m.value_size,
                         max_entries=m.max_entries, flags=m.flags, map_extra=m.map_extra,
                         name=m.name, **kw)


def _initial_slots(obj: BpfObject, created: dict, programs: dict) -> None:
    """``__array(values, ...)`` initial entries. Map-in-map slots get their inner maps now;
    prog_array slots are filled when the program named there is loaded (``vm.load``), as
    libbpf fills them once it has loaded the programs."""
    for m in obj.map_defs.values():
        outer = created.get(m.name)
        if not m.init_slots or outer is None:
            continue
        for index, target in sorted(m.init_slots.items()):
            # libbpf's key is the slot index as an int, whatever the key size (a hash of maps
            # with a 2-byte key gets its first bytes)
            key = index.to_bytes(4, "little")[:m.key_size].ljust(m.key_size, b"\0")
            if m.type == "prog_array":
                p = programs.get(target)
                if p is None:
                    raise ELFError(f"{obj.filename}: map '{m.name}': slot {index} names "
                                   f"'{target}', which is not a program of the object")
                p.prog_array_slots.append((outer, index))
            else:
                inner = created.get(target)
                if inner is None:
                    raise ELFError(f"{obj.filename}: map '{m.name}': slot {index} names "
                                   f"'{target}', which is not a map of the object that loaded")
                try:
                    outer.sys_update(key, inner.fd.to_bytes(4, "little"))
                except BPFError as e:
                    raise ELFError(f"{obj.filename}: map '{m.name}': slot {index} "
                                   f"('{target}'): {e}") from None


def with_map_fds(prog: ElfProgram, fds: dict[str, int]) -> ElfProgram:
    """A copy of ``prog`` whose map references are fds (src 1/2) instead of indexes (src 5/6)."""
    insns = list(prog.insns)
    to_fd = {isa.PSEUDO_MAP_IDX: isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_IDX_VALUE: isa.PSEUDO_MAP_VALUE}
    for pc, form, insn in prog.instructions():
        if form.kind == "lddw" and insn.src in to_fd:
            insns[pc] = insn._replace(src=to_fd[insn.src], imm=fds[prog.maps[insn.imm].name])
    return dataclasses.replace(prog, insns=insns, maps=[])
