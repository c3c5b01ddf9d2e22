"""The socket-buffer packet helpers (net/core/filter.c), for both engines.

They act on the run's :class:`~pybpf.runtime.skb_buff.SkbBuff` (``rc.skb`` of the active run,
:data:`~pybpf.runtime.helpers.ACTIVE_RUN`), with the kernel's limits, errors and arithmetic as a
BPF_PROG_TEST_RUN skb meets them (linear, ``ip_summed`` CHECKSUM_NONE, no tunnel dst at first):

* ``bpf_skb_load_bytes(skb, off, to, len)``: -EFAULT (``to`` zeroed) for an offset above
  INT_MAX or past ``len`` (and always in a flow dissector's test run, which has no skb); ``bpf_skb_load_bytes_relative(..., start_header)`` counts from the MAC
  (``BPF_HDR_START_MAC``) or network (``BPF_HDR_START_NET``) header, offset at most 0xffff, up
  to the end of the packet.
* ``bpf_skb_store_bytes(skb, off, from, len, flags)``: -EINVAL for flags other than
  ``BPF_F_RECOMPUTE_CSUM`` (nothing to recompute: no CHECKSUM_COMPLETE in a test run) and
  ``BPF_F_INVALIDATE_HASH`` (``__sk_buff.hash`` becomes 0); -EFAULT past the packet.
* ``bpf_skb_pull_data(skb, len)``: 0, or -ENOMEM when ``len`` exceeds the packet (linear).
* ``bpf_skb_change_tail(skb, len, flags)`` / ``bpf_skb_change_head(skb, room, flags)``: grow
  (zeroed bytes) or trim, within ``BPF_SKB_MAX_LEN`` and not below the network header; the
  head moves the MAC header to the new front.
* ``bpf_skb_adjust_room(skb, diff, mode, flags)``: push zeroed room or pop bytes after the MAC
  header (``BPF_ADJ_ROOM_MAC``) or the base network header (``BPF_ADJ_ROOM_NET``), with the
  encapsulation flags' checks and effects (``skb->encapsulation``, inner headers, the outer
  protocol) and the decapsulation flags (``BPF_F_ADJ_ROOM_DECAP_L3_IPV4/6``).
* ``bpf_l3_csum_replace`` / ``bpf_l4_csum_replace(skb, off, from, to, flags)``: the checksum at
  ``off`` updated with x86's ``csum_fold`` for sizes 0 (a ``bpf_csum_diff`` result), 2 and 4;
  l4 knows ``BPF_F_PSEUDO_HDR`` (no CHECKSUM_PARTIAL or COMPLETE here: it changes nothing),
  ``BPF_F_MARK_MANGLED_0`` (a zero checksum stays 0 and a result of 0 becomes 0xffff),
  ``BPF_F_MARK_ENFORCE``, ``BPF_F_IPV6``.
* ``bpf_csum_diff(from, from_size, to, to_size, seed)``: x86's ``csum_partial`` (the exact carry
  chain, so even the two encodings of zero come out as the kernel's), folded to 16 bits as
  Linux 6.18 returns it; ``bpf_csum_update``: -ENOTSUPP (no CHECKSUM_COMPLETE in a test run).
* ``bpf_skb_set_tunnel_key`` / ``bpf_skb_get_tunnel_key``: the tunnel metadata the skb carries
  (none at first: -EINVAL with the buffer zeroed), with the kernel's flag checks, old struct
  sizes and field mapping (set's remote address is the tunnel's destination, which get reports
  as ``local``).
* ``bpf_clone_redirect(skb, ifindex, flags)``: a copy of the packet goes to a device of the
  run's network namespace (``NETDEVS``: the loopback, ifindex 1, which BPF_PROG_TEST_RUN runs
  on); each is recorded as a :class:`Clone` (ifindex, flags, packet) in the run's ``clones``,
  which ``LoadedProgram.last_clones`` reports; an unknown ifindex or flags other than
  ``BPF_F_INGRESS`` give -EINVAL.

Every helper first checks that its ``skb`` argument is the run's ``__sk_buff`` (a verified
program can pass nothing else; an unverified one gets MemoryAccessError), and the memory
arguments were checked against the run's regions by their prototype before the call, in both
engines; the packet range is checked here, against the packet's current bounds.
"""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from pybpf.errors import MemoryAccessError, VMError
from pybpf.helper_names import HELPER_IDS
from pybpf.uapi import ENOTSUPP
from pybpf.verifier import protos

