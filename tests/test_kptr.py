"""Allocated objects stashed in map values: bpf_kptr_xchg and __kptr fields (issue 11;
verifier/kptr.py, runtime/kfuncs_graph.py Graphs.kptr_xchg, runtime/maps/btf_fields.py).

* tests/corpus/kptr_corpus.c runs in tests/test_corpus.py like every corpus program: verified,
  both engines equal, and equal to the kernel's BPF_PROG_TEST_RUN (retval and every map; user
  space reads __kptr fields as zeros in both).
* tests/corpus/kptr_fail.c: programs the kernel's verifier refuses (and edge cases it takes),
  with the kernel's verdict, errno and last log line recorded in :data:`EXPECTED` (Linux 6.18,
  from ``python tests/test_kptr.py regen``): pybpf's verifier must say the same, and a kernel
  test checks the records against the running kernel.
* bpf_obj_free_fields: a hash element's delete, an array element's update, dropping an object
  that holds a kptr, closing a map and closing the VM drop what the fields hold; user space
  can neither read nor plant a kptr.
* Hostile programs (unverified) never crash the process: a wild destination or a pointer that is
  no object is a MemoryAccessError or VMError in both engines (run in a child process).
"""
from __future__ import annotations

import os
import struct
import sys

import pytest

from support import (child_tests, kernel_verdict, refused_unverified, run_unverified_syscall,
                     verdict_record_tests)

HERE = os.path.dirname(os.path.abspath(__file__))
FAIL = os.path.join(HERE, "corpus", "kptr_fail.o")
CORPUS = os.path.join(HERE, "corpus", "kptr_corpus.o")

_PERCPU_TYPES = 'percpu_ptr_, percpu_rcu_ptr_, percpu_trusted_ptr_'
# program -> (verdict, errno, the kernel's last log line), recorded from Linux 6.18
EXPECTED = {
    'leak_old':
        ('reject', 'EINVAL', 'BPF_EXIT instruction in main prog would lead to reference leak'),
    'store_referenced':
        ('reject', 'EACCES', 'store to referenced kptr disallowed'),
    'xchg_wrong_type':
        ('reject', 'EACCES', 'invalid kptr access, R2 type=ptr_other_node expected=ptr_stash_node'),
    'xchg_not_a_kptr':
        ('reject', 'EACCES', "off=0 doesn't point to kptr"),
    'xchg_untrusted_field':
        ('reject', 'EACCES', "off=16 kptr isn't referenced kptr"),
    'use_after_stash':
        ('reject', 'EACCES', "R6 invalid mem access 'scalar'"),
    'xchg_maybe_null':
        ('reject', 'EFAULT', 'verifier bug: invalid PTR_TO_BTF_ID register for type match'),
    'xchg_value_maybe_null':
        ('accept', '', ''),
    'untrusted_write':
        ('reject', 'EACCES', 'only read is supported'),
    'untrusted_read':
        ('accept', '', ''),
    'drop_rcu_kptr':
        ('reject', 'EINVAL', 'R1 must be referenced or trusted'),
    'helper_reads_kptr':
        ('reject', 'EACCES', 'kptr cannot be accessed indirectly by helper'),
    'kptr_narrow_load':
        ('reject', 'EACCES', 'kptr access size must be BPF_DW'),
    'store_untrusted_ok':
        ('accept', '', ''),
    'xchg_null_ok':
        ('accept', '', ''),
    'rcu_ptr_after_unlock':
        ('reject', 'EACCES', 'only read is supported'),
    'percpu_direct_access':
        ('reject', 'EACCES', 'R0 is ptr_pcpu_count access percpu memory: off=0'),
    'percpu_obj_drop_mismatch':
        ('reject', 'EINVAL', 'arg#0 expected for bpf_percpu_obj_drop_impl()'),
    'percpu_too_big':
        ('reject', 'EINVAL', 'bpf_percpu_obj_new type size (520) is greater than 512'),
    'percpu_pointer_member':
        ('reject', 'EINVAL', 'bpf_percpu_obj_new type ID argument must be of a struct of scalars'),
    'percpu_special_field':
        ('reject', 'EINVAL', 'bpf_percpu_obj_new type ID argument must not contain special fields'),
    'percpu_this_cpu_owning':
        ('reject', 'EACCES', 'R1 type=percpu_ptr_ expected=' + _PERCPU_TYPES),
    'percpu_into_plain_kptr':
        ('reject', 'EACCES', 'invalid kptr access, R2 type=percpu_ptr_ expected=ptr_pcpu_count'),
    'percpu_use_after_xchg_outside_rcu':
        ('reject', 'EACCES', 'R1 type=scalar expected=' + _PERCPU_TYPES),
    'percpu_use_after_xchg_in_rcu':
        ('accept', '', ''),
    'percpu_untrusted_load':
        ('reject', 'EACCES', 'R1 type=untrusted_ptr_ expected=' + _PERCPU_TYPES),
    'rcu_graph_node_read':
        ('accept', '', ''),
    'bag_push_without_lock':
        ('reject', 'EINVAL', 'bpf_spin_lock at off=0 must be held for bpf_list_head'),
    'bag_push_other_lock':
        ('reject', 'EINVAL', 'bpf_spin_lock at off=0 must be held for bpf_list_head'),
    'bag_push_ok':
        ('accept', '', ''),
}


