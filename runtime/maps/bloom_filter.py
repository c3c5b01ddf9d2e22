"""BPF_MAP_TYPE_BLOOM_FILTER: set membership with false positives (kernel/bpf/bloom_filter.c).

No keys: ``bpf_map_push_elem(&bloom, &value, 0)`` adds a value, ``bpf_map_peek_elem(&bloom,
&value)`` answers 0 (maybe present) or -ENOENT (certainly absent) and writes nothing; user space
does the same with update (no key) and lookup. Pop, delete, get_next_key: -EOPNOTSUPP; BPF
lookup/update: -EINVAL.

The bit array is sized as the kernel sizes it: ``nr_hash_funcs`` (``map_extra`` bits 0-3,
default 5) times ``max_entries`` times 7/5, rounded up to a power of two of at least 64 bits;
each value sets ``nr_hash_funcs`` bits. The kernel hashes with jhash and a random seed (unless
BPF_F_ZERO_SEED), so which absent values collide differs from run to run there; here the hash
is a fixed one (blake2b), so a value that was added is always found, as in the kernel, and an
absent one is reported absent unless it collides.
"""
from __future__ import annotations

import errno
import hashlib
import threading

from pybpf.uapi import BPF_ANY, BPF_F_ACCESS_MASK, BPF_F_NUMA_NODE, BPF_F_ZERO_SEED
from .base import HEADER_SIZE, Map, Memory, check, fail

BLOOM_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_ZERO_SEED | BPF_F_ACCESS_MASK
DEFAULT_NR_HASH_FUNCS = 5
U32_MAX = 0xFFFFFFFF


class BloomFilterMap(Map):
    """``m.push(value)`` adds, ``value in m`` tests (bytes, or what ``value_type`` encodes)."""

    type = "bloom_filter"

    def _setup(self) -> None:
        # bloom_map_alloc's checks
        check(not self.key_size and self.value_size and self.max_entries and
              not self.flags & ~BLOOM_CREATE_FLAG_MASK and not self.map_extra & ~0xF,
              errno.EINVAL, "bloom_filter needs key_size 0, value_size > 0, max_entries > 0, "
              "known flags and map_extra < 16 (the number of hash functions)")
        self.nr_hash_funcs = (self.map_extra & 0xF) or DEFAULT_NR_HASH_FUNCS
        nr_bits = self.max_entries * self.nr_hash_funcs // 5 * 7
        if self.max_entries * self.nr_hash_funcs > U32_MAX or nr_bits > 1 << 31:
            self.bitset_mask = U32_MAX
        else:
            nr_bits = 64 if nr_bits <= 64 else 1 << (nr_bits - 1).bit_length()
            self.bitset_mask = nr_bits - 1
        self._mem = Memory(HEADER_SIZE + (self.bitset_mask + 1 + 7) // 8)
        self._place_header(self._mem)
        self._bits = self._mem.view[HEADER_SIZE:]
        self.header.data = self._mem.address + HEADER_SIZE
        self._lock = threading.Lock()

    def _positions(self, value: bytes) -> list[int]:
        out = []
        for i in range(self.nr_hash_funcs):
            h = hashlib.blake2b(value, digest_size=4, salt=i.to_bytes(16, "little")).digest()
            out.append(int.from_bytes(h, "little") & self.bitset_mask)
        return out

    # -- the BPF face ------------------------------------------------------------------------
    def map_push_elem(self, value: bytes, flags: int) -> int:
        if flags != BPF_ANY:
            return -errno.EINVAL
        with self._lock:
            for b in self._positions(value):
                self._bits[b >> 3] |= 1 << (b & 7)
        return 0

    def map_peek_value(self, value: bytes) -> int:
        """0 when ``value`` may be in the filter, -ENOENT when it is not (peek reads its
        argument instead of filling it: map_helpers checks ``peek_reads_value``)."""
        return 0 if all(self._bits[b >> 3] & (1 << (b & 7)) for b in self._positions(value)) \
            else -errno.ENOENT

    peek_reads_value = True

    def map_pop_elem(self) -> int:
        return -errno.EOPNOTSUPP

    def map_peek_elem(self) -> int:
        return -errno.EINVAL

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        return -errno.EINVAL      # BPF map_update_elem; user space pushes (sys_update)

    def map_delete_elem(self, key: bytes) -> int:
        return -errno.EOPNOTSUPP

    # -- syscall / Python faces ----------------------------------------------------------------
    def _raw_keys(self) -> list[bytes]:
        return []

    def sys_update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._sys_check(True)
        check(len(value) == self.value_size, errno.EINVAL,
              f"value is {len(value)} bytes, expected {self.value_size}")
        err = self.map_push_elem(bytes(value), flags)
        check(err == 0, -err, "bloom_filter updates take BPF_ANY only")

    def sys_lookup(self, key: bytes | None = None, value: bytes | None = None) -> bytes:
        """BPF_MAP_LOOKUP_ELEM with the value to test: returns it, or MapKeyError (ENOENT)."""
        self._sys_check(False)
        check(value is not None and len(value) == self.value_size, errno.EINVAL,
              "a bloom_filter lookup needs the value to test")
        if self.map_peek_value(bytes(value)):
            raise fail("value not in the bloom filter", errno.ENOENT)
        return bytes(value)

    def sys_delete(self, key: bytes) -> None:
        raise fail("bloom_filter elements cannot be deleted", errno.EOPNOTSUPP)

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        raise fail("bloom_filter has no keys", errno.EOPNOTSUPP)

    def push(self, value) -> None:
        self.sys_update(b"", self._encode_value(value))

    def __contains__(self, value) -> bool:
        return self.map_peek_value(self._encode_value(value)) == 0

    def __len__(self) -> int:
        return 0

    def regions(self) -> list[tuple[int, int, bool]]:
        return []
