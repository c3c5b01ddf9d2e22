"""bpf_arena from JIT'd code: the same edge cases as tests/test_arena_vm.py, in the JIT, each
checked against fixed answers and against the interpreter running the same program.

JIT'd arena code runs unchecked, so every case runs in one child Python started from this file
(``python tests/test_jit_arena.py child``), which prints one JSON line per case; a crash
fails the cases it did not report. Cases: exact-address allocation and NULL on failure;
free-then-read gives 0 from BPF and Python; stores to unallocated pages are dropped (RSS does
not grow); loads straddling an unallocated page give 0; dropped atomics keep their registers;
arbitrary 32-bit addresses never crash (hypothesis, a page-map model and the interpreter as
references, through statically known and run-time classified base registers); the cast rules
(NULL rule, BPF_F_NO_USER_CONV); full user pointers and arena globals; pointers shared with
Python. In-process tests check that programs without an arena pay nothing.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import struct
import subprocess
import sys
import traceback

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = 4096
M64 = (1 << 64) - 1
LO32 = 0xFFFFFFFF
BPF_F_MMAPABLE, BPF_F_NO_USER_CONV = 1 << 10, 1 << 18
ARENA = f".map arena type=arena max_entries=16 flags={BPF_F_MMAPABLE:#x}\n"
ENGINES = ("interp", "jit")


# -- the child's harness ----------------------------------------------------------------------

def asm(text: str):
    import pybpf
    from pybpf.helper_names import HELPER_IDS

    return pybpf.assemble(re.sub(r"call bpf_(\w+)",
                                 lambda m: f"call {HELPER_IDS.get(m[1], m[0][5:])}", text))


def args(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}Q", *(v & M64 for v in values))


def kfunc_prog(name: str, nargs: int):
    loads = "\n".join(f"r{2 + i} = *(u64 *)(r6 + {8 * i})" for i in range(nargs))
    return asm(ARENA + f"r6 = r1\n{loads}\nr1 = map[arena] ll\ncall {name}\nexit")


ACCESS = """
    r9 = map[arena] ll
    r6 = r1
    r2 = *(u64 *)(r6 + 0)
    r2 = addr_space_cast(r2, 0x0, 0x1)
    r3 = *(u64 *)(r6 + 8)
    if r3 != 0 goto +2
    r0 = *(u64 *)(r2 + 0)
    exit
    r4 = *(u64 *)(r6 + 16)
    *(u64 *)(r2 + 0) = r4
    r0 = 0
    exit"""


class Arena:
    """One VM with one arena and programs over it, all on ``engine``."""

    def __init__(self, engine: str, flags: int = BPF_F_MMAPABLE) -> None:
        from pybpf.runtime.vm import VM

        self.engine = engine
        self.vm = VM()
        self.arena = self.vm.create_map("arena", max_entries=16, flags=flags, name="arena")
        self.alloc = self.load(kfunc_prog("bpf_arena_alloc_pages", 4))
        self.free = self.load(kfunc_prog("bpf_arena_free_pages", 2))
        self.reserve = self.load(kfunc_prog("bpf_arena_reserve_pages", 2))
        self.access = self.load(ACCESS)

    def load(self, prog):
        if isinstance(prog, str):
            prog = asm(ARENA + prog)
        return self.vm.load(prog, maps={"arena": self.arena}, engine=self.engine)

    def page(self, i: int) -> int:
        return self.arena.user_vm_start + i * PAGE

    def read(self, ptr: int) -> int:
        return self.access.run(mem=args(ptr, 0, 0))

    def store(self, ptr: int, value: int) -> None:
        self.access.run(mem=args(ptr, 1, value))


def both(fn):
    """Run ``fn(engine)`` on each engine; the results must be equal (returns the JIT's)."""
    results = {engine: fn(engine) for engine in ENGINES}
    assert results["interp"] == results["jit"], results
    return results["jit"]


# -- the cases (each runs in the child) -------------------------------------------------------

def case_exact_address_allocation_and_null_on_failure():
    def run(engine):
        t = Arena(engine)
        alloc = lambda addr, n, flags=0, node=-1: t.alloc.run(  # noqa: E731
            mem=args(addr, n, node, flags))
        out = [alloc(t.page(5), 2) == t.page(5), alloc(t.page(6), 1), alloc(t.page(8) + 8, 1),
               alloc(0, 1, flags=1), alloc(0, 0), alloc(0, 17), alloc(t.page(15), 2),
               alloc(0, 1, node=3)]
        assert out == [True, 0, 0, 0, 0, 0, 0, 0], out
        assert t.reserve.run(mem=args(t.page(9), 1)) == 0
        assert alloc(t.page(9), 1) == 0
        assert t.reserve.run(mem=args(t.page(9), 1)) == -errno.EBUSY & M64
        # best fit: of the free runs 0-4, 7-8 and 10-15, the smallest that fits
        assert alloc(0, 1) == t.page(7) and alloc(0, 1) == t.page(8)
        assert alloc(0, 3) == t.page(0) and alloc(0, 5) == t.page(10)
        return ([(p - t.page(0), n) for p, n in t.arena.allocated_runs()],
                t.arena.free_runs())
    both(run)


def case_free_then_read_gives_zero_from_bpf_and_python():
    def run(engine):
        t = Arena(engine)
        a = t.arena
        p = t.alloc.run(mem=args(0, 2, -1, 0))
        t.store(p + 8, 0x1234)
        t.store(p + PAGE + 16, 0x5678)
        assert t.read(p + 8) == 0x1234 and a.read(p + 8, 8) == struct.pack("<Q", 0x1234)
        view = a.view(p + PAGE, ctypes.c_uint64 * 4)          # a view that outlives the free
        assert view[2] == 0x5678
        assert t.free.run(mem=args(p, 2)) == 0
        assert a.pages_allocated == 0
        assert t.read(p + 8) == 0 and t.read(p + PAGE + 16) == 0      # BPF reads 0
        assert view[2] == 0
        t.store(p + 8, 99)                                     # dropped: not allocated
        assert t.read(p + 8) == 0
        assert a.read(p + 8, 8) == bytes(8)                    # Python reads 0 (faults it in)
        return a.pages_allocated, t.read(p + 8)
    assert both(run) == (1, 0)


def _rss() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) * 1024


