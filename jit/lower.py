"""Lower BPF programs to LLVM IR (``llvmlite.ir`` only) with exactly the interpreter's semantics.

One LLVM function per subprogram (boundaries and block leaders come from
:func:`pybpf.verifier.cfg.build_cfg`): every basic block is created up front, the eleven BPF
registers are entry-block allocas that mem2reg/SROA promote, and each frame has its own 512-byte
stack alloca with r10 pointing one past its top; when the program never writes r10 (the
verifier's rule), r10-relative accesses address the alloca directly, so that SROA can turn
stack slots into registers (a fifth less LLVM time). Within a BPF block a register lives as an
SSA value: it is loaded from its alloca on first use and written back once, before the block's
terminator, if the block changed it and a later block may read it; a pure instruction whose
result nothing reads is not lowered at all (register liveness, :mod:`pybpf.verifier.liveness`).
All of this is less IR to build, print, parse and clean up. Instructions
are dispatched on the ISA table's ``kind`` (``_lower_<kind>``) and then its
``op``/``width``/``size``/``source`` fields; nothing here lists opcodes. The hot instructions
are written as text by :class:`~pybpf.jit.cgutils.TextBuilder` into llvmlite's blocks.

Calling convention: a program's entry is ``i64 @<entry>(i64 r1, i64 r2)``; a subprogram is
``i64 @<entry>.<name>(i64 r1..r5)``, or ``{i64, i1}`` when the program can *abort*. A program
aborts when a Python helper raised (the shared bridge of :mod:`pybpf.jit.helper_calls` reports
it and leaves the exception set), when the ``unwind`` helper returned 0 or when ld_abs/ld_ind
went out of bounds; the flag travels back up the frames in the second return value (the
run-state word, kept in a register: no shared memory, so threads cannot disturb each other) and
the entry returns 0. Programs that make tail calls, or whose ld_abs/ld_ind read the run's packet
descriptor, add a chain-record pointer (tail-call count, packet descriptor) to every function
and have an ``<entry>.tail`` body (:mod:`pybpf.jit.calls`).

Frame records. A program that calls helpers or kfuncs through the Python bridge keeps a chain
of 16-byte records on the native stack, one per active BPF frame (the layout is
:data:`pybpf.runtime.memory.FRAME_RECORD`): each function's entry block fills its own record
with the low address of its 512-byte stack (0 when its frame pointer is never used as a value,
so no pointer into the frame can exist) and its caller's record, which subprograms get as an
extra ``i64`` argument (before the tail-call count); the entry function's is 0, so a
tail-called program starts a chain of its own. Bridged calls pass the innermost record, and the
run's stack regions are exactly these frames, BPF-to-BPF callers and the frames of the
bpf_loop/for_each callers included: a helper refuses a pointer anywhere else in the thread's
stack, as in the interpreter, whatever the verifier said.

Addresses that differ between processes (helpers and the Python bridge, maps, the arena, the
packet descriptor) are external symbols (``cgutils.Externs``: ``pybpf.x<n>``, one per distinct
value in order of first use) that :mod:`pybpf.jit.link` resolves at placement, so the IR and the
code depend only on the program and the facts below. Values only the loader knows come in ``values64`` (slot -> constant), the
same table the interpreter takes: the resolved constant of an ``ld_imm64`` pseudo form (a map
address, ...) and, for ``cast_user``, the arena's upper 32 bits; and in a
:class:`~pybpf.jit.env.JitEnv`: the arena, the kfunc registry, the map resolver (native map
lookups, tail calls), the packet descriptor of ld_abs/ld_ind. Without them those forms raise
:class:`~pybpf.errors.JITError` saying they are not supported yet (``ld_imm64`` function
references need a JitEnv: their value is the interpreter's token, :func:`calls.func_value`).

Arena accesses (:mod:`pybpf.jit.arena`). The kernel knows from the verifier's register types
which loads and stores go through arena pointers; pybpf has no such verifier yet, so the choice
here is a static forward dataflow over register and spilled-stack-slot kinds
(:mod:`pybpf.jit.kinds`: cast_kern results and their arithmetic are arena offsets, r10-derived
values are stack, ld_imm64 constants are known) plus a dynamic test only where the kind is
unknown, which applies the interpreter's rule (inside the arena's reservation, or a 32-bit base
outside the context/packet pool ``JitEnv.low_pool``: an arena access). Programs without an arena
get exactly the code they got before: no test at all. On the samples the analysis leaves
1-3 accesses per program to the run-time test (the context argument): arena_htab's
htab_insert_prog 30 static arena accesses, 2 dynamic; htab_selftest 38 and 3; arena_list none.
Measured on htab_query (16 lookups in a 10,000-key table with 256 buckets, chains of ~39, one
``test_run``; 2 shared cores, so ranges): static classification 730-1060 ns per run; every
access classified at run time (``PYBPF_JIT_ARENA_DYNAMIC=1``) 1150-1240 ns (+15-30%);
loads without the straddling-page test 515-520 ns. That last test (a load crossing into an
unallocated page gives 0, as the kernel's fault and the interpreter's arena.load do) is an
``and``/``cmp``/branch per arena load and costs ~40% in this pointer-chasing loop; stores pay
one or two page-map byte loads. htab_selftest (10,000 inserts, finds, 5,000 deletes in one
run): 2.4-2.9 ms static, 2.7-3.1 ms all dynamic, 2.0-2.2 ms with no arena tests (unsafe).
"""
from __future__ import annotations

