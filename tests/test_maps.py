"""Map semantics (runtime/maps, runtime/map_helpers): kernel rules and errnos, faces, dump format.

Where the machine allows the bpf() syscall (root), creation rules, operation sequences and
bpftool's dump text are also compared with the running kernel; those comparisons skip (saying
why) only when bpftool is missing or the kernel refuses a map type they use (kernel_probe).
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

from pybpf.errors import MapError
from pybpf.runtime import map_helpers as mh
from pybpf.runtime.maps import MAP_TYPES, MapKeyError, create_map
from pybpf.runtime.maps.base import MAP_TYPE_IDS
from pybpf.runtime.maps.hash import ELEM_HDR, NULLS, OFF_NEXT
from pybpf.runtime.maps.jhash import jhash
from pybpf.runtime.maps.ringbuf import RingBuf
from pybpf.uapi import (BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU,
                        BPF_F_NO_PREALLOC, BPF_F_NUMA_NODE, BPF_F_PRESERVE_ELEMS, BPF_F_RDONLY,
                        BPF_F_WRONLY, BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, ENOTSUPP)

import kernel_bpf

M64 = (1 << 64) - 1
u32 = struct.Struct("<I").pack
u64 = struct.Struct("<Q").pack


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(MapError) as ei:
        fn(*args, **kwargs)
    return ei.value.errno


# --- the running kernel (tests/kernel_bpf.py; features probed by tests/kernel_probe.py) --------
def kmap_create(t, ks, vs, n, flags=0, extra=0):
    """A kernel map fd, or -errno."""
    return kernel_bpf.try_create_map(t, ks, vs, n, flags, extra)


def kelem(cmd, fd, key, value=b"", flags=0):
    """BPF_MAP_LOOKUP_ELEM (1), UPDATE_ELEM (2) or DELETE_ELEM (3): (0 or -errno, value)."""
    return kernel_bpf.elem_op(cmd, fd, key, value if cmd != 3 else None, flags)


# --- creation rules ------------------------------------------------------------------------------
CREATE_CASES = [  # (type, key_size, value_size, max_entries, flags, errno or 0)
    ("hash", 4, 8, 10, 0, 0), ("hash", 0, 8, 10, 0, errno.EINVAL),
    ("hash", 4, 0, 10, 0, errno.EINVAL), ("hash", 4, 8, 0, 0, errno.EINVAL),
    ("hash", 4, 8, 10, BPF_F_NO_COMMON_LRU, errno.EINVAL),
    ("hash", 4, 8, 10, BPF_F_MMAPABLE, errno.EINVAL), ("hash", 4, 8, 10, 1 << 12, errno.EINVAL),
    ("hash", 4, 4194251, 1, 0, 0), ("hash", 4, 4194252, 1, 0, errno.E2BIG),
    ("hash", 4, 8, 10, BPF_F_RDONLY | BPF_F_WRONLY, errno.EINVAL),
    ("lru_hash", 4, 8, 10, BPF_F_NO_PREALLOC, ENOTSUPP), ("lru_hash", 4, 8, 10, 0, 0),
    ("percpu_hash", 4, 8, 10, BPF_F_NUMA_NODE, errno.EINVAL),
    ("percpu_hash", 4, 32768, 1, 0, 0), ("percpu_hash", 4, 32769, 1, 0, errno.E2BIG),
    ("array", 4, 8, 10, 0, 0), ("array", 8, 8, 10, 0, errno.EINVAL),
    ("array", 4, 0, 10, 0, errno.EINVAL), ("array", 4, 8, 0, 0, errno.EINVAL),
    ("array", 4, 8, 10, BPF_F_MMAPABLE, 0), ("array", 4, 8, 10, BPF_F_PRESERVE_ELEMS,
                                               errno.EINVAL),
    ("array", 4, 8, 10, 1 << 12, 0), ("array", 4, 1 << 31, 1, 0, errno.E2BIG),
    ("percpu_array", 4, 8, 10, BPF_F_MMAPABLE, errno.EINVAL),
    ("percpu_array", 4, 32769, 1, 0, errno.E2BIG),
    ("prog_array", 4, 4, 4, 0, 0), ("prog_array", 4, 8, 4, 0, errno.EINVAL),
    ("prog_array", 8, 4, 4, 0, errno.EINVAL), ("prog_array", 4, 4, 4, BPF_F_MMAPABLE,
                                                 errno.EINVAL),
    ("ringbuf", 0, 0, 4096, 0, 0), ("ringbuf", 0, 0, 3 * 4096, 0, errno.EINVAL),
    ("ringbuf", 0, 0, 2048, 0, errno.EINVAL), ("ringbuf", 4, 0, 4096, 0, errno.EINVAL),
    ("ringbuf", 0, 0, 4096, BPF_F_MMAPABLE, errno.EINVAL),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_creation_rules(case):
    t, ks, vs, n, flags, want = case
    if want:
        assert errno_of(create_map, t, ks, vs, n, flags) == want
    else:
        m = create_map(t, ks, vs, n, flags)
        assert (m.type, m.key_size, m.value_size, m.max_entries) == (t, ks, vs, n)


@pytest.mark.kernel(*sorted({f"map:{c[0]}" for c in CREATE_CASES}))
def test_creation_rules_match_the_kernel():
    for t, ks, vs, n, flags, want in CREATE_CASES:
        fd = kmap_create(t, ks, vs, n, flags)
        if fd >= 0:
            os.close(fd)
        assert (-fd if fd < 0 else 0) == want, (t, ks, vs, n, flags)


def test_registry_and_type_ids():
    assert set(MAP_TYPES) == set(MAP_TYPE_IDS)
    assert create_map(MAP_TYPE_IDS["lru_hash"], 4, 4, 2).type == "lru_hash"
    assert create_map("BPF_MAP_TYPE_ARRAY", 4, 4, 2).type == "array"
    assert errno_of(create_map, "lpm_trie", 8, 8, 1) == errno.EINVAL
    assert errno_of(create_map, 4242, 4, 4, 1) == errno.EINVAL


# --- array ---------------------------------------------------------------------------------------
def test_array_kernel_rules():
    a = create_map("array", 4, 8, 3, name="arr", fd=7)
    assert a.values() == [bytes(8)] * 3 and len(a) == 3 and a.fd == 7 and a.name == "arr"
    a[2] = 0x1122
    assert a[2] == u64(0x1122)
    assert errno_of(a.update, 3, 1) == errno.E2BIG
    assert errno_of(a.update, 1, 1, BPF_NOEXIST) == errno.EEXIST
    assert errno_of(a.update, 1, 1, 3) == errno.EINVAL
    assert errno_of(a.update, 1, 1, BPF_F_LOCK) == errno.EINVAL
    a.update(1, 5, BPF_EXIST)
    assert errno_of(a.delete, 1) == errno.EINVAL
    with pytest.raises(KeyError):                 # MapKeyError is also a KeyError
        a[3]
    assert errno_of(a.lookup, 3) == errno.ENOENT and 3 not in a and 2 in a
    assert a.get(3, "none") == "none"
    assert a.sys_get_next_key(None) == u32(0) and a.sys_get_next_key(u32(9)) == u32(0)
    assert a.sys_get_next_key(u32(0)) == u32(1)
    assert errno_of(a.sys_get_next_key, u32(2)) == errno.ENOENT
    a.clear()
    assert a.values() == [bytes(8)] * 3


def test_array_values_are_real_and_never_move():
    a = create_map("array", 4, 12, 4)
    addr = a.map_lookup_elem(u32(3))
    assert addr == a.data_address + 3 * 16                     # 12 rounded up to 16
    assert a.map_lookup_elem(u32(4)) == 0
    ctypes.memmove(addr, b"hello world!", 12)                  # a program writes...
    assert a[3] == b"hello world!"                             # ...Python sees it
    a[3] = b"HELLO WORLD!"
    assert a.map_lookup_elem(u32(3)) == addr and ctypes.string_at(addr, 12) == b"HELLO WORLD!"
    start, size, writable = a.regions()[0]
    assert start <= addr and addr + 12 <= start + size and writable
    g = create_map("array", 4, 40, 1)                  # global data (.data/.bss)
    assert g.map_direct_value_addr(39) == g.map_lookup_elem(u32(0))
    assert errno_of(g.map_direct_value_addr, 40) == errno.EINVAL
    assert errno_of(a.map_direct_value_addr, 0) == ENOTSUPP


@pytest.mark.kernel("map:array")
def test_array_matches_the_kernel():
    ours = create_map("array", 4, 8, 3)
    fd = kmap_create("array", 4, 8, 3)
    try:
        for key, val, flags in [(0, 1, 0), (3, 1, 0), (1, 2, 1), (1, 2, 2), (2, 2, 3), (2, 9, 0)]:
            kr, _ = kelem(2, fd, u32(key), u64(val), flags)
            try:
                ours.sys_update(u32(key), u64(val), flags)
                r = 0
            except MapError as e:
                r = -e.errno
            assert r == kr, (key, val, flags)
        for key in range(4):
            kr, kv = kelem(1, fd, u32(key), bytes(8))
            assert (ours.sys_lookup(u32(key)) if kr == 0 else None) == (kv if kr == 0 else None)
            assert (kr == 0) == (key in ours)
        assert kelem(3, fd, u32(0))[0] == -errno_of(ours.sys_delete, u32(0))
    finally:
        os.close(fd)


# --- hash ----------------------------------------------------------------------------------------
def test_hash_flags_full_and_delete():
    h = create_map("hash", 4, 8, 2)
    h[1] = 10
    assert errno_of(h.update, 1, 11, BPF_NOEXIST) == errno.EEXIST
    assert errno_of(h.update, 2, 20, BPF_EXIST) == errno.ENOENT
    assert errno_of(h.update, 2, 20, 3) == errno.EINVAL
    h.update(2, 20, BPF_NOEXIST)
    assert errno_of(h.update, 3, 30) == errno.E2BIG            # full
    h.update(1, 12, BPF_EXIST)                                   # replacing is fine when full
    assert len(h) == 2 and h[1] == u64(12)
    assert errno_of(h.delete, 3) == errno.ENOENT
    del h[1]                                                     # frees the slot...
    h[3] = 30                                                    # ...so this fits again
    assert sorted(h.keys()) == [u32(2), u32(3)] and 1 not in h and 3 in h
    h.clear()
    assert len(h) == 0 and h.items() == []


def test_hash_next_key_walks_every_key_once():
    h = create_map("hash", 4, 4, 8)
    for i in range(5):
        h[i] = i
    seen, key = [], None
    while True:
        try:
            key = h.sys_get_next_key(key)
        except MapKeyError:
            break
        seen.append(key)
    assert sorted(seen) == [u32(i) for i in range(5)]
    assert h.sys_get_next_key(u32(99)) == seen[0]                # unknown key: the first one


def test_hash_native_layout_finds_every_value():
    """Walk the documented bucket/chain layout the way JIT'd code will."""
    h = create_map("hash", 6, 3, 16)
    keys = [bytes([i, 0, i, 1, 2, i]) for i in range(12)]
    for i, k in enumerate(keys):
        h[k] = bytes([i, i, i])
    for k in keys[::3]:
        del h[k]
    hdr = h.header
    assert hdr.map_type == MAP_TYPE_IDS["hash"] and hdr.key_size == 6 and hdr.value_size == 3

    def native_lookup(key: bytes) -> int:
        hsh = jhash(key)
        cur = ctypes.c_uint32.from_address(hdr.index + 4 * (hsh & hdr.index_mask)).value
        while not cur & NULLS:          # a chain ends on NULLS | bucket
            elem = hdr.data + (cur - 1) * hdr.elem_size
            if ctypes.c_uint32.from_address(elem + 4).value == hsh and \
                    ctypes.string_at(elem + ELEM_HDR, 6) == key:
                return elem + ELEM_HDR + 8
            cur = ctypes.c_uint32.from_address(elem + OFF_NEXT).value
        return 0

    for i, k in enumerate(keys):
        want = 0 if i % 3 == 0 else h.map_lookup_elem(k)
        assert native_lookup(k) == want
        if want:
            assert ctypes.string_at(want, 3) == bytes([i, i, i])


