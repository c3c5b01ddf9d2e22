"""BPF_MAP_TYPE_RINGBUF: the multi-producer, single-consumer byte ring of kernel/bpf/ringbuf.c.

``max_entries`` is the data size in bytes: a power of two and a multiple of the page size, key
and value sizes 0. The layout mirrors the kernel's ``struct bpf_ringbuf`` so that record headers
carry the same ``pg_off``: page 0 holds the :class:`MapHeader` (``map.address``), page 1 the
consumer position, page 2 the producer and pending positions, then the data pages, mapped twice
back to back (one memfd, two shared mappings) so a record that wraps around the end is still
contiguous in memory, exactly like the kernel's double mapping.

Each record is an 8-byte header (u32 length with BUSY (1<<31) and DISCARD (1<<30) bits, u32
``pg_off`` = pages from the ring's start to the header) followed by the sample, padded to 8 bytes.
From BPF: :meth:`reserve` (NULL when the record does not fit: more than ``size - 1`` bytes ahead
of the consumer or of the oldest uncommitted record), :meth:`commit` (submit or discard),
:meth:`output` (-EAGAIN when full, -EINVAL for unknown flags) and :meth:`query`. ``wakeups``
counts the notifications the kernel would send (``BPF_RB_NO_WAKEUP``/``BPF_RB_FORCE_WAKEUP``).
From Python, ``for rec in rb`` and ``rb.consume()`` read committed records as bytes in order,
skipping discarded ones and stopping at the first record still being written, as libbpf does.
"""
from __future__ import annotations

import collections
import ctypes
import errno
import os
import struct
import threading
import weakref

from pybpf.uapi import (BPF_F_NUMA_NODE, BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP,
                        BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS, BPF_RB_RING_SIZE, BPF_RINGBUF_BUSY_BIT,
                        BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ, ENOTSUPP)
from .base import (MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PAGE_SHIFT,
                   PAGE_SIZE, PROT_READ, PROT_WRITE, Map, MapHeader, check, fail, round_up,
                   sys_mmap, sys_munmap)

RINGBUF_MAX_RECORD_SZ = 0xFFFFFFFF // 4
RINGBUF_PGOFF = 1                       # consumer page; producer page follows; then data
DATA_PGOFF = 3
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HDR = struct.Struct("<II")
# sample address -> the ring that reserved it, for every outstanding reservation of any ring
_OUTSTANDING: "weakref.WeakValueDictionary[int, RingBuf]" = weakref.WeakValueDictionary()


