"""BPF_MAP_TYPE_HASH and LRU_HASH, the base of the percpu hashes too (kernel/bpf/hashtab.c).

Storage is preallocated like the kernel's default (prealloc) hash: ``max_entries`` elements in one
mapping, a free list, and chains hanging off ``n_buckets`` (``max_entries`` rounded up to a power
of two) u32 bucket heads, so native code can look keys up without calling back into Python:

* bucket ``b`` (``index + 4*b``) holds ``slot + 1`` of the first element of its chain, or the
  chain's end marker ``NULLS | b``; ``b = jhash(key, hashrnd) & index_mask``, the kernel's
  ``htab_map_hash`` (:mod:`.jhash`) with the seed 0, as BPF_F_ZERO_SEED gives (pybpf seeds
  every hash map so: the kernel seeds the others at random);
* element ``slot`` at ``data + slot * elem_size``: u32 next (slot + 1, or the end marker
  ``NULLS | bucket``), u32 hash, u8 in_use, u8 ref (LRU reference bit), 10 bytes padding, the
  key padded to 8 bytes, then the value (``n_cpus`` values of ``round_up(value_size, 8)`` for
  percpu maps).

Concurrency, as the kernel's RCU hash (hlist_nulls): native readers (JIT code, holding no GIL)
walk chains while Python threads change them under the map's lock. Every change writes an
element before linking it; an update of a present key fills a spare element and links it
ahead of the old one before unlinking that (a reader sees the old or the new value, never no
value); a freed element is reused only after a grace period (runtime/grace.py: every run that
might hold it has ended, as the kernel frees RCU-protected elements), oldest first, so a
concurrent lookup never sees an element turn into another key's; and a reader whose element
was relinked meanwhile ends on another chain's marker, sees it is not its bucket's and starts
again (the kernel's ``get_nulls_value`` check). ``SPARES`` elements beyond ``max_entries``
cover the grace periods. A Python caller waits for one when every spare is still in its grace
period; a program run cannot wait (two runs waiting for each other never end), so its update
fails with -ENOMEM then, as the kernel's non-preallocated hash does when it cannot allocate.

Order: as the kernel's hlist_nulls, a new element (also the new element of an updated key) goes
to the head of its bucket's chain, and a walk (``bpf_for_each_map_elem``, BPF_MAP_GET_NEXT_KEY,
the Python iteration) goes bucket after bucket, each chain from its head. With the kernel's
hash, seed and bucket count, that is the kernel's order for a BPF_F_ZERO_SEED map given the
same updates and deletions (tests/test_hash_order.py); for the others the kernel's seed is
random, and so is its order, where pybpf's is this fixed one. (LRU maps: the same order, but
which element an insert into a full map evicts differs from the kernel's per-CPU lists.)

Kernel rules: update flags BPF_ANY / BPF_NOEXIST (-EEXIST if present) / BPF_EXIST (-ENOENT if
absent), anything else -EINVAL; a new key when all ``max_entries`` are used gives -E2BIG;
delete of a missing key -ENOENT and deletion frees the slot. Updating an existing key swaps in
a spare element, as the kernel does (a BPF program holding the old pointer still sees the old
value); percpu maps rewrite the values in place, as the kernel does.

LRU: instead of failing with -E2BIG an insert into a full map evicts. As in the kernel, recency is
a reference bit set by lookups from BPF programs (native code sets the ``ref`` byte too), so the
order is approximate: elements sit in a list, oldest first; new and updated elements go to the
end with the bit clear; eviction takes the oldest element whose bit is clear, giving referenced
ones a second chance (clear the bit, move to the end). Lookups from user space do not count as
use (the kernel's ``lookup_elem_sys_only``).
"""
from __future__ import annotations

import collections
import ctypes
import errno
import struct
import threading

from pybpf.uapi import (BPF_EXIST, BPF_F_ACCESS_MASK, BPF_F_LOCK, BPF_F_NO_COMMON_LRU,
                        BPF_F_NO_PREALLOC, BPF_F_NUMA_NODE, BPF_F_RDONLY_PROG, BPF_F_ZERO_SEED,
                        BPF_NOEXIST, ENOTSUPP)
