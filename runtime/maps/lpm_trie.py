"""BPF_MAP_TYPE_LPM_TRIE: longest-prefix-match lookups (kernel/bpf/lpm_trie.c).

A key is ``struct bpf_lpm_trie_key_u8``: a host-order u32 ``prefixlen`` then ``key_size - 4``
data bytes compared bit by bit from the first byte's most significant bit (network order, as
for IP addresses). An element is a prefix: ``(prefixlen, data)``, where only the first
``prefixlen`` bits of ``data`` count; the data bytes are kept as given (the kernel copies the
whole key into its node, and get_next_key returns it so).

* lookup (BPF and syscall) of ``(plen, data)``: the value of the longest stored prefix of at most
  ``plen`` bits that ``data`` starts with (NULL / ENOENT when none).
* update: ``prefixlen > 8 * data size`` -> -EINVAL; flags above BPF_EXIST -> -EINVAL; the same
  prefix (same length, same leading bits) replaces the element (BPF_NOEXIST: -EEXIST), a new one
  needs BPF_EXIST not set (-ENOENT) and a free entry (-ENOSPC when ``max_entries`` are stored).
* delete: the exact prefix, else -ENOENT.
* creation needs BPF_F_NO_PREALLOC, key_size 5..260 and value_size >= 1 (-EINVAL otherwise).

Values live at fixed addresses in one preallocated slab (``max_entries`` slots of
``round_up(value_size, 8)``), so a pointer a program got from a lookup stays valid.
"""
from __future__ import annotations

import ctypes
import errno
import threading

from pybpf.uapi import (BPF_EXIST, BPF_F_ACCESS_MASK, BPF_F_NO_PREALLOC, BPF_F_NUMA_NODE,
                        BPF_NOEXIST)
from .base import HEADER_SIZE, KMALLOC_MAX_SIZE, Map, Memory, check, round_up

LPM_CREATE_FLAG_MASK = BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK
LPM_DATA_SIZE_MAX, LPM_KEY_SIZE_MIN = 256, 5
LPM_NODE_SIZE = 32          # about sizeof(struct lpm_trie_node), part of the value size bound


class LpmTrieMap(Map):
    """Prefix -> value; ``m.lookup(key)`` is the longest-prefix match, as in BPF."""

    type = "lpm_trie"

    def _setup(self) -> None:
        # trie_alloc's checks
        ks, vs, flags = self.key_size, self.value_size, self.flags
        check(self.max_entries and flags & BPF_F_NO_PREALLOC and
              not flags & ~LPM_CREATE_FLAG_MASK and
              LPM_KEY_SIZE_MIN <= ks <= 4 + LPM_DATA_SIZE_MAX and
              1 <= vs <= KMALLOC_MAX_SIZE - LPM_DATA_SIZE_MAX - LPM_NODE_SIZE, errno.EINVAL,
              "lpm_trie needs max_entries > 0, BPF_F_NO_PREALLOC, key_size 5..260 "
              "(u32 prefixlen + data) and value_size > 0")
        self.data_size = ks - 4
        self.max_prefixlen = 8 * self.data_size
        self.stride = round_up(vs, 8)
        self._mem = Memory(HEADER_SIZE + self.max_entries * self.stride)
        self._place_header(self._mem)
        self.data_address = self._mem.address + HEADER_SIZE
        self.header.data, self.header.elem_size = self.data_address, self.stride
        self._nodes: dict[bytes, tuple[int, bytes]] = {}     # masked key -> (slot, key as given)
        self._free = list(range(self.max_entries - 1, -1, -1))
        self._lock = threading.Lock()

    # -- prefixes ----------------------------------------------------------------------------
    def _split(self, key: bytes) -> tuple[int, int]:
        """(prefixlen, data as a big-endian integer)."""
        return int.from_bytes(key[:4], "little"), int.from_bytes(key[4:], "big")

    def _masked(self, plen: int, data: int) -> bytes:
        shift = self.max_prefixlen - plen
        return plen.to_bytes(4, "little") + ((data >> shift) << shift).to_bytes(
            self.data_size, "big")

    def _slot_address(self, slot: int) -> int:
        return self.data_address + slot * self.stride

    def _match(self, key: bytes) -> int | None:
        """The slot of the longest prefix matching ``key``."""
        plen, data = self._split(key)
        for n in range(min(plen, self.max_prefixlen), -1, -1):
            node = self._nodes.get(self._masked(n, data))
            if node is not None:
                return node[0]
        return None

    # -- the BPF face ------------------------------------------------------------------------
    def _value_base(self, key: bytes) -> int:
        slot = self._match(key)
        return 0 if slot is None else self._slot_address(slot)

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        plen, data = self._split(key)
        if flags > BPF_EXIST or plen > self.max_prefixlen:
            return -errno.EINVAL
        masked = self._masked(plen, data)
        with self._lock:
            node = self._nodes.get(masked)
            if node is not None:
                if flags == BPF_NOEXIST:
                    return -errno.EEXIST
                slot = node[0]
            else:
                if flags == BPF_EXIST:
                    return -errno.ENOENT
                if not self._free:
                    return -errno.ENOSPC
                slot = self._free.pop()
            addr = self._slot_address(slot)
            ctypes.memmove(addr, value, self.value_size)
            ctypes.memset(addr + self.value_size, 0, self.stride - self.value_size)
            self._nodes[masked] = (slot, bytes(key))
        return 0

    def map_delete_elem(self, key: bytes) -> int:
        plen, data = self._split(key)
        if plen > self.max_prefixlen:
            return -errno.EINVAL
        with self._lock:
            node = self._nodes.pop(self._masked(plen, data), None)
            if node is None:
                return -errno.ENOENT
            self._free.append(node[0])
        return 0

    def regions(self) -> list[tuple[int, int, bool]]:
        return [(self.data_address, self.max_entries * self.stride, True)]

    # -- syscall / Python faces ----------------------------------------------------------------
    def _raw_keys(self) -> list[bytes]:
        # the kernel walks the trie post-order (longest prefixes first); any fixed order will do
        nodes = sorted(self._nodes.items(), key=lambda kv: (-int.from_bytes(kv[0][:4], "little"),
                                                            kv[0][4:]))
        return [raw for _, (_, raw) in nodes]

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        # the kernel finds the given key by its exact prefix, not by its raw bytes
        self._sys_check(False)
        keys = self._raw_keys()
        i = 0
        if key is not None and len(key) == self.key_size:
            plen, data = self._split(key)
            masked = [self._masked(*self._split(k)) for k in keys]
            if plen <= self.max_prefixlen and self._masked(plen, data) in masked:
                i = masked.index(self._masked(plen, data)) + 1
        check(i < len(keys), errno.ENOENT, "no next key")
        return keys[i]

    def __len__(self) -> int:
        return len(self._nodes)

    def clear(self) -> None:
        for k in self._raw_keys():
            self.map_delete_elem(k)
