"""BPF helper functions: the registry (id -> name, Python function, prototype) and the built-in sets.

One :class:`HelperRegistry` serves the interpreter and the JIT. A helper's ``fn`` takes exactly
as many integer arguments as its prototype lists (r1, r2, ... as unsigned 64-bit values) and
returns an int (r0, masked to 64 bits by the caller). Pointer arguments are real process
addresses. The prototype (:class:`pybpf.verifier.protos.Prototype`; kernel helpers take theirs
from the one table, :mod:`pybpf.verifier.protos`) uses the kernel's argument-type names
(``ARG_PTR_TO_MEM`` followed by ``ARG_CONST_SIZE``, ``ARG_ANYTHING``, ...): the interpreter checks every pointer argument against
the run's memory regions *before* calling ``fn`` (as the kernel verifier does statically), so a
helper may touch the memory its prototype announced without checking it again. A helper with
``unwind=True`` stops the program with r0 = 0 when it returns 0 (uBPF's unwind convention).
An exception raised by ``fn`` aborts the run and reaches the caller unchanged.

Two sets are built in: :func:`kernel_helpers` (kernel ids from ``enum bpf_func_id`` that need no
maps) and :func:`ubpf_test_helpers` (the bpf_conformance/uBPF test plugin's ids 0-5, only for
``.data`` files; they clash with kernel ids, so they are a separate set).
"""
from __future__ import annotations

import contextvars
import ctypes
import functools
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from pybpf.helper_names import HELPER_NAMES
from pybpf.verifier import protos
from pybpf.verifier.protos import Prototype

from .memory import PROC, RegionTable
from .prandom import PrandomState

M64 = (1 << 64) - 1
CLOCK_MONOTONIC_COARSE = 6     # Linux's clock id; the time module has no name for it

# Kind names for prototypes written by hand (``vm.register_helper``); the kernel helpers' own
# prototypes come from the one table, pybpf.verifier.protos.
ANY = protos.ARG_ANYTHING
PTR_MEM = protos.ARG_PTR_TO_MEM                 # the helper may write [ptr, ptr + size)
PTR_MEM_RO = protos.ARG_PTR_TO_MEM_RDONLY       # the helper only reads it
SIZE = protos.ARG_CONST_SIZE
SIZE_OR_ZERO = protos.ARG_CONST_SIZE_OR_ZERO
PTR_STR = protos.ARG_PTR_TO_CONST_STR           # a NUL-terminated string the helper reads

# The active run's RegionTable, for helpers that follow pointers their prototype cannot describe
# (trace_printk's %s). None outside a run or in code that does not set it.
ACTIVE_REGIONS: contextvars.ContextVar = contextvars.ContextVar("pybpf_active_regions",
                                                                 default=None)
_NO_REGIONS = RegionTable()
# The active run's RunContext (runtime/contexts.py), for helpers that act on the run itself
# rather than on memory: the XDP head/tail helpers (its ``xdp`` buffer), the redirect helpers
# (``redirect``). None outside a run.
ACTIVE_RUN: contextvars.ContextVar = contextvars.ContextVar("pybpf_active_run", default=None)


