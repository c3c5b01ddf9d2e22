"""Scalar value tracking: the kernel verifier's knowledge of a register's value.

A :class:`Scalar` is what ``struct bpf_reg_state`` keeps for a SCALAR_VALUE (and for a pointer's
variable offset): a tnum (``var_off``) plus signed and unsigned 64-bit bounds (smin, smax, umin,
umax) and 32-bit bounds of the low half (s32_min, s32_max, u32_min, u32_max). Every function here
follows Linux 6.18's kernel/bpf/verifier.c as the running 6.18 kernel has it (with its stable
fixes: tnum_step in __update_reg64_bounds, the three __reg_deduce_bounds rounds, byte-swap
tracking, tnum_overlap in branch prediction, maybe_fork_scalars, the s32-range rule of 64-bit
sign extension; and without what 6.18 lacks: no div/mod range tracking, no same-register
branch shortcut). Where the source was ambiguous the running kernel's log decided
(tests/test_bounds.py compares against it):

- ``reg_bounds_sync`` (``__update_reg_bounds``, ``__reg_deduce_bounds`` with its 32<->64
  deductions, ``__reg_bound_offset``) runs after every operation, so results are always synced;
- :func:`scalar_alu` is ``adjust_scalar_min_max_vals`` with the ``scalar{,32}_min_max_*``
  helpers (32-bit ops compute the 32-bit bounds, then zero-extend: ``zext_32_to_64``);
- :func:`is_branch_taken` is ``is_scalar_branch_taken``; :func:`refine` is ``reg_set_min_max``
  (``regs_refine_cond_op`` on both branches, then the sanity check);
- :func:`movsx`, :func:`coerce`, :func:`coerce_sx`, :func:`load_result` are
  ``coerce_reg_to_size``/``coerce_reg_to_size_sx``/``coerce_subreg_to_size_sx``;
- :func:`neg`, :func:`end` (scalar_byte_swap), :func:`zext32` (``w = w``), :func:`maybe_fork`
  (maybe_fork_scalars), :func:`ptr_add`/:func:`ptr_sub` (a pointer's variable offset in
  adjust_ptr_min_max_vals), :func:`sanity_check` (reg_bounds_sanity_check's message);
- :func:`within` is ``range_within`` + ``tnum_in`` (state pruning);
- ``str(scalar)`` is the log's ``print_scalar_ranges`` + ``tnum_strn`` form.

Values are plain Python ints: signed bounds in their signed range, unsigned ones in [0, 2**N).
Scalars are immutable by convention (slots are not write-protected, for speed): every function
returns a new object, or a shared one (constants are interned, recent results are remembered by
operand identity), and never changes its arguments.
"""
from __future__ import annotations

from .tnum import Tnum, U32, U64, step_raw

S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1
_SIGN64 = 1 << 63
_LOW63 = (1 << 63) - 1
_HI32 = U64 & ~U32
_TWO64 = 1 << 64
_TWO32 = 1 << 32


def _s64(x: int) -> int:
    """(s64) of a value already in [0, 2**64)."""
    return x - _TWO64 if x & _SIGN64 else x


def _s32(x: int) -> int:
    """(s32) of any int (takes the low 32 bits)."""
    x &= U32
    return x - _TWO32 if x & 0x80000000 else x


def _range(lo: int, hi: int) -> tuple[int, int]:
    """tnum_range on u64 inputs."""
    bits = (lo ^ hi).bit_length()
    if bits > 63:
        return 0, U64
    d = (1 << bits) - 1
    return lo & ~d, d


class Scalar:
    """An abstract 64-bit scalar, always in sync (reg_bounds_sync has run).

    ``var_off`` is a :class:`~pybpf.verifier.tnum.Tnum` (kept as the raw ``tv``/``tm`` ints
    internally); ``smin smax umin umax`` the 64-bit bounds, ``s32_min s32_max u32_min u32_max``
    those of the low 32 bits."""

    __slots__ = ("tv", "tm", "smin", "smax", "umin", "umax",
                 "s32_min", "s32_max", "u32_min", "u32_max")

    # --- constructors ----------------------------------------------------------------------
    @staticmethod
    def const(v: int) -> "Scalar":
        """__mark_reg_known: exactly ``v`` (taken modulo 2**64; pass sign-extended immediates).
        Constants are interned (immutable, so sharing is safe), which also lets the result memo
        recognise K-form operands."""
        s = _CONSTS.get(v)
        if s is None:
            s = _new(Scalar)
            _known(s, v & U64)
            if len(_CONSTS) >= 4096:
                _CONSTS.clear()
            _CONSTS[v] = s
        return s

    @staticmethod
    def unknown() -> "Scalar":
        """__mark_reg_unknown: any 64-bit value."""
        return _UNKNOWN

    @staticmethod
    def from_bounds(var_off: Tnum | None = None, smin: int = S64_MIN, smax: int = S64_MAX,
                    umin: int = 0, umax: int = U64, s32_min: int = S32_MIN,
                    s32_max: int = S32_MAX, u32_min: int = 0, u32_max: int = U32) -> "Scalar":
        """Build a scalar from any subset of facts and sync it (reg_bounds_sync), e.g. the
        ranges a helper's return type implies. Bounds that contradict each other give a scalar
        that :func:`sanity_check` reports."""
        s = _new(Scalar)
        if var_off is None:
            s.tv, s.tm = 0, U64
        else:
            s.tv, s.tm = var_off.value, var_off.mask
        s.smin, s.smax, s.umin, s.umax = smin, smax, umin, umax
        s.s32_min, s.s32_max, s.u32_min, s.u32_max = s32_min, s32_max, u32_min, u32_max
        _sync(s)
        return s

    @staticmethod
    def range_u64(lo: int, hi: int) -> "Scalar":
        """An unsigned range [lo, hi], synced."""
        return Scalar.from_bounds(umin=lo, umax=hi)

    # --- queries ---------------------------------------------------------------------------
    @property
    def var_off(self) -> Tnum:
        return Tnum(self.tv, self.tm)

    def is_const(self) -> bool:
        """tnum_is_const(var_off)."""
        return not self.tm

    def const_value(self) -> int:
        """The u64 value (meaningful when is_const())."""
        return self.tv

    def is_subreg_const(self) -> bool:
        """tnum_subreg_is_const: the low 32 bits are known."""
        return not (self.tm & U32)

    def subreg_const_value(self) -> int:
        return self.tv & U32

    def is_reg_const(self, is32: bool) -> bool:
        """is_reg_const for a scalar: constant in the compared width."""
        return not (self.tm & U32) if is32 else not self.tm

    def reg_const_value(self, is32: bool) -> int:
        return self.tv & U32 if is32 else self.tv

    def is_unbounded(self) -> bool:
        """__is_scalar_unbounded: nothing is known."""
        return (self.tm == U64 and self.smin == S64_MIN and self.smax == S64_MAX
                and self.umin == 0 and self.umax == U64 and self.s32_min == S32_MIN
                and self.s32_max == S32_MAX and self.u32_min == 0 and self.u32_max == U32)

    def is_null(self) -> bool:
        """register_is_null for a scalar: known zero."""
        return not self.tm and not self.tv

    def width(self) -> int:
        """get_reg_width: fls64(umax), the bits the value may use."""
        return self.umax.bit_length()

    def contains(self, v: int) -> bool:
        """The concrete 64-bit value ``v`` is allowed by every component."""
        v &= U64
        sv = _s64(v)
        w = v & U32
        sw = _s32(w)
        return ((v & ~self.tm) == self.tv and self.umin <= v <= self.umax
                and self.smin <= sv <= self.smax and self.u32_min <= w <= self.u32_max
                and self.s32_min <= sw <= self.s32_max)

    # --- formatting ------------------------------------------------------------------------
    def ranges_str(self) -> str:
        """The body the log prints inside ``scalar(...)`` (print_scalar_ranges, then
        ``var_off=`` unless the tnum is unknown); empty for an unbounded scalar."""
        parts = _scalar_ranges(self)
        if self.tm != U64:
            parts.append(f"var_off=({_hx(self.tv)}; {_hx(self.tm)})")
        return ",".join(parts)

    def __str__(self) -> str:
        """As print_reg_state prints a scalar register: the constant (verbose_snum) when known,
        else ``scalar(...)``."""
        if not self.tm:
            return fmt_snum(self.tv)
        return f"scalar({self.ranges_str()})"

    def __repr__(self) -> str:
        return (f"Scalar(var_off=({self.tv:#x}; {self.tm:#x}), s64=[{self.smin}, {self.smax}], "
                f"u64=[{self.umin:#x}, {self.umax:#x}], s32=[{self.s32_min}, {self.s32_max}], "
                f"u32=[{self.u32_min:#x}, {self.u32_max:#x}])")

    def _key(self) -> tuple:
        return (self.tv, self.tm, self.smin, self.smax, self.umin, self.umax,
                self.s32_min, self.s32_max, self.u32_min, self.u32_max)

    def __eq__(self, other) -> bool:
        return isinstance(other, Scalar) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self):
        return (_rebuild, self._key())


