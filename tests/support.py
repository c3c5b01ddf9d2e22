"""What the engine tests share: assembling with helpers named, running a scenario on both
engines, a test packet, the sample drivers, the process's RSS, and the child-process harness
of the JIT tests (JIT'd code runs unchecked, so its cases run in a child Python that prints one
JSON line per case; a crash fails the cases it did not report).

Imported as ``support`` (tests/ is on sys.path under pytest and when a test file runs as a
script)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import traceback

import pybpf
from pybpf.helper_names import HELPER_IDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
M64 = (1 << 64) - 1
ENGINES = ("interp", "jit")


def asm(text: str):
    """Assemble; helper calls may be written by name (``call bpf_map_lookup_elem`` ->
    ``call 1``; kfunc names stay names)."""
    return pybpf.assemble(re.sub(r"call bpf_(\w+)",
                                 lambda m: f"call {HELPER_IDS.get(m[1], m[0][5:])}", text))


def both(fn):
    """Run ``fn(engine)`` on each engine; the results must be equal (returns the JIT's)."""
    results = {engine: fn(engine) for engine in ENGINES}
    assert results["interp"] == results["jit"], results
    return results["jit"]


def frame(ethertype: int = 0x0800, proto: int = 17, payload: bytes = bytes(8)) -> bytes:
    """An Ethernet frame with an IPv4 header (10.0.0.1 -> 10.0.0.2) and ``payload``."""
    eth = bytes.fromhex("0a0b0c0d0e0f" "010203040506") + struct.pack(">H", ethertype)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return eth + ip + payload


def sample_driver(name: str):
    """The driver module of a sample (``samples/<name>/run.py``)."""
    spec = importlib.util.spec_from_file_location(f"sample_{name}",
                                                  os.path.join(SAMPLES, name, "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) * 1024


# -- the child-process harness ------------------------------------------------------------------

def cases_of(namespace: dict) -> dict:
    """The ``case_*`` functions of a test module's globals, by name without the prefix."""
    return {name[5:]: fn for name, fn in namespace.items() if name.startswith("case_")}


def child(cases: dict, names: list[str], detail=lambda d: d) -> int:
    """(child) Run the named cases, printing one JSON line each: ``ok`` and ``detail(result)``,
    or the traceback."""
    for name in names:
        try:
            out = detail(cases[name]())
            print(json.dumps({"case": name, "ok": True, "detail": out}), flush=True)
        except Exception:
            print(json.dumps({"case": name, "ok": False, "error": traceback.format_exc()}),
                  flush=True)
    return 0


def run_child(path: str, cases: dict) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``python <path> child <every case>``; returns ({case: record}, the process)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, path, "child", *cases], capture_output=True,
                          text=True, timeout=900, env=env)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            results[rec["case"]] = rec
    return results, proc


def assert_case_passed(child_results: tuple, name: str) -> None:
    """Fail unless the child of :func:`run_child` reported case ``name`` as passed."""
    results, proc = child_results
    rec = results.get(name)
    assert rec is not None, (f"the child died before reporting {name} (exit {proc.returncode})"
                             f"\n{proc.stderr[-3000:]}")
    assert rec["ok"], rec["error"]
