"""Loads, stores and atomics of programs that use an arena, with the interpreter's semantics.

Which accesses are arena accesses (the kernel's PROBE_MEM32) follows the interpreter's rule
(``Run._arena_target``): an address inside the arena's reservation is one; so is an access whose
base register holds a 32-bit value and that misses the run's memory, landing at
``kern_vm_start + zext32(reg) + off``. For JIT code the only run memory below 4 GiB is the
context/packet pool (``JitEnv.low_pool``). :mod:`pybpf.jit.kinds` settles most accesses at
compile time: r10-based ones are plain stack accesses; ``cast_kern`` results and arena
arithmetic are arena offsets (translated without a test, like the kernel's ``[reg + r12 + off]``);
constant addresses are classified once. The rest get the dynamic test below (a few compares,
no branch for loads).

Arena semantics (the kernel's ex_handler_bpf fixups): the whole reservation is readable, so loads need no test,
except one that straddles two pages, which gives 0 unless both are allocated (the kernel's
fault); stores and atomics first read the page map bytes of the first and last byte's pages and
are dropped when either page is unallocated; a dropped fetch/xchg/cmpxchg leaves its register.
"""
from __future__ import annotations

import ctypes
import os

from llvmlite import ir

from pybpf.jit import cgutils as cg
from pybpf.jit.cgutils import I1, I8, I64, PTR
from pybpf.jit.kinds import ARENA

PAGE_SHIFT, PAGE_SIZE = 12, 4096
# PYBPF_JIT_ARENA_DYNAMIC=1 classifies every non-r10 access at run time (to measure what the
# static classification saves).
FORCE_DYNAMIC = os.environ.get("PYBPF_JIT_ARENA_DYNAMIC", "") not in ("", "0")
_ONE = ctypes.c_uint8(1)          # a page-map stand-in for non-arena addresses: "allocated"
ONE_ADDRESS = ctypes.addressof(_ONE)


class Access:
    """Where one access goes: ``ptr`` and, for possible arena accesses, ``arena`` (an i1, or
    True when known at compile time) and ``k`` (offset from kern_vm_start, i64)."""

    __slots__ = ("ptr", "arena", "k")

    def __init__(self, ptr, arena=None, k=None) -> None:
        self.ptr, self.arena, self.k = ptr, arena, k


def classify(fl, r: int, off: int, size: int) -> str:
    """"plain", "arena" (a 32-bit offset), "band" (an address in the reservation) or "dynamic"."""
    lay = fl.arena
    if lay is None or (r == 10 and fl.fp_fixed):
        return "plain"
    kind = fl.kinds.reg(fl.pc, r)
    if kind is None or FORCE_DYNAMIC:
        return "dynamic"
    if kind == ARENA:
        return "arena"
    if kind[0] == "stack":
        return "plain"
    if kind[0] == "const":
        a = (kind[1] + off) & ((1 << 64) - 1)
        if 0 <= a - lay.band_lo <= lay.band_size - size:
            return "band"
        lo, hi = fl.env.low_pool
        if kind[1] <= 0xFFFFFFFF and not lo <= a < hi:
            return "arena"
        return "plain"
    return "dynamic"


def access(fl, r: int, off: int, size: int) -> Access:
    """The address of ``r + off`` by the rule above (plain accesses: ``fl.address``)."""
    how = classify(fl, r, off, size)
    if how == "plain":
        return Access(fl.address(r, off, size))
    b, lay = fl.b, fl.arena
    kvs = cg.const(I64, lay.kern_vm_start)
    base = fl.get(r)
    if how == "arena":
        k = b.add(b.zext(cg.low32(b, base), I64), cg.const(I64, off)) if off else \
            b.zext(cg.low32(b, base), I64)
        return Access(b.inttoptr(b.add(kvs, k), PTR), True, k)
    a = b.add(base, cg.const(I64, off)) if off else base
    if how == "band":
        return Access(b.inttoptr(a, PTR), True, b.sub(a, kvs))
    in_band = b.icmp_unsigned("<=", b.sub(a, cg.const(I64, lay.band_lo)),
                              cg.const(I64, lay.band_size - size))
    lo, hi = fl.env.low_pool
    in_pool = b.icmp_unsigned("<", b.sub(a, cg.const(I64, lo)), cg.const(I64, hi - lo))
    narrow = b.icmp_unsigned("<=", base, cg.const(I64, 0xFFFFFFFF))
    trans = b.and_(narrow, b.xor(b.or_(in_pool, in_band), I1(1)))
    addr = b.select(trans, b.add(a, kvs), a)
    return Access(b.inttoptr(addr, PTR), b.or_(in_band, trans), b.sub(addr, kvs))


def _page_ok(fl, acc: Access, size: int):
    """i1: both pages of the access are allocated (always true for a non-arena access)."""
    b = fl.b
    pm = cg.const(I64, fl.arena.page_map)
    first = b.ashr(acc.k, cg.const(I64, PAGE_SHIFT))
    pages = [first]
    if size > 1:
        pages.append(b.ashr(b.add(acc.k, cg.const(I64, size - 1)), cg.const(I64, PAGE_SHIFT)))
    ok = None
    for page in pages:
        p = b.inttoptr(b.add(pm, page), PTR)
        if acc.arena is not True:
            p = b.select(acc.arena, p, b.inttoptr(cg.const(I64, ONE_ADDRESS), PTR))
        byte = b.load(p, typ=I8)
        ok = byte if ok is None else b.and_(ok, byte)
    return b.icmp_unsigned("!=", ok, cg.const(I8, 0))


def load(fl, acc: Access, size: int, signed: bool, reader=None) -> ir.Value:
    """A load through ``acc``; ``reader(ptr)`` emits the load itself (default: plain)."""
    b = fl.b
    read = reader or (lambda ptr: cg.load(b, ptr, size, signed))
    value = read(acc.ptr)
    if acc.arena is None or size == 1:
        return value
    # Straddling two pages: 0 unless both are allocated (rare: a branch, not a select).
    cross = b.icmp_unsigned(">", b.and_(acc.k, cg.const(I64, PAGE_SIZE - 1)),
                            cg.const(I64, PAGE_SIZE - size))
    if acc.arena is not True:
        cross = b.and_(cross, acc.arena)
    head = b.block
    with b.if_then(cross, likely=False):
        checked = b.select(_page_ok(fl, acc, size), value, cg.const(I64, 0))
        then = b.block
    phi = b.phi(I64, name="arena.ld")
    phi.add_incoming(value, head)
    phi.add_incoming(checked, then)
    return phi


def store(fl, acc: Access, size: int, emit) -> None:
    """Run ``emit(ptr)`` (the store) unless the arena page map drops it."""
    if acc.arena is None:
        emit(acc.ptr)
        return
    with fl.b.if_then(_page_ok(fl, acc, size), likely=True):
        emit(acc.ptr)


def guarded(fl, acc: Access, size: int, emit, kept: ir.Value) -> ir.Value:
    """An atomic ``emit(ptr) -> old value`` that gives ``kept`` when the access is dropped."""
    if acc.arena is None:
        return emit(acc.ptr)
    b = fl.b
    head = b.block
    with b.if_then(_page_ok(fl, acc, size), likely=True):
        value = emit(acc.ptr)
        then = b.block
    phi = b.phi(I64, name="arena.atomic")
    phi.add_incoming(kept, head)
    phi.add_incoming(value, then)
    return phi
