"""Tiered compilation (jit/tiers.py, jit/program.py) and the persistent code cache (jit/cache.py).

JIT'd code runs unchecked, so the cases run in a child Python (``python tests/test_jit_tiers.py
child``), one JSON line per case; each case uses a code cache directory of its own.

Cases: baseline tier (and, apart, the quick tier), then -O2 swapped in while 8 threads run the
program (every result checked, the first tier's code freed afterwards); tail calls through a prog_array enter the tiered entry point
before, during and after the swap; tier="O2" and tier="quick"; the conformance suite on the baseline, the quick
tier, on -O2 and on -O2 code taken from the cache (``PYBPF_JIT_FULL=1``: every file, else a
sample); cache entries damaged, truncated, replaced by another entry or by a well-formed entry
with bad contents are each detected, counted and compiled again; the size bound evicts the
least recently used entries; several processes filling one cache at once; a closed program skips
its background -O2 compile when no cache would keep the code;
``pybpf jit --cache stats|clear``.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from support import ROOT, child_tests

LOOP = """
    r6 = *(u64 *)(r1 + 0)
    r0 = 0
    r7 = 200
loop:
    r8 = r6
    r8 *= 0x9E3779B1
    r8 ^= r0
    r0 += r8
    r0 <<= 1
    r6 += 3
    r7 -= 1
    if r7 != 0 goto loop
    exit
"""


def _fresh_cache() -> str:
    d = tempfile.mkdtemp(prefix="pybpf-tier-test-")
    os.environ["PYBPF_JIT_CACHE"] = d
    return d


def _expected(prog, inputs):
    import pybpf

    vm = pybpf.VM()
    with vm.load(prog, engine="interp") as li:
        return [li.run(mem=m) for m in inputs]


def case_tier_swap_while_eight_threads_run():
    """From the baseline tier (jit/baseline.py), the first tier by default."""
    return _tier_swap("baseline")


def case_tier_swap_from_the_quick_tier_while_eight_threads_run():
    """From LLVM's quick tier (PYBPF_JIT_BASELINE=0, and what the baseline does not emit)."""
    os.environ["PYBPF_JIT_BASELINE"] = "0"
    try:
        return _tier_swap("quick")
    finally:
        del os.environ["PYBPF_JIT_BASELINE"]


