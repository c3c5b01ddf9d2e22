"""Benchmark of the JIT's compile-and-place latency (issue 4).

For programs of about 20, 200 and 2,000 instruction slots, at -O1 and -O2, it times
``compile_program(prog, helpers, opt_level)``: lowering to LLVM IR in this process, the round trip
to a warm compile worker (parse, optimise, emit, extract ``.text``), placement in the pack
allocator and wrapping the entry in a callable. Every sample is a different program (seeded, so
runs are repeatable): nothing is cached between samples. The figures are the median and the
95th percentile in milliseconds, plus the median of each stage (from ``JitProgram.timings``):
``lower`` (IR built and printed), ``worker`` (request sent to reply read; inside it ``llvm``,
the worker's own time, split into parse/verify/opt/emit/extract) and ``place``. On a shared
machine wall times include waiting for a CPU, so the CPU time of each compile (this thread's
plus the worker's) is given too; it leaves out the waiting, not the slowdown from caches and
memory shared with other work.

The programs look like real ones: registers start from a context buffer (r1), then about half
ALU (every width and form, divisions and shifts included), a quarter loads and stores on the
stack and on the context, forward branches, bounded loops, 64-bit constants, helper calls (a
Python helper) and, from 200 slots on, BPF-to-BPF calls. Each program passes the verifier's
structural CFG checks. The first samples are warm-up (the process's first helper call also
builds the shared helper bridge once).

The *LLVM floor* (200 slots, -O2) shows how much of the latency is LLVM's own cost: the
worker's time for the lowered IR of each program, and for that program's -O2 output compiled
again at -O2, which leaves the optimiser nothing to remove (so the time the pipeline and code
generation take even for IR that is already optimal).

``run()`` returns the figures as a dict; ``python benchmarks/bench_compile.py`` (or
``python -m pybpf.benchmarks.bench_compile``) prints a table. ``--quick`` takes fewer samples,
``--profile`` adds a cProfile of the lowering of a 200-slot program.
"""
from __future__ import annotations

import cProfile
import gc
import io
import pstats
import statistics
import sys
import time

from pybpf.benchmarks.common import machine, percentile
from pybpf import isa
from pybpf.benchmarks.proggen import ItemGenerator, items_to_program, slots_of
from pybpf.program import Program

SIZES = (20, 200, 2000)
OPT_LEVELS = (1, 2)
# Samples per size: enough for a stable p95 without hogging a shared machine.
SAMPLES = {20: 200, 200: 100, 2000: 30}
QUICK_SAMPLES = {20: 60, 200: 30, 2000: 8}
WARMUP = 5

_SCALARS = (0, 2, 3, 4, 5, 7, 8, 9)   # r1 = ctx (copied to r6), r6 = ctx, r10 = frame
_CTX_SIZE = 64
_STACK_USE = 64
_IMMS = (0, 1, -1, 2, 7, 31, 32, 63, 0x7FFFFFFF, -0x80000000, 0x12345678, 255, 0xFFFF)


def _helpers() -> dict:
    """One Python helper (id 1), as a program calling bpf_trace_printk-like helpers has."""
    return {1: lambda a=0, b=0, c=0, d=0, e=0: (a ^ b) + c}


