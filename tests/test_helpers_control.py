"""The maps-and-control helpers in both engines (runtime/helpers_control.py): strtol/strtoul
on many inputs against the running kernel, snprintf's format rules, probe_read_user limited to
the run's memory, for_each_map_elem, perf_event_output's consumer, cgroup storage per run,
task identity overrides, and hostile pointers refused before memory is touched. (The C corpus,
tests/corpus/ctl_corpus.c, runs these helpers in real programs against the kernel too.)"""
from __future__ import annotations

import os
import struct

import pytest

import pybpf
from kernel_probe import require_kernel
from pybpf.runtime.helpers_control import Task
from support import asm, child_tests

M64 = (1 << 64) - 1

# --- strtol / strtoul against the kernel ----------------------------------------------------------
# ctx: u64 flags, u64 result, u32 length (1..64 after masking), pad, 64 bytes of text. The text is
# copied to the stack (the kernel passes no ctx pointer to these helpers); r0 = the helper's.
STRTOX = """
r6 = r1
r7 = r10
r7 += -64
""" + "".join(f"r1 = *(u64 *)(r6 + {24 + 8 * i})\n*(u64 *)(r10 - {64 - 8 * i}) = r1\n"
              for i in range(8)) + """
*(u64 *)(r10 - 72) = 0
r1 = r7
r2 = *(u32 *)(r6 + 16)
r2 &= 63
r2 += 1
r3 = *(u64 *)(r6 + 0)
r4 = r10
r4 += -72
call bpf_{fn}
r1 = *(u64 *)(r10 - 72)
*(u64 *)(r6 + 8) = r1
exit
"""
INPUTS = [  # (text, flags)
    (b"42", 0), (b"  -17xyz", 0), (b"0x1F", 0), (b"0X1f", 16), (b"0x", 0), (b"0xg", 16),
    (b"0777", 0), (b"0778", 0), (b"0778", 8), (b"z", 0), (b"", 0), (b"-", 0), (b"+5", 0),
    (b"\t\n\v\f\r 9", 10), (b"\xa0" b"7", 0), (b"12", 7), (b"12", 32), (b"12", 1 << 40),
    (b"9223372036854775807", 0), (b"9223372036854775808", 0), (b"-9223372036854775808", 0),
    (b"-9223372036854775809", 0), (b"18446744073709551615", 0), (b"18446744073709551616", 0),
    (b"ffffffffffffffff", 16), (b"-1", 10), (b"00000000000000000000000000000000000000000000007",
                                                   0), (b"1" * 63 + b"2", 0), (b"-0", 0),
]


def _ctx(text: bytes, flags: int, length: int | None = None) -> bytearray:
    n = len(text) if length is None else length
    return bytearray(struct.pack("<QQII", flags, 0x5555, (n - 1) & 63, 0) + text.ljust(64, b"\0"))


def _pybpf_strtox(fn: str, engine: str) -> list:
    vm = pybpf.VM()
    lp = vm.load(asm(STRTOX.replace("{fn}", fn)), prog_type="syscall", engine=engine)
    out = []
    for text, flags in INPUTS:
        ctx = _ctx(text, flags, max(len(text), 1))
        r0 = lp.run(ctx=ctx)
        out.append((r0 & M64, struct.unpack_from("<Q", ctx, 8)[0]))
    return out


def _kernel_strtox(fn: str) -> list:
    import kernel_bpf
    code = b"".join(i.encode() for i in asm(STRTOX.replace("{fn}", fn)).insns)
    fd, log = kernel_bpf.prog_load(code, "syscall", sleepable=True)
    assert fd >= 0, log
    out = []
    try:
        for text, flags in INPUTS:
            r0, _, ctx = kernel_bpf.test_run(fd, ctx=bytes(_ctx(text, flags, max(len(text), 1))))
            out.append((r0 & 0xFFFFFFFF, struct.unpack_from("<Q", ctx, 8)[0]))
    finally:
        os.close(fd)
    return out


