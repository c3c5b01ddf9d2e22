"""Benchmark of the execmem pack allocator: cost of loading a program through each write path.

For every backend (procmem, memfd, mprotect) it measures, with one long-lived program keeping
the pack alive (the steady state of a process that has programs loaded):

* alloc + fill + free per program, median and 90th percentile in microseconds, for ~200-byte and
  ~2000-byte code, plus the medians of each step;
* permission changes (mprotect calls) per load, read from the allocator's counters;
* huge-page backing of the pack after all those writes (smaps);
* creating and releasing a pack (alloc + free on an empty allocator);
* 1,000 resident programs of 200-1500 bytes: packs used and utilisation.

``run()`` returns the figures as a dict; ``python benchmarks/bench_execmem.py`` prints a table.
"""
from __future__ import annotations

import random
import statistics
import sys
import time

from pybpf.benchmarks.common import gc_paused, machine, percentile
from pybpf.jit.execmem import BACKENDS, PackAllocator, probe_backends


def _cycle(pa: PackAllocator, size: int, iterations: int) -> dict:
    code = bytes([0x90]) * (size - 1) + b"\xc3"
    for _ in range(200):                               # warm caches and the pack's pages
        a = pa.alloc(size)
        pa.fill(a, code)
        pa.free(a)
    perm0 = pa.counters()["permission_changes"]
    t_alloc, t_fill, t_free, total = [], [], [], []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        t0 = clock()
        a = pa.alloc(size)
        t1 = clock()
        pa.fill(a, code)
        t2 = clock()
        pa.free(a)
        t3 = clock()
        t_alloc.append(t1 - t0)
        t_fill.append(t2 - t1)
        t_free.append(t3 - t2)
        total.append(t3 - t0)
    perm = pa.counters()["permission_changes"] - perm0
    return {"size": size, "iterations": iterations,
            "median_us": statistics.median(total) / 1000,
            "p90_us": percentile(total, 0.9) / 1000,
            "alloc_us": statistics.median(t_alloc) / 1000,
            "fill_us": statistics.median(t_fill) / 1000,
            "free_us": statistics.median(t_free) / 1000,
            "permission_changes_per_load": perm / iterations}


def _pack_lifecycle(backend: str, rounds: int = 30) -> dict:
    pa = PackAllocator(backend=backend)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        pa.free(pa.alloc(64))                          # creates a pack, then releases it
        times.append(time.perf_counter_ns() - t0)
    c = pa.counters()
    return {"create_release_us": statistics.median(times) / 1000,
            "permission_changes_per_pack": c["permission_changes"] / c["packs_created"]}


def _resident(backend: str, count: int = 1000) -> dict:
    pa = PackAllocator(backend=backend)
    rng = random.Random(1)
    progs, times = [], []
    for i in range(count):
        size = rng.randint(200, 1500)
        t0 = time.perf_counter_ns()
        a = pa.alloc(size, f"p{i}")
        pa.fill(a, bytes([0x90]) * size)
        times.append(time.perf_counter_ns() - t0)
        progs.append(a)
    place = pa.placement()
    out = {"programs": count, "packs": len(place["packs"]),
           "utilisation": [round(p["utilisation"], 3) for p in place["packs"]],
           "huge_pages_kb": [p["huge_pages_kb"] for p in place["packs"]],
           "load_median_us": statistics.median(times) / 1000}
    pa.close()
    return out


def run(report=None, iterations: int = 3000, sizes=(200, 2000), backends=None) -> dict:
    """Measure every (or the given) backend; ``report(line)`` is called with progress lines."""
    say = report or (lambda line: None)
    results = {"machine": machine(), "probe": probe_backends(all_=True), "backends": {}}
    with gc_paused():                                   # collector pauses are not the allocator's
        for b in backends or BACKENDS:
            if results["probe"].get(b) != "ok":
                say(f"{b}: unavailable ({results['probe'].get(b)})")
                continue
            pa = PackAllocator(backend=b)
            anchor = pa.alloc(64, "anchor")
            r = {"write_path": pa.write_path,
                 "cycles": [_cycle(pa, s, iterations) for s in sizes]}
            r["huge_pages_kb_after"] = pa.placement()["packs"][0]["huge_pages_kb"]
            pa.free(anchor)
            r["pack"] = _pack_lifecycle(b)
            r["resident"] = _resident(b)
            results["backends"][b] = r
            say(f"{b}: done")
    return results


def format_table(results: dict) -> str:
    m = results["machine"]
    lines = [f"execmem write paths (Linux {m['kernel']}, Python {m['python']}, {m['cpus']} CPUs)",
             f"{'backend':9} {'size':>5} {'median':>8} {'p90':>8} {'alloc':>7} {'fill':>7} "
             f"{'free':>7} {'perm/load':>9} {'hugeKB':>6}  (times in us)"]
    for b, r in results["backends"].items():
        for c in r["cycles"]:
            lines.append(f"{b:9} {c['size']:5} {c['median_us']:8.2f} {c['p90_us']:8.2f} "
                         f"{c['alloc_us']:7.2f} {c['fill_us']:7.2f} {c['free_us']:7.2f} "
                         f"{c['permission_changes_per_load']:9.2f} {r['huge_pages_kb_after']:6}")
    lines.append("")
    lines.append(f"{'backend':9} {'pack create+release us':>22} {'perm/pack':>9} "
                 f"{'1000 progs: packs':>17} {'util':>6} {'load us':>8}")
    for b, r in results["backends"].items():
        p, s = r["pack"], r["resident"]
        lines.append(f"{b:9} {p['create_release_us']:22.1f} {p['permission_changes_per_pack']:9.1f} "
                     f"{s['packs']:17} {s['utilisation'][0]:6.3f} {s['load_median_us']:8.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run(report=lambda line: print(line, file=sys.stderr))
    print(format_table(res))
