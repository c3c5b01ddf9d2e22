"""The main loop of the verifier (the kernel's do_check): a depth-first walk over every path.

One :class:`Checker` per verification. The current path's :class:`~.state.VerifierState` is
stepped one instruction at a time by a handler per ISA form kind (:data:`HANDLERS`; a kind
without a handler is an error at import, not a silent default). A conditional jump whose
outcome the bounds cannot decide pushes the jump-taken state on a stack of pending branches;
an exit (or a pruned state) pops the next one. At prune points (jump targets, the instruction
after a call or conditional jump) the state is compared with the states already explored there
(:func:`.states_equal`): a state contained in a fully explored one is not explored again;
an identical state still being explored on the current path is an infinite loop. The walk
stops after 1,000,000 processed instructions as the kernel does.

Memory accesses and pointer arithmetic are :mod:`.mem`'s, helper/kfunc/subprogram calls
:mod:`.calls`' (CALLS), scalar math :mod:`.bounds`' (SCALAR), the log :mod:`.log`'s.
"""
from __future__ import annotations

import errno

from pybpf import isa
from pybpf.errors import VerifierError
from pybpf.insn import imm64
from pybpf.uapi import BPF_COMPLEXITY_LIMIT_INSNS

from . import bounds, iters, mem, precision
from .log import Log
from .state import (CONST_PTR_TO_MAP, MEM_RDONLY, NOT_INIT, NOT_INIT_REG, PTR_MAYBE_NULL,
                    PTR_TO_ARENA, PTR_TO_CTX, PTR_TO_FUNC, PTR_TO_MAP_VALUE, PTR_TO_PACKET,
                    PTR_TO_PACKET_END, PTR_TO_PACKET_META, PTR_TO_STACK, SCALAR_VALUE, FuncState,
                    SCALAR_ADD_CONST, Reg, VerifierState, states_equal, NOT_EXACT, EXACT,
                    RANGE_WITHIN)

INSN_LIMIT = BPF_COMPLEXITY_LIMIT_INSNS
JMP_STACK_LIMIT = 8192          # BPF_COMPLEXITY_LIMIT_JMP_SEQ
M64 = (1 << 64) - 1

# Program types whose ctx is the mem/syscall buffer (pybpf's mem type is verified as syscall).
MEM_LIKE = ("mem", "syscall")


_JMP_KINDS = frozenset({"jcond", "ja", "may_goto", "call", "callx", "exit"})


class Checkpoint:
    """A state stored at a prune point (the kernel's bpf_verifier_state_list entry).

    ``branches`` counts paths through it still being explored; 0 means every path from it
    was verified, so a state it contains may be pruned."""

    __slots__ = ("state", "branches", "parent", "pc", "hits", "miss", "pending", "backedges")

    def __init__(self, state: VerifierState, parent, pc: int) -> None:
        self.state, self.branches, self.parent, self.pc = state, 1, parent, pc
        self.hits = self.miss = 0
        # precision marks still incomplete: loop states (``pending``, still being explored)
        # whose later marks this one must receive; ``backedges``: the states pruned against a
        # loop state under this one, to receive its marks when it is done (precision.py)
        self.pending: list = []
        self.backedges: list = []


def _calls():
    try:
        from . import calls
        return calls
    except ImportError:          # CALLS' module not committed yet
        return None


