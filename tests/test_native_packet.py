"""The packet helpers JIT code computes natively in verified programs (jit/native_packet.py):
bpf_xdp_load_bytes/store_bytes and bpf_skb_load_bytes copy in-line when the range is in the
linear packet and take the Python bridge otherwise (fragments, errors), bpf_csum_diff with
constant sizes is unrolled. Every case runs in the interpreter and (in a child process) in the
JIT: r0, the packet and the copied bytes must be equal, for ranges inside, across and past the
linear part, offsets past 0xffff, and checksum sizes from 0 to 200 bytes on both sides. The
lowering is checked to emit no bridge call for these helpers (and one for unverified loads)."""
from __future__ import annotations

import random
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


def results(engine: str) -> dict:
    import pybpf
    vm = pybpf.VM()
    out = {}
    for helper in ("xdp_load_bytes", "xdp_store_bytes"):
        for off, size in XDP_RANGES:
            text = (XDP_STORE if helper == "xdp_store_bytes" else XDP_LOAD).format(
                off=off, size=size, helper=helper, d=0, e=4)
            lp = vm.load(assemble(text), prog_type="xdp", engine=engine)
            r0 = lp.run(data=_packet(5000))
            out[f"{helper} {off}+{size}"] = [r0, lp.last_data.hex()]
            lp.close()
    for off, size in SKB_RANGES:
        lp = vm.load(assemble(XDP_LOAD.format(off=off, size=size, helper="skb_load_bytes",
                                              d=76, e=80)),
                     prog_type="sched_cls", engine=engine)
        r0 = lp.run(data=_packet(60))
        out[f"skb_load_bytes {off}+{size}"] = [r0, lp.last_data.hex()]
        lp.close()
    for from_size, to_size, seed in CSUM_SIZES:
        lp = vm.load(assemble(_csum_prog(from_size, to_size, seed)), prog_type="sched_cls",
                     engine=engine)
        out[f"csum_diff {from_size}/{to_size}/{seed:x}"] = [lp.run(data=_packet(60))]
        lp.close()
    return out


def bridge_calls(verified: bool) -> dict:
    """How many Python bridge calls the lowering emits for each helper's program."""
    import pybpf
    from pybpf.jit.env import JitEnv
    from pybpf.jit.lower import lower_program
    vm = pybpf.VM()
    out = {}
    for helper, ptype, text in (
            ("xdp_load_bytes", "xdp", XDP_LOAD.format(off=0, size=16, helper="xdp_load_bytes",
                                                      d=0, e=4)),
            ("xdp_store_bytes", "xdp", XDP_STORE.format(off=0, size=16)),
            ("skb_load_bytes", "sched_cls",
             XDP_LOAD.format(off=0, size=16, helper="skb_load_bytes", d=76, e=80)),
            ("csum_diff", "sched_cls", _csum_prog(4, 16, 0))):
        env = JitEnv(prog_type=ptype, verified=verified, kfuncs=vm.kfuncs)
        ir = lower_program(assemble(text), vm.helpers, env=env).ir
        out[helper] = ir.count("call {i64, i1}")
    return out


CASES = {"jit": lambda: results("jit")}


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


def test_the_lowering_takes_no_bridge_for_them_in_verified_code():
    native, bridged = bridge_calls(True), bridge_calls(False)
    # the copy helpers keep one bridge call for their slow path; csum_diff has none
    assert native == {"xdp_load_bytes": 1, "xdp_store_bytes": 1, "skb_load_bytes": 1,
                      "csum_diff": 0}
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
