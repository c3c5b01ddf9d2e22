"""BPF_MAP_TYPE_ARRAY_OF_MAPS and HASH_OF_MAPS: maps whose values are maps
(kernel/bpf/map_in_map.c, arraymap.c, hashtab.c).

Created with a template of the inner maps (the kernel's ``inner_map_fd``): ``inner=`` a map, or a
dict of ``create_map`` arguments (``map_type``, ``key_size``, ``value_size``, ``max_entries``,
``flags``, ``map_extra``). Values are 4 bytes: user space stores an inner map by fd (the VM sets
``resolve_fd``) or, from Python, the map object itself; the syscall lookup returns the inner
map's fd (the kernel returns its id; pybpf maps have only fds).

From BPF only ``bpf_map_lookup_elem`` is allowed: it returns the inner map itself (its
``address``, what ``r1 = map ll`` loads), NULL for an empty slot, so the result can be passed to
the map helpers directly. Update and delete from BPF: -EINVAL (the verifier refuses them).

Kernel rules: value_size must be 4 (-EINVAL); no template -> -EBADF; a template that is itself
a map-in-map, or of a type without ``map_meta_equal`` (prog_array, ringbuf, ...), -EINVAL /
-ENOTSUPP; an inner map must match the template's type, key_size, value_size and map_flags,
and its max_entries unless the template has BPF_F_INNER_MAP (-EINVAL).
"""
from __future__ import annotations

import errno
import struct
import threading

from pybpf.uapi import (BPF_ANY, BPF_EXIST, BPF_F_ACCESS_MASK, BPF_F_INNER_MAP, BPF_F_NO_PREALLOC,
                        BPF_F_NUMA_NODE, BPF_NOEXIST, ENOTSUPP)
from .base import HEADER_SIZE, Map, Memory, check, fail

_U32 = struct.Struct("<I")
_NO_META_EQUAL = ("prog_array", "perf_event_array", "ringbuf", "user_ringbuf", "cgroup_array",
                  "struct_ops", "sockmap", "sockhash")
MAP_IN_MAP = ("array_of_maps", "hash_of_maps")


class _MapOfMaps(Map):
    """Common part: the template, the fd -> map resolution and the compatibility check."""

    key_default = None

    def __init__(self, *args, inner=None, **kwargs):
        self._inner_spec = inner
        super().__init__(*args, **kwargs)

    def _setup_template(self) -> None:
        spec = self._inner_spec
        check(spec is not None, errno.EBADF, f"{self.type} needs an inner map template (inner=)")
        if isinstance(spec, Map):
            spec = dict(map_type=spec.type, key_size=spec.key_size, value_size=spec.value_size,
                        max_entries=spec.max_entries, flags=spec.flags, map_extra=spec.map_extra)
        t = dict(spec)
        mtype = t.get("map_type", t.get("type"))
        check(mtype not in MAP_IN_MAP, errno.EINVAL, "an inner map cannot hold maps itself")
        check(mtype not in _NO_META_EQUAL, ENOTSUPP, f"{mtype} maps cannot be inner maps")
        self.template = dict(type=mtype, key_size=t.get("key_size", 0),
                             value_size=t.get("value_size", 0),
                             max_entries=t.get("max_entries", 0), flags=t.get("flags", 0))
        check(self.value_size == 4, errno.EINVAL, f"{self.type} values are 4-byte map fds")
        self.resolve_fd = None         # fd -> Map, installed by the VM
        self._mem = Memory(HEADER_SIZE)
        self._place_header(self._mem)
        self._lock = threading.Lock()

    def _inner(self, value) -> Map:
        """The map a value names (an fd as 4 bytes or an int, or a Map), checked."""
        if isinstance(value, (bytes, bytearray)):
            value = _U32.unpack(bytes(value))[0]
        m = value
        if isinstance(value, int):
            m = self.resolve_fd(value) if self.resolve_fd is not None else None
            check(m is not None, errno.EBADF, f"fd {value} is not a map")
        check(isinstance(m, Map), errno.EINVAL, f"{type(m).__name__} is not a map")
        t = self.template
        same = (m.type == t["type"] and m.key_size == t["key_size"] and
                m.value_size == t["value_size"] and m.flags == t["flags"] and
                (t["flags"] & BPF_F_INNER_MAP or m.max_entries == t["max_entries"]))
        check(same, errno.EINVAL, f"map '{m.name}' ({m.type} {m.key_size}/{m.value_size}/"
                                  f"{m.max_entries}) does not match the inner map template {t}")
        return m

    # -- the BPF face: lookup only ---------------------------------------------------------
    def map_lookup_elem(self, key: bytes) -> int:
        m = self._get(key)
        return m.address if m is not None and not m.closed else 0

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        return -errno.EINVAL

    def map_delete_elem(self, key: bytes) -> int:
        return -errno.EINVAL

    # -- syscall / Python faces ---------------------------------------------------------------
    def sys_lookup(self, key: bytes) -> bytes:
        self._sys_check(False)
        m = self._get(self._key(key))
        check(m is not None, errno.ENOENT, f"key {key.hex()} not found")
        return _U32.pack((m.fd or 0) & 0xFFFFFFFF)

    def sys_update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._sys_check(True)
        check(len(value) == 4, errno.EINVAL, "map-in-map values are 4-byte fds")
        self._put(self._key(key), self._inner(value), flags)

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        self._sys_check(True)
        self._put(self.key_codec.encode(key), self._inner(value), flags)

    __setitem__ = update

    def lookup(self, key):
        self._sys_check(False)
        m = self._get(self.key_codec.encode(key))
        if m is None:
            raise fail("no inner map there", errno.ENOENT)
        return m

    __getitem__ = lookup

    def regions(self) -> list[tuple[int, int, bool]]:
        return []


