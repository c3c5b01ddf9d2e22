"""Drive samples/c/socket_count.o: an old-style socket filter counting IPv4 packets per protocol.

    python samples/socket_count/run.py --engine interp [--verbose]

Runs Ethernet frames built in Python through the filter as BPF_PROG_TEST_RUN does: the filter
sees each packet from its IP header (LD_ABS offsets and skb->len start there) and the packet
comes back with the Ethernet header zeroed, the kernel's data_out. UDP and TCP are kept
whole (the filter returns -1: keep every byte), IGMP is rejected (0 bytes kept), ARP is not
counted. Then checks ``proto_count`` (array), ``proto_bytes`` (hash) and, with ``--verbose``
(the ``verbose`` global), the bpf_trace_printk lines. Exit status 0 when every check holds.
"""
from __future__ import annotations

import os
import struct
import sys

import pybpf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _driver  # noqa: E402  (samples/_driver.py: the shared command line)

OBJ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "c", "socket_count.o")


def frame(ethertype: int, proto: int = 17, payload: int = 8) -> bytes:
    eth = b"\xff" * 6 + b"\x02" * 6 + struct.pack(">H", ethertype)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + payload, 0, 0, 64, proto, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return eth + ip + bytes(payload)


def run_sample(engine: str = "interp", verbose: bool = True, say=print) -> dict:
    obj = pybpf.load_elf(OBJ)
    obj.variables["verbose"].value = int(verbose)
    lp = obj.vm.load(obj.programs["socket_count"], engine=engine)
    frames = [("UDP", frame(0x0800, 17), True), ("TCP", frame(0x0800, 6, 20), True),
              ("UDP", frame(0x0800, 17, 100), True), ("IGMP", frame(0x0800, 2), False),
              ("ARP", frame(0x0806), True)]
    out = {"ok": True}
    for what, pkt, keep in frames:
        r0 = lp.run(data=pkt)
        kept = lp.last_data
        ok = (r0 == 0xFFFFFFFF) == keep and kept == bytes(14) + pkt[14:]
        out["ok"] &= ok
        say(f"  {'ok  ' if ok else 'FAIL'} {what:<5} {len(pkt):4} bytes -> filter returns "
            f"0x{r0:x} ({'keep' if r0 else 'drop'})")
    counts = {p: int.from_bytes(obj.maps["proto_count"][p], "little") for p in (2, 6, 17)}
    nbytes = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
              for k, v in obj.maps["proto_bytes"].items()}
    ip_len = [len(pkt) - 14 for _, pkt, _ in frames]      # skb->len: from the IP header
    want_bytes = {17: ip_len[0] + ip_len[2], 6: ip_len[1], 2: ip_len[3]}
    ok = counts == {2: 1, 6: 1, 17: 2} and nbytes == want_bytes
    out["ok"] &= ok
    say(f"  {'ok  ' if ok else 'FAIL'} proto_count {counts}, proto_bytes {nbytes}")
    lines = obj.vm.trace_output()
    for line in lines:
        say(f"    trace_printk: {line}")
    if verbose:
        ok = lines == [f"proto {p} len {len(pkt) - 14}" for (w, pkt, _), p in
                       zip(frames[:4], (17, 6, 17, 2))]
        out["ok"] &= ok
        say(f"  {'ok  ' if ok else 'FAIL'} bpf_trace_printk output captured")
    lp.close()
    return out


OPTIONS = (("--quiet", dict(action="store_true", help="leave the verbose global at 0")),)


def main(argv=None) -> int:
    return _driver.main(__doc__, lambda engine, quiet: run_sample(engine, not quiet), OPTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())
