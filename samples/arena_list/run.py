"""Drive samples/c/arena_list.o: a linked list in a bpf_arena, built by BPF, read by Python.

    python samples/arena_list/run.py --engine interp [--count 10]

arena_list_add appends ``--count`` elements through a bpf_loop callback, arena_list_sum walks
the list in BPF, Python follows the same 64-bit pointers from ``list_head``, and arena_list_del
moves every element to a free list that the next add reuses (no new pages).
Exit status 0 when every check holds, 1 otherwise.
"""
from __future__ import annotations

import os
import struct
import sys

import pybpf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _driver  # noqa: E402  (samples/_driver.py: the shared command line)

OBJ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "c", "arena_list.o")


def follow(arena, head: int) -> list[int]:
    """Values of the list from ``head``: struct elem {u64 next; u64 value;}."""
    values = []
    while head:
        head, value = struct.unpack("<QQ", arena.read(head, 16))
        values.append(value)
    return values


def run_sample(engine: str = "interp", count: int = 10, say=print) -> dict:
    obj = pybpf.load_elf(OBJ)
    obj.variables["cnt"].value = count
    vm, arena, v = obj.vm, obj.maps["arena"], obj.variables
    add, total, delete = (vm.load(obj.programs[n], engine=engine)
                          for n in ("arena_list_add", "arena_list_sum", "arena_list_del"))
    out = {"ok": True}

    def check(name: str, cond: bool) -> None:
        out[name] = bool(cond)
        out["ok"] &= bool(cond)
        say(f"  {'ok  ' if cond else 'FAIL'} {name}")

    want = sum(range(count))
    check(f"arena_list_add ran the callback {count} times", add.run(ctx=bytes(8)) == count)
    check("arena_list_sum walks the same length", total.run(ctx=bytes(8)) == count)
    check(f"both sums are {want}", v["list_sum"].value == want == v["arena_sum"].value)
    values = follow(arena, v["list_head"].value)
    shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
    say(f"  Python follows list_head: {shown}")
    check("Python sees the values newest first", values == list(range(count - 1, -1, -1)))
    pages = arena.pages_allocated
    check("arena_list_del frees every element", delete.run(ctx=bytes(8)) == count)
    check("the list is empty and the sum 0",
          v["list_head"].value == 0 and v["arena_sum"].value == 0)
    check("a second add reuses the free list", add.run(ctx=bytes(8)) == count
          and arena.pages_allocated == pages and follow(arena, v["list_head"].value) ==
          list(range(count - 1, -1, -1)))
    out["pages"] = arena.pages_allocated
    say(f"  arena pages allocated: {out['pages']} of {arena.max_entries}")
    return out


OPTIONS = (
    ("--count", dict(type=int, default=10)),
)


def main(argv=None) -> int:
    return _driver.main(__doc__, run_sample, OPTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())
