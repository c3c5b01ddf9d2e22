"""The VM with maps and helpers (interpreter): maps named by fd, value address and index, the
kernel helpers under their ids, register_helper, trace_printk, tail calls, ring buffers, bpf_loop,
probe reads, and the CLI's --section."""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import subprocess
import sys
import time

import pytest

from programs_maps import bpf_loop_prog, ringbuf_prog, tail_caller, tail_chain
from pybpf.elf import parse_object
from pybpf.errors import MapError, MemoryAccessError, VerifierError, VMError
from pybpf.insn import make
from pybpf.program import Program
from pybpf.runtime.helpers import Prototype
from pybpf.vm import VM
from support import M64, ROOT, asm

SAMPLES = os.path.join(ROOT, "samples", "c")


def neg(e: int) -> int:
    return -e & M64


# --- maps and how programs name them ---------------------------------------------------------
def test_create_map_gives_kernel_typed_maps_with_unique_fds():
    vm, other = VM(), VM()
    h = vm.create_map("hash", key_size=4, value_size=8, max_entries=8, name="h")
    a = vm.create_map("array", key_size=4, value_size=4, max_entries=2)
    o = other.create_map("hash", key_size=4, value_size=8, max_entries=8, name="h")
    assert (h.type, a.type) == ("hash", "array") and len({h.fd, a.fd, o.fd}) == 3
    assert vm.maps == {"h": h} and vm.map_by_fd(a.fd) is a
    assert vm.map_by_fd(o.fd, None) is None       # another VM's fd names nothing here
    with pytest.raises(MapError) as e:
        vm.map_by_fd(o.fd)
    assert e.value.errno == errno.EBADF
    with pytest.raises(MapError) as e:
        vm.create_map("array", key_size=8, value_size=4, max_entries=1)
    assert e.value.errno == errno.EINVAL
    h[1] = 5                                         # dict-like from Python
    assert int.from_bytes(h[1], "little") == 5 and 1 in h and len(h) == 1


def _lookup_update_delete(fd: int) -> Program:
    """key 7: r0 = old value or 99 when absent; then store 1000 + r0 under key 7, delete key 8."""
    return asm(f"""
        *(u32 *)(r10 - 4) = 7
        r1 = map_fd({fd}) ll
        r2 = r10
        r2 += -4
        call 1
        r6 = 99
        if r0 == 0 goto +1
        r6 = *(u64 *)(r0 + 0)
        r1 = r6
        r1 += 1000
        *(u64 *)(r10 - 16) = r1
        r1 = map_fd({fd}) ll
        r2 = r10
        r2 += -4
        r3 = r10
        r3 += -16
        r4 = 0
        call 2
        *(u32 *)(r10 - 4) = 8
        r1 = map_fd({fd}) ll
        r2 = r10
        r2 += -4
        call 3
        w7 = w0
        r0 = r6
        r0 <<= 32
        r0 |= r7
        exit""")


def test_raw_bytecode_names_maps_by_fd():
    vm = VM()
    m = vm.create_map("hash", key_size=4, value_size=8, max_entries=8)
    raw = _lookup_update_delete(m.fd).to_bytes()       # ld_imm64 src 1, imm = fd
    lp = vm.load(raw)
    assert lp.maps == {f"map{m.fd}": m}
    r0 = lp.run()
    assert r0 >> 32 == 99 and r0 & 0xFFFFFFFF == neg(errno.ENOENT) & 0xFFFFFFFF
    assert int.from_bytes(m[7], "little") == 1099
    m[8] = 1
    r0 = lp.run()
    assert r0 == 1099 << 32 and 8 not in m and int.from_bytes(m[7], "little") == 2099
    with pytest.raises((VMError, VerifierError), match="not pointing to valid bpf_map"):
        vm.load(_lookup_update_delete(m.fd + 1000))


