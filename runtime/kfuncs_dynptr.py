"""Dynamic pointers (kernel/bpf/helpers.c, net/core/filter.c): the helpers
``bpf_dynptr_from_mem`` (197), ``bpf_dynptr_read`` (201), ``bpf_dynptr_write`` (202),
``bpf_dynptr_data`` (203) and the kfuncs ``bpf_dynptr_from_skb``, ``bpf_dynptr_from_xdp``,
``bpf_dynptr_slice``, ``bpf_dynptr_slice_rdwr``, ``bpf_dynptr_adjust``, ``bpf_dynptr_clone``,
``bpf_dynptr_is_null``, ``bpf_dynptr_is_rdonly``, ``bpf_dynptr_size``, ``bpf_dynptr_copy``,
``bpf_dynptr_memset`` and ``bpf_dynptr_from_skb_meta`` (ring buffer dynptrs:
:mod:`.ringbuf_dynptr`).

A ``struct bpf_dynptr`` is 16 bytes of the program's stack, laid out as the kernel's
``struct bpf_dynptr_kern``: ``data`` (u64), ``size`` (u32: the size in bits 0-23, the type in
bits 28-30, read-only in bit 31), ``offset`` (u32). ``data`` is the memory itself for a local
dynptr, and the context (``struct __sk_buff`` / ``struct xdp_md``) for skb, skb metadata and xdp
dynptrs: their packet (or the skb's metadata, ``[data_meta, data)``) is found through the
context at each call, as the kernel goes through the sk_buff, so a packet that moved is
followed. BPF_PROG_TEST_RUN gives a tc program no metadata, and neither does pybpf: an skb
metadata dynptr is empty (size 0), as in the kernel.

``bpf_dynptr_copy`` and ``bpf_dynptr_memset`` follow kernel/bpf/helpers.c step by step: direct
slices when both ends have one (a move, overlaps allowed), else the read or write path of the
side without one, else 256-byte chunks (xdp fragments); their errors are the kernel's (a NULL or
read-only destination -EINVAL, out of range -E2BIG).

Every access goes through the run's regions (:data:`pybpf.runtime.helpers.ACTIVE_REGIONS`): the
dynptr's own 16 bytes (also declared as a memory argument, so both engines check them before
the call), and the memory it describes, at each read, write or slice, so a dynptr forged by
unverified code still cannot reach outside the run's memory (MemoryAccessError, like any helper
argument). An skb dynptr on a read-only packet (socket_filter, cgroup_skb: the kernel's
``bpf_dynptr_from_skb_rdonly``) is read-only. The ``int`` results come back zero-extended, as the
x86-64 kernel leaves them; the ``long`` ones (helpers) sign-extended.
"""
from __future__ import annotations

import errno
import struct

from .contexts import SkBuff, XdpMd
from .helpers import ACTIVE_REGIONS, ACTIVE_RUN
from .memory import PROC, RegionTable

DYNPTR_SIZE = 16
DYNPTR_MAX_SIZE = (1 << 24) - 1
DYNPTR_TYPE_SHIFT = 28
DYNPTR_SIZE_MASK = 0xFFFFFF
DYNPTR_RDONLY_BIT = 1 << 31
TYPE_INVALID, TYPE_LOCAL, TYPE_RINGBUF, TYPE_SKB, TYPE_XDP, TYPE_SKB_META = 0, 1, 2, 3, 4, 5
COPY_CHUNK = 256            # the kernel's on-stack buffer in bpf_dynptr_copy/memset
BPF_F_RECOMPUTE_CSUM, BPF_F_INVALIDATE_HASH = 1 << 0, 1 << 1
M32, M64 = 0xFFFFFFFF, (1 << 64) - 1
_KERN = struct.Struct("<QII")
_SKB_DATA, _SKB_END = SkBuff.data.offset, SkBuff.data_end.offset
_SKB_HASH = SkBuff.hash.offset
_SKB_META = SkBuff.data_meta.offset
_XDP_DATA, _XDP_END = XdpMd.data.offset, XdpMd.data_end.offset
_EMPTY = RegionTable()