from .helpers import ACTIVE_REGIONS, ACTIVE_RUN, Helper
from .memory import PACK, PROC, UNPACK
from .skb_buff import BPF_SKB_MAX_LEN

M64, M32 = (1 << 64) - 1, 0xFFFFFFFF
INT_MAX = (1 << 31) - 1
NETDEVS = {1: "lo"}                  # BPF_PROG_TEST_RUN's device; clone_redirect targets

# include/uapi/linux/bpf.h
BPF_F_RECOMPUTE_CSUM, BPF_F_INVALIDATE_HASH = 1 << 0, 1 << 1
BPF_F_HDR_FIELD_MASK = 0xF
BPF_F_PSEUDO_HDR, BPF_F_MARK_MANGLED_0, BPF_F_MARK_ENFORCE, BPF_F_IPV6 = 0x10, 0x20, 0x40, 0x80
BPF_HDR_START_MAC, BPF_HDR_START_NET = 0, 1
BPF_ADJ_ROOM_NET, BPF_ADJ_ROOM_MAC = 0, 1
ADJ_FIXED_GSO, ADJ_ENCAP_L3_IPV4, ADJ_ENCAP_L3_IPV6 = 1 << 0, 1 << 1, 1 << 2
ADJ_ENCAP_L4_GRE, ADJ_ENCAP_L4_UDP, ADJ_NO_CSUM_RESET = 1 << 3, 1 << 4, 1 << 5
ADJ_ENCAP_L2_ETH, ADJ_DECAP_L3_IPV4, ADJ_DECAP_L3_IPV6 = 1 << 6, 1 << 7, 1 << 8
ADJ_ENCAP_L2_SHIFT = 56
_ADJ_ENCAP_L3 = ADJ_ENCAP_L3_IPV4 | ADJ_ENCAP_L3_IPV6
_ADJ_DECAP_L3 = ADJ_DECAP_L3_IPV4 | ADJ_DECAP_L3_IPV6
_ADJ_MASK = (ADJ_FIXED_GSO | _ADJ_ENCAP_L3 | ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP
             | ADJ_ENCAP_L2_ETH | (0xFF << ADJ_ENCAP_L2_SHIFT) | _ADJ_DECAP_L3)
BPF_F_TUNINFO_IPV6, BPF_F_TUNINFO_FLAGS = 1 << 0, 1 << 4
BPF_F_ZERO_CSUM_TX, BPF_F_DONT_FRAGMENT, BPF_F_SEQ_NUMBER = 1 << 1, 1 << 2, 1 << 3
BPF_F_NO_TUNNEL_KEY = 1 << 4
BPF_F_INGRESS = 1
TUNNEL_KEY_SIZE = 44                 # sizeof(struct bpf_tunnel_key)
# its older sizes: offsetof local_ipv6[0], tunnel_label, tunnel_ext, remote_ipv6[1]
_TUNNEL_OLD_SIZES = (28, 24, 22, 8)
# IP_TUNNEL_*_BIT numbers (include/net/ip_tunnels.h)
_TUN_CSUM, _TUN_KEY, _TUN_SEQ, _TUN_DONT_FRAGMENT, _TUN_NOCACHE = 0, 2, 3, 8, 13
ETH_P_IP_BE, ETH_P_IPV6_BE = 0x0008, 0xDD86     # htons(ETH_P_IP), htons(ETH_P_IPV6) as stored


def _err(e: int) -> int:
    return -e & M64


def _s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v >> 31 else v


# --- ones' complement arithmetic, as x86-64 Linux computes it ------------------------------------
def _adc(acc: int, words) -> int:
    """``addq w0; adcq w1; ...; adcq $0`` on ``acc``: the last carry is added once (a carry
    out of that add is lost, as in the instruction sequence)."""
    s, c, first = acc, 0, True
    for w in words:
        s += w + (0 if first else c)
        first = False
        c, s = s >> 64, s & M64
    return (s + c) & M64


def _q(buf: bytes, i: int) -> int:
    return int.from_bytes(buf[i:i + 8], "little")