def test_map_value_address_by_fd_and_offset():
    vm = VM()
    g = vm.create_map("array", key_size=4, value_size=16, max_entries=1)
    p = Program(make("lddw_map_value", 1, imm=g.fd, imm2=8) + make("mov64_imm", 2, imm=0x55)
                + make("stxdw", 1, 2) + make("ldxdw", 0, 1, off=-8) + make("exit"))
    g[0] = struct.pack("<QQ", 1234, 0)
    assert vm.load(p.to_bytes()).run() == 1234
    assert g[0] == struct.pack("<QQ", 1234, 0x55)
    big = vm.create_map("array", key_size=4, value_size=8, max_entries=4)
    # the verifier refuses them first, with the kernel's words (resolve_pseudo_ldimm64)
    with pytest.raises(VerifierError, match="invalid access to map value pointer, "
                                            "value_size=8 off=0"):
        vm.load(Program(make("lddw_map_value", 1, imm=big.fd) + make("exit")))
    with pytest.raises(VerifierError, match="value_size=16 off=16"):
        vm.load(Program(make("lddw_map_value", 1, imm=g.fd, imm2=16) + make("exit")))
    # and the run-time resolution still refuses them when not verified
    with pytest.raises(VMError, match="direct value access"):
        vm.load(Program(make("lddw_map_value", 1, imm=big.fd) + make("exit")), verify=False)
    with pytest.raises(VMError, match="offset 16"):
        vm.load(Program(make("lddw_map_value", 1, imm=g.fd, imm2=16) + make("exit")),
                verify=False)


COUNTER = """
.map counts type=array key=4 value=8 max_entries=4
.map seen type=hash key=4 value=4 max_entries=16
.map g type=array key=4 value=16 max_entries=1
    *(u32 *)(r10 - 4) = 2
    r1 = map[counts] ll
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0 goto +3
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
    r0 = *(u64 *)(r0 + 0)
    r6 = r0
    r1 = map_value[g] + 8 ll
    r0 = *(u64 *)(r1 + 0)
    r0 += r6
    exit
"""


def test_maps_declared_in_assembly_are_created_at_load_and_shared():
    vm = VM()
    prog = asm(COUNTER)
    lp = vm.load(prog)
    counts, seen = lp.maps["counts"], lp.maps["seen"]
    assert vm.maps["counts"] is counts and vm.maps["seen"] is seen
    assert (counts.type, counts.max_entries, seen.type) == ("array", 4, "hash")
    lp.maps["g"][0] = struct.pack("<QQ", 0, 40)
    assert lp.run() == 41 and lp.run() == 42 and int.from_bytes(counts[2], "little") == 2
    again = vm.load(prog)                     # the same declarations: the same maps
    assert again.maps["counts"] is counts and again.run() == 43
    fresh = VM().load(prog)                   # another VM: its own maps
    assert fresh.maps["counts"] is not counts and fresh.run() == 1
    mine = vm.create_map("array", key_size=4, value_size=8, max_entries=4, name="mine")
    bound = vm.load(asm(COUNTER), maps={"counts": mine})
    assert bound.maps["counts"] is mine and bound.maps["g"] is not lp.maps["g"]
    assert bound.run() == 1 and int.from_bytes(counts[2], "little") == 3
    with pytest.raises(VMError, match="declared max_entries 4"):
        vm.load(asm(COUNTER), maps={"counts": vm.create_map("array", key_size=4,
                                                           value_size=8, max_entries=8)})
    with pytest.raises(VMError, match="does not declare"):
        vm.load(asm(COUNTER), maps={"nope": mine})


def test_an_unbound_elf_program_gets_its_maps_and_initial_data_at_load():
    obj = parse_object(os.path.join(SAMPLES, "xdp_filter.o"))     # what `pybpf run x.o` does
    vm = VM()
    lp = vm.load(obj.programs["xdp_filter"])
    assert lp.prog_type == "xdp"
    assert {"blocked_ports", "action_count", "xdp_filt.rodata", "xdp_filt.bss"} <= set(lp.maps)
    assert lp.maps["xdp_filt.rodata"][0][:4] == struct.pack("<I", 1)     # mode = BLOCKLIST
    lp.maps["blocked_ports"][struct.pack("<H", 80)] = b"\x01"
    pkt = (bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(8) + b"\x11" + bytes(10)
           + struct.pack(">HH", 1, 80) + bytes(4))
    assert lp.run(data=pkt) == 1


# --- helpers -------------------------------------------------------------------------------------
def test_map_helper_pointer_arguments_are_checked_against_the_map_sizes():
    vm = VM()
    m = vm.create_map("hash", key_size=16, value_size=8, max_entries=4)
    # a 16-byte key that starts 8 bytes below the top of the stack runs off the frame
    p = asm(f"r1 = map_fd({m.fd}) ll\nr2 = r10\nr2 += -8\ncall 1\nexit")
    with pytest.raises(VerifierError, match="invalid read from stack R2 off=-8 size=16"):
        vm.load(p)                                  # the verifier refuses it at load
    with pytest.raises(MemoryAccessError) as e:     # unverified, the interpreter at run time
        vm.load(p, verify=False).run()
    assert e.value.size == 16 and e.value.pc == 4
    ok = asm(f"r1 = map_fd({m.fd}) ll\nr2 = r10\nr2 += -16\ncall 1\nexit")
    assert vm.load(ok).run() == 0


