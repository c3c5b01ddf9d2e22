"""Load-time resolution shared by both engines: which maps a program uses and what every ld_imm64
pseudo form and addr_space_cast stands for, as the kernel's ``resolve_pseudo_ldimm64`` does.

A program names maps two ways (BPF_PSEUDO_MAP_*, include/uapi/linux/bpf.h): by **fd** (ld_imm64 src 1 / 2; ``imm`` = the
map's ``fd`` in its VM, what libbpf hands the kernel) or by **index** into ``Program.maps``
(src 5 / 6; the MapDecl declarations of ``.map`` directives or of an unbound ELF object).
:func:`bind_declarations` turns each declaration into a VM map (creating it, with an ELF
global-data map's initial bytes, unless it is bound already); :func:`resolve_values64` then gives
the constant of every ld_imm64 by slot. Both engines run those constants as they are:

* ``map_fd`` / ``map_idx`` (src 1 / 5): ``map.address``, the map's MapHeader, as the kernel
  passes ``struct bpf_map *``; the map helpers and kfuncs resolve it back to the map.
* ``map_value`` / ``map_idx_value`` (src 2 / 6): ``map.map_direct_value_addr(0) + imm2``: the
  value of a single-element array (global data), or ``user_vm_start + imm2`` for an arena.
* ``func`` (src 4): :func:`func_value` of the target slot, an opaque token the interpreter's
  callback helpers (bpf_loop) turn back into the subprogram; a JIT substitutes code addresses.
* ``btf_id`` (src 3): refused, there is no kernel BTF.
* ``cast_user`` (addr_space_cast 1, 0): the arena's upper half ``user_vm_start & ~0xffffffff``, or
  0 when the arena has BPF_F_NO_USER_CONV (the cast is then a 32-bit move; the interpreter's
  ``(hi | lo) if lo else 0`` gives ``lo`` either way).

A program may use at most one arena (the kernel's "Only one arena per program"), and an
addr_space_cast needs one.
"""
from __future__ import annotations

from pybpf import isa
from pybpf.errors import BPFError, VMError
from pybpf.insn import imm64
from pybpf.uapi import BPF_F_NO_USER_CONV

from .maps.arena import Arena

# ld_imm64 src 4 (BPF_PSEUDO_FUNC) values in the interpreter: FUNC_BASE + 8 * target slot. The
# base is a non-canonical x86-64 address, so a program that dereferences it faults cleanly.
FUNC_BASE = 0xDEAD_0000_0000_0000
_FUNC_LIMIT = 1 << 32

_BY_INDEX = {isa.PSEUDO_MAP_IDX, isa.PSEUDO_MAP_IDX_VALUE}
_VALUE_FORMS = {isa.PSEUDO_MAP_VALUE, isa.PSEUDO_MAP_IDX_VALUE}


def func_value(slot: int) -> int:
    """The interpreter's value of ``ld_imm64 src 4`` pointing at ``slot``."""
    return FUNC_BASE + 8 * slot


def func_slot(value: int) -> int | None:
    """The slot a :func:`func_value` stands for, or None for any other value."""
    off = value - FUNC_BASE
    return off // 8 if 0 <= off < _FUNC_LIMIT and not off % 8 else None


def bind_declarations(vm, prog, bound: dict | None = None) -> list:
    """The VM map for each of ``prog.maps`` (in order), creating those not bound yet.

    ``bound`` maps declaration names to maps (or fds) the caller wants used instead. A
    declaration bound earlier in this VM (the same MapDecl object: the same Program loaded again,
    or another program of the same unbound ELF object) keeps its map.
    """
    bound = dict(bound or {})
    out = []
    for decl in prog.maps:
        m = bound.pop(decl.name, None)
        if m is not None:
            m = vm.map_by_fd(m) if isinstance(m, int) else m
            _check_matches(decl, m)
            vm._bind_decl(decl, m)
        else:
            m = vm._decl_map(decl)
            if m is None:
                m = _create_from_decl(vm, decl)
                vm._bind_decl(decl, m)
        out.append(m)
    if bound:
        raise VMError(f"maps= names {sorted(bound)}, which the program does not declare "
                      f"(declared: {[d.name for d in prog.maps]})")
    return out


def _check_matches(decl, m) -> None:
    for attr in ("key_size", "value_size", "max_entries"):
        want, got = getattr(decl, attr), getattr(m, attr)
        if want and want != got:
            raise VMError(f"map '{decl.name}': declared {attr} {want}, bound map has {got}")
    if decl.type and decl.type != m.type:
        raise VMError(f"map '{decl.name}': declared type {decl.type}, bound map is {m.type}")