def csum_partial(buf: bytes, seed: int) -> int:
    """arch/x86/lib/csum-partial_64.c: 40-byte blocks (two streams from 80 bytes on), then 32,
    16, 8 and the zero-padded tail, each chain ending ``adcq $0``; folded to 32 bits."""
    t, n, p = seed & M32, len(buf), 0
    if n >= 80:
        t2 = 0
        while n >= 80:
            t = _adc(t, [_q(buf, p + 8 * k) for k in range(5)])
            t2 = _adc(t2, [_q(buf, p + 40 + 8 * k) for k in range(5)])
            p, n = p + 80, n - 80
        t = _adc(t, [t2])
    if n >= 40:
        t = _adc(t, [_q(buf, p + 8 * k) for k in range(5)])
        p, n = p + 40, n - 40
        if not n:
            return _finalize(t)
    for size in (32, 16, 8):
        if n & size:
            t = _adc(t, [_q(buf, p + 8 * k) for k in range(size // 8)])
            p += size
    if n & 7:
        t = _adc(t, [int.from_bytes(buf[p:p + (n & 7)], "little")])
    return _finalize(t)


def _finalize(t: int) -> int:
    """csum_finalize_sum: (t + ror64(t, 32)) >> 32."""
    return ((t + (((t >> 32) | (t << 32)) & M64)) & M64) >> 32


def csum_add(a: int, b: int) -> int:
    r = (a + b) & M32
    return (r + (r < b)) & M32


def csum_sub(a: int, b: int) -> int:
    return csum_add(a, ~b & M32)


def csum_from32to16(x: int) -> int:
    x = (x + (((x >> 16) | (x << 16)) & M32)) & M32
    return x >> 16


def csum_fold(x: int) -> int:
    """x86's csum_fold: ``addl (x << 16), (x & 0xffff0000); adcl $0xffff``, then ~ >> 16."""
    a, b = x & 0xFFFF0000, (x << 16) & M32
    s = a + b
    s = (s & M32) + 0xFFFF + (s >> 32)
    return (~s & M32) >> 16


def csum16_add(a: int, b: int) -> int:
    r = (a + b) & 0xFFFF
    return (r + (r < (b & 0xFFFF))) & 0xFFFF


def csum_replace4(old_sum: int, frm: int, to: int) -> int:
    tmp = csum_sub(~old_sum & M32, frm & M32)          # ~csum_unfold(*sum): ~ of a u32
    return csum_fold(csum_add(tmp, to & M32))


def csum_replace2(old_sum: int, frm: int, to: int) -> int:
    return ~csum16_add(csum16_add(~old_sum & 0xFFFF, ~frm & 0xFFFF), to & 0xFFFF) & 0xFFFF


def csum_replace_by_diff(old_sum: int, diff: int) -> int:
    return csum_fold(csum_add(diff & M32, ~old_sum & M32))


# --- the run's sk_buff ---------------------------------------------------------------------------
def _skb(ctx: int, name: str):
    """The run's SkbBuff for ``ctx`` (which must be the run's __sk_buff)."""
    sb = getattr(ACTIVE_RUN.get(), "skb", None)
    if sb is None:
        raise VMError(f"bpf_{name} needs a socket-buffer run (sched_cls, socket_filter, "
                      f"cgroup_skb, lwt_* with data=<packet>)")
    if ctx != sb.ctx_address:
        raise MemoryAccessError(None, ctx, 192, f"bpf_{name} ctx argument",
                                f"the run's __sk_buff at 0x{sb.ctx_address:x}")
    return sb


def _zero(addr: int, size: int) -> None:
    if size:
        ctypes.memset(addr, 0, size)


def skb_load_bytes(ctx: int, offset: int, to: int, size: int) -> int:
    rc = ACTIVE_RUN.get()
    if getattr(rc, "prog_type", None) == "flow_dissector" and ctx == rc.r1:
        # bpf_flow_dissector_load_bytes reads ctx->skb, which BPF_PROG_TEST_RUN's dissector
        # context has not (it dissects a bare buffer): -EFAULT, the buffer zeroed
        _zero(to, size & M32)
        return _err(errno.EFAULT)
    sb = _skb(ctx, "skb_load_bytes")
    offset, size = offset & M32, size & M32
    if offset > INT_MAX or offset + size > sb.len:
        _zero(to, size)
        return _err(errno.EFAULT)
    ctypes.memmove(to, sb.data + offset, size)
    return 0


def skb_load_bytes_relative(ctx: int, offset: int, to: int, size: int, start: int) -> int:
    sb = _skb(ctx, "skb_load_bytes_relative")
    offset, size, start = offset & M32, size & M32, start & M32
    base = {BPF_HDR_START_MAC: sb.mac, BPF_HDR_START_NET: sb.network}.get(start)
    if offset > 0xFFFF or base is None or base + offset + size > sb.tail:
        _zero(to, size)
        return _err(errno.EFAULT)
    ctypes.memmove(to, base + offset, size)
    return 0


def skb_store_bytes(ctx: int, offset: int, frm: int, size: int, flags: int) -> int:
    sb = _skb(ctx, "skb_store_bytes")
    offset, size = offset & M32, size & M32
    if flags & ~(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH):
        return _err(errno.EINVAL)
    if offset > INT_MAX or offset + size > sb.len:
        return _err(errno.EFAULT)
    ctypes.memmove(sb.data + offset, frm, size)
    if flags & BPF_F_INVALIDATE_HASH:
        sb.skb.hash = 0                                 # skb_clear_hash
    return 0


def skb_pull_data(ctx: int, size: int) -> int:
    sb = _skb(ctx, "skb_pull_data")
    size = size & M32 or sb.len                         # 0: the whole linear part
    return _err(errno.ENOMEM) if size > sb.len else 0


def _gso(sb) -> bool:
    return bool(sb.skb.gso_size)


def skb_change_tail(ctx: int, new_len: int, flags: int) -> int:
    sb = _skb(ctx, "skb_change_tail")
    new_len = new_len & M32
    # __bpf_skb_min_len: the network (or a set transport) header must stay in the packet
    min_len = ((sb.transport if sb.transport is not None else sb.network) - sb.data) & M32
    if flags or new_len > BPF_SKB_MAX_LEN or new_len < min_len:
        return _err(errno.EINVAL)
    if sb.encapsulation:
        return _err(ENOTSUPP)
    if new_len > sb.len:
        sb.reserve(tail=new_len - sb.len)
        _zero(sb.tail, new_len - sb.len)
    sb.len = new_len
    if _gso(sb):                                        # skb_gso_reset
        sb.skb.gso_size = sb.skb.gso_segs = 0
    sb.sync(ACTIVE_REGIONS.get())
    return 0


def skb_change_head(ctx: int, room: int, flags: int) -> int:
    sb = _skb(ctx, "skb_change_head")
    room = room & M32
    new_len = (sb.len + room) & M32
    if flags or (not _gso(sb) and new_len > BPF_SKB_MAX_LEN) or new_len < sb.len:
        return _err(errno.EINVAL)
    sb.reserve(head=room)
    sb.data -= room
    sb.len += room
    _zero(sb.data, room)
    sb.mac = sb.data                                    # skb_reset_mac_header
    sb.sync(ACTIVE_REGIONS.get())
    return 0


def _net_base_len(sb) -> int | None:
    return {ETH_P_IP_BE: 20, ETH_P_IPV6_BE: 40}.get(sb.skb.protocol)


def _push(sb, off: int, n: int) -> None:
    """bpf_skb_net_hdr_push: ``n`` zero bytes after the first ``off``; headers move down."""
    trans_same = sb.transport == sb.network
    sb.reserve(head=n)
    sb.data -= n
    sb.len += n
    ctypes.memmove(sb.data, sb.data + n, off)
    _zero(sb.data + off, n)
    sb.mac -= n
    sb.network -= n
    if trans_same:
        sb.transport = sb.network


def _pop(sb, off: int, n: int) -> int:
    """bpf_skb_net_hdr_pop: remove ``n`` bytes after the first ``off``; headers move up."""
    if off + n > sb.len:                                # pskb_may_pull
        return _err(errno.ENOMEM)
    trans_same = sb.transport == sb.network
    ctypes.memmove(sb.data + n, sb.data, off)
    sb.data += n
    sb.len -= n
    sb.mac += n
    sb.network += n
    if trans_same:
        sb.transport = sb.network
    return 0


def _net_grow(sb, off: int, n: int, flags: int) -> int:
    inner_mac_len = (flags >> ADJ_ENCAP_L2_SHIFT) & 0xFF
    encap = bool(flags & _ADJ_ENCAP_L3)
    if _gso(sb):            # a test run's GSO skb has no gso_type: neither TCP nor UDP_L4
        return _err(ENOTSUPP)
    if encap:
        if (flags & _ADJ_ENCAP_L3) == _ADJ_ENCAP_L3:
            return _err(errno.EINVAL)
        if flags & ADJ_ENCAP_L4_GRE and flags & ADJ_ENCAP_L4_UDP:
            return _err(errno.EINVAL)
        if flags & ADJ_ENCAP_L2_ETH and inner_mac_len < 14:
            return _err(errno.EINVAL)
        if sb.encapsulation:
            return _err(errno.EALREADY)
        if inner_mac_len > n:
            return _err(errno.EINVAL)
        mac_len = sb.network - sb.mac
    _push(sb, off, n)
    if encap:
        sb.encapsulation = True
        sb.network = sb.data + mac_len                  # skb_set_network_header(mac_len)
        if flags & (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP):
            sb.transport = sb.network + (40 if flags & ADJ_ENCAP_L3_IPV6 else 20)
        proto = sb.skb.protocol
        if proto == ETH_P_IP_BE and flags & ADJ_ENCAP_L3_IPV6:
            sb.skb.protocol = ETH_P_IPV6_BE
        elif proto == ETH_P_IPV6_BE and flags & ADJ_ENCAP_L3_IPV4:
            sb.skb.protocol = ETH_P_IP_BE
    return 0


def _net_shrink(sb, off: int, n: int, flags: int) -> int:
    if flags & ~(ADJ_FIXED_GSO | _ADJ_DECAP_L3 | ADJ_NO_CSUM_RESET):
        return _err(errno.EINVAL)
    if _gso(sb):
        return _err(ENOTSUPP)
    r = _pop(sb, off, n)
    if r:
        return r
    proto = sb.skb.protocol
    if proto == ETH_P_IP_BE and flags & ADJ_DECAP_L3_IPV6:
        sb.skb.protocol = ETH_P_IPV6_BE
    elif proto == ETH_P_IPV6_BE and flags & ADJ_DECAP_L3_IPV4:
        sb.skb.protocol = ETH_P_IP_BE
    return 0


def skb_adjust_room(ctx: int, len_diff: int, mode: int, flags: int) -> int:
    sb = _skb(ctx, "skb_adjust_room")
    diff, mode = _s32(len_diff), mode & M32
    shrink, n = diff < 0, abs(diff) & M32
    if flags & ~(_ADJ_MASK | ADJ_NO_CSUM_RESET):
        return _err(errno.EINVAL)
    if n > 0xFFF:
        return _err(errno.EFAULT)
    len_min = _net_base_len(sb)
    if len_min is None:
        return _err(ENOTSUPP)
    off = sb.network - sb.mac                           # skb_mac_header_len
    if mode == BPF_ADJ_ROOM_NET:
        off += len_min
    elif mode != BPF_ADJ_ROOM_MAC:
        return _err(ENOTSUPP)
    if flags & _ADJ_DECAP_L3:
        if not shrink:
            return _err(errno.EINVAL)
        decap = flags & _ADJ_DECAP_L3
        if decap == _ADJ_DECAP_L3:
            return _err(errno.EINVAL)
        len_min = 20 if decap == ADJ_DECAP_L3_IPV4 else 40
    len_cur = (sb.len - (sb.network - sb.data)) & M32
    if (shrink and (n >= len_cur or len_cur - n < len_min)) or \
            (not shrink and sb.len + n > BPF_SKB_MAX_LEN and not _gso(sb)):
        return _err(ENOTSUPP)
    r = _net_shrink(sb, off, n, flags) if shrink else _net_grow(sb, off, n, flags)
    sb.sync(ACTIVE_REGIONS.get())
    return r


def _csum_at(sb, offset: int, name: str) -> int | None:
    """The address of the 16-bit checksum at ``offset``, or None (-EFAULT)."""
    offset &= M32
    if offset > 0xFFFF or offset & 1 or offset + 2 > sb.len:
        return None
    return sb.data + offset


def l3_csum_replace(ctx: int, offset: int, frm: int, to: int, flags: int) -> int:
    sb = _skb(ctx, "l3_csum_replace")
    if flags & ~BPF_F_HDR_FIELD_MASK:
        return _err(errno.EINVAL)
    at = _csum_at(sb, offset, "l3_csum_replace")
    if at is None:
        return _err(errno.EFAULT)
    old, size = UNPACK[2](PROC, at)[0], flags & BPF_F_HDR_FIELD_MASK
    if size == 0:
        if frm:
            return _err(errno.EINVAL)
        new = csum_replace_by_diff(old, to)
    elif size == 2:
        new = csum_replace2(old, frm, to)
    elif size == 4:
        new = csum_replace4(old, frm, to)
    else:
        return _err(errno.EINVAL)
    PACK[2](PROC, at, new)
    return 0


def l4_csum_replace(ctx: int, offset: int, frm: int, to: int, flags: int) -> int:
    sb = _skb(ctx, "l4_csum_replace")
    mangled0, enforce = flags & BPF_F_MARK_MANGLED_0, flags & BPF_F_MARK_ENFORCE
    if flags & ~(BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE | BPF_F_PSEUDO_HDR | BPF_F_IPV6
                 | BPF_F_HDR_FIELD_MASK):
        return _err(errno.EINVAL)
    at = _csum_at(sb, offset, "l4_csum_replace")
    if at is None:
        return _err(errno.EFAULT)
    old = UNPACK[2](PROC, at)[0]
    if mangled0 and not enforce and not old:
        return 0
    # inet_proto_csum_replace*: without CHECKSUM_PARTIAL the field is updated as l3's, the
    # pseudo-header flag only matters to a CHECKSUM_COMPLETE skb->csum (none in a test run)
    size = flags & BPF_F_HDR_FIELD_MASK
    if size == 0:
        if frm:
            return _err(errno.EINVAL)
        new = csum_replace_by_diff(old, to)
    elif size == 2:                     # inet_proto_csum_replace2 widens to replace4
        new = csum_replace4(old, frm & 0xFFFF, to & 0xFFFF)
    elif size == 4:
        new = csum_replace4(old, frm, to)
    else:
        return _err(errno.EINVAL)
    if mangled0 and not new:
        new = 0xFFFF                                    # CSUM_MANGLED_0
    PACK[2](PROC, at, new)
    return 0


def csum_diff(frm: int, from_size: int, to: int, to_size: int, seed: int) -> int:
    """Linux 6.18's bpf_csum_diff: any sizes, the 32-bit sum folded to 16 bits."""
    from_size, to_size = from_size & M32, to_size & M32
    a = bytes(PROC[frm:frm + from_size]) if from_size else b""
    b = bytes(PROC[to:to + to_size]) if to_size else b""
    ret = seed & M32
    if a and b:
        ret = csum_sub(csum_partial(b, ret), csum_partial(a, 0))
    elif b:
        ret = csum_partial(b, ret)
    elif a:
        ret = ~csum_partial(a, ~ret & M32) & M32
    return csum_from32to16(ret)


def csum_update(ctx: int, csum: int) -> int:
    _skb(ctx, "csum_update")
    return _err(ENOTSUPP)           # only a CHECKSUM_COMPLETE skb has a csum to update


# --- tunnel metadata ---------------------------------------------------------------------------
@dataclass
class TunnelInfo:
    """The ``struct ip_tunnel_info`` bpf_skb_set_tunnel_key attaches (what get reads back)."""

    ipv6: bool
    tun_id: int
    tos: int
    ttl: int
    flag_bits: frozenset
    dst: bytes          # 4 or 16 bytes, network order
    src: bytes
    label: int          # host order, 20 bits


def _u32(raw: bytes, off: int) -> int:
    return int.from_bytes(raw[off:off + 4], "little")


def skb_set_tunnel_key(ctx: int, frm: int, size: int, flags: int) -> int:
    sb = _skb(ctx, "skb_set_tunnel_key")
    size = size & M32
    if flags & ~(BPF_F_TUNINFO_IPV6 | BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT
                 | BPF_F_SEQ_NUMBER | BPF_F_NO_TUNNEL_KEY):
        return _err(errno.EINVAL)
    if size != TUNNEL_KEY_SIZE and size not in _TUNNEL_OLD_SIZES:
        return _err(errno.EINVAL)
    key = bytes(PROC[frm:frm + size]).ljust(TUNNEL_KEY_SIZE, b"\0")
    ipv6 = bool(flags & BPF_F_TUNINFO_IPV6)
    label, ext = _u32(key, 24), int.from_bytes(key[22:24], "little")
    if (not ipv6 and label) or ext:
        return _err(errno.EINVAL)
    bits = {_TUN_NOCACHE}
    if flags & BPF_F_DONT_FRAGMENT:
        bits.add(_TUN_DONT_FRAGMENT)
    if not flags & BPF_F_ZERO_CSUM_TX:
        bits.add(_TUN_CSUM)
    if flags & BPF_F_SEQ_NUMBER:
        bits.add(_TUN_SEQ)
    if not flags & BPF_F_NO_TUNNEL_KEY:
        bits.add(_TUN_KEY)
    if ipv6:
        dst, src = key[4:20], key[28:44]
    else:       # cpu_to_be32 of the host-order u32s
        dst, src = _u32(key, 4).to_bytes(4, "big"), _u32(key, 28).to_bytes(4, "big")
    sb.tunnel = TunnelInfo(ipv6, _u32(key, 0), key[20], key[21], frozenset(bits), dst, src,
                           label & 0xFFFFF if ipv6 else 0)
    return 0


def skb_get_tunnel_key(ctx: int, to: int, size: int, flags: int) -> int:
    sb = _skb(ctx, "skb_get_tunnel_key")
    size, info = size & M32, sb.tunnel
    if info is None or flags & ~(BPF_F_TUNINFO_IPV6 | BPF_F_TUNINFO_FLAGS):
        _zero(to, size)
        return _err(errno.EINVAL)
    if info.ipv6 != bool(flags & BPF_F_TUNINFO_IPV6):
        _zero(to, size)
        return _err(errno.EPROTO)
    if size != TUNNEL_KEY_SIZE and (size not in _TUNNEL_OLD_SIZES
                                    or (size == 8 and info.ipv6)):
        _zero(to, size)
        return _err(errno.EINVAL)
    out = bytearray(TUNNEL_KEY_SIZE)
    out[0:4] = (info.tun_id & M32).to_bytes(4, "little")
    out[20], out[21] = info.tos, info.ttl
    if flags & BPF_F_TUNINFO_FLAGS:     # ip_tunnel_flags_to_be16
        be = sum(1 << b for b in info.flag_bits if b < 16)
        out[22:24] = be.to_bytes(2, "big")
    if info.ipv6:
        out[4:20], out[28:44] = info.src, info.dst
        out[24:28] = info.label.to_bytes(4, "little")
    else:       # be32_to_cpu: host-order u32s, the other words zero
        out[4:8] = int.from_bytes(info.src, "big").to_bytes(4, "little")
        out[28:32] = int.from_bytes(info.dst, "big").to_bytes(4, "little")
    PROC[to:to + size] = bytes(out[:size])
    return 0


# --- clone and redirect ------------------------------------------------------------------------
@dataclass(frozen=True)
class Clone:
    """A copy of the packet bpf_clone_redirect sent: ``ifindex``, ``flags`` (BPF_F_INGRESS:
    received on that device instead of sent) and the packet as it was at the call."""

    ifindex: int
    flags: int
    data: bytes


def clone_redirect(ctx: int, ifindex: int, flags: int) -> int:
    sb = _skb(ctx, "clone_redirect")
    ifindex = ifindex & M32
    if flags & ~BPF_F_INGRESS or ifindex not in NETDEVS:
        return _err(errno.EINVAL)
    if sb.mac >= sb.network:                # __bpf_redirect_common: no link-layer header
        return _err(errno.ERANGE)
    ACTIVE_RUN.get().clones.append(Clone(ifindex, flags,
                                         ctypes.string_at(sb.mac, sb.tail - sb.mac)))
    return 0        # the loopback takes it: dev_queue_xmit / netif_rx succeed


# --- registration --------------------------------------------------------------------------------
_FNS = (skb_load_bytes, skb_load_bytes_relative, skb_store_bytes, skb_pull_data, skb_change_tail,
        skb_change_head, skb_adjust_room, l3_csum_replace, l4_csum_replace, csum_diff,
        csum_update, skb_get_tunnel_key, skb_set_tunnel_key, clone_redirect)


def install(helpers) -> None:
    """Add the socket-buffer helpers to ``helpers`` (a HelperRegistry) under their kernel ids,
    with the prototypes of the one table."""
    for fn in _FNS:
        helpers.add(Helper(HELPER_IDS[fn.__name__], fn.__name__, fn,
                           protos.helper_proto(fn.__name__)))