def test_update_flags_and_errnos_reach_the_program():
    vm = VM()
    m = vm.create_map("hash", key_size=4, value_size=4, max_entries=1)

    def update(key, flags):
        return vm.load(asm(f"""
            *(u32 *)(r10 - 4) = {key}
            *(u32 *)(r10 - 8) = 5
            r1 = map_fd({m.fd}) ll
            r2 = r10
            r2 += -4
            r3 = r10
            r3 += -8
            r4 = {flags}
            call bpf_map_update_elem
            exit""")).run()
    assert update(1, 2) == neg(errno.ENOENT)       # BPF_EXIST on a missing key
    assert update(1, 1) == 0                       # BPF_NOEXIST
    assert update(1, 1) == neg(errno.EEXIST)
    assert update(2, 0) == neg(errno.E2BIG)        # full
    assert update(1, 9) == neg(errno.EINVAL)


def test_push_pop_peek_reach_the_map_ops():
    """Maps without queue/stack ops (here an array) make the helpers return what the map does,
    -EOPNOTSUPP, instead of crashing; queue and stack maps are tested in test_queue_maps.py."""
    vm = VM()
    m = vm.create_map("array", key_size=4, value_size=8, max_entries=1)
    for hid, extra in ((87, "r3 = 0"), (88, ""), (89, "")):
        p = asm(f"r1 = map_fd({m.fd}) ll\nr2 = r10\nr2 += -8\n{extra}\ncall {hid}\nexit")
        # the kernel refuses these helpers on an array map at load ("cannot pass map_type 2");
        # unverified, the interpreter returns what the map does
        assert vm.load(p, verify=False).run() == neg(errno.EOPNOTSUPP)


def test_time_random_and_cpu_helpers():
    p = asm("r9 = r1\ncall bpf_ktime_get_ns\nr6 = r0\ncall bpf_ktime_get_boot_ns\nr7 = r0\n"
            "call bpf_get_smp_processor_id\nr8 = r0\ncall bpf_get_prandom_u32\n"
            "*(u64 *)(r9 + 0) = r6\n*(u64 *)(r9 + 8) = r7\n*(u64 *)(r9 + 16) = r8\nexit")
    lp = VM(seed=7).load(p)
    t0, b0 = time.monotonic_ns(), time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    r = lp.run(mem=bytes(24))
    t1, b1 = time.monotonic_ns(), time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    mono, boot, cpu = struct.unpack("<3Q", lp.last_mem)
    assert t0 <= mono <= t1 and b0 <= boot <= b1 and cpu == 0 and r < 1 << 32
    assert VM(seed=7).load(p).run(mem=bytes(24)) == r      # seeded prandom


def _printk(fmt: bytes, *args: int) -> str:
    """A program that bpf_trace_printk's ``fmt`` (on its stack) with up to three args."""
    fmt = fmt + b"\0" * (8 - len(fmt) % 8 if len(fmt) % 8 else 8)
    lines = []
    for i in range(0, len(fmt), 8):
        lines += [f"r1 = {int.from_bytes(fmt[i:i + 8], 'little'):#x} ll",
                  f"*(u64 *)(r10 - {len(fmt) - i}) = r1"]
    lines += ["r1 = r10", f"r1 += -{len(fmt)}", f"r2 = {len(fmt)}"]
    lines += [f"r{3 + i} = {a:#x} ll" for i, a in enumerate(args)]
    return "\n".join(lines + ["call 6", "exit"])      # bpf_trace_printk


@pytest.mark.parametrize("fmt,args,want", [
    (b"%d %i %u", (M64, 2**32 - 2, M64), "-1 -2 4294967295"),
    (b"%x %ld %lu", (0xABCDEF12345, M64, M64), "def12345 -1 18446744073709551615"),
    (b"%lx %llu %llx", (0xABCDEF12345, 2**40, 255), "abcdef12345 1099511627776 ff"),
    (b"%lld %px %c", (neg(5), 0x1000, ord("Z")), "-5 0000000000001000 Z"),
    (b"[%5d|%-3x|%05u] 100%%", (42, 10, 7), "[   42|a  |00007] 100%"),
])
def test_trace_printk_formats_are_captured(fmt, args, want):
    vm = VM()
    r0 = vm.load(asm(_printk(fmt, *args))).run()
    assert vm.trace_output() == [want] and r0 == len(want)


