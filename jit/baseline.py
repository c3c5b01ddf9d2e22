"""The baseline tier: x86-64 code straight from BPF instructions, without LLVM (issue 13).

A template JIT in the manner of the kernel's ``arch/x86/net/bpf_jit_comp.c``: each BPF
instruction becomes a short fixed x86 sequence, BPF registers live in fixed x86 registers
(``REG``: r0 rax, r1 rdi, r2 rsi, r3 rdx, r4 rcx, r5 r8, r6 rbx, r7 r13, r8 r14, r9 r15,
r10 rbp; r9-r11 are scratch, r12 holds the entry frame's stack pointer for aborts). It costs a
pass of Python over the instructions, so a load's first result comes without the lowering and
LLVM; the -O2 code then replaces it through the entry slot (jit/tiers.py) as it replaces the
quick tier.

Same contract as the LLVM code (jit/lower.py), and the same run-time behaviour:

* entry ``u64 f(u64 r1, u64 r2)`` (a third argument is ignored); every register not passed
  starts at 0 in each frame; subprograms take r1..r5 in rdi, rsi, rdx, rcx, r8 (the SysV
  argument registers, so a BPF-to-BPF call is a plain ``call``) and keep r6-r10 (callee-saved
  in SysV too); each frame has its own 512-byte stack below rbp; the caller's r1-r5 survive a
  call, as in the lowering (where each frame's registers are its own allocas);
* helpers and kfuncs are called through the shared Python bridge
  (:func:`pybpf.jit.helper_calls.bridge_addresses`, ``{r0, failed}`` in rax:dl), ``unwind``
  helpers included; a failure (or ld_abs out of bounds) *aborts*: the stack pointer is reset
  from r12 to the entry frame, which returns 0 with the exception left set; every frame keeps
  its frame record at rbp-536 (its stack, its caller's record at the caller's rbp-536) and
  registry helpers get the innermost one (their ``framed_fn``), so they check stack pointers
  against the program's own frames as in the LLVM tiers;
* division and modulo by zero and signed overflow as RFC 9669 (x/0 = 0, x%0 = x, INT_MIN/-1 =
  INT_MIN, x%-1 = 0), shifts masked to the width (x86 masks them the same way), 32-bit results
  zero-extended, sign-extending loads and movsx, byte swaps, lock-prefixed atomics, may_goto's
  per-frame budget, ld_abs/ld_ind through r6's __sk_buff (verified skb programs) or the run's
  packet descriptor (a second entry, ``bpf_main.tail``, takes it from a tail call's chain
  record, see ``_CHAIN``);
* unverified loads (``JitEnv.budget_cell``): every jump backwards taken charges the span it
  repeats against the run budget (``insn_limit``; spent: the lowering's VMError), and
  polls for signals (PyErr_CheckSignals) when the budget crosses a multiple of 2**16, as the
  lowering's loop latches do;
* native code where the LLVM tiers have it: a verified ``bpf_map_lookup_elem`` whose map (r1)
  an ``ld_imm64`` loaded in the same straight-line code (no jump target between) is the map's
  own ``gen_lookup`` emitted by the x86 kit (jit/x86_kit.py; the bridge when the kit cannot
  emit it), the ktime clocks call libc's ``clock_gettime``, ``bpf_get_prandom_u32`` is its
  native description through the same kit.

What it does not do raises :class:`Unsupported` and the load takes the LLVM quick tier instead
(counted in :data:`STATS`, reported by ``placement()``): arena programs and ``cast_user``, tail
calls, ``bpf_loop``/``for_each_map_elem``, special kfuncs (``bpf_rbtree_add``'s callback),
an inline native helper the kit cannot emit, programs
that write r10, and anything structurally odd (jumps out of a subprogram, falling off its end),
which the lowering then reports. Dispatch is on the ISA table's ``kind`` (``_emit_<kind>``):
a form without a rule is a :class:`~pybpf.errors.JITError`, never a silent fallback.
"""
from __future__ import annotations

import ctypes
import os
import re
import threading
from collections import Counter

from pybpf import isa
from pybpf.errors import JITError
from pybpf.insn import imm64
from pybpf.jit import x86_emit as X
from pybpf.jit.x86_emit import CC, Asm

# BPF register -> x86 register
REG = (X.RAX, X.RDI, X.RSI, X.RDX, X.RCX, X.R8, X.RBX, X.R13, X.R14, X.R15, X.RBP)
_ARGS = (X.RDI, X.RSI, X.RDX, X.RCX, X.R8)            # BPF r1..r5
_BUDGET = -520       # the frame's may_goto budget, below its 512-byte stack (rbp-relative)
_RECORD = -536       # the frame record (jit/lower.py, runtime/memory.FRAME_RECORD) below it
_MAIN_FRAME = 536    # 6 pushes + 536 keep rsp 16-byte aligned at calls; subprograms: 5 + 544
_SUB_FRAME = 544
# A program whose ld_abs reads the run's packet descriptor (jit/calls.py reads_run_packet)
# keeps the descriptor's address in its entry frame, at r12 - 544 (so its frame is 552): its
# entry ``bpf_main`` stores its own, ``bpf_main.tail`` the one of the chain record (rdx) a
# tail call passes, as the LLVM tiers' ``<entry>.tail``.
_CHAIN = -544
_CHAIN_FRAME = 552
_CALLER_RBP = 32     # where a subprogram's prologue pushed its caller's rbp (rbp-relative)
_M64 = (1 << 64) - 1

