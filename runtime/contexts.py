"""Program types and the kernel-style contexts a run gets (shared by the interpreter and the JIT).

``build_context(prog_type, mem=, ctx=, data=)`` prepares one run: the memory it may touch
(:class:`~pybpf.runtime.memory.Region` objects), r1/r2, the packet that ld_abs/ld_ind read, and
:meth:`RunContext.finish`, which collects what the run left behind (``last_data``,
``last_ctx``) and copies the context back into a mutable ``ctx`` argument.

=============== ==================================================================================
type            context
=============== ==================================================================================
mem             r1 = a private copy of ``mem`` (between canary guards), r2 = its length
syscall         r1 = a private copy of ``ctx`` (bytes, bytearray or a ctypes object; None -> r1 0),
                writable; it is copied back after the run (BPF_PROG_TEST_RUN's ctx_out)
socket_filter,  r1 = ``struct __sk_buff`` (:class:`SkBuff`); ``data`` is an Ethernet frame,
sched_cls,      as BPF_PROG_TEST_RUN takes it (>= 14 bytes; an IPv4/IPv6 frame must hold its
cgroup_skb,     IP header, else VMError as the kernel's EINVAL). As there, eth_type_trans sets
lwt_in/out/xmit protocol (network byte order, as the kernel stores it) and pkt_type (against the
                loopback's all-zero address), and the Ethernet header is pulled: sched_cls
                sees the whole frame, the others the packet from the network header
                (``skb->data``, ``len``, ld_abs offsets start there); ``last_data`` is the
                frame after the run with a pulled header zeroed, the kernel's data_out.
                len, data, data_end, data_meta are the real values; ``ctx=`` (a dict of field
                names, or a SkBuff or its bytes, whose zero fields keep the defaults) sets
                mark, priority, cb[], ifindex (default 1, the loopback device as
                BPF_PROG_TEST_RUN uses), vlan_*, hash, tc_index, ... The packet is writable
                for sched_cls and lwt_xmit, read-only for the others.
xdp             r1 = ``struct xdp_md`` (:class:`XdpMd`) with data, data_end, data_meta pointing at
                the packet, which is writable, behind XDP_PACKET_HEADROOM bytes of headroom
                in a 4096-byte frame, past 3520 bytes in fragments (:mod:`.xdp_buff`;
                ``last_data`` is [data_meta, data_end) and the fragments after the run, which
                the head/tail helpers may have moved); ``ctx=`` is BPF_PROG_TEST_RUN's
                ctx_in (an XdpMd or its bytes; a dict's data_end defaults to the packet's
                length): data = the metadata length (the packet's first bytes), data_end =
                the end of the linear part, ingress_ifindex (default 1, the loopback) and
                rx_queue_index, checked as the kernel checks them (VMError with its errno);
                the program returns an XDP_* action; ``last_ctx`` is the kernel's ctx_out:
                that ctx_in with data and data_end as offsets from data_meta after the run
tracepoint,     r1 = a read-only copy of ``ctx`` (bytes or ctypes); default: zeros (kprobe: a
kprobe          ``struct pt_regs``, 168 bytes; tracepoint: the 8-byte common header); a
                tracepoint copy follows ``ctx_headroom`` read-only zero bytes, as many as the
                program reads before its record (negative offsets, which the kernel allows)
raw_tracepoint  r1 = a read-only copy of ``ctx``, the u64 arguments (at most 12); None: NULL
sk_lookup       r1 = a read-only ``struct bpf_sk_lookup`` (:class:`BpfSkLookup`) from ``ctx``
cgroup_sock_    r1 = a writable ``struct bpf_sock_addr`` / ``struct bpf_sock`` from ``ctx``,
addr, _sock     copied back (context only: the kernel cannot test-run these types);
                bpf_sock_addr.sk points at a read-only ``struct bpf_sock`` (never NULL)
flow_dissector  r1 = ``struct __sk_buff`` with data/data_end over the frame (``data``, from its
                Ethernet header) and flow_keys pointing at a :class:`BpfFlowKeys` the program
                fills; ``last_ctx`` is the keys, ``last_data`` BPF_PROG_TEST_RUN's data_out
=============== ==================================================================================

Pointers in 32-bit context fields. ``__sk_buff.data``/``data_end``/``data_meta`` and
``xdp_md.data``/``data_end``/``data_meta`` are ``__u32`` in the UAPI, yet programs load them with
32-bit loads and use the result as a pointer; the kernel rewrites those loads into loads of the
real 64-bit pointers (``convert_ctx_access``), which needs the verifier's register types. pybpf
instead places the context struct and the packet in one mapping below 4 GiB (``MAP_32BIT``; the
address is checked, and a VMError says so if the kernel could not oblige), so the u32 fields
hold the real pointers and a zero-extending 32-bit load yields the real address: exactly what
programs see in the kernel, with no instruction rewriting, for both engines.

After a run: ``last_data`` is the packet as the program left it (for the __sk_buff types the
whole frame, as BPF_PROG_TEST_RUN's data_out: a socket filter's return, the number of bytes to
keep, does not cut it); ``last_ctx`` is the context after the run (a SkBuff / XdpMd copy, else bytes).
"""
from __future__ import annotations

import ctypes
import errno
import weakref

from pybpf.errors import BPFError, VMError

from .maps.base import (MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE,
                        round_up, sys_mmap, sys_munmap)
from .memory import PROC, Buffer, Region
from .xdp_buff import (MAX_SKB_FRAGS, SKB_SHARED_INFO_ROOM, XDP_CTX_ROOM, XDP_FRAME_STRUCT,
                       XDP_FRAME_SZ, XDP_META_MAX, Frag, XdpBuff)
from .xdp_buff import PAGE_SIZE as XDP_PAGE_SIZE
from .skb_buff import SkbBuff

MAP_32BIT = 0x40
# Where MAP_32BIT mappings land on x86-64 (the kernel searches [1 GiB, 2 GiB)): the only run
# memory below 4 GiB. The JIT bakes these bounds in to tell a 32-bit arena offset from a
# context or packet pointer, as the interpreter does with its region table.
LOW_POOL_START, LOW_POOL_END = 1 << 30, 1 << 31
MEM_GUARD = 64                 # canary bytes on each side of a private copy of mem/ctx
XDP_PACKET_HEADROOM = 256      # include/linux/bpf.h (XDP_PACKET_HEADROOM)
SKB_HEADROOM = 64              # NET_SKB_PAD-like headroom in front of skb->data
TAILROOM = 64
ETH_HLEN = 14
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
ETH_P_802_3, ETH_P_802_2, ETH_P_802_3_MIN = 0x0001, 0x0004, 0x0600
PACKET_HOST, PACKET_MULTICAST, PACKET_OTHERHOST = 0, 2, 3


