"""Memory the runtime hands to BPF programs: real process buffers and the region table that guards them.

A BPF pointer is a real address in this process (as in the JIT, and as Python sees it through
ctypes or numpy), so one byte view of the whole user address space, :data:`PROC`, reads and
writes every buffer. Nothing may touch :data:`PROC` at an address that was not first checked
against a :class:`RegionTable`: the table lists what one run may access (its stack frames, the
``mem`` or context buffer, packet data, later map values and the arena band) and
:meth:`RegionTable.check` raises :class:`~pybpf.errors.MemoryAccessError` *before* anything is read
or written. :class:`Buffer` allocates zeroed memory at a stable address, optionally between two
guard zones filled with a canary pattern so tests can prove that a refused access left the
neighbouring memory alone.

>>> buf = Buffer(8, init=b"\\x01\\x02")
>>> table = RegionTable([Region(buf.address, 8, "mem")])
>>> table.read(buf.address, 2)
b'\\x01\\x02'
>>> table.find(buf.address + 7, 2) is None      # read() would raise MemoryAccessError
True
"""
from __future__ import annotations

import bisect
import ctypes
import struct
from dataclasses import dataclass, field

from pybpf.errors import MemoryAccessError
from pybpf.isa import MAX_BPF_STACK

# x86-64 user space ends below 2**47 (4-level paging); the view covers all of it. Creating it
# maps nothing: a memoryview over a ctypes array only records the base and the length.
USER_SPACE = 1 << 47
PROC = memoryview((ctypes.c_char * USER_SPACE).from_address(0)).cast("B")

# Unsigned and signed little-endian accessors by size; each takes (view, address).
_U, _S = dict(zip((1, 2, 4, 8), "BHIQ")), dict(zip((1, 2, 4, 8), "bhiq"))
UNPACK = {n: struct.Struct("<" + c).unpack_from for n, c in _U.items()}
UNPACK_SIGNED = {n: struct.Struct("<" + c).unpack_from for n, c in _S.items()}
PACK = {n: struct.Struct("<" + c).pack_into for n, c in _U.items()}

GUARD_FILL = 0xA5  # canary byte of the guard zones around a Buffer

# JIT code keeps a chain of *frame records* on the native stack, one per active BPF frame
# (pybpf.jit.lower): 16 bytes, ``u64 frame`` (the lowest address of the frame's 512-byte BPF
# stack, 0 when the function never lets its frame pointer escape) and ``u64 prev`` (the
# caller's record, 0 in the program's entry function). A bridged helper call passes the
# innermost record; :meth:`RegionTable.set_jit_frames` turns the chain into stack regions.
FRAME_RECORD = struct.Struct("<QQ")
MAX_JIT_FRAMES = 64     # records followed at most (the kernel allows 8 frames; recursion in an
                        # unverified program may go deeper: its outer frames stay out of reach)
_GUARD_FILLS: dict[int, bytes] = {}


def _guard_fill(n: int) -> bytes:
    fill = _GUARD_FILLS.get(n)
    if fill is None:
        fill = _GUARD_FILLS[n] = bytes([GUARD_FILL]) * n
    return fill


