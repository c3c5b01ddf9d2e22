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
from array import array

from pybpf import isa
from pybpf.errors import VerifierError
from pybpf.insn import imm64
from pybpf.uapi import BPF_COMPLEXITY_LIMIT_INSNS

from . import bounds, iters, mem, precision
from .log import Log
from .state import _same_scalar
from .state import (CONST_PTR_TO_MAP, MEM_RDONLY, NOT_INIT, NOT_INIT_REG, PTR_MAYBE_NULL,
                    PTR_TO_ARENA, PTR_TO_CTX, PTR_TO_FUNC, PTR_TO_MAP_VALUE, PTR_TO_PACKET,
                    PTR_TO_PACKET_END, PTR_TO_PACKET_META, PTR_TO_STACK, SCALAR_VALUE, FuncState,
                    Reg, VerifierState, states_equal, NOT_EXACT, EXACT,
                    RANGE_WITHIN, PTR_UNTRUSTED, RegType)

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

    __slots__ = ("state", "branches", "parent", "pc", "hits", "miss", "pending", "backedges",
                 "in_free")

    def __init__(self, state: VerifierState, parent, pc: int) -> None:
        self.state, self.branches, self.parent, self.pc = state, 1, parent, pc
        self.hits = self.miss = 0
        self.in_free = False        # evicted while still being explored (the free list)
        # precision marks still incomplete: loop states (``pending``, still being explored)
        # whose later marks this one must receive; ``backedges``: the states pruned against a
        # loop state under this one, to receive its marks when it is done (precision.py)
        self.pending: list = []
        self.backedges: list = []