@pytest.mark.kernel("map:hash")
def test_hash_matches_the_kernel():
    ours = create_map("hash", 4, 8, 3)
    fd = kmap_create("hash", 4, 8, 3)
    ops = [("u", 1, 0), ("u", 1, 1), ("u", 2, 2), ("u", 2, 3), ("u", 2, 1), ("u", 3, 0),
           ("u", 4, 0), ("u", 4, 1), ("u", 4, 2), ("d", 9, 0), ("d", 1, 0), ("u", 4, 0),
           ("u", 3, 2), ("l", 1, 0), ("l", 4, 0)]
    try:
        for op, key, flags in ops:
            if op == "u":
                kr, _ = kelem(2, fd, u32(key), u64(key * 3), flags)
                fn = lambda: ours.sys_update(u32(key), u64(key * 3), flags)  # noqa: E731
            elif op == "d":
                kr, _ = kelem(3, fd, u32(key))
                fn = lambda: ours.sys_delete(u32(key))  # noqa: E731
            else:
                kr, _ = kelem(1, fd, u32(key), bytes(8))
                fn = lambda: ours.sys_lookup(u32(key))  # noqa: E731
            try:
                fn()
                r = 0
            except MapError as e:
                r = -e.errno
            assert r == kr, (op, key, flags)
    finally:
        os.close(fd)


