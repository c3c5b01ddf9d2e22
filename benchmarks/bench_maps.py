"""Benchmark of map helper lookups from JIT'd code.

One BPF program loops ``N`` times: key = i & (2K - 1) on the stack, ``bpf_map_lookup_elem``, and
adds up value + 1 over the hits (keys 0..K-1 are in the map with value = key, so about half
the lookups miss; reading the value keeps the lookup's memory access in the measured work). It runs with
``test_run(repeat=R)``; the figure is lookups per second, for a hash map (u32 keys) and an
array, on:

* the JIT, where the lookup is native code built from LLVM IR over the map's layout;
* the JIT with the lookup through the shared Python bridge (the same program compiled without
  the map resolver: what every helper cost before native lookups);
* the interpreter;
* a Python dict doing the same lookups in a Python loop (``d.get(i & mask)``, the same sum).

All four must give the same sum, or the run fails. ``run()`` returns a dict;
``python -m pybpf.benchmarks.bench_maps [--quick]`` prints a table.
"""
from __future__ import annotations

import struct
import time

import pybpf
from pybpf.benchmarks.common import gc_paused, main, median_of
from pybpf.errors import BPFError
from pybpf.helper_names import HELPER_IDS
from pybpf.jit import compile_program
from pybpf.jit.env import JitEnv
from pybpf.vm import VM

LOOKUP_LOOP = """
    r6 = 0
    r7 = 0
loop:
    r1 = r6
    r1 &= {mask}
    *(u32 *)(r10 - 4) = r1
    r1 = map_fd({fd}) ll
    r2 = r10
    r2 += -4
    call {lookup}
    if r0 == 0 goto +3
    r1 = *(u64 *)(r0 + 0)
    r7 += r1
    r7 += 1
    r6 += 1
    if r6 < {n} goto loop
    r0 = r7
    exit"""


def _one(vm: VM, mtype: str, keys: int, n: int, quick: bool) -> dict:
    m = vm.create_map(mtype, key_size=4, value_size=8, max_entries=keys)
    for k in range(keys):
        m[struct.pack("<I", k)] = struct.pack("<Q", k)
    prog = pybpf.assemble(LOOKUP_LOOP.format(mask=2 * keys - 1, fd=m.fd, n=n,
                                             lookup=HELPER_IDS["map_lookup_elem"]))
    want = sum((i & (2 * keys - 1)) + 1 for i in range(n) if i & (2 * keys - 1) < keys)
    out = {"map": mtype, "keys": keys, "lookups_per_run": n}
    # a trusted benchmark loop (past any verifier's budget): unverified
    with vm.load(prog, engine="jit", name=f"lookup-{mtype}", verify=False,
                 tier="O2") as lj:
        repeat = 200 if quick else 2000
        r0, _ = lj.test_run(repeat=10)
        ns = median_of(lambda: lj.test_run(repeat=repeat)[1], 5)
        out["jit_native_per_s"], out["gil"] = n / ns * 1e9, lj._jit.needs_gil
    if r0 != want:
        raise BPFError(f"bench_maps: native {mtype} lookups counted {r0}, not {want}")
    # the same code with every lookup through the Python bridge (no map resolver)
    env = JitEnv(kfuncs=vm.kfuncs)
    with compile_program(prog, vm.helpers, values64=vm.values64(prog), env=env,
                         name=f"lookup-{mtype}-bridge") as jb:
        r0, _ = jb.test_run(repeat=2)
        ns = median_of(lambda: jb.test_run(repeat=2 if quick else 10)[1], 3)
        out["jit_bridge_per_s"] = n / ns * 1e9
    if r0 != want:
        raise BPFError(f"bench_maps: bridged {mtype} lookups counted {r0}, not {want}")
    with vm.load(prog, engine="interp", name=f"lookup-{mtype}", verify=False) as li:
        r0, ns = li.test_run(repeat=1)
        ns = median_of(lambda: li.test_run(repeat=1)[1], 3)
        out["interp_per_s"] = n / ns * 1e9
    if r0 != want:
        raise BPFError(f"bench_maps: interpreted {mtype} lookups counted {r0}, not {want}")
    d = {k: k for k in range(keys)}
    mask = 2 * keys - 1

    def dict_loop() -> float:
        t0 = time.perf_counter_ns()
        hits = 0
        get = d.get
        for i in range(n):
            v = get(i & mask)
            if v is not None:
                hits += v + 1
        if hits != want:
            raise BPFError(f"bench_maps: the dict counted {hits}, not {want}")
        return time.perf_counter_ns() - t0
    out["dict_per_s"] = n / median_of(dict_loop, 5) * 1e9
    return out


def run(report=None, quick: bool = False) -> dict:
    say = report or (lambda line: None)
    vm = VM()
    with gc_paused():
        n = 2000 if quick else 10000
        out = {}
        for mtype in ("hash", "array"):
            out[mtype] = r = _one(vm, mtype, 1024, n, quick)
            say(f"{mtype} lookups: JIT native {r['jit_native_per_s'] / 1e6:.1f} M/s, bridge "
                f"{r['jit_bridge_per_s'] / 1e6:.2f} M/s, interpreter "
                f"{r['interp_per_s'] / 1e6:.2f} M/s, dict {r['dict_per_s'] / 1e6:.1f} M/s")
    return out


def format_table(results: dict) -> str:
    lines = []
    for mtype, r in results.items():
        lines.append(f"{mtype} map ({r['keys']} keys, about half miss): JIT native "
                     f"{r['jit_native_per_s'] / 1e6:.1f} M lookups/s; through the Python bridge "
                     f"{r['jit_bridge_per_s'] / 1e6:.2f} M/s "
                     f"({r['jit_native_per_s'] / r['jit_bridge_per_s']:.0f}x); interpreter "
                     f"{r['interp_per_s'] / 1e6:.2f} M/s "
                     f"({r['jit_native_per_s'] / r['interp_per_s']:.0f}x); Python dict "
                     f"{r['dict_per_s'] / 1e6:.1f} M/s "
                     f"({r['jit_native_per_s'] / r['dict_per_s']:.1f}x)")
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, format_table)
