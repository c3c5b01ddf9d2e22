"""Kptrs in per-CPU map values (issue 11; runtime/maps/btf_fields.py, arraymap.c and hashtab.c
of Linux 6.18): percpu_array, percpu_hash and lru_percpu_hash values with ``__kptr`` and
``__percpu_kptr`` fields.

* tests/corpus/kptr_percpu.c's runnable programs run in tests/test_corpus.py like every corpus
  program (CPU 0, both engines, equal to the kernel's BPF_PROG_TEST_RUN with every map).
* Its ``?syscall`` programs and the runnable ones: pybpf's verifier says what Linux 6.18 says
  (:data:`EXPECTED`, from ``python tests/test_kptr_percpu.py regen``), checked against the
  running kernel too.
* Two CPUs (:data:`SCENARIO`): programs run on CPU 0 and CPU 1 (pybpf: two-CPU maps, ``map.cpu``;
  the kernel: the thread pinned to each CPU in turn) with user-space updates and deletes between
  them; every return value and every CPU's map values after every step are equal in the
  interpreter, the JIT and the kernel: a program reaches its CPU's copy, a program's update drops
  what its CPU's copy held, user space's update and an element's delete drop every CPU's.
* pybpf only (the kernel's frees are not visible from user space): the objects go with the
  update, delete, map close and VM close that drop them.
"""
from __future__ import annotations

import os
import struct
import sys

import pytest

from support import child_tests, verdict_record_tests

HERE = os.path.dirname(os.path.abspath(__file__))
OBJ = os.path.join(HERE, "corpus", "kptr_percpu.o")
PERCPU = ("percpu_array", "percpu_hash", "lru_percpu_hash")

_ACCEPT = ("accept", "", "")
# program -> (verdict, errno, the kernel's last log line), recorded from Linux 6.18
EXPECTED = {
    'pcpu_kptr_array_swap': _ACCEPT,
    'pcpu_kptr_array_update': _ACCEPT,
    'pcpu_kptr_hash_stash': _ACCEPT,
    'pcpu_kptr_lru_stash': _ACCEPT,
    'pcpu_kptr_lookup_percpu': _ACCEPT,
    'pcpu_kptr_rcu_read': _ACCEPT,
    'pcpu_kptr_percpu_obj': _ACCEPT,
    'pcpu_store_referenced':
        ('reject', 'EACCES', 'store to referenced kptr disallowed'),
    'pcpu_narrow_load':
        ('reject', 'EACCES', 'kptr access size must be BPF_DW'),
    'pcpu_helper_reads_kptr':
        ('reject', 'EACCES', 'kptr cannot be accessed indirectly by helper'),
    'pcpu_leak_old':
        ('reject', 'EINVAL', 'BPF_EXIT instruction in main prog would lead to reference leak'),
    'pcpu_plain_into_percpu_field':
        ('reject', 'EACCES', 'invalid kptr access, R2 type=ptr_ expected=ptr_pc_count'),
}

verdict_record_tests(globals(), OBJ, EXPECTED, "bpf", "kfunc:bpf_obj_new_impl")


def _args(*vals: int) -> bytes:
    v = list(vals) + [0] * (8 - len(vals))
    return struct.pack("<8i", *v) + bytes(32)


def _value(count: int, last: int) -> bytes:
    """A struct pc_value from user space; its kptr field holds junk the kernel never copies."""
    return struct.pack("<qQq", count, 0x4141414141414141, last)


def _key(k: int) -> bytes:
    return struct.pack("<I", k)