SKB_TYPES = ("socket_filter", "sched_cls", "cgroup_skb", "lwt_in", "lwt_out", "lwt_xmit")
L2_TYPES = ("sched_cls",)     # BPF_PROG_TEST_RUN pushes the Ethernet header back for tc only
PKT_WRITE_TYPES = ("sched_cls", "lwt_xmit")    # the kernel's may_access_direct_pkt_data
# context-only types: r1 = a writable copy of their struct, copied back (no BPF_PROG_TEST_RUN)
SOCK_TYPES = ("cgroup_sock_addr", "cgroup_sock")
PROG_TYPES = ("mem", "syscall", *SKB_TYPES, "xdp", "tracepoint", "kprobe", "flow_dissector",
              "raw_tracepoint", "sk_lookup", *SOCK_TYPES, "sk_msg", "sock_ops", "perf_event")
ALIASES = {"socket": "socket_filter", "tc": "sched_cls", "classifier": "sched_cls",
           "cgroup/skb": "cgroup_skb", "tp": "tracepoint", "raw_tp": "raw_tracepoint",
           "sockops": "sock_ops"}
MAX_BPF_FUNC_ARGS = 12
# sizeof(struct pt_regs); the common header; struct bpf_perf_event_data (pt_regs + 2 u64)
TRACE_CTX_SIZE = {"kprobe": 168, "tracepoint": 8, "perf_event": 184}


class SkBuff(ctypes.Structure):
    """``struct __sk_buff`` (include/uapi/linux/bpf.h), 192 bytes."""

    _fields_ = [("len", ctypes.c_uint32), ("pkt_type", ctypes.c_uint32),
                ("mark", ctypes.c_uint32), ("queue_mapping", ctypes.c_uint32),
                ("protocol", ctypes.c_uint32), ("vlan_present", ctypes.c_uint32),
                ("vlan_tci", ctypes.c_uint32), ("vlan_proto", ctypes.c_uint32),
                ("priority", ctypes.c_uint32), ("ingress_ifindex", ctypes.c_uint32),
                ("ifindex", ctypes.c_uint32), ("tc_index", ctypes.c_uint32),
                ("cb", ctypes.c_uint32 * 5), ("hash", ctypes.c_uint32),
                ("tc_classid", ctypes.c_uint32), ("data", ctypes.c_uint32),
                ("data_end", ctypes.c_uint32), ("napi_id", ctypes.c_uint32),
                ("family", ctypes.c_uint32), ("remote_ip4", ctypes.c_uint32),
                ("local_ip4", ctypes.c_uint32), ("remote_ip6", ctypes.c_uint32 * 4),
                ("local_ip6", ctypes.c_uint32 * 4), ("remote_port", ctypes.c_uint32),
                ("local_port", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("flow_keys", ctypes.c_uint64), ("tstamp", ctypes.c_uint64),
                ("wire_len", ctypes.c_uint32), ("gso_segs", ctypes.c_uint32),
                ("sk", ctypes.c_uint64), ("gso_size", ctypes.c_uint32),
                ("tstamp_type", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 3),
                ("hwtstamp", ctypes.c_uint64)]


class XdpMd(ctypes.Structure):
    """``struct xdp_md``, 24 bytes."""

    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32),
                ("data_meta", ctypes.c_uint32), ("ingress_ifindex", ctypes.c_uint32),
                ("rx_queue_index", ctypes.c_uint32), ("egress_ifindex", ctypes.c_uint32)]


class BpfFlowKeys(ctypes.Structure):
    """``struct bpf_flow_keys`` (uapi), 56 bytes: what a flow_dissector program fills in."""

    _fields_ = [("nhoff", ctypes.c_uint16), ("thoff", ctypes.c_uint16),
                ("addr_proto", ctypes.c_uint16), ("is_frag", ctypes.c_uint8),
                ("is_first_frag", ctypes.c_uint8), ("is_encap", ctypes.c_uint8),
                ("ip_proto", ctypes.c_uint8), ("n_proto", ctypes.c_uint16),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("addrs", ctypes.c_uint32 * 8), ("flags", ctypes.c_uint32),
                ("flow_label", ctypes.c_uint32)]

    @property
    def ipv4_src(self) -> int:
        return self.addrs[0]

    @property
    def ipv4_dst(self) -> int:
        return self.addrs[1]


