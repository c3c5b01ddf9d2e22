"""bpf_obj_new/bpf_obj_drop, linked lists and red-black trees (issue 11; verifier/graph.py,
runtime/kfuncs_graph.py, jit/graph.py).

* tests/corpus/graph_corpus.c runs in tests/test_corpus.py like every corpus program: verified,
  both engines equal, and equal to the kernel's BPF_PROG_TEST_RUN (retval and every map).
* ``rbtree_shape`` (graph_corpus.c) walks the tree with bpf_rbtree_root/left/right: its shape is
  the kernel's (runtime/rbtree.py follows lib/rbtree.c), checked on random inputs.
* tests/corpus/graph_fail.c: programs the kernel's verifier refuses (and edge cases it takes),
  with the kernel's verdict, errno and message recorded in :data:`EXPECTED` (Linux 6.18, from
  ``python tests/test_graph_kfuncs.py regen``): pybpf's verifier must say the same, and a
  kernel test checks the records against the running kernel.
* Hostile programs (unverified) never crash the process: bad objects, nodes and roots are
  VMErrors or MemoryAccessErrors in both engines (run in a child process); freed objects are
  out of the interpreter's reach; closing the VM frees what lists and trees hold.
"""
from __future__ import annotations

import os
import sys

import pytest

from kernel_probe import require_kernel
from support import (child_tests, kernel_verdict, refused_unverified, run_unverified_syscall,
                     verdict_record_tests)

HERE = os.path.dirname(os.path.abspath(__file__))
FAIL = os.path.join(HERE, "corpus", "graph_fail.o")
CORPUS = os.path.join(HERE, "corpus", "graph_corpus.o")

# program -> (verdict, errno, the kernel's last log line), recorded from Linux 6.18
EXPECTED = {
    'leak_obj':
        ('reject', 'EINVAL', 'BPF_EXIT instruction in main prog would lead to reference leak'),
    'no_null_check':
        ('reject', 'EACCES', "R0 invalid mem access 'ptr_or_null_'"),
    'push_without_lock':
        ('reject', 'EINVAL', 'bpf_spin_lock at off=16 must be held for bpf_list_head'),
    'use_after_unlock':
        ('reject', 'EACCES', "R6 invalid mem access 'scalar'"),
    'wrong_node_type':
        ('reject', 'EINVAL', 'operation on bpf_list_head expects arg#1 bpf_list_node at '
         'offset=8 in struct elem, but arg is at offset=0 in struct other'),
    'node_direct_access':
        ('reject', 'EACCES', 'direct access to bpf_list_node is disallowed'),
    'use_after_drop':
        ('reject', 'EACCES', "R6 invalid mem access 'scalar'"),
    'push_twice':
        ('reject', 'EINVAL', 'arg#1 expected pointer to allocated object'),
    'rbtree_remove_owning':
        ('accept', '', ''),
    'pop_leak':
        ('reject', 'EINVAL', 'BPF_EXIT instruction in main prog would lead to reference leak'),
    'head_direct_access':
        ('reject', 'EACCES', 'bpf_list_head cannot be accessed directly by load/store'),
    'obj_new_under_lock':
        ('reject', 'EINVAL', 'function calls are not allowed while holding a lock'),
    'beyond_object':
        ('reject', 'EACCES', 'access beyond struct elem at off 40 size 8'),
    'drop_map_value':
        ('reject', 'EINVAL', 'R1 must be referenced or trusted'),
    'rbtree_add_without_lock':
        ('reject', 'EINVAL', 'bpf_spin_lock at off=0 must be held for bpf_rb_root'),
    'rbtree_add_wrong_lock':
        ('reject', 'EINVAL', 'bpf_spin_lock at off=0 must be held for bpf_rb_root'),
    'rbtree_less_returns_two':
        ('accept', '', ''),
    'rbtree_less_calls_kfunc':
        ('reject', 'EINVAL', 'function calls are not allowed while holding a lock'),
    'rbtree_first_no_null_check':
        ('reject', 'EACCES', "R0 invalid mem access 'ptr_or_null_'"),
    'list_front_after_unlock':
        ('reject', 'EACCES', "R6 invalid mem access 'scalar'"),
    'drop_node_pointer':
        ('reject', 'EINVAL', 'R1 must have zero offset when passed to release func or trusted arg '
         'to kfunc'),
    'push_pop_drop_ok':
        ('accept', '', ''),
}


verdict_record_tests(globals(), FAIL, EXPECTED, "bpf", "kfunc:bpf_obj_new_impl")


