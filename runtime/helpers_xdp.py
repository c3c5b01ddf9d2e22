"""The XDP packet helpers and the redirect family (net/core/filter.c), for both engines.

Packet helpers act on the run's :class:`~pybpf.runtime.xdp_buff.XdpBuff` (``rc.xdp``, the active
run from :data:`~pybpf.runtime.helpers.ACTIVE_RUN`), with the kernel's limits and errors:

* ``bpf_xdp_adjust_head(ctx, delta)``: ``data`` moves by ``delta`` (the metadata with it); -EINVAL
  below the ``struct xdp_frame`` + metadata at the hard start or past ``data_end - ETH_HLEN``.
* ``bpf_xdp_adjust_tail(ctx, delta)``: ``data_end`` moves; -EINVAL past the frame's hard end
  (4096 - 320 bytes from the hard start) or below ``data + ETH_HLEN``; grown bytes are zeroed.
  With fragments the last one grows within its page (-EINVAL past it) or fragments shrink
  from the end (-EINVAL below ETH_HLEN bytes in all), emptied ones freed.
* ``bpf_xdp_adjust_meta(ctx, delta)``: ``data_meta`` moves; -EINVAL outside
  [frame end, ``data``], -EACCES for a length that is not a multiple of 4 or above 255.
* ``bpf_xdp_get_buff_len(ctx)``: ``data_end - data`` plus the fragments.
* ``bpf_xdp_load_bytes`` / ``bpf_xdp_store_bytes(ctx, off, buf, len)``: -EFAULT for an offset or
  length above 0xffff, -EINVAL past the packet (``bpf_xdp_pointer``); ranges across the
  linear part and fragments are copied piece by piece.

Every helper checks that ``ctx`` is the run's ``xdp_md`` (a verified program can pass nothing
else; an unverified one gets MemoryAccessError) and the buffers against the run's regions
(``buf`` by the prototype, before the call, in both engines; the packet range here). The
packet region of the run's table moves with the pointers, so later accesses are checked against
the new bounds.

Redirects record where the packet goes in ``rc.redirect`` (a :class:`Redirect`), the kernel's
``bpf_redirect_info``: ``LoadedProgram.last_redirect`` reports it when the program's verdict
acts on it (XDP_REDIRECT, TC_ACT_REDIRECT). ``bpf_redirect`` is the XDP variant in xdp runs
(flags must be 0, else XDP_ABORTED) and the tc one elsewhere (flags other than BPF_F_INGRESS
give TC_ACT_SHOT). ``bpf_redirect_map`` looks the key (truncated to u32, as the kernel's
``lookup_elem(map, u32 key)``) up in a devmap, devmap_hash, cpumap or xskmap
(:mod:`pybpf.runtime.maps.redirect`); a miss returns the low two flag bits (an XDP action)
unless BPF_F_BROADCAST is set; unknown flags give XDP_ABORTED.

``bpf_fib_lookup`` answers from the VM's :class:`~pybpf.runtime.fib.FibTable` (see there).
"""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from pybpf.errors import MemoryAccessError, VMError
from pybpf.helper_names import HELPER_IDS
from pybpf.uapi import TC_ACT_SHOT, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX
from pybpf.verifier import protos

from .helpers import ACTIVE_REGIONS, ACTIVE_RUN, Helper
from .xdp_buff import ETH_HLEN, PAGE_SIZE, XDP_FRAME_STRUCT, XDP_META_MAX

M64 = (1 << 64) - 1
TC_ACT_REDIRECT = 7              # include/uapi/linux/pkt_cls.h
BPF_F_INGRESS = 1
BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS = 1 << 3, 1 << 4
_XDP_ACTION_MASK = XDP_ABORTED | XDP_DROP | XDP_PASS | XDP_TX      # 3
_REDIRECT_FLAGS = {"devmap": BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS,
                   "devmap_hash": BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS,
                   "cpumap": 0, "xskmap": 0}


def _err(e: int) -> int:
    return -e & M64


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