class ArrayOfMapsMap(_MapOfMaps):
    """BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 index -> inner map (slots start empty)."""

    type = "array_of_maps"
    key_default = int

    def _setup(self) -> None:
        check(self.key_size == 4 and self.max_entries and
              not self.flags & ~(BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK), errno.EINVAL,
              "array_of_maps needs key_size 4, max_entries > 0 and known flags")
        self._setup_template()
        # index -> inner map, only the filled slots (max_entries may be 2^32 - 1)
        self._slots: dict[int, Map] = {}

    def _get(self, key: bytes):
        i = _U32.unpack(key)[0]
        return self._slots.get(i) if i < self.max_entries else None

    def _put(self, key: bytes, m: Map, flags: int) -> None:
        i = _U32.unpack(key)[0]
        check(flags <= BPF_EXIST, errno.EINVAL, f"unknown flags {flags}")
        check(i < self.max_entries, errno.E2BIG, f"index {i} out of range")
        check(flags != BPF_NOEXIST, errno.EEXIST, "array elements always exist")
        self._slots[i] = m

    def sys_delete(self, key: bytes) -> None:
        self._sys_check(True)
        i = _U32.unpack(self._key(key))[0]
        check(i < self.max_entries, errno.E2BIG, f"index {i} out of range")
        check(self._slots.get(i) is not None, errno.ENOENT, f"no map at index {i}")
        del self._slots[i]

    def _raw_keys(self) -> list[bytes]:
        return [_U32.pack(i) for i in range(self.max_entries)]     # array semantics

    def __len__(self) -> int:
        return len(self._slots)

    def map_mem_usage(self) -> int:
        return 8 * self.max_entries     # the kernel's array of 8-byte map pointers


class HashOfMapsMap(_MapOfMaps):
    """BPF_MAP_TYPE_HASH_OF_MAPS: key bytes -> inner map."""

    type = "hash_of_maps"

    def _setup(self) -> None:
        check(self.key_size and self.max_entries and
              not self.flags & ~(BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK),
              errno.EINVAL, "hash_of_maps needs key_size > 0, max_entries > 0 and known flags")
        self._setup_template()
        self._table: dict[bytes, Map] = {}

    def _get(self, key: bytes):
        return self._table.get(bytes(key))

    def _put(self, key: bytes, m: Map, flags: int) -> None:
        key = bytes(key)
        check(flags <= BPF_EXIST, errno.EINVAL, f"unknown flags {flags}")
        with self._lock:
            present = key in self._table
            check(not (present and flags == BPF_NOEXIST), errno.EEXIST, "key exists")
            check(present or flags != BPF_EXIST, errno.ENOENT, "key does not exist")
            check(present or len(self._table) < self.max_entries, errno.E2BIG, "map is full")
            self._table[key] = m

    def sys_delete(self, key: bytes) -> None:
        self._sys_check(True)
        with self._lock:
            check(self._table.pop(bytes(self._key(key)), None) is not None, errno.ENOENT,
                  f"key {key.hex()} not found")

    def _raw_keys(self) -> list[bytes]:
        return list(self._table)

    def __len__(self) -> int:
        return len(self._table)
