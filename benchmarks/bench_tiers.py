"""Benchmark of load latency with tiered compilation and the persistent code cache (issue 13).

Through the public API (``VM().load(prog, engine="jit", tier=...)``), on the compile
benchmark's generated programs (``bench_compile.bench_program``: ~20, 200 and 2,000 instruction
slots, a new seed per trial so nothing is cached unless a figure says so), with the compile
workers started beforehand:

* ``first_result``: ``vm.load`` until it returns, ready to run, tier "auto" on a cache
  miss (the baseline tier, jit/baseline.py: no LLVM before the first run; the code cache on,
  in a fresh directory); ``first_result_quick``: the same with the baseline off
  (``PYBPF_JIT_BASELINE=0``: the LLVM quick tier first); baseline: the same with tier "O2"
  and the cache off (what every load cost before this issue); ``first_tier`` counts the tier
  each "auto" load placed first;
* ``o2_installed``: from ``vm.load`` (tier "auto", cache miss) until the background -O2 code is
  swapped in (``JitProgram.installed_at``);
* ``warm_load``: ``vm.load`` of a program whose -O2 code is in the cache (lowering, key, read,
  check, place); baseline: the cold -O2 load;
* ``verified_warm``: the default load (``verify=True``) of a program whose -O2 code and
  verdict are cached (:mod:`pybpf.verdicts`); baseline ``verified_uncached``: the same load
  with the verdict cache off (the verifier runs; the code still comes from the cache). Sizes
  up to ``VERIFIED_MAX``; generated programs the verifier refuses are left out of these two;
* ``runtime``: ns per run of ``test_run`` for the baseline and the quick tier against -O2
  code, on the interpreter benchmark's ALU loop and the 64-way switch (benchmarks/c).

Each latency is a series of trials (one program each, background compiles drained between
them, outside the timing); min and median are reported. ``run()`` returns the figures;
``python -m pybpf.benchmarks.bench_tiers [--quick]`` prints them.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import pybpf
from pybpf.benchmarks.bench_compile import _helpers, programs
from pybpf.benchmarks.common import gc_paused, main
from pybpf.errors import BPFError, VerifierError
from pybpf import verdicts
from pybpf.jit import codegen, tiers

SIZES = (20, 200, 2000)
VERIFIED_MAX = 200      # verified loads measured up to this size (verification takes seconds
                        # on the 2,000-slot programs)


def _vm():
    vm = pybpf.VM()
    for hid, fn in _helpers().items():
        vm.register_helper(hid, fn, f"h{hid}", prototype=())
    return vm


class _CacheDir:
    """PYBPF_JIT_CACHE pointed at a fresh directory (or "off") for the block."""

    def __init__(self, off: bool = False) -> None:
        self.off = off

    def __enter__(self):
        self.old = os.environ.get("PYBPF_JIT_CACHE")
        self.dir = None if self.off else tempfile.mkdtemp(prefix="pybpf-bench-cache-")
        os.environ["PYBPF_JIT_CACHE"] = "off" if self.off else self.dir
        return self

    def __exit__(self, *exc) -> None:
        if self.old is None:
            os.environ.pop("PYBPF_JIT_CACHE", None)
        else:
            os.environ["PYBPF_JIT_CACHE"] = self.old
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class _BaselineOff:
    """PYBPF_JIT_BASELINE=0 for the block: tier "auto" starts with the LLVM quick tier."""

    def __enter__(self):
        self.old = os.environ.get("PYBPF_JIT_BASELINE")
        os.environ["PYBPF_JIT_BASELINE"] = "0"
        return self

    def __exit__(self, *exc) -> None:
        if self.old is None:
            os.environ.pop("PYBPF_JIT_BASELINE", None)
        else:
            os.environ["PYBPF_JIT_BASELINE"] = self.old


def _stats(values: list[float]) -> dict:
    return {"min_ms": min(values) * 1e3, "median_ms": statistics.median(values) * 1e3,
            "n": len(values)}


def _first_result(vm, prog, tier: str) -> tuple[float, object]:
    # Until the load returns with code ready to run (the generated programs are for compiling,
    # not running; a run of the trivial program costs ~2 us against these milliseconds).
    t0 = time.perf_counter()
    lp = vm.load(prog, engine="jit", tier=tier, verify=False)
    return time.perf_counter() - t0, lp


def _latencies(size: int, trials: int, seed0: int) -> dict:
    vm = _vm()
    out = {}
    progs = programs(size, 2 * trials, seed=seed0)
    with _CacheDir(off=True):
        times = []
        for k in range(trials):
            dt, lp = _first_result(vm, progs[k], "O2")
            lp.close()
            times.append(dt)
        out["o2_load"] = _stats(times)
    quick_progs = programs(size, trials, seed=seed0 + 50_000)
    with _CacheDir(), _BaselineOff():
        times = []
        for k in range(trials):
            dt, lp = _first_result(vm, quick_progs[k], "auto")
            if lp._jit.tier != "quick":
                raise BPFError(f"bench_tiers: baseline off, yet the first tier was "
                               f"{lp._jit.tier}")
            times.append(dt)
            tiers.drain()
            lp.close()
        out["first_result_quick"] = _stats(times)
    with _CacheDir():
        first, installed, warm, verify_cold, verify_warm = [], [], [], [], []
        first_tier = {}
        for k in range(trials):
            prog = progs[trials + k]
            t0 = time.perf_counter()
            dt, lp = _first_result(vm, prog, "auto")
            first.append(dt)
            first_tier[lp._jit.tier] = first_tier.get(lp._jit.tier, 0) + 1
            tiers.drain()
            at = getattr(lp._jit, "installed_at", None)
            if lp._jit.tier != "O2" or at is None:
                raise BPFError(f"bench_tiers: -O2 code was not installed "
                               f"({getattr(lp._jit, 'tier_error', lp._jit.tier)})")
            installed.append(at - t0)
            lp.close()
            # the same program again: its -O2 code is in the cache now
            t1 = time.perf_counter()
            lp = vm.load(prog, engine="jit", tier="auto", verify=False)
            warm.append(time.perf_counter() - t1)
            if lp._jit.cache != "hit" or lp._jit.tier != "O2":
                raise BPFError(f"bench_tiers: warm load was {lp._jit.cache}/{lp._jit.tier}")
            lp.close()
            if size > VERIFIED_MAX:
                continue
            # the default load (verified), its code (keyed on the verifier's facts too) in the
            # cache: the verdict computed ...
            os.environ["PYBPF_VERDICT_CACHE"] = "off"
            try:
                vm.load(prog, engine="jit", tier="auto").close()   # compiles the verified code
                tiers.drain()
                t1 = time.perf_counter()
                lp = vm.load(prog, engine="jit", tier="auto")
                verify_cold.append(time.perf_counter() - t1)
                if lp._jit.cache != "hit":
                    raise BPFError(f"bench_tiers: the verified code was {lp._jit.cache}")
                lp.close()
            except VerifierError:
                continue        # a generated program the verifier refuses (div by zero...)
            finally:
                del os.environ["PYBPF_VERDICT_CACHE"]
            vm.load(prog, engine="jit", tier="auto").close()   # stores the verdict
            # ... and taken from the verdict cache
            before = verdicts.counters()["hits"]
            t1 = time.perf_counter()
            lp = vm.load(prog, engine="jit", tier="auto")
            verify_warm.append(time.perf_counter() - t1)
            if verdicts.counters()["hits"] != before + 1 or lp._jit.cache != "hit":
                raise BPFError("bench_tiers: the warm verified load missed a cache")
            lp.close()
        out["first_result"] = _stats(first)
        out["first_tier"] = first_tier
        out["o2_installed"] = _stats(installed)
        out["warm_load"] = _stats(warm)
        if verify_warm:
            out["verified_uncached"] = _stats(verify_cold)
            out["verified_warm"] = _stats(verify_warm)
    return out


def _runtime(quick: bool) -> dict:
    from pybpf.benchmarks.bench_interp import ALU_LOOP
    from pybpf.benchmarks.bench_switch import BPF_OBJ, buffer

    out = {}
    vm = pybpf.VM()
    obj = pybpf.load_elf(BPF_OBJ)
    cases = [("ALU loop", vm, pybpf.assemble(ALU_LOOP.format(n=1000)), "mem", bytes(64)),
             ("64-way switch", obj.vm, obj.programs["switch64"], "mem", buffer())]
    batches = 7 if quick else 25
    for name, v, prog, ptype, mem in cases:
        with _CacheDir(off=True):
            # trusted benchmark programs (the ALU loop's 8,192 jumps are past the verifier's
            # complexity limit, as in bench_jit): loaded unverified
            lq = v.load(prog, engine="jit", prog_type=ptype, tier="quick", verify=False)
            lo = v.load(prog, engine="jit", prog_type=ptype, tier="O2", verify=False)
            lb = v.load(prog, engine="jit", prog_type=ptype, tier="baseline", verify=False)
        try:
            if not lq.run(mem=mem) == lo.run(mem=mem) == lb.run(mem=mem):
                raise BPFError(f"bench_tiers: {name}: baseline, quick and -O2 results differ")
            q, o, b = [], [], []
            with gc_paused():
                for _ in range(batches):
                    q.append(lq.test_run(mem=mem, repeat=20)[1])
                    o.append(lo.test_run(mem=mem, repeat=20)[1])
                    b.append(lb.test_run(mem=mem, repeat=20)[1])
        finally:
            lq.close()
            lo.close()
            lb.close()
        out[name] = {"quick_ns": statistics.median(q), "o2_ns": statistics.median(o),
                     "baseline_ns": statistics.median(b), "quick_min_ns": min(q),
                     "o2_min_ns": min(o), "baseline_min_ns": min(b)}
    return out


def run(report=None, quick: bool = False, sizes=SIZES) -> dict:
    say = report or (lambda line: None)
    codegen.start_workers(wait=True)
    trials = {20: 4, 200: 4, 2000: 1} if quick else {20: 30, 200: 30, 2000: 8}
    out = {"sizes": {}}
    for i, size in enumerate(sizes):
        say(f"tiers: {size}-slot programs, {trials[size]} trials per figure")
        out["sizes"][size] = _latencies(size, trials[size], 7000 + 100_000 * i)
    say("tiers: quick vs -O2 runtime")
    out["runtime"] = _runtime(quick)
    return out


def format_table(r: dict) -> str:
    """The figures, each latency with its ratio to the -O2 load without cache measured in the
    same run (``x``: how many times less time than that baseline)."""
    lines = [f"{'figure':54} {'min':>9} {'median':>9} {'vs -O2 load (median)':>22}"]
    for size, f in r["sizes"].items():
        base = f["o2_load"]["median_ms"]
        for key, label in (("o2_load", "-O2 load, no cache (reference)"),
                           ("first_result", "first result, tier auto (baseline), cold"),
                           ("first_result_quick", "first result, LLVM quick tier, cold"),
                           ("o2_installed", "-O2 installed after load, tier auto"),
                           ("warm_load", "load with -O2 in the code cache")):
            s = f[key]
            ratio = "" if key == "o2_load" else f"{base / s['median_ms']:.1f}x less time"
            lines.append(f"{size:>5} slots: {label:41} {s['min_ms']:7.2f}ms "
                         f"{s['median_ms']:7.2f}ms {ratio:>22}")
        if f.get("first_tier"):
            lines.append(f"{size:>5} slots: first tier of the auto loads: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(f["first_tier"].items())))
        if "verified_warm" in f:
            u, w = f["verified_uncached"], f["verified_warm"]
            lines.append(f"{size:>5} slots: {'verified load, verdict not cached':41} "
                         f"{u['min_ms']:7.2f}ms {u['median_ms']:7.2f}ms")
            lines.append(f"{size:>5} slots: {'verified load, verdict cached':41} "
                         f"{w['min_ms']:7.2f}ms {w['median_ms']:7.2f}ms "
                         f"{u['median_ms'] / w['median_ms']:.0f}x less than not cached")
    for name, f in r["runtime"].items():
        lines.append(f"{name}: baseline {f['baseline_ns'] / 1e3:.2f} us, quick "
                     f"{f['quick_ns'] / 1e3:.2f} us, -O2 {f['o2_ns'] / 1e3:.2f} us per run "
                     f"(median; baseline/-O2 = {f['baseline_ns'] / f['o2_ns']:.2f}x, "
                     f"quick/-O2 = {f['quick_ns'] / f['o2_ns']:.2f}x)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(run, format_table)