def test_lru_evicts_least_recently_used():
    m = create_map("lru_hash", 4, 8, 4)
    for i in range(4):
        m[i] = i
    m[4] = 4                                       # nothing referenced: the oldest goes
    assert sorted(m.keys()) == [u32(i) for i in (1, 2, 3, 4)]
    for i in (1, 3, 4):                            # BPF lookups mark use...
        assert m.map_lookup_elem(u32(i))
    m.sys_lookup(u32(2))                           # ...user-space lookups do not
    m[5] = 5
    assert sorted(m.keys()) == [u32(i) for i in (1, 3, 4, 5)]
    # 5's insert cost 1 its reference (second chance: 1 moved behind 3 and 4, bit cleared);
    # order now 3*, 4*, 1, 5 (* referenced). An update moves 1 to the end, bit clear.
    m[1] = 11
    m[6] = 6                  # 3 and 4 spend their second chance; 5, unreferenced, goes
    assert sorted(m.keys()) == [u32(i) for i in (1, 3, 4, 6)]
    assert m.map_lookup_elem(u32(6))
    m[7] = 7                  # 1 is now the oldest unreferenced element
    assert sorted(m.keys()) == [u32(i) for i in (3, 4, 6, 7)]
    assert errno_of(m.update, 7, 0, BPF_NOEXIST) == errno.EEXIST
    assert errno_of(m.update, 99, 0, BPF_EXIST) == errno.ENOENT


