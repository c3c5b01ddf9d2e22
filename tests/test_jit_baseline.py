"""The baseline tier (jit/baseline.py): x86-64 code from BPF instructions without LLVM.

In this process (no code runs): every form of the ISA table has an emitter rule, and each one
emits (or, for what the baseline leaves to LLVM, raises Unsupported naming why); a kind
without a rule is a JITError, never a silent fallback.

In a child process (the code runs): edge cases against the interpreter, as a verified load
(JitEnv) and as an unverified one (run budget at back edges); the insn_limit and Ctrl-C of
unverified code; a helper's exception and unwind across frames; the first tier of an "auto"
load (baseline, or the LLVM quick tier for what the baseline does not emit: counted and
reported by placement()), then -O2 swapped in; ``pybpf jit --tier baseline --show asm``.
The 10,000-program differential is tests/test_jit_diff.py (``PYBPF_DIFF_BASELINE_PROGRAMS``).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support import ROOT, child_tests


def _one_form_program(form):
    """A tiny program using ``form`` once, then ``r0 = 0; exit`` (and a subprogram for
    call_local); loader values for every ld_imm64 slot."""
    from pybpf.insn import make
    from pybpf.program import Program

    ops = {}
    for name, c in form.fields.items():
        if c == "reg":
            ops[name] = {"dst": 1, "src": 2}[name]
        elif c == "any":
            ops[name] = {"local": 1, "func": 2}.get(form.op, 0) if name == "imm" else 0
    insns = make(form, **ops)
    tail = make("mov64_imm", dst=0) + make("exit")
    if form.kind in ("exit",):
        insns = make("mov64_imm", dst=0) + insns
        tail = []
    if form.op in ("local", "func"):
        insns = insns + make("exit")
        tail = make("mov64_imm", dst=0) + make("exit")
    return Program(insns + tail)


def test_every_form_has_a_rule():
    from pybpf import isa
    from pybpf.jit import baseline

    assert baseline.emitter_kinds() == set(isa.KINDS)
    for form in isa.FORMS:
        assert callable(baseline.rule_for(form)), form.name


def test_every_form_emits_or_names_why_not():
    """Each form alone in a program, with a loader's facts: only cast_user (it needs the
    arena) is left to the LLVM tier; without the facts, the forms that need them say so."""
    from pybpf import isa
    from pybpf.jit import baseline
    from pybpf.jit.env import JitEnv

    helpers = {0: lambda *a: 0}
    kfuncs = {7: lambda *a: 0}
    left = {}
    for form in isa.FORMS:
        prog = _one_form_program(form)
        values = {pc: 0x1000 for pc, f, _ in prog.instructions() if f.kind == "lddw"}
        env = JitEnv(kfuncs=kfuncs, packet_desc=0x10000)
        if form.name == "call_kfunc":
            prog = prog.__class__([prog.insns[0].__class__(prog.insns[0].opcode,
                                                           prog.insns[0].dst,
                                                           prog.insns[0].src, 0, 7)]
                                  + prog.insns[1:])
        try:
            made = baseline.compile_baseline(prog, helpers, values, env)
            assert made.code and made.symbols["bpf_main"] == 0, form.name
        except baseline.Unsupported as exc:
            left[form.name] = str(exc)
    assert set(left) == {"cast_user"}, left
    bare = {}
    for name in ("lddw_map_fd", "ldabsb", "call_kfunc", "cast_user"):
        try:
            baseline.compile_baseline(_one_form_program(isa.FORMS_BY_NAME[name]))
        except baseline.Unsupported as exc:
            bare[name] = str(exc)
    assert set(bare) == {"lddw_map_fd", "ldabsb", "call_kfunc", "cast_user"}, bare


def test_a_kind_without_a_rule_fails_loudly():
    import dataclasses

    from pybpf import isa
    from pybpf.errors import JITError
    from pybpf.jit import baseline

    fake = dataclasses.replace(isa.FORMS_BY_NAME["exit"], kind="no_such_kind")
    with pytest.raises(JITError, match="no emitter rule") as info:
        baseline.rule_for(fake)
    assert not isinstance(info.value, baseline.Unsupported)


def test_map_lookups_are_native_and_a_kit_gap_bridges():
    """A verified lookup of an array or hash map loaded in the same straight-line code is the
    map's own gen_lookup emitted by the x86 kit (no Python: the code needs no GIL); one whose
    map is not known there (after a jump target), or whose gen_lookup uses what the kit cannot
    emit, goes through the bridge (needs the GIL) rather than failing. (Running that code:
    tests/test_jit_maps.py, case baseline_tier_lookups_and_helpers_are_native.)"""
    import pybpf
    from pybpf.jit import baseline
    from pybpf.loaded import jit_env
    from support import asm

    vm = pybpf.VM()

    def made(m, between=""):
        prog = asm(f"""
            r2 = r10
            r2 += -8
            *(u64 *)(r10 - 8) = 0
            r1 = map_fd({m.fd}) ll
            {between}
            call bpf_map_lookup_elem
            exit""")
        return baseline.compile_baseline(prog, vm.helpers, vm.values64(prog), jit_env(vm))

    arr = vm.create_map("array", key_size=4, value_size=8, max_entries=4)
    h = vm.create_map("hash", key_size=8, value_size=8, max_entries=4)
    assert not made(arr).needs_gil and not made(h).needs_gil
    assert made(arr, "if r2 == 0 goto +0").needs_gil        # a join: r1 no longer known

    class Odd:            # a map whose lookup needs an operation the kit does not emit
        closed = False

        def gen_lookup(self, ir, key):
            return ir.b.sdiv(key, ir.const(ir.I64, 3))
    odd = Odd()
    real = vm.resolve_map
    vm.resolve_map = lambda value: odd if real(value) is arr else real(value)
    try:
        assert made(arr).needs_gil
    finally:
        vm.resolve_map = real


# -- child cases ---------------------------------------------------------------------------------

EDGE_CASES = {
    # division and modulo: by zero, by -1, INT_MIN / -1, in both widths, with r0/r3 (rax/rdx)
    # as dividend, divisor and destination
    "div": """
        r0 = *(u64 *)(r1 + 0)
        r3 = *(u64 *)(r1 + 8)
        r6 = r0
        r6 /= r3
        r7 = r0
        r7 %= r3
        r3 /= r0
        r8 = r0
        r8 s/= -1
        r9 = r0
        r9 s%= -1
        w0 s/= w3
        r0 ^= r6
        r0 += r7
        r0 ^= r8
        r0 += r9
        r0 ^= r3
        exit""",
    "div32": """
        r0 = *(u64 *)(r1 + 0)
        r3 = *(u64 *)(r1 + 8)
        r6 = r0
        w6 /= w3
        r7 = r0
        w7 %= w3
        r8 = r0
        w8 s/= w3
        r9 = r0
        w9 s%= w3
        r4 = r0
        w4 %= 0
        r5 = r0
        r5 %= 0
        r2 = r0
        r2 /= 0
        r0 = r6
        r0 ^= r7
        r0 += r8
        r0 ^= r9
        r0 += r4
        r0 ^= r5
        r0 += r2
        exit""",
    # shifts by registers, the count in r4 (rcx) as source and destination, counts past the
    # width (masked)
    "shifts": """
        r0 = *(u64 *)(r1 + 0)
        r4 = *(u64 *)(r1 + 8)
        r6 = r0
        r6 <<= r4
        r7 = r0
        r7 s>>= r4
        r8 = r0
        w8 >>= w4
        r4 <<= r4
        r9 = r0
        w9 s>>= 35
        r0 >>= 67
        r0 ^= r6
        r0 += r7
        r0 ^= r8
        r0 += r4
        r0 ^= r9
        exit""",
    "swaps_and_extends": """
        r0 = *(u64 *)(r1 + 0)
        r2 = r0
        r2 = be16 r2
        r3 = r0
        r3 = be32 r3
        r4 = r0
        r4 = be64 r4
        r5 = r0
        r5 = le16 r5
        r6 = r0
        r6 = le32 r6
        r7 = r0
        r7 = bswap16 r7
        r8 = (s8)r0
        w9 = (s16)w0
        r1 = *(s32 *)(r1 + 8)
        r0 = (s32)r0
        r0 ^= r2
        r0 += r3
        r0 ^= r4
        r0 += r5
        r0 ^= r6
        r0 += r7
        r0 ^= r8
        r0 += r9
        r0 ^= r1
        exit""",
    # atomics: fetch forms with r0 as the source, r0 as the base, 32-bit cmpxchg's r0
    "atomics": """
        r6 = r1
        r0 = *(u64 *)(r1 + 8)
        r0 = atomic_fetch_or((u64 *)(r6 + 0), r0)
        r2 = 0x0f0f
        w2 = atomic_fetch_and((u32 *)(r6 + 8), w2)
        r3 = 77
        r3 = atomic_fetch_xor((u64 *)(r6 + 16), r3)
        r4 = 5
        r4 = atomic_fetch_add((u64 *)(r6 + 0), r4)
        lock *(u32 *)(r6 + 12) += w4
        r7 = r0
        r0 = r6
        r5 = 9
        r5 = atomic_fetch_xor((u64 *)(r0 + 0), r5)
        r0 = *(u32 *)(r6 + 8)
        r8 = 1234
        w0 = cmpxchg32_32(r6 + 8, w0, w8)
        r9 = 99
        r9 = xchg_64(r6 + 16, r9)
        r0 += r7
        r0 ^= r2
        r0 += r3
        r0 ^= r4
        r0 += r5
        r0 ^= r9
        r1 = *(u64 *)(r6 + 0)
        r0 += r1
        r1 = *(u64 *)(r6 + 8)
        r0 ^= r1
        r1 = *(u64 *)(r6 + 16)
        r0 += r1
        exit""",
    "jumps": """
        r0 = 0
        r2 = *(u64 *)(r1 + 0)
        r3 = *(u64 *)(r1 + 8)
        if w2 s> w3 goto a
        r0 |= 1
    a:  if r2 & 0x80 goto b
        r0 |= 2
    b:  if r2 s< -5 goto c
        r0 |= 4
    c:  if w2 >= 0x80000000 goto d
        r0 |= 8
    d:  if r2 <= r3 goto e
        r0 |= 16
    e:  if w3 & w2 goto f
        r0 |= 32
    f:  exit""",
}


def _edge_mems():
    import struct

    vals = [(0, 0), (7, 0), (-(1 << 63), -1), (-(1 << 31), -1), (0x12345678_9ABCDEF0, 3),
            (-17, 5), (255, 67), (0xFFFFFFFF, 0xFFFFFFFF), (1 << 40, -(1 << 35))]
    return [struct.pack("<qqq", a & (1 << 64) - 1 if a >= 0 else a, b, a ^ b)
            for a, b in vals]


def case_edge_cases_match_the_interpreter():
    import ctypes

    import pybpf
    from pybpf.jit.env import JitEnv
    from pybpf.jit.program import compile_program
    from pybpf.runtime.memory import Buffer

    vm = pybpf.VM()
    checked = 0
    for name, src in EDGE_CASES.items():
        prog = pybpf.assemble(src)
        with vm.load(prog, engine="interp", verify=False) as li, \
                vm.load(prog, engine="jit", tier="baseline", verify=False) as lj, \
                compile_program(prog, env=JitEnv(), tier="baseline") as jv:
            assert lj._jit.tier == "baseline" and jv.tier == "baseline"
            for mem in _edge_mems():
                want = li.run(mem=mem), li.last_mem
                got = lj.run(mem=mem), lj.last_mem
                assert got == want, (name, mem.hex(), got, want)
                buf = Buffer(len(mem), init=mem)
                got = jv.run(buf.address, len(mem)), buf.bytes()
                assert got == want, (name, "verified", mem.hex(), got, want)
                checked += 1
    del ctypes
    return {"runs compared": checked}


LOOP_FOREVER = """
    r0 = 0
