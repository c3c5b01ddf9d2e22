"""Drive samples/c/xdp_filter.o: an XDP port filter run against packets built in Python.

    python samples/xdp_filter/run.py --engine interp [--block 53]

Blocks the given UDP/TCP destination ports (the ``blocked_ports`` hash map), runs seven packets
(IPv4/IPv6, TCP/UDP, ARP, ICMP, a bad IPv4 header) through the program, one ``lp.run(data=...)``
each, and checks every verdict and the counters in ``action_count`` and the ``stats`` global.
Exit status 0 when every check holds, 1 otherwise.
"""
from __future__ import annotations

import os
import struct
import sys

import pybpf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _driver  # noqa: E402  (samples/_driver.py: the shared command line)
from pybpf.uapi import XDP_ACTIONS

OBJ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "c", "xdp_filter.o")


def packet(ethertype: int, proto: int = 17, dport: int = 80, ihl: int = 5) -> bytes:
    """Ethernet + IPv4 (header length ``ihl`` words) or IPv6 + an 8-byte UDP/TCP start."""
    eth = b"\x02" * 6 + b"\x04" * 6 + struct.pack(">H", ethertype)
    if ethertype == 0x86DD:
        ip = struct.pack(">IHBB", 6 << 28, 8, proto, 64) + bytes(32)
    else:
        ip = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, 28, 0, 0, 64, proto, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        ip += bytes(max(4 * ihl - 20, 0))
    return eth + ip + struct.pack(">HHHH", 1234, dport, 8, 0) + bytes(16)


def cases(blocked: int) -> list[tuple[str, bytes, int]]:
    """(description, packet, expected XDP action)."""
    return [(f"IPv4 UDP to port {blocked}", packet(0x0800, 17, blocked), 1),
            ("IPv4 TCP to port 80", packet(0x0800, 6, 80), 2),
            (f"IPv6 UDP to port {blocked}", packet(0x86DD, 17, blocked), 1),
            ("ARP", packet(0x0806), 2),
            ("IPv4 ICMP", packet(0x0800, 1), 2),
            ("IPv4 with a 16-byte header (malformed)", packet(0x0800, 17, blocked, ihl=4), 0),
            (f"IPv4 with options, TCP to port {blocked}", packet(0x0800, 6, blocked, ihl=6), 1)]


def run_sample(engine: str = "interp", blocked: int = 53, say=print) -> dict:
    obj = pybpf.load_elf(OBJ)
    obj.maps["blocked_ports"][struct.pack("<H", blocked)] = b"\x01"
    lp = obj.vm.load(obj.programs["xdp_filter"], engine=engine)
    out = {"ok": True, "verdicts": []}
    for what, pkt, want in cases(blocked):
        got = lp.run(data=pkt)
        out["verdicts"].append(got)
        ok = got == want and lp.last_data == pkt
        out["ok"] &= ok
        say(f"  {'ok  ' if ok else 'FAIL'} {what:<42} {XDP_ACTIONS[got] if got < 5 else got}")
    counts = [int.from_bytes(obj.maps["action_count"][a], "little") for a in range(3)]
    packets, nbytes, dropped, malformed = struct.unpack("<4Q", obj.variables["stats"].raw)
    n = len(out["verdicts"])
    ok = (counts == [out["verdicts"].count(a) for a in range(3)] and packets == n
          and dropped == counts[1] and malformed == counts[0]
          and nbytes == sum(len(p) for _, p, _ in cases(blocked)))
    out["ok"] &= ok
    out.update(counts=counts, stats=(packets, nbytes, dropped, malformed))
    say(f"  {'ok  ' if ok else 'FAIL'} action_count {dict(zip(XDP_ACTIONS, counts))}, stats: "
        f"{packets} packets, {nbytes} bytes, {dropped} dropped, {malformed} malformed")
    lp.close()
    return out


OPTIONS = (
    ("--block", dict(type=int, default=53, help="destination port to drop")),
)


def main(argv=None) -> int:
    return _driver.main(__doc__, run_sample, OPTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())
