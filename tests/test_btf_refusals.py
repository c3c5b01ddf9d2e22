"""BTF the kernel refuses or takes differently, and the kptrs pybpf cannot run (issue 11;
pybpf/elf/btf_load.py, verifier/kptr.py's kernel types, runtime/maps/btf_fields.attach).

* Graph types owning each other in a cycle (tests/corpus/graph_cycle_{self,pair,ring}.c): Linux
  6.18 refuses the object's BTF (BPF_BTF_LOAD: ELOOP) and libbpf loads the object without it;
  pybpf says so in ``obj.btf_error`` and loads it the same way, so the programs get the kernel's
  verdicts ("bpf_obj_new/bpf_percpu_obj_new requires prog BTF", "map '.bss.R' has to have BTF in
  order to use bpf_spin_lock", a plain program accepted). A chain without a cycle
  (graph_owner_chain.c) loads with its BTF in both.
* A referenced ``__kptr`` to a kernel type without a destructor (kptr_kernel_nodtor.c, struct
  sock): BPF_BTF_LOAD fails with ENOENT, the same fallback, the same verdicts.
* kptrs the kernel takes and pybpf cannot run (kptr_kernel.c: ``struct task_struct __kptr *``,
  ``struct cgroup __kptr *``, ``struct sock __kptr_untrusted *``, in syscall, tc and xdp
  programs): pybpf refuses the map at load_elf, so the programs using it fail at vm.load with
  a message saying why, the others load (README: known limits). In an allocated object such a
  field is the kernel's (direct access refused as the kernel refuses it) and pybpf refuses
  bpf_kptr_xchg on it with a reason, where the kernel takes the exchange.
* A kptr to a declared-only struct is no kptr (btf_parse_fields fails, the map is created with
  no special fields): "R1 has no valid kptr" in both. ``__uptr`` outside task storage: both
  refuse the map with EOPNOTSUPP (kptr_uptr.c).
"""
from __future__ import annotations

import errno
import os

import pytest

from kernel_probe import require_kernel
from support import kernel_verdict, pybpf_verdict

HERE = os.path.dirname(os.path.abspath(__file__))


def _obj(name: str) -> str:
    return os.path.join(HERE, "corpus", name + ".o")


_ACCEPT = ("accept", "", "")
_NO_PROG_BTF = ("reject", "EINVAL", "bpf_obj_new/bpf_percpu_obj_new requires prog BTF")
# object -> the errno BPF_BTF_LOAD refuses its BTF with (None: loaded), from Linux 6.18.44
BTF_LOAD = {
    "graph_cycle_self": errno.ELOOP,
    "graph_cycle_pair": errno.ELOOP,
    "graph_cycle_ring": errno.ELOOP,
    "graph_owner_chain": None,
    "kptr_kernel_nodtor": errno.ENOENT,
    "kptr_kernel": None,
}
# (object, program) -> (verdict, errno, the kernel's last log line), libbpf's way of loading
EXPECTED = {
    ("graph_cycle_self", "cycle_self_new"): _NO_PROG_BTF,
    ("graph_cycle_self", "cycle_self_plain"): _ACCEPT,
    ("graph_cycle_pair", "cycle_pair_new"): _NO_PROG_BTF,
    ("graph_cycle_ring", "cycle_ring_new"): _NO_PROG_BTF,
    ("graph_cycle_ring", "cycle_ring_lock"):
        ("reject", "EINVAL", "map '.bss.R' has to have BTF in order to use bpf_spin_lock"),
    ("graph_owner_chain", "owner_ok_push"): _ACCEPT,
    ("kptr_kernel_nodtor", "nodtor_types_named"): _ACCEPT,
    ("kptr_kernel_nodtor", "nodtor_count"): _ACCEPT,
    ("kptr_kernel_nodtor", "nodtor_lock"):
        ("reject", "EINVAL", "map 'lock_map' has to have BTF in order to use bpf_spin_lock"),
    ("kptr_kernel_nodtor", "nodtor_obj_new"): _NO_PROG_BTF,
    ("kptr_kernel", "kernel_types_named"): _ACCEPT,
    ("kptr_kernel", "no_kptr_map"): _ACCEPT,
    ("kptr_kernel", "ghost_xchg"): ("reject", "EINVAL", "R1 has no valid kptr"),
    ("kptr_kernel", "ghost_count"): _ACCEPT,
    ("kptr_kernel", "holder_new"): _ACCEPT,
    ("kptr_kernel", "holder_store"): ("reject", "EACCES", "direct access to kptr is disallowed"),
}
# programs the kernel accepts and pybpf refuses at vm.load: their map holds a kernel kptr
KERNEL_ONLY = {"task_count": "task_map", "cgroup_count": "cgroup_map", "sock_count": "sock_map"}
_IDS = [f"{o}:{p}" for o, p in EXPECTED]


def test_every_program_of_the_objects_has_a_record():
    from pybpf.elf import parse_object
    for o in BTF_LOAD:
        names = set(parse_object(_obj(o)).programs)
        mine = {p for oo, p in EXPECTED if oo == o} | (
            set(KERNEL_ONLY) | {"holder_xchg"} if o == "kptr_kernel" else set())
        assert names == mine, o


