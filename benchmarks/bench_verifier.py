"""Benchmark of the verifier: how fast pybpf verifies, and how often it agrees with the kernel.

Speed (``VM.verify_result(full=True)``, min and median of several batches, with the running
kernel's own BPF_PROG_LOAD time for the same program as the baseline where bpf() is permitted):

* ``straight200``: 200 straight-line instructions (ALU, stack spills and fills, a checked map
  value access) as xdp; goal < 20 ms;
* ``loop1000``: about 1,000 instructions with a bounded loop of 100 iterations as xdp (the
  verifier walks every iteration; an 8-instruction body); goal < 1 s;
* ``loop1000_body``: the same size with nearly all of it inside the 100-iteration loop (about
  100,000 instructions processed); goal < 1 s;
* ``packet``: a parser that checks data_end before each header read (xdp).

For each: verification time, instructions processed per second and states explored.

Differential (tests/verifier_gen.py, needs bpf()): N random and mutated programs across
socket_filter, sched_cls, xdp, tracepoint and syscall loaded into the kernel and into pybpf:
kernel rejects / pybpf accepts (must be 0), kernel accepts / pybpf rejects (aim < 5%), and the
share of common rejections whose message is the kernel's. N = 20,000 for a full run, 100 with
``quick``; ``PYBPF_BENCH_DIFF`` overrides it.

``python benchmarks/bench_verifier.py [--quick]`` prints the figures; ``pybpf bench`` includes them.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import pybpf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

LOOKUP = """.map m type=array key=4 value=64 max_entries=1
    r6 = r1
    *(u32 *)(r10 - 4) = 0
    r1 = map[m] ll
    r2 = r10
    r2 += -4
    call 1
    if r0 == 0 goto out
    r9 = r0
"""


def straight(n: int = 200) -> str:
    """``n`` straight-line instructions (prologue and epilogue included)."""
    body = []
    ops = ["r{a} += {k}", "r{a} ^= r{b}", "w{a} *= {k}", "r{a} &= 63",
           "*(u64 *)(r10 - {s}) = r{a}", "r{b} = *(u64 *)(r10 - {s})",
           "r{a} >>= 3", "r{b} |= r{a}"]
    i = 0
    prologue = LOOKUP + "    r1 = 1\n    r2 = 2\n    r3 = 3\n    r4 = 4\n"
    used = 14
    while used < n - 5:
        a, b = 1 + i % 4, 1 + (i + 1) % 4
        body.append("    " + ops[i % len(ops)].format(a=a, b=b, k=i % 13 + 1, s=16 + 8 * (i % 8)))
        used += 1
        i += 1
    tail = "    r1 &= 7\n    r9 += r1\n    r0 = *(u64 *)(r9 + 0)\nout:\n    r0 = 2\n    exit\n"
    return prologue + "\n".join(body) + "\n" + tail


def loop(n: int = 1000, iterations: int = 100) -> str:
    """About ``n`` instructions: a 100-iteration loop (8-instruction body), then straight code."""
    head = LOOKUP + f"""    r1 = 0
    r5 = 0
loop:
    r2 = r1
    r2 &= 7
    r3 = r9
    r3 += r2
    r4 = *(u8 *)(r3 + 0)
    r5 += r4
    r1 += 1
    if r1 < {iterations} goto loop
"""
    text = straight(n - 25).split("\n", 1)[1]        # drop the .map line: the head declares it
    return head + text.replace("    r6 = r1\n", "", 1).split("    r9 = r0\n", 1)[1]


PACKET = """
    r2 = *(u32 *)(r1 + 0)
    r3 = *(u32 *)(r1 + 4)
    r4 = r2
    r4 += 14
    if r4 > r3 goto drop
    r5 = *(u16 *)(r2 + 12)
    if r5 != 8 goto pass
    r4 = r2
    r4 += 34
    if r4 > r3 goto drop
    r5 = *(u8 *)(r2 + 23)
    if r5 == 6 goto tcp
    if r5 != 17 goto pass
    r4 = r2
    r4 += 42
    if r4 > r3 goto drop
    r0 = *(u16 *)(r2 + 36)
    if r0 == 13568 goto drop
    goto pass
tcp:
    r4 = r2
    r4 += 54
    if r4 > r3 goto drop
    r0 = *(u16 *)(r2 + 36)
    r0 = *(u8 *)(r2 + 47)
    r0 &= 2
    if r0 != 0 goto drop
pass:
    r0 = 2
    exit
