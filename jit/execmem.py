"""Executable memory for JIT'd programs: a pack allocator after the kernel's bpf_prog_pack/execmem.

Programs are placed in 2 MiB packs (2 MiB aligned, so one transparent huge page can back a whole
pack) cut into 64-byte chunks; a first-fit chunk map per pack and one lock, as in
kernel/bpf/core.c. A program larger than a pack gets its own page-rounded mapping. New packs and
freed ranges hold ``0xCC`` (int3), so a stale jump traps instead of running leftovers; a pack
whose last program is freed is unmapped.

W^X holds at every instant: no mapping this module creates is ever writable and executable at
once, and it never creates ctypes callbacks (libffi would map a W+X page for each). Code goes in
through one of three write paths, probed once per process in this order and reported:

``procmem``
    Anonymous 2 MiB-aligned mapping, ``MADV_HUGEPAGE``, filled with int3 while RW, made RX once.
    Later writes are ``pwrite`` on ``/proc/self/mem``: the kernel writes through its own alias of
    the page, the way text_poke writes through a private RW alias, so the RX mapping is never
    touched and stays one huge page. Zero permission changes per program.
``memfd``
    A memfd mapped RX and shared. Writes are ``pwrite`` on the memfd itself: the page cache is
    the alias, and no writable mapping exists at all, not even briefly. (A short-lived RW alias
    mapping would also be W^X, but costs an mmap, a munmap and its TLB flush per write.) Zero
    permission changes, including pack creation. Huge pages need shmem THP
    (``/sys/kernel/mm/transparent_hugepage/shmem_enabled``).
``mprotect``
    The old way, kept as the last resort and the baseline: flip the pages being written
    RX -> RW -> RX around every write (two permission changes each; never W+X). Unlike text_poke
    it is NOT safe while other threads run code on the same pages, and the flips split the
    pack's huge page.

``PYBPF_EXECMEM_BACKEND=procmem|memfd|mprotect`` or ``PackAllocator(backend=...)`` forces one.
An allocator belongs to the process that made it: after ``fork`` the child gets a fresh
:func:`default_allocator` and using an inherited allocator raises :class:`JITError`.

>>> a = default_allocator()
>>> prog = a.alloc(6, name="answer")
>>> a.fill(prog, bytes.fromhex("b82a000000c3"))       # mov eax, 42; ret
>>> a.free(prog)
"""
from __future__ import annotations

import ctypes
import os
import threading

from pybpf.errors import JITError

__all__ = ["BACKENDS", "ENV_BACKEND", "Allocation", "Pack", "PackAllocator", "default_allocator",
           "probe_backends", "wx_mappings"]

BACKENDS = ("procmem", "memfd", "mprotect")
ENV_BACKEND = "PYBPF_EXECMEM_BACKEND"
INT3 = 0xCC
PAGE = os.sysconf("SC_PAGE_SIZE")
HUGE = 2 << 20

_PROT_NONE, _PROT_READ, _PROT_WRITE, _PROT_EXEC = 0, 1, 2, 4
_RW, _RX = _PROT_READ | _PROT_WRITE, _PROT_READ | _PROT_EXEC
_MAP_SHARED, _MAP_PRIVATE, _MAP_FIXED, _MAP_ANON, _MAP_NORESERVE = 0x01, 0x02, 0x10, 0x20, 0x4000
_MADV_HUGEPAGE = 14

_WRITE_PATHS = {"procmem": "pwrite(/proc/self/mem) into the RX mapping",
                "memfd": "pwrite(memfd) under a shared RX mapping",
                "mprotect": "mprotect RX->RW, memmove, mprotect RW->RX"}

# Plain foreign functions of libc; calling them creates no callback and no W+X page.
_libc = ctypes.CDLL(None, use_errno=True)
_mmap, _munmap, _mprotect, _madvise = _libc.mmap, _libc.munmap, _libc.mprotect, _libc.madvise
_vp, _sz, _int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
for _fn, _res, _args in ((_mmap, _vp, (_vp, _sz, _int, _int, _int, ctypes.c_long)),
                         (_munmap, _int, (_vp, _sz)), (_mprotect, _int, (_vp, _sz, _int)),
                         (_madvise, _int, (_vp, _sz, _int))):
    _fn.restype, _fn.argtypes = _res, _args
