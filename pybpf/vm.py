"""The VM API: ``pybpf.VM`` owns maps, helpers and kfuncs; ``vm.load`` gives a runnable program.

    >>> import pybpf
    >>> from pybpf.insn import make
    >>> prog = pybpf.Program(make("mov64_imm", 0, imm=42) + make("exit"))
    >>> lp = pybpf.VM().load(prog, engine="interp")
    >>> lp.run()
    42

Maps. ``vm.create_map("hash", key_size=4, value_size=8, max_entries=64)`` is BPF_MAP_CREATE
(kernel type names and rules, :mod:`pybpf.runtime.maps`); the map gets an ``fd``, unique in the
process, that raw bytecode uses the kernel way (ld_imm64 src 1 / 2, ``imm`` = fd). Programs that
name maps by index (src 5 / 6: ``.map`` directives, unbound ELF objects) get them created at load
from their ``Program.maps`` declarations, once per declaration per VM, or bound to existing maps
with ``vm.load(prog, maps={"name": m})``. ``vm.maps`` holds the VM's maps by name (the latest
of a name wins; every map stays reachable by ``vm.map_by_fd``); ``lp.maps`` those a program uses.

Helpers: the kernel ones (:func:`pybpf.runtime.helpers.kernel_helpers` plus
:mod:`pybpf.runtime.vm_helpers`: maps, ring buffers, probe reads, tail calls, bpf_loop) and the
arena kfuncs; ``vm.register_helper(id, fn, name, prototype)`` adds a Python one.
``bpf_trace_printk`` output is kept for ``vm.trace_output()``.

Running: ``lp.run(mem=...)`` for ``prog_type="mem"``, ``lp.run(ctx=..., data=packet)`` for the
kernel-style contexts (:mod:`pybpf.runtime.contexts`); see :class:`LoadedProgram`.
``insn_limit`` (default 100 million executed instructions; ``VM(insn_limit=)``,
``vm.load(insn_limit=)`` or ``lp.run(insn_limit=)``) stops programs that would run longer.
"""
from __future__ import annotations

import errno
import itertools
import os
import random
import threading
import weakref

from pybpf.errors import MapError, VMError
from pybpf.program import Program, too_large
from pybpf.attach_types import section_attach_type
from pybpf.verdicts import verify as verify_program

from .runtime import helpers_control, helpers_xdp, vm_helpers
from .runtime.contexts import canonical_type
from .runtime.fib import FibTable
from .runtime.kfuncs_graph import Graphs
from .runtime.helpers import HelperRegistry, Prototype, kernel_helpers
from .loaded import DEFAULT_INSN_LIMIT, ENGINES, LoadedProgram, check_limit
from .runtime.loader import bind_declarations, program_arena, referenced_maps, resolve_values64
from .runtime.maps import create_map
from .runtime.maps.arena import PageBudget
from .runtime.maps.base import KERNEL_VIEW_SIZE
from .runtime.maps.prog_array import ProgArrayMap
from .runtime.memory import Region
from .runtime.verifier_env import VMEnv

__all__ = ["VM", "LoadedProgram", "DEFAULT_INSN_LIMIT", "ENGINES"]

# Map and program fds come from one process-wide counter (the kernel's fds share a table too),
# so an fd from another VM never names a map of this one.
_FDS = itertools.count(1)
_FD_LOCK = threading.Lock()
_MISSING = object()
MAX_MAPS = 4096                 # live maps per VM
MAX_MAP_BYTES = 16 << 30        # map memory per VM (values, elements, rings, arena pages)
MAX_ARENA_PAGES = 1 << 18       # arena pages allocated at once in a VM's arenas (1 GiB)


def _charge(m) -> int:
    """Bytes a map counts against its VM's limit: an arena its possible pages."""
    if m.type == "arena":
        return m.max_entries * 4096
    return m.map_mem_usage()


def _next_fd() -> int:
    with _FD_LOCK:
        return next(_FDS)