drop:
    r0 = 1
    exit
"""

def loop_body(n: int = 1000, iterations: int = 100) -> str:
    """About ``n`` instructions, nearly all inside a loop of ``iterations`` (~100 x 1,000
    instructions processed: the harder reading of the issue's goal)."""
    text = straight(n - 6)
    head, rest = text.split("    r9 = r0\n", 1)
    body, tail = rest.rsplit("    r1 &= 7\n", 1)
    return (head + "    r9 = r0\n    r8 = 0\nloop:\n" + body
            + f"    r8 += 1\n    if r8 < {iterations} goto loop\n    r1 &= 7\n" + tail)


PROGRAMS = {"straight200": (straight, 20.0), "loop1000": (loop, 1000.0),
            "loop1000_body": (loop_body, 1000.0), "packet": (lambda: PACKET, None)}


def _kernel_load_ms(prog, trials: int) -> float | None:
    """Median BPF_PROG_LOAD time of ``prog`` as xdp in the running kernel, or None."""
    sys.path.insert(0, TESTS)
    try:
        import kernel_verifier as kv
    except ImportError:
        return None
    if not kv.available():
        return None
    times = []
    for _ in range(trials):
        t0 = time.perf_counter()
        v = kv.kernel_verify(prog, "xdp", log_level=0)
        times.append((time.perf_counter() - t0) * 1e3)
        if not v.accepted:
            return None
    return statistics.median(times)


def speed(name: str, text: str, batches: int) -> dict:
    """Wall and CPU time of verifying ``text`` (the verdict cache off: every batch runs the
    verifier; CPU time is the process's, the figure that does not grow with the machine's
    load)."""
    vm = pybpf.VM()
    prog = pybpf.assemble(text, syntax="llvm")
    times, cpu, res = [], [], None
    old = os.environ.get("PYBPF_VERDICT_CACHE")
    os.environ["PYBPF_VERDICT_CACHE"] = "off"
    try:
        for _ in range(batches):
            t0, c0 = time.perf_counter(), time.process_time()
            res = vm.verify_result(prog, prog_type="xdp", full=True)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    finally:
        if old is None:
            del os.environ["PYBPF_VERDICT_CACHE"]
        else:
            os.environ["PYBPF_VERDICT_CACHE"] = old
    st = res.stats
    best = min(times)
    return {"name": name, "slots": len(prog), "min_ms": best * 1e3,
            "median_ms": statistics.median(times) * 1e3, "cpu_min_ms": min(cpu) * 1e3,
            "processed_insns": st.get("processed_insns", 0),
            "total_states": st.get("total_states", 0), "peak_states": st.get("peak_states", 0),
            "insns_per_s": st.get("processed_insns", 0) / best if best else 0.0,
            "kernel_ms": _kernel_load_ms(prog, max(3, batches))}


def differential(count: int, report=print) -> dict | None:
    sys.path.insert(0, TESTS)
    import kernel_verifier as kv
    if not kv.available():
        return None
    import verifier_gen
    t0 = time.perf_counter()
    t = verifier_gen.differential(count, seed=20261207)
    report(t.summary())
    return {"count": t.total, "kernel_accepts": t.kernel_accepts,
            "kernel_rejects": t.kernel_rejects, "unsound": len(t.unsound),
            "too_strict": len(t.too_strict), "both_reject": t.both_reject,
            "message_match": t.message_match, "crashes": len(t.crashes),
            "by_type": dict(t.by_type), "seconds": time.perf_counter() - t0}


def run(report=print, quick: bool = False) -> dict:
    batches = 3 if quick else 9
    out = {"speed": []}
    for name, (make, _goal) in PROGRAMS.items():
        r = speed(name, make(), batches if not name.startswith("loop") else max(3, batches // 3))
        report(f"{name}: {r['slots']} slots, {r['min_ms']:.1f} ms min, {r['median_ms']:.1f} ms "
               f"median, {r['cpu_min_ms']:.1f} ms CPU min, {r['processed_insns']} insns "
               f"processed, {r['total_states']} states"
               + (f"; kernel {r['kernel_ms']:.2f} ms" if r["kernel_ms"] else ""))
        out["speed"].append(r)
    count = int(os.environ.get("PYBPF_BENCH_DIFF", "100" if quick else "20000"))
    out["differential"] = differential(count, report) if count else None
    return out


if __name__ == "__main__":
    res = run(quick="--quick" in sys.argv)
    print(res)