class Buffer:
    """``size`` zeroed bytes at a stable address, kept alive as long as this object.

    With ``guard`` > 0 the buffer sits between two ``guard``-byte zones filled with
    :data:`GUARD_FILL`; :meth:`guards_intact` tells whether anything wrote there.
    """

    def __init__(self, size: int, init: bytes | bytearray | memoryview | None = None,
                 guard: int = 0, align: int = 16) -> None:
        if size < 0:
            raise ValueError("buffer size must be >= 0")
        self.size, self.guard = size, guard
        # Over-allocate so the usable part can be aligned to ``align`` (ctypes guarantees 16).
        # The ctypes array starts zeroed; guards and init go in through PROC slice stores,
        # which cost far less than ctypes.memset/memmove foreign calls (this runs per run).
        raw = (ctypes.c_char * (size + 2 * guard + align))()
        base = ctypes.addressof(raw)
        start = -(-(base + guard) // align) * align
        self._raw = raw
        self.address = start
        if guard:
            fill = _guard_fill(guard)
            PROC[start - guard:start] = fill
            PROC[start + size:start + size + guard] = fill
        if init is not None:
            data = init if type(init) is bytes else bytes(init)
            if len(data) > size:
                data = data[:size]
            PROC[start:start + len(data)] = data

    @classmethod
    def guarded_copy(cls, data, guard: int) -> "Buffer":
        """``Buffer(len(data), init=data, guard=guard)``, the per-run private copy of mem or a
        context, made with less Python: the whole image in one allocation and one copy.
        ctypes' buffers are 16-byte aligned (pymalloc, malloc), so the copy is when the guard
        is a multiple of 16; checked, and the general path otherwise."""
        size = len(data)
        if type(data) is not bytes or not size or guard % 16:
            return cls(size, init=data, guard=guard)
        fill = _guard_fill(guard)
        raw = (ctypes.c_char * (size + 2 * guard)).from_buffer_copy(fill + data + fill)
        start = ctypes.addressof(raw) + guard
        if start % 16:
            return cls(size, init=data, guard=guard)
        self = cls.__new__(cls)
        self.size, self.guard, self._raw, self.address = size, guard, raw, start
        return self

    def bytes(self) -> bytes:
        """A copy of the contents (a slice of PROC: a third of ctypes.string_at's cost)."""
        return PROC[self.address:self.address + self.size].tobytes()

    def view(self) -> memoryview:
        """A writable view of the contents (valid while this Buffer lives)."""
        return PROC[self.address:self.address + self.size]

    def guards_intact(self) -> bool:
        if not self.guard:
            return True
        want = bytes([GUARD_FILL]) * self.guard
        return (ctypes.string_at(self.address - self.guard, self.guard) == want
                and ctypes.string_at(self.address + self.size, self.guard) == want)


@dataclass
class Region:
    """``size`` bytes at ``start`` that a run may access; ``owner`` keeps the memory alive."""

    start: int
    size: int
    name: str
    writable: bool = True
    owner: object = field(default=None, repr=False, compare=False)
    # Map memory holds values between metadata a program must never reach: with ``stride``,
    # only ``[lo, hi)`` of each ``stride``-byte element is accessible (one value, not a
    # neighbour's header); ``allow(address, size)`` vets what is left (a ring buffer's
    # outstanding samples).
    stride: int = field(default=0, compare=False)
    lo: int = field(default=0, compare=False)
    hi: int = field(default=0, compare=False)
    allow: object = field(default=None, repr=False, compare=False)

    @property
    def end(self) -> int:
        return self.start + self.size

    def contains(self, address: int, size: int) -> bool:
        return (self.start <= address and address + size <= self.start + self.size
                and self.admits(address, size))

    def admits(self, address: int, size: int) -> bool:
        """Whether an access inside the bounds also stays within one value of the region."""
        if self.stride:
            off = (address - self.start) % self.stride
            if off < self.lo or off + size > self.hi:
                return False
        return self.allow is None or self.allow(address, size)

    def describe(self) -> str:
        ro = "" if self.writable else " read-only"
        return f"{self.name} [0x{self.start:x}, 0x{self.end:x}){ro}"


class RegionTable:
    """The regions one run may touch, sorted by address; the slow path of every access check.

    Regions never overlap. Map values and the arena band are added as regions when they exist.

    A JIT run's table has no stack region until a helper is called: then the BPF stack frames
    active at that call (:meth:`set_jit_frames`), never the rest of the thread's stack.
    """

    def __init__(self, regions=()) -> None:
        self._starts: list[int] = []
        self._regions: list[Region] = []
        # [lo, hi) of the thread stack a JIT run's frame records must lie in (None: the
        # table accepts no JIT frames), the frames now in the table and their regions
        self.frame_bounds: tuple[int, int] | None = None
        self._frames: tuple[int, ...] = ()
        self._frame_regions: list[Region] = []
        # objects whose regions native code may move behind the table's back (an XDP run's
        # packet: JIT code moves xdp_md.data itself, jit/native_packet.py); each has
        # ``sync(table)``, called before every lookup so the table is never stale when read
        self.movers: tuple = ()
        for r in regions:
            self.add(r)

    def __iter__(self):
        return iter(self._regions)

    def copy(self) -> "RegionTable":
        """A table of the same regions that can be changed without touching this one."""
        table = RegionTable.__new__(RegionTable)
        table._starts, table._regions = self._starts[:], self._regions[:]
        table.frame_bounds, table._frames = self.frame_bounds, self._frames
        table._frame_regions = self._frame_regions[:]
        table.movers = self.movers
        return table

    def __len__(self) -> int:
        return len(self._regions)

    def add(self, region: Region) -> Region:
        if region.size <= 0:
            return region  # nothing to access (a run without mem)
        i = bisect.bisect_right(self._starts, region.start)
        if (i > 0 and self._regions[i - 1].end > region.start) or \
                (i < len(self._regions) and region.end > self._regions[i].start):
            raise ValueError(f"region {region.describe()} overlaps another region")
        self._starts.insert(i, region.start)
        self._regions.insert(i, region)
        return region

    def move(self, region: Region, start: int, size: int) -> None:
        """Change a region's bounds in place; the caller keeps it inside its own memory (the
        interpreter narrows the stack region to the active frames this way)."""
        i = self._regions.index(region)
        region.start, region.size = start, size
        self._starts[i] = start

    def remove(self, region: Region) -> None:
        i = self._regions.index(region)
        del self._starts[i], self._regions[i]

    def set_jit_frames(self, record: int) -> None:
        """Make the BPF stack frames of the chain of frame records starting at ``record`` (see
        :data:`FRAME_RECORD`) this table's stack regions, replacing the previous ones.

        Records and frames must lie inside :attr:`frame_bounds` (LLVM may inline callees, so
        their order on the native stack says nothing); at most :data:`MAX_JIT_FRAMES` records
        are followed, and a frame overlapping another region is left out: a chain that
        unverified code overwrote gives at worst fewer accessible frames, never a region
        outside the thread's stack."""
        frames = []
        bounds = self.frame_bounds
        if bounds is not None:
            lo, hi = bounds
            last_record, last_frame, unpack = hi - FRAME_RECORD.size, hi - MAX_BPF_STACK, \
                FRAME_RECORD.unpack_from
            for _ in range(MAX_JIT_FRAMES):      # a forged cycle ends here, its frames refused
                if not lo <= record <= last_record:     # 0: past the entry function's record
                    break
                frame, record = unpack(PROC, record)
                if lo <= frame <= last_frame:
                    frames.append(frame)
        frames = tuple(frames)
        if frames == self._frames:
            return
        for r in self._frame_regions:
            self.remove(r)
        self._frame_regions = []
        for depth, frame in enumerate(frames):
            try:
                self._frame_regions.append(self.add(Region(frame, MAX_BPF_STACK,
                                                           f"stack frame {depth}")))
            except ValueError:      # overlaps a frame already in: a forged record
                continue
        self._frames = frames

    def follow(self, mover) -> None:
        """Keep ``mover``'s regions up to date: ``mover.sync(table)`` runs before each lookup
        (see :attr:`movers`)."""
        self.movers = (*self.movers, mover)

    def sync(self) -> None:
        for mover in self.movers:
            mover.sync(self)

    def find(self, address: int, size: int) -> Region | None:
        """The region holding all of ``[address, address + size)``, or None."""
        if self.movers:
            self.sync()
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            r = self._regions[i]
            if address + size <= r.start + r.size and (
                    not (r.stride or r.allow) or r.admits(address, size)):
                return r
        return None

    def describe(self) -> str:
        if self.movers:
            self.sync()
        return ", ".join(r.describe() for r in self._regions) or "nothing"

    def check(self, address: int, size: int, kind: str = "read", pc: int | None = None) -> Region:
        """The region for an access, or MemoryAccessError (``kind`` is "read" or "write")."""
        r = self.find(address, size)
        if r is None or (kind != "read" and not r.writable):
            raise MemoryAccessError(pc, address, size, kind, self.describe())
        return r

    # -- checked accessors (helpers and slow paths use these) ---------------------------------
    def read(self, address: int, size: int, pc: int | None = None) -> bytes:
        self.check(address, size, "read", pc)
        return bytes(PROC[address:address + size])

    def write(self, address: int, data: bytes, pc: int | None = None) -> None:
        self.check(address, len(data), "write", pc)
        PROC[address:address + len(data)] = data

    def load(self, address: int, size: int, signed: bool = False, pc: int | None = None) -> int:
        """A little-endian integer of ``size`` bytes (sign-extended to Python int if ``signed``)."""
        self.check(address, size, "read", pc)
        return (UNPACK_SIGNED if signed else UNPACK)[size](PROC, address)[0]

    def store(self, address: int, size: int, value: int, pc: int | None = None) -> None:
        self.check(address, size, "write", pc)
        PACK[size](PROC, address, value & ((1 << (8 * size)) - 1))

    def read_cstr(self, address: int, limit: int = 1 << 20, pc: int | None = None) -> bytes:
        """A NUL-terminated string (without the NUL); it must end inside one region."""
        r = self.find(address, 1)
        if r is None:
            raise MemoryAccessError(pc, address, 1, "read", self.describe())
        end = min(r.end, address + limit)
        data = bytes(PROC[address:end])
        nul = data.find(b"\0")
        if nul < 0:
            raise MemoryAccessError(pc, address, end - address + 1, "read", self.describe())
        return data[:nul]
