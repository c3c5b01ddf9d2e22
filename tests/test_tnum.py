"""verifier/tnum.py: soundness by brute force, optimality where the kernel's ops are optimal,
and exact values from kernel/bpf/tnum.c (Linux 6.18)."""
import itertools
import random

import pytest
from hypothesis import given, settings, strategies as st

from pybpf.verifier.tnum import Tnum, U32, U64

# every 3-bit tnum (27 of them), placed at bit offsets that straddle the interesting
# boundaries: the low bits, bit 31/32 (s32 sign, subregister edge) and bit 63 (s64 sign)
_T3 = [(v, m) for m in range(8) for v in range(8) if not v & m]
_OFFSETS = (0, 30, 61)


def _tn(v, m, off):
    return Tnum(v << off, m << off)


def members(t: Tnum):
    """All concrete values of a tnum with few unknown bits."""
    bits = [1 << i for i in range(64) if t.mask >> i & 1]
    assert len(bits) <= 12
    for combo in itertools.product((0, 1), repeat=len(bits)):
        yield t.value | sum(b for b, c in zip(bits, combo) if c)


def _all_small(off):
    return [_tn(v, m, off) for v, m in _T3]


def _best(values) -> Tnum:
    """The smallest tnum containing ``values``."""
    values = list(values)
    v = values[0]
    m = 0
    for x in values[1:]:
        m |= x ^ v
    return Tnum(v & ~m, m)


BINOPS = {
    "add": (Tnum.add, lambda a, b: (a + b) & U64),
    "sub": (Tnum.sub, lambda a, b: (a - b) & U64),
    "mul": (Tnum.mul, lambda a, b: (a * b) & U64),
    "and": (Tnum.and_, lambda a, b: a & b),
    "or": (Tnum.or_, lambda a, b: a | b),
    "xor": (Tnum.xor, lambda a, b: a ^ b),
}


@pytest.mark.parametrize("off", _OFFSETS)
@pytest.mark.parametrize("name", sorted(BINOPS))
def test_binop_sound_exhaustive(name, off):
    """Every pair of 3-bit tnums (at this offset): each concrete result is in the result."""
    op, conc = BINOPS[name]
    small = _all_small(off)
    checked = 0
    for a in small:
        ma = list(members(a))
        for b in small:
            r = op(a, b)
            assert r.value & r.mask == 0
            for x in ma:
                for y in members(b):
                    assert r.contains(conc(x, y)), (name, a, b, x, y, r)
                    checked += 1
    assert checked == 64 * 64


@pytest.mark.parametrize("name", ["and", "or", "xor"])
def test_bitwise_ops_are_optimal(name):
    """and/or/xor lose nothing: the result is the tightest tnum of the concrete results."""
    op, conc = BINOPS[name]
    small = _all_small(30)
    for a, b in itertools.product(small, small):
        assert op(a, b) == _best(conc(x, y) for x in members(a) for y in members(b))


def test_add_sub_exact_on_constants_and_mul_kernel_example():
    assert Tnum.const(5).add(Tnum.const(U64)) == Tnum.const(4)
    assert Tnum.const(3).sub(Tnum.const(5)) == Tnum.const(U64 - 1)
    # tnum.c's tnum_mul comment: multiplier x1 times 11 -> union(0011, 1001) == x0x1
    assert Tnum(0b01, 0b10).mul(Tnum.const(0b11)) == Tnum(0b0001, 0b1010)
    # the kernel's long multiplication walks the first operand's bits: not commutative
    assert Tnum.const(0b11).mul(Tnum(0b01, 0b10)) == Tnum(0b0001, 0b1110)


@pytest.mark.parametrize("off", _OFFSETS)
def test_unary_ops_sound_exhaustive(off):
    for t in _all_small(off):
        ms = list(members(t))
        neg = t.neg()
        assert all(neg.contains(-x) for x in ms)
        for s in (0, 1, 7, 31, 32, 63):
            lt, rt, at = t.lshift(s), t.rshift(s), t.arshift(s, 64)
            at32 = t.arshift(s % 32, 32)
            for x in ms:
                assert lt.contains(x << s)
                assert rt.contains(x >> s)
                sx = x - (1 << 64) if x >> 63 else x
                assert at.contains(sx >> s)
                w = x & U32
                sw = w - (1 << 32) if w >> 31 else w
                assert at32.contains((sw >> (s % 32)) & U32)     # zero-extended result
        for size in (1, 2, 4, 8):
            c = t.cast(size)
            assert all(c.contains(x & ((1 << (8 * size)) - 1)) for x in ms)
        sub, clr = t.subreg(), t.clear_subreg()
        for x in ms:
            assert sub.contains(x & U32) and clr.contains(x & ~U32)
            assert t.bswap16().contains(int.from_bytes((x & 0xffff).to_bytes(2, "little"), "big"))
            assert t.bswap32().contains(int.from_bytes((x & U32).to_bytes(4, "little"), "big"))
            assert t.bswap64().contains(int.from_bytes(x.to_bytes(8, "little"), "big"))


