"""Lower BPF programs to LLVM IR (``llvmlite.ir`` only) with exactly the interpreter's semantics.

One LLVM function per subprogram (boundaries and block leaders come from
:func:`pybpf.verifier.cfg.build_cfg`): every basic block is created up front, the eleven BPF
registers are entry-block allocas that mem2reg/SROA promote, and each frame has its own 512-byte
stack alloca with r10 pointing one past its top. Instructions are dispatched on the ISA table's
``kind`` (``_lower_<kind>``) and then its ``op``/``width``/``size``/``source`` fields; nothing
here lists opcodes.

Calling convention: a program's entry is ``i64 @<entry>(i64 r1, i64 r2)``; a subprogram is
``i64 @<entry>.<name>(i64 r1..r5)``, or ``{i64, i1}`` when the program can *abort*. A program
aborts when a Python helper raised (the bridge in :mod:`pybpf.jit.native` reports it and leaves
the exception set) or when the ``unwind`` helper returned 0; the flag travels back up the frames
in the second return value (the run-state word, kept in a register: no shared memory, so
threads cannot disturb each other) and the entry returns 0.

Helpers and everything else the code reaches are absolute constants in the IR, so the object
has no relocations. Values only the loader knows come in ``values64`` (slot -> constant), the
same table the interpreter takes: the resolved constant of an ``ld_imm64`` pseudo form (a map
address, ...) and, for ``cast_user``, the arena's upper 32 bits. Without an entry those forms,
like kfunc calls, ``ld_imm64`` function references and legacy packet loads, raise
:class:`~pybpf.errors.JITError` saying they are not supported yet.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from llvmlite import ir

from pybpf import isa
from pybpf.errors import BPFError, JITError
from pybpf.insn import imm64
from pybpf.jit import cgutils as cg
from pybpf.jit.cgutils import I1, I32, I64
from pybpf.jit.helper_calls import HelperTable
from pybpf.program import Program

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


def _symbol(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", text) or "_"


class ModuleLowerer:
    """Lowers one or more programs into one ``ir.Module`` (batching saves compile round trips)."""

    def __init__(self, helpers=None, comments: bool = True, name: str = "pybpf") -> None:
        self.module = ir.Module(name=name)
        self.helpers = HelperTable(helpers)
        self.comments = comments
        self.entries: list[str] = []

    def add_program(self, prog: Program, entry: str = "bpf_main",
                    values64: dict[int, int] | None = None) -> str:
        """Lower ``prog`` with its entry function named ``entry``; returns the symbol.

        ``values64`` maps slots to the loader's resolved constants (module docstring)."""
        from pybpf.verifier.cfg import build_cfg

        entry = _symbol(entry)
        if entry in self.module.globals:
            raise JITError(f"entry symbol {entry!r} is already defined in this module")
        if not prog.insns:
            raise JITError("cannot compile an empty program")
        try:
            cfg = build_cfg(prog, check=False)
        except BPFError as exc:
            raise JITError(f"cannot lower {prog.name}: {exc}") from exc
        decoded = prog.instructions()
        may_abort = any(f.kind in ("call", "callx") and f.op != "local" for _, f, _ in decoded)
        functions: dict[int, ir.Function] = {}
        for sp in cfg.subprogs:
            if sp.start == 0:
                fn = cg.bpf_function(self.module, ir.FunctionType(I64, [I64] * _MAIN_ARGS), entry)
            else:
                ret = ABORT_RET if may_abort else I64
                name = f"{entry}.{_symbol(sp.name)}"
                if name in self.module.globals:  # two names that sanitise alike
                    name = f"{name}.{sp.start}"
                # internal: LLVM may inline it or drop it; only the entry must survive.
                fn = cg.bpf_function(self.module, ir.FunctionType(ret, [I64] * _SUB_ARGS), name,
                                     internal=True)
            functions[sp.start] = fn
        for sp in cfg.subprogs:
            body = [(pc, f, i) for pc, f, i in decoded if sp.start <= pc < sp.end]
            leaders = [pc for pc in cfg.leaders if sp.start <= pc < sp.end]
            FunctionLowerer(self, prog, functions, sp, body, leaders, may_abort,
                            values64 or {}).lower()
        self.entries.append(entry)
        return entry

    def finish(self) -> LoweredModule:
        return LoweredModule(str(self.module), list(self.entries), self.helpers.keepalive(),
                             self.helpers.needs_gil)


def lower_program(prog: Program, helpers=None, entry: str = "bpf_main",
                  values64: dict[int, int] | None = None, comments: bool = True) -> LoweredModule:
    """IR for one program (see :class:`ModuleLowerer` to put several in one module)."""
    lowerer = ModuleLowerer(helpers, comments, name=prog.name)
    lowerer.add_program(prog, entry, values64)
    return lowerer.finish()


