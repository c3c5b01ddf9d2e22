"""Open-coded iterators in the verifier (kernel/bpf/verifier.c: process_iter_arg,
mark_stack_slots_iter, process_iter_next_call, and is_state_visited's iterator rule).

An iterator (``struct bpf_iter_<type>``, ``iter_size`` bytes) lives in the program's stack:
``bpf_iter_<type>_new`` takes uninitialised slots and turns them into STACK_ITER slots (``i``),
acquiring a reference (so an exit with a live iterator is ``Unreleased reference``); the first
slot's spilled register (:class:`IterReg`, the kernel's ``spilled_ptr.iter``) records the type,
the state (active or drained), the depth (iterations unrolled, for the infinite-loop check) and
the reference id. ``_next`` and ``_destroy`` want an initialised iterator of the same type
(``expected an initialized iter_num as arg #0``); ``_destroy`` releases the reference and the
slots become STACK_INVALID. A store over an iterator's bytes destroys it (the slot types change,
:mod:`.mem`), so a later use is refused the same way; a program read of its bytes is refused
(``invalid read from stack``).

``_next`` forks the path as the kernel does: the current path goes on with the iterator drained
and r0 = NULL; a queued path has it active one level deeper and r0 a non-NULL pointer (``int *``
for iter_num: read-only memory of 4 bytes tied to the iterator's reference), its imprecise
scalars widened against the previous visit of the same call (widen_imprecise_scalars). The call
instruction is a forced checkpoint (:func:`loop_points`) and a new visit there whose state is
within a still-explored one with the iterator active is pruned (:func:`prune_at_next`): that is
how loops over iterators converge without unrolling all iterations.
"""
from __future__ import annotations

import errno

from . import protos
from .dynptr import stack_slot_obj_spi
from .state import (BPF_REG_SIZE, MEM_RDONLY, PTR_MAYBE_NULL, PTR_TO_MEM, PTR_TO_STACK,
                    STACK_ITER, Reg, Slot)

ITER_ACTIVE, ITER_DRAINED = "active", "drained"


class IterReg(Reg):
    """The spilled_ptr of an iterator's first stack slot (type PTR_TO_STACK, as the kernel's
    ``we don't have dedicated reg type``): ``iter_type`` ("num"), ``iter_state``, ``iter_depth``
    and the reference in ``ref_obj_id``."""

    __slots__ = ("iter_type", "iter_state", "iter_depth")

    def __init__(self, iter_type: str, ref_obj_id: int, state: str = ITER_ACTIVE,
                 depth: int = 0, origin=None) -> None:
        super().__init__(PTR_TO_STACK, ref_obj_id=ref_obj_id, origin=origin)
        self.iter_type, self.iter_state, self.iter_depth = iter_type, state, depth

    def replace(self, **kw) -> "IterReg":
        r = IterReg(self.iter_type, kw.get("ref_obj_id", self.ref_obj_id),
                    kw.get("iter_state", self.iter_state), kw.get("iter_depth", self.iter_depth),
                    self.origin)
        return r

    def describe(self) -> str:
        """As print_verifier_state prints the slot: ``iter_num(ref_id=1,state=active,depth=0)``."""
        return (f"iter_{self.iter_type}(ref_id={self.ref_obj_id},state={self.iter_state},"
                f"depth={self.iter_depth})")

    def __repr__(self) -> str:
        return self.describe()


def is_iter_slot(slot: Slot) -> bool:
    return STACK_ITER in slot.types


def iters_equal(old: Slot, cur: Slot, check_ids) -> bool:
    """stacksafe's STACK_ITER case: same type and state, the same reference (through the id
    map); the depth is not compared (it would keep loops from converging)."""
    o, c = old.spilled, cur.spilled
    if not isinstance(o, IterReg) or not isinstance(c, IterReg):
        return isinstance(o, IterReg) == isinstance(c, IterReg) and old.types == cur.types
    return (o.iter_type == c.iter_type and o.iter_state == c.iter_state
            and check_ids(o.ref_obj_id, c.ref_obj_id))


def _spi(chk, reg: Reg, nr_slots: int):
    """iter_get_spi."""
    return stack_slot_obj_spi(chk, reg, "iter", nr_slots)


def process_iter_arg(chk, regno: int, proto: protos.Prototype, pc: int, meta: dict) -> None:
    """process_iter_arg: argument ``regno`` of an iterator kfunc (r1 by convention)."""
    reg = chk.reg(regno)
    arg = regno - 1
    if reg.type != PTR_TO_STACK:
        chk.error(f"arg#{arg} expected pointer to an iterator on stack", errno.EINVAL)
    nr_slots = proto.iter_size // BPF_REG_SIZE
    name = f"iter_{proto.iter_type}"
    frame = chk.state.frames[reg.frameno]
    flags = proto.kfunc_flags
    if protos.KF_ITER_NEW in flags:
        spi = _spi(chk, reg, nr_slots)
        ok = spi == -errno.ERANGE or (spi >= 0 and not any(
            STACK_ITER in frame.stack.get(spi - i, Slot()).types for i in range(nr_slots)))
        if not ok:
            chk.error(f"expected uninitialized {name} as arg #{arg}", errno.EINVAL)
        for i in range(0, nr_slots * BPF_REG_SIZE, BPF_REG_SIZE):
            # check_mem_access(BPF_DW, BPF_WRITE) of each slot: bounds, stack growth
            chk.mem.check_mem_access(chk, regno, i, BPF_REG_SIZE, write=True, value_regno=-1)
        spi = _spi(chk, reg, nr_slots)
        ref = chk.calls.acquire_reference(chk, pc)
        for i in range(nr_slots):
            spilled = IterReg(proto.iter_type, ref, origin=chk.origin(proto.name)) if i == 0 \
                else None
            frame.stack[spi - i] = Slot(STACK_ITER * BPF_REG_SIZE, spilled)
        return
    spi = _spi(chk, reg, nr_slots)
    if spi < 0 or not _valid_init(frame, spi, nr_slots, proto.iter_type):
        chk.error(f"expected an initialized {name} as arg #{arg}", errno.EINVAL)
    it = frame.stack[spi].spilled
    meta["iter_frame"], meta["iter_spi"] = reg.frameno, spi
    meta["ref_obj_id"] = it.ref_obj_id
    if protos.KF_ITER_DESTROY in flags:
        for i in range(nr_slots):       # unmark_stack_slots_iter
            frame.stack.pop(spi - i, None)
        chk.calls.release_reference(chk, it.ref_obj_id)


