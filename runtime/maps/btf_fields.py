"""The special fields of a map value found in its BTF (the kernel's ``btf_parse_fields``).

Only ``struct bpf_spin_lock`` so far: :func:`attach` records on a map created from an object
with BTF that it has BTF (``map.btf``) and where its value's lock is (``map.spin_lock_off``,
-1 without), which the verifier's spin-lock rules read (:mod:`pybpf.verifier.spin_lock`). A
value holding more than one lock is refused, as the kernel refuses it (E2BIG from
BPF_MAP_CREATE: "only one bpf_spin_lock" per value).
"""
from __future__ import annotations

import errno

from pybpf.errors import MapError


def spin_lock_offset(btf, type_id: int) -> int:
    """Byte offset of the top-level ``struct bpf_spin_lock`` of value type ``type_id`` (a
    struct, or a DATASEC of global variables), or -1."""
    if btf is None or not type_id:
        return -1
    t = btf.resolve(type_id)
    found = []
    if t.kind == "struct":
        for m in t.members:
            mt = btf.resolve(m.type)
            if mt.kind == "struct" and mt.name == "bpf_spin_lock":
                found.append(m.bit_offset // 8)
    elif t.kind == "datasec":
        for v in t.secinfo:
            var = btf[v.type]
            vt = btf.resolve(var.type) if var.kind == "var" else None
            if vt is not None and vt.kind == "struct" and vt.name == "bpf_spin_lock":
                found.append(v.offset)
    elif t.kind == "struct" and t.name == "bpf_spin_lock":
        found.append(0)
    if len(found) > 1:
        raise MapError("a map value may hold one bpf_spin_lock, not "
                       f"{len(found)}", errno.E2BIG)
    return found[0] if found else -1


def attach(m, btf, value_type_id: int) -> None:
    """Record ``m``'s BTF facts (called by the ELF loader after creating the map)."""
    m.btf = btf is not None and bool(value_type_id)
    m.spin_lock_off = spin_lock_offset(btf, value_type_id)


def without_lock(m, value: bytes) -> bytes:
    """``value`` with its bpf_spin_lock zeroed (check_and_init_map_value: what user space
    reads, and what a new element starts with)."""
    off = m.spin_lock_off
    if off < 0 or len(value) < off + 4:
        return value
    return value[:off] + bytes(4) + value[off + 4:]


def copy_value(m, dst: int, value: bytes, locked: bool) -> None:
    """copy_map_value(_locked): write ``value`` at ``dst`` except the lock word, which keeps
    its state; with ``locked`` (BPF_F_LOCK) the value's own lock is held during the copy."""
    import ctypes
    off = m.spin_lock_off
    if off < 0:
        ctypes.memmove(dst, value, len(value))
        return
    from ..helpers_control import spin_lock, spin_unlock
    if locked:
        spin_lock(dst + off)
    try:
        ctypes.memmove(dst, value[:off], off)
        ctypes.memmove(dst + off + 4, value[off + 4:], len(value) - off - 4)
    finally:
        if locked:
            spin_unlock(dst + off)
