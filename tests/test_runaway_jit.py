"""Runaway JIT code (issue 12): for an unverified load the JIT honours ``insn_limit`` through a
back-edge counter (only in code compiled for an unverified load) and Ctrl-C gives
KeyboardInterrupt within 2**16 budgeted instructions. Before, ``l: r0 = 0; goto l`` under the JIT never
returned and ignored Ctrl-C. The cases run in child Pythons.
"""
from __future__ import annotations

import signal
import time

import pytest

from support import run_code, start_code

LOOP = "l:\nr0 = 0\ngoto l"


def _python(code: str, timeout: float = 120):
    return run_code(code, timeout=timeout)


def test_insn_limit_stops_an_unverified_jit_loop():
    p = _python(f"""
import time, pybpf
from pybpf.errors import VMError
vm = pybpf.VM()
lp = vm.load(pybpf.assemble({LOOP!r}), engine="jit", verify=False)
for limit in (1000, 10**7):
    t = time.perf_counter()
    try:
        lp.run(insn_limit=limit)
        print("returned")
    except VMError as e:
        print("VMError", round(time.perf_counter() - t, 3), e)
""")
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and len(lines) == 2, (p.returncode, p.stdout, p.stderr[-2000:])
    assert all(line.startswith("VMError") and "instruction limit" in line for line in lines)


def test_verified_jit_code_has_no_counter():
    """The counter is only in code compiled for an unverified load."""
    p = _python(f"""
import pybpf
vm = pybpf.VM()
prog = pybpf.assemble("r0 = 0\\nl:\\nr0 += 1\\nif r0 < 1000 goto l\\nexit")
unverified, verified = (vm.load(prog, engine="jit", verify=v) for v in (False, True))
# the counter's slow path calls Python, so only the unverified code needs the GIL
print(unverified._jit.needs_gil, verified._jit.needs_gil, verified._budget is None,
      unverified.run(insn_limit=10**6), verified.run())
""")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["True", "False", "True", "1000", "1000"], p.stdout


# A loop whose jumps back come out of a compare tree that the lowering turns into an LLVM
# switch (jit/switches.py): x = 1, 2 or 7 loops for ever, through the tree's inner compares.
TREE_LOOP = """
r2 = *(u64 *)(r1 + 0)
r0 = 0
loop:
r0 += 1
if r2 s> 5 goto t1
if r2 == 1 goto loop
if r2 == 2 goto loop
if r2 == 3 goto out
goto out
t1:
if r2 == 7 goto loop
if r2 == 8 goto out
goto out
out:
exit
"""


def test_a_loop_through_a_recovered_switch_is_charged():
    """The switch jumps straight to each value's leaf, past the inner compares: a leaf that lies
    backwards must still be charged (before, x = 1 ran for ever, deaf to insn_limit and
    Ctrl-C, because only the root compare's own jump back was counted)."""
    p = _python(f"""
import struct, pybpf
from pybpf.errors import VMError
vm = pybpf.VM()
prog = pybpf.assemble({TREE_LOOP!r})
for tier in ("O2", "quick", "baseline"):
    lj = vm.load(prog, engine="jit", verify=False, tier=tier)
    li = vm.load(prog, engine="interp", verify=False)
    if tier == "O2":
        print("switch", "switch i64" in lj._jit.ir_before)
    for x in (0, 3, 8, -1, 1, 2, 7):
        out = []
        for lp in (lj, li):
            try:
                out.append(lp.run(mem=struct.pack("<q", x), insn_limit=10**5))
            except VMError as e:
                out.append("limit" if "instruction limit" in str(e) else str(e))
        print(tier, x, *out, flush=True)
""", timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr[-2000:])
    lines = p.stdout.splitlines()
    assert lines[0] == "switch True", lines
    want = {"0": "1", "3": "1", "8": "1", "-1": "1", "1": "limit", "2": "limit", "7": "limit"}
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 3 * len(want), lines
    for tier, x, jit, interp in rows:
        assert jit == interp == want[x], (tier, x, jit, interp)