class Checker:
    """One verification of one program (struct bpf_verifier_env)."""

    def __init__(self, prog, cfg, env, prog_type: str, log_level: int = 0,
                 attach_type: str | None = None) -> None:
        self.prog, self.cfg, self.env, self.prog_type = prog, cfg, env, prog_type
        self.attach_type = attach_type or ""     # prog->expected_attach_type (attach_types)
        self.form_at = cfg.form_at
        self.log = Log(log_level, prog)
        self.mem = mem
        self.calls = _calls()
        self.id_gen = 0
        self.pc = 0
        self.state: VerifierState = None
        self.pending: list[tuple[VerifierState, int]] = []
        self.explored: dict[int, list[Checkpoint]] = {}
        self.prune_points = _prune_points(prog, cfg)
        self.lddw_at = {pc for pc, form, _ in prog.instructions() if form.kind == "lddw"}
        self.prev_pc = -1
        from .liveness import liveness
        self.live_before = liveness(cfg, prog.instructions(), strong=False).before
        self.loop_points = _loop_points(prog, self.calls)
        for p in iters.iter_next_pcs(prog, env):     # iterator next calls: forced checkpoints
            self.loop_points[p] = "iter_next"
        self.prune_points |= set(self.loop_points)
        self.insn_processed = 0
        self.jmps_processed = self.prev_jmps = self.prev_insns = 0
        self.total_states = self.peak_states = self.cur_states = 0
        self.max_states_per_insn = 0
        self.max_ctx_offset = 0
        self.min_ctx_offset = 0                 # lowest (negative) ctx offset read: tracepoint
        self.kfunc0_calls: set[int] = set()     # reached kfunc calls without a function id
        self.max_pkt_offset = 0
        self.stack_depth: dict[int, int] = {sp.start: 0 for sp in cfg.subprogs}
        self.seen: dict[int, list] = {}         # pc -> [Reg per register] joined kinds (facts)
        self.access: dict[int, set] = {}        # pc -> set of base types a memory insn used
        self.subprog_starts = [sp.start for sp in cfg.subprogs]
        self.verifies_globals = True         # calls.py: global functions are verified alone
        self.global_entry = None             # the global function being verified, if any

    # -- helpers for handlers and for calls.py --------------------------------------------------
    def error(self, msg: str, err: int = errno.EACCES, pc: int | None = None):
        pc = self.pc if pc is None else pc
        self.log.flush_pending()
        self.log.line(msg)
        raise VerifierError(msg, pc, log=self.log.text(), errno=err)

    def reg(self, regno: int) -> Reg:
        return self.state.cur.regs[regno]

    def set_reg(self, regno: int, r: Reg) -> None:
        self.state.cur.regs[regno] = r

    def new_id(self) -> int:
        self.id_gen += 1
        return self.id_gen

    def origin(self, what: str):
        return (self.pc, what)

    def check_reg_read(self, regno: int) -> Reg:
        """check_reg_arg(SRC_OP)."""
        if regno >= isa.NREGS:
            self.error(f"R{regno} is invalid", errno.EINVAL)
        r = self.state.cur.regs[regno]
        if r.type == NOT_INIT:
            self.error(f"R{regno} !read_ok")
        return r

    def check_reg_write(self, regno: int) -> None:
        """check_reg_arg(DST_OP)."""
        if regno >= isa.NREGS:
            self.error(f"R{regno} is invalid", errno.EINVAL)
        if regno == 10:
            self.error("frame pointer is read only")

    def mark_unknown(self, regno: int, what: str = "unknown") -> None:
        self.set_reg(regno, Reg.scalar(None, self.origin(what)))

    def clobber_caller_saved(self) -> None:
        for r in range(1, 6):
            self.state.cur.regs[r] = NOT_INIT_REG

    def push_frame(self, callsite: int, subprogno: int) -> FuncState:
        st = self.state
        if len(st.frames) >= isa.MAX_CALL_FRAMES:
            self.error(f"the call stack of {len(st.frames) + 1} frames is too deep", errno.E2BIG)
        f = FuncState(len(st.frames), subprogno, callsite)
        f.regs[10] = Reg.pointer(PTR_TO_STACK, frameno=f.frameno)
        st.frames.append(f)
        return f

    def subprog_index(self, pc: int) -> int:
        from bisect import bisect_right
        return bisect_right(self.subprog_starts, pc) - 1

    def push_branch(self, st: VerifierState, pc: int) -> None:
        if len(self.pending) >= JMP_STACK_LIMIT:
            # the kernel counts the state being pushed (push_stack: stack_size++, then > limit)
            self.error(f"The sequence of {len(self.pending) + 1} jumps is too complex.",
                       errno.E2BIG)
        if st.parent is not None:
            st.parent.branches += 1
        self.pending.append((st, pc))

    # -- the walk ------------------------------------------------------------------------------
    def initial_state(self) -> VerifierState:
        st = VerifierState()
        f = st.cur
        f.regs[10] = Reg.pointer(PTR_TO_STACK)
        f.regs[1] = Reg.pointer(PTR_TO_CTX, origin=(0, "the program's context (r1)"))
        if self.prog_type == "mem":         # pybpf's mem type: r2 = the memory's length
            f.regs[2] = Reg.scalar(None, (0, "the memory's length (r2)"))
        return st

    def run(self) -> None:
        self.state = self.initial_state()
        self.global_entry = None
        self._drain(0)
        # do_check_subprogs: each global function a verified path calls is verified on its
        # own, from the registers its BTF prototype promises (calls.global_func_entry_regs)
        done = set()
        while True:
            todo = sorted(self.__dict__.get("global_funcs_called", set()) - done)
            if not todo or self.calls is None:
                return
            for start in todo:
                done.add(start)
                self._verify_global(start)

    def _verify_global(self, start: int) -> None:
        st = VerifierState()
        f = st.cur
        f.subprogno = self.subprog_index(start)
        f.regs[10] = Reg.pointer(PTR_TO_STACK)
        for r, reg in self.calls.global_func_entry_regs(self, start).items():
            f.regs[r] = reg
        self.state = st
        self.global_entry = start
        name = self.prog.functions.get(start, f"func#{f.subprogno}")
        self.log.line(f"Validating {name}() func#{f.subprogno}...")
        self._drain(start)

    def _drain(self, pc: int) -> None:
        self.prev_pc = -1
        self.state.first_insn_idx = pc
        while True:
            pc = self._walk(pc)
            if pc is None:
                return

    def _walk(self, pc: int):
        """Step the current state until its path ends; return the next pending pc or None."""
        log = self.log
        while True:
            self.insn_processed += 1
            if self.insn_processed > INSN_LIMIT:
                self.error(f"BPF program is too large. Processed {self.insn_processed} insn",
                           errno.E2BIG, pc)
            self.pc = pc
            prev = self.prev_pc
            # a jump into pc (anything but falling through from prev) goes in the history
            jumped = prev < 0 or pc != prev + (2 if prev in self.lddw_at else 1)
            self.state.last_insn_idx = prev
            if pc in self.prune_points:
                if self._visit(pc, jumped):
                    log.pruned(pc)
                    nxt = self._path_done()
                    if nxt is None:
                        return None
                    pc = nxt
                    continue
            if jumped and prev >= 0:
                precision.push_hist(self.state, pc, prev)
            self.prev_pc = pc
            entry = self.form_at.get(pc)
            if entry is None:
                self.error(f"invalid insn idx {pc} insn_cnt {len(self.prog.insns)}",
                           errno.EFAULT)
            form, insn = entry
            if form.kind in _JMP_KINDS:
                self.jmps_processed += 1
            if log.enabled:
                log.insn(pc, self.state)
            if form.size:
                self._record(pc, form, insn)
            nxt = HANDLERS[form.kind](self, pc, form, insn)
            if log.enabled and nxt is not None:
                log.after(self.state)
            if nxt is None:             # exit of the main program: this path is done
                nxt = self._path_done()
                if nxt is None:
                    return None
            pc = nxt

    def _path_done(self):
        """update_branch_counts + pop_stack: the next pending state's pc, or None."""
        self._finish(self.state.parent)
        if not self.pending:
            return None
        st, pc = self.pending.pop()
        self.state = st
        self.prev_pc = st.insn_idx            # the instruction that queued this branch
        self.log.from_to(st.insn_idx, pc, st)
        return pc

    def _visit(self, pc: int, jumped: bool = False) -> bool:
        """is_state_visited: True to prune the current path here."""
        st = self.state
        lst = self.explored.setdefault(pc, [])
        special = self.loop_points.get(pc)
        live = self.live_before.get(pc, 0x7FF) | 0x400
        # add a state only after 2 jumps and 8 instructions since the last one, as the kernel
        # does (is_state_visited), unless this is a loop point (the kernel's force_checkpoint)
        add_new = bool(special) or (self.jmps_processed - self.prev_jmps >= 2 and
                                    self.insn_processed - self.prev_insns >= 8)
        for cp in reversed(lst):        # newest first, as the kernel's list
            if cp.branches == 0:
                # a state whose precision marks may still grow (inside a loop being explored)
                # is compared range by range (the kernel's incomplete_read_marks)
                anchor = _active_anchor(cp) if cp.pending else None
                if states_equal(cp.state, st, RANGE_WITHIN if anchor else NOT_EXACT,
                                live=live):
                    return self._hit(cp, pc, jumped, live, anchor)
            elif special == "iter_next":
                # an iterator's next call reached again on the path exploring it: a state
                # within the old one with the iterator still active is covered by it (the
                # loop converged); otherwise no infinite-loop check (iterators terminate)
                if states_equal(cp.state, st, RANGE_WITHIN, live=live) and \
                        iters.iter_active(st, st.cur.regs[1]):
                    return self._hit(cp, pc, jumped, live, cp)
            elif special == "callback":
                # a callback-calling insn reached again within a state still being explored
                if states_equal(cp.state, st, RANGE_WITHIN, live=live):
                    return self._hit(cp, pc, jumped, live, cp)
            else:
                if special == "may_goto" and cp.state.may_goto_depth != st.may_goto_depth \
                        and states_equal(cp.state, st, RANGE_WITHIN, live=live):
                    return self._hit(cp, pc, jumped, live, cp)
                if cp.state.may_goto_depth == st.may_goto_depth and \
                        _unroll(cp.state) == _unroll(st) and \
                        iters.active_depths(cp.state) == iters.active_depths(st) and \
                        states_equal(cp.state, st, EXACT) and _on_path(cp, st):
                    self.error(f"infinite loop detected at insn {pc}", errno.EINVAL)
            # a miss counts only when a state will be added here: otherwise the iterations
            # of a loop would evict the states recorded earlier (the kernel's miss_cnt)
            if add_new:
                cp.miss += 1
        if not add_new:
            return False
        self.prev_jmps, self.prev_insns = self.jmps_processed, self.insn_processed
        # evict states unlikely to be useful (the kernel's miss_cnt > hit_cnt * n + n); a state
        # still being explored stays reachable from its children for branch counting
        n = 64 if special else 3
        if len(lst) > 4:
            lst[:] = [c for c in lst if c.miss <= c.hits * n + n]
        snap = st.copy()
        snap.parent = None
        cp = Checkpoint(snap, st.parent, pc)
        st.parent = cp
        st.first_insn_idx = pc             # the state going on keeps a fresh history
        st.hist = None
        lst.append(cp)
        self.total_states += 1
        self.cur_states += 1
        self.peak_states = max(self.peak_states, self.cur_states)
        self.max_states_per_insn = max(self.max_states_per_insn, len(lst))
        return False

    def _hit(self, cp: Checkpoint, pc: int, jumped: bool, live: int, anchor) -> bool:
        """A state at ``pc`` within ``cp``'s: what was precise after ``cp`` is precise on the
        current path too (propagate_precision). ``anchor``: a loop state still being
        explored (``cp`` itself, or the loop ``cp`` lies in): ``cp``'s marks are not final, so
        the current state is kept as a back-edge to receive them again when ``anchor`` is
        done, and the checkpoints between it and ``anchor`` are compared range by range
        until then (the kernel's SCC back-edges, propagate_backedges)."""
        cp.hits += 1
        st = self.state
        if jumped and self.prev_pc >= 0:
            precision.push_hist(st, pc, self.prev_pc)
        precision.propagate_precision(self, cp.state, live)
        if anchor is not None:
            anchor.backedges.append((st.copy(), pc, cp.state, live))
            c = st.parent
            while c is not None and c is not anchor:
                if anchor not in c.pending:
                    c.pending.append(anchor)
                c = c.parent
        return True

    def _finish(self, cp) -> None:
        """A path through ``cp`` is finished (update_branch_counts); a loop state whose
        paths are all done hands its final precision marks to its back-edges."""
        while cp is not None:
            cp.branches -= 1
            if cp.branches > 0:
                return
            if cp.backedges:
                self._propagate_backedges(cp)
            cp = cp.parent

    def _propagate_backedges(self, cp: Checkpoint) -> None:
        """propagate_backedges: until nothing changes, each state pruned against a state of
        this loop gets that state's (now final) precision marks; an enclosing loop still
        being explored does it again when it is done."""
        changed = True
        while changed:
            changed = False
            for be, pc, equal, live in cp.backedges:
                if precision.propagate_precision(self, equal, live, cur=be, pc=pc):
                    changed = True
        outer = _active_anchor(cp) if cp.pending else None
        if outer is not None:
            outer.backedges.extend(cp.backedges)
        cp.backedges = []

    def mark_precise(self, regno: int) -> None:
        """mark_chain_precision for a register of the current frame."""
        precision.mark_chain_precision(self, regno)

    def _record(self, pc: int, form, insn) -> None:
        """Facts for the JIT: the kind of a memory instruction's base register (joined over
        every path that reached it)."""
        base = insn.src if form.kind == "ldx" or form.op == "load_acq" else insn.dst
        k = _kind(self.state.cur.regs[base])
        seen = self.seen
        prev = seen.get(pc)
        if prev is None:
            seen[pc] = (base, k)
        elif prev[1] != k:
            seen[pc] = (base, _join_kind(prev[1], k))

    def stats(self) -> dict:
        return {"processed_insns": self.insn_processed,
                "max_states_per_insn": self.max_states_per_insn,
                "total_states": self.total_states, "peak_states": self.peak_states,
                "mark_read": 0}


