"""Benchmark of very large programs: load time, run time and peak memory up to the kernel's limit.

The kernel loads up to BPF_COMPLEXITY_LIMIT_INSNS (1,000,000) instructions for a privileged
user (kernel/bpf/syscall.c, bpf_prog_load: more is E2BIG). :func:`branchy` builds such a
program at any size: a socket filter reading ``skb->len`` into r2, then 8-slot blocks

    r3 = r2 ; r3 ^= K ; *(u64 *)(r10 - 8) = r3 ; r4 = *(u64 *)(r10 - 8) ; r0 += r4
    if r4 != J goto +2 ; r0 = i ; exit

each with a data-dependent early exit (a parser's bounds check): every block starts at a jump
target, and the verifier explores both sides of every branch (the fall-through exits at once, so
its stack of pending states stays at one). Run with a 64-byte packet, no exit is taken and the
run executes every instruction. The running kernel accepts it at 10,000 and 100,000 slots
(``kernel_accepts``, where bpf() is permitted; ``full`` asks it about 1,000,000 too).

Each measurement runs in a fresh child Python, with no verdict or code cache: peak RSS
(``ru_maxrss``) after building the program (the baseline), after ``vm.load`` and after one run,
load and run wall and CPU time (the machine may be shared: CPU time is the figure to compare).
JIT loads compile in the measured process (``PYBPF_JIT_INPROCESS=1``), so LLVM's memory and
time count. Sizes 10k
and 100k by default, 1M with ``full`` (``pybpf bench`` runs 10k/100k; ``PYBPF_BENCH_BIGPROG=1``
or ``python benchmarks/bench_bigprog.py --full`` adds 1M). ``PYBPF_BENCH_BIGPROG_AS`` (MiB)
caps each child's address space, so a regression cannot take the machine's memory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

BLOCK = 8          # slots per block
# The run's packet; the socket filter sees skb->len 50 (BPF_PROG_TEST_RUN pulls the 14-byte
# Ethernet header, as the kernel and pybpf both do).
PACKET = bytes(64)
SKB_LEN = 50
HEAD = 2           # r2 = skb->len; r0 = 0
TAIL = 1           # exit


def branchy(slots: int):
    """The branchy socket filter of exactly ``slots`` slots (``slots`` >= 11)."""
    from pybpf.insn import make
    from pybpf.program import Program

    blocks = (slots - HEAD - TAIL) // BLOCK
    pad = slots - HEAD - TAIL - blocks * BLOCK
    insns = make("ldxw", 2, 1, off=0) + make("mov64_imm", 0, imm=0)
    for i in range(blocks):
        k = (i * 2654435761) & 0x3FFFFFFF
        insns += (make("mov64_reg", 3, 2) + make("xor64_imm", 3, imm=k)
                  + make("stxdw", 10, 3, off=-8) + make("ldxdw", 4, 10, off=-8)
                  + make("add64_reg", 0, 4)
                  # never equal for the run's packet
                  + make("jne64_imm", 4, off=2, imm=(SKB_LEN ^ k) + 1)
                  + make("mov64_imm", 0, imm=i & 0x7FFFFFFF) + make("exit"))
    insns += make("add64_imm", 0, imm=1) * pad + make("exit")
    prog = Program(insns, name=f"branchy{slots}")
    assert len(prog) == slots
    return prog


def expected_r0(slots: int) -> int:
    """r0 of a run with PACKET (the sum the blocks compute, then the padding)."""
    blocks = (slots - HEAD - TAIL) // BLOCK
    pad = slots - HEAD - TAIL - blocks * BLOCK
    total = sum(SKB_LEN ^ ((i * 2654435761) & 0x3FFFFFFF) for i in range(blocks))
    return (total + pad) & ((1 << 64) - 1)


def _maxrss_kib() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_measure(slots: int, engine: str, verify, tier: str | None = None,
                  run: bool = True) -> dict:
    """(in a child) Build, load and run the ``slots`` program; figures as a dict."""
    import gc
    import time

    # Cold loads (no verdict or code cache), and the JIT's compile in this process, so its CPU
    # time and memory are the ones measured (the worker is another process).
    os.environ["PYBPF_JIT_CACHE"] = "off"
    if engine == "jit":
        os.environ["PYBPF_JIT_INPROCESS"] = "1"
    from pybpf.vm import VM

    vm = VM()
    prog = branchy(slots)
    prog.to_bytes()     # what every load computes (cache keys): part of having the program
    gc.collect()
    base = _maxrss_kib()
    t0, c0 = time.perf_counter(), time.process_time()
    kw = {"tier": tier} if tier else {}
    lp = vm.load(prog, "socket_filter", engine=engine, verify=verify, **kw)
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    loaded = _maxrss_kib()
    out = {"slots": slots, "engine": engine, "verify": verify, "tier": tier,
           "base_mib": base / 1024, "load_s": load_s, "load_cpu_s": load_cpu,
           "load_growth_mib": (loaded - base) / 1024}
    if run:
        t0, c0 = time.perf_counter(), time.process_time()
        r0 = lp.run(data=PACKET)
        out["run_s"], out["run_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        out["r0_ok"] = r0 == expected_r0(slots)
    out["peak_growth_mib"] = (_maxrss_kib() - base) / 1024
    return out


def measure(slots: int, engine: str = "interp", verify=False, tier: str | None = None,
            timeout: float = 1800) -> dict:
    """:func:`child_measure` in a fresh Python (address space capped by
    ``PYBPF_BENCH_BIGPROG_AS`` MiB when set); a child that fails reports its last line."""
    cap = os.environ.get("PYBPF_BENCH_BIGPROG_AS")
    pre = None
    if cap:
        def pre(limit=int(cap) << 20):
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    args = json.dumps([slots, engine, verify, tier])
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "child", args],
                           capture_output=True, text=True,
                           timeout=timeout, preexec_fn=pre)
    except subprocess.TimeoutExpired:
        return {"slots": slots, "engine": engine, "verify": verify, "tier": tier,
                "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
    return {"slots": slots, "engine": engine, "verify": verify, "tier": tier, "error": err}


def kernel_accepts(slots: int) -> str | None:
    """The running kernel's verdict on the ``slots`` program ("accepted", or its error), or
    None where bpf() is not permitted."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "tests"))
    try:
        import kernel_bpf
    except ImportError:
        return None
    if not kernel_bpf.available():
        return None
    fd, log = kernel_bpf.prog_load(branchy(slots).to_bytes(), "socket_filter", log_level=0)
    if fd < 0:
        return f"refused: {kernel_bpf.errno_name(-fd)}"
    os.close(fd)
    return "accepted"


CONFIGS = (("interp", False, None), ("interp", True, None), ("jit", False, "baseline"),
           ("jit", False, "O2"))


def run(report=print, quick: bool = False, full: bool | None = None) -> dict:
    if full is None:
        full = os.environ.get("PYBPF_BENCH_BIGPROG") == "1"
    sizes = [10_000] if quick else [10_000, 100_000]
    if full:
        sizes.append(1_000_000)
    rows = []
    # quick: the unverified interpreter and the JIT's baseline tier (LLVM takes ~10 s at 10k)
    configs = [c for c in CONFIGS if not c[1] and c[2] != "O2"] if quick else CONFIGS
    for slots in sizes:
        for engine, verify, tier in configs:
            r = measure(slots, engine, verify, tier)
            report(f"bigprog {slots} {engine} verify={verify} tier={tier}: {r}")
            rows.append(r)
    return {"rows": rows, "kernel_1m": kernel_accepts(1_000_000) if full else None}


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:      # run by measure(): this file, with any pybpf
        print(json.dumps(child_measure(*json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    full = "--full" in sys.argv
    res = run(quick="--quick" in sys.argv, full=full)
    print(json.dumps(res, indent=1))