def test_trace_printk_refuses_what_the_kernel_refuses_and_reads_strings():
    vm = VM()
    for bad in (b"%d %d %d %d", b"%hd", b"%q", b"%.2d"):
        assert vm.load(asm(_printk(bad, 1, 2, 3))).run() == neg(errno.EINVAL)
    assert vm.trace_output() == []
    # %s follows a pointer into the program's memory
    p = asm("r6 = r1\n" + _printk(b"<%s>").replace("call 6", "r3 = r6\ncall 6"))
    vm.load(p).run(mem=b"hello\0")
    assert vm.trace_output() == ["<hello>"]


def test_cli_prints_trace_printk_output_and_runs_elf_sections(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
    src = tmp_path / "p.s"
    src.write_text(_printk(b"r6 is %d", 41))
    out = cli("run", str(src))
    assert out.returncode == 0 and out.stdout == "0x8\n" and "r6 is 41" in out.stderr
    ring = os.path.join(SAMPLES, "ringbuf.o")
    out = cli("run", ring, "--section", "produce", "--ctx", "0300000001000000")
    assert (out.returncode, out.stdout) == (0, "0x3\n")
    out = cli("run", ring, "--section", "tp/syscalls/sys_enter_write")
    assert (out.returncode, out.stdout) == (0, "0x0\n")     # on_write, a tracepoint program
    out = cli("verify", ring, "--section", "on_write")
    assert out.returncode == 0 and "accepted" in out.stdout
    out = cli("run", ring, "--section", "nope")
    assert out.returncode == 2 and "no program or section 'nope'" in out.stderr
    out = cli("run", str(src), "--section", "x")
    assert out.returncode == 2 and "--section" in out.stderr
    frame = (bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(8) + b"\x11" + bytes(24)).hex()
    out = cli("run", os.path.join(SAMPLES, "xdp_filter.o"), "--data", frame)
    assert (out.returncode, out.stdout) == (0, "0x2\n")


def test_register_helper_with_a_prototype():
    vm = VM()
    seen = []

    def checksum(ptr, size):
        data = ctypes.string_at(ptr, size)
        seen.append(data)
        return sum(data)
    vm.register_helper(0x1000, checksum, "checksum", ("ARG_PTR_TO_MEM|MEM_RDONLY",
                                                       "ARG_CONST_SIZE"))
    assert vm.helpers[0x1000].name == "checksum"
    # the size is the buffer's length, unknown to a verifier (an unbounded ARG_CONST_SIZE is
    # refused at load): these run unverified, the interpreter checking the helper's memory
    p = asm("r2 = r2\ncall 0x1000\nexit")
    with pytest.raises(VerifierError):
        vm.load(p)
    assert vm.load(p, verify=False).run(mem=b"\x01\x02\x03") == 6 and \
        seen == [b"\x01\x02\x03"]
    with pytest.raises(MemoryAccessError):          # size past the buffer: refused first
        vm.load(asm("r2 += 1\ncall 0x1000\nexit"), verify=False).run(mem=b"\x01\x02\x03")
    assert len(seen) == 1
    vm.register_helper(0x1001, lambda a, b, c: a * b + c,
                       prototype=Prototype(args=("ARG_ANYTHING",) * 3))
    assert vm.load(asm("r1 = 6\nr2 = 7\nr3 = 8\ncall 0x1001\nexit")).run() == 50


def test_probe_read_kernel_only_reads_memory_the_program_may_read():
    vm = VM()
    m = vm.create_map("array", key_size=4, value_size=8, max_entries=1)
    m[0] = 0x1122334455667788

    def program(src: str) -> Program:
        return asm(f"""
            r6 = r1
            {src}
            r1 = r6
            r2 = 8
            call bpf_probe_read_kernel
            exit""")
    ok = vm.load(program(f"r3 = map_value_fd({m.fd}) + 0 ll"))
    assert ok.run(mem=b"\xaa" * 8) == 0 and ok.last_mem == struct.pack("<Q", 0x1122334455667788)
    wild = ctypes.create_string_buffer(b"secret!!")      # process memory not given to the run
    bad = vm.load(program(f"r3 = {ctypes.addressof(wild):#x} ll"))
    assert bad.run(mem=b"\xaa" * 8) == neg(errno.EFAULT) and bad.last_mem == bytes(8)
    null = vm.load(program("r3 = 0"))
    assert null.run(mem=b"\xaa" * 8) == neg(errno.EFAULT)
    s = vm.load(asm("r6 = r1\nr1 = r10\nr1 += -16\nr2 = 16\nr3 = r6\n"
                    "call bpf_probe_read_kernel_str\nr7 = *(u64 *)(r10 - 16)\n"
                    "*(u64 *)(r6 + 0) = r7\nexit"))
    assert s.run(mem=b"hi\0\0\0\0\0\0") == 3 and s.last_mem[:3] == b"hi\0"


def test_task_identity_helpers():
    vm = VM()
    pid_tgid = vm.load(asm("call bpf_get_current_pid_tgid\nexit")).run()
    assert pid_tgid >> 32 == os.getpid()
    uid_gid = vm.load(asm("call bpf_get_current_uid_gid\nexit")).run()
    assert (uid_gid & 0xFFFFFFFF, uid_gid >> 32) == (os.getuid(), os.getgid())


# --- tail calls ----------------------------------------------------------------------------------
def test_tail_call_replaces_the_program_and_keeps_ctx():
    vm = VM()
    jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=4)
    target = vm.load(asm("r0 = *(u64 *)(r1 + 0)\nr0 += 1\nexit"))     # reads the ctx
    caller = asm(tail_caller(jt.fd))
    lp = vm.load(caller)
    jt[1] = target                       # a loaded program, or its fd
    assert lp.run(mem=struct.pack("<QI", 41, 1)) == 42
    jt[2] = target.fd
    assert lp.run(mem=struct.pack("<QI", 9, 2)) == 10
    assert lp.run(mem=struct.pack("<QI", 9, 3)) == 1000     # empty slot: falls through
    assert lp.run(mem=struct.pack("<QI", 9, 99)) == 1000    # past the end
    del jt[1]
    assert lp.run(mem=struct.pack("<QI", 41, 1)) == 1000
    target.close()
    with pytest.raises(VMError, match="index 2 is closed"):
        lp.run(mem=struct.pack("<QI", 9, 2))
    with pytest.raises(MapError):
        jt[0] = 12345                      # not a program fd


