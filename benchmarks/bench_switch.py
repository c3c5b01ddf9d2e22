"""Benchmark of a 64-way switch: JIT'd BPF against the same C compiled natively with -O2.

``benchmarks/c/switch64.h`` runs a 64-case switch (each case different work) over every byte
of a 4 KiB buffer. ``switch64.bpf.o`` is that C compiled with ``clang-19 -O2 -target bpf`` (a
binary search tree of compares: BPF has no jump tables; jit/switches.py turns it back into an
LLVM switch, so the JIT's code has a jump table too), loaded with ``VM.load(engine="jit",
tier="O2")`` as an unverified load (pybpf's verifier refuses the 4 KiB loop with a 64-way
branch in it, "The sequence of 8192 jumps is too complex"; the kernel
refuses the program sooner, as a syscall program has no r2), so its code also charges the run
budget once per iteration, at the loop head's latch (jit/lower.py back_edge);
``switch64.x86_64.o`` is the same C compiled with ``clang-19 -O2`` for x86-64, placed in the
pack allocator by pybpf's own linker (``pybpf.jit.link``; it has a jump table in ``.rodata``).
Both are entered the same way, by the native test_run driver (``repeat`` runs in one native
loop), so the figure is ns per run of each, min and median of many short batches, and their
ratio. The three engines (interpreter, JIT, native) must return the same r0, or the run fails.
Rebuild the objects with ``benchmarks/c/build.sh`` (clang-19); nothing here runs a compiler.

``run()`` returns the figures as a dict; ``python -m pybpf.benchmarks.bench_switch [--quick]``
prints them.
"""
from __future__ import annotations

import ctypes
import os
import random
import time

import pybpf
from pybpf.benchmarks.common import gc_paused, main
from pybpf.errors import BPFError
from pybpf.jit import native
from pybpf.jit.link import link_object

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c")
BPF_OBJ = os.path.join(HERE, "switch64.bpf.o")
NATIVE_OBJ = os.path.join(HERE, "switch64.x86_64.o")
LEN = 4096


def buffer(seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    return bytes(rnd.randrange(256) for _ in range(LEN))


class NativeSwitch:
    """The natively compiled switch64, placed by pybpf's linker; closes its allocation."""

    def __init__(self) -> None:
        with open(NATIVE_OBJ, "rb") as f:
            self.image = link_object(f.read())
        self.allocation = native.place_image(self.image, "switch64-native")
        self.address = self.allocation.address + self.image.symbols["switch64"]

    def test_run(self, data: bytes, repeat: int) -> tuple[int, float]:
        buf = ctypes.create_string_buffer(data, len(data))
        r0, total = native.get_driver().run(self.address, ctypes.addressof(buf), len(data),
                                            repeat)
        return r0, total / repeat

    def close(self) -> None:
        from pybpf.jit.execmem import default_allocator

        if self.allocation is not None:
            default_allocator().free(self.allocation)
            self.allocation = None


def run(report=None, quick: bool = False) -> dict:
    """Measure; ``report(line)`` gets progress lines."""
    say = report or (lambda line: None)
    data = buffer()
    obj = pybpf.load_elf(BPF_OBJ)
    prog = obj.programs["switch64"]
    batches, repeat = (15, 20) if quick else (60, 50)
    nat = NativeSwitch()
    try:
        # trusted benchmark code (a loop over 4 KiB of mem): unverified
        with obj.vm.load(prog, prog_type="mem", engine="jit", verify=False, tier="O2") as lj, \
                obj.vm.load(prog, prog_type="mem", engine="interp", verify=False) as li:
            want = li.run(mem=data)
            got = {"jit": lj.test_run(mem=data, repeat=5)[0],
                   "native": nat.test_run(data, 5)[0]}
            if any(v != want for v in got.values()):
                raise BPFError(f"bench_switch: r0 differs: interpreter 0x{want:x}, " + ", ".join(
                    f"{k} 0x{v:x}" for k, v in got.items()))
            jit_ns, nat_ns = [], []
            with gc_paused():
                for _ in range(batches):  # interleaved, so both see the same machine
                    jit_ns.append(lj.test_run(mem=data, repeat=repeat)[1])
                    nat_ns.append(nat.test_run(data, repeat)[1])
    finally:
        nat.close()
    jit_ns.sort()
    nat_ns.sort()
    out = {"bytes": LEN, "batches": batches, "repeat": repeat,
           "jit_min_ns": jit_ns[0], "jit_median_ns": jit_ns[len(jit_ns) // 2],
           "native_min_ns": nat_ns[0], "native_median_ns": nat_ns[len(nat_ns) // 2]}
    out["ratio_min"] = out["jit_min_ns"] / out["native_min_ns"]
    out["ratio_median"] = out["jit_median_ns"] / out["native_median_ns"]
    say(f"switch64: JIT {out['jit_median_ns'] / 1e3:.2f} us, native -O2 "
        f"{out['native_median_ns'] / 1e3:.2f} us per 4 KiB run (median)")
    return out


def format_table(r: dict) -> str:
    return (f"64-way switch over {r['bytes']} bytes, {r['batches']} batches of {r['repeat']} runs\n"
            f"  JIT     min {r['jit_min_ns'] / 1e3:8.2f} us  median {r['jit_median_ns'] / 1e3:8.2f} us\n"
            f"  native  min {r['native_min_ns'] / 1e3:8.2f} us  median "
            f"{r['native_median_ns'] / 1e3:8.2f} us\n"
            f"  JIT / native: {r['ratio_min']:.2f}x (min), {r['ratio_median']:.2f}x (median)\n")


if __name__ == "__main__":
    main(run, format_table)
