"""Maps, helpers and contexts from JIT'd code, against the interpreter running the same programs.

Every case runs its scenario once per engine (each with its own VM) and compares what the
program returned and what Python sees afterwards; most also check fixed answers. JIT'd code
runs unchecked, so the cases run in a child Python (``python tests/test_jit_maps.py child``)
that prints one JSON line per case.

Cases: lookups, updates and deletes on every array and hash type (lookups are native code:
a lookup-only program never calls Python), hash keys of many sizes, percpu maps following
``map.cpu``, LRU reference bits set by native lookups, ring buffers, tail calls (ctx kept,
fall-through, the chain limit of 33, from a subprogram, a closed target), bpf_loop, every
program type's context, ld_abs/ld_ind, probe_read_kernel and trace_printk's %s with the run's
memory, and a helper's exception reaching the caller.
"""
from __future__ import annotations

import errno
import random
import struct
import time

import pytest

from programs_maps import bpf_loop_prog, ringbuf_prog, tail_caller, tail_chain
from support import M64, asm, both, child_tests, frame

pytestmark = pytest.mark.jit


def VM():
    from pybpf.vm import VM as _VM

    return _VM(seed=1)


# -- maps ---------------------------------------------------------------------------------------

def map_prog(fd: int, key_size: int):
    """mem = {u64 op, u64 value, key}: op 0 looks the key up and adds value to the first u64 of
    the element (returning the old one) or inserts it (returning 1000 + the update's r0);
    op 1 deletes it (returning the delete's r0)."""
    return asm(f"""
        r6 = r1
        r7 = *(u64 *)(r6 + 0)
        if r7 != 0 goto del
        r1 = map_fd({fd}) ll
        r2 = r6
        r2 += 16
        call bpf_map_lookup_elem
        if r0 == 0 goto insert
        r1 = *(u64 *)(r0 + 0)
        r2 = *(u64 *)(r6 + 8)
        r3 = r1
        r3 += r2
        *(u64 *)(r0 + 0) = r3
        r0 = r1
        exit
    insert:
        r1 = map_fd({fd}) ll
        r2 = r6
        r2 += 16
        r3 = r6
        r3 += 8
        r4 = 0
        call bpf_map_update_elem
        r0 += 1000
        exit
    del:
        r1 = map_fd({fd}) ll
        r2 = r6
        r2 += 16
        call bpf_map_delete_elem
        exit""")


def lookup_prog(fd: int, key_off: int = 8):
    """r0 = the first u64 of the element of the key at mem + key_off, or -1 when absent."""
    return asm(f"""
        r2 = r1
        r2 += {key_off}
        r1 = map_fd({fd}) ll
        call bpf_map_lookup_elem
        if r0 == 0 goto +2
        r0 = *(u64 *)(r0 + 0)
        exit
        r0 = -1
        exit""")


MAP_TYPES = ("array", "percpu_array", "hash", "lru_hash", "percpu_hash", "lru_percpu_hash")


def case_lookup_update_delete_every_type():
    rnd = random.Random(5)
    ops = [(rnd.randrange(2) if i > 20 else 0, rnd.randrange(12), rnd.randrange(1, 100))
           for i in range(300)]
    for mtype in MAP_TYPES:
        def run(engine, mtype=mtype):
            vm = VM()
            m = vm.create_map(mtype, key_size=4, value_size=8, max_entries=8)
            lp = vm.load(map_prog(m.fd, 4), engine=engine)
            out = []
            for op, key, value in ops:
                out.append(lp.run(mem=struct.pack("<QQI", op, value, key)))
            items = sorted((bytes(k).hex(), repr(v)) for k, v in m.items())
            return out, items
        out, items = both(run)
        assert items and any(r >= 1000 for r in out), mtype
        if mtype.endswith("array"):
            assert (-errno.EINVAL & M64) in out and 1000 - errno.E2BIG & M64 in out
        elif not mtype.startswith("lru"):
            assert (1000 - errno.E2BIG) & M64 in out and (-errno.ENOENT & M64) in out


def case_lookups_are_native():
    """A program that only looks up (array and hash) is entered without the GIL: no Python."""
    vm = VM()
    h = vm.create_map("hash", key_size=8, value_size=8, max_entries=64)
    a = vm.create_map("array", key_size=4, value_size=8, max_entries=4)
    h[struct.pack("<Q", 7)] = struct.pack("<Q", 70)
    a[2] = struct.pack("<Q", 20)
    for m, key, want in ((h, struct.pack("<Q", 7), 70), (a, struct.pack("<I", 2), 20)):
        lp = vm.load(lookup_prog(m.fd), engine="jit")
        assert not lp._jit.needs_gil, m.type
        assert lp.run(mem=bytes(8) + key) == want
        assert lp.run(mem=bytes(8) + bytes(len(key) - 1) + b"\x09") == M64
    return True