def _tier_swap(first: str):
    import struct

    import pybpf
    from pybpf.jit import placement, program, tiers

    _fresh_cache()
    prog = pybpf.assemble(LOOP)
    inputs = [struct.pack("<Q", x * 0x1234567 + 1) for x in range(16)]
    want = _expected(prog, inputs)
    vm = pybpf.VM()
    # The -O2 compile runs beside the first tier's and may be done first; its swap waits for
    # this lock, held until every thread has run the first tier's code.
    program._swap_lock.acquire()
    try:
        lp = vm.load(prog, engine="jit", tier="auto")
        assert lp._jit.tier == first, lp._jit.tier
        assert lp._jit.cache == ("miss" if first == "quick" else "off"), lp._jit.cache
    except BaseException:
        program._swap_lock.release()
        raise
    quick_address = lp._jit.allocation.address
    stop = threading.Event()
    errors, counts = [], [0] * 8
    seen = [set() for _ in range(8)]

    def worker(k: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                j = (i + k) % len(inputs)
                tier = lp._jit.tier
                if i % 7 == 0:
                    r0 = lp.test_run(mem=inputs[j], repeat=20)[0]
                else:
                    r0 = lp.run(mem=inputs[j])
                if r0 != want[j]:
                    errors.append((k, j, r0, want[j]))
                    return
                seen[k].add(tier)
                counts[k] += 1
                i += 1
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while not all(first in x for x in seen) and not errors \
                and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        program._swap_lock.release()
    tiers.drain()                       # the background -O2 compile and the swap
    # keep running until every thread ran -O2 code a while (a loaded machine may starve some)
    deadline = time.monotonic() + 30
    while not all("O2" in x for x in seen) and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert lp._jit.tier == "O2" and lp._jit.opt_level == 2
    assert any(first in s for s in seen) and all("O2" in s for s in seen), seen
    # the first tier's code is gone (int3-filled and given back) once no run was inside it
    progs = [p for pk in placement()["packs"] for p in pk["programs"]]
    assert not any(p.get("tier") == first for p in progs), progs
    tiers_of = {p["address"]: p.get("tier") for p in progs}
    assert tiers_of.get(lp._jit.allocation.address) == "O2"
    assert tiers_of.get(quick_address) in (None, "O2")   # freed, maybe reused since
    # prog_array slots keep the stub: it still works and enters -O2 code
    assert lp._jit._entry is not None and lp._jit._entry.address != lp._jit.address
    from pybpf.jit import native

    via_stub = native.make_caller(lp._jit._entry.address)
    import ctypes

    buf = ctypes.create_string_buffer(inputs[3], len(inputs[3]))
    assert via_stub(ctypes.addressof(buf), len(inputs[3])) == want[3]
    tier_up = lp._jit.timings.get("tier_up")
    lp.close()
    return {"runs": sum(counts), "tier_up_s": tier_up}


def case_tier_o2_waits_and_quick_stays():
    import struct

    import pybpf
    from pybpf.jit import tiers

    _fresh_cache()
    prog = pybpf.assemble(LOOP)
    inputs = [struct.pack("<Q", x) for x in range(5)]
    want = _expected(prog, inputs)
    vm = pybpf.VM()
    with vm.load(prog, engine="jit", tier="O2") as o2, \
            vm.load(prog, engine="jit", tier="quick") as quick:
        assert o2._jit.tier == "O2" and o2._jit.opt_level == 2
        assert quick._jit.tier == "quick" and quick._jit.opt_level == 0
        tiers.drain()
        assert quick._jit.tier == "quick"          # nothing swaps a quick-only program
        assert [o2.run(mem=m) for m in inputs] == want
        assert [quick.run(mem=m) for m in inputs] == want
    # -O2 is now in the cache: an "auto" load takes it and skips the quick tier
    with vm.load(prog, engine="jit", tier="auto") as auto:
        assert auto._jit.tier == "O2" and auto._jit.cache == "hit"
        assert [auto.run(mem=m) for m in inputs] == want
    return "ok"


def case_closed_programs_skip_their_o2_compile_without_a_cache():
    """With the code cache off, the background -O2 compile of a program closed before the job
    starts is skipped: nobody could use its code. It used to compile anyway, so a fast
    load/run/close loop queued compiles without bound (10,000 cycles: +37 MiB RSS)."""
    import pybpf
    from pybpf.jit import program as jit_program, tiers

    saved = os.environ.get("PYBPF_JIT_CACHE")
    os.environ["PYBPF_JIT_CACHE"] = "off"
    compiles = []
    real = jit_program.compile_ir

    def counting(ir, opt_level=2, **kw):
        compiles.append(opt_level)
        return real(ir, opt_level=opt_level, **kw)

    jit_program.compile_ir = counting
    try:
        vm = pybpf.VM()
        prog = pybpf.assemble(LOOP)
        cycles = 60
        for _ in range(cycles):
            lp = vm.load(prog, engine="jit", tier="auto")
            assert lp._jit.tier == "baseline"
            lp.close()
        tiers.drain()
    finally:
        jit_program.compile_ir = real
        if saved is None:
            os.environ.pop("PYBPF_JIT_CACHE", None)
        else:
            os.environ["PYBPF_JIT_CACHE"] = saved
    o2 = compiles.count(2)
    # only jobs a worker thread picked up before their program was closed compile
    assert o2 < cycles // 2, (o2, cycles)
    # an open program still tiers up
    with vm.load(prog, engine="jit", tier="auto") as lp:
        tiers.drain()
        assert lp._jit.tier == "O2", lp._jit.tier_error
    return {"o2_compiles_of_closed_programs": o2, "cycles": cycles}


def case_tail_calls_enter_through_the_tiered_entry_point():
    """A prog_array holds the tiered target's patchable entry (the stub), not its quick code;
    tail calls reach the quick code, then the -O2 code once it is swapped in (the quick code is
    int3-filled after that: a tail call still going there would trap), with another thread
    running the caller from before the swap is let go until after it."""
    import struct

    import pybpf
    from pybpf.jit import program, tiers

    _fresh_cache()
    vm = pybpf.VM()
    jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=2)
    # The tail call keeps ctx: the target reads the caller's mem.
    target_src = LOOP.replace("r6 = *(u64 *)(r1 + 0)", "r6 = *(u64 *)(r1 + 0)\n    r9 = r1")
    mems = [struct.pack("<QI", x * 7919 + 3, 1) for x in range(8)]
    want = _expected(pybpf.assemble(target_src), mems)
    caller = vm.load(pybpf.assemble(f"""
        r2 = map_fd({jt.fd}) ll
        r3 = *(u32 *)(r1 + 8)
        call 12
        r0 = 1000
        exit"""), engine="jit", tier="O2")
    # The swap waits for this lock: the -O2 code (compiled meanwhile) goes in only when the
    # quick code has run through the prog_array.
    with program._swap_lock:
        target = vm.load(pybpf.assemble(target_src), engine="jit", tier="auto")
        assert target._jit.tier == "baseline"
        stub, quick = target._jit._entry.address, target._jit._entry.current[0]
        jt[1] = target
        assert target.native_entry == stub, (hex(target.native_entry), hex(stub))
        before = [caller.run(mem=m) for m in mems]
        assert before == want, (before, want)
        assert caller.run(mem=struct.pack("<QI", 5, 0)) == 1000      # empty slot: falls through
    stop, results, errors = threading.Event(), [], []

    def loop() -> None:
        try:
            while not stop.is_set():
                results.append([caller.run(mem=m) for m in mems] == want)
        except BaseException as exc:  # reported below
            errors.append(repr(exc))
    t = threading.Thread(target=loop)
    t.start()
    try:
        tiers.drain()
        time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    assert not errors and results and all(results), (errors, len(results))
    assert target._jit.tier == "O2", getattr(target._jit, "tier_error", "")
    o2 = target._jit._entry.current[0]
    assert o2 != quick and o2 == target._jit.address
    after = [caller.run(mem=m) for m in mems]
    assert after == want, (after, want)
    jt[1] = target          # a prog_array updated after the swap holds the -O2 code itself
    assert target.native_entry == o2
    assert [caller.run(mem=m) for m in mems] == want
    caller.close()
    target.close()
    return {"runs through the swap": len(results) * len(mems), "stub": hex(stub),
            "quick": hex(quick), "O2": hex(o2)}


