"""The benchmark suite runner: every bench module, one table of figures, goals and ratios.

Each section imports one bench module, runs it and turns its results into :class:`Figure` rows:
a value, the goal it must meet (issue 4) if any, and a baseline measured in the same run with the
ratio between the two (how many times better than the baseline the figure is):

=============  ===============================================  ==============================
section        figures                                          baseline
=============  ===============================================  ==============================
compile        compile-and-place median and p95 for ~20, 200    the same size at -O1 (for -O2)
               and 2,000 instructions at -O1 and -O2
               (bench_compile; goal: 200 at -O2 < 10 ms)
execmem        alloc+fill+free per program for each write       the mprotect write path
               path (goal < 20 us for procmem and memfd),
               permission changes per load, packs for 1,000
               resident programs
jit            test_run ns per run, trivial program             a ctypes call per run from a
               (goal < 5 ns); the ALU loop per run              Python loop; the interpreter
interp         interpreter instructions per second              (none)
arena          arena hash table (samples/arena_htab): inserts   the interpreter; a Python dict
               (one run per key), selftest ops (one run),       doing the same work
               lookups per second, from JIT'd BPF
maps           hash/array map_lookup_elem per second from       the interpreter; the same JIT
               JIT'd code (native lookups)                      code through the Python bridge;
                                                                a Python dict
pkt_helpers    ns per call of xdp_load/store_bytes,             the same JIT code through the
               skb_load_bytes, xdp_adjust_head (a pair),        Python bridge
               csum_diff (native)
switch         a 64-way switch over 4 KiB (benchmarks/c),       the same C compiled natively
               JIT'd BPF (goal: within 2x of native)            with clang -O2
verifier       verification time, processed insns/s, states     the running kernel's
               (200 straight-line insns: goal < 20 ms; 1,000    BPF_PROG_LOAD of the same
               insns with a 100-iteration loop: goal < 1 s);    program (where bpf() is
               differential vs the kernel (tests/verifier_gen)  permitted)
bigprog        load CPU time, peak RSS growth and run time of   (none)
               a branchy program of 10k and 100k slots (1M
               with PYBPF_BENCH_BIGPROG=1): interpreter
               unverified and verified, JIT baseline and -O2
               tiers, each in a fresh child (bench_bigprog)
tiers          first result (tier auto, cold: the baseline      today's -O2 load (cache off);
               tier; and the LLVM quick tier), -O2 installed,   the quick and baseline
               warm-cache load for 20/200/2,000 slots; quick    tiers' runtime
               and baseline vs -O2 runtime (goals at 200:
               < 5 ms, < 50 ms, < 1 ms)
=============  ===============================================  ==============================

A missing module (``bench_compile`` is optional) skips its section; a section that raises is
reported with its error and the others still run. ``pybpf bench`` and
``python -m pybpf.benchmarks.run`` print the table (``--quick`` for a short run).
"""
from __future__ import annotations

import importlib
import math
import sys
import time
from dataclasses import dataclass, field

from pybpf.benchmarks import common

SECTIONS = ("compile", "execmem", "jit", "interp", "arena", "maps", "pkt_helpers", "switch",
            "verifier", "tiers", "bigprog")
_MODULES = {"compile": "bench_compile", "execmem": "bench_execmem", "jit": "bench_jit",
            "interp": "bench_interp", "arena": "bench_arena", "maps": "bench_maps",
            "pkt_helpers": "bench_pkt_helpers",
            "switch": "bench_switch", "verifier": "bench_verifier", "tiers": "bench_tiers",
            "bigprog": "bench_bigprog"}
_TITLES = {"compile": "JIT compile-and-place latency", "execmem": "execmem write paths",
           "jit": "running JIT code", "interp": "reference interpreter",
           "arena": "arena hash table (samples/arena_htab)", "maps": "map lookups from JIT code",
           "pkt_helpers": "packet helpers from JIT code (native vs bridge)",
           "switch": "64-way switch (benchmarks/c/switch64.h)",
           "verifier": "verifier speed and agreement with the kernel",
           "tiers": "tiered compilation and the code cache (bench_tiers)",
           "bigprog": "very large programs, up to the kernel's 1M instructions (bench_bigprog)"}