_MAP_FAILED = ctypes.c_void_p(-1).value


ENV_JIT_LIMIT = "PYBPF_JIT_LIMIT"
DEFAULT_JIT_LIMIT = 256 << 20

def _oserror(what: str) -> JITError:
    err = ctypes.get_errno()
    return JITError(f"execmem: {what} failed: {os.strerror(err)} (errno {err})")


def _sys_mmap(addr, length: int, prot: int, flags: int, fd: int = -1) -> int:
    ptr = _mmap(addr, length, prot, flags, fd, 0)
    if ptr is None or ptr == _MAP_FAILED:
        raise _oserror(f"mmap of {length} bytes")
    return ptr


def _map_aligned(size: int, align: int, prot: int, flags: int, fd: int = -1) -> int:
    """Map ``size`` bytes at an ``align``-aligned address: reserve size+align, map over, trim."""
    if align <= PAGE:
        return _sys_mmap(None, size, prot, flags, fd)
    base = _sys_mmap(None, size + align, _PROT_NONE, _MAP_PRIVATE | _MAP_ANON | _MAP_NORESERVE)
    start = (base + align - 1) & -align
    try:
        _sys_mmap(start, size, prot, flags | _MAP_FIXED, fd)  # replaces part of our own reservation
    except JITError:
        _munmap(base, size + align)
        raise
    if start > base:
        _munmap(base, start - base)
    tail = base + size + align - (start + size)
    if tail:
        _munmap(start + size, tail)
    return start


def _write_all(fd: int, data, offset: int) -> None:
    try:
        if os.pwrite(fd, data, offset) == len(data):   # the usual case: one call
            return
    except OSError:
        pass                                            # retried below for the message
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError(0, "short write")
            view, offset = view[n:], offset + n
    except OSError as e:
        raise JITError(f"execmem: write of {len(view)} bytes at 0x{offset:x} failed: {e}") from None


# /proc/self/mem is bound to the mm of the process that opened it: reopen after fork, or a
# child would write into its parent's code.
_procmem_fd: int | None = None
_fork_gen = 0
_state_lock = threading.RLock()      # probes run under it and open /proc/self/mem


def _procmem() -> int:
    global _procmem_fd
    if _procmem_fd is None:
        with _state_lock:
            if _procmem_fd is None:
                _procmem_fd = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
    return _procmem_fd


def _after_fork_in_child() -> None:
    global _procmem_fd, _fork_gen, _default, _state_lock
    if _procmem_fd is not None:
        os.close(_procmem_fd)
    _procmem_fd, _default, _state_lock = None, None, threading.RLock()
    _fork_gen += 1


os.register_at_fork(after_in_child=_after_fork_in_child)

# ---------------------------------------------------------------------------------------------
# Probing: each path is tried on a throwaway page, once per process.

_probes: dict[str, str] = {}          # backend -> "ok" or why it failed
_probe_permission_changes = 0
_MARK = bytes((INT3, 0xC3))


def _probe_procmem() -> None:
    addr = _sys_mmap(None, PAGE, _RX, _MAP_PRIVATE | _MAP_ANON)   # born RX: nothing to flip
    try:
        _write_all(_procmem(), _MARK, addr + 8)
        _check_mark(addr, "/proc/self/mem")
    finally:
        _munmap(addr, PAGE)


def _probe_memfd() -> None:
    fd = os.memfd_create("pybpf-probe", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, PAGE)
        addr = _sys_mmap(None, PAGE, _RX, _MAP_SHARED, fd)
        try:
            _write_all(fd, _MARK, 8)
            _check_mark(addr, "memfd")
        finally:
            _munmap(addr, PAGE)
    finally:
        os.close(fd)


def _check_mark(addr: int, path: str) -> None:
    if ctypes.string_at(addr + 7, 3) != b"\0" + _MARK:
        raise JITError(f"execmem: a {path} write is not visible through the RX mapping")


