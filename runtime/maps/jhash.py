"""The kernel's jhash (include/linux/jhash.h, Bob Jenkins' lookup3), the hash of its hash maps:
``htab_map_hash`` is ``jhash2(key, key_len / 4, hashrnd)`` for keys of whole words and
``jhash(key, key_len, hashrnd)`` otherwise, which on a little-endian machine are the same
function of the key's bytes (:func:`jhash`). :func:`gen_jhash` emits the same computation as IR
for the JIT's native lookups.
"""
from __future__ import annotations

JHASH_INITVAL = 0xDEADBEEF
M32 = 0xFFFFFFFF
UNROLL_BLOCKS = 8           # native code unrolls keys of up to this many 12-byte blocks


def _rol(x: int, r: int) -> int:
    return (x << r | x >> (32 - r)) & M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & M32; a ^= _rol(c, 4); c = (c + b) & M32          # noqa: E702
    b = (b - a) & M32; b ^= _rol(a, 6); a = (a + c) & M32          # noqa: E702
    c = (c - b) & M32; c ^= _rol(b, 8); b = (b + a) & M32          # noqa: E702
    a = (a - c) & M32; a ^= _rol(c, 16); c = (c + b) & M32         # noqa: E702
    b = (b - a) & M32; b ^= _rol(a, 19); a = (a + c) & M32         # noqa: E702
    c = (c - b) & M32; c ^= _rol(b, 4); b = (b + a) & M32          # noqa: E702
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b; c = (c - _rol(b, 14)) & M32        # noqa: E702
    a ^= c; a = (a - _rol(c, 11)) & M32        # noqa: E702
    b ^= a; b = (b - _rol(a, 25)) & M32        # noqa: E702
    c ^= b; c = (c - _rol(b, 16)) & M32        # noqa: E702
    a ^= c; a = (a - _rol(c, 4)) & M32         # noqa: E702
    b ^= a; b = (b - _rol(a, 14)) & M32        # noqa: E702
    c ^= b; c = (c - _rol(b, 24)) & M32        # noqa: E702
    return c


def jhash(key: bytes, initval: int = 0) -> int:
    """jhash(key, len(key), initval)."""
    n = len(key)
    a = b = c = (JHASH_INITVAL + n + initval) & M32
    pos = 0
    while n - pos > 12:
        a = (a + int.from_bytes(key[pos:pos + 4], "little")) & M32
        b = (b + int.from_bytes(key[pos + 4:pos + 8], "little")) & M32
        c = (c + int.from_bytes(key[pos + 8:pos + 12], "little")) & M32
        a, b, c = _mix(a, b, c)
        pos += 12
    if n == pos:
        return c                    # case 0: nothing left to add
    tail = key[pos:].ljust(12, b"\0")       # k[0] + k[1] << 8 ...: little-endian words
    a = (a + int.from_bytes(tail[0:4], "little")) & M32
    b = (b + int.from_bytes(tail[4:8], "little")) & M32
    c = (c + int.from_bytes(tail[8:12], "little")) & M32
    return _final(a, b, c)


# --- native code --------------------------------------------------------------------------------
def _gen_rol(b, x, r: int, const):
    return b.or_(b.shl(x, const(r)), b.lshr(x, const(32 - r)))


def _gen_mix(b, a, bb, c, const):
    rol = lambda x, r: _gen_rol(b, x, r, const)     # noqa: E731
    a = b.xor(b.sub(a, c), rol(c, 4)); c = b.add(c, bb)            # noqa: E702
    bb = b.xor(b.sub(bb, a), rol(a, 6)); a = b.add(a, c)           # noqa: E702
    c = b.xor(b.sub(c, bb), rol(bb, 8)); bb = b.add(bb, a)         # noqa: E702
    a = b.xor(b.sub(a, c), rol(c, 16)); c = b.add(c, bb)           # noqa: E702
    bb = b.xor(b.sub(bb, a), rol(a, 19)); a = b.add(a, c)          # noqa: E702
    c = b.xor(b.sub(c, bb), rol(bb, 4)); bb = b.add(bb, a)         # noqa: E702
    return a, bb, c


