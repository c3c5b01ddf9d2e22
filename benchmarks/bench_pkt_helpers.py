"""Benchmark of the packet helpers JIT code computes natively (jit/native_packet.py).

Each program (verified, as the native code requires) calls one helper once and returns; it
runs with ``test_run(data=packet, repeat=R)`` and the figure is ns per call: the run's ns minus
the ns of the same program without the call (the run's own cost, measured in the same run).
The baseline is the same program with the helper reached through the shared Python bridge (the
helper registered under another name, which the native lowering does not take): what every
packet helper cost before. Both must return the same r0 and packet, or the run fails.

* ``xdp_load_bytes`` (16 bytes at offset 14) and ``xdp_store_bytes`` (4 bytes), XDP;
* ``skb_load_bytes`` (16 bytes at offset 14), tc;
* ``xdp_adjust_head`` down 8 bytes and back (two calls, the figure is per pair), XDP;
* ``csum_diff`` of a 4-byte and a 16-byte buffer (constant sizes), tc.

``run()`` returns a dict; ``python -m pybpf.benchmarks.bench_pkt_helpers [--quick]`` prints a
table.
"""
from __future__ import annotations

import dataclasses

import pybpf
from pybpf.benchmarks.common import gc_paused, main, median_of
from pybpf.errors import BPFError
from pybpf.helper_names import HELPER_IDS
from pybpf.vm import VM

PACKET = bytes(12) + b"\x08\x00" + bytes(range(46))

CALLS = {
    "xdp_load_bytes": ("xdp", """
        r2 = 14
        r3 = r10
        r3 += -16
        r4 = 16
        call {id}
        {ret}"""),
    "xdp_store_bytes": ("xdp", """
        r2 = 0x01020304
        *(u32 *)(r10 - 4) = r2
        r2 = 20
        r3 = r10
        r3 += -4
        r4 = 4
        call {id}
        {ret}"""),
    "skb_load_bytes": ("sched_cls", """
        r2 = 14
        r3 = r10
        r3 += -16
        r4 = 16
        call {id}
        {ret}"""),
    # two calls (the head 8 bytes down and back, so repeated runs see the same packet): the
    # figure is ns per pair
    "xdp_adjust_head": ("xdp", """
        r6 = r1
        r2 = -8
        call {id}
        r1 = r6
        r2 = 8
        call {id}
        {ret}"""),
    "csum_diff": ("sched_cls", """
        r1 = 0x0a000001
        *(u32 *)(r10 - 4) = r1
        r1 = 0x0a000002
        *(u32 *)(r10 - 8) = r1
        *(u32 *)(r10 - 12) = r1
        *(u32 *)(r10 - 16) = r1
        *(u32 *)(r10 - 20) = r1
        r1 = r10
        r1 += -4
        r2 = 4
        r3 = r10
        r3 += -20
        r4 = 16
        r5 = 0
        call {id}
        {ret}"""),
}
EMPTY = """
        r0 = 0
        exit"""


def _program(body: str, hid: int | None):
    ret = "exit" if hid is not None else ""
    text = body.format(id=hid, ret=ret) if hid is not None else EMPTY
    return pybpf.assemble(text)


def _bridged_vm(name: str) -> VM:
    """A VM whose ``name`` helper is registered under another name: the JIT calls it through
    the Python bridge (jit/native_packet.py picks helpers by name)."""
    vm = VM()
    h = vm.helpers.get(HELPER_IDS[name])
    vm.helpers.add(dataclasses.replace(h, name=name + "_via_bridge"))
    return vm


def _ns(lp, repeat: int) -> float:
    lp.test_run(data=PACKET, repeat=10)
    return median_of(lambda: lp.test_run(data=PACKET, repeat=repeat)[1], 5)


def _one(name: str, quick: bool) -> dict:
    ptype, body = CALLS[name]
    repeat = 2000 if quick else 20000
    prog = _program(body, HELPER_IDS[name])
    out = {"helper": name}
    results = []
    for label, vm in (("native", VM()), ("bridge", _bridged_vm(name))):
        with vm.load(prog, prog_type=ptype, engine="jit", tier="O2") as lp:
            r0 = lp.run(data=PACKET)
            results.append((r0, lp.last_data))
            out[f"{label}_run_ns"] = _ns(lp, repeat)
    if results[0] != results[1]:
        raise BPFError(f"bench_pkt_helpers: {name} native {results[0]} != bridge {results[1]}")
    with VM().load(_program(body, None), prog_type=ptype, engine="jit", tier="O2") as le:
        out["empty_run_ns"] = _ns(le, repeat)
    for label in ("native", "bridge"):
        out[f"{label}_call_ns"] = max(out[f"{label}_run_ns"] - out["empty_run_ns"], 0.01)
    out["ratio"] = out["bridge_call_ns"] / out["native_call_ns"]
    return out


def run(report=None, quick: bool = False) -> dict:
    say = report or (lambda line: None)
    out = {}
    with gc_paused():
        for name in CALLS:
            out[name] = r = _one(name, quick)
            say(f"{name}: native {r['native_call_ns']:.1f} ns/call, bridge "
                f"{r['bridge_call_ns']:.1f} ns/call ({r['ratio']:.1f}x)")
    return out


def format_table(results: dict) -> str:
    lines = []
    for name, r in results.items():
        lines.append(f"{name}: native {r['native_call_ns']:.1f} ns per call, through the Python "
                     f"bridge {r['bridge_call_ns']:.1f} ns ({r['ratio']:.1f}x); run overhead "
                     f"{r['empty_run_ns']:.1f} ns")
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, format_table)
