"""Native code for the packet helpers on hot paths, in verified programs only.

``bpf_xdp_load_bytes``, ``bpf_xdp_store_bytes`` and ``bpf_skb_load_bytes`` copy packet bytes
with one call to libc's ``memmove`` (by absolute address, an external symbol like
``clock_gettime``) when the range lies in the linear packet, read from the context the program
was given (``xdp_md.data``/``data_end``, ``__sk_buff.data``/``data_end``: the real addresses the
run's packet region spans); anything else (a range past the linear part, fragments, the
kernel's error cases) takes the Python bridge, so results and errors are the interpreter's.
``bpf_csum_diff`` with sizes the lowering knows as constants (what clang emits for
``sizeof``) is unrolled: the x86-64 ``csum_partial`` chains of ``runtime/helpers_skb.py``, word
for word, then ``csum_from32to16``; other sizes take the bridge.

Why verified programs only: the verifier has proved what the bridge would check at run time
(r1 is the run's context, the buffer and its size are memory the program owns), as it does for
the program's own loads, and the packet range is compared with the context's bounds before
any byte moves. Unverified loads keep the bridge and its checks against the run's regions.

``bpf_xdp_adjust_head`` is native too (net/core/filter.c's checks and ``memmove`` of the
metadata, all in line; no bridge at all): it moves ``data`` and ``data_meta`` in the
``xdp_md`` only, and the run's region table follows (the packet's region is
``[data_meta, data_end)``; ``RegionTable.follow``: before any lookup the table re-reads the
``xdp_md``, runtime/xdp_buff.py ``XdpBuff.sync``), so every later pointer a helper or kfunc
checks is checked against the new bounds, and the program's own packet accesses are the
verifier's business as after the bridged helper (it forgets packet pointers across the call).
The frame's hard start comes from the ctx pointer (the runtime's layout, passed in as
``JitEnv.xdp_head_floor``; without it the helper stays on the bridge). ``bpf_xdp_adjust_meta``
stays on the bridge: the kernel here (and so pybpf's verifier) refuses it in XDP programs, so
only unverified code reaches it, and that code takes the bridge by design.
"""
from __future__ import annotations

import ctypes

from llvmlite import ir

from pybpf.jit import cgutils as cg
from pybpf.jit.cgutils import I1, I32, I64, PTR

I128 = ir.IntType(128)
M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1
EINVAL = 22
ETH_HLEN = 14
INT_MAX = 0x7FFFFFFF
CSUM_MAX_UNROLL = 256         # bytes of each csum_diff buffer unrolled at most
# the __sk_buff program types whose skb_load_bytes reads skb->data (flow_dissector has no skb)
SKB_TYPES = ("socket_filter", "sched_cls", "cgroup_skb", "lwt_in", "lwt_out", "lwt_xmit")
_memmove: int | None = None


def memmove_address() -> int:
    """Address of libc's ``memmove`` (looked up once)."""
    global _memmove
    if _memmove is None:
        _memmove = ctypes.cast(ctypes.CDLL(None).memmove, ctypes.c_void_p).value
    return _memmove


def handles(fl, name: str) -> bool:
    """Whether :func:`lower` emits ``name`` natively here."""
    if not fl.env.verified:
        return False
    if name in ("xdp_load_bytes", "xdp_store_bytes"):
        return fl.env.prog_type == "xdp"
    if name == "skb_load_bytes":
        return fl.env.prog_type in SKB_TYPES
    if name == "csum_diff":
        sizes = fl.known(2), fl.known(4)
        return all(s is not None and (s & M32) <= CSUM_MAX_UNROLL for s in sizes)
    if name == "xdp_adjust_head":
        return fl.env.prog_type == "xdp" and fl.env.xdp_head_floor > 0
    return False


