"""Small builder-first helpers for the BPF lowering (numba's cgutils habit), and the text builder.

Each function takes an ``llvmlite.ir.IRBuilder`` first and emits a few instructions with BPF's
semantics made explicit where LLVM leaves them undefined: shift counts are masked, division and
modulo never divide by a possibly-zero value (a select makes the divisor safe, another select
picks BPF's answer), 32-bit results are zero-extended, memory is reached through absolute
addresses (``inttoptr``). No helper emits ``nsw``/``nuw`` flags or floating point.

:class:`TextBuilder` is an ``IRBuilder`` whose hot integer instructions (arithmetic, casts,
compares, selects, plain loads and stores, branches) are written straight as IR text lines into
llvmlite's blocks: building and printing llvmlite instruction objects cost about 10 us each,
most of the lowering's time. Everything else (calls, atomics, phis, intrinsics) is llvmlite's
own code, which takes the text values as operands. :func:`const` returns shared, pre-rendered
integer constants, and casts of constants are folded here rather than by LLVM.
"""
from __future__ import annotations

from llvmlite import ir
from llvmlite.ir import instructions as _instr
from llvmlite.ir.values import FunctionAttributes

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
PTR = ir.PointerType()
INT = {8: I8, 16: I16, 32: I32, 64: I64}
BYTES = {1: I8, 2: I16, 4: I32, 8: I64}

# String attributes every BPF function carries. "no-builtins" stops loop-idiom recognition from
# turning store loops into memset/memcpy library calls, which the object may not reference.
# (Switches may become jump and lookup tables: pybpf.jit.link places .rodata after the code.)
_STRING_ATTRS = ('"no-builtins"',)


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


# -- values written as text ------------------------------------------------------------------

def _ty(t: ir.Type) -> str:
    return f"i{t.width}" if isinstance(t, ir.IntType) else str(t)


class Const(ir.Value):
    """An integer constant, rendered once (llvmlite instructions accept it as an operand)."""

    __slots__ = ("type", "value", "_ref")

    def __init__(self, ty: ir.IntType, value: int) -> None:
        self.type, self.value, self._ref = ty, value, str(value)

    def get_reference(self) -> str:
        return self._ref

    def __str__(self) -> str:
        return f"{_ty(self.type)} {self._ref}"


class Tmp(ir.Value):
    """One instruction written as text, and the SSA value it defines (if any)."""

    __slots__ = ("type", "ref", "text", "parent")

    def __init__(self, ty: ir.Type, ref: str | None, text: str, parent: ir.Block) -> None:
        self.type, self.ref, self.text, self.parent = ty, ref, text, parent

    def get_reference(self) -> str:
        return self.ref

    def __str__(self) -> str:
        return self.text

    @property
    def function_type(self) -> ir.FunctionType:  # lets llvmlite call through a text pointer
        ty = self.type.pointee if isinstance(self.type, ir.PointerType) else self.type
        if not isinstance(ty, ir.FunctionType):
            raise TypeError(f"not a function: {self.type}")
        return ty


_CONSTS: dict[tuple[int, int], Const] = {}
_CONST_LIMIT = 1 << 14   # programs bake in addresses: do not let the table grow forever


def const(ty: ir.IntType, value: int) -> Const:
    """An integer constant, wrapped into the type's range and printed signed."""
    bits = ty.width
    value &= (1 << bits) - 1
    if value >> (bits - 1):
        value -= 1 << bits
    key = (bits, value)
    c = _CONSTS.get(key)
    if c is None:
        if len(_CONSTS) >= _CONST_LIMIT:
            _CONSTS.clear()
        c = _CONSTS[key] = Const(INT.get(bits) or ty, value)
    return c


_ICMP = {"==": "eq", "!=": "ne", ">": "gt", ">=": "ge", "<": "lt", "<=": "le"}
_ICMP_U = {k: (v if k in ("==", "!=") else "u" + v) for k, v in _ICMP.items()}
_ICMP_S = {k: (v if k in ("==", "!=") else "s" + v) for k, v in _ICMP.items()}


def _binop_text(op: str):
    def method(self, lhs, rhs, name="", flags=()):
        return self._emit(lhs.type, f"{op} {_ty(lhs.type)} {lhs.get_reference()}, "
                                    f"{rhs.get_reference()}")
    method.__name__ = op
    return method


def _cast_text(op: str, fold):
    def method(self, val, typ, name=""):
        if val.type == typ:
            return val
        if fold is not None and isinstance(val, Const):
            return const(typ, fold(val.value, val.type.width))
        return self._emit(typ, f"{op} {_ty(val.type)} {val.get_reference()} to {_ty(typ)}")
    method.__name__ = op
    return method


