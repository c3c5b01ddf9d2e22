"""Placement inspection (jit/placement.py): the report, its text table, the SVG picture, and the
issue-4 promise that 1,000 small programs share one huge-page pack under W^X.

Placement reports of hand-made allocations run here (no code is executed). Everything that
loads programs through the VM runs in a child Python that prints one JSON line.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from pybpf.jit.execmem import PackAllocator
from pybpf.jit.placement import (format_placement, placement, placement_svg,
                                 thp_settings)

from support import run_code

pytestmark = pytest.mark.jit

SVG = "{http://www.w3.org/2000/svg}"
PACK = 2 << 20


def run_child(code: str, timeout: float = 120) -> dict:
    p = run_code(code, timeout=timeout, env={"PYBPF_EXECMEM_BACKEND": None})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def pa():
    a = PackAllocator(backend="memfd")      # no huge pages (shmem THP is usually off) either way
    yield a
    a.close()


def _place(pa, sizes):
    out = []
    for i, size in enumerate(sizes):
        a = pa.alloc(size, name=f"p{i}")
        pa.fill(a, b"\xc3" * size)
        out.append(a)
    return out


# -- the report, without running anything -----------------------------------------------------

def test_report_lists_programs_free_runs_and_utilisation(pa):
    allocs = _place(pa, [10, 64, 65, 300, 1])          # 1, 1, 2, 5, 1 chunks
    pa.free(allocs[1])                                  # a one-chunk hole at offset 64
    rep = placement(pa)
    assert rep["backend"] == "memfd" and rep["chunk"] == 64 and rep["pack_size"] == PACK
    (pack,) = rep["packs"]
    got = [(p["name"], p["offset"], p["size"], p["chunks"]) for p in pack["programs"]]
    assert got == [("p0", 0, 10, 1), ("p2", 128, 65, 2), ("p3", 256, 300, 5),
                   ("p4", 576, 1, 1)]
    for p in pack["programs"]:
        assert p["address"] == pack["address"] + p["offset"] and p["runtime"] is False
    assert pack["used_chunks"] == 9
    assert pack["free_ranges"] == [(64, 64), (640, PACK - 640)]
    assert pack["free_bytes"] == PACK - 9 * 64 == rep["free_bytes"]
    assert pack["largest_free"] == PACK - 640
    assert pack["utilisation"] == pytest.approx(9 / (PACK // 64)) == rep["utilisation"]
    assert pack["aligned"] is True and pack["address"] % PACK == 0
    assert rep["programs"] == 4 and rep["used_bytes"] == 9 * 64
    assert rep["counters"]["allocs"] == 5 and rep["counters"]["frees"] == 1
    assert set(rep["thp"]) == {"enabled", "shmem_enabled"}


def test_huge_page_state_follows_smaps(pa):
    _place(pa, [100])
    pack = placement(pa)["packs"][0]
    # memfd needs shmem THP; the state must agree with what smaps said
    if pack["huge_pages_kb"] >= 2048:
        assert pack["huge_page"] == "huge"
    else:
        assert pack["huge_page"].startswith(("4 KiB pages", "partly huge"))


def test_dedicated_mapping_and_empty_allocator():
    pa = PackAllocator(backend="procmem", pack_size=64 << 10)
    try:
        assert placement(pa)["packs"] == [] and placement(pa)["utilisation"] == 0.0
        big = pa.alloc((64 << 10) + 1, name="big")
        rep = placement(pa)
        assert rep["packs"] == [] and [d["name"] for d in rep["dedicated"]] == ["big"]
        assert "dedicated" in format_placement(rep) and "big" in format_placement(rep)
        pa.free(big)
    finally:
        pa.close()


def test_text_table_names_programs_and_marks_highlight(pa):
    allocs = _place(pa, [10, 200])
    text = format_placement(placement(pa), highlight=[allocs[1].address])
    assert "memfd" in text and "1 pack(s)" in text
    line = next(l for l in text.splitlines() if l.rstrip().endswith(" p1"))
    assert line.lstrip().startswith("*") and "0x00000040" in line and " 200 " in line
    assert not next(l for l in text.splitlines() if l.rstrip().endswith(" p0")).lstrip() \
        .startswith("*")
    assert "permission_changes 0" in text                # memfd never changes permissions


def test_svg_is_valid_and_has_one_group_per_program(pa):
    allocs = _place(pa, [10, 64, 65, 300, 1, 4000])
    pa.free(allocs[2])
    rep = placement(pa)
    root = ET.fromstring(placement_svg(rep))
    assert root.tag == SVG + "svg"
    groups = root.findall(f".//{SVG}g[@class='program']")
    assert [g.get("data-name") for g in groups] == ["p0", "p1", "p3", "p4", "p5"]
    by_name = {p["name"]: p for p in rep["packs"][0]["programs"]}
    colours = set()
    for g in groups:
        p = by_name[g.get("data-name")]
        assert int(g.get("data-offset")) == p["offset"] and int(g.get("data-chunks")) == p["chunks"]
        rects = g.findall(f"{SVG}rect")
        # the detail view draws each chunk as its own cell, plus the overview's run(s)
        assert len(rects) >= p["chunks"] + 1
        fills = {r.get("fill") for r in rects}
        assert len(fills) == 1
        colours |= fills
    assert len(colours) == len(groups)                  # a colour per program
    assert "#d9d9d9" not in colours                     # grey is for free chunks
    free_cells = root.findall(f".//{SVG}g[@class='free-chunks']/{SVG}rect")
    assert free_cells and all(r.get("fill") == "#d9d9d9" for r in free_cells)
    # the detail view covers whole pages up to the last used chunk; the rest of its cells,
    # the freed p2's two among them, are free
    top = max(p["offset"] // 64 + p["chunks"] for p in by_name.values())
    used = sum(p["chunks"] for p in by_name.values())
    assert len(free_cells) == -(-top // 64) * 64 - used
    # the pack's 2 MiB boundaries and its huge-page border are drawn
    assert len(root.findall(f".//{SVG}path[@class='huge-boundary']")) == 2
    border = root.find(f".//{SVG}rect[@class='huge-page']")
    huge = rep["packs"][0]["huge_page"] == "huge"
    assert (border.get("stroke-dasharray") is None) == huge


def test_svg_of_nothing_is_still_a_picture():
    pa = PackAllocator(backend="procmem")
    try:
        root = ET.fromstring(placement_svg(placement(pa)))
        assert root.findall(f".//{SVG}g[@class='program']") == []
        assert "nothing is loaded" in "".join(root.itertext())
    finally:
        pa.close()


def test_thp_settings_reads_the_bracketed_mode():
    thp = thp_settings()
    if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            assert f"[{thp['enabled']}]" in f.read()


# -- through the VM, in a child ---------------------------------------------------------------

def test_placement_after_vm_loads_and_closes():
    out = run_child("""
        import json, pybpf, pybpf.jit
        from pybpf.vm import VM
        vm = VM()
        # -O2 loads: one allocation per program (tiered loads add entry stubs and swaps)
        lps = [vm.load(pybpf.assemble(f"r0 = {i}\\nr0 += r2\\nexit"), engine="jit",
                       name=f"prog{i}", tier="O2") for i in range(5)]
        ran = [lp.run(mem=b"abc") for lp in lps]
        during = pybpf.jit.placement()
        lps[1].close(); lps[3].close()
        after = pybpf.jit.placement()
        for lp in lps: lp.close()
        print(json.dumps({"ran": ran, "during": during, "after": after,
                          "end": pybpf.jit.placement()}))
    """)
    assert out["ran"] == [i + 3 for i in range(5)]
    (pack,) = out["during"]["packs"]
    names = [p["name"] for p in pack["programs"]]
    assert names == [f"prog{i}" for i in range(5)]
    offsets = [p["offset"] for p in pack["programs"]]
    assert offsets == sorted(offsets) and len(set(offsets)) == 5
    for p in pack["programs"]:
        assert p["address"] == pack["address"] + p["offset"]
        assert p["chunks"] == -(-p["size"] // 64) and 0 < p["size"] <= 64
    assert out["during"]["counters"]["programs"] == 5
    assert [p["name"] for p in out["after"]["packs"][0]["programs"]] == ["prog0", "prog2",
                                                                        "prog4"]
    assert out["after"]["packs"][0]["free_bytes"] > pack["free_bytes"]
    assert out["end"]["packs"] == [] and out["end"]["counters"]["packs_released"] == 1


THOUSAND = """
    import json, random, threading, time
    import pybpf, pybpf.jit
    from pybpf.jit.execmem import wx_mappings
    from pybpf.jit.placement import sample_programs
    from pybpf.vm import VM

    t_start = time.perf_counter()
    progs = sample_programs(1000, seed=4)
    stop, hits, samples = threading.Event(), [], [0]

    def sampler():
        while not stop.is_set():
            found = wx_mappings()
            if found:
                hits.extend(found)
            samples[0] += 1
            time.sleep(0.0005)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    vm = VM()
    # -O2 loads: one allocation per program (a tiered load adds an entry stub)
    lps = [vm.load(progs[0], engine="jit", tier="O2")]
    after_first = pybpf.jit.placement()["counters"]
    lps += [vm.load(p, engine="jit", tier="O2") for p in progs[1:]]
    t_loaded = time.perf_counter()
    full = pybpf.jit.placement()
    runs = [lp.run(mem=bytes(5)) for lp in lps]
    interp = [vm.load(progs[i], engine="interp").run(mem=bytes(5)) for i in range(0, 1000, 50)]
    order = list(range(1000))
    random.Random(1).shuffle(order)
    for i in order:
        lps[i].close()
    stop.set()
    th.join()
    end = pybpf.jit.placement()
    with open("/proc/self/maps") as f:
        maps = f.read()
    pack_lines = [l for l in maps.splitlines()
                  if int(l.split("-")[0], 16) == full["packs"][0]["address"]
                  and "x" in l.split()[1]]
    print(json.dumps({
        "after_first": after_first, "full": full, "end": end, "wx_hits": hits,
        "wx_end": wx_mappings(), "samples": samples[0], "pack_still_mapped": pack_lines,
        "runs_sampled": runs[::50], "interp": interp,
        "load_s": t_loaded - t_start, "total_s": time.perf_counter() - t_start}))
