"""Dynamic pointers in the verifier (kernel/bpf/verifier.c: process_dynptr_func,
mark_stack_slots_dynptr, destroy_if_dynptr_stack_slot, the dynptr slices).

A ``struct bpf_dynptr`` takes two stack slots (16 bytes) of STACK_DYNPTR (``d``); the first
(higher) slot's spilled register (:class:`DynptrReg`) records the dynptr's type (local, skb,
xdp), its id (slices carry it as ``dynptr_id``) and, for refcounted types, its reference. A
constructor (``bpf_dynptr_from_mem``, ``bpf_dynptr_from_skb``, ``bpf_dynptr_from_xdp``,
``bpf_dynptr_from_skb_meta``) takes
the slots uninitialised or holding an unreferenced dynptr (destroyed first); every other use
wants an initialised one (``Expected an initialized dynptr as arg #N``) of the right type. A
store into either slot destroys the whole dynptr (:func:`destroy_if_dynptr_stack_slot`, called
by :mod:`.mem`) and invalidates the data slices taken from it, as the kernel does; the program
may not read its bytes.

Slices: ``bpf_dynptr_data`` (helper 203) and the ``bpf_dynptr_slice``/``_rdwr`` kfuncs return
PTR_TO_MEM (or NULL) of a constant size tied to the dynptr by ``dynptr_id``; packet slices also
carry DYNPTR_TYPE_SKB/XDP/SKB_META, so a helper that changes packet data invalidates them like
packet pointers (``bpf_dynptr_write`` into an skb or skb metadata dynptr does too). ``bpf_dynptr_slice`` memory is read-only; the running 6.18 kernel refuses every
``bpf_dynptr_slice_rdwr`` call after its arguments (``bpf_dynptr_slice_rdwr() is not allowed``,
EPERM, on xdp and sched_cls too), and so does pybpf (:mod:`.calls`).
"""
from __future__ import annotations

import errno

from .state import (BPF_REG_SIZE, CONST_PTR_TO_DYNPTR, MEM_RDONLY, PTR_MAYBE_NULL, PTR_TO_MEM,
                    PTR_TO_STACK, STACK_DYNPTR, STACK_INVALID, Reg, Slot)

NR_SLOTS = 2
LOCAL, RINGBUF, SKB, XDP, SKB_META = "local", "ringbuf", "skb", "xdp", "skb_meta"
REFCOUNTED = (RINGBUF,)         # dynptr_type_refcounted
# flags marking packet slices (the kernel's DYNPTR_TYPE_SKB / _XDP / _SKB_META on PTR_TO_MEM;
# only read on PTR_TO_MEM registers, so bit 11 is shared with NON_OWN_REF's BTF-id registers)
DYNPTR_TYPE_SKB, DYNPTR_TYPE_XDP, DYNPTR_TYPE_SKB_META = 1 << 11, 1 << 12, 1 << 13
SLICE_FLAGS = {SKB: DYNPTR_TYPE_SKB, XDP: DYNPTR_TYPE_XDP, SKB_META: DYNPTR_TYPE_SKB_META}
PKT_SLICE = DYNPTR_TYPE_SKB | DYNPTR_TYPE_XDP | DYNPTR_TYPE_SKB_META    # reg_is_dynptr_slice_pkt


class DynptrReg(Reg):
    """The spilled_ptr of a dynptr's first stack slot: ``dynptr_type``, ``id`` (its slices'
    ``dynptr_id``) and ``ref_obj_id`` (0: not refcounted)."""

    __slots__ = ("dynptr_type",)

    def __init__(self, dynptr_type: str, id: int, ref_obj_id: int = 0, origin=None) -> None:
        super().__init__(PTR_TO_STACK, id=id, ref_obj_id=ref_obj_id, origin=origin)
        self.dynptr_type = dynptr_type

    def replace(self, **kw) -> "DynptrReg":
        return DynptrReg(self.dynptr_type, kw.get("id", self.id),
                         kw.get("ref_obj_id", self.ref_obj_id), self.origin)

    def describe(self) -> str:
        ref = f",ref_id={self.ref_obj_id}" if self.ref_obj_id else ""
        return f"dynptr_{self.dynptr_type}(id={self.id}{ref})"

    def __repr__(self) -> str:
        return self.describe()


def dynptrs_equal(old: Slot, cur: Slot, check_ids) -> bool:
    """stacksafe's STACK_DYNPTR case: same type and role, the same reference."""
    o, c = old.spilled, cur.spilled
    if isinstance(o, DynptrReg) != isinstance(c, DynptrReg):
        return False
    if not isinstance(o, DynptrReg):
        return True                     # both second slots
    return o.dynptr_type == c.dynptr_type and check_ids(o.ref_obj_id, c.ref_obj_id)