def _valid_init(frame, spi: int, nr_slots: int, iter_type: str) -> bool:
    """is_iter_reg_valid_init: every slot STACK_ITER of this type, the reference on the first."""
    for i in range(nr_slots):
        slot = frame.stack.get(spi - i)
        if slot is None or slot.types != STACK_ITER * BPF_REG_SIZE:
            return False
        st = slot.spilled
        if i == 0 and not (isinstance(st, IterReg) and st.ref_obj_id and
                           st.iter_type == iter_type):
            return False
        if i != 0 and st is not None and st.ref_obj_id:
            return False
    return True


def set_next_return(chk, proto: protos.Prototype, meta: dict) -> None:
    """r0 of ``bpf_iter_<type>_next``: read-only memory of the element's size or NULL, a fresh
    id, tied to the iterator's reference (so destroy invalidates it)."""
    chk.set_reg(0, Reg.pointer(PTR_TO_MEM, MEM_RDONLY | PTR_MAYBE_NULL, mem_size=proto.ret_size,
                               id=chk.new_id(), ref_obj_id=meta.get("ref_obj_id", 0),
                               origin=chk.origin(proto.name)))


def process_iter_next_call(chk, pc: int, meta: dict) -> None:
    """process_iter_next_call: queue the active path (depth + 1, r0 not NULL, scalars widened
    against the previous visit), go on with the drained one (r0 = 0)."""
    st = chk.state
    frame = st.frames[meta["iter_frame"]]
    spi = meta["iter_spi"]
    it = frame.stack[spi].spilled
    if it.iter_state not in (ITER_ACTIVE, ITER_DRAINED):
        chk.error(f"verifier internal error: unexpected iterator state {it.iter_state}",
                  errno.EFAULT)
    if it.iter_state == ITER_ACTIVE:
        queued = st.copy()
        queued.insn_idx = pc
        qframe = queued.frames[meta["iter_frame"]]
        qslot = qframe.stack[spi]
        qframe.stack[spi] = Slot(qslot.types, it.replace(iter_state=ITER_ACTIVE,
                                                         iter_depth=it.iter_depth + 1))
        prev = _prev_entry(st, pc)
        if prev is not None and len(prev.frames) == len(queued.frames):
            from .check import _widen
            _widen(prev, queued)
        r0 = queued.cur.regs[0]
        queued.cur.regs[0] = r0.replace(flags=r0.flags & ~PTR_MAYBE_NULL)
        chk.push_branch(queued, pc + 1)
    frame.stack[spi] = Slot(frame.stack[spi].types, it.replace(iter_state=ITER_DRAINED))
    chk.set_reg(0, Reg.scalar(0, chk.origin("a drained iterator's NULL")))


def _prev_entry(st, pc: int):
    """find_prev_entry: the state of an earlier visit of ``pc`` on this path (skipping the
    checkpoint just made for this visit)."""
    cp = st.parent
    if cp is not None and cp.pc == pc:
        cp = cp.parent
    while cp is not None and cp.pc != pc:
        cp = cp.parent
    return cp.state if cp is not None else None


def iter_active(state, regs1: Reg) -> bool:
    """Whether the iterator r1 points to (at an iter_next call) is active in ``state``."""
    if regs1.type != PTR_TO_STACK or not regs1.var.is_const():
        return False
    off = regs1.off + regs1.var.const_value()
    spi = (-off - 1) // BPF_REG_SIZE
    if not 0 <= regs1.frameno < len(state.frames):
        return False
    slot = state.frames[regs1.frameno].stack.get(spi)
    return slot is not None and isinstance(slot.spilled, IterReg) and \
        slot.spilled.iter_state == ITER_ACTIVE


def active_depths(state) -> tuple:
    """The depths of a state's active iterators (iter_active_depths_differ compares them: a
    state in a deeper iteration is no infinite loop)."""
    out = []
    for f in state.frames:
        for spi in sorted(f.stack):
            sp = f.stack[spi].spilled
            if isinstance(sp, IterReg) and sp.iter_state == ITER_ACTIVE:
                out.append(sp.iter_depth)
    return tuple(out)


def iter_next_pcs(prog, env) -> set:
    """The pcs of calls to an ``_next`` iterator kfunc (forced checkpoints)."""
    out = set()
    for pc, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "kfunc":
            k = env.kfunc(insn.imm)
            proto = getattr(k, "prototype", k)
            if proto is not None and protos.KF_ITER_NEXT in proto.kfunc_flags:
                out.add(pc)
    return out