verdict_record_tests(globals(), FAIL, EXPECTED, "bpf", "kfunc:bpf_obj_new_impl")


def test_kptr_fields_are_found_in_the_value_btf():
    import pybpf
    obj = pybpf.load_elf(FAIL)
    fields = obj.maps["stash"].kptr_fields
    assert [(off, k.kind, k.type_name) for off, k in sorted(fields.items())] == [
        (8, "kptr", "stash_node"), (16, "kptr_untrusted", "stash_node"),
        (24, "kptr", "list_elem")]
    obj.vm.close()


def _args(*vals: int) -> bytearray:
    v = list(vals) + [0] * (8 - len(vals))
    return bytearray(struct.pack("<8i", *v) + bytes(32))


def _stashed(vm) -> int:
    return len(vm.graphs.heap.objects)


def test_user_space_reads_kptrs_as_zeros_and_cannot_plant_one():
    import pybpf
    obj = pybpf.load_elf(CORPUS)
    lp = obj.vm.load(obj.programs["kptr_stash_swap"], engine="interp")
    lp.run(ctx=_args(0, 7))
    arr = obj.maps["stash_array"]
    value = arr.sys_lookup(struct.pack("<I", 0))
    count, node, last, outer = struct.unpack("<qQqQ", value)
    assert (count, node, outer) == (1, 0, 0)           # the object is there, user space sees 0
    assert _stashed(obj.vm) == 1
    # an update writes the value but not its kptr fields: the stashed object is dropped (the
    # kernel's bpf_obj_free_fields) and the field holds NULL, not the bytes user space gave
    planted = struct.pack("<qQqQ", 5, 0x4141414141414141, 6, 0x4242424242424242)
    arr.sys_update(struct.pack("<I", 0), planted)
    assert _stashed(obj.vm) == 0
    base = arr._value_base(struct.pack("<I", 0))
    import ctypes
    assert ctypes.c_uint64.from_address(base + 8).value == 0
    assert ctypes.c_uint64.from_address(base + 24).value == 0
    assert struct.unpack("<qQqQ", arr.sys_lookup(struct.pack("<I", 0))) == (5, 0, 6, 0)
    # the next stash finds the slot empty (returns -1: no old object)
    assert lp.run(ctx=_args(0, 8)) & 0xFFFFFFFF == 0xFFFFFFFF
    obj.vm.close()
    assert _stashed(obj.vm) == 0


def test_deleting_a_hash_element_drops_its_stashed_object():
    import pybpf
    obj = pybpf.load_elf(CORPUS)
    vm = obj.vm
    lp = vm.load(obj.programs["kptr_hash_stash"], engine="interp")
    lp.run(ctx=_args(0, 1, 2, 0, 0, 1))      # element 1, a node; runs=1
    lp.run(ctx=_args(0, 1, 2, 0, 0, 2))      # element 2, a node; runs=2
    assert _stashed(vm) == 2
    obj.maps["stash_hash"].sys_delete(struct.pack("<I", 1))
    assert _stashed(vm) == 1
    lp.run(ctx=_args(0, 1, 2, 0, 0, 2))      # runs=3: the program deletes element 2 itself
    assert _stashed(vm) == 0
    vm.close()


def test_dropping_an_object_drops_what_it_holds_and_closing_frees_the_rest():
    import pybpf
    obj = pybpf.load_elf(CORPUS)
    vm = obj.vm
    lp = vm.load(obj.programs["kptr_nested"], engine="interp")
    lp.run(ctx=_args(0, 0, 0, 0, 3, 0, 9, 0))     # outer(3) holding node(9) stashed in slot 0
    assert _stashed(vm) == 2
    # the next run replaces the outer object and drops the old one with the node it holds
    assert lp.run(ctx=_args(0, 0, 0, 0, 4, 0, 5, 0)) == 30
    assert _stashed(vm) == 2
    lp2 = vm.load(obj.programs["kptr_stash_swap"], engine="interp")
    lp2.run(ctx=_args(1, 11))
    assert _stashed(vm) == 3
    lp.close()
    lp2.close()
    obj.maps["stash_array"].close()           # a closed map frees what its values hold
    vm.release_closed()
    assert _stashed(vm) == 0 and not vm.graphs.kptrs
    vm.close()


