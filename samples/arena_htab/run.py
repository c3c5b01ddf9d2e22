"""Drive samples/c/arena_htab.o: a hash table in a bpf_arena, shared by BPF and Python.

    python samples/arena_htab/run.py --engine interp [--keys 10000] [--buckets 256]

1. BPF inserts ``--keys`` keys (htab_insert_prog, value = 3 * key + 1);
2. Python walks the buckets through the 64-bit pointers BPF wrote and finds every key;
3. Python builds a table of its own in a page it allocates in the arena, publishes it in the
   arena global ``user_table``, and BPF (htab_query) finds its keys;
4. BPF deletes the odd keys (htab_delete_prog) and Python sees exactly the even ones;
5. the arena's pages: allocated by BPF, by Python, freed by Python.

Exit status 0 when every check holds, 1 otherwise (also when the engine cannot run the
sample, e.g. ``--engine jit`` before the JIT supports arena kfuncs).
"""
from __future__ import annotations

import os
import struct
import sys

import pybpf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _driver  # noqa: E402  (samples/_driver.py: the shared command line)

OBJ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "c", "arena_htab.o")
PAGE = 4096
PROGS = ("htab_insert_prog", "htab_lookup_prog", "htab_delete_prog", "htab_query")


def bucket(key: int, n_buckets: int) -> int:
    """The sample's hash: (u32)((key * 0x9E3779B97F4A7C15) >> 32) & (n_buckets - 1)."""
    return ((key * 0x9E3779B97F4A7C15 % 2**64) >> 32) & (n_buckets - 1)


def walk(arena, htab: int) -> tuple[int, dict]:
    """(count field, {key: value}) of a table: struct htab {u32 n_buckets; u32 count;
    u64 buckets[]}, struct htab_elem {u64 next; u64 key; u64 value}."""
    n_buckets, count = struct.unpack("<II", arena.read(htab, 8))
    items = {}
    for b in range(n_buckets):
        e = arena.follow(htab + 8 + 8 * b, 0)          # *(u64 *)&buckets[b]
        while e:
            e, key, value = struct.unpack("<QQQ", arena.read(e, 24))
            items[key] = value
    return count, items


def build_table(arena, page: int, table: dict, n_buckets: int) -> None:
    """Write a table with the sample's layout into one arena page, elements after the header."""
    buckets = [0] * n_buckets
    elem = page + 8 + 8 * n_buckets
    for key, value in table.items():
        b = bucket(key, n_buckets)
        arena.write(elem, struct.pack("<QQQ", buckets[b], key, value))
        buckets[b], elem = elem, elem + 24
    assert elem <= page + PAGE, "the Python table must fit in its page"
    arena.write(page, struct.pack("<II", n_buckets, len(table)) +
                struct.pack(f"<{n_buckets}Q", *buckets))


def run_sample(engine: str = "interp", keys: int = 10000, buckets: int = 256, say=print) -> dict:
    """Run every step; returns the findings (``ok`` is True when every check held)."""
    obj = pybpf.load_elf(OBJ)
    obj.variables["n_buckets"].value = buckets
    vm, arena, v = obj.vm, obj.maps["arena"], obj.variables
    progs = {n: vm.load(obj.programs[n], engine=engine) for n in PROGS}
    out = {"ok": True}

    def check(name: str, cond: bool) -> None:
        out[name] = bool(cond)
        out["ok"] &= bool(cond)
        say(f"  {'ok  ' if cond else 'FAIL'} {name}")

    say(f"1. BPF inserts {keys} keys")
    args = bytearray(16)
    bad = 0
    for k in range(keys):
        struct.pack_into("<QQ", args, 0, k, 3 * k + 1)
        bad += progs["htab_insert_prog"].run(ctx=args) != 0
    check("every insert returned 0", bad == 0)
    out["bpf_pages"] = arena.pages_allocated

    say("2. Python walks the table BPF built")
    htab = v["htab_for_user"].value
    count, items = walk(arena, htab)
    check(f"Python finds all {keys} keys with their values",
          count == keys and items == {k: 3 * k + 1 for k in range(keys)})
    args[:] = struct.pack("<QQ", keys // 2, 0)
    r = progs["htab_lookup_prog"].run(ctx=args)
    check("BPF looks one up and writes the value into its context",
          r == 0 and struct.unpack("<QQ", args)[1] == 3 * (keys // 2) + 1)

    say("3. Python builds a table; BPF looks its keys up")
    page = arena.alloc_pages(0, 1)            # the kfunc's semantics, from Python
    check("Python got a page from the arena", page != 0)
    table = {k * 7 + 3: k * k + 5 for k in range(20)}
    build_table(arena, page, table, 8)
    v["user_table"].value = page
    query = list(table)[:12] + [1000003, 1000004, 5, 6]
    v["query_keys"].raw = struct.pack("<16Q", *query)
    found = progs["htab_query"].run(ctx=bytes(8))
    values = struct.unpack("<16Q", v["query_values"].raw)
    check("BPF finds the 12 keys Python inserted (and not the 4 others)",
          found == 12 and list(values) == [table.get(k, 0) for k in query])

    say("4. BPF deletes the odd keys")
    bad = 0
    for k in range(1, keys, 2):
        args[:] = struct.pack("<QQ", k, 0)
        bad += progs["htab_delete_prog"].run(ctx=args) != 0
    check("every delete returned 0", bad == 0)
    count, items = walk(arena, htab)
    check("Python sees exactly the even keys",
          count == len(items) and items == {k: 3 * k + 1 for k in range(0, keys, 2)})

    say("5. arena pages")
    out["pages"] = arena.pages_allocated
    say(f"  allocated: {out['bpf_pages']} after the inserts (the globals' page, the allocator's "
        f"guard page, the table, the elements), {out['pages'] - out['bpf_pages']} by Python: "
        f"{out['pages']} of {arena.max_entries}")
    arena.free_pages(page, 1)
    out["pages_after_free"] = arena.pages_allocated
    say(f"  Python freed its page: {out['pages_after_free']} allocated")
    check("a freed page reads back as zero", arena.read(page, 16) == bytes(16))
    for lp in progs.values():
        lp.close()
    return out


OPTIONS = (
    ("--keys", dict(type=int, default=10000, help="keys BPF inserts (<= 10000)")),
    ("--buckets", dict(type=int, default=256, help="a power of two below 512")),
)


def main(argv=None) -> int:
    return _driver.main(__doc__, run_sample, OPTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())