def _active_anchor(cp: Checkpoint):
    """The loop state still being explored whose precision marks ``cp`` waits for, or None:
    its own ``pending`` anchors, or, for those already done, theirs in turn."""
    todo, seen = list(cp.pending), set()
    while todo:
        a = todo.pop()
        if id(a) in seen:
            continue
        seen.add(id(a))
        if a.branches > 0:
            return a
        todo.extend(a.pending)
    return None


def _unroll(st: VerifierState) -> tuple:
    """The callback unroll depths of a state's frames (the kernel's callback_unroll_depth):
    a state inside another callback iteration is not an infinite loop."""
    return tuple(f.callback_depth for f in st.frames)


def _on_path(cp: Checkpoint, st: VerifierState) -> bool:
    p = st.parent
    while p is not None:
        if p is cp:
            return True
        p = p.parent
    return False


def _kind(r: Reg):
    """The JIT's register kind for a verifier type (jit/kinds.py's vocabulary)."""
    t = r.type
    if t == PTR_TO_ARENA:
        return ("arena",)
    if t == PTR_TO_STACK:
        return ("stack", r.off if r.var.is_const() and r.var.const_value() == 0 else None,
                r.frameno)
    if t == SCALAR_VALUE and r.var.is_const():
        return ("const", r.var.const_value())
    if t == NOT_INIT:
        return None
    return ("ptr", int(t))        # no map object: facts must not keep maps alive