def test_per_cpu_objects_have_a_copy_per_possible_cpu_and_go_with_their_map():
    import pybpf
    from pybpf.runtime.kfuncs_graph import NR_CPUS
    obj = pybpf.load_elf(CORPUS)
    vm = obj.vm
    lp = vm.load(obj.programs["kptr_percpu_count"], engine="interp")
    assert lp.run(ctx=_args(0, 5)) == 0               # a new object, CPU 0's copy set up
    assert lp.run(ctx=_args(0, 6)) == 2011            # hits 2, sum 11 on CPU 0
    (o,) = vm.graphs.heap.objects.values()
    assert o.stride == 16 and o.size == 16 * NR_CPUS
    take = vm.load(obj.programs["kptr_percpu_take"], engine="interp")
    assert take.run(ctx=_args(0)) == 18               # CPU 0's sum + 7, then taken out
    assert not vm.graphs.heap.objects                 # (seen was odd) and dropped
    assert take.run(ctx=_args(0, 0, 9)) == 0xFFFFFFFF  # an empty slot gets a new object
    assert len(vm.graphs.heap.objects) == 1
    vm.close()
    assert not vm.graphs.heap.objects


def test_a_list_inside_a_stashed_object_goes_with_the_object():
    """kptr_bag: a bag object (its own lock and bpf_list_head) stashed in a map value holds
    items between runs; dropping the bag (the map's update here) drops what its list holds."""
    import pybpf
    obj = pybpf.load_elf(CORPUS)
    vm = obj.vm
    lp = vm.load(obj.programs["kptr_bag"], engine="interp")
    assert [lp.run(ctx=_args(v0, v1)) for v0, v1 in ((0, 4), (0, 5), (1, 6))] == [
        1000, 2000, 3004]                             # the third run pops the first item
    assert _stashed(vm) == 1 + 2                      # the bag and two items
    obj.maps["bag_array"].sys_update(struct.pack("<I", 0), bytes(8))
    assert _stashed(vm) == 0
    lp.run(ctx=_args(0, 7))
    assert _stashed(vm) == 2
    vm.close()
    assert _stashed(vm) == 0 and not vm.graphs.roots


# -- hostile programs, both engines, in a child process ---------------------------------------
_XCHG_WILD_DST = """
r1 = 4096
r2 = 0
call 194
exit
"""
_XCHG_STACK_OBJECT = """
r1 = r10
r1 += -8
r2 = r10
r2 += -16
call 194
exit
"""
_PER_CPU_OF_STACK = """
r1 = r10
r1 += -16
r2 = 0
call 153
exit
"""
_THIS_CPU_OF_STACK = """
r1 = r10
r1 += -16
call 154
exit
"""
_XCHG_STACK_DST = """
r1 = 0
*(u64 *)(r10 - 8) = r1
r1 = r10
r1 += -8
r2 = 0
call 194
exit
"""


def case_xchg_into_a_wild_address_interp():
    return refused_unverified(_XCHG_WILD_DST, "interp", "MemoryAccessError", "")


def case_xchg_into_a_wild_address_jit():
    return refused_unverified(_XCHG_WILD_DST, "jit", "MemoryAccessError", "")


def case_xchg_of_a_stack_pointer_interp():
    return refused_unverified(_XCHG_STACK_OBJECT, "interp", "VMError", "not an object bpf_obj_new returned")


def case_xchg_of_a_stack_pointer_jit():
    return refused_unverified(_XCHG_STACK_OBJECT, "jit", "VMError", "not an object bpf_obj_new returned")


def case_per_cpu_ptr_of_a_plain_object_interp():
    return refused_unverified(_PER_CPU_OF_STACK, "interp", "VMError", "not a per-CPU object")


def case_per_cpu_ptr_of_a_plain_object_jit():
    return refused_unverified(_PER_CPU_OF_STACK, "jit", "VMError", "not a per-CPU object")


def case_this_cpu_ptr_of_a_stack_pointer_both_engines():
    refused_unverified(_THIS_CPU_OF_STACK, "interp", "VMError", "not a per-CPU object")
    return refused_unverified(_THIS_CPU_OF_STACK, "jit", "VMError", "not a per-CPU object")


def case_xchg_on_the_stack_both_engines():
    # the destination is the program's own stack: allowed memory, nothing to free later
    assert run_unverified_syscall(_XCHG_STACK_DST, "interp") == 0
    assert run_unverified_syscall(_XCHG_STACK_DST, "jit") == 0
    return "ran"


child_tests(globals(), marks=[pytest.mark.jit])

if __name__ == "__main__" and len(sys.argv) >= 2 and sys.argv[1] == "regen":
    from pybpf.elf import parse_object
    for n in parse_object(FAIL).programs:       # the new EXPECTED, from the running kernel
        print(f"    {n!r}:\n        {kernel_verdict(FAIL, n)!r},")