@dataclass(frozen=True)
class Redirect:
    """Where a redirect helper sent the packet (the kernel's ``bpf_redirect_info``).

    ``kind``: "ifindex" (``bpf_redirect``) or the map type of ``bpf_redirect_map`` ("devmap",
    "devmap_hash", "cpumap", "xskmap"); ``target``: the ifindex, or the map key (u32);
    ``flags``: the flags the helper kept (BPF_F_INGRESS for tc; BPF_F_BROADCAST and
    BPF_F_EXCLUDE_INGRESS for a broadcast); ``map``: the map (None for "ifindex");
    ``value``: the map entry at the time of the call (a devmap's ``ifindex``, a cpumap's
    ``qsize``, an xskmap's socket), None for a broadcast or "ifindex".
    """

    kind: str
    target: int
    flags: int = 0
    map: object = None
    value: object = None


def _xdp(ctx: int, name: str):
    """The run's XdpBuff for ``ctx`` (which must be the run's xdp_md)."""
    rc = ACTIVE_RUN.get()
    xb = getattr(rc, "xdp", None)
    if xb is None:
        raise VMError(f"bpf_{name} needs an xdp run (prog_type 'xdp' with data=<packet>)")
    if ctx != xb.ctx_address:
        raise MemoryAccessError(None, ctx, 24, f"bpf_{name} ctx argument",
                                f"the run's xdp_md at 0x{xb.ctx_address:x}")
    return xb


def xdp_adjust_head(ctx: int, offset: int) -> int:
    xb = _xdp(ctx, "xdp_adjust_head")
    off = _s32(offset)
    metalen = xb.metalen
    data = xb.data + off
    if data < xb.hard_start + XDP_FRAME_STRUCT + metalen or data > xb.data_end - ETH_HLEN:
        return _err(errno.EINVAL)
    if metalen:
        ctypes.memmove(xb.data_meta + off, xb.data_meta, metalen)
    xb.set(ACTIVE_REGIONS.get(), data=data, data_meta=xb.data_meta + off)
    return 0


def _frags_adjust_tail(xb, off: int) -> int:
    """bpf_xdp_frags_increase_tail / bpf_xdp_frags_shrink_tail: grow the last fragment within
    its page (zeroed), or shrink fragments from the end, freeing emptied ones; the buffer is
    linear again when none is left (and the rest of the shrink comes off ``data_end``)."""
    if off >= 0:
        last = xb.frags[-1]
        if off > PAGE_SIZE - last.size:          # tailroom: frag_size - size - offset
            return _err(errno.EINVAL)
        ctypes.memset(last.address + last.size, 0, off)
        last.size += off
        return 0
    shrink = -off
    if shrink > xb.buff_len() - ETH_HLEN:
        return _err(errno.EINVAL)
    while xb.frags and shrink > 0:
        last = xb.frags[-1]
        cut = min(shrink, last.size)
        last.size -= cut
        shrink -= cut
        if not last.size:
            xb.frags.pop()
    if not xb.frags:
        xb.has_frags = False
        xb.set(ACTIVE_REGIONS.get(), data_end=xb.data_end - shrink)
    return 0


def xdp_adjust_tail(ctx: int, offset: int) -> int:
    xb = _xdp(ctx, "xdp_adjust_tail")
    off = _s32(offset)
    if xb.has_frags:
        return _frags_adjust_tail(xb, off)
    end = xb.data_end + off
    if end > xb.hard_end or end < xb.data + ETH_HLEN:
        return _err(errno.EINVAL)
    if off > 0:     # the grown part may hold old bytes: zeroed, as the kernel does
        ctypes.memset(xb.data_end, 0, off)
    xb.set(ACTIVE_REGIONS.get(), data_end=end)
    return 0


def xdp_adjust_meta(ctx: int, offset: int) -> int:
    xb = _xdp(ctx, "xdp_adjust_meta")
    meta = xb.data_meta + _s32(offset)
    metalen = xb.data - meta
    if meta < xb.hard_start + XDP_FRAME_STRUCT or meta > xb.data:
        return _err(errno.EINVAL)
    if metalen % 4 or metalen > XDP_META_MAX:       # xdp_metalen_invalid
        return _err(errno.EACCES)
    xb.set(ACTIVE_REGIONS.get(), data_meta=meta)
    return 0