_new = object.__new__
_CONSTS: dict = {}


def _rebuild(*k) -> Scalar:
    s = _new(Scalar)
    (s.tv, s.tm, s.smin, s.smax, s.umin, s.umax,
     s.s32_min, s.s32_max, s.u32_min, s.u32_max) = k
    return s


def _copy(x: Scalar) -> Scalar:
    s = _new(Scalar)
    s.tv = x.tv
    s.tm = x.tm
    s.smin = x.smin
    s.smax = x.smax
    s.umin = x.umin
    s.umax = x.umax
    s.s32_min = x.s32_min
    s.s32_max = x.s32_max
    s.u32_min = x.u32_min
    s.u32_max = x.u32_max
    return s


def _known(s: Scalar, v: int) -> None:
    """___mark_reg_known (v in [0, 2**64))."""
    s.tv = v
    s.tm = 0
    s.umin = s.umax = v
    s.smin = s.smax = v - _TWO64 if v & _SIGN64 else v
    w = v & U32
    s.u32_min = s.u32_max = w
    s.s32_min = s.s32_max = w - _TWO32 if w & 0x80000000 else w


def _known32(s: Scalar, v: int) -> None:
    """__mark_reg32_known: the low half becomes the constant, the high half keeps its tnum."""
    w = v & U32
    s.tv = (s.tv & _HI32) | w
    s.tm &= _HI32
    s.u32_min = s.u32_max = w
    s.s32_min = s.s32_max = w - _TWO32 if w & 0x80000000 else w


def _unbounded64(s: Scalar) -> None:
    s.smin, s.smax, s.umin, s.umax = S64_MIN, S64_MAX, 0, U64


def _unbounded32(s: Scalar) -> None:
    s.s32_min, s.s32_max, s.u32_min, s.u32_max = S32_MIN, S32_MAX, 0, U32


def _mk_unknown() -> Scalar:
    s = _new(Scalar)
    s.tv, s.tm = 0, U64
    _unbounded64(s)
    _unbounded32(s)
    return s


_UNKNOWN = _mk_unknown()


# --- reg_bounds_sync -------------------------------------------------------------------------

def _update32(s: Scalar) -> None:
    """__update_reg32_bounds: learn 32-bit bounds from the tnum's low half."""
    v = s.tv & U32
    m = s.tm & U32
    a = _s32(v | (m & 0x80000000))
    if a > s.s32_min:
        s.s32_min = a
    a = _s32(v | (m & 0x7fffffff))
    if a < s.s32_max:
        s.s32_max = a
    if v > s.u32_min:
        s.u32_min = v
    a = v | m
    if a < s.u32_max:
        s.u32_max = a


def _update64(s: Scalar) -> None:
    """__update_reg64_bounds, including the single-value overlap of tnum and u64 range."""
    v = s.tv
    m = s.tm
    a = _s64(v | (m & _SIGN64))
    if a > s.smin:
        s.smin = a
    a = _s64(v | (m & _LOW63))
    if a < s.smax:
        s.smax = a
    if v > s.umin:
        s.umin = v
    tmax = v | m
    if tmax < s.umax:
        s.umax = tmax
    umin = s.umin
    umax = s.umax
    nxt = step_raw(v, m, umin)
    umin_in = (umin & ~m) == v
    if umin_in:
        if nxt > umax:
            _known(s, umin)
    elif nxt == tmax:
        _known(s, tmax)
    elif nxt <= umax and step_raw(v, m, nxt) > umax:
        _known(s, nxt)


def _deduce32(s: Scalar) -> None:
    """__reg32_deduce_bounds."""
    umin, umax, smin, smax = s.umin, s.umax, s.smin, s.smax
    if (umin >> 32) == (umax >> 32):
        lo, hi = umin & U32, umax & U32
        if lo > s.u32_min:
            s.u32_min = lo
        if hi < s.u32_max:
            s.u32_max = hi
        slo, shi = _s32(umin), _s32(umax)
        if slo <= shi:
            if slo > s.s32_min:
                s.s32_min = slo
            if shi < s.s32_max:
                s.s32_max = shi
    if (smin >> 32) == (smax >> 32):
        lo, hi = smin & U32, smax & U32
        if lo <= hi:
            if lo > s.u32_min:
                s.u32_min = lo
            if hi < s.u32_max:
                s.u32_max = hi
        slo, shi = _s32(smin), _s32(smax)
        if slo <= shi:
            if slo > s.s32_min:
                s.s32_min = slo
            if shi < s.s32_max:
                s.s32_max = shi
    # upper halves two consecutive numbers, low halves an s32 range crossing zero
    if ((umin >> 32) + 1) & U32 == (umax >> 32) & U32:
        slo, shi = _s32(umin), _s32(umax)
        if slo < 0 and shi >= 0:
            if slo > s.s32_min:
                s.s32_min = slo
            if shi < s.s32_max:
                s.s32_max = shi
    if ((smin >> 32) + 1) & U32 == (smax >> 32) & U32:
        slo, shi = _s32(smin), _s32(smax)
        if slo < 0 and shi >= 0:
            if slo > s.s32_min:
                s.s32_min = slo
            if shi < s.s32_max:
                s.s32_max = shi
    # u32 range is a valid s32 range
    slo, shi = _s32(s.u32_min), _s32(s.u32_max)
    if slo <= shi:
        if slo > s.s32_min:
            s.s32_min = slo
        if shi < s.s32_max:
            s.s32_max = shi
    lo, hi = s.s32_min & U32, s.s32_max & U32
    if lo <= hi:
        if lo > s.u32_min:
            s.u32_min = lo
        if hi < s.u32_max:
            s.u32_max = hi
    else:
        # the s32 range crosses the sign boundary: the u32 range may overlap only one end
        if s.u32_max < lo:
            s.s32_min = _s32(s.u32_min)
            if hi < s.u32_max:
                s.u32_max = hi
        elif hi < s.u32_min:
            s.s32_max = _s32(s.u32_max)
            if lo > s.u32_min:
                s.u32_min = lo


def _deduce64(s: Scalar) -> None:
    """__reg64_deduce_bounds."""
    umin, umax = s.umin, s.umax
    slo, shi = _s64(umin), _s64(umax)
    if slo <= shi:
        if slo > s.smin:
            s.smin = slo
        if shi < s.smax:
            s.smax = shi
    lo, hi = s.smin & U64, s.smax & U64
    if lo <= hi:
        if lo > s.umin:
            s.umin = lo
        if hi < s.umax:
            s.umax = hi
    else:
        if s.umax < lo:
            s.smin = _s64(s.umin)
            if hi < s.umax:
                s.umax = hi
        elif hi < s.umin:
            s.smax = _s64(s.umax)
            if lo > s.umin:
                s.umin = lo


def _deduce_mixed(s: Scalar) -> None:
    """__reg_deduce_mixed_bounds: tighten 64-bit bounds from the 32-bit ones."""
    u32_min, u32_max = s.u32_min, s.u32_max
    a = (s.umin & _HI32) | u32_min
    if a > s.umin:
        s.umin = a
    a = (s.umax & _HI32) | u32_max
    if a < s.umax:
        s.umax = a
    a = _s64((s.smin & _HI32) | u32_min)
    if a > s.smin:
        s.smin = a
    a = _s64((s.smax & _HI32) | u32_max)
    if a < s.smax:
        s.smax = a
    # after a sign-extending load: upper bits all 0 or all 1, low half non-negative
    if s.s32_min >= 0 and s.smin >= S32_MIN and s.smax <= S32_MAX:
        s.smin = s.s32_min
        s.smax = s.s32_max
        s.umin = s.s32_min & U64
        s.umax = s.s32_max & U64
        rv, rm = _range(s.smin & U64, s.smax & U64)
        mu = s.tm & rm
        s.tv = (s.tv | rv) & ~mu
        s.tm = mu


