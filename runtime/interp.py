"""The reference interpreter: compiles a Program to Python once, then runs it against checked memory.

:class:`Interpreter` takes a decoded :class:`~pybpf.program.Program`, generates Python source for
it (:mod:`pybpf.runtime.interp_codegen`, semantics from :mod:`pybpf.runtime.interp_snippets`),
``compile()``\\ s it once, and runs it. :class:`Run` is the per-run state the generated code
calls into on its slow paths: memory accesses that miss the inline stack/fast-region checks go
through the run's :class:`~pybpf.runtime.memory.RegionTable` (MemoryAccessError before anything
is touched), atomics, legacy packet loads, ``callx``, helper argument checks and tracing.

Each run gets a fresh stack: the main frame at the top, each BPF-to-BPF call one 512-byte frame
lower (at most ``MAX_CALL_FRAMES`` per program), r10 pointing one past the top of the current
frame; a tail call from a subprogram starts the target program in the caller's frame, so the
frames of up to 34 programs can stack up, as in the kernel. A
frame may access its own and its callers' frames (pointers passed down), never deeper ones.
r6-r9 are the caller's locals in the generated code, so they survive calls as the kernel's
calling convention promises; a callee starts with r0 and r6-r9 zero.

Arena accesses (the kernel's PROBE_MEM32) land at ``kern_vm_start + zext32(reg) + off`` and go
through the arena's BPF-access API (``load``/``store``/``atomic``): unallocated pages read 0,
stores and atomics there are dropped, and no address can fault. Which accesses are arena
accesses comes, for a verified program, from the verifier's register types (``facts``: the
instructions whose base register is PTR_TO_ARENA on every path), as the kernel's JIT and
pybpf's JIT decide: those go straight to the arena whatever the 32-bit value, and no other
access may reach it. An unverified program has no types: there an address inside an arena's
band (a full user pointer), or, in a program with an arena, any access that misses every region
and whose base register holds a 32-bit value, is taken for one (a range heuristic that relies
on arena offsets and real buffers not overlapping: run memory below 4 GiB, the packet contexts,
lies in the low 2 GiB, default arenas' offsets near 4 GiB).

Control transfers the engine implements itself: ``bpf_tail_call`` (the target program's entry
replaces the current frame with r1 = ctx, the stack frame and budget carry on, at most
``MAX_TAIL_CALL_CNT`` = 33 per run; a failed call falls through with r0 unchanged, as the
kernel's interpreter and x86 JIT leave it) and ``bpf_loop`` (the callback subprogram, found from
the ld_imm64 func value, runs one frame deeper per iteration).
"""
from __future__ import annotations

import errno
import time

from pybpf import isa
from pybpf.errors import MemoryAccessError, VMError
from pybpf.verifier.cfg import build_cfg
from pybpf.uapi import MAX_TAIL_CALL_CNT

from .atomics import native_atomic
from .helpers import ACTIVE_REGIONS, HelperRegistry, check_args
from .helpers_control import for_each_start
from .interp_codegen import Generator
from .loader import func_slot
from .map_helpers import tail_call_target
from .maps.arena import Arena
from .maps.prog_array import ProgArrayMap
from .memory import PACK, PROC, UNPACK, UNPACK_SIGNED, Buffer, Region, RegionTable
from .trace import Tracer

M64 = (1 << 64) - 1
# One program's frames: the main frame and up to 7 calls. Tail calls from subprograms stack
# whole programs on the calling frames (the target replaces only the calling frame), as in the
# kernel, which runs such chains to MAX_TAIL_CALL_CNT: the stack has room for 34 programs.
FRAMES_SIZE = isa.MAX_CALL_FRAMES * isa.MAX_BPF_STACK
STACK_SIZE = FRAMES_SIZE * (MAX_TAIL_CALL_CNT + 1)
_ZERO_STACK = bytes(STACK_SIZE)
_STACKS_KEPT = 4                  # finished runs' stacks an Interpreter keeps for the next runs


class _Stop(Exception):
    """The program ends now with r0 = 0 (unwind helper returned 0, ld_abs out of bounds)."""


# Arena atomics: op -> (src value, r0) -> (old -> new value, None for no write).
def _sdiv(a: int, b: int) -> int:
    if not b:
        return 0
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def _smod(a: int, b: int) -> int:
    if not b:
        return a
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def _bswap64(v: int) -> int:
    return int.from_bytes(v.to_bytes(8, "little"), "big")


