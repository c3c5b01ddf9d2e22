"""Tests of the execmem pack allocator (jit/execmem.py): placement, int3 poisoning, W^X, huge pages.

Code is only ever executed in a child process, so a bad write path cannot kill pytest.
"""
from __future__ import annotations

import ctypes
import json
import os
import random
import threading

import pytest

from pybpf.errors import JITError
from pybpf.jit import execmem
from pybpf.jit.execmem import BACKENDS, PackAllocator, default_allocator, wx_mappings

from support import run_code as run_child
from support import start_code

pytestmark = pytest.mark.jit

RET42 = bytes.fromhex("b82a000000c3")          # mov eax, 42; ret
PACK = 2 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(params=BACKENDS)
def pa(request):
    a = PackAllocator(backend=request.param)
    yield a
    a.close()


def mapped(addr: int) -> bool:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


def test_every_backend_probes_ok_and_procmem_is_preferred(monkeypatch):
    assert execmem.probe_backends(all_=True) == {b: "ok" for b in BACKENDS}
    monkeypatch.delenv(execmem.ENV_BACKEND, raising=False)
    assert PackAllocator().backend == "procmem"


def test_backend_forced_by_env_and_argument(monkeypatch):
    for b in BACKENDS:
        monkeypatch.setenv(execmem.ENV_BACKEND, b)
        assert PackAllocator().backend == b
    monkeypatch.setenv(execmem.ENV_BACKEND, "memfd")
    assert PackAllocator(backend="mprotect").backend == "mprotect"
    monkeypatch.setenv(execmem.ENV_BACKEND, "rwx")
    with pytest.raises(JITError, match="unknown backend"):
        PackAllocator()


def test_alloc_fill_free_roundtrip(pa):
    a = pa.alloc(100, name="prog")
    assert (a.size, a.name, a.offset, a.nchunks) == (100, "prog", 0, 2)
    assert a.address == a.pack.address
    pa.fill(a, RET42)
    pa.fill(a, b"\x11\x22\x33", offset=97)           # last three bytes
    got = ctypes.string_at(a.address, 128)
    assert got[:6] == RET42
    assert got[6:97] == b"\xcc" * 91 and got[97:100] == b"\x11\x22\x33"
    assert got[100:] == b"\xcc" * 28                  # rest of the last chunk untouched
    with pytest.raises(JITError):
        pa.fill(a, b"\x90" * 4, offset=97)            # one byte too many
    with pytest.raises(JITError):
        pa.fill(a, b"\x90", offset=-1)
    pa.free(a)
    assert pa.counters()["programs"] == 0


def test_bad_sizes_refused():
    pa = PackAllocator()
    for size in (0, -1, 1.5):
        with pytest.raises(JITError):
            pa.alloc(size)
    with pytest.raises(JITError):
        PackAllocator(chunk=48)
    with pytest.raises(JITError):
        PackAllocator(pack_size=PAGE + 64)


def test_first_fit_placement():
    pa = PackAllocator()
    a, b, c = pa.alloc(64), pa.alloc(128), pa.alloc(64)
    assert [x.offset for x in (a, b, c)] == [0, 64, 192]
    pa.free(b)                                         # hole of two chunks at 64
    d = pa.alloc(65)                                   # needs two: fits the hole exactly
    e = pa.alloc(1)
    assert (d.offset, e.offset) == (64, 256)
    pa.free(a)                                         # one-chunk hole at 0
    f = pa.alloc(128)                                  # does not fit there
    g = pa.alloc(64)                                   # does
    assert (f.offset, g.offset) == (320, 0)
    assert {x.pack for x in (c, d, e, f, g)} == {c.pack}
    pa.close()


def test_new_pack_is_int3_and_2mib_aligned(pa):
    a = pa.alloc(1)
    assert a.pack.address % PACK == 0 and a.pack.size == PACK
    assert ctypes.string_at(a.pack.address, PACK) == b"\xcc" * PACK


def test_freed_range_is_int3_and_neighbours_untouched(pa):
    keep = pa.alloc(64, "keep")
    pa.fill(keep, RET42)
    a = pa.alloc(300, "gone")
    code = bytes(range(256)) + bytes(44)
    pa.fill(a, code)
    assert ctypes.string_at(a.address, 300) == code
    pa.free(a)
    assert ctypes.string_at(a.address, 320) == b"\xcc" * 320
    assert ctypes.string_at(keep.address, 6) == RET42
    assert pa.counters()["packs_live"] == 1