class BpfSkLookup(ctypes.Structure):
    """``struct bpf_sk_lookup`` (uapi), 72 bytes: a socket lookup's 4-tuple."""

    _fields_ = [("cookie", ctypes.c_uint64), ("family", ctypes.c_uint32),
                ("protocol", ctypes.c_uint32), ("remote_ip4", ctypes.c_uint32),
                ("remote_ip6", ctypes.c_uint32 * 4), ("remote_port", ctypes.c_uint16),
                ("_pad", ctypes.c_uint16), ("local_ip4", ctypes.c_uint32),
                ("local_ip6", ctypes.c_uint32 * 4), ("local_port", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("_pad2", ctypes.c_uint32)]


class BpfSockAddr(ctypes.Structure):
    """``struct bpf_sock_addr`` (uapi), 72 bytes: a cgroup/connect4-style program's view."""

    _fields_ = [("user_family", ctypes.c_uint32), ("user_ip4", ctypes.c_uint32),
                ("user_ip6", ctypes.c_uint32 * 4), ("user_port", ctypes.c_uint32),
                ("family", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("protocol", ctypes.c_uint32), ("msg_src_ip4", ctypes.c_uint32),
                ("msg_src_ip6", ctypes.c_uint32 * 4), ("sk", ctypes.c_uint64)]


class BpfSock(ctypes.Structure):
    """``struct bpf_sock`` (uapi), 80 bytes: a cgroup/sock_create-style program's view."""

    _fields_ = [("bound_dev_if", ctypes.c_uint32), ("family", ctypes.c_uint32),
                ("type", ctypes.c_uint32), ("protocol", ctypes.c_uint32),
                ("mark", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("src_ip4", ctypes.c_uint32), ("src_ip6", ctypes.c_uint32 * 4),
                ("src_port", ctypes.c_uint32), ("dst_port", ctypes.c_uint16),
                ("_pad", ctypes.c_uint16), ("dst_ip4", ctypes.c_uint32),
                ("dst_ip6", ctypes.c_uint32 * 4), ("state", ctypes.c_uint32),
                ("rx_queue_mapping", ctypes.c_int32)]


class SkMsgMd(ctypes.Structure):
    """``struct sk_msg_md`` (uapi), 80 bytes: an sk_msg program's message and socket."""

    _fields_ = [("data", ctypes.c_uint64), ("data_end", ctypes.c_uint64),
                ("family", ctypes.c_uint32), ("remote_ip4", ctypes.c_uint32),
                ("local_ip4", ctypes.c_uint32), ("remote_ip6", ctypes.c_uint32 * 4),
                ("local_ip6", ctypes.c_uint32 * 4), ("remote_port", ctypes.c_uint32),
                ("local_port", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("sk", ctypes.c_uint64)]


class BpfSockOps(ctypes.Structure):
    """``struct bpf_sock_ops`` (uapi), 224 bytes: a sockops callback's view. ``args`` is the
    union with ``reply``/``replylong`` (``reply`` is ``args[0]``)."""

    _fields_ = ([("op", ctypes.c_uint32), ("args", ctypes.c_uint32 * 4),
                 ("family", ctypes.c_uint32), ("remote_ip4", ctypes.c_uint32),
                 ("local_ip4", ctypes.c_uint32), ("remote_ip6", ctypes.c_uint32 * 4),
                 ("local_ip6", ctypes.c_uint32 * 4)] +
                [(n, ctypes.c_uint32) for n in (
                    "remote_port", "local_port", "is_fullsock", "snd_cwnd", "srtt_us",
                    "bpf_sock_ops_cb_flags", "state", "rtt_min", "snd_ssthresh", "rcv_nxt",
                    "snd_nxt", "snd_una", "mss_cache", "ecn_flags", "rate_delivered",
                    "rate_interval_us", "packets_out", "retrans_out", "total_retrans", "segs_in",
                    "data_segs_in", "segs_out", "data_segs_out", "lost_out", "sacked_out",
                    "sk_txhash")] +
                [("bytes_received", ctypes.c_uint64), ("bytes_acked", ctypes.c_uint64),
                 ("sk", ctypes.c_uint64), ("skb_data", ctypes.c_uint64),
                 ("skb_data_end", ctypes.c_uint64), ("skb_len", ctypes.c_uint32),
                 ("skb_tcp_flags", ctypes.c_uint32), ("skb_hwtstamp", ctypes.c_uint64)])

    @property
    def reply(self) -> int:
        return self.args[0]


class BpfPerfEventData(ctypes.Structure):
    """``struct bpf_perf_event_data`` (x86-64), 184 bytes: the sample's registers (``struct
    pt_regs``, 21 longs), sample_period and addr."""

    _fields_ = [("regs", ctypes.c_uint64 * 21), ("sample_period", ctypes.c_uint64),
                ("addr", ctypes.c_uint64)]


SOCK_STRUCTS = {"cgroup_sock_addr": BpfSockAddr, "cgroup_sock": BpfSock}
assert ctypes.sizeof(SkMsgMd) == 80 and SkMsgMd.sk.offset == 72 and SkMsgMd.size.offset == 68
assert ctypes.sizeof(BpfSockOps) == 224 and BpfSockOps.sk_txhash.offset == 164
assert BpfSockOps.skb_data.offset == 192 and BpfSockOps.skb_tcp_flags.offset == 212
assert ctypes.sizeof(BpfPerfEventData) == 184 and BpfPerfEventData.addr.offset == 176
AF_INET, AF_INET6 = 2, 10
assert ctypes.sizeof(BpfSkLookup) == 72 and BpfSkLookup.local_port.offset == 60
assert ctypes.sizeof(BpfSockAddr) == 72 and ctypes.sizeof(BpfSock) == 80
assert ctypes.sizeof(SkBuff) == 192 and SkBuff.data.offset == 76 and SkBuff.hwtstamp.offset == 184
assert ctypes.sizeof(XdpMd) == 24 and ctypes.sizeof(BpfFlowKeys) == 56

# Fields the run fills in itself; ``ctx=`` may not set them.
_SKB_DERIVED = ("len", "data", "data_end", "data_meta")
_XDP_DERIVED = ("data", "data_end", "data_meta")


def canonical_type(prog_type: str) -> str:
    """The program type for a name or libbpf-style alias; VMError for unsupported ones."""
    t = ALIASES.get(prog_type, prog_type)
    if t not in PROG_TYPES:
        raise VMError(f"program type {prog_type!r} is not supported (supported: "
                      f"{', '.join(PROG_TYPES)})")
    return t


class LowMemory:
    """Zeroed, page-rounded memory mapped below 4 GiB, so its addresses fit a ``__u32``."""

    def __init__(self, size: int) -> None:
        self.size = round_up(max(size, 1), PAGE_SIZE)
        try:
            addr = sys_mmap(None, self.size, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT)
        except BPFError as e:
            raise VMError(f"cannot map {self.size} bytes below 4 GiB for a packet context "
                          f"(MAP_32BIT): {e}") from None
        if not LOW_POOL_START <= addr <= LOW_POOL_END - self.size:
            sys_munmap(addr, self.size)
            raise VMError(f"the kernel placed a MAP_32BIT mapping at 0x{addr:x}, outside "
                          f"[0x{LOW_POOL_START:x}, 0x{LOW_POOL_END:x}): 32-bit context "
                          f"pointers (data/data_end) need it there")
        self.address = addr
        weakref.finalize(self, sys_munmap, addr, self.size)

    def read(self, address: int, size: int) -> bytes:
        return bytes(PROC[address:address + size])


# Finished runs hand their low mappings back here (a few per size) so the next run of a packet
# program skips the mmap/munmap pair, the bulk of its context setup; a reused one is zeroed.
_LOW_POOL: dict[int, list[LowMemory]] = {}
_LOW_POOL_KEEP = 4


def _acquire_low(size: int) -> LowMemory:
    free = _LOW_POOL.get(round_up(max(size, 1), PAGE_SIZE))
    if free:
        try:
            low = free.pop()
        except IndexError:      # another thread took the last one
            return LowMemory(size)
        ctypes.memset(low.address, 0, low.size)
        return low
    return LowMemory(size)


def _release_low(low: LowMemory) -> None:
    free = _LOW_POOL.setdefault(low.size, [])
    if len(free) < _LOW_POOL_KEEP:
        free.append(low)


class RunContext:
    """One run's context: r1/r2, regions, ld_abs packet; ``finish(r0)`` collects the results."""

    def __init__(self, prog_type: str) -> None:
        self.prog_type = prog_type
        self.r1 = self.r2 = 0
        self.regions: list[Region] = []
        self.fast: Region | None = None     # the region the interpreter checks inline
        self.packet = None                  # what ld_abs/ld_ind read (bytes or a live view)
        self.buffer = None                  # the mem copy (Buffer) for prog_type mem
        self.last_mem: bytes | None = None
        self.last_data: bytes | None = None
        self.last_ctx = None
        self._finish = None
        self._low: LowMemory | None = None   # the packet mapping, pooled again by release()
        self.xdp = None                     # an xdp run's XdpBuff (the packet helpers' state)
        self.redirect = None                # where a redirect helper sent the packet (Redirect)
        self.skb = None                     # an __sk_buff run's SkbBuff (the packet helpers')
        self.clones: list = []              # bpf_clone_redirect's copies (helpers_skb.Clone)
        self.prog_btf = None                # the program's BTF (bpf_obj_new: sizes by type id)

    def finish(self, r0: int | None) -> None:
        """Collect ``last_mem``/``last_data``/``last_ctx`` (r0 is None when the run failed)."""
        if self._finish is not None:
            self._finish(r0)

    def release(self) -> None:
        """After ``finish``: the run's memory may serve another run (nothing reads it now)."""
        low, self._low = self._low, None
        if low is not None:
            self.regions, self.fast, self.packet, self.xdp = [], None, None, None
            self.skb = None
            _release_low(low)


def build_context(prog_type: str, mem=None, ctx=None, data=None,
                  has_device=None, ctx_headroom: int = 0) -> RunContext:
    """The context of one run of a ``prog_type`` program (see the module docstring);
    ``has_device(ifindex)`` says which devices exist (an xdp ctx_in's ingress_ifindex);
    ``ctx_headroom``: how many bytes before a tracepoint record the program reads (the
    verifier's min_ctx_offset, negated)."""
    rc = RunContext(prog_type)
    if prog_type == "mem":
        if ctx is not None:
            raise VMError("prog_type 'mem' takes mem=, not ctx= (use a context program type)")
        _mem_context(rc, mem, data)
        return rc
    if mem is not None:
        raise VMError(f"prog_type {prog_type!r} takes ctx= (and data= for packets), not mem=")
    if prog_type == "syscall":
        if data is not None:
            raise VMError("prog_type 'syscall' has no packet: pass its context as ctx=")
        _syscall_context(rc, ctx)
    elif prog_type in SKB_TYPES:
        _skb_context(rc, ctx, data)
    elif prog_type == "xdp":
        _xdp_context(rc, ctx, data, has_device)
    elif prog_type == "flow_dissector":
        _flow_dissector_context(rc, ctx, data)
    elif prog_type == "sk_lookup":
        if data is not None:
            raise VMError("prog_type 'sk_lookup' has no packet: pass its context as ctx=")
        _sk_lookup_context(rc, ctx)
    elif prog_type in SOCK_TYPES:
        if data is not None:
            raise VMError(f"prog_type {prog_type!r} has no packet: pass its context as ctx=")
        _sock_context(rc, ctx, SOCK_STRUCTS[prog_type])
    elif prog_type == "sk_msg":
        _sk_msg_context(rc, ctx, data)
    elif prog_type == "sock_ops":
        _sock_ops_context(rc, ctx, data)
    elif prog_type == "raw_tracepoint":
        if data is not None:
            raise VMError("prog_type 'raw_tracepoint' has no packet: pass its arguments as ctx=")
        _raw_tp_context(rc, ctx)
    else:
        if data is not None:
            raise VMError(f"prog_type {prog_type!r} has no packet: pass its context as ctx=")
        _trace_context(rc, ctx, ctx_headroom if prog_type == "tracepoint" else 0)
    return rc


# --- the types --------------------------------------------------------------------------------
def _mem_context(rc: RunContext, mem, data) -> None:
    if mem is not None and len(mem):
        buf = Buffer.guarded_copy(mem, MEM_GUARD)
        region = Region(buf.address, buf.size, "mem", True, buf)
        rc.regions.append(region)
        rc.fast, rc.buffer = region, buf
        rc.r1, rc.r2 = buf.address, buf.size
    # legacy packet access in .data-style tests: ld_abs reads data= without any skb
    rc.packet = bytes(data) if data is not None else None

    def finish(r0):
        rc.last_mem = rc.buffer.bytes() if rc.buffer is not None else None
    rc._finish = finish


def _ctx_bytes(ctx, what: str) -> bytes:
    if isinstance(ctx, (bytes, bytearray, memoryview)):
        return bytes(ctx)
    if isinstance(ctx, (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._SimpleCData)):
        return bytes(ctx)
    if hasattr(ctx, "tobytes"):
        return ctx.tobytes()
    raise VMError(f"{what}: expected bytes, a bytearray or a ctypes object as ctx, "
                  f"not {type(ctx).__name__}")


def _write_back(ctx, data: bytes) -> None:
    """Copy the context after the run into a mutable ``ctx`` argument."""
    if isinstance(ctx, bytearray):
        ctx[:len(data)] = data[:len(ctx)]
    elif isinstance(ctx, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        ctypes.memmove(ctypes.addressof(ctx), data, min(len(data), ctypes.sizeof(ctx)))
    elif hasattr(ctx, "tobytes") and getattr(ctx, "flags", None) is not None \
            and ctx.flags.writeable:
        import numpy as np
        ctx.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)[:ctx.nbytes]


def _syscall_context(rc: RunContext, ctx) -> None:
    if ctx is None:         # BPF_PROG_TEST_RUN without ctx_in: r1 = NULL
        rc._finish = None
        return
    raw = _ctx_bytes(ctx, "syscall")
    if len(raw) > 0xFFFF:
        raise VMError(f"syscall ctx of {len(raw)} bytes is larger than U16_MAX")
    buf = Buffer.guarded_copy(raw, MEM_GUARD)
    if raw:
        region = Region(buf.address, buf.size, "ctx", True, buf)
        rc.regions.append(region)
        rc.fast = region
    rc.r1, rc.buffer = buf.address, buf

    def finish(r0):
        rc.last_ctx = buf.bytes()
        if r0 is not None:
            _write_back(ctx, rc.last_ctx)
    rc._finish = finish


def _fill(struct, ctx, derived: tuple[str, ...], what: str) -> None:
    """Set ``struct``'s fields from ``ctx``: a dict of field names, or the struct (a ctypes
    object or its bytes) whose non-zero fields count, so that zeros keep the run's defaults."""
    if ctx is None:
        return
    if not isinstance(ctx, dict):
        raw = _ctx_bytes(ctx, what)
        size = ctypes.sizeof(struct)
        if len(raw) > size:
            raise VMError(f"{what} ctx is {len(raw)} bytes, larger than the {size}-byte struct")
        given = type(struct).from_buffer_copy(raw.ljust(size, b"\0"))
        ctx = {}
        for name, *_ in type(struct)._fields_:
            value = getattr(given, name)
            if isinstance(value, ctypes.Array):
                value = list(value)
            nonzero = any(value) if isinstance(value, list) else bool(value)
            if nonzero and not name.startswith("_") and name not in derived:
                ctx[name] = value
    names = {f[0] for f in type(struct)._fields_}
    for key, value in ctx.items():
        if key not in names or key.startswith("_"):
            raise VMError(f"{what} has no field {key!r}")
        if key in derived:
            raise VMError(f"{what}.{key} is set by the run itself")
        try:
            if isinstance(getattr(struct, key), ctypes.Array):
                arr = getattr(struct, key)
                if len(value) > len(arr):
                    raise VMError(f"{what}.{key} holds {len(arr)} values, got {len(value)}")
                for i, v in enumerate(value):
                    arr[i] = v
            else:
                setattr(struct, key, value)
        except TypeError as e:
            raise VMError(f"{what}.{key}: {e}") from None


def _eth_type_trans(frame: bytes) -> tuple[int, int]:
    """(skb->protocol as the u32 field holds the __be16, skb->pkt_type) as eth_type_trans sets
    them on BPF_PROG_TEST_RUN's device, the loopback: its address and its broadcast address are
    all zeros, so even ff:ff:ff:ff:ff:ff is PACKET_MULTICAST there (checked in the kernel)."""
    dst, proto = frame[:6], int.from_bytes(frame[12:14], "big")
    if dst[0] & 1:
        pkt_type = PACKET_MULTICAST
    else:
        pkt_type = PACKET_HOST if dst == bytes(6) else PACKET_OTHERHOST
    if proto < ETH_P_802_3_MIN:        # an 802.3 length: raw IPX (0xFFFF) or 802.2 LLC
        proto = ETH_P_802_3 if frame[14:16] == b"\xff\xff" else ETH_P_802_2
    return int.from_bytes(proto.to_bytes(2, "big"), "little"), pkt_type


def _check_frame(prog_type: str, packet: bytes) -> None:
    """BPF_PROG_TEST_RUN's -EINVAL cases for an skb run's data_in."""
    if len(packet) < ETH_HLEN:
        raise VMError(f"{prog_type}: data of {len(packet)} bytes is shorter than the Ethernet "
                      f"header (BPF_PROG_TEST_RUN needs >= {ETH_HLEN}: EINVAL)")
    proto, l3 = int.from_bytes(packet[12:14], "big"), len(packet) - ETH_HLEN
    need = {ETH_P_IP: 20, ETH_P_IPV6: 40}.get(proto, 0)
    if l3 < need:
        raise VMError(f"{prog_type}: an {'IPv4' if proto == ETH_P_IP else 'IPv6'} frame with "
                      f"{l3} bytes after the Ethernet header, less than its header's {need} "
                      f"(BPF_PROG_TEST_RUN: EINVAL)")


def _packet_layout(ctx_size: int, headroom: int, n: int) -> tuple[LowMemory, int, int]:
    """(low mapping, ctx address, packet address) for a context struct and ``n`` packet bytes."""
    ctx_room = round_up(ctx_size, 64)
    low = _acquire_low(ctx_room + headroom + n + TAILROOM)
    return low, low.address, low.address + ctx_room + headroom


def _skb_context(rc: RunContext, ctx, data) -> None:
    frame = bytes(data) if data is not None else b""
    if frame:
        _check_frame(rc.prog_type, frame)
    # BPF_PROG_TEST_RUN pulls the Ethernet header (eth_type_trans) and pushes it back only for
    # tc: the others see the packet from the network header
    pull = ETH_HLEN if frame and rc.prog_type not in L2_TYPES else 0
    packet = frame[pull:]
    low, caddr, fstart = _packet_layout(ctypes.sizeof(SkBuff), SKB_HEADROOM, len(frame))
    PROC[fstart:fstart + len(frame)] = frame
    paddr = fstart + pull
    skb = SkBuff.from_address(caddr)
    skb.ifindex, skb.wire_len = 1, len(packet)      # the loopback device, as test_run uses
    if frame:
        skb.protocol, skb.pkt_type = _eth_type_trans(frame)
    rc._low = low
    _fill(skb, ctx, _SKB_DERIVED, "__sk_buff")
    if skb.sk or skb.flow_keys:
        # the verifier lets a program read through a non-NULL skb->sk: only the run sets it
        raise VMError("__sk_buff.sk and flow_keys must be zero (BPF_PROG_TEST_RUN: EINVAL)")
    skb.len = len(packet)
    skb.data = skb.data_meta = paddr
    skb.data_end = paddr + len(packet)
    writable = rc.prog_type in PKT_WRITE_TYPES
    pkt_region = Region(paddr, len(packet), "packet", writable, low)
    rc.regions += [Region(caddr, ctypes.sizeof(SkBuff), "ctx", True, low), pkt_region]
    rc.fast = pkt_region if writable and packet else None
    # the packet helpers' sk_buff (skb_buff.py), also the view ld_abs/ld_ind read
    sb = rc.skb = rc.packet = SkbBuff(skb, caddr, fstart - SKB_HEADROOM,
                                      low.address + low.size, paddr, len(packet), pkt_region,
                                      low, pull == 0)
    rc.r1 = caddr

    def finish(r0):
        after = SkBuff.from_buffer_copy(PROC[caddr:caddr + ctypes.sizeof(SkBuff)])
        rc.last_ctx = after
        # data_out as BPF_PROG_TEST_RUN gives it: a pulled Ethernet header comes back zeroed
        rc.last_data = sb.out()
        if r0 is not None and not isinstance(ctx, dict) and ctx is not None:
            _write_back(ctx, bytes(after))
    rc._finish = finish


def _xdp_ctx_in(ctx, n: int) -> dict:
    """The ``struct xdp_md`` fields a ctx gives BPF_PROG_TEST_RUN (its ctx_in), by name: a
    dict (``data_end`` defaults to the whole packet: the kernel wants it given), an XdpMd or
    its bytes (taken as they are, as ctx_in: at most 24 bytes unless the rest is zero, E2BIG)."""
    size = ctypes.sizeof(XdpMd)
    if isinstance(ctx, dict):
        names = {f[0] for f in XdpMd._fields_}
        for key in ctx:
            if key not in names:
                raise VMError(f"xdp_md has no field {key!r}")
        return {"data_end": n, **ctx}
    raw = _ctx_bytes(ctx, "xdp_md")
    if len(raw) > size and any(raw[size:]):
        raise VMError(f"xdp_md ctx is {len(raw)} bytes and not zero past the {size}-byte "
                      f"struct (BPF_PROG_TEST_RUN: E2BIG)", errno=errno.E2BIG)
    md = XdpMd.from_buffer_copy(raw[:size].ljust(size, b"\0"))
    return {name: getattr(md, name) for name, *_ in XdpMd._fields_}


def _xdp_input_error(what: str, err: int = errno.EINVAL) -> VMError:
    return VMError(f"xdp: {what} (BPF_PROG_TEST_RUN: {errno.errorcode[err]})", errno=err)


def _xdp_context(rc: RunContext, ctx, data, has_device=None) -> None:
    """BPF_PROG_TEST_RUN's xdp_buff (:mod:`.xdp_buff`, bpf_prog_test_run_xdp): one 4096-byte
    frame with 256 bytes of headroom and the skb_shared_info room at its end, so the head and
    tail helpers find the kernel's limits, the rest of a longer packet in fragments; ``rc.xdp``
    is the :class:`XdpBuff` they work on and ``last_data`` the kernel's data_out,
    ``[data_meta, data_end)`` and the fragments after the run.

    The kernel's input checks, with its errno (``VMError.errno``): a ctx_in must have
    ``data_meta`` 0, ``data`` (the metadata length, taken from the packet's first bytes) a
    multiple of 4 leaving the ``struct xdp_frame`` its room in the headroom, ``data <=
    data_end <= len(data)`` (``data_end``: where the linear part ends, the rest goes to
    fragments), ``egress_ifindex`` 0, ``rx_queue_index`` 0 unless ``ingress_ifindex`` names a
    device (``has_device``: the VM's FibTable devices, ifindex 1 the loopback; ENODEV
    otherwise) whose one receive queue is 0; the packet after the metadata must hold an
    Ethernet header; at most 17 fragments (ENOMEM)."""
    packet = bytes(data) if data is not None else b""
    n = len(packet)
    headroom, meta, linear = XDP_PACKET_HEADROOM, 0, n
    fields = _xdp_ctx_in(ctx, n) if ctx is not None else None
    if fields is not None:
        meta, end = fields.get("data", 0), fields.get("data_end", 0)
        if fields.get("data_meta", 0) or end > n or meta > end or meta % 4 or \
                meta > XDP_META_MAX or headroom - meta < XDP_FRAME_STRUCT:
            raise _xdp_input_error(f"ctx_in data_meta={fields.get('data_meta', 0)} data={meta} "
                                   f"data_end={end} for {n} bytes of data")
        headroom -= meta
        linear = end
    max_linear = XDP_FRAME_SZ - headroom - SKB_SHARED_INFO_ROOM
    linear = min(linear, max_linear)
    if n - meta < ETH_HLEN:
        raise _xdp_input_error(f"{n - meta} bytes of packet after {meta} of metadata, shorter "
                               f"than the Ethernet header ({ETH_HLEN})")
    ingress, rxq = 1, 0
    if fields is not None:
        if fields.get("egress_ifindex", 0):
            raise _xdp_input_error("ctx_in egress_ifindex must be 0")
        ifindex, rxq = fields.get("ingress_ifindex", 0), fields.get("rx_queue_index", 0)
        if not ifindex and rxq:
            raise _xdp_input_error("ctx_in rx_queue_index without an ingress_ifindex")
        if ifindex:
            known = has_device(ifindex) if has_device is not None else ifindex == 1
            if not known:
                raise _xdp_input_error(f"no device with ifindex {ifindex}", errno.ENODEV)
            if rxq >= 1:        # every device here has one receive queue, as the loopback
                raise _xdp_input_error(f"device {ifindex} has no receive queue {rxq}")
            ingress = ifindex
    rest = n - linear
    if rest > MAX_SKB_FRAGS * XDP_PAGE_SIZE:
        raise _xdp_input_error(f"{n} bytes need more than {MAX_SKB_FRAGS} fragments",
                               errno.ENOMEM)
    hard_span = headroom + max_linear + SKB_SHARED_INFO_ROOM          # one page
    low, caddr, paddr = _packet_layout(ctypes.sizeof(XdpMd), headroom,
                                       hard_span - headroom - TAILROOM)
    hard_start = paddr - headroom
    if hard_start - caddr != XDP_CTX_ROOM:      # the JIT's native adjust_head relies on it
        raise VMError(f"xdp frame at ctx + {hard_start - caddr}, not ctx + {XDP_CTX_ROOM}")
    PROC[paddr:paddr + linear] = packet[:linear]
    md = XdpMd.from_address(caddr)
    md.ingress_ifindex, md.rx_queue_index = ingress, rxq
    rc._low = low
    md.data_meta = paddr
    md.data = paddr + meta
    md.data_end = paddr + linear
    pkt_region = Region(paddr, linear, "packet", True, low)
    frags = []
    for at in range(linear, n, XDP_PAGE_SIZE):
        chunk = packet[at:at + XDP_PAGE_SIZE]
        buf = Buffer(XDP_PAGE_SIZE, init=chunk)
        frags.append(Frag(buf, len(chunk), Region(buf.address, XDP_PAGE_SIZE, "frag", True,
                                                  buf)))
    xb = XdpBuff(md, caddr, hard_start, hard_start + hard_span - SKB_SHARED_INFO_ROOM,
                 pkt_region, low, frags)
    rc.xdp = xb
    rc.regions += [Region(caddr, ctypes.sizeof(XdpMd), "ctx", False, low), pkt_region]
    rc.regions += [f.region for f in frags]
    rc.fast = pkt_region if linear else None
    rc.packet = PROC[paddr:paddr + linear]
    rc.r1 = caddr

    # ctx_out is the ctx_in the kernel copied in, with data and data_end rewritten
    # (xdp_convert_buff_to_md); without a ctx, as the ctx_in {data_end: len(data)}
    ctx_in = {"data_end": n} if fields is None else fields

    def finish(r0):
        rc.last_ctx = _xdp_ctx_out(ctx_in, xb)
        rc.last_data = xb.out()
        if r0 is not None and isinstance(ctx, (ctypes.Structure, bytearray)):
            _write_back(ctx, bytes(rc.last_ctx))
    rc._finish = finish


def _xdp_ctx_out(ctx_in: dict, xb: XdpBuff) -> XdpMd:
    """BPF_PROG_TEST_RUN's xdp ctx_out (net/bpf/test_run.c, xdp_convert_buff_to_md): the
    ctx_in fields as given (data_meta 0, ingress_ifindex and rx_queue_index as the caller set
    them, not the device the program saw), ``data`` and ``data_end`` as offsets from
    ``data_meta`` after the run: the metadata length and the end of the linear part, which
    the head, meta and tail helpers may have moved (the program's own struct holds addresses,
    see the module docstring)."""
    out = XdpMd(**ctx_in)
    meta = xb.data_meta
    out.data, out.data_end = xb.data - meta, xb.data_end - meta
    return out


def _trace_context(rc: RunContext, ctx, headroom: int = 0) -> None:
    """r1 = a read-only copy of ``ctx`` behind ``headroom`` read-only zero bytes (a tracepoint
    program may read before its record, as the kernel lets it: what lies there in the kernel
    is not the program's business, here it is zeros)."""
    raw = _ctx_bytes(ctx, rc.prog_type) if ctx is not None else bytes(
        TRACE_CTX_SIZE[rc.prog_type])
    buf = Buffer(headroom + len(raw), init=bytes(headroom) + raw, guard=MEM_GUARD)
    start = buf.address + headroom
    if headroom:
        rc.regions.append(Region(buf.address, headroom, "ctx headroom", False, buf))
    if raw:
        rc.regions.append(Region(start, len(raw), "ctx", False, buf))
    rc.r1, rc.buffer = start, buf

    def finish(r0):
        rc.last_ctx = buf.bytes()[headroom:]
    rc._finish = finish


def _flow_dissector_context(rc: RunContext, ctx, data) -> None:
    """BPF_PROG_TEST_RUN of a flow dissector (bpf_prog_test_run_flow_dissector): the program
    gets a ``__sk_buff`` of which only data, data_end and flow_keys mean anything; data is the
    frame from its Ethernet header; the keys start zeroed with n_proto (the frame's ethertype),
    nhoff = thoff = 14 and ``flags`` from ``ctx`` (a BpfFlowKeys or dict with only flags set;
    anything else is the kernel's EINVAL). After the run nhoff and thoff are clamped to the
    frame as the kernel clamps them; ``last_ctx`` is the keys and ``last_data`` the kernel's
    data_out: the 56 bytes of the keys (bpf_test_finish of ``sizeof(flow_keys)``, whatever the
    frame's length; checked in tests/test_corpus.py)."""
    frame = bytes(data) if data is not None else b""
    if len(frame) < ETH_HLEN:
        raise VMError(f"flow_dissector: data of {len(frame)} bytes is shorter than the Ethernet "
                      f"header (BPF_PROG_TEST_RUN needs >= {ETH_HLEN}: EINVAL)")
    flags = 0
    if ctx is not None:
        given = BpfFlowKeys()
        _fill(given, ctx, (), "bpf_flow_keys")
        flags = given.flags
        given.flags = 0
        if any(bytes(given)):
            raise VMError("flow_dissector: ctx (struct bpf_flow_keys) may set only flags "
                          "(BPF_PROG_TEST_RUN: EINVAL)")
    keys_room = round_up(ctypes.sizeof(BpfFlowKeys), 64)
    low, caddr, paddr = _packet_layout(ctypes.sizeof(SkBuff) + 64 + keys_room, 0, len(frame))
    kaddr = caddr + round_up(ctypes.sizeof(SkBuff), 64)
    PROC[paddr:paddr + len(frame)] = frame
    keys = BpfFlowKeys.from_address(kaddr)
    keys.n_proto = int.from_bytes(frame[12:14], "little")      # __be16 as stored
    keys.nhoff = keys.thoff = ETH_HLEN
    keys.flags = flags
    skb = SkBuff.from_address(caddr)
    skb.data, skb.data_end, skb.flow_keys = paddr, paddr + len(frame), kaddr
    rc._low = low
    pkt_region = Region(paddr, len(frame), "packet", False, low)
    rc.regions += [Region(caddr, ctypes.sizeof(SkBuff), "ctx", False, low),
                   Region(kaddr, ctypes.sizeof(BpfFlowKeys), "flow_keys", True, low), pkt_region]
    rc.packet = PROC[paddr:paddr + len(frame)]
    rc.r1 = caddr

    def finish(r0):
        k = BpfFlowKeys.from_address(kaddr)
        k.nhoff = min(max(k.nhoff, ETH_HLEN), len(frame))
        k.thoff = min(max(k.thoff, k.nhoff), len(frame))
        rc.last_ctx = BpfFlowKeys.from_buffer_copy(bytes(k))
        # Linux 6.18's data_out is the keys themselves (data_size_out = 56)
        rc.last_data = bytes(k)
    rc._finish = finish


def _raw_tp_context(rc: RunContext, ctx) -> None:
    """BPF_PROG_TEST_RUN of a raw tracepoint: r1 = the u64 arguments (``ctx``, at most 12 of
    them, read-only), or NULL without ctx."""
    if ctx is None:
        rc._finish = None
        return
    raw = _ctx_bytes(ctx, "raw_tracepoint")
    if len(raw) > 8 * MAX_BPF_FUNC_ARGS:
        raise VMError(f"raw_tracepoint ctx of {len(raw)} bytes is more than "
                      f"{MAX_BPF_FUNC_ARGS} u64 arguments (BPF_PROG_TEST_RUN: EINVAL)")
    buf = Buffer.guarded_copy(raw, MEM_GUARD)
    if raw:
        rc.regions.append(Region(buf.address, buf.size, "ctx", False, buf))
    rc.r1, rc.buffer = buf.address, buf

    def finish(r0):
        rc.last_ctx = buf.bytes()
    rc._finish = finish


def _sk_lookup_context(rc: RunContext, ctx) -> None:
    """BPF_PROG_TEST_RUN of an sk_lookup program (bpf_prog_test_run_sk_lookup): ``ctx`` (a
    BpfSkLookup or a dict) is required, family AF_INET or AF_INET6, local_port <= 65535, sk
    and ingress_ifindex zero (VMError where the kernel says EINVAL, EAFNOSUPPORT, ERANGE).
    r1 = a read-only copy; no socket can be selected (no bpf_sk_assign), so ``last_ctx`` comes
    back with cookie 0, as the kernel's ctx_out does."""
    if ctx is None:
        raise VMError("sk_lookup needs ctx= (struct bpf_sk_lookup; BPF_PROG_TEST_RUN: EINVAL)")
    given = BpfSkLookup()
    _fill(given, ctx, (), "bpf_sk_lookup")
    if given.cookie or given.ingress_ifindex:
        raise VMError("sk_lookup: ctx sk/cookie and ingress_ifindex must be zero "
                      "(BPF_PROG_TEST_RUN: EINVAL)")
    if given.local_port > 0xFFFF:
        raise VMError(f"sk_lookup: local_port {given.local_port} > 65535 (ERANGE)")
    if given.family not in (AF_INET, AF_INET6):
        raise VMError(f"sk_lookup: family {given.family} is neither AF_INET nor AF_INET6 "
                      f"(EAFNOSUPPORT)")
    raw = bytes(given)
    buf = Buffer.guarded_copy(raw, MEM_GUARD)
    rc.regions.append(Region(buf.address, buf.size, "ctx", False, buf))
    rc.r1, rc.buffer = buf.address, buf

    def finish(r0):
        rc.last_ctx = BpfSkLookup.from_buffer_copy(buf.bytes())
        if r0 is not None and isinstance(ctx, (ctypes.Structure, bytearray)):
            _write_back(ctx, bytes(rc.last_ctx))
    rc._finish = finish


def _sock_context(rc: RunContext, ctx, struct) -> None:
    """cgroup_sock_addr / cgroup_sock: r1 = a writable copy of the struct (from ``ctx``, a dict
    of fields or the struct), copied back after the run. The kernel has no BPF_PROG_TEST_RUN
    for these types; what the program may write (user_ip4/user_port for connect4,
    mark/priority/bound_dev_if for sock_create) is the verifier's business.

    ``bpf_sock_addr.sk`` is never NULL in the kernel (the verifier types it PTR_TO_SOCKET, so a
    program may read through it unchecked): it points at a read-only ``struct bpf_sock`` with
    the address's family, type and protocol, which the caller may not set (VMError)."""
    given = struct()
    if ctx is not None:
        _fill(given, ctx, ("sk",) if struct is BpfSockAddr else (), struct.__name__)
    if struct is BpfSockAddr:
        sock = BpfSock(family=given.family, type=given.type, protocol=given.protocol)
        sraw = bytes(sock)
        sbuf = Buffer.guarded_copy(sraw, MEM_GUARD)
        rc.regions.append(Region(sbuf.address, sbuf.size, "sock", False, sbuf))
        rc._sock = sbuf                     # kept alive with the run
        given.sk = sbuf.address
    raw = bytes(given)
    buf = Buffer.guarded_copy(raw, MEM_GUARD)
    rc.regions.append(Region(buf.address, buf.size, "ctx", True, buf))
    rc.fast = rc.regions[-1]
    rc.r1, rc.buffer = buf.address, buf

    def finish(r0):
        rc.last_ctx = struct.from_buffer_copy(buf.bytes())
        if struct is BpfSockAddr:
            rc.last_ctx.sk = 0              # the run's own socket, not the caller's business
        if r0 is not None and isinstance(ctx, (ctypes.Structure, bytearray)):
            _write_back(ctx, bytes(rc.last_ctx))
    rc._finish = finish


def _socket_of(fields: dict) -> Buffer:
    """A read-only ``struct bpf_sock`` for a context's socket pointer (never NULL where the
    verifier types it PTR_TO_SOCKET): family, type, protocol, addresses and ports given."""
    sock = BpfSock()
    for name, value in fields.items():
        if isinstance(getattr(sock, name), ctypes.Array):
            for i, v in enumerate(value):
                getattr(sock, name)[i] = v
        else:
            setattr(sock, name, value)
    raw = bytes(sock)
    return Buffer.guarded_copy(raw, MEM_GUARD)


def _payload(data, what: str, writable: bool, rc: RunContext) -> tuple[Buffer, int, int]:
    """(buffer, start, end) of a message or header the context points at (``data``, may be
    empty: start == end then, at a valid address)."""
    raw = bytes(data) if data is not None else b""
    buf = Buffer(max(len(raw), 1), init=raw.ljust(1, b"\0"), guard=MEM_GUARD)
    if raw:
        region = Region(buf.address, len(raw), what, writable, buf)
        rc.regions.append(region)
        if writable:
            rc.fast = region
    return buf, buf.address, buf.address + len(raw)


def _sk_msg_context(rc: RunContext, ctx, data) -> None:
    """sk_msg (context only: the kernel has no BPF_PROG_TEST_RUN for it): r1 = a read-only
    ``struct sk_msg_md`` from ``ctx`` (addresses, ports; data, data_end, size and sk are the
    run's), data/data_end over a writable copy of ``data`` (the message), ``sk`` a read-only
    ``struct bpf_sock`` with the same addresses (the kernel's sk_msg socket is never NULL).
    ``last_data`` is the message after the run, ``last_ctx`` the struct (pointers zeroed)."""
    md = SkMsgMd()
    _fill(md, ctx, ("data", "data_end", "size", "sk"), "sk_msg_md")
    msg, start, end = _payload(data, "packet", True, rc)
    sbuf = _socket_of({"family": md.family, "type": 1, "protocol": 6, "src_ip4": md.local_ip4,
                       "dst_ip4": md.remote_ip4, "src_ip6": list(md.local_ip6),
                       "dst_ip6": list(md.remote_ip6), "src_port": md.local_port,
                       "dst_port": md.remote_port & 0xFFFF})
    rc.regions.append(Region(sbuf.address, sbuf.size, "sock", False, sbuf))
    md.data, md.data_end, md.size, md.sk = start, end, end - start, sbuf.address
    raw = bytes(md)
    buf = Buffer.guarded_copy(raw, MEM_GUARD)
    rc.regions.append(Region(buf.address, buf.size, "ctx", False, buf))
    rc.r1, rc.buffer, rc._keep = buf.address, buf, (msg, sbuf)

    def finish(r0):
        after = SkMsgMd.from_buffer_copy(buf.bytes())
        after.data = after.data_end = after.sk = 0
        rc.last_ctx = after
        rc.last_data = msg.bytes()[:end - start]
    rc._finish = finish


def _sock_ops_context(rc: RunContext, ctx, data) -> None:
    """sock_ops (context only): r1 = a writable ``struct bpf_sock_ops`` from ``ctx`` (op, args,
    addresses, TCP counters...), copied back after the run (the program's ``reply``);
    skb_data/skb_data_end over a read-only copy of ``data`` (the TCP header being parsed or
    written, may be empty), skb_len its length; ``sk`` is NULL (PTR_TO_SOCKET_OR_NULL: a
    program checks it), and may not be set by the caller."""
    ops = BpfSockOps()
    _fill(ops, ctx, ("sk", "skb_data", "skb_data_end", "skb_len"), "bpf_sock_ops")
    hdr, start, end = _payload(data, "packet", False, rc)
    ops.skb_data, ops.skb_data_end, ops.skb_len = start, end, end - start
    raw = bytes(ops)
    buf = Buffer.guarded_copy(raw, MEM_GUARD)
    rc.regions.append(Region(buf.address, buf.size, "ctx", True, buf))
    rc.fast = rc.regions[-1]
    rc.r1, rc.buffer, rc._keep = buf.address, buf, hdr

    def finish(r0):
        after = BpfSockOps.from_buffer_copy(buf.bytes())
        after.skb_data = after.skb_data_end = 0
        rc.last_ctx = after
        rc.last_data = hdr.bytes()[:end - start]
        if r0 is not None and isinstance(ctx, (ctypes.Structure, bytearray)):
            _write_back(ctx, bytes(after))
    rc._finish = finish