import contextlib
import gc
import re
import sys
import threading
from dataclasses import dataclass, field

from llvmlite import ir

from pybpf import isa
from pybpf.errors import BPFError, JITError, MemoryAccessError, VMError
from pybpf.insn import imm64
from pybpf.jit import arena as arena_mem
from pybpf.jit import calls
from pybpf.jit import cgutils as cg
from pybpf.jit import switches
from pybpf.jit.cgutils import I1, I32, I64, PTR
from pybpf.jit.env import JitEnv
from pybpf.jit.helper_calls import HelperTable
from pybpf.jit.kinds import ProgramInfo
from pybpf.program import Program
from pybpf.verifier.liveness import liveness
from pybpf.verifier.regs import written_regs

if sys.byteorder != "little":  # le/be lowering below assumes a little-endian host
    raise ImportError("the pybpf JIT needs a little-endian host")

ABORT_RET = ir.LiteralStructType([I64, I1])
_MAIN_ARGS = 2
_SUB_ARGS = 5

# jcond op -> (signed?, icmp predicate); jset is handled apart.
_CMP = {"jeq": (False, "=="), "jne": (False, "!="), "jgt": (False, ">"), "jge": (False, ">="),
        "jlt": (False, "<"), "jle": (False, "<="), "jsgt": (True, ">"), "jsge": (True, ">="),
        "jslt": (True, "<"), "jsle": (True, "<=")}


@dataclass
class LoweredModule:
    """The IR text of one module and what running its code needs.

    ``entries`` are the symbols of the programs' entry functions, in the order given.
    ``keepalive`` holds the Python objects whose addresses are baked into the code (helper
    bridges); they must outlive the placed code. ``needs_gil``: some entry may call Python, so it
    must be entered with the GIL held (``make_caller(..., holds_gil=True)``).
    """

    ir: str
    entries: list[str]
    keepalive: list = field(default_factory=list)
    needs_gil: bool = False
    tail_entries: dict = field(default_factory=dict)   # entry -> symbol tail calls enter
    externs: dict = field(default_factory=dict)   # external symbol -> its value (placement)


