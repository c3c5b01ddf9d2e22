"""ld_abs/ld_ind in UNVERIFIED loads reached by a tail call read the run's packet in every JIT
tier, as the interpreter (and the kernel) do (issue 11).

Without the verifier r6 is nothing known, so JIT code reads the packet through the run's
descriptor, which the chain record of a tail-call chain carries from the program the run entered
(jit/calls.py reads_run_packet); it used to read the target's own descriptor, filled only when
the target runs directly, and returned 0. The kernel programs here are ones it accepts (it
verifies everything); pybpf loads them with verify=False. Hostile variants (r6 anything, no
packet at all) are compared between the engines only. Each case runs in one child process
(tests/support.py), since JIT code that goes wrong can fault.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

import pybpf  # noqa: E402
from support import LDABS_TARGET, child_tests, frame  # noqa: E402

# hostile for the verifier, harmless here: r6 is a wild value, ld_ind's offset is negative
# for some packets (the run ends with 0), and the loads sit in a subprogram
TARGET_WILD = """
r6 = 0x1234
r0 = *(u8 *)skb[14]
r7 = r0
r7 &= 15
r7 <<= 2
r7 += -22
call sub
exit
sub:
r0 = *(u32 *)skb[r7 + 4]
exit
"""


def caller(fd: int, index: int = 0, room: int = 0) -> str:
    """Tail call to ``index``; first bpf_skb_change_head(skb, room) when ``room`` (the packet
    moves: the target must read the moved one)."""
    head = f"r6 = r1\nr2 = {room}\nr3 = 0\ncall 43\nr1 = r6\n" if room else ""
    return f"{head}r2 = map_fd({fd}) ll\nr3 = {index}\ncall 12\nr0 = 99\nexit"


def packets() -> list[bytes]:
    from corpus_run import PACKETS
    return [p for _, p in PACKETS[:8]] + [frame(0x0806)[:20], frame(0x88CC)[:24]]


# (name, chain: program texts by role, caller's packet room, kernel accepts it)
SHAPES = {
    "direct": (LDABS_TARGET, 0, 0, True),   # caller -> target
    "moved": (LDABS_TARGET, 0, 4, True),    # caller moves the packet, then -> target
    "two": (LDABS_TARGET, 1, 0, True),      # caller -> middle (no ld_abs) -> target
    "wild": (TARGET_WILD, 0, 0, False),
}
TIERS = ("baseline", "quick", "O2")


def _chain(vm, engine: str, shape: str, tier: str, verify=False, prog_type="sched_cls"):
    """The caller of ``shape`` with its chain loaded (the target at ``tier``)."""
    target, hops, room, _ = SHAPES[shape]
    jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=2)

    def load(text, t):
        kw = {"tier": t} if engine == "jit" else {}
        return vm.load(pybpf.assemble(text), prog_type=prog_type, engine=engine,
                       verify=verify, **kw)
    # the baseline tier makes no tail calls: callers are LLVM code then
    outer = "quick" if tier == "baseline" else tier
    jt[0] = last = load(target, tier)
    if engine == "jit":
        assert last._jit.tier == tier, (last._jit.tier, tier)   # no fallback to another tier
    if hops:
        jt[1] = load(caller(jt.fd, 0), outer)
    return load(caller(jt.fd, hops, room), outer)


def pybpf_results(engine: str, shape: str, tier: str = "quick") -> list:
    vm = pybpf.VM()
    lp = _chain(vm, engine, shape, tier)
    out = []
    for p in packets():
        r0 = lp.run(data=p)
        out.append((r0, lp.last_data))
    return out


def kernel_results(shape: str) -> list:
    import kernel_bpf
    target, hops, room, _ = SHAPES[shape]
    jt = kernel_bpf.create_map("prog_array", 4, 4, 2)
    fds = [jt]
    try:
        def load(text):
            fd, log = kernel_bpf.prog_load(pybpf.assemble(text).to_bytes(), "sched_cls")
            assert fd >= 0, log
            fds.append(fd)
            return fd
        kernel_bpf.update(jt, bytes(4), load(target).to_bytes(4, "little"))
        if hops:
            kernel_bpf.update(jt, (1).to_bytes(4, "little"),
                              load(caller(jt, 0)).to_bytes(4, "little"))
        top = load(caller(jt, hops, room))
        out = []
        for p in packets():
            r0, data, _ = kernel_bpf.test_run(top, data=p, data_out_size=len(p) + 64)
            out.append((r0, data))
        return out
    finally:
        for f in fds:
            os.close(f)


# -- child cases --------------------------------------------------------------------------------

def _tiers_agree(shape: str) -> dict:
    os.environ["PYBPF_JIT_CACHE"] = "off"       # each tier's own code, not a cached -O2 entry
    want = pybpf_results("interp", shape)
    assert len({r for r, _ in want}) >= 2 and all(r != 99 for r, _ in want), want
    equal = {}
    for tier in TIERS:
        got = pybpf_results("jit", shape, tier)
        equal[tier] = sum(g == w for g, w in zip(got, want))
        assert got == want, (tier, got, want)
    return equal


def case_direct():
    return _tiers_agree("direct")


def case_moved_packet():
    return _tiers_agree("moved")


def case_through_a_middle_program():
    return _tiers_agree("two")


def case_wild_r6_and_a_subprogram():
    return _tiers_agree("wild")


def case_verified_caller_unverified_target():
    """A verified caller (its ld_abs reads r6) fills the descriptor its unverified target
    reads."""
    os.environ["PYBPF_JIT_CACHE"] = "off"
    out = {}
    for engine, tiers in (("interp", ("-",)), ("jit", TIERS)):
        for tier in tiers:
            vm = pybpf.VM()
            jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=1)
            kw = {"tier": tier} if engine == "jit" else {}
            jt[0] = vm.load(pybpf.assemble(LDABS_TARGET), prog_type="sched_cls", engine=engine,
                            verify=False, **kw)
            kw = {"tier": "quick" if tier == "baseline" else tier} if engine == "jit" else {}
            top = vm.load(pybpf.assemble(caller(jt.fd)), prog_type="sched_cls", engine=engine,
                          **kw)
            out[tier] = [top.run(data=p) for p in packets()]
    want = out.pop("-")
    assert all(got == want for got in out.values()), (out, want)
    return len(want)


def case_no_packet():
    """A "mem" run has no packet: ld_abs in the tail-call target is the interpreter's VMError
    in every tier, not 0."""
    os.environ["PYBPF_JIT_CACHE"] = "off"
    seen = {}
    for engine, tiers in (("interp", ("-",)), ("jit", TIERS)):
        for tier in tiers:
            vm = pybpf.VM()
            top = _chain(vm, engine, "direct", tier, prog_type="mem")
            with pytest.raises(pybpf.VMError) as err:
                top.run(mem=bytes(64))
            seen[tier] = str(err.value)
    assert len(set(seen.values())) == 1 and "socket-filter context" in seen["-"], seen
    return seen["-"]


child_tests(globals(), marks=[pytest.mark.jit])


@pytest.mark.parametrize("shape", [s for s, v in SHAPES.items() if v[3]])
def test_the_kernel_agrees(shape):
    from kernel_probe import require_kernel
    require_kernel("bpf", "test_run:sched_cls")
    theirs = kernel_results(shape)
    ours = pybpf_results("interp", shape)
    assert [r for r, _ in ours] == [r for r, _ in theirs]
    assert [d for _, d in ours] == [d for _, d in theirs]