def lowering_kinds() -> set[str]:
    """The ISA ``kind`` values that have a lowering method (for the every-form test)."""
    return {k for k in isa.KINDS if callable(getattr(FunctionLowerer, f"_lower_{k}", None))}


class FunctionLowerer:
    """Lowers one subprogram into its LLVM function; lives for that one job."""

    def __init__(self, mod: ModuleLowerer, prog: Program, functions: dict, sp, body, leaders,
                 may_abort: bool, values64: dict[int, int]) -> None:
        self.mod, self.prog, self.functions, self.sp = mod, prog, functions, sp
        self.body, self.may_abort, self.values64 = body, may_abort, values64
        self.fn = functions[sp.start]
        self.is_main = sp.start == 0
        self.entry_bb = self.fn.append_basic_block("entry")
        self.blocks = {pc: self.fn.append_basic_block(f"L{pc}") for pc in leaders}
        self.b = ir.IRBuilder(self.entry_bb)
        self.pc = sp.start
        self._counter = None  # may_goto budget, made on first use
        self.cache: dict[int, ir.Value] = {}  # register -> its value in the current block

    # -- frame -----------------------------------------------------------------------------

    def _prologue(self) -> None:
        b = self.b
        self.regs = [b.alloca(I64, name=f"r{i}") for i in range(isa.NREGS)]
        stack = b.alloca(ir.ArrayType(cg.I8, isa.MAX_BPF_STACK), name="stack")
        stack.align = 16
        nargs = _MAIN_ARGS if self.is_main else _SUB_ARGS
        for i in range(isa.NREGS - 1):
            # Arguments arrive in r1..; the other registers start at 0 like the interpreter's.
            b.store(self.fn.args[i - 1] if 1 <= i <= nargs else I64(0), self.regs[i])
        top = b.add(b.ptrtoint(stack, I64), I64(isa.MAX_BPF_STACK), name="fp")
        b.store(top, self.regs[10])

    def get(self, r: int) -> ir.Value:
        # Within one BPF block a register's value is reused instead of reloaded: less IR to
        # build, print and parse (mem2reg would get the same result).
        value = self.cache.get(r)
        if value is None:
            value = self.cache[r] = self.b.load(self.regs[r], typ=I64)
        return value

    def set(self, r: int, value: ir.Value) -> None:
        value = cg.zext64(self.b, value)
        self.b.store(value, self.regs[r])
        self.cache[r] = value

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
        if self.is_main or not self.may_abort:
            self.b.ret(value)
        else:
            pair = self.b.insert_value(ir.Constant(ABORT_RET, ir.Undefined), value, 0)
            self.b.ret(self.b.insert_value(pair, I1(0), 1))

    def abort_if(self, flag: ir.Value) -> None:
        """Return at once (r0 = 0 from the entry) when ``flag`` is set."""
        with self.b.if_then(flag, likely=False):
            if self.is_main:
                self.b.ret(I64(0))
            else:
                self.b.ret(ir.Constant(ABORT_RET, [I64(0), I1(1)]))

    # -- driver ----------------------------------------------------------------------------

    def lower(self) -> None:
        self._prologue()
        b = self.b
        b.branch(self.block_at(self.sp.start))
        for pc, form, insn in self.body:
            self.pc = pc
            if pc in self.blocks:
                if not b.block.is_terminated:
                    b.branch(self.blocks[pc])
                b.position_at_end(self.blocks[pc])
                self.cache = {}  # values of other blocks need not dominate this one
            elif b.block.is_terminated:  # cannot happen with cfg leaders; guard anyway
                raise self.error("instruction follows a terminator but starts no block")
            if self.mod.comments:
                b.comment(f"{pc}: {form.name} dst={insn.dst} src={insn.src} off={insn.off} "
                          f"imm={insn.imm}")
            handler = getattr(self, f"_lower_{form.kind}", None)
            if handler is None:
                raise self.error(f"no lowering for {form.name} (kind {form.kind!r})")
            handler(form, insn)
        if not b.block.is_terminated:
            raise self.error(f"subprogram {self.sp.name} falls off its end")

    # -- ALU -------------------------------------------------------------------------------

    def _lower_alu(self, form, insn) -> None:
        w = form.width
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
        # rX = (u32)rY ? upper32(user_vm_start) | (u32)rY : 0  (SEMANTICS.md 2.2)
        hi = cg.const(I64, upper & ~0xFFFFFFFF)
        full = self.b.or_(cg.zext64(self.b, lo), hi)
        self.set(insn.dst, self.b.select(self.b.icmp_unsigned("==", lo, I32(0)), I64(0), full))

    def _lower_lddw(self, form, insn) -> None:
        if form.op == "imm64":
            value = imm64(self.prog.insns, self.pc)
        elif form.op != "func" and self.pc in self.values64:
            value = self.values64[self.pc]  # a map's address, resolved by the loader
        else:
            raise self.error(f"{form.name} (ld_imm64 src={insn.src}) is not supported yet by "
                             "the JIT: maps and function references come in a later issue")
        self.set(insn.dst, cg.const(I64, value))

    # -- memory ----------------------------------------------------------------------------

    def _lower_ldx(self, form, insn) -> None:
        ptr = cg.address(self.b, self.get(insn.src), insn.off)
        self.set(insn.dst, cg.load(self.b, ptr, form.size, form.signed))

    def _lower_st(self, form, insn) -> None:
        ptr = cg.address(self.b, self.get(insn.dst), insn.off)
        cg.store(self.b, ptr, cg.const(I64, insn.imm), form.size)

    def _lower_stx(self, form, insn) -> None:
        ptr = cg.address(self.b, self.get(insn.dst), insn.off)
        cg.store(self.b, ptr, self.get(insn.src), form.size)

    def _lower_atomic(self, form, insn) -> None:
        b, op, size = self.b, form.op, form.size
        if op == "load_acq":
            ptr = cg.address(b, self.get(insn.src), insn.off)
            self.set(insn.dst, cg.load_acquire(b, ptr, size))
            return
        ptr = cg.address(b, self.get(insn.dst), insn.off)
        if op == "store_rel":
            cg.store_release(b, ptr, self.get(insn.src), size)
        elif op == "cmpxchg":
            self.set(0, cg.cmpxchg(b, ptr, self.get(0), self.get(insn.src), size))
        else:
            rmw = op.removeprefix("fetch_")
            old = cg.atomic_rmw(b, rmw, ptr, self.get(insn.src), size)
            if op.startswith("fetch_") or op == "xchg":
                self.set(insn.src, old)

    def _lower_ldabs(self, form, insn) -> None:
        raise self.error(f"{form.name}: legacy packet access (ld_abs/ld_ind) is not supported "
                         "yet by the JIT")

    # -- control flow ----------------------------------------------------------------------

    def _lower_jcond(self, form, insn) -> None:
        b, w = self.b, form.width
        a, c = cg.narrow(b, self.get(insn.dst), w), self.operand(form, insn, w)
        if form.op == "jset":
            cond = b.icmp_unsigned("!=", b.and_(a, c), cg.const(a.type, 0))
        else:
            signed, pred = _CMP[form.op]
            cond = (b.icmp_signed if signed else b.icmp_unsigned)(pred, a, c)
        taken = self.block_at(self.pc + 1 + insn.off)
        b.cbranch(cond, taken, self.block_at(self.pc + 1))

    def _lower_ja(self, form, insn) -> None:
        delta = insn.imm if form.op == "gotol" else insn.off
        self.b.branch(self.block_at(self.pc + 1 + delta))

    def _lower_may_goto(self, form, insn) -> None:
        # The kernel's hidden per-frame counter (SEMANTICS.md 2.3 item 12): jump once the
        # BPF_MAX_LOOPS budget is spent, else count down and fall through.
        b = self.b
        if self._counter is None:
            self._counter = cg.alloca_once(b, I64, name="may_goto.budget")
            with b.goto_block(self.entry_bb):  # before the entry's branch
                b.store(I64(isa.BPF_MAX_LOOPS), self._counter)
        left = b.load(self._counter, typ=I64, name="budget")
        spent = b.icmp_unsigned("==", left, I64(0))
        b.store(b.select(spent, I64(0), b.sub(left, I64(1))), self._counter)
        b.cbranch(spent, self.block_at(self.pc + 1 + insn.off), self.block_at(self.pc + 1))

    def _lower_exit(self, form, insn) -> None:
        self.ret(self.get(0))

    def _args(self) -> list[ir.Value]:
        return [self.get(r) for r in range(1, 6)]

    def _lower_call(self, form, insn) -> None:
        b = self.b
        if form.op == "local":
            target = self.pc + 1 + insn.imm
            callee = self.functions.get(target)
            if callee is None:
                raise self.error(f"call to insn {target}, which starts no subprogram")
            res = b.call(callee, self._args(), name="call")
            if self.may_abort:
                self.abort_if(b.extract_value(res, 1))
                res = b.extract_value(res, 0)
            self.set(0, res)
        elif form.op == "helper":
            helper = self.mod.helpers.get(insn.imm)
            if helper is None:
                raise self.error(f"call to helper {insn.imm}, which is not registered")
            value, abort = self.mod.helpers.emit_call(b, helper, self._args())
            self.set(0, value)
            if abort is not None:
                self.abort_if(abort)
        else:
            raise self.error(f"{form.name}: kfunc calls are not supported yet by the JIT")

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
            value, abort = self.mod.helpers.emit_call(b, helper, args)
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
