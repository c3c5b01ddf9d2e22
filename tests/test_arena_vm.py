"""bpf_arena from BPF on the interpreter: the kfuncs, addr_space_cast, loads and stores through
arena pointers (unallocated pages read 0, stores there are dropped, nothing can crash), Python
sharing pointers with BPF, and the arena_htab and arena_list samples.

Run as a script (``python tests/test_arena_vm.py fuzz N``) it is the subprocess behind
``test_arbitrary_32_bit_addresses_never_crash``."""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import programs_arena
from programs_arena import (ARENA, ATOMICS_BODY, BUILD_LIST, CASTS, OFFS, PAGE, WALK_LIST,
                            access_progs, addr32_strategy, args, backed)
from pybpf.errors import VerifierError, VMError
from pybpf.runtime.maps.arena import LO32
from pybpf.vm import VM
from pybpf.uapi import BPF_F_MMAPABLE, BPF_F_NO_USER_CONV
from support import M64, ROOT, asm, rss, run_script, sample_driver


def Arena():
    """One VM, one arena declared in assembly (created at load), and programs over it."""
    return programs_arena.Arena(declared=True)


# --- kfuncs ----------------------------------------------------------------------------------
def test_kfuncs_allocate_free_and_reserve_with_kernel_semantics():
    t = Arena()
    a = t.arena
    alloc = lambda addr, n, flags=0: t.alloc.run(mem=args(addr, n, -1, flags))   # noqa: E731
    assert alloc(0, 1) == t.page(0) and a.pages_allocated == 1      # best fit starts at page 0
    assert alloc(t.page(5), 2) == t.page(5)                         # exactly where asked
    assert a.is_allocated(t.page(6)) and not a.is_allocated(t.page(7))
    assert alloc(t.page(6), 1) == 0                                 # taken: NULL, no moving
    assert alloc(t.page(8) + 8, 1) == 0                             # not page aligned
    assert alloc(0, 1, flags=1) == 0 and alloc(0, 0) == 0 and alloc(0, 17) == 0
    assert alloc(t.page(15), 2) == 0                                # would leave the arena
    assert t.reserve.run(mem=args(t.page(9), 1)) == 0
    assert alloc(t.page(9), 1) == 0                                 # reserved: not allocatable
    assert t.reserve.run(mem=args(t.page(9), 1)) == -errno.EBUSY & M64
    assert t.reserve.run(mem=args(t.page(10), 7)) == -errno.EINVAL & M64
    assert alloc(0, 1) == t.page(7)      # best fit: the smallest free run is pages 7-8
    assert a.pages_allocated == 4
    t.store(t.page(5) + 8, 0x1234)
    assert t.read(t.page(5) + 8) == 0x1234 and a.read(t.page(5) + 8, 8) == struct.pack("<Q", 0x1234)
    assert t.free.run(mem=args(t.page(5), 2)) == 0
    assert a.pages_allocated == 2 and not a.is_allocated(t.page(5))     # pages 0 and 7
    assert t.read(t.page(5) + 8) == 0                               # freed: BPF reads 0
    assert a.read(t.page(5) + 8, 8) == bytes(8)                     # Python too (faults it in)
    assert alloc(t.page(5), 1) == 0                                 # Python's touch allocated it
    assert alloc(t.page(6), 1) == t.page(6)                         # its neighbour is free
    assert alloc(0, 100) == 0 and alloc(t.page(3), 1) == t.page(3)


def test_kfunc_map_argument_must_be_an_arena():
    vm = VM()
    arr = vm.create_map("array", key_size=4, value_size=8, max_entries=1)
    p = asm(f"r1 = map_fd({arr.fd}) ll\nr2 = 0\nr3 = 1\nr4 = -1\nr5 = 0\n"
            f"call bpf_arena_alloc_pages\nexit")
    assert vm.load(p).run() == 0                                    # NULL, as the kernel


def test_stores_to_unallocated_pages_are_dropped_and_memory_stays_bounded():
    t = Arena()
    a = t.arena
    a.alloc_pages(t.page(2), 1)
    n = 60000       # distinct pages across the whole 4 GiB band, 40 KiB apart
    lp = t.load(f"""
        r9 = map[arena] ll
        r0 = 0
        r6 = 0
        r8 = 0x5a5a5a5a5a5a5a5a ll
    loop:
        r7 = r6
        r7 *= 0xa000
        w7 = w7
        r7 = addr_space_cast(r7, 0x0, 0x1)
        *(u64 *)(r7 + 0) = r8
        r1 = *(u64 *)(r7 + 8)
        r0 |= r1
        r6 += 1
        if r6 < {n} goto loop
        exit""")
    before = rss()
    assert lp.run() == 0                         # every load of an unallocated page gave 0
    grew = rss() - before
    assert grew < 8 << 20, f"RSS grew by {grew} bytes after {n} dropped stores"
    assert a.pages_allocated == 1 and a.read(t.page(2), PAGE) == bytes(PAGE)
    # a store that reaches an allocated page lands; one that straddles into a hole does not
    assert t.read(t.page(2) + PAGE - 4) == 0
    t.store(t.page(2) + PAGE - 4, M64)
    t.store(t.page(2) + 8, 7)
    assert a.read(t.page(2), PAGE) == bytes(8) + struct.pack("<Q", 7) + bytes(PAGE - 16)