class _LiveBefore:
    """Registers live before each slot (11-bit masks, liveness().before) as 2 bytes per slot
    instead of a dict entry and an int per instruction; ``get`` as the dict's (0x7FF where
    liveness has no entry: every register)."""

    __slots__ = ("_masks",)

    def __init__(self, before: dict, nslots: int) -> None:
        masks = array("H", [0x7FF]) * nslots
        for pc, live in before.items():
            masks[pc] = live
        self._masks = masks

    def get(self, pc: int, default: int = 0x7FF) -> int:
        return self._masks[pc] if 0 <= pc < len(self._masks) else default


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
        self.prune_points, self.jmp_points = _prune_points(prog, cfg)
        self.nslots = max(len(prog.insns), 1)    # state_htab_size: one bucket per slot
        self.lddw_at = {pc for pc, form, _ in prog.instructions() if form.kind == "lddw"}
        self.prev_pc = -1
        self.popped = False
        self.map_cache: dict = {}
        self.const_at: dict = {}             # pc -> the Reg a `rX = K` instruction writes
        from .liveness import liveness
        self.live_before = _LiveBefore(liveness(cfg, prog.instructions(), strong=False,
                                                call_uses=self._call_uses).before, self.nslots)
        self.loop_points = _loop_points(prog, self.calls)
        for p in iters.iter_next_pcs(prog, env):     # iterator next calls: forced checkpoints
            self.loop_points[p] = "iter_next"
        self.prune_points |= set(self.loop_points)
        # forced checkpoints (mark_force_checkpoint). Not bpf_rbtree_add's call, which the
        # kernel forces too: pybpf verifies its less() once per call site state instead of
        # returning to the call for more iterations, and measured on the corpus a checkpoint
        # there makes the counts further from the kernel's, not closer
        self.force_points = set(self.loop_points)
        # a callback-calling helper call is a jump point too (mark_jmp_point in visit_insn)
        self.jmp_points |= {p for p, k in self.loop_points.items() if k == "callback"}
        self.insn_processed = 0
        self.jmps_processed = self.prev_jmps = self.prev_insns = 0
        self.total_states = self.peak_states = self.cur_states = 0
        self.free_states = self.num_backedges = 0
        self.max_states_per_insn = 0
        self.max_ctx_offset = 0
        self.min_ctx_offset = 0                 # lowest (negative) ctx offset read: tracepoint
        self.kfunc0_calls: set[int] = set()     # reached kfunc calls without a function id
        self.aux_ptr_type: dict[int, tuple] = {}  # pc -> the base type first accessed there
        self.max_pkt_offset = 0
        self.stack_depth: dict[int, int] = {sp.start: 0 for sp in cfg.subprogs}
        self.seen: dict[int, list] = {}         # pc -> [Reg per register] joined kinds (facts)
        self.access: dict[int, frozenset] = {}  # pc -> set of base types a memory insn used
        # one object per distinct fact value (access sets, seen and aux_ptr_type entries): a
        # large program repeats a few values at hundreds of thousands of instructions
        self.shared_facts: dict = {}
        self.subprog_starts = [sp.start for sp in cfg.subprogs]
        self.verifies_globals = True         # calls.py: global functions are verified alone
        self.global_entry = None             # the global function being verified, if any

    def _call_uses(self, form, insn):
        """The registers a helper call reads: r1..rN for its N arguments (the kernel's
        get_call_summary); None (r1-r5) for other calls and unknown helpers."""
        if form.op != "helper":
            return None
        entry = self.env.helper(insn.imm)
        proto = getattr(entry, "prototype", entry)
        if proto is None or not hasattr(proto, "args"):
            return None
        return ((1 << (min(len(proto.args), 5) + 1)) - 1) & ~1

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

    def check_const_offset(self, regno: int, reg, what: str) -> None:
        """A lock, kptr or graph field argument must be at a constant offset (the kernel's
        words for each of them)."""
        if not reg.var.is_const():
            self.error(f"R{regno} doesn't have constant offset. {what} has to be at the "
                       f"constant offset", errno.EINVAL)

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
        # the log's length now: a level-1 log forgets the path explored before this branch is
        # popped (pop_stack's bpf_vlog_reset), so that it ends with the path that failed
        self.pending.append((st, pc, len(self.log.lines)))

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
        self.popped = False
        self.state.first_insn_idx = pc
        while True:
            pc = self._walk(pc)
            if pc is None:
                return

    def _walk(self, pc: int):
        """Step the current state until its path ends; return the next pending pc or None."""
        log = self.log
        prune_points, jmp_points, lddw_at = self.prune_points, self.jmp_points, self.lddw_at
        form_at, handlers, push_hist = self.form_at, HANDLERS, precision.push_hist
        while True:
            self.insn_processed += 1
            if self.insn_processed > INSN_LIMIT:
                self.error(f"BPF program is too large. Processed {self.insn_processed} insn",
                           errno.E2BIG, pc)
            self.pc = pc
            prev = self.prev_pc
            # a jump into pc (anything but falling through from prev) goes in the history
            jumped = prev < 0 or pc != prev + (2 if prev in lddw_at else 1)
            st = self.state
            st.last_insn_idx = prev
            if pc in prune_points:
                if self._visit(pc, jumped):
                    log.pruned(prev, pc, self.popped)
                    nxt = self._path_done()
                    if nxt is None:
                        return None
                    pc = nxt
                    continue
                st = self.state
            if prev >= 0 and (jumped or pc in jmp_points):
                push_hist(st, pc, prev, self.insn_processed)
            if self.popped:
                self.popped = False
                if log.level >= 2:
                    log.from_to(prev, pc, st)
            self.prev_pc = pc
            entry = form_at.get(pc)
            if entry is None:
                self.error(f"invalid insn idx {pc} insn_cnt {len(self.prog.insns)}",
                           errno.EFAULT)
            form, insn = entry
            kind = form.kind
            if kind in _JMP_KINDS:
                self.jmps_processed += 1
            if log.enabled:
                log.insn(pc, st)
            if form.size:
                self._record(pc, form, insn)
            nxt = handlers[kind](self, pc, form, insn)
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
        st, pc, log_pos = self.pending.pop()
        self.state = st
        self.prev_pc = st.insn_idx            # the instruction that queued this branch
        if self.log.level == 1:
            self.log.reset(log_pos)
        self.popped = True                    # the kernel's do_print_state
        return pc

    def _visit(self, pc: int, jumped: bool = False) -> bool:
        """is_state_visited: True to prune the current path here."""
        st = self.state
        # explored_state: one bucket per (insn ^ callsite), as the kernel hashes them (the
        # bucket's other instructions count in max_states_per_insn and nothing else)
        key = ((pc ^ st.cur.callsite) & 0xFFFFFFFF) % self.nslots
        lst = self.explored.get(key)
        if lst is None:
            lst = self.explored[key] = []
        special = self.loop_points.get(pc)     # a force checkpoint (mark_force_checkpoint)
        live = self.live_before.get(pc, 0x7FF) | 0x400
        # an outer frame's registers live before the call it waits in (frame_insn_idx)
        outer = [self.live_before.get(f.callsite, 0x7FF) | 0x400 for f in st.frames[1:]] \
            if len(st.frames) > 1 else None
        # a long jump history forces a checkpoint too (jmp_history_cnt > 40)
        forced = pc in self.force_points
        force = forced or st.hist_cnt > 40
        # otherwise add a state only after 2 jumps and 8 instructions since the last one
        add_new = force or (self.jmps_processed - self.prev_jmps >= 2 and
                            self.insn_processed - self.prev_insns >= 8)
        states_cnt = 0
        evict = None
        for cp in reversed(lst):        # newest first, as the kernel's list
            states_cnt += 1
            if cp.pc != pc:
                continue
            if cp.branches > 0:
                if special == "iter_next":
                    # an iterator's next call reached again on the path exploring it: a
                    # state within the old one with the iterator still active is covered by
                    # it (the loop converged); otherwise no infinite-loop check (iterators
                    # terminate)
                    if states_equal(cp.state, st, RANGE_WITHIN, live=live,
                                    outer_live=outer) and \
                            iters.iter_active(st, st.cur.regs[1]):
                        return self._hit(cp, pc, jumped, live, cp)
                elif special == "callback":
                    # a callback-calling insn reached again within a state still explored
                    if states_equal(cp.state, st, RANGE_WITHIN, live=live, outer_live=outer):
                        return self._hit(cp, pc, jumped, live, cp)
                else:
                    if special == "may_goto" and cp.state.may_goto_depth != st.may_goto_depth \
                            and states_equal(cp.state, st, RANGE_WITHIN, live=live,
                                             outer_live=outer):
                        return self._hit(cp, pc, jumped, live, cp)
                    # states_maybe_looping first: the innermost frame's registers alike
                    if _maybe_looping(cp.state, st) and \
                            cp.state.may_goto_depth == st.may_goto_depth and \
                            _unroll(cp.state) == _unroll(st) and \
                            iters.active_depths(cp.state) == iters.active_depths(st) and \
                            states_equal(cp.state, st, EXACT) and _on_path(cp, st):
                        self.error(f"infinite loop detected at insn {pc}", errno.EINVAL)
                # a loop being explored: a state only every 20 jumps or 100 instructions,
                # as different iterations have different states (skip_inf_loop_check)
                if not force and self.jmps_processed - self.prev_jmps < 20 and \
                        self.insn_processed - self.prev_insns < 100:
                    add_new = False
            else:
                # a state whose precision marks may still grow (inside a loop being explored)
                # is compared range by range (the kernel's incomplete_read_marks)
                anchor = _active_anchor(cp) if cp.pending else None
                if states_equal(cp.state, st, RANGE_WITHIN if anchor else NOT_EXACT,
                                live=live, outer_live=outer):
                    return self._hit(cp, pc, jumped, live, anchor)
            # a miss counts only when a state will be added here: otherwise the iterations
            # of a loop would evict the states recorded earlier (the kernel's miss_cnt)
            if add_new:
                cp.miss += 1
            # evict a state unlikely to be useful (miss_cnt > hit_cnt * n + n; a bigger n
            # for a checkpoint of a loop still being explored, so iterators converge). An
            # evicted state still being explored stays reachable from its children.
            n = 64 if forced and cp.branches > 0 else 3
            if cp.miss > cp.hits * n + n:
                if evict is None:
                    evict = []
                evict.append(cp)
        if evict:
            lst[:] = [c for c in lst if c not in evict]
            self.cur_states -= len(evict)
            for c in evict:     # the kernel keeps it on its free list until it is done
                if c.branches > 0:
                    c.in_free = True
                    self.free_states += 1
        self.max_states_per_insn = max(self.max_states_per_insn, states_cnt)
        if not add_new:
            return False
        self.prev_jmps, self.prev_insns = self.jmps_processed, self.insn_processed
        snap = st.copy()
        snap.parent = None
        cp = Checkpoint(snap, st.parent, pc)
        st.parent = cp
        st.first_insn_idx = pc             # the state going on keeps a fresh history
        st.hist = None
        st.hist_cnt = 0
        st.hist_tag = -1
        lst.append(cp)
        self.total_states += 1
        self.cur_states += 1
        self._peak()
        return False

    def _peak(self) -> None:
        """update_peak_states: stored, evicted-but-unfinished and back-edge states."""
        self.peak_states = max(self.peak_states,
                               self.cur_states + self.free_states + self.num_backedges)

    def _hit(self, cp: Checkpoint, pc: int, jumped: bool, live: int, anchor) -> bool:
        """A state at ``pc`` within ``cp``'s: what was precise after ``cp`` is precise on the
        current path too (propagate_precision). ``anchor``: a loop state still being
        explored (``cp`` itself, or the loop ``cp`` lies in): ``cp``'s marks are not final, so
        the current state is kept as a back-edge to receive them again when ``anchor`` is
        done, and the checkpoints between it and ``anchor`` are compared range by range
        until then (the kernel's SCC back-edges, propagate_backedges)."""
        cp.hits += 1
        st = self.state
        if self.prev_pc >= 0 and (jumped or pc in self.jmp_points):
            precision.push_hist(st, pc, self.prev_pc, self.insn_processed)
        precision.propagate_precision(self, cp.state, live)
        if anchor is not None:
            anchor.backedges.append((st.copy(), pc, cp.state, live))
            self.num_backedges += 1
            self._peak()
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
            if cp.in_free:
                cp.in_free = False
                self.free_states -= 1
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
        else:
            self.num_backedges -= len(cp.backedges)
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
            entry = (base, k)
        elif prev[1] != k:
            entry = (base, _join_kind(prev[1], k))
        else:
            return
        seen[pc] = self.shared_facts.setdefault(entry, entry)

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