@dataclass(frozen=True)
class Helper:
    """One helper. ``mem_args`` (optional) describes pointer arguments the prototype cannot size
    by itself (a map key or value: the size comes from the map): called with the argument values,
    it returns ``(address, size, kind)`` triples, kind "read" or "write", that the interpreter
    checks before calling ``fn``. ``special`` names helpers the engines implement themselves
    because they transfer control ("tail_call", "loop": bpf_loop's callback); their ``fn`` is
    only a stand-in. ``native`` describes a native implementation the JIT emits inline instead
    of calling ``fn`` through Python, with the same result: ``("const", value)``,
    ``("clock_gettime", clock_id)`` or ``("prandom_u32", PrandomState)``
    (``jit/native_helpers.py``)."""

    id: int
    name: str
    fn: Callable[..., int]
    prototype: Prototype = Prototype(args=(ANY,) * 5)
    unwind: bool = False
    mem_args: Callable[[tuple], list] | None = None
    special: str = ""
    native: tuple = ()

    @property
    def checks_memory(self) -> bool:
        return bool(self.prototype.memory_checks) or self.mem_args is not None

    @functools.cached_property
    def checked_fn(self) -> Callable[..., int]:
        """``fn`` behind the argument checks of :func:`check_args` against the active run's
        regions (:data:`ACTIVE_REGIONS`): what native code calls, so a helper never touches
        memory the run may not access, whatever the verifier said (a VM's JIT runs always set
        the table; bare ``JitProgram`` runs outside a VM set none and are trusted, as their
        memory accesses are). ``fn`` itself when the helper has no pointer arguments."""
        if not self.checks_memory or self.special:
            return self.fn
        fn, helper = self.fn, self

        def checked(*args: int) -> int:
            regions = ACTIVE_REGIONS.get()
            if regions is not None:
                check_args(regions, helper, args)
            return fn(*args)
        checked.__name__ = self.name
        return checked

    @functools.cached_property
    def framed_fn(self) -> Callable[..., int] | None:
        """What JIT code that records its BPF stack frames calls instead of :attr:`checked_fn`:
        ``framed(record, *args)``, where ``record`` is the innermost frame record of the
        calling code (:data:`pybpf.runtime.memory.FRAME_RECORD`). The run's stack regions
        become exactly the frames active at this call (a pointer anywhere else in the thread's
        stack is refused), then the arguments are checked and ``fn`` runs, which sees the same
        regions when it follows pointers itself (probe_read, trace_printk's %s). None for the
        helpers the engines implement themselves."""
        if self.special:
            return None
        fn, helper, checks = self.fn, self, self.checks_memory

        def framed(record: int, *args: int) -> int:
            regions = ACTIVE_REGIONS.get()
            if regions is not None:
                regions.set_jit_frames(record)
                if checks:
                    check_args(regions, helper, args)
            return fn(*args)
        framed.__name__ = self.name
        return framed


def check_args(regions, h: Helper, args: tuple, pc: int | None = None) -> None:
    """Raise MemoryAccessError unless every pointer argument of ``h`` (by its prototype and
    ``mem_args``) lies in ``regions`` (a RegionTable; None: outside a run, nothing is
    accessible) with the access its prototype announces."""
    if regions is None:
        regions = _NO_REGIONS
    nargs = len(args)
    # the prototype's plan is computed once (Prototype.memory_checks): rebuilding it from the
    # kind strings on every call was most of a bridged helper call's cost
    for pi, si, size, kind, zero_ok in h.prototype.memory_checks:
        ptr = args[pi] if pi < nargs else 0
        if kind == "str":
            regions.read_cstr(ptr, pc=pc)
            continue
        if kind == "ringbuf":
            continue
        if si is not None:
            size = args[si] if si < nargs else 1
            if size == 0 and zero_ok:
                continue
        regions.check(ptr, size, kind, pc)
    if h.mem_args is not None:
        for ptr, size, kind in h.mem_args(tuple(args[:h.prototype.nargs])):
            regions.check(ptr, size, kind, pc)


class HelperRegistry:
    """Helpers (or kfuncs) by id. ``kind`` only names them in error messages."""

    def __init__(self, helpers=(), kind: str = "helper") -> None:
        self.kind = kind
        self._by_id: dict[int, Helper] = {}
        for h in helpers:
            self.add(h)

    def add(self, helper: Helper) -> Helper:
        self._by_id[int(helper.id)] = helper
        return helper

    def register(self, id: int, fn: Callable[..., int], name: str | None = None,
                 prototype: Prototype | None = None, unwind: bool = False,
                 mem_args: Callable[[tuple], list] | None = None) -> Helper:
        """Add (or replace) helper ``id``; the prototype defaults to five ``ARG_ANYTHING``."""
        if not callable(fn):
            raise TypeError(f"helper {id}: {fn!r} is not callable")
        name = name or getattr(fn, "__name__", f"helper{id}")
        return self.add(Helper(int(id), name, fn, prototype or Prototype(args=(ANY,) * 5), unwind,
                               mem_args))

    def get(self, id: int) -> Helper | None:
        return self._by_id.get(id)

    def __getitem__(self, id: int) -> Helper:
        return self._by_id[id]

    def __contains__(self, id: object) -> bool:
        return id in self._by_id

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._by_id))

    def __len__(self) -> int:
        return len(self._by_id)

    def items(self):
        return sorted(self._by_id.items())

    def copy(self) -> "HelperRegistry":
        return HelperRegistry(self._by_id.values(), self.kind)

    def __repr__(self) -> str:
        names = ", ".join(f"{i}:{h.name}" for i, h in self.items())
        return f"<HelperRegistry {self.kind} {{{names}}}>"


