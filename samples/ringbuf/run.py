"""Drive samples/c/ringbuf.o: BPF produces events into a ring buffer, Python consumes them.

    python samples/ringbuf/run.py --engine interp [--count 6] [--seed 1]

``produce`` writes ``--count`` events (even ones reserved + submitted in place, odd ones copied
with bpf_ringbuf_output); Python reads the records in order and checks each against the
program's LCG. A second run with more events than the 4 KiB ring holds shows the drops.
Exit status 0 when every check holds, 1 otherwise.
"""
from __future__ import annotations

import os
import struct
import sys

import pybpf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _driver  # noqa: E402  (samples/_driver.py: the shared command line)

OBJ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "c", "ringbuf.o")
EVENT = struct.Struct("<IIQ16s")      # struct event {u32 seq; u32 kind; u64 value; char tag[16];}
MUL, ADD = 6364136223846793005, 1442695040888963407


def expected(count: int, seed: int) -> list[tuple]:
    out, value = [], seed
    for i in range(count):
        value = (value * MUL + ADD) % 2**64
        out.append((i, 1 if i % 2 == 0 else 2, value, b"pybpf-ringbuf\0\0\0"))
    return out


def run_sample(engine: str = "interp", count: int = 6, seed: int = 1, say=print) -> dict:
    obj = pybpf.load_elf(OBJ)
    rb, v = obj.maps["events"], obj.variables
    lp = obj.vm.load(obj.programs["produce"], engine=engine)
    out = {"ok": True}

    def check(name: str, cond: bool) -> None:
        out["ok"] &= bool(cond)
        say(f"  {'ok  ' if cond else 'FAIL'} {name}")

    check(f"produce returns {count}", lp.run(ctx=struct.pack("<II", count, seed)) == count)
    events = [EVENT.unpack(rec) for rec in rb]
    for seq, kind, value, tag in events[:8]:
        say(f"    seq {seq:3} {'reserved' if kind == 1 else 'copied  '} value 0x{value:016x} "
            f"{tag.rstrip(bytes(1)).decode()}")
    check("Python consumed every event, in order, with the LCG's values",
          events == expected(count, seed))
    check("the ring is empty after consuming", rb.avail_data == 0)

    # 40-byte records (8-byte header + 32-byte event) in a 4096-byte ring: about 100 fit.
    v["produced"].value = v["dropped"].value = 0
    made = lp.run(ctx=struct.pack("<II", 1000, seed))
    got = rb.consume()
    out.update(produced=made, dropped=v["dropped"].value, consumed=len(got))
    check(f"a burst of 1000 events: {made} fit, {v['dropped'].value} dropped, "
          f"{len(got)} consumed", made + v["dropped"].value == 1000 and len(got) == made
          and [EVENT.unpack(r)[0] for r in got] == list(range(made)))
    lp.close()
    return out


OPTIONS = (
    ("--count", dict(type=int, default=6)),
    ("--seed", dict(type=int, default=1)),
)


def main(argv=None) -> int:
    return _driver.main(__doc__, run_sample, OPTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())
