"""The special fields of a map value found in its BTF (the kernel's ``btf_parse_fields``).

``struct bpf_spin_lock``: :func:`attach` records on a map created from an object
with BTF that it has BTF (``map.btf``) and where its value's lock is (``map.spin_lock_off``,
-1 without), which the verifier's spin-lock rules read (:mod:`pybpf.verifier.spin_lock`). A
value holding more than one lock is refused, as the kernel refuses it (E2BIG from
BPF_MAP_CREATE: "only one bpf_spin_lock" per value).

Graph roots (``struct bpf_list_head``, ``struct bpf_rb_root``) with their ``contains:T:field``
decl tags (``__contains(T, field)``): :func:`graph_roots` finds them, :func:`attach` records
them as ``map.graph_roots`` (:class:`GraphRoot` by offset), which the verifier's graph rules
(:mod:`pybpf.verifier.graph`) and the runtime's lists and trees
(:mod:`pybpf.runtime.kfuncs_graph`) read. As the kernel, a value with a graph root must hold a
bpf_spin_lock too (EINVAL), and the contained type must be a struct of the same BTF with a
``bpf_list_node`` / ``bpf_rb_node`` of that name.

``__kptr`` fields (:mod:`pybpf.verifier.kptr` parses them: one parser for the verifier and the
maps): ``map.kptr_fields``; :func:`free_fields` drops what they hold, :func:`without_kptrs`
keeps user space from reading or writing them (copy_map_value skips them), so a field only
ever holds what bpf_kptr_xchg put there. Kptrs live in array and hash values, per-CPU ones
included, as map_check_btf allows: each CPU's copy of a per-CPU value has its own fields. A
program's update writes and frees the current CPU's copy, user space's every CPU's, and a
deleted element frees every CPU's (arraymap.c, hashtab.c: pcpu_copy_value,
check_and_free_fields).
"""
from __future__ import annotations

import errno

from pybpf.errors import MapError


def spin_lock_offset(btf, type_id: int, var_offsets: dict | None = None) -> int:
    """Byte offset of the top-level ``struct bpf_spin_lock`` of value type ``type_id`` (a
    struct, or a DATASEC of global variables, whose offsets ``var_offsets`` gives by name as
    the ELF symbols say: clang leaves them 0 in .BTF, libbpf fixes them), or -1."""
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
                found.append((var_offsets or {}).get(var.name, v.offset))
    elif t.kind == "struct" and t.name == "bpf_spin_lock":
        found.append(0)
    if len(found) > 1:
        raise MapError("a map value may hold one bpf_spin_lock, not "
                       f"{len(found)}", errno.E2BIG)
    return found[0] if found else -1


from pybpf.verifier.graph_fields import (GRAPH_NODES, GRAPH_ROOTS, ROOT_SIZE,  # noqa: F401,E402
                                        GraphRoot, graph_roots)

from pybpf.verifier.kptr import (KPTR_SIZE, FieldError, KptrField,  # noqa: F401,E402 (one parser)
                                 kptr_fields)

# map_check_btf: the map types that may hold kptrs (the storage maps pybpf does not have)
KPTR_MAP_TYPES = ("hash", "lru_hash", "array", "percpu_hash", "lru_percpu_hash", "percpu_array")


def attach(m, btf, value_type_id: int, var_offsets: dict | None = None) -> None:
    """Record ``m``'s BTF facts (called by the ELF loader after creating the map;
    ``var_offsets``: a global data map's variables by name)."""
    m.btf = btf is not None and bool(value_type_id)
    m.spin_lock_off = spin_lock_offset(btf, value_type_id, var_offsets)
    roots = graph_roots(btf, value_type_id, var_offsets)
    if roots and m.spin_lock_off < 0:
        raise MapError(f"map {getattr(m, 'name', '')!r}: a value with a "
                       f"{next(iter(roots.values())).kind} needs a bpf_spin_lock", errno.EINVAL)
    m.graph_roots = roots
    try:
        kptrs = kptr_fields(btf, value_type_id, var_offsets)
    except FieldError as e:
        # btf_parse_fields failed: the kernel creates the map with no record, so the value has
        # no special field at all (no lock, roots or kptrs) and the verifier says so on use
        m.spin_lock_off, m.graph_roots, m.kptr_fields = -1, {}, {}
        m.btf_record_error = str(e)
        return
    if kptrs and m.type not in KPTR_MAP_TYPES:
        raise MapError(f"map {getattr(m, 'name', '')!r}: a {m.type} map cannot hold kptrs",
                       errno.EOPNOTSUPP)
    m.kptr_fields = kptrs