def _join_kind(a, b):
    if a == b:
        return a
    if a is not None and b is not None and a[0] == b[0] == "stack" and a[2] == b[2]:
        return ("stack", None, a[2])
    return ("mixed",)


def _loop_points(prog, calls) -> dict:
    """may_goto instructions and helper calls that call a callback (bpf_loop...): checkpoints
    there let a loop converge on a state within one still being explored."""
    out = {}
    cb = getattr(calls, "CALLBACK_HELPERS", ()) if calls is not None else ()
    for pc, form, insn in prog.instructions():
        if form.kind == "may_goto":
            out[pc] = "may_goto"
        elif form.kind == "call" and form.op == "helper" and insn.imm in cb:
            out[pc] = "callback"
    return out


def _prune_points(prog, cfg) -> set:
    """The kernel's prune points (visit_insn): every conditional jump, the target of every
    unconditional jump, the instruction after a call, and a BPF-to-BPF call itself."""
    from .cfg import jump_target
    pts = set()
    for pc, form, insn in prog.instructions():
        k = form.kind
        if k in ("jcond", "may_goto"):
            pts.add(pc)
        elif k == "ja":
            pts.add(jump_target(form, insn, pc))
        elif k in ("call", "callx"):
            pts.add(pc + 1)
            if form.op == "local":
                pts.add(pc)
    return pts