@pytest.mark.kernel
@pytest.mark.parametrize("fn", ["strtol", "strtoul"])
def test_strtox_matches_the_kernel(fn):
    require_kernel("bpf", "test_run:syscall")
    mine = [(r0 & 0xFFFFFFFF, res) for r0, res in _pybpf_strtox(fn, "interp")]
    theirs = _kernel_strtox(fn)
    diffs = [(INPUTS[i], a, b) for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
    assert not diffs, diffs
    assert len({r for r, _ in theirs}) > 4          # several outcomes: values, EINVAL, ERANGE


def case_strtox_both_engines():
    for fn in ("strtol", "strtoul"):
        assert _pybpf_strtox(fn, "interp") == _pybpf_strtox(fn, "jit"), fn


# --- snprintf's format rules -------------------------------------------------------------------
def test_snprintf_format_grammar_is_the_kernels():
    from pybpf.verifier.bprintf import FormatError, parse
    ok = [b"%d %i %u %x %X %ld %lld %llu %c", b"%-5d|%05d|%+d|% d", b"%s.", b"%pI4 %pi6",
          b"%pks %pus", b"%px %pK %ps", b"100%%"]
    bad = [b"%hd", b"%.2d", b"%q", b"%pZ", b"%sx", b"%pksx", b"caf\xe9 %d", b"%", b"%lz"]
    for f in ok:
        parse(f, 12)
    for f in bad:
        with pytest.raises(FormatError):
            parse(f, 12)
    with pytest.raises(FormatError):
        parse(b"%d %d", 1)                  # more specifiers than arguments


def test_snprintf_renders_like_vsnprintf():
    from pybpf.runtime.bprintf import render
    args = [(-5) & M64, 5, 0xBEEF, ord("z"), 0]
    assert render(b"%d|%u|%x|%c|%px", args) == b"-5|5|beef|z|0000000000000000"
    assert render(b"%+u|% x|%5d|%-4d|%05d", [5, 10, 42, 7, (-42) & M64]) == \
        b"5|a|   42|7   |-0042"
    assert render(b"%d %lld", [0xFFFFFFFF, 0xFFFFFFFF]) == b"-1 4294967295"
    # a pre-rendered string past the end of the buffer counts for nothing (bstr_printf)
    assert len(render(b"0123456789 %ps", [16], size=4)) == len(b"0123456789 0x10")


# --- probe_read_user: only the run's memory ---------------------------------------------------
PROBE = """
r6 = r1
r1 = *(u64 *)(r6 + 32)
*(u64 *)(r10 - 32) = r1
r1 = *(u64 *)(r6 + 40)
*(u64 *)(r10 - 24) = r1
r3 = *(u64 *)(r6 + 0)
if r3 != 0 goto read
r3 = r10
r3 += -32
read:
r1 = r10
r1 += -16
r2 = 16
call bpf_probe_read_user
*(u64 *)(r6 + 8) = r0
r1 = *(u64 *)(r10 - 16)
*(u64 *)(r6 + 16) = r1
r1 = *(u64 *)(r10 - 8)
*(u64 *)(r6 + 24) = r1
r0 = 0
exit
"""


def _probe(engine: str, inside: bool) -> tuple[int, bytes]:
    """Read 16 bytes from the program's stack (inside) or from process memory the run was
    not given (a guarded Buffer)."""
    from pybpf.runtime.memory import Buffer
    vm = pybpf.VM()
    lp = vm.load(asm(PROBE), prog_type="syscall", engine=engine)
    secret = Buffer(16, init=b"not yours at all")
    ctx = bytearray(64)
    ctx[32:48] = b"sixteen bytes!!!"
    struct.pack_into("<Q", ctx, 0, 0 if inside else secret.address)
    lp.run(ctx=ctx)
    return struct.unpack_from("<q", ctx, 8)[0], bytes(ctx[16:32])


def case_probe_read_user_reads_the_runs_memory_only():
    for engine in ("interp", "jit"):
        assert _probe(engine, True) == (0, b"sixteen bytes!!!"), engine
        # outside: -EFAULT and a zero-filled destination, as a faulting read in the kernel
        assert _probe(engine, False) == (-14, bytes(16)), engine


# --- probe_read_user_str: a string from the run's memory only ----------------------------------
# ctx: u64 source @0, u64 r0 @8, the destination's first 8 bytes @16 (the last 8 @56), u32
# size @24 (0..16), u32 @28: read the string copied to the stack from ctx @32 instead
PROBE_STR = """
r6 = r1
r1 = *(u64 *)(r6 + 32)
*(u64 *)(r10 - 48) = r1
r1 = *(u64 *)(r6 + 40)
*(u64 *)(r10 - 40) = r1
r1 = *(u64 *)(r6 + 48)
*(u64 *)(r10 - 32) = r1
r1 = 0x5858585858585858 ll
*(u64 *)(r10 - 16) = r1
*(u64 *)(r10 - 8) = r1
r3 = *(u64 *)(r6 + 0)
r4 = *(u32 *)(r6 + 28)
if r4 == 0 goto read
r3 = r10
r3 += -48
read:
r2 = *(u32 *)(r6 + 24)
if r2 > 16 goto out
r1 = r10
r1 += -16
call bpf_probe_read_user_str
*(u64 *)(r6 + 8) = r0
r1 = *(u64 *)(r10 - 16)
*(u64 *)(r6 + 16) = r1
r1 = *(u64 *)(r10 - 8)
*(u64 *)(r6 + 56) = r1
out:
r0 = 0
exit
"""
# (source: "stack", "outside" (process memory the run was not given), or an address; size;
#  the string)
PROBE_STR_CASES = [("stack", 16, b"short\0"), ("stack", 16, b"exactly fifteen\0"),
                   ("stack", 16, b"longer than the sixteen bytes\0"), ("stack", 4, b"abcdef\0"),
                   ("stack", 1, b"abc\0"), ("stack", 0, b"abc\0"), ("outside", 16, b"x\0"),
                   (0, 16, b"x\0"), (0, 0, b"x\0"), (0x1000, 8, b"x\0")]


def _probe_str_ctx(source, size: int, text: bytes, secret: int) -> bytearray:
    ctx = bytearray(64)
    src = 0 if source == "stack" else secret if source == "outside" else source
    struct.pack_into("<QQQII", ctx, 0, src, 0, 0, size, source == "stack")
    ctx[32:56] = text[:24].ljust(24, b"\0")
    return ctx


def _probe_str_result(ctx: bytearray) -> tuple[int, bytes]:
    """(r0, the 16-byte destination: 8 bytes @16 and 8 @56)."""
    return struct.unpack_from("<q", ctx, 8)[0], bytes(ctx[16:24] + ctx[56:64])


def _probe_str(engine: str, cases=PROBE_STR_CASES) -> list:
    from pybpf.runtime.memory import Buffer
    lp = pybpf.VM().load(asm(PROBE_STR), prog_type="syscall", engine=engine)
    secret = Buffer(32, init=b"not yours at all, not a byte\0")
    out = []
    for source, size, text in cases:
        ctx = _probe_str_ctx(source, size, text, secret.address)
        lp.run(ctx=ctx)
        out.append(_probe_str_result(ctx))
    return out


def test_probe_read_user_str_reads_the_runs_memory_only():
    got = dict(zip([(c[0], c[1], c[2]) for c in PROBE_STR_CASES], _probe_str("interp")))
    x = b"X" * 16
    assert got[("stack", 16, b"short\0")] == (6, b"short\0" + x[6:])
    assert got[("stack", 16, b"exactly fifteen\0")] == (16, b"exactly fifteen\0")
    assert got[("stack", 16, b"longer than the sixteen bytes\0")] == (16, b"longer than the\0")
    assert got[("stack", 4, b"abcdef\0")] == (4, b"abc\0" + x[4:])
    assert got[("stack", 1, b"abc\0")] == (1, b"\0" + x[1:])
    assert got[("stack", 0, b"abc\0")] == (0, x)
    # memory the run was not given, NULL, an unmapped address: -EFAULT, the destination zeroed
    for key in (("outside", 16, b"x\0"), (0, 16, b"x\0"), (0x1000, 8, b"x\0")):
        assert got[key] == (-14, bytes(key[1]) + x[key[1]:]), key
    assert got[(0, 0, b"x\0")] == (0, x)


def case_probe_read_user_str_jit_is_the_interpreters():
    assert _probe_str("jit") == _probe_str("interp")


@pytest.mark.kernel
def test_probe_read_user_and_user_str_refusals_are_the_kernels():
    """Where the two agree by design: the kernel reads user addresses (pybpf: the run's memory,
    so the stack cases differ on purpose); NULL and an unmapped address are -EFAULT with the
    destination zeroed, and a size of 0 reads nothing, in both."""
    require_kernel("bpf", "test_run:syscall")
    import kernel_bpf
    cases = [c for c in PROBE_STR_CASES if isinstance(c[0], int)]
    fd, log = kernel_bpf.prog_load(asm(PROBE_STR).to_bytes(), "syscall", sleepable=True)
    assert fd >= 0, log
    theirs = []
    try:
        for source, size, text in cases:
            ctx = bytes(_probe_str_ctx(source, size, text, 0))
            _r, _d, after = kernel_bpf.test_run(fd, ctx=ctx)
            theirs.append(_probe_str_result(bytearray(after)))
    finally:
        os.close(fd)
    assert _probe_str("interp", cases) == theirs
    fd, log = kernel_bpf.prog_load(asm(PROBE).to_bytes(), "syscall", sleepable=True)
    assert fd >= 0, log
    try:
        for address in (0x10, 0x1000):         # (0 means "the stack" to PROBE)
            ctx = bytearray(64)
            ctx[32:48] = b"sixteen bytes!!!"
            struct.pack_into("<Q", ctx, 0, address)
            _r, _d, after = kernel_bpf.test_run(fd, ctx=bytes(ctx))
            lp = pybpf.VM().load(asm(PROBE), prog_type="syscall")
            lp.run(ctx=ctx)
            assert after == bytes(ctx) and struct.unpack_from("<q", ctx, 8)[0] == -14
    finally:
        os.close(fd)


# --- for_each_map_elem ------------------------------------------------------------------------
FOREACH = """
.map m type={type} key=4 value=8 max_entries=8
*(u64 *)(r10 - 8) = 0
r1 = map[m] ll
r2 = func(cb) ll
r3 = r10
r3 += -8
r4 = {flags}
call bpf_for_each_map_elem
r1 = *(u64 *)(r10 - 8)
r1 <<= 16
r0 |= r1
exit
cb:
r5 = *(u64 *)(r3 + 0)
r0 = *(u64 *)(r4 + 0)
r0 += r5
*(u64 *)(r4 + 0) = r0
r0 = 0
if r5 != 3 goto out
r0 = 1
out:
exit
"""


def _for_each(engine: str, mtype: str, flags: int = 0):
    vm = pybpf.VM()
    lp = vm.load(asm(FOREACH.replace("{type}", mtype).replace("{flags}", str(flags))),
                 prog_type="syscall", engine=engine)
    m = lp.maps["m"]
    for k, v in ((0, 1), (1, 5), (2, 3), (3, 9)) if mtype != "percpu_array" else ((0, 1),):
        if mtype.startswith("percpu"):
            m.sys_update(struct.pack("<I", k), struct.pack("<Q", v) * m.n_cpus)
        else:
            m.sys_update(struct.pack("<I", k), struct.pack("<Q", v))
    return lp.run(ctx=bytearray(8)) & M64


FOREACH_TWO = """
.map m type=array key=4 value=8 max_entries=4
r6 = *(u64 *)(r1 + 0)
*(u64 *)(r10 - 8) = 0
r2 = func(cb_a) ll
if r6 == 0 goto go
r2 = func(cb_b) ll
go:
r1 = map[m] ll
r3 = r10
r3 += -8
r4 = 0
call bpf_for_each_map_elem
r1 = *(u64 *)(r10 - 8)
r1 <<= 8
r0 |= r1
exit
cb_a:
r0 = *(u64 *)(r4 + 0)
r0 += 1
*(u64 *)(r4 + 0) = r0
r0 = 0
exit
cb_b:
r0 = *(u64 *)(r4 + 0)
r0 += 10
*(u64 *)(r4 + 0) = r0
r0 = 1
exit
"""


def case_for_each_map_elem():
    for engine in ("interp", "jit"):
        # array: 8 elements, stops at the value 3 (index 2): 3 visited, sum 1 + 5 + 3
        assert _for_each(engine, "array") == (9 << 16) | 3, engine
        # hash: 4 elements in the kernel's walk order with the seed 0 (keys 0, 2, 1, 3: jhash
        # buckets 0, 2, 3, 7 of 8; tests/test_hash_order.py), stops at 3 (key 2)
        assert _for_each(engine, "hash") == (4 << 16) | 2, engine
        # percpu_array: this CPU's values; none is 3, all 8 visited
        assert _for_each(engine, "percpu_array") == (1 << 16) | 8, engine
        assert _for_each(engine, "array", flags=1) == (-22) & M64, engine     # -EINVAL
        # the callback known only at run time (two candidates): counts in ctx, or stops at once
        lp = pybpf.VM().load(asm(FOREACH_TWO), prog_type="syscall", engine=engine)
        assert [lp.run(ctx=bytearray(struct.pack("<Q", v))) for v in (0, 1)] == \
            [(4 << 8) | 4, (10 << 8) | 1], engine


# --- perf_event_output and its consumer ---------------------------------------------------------
PERF = """
.map events type=perf_event_array key=4 value=4 max_entries=2
r6 = r1
r1 = *(u64 *)(r6 + 0)
*(u64 *)(r10 - 16) = r1
r1 = *(u64 *)(r6 + 8)
*(u64 *)(r10 - 8) = r1
r1 = r6
r2 = map[events] ll
r3 = *(u64 *)(r6 + 16)
r4 = r10
r4 += -16
r5 = *(u64 *)(r6 + 24)
r5 &= 15
call bpf_perf_event_output
exit
"""


def case_perf_event_output_consumer():
    for engine in ("interp", "jit"):
        vm = pybpf.VM()
        lp = vm.load(asm(PERF), prog_type="mem", engine=engine)
        ev = lp.maps["events"]

        def out(flags, size):
            return lp.run(mem=b"abcdefghABCDEFGH" + struct.pack("<QQ", flags, size)) & M64
        cur = 0xFFFFFFFF
        assert out(cur, 5) == (-2) & M64                  # no buffer: -ENOENT
        ev.open(0, pages=1)
        assert out(cur, 5) == 0 and out(0, 12) == 0 and out(0, 0) == 0
        assert out(2, 4) == (-7) & M64                    # past max_entries: -E2BIG
        assert out(1 << 33, 4) == (-22) & M64             # unknown flag bits: -EINVAL
        ev.open(1, cpu=1)
        assert out(1, 4) == (-95) & M64                   # another CPU's buffer: -EOPNOTSUPP
        # records: (cpu, data padded so that size + data end on 8 bytes), in order
        assert ev.consume() == [(0, b"abcde" + bytes(7)), (0, b"abcdefghABCD"),
                                (0, b"\0\0\0\0")]
        assert ev.consume() == []
        n = 0
        while out(0, 15) == 0:                            # one page fills up: -ENOSPC
            n += 1
        assert n == 4096 // 32 and ev.lost(0) == 1, (n, ev.lost(0))
        assert out(cur, 15) == (-28) & M64 and ev.lost(0) == 2


# --- cgroup storage: fresh per run, kept across test_run's repetitions -------------------------
CGROUP = """
.map st type=cgroup_storage key=16 value=8 max_entries=0
r1 = map[st] ll
r2 = 0
call bpf_get_local_storage
r1 = *(u64 *)(r0 + 0)
r1 += 1
*(u64 *)(r0 + 0) = r1
r0 = 0
if r1 != 1 goto out
r0 = 1
out:
exit
"""


def case_cgroup_storage_per_run():
    for engine in ("interp", "jit"):
        vm = pybpf.VM()
        lp = vm.load(asm(CGROUP), prog_type="cgroup_skb", engine=engine)
        pkt = bytes(64)
        assert [lp.run(data=pkt) for _ in range(3)] == [1, 1, 1], engine
        assert lp.test_run(data=pkt, repeat=5)[0] == 0       # 5 runs: the count went on
        with pytest.raises(pybpf.BPFError):
            lp.maps["st"].sys_lookup(bytes(16))               # no element: nothing attached


def test_cgroup_storage_attributes_are_the_kernels():
    vm = pybpf.VM()
    for kw, err in ((dict(key_size=12, value_size=8), 22), (dict(key_size=16, value_size=0), 22),
                    (dict(key_size=16, value_size=8, max_entries=1), 22),
                    (dict(key_size=16, value_size=8192), 7)):
        with pytest.raises(pybpf.MapError) as e:
            vm.create_map("cgroup_storage", **kw)
        assert e.value.errno == err, kw
    vm.create_map("cgroup_storage", key_size=8, value_size=4096)


# --- task identity ------------------------------------------------------------------------------
TASK = """
r6 = r1
call bpf_get_current_pid_tgid
*(u64 *)(r6 + 0) = r0
call bpf_get_current_uid_gid
*(u64 *)(r6 + 8) = r0
r1 = r10
r1 += -16
r2 = 16
call bpf_get_current_comm
r1 = *(u64 *)(r10 - 16)
*(u64 *)(r6 + 16) = r1
r1 = *(u64 *)(r10 - 8)
*(u64 *)(r6 + 24) = r1
exit
"""


def _task(engine: str, task: Task | None):
    vm = pybpf.VM(task=task)
    lp = vm.load(asm(TASK), prog_type="syscall", engine=engine)
    ctx = bytearray(32)
    lp.run(ctx=ctx)
    return struct.unpack_from("<QQ", ctx) + (bytes(ctx[16:32]),)


def case_task_identity():
    import threading
    for engine in ("interp", "jit"):
        pt, ug, comm = _task(engine, None)
        assert pt == (os.getpid() << 32) | threading.get_native_id()
        assert ug == (os.getgid() << 32) | os.getuid()
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "rb") as f:
            assert comm == f.read().strip().ljust(16, b"\0")
        got = _task(engine, Task(pid=7, tgid=8, uid=9, gid=10,
                                 comm=b"a-very-long-process-name"))
        assert got == ((8 << 32) | 7, (10 << 32) | 9, b"a-very-long-pro\0"), engine


