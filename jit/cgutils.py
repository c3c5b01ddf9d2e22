"""Small builder-first helpers for the BPF lowering (numba's cgutils habit).

Each function takes an ``llvmlite.ir.IRBuilder`` first and emits a few instructions with BPF's
semantics made explicit where LLVM leaves them undefined: shift counts are masked, division and
modulo never divide by a possibly-zero value (a select makes the divisor safe, another select
picks BPF's answer), 32-bit results are zero-extended, memory is reached through absolute
addresses (``inttoptr``). No helper emits ``nsw``/``nuw`` flags or floating point.
"""
from __future__ import annotations

from llvmlite import ir
from llvmlite.ir import instructions as _instr
from llvmlite.ir.values import FunctionAttributes

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
PTR = ir.PointerType()
INT = {8: I8, 16: I16, 32: I32, 64: I64}
BYTES = {1: I8, 2: I16, 4: I32, 8: I64}

# String attributes every BPF function carries. "no-jump-tables" keeps switches (SimplifyCFG
# builds them from compare chains) from becoming jump or lookup tables, which would live in
# .rodata and need relocations; "no-builtins" stops loop-idiom recognition from turning store
# loops into memset/memcpy library calls, which the object may not reference.
_STRING_ATTRS = ('"no-jump-tables"="true"', '"no-builtins"')


class BPFFunctionAttributes(FunctionAttributes):
    """llvmlite's function attributes plus the string attributes above."""

    _known = FunctionAttributes._known | frozenset(_STRING_ATTRS)


def bpf_function(module: ir.Module, fnty: ir.FunctionType, name: str,
                 internal: bool = False) -> ir.Function:
    """A function with the attributes every lowered function carries.

    ``nounwind`` (nothing unwinds through BPF code), ``noimplicitfloat`` (no SSE for integer work:
    the vectorizers would otherwise load constants from a .rodata pool), and the string attributes.
    """
    fn = ir.Function(module, fnty, name=name)
    fn.attributes = BPFFunctionAttributes(("nounwind", "noimplicitfloat") + _STRING_ATTRS)
    if internal:
        fn.linkage = "internal"
    return fn


def const(ty: ir.IntType, value: int) -> ir.Constant:
    """An integer constant, wrapped into the type's range and printed signed."""
    bits = ty.width
    value &= (1 << bits) - 1
    if value >> (bits - 1):
        value -= 1 << bits
    return ir.Constant(ty, value)


def alloca_once(builder: ir.IRBuilder, ty: ir.Type, name: str = "", align: int | None = None):
    """An alloca at the top of the function's entry block (where mem2reg/SROA look)."""
    entry = builder.function.entry_basic_block
    with builder.goto_block(entry):
        if entry.instructions:
            builder.position_before(entry.instructions[0])
        slot = builder.alloca(ty, name=name)
    if align:
        slot.align = align
    return slot


# -- integer widths --------------------------------------------------------------------------