# --- handlers, one per form kind --------------------------------------------------------------
def _alu(chk: Checker, pc, form, insn):
    op, is64 = form.op, form.width == 64
    dst = insn.dst
    if form.source == "X":
        src = chk.check_reg_read(insn.src)
    else:
        src = None
        if op != "mov":
            chk.check_reg_read(dst)     # check_alu_op reads dst before it looks at the imm
        if op in ("div", "mod", "sdiv", "smod") and insn.imm == 0:
            chk.error("div by zero", errno.EINVAL)
        if op in ("lsh", "rsh", "arsh") and not 0 <= insn.imm < form.width:
            chk.error(f"invalid shift {insn.imm}", errno.EINVAL)
    if op == "mov":
        chk.check_reg_write(dst)
        if src is None:
            v = insn.imm & M64 if is64 else insn.imm & 0xFFFFFFFF
            chk.set_reg(dst, Reg.scalar(v, chk.origin("a constant")))
        elif is64:
            if src.type == SCALAR_VALUE and not src.id and not src.var.is_const():
                src = src.replace(id=chk.new_id())      # assign_scalar_id_before_mov
                chk.set_reg(insn.src, src)
            chk.set_reg(dst, src)
        elif src.type == SCALAR_VALUE:
            sid = 0
            if src.var.umax <= 0xFFFFFFFF and not src.var.is_const() and \
                    not src.flags & SCALAR_ADD_CONST:
                if not src.id:
                    src = src.replace(id=chk.new_id())
                    chk.set_reg(insn.src, src)
                sid = src.id
            chk.set_reg(dst, Reg(SCALAR_VALUE, var=bounds.zext32(src.var), id=sid,
                                 origin=src.origin))
        else:
            # w = (u32) pointer: an unknown scalar for root (allow_ptr_leaks), zero-extended
            # like every 32-bit result (check_alu_op: mark_reg_unknown, then zext_32_to_64)
            chk.mark_unknown(dst, "the low half of a pointer")
            low = chk.reg(dst)
            chk.set_reg(dst, low.replace(var=bounds.zext32(low.var)))
        return pc + 1
    d = chk.check_reg_read(dst)
    chk.check_reg_write(dst)
    if src is None:
        imm = insn.imm & M64 if is64 else insn.imm & 0xFFFFFFFF
        src = Reg.scalar(imm)
    chk.set_reg(dst, mem.adjust_reg(chk, op, d, src, is64, insn, form.source == "X"))
    return pc + 1


def _neg(chk: Checker, pc, form, insn):
    d = chk.check_reg_read(insn.dst)
    chk.check_reg_write(insn.dst)
    if d.type == PTR_TO_ARENA:
        return pc + 1
    if d.type != SCALAR_VALUE:
        chk.mark_unknown(insn.dst, "a negated pointer")
        return pc + 1
    chk.set_reg(insn.dst, Reg(SCALAR_VALUE, var=bounds.neg(d.var, form.width == 64),
                              origin=d.origin))
    return pc + 1


def _end(chk: Checker, pc, form, insn):
    d = chk.check_reg_read(insn.dst)
    chk.check_reg_write(insn.dst)
    if d.type == PTR_TO_ARENA:
        return pc + 1
    if d.type != SCALAR_VALUE:
        chk.mark_unknown(insn.dst, "a byte-swapped pointer")
        return pc + 1
    chk.set_reg(insn.dst, Reg(SCALAR_VALUE, var=bounds.end(d.var, form.op, form.width),
                              origin=d.origin))
    return pc + 1


def _movsx(chk: Checker, pc, form, insn):
    s = chk.check_reg_read(insn.src)
    chk.check_reg_write(insn.dst)
    bits = int(form.op[1:])
    if s.type == SCALAR_VALUE:
        chk.set_reg(insn.dst, Reg(SCALAR_VALUE, var=bounds.movsx(s.var, bits, form.width == 64),
                                  origin=s.origin))
    else:
        chk.mark_unknown(insn.dst, "a sign-extended pointer")
    return pc + 1


