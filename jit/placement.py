"""Where JIT'd code landed: the pack allocator's placement as data, as text and as a picture.

* :func:`placement` (also ``pybpf.jit.placement()``): every pack with each program's name,
  address, offset, size and chunks, the free space (total, runs, largest run), utilisation, the
  huge-page state of each mapping, the system's THP settings and the allocator's counters;
* :func:`program_placement`: the same for one :class:`~pybpf.jit.program.JitProgram`;
* :func:`format_placement`, :func:`format_program_placement`: the report as the table
  ``pybpf packs`` and ``pybpf jit --show placement`` print;
* :func:`placement_svg`: one picture per pack (every 64-byte chunk a cell coloured per program,
  free chunks grey, the 2 MiB huge-page boundary and backing marked) next to a table, as SVG
  written by hand (no dependency);
* :func:`native_listing`: the x86-64 code of a placed program at its real addresses (capstone when
  installed, else LLVM's own assembly output);
* :func:`sample_programs`: the workload ``pybpf packs`` loads.

Reading ``pybpf.jit.placement`` gives the function (the package re-exports it over this
module's name); import from here with ``from pybpf.jit.placement import ...``.
"""
from __future__ import annotations

import bisect
import colorsys
import ctypes
import random
import re
from xml.sax.saxutils import escape, quoteattr

from pybpf.errors import JITError
from pybpf.jit import native

HUGE = 2 << 20
THP_DIR = "/sys/kernel/mm/transparent_hugepage"
# Allocations pybpf makes for itself (the test_run driver lives as long as the process).
RUNTIME_NAMES = native.RUNTIME_ALLOCATIONS

__all__ = ["placement", "program_placement", "format_placement", "format_program_placement",
           "placement_svg",
           "native_listing", "sample_programs", "thp_settings", "RUNTIME_NAMES"]


# -- the report --------------------------------------------------------------------------------

def thp_settings() -> dict:
    """The kernel's transparent-huge-page modes: ``enabled`` (anonymous memory, used by the
    procmem and mprotect paths) and ``shmem_enabled`` (memfd); None where unreadable."""
    out = {}
    for key in ("enabled", "shmem_enabled"):
        try:
            with open(f"{THP_DIR}/{key}") as f:
                text = f.read()
            out[key] = text[text.index("[") + 1:text.index("]")]
        except (OSError, ValueError):
            out[key] = None
    return out


def _thp_possible(backend: str, thp: dict) -> bool:
    if backend == "memfd":
        return thp["shmem_enabled"] in ("always", "within_size", "advise", "force")
    return thp["enabled"] in ("always", "madvise")


def _huge_state(size: int, huge_kb: int, possible: bool) -> str:
    if huge_kb * 1024 >= size:
        return "huge" if size == HUGE else f"{size // HUGE} huge pages"
    if huge_kb:
        return f"partly huge ({huge_kb} kB)"
    return "4 KiB pages" if possible else "4 KiB pages, THP off"


def _free_ranges(programs: list[dict], size: int, chunk: int) -> list[tuple[int, int]]:
    """(offset, bytes) of each run of free chunks, from the live allocations."""
    runs, at = [], 0
    for p in sorted(programs, key=lambda p: p["offset"]):
        if p["offset"] > at:
            runs.append((at, p["offset"] - at))
        at = max(at, p["offset"] + p["chunks"] * chunk)
    if at < size:
        runs.append((at, size - at))
    return runs


