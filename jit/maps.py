"""Native ``bpf_map_lookup_elem`` for array and hash maps, built as LLVM IR over their layouts.

A lookup whose map argument is a known constant (the usual ``r1 = map ll`` before the call)
is inlined into the program, so JIT'd code does not call back into Python on that path. The
layouts are the runtime's documented ones (:class:`pybpf.runtime.maps.base.MapHeader`):

* array / percpu_array: ``index < max_entries ? data + index * elem_size (+ cpu * stride) : 0``;
* hash, lru_hash, percpu_hash, lru_percpu_hash: FNV-1a 32-bit over the key bytes, bucket
  ``index[h & index_mask]`` holds slot + 1 of the chain's first element (0: empty); an element
  is ``u32 next (slot + 1), u32 hash, u8 in_use, u8 ref, pad, key (padded to 8), value``; a
  match returns ``elem + value_off (+ cpu * stride)`` and, for LRU maps, sets ``ref`` as the
  kernel's lookup sets its reference bit.

The current CPU of percpu maps (``map.cpu``) is read from the header at run time, so changing
it between runs needs no recompile. Updates and deletes stay in Python (through the bridge);
the runtime writes an element before linking it, so a lookup never sees a half-built one.
"""
from __future__ import annotations

from llvmlite import ir

from pybpf.jit import cgutils as cg
from pybpf.jit.cgutils import I8, I32, I64, PTR

FNV_OFFSET, FNV_PRIME = 0x811C9DC5, 0x01000193
_HDR_CPU = 28            # MapHeader.cpu
_OFF_NEXT, _OFF_HASH, _OFF_REF, _ELEM_KEY = 0, 4, 9, 16
_NULLS = 1 << 31          # a chain end marker: _NULLS | bucket (runtime/maps/hash.py)
_ARRAYS = ("array", "percpu_array")
_HASHES = ("hash", "lru_hash", "percpu_hash", "lru_percpu_hash")
_UNROLL_KEY = 64         # keys up to this many bytes are hashed without a loop


def supported(m) -> bool:
    return getattr(m, "type", None) in _ARRAYS + _HASHES and not getattr(m, "closed", False)


def _ptr(b, addr):
    return b.inttoptr(addr, PTR)


def _cpu_offset(b, m) -> ir.Value:
    if not m.percpu:
        return cg.const(I64, 0)
    cpu = b.load(_ptr(b, cg.const(I64, m.address + _HDR_CPU)), typ=I32)
    return b.mul(b.zext(cpu, I64), cg.const(I64, m.stride))


def lookup(fl, m, key: ir.Value) -> ir.Value:
    """r0 of map_lookup_elem(m, key) as native code (``key`` is the i64 key address)."""
    if m.type in _ARRAYS:
        return _array_lookup(fl.b, m, key)
    return _hash_lookup(fl, m, key)


def _array_lookup(b, m, key) -> ir.Value:
    index = b.load(_ptr(b, key), typ=I32, align=1)
    found = b.icmp_unsigned("<", index, cg.const(I32, m.max_entries))
    addr = b.add(cg.const(I64, m.header.data),
                 b.mul(b.zext(index, I64), cg.const(I64, m.header.elem_size)))
    addr = b.add(addr, _cpu_offset(b, m)) if m.percpu else addr
    return b.select(found, addr, cg.const(I64, 0))


def _fnv1a(fl, key, size: int) -> ir.Value:
    b = fl.b
    h = cg.const(I32, FNV_OFFSET)
    prime = cg.const(I32, FNV_PRIME)
    if size <= _UNROLL_KEY:
        for i in range(size):
            byte = b.load(_ptr(b, b.add(key, cg.const(I64, i))) if i else _ptr(b, key), typ=I8)
            h = b.mul(b.xor(h, b.zext(byte, I32)), prime)
        return h
    # A loop for long keys.
    head = b.block
    loop = fl.fn.append_basic_block("fnv.loop")
    out = fl.fn.append_basic_block("fnv.done")
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(I64, name="fnv.i")
    acc = b.phi(I32, name="fnv.h")
    i.add_incoming(cg.const(I64, 0), head)
    acc.add_incoming(h, head)
    byte = b.load(_ptr(b, b.add(key, i)), typ=I8)
    nh = b.mul(b.xor(acc, b.zext(byte, I32)), prime)
    ni = b.add(i, cg.const(I64, 1))
    i.add_incoming(ni, loop)
    acc.add_incoming(nh, loop)
    b.cbranch(b.icmp_unsigned("<", ni, cg.const(I64, size)), loop, out)
    b.position_at_end(out)
    return nh