# Globals of the generated module: the process view, accessors and the pure helpers above.
_NAMESPACE = {
    "P": PROC, "VMError": VMError, "_Stop": _Stop, "_sdiv": _sdiv, "_smod": _smod,
    "_bswap64": _bswap64,
    **{f"_U{n}": UNPACK[n] for n in (2, 4, 8)},
    **{f"_I{n}": UNPACK_SIGNED[n] for n in (1, 2, 4, 8)},
    **{f"_W{n}": PACK[n] for n in (2, 4, 8)},
}


class Run:
    """State of one run, bound into the generated code by ``_build(R)``.

    The slow paths get the current frame's lower bound (``lo``): the stack region in the table
    is narrowed to the active frames ``[lo, top)`` before each lookup, so a frame never reaches
    a deeper (dead) frame's memory.
    """

    def __init__(self, interp: "Interpreter", regions: RegionTable, fast: Region | None,
                 insn_limit: int, packet: bytes | None, tracer: Tracer | None) -> None:
        self.interp, self.regions, self.insn_limit = interp, regions, insn_limit
        self.stack = interp.take_stack()
        self.stop = self.stack.address + STACK_SIZE
        self.stack_region = regions.add(Region(self.stop - isa.MAX_BPF_STACK, isa.MAX_BPF_STACK,
                                               "stack", True, self.stack))
        # The fast region is checked inline; only a writable one may be (stores use the test too).
        if fast is not None and fast.size and fast.writable:
            self.mlo, self.mhi = fast.start, fast.end
        else:
            self.mlo, self.mhi = 1, 0
        self.packet = packet
        self.tail_count = [0]       # tail calls taken so far, shared along the chain
        self._tail_entries: dict[int, object] = {}
        self.funcs: dict[int, object] = {}
        self._bind(interp, tracer)

    def _bind(self, interp: "Interpreter", tracer: Tracer | None) -> None:
        self.interp, self.arena, self.offs = interp, interp.arena, interp.offs
        self.same_value = interp.same_value
        self.tracer = tracer
        if tracer is not None:
            self.trace_insn, self.trace_sync = tracer.insn, tracer.sync
            self.trace_enter = tracer.enter

    def sibling(self, interp: "Interpreter") -> "Run":
        """A Run of another program sharing this run's stack, regions, packet and tail-call
        count (what a tail call enters)."""
        other = object.__new__(Run)
        other.__dict__.update(self.__dict__)
        other.funcs, other._tail_entries = {}, {}
        if interp.moves_packet:     # its packet may move: no inline fast-region bounds
            other.mlo, other.mhi = 1, 0
        tracer = None
        if self.tracer is not None:
            tracer = Tracer(interp.prog, self.tracer.callback, self.regions, interp.arena)
        other._bind(interp, tracer)
        return other

    def _find(self, lo: int, a: int, n: int, pc: int = -1) -> Region | None:
        if self.stack_region.start != lo:
            self.regions.move(self.stack_region, lo, self.stop - lo)
        r = self.regions.find(a, n)
        if r is not None and r.stride and pc >= 0 and self.same_value:
            # Unverified code: one map value, not its neighbour: the base register (a - off)
            # must point into the element the access lands in. A verified program's pointer
            # may leave its value between accesses (r0 += 24; *(r0 - 16) is in bounds for the
            # kernel): the verifier tracked which value it points into, so only the stride's
            # [lo, hi) applies to it.
            base = a - self.offs.get(pc, 0) - r.start
            if base < 0 or base // r.stride != (a - r.start) // r.stride:
                return None
        return r

    # -- slow paths ----------------------------------------------------------------------------
    def limit_error(self, pc: int) -> VMError:
        return VMError(f"instruction limit of {self.insn_limit} exceeded (the program did not "
                       f"finish; raise insn_limit if it is meant to run longer)", pc)

    def _arena_target(self, pc: int, a: int, r: Region | None) -> int | None:
        """The band address of an arena access, or None when ``a`` is not one.

        An address in the arena's band is one (a full user pointer); so is any access missing
        every region whose base register holds a 32-bit value, in a program with an arena: the
        kernel's PROBE_MEM32 access ``kern_vm_start + zext32(reg) + off``.
        """
        if self.interp.typed:           # verified: the verifier said this is no arena access
            return None
        if r is not None:
            return a if isinstance(r.owner, Arena) else None
        if self.arena is None:
            return None
        off = self.offs.get(pc, 0)
        reg = a - off
        return self.arena.bpf_address(reg, off) if 0 <= reg <= 0xFFFFFFFF else None

    def ld(self, pc: int, lo: int, a: int, n: int, signed: bool) -> int:
        r = self._find(lo, a, n, pc)
        if r is None or isinstance(r.owner, Arena):
            addr = self._arena_target(pc, a, r)
            if addr is None:
                raise MemoryAccessError(pc, a & M64, n, "read", self.regions.describe())
            return (r.owner if r is not None else self.arena).load(addr, n, signed) & M64
        if signed:
            return UNPACK_SIGNED[n](PROC, a)[0] & M64
        return UNPACK[n](PROC, a)[0]

    def st(self, pc: int, lo: int, a: int, n: int, v: int) -> None:
        r = self._find(lo, a, n, pc)
        if r is None or not r.writable:
            addr = self._arena_target(pc, a, r)
            if addr is None:
                raise MemoryAccessError(pc, a & M64, n, "write", self.regions.describe())
            (r.owner if r is not None else self.arena).store(addr, n, v)   # dropped if unbacked
            return
        PACK[n](PROC, a, v)

    def atomic(self, pc: int, lo: int, a: int, n: int, op: str, v: int, r0: int) -> int:
        r = self._find(lo, a, n, pc)
        mask = (1 << (8 * n)) - 1
        if r is None or not r.writable:
            addr = self._arena_target(pc, a, r)
            if addr is None:
                raise MemoryAccessError(pc, a & M64, n, "atomic access", self.regions.describe())
            arena = r.owner if r is not None else self.arena
            old = arena.atomic_op(addr, n, op, v & mask, r0 & mask)
            if old is None:     # dropped: the register that would get the old value keeps its own
                return r0 if op == "cmpxchg" else v
            return old
        return native_atomic(op, a, n, v & mask, r0 & mask, pc)

    # -- accesses the verifier typed PTR_TO_ARENA (PROBE_MEM32): never a region lookup ----------
    def _arena_of(self, pc: int):
        if self.arena is None:          # the verifier saw an arena map: the run must have one
            raise VMError("arena access without an arena map", pc)
        return self.arena

    def arena_ld(self, pc: int, reg: int, off: int, n: int, signed: bool) -> int:
        arena = self._arena_of(pc)
        return arena.load(arena.bpf_address(reg, off), n, signed) & M64

    def arena_st(self, pc: int, reg: int, off: int, n: int, v: int) -> None:
        arena = self._arena_of(pc)
        arena.store(arena.bpf_address(reg, off), n, v)          # dropped if unbacked

    def arena_atomic(self, pc: int, reg: int, off: int, n: int, op: str, v: int, r0: int) -> int:
        arena = self._arena_of(pc)
        mask = (1 << (8 * n)) - 1
        old = arena.atomic_op(arena.bpf_address(reg, off), n, op, v & mask, r0 & mask)
        if old is None:     # dropped: the register that would get the old value keeps its own
            return r0 if op == "cmpxchg" else v
        return old

    def ldabs(self, pc: int, off: int, n: int) -> int:
        # Legacy packet load: big-endian read at a 32-bit offset into the packet; out of bounds
        # ends the program with r0 = 0, as in the kernel.
        if self.packet is None:
            raise VMError("ld_abs/ld_ind needs a socket-filter context: run with data=<packet>", pc)
        off &= 0xFFFFFFFF
        off = off - (1 << 32) if off >> 31 else off
        if off < 0 or off + n > len(self.packet):
            raise _Stop()
        return int.from_bytes(self.packet[off:off + n], "big")

    def tail_call(self, pc: int, map_value: int, index: int):
        """The entry bpf_tail_call jumps to (called with r1 ctx), or None to fall through."""
        resolve = self.interp.resolve_map
        m = resolve(map_value) if resolve is not None else None
        if not isinstance(m, ProgArrayMap):
            raise VMError(f"bpf_tail_call: 0x{map_value:x} is not a prog_array map", pc)
        target = tail_call_target(m, index)
        if target is None or self.tail_count[0] >= MAX_TAIL_CALL_CNT:
            return None
        interp = getattr(target, "_interp", None)
        if interp is None:
            why = "is closed" if getattr(target, "closed", False) else \
                "is not loaded on the interpreter"
            raise VMError(f"bpf_tail_call: program {getattr(target, 'name', target)!r} at "
                          f"index {index & 0xFFFFFFFF} {why}", pc)
        self.tail_count[0] += 1
        self.stack.deep = True      # the chain may go below the top FRAMES_SIZE bytes
        entry = self._tail_entries.get(id(interp))
        if entry is None:
            sub = self.sibling(interp)
            build = interp.build_for(self.tracer is not None)
            entry = self._tail_entries[id(interp)] = build(sub)
        return entry

    def loop(self, pc: int, fp: int, depth: int, left: int, nr: int, fn: int, ctx: int,
             flags: int) -> tuple[int, int]:
        """bpf_loop: call the callback subprogram (i, ctx) up to ``nr`` times; stops after a
        non-zero return. Returns (iterations done or -errno, budget left)."""
        if flags:
            return -errno.EINVAL & M64, left
        nr &= 0xFFFFFFFF
        if nr > isa.BPF_MAX_LOOPS:
            return -errno.E2BIG & M64, left
        slot = func_slot(fn)
        callback = self.funcs.get(slot) if slot is not None else None
        if callback is None:
            raise VMError(f"bpf_loop: 0x{fn:x} is not a function of this program", pc)
        if depth >= isa.MAX_CALL_FRAMES - 1:
            raise VMError(f"the call stack of {depth + 2} frames is too deep", pc)
        for i in range(nr):
            r, left = callback(i, ctx, 0, 0, 0, fp - isa.MAX_BPF_STACK, depth + 1, left)
            if r:
                return i + 1, left
        return nr, left

    def for_each(self, pc: int, fp: int, depth: int, left: int, map_value: int, fn: int,
                 ctx: int, flags: int) -> tuple[int, int]:
        """bpf_for_each_map_elem: the callback (map, key, value, ctx) per element until one
        returns non-zero; returns (elements visited or -errno, budget left). The key is a
        read-only region of its own while the walk lasts."""
        walk = for_each_start(self.interp.resolve_map or (lambda v: None), map_value, flags, pc)
        if isinstance(walk, int):
            return walk, left
        slot = func_slot(fn)
        callback = self.funcs.get(slot) if slot is not None else None
        if callback is None:
            raise VMError(f"bpf_for_each_map_elem: 0x{fn:x} is not a function of this "
                          f"program", pc)
        if depth >= isa.MAX_CALL_FRAMES - 1:
            raise VMError(f"the call stack of {depth + 2} frames is too deep", pc)
        region = self.regions.add(walk.region())
        try:
            while True:
                value = walk.next()
                if not value:
                    break
                r, left = callback(map_value, walk.key, value, ctx, 0, fp - isa.MAX_BPF_STACK,
                                   depth + 1, left)
                if r:
                    break
        finally:
            if region.size:
                self.regions.remove(region)
        return walk.count, left

    def rbtree_add(self, pc: int, fp: int, depth: int, left: int, root: int, node: int,
                   fn: int) -> tuple[int, int]:
        """bpf_rbtree_add_impl(root, node, less): place ``node`` calling ``less(node, other)``
        (runtime/kfuncs_graph.RbAdd); returns (0 or -EINVAL, budget left)."""
        from pybpf.kfunc_ids import KFUNC_IDS
        h = self.interp.kfuncs.get(KFUNC_IDS["bpf_rbtree_add_impl"])
        slot = func_slot(fn)
        callback = self.funcs.get(slot) if slot is not None else None
        if callback is None:
            raise VMError(f"bpf_rbtree_add: 0x{fn:x} is not a function of this program", pc)
        if depth >= isa.MAX_CALL_FRAMES - 1:
            raise VMError(f"the call stack of {depth + 2} frames is too deep", pc)
        self.regions.check(root, 16, "write", pc)
        add = h.fn.graphs.rbtree_add_start(root, node)
        while True:
            other = add.next()
            if not other:
                return add.result, left
            r, left = callback(node, other, 0, 0, 0, fp - isa.MAX_BPF_STACK, depth + 1, left)
            add.answer(r)

    def callx(self, pc: int, lo: int, hid: int, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        h = self.interp.helpers.get(hid) if self.interp.helpers is not None else None
        if h is None:
            raise VMError(f"callx to unknown helper id {hid}", pc)
        args = (r1, r2, r3, r4, r5)
        if h.checks_memory:
            self._check_args(pc, lo, h, args)
        r0 = h.fn(*args[:h.prototype.nargs]) & M64
        if h.unwind and not r0:
            raise _Stop()
        return r0

    # -- helpers -------------------------------------------------------------------------------
    def helper_fn(self, hid: int):
        return self.interp.helpers[hid].fn

    def kfunc_fn(self, kid: int):
        return self.interp.kfuncs[kid].fn

    def helper_check(self, hid: int):
        h = self.interp.helpers[hid]
        return lambda pc, lo, *args: self._check_args(pc, lo, h, args)

    def kfunc_check(self, kid: int):
        h = self.interp.kfuncs[kid]
        return lambda pc, lo, *args: self._check_args(pc, lo, h, args)

    def _check_args(self, pc: int, lo: int, h, args) -> None:
        """Refuse a call whose pointer arguments are not inside the run's regions.

        Leaves the stack region set to the caller's active frames, so a helper reading the
        table (trace_printk's %s) sees the same memory the program may use.
        """
        if self.stack_region.start != lo:
            self.regions.move(self.stack_region, lo, self.stop - lo)
        check_args(self.regions, h, args, pc)


def _cfg(prog):
    try:
        return build_cfg(prog, check=False)
    except StopIteration:
        # build_cfg(check=False) cannot place a jump target outside every subprogram.
        raise VMError("jump out of range (load with verify=True for the exact message)") from None


class Interpreter:
    """A program compiled to Python for the reference interpreter.

    ``helpers``/``kfuncs`` are HelperRegistry objects; ``values64`` gives the resolved constant
    of every ld_imm64 pseudo form and cast_user instruction (slot -> value); the loader computes
    them. ``arena`` is the program's arena map (its PROBE_MEM32 accesses, see
    :meth:`Run._arena_target`); ``resolve_map`` turns a map pointer value back into the map
    (tail calls); ``same_value`` (unverified programs) requires a map access's base register
    to point into the value it reaches; ``facts`` (a verified program's
    :class:`pybpf.verifier.facts.Facts`) decide which accesses are arena accesses, as the
    verifier's register types do for the kernel's JIT. Loading fails (VMError) for calls to
    helpers or kfuncs the registries lack.
    """

    def __init__(self, prog, helpers: HelperRegistry | None = None,
                 kfuncs: HelperRegistry | None = None, values64: dict[int, int] | None = None,
                 cfg=None, arena=None, resolve_map=None, same_value: bool = True,
                 facts=None) -> None:
        self.prog = prog
        self.same_value = same_value     # the base-register check of unverified programs
        self.helpers, self.kfuncs = helpers, kfuncs
        self.arena, self.resolve_map = arena, resolve_map
        # memory displacements by slot: the slow path recovers an access's base register
        self.offs = {pc: insn.off for pc, form, insn in prog.instructions() if form.size}
        self.values64 = dict(values64 or {})
        self.cfg = cfg if cfg is not None else _cfg(prog)
        # calls a helper that may move or resize the packet (bpf_helper_changes_pkt_data)
        self.moves_packet = any(
            form.kind == "call" and form.op == "helper" and helpers is not None
            and getattr(getattr(helpers.get(insn.imm), "prototype", None), "changes_pkt_data",
                        False)
            for _pc, form, insn in prog.instructions())
        # typed: the verifier's facts classify every memory access (arena or not); an access
        # it saw through different pointer kinds on different paths keeps the range rule
        self.arena_pcs, self.typed = arena_accesses(prog, facts)
        self._build = self._compile(self._generator(False), "fast")
        self._trace_build = None
        self._stacks: list[Buffer] = []

    def take_stack(self) -> Buffer:
        """A zeroed stack for a run: a finished run's (see :meth:`Session.close`) or a new one."""
        try:
            stack = self._stacks.pop()
        except IndexError:
            return Buffer(STACK_SIZE, align=64)
        # a run without tail calls from subprograms touched only the top FRAMES_SIZE bytes
        dirty = STACK_SIZE if getattr(stack, "deep", False) else FRAMES_SIZE
        PROC[stack.address + STACK_SIZE - dirty:stack.address + STACK_SIZE] = _ZERO_STACK[:dirty]
        stack.deep = False
        return stack

    def _generator(self, trace: bool) -> Generator:
        return Generator(self.prog, self.cfg, self.helpers, self.kfuncs, self.values64,
                         trace=trace, arena_pcs=self.arena_pcs)

    def _compile(self, gen: Generator, variant: str):
        """``_build`` of ``gen``'s program: each unit (chunk makers, then ``_build``) compiled as
        it is generated, its text dropped, so the peak is one unit's compilation."""
        ns = dict(_NAMESPACE)
        makers = ns["MK"] = []
        for unit in gen.units():
            exec(compile(unit, f"<bpf {self.prog.name} {variant}>", "exec"), ns)
            if unit.startswith("def _mk"):
                makers.append(ns.pop(f"_mk{len(makers)}"))
        return ns["_build"]

    @property
    def source(self) -> str:
        """The generated Python (fast variant), generated again on demand: a large program's
        text is not kept."""
        return self._generator(False).source()

    def build_for(self, trace: bool):
        """The ``_build(R)`` of the fast or the tracing variant."""
        if not trace:
            return self._build
        if self._trace_build is None:
            self._trace_build = self._compile(self._generator(True), "trace")
        return self._trace_build

    def trace_source(self) -> str:
        return self._generator(True).source()

    def start(self, regions: RegionTable, fast: Region | None, insn_limit: int,
              packet: bytes | None = None, trace=None) -> "Session":
        """Bind a run (stack, regions, budget, optional trace callback) ready to be called."""
        tracer = Tracer(self.prog, trace, regions, self.arena) if trace is not None else None
        build = self.build_for(trace is not None)
        run = Run(self, regions, fast, insn_limit, packet, tracer)
        return Session(run, build(run))


class Session:
    """One bound run of an Interpreter; ``call`` may be repeated (test_run)."""

    def __init__(self, run: Run, entry) -> None:
        self.run, self.entry = run, entry
        self.executed: int | None = None

    def call(self, r1: int = 0, r2: int = 0) -> int:
        run = self.run
        self.executed = None   # stays None when the run stops early (error, unwind)
        run.tail_count[0] = 0  # the tail-call budget is per run (test_run repeats)
        token = ACTIVE_REGIONS.set(run.regions)
        try:
            r0, left = self.entry(r1 & M64, r2 & M64, 0, 0, 0, run.stop, 0, run.insn_limit)
            self.executed = run.insn_limit - left
        except _Stop:
            r0 = 0
        finally:
            ACTIVE_REGIONS.reset(token)
        return r0

    def close(self) -> None:
        """The run is over: its stack may serve the Interpreter's next run."""
        run, self.run = self.run, None
        if run is not None:
            stacks = run.interp._stacks
            if len(stacks) < _STACKS_KEPT:
                stacks.append(run.stack)

    def repeat(self, r1: int, r2: int, count: int) -> tuple[int, float]:
        """Run ``count`` times; returns (last r0, mean ns per run)."""
        r0 = 0
        t0 = time.perf_counter_ns()
        for _ in range(count):
            r0 = self.call(r1, r2)
        return r0, (time.perf_counter_ns() - t0) / max(count, 1)


__all__ = ["Interpreter", "Session", "Run", "STACK_SIZE"]


def arena_accesses(prog, facts) -> tuple[frozenset, bool]:
    """(the memory instructions that are arena accesses, whether the classification is the
    verifier's). Without facts (an unverified load): no instruction is known to be one and the
    run-time range rule decides. With facts: an instruction whose base register the verifier
    saw as PTR_TO_ARENA on every path is one; "typed" is False when some access mixed arena and
    other pointers (the kernel saves one pointer type per instruction: pybpf keeps the range
    rule for such a program rather than guess)."""
    if facts is None:
        return frozenset(), False
    arena, mixed = set(), False
    for pc, form, insn in prog.instructions():
        if form.kind not in ("ldx", "st", "stx", "atomic"):
            continue
        kind = facts.arena_access(pc)
        if kind is True:
            arena.add(pc)
        elif kind == "mixed":
            mixed = True
    return frozenset(arena), not mixed

