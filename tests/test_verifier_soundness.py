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
runs N accepted programs through pytest, in batches of 2,000, a child process per batch. The long
run (the issue's figure is 100,000) is

    python tests/test_verifier_soundness.py run --count 100000 [--per-batch 2000] [--minutes M]

which runs batches in children one after the other, prints each batch's tally and the running
totals, counts a child that dies by a signal as a crash (naming the program from the child's
stderr) and goes on with the next batch. To be fast each child reuses one VM, verifies each
program once (the JIT load gets that same verifier result: :func:`_verify_once`), compiles at the
quick JIT tier, runs with the code cache off, and lowers the verifier's processed-instruction
limit to ``PYBPF_VERIFIER_SOUNDNESS_INSN_LIMIT`` (100,000: the rare mutated loop that runs to
the kernel's 1M limit took 26 s to reject; such programs are counted as ``over_insn_limit``). The child writes ``batch B program P`` to stderr
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
PER_BATCH = min(TOTAL, 2000 if TOTAL > 50 else 12)
BATCHES = max(1, -(-TOTAL // PER_BATCH))
SEED = int(os.environ.get("PYBPF_VERIFIER_SOUNDNESS_SEED", "99"))
INSN_LIMIT = int(os.environ.get("PYBPF_VERIFIER_SOUNDNESS_INSN_LIMIT", "100000"))
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
    lp = vm.load(prog, prog_type=ptype, engine=engine, tier="quick")
    try:
        return lp.run(**run_inputs(ptype))
    finally:
        lp.close()


def _verify_once(vm):
    """Make ``vm`` verify each program once: the loads of both engines reuse the verdict of
    the program just verified (the verifier is deterministic for one program and VM)."""
    real = vm.verify_result
    memo: dict = {}

    def verify_result(prog, *args, **kwargs):
        key = (args, {k: v for k, v in kwargs.items() if k != "decl_maps"})
        if memo.get("prog") is not prog or memo.get("key") != key:
            memo.clear()
            try:
                memo["result"] = real(prog, *args, **kwargs)
            except pybpf.BPFError as e:
                memo["error"] = e
            memo.update(key=key, prog=prog)
        if "error" in memo:
            raise memo["error"]
        return memo["result"]

    vm.verify_result = verify_result


def tally_batch(b: int, per_batch: int = PER_BATCH, seed: int = SEED) -> dict:
    """(child) Verify generated programs until ``per_batch`` are accepted; run each on both
    engines. Returns the tally, with ``bad``: out-of-region accesses and JIT failures where
    the interpreter ran."""
    import verifier_gen
    from pybpf.verifier import check
    os.environ["PYBPF_JIT_CACHE"] = "off"
    # A few mutated loops run to the kernel's 1M processed-instruction limit and take half a
    # minute each to be rejected; those over this lower limit are counted apart, not run.
    check.INSN_LIMIT = INSN_LIMIT
    vm = pybpf.VM()
    _verify_once(vm)
    tally = {"generated": 0, "accepted": 0, "jit_runs": 0, "compared": 0, "r0_differs": 0,
             "run_errors": 0, "over_insn_limit": 0, "bad": []}
    bad = tally["bad"]
    for label, ptype, prog in verifier_gen.programs(per_batch * 40, seed * 1000 + b):
        if tally["accepted"] >= per_batch:
            break
        tally["generated"] += 1
        try:
            vm.verify(prog, prog_type=ptype, full=True)
        except pybpf.VerifierError as e:
            tally["over_insn_limit"] += "BPF program is too large. Processed" in str(e)
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
    return tally


def _batch(b: int) -> dict:
    """(child) One batch; raises (the case fails) on an out-of-region access or a JIT failure
    where the interpreter ran."""
    tally = tally_batch(b)
    bad = tally.pop("bad")
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


def long_run(argv) -> int:
    """The long run: batches in children, one after the other (see the module docstring)."""
    import argparse
    import json
    import subprocess
    import time

    from support import run_script

    ap = argparse.ArgumentParser(prog="test_verifier_soundness.py run")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--per-batch", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--first-batch", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=0, help="stop starting batches after this")
    a = ap.parse_args(argv)
    totals = {"accepted": 0, "generated": 0, "jit_runs": 0, "compared": 0, "r0_differs": 0,
              "run_errors": 0, "over_insn_limit": 0, "out_of_region_or_jit_failures": 0,
              "crashes": 0,
              "batches": 0}
    start = time.monotonic()
    b = a.first_batch
    while totals["accepted"] < a.count:
        if a.minutes and time.monotonic() - start > a.minutes * 60:
            break
        per = min(a.per_batch, a.count - totals["accepted"])
        totals["batches"] += 1
        try:
            proc = run_script(__file__, "batch", b, per, a.seed, timeout=per * 5 + 120)
        except subprocess.TimeoutExpired:
            totals["hangs"] = totals.get("hangs", 0) + 1
            print(f"HANG batch {b}: no result within {per * 5 + 120} s", flush=True)
            b += 1
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if lines:
            t = json.loads(lines[-1])
            for k in ("accepted", "generated", "jit_runs", "compared", "r0_differs",
                      "run_errors", "over_insn_limit"):
                totals[k] += t[k]
            totals["out_of_region_or_jit_failures"] += len(t["bad"])
            for msg in t["bad"]:
                print(f"BAD batch {b}: {msg}", flush=True)
        elif proc.returncode < 0:           # a signal: the JIT run of the program named last
            last = [x for x in proc.stderr.splitlines() if x.startswith("batch ")]
            totals["crashes"] += 1
            done = int(last[-1].split()[3]) if last else 0
            totals["accepted"] += done
            print(f"CRASH batch {b} (signal {-proc.returncode}) at: "
                  f"{last[-1] if last else proc.stderr[-500:]}", flush=True)
        else:                               # the harness itself failed: not a program's fault
            totals["harness_errors"] = totals.get("harness_errors", 0) + 1
            print(f"HARNESS ERROR batch {b} (exit {proc.returncode}): {proc.stderr[-800:]}",
                  flush=True)
        el = time.monotonic() - start
        print(f"after batch {b}: {json.dumps(totals)} in {el:.0f} s "
              f"({totals['accepted'] / el:.1f} accepted programs/s)", flush=True)
        b += 1
    print("TOTAL " + json.dumps(totals), flush=True)
    return 1 if (totals["crashes"] or totals.get("hangs") or totals.get("harness_errors")
                 or totals["out_of_region_or_jit_failures"]) else 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES), lambda d: d))
    if len(sys.argv) >= 2 and sys.argv[1] == "batch":
        import json
        print(json.dumps(tally_batch(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))),
              flush=True)
        sys.exit(0)
    if len(sys.argv) >= 2 and sys.argv[1] == "run":
        sys.exit(long_run(sys.argv[2:]))
    print(__doc__)