def _maybe_looping(old: VerifierState, cur: VerifierState) -> bool:
    """states_maybe_looping: the same frame depth and the innermost frame's registers alike,
    ids as they are (the kernel's memcmp up to frameno): a cheap filter before the exact
    comparison, which maps ids."""
    if len(old.frames) != len(cur.frames):
        return False
    for a, b in zip(old.frames[-1].regs, cur.frames[-1].regs):
        if a is not b and (a.type != b.type or a.off != b.off or a.flags != b.flags or
                           a.id != b.id or a.ref_obj_id != b.ref_obj_id or
                           a.range != b.range or not _same_scalar(a.var, b.var)):
            return False
    return True


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


def _prune_points(prog, cfg) -> tuple[set, set]:
    """The kernel's prune points and jump points (check_cfg's visit_insn and push_insn):
    every conditional jump and may_goto and the target of its branch edge, the target of an
    unconditional jump, the instruction after a call (or after an ld_imm64 of a function),
    a BPF-to-BPF call and its callee's first instruction, an ld_imm64 of a function and the
    callback's first instruction. Jump points (mark_jmp_point): where the jump history
    records the instruction whatever the way in: branch targets, jump targets, returns."""
    from .cfg import jump_target
    pts, jmp = set(), set()
    for pc, form, insn in prog.instructions():
        k = form.kind
        if k in ("jcond", "may_goto"):
            pts.add(pc)
            t = jump_target(form, insn, pc)
            pts.add(t)
            jmp.add(t)
        elif k == "ja":
            t = jump_target(form, insn, pc)
            pts.add(t)
            jmp.add(t)
        elif k in ("call", "callx"):
            pts.add(pc + 1)
            jmp.add(pc + 1)
            if form.op == "local":
                pts.add(pc)
                t = jump_target(form, insn, pc)
                pts.add(t)
                jmp.add(t)
        elif k == "lddw" and form.op == "func":
            pts.update((pc, pc + 2))
            jmp.add(pc + 2)
            t = jump_target(form, insn, pc)
            pts.add(t)
            jmp.add(t)
    return pts, jmp


