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
from support import frame, in_child

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
