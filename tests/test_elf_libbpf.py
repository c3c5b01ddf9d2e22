"""libbpf's object rules in load_elf (tests/data/elf/libbpf_rules.c).

libbpf opens an object even when some of its programs cannot be loaded; the kernel then rejects
those programs one by one. pybpf does the same: a program whose section libbpf does not know,
or that uses a map pybpf cannot create, fails at ``vm.load`` with libbpf's message while the
other programs of the object load and run. ``SEC("?tc")`` is a sched_cls program that is not
autoloaded. ``__array(values, ...)`` fills a prog_array slot once the program named there loads.
"""
from __future__ import annotations

import os

import pytest

import pybpf
from pybpf.elf import parse_object
from pybpf.elf.sections import program_type
from pybpf.errors import ELFError
from support import in_child

OBJ = os.path.join(os.path.dirname(__file__), "data", "elf", "libbpf_rules.o")


def test_question_mark_section_is_its_program_type_and_not_autoloaded():
    obj = parse_object(OBJ)
    p = obj.programs["optional"]
    assert (p.section, p.prog_type, p.autoload) == ("tc", "sched_cls", False)
    assert obj.programs["entry"].autoload
    lp = pybpf.load_elf(OBJ).vm.load(obj.programs["optional"])
    assert lp.prog_type == "sched_cls"


def test_optional_program_runs_as_sched_cls():
    _optional_runs("interp")


@pytest.mark.jit
@in_child
def test_optional_program_runs_as_sched_cls_jit():
    _optional_runs("jit")


def _optional_runs(engine):
    obj = pybpf.load_elf(OBJ)
    lp = obj.vm.load(obj.programs["optional"], engine=engine)
    assert lp.run(data=bytes(60)) == 60          # skb->len of a tc context


def test_unknown_section_fails_that_program_at_load_with_libbpfs_message():
    obj = pybpf.load_elf(OBJ)
    with pytest.raises(ELFError, match=r"prog 'unknown_section': missing BPF prog type, "
                                       r"check ELF section name 'not_a_libbpf_section'"):
        obj.vm.load(obj.programs["unknown_section"])
    assert obj.vm.load(obj.programs["leaf"]).run(data=bytes(20)) == 7


def test_unsupported_map_fails_only_the_program_using_it():
    obj = pybpf.load_elf(OBJ)
    assert "socks" in obj.map_errors and "socks" not in obj.maps
    assert "hits" in obj.maps and "jumps" in obj.maps
    with pytest.raises(ELFError, match=r"map 'socks' \(sockmap\): failed to create: "
                                       r"unsupported map type"):
        obj.vm.load(obj.programs["uses_sockmap"])
    for name in ("leaf", "entry", "optional"):
        obj.vm.load(obj.programs[name]).close()


def test_prog_array_initial_values_are_filled_when_the_program_loads():
    _prog_array_slots("interp")


@pytest.mark.jit
@in_child
def test_prog_array_initial_values_are_filled_when_the_program_loads_jit():
    _prog_array_slots("jit")


def _prog_array_slots(engine):
    obj = pybpf.load_elf(OBJ)
    assert obj.map_defs["jumps"].init_slots == {2: "leaf"}
    assert obj.map_defs["jumps"].value_size == 4
    entry = obj.vm.load(obj.programs["entry"], engine=engine)
    assert entry.run(data=bytes(20)) == 1        # slot 2 still empty: the tail call falls through
    leaf = obj.vm.load(obj.programs["leaf"], engine=engine)
    assert obj.maps["jumps"][2] is leaf
    assert entry.run(data=bytes(20)) == 7
    assert int.from_bytes(obj.maps["hits"][1], "little") == 1


@pytest.mark.parametrize("section,expected", [
    ("xdp.frags", "xdp"), ("xdp/devmap", "xdp"), ("tcx/ingress", "sched_cls"),
    ("netkit/peer", "sched_cls"), ("cgroup_skb/egress", "cgroup_skb"),
    ("cgroup/skb", "cgroup_skb"), ("raw_tp/sched_switch", "raw_tracepoint"),
    ("raw_tracepoint", "raw_tracepoint"), ("flow_dissector", "flow_dissector"),
    ("cgroup/connect4", "cgroup_sock_addr"), ("cgroup/getsockname_unix", "cgroup_sock_addr"),
    ("cgroup/sock_create", "cgroup_sock"), ("sk_lookup", "sk_lookup"),
    ("lwt_xmit", "lwt_xmit"), ("sk_msg", "sk_msg"), ("sockops", "sock_ops"),
    ("perf_event", "perf_event"), ("socket", "socket_filter"), ("syscall", "syscall"),
    ("tp/syscalls/sys_enter_write", "tracepoint"), ("socketx", None), ("xdpx", None),
])
def test_section_names_as_libbpf_reads_them(section, expected):
    assert program_type(section)[0] == expected