# Two jumps back into one loop head, of different spans (the JIT's shared latch gets a phi):
# r1 = 1..100; even r1 jumps back from pc 6 (span 5), odd r1 from pc 8 (span 7).
TWO_BACK_EDGES = """
r0 = 0
r1 = 0
loop:
r1 += 1
if r1 > 100 goto out
r2 = r1
r2 &= 1
if r2 == 0 goto loop
r0 += 1
goto loop
out:
exit
"""


def test_each_jump_back_taken_charges_its_span():
    """Both JIT tiers charge a jump back only when taken, by the span it repeats: 50 x 5 + 50
    x 7 = 600 here (the budget cell says what was charged), and spend the budget as the
    interpreter does (its limit counts every instruction: 605 here)."""
    p = _python(f"""
import pybpf
from pybpf.errors import VMError
vm = pybpf.VM()
prog = pybpf.assemble({TWO_BACK_EDGES!r})
li = vm.load(prog, verify=False)
print("interp", li.run(insn_limit=605), li.last_insn_count)
for tier in ("O2", "baseline"):
    lj = vm.load(prog, engine="jit", verify=False, tier=tier)
    r0 = lj.run(insn_limit=10**6)
    charged = 10**6 - lj._budget[0]
    try:
        lj.run(insn_limit=599)
        stopped = "no"
    except VMError as e:
        stopped = "limit" if "instruction limit" in str(e) else str(e)
    print(tier, r0, charged, lj.run(insn_limit=600), stopped)
""", timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr[-2000:])
    assert p.stdout.split("\n")[:3] == ["interp 50 605", "O2 50 600 50 limit",
                                         "baseline 50 600 50 limit"], p.stdout


@pytest.mark.parametrize("tier", ["O2", "baseline"])
def test_ctrl_c_interrupts_an_unverified_jit_loop(tier):
    """Signals are polled each time the budget crosses a multiple of 2**16 (jit/lower.py
    POLL_EVERY), on both JIT tiers."""
    # The child starts with Python's own SIGINT handler, as an interactive Python has. A process
    # inherits an *ignored* SIGINT from a shell that started it in the background without job
    # control (``(pytest ... &)``, nohup); Python then keeps it ignored, Ctrl-C rightly does
    # nothing and the loop ran until the 20 s timeout: the two timeouts of full suites run in
    # the background (test_ctrl_c_with_sigint_ignored_does_nothing shows that case).
    proc = start_code(f"""
import signal, sys, time, pybpf
signal.signal(signal.SIGINT, signal.default_int_handler)
vm = pybpf.VM()
lp = vm.load(pybpf.assemble({LOOP!r}), engine="jit", verify=False, tier={tier!r})
print("running", flush=True)
t = time.perf_counter()
try:
    lp.run(insn_limit=1 << 62)
except KeyboardInterrupt:
    print("KeyboardInterrupt after", round(time.perf_counter() - t, 2), flush=True)
""")
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and out.startswith("KeyboardInterrupt"), (proc.returncode,
                                                                           out, err[-2000:])


def test_ctrl_c_with_sigint_ignored_does_nothing():
    """A process whose SIGINT is ignored (inherited SIG_IGN) keeps running when it gets one:
    pybpf's signal poll runs Python's handlers, it installs none. The loop then ends at its
    insn_limit."""
    proc = start_code(f"""
import signal, time, pybpf
from pybpf.errors import VMError
signal.signal(signal.SIGINT, signal.SIG_IGN)
vm = pybpf.VM()
lp = vm.load(pybpf.assemble({LOOP!r}), engine="jit", verify=False)
print("running", flush=True)
try:
    lp.run(insn_limit=10**8)
except VMError as e:
    print("VMError", e)
""")
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and out.startswith("VMError") and "instruction limit" in out, (
        proc.returncode, out, err[-2000:])
