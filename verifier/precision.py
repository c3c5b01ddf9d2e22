"""Precision tracking: which scalars' values matter, found by walking the path backwards.

The kernel's design (kernel/bpf/verifier.c: mark_chain_precision, backtrack_insn, the bt_*
helpers, propagate_precision, mark_all_scalars_precise). A scalar is *imprecise* in a stored
state (a checkpoint) until some instruction after that checkpoint uses its value where it
matters: as an offset added to a pointer, a helper's size, a conditional jump the bounds decide,
a return value with a range... Such a use calls :func:`mark_chain_precision`, which walks the
current path backwards instruction by instruction (:func:`backtrack_insn`: ``r1 = r2`` moves
the need from r1 to r2, ``r1 += r3`` adds r3, a fill from the stack moves it to the slot, a
constant ends it) and marks the registers and slots still needed precise in every checkpoint
it crosses. At pruning (:func:`verifier.state.states_equal`) an imprecise scalar of the old
state matches any scalar, which is what lets loops with counters that nobody reads converge.

The path is retraced from each state's *jump history* (``VerifierState.hist``): a linked list
(newest first) of ``(idx, prev_idx, stack, linked, next)`` entries recorded for every
instruction not reached by falling through (``prev_idx`` is where it came from), for every
stack spill/fill (``stack`` = (frameno, spi) of the slot) and for conditional jumps that
refined registers linked by id (``linked`` = those registers and slots, which share the need
for precision). A checkpoint keeps the history from its ``first_insn_idx`` to its
``last_insn_idx``; the state going on after it starts a fresh one.

Whenever the walk meets something it cannot follow (an access through a pointer it cannot
trace, a leftover need at the program's start), every scalar of every checkpoint on the path
is marked precise (the kernel's mark_all_scalars_precise): less pruning, never a wrong one.
With ``log_level`` 2 the walk prints the kernel's ``mark_precise: frame0: ...`` lines.
"""
from __future__ import annotations

from pybpf.disasm import format_insn

from .state import SCALAR_VALUE, STACK_SPILL, Slot

ENOTSUPP = object()            # backtrack_insn cannot follow: fall back to "all precise"
ARGS_MASK = 0b111110           # r1-r5


class Backtrack:
    """struct backtrack_state: the registers and stack slots still needing precision, per
    frame; ``frame`` is the frame the walk is in."""

    __slots__ = ("frame", "regs", "stack")

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.regs = [0] * 9
        self.stack = [0] * 9

    def empty(self) -> bool:
        return not any(self.regs) and not any(self.stack)

    def set_reg(self, r: int, fr: int | None = None) -> None:
        self.regs[self.frame if fr is None else fr] |= 1 << r

    def clear_reg(self, r: int, fr: int | None = None) -> None:
        self.regs[self.frame if fr is None else fr] &= ~(1 << r)

    def is_reg(self, r: int, fr: int | None = None) -> bool:
        return bool(self.regs[self.frame if fr is None else fr] >> r & 1)

    def set_slot(self, fr: int, spi: int) -> None:
        self.stack[fr] |= 1 << spi

    def clear_slot(self, fr: int, spi: int) -> None:
        self.stack[fr] &= ~(1 << spi)

    def is_slot(self, fr: int, spi: int) -> bool:
        return bool(self.stack[fr] >> spi & 1)


# --- the jump history --------------------------------------------------------------------------
def push_hist(st, idx: int, prev: int, tag: int, stack=None, linked=None) -> None:
    """push_jmp_history: record ``idx`` (reached from ``prev``) with its flags. A second
    record while the same instruction is being processed (``tag``: the checker's processed
    count, the kernel's cur_hist_ent) merges into the first; a later visit of the same
    instruction (a loop) is an entry of its own, or backtracking would skip iterations."""
    h = st.hist
    if h is not None and st.hist_tag == tag and h[0] == idx:
        st.hist = (idx, h[1], stack or h[2], linked or h[3], h[4])
    else:
        st.hist = (idx, prev, stack, linked, h)
        st.hist_cnt += 1
        st.hist_tag = tag