def case_stores_to_unallocated_pages_are_dropped_and_rss_stays():
    t = Arena("jit")
    a = t.arena
    a.alloc_pages(t.page(2), 1)
    n = 200_000         # distinct pages across the whole 4 GiB band, 20 KiB apart
    lp = t.load(f"""
        r9 = map[arena] ll
        r6 = 0
        r8 = 0x5a5a5a5a5a5a5a5a ll
    loop:
        r7 = r6
        r7 *= 0x5000
        r7 = addr_space_cast(r7, 0x0, 0x1)
        *(u64 *)(r7 + 0) = r8
        r2 = 1
        lock *(u64 *)(r7 + 16) += r2
        r1 = *(u64 *)(r7 + 8)
        r0 |= r1
        r6 += 1
        if r6 < {n} goto loop
        exit""")
    before = _rss()
    assert lp.run() == 0
    grew = _rss() - before
    assert grew < 4 << 20, f"RSS grew by {grew} bytes after {n} dropped stores"
    assert a.pages_allocated == 1 and a.read(t.page(2), PAGE) == bytes(PAGE)
    assert a.allocated_runs() == [(t.page(2), 1)]


def case_straddling_loads_and_stores():
    def run(engine):
        t = Arena(engine)
        a = t.arena
        a.alloc_pages(t.page(2), 1)
        a.write(t.page(2) + PAGE - 8, struct.pack("<Q", 0x1122334455667788))
        out = [t.read(t.page(2) + PAGE - 8), t.read(t.page(2) + PAGE - 4),   # into a hole: 0
               t.read(t.page(2) - 4)]
        t.store(t.page(2) + PAGE - 4, M64)                    # straddles: dropped
        t.store(t.page(2) - 4, M64)
        a.alloc_pages(t.page(3), 1)
        out.append(t.read(t.page(2) + PAGE - 4))              # both allocated now
        t.store(t.page(2) + PAGE - 4, 0xAABBCCDD_EEFF0011)
        out.append(a.read(t.page(2) + PAGE - 8, 12).hex())
        return out
    out = both(run)
    assert out[:3] == [0x1122334455667788, 0, 0] and out[3] == 0x11223344, out