def stack_slot_obj_spi(chk, reg: Reg, what: str, nr_slots: int):
    """stack_slot_obj_get_spi, shared by dynptrs and iterators (``what`` names the object in
    the kernel's complaints): the first slot's index, or the complaint (logged) as an errno:
    -EINVAL for a bad offset, -ERANGE past the allocated stack."""
    if not reg.var.is_const():
        chk.log.line(f"{what} has to be at a constant offset")
        return -errno.EINVAL
    off = reg.off + reg.var.const_value()
    if off % BPF_REG_SIZE:
        chk.log.line(f"cannot pass in {what} at an offset={off}")
        return -errno.EINVAL
    spi = (-off - 1) // BPF_REG_SIZE
    if spi + 1 < nr_slots:
        chk.log.line(f"cannot pass in {what} at an offset={off}")
        return -errno.EINVAL
    frame = chk.state.frames[reg.frameno]
    if spi >= (frame.allocated_stack + BPF_REG_SIZE - 1) // BPF_REG_SIZE:
        return -errno.ERANGE
    return spi


def _spi(chk, reg: Reg):
    """dynptr_get_spi."""
    return stack_slot_obj_spi(chk, reg, "dynptr", NR_SLOTS)


def destroy_if_dynptr_stack_slot(chk, frame, spi: int) -> None:
    """A write into slot ``spi``: if it holds part of a dynptr, the whole dynptr goes (both
    slots STACK_INVALID) and so do the local data slices taken from it; a referenced dynptr
    may not be overwritten."""
    slot = frame.stack.get(spi)
    if slot is None or slot.types[0] != STACK_DYNPTR:
        return
    if not isinstance(slot.spilled, DynptrReg):
        spi += 1
        slot = frame.stack.get(spi)
        if slot is None or not isinstance(slot.spilled, DynptrReg):
            return
    d = slot.spilled
    if d.ref_obj_id:
        chk.error("cannot overwrite referenced dynptr", errno.EINVAL)
    frame.stack[spi] = Slot(STACK_INVALID * BPF_REG_SIZE)
    frame.stack[spi - 1] = Slot(STACK_INVALID * BPF_REG_SIZE)

    def invalidate(r: Reg):
        # only (PTR_TO_MEM | PTR_MAYBE_NULL) and PTR_TO_MEM exactly, as the kernel compares
        if r.type == PTR_TO_MEM and r.flags & ~PTR_MAYBE_NULL == 0 and \
                getattr(r, "dynptr_id", 0) == d.id:
            return Reg.scalar(None, r.origin)
        return None
    chk.state.map_regs(invalidate)


def valid_init(chk, reg: Reg) -> bool:
    """is_dynptr_reg_valid_init."""
    if reg.type == CONST_PTR_TO_DYNPTR:
        return True
    spi = _spi(chk, reg)
    if spi < 0:
        return False
    frame = chk.state.frames[reg.frameno]
    first, second = frame.stack.get(spi), frame.stack.get(spi - 1)
    return (first is not None and second is not None and isinstance(first.spilled, DynptrReg)
            and first.types == STACK_DYNPTR * BPF_REG_SIZE
            and second.types == STACK_DYNPTR * BPF_REG_SIZE)


