"""BPF_MAP_TYPE_ARRAY, and the base of percpu_array and prog_array (kernel/bpf/arraymap.c).

``max_entries`` zero-initialised slots of ``round_up(value_size, 8)`` bytes (times ``n_cpus`` for
percpu_array), allocated at creation at ``data_address`` and never moved; index ``i`` (CPU ``c``)
lives at ``data_address + i * elem_size + c * round_up(value_size, 8)``, which is what
map_lookup_elem returns and what native code can compute from the :class:`MapHeader`.

Kernel rules: the key is a u32 index; lookups past the end find nothing (ENOENT from user
space, NULL in BPF); updates past the end fail with -E2BIG, ``BPF_NOEXIST`` always fails with
-EEXIST (every element exists), unknown flags give -EINVAL; elements cannot be deleted
(-EINVAL). ``clear()`` from Python zeroes every value instead.
"""
from __future__ import annotations

import ctypes
import errno
import struct

from pybpf.uapi import (BPF_EXIST, BPF_F_ACCESS_MASK, BPF_F_INNER_MAP, BPF_F_LOCK, BPF_F_MMAPABLE,
                        BPF_F_NUMA_NODE, BPF_F_PRESERVE_ELEMS, BPF_F_RDONLY_PROG, BPF_NOEXIST,
                        ENOTSUPP)
from . import btf_fields
from .base import HEADER_SIZE, INT_MAX, PAGE_SIZE, PCPU_MIN_UNIT_SIZE, Map, Memory, check, round_up

ARRAY_CREATE_FLAG_MASK = (BPF_F_NUMA_NODE | BPF_F_MMAPABLE | BPF_F_ACCESS_MASK |
                          BPF_F_PRESERVE_ELEMS | BPF_F_INNER_MAP)
_U32 = struct.Struct("<I")