def _symbol(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", text) or "_"


class ModuleLowerer:
    """Lowers one or more programs into one ``ir.Module`` (batching saves compile round trips)."""

    def __init__(self, helpers=None, comments: bool = True, name: str = "pybpf") -> None:
        self.module = ir.Module(name=name)
        self.externs = cg.Externs(self.module)   # process-specific values, resolved at placement
        self.helpers = HelperTable(helpers)
        self.comments = comments
        self.entries: list[str] = []
        self.tail_entries: dict[str, str] = {}
        self.keepalive: list = []
        self._finished: LoweredModule | None = None

    def add_program(self, prog: Program, entry: str = "bpf_main",
                    values64: dict[int, int] | None = None, env: JitEnv | None = None) -> str:
        """Lower ``prog`` with its entry function named ``entry``; returns the symbol.

        ``values64`` maps slots to the loader's resolved constants and ``env`` holds the other
        load-time facts (arena, kfuncs, maps, program type; module docstring)."""
        from pybpf.verifier.cfg import build_cfg

        if self._finished is not None:
            raise JITError("this module is finished; lower further programs into a new one")
        entry = _symbol(entry)
        if entry in self.module.globals:
            raise JITError(f"entry symbol {entry!r} is already defined in this module")
        if not prog.insns:
            raise JITError("cannot compile an empty program")
        try:
            cfg = build_cfg(prog, check=False)
        except BPFError as exc:
            raise JITError(f"cannot lower {prog.name}: {exc}") from exc
        loaded = env is not None     # a loader passed its facts: function references work
        env = env if env is not None else JitEnv()
        values64 = values64 or {}
        decoded = prog.instructions()
        may_abort = any((f.kind in ("call", "callx") and f.op != "local") or f.kind == "ldabs"
                        for _, f, _ in decoded)
        null_checked = btf_accesses(decoded, env)
        may_abort = may_abort or bool(null_checked)
        if env.budget_cell and not env.verified:
            # runaway guard: back edges count down the budget and poll for signals (Python
            # calls, so the code runs with the GIL held and any frame may abort)
            may_abort = True
            self.helpers.force_gil = True
        tail = calls.has_tail_calls(self, decoded)
        # the chain record (jit/calls.py): tail calls count in it, ld_abs finds the run's packet
        chain = tail or calls.reads_run_packet(decoded, env)
        frames = calls.calls_python_helpers(self, decoded, env)     # keeps frame records
        # r10 is read-only for the verifier; the interpreter makes the same check.
        fp_fixed = not any(10 in written_regs(f, i) for _, f, i in decoded)
        tcc = [PTR] if chain else []        # the chain record, shared along a chain
        extra = ([I64] if frames else []) + tcc     # subprograms: the caller's frame record too
        functions: dict[int, ir.Function] = {}
        for sp in cfg.subprogs:
            if sp.start == 0:
                fnty = ir.FunctionType(I64, [I64] * _MAIN_ARGS + tcc)
                fn = cg.bpf_function(self.module, fnty, f"{entry}.tail" if chain else entry)
            else:
                ret = ABORT_RET if may_abort else I64
                name = f"{entry}.{_symbol(sp.name)}"
                if name in self.module.globals:  # two names that sanitise alike
                    name = f"{name}.{sp.start}"
                # internal: LLVM may inline it or drop it; only the entry must survive.
                fn = cg.bpf_function(self.module, ir.FunctionType(ret, [I64] * _SUB_ARGS + extra),
                                     name, internal=True)
            functions[sp.start] = fn
        if chain:
            calls.define_tail_wrapper(self, functions[0], entry, env.packet_desc)
        if tail:
            self.helpers.force_gil = True
        self.tail_entries[entry] = functions[0].name
        program = ProgramInfo(prog, functions, may_abort, values64, fp_fixed, env, cfg, chain,
                              calls.func_value)
        program.loaded = loaded
        program.frames = frames
        program.null_checked = null_checked
        program.live = liveness(cfg, decoded)
        for sp in cfg.subprogs:
            body = [(pc, f, i) for pc, f, i in decoded if sp.start <= pc < sp.end]
            leaders = [pc for pc in cfg.leaders if sp.start <= pc < sp.end]
            FunctionLowerer(self, program, sp, body, leaders).lower()
        self.keepalive.extend(env.keepalive)
        self.entries.append(entry)
        return entry

    def finish(self) -> LoweredModule:
        """The module's IR text and what running it needs. The ``ir.Module`` is then taken
        apart (``module`` becomes None): its blocks and instructions refer to each other, so
        left whole it would be cyclic garbage for the collector, whose full passes over such
        graphs cost tens of milliseconds in the compile latency's tail."""
        if self._finished is None:
            text = str(self.module)
            for fn in self.module.functions:
                for blk in fn.blocks:
                    blk.instructions = []
                    blk.terminator = None
                fn.blocks = []
            self.module = None
            self._finished = LoweredModule(text, list(self.entries),
                                           self.helpers.keepalive() + self.keepalive,
                                           self.helpers.needs_gil, dict(self.tail_entries),
                                           dict(self.externs.values))
        return self._finished


def lower_program(prog: Program, helpers=None, entry: str = "bpf_main",
                  values64: dict[int, int] | None = None, comments: bool = True,
                  env: JitEnv | None = None) -> LoweredModule:
    """IR for one program (see :class:`ModuleLowerer` to put several in one module)."""
    with gc_paused():
        lowerer = ModuleLowerer(helpers, comments, name=prog.name)
        lowerer.add_program(prog, entry, values64, env)
        return lowerer.finish()


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection while this runs (nestable, across threads).

    Lowering allocates tens of thousands of objects that all stay alive until
    :meth:`ModuleLowerer.finish`, so the collector would run many times and find nothing
    (a full pass over a large heap costs tens of milliseconds). What lowering leaves behind is
    freed by reference counting, so nothing is owed to the collector afterwards.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def lowering_kinds() -> set[str]:
    """The ISA ``kind`` values that have a lowering method (for the every-form test)."""
    return {k for k in isa.KINDS if callable(getattr(FunctionLowerer, f"_lower_{k}", None))}


class FunctionLowerer:
    """Lowers one subprogram into its LLVM function; lives for that one job."""

    def __init__(self, mod: ModuleLowerer, program: ProgramInfo, sp, body, leaders) -> None:
        self.mod, self.program, self.sp, self.body = mod, program, sp, body
        self.prog, self.functions = program.prog, program.functions
        self.may_abort, self.values64 = program.may_abort, program.values64
        self.fp_fixed = program.fp_fixed  # r10 is never written: frame slots are addressed by GEP
        self.env, self.arena = program.env, program.arena
        self.fn = self.functions[sp.start]
        self.tcc = self.fn.args[-1] if program.tail else None   # ptr to the chain record
        self.is_main = sp.start == 0
        # frame records (module docstring): the caller's record (an argument; 0 for the
        # entry function), this function's record as an i64 (set by the prologue), whether
        # the frame pointer is used as a value (then the record names this frame)
        self.track_frames = program.frames
        self.caller_frames = (self.fn.args[_SUB_ARGS] if self.track_frames and not self.is_main
                              else cg.const(I64, 0))
        self.frames: ir.Value | None = None
        self.fp_escapes = not program.fp_fixed
        self.entry_bb = self.fn.append_basic_block("entry")
        self.blocks = {pc: self.fn.append_basic_block(f"L{pc}") for pc in leaders}
        self.trees = switches.find_trees(body, leaders)   # compare trees -> LLVM switches
        self.b = cg.TextBuilder(self.entry_bb, mod.externs)
        self.pc = sp.start
        self.live = program.live
        self.block_start = sp.start   # the BPF block being lowered (for its live-out set)
        self._counter = None  # may_goto budget, made on first use
        self.latches: dict[int, tuple] = {}   # back-edge target -> (latch block, span phi)
        self.cache: dict[int, ir.Value] = {}  # register -> its value in the current block
        self.dirty: set[int] = set()  # registers the current block changed (to write back)

    @property
    def kinds(self):
        return self.program.kinds

    def known(self, r: int) -> int | None:
        """The constant register ``r`` holds before this instruction, if the lowering knows it
        (set in this block, or found by the kinds dataflow)."""
        value = self.cache.get(r)
        if isinstance(value, cg.Const):
            return value.value & ((1 << 64) - 1)
        return self.kinds.const(self.pc, r)
    # -- frame -----------------------------------------------------------------------------

    def _prologue(self) -> None:
        b = self.b
        # The frame's allocas, written as text too: %r0..%r10 and %stack.
        self.regs = [b.alloca_text(f"r{i}", "i64") for i in range(isa.NREGS)]
        self.reg_refs = [reg.ref for reg in self.regs]
        self.stack = b.alloca_text("stack", f"[{isa.MAX_BPF_STACK} x i8]", align=16)
        if self.track_frames:
            self.frame_record = b.alloca_text("frame", "[2 x i64]", align=8)
            self.frames = b.ptrtoint(self.frame_record, I64)
        nargs = _MAIN_ARGS if self.is_main else _SUB_ARGS
        live = self.live.live_in.get(self.sp.start, (1 << isa.NREGS) - 1)
        for i in range(isa.NREGS - 1):
            # Arguments arrive in r1..; the other registers start at 0 like the interpreter's.
            # A register the code never reads before writing it needs no first value.
            if live >> i & 1:
                b.store(self.fn.args[i - 1] if 1 <= i <= nargs else cg.const(I64, 0),
                        self.regs[i])
        if live >> 10 & 1:
            top = b.add(b.ptrtoint(self.stack, I64), cg.const(I64, isa.MAX_BPF_STACK))
            b.store(top, self.regs[10])

    def get(self, r: int) -> ir.Value:
        # Within one BPF block a register's value is reused instead of reloaded: less IR to
        # build, print and parse (mem2reg would get the same result).
        value = self.cache.get(r)
        if value is None:
            if r == 10:
                self.fp_escapes = True      # the frame's address as a value: record the frame
            value = self.cache[r] = self.b._emit(I64, f"load i64, ptr {self.reg_refs[r]}")
        return value

    def set(self, r: int, value: ir.Value) -> None:
        self.cache[r] = value if value.type is I64 else cg.zext64(self.b, value)
        self.dirty.add(r)

    def spill(self) -> None:
        """Write the registers this block changed, and some later block reads, back to their
        allocas (before the block's terminator). Every cached value dominates the block's end,
        so the stores are valid there."""
        emit, cache, refs = self.b._emit_void, self.cache, self.reg_refs
        live = self.live.live_out.get(self.block_start, (1 << isa.NREGS) - 1)
        for r in sorted(self.dirty):
            if live >> r & 1:
                emit(f"store i64 {cache[r].get_reference()}, ptr {refs[r]}")
        self.dirty.clear()

    def operand(self, form, insn, width: int = 64) -> ir.Value:
        """The source operand of an ALU/JMP form at ``width`` bits (imm sign-extended)."""
        if form.source == "X":
            return cg.narrow(self.b, self.get(insn.src), width)
        return cg.const(cg.INT[width], insn.imm)

    def error(self, message: str) -> JITError:
        return JITError(f"{self.prog.name}: insn {self.pc}: {message}")

    def block_at(self, target: int) -> ir.Block:
        blk = self.blocks.get(target)
        if blk is None:
            raise self.error(f"jump to insn {target}, which is not an instruction start inside "
                             f"subprogram {self.sp.name} [{self.sp.start}, {self.sp.end})")
        return blk

    # -- returns and aborts ------------------------------------------------------------------

    def ret(self, value: ir.Value) -> None:
        self.dirty.clear()   # nothing of this frame is read after it returns
        if self.is_main or not self.may_abort:
            self.b.ret(value)
        else:
            pair = self.b.insert_value(ir.Constant(ABORT_RET, ir.Undefined), value, 0)
            self.b.ret(self.b.insert_value(pair, I1(0), 1))

    def abort_if(self, flag: ir.Value) -> None:
        """Return at once (r0 = 0 from the entry) when ``flag`` is set."""
        with self.b.if_then(flag, likely=False):
            self._abort_ret()

    def _abort_ret(self) -> None:
        if self.is_main:
            self.b.ret(I64(0))
        else:
            self.b.ret(ir.Constant(ABORT_RET, [I64(0), I1(1)]))

    def back_edge(self, target: int, origin: int | None = None) -> ir.Block:
        """The block a jump from ``origin`` (default: this instruction) to ``target`` goes to.

        That is ``target``'s own block, except in code for an unverified load
        (``env.budget_cell``) when the jump goes backwards: then it is an edge into the
        target's *latch*, one block per back-edge target (:meth:`_fill_latches`) that charges
        the span the jump repeats (``origin + 1 - target``, a phi over the edges) against the
        run's budget, raising VMError in Python when it is spent, and polls for signals
        (Ctrl-C: KeyboardInterrupt) with PyErr_CheckSignals each time the budget crosses a
        multiple of :data:`POLL_EVERY`, before it enters the target. One shared latch per loop
        head instead of a charge and a call on every back edge: the 64 cases of the switch
        benchmark each jump back to the loop head, and with a charge and a PyErr_CheckSignals
        call in each of them the unverified loop ran at 2.3x native, against 1.0x verified."""
        origin = self.pc if origin is None else origin
        block = self.block_at(target)
        if not self.env.budget_cell or self.env.verified or target > origin:
            return block
        if target not in self.latches:
            latch = self.fn.append_basic_block(f"L{target}.latch")
            with self.b.goto_block(latch):
                span = self.b.phi(I64, name=f"span{target}")
            self.latches[target] = (latch, span)
        latch, span = self.latches[target]
        edge = self.fn.append_basic_block(f"L{origin}.to.L{target}")
        with self.b.goto_block(edge):
            self.b.branch(latch)
        span.add_incoming(cg.const(I64, origin + 1 - target), edge)
        return edge

    def _fill_latches(self) -> None:
        """Write each latch's charge and signal poll (:meth:`back_edge`), then enter its
        target."""
        b = self.b
        cell = self.env.budget_cell
        for target, (latch, span) in sorted(self.latches.items()):
            b.position_at_end(latch)
            self.cache = {}
            ptr = b.inttoptr(b.ext(cell), PTR)      # per-process addresses: external symbols
            old = b.load(ptr, typ=I64)
            left = b.sub(old, span)
            b.store(left, ptr)
            with b.if_then(b.icmp_signed("<", left, I64(0)), likely=False):
                self.mod.helpers.call_python(b, "insn_limit", _budget_spent, 0, [])
                self._abort_ret()
            crossed = b.and_(b.xor(old, left), I64(-POLL_EVERY))
            with b.if_then(b.icmp_unsigned("!=", crossed, I64(0)), likely=False):
                check = b.ext(_check_signals_address()).get_reference()
                sig = b._emit(I32, f"call i32 inttoptr (i64 {check} to ptr)()")
                self.abort_if(b.icmp_signed("!=", sig, ir.Constant(I32, 0)))
            b.branch(self.block_at(target))

    # -- driver ----------------------------------------------------------------------------

    def lower(self) -> None:
        self._prologue()
        b = self.b
        b.branch(self.block_at(self.sp.start))
        blocks, comments = self.blocks, self.mod.comments
        handlers = _handlers()
        dead = self.live.dead
        for pc, form, insn in self.body:
            self.pc = pc
            if pc in blocks:
                if not b.block.is_terminated:
                    self.spill()
                    b.branch(blocks[pc])
                b.position_at_end(blocks[pc])
                self.block_start = pc
                self.cache = {}  # values of other blocks need not dominate this one
            elif b.block.is_terminated:  # cannot happen with cfg leaders; guard anyway
                raise self.error("instruction follows a terminator but starts no block")
            if dead(pc):
                # A pure instruction whose result nothing reads (verifier/liveness.py): LLVM
                # would delete it; not writing it saves building, parsing and cleaning it up.
                if comments:
                    b.comment(f"{pc}: {form.name} dst={insn.dst}: result never read, skipped")
                continue
            if comments:
                b.comment(f"{pc}: {form.name} dst={insn.dst} src={insn.src} off={insn.off} "
                          f"imm={insn.imm}")
            handler = handlers.get(form.kind)
            if handler is None:
                raise self.error(f"no lowering for {form.name} (kind {form.kind!r})")
            handler(self, form, insn)
        if not b.block.is_terminated:
            raise self.error(f"subprogram {self.sp.name} falls off its end")
        self._fill_latches()
        if self.track_frames:
            self._fill_frame_record()

    def _fill_frame_record(self) -> None:
        """Write this function's frame record at the end of its entry block, now that the body
        says whether the frame's address is ever a value (a frame reached only through the
        alloca's own addresses stays promotable to registers and out of every helper's reach)."""
        b = self.b
        b.position_before(self.entry_bb.terminator)
        low = (b.ptrtoint(self.stack, I64) if self.fp_escapes else cg.const(I64, 0))
        b.store(low, self.frame_record)
        b.store(self.caller_frames, b.gep_i8(self.frame_record, 8))

    # -- ALU -------------------------------------------------------------------------------

    def _lower_alu(self, form, insn) -> None:
        w = form.width
        if form.op == "mov":  # the old value of dst is not read
            self.set(insn.dst, self.operand(form, insn, w))
            return
        a = cg.narrow(self.b, self.get(insn.dst), w)
        self.set(insn.dst, cg.binop(self.b, form.op, a, self.operand(form, insn, w)))

    def _lower_neg(self, form, insn) -> None:
        a = cg.narrow(self.b, self.get(insn.dst), form.width)
        self.set(insn.dst, self.b.sub(cg.const(a.type, 0), a))

    def _lower_movsx(self, form, insn) -> None:
        bits = int(form.op[1:])  # "s8" / "s16" / "s32"
        v = cg.narrow(self.b, self.get(insn.src), bits)
        self.set(insn.dst, self.b.sext(v, cg.INT[form.width]))

    def _lower_end(self, form, insn) -> None:
        # On a little-endian host "le" only truncates; "be" and "bswap" swap.
        self.set(insn.dst, cg.byteswap(self.b, self.get(insn.dst), form.width, form.op != "le"))

    def _lower_cast(self, form, insn) -> None:
        lo = cg.low32(self.b, self.get(insn.src))
        if form.op == "kern":
            self.set(insn.dst, lo)
            return
        upper = self.values64.get(self.pc)
        if upper is None:
            raise self.error("cast_user needs the program's arena (values64), which the JIT "
                             "does not support yet")
        # rX = (u32)rY ? upper32(user_vm_start) | (u32)rY : 0  (the kernel's cast_user)
        hi = self.b.ext(upper & ~0xFFFFFFFF)
        full = self.b.or_(cg.zext64(self.b, lo), hi)
        self.set(insn.dst, self.b.select(self.b.icmp_unsigned("==", lo, I32(0)), I64(0), full))

    def _lower_lddw(self, form, insn) -> None:
        if form.op == "imm64":
            value = imm64(self.prog.insns, self.pc)
        elif form.op == "func" and self.program.loaded:
            value = calls.func_value(self.pc + 1 + insn.imm)   # an opaque token (bpf_loop)
        elif form.op != "func" and self.pc in self.values64:
            # a map's address, resolved by the loader: an external symbol of the code
            self.set(insn.dst, self.b.ext(self.values64[self.pc]))
            return
        else:
            raise self.error(f"{form.name} (ld_imm64 src={insn.src}) is not supported yet by "
                             "the JIT without the loader's values (values64, JitEnv)")
        self.set(insn.dst, cg.const(I64, value))

    # -- memory ----------------------------------------------------------------------------

    def address(self, r: int, off: int, size: int) -> ir.Value:
        """``ptr`` for ``r + off``. A frame slot reached through r10 is addressed from the frame's
        alloca when r10 never changes (as the verifier requires), so that SROA can promote it
        and alias analysis sees it. Code that also uses the frame pointer as a value turns it
        into an integer (``ptrtoint``), which marks the alloca as escaped: integer-addressed
        accesses (helpers, callees, copies of r10) then may alias these ones, as they must."""
        if r == 10 and self.fp_fixed and -isa.MAX_BPF_STACK <= off and off + size <= 0:
            return self.b.gep_i8(self.stack, isa.MAX_BPF_STACK + off)
        return cg.address(self.b, self.get(r), off)

    def access(self, r: int, off: int, size: int) -> arena_mem.Access:
        """Where ``r + off`` goes; in arena programs possibly an arena access (jit/arena.py)."""
        if self.arena is None:
            return arena_mem.Access(self.address(r, off, size))
        return arena_mem.access(self, r, off, size)

    def null_check(self, r: int, off: int, size: int, kind: str) -> None:
        """A verified access through a BTF object pointer that is NULL: the interpreter's
        MemoryAccessError (btf_accesses)."""
        if self.pc not in self.program.null_checked:
            return
        b = self.b
        null = b.icmp_unsigned("==", self.get(r), cg.const(I64, 0))
        with b.if_then(null, likely=False):
            self.mod.helpers.call_python(b, ("null", self.pc),
                                         null_fault(self.pc, off, size, kind), 0, [])
        self.abort_if(null)

    def _lower_ldx(self, form, insn) -> None:
        self.null_check(insn.src, insn.off, form.size, "read")
        if self.arena is None:   # the common case, kept as short as it was
            ptr = self.address(insn.src, insn.off, form.size)
            self.set(insn.dst, cg.load(self.b, ptr, form.size, form.signed))
            return
        acc = arena_mem.access(self, insn.src, insn.off, form.size)
        self.set(insn.dst, arena_mem.load(self, acc, form.size, form.signed))

    def _lower_st(self, form, insn) -> None:
        self.null_check(insn.dst, insn.off, form.size, "write")
        if self.arena is None:
            ptr = self.address(insn.dst, insn.off, form.size)
            cg.store(self.b, ptr, cg.const(I64, insn.imm), form.size)
            return
        acc = arena_mem.access(self, insn.dst, insn.off, form.size)
        self._arena_store(form, acc, cg.const(I64, insn.imm))

    def _lower_stx(self, form, insn) -> None:
        self.null_check(insn.dst, insn.off, form.size, "write")
        if self.arena is None:
            ptr = self.address(insn.dst, insn.off, form.size)
            cg.store(self.b, ptr, self.get(insn.src), form.size)
            return
        acc = arena_mem.access(self, insn.dst, insn.off, form.size)
        self._arena_store(form, acc, self.get(insn.src))

    def _arena_store(self, form, acc, value) -> None:
        arena_mem.store(self, acc, form.size,
                        lambda ptr: cg.store(self.b, ptr, value, form.size))

    def _lower_atomic(self, form, insn) -> None:
        b, op, size = self.b, form.op, form.size
        if op == "load_acq":
            self.null_check(insn.src, insn.off, size, "read")
        else:
            self.null_check(insn.dst, insn.off, size,
                            "write" if op == "store_rel" else "atomic access")
        if op == "load_acq":
            acc = self.access(insn.src, insn.off, size)
            self.set(insn.dst, arena_mem.load(self, acc, size, False,
                                              lambda ptr: cg.load_acquire(b, ptr, size)))
            return
        acc = self.access(insn.dst, insn.off, size)
        if op == "store_rel":
            value = self.get(insn.src)
            arena_mem.store(self, acc, size, lambda ptr: cg.store_release(b, ptr, value, size))
        elif op == "cmpxchg":
            r0, new = self.get(0), self.get(insn.src)
            self.set(0, arena_mem.guarded(self, acc, size,
                                          lambda ptr: cg.cmpxchg(b, ptr, r0, new, size), r0))
        else:
            rmw, src = op.removeprefix("fetch_"), self.get(insn.src)
            old = arena_mem.guarded(self, acc, size,
                                    lambda ptr: cg.atomic_rmw(b, rmw, ptr, src, size), src)
            if op.startswith("fetch_") or op == "xchg":
                self.set(insn.src, old)

    def _lower_ldabs(self, form, insn) -> None:
        calls.lower_ldabs(self, form, insn)

    # -- control flow ----------------------------------------------------------------------

    def _lower_jcond(self, form, insn) -> None:
        b, w = self.b, form.width
        a, c = cg.narrow(b, self.get(insn.dst), w), self.operand(form, insn, w)
        if form.op == "jset":
            cond = b.icmp_unsigned("!=", b.and_(a, c), cg.const(a.type, 0))
        else:
            signed, pred = _CMP[form.op]
            cond = (b.icmp_signed if signed else b.icmp_unsigned)(pred, a, c)
        taken = self.back_edge(self.pc + 1 + insn.off)
        self.spill()
        tree = self.trees.get(self.pc)
        if tree is not None:
            switches.emit(self, tree, a, cond, taken, self.block_at(self.pc + 1))
            return
        b.branch_if(cond, taken, self.block_at(self.pc + 1))

    def _lower_ja(self, form, insn) -> None:
        delta = insn.imm if form.op == "gotol" else insn.off
        target = self.back_edge(self.pc + 1 + delta)
        self.spill()
        self.b.branch(target)

    def _lower_may_goto(self, form, insn) -> None:
        # The kernel's hidden per-frame counter (verifier.c do_misc_fixups): jump once the
        # BPF_MAX_LOOPS budget is spent, else count down and fall through.
        b = self.b
        if self._counter is None:
            self._counter = cg.alloca_once(b, I64, name="may_goto.budget")
            with b.goto_block(self.entry_bb):  # before the entry's branch
                b.store(I64(isa.BPF_MAX_LOOPS), self._counter)
        left = b.load(self._counter, typ=I64, name="budget")
        spent = b.icmp_unsigned("==", left, cg.const(I64, 0))
        b.store(b.select(spent, cg.const(I64, 0), b.sub(left, cg.const(I64, 1))), self._counter)
        taken, fallthrough = self.block_at(self.pc + 1 + insn.off), self.block_at(self.pc + 1)
        self.spill()
        b.branch_if(spent, taken, fallthrough)

    def _lower_exit(self, form, insn) -> None:
        self.ret(self.get(0))

    def _args(self) -> list[ir.Value]:
        return [self.get(r) for r in range(1, 6)]

    def _lower_call(self, form, insn) -> None:
        if form.op == "local":
            target = self.pc + 1 + insn.imm
            callee = self.functions.get(target)
            if callee is None:
                raise self.error(f"call to insn {target}, which starts no subprogram")
            self.set(0, self.call_local(callee, self._args()))
        elif form.op == "helper":
            helper = self.mod.helpers.get(insn.imm)
            if helper is None:
                raise self.error(f"call to helper {insn.imm}, which is not registered")
            calls.lower_helper(self, helper)
        else:
            calls.lower_kfunc(self, insn)

    def call_local(self, callee: ir.Function, args: list) -> ir.Value:
        """Call a subprogram of this program (abort flag checked); returns its r0."""
        b = self.b
        if self.track_frames:
            args = list(args) + [self.frames]
        if self.tcc is not None:
            args = list(args) + [self.tcc]
        res = b.call(callee, args, name="call")
        if self.may_abort:
            self.abort_if(b.extract_value(res, 1))
            res = b.extract_value(res, 0)
        return res

    def _lower_callx(self, form, insn) -> None:
        # callx calls the helper whose id is in dst (bpf_conformance). A compare chain over the
        # registered ids (no switch: no jump table); an unknown id raises VMError in Python.
        b = self.b
        hid = self.get(insn.dst)
        args = self._args()
        done = self.fn.append_basic_block(f"callx{self.pc}.done")
        incoming = []
        for helper in self.mod.helpers.all():
            hit = self.fn.append_basic_block(f"callx{self.pc}.h{helper.id}")
            miss = self.fn.append_basic_block(f"callx{self.pc}.not{helper.id}")
            b.cbranch(b.icmp_unsigned("==", hid, cg.const(I64, helper.id)), hit, miss)
            b.position_at_end(hit)
            value, abort = self.mod.helpers.emit_call(b, helper, args, self.frames)
            incoming.append((value, abort if abort is not None else I1(0), b.block))
            b.branch(done)
            b.position_at_end(miss)
        value, abort = self.mod.helpers.emit_bad_callx(b, hid, self.pc)
        incoming.append((value, abort, b.block))
        b.branch(done)
        b.position_at_end(done)
        r0, stop = b.phi(I64, name="callx.r0"), b.phi(I1, name="callx.abort")
        for value, abort, blk in incoming:
            r0.add_incoming(value, blk)
            stop.add_incoming(abort, blk)
        self.set(0, r0)
        self.abort_if(stop)


_HANDLERS: dict = {}


def btf_accesses(decoded, env) -> frozenset:
    """The memory instructions of a verified program that may go through a BTF object pointer
    (the verifier's facts). bpf_per_cpu_ptr answers NULL for a CPU past nr_cpu_ids, as the
    kernel's, though the verifier types its result as never NULL (Linux 6.18, where a load
    through it then faults in the kernel): native code checks these accesses' base for NULL
    and stops with the interpreter's MemoryAccessError instead of faulting."""
    facts = getattr(env, "facts", None)
    if facts is None or not env.verified:
        return frozenset()
    return frozenset(pc for pc, f, _ in decoded
                     if f.kind in ("ldx", "st", "stx", "atomic") and facts.btf_access(pc))


def null_fault(pc: int, off: int, size: int, kind: str):
    def fault(*_):
        raise MemoryAccessError(pc, off & 0xFFFFFFFFFFFFFFFF, size, kind)
    return fault


# Unverified code polls for signals when its run budget crosses a multiple of this many
# instructions (counted as the back edges charge them), about every 10-100 us of a busy loop.
POLL_EVERY = 1 << 16


def _budget_spent() -> int:
    raise VMError("instruction limit exceeded: the JIT code of an unverified load ran past "
                  "its insn_limit (counted per loop iteration at back edges)")


_SIGNALS: list[int] = []


def _check_signals_address() -> int:
    """Address of ``int PyErr_CheckSignals(void)`` (runs pending signal handlers in the main
    thread: Ctrl-C sets KeyboardInterrupt and it returns -1)."""
    if not _SIGNALS:
        import ctypes

        _SIGNALS.append(ctypes.cast(ctypes.pythonapi.PyErr_CheckSignals, ctypes.c_void_p).value)
    return _SIGNALS[0]


def _handlers() -> dict:
    """``kind`` -> ``FunctionLowerer._lower_<kind>``, looked up once instead of per instruction."""
    if not _HANDLERS:
        _HANDLERS.update({k: getattr(FunctionLowerer, f"_lower_{k}") for k in lowering_kinds()})
    return _HANDLERS