# --- percpu --------------------------------------------------------------------------------------
def test_percpu_array_per_cpu_values():
    m = create_map("percpu_array", 4, 4, 2, n_cpus=3)
    m[1] = [1, 2, 3]
    assert m[1] == [u32(1), u32(2), u32(3)] and m[0] == [bytes(4)] * 3
    m.typed(int, int)
    m[0] = 7                                       # one value: every CPU
    assert m[0] == [7, 7, 7]
    m.cpu = 2                                      # the BPF side sees its CPU only
    assert ctypes.c_uint32.from_address(m.map_lookup_elem(u32(1))).value == 3
    assert m.map_update_elem(u32(1), u32(30), BPF_ANY) == 0
    assert m[1] == [1, 2, 30]
    assert ctypes.c_uint32.from_address(m.map_lookup_percpu_elem(u32(1), 0)).value == 1
    assert m.map_lookup_percpu_elem(u32(1), 3) == 0
    assert errno_of(m.update, 0, [1, 2]) == errno.EINVAL
    assert m.header.cpu == 2 and errno_of(setattr, m, "cpu", 3) == errno.EINVAL


def test_percpu_hash_new_elements_from_bpf_zero_other_cpus():
    m = create_map("percpu_hash", 4, 8, 4, n_cpus=2).typed(int, int)
    m.cpu = 1
    assert m.map_update_elem(u32(5), u64(55), BPF_ANY) == 0
    assert m[5] == [0, 55]
    m[6] = [1, 2]
    assert m.sys_lookup(u32(6)) == u64(1) + u64(2)
    assert create_map("lru_percpu_hash", 4, 8, 1, n_cpus=2).percpu