def test_thousand_programs_share_one_pack(pa):
    rng = random.Random(7)
    sizes = [rng.randint(200, 1500) for _ in range(1000)]
    assert sum(-(-s // 64) * 64 for s in sizes) <= PACK       # the premise: they can fit
    first = pa.alloc(sizes[0], "p0")
    base = pa.counters()["permission_changes"]
    progs = [first] + [pa.alloc(s, f"p{i}") for i, s in enumerate(sizes[1:], 1)]
    for i, p in enumerate(progs):
        pa.fill(p, bytes([i % 251]) * p.size)
    assert {p.pack for p in progs} == {first.pack}
    c = pa.counters()
    assert (c["packs_created"], c["programs"]) == (1, 1000)
    pl = pa.placement()["packs"][0]
    assert len(pl["programs"]) == 1000 and pl["used_chunks"] == sum(p.nchunks for p in progs)
    for i in (0, 1, 499, 999):
        assert ctypes.string_at(progs[i].address, progs[i].size) == bytes([i % 251]) * sizes[i]
    rng.shuffle(progs)
    for p in progs:
        pa.free(p)
    c = pa.counters()
    flips = c["permission_changes"] - base
    if pa.backend == "mprotect":                       # the baseline flips twice per write
        assert flips == 2 * 1000 + 2 * 999             # the last free unmaps instead
    else:
        assert flips == 0
    assert (c["packs_released"], c["packs_live"], c["chunks_in_use"]) == (1, 0, 0)
    assert not mapped(first.pack.address)


def test_dedicated_mapping_for_large_program(pa):
    size = PACK + 100
    a = pa.alloc(size, "big")
    assert a.pack is None and a.address % PAGE == 0
    (d,) = pa.placement()["dedicated"]
    assert d["mapping_size"] == -(-size // PAGE) * PAGE and d["name"] == "big"
    assert ctypes.string_at(a.address + size - 10, 10) == b"\xcc" * 10
    pa.fill(a, RET42, offset=size - 6)
    assert ctypes.string_at(a.address + size - 6, 6) == RET42
    with pytest.raises(JITError):
        pa.fill(a, RET42, offset=size - 5)
    c = pa.counters()
    assert (c["packs_created"], c["dedicated_live"]) == (0, 1)
    pa.free(a)
    assert not mapped(a.address) and pa.counters()["dedicated_released"] == 1


def test_empty_pack_released(pa):
    a = pa.alloc(200)
    addr = a.pack.address
    assert mapped(addr)
    pa.free(a)
    c = pa.counters()
    assert (c["packs_released"], c["packs_live"]) == (1, 0)
    assert pa.placement()["packs"] == [] and not mapped(addr)
    pa.alloc(200)
    assert pa.counters()["packs_created"] == 2


def test_double_free_and_foreign_allocation_refused():
    pa, other = PackAllocator(), PackAllocator()
    keep = pa.alloc(64)
    a = pa.alloc(64)
    pa.free(a)
    with pytest.raises(JITError, match="double free"):
        pa.free(a)
    with pytest.raises(JITError):
        pa.fill(a, RET42)
    b = pa.alloc(64)                                   # reuses a's chunk
    assert b.address == a.address
    with pytest.raises(JITError):
        pa.free(a)                                     # stale handle must not free b
    assert pa.counters()["programs"] == 2
    with pytest.raises(JITError):
        other.free(b)
    pa.free(b)
    pa.free(keep)
    with pytest.raises(JITError):
        pa.free(keep)                                  # its pack is gone by now


def test_placement_and_counters_report_programs():
    pa = PackAllocator()
    a, b = pa.alloc(100, "alpha"), pa.alloc(10, "beta")
    p = pa.placement()
    assert p["backend"] == pa.backend and p["chunk"] == 64
    (pack,) = p["packs"]
    assert [(x["name"], x["offset"], x["size"], x["chunks"]) for x in pack["programs"]] == \
        [("alpha", 0, 100, 2), ("beta", 128, 10, 1)]
    assert pack["used_chunks"] == 3 and pack["free_bytes"] == PACK - 192
    assert pack["utilisation"] == pytest.approx(3 / (PACK // 64))
    c = p["counters"]
    assert (c["allocs"], c["bytes_in_use"], c["write_path"]) == (2, 192, pa.write_path)
    pa.free(a)
    pa.free(b)


def test_default_allocator_is_a_singleton():
    assert default_allocator() is default_allocator()


def test_threads_never_overlap():
    pa = PackAllocator()
    keep = pa.alloc(64)
    errors = []

    def worker(tag: int) -> None:
        rng = random.Random(tag)
        for i in range(400):
            a = pa.alloc(rng.randint(1, 700))
            data = bytes([tag]) * a.size
            pa.fill(a, data)
            if ctypes.string_at(a.address, a.size) != data:
                errors.append((tag, i))
            pa.free(a)

    threads = [threading.Thread(target=worker, args=(t,)) for t in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and pa.counters()["programs"] == 1
    pa.free(keep)


def thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not thp_available(), reason="transparent huge pages are off")
def test_procmem_pack_is_one_huge_page_after_writes():
    pa = PackAllocator(backend="procmem")
    progs = [pa.alloc(1000) for _ in range(1500)]      # writes spread over most of the pack
    for p in progs:
        pa.fill(p, b"\x90" * p.size)
    for p in progs[::2]:
        pa.free(p)
    start = progs[1].pack.address
    # read smaps here rather than trust the allocator's own parser
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(f"{start:x}-"))
    lo, hi = (int(x, 16) for x in lines[i].split()[0].split("-"))
    assert (hi - lo, lines[i].split()[1]) == (PACK, "r-xp")    # one VMA, never made writable
    anon_huge = next(ln for ln in lines[i + 1:] if ln.startswith("AnonHugePages:"))
    assert anon_huge.split()[1] == "2048"
    assert pa.placement()["packs"][0]["huge_pages_kb"] == 2048
    pa.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_code_runs_in_child(backend):
    r = run_child(f"""
        import ctypes
        from pybpf.jit.execmem import PackAllocator
        pa = PackAllocator(backend={backend!r})
        a, b = pa.alloc(6, "first"), pa.alloc(64, "second")
        pa.fill(a, bytes.fromhex("b82a000000c3"))
        pa.fill(b, bytes.fromhex("b807000000c3"))      # mov eax, 7; ret
        f = ctypes.CFUNCTYPE(ctypes.c_int)
        print(f(a.address)(), f(b.address)())
        pa.free(a)
        c = pa.alloc(6)                                # reuses a's chunk
        pa.fill(c, bytes.fromhex("b863000000c3"))      # mov eax, 99; ret
        print(f(c.address)(), f(b.address)())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["42", "7", "99", "7"]


def test_no_wx_mapping_during_cycles():
    """1,000 alloc/fill/free cycles per backend, watched from a thread inside and from outside."""
    code = """
        import json, threading
        from pybpf.jit.execmem import BACKENDS, PackAllocator, wx_mappings
        seen, samples, stop = [], [0], threading.Event()
        def sample():
            while not stop.is_set():
                seen.extend(wx_mappings())
                samples[0] += 1
        t = threading.Thread(target=sample)
        t.start()
        report = {}
        for b in BACKENDS:
            pa = PackAllocator(backend=b)
            keep = pa.alloc(64)
            for i in range(1000):
                if i % 250 == 0:                       # also create and release packs
                    pa.free(keep)
                    keep = pa.alloc(64)
                a = pa.alloc(200 + i)
                pa.fill(a, b"\\x90" * a.size)
                pa.free(a)
            report[b] = pa.counters()
        stop.set()
        t.join()
        print(json.dumps({"seen": seen, "samples": samples[0], "report": report}))
    """
    proc = start_code(code)
    outside, outside_samples = [], 0
    while proc.poll() is None:
        try:
            outside.extend(wx_mappings(proc.pid))
            outside_samples += 1
        except (FileNotFoundError, ProcessLookupError):
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    res = json.loads(out)
    assert res["seen"] == [] and outside == []
    assert res["samples"] >= 20 and outside_samples >= 20
    for b, c in res["report"].items():
        assert c["fills"] == 1000 and c["packs_created"] >= 4, b


def test_wx_detector_sees_an_rwx_page():
    """The W+X check above is only worth something if the detector can see such a page."""
    r = run_child("""
        import ctypes
        from pybpf.jit.execmem import wx_mappings
        libc = ctypes.CDLL(None)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long)
        before = wx_mappings()
        addr = libc.mmap(None, 4096, 7, 0x22, -1, 0)
        print(before == [], any(l.startswith(f"{addr:x}-") for l in wx_mappings()))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]


def test_fork_child_writes_its_own_memory():
    """/proc/self/mem is bound to the opener's mm; a forked child must not poke its parent."""
    r = run_child("""
        import ctypes, os
        from pybpf.errors import JITError
        from pybpf.jit import execmem
        from pybpf.jit.execmem import default_allocator
        pa = default_allocator()
        keep = pa.alloc(64)
        pa.fill(keep, b"\\x90")
        a = pa.alloc(64)
        pid = os.fork()
        if pid == 0:
            code = 5
            try:
                try:
                    pa.fill(a, b"\\x11")
                    code = 3                           # inherited allocator must refuse
                except JITError:
                    # a write at an address mapped in both processes must stay in the child
                    execmem._write_all(execmem._procmem(), b"\\x33", keep.address)
                    child = default_allocator()
                    b = child.alloc(64)
                    child.fill(b, b"\\x22")
                    ok = child is not pa and ctypes.string_at(b.address, 1) == b"\\x22" and \\
                        ctypes.string_at(keep.address, 1) == b"\\x33"
                    code = 0 if ok else 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), ctypes.string_at(a.address, 1).hex(),
              ctypes.string_at(keep.address, 1).hex())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "cc", "90"]
