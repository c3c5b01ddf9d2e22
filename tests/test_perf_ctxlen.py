"""bpf_perf_event_output from packet programs: the skb and xdp variants' BPF_F_CTXLEN_MASK
appends that many packet bytes (from skb->data, or the XDP buffer's data across fragments) to
the sample, -EFAULT past the packet, -EINVAL for other flag bits; the tracing variant refuses
the mask. Each (program type, flags, packet) is run in pybpf's two engines (the JIT in a child
process) and in the running kernel with a real BPF_OUTPUT perf event (tests/kernel_perf.py):
the return value and the records must be equal."""
from __future__ import annotations

import sys

import pytest

from kfunc_run import assemble
from support import assert_case_passed, child, run_child

PROG = """
.map events type=perf_event_array key=4 value=4 max_entries=1
r6 = r1
r1 = 0x0807060504030201 ll
*(u64 *)(r10 - 8) = r1
r1 = r6
r2 = map[events] ll
r3 = {flags} ll
r4 = r10
r4 += -8
r5 = {size}
call bpf_perf_event_output
exit
"""
CUR = 0xFFFFFFFF


def _packet(n: int) -> bytes:
    head = bytes(12) + b"\x08\x00"
    return head + bytes((i * 29 + 5) & 0xFF for i in range(n - len(head)))


# (program type, flags, meta size, packet length)
CASES_RUN = [(t, f, m, n) for t in ("xdp", "sched_cls", "socket_filter") for f, m, n in (
    (CUR, 8, 60), (0, 8, 60), (14 << 32 | CUR, 8, 60), (60 << 32 | CUR, 8, 60),
    (61 << 32 | CUR, 8, 60), (33 << 32 | CUR, 0, 60), (1 << 52 | CUR, 8, 60),
    (1 << 32 | 1, 8, 60), (4500 << 32 | CUR, 3, 5000))
    if not (t != "xdp" and n > 1500)] + [("kprobe", 14 << 32 | CUR, 8, 0)]


def _data(ptype: str, n: int):
    return _packet(n) if ptype != "kprobe" else None


def pybpf_results(engine: str) -> list:
    import pybpf
    out = []
    for ptype, flags, size, n in CASES_RUN:
        vm = pybpf.VM()
        lp = vm.load(assemble(PROG.format(flags=flags, size=size)), prog_type=ptype,
                     engine=engine)
        ev = lp.maps["events"]
        ev.open(0, cpu=0)
        data = _data(ptype, n)
        r0 = lp.run(data=data) if data is not None else lp.run()
        out.append([r0 & 0xFFFFFFFFFFFFFFFF, [d.hex() for _, d in ev.consume()]])
        lp.close()
    return out


def kernel_results() -> list:
    import os
    import kernel_bpf as kb
    import kernel_perf
    import kernel_verifier as kv
    out = []
    ring = kernel_perf.PerfRing()
    try:
        for ptype, flags, size, n in CASES_RUN:
            prog = assemble(PROG.format(flags=flags, size=size))
            fds = kv.create_maps(prog)
            try:
                ring.store_in(fds[0])
                pfd = kv._load(prog, ptype, fds, 0, None)
                try:
                    data = _data(ptype, n)
                    with kernel_perf.on_cpu0():
                        if data is None:
                            r0 = None
                        else:
                            r0, _, _ = kb.test_run(pfd, data=data, data_out_size=n + 256)
                finally:
                    os.close(pfd)
            finally:
                for fd in fds:
                    os.close(fd)
            out.append([r0, [d.hex() for d in ring.records()]])
    finally:
        ring.close()
    return out


CASES = {"jit": lambda: pybpf_results("jit")}


@pytest.fixture(scope="module")
def jit_results():
    return run_child(__file__, CASES)


@pytest.fixture(scope="module")
def interp():
    return pybpf_results("interp")


def _sign32(v: int) -> int:
    return v & 0xFFFFFFFF


@pytest.mark.kernel
def test_the_interpreter_writes_the_kernels_samples(interp):
    from kernel_probe import require_kernel
    require_kernel("test_run:xdp", "test_run:sched_cls", "test_run:socket_filter",
                   "map:perf_event_array")
    theirs = kernel_results()
    diffs = [(case, mine, k) for case, mine, k in zip(CASES_RUN, interp, theirs)
             if k[0] is not None and (_sign32(mine[0]) != k[0] or mine[1] != k[1])]
    assert not diffs
    # the cases cover samples with packet bytes and each refusal
    codes = {_sign32(m[0]) for m in interp}
    assert {0, _sign32(-14), _sign32(-22), _sign32(-7)} <= codes, codes
    assert sum(len(m[1]) for m in interp) >= 12


def test_the_tracing_variant_refuses_the_mask(interp):
    assert _sign32(interp[-1][0]) == _sign32(-22) and interp[-1][1] == []


@pytest.mark.jit
def test_the_jit_writes_the_same(jit_results, interp):
    assert_case_passed(jit_results, "jit")
    assert jit_results[0]["jit"]["detail"] == interp


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