def lower(fl, helper) -> None:
    """r0 of ``helper`` (one :func:`handles` accepted), with the bridge as the slow path."""
    if helper.name == "csum_diff":
        fl.set(0, _csum_diff(fl))
        return
    if helper.name == "xdp_adjust_head":
        fl.set(0, _xdp_adjust_head(fl))
        return
    b = fl.b
    args = fl._args()
    ctx, off, buf, size = args[0], args[1], args[2], args[3]
    lo, hi = (0, 4) if helper.name != "skb_load_bytes" else (76, 80)
    data = b.zext(b.load(b.inttoptr(b.add(ctx, cg.const(I64, lo)), PTR), typ=I32), I64)
    end = b.zext(b.load(b.inttoptr(b.add(ctx, cg.const(I64, hi)), PTR), typ=I32), I64)
    off32, size32 = b.and_(off, cg.const(I64, M32)), b.and_(size, cg.const(I64, M32))
    limit = 0xFFFF if helper.name != "skb_load_bytes" else INT_MAX
    ok = b.and_(b.icmp_unsigned("<=", off32, cg.const(I64, limit)),
                b.icmp_unsigned("<=", b.add(off32, size32), b.sub(end, data)))
    if helper.name != "skb_load_bytes":
        ok = b.and_(ok, b.icmp_unsigned("<=", size32, cg.const(I64, 0xFFFF)))
    pkt = b.add(data, off32)
    dst, src = (buf, pkt) if helper.name != "xdp_store_bytes" else (pkt, buf)
    with b.if_else(ok, likely=True) as (fast, slow):
        with fast:
            _memmove_call(b, dst, src, size32)
            fast_block = b.block
        with slow:
            value, abort = fl.mod.helpers.emit_call(b, helper, args, fl.frames)
            if abort is not None:
                fl.abort_if(abort)
            slow_block = b.block
    r0 = b.phi(I64, name="pkt.r0")
    r0.add_incoming(cg.const(I64, 0), fast_block)
    r0.add_incoming(value, slow_block)
    fl.set(0, r0)


def _xdp_adjust_head(fl) -> ir.Value:
    """runtime/helpers_xdp.py xdp_adjust_head (the kernel's bpf_xdp_adjust_head) on the
    ``xdp_md`` r1 points at: ``data`` moves by the s32 delta, the metadata with it, -EINVAL
    below the ``struct xdp_frame`` and the metadata or past ``data_end - ETH_HLEN``."""
    b = fl.b
    ctx, delta = fl.get(1), b.sext(b.trunc(fl.get(2), I32), I64)

    def field(at: int) -> ir.Value:
        return b.inttoptr(b.add(ctx, cg.const(I64, at)), PTR)
    data = b.zext(b.load(field(0), typ=I32), I64)
    end = b.zext(b.load(field(4), typ=I32), I64)
    meta = b.zext(b.load(field(8), typ=I32), I64)
    metalen = b.sub(data, meta)
    new = b.add(data, delta)
    floor = b.add(b.add(ctx, cg.const(I64, fl.env.xdp_head_floor)), metalen)
    # signed: a delta far below zero must not wrap past the floor
    bad = b.or_(b.icmp_signed("<", new, floor),
                b.icmp_signed(">", new, b.sub(end, cg.const(I64, ETH_HLEN))))
    with b.if_else(bad, likely=False) as (refuse, move):
        with refuse:
            refused = b.block
        with move:
            new_meta = b.add(meta, delta)
            with b.if_then(b.icmp_unsigned("!=", metalen, cg.const(I64, 0))):
                _memmove_call(b, new_meta, meta, metalen)
            b.store(b.trunc(new, I32), field(0))
            b.store(b.trunc(new_meta, I32), field(8))
            moved = b.block
    r0 = b.phi(I64, name="adjust_head.r0")
    r0.add_incoming(cg.const(I64, -EINVAL & M64), refused)
    r0.add_incoming(cg.const(I64, 0), moved)
    return r0


def _memmove_call(b, dst: ir.Value, src: ir.Value, size: ir.Value) -> None:
    fnty = ir.FunctionType(PTR, [PTR, PTR, I64])
    fn = b.inttoptr(b.ext(memmove_address()), ir.PointerType(fnty))
    b.call(fn, [b.inttoptr(dst, PTR), b.inttoptr(src, PTR), size])