def _int(v: int) -> int:
    return v & M32


def _long(v: int) -> int:
    return v & M64


def _regions():
    r = ACTIVE_REGIONS.get()
    return _EMPTY if r is None else r


def _init(ptr: int, data: int, dtype: int, offset: int, size: int, rdonly: bool = False) -> None:
    word = size | dtype << DYNPTR_TYPE_SHIFT | (DYNPTR_RDONLY_BIT if rdonly else 0)
    _KERN.pack_into(PROC, ptr, data, word, offset)


def _set_null(ptr: int) -> None:
    _KERN.pack_into(PROC, ptr, 0, 0, 0)


def _load(ptr: int):
    """(data, type, read-only, offset, size) of the dynptr at ``ptr`` (checked by the caller)."""
    data, word, offset = _KERN.unpack_from(PROC, ptr)
    return (data, word >> DYNPTR_TYPE_SHIFT & 7, bool(word & DYNPTR_RDONLY_BIT), offset,
            word & DYNPTR_SIZE_MASK)


def _check_off_len(size: int, off: int, length: int) -> int:
    """bpf_dynptr_check_off_len: 0 or -E2BIG."""
    return -errno.E2BIG if length > size or off > size - length else 0


def _xdp_buff(ctx: int):
    """The run's XdpBuff when ``ctx`` is its xdp_md (fragments included), else None."""
    rc = ACTIVE_RUN.get()
    xb = getattr(rc, "xdp", None)
    return xb if xb is not None and xb.ctx_address == ctx else None


def _packet(regions, ctx: int, dtype: int) -> tuple[int, int]:
    """(start, length) of the packet behind an skb or xdp dynptr's context (the linear
    part; the xdp functions below go through the run's XdpBuff for fragments)."""
    lo, hi = (_SKB_DATA, _SKB_END) if dtype == TYPE_SKB else (_XDP_DATA, _XDP_END)
    start = regions.load(ctx + lo, 4)
    end = regions.load(ctx + hi, 4)
    return start, max(end - start, 0)


def dynptr_mem_args(index, kind):
    """A ``mem_args`` for a helper or kfunc whose argument ``index`` is a dynptr used as
    ``kind``; or, with ``index`` a tuple (index, kind, index, kind...), several dynptrs."""
    pairs = tuple(zip(index[::2], index[1::2])) if isinstance(index, tuple) else ((index, kind),)

    def mem_args(args: tuple) -> list:
        return [(args[i], DYNPTR_SIZE, k) for i, k in pairs]
    return mem_args


# --- constructors --------------------------------------------------------------------------------
def bpf_dynptr_from_mem(data: int, size: int, flags: int, ptr: int) -> int:
    """Helper 197: a local dynptr over [data, data + size) (checked by the engines as the
    helper's memory argument)."""
    size &= M32
    if flags:
        _set_null(ptr)
        return _long(-errno.EINVAL)
    if size > DYNPTR_MAX_SIZE:
        _set_null(ptr)
        return _long(-errno.E2BIG)
    _init(ptr, data, TYPE_LOCAL, 0, size)
    return 0


def bpf_dynptr_from_skb(skb: int, flags: int, ptr: int) -> int:
    regions = _regions()
    if flags:
        _set_null(ptr)
        return _int(-errno.EINVAL)
    start, length = _packet(regions, skb, TYPE_SKB)
    pkt = regions.find(start, max(length, 1)) if length else None
    rdonly = pkt is not None and not pkt.writable
    _init(ptr, skb, TYPE_SKB, 0, regions.load(skb, 4), rdonly)     # skb->len
    return 0


def bpf_dynptr_from_xdp(xdp: int, flags: int, ptr: int) -> int:
    regions = _regions()
    if flags:
        _set_null(ptr)
        return _int(-errno.EINVAL)
    xb = _xdp_buff(xdp)
    size = xb.buff_len() if xb is not None else _packet(regions, xdp, TYPE_XDP)[1]
    _init(ptr, xdp, TYPE_XDP, 0, size)          # xdp_get_buff_len
    return 0


