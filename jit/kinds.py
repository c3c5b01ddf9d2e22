"""A small forward dataflow over register (and spilled stack slot) *kinds*, for the lowering.

The kernel decides which loads and stores are arena accesses (PROBE_MEM32) from the verifier's
register types. Until pybpf has that verifier, the JIT works the types out here, conservatively:

* ``ARENA``: the result of ``cast_kern``, and what the kernel keeps PTR_TO_ARENA (any ALU op on
  an arena destination; a 64-bit op with an arena source; 32-bit copies/ops of one), also after a
  spill to and fill from an 8-byte stack slot addressed through r10;
* ``("stack", off)``: r10 and r10 plus constants (``off`` None when no longer known);
* ``("const", value)``: the constant an ``ld_imm64`` put there (map pointers, global data and
  arena globals, function tokens), moved or offset by constants;
* ``None``: unknown, which the lowering checks at run time in arena programs.

Being wrong in the ``ARENA`` direction is memory-safe (the access lands inside the arena's
reservation, which never faults); a stack kind is only derived from r10 itself, never from
memory. Slots are forgotten at every call (a callee may write its caller's frame through a
pointer) and whenever a store through a stack pointer of unknown offset happens.
"""
from __future__ import annotations

from pybpf.insn import imm64

ARENA = ("arena",)
M64 = (1 << 64) - 1
_FRAME_TOP = ("stack", 0)
_UNKNOWN_STACK = ("stack", None)


def _join(a, b):
    if a == b:
        return a
    if a is not None and b is not None and a[0] == b[0] == "stack":
        return _UNKNOWN_STACK
    return None


class State:
    """Register kinds r0..r10 and the kinds of 8-byte stack slots (frame offset -> kind)."""

    __slots__ = ("regs", "slots")

    def __init__(self, regs: list, slots: dict) -> None:
        self.regs, self.slots = regs, slots

    def copy(self) -> "State":
        return State(list(self.regs), dict(self.slots))

    def join(self, other: "State") -> bool:
        """Merge ``other`` into this state; True when this state changed."""
        changed = False
        for i, (a, b) in enumerate(zip(self.regs, other.regs)):
            j = _join(a, b)
            if j != a:
                self.regs[i], changed = j, True
        for off in list(self.slots):
            j = _join(self.slots[off], other.slots.get(off))
            if j != self.slots[off]:
                changed = True
                if j is None:
                    del self.slots[off]
                else:
                    self.slots[off] = j
        return changed


def _forget_overlap(slots: dict, off: int, size: int) -> None:
    for o in [o for o in slots if o < off + size and off < o + 8]:
        del slots[o]


class Kinds:
    """The kinds before every instruction of one program (``analyze``)."""

    def __init__(self, before: dict[int, State]) -> None:
        self._before = before

    def reg(self, pc: int, r: int):
        state = self._before.get(pc)
        return state.regs[r] if state is not None else None

    def const(self, pc: int, r: int) -> int | None:
        kind = self.reg(pc, r)
        return kind[1] if kind is not None and kind[0] == "const" else None


def analyze(prog, cfg, values64: dict[int, int], func_value) -> Kinds:
    """Run the dataflow over every subprogram of ``prog`` (``cfg`` from build_cfg).

    ``func_value(slot)`` is the value the lowering gives ``ld_imm64 src 4`` pointing at ``slot``.
    """
    form_at = cfg.form_at
    before: dict[int, State] = {}
    for sp in cfg.subprogs:
        blocks = {s: blk for s, blk in cfg.blocks.items() if sp.start <= s < sp.end}
        if sp.start not in blocks:
            continue
        entry = State([None] * 10 + [_FRAME_TOP], {})
        states = {sp.start: entry}
        work = [sp.start]
        while work:
            start = work.pop()
            state = states[start].copy()
            blk = blocks[start]
            pc = blk.start
            while pc < blk.end:
                if pc not in form_at:
                    pc += 1
                    continue
                form, insn = form_at[pc]
                _step(state, pc, form, insn, prog, values64, func_value)
                pc += 2 if form.kind == "lddw" else 1
            for succ in blk.succs:
                if succ not in blocks:
                    continue
                have = states.get(succ)
                if have is None:
                    states[succ] = state.copy()
                    work.append(succ)
                elif have.join(state):
                    work.append(succ)
        # the fixpoint's input states give the state before each instruction
        for start, blk in blocks.items():
            if start not in states:
                continue
            state = states[start].copy()
            pc = blk.start
            while pc < blk.end:
                if pc in form_at:
                    form, insn = form_at[pc]
                    before[pc] = state.copy()
                    _step(state, pc, form, insn, prog, values64, func_value)
                    pc += 2 if form.kind == "lddw" else 1
                else:
                    pc += 1
    return Kinds(before)