_CLOCKS = {5: time.CLOCK_MONOTONIC, 125: time.CLOCK_BOOTTIME, 160: 6,   # MONOTONIC_COARSE
           208: time.CLOCK_TAI}


def case_time_random_and_cpu_helpers_are_native():
    """ktime_get_ns/boot_ns/coarse_ns/tai_ns, get_prandom_u32 and get_smp_processor_id are
    computed inline (no GIL needed); the seeded generator gives the same sequence in both
    engines and keeps going across runs; each clock reads between two Python readings."""
    lines = []
    for hid in _CLOCKS:
        lines += [f"call {hid}", f"*(u64 *)(r6 + {len(lines) // 2 * 8}) = r0"]
    prog = asm("r6 = r1\n" + "\n".join(lines) + "\ncall bpf_get_smp_processor_id\n"
               "*(u64 *)(r6 + 32) = r0\ncall bpf_get_prandom_u32\nr7 = r0\n"
               "call bpf_get_prandom_u32\nr0 <<= 32\nr0 |= r7\nexit")

    def run(engine):
        vm = VM()
        lp = vm.load(prog, engine=engine)
        if engine == "jit":
            assert not lp._jit.needs_gil
        randoms = []
        for _ in range(3):
            before = {h: time.clock_gettime_ns(c) for h, c in _CLOCKS.items()}
            randoms.append(lp.run(mem=bytes(40)))
            after = {h: time.clock_gettime_ns(c) for h, c in _CLOCKS.items()}
            got = dict(zip(_CLOCKS, struct.unpack("<4Q", lp.last_mem[:32])))
            for h in (5, 125, 208):
                assert before[h] <= got[h] <= after[h], (engine, h, before[h], got[h])
            # the coarse clock lags by up to a tick (4 ms at HZ=250)
            assert before[160] - 10_000_000 <= got[160] <= after[160], (engine, got[160])
            assert lp.last_mem[32:40] == bytes(8)
        return randoms
    randoms = both(run)
    assert len(set(randoms)) == 3
    return randoms


def case_hash_keys_of_every_size():
    rnd = random.Random(9)
    for ks in (1, 3, 4, 8, 12, 13, 16, 63, 100, 200):   # jhash: tails, blocks, its loop
        keys = list({rnd.randbytes(ks) for _ in range(40)})
        present, absent = keys[:25], keys[25:]

        def run(engine, ks=ks):
            vm = VM()
            m = vm.create_map("hash", key_size=ks, value_size=8, max_entries=32)
            for i, k in enumerate(present):
                m[k] = struct.pack("<Q", 1000 + i)
            lp = vm.load(lookup_prog(m.fd), engine=engine)
            return [lp.run(mem=bytes(8) + k) for k in present + absent]
        out = both(run)
        assert out == [1000 + i for i in range(len(present))] + [M64] * len(absent), ks


def case_percpu_maps_follow_the_cpu():
    def run(engine):
        vm = VM()
        out = []
        for mtype in ("percpu_array", "percpu_hash"):
            m = vm.create_map(mtype, key_size=4, value_size=8, max_entries=4, n_cpus=3)
            m.update(1, [struct.pack("<Q", 10 * c + 1) for c in range(3)])
            lp = vm.load(lookup_prog(m.fd), engine=engine)
            for cpu in (0, 2, 1):
                m.cpu = cpu
                out.append(lp.run(mem=bytes(8) + struct.pack("<I", 1)))
        return out
    assert both(run) == [1, 21, 11] * 2


def case_lru_reference_bits_from_native_lookups():
    def run(engine):
        vm = VM()
        m = vm.create_map("lru_hash", key_size=4, value_size=8, max_entries=4)
        for k in range(4):
            m[struct.pack("<I", k)] = struct.pack("<Q", k)
        lp = vm.load(lookup_prog(m.fd), engine=engine)
        for k in (0, 1):
            assert lp.run(mem=bytes(8) + struct.pack("<I", k)) == k
        m[struct.pack("<I", 9)] = struct.pack("<Q", 9)       # evicts the oldest unreferenced
        return sorted(int.from_bytes(k, "little") for k in m.keys())
    assert both(run) == [0, 1, 3, 9]