ATOMICS = """
    r9 = map[arena] ll
    r6 = r1
    r7 = *(u64 *)(r6 + 0)
    r7 = addr_space_cast(r7, 0x0, 0x1)
    r2 = 5
    lock *(u64 *)(r7 + 0) += r2
    r2 = 3
    r2 = atomic_fetch_add((u64 *)(r7 + 0), r2)
    *(u64 *)(r6 + 8) = r2
    r3 = 0x70
    lock *(u32 *)(r7 + 8) |= w3
    r3 = 0xff
    r3 = xchg_64(r7 + 16, r3)
    *(u64 *)(r6 + 16) = r3
    r0 = 0xff
    r4 = 0x99
    r0 = cmpxchg_64(r7 + 16, r0, r4)
    *(u64 *)(r6 + 24) = r0
    w5 = 7
    w5 = atomic_fetch_add((u32 *)(r7 + 4092), w5)
    *(u64 *)(r6 + 32) = r5
    r0 = 0
    exit"""


def case_dropped_atomics_keep_registers():
    def run(engine):
        t = Arena(engine)
        a = t.arena
        page = a.alloc_pages(0, 1)
        lp = t.load(ATOMICS)
        assert lp.run(mem=args(page, 0, 0, 0, 0)) == 0
        done = struct.unpack("<5Q", lp.last_mem)[1:]
        memory = struct.unpack("<QIIQ", a.read(page, 24))
        hole = t.page(12)
        assert lp.run(mem=args(hole, 0, 0, 0, 0)) == 0
        dropped = struct.unpack("<5Q", lp.last_mem)[1:]
        return done, memory, dropped, a.is_allocated(hole), a.pages_allocated
    done, memory, dropped, hole_allocated, pages = both(run)
    assert done == (5, 0, 0xFF, 0) and memory == (8, 0x70, 0, 0x99)
    assert dropped == (3, 0xFF, 0xFF, 7) and not hole_allocated and pages == 1


CASTS = """
    r9 = map[arena] ll
    r6 = r1
    r2 = *(u64 *)(r6 + 0)
    r3 = addr_space_cast(r2, 0x1, 0x0)
    *(u64 *)(r6 + 8) = r3
    r4 = addr_space_cast(r2, 0x0, 0x1)
    *(u64 *)(r6 + 16) = r4
    r0 = 0
    exit"""


def case_cast_rules_null_and_no_user_conv():
    for flags in (BPF_F_MMAPABLE, BPF_F_MMAPABLE | BPF_F_NO_USER_CONV):
        def run(engine, flags=flags):
            t = Arena(engine, flags)
            lp = t.load(CASTS)
            upper = t.arena.user_vm_start & ~LO32
            out = []
            for value in (t.arena.user_vm_start + 24, 0x1234, LO32, 0xABCD_0000_0000_1000, 0,
                          0x7_0000_0000, upper):
                lp.run(mem=args(value, 0, 0))
                user, kern = struct.unpack("<3Q", lp.last_mem)[1:]
                low = value & LO32
                conv = not flags & BPF_F_NO_USER_CONV
                assert kern == low and user == ((upper | low) if conv and low else low), value
                out.append((user - upper if user > LO32 else user, kern))
            return out
        both(run)


def case_full_user_pointers_and_arena_globals():
    """A 64-bit user pointer used without a cast (classified at run time: inside the band) and
    an arena global (a constant address in the band)."""
    def run(engine):
        t = Arena(engine)
        a = t.arena
        glob = t.load("r1 = map_value[arena] + 16 ll\nr2 = 77\n*(u64 *)(r1 + 0) = r2\n"
                      "r0 = *(u64 *)(r1 + 0)\nexit")
        out = [glob.run(), a.pages_allocated]           # page 0 unallocated: dropped, 0
        a.alloc_pages(t.page(0), 1)
        out += [glob.run(), a.read(t.page(0) + 16, 8)]
        raw = t.load("""
            r9 = map[arena] ll
            r2 = *(u64 *)(r1 + 0)
            r3 = *(u64 *)(r1 + 8)
            *(u64 *)(r2 + 8) = r3
            r0 = *(u64 *)(r2 + 8)
            exit""")
        out.append(raw.run(mem=args(t.page(0), 5)))     # allocated: lands
        out.append(raw.run(mem=args(t.page(3), 6)))     # unallocated: dropped, reads 0
        out.append(raw.run(mem=args(t.page(0) & LO32, 9)))   # a bare 32-bit offset
        out.append(a.read(t.page(0), 16))
        return out
    out = both(run)
    assert out[:3] == [0, 0, 77] and out[4:7] == [5, 0, 9], out