class _Gen(ItemGenerator):
    """Seeded program generator: a list of ("insn", form, ops) / ("jump", ...) / ("label", name)
    items that :func:`pybpf.benchmarks.proggen.items_to_program` resolves into slots."""

    def __init__(self, seed: int, small: bool = False, helpers: bool = True) -> None:
        # A tiny program has room for a few registers and stack slots only.
        super().__init__(seed, _SCALARS[:4] if small else _SCALARS, _IMMS,
                         16 if small else _STACK_USE, _CTX_SIZE)
        self.helpers = helpers
        forms = isa.FORMS
        self.alu = [f for f in forms if f.kind in ("alu", "neg", "movsx", "end")]
        self.jcond = [f for f in forms if f.kind == "jcond"]
        self.ldx = [f for f in forms if f.kind == "ldx" and not f.signed]
        self.stores = [f for f in forms if f.kind in ("st", "stx")]
        self.f = isa.FORMS_BY_NAME

    def _alu(self, avoid) -> list:
        form = self.rnd.choice(self.alu)
        ops = {"dst": self.reg(avoid)}
        if form.source == "X" or form.kind == "movsx":
            ops["src"] = self.reg()
        if form.fields["imm"] == "any":
            shift = form.op in ("lsh", "rsh", "arsh")
            ops["imm"] = self.rnd.randrange(form.width) if shift else self.imm()
        return [self.insn(form, **ops)]

    def _helper_call(self, avoid) -> list:
        if 0 in avoid:
            return self._alu(avoid)
        out = [self.insn("mov64_reg", dst=r, src=self.reg((1, 2, 3, 4, 5))) for r in (1, 2, 3)]
        out.append(self.insn("call_helper", imm=1))
        return out + [self.insn("mov64_imm", dst=r, imm=self.imm()) for r in (1, 2, 3, 4, 5)]

    def _local_call(self, avoid, callees) -> list:
        if not callees or 0 in avoid:
            return self._alu(avoid)
        out = [self.insn("mov64_reg", dst=1, src=6), self.insn("mov64_reg", dst=2, src=self.reg())]
        out.append(("call", self.f["call_local"], {"label": self.rnd.choice(callees)}))
        return out + [self.insn("mov64_imm", dst=r, imm=self.imm()) for r in (1, 2, 3, 4, 5)]

    def body(self, budget: int, avoid, depth: int, callees) -> list:
        """Units until about ``budget`` slots are used."""
        out: list = []
        while slots_of(out) < budget:
            r = self.rnd.random()
            if r < 0.48:
                out += self._alu(avoid)
            elif r < 0.51:
                value = self.rnd.getrandbits(64)
                out.append(self.insn("lddw", dst=self.reg(avoid), imm=value & 0xFFFFFFFF,
                                     imm2=value >> 32))
            elif r < 0.76:
                out += self.mem_unit(avoid)
            elif r < 0.90 and depth < 3:
                form, target = self.rnd.choice(self.jcond), self.label()
                ops = {"dst": self.reg(), "label": target}
                if form.source == "X":
                    ops["src"] = self.reg()
                else:
                    ops["imm"] = self.imm()
                skipped = self.body(self.rnd.randint(1, 6), avoid, depth + 1, callees)
                out += [("jump", form, ops)] + skipped + [("label", target)]
            elif r < 0.94 and depth == 0 and budget - slots_of(out) > 8 and 8 in self.scalars:
                counter = self.rnd.choice([c for c in (8, 9) if c not in avoid])
                top = self.label()
                inner = self.body(self.rnd.randint(2, 8), set(avoid) | {counter}, depth + 1,
                                  callees)
                out += ([self.insn("mov64_imm", dst=counter, imm=self.rnd.randint(1, 4)),
                         ("label", top)] + inner
                        + [self.insn("sub64_imm", dst=counter, imm=1),
                           ("jump", self.f["jne64_imm"], {"dst": counter, "imm": 0,
                                                          "label": top})])
            elif r < 0.97 and self.helpers:
                out += self._helper_call(avoid)
            else:
                out += self._local_call(avoid, callees)
        return out

    def function(self, budget: int, callees, label: str | None) -> list:
        out = [("label", label)] if label else []
        out.append(self.insn("mov64_reg", dst=6, src=1))
        out += [self.insn("stdw", dst=10, off=-8 * (k + 1), imm=0)
                for k in range(self.stack_use // 8)]
        # Registers start from the input (most of them) or constants, as in real programs;
        # all-constant registers would let LLVM fold much of the program away.
        out += [self.insn("ldxdw", dst=r, src=6, off=8 * k) if k % 4 else
                self.insn("mov64_imm", dst=r, imm=self.imm())
                for k, r in enumerate(self.scalars)]
        fixed = slots_of(out) + len(self.scalars) + 1
        out += self.body(max(budget - fixed, 1), (), 0, callees)
        out += [self.insn("add64_reg" if r % 2 else "xor64_reg", dst=0, src=r)
                for r in self.scalars if r]
        return out + [self.insn("exit")]


def bench_program(slots: int, seed: int, helpers: bool = True) -> Program:
    """A structurally valid program of about ``slots`` slots (see the module docstring);
    ``helpers=False`` leaves out the helper calls."""
    gen = _Gen(seed, small=slots < 60, helpers=helpers)
    nsub = 0 if slots < 100 else max(1, slots // 400)
    sub_budget = slots // 10
    names = [f"fn{i}" for i in range(nsub)]
    items = gen.function(slots - nsub * sub_budget, names, None)
    for i, name in enumerate(names):   # fn_i calls only fn_j, j > i: no recursion
        items += gen.function(sub_budget, names[i + 1:], name)
    return items_to_program(items, f"bench{slots}_{seed}")


def programs(slots: int, count: int, seed: int = 1, helpers: bool = True) -> list[Program]:
    """``count`` distinct programs of about ``slots`` slots, each passing the CFG checks."""
    from pybpf.errors import VerifierError
    from pybpf.verifier.cfg import build_cfg

    out, s = [], seed * 1_000_003 + slots
    while len(out) < count:
        s += 1
        prog = bench_program(slots, s, helpers)
        try:
            build_cfg(prog, check=True)
        except VerifierError:  # an uncalled subprogram (unreachable): draw another
            continue
        out.append(prog)
    return out


def _workers_cpu_s() -> float | None:
    """CPU time the compile workers have used so far (``/proc/<pid>/schedstat``, in ns)."""
    from pybpf.jit.codegen import worker_info

    total = 0
    for info in worker_info():
        try:
            with open(f"/proc/{info['pid']}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


def _series(slots: int, opt: int, count: int, helpers) -> dict:
    from pybpf.jit import compile_program

    progs = programs(slots, count + WARMUP, seed=opt)
    totals, cpus, stages = [], [], {}
    gc.collect()
    for k, prog in enumerate(progs):
        w0 = _workers_cpu_s()
        c0, t0 = time.thread_time(), time.perf_counter()
        jp = compile_program(prog, helpers, opt_level=opt)
        dt, dc = time.perf_counter() - t0, time.thread_time() - c0
        w1 = _workers_cpu_s()
        timings = dict(getattr(jp, "timings", None) or {})
        timings.pop("cpu", None)
        jp.close()
        if k < WARMUP:
            continue
        totals.append(dt * 1e3)
        if w0 is not None and w1 is not None:  # this thread's CPU time plus the workers'
            cpus.append((dc + w1 - w0) * 1e3)
        for name, value in timings.items():
            stages.setdefault(name, []).append(value * 1e3)
    out = {"slots": statistics.mean(len(p.insns) for p in progs[WARMUP:]),
           "samples": len(totals), "median_ms": statistics.median(totals),
           "p95_ms": percentile(totals, 0.95), "min_ms": min(totals),
           "stages_ms": {k: statistics.median(v) for k, v in stages.items()}}
    if cpus:
        out["cpu_median_ms"], out["cpu_p95_ms"] = statistics.median(cpus), percentile(cpus, 0.95)
    return out


def llvm_floor(slots: int = 200, opt: int = 2, count: int = 20) -> dict:
    """Medians (ms) of the worker's LLVM time for lowered IR and for its own -O<opt> output."""
    from pybpf.jit.codegen import compile_ir
    from pybpf.jit.lower import lower_program

    helpers = _helpers()
    raw, again, steps = [], [], {}
    for k, prog in enumerate(programs(slots, count + 2, seed=11)):
        first = compile_ir(lower_program(prog, helpers, comments=False).ir, opt, want_ir=True)
        second = compile_ir(first.ir_after, opt)
        if k < 2:    # warm-up
            continue
        raw.append(sum(first.times[s] for s in _LLVM_STEPS) * 1e3)
        again.append(sum(second.times[s] for s in _LLVM_STEPS) * 1e3)
        for name in ("opt", "emit"):
            steps.setdefault(f"raw_{name}", []).append(first.times[name] * 1e3)
            steps.setdefault(f"again_{name}", []).append(second.times[name] * 1e3)
    out = {"slots": slots, "opt": opt, "samples": len(raw),
           "llvm_ms": statistics.median(raw), "llvm_optimised_ms": statistics.median(again)}
    out.update({f"{k}_ms": statistics.median(v) for k, v in steps.items()})
    return out


_LLVM_STEPS = ("parse", "verify", "opt", "emit", "extract")


def run(report=None, quick: bool = False, sizes=SIZES, opt_levels=OPT_LEVELS) -> dict:
    """Measure every (size, opt level); ``report(line)`` gets progress lines."""
    from pybpf.jit.codegen import start_workers, worker_info

    say = report or (lambda line: None)
    samples = QUICK_SAMPLES if quick else SAMPLES
    startup = start_workers(wait=True)
    results = {"machine": machine(),
               "worker_startup_s": startup, "workers": len(worker_info()), "series": []}
    helpers = _helpers()
    for slots in sizes:
        for opt in opt_levels:
            r = _series(slots, opt, samples.get(slots, 20), helpers)
            r["opt"] = opt
            results["series"].append(r)
            say(f"{slots} slots -O{opt}: median {r['median_ms']:.2f} ms")
    if 200 in sizes and 2 in opt_levels:
        results["llvm_floor"] = floor = llvm_floor(200, 2, 10 if quick else 30)
        say(f"LLVM floor: {floor['llvm_ms']:.2f} ms for lowered IR, "
            f"{floor['llvm_optimised_ms']:.2f} ms for its -O2 output")
    return results


_STAGE_ORDER = ("lower", "worker", "llvm", "parse", "verify", "opt", "emit", "extract", "place")


def format_table(results: dict) -> str:
    m = results["machine"]
    lines = [f"JIT compile-and-place latency (Linux {m['kernel']}, Python {m['python']}, "
             f"{m['cpus']} CPUs, warm workers; times in ms)"]
    stage_names = [s for s in _STAGE_ORDER
                   if any(s in r["stages_ms"] for r in results["series"])]
    cpu = any("cpu_median_ms" in r for r in results["series"])
    head = f"{'slots':>6} {'opt':>3} {'n':>4} {'median':>7} {'p95':>7} {'min':>7}"
    head += f" {'cpu med':>7} {'cpu p95':>7}" if cpu else ""
    lines.append(head + "".join(f" {s:>7}" for s in stage_names))
    nan = float("nan")
    for r in results["series"]:
        row = (f"{r['slots']:6.0f} {'-O' + str(r['opt']):>3} {r['samples']:4} "
               f"{r['median_ms']:7.2f} {r['p95_ms']:7.2f} {r['min_ms']:7.2f}")
        if cpu:
            row += f" {r.get('cpu_median_ms', nan):7.2f} {r.get('cpu_p95_ms', nan):7.2f}"
        row += "".join(f" {r['stages_ms'].get(s, nan):7.2f}" for s in stage_names)
        lines.append(row)
    if cpu:
        lines.append("cpu = CPU time of this thread plus the worker's for the compile (wall "
                     "time without waiting for a CPU)")
    floor = results.get("llvm_floor")
    if floor:
        lines.append(
            f"LLVM floor, {floor['slots']} slots -O{floor['opt']} ({floor['samples']} programs): "
            f"the worker takes {floor['llvm_ms']:.2f} ms for the lowered IR (opt "
            f"{floor['raw_opt_ms']:.2f}, emit {floor['raw_emit_ms']:.2f}) and "
            f"{floor['llvm_optimised_ms']:.2f} ms for that IR's own -O{floor['opt']} output (opt "
            f"{floor['again_opt_ms']:.2f}, emit {floor['again_emit_ms']:.2f})")
    if stage_names:
        lines.append("stages are medians of wall time: lower = IR built in this process; "
                     "worker = round trip; llvm = the worker's own time (parse, verify, opt, "
                     "emit, extract); place = pack allocator")
    return "\n".join(lines)


def profile_lowering(slots: int = 200, count: int = 20, top: int = 25) -> str:
    """cProfile of lowering ``count`` programs of ``slots`` slots (no compile)."""
    from pybpf.jit.lower import lower_program

    progs = programs(slots, count)
    helpers = _helpers()
    pr = cProfile.Profile()
    pr.enable()
    for prog in progs:
        lower_program(prog, helpers, comments=False)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: list[str]) -> None:
    res = run(report=lambda line: print(line, file=sys.stderr), quick="--quick" in argv)
    print(format_table(res))
    if "--profile" in argv:
        print(profile_lowering())


if __name__ == "__main__":
    main(sys.argv[1:])
