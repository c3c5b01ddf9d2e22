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
import re
import struct
import sys

import pytest

from programs_arena import (ATOMICS_BODY, BUILD_LIST, CASTS, OFFS, PAGE, WALK_LIST, Arena,
                            access_progs, addr32_strategy, args, backed)
from pybpf.runtime.maps.arena import LO32
from pybpf.uapi import BPF_F_MMAPABLE, BPF_F_NO_USER_CONV
from support import (ENGINES, M64, asm, assert_case_passed, both, cases_of, child, rss,
                     run_child)

pytestmark = pytest.mark.jit


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
        exit""", verify=False)     # 200,000 iterations: past any verifier's budget; trusted
    before = rss()
    assert lp.run() == 0
    grew = rss() - before
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


ATOMICS = ATOMICS_BODY + """
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
    an arena global (a constant address in the band). The kernel's verifier refuses both (an
    arena address without addr_space_cast is a scalar to it): they test how pybpf runs
    unverified code, so they load with verify=False."""
    def run(engine):
        t = Arena(engine)
        a = t.arena
        glob = t.load("r1 = map_value[arena] + 16 ll\nr2 = 77\n*(u64 *)(r1 + 0) = r2\n"
                      "r0 = *(u64 *)(r1 + 0)\nexit", verify=False)
        out = [glob.run(), a.pages_allocated]           # page 0 unallocated: dropped, 0
        a.alloc_pages(t.page(0), 1)
        out += [glob.run(), a.read(t.page(0) + 16, 8)]
        raw = t.load("""
            r9 = map[arena] ll
            r2 = *(u64 *)(r1 + 0)
            r3 = *(u64 *)(r1 + 8)
            *(u64 *)(r2 + 8) = r3
            r0 = *(u64 *)(r2 + 8)
            exit""", verify=False)
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
        build = t.load(BUILD_LIST)
        assert build.run(mem=bytes(8)) == 0
        head = struct.unpack("<Q", build.last_mem)[0]
        values, p = [], head
        while p:
            nxt, value = struct.unpack("<QQ", a.read(p, 16))
            values.append(value)
            p = nxt
        a.write(head + 8, struct.pack("<Q", 500))       # Python writes, BPF reads
        walk = t.load(WALK_LIST)
        return values, walk.run(mem=struct.pack("<Q", head)), head - a.user_vm_start
    values, total, _ = both(run)
    assert values == [5, 4, 3, 2, 1] and total == 500 + 4 + 3 + 2 + 1


def case_arbitrary_32_bit_addresses_never_crash(examples: int = 300):
    from hypothesis import given, settings, strategies as st

    ts = {e: Arena(e) for e in ENGINES}
    for t in ts.values():
        for i in (0, 1, 7, 15):
            t.arena.alloc_pages(t.page(i), 1)
    progs = {(e, how): access_progs(t, how) for e, t in ts.items() for how in ("cast", "loaded")}
    a = ts["jit"].arena
    addr32 = addr32_strategy(a.user_vm_start & LO32, 0x4000_0000)
    count = [0]

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


def case_arena_accesses_follow_the_verifiers_types():
    """A packet address cast to an arena pointer goes to the arena in both engines (the
    verifier's PTR_TO_ARENA, PROBE_MEM32): dropped store and atomic, load 0, packet untouched."""
    import programs_arena
    assert programs_arena.packet_as_arena("jit") == programs_arena.packet_as_arena("interp") \
        == (0, True)


CASES = cases_of(globals())


# -- pytest side ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def child_results():
    return run_child(__file__, CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_case_in_jit(child_results, name):
    assert_case_passed(child_results, name)


def test_arbitrary_addresses_ran_every_example(child_results):
    results, _ = child_results
    rec = results.get("arbitrary_32_bit_addresses_never_crash")
    assert rec is not None and rec["ok"] and rec["detail"] >= 150, rec


def _lower(text: str, env):
    from pybpf.jit.lower import lower_program
    from pybpf.vm import VM

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
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
    print(__doc__)