def placement(allocator=None) -> dict:
    """Packs, their programs, free space, utilisation, huge pages and counters.

    ``allocator`` defaults to the process's pack allocator (the one ``VM().load(...,
    engine="jit")`` places code in). Every pack entry has ``address``, ``size``, ``aligned``
    (starts on a 2 MiB boundary), ``programs`` (``name``, ``address``, ``offset``, ``size``,
    ``chunks``, ``runtime``), ``used_chunks``, ``utilisation``, ``free_bytes``, ``free_ranges``,
    ``largest_free``, ``huge_pages_kb`` and ``huge_page`` ("huge" when one 2 MiB huge page backs
    it all).
    """
    if allocator is None:
        from pybpf.jit.execmem import default_allocator

        allocator = default_allocator()
    rep = allocator.placement()
    thp = thp_settings()
    possible = _thp_possible(rep["backend"], thp)
    chunk = rep["chunk"]
    used = total = 0
    for p in rep["packs"]:
        for prog in p["programs"]:
            prog["runtime"] = prog["name"] in RUNTIME_NAMES
        p["aligned"] = p["address"] % HUGE == 0
        p["free_ranges"] = _free_ranges(p["programs"], p["size"], chunk)
        p["largest_free"] = max((n for _, n in p["free_ranges"]), default=0)
        p["huge_page"] = _huge_state(p["size"], p["huge_pages_kb"], possible)
        used += p["used_chunks"]
        total += p["size"] // chunk
    for d in rep["dedicated"]:
        d["runtime"] = d["name"] in RUNTIME_NAMES
        d["huge_page"] = _huge_state(d["mapping_size"], d["huge_pages_kb"], possible)
    from pybpf.jit import baseline

    rep.update(
        baseline=baseline.report(),
        write_path=rep["counters"]["write_path"], thp=thp, thp_possible=possible,
        programs=sum(len(p["programs"]) for p in rep["packs"]) + len(rep["dedicated"]),
        used_bytes=used * chunk, free_bytes=(total - used) * chunk,
        utilisation=used / total if total else 0.0)
    return rep


def program_placement(jp, report: dict | None = None) -> dict:
    """Where one JitProgram's code lives: its entry, its allocation and the pack around it."""
    if getattr(jp, "closed", False):
        raise JITError(f"JIT program {jp.name!r} is closed")
    a = jp.allocation
    mem = a.pack or getattr(a, "_mem", None)       # a dedicated mapping has no pack
    rep = report if report is not None else placement(getattr(mem, "owner", None))
    where = {"name": jp.name, "entry": jp.address, "symbol": jp.symbol,
             "text_size": jp.text_size, "allocation": a.name, "address": a.address,
             "size": a.size, "chunks": a.nchunks, "opt_level": jp.opt_level,
             "tier": getattr(jp, "tier", "O2"), "cache": getattr(jp, "cache", "off"),
             "backend": rep["backend"], "write_path": rep["write_path"]}
    for p in rep["packs"]:
        if p["address"] <= a.address < p["address"] + p["size"]:
            where.update(pack=p["address"], pack_size=p["size"], offset=a.address - p["address"],
                         huge_page=p["huge_page"], huge_pages_kb=p["huge_pages_kb"])
            return where
    for d in rep["dedicated"]:
        if d["address"] == a.address:
            where.update(pack=None, pack_size=d["mapping_size"], offset=0,
                         huge_page=d["huge_page"], huge_pages_kb=d["huge_pages_kb"])
            return where
    raise JITError(f"JIT program {jp.name!r} is not in the report's packs")


# -- text --------------------------------------------------------------------------------------

def _huge_text(state: str) -> str:
    return "one 2 MiB huge page" if state == "huge" else state


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def format_program_placement(where: dict) -> str:
    """One line for :func:`program_placement`'s result."""
    at = (f"pack 0x{where['pack']:x} + 0x{where['offset']:x}" if where["pack"] is not None
          else "a dedicated mapping")
    return (f"{where['name']}: entry {where['symbol']} at 0x{where['entry']:x}; "
            f"{where['text_size']} bytes of code (-O{where['opt_level']}, tier "
            f"{where['tier']}, cache {where['cache']}) in {where['chunks']} "
            f"chunk(s) at 0x{where['address']:x} = {at}, backed by "
            f"{_huge_text(where['huge_page'])}; written by {where['backend']}\n")