def _gen_final(b, a, bb, c, const):
    rol = lambda x, r: _gen_rol(b, x, r, const)     # noqa: E731
    c = b.sub(b.xor(c, bb), rol(bb, 14))
    a = b.sub(b.xor(a, c), rol(c, 11))
    bb = b.sub(b.xor(bb, a), rol(a, 25))
    c = b.sub(b.xor(c, bb), rol(bb, 16))
    a = b.sub(b.xor(a, c), rol(c, 4))
    bb = b.sub(b.xor(bb, a), rol(a, 14))
    return b.sub(b.xor(c, bb), rol(bb, 24))


def _gen_tail_word(ir, key, off: int, n: int):
    """The little-endian u32 of the ``n`` (0-4) bytes at ``key + off``, zero-extended."""
    b = ir.b
    if n == 4:
        return ir.load(ir.at(key, off), ir.I32, align=1)
    word = ir.const(ir.I32, 0)
    for i in range(n):
        byte = b.zext(ir.load(ir.at(key, off + i), ir.I8), ir.I32)
        word = b.or_(word, b.shl(byte, ir.const(ir.I32, 8 * i))) if i else byte
    return word


def gen_jhash(ir, key, size: int, initval: int = 0):
    """IR for :func:`jhash` over the ``size`` bytes at ``key`` (an i64 address): the block
    count is a constant, so short keys are straight-line code and long ones one loop."""
    b = ir.b
    const = lambda v: ir.const(ir.I32, v)       # noqa: E731
    a = bb = c = const((JHASH_INITVAL + size + initval) & M32)
    blocks = (size - 1) // 12 if size else 0            # while (length > 12)
    word = lambda addr, off: ir.load(ir.at(addr, off), ir.I32, align=1)    # noqa: E731
    if blocks <= UNROLL_BLOCKS:
        for k in range(blocks):
            a = b.add(a, word(key, 12 * k))
            bb = b.add(bb, word(key, 12 * k + 4))
            c = b.add(c, word(key, 12 * k + 8))
            a, bb, c = _gen_mix(b, a, bb, c, const)
    else:
        head = b.block
        loop = ir.block("jhash.loop")
        out = ir.block("jhash.blocks_done")
        b.branch(loop)
        b.position_at_end(loop)
        pa, pb, pc = (b.phi(ir.I32, name=f"jhash.{n}") for n in "abc")
        pos = b.phi(ir.I64, name="jhash.pos")
        for phi, v in ((pa, a), (pb, bb), (pc, c), (pos, ir.const(ir.I64, 0))):
            phi.add_incoming(v, head)
        at = b.add(key, pos)
        na, nb, nc = _gen_mix(b, b.add(pa, word(at, 0)), b.add(pb, word(at, 4)),
                              b.add(pc, word(at, 8)), const)
        npos = b.add(pos, ir.const(ir.I64, 12))
        for phi, v in ((pa, na), (pb, nb), (pc, nc), (pos, npos)):
            phi.add_incoming(v, loop)
        b.cbranch(b.icmp_unsigned("<", npos, ir.const(ir.I64, 12 * blocks)), loop, out)
        b.position_at_end(out)
        a, bb, c = na, nb, nc
    rest = size - 12 * blocks
    if rest == 0:
        return c
    off = 12 * blocks
    a = b.add(a, _gen_tail_word(ir, key, off, min(rest, 4)))
    if rest > 4:
        bb = b.add(bb, _gen_tail_word(ir, key, off + 4, min(rest - 4, 4)))
    if rest > 8:
        c = b.add(c, _gen_tail_word(ir, key, off + 8, rest - 8))
    return _gen_final(b, a, bb, c, const)
