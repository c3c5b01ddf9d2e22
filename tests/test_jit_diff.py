"""The JIT against the reference interpreter and the conformance suite, in child processes.

JIT'd code runs unchecked, so everything that executes it runs in a child Python started from
this same file (``python tests/test_jit_diff.py <mode> ...``): a bad lowering can crash the child
but not pytest. The child prints one JSON line that the test reads.

* ``diff``: random valid programs (ALU in every width and form, forward jumps, bounded loops,
  stack and ``mem`` loads/stores, atomics, BPF-to-BPF calls) from a seeded generator; each must
  give the same r0 and leave the same ``mem`` bytes in the interpreter and in the JIT. Programs
  are compiled many per LLVM module (one worker round trip per batch).
* ``tiers``: generated programs loaded one by one on the quick tier, on -O2, from the code
  cache and on the baseline tier (issue 13; ``PYBPF_DIFF_TIER_PROGRAMS``,
  ``PYBPF_DIFF_TIER_PHASES``; ``PYBPF_DIFF_BASELINE_PROGRAMS`` for the baseline test).
* ``conformance``: every ``tests/*.data`` of bpf_conformance through the JIT.
* ``semantics``: edge cases checked against fixed answers (may_goto budget, unwind and helper
  exceptions across frames, callx of an unknown id).
"""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

from pybpf.benchmarks.proggen import ItemGenerator, items_to_program

from support import conformance_files, run_script

pytestmark = pytest.mark.jit

ROOT = Path(__file__).resolve().parent.parent
DIFF_PROGRAMS = int(os.environ.get("PYBPF_DIFF_PROGRAMS", "10000"))
# Programs loaded one by one through the quick tier and the code cache: each costs a compile,
# so the default run takes a sample; PYBPF_DIFF_TIER_PROGRAMS=10000 is the acceptance.
TIER_PROGRAMS = int(os.environ.get("PYBPF_DIFF_TIER_PROGRAMS", "40"))
TIER_PHASES = os.environ.get("PYBPF_DIFF_TIER_PHASES", "quick,quick-cache")
MEM_SIZE = 64
STACK_USE = 32


# -- random program generator -------------------------------------------------------------------

