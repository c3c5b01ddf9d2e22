"""Benchmark of the arena hash table (samples/c/arena_htab.o): JIT'd BPF, the interpreter and a
Python dict doing the same work.

* ``insert_calls``: the sample's way, one ``lp.run(ctx={key, value})`` of ``htab_insert_prog``
  per key, N keys into an empty table (256 buckets); inserts per second. The dict baseline is a
  Python function per key doing ``d[key] = value`` (the same one call per insert).
* ``selftest``: ``htab_selftest`` in one run: N inserts, N lookups (checking each value) and
  N/2 deletes, all inside BPF; operations per second. The dict baseline does the same
  operations in a Python loop.
* ``lookups``: ``htab_query`` (16 lookups per run) against the table BPF built (N keys, chains
  of N/256 elements), run with ``test_run(repeat=R)``; lookups per second. The dict baseline
  looks the same 16 keys up in a dict of N keys.

Both engines must agree (every insert returns 0, the selftest finds no mismatch, the queries
find all 16 keys), or the run fails. ``run()`` returns a dict;
``python -m pybpf.benchmarks.bench_arena [--quick]`` prints a table.
"""
from __future__ import annotations

import os
import struct
import time

import pybpf
from pybpf.benchmarks.common import gc_paused, main, median_of
from pybpf.errors import BPFError

OBJ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "c",
                   "arena_htab.o")
BUCKETS = 256


def _object(n: int):
    obj = pybpf.load_elf(OBJ)
    obj.variables["n_buckets"].value = BUCKETS
    obj.variables["fill_count"].value = n
    return obj


def _insert_calls(engine: str, n: int) -> tuple[float, object]:
    """Seconds for n htab_insert_prog runs; returns the object (its table is full)."""
    obj = _object(n)
    lp = obj.vm.load(obj.programs["htab_insert_prog"], engine=engine)
    args = bytearray(16)
    bad = 0
    t0 = time.perf_counter()
    for k in range(n):
        struct.pack_into("<QQ", args, 0, k, 3 * k + 1)
        bad += lp.run(ctx=args) != 0
    seconds = time.perf_counter() - t0
    if bad:
        raise BPFError(f"bench_arena: {bad} inserts failed on the {engine}")
    return seconds, obj


def _selftest(engine: str, n: int) -> float:
    obj = _object(n)
    lp = obj.vm.load(obj.programs["htab_selftest"], engine=engine)
    t0 = time.perf_counter()
    bad = lp.run(ctx=bytes(8))
    seconds = time.perf_counter() - t0
    if bad:
        raise BPFError(f"bench_arena: htab_selftest found {bad} mismatches on the {engine}")
    return seconds


def _lookups(engine: str, obj, n: int, repeat: int) -> float:
    """ns per htab_query run (16 lookups) against the table in ``obj``."""
    v = obj.variables
    v["user_table"].value = v["htab_for_user"].value
    keys = [(i * 7919) % n for i in range(16)]
    v["query_keys"].raw = struct.pack("<16Q", *keys)
    lp = obj.vm.load(obj.programs["htab_query"], engine=engine)
    found, ns = lp.test_run(ctx=bytes(8), repeat=repeat)
    if found != 16 or list(struct.unpack("<16Q", v["query_values"].raw)) != \
            [3 * k + 1 for k in keys]:
        raise BPFError(f"bench_arena: htab_query found {found} of 16 keys on the {engine}")
    return median_of(lambda: lp.test_run(ctx=bytes(8), repeat=repeat)[1], 3)


def _dict_figures(n: int, repeat: int) -> dict:
    def insert_calls() -> float:
        d = {}

        def insert(key: int, value: int) -> int:
            d[key] = value
            return 0
        t0 = time.perf_counter()
        for k in range(n):
            insert(k, 3 * k + 1)
        return time.perf_counter() - t0

    def selftest() -> float:
        t0 = time.perf_counter()
        d, bad = {}, 0
        for i in range(n):
            d[i] = 3 * i + 1
        for i in range(n):
            if d.get(i) != 3 * i + 1:
                bad += 1
        for i in range(1, n, 2):
            del d[i]
        return time.perf_counter() - t0

    table = {k: 3 * k + 1 for k in range(n)}
    keys = [(i * 7919) % n for i in range(16)]

    def lookups() -> float:
        get = table.get
        t0 = time.perf_counter_ns()
        for _ in range(repeat):
            for k in keys:
                get(k)
        return (time.perf_counter_ns() - t0) / repeat
    return {"insert_s": median_of(insert_calls, 3), "selftest_s": median_of(selftest, 3),
            "query_ns": median_of(lookups, 3)}


def run(report=None, quick: bool = False) -> dict:
    say = report or (lambda line: None)
    n = 2000 if quick else 10000
    with gc_paused():
        out = {"keys": n, "buckets": BUCKETS}
        for engine in ("jit", "interp"):
            seconds, obj = _insert_calls(engine, n)
            r = out[engine] = {"inserts_per_s": n / seconds}
            r["selftest_ops_per_s"] = 2.5 * n / _selftest(engine, n)
            repeat = (20 if engine == "interp" else 20000) // (5 if quick else 1)
            r["lookups_per_s"] = 16 / _lookups(engine, obj, n, repeat) * 1e9
            say(f"{engine}: {r['inserts_per_s']:.0f} inserts/s (one run each), selftest "
                f"{r['selftest_ops_per_s'] / 1e6:.2f} M ops/s, {r['lookups_per_s'] / 1e6:.2f} M "
                f"lookups/s")
        d = _dict_figures(n, 2000 if quick else 20000)
        out["dict"] = {"inserts_per_s": n / d["insert_s"],
                       "selftest_ops_per_s": 2.5 * n / d["selftest_s"],
                       "lookups_per_s": 16 / d["query_ns"] * 1e9}
    return out


def format_table(results: dict) -> str:
    j, i, d = results["jit"], results["interp"], results["dict"]
    lines = [f"arena hash table, {results['keys']} keys, {results['buckets']} buckets"]
    for key, what, unit, scale in (
            ("inserts_per_s", "inserts, one lp.run per key", "k/s", 1e3),
            ("selftest_ops_per_s", "selftest ops (N ins + N find + N/2 del) in one run", "M/s",
             1e6),
            ("lookups_per_s", "lookups (htab_query, test_run)", "M/s", 1e6)):
        lines.append(f"  {what}: JIT {j[key] / scale:.2f} {unit}, interpreter "
                     f"{i[key] / scale:.2f} {unit} (JIT {j[key] / i[key]:.1f}x), Python dict "
                     f"{d[key] / scale:.2f} {unit} (JIT {j[key] / d[key]:.2f}x)")
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, format_table)
