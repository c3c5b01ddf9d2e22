"""Tail calls from subprograms run to the kernel's limit in both engines
(tests/data/elf/tail_calls.c): each tail call replaces the calling subprogram's frame, so the
chain of frames grows by one program per tail call, and the kernel takes 33 of them (a counter
incremented before each ends at 34); the last bpf_tail_call falls through and every frame
returns. Checked against the running kernel through BPF_PROG_TEST_RUN where bpf() is allowed."""
from __future__ import annotations

import os

import pytest

import pybpf
from kernel_probe import require_kernel
from support import LDABS_TARGET, frame, in_child

OBJ = os.path.join(os.path.dirname(__file__), "data", "elf", "tail_calls.o")


def _pybpf(engine):
    obj = pybpf.load_elf(OBJ)
    lp = obj.vm.load(obj.programs["entry"], engine=engine)
    r0 = lp.run(data=frame())
    out = r0, obj.variables["count"].value
    r0 = lp.run(data=frame())                   # the budget is per run
    return out, (r0, obj.variables["count"].value)


def _check(engine):
    first, second = _pybpf(engine)
    assert first == (1 + len(frame()), 34) and second == (1 + len(frame()), 68)


def test_tail_calls_from_a_subprogram_run_to_the_limit_interp():
    _check("interp")


@pytest.mark.jit
@in_child
def test_tail_calls_from_a_subprogram_run_to_the_limit_jit():
    _check("jit")


def test_the_kernel_agrees():
    require_kernel("bpf", "test_run:sched_cls")
    import kernel_bpf
    from pybpf.elf import parse_object
    obj = parse_object(OBJ)
    ko = kernel_bpf.KernelObject(obj)
    try:
        fd = ko.load(obj.programs["entry"])
        kernel_bpf.update(ko.fds["jmp"], bytes(4), fd.to_bytes(4, "little"))
        r0 = kernel_bpf.test_run(fd, data=frame())[0]
        count = int.from_bytes(ko.global_bytes(obj.variables["count"]), "little")
    finally:
        ko.close()
    assert (r0, count) == _pybpf("interp")[0]


# --- ld_abs/ld_ind in a program reached by a tail call ------------------------------------------
# support.LDABS_TARGET reads the packet with the legacy loads; JIT code used to read its own
# packet descriptor, set only when the target itself runs, so through a tail call it saw no
# packet and returned 0.
def _ldabs_caller(fd: int) -> str:
    return f"r2 = map_fd({fd}) ll\nr3 = 0\ncall 12\nr0 = 99\nexit"


def _ldabs_packets() -> list[bytes]:
    from corpus_run import PACKETS
    return [p for _, p in PACKETS[:8]] + [frame(0x0806)[:20]]      # ARP, cut short


def _ldabs_pybpf(engine: str, tier: str = "auto") -> list[int]:
    vm = pybpf.VM()
    jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=1)
    kw = {"tier": tier} if engine == "jit" else {}
    target = vm.load(pybpf.assemble(LDABS_TARGET), prog_type="sched_cls", engine=engine, **kw)
    # the baseline tier has no tail calls: the caller is LLVM code then
    kw = {"tier": "auto" if tier == "baseline" else tier} if engine == "jit" else {}
    caller = vm.load(pybpf.assemble(_ldabs_caller(jt.fd)), prog_type="sched_cls",
                     engine=engine, **kw)
    jt[0] = target
    return [caller.run(data=p) for p in _ldabs_packets()]


def test_ld_abs_in_a_tail_call_target_interp():
    out = _ldabs_pybpf("interp")
    assert out[-1] == 0 and len(set(out)) >= 3 and 99 not in out


@pytest.mark.jit
@in_child
def test_ld_abs_in_a_tail_call_target_jit():
    os.environ["PYBPF_JIT_CACHE"] = "off"      # the baseline tier, not a cached -O2 entry
    want = _ldabs_pybpf("interp")
    for tier in ("baseline", "O2"):         # the target's tier
        assert _ldabs_pybpf("jit", tier) == want, tier


def test_ld_abs_in_a_tail_call_target_is_the_kernels():
    require_kernel("bpf", "test_run:sched_cls")
    import kernel_bpf
    jt = kernel_bpf.create_map("prog_array", 4, 4, 1)
    fds = [jt]
    try:
        fd, log = kernel_bpf.prog_load(pybpf.assemble(LDABS_TARGET).to_bytes(), "sched_cls")
        assert fd >= 0, log
        fds.append(fd)
        kernel_bpf.update(jt, bytes(4), fd.to_bytes(4, "little"))
        caller, log = kernel_bpf.prog_load(pybpf.assemble(_ldabs_caller(jt)).to_bytes(),
                                           "sched_cls")
        assert caller >= 0, log
        fds.append(caller)
        theirs = [kernel_bpf.test_run(caller, data=p)[0] for p in _ldabs_packets()]
    finally:
        for f in fds:
            os.close(f)
    assert _ldabs_pybpf("interp") == theirs
