"""lpm_trie, bloom_filter, array_of_maps and hash_of_maps: the same syscall-level operations on a
pybpf map and on a kernel map give the same errno and the same contents (the kernel is the
oracle where bpf() is permitted), plus what pybpf alone can show (Python faces, BPF lookups).
BPF programs using them run in both engines and in the kernel in the corpus
(tests/corpus/maps_corpus.c, tests/test_corpus.py)."""
from __future__ import annotations

import ctypes
import errno
import os
import struct

import pytest

import pybpf
from kernel_probe import require_kernel
from pybpf.errors import MapError

LPM_NO_PREALLOC = 1


def lpm_key(plen: int, *addr: int) -> bytes:
    return struct.pack("<I", plen) + bytes(addr).ljust(4, b"\0")


# --- the two sides: each op returns 0 or the errno ---------------------------------------------
class Mine:
    def __init__(self):
        self.vm = pybpf.VM()

    def create(self, *a, inner=None, **kw):
        try:
            inner_map = self.maps[inner] if inner is not None else None
            return self.vm.create_map(*a, inner=inner_map, **kw) if a[0].endswith("_of_maps") \
                else self.vm.create_map(*a, **kw)
        except MapError as e:
            return e.errno

    def op(self, what, m, key=None, value=None, flags=0):
        try:
            if what == "update":
                m.sys_update(key, value, flags)
                return 0, None
            if what == "lookup":
                out = m.sys_lookup(key, value) if m.type == "bloom_filter" else m.sys_lookup(key)
                return 0, out
            if what == "delete":
                m.sys_delete(key)
                return 0, None
            return 0, m.sys_get_next_key(key)
        except MapError as e:
            return e.errno, None


class Kernel:
    def __init__(self, kb):
        self.kb, self.fds = kb, []

    def create(self, mtype, key_size=0, value_size=0, max_entries=0, flags=0, map_extra=0,
               inner=None, name=""):
        try:
            fd = self.kb.create_map(mtype, key_size, value_size, max_entries, flags, map_extra,
                                    name, self.maps[inner].fd if inner is not None else 0)
        except OSError as e:
            return e.errno
        self.fds.append(fd)
        return _KMap(fd, mtype, key_size, value_size)

    def op(self, what, m, key=None, value=None, flags=0):
        cmd = {"lookup": 1, "update": 2, "delete": 3, "next": 4}[what]
        k = ctypes.create_string_buffer(bytes(key), len(key)) if key else None
        size = 4 if m.type.endswith("_of_maps") else m.value_size
        if what == "next":
            v = ctypes.create_string_buffer(m.key_size)
        elif value is not None:
            v = ctypes.create_string_buffer(bytes(value), len(value))
        else:
            v = ctypes.create_string_buffer(size)
        attr = bytearray(32)
        struct.pack_into("<IIQQQ", attr, 0, m.fd, 0, ctypes.addressof(k) if k else 0,
                         ctypes.addressof(v) if what != "delete" else 0, flags)
        try:
            self.kb._bpf(cmd, attr, what)
        except OSError as e:
            return e.errno, None
        return 0, (v.raw if what in ("lookup", "next") else None)

    def close(self):
        for fd in self.fds:
            os.close(fd)


class _KMap:
    def __init__(self, fd, mtype, key_size, value_size):
        self.fd, self.type, self.key_size, self.value_size = fd, mtype, key_size, value_size


