"""The packet helpers JIT code computes natively in verified programs (jit/native_packet.py):
bpf_xdp_load_bytes/store_bytes and bpf_skb_load_bytes copy in-line when the range is in the
linear packet and take the Python bridge otherwise (fragments, errors), bpf_csum_diff with
constant sizes is unrolled, bpf_xdp_adjust_head moves data (and the metadata) in line. Every
case runs in the interpreter and (in a child process) in the JIT: r0, the packet and the copied
bytes must be equal, for ranges inside, across and past the linear part, offsets past 0xffff,
and checksum sizes from 0 to 200 bytes on both sides; adjust_head's deltas on short and
fragmented packets, with and without metadata, are compared with the running kernel too
(r0, data_out, ctx_out), with a bridged helper checking a pointer into the moved head. The
lowering is checked to emit no bridge call for these helpers (and one for unverified loads)."""
from __future__ import annotations

import random
import struct
import sys

import pytest

from kfunc_run import assemble
from support import assert_case_passed, child, run_child

# r0 = the helper's result; the 16 bytes it loaded go to the packet's bytes 0..15 when it
# succeeded (so data_out shows them); the stack buffer starts zeroed
XDP_LOAD = """
r6 = r1
r1 = 0
*(u64 *)(r10 - 16) = r1
*(u64 *)(r10 - 8) = r1
r1 = r6
r2 = {off}
r3 = r10
r3 += -16
r4 = {size}
call bpf_{helper}
r7 = r0
if r7 != 0 goto out
r2 = *(u32 *)(r6 + {d})
r3 = *(u32 *)(r6 + {e})
r4 = r2
r4 += 16
if r4 > r3 goto out
r1 = *(u64 *)(r10 - 16)
*(u64 *)(r2 + 0) = r1
r1 = *(u64 *)(r10 - 8)
*(u64 *)(r2 + 8) = r1
out:
r0 = r7
exit
"""
XDP_STORE = """
r6 = r1
r1 = 0x0807060504030201 ll
*(u64 *)(r10 - 16) = r1
*(u64 *)(r10 - 8) = r1
r1 = r6
r2 = {off}
r3 = r10
r3 += -16
r4 = {size}
call bpf_xdp_store_bytes
exit
"""
CSUM = """
r1 = r10
r1 += -{from_at}
r2 = {from_size}
r3 = r10
r3 += -{to_at}
r4 = {to_size}
r5 = {seed}
call bpf_csum_diff
exit
"""


# bpf_xdp_adjust_head(delta), then through the new data: a marker written at data + 8 and
# bpf_csum_diff of 4 or 8 bytes from data + 4 (the size from a packet byte, so not a constant:
# the call takes the bridge and checks its pointer against the run's region table, which must
# have followed the head the native code moved); r0 = csum << 8 | the adjust's return (low byte)
HEAD = """
r6 = r1
r2 = {delta} ll
call bpf_xdp_adjust_head
r7 = r0
r7 &= 0xff
r2 = *(u32 *)(r6 + 0)
r3 = *(u32 *)(r6 + 4)
r4 = r2
r4 += 16
if r4 > r3 goto out
r1 = 0xa1a2a3a4
*(u32 *)(r2 + 8) = r1
r5 = *(u8 *)(r2 + 0)
r5 &= 4
r5 += 4
r1 = r2
r1 += 4
r2 = r5
r3 = 0
r4 = 0
r5 = 0
call bpf_csum_diff
r0 &= 0xffff
r0 <<= 8
r0 |= r7
exit
out:
r0 = r7
exit
"""
# deltas: below the xdp_frame (with and without metadata), the lowest, small moves both ways,
# up to data_end - ETH_HLEN of a 64-byte packet and past it, into a long linear part, s32 ends
HEAD_DELTAS = [-217, -216, -208, -8, 0, 8, 50, 51, 3000, 3507, -(1 << 31), (1 << 31) - 1]


def _md(data: int, data_end: int) -> bytes:
    return struct.pack("<6I", data, data_end, 0, 0, 0, 0)


def _head_inputs() -> list:
    """(name, ctx_in or None, packet): short and fragmented packets, with 8 bytes of metadata
    or none (the metadata moves with the head)."""
    short, long = _packet(64, 3), _packet(5000, 4)
    return [("64", None, short), ("64 meta 8", _md(8, 64), short),
            ("5000 frags", None, long), ("5000 frags meta 8", _md(8, 5000), long)]