def case_bpf_builds_a_list_python_follows():
    def run(engine):
        t = Arena(engine)
        a = t.arena
        build = t.load("""
            r6 = r1
            r1 = map[arena] ll
            r2 = 0
            r3 = 1
            r4 = -1
            r5 = 0
            call bpf_arena_alloc_pages
            if r0 == 0 goto out
            r7 = addr_space_cast(r0, 0x0, 0x1)
            r8 = 0
            r1 = 1
        next:
            r2 = r1
            r2 <<= 4
            r2 += r7
            *(u64 *)(r2 + 8) = r1
            *(u64 *)(r2 + 0) = r8
            r8 = addr_space_cast(r2, 0x1, 0x0)
            r1 += 1
            if r1 < 6 goto next
            *(u64 *)(r6 + 0) = r8
        out:
            r0 = 0
            exit""")
        assert build.run(mem=bytes(8)) == 0
        head = struct.unpack("<Q", build.last_mem)[0]
        values, p = [], head
        while p:
            nxt, value = struct.unpack("<QQ", a.read(p, 16))
            values.append(value)
            p = nxt
        a.write(head + 8, struct.pack("<Q", 500))       # Python writes, BPF reads
        walk = t.load("""
            r9 = map[arena] ll
            r2 = *(u64 *)(r1 + 0)
            r0 = 0
        loop:
            if r2 == 0 goto done
            r2 = addr_space_cast(r2, 0x0, 0x1)
            r3 = *(u64 *)(r2 + 8)
            r0 += r3
            r2 = *(u64 *)(r2 + 0)
            goto loop
        done:
            exit""")
        return values, walk.run(mem=struct.pack("<Q", head)), head - a.user_vm_start
    values, total, _ = both(run)
    assert values == [5, 4, 3, 2, 1] and total == 500 + 4 + 3 + 2 + 1


OFFS = (-32768, -4097, -8, -1, 0, 1, 4092, 32767)


def _access_progs(t, how: str) -> dict:
    """Per (off, size): load, store, load again, and for u64 an add and a fetch_add, through a
    32-bit base that is a cast_kern result ("cast": known statically) or a plain u32 loaded
    from memory ("loaded": classified at run time)."""
    progs = {}
    get = ("r7 = *(u64 *)(r6 + 0)\nr7 = addr_space_cast(r7, 0x0, 0x1)" if how == "cast"
           else "r7 = *(u32 *)(r6 + 0)")
    for off in OFFS:
        o = f"+ {off}" if off >= 0 else f"- {-off}"
        for size in (1, 2, 4, 8):
            ty = f"u{8 * size}"
            atomic = ("r2 = r8\nlock *(u64 *)(r7 {0}) += r2\nr2 = r8\n"
                      "r2 = atomic_fetch_add((u64 *)(r7 {0}), r2)\n*(u64 *)(r6 + 32) = r2"
                      if size == 8 else "").format(o)
            progs[off, size] = t.load(f"""
                r9 = map[arena] ll
                r6 = r1
                {get}
                r8 = *(u64 *)(r6 + 8)
                r0 = *({ty} *)(r7 {o})
                *(u64 *)(r6 + 16) = r0
                *({ty} *)(r7 {o}) = r8
                r0 = *({ty} *)(r7 {o})
                *(u64 *)(r6 + 24) = r0
                {atomic}
                r0 = 0
                exit""")
    return progs