class ProgramGenerator(ItemGenerator):
    """Seeded random BPF programs that the verifier would accept and that halt.

    Register roles: r6 holds the ``mem`` pointer and r10 the frame pointer (both only ever used as
    memory bases, so no address leaks into results, which differ between engines); r0-r5 and
    r7-r9 are scalars, all initialised up front. Loops count down r8/r9 and their bodies never
    write the counter. Each call passes ``mem`` in r1 and re-initialises r1-r5 afterwards (the
    verifier considers them clobbered), and so does each helper call (ubpf test helpers:
    gather_bytes, memfrob on ``mem``, sqrti, and unwind, which stops the whole program when its
    argument is 0). The exit folds every scalar and every stack slot into r0, so all of them are
    observable.
    """

    SCALARS = (0, 1, 2, 3, 4, 5, 7, 8, 9)
    IMMS = (0, 1, -1, 2, 7, 31, 32, 63, 64, 0x7FFFFFFF, -0x80000000, 0x12345678, -2, 255, 0xFFFF)

    def __init__(self, seed: int, max_units: int = 12, max_subprogs: int = 2,
                 helpers: bool = True) -> None:
        from pybpf import isa

        super().__init__(seed, self.SCALARS, self.IMMS, STACK_USE, MEM_SIZE)
        self.helpers = helpers
        self.max_units, self.max_subprogs = max_units, max_subprogs
        by = lambda pred: [f for f in isa.FORMS if pred(f)]  # noqa: E731
        self.alu = by(lambda f: f.kind in ("alu", "neg", "movsx", "end")
                      or (f.kind == "cast" and f.op == "kern"))
        self.jcond = by(lambda f: f.kind == "jcond")
        self.ldx = by(lambda f: f.kind == "ldx")
        self.stores = by(lambda f: f.kind in ("st", "stx"))
        self.atomic = by(lambda f: f.kind == "atomic")
        self.isa = isa

    # units
    def alu_unit(self, forbidden) -> list:
        form = self.rnd.choice(self.alu)
        ops = {"dst": self.reg(forbidden)}
        if form.source == "X" or form.kind in ("movsx", "cast"):
            ops["src"] = self.reg()
        if form.fields["imm"] == "any":
            if form.op in ("lsh", "rsh", "arsh") and self.rnd.random() < 0.8:
                ops["imm"] = self.rnd.randrange(form.width)  # the verifier's range for K shifts
            else:
                ops["imm"] = self.imm()
        return [self.insn(form, **ops)]

    def lddw_unit(self, forbidden) -> list:
        value = self.rnd.getrandbits(64)
        return [self.insn(self.isa.FORMS_BY_NAME["lddw"], dst=self.reg(forbidden),
                          imm=value & 0xFFFFFFFF, imm2=value >> 32)]

    def atomic_unit(self, forbidden) -> list:
        form = self.rnd.choice(self.atomic)
        base, off = self.slot(form.size, self.rnd.random() < 0.5)
        if form.op == "load_acq":
            return [self.insn(form, dst=self.reg(forbidden), src=base, off=off)]
        writes_src = form.op.startswith("fetch_") or form.op == "xchg"
        src = self.reg(forbidden if writes_src else ())
        if form.op == "cmpxchg" and 0 in forbidden:
            return []
        return [self.insn(form, dst=base, src=src, off=off)]

    def jump_unit(self, forbidden, depth, calls) -> list:
        form = self.rnd.choice(self.jcond)
        target = self.label()
        ops = {"dst": self.reg(), "label": target}
        if form.source == "X":
            ops["src"] = self.reg()
        else:
            ops["imm"] = self.imm()
        skipped = self.body(self.rnd.randint(1, 3), forbidden, depth + 1, calls)
        return [("jump", form, ops)] + skipped + [("label", target)]

    def loop_unit(self, forbidden, depth, calls) -> list:
        free = [r for r in (8, 9) if r not in forbidden]
        if not free or depth > 1:
            return self.alu_unit(forbidden)
        c = self.rnd.choice(free)
        top = self.label()
        inner = self.body(self.rnd.randint(1, 4), set(forbidden) | {c}, depth + 1, calls)
        return ([self.insn(self.isa.FORMS_BY_NAME["mov64_imm"], dst=c,
                           imm=self.rnd.randint(1, 4)), ("label", top)] + inner
                + [self.insn(self.isa.FORMS_BY_NAME["sub64_imm"], dst=c, imm=1),
                   ("jump", self.isa.FORMS_BY_NAME["jne64_imm"], {"dst": c, "imm": 0,
                                                                 "label": top})])

    def call_unit(self, forbidden, calls) -> list:
        if not calls or 0 in forbidden:
            return self.alu_unit(forbidden)
        f = self.isa.FORMS_BY_NAME
        out = [self.insn(f["mov64_reg"], dst=1, src=6)]
        for r in range(2, 6):
            out.append(self.insn(f["mov64_reg"], dst=r, src=self.reg((1, 2, 3, 4, 5)))
                       if self.rnd.random() < 0.5 else self.insn(f["mov64_imm"], dst=r,
                                                                   imm=self.imm()))
        out.append(("call", f["call_local"], {"label": self.rnd.choice(calls)}))
        for r in range(1, 6):
            out.append(self.insn(f["mov64_imm"], dst=r, imm=self.imm()))
        return out

    def helper_unit(self, forbidden) -> list:
        """A call of a ubpf test helper: gather_bytes (0), memfrob on mem (1), sqrti (3) or
        unwind (5), which stops the whole program when its argument is 0."""
        if 0 in forbidden:
            return self.alu_unit(forbidden)
        f = self.isa.FORMS_BY_NAME
        hid = self.rnd.choice((0, 1, 3, 5))
        out = []
        if hid == 1:
            start = self.rnd.randrange(MEM_SIZE)
            out += [self.insn(f["mov64_reg"], dst=1, src=6),
                    self.insn(f["add64_imm"], dst=1, imm=start),
                    self.insn(f["mov64_imm"], dst=2, imm=self.rnd.randint(0, MEM_SIZE - start))]
        elif hid == 5:
            arg = 0 if self.rnd.random() < 0.3 else self.rnd.randint(1, 9)
            out.append(self.insn(f["mov64_imm"], dst=1, imm=arg))
        else:
            for r in range(1, 6):
                out.append(self.insn(f["mov64_reg"], dst=r, src=self.reg((1, 2, 3, 4, 5)))
                           if self.rnd.random() < 0.5 else self.insn(f["mov64_imm"], dst=r,
                                                                       imm=self.imm()))
        out.append(self.insn(f["call_helper"], imm=hid))
        for r in range(1, 6):
            out.append(self.insn(f["mov64_imm"], dst=r, imm=self.imm()))
        return out

    def body(self, n: int, forbidden, depth: int, calls) -> list:
        out = []
        for _ in range(n):
            r = self.rnd.random()
            if r < 0.40:
                out += self.alu_unit(forbidden)
            elif r < 0.44:
                out += self.lddw_unit(forbidden)
            elif r < 0.64:
                out += self.mem_unit(forbidden, load_share=0.45)
            elif r < 0.74:
                out += self.atomic_unit(forbidden)
            elif r < 0.86 and depth < 3:
                out += self.jump_unit(forbidden, depth, calls)
            elif r < 0.91:
                out += self.loop_unit(forbidden, depth, calls)
            elif r < 0.93 and self.helpers:
                out += self.helper_unit(forbidden)
            else:
                out += self.call_unit(forbidden, calls)
        return out

    def function(self, calls, entry: bool) -> list:
        f = self.isa.FORMS_BY_NAME
        out = [self.insn(f["mov64_reg"], dst=6, src=1)]
        out += [self.insn(f["stdw"], dst=10, off=-8 * (k + 1), imm=0)
                for k in range(STACK_USE // 8)]
        for r in ((0, 1, 2, 3, 4, 5, 7, 8, 9) if entry else (0, 1, 7, 8, 9)):  # r1 was mem
            out.append(self.insn(f["mov64_imm"], dst=r, imm=self.imm()))
        out += self.body(self.rnd.randint(2, self.max_units), (), 0, calls)
        for k in range(STACK_USE // 8):  # fold the stack, then the registers, into r0
            out.append(self.insn(f["ldxdw"], dst=1, src=10, off=-8 * (k + 1)))
            out.append(self.insn(f["xor64_reg"] if k % 2 else f["add64_reg"], dst=0, src=1))
        for r in (2, 3, 4, 5, 7, 8, 9):
            out.append(self.insn(f["add64_reg"] if r % 2 else f["xor64_reg"], dst=0, src=r))
        out.append(self.insn(f["exit"]))
        return out

    def program(self, name: str = "rand"):
        nsub = self.rnd.randint(0, self.max_subprogs)
        names = [f"fn{i}" for i in range(nsub)]
        parts = [("main", self.function(names, True))]
        for i, fname in enumerate(names):  # fn_i calls only fn_j with j > i: no recursion
            parts.append((fname, [("label", fname)] + self.function(names[i + 1:], False)))
        called, keep = {"main"}, []
        for fname, part in parts:  # uncalled functions would be dead code: drop them
            if fname in called:
                keep.append(part)
                called |= {it[2]["label"] for it in part if it[0] == "call"}
        return items_to_program([it for part in keep for it in part], name)


# -- child side -----------------------------------------------------------------------------------

def _interp_run(prog, mem: bytes, helpers=None) -> tuple[int, bytes]:
    """r0 and the final mem from the reference interpreter (every access checked)."""
    from pybpf.runtime.interp import Interpreter
    from pybpf.runtime.memory import Buffer, Region, RegionTable

    from pybpf.insn import imm64

    buf = Buffer(len(mem), init=mem)
    region = Region(buf.address, len(mem), "mem", True, buf)
    # The loader's job, done here: the interpreter takes every ld_imm64 value from values64.
    values64 = {pc: imm64(prog.insns, pc) for pc, f, _ in prog.instructions() if f.kind == "lddw"}
    session = Interpreter(prog, helpers, values64=values64).start(RegionTable([region]), region,
                                                                  1_000_000)
    r0 = session.call(buf.address, len(mem))
    return r0, buf.bytes()


def child_diff(seed: int, count: int, batch: int, opt: int) -> dict:
    """Run ``count`` generated programs on both engines; batches of ``batch`` programs share one
    LLVM module. While one batch runs, the next one compiles (the worker's LLVM time overlaps
    the interpreter's Python time). ``opt`` < 0 alternates -O1 and -O2 between batches."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pybpf.jit.program import compile_programs
    from pybpf.runtime.helpers import ubpf_test_helpers
    from pybpf.runtime.memory import Buffer

    helpers = ubpf_test_helpers()
    gen = ProgramGenerator(seed)
    rnd = random.Random(seed ^ 0x5EED)
    batches = []
    for start in range(0, count, batch):
        progs = [gen.program(f"p{start + i}") for i in range(min(batch, count - start))]
        mems = [bytes(rnd.getrandbits(8) for _ in range(MEM_SIZE)) for _ in progs]
        level = opt if opt >= 0 else 1 + (len(batches) % 2)
        batches.append((progs, mems, level))

    def build(progs, level):
        t0 = time.perf_counter()
        jits = compile_programs(progs, helpers, opt_level=level)
        return jits, time.perf_counter() - t0

    failures, compiled, slots, t_compile, t_interp, per_opt = [], 0, 0, 0.0, 0.0, {}
    t_start = time.perf_counter()
    ahead = 2  # batches compiling while one runs: the pool's two workers stay busy
    with ThreadPoolExecutor(max_workers=ahead) as pool:
        pending = [pool.submit(build, progs, level) for progs, _, level in batches[:ahead]]
        for k, (progs, mems, level) in enumerate(batches):
            jits, dt = pending.pop(0).result()
            if k + ahead < len(batches):
                nxt = batches[k + ahead]
                pending.append(pool.submit(build, nxt[0], nxt[2]))
            t_compile += dt
            compiled += len(jits)
            per_opt[level] = per_opt.get(level, 0) + len(jits)
            for prog, mem, jp in zip(progs, mems, jits):
                slots += len(prog.insns)
                buf = Buffer(MEM_SIZE, init=mem)
                got = (jp.run(buf.address, MEM_SIZE), buf.bytes())
                jp.close()
                t0 = time.perf_counter()
                want = _interp_run(prog, mem, helpers)
                t_interp += time.perf_counter() - t0
                if got == want:
                    continue
                failures.append({"name": prog.name} if len(failures) >= 5 else {
                    "name": prog.name, "opt": level, "raw": prog.to_bytes().hex(),
                    "mem": mem.hex(), "jit": [got[0], got[1].hex()],
                    "interp": [want[0], want[1].hex()]})
    return {"programs": compiled, "slots": slots, "failures": failures, "per_opt": per_opt,
            "compile_s": t_compile, "interp_s": t_interp,
            "wall_s": time.perf_counter() - t_start}


def child_tiers(seed: int, count: int, phases: list[str]) -> dict:
    """Run ``count`` generated programs loaded one by one (``compile_program`` with a
    ``JitEnv``, as the VM loads them) through each of ``phases``, in order, against the
    interpreter: "quick" (the quick tier, compiled), "quick-cache" (the same again: taken from
    the code cache by the load-input key, no lowering), "O2", "O2-cache". The code cache is a
    fresh directory. "baseline" loads the baseline tier alone (jit/baseline.py, no LLVM). A
    "-unverified" suffix ("baseline-unverified", "O2-unverified", "quick-unverified") compiles
    the code of an unverified load instead (a run budget charged at back edges, signals
    polled). Per phase: failures, cache states, lowerings run."""
    import ctypes
    import shutil
    import tempfile
    import time
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from pybpf.jit import lower
    from pybpf.jit.env import JitEnv
    from pybpf.jit.program import compile_program
    from pybpf.runtime.helpers import ubpf_test_helpers
    from pybpf.runtime.memory import Buffer

    d = tempfile.mkdtemp(prefix="pybpf-diff-tiers-")
    os.environ["PYBPF_JIT_CACHE"] = d
    os.environ["PYBPF_JIT_CACHE_SIZE"] = str(4 << 30)
    lowerings = [0]
    original = lower.ModuleLowerer.add_program

    def counted(self, *args, **kwargs):
        lowerings[0] += 1
        return original(self, *args, **kwargs)
    lower.ModuleLowerer.add_program = counted
    helpers = ubpf_test_helpers()
    gen = ProgramGenerator(seed)
    rnd = random.Random(seed ^ 0x71E5)
    progs = [gen.program(f"t{i}") for i in range(count)]
    mems = [bytes(rnd.getrandbits(8) for _ in range(MEM_SIZE)) for _ in progs]
    wants = [_interp_run(p, m, helpers) for p, m in zip(progs, mems)]
    out = {"programs": count, "phases": {}}
    try:
        for phase in phases:
            tier = phase.split("-")[0]
            t0, before = time.perf_counter(), lowerings[0]

            def one(i):
                # "-unverified": the code of an unverified load (run budget counted at back
                # edges, signals polled), with a budget no program here spends
                budget = (ctypes.c_int64 * 1)(1_000_000)
                env = JitEnv() if not phase.endswith("-unverified") else JitEnv(
                    verified=False, budget_cell=ctypes.addressof(budget))
                jp = compile_program(progs[i], helpers, name=progs[i].name, env=env,
                                     tier=tier)
                try:
                    budget[0] = 1_000_000
                    buf = Buffer(MEM_SIZE, init=mems[i])
                    return jp.cache, (jp.run(buf.address, MEM_SIZE), buf.bytes())
                finally:
                    jp.close()
            failures, states = [], Counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                for i, (state, got) in enumerate(pool.map(one, range(count))):
                    states[state] += 1
                    if got != wants[i]:
                        failures.append({"name": progs[i].name} if len(failures) >= 5 else {
                            "name": progs[i].name, "raw": progs[i].to_bytes().hex(),
                            "mem": mems[i].hex(), "jit": [got[0], got[1].hex()],
                            "interp": [wants[i][0], wants[i][1].hex()]})
            out["phases"][phase] = {"failures": failures, "states": dict(states),
                                    "lowerings": lowerings[0] - before,
                                    "wall_s": round(time.perf_counter() - t0, 1)}
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def child_conformance(paths: list[str], tier: str | None = None) -> dict:
    from pybpf.datafile import parse_data_file
    from pybpf.errors import BPFError
    from pybpf.jit.program import compile_program
    from pybpf.program import Program
    from pybpf.runtime.helpers import ubpf_test_helpers
    from pybpf.runtime.memory import Buffer

    helpers = ubpf_test_helpers()
    passed, failed = 0, []
    for path in paths:
        df = parse_data_file(path)
        try:
            if df.raw is not None:
                prog = Program.from_bytes(df.raw, name=Path(path).stem)
            else:
                from pybpf.asm import assemble
                prog = assemble(df.asm, filename=path)
            mem = df.mem or b""
            with compile_program(prog, helpers, tier=tier) as jp:
                buf = Buffer(len(mem), init=mem)
                r0 = jp.run(buf.address if mem else 0, len(mem))
        except BPFError as exc:
            failed.append(f"{Path(path).name}: {type(exc).__name__}: {exc}")
            continue
        if r0 == df.result:
            passed += 1
        else:
            failed.append(f"{Path(path).name}: r0=0x{r0:x}, expected 0x{df.result:x}")
    return {"passed": passed, "failed": failed}


def _prog(*parts):
    from pybpf.insn import make
    from pybpf.program import Program

    insns = []
    for name, *ops in parts:
        kw = dict(zip(("dst", "src", "off", "imm"), ops))
        insns += make(name, **kw)
    return Program(insns)


def child_semantics() -> dict:
    """Edge cases with fixed answers; returns {case: result} for the parent to check."""
    from pybpf.errors import JITError, VMError
    from pybpf.jit import placement
    from pybpf.jit.program import compile_program
    from pybpf.runtime.helpers import ubpf_test_helpers

    out = {}
    helpers = ubpf_test_helpers()
    # may_goto: r0 counts loop trips; the budget is BPF_MAX_LOOPS per frame, so the second call
    # of the same subprogram starts afresh.
    loop = [("mov64_imm", 0, 0, 0, 0), ("add64_imm", 0, 0, 0, 1), ("may_goto", 0, 0, 1, 0),
            ("ja", 0, 0, -3, 0), ("exit",)]
    with compile_program(_prog(*loop)) as jp:
        out["may_goto"] = jp.run()
    two = _prog(("call_local", 0, 0, 0, 4), ("mov64_reg", 6, 0), ("call_local", 0, 0, 0, 2),
                ("add64_reg", 0, 6), ("exit",), *loop)
    with compile_program(two) as jp:
        out["may_goto_two_frames"] = jp.run()
    # unwind(0) two frames down stops everything with r0 = 0; unwind(1) does not.
    for arg in (0, 1):
        prog = _prog(("call_local", 0, 0, 0, 2), ("mov64_imm", 0, 0, 0, 7), ("exit",),
                     ("call_local", 0, 0, 0, 1), ("exit",),
                     ("mov64_imm", 1, 0, 0, arg), ("call_helper", 0, 0, 0, 5),
                     ("mov64_imm", 0, 0, 0, 9), ("exit",))
        with compile_program(prog, helpers) as jp:
            out[f"unwind_{arg}"] = jp.run()
    # a Python helper that raises two frames down: its own exception reaches the caller
    calls = []

    def boom(x):
        calls.append(x)
        if x == 13:
            raise KeyError("from the helper")
        return x + 1
    from pybpf.runtime.helpers import ANY, HelperRegistry, Prototype
    reg = HelperRegistry()
    reg.register(1, boom, prototype=Prototype(args=(ANY,)))
    prog = _prog(("call_local", 0, 0, 0, 2), ("mov64_imm", 0, 0, 0, 7), ("exit",),
                 ("call_local", 0, 0, 0, 1), ("exit",), ("call_helper", 0, 0, 0, 1), ("exit",))
    with compile_program(prog, reg) as jp:
        try:
            jp.run(13)
            out["raise"] = "no exception"
        except KeyError as exc:
            out["raise"] = str(exc)
        out["after_raise"] = jp.run(3)
        out["raise_calls"] = list(calls)
        try:
            jp.test_run(13, 0, 1000)
            out["test_run_raise"] = "no exception"
        except KeyError as exc:
            out["test_run_raise"] = str(exc)
        out["test_run_raise_calls"] = len(calls)
    # callx: a known id calls that helper, an unknown one raises VMError
    prog = _prog(("mov64_imm", 1, 0, 0, 1), ("mov64_imm", 2, 0, 0, 2), ("mov64_imm", 3, 0, 0, 3),
                 ("mov64_imm", 4, 0, 0, 4), ("mov64_imm", 5, 0, 0, 5), ("callx", 6), ("exit",))
    with compile_program(prog, helpers) as jp:
        out["callx_gather"] = jp.run(0, 0)  # r6 = 0 (gather_bytes)
    prog = _prog(("mov64_reg", 6, 1), ("callx", 6), ("exit",))
    with compile_program(prog, helpers) as jp:
        try:
            jp.run(77)
            out["callx_unknown"] = "no exception"
        except VMError as exc:
            out["callx_unknown"] = [exc.message, exc.pc]
    # test_run loops natively and returns r0 and a mean time; close frees the chunk
    jp = compile_program(_prog(("mov64_reg", 0, 1), ("add64_reg", 0, 2), ("exit",)), name="adder")
    r0, ns = jp.test_run(40, 2, 100_000)
    out["test_run"] = [r0, ns > 0]
    names = lambda: [p["name"] for k in placement()["packs"] for p in k["programs"]]  # noqa
    out["placed_before_close"] = "adder" in names()
    jp.close()
    jp.close()
    out["placed_after_close"] = "adder" in names()
    try:
        jp.run()
        out["run_after_close"] = "ran"
    except JITError as exc:
        out["run_after_close"] = str(exc)
    return out


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "diff":
        out = child_diff(int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]))
    elif mode == "tiers":
        out = child_tiers(int(argv[1]), int(argv[2]), argv[3].split(","))
    elif mode == "conformance":
        baseline = argv[1:2] == ["--baseline"]
        out = child_conformance(argv[2 if baseline else 1:], "baseline" if baseline else None)
    elif mode == "semantics":
        out = child_semantics()
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


# -- the tests (parent side) ---------------------------------------------------------------------

def _child(*args: str, timeout: float = 900) -> dict:
    proc = run_script(__file__, *args, timeout=timeout)
    assert proc.returncode == 0, f"child died ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_generator_is_deterministic_and_valid():
    from pybpf.verifier.cfg import build_cfg

    a = [ProgramGenerator(7).program().to_bytes() for _ in range(1)]
    b = [ProgramGenerator(7).program().to_bytes() for _ in range(1)]
    assert a == b
    gen = ProgramGenerator(11)
    kinds = set()
    for _ in range(200):
        prog = gen.program()
        build_cfg(prog, check=True)  # structurally valid: in-range jumps, no dead code, exits
        kinds |= {f.kind for _, f, _ in prog.instructions()}
    assert {"alu", "neg", "movsx", "end", "cast", "ldx", "st", "stx", "atomic", "jcond", "call",
            "lddw", "exit"} <= kinds
    ops = {(f.kind, f.op) for p in (gen.program() for _ in range(300))
           for _, f, _ in p.instructions()}
    assert {("call", "local"), ("call", "helper")} <= ops


def test_semantics_edge_cases():
    from pybpf import isa

    out = _child("semantics")
    assert out["may_goto"] == isa.BPF_MAX_LOOPS + 1
    assert out["may_goto_two_frames"] == 2 * (isa.BPF_MAX_LOOPS + 1)
    assert out["unwind_0"] == 0 and out["unwind_1"] == 7
    assert out["raise"] == "'from the helper'" and out["after_raise"] == 7
    assert out["raise_calls"] == [13, 3]
    assert out["test_run_raise"] == "'from the helper'" and out["test_run_raise_calls"] == 3
    assert out["callx_gather"] == 0x0102030405
    assert out["callx_unknown"] == ["callx to unknown helper id 77", 1]
    assert out["test_run"] == [42, True]
    assert out["placed_before_close"] and not out["placed_after_close"]
    assert "closed" in out["run_after_close"]


@pytest.mark.parametrize("tier", ["O2", "baseline"])
def test_conformance_suite_through_the_jit(conformance_dir, tier):
    """Every file at -O2 and on the baseline tier (jit/baseline.py), which must emit each
    program itself (tier "baseline" never falls back to LLVM)."""
    files = [str(p) for p in conformance_files("tests")]
    out = _child("conformance", *(["--baseline"] if tier == "baseline" else []), *files)
    assert out["failed"] == [], "\n".join(out["failed"][:40])
    assert out["passed"] == len(files)


@pytest.mark.slow
def test_random_programs_agree_with_the_interpreter():
    """The issue's acceptance: >= 10,000 random valid programs (PYBPF_DIFF_PROGRAMS to change),
    same r0 and same memory on both engines, at -O1 and -O2."""
    out = _child("diff", 20240611, DIFF_PROGRAMS, 250, -1)
    assert out["programs"] == DIFF_PROGRAMS
    assert set(out["per_opt"]) == ({"1", "2"} if DIFF_PROGRAMS > 250 else {"1"})
    assert not out["failures"], json.dumps(out["failures"][:3], indent=1)


@pytest.mark.slow
def test_random_programs_on_the_quick_tier_and_from_the_cache():
    """Issue 13: the differential on the quick tier and on code taken from the code cache
    (the load-input key: the second load of each program runs no lowering).
    ``PYBPF_DIFF_TIER_PHASES=quick,quick-cache,O2,O2-cache`` adds -O2 code, compiled and then
    from the cache."""
    phases = TIER_PHASES.split(",")
    out = _child("tiers", "20261207", str(TIER_PROGRAMS), ",".join(phases),
                 timeout=max(900, TIER_PROGRAMS * 0.5))
    assert list(out["phases"]) == phases
    for phase, got in out["phases"].items():
        assert not got["failures"], (phase, json.dumps(got["failures"][:3], indent=1))
        assert sum(got["states"].values()) == TIER_PROGRAMS, (phase, got)
    for phase in ("quick-cache", "O2-cache"):
        got = out["phases"].get(phase)
        if got is not None and phase.split("-")[0] in phases[:phases.index(phase)]:
            assert got["states"] == {"hit": TIER_PROGRAMS} and got["lowerings"] == 0, got
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "failures"}
                      for k, v in out["phases"].items()}))


UNVERIFIED_PROGRAMS = int(os.environ.get("PYBPF_DIFF_UNVERIFIED_PROGRAMS", "60"))


def test_random_programs_as_unverified_loads():
    """The LLVM tiers' code for an unverified load (each loop head's latch charges the run
    budget and polls for signals; jit/lower.py back_edge) against the interpreter, at -O0
    (quick) and -O2. ``PYBPF_DIFF_UNVERIFIED_PROGRAMS=10000`` for the full run."""
    phases = ["quick-unverified", "O2-unverified"]
    out = _child("tiers", "20261208", str(UNVERIFIED_PROGRAMS), ",".join(phases),
                 timeout=max(900, UNVERIFIED_PROGRAMS * 0.5))
    assert list(out["phases"]) == phases
    for phase, got in out["phases"].items():
        assert not got["failures"], (phase, json.dumps(got["failures"][:3], indent=1))
        assert sum(got["states"].values()) == UNVERIFIED_PROGRAMS, (phase, got)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "failures"}
                      for k, v in out["phases"].items()}))


BASELINE_PROGRAMS = int(os.environ.get("PYBPF_DIFF_BASELINE_PROGRAMS", "300"))


def test_random_programs_on_the_baseline_tier():
    """Issue 13: the baseline tier (x86-64 from BPF without LLVM) against the interpreter, as
    a verified and as an unverified load (run budget at back edges). Every generated program
    must be emitted by the baseline itself (tier "baseline" never falls back).
    ``PYBPF_DIFF_BASELINE_PROGRAMS=10000`` is the issue's acceptance."""
    phases = ["baseline", "baseline-unverified"]
    out = _child("tiers", "20261207", str(BASELINE_PROGRAMS), ",".join(phases),
                 timeout=max(900, BASELINE_PROGRAMS * 0.2))
    for phase, got in out["phases"].items():
        assert not got["failures"], (phase, json.dumps(got["failures"][:3], indent=1))
        assert got["states"] == {"off": BASELINE_PROGRAMS}, (phase, got)
        assert got["lowerings"] == 0, (phase, got)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "failures"}
                      for k, v in out["phases"].items()}))


if __name__ == "__main__":
    main(sys.argv[1:])