class ArrayMap(Map):
    """BPF_MAP_TYPE_ARRAY: u32 index -> fixed slot. Keys decode as ints by default."""

    type = "array"
    key_default = int

    def _check_attrs(self) -> None:
        # array_map_alloc_check, in the kernel's order.
        ks, vs, n, flags = self.key_size, self.value_size, self.max_entries, self.flags
        check(n and ks == 4 and vs and not flags & ~ARRAY_CREATE_FLAG_MASK, errno.EINVAL,
              f"{self.type} needs key_size 4, value_size > 0, max_entries > 0 and known flags")
        check(not (self.percpu and flags & BPF_F_NUMA_NODE), errno.EINVAL,
              "percpu maps take no NUMA node")
        check(self.type == "array" or not flags & (BPF_F_MMAPABLE | BPF_F_INNER_MAP),
              errno.EINVAL, "BPF_F_MMAPABLE and BPF_F_INNER_MAP are for plain arrays")
        check(not flags & BPF_F_PRESERVE_ELEMS, errno.EINVAL,
              "BPF_F_PRESERVE_ELEMS is for perf event arrays")
        check(vs <= INT_MAX, errno.E2BIG, "value_size too large")
        check(not self.percpu or round_up(vs, 8) <= PCPU_MIN_UNIT_SIZE, errno.E2BIG,
              f"percpu values are limited to {PCPU_MIN_UNIT_SIZE} bytes")

    def _setup(self) -> None:
        self._check_attrs()
        self.stride = round_up(self.value_size, 8)
        self.elem_size = self.stride * self.n_cpus
        # BPF_F_MMAPABLE arrays keep their values page aligned, as the kernel does.
        offset = PAGE_SIZE if self.flags & BPF_F_MMAPABLE else HEADER_SIZE
        self._mem = Memory(offset + self.max_entries * self.elem_size)
        self._place_header(self._mem)
        self.data_address = self._mem.address + offset
        self.header.data, self.header.elem_size = self.data_address, self.elem_size

    def _index(self, key: bytes) -> int:
        return _U32.unpack(key)[0]

    def _value_base(self, key: bytes) -> int:
        i = self._index(key)
        return self.data_address + i * self.elem_size if i < self.max_entries else 0

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        if flags & ~BPF_F_LOCK > BPF_EXIST or flags & BPF_F_LOCK and self.spin_lock_off < 0:
            return -errno.EINVAL          # unknown flags; BPF_F_LOCK needs a bpf_spin_lock (BTF)
        i = self._index(key)
        if i >= self.max_entries:
            return -errno.E2BIG
        if flags & ~BPF_F_LOCK == BPF_NOEXIST:
            return -errno.EEXIST
        base = self.data_address + i * self.elem_size
        if self.kptr_fields and self.percpu:
            # a program's update writes and frees its CPU's copy, user space's every CPU's
            btf_fields.copy_percpu(self, base, value, onallcpus)
        elif self.spin_lock_off >= 0 or self.kptr_fields:
            # copy_map_value(_locked): the lock word keeps its state, kptrs are not copied
            btf_fields.copy_value(self, base, value[:self.value_size], bool(flags & BPF_F_LOCK))
            if btf_fields.has_fields(self):     # array_map_update_elem: bpf_obj_free_fields
                btf_fields.free_fields(self, base)
        elif onallcpus:
            ctypes.memmove(base, value, self.elem_size)
        else:
            ctypes.memmove(base + self.cpu * self.stride if self.percpu else base, value,
                           self.value_size)
        return 0

    def map_delete_elem(self, key: bytes) -> int:
        return -errno.EINVAL

    def map_direct_value_addr(self, off: int) -> int:
        """Base of ld_imm64 BPF_PSEUDO_MAP_VALUE (the loader adds ``off``), for global data."""
        check(self.max_entries == 1 and self.type == "array", ENOTSUPP,
              "direct value access needs a single-element array")
        check(off < self.value_size, errno.EINVAL, f"offset {off} outside the value")
        return self.data_address

    def gen_lookup(self, ir, key):
        """Native lookup (array_map_gen_lookup): ``index < max_entries ? data + index *
        elem_size (+ cpu * stride) : 0``."""
        b = ir.b
        index = ir.load(key, ir.I32, align=1)
        found = b.icmp_unsigned("<", index, ir.const(ir.I32, self.max_entries))
        addr = ir.index(ir.ext(self.header.data), index, self.header.elem_size)
        addr = b.add(addr, self._gen_cpu_offset(ir)) if self.percpu else addr
        return b.select(found, addr, ir.const(ir.I64, 0))

    def regions(self) -> list[tuple[int, int, bool]]:
        return [(self.data_address, self.max_entries * self.elem_size,
                 not self.flags & BPF_F_RDONLY_PROG)]

    def region_rule(self) -> dict:
        # one value: its padding and the next element are out of reach, as the verifier
        # bounds a map value pointer by value_size
        return {"stride": self.elem_size, "lo": 0,
                "hi": self.stride * (self.n_cpus - 1) + self.value_size}

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        self._sys_check(False)
        i = self._index(key) if key is not None else self.max_entries
        if i >= self.max_entries:
            return _U32.pack(0)
        check(i != self.max_entries - 1, errno.ENOENT, "no next key")
        return _U32.pack(i + 1)

    def _raw_keys(self) -> list[bytes]:
        return [_U32.pack(i) for i in range(self.max_entries)]

    def __len__(self) -> int:
        return self.max_entries

    def __contains__(self, key) -> bool:
        return self._index(self.key_codec.encode(key)) < self.max_entries

    def clear(self) -> None:
        """Zero every value (arrays cannot delete elements)."""
        self._sys_check(True)
        if btf_fields.has_fields(self):       # what the values' kptrs and roots hold goes too
            for i in range(self.max_entries):
                btf_fields.free_fields(self, self.data_address + i * self.elem_size)
        ctypes.memset(self.data_address, 0, self.max_entries * self.elem_size)