def case_arbitrary_32_bit_addresses_never_crash(examples: int = 300):
    from hypothesis import given, settings, strategies as st

    ts = {e: Arena(e) for e in ENGINES}
    for t in ts.values():
        for i in (0, 1, 7, 15):
            t.arena.alloc_pages(t.page(i), 1)
    progs = {(e, how): _access_progs(t, how) for e, t in ts.items() for how in ("cast", "loaded")}
    a = ts["jit"].arena
    base32 = a.user_vm_start & LO32
    near = st.sampled_from([0, base32, base32 + PAGE, base32 + 7 * PAGE, base32 + 16 * PAGE,
                            0xFFFF_F000, 0x8000_0000, 0x4000_0000])
    addr32 = st.one_of(st.integers(0, LO32),
                       st.builds(lambda b, d: (b + d) & LO32, near, st.integers(-70000, 70000)))
    count = [0]

    def backed(arena, k: int, size: int) -> bool:
        return 0 <= k and k + size <= 1 << 32 and arena.is_allocated(k) and \
            arena.is_allocated(k + size - 1)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True)
    @given(addr32, st.sampled_from(OFFS), st.sampled_from((1, 2, 4, 8)), st.integers(0, M64),
           st.sampled_from(("cast", "loaded")))
    def check(addr, off, size, value, how):
        k = addr + off
        mask = (1 << (8 * size)) - 1
        got = {}
        for engine, t in ts.items():
            ar = t.arena
            ok = backed(ar, k, size)
            before = int.from_bytes(ctypes.string_at(ar.kern_vm_start + k, size),
                                    "little") if ok else 0
            lp = progs[engine, how][off, size]
            if how == "loaded" and 0x4000_0000 <= k < 0x8000_0000:
                return      # the context pool: real memory for both engines, not an arena
            assert lp.run(mem=struct.pack("<IIQQQQ", addr, 0, value, 0, 0, 0)) == 0
            b4, after, fetched = struct.unpack_from("<QQQ", lp.last_mem, 16)
            assert b4 == before, (engine, hex(addr), off, size)
            assert after == (value & mask if ok else 0), (engine, hex(addr), off, size)
            if size == 8:
                assert fetched == ((2 * value) & M64 if ok else value), (engine, hex(addr))
            got[engine] = (b4, after, fetched, ar.pages_allocated)
        assert got["interp"] == got["jit"]
        count[0] += 1

    check()
    for t in ts.values():
        assert t.arena.pages_allocated == 4
    assert ts["interp"].arena.read(ts["interp"].page(0), 2 * PAGE) == \
        ts["jit"].arena.read(ts["jit"].page(0), 2 * PAGE)
    return count[0]


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def child(names: list[str]) -> int:
    for name in names:
        try:
            detail = CASES[name]()
            print(json.dumps({"case": name, "ok": True, "detail": detail}), flush=True)
        except Exception:
            print(json.dumps({"case": name, "ok": False, "error": traceback.format_exc()}),
                  flush=True)
    return 0


# -- pytest side ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def child_results():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__, "child", *CASES], capture_output=True,
                          text=True, timeout=900, env=env)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            results[rec["case"]] = rec
    return results, proc


@pytest.mark.parametrize("name", list(CASES))
def test_case_in_jit(child_results, name):
    results, proc = child_results
    rec = results.get(name)
    assert rec is not None, (f"the child died before reporting {name} (exit {proc.returncode})"
                             f"\n{proc.stderr[-3000:]}")
    assert rec["ok"], rec["error"]


def test_arbitrary_addresses_ran_every_example(child_results):
    results, _ = child_results
    rec = results.get("arbitrary_32_bit_addresses_never_crash")
    assert rec is not None and rec["ok"] and rec["detail"] >= 150, rec


def _lower(text: str, env):
    from pybpf.jit.lower import lower_program
    from pybpf.runtime.vm import VM

    vm = VM()
    prog = asm(text)
    if env == "arena":
        from pybpf.jit.env import JitEnv

        arena = vm.create_map("arena", max_entries=4, flags=BPF_F_MMAPABLE, name="arena")
        env = JitEnv(arena=arena)
    return lower_program(prog, env=env).ir


def test_programs_without_an_arena_pay_nothing():
    text = """
        r2 = *(u64 *)(r1 + 0)
        r3 = *(u32 *)(r1 + 8)
        *(u64 *)(r1 + 16) = r3
        lock *(u64 *)(r1 + 24) += r2
        r0 = r2
        exit"""
    plain = _lower(text, None)
    assert not re.search(r"\b(icmp|select|br i1)\b", plain), plain
    checked = _lower(text, "arena")
    # the same accesses in a program with an arena are classified at run time
    assert len(re.findall(r"icmp ule i64 .*, 4294967295", checked)) == 4


def test_cast_kern_accesses_are_translated_without_a_test():
    """A cast_kern base is an arena offset at compile time (kern_vm_start + zext32 + off): only
    the load through r1 (unknown kind) is classified at run time."""
    text = """
        r2 = *(u64 *)(r1 + 0)
        r2 = addr_space_cast(r2, 0x0, 0x1)
        r0 = *(u8 *)(r2 + 5)
        *(u64 *)(r2 + 8) = r0
        r3 = r2
        r3 += 64
        *(u32 *)(r3 + 0) = w0
        exit"""
    ir_text = _lower(text, "arena")
    assert len(re.findall(r"icmp ule i64 .*, 4294967295", ir_text)) == 1, ir_text


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(sys.argv[2:] or list(CASES)))
    print(__doc__)
