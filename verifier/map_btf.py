"""Reads through a map pointer: the kernel's check_ptr_to_map_access on struct bpf_map's BTF.

Root may load fields of the ``struct bpf_map`` a ``CONST_PTR_TO_MAP`` register points to (the
kernel walks its own BTF of the map type's container, ``struct bpf_array``, ``bpf_htab``...,
whose first member is ``struct bpf_map map``). The layout below is Linux 6.18's on x86-64, read
from the running kernel's BTF (/sys/kernel/btf/vmlinux); the container names and sizes and the
verdicts were measured by loading reads at many offsets (tests/verifier/map_ptr/).

pybpf's maps expose the members up to ``name`` (runtime/maps/base.py MapHeader, read-only):
the scalar members read as the kernel's (``map_type``, ``key_size``, ``value_size``,
``max_entries``, ``map_extra``, ``map_flags``, ``id``, ``numa_node``, ``name``; ``sha``,
``excl`` and the BTF type ids read 0). The kernel's refusals (negative offsets, writes, holes,
part of a pointer, past a member or the container) are refused with its words. What the kernel
accepts and pybpf cannot give is refused with a message saying so, never accepted: a whole
pointer member (the kernel types the result PTR_TO_BTF_ID), the members past ``name``
(mutexes, reference counts), the container's own fields and an arena's struct bpf_arena.
"""
from __future__ import annotations

import errno

# (name, offset, size, kind): kind "scalar", "array" (of scalars) or "ptr"
BPF_MAP_MEMBERS = (
    ("sha", 0, 32, "array"), ("excl", 32, 4, "scalar"), ("ops", 40, 8, "ptr"),
    ("inner_map_meta", 48, 8, "ptr"), ("security", 56, 8, "ptr"),
    ("map_type", 64, 4, "scalar"), ("key_size", 68, 4, "scalar"),
    ("value_size", 72, 4, "scalar"), ("max_entries", 76, 4, "scalar"),
    ("map_extra", 80, 8, "scalar"), ("map_flags", 88, 4, "scalar"), ("id", 92, 4, "scalar"),
    ("record", 96, 8, "ptr"), ("numa_node", 104, 4, "scalar"),
    ("btf_key_type_id", 108, 4, "scalar"), ("btf_value_type_id", 112, 4, "scalar"),
    ("btf_vmlinux_value_type_id", 116, 4, "scalar"), ("btf", 120, 8, "ptr"),
    ("objcg", 128, 8, "ptr"), ("name", 136, 16, "array"),
)
SIZEOF_BPF_MAP = 296
EXPOSED = 152               # pybpf's maps carry struct bpf_map up to the end of name

# map type -> (the BTF struct its ops name (map_btf_id), its size, ends in a flexible array)
CONTAINERS = {
    **{t: ("bpf_array", 312, False) for t in (
        "array", "percpu_array", "prog_array", "perf_event_array", "array_of_maps",
        "cgroup_array")},
    **{t: ("bpf_htab", 832, False) for t in (
        "hash", "percpu_hash", "lru_hash", "lru_percpu_hash", "hash_of_maps")},
    "queue": ("bpf_queue_stack", 312, True), "stack": ("bpf_queue_stack", 312, True),
    "ringbuf": ("bpf_ringbuf_map", 304, False), "lpm_trie": ("lpm_trie", 416, False),
    "bloom_filter": ("bpf_bloom_filter", 312, True),
    "devmap": ("bpf_dtab", 344, False), "devmap_hash": ("bpf_dtab", 344, False),
    "cpumap": ("bpf_cpu_map", 304, False), "xskmap": ("xsk_map", 304, False),
    "cgroup_storage": ("bpf_cgroup_storage_map", 328, False),
    "percpu_cgroup_storage": ("bpf_cgroup_storage_map", 328, False),
    "arena": ("bpf_arena", 400, False),
}


def check_ptr_to_map_access(chk, regno: int, m, off: int, size: int, write: bool) -> None:
    """Refuse (chk.error) a load or store of ``size`` bytes at ``off`` in the map ``m``'s
    struct; return for a load pybpf serves (a scalar member it exposes)."""
    from pybpf.uapi import MAP_TYPE_IDS
    c = CONTAINERS.get(m.type)
    if c is None:
        chk.error(f"map_ptr access not supported for map type {MAP_TYPE_IDS.get(m.type, 0)}",
                  524)                                 # ENOTSUPP
    tname, csize, flexible = c
    if off < 0:
        chk.error(f"R{regno} is {tname} invalid negative access: off={off}")
    if write:
        chk.error(f"only read from {tname} is supported")
    if off + size > csize and not flexible:
        chk.error(f"access beyond struct {tname} at off {off} size {size}")
    if off < SIZEOF_BPF_MAP < off + size:
        chk.error(f"access beyond struct bpf_map at off {off} size {size}")
    if m.type == "arena" or off >= EXPOSED:
        what = ("an arena's struct bpf_arena" if m.type == "arena" else
                f"struct {tname} at off {off} (pybpf's maps expose struct bpf_map up to name, "
                f"off < {EXPOSED})")
        chk.error(f"R{regno} reads {what}: not readable in pybpf", errno.EACCES)
    for name, moff, msize, kind in BPF_MAP_MEMBERS:
        if off + size <= moff or off < moff:
            break                               # a hole before this member
        mend = moff + msize
        if off >= mend:
            continue
        if kind == "ptr":
            if size != msize or off != moff:
                chk.error(f"cannot access ptr member {name} with moff {moff} in struct bpf_map "
                          f"with off {off} size {size}")
            chk.error(f"R{regno} reads the pointer member {name} of struct bpf_map: pybpf has "
                      f"no kernel objects to point to", errno.EACCES)
        if off + size > mend:
            chk.error(f"access beyond the end of member {name} (mend:{mend}) in struct bpf_map "
                      f"with off {off} size {size}")
        return
    chk.error(f"struct bpf_map doesn't have field at offset {off}", errno.EINVAL)
