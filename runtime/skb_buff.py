"""One socket-buffer run's packet, laid out and changed as BPF_PROG_TEST_RUN's ``struct sk_buff``.

The kernel's test run (``bpf_prog_test_run_skb``, net/bpf/test_run.c) builds a linear skb: the
frame behind ``NET_SKB_PAD`` bytes of headroom, ``eth_type_trans`` sets the MAC header at the
frame and pulls the Ethernet header (the network header is where ``data`` then points), and only
tc pushes it back (``data`` = MAC header). ``ip_summed`` is CHECKSUM_NONE, the transport header
is unset, there is no tunnel metadata (no dst) and no GSO unless ``__sk_buff.gso_size`` is given.
After the run a non-tc type gets ``ETH_HLEN`` zero bytes pushed in front of ``data``:
``data_out`` is ``[data, data + len)`` then (:meth:`SkbBuff.out`).

:class:`SkbBuff` keeps what the packet helpers (:mod:`.helpers_skb`) read and change in step:
the ``struct __sk_buff`` the program reads (``len``, ``data``, ``data_end``, ``data_meta``,
``protocol``, ``hash``, ``gso_*``: its u32 pointer fields hold real addresses, see
:mod:`.contexts`), the packet's :class:`~pybpf.runtime.memory.Region` in the run's region table
(``[data, data + len)``: what the program and the helpers may touch), the MAC, network and
transport headers, and the legacy packet view ``ld_abs`` reads (this object: ``len()`` and
slices). When the head or tail needs more room than the buffer has (``skb_cow``,
``pskb_expand_head`` in the kernel), the packet moves to a larger mapping below 4 GiB; the
context stays where it is.
"""
from __future__ import annotations

import ctypes

from .memory import PROC

ETH_HLEN = 14
# SKB_MAX_ALLOC: SKB_WITH_OVERHEAD(PAGE_SIZE << 2) = 16384 - SKB_DATA_ALIGN(sizeof(struct
# skb_shared_info)) on x86-64 (measured: bpf_skb_change_tail(skb, 16064) works, 16065 -EINVAL)
BPF_SKB_MAX_LEN = 16064
_SPARE = 128                     # extra head and tail room when the packet moves


class SkbBuff:
    """The run's ``struct sk_buff``: ``skb`` is the ``struct __sk_buff`` at ``ctx_address``,
    ``region`` the packet's region; ``head``/``end`` bound the buffer the packet may grow in;
    ``mac``, ``network`` (addresses) and ``transport`` (None: unset) the headers;
    ``owners`` keep the memory alive. ``l2``: tc, whose data_out starts at ``data``."""

    def __init__(self, skb, ctx_address: int, head: int, end: int, data: int, length: int,
                 region, owner, l2: bool) -> None:
        self.skb, self.ctx_address, self.region = skb, ctx_address, region
        self.head, self.end, self.owners = head, end, [owner]
        self.data, self.len, self.l2 = data, length, l2
        self.mac = data if l2 else data - ETH_HLEN
        self.network = self.mac + ETH_HLEN
        self.transport: int | None = None
        self.encapsulation = False
        self.tunnel = None               # the metadata dst bpf_skb_set_tunnel_key attaches
        self.ld_desc = None              # a JIT program's ld_abs descriptor (address, length)

    # -- the legacy packet view (ld_abs/ld_ind read it) ------------------------------------------
    def __len__(self) -> int:
        return self.len

    def __getitem__(self, s: slice) -> bytes:
        lo, hi, _ = s.indices(self.len)
        return bytes(PROC[self.data + lo:self.data + max(hi, lo)])

    # -- geometry ----------------------------------------------------------------------------
    @property
    def tail(self) -> int:
        return self.data + self.len

    @property
    def headroom(self) -> int:
        return self.data - self.head

    @property
    def tailroom(self) -> int:
        return self.end - self.tail

    def reserve(self, head: int = 0, tail: int = 0) -> None:
        """Make room for ``head`` bytes in front of ``data`` and ``tail`` after the packet,
        moving it to a larger mapping if need be (the kernel's skb_cow/pskb_expand_head)."""
        if self.headroom >= head and self.tailroom >= tail:
            return
        from .contexts import LowMemory     # here: contexts builds SkbBuff objects
        lo = self.head
        size = (self.end - lo) + head + tail + 2 * _SPARE
        new = LowMemory(size)
        base = new.address + head + _SPARE
        ctypes.memmove(base, lo, self.end - lo)
        delta = base - lo
        self.head, self.end = new.address, new.address + new.size
        self.data += delta
        self.mac += delta
        self.network += delta
        if self.transport is not None:
            self.transport += delta
        self.owners.append(new)
        self.region.owner = new

    def sync(self, table) -> None:
        """After a change: the __sk_buff fields, the packet region (in ``table``, the run's
        RegionTable, too) and the ld_abs descriptor follow ``data`` and ``len``."""
        skb = self.skb
        skb.len = self.len
        skb.data = skb.data_meta = self.data
        skb.data_end = self.data + self.len
        if table is not None and any(r is self.region for r in table):
            table.remove(self.region)
        self.region.start, self.region.size = self.data, self.len
        if table is not None and self.len:
            table.add(self.region)
        if self.ld_desc is not None:
            self.ld_desc[0], self.ld_desc[1] = self.data, self.len

    def out(self) -> bytes:
        """BPF_PROG_TEST_RUN's data_out: the packet from ``data``, behind ETH_HLEN zero bytes
        for the types whose Ethernet header the run pulled."""
        body = ctypes.string_at(self.data, self.len) if self.len else b""
        return body if self.l2 else bytes(ETH_HLEN) + body