# -- csum_diff ----------------------------------------------------------------------------------
def _load_le(b, base: ir.Value, at: int, n: int) -> ir.Value:
    """``n`` (1..8) little-endian bytes at ``base + at``, zero-extended to i64."""
    if n in (8, 4, 2, 1):
        ty = ir.IntType(8 * n)
        v = b.load(b.inttoptr(b.add(base, cg.const(I64, at)), PTR), typ=ty, align=1)
        return v if n == 8 else b.zext(v, I64)
    out = cg.const(I64, 0)
    for k in range(n):
        byte = _load_le(b, base, at + k, 1)
        out = b.or_(out, b.shl(byte, cg.const(I64, 8 * k)))
    return out


def _adc(b, acc: ir.Value, words: list) -> ir.Value:
    """runtime/helpers_skb.py _adc: ``addq w0; adcq w1 ...; adcq $0`` (last carry out lost)."""
    s, c = acc, None
    for w in words:
        t = b.add(b.zext(s, I128), b.zext(w, I128))
        if c is not None:
            t = b.add(t, b.zext(c, I128))
        c = b.trunc(b.lshr(t, ir.Constant(I128, 64)), I64)
        s = b.trunc(t, I64)
    return b.add(s, c) if c is not None else s


def _finalize(b, t: ir.Value) -> ir.Value:
    """(t + ror64(t, 32)) >> 32, as i64."""
    ror = b.or_(b.lshr(t, cg.const(I64, 32)), b.shl(t, cg.const(I64, 32)))
    return b.lshr(b.add(t, ror), cg.const(I64, 32))


def _csum_partial(b, base: ir.Value, n: int, seed: ir.Value) -> ir.Value:
    """csum_partial of ``n`` bytes (a constant) at ``base``, unrolled: its 32-bit result."""
    t, p = seed, 0
    if n >= 80:
        t2 = cg.const(I64, 0)
        while n >= 80:
            t = _adc(b, t, [_load_le(b, base, p + 8 * k, 8) for k in range(5)])
            t2 = _adc(b, t2, [_load_le(b, base, p + 40 + 8 * k, 8) for k in range(5)])
            p, n = p + 80, n - 80
        t = _adc(b, t, [t2])
    if n >= 40:
        t = _adc(b, t, [_load_le(b, base, p + 8 * k, 8) for k in range(5)])
        p, n = p + 40, n - 40
        if not n:
            return _finalize(b, t)
    for size in (32, 16, 8):
        if n & size:
            t = _adc(b, t, [_load_le(b, base, p + 8 * k, 8) for k in range(size // 8)])
            p += size
    if n & 7:
        t = _adc(b, t, [_load_le(b, base, p, n & 7)])
    return _finalize(b, t)


def _csum_add(b, x: ir.Value, y: ir.Value) -> ir.Value:
    m = cg.const(I64, M32)
    r = b.and_(b.add(x, y), m)
    return b.and_(b.add(r, b.zext(b.icmp_unsigned("<", r, y), I64)), m)


def _csum_diff(fl) -> ir.Value:
    """runtime/helpers_skb.py csum_diff for constant sizes."""
    b = fl.b
    frm, to, seed = fl.get(1), fl.get(3), fl.get(5)
    from_size, to_size = fl.known(2) & M32, fl.known(4) & M32
    m = cg.const(I64, M32)
    ret = b.and_(seed, m)
    if from_size and to_size:
        bsum = _csum_partial(b, to, to_size, ret)
        asum = _csum_partial(b, frm, from_size, cg.const(I64, 0))
        ret = _csum_add(b, bsum, b.and_(b.not_(asum), m))
    elif to_size:
        ret = _csum_partial(b, to, to_size, ret)
    elif from_size:
        ret = b.and_(b.not_(_csum_partial(b, frm, from_size, b.and_(b.not_(ret), m))), m)
    # csum_from32to16
    x = b.and_(b.add(ret, b.and_(b.or_(b.lshr(ret, cg.const(I64, 16)),
                                       b.shl(ret, cg.const(I64, 16))), m)), m)
    return b.lshr(x, cg.const(I64, 16))


__all__ = ["handles", "lower", "memmove_address", "I1"]