def free_fields(m, base: int) -> None:
    """bpf_obj_free_fields for the value at ``base`` (an element deleted or replaced, an array
    element updated): what its graph roots and kptrs hold is dropped (``m.graphs``: the VM's
    Graphs). ``base`` is the element's first value: a per-CPU element's every CPU copy is freed
    (check_and_free_fields)."""
    for b in cpu_bases(m, base, True):
        _free_one(m, b)


def _free_one(m, base: int) -> None:
    graphs = getattr(m, "graphs", None)
    if graphs is None:
        return
    for off in m.graph_roots:
        graphs.free_at(base + off)
    for off in getattr(m, "kptr_fields", {}):
        graphs.kptr_free(base + off)


def cpu_bases(m, base: int, every_cpu: bool) -> list[int]:
    """The values of the element at ``base``: one for a plain map; for a per-CPU map every
    CPU's copy, or only the current CPU's (what a program reaches)."""
    if not getattr(m, "percpu", False):
        return [base]
    stride = round_up8(m.value_size)
    return ([base + c * stride for c in range(m.n_cpus)] if every_cpu
            else [base + m.cpu * stride])


def round_up8(n: int) -> int:
    return (n + 7) & ~7


def copy_percpu(m, base: int, value: bytes, onallcpus: bool) -> None:
    """pcpu_copy_value / bpf_percpu_array_update with special fields: each copy written (user
    space's ``onallcpus`` buffer holds one 8-aligned value per CPU, a program's one value for
    its CPU) except its kptrs, then what the copy's fields held is dropped."""
    stride = round_up8(m.value_size)
    for i, b in enumerate(cpu_bases(m, base, onallcpus)):
        part = value[i * stride:(i + 1) * stride] if onallcpus else value[:m.value_size]
        copy_value(m, b, part, False)
        _free_one(m, b)


def has_fields(m) -> bool:
    """Whether bpf_obj_free_fields has anything to free in ``m``'s values."""
    return bool(getattr(m, "graph_roots", None) or getattr(m, "kptr_fields", None))


def without_kptrs(m, value: bytes) -> bytes:
    """``value`` with its kptr fields zeroed: what user space reads, and what a value written
    into a map brings there (copy_map_value skips the fields; a new element starts with NULL),
    so a kptr field only ever holds what bpf_kptr_xchg put there. A per-CPU map's buffer of
    every CPU's values (longer than one value) has each CPU's fields zeroed."""
    fields = getattr(m, "kptr_fields", {})
    if not fields:
        return value
    stride = round_up8(m.value_size)
    starts = (range(0, len(value), stride) if getattr(m, "percpu", False)
              and len(value) > stride else (0,))
    for start in starts:
        for off in fields:
            at = start + off
            if len(value) >= at + KPTR_SIZE:
                value = value[:at] + bytes(KPTR_SIZE) + value[at + KPTR_SIZE:]
    return value


def without_special(m, value: bytes) -> bytes:
    """``value`` with its lock and graph roots zeroed, as user space reads it."""
    value = without_kptrs(m, without_lock(m, value))
    for off in getattr(m, "graph_roots", {}):
        if len(value) >= off + ROOT_SIZE:
            value = value[:off] + bytes(ROOT_SIZE) + value[off + ROOT_SIZE:]
    return value


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
    for k in getattr(m, "kptr_fields", {}):     # copy_map_value skips them: they keep theirs
        value = value[:k] + ctypes.string_at(dst + k, KPTR_SIZE) + value[k + KPTR_SIZE:]
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