def case_baseline_tier_lookups_and_helpers_are_native():
    """The baseline tier (jit/baseline.py, no LLVM) emits the maps' own native lookups
    (jit/x86_kit.py) and the time/random helpers itself: the cases above, run with every load
    on tier "baseline" (which raises rather than falling back to LLVM), no GIL needed."""
    import os

    from pybpf.jit import baseline

    before = baseline.report()["baseline"]
    saved = os.environ.get("PYBPF_JIT_TIER")
    os.environ["PYBPF_JIT_TIER"] = "baseline"
    try:
        case_lookups_are_native()
        case_time_random_and_cpu_helpers_are_native()
        case_hash_keys_of_every_size()
        case_percpu_maps_follow_the_cpu()
        case_lru_reference_bits_from_native_lookups()
        case_lookup_update_delete_every_type()
    finally:
        if saved is None:
            del os.environ["PYBPF_JIT_TIER"]
        else:
            os.environ["PYBPF_JIT_TIER"] = saved
    placed = baseline.report()["baseline"] - before
    assert placed >= 2 + 1 + 8 + 2 + 1 + len(MAP_TYPES), placed
    return placed


def case_ringbuf():
    def run(engine):
        vm = VM()
        rb = vm.create_map("ringbuf", max_entries=4096, name="rb")
        lp = vm.load(asm(ringbuf_prog(rb.fd)), engine=engine)
        r = [lp.run(mem=struct.pack("<QQ", 5, 0)), lp.run(mem=struct.pack("<QQ", 6, 1))]
        return r, [x.hex() for x in rb]
    r, records = both(run)
    assert r == [40, 80] and len(records) == 3


# -- tail calls ---------------------------------------------------------------------------------

def case_tail_calls_keep_ctx_and_fall_through():
    def run(engine):
        vm = VM()
        jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=4)
        target = vm.load(asm("r0 = *(u64 *)(r1 + 0)\nr0 += 1\nexit"), engine=engine)
        lp = vm.load(asm(tail_caller(jt.fd)), engine=engine)
        jt[1] = target
        jt[2] = target.fd
        out = [lp.run(mem=struct.pack("<QI", 41, 1)), lp.run(mem=struct.pack("<QI", 9, 2)),
               lp.run(mem=struct.pack("<QI", 9, 3)), lp.run(mem=struct.pack("<QI", 9, 99))]
        del jt[1]
        out.append(lp.run(mem=struct.pack("<QI", 41, 1)))
        return out
    assert both(run) == [42, 10, 1000, 1000, 1000]


def case_tail_call_chain_stops_after_33():
    def run(engine):
        vm = VM()
        jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=1)
        runs = vm.create_map("array", key_size=4, value_size=8, max_entries=1)
        lp = vm.load(asm(tail_chain(jt.fd, runs.fd)), engine=engine)
        jt[0] = lp
        count = lambda: int.from_bytes(runs[0], "little")  # noqa: E731
        out = [lp.run(), count(), lp.run(), count(), lp.test_run(repeat=3)[0], count()]
        return out
    assert both(run) == [7, 34, 7, 68, 7, 68 + 3 * 34]


def case_tail_call_from_a_subprogram_returns_to_its_caller():
    def run(engine):
        vm = VM()
        jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=2)
        target = vm.load(asm("r0 = *(u64 *)(r1 + 0)\nr0 *= 3\nexit"), engine=engine)
        lp = vm.load(asm(f"""
            r6 = r1
            call sub
            r0 += 100
            exit
        sub:
            r2 = map_fd({jt.fd}) ll
            r3 = *(u32 *)(r1 + 8)
            call bpf_tail_call
            r0 = 5
            exit"""), engine=engine)
        jt[0] = target
        return [lp.run(mem=struct.pack("<QI", 7, 0)), lp.run(mem=struct.pack("<QI", 7, 1))]
    assert both(run) == [121, 105]


def case_tail_call_to_a_closed_program_falls_through_in_the_jit():
    """The interpreter raises VMError for a closed target; JIT code cannot raise there, so the
    prog_array's native table is cleared on close and the call falls through."""
    vm = VM()
    jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=2)
    target = vm.load(asm("r0 = 42\nexit"), engine="jit")
    lp = vm.load(asm(f"r2 = map_fd({jt.fd}) ll\nr3 = 0\ncall bpf_tail_call\nr0 = 1\nexit"),
                 engine="jit")
    jt[0] = target
    assert lp.run() == 42
    target.close()
    assert lp.run() == 1
    jt[1] = vm.load(asm("r0 = 43\nexit"), engine="interp")    # not JIT'd: no native entry
    lp2 = vm.load(asm(f"r2 = map_fd({jt.fd}) ll\nr3 = 1\ncall bpf_tail_call\nr0 = 2\nexit"),
                  engine="jit")
    assert lp2.run() == 2
    return True