def _bound_offset(s: Scalar) -> None:
    """__reg_bound_offset: learn tnum bits from the unsigned ranges."""
    rv, rm = _range(s.umin, s.umax)
    mu = s.tm & rm
    v64 = (s.tv | rv) & ~mu
    rv, rm = _range(s.u32_min, s.u32_max)
    m32 = mu & U32 & rm
    v32 = ((v64 & U32) | rv) & ~m32
    # tnum_or(tnum_clear_subreg(var64), var32)
    hv = v64 & _HI32
    hm = mu & _HI32
    v = hv | v32
    s.tv = v
    s.tm = (hm | m32) & ~v


def _sync_ref(s: Scalar) -> None:
    """reg_bounds_sync, transcribed function by function (the reference that _sync, its
    inlined form, is tested against)."""
    _update32(s)
    _update64(s)
    for _ in (0, 1, 2):
        _deduce32(s)
        _deduce64(s)
        _deduce_mixed(s)
    _bound_offset(s)
    _update32(s)
    _update64(s)


def _sync(s: Scalar) -> None:
    """reg_bounds_sync in place, inlined on locals (this runs after every operation).

    Same result as :func:`_sync_ref`: a constant tnum inside all bounds collapses at once, and
    the three __reg_deduce_bounds rounds stop early once a round changes nothing (each round
    is a function of the state alone)."""
    tv = s.tv
    tm = s.tm
    smin = s.smin
    smax = s.smax
    umin = s.umin
    umax = s.umax
    s32min = s.s32_min
    s32max = s.s32_max
    u32min = s.u32_min
    u32max = s.u32_max
    if tm == U64 and not umin and umax == U64 and smin == S64_MIN and smax == S64_MAX and \
            not u32min and u32max == U32 and s32min == S32_MIN and s32max == S32_MAX:
        return                       # nothing known: a fixpoint
    if not tm:
        sv = tv - _TWO64 if tv >> 63 else tv
        w = tv & U32
        sw = w - _TWO32 if w >> 31 else w
        if (umin <= tv <= umax and smin <= sv <= smax and u32min <= w <= u32max
                and s32min <= sw <= s32max):
            s.umin = s.umax = tv
            s.smin = s.smax = sv
            s.u32_min = s.u32_max = w
            s.s32_min = s.s32_max = sw
            return
    for final in (False, True):
        # __update_reg32_bounds
        v = tv & U32
        m = tm & U32
        a = v | (m & 0x80000000)
        if a >> 31:
            a -= _TWO32
        if a > s32min:
            s32min = a
        a = v | (m & 0x7fffffff)
        if a >> 31:
            a -= _TWO32
        if a < s32max:
            s32max = a
        if v > u32min:
            u32min = v
        a = v | m
        if a < u32max:
            u32max = a
        # __update_reg64_bounds
        a = tv | (tm & _SIGN64)
        if a >> 63:
            a -= _TWO64
        if a > smin:
            smin = a
        a = tv | (tm & _LOW63)
        if a >> 63:
            a -= _TWO64
        if a < smax:
            smax = a
        if tv > umin:
            umin = tv
        tmax = tv | tm
        if tmax < umax:
            umax = tmax
        known = -1
        if (umin & ~tm) == tv:
            if umin < tmax:
                # cheap bound first: umin + lowest unknown bit is a member when that bit is 0
                # in umin, so the next member cannot lie beyond it
                lsb = tm & -tm
                if umin & lsb or umin + lsb > umax:
                    nxt = step_raw(tv, tm, umin)
                    if nxt > umax:
                        known = umin
            elif umin > umax:
                known = umin         # umin == tmax and nothing above it fits (kernel's case 1)
        elif umin < tmax:
            nxt = step_raw(tv, tm, umin)
            if nxt == tmax:
                known = tmax
            elif nxt <= umax and step_raw(tv, tm, nxt) > umax:
                known = nxt
        else:
            known = tmax             # umin >= tmax: tnum_step gives tmax
        if known >= 0:
            tv = umin = umax = known
            tm = 0
            smin = smax = known - _TWO64 if known >> 63 else known
            u32min = u32max = known & U32
            s32min = s32max = u32min - _TWO32 if u32min >> 31 else u32min
        if final:
            break
        # A small non-negative range, the same on every axis: __reg_deduce_bounds has nothing
        # to add but intersecting the tnum with [umin, umax], which __reg_bound_offset below
        # does anyway (and intersecting twice changes nothing), so the rounds are skipped.
        simple = (0 <= umin == smin == u32min == s32min and umax == smax == u32max == s32max
                  and umax <= S32_MAX)
        for _ in () if simple else (0, 1, 2):
            before = (tv, tm, smin, smax, umin, umax, s32min, s32max, u32min, u32max)
            # __reg32_deduce_bounds
            if (umin >> 32) == (umax >> 32):
                lo = umin & U32
                hi = umax & U32
                if lo > u32min:
                    u32min = lo
                if hi < u32max:
                    u32max = hi
                slo = lo - _TWO32 if lo >> 31 else lo
                shi = hi - _TWO32 if hi >> 31 else hi
                if slo <= shi:
                    if slo > s32min:
                        s32min = slo
                    if shi < s32max:
                        s32max = shi
            if (smin >> 32) == (smax >> 32):
                lo = smin & U32
                hi = smax & U32
                if lo <= hi:
                    if lo > u32min:
                        u32min = lo
                    if hi < u32max:
                        u32max = hi
                slo = lo - _TWO32 if lo >> 31 else lo
                shi = hi - _TWO32 if hi >> 31 else hi
                if slo <= shi:
                    if slo > s32min:
                        s32min = slo
                    if shi < s32max:
                        s32max = shi
            if ((umin >> 32) + 1) & U32 == umax >> 32:
                lo = umin & U32
                hi = umax & U32
                if lo >> 31 and not hi >> 31:
                    lo -= _TWO32
                    if lo > s32min:
                        s32min = lo
                    if hi < s32max:
                        s32max = hi
            if ((smin >> 32) + 1) & U32 == (smax >> 32) & U32:
                lo = smin & U32
                hi = smax & U32
                if lo >> 31 and not hi >> 31:
                    lo -= _TWO32
                    if lo > s32min:
                        s32min = lo
                    if hi < s32max:
                        s32max = hi
            slo = u32min - _TWO32 if u32min >> 31 else u32min
            shi = u32max - _TWO32 if u32max >> 31 else u32max
            if slo <= shi:
                if slo > s32min:
                    s32min = slo
                if shi < s32max:
                    s32max = shi
            lo = s32min & U32
            hi = s32max & U32
            if lo <= hi:
                if lo > u32min:
                    u32min = lo
                if hi < u32max:
                    u32max = hi
            elif u32max < lo:
                s32min = u32min - _TWO32 if u32min >> 31 else u32min
                if hi < u32max:
                    u32max = hi
            elif hi < u32min:
                s32max = u32max - _TWO32 if u32max >> 31 else u32max
                if lo > u32min:
                    u32min = lo
            # __reg64_deduce_bounds
            slo = umin - _TWO64 if umin >> 63 else umin
            shi = umax - _TWO64 if umax >> 63 else umax
            if slo <= shi:
                if slo > smin:
                    smin = slo
                if shi < smax:
                    smax = shi
            lo = smin & U64
            hi = smax & U64
            if lo <= hi:
                if lo > umin:
                    umin = lo
                if hi < umax:
                    umax = hi
            elif umax < lo:
                smin = umin - _TWO64 if umin >> 63 else umin
                if hi < umax:
                    umax = hi
            elif hi < umin:
                smax = umax - _TWO64 if umax >> 63 else umax
                if lo > umin:
                    umin = lo
            # __reg_deduce_mixed_bounds
            a = (umin & _HI32) | u32min
            if a > umin:
                umin = a
            a = (umax & _HI32) | u32max
            if a < umax:
                umax = a
            a = (smin & _HI32) | u32min
            if a >> 63:
                a -= _TWO64
            if a > smin:
                smin = a
            a = (smax & _HI32) | u32max
            if a >> 63:
                a -= _TWO64
            if a < smax:
                smax = a
            if s32min >= 0 and smin >= S32_MIN and smax <= S32_MAX:
                smin = s32min
                smax = s32max
                umin = s32min & U64
                umax = s32max & U64
                lo = smin & U64
                bits = (lo ^ (smax & U64)).bit_length()
                if bits > 63:
                    rv, rm = 0, U64
                else:
                    rm = (1 << bits) - 1
                    rv = lo & ~rm
                m = tm & rm
                tv = (tv | rv) & ~m
                tm = m
            if before == (tv, tm, smin, smax, umin, umax, s32min, s32max, u32min, u32max):
                break
        # __reg_bound_offset
        bits = (umin ^ umax).bit_length()
        if bits > 63:
            rv, rm = 0, U64
        else:
            rm = (1 << bits) - 1
            rv = umin & ~rm
        mu = tm & rm
        v64 = (tv | rv) & ~mu
        bits = (u32min ^ u32max).bit_length()
        rm = (1 << bits) - 1
        rv = u32min & ~rm
        m32 = mu & U32 & rm
        v = (v64 & _HI32) | (((v64 & U32) | rv) & ~m32)
        tv = v
        tm = ((mu & _HI32) | m32) & ~v
    s.tv = tv
    s.tm = tm
    s.smin = smin
    s.smax = smax
    s.umin = umin
    s.umax = umax
    s.s32_min = s32min
    s.s32_max = s32max
    s.u32_min = u32min
    s.u32_max = u32max


