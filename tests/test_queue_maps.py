"""Queue and stack maps (runtime/maps/queue.py): kernel rules from Python, the syscall face, and
bpf_map_push/pop/peek_elem from BPF on the interpreter and (in a child process) the JIT.

Where bpf() is allowed, creation rules, random operation sequences and the BPF program's results
are also compared with the running kernel; those comparisons skip only when the kernel refuses
a feature they use (tests/kernel_probe.py).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import struct
from collections import deque

import pytest

import pybpf
from pybpf.errors import MapError
from pybpf.runtime.maps import MAP_TYPES, create_map
from pybpf.runtime.maps.base import MAP_TYPE_IDS
from pybpf.vm import VM
from pybpf.uapi import (BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC,
                        BPF_F_NUMA_NODE, BPF_F_RDONLY, BPF_F_RDONLY_PROG, BPF_F_WRONLY,
                        BPF_NOEXIST)

import kernel_bpf  # noqa: E402  (tests/ is on sys.path under pytest)
from kernel_probe import require_kernel  # noqa: E402
from support import run_code  # noqa: E402

M64 = (1 << 64) - 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
u64 = struct.Struct("<Q").pack
KINDS = ("queue", "stack")


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(MapError) as ei:
        fn(*args, **kwargs)
    return ei.value.errno


class Model:
    """Queue/stack semantics written independently of the ring: a deque, oldest first."""

    def __init__(self, kind: str, n: int):
        self.items, self.n, self.lifo = deque(), n, kind == "stack"

    def push(self, v, flags) -> int:
        if flags & BPF_NOEXIST or flags > BPF_EXIST:
            return -errno.EINVAL
        if len(self.items) == self.n:
            if not flags & BPF_EXIST:
                return -errno.E2BIG
            self.items.popleft()
        self.items.append(v)
        return 0

    def get(self, delete: bool):
        if not self.items:
            return -errno.ENOENT, None
        v = self.items[-1] if self.lifo else self.items[0]
        if delete:
            self.items.pop() if self.lifo else self.items.popleft()
        return 0, v

    def order(self) -> list:
        return list(reversed(self.items)) if self.lifo else list(self.items)


# --- registration and creation ----------------------------------------------------------------
def test_registered_under_the_kernel_type_ids():
    assert MAP_TYPE_IDS["queue"] == 22 and MAP_TYPE_IDS["stack"] == 23
    assert create_map(22, 0, 4, 1).type == "queue" and create_map(23, 0, 4, 1).type == "stack"
    assert set(MAP_TYPES) == set(MAP_TYPE_IDS)
    q = create_map("queue", 0, 12, 5)
    assert (q.header.map_type, q.header.value_size, q.header.max_entries) == (22, 12, 5)
    assert q.header.data == q.data_address and q.header.elem_size == 12


CREATE_CASES = [  # (key_size, value_size, max_entries, flags, errno or 0)
    (0, 8, 4, 0, 0), (4, 8, 4, 0, errno.EINVAL), (0, 0, 4, 0, errno.EINVAL),
    (0, 8, 0, 0, errno.EINVAL), (0, 8, 4, BPF_F_NO_PREALLOC, errno.EINVAL),
    (0, 8, 4, BPF_F_MMAPABLE, errno.EINVAL), (0, 8, 4, BPF_F_RDONLY, 0),
    (0, 8, 4, BPF_F_RDONLY_PROG, 0), (0, 8, 4, BPF_F_NUMA_NODE, 0),
    (0, 8, 4, BPF_F_RDONLY | BPF_F_WRONLY, errno.EINVAL), (0, (1 << 22) + 1, 1, 0, errno.E2BIG),
    (0, 1, 1, 0, 0),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ks,vs,n,flags,want", CREATE_CASES)
def test_creation_rules(kind, ks, vs, n, flags, want):
    if want:
        assert errno_of(create_map, kind, ks, vs, n, flags) == want
    else:
        assert create_map(kind, ks, vs, n, flags).max_entries == n


# --- semantics from Python ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_push_pop_peek_order_and_full(kind):
    m = create_map(kind, 0, 8, 3).typed(value_type=int)
    assert len(m) == 0 and list(m) == []
    assert errno_of(m.pop) == errno.ENOENT and errno_of(m.peek) == errno.ENOENT
    with pytest.raises(KeyError):                   # MapKeyError: empty is "not found"
        m.peek()
    for v in (1, 2, 3):
        m.push(v)
    assert len(m) == 3 and 2 in m and 7 not in m
    assert errno_of(m.push, 4) == errno.E2BIG and len(m) == 3       # full
    m.push(4, BPF_EXIST)                            # replaces the oldest (1)
    want = [2, 3, 4] if kind == "queue" else [4, 3, 2]
    assert list(m) == want and m.values() == want and m.peek() == want[0] and len(m) == 3
    assert [m.pop() for _ in range(3)] == want and len(m) == 0
    assert errno_of(m.pop) == errno.ENOENT


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flags", [BPF_NOEXIST, BPF_EXIST | BPF_NOEXIST, BPF_F_LOCK, 8, 1 << 40])
def test_push_refuses_unknown_flags(kind, flags):
    m = create_map(kind, 0, 4, 2)
    assert errno_of(m.push, b"abcd", flags) == errno.EINVAL and len(m) == 0
    assert m.map_push_elem(b"abcd", flags) == -errno.EINVAL


@pytest.mark.parametrize("kind", KINDS)
def test_random_sequences_match_the_model(kind):
    rnd = random.Random(kind)
    for n in (1, 2, 5):
        m, model = create_map(kind, 0, 8, n), Model(kind, n)
        for _ in range(300):
            op = rnd.choice(("push", "push", "pop", "peek"))
            if op == "push":
                v, flags = u64(rnd.getrandbits(64)), rnd.choice((BPF_ANY, BPF_EXIST, BPF_NOEXIST))
                assert m.map_push_elem(v, flags) == model.push(v, flags)
            else:
                got = m.map_pop_elem() if op == "pop" else m.map_peek_elem()
                err, v = model.get(op == "pop")
                assert got == (v if not err else err)
            assert len(m) == len(model.items) and m.values() == model.order()


def test_values_are_typed_and_sized():
    m = create_map("queue", 0, 4, 4, value_type=ctypes.c_int32)
    m.push(-5)
    m.push(ctypes.c_int32(7))
    assert m.peek().value == -5 and [v.value for v in m] == [-5, 7]
    assert errno_of(m.push, b"123") == errno.EINVAL           # wrong size
    assert errno_of(m.sys_update, None, b"12345") == errno.EINVAL


def test_clear_dump_and_show():
    m = create_map("stack", 0, 4, 3, name="st")
    for v in (b"\x01\x02\x03\x04", b"\xaa\xbb\xcc\xdd"):
        m.push(v)
    assert m.dump() == "value: aa bb cc dd\nvalue: 01 02 03 04\nFound 2 elements\n"
    assert "stack  name st" in m.show() and "key 0B  value 4B  max_entries 3" in m.show()
    m.clear()
    assert len(m) == 0 and m.dump() == "Found 0 elements\n"
    big = create_map("queue", 0, 20, 1)
    big.push(bytes(range(20)))
    assert big.dump().startswith("value:\n00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f\n10")


# --- the syscall face and the other ops -----------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_syscall_face(kind):
    m = create_map(kind, 0, 4, 2)
    m.sys_update(None, b"AAAA")
    m.sys_update(b"", b"BBBB", BPF_ANY)
    top = b"AAAA" if kind == "queue" else b"BBBB"
    assert m.sys_lookup(None) == top and m.lookup(b"") == top and len(m) == 2      # peek
    assert errno_of(m.sys_lookup, b"k") == errno.EINVAL      # a non-NULL key pointer
    assert errno_of(m.sys_update, b"k", b"CCCC") == errno.EINVAL
    assert errno_of(m.sys_lookup_and_delete, None, BPF_F_LOCK) == errno.EINVAL
    assert m.sys_lookup_and_delete() == top and len(m) == 1                          # pop
    assert errno_of(m.sys_delete, None) == errno.EINVAL
    assert errno_of(m.sys_get_next_key, None) == errno.EINVAL
    assert errno_of(m.keys) == errno.EINVAL and errno_of(m.items) == errno.EINVAL
    # the key-based ops, as a BPF program would reach them
    assert m.map_lookup_elem(b"") == 0 and m.map_update_elem(b"", b"CCCC", 0) == -errno.EINVAL
    assert m.map_delete_elem(b"") == -errno.EINVAL and len(m) == 1
    assert m.regions() == []                        # no value memory for programs to touch


def test_syscall_access_flags():
    ro = create_map("queue", 0, 4, 2, BPF_F_RDONLY)
    assert errno_of(ro.push, 1) == errno.EPERM and errno_of(ro.peek) == errno.ENOENT
    assert errno_of(ro.pop) == errno.EPERM           # pop needs read and write access
    wo = create_map("queue", 0, 4, 2, BPF_F_WRONLY)
    wo.push(1)
    assert errno_of(wo.peek) == errno.EPERM and errno_of(wo.pop) == errno.EPERM
    assert wo.map_pop_elem() == u64(1)[:4]           # programs are not limited by these flags
    fr = create_map("stack", 0, 4, 2)
    fr.push(3)
    fr.freeze()
    assert errno_of(fr.push, 4) == errno.EPERM and fr.peek() == u64(3)[:4]
    assert errno_of(fr.pop) == errno.EPERM


# --- from BPF ------------------------------------------------------------------------------------
PUSHES = [(10, 0), (20, 0), (30, 0), (40, 0), (50, 0), (60, BPF_EXIST), (70, BPF_NOEXIST),
          (80, BPF_F_LOCK)]
N_POPS = 5


def bpf_source(kind: str) -> str:
    """Pushes PUSHES into a 4-entry ``kind`` map, peeks, pops N_POPS times; every r0 and value
    read goes to consecutive u64 slots of out[0]."""
    lines = [f".map q type={kind} key=0 value=8 max_entries=4",
             ".map out type=array key=4 value=256 max_entries=1",
             "*(u32 *)(r10 - 4) = 0", "r1 = map[out] ll", "r2 = r10", "r2 += -4", "call 1",
             "if r0 != 0 goto +2", "r0 = 1", "exit", "r9 = r0"]
    slot = 0

    def store(reg):
        nonlocal slot
        lines.append(f"*(u64 *)(r9 + {8 * slot}) = {reg}")
        slot += 1
    for v, flags in PUSHES:
        lines += [f"r1 = {v}", "*(u64 *)(r10 - 16) = r1", "r1 = map[q] ll", "r2 = r10",
                  "r2 += -16", f"r3 = {flags}", "call 87"]
        store("r0")
    for hid in [89] + [88] * N_POPS:
        lines += ["r1 = 0x5a5a", "*(u64 *)(r10 - 16) = r1",      # a marker the helper overwrites
                  "r1 = map[q] ll", "r2 = r10", "r2 += -16", f"call {hid}"]
        store("r0")
        lines.append("if r0 != 0 goto +2")      # the buffer only on success (see the report)
        lines.append("r1 = *(u64 *)(r10 - 16)")
        store("r1")
    return "\n".join(lines + ["r0 = 0", "exit"])


def expected(kind: str) -> list[int]:
    """The slots bpf_source(kind) fills, from the model (slots a failed pop skips stay 0)."""
    model, out = Model(kind, 4), []
    for v, flags in PUSHES:
        out.append(model.push(v, flags) & M64)
    for delete in [False] + [True] * N_POPS:
        err, v = model.get(delete)
        out += [err & M64, v if not err else 0]
    return out


def run_in_vm(kind: str, engine: str) -> tuple[int, list[int], list[int]]:
    """(r0, the out slots, what is left in q) after one run on ``engine``."""
    vm = VM()
    lp = vm.load(pybpf.assemble(bpf_source(kind)), engine=engine)
    r0 = lp.run(mem=bytes(8))
    out = vm.maps["out"][0]
    n = len(expected(kind))
    return r0, list(struct.unpack(f"<{n}Q", out[:8 * n])), \
        [int.from_bytes(v, "little") for v in vm.maps["q"]]


@pytest.mark.parametrize("kind", KINDS)
def test_bpf_program_on_the_interpreter(kind):
    r0, slots, left = run_in_vm(kind, "interp")
    assert r0 == 0
    fails = [-e & M64 for e in (errno.E2BIG, errno.EINVAL)]
    assert slots[:len(PUSHES)] == [0, 0, 0, 0, fails[0], 0, fails[1], fails[1]]
    assert slots == expected(kind) and left == []


_CHILD = """
import json
from test_queue_maps import run_in_vm
print(json.dumps(run_in_vm({kind!r}, "jit")))
"""


@pytest.mark.jit
@pytest.mark.parametrize("kind", KINDS)
def test_bpf_program_on_the_jit(kind):
    """Native code calls the helpers through the Python-helper bridge; run in a child process."""
    p = run_code(_CHILD.format(kind=kind), timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    r0, slots, left = json.loads(p.stdout.strip().splitlines()[-1])
    assert (r0, slots, left) == (0, expected(kind), [])


# --- the running kernel as the reference ---------------------------------------------------------
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM = 1, 2, 3
BPF_MAP_GET_NEXT_KEY, BPF_MAP_LOOKUP_AND_DELETE_ELEM = 4, 21


@pytest.fixture
def kernel(request):
    """The kernel's answers for the test's map kind (skips when the kernel refuses the kind)."""
    require_kernel(f"map:{request.node.callspec.params['kind']}")
    return kernel_bpf


def kcreate(kind, ks, vs, n, flags=0) -> int:
    """A kernel map fd, or -errno."""
    return kernel_bpf.try_create_map(kind, ks, vs, n, flags)


def kop(cmd: int, fd: int, value: bytes | None, flags: int = 0, key: bytes | None = None):
    """One element command with a NULL key (unless ``key``): (0 or -errno, value buffer)."""
    return kernel_bpf.elem_op(cmd, fd, key, value, flags)


@pytest.mark.kernel
@pytest.mark.parametrize("kind", KINDS)
def test_creation_rules_match_the_kernel(kernel, kind):
    for ks, vs, n, flags, _ in CREATE_CASES:
        fd = kcreate(kind, ks, vs, n, flags)
        if fd >= 0:
            os.close(fd)
        try:
            create_map(kind, ks, vs, n, flags)
            ours = 0
        except MapError as e:
            ours = -e.errno
        assert ours == min(fd, 0), (kind, ks, vs, n, flags)


@pytest.mark.kernel
@pytest.mark.parametrize("kind", KINDS)
def test_random_syscall_sequences_match_the_kernel(kernel, kind):
    rnd = random.Random(f"kernel-{kind}")
    for n in (1, 3):
        fd = kcreate(kind, 0, 8, n)
        assert fd >= 0
        try:
            ours = create_map(kind, 0, 8, n)
            for _ in range(150):
                op = rnd.choice(("push", "push", "peek", "pop"))
                if op == "push":
                    v, flags = u64(rnd.getrandbits(64)), rnd.choice((0, 0, 1, 2, 2, 3, 4))
                    kr, _ = kop(BPF_MAP_UPDATE_ELEM, fd, v, flags)
                    try:
                        ours.sys_update(None, v, flags)
                        our = 0
                    except MapError as e:
                        our = -e.errno
                    assert our == kr, (op, flags)
                else:
                    cmd = BPF_MAP_LOOKUP_ELEM if op == "peek" else BPF_MAP_LOOKUP_AND_DELETE_ELEM
                    kr, kv = kop(cmd, fd, bytes(8))
                    fn = ours.sys_lookup if op == "peek" else ours.sys_lookup_and_delete
                    try:
                        got = (0, fn(None))
                    except MapError as e:
                        got = (-e.errno, None)
                    assert got == (kr, kv), op
            # the key-based commands and a non-NULL key, as the kernel answers them
            assert kop(BPF_MAP_DELETE_ELEM, fd, None)[0] == -errno_of(ours.sys_delete, None)
            assert kop(BPF_MAP_GET_NEXT_KEY, fd, bytes(8))[0] == \
                -errno_of(ours.sys_get_next_key, None)
            assert kop(BPF_MAP_LOOKUP_ELEM, fd, bytes(8), key=b"k")[0] == \
                -errno_of(ours.sys_lookup, b"k")
            assert kop(BPF_MAP_LOOKUP_AND_DELETE_ELEM, fd, bytes(8), flags=BPF_F_LOCK)[0] == \
                -errno_of(ours.sys_lookup_and_delete, None, BPF_F_LOCK)
        finally:
            os.close(fd)


def kernel_run(prog, maps: dict[str, int]) -> int:
    """Load ``prog`` (maps by fd_array index) as a socket filter and test-run it once."""
    pfd, log = kernel_bpf.prog_load(prog.to_bytes(), "socket_filter",
                                    fd_array=[maps[d.name] for d in prog.maps])
    assert pfd >= 0, f"kernel refused the program: {kernel_bpf.errno_name(-pfd)}\n{log}"
    try:
        return kernel_bpf.KernelObject.run(pfd, data=bytes(64))[0]
    finally:
        os.close(pfd)


@pytest.mark.kernel("map:array", "prog:socket_filter", "test_run:socket_filter")
@pytest.mark.parametrize("kind", KINDS)
def test_bpf_program_matches_the_kernel(kernel, kind):
    prog = pybpf.assemble(bpf_source(kind))
    fds = {d.name: kernel_bpf.create_map(d.type, d.key_size, d.value_size, d.max_entries)
           for d in prog.maps}
    try:
        assert kernel_run(prog, fds) == 0
        n = len(expected(kind))
        raw = kernel_bpf.lookup(fds["out"], bytes(4), 256)
        kslots = list(struct.unpack(f"<{n}Q", raw[:8 * n]))
        kleft = kop(BPF_MAP_LOOKUP_ELEM, fds["q"], bytes(8))[0]
    finally:
        for fd in fds.values():
            os.close(fd)
    r0, slots, left = run_in_vm(kind, "interp")
    assert (r0, slots) == (0, kslots) and kleft == -errno.ENOENT and left == []