# --- prog_array ----------------------------------------------------------------------------------
class FakeProg:
    def __init__(self, name, native_entry=0, id=0):
        self.name, self.native_entry, self.id = name, native_entry, id


def test_prog_array_rules_and_tail_call_data():
    pa = create_map("prog_array", 4, 4, 4)
    p1, p2 = FakeProg("a", native_entry=0x1000, id=11), FakeProg("b")
    pa[0] = p1
    pa.resolve_prog = {3: p2}.get
    pa.update(2, 3)                                 # by fd
    assert pa[0] is p1 and pa[2] is p2 and len(pa) == 2 and 1 not in pa
    assert pa.sys_lookup(u32(0)) == u32(11)
    assert errno_of(pa.update, 1, p1, BPF_NOEXIST) == errno.EINVAL
    assert errno_of(pa.update, 4, p1) == errno.E2BIG
    assert errno_of(pa.update, 1, 99) == errno.EINVAL         # not a program
    assert errno_of(pa.lookup, 1) == errno.ENOENT
    assert errno_of(pa.sys_delete, u32(4)) == errno.E2BIG
    assert errno_of(pa.sys_delete, u32(1)) == errno.ENOENT
    assert mh.tail_call_target(pa, 0) is p1 and mh.tail_call_target(pa, 1) is None
    assert mh.tail_call_target(pa, 4) is None and mh.tail_call_target(pa, (1 << 32)) is p1
    table = (ctypes.c_uint64 * 4).from_address(pa.table_address)
    assert list(table) == [0x1000, 0, 0, 0]
    p2.native_entry = 0x2000
    pa.refresh_native()
    assert list(table) == [0x1000, 0, 0x2000, 0]
    del pa[0]
    assert list(table)[0] == 0 and mh.tail_call_target(pa, 0) is None
    assert pa.map_update_elem(u32(0), u32(0), 0) == -errno.EINVAL   # programs cannot write it
    assert mh.MAX_TAIL_CALL_CNT == 33


# --- ringbuf -------------------------------------------------------------------------------------
def test_ringbuf_output_consume_discard_and_order():
    rb = create_map("ringbuf", max_entries=4096)
    assert rb.output(b"one") == 0 and rb.output(b"two!!", BPF_RB_NO_WAKEUP) == 0
    s = rb.reserve(4)
    ctypes.memmove(s, b"gone", 4)
    rb.commit(s, discard=True)
    assert rb.output(b"three") == 0
    assert rb.query(0) == 3 * 16 + 16 and rb.query(1) == 4096 and rb.query(9) == 0
    assert list(rb) == [b"one", b"two!!", b"three"]
    assert rb.avail_data == 0 and rb.consume() == []
    assert rb.query(2) == rb.query(3) == 64


def test_ringbuf_busy_record_blocks_the_consumer():
    rb = create_map("ringbuf", max_entries=4096)
    first = rb.reserve(8)
    assert rb.output(b"later") == 0
    assert rb.consume() == []                        # the first record is still BUSY
    ctypes.memmove(first, b"A" * 8, 8)
    rb.commit(first)
    assert rb.consume() == [b"A" * 8, b"later"]