def sync(x: Scalar) -> Scalar:
    """reg_bounds_sync on a copy of ``x`` (for callers that assembled bounds themselves)."""
    s = _copy(x)
    _sync(s)
    return s


def sanity_check(x: Scalar, ctx: str = "") -> str | None:
    """reg_bounds_sanity_check: None when ``x`` is consistent, else the kernel's log line
    (``verifier bug: REG INVARIANTS VIOLATION (ctx): ...``)."""
    if x.umin > x.umax or x.smin > x.smax or x.u32_min > x.u32_max or x.s32_min > x.s32_max:
        msg = "range bounds violation"
    elif not x.tm and (x.umin != x.tv or x.umax != x.tv or x.smin != _s64(x.tv)
                       or x.smax != _s64(x.tv)):
        msg = "const tnum out of sync with range bounds"
    elif not (x.tm & U32) and (x.u32_min != x.tv & U32 or x.u32_max != x.tv & U32
                               or x.s32_min != _s32(x.tv) or x.s32_max != _s32(x.tv)):
        msg = "const subreg tnum out of sync with range bounds"
    else:
        return None
    return (f"verifier bug: REG INVARIANTS VIOLATION ({ctx}): {msg} "
            f"u64=[{x.umin:#x}, {x.umax:#x}] s64=[{x.smin & U64:#x}, {x.smax & U64:#x}] "
            f"u32=[{x.u32_min:#x}, {x.u32_max:#x}] s32=[{x.s32_min & U32:#x}, "
            f"{x.s32_max & U32:#x}] var_off=({x.tv:#x}, {x.tm:#x})")


def mark_unbounded(x: Scalar) -> Scalar:
    """__mark_reg_unbounded: forget every range, keep the tnum (no sync, as the kernel)."""
    s = _copy(x)
    _unbounded64(s)
    _unbounded32(s)
    return s


# --- ALU -------------------------------------------------------------------------------------

_ALU_OPS = frozenset(("add", "sub", "mul", "div", "mod", "sdiv", "smod", "or", "and",
                      "lsh", "rsh", "arsh", "xor", "mov"))


def is_safe_to_compute(op: str, src: Scalar, is64: bool) -> bool:
    """is_safe_to_compute_dst_reg_range: can the result's range be tracked at all (else the
    kernel marks the destination unknown)."""
    if op in ("add", "sub", "and", "xor", "or", "mul", "neg", "end", "mov"):
        return True
    if is64:
        src_const = not src.tm and src.smin == src.smax and src.umin == src.umax
    else:
        src_const = (not (src.tm & U32) and src.s32_min == src.s32_max
                     and src.u32_min == src.u32_max)
    if op in ("div", "mod", "sdiv", "smod"):
        # 6.18 does not track division or modulo (measured: `r1 &= 255; r1 /= 3` gives
        # scalar() in the running kernel's log), whatever the divisor
        return False
    if op in ("lsh", "rsh", "arsh"):
        return src_const and src.umax < (64 if is64 else 32)
    return False


def scalar_alu(op: str, dst: Scalar, src: Scalar, is64: bool) -> Scalar:
    """adjust_scalar_min_max_vals for a scalar ``dst`` and scalar ``src`` (the result of
    ``dst op= src``; for ``mov`` the value moved). ``op`` is an ISA name: add sub mul div mod
    sdiv smod or and lsh rsh arsh xor mov. K-form sources are ``Scalar.const(imm)`` with the
    immediate sign-extended to 64 bits, as the kernel builds them. 32-bit ops (``is64=False``)
    compute the 32-bit bounds and zero-extend the result (zext_32_to_64).

    Division and modulo (any divisor, including a register that may be zero: x/0 = 0 and
    x%0 = x at run time) give an unknown scalar, as in 6.18, which does not track them. The caller rejects ``div by zero`` for K-form
    zero and ``invalid shift`` for out-of-range K-form shifts before calling this."""
    if op == "mov":
        return src if is64 else zext32(src)
    # the same instruction re-run on another path usually sees the very same (shared, immutable)
    # Scalar objects: remember recent results by identity (the entry holds its operands, so
    # their ids cannot be reused while it lives)
    mkey = (op, is64, id(dst), id(src))
    hit = _MEMO.get(mkey)
    if hit is not None and hit[0] is dst and hit[1] is src:
        return hit[2]
    r = _alu(op, dst, src, is64)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[mkey] = (dst, src, r)
    return r


_MEMO: dict = {}
_MEMO_MAX = 8192


def _alu(op: str, dst: Scalar, src: Scalar, is64: bool) -> Scalar:
    if op not in _ALU_OPS:
        raise ValueError(f"scalar_alu: unknown op {op!r}")
    if not is_safe_to_compute(op, src, is64):
        return _UNKNOWN
    d = _copy(dst)
    if op == "add":
        _add32(d, src)
        _add64(d, src)
        sv = d.tv + src.tv
        chi = ((dst.tm + src.tm + sv) ^ sv) & U64
        mu = chi | dst.tm | src.tm
        d.tv = sv & ~mu & U64
        d.tm = mu
    elif op == "sub":
        _sub32(d, src)
        _sub64(d, src)
        d.tv, d.tm = _tsub(dst.tv, dst.tm, src.tv, src.tm)
    elif op == "mul":
        from .tnum import mul_raw
        d.tv, d.tm = mul_raw(dst.tv, dst.tm, src.tv, src.tm)
        _mul32(d, src)
        _mul64(d, src)
    elif op == "and":
        v = d.tv & src.tv
        d.tm = (d.tv | d.tm) & (src.tv | src.tm) & ~v
        d.tv = v
        _and32(d, src)
        _and64(d, src, is64)
    elif op == "or":
        v = d.tv | src.tv
        d.tm = (d.tm | src.tm) & ~v
        d.tv = v
        _or32(d, src)
        _or64(d, src, is64)
    elif op == "xor":
        mu = d.tm | src.tm
        d.tv = (d.tv ^ src.tv) & ~mu
        d.tm = mu
        _xor32(d, src)
        _xor64(d, src, is64)
    elif op == "lsh":
        if is64:
            _lsh64(d, src)
        else:
            _lsh32(d, src)
    elif op == "rsh":
        if is64:
            _rsh64(d, src)
        else:
            _rsh32(d, src)
    elif op == "arsh":
        if is64:
            _arsh64(d, src)
        else:
            _arsh32(d, src)
    if not is64:
        _zext(d)
    _sync(d)
    return d


def _tsub(av, am, bv, bm):
    dv = (av - bv) & U64
    chi = ((dv + am) ^ (dv - bm)) & U64
    mu = chi | am | bm
    return dv & ~mu, mu


def _add32(d: Scalar, s: Scalar) -> None:
    lo = d.s32_min + s.s32_min
    hi = d.s32_max + s.s32_max
    if lo < S32_MIN or lo > S32_MAX or hi < S32_MIN or hi > S32_MAX:
        d.s32_min, d.s32_max = S32_MIN, S32_MAX
    else:
        d.s32_min, d.s32_max = lo, hi
    lo = d.u32_min + s.u32_min
    hi = d.u32_max + s.u32_max
    if lo <= U32 and hi > U32:
        d.u32_min, d.u32_max = 0, U32
    else:
        d.u32_min, d.u32_max = lo & U32, hi & U32


def _add64(d: Scalar, s: Scalar) -> None:
    lo = d.smin + s.smin
    hi = d.smax + s.smax
    if lo < S64_MIN or lo > S64_MAX or hi < S64_MIN or hi > S64_MAX:
        d.smin, d.smax = S64_MIN, S64_MAX
    else:
        d.smin, d.smax = lo, hi
    lo = d.umin + s.umin
    hi = d.umax + s.umax
    if lo <= U64 and hi > U64:
        d.umin, d.umax = 0, U64
    else:
        d.umin, d.umax = lo & U64, hi & U64