@dataclass
class Figure:
    """One measured value. ``goal`` is an upper bound in ``unit`` (``goal_op`` "<" or "<=");
    ``ratio`` is how many times better than ``baseline`` the value is."""

    name: str
    value: float
    unit: str
    goal: float | None = None
    goal_op: str = "<"
    baseline_name: str | None = None
    baseline: float | None = None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.value or not self.baseline:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value < self.goal if self.goal_op == "<" else self.value <= self.goal


@dataclass
class Section:
    name: str
    module: str
    figures: list[Figure] = field(default_factory=list)
    status: str = "ok"            # ok | skipped | failed
    note: str = ""
    seconds: float = 0.0
    raw: dict | None = None


# -- adapters: a bench module's results -> figures --------------------------------------------

def _nearest(slots: float, sizes=(20, 200, 2000)) -> int:
    return min(sizes, key=lambda s: abs(math.log(max(slots, 1) / s)))


def _compile(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    series = {(_nearest(r["slots"]), r["opt"]): r for r in raw["series"]}
    figs = []
    for (size, opt), r in sorted(series.items()):
        base = series.get((size, 1)) if opt == 2 else None
        label = f"compile+place ~{size} insns -O{opt}"
        figs.append(Figure(f"{label}, median", r["median_ms"], "ms",
                           goal=10.0 if (size, opt) == (200, 2) else None,
                           baseline_name="-O1" if base else None,
                           baseline=base["median_ms"] if base else None))
        figs.append(Figure(f"{label}, p95", r["p95_ms"], "ms",
                           baseline_name="-O1" if base else None,
                           baseline=base["p95_ms"] if base else None))
    floor = raw.get("llvm_floor")
    if floor:
        figs.append(Figure("LLVM alone, ~200 insns -O2, on its own -O2 output",
                           floor["llvm_optimised_ms"], "ms",
                           baseline_name="LLVM alone on the lowered IR",
                           baseline=floor["llvm_ms"]))
    return raw, figs


def _execmem(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, iterations=300 if quick else 3000)
    backends = raw["backends"]
    base = {c["size"]: c for c in backends.get("mprotect", {}).get("cycles", [])}
    figs = []
    for b, r in backends.items():
        for c in r["cycles"]:
            ref = base.get(c["size"]) if b != "mprotect" else None
            # The goal is for the W^X paths pybpf picks; mprotect is the old way, the baseline.
            figs.append(Figure(f"alloc+fill+free {b}, {c['size']} B code, median",
                               c["median_us"], "us", goal=20.0 if b != "mprotect" else None,
                               baseline_name="mprotect path" if ref else None,
                               baseline=ref["median_us"] if ref else None))
        perm = max(c["permission_changes_per_load"] for c in r["cycles"])
        # The W^X paths promise no permission change after the pack exists.
        figs.append(Figure(f"permission changes per load, {b}", perm, "",
                           goal=0.0 if b != "mprotect" else None, goal_op="<="))
        figs.append(Figure(f"pack huge-page backing after the writes, {b}",
                           r["huge_pages_kb_after"], "kB", higher_is_better=True))
        figs.append(Figure(f"packs for 1,000 resident programs, {b}",
                           r["resident"]["packs"], "", goal=1.0, goal_op="<="))
    return raw, figs


def _jit(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    t, a = raw["test_run"], raw["alu"]
    figs = [Figure("test_run overhead per run, trivial program", t["test_run_ns"], "ns",
                   goal=5.0, baseline_name="ctypes call from a Python loop",
                   baseline=t["ctypes_call_ns"]),
            Figure("lp.run() per call, trivial program", t["lp_run_ns"], "ns",
                   baseline_name="ctypes call from a Python loop", baseline=t["ctypes_call_ns"]),
            Figure(f"ALU loop per run, JIT ({a['insns_per_run']} insns)", a["jit_ns"] / 1e3,
                   "us", baseline_name="interpreter", baseline=a["interp_ns"] / 1e3),
            Figure("ALU loop, JIT instructions per second", a["jit_insns_per_s"] / 1e6,
                   "M/s", baseline_name="interpreter", baseline=a["interp_insns_per_s"] / 1e6,
                   higher_is_better=True)]
    for name, h in raw["helpers"].items():
        figs.append(Figure(f"bpf_{name} from JIT code, per call (inline)", h["native_ns"], "ns",
                           baseline_name="the same helper through the Python bridge",
                           baseline=h["bridge_ns"]))
    return raw, figs


def _interp(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(min_seconds=0.2 if quick else 1.0)
    figs = [Figure(f"interpreter {w} loop, instructions per second",
                   raw[w]["insns_per_second"] / 1e6, "M/s", higher_is_better=True)
            for w in ("alu", "memory", "branchy") if w in raw]
    if "run_overhead_us" in raw:
        figs.append(Figure("interpreter lp.run() overhead", raw["run_overhead_us"], "us"))
    return raw, figs


def _arena(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    j, i, d = raw["jit"], raw["interp"], raw["dict"]
    figs = []
    for key, what, unit, scale in (
            ("inserts_per_s", "inserts, one lp.run per key", "k/s", 1e3),
            ("selftest_ops_per_s", "ins+find+del ops in one BPF run", "M/s", 1e6),
            ("lookups_per_s", "lookups (htab_query, test_run)", "M/s", 1e6)):
        for base_name, base in (("interpreter", i), ("Python dict, same work", d)):
            figs.append(Figure(f"arena htab {what}, JIT", j[key] / scale, unit,
                               baseline_name=base_name, baseline=base[key] / scale,
                               higher_is_better=True))
    return raw, figs


def _maps(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    figs = []
    for mtype, r in raw.items():
        for base_name, key in (("interpreter", "interp_per_s"),
                               ("JIT through the Python bridge", "jit_bridge_per_s"),
                               ("Python dict", "dict_per_s")):
            figs.append(Figure(f"{mtype} map_lookup_elem from JIT code (native)",
                               r["jit_native_per_s"] / 1e6, "M/s", baseline_name=base_name,
                               baseline=r[key] / 1e6, higher_is_better=True))
    return raw, figs


def _pkt_helpers(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    figs = [Figure(f"{name} from JIT code (native), per call", r["native_call_ns"], "ns",
                   baseline_name="JIT through the Python bridge", baseline=r["bridge_call_ns"])
            for name, r in raw.items()]
    return raw, figs


def _verifier(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    figs = []
    for r in raw["speed"]:
        goal = mod.PROGRAMS[r["name"]][1]
        k = r["kernel_ms"]
        figs.append(Figure(f"verify {r['name']} ({r['slots']} insns), min", r["min_ms"], "ms",
                           goal=goal, baseline_name="the kernel's BPF_PROG_LOAD" if k else None,
                           baseline=k))
        figs.append(Figure(f"verify {r['name']}, CPU time min", r["cpu_min_ms"], "ms",
                           goal=goal))
        figs.append(Figure(f"verify {r['name']}, insns processed per second",
                           r["insns_per_s"] / 1e3, "k/s", higher_is_better=True))
        figs.append(Figure(f"verify {r['name']}, insns processed / states",
                           r["processed_insns"], f"/ {r['total_states']} states"))
    d = raw.get("differential")
    if d:
        ka, both = d["kernel_accepts"], d["both_reject"]
        figs.append(Figure(f"kernel rejects / pybpf accepts ({d['count']} programs)",
                           d["unsound"], "", goal=0.0, goal_op="<="))
        figs.append(Figure(f"kernel accepts / pybpf rejects (of {ka})",
                           100.0 * d["too_strict"] / ka if ka else 0.0, "%", goal=5.0))
        figs.append(Figure(f"rejection messages equal to the kernel's (of {both})",
                           100.0 * d["message_match"] / both if both else 0.0, "%",
                           higher_is_better=True))
    return raw, figs


def _switch(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    figs = []
    for stat in ("min", "median"):
        # goal (issue 13): within 2x of the same C compiled natively, as a ratio of times
        figs.append(Figure(f"64-way switch, 4 KiB per run, JIT, {stat}",
                           raw[f"jit_{stat}_ns"] / 1e3, "us",
                           baseline_name="same C, clang -O2 x86-64",
                           baseline=raw[f"native_{stat}_ns"] / 1e3))
    figs.append(Figure("64-way switch, JIT time / native time, median", raw["ratio_median"], "x",
                       goal=2.0))
    return raw, figs


def _tiers(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    figs = []
    for size, f in raw["sizes"].items():
        base = f["o2_load"]
        for stat in ("min", "median"):
            goal = 5.0 if size == 200 and stat == "median" else None
            figs.append(Figure(f"first result, {size} slots, tier auto (cold), {stat}",
                               f["first_result"][f"{stat}_ms"], "ms", goal=goal,
                               baseline_name="-O2 load, no cache",
                               baseline=base[f"{stat}_ms"]))
            figs.append(Figure(f"first result, {size} slots, LLVM quick tier (cold), {stat}",
                               f["first_result_quick"][f"{stat}_ms"], "ms",
                               baseline_name="-O2 load, no cache",
                               baseline=base[f"{stat}_ms"]))
        figs.append(Figure(f"-O2 installed after load, {size} slots, median",
                           f["o2_installed"]["median_ms"], "ms",
                           goal=50.0 if size == 200 else None,
                           baseline_name="-O2 load, no cache", baseline=base["median_ms"]))
        figs.append(Figure(f"load from the warm code cache, {size} slots, median",
                           f["warm_load"]["median_ms"], "ms",
                           goal=1.0 if size == 200 else None,
                           baseline_name="-O2 load, no cache", baseline=base["median_ms"]))
    for name, r in raw["runtime"].items():
        figs.append(Figure(f"{name} per run, -O2 tier", r["o2_ns"] / 1e3, "us",
                           baseline_name="quick tier", baseline=r["quick_ns"] / 1e3))
        figs.append(Figure(f"{name} per run, -O2 tier vs the baseline tier", r["o2_ns"] / 1e3,
                           "us", baseline_name="baseline tier",
                           baseline=r["baseline_ns"] / 1e3))
    return raw, figs


def _bigprog(mod, quick: bool, say) -> tuple[dict, list[Figure]]:
    raw = mod.run(report=say, quick=quick)
    figs = []
    for r in raw["rows"]:
        what = (f"{r['slots']:,} slots, {r['engine']}"
                + (f" {r['tier']}" if r["tier"] else "") + (", verified" if r["verify"] else ""))
        if "error" in r:
            figs.append(Figure(f"{what}: {r['error']}", float("nan"), ""))
            continue
        figs.append(Figure(f"{what}: load CPU time", r["load_cpu_s"], "s"))
        figs.append(Figure(f"{what}: peak RSS growth (load and run)", r["peak_growth_mib"],
                           "MiB"))
        figs.append(Figure(f"{what}: run CPU time" + ("" if r["r0_ok"] else " (WRONG r0)"),
                           r["run_cpu_s"] * 1e3, "ms"))
    return raw, figs


_ADAPTERS = {"compile": _compile, "execmem": _execmem, "jit": _jit, "interp": _interp,
             "arena": _arena, "maps": _maps, "pkt_helpers": _pkt_helpers, "switch": _switch,
             "verifier": _verifier,
             "tiers": _tiers, "bigprog": _bigprog}


# -- the suite ---------------------------------------------------------------------------------

def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {**common.machine(), "cpu": model}


def run_suite(quick: bool = False, sections=None, report=None) -> dict:
    """Run the chosen sections (all by default); ``report(line)`` gets progress lines.

    Returns ``{"machine", "quick", "seconds", "sections": [Section]}``; never raises for a
    failing section (its ``status`` is "failed" and ``note`` says why).
    """
    say = report or (lambda line: None)
    chosen = list(sections or SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(SECTIONS)})")
    t_all = time.perf_counter()
    out = []
    for name in chosen:
        sec = Section(name, _MODULES[name])
        out.append(sec)
        try:
            mod = importlib.import_module(f"{__package__ or 'pybpf.benchmarks'}.{sec.module}")
        except Exception as e:
            if isinstance(e, ModuleNotFoundError) and (e.name or "").endswith(sec.module):
                sec.status, sec.note = "skipped", f"benchmarks/{sec.module}.py is not present"
            else:
                sec.status, sec.note = "failed", f"import: {type(e).__name__}: {e}"
            say(f"{name}: {sec.status} ({sec.note})")
            continue
        say(f"{name}: running {sec.module}{' (quick)' if quick else ''}")
        t0 = time.perf_counter()
        try:
            sec.raw, sec.figures = _ADAPTERS[name](mod, quick, say)
        except Exception as e:  # one broken bench must not hide the others' figures
            sec.status, sec.note = "failed", f"{type(e).__name__}: {e}"
            say(f"{name}: failed: {sec.note}")
        sec.seconds = time.perf_counter() - t0
    return {"machine": machine(), "quick": quick, "seconds": time.perf_counter() - t_all,
            "sections": out}


def _num(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def _value(v: float, unit: str) -> str:
    return f"{_num(v)} {unit}".rstrip()


def format_report(results: dict) -> str:
    """The table: each figure with its goal, its baseline and the ratio, then the goals."""
    m = results["machine"]
    lines = [f"pybpf benchmark suite{' (quick run)' if results['quick'] else ''}: Linux "
             f"{m['kernel']}, Python {m['python']}, {m['cpus']} CPUs"
             f"{', ' + m['cpu'] if m['cpu'] else ''}; {results['seconds']:.1f} s",
             "ratio = how many times better than the baseline measured in the same run",
             "",
             f"{'figure':52} {'value':>11}  {'goal':<10} {'baseline':<40} {'ratio':>7}"]
    goals = []
    for sec in results["sections"]:
        lines.append(f"-- {_TITLES[sec.name]} ({sec.module}, {sec.seconds:.1f} s)")
        if sec.status != "ok":
            lines.append(f"   {sec.status}: {sec.note}")
            continue
        for f in sec.figures:
            goal = f"{f.goal_op} {_value(f.goal, f.unit)}" if f.goal is not None else ""
            base = (f"{f.baseline_name}: {_value(f.baseline, f.unit)}"
                    if f.baseline is not None else "")
            ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
            lines.append(f"{f.name:52} {_value(f.value, f.unit):>11}  {goal:<10} {base:<40} "
                         f"{ratio:>7}".rstrip())
            if f.goal is not None:
                goals.append(f)
    lines += ["", "goals:"]
    for f in goals:
        lines.append(f"  {'met   ' if f.met else 'MISSED'} {f.name}: {_value(f.value, f.unit)} "
                     f"(goal {f.goal_op} {_value(f.goal, f.unit)})")
    met = sum(1 for f in goals if f.met)
    lines.append(f"{met} of {len(goals)} goals met")
    failed = [s.name for s in results["sections"] if s.status == "failed"]
    if failed:
        lines.append(f"failed sections: {', '.join(failed)}")
    return "\n".join(lines) + "\n"


def goals_met(results: dict) -> bool:
    return all(f.met for s in results["sections"] for f in s.figures if f.goal is not None)


def to_json(results: dict) -> dict:
    """``results`` with plain dicts for the sections (for ``--json``)."""
    secs = [{"name": s.name, "module": s.module, "status": s.status, "note": s.note,
             "seconds": s.seconds, "raw": s.raw,
             "figures": [dict(vars(f), ratio=f.ratio, met=f.met) for f in s.figures]}
            for s in results["sections"]]
    return dict(results, sections=secs)


def main(argv=None) -> int:
    """``python -m pybpf.benchmarks.run [--quick] ...``: the same as ``pybpf bench``."""
    from pybpf.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