# --- handlers, one per form kind --------------------------------------------------------------
_K_CHECKED = frozenset({"div", "mod", "sdiv", "smod", "lsh", "rsh", "arsh"})


def _alu(chk: Checker, pc, form, insn):
    op, is64 = form.op, form.width == 64
    dst = insn.dst
    if op != "mov" and dst < 10:
        # the common case first, with the checks below folded in: scalar op= scalar between
        # initialised registers (nothing to refuse before adjust_reg)
        regs = chk.state.cur.regs
        d = regs[dst]
        if d.type == SCALAR_VALUE:
            if form.source == "X":
                if insn.src < 11:
                    src = regs[insn.src]
                    if src.type == SCALAR_VALUE:
                        regs[dst] = mem.adjust_reg(chk, op, d, src, is64, insn, True)
                        return pc + 1
            elif op not in _K_CHECKED:
                src = _imm_reg(insn.imm & M64 if is64 else insn.imm & 0xFFFFFFFF)
                regs[dst] = mem.adjust_reg(chk, op, d, src, is64, insn, False)
                return pc + 1
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
            # the same constant (and origin) every time this instruction runs: one Reg
            r = chk.const_at.get(pc)
            if r is None:
                v = insn.imm & M64 if is64 else insn.imm & 0xFFFFFFFF
                r = chk.const_at[pc] = Reg.scalar(v, chk.origin("a constant"))
            chk.state.cur.regs[dst] = r
        elif is64:
            if src.type == SCALAR_VALUE:
                linked = mem.scalar_id_before_mov(chk, src)
                if linked is not src:
                    src = linked
                    chk.set_reg(insn.src, src)
            chk.set_reg(dst, src)
        elif src.type == SCALAR_VALUE:
            sid = 0
            if src.var.umax <= 0xFFFFFFFF:
                # get_reg_width(src) <= 32: the copy is linked with its source
                linked = mem.scalar_id_before_mov(chk, src)
                if linked is not src:
                    src = linked
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
        src = _imm_reg(insn.imm & M64 if is64 else insn.imm & 0xFFFFFFFF)
    chk.state.cur.regs[dst] = mem.adjust_reg(chk, op, d, src, is64, insn, form.source == "X")
    return pc + 1