def push_flags(chk, stack=None, linked=None) -> None:
    """Record a stack spill/fill (``stack`` = (frameno, spi)) or the registers a conditional
    jump refined together (``linked``) for the instruction being checked."""
    st = chk.state
    push_hist(st, chk.pc, st.last_insn_idx, chk.insn_processed, stack, linked)


def _mask_str(mask: int, fmt: str) -> str:
    out, i = [], 0
    while mask:
        if mask & 1:
            out.append(fmt(i))
        mask >>= 1
        i += 1
    return ",".join(out)


def _regs_str(mask: int) -> str:
    return _mask_str(mask, lambda i: f"r{i}")


def _stack_str(mask: int) -> str:
    return _mask_str(mask, lambda i: f"-{(i + 1) * 8}")


# --- one instruction backwards -----------------------------------------------------------------
def _sync_linked(bt: Backtrack, hist) -> None:
    """bt_sync_linked_regs: registers refined together at a conditional jump need precision
    together."""
    if hist is None or not hist[3]:
        return
    linked = hist[3]
    if not any(bt.is_reg(n, fr) if is_reg else bt.is_slot(fr, n) for fr, is_reg, n in linked):
        return
    for fr, is_reg, n in linked:
        if is_reg:
            bt.set_reg(n, fr)
        else:
            bt.set_slot(fr, n)


def backtrack_insn(chk, idx: int, subseq: int, hist, bt: Backtrack):
    """backtrack_insn: turn "needed after ``idx``" into "needed before ``idx``"; ENOTSUPP
    when the instruction cannot be followed."""
    entry = chk.form_at.get(idx)
    if entry is None:              # the second half of an ld_imm64
        return None
    form, insn = entry
    if chk.log.level >= 2:
        chk.log.line(f"mark_precise: frame{bt.frame}: regs={_regs_str(bt.regs[bt.frame])} "
                     f"stack={_stack_str(bt.stack[bt.frame])} before {idx}: "
                     f"({insn.opcode:02x}) {format_insn(chk.prog, idx, 'kernel')}")
    _sync_linked(bt, hist)
    k = form.kind
    dreg, sreg = insn.dst, insn.src
    if k in ("alu", "neg", "end", "movsx", "cast"):
        if not bt.is_reg(dreg):
            return None
        if k in ("neg", "end"):
            pass
        elif k in ("movsx", "cast") or form.op == "mov":
            bt.clear_reg(dreg)
            if (k != "alu" or form.source == "X") and sreg != 10:
                bt.set_reg(sreg)
        elif form.source == "X" and sreg != 10:
            bt.set_reg(sreg)
    elif k == "ldx" or (k == "atomic" and form.op == "load_acq"):
        if not bt.is_reg(dreg):
            return None
        bt.clear_reg(dreg)
        if hist is not None and hist[2] is not None:
            fr, spi = hist[2]
            bt.set_slot(fr, spi)
    elif k in ("st", "stx", "atomic"):
        if bt.is_reg(dreg):
            return ENOTSUPP        # a scalar used as the address: pointer subtraction
        load_reg = -1
        if k == "atomic" and form.op != "store_rel" and \
                (form.op.startswith("fetch_") or form.op in ("xchg", "cmpxchg")):
            load_reg = 0 if form.op == "cmpxchg" else sreg
        stack = hist[2] if hist is not None else None
        if load_reg >= 0 and bt.is_reg(load_reg):
            # the fetched old value: from the slot when it was a spilled scalar (pybpf follows
            # the fill; the kernel leaves the register set, which only marks more)
            bt.clear_reg(load_reg)
            if stack is None:
                return None
            bt.set_slot(*stack)
        if stack is None:
            return None
        fr, spi = stack
        if not bt.is_slot(fr, spi):
            return None
        bt.clear_slot(fr, spi)
        if k != "st":
            bt.set_reg(sreg)
    elif k == "call":
        return _backtrack_call(chk, idx, subseq, form, insn, bt)
    elif k == "callx":
        return ENOTSUPP
    elif k == "exit":
        calls = chk.calls
        if subseq >= 0 and calls is not None and calls.calls_callback(chk, subseq):
            bt.regs[bt.frame] &= ~ARGS_MASK
        if bt.regs[bt.frame] & ARGS_MASK:
            return ENOTSUPP
        prev = chk.form_at.get(subseq - 1) if subseq >= 1 else None
        r0 = prev is not None and prev[0].kind == "call" and prev[0].op == "local" and \
            bt.is_reg(0)
        bt.clear_reg(0)
        if bt.frame + 1 >= len(bt.regs):
            return ENOTSUPP
        bt.frame += 1
        if r0:
            bt.set_reg(0)
    elif k == "jcond":
        if form.source == "X":
            if not bt.is_reg(dreg) and not bt.is_reg(sreg):
                return None
            bt.set_reg(sreg)
            bt.set_reg(dreg)
    elif k == "lddw":
        if not bt.is_reg(dreg):
            return None
        bt.clear_reg(dreg)
    elif k == "ldabs":
        if bt.is_reg(0):
            return ENOTSUPP
    # ja, may_goto: nothing changes
    _sync_linked(bt, hist)
    return None


