"""One XDP run's packet buffer, laid out as BPF_PROG_TEST_RUN lays out its ``struct xdp_buff``.

The kernel's test run (``bpf_prog_test_run_xdp``, net/bpf/test_run.c) gives the program one page
(``frame_sz`` = 4096): ``XDP_PACKET_HEADROOM`` (256) bytes of headroom, the packet, and the
tail of the page, of which ``SKB_DATA_ALIGN(sizeof(struct skb_shared_info))`` (320 on x86-64)
is reserved: ``data_hard_end`` = hard start + 4096 - 320. The head may move down to the end of
the ``struct xdp_frame`` (40 bytes) the kernel keeps at the hard start, plus the metadata.
A packet longer than the linear part (3520 bytes, less with metadata; or the ``data_end`` a
``ctx_in`` gives) continues in fragments, one 4096-byte page each (at most MAX_SKB_FRAGS, 17),
as the test run builds a multi-buffer ``xdp_buff`` for every program (``xdp.frags`` ones or
not): the program's ``data``/``data_end`` cover the linear part only, ``bpf_xdp_get_buff_len``,
``bpf_xdp_load/store_bytes``, ``bpf_xdp_adjust_tail`` and XDP dynptrs reach the fragments
(:meth:`XdpBuff.pointer`, :meth:`XdpBuff.read`, :meth:`XdpBuff.write`), and ``data_out`` is the
linear part followed by every fragment.
The helpers that move ``data``, ``data_end`` and ``data_meta`` (:mod:`.helpers_xdp`) go
through :class:`XdpBuff`, which keeps three things in step: the ``struct xdp_md`` the program
reads (its u32 fields hold the real addresses, see :mod:`.contexts`), the packet's
:class:`~pybpf.runtime.memory.Region` in the run's region table (``[data_meta, data_end)``: what
the program and the helpers may touch), and the numbers ``data_out`` is cut from
(BPF_PROG_TEST_RUN returns ``[data_meta, data_end)``, its size included).
"""
from __future__ import annotations

import ctypes

XDP_PACKET_HEADROOM = 256            # include/linux/bpf.h
XDP_FRAME_SZ = 4096                  # test_run's rxqueue frag_size: PAGE_SIZE
SKB_SHARED_INFO_ROOM = 320           # SKB_DATA_ALIGN(sizeof(struct skb_shared_info)), x86-64
XDP_FRAME_STRUCT = 40                # sizeof(struct xdp_frame), kept at data_hard_start
# pybpf's layout (runtime/contexts.py): the xdp_md, then the frame, whose hard start is this many
# bytes past the xdp_md; the JIT's native bpf_xdp_adjust_head finds the frame from the ctx
# pointer with it (data may move down to ctx + XDP_HEAD_FLOOR + the metadata length)
XDP_CTX_ROOM = 64
XDP_HEAD_FLOOR = XDP_CTX_ROOM + XDP_FRAME_STRUCT
XDP_MAX_LINEAR = XDP_FRAME_SZ - XDP_PACKET_HEADROOM - SKB_SHARED_INFO_ROOM   # 3520
ETH_HLEN = 14
XDP_META_MAX = 255                   # xdp_metalen_invalid: u8 meta_len, 4-byte multiples
MAX_SKB_FRAGS = 17
PAGE_SIZE = 4096


class Frag:
    """One fragment (``skb_frag_t``): ``size`` bytes at the start of a 4096-byte page."""

    __slots__ = ("buffer", "address", "size", "region")

    def __init__(self, buffer, size: int, region) -> None:
        self.buffer, self.address, self.size, self.region = buffer, buffer.address, size, region


