"""Soundness under attack: what pybpf's verifier accepts cannot hurt the process.

Programs from tests/verifier_gen.py (random ones and mutations of accepted corpus programs:
flipped fields, changed offsets and immediates, dropped bounds and NULL checks, spliced
instructions) for socket_filter, sched_cls, xdp, tracepoint and syscall are verified by pybpf;
each one it accepts runs

1. on the interpreter, whose run-time check of every access against the program's regions is
   the oracle: a MemoryAccessError there means the verifier let an out-of-bounds access through;
2. under the JIT (unchecked native code), in a child process (tests/support.py harness): the
   child must not crash, and the JIT must not fail where the interpreter ran. r0 is compared
   when the program calls no helper whose result varies between runs and the differences are
   counted, not failed: an accepted program may legitimately return what differs between the
   engines (root may read uninitialised stack and return pointers).

No kernel is needed. CI runs 2 batches of 12 accepted programs; ``PYBPF_VERIFIER_SOUNDNESS=N``
runs N accepted programs (the issue's figure is 100,000; 0.5-2 s each on this shared machine, in
batches of 200, a child process per batch). The child writes ``batch B program P`` to stderr
before each JIT run, so a crash names its program (regenerate it with ``programs(seed=...)``).
"""
from __future__ import annotations

import functools
import os
import sys

import pytest

import pybpf
from pybpf.errors import MemoryAccessError
from pybpf.helper_names import HELPER_IDS
from support import assert_case_passed, cases_of, child, frame, run_child

TOTAL = int(os.environ.get("PYBPF_VERIFIER_SOUNDNESS", "24"))
PER_BATCH = min(TOTAL, 200 if TOTAL > 50 else 12)
BATCHES = max(1, -(-TOTAL // PER_BATCH))
SEED = int(os.environ.get("PYBPF_VERIFIER_SOUNDNESS_SEED", "99"))
VARYING = {HELPER_IDS[n] for n in ("get_prandom_u32", "ktime_get_ns", "ktime_get_boot_ns",
                                   "ktime_get_coarse_ns", "get_smp_processor_id",
                                   "get_current_pid_tgid", "ktime_get_tai_ns")}


def run_inputs(ptype: str) -> dict:
    """The input of one run: a packet for skb and xdp programs, a zeroed ctx for the others
    (4 KiB for syscall, so every offset the verifier lets through is inside it)."""
    if ptype in ("socket_filter", "sched_cls", "xdp", "cgroup_skb"):
        return {"data": frame(payload=bytes(range(64)))}
    if ptype == "syscall":
        return {"ctx": bytearray(4096)}
    return {}


def deterministic(prog) -> bool:
    return not any(f.kind == "call" and f.op == "helper" and i.imm in VARYING
                   for _pc, f, i in prog.instructions())


def _run(vm, prog, ptype, engine):
    lp = vm.load(prog, prog_type=ptype, engine=engine)
    try:
        return lp.run(**run_inputs(ptype))
    finally:
        lp.close()


def _batch(b: int) -> dict:
    """(child) Verify generated programs until PER_BATCH are accepted; run each on both engines.
    Raises (the case fails) on an out-of-region access or a JIT/interpreter disagreement."""
    import verifier_gen
    vm = pybpf.VM()
    tally = {"generated": 0, "accepted": 0, "jit_runs": 0, "compared": 0, "r0_differs": 0,
             "run_errors": 0}
    bad = []
    for label, ptype, prog in verifier_gen.programs(PER_BATCH * 40, SEED * 1000 + b):
        if tally["accepted"] >= PER_BATCH:
            break
        tally["generated"] += 1
        try:
            vm.verify(prog, prog_type=ptype, full=True)
        except pybpf.VerifierError:
            continue
        tally["accepted"] += 1
        n = tally["accepted"]
        try:
            want = _run(vm, prog, ptype, "interp")
        except MemoryAccessError as e:
            bad.append(f"{label} ({ptype}) #{n}: interpreter: {e}\n{pybpf.disassemble(prog)}")
            continue                      # never run an out-of-bounds program natively
        except pybpf.BPFError:
            tally["run_errors"] += 1      # a run-time refusal (budget, short ctx): not memory
            want = None
        print(f"batch {b} program {n} {label} {ptype}", file=sys.stderr, flush=True)
        try:
            got = _run(vm, prog, ptype, "jit")
        except pybpf.BPFError as e:
            if want is not None:
                bad.append(f"{label} ({ptype}) #{n}: JIT raised {e} where the interpreter "
                           f"returned {want:#x}\n{pybpf.disassemble(prog)}")
            continue
        tally["jit_runs"] += 1
        if want is not None and deterministic(prog):
            tally["compared"] += 1
            tally["r0_differs"] += got != want
    assert not bad, f"{len(bad)} of {tally}:\n" + "\n".join(bad[:5])
    return tally


for _b in range(BATCHES):
    globals()[f"case_batch_{_b}"] = functools.partial(_batch, _b)
CASES = cases_of(globals())


@pytest.mark.parametrize("name", list(CASES))
def test_accepted_programs_stay_in_their_regions(name):
    # a child per batch: each gets the harness's whole time budget, a crash loses one batch
    results = run_child(__file__, {name: CASES[name]})
    assert_case_passed(results, name)
    print(f"\nsoundness {name}: {results[0][name]['detail']}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES), lambda d: d))