def test_closing_the_vm_frees_what_lists_and_trees_hold():
    import pybpf
    obj = pybpf.load_elf(CORPUS)
    vm = obj.vm
    for name in ("list_push_pop", "list_map_value", "list_hash_push_pop",
                 "rbtree_add_first_remove"):
        lp = vm.load(obj.programs[name], engine="interp")
        for _ in range(3):
            lp.run(ctx=bytearray(64))
    held = len(vm.graphs.heap.objects)
    assert held >= 3 + 3 + 1 + 6          # what each program leaves in its list or tree
    vm.close()
    assert len(vm.graphs.heap.objects) == 0 and not vm.graphs.roots


def _args(v5: int) -> bytearray:
    import struct
    return bytearray(struct.pack("<8i", 0, 0, 0, 0, 0, v5, 0, 0) + bytes(32))


def test_deleting_or_updating_an_element_frees_what_its_list_holds():
    """bpf_obj_free_fields: a hash element's delete and an array element's update drop the
    objects their bpf_list_head held, as the kernel's check_and_free_fields does."""
    import struct
    import pybpf
    obj = pybpf.load_elf(CORPUS)
    vm = obj.vm
    lp = vm.load(obj.programs["list_hash_push_pop"], engine="interp")
    for v5 in (0, 1, 1):                 # one node left in element 0, two in element 1
        lp.run(ctx=_args(v5))
    objects = vm.graphs.heap.objects
    assert len(objects) == 3
    obj.maps["list_hash"].sys_delete(struct.pack("<I", 1))
    assert len(objects) == 1
    lp2 = vm.load(obj.programs["list_map_value"], engine="interp")
    lp2.run(ctx=_args(0))
    lp2.run(ctx=_args(0))
    assert len(objects) == 3
    obj.maps["list_array"].sys_update(struct.pack("<I", 0), bytes(24))
    assert len(objects) == 1
    vm.close()


def test_rbtree_keeps_the_red_black_rules_through_random_adds_and_erases():
    import random
    from pybpf.runtime.rbtree import RbTree
    rng = random.Random(11)
    tree, keys, weights = RbTree(), [], {}
    for step in range(3000):
        if keys and rng.random() < 0.4:
            k = keys.pop(rng.randrange(len(keys)))
            tree.erase(k)
        else:
            k = 8 * (step + 1)
            # descend as bpf_rbtree_add does, ordered by a random weight
            weight = rng.randrange(50)
            parent, right, cur = 0, False, tree.root
            while cur is not None:
                parent, right = cur.key, not weight < weights[cur.key]
                cur = cur.right if right else cur.left
            weights[k] = weight
            tree.link(k, parent, right)
            keys.append(k)
        tree.check()
    assert sorted(keys) == sorted(tree.nodes)
    first = tree.first()
    assert weights[first] == min(weights[k] for k in keys)


def _shape_runs(n: int, seed: int) -> list:
    import random
    import struct
    rng = random.Random(seed)
    return [bytearray(struct.pack("<8i", *(rng.randrange(256) for _ in range(8))) + bytes(32))
            for _ in range(n)]


@pytest.mark.kernel
def test_tree_shapes_match_the_kernel():
    """rbtree_shape (graph_corpus.c) on 16 random inputs: the kernel's and pybpf's trees have
    the same top three levels after every run (adds, removal of the first and of the root)."""
    require_kernel("bpf", "kfunc:bpf_rbtree_root")
    import struct
    import kernel_bpf
    import pybpf
    from pybpf.elf import parse_object
    runs = _shape_runs(16, 5)
    obj = parse_object(CORPUS)
    ko = kernel_bpf.KernelObject(obj)
    try:
        fd = ko.load(obj.programs["rbtree_shape"])
        var = obj.variables["shape_out"]
        theirs = []
        for ctx in runs:
            retval, _, _ = kernel_bpf.test_run(fd, ctx=bytes(ctx))
            theirs.append((retval, ko.global_bytes(var)))
    finally:
        ko.close()
    mine_obj = pybpf.load_elf(CORPUS)
    lp = mine_obj.vm.load(mine_obj.programs["rbtree_shape"], engine="interp")
    mine = []
    for ctx in runs:
        r0 = lp.run(ctx=bytearray(ctx))
        mine.append((r0 & 0xFFFFFFFF, bytes(mine_obj.variables["shape_out"].value)))
    mine_obj.vm.close()
    assert mine == theirs
    assert len({s for _, s in theirs}) > 8 and struct.unpack("<q", theirs[-1][1][:8])[0] >= 0