def _backtrack_call(chk, idx: int, subseq: int, form, insn, bt: Backtrack):
    calls = chk.calls
    if form.op == "local":
        start = idx + 1 + insn.imm
        if calls is not None and calls.is_global(chk, start):
            if bt.regs[bt.frame] & ARGS_MASK:
                return ENOTSUPP
            bt.clear_reg(0)
            return None
        # leaving the callee backwards: only its arguments may still be needed, in the caller
        if bt.regs[bt.frame] & ~ARGS_MASK or bt.stack[bt.frame] or bt.frame == 0:
            return ENOTSUPP
        args = bt.regs[bt.frame]
        bt.regs[bt.frame] = 0
        bt.frame -= 1
        bt.regs[bt.frame] |= args
        return None
    if calls is not None and calls.calls_callback(chk, idx) and idx != subseq - 1:
        # from the callback's first instruction back to the helper that called it: r1-r5 were
        # set by the helper, not passed by the program
        if bt.regs[bt.frame] & ~ARGS_MASK or bt.stack[bt.frame] or bt.frame == 0:
            return ENOTSUPP
        bt.regs[bt.frame] = 0
        bt.frame -= 1
        return None
    if form.op == "kfunc" and insn.imm == 0:
        return ENOTSUPP             # a kfunc call without an id (refused later): conservative
    bt.clear_reg(0)                 # a helper or kfunc sets r0
    if bt.regs[bt.frame] & ARGS_MASK:
        return ENOTSUPP             # the arguments should have been found after the call
    return None


def _quiet(chk) -> dict:
    """pc -> the register an instruction writes, for the instructions whose backtracking does
    nothing unless that register is needed (ALU, loads, ld_imm64), or -1 for those that never
    do anything without a history entry (jumps on an immediate, ja, may_goto): the walk skips
    them without the full backtrack_insn."""
    q = getattr(chk, "_bt_quiet", None)
    if q is None:
        q = {}
        for pc, (form, insn) in chk.form_at.items():
            k = form.kind
            if k in ("alu", "neg", "end", "movsx", "cast", "ldx", "lddw") or \
                    (k == "atomic" and form.op == "load_acq"):
                q[pc] = insn.dst
            elif k in ("ja", "may_goto") or (k == "jcond" and form.source != "X"):
                q[pc] = -1
        chk._bt_quiet = q
    return q


# --- the walk over the path --------------------------------------------------------------------
def mark_chain_precision(chk, regno: int) -> None:
    """mark_chain_precision: register ``regno`` of the current frame is used where its value
    matters."""
    st = chk.state
    if regno < 0 or st.cur.regs[regno].type != SCALAR_VALUE:
        return
    bt = Backtrack(st.curframe)
    bt.set_reg(regno)
    _walk(chk, st, chk.pc, bt)