def _probe_mprotect() -> None:
    global _probe_permission_changes
    addr = _sys_mmap(None, PAGE, _RW, _MAP_PRIVATE | _MAP_ANON)
    try:
        ctypes.memmove(addr, _MARK, 2)
        if _mprotect(addr, PAGE, _RX) != 0:
            raise _oserror("mprotect")
        _probe_permission_changes += 1
    finally:
        _munmap(addr, PAGE)


_PROBE_FNS = {"procmem": _probe_procmem, "memfd": _probe_memfd, "mprotect": _probe_mprotect}


def _probe(name: str) -> str:
    if name not in _probes:
        try:
            _PROBE_FNS[name]()
            _probes[name] = "ok"
        except (OSError, JITError) as e:
            _probes[name] = str(e)
    return _probes[name]


def probe_backends(all_: bool = False) -> dict[str, str]:
    """Result of the probes run so far (``"ok"`` or the reason), or of every probe if ``all_``."""
    with _state_lock:
        for name in BACKENDS if all_ else ():
            _probe(name)
        return dict(_probes)


def _select_backend(requested: str | None) -> str:
    requested = requested or os.environ.get(ENV_BACKEND) or None
    with _state_lock:
        if requested is not None:
            if requested not in BACKENDS:
                raise JITError(f"execmem: unknown backend {requested!r} (choose from "
                               f"{', '.join(BACKENDS)})")
            why = _probe(requested)
            if why != "ok":
                raise JITError(f"execmem: backend {requested!r} unavailable: {why}")
            return requested
        for name in BACKENDS:
            if _probe(name) == "ok":
                return name
    raise JITError("execmem: no write path works: "
                   + "; ".join(f"{k}: {v}" for k, v in _probes.items()))


class Pack:
    """One executable mapping: a pack (``map`` has one byte per chunk, 1 = used) or, with
    ``map`` None, a dedicated mapping for one large program. ``fd`` is the memfd or -1."""

    __slots__ = ("address", "size", "fd", "map", "used", "lowest", "allocs", "owner")

    def __init__(self, address: int, size: int, fd: int, nchunks: int, owner=None):
        self.address, self.size, self.fd, self.owner = address, size, fd, owner
        self.map = bytearray(nchunks) if nchunks else None
        self.used = 0            # chunks in use
        self.lowest = 0          # no free chunk below this index (first-fit starts here)
        self.allocs: dict[int, Allocation] = {}   # offset -> live allocation

    def __repr__(self) -> str:
        return f"<Pack 0x{self.address:x} size={self.size} used_chunks={self.used}>"


class Allocation:
    """A program's place: ``address`` (int), requested ``size``, ``name``, its ``pack`` (None for
    a dedicated mapping), ``offset`` in the pack and ``nchunks`` chunks."""

    __slots__ = ("address", "size", "name", "pack", "offset", "nchunks", "_mem")

    def __init__(self, address, size, name, pack, offset, nchunks, mem):
        self.address, self.size, self.name, self.pack = address, size, name, pack
        self.offset, self.nchunks, self._mem = offset, nchunks, mem

    def __repr__(self) -> str:
        where = "dedicated" if self.pack is None else f"pack+0x{self.offset:x}"
        return f"<Allocation {self.name!r} 0x{self.address:x} size={self.size} {where}>"