def test_atomics_on_arena_memory_and_dropped_atomics_keep_registers():
    t = Arena()
    a = t.arena
    page = a.alloc_pages(0, 1)
    lp = t.load(ATOMICS_BODY + "\nr0 = 0\nexit")
    assert lp.run(mem=args(page, 0, 0, 0)) == 0
    assert struct.unpack("<4Q", lp.last_mem)[1:] == (5, 0, 0xFF)
    assert struct.unpack("<QIIQ", a.read(page, 24)) == (8, 0x70, 0, 0x99)
    hole = t.page(12)                 # unallocated: no memory effect, registers unchanged
    assert lp.run(mem=args(hole, 0, 0, 0)) == 0
    assert struct.unpack("<4Q", lp.last_mem)[1:] == (3, 0xFF, 0xFF)
    assert not a.is_allocated(hole) and a.pages_allocated == 1


# --- addr_space_cast and globals ---------------------------------------------------------------
@pytest.mark.parametrize("flags", [BPF_F_MMAPABLE, BPF_F_MMAPABLE | BPF_F_NO_USER_CONV])
def test_addr_space_cast_rules(flags):
    vm = VM()
    arena = vm.create_map("arena", max_entries=16, flags=flags, name="arena")
    lp = vm.load(asm(ARENA + CASTS), maps={"arena": arena})
    upper = arena.user_vm_start & ~LO32

    def cast(value):
        lp.run(mem=args(value, 0, 0))
        return struct.unpack("<3Q", lp.last_mem)[1:]
    conv = not flags & BPF_F_NO_USER_CONV
    for value in (arena.user_vm_start + 24, 0x1234, 0xFFFF_FFFF, 0xABCD_0000_0000_1000):
        low = value & LO32
        assert cast(value) == ((upper | low) if conv else low, low)
    assert cast(0) == (0, 0)                               # NULL stays NULL
    assert cast(0x7_0000_0000) == (0, 0)                   # low 32 bits zero: NULL too
    assert cast(upper) == (0, 0)


def test_cast_needs_an_arena_and_a_program_has_at_most_one():
    vm = VM()
    # the verifier refuses it first, with the kernel's words
    with pytest.raises((VMError, VerifierError), match="associated arena"):
        vm.load(asm("r1 = addr_space_cast(r1, 0x0, 0x1)\nr0 = 0\nexit"))
    two = asm(ARENA + ".map other type=arena max_entries=4 flags=0x400\n"
              "r1 = map[arena] ll\nr2 = map[other] ll\nr0 = 0\nexit")
    with pytest.raises(VMError, match="Only one arena per program"):
        vm.load(two)


def test_map_value_of_an_arena_is_a_user_address():
    t = Arena()
    # The kernel's verifier makes an arena's ld_imm64 value a scalar (a store through it is
    # refused); this checks pybpf's run-time value, so it loads unverified on the interpreter.
    lp = t.load("r1 = map_value[arena] + 16 ll\nr2 = 77\n*(u64 *)(r1 + 0) = r2\nr0 = r1\nexit",
                verify=False)
    assert lp.run() == t.page(0) + 16
    assert t.arena.pages_allocated == 0                   # page 0 unallocated: dropped
    t.arena.alloc_pages(t.page(0), 1)
    lp.run()
    assert t.arena.read(t.page(0) + 16, 8) == struct.pack("<Q", 77)


# --- Python and BPF share pointers -------------------------------------------------------------
class Node(ctypes.Structure):
    _fields_ = [("next", ctypes.c_uint64), ("value", ctypes.c_uint64)]


def test_bpf_builds_a_list_python_follows_it_and_the_other_way_round():
    t = Arena()
    a = t.arena
    build = t.load(BUILD_LIST)
    assert build.run(mem=bytes(8)) == 0
    head = struct.unpack("<Q", build.last_mem)[0]
    assert head >> 32 == a.user_vm_start >> 32             # a full user pointer
    values, p = [], head
    while p:                                               # typed views over the same bytes
        node = a.deref(p, Node)
        values.append(node.value)
        p = node.next
    assert values == [5, 4, 3, 2, 1]
    assert a.follow(head, 0, 0) == head - 32               # pointer following: next->next
    # Python writes through a typed view; BPF reads the write
    a.deref(head, Node).value = 500
    view = a.view(head - 16, np.uint64, 2)                 # numpy view of the 4th node
    view[1] = 400
    walk = t.load(WALK_LIST)
    assert walk.run(mem=struct.pack("<Q", head)) == 500 + 400 + 3 + 2 + 1