def test_ringbuf_full_and_wraparound_is_contiguous():
    rb = create_map("ringbuf", max_entries=4096)
    assert rb.reserve(4096) == 0                     # record + header > size
    assert rb.reserve(4096 - 8) == 0                 # would leave 0 bytes: > size - 1
    assert rb.output(b"x" * 3000) == 0
    assert rb.output(b"y" * 1500) == -errno.EAGAIN   # not consumed yet
    assert rb.output(b"z", 8) == -errno.EINVAL
    assert mh.ringbuf_reserve(rb, 8, 1) == 0          # flags: NULL
    assert rb.consume() == [b"x" * 3000]
    big = bytes(range(256)) * 6                       # 1536 bytes from position 3008
    s = rb.reserve(len(big))
    assert s < rb.data_address + 4096 < s + len(big)  # the sample spans the end of the ring...
    ctypes.memmove(s, big, len(big))                  # ...and is one contiguous block
    rb.commit(s)
    assert rb.consume() == [big]
    assert rb.output(b"w" * 2000) == 0 and rb.consume() == [b"w" * 2000]


def test_ringbuf_wakeups_and_no_elements():
    rb = create_map("ringbuf", max_entries=4096)
    rb.output(b"a")                                   # consumer waiting at this record: wake
    rb.output(b"b")                                   # consumer not at this record: no wake
    rb.output(b"c", BPF_RB_FORCE_WAKEUP)
    assert rb.wakeups == 2
    assert errno_of(rb.lookup, 0) == errno.EINVAL and errno_of(rb.sys_get_next_key,
                                                                None) == ENOTSUPP
    assert rb.map_update_elem(b"", b"", 0) == -ENOTSUPP and rb.map_lookup_elem(b"") == 0
    assert bool(create_map("ringbuf", max_entries=4096))   # a resource: truthy even when empty
    assert rb.regions() == [(rb.data_address, 8192, True)]


# --- faces: typing, dump, flags ------------------------------------------------------------------
class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_int32)]


def test_typed_access_ctypes_numpy_ints():
    m = create_map("hash", 4, 8, 8, key_type=int, value_type=Pair)
    m[1] = Pair(1, -2)
    m[2] = (3, 4)
    assert (m[1].a, m[1].b, m[2].b) == (1, -2, 4)
    n = create_map("array", 4, 8, 2).typed(np.uint32, np.dtype([("x", "<u4"), ("y", "<i4")]))
    n[np.uint32(1)] = (5, -6)
    assert n[1]["y"] == -6 and n.items()[1][0] == 1
    assert errno_of(m.typed, int, ctypes.c_uint32) == errno.EINVAL    # wrong size
    assert errno_of(m.update, 1, b"short") == errno.EINVAL
    assert errno_of(m.update, 1 << 40, 0) == errno.EINVAL             # key does not fit


def test_dump_format_exact():
    h = create_map("hash", 4, 8, 4)
    h[1] = bytes(range(8))
    assert h.dump() == "key: 01 00 00 00  value: 00 01 02 03 04 05 06 07\nFound 1 element\n"
    w = create_map("hash", 4, 20, 4)
    w[1] = bytes(range(20))
    assert w.dump() == ("key:\n01 00 00 00\nvalue:\n00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d"
                        " 0e 0f\n10 11 12 13\nFound 1 element\n")
    a = create_map("array", 4, 4, 2)
    assert a.dump().endswith("key: 01 00 00 00  value: 00 00 00 00\nFound 2 elements\n")
    assert create_map("hash", 4, 4, 2).dump() == "Found 0 elements\n"


DUMP_SHAPES = [("hash", 4, 8), ("hash", 4, 20), ("hash", 20, 4), ("hash", 4, 16),
               ("percpu_hash", 4, 4), ("hash", 12, 12), ("array", 4, 24)]


@pytest.mark.kernel(*sorted({f"map:{t}" for t, _, _ in DUMP_SHAPES}))
def test_dump_matches_bpftool():
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    for t, ks, vs in DUMP_SHAPES:
        ncpu = os.cpu_count() if t.startswith("percpu") else 1
        ours = create_map(t, ks, vs, 2, **({"n_cpus": ncpu} if ncpu > 1 else {}))
        fd = kmap_create(t, ks, vs, 2)
        try:
            key = bytes(range(1, ks + 1)) if t == "hash" or t == "percpu_hash" else u32(1)
            value = bytes(range(7, 7 + vs)).ljust(ours.sys_value_size if ours.percpu else vs,
                                                  b"\0")
            if ours.percpu:
                value = b"".join(bytes(range(c, c + vs)).ljust(8, b"\0") for c in range(ncpu))
            assert kelem(2, fd, key, value)[0] == 0
            ours.sys_update(key, value)
            mid = [ln.split()[1] for ln in open(f"/proc/self/fdinfo/{fd}")
                   if ln.startswith("map_id")][0]
            out = subprocess.run(["bpftool", "map", "dump", "id", mid], capture_output=True,
                                 text=True, timeout=30).stdout
            assert ours.dump() == out, (t, ks, vs)
        finally:
            os.close(fd)


