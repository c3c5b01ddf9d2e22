"""The kernel's ``bpf_get_prandom_u32`` generator, with its state in native memory.

The kernel draws these numbers from ``prandom_u32_state`` (lib/random32.c): L'Ecuyer's
maximally equidistributed combined Tausworthe generator "taus113", four 32-bit words of state
per CPU, seeded by ``prandom_seed_full_state`` (four random words, each raised above its
component's minimum, then ten warm-up steps). pybpf keeps one state per VM in a 16-byte native
buffer: the interpreter steps it here in Python, the JIT steps it inline in native code
(``jit/native_helpers.py``), so both engines of one VM draw from the same sequence, and a VM
created with a seed gives the same numbers in either engine.
"""
from __future__ import annotations

import ctypes
import random
import struct

# One step of each component: s = ((s & mask) << d) ^ (((s << a) ^ s) >> b), as
# (a, b, mask, d) -- the kernel's TAUSWORTHE(s, a, b, c, d). The JIT reads the same table.
TAUS_STEPS = ((6, 13, 0xFFFFFFFE, 18),
              (2, 27, 0xFFFFFFF8, 2),
              (13, 21, 0xFFFFFFF0, 7),
              (3, 12, 0xFFFFFF80, 13))
# A component below its minimum would lose bits for good: the kernel's __seed() adds it.
SEED_MINIMUMS = (2, 8, 16, 128)
WARMUP_STEPS = 10
_M32 = 0xFFFFFFFF
_WORDS = struct.Struct("=4I")


def seed_word(x: int, minimum: int) -> int:
    """The kernel's ``__seed(x, m)``: ``x + m`` when ``x < m``, else ``x``."""
    x &= _M32
    return x + minimum if x < minimum else x


class PrandomState:
    """Four u32 words of taus113 state at a fixed native address (``address``)."""

    steps = TAUS_STEPS      # what the JIT's inline step reads (jit/native_helpers.py)

    def __init__(self, words=(2, 8, 16, 128)) -> None:
        self._buf = (ctypes.c_uint32 * 4)(*(w & _M32 for w in words))
        self.address = ctypes.addressof(self._buf)

    @classmethod
    def seeded(cls, rng: random.Random | None = None) -> "PrandomState":
        """A state seeded as ``prandom_seed_full_state`` does, from ``rng``'s words (a seeded
        ``random.Random`` makes the sequence reproducible; None draws from the OS)."""
        rng = rng or random.SystemRandom()
        state = cls([seed_word(rng.getrandbits(32), m) for m in SEED_MINIMUMS])
        state.warmup()
        return state

    @property
    def words(self) -> tuple[int, int, int, int]:
        return tuple(self._buf)

    def warmup(self) -> None:
        for _ in range(WARMUP_STEPS):
            self.next()

    def next(self) -> int:
        """``prandom_u32_state``: advance every component, return their xor."""
        s1, s2, s3, s4 = _WORDS.unpack_from(self._buf)
        # TAUS_STEPS unrolled (a list comprehension over it costs twice as much)
        s1 = (((s1 & _C1) << _D1) ^ ((((s1 << _A1) & _M32) ^ s1) >> _B1)) & _M32
        s2 = (((s2 & _C2) << _D2) ^ ((((s2 << _A2) & _M32) ^ s2) >> _B2)) & _M32
        s3 = (((s3 & _C3) << _D3) ^ ((((s3 << _A3) & _M32) ^ s3) >> _B3)) & _M32
        s4 = (((s4 & _C4) << _D4) ^ ((((s4 << _A4) & _M32) ^ s4) >> _B4)) & _M32
        _WORDS.pack_into(self._buf, 0, s1, s2, s3, s4)
        return s1 ^ s2 ^ s3 ^ s4


(_A1, _B1, _C1, _D1), (_A2, _B2, _C2, _D2), (_A3, _B3, _C3, _D3), (_A4, _B4, _C4, _D4) = TAUS_STEPS