# --- never crash -------------------------------------------------------------------------------
def test_arbitrary_32_bit_addresses_never_crash():
    """Hypothesis drives loads, stores and atomics at arbitrary 32-bit addresses and offsets
    in a subprocess (a crash would kill it) and checks each against a model of the page map."""
    proc = run_script(__file__, "fuzz", "400", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "400 examples ok" in proc.stdout


def _fuzz(examples: int) -> None:
    from hypothesis import given, settings, strategies as st

    t = Arena()
    a = t.arena
    for i in (0, 1, 7, 15):
        a.alloc_pages(t.page(i), 1)
    progs = access_progs(t, "loaded")
    addr32 = addr32_strategy(a.user_vm_start & LO32)

    count = [0]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True)
    @given(addr32, st.sampled_from(OFFS), st.sampled_from((1, 2, 4, 8)), st.integers(0, M64))
    def check(addr, off, size, value):
        k = addr + off
        mask = (1 << (8 * size)) - 1
        ok = backed(a, k, size)
        where = a.kern_vm_start + k
        before = int.from_bytes(ctypes.string_at(where, size), "little") if ok else 0
        pages = a.pages_allocated
        lp = progs[off, size]
        assert lp.run(mem=struct.pack("<IIQQQQ", addr, 0, value, 0, 0, 0)) == 0
        got_before, got_after, fetched = struct.unpack_from("<QQQ", lp.last_mem, 16)
        assert got_before == before, (hex(addr), off, size)
        assert got_after == (value & mask if ok else 0), (hex(addr), off, size)
        if size == 8:
            assert fetched == ((2 * value) & M64 if ok else value), (hex(addr), off)
        assert a.pages_allocated == pages
        count[0] += 1

    check()
    assert a.pages_allocated == 4 and a.allocated_runs() == [(t.page(0), 2), (t.page(7), 1),
                                                              (t.page(15), 1)]
    print(f"{count[0]} examples ok")


# --- the samples -------------------------------------------------------------------------------
def test_arena_htab_sample_ten_thousand_keys():
    lines = []
    out = sample_driver("arena_htab").run_sample("interp", keys=10000, buckets=256,
                                                 say=lines.append)
    assert out["ok"], "\n".join(lines)
    assert out["Python finds all 10000 keys with their values"]
    assert out["Python sees exactly the even keys"]
    assert out["bpf_pages"] == 62 and out["pages"] == 63 and out["pages_after_free"] == 62


def test_arena_list_sample():
    out = sample_driver("arena_list").run_sample("interp", count=50, say=lambda s: None)
    assert out["ok"] and out["pages"] >= 2


def test_sample_drivers_are_one_line_commands():
    for name, extra in (("arena_list", []), ("arena_htab", ["--keys", "300"])):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "samples", name, "run.py"),
                               "--engine", "interp", *extra], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and "all checks passed" in proc.stdout, proc.stderr


if __name__ == "__main__":
    if sys.argv[1:2] == ["fuzz"]:
        _fuzz(int(sys.argv[2]))


# --- which accesses go to the arena: the verifier's types, not address ranges -----------------
def test_verified_programs_take_arena_accesses_from_the_verifier():
    """A packet address cast to an arena pointer: the verifier types the register PTR_TO_ARENA,
    so the store, the atomic and the load go to the arena (an unallocated page: dropped, 0) as
    in the kernel and pybpf's JIT, whatever region the 32-bit value happens to match. The
    range rule kept for unverified loads takes the same address for the packet."""
    assert programs_arena.packet_as_arena("interp") == (0, True)
    r0, untouched = programs_arena.packet_as_arena("interp", verify=False)
    assert (r0, untouched) == (0x55, False)


def test_the_interpreter_classifies_from_the_verifier_facts():
    from pybpf.runtime.interp import arena_accesses
    t = Arena()
    lp = t.access
    interp = lp._interp
    insns = {pc: (form, insn) for pc, form, insn in interp.prog.instructions()}
    mem_pcs = {pc for pc, (form, _i) in insns.items()
               if form.kind in ("ldx", "st", "stx", "atomic")}
    assert interp.typed and interp.arena_pcs and interp.arena_pcs <= mem_pcs
    facts = lp.verify_result.facts
    assert all(facts.arena_access(pc) is True for pc in interp.arena_pcs)
    assert all(facts.arena_access(pc) in (False, None) for pc in mem_pcs - interp.arena_pcs)
    assert arena_accesses(interp.prog, None) == (frozenset(), False)   # unverified: range rule
    unverified = t.load(programs_arena.ACCESS, verify=False)._interp
    assert not unverified.typed and not unverified.arena_pcs