STATS: Counter = Counter()        # "baseline": loads placed, "fallback": loads that were not
REASONS: Counter = Counter()      # why not (first reason of each fallback)
_stats_lock = threading.Lock()


class Unsupported(JITError):
    """The program uses something the baseline tier does not emit yet: take the LLVM tier."""


def count(placed: bool, reason: str = "") -> None:
    with _stats_lock:
        STATS["baseline" if placed else "fallback"] += 1
        if not placed:
            REASONS[re.sub(r" \(insn \d+\)", "", reason.split(":")[0])[:80]] += 1


def report() -> dict:
    """Counters for placement(): baseline loads, fallbacks and their reasons."""
    with _stats_lock:
        return {"baseline": STATS["baseline"], "fallback": STATS["fallback"],
                "reasons": dict(REASONS)}


class BaselineCode:
    """What :func:`compile_baseline` made: the code, what running it needs, and ``symbols``
    (function name -> offset: ``bpf_main`` and ``bpf_main.sub<slot>``, for listings)."""

    def __init__(self, code: bytes, needs_gil: bool, keepalive: list, symbols: dict) -> None:
        self.code, self.needs_gil, self.keepalive = code, needs_gil, keepalive
        self.symbols = symbols


def enabled() -> bool:
    """Whether tier "auto" starts with the baseline (``PYBPF_JIT_BASELINE=0`` or ``off``: the
    LLVM quick tier, as before the baseline existed)."""
    return os.environ.get("PYBPF_JIT_BASELINE", "1").lower() not in ("0", "off", "no")


def emitter_kinds() -> set[str]:
    """The ISA ``kind`` values that have an emitter rule (for the every-form test)."""
    return {k for k in isa.KINDS if callable(getattr(_Emitter, f"_emit_{k}", None))}


def rule_for(form: isa.Form):
    """The emitter rule of ``form`` (JITError when there is none: never silently)."""
    rule = getattr(_Emitter, f"_emit_{form.kind}", None)
    if rule is None:
        raise JITError(f"baseline JIT: no emitter rule for {form.name} (kind {form.kind!r})")
    return rule


def compile_baseline(prog, helpers=None, values64=None, env=None) -> BaselineCode:
    """x86-64 code for ``prog`` (same arguments as :func:`pybpf.jit.compile_program`).
    Raises :class:`Unsupported` for what the baseline leaves to LLVM."""
    return _Emitter(prog, helpers, values64 or {}, env).emit()


_signals: list[int] = []


def _check_signals_address() -> int:
    if not _signals:
        _signals.append(ctypes.cast(ctypes.pythonapi.PyErr_CheckSignals, ctypes.c_void_p).value)
    return _signals[0]