# --- hostile pointers ---------------------------------------------------------------------------
HOSTILE = """
r1 = {ptr} ll
r2 = 8
r3 = 0
r4 = r10
r4 += -8
call bpf_{fn}
exit
"""


def case_hostile_pointers_are_refused():
    from pybpf.runtime.memory import Buffer
    target = Buffer(16, init=b"12345678", guard=64)
    for engine in ("interp", "jit"):
        for fn in ("strtol", "strtoul", "strncmp", "spin_lock", "snprintf"):
            text = HOSTILE.replace("{ptr}", str(target.address)).replace("{fn}", fn)
            if fn in ("strncmp", "snprintf"):
                text = text.replace("r3 = 0", f"r3 = {target.address} ll")
            lp = pybpf.VM().load(asm(text), prog_type="syscall", engine=engine, verify=False)
            with pytest.raises(pybpf.MemoryAccessError):
                lp.run(ctx=bytearray(8))
        assert target.guards_intact()


child_tests(globals(), test_name="test_in_child", marks=[pytest.mark.jit])


# --- snprintf: the format check at verification, against the kernel -------------------------------
SNPRINTF = """
.map fmt type=array key=4 value=32 max_entries=1 flags=128
r1 = r10
r1 += -64
r2 = 32
r3 = map_value[fmt] + 0 ll
r4 = r10
r4 += -32
*(u64 *)(r10 - 32) = 1
*(u64 *)(r10 - 24) = 2
*(u64 *)(r10 - 16) = 3
*(u64 *)(r10 - 8) = 4
r5 = {len}
call bpf_snprintf
exit
"""
FORMATS = [(b"%d %d", 16), (b"%d %d %d", 16), (b"%d", 12), (b"%hd", 8), (b"%s!", 8),
           (b"%sx", 8), (b"plain", 0), (b"%pI4", 8), (b"%pZ", 8), (b"%d" + bytes(4) + b"x", 8),
           (b"0123456789abcdef0123456789abcdef", 0)]