class RingBuf(Map):
    """A BPF ring buffer; iterate it (or ``consume()``) to read records."""

    type = "ringbuf"

    def _setup(self) -> None:
        n = self.max_entries
        # ringbuf_map_alloc
        check(not self.flags & ~BPF_F_NUMA_NODE, errno.EINVAL, f"unknown flags 0x{self.flags:x}")
        check(not self.key_size and not self.value_size and n and not n & (n - 1) and
              n % PAGE_SIZE == 0, errno.EINVAL,
              "ringbuf needs key_size 0, value_size 0 and a power-of-2, page-multiple size")
        self.size, self.mask = n, n - 1
        total = DATA_PGOFF * PAGE_SIZE + 2 * n
        base = sys_mmap(None, total, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        self._finalizer = weakref.finalize(self, sys_munmap, base, total)
        self.data_address = base + DATA_PGOFF * PAGE_SIZE
        memfd = os.memfd_create("pybpf-ringbuf", os.MFD_CLOEXEC)
        try:
            os.ftruncate(memfd, n)
            for copy in (0, n):       # the data pages twice, so records never wrap in memory
                sys_mmap(self.data_address + copy, n, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_FIXED, memfd, 0)
        finally:
            os.close(memfd)
        self._view = memoryview((ctypes.c_ubyte * total).from_address(base)).cast("B")
        self._data_off = DATA_PGOFF * PAGE_SIZE
        self._cons_off = RINGBUF_PGOFF * PAGE_SIZE
        self._prod_off = self._cons_off + PAGE_SIZE
        self._pend_off = self._prod_off + 8
        self.header = MapHeader.from_address(base)
        self.address = base
        self.header.data, self.header.index = self.data_address, base + self._cons_off
        self._lock = threading.Lock()
        self.wakeups = 0
        # The ring's own books, outside memory BPF can write: sample address -> (position,
        # size) of each outstanding reservation (what a program may touch and submit), and
        # position -> size of every record not consumed yet (what a header must say).
        self._busy: dict[int, tuple[int, int]] = {}
        self._sizes: dict[int, int] = {}
        self._order: collections.deque = collections.deque()     # the keys of _sizes, in order

    # -- positions -------------------------------------------------------------------------------
    def _get(self, off: int) -> int:
        return _U64.unpack_from(self._view, off)[0]

    def _set(self, off: int, value: int) -> None:
        _U64.pack_into(self._view, off, value)

    @property
    def consumer_pos(self) -> int:
        return self._get(self._cons_off)

    @property
    def producer_pos(self) -> int:
        return self._get(self._prod_off)

    @property
    def avail_data(self) -> int:
        return self.producer_pos - self.consumer_pos

    # -- the BPF side (bpf_ringbuf_reserve/submit/discard/output/query) --------------------------
    def reserve(self, size: int) -> int:
        """Address of a new ``size``-byte sample (header marked BUSY), or 0 when it cannot fit."""
        if size > RINGBUF_MAX_RECORD_SZ:
            return 0
        length = round_up(size + BPF_RINGBUF_HDR_SZ, 8)
        if length > self.size:
            return 0
        view, data = self._view, self._data_off
        with self._lock:
            cons = self.consumer_pos
            pend, prod = self._get(self._pend_off), self.producer_pos
            while pend < prod:      # skip records committed since the last reserve
                hdr_len = _U32.unpack_from(view, data + (pend & self.mask))[0]
                if hdr_len & BPF_RINGBUF_BUSY_BIT:
                    break
                # the size from the ring's books: a header in shared memory may be forged
                pend += round_up(self._record_size(pend, hdr_len) + BPF_RINGBUF_HDR_SZ, 8)
            self._set(self._pend_off, pend)
            low = min(pend, cons)      # records behind both the consumer and pend are done
            while self._order and self._order[0] < low:
                del self._sizes[self._order.popleft()]
            new_prod = prod + length
            if new_prod - cons > self.mask or new_prod - pend > self.mask:
                return 0
            hdr = data + (prod & self.mask)
            _HDR.pack_into(view, hdr, size | BPF_RINGBUF_BUSY_BIT, hdr >> PAGE_SHIFT)
            sample = self.address + hdr + BPF_RINGBUF_HDR_SZ
            self._busy[sample] = (prod, size)
            _OUTSTANDING[sample] = self
            self._sizes[prod] = size
            self._order.append(prod)
            self._set(self._prod_off, new_prod)
        return sample

    def _record_size(self, pos: int, hdr_len: int) -> int:
        """The size of the record at ``pos``, checked against the header read from memory."""
        size = self._sizes.get(pos)
        if size is None or hdr_len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT) != size:
            raise fail(f"ringbuf record at position {pos}: corrupt header 0x{hdr_len:08x} "
                       f"(reserved {size} bytes)", errno.EFAULT)
        return size

    def holds_sample(self, address: int, size: int) -> bool:
        """Whether [address, address + size) lies in one outstanding reservation (the only
        ring memory a program may touch)."""
        for sample, (_, length) in list(self._busy.items()):
            if sample <= address and address + size <= sample + length:
                return True
        return False

    def region_rule(self) -> dict:
        return {"allow": self.holds_sample}

    def commit(self, sample: int, flags: int = 0, discard: bool = False) -> None:
        """bpf_ringbuf_submit (``discard`` False) or bpf_ringbuf_discard of a reserved sample.

        MapError (EINVAL) unless ``sample`` is an outstanding reservation of this ring (the
        kernel's verifier guarantees that; here the run time checks it)."""
        with self._lock:
            if self._busy.pop(sample, None) is None:
                raise fail(f"0x{sample:x} is not an outstanding reservation of this ring "
                           f"buffer", errno.EINVAL)
            if _OUTSTANDING.get(sample) is self:
                del _OUTSTANDING[sample]
        hdr = sample - BPF_RINGBUF_HDR_SZ - self.address
        new_len = _U32.unpack_from(self._view, hdr)[0] & ~BPF_RINGBUF_BUSY_BIT
        if discard:
            new_len |= BPF_RINGBUF_DISCARD_BIT
        _U32.pack_into(self._view, hdr, new_len)
        rec_pos = hdr - self._data_off
        if flags & BPF_RB_FORCE_WAKEUP or (
                self.consumer_pos & self.mask == rec_pos and not flags & BPF_RB_NO_WAKEUP):
            self.wakeups += 1

    def output(self, data: bytes, flags: int = 0) -> int:
        """bpf_ringbuf_output: 0, -EINVAL for unknown flags, -EAGAIN when full."""
        if flags & ~(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP):
            return -errno.EINVAL
        sample = self.reserve(len(data))
        if not sample:
            return -errno.EAGAIN
        ctypes.memmove(sample, bytes(data), len(data))
        self.commit(sample, flags)
        return 0

    def query(self, flags: int) -> int:
        """bpf_ringbuf_query: available bytes, ring size, consumer or producer position; else 0."""
        return {BPF_RB_AVAIL_DATA: self.avail_data, BPF_RB_RING_SIZE: self.size,
                BPF_RB_CONS_POS: self.consumer_pos,
                BPF_RB_PROD_POS: self.producer_pos}.get(flags, 0)

    @staticmethod
    def ring_of_sample(sample: int) -> int:
        """The ring's address (``map.address``) holding sample pointer ``sample``, or 0.

        The kernel follows the header's pg_off; a pointer a program made up must not be
        dereferenced, so the ring comes from the books of outstanding reservations."""
        ring = _OUTSTANDING.get(sample)
        return ring.address if ring is not None and sample in ring._busy else 0

    def regions(self) -> list[tuple[int, int, bool]]:
        return [(self.data_address, 2 * self.size, True)]

    # -- the consumer (user space) ----------------------------------------------------------------
    def __iter__(self):
        """Committed records in order as bytes, consumed as they are yielded."""
        view, data = self._view, self._data_off
        cons = self.consumer_pos
        while True:
            prod, progressed = self.producer_pos, False
            while cons < prod:
                hdr_len = _U32.unpack_from(view, data + (cons & self.mask))[0]
                if hdr_len & BPF_RINGBUF_BUSY_BIT:
                    return                   # not committed yet: stop, as libbpf does
                progressed = True
                # the header is shared memory: its length must be what was reserved there
                size = self._record_size(cons, hdr_len)
                start = data + (cons & self.mask) + BPF_RINGBUF_HDR_SZ
                cons += round_up(size + BPF_RINGBUF_HDR_SZ, 8)
                record = None if hdr_len & BPF_RINGBUF_DISCARD_BIT else bytes(
                    view[start:start + size])
                self._set(self._cons_off, cons)
                if record is not None:
                    yield record
            if not progressed:
                return

    def consume(self) -> list[bytes]:
        """Every committed record available now (consumed)."""
        return list(self)

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        return -ENOTSUPP

    def map_delete_elem(self, key: bytes) -> int:
        return -ENOTSUPP

    # -- no keys ----------------------------------------------------------------------------------
    def sys_lookup(self, key: bytes) -> bytes:
        raise fail("ringbuf has no elements", errno.EINVAL)

    def sys_update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        raise fail("ringbuf has no elements", errno.EINVAL)

    def sys_delete(self, key: bytes) -> None:
        raise fail("ringbuf has no elements", errno.EINVAL)

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        raise fail("ringbuf has no keys", ENOTSUPP)

    def _raw_keys(self) -> list[bytes]:
        raise fail("ringbuf has no keys", ENOTSUPP)

    def lookup(self, key):
        return self.sys_lookup(b"")

    def update(self, key, value, flags: int = 0) -> None:
        self.sys_update(b"", b"", flags)

    def delete(self, key) -> None:
        self.sys_delete(b"")

    __getitem__, __delitem__ = lookup, delete

    def __len__(self) -> int:
        return self.avail_data

    def dump(self) -> str:
        return (f"ringbuf size {self.size}  consumer_pos {self.consumer_pos}  "
                f"producer_pos {self.producer_pos}  avail {self.avail_data}\n")
