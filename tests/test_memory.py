"""Memory regions: real buffers, the region table, and refused accesses leaving everything intact."""
from __future__ import annotations

import ctypes
import textwrap

import pytest

from pybpf.errors import MemoryAccessError
from pybpf.runtime.memory import GUARD_FILL, PROC, Buffer, Region, RegionTable

from support import run_code


def test_buffer_is_real_memory_at_its_address():
    buf = Buffer(16, init=b"hello")
    assert ctypes.string_at(buf.address, 5) == b"hello"
    assert buf.address % 16 == 0
    ctypes.memmove(buf.address + 5, b"!", 1)        # writes through ctypes show in the buffer
    assert buf.bytes()[:6] == b"hello!"
    assert bytes(PROC[buf.address:buf.address + 6]) == b"hello!"
    buf.view()[0] = ord("J")
    assert ctypes.string_at(buf.address, 1) == b"J"


def test_buffer_guards_detect_writes_next_to_it():
    buf = Buffer(8, guard=16)
    assert buf.guards_intact()
    assert ctypes.string_at(buf.address - 16, 16) == bytes([GUARD_FILL]) * 16
    ctypes.memset(buf.address + 8, 0, 1)            # one byte past the end
    assert not buf.guards_intact()


def test_region_table_lookup():
    a, b = Buffer(32), Buffer(8)
    ra = Region(a.address, 32, "mem", True, a)
    rb = Region(b.address, 8, "ctx", False, b)
    t = RegionTable([rb, ra])
    assert t.find(a.address, 32) is ra
    assert t.find(a.address + 31, 1) is ra
    assert t.find(a.address + 31, 2) is None        # straddles the end
    assert t.find(a.address - 1, 1) is None
    assert t.find(b.address + 4, 4) is rb
    assert t.check(b.address, 8, "read") is rb
    with pytest.raises(MemoryAccessError) as e:
        t.check(b.address, 1, "write", pc=7)          # read-only region
    assert (e.value.pc, e.value.address, e.value.size, e.value.kind) == (7, b.address, 1, "write")
    assert "ctx" in str(e.value) and "read-only" in str(e.value)
    with pytest.raises(ValueError, match="overlaps"):
        t.add(Region(a.address + 8, 4, "dup"))
    t.move(ra, a.address + 16, 16)                  # narrowed, as the stack region is
    assert t.find(a.address, 1) is None and t.find(a.address + 16, 16) is ra


def test_checked_accessors():
    buf = Buffer(16)
    t = RegionTable([Region(buf.address, 16, "mem", True, buf)])
    t.store(buf.address + 8, 4, -1)
    assert t.load(buf.address + 8, 4) == 0xFFFFFFFF
    assert t.load(buf.address + 8, 4, signed=True) == -1
    t.write(buf.address, b"abc\0")
    assert t.read(buf.address, 3) == b"abc" and t.read_cstr(buf.address) == b"abc"
    t.write(buf.address, b"x" * 16)                 # no NUL inside the region
    with pytest.raises(MemoryAccessError):
        t.read_cstr(buf.address)
    for bad in (lambda: t.read(buf.address + 15, 2), lambda: t.write(buf.address - 1, b"z"),
                lambda: t.load(0, 8), lambda: t.store(16, 8, 0)):
        with pytest.raises(MemoryAccessError):
            bad()
    assert buf.bytes() == b"x" * 16


# A child process runs every kind of out-of-bounds access a program can make: loads and stores
# of every size, atomics, helper pointer arguments, at NULL, small, kernel, unmapped, just-outside
# and Python-object addresses. Each must raise MemoryAccessError; a fault would kill the child.
_CHILD = textwrap.dedent(r"""
    import ctypes
    from pybpf.errors import MemoryAccessError
    from pybpf.insn import make
    from pybpf.program import Program
    from pybpf.runtime.helpers import ubpf_test_helpers
    from pybpf.vm import VM

    secret = ctypes.create_string_buffer(b"SECRET!!", 8)
    targets = [0, 1, 4096, 0xFFFF_8000_0000_0000, 0xFFFF_FFFF_FFFF_FFF8, 0x7FFF_FFFF_F000,
               1 << 47, ctypes.addressof(secret), id(object())]
    def setreg(r, v):
        return make("lddw", r, imm=v & 0xFFFFFFFF, imm2=(v >> 32) & 0xFFFFFFFF)
    ops = [make("ldxdw", 0, 3), make("ldxb", 0, 3, off=-1), make("ldxsh", 0, 3),
           make("stdw", 3, imm=-1), make("stxw", 3, 0, off=2), make("stb", 3, imm=1),
           make("atomic_fetch_add64", 3, 0), make("atomic_cmpxchg32", 3, 0),
           make("atomic_xchg64", 3, 0), make("load_acqdw", 0, 3), make("store_relb", 3, 0)]
    refused = 0
    vm = VM(helpers=ubpf_test_helpers())
    for t in targets:
        for op in ops + [make("mov64_reg", 1, 3) + make("mov64_imm", 2, imm=8)
                         + make("call_helper", imm=1)]:
            # the interpreter's run-time checks are under test: the verifier would refuse
            # these programs at load, so they load with the structural checks only
            lp = vm.load(Program(setreg(3, t) + op + make("exit")), verify="structural")
            try:
                lp.run(mem=b"\x11" * 16)
            except MemoryAccessError:
                refused += 1
            assert lp.last_mem == b"\x11" * 16 and lp.last_buffer.guards_intact()
    # just outside the private copy of mem, both sides, every size
    for off in (-8, -1, 16, 15, 9):
        for op in (make("stdw", 1, off=off, imm=0), make("ldxdw", 0, 1, off=off)):
            lp = vm.load(Program(op + make("exit")), verify="structural")
            try:
                lp.run(mem=b"\x11" * 16)
            except MemoryAccessError:
                refused += 1
            assert lp.last_mem == b"\x11" * 16 and lp.last_buffer.guards_intact()
    assert secret.raw[:8] == b"SECRET!!"
    print("refused", refused)
""")


def test_out_of_bounds_accesses_raise_and_leave_the_process_intact():
    r = run_code(_CHILD, timeout=120)
    assert r.returncode == 0, r.stderr
    n_targets, n_ops = 9, 12
    assert r.stdout.split() == ["refused", str(n_targets * n_ops + 5 * 2)]