def bpf_dynptr_from_skb_meta(skb: int, flags: int, ptr: int) -> int:
    """A dynptr over the skb's metadata, [data_meta, data) (always writable: tc only)."""
    regions = _regions()
    if flags:
        _set_null(ptr)
        return _int(-errno.EINVAL)
    meta = regions.load(skb + _SKB_META, 4)
    _init(ptr, skb, TYPE_SKB_META, 0, max(regions.load(skb + _SKB_DATA, 4) - meta, 0))
    return 0


# --- reads and writes ----------------------------------------------------------------------------
def _where(regions, data: int, dtype: int, off: int, length: int):
    """The address of ``length`` bytes at ``off`` into a dynptr's memory, or an errno when the
    (skb, xdp) packet is shorter now: skb -EFAULT, xdp -EINVAL."""
    if dtype in (TYPE_SKB, TYPE_XDP):
        start, plen = _packet(regions, data, dtype)
        if off + length > plen:
            return -errno.EFAULT if dtype == TYPE_SKB else -errno.EINVAL
        return start + off
    if dtype == TYPE_SKB_META:          # bpf_skb_meta_pointer: from the metadata's start
        return regions.load(data + _SKB_META, 4) + off
    return data + off


def _read(regions, src, offset: int, length: int, flags: int):
    """__bpf_dynptr_read: the ``length`` bytes at ``offset`` of dynptr ``src`` (as :func:`_load`
    gives it), or -errno."""
    data, dtype, _, base, size = src
    if not data or flags:
        return -errno.EINVAL
    err = _check_off_len(size, offset, length)
    if err:
        return err
    xb = _xdp_buff(data) if dtype == TYPE_XDP else None
    if xb is not None:                      # __bpf_xdp_load_bytes: fragments too
        at = xb.pointer(base + offset, length)
        if at is not None and at < 0:
            return at
        return xb.read(base + offset, length) if at is None else regions.read(at, length)
    at = _where(regions, data, dtype, base + offset, length)
    return at if at < 0 else regions.read(at, length)


def _write(regions, dst, offset: int, payload: bytes, flags: int) -> int:
    """__bpf_dynptr_write of ``payload`` at ``offset`` of dynptr ``dst``: 0 or -errno."""
    data, dtype, rdonly, base, size = dst
    length = len(payload)
    if not data or rdonly:
        return -errno.EINVAL
    err = _check_off_len(size, offset, length)
    if err:
        return err
    if dtype == TYPE_SKB:
        if flags & ~(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH):
            return -errno.EINVAL
    elif flags:
        return -errno.EINVAL
    xb = _xdp_buff(data) if dtype == TYPE_XDP else None
    if xb is not None:                      # __bpf_xdp_store_bytes: fragments too
        at = xb.pointer(base + offset, length)
        if at is not None and at < 0:
            return at
        if at is None:
            xb.write(base + offset, payload)
        else:
            regions.write(at, payload)
        return 0
    at = _where(regions, data, dtype, base + offset, length)
    if at < 0:
        return at
    regions.write(at, payload)
    if dtype == TYPE_SKB and flags & BPF_F_INVALIDATE_HASH:
        regions.store(data + _SKB_HASH, 4, 0)      # skb_clear_hash: __sk_buff.hash reads 0
    return 0


def _read_into(regions, dst_at: int, d, offset: int, length: int, flags: int) -> int:
    """Read ``length`` bytes of dynptr ``d`` at ``offset`` into the run's memory at ``dst_at``:
    0 or -errno. A failed skb read clears the destination, as __bpf_skb_load_bytes does."""
    got = _read(regions, d, offset, length, flags)
    if isinstance(got, int):
        if got == -errno.EFAULT and d[1] == TYPE_SKB:
            regions.write(dst_at, bytes(length))
        return got
    regions.write(dst_at, got)
    return 0


def bpf_dynptr_read(dst: int, length: int, src: int, offset: int, flags: int) -> int:
    regions = _regions()
    length, offset = length & M32, offset & M32
    return _long(_read_into(regions, dst, _load(src), offset, length, flags))