def mark_slot_precise(chk, frameno: int, spi: int) -> None:
    """mark_chain_precision_batch for one stack slot (a constant map key on the stack)."""
    st = chk.state
    bt = Backtrack(st.curframe)
    bt.set_slot(frameno, spi)
    _walk(chk, st, chk.pc, bt)


def propagate_precision(chk, old, live: int, cur=None, pc: int | None = None) -> bool:
    """propagate_precision: the current state (or ``cur`` at ``pc``) was pruned against
    ``old``; what mattered after ``old`` matters after it too. True if a mark was added."""
    if cur is None:
        cur, pc = chk.state, chk.pc
    bt = Backtrack(cur.curframe)
    log2 = chk.log.level >= 2
    last = len(old.frames) - 1
    for fr in range(last, -1, -1):
        f = old.frames[fr]
        names = []
        for i in range(10):
            r = f.regs[i]
            if r.type != SCALAR_VALUE or not r.precise:
                continue
            if fr == last and not live >> i & 1:
                continue            # dead in the old state: the kernel cleaned it
            bt.set_reg(i, fr)
            names.append(f"r{i}")
        for spi in sorted(f.stack):
            sp = f.stack[spi].spilled
            if sp is None or STACK_SPILL not in f.stack[spi].types or \
                    getattr(sp, "type", None) != SCALAR_VALUE or not sp.precise:
                continue
            bt.set_slot(fr, spi)
            names.append(f"fp{-(spi + 1) * 8}")
        if names and log2:
            chk.log.line(f"frame {fr}: propagating {','.join(names)}")
    if bt.empty():
        return False
    return _walk(chk, cur, pc, bt)


def _walk(chk, start, pc: int, bt: Backtrack) -> bool:
    """__mark_chain_precision from ``start`` (a current state at ``pc``) up its parents;
    True if some checkpoint got a new mark."""
    log2 = chk.log.level >= 2
    if log2:
        chk.log.flush_pending()
    changed = False
    quiet = _quiet(chk)
    st = start
    first, last, subseq = st.first_insn_idx, pc, -1
    node = st.hist
    skip_first = True
    while True:
        if log2:
            chk.log.line(f"mark_precise: frame{bt.frame}: last_idx {last} first_idx {first} "
                         f"subseq_idx {subseq} ")
        i = last
        while i >= 0:
            if skip_first:
                skip_first = False
            else:
                h = node if node is not None and node[0] == i else None
                d = quiet.get(i) if h is None and not log2 else None
                if d is not None and (d < 0 or not bt.regs[bt.frame] >> d & 1):
                    pass            # writes no register the walk needs: nothing to do
                else:
                    if backtrack_insn(chk, i, subseq, h, bt) is ENOTSUPP:
                        return mark_all_scalars_precise(chk, start) or changed
                    if bt.empty():
                        return changed
            subseq = i
            # get_prev_insn_idx, inline: stop at the state's first instruction
            if i == first and (node is None or (node[0] == i and node[4] is None)):
                break
            if node is not None and node[0] == i:
                i, node = node[1], node[4]
            else:
                i -= 1
        cp = st.parent
        if cp is None:
            break
        st = cp.state
        if bt.frame >= len(st.frames):
            return mark_all_scalars_precise(chk, start) or changed
        for fr in range(bt.frame, -1, -1):
            changed |= _mark_in(st.frames[fr], bt, fr)
            if log2:
                chk.log.line(f"mark_precise: frame{fr}: parent state regs="
                             f"{_regs_str(bt.regs[fr])} stack={_stack_str(bt.stack[fr])}: "
                             f"{_frame_str(st, fr)}")
        if bt.empty():
            return changed
        subseq = first
        last, first = st.last_insn_idx, st.first_insn_idx
        node = st.hist
        st = _Chain(st, cp)
    if not bt.empty() and not _initial_scalars_only(chk, bt):
        changed |= mark_all_scalars_precise(chk, start)
    return changed


