"""Scalar value tracking: a tnum plus signed/unsigned 64- and 32-bit ranges, as the kernel keeps
them in ``struct bpf_reg_state`` (Linux 6.18, kernel/bpf/verifier.c).

SKELETON: the public API is final; bodies are being filled in (results are sound but may be less
precise than the kernel's until then).
"""
from __future__ import annotations

from .tnum import Tnum, U32, U64

S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1


class Scalar:
    """An abstract scalar: var_off (Tnum) and smin/smax/umin/umax, s32_min/s32_max/u32_min/
    u32_max. Immutable; always kept in sync (reg_bounds_sync)."""

    __slots__ = ("var_off", "smin", "smax", "umin", "umax",
                 "s32_min", "s32_max", "u32_min", "u32_max")

    @staticmethod
    def const(v: int) -> "Scalar":
        s = Scalar()
        v &= U64
        s.var_off = Tnum.const(v)
        s.umin = s.umax = v
        s.smin = s.smax = v - (1 << 64) if v >> 63 else v
        w = v & U32
        s.u32_min = s.u32_max = w
        s.s32_min = s.s32_max = w - (1 << 32) if w >> 31 else w
        return s

    @staticmethod
    def unknown() -> "Scalar":
        s = Scalar()
        s.var_off = Tnum.unknown()
        s.smin, s.smax, s.umin, s.umax = S64_MIN, S64_MAX, 0, U64
        s.s32_min, s.s32_max, s.u32_min, s.u32_max = S32_MIN, S32_MAX, 0, U32
        return s

    def is_const(self) -> bool:
        return self.var_off.mask == 0

    def const_value(self) -> int:
        return self.var_off.value

    def __str__(self) -> str:
        if self.is_const():
            return str(self.smin)
        return f"scalar(var_off={self.var_off})"


def scalar_alu(op: str, dst: Scalar, src: Scalar, is64: bool) -> Scalar:
    """adjust_scalar_min_max_vals for ``op`` in add sub mul div mod sdiv smod or and lsh rsh arsh
    xor mov."""
    return Scalar.unknown()


def neg(x: Scalar, is64: bool) -> Scalar:
    return Scalar.unknown()


def end(x: Scalar, op: str, width: int) -> Scalar:
    """Byte swap: op is le/be (ALU class) or bswap (ALU64), width 16/32/64."""
    return Scalar.unknown()


def movsx(x: Scalar, bits: int, is64: bool) -> Scalar:
    return Scalar.unknown()


def zext32(x: Scalar) -> Scalar:
    return Scalar.unknown()


def load_result(size: int, signed: bool) -> Scalar:
    return Scalar.unknown()


def is_branch_taken(op: str, a: Scalar, b: Scalar, is32: bool) -> int:
    """1 taken, 0 not taken, -1 unknown."""
    return -1


def refine(op: str, a: Scalar, b: Scalar, is32: bool):
    """((a_true, b_true), (a_false, b_false)); a side is None when impossible."""
    return (a, b), (a, b)


def within(old: Scalar, cur: Scalar) -> bool:
    """range_within(old, cur) and tnum_in(old.var_off, cur.var_off)."""
    return False