def _sub32(d: Scalar, s: Scalar) -> None:
    lo = d.s32_min - s.s32_max
    hi = d.s32_max - s.s32_min
    if lo < S32_MIN or lo > S32_MAX or hi < S32_MIN or hi > S32_MAX:
        d.s32_min, d.s32_max = S32_MIN, S32_MAX
    else:
        d.s32_min, d.s32_max = lo, hi
    lo = d.u32_min - s.u32_max
    hi = d.u32_max - s.u32_min
    if lo < 0 and hi >= 0:
        d.u32_min, d.u32_max = 0, U32
    else:
        d.u32_min, d.u32_max = lo & U32, hi & U32


def _sub64(d: Scalar, s: Scalar) -> None:
    lo = d.smin - s.smax
    hi = d.smax - s.smin
    if lo < S64_MIN or lo > S64_MAX or hi < S64_MIN or hi > S64_MAX:
        d.smin, d.smax = S64_MIN, S64_MAX
    else:
        d.smin, d.smax = lo, hi
    lo = d.umin - s.umax
    hi = d.umax - s.umin
    if lo < 0 and hi >= 0:
        d.umin, d.umax = 0, U64
    else:
        d.umin, d.umax = lo & U64, hi & U64


def _mul32(d: Scalar, s: Scalar) -> None:
    # check_mul_overflow on umax first, then umin: either overflowing loses the range
    hi = d.u32_max * s.u32_max
    lo = d.u32_min * s.u32_min
    if hi > U32 or lo > U32:
        d.u32_min, d.u32_max = 0, U32
    else:
        d.u32_min, d.u32_max = lo, hi
    p = (d.s32_min * s.s32_min, d.s32_min * s.s32_max,
         d.s32_max * s.s32_min, d.s32_max * s.s32_max)
    lo, hi = min(p), max(p)
    if any(x < S32_MIN or x > S32_MAX for x in p):
        d.s32_min, d.s32_max = S32_MIN, S32_MAX
    else:
        d.s32_min, d.s32_max = lo, hi


def _mul64(d: Scalar, s: Scalar) -> None:
    hi = d.umax * s.umax
    lo = d.umin * s.umin
    if hi > U64 or lo > U64:
        d.umin, d.umax = 0, U64
    else:
        d.umin, d.umax = lo, hi
    p = (d.smin * s.smin, d.smin * s.smax, d.smax * s.smin, d.smax * s.smax)
    if any(x < S64_MIN or x > S64_MAX for x in p):
        d.smin, d.smax = S64_MIN, S64_MAX
    else:
        d.smin, d.smax = min(p), max(p)


def _and32(d: Scalar, s: Scalar) -> None:
    if not (s.tm & U32) and not (d.tm & U32):
        _known32(d, d.tv)
        return
    d.u32_min = d.tv & U32
    if s.u32_max < d.u32_max:
        d.u32_max = s.u32_max
    _s32_from_u32(d)


# The 64-bit helpers below skip the kernel's trailing __update_reg_bounds for 64-bit ops: the
# reg_bounds_sync that follows starts with that same, idempotent, update. A 32-bit op keeps it,
# since zext_32_to_64 reads the bounds it tightens before any sync.
def _and64(d: Scalar, s: Scalar, is64: bool) -> None:
    if not s.tm and not d.tm:
        _known(d, d.tv)
        return
    d.umin = d.tv
    if s.umax < d.umax:
        d.umax = s.umax
    _s64_from_u64(d)
    if not is64:
        _update32(d)
        _update64(d)


def _or32(d: Scalar, s: Scalar) -> None:
    if not (s.tm & U32) and not (d.tm & U32):
        _known32(d, d.tv)
        return
    if s.u32_min > d.u32_min:
        d.u32_min = s.u32_min
    d.u32_max = (d.tv | d.tm) & U32
    _s32_from_u32(d)


def _or64(d: Scalar, s: Scalar, is64: bool) -> None:
    if not s.tm and not d.tm:
        _known(d, d.tv)
        return
    if s.umin > d.umin:
        d.umin = s.umin
    d.umax = d.tv | d.tm
    _s64_from_u64(d)
    if not is64:
        _update32(d)
        _update64(d)


def _xor32(d: Scalar, s: Scalar) -> None:
    if not (s.tm & U32) and not (d.tm & U32):
        _known32(d, d.tv)
        return
    d.u32_min = d.tv & U32
    d.u32_max = (d.tv | d.tm) & U32
    _s32_from_u32(d)


def _xor64(d: Scalar, s: Scalar, is64: bool) -> None:
    if not s.tm and not d.tm:
        _known(d, d.tv)
        return
    d.umin = d.tv
    d.umax = d.tv | d.tm
    _s64_from_u64(d)
    if not is64:
        _update32(d)
        _update64(d)


def _s32_from_u32(d: Scalar) -> None:
    lo, hi = _s32(d.u32_min), _s32(d.u32_max)
    if lo <= hi:
        d.s32_min, d.s32_max = lo, hi
    else:
        d.s32_min, d.s32_max = S32_MIN, S32_MAX


def _s64_from_u64(d: Scalar) -> None:
    lo, hi = _s64(d.umin), _s64(d.umax)
    if lo <= hi:
        d.smin, d.smax = lo, hi
    else:
        d.smin, d.smax = S64_MIN, S64_MAX


def _lsh32_bounds(d: Scalar, umin_val: int, umax_val: int) -> None:
    """__scalar32_min_max_lsh."""
    d.s32_min, d.s32_max = S32_MIN, S32_MAX
    if umax_val > 31 or d.u32_max > 1 << (31 - umax_val):
        d.u32_min, d.u32_max = 0, U32
    else:
        d.u32_min = (d.u32_min << umin_val) & U32
        d.u32_max = (d.u32_max << umax_val) & U32


def _lsh64_bounds(d: Scalar, umin_val: int, umax_val: int) -> None:
    """__scalar64_min_max_lsh (uses the unshifted 32-bit bounds, so runs first)."""
    if umin_val == 32 and umax_val == 32:
        d.smax = d.s32_max << 32
        d.smin = d.s32_min << 32
    else:
        d.smin, d.smax = S64_MIN, S64_MAX
    if d.umax > 1 << (63 - umax_val):
        d.umin, d.umax = 0, U64
    else:
        d.umin = (d.umin << umin_val) & U64
        d.umax = (d.umax << umax_val) & U64


def _lsh64(d: Scalar, s: Scalar) -> None:
    umin_val, umax_val = s.umin, s.umax
    _lsh64_bounds(d, umin_val, umax_val)
    _lsh32_bounds(d, umin_val, umax_val)
    d.tv = (d.tv << umin_val) & U64
    d.tm = (d.tm << umin_val) & U64


def _lsh32(d: Scalar, s: Scalar) -> None:
    umin_val, umax_val = s.u32_min, s.u32_max
    sv, sm = d.tv & U32, d.tm & U32
    _lsh32_bounds(d, umin_val, umax_val)
    d.tv = (sv << umin_val) & U32
    d.tm = (sm << umin_val) & U32
    _unbounded64(d)
    _update32(d)


def _rsh64(d: Scalar, s: Scalar) -> None:
    umin_val, umax_val = s.umin, s.umax
    d.smin, d.smax = S64_MIN, S64_MAX
    d.tv >>= umin_val
    d.tm >>= umin_val
    d.umin >>= umax_val
    d.umax >>= umin_val
    _unbounded32(d)


def _rsh32(d: Scalar, s: Scalar) -> None:
    umin_val, umax_val = s.u32_min, s.u32_max
    d.s32_min, d.s32_max = S32_MIN, S32_MAX
    d.tv = (d.tv & U32) >> umin_val
    d.tm = (d.tm & U32) >> umin_val
    d.u32_min >>= umax_val
    d.u32_max >>= umin_val
    _unbounded64(d)
    _update32(d)


def _arsh64(d: Scalar, s: Scalar) -> None:
    sh = s.umin
    d.smin >>= sh
    d.smax >>= sh
    v, m = _s64(d.tv), _s64(d.tm)
    d.tv, d.tm = (v >> sh) & U64, (m >> sh) & U64
    d.umin, d.umax = 0, U64
    _unbounded32(d)


def _arsh32(d: Scalar, s: Scalar) -> None:
    sh = s.u32_min
    d.s32_min >>= sh
    d.s32_max >>= sh
    v, m = _s32(d.tv), _s32(d.tm)
    d.tv, d.tm = (v >> sh) & U32, (m >> sh) & U32
    d.u32_min, d.u32_max = 0, U32
    _unbounded64(d)
    _update32(d)