def test_tail_call_chain_stops_after_33():
    """A program that counts its runs in a map and tail-calls itself: the kernel allows 33
    tail calls, so it runs 34 times, then the 34th call falls through."""
    vm = VM()
    jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=1)
    runs = vm.create_map("array", key_size=4, value_size=8, max_entries=1)
    lp = vm.load(asm(tail_chain(jt.fd, runs.fd)))
    jt[0] = lp
    assert lp.run() == 7
    assert int.from_bytes(runs[0], "little") == 34
    assert lp.run() == 7 and int.from_bytes(runs[0], "little") == 68   # the count is per run
    assert lp.test_run(repeat=3)[0] == 7 and int.from_bytes(runs[0], "little") == 68 + 3 * 34


# --- ring buffers and bpf_loop -------------------------------------------------------------------
def test_ringbuf_from_bpf_consumed_in_python():
    vm = VM()
    rb = vm.create_map("ringbuf", max_entries=4096, name="rb")
    lp = vm.load(asm(ringbuf_prog(rb.fd)))
    assert lp.run(mem=struct.pack("<QQ", 5, 0)) == 24 + 16       # two records, 8-byte headers
    assert lp.run(mem=struct.pack("<QQ", 6, 1)) == 24 + 16 + 24 + 16
    assert list(rb) == [struct.pack("<QQ", 5, 5), struct.pack("<Q", 5), struct.pack("<Q", 6)]
    assert rb.consume() == [] and rb.avail_data == 0


def test_bpf_loop_calls_its_callback():
    vm = VM()
    p = asm(bpf_loop_prog())
    lp = vm.load(p)
    assert lp.run(mem=struct.pack("<QQ", 5, 0)) == 5
    assert struct.unpack("<QQ", lp.last_mem)[1] == 0 + 1 + 2 + 3 + 4
    assert lp.run(mem=struct.pack("<QQ", 100, 0)) == 7          # callback returned 1 at i = 6
    assert struct.unpack("<QQ", lp.last_mem)[1] == sum(range(7))
    flags = asm("r1 = 1\nr2 = func(cb) ll\nr3 = 0\nr4 = 1\ncall bpf_loop\nexit\n"
                "cb:\nr0 = 0\nexit")
    assert vm.load(flags).run() == neg(errno.EINVAL)
    big = asm("r1 = 0x800001\nr2 = func(cb) ll\nr3 = 0\nr4 = 0\ncall bpf_loop\nexit\n"
              "cb:\nr0 = 0\nexit")
    assert vm.load(big).run() == neg(errno.E2BIG)