def bpf_dynptr_write(dst: int, offset: int, src: int, length: int, flags: int) -> int:
    regions = _regions()
    length, offset = length & M32, offset & M32
    d = _load(dst)
    if not d[0] or d[2]:
        return _long(-errno.EINVAL)
    return _long(_write(regions, d, offset, regions.read(src, length), flags))


def bpf_dynptr_data(ptr: int, offset: int, length: int) -> int:
    """Helper 203: a pointer into a local dynptr's memory, NULL otherwise (skb and xdp dynptrs
    use the slices)."""
    regions = _regions()
    offset, length = offset & M32, length & M32
    data, dtype, rdonly, base, size = _load(ptr)
    if not data or _check_off_len(size, offset, length) or rdonly:
        return 0
    if dtype not in (TYPE_LOCAL, TYPE_RINGBUF):
        return 0
    regions.check(data + base + offset, max(length, 1), "write")
    return data + base + offset


def _slice(regions, d, offset: int, length: int, buffer: int) -> int:
    """bpf_dynptr_slice of dynptr ``d``: the address of its ``length`` bytes at ``offset``
    (checked against the run's regions), ``buffer`` filled with them when they span xdp
    fragments, or 0."""
    data, dtype, _, base, size = d
    if not data or _check_off_len(size, offset, length):
        return 0
    if dtype in (TYPE_LOCAL, TYPE_RINGBUF):
        at = data + base + offset
    elif (xb := _xdp_buff(data) if dtype == TYPE_XDP else None) is not None:
        at = xb.pointer(base + offset, length)
        if at is None:                      # across fragments: copied into the buffer
            if not buffer:
                return 0
            regions.write(buffer, xb.read(base + offset, length))
            return buffer
        if at < 0:
            return 0
    else:
        # pybpf's skbs are linear: the slice is the packet itself, as skb_header_pointer and
        # bpf_xdp_pointer give for data in the linear part (BPF_PROG_TEST_RUN's packets are)
        at = _where(regions, data, dtype, base + offset, length)
        if at < 0:
            return 0
    if length:                  # (an empty slice may end where its memory ends)
        regions.check(at, length, "read")
    return at


def bpf_dynptr_slice(p: int, offset: int, buffer: int, buffer_sz: int) -> int:
    return _slice(_regions(), _load(p), offset & M32, buffer_sz & M32, buffer)


def bpf_dynptr_slice_rdwr(p: int, offset: int, buffer: int, buffer_sz: int) -> int:
    d = _load(p)
    if not d[0] or d[2]:
        return 0
    return _slice(_regions(), d, offset & M32, buffer_sz & M32, buffer)


def bpf_dynptr_copy(dst_ptr: int, dst_off: int, src_ptr: int, src_off: int, size: int) -> int:
    """Copy ``size`` bytes from ``src_off`` of one dynptr to ``dst_off`` of another (or the
    same: a move)."""
    regions = _regions()
    dst_off, src_off, size = dst_off & M32, src_off & M32, size & M32
    dst, src = _load(dst_ptr), _load(src_ptr)
    src_at = _slice(regions, src, src_off, size, 0)
    dst_at = 0 if not dst[0] or dst[2] else _slice(regions, dst, dst_off, size, 0)
    if src_at and dst_at:
        regions.write(dst_at, regions.read(src_at, size))
        return 0
    if src_at:
        return _int(_write(regions, dst, dst_off, regions.read(src_at, size), 0))
    if dst_at:
        return _int(_read_into(regions, dst_at, src, src_off, size, 0))
    if _check_off_len(dst[4], dst_off, size) or _check_off_len(src[4], src_off, size):
        return _int(-errno.E2BIG)
    for off in range(0, size, COPY_CHUNK):
        got = _read(regions, src, src_off + off, min(COPY_CHUNK, size - off), 0)
        if isinstance(got, int):
            return _int(got)
        err = _write(regions, dst, dst_off + off, got, 0)
        if err:
            return _int(err)
    return 0


