"""Hash maps walk in the kernel's order (runtime/maps/hash.py): the kernel's jhash with the seed
0 (BPF_F_ZERO_SEED), ``max_entries`` rounded up to a power of two buckets, new elements (and the
new element of an updated key) at the head of their bucket, walks bucket by bucket. For
BPF_F_ZERO_SEED maps that is the running kernel's order, compared here after the same updates
and deletions: BPF_MAP_GET_NEXT_KEY from user space (hash and percpu_hash, keys of 4 to 40
bytes: whole words and not, one and several jhash blocks) and bpf_for_each_map_elem in both
engines (the JIT in a child process). The kernel's hash itself is checked through the order,
and pybpf's against jhash's published value for the empty key."""
from __future__ import annotations

import os
import random
import struct
import sys

import pytest

import pybpf
from kernel_probe import require_kernel
from pybpf.uapi import BPF_MAP_DELETE_ELEM
from support import asm, assert_case_passed, child, run_child

BPF_F_ZERO_SEED = 1 << 6


def _ops(key_size: int, max_entries: int, seed: int) -> list:
    """A reproducible mix of inserts, updates of present keys and deletions."""
    rng = random.Random(seed)
    keys = [rng.randbytes(key_size) for _ in range(max_entries)]
    ops, present = [], []
    for k in keys:
        ops.append(("update", k))
        present.append(k)
    for _ in range(max_entries):
        k = rng.choice(keys)
        if k in present and rng.random() < 0.4:
            ops.append(("delete", k))
            present.remove(k)
        else:
            ops.append(("update", k))
            if k not in present:
                present.append(k)
    return ops


def _pybpf_order(mtype: str, key_size: int, max_entries: int, ops: list) -> list:
    m = pybpf.VM().create_map(mtype, key_size, 8, max_entries, flags=BPF_F_ZERO_SEED)
    value = struct.pack("<Q", 7) * (m.n_cpus if mtype.startswith("percpu") else 1)
    for op, k in ops:
        m.sys_update(k, value) if op == "update" else m.sys_delete(k)
    order, key = [], None
    while True:
        try:
            key = m.sys_get_next_key(key)
        except pybpf.MapError:
            return order
        order.append(key)


def _kernel_order(mtype: str, key_size: int, max_entries: int, ops: list) -> list:
    import kernel_bpf
    fd = kernel_bpf.create_map(mtype, key_size, 8, max_entries, BPF_F_ZERO_SEED)
    try:
        n = 1
        if mtype.startswith("percpu"):      # a value per possible CPU
            possible = open("/sys/devices/system/cpu/possible").read().strip()
            n = int(possible.split("-")[-1]) + 1
        for op, k in ops:
            if op == "update":
                kernel_bpf.update(fd, k, struct.pack("<Q", 7) * n)
            else:
                assert kernel_bpf.elem_op(BPF_MAP_DELETE_ELEM, fd, k)[0] == 0
        return list(kernel_bpf.dump(fd, key_size, 8 * n))
    finally:
        os.close(fd)


SHAPES = [("hash", 4, 8), ("hash", 4, 100), ("hash", 6, 13), ("hash", 8, 64), ("hash", 13, 20),
          ("hash", 24, 33), ("hash", 40, 50), ("percpu_hash", 4, 30), ("percpu_hash", 12, 17)]


def test_jhash_is_lookup3():
    from pybpf.runtime.maps.jhash import jhash
    assert jhash(b"") == 0xDEADBEEF             # no block, no tail: the initial value
    assert jhash(b"", 1) == 0xDEADBEF0
    # jhash2 over words is jhash over their little-endian bytes (htab_map_hash uses either)
    assert jhash(struct.pack("<3I", 1, 2, 3)) != jhash(struct.pack(">3I", 1, 2, 3))


@pytest.mark.kernel
@pytest.mark.parametrize("mtype,key_size,max_entries", SHAPES,
                         ids=[f"{t}-k{k}-n{n}" for t, k, n in SHAPES])