def format_placement(report: dict, highlight=(), limit: int | None = None) -> str:
    """The report as a table; allocations at addresses in ``highlight`` are marked ``*``.
    ``limit`` caps the program rows printed per pack."""
    thp = report["thp"]
    mark = set(highlight)
    out = [f"execmem backend {report['backend']} ({report['write_path']}); packs of "
           f"{_kib(report['pack_size'])} in {report['chunk']}-byte chunks; THP enabled="
           f"{thp['enabled']} shmem_enabled={thp['shmem_enabled']}",
           f"{len(report['packs'])} pack(s), {len(report['dedicated'])} dedicated mapping(s), "
           f"{report['programs']} allocation(s); {report['used_bytes']} B used, "
           f"{report['free_bytes']} B free in packs ({report['utilisation']:.2%} used)"]
    bl = report.get("baseline")
    if bl and (bl["baseline"] or bl["fallback"]):
        why = ", ".join(f"{k}: {v}" for k, v in sorted(bl["reasons"].items()))
        out.append(f"first tier of this process's loads: baseline {bl['baseline']}, LLVM quick "
                   f"tier (fallback) {bl['fallback']}" + (f" ({why})" if why else ""))
    for i, p in enumerate(report["packs"]):
        out.append("")
        out.append(f"pack {i}: 0x{p['address']:x}-0x{p['address'] + p['size']:x} "
                   f"({_kib(p['size'])}{', 2 MiB aligned' if p['aligned'] else ''}); backed by "
                   f"{_huge_text(p['huge_page'])} ({p['huge_pages_kb']} kB PMD-mapped)")
        out.append(f"  {len(p['programs'])} program(s) in {p['used_chunks']} chunk(s), "
                   f"{p['utilisation']:.2%} used; {p['free_bytes']} B free in "
                   f"{len(p['free_ranges'])} run(s), largest {p['largest_free']} B")
        out.append(f"    {'offset':>10} {'size':>7} {'chunks':>6}  {'address':<18} name")
        progs = p["programs"] if limit is None else p["programs"][:limit]
        for prog in progs:
            star = "*" if prog["address"] in mark else " "
            note = "  (pybpf runtime)" if prog["runtime"] else ""
            tier = f"[{prog['tier']}, cache {prog.get('cache', '-')}] " if prog.get("tier") \
                else ""
            out.append(f"  {star} 0x{prog['offset']:08x} {prog['size']:7} {prog['chunks']:6}  "
                       f"0x{prog['address']:<16x} {tier}{prog['name']}{note}")
        if len(progs) < len(p["programs"]):
            out.append(f"    ... {len(p['programs']) - len(progs)} more")
    for d in report["dedicated"]:
        star = "*" if d["address"] in mark else " "
        out.append(f"{star} dedicated 0x{d['address']:x}: {d['name']} {d['size']} B in a "
                   f"{_kib(d['mapping_size'])} mapping; backed by {_huge_text(d['huge_page'])}")
    c = report["counters"]
    keys = ("packs_created", "packs_released", "allocs", "frees", "fills", "bytes_written",
            "permission_changes", "probe_permission_changes")
    out.append("")
    out.append("counters: " + ", ".join(f"{k} {c[k]}" for k in keys if k in c))
    return "\n".join(out) + "\n"


# -- SVG ---------------------------------------------------------------------------------------

_COLS, _CELL = 256, 4                  # overview: 256 chunks (16 KiB, 4 pages) per row
_DCOLS, _DCELL, _DMAX_ROWS = 64, 12, 16  # detail: one 4 KiB page per row, first 64 KiB at most
_FREE, _GRID, _INK = "#d9d9d9", "#ffffff", "#222222"
_HUGE_OK, _HUGE_NO, _BOUNDARY = "#1b9e4b", "#e08a00", "#c0143c"
_TABLE_ROWS = 48
_ROW_H = 14


def _colour(i: int) -> str:
    """Distinct colours for neighbours: hues a golden angle apart, two lightness bands."""
    h = (i * 0.381966) % 1.0
    r, g, b = colorsys.hls_to_rgb(h, 0.50 if i % 2 else 0.62, 0.65)
    return "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))


def _rect(x, y, w, h, fill, extra="") -> str:
    return f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}"{extra}/>'


def _text(x, y, s, size=11, extra="") -> str:
    return f'<text x="{x}" y="{y}" font-size="{size}"{extra}>{escape(str(s))}</text>'


def _runs(first: int, count: int, cols: int):
    """Split chunks [first, first+count) into (row, col, length) pieces that fit a row."""
    k, end = first, first + count
    while k < end:
        row, col = divmod(k, cols)
        n = min(cols - col, end - k)
        yield row, col, n
        k += n