class PackAllocator:
    """Packs of ``pack_size`` bytes in ``chunk``-byte chunks, written through one W^X path.

    Thread-safe: one lock covers placement, writes and frees (the kernel holds text_mutex
    around text_poke too). See the module docstring for the backends.
    """

    def __init__(self, backend: str | None = None, pack_size: int = 2 << 20, chunk: int = 64,
                 limit: int | None = None):
        if chunk <= 0 or chunk & (chunk - 1):
            raise JITError(f"execmem: chunk size {chunk} is not a power of two")
        if pack_size <= 0 or pack_size % PAGE or pack_size % chunk:
            raise JITError(f"execmem: pack size {pack_size} is not a multiple of the page size")
        self.backend: str = _select_backend(backend)
        self.write_path = _WRITE_PATHS[self.backend]
        self.pack_size, self.chunk = pack_size, chunk
        self._shift = chunk.bit_length() - 1
        self._nchunks = pack_size // chunk
        self._zeros, self._ones = bytes(self._nchunks), b"\x01" * self._nchunks
        self._int3 = bytes((INT3,)) * pack_size
        self._poke = {"procmem": self._poke_procmem, "memfd": self._poke_memfd,
                      "mprotect": self._poke_mprotect}[self.backend]
        self._lock = threading.Lock()
        # bpf_jit_limit: bytes of code allowed at once (env PYBPF_JIT_LIMIT, default 256 MiB)
        self.limit = limit if limit is not None else int(os.environ.get(ENV_JIT_LIMIT, 0) or
                                                         DEFAULT_JIT_LIMIT)
        self._charged = 0
        self._gen = _fork_gen
        self._packs: list[Pack] = []
        self._dedicated: dict[int, Allocation] = {}
        self._c = dict.fromkeys(("packs_created", "packs_released", "dedicated_created",
                                 "dedicated_released", "allocs", "frees", "fills",
                                 "bytes_written", "permission_changes"), 0)

    # -- mappings --------------------------------------------------------------------------

    def _protect(self, addr: int, length: int, prot: int) -> None:
        if _mprotect(addr, length, prot) != 0:
            raise _oserror("mprotect")
        self._c["permission_changes"] += 1

    def _map(self, size: int, nchunks: int) -> Pack:
        """A new RX mapping full of int3, 2 MiB aligned when its size allows."""
        align = HUGE if size >= HUGE else PAGE
        if self.backend == "memfd":
            fd = os.memfd_create("pybpf-jit", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
                addr = _map_aligned(size, align, _RX, _MAP_SHARED, fd)
            except BaseException:
                os.close(fd)
                raise
            _madvise(addr, size, _MADV_HUGEPAGE)   # honoured only if shmem THP allows it
            mem = Pack(addr, size, fd, nchunks, self)
            try:
                _write_all(fd, self._int3 if size == self.pack_size else b"\xcc" * size, 0)
            except JITError:
                self._unmap(mem)
                raise
            return mem
        addr = _map_aligned(size, align, _RW, _MAP_PRIVATE | _MAP_ANON)
        _madvise(addr, size, _MADV_HUGEPAGE)       # best effort; THP may be off
        ctypes.memset(addr, INT3, size)            # while RW: the only time it is writable
        try:
            self._protect(addr, size, _RX)         # once per mapping, like set_memory_rox()
        except JITError:
            _munmap(addr, size)
            raise
        return Pack(addr, size, -1, nchunks, self)

    @staticmethod
    def _unmap(mem: Pack) -> None:
        _munmap(mem.address, mem.size)
        if mem.fd >= 0:
            os.close(mem.fd)

    # -- write paths (text_poke_copy / text_poke_set) -------------------------------------

    def _poke_procmem(self, mem: Pack, off: int, data) -> None:
        _write_all(_procmem(), data, mem.address + off)

    def _poke_memfd(self, mem: Pack, off: int, data) -> None:
        _write_all(mem.fd, data, off)

    def _poke_mprotect(self, mem: Pack, off: int, data) -> None:
        lo = (mem.address + off) & -PAGE
        hi = (mem.address + off + len(data) + PAGE - 1) & -PAGE
        self._protect(lo, hi - lo, _RW)            # RX -> RW: never W and X together
        try:
            ctypes.memmove(mem.address + off, bytes(data), len(data))
        finally:
            self._protect(lo, hi - lo, _RX)

    # -- API -------------------------------------------------------------------------------

    def _forked(self) -> JITError:
        return JITError("execmem: allocator belongs to the parent process (used after fork)")

    def alloc(self, size: int, name: str = "") -> Allocation:
        """Reserve room for ``size`` bytes of code (bpf_prog_pack_alloc); it reads as int3."""
        if not isinstance(size, int) or size <= 0:
            raise JITError(f"execmem: cannot allocate {size!r} bytes")
        if self._gen != _fork_gen:
            raise self._forked()
        n = (size + self.chunk - 1) >> self._shift
        with self._lock:
            charge = (size + PAGE - 1) & -PAGE if size > self.pack_size else n << self._shift
            if self._charged + charge > self.limit:
                raise JITError(f"execmem: {charge} more bytes of JIT code would pass the limit "
                               f"of {self.limit} (the kernel's bpf_jit_limit; EPERM there): "
                               f"close programs or set {ENV_JIT_LIMIT}")
            self._charged += charge
            self._c["allocs"] += 1
            if size > self.pack_size:
                length = (size + PAGE - 1) & -PAGE
                mem = self._map(length, 0)
                a = Allocation(mem.address, size, name, None, 0, n, mem)
                mem.allocs[0] = a
                self._dedicated[mem.address] = a
                self._c["dedicated_created"] += 1
                return a
            needle = self._zeros[:n]
            for pack in self._packs:
                if self._nchunks - pack.used >= n:
                    pos = pack.map.find(needle, pack.lowest)
                    if pos >= 0:
                        break
            else:
                pack = self._map(self.pack_size, self._nchunks)
                self._packs.append(pack)
                self._c["packs_created"] += 1
                pos = 0
            pack.map[pos:pos + n] = self._ones[:n]
            pack.used += n
            if pos == pack.lowest:
                nxt = pack.map.find(b"\0", pos + n)
                pack.lowest = self._nchunks if nxt < 0 else nxt
            off = pos << self._shift
            a = Allocation(pack.address + off, size, name, pack, off, n, pack)
            pack.allocs[off] = a
            return a

    def _live(self, a: Allocation) -> Pack:
        """The mapping behind a live allocation of this allocator; anything else is refused."""
        mem = getattr(a, "_mem", None)
        # a released pack has no allocations left, so a stale one fails the identity test
        if mem is None or mem.owner is not self or mem.allocs.get(a.offset) is not a:
            raise JITError(f"execmem: {a!r} is not live in this allocator (double free?)")
        return mem

    def fill(self, allocation: Allocation, code, offset: int = 0) -> None:
        """Copy ``code`` to ``allocation.address + offset`` (text_poke_copy); must fit its size."""
        if offset < 0 or offset + len(code) > allocation.size:
            raise JITError(f"execmem: {len(code)} bytes at offset {offset} do not fit "
                           f"{allocation.name or 'allocation'} of {allocation.size} bytes")
        if self._gen != _fork_gen:
            raise self._forked()
        with self._lock:
            mem = self._live(allocation)
            if code:
                self._poke(mem, allocation.offset + offset, code)
            self._c["fills"] += 1
            self._c["bytes_written"] += len(code)

    def free(self, allocation: Allocation) -> None:
        """Poison with int3 and release (bpf_prog_pack_free); an emptied pack is unmapped."""
        if self._gen != _fork_gen:
            raise self._forked()
        with self._lock:
            mem = self._live(allocation)
            n = allocation.nchunks
            self._charged -= ((allocation.size + PAGE - 1) & -PAGE if allocation.pack is None
                              else n << self._shift)
            if allocation.pack is None:
                del self._dedicated[mem.address]
                self._c["dedicated_released"] += 1
            elif mem.used == n:                    # poisoning memory about to vanish is moot
                self._packs.remove(mem)
                self._c["packs_released"] += 1
            else:                                  # poison first: if that fails, it stays live
                self._poke(mem, allocation.offset, memoryview(self._int3)[:n << self._shift])
            del mem.allocs[allocation.offset]
            self._c["frees"] += 1
            if mem.map is None or mem.used == n:
                self._unmap(mem)
                return
            mem.used -= n
            pos = allocation.offset >> self._shift
            mem.map[pos:pos + n] = self._zeros[:n]
            mem.lowest = min(mem.lowest, pos)

    def close(self) -> None:
        """Unmap every pack and dedicated mapping at once (teardown: no code may still run)."""
        if self._gen != _fork_gen:
            raise self._forked()
        with self._lock:
            for mem in self._packs + [a._mem for a in self._dedicated.values()]:
                mem.allocs.clear()
                self._unmap(mem)
            self._c["packs_released"] += len(self._packs)
            self._c["dedicated_released"] += len(self._dedicated)
            self._packs, self._dedicated = [], {}
            self._charged = 0

    def counters(self) -> dict:
        """Event counts since creation plus what is in use now (huge pages read from smaps)."""
        with self._lock:
            c = dict(self._c)
            packs = [(p.address, p.address + p.size) for p in self._packs]
            chunks = sum(p.used for p in self._packs)
            programs = sum(len(p.allocs) for p in self._packs) + len(self._dedicated)
            c.update(packs_live=len(packs), dedicated_live=len(self._dedicated),
                     programs=programs, chunks_in_use=chunks, bytes_in_use=(chunks << self._shift)
                     + sum(a._mem.size for a in self._dedicated.values()))
        c.update(backend=self.backend, write_path=self.write_path,
                 huge_pages_kb=sum(_huge_kb(packs)),
                 probe_permission_changes=_probe_permission_changes)
        return c

    def placement(self) -> dict:
        """Packs with their programs, utilisation and huge-page backing, like ``pybpf packs``."""
        with self._lock:
            packs = [(p, sorted(p.allocs.items()), p.used) for p in self._packs]
            dedicated = list(self._dedicated.values())
        hp = _huge_kb([(p.address, p.address + p.size) for p, _, _ in packs]
                      + [(a.address, a.address + a._mem.size) for a in dedicated])
        out = [{"address": p.address, "size": p.size,
                "programs": [{"name": a.name, "address": a.address, "offset": off,
                              "size": a.size, "chunks": a.nchunks} for off, a in progs],
                "free_bytes": (self._nchunks - used) << self._shift, "used_chunks": used,
                "utilisation": used / self._nchunks, "huge_pages_kb": kb}
               for (p, progs, used), kb in zip(packs, hp)]
        ded = [{"name": a.name, "address": a.address, "size": a.size,
                "mapping_size": a._mem.size, "huge_pages_kb": kb}
               for a, kb in zip(dedicated, hp[len(packs):])]
        return {"backend": self.backend, "pack_size": self.pack_size, "chunk": self.chunk,
                "packs": out, "dedicated": ded, "counters": self.counters()}

    def __repr__(self) -> str:
        return f"<PackAllocator backend={self.backend} packs={len(self._packs)}>"


_default: PackAllocator | None = None


def default_allocator() -> PackAllocator:
    """The process-wide allocator, created (and its backend probed) on first use."""
    global _default
    if _default is None:
        a = PackAllocator()
        with _state_lock:
            if _default is None:
                _default = a
    return _default


# ---------------------------------------------------------------------------------------------
# /proc readers

_HEX = frozenset("0123456789abcdef")
_HUGE_FIELDS = ("AnonHugePages:", "ShmemPmdMapped:", "FilePmdMapped:")


def _huge_kb(ranges: list[tuple[int, int]]) -> list[int]:
    """PMD-mapped kB inside each [start, end) per /proc/self/smaps (anon, shmem or file THP)."""
    out = [0] * len(ranges)
    if not ranges:
        return out
    with open("/proc/self/smaps") as f:
        text = f.read()
    hit: list[int] = []
    for line in text.splitlines():
        if line[:1] in _HEX:                       # a mapping header; field names are Capitalised
            lo, _, hi = line.split(" ", 1)[0].partition("-")
            lo, hi = int(lo, 16), int(hi, 16)
            hit = [i for i, (s, e) in enumerate(ranges) if lo < e and s < hi]
        elif hit and line.startswith(_HUGE_FIELDS):
            kb = int(line.split()[1])
            for i in hit:
                out[i] += kb
    return out


def wx_mappings(pid: int | str = "self") -> list[str]:
    """Lines of /proc/<pid>/maps whose mapping is writable and executable at once."""
    with open(f"/proc/{pid}/maps") as f:
        return [line.rstrip("\n") for line in f
                if (perms := line.split(None, 2)[1])[1] == "w" and perms[2] == "x"]