from .. import grace
from . import btf_fields
from .jhash import gen_jhash, jhash
from .base import HEADER_SIZE, KMALLOC_MAX_SIZE, PCPU_MIN_UNIT_SIZE, Map, Memory, check, round_up

HTAB_CREATE_FLAG_MASK = (BPF_F_NO_PREALLOC | BPF_F_NO_COMMON_LRU | BPF_F_NUMA_NODE |
                         BPF_F_ACCESS_MASK | BPF_F_ZERO_SEED)
HTAB_ELEM_SIZE = 48        # sizeof(struct htab_elem), part of the kernel's E2BIG bound
ELEM_HDR = 16              # next, hash, in_use, ref, padding
OFF_NEXT, OFF_HASH, OFF_IN_USE, OFF_REF = 0, 4, 8, 9
NULLS = 1 << 31            # a chain's end marker: NULLS | bucket index
SPARES = 16                # elements beyond max_entries (fewer for small maps) for grace periods
_U32 = struct.Struct("<I")
_ELEM = struct.Struct("<IIBB")
_ELEM_TAIL = struct.Struct("<IBB")      # hash, in_use, ref: what follows the next link


HASHRND = 0                # the seed of every map's hash (BPF_F_ZERO_SEED's)


class HashMap(Map):
    """BPF_MAP_TYPE_HASH: key bytes -> value slot; keys and values decode as bytes by default."""

    type = "hash"
    lru = False

    def _check_attrs(self) -> None:
        # htab_map_alloc_check, in the kernel's order.
        flags, ks, vs = self.flags, self.key_size, self.value_size
        check(not flags & ~HTAB_CREATE_FLAG_MASK, errno.EINVAL, f"unknown flags 0x{flags:x}")
        check(self.lru or not flags & BPF_F_NO_COMMON_LRU, errno.EINVAL,
              "BPF_F_NO_COMMON_LRU is for LRU maps")
        check(not (self.lru and flags & BPF_F_NO_PREALLOC), ENOTSUPP,
              "LRU maps are always preallocated")
        check(not (flags & BPF_F_NUMA_NODE and (self.percpu or flags & BPF_F_NO_COMMON_LRU)),
              errno.EINVAL, "percpu maps take no NUMA node")
        check(self.max_entries and ks and vs, errno.EINVAL,
              f"{self.type} needs key_size, value_size and max_entries > 0")
        check(ks + vs < KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE, errno.E2BIG,
              "key_size + value_size too large")
        check(self.max_entries < NULLS, errno.E2BIG, "max_entries too large")
        check(not self.percpu or round_up(vs, 8) <= PCPU_MIN_UNIT_SIZE, errno.E2BIG,
              f"percpu values are limited to {PCPU_MIN_UNIT_SIZE} bytes")

    def _setup(self) -> None:
        self._check_attrs()
        n = self.max_entries
        self.n_buckets = 1 << (n - 1).bit_length()
        self.value_off = ELEM_HDR + round_up(self.key_size, 8)
        self.stride = round_up(self.value_size, 8)
        self.elem_size = self.value_off + self.stride * self.n_cpus
        buckets_off = HEADER_SIZE
        elems_off = buckets_off + round_up(4 * self.n_buckets, 8)
        # spare elements: an update of a present key fills one before unlinking the old one,
        # and freed elements wait out their grace period before reuse
        self.n_elems = n + min(n, SPARES) + 1
        self._mem = Memory(elems_off + self.n_elems * self.elem_size)
        self._view = self._mem.view
        markers = struct.pack(f"<{self.n_buckets}I",
                              *(NULLS | b for b in range(self.n_buckets)))
        self._view[buckets_off:buckets_off + len(markers)] = markers
        self._place_header(self._mem)
        self._buckets = self._mem.address + buckets_off
        self._bucket_off = buckets_off
        self.elems_address = self._mem.address + elems_off
        self._elems_off = elems_off
        h = self.header
        h.data, h.index, h.index_mask = self.elems_address, self._buckets, self.n_buckets - 1
        h.elem_size = self.elem_size
        self._slots: dict[bytes, int] = {}           # key -> slot, in LRU order (oldest first)
        self._free = collections.deque(range(self.n_elems))  # oldest first: slot 0, 1, ...
        self._pending: collections.deque = collections.deque()  # (grace token, slot), oldest first
        self._lock = threading.RLock()                # every change to chains, slots, free list

    # -- element memory ---------------------------------------------------------------------
    def _elem_off(self, slot: int) -> int:
        return self._elems_off + slot * self.elem_size

    def _value_base(self, key: bytes) -> int:
        slot = self._slots.get(key)
        return 0 if slot is None else self.elems_address + slot * self.elem_size + self.value_off

    def _write_value(self, slot: int, value: bytes, onallcpus: bool, new: bool) -> None:
        base = self.elems_address + slot * self.elem_size + self.value_off
        if onallcpus:
            ctypes.memmove(base, value, self.stride * self.n_cpus)
        elif self.percpu:
            if new:   # the other CPUs of a new element start at zero (pcpu_init_value)
                ctypes.memset(base, 0, self.stride * self.n_cpus)
            ctypes.memmove(base + self.cpu * self.stride, value, self.value_size)
        else:
            ctypes.memmove(base, value, self.value_size)
            if new and self.stride > self.value_size:
                ctypes.memset(base + self.value_size, 0, self.stride - self.value_size)

    def _link(self, slot: int, key: bytes) -> None:
        h = jhash(key, HASHRND)
        off, view = self._elem_off(slot), self._view
        bucket = self._bucket_off + 4 * (h & (self.n_buckets - 1))
        padded = round_up(self.key_size, 8)
        view[off + ELEM_HDR:off + ELEM_HDR + padded] = key.ljust(padded, b"\0")
        _ELEM_TAIL.pack_into(view, off + OFF_HASH, h, 1, 0)
        self._store32(off + OFF_NEXT, _U32.unpack_from(view, bucket)[0])
        self._store32(bucket, slot + 1)               # publish last
        self._slots[key] = slot

    def _store32(self, off: int, value: int) -> None:
        # One 4-byte store: struct.pack_into zeroes its bytes before writing them, and a
        # native reader catching a link at 0 would follow it to slot -1, far outside the map.
        ctypes.c_uint32.from_address(self._mem.address + off).value = value

    def _unlink(self, key: bytes) -> None:
        self._unlink_slot(self._slots.pop(key))

    def _unlink_slot(self, slot: int) -> None:
        off, view = self._elem_off(slot), self._view
        nxt, h, _, _ = _ELEM.unpack_from(view, off)
        link = self._bucket_off + 4 * (h & (self.n_buckets - 1))
        steps = 0
        while (cur := _U32.unpack_from(view, link)[0]) != slot + 1:
            steps += 1
            check(not cur & NULLS and steps <= self.max_entries + 1, errno.EFAULT,
                  "hash chain corrupted (element headers were overwritten)")
            link = self._elem_off(cur - 1) + OFF_NEXT
        self._store32(link, nxt)
        view[off + OFF_IN_USE] = 0
        if btf_fields.has_fields(self):  # check_and_free_fields: lists, trees, kptrs it held go
            btf_fields.free_fields(self, self.elems_address + off - self._elems_off
                                   + self.value_off)
        self._pending.append((grace.retire(), slot))

    def _take(self) -> int | None:
        """A free element whose grace period is over, or None."""
        pending = self._pending
        if pending:
            h = grace.horizon()
            while pending and pending[0][0] <= h:
                self._free.append(pending.popleft()[1])
        return self._free.popleft() if self._free else None

    # -- the BPF face ---------------------------------------------------------------------------
    def map_lookup_elem(self, key: bytes) -> int:
        addr = Map.map_lookup_elem(self, key)
        if addr and self.lru:
            slot = self._slots.get(key)      # None if another thread deleted it meanwhile
            if slot is not None:
                self._view[self._elem_off(slot) + OFF_REF] = 1
        return addr

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        if flags & ~BPF_F_LOCK > BPF_EXIST or flags & BPF_F_LOCK and self.spin_lock_off < 0:
            return -errno.EINVAL          # unknown flags; BPF_F_LOCK needs a bpf_spin_lock (BTF)
        if self.spin_lock_off >= 0:
            if flags & BPF_F_LOCK and not self.percpu:
                base = self._value_base(key)
                if base and flags & ~BPF_F_LOCK == BPF_NOEXIST:
                    return -errno.EEXIST
                if base:        # an existing element is updated in place, under its lock
                    btf_fields.copy_value(self, base, value[:self.value_size], True)
                    return 0
                flags &= ~BPF_F_LOCK
            value = btf_fields.without_lock(self, value)    # a new element's lock is free
        if self.kptr_fields:
            value = btf_fields.without_kptrs(self, value)   # a new element's kptrs are NULL
        while True:
            with self._lock:
                err = self._update_locked(key, value, flags, onallcpus)
                if err is not None:
                    return err
                token = self._pending[0][0]
            # every element that is not in use is still in its grace period
            if grace.in_read_section() or not grace.wait(token):
                return -errno.ENOMEM

    def _update_locked(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int | None:
        """0 or -errno; None when no element is out of its grace period yet."""
        slot = self._slots.get(key)
        if slot is not None and flags == BPF_NOEXIST:
            return -errno.EEXIST
        if slot is None and flags == BPF_EXIST:
            return -errno.ENOENT
        if slot is not None and self.percpu:
            # per-cpu values are updated in place, all CPUs' from user space or this CPU's
            # (__htab_percpu_map_update_elem): the element keeps its place in its chain
            if self.kptr_fields:        # pcpu_copy_value: the copy's kptrs are kept, then freed
                btf_fields.copy_percpu(self, self.elems_address + slot * self.elem_size
                                       + self.value_off, value, onallcpus)
            else:
                self._write_value(slot, value, onallcpus, new=False)
            if self.lru:                # an update makes the element the most recent
                self._slots[key] = self._slots.pop(key)
                self._view[self._elem_off(slot) + OFF_REF] = 0
            return 0
        if slot is not None:
            # a spare element takes the new value and goes in ahead of the old one
            new = self._take()
            if new is None:
                return None
            self._write_value(new, value, onallcpus, new=True)
            self._link(new, key)        # _slots[key] moves to the new slot in one store
            if self.lru:                # an update makes the element the most recent
                self._slots[key] = self._slots.pop(key)
            self._unlink_slot(slot)
            return 0
        full = len(self._slots) >= self.max_entries
        if full and not self.lru:
            return -errno.E2BIG
        slot = self._take()
        if slot is None:
            return None
        if full:
            self._evict()
        self._write_value(slot, value, onallcpus, new=True)
        self._link(slot, key)
        return 0

    def map_delete_elem(self, key: bytes) -> int:
        with self._lock:
            if key not in self._slots:
                return -errno.ENOENT
            self._unlink(key)
            return 0

    def _evict(self) -> None:
        view = self._view
        while True:                         # second chance: at most len + 1 rounds
            key = next(iter(self._slots))
            ref = self._elem_off(self._slots[key]) + OFF_REF
            if not view[ref]:
                self._unlink(key)
                return
            view[ref] = 0
            self._slots[key] = self._slots.pop(key)

    def gen_lookup(self, ir, key):
        """Native lookup: hash the key, walk the bucket's chain as the layout above says, return
        the value's address (+ cpu * stride for percpu maps) or 0; LRU maps set ``ref`` as the
        kernel's lookup sets its reference bit."""
        b = ir.b
        I32, I64 = ir.I32, ir.I64
        hdr = self.header
        h = gen_jhash(ir, key, self.key_size, HASHRND)
        bidx = b.and_(h, ir.const(I32, hdr.index_mask))
        bucket = ir.index(ir.ext(hdr.index), bidx, 4)
        head = ir.block("htab.head")
        walk = ir.block("htab.walk")
        chk = ir.block("htab.check")
        end = ir.block("htab.end")
        found = ir.block("htab.found")
        done = ir.block("htab.done")
        b.branch(head)

        # hlist_nulls, as the kernel's RCU hash: a chain ends on NULLS | its bucket; ending on
        # another bucket's marker means an element was reused meanwhile: walk again from the head.
        b.position_at_end(head)
        first = ir.load_acquire(bucket, I32)        # re-read on each restart
        b.branch(walk)

        b.position_at_end(walk)
        slot = b.phi(I32, name="htab.slot")
        slot.add_incoming(first, head)
        b.cbranch(b.icmp_unsigned("!=", b.and_(slot, ir.const(I32, NULLS)), ir.const(I32, 0)),
                  end, chk)

        b.position_at_end(end)
        own = b.icmp_unsigned("==", slot, b.or_(bidx, ir.const(I32, NULLS)))
        # Elements are reused at once (no grace period): a walk that passed the head before an
        # update linked the key's new element there can miss it. The kernel's prealloc htab
        # lives with that; here a walk ending on its own marker while the head has changed
        # since it started walks again, so a key present throughout is never missed.
        again = ir.load_acquire(bucket, I32)
        settled = b.and_(own, b.icmp_unsigned("==", again, first))
        b.cbranch(settled, done, head)

        b.position_at_end(chk)
        elem = ir.index(ir.ext(hdr.data), b.sub(slot, ir.const(I32, 1)), hdr.elem_size)
        ehash = ir.load(ir.at(elem, OFF_HASH), I32)
        nxt = ir.load_acquire(ir.at(elem, OFF_NEXT), I32)
        slot.add_incoming(nxt, chk)
        same_hash = b.icmp_unsigned("==", ehash, h)
        keyed = ir.block("htab.key")
        b.cbranch(same_hash, keyed, walk)
        b.position_at_end(keyed)
        same = ir.bytes_equal(ir.at(elem, ELEM_HDR), key, self.key_size)
        slot.add_incoming(nxt, keyed)
        b.cbranch(same, found, walk)

        b.position_at_end(found)
        if self.lru:
            ir.store(ir.const(ir.I8, 1), ir.at(elem, OFF_REF))
        value = ir.at(elem, self.value_off)
        if self.percpu:
            value = b.add(value, self._gen_cpu_offset(ir))
        b.branch(done)

        b.position_at_end(done)
        r0 = b.phi(I64, name="htab.r0")
        r0.add_incoming(ir.const(I64, 0), end)
        r0.add_incoming(value, found)
        return r0

    def regions(self) -> list[tuple[int, int, bool]]:
        return [(self.elems_address, self.n_elems * self.elem_size,         # + the spares
                 not self.flags & BPF_F_RDONLY_PROG)]

    def region_rule(self) -> dict:
        # a value, never the element header (chain link, hash) or key around it
        span = self.stride * (self.n_cpus - 1) + self.value_size
        return {"stride": self.elem_size, "lo": self.value_off, "hi": self.value_off + span}

    # -- syscall / Python faces -----------------------------------------------------------------
    def sys_lookup(self, key: bytes) -> bytes:
        with grace.reading():           # the copy must not race a reuse of the element
            return Map.sys_lookup(self, key)

    def _raw_keys(self) -> list[bytes]:
        """The keys in the kernel's walk order: bucket by bucket, each chain from its head
        (only the non-empty buckets are visited: their numbers come from the elements' hashes)."""
        with self._lock:
            view, mask = self._view, self.n_buckets - 1
            key_of = {slot: key for key, slot in self._slots.items()}
            buckets = sorted({_U32.unpack_from(view, self._elem_off(slot) + OFF_HASH)[0] & mask
                              for slot in key_of})
            keys = []
            for bucket in buckets:
                cur = _U32.unpack_from(view, self._bucket_off + 4 * bucket)[0]
                while not cur & NULLS:
                    key = key_of.get(cur - 1)
                    check(key is not None and len(keys) < len(key_of), errno.EFAULT,
                          "hash chain corrupted (element headers were overwritten)")
                    keys.append(key)
                    cur = _U32.unpack_from(view, self._elem_off(cur - 1) + OFF_NEXT)[0]
            check(len(keys) == len(key_of), errno.EFAULT, "hash chain corrupted")
            return keys

    def __len__(self) -> int:
        return len(self._slots)

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        self._sys_check(False)
        keys = self._raw_keys()
        i = keys.index(key) + 1 if key is not None and key in self._slots else 0
        check(i < len(keys), errno.ENOENT, "no next key")
        return keys[i]


class LruHashMap(HashMap):
    """BPF_MAP_TYPE_LRU_HASH: a hash map that evicts instead of refusing inserts when full."""

    type = "lru_hash"
    lru = True