# (what, arguments): ("run", program, cpu, args) or ("update"/"delete", map, key, value per CPU)
SCENARIO = [
    ("run", "pcpu_kptr_array_swap", 0, _args(0, 5)),
    ("run", "pcpu_kptr_array_swap", 1, _args(0, 6)),
    ("run", "pcpu_kptr_array_swap", 0, _args(0, 7)),
    ("run", "pcpu_kptr_array_swap", 1, _args(0, 8)),
    ("run", "pcpu_kptr_array_update", 1, _args(1, 9, 0, 3)),    # drops CPU 1's node only
    ("run", "pcpu_kptr_array_swap", 0, _args(0, 10)),
    ("run", "pcpu_kptr_array_swap", 1, _args(0, 11)),
    ("update", "pc_array", 0, [_value(50, 1), _value(60, 2)]),   # drops both CPUs' nodes
    ("run", "pcpu_kptr_array_swap", 0, _args(0, 12)),
    ("run", "pcpu_kptr_array_swap", 1, _args(0, 13)),
    ("run", "pcpu_kptr_lookup_percpu", 1, _args(0, 14)),      # CPU 0's copy, from CPU 1
    ("run", "pcpu_kptr_array_swap", 0, _args(0, 15)),
    ("run", "pcpu_kptr_hash_stash", 0, _args(0, 3, 0, 0, 0, 1)),   # a new element
    ("run", "pcpu_kptr_hash_stash", 1, _args(0, 4, 0, 0, 0, 1)),   # CPU 1's copy starts empty
    ("run", "pcpu_kptr_hash_stash", 1, _args(0, 5, 0, 0, 0, 1)),   # 2nd on CPU 1: deleted
    ("run", "pcpu_kptr_hash_stash", 0, _args(0, 6, 0, 0, 0, 1)),   # CPU 0's node went too
    ("run", "pcpu_kptr_hash_stash", 1, _args(0, 7, 0, 0, 0, 1)),
    ("update", "pc_hash", 1, [_value(1, 0), _value(3, 0)]),      # in place, every CPU freed
    ("run", "pcpu_kptr_hash_stash", 0, _args(0, 8, 0, 0, 0, 1)),
    ("run", "pcpu_kptr_hash_stash", 1, _args(0, 9, 0, 0, 0, 1)),
    ("run", "pcpu_kptr_lru_stash", 1, _args(0, 10, 0, 0, 0, 2)),
    ("run", "pcpu_kptr_lru_stash", 0, _args(0, 11, 0, 0, 0, 2)),
    ("delete", "pc_lru", 2, None),
    ("run", "pcpu_kptr_lru_stash", 0, _args(0, 12, 0, 0, 0, 2)),
    ("run", "pcpu_kptr_lru_stash", 0, _args(0, 13, 0, 0, 0, 2)),
]
DUMPED = ("pc_array", "pc_hash", "pc_lru")


def _percpu_values(raw: bytes, stride: int, cpus: int) -> list[str]:
    return [raw[c * stride:(c + 1) * stride].hex() for c in range(cpus)]


def pybpf_scenario(engine: str) -> list:
    """The scenario's records in pybpf: maps with two CPUs, each run on its ``map.cpu``."""
    import pybpf

    class TwoCpus(pybpf.VM):
        def create_map(self, map_type, *a, **kw):
            if map_type in PERCPU:
                kw.setdefault("n_cpus", 2)
            return super().create_map(map_type, *a, **kw)

    obj = pybpf.load_elf(OBJ, vm=TwoCpus())
    loaded, out = {}, []
    try:
        for step in SCENARIO:
            if step[0] == "run":
                _, name, cpu, args = step
                if name not in loaded:
                    loaded[name] = obj.vm.load(obj.programs[name], engine=engine)
                for m in obj.maps.values():
                    if m.type in PERCPU:
                        m.cpu = cpu
                out.append(loaded[name].run(ctx=bytearray(args)) & 0xFFFFFFFF)
            elif step[0] == "update":
                _, mname, key, values = step
                obj.maps[mname].sys_update(_key(key), b"".join(v.ljust(24, b"\0")
                                                               for v in values))
            else:
                obj.maps[step[1]].sys_delete(_key(step[2]))
            out.append(_pybpf_dumps(obj))
        return out
    finally:
        obj.vm.close()


def _pybpf_dumps(obj) -> dict:
    d = {}
    for n in DUMPED:
        m = obj.maps[n]
        d[n] = {k.hex(): _percpu_values(m.sys_lookup(k), 24, 2) for k in map(bytes,
                                                                             m._raw_keys())}
    return d


def kernel_scenario() -> list:
    """The same in the running kernel: the thread pinned to each run's CPU."""
    import kernel_bpf
    from pybpf.elf import parse_object
    from pybpf.uapi import BPF_MAP_DELETE_ELEM
    obj = parse_object(OBJ)
    ko = kernel_bpf.KernelObject(obj)
    ncpu = kernel_bpf.possible_cpus()
    affinity = os.sched_getaffinity(0)
    fds, out = {}, []
    try:
        for step in SCENARIO:
            if step[0] == "run":
                _, name, cpu, args = step
                if name not in fds:
                    fds[name] = ko.load(obj.programs[name])
                os.sched_setaffinity(0, {cpu})
                out.append(ko.run(fds[name], ctx=args)[0])
            elif step[0] == "update":
                _, mname, key, values = step
                values = values + [values[-1]] * (ncpu - len(values))
                kernel_bpf.update(ko.fds[mname], _key(key), b"".join(values))
            else:
                kernel_bpf.elem_op(BPF_MAP_DELETE_ELEM, ko.fds[step[1]],
                                   _key(step[2]))
            out.append({n: {k.hex(): _percpu_values(v, 24, 2) for k, v in kernel_bpf.dump(
                ko.fds[n], 4, 24 * ncpu).items()} for n in DUMPED})
        return out
    finally:
        os.sched_setaffinity(0, affinity)
        ko.close()