def _zext(d: Scalar) -> None:
    """zext_32_to_64: tnum_subreg + __reg_assign_32_into_64."""
    d.tv &= U32
    d.tm &= U32
    d.umin = d.u32_min
    d.umax = d.u32_max
    if 0 <= d.s32_min and 0 <= d.s32_max:
        d.smin, d.smax = d.s32_min, d.s32_max
    else:
        d.smin, d.smax = 0, U32


def ptr_add(ptr: Scalar, off: Scalar) -> Scalar:
    """The variable offset of ``ptr += off`` when ``off`` is not a constant folded into the
    fixed offset (adjust_ptr_min_max_vals, BPF_ADD): 64-bit bounds added with either overflow
    losing that axis, tnum_add, no 32-bit bounds ("pointer types do not carry 32-bit bounds"),
    then reg_bounds_sync."""
    d = _copy(ptr)
    lo, hi = ptr.smin + off.smin, ptr.smax + off.smax
    if S64_MIN <= lo <= S64_MAX and S64_MIN <= hi <= S64_MAX:
        d.smin, d.smax = lo, hi
    else:
        d.smin, d.smax = S64_MIN, S64_MAX
    lo, hi = ptr.umin + off.umin, ptr.umax + off.umax
    if lo <= U64 and hi <= U64:
        d.umin, d.umax = lo, hi
    else:
        d.umin, d.umax = 0, U64
    sv = ptr.tv + off.tv
    chi = ((ptr.tm + off.tm + sv) ^ sv) & U64
    mu = chi | ptr.tm | off.tm
    d.tv, d.tm = sv & ~mu & U64, mu
    _unbounded32(d)
    _sync(d)
    return d


def ptr_sub(ptr: Scalar, off: Scalar) -> Scalar:
    """The variable offset of ``ptr -= off`` (adjust_ptr_min_max_vals, BPF_SUB, variable
    case): signed bounds lose on overflow, unsigned ones when umin_ptr < umax_off."""
    d = _copy(ptr)
    lo, hi = ptr.smin - off.smax, ptr.smax - off.smin
    if S64_MIN <= lo <= S64_MAX and S64_MIN <= hi <= S64_MAX:
        d.smin, d.smax = lo, hi
    else:
        d.smin, d.smax = S64_MIN, S64_MAX
    if ptr.umin < off.umax:
        d.umin, d.umax = 0, U64
    else:
        d.umin, d.umax = ptr.umin - off.umax, ptr.umax - off.umin
    d.tv, d.tm = _tsub(ptr.tv, ptr.tm, off.tv, off.tm)
    _unbounded32(d)
    _sync(d)
    return d


def zext32(x: Scalar) -> Scalar:
    """A 32-bit move of a scalar (``w1 = w2``): zext_32_to_64 then reg_bounds_sync."""
    mkey = ('zext32', id(x))
    hit = _MEMO.get(mkey)
    if hit is not None and hit[0] is x:
        return hit[1]
    r = _zext32_impl(x)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[mkey] = (x, r)
    return r


def _zext32_impl(x: Scalar) -> Scalar:
    d = _copy(x)
    _zext(d)
    _sync(d)
    return d


def neg(x: Scalar, is64: bool) -> Scalar:
    """BPF_NEG through adjust_scalar_min_max_vals: 0 - x (32-bit: then zero-extended)."""
    mkey = ('neg', id(x), is64)
    hit = _MEMO.get(mkey)
    if hit is not None and hit[0] is x:
        return hit[1]
    r = _neg_impl(x, is64)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[mkey] = (x, r)
    return r


def _neg_impl(x: Scalar, is64: bool) -> Scalar:
    d = _new(Scalar)
    _known(d, 0)
    _sub32(d, x)
    _sub64(d, x)
    d.tv, d.tm = _tsub(0, 0, x.tv, x.tm)
    if not is64:
        _zext(d)
    _sync(d)
    return d