def test_threads_sharing_a_vm_keep_the_heap_and_lists_whole():
    """Four threads push and pop on one global list (under the program's bpf_spin_lock) and
    allocate and drop: every run leaves exactly one node."""
    import threading
    import pybpf
    obj = pybpf.load_elf(CORPUS)
    vm = obj.vm
    push = vm.load(obj.programs["list_push_pop"], engine="interp")
    churn = vm.load(obj.programs["obj_new_drop"], engine="interp")
    errors = []

    def worker():
        try:
            for _ in range(40):
                push.run(ctx=bytearray(64))
                churn.run(ctx=bytearray(64))
        except Exception as e:      # noqa: BLE001  (reported below)
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    roots = [r for r in vm.graphs.roots.values() if r.kind == "bpf_list_head"]
    assert len(roots) == 1 and len(roots[0].nodes) == 160
    assert len(vm.graphs.heap.objects) == 160
    vm.close()


def test_a_dropped_object_is_retired_not_gone():
    """Unverified, a read right after the drop reaches the retired object (its grace period
    has not passed: tests/test_freed_objects.py), whose bytes are its last ones; a read after
    the block was reused by a later run's object is that object's."""
    import pybpf
    obj = pybpf.load_elf(FAIL)
    lp = obj.vm.load(obj.programs["use_after_drop"], engine="interp", verify=False)
    assert lp.run(ctx=bytearray(64)) == 0       # bpf_obj_new zeroes (the kernel does not)
    heap = obj.vm.graphs.heap
    assert len(heap.retired) == 1 and not heap.objects
    obj.vm.close()


# -- hostile programs, both engines, in a child process ---------------------------------------
_DROP_STACK = """
r1 = r10
r1 += -8
r2 = 0
call bpf_obj_drop_impl
r0 = 0
exit
"""
_REFCOUNT_STACK = """
r1 = r10
r1 += -8
r2 = 0
call bpf_refcount_acquire_impl
exit
"""
_PUSH_STACK_NODE = """
r1 = r10
r1 += -16
r2 = r10
r2 += -64
r3 = 0
r4 = 0
call bpf_list_push_back_impl
exit
"""
_POP_WILD_HEAD = """
r1 = 4096
call bpf_list_pop_front
exit
"""
_FIRST_SCRIBBLED_ROOT = """
r1 = r10
r1 += -16
call bpf_rbtree_first
r1 = 12345
*(u64 *)(r10 - 16) = r1
r1 = r10
r1 += -16
call bpf_rbtree_first
exit
"""


def case_drop_of_a_stack_pointer_interp():
    return refused_unverified(_DROP_STACK, "interp", "VMError", "not an object bpf_obj_new returned")


def case_drop_of_a_stack_pointer_jit():
    return refused_unverified(_DROP_STACK, "jit", "VMError", "not an object bpf_obj_new returned")


def case_refcount_acquire_of_a_stack_pointer_interp():
    return refused_unverified(_REFCOUNT_STACK, "interp", "VMError", "not an object bpf_obj_new returned")


def case_refcount_acquire_of_a_stack_pointer_jit():
    return refused_unverified(_REFCOUNT_STACK, "jit", "VMError", "not an object bpf_obj_new returned")


def case_push_of_a_stack_node_interp():
    return refused_unverified(_PUSH_STACK_NODE, "interp", "VMError", "not a node inside a live object")


def case_push_of_a_stack_node_jit():
    return refused_unverified(_PUSH_STACK_NODE, "jit", "VMError", "not a node inside a live object")


def case_pop_from_a_wild_head_interp():
    return refused_unverified(_POP_WILD_HEAD, "interp", "MemoryAccessError", "")


def case_pop_from_a_wild_head_jit():
    return refused_unverified(_POP_WILD_HEAD, "jit", "MemoryAccessError", "")


def case_scribbled_root_reads_as_empty_both_engines():
    assert run_unverified_syscall(_FIRST_SCRIBBLED_ROOT, "interp") == 0
    assert run_unverified_syscall(_FIRST_SCRIBBLED_ROOT, "jit") == 0
    return "empty"


def case_use_after_drop_unverified_both_engines():
    import pybpf
    out = []
    for engine in ("interp", "jit"):
        obj = pybpf.load_elf(FAIL)
        lp = obj.vm.load(obj.programs["use_after_drop"], engine=engine, verify=False)
        out.append(lp.run(ctx=bytearray(64)))   # the retired object's bytes, in both
        obj.vm.close()
    assert out == [0, 0], out
    return out


child_tests(globals(), marks=[pytest.mark.jit])

if __name__ == "__main__" and len(sys.argv) >= 2 and sys.argv[1] == "regen":
    from pybpf.elf import parse_object
    for n in parse_object(FAIL).programs:       # the new EXPECTED, from the running kernel
        print(f"    {n!r}:\n        {kernel_verdict(FAIL, n)!r},")
