"""Tracked numbers (tnums): the kernel verifier's bit-level knowledge of a 64-bit value.

A tnum is a pair (value, mask): bits set in ``mask`` are unknown, the other bits are known and
equal to the same bits of ``value`` (``value & mask == 0`` always). Every operation is the one in
Linux 6.18's kernel/bpf/tnum.c (including the stable additions the running 6.18 kernel carries:
``tnum_step`` and the byte-swap tnums), so the verifier's log and its accept/reject decisions
match the kernel's bit for bit.

Tnums are immutable; operations return new objects. Values are plain Python ints in
[0, 2**64).
"""
from __future__ import annotations

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
_S64_SIGN = 1 << 63
_S32_SIGN = 1 << 31


class Tnum:
    """A tracked number: ``value`` holds the known bits, ``mask`` marks the unknown ones."""

    __slots__ = ("value", "mask")

    def __init__(self, value: int, mask: int):
        # Callers inside the verifier always pass canonical values; normalise anyway so that a
        # hand-built Tnum cannot carry bits outside 64 or a known bit that is also unknown.
        mask &= U64
        object.__setattr__(self, "value", value & U64 & ~mask)
        object.__setattr__(self, "mask", mask)

    def __setattr__(self, name, value):
        raise AttributeError("Tnum is immutable")

    # --- constructors ----------------------------------------------------------------------
    @staticmethod
    def const(v: int) -> "Tnum":
        """tnum_const: exactly ``v`` (taken modulo 2**64)."""
        return _mk(v & U64, 0)

    @staticmethod
    def unknown() -> "Tnum":
        """tnum_unknown: every bit unknown."""
        return UNKNOWN

    @staticmethod
    def range(lo: int, hi: int) -> "Tnum":
        """tnum_range: the smallest tnum (by the kernel's construction) holding [lo, hi] (u64)."""
        lo &= U64
        hi &= U64
        bits = (lo ^ hi).bit_length()
        if bits > 63:
            return UNKNOWN
        delta = (1 << bits) - 1
        return _mk(lo & ~delta, delta)

    # --- arithmetic ------------------------------------------------------------------------
    def add(self, b: "Tnum") -> "Tnum":
        return _mk(*add_raw(self.value, self.mask, b.value, b.mask))

    def sub(self, b: "Tnum") -> "Tnum":
        return _mk(*sub_raw(self.value, self.mask, b.value, b.mask))

    def neg(self) -> "Tnum":
        """tnum_neg: 0 - self."""
        return _mk(*sub_raw(0, 0, self.value, self.mask))

    def mul(self, b: "Tnum") -> "Tnum":
        return _mk(*mul_raw(self.value, self.mask, b.value, b.mask))

    def and_(self, b: "Tnum") -> "Tnum":
        v = self.value & b.value
        return _mk(v, (self.value | self.mask) & (b.value | b.mask) & ~v)

    def or_(self, b: "Tnum") -> "Tnum":
        v = self.value | b.value
        return _mk(v, (self.mask | b.mask) & ~v)

    def xor(self, b: "Tnum") -> "Tnum":
        mu = self.mask | b.mask
        return _mk((self.value ^ b.value) & ~mu, mu)

    def lshift(self, shift: int) -> "Tnum":
        return _mk((self.value << shift) & U64, (self.mask << shift) & U64)

    def rshift(self, shift: int) -> "Tnum":
        return _mk(self.value >> shift, self.mask >> shift)

    def arshift(self, shift: int, insn_bitness: int = 64) -> "Tnum":
        """tnum_arshift: arithmetic shift of the low ``insn_bitness`` bits (32-bit results are
        zero-extended, as in the kernel)."""
        return _mk(*arshift_raw(self.value, self.mask, shift, insn_bitness))

    # --- lattice ---------------------------------------------------------------------------
    def intersect(self, b: "Tnum") -> "Tnum":
        """tnum_intersect: the values in both (where they disagree, the result says known 1)."""
        v = self.value | b.value
        mu = self.mask & b.mask
        return _mk(v & ~mu, mu)

    def union(self, b: "Tnum") -> "Tnum":
        """tnum_union: a tnum holding every value of either."""
        mu = (self.value ^ b.value) | self.mask | b.mask
        return _mk(self.value & b.value & ~mu, mu)

    def overlap(self, b: "Tnum") -> bool:
        """tnum_overlap: False only when some bit is known in both and differs."""
        mu = ~self.mask & ~b.mask
        return (self.value & mu) == (b.value & mu)

    # --- width -----------------------------------------------------------------------------
    def cast(self, size: int) -> "Tnum":
        """tnum_cast: keep the low ``size`` bytes."""
        m = (1 << (size * 8)) - 1
        return _mk(self.value & m, self.mask & m)

    def subreg(self) -> "Tnum":
        """tnum_subreg: the low 32 bits."""
        return _mk(self.value & U32, self.mask & U32)

    def clear_subreg(self) -> "Tnum":
        """tnum_clear_subreg: the high 32 bits, low 32 bits known zero."""
        return _mk(self.value & ~U32 & U64, self.mask & ~U32 & U64)

    def with_subreg(self, sub: "Tnum") -> "Tnum":
        """tnum_with_subreg: high 32 bits of self, low 32 bits of ``sub``."""
        return _mk((self.value & ~U32 & U64) | (sub.value & U32),
                   (self.mask & ~U32 & U64) | (sub.mask & U32))

    def const_subreg(self, v: int) -> "Tnum":
        """tnum_const_subreg: high 32 bits of self, low 32 bits the constant ``v``."""
        return _mk((self.value & ~U32 & U64) | (v & U32), self.mask & ~U32 & U64)

    def bswap16(self) -> "Tnum":
        return _mk(_swab(self.value, 2), _swab(self.mask, 2))

    def bswap32(self) -> "Tnum":
        return _mk(_swab(self.value, 4), _swab(self.mask, 4))

    def bswap64(self) -> "Tnum":
        return _mk(_swab(self.value, 8), _swab(self.mask, 8))

    # --- predicates ------------------------------------------------------------------------
    def is_const(self) -> bool:
        return not self.mask

    def is_unknown(self) -> bool:
        return self.mask == U64

    def equals_const(self, v: int) -> bool:
        return not self.mask and self.value == (v & U64)

    def in_(self, b: "Tnum") -> bool:
        """tnum_in(self, b): True when every value ``b`` can hold is one ``self`` can hold."""
        if b.mask & ~self.mask:
            return False
        return self.value == (b.value & ~self.mask)

    def contains(self, v: int) -> bool:
        """The concrete u64 ``v`` is one of this tnum's values."""
        return (v & U64 & ~self.mask) == self.value

    def is_aligned(self, size: int) -> bool:
        """tnum_is_aligned: every value is a multiple of ``size`` (a power of two)."""
        if not size:
            return True
        return not ((self.value | self.mask) & (size - 1))

    def step(self, z: int) -> int:
        """tnum_step: the smallest member greater than ``z`` (tmax if none, tmin if z < tmin)."""
        return step_raw(self.value, self.mask, z)

    @property
    def umin(self) -> int:
        return self.value

    @property
    def umax(self) -> int:
        return self.value | self.mask

    # --- formatting and identity -----------------------------------------------------------
    def __str__(self) -> str:
        """tnum_strn: ``(%#llx; %#llx)``."""
        return f"({_hx(self.value)}; {_hx(self.mask)})"

    def __repr__(self) -> str:
        return f"Tnum({self.value:#x}, {self.mask:#x})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Tnum) and self.value == other.value
                and self.mask == other.mask)

    def __hash__(self) -> int:
        return hash((self.value, self.mask))

    def __reduce__(self):
        return (Tnum, (self.value, self.mask))