@pytest.mark.parametrize("name", sorted(BTF_LOAD))
def test_pybpf_refuses_the_btf_the_kernel_refuses(name):
    import pybpf
    obj = pybpf.load_elf(_obj(name))
    try:
        want = BTF_LOAD[name]
        if want is None:
            assert obj.btf_error is None
            assert all(p.btf is not None for p in obj.programs.values())
        else:
            assert obj.btf_error.errno == want
            assert errno.errorcode[want] in str(obj.btf_error)
            # loaded as libbpf loads it: no program BTF, no map value BTF
            assert all(p.btf is None and not p.func_info for p in obj.programs.values())
            assert not any(getattr(m, "btf", False) for m in obj.maps.values())
    finally:
        obj.vm.close()


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(BTF_LOAD))
def test_the_kernel_refuses_the_same_btf(name):
    import kernel_bpf
    from pybpf.elf import parse_object
    require_kernel("bpf")
    try:
        os.close(kernel_bpf.load_btf(parse_object(_obj(name))))
        got = None
    except kernel_bpf.KernelError as e:
        got = e.errno
    assert got == BTF_LOAD[name]


@pytest.mark.parametrize("key", list(EXPECTED), ids=_IDS)
def test_pybpf_verifier_says_what_the_kernel_said(key):
    obj, prog = key
    assert pybpf_verdict(_obj(obj), prog) == EXPECTED[key]


@pytest.mark.kernel
@pytest.mark.parametrize("key", list(EXPECTED), ids=_IDS)
def test_records_match_the_running_kernel(key):
    require_kernel("bpf", "kfunc:bpf_obj_new_impl")
    obj, prog = key
    assert kernel_verdict(_obj(obj), prog) == EXPECTED[key]


@pytest.mark.parametrize("prog", sorted(KERNEL_ONLY))
def test_kernel_kptrs_fail_at_vm_load_with_a_reason(prog):
    import pybpf
    obj = pybpf.load_elf(_obj("kptr_kernel"))
    try:
        with pytest.raises(pybpf.ELFError, match=f"map '{KERNEL_ONLY[prog]}'.*a kernel type: "
                                                 "the kernel takes it, pybpf has no kernel "
                                                 "objects"):
            obj.vm.load(obj.programs[prog])
        assert obj.vm.load(obj.programs["no_kptr_map"]).run(ctx=bytearray(8)) == 3
    finally:
        obj.vm.close()


@pytest.mark.kernel
@pytest.mark.parametrize("prog", sorted(KERNEL_ONLY))
def test_the_kernel_takes_those_kptrs(prog):
    """The known limit: the kernel accepts these programs (kernel kptrs need kernel objects)."""
    require_kernel("bpf")
    assert kernel_verdict(_obj("kptr_kernel"), prog) == _ACCEPT


def test_a_kernel_kptr_in_an_object_is_refused_at_the_exchange():
    """An allocated object may hold a kernel kptr field (the kernel's own: direct access is
    refused as the kernel refuses it); bpf_kptr_xchg on it is pybpf's refusal, with a reason."""
    assert pybpf_verdict(_obj("kptr_kernel"), "holder_xchg") == (
        "reject", errno.errorcode[errno.EOPNOTSUPP],
        "off=8 is a kptr to struct task_struct, a kernel type: the kernel takes it, pybpf has "
        "no kernel objects")


@pytest.mark.kernel
def test_the_kernel_takes_that_exchange():
    """The kernel's verdict on the same program is about the reference it leaks at its exit:
    it accepted the exchange (the known limit above)."""
    require_kernel("bpf", "kfunc:bpf_obj_new_impl")
    assert kernel_verdict(_obj("kptr_kernel"), "holder_xchg") == (
        "reject", "EINVAL", "BPF_EXIT instruction in main prog would lead to reference leak")


def test_uptr_outside_task_storage_is_refused_with_eopnotsupp():
    import pybpf
    from pybpf.elf import parse_object
    from pybpf.runtime.maps.btf_fields import kptr_fields
    obj = parse_object(_obj("kptr_uptr"))
    with pytest.raises(pybpf.MapError) as e:
        kptr_fields(obj.btf, obj.map_defs["uptr_map"].btf_value_type)
    assert e.value.errno == errno.EOPNOTSUPP
    loaded = pybpf.load_elf(_obj("kptr_uptr"))
    try:
        with pytest.raises(pybpf.ELFError, match="uptr_map.*__uptr"):
            loaded.vm.load(loaded.programs["uptr_count"])
    finally:
        loaded.vm.close()


@pytest.mark.kernel
def test_the_kernel_refuses_uptr_maps_with_eopnotsupp():
    import kernel_bpf
    from pybpf.elf import parse_object
    require_kernel("bpf")
    obj = parse_object(_obj("kptr_uptr"))
    m = obj.map_defs["uptr_map"]
    btf_fd = kernel_bpf.load_btf(obj)
    try:
        with pytest.raises(kernel_bpf.KernelError) as e:
            os.close(kernel_bpf.create_map(m.type, m.key_size, m.value_size, m.max_entries,
                                           btf=(btf_fd, m.btf_key_type, m.btf_value_type)))
        assert e.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(btf_fd)


def test_a_long_ownership_chain_is_walked_without_recursion():
    """A hostile BTF: 5,000 types each owning the next, then the last owning the first."""
    from pybpf.elf.btf_load import ownership_cycle

    class Root:
        def __init__(self, value_name):
            self.value_name = value_name

    class FakeBTF:
        pass

    import pybpf.verifier.graph_fields as gf
    n = 5000
    structs = [type("T", (), {"id": i, "name": f"t{i}"})() for i in range(n)]
    real = gf.graph_roots
    gf.graph_roots = lambda btf, tid: {0: Root(f"t{(tid + 1) % n}")}
    try:
        cycle = ownership_cycle(FakeBTF(), structs)
        assert cycle is not None and len(cycle) == n + 1 and cycle[0] == cycle[-1]
        gf.graph_roots = lambda btf, tid: {0: Root(f"t{tid + 1}")} if tid + 1 < n else {}
        assert ownership_cycle(FakeBTF(), structs) is None
    finally:
        gf.graph_roots = real
