"""Every sample runs in both engines with the same results (JIT runs in a child process).

* Every object in ``samples/c`` loads with ``pybpf.load_elf`` and each of its programs loads on
  the interpreter and on the JIT, and every object has a driver (``samples/<name>/run.py``).
* Each driver's ``run_sample`` passes on both engines and reports the same findings (page
  counts, sums, actions...). For the arena hash table (the issue's acceptance test): BPF
  inserts 10,000 keys and Python, walking buckets and lists through the pointers, finds every
  key with its value; Python inserts keys and BPF finds every one; BPF deletes half and Python
  sees exactly the rest; the pages allocated and freed are reported.
* ``samples/asm/sum_bytes.s`` assembles and gives the same sum on both engines.

The child is this file run as ``python tests/test_samples.py child <engine>``; it prints one
JSON line per sample.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import traceback

import pytest

from support import SAMPLES, run_script, sample_driver

OBJECTS = sorted(glob.glob(os.path.join(SAMPLES, "c", "*.o")))
# sample -> run_sample keyword arguments (the sizes)
DRIVERS = {"arena_htab": dict(keys=10000, buckets=256), "arena_list": dict(count=50),
           "ringbuf": {}, "socket_count": {}, "xdp_filter": {}}


def _jsonable(out: dict) -> dict:
    return {k: v for k, v in out.items() if isinstance(v, (bool, int, str, float))}


def run_all(engine: str) -> None:
    """(child) Load every object's programs, run every driver and sum_bytes on ``engine``."""
    import pybpf

    for path in OBJECTS:
        name = os.path.basename(path)[:-2]
        try:
            obj = pybpf.load_elf(path)
            loaded = []
            for pname, prog in obj.programs.items():
                lp = obj.vm.load(prog, engine=engine)
                loaded.append(pname)
                lp.close()
            rec = {"object": name, "ok": True, "programs": sorted(loaded)}
        except Exception:
            rec = {"object": name, "ok": False, "error": traceback.format_exc()}
        print(json.dumps(rec), flush=True)
    for name, kwargs in DRIVERS.items():
        lines: list[str] = []
        try:
            out = sample_driver(name).run_sample(engine, **kwargs, say=lines.append)
            rec = {"sample": name, "ok": bool(out["ok"]), "out": _jsonable(out), "lines": lines}
        except Exception:
            rec = {"sample": name, "ok": False, "error": traceback.format_exc(), "lines": lines}
        print(json.dumps(rec), flush=True)
    try:
        with open(os.path.join(SAMPLES, "asm", "sum_bytes.s")) as f:
            prog = pybpf.assemble(f.read())
        data = bytes(range(1, 101))
        # loops over a buffer of any length: unverifiable, trusted (samples/asm/README)
        lp = pybpf.VM().load(prog, engine=engine, verify=False)
        rec = {"sample": "sum_bytes", "ok": True, "out": {"r0": lp.run(mem=data)}}
    except Exception:
        rec = {"sample": "sum_bytes", "ok": False, "error": traceback.format_exc()}
    print(json.dumps(rec), flush=True)


def _child(engine: str) -> tuple[dict, dict, subprocess.CompletedProcess]:
    proc = run_script(__file__, "child", engine, timeout=900)
    objects, samples = {}, {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            (objects if "object" in rec else samples)[rec.get("object") or rec["sample"]] = rec
    return objects, samples, proc


@pytest.fixture(scope="module")
def results():
    # Both engines in children: the interpreter's run is the reference, the JIT's may crash.
    return {engine: _child(engine) for engine in ("interp", "jit")}


def test_every_object_has_a_driver():
    names = {os.path.basename(p)[:-2] for p in OBJECTS}
    assert names and names == set(DRIVERS), (names, set(DRIVERS))


@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("obj", [os.path.basename(p)[:-2] for p in OBJECTS])
def test_object_loads_with_load_elf_on_both_engines(results, engine, obj):
    objects, _, proc = results[engine]
    rec = objects.get(obj)
    assert rec is not None, f"child died (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert rec["ok"], rec["error"]
    assert rec["programs"]


@pytest.mark.parametrize("sample", list(DRIVERS) + ["sum_bytes"])
def test_sample_runs_the_same_in_both_engines(results, sample):
    recs = {}
    for engine, (_, samples, proc) in results.items():
        rec = samples.get(sample)
        assert rec is not None, (f"{engine} child died (exit {proc.returncode}):\n"
                                 f"{proc.stderr[-3000:]}")
        assert rec["ok"], (engine, rec.get("error") or "\n".join(rec["lines"]))
        recs[engine] = rec
    assert recs["interp"]["out"] == recs["jit"]["out"]


def test_arena_htab_acceptance_in_both_engines(results):
    for engine, (_, samples, _) in results.items():
        out = samples["arena_htab"]["out"]
        assert out["Python finds all 10000 keys with their values"], engine
        assert out["BPF finds the 12 keys Python inserted (and not the 4 others)"], engine
        assert out["Python sees exactly the even keys"], engine
        # pages: the globals' page, the allocator's guard page, the table and 10000 elements
        # of 24 bytes (59 pages); Python's page; freed again
        assert (out["bpf_pages"], out["pages"], out["pages_after_free"]) == (62, 63, 62), out
        assert any("Python freed its page" in line for line in samples["arena_htab"]["lines"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        run_all(sys.argv[2])
    else:
        print(__doc__)