# -- bpf_loop, contexts, ld_abs, helpers that read memory ---------------------------------------

LOOP = bpf_loop_prog(flags="*(u64 *)(r6 + 16)")


def case_bpf_loop():
    def run(engine):
        lp = VM().load(asm(LOOP), engine=engine)
        out = []
        for nr, flags in ((5, 0), (100, 0), (0, 0), (3, 1), (0x800001, 0)):
            r0 = lp.run(mem=struct.pack("<QQQ", nr, 0, flags))
            out.append((r0, struct.unpack("<QQQ", lp.last_mem)[1]))
        return out
    assert both(run) == [(5, 10), (7, 21), (0, 0), (-errno.EINVAL & M64, 0),
                         (-errno.E2BIG & M64, 0)]


SKB = """
    r6 = r1
    r0 = *(u32 *)(r6 + 0)
    r1 = *(u32 *)(r6 + 8)
    r1 <<= 8
    r0 += r1
    r1 = *(u32 *)(r6 + 16)
    r1 <<= 16
    r0 += r1
    r1 = *(u32 *)(r6 + 48)
    r0 += r1
    r7 = *(u32 *)(r6 + 76)
    r8 = *(u32 *)(r6 + 80)
    r1 = r8
    r1 -= r7
    r1 <<= 40
    r0 += r1
    r2 = r7
    r2 += 14
    if r2 > r8 goto +4
    r1 = *(u8 *)(r7 + 13)
    r1 <<= 32
    r0 += r1
    {write}
    r1 = 77
    *(u32 *)(r6 + 8) = r1
    exit"""


def case_every_program_types_context():
    from pybpf.runtime.contexts import SkBuff, XdpMd

    def run(engine):
        vm = VM()
        out = {}
        ctx = {"mark": 5, "cb": [1, 2, 3, 4, 5], "priority": 2}
        for ptype in ("socket_filter", "sched_cls", "cgroup_skb", "lwt_in"):
            write = "r1 = 0xee\n*(u8 *)(r7 + 0) = r1" if ptype == "sched_cls" else ""
            # the same program on every __sk_buff type: the kernel refuses some of its fields
            # for some types (socket_filter has no data/data_end): this compares the run-time
            # contexts of both engines, unverified (tests/verifier/ctx covers the rules)
            lp = vm.load(asm(SKB.format(write=write)), prog_type=ptype, engine=engine,
                         verify=False)
            pkt = frame()       # a frame, as BPF_PROG_TEST_RUN takes it
            r0 = lp.run(data=pkt, ctx=dict(ctx))
            skb = lp.last_ctx
            out[ptype] = (r0, lp.last_data.hex(), skb.mark, list(skb.cb), skb.len)
            short = lp.run(data=frame(0x0806)[:16])
            out[ptype + "/short"] = (short, lp.last_data.hex())
        xdp = vm.load(asm("""
            r2 = *(u32 *)(r1 + 0)
            r3 = *(u32 *)(r1 + 4)
            r4 = r2
            r4 += 14
            if r4 > r3 goto +5
            r5 = *(u8 *)(r2 + 0)
            r5 ^= 0xff
            *(u8 *)(r2 + 0) = r5
            r0 = 3
            exit
            r0 = 1
            exit"""), prog_type="xdp", engine=engine, verify=False)
        out["xdp"] = (xdp.run(data=frame()), xdp.last_data.hex(), xdp.last_ctx.ingress_ifindex)
        # a 10-byte linear part (ctx_in data_end), the rest of the frame in a fragment
        out["xdp/short"] = (xdp.run(data=frame(), ctx={"data_end": 10}), xdp.last_data.hex())
        sysc = vm.load(asm("r2 = *(u64 *)(r1 + 0)\nr2 *= 3\n*(u64 *)(r1 + 8) = r2\n"
                           "r0 = r2\nexit"), prog_type="syscall", engine=engine, verify=False)
        buf = bytearray(struct.pack("<QQ", 14, 0))
        out["syscall"] = (sysc.run(ctx=buf), bytes(buf).hex())
        for ptype, size in (("tracepoint", 8), ("kprobe", 168)):
            lp = vm.load(asm("r0 = *(u64 *)(r1 + 0)\nr1 = *(u64 *)(r1 + 8)\nr0 += r1\nexit"
                             if size > 8 else "r0 = *(u64 *)(r1 + 0)\nexit"),
                         prog_type=ptype, engine=engine, verify=False)   # tracepoint off 0:
            # the kernel refuses the common header; this compares the run-time contexts
            out[ptype] = (lp.run(ctx=struct.pack("<QQ", 0xAB, 0xCD)[:size]), lp.last_ctx.hex())
        skb_cls, xdp_cls = SkBuff, XdpMd    # the contexts are the kernel structs
        assert isinstance(vm, object) and skb_cls and xdp_cls
        return out
    out = both(run)
    assert out["xdp"][0] == 3 and out["xdp/short"][0] == 1 and out["syscall"][0] == 42
    assert out["sched_cls"][1].startswith("ee") and out["sched_cls"][2] == 77
    assert out["kprobe"][0] == 0xAB + 0xCD and out["tracepoint"][0] == 0xAB