def _keys_equal(b, a, key, size: int) -> ir.Value:
    """i1: the ``size`` bytes at ``a`` and ``key`` are equal (8/4/2/1-byte unaligned loads)."""
    diff = None
    off = 0
    for width in (8, 4, 2, 1):
        ty = cg.BYTES[width]
        while size - off >= width:
            pa = _ptr(b, b.add(a, cg.const(I64, off)) if off else a)
            pk = _ptr(b, b.add(key, cg.const(I64, off)) if off else key)
            x = b.xor(b.load(pa, typ=ty, align=1), b.load(pk, typ=ty, align=1))
            x = cg.zext64(b, x)
            diff = x if diff is None else b.or_(diff, x)
            off += width
    return b.icmp_unsigned("==", diff, cg.const(I64, 0))


def _hash_lookup(fl, m, key) -> ir.Value:
    b, fn = fl.b, fl.fn
    hdr = m.header
    h = _fnv1a(fl, key, m.key_size)
    bidx = b.and_(h, cg.const(I32, hdr.index_mask))
    bucket = b.add(cg.const(I64, hdr.index), b.mul(b.zext(bidx, I64), cg.const(I64, 4)))
    head = fn.append_basic_block("htab.head")
    walk = fn.append_basic_block("htab.walk")
    check = fn.append_basic_block("htab.check")
    end = fn.append_basic_block("htab.end")
    found = fn.append_basic_block("htab.found")
    done = fn.append_basic_block("htab.done")
    b.branch(head)

    # hlist_nulls, as the kernel's RCU hash: a chain ends on NULLS | its bucket; ending on
    # another bucket's marker means an element was reused meanwhile: walk again from the head.
    b.position_at_end(head)
    first = b.load_atomic(_ptr(b, bucket), "acquire", 4, typ=I32)   # re-read on each restart
    b.branch(walk)

    b.position_at_end(walk)
    slot = b.phi(I32, name="htab.slot")
    slot.add_incoming(first, head)
    b.cbranch(b.icmp_unsigned("!=", b.and_(slot, cg.const(I32, _NULLS)), cg.const(I32, 0)),
              end, check)

    b.position_at_end(end)
    own = b.icmp_unsigned("==", slot, b.or_(bidx, cg.const(I32, _NULLS)))
    # Elements are reused at once (no grace period): a walk that passed the head before an
    # update linked the key's new element there can miss it. The kernel's prealloc htab
    # lives with that; here a walk ending on its own marker while the head has changed
    # since it started walks again, so a key present throughout is never missed.
    again = b.load_atomic(_ptr(b, bucket), "acquire", 4, typ=I32)
    settled = b.and_(own, b.icmp_unsigned("==", again, first))
    b.cbranch(settled, done, head)

    b.position_at_end(check)
    elem = b.add(cg.const(I64, hdr.data),
                 b.mul(b.zext(b.sub(slot, cg.const(I32, 1)), I64), cg.const(I64, hdr.elem_size)))
    ehash = b.load(_ptr(b, b.add(elem, cg.const(I64, _OFF_HASH))), typ=I32)
    nxt = b.load_atomic(_ptr(b, elem), "acquire", 4, typ=I32)
    slot.add_incoming(nxt, check)
    same_hash = b.icmp_unsigned("==", ehash, h)
    keyed = fn.append_basic_block("htab.key")
    b.cbranch(same_hash, keyed, walk)
    b.position_at_end(keyed)
    same = _keys_equal(b, b.add(elem, cg.const(I64, _ELEM_KEY)), key, m.key_size)
    slot.add_incoming(nxt, keyed)
    b.cbranch(same, found, walk)

    b.position_at_end(found)
    if m.lru:
        b.store(cg.const(I8, 1), _ptr(b, b.add(elem, cg.const(I64, _OFF_REF))))
    value = b.add(elem, cg.const(I64, m.value_off))
    if m.percpu:
        value = b.add(value, _cpu_offset(b, m))
    b.branch(done)

    b.position_at_end(done)
    r0 = b.phi(I64, name="htab.r0")
    r0.add_incoming(cg.const(I64, 0), end)
    r0.add_incoming(value, found)
    return r0