"""


@pytest.mark.slow
def test_thousand_programs_one_huge_pack_wx_and_release():
    out = run_child(THOUSAND, timeout=600)
    full, end, first = out["full"], out["end"], out["after_first"]
    # all 1,000 at once in one 2 MiB pack, 2 MiB aligned
    assert full["programs"] == 1000 and len(full["packs"]) == 1 and full["dedicated"] == []
    (pack,) = full["packs"]
    assert len(pack["programs"]) == 1000 and pack["size"] == PACK and pack["aligned"]
    assert len({p["name"] for p in pack["programs"]}) == 1000
    # ...backed by one huge page where THP can back it
    if full["thp_possible"]:
        assert pack["huge_pages_kb"] == 2048 and pack["huge_page"] == "huge", pack["huge_page"]
    # the W^X write paths change no permission after the pack was created
    assert full["backend"] in ("procmem", "memfd")
    assert first["packs_created"] == 1
    assert full["counters"]["permission_changes"] == first["permission_changes"]
    assert end["counters"]["permission_changes"] == first["permission_changes"]
    # the code ran and agrees with the interpreter
    assert out["runs_sampled"] == out["interp"]
    # never writable and executable, during the loads and unloads or at the end
    assert out["samples"] > 100, out["samples"]
    assert out["wx_hits"] == [] and out["wx_end"] == []
    # unloading everything released the pack, or left only pybpf's own runtime code (shared
    # native helpers) in one
    left = [p for pk in end["packs"] for p in pk["programs"]] + end["dedicated"]
    assert all(p["runtime"] for p in left), left
    assert len(end["packs"]) <= 1 and end["counters"]["packs_created"] == 1
    if not left:
        assert end["packs"] == [] and end["counters"]["packs_released"] == 1
        assert out["pack_still_mapped"] == []
    # (no wall-clock bound here: on a loaded 2-core machine this took 82-112 s; the load latency
    # is benchmarks/bench_compile.py's figure, and the child's timeout still stops a hang)


def test_program_placement_and_listing_without_capstone():
    out = run_child("""
        import json, sys
        sys.modules["capstone"] = None          # as if pybpf[disasm] were not installed
        import pybpf
        from pybpf.jit import compile_program
        from pybpf.jit.placement import native_listing, program_placement
        prog = pybpf.assemble("r0 = r2\\nr0 *= 7\\nexit")
        with compile_program(prog, name="seven", want_asm=True) as jp:
            where = program_placement(jp)
            listing = native_listing(jp)
            r0 = jp.run(0, 6)
            entry, alloc = jp.address, jp.allocation.address
        with compile_program(prog, name="noasm") as jp:
            try:
                native_listing(jp)
                err = None
            except pybpf.JITError as e:
                err = str(e)
        print(json.dumps({"where": where, "listing": listing, "r0": r0, "entry": entry,
                          "alloc": alloc, "err": err}))
    """)
    w = out["where"]
    assert out["r0"] == 42
    assert w["name"] == "seven" and w["symbol"] == "bpf_main" and w["entry"] == out["entry"]
    assert w["address"] == out["alloc"] == w["pack"] + w["offset"]
    assert w["chunks"] == -(-w["size"] // 64) and w["text_size"] == w["size"]
    assert "from LLVM (AT&T syntax)" in out["listing"] and "bpf_main:" in out["listing"]
    assert "want_asm=True" in out["err"]