def _boundary_path(k: int, x0: int, y0: int, cols: int, cell: int) -> str:
    """A step line just before chunk ``k``: along its row's left part, then the row above."""
    row, col = divmod(k, cols)
    y = y0 + row * cell
    if col == 0:                        # between rows: ticks outside, the cells stay visible
        return f"M{x0 - 16},{y} H{x0 - 4} M{x0 + cols * cell + 4},{y} H{x0 + cols * cell + 16}"
    x = x0 + col * cell
    return f"M{x0 - 6},{y + cell} H{x} V{y} H{x0 + cols * cell + 6}"


def _pack_svg(p: dict, index: int, x0: int, y0: int, chunk: int, colours: dict,
              groups: dict) -> tuple[list[str], int]:
    """Draw one pack at (x0, y0); program cells go to ``groups``; returns (elements, height)."""
    nchunks = p["size"] // chunk
    rows = -(-nchunks // _COLS)
    huge = p["huge_page"] == "huge"
    el = [_text(x0, y0 + 12, f"pack {index}: 0x{p['address']:x}, {_kib(p['size'])}, "
                f"{len(p['programs'])} program(s), {p['utilisation']:.2%} used, "
                f"{p['free_bytes']} B free (largest run {p['largest_free']} B)", 13,
                ' font-weight="bold"'),
          _text(x0, y0 + 28, ("backed by one 2 MiB huge page" if huge else
                              f"huge page: {p['huge_page']} ({p['huge_pages_kb']} kB PMD-mapped)")
                + ("; starts on a 2 MiB boundary" if p["aligned"] else ""), 11,
                f' fill="{_HUGE_OK if huge else _HUGE_NO}"')]
    gy = y0 + 40
    w, h = _COLS * _CELL, rows * _CELL
    el.append(_rect(x0, gy, w, h, _FREE, ' class="free"'))
    for col in range(64, _COLS, 64):           # 4 KiB page boundaries inside each row
        el.append(f'<line x1="{x0 + col * _CELL}" y1="{gy}" x2="{x0 + col * _CELL}" '
                  f'y2="{gy + h}" stroke="{_GRID}" stroke-width="0.5"/>')
    # Where the address space crosses a 2 MiB boundary (pack edges for an aligned pack).
    first = -(-p["address"] // HUGE) * HUGE
    for b in range(first, p["address"] + p["size"] + 1, HUGE):
        k = (b - p["address"]) // chunk
        el.append(f'<path class="huge-boundary" d="{_boundary_path(k, x0, gy, _COLS, _CELL)}" '
                  f'fill="none" stroke="{_BOUNDARY}" stroke-width="2"/>')
        el.append(_text(x0 + w + 20, gy + (k // _COLS) * _CELL + 4,
                        f"2 MiB boundary 0x{b:x}", 10, f' fill="{_BOUNDARY}"'))
    dash = "" if huge else ' stroke-dasharray="6,3"'
    el.append(f'<rect class="huge-page" x="{x0 - 2}" y="{gy - 2}" width="{w + 4}" '
              f'height="{h + 4}" fill="none" stroke="{_HUGE_OK if huge else _HUGE_NO}" '
              f'stroke-width="2"{dash}/>')
    for prog in p["programs"]:
        g = groups[prog["address"]]
        for row, col, n in _runs(prog["offset"] // chunk, prog["chunks"], _COLS):
            g.append(_rect(x0 + col * _CELL, gy + row * _CELL, n * _CELL, _CELL,
                           colours[prog["address"]]))
    y = gy + h + 18
    # Detail: the pages that hold code, one 64-byte chunk per cell.
    top = max((p_["offset"] // chunk + p_["chunks"] for p_ in p["programs"]), default=0)
    drows = min(-(-top // _DCOLS), _DMAX_ROWS)
    if drows:
        el.append(_text(x0, y, f"first {drows * 4} KiB, one cell per {chunk}-byte chunk, "
                        "one 4 KiB page per row", 11))
        y += 6
        shown = drows * _DCOLS
        taken = bytearray(shown)
        for prog in p["programs"]:
            g = groups[prog["address"]]
            start = prog["offset"] // chunk
            for k in range(start, min(start + prog["chunks"], shown)):
                taken[k] = 1
                r, c = divmod(k, _DCOLS)
                g.append(_rect(x0 + c * _DCELL, y + r * _DCELL, _DCELL - 1, _DCELL - 1,
                               colours[prog["address"]]))
        free = [_rect(x0 + (k % _DCOLS) * _DCELL, y + (k // _DCOLS) * _DCELL, _DCELL - 1,
                      _DCELL - 1, _FREE) for k in range(shown) if not taken[k]]
        el.append('<g class="free-chunks">' + "".join(free) + "</g>")
        for r in range(drows):
            el.append(_text(x0 + _DCOLS * _DCELL + 6, y + r * _DCELL + 9,
                            f"+0x{r * _DCOLS * chunk:05x}", 9))
        y += drows * _DCELL
        if top > shown:
            el.append(_text(x0, y + 12, f"... code continues up to offset 0x{top * chunk:x} "
                            "(see the overview)", 10))
            y += 14
    return el, y - y0 + 16


def _table_svg(p: dict, x0: int, y0: int, colours: dict) -> tuple[list[str], int]:
    el = [_text(x0, y0 + 12, "     offset     size  chunks  name", 11,
                ' font-weight="bold" xml:space="preserve"')]
    y = y0 + 12 + _ROW_H
    for prog in p["programs"][:_TABLE_ROWS]:
        el.append(_rect(x0, y - 9, 10, 10, colours[prog["address"]]))
        el.append(_text(x0 + 16, y, f"0x{prog['offset']:06x} {prog['size']:7} {prog['chunks']:6}"
                        f"  {prog['name']}", 11, ' xml:space="preserve"'))
        y += _ROW_H
    if len(p["programs"]) > _TABLE_ROWS:
        el.append(_text(x0 + 16, y, f"... {len(p['programs']) - _TABLE_ROWS} more", 11))
        y += _ROW_H
    return el, y - y0


def placement_svg(report: dict, title: str = "pybpf pack placement") -> str:
    """An SVG document: per pack an overview of all its chunks, a detail of the pages that hold
    code and a table of its programs. Each allocation is one ``<g class="program">`` element
    (``data-name``, ``data-offset``, ``data-size``, ``data-chunks``) holding all its cells."""
    chunk = report["chunk"]
    allocs = [prog for p in report["packs"] for prog in p["programs"]]
    colours = {prog["address"]: _colour(i) for i, prog in enumerate(allocs)}
    groups: dict[int, list[str]] = {prog["address"]: [] for prog in allocs}
    x0, table_x = 24, 24 + _COLS * _CELL + 210
    thp = report["thp"]
    body = [_text(x0, 24, title, 16, ' font-weight="bold"'),
            _text(x0, 42, f"backend {report['backend']} ({report['write_path']}); THP enabled="
                  f"{thp['enabled']}, shmem_enabled={thp['shmem_enabled']}; "
                  f"{report['programs']} allocation(s), {report['utilisation']:.2%} of pack "
                  "space used", 11)]
    legend = [(_FREE, "free chunk"), (_HUGE_OK, "solid border: one 2 MiB huge page"),
              (_HUGE_NO, "dashed border: 4 KiB pages"), (_BOUNDARY, "2 MiB boundary")]
    for i, (colour, label) in enumerate(legend):
        body.append(_rect(x0 + i * 250, 52, 10, 10, colour))
        body.append(_text(x0 + i * 250 + 14, 61, label, 10))
    y = 80
    for i, p in enumerate(report["packs"]):
        els, h = _pack_svg(p, i, x0, y, chunk, colours, groups)
        tels, th = _table_svg(p, table_x, y + 36, colours)
        body += els + tels
        y += max(h, th + 36) + 10
    if not report["packs"]:
        body.append(_text(x0, y + 12, "no packs: nothing is loaded", 12))
        y += 30
    for d in report["dedicated"]:
        body.append(_text(x0, y + 12, f"dedicated mapping 0x{d['address']:x}: {d['name']}, "
                          f"{d['size']} B in {_kib(d['mapping_size'])}; huge page: "
                          f"{d['huge_page']}", 11))
        y += 18
    for p in report["packs"]:
        for prog in p["programs"]:
            body.append(
                f'<g class="program" data-name={quoteattr(prog["name"])} '
                f'data-offset="{prog["offset"]}" data-size="{prog["size"]}" '
                f'data-chunks="{prog["chunks"]}"><title>{escape(prog["name"])}: offset '
                f'0x{prog["offset"]:x}, {prog["size"]} B, {prog["chunks"]} chunk(s)</title>'
                + "".join(groups[prog["address"]]) + "</g>")
    width, height = table_x + 420, y + 10
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, monospace" '
            f'fill="{_INK}">\n<rect width="100%" height="100%" fill="#ffffff"/>\n'
            + "\n".join(body) + "\n</svg>\n")


# -- the machine code --------------------------------------------------------------------------

def _objdump_listing(jp, syntax: str) -> str:
    """Baseline-tier code (no LLVM assembly exists) through binutils' objdump."""
    import shutil
    import subprocess
    import tempfile

    tool = shutil.which("objdump")
    if tool is None:
        raise JITError("listing baseline-tier code needs capstone (pip install pybpf[disasm]) "
                       "or binutils' objdump")
    base = jp.allocation.address
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(ctypes.string_at(base, jp.text_size))
        f.flush()
        p = subprocess.run([tool, "-D", "-b", "binary", "-m", "i386:x86-64",
                            *(["-M", "intel"] if syntax == "intel" else []),
                            f"--adjust-vma=0x{base:x}", f.name],
                           capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise JITError(f"objdump failed: {p.stderr.strip()[:200]}")
    body = p.stdout.split(">:\n", 1)[-1]
    return (f"# x86-64 code of {jp.name!r} (baseline tier): {jp.text_size} bytes at "
            f"0x{base:x} (objdump)\n{body.rstrip()}\n")


def _function_offsets(jp) -> tuple[dict[int, str], str]:
    """Offset -> function name in the placed ``.text``, from the compile's symbol table."""
    if not jp.symbols:
        return ({jp.address - jp.allocation.address: jp.symbol},
                "function labels beyond the entry unavailable")
    return {off: name for name, off in jp.symbols.items()}, ""


def _name_of(op_str: str, labels: dict[int, str], placed: list) -> str | None:
    """A name for an address among the operands: a function of this code (a call or jump
    target) or a place in another allocation (pybpf's shared native helpers, reached by
    ``movabs`` and an indirect call)."""
    for text in re.findall(r"0x[0-9a-f]+", op_str):
        value = int(text, 16)
        if value in labels:
            return labels[value]
        i = bisect.bisect_right(placed, (value, float("inf"))) - 1
        if i >= 0 and placed[i][0] <= value < placed[i][0] + placed[i][1]:
            start, _, name = placed[i]
            return name if value == start else f"{name}+0x{value - start:x}"
    return None


def native_listing(jp, syntax: str = "att", disassembler: str = "auto") -> str:
    """The x86-64 code of ``jp``'s placement.

    With capstone (``disassembler="capstone"``, or ``"auto"`` when it is installed) the placed
    bytes are disassembled at their real addresses, in AT&T (default) or Intel ``syntax``, with
    the BPF functions as labels, and call targets and addresses inside other placed code (such
    as pybpf's shared helper bridges) named in comments. Otherwise (``"llvm"``) it is LLVM's
    assembly output, which the program must have been compiled with (``want_asm=True``); LLVM
    prints AT&T syntax and knows nothing of the addresses.
    """
    if syntax not in ("att", "intel"):
        raise JITError(f"unknown x86 syntax {syntax!r} (att or intel)")
    if disassembler not in ("auto", "capstone", "llvm"):
        raise JITError(f"unknown disassembler {disassembler!r} (auto, capstone or llvm)")
    if getattr(jp, "closed", False):
        raise JITError(f"JIT program {jp.name!r} is closed")
    cs = None
    if disassembler != "llvm":
        try:
            import capstone as cs
        except ImportError:
            if disassembler == "capstone":
                raise JITError("capstone is not installed (pip install pybpf[disasm])") from None
    base = jp.allocation.address
    if cs is None and getattr(jp, "tier", "") == "baseline":
        return _objdump_listing(jp, syntax)
    if cs is None:
        if syntax != "att":
            raise JITError("LLVM's assembly output is AT&T syntax; Intel syntax needs capstone "
                           "(pip install pybpf[disasm])")
        if jp.asm is None:
            raise JITError(f"{jp.name!r} was compiled without want_asm=True: no LLVM assembly")
        return (f"# x86-64 assembly of {jp.name!r} from LLVM (AT&T syntax); placed at "
                f"0x{base:x}, entry {jp.symbol} at 0x{jp.address:x}\n{jp.asm.rstrip()}\n")
    code = ctypes.string_at(base, jp.text_size)
    sections = _data_sections(jp)
    if sections:        # disassemble the code; list read-only data (jump tables) as data
        code = code[:jp.image.code_size]
    names, note = _function_offsets(jp)
    md = cs.Cs(cs.CS_ARCH_X86, cs.CS_MODE_64)
    md.syntax = cs.CS_OPT_SYNTAX_ATT if syntax == "att" else cs.CS_OPT_SYNTAX_INTEL
    md.skipdata = True                     # int3 padding and anything odd still gets a line
    by_addr = {base + off: name for off, name in names.items()}
    owner = getattr(jp.allocation.pack or getattr(jp.allocation, "_mem", None), "owner", None)
    placed = sorted((p["address"], p["size"], p["name"]) for pk in placement(owner)["packs"]
                    for p in pk["programs"] if p["address"] != base)
    comment = "#" if syntax == "att" else ";"
    out = [f"{comment} x86-64 code of {jp.name!r}: {len(code)} bytes at 0x{base:x} "
           f"(capstone {cs.__version__}, {'AT&T' if syntax == 'att' else 'Intel'} syntax)"]
    if note:
        out.append(f"{comment} {note}")
    rip_targets = set()
    for insn in md.disasm(code, base):
        if insn.address in by_addr:
            out.append(f"\n{insn.address:016x} <{by_addr[insn.address]}>:")
        line = f"  {insn.address:x}:  {insn.bytes.hex(' '):<32} {insn.mnemonic:<7} {insn.op_str}"
        rip = _rip_target(insn)
        name = None
        if rip is not None:
            rip_targets.add(rip)
            name = next((sname + (f"+0x{rip - base - off:x}" if rip != base + off else "")
                         for sname, off, size in sections
                         if base + off <= rip < base + off + size), None)
        name = name or _name_of(insn.op_str, by_addr, placed)
        if name:
            line += f"  {comment} <{name}>"
        out.append(line.rstrip())
    for sname, off, size in sections:
        out += _data_listing(sname, base + off, ctypes.string_at(base + off, size), base,
                             len(code), rip_targets, by_addr, placed, comment)
    return "\n".join(out) + "\n"


def _data_sections(jp) -> list[tuple[str, int, int]]:
    """(name, offset, size) of the read-only data the linker placed after ``jp``'s code
    (``.rodata*``: jump tables, constant pools; ``.got``), or [] when the placement has no
    linker image (baseline tier) or no data."""
    image = getattr(jp, "image", None)
    if image is None or not getattr(image, "sections", None):
        return []
    return [(n, o, z) for n, o, z in image.sections
            if not n.startswith((".text", ".plt")) and o >= image.code_size and z]


_RIP_ATT = re.compile(r"(-?0x[0-9a-f]+|-?\d+)\(%rip\)")
_RIP_INTEL = re.compile(r"\[rip(?: ([+-]) (0x[0-9a-f]+|\d+))?\]")


def _rip_target(insn) -> int | None:
    """The address a RIP-relative operand of ``insn`` refers to (a jump table's ``lea``)."""
    m = _RIP_ATT.search(insn.op_str)
    if m:
        disp = int(m.group(1), 0)
    else:
        m = _RIP_INTEL.search(insn.op_str)
        if not m:
            return None
        disp = int(m.group(2), 0) * (-1 if m.group(1) == "-" else 1) if m.group(1) else 0
    return insn.address + insn.size + disp


def _data_listing(sname: str, addr: int, data: bytes, base: int, code_size: int,
                  rip_targets: set, labels: dict, placed: list, comment: str) -> list[str]:
    """Lines for one read-only data section. A jump table (LLVM's, position independent: a
    ``.long`` per case, the case's address minus the table's, found by the ``lea`` that loads
    its address) is listed entry by entry with the code each case jumps to; GOT slots and
    other data as ``.quad`` words."""
    out = [f"\n{addr:016x} <{sname}>:  {comment} {len(data)} bytes of read-only data"]
    starts = sorted(t for t in rip_targets if addr <= t < addr + len(data))
    if sname.startswith(".rodata") and not sname.startswith((".rodata.cst", ".rodata.str")):
        bounds = ([addr] if not starts or starts[0] != addr else []) + starts + [addr + len(data)]
        for lo, hi in zip(bounds, bounds[1:]):
            words = [int.from_bytes(data[o - addr:o - addr + 4], "little", signed=True)
                     for o in range(lo, hi - 3, 4)]
            if lo in rip_targets and words and all(base <= lo + w < base + code_size
                                                   for w in words):
                out.append(f"  {comment} jump table at 0x{lo:x}: {len(words)} entries, "
                           f".long (case address - 0x{lo:x})")
                for i, w in enumerate(words):
                    at, target = lo + 4 * i, lo + w
                    where = _code_offset(target, base, labels)
                    out.append(f"  {at:x}:  {data[at - addr:at - addr + 4].hex(' '):<32} "
                               f".long   {w:#x}  {comment} [{i}] -> 0x{target:x} <{where}>")
                continue
            out += _words(data[lo - addr:hi - addr], lo, labels, placed, comment)
        return out
    return out + _words(data, addr, labels, placed, comment)


def _code_offset(target: int, base: int, labels: dict) -> str:
    """``function+0xN`` for an address in this code (labels: address -> function name)."""
    below = [a for a in labels if a <= target]
    if not below:
        return f"code+0x{target - base:x}"
    start = max(below)
    return labels[start] + (f"+0x{target - start:x}" if target != start else "")


def _words(data: bytes, addr: int, labels: dict, placed: list, comment: str) -> list[str]:
    out = []
    for o in range(0, len(data), 8):
        chunk = data[o:o + 8]
        if len(chunk) < 8:
            out.append(f"  {addr + o:x}:  {chunk.hex(' '):<32} .byte   "
                       + ", ".join(f"{c:#x}" for c in chunk))
            continue
        v = int.from_bytes(chunk, "little")
        name = _name_of(f"0x{v:x}", labels, placed) if v else None
        out.append(f"  {addr + o:x}:  {chunk.hex(' '):<32} .quad   {v:#x}"
                   + (f"  {comment} <{name}>" if name else ""))
    return out


# -- a workload --------------------------------------------------------------------------------

_OPS = ("r0 += r1", "r0 ^= {k}", "r2 = r0", "r2 *= {m}", "r2 >>= {s}", "r0 -= r2", "w3 = w0",
        "w3 += {k}", "r0 |= r3", "r0 &= -{m}", "r3 = bswap32 r3", "r0 += r3")


def sample_programs(n: int, seed: int = 1):
    """``n`` small distinct programs (names ``sample000``...) whose code takes one to about
    eight chunks: a loop, run 1 + (r2 & 7) times, over a random run of ALU instructions."""
    import pybpf

    rng = random.Random(seed)
    progs = []
    for i in range(n):
        body = [rng.choice(_OPS).format(k=rng.randint(1, 1 << 20), m=rng.randint(2, 97),
                                        s=rng.randint(1, 31))
                for _ in range(rng.choice((3, 4, 6, 8, 16, 32, 48)))]
        # The trip count comes from the input (r2, mem's length) so LLVM cannot fold the loop.
        text = "\n".join([f"r0 = {i}", "r1 = r2", "r1 &= 7", "r1 += 1", "r2 = 0", "r3 = 0",
                          "loop:", *body,
                          "r1 += -1", "if r1 != 0 goto loop", "exit"])
        prog = pybpf.assemble(text)
        prog.name = f"sample{i:03d}"
        progs.append(prog)
    return progs