_new = object.__new__
_set = object.__setattr__


def _mk(value: int, mask: int) -> Tnum:
    """Build a Tnum from already-canonical parts (no normalisation: internal fast path)."""
    t = _new(Tnum)
    _set(t, "value", value)
    _set(t, "mask", mask)
    return t


def _hx(v: int) -> str:
    # the kernel's vsnprintf prints %#llx of 0 as "0x0" (unlike glibc)
    return f"{v:#x}"


def _swab(v: int, nbytes: int) -> int:
    return int.from_bytes((v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


# --- raw (value, mask) operations: shared with bounds.py, which avoids building Tnums in its
# inner loops -------------------------------------------------------------------------------

def add_raw(av: int, am: int, bv: int, bm: int) -> tuple[int, int]:
    sv = av + bv
    chi = ((am + bm + sv) ^ sv) & U64
    mu = chi | am | bm
    return (sv & ~mu & U64, mu)


def sub_raw(av: int, am: int, bv: int, bm: int) -> tuple[int, int]:
    dv = (av - bv) & U64
    chi = ((dv + am) ^ (dv - bm)) & U64
    mu = chi | am | bm
    return (dv & ~mu, mu)


def union_raw(av: int, am: int, bv: int, bm: int) -> tuple[int, int]:
    mu = (av ^ bv) | am | bm
    return (av & bv & ~mu, mu)


def mul_raw(av: int, am: int, bv: int, bm: int) -> tuple[int, int]:
    """tnum_mul (6.17+ long multiplication with a union for each unknown bit of a), with the
    add and union inlined, and an exact early exit once no later step can change the
    accumulator."""
    accv = accm = 0
    while av or am:
        if av & 1:
            sv = accv + bv
            mu = (((accm + bm + sv) ^ sv) & U64) | accm | bm
            accv = sv & ~mu & U64
            accm = mu
        elif am & 1:
            sv = accv + bv
            mu = (((accm + bm + sv) ^ sv) & U64) | accm | bm
            tv = sv & ~mu & U64
            m2 = (accv ^ tv) | accm | mu
            accv = accv & tv & ~m2
            accm = m2
        av >>= 1
        am >>= 1
        bv = (bv << 1) & U64
        bm = (bm << 1) & U64
        b = bv | bm
        # once every bit from b's lowest set bit up is unknown in acc, adding b (or the union
        # with acc + b) gives acc back: nothing can change any more (b == 0 included)
        if accm | ((b & -b) - 1) == U64 or not b:
            break
    return (accv, accm)


def _mul_ref(av: int, am: int, bv: int, bm: int) -> tuple[int, int]:
    """tnum_mul exactly as tnum.c writes it (the reference mul_raw is tested against)."""
    accv = accm = 0
    while av or am:
        if av & 1:
            accv, accm = add_raw(accv, accm, bv, bm)
        elif am & 1:
            sv, sm = add_raw(accv, accm, bv, bm)
            accv, accm = union_raw(accv, accm, sv, sm)
        av >>= 1
        am >>= 1
        bv = (bv << 1) & U64
        bm = (bm << 1) & U64
    return (accv, accm)


def arshift_raw(v: int, m: int, shift: int, bits: int) -> tuple[int, int]:
    if bits == 32:
        v &= U32
        m &= U32
        if v & _S32_SIGN:
            v -= 1 << 32
        if m & _S32_SIGN:
            m -= 1 << 32
        return ((v >> shift) & U32, (m >> shift) & U32)
    if v & _S64_SIGN:
        v -= 1 << 64
    if m & _S64_SIGN:
        m -= 1 << 64
    return ((v >> shift) & U64, (m >> shift) & U64)


def step_raw(v: int, m: int, z: int) -> int:
    tmax = v | m
    if z >= tmax:
        return tmax
    if z < v:
        return v
    d = z - v
    carry_mask = (1 << (d & ~m).bit_length()) - 1
    filled = (d | carry_mask | (~m & U64)) & U64
    inc = (filled + 1) & m
    return v | inc


def range_raw(lo: int, hi: int) -> tuple[int, int]:
    bits = (lo ^ hi).bit_length()
    if bits > 63:
        return (0, U64)
    delta = (1 << bits) - 1
    return (lo & ~delta, delta)


UNKNOWN = _mk(0, U64)
ZERO = _mk(0, 0)
