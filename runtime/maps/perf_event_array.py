"""BPF_MAP_TYPE_PERF_EVENT_ARRAY with a Python consumer (kernel/bpf/arraymap.c, bpf_trace.c).

In the kernel each slot holds a perf event (``perf_event_open`` with ``PERF_COUNT_SW_BPF_OUTPUT``
on one CPU, its fd stored by user space) whose mmap'd ring receives ``bpf_perf_event_output``
samples. Here :meth:`PerfEventArray.open` puts a :class:`PerfBuffer` (``pages`` pages of ring,
bound to one CPU) in a slot, and :meth:`PerfEventArray.consume` (or iterating the map) reads
``(cpu, data)`` records in order, as libbpf's ``perf_buffer__poll`` calls its sample callback:
``data`` is the raw sample as the kernel stores it, padded with zeros so that the 4-byte size
and the data end on 8 bytes (libbpf hands the same padded size to its callback).
``lost(cpu)`` counts samples that found the ring full (PERF_RECORD_LOST).

``bpf_perf_event_output(ctx, map, flags, data, size)`` (the tracing variant's rules, for every
program type): flags other than the index bits are -EINVAL; the index is
``flags & BPF_F_INDEX_MASK`` or the current CPU for ``BPF_F_CURRENT_CPU``; an index past
``max_entries`` is -E2BIG, an empty slot -ENOENT, a buffer bound to another CPU -EOPNOTSUPP,
a full ring -ENOSPC. The skb and xdp variants (packet program types,
:mod:`..helpers_control`) take ``BPF_F_CTXLEN_MASK`` too: that many packet bytes follow the
data in the sample (-EFAULT past the packet). From user space, lookups are ENOTSUPP as in the
kernel; keys walk like an array's.
"""
from __future__ import annotations

import collections
import errno
import threading

from pybpf.uapi import BPF_F_ACCESS_MASK, BPF_F_NUMA_NODE, BPF_F_PRESERVE_ELEMS, ENOTSUPP

from .base import PAGE_SIZE, Map, Memory, check, fail, round_up

BPF_F_INDEX_MASK = 0xFFFFFFFF
BPF_F_CURRENT_CPU = BPF_F_INDEX_MASK
BPF_F_CTXLEN_MASK = 0xFFFFF << 32
PERF_HEADER = 8 + 4          # struct perf_event_header + the raw sample's u32 size


class PerfBuffer:
    """One CPU's sample ring: ``pages`` data pages, records kept in order until consumed."""

    def __init__(self, cpu: int, pages: int = 8) -> None:
        check(isinstance(pages, int) and pages > 0 and not pages & (pages - 1), errno.EINVAL,
              "perf buffer pages must be a power of two")
        self.cpu, self.size = cpu, pages * PAGE_SIZE
        self.used = 0
        self.lost = 0
        self._records: collections.deque = collections.deque()

    def write(self, data: bytes) -> int:
        raw = round_up(len(data) + 4, 8) - 4             # perf_prepare_sample's padding
        need = PERF_HEADER + raw
        if self.used + need > self.size:
            self.lost += 1
            return -errno.ENOSPC
        self._records.append(bytes(data) + bytes(raw - len(data)))
        self.used += need
        return 0

    def take(self) -> list[bytes]:
        out = list(self._records)
        self._records.clear()
        self.used = 0
        return out


class PerfEventArray(Map):
    """Slots of perf buffers; ``open(index)`` attaches one, ``consume()`` reads them."""

    type = "perf_event_array"
    key_default = int

    def _setup(self) -> None:
        # array_map_alloc_check + perf_event_array's fd rules
        ks, vs, n, flags = self.key_size, self.value_size, self.max_entries, self.flags
        check(n and ks == 4 and vs == 4 and not flags & ~(
            BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK | BPF_F_PRESERVE_ELEMS), errno.EINVAL,
              "perf_event_array needs key_size 4, value_size 4, max_entries > 0")
        self._mem = Memory(PAGE_SIZE)
        self._place_header(self._mem)
        self._slots: dict[int, PerfBuffer] = {}
        self._lock = threading.Lock()

    # -- user space ----------------------------------------------------------------------------
    def open(self, index: int, cpu: int | None = None, pages: int = 8) -> PerfBuffer:
        """Attach a buffer at ``index`` bound to ``cpu`` (default: the index, as libbpf's
        perf_buffer puts CPU i's event at slot i); replaces the slot's buffer."""
        check(0 <= index < self.max_entries, errno.E2BIG, f"index {index} out of range")
        buf = PerfBuffer(index if cpu is None else cpu, pages)
        with self._lock:
            self._slots[index] = buf
        return buf

    def close_slot(self, index: int) -> None:
        with self._lock:
            self._slots.pop(index, None)

    def consume(self) -> list[tuple[int, bytes]]:
        """Every record available now, slot by slot, as (cpu, data)."""
        out = []
        with self._lock:
            for index in sorted(self._slots):
                buf = self._slots[index]
                out += [(buf.cpu, data) for data in buf.take()]
        return out

    def __iter__(self):
        return iter(self.consume())

    def lost(self, index: int) -> int:
        buf = self._slots.get(index)
        return buf.lost if buf is not None else 0

    # -- BPF face --------------------------------------------------------------------------------
    def map_perf_output(self, flags: int, data: bytes, cpu: int = 0) -> int:
        if flags & ~BPF_F_INDEX_MASK:
            return -errno.EINVAL
        index = cpu if flags == BPF_F_CURRENT_CPU else flags & BPF_F_INDEX_MASK
        if index >= self.max_entries:
            return -errno.E2BIG
        with self._lock:
            buf = self._slots.get(index)
            if buf is None:
                return -errno.ENOENT
            if buf.cpu != cpu:
                return -errno.EOPNOTSUPP
            return buf.write(data)

    # -- the syscall face ------------------------------------------------------------------------
    def _raw_keys(self) -> list[bytes]:
        return [i.to_bytes(4, "little") for i in range(self.max_entries)]

    def sys_lookup(self, key: bytes) -> bytes:
        raise fail("perf_event_array lookups are not supported", ENOTSUPP)

    def sys_update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        raise fail("perf_event_array values are perf event fds: use open(index)", errno.EINVAL)

    def sys_delete(self, key: bytes) -> None:
        self._sys_check(True)
        self.close_slot(int.from_bytes(self._key(key), "little"))

    def lookup(self, key):
        return self.sys_lookup(b"")

    def update(self, key, value, flags: int = 0) -> None:
        self.sys_update(b"", b"", flags)

    __getitem__ = lookup

    def __len__(self) -> int:
        return len(self._slots)

    def dump(self) -> str:
        return "".join(f"slot {i}: cpu {b.cpu}, {len(b._records)} records, {b.lost} lost\n"
                       for i, b in sorted(self._slots.items())) or "no perf buffers\n"