def xdp_get_buff_len(ctx: int) -> int:
    xb = _xdp(ctx, "xdp_get_buff_len")
    return xb.buff_len()


def xdp_load_bytes(ctx: int, offset: int, buf: int, size: int) -> int:
    """Copy from the packet: one memmove when the range is in the linear part or in one
    fragment (bpf_xdp_pointer), else piece by piece (bpf_xdp_copy_buf)."""
    xb = _xdp(ctx, "xdp_load_bytes")
    offset, size = offset & 0xFFFFFFFF, size & 0xFFFFFFFF
    src = xb.pointer(offset, size)
    if src is None:
        ctypes.memmove(buf, xb.read(offset, size), size)
    elif src < 0:
        return _err(-src)
    else:
        ctypes.memmove(buf, src, size)
    return 0


def xdp_store_bytes(ctx: int, offset: int, buf: int, size: int) -> int:
    xb = _xdp(ctx, "xdp_store_bytes")
    offset, size = offset & 0xFFFFFFFF, size & 0xFFFFFFFF
    dst = xb.pointer(offset, size)
    if dst is None:
        xb.write(offset, ctypes.string_at(buf, size))
    elif dst < 0:
        return _err(-dst)
    else:
        ctypes.memmove(dst, buf, size)
    return 0


def redirect(ifindex: int, flags: int) -> int:
    rc = ACTIVE_RUN.get()
    ifindex &= 0xFFFFFFFF
    if rc is not None and rc.prog_type == "xdp":
        if flags:
            return XDP_ABORTED
        rc.redirect = Redirect("ifindex", ifindex)
        return XDP_REDIRECT
    if flags & ~BPF_F_INGRESS:       # bpf_redirect (tc): ~(BPF_F_INGRESS) | REDIRECT_INTERNAL
        return TC_ACT_SHOT
    if rc is not None:
        rc.redirect = Redirect("ifindex", ifindex, flags)
    return TC_ACT_REDIRECT


def make_redirect_map(resolve_map):
    def redirect_map(map_value: int, key: int, flags: int) -> int:
        m = resolve_map(map_value)
        mask = _REDIRECT_FLAGS.get(getattr(m, "type", None))
        if mask is None:
            raise VMError(f"bpf_redirect_map: 0x{map_value:x} is not a devmap, devmap_hash, "
                          f"cpumap or xskmap")
        if flags & ~(_XDP_ACTION_MASK | mask):
            return XDP_ABORTED
        rc = ACTIVE_RUN.get()
        index = key & 0xFFFFFFFF              # lookup_elem(map, u32 key)
        value = m.redirect_target(index)
        if value is None and not flags & BPF_F_BROADCAST:
            if rc is not None:
                rc.redirect = None            # a miss clears the redirect info
            return flags & _XDP_ACTION_MASK
        if rc is not None:
            broadcast = bool(flags & BPF_F_BROADCAST)
            rc.redirect = Redirect(m.type, index, flags if broadcast else 0, m,
                                   None if broadcast else value)
        return XDP_REDIRECT
    return redirect_map


def install(helpers, resolve_map, fib=None) -> None:
    """Add the XDP packet and redirect helpers to ``helpers`` under their kernel ids;
    ``fib``: a callable giving the VM's FibTable (bpf_fib_lookup), or None to leave it out."""
    fns = [xdp_adjust_head, xdp_adjust_tail, xdp_adjust_meta, xdp_get_buff_len, xdp_load_bytes,
           xdp_store_bytes, redirect, make_redirect_map(resolve_map)]
    if fib is not None:
        from .fib import make_fib_lookup     # noqa: PLC0415 (only with a table)
        fns.append(make_fib_lookup(fib))
    for fn in fns:
        name = fn.__name__
        helpers.add(Helper(HELPER_IDS[name], name, fn, protos.helper_proto(name)))