def head_results(engine: str) -> dict:
    """Per delta and input: [r0, data_out hex, ctx_out hex or None]."""
    import pybpf
    vm = pybpf.VM()
    out = {}
    for delta in HEAD_DELTAS:
        lp = vm.load(assemble(HEAD.format(delta=delta)), prog_type="xdp", engine=engine,
                     **_TIER[engine])
        for name, ctx, data in _head_inputs():
            r0 = lp.run(data=data, ctx=bytearray(ctx) if ctx else None)
            out[f"{delta} {name}"] = [r0, lp.last_data.hex(),
                                      bytes(lp.last_ctx).hex() if ctx else None]
        lp.close()
    return out


def kernel_head_results() -> dict:
    import os
    import kernel_bpf as kb
    out = {}
    for delta in HEAD_DELTAS:
        fd, log = kb.prog_load(assemble(HEAD.format(delta=delta)).to_bytes(), "xdp")
        assert fd >= 0, log
        try:
            for name, ctx, data in _head_inputs():
                r0, dout, cout = kb.test_run(fd, ctx=ctx, data=data,
                                             data_out_size=len(data) + 512,
                                             ctx_out_size=24 if ctx else 0)
                out[f"{delta} {name}"] = [r0, dout.hex(), cout.hex() if ctx else None]
        finally:
            os.close(fd)
    return out