def test_get_next_key_order_is_the_kernels_for_zero_seed_maps(mtype, key_size, max_entries):
    require_kernel("bpf")
    ops = _ops(key_size, max_entries, seed=key_size * 1000 + max_entries)
    mine = _pybpf_order(mtype, key_size, max_entries, ops)
    theirs = _kernel_order(mtype, key_size, max_entries, ops)
    assert sorted(mine) == sorted(theirs) and len(mine) > 1
    assert mine == theirs
    assert mine != sorted(mine)         # a hash order, not the keys sorted


# --- bpf_for_each_map_elem: the callback records the keys it is given, in order ----------------
FOREACH = """
.map h type=hash key=4 value=8 max_entries=40 flags=64
.map seen type=array key=4 value=4 max_entries=41
*(u64 *)(r10 - 8) = 0
r1 = map[h] ll
r2 = func(cb) ll
r3 = r10
r3 += -8
r4 = 0
call bpf_for_each_map_elem
exit
cb:
r6 = r2
r7 = r3
r8 = r4
r1 = *(u64 *)(r8 + 0)
r1 += 1
*(u64 *)(r8 + 0) = r1
*(u32 *)(r10 - 4) = r1
r1 = map[seen] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
if r0 == 0 goto out
r1 = *(u32 *)(r6 + 0)
*(u32 *)(r0 + 0) = r1
out:
r0 = 0
exit
"""
FOREACH_KEYS = [(k * 2654435761) & 0xFFFFFFFF for k in range(1, 31)]
FOREACH_DELETED = FOREACH_KEYS[3::4]


def _foreach_pybpf(engine: str) -> tuple[int, list]:
    vm = pybpf.VM()
    lp = vm.load(asm(FOREACH), prog_type="syscall", engine=engine)
    h, seen = lp.maps["h"], lp.maps["seen"]
    for k in FOREACH_KEYS + FOREACH_KEYS[::5]:          # some keys updated again: to the head
        h.sys_update(struct.pack("<I", k), struct.pack("<Q", k))
    for k in FOREACH_DELETED:
        h.sys_delete(struct.pack("<I", k))
    n = lp.run(ctx=bytearray(8))
    return n, [struct.unpack("<I", seen.sys_lookup(struct.pack("<I", i)))[0]
               for i in range(1, n + 1)]


def _foreach_kernel() -> tuple[int, list]:
    import kernel_bpf
    import kernel_verifier as kv
    prog = asm(FOREACH)
    fds = kv.create_maps(prog)
    try:
        h, seen = fds
        for k in FOREACH_KEYS + FOREACH_KEYS[::5]:
            kernel_bpf.update(h, struct.pack("<I", k), struct.pack("<Q", k))
        for k in FOREACH_DELETED:
            assert kernel_bpf.elem_op(BPF_MAP_DELETE_ELEM, h,
                                      struct.pack("<I", k))[0] == 0
        pfd = kv._load(prog, "syscall", fds, 0, None)
        n, _, _ = kernel_bpf.test_run(pfd, ctx=bytes(8))
        os.close(pfd)
        return n, [struct.unpack("<I", kernel_bpf.lookup(seen, struct.pack("<I", i), 4))[0]
                   for i in range(1, n + 1)]
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.kernel
def test_for_each_map_elem_visits_in_the_kernels_order():
    require_kernel("bpf")
    mine, theirs = _foreach_pybpf("interp"), _foreach_kernel()
    assert mine[0] == len(FOREACH_KEYS) - len(FOREACH_DELETED)
    assert mine == theirs


def case_for_each_jit():
    assert _foreach_pybpf("jit") == _foreach_pybpf("interp")
    return _foreach_pybpf("jit")[0]


CHILD = {"for_each_jit": case_for_each_jit}


@pytest.fixture(scope="module")
def child_results():
    return run_child(__file__, CHILD)


@pytest.mark.jit
def test_the_jit_visits_in_the_same_order(child_results):
    assert_case_passed(child_results, "for_each_jit")
    assert child_results[0]["for_each_jit"]["detail"] == len(FOREACH_KEYS) - len(FOREACH_DELETED)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CHILD, sys.argv[2:] or list(CHILD)))
