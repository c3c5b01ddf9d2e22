"""Allocated objects used after bpf_obj_drop, and bpf_per_cpu_ptr past the last CPU (issue 11;
tests/data/elf/freed_objects.c, built by tests/data/elf/build.sh).

Which programs reach a freed object, by the kernel's verdicts (Linux 6.18 loads all of these):
an untrusted kptr load (outside an RCU section in a sleepable program) read after the object is
taken out and dropped; an RCU-protected kptr load (non-sleepable program) read after the same;
a per-CPU object's copy through the RCU pointer bpf_kptr_xchg leaves, written and read after the
object is taken out and dropped; an untrusted pointer kept in a __kptr_untrusted field, read in
later runs after the object was dropped. The kernel frees through bpf_mem_free_rcu, so the memory keeps
its bytes and is not reused while the program runs: the reads see the object's last contents
(a new object allocated meanwhile gets other memory). pybpf retires a dropped object
(runtime/kfuncs_graph.py ObjHeap): accessible, unchanged, its block reused only after a grace
period (runtime/grace.py settled), so the interpreter's checks admit these accesses and the JIT
reads the same bytes. (bpf_rdonly_cast pointers reach no object in pybpf: its verifier refuses
loads through them, having no kernel BTF.)

bpf_per_cpu_ptr(p, cpu) is NULL for cpu >= nr_cpu_ids, as the kernel's; the verifier still types
the copy as never NULL, so a program may dereference it (the kernel then faults: that program is
only loaded in the kernel, never run past the last CPU): both engines stop with a
MemoryAccessError at the access, the JIT through its NULL check of BTF object accesses.
"""
from __future__ import annotations

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from support import child_tests, frame  # noqa: E402

OBJ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "elf",
                   "freed_objects.o")
TIERS = ("baseline", "quick", "O2")
CPUS = (0, 1, 2, 3, 1000, -1)       # -1: 0xffffffff as the u32 cpu
RUNS = 3


def _args(*vals: int) -> bytearray:
    return bytearray(struct.pack("<8i", *(list(vals) + [0] * (8 - len(vals)))))


def _nr_cpus() -> int:
    from pybpf.runtime.kfuncs_graph import NR_CPUS
    return NR_CPUS


# program -> the inputs of its runs (one set of maps, run after run)
def _inputs(name: str) -> list[dict]:
    if name == "rcu_after_drop":
        return [{"data": frame(0x0800, payload=bytes(8 + i))} for i in range(RUNS)]
    if name == "per_cpu_ptr_of_cpu":
        return [{"ctx": _args(c)} for c in CPUS]
    if name == "per_cpu_ptr_deref":
        return [{"ctx": _args(c, 7 + c)} for c in range(_nr_cpus())]
    if name == "weak_across_runs":      # stash, read, drop, read, churn, stash another, read
        return [{"ctx": _args(*v)} for v in ((1, 5, 6), (4,), (2,), (4,), (16, 9, 9),
                                             (8, 7, 8), (4,))]
    return [{"ctx": _args(5 + i, 6 * i)} for i in range(RUNS)]


PROGRAMS = ("untrusted_after_drop", "rcu_after_drop", "percpu_after_drop", "weak_across_runs",
            "per_cpu_ptr_of_cpu", "per_cpu_ptr_deref")


def _key(name: str, r0: int) -> int:
    """What is compared: r0's low 32 bits (BPF_PROG_TEST_RUN's retval); for the copy's address
    only whether it is NULL."""
    r0 &= 0xFFFFFFFF
    return int(r0 != 0) if name == "per_cpu_ptr_of_cpu" else r0


def pybpf_results(name: str, engine: str = "interp", tier: str = "auto") -> list[int]:
    import pybpf
    obj = pybpf.load_elf(OBJ)
    kw = {"tier": tier} if engine == "jit" else {}
    lp = obj.vm.load(obj.programs[name], engine=engine, **kw)
    if engine == "jit" and tier != "auto":
        assert lp._jit.tier == tier, (lp._jit.tier, tier)       # no fallback to another tier
    out = [_key(name, lp.run(**inp)) for inp in _inputs(name)]
    obj.vm.close()
    return out


def kernel_results(name: str) -> list[int]:
    import kernel_bpf
    from pybpf.elf import parse_object
    obj = parse_object(OBJ)
    ko = kernel_bpf.KernelObject(obj)
    try:
        fd = ko.load(obj.programs[name])
        out = []
        for inp in _inputs(name):
            r0, _ = ko.run(fd, ctx=bytes(inp["ctx"]) if "ctx" in inp else None,
                           data=inp.get("data"))
            out.append(_key(name, r0))
        return out
    finally:
        ko.close()