_IMM_REGS: dict = {}


def _imm_reg(v: int) -> Reg:
    """The K-form source operand: one (immutable) Reg per value."""
    r = _IMM_REGS.get(v)
    if r is None:
        if len(_IMM_REGS) >= 4096:
            _IMM_REGS.clear()
        r = _IMM_REGS[v] = Reg.scalar(v)
    return r


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


# save_aux_ptr_type: the kernel rewrites an access through these per instruction (ctx fields,
# sockets, BTF objects, arena addresses), so one instruction may not reach them on one path and
# another pointer type on another (reg_type_mismatch_ok)
_REWRITTEN = frozenset({RegType.PTR_TO_CTX, RegType.PTR_TO_SOCKET, RegType.PTR_TO_SOCK_COMMON,
                        RegType.PTR_TO_TCP_SOCK, RegType.PTR_TO_XDP_SOCK, RegType.PTR_TO_BTF_ID,
                        RegType.PTR_TO_ARENA})
_MEM_OR_BTF = (RegType.PTR_TO_MEM, RegType.PTR_TO_BTF_ID)


def _save_aux_ptr_type(chk: Checker, pc: int, rtype, rflags: int, allow_trust: bool) -> None:
    prev = chk.aux_ptr_type.get(pc)
    now = (rtype, rflags)
    if prev is None:
        chk.aux_ptr_type[pc] = chk.shared_facts.setdefault(("aux", now), now)
    elif now != prev and (rtype in _REWRITTEN or prev[0] in _REWRITTEN):
        if allow_trust and rtype in _MEM_OR_BTF and prev[0] in _MEM_OR_BTF:
            chk.aux_ptr_type[pc] = (RegType.PTR_TO_BTF_ID, PTR_UNTRUSTED)
        else:
            chk.error("same insn cannot be used with different pointers", errno.EINVAL)


def _ldx(chk: Checker, pc, form, insn):
    src = chk.check_reg_read(insn.src)
    rtype, rflags = src.type, src.flags
    chk.check_reg_write(insn.dst)
    mem.check_mem_access(chk, insn.src, insn.off, form.size, write=False,
                         value_regno=insn.dst, signed=form.signed)
    _save_aux_ptr_type(chk, pc, rtype, rflags, True)
    return pc + 1


def _st(chk: Checker, pc, form, insn):
    dst = chk.check_reg_read(insn.dst)
    rtype, rflags = dst.type, dst.flags
    mem.check_mem_access(chk, insn.dst, insn.off, form.size, write=True, value_regno=-1,
                         imm=insn.imm)
    _save_aux_ptr_type(chk, pc, rtype, rflags, False)
    return pc + 1


def _stx(chk: Checker, pc, form, insn):
    chk.check_reg_read(insn.src)
    dst = chk.check_reg_read(insn.dst)
    rtype, rflags = dst.type, dst.flags
    mem.check_mem_access(chk, insn.dst, insn.off, form.size, write=True,
                         value_regno=insn.src)
    _save_aux_ptr_type(chk, pc, rtype, rflags, False)
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
    # one MapInfo per map for the whole verification: states compare map pointers by
    # identity (regsafe), so two loads of the same map must give the same object
    ck = (by_index, insn.imm)
    m = chk.map_cache.get(ck)
    if m is None:
        m = chk.env.map_by_index(insn.imm) if by_index else chk.env.map_by_fd(insn.imm)
        if m is not None:
            chk.map_cache[ck] = m
    if m is None:
        from .calls import missing_map
        note, msg, err = missing_map(by_index, insn.imm)
        if note:
            chk.log.line(note)
        chk.error(msg, err)
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
        chk.popped = True               # do_print_state: the caller's state prints next
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