def _conformance_files() -> list[str]:
    import support

    root = support.conformance_dir() if hasattr(support, "conformance_dir") else None
    root = root or os.environ.get("PYBPF_CONFORMANCE") or os.path.join(
        os.path.dirname(ROOT), "shared", "conformance")
    files = sorted(glob.glob(os.path.join(str(root), "tests", "*.data")))
    if not files:
        return []
    if os.environ.get("PYBPF_JIT_FULL") != "1":
        files = files[::6]      # a sample in CI; PYBPF_JIT_FULL=1 runs every file
    return files


def case_conformance_on_quick_o2_and_cached_code():
    from pybpf.jit import cache
    from pybpf.testrunner import run_file

    files = _conformance_files()
    if not files:
        return "no conformance suite"
    _fresh_cache()
    from pybpf.jit import helper_calls, native
    native.get_driver()                 # the runtime's own code goes to the cache first
    helper_calls.bridge_addresses()
    report = {}
    for label, tier in (("baseline", "baseline"), ("quick", "quick"), ("O2", "O2"),
                        ("O2 from cache", "O2")):
        os.environ["PYBPF_JIT_TIER"] = tier
        before = cache.counters()
        outcomes = [run_file(f, engine="jit") for f in files]
        after = cache.counters()
        bad = [(o.path if hasattr(o, "path") else f, o.status, getattr(o, "message", ""))
               for f, o in zip(files, outcomes) if o.status not in ("pass", "skip")]
        assert not bad, (label, bad[:5])
        report[label] = {"files": len(files), "hits": after["hits"] - before["hits"],
                         "stores": after["stores"] - before["stores"]}
    assert report["O2 from cache"]["stores"] == 0 and report["O2 from cache"]["hits"] > 0
    assert report["O2"]["hits"] == 0
    assert report["baseline"]["stores"] == report["baseline"]["hits"] == 0
    return report


def _entry_files(d: str) -> list[str]:
    return sorted(glob.glob(os.path.join(d, "*", "*.jit")))


