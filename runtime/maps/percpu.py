"""Percpu maps: BPF_MAP_TYPE_PERCPU_ARRAY, PERCPU_HASH and LRU_PERCPU_HASH (one CPU unless told).

Each element holds ``n_cpus`` values of ``round_up(value_size, 8)`` bytes side by side. A BPF
program sees only the current CPU's value (``map.cpu``, set by the VM; map_lookup_elem returns
its address and map_update_elem writes only it, a new hash element starting with the other CPUs
zeroed), and ``bpf_map_lookup_percpu_elem`` reaches any CPU's. User space sees every CPU: a
lookup from Python returns a list with one value per CPU; an update takes such a list, or one
value that every CPU gets, or the raw syscall buffer (``n_cpus * round_up(value_size, 8)`` bytes).
"""
from __future__ import annotations

import errno

from .array import ArrayMap
from .base import check, round_up
from .hash import HashMap, LruHashMap


class _Percpu:
    percpu = True

    def __init__(self, *args, n_cpus: int = 1, **kwargs) -> None:
        check(isinstance(n_cpus, int) and n_cpus >= 1, errno.EINVAL, "n_cpus must be >= 1")
        self.n_cpus = n_cpus
        super().__init__(*args, **kwargs)

    def _encode_value(self, value) -> bytes:
        stride = round_up(self.value_size, 8)
        if isinstance(value, (bytes, bytearray, memoryview)) and \
                len(value) == self.sys_value_size:
            return bytes(value)
        if isinstance(value, list):
            check(len(value) == self.n_cpus, errno.EINVAL,
                  f"expected {self.n_cpus} per-CPU values, got {len(value)}")
            parts = [self.value_codec.encode(v) for v in value]
        else:
            parts = [self.value_codec.encode(value)] * self.n_cpus
        return b"".join(p.ljust(stride, b"\0") for p in parts)

    def _decode_value(self, raw: bytes) -> list:
        stride, vs = round_up(self.value_size, 8), self.value_size
        return [self.value_codec.decode(raw[c * stride:c * stride + vs])
                for c in range(self.n_cpus)]


class PercpuArrayMap(_Percpu, ArrayMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY."""

    type = "percpu_array"


class PercpuHashMap(_Percpu, HashMap):
    """BPF_MAP_TYPE_PERCPU_HASH."""

    type = "percpu_hash"


class LruPercpuHashMap(_Percpu, LruHashMap):
    """BPF_MAP_TYPE_LRU_PERCPU_HASH."""

    type = "lru_percpu_hash"