# --- kernel helpers ---------------------------------------------------------------------------
def kernel_helpers(output: list | None = None, rng: random.Random | None = None) -> HelperRegistry:
    """The kernel helpers that need no maps, under their kernel ids.

    ``output`` collects ``bpf_trace_printk`` lines (the VM's trace pipe); ``rng`` seeds
    ``bpf_get_prandom_u32``'s generator (the kernel's taus113, :mod:`.prandom`; seed it for
    reproducible runs). The clocks, the processor id and the generator carry a ``native``
    description, so JIT code computes them without calling Python.
    """
    out = output if output is not None else []
    rand_state = PrandomState.seeded(rng)
    reg = HelperRegistry(kind="helper")

    def ktime_get_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def ktime_get_boot_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def ktime_get_coarse_ns() -> int:
        return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)

    def ktime_get_tai_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_TAI)

    def get_prandom_u32() -> int:
        return rand_state.next()

    def get_smp_processor_id() -> int:
        return 0  # the interpreter runs on one virtual CPU

    def trace_printk(fmt: int, size: int, a1: int, a2: int, a3: int) -> int:
        # bpf_bprintf_prepare + bstr_printf, as bpf_snprintf (the format checked by the
        # engines for ``size`` bytes; %s and the %p strings read the run's memory)
        from .bprintf import trace_printk as render
        n, line = render(ctypes.string_at(fmt, size & 0xFFFFFFFF) if size else b"",
                         (a1, a2, a3))
        if line is not None:
            out.append(line.rstrip("\n"))
        return n & M64

    for hid, fn, native in (
            (5, ktime_get_ns, ("clock_gettime", time.CLOCK_MONOTONIC)),
            (6, trace_printk, ()),
            (7, get_prandom_u32, ("prandom_u32", rand_state)),
            (8, get_smp_processor_id, ("const", 0)),
            (125, ktime_get_boot_ns, ("clock_gettime", time.CLOCK_BOOTTIME)),
            (160, ktime_get_coarse_ns, ("clock_gettime", CLOCK_MONOTONIC_COARSE)),
            (208, ktime_get_tai_ns, ("clock_gettime", time.CLOCK_TAI))):
        assert HELPER_NAMES[hid] == fn.__name__, (hid, fn.__name__)
        reg.add(Helper(hid, fn.__name__, fn, protos.HELPERS[hid], native=native))
    return reg


# --- bpf_conformance / uBPF test helpers -------------------------------------------------------
def ubpf_test_helpers() -> HelperRegistry:
    """The helpers of the bpf_conformance uBPF plugin (its .data files call them): ids 0-5.

    0 gather_bytes(a..e) = a<<32|b<<24|c<<16|d<<8|e (low byte of each), 1 memfrob(ptr, len)
    xors each byte with 42, 2 no-op, 3 sqrti(x) = (u64)sqrt(x), 4 strcmp(p1, p2), 5 unwind(x)
    returns x and stops the program with r0 = 0 when x is 0.
    """
    def gather_bytes(a: int, b: int, c: int, d: int, e: int) -> int:
        return ((a & 0xFF) << 32) | ((b & 0xFF) << 24) | ((c & 0xFF) << 16) | ((d & 0xFF) << 8) \
            | (e & 0xFF)

    def memfrob(ptr: int, size: int) -> int:
        if size:
            PROC[ptr:ptr + size] = bytes(x ^ 42 for x in PROC[ptr:ptr + size])
        return 0

    def no_op() -> int:
        return 0

    def sqrti(x: int) -> int:
        return int(math.sqrt(x))  # C: (uint64_t)sqrt((double)x), truncating

    def strcmp(p1: int, p2: int) -> int:
        s1, s2 = ctypes.string_at(p1), ctypes.string_at(p2)
        for c1, c2 in zip(s1 + b"\0", s2 + b"\0"):
            if c1 != c2:
                return (c1 - c2) & M64
        return 0

    def unwind(x: int) -> int:
        return x

    reg = HelperRegistry(kind="helper")
    for fn in (gather_bytes, memfrob, no_op, sqrti, strcmp, unwind):
        proto = next(p for p in protos.UBPF_TEST_HELPERS.values() if p.name == fn.__name__)
        reg.add(Helper(proto.id, fn.__name__, fn, proto, unwind=fn is unwind))
    return reg