def test_range_contains_and_is_tight():
    rng = random.Random(7)
    for _ in range(2000):
        base = rng.choice([0, 1 << 31, 1 << 32, 1 << 63, U64 - 300, rng.getrandbits(64)])
        lo = (base + rng.randrange(256)) & U64
        hi = min(U64, lo + rng.randrange(300))
        r = Tnum.range(lo, hi)
        assert r.contains(lo) and r.contains(hi) and r.contains((lo + hi) // 2)
        assert r.value <= lo and r.umax >= hi
    assert Tnum.range(7, 7) == Tnum.const(7)
    assert Tnum.range(0, U64) == Tnum.unknown()
    assert Tnum.range(4, 7) == Tnum(4, 3)
    assert Tnum.range(0, 1 << 63) == Tnum.unknown()      # fls64 > 63: the kernel's special case


def test_lattice_ops_exhaustive():
    small = _all_small(0)
    for a, b in itertools.product(small, small):
        ma, mb = set(members(a)), set(members(b))
        u = a.union(b)
        assert all(u.contains(x) for x in ma | mb)
        both = ma & mb
        i = a.intersect(b)
        assert all(i.contains(x) for x in both)
        # tnum_in(a, b): b's values are a subset of a's
        assert a.in_(b) == mb.issubset(ma)
        # tnum_overlap is False only when no value is shared
        if not a.overlap(b):
            assert not both


def test_step_is_next_member():
    """tnum_step(t, z): the smallest member above z; tmin below the range, tmax above it."""
    for off in (0, 1, 3):
        for t in _all_small(off):
            ms = sorted(members(t))
            for z in range(0, 64):
                if z < ms[0]:
                    want = ms[0]
                elif z >= ms[-1]:
                    want = ms[-1]
                else:
                    want = min(x for x in ms if x > z)
                assert t.step(z) == want, (t, z)


def test_with_and_const_subreg_and_predicates():
    t = Tnum(0x1_0000_0000, 0xf0_0000_00ff)
    assert t.with_subreg(Tnum.const(5)) == Tnum(0x1_0000_0005, 0xf0_0000_0000)
    assert t.const_subreg(0x7) == Tnum(0x1_0000_0007, 0xf0_0000_0000)
    assert Tnum.const(16).is_aligned(8) and not Tnum(16, 4).is_aligned(8)
    assert Tnum(16, 16).is_aligned(8) and Tnum(3, 4).is_aligned(0)
    assert Tnum.const(9).is_const() and not Tnum.unknown().is_const()
    assert Tnum.unknown().is_unknown() and Tnum.const(0).equals_const(0)
    with pytest.raises(AttributeError):
        t.value = 3


def test_str_is_tnum_strn():
    # the kernel's vsnprintf prints %#llx of 0 as 0x0 (verifier log: var_off=(0x0; 0xff))
    assert str(Tnum(0, 0xff)) == "(0x0; 0xff)"
    assert str(Tnum.const(0xe00)) == "(0xe00; 0x0)"
    assert str(Tnum.unknown()) == "(0x0; 0xffffffffffffffff)"


def test_constructor_normalises():
    t = Tnum(0xff, 0x0f)
    assert (t.value, t.mask) == (0xf0, 0x0f)
    assert Tnum(-1, 0) == Tnum.const(U64)


_tnums = st.builds(lambda v, m: Tnum(v & ~m, m), st.integers(0, U64), st.integers(0, U64))


def _sample(t: Tnum, r: int) -> int:
    return t.value | (r & t.mask)


@settings(max_examples=200, deadline=None)
@given(_tnums, _tnums, st.lists(st.tuples(st.integers(0, U64), st.integers(0, U64)),
                                min_size=1, max_size=8))
def test_binops_sound_64bit(a, b, picks):
    """Random 64-bit tnums (any masks), random members of each."""
    results = {name: op(a, b) for name, (op, _) in BINOPS.items()}
    for ra, rb in picks:
        x, y = _sample(a, ra), _sample(b, rb)
        for name, (_, conc) in BINOPS.items():
            assert results[name].contains(conc(x, y)), name


def test_mul_fast_equals_kernel_loop():
    """mul_raw (inlined, early exits) gives tnum.c's loop's result bit for bit."""
    from pybpf.verifier.tnum import _mul_ref, mul_raw
    rng = random.Random(2)
    for _ in range(3000):
        ms = [rng.choice([0, U64, 0xff, 1 << 63, rng.getrandbits(64), rng.getrandbits(8) << 56])
              for _ in range(2)]
        av, bv = rng.getrandbits(64) & ~ms[0], rng.getrandbits(64) & ~ms[1]
        if rng.random() < 0.3:
            bv &= 0xff
        assert mul_raw(av, ms[0], bv, ms[1]) == _mul_ref(av, ms[0], bv, ms[1])
