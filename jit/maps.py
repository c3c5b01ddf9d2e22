"""Native ``bpf_map_lookup_elem``: the JIT asks the map for its lookup IR (the kernel's
``map_gen_lookup``), handing it an :class:`IRKit`.

A lookup whose map argument is a known constant (the usual ``r1 = map ll`` before the call)
is inlined into the program, so JIT'd code does not call back into Python on that path. Each map
class that can be looked up natively defines ``gen_lookup(ir, key)`` next to its layout
(``runtime/maps/array.py``, ``runtime/maps/hash.py``); the others leave ``gen_lookup = None``
and their lookups go through the helper bridge.

Why a kit passed in rather than a layout description the JIT turns into IR: the code that walks
a map's storage then lives in one place with the code that builds that storage (a hash chain's
marker, the element header, the LRU reference bit), as the kernel keeps ``htab_map_gen_lookup``
in hashtab.c; and the runtime still never imports llvmlite (nor the JIT): it only calls methods
on the kit it is given, so ``import pybpf.runtime`` stays free of LLVM.
"""
from __future__ import annotations

from llvmlite import ir

from pybpf.jit import cgutils as cg
from pybpf.jit.cgutils import I8, I16, I32, I64, PTR


def supported(m) -> bool:
    """The map has a native lookup and is still open."""
    return getattr(m, "gen_lookup", None) is not None and not getattr(m, "closed", False)


def lookup(fl, m, key: ir.Value) -> ir.Value:
    """r0 of map_lookup_elem(m, key) as native code (``key`` is the i64 key address)."""
    return m.gen_lookup(IRKit(fl), key)


class IRKit:
    """What a map's ``gen_lookup`` builds with: the function's builder and blocks, integer types
    and a few address-level operations. Values are llvmlite values; addresses are i64."""

    I8, I16, I32, I64 = I8, I16, I32, I64

    def __init__(self, fl) -> None:
        self.b = fl.b
        self.fn = fl.fn

    def const(self, ty: ir.IntType, value: int) -> ir.Value:
        return cg.const(ty, value)

    def ext(self, address: int) -> ir.Value:
        """A process-specific address (a map's storage) as a relocatable i64."""
        return self.b.ext(address)

    def block(self, name: str) -> ir.Block:
        return self.fn.append_basic_block(name)

    def ptr(self, addr: ir.Value) -> ir.Value:
        return self.b.inttoptr(addr, PTR)

    def at(self, addr: ir.Value, off: int) -> ir.Value:
        """``addr + off`` (no instruction for off 0)."""
        return self.b.add(addr, cg.const(I64, off)) if off else addr

    def load(self, addr: ir.Value, ty: ir.IntType, align: int | None = None) -> ir.Value:
        return self.b.load(self.ptr(addr), typ=ty, align=align)

    def load_acquire(self, addr: ir.Value, ty: ir.IntType) -> ir.Value:
        return self.b.load_atomic(self.ptr(addr), "acquire", ty.width // 8, typ=ty)

    def store(self, value: ir.Value, addr: ir.Value) -> None:
        self.b.store(value, self.ptr(addr))

    def index(self, base: ir.Value, i: ir.Value, scale: int) -> ir.Value:
        """``base + zext64(i) * scale``."""
        return self.b.add(base, self.b.mul(cg.zext64(self.b, i), cg.const(I64, scale)))

    def bytes_equal(self, a: ir.Value, b_: ir.Value, size: int) -> ir.Value:
        """i1: the ``size`` bytes at ``a`` and ``b_`` are equal (8/4/2/1-byte unaligned loads)."""
        b = self.b
        diff = None
        off = 0
        for width in (8, 4, 2, 1):
            ty = cg.BYTES[width]
            while size - off >= width:
                pa, pb = self.ptr(self.at(a, off)), self.ptr(self.at(b_, off))
                x = b.xor(b.load(pa, typ=ty, align=1), b.load(pb, typ=ty, align=1))
                x = cg.zext64(b, x)
                diff = x if diff is None else b.or_(diff, x)
                off += width
        return b.icmp_unsigned("==", diff, cg.const(I64, 0))