class VM:
    """Maps, helper and kfunc registries, and trace output shared by the programs it loads.

    ``helpers`` replaces the default kernel set (e.g. ``ubpf_test_helpers()`` for
    bpf_conformance files; map helpers are then not added, their ids would clash). ``seed``
    makes bpf_get_prandom_u32 reproducible. ``regions`` lists extra memory every run may access.
    ``task`` (:class:`pybpf.runtime.helpers_control.Task`) is what bpf_get_current_pid_tgid,
    _uid_gid and _comm report (default: the calling thread's, as BPF_PROG_TEST_RUN); it can be
    changed later through ``vm.task``.

    Resource limits: ``max_maps`` live maps, ``max_map_bytes`` of map memory, ``max_arena_pages``
    arena pages in use, and ``max_o2_slots``: the largest program the JIT compiles at -O2 (None:
    ``pybpf.jit.program.O2_MAX_SLOTS``, 16,384; -O2's time grows with the square of the
    program): above it tier "auto" keeps its first tier's code and tier "O2" is a JITError
    naming tiers "auto", "baseline" and "quick".
    """

    def __init__(self, helpers: HelperRegistry | None = None, *,
                 insn_limit: int = DEFAULT_INSN_LIMIT, seed: int | None = None,
                 max_maps: int = MAX_MAPS, max_map_bytes: int = MAX_MAP_BYTES,
                 max_arena_pages: int = MAX_ARENA_PAGES,
                 max_o2_slots: int | None = None,
                 task: helpers_control.Task | None = None) -> None:
        self._trace_lines: list[str] = []
        self.random = random.Random(seed)
        self.kfuncs = HelperRegistry(kind="kfunc")
        vm_helpers.install_kfuncs(self.kfuncs, self.resolve_map)    # kfunc ids never clash
        # bpf_obj_new's objects and the lists and trees built from them (runtime/kfuncs_graph)
        self.graphs = Graphs()
        vm_helpers.install_graph_kfuncs(self.kfuncs, self.graphs)
        # devices, routes and neighbours for bpf_fib_lookup and devmap entries (runtime/fib.py)
        self.fib = FibTable()
        if helpers is None:
            helpers = kernel_helpers(self._trace_lines, self.random)
            vm_helpers.install(helpers, self.resolve_map)
            helpers_xdp.install(helpers, self.resolve_map, fib=lambda: self.fib)
            vm_helpers.install_kptr_xchg(helpers, self.graphs)
            helpers_control.install(helpers, self.resolve_map, lambda: self.task)
        self.helpers = helpers
        self.task = task if task is not None else helpers_control.Task()
        self.insn_limit = check_limit(insn_limit)
        self.regions: list[Region] = []
        self.maps: dict[str, object] = {}
        self._by_fd: dict[int, object] = {}
        self._by_value: dict[int, object] = {}
        self._map_regions: list[Region] = []
        self._closing: list = []                    # closed maps that programs still hold
        # Per-VM resource limits (the kernel charges map memory to a memory cgroup and caps
        # open fds): live maps, and bytes of map memory (an arena counts its max_entries pages)
        self.max_maps, self.max_map_bytes = max_maps, max_map_bytes
        if max_o2_slots is not None and (isinstance(max_o2_slots, bool) or not
                                         isinstance(max_o2_slots, int) or max_o2_slots < 1):
            raise VMError(f"max_o2_slots={max_o2_slots!r}: expected a positive number of slots")
        self.max_o2_slots = max_o2_slots
        # arena pages in use (each arena's max_entries counts against max_map_bytes as address
        # space; this bounds the memory they actually take)
        self.arena_pages = PageBudget(max_arena_pages)
        self.closed = False
        self._decls: dict[int, tuple] = {}          # id(MapDecl) -> (decl, map)
        self._programs: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    # -- maps ----------------------------------------------------------------------------------
    def create_map(self, map_type, key_size: int = 0, value_size: int = 0, max_entries: int = 0,
                   flags: int = 0, map_extra: int = 0, name: str | None = None, **kwargs):
        """BPF_MAP_CREATE: a new map of ``map_type`` ("hash", "array", "ringbuf", "arena", ...)
        with an ``fd`` in this VM. ``kwargs`` go to the map class (``key_type=``,
        ``value_type=``, ``n_cpus=``...). MapError with the kernel's errno for bad attributes."""
        self._check_open()
        self.release_closed()
        if len(self._by_fd) >= self.max_maps:
            raise MapError(f"this VM already has {len(self._by_fd)} maps, its limit "
                           f"(VM(max_maps=...) raises it; close maps no longer needed)",
                           errno.EMFILE)
        m = create_map(map_type, key_size=key_size, value_size=value_size,
                       max_entries=max_entries, flags=flags, map_extra=map_extra, name=name,
                       fd=_next_fd(), **kwargs)
        used = sum(map(_charge, self._by_fd.values()))
        if used + _charge(m) > self.max_map_bytes:
            m.close()
            raise MapError(f"map memory limit: {used + _charge(m):,} bytes would exceed this "
                           f"VM's {self.max_map_bytes:,} (VM(max_map_bytes=...) raises it)",
                           errno.ENOMEM)
        if m.type == "arena":
            m.use_page_budget(self.arena_pages)
        self._by_fd[m.fd] = m
        self._by_value[m.address] = m
        if m.name:
            self.maps[m.name] = m
        if isinstance(m, ProgArrayMap):
            m.resolve_prog = self.program_by_fd
        if hasattr(m, "devices"):               # devmap entries name existing devices
            m.devices = lambda ifindex: self.fib.has_device(ifindex)
        if hasattr(m, "resolve_fd"):            # map-in-map values are map fds
            m.resolve_fd = lambda fd: self.map_by_fd(fd, default=None)
        rule = m.region_rule()
        for start, size, writable in m.regions():
            self._map_regions.append(Region(start, size, f"map {m.name or m.fd}", writable, m,
                                            **rule))
        if m.type != "arena":
            # the kernel's struct bpf_map a program reads through its map pointer (read-only)
            self._map_regions.append(Region(m.address, KERNEL_VIEW_SIZE,
                                            f"map {m.name or m.fd} struct bpf_map", False, m))
        m._close_hook = weakref.WeakMethod(self._map_closed)
        m.graphs = self.graphs          # what its values' graph roots hold (btf_fields)
        return m

    def _check_open(self) -> None:
        if self.closed:
            raise VMError("the VM is closed")

    def close(self) -> None:
        """Close every program and map of this VM; any later use of the VM raises VMError."""
        if self.closed:
            return
        for lp in list(self._programs.values()):
            lp.close()
        for m in list(self._by_fd.values()):
            m.close()
        self.graphs.close()
        self.closed = True
        self._programs.clear()
        self._by_fd.clear()
        self._by_value.clear()
        self.maps.clear()
        self._map_regions, self._decls, self._closing = [], {}, []

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _map_closed(self, m) -> None:
        self._closing.append(m)
        self.release_closed()

    def release_closed(self) -> int:
        """Drop the closed maps no live program uses from this VM's tables (their memory goes
        with the last reference); returns how many are still held by programs."""
        if not self._closing:
            return 0
        held = set()
        for lp in list(self._programs.values()):
            if not lp.closed:
                held.update(id(m) for m in lp.maps.values())
                if lp.arena is not None:
                    held.add(id(lp.arena))
        keep, gone = [], []
        for m in self._closing:
            (keep if id(m) in held else gone).append(m)
        self._closing = keep
        if gone:
            ids = {id(m) for m in gone}
            for table in (self._by_fd, self._by_value, self.maps):
                for k in [k for k, v in table.items() if id(v) in ids]:
                    del table[k]
            for r in self._map_regions:
                if id(r.owner) in ids:          # what their graph roots hold goes with them
                    self.graphs.free_in(r.start, r.size)
            self._map_regions = [r for r in self._map_regions if id(r.owner) not in ids]
            self._decls = {k: v for k, v in self._decls.items() if id(v[1]) not in ids}
        return len(keep)

    def map_by_fd(self, fd: int, default=_MISSING):
        """The map with this fd (MapError EBADF, or ``default`` when given)."""
        self._check_open()
        m = self._by_fd.get(fd)
        if m is None:
            if default is not _MISSING:
                return default
            raise MapError(f"fd {fd} is not a map of this VM", errno.EBADF)
        return m

    def resolve_map(self, value: int):
        """The map a helper's map argument names: ``map.address`` (ld_imm64) or an fd."""
        return self._by_value.get(value) or self._by_fd.get(value)

    def _decl_map(self, decl):
        entry = self._decls.get(id(decl))
        return entry[1] if entry is not None else None

    def _bind_decl(self, decl, m) -> None:
        self._decls[id(decl)] = (decl, m)     # the decl is kept, so its id stays unique

    def run_regions(self) -> list[Region]:
        """Memory every run may access besides its own stack and context: map values, ring
        buffers, arena bands (read-only: arena stores go through the arena), ``self.regions``."""
        return self._map_regions + self.graphs.regions() + self.regions

    # -- programs ------------------------------------------------------------------------------
    def program_by_fd(self, fd: int):
        """A loaded program by its fd (None if unknown or gone): prog_array values."""
        return self._programs.get(fd)

    def register_helper(self, id: int, fn, name: str | None = None, prototype=None,
                        unwind: bool = False, mem_args=None):
        """Add or replace helper ``id``; ``fn`` takes one int per prototype argument.

        ``prototype`` is a :class:`~pybpf.runtime.helpers.Prototype` or a sequence of kernel
        argument-type names (``("ARG_PTR_TO_MEM", "ARG_CONST_SIZE")``; default five
        ``ARG_ANYTHING``); pointer arguments it describes are checked before each call.
        """
        self._check_open()
        if prototype is not None and not isinstance(prototype, Prototype):
            prototype = Prototype(args=tuple(prototype))
        if prototype is not None and prototype.nargs > 5:
            raise VMError(f"helper {id}: at most 5 arguments, prototype has {prototype.nargs}")
        return self.helpers.register(id, fn, name, prototype, unwind, mem_args)

    def trace_output(self, clear: bool = True) -> list[str]:
        """Lines written by bpf_trace_printk since the last call (the VM's trace pipe)."""
        lines = list(self._trace_lines)
        if clear:
            self._trace_lines.clear()
        return lines

    def verify(self, prog, prog_type: str | None = None, log_level: int = 0,
               full: bool = True, attach_type: str | None = None) -> str:
        """Run the verifier (:func:`pybpf.verifier.verify`) on ``prog`` for ``prog_type``.

        Returns the log of an accepted program (kernel format at ``log_level`` 1 or 2, else
        empty); raises VerifierError (kernel message, instruction index, log). ``full=False``
        runs the structural checks only (decoding, jumps, reachability, exit, call depth,
        stack), what the ``.data`` runner uses for programs written for verifier-less runtimes.
        ``attach_type`` is the expected attach type (:mod:`pybpf.attach_types`), by default
        the one libbpf sets for an ELF program's section, else the type's default.
        """
        return self.verify_result(prog, prog_type, log_level, full, attach_type=attach_type).log

    def verify_result(self, prog, prog_type: str | None = None, log_level: int = 0,
                      full: bool = True, decl_maps: list | None = None,
                      attach_type: str | None = None):
        """:meth:`verify`, returning the whole :class:`pybpf.verifier.VerifyResult`. An accepted
        program verified before with the same inputs is answered from the verdict cache
        (:mod:`pybpf.verdicts`)."""
        prog = _as_program(prog)
        ptype = _prog_type(prog, prog_type)
        if attach_type is None:
            attach_type = section_attach_type(getattr(prog, "section", "") or "")
        return verify_program(prog, VMEnv(self, prog, decl_maps), prog_type=ptype,
                              log_level=log_level, full=full, attach_type=attach_type)

    def load(self, prog, prog_type: str | None = None, engine: str = "interp",
             verify=True, insn_limit: int | None = None, name: str | None = None,
             maps: dict | None = None, tier: str | None = None,
             attach_type: str | None = None) -> LoadedProgram:
        """Decode, verify and prepare ``prog`` (a Program, an ELF object's program or raw
        bytecode) for ``engine``. ``prog_type`` defaults to the ELF program's (from its
        section), else "mem". ``maps`` binds declared maps (by name) to existing ones.

        ``verify=True`` (the default, both engines) runs the whole verifier, as the kernel's
        BPF_PROG_LOAD does: a program it accepts cannot reach memory it was not given.
        ``verify="structural"`` runs only the structural checks (the ``.data`` runner's
        default: the interpreter still checks every access at run time). ``verify=False``
        skips verification: with ``engine="jit"`` this is for TRUSTED INPUT ONLY (JIT code
        runs unchecked); the interpreter still checks memory at run time.

        ``tier`` (JIT): "auto" returns once quick-tier code is placed (or -O2 code from the code
        cache) and installs -O2 code compiled in the background; "quick" keeps the quick tier;
        "O2" waits for -O2 code. None: ``$PYBPF_JIT_TIER``, else "auto".
        ``attach_type``: the expected attach type (:meth:`verify`).
        """
        self._check_open()
        # the kernel's size check comes first (bpf_prog_load, E2BIG); raw bytecode is measured
        # before it is decoded
        if isinstance(prog, (bytes, bytearray, memoryview)):
            msg = too_large(-(-len(prog) // 8))
            if msg:
                raise VMError(msg, errno=errno.E2BIG)
        prog = _as_program(prog, name)
        msg = too_large(len(prog))
        if msg:
            raise VMError(msg, errno=errno.E2BIG)
        ptype = _prog_type(prog, prog_type)
        if engine not in ENGINES:
            raise VMError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")
        if verify not in (True, False, "structural"):
            raise VMError(f"verify={verify!r}: expected True, False or 'structural'")
        limit = check_limit(insn_limit if insn_limit is not None else self.insn_limit)
        result = None
        if verify is True:
            decl_maps = bind_declarations(self, prog, maps)     # maps= bindings included
            result = self.verify_result(prog, ptype, full=True, decl_maps=decl_maps,
                                        attach_type=attach_type)
        elif verify == "structural":
            self.verify_result(prog, ptype, full=False)
        used, arena, values = self.resolve(prog, maps)
        self.graphs.prepare(prog)           # bpf_obj_new's heap, for programs that use it
        if tier is None:
            tier = os.environ.get("PYBPF_JIT_TIER") or "auto"
        if tier not in ("auto", "quick", "O2", "baseline"):
            raise VMError(f"unknown JIT tier {tier!r} (expected auto, quick, O2 or baseline)")
        lp = LoadedProgram(self, prog, ptype, engine, limit, name or prog.name, used, arena,
                           values, fd=_next_fd(), verified=verify is True,
                           verify_result=result, tier=tier)
        self._programs[lp.fd] = lp
        for m, index in getattr(prog, "prog_array_slots", ()):    # __array(values, ...)
            if m.fd in self._by_fd:
                m.update(index, lp)
        return lp

    # -- load-time resolution ------------------------------------------------------------------
    def resolve(self, prog: Program, maps: dict | None = None):
        """(maps the program uses, its arena, values64)."""
        self._check_open()
        decl_maps = bind_declarations(self, prog, maps)
        refs = referenced_maps(self, prog, decl_maps)
        arena = program_arena(prog, refs)
        # by declaration name (a declared map may be bound to a differently named one)
        used = [(d.name, m) for d, m in zip(prog.maps, decl_maps)]
        used += [(m.name or f"map{m.fd}", m) for _, m in sorted(refs.items())]
        return used, arena, resolve_values64(prog, refs, arena)

    def values64(self, prog, maps: dict | None = None) -> dict[int, int]:
        """The constant each ld_imm64 and addr_space_cast of ``prog`` stands for, by slot
        (:mod:`pybpf.runtime.loader`); binds the program's declared maps first."""
        return self.resolve(_as_program(prog), maps)[2]


# --- helpers ----------------------------------------------------------------------------------
def _as_program(prog, name: str | None = None) -> Program:
    if isinstance(prog, Program):
        err = getattr(prog, "load_error", None)    # an ELF program libbpf could not load
        if err is not None:
            raise type(err)(str(err))
        return prog
    if isinstance(prog, (bytes, bytearray, memoryview)):
        return Program.from_bytes(bytes(prog), name=name or "prog")
    inner = getattr(prog, "program", None)
    if isinstance(inner, Program):
        return inner
    raise TypeError(f"cannot load {type(prog).__name__}: expected a Program or raw bytecode")


def _prog_type(prog: Program, prog_type: str | None) -> str:
    if prog_type is None:
        prog_type = getattr(prog, "prog_type", None) or "mem"
    return canonical_type(prog_type)