def script(side, maps):
    """The operations both sides run; returns a list of (what, errno, result bytes or None)."""
    side.maps = maps
    out = []

    def create(name, *a, **kw):
        m = side.create(*a, **kw)
        out.append((f"create {name}", m if isinstance(m, int) else 0, None))
        if not isinstance(m, int):
            maps[name] = m

    def op(label, what, name, key=None, value=None, flags=0, compare_value=True):
        err, res = side.op(what, maps[name], key, value, flags)
        out.append((label, err, res if compare_value else None))

    # lpm_trie: creation rules, then a routing table
    create("lpm no prealloc", "lpm_trie", 8, 4, 4, 0)
    create("lpm key 4", "lpm_trie", 4, 4, 4, LPM_NO_PREALLOC)
    create("lpm", "lpm_trie", 8, 4, 4, LPM_NO_PREALLOC)
    u = lambda v: struct.pack("<I", v)      # noqa: E731
    op("lpm add /8", "update", "lpm", lpm_key(8, 10), u(1))
    op("lpm add /24", "update", "lpm", lpm_key(24, 10, 1, 2, 99), u(2))   # extra bits kept
    op("lpm add /0", "update", "lpm", lpm_key(0), u(3), flags=1)
    op("lpm add /24 noexist", "update", "lpm", lpm_key(24, 10, 1, 2), u(4), flags=1)
    op("lpm replace /24", "update", "lpm", lpm_key(24, 10, 1, 2, 7), u(5), flags=2)
    op("lpm new /16 exist", "update", "lpm", lpm_key(16, 10, 1), u(6), flags=2)
    op("lpm /33", "update", "lpm", lpm_key(33, 10), u(6))
    op("lpm flags 3", "update", "lpm", lpm_key(16, 10, 1), u(6), flags=3)
    op("lpm add /32", "update", "lpm", lpm_key(32, 10, 1, 2, 3), u(7))
    op("lpm full", "update", "lpm", lpm_key(16, 10, 1), u(8))
    for plen, addr in ((32, (10, 1, 2, 3)), (32, (10, 1, 2, 4)), (32, (10, 9, 9, 9)),
                       (32, (11, 1, 2, 3)), (16, (10, 1, 2, 3)), (0, (10, 1, 2, 3))):
        op(f"lpm lookup /{plen} {addr}", "lookup", "lpm", lpm_key(plen, *addr))
    op("lpm delete /16 absent", "delete", "lpm", lpm_key(16, 10, 1))
    op("lpm delete /24", "delete", "lpm", lpm_key(24, 10, 1, 2, 200))
    op("lpm lookup after delete", "lookup", "lpm", lpm_key(32, 10, 1, 2, 4))
    op("lpm add /16 now", "update", "lpm", lpm_key(16, 10, 1), u(8))
    # bloom_filter
    create("bloom key 4", "bloom_filter", 4, 4, 8)
    create("bloom extra 16", "bloom_filter", 0, 4, 8, 0, 16)
    create("bloom", "bloom_filter", 0, 8, 100, 0, 3)
    for v in (1, 2, 0xDEADBEEF):
        op(f"bloom push {v}", "update", "bloom", None, struct.pack("<Q", v))
    op("bloom push flags", "update", "bloom", None, struct.pack("<Q", 5), flags=1)
    for v in (1, 2, 0xDEADBEEF):
        op(f"bloom has {v}", "lookup", "bloom", None, struct.pack("<Q", v))
    op("bloom delete", "delete", "bloom", None)
    op("bloom next key", "next", "bloom", None)
    # maps of maps
    create("inner", "array", 4, 8, 2)
    create("inner big", "array", 4, 8, 3)
    create("inner hash", "hash", 4, 8, 2)
    create("aom value 8", "array_of_maps", 4, 8, 2, inner="inner")
    create("aom", "array_of_maps", 4, 4, 2, inner="inner")
    create("hom", "hash_of_maps", 4, 4, 1, inner="inner")
    fd = lambda n: struct.pack("<I", maps[n].fd)      # noqa: E731
    op("aom set 1", "update", "aom", u(1), fd("inner"))
    op("aom set 2", "update", "aom", u(2), fd("inner"))
    op("aom wrong size", "update", "aom", u(0), fd("inner big"))
    op("aom wrong type", "update", "aom", u(0), fd("inner hash"))
    op("aom lookup 1", "lookup", "aom", u(1), compare_value=False)
    op("aom lookup 0", "lookup", "aom", u(0))
    op("aom delete 0", "delete", "aom", u(0))
    op("aom delete 1", "delete", "aom", u(1))
    op("hom set", "update", "hom", u(5), fd("inner"))
    op("hom full", "update", "hom", u(6), fd("inner"))
    op("hom noexist", "update", "hom", u(5), fd("inner"), flags=1)
    op("hom lookup", "lookup", "hom", u(5), compare_value=False)
    op("hom delete 6", "delete", "hom", u(6))
    return out


def test_operations_match_the_kernel():
    # (kernel_probe cannot probe map-in-map types: they need an inner map; the script makes one)
    require_kernel("map:lpm_trie", "map:bloom_filter")
    import kernel_bpf
    kernel = Kernel(kernel_bpf)
    try:
        theirs = script(kernel, {})
        lpm_fd = kernel.maps["lpm"].fd
        kernel_dump = kernel_bpf.dump(lpm_fd, 8, 4)
    finally:
        kernel.close()
    mine_side = Mine()
    mine = script(mine_side, {})
    assert [m for m in mine if m != theirs[mine.index(m)]] == [], \
        [(a, b) for a, b in zip(mine, theirs) if a != b]
    lpm = mine_side.maps["lpm"]
    assert {k: lpm.sys_lookup(k) for k in lpm._raw_keys()} == kernel_dump


def test_the_script_exercises_failures_and_successes():
    out = script(Mine(), {})
    errs = {e for _, e, _ in out}
    assert {0, errno.EINVAL, errno.EEXIST, errno.ENOENT, errno.ENOSPC, errno.E2BIG,
            errno.EOPNOTSUPP} <= errs


def test_lpm_python_face_and_bpf_lookup_address():
    vm = pybpf.VM()
    t = vm.create_map("lpm_trie", key_size=8, value_size=4, max_entries=4, flags=LPM_NO_PREALLOC)
    t.sys_update(lpm_key(8, 10), struct.pack("<I", 1))
    t.sys_update(lpm_key(24, 10, 0, 1), struct.pack("<I", 2))
    a = t.map_lookup_elem(lpm_key(32, 10, 0, 1, 5))
    assert a and ctypes.string_at(a, 4) == struct.pack("<I", 2)
    assert t.map_lookup_elem(lpm_key(32, 10, 0, 1, 5)) == a          # a stable address
    assert t.map_lookup_elem(lpm_key(32, 11, 0, 1, 5)) == 0
    assert len(t) == 2


def test_bloom_filter_python_face():
    b = pybpf.VM().create_map("bloom_filter", value_size=4, max_entries=10).typed(value_type=int)
    b.push(7)
    assert 7 in b and 8 not in b and b.nr_hash_funcs == 5 and b.bitset_mask == 127


def test_map_in_map_lookup_gives_the_inner_map_to_bpf():
    vm = pybpf.VM()
    inner = vm.create_map("hash", key_size=4, value_size=4, max_entries=4)
    outer = vm.create_map("hash_of_maps", key_size=4, value_size=4, max_entries=2, inner=inner)
    outer[3] = inner
    assert outer[3] is inner and vm.resolve_map(outer.map_lookup_elem(struct.pack("<I", 3))) is inner
    with pytest.raises(MapError) as e:
        vm.create_map("array_of_maps", key_size=4, value_size=4, max_entries=2)
    assert e.value.errno == errno.EBADF