LDABS = """
    r6 = r1
    r0 = *(u16 *)skb[12]
    if r0 != 0x800 goto +7
    r7 = 23
    r0 = *(u8 *)skb[r7 + 0]
    r8 = r0
    r0 = *(u32 *)skb[26]
    r0 += r8
    call sub
    r0 += r8
    exit
sub:
    r0 = *(u8 *)skb[r9 + 30]
    exit"""


def case_ld_abs_and_ld_ind():
    def run(engine):
        out = []
        for ptype in ("mem", "sched_cls", "socket_filter"):
            # ld_abs in a subprogram and in a mem program: refused by the kernel's verifier,
            # run here to compare both engines' run-time semantics
            lp = VM().load(asm(LDABS), prog_type=ptype, engine=engine, verify=False)
            for pkt in (frame(proto=6), frame(0x0806), frame(proto=6)[:20],
                        frame(proto=6)[:30], frame(proto=6)[:31]):
                if ptype != "mem" and len(pkt) < 34:
                    pkt = pkt[:12] + b"\x08\x06" + pkt[14:]     # IPv4 needs its header
                out.append(lp.run(data=pkt))
        return out
    out = both(run)
    assert out[:5] == [6 + 10, 0x0806, 0, 0, 10 + 6] * 1, out[:5]


def case_probe_read_and_trace_printk_strings():
    def run(engine):
        vm = VM()
        lp = vm.load(asm("""
            r6 = r1
            r1 = 0x6f6c6c6568 ll
            *(u64 *)(r10 - 8) = r1
            r1 = 0xa
            *(u64 *)(r10 - 24) = r1
            r1 = 0x7325203a74786574 ll
            *(u64 *)(r10 - 32) = r1
            r1 = r10
            r1 += -32
            r2 = 10
            r3 = r10
            r3 += -8
            call bpf_trace_printk
            r7 = r0
            r1 = r10
            r1 += -48
            r2 = 8
            r3 = r6
            call bpf_probe_read_kernel
            r8 = r0
            r1 = r10
            r1 += -56
            r2 = 8
            r3 = 0x1000
            call bpf_probe_read_kernel
            r0 <<= 32
            r0 += r8
            r1 = *(u64 *)(r10 - 48)
            *(u64 *)(r6 + 8) = r1
            *(u64 *)(r6 + 16) = r7
            exit"""), engine=engine)
        r0 = lp.run(mem=struct.pack("<QQQ", 0x1234, 0, 0))
        return r0, struct.unpack("<3Q", lp.last_mem), vm.trace_output()
    r0, mem, lines = both(run)
    assert r0 == ((-errno.EFAULT & M64) << 32) & M64 and mem[1] == 0x1234
    assert lines == ["text: hello"], lines


def case_helper_exceptions_reach_the_caller():
    from pybpf.errors import MapError

    def run(engine):
        vm = VM()
        lp = vm.load(asm("r1 = 12345\nr2 = r10\nr2 += -8\n*(u64 *)(r10 - 8) = 0\n"
                         "call bpf_map_lookup_elem\nexit"), engine=engine, verify=False)
        try:
            lp.run()
        except MapError as e:
            return type(e).__name__, e.errno
        return None
    assert both(run) == ("MapError", errno.EBADF)


child_tests(globals(), lambda d: repr(d)[:200], "test_case_in_both_engines")
