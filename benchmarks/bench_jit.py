"""Benchmark of running JIT'd code: test_run's per-run overhead and the JIT against the interpreter.

Through the public API (``VM().load(prog, engine="jit", tier="O2")``, ``lp.test_run``; tier
"O2": the figures are of -O2 code, where the default tier "auto" would run the baseline tier's
until the -O2 code is in):

* ``test_run``: ns per run of ``test_run(repeat=N)`` for a trivial program (``r0 = 1; exit``,
  i.e. ``mov eax, 1; ret``): the native driver's loop, an indirect call and the return. The
  baseline is the same code called from a Python loop through a ctypes function pointer
  (``native.make_caller``), the cheapest way to call it from Python one run at a time; and, for
  reference, the program's own ctypes caller and one ``lp.run()`` (the VM's per-run path), in
  CPU time of the calling thread, trials interleaved, min and median.
* ``alu``: the interpreter benchmark's ALU loop (bench_interp.ALU_LOOP) on both engines: ns per
  run of ``test_run`` and executed BPF instructions per second (the interpreter counts them), and
  the ratio. Both engines must return the same r0, or the run fails.
* ``helpers``: ns per call of ``bpf_get_prandom_u32`` and of ``bpf_ktime_get_ns`` from JIT code,
  in a loop of calls: computed inline (the helpers' native implementations,
  ``jit/native_helpers.py``) against the same Python functions registered as plain helpers,
  which JIT code reaches through the Python bridge. The prandom loops of both must return the
  same r0 (the same seeded sequence), or the run fails.

``run()`` returns the figures as a dict; ``python -m pybpf.benchmarks.bench_jit [--quick]``
prints a table.
"""
from __future__ import annotations

import statistics
import time

import pybpf
from pybpf.benchmarks.common import gc_paused, main, median_of
from pybpf.errors import BPFError
from pybpf.jit import compile_program, native
from pybpf.vm import VM

from pybpf.benchmarks.bench_interp import ALU_LOOP

TRIVIAL = "r0 = 1\nexit"


def _test_run_overhead(vm: VM, quick: bool) -> dict:
    repeat, trials = (1_000_000, 5) if quick else (10_000_000, 7)
    calls = 50_000 if quick else 300_000
    prog = pybpf.assemble(TRIVIAL)
    # The baseline calls the same machine code: a JitProgram of its own gives its address.
    with vm.load(prog, engine="jit", name="trivial", tier="O2") as lp, \
            compile_program(prog, vm.helpers, name="trivial-ctypes") as jp:
        lp.test_run(repeat=1000)                        # places the driver, warms caches
        test_run_ns = median_of(lambda: lp.test_run(repeat=repeat)[1], trials)
        call = native.make_caller(jp.address)

        raw = lp._jit._call

        # CPU time of this thread: on a shared machine other work inflates wall time (and its
        # preemptions land anywhere), not this. Each loop calls directly, as a user would.
        def ctypes_loop() -> float:
            t0 = time.thread_time_ns()
            for _ in range(calls):
                call(0, 0)
            return (time.thread_time_ns() - t0) / calls

        def raw_loop() -> float:
            t0 = time.thread_time_ns()
            for _ in range(calls):
                raw(0, 0)
            return (time.thread_time_ns() - t0) / calls

        def lp_run_loop() -> float:
            n = calls // 5
            t0 = time.thread_time_ns()
            for _ in range(n):
                lp.run()
            return (time.thread_time_ns() - t0) / n

        loops = {"ctypes_call": ctypes_loop, "raw_call": raw_loop, "lp_run": lp_run_loop}
        series = {k: [] for k in loops}
        for _ in range(7 if quick else 15):     # interleaved: the same conditions for each
            for k, loop in loops.items():
                series[k].append(loop())
        ctypes_ns = statistics.median(series["ctypes_call"])
        lp_run_ns = statistics.median(series["lp_run"])
        mins = {f"{k}_min_ns": min(v) for k, v in series.items()}
        raw_ns = statistics.median(series["raw_call"])
        r0 = call(0, 0)
    if r0 != 1:
        raise BPFError(f"bench_jit: the trivial program returned {r0}, not 1")
    return {"repeat": repeat, "test_run_ns": test_run_ns, "ctypes_call_ns": ctypes_ns,
            "lp_run_ns": lp_run_ns, "raw_call_ns": raw_ns, **mins,
            "ratio": ctypes_ns / test_run_ns}