def _cast(chk: Checker, pc, form, insn):
    chk.check_reg_read(insn.src)
    chk.check_reg_write(insn.dst)
    if not chk.env.has_arena:
        chk.error("addr_space_cast insn can only be used in a program that has an associated "
                  "arena", errno.EINVAL)
    if form.op == "kern":          # as(1) -> as(0): an arena pointer (32-bit, zero-extended)
        chk.set_reg(insn.dst, Reg.pointer(PTR_TO_ARENA, origin=chk.origin("addr_space_cast")))
    else:
        chk.mark_unknown(insn.dst, "addr_space_cast to user")
    return pc + 1


def _ldx(chk: Checker, pc, form, insn):
    chk.check_reg_read(insn.src)
    chk.check_reg_write(insn.dst)
    mem.check_mem_access(chk, insn.src, insn.off, form.size, write=False,
                         value_regno=insn.dst, signed=form.signed)
    return pc + 1


def _st(chk: Checker, pc, form, insn):
    chk.check_reg_read(insn.dst)
    mem.check_mem_access(chk, insn.dst, insn.off, form.size, write=True, value_regno=-1,
                         imm=insn.imm)
    return pc + 1


def _stx(chk: Checker, pc, form, insn):
    chk.check_reg_read(insn.src)
    chk.check_reg_read(insn.dst)
    mem.check_mem_access(chk, insn.dst, insn.off, form.size, write=True,
                         value_regno=insn.src)
    return pc + 1


def _atomic(chk: Checker, pc, form, insn):
    mem.check_atomic(chk, form, insn)
    return pc + 1


def _lddw(chk: Checker, pc, form, insn):
    chk.check_reg_write(insn.dst)
    op = form.op
    if op == "imm64":
        chk.set_reg(insn.dst, Reg.scalar(imm64(chk.prog.insns, pc), chk.origin("a constant")))
        return pc + 2
    if op == "func":
        tgt = pc + 1 + insn.imm
        chk.set_reg(insn.dst, Reg.pointer(PTR_TO_FUNC, subprog=tgt,
                                          origin=chk.origin("a function reference")))
        return pc + 2
    if op == "btf_id":
        if insn.imm == 0:       # check_pseudo_btf_id: id 0 is void in every BTF
            chk.error("pseudo btf_id 0 in ldimm64 isn't KIND_VAR or KIND_FUNC", errno.EINVAL)
        chk.error("ldimm64 btf_id needs kernel BTF, which pybpf does not have", errno.EINVAL)
    by_index = op.startswith("map_idx")
    m = chk.env.map_by_index(insn.imm) if by_index else chk.env.map_by_fd(insn.imm)
    if m is None:
        if by_index:
            chk.error(f"map index {insn.imm} out of range", errno.EINVAL)
        chk.error(f"fd {insn.imm} is not pointing to valid bpf_map", errno.EBADF)
    what = f"map '{m.name}'" if m.name else "a map"
    if op in ("map_fd", "map_idx"):
        chk.set_reg(insn.dst, Reg.pointer(CONST_PTR_TO_MAP, map=m, origin=chk.origin(what)))
        return pc + 2
    # resolve_pseudo_ldimm64: a direct value address (array of one element, arena)
    off = chk.prog.insns[pc + 1].imm & 0xFFFFFFFF
    if off >= mem.BPF_MAX_VAR_OFF:
        chk.error(f"direct value offset of {off} is not allowed", errno.EINVAL)
    if m.type not in ("array", "arena"):
        chk.error("no direct value access support for this map type", errno.EINVAL)
    if m.type == "arena":
        chk.mark_unknown(insn.dst, "an arena address")      # check_ld_imm: arena -> scalar
        return pc + 2
    if m.max_entries != 1 or off >= m.value_size:
        chk.error(f"invalid access to map value pointer, value_size={m.value_size} off={off}",
                  errno.EINVAL)
    chk.set_reg(insn.dst, Reg(PTR_TO_MAP_VALUE, 0, off, bounds.Scalar.const(0), map=m,
                              origin=chk.origin(f"{what} (global data)")))
    return pc + 2


def _ldabs(chk: Checker, pc, form, insn):
    if chk.prog_type not in ("socket_filter", "sched_cls", "cgroup_skb", "lwt_in"):
        chk.error("BPF_LD_[ABS|IND] instructions not allowed for this program type",
                  errno.EINVAL)
    r6 = chk.check_reg_read(6)
    if form.op == "ind":
        chk.check_reg_read(insn.src)
    if r6.type != PTR_TO_CTX:
        chk.error("at the time of BPF_LD_ABS|IND R6 != pointer to skb", errno.EINVAL)
    chk.clobber_caller_saved()
    chk.set_reg(0, Reg.scalar(bounds.load_result(form.size, False), chk.origin("ld_abs")))
    return pc + 1


def _ja(chk: Checker, pc, form, insn):
    return pc + 1 + (insn.imm if form.op == "gotol" else insn.off)