def _snprintf_verdicts_pybpf():
    out = []
    for fmt, n in FORMATS:
        vm = pybpf.VM()
        m = vm.create_map("array", 4, 32, 1, flags=128, name="fmt")
        m.sys_update(bytes(4), fmt[:32].ljust(32, b"\0"))
        m.freeze()
        try:
            vm.load(asm(SNPRINTF.replace("{len}", str(n))), prog_type="syscall",
                    engine="interp", maps={"fmt": m}).close()
            out.append(("accept", ""))
        except pybpf.VerifierError as e:
            out.append(("reject", e.message))
    return out


def _snprintf_verdicts_kernel():
    import ctypes
    import kernel_bpf
    import kernel_verifier as kv
    out = []
    for fmt, n in FORMATS:
        fd = kernel_bpf.create_map("array", 4, 32, 1, 128, name="fmt")
        try:
            kernel_bpf.update(fd, bytes(4), fmt[:32].ljust(32, b"\0"))
            kernel_bpf.freeze(fd)
            log = ctypes.create_string_buffer(1 << 20)
            prog = asm(SNPRINTF.replace("{len}", str(n)))
            try:
                os.close(kv._load(prog, "syscall", [fd], 1, log))
                out.append(("accept", ""))
            except kernel_bpf.KernelError:
                msg = kv.message_of(log.value.decode())
                out.append(("reject", msg if "call bpf_snprintf" not in msg else ""))
        finally:
            os.close(fd)
    return out


@pytest.mark.kernel
def test_snprintf_formats_are_checked_at_load_as_the_kernel_does():
    require_kernel("bpf")
    mine, theirs = _snprintf_verdicts_pybpf(), _snprintf_verdicts_kernel()
    diffs = [(FORMATS[i], a, b) for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
    assert not diffs, diffs
    assert {v for v, _ in theirs} == {"accept", "reject"}