def _bswap(v: int, nbytes: int) -> int:
    return int.from_bytes((v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


def end(x: Scalar, op: str, width: int) -> Scalar:
    """BPF_END (scalar_byte_swap, little-endian host): ``op`` is ``le``/``be`` (ALU class,
    TO_LE/TO_BE) or ``bswap`` (ALU64); width 16/32/64. le is a truncation (le64 a no-op), be
    and bswap swap bytes; 16/32-bit results are zero-extended (coerce_reg_to_size). No
    zext_32_to_64 afterwards even though le/be are ALU-class, as in the kernel."""
    mkey = ('end', id(x), op, width)
    hit = _MEMO.get(mkey)
    if hit is not None and hit[0] is x:
        return hit[1]
    r = _end_impl(x, op, width)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[mkey] = (x, r)
    return r


def _end_impl(x: Scalar, op: str, width: int) -> Scalar:
    if op not in ("le", "be", "bswap") or width not in (16, 32, 64):
        raise ValueError(f"end: bad op/width {op!r}/{width}")
    d = _copy(x)
    if op != "le":
        n = width // 8
        d.tv = _bswap(d.tv, n)
        d.tm = _bswap(d.tm, n)
        _unbounded64(d)
        _unbounded32(d)
    if width != 64:
        _coerce(d, width // 8)
    _sync(d)
    return d


def _coerce(d: Scalar, size: int) -> None:
    """coerce_reg_to_size without its final sync."""
    mask = (1 << (size * 8)) - 1
    d.tv &= mask
    d.tm &= mask
    if (d.umin & ~mask) == (d.umax & ~mask):
        d.umin &= mask
        d.umax &= mask
    else:
        d.umin, d.umax = 0, mask
    d.smin, d.smax = _s64(d.umin), _s64(d.umax)
    if size < 4:
        _unbounded32(d)


def coerce(x: Scalar, size: int) -> Scalar:
    """coerce_reg_to_size: keep the low ``size`` bytes, zero-extended (loads, byte swaps).
    Size 8 (which the kernel never passes) returns ``x``."""
    if size >= 8:
        return x
    d = _copy(x)
    _coerce(d, size)
    _sync(d)
    return d


def _sext_default64(d: Scalar, size: int) -> None:
    lo, hi = (-(1 << 7), (1 << 7) - 1) if size == 1 else (
        (-(1 << 15), (1 << 15) - 1) if size == 2 else (S32_MIN, S32_MAX))
    d.smin = d.s32_min = lo
    d.smax = d.s32_max = hi
    d.umin = d.u32_min = 0
    d.umax = U64
    d.u32_max = U32
    d.tv, d.tm = 0, U64


def _sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def coerce_sx(x: Scalar, size: int) -> Scalar:
    """coerce_reg_to_size_sx: sign-extend the low ``size`` bytes to 64 bits (ldsx, 64-bit
    movsx), as the running 6.18 kernel does it (measured against its log): a constant is
    extended exactly; when the s32 range already fits the target's signed range (always for
    size 4) the value is unchanged by the extension of its low half, so the result is that
    s32 range (32-bit bounds kept, the rest re-derived); otherwise the classic rule: the s64
    range extended when its upper bits agree and both ends have one sign, else the target's
    full signed range."""
    d = _copy(x)
    bits = size * 8
    if not d.tm:
        _known(d, _sext(d.tv, bits) & U64)
        return d
    half = 1 << (bits - 1)
    if -half <= d.s32_min and d.s32_max < half:
        d.smin, d.smax = d.s32_min, d.s32_max
        d.umin, d.umax = 0, U64
        d.tv, d.tm = 0, U64
        _sync(d)
        return d
    top_max = ((d.smax & U64) >> bits) << bits
    top_min = ((d.smin & U64) >> bits) << bits
    if top_max == top_min:
        a, b = _sext(d.smax, bits), _sext(d.smin, bits)
        hi, lo = max(a, b), min(a, b)
        if (hi >= 0) == (lo >= 0):
            d.smin, d.smax = lo, hi
            d.s32_min, d.s32_max = _s32(lo), _s32(hi)
            d.umin, d.umax = lo & U64, hi & U64
            d.u32_min, d.u32_max = lo & U32, hi & U32
            d.tv, d.tm = _range(lo & U64, hi & U64)
            _sync(d)
            return d
    _sext_default64(d, size)
    _sync(d)
    return d


def _coerce_subreg_sx(d: Scalar, size: int) -> None:
    """coerce_subreg_to_size_sx (32-bit movsx) without the zext that follows it."""
    bits = size * 8
    if not d.tm:
        v = _sext(d.tv, bits) & U64
        d.tv, d.tm = v, 0
        d.s32_min = d.s32_max = _s32(v)
        d.u32_min = d.u32_max = v & U32
        return
    top_max = ((d.s32_max & U32) >> bits) << bits
    top_min = ((d.s32_min & U32) >> bits) << bits
    if top_max == top_min:
        a, b = _sext(d.s32_max, bits), _sext(d.s32_min, bits)
        hi, lo = max(a, b), min(a, b)
        if (lo >= 0) == (hi >= 0):
            d.s32_min, d.s32_max = lo, hi
            d.u32_min, d.u32_max = lo & U32, hi & U32
            rv, rm = _range(lo & U64, hi & U64)
            d.tv, d.tm = rv & U32, rm & U32
            return
    if size == 1:
        d.s32_min, d.s32_max = -(1 << 7), (1 << 7) - 1
    else:
        d.s32_min, d.s32_max = -(1 << 15), (1 << 15) - 1
    d.u32_min, d.u32_max = 0, U32
    d.tv, d.tm = 0, U32


def movsx(x: Scalar, bits: int, is64: bool) -> Scalar:
    """``r = (s8/s16/s32) r2`` (is64) or ``w = (s8/s16) w2``: the kernel's MOVSX handling."""
    mkey = ('movsx', id(x), bits, is64)
    hit = _MEMO.get(mkey)
    if hit is not None and hit[0] is x:
        return hit[1]
    r = _movsx_impl(x, bits, is64)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[mkey] = (x, r)
    return r


def _movsx_impl(x: Scalar, bits: int, is64: bool) -> Scalar:
    if bits not in (8, 16, 32) or (not is64 and bits == 32):
        raise ValueError(f"movsx: bad width {bits} for {'64' if is64 else '32'}-bit")
    if is64:
        return coerce_sx(x, bits // 8)
    d = _copy(x)
    _coerce_subreg_sx(d, bits // 8)
    _zext(d)
    _sync(d)
    return d


def load_result(size: int, signed: bool) -> Scalar:
    """The scalar a ``size``-byte load of unknown memory gives (check_mem_access: mark unknown,
    then coerce_reg_to_size or, for ldsx, coerce_reg_to_size_sx)."""
    cache = _LOAD_SX if signed else _LOAD
    r = cache.get(size)
    if r is None:
        if size >= 8:
            r = _UNKNOWN
        else:
            r = coerce_sx(_UNKNOWN, size) if signed else coerce(_UNKNOWN, size)
        cache[size] = r
    return r


_LOAD: dict[int, Scalar] = {}
_LOAD_SX: dict[int, Scalar] = {}


def maybe_fork(dst: Scalar) -> tuple[Scalar, Scalar, bool] | None:
    """maybe_fork_scalars: before ``and``/``or`` with a constant source (tnum_is_const of the
    64-bit src), a destination in [-1, 0] (s64, else s32) is split. Returns
    ``(zero, minus_one, alu32)``: the caller pushes a branch that re-runs the same instruction
    with ``zero`` as the destination, and continues with ``minus_one``. None when no fork."""
    if dst.smin == -1 and dst.smax == 0:
        z = _new(Scalar)
        _known(z, 0)
        m = _new(Scalar)
        _known(m, U64)
        return z, m, False
    if dst.s32_min == -1 and dst.s32_max == 0:
        z = _copy(dst)
        _known32(z, 0)
        m = _copy(dst)
        _known32(m, U32)
        return z, m, True
    return None


# --- conditional jumps -----------------------------------------------------------------------

JMP_OPS = ("jeq", "jne", "jgt", "jge", "jlt", "jle", "jsgt", "jsge", "jslt", "jsle", "jset")
_REV = {"jeq": "jne", "jne": "jeq", "jge": "jlt", "jlt": "jge", "jle": "jgt", "jgt": "jle",
        "jsge": "jslt", "jslt": "jsge", "jsle": "jsgt", "jsgt": "jsle",
        "jset": "jset_x", "jset_x": "jset"}
_FLIP = {"jgt": "jlt", "jge": "jle", "jsgt": "jslt", "jsge": "jsle"}


def rev_op(op: str) -> str:
    """rev_opcode: the condition of the fall-through branch (jset's is ``jset_x``)."""
    return _REV[op]


def is_branch_taken(op: str, a: Scalar, b: Scalar, is32: bool, same_reg: bool = False) -> int:
    """is_scalar_branch_taken: 1 when ``a op b`` always holds, 0 when it never does, -1 when
    unknown. ``same_reg`` (both operands are one register, ``if r1 > r1``) changes nothing
    here: 6.18 has no special case for it (measured: the kernel does not predict
    ``if r7 >= r7``), it matters only to :func:`refine`."""
    if is32:
        t1v, t1m, t2v, t2m = a.tv & U32, a.tm & U32, b.tv & U32, b.tm & U32
        umin1, umax1, smin1, smax1 = a.u32_min, a.u32_max, a.s32_min, a.s32_max
        umin2, umax2, smin2, smax2 = b.u32_min, b.u32_max, b.s32_min, b.s32_max
    else:
        t1v, t1m, t2v, t2m = a.tv, a.tm, b.tv, b.tm
        umin1, umax1, smin1, smax1 = a.umin, a.umax, a.smin, a.smax
        umin2, umax2, smin2, smax2 = b.umin, b.umax, b.smin, b.smax
    if op == "jeq" or op == "jne":
        yes = 1 if op == "jeq" else 0
        if not t1m and not t2m:
            return yes if t1v == t2v else 1 - yes
        mu = ~t1m & ~t2m
        if (t1v & mu) != (t2v & mu):
            return 1 - yes
        if umin1 > umax2 or umax1 < umin2 or smin1 > smax2 or smax1 < smin2:
            return 1 - yes
        if not is32:
            if a.u32_min > b.u32_max or a.u32_max < b.u32_min:
                return 1 - yes
            if a.s32_min > b.s32_max or a.s32_max < b.s32_min:
                return 1 - yes
        return -1
    if op == "jset":
        if t2m:
            t1v, t1m, t2v, t2m = t2v, t2m, t1v, t1m
        if t2m:
            return -1
        if (~t1m & t1v) & t2v:
            return 1
        if not ((t1m | t1v) & t2v):
            return 0
        return -1
    if op == "jgt":
        return 1 if umin1 > umax2 else (0 if umax1 <= umin2 else -1)
    if op == "jsgt":
        return 1 if smin1 > smax2 else (0 if smax1 <= smin2 else -1)
    if op == "jlt":
        return 1 if umax1 < umin2 else (0 if umin1 >= umax2 else -1)
    if op == "jslt":
        return 1 if smax1 < smin2 else (0 if smin1 >= smax2 else -1)
    if op == "jge":
        return 1 if umin1 >= umax2 else (0 if umax1 < umin2 else -1)
    if op == "jsge":
        return 1 if smin1 >= smax2 else (0 if smax1 < smin2 else -1)
    if op == "jle":
        return 1 if umax1 <= umin2 else (0 if umin1 > umax2 else -1)
    if op == "jsle":
        return 1 if smax1 <= smin2 else (0 if smin1 > smax2 else -1)
    raise ValueError(f"is_branch_taken: unknown op {op!r}")


def _refine_cond(r1: Scalar, r2: Scalar, op: str, is32: bool) -> None:
    """regs_refine_cond_op, in place on two private copies."""
    f = _FLIP.get(op)
    if f is not None:
        op = f
        r1, r2 = r2, r1
    if op == "jeq":
        if is32:
            r1.u32_min = max(r1.u32_min, r2.u32_min)
            r1.u32_max = min(r1.u32_max, r2.u32_max)
            r1.s32_min = max(r1.s32_min, r2.s32_min)
            r1.s32_max = min(r1.s32_max, r2.s32_max)
            r2.u32_min, r2.u32_max = r1.u32_min, r1.u32_max
            r2.s32_min, r2.s32_max = r1.s32_min, r1.s32_max
            # tnum_intersect of the subregs, put back under each register's high half
            mu = r1.tm & r2.tm & U32
            v = ((r1.tv | r2.tv) & U32) & ~mu
            r1.tv = (r1.tv & _HI32) | v
            r1.tm = (r1.tm & _HI32) | mu
            r1.tm &= ~r1.tv
            r2.tv = (r2.tv & _HI32) | v
            r2.tm = (r2.tm & _HI32) | mu
            r2.tm &= ~r2.tv
        else:
            r1.umin = max(r1.umin, r2.umin)
            r1.umax = min(r1.umax, r2.umax)
            r1.smin = max(r1.smin, r2.smin)
            r1.smax = min(r1.smax, r2.smax)
            r2.umin, r2.umax, r2.smin, r2.smax = r1.umin, r1.umax, r1.smin, r1.smax
            mu = r1.tm & r2.tm
            r1.tv = (r1.tv | r2.tv) & ~mu
            r1.tm = mu
            r2.tv, r2.tm = r1.tv, mu
    elif op == "jne":
        if not r2.is_reg_const(is32):
            r1, r2 = r2, r1
        if not r2.is_reg_const(is32):
            return
        val = r2.reg_const_value(is32)
        if is32:
            if r1.u32_min == val:
                r1.u32_min += 1
            if r1.u32_max == val:
                r1.u32_max -= 1
            sv = _s32(val)
            if r1.s32_min == sv:
                r1.s32_min += 1
            if r1.s32_max == sv:
                r1.s32_max -= 1
        else:
            if r1.umin == val:
                r1.umin += 1
            if r1.umax == val:
                r1.umax -= 1
            sv = _s64(val)
            if r1.smin == sv:
                r1.smin += 1
            if r1.smax == sv:
                r1.smax -= 1
    elif op == "jset":
        if not r2.is_reg_const(is32):
            r1, r2 = r2, r1
        if not r2.is_reg_const(is32):
            return
        val = r2.reg_const_value(is32)
        if not val or val & (val - 1):
            return          # only a single bit teaches anything
        r1.tv |= val
        r1.tm &= ~val
    elif op == "jset_x":
        if not r2.is_reg_const(is32):
            r1, r2 = r2, r1
        if not r2.is_reg_const(is32):
            return
        val = r2.reg_const_value(is32)
        # forget the ranges before narrowing the tnum (a dead branch must not violate
        # invariants)
        _unbounded64(r1)
        _unbounded32(r1)
        if is32:
            keep = ~val & U32 | _HI32
        else:
            keep = ~val & U64
        r1.tv &= keep
        r1.tm &= keep
    elif op == "jle":
        if is32:
            r1.u32_max = min(r1.u32_max, r2.u32_max)
            r2.u32_min = max(r1.u32_min, r2.u32_min)
        else:
            r1.umax = min(r1.umax, r2.umax)
            r2.umin = max(r1.umin, r2.umin)
    elif op == "jlt":
        if is32:
            r1.u32_max = min(r1.u32_max, (r2.u32_max - 1) & U32)
            r2.u32_min = max((r1.u32_min + 1) & U32, r2.u32_min)
        else:
            r1.umax = min(r1.umax, (r2.umax - 1) & U64)
            r2.umin = max((r1.umin + 1) & U64, r2.umin)
    elif op == "jsle":
        if is32:
            r1.s32_max = min(r1.s32_max, r2.s32_max)
            r2.s32_min = max(r1.s32_min, r2.s32_min)
        else:
            r1.smax = min(r1.smax, r2.smax)
            r2.smin = max(r1.smin, r2.smin)
    elif op == "jslt":
        if is32:
            r1.s32_max = min(r1.s32_max, _s32(r2.s32_max - 1))
            r2.s32_min = max(_s32(r1.s32_min + 1), r2.s32_min)
        else:
            r1.smax = min(r1.smax, _s64((r2.smax - 1) & U64))
            r2.smin = max(_s64((r1.smin + 1) & U64), r2.smin)


def refine_checked(op: str, a: Scalar, b: Scalar, is32: bool, same_reg: bool = False):
    """reg_set_min_max for two scalars: ``((a_true, b_true), (a_false, b_false), problems)``.

    Called when is_branch_taken() gave -1. Each side gets regs_refine_cond_op and
    reg_bounds_sync; a register left inconsistent (a branch the bounds cannot tell is dead)
    is handled as reg_bounds_sanity_check does for a normal load: its ranges are forgotten
    (tnum kept) and ``problems`` lists the kernel's ``verifier bug: REG INVARIANTS VIOLATION``
    log lines. ``same_reg``: both operands are one register; as in the kernel the refinement
    then works on one aliased state (``if r1 < r1`` leaves the impossible side with
    umax - 1), and both results are that one scalar."""
    mkey = ("refine", op, is32, same_reg, id(a), id(b))
    hit = _MEMO.get(mkey)
    if hit is not None and hit[0] is a and hit[1] is b:
        return hit[2]
    r = _refine(op, a, b, is32, same_reg)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[mkey] = (a, b, r)
    return r


def _refine(op, a, b, is32, same_reg):
    if op not in _REV or op == "jset_x":
        raise ValueError(f"refine: unknown op {op!r}")
    fa = _copy(a)
    fb = fa if same_reg else _copy(b)
    _refine_cond(fa, fb, _REV[op], is32)
    _sync(fa)
    if not same_reg:
        _sync(fb)
    ta = _copy(a)
    tb = ta if same_reg else _copy(b)
    _refine_cond(ta, tb, op, is32)
    _sync(ta)
    if not same_reg:
        _sync(tb)
    out = [ta, tb, fa, fb]
    problems = []
    for i, ctx in enumerate(("true_reg1", "true_reg2", "false_reg1", "false_reg2")):
        msg = sanity_check(out[i], ctx)
        if msg is not None:
            problems.append(msg)
            out[i] = mark_unbounded(out[i])
    return (out[0], out[1]), (out[2], out[3]), tuple(problems)


def refine(op: str, a: Scalar, b: Scalar, is32: bool, same_reg: bool = False):
    """reg_set_min_max: ``((a_true, b_true), (a_false, b_false))`` (see refine_checked)."""
    t, f, _ = refine_checked(op, a, b, is32, same_reg)
    return t, f


# --- pruning ---------------------------------------------------------------------------------

def within(old: Scalar, cur: Scalar) -> bool:
    """range_within(old, cur) && tnum_in(old->var_off, cur->var_off): every value ``cur`` may
    hold, ``old`` allows too."""
    return (old.umin <= cur.umin and old.umax >= cur.umax and old.smin <= cur.smin
            and old.smax >= cur.smax and old.u32_min <= cur.u32_min
            and old.u32_max >= cur.u32_max and old.s32_min <= cur.s32_min
            and old.s32_max >= cur.s32_max and not (cur.tm & ~old.tm)
            and old.tv == (cur.tv & ~old.tm))


# --- log formatting --------------------------------------------------------------------------

def _hx(v: int) -> str:
    # the kernel's vsnprintf prints %#llx of 0 as 0x0 (log: var_off=(0x0; 0xff))
    return f"{v:#x}"


def fmt_unum(v: int) -> str:
    """verbose_unum: decimal up to U16_MAX, else %#llx."""
    v &= U64
    return str(v) if v <= 0xffff else f"{v:#x}"


def fmt_snum(v: int) -> str:
    """verbose_snum: decimal in [S16_MIN, S16_MAX], else %#llx of the 64-bit pattern."""
    sv = _s64(v & U64)
    return str(sv) if -0x8000 <= sv <= 0x7fff else f"{v & U64:#x}"


def _scalar_ranges(s: Scalar) -> list[str]:
    """print_scalar_ranges: merges equal values (smin=umin=...), omits defaults."""
    s32lo = s.s32_min if -0x8000 <= s.s32_min <= 0x7fff else s.s32_min & U32
    s32hi = s.s32_max if -0x8000 <= s.s32_max <= 0x7fff else s.s32_max & U32
    mm = [["smin", s.smin & U64, s.smin == S64_MIN],
          ["smax", s.smax & U64, s.smax == S64_MAX],
          ["umin", s.umin, s.umin == 0],
          ["umax", s.umax, s.umax == U64],
          ["smin32", s32lo & U64, s.s32_min == S32_MIN],
          ["smax32", s32hi & U64, s.s32_max == S32_MAX],
          ["umin32", s.u32_min, s.u32_min == 0],
          ["umax32", s.u32_max, s.u32_max == U32]]
    out = []
    n = len(mm)
    for i in range(n):
        m1 = mm[i]
        if m1[2]:
            continue
        neg1 = m1[0][0] == "s" and m1[1] >> 63
        names = [m1[0]]
        for j in range(i + 2, n, 2):
            m2 = mm[j]
            if m2[2] or m2[1] != m1[1]:
                continue
            neg2 = m2[0][0] == "s" and m2[1] >> 63
            if bool(neg2) != bool(neg1):
                continue
            m2[2] = True
            names.append(m2[0])
        val = fmt_snum(m1[1]) if m1[0][0] == "s" else fmt_unum(m1[1])
        out.append("=".join(names) + "=" + val)
    return out