def bpf_dynptr_memset(p: int, offset: int, size: int, val: int) -> int:
    """Fill ``size`` bytes at ``offset`` of the dynptr with the byte ``val``."""
    regions = _regions()
    offset, size, val = offset & M32, size & M32, val & 0xFF
    d = _load(p)
    at = 0 if not d[0] or d[2] else _slice(regions, d, offset, size, 0)
    if at:
        regions.write(at, bytes((val,)) * size)
        return 0
    if d[2]:
        return _int(-errno.EINVAL)
    err = _check_off_len(d[4], offset, size)
    if err:
        return _int(err)
    chunk = bytes((val,)) * min(COPY_CHUNK, size)
    for off in range(0, size, COPY_CHUNK):
        err = _write(regions, d, offset + off, chunk[:size - off], 0)
        if err:
            return _int(err)
    return 0


# --- generic dynptr kfuncs (kernel/bpf/helpers.c) -----------------------------------------------
def bpf_dynptr_adjust(p: int, start: int, end: int) -> int:
    """Narrow the dynptr to [start, end) of its current view: -EINVAL for a NULL dynptr or
    start > end, -ERANGE past its size."""
    start, end = start & M32, end & M32
    data, dtype, rdonly, offset, size = _load(p)
    if not data or start > end:
        return _int(-errno.EINVAL)
    if start > size or end > size:
        return _int(-errno.ERANGE)
    _init(p, data, dtype, (offset + start) & M32, end - start, rdonly)
    return 0


def bpf_dynptr_is_null(p: int) -> int:
    return int(not _load(p)[0])


def bpf_dynptr_is_rdonly(p: int) -> int:
    data, _, rdonly, _, _ = _load(p)
    return int(bool(data) and rdonly)


def bpf_dynptr_size(p: int) -> int:
    """The dynptr's size, or -EINVAL (as a u32) for a NULL one."""
    data, _, _, _, size = _load(p)
    return size if data else _int(-errno.EINVAL)


def bpf_dynptr_clone(p: int, clone: int) -> int:
    """A copy of the dynptr (same memory, view and flags); a NULL parent gives a NULL clone
    and -EINVAL."""
    if not _load(p)[0]:
        _set_null(clone)
        return _int(-errno.EINVAL)
    PROC[clone:clone + DYNPTR_SIZE] = bytes(PROC[p:p + DYNPTR_SIZE])
    return 0


HELPER_FNS = {"dynptr_from_mem": (bpf_dynptr_from_mem, 3, "write"),
              "dynptr_read": (bpf_dynptr_read, 2, "read"),
              "dynptr_write": (bpf_dynptr_write, 0, "read"),
              "dynptr_data": (bpf_dynptr_data, 0, "read")}
"""helper name -> (function, index of its dynptr argument, how the dynptr is used)."""

KFUNC_FNS = {"bpf_dynptr_from_skb": (bpf_dynptr_from_skb, 2, "write"),
             "bpf_dynptr_from_xdp": (bpf_dynptr_from_xdp, 2, "write"),
             "bpf_dynptr_slice": (bpf_dynptr_slice, 0, "read"),
             "bpf_dynptr_slice_rdwr": (bpf_dynptr_slice_rdwr, 0, "read"),
             "bpf_dynptr_adjust": (bpf_dynptr_adjust, 0, "write"),
             "bpf_dynptr_is_null": (bpf_dynptr_is_null, 0, "read"),
             "bpf_dynptr_is_rdonly": (bpf_dynptr_is_rdonly, 0, "read"),
             "bpf_dynptr_size": (bpf_dynptr_size, 0, "read"),
             "bpf_dynptr_clone": (bpf_dynptr_clone, (0, "read", 1, "write"), None),
             "bpf_dynptr_copy": (bpf_dynptr_copy, (0, "read", 2, "read"), None),
             "bpf_dynptr_memset": (bpf_dynptr_memset, 0, "read"),
             "bpf_dynptr_from_skb_meta": (bpf_dynptr_from_skb_meta, 2, "write")}