def case_two_cpus_interpreter_and_jit_agree():
    interp = pybpf_scenario("interp")
    assert pybpf_scenario("jit") == interp
    return interp


child_tests(globals(), marks=[pytest.mark.jit])


@pytest.mark.kernel
def test_two_cpus_match_the_kernel():
    """Every return value and every CPU's values of the three maps after every step equal the
    kernel's (the JIT's equal the interpreter's in the child case above)."""
    import kernel_bpf
    from kernel_probe import require_kernel
    require_kernel("bpf", "kfunc:bpf_obj_new_impl")
    if kernel_bpf.possible_cpus() < 2 or not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    mine, theirs = pybpf_scenario("interp"), kernel_scenario()
    assert len(mine) == len(theirs) == 2 * len(SCENARIO) - sum(s[0] != "run" for s in SCENARIO)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        assert a == b, (i, a, b)


def test_the_scenario_reaches_each_cpus_copy_and_frees_on_update_and_delete():
    """The scenario's return values mean what the comments say (so the kernel test above
    compares runs that exercise each path): figures from the program sources."""
    r = [x if x < 1 << 31 else x - (1 << 32)
         for x in pybpf_scenario("interp") if isinstance(x, int)]
    assert r[:4] == [-1, -1, 500, 600]        # each CPU's copy: node 5 (CPU 0), 6 (CPU 1)
    assert r[4] == 0                          # the program's update dropped CPU 1's node 8
    assert r[5:7] == [701, 900]               # but not CPU 0's node 7; CPU 1 has node 9
    assert r[7:9] == [-1, -1]                 # user space's update dropped both CPUs' nodes
    assert r[9:11] == [12 + 50, 1407]         # CPU 0's node 12 (count 50), taken from CPU 1
    assert r[11:14] == [0, 0, 1004 + 5000]    # a new element; CPU 1's copy starts empty; the
    assert r[14:16] == [0, 0]                 # delete on CPU 1 dropped CPU 0's node 3 too
    assert r[16:18] == [5000, 0]              # user space's update dropped CPU 0's node 6
    assert r[18:22] == [0, 0, 0, 1012 + 5000]  # deleting LRU key 2 dropped nodes 10 and 11


def _heap(vm) -> int:
    return len(vm.graphs.heap.objects)


def test_objects_go_with_the_updates_deletes_and_closes_that_drop_them():
    import pybpf
    obj = pybpf.load_elf(OBJ)
    vm = obj.vm
    swap = vm.load(obj.programs["pcpu_kptr_array_swap"], engine="interp")
    stash = vm.load(obj.programs["pcpu_kptr_hash_stash"], engine="interp")
    swap.run(ctx=bytearray(_args(0, 1)))
    swap.run(ctx=bytearray(_args(1, 2)))
    stash.run(ctx=bytearray(_args(0, 3, 0, 0, 0, 1)))
    assert _heap(vm) == 3
    arr = obj.maps["pc_array"]
    # user space reads the field as zeros, and its update drops the object (not the bytes given)
    count, node, last = struct.unpack("<qQq", arr.sys_lookup(_key(0)))
    assert (count, node) == (1, 0)
    arr.sys_update(_key(0), _value(7, 0))
    assert _heap(vm) == 2
    obj.maps["pc_hash"].sys_delete(_key(1))
    assert _heap(vm) == 1
    arr.clear()                                  # a cleared array drops its objects too
    assert _heap(vm) == 0
    swap.run(ctx=bytearray(_args(1, 2)))
    stash.run(ctx=bytearray(_args(0, 3, 0, 0, 0, 1)))
    assert _heap(vm) == 2
    swap.close()
    stash.close()
    arr.close()
    vm.release_closed()
    assert _heap(vm) == 1                        # a closed map's objects are dropped
    vm.close()
    assert _heap(vm) == 0 and not vm.graphs.kptrs


if __name__ == "__main__" and len(sys.argv) >= 2 and sys.argv[1] == "regen":
    from pybpf.elf import parse_object
    from support import kernel_verdict
    for n in parse_object(OBJ).programs:       # the new EXPECTED, from the running kernel
        print(f"    {n!r}:\n        {kernel_verdict(OBJ, n)!r},")