def _create_from_decl(vm, decl):
    try:
        m = vm.create_map(decl.type, key_size=decl.key_size, value_size=decl.value_size,
                          max_entries=decl.max_entries, flags=decl.flags,
                          map_extra=decl.map_extra, name=decl.name)
    except BPFError as e:
        raise VMError(f"cannot create map '{decl.name}' ({decl.type}): {e}") from None
    lock = getattr(decl, "spin_lock_off", -1)
    if lock >= 0:       # ``.map ... lock=OFF``: a value with a bpf_spin_lock (value BTF)
        if lock % 4 or lock + 4 > m.value_size:
            m.close()
            raise VMError(f"map '{decl.name}': lock={lock} does not fit a 4-byte aligned "
                          f"struct bpf_spin_lock in its {m.value_size}-byte value")
        m.btf, m.spin_lock_off = True, lock
    initial = getattr(decl, "initial", None)     # an unbound ELF object's data (ElfMap)
    if initial:
        if m.type == "arena":
            m.write(m.user_vm_start + getattr(decl, "initial_offset", 0), initial)
        elif getattr(decl, "origin", "") == "data":
            m.sys_update(bytes(4), bytes(initial).ljust(m.value_size, b"\0"))
    return m


def referenced_maps(vm, prog, decl_maps: list) -> dict[int, object]:
    """slot -> map for every ld_imm64 of ``prog`` that names a map (VMError for bad ones)."""
    out = {}
    for pc, form, insn in prog.instructions():
        if form.kind != "lddw" or form.op in ("imm64", "func", "btf_id"):
            continue
        if insn.src in _BY_INDEX:
            if not 0 <= insn.imm < len(decl_maps):
                raise VMError(f"map index {insn.imm} out of range: the program declares "
                              f"{len(decl_maps)} maps (ld_imm64 by index needs maps declared "
                              f"in the program)", pc)
            out[pc] = decl_maps[insn.imm]
        else:
            m = vm.map_by_fd(insn.imm, default=None)
            if m is None:
                raise VMError(f"fd {insn.imm} is not pointing to valid bpf_map", pc)
            out[pc] = m
    return out


def program_arena(prog, refs: dict[int, object]):
    """The one arena a program uses (None if none); refuses a second one as the kernel does."""
    arena = None
    for pc, m in sorted(refs.items()):
        if isinstance(m, Arena):
            if arena is not None and m is not arena:
                raise VMError("Only one arena per program", pc)
            arena = m
    return arena


def resolve_values64(prog, refs: dict[int, object], arena=None) -> dict[int, int]:
    """The constant of each ld_imm64 and cast_user of ``prog`` by slot (see the module doc)."""
    out = {}
    starts = {pc for pc, _, _ in prog.instructions()}
    for pc, form, insn in prog.instructions():
        if form.kind == "lddw":
            out[pc] = _lddw_value(prog, pc, form, insn, refs.get(pc), starts)
        elif form.kind == "cast":
            if arena is None:
                raise VMError("addr_space_cast insn can only be used in a program that has an "
                              "associated arena", pc)
            if form.op == "user":
                no_conv = arena.flags & BPF_F_NO_USER_CONV
                out[pc] = 0 if no_conv else arena.user_vm_start & ~0xFFFFFFFF
    return out


def _lddw_value(prog, pc: int, form, insn, m, starts: set) -> int:
    if form.op == "imm64":
        return imm64(prog.insns, pc)
    if form.op == "func":
        target = pc + 1 + insn.imm
        if target not in starts:
            raise VMError(f"ld_imm64 func target {target} is not an instruction", pc)
        return func_value(target)
    if form.op == "btf_id":
        raise VMError("ld_imm64 btf_id needs kernel BTF, which pybpf does not have", pc)
    if insn.src not in _VALUE_FORMS:
        return m.address
    off = prog.insns[pc + 1].imm & 0xFFFFFFFF
    direct = getattr(m, "map_direct_value_addr", None)
    if direct is None:
        raise VMError(f"map '{m.name}' ({m.type}) has no direct value access", pc)
    try:
        return (direct(off) + off) & ((1 << 64) - 1)
    except BPFError as e:
        raise VMError(f"direct value access to map '{m.name}' at offset {off}: {e}", pc) from None