class XdpBuff:
    """The run's ``struct xdp_buff``: ``md`` is the ``struct xdp_md`` at ``ctx_address`` (what
    the program reads), ``region`` the packet's region (``[data_meta, data_end)``),
    ``hard_start``/``hard_end`` the bounds the head and tail may move within. ``owner`` keeps
    the memory alive (the run's low mapping)."""

    __slots__ = ("md", "ctx_address", "hard_start", "hard_end", "region", "owner", "redirect",
                 "frags", "has_frags")

    def __init__(self, md, ctx_address: int, hard_start: int, hard_end: int, region,
                 owner, frags=()) -> None:
        self.md, self.ctx_address = md, ctx_address
        self.hard_start, self.hard_end = hard_start, hard_end
        self.region, self.owner = region, owner
        self.redirect = None            # bpf_redirect_info: set by the redirect helpers
        self.frags: list[Frag] = list(frags)
        self.has_frags = bool(self.frags)      # xdp_buff_has_frags (cleared when none is left)

    # -- fragments --------------------------------------------------------------------------------
    @property
    def frags_size(self) -> int:
        return sum(f.size for f in self.frags)

    def buff_len(self) -> int:
        """xdp_get_buff_len: the linear part and every fragment."""
        return self.data_end - self.data + self.frags_size

    def pointer(self, offset: int, size: int):
        """bpf_xdp_pointer: the address of [offset, offset + size) when it lies in the linear
        part or in one fragment, None when it spans, -EFAULT above 0xffff, -EINVAL past the
        buffer."""
        if offset > 0xFFFF or size > 0xFFFF:
            return -14
        if offset + size > self.buff_len():
            return -22
        linear = self.data_end - self.data
        if offset < linear:
            return self.data + offset if offset + size <= linear else None
        offset -= linear
        for f in self.frags:
            if offset < f.size:
                return f.address + offset if offset + size <= f.size else None
            offset -= f.size
        return self.data if size <= linear else None     # (the kernel's fall-through)

    def _pieces(self, offset: int, size: int):
        """(address, length) runs covering [offset, offset + size) (checked by the caller)."""
        runs = [(self.data, self.data_end - self.data)] + [(f.address, f.size)
                                                            for f in self.frags]
        for addr, length in runs:
            if size <= 0:
                return
            if offset < length:
                n = min(length - offset, size)
                yield addr + offset, n
                offset, size = 0, size - n
            else:
                offset -= length

    def read(self, offset: int, size: int) -> bytes:
        """bpf_xdp_copy_buf into a new buffer (the range was checked with :meth:`pointer`)."""
        return b"".join(ctypes.string_at(a, n) for a, n in self._pieces(offset, size))

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        for a, n in self._pieces(offset, len(data)):
            ctypes.memmove(a, data[pos:pos + n], n)
            pos += n

    # -- the pointers, as the xdp_md holds them -------------------------------------------------
    @property
    def data(self) -> int:
        return self.md.data

    @property
    def data_end(self) -> int:
        return self.md.data_end

    @property
    def data_meta(self) -> int:
        return self.md.data_meta

    @property
    def metalen(self) -> int:
        return self.md.data - self.md.data_meta

    def set(self, table, data: int | None = None, data_end: int | None = None,
            data_meta: int | None = None) -> None:
        """Move the pointers (the helpers checked the bounds) and the packet region with them,
        in ``table`` (the run's RegionTable) too."""
        md = self.md
        if data is not None:
            md.data = data
        if data_end is not None:
            md.data_end = data_end
        if data_meta is not None:
            md.data_meta = data_meta
        start, size = md.data_meta, md.data_end - md.data_meta
        if table is not None and any(r is self.region for r in table):
            table.move(self.region, start, size)
        self.region.start, self.region.size = start, size

    def sync(self, table) -> None:
        """Move the packet region to the pointers the xdp_md holds, if JIT code moved them
        natively (a RegionTable calls this before each lookup: :meth:`RegionTable.follow`)."""
        md, region = self.md, self.region
        start = md.data_meta
        if start != region.start or md.data_end - start != region.size:
            self.set(table)

    def out(self) -> bytes:
        """BPF_PROG_TEST_RUN's data_out: ``[data_meta, data_end)``, then the fragments."""
        lo, hi = self.md.data_meta, self.md.data_end
        if not self.hard_start <= lo <= hi <= self.hard_end:     # never past our own mapping
            return b""
        return ctypes.string_at(lo, hi - lo) + b"".join(
            ctypes.string_at(f.address, f.size) for f in self.frags)