top:
    r0 += 1
    if r0 != 0 goto top
    exit
"""


def case_unverified_code_stops_at_insn_limit_and_on_ctrl_c():
    import signal

    import pybpf
    from pybpf.errors import VMError

    vm = pybpf.VM()
    prog = pybpf.assemble(LOOP_FOREVER)
    with vm.load(prog, engine="jit", tier="baseline", verify=False) as lp:
        assert lp._jit.tier == "baseline"
        with pytest.raises(VMError, match="instruction limit exceeded"):
            lp.run(insn_limit=100_000)
        with pytest.raises(VMError, match="instruction limit exceeded"):
            lp.run(insn_limit=100_000)        # and again: the budget is set per run
        # a real signal (the code holds the GIL: no Python thread could run meanwhile)
        def interrupted(*_):
            raise KeyboardInterrupt
        old = signal.signal(signal.SIGALRM, interrupted)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                lp.run(insn_limit=1 << 62)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        # a loop within its budget ends normally (2 instructions per trip)
        short = pybpf.assemble("r0 = 0\nr1 = 1000\nl: r0 += 3\nr1 -= 1\nif r1 != 0 goto l\n"
                               "exit")
        with vm.load(short, engine="jit", tier="baseline", verify=False) as s:
            assert s.run(insn_limit=5000) == 3000
            with pytest.raises(VMError, match="instruction limit exceeded"):
                s.run(insn_limit=1500)
    return "ok"


def case_helper_exception_and_unwind_across_frames():
    from pybpf.insn import make
    from pybpf.jit.program import compile_program
    from pybpf.program import Program
    from pybpf.runtime.helpers import ubpf_test_helpers

    def prog_of(*parts):
        insns = []
        for name, *ops in parts:
            insns += make(name, **dict(zip(("dst", "src", "off", "imm"), ops)))
        return Program(insns)

    out = {}
    for arg in (0, 1):       # unwind(0) two frames down stops everything with r0 = 0
        prog = prog_of(("call_local", 0, 0, 0, 2), ("mov64_imm", 0, 0, 0, 7), ("exit",),
                       ("call_local", 0, 0, 0, 1), ("exit",),
                       ("mov64_imm", 1, 0, 0, arg), ("call_helper", 0, 0, 0, 5),
                       ("mov64_imm", 0, 0, 0, 9), ("exit",))
        with compile_program(prog, ubpf_test_helpers(), tier="baseline") as jp:
            out[f"unwind_{arg}"] = jp.run()
    calls = []

    def boom(x, *_):
        calls.append(x)
        if x == 13:
            raise KeyError("from the helper")
        return x + 1
    prog = prog_of(("call_local", 0, 0, 0, 2), ("mov64_imm", 0, 0, 0, 7), ("exit",),
                   ("call_local", 0, 0, 0, 1), ("exit",), ("call_helper", 0, 0, 0, 1),
                   ("exit",))
    with compile_program(prog, {1: boom}, tier="baseline") as jp:
        with pytest.raises(KeyError, match="from the helper"):
            jp.run(13)
        out["after"] = jp.run(3)
        with pytest.raises(KeyError, match="from the helper"):
            jp.test_run(13, 0, 100)
    assert out == {"unwind_0": 0, "unwind_1": 7, "after": 7}, out
    assert calls == [13, 3, 13], calls
    return out


def _first_tiers(vm, plain, looping):
    from pybpf.jit import placement

    a = vm.load(plain, engine="jit", tier="auto", verify=False, name="plain")
    b = vm.load(looping, engine="jit", tier="auto", verify=False, name="looping")
    assert a._jit.tier == "baseline" and b._jit.tier == "quick", (a._jit.tier, b._jit.tier)
    mem = (5).to_bytes(8, "little")
    assert a.run(mem=mem) == 15 and b.run() == 3
    return a, b, placement()


def case_auto_loads_start_on_the_baseline_or_fall_back_counted():
    import tempfile

    import pybpf
    from pybpf.jit import placement, program, tiers
    from pybpf.jit.placement import format_placement

    os.environ["PYBPF_JIT_CACHE"] = tempfile.mkdtemp(prefix="pybpf-baseline-test-")
    vm = pybpf.VM()
    before = placement()["baseline"]
    plain = pybpf.assemble("r0 = *(u64 *)(r1 + 0)\nr0 *= 3\nexit")
    # bpf_loop is a control transfer the baseline leaves to LLVM
    looping = pybpf.assemble("""
        r1 = 3
        r2 = func(cb) ll
        r3 = 0
        r4 = 0
        call 181
        exit
    cb:
        r0 = 0
        exit""")
    # the -O2 swap waits for this lock: the first tiers stay in place while we look
    program._swap_lock.acquire()
    try:
        a, b, rep = _first_tiers(vm, plain, looping)
    finally:
        program._swap_lock.release()
    after = rep["baseline"]
    assert after["baseline"] == before["baseline"] + 1
    assert after["fallback"] == before["fallback"] + 1
    assert any("special helper loop" in k for k in after["reasons"]), after
    names = {}     # name -> tiers of its allocations (-O2 code may be placed, not yet in)
    for pk in rep["packs"]:
        for p in pk["programs"]:
            names.setdefault(p["name"], set()).add(p.get("tier"))
    assert "baseline" in names["plain"] and "quick" in names["looping"], names
    assert "first tier of this process's loads: baseline" in format_placement(rep)
    tiers.drain()
    mem = (5).to_bytes(8, "little")
    assert a._jit.tier == "O2" and b._jit.tier == "O2", (getattr(a._jit, "tier_error", ""),
                                                          getattr(b._jit, "tier_error", ""))
    assert a.run(mem=mem) == 15 and b.run() == 3
    # the baseline's code is freed once -O2 is in
    tiers_now = [p.get("tier") for pk in placement()["packs"] for p in pk["programs"]]
    assert "baseline" not in tiers_now, tiers_now
    os.environ["PYBPF_JIT_BASELINE"] = "0"
    try:
        c = vm.load(pybpf.assemble("r0 = 4\nexit"), engine="jit", tier="auto", verify=False)
        assert c._jit.tier == "quick"
        c.close()
    finally:
        del os.environ["PYBPF_JIT_BASELINE"]
    a.close()
    b.close()
    return after


def case_auto_keeps_baseline_code_above_the_o2_cap():
    # tier auto starts no background -O2 compile for a program over O2_MAX_SLOTS (LLVM's
    # time grows faster than the program); it keeps running the baseline's code, and says why
    import pybpf
    from pybpf.jit import program, tiers

    n = program.O2_MAX_SLOTS + 1
    big = pybpf.assemble("r0 = 0\n" + "r0 += 1\n" * (n - 2) + "exit")
    small = pybpf.assemble("r0 = 0\n" + "r0 += 1\n" * 98 + "exit")
    vm = pybpf.VM()
    with vm.load(big, engine="jit", tier="auto", verify=False, name="big") as lb, \
            vm.load(small, engine="jit", tier="auto", verify=False, name="small") as ls:
        tiers.drain()
        assert lb._jit.tier == "baseline" and ls._jit.tier == "O2"
        assert lb._jit.tier_error == (f"not compiled at -O2: {n:,} slots, more than the "
                                      f"{n - 1:,} -O2 compiles (VM(max_o2_slots=...))")
        assert lb.run() == n - 2 and ls.run() == 98


def case_cli_lists_baseline_code():
    import tempfile

    src = os.path.join(tempfile.mkdtemp(), "p.s")
    with open(src, "w") as f:
        f.write("r0 = 42\nr0 /= r1\nexit\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    for dis in ("capstone", "llvm"):    # "llvm" has no assembly of baseline code: objdump
        p = subprocess.run([sys.executable, "-m", "pybpf", "jit", src, "--tier", "baseline",
                            "--show", "asm", "--show", "placement", "--no-verify",
                            "--disassembler", dis], env=env, text=True, capture_output=True,
                           timeout=120)
        if dis == "capstone" and "capstone is not installed" in p.stderr:
            continue
        assert p.returncode == 0, p.stderr
        assert "tier baseline" in p.stdout and "div" in p.stdout, p.stdout
        out[dis] = len(p.stdout.splitlines())
    return out


child_tests(globals(), marks=[pytest.mark.jit])