def case_damaged_truncated_and_foreign_entries_are_recompiled():
    import struct

    import pybpf
    from pybpf.jit import cache

    d = _fresh_cache()
    progs = [pybpf.assemble(LOOP), pybpf.assemble("r0 = *(u64 *)(r1 + 0)\nr0 *= 3\nexit")]
    inputs = [struct.pack("<Q", 7)]
    want = [_expected(p, inputs)[0] for p in progs]
    vm = pybpf.VM()

    def load(i: int):
        lp = vm.load(progs[i], engine="jit", tier="O2")
        r0 = lp.run(mem=inputs[0])
        state = lp._jit.cache
        lp.close()
        assert r0 == want[i], (i, r0, want[i])
        return state

    assert [load(0), load(1)] == ["miss", "miss"]
    assert [load(0), load(1)] == ["hit", "hit"]
    entries = _entry_files(d)
    assert len(entries) == 2
    path0 = [p for p in entries if os.path.getsize(p) == max(map(os.path.getsize, entries))][0]
    path1 = [p for p in entries if p != path0][0]
    original = open(path0, "rb").read()

    def corrupt(how: str) -> None:
        data = bytearray(original)
        if how == "damaged":
            data[len(data) // 2] ^= 0x40
        elif how == "truncated":
            data = data[:len(data) - 9]
        elif how == "foreign":          # a valid entry, but for another key
            data = bytearray(open(path1, "rb").read())
        elif how == "bad contents":     # checksum right, contents wrong (symbol past the code)
            from pybpf.jit.link import LinkImage

            image, record = cache._decode(bytes(data[cache._HEAD.size:]))
            bad = LinkImage(image.data, image.code_size, {"bpf_main": len(image.data) + 64},
                            image.fixups, image.externals, image.sections)
            key = os.path.basename(path0)[:-4]
            payload = cache._encode(bad, record)
            import hashlib

            data = bytearray(cache._HEAD.pack(cache._MAGIC, hashlib.sha256(
                key.encode() + payload).digest(), len(payload)) + payload)
        with open(path0, "wb") as f:
            f.write(data)

    results = {}
    for how in ("damaged", "truncated", "foreign", "bad contents"):
        corrupt(how)
        before = cache.counters()["corrupt"]
        state = load(0)                  # detected, recompiled, stored again
        results[how] = (state, cache.counters()["corrupt"] - before)
        assert results[how] == ("miss", 1), (how, results[how])
        assert open(path0, "rb").read() == original   # the recompiled entry, same bytes
        assert load(0) == "hit"
    return results


def case_size_bound_evicts_least_recently_used():
    import pybpf
    from pybpf.jit import cache

    d = _fresh_cache()
    vm = pybpf.VM()
    progs = [pybpf.assemble(f"r0 = {k}\nr0 += r2\nexit") for k in range(12)]
    for p in progs[:4]:
        vm.load(p, engine="jit", tier="O2").close()
    size = max(os.path.getsize(p) for p in _entry_files(d))
    os.environ["PYBPF_JIT_CACHE_SIZE"] = str(size * 6)
    try:
        time.sleep(0.05)
        lp = vm.load(progs[0], engine="jit", tier="O2")     # a hit makes entry 0 recent
        assert lp._jit.cache == "hit"
        lp.close()
        for p in progs[4:7]:    # 7 entries for a bound of 6: the 2 oldest (1 and 2) go
            time.sleep(0.01)
            vm.load(p, engine="jit", tier="O2").close()
        total = sum(os.path.getsize(p) for p in _entry_files(d))
        assert total <= size * 6 and cache.counters()["evicted"] > 0
        states = []
        for p in (progs[0], progs[1], progs[6]):
            lp = vm.load(p, engine="jit", tier="O2")
            states.append(lp._jit.cache)
            lp.close()
    finally:
        del os.environ["PYBPF_JIT_CACHE_SIZE"]
    assert states == ["hit", "miss", "hit"], states     # 1 was oldest; 0 was used; 6 is new
    return states


_WRITER = """
import sys, pybpf
from pybpf.jit import cache
vm = pybpf.VM()
out = []
for k in range(12):
    prog = pybpf.assemble(f"r0 = {k}\\nr0 *= r2\\nr0 += 5\\nexit")
    with vm.load(prog, engine="jit", tier="O2") as lp:
        out.append(lp.run(mem=bytes(k + 1)))
assert out == [k * (k + 1) + 5 for k in range(12)], out
print(cache.counters()["corrupt"])
"""


def case_processes_fill_one_cache_at_once():
    d = _fresh_cache()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert all(o[0].strip() == "0" for o in outs), outs
    assert len(_entry_files(d)) == 12
    assert not glob.glob(os.path.join(d, "*", ".tmp-*"))     # no temporary file left
    return len(_entry_files(d))


def case_cli_cache_stats_and_clear():
    d = _fresh_cache()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    src = os.path.join(tempfile.mkdtemp(), "p.s")
    with open(src, "w") as f:
        f.write("r0 = 42\nexit\n")

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "pybpf", *args], env=env, text=True,
                           capture_output=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    rc, out, err = cli("jit", src, "--show", "placement")
    assert rc == 0, err
    assert "tier O2" in out and "cache miss" in out, out
    rc, out, err = cli("jit", "--cache", "stats")
    assert rc == 0 and d in out and "entries: 1" in out, (out, err)
    rc, out, err = cli("jit", src, "--show", "placement")
    assert "cache hit" in out, out
    rc, out, err = cli("jit", "--cache", "clear")
    assert rc == 0 and "removed 1" in out, (out, err)
    assert _entry_files(d) == []
    rc, out, err = cli("jit", "--cache", "bogus")
    assert rc == 2 and "Traceback" not in err, err
    return "ok"


child_tests(globals(), lambda d: json.loads(json.dumps(d, default=str)), "test_case")
