"""A perf event ring the running kernel's bpf_perf_event_output writes into, for tests that
compare pybpf's PerfEventArray records with the kernel's: a PERF_COUNT_SW_BPF_OUTPUT event on
CPU 0 (the calling thread is pinned there while a test run executes, so BPF_F_CURRENT_CPU is
slot 0), its fd stored in a perf_event_array slot, its mmap'd ring read as libbpf's perf_buffer
reads it: each PERF_RECORD_SAMPLE's raw data (padded as the kernel pads it)."""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import struct

import kernel_bpf

NR_PERF_EVENT_OPEN = 298            # x86-64
PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT = 1, 10
PERF_SAMPLE_RAW = 1 << 10
PERF_RECORD_SAMPLE = 9
PERF_FLAG_FD_CLOEXEC = 1 << 3
PAGES = 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class PerfRing:
    """One BPF_OUTPUT perf event on CPU 0 with its ring mapped."""

    def __init__(self) -> None:
        attr = bytearray(128)
        struct.pack_into("<IIQQQ", attr, 0, PERF_TYPE_SOFTWARE, len(attr),
                         PERF_COUNT_SW_BPF_OUTPUT, 1, PERF_SAMPLE_RAW)
        struct.pack_into("<I", attr, 48, 1)                     # wakeup_events
        buf = ctypes.create_string_buffer(bytes(attr), len(attr))
        fd = _libc.syscall(NR_PERF_EVENT_OPEN, buf, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "perf_event_open")
        self.fd = fd
        self.ring = mmap.mmap(fd, (1 + PAGES) * mmap.PAGESIZE, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)

    def store_in(self, map_fd: int, index: int = 0) -> None:
        kernel_bpf.update(map_fd, struct.pack("<I", index), struct.pack("<I", self.fd))

    def records(self) -> list[bytes]:
        """Every sample written since the last call, as raw data."""
        page, size = mmap.PAGESIZE, PAGES * mmap.PAGESIZE
        head, tail = struct.unpack_from("<QQ", self.ring, 1024)
        out = []
        while tail < head:
            at = page + tail % size
            rtype, _, rsize = struct.unpack_from("<IHH", self.ring, at)
            rec = bytes(self.ring[page:][(tail % size):(tail % size) + rsize]) \
                if tail % size + rsize <= size else \
                bytes(self.ring[at:page + size]) + bytes(self.ring[page:page + (tail + rsize) % size])
            if rtype == PERF_RECORD_SAMPLE:
                n = struct.unpack_from("<I", rec, 8)[0]
                out.append(rec[12:12 + n])
            tail += rsize
        struct.pack_into("<Q", self.ring, 1032, tail)           # data_tail
        return out

    def close(self) -> None:
        self.ring.close()
        os.close(self.fd)


@contextlib.contextmanager
def on_cpu0():
    """Run the body pinned to CPU 0 (a test run executes on the caller's CPU)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)
