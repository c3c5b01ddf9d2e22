"""Benchmark of the reference interpreter: executed BPF instructions per second in pure Python.

Three workloads, each run through the public API (``vm.load(engine="interp")`` then
``lp.test_run``), counting the instructions the interpreter actually executed:

* ``alu``: a loop of eleven ALU instructions (64- and 32-bit, immediates and registers, a
  multiply, a shift, a byte swap) and a conditional back-edge;
* ``memory``: a loop over a 64 KiB buffer: a 32-bit load, ALU, a store back, a stack spill and
  fill, pointer and counter updates (four of its nine instructions touch memory);
* ``branchy``: a loop whose body is a chain of conditional jumps (dispatch-heavy);
* ``run_overhead``: the cost of one ``lp.run()`` of a two-instruction program (setting up the
  stack, the private mem copy and the run's regions).

``run()`` returns the figures as a dict; ``python benchmarks/bench_interp.py [--profile]``
prints a table (and with ``--profile`` where the time goes, from cProfile).
"""
from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import pybpf
from pybpf.vm import VM

ALU_LOOP = """
    r0 = 0
    r1 = {n}
loop:
    r0 += r1
    r2 = r0
    r2 *= 3
    r2 >>= 7
    r0 ^= r2
    w3 = w0
    w3 += 17
    r3 = bswap32 r3
    r0 -= r3
    r0 &= -2
    r1 += -1
    if r1 != 0 goto loop
    exit
"""

MEM_LOOP = """
    r6 = r1
    r7 = r2
    r0 = 0
loop:
    r3 = *(u32 *)(r6 + 0)
    r0 += r3
    r3 ^= r0
    *(u32 *)(r6 + 0) = r3
    *(u64 *)(r10 - 8) = r0
    r0 = *(u64 *)(r10 - 8)
    r6 += 4
    r7 += -4
    if r7 != 0 goto loop
    exit
"""

BRANCHY_LOOP = """
    r0 = 0
    r1 = {n}
loop:
    r2 = r1
    r2 &= 7
    if r2 == 0 goto a
    if r2 == 1 goto b
    if r2 > 4 goto c
    r0 += 1
    goto next
a:
    r0 += 3
    goto next
b:
    r0 ^= 5
    goto next
c:
    r0 += r2
next:
    r1 += -1
    if r1 != 0 goto loop
    exit
"""


def _measure(lp, mem, min_seconds: float) -> dict:
    lp.test_run(mem=mem, repeat=1)                      # warm up, count instructions
    per_run = lp.last_insn_count
    repeat, elapsed = 1, 0.0
    while True:
        t0 = time.perf_counter()
        lp.test_run(mem=mem, repeat=repeat)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
        repeat *= 2
    total = per_run * repeat
    return {"insns_per_run": per_run, "runs": repeat, "seconds": round(elapsed, 3),
            "insns_per_second": round(total / elapsed)}


def workloads(n: int = 20000, mem_size: int = 64 * 1024):
    """(name, Program, mem) for each workload."""
    return [
        ("alu", pybpf.assemble(ALU_LOOP.format(n=n)), None),
        ("memory", pybpf.assemble(MEM_LOOP), bytes(range(256)) * (mem_size // 256)),
        ("branchy", pybpf.assemble(BRANCHY_LOOP.format(n=n)), None),
    ]


def run(min_seconds: float = 1.0) -> dict:
    vm = VM()
    out = {}
    for name, prog, mem in workloads():
        # benchmark workloads are trusted (they loop over mem of any length): unverified
        out[name] = _measure(vm.load(prog, engine="interp", verify=False), mem, min_seconds)
    tiny = vm.load(pybpf.assemble("r0 = 1\nexit"), engine="interp")
    runs = 2000
    t0 = time.perf_counter()
    for _ in range(runs):
        tiny.run(mem=b"12345678")
    out["run_overhead_us"] = round((time.perf_counter() - t0) / runs * 1e6, 1)
    out["test_run_overhead_us"] = round(tiny.test_run(mem=b"12345678", repeat=runs)[1] / 1000, 2)
    return out


def profile(name: str = "memory", top: int = 12) -> str:
    """cProfile of one workload (the generated code shows up as ``<bpf ...>`` functions)."""
    vm = VM()
    prog, mem = next((p, m) for n, p, m in workloads() if n == name)
    lp = vm.load(prog, engine="interp", verify=False)
    pr = cProfile.Profile()
    pr.enable()
    lp.test_run(mem=mem, repeat=5)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def format_table(results: dict) -> str:
    lines = [f"{'workload':10} {'insns/run':>10} {'runs':>6} {'seconds':>8} {'M insns/s':>10}"]
    for name in ("alu", "memory", "branchy"):
        r = results[name]
        lines.append(f"{name:10} {r['insns_per_run']:>10} {r['runs']:>6} {r['seconds']:>8} "
                     f"{r['insns_per_second'] / 1e6:>10.2f}")
    lines.append(f"lp.run() overhead: {results['run_overhead_us']} us; "
                 f"test_run per-run overhead: {results['test_run_overhead_us']} us")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(run()))
    if "--profile" in sys.argv:
        for name in ("alu", "memory"):
            print(f"\n--- profile: {name} ---")
            print(profile(name))