def low32(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return builder.trunc(v, I32) if v.type.width > 32 else v


def zext64(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return builder.zext(v, I64) if v.type.width < 64 else v


def sext64(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return builder.sext(v, I64) if v.type.width < 64 else v


def narrow(builder: ir.IRBuilder, v: ir.Value, width: int) -> ir.Value:
    """The low ``width`` bits of a 64-bit value."""
    return builder.trunc(v, INT[width]) if width < v.type.width else v


# -- arithmetic with BPF's definitions -------------------------------------------------------

def shift(builder: ir.IRBuilder, op: str, value: ir.Value, count: ir.Value) -> ir.Value:
    """``lsh``/``rsh``/``arsh`` with the count masked to the width (LLVM: poison otherwise)."""
    width = value.type.width
    count = builder.and_(count, const(value.type, width - 1))
    if op == "lsh":
        return builder.shl(value, count)
    if op == "rsh":
        return builder.lshr(value, count)
    return builder.ashr(value, count)


def divmod_(builder: ir.IRBuilder, op: str, a: ir.Value, d: ir.Value) -> ir.Value:
    """``div``/``mod``/``sdiv``/``smod`` as BPF defines them, without an undefined divide.

    x/0 = 0, x%0 = x; signed x/-1 = -x (so INT_MIN/-1 = INT_MIN) and x%-1 = 0. The divisor fed
    to LLVM's instruction is replaced by 1 in every special case, so the instruction itself can
    never trap; selects then choose the defined answer.
    """
    ty = a.type
    zero, one = const(ty, 0), const(ty, 1)
    is_zero = builder.icmp_unsigned("==", d, zero)
    if op in ("div", "mod"):
        safe = builder.select(is_zero, one, d)
        if op == "div":
            return builder.select(is_zero, zero, builder.udiv(a, safe))
        return builder.select(is_zero, a, builder.urem(a, safe))
    is_m1 = builder.icmp_unsigned("==", d, const(ty, -1))
    safe = builder.select(builder.or_(is_zero, is_m1), one, d)
    if op == "sdiv":
        q = builder.select(is_m1, builder.sub(zero, a), builder.sdiv(a, safe))
        return builder.select(is_zero, zero, q)
    r = builder.select(is_m1, zero, builder.srem(a, safe))
    return builder.select(is_zero, a, r)


_BINOPS = {"add": "add", "sub": "sub", "mul": "mul", "or": "or_", "and": "and_", "xor": "xor"}


def binop(builder: ir.IRBuilder, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
    """Every two-operand ALU op by its ISA-table ``op`` name (``mov`` returns ``b``)."""
    if op in _BINOPS:
        return getattr(builder, _BINOPS[op])(a, b)
    if op in ("lsh", "rsh", "arsh"):
        return shift(builder, op, a, b)
    if op in ("div", "mod", "sdiv", "smod"):
        return divmod_(builder, op, a, b)
    if op == "mov":
        return b
    raise KeyError(op)


def byteswap(builder: ir.IRBuilder, value: ir.Value, bits: int, swap: bool) -> ir.Value:
    """The low ``bits`` of ``value``, byte-swapped if ``swap``, zero-extended to 64 bits."""
    v = narrow(builder, value, bits)
    if swap:
        v = builder.bswap(v)
    return zext64(builder, v)


# -- memory ------------------------------------------------------------------------------------

def address(builder: ir.IRBuilder, base: ir.Value, off: int, name: str = "") -> ir.Value:
    """``ptr`` for the BPF address ``base + off`` (a real process address)."""
    addr = builder.add(base, const(I64, off)) if off else base
    return builder.inttoptr(addr, PTR, name=name)


def load(builder: ir.IRBuilder, ptr: ir.Value, size: int, signed: bool = False) -> ir.Value:
    """A ``size``-byte load, extended to 64 bits. ``align 1``: BPF allows unaligned data."""
    v = builder.load(ptr, typ=BYTES[size], align=1)
    return sext64(builder, v) if signed else zext64(builder, v)


def store(builder: ir.IRBuilder, ptr: ir.Value, value: ir.Value, size: int) -> None:
    builder.store(narrow(builder, value, size * 8), ptr, align=1)


def load_acquire(builder: ir.IRBuilder, ptr: ir.Value, size: int) -> ir.Value:
    return zext64(builder, builder.load_atomic(ptr, "acquire", size, typ=BYTES[size]))


def store_release(builder: ir.IRBuilder, ptr: ir.Value, value: ir.Value, size: int) -> None:
    # IRBuilder.store_atomic inspects ptr.type.pointee, which opaque pointers lack.
    builder._insert(_instr.StoreAtomicInstr(builder.block, narrow(builder, value, size * 8), ptr,
                                            "release", size))


def atomic_rmw(builder: ir.IRBuilder, op: str, ptr: ir.Value, value: ir.Value,
               size: int) -> ir.Value:
    """``atomicrmw op`` (seq_cst, like the kernel's locked instructions); returns the old value
    zero-extended. Natural alignment is implied, as the verifier requires for atomics."""
    old = builder.atomic_rmw(op, ptr, narrow(builder, value, size * 8), "seq_cst")
    return zext64(builder, old)


def cmpxchg(builder: ir.IRBuilder, ptr: ir.Value, expected: ir.Value, new: ir.Value,
            size: int) -> ir.Value:
    """Compare ``*ptr`` with ``expected``, store ``new`` if equal; returns the old value."""
    bits = size * 8
    pair = builder.cmpxchg(ptr, narrow(builder, expected, bits), narrow(builder, new, bits),
                           "seq_cst", "seq_cst")
    return zext64(builder, builder.extract_value(pair, 0))