def process_dynptr_func(chk, regno: int, pc: int, *, uninit: bool, rdonly: bool,
                        want_type: str | None, meta: dict, clone_ref_obj_id: int = 0) -> None:
    """process_dynptr_func for argument ``regno``; an initialised dynptr's (type, id,
    ref_obj_id) goes to ``meta['dynptr']``. A new refcounted (ringbuf) dynptr acquires a
    reference at ``pc``, or shares ``clone_ref_obj_id`` (bpf_dynptr_clone of one)."""
    reg = chk.reg(regno)
    if reg.type not in (PTR_TO_STACK, CONST_PTR_TO_DYNPTR):
        chk.error(f"arg#{regno - 1} expected pointer to stack or const struct bpf_dynptr",
                  errno.EINVAL)
    if uninit:
        spi = _spi(chk, reg) if reg.type == PTR_TO_STACK else -errno.EINVAL
        if spi < 0 and spi != -errno.ERANGE:
            chk.error("Dynptr has to be an uninitialized dynptr", errno.EINVAL)
        for i in range(0, NR_SLOTS * BPF_REG_SIZE, BPF_REG_SIZE):
            chk.mem.check_mem_access(chk, regno, i, BPF_REG_SIZE, write=True, value_regno=-1)
        spi = _spi(chk, reg)
        frame = chk.state.frames[reg.frameno]
        destroy_if_dynptr_stack_slot(chk, frame, spi)
        destroy_if_dynptr_stack_slot(chk, frame, spi - 1)
        did = chk.new_id()
        ref = 0
        if want_type in REFCOUNTED:     # mark_stack_slots_dynptr: id first, then the reference
            ref = clone_ref_obj_id
            if not ref:
                ref = chk.new_id()
                chk.state.refs[ref] = pc        # acquire_reference
        frame.stack[spi] = Slot(STACK_DYNPTR * BPF_REG_SIZE,
                                DynptrReg(want_type, did, ref,
                                          origin=chk.origin(f"{want_type} dynptr")))
        frame.stack[spi - 1] = Slot(STACK_DYNPTR * BPF_REG_SIZE, None)
        return
    if reg.type == CONST_PTR_TO_DYNPTR and not rdonly:
        chk.error("cannot pass pointer to const bpf_dynptr, the helper mutates it", errno.EINVAL)
    if not valid_init(chk, reg):
        chk.error(f"Expected an initialized dynptr as arg #{regno - 1}", errno.EINVAL)
    d = chk.state.frames[reg.frameno].stack[_spi(chk, reg)].spilled
    if want_type is not None and d.dynptr_type != want_type:
        chk.error(f"Expected a dynptr of type {want_type} as arg #{regno - 1}", errno.EINVAL)
    meta["dynptr"] = (d.dynptr_type, d.id, d.ref_obj_id)


def slice_reg(chk, meta: dict, size: int, rdonly: bool, what: str) -> Reg:
    """r0 of a dynptr slice: PTR_TO_MEM (read-only or not) of ``size`` bytes or NULL, a fresh
    id, the dynptr's id, packet slices flagged with the dynptr's type."""
    dtype, did, ref = meta["dynptr"]
    flags = PTR_MAYBE_NULL | SLICE_FLAGS.get(dtype, 0) | (MEM_RDONLY if rdonly else 0)
    r = Reg.pointer(PTR_TO_MEM, flags, mem_size=size, id=chk.new_id(), ref_obj_id=ref,
                    origin=chk.origin(what))
    r.dynptr_id = did
    return r


def check_release_arg(chk, regno: int) -> None:
    """check_func_arg's OBJ_RELEASE case for a dynptr (bpf_ringbuf_submit/discard_dynptr):
    only a referenced dynptr on the stack can be released."""
    reg = chk.reg(regno)
    if reg.type != PTR_TO_STACK:
        chk.error("cannot release unowned const bpf_dynptr", errno.EINVAL)
    spi = _spi(chk, reg)
    slot = chk.state.frames[reg.frameno].stack.get(spi) if spi >= 0 else None
    if slot is None or not getattr(slot.spilled, "ref_obj_id", 0):
        chk.error(f"arg {regno} is an unacquired reference", errno.EINVAL)


def unmark_stack_slots_dynptr(chk, regno: int) -> None:
    """Release the dynptr argument ``regno`` (unmark_stack_slots_dynptr): its reference goes,
    with every slice taken from it and every clone sharing the reference (their slots become
    STACK_INVALID); an unreferenced dynptr only has its slots invalidated."""
    reg = chk.reg(regno)
    spi = _spi(chk, reg)
    frame = chk.state.frames[reg.frameno]
    d = frame.stack[spi].spilled
    if d.dynptr_type not in REFCOUNTED:
        frame.stack[spi] = Slot(STACK_INVALID * BPF_REG_SIZE)
        frame.stack[spi - 1] = Slot(STACK_INVALID * BPF_REG_SIZE)
        return
    ref = d.ref_obj_id
    # release_reference: registers and spilled registers holding it (its slices) become
    # unknown scalars; dynptr slots are not spilled registers, the loop below handles them
    chk.state.refs.pop(ref, None)
    chk.state.map_regs(lambda r: Reg.scalar(None, r.origin) if r.ref_obj_id == ref and
                       not isinstance(r, DynptrReg) else None)
    for i, slot in list(frame.stack.items()):
        if isinstance(slot.spilled, DynptrReg) and slot.spilled.ref_obj_id == ref:
            frame.stack[i] = Slot(STACK_INVALID * BPF_REG_SIZE)
            frame.stack[i - 1] = Slot(STACK_INVALID * BPF_REG_SIZE)