class _Emitter:
    def __init__(self, prog, helpers, values64, env) -> None:
        from pybpf.jit.helper_calls import HelperTable

        self.prog, self.values64 = prog, values64
        self.loaded = env is not None
        if env is None:
            from pybpf.jit.env import JitEnv
            env = JitEnv()
        self.env = env
        self.helpers = HelperTable(helpers)
        self.a = Asm()
        self.keep: list = []        # Python callables whose addresses are in the code
        self.needs_gil = False
        self.budget = env.budget_cell if not env.verified else 0
        self.chain = False          # ld_abs through the run's descriptor (_CHAIN)
        self._n = 0
        # BPF register -> the constant it holds, from an ld_imm64 earlier in the same
        # straight-line code (cleared at jump targets): a map_lookup_elem's map (r1)
        self.consts: dict[int, int] = {}
        self.lddw_value = 0

    def fresh(self):
        self._n += 1
        return ("L", self._n)

    def unsupported(self, pc: int, why: str) -> Unsupported:
        return Unsupported(f"{why} (insn {pc})")

    # -- driver --------------------------------------------------------------------------------

    def emit(self) -> BaselineCode:
        env = self.env
        if env.arena is not None:
            raise Unsupported("arena program")
        decoded = self.prog.instructions()
        from pybpf.verifier.regs import written_regs
        if not decoded:
            raise Unsupported("empty program")
        nslots = len(self.prog.insns)
        starts = {0}
        for pc, f, i in decoded:
            if f.kind == "call" and f.op == "local" or f.kind == "lddw" and f.op == "func":
                t = pc + 1 + i.imm
                if not 0 <= t < nslots:
                    raise Unsupported(f"call target {t} out of the program (insn {pc})")
                starts.add(t)
            if 10 in written_regs(f, i):
                raise Unsupported(f"writes r10 (insn {pc})")
        order = sorted(starts)
        valid = {pc for pc, _, _ in decoded}
        if not starts <= valid:
            raise Unsupported("a call target is not an instruction start")
        bounds = {s: (order[k + 1] if k + 1 < len(order) else nslots)
                  for k, s in enumerate(order)}
        self.valid, self.bounds, self.abort = valid, bounds, ("abort",)
        from pybpf.jit.calls import reads_run_packet
        from pybpf.jit.lower import btf_accesses
        self.chain = reads_run_packet(decoded, env)
        self.null_checked = btf_accesses(decoded, env)
        if self.chain and any(f.kind == "call" and f.op == "local" and pc + 1 + i.imm == 0
                              for pc, f, i in decoded):
            raise Unsupported("a call to the entry of a program keeping the run's packet "
                              "descriptor")
        if self.chain:
            self.a.label(("entry",))
            self.a.movabs(X.R11, env.packet_desc)       # direct entry: this program's own
        handlers = _handlers()
        joins = _jump_targets(decoded) | starts
        sub_end = 0
        for pc, form, insn in decoded:
            if pc in bounds:
                self.start, sub_end = pc, bounds[pc]
                self.a.label(("fn", pc))
                self._prologue(pc == 0, self._uses_may_goto(decoded, pc, sub_end))
            if pc in joins:
                self.consts.clear()
            self.pc = pc
            self.a.label(pc)
            handlers[form.kind](self, form, insn)
            for r in written_regs(form, insn):
                self.consts.pop(r, None)
            if form.kind == "lddw":
                self.consts[insn.dst] = self.lddw_value
            nxt = pc + form.slots
            if nxt == sub_end and not (form.kind == "exit" or form.kind == "ja"):
                raise Unsupported(f"subprogram at {self.start} falls off its end")
        self._abort_path()
        if self.chain:      # the tail-call entry: the descriptor from the chain record (rdx)
            from pybpf.jit.calls import CHAIN_DESC
            self.a.label(("tail",))
            self.a.rm(b"\x8B", X.R11, X.RDX, CHAIN_DESC)          # mov r11, [rdx + 8]
            self.a.jmp(("fn", 0))
        try:
            code = self.a.finish()
        except JITError as exc:
            raise Unsupported(str(exc)) from None
        labels = self.a.labels
        symbols = {("bpf_main" if s == 0 else f"bpf_main.sub{s}"): labels[("fn", s)]
                   for s in order}
        if self.chain:
            symbols["bpf_main"], symbols["bpf_main.tail"] = labels[("entry",)], labels[("tail",)]
        return BaselineCode(code, self.needs_gil or bool(self.budget), self.keep, symbols)

    @staticmethod
    def _uses_may_goto(decoded, start, end) -> bool:
        return any(f.kind == "may_goto" for pc, f, _ in decoded if start <= pc < end)

    # -- frames --------------------------------------------------------------------------------

    def _prologue(self, main: bool, may_goto: bool) -> None:
        a = self.a
        a.push(X.RBP)
        a.push(X.RBX)
        if main:
            a.push(X.R12)
        a.push(X.R13)
        a.push(X.R14)
        a.push(X.R15)
        if main:
            a.mov(X.R12, X.RSP)       # where an abort unwinds to
        a.mov(X.RBP, X.RSP)
        a.ri(5, X.RSP, (_CHAIN_FRAME if self.chain else _MAIN_FRAME) if main
             else _SUB_FRAME)                                     # sub rsp, frame
        if main and self.chain:
            a.rm(b"\x89", X.R11, X.RBP, _CHAIN)                  # mov [rbp-544], r11
        zero = [X.RAX, X.RBX, X.R13, X.R14, X.R15] + ([X.RDX, X.RCX, X.R8] if main else [])
        for r in zero:
            a.rr(b"\x31", r, r, 0)                               # xor r32, r32
        if may_goto:
            a.rm(b"\xC7", 0, X.RBP, _BUDGET, 1)                  # mov qword [rbp-520], imm32
            a.imm32(isa.BPF_MAX_LOOPS)
        # The frame record {this frame's stack, the caller's record} that bridged helper
        # calls pass (module docstring): the caller's is at its rbp - 536 too.
        a.rm(b"\x8D", X.R11, X.RBP, -isa.MAX_BPF_STACK)          # lea r11, [rbp-512]
        a.rm(b"\x89", X.R11, X.RBP, _RECORD)                     # mov [rbp-536], r11
        if main:
            a.rm(b"\xC7", 0, X.RBP, _RECORD + 8, 1)              # mov qword [rbp-528], 0
            a.imm32(0)
        else:
            a.rm(b"\x8B", X.R11, X.RBP, _CALLER_RBP)             # mov r11, [rbp+32]
            a.rm(b"\x8D", X.R11, X.R11, _RECORD)                 # lea r11, [r11-536]
            a.rm(b"\x89", X.R11, X.RBP, _RECORD + 8)             # mov [rbp-528], r11
        self.main = main

    def _epilogue(self) -> None:
        a = self.a
        if self.main:
            a.mov(X.RSP, X.R12)
        else:
            a.mov(X.RSP, X.RBP)
        a.pop(X.R15)
        a.pop(X.R14)
        a.pop(X.R13)
        if self.main:
            a.pop(X.R12)
        a.pop(X.RBX)
        a.pop(X.RBP)
        a.ret()

    def _abort_path(self) -> None:
        """Return 0 from the entry frame, whatever frame we are in (r12: its stack pointer)."""
        a = self.a
        a.label(self.abort)
        a.mov(X.RSP, X.R12)
        a.rr(b"\x31", X.RAX, X.RAX, 0)
        for r in (X.R15, X.R14, X.R13, X.R12, X.RBX, X.RBP):
            a.pop(r)
        a.ret()

    # -- ALU -----------------------------------------------------------------------------------

    _RR = {"add": b"\x01", "sub": b"\x29", "and": b"\x21", "or": b"\x09", "xor": b"\x31",
           "mov": b"\x89"}
    _EXT = {"add": 0, "or": 1, "and": 4, "sub": 5, "xor": 6, "cmp": 7}
    _SHIFT = {"lsh": 4, "rsh": 5, "arsh": 7}

    def _emit_alu(self, form, insn) -> None:
        a, op, w = self.a, form.op, 1 if form.width == 64 else 0
        d = REG[insn.dst]
        if op in self._RR:
            if form.source == "X":
                s = REG[insn.src]
                if op == "mov":
                    if d != s or not w:
                        a.rr(b"\x89", s, d, w)
                else:
                    a.rr(self._RR[op], s, d, w)
            elif op == "mov":
                if w:
                    a.mov_imm(d, insn.imm)          # sign-extended imm
                else:
                    a.mov_imm(d, insn.imm & 0xFFFFFFFF)
            else:
                a.ri(self._EXT[op], d, insn.imm, w)
        elif op == "mul":
            if form.source == "X":
                a.rr(b"\x0F\xAF", d, REG[insn.src], w)          # imul d, s
            else:
                a.rr(b"\x69", d, d, w)                            # imul d, d, imm32
                a.imm32(insn.imm)
        elif op in self._SHIFT:
            ext = self._SHIFT[op]
            if form.source == "K":
                a.rr(b"\xC1", ext, d, w)
                a.b.append(insn.imm & (63 if w else 31))
            else:
                # count in cl (BPF r4 lives in rcx): through r10/r11, any register may be d/s
                a.mov(X.R10, d)
                a.mov(X.R11, X.RCX)
                a.mov(X.RCX, REG[insn.src])
                a.rr(b"\xD3", ext, X.R10, w)
                a.mov(X.RCX, X.R11)
                a.rr(b"\x89", X.R10, d, w)                       # 32-bit: zero-extends
        elif op in ("div", "mod", "sdiv", "smod"):
            self._divmod(op, d, insn, form.source, w)
        else:
            raise JITError(f"baseline JIT: no emitter rule for {form.name}")

    def _divmod(self, op: str, d: int, insn, source: str, w: int) -> None:
        a = self.a
        if source == "X":
            a.rr(b"\x89", REG[insn.src], X.R11, w)               # r11 = divisor
        else:
            a.mov_imm(X.R11, insn.imm if w else insn.imm & 0xFFFFFFFF)
        a.mov(X.R9, X.RAX)
        a.mov(X.R10, X.RDX)
        a.rr(b"\x89", d, X.RAX, w)                                # rax = dividend (narrowed)
        zero, minus1, done = self.fresh(), self.fresh(), self.fresh()
        a.rr(b"\x85", X.R11, X.R11, w)                            # test
        a.jcc(CC["z"], zero)
        signed = op[0] == "s"
        if signed:
            a.ri(7, X.R11, -1, w)                                 # cmp r11, -1
            a.jcc(CC["z"], minus1)
            if w:
                a.b += b"\x48\x99"                                # cqo
            else:
                a.b.append(0x99)                                  # cdq
            a.rr(b"\xF7", 7, X.R11, w)                            # idiv
        else:
            a.rr(b"\x31", X.RDX, X.RDX, 0)
            a.rr(b"\xF7", 6, X.R11, w)                            # div
        a.rr(b"\x89", X.RAX if op in ("div", "sdiv") else X.RDX, X.R11, w)
        a.jmp(done)
        a.label(zero)
        if op in ("div", "sdiv"):
            a.rr(b"\x31", X.R11, X.R11, 0)                        # x / 0 = 0
        else:
            a.rr(b"\x89", X.RAX, X.R11, w)                        # x % 0 = x
        if signed:
            a.jmp(done)
            a.label(minus1)
            if op == "sdiv":
                a.rr(b"\x89", X.RAX, X.R11, w)
                a.rr(b"\xF7", 3, X.R11, w)                        # neg: INT_MIN stays
            else:
                a.rr(b"\x31", X.R11, X.R11, 0)                    # x % -1 = 0
        a.label(done)
        a.mov(X.RAX, X.R9)
        a.mov(X.RDX, X.R10)
        a.mov(d, X.R11)

    def _emit_neg(self, form, insn) -> None:
        self.a.rr(b"\xF7", 3, REG[insn.dst], 1 if form.width == 64 else 0)

    def _emit_movsx(self, form, insn) -> None:
        a, d, s = self.a, REG[insn.dst], REG[insn.src]
        w = 1 if form.width == 64 else 0
        if form.op == "s8":
            a.rr(b"\x0F\xBE", d, s, w, force=True)                # movsx d, s8
        elif form.op == "s16":
            a.rr(b"\x0F\xBF", d, s, w)
        else:
            a.rr(b"\x63", d, s, 1)                                # movsxd

    def _emit_end(self, form, insn) -> None:
        a, d, bits = self.a, REG[insn.dst], form.width
        swap = form.op != "le"
        if bits == 16:
            if swap:
                a.rr(b"\xC1", 1, d, 0, pre=b"\x66")                # ror d16, 8
                a.b.append(8)
            a.rr(b"\x0F\xB7", d, d, 0)                            # movzx d32, d16
        elif bits == 32:
            if swap:
                a._rex(0, 0, d, False)
                a.b += bytes((0x0F, 0xC8 | (d & 7)))              # bswap d32
            else:
                a.rr(b"\x89", d, d, 0)                            # mov d32, d32
        elif swap:
            a._rex(1, 0, d, False)
            a.b += bytes((0x0F, 0xC8 | (d & 7)))                  # bswap d64

    def _emit_cast(self, form, insn) -> None:
        if form.op != "kern":
            raise self.unsupported(self.pc, "cast_user needs the arena")
        self.a.rr(b"\x89", REG[insn.src], REG[insn.dst], 0)       # (u32) src

    def _emit_lddw(self, form, insn) -> None:
        pc = self.pc
        if form.op == "imm64":
            value = imm64(self.prog.insns, pc)
        elif form.op == "func" and self.loaded:
            from pybpf.jit.calls import func_value
            value = func_value(pc + 1 + insn.imm)
        elif form.op != "func" and pc in self.values64:
            value = self.values64[pc]
        else:
            raise self.unsupported(pc, f"{form.name} without the loader's value")
        self.lddw_value = value & _M64
        self.a.mov_imm(REG[insn.dst], value)

    # -- memory ----------------------------------------------------------------------------------

    def _load(self, d: int, base: int, off: int, size: int, signed: bool) -> None:
        a = self.a
        if size == 8:
            a.rm(b"\x8B", d, base, off, 1)
        elif signed:
            a.rm({1: b"\x0F\xBE", 2: b"\x0F\xBF", 4: b"\x63"}[size], d, base, off, 1)
        elif size == 4:
            a.rm(b"\x8B", d, base, off, 0)
        else:
            a.rm(b"\x0F\xB6" if size == 1 else b"\x0F\xB7", d, base, off, 0)

    def _store(self, s: int, base: int, off: int, size: int) -> None:
        a = self.a
        if size == 1:
            a.rm(b"\x88", s, base, off, 0, force=True)
        elif size == 2:
            a.rm(b"\x89", s, base, off, 0, pre=b"\x66")
        else:
            a.rm(b"\x89", s, base, off, 1 if size == 8 else 0)

    def _null_check(self, r: int, off: int, size: int, kind: str) -> None:
        """A verified access through a BTF object pointer that is NULL: the interpreter's
        MemoryAccessError (jit/lower.py btf_accesses)."""
        if self.pc not in self.null_checked:
            return
        from pybpf.jit.lower import null_fault
        a, ok = self.a, self.fresh()
        a.rr(b"\x85", REG[r], REG[r], 1)                        # test base, base
        a.jcc(CC["nz"], ok)
        self._bridge_call(null_fault(self.pc, off, size, kind), 0, save=False)
        a.jmp(self.abort)
        a.label(ok)

    def _emit_ldx(self, form, insn) -> None:
        self._null_check(insn.src, insn.off, form.size, "read")
        self._load(REG[insn.dst], REG[insn.src], insn.off, form.size, form.signed)

    def _emit_stx(self, form, insn) -> None:
        self._null_check(insn.dst, insn.off, form.size, "write")
        self._store(REG[insn.src], REG[insn.dst], insn.off, form.size)

    def _emit_st(self, form, insn) -> None:
        self._null_check(insn.dst, insn.off, form.size, "write")
        a, size, base, imm = self.a, form.size, REG[insn.dst], insn.imm
        if size == 1:
            a.rm(b"\xC6", 0, base, insn.off, 0)
            a.b.append(imm & 0xFF)
        elif size == 2:
            a.rm(b"\xC7", 0, base, insn.off, 0, pre=b"\x66")
            a.b += (imm & 0xFFFF).to_bytes(2, "little")
        else:
            a.rm(b"\xC7", 0, base, insn.off, 1 if size == 8 else 0)
            a.imm32(imm)

    _LOCK_RR = {"add": b"\x01", "or": b"\x09", "and": b"\x21", "xor": b"\x31"}

    def _emit_atomic(self, form, insn) -> None:
        a, op, size = self.a, form.op, form.size
        w = 1 if size == 8 else 0
        if op == "load_acq":
            self._null_check(insn.src, insn.off, size, "read")
        else:
            self._null_check(insn.dst, insn.off, size,
                             "write" if op == "store_rel" else "atomic access")
        if op == "load_acq":           # x86 loads are acquire loads, stores release stores
            self._load(REG[insn.dst], REG[insn.src], insn.off, size, False)
            return
        if op == "store_rel":
            self._store(REG[insn.src], REG[insn.dst], insn.off, size)
            return
        d, s, off = REG[insn.dst], REG[insn.src], insn.off
        if op in self._LOCK_RR:
            a.rm(self._LOCK_RR[op], s, d, off, w, pre=b"\xF0")
        elif op == "fetch_add":
            a.rm(b"\x0F\xC1", s, d, off, w, pre=b"\xF0")          # lock xadd: s = old
        elif op == "xchg":
            a.rm(b"\x87", s, d, off, w)                           # xchg is locked
        elif op == "cmpxchg":
            a.rm(b"\x0F\xB1", s, d, off, w, pre=b"\xF0")          # rax: expected, then old
            if not w:
                a.rr(b"\x89", X.RAX, X.RAX, 0)                    # zero-extend w0
        elif op.startswith("fetch_"):
            # fetch_or/and/xor: a cmpxchg loop on [r10] (rax saved on the stack)
            loop = self.fresh()
            a.mov(X.R9, s)
            a.rm(b"\x8D", X.R10, d, off, 1)                       # lea r10, [d + off]
            a.push(X.RAX)
            a.rm(b"\x8B", X.RAX, X.R10, 0, w)
            a.label(loop)
            a.mov(X.R11, X.RAX)
            a.rr(self._LOCK_RR[op[6:]], X.R9, X.R11, w)
            a.rm(b"\x0F\xB1", X.R11, X.R10, 0, w, pre=b"\xF0")
            a.jcc(CC["nz"], loop)
            a.rr(b"\x89", X.RAX, X.R11, w)                        # old, zero-extended
            a.pop(X.RAX)
            a.mov(s, X.R11)
        else:
            raise JITError(f"baseline JIT: no emitter rule for {form.name}")

    def _emit_ldabs(self, form, insn) -> None:
        from pybpf.jit.calls import ldabs_from_ctx, no_packet
        a, size = self.a, form.size
        desc = self.env.packet_desc
        # verified __sk_buff programs read the packet from r6, the ctx; the others through the
        # run's descriptor (jit/calls.py lower_ldabs)
        from_ctx = ldabs_from_ctx(self.env)
        if not desc and not from_ctx:
            raise self.unsupported(self.pc, "ld_abs without the run's packet descriptor")
        a.mov_imm(X.R11, insn.imm & 0xFFFFFFFF)
        if form.op == "ind":
            a.rr(b"\x01", REG[insn.src], X.R11, 0)                # add r11d, src32
        a.rr(b"\x63", X.R11, X.R11, 1)                            # movsxd r11, r11d
        a.rr(b"\x85", X.R11, X.R11, 1)
        a.jcc(CC["s"], self.abort)                                # negative: out of bounds
        a.rm(b"\x8D", X.R9, X.R11, size, 1)                       # lea r9, [r11 + size]
        if from_ctx:
            a.mov(X.R10, REG[6])                                  # r10 = the __sk_buff
            a.rm(b"\x8B", X.RAX, X.R10, 0, 0)                     # eax = skb->len
            a.rr(b"\x3B", X.R9, X.RAX, 1)                         # cmp r9, rax
            a.jcc(CC["g"], self.abort)
            a.rm(b"\x8B", X.R10, X.R10, 76, 0)                    # r10d = skb->data
            a.rr(b"\x01", X.R10, X.R11, 1)                        # r11 += data
        else:
            a.rm(b"\x8B", X.R10, X.R12, _CHAIN, 1)               # r10 = the run's descriptor
            a.rm(b"\x3B", X.R9, X.R10, 8, 1)                      # cmp r9, [desc + 8]
            ok = self.fresh()
            a.jcc(CC["g"] ^ 1, ok)
            # out of bounds; a run without a packet (length -1): the interpreter's VMError
            a.rm(b"\x83", 7, X.R10, 8, 1)                         # cmp qword [r10+8], -1
            a.b.append(0xFF)
            a.jcc(CC["nz"], self.abort)
            self._bridge_call(no_packet(self.pc), 0, save=False)
            a.jmp(self.abort)
            a.label(ok)
            a.rm(b"\x03", X.R11, X.R10, 0, 1)                     # r11 += data
        self._load(X.RAX, X.R11, 0, size, False)
        if size == 2:
            a.rr(b"\xC1", 1, X.RAX, 0, pre=b"\x66")
            a.b.append(8)
            a.rr(b"\x0F\xB7", X.RAX, X.RAX, 0)
        elif size == 4:
            a.b += b"\x0F\xC8"                                    # bswap eax

    # -- control flow ----------------------------------------------------------------------------

    def target(self, delta: int) -> int:
        t = self.pc + 1 + delta
        if t not in self.valid or not self.start <= t < self.bounds[self.start]:
            raise self.unsupported(self.pc, f"jump to {t} outside its subprogram")
        return t

    def _emit_jcond(self, form, insn) -> None:
        a, w = self.a, 1 if form.width == 64 else 0
        t = self.target(insn.off)
        d = REG[insn.dst]
        if form.op == "jset":
            if form.source == "X":
                a.rr(b"\x85", REG[insn.src], d, w)
            else:
                a.rr(b"\xF7", 0, d, w)
                a.imm32(insn.imm)
        elif form.source == "X":
            a.rr(b"\x39", REG[insn.src], d, w)
        else:
            a.ri(7, d, insn.imm, w)
        if not self.budget or t > self.pc:
            a.jcc(CC[form.op], t)
            return
        # a jump back is charged when taken: branch over the charge on the opposite condition
        fall = self.fresh()
        a.jcc(CC[form.op] ^ 1, fall)
        self._back_edge(t)
        a.jmp(t)
        a.label(fall)

    def _emit_ja(self, form, insn) -> None:
        t = self.target(insn.imm if form.op == "gotol" else insn.off)
        self._back_edge(t)
        if t != self.pc + form.slots:
            self.a.jmp(t)

    def _emit_may_goto(self, form, insn) -> None:
        a = self.a
        t = self.target(insn.off)
        a.rm(b"\x83", 7, X.RBP, _BUDGET, 1)                       # cmp qword [rbp-520], 0
        a.b.append(0)
        a.jcc(CC["z"], t)
        a.rm(b"\x83", 5, X.RBP, _BUDGET, 1)                       # sub qword [rbp-520], 1
        a.b.append(1)

    def _back_edge(self, target: int) -> None:
        """Unverified loads: charge a jump back and poll for signals when the budget crosses
        a multiple of POLL_EVERY (jit/lower.py back_edge)."""
        if not self.budget or target > self.pc:
            return
        from pybpf.jit.lower import POLL_EVERY, _budget_spent
        a = self.a
        span = self.pc + 1 - target
        a.movabs(X.R11, self.budget)
        a.rm(b"\x81", 5, X.R11, 0, 1)                             # sub qword [r11], span
        a.imm32(span)
        ok = self.fresh()
        a.jcc(0x9, ok)                                            # jns
        self._bridge_call(_budget_spent, 0, save=False)
        a.jmp(self.abort)
        a.label(ok)
        skip = None
        if span < POLL_EVERY:
            # crossed a multiple of POLL_EVERY (2**16) iff low16(left) + span >= 2**16
            assert POLL_EVERY == 1 << 16
            skip = self.fresh()
            a.rm(b"\x81", 7, X.R11, 0, 0, pre=b"\x66")          # cmp word [r11], 2**16 - span
            a.b += (POLL_EVERY - span).to_bytes(2, "little")
            a.jcc(CC["jlt"], skip)                                # jb: no multiple crossed
        saved = (X.RAX, X.RDI, X.RSI, X.RDX, X.RCX, X.R8)         # 6 pushes: still aligned
        for r in saved:
            a.push(r)
        a.movabs(X.RAX, _check_signals_address())
        a.call_reg(X.RAX)
        a.rr(b"\x89", X.RAX, X.R11, 0)
        for r in reversed(saved):
            a.pop(r)
        a.rr(b"\x85", X.R11, X.R11, 0)
        a.jcc(CC["nz"], self.abort)
        if skip is not None:
            a.label(skip)

    def _emit_exit(self, form, insn) -> None:
        self._epilogue()

    # -- calls -----------------------------------------------------------------------------------

    def _save_args(self) -> None:
        a = self.a
        for r in _ARGS:
            a.push(r)
        a.ri(5, X.RSP, 8)                                          # sub rsp, 8: aligned

    def _restore_args(self) -> None:
        a = self.a
        a.ri(0, X.RSP, 8)
        for r in reversed(_ARGS):
            a.pop(r)

    def _bridge_call(self, fn, nargs: int, save: bool = True, unwind: bool = False,
                     hid_reg: int | None = None, framed: bool = False) -> None:
        """r0 = fn(r1..r<nargs>) through the shared bridge; abort when it failed. ``framed``:
        ``fn(record, r1..r<nargs>)`` with this frame's record (a helper's ``framed_fn``)."""
        from pybpf.jit.helper_calls import bridge_addresses

        a = self.a
        self.keep.append(fn)
        self.needs_gil = True
        if save:
            self._save_args()
        pushed = framed and nargs == 5
        if hid_reg is not None:
            a.mov(X.RSI, hid_reg)
        elif framed:    # rdi = callable, rsi = record, rdx.. = r1..r4, r5 on the stack
            if pushed:
                a.ri(5, X.RSP, 8)                                 # sub rsp, 8: aligned
                a.push(X.R8)
            a.mov(X.R9, X.RCX)
            a.mov(X.R8, X.RDX)
            a.mov(X.RCX, X.RSI)
            a.mov(X.RDX, X.RDI)
            a.rm(b"\x8D", X.RSI, X.RBP, _RECORD)                 # lea rsi, [rbp-536]
            nargs += 1
        else:   # bridge args: rdi = callable, rsi.. = r1..r5
            a.mov(X.R9, X.R8)
            a.mov(X.R8, X.RCX)
            a.mov(X.RCX, X.RDX)
            a.mov(X.RDX, X.RSI)
            a.mov(X.RSI, X.RDI)
        a.movabs(X.RDI, id(fn))
        a.movabs(X.RAX, bridge_addresses()[nargs])
        a.call_reg(X.RAX)
        if pushed:
            a.ri(0, X.RSP, 16)                                    # add rsp, 16
        a.rr(b"\x89", X.RDX, X.R11, 0)                            # the failed flag (dl)
        if save:
            self._restore_args()
        a.ri(4, X.R11, 1, 0)                                      # and r11d, 1
        a.jcc(CC["nz"], self.abort)
        if unwind:
            a.rr(b"\x85", X.RAX, X.RAX, 1)
            a.jcc(CC["z"], self.abort)

    def _call_helper(self, h) -> None:
        if h.native:
            self._native_helper(h)
            return
        if h.framed is not None:    # the run's stack regions: this program's frames
            self._bridge_call(h.framed, h.nargs, unwind=h.unwind, framed=True)
        else:
            self._bridge_call(h.fn, h.nargs, unwind=h.unwind)

    def _native_helper(self, h) -> None:
        """A helper computed inline (jit/native_helpers.py): constants, libc's clock_gettime,
        and what the map kit emits from the same description (prandom's taus113 step)."""
        from pybpf.jit import native_helpers, x86_kit
        a, spec = self.a, h.native
        if spec[0] == "const":
            a.mov_imm(X.RAX, spec[1])
            if h.unwind and not spec[1] & _M64:
                a.jmp(self.abort)
            return
        if spec[0] == "clock_gettime":
            self._save_args()
            a.ri(5, X.RSP, 16)                                    # struct timespec, aligned
            a.mov_imm(X.RDI, int(spec[1]))
            a.mov(X.RSI, X.RSP)
            a.movabs(X.RAX, native_helpers.clock_gettime_address())
            a.call_reg(X.RAX)
            a.rm(b"\x8B", X.RAX, X.RSP, 0, 1)                     # tv_sec
            a.rr(b"\x69", X.RAX, X.RAX, 1)                        # imul rax, rax, 10**9
            a.imm32(1_000_000_000)
            a.rm(b"\x03", X.RAX, X.RSP, 8, 1)                     # + tv_nsec
            a.ri(0, X.RSP, 16)
            self._restore_args()
        else:
            try:
                x86_kit.emit(a, lambda kit, _: native_helpers.emit(kit.b, spec),
                             ("native", self.pc, self.fresh()))
            except x86_kit.KitUnsupported as exc:
                raise self.unsupported(self.pc, f"inline native helper {h.name}: {exc}") \
                    from None
            self.keep.extend(native_helpers.keepalive(spec))
        if h.unwind:
            a.rr(b"\x85", X.RAX, X.RAX, 1)
            a.jcc(CC["z"], self.abort)

    def _map_lookup(self, h) -> bool:
        """A verified map_lookup_elem whose map (r1) is a known constant: the map's own native
        lookup (jit/x86_kit.py), no Python; False: bridge the helper."""
        from pybpf.jit import maps as native_maps, x86_kit
        env = self.env
        if h.name != "map_lookup_elem" or env.resolve_map is None or not env.verified:
            return False
        value = self.consts.get(1)
        m = env.resolve_map(value) if value is not None else None
        if m is None or not native_maps.supported(m):
            return False
        try:
            x86_kit.emit_lookup(self.a, m, REG[2], ("lookup", self.pc))
        except x86_kit.KitUnsupported:
            return False
        return True

    def _emit_call(self, form, insn) -> None:
        if form.op == "local":
            t = self.pc + 1 + insn.imm
            if t not in self.bounds:
                raise self.unsupported(self.pc, f"call to {t}, which starts no subprogram")
            self._save_args()
            self.a.call(("fn", t))
            self._restore_args()
            return
        if form.op == "helper":
            h = self.helpers.get(insn.imm)
            if h is None:
                raise self.unsupported(self.pc, f"helper {insn.imm} is not registered")
            if h.special:
                raise self.unsupported(self.pc, f"special helper {h.special}")
            if not self._map_lookup(h):
                self._call_helper(h)
            return
        registry = self.env.kfuncs
        if registry is None:
            raise self.unsupported(self.pc, "kfunc without the registry")
        from pybpf.jit.helper_calls import _entries
        kf = _entries(registry).get(insn.imm)
        if kf is None:
            raise self.unsupported(self.pc, f"unknown kfunc {insn.imm}")
        if kf.special:      # a control transfer the lowering implements (rbtree_add)
            raise self.unsupported(self.pc, f"special kfunc {kf.special}")
        self._call_helper(kf)

    def _emit_callx(self, form, insn) -> None:
        from pybpf.jit.helper_calls import _bad_callx

        a, d = self.a, REG[insn.dst]
        done = self.fresh()
        for h in self.helpers.all():
            miss = self.fresh()
            a.ri(7, d, h.id, 1)                                   # cmp d, id
            a.jcc(CC["nz"], miss)
            self._call_helper(h)
            a.jmp(done)
            a.label(miss)
        a.mov(X.R11, d)
        self._bridge_call(_bad_callx(self.pc), 1, save=False, hid_reg=X.R11)
        a.jmp(self.abort)
        a.label(done)


def _jump_targets(decoded) -> set[int]:
    """Where a jump can land (the constants known before it are forgotten there)."""
    out = set()
    for pc, f, i in decoded:
        if f.kind in ("jcond", "ja", "may_goto"):
            out.add(pc + 1 + (i.imm if f.op == "gotol" else i.off))
    return out


_HANDLERS: dict = {}


def _handlers() -> dict:
    if not _HANDLERS:
        _HANDLERS.update({k: getattr(_Emitter, f"_emit_{k}") for k in emitter_kinds()})
    return _HANDLERS
