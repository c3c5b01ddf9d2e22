"""The runtime's own native code (the test_run driver, the Python-call bridge) comes from the
code cache in a process after the first (jit/native.py place_runtime_module, issue 13): a fresh
process loading a cached program compiles nothing. In child processes (JIT code runs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import ROOT

pytestmark = pytest.mark.jit

RUNTIME = ['; ModuleID = "pybpf.pycall"', '; ModuleID = "pybpf.test_run"']
CHILD = r"""
import json, sys
from pybpf.jit import cache, codegen
compiles = []
real = codegen.compile_ir
def counted(text, *a, **k):
    compiles.append(text.split("\n", 1)[0])
    return real(text, *a, **k)
codegen.compile_ir = counted
import pybpf
vm = pybpf.VM()
vm.register_helper(200, lambda a, *r: a + 1, "py_inc", prototype=("ARG_ANYTHING",))
lp = vm.load(pybpf.assemble("r1 = 41\ncall 200\nexit"), engine="jit", tier="O2")
print(json.dumps({"run": lp.run(), "test_run": lp.test_run(repeat=3)[0], "compiles": compiles,
                  "counters": cache.counters()}))
"""


def _child(cache_dir) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=300, cwd=ROOT,
                         env={**os.environ, "PYBPF_JIT_CACHE": str(cache_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_compiles_neither_the_bridge_nor_the_driver(tmp_path):
    first = _child(tmp_path)
    assert first["run"] == 42 and first["test_run"] == 42
    # the bridge and the driver compiled (and the program): three entries stored
    assert sorted(first["compiles"]) == RUNTIME and first["counters"]["stores"] == 3, first
    second = _child(tmp_path)
    assert second["run"] == 42 and second["test_run"] == 42
    assert second["compiles"] == [] and second["counters"]["hits"] == 3, second
    # a damaged runtime entry is dropped and compiled again, never placed
    entries = sorted(tmp_path.rglob("*.jit"), key=lambda p: p.stat().st_size)
    for p in entries:
        blob = bytearray(p.read_bytes())
        blob[-20] ^= 0xFF
        p.write_bytes(bytes(blob))
    third = _child(tmp_path)
    assert third["run"] == 42 and third["test_run"] == 42
    assert sorted(third["compiles"]) == RUNTIME and third["counters"]["corrupt"] == 3, third