def test_rdonly_wronly_flags_for_user_space():
    ro = create_map("array", 4, 4, 2, BPF_F_RDONLY)
    assert errno_of(ro.update, 0, 1) == errno.EPERM and ro[0] == bytes(4)
    assert ro.map_update_elem(u32(0), u32(5), 0) == 0            # programs may still write
    ro = create_map("array", 4, 4, 1)
    ro[0] = 3
    ro.freeze()
    assert errno_of(ro.update, 0, 1) == errno.EPERM and ro[0] == u32(3)
    wo = create_map("hash", 4, 4, 2, BPF_F_WRONLY)
    wo[1] = 1
    assert errno_of(wo.lookup, 1) == errno.EPERM


def test_show_format():
    h = create_map("hash", 4, 8, 2048, name="some_map", fd=10)
    assert h.show().startswith("10: hash  name some_map  flags 0x0\n\tkey 4B  value 8B  "
                               "max_entries 2048  memlock ")


# --- helpers as BPF sees them --------------------------------------------------------------------
def test_helpers_by_map_address_and_fd():
    h = create_map("hash", 4, 8, 1, fd=3)
    rb = create_map("ringbuf", max_entries=4096, fd=4)
    resolve = mh.resolver([h, rb])
    helpers = mh.make_helpers(resolve)
    by_name = {x.name: x for x in helpers.values()}
    assert by_name["map_lookup_elem"].id == 1 and by_name["ringbuf_output"].id == 130
    assert by_name["map_update_elem"].args == ("ARG_CONST_MAP_PTR", "ARG_PTR_TO_MAP_KEY",
                                               "ARG_PTR_TO_MAP_VALUE", "ARG_ANYTHING")
    k, v = ctypes.c_uint32(7), ctypes.c_uint64(99)
    upd, look, dele = (by_name[n].fn for n in ("map_update_elem", "map_lookup_elem",
                                               "map_delete_elem"))
    assert upd(h.address, ctypes.addressof(k), ctypes.addressof(v), 0) == 0
    assert upd(3, ctypes.addressof(k), ctypes.addressof(v), BPF_NOEXIST) == -errno.EEXIST & M64
    k2 = ctypes.c_uint32(8)
    assert upd(h.address, ctypes.addressof(k2), ctypes.addressof(v), 0) == -errno.E2BIG & M64
    addr = look(h.address, ctypes.addressof(k))
    assert ctypes.c_uint64.from_address(addr).value == 99 and look(3, ctypes.addressof(k2)) == 0
    assert dele(h.address, ctypes.addressof(k2)) == -errno.ENOENT & M64
    assert by_name["map_push_elem"].fn(h.address, ctypes.addressof(v), 0) == \
        -errno.EOPNOTSUPP & M64
    assert errno_of(look, 0xdead, ctypes.addressof(k)) == errno.EBADF
    # ringbuf: submit finds its ring from the sample header, as the kernel does
    sample = by_name["ringbuf_reserve"].fn(rb.address, 5, 0)
    assert sample and RingBuf.ring_of_sample(sample) == rb.address
    ctypes.memmove(sample, b"hello", 5)
    assert by_name["ringbuf_submit"].fn(sample, 0) == 0
    data = ctypes.create_string_buffer(b"bye")
    assert by_name["ringbuf_output"].fn(4, ctypes.addressof(data), 3, 0) == 0
    assert by_name["ringbuf_query"].fn(rb.address, 0) == 32
    assert rb.consume() == [b"hello", b"bye"]