def _packet(n: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    return bytes(12) + b"\x08\x00" + bytes(rnd.randrange(256) for _ in range(n - 14))


def _csum_prog(from_size: int, to_size: int, seed: int) -> str:
    """Fill 400 stack bytes with a pattern, then csum_diff two regions of it."""
    rnd = random.Random(from_size * 1000 + to_size)
    fill = "".join(f"r1 = 0x{rnd.getrandbits(64):x} ll\n*(u64 *)(r10 - {8 * (k + 1)}) = r1\n"
                   for k in range(50))
    return fill + CSUM.format(from_at=400, from_size=from_size, to_at=200, to_size=to_size,
                              seed=seed)


XDP_RANGES = [(0, 16), (14, 16), (3000, 16), (3504, 16), (3510, 16), (3520, 16), (4990, 10),
              (4995, 16), (0x10000, 4), (100, 1), (0, 8)]
SKB_RANGES = [(0, 16), (14, 16), (40, 16), (44, 16), (50, 16), (0x7FFFFFFF, 1),
              (0x80000000, 1), (59, 1), (60, 1)]
CSUM_SIZES = [(4, 4, 0), (0, 16, 0x1234), (16, 0, 0xFFFF), (20, 40, 7), (36, 100, 0),
              (200, 200, 0xFFFFFFFF), (0, 0, 5), (8, 80, 1), (88, 0, 0), (12, 48, 0xABCD)]


# the native code is the LLVM tiers' (the baseline tier calls these helpers through the bridge):
# JIT runs wait for -O2 code, so they test it whatever the first tier was
_TIER = {"jit": {"tier": "O2"}, "interp": {}}


def results(engine: str) -> dict:
    import pybpf
    vm = pybpf.VM()
    out = {}
    for helper in ("xdp_load_bytes", "xdp_store_bytes"):
        for off, size in XDP_RANGES:
            text = (XDP_STORE if helper == "xdp_store_bytes" else XDP_LOAD).format(
                off=off, size=size, helper=helper, d=0, e=4)
            lp = vm.load(assemble(text), prog_type="xdp", engine=engine, **_TIER[engine])
            r0 = lp.run(data=_packet(5000))
            out[f"{helper} {off}+{size}"] = [r0, lp.last_data.hex()]
            lp.close()
    for off, size in SKB_RANGES:
        lp = vm.load(assemble(XDP_LOAD.format(off=off, size=size, helper="skb_load_bytes",
                                              d=76, e=80)),
                     prog_type="sched_cls", engine=engine, **_TIER[engine])
        r0 = lp.run(data=_packet(60))
        out[f"skb_load_bytes {off}+{size}"] = [r0, lp.last_data.hex()]
        lp.close()
    for from_size, to_size, seed in CSUM_SIZES:
        lp = vm.load(assemble(_csum_prog(from_size, to_size, seed)), prog_type="sched_cls",
                     engine=engine, **_TIER[engine])
        out[f"csum_diff {from_size}/{to_size}/{seed:x}"] = [lp.run(data=_packet(60))]
        lp.close()
    return out


def bridge_calls(verified: bool) -> dict:
    """How many Python bridge calls the lowering emits for each helper's program."""
    import pybpf
    from pybpf.jit.env import JitEnv
    from pybpf.jit.lower import lower_program
    from pybpf.runtime.xdp_buff import XDP_HEAD_FLOOR
    vm = pybpf.VM()
    out = {}
    for helper, ptype, text in (
            ("xdp_load_bytes", "xdp", XDP_LOAD.format(off=0, size=16, helper="xdp_load_bytes",
                                                      d=0, e=4)),
            ("xdp_store_bytes", "xdp", XDP_STORE.format(off=0, size=16)),
            ("skb_load_bytes", "sched_cls",
             XDP_LOAD.format(off=0, size=16, helper="skb_load_bytes", d=76, e=80)),
            ("csum_diff", "sched_cls", _csum_prog(4, 16, 0)),
            ("xdp_adjust_head", "xdp", "r2 = -8\ncall bpf_xdp_adjust_head\nexit")):
        env = JitEnv(prog_type=ptype, verified=verified, kfuncs=vm.kfuncs,
                     xdp_head_floor=XDP_HEAD_FLOOR)
        ir = lower_program(assemble(text), vm.helpers, env=env).ir
        out[helper] = ir.count("call {i64, i1}")
    return out


CASES = {"jit": lambda: results("jit"), "head": lambda: head_results("jit")}


@pytest.fixture(scope="module")
def interp():
    return results("interp")


@pytest.fixture(scope="module")
def jit_results():
    return run_child(__file__, CASES)


@pytest.mark.jit
def test_native_helpers_compute_what_the_interpreter_does(jit_results, interp):
    assert_case_passed(jit_results, "jit")
    jit = jit_results[0]["jit"]["detail"]
    assert {k: v for k, v in jit.items() if interp[k] != v} == {}
    # the cases reach both paths: successes and each error the slow path gives
    codes = {v[0] for v in interp.values()}
    assert {0, (-14) & (1 << 64) - 1, (-22) & (1 << 64) - 1} <= codes, codes


@pytest.fixture(scope="module")
def head_interp():
    return head_results("interp")


@pytest.mark.jit
def test_native_adjust_head_moves_what_the_interpreter_does(jit_results, head_interp):
    assert_case_passed(jit_results, "head")
    jit = jit_results[0]["head"]["detail"]
    assert {k: (v, head_interp[k]) for k, v in jit.items() if head_interp[k] != v} == {}
    # both outcomes, and the bridged csum_diff ran after a successful move (a checksum in r0)
    codes = {v[0] & 0xFF for v in head_interp.values()}
    assert codes == {0, (-22) & 0xFF}, codes
    assert sum(v[0] > 0xFF for v in head_interp.values()) >= 12


@pytest.mark.kernel
def test_adjust_head_is_the_kernels_on_short_and_fragmented_packets(head_interp):
    from kernel_probe import require_kernel
    require_kernel("test_run:xdp")
    theirs = kernel_head_results()
    assert {k: (v, theirs[k]) for k, v in head_interp.items() if theirs[k] != v} == {}


def test_the_region_table_follows_the_pointers_native_code_moves():
    """Native adjust_head writes the xdp_md only; a JIT run's table (RegionTable.follow) reads
    it before every lookup: the packet region is [data_meta, data_end) as the xdp_md says."""
    from pybpf.runtime.contexts import build_context
    from pybpf.runtime.memory import RegionTable
    rc = build_context("xdp", data=_packet(64))
    try:
        table = RegionTable(rc.regions)
        table.follow(rc.xdp)
        md = rc.xdp.md
        data = md.data
        assert table.find(data, 64) is not None and table.find(data - 1, 1) is None
        md.data, md.data_meta = data + 8, data + 8          # adjust_head(+8), natively
        assert table.find(data, 1) is None and table.find(data + 8, 56) is not None
        md.data, md.data_meta = data - 16, data - 24        # adjust_head(-24), 8 of metadata
        assert table.find(data - 24, 88) is not None and table.find(data - 25, 1) is None
        assert "packet [0x%x, 0x%x)" % (data - 24, data + 64) in table.describe()
    finally:
        rc.release()


def test_the_lowering_takes_no_bridge_for_them_in_verified_code():
    native, bridged = bridge_calls(True), bridge_calls(False)
    # the copy helpers keep one bridge call for their slow path; csum_diff and adjust_head
    # have none
    assert native == {"xdp_load_bytes": 1, "xdp_store_bytes": 1, "skb_load_bytes": 1,
                      "csum_diff": 0, "xdp_adjust_head": 0}
    assert bridged == {name: 1 for name in native}
    # ...and the fast path is there: the code calls libc's memmove (an external symbol)
    import pybpf
    from pybpf.jit import native_packet
    from pybpf.jit.env import JitEnv
    from pybpf.jit.lower import lower_program
    vm = pybpf.VM()
    lm = lower_program(assemble(XDP_LOAD.format(off=0, size=16, helper="xdp_load_bytes",
                                                 d=0, e=4)),
                       vm.helpers, env=JitEnv(prog_type="xdp", kfuncs=vm.kfuncs))
    assert native_packet.memmove_address() in lm.externs.values()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