class TextBuilder(ir.IRBuilder):
    """An ``IRBuilder`` that writes the hot instructions as text (module docstring).

    Values are named ``%t<n>``, numbered per builder; use one builder per function. Methods
    not overridden here are llvmlite's and mix freely with these.
    """

    def __init__(self, block: ir.Block | None = None) -> None:
        super().__init__(block)
        self._count = 0

    def _emit(self, ty: ir.Type, text: str) -> Tmp:
        self._count += 1
        ref = f"%t{self._count}"
        line = Tmp(ty, ref, f"{ref} = {text}", self._block)
        self._block.instructions.insert(self._anchor, line)
        self._anchor += 1
        return line

    def _emit_void(self, text: str) -> Tmp:
        line = Tmp(ir.VoidType(), None, text, self._block)
        self._block.instructions.insert(self._anchor, line)
        self._anchor += 1
        return line

    add, sub, mul = _binop_text("add"), _binop_text("sub"), _binop_text("mul")
    and_, or_, xor = _binop_text("and"), _binop_text("or"), _binop_text("xor")
    shl, lshr, ashr = _binop_text("shl"), _binop_text("lshr"), _binop_text("ashr")
    udiv, sdiv = _binop_text("udiv"), _binop_text("sdiv")
    urem, srem = _binop_text("urem"), _binop_text("srem")
    trunc = _cast_text("trunc", lambda v, w: v)          # const() wraps to the new width
    zext = _cast_text("zext", lambda v, w: v & ((1 << w) - 1))
    sext = _cast_text("sext", lambda v, w: v)            # Const values are stored signed
    inttoptr = _cast_text("inttoptr", None)
    ptrtoint = _cast_text("ptrtoint", None)

    def icmp_unsigned(self, cmpop, lhs, rhs, name=""):
        return self._emit(I1, f"icmp {_ICMP_U[cmpop]} {_ty(lhs.type)} {lhs.get_reference()}, "
                              f"{rhs.get_reference()}")

    def icmp_signed(self, cmpop, lhs, rhs, name=""):
        return self._emit(I1, f"icmp {_ICMP_S[cmpop]} {_ty(lhs.type)} {lhs.get_reference()}, "
                              f"{rhs.get_reference()}")

    def select(self, cond, lhs, rhs, name="", flags=()):
        t = _ty(lhs.type)
        return self._emit(lhs.type, f"select i1 {cond.get_reference()}, {t} "
                                    f"{lhs.get_reference()}, {t} {rhs.get_reference()}")

    def load(self, ptr, name="", align=None, typ=None):
        if typ is None:  # llvmlite works the type out from the pointer
            return super().load(ptr, name, align)
        tail = f", align {align}" if align else ""
        return self._emit(typ, f"load {_ty(typ)}, ptr {ptr.get_reference()}{tail}")

    def store(self, value, ptr, align=None):
        tail = f", align {align}" if align else ""
        return self._emit_void(f"store {_ty(value.type)} {value.get_reference()}, "
                               f"ptr {ptr.get_reference()}{tail}")

    def alloca_text(self, name: str, allocated: str, align: int | None = None) -> Tmp:
        """``%<name> = alloca <allocated>`` (a pointer named by the caller; keep such names
        apart from llvmlite's, which are ``.<n>`` or given explicitly)."""
        tail = f", align {align}" if align else ""
        line = Tmp(PTR, f"%{name}", f"%{name} = alloca {allocated}{tail}", self._block)
        self._block.instructions.insert(self._anchor, line)
        self._anchor += 1
        return line

    def gep_i8(self, base: ir.Value, offset: int) -> Tmp:
        """``base + offset`` bytes, as a pointer derived from ``base`` (not an integer)."""
        return self._emit(PTR, f"getelementptr i8, ptr {base.get_reference()}, i64 {offset}")

    def branch(self, target):
        assert not self._block.is_terminated
        line = self._emit_void(f"br label {target.get_reference()}")
        self._block.terminator = line
        return line

    def branch_if(self, cond, truebr, falsebr):
        """``cbranch`` without branch weights (llvmlite's ``cbranch`` stays for ``if_then``)."""
        assert not self._block.is_terminated
        line = self._emit_void(f"br i1 {cond.get_reference()}, label {truebr.get_reference()}, "
                               f"label {falsebr.get_reference()}")
        self._block.terminator = line
        return line


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
    return narrow(builder, v, 32)


def zext64(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return builder.zext(v, I64) if v.type.width < 64 else v


def sext64(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return builder.sext(v, I64) if v.type.width < 64 else v


def narrow(builder: ir.IRBuilder, v: ir.Value, width: int) -> ir.Value:
    """The low ``width`` bits of a 64-bit value (a constant stays a constant)."""
    if width >= v.type.width:
        return v
    if isinstance(v, Const):
        return const(INT[width], v.value)
    return builder.trunc(v, INT[width])


# -- arithmetic with BPF's definitions -------------------------------------------------------

def shift(builder: ir.IRBuilder, op: str, value: ir.Value, count: ir.Value) -> ir.Value:
    """``lsh``/``rsh``/``arsh`` with the count masked to the width (LLVM: poison otherwise)."""
    width = value.type.width
    if isinstance(count, Const):  # an immediate count: mask it here, not in LLVM
        count = const(value.type, count.value & (width - 1))
    else:
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