@pytest.mark.parametrize("name", PROGRAMS)
def test_the_kernel_agrees(name):
    from kernel_probe import require_kernel
    require_kernel("bpf", "btf", "kfunc:bpf_percpu_obj_new_impl", "test_run:syscall",
                   "test_run:sched_cls")
    assert pybpf_results(name) == kernel_results(name)


def test_the_reads_see_the_last_contents():
    """The interpreter's answers, spelled out (the kernel's, by test_the_kernel_agrees)."""
    assert pybpf_results("untrusted_after_drop") == [5000 + 6 * i + 1000 * i for i in range(3)]
    # skb->len * 1000 + skb->protocol (0x0800, big-endian: 8); not the new object's 11012
    assert pybpf_results("rcu_after_drop") == [(42 + i) * 1000 + 8 for i in range(3)]
    assert pybpf_results("percpu_after_drop") == [(6 + i) * 1000 + 6 * i for i in range(3)]
    n = _nr_cpus()
    assert pybpf_results("per_cpu_ptr_of_cpu") == [int(c & 0xFFFFFFFF < n) for c in CPUS]
    # a pointer kept in a __kptr_untrusted field reads the dropped node, also after other
    # nodes came and went (fresh memory first)
    assert pybpf_results("weak_across_runs") == [1, 5006, 2, 5006, 16, 8, 5006]


def test_a_retired_block_waits_for_its_grace_period():
    """A full heap reuses a retired block only once the run that dropped it has ended (the
    RCU read section of bpf_mem_free_rcu), and never a live one."""
    from pybpf.runtime import grace
    from pybpf.runtime.kfuncs_graph import ObjHeap
    heap = ObjHeap(size=32)
    a, b = heap.alloc(16), heap.alloc(16)
    assert a and b and heap.alloc(16) == 0              # full
    with grace.reading():                               # one run: drops a, wants memory
        heap.free(heap.objects[a])
        assert heap.allow(a, 16) and heap.find(a) is None  # retired: accessible, not live
        assert heap.alloc(16) == 0                      # not in the run that dropped it
    assert heap.alloc(16) == a                          # the next run may have it
    assert a in heap.objects and not heap.retired
    heap.free(heap.objects[b])
    assert heap.alloc(16) == b and heap.alloc(16) == 0


# -- both engines, every JIT tier (child process: JIT code that goes wrong can fault) ------------

def _engines_agree(name: str) -> dict:
    os.environ["PYBPF_JIT_CACHE"] = "off"       # each tier's own code
    want = pybpf_results(name)
    equal = {}
    for tier in TIERS:
        got = pybpf_results(name, "jit", tier)
        assert got == want, (tier, got, want)
        equal[tier] = len(got)
    return equal


def case_untrusted_after_drop():
    return _engines_agree("untrusted_after_drop")


def case_rcu_after_drop():
    return _engines_agree("rcu_after_drop")


def case_percpu_after_drop():
    return _engines_agree("percpu_after_drop")


def case_weak_across_runs():
    return _engines_agree("weak_across_runs")


def case_per_cpu_ptr_of_cpu():
    return _engines_agree("per_cpu_ptr_of_cpu")


def case_per_cpu_ptr_deref():
    return _engines_agree("per_cpu_ptr_deref")


def case_a_null_copy_dereferenced_is_a_memory_access_error():
    """Past the last CPU the copy is NULL: the store through it stops the run with the same
    MemoryAccessError in the interpreter and every JIT tier (the JIT would fault without its
    NULL check)."""
    import pybpf
    os.environ["PYBPF_JIT_CACHE"] = "off"
    seen = {}
    for engine, tier in [("interp", "-")] + [("jit", t) for t in TIERS]:
        obj = pybpf.load_elf(OBJ)
        kw = {"tier": tier} if engine == "jit" else {}
        lp = obj.vm.load(obj.programs["per_cpu_ptr_deref"], engine=engine, **kw)
        for cpu in (_nr_cpus(), 1000, -1):
            with pytest.raises(pybpf.MemoryAccessError) as err:
                lp.run(ctx=_args(cpu, 1))
            e = err.value
            seen.setdefault(tier, set()).add((e.pc, e.address, e.size, e.kind))
        # and the program still runs on the CPUs that exist
        assert lp.run(ctx=_args(0, 1)) == 5
        obj.vm.close()
    assert len({frozenset(s) for s in seen.values()}) == 1, seen
    (pc, address, size, kind), = seen["-"]
    assert (address, size, kind) == (8, 8, "write"), seen     # c->sum of a NULL c
    return sorted(seen["-"])


child_tests(globals(), marks=[pytest.mark.jit])
