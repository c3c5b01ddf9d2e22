"""Runaway JIT code (issue 12): for an unverified load the JIT honours ``insn_limit`` through a
back-edge counter (only in code compiled for an unverified load) and Ctrl-C gives
KeyboardInterrupt at the next back edge. Before, ``l: r0 = 0; goto l`` under the JIT never
returned and ignored Ctrl-C. The cases run in child Pythons.
"""
from __future__ import annotations

import signal
import time

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


def test_ctrl_c_interrupts_an_unverified_jit_loop():
    # The child starts with Python's own SIGINT handler, as an interactive Python has. A process
    # inherits an *ignored* SIGINT from a shell that started it in the background without job
    # control (``(pytest ... &)``, nohup); Python then keeps it ignored, Ctrl-C rightly does
    # nothing and the loop ran until the 20 s timeout: the two timeouts of full suites run in
    # the background (test_ctrl_c_with_sigint_ignored_does_nothing shows that case).
    proc = start_code(f"""
import signal, sys, time, pybpf
signal.signal(signal.SIGINT, signal.default_int_handler)
vm = pybpf.VM()
lp = vm.load(pybpf.assemble({LOOP!r}), engine="jit", verify=False)
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