def _step(state: State, pc: int, form, insn, prog, values64, func_value) -> None:
    regs, slots = state.regs, state.slots
    kind, op, dst = form.kind, form.op, insn.dst
    if kind == "alu":
        a = regs[dst]
        b = regs[insn.src] if form.source == "X" else None
        if op == "mov":
            if form.source != "X":
                regs[dst] = None
            elif form.width == 64:
                regs[dst] = b
            else:
                regs[dst] = ARENA if b == ARENA else None
        elif form.width == 32:
            regs[dst] = ARENA if ARENA in (a, b) else None
        elif a == ARENA or (a is None and b == ARENA):
            regs[dst] = ARENA
        elif a is not None and form.source != "X" and op in ("add", "sub"):
            delta = insn.imm if op == "add" else -insn.imm
            if a[0] == "stack":
                regs[dst] = ("stack", a[1] + delta) if a[1] is not None else a
            elif a[0] == "const":
                regs[dst] = ("const", (a[1] + delta) & M64)
            else:
                regs[dst] = None
        else:
            regs[dst] = None
    elif kind == "cast":
        regs[dst] = ARENA if op == "kern" else None
    elif kind == "lddw":
        if op == "imm64":
            regs[dst] = ("const", imm64(prog.insns, pc) & M64)
        elif op == "func":
            regs[dst] = ("const", func_value(pc + 1 + insn.imm))
        else:
            v = values64.get(pc)
            regs[dst] = ("const", v & M64) if v is not None else None
    elif kind == "ldx":
        base = regs[insn.src]
        value = None
        if base is not None and base[0] == "stack" and base[1] is not None and form.size == 8:
            value = slots.get(base[1] + insn.off)
        regs[dst] = value
    elif kind in ("st", "stx"):
        base = regs[dst]
        if base is not None and base[0] == "stack":
            if base[1] is None:
                slots.clear()
                return
            off = base[1] + insn.off
            _forget_overlap(slots, off, form.size)
            if kind == "stx" and form.size == 8:
                v = regs[insn.src]
                if v is not None and v[0] in ("arena", "const"):
                    slots[off] = v
    elif kind == "atomic":
        base = regs[insn.src if op == "load_acq" else dst]
        if base is not None and base[0] == "stack" and op != "load_acq":
            if base[1] is None:
                slots.clear()
            else:
                _forget_overlap(slots, base[1] + insn.off, form.size)
        if op == "load_acq":
            regs[dst] = None
        elif op == "cmpxchg":
            regs[0] = None
        elif op.startswith("fetch_") or op == "xchg":
            regs[insn.src] = None
    elif kind in ("neg", "movsx", "end"):
        regs[dst] = None
    elif kind in ("call", "callx"):
        regs[0] = None
        slots.clear()
    elif kind == "ldabs":
        regs[0] = None


class ProgramInfo:
    """What every function of one program shares while it is lowered."""

    def __init__(self, prog, functions, may_abort, values64, fp_fixed, env, cfg, tail,
                 func_value=None) -> None:
        self.prog, self.functions, self.may_abort = prog, functions, may_abort
        self.values64, self.fp_fixed, self.env, self.cfg, self.tail = (
            values64, fp_fixed, env, cfg, tail)
        self.arena = env.arena_layout()
        self.func_value = func_value     # ld_imm64 src 4 value of a slot (the lowering's)
        self._kinds = None
        self.loaded = False   # lowered with a JitEnv from a loader

    @property
    def kinds(self):
        """Register kinds before each instruction, computed once on first use: always for arena
        programs, else only for call sites that need a constant. For a verified program
        (``env.facts``, the verifier's per-instruction facts, as the kernel's JIT reads
        insn_aux_data) memory instructions take their base register's kind from the
        verifier; this module's dataflow serves unverified programs and the constants of
        ld_imm64 values (map and global addresses the verifier does not know)."""
        if self._kinds is None:
            self._kinds = analyze(self.prog, self.cfg, self.values64, self.func_value)
            facts = getattr(self.env, "facts", None)
            if facts is not None:
                self._kinds = VerifiedKinds(facts, self._kinds)
        return self._kinds


class VerifiedKinds:
    """Register kinds for a verified program: the verifier's facts for the base register of
    each memory access, this module's analysis for everything else."""

    def __init__(self, facts, fallback) -> None:
        self.facts, self.fallback = facts, fallback

    def reg(self, pc: int, r: int):
        kind = self.facts.reg(pc, r)     # the base register of a memory insn, if the verifier
        return kind if kind is not None else self.fallback.reg(pc, r)     # knows its kind

    def const(self, pc: int, r: int):
        return self.fallback.const(pc, r)