class _Chain:
    """A checkpoint's state seen with its Checkpoint's parent link (snapshots keep none)."""

    __slots__ = ("state", "parent")

    def __init__(self, state, cp) -> None:
        self.state, self.parent = state, cp.parent

    def __getattr__(self, name):
        return getattr(self.state, name)


def _frame_str(st, fr: int) -> str:
    """print_verifier_state of one frame, precise scalars prefixed with ``P`` as the kernel
    prints them (each entry after a space)."""
    from .log import reg_str
    f = st.frames[fr]
    out = []
    for i, r in enumerate(f.regs):
        if r.type == 0:
            continue
        p = "P" if r.type == SCALAR_VALUE and r.precise else ""
        out.append(f" R{i}={p}{reg_str(r, f.frameno)}")
    for spi in sorted(f.stack):
        slot = f.stack[spi]
        if slot.types == "?" * 8:
            continue
        sp = slot.spilled
        if sp is not None and slot.types[7] == STACK_SPILL and hasattr(sp, "precise"):
            p = "P" if sp.type == SCALAR_VALUE and sp.precise else ""
            out.append(f" fp{-(spi + 1) * 8}={p}{reg_str(sp, f.frameno)}")
        elif hasattr(sp, "describe"):
            out.append(f" fp{-(spi + 1) * 8}={sp.describe()}")
        else:
            out.append(f" fp{-(spi + 1) * 8}={slot.types}")
    return "".join(out)


def _mark_in(f, bt: Backtrack, fr: int) -> bool:
    """Mark the needed registers and slots of frame ``fr`` of a checkpoint precise; those
    already precise (or not scalars) need nothing more from its parents."""
    changed = False
    mask = bt.regs[fr]
    i = 0
    while mask >> i:
        if mask >> i & 1:
            r = f.regs[i]
            if r.type != SCALAR_VALUE or r.precise:
                bt.clear_reg(i, fr)
            else:
                f.regs[i] = r.replace(precise=True)
                changed = True
        i += 1
    mask = bt.stack[fr]
    spi = 0
    while mask >> spi:
        if mask >> spi & 1:
            slot = f.stack.get(spi)
            sp = slot.spilled if slot is not None else None
            if sp is None or STACK_SPILL not in slot.types or \
                    getattr(sp, "type", None) != SCALAR_VALUE or sp.precise:
                bt.clear_slot(fr, spi)
            else:
                f.stack[spi] = Slot(slot.types, sp.replace(precise=True))
                changed = True
        spi += 1
    return changed


def _initial_scalars_only(chk, bt: Backtrack) -> bool:
    """The walk reached the program's start needing only registers the program starts with
    as scalars (r2, the length, of pybpf's ``mem`` type): nothing earlier to mark."""
    if any(bt.stack) or any(bt.regs[1:]):
        return False
    return chk.prog_type == "mem" and chk.global_entry is None and not bt.regs[0] & ~0b100


def mark_all_scalars_precise(chk, start) -> bool:
    """mark_all_scalars_precise: every scalar of every checkpoint above ``start`` becomes
    precise."""
    if chk.log.level >= 2:
        chk.log.line("mark_precise: frame{}: falling back to forcing all scalars precise"
                     .format(start.curframe))
    changed = False
    cp = start.parent
    while cp is not None:
        changed |= _all_precise(cp.state)
        cp = cp.parent
    return changed


def _all_precise(st) -> bool:
    changed = False
    for f in st.frames:
        for i, r in enumerate(f.regs):
            if r.type == SCALAR_VALUE and not r.precise:
                f.regs[i] = r.replace(precise=True)
                changed = True
        for spi, slot in list(f.stack.items()):
            sp = slot.spilled
            if sp is not None and getattr(sp, "type", None) == SCALAR_VALUE and \
                    not sp.precise:
                f.stack[spi] = Slot(slot.types, sp.replace(precise=True))
                changed = True
    return changed