def _may_goto(chk: Checker, pc, form, insn):
    """The current path takes the jump (the loop's exit); the fall-through (another
    iteration) is queued with may_goto_depth + 1, its scalars widened against the previous
    iteration's (widen_imprecise_scalars: a scalar that changed and is precise in neither
    state becomes unknown)."""
    st = chk.state.copy()
    st.may_goto_depth += 1
    st.insn_idx = pc
    prev = st.parent
    if prev is not None and prev.pc == pc:      # the checkpoint just made for this visit
        prev = prev.parent
    while prev is not None and prev.pc != pc:
        prev = prev.parent
    if prev is not None and len(prev.state.frames) == len(st.frames):
        _widen(prev.state, st)
    chk.push_branch(st, pc + 1)
    return pc + 1 + insn.off


def _widen(old: VerifierState, cur: VerifierState) -> None:
    from .state import Slot, _same_scalar
    for fo, fc in zip(old.frames, cur.frames):
        for i, (ro, rc) in enumerate(zip(fo.regs, fc.regs)):
            if rc.precise or ro.precise:
                continue
            if ro.type == SCALAR_VALUE and rc.type == SCALAR_VALUE and \
                    not _same_scalar(ro.var, rc.var):
                fc.regs[i] = Reg.scalar(None, rc.origin)
        for spi, slot in list(fc.stack.items()):
            so = fo.stack.get(spi)
            sp = slot.spilled
            if sp is not None and sp.type == SCALAR_VALUE and not sp.precise and so is not None and \
                    so.spilled is not None and so.spilled.type == SCALAR_VALUE and \
                    not so.spilled.precise and \
                    not _same_scalar(so.spilled.var, sp.var):
                fc.stack[spi] = Slot(slot.types, Reg.scalar(None, sp.origin))


def _jcond(chk: Checker, pc, form, insn):
    return mem.check_cond_jmp(chk, pc, form, insn)


def _call(chk: Checker, pc, form, insn):
    calls = chk.calls
    if form.op == "local":
        if calls is not None and hasattr(calls, "check_subprog_call"):
            return calls.check_subprog_call(chk, pc, insn)
        return _subprog_call_fallback(chk, pc, insn)
    if form.op == "kfunc":
        if calls is not None and hasattr(calls, "check_kfunc_call"):
            if calls.check_kfunc_call(chk, pc, insn) is False:
                return None             # bpf_throw: an exception exit ends the path
            return pc + 1
        chk.error(f"calling kernel function {insn.imm} is not allowed", errno.EINVAL)
    if calls is not None and hasattr(calls, "check_helper_call"):
        calls.check_helper_call(chk, pc, insn)
        return pc + 1
    return _helper_call_fallback(chk, pc, insn)


def _callx(chk: Checker, pc, form, insn):
    # 6.18's bpf_opcode_in_insntable has no BPF_JMP|BPF_CALL|BPF_X: the kernel refuses callx
    # (from a user) before do_check, as an unknown opcode (checked with the conformance callx)
    chk.error(f"unknown opcode {insn.opcode:02x}", errno.EINVAL)


def _exit(chk: Checker, pc, form, insn):
    st = chk.state
    if len(st.frames) > 1:
        calls = chk.calls
        if calls is not None and hasattr(calls, "prepare_func_exit"):
            return calls.prepare_func_exit(chk, pc)
        return _func_exit_fallback(chk, pc)
    if chk.calls is not None and hasattr(chk.calls, "check_resource_leak"):
        chk.calls.check_resource_leak(chk, False, True, "BPF_EXIT instruction in main prog")
    elif st.refs:
        chk.error("BPF_EXIT instruction in main prog would lead to reference leak",
                  errno.EINVAL)
    if chk.global_entry is not None:
        r0 = chk.check_reg_read(0)
        if r0.type != SCALAR_VALUE:
            chk.error(f"At subprogram exit the register R0 is not a scalar value "
                      f"({r0.type_str()})", errno.EINVAL)
        return None
    check_return_code(chk)
    return None


def check_return_code(chk: Checker, regno: int = 0) -> None:
    """check_return_code: r0 at the main program's exit, or (``regno`` 1) bpf_throw's cookie,
    which the default exception callback returns."""
    r0 = chk.check_reg_read(regno)
    rng = retval_range(chk.prog_type, chk.attach_type)
    if rng is None:
        return
    chk.mark_precise(regno)
    if r0.type != SCALAR_VALUE:
        chk.error(f"At program exit the register R{regno} is not a known value "
                  f"({r0.type_str()})", errno.EINVAL)
    lo, hi = rng
    v = r0.var
    if v.smin < lo or v.smax > hi:
        parts = []
        if v.smin > bounds.S64_MIN:
            parts.append(f" smin={v.smin}")
        if v.smax < bounds.S64_MAX:
            parts.append(f" smax={v.smax}")
        desc = "".join(parts) or " unknown scalar value"
        chk.error(f"At program exit the register R{regno} has{desc} should have been in "
                  f"[{lo}, {hi}]", errno.EINVAL)


