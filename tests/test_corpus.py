"""The corpus (tests/corpus: XDP, tc, socket filter, cgroup_skb and syscall programs in the
style of real networking code, built with clang-19) runs unchanged, the same in both engines
and, where bpf() is permitted, the same as in the running kernel through BPF_PROG_TEST_RUN with
the same maps: return value, packet out, context out and every map after every run
(tests/corpus_run.py). The engines run in a child process (JIT code can crash a process)."""
from __future__ import annotations

import errno
import sys

import pytest

import corpus_run
from kernel_probe import require_kernel
from support import assert_case_passed, child, run_child

PROGRAMS = corpus_run.programs()
NAMES = [name for _, name in PROGRAMS]


def _case(path: str, name: str):
    def case():
        interp = corpus_run.pybpf_records(path, name, "interp")
        jit = corpus_run.pybpf_records(path, name, "jit")
        diffs = corpus_run.compare(interp, jit, "interp", "jit")
        assert not diffs, "\n".join(diffs[:10])
        return len(interp)
    return case


CASES = {name: _case(path, name) for path, name in PROGRAMS}
# corpus_run.py --stats (the counts per program type and helper the issue asks for) on two
# programs: the kernel's runs when bpf() is permitted (here, in the child: JIT code runs)
STATS_PROGRAMS = [p for p in PROGRAMS if p[1] in ("xdp_vlan_push", "sk_lookup_count")]


def _stats():
    import kernel_bpf
    return corpus_run.run_stats(STATS_PROGRAMS, kernel=kernel_bpf.available())


CASES["stats"] = _stats


def test_the_corpus_is_at_least_40_programs_of_every_supported_packet_and_socket_type():
    from pybpf.elf import parse_object
    types = {}
    for path, name in PROGRAMS:
        t = parse_object(path).programs[name].prog_type
        types[t] = types.get(t, 0) + 1
    assert len(PROGRAMS) >= 40 and len(set(NAMES)) == len(NAMES)
    assert set(types) == {"xdp", "sched_cls", "socket_filter", "cgroup_skb", "syscall",
                          "flow_dissector", "raw_tracepoint", "sk_lookup", "cgroup_sock_addr",
                          "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit"}, types


@pytest.mark.parametrize("path,name", PROGRAMS, ids=NAMES)
def test_every_corpus_program_passes_pybpfs_verifier(path, name):
    """The corpus runs verified programs, as a user's default load does: every program the
    kernel accepts passes pybpf's verifier with its section's program and attach type, except
    the ones corpus_run.KNOWN_UNVERIFIED names (checked to still be refused, with
    PYBPF_VERIFIER_SLOW=1: each takes 10-30 s to reach the instruction limit)."""
    import os
    import pybpf
    obj = pybpf.load_elf(path)
    prog = obj.programs[name]
    if name in corpus_run.KNOWN_UNVERIFIED:
        if os.environ.get("PYBPF_VERIFIER_SLOW") != "1":
            pytest.skip("runs to the 1,000,000-instruction limit: PYBPF_VERIFIER_SLOW=1")
        with pytest.raises(pybpf.VerifierError, match="BPF program is too large"):
            obj.vm.verify(prog)
        return
    obj.vm.verify(prog)


@pytest.fixture(scope="module")
def child_results():
    return run_child(__file__, CASES)


@pytest.mark.jit
@pytest.mark.parametrize("name", NAMES)
def test_both_engines_agree_on_every_run(child_results, name):
    assert_case_passed(child_results, name)


@pytest.mark.jit
def test_stats_count_runs_per_program_type_and_helper(child_results):
    import kernel_bpf
    assert_case_passed(child_results, "stats")
    st = child_results[0]["stats"]["detail"]
    assert len(STATS_PROGRAMS) == 2 and set(st["types"]) == {"xdp", "sk_lookup"}
    xdp = st["types"]["xdp"]
    runs = len(corpus_run.inputs_for("xdp"))
    assert xdp["programs"] == 1 and xdp["runs"] == xdp["engines_equal"] == runs
    assert st["calls"]["bpf_xdp_adjust_head"]["runs"] == runs
    assert st["calls"]["bpf_map_lookup_elem"]["programs"] == 2
    assert st["calls"]["bpf_map_lookup_elem"]["runs"] == runs + st["types"]["sk_lookup"]["runs"]
    if kernel_bpf.available():
        assert xdp["kernel_equal"] == runs and xdp["no_kernel"] == 0


@pytest.mark.kernel
@pytest.mark.parametrize("path,name", PROGRAMS, ids=NAMES)
def test_interpreter_matches_the_kernel_on_every_run(path, name):
    from pybpf.elf import parse_object
    import kernel_bpf
    prog_type = parse_object(path).programs[name].prog_type
    require_kernel("bpf")
    mine = corpus_run.pybpf_records(path, name, "interp")
    try:
        theirs = corpus_run.kernel_records(path, name)
    except kernel_bpf.KernelError as e:
        if e.errno not in (errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524,
                           errno.EOPNOTSUPP):
            raise
        pytest.skip(f"kernel refuses BPF_PROG_TEST_RUN for {prog_type}: "
                    f"{kernel_bpf.errno_name(e.errno)}")
    diffs = corpus_run.compare(mine, theirs, "pybpf", "kernel")
    assert not diffs, "\n".join(diffs[:10])
    assert any("error" not in r for r in theirs)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
    print(__doc__)