def _alu(vm: VM, quick: bool) -> dict:
    n = 1000 if quick else 5000
    prog = pybpf.assemble(ALU_LOOP.format(n=n))
    with vm.load(prog, engine="interp", name="alu") as li:
        r0_interp, _ = li.test_run(repeat=1)            # counts the executed instructions
        insns = li.last_insn_count
        runs = 2 if quick else 5
        interp_ns = median_of(lambda: li.test_run(repeat=runs)[1], 3)
    with vm.load(prog, engine="jit", name="alu", tier="O2") as lj:
        r0_jit, _ = lj.test_run(repeat=10)
        repeat = 2000 if quick else 20_000
        jit_ns = median_of(lambda: lj.test_run(repeat=repeat)[1], 5)
    if r0_jit != r0_interp:
        raise BPFError(f"bench_jit: ALU loop r0 differs: JIT 0x{r0_jit:x}, "
                       f"interpreter 0x{r0_interp:x}")
    return {"iterations": n, "insns_per_run": insns, "jit_ns": jit_ns, "interp_ns": interp_ns,
            "jit_insns_per_s": insns / jit_ns * 1e9, "interp_insns_per_s": insns / interp_ns * 1e9,
            "speedup": interp_ns / jit_ns}


HELPER_LOOP = """
    r6 = {n}
    r7 = 0
loop:
    call {hid}
    r7 += r0
    r6 -= 1
    if r6 != 0 goto loop
    r0 = r7
    exit
"""


def _helper_calls(quick: bool) -> dict:
    n = 2000 if quick else 20_000
    out = {}
    for name, hid in (("prandom_u32", 7), ("ktime_get_ns", 5)):
        prog = pybpf.assemble(HELPER_LOOP.format(n=n, hid=hid))
        native_vm, bridge_vm = VM(seed=3), VM(seed=3)
        # The same Python function as a plain helper: no native description, so the bridge.
        bridge_vm.register_helper(hid, bridge_vm.helpers[hid].fn, name, prototype=())
        per_call, r0 = {}, {}
        for label, vm in (("native", native_vm), ("bridge", bridge_vm)):
            with vm.load(prog, engine="jit", name=name, tier="O2") as lp:
                r0[label] = lp.test_run(repeat=1)[0]
                per_call[label] = median_of(lambda: lp.test_run(repeat=3)[1], 5) / n
        if name == "prandom_u32" and r0["native"] != r0["bridge"]:
            raise BPFError(f"bench_jit: native prandom gave 0x{r0['native']:x}, the Python "
                           f"helper 0x{r0['bridge']:x}")
        out[name] = {"calls": n, "native_ns": per_call["native"],
                     "bridge_ns": per_call["bridge"],
                     "speedup": per_call["bridge"] / per_call["native"]}
    return out


def run(report=None, quick: bool = False) -> dict:
    """Measure; ``report(line)`` is called with progress lines."""
    say = report or (lambda line: None)
    vm = VM()
    with gc_paused():
        out = {"test_run": _test_run_overhead(vm, quick)}
        say(f"test_run: {out['test_run']['test_run_ns']:.2f} ns per run")
        out["alu"] = _alu(vm, quick)
        say(f"ALU loop: JIT {out['alu']['speedup']:.0f}x the interpreter")
        out["helpers"] = _helper_calls(quick)
        say("helper calls: native " + ", ".join(
            f"{k} {v['speedup']:.0f}x the bridge" for k, v in out["helpers"].items()))
    return out


def format_table(results: dict) -> str:
    t, a = results["test_run"], results["alu"]
    return "\n".join([
        f"test_run of a trivial program: {t['test_run_ns']:.2f} ns per run "
        f"(repeat={t['repeat']}); a ctypes call from a Python loop: {t['ctypes_call_ns']:.0f} ns "
        f"({t['ratio']:.0f}x); lp.run(): {t['lp_run_ns']:.0f} ns",
        f"per call, CPU time, min / median: ctypes call {t['ctypes_call_min_ns']:.0f} / "
        f"{t['ctypes_call_ns']:.0f} ns, the program's own caller {t['raw_call_min_ns']:.0f} / "
        f"{t['raw_call_ns']:.0f} ns, lp.run() {t['lp_run_min_ns']:.0f} / {t['lp_run_ns']:.0f} ns "
        f"({t['lp_run_ns'] / t['ctypes_call_ns']:.2f}x the ctypes call)",
        f"ALU loop ({a['iterations']} iterations, {a['insns_per_run']} insns per run): "
        f"JIT {a['jit_ns'] / 1e3:.1f} us per run ({a['jit_insns_per_s'] / 1e9:.2f} G insns/s), "
        f"interpreter {a['interp_ns'] / 1e6:.2f} ms per run "
        f"({a['interp_insns_per_s'] / 1e6:.1f} M insns/s): {a['speedup']:.0f}x"]
        + [f"bpf_{k} from JIT code: {v['native_ns']:.1f} ns per call inline, "
           f"{v['bridge_ns']:.0f} ns through the Python bridge ({v['speedup']:.0f}x)"
           for k, v in results["helpers"].items()])


if __name__ == "__main__":
    main(run, format_table)