# check_return_code ranges for the program types pybpf runs (others: any scalar, as default:;
# raw_tracepoint without attach_btf_id, flow_dissector, lwt_*, sk_msg, perf_event included)
RETVAL_RANGE = {"cgroup_skb": (0, 1), "cgroup_sock": (0, 1), "cgroup_sock_addr": (0, 1),
                "sock_ops": (0, 1), "sk_lookup": (0, 1)}          # SK_DROP, SK_PASS
_RET_ONE = frozenset({"cgroup_udp4_recvmsg", "cgroup_udp6_recvmsg", "cgroup_unix_recvmsg",
                      "cgroup_inet4_getpeername", "cgroup_inet6_getpeername",
                      "cgroup_unix_getpeername", "cgroup_inet4_getsockname",
                      "cgroup_inet6_getsockname", "cgroup_unix_getsockname"})


def retval_range(prog_type: str, attach_type: str) -> tuple[int, int] | None:
    """The [min, max] R0 must lie in at exit (check_return_code), None for any value."""
    if prog_type == "cgroup_sock_addr":
        if attach_type in _RET_ONE:
            return (1, 1)
        if attach_type in ("cgroup_inet4_bind", "cgroup_inet6_bind"):
            return (0, 3)
    if prog_type == "cgroup_skb" and attach_type == "cgroup_inet_egress":
        return (0, 3)
    return RETVAL_RANGE.get(prog_type)


# --- stand-ins until calls.py lands (conservative: they never accept what the kernel refuses
#     for memory safety, they may refuse more) ------------------------------------------------
def _helper_call_fallback(chk: Checker, pc, insn):
    proto = chk.env.helper(insn.imm)
    if proto is None:
        chk.error(f"invalid func unknown#{insn.imm}", errno.EINVAL)
    chk.error(f"helper call {insn.imm} needs verifier/calls.py", errno.EINVAL)


def _subprog_call_fallback(chk: Checker, pc, insn):
    tgt = pc + 1 + insn.imm
    caller = chk.state.cur
    f = chk.push_frame(pc, chk.subprog_index(tgt))
    for r in range(1, 6):
        f.regs[r] = caller.regs[r]
    for r in range(0, 6):
        pass
    return tgt


def _func_exit_fallback(chk: Checker, pc):
    st = chk.state
    callee = st.frames.pop()
    r0 = callee.regs[0]
    if r0.type == NOT_INIT:
        chk.error("R0 !read_ok")
    caller = st.cur
    caller.regs[0] = r0
    for r in range(1, 6):
        caller.regs[r] = NOT_INIT_REG
    return callee.callsite + 1


HANDLERS = {
    "alu": _alu, "neg": _neg, "end": _end, "movsx": _movsx, "cast": _cast, "ldx": _ldx,
    "st": _st, "stx": _stx, "atomic": _atomic, "lddw": _lddw, "ldabs": _ldabs, "ja": _ja,
    "may_goto": _may_goto, "jcond": _jcond, "call": _call, "callx": _callx, "exit": _exit,
}
_missing = isa.KINDS - HANDLERS.keys()
if _missing:       # a new form kind needs a verifier rule: fail at import, never default
    raise AssertionError(f"verifier has no rule for ISA kinds {sorted(_missing)}")


def run_checks(prog, cfg, env, *, prog_type: str, log_level: int = 0,
               attach_type: str | None = None):
    """Run the abstract interpretation; return a VerifyResult (raise VerifierError)."""
    from . import VerifyResult
    from .facts import Facts
    from .stack_depth import check_stack_depth
    chk = Checker(prog, cfg, env, prog_type, log_level, attach_type)
    try:
        chk.run()
        check_stack_depth(prog, cfg, chk.stack_depth)
        if chk.kfunc0_calls:
            # do_misc_fixups (fixup_kfunc_call): a kfunc call without a function id is refused
            # once verification is over, unless it was dead code (removed before the fixups)
            chk.error("invalid kernel function call not eliminated in verifier pass",
                      errno.EINVAL, min(chk.kfunc0_calls))
    except VerifierError as e:
        e.program = prog
        st = chk.state
        if st is not None and e.context is None:
            path, node = [], st.branch_path
            while node is not None:
                path.append(node[:2])
                node = node[2]
            e.context = {"branch_path": tuple(reversed(path)), "regs": list(st.cur.regs)}
        if not e.log:
            e.log = chk.log.text()
        if e.log and not e.log.endswith(e.message + "\n"):
            chk.log.line(e.message)
            e.log = chk.log.text()
        e.log += chk.log.stats_line(chk.stats())
        raise
    log = chk.log.text() + chk.log.stats_line(chk.stats()) if log_level else ""
    return VerifyResult(log=log, facts=Facts(chk.seen, chk.access), stats=chk.stats(),
                        max_ctx_offset=chk.max_ctx_offset, stack_depth=dict(chk.stack_depth),
                        full=True, min_ctx_offset=chk.min_ctx_offset)
