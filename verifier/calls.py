"""Calls: helpers, kfuncs, BPF-to-BPF subprograms, callbacks and tail calls (kernel/bpf/verifier.c).

The main loop (:mod:`.check`) hands every call instruction here:

* :func:`check_helper_call` (the kernel's ``check_helper_call``): the prototype from the one table
  (:mod:`.protos`, through the environment's registry), refused as the kernel refuses it
  (``invalid func unknown#ID``, ``program of this type cannot use helper ...``); then every
  argument by kind (:func:`check_func_arg`: register type against the kernel's
  ``compatible_reg_types``, offsets, map pointer, key and value memory of the map's sizes,
  ``ARG_PTR_TO_MEM`` ranges checked at their ``ARG_CONST_SIZE`` with the kernel's messages,
  constant allocation sizes, release arguments); map/helper compatibility; the return value
  (scalar, map value or NULL with a fresh id, ring buffer memory of the reserved size as an
  acquired reference); r1-r5 clobbered to NOT_INIT.
* :func:`check_kfunc_call`: kfuncs by pybpf id (the arena kfuncs), ``__map``/``__ign``/scalar
  parameters.
* :func:`check_subprog_call`, :func:`prepare_func_exit`: a new frame with r1-r5 copied, the
  caller's r1-r5 clobbered; on exit r0 goes back (``cannot return stack pointer to the caller``).
  Global functions (BTF linkage ``global``): their arguments are checked against their BTF types
  (:func:`global_func_args`); when the main loop verifies global functions on their own
  (``chk.verifies_globals``, from :func:`global_func_entry_regs`, as the kernel's
  ``do_check_subprogs``) the call is not entered and r0 becomes an unknown scalar, otherwise the
  function is entered like a static one.
* ``bpf_loop``: the callback's frame is pushed as a pending path starting at the callback; its
  exit returns to the call site, which is processed again, as in kernel 6.7+ (``callback_depth``
  counts the unrolled iterations, bounded by ``nr_loops``; the main loop prunes a call-site state
  contained in one being explored, see :func:`calls_callback`).
* ``bpf_tail_call``: a ``prog_array`` map, no reference held (``tail_call would lead to reference
  leak``).

Messages are Linux 6.18's, verbatim; the checker object (``chk``) is :class:`.check.Checker`.
"""
from __future__ import annotations

import errno
import os

from pybpf import isa
from pybpf.uapi import BPF_F_RDONLY_PROG, MAP_TYPE_IDS

from . import bounds, bprintf, dynptr, graph, iters, kptr, protos, special_kfuncs, spin_lock
from .protos import (ARG_ANYTHING, ARG_CONST_ALLOC_SIZE_OR_ZERO, ARG_CONST_MAP_PTR,
                     ARG_CONST_SIZE, ARG_CONST_SIZE_OR_ZERO, ARG_DONTCARE, ARG_PTR_TO_CONST_STR,
                     ARG_PTR_TO_CTX, ARG_PTR_TO_FUNC, ARG_PTR_TO_MAP_KEY, ARG_PTR_TO_MAP_VALUE,
                     ARG_PTR_TO_MEM, ARG_PTR_TO_RINGBUF_MEM, ARG_PTR_TO_STACK, Prototype,
                     func_id_name, split_kind)
from .state import (CONST_PTR_TO_DYNPTR, CONST_PTR_TO_MAP, MEM_ALLOC, MEM_RDONLY, MEM_RINGBUF,
                    NOT_INIT, NOT_INIT_REG,
                    PTR_MAYBE_NULL, PTR_TO_ARENA, PTR_TO_BTF_ID, PTR_TO_BUF, PTR_TO_CTX,
                    PTR_TO_FUNC, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_PACKET,
                    PTR_TO_PACKET_END, PTR_TO_PACKET_META, PTR_TO_SOCK_COMMON, PTR_TO_SOCKET,
                    PTR_TO_STACK, PTR_TO_TCP_SOCK, PTR_TO_XDP_SOCK, PTR_TRUSTED, SCALAR_VALUE,
                    SCALAR_ADD_CONST,
                    FuncState, Reg, type_str)

BPF_MAX_VAR_SIZ = 1 << 29
MAX_ERRNO = 4095
CALLER_SAVED = (1, 2, 3, 4, 5)

# --- compatible_reg_types: what each argument kind accepts, in the kernel's order -------------
_MEM_TYPES = ((PTR_TO_STACK, 0), (PTR_TO_PACKET, 0), (PTR_TO_PACKET_META, 0),
              (PTR_TO_MAP_KEY, 0), (PTR_TO_MAP_VALUE, 0), (PTR_TO_MEM, 0),
              (PTR_TO_MEM, MEM_RINGBUF), (PTR_TO_BUF, 0), (PTR_TO_BTF_ID, PTR_TRUSTED))
_INT_PTR_TYPES = ((PTR_TO_STACK, 0), (PTR_TO_PACKET, 0), (PTR_TO_PACKET_META, 0),
                  (PTR_TO_MAP_KEY, 0), (PTR_TO_MAP_VALUE, 0))
COMPATIBLE = {
    ARG_CONST_SIZE: ((SCALAR_VALUE, 0),),
    ARG_CONST_SIZE_OR_ZERO: ((SCALAR_VALUE, 0),),
    ARG_CONST_ALLOC_SIZE_OR_ZERO: ((SCALAR_VALUE, 0),),
    ARG_CONST_MAP_PTR: ((CONST_PTR_TO_MAP, 0),),
    ARG_PTR_TO_MAP_KEY: _MEM_TYPES,
    ARG_PTR_TO_MAP_VALUE: _MEM_TYPES,
    ARG_PTR_TO_MEM: _MEM_TYPES,
    ARG_PTR_TO_CTX: ((PTR_TO_CTX, 0),),
    ARG_PTR_TO_STACK: ((PTR_TO_STACK, 0),),
    ARG_PTR_TO_FUNC: ((PTR_TO_FUNC, 0),),
    ARG_PTR_TO_CONST_STR: ((PTR_TO_MAP_VALUE, 0),),
    ARG_PTR_TO_RINGBUF_MEM: ((PTR_TO_MEM, MEM_RINGBUF),),
    protos.ARG_PTR_TO_INT: _INT_PTR_TYPES,
    protos.ARG_PTR_TO_LONG: _INT_PTR_TYPES,
    protos.ARG_PTR_TO_TIMER: ((PTR_TO_MAP_VALUE, 0),),
    protos.ARG_PTR_TO_SPIN_LOCK: ((PTR_TO_MAP_VALUE, 0), (PTR_TO_BTF_ID, MEM_ALLOC)),
    protos.ARG_PTR_TO_DYNPTR: ((PTR_TO_STACK, 0), (CONST_PTR_TO_DYNPTR, 0)),
    protos.ARG_PTR_TO_SOCKET: ((PTR_TO_SOCKET, 0),),
    protos.ARG_PTR_TO_SOCK_COMMON: ((PTR_TO_SOCK_COMMON, 0), (PTR_TO_SOCKET, 0),
                                    (PTR_TO_TCP_SOCK, 0), (PTR_TO_XDP_SOCK, 0),
                                    (PTR_TO_BTF_ID, 0), (PTR_TO_BTF_ID, PTR_TRUSTED)),
}

# which flag words of an argument kind are folded out of the register's type before comparing
_FLAG_BITS = {protos.MEM_RDONLY: MEM_RDONLY, protos.PTR_MAYBE_NULL: PTR_MAYBE_NULL}

# Types whose fixed and variable offsets a helper argument may carry (check_func_arg_reg_off)
_OFFSET_OK = {(PTR_TO_STACK, 0), (PTR_TO_PACKET, 0), (PTR_TO_PACKET_META, 0),
              (PTR_TO_MAP_KEY, 0), (PTR_TO_MAP_VALUE, 0), (PTR_TO_MEM, 0),
              (PTR_TO_MEM, MEM_RDONLY), (PTR_TO_MEM, MEM_RINGBUF), (PTR_TO_BUF, 0),
              (PTR_TO_BUF, MEM_RDONLY), (PTR_TO_ARENA, 0), (SCALAR_VALUE, 0)}

# map types whose lookup can never miss for a constant in-range key (can_elide_value_nullness)
_ELIDE_NULL = ("array", "percpu_array")

# program types that may hand packet pointers to helpers with pkt_access (read access)
_DIRECT_PKT = ("sched_cls", "xdp", "cgroup_skb", "lwt_in")

# helpers whose call sites re-run after their callback returns (is_callback_calling_function)
CALLBACK_HELPERS = frozenset({protos.HELPER_IDS["loop"], protos.HELPER_IDS["for_each_map_elem"]})
# map types with map_set_for_each_callback_args / map_for_each_callback
_FOR_EACH_MAPS = ("hash", "lru_hash", "percpu_hash", "lru_percpu_hash", "array", "percpu_array")


def _nr_cpu_ids() -> int:
    """The kernel's nr_cpu_ids (possible CPUs): get_smp_processor_id's bound."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
        return int(text.split(",")[-1].split("-")[-1]) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


NR_CPU_IDS = _nr_cpu_ids()


class CallMeta:
    """What the argument checks learn (struct bpf_call_arg_meta)."""

    __slots__ = ("map", "mem_size", "const_map_key", "release_regno", "ref_obj_id",
                 "subprog", "msize_max", "pkt_access", "func_id", "dynptr", "kptr_field")

    def __init__(self, func_id: int, pkt_access: bool) -> None:
        self.map = None
        self.mem_size = 0
        self.const_map_key = -1
        self.release_regno = 0
        self.ref_obj_id = 0
        self.subprog = None
        self.msize_max = 0
        self.pkt_access = pkt_access
        self.func_id = func_id
        self.dynptr = None          # (type, id, ref_obj_id) of an initialised dynptr argument
        self.kptr_field = None      # bpf_kptr_xchg: the destination's kptr.KptrField


# --- small helpers -----------------------------------------------------------------------------
def proto_of(entry) -> Prototype | None:
    """A registry entry (runtime Helper with ``.prototype``) or a Prototype, as a Prototype."""
    if entry is None:
        return None
    return getattr(entry, "prototype", entry)


def _is_null(r: Reg) -> bool:
    """register_is_null: a known zero scalar."""
    return r.type == SCALAR_VALUE and r.var.is_const() and r.var.const_value() == 0


def _map_type_id(m) -> int:
    return MAP_TYPE_IDS.get(m.type, 0)


def _mark_invalid(r: Reg) -> Reg:
    """mark_reg_invalid for a privileged loader: an unknown scalar."""
    return Reg.scalar(None, r.origin)


def _set_r0(chk, r: Reg) -> None:
    chk.state.cur.regs[0] = r


def _gpl_compatible(prog) -> bool:
    lic = getattr(prog, "license", None)
    if not lic:
        return True      # raw bytecode and assembly carry no license: like a GPL load
    return lic in ("GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                   "Dual MPL/GPL")


# --- helper calls --------------------------------------------------------------------------------
def check_call_targets(prog, env, prog_type: str, attach_type: str | None = None) -> None:
    """Refuse, before anything runs, a call to a helper or kfunc the environment does not have
    or ``prog_type`` may not call (part of the structural checks: ``invalid func unknown#ID``,
    ``program of this type cannot use helper ...``, ``kernel btf_id ID is not a function``)."""
    from pybpf.errors import VerifierError
    check_kfunc_ids(prog, env)
    for pc, form, insn in prog.instructions():
        if form.kind != "call":
            continue
        if form.op == "helper":
            msg = protos.unknown_helper_message(insn.imm, prog_type,
                                                proto_of(env.helper(insn.imm)), attach_type)
            if msg:
                raise VerifierError(msg, pc, log=msg + "\n", errno=errno.EINVAL)


def check_kfunc_ids(prog, env) -> None:
    """add_subprog_and_kfunc's add_kfunc_call, the kernel's first pass: every kfunc call,
    reached or not, must name a kfunc (``kernel btf_id ID is not a function``). A call without
    an id (imm 0, off 0) is left to fixup_kfunc_call (refused only if reached)."""
    from pybpf.errors import VerifierError
    for pc, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "kfunc" and (insn.imm or insn.off) \
                and env.kfunc(insn.imm) is None:
            msg = f"kernel btf_id {insn.imm & 0xFFFFFFFF} is not a function"   # %u
            raise VerifierError(msg, pc, log=msg + "\n", errno=errno.EINVAL)


def check_helper_call(chk, pc: int, insn) -> None:
    """check_helper_call: arguments, effects and r0 of ``call ID``; r1-r5 become NOT_INIT."""
    hid = insn.imm
    spin_lock.check_call_allowed(chk, hid, protos.HELPER_IDS["spin_unlock"])
    proto = proto_of(chk.env.helper(hid))
    awaiting = proto is None and hid in protos.AWAITING_IMPLEMENTATION
    if awaiting:
        # a kernel helper pybpf knows the prototype of but cannot run yet: its arguments are
        # checked first, as the kernel checks them, and the call is refused after them
        proto = protos.HELPERS[hid]
    msg = protos.unknown_helper_message(hid, chk.prog_type, proto, chk.attach_type)
    if msg:
        chk.error(msg, errno.EINVAL)
    if proto.gpl_only and not _gpl_compatible(chk.prog):
        chk.error("cannot call GPL-restricted function from non-GPL compatible program",
                  errno.EINVAL)
    if proto.might_sleep and not _sleepable(chk):
        chk.error("helper call might sleep in a non-sleepable prog", errno.EINVAL)
    if proto.might_sleep and special_kfuncs.rcu_active(chk.state):
        chk.error(f"sleepable helper {func_id_name(hid)}#{hid} in rcu_read_lock region",
                  errno.EINVAL)
    meta = CallMeta(hid, proto.pkt_access)
    for i in range(5):
        check_func_arg(chk, i, meta, proto)
    if awaiting:
        chk.error(f"helper {func_id_name(hid)}#{hid} is not implemented by pybpf", errno.EINVAL)
    _record_func_map(chk, meta, hid)
    _record_func_key(chk, meta, hid)
    if hid == protos.HELPER_IDS["dynptr_from_mem"] and regs_type(chk, 1) != PTR_TO_MAP_VALUE:
        chk.error(f"Unsupported reg type {chk.reg(1).type_str()} for bpf_dynptr_from_mem data")
    regs = chk.state.cur.regs
    if meta.release_regno:
        if split_kind(proto.args[meta.release_regno - 1])[0] == protos.ARG_PTR_TO_DYNPTR:
            dynptr.unmark_stack_slots_dynptr(chk, meta.release_regno)
        elif meta.ref_obj_id and hid == kptr.KPTR_XCHG:
            kptr.release_source(chk, meta.ref_obj_id)
        elif meta.ref_obj_id:
            release_reference(chk, meta.ref_obj_id)
        elif not _is_null(regs[meta.release_regno]):
            chk.error(f"func {func_id_name(hid)}#{hid} reference has not been acquired before",
                      errno.EINVAL)
    if hid == protos.HELPER_IDS["tail_call"]:
        check_resource_leak(chk, False, True, "tail_call")
        if chk.state.cur.frameno:
            # the program a tail call from a subprogram enters may change packet data before
            # the subprogram returns to its caller (kernel 6.13+)
            clear_all_pkt_pointers(chk)
    elif hid == protos.HELPER_IDS["loop"]:
        _loop_callback(chk, pc, meta)
    elif hid == protos.HELPER_IDS["for_each_map_elem"]:
        _map_elem_callback(chk, pc, meta)
    elif hid == protos.HELPER_IDS["snprintf"]:
        bprintf.check_snprintf_call(chk)
    elif hid == protos.HELPER_IDS["get_local_storage"] and not _is_null(regs[2]):
        # it cannot return an error, so the flags must be 0
        chk.error("get_local_storage() doesn't support non-zero flags", errno.EINVAL)
    for r in CALLER_SAVED:
        regs[r] = NOT_INIT_REG
    _set_return(chk, pc, hid, proto, meta)
    if meta.map is not None:
        _check_map_func_compatibility(chk, meta.map, hid)
    if getattr(proto, "changes_pkt_data", False) or (
            hid == protos.HELPER_IDS["dynptr_write"] and meta.dynptr is not None
            and meta.dynptr[0] in (dynptr.SKB, dynptr.SKB_META)):
        # a write into an skb (or its metadata) may unclone and move it: check_helper_call's
        # BPF_FUNC_dynptr_write case sets changes_data for those dynptr types
        clear_all_pkt_pointers(chk)


def regs_type(chk, regno: int):
    return chk.reg(regno).type


def _sleepable(chk) -> bool:
    return chk.prog_type == "syscall" or bool(getattr(chk.prog, "sleepable", False))


def check_func_arg(chk, arg: int, meta: CallMeta, proto: Prototype) -> None:
    """check_func_arg for argument ``arg`` (r1 + arg)."""
    if arg >= proto.nargs:
        return
    kind = proto.args[arg]
    base, flags = split_kind(kind)
    if base == ARG_DONTCARE:
        return
    if meta.func_id == kptr.KPTR_XCHG:
        kptr.check_xchg_arg(chk, arg, meta, proto)
        return
    regno = arg + 1
    reg = chk.check_reg_read(regno)
    if base == ARG_ANYTHING:
        return          # a privileged loader may pass pointers (allow_ptr_leaks)
    if reg.type in (PTR_TO_PACKET, PTR_TO_PACKET_META) and not _pkt_ok(chk, meta):
        chk.error("helper access to the packet is not allowed")
    if base == protos.ARG_PTR_TO_DYNPTR:
        check_reg_type(chk, regno, base, flags)
        if protos.OBJ_RELEASE in flags:
            dynptr.check_release_arg(chk, regno)
            meta.release_regno = regno
        found: dict = {}
        want = next((f[len("DYNPTR_TYPE_"):].lower() for f in flags
                     if f.startswith("DYNPTR_TYPE_")), None)
        dynptr.process_dynptr_func(chk, regno, chk.pc, uninit=protos.MEM_UNINIT in flags,
                                   rdonly=protos.MEM_RDONLY in flags, want_type=want, meta=found)
        meta.dynptr = found.get("dynptr")
        return
    if base == protos.ARG_PTR_TO_PERCPU_BTF_ID:
        kptr.check_percpu_arg(chk, regno, reg, meta)
        return
    if not (_is_null(reg) and protos.PTR_MAYBE_NULL in flags):
        check_reg_type(chk, regno, base, flags)
        check_func_arg_reg_off(chk, reg, regno, base, flags)
    if protos.OBJ_RELEASE in flags:
        if not reg.ref_obj_id and not _is_null(reg):
            chk.error(f"R{regno} must be referenced when passed to release function",
                      errno.EINVAL)
        meta.release_regno = regno
    if reg.ref_obj_id:
        if meta.ref_obj_id:
            chk.error(f"more than one arg with ref_obj_id R{regno} {reg.ref_obj_id} "
                      f"{meta.ref_obj_id}")
        meta.ref_obj_id = reg.ref_obj_id
    write = protos.MEM_WRITE in flags
    if base == ARG_CONST_MAP_PTR:
        meta.map = reg.map
    elif base == ARG_PTR_TO_MAP_KEY:
        key_size = meta.map.key_size
        _helper_mem(chk, regno, key_size, False, False)
        if meta.map.type in _ELIDE_NULL:
            meta.const_map_key = _constant_map_key(chk, reg, key_size)
    elif base == ARG_PTR_TO_MAP_VALUE:
        if protos.PTR_MAYBE_NULL in flags and _is_null(reg):
            return
        _helper_mem(chk, regno, meta.map.value_size, write, False)
    elif base == ARG_PTR_TO_FUNC:
        meta.subprog = reg.subprog
    elif base == ARG_PTR_TO_MEM:
        if protos.MEM_FIXED_SIZE in flags:
            size = proto.arg_size[arg] if hasattr(proto, "arg_size") else 0
            _helper_mem(chk, regno, size, write, False)
    elif base in (ARG_CONST_SIZE, ARG_CONST_SIZE_OR_ZERO):
        prev_write = protos.MEM_WRITE in split_kind(proto.args[arg - 1])[1]
        meta.msize_max = reg.var.umax
        if _is_mem_buffer(chk, chk.reg(regno - 1)):
            _mem_buffer_size_reg(chk, regno - 1, regno, prev_write,
                                 base == ARG_CONST_SIZE_OR_ZERO)
        else:
            chk.mem.check_mem_size_reg(chk, regno - 1, regno, prev_write,
                                       base == ARG_CONST_SIZE_OR_ZERO)
    elif base == ARG_CONST_ALLOC_SIZE_OR_ZERO:
        if not reg.var.is_const():
            chk.error(f"R{regno} is not a known constant'")
        meta.mem_size = reg.var.const_value()
        chk.mark_precise(regno)             # the returned memory's size is this value
    elif base == protos.ARG_PTR_TO_SPIN_LOCK:
        spin_lock.process_spin_lock(chk, regno, meta.func_id == protos.HELPER_IDS["spin_lock"])
    elif base in (protos.ARG_PTR_TO_INT, protos.ARG_PTR_TO_LONG):
        size = 4 if base == protos.ARG_PTR_TO_INT else 8
        _helper_mem(chk, regno, size, False, False)
    elif base == ARG_PTR_TO_CONST_STR:
        _check_const_str(chk, reg, regno)


def _is_mem_buffer(chk, reg: Reg) -> bool:
    """r1 of pybpf's ``mem`` type (PTR_TO_CTX there): plain memory, possibly offset."""
    return reg.type == PTR_TO_CTX and chk.prog_type == "mem"


def _helper_mem(chk, regno: int, size: int, write: bool, zero_ok: bool) -> None:
    """check_helper_mem_access, with pybpf's ``mem`` buffer handled here: the whole range
    [r + off + var, + size) must lie in [0, U16_MAX) (like a direct access through r1), and
    the largest offset reached is recorded so a run refuses shorter memory."""
    reg = chk.reg(regno)
    if not _is_mem_buffer(chk, reg):
        chk.mem.check_helper_mem_access(chk, regno, size, write, zero_ok)
        return
    if size == 0 and zero_ok:
        return
    v = reg.var
    lo, hi = reg.off + v.smin, reg.off + v.umax + size
    if size <= 0 or v.smin < 0 or lo < 0 or hi > 0xFFFF:
        if v.is_const():
            chk.error(f"invalid bpf_context access off={lo} size={size}")
        chk.error(f"R{regno} unbounded memory access, make sure to bounds check any such access")
    chk.max_ctx_offset = max(chk.max_ctx_offset, hi)


def _mem_buffer_size_reg(chk, mem_regno: int, size_regno: int, write: bool,
                         zero_ok: bool) -> None:
    """check_mem_size_reg for a ``mem`` buffer argument (messages as the kernel's)."""
    v = chk.reg(size_regno).var
    if v.smin < 0:
        chk.error(f"R{size_regno} min value is negative, either use unsigned or 'var &= const'")
    if v.umin == 0 and not zero_ok:
        chk.error(f"R{size_regno} invalid zero-sized read: u64=[{v.umin},{v.umax}]")
    if v.umax >= BPF_MAX_VAR_SIZ:
        chk.error(f"R{size_regno} unbounded memory access, use 'var &= const' or 'if (var < "
                  f"const)'")
    _helper_mem(chk, mem_regno, v.umax, write, zero_ok)
    chk.mark_precise(size_regno)


def _pkt_ok(chk, meta: CallMeta) -> bool:
    """may_access_direct_pkt_data(env, meta, BPF_READ)."""
    return chk.prog_type in _DIRECT_PKT and meta.pkt_access


def _type_flags(reg: Reg) -> int:
    """The flags that are part of the register's type. A linked scalar's SCALAR_ADD_CONST
    (the kernel keeps BPF_ADD_CONST in the id, not the type) is not: r2 = r0; r2 += 4 is
    still a plain scalar argument."""
    return reg.flags & ~SCALAR_ADD_CONST if reg.type == SCALAR_VALUE else reg.flags


def check_reg_type(chk, regno: int, base: str, flags: frozenset) -> None:
    """check_reg_type: the register's type must be one ``base`` accepts (flags folded)."""
    reg = chk.reg(regno)
    compatible = COMPATIBLE.get(base)
    if compatible is None:
        chk.error(f"verifier bug: unsupported arg type {base}", errno.EFAULT)
    rflags = _type_flags(reg)
    for f in flags:
        rflags &= ~_FLAG_BITS.get(f, 0)
    if (reg.type, rflags) in compatible:
        return
    if reg.type == PTR_TO_CTX and chk.prog_type == "mem" and compatible is _MEM_TYPES:
        return      # pybpf's mem type: r1 is plain memory (bounds: mem.check_helper_mem_access)
    expected = ", ".join(type_str(t, f) for t, f in compatible)
    chk.error(f"R{regno} type={reg.type_str()} expected={expected}")


def check_func_arg_reg_off(chk, reg: Reg, regno: int, base: str, flags: frozenset) -> None:
    """check_func_arg_reg_off: which pointers may carry a fixed or variable offset."""
    if protos.OBJ_RELEASE in flags:
        if reg.off:
            chk.error(f"R{regno} must have zero offset when passed to release func or trusted "
                      f"arg to kfunc", errno.EINVAL)
        _check_ptr_off_reg(chk, reg, regno, fixed_off_ok=False)
        return
    if (reg.type, _type_flags(reg)) in _OFFSET_OK or _is_mem_buffer(chk, reg):
        return
    _check_ptr_off_reg(chk, reg, regno, fixed_off_ok=reg.type == PTR_TO_BTF_ID)


def _check_ptr_off_reg(chk, reg: Reg, regno: int, fixed_off_ok: bool) -> None:
    """__check_ptr_off_reg."""
    if reg.off < 0:
        chk.error(f"negative offset {reg.type_str()} ptr R{regno} off={reg.off} disallowed")
    if not fixed_off_ok and reg.off:
        chk.error(f"dereference of modified {reg.type_str()} ptr R{regno} off={reg.off} "
                  f"disallowed")
    v = reg.var
    if not v.is_const() or v.const_value():
        chk.error(f"variable {reg.type_str()} access var_off={v.var_off} disallowed")


def _constant_map_key(chk, key: Reg, key_size: int) -> int:
    """get_constant_map_key: the key's value when the stack holds it as a constant, else -1."""
    if key.type != PTR_TO_STACK or not key.var.is_const():
        return -1
    stack_off = key.off + _signed(key.var.const_value())
    if stack_off >= 0:
        return -1
    frame = chk.state.frames[key.frameno]
    slot_no = -stack_off - 1
    spi, off = divmod(slot_no, 8)
    slot = frame.stack.get(spi)
    if slot is None:
        return -1
    # slot.types[i] is the kernel's slot_type[i]: byte fp - 8*spi - 1 - i, so walking i from
    # the key's first byte down to 0 walks up to the top of the slot, as the kernel does
    stype = slot.types
    zero = 0
    for i in range(off, -1, -1):
        if stype[i] != "0":
            break
        zero += 1
    if zero >= key_size:
        return 0
    sp = slot.spilled
    if sp is None or sp.type != SCALAR_VALUE:
        return -1
    spill = 0
    for i in range(off, -1, -1):
        if stype[i] != "r":
            break
        spill += 1
    if spill != key_size or not sp.var.is_const():
        return -1
    # the lookup's result (not NULL) rests on this constant: keep it in pruned states
    from .precision import mark_slot_precise
    mark_slot_precise(chk, key.frameno, spi)
    return sp.var.const_value()


def _signed(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def _check_const_str(chk, reg: Reg, regno: int) -> None:
    """check_reg_const_str: a NUL-terminated string in a read-only map's value."""
    if reg.type != PTR_TO_MAP_VALUE:
        chk.error(f"R{regno} type={reg.type_str()} expected=map_value", errno.EINVAL)
    m = reg.map
    if not m.flags & BPF_F_RDONLY_PROG:
        chk.error(f"R{regno} does not point to a readonly map'")
    if not reg.var.is_const():
        chk.error(f"R{regno} is not a constant address'")
    # the range must lie in the value; the NUL is checked where the value can be read (a
    # global section), else at run time by the interpreter's argument checks
    chk.mem.check_helper_mem_access(chk, regno, max(m.value_size - reg.off, 1), False, False)
    bprintf.check_const_str(chk, reg, regno)


def _record_func_map(chk, meta: CallMeta, hid: int) -> None:
    """record_func_map: a read-only map refuses the helpers that change it."""
    m = meta.map
    if m is None:
        return
    if m.flags & BPF_F_RDONLY_PROG and hid in (protos.HELPER_IDS[n] for n in (
            "map_delete_elem", "map_update_elem", "map_push_elem", "map_pop_elem")):
        chk.error("write into map forbidden")


def _record_func_key(chk, meta: CallMeta, hid: int) -> None:
    if hid != protos.HELPER_IDS["tail_call"]:
        return
    if meta.map is None or meta.map.type != "prog_array":
        # the kernel prints this one without a newline
        chk.error("expected prog array map for tail call", errno.EINVAL)
    # a constant index in range is recorded for the call's direct jump (poke descriptor), so
    # its value matters: precise, as the kernel marks it (fewer states pruned, its counts)
    r3 = chk.reg(3)
    if r3.type == SCALAR_VALUE and r3.var.is_const() and \
            r3.var.const_value() < meta.map.max_entries:
        chk.mark_precise(3)


def _set_return(chk, pc: int, hid: int, proto: Prototype, meta: CallMeta) -> None:
    base, flags = proto.ret_kind()
    nullable = protos.PTR_MAYBE_NULL in flags
    origin = chk.origin(func_id_name(hid))
    if base == protos.RET_INTEGER:
        r0 = Reg.scalar(_refine_retval(hid, meta), origin)
    elif base == protos.RET_VOID:
        r0 = NOT_INIT_REG
    elif base == protos.RET_PTR_TO_MAP_VALUE:
        m = meta.map
        if m is None:
            chk.error("verifier bug: unexpected null map_ptr", errno.EFAULT)
        if hid == protos.HELPER_IDS["map_lookup_elem"] and m.type in _ELIDE_NULL and \
                0 <= meta.const_map_key < m.max_entries:
            nullable = False
        r0 = Reg.pointer(PTR_TO_MAP_VALUE, PTR_MAYBE_NULL if nullable else 0, map=m,
                         origin=origin)
    elif base == protos.RET_PTR_TO_MEM:
        fl = (PTR_MAYBE_NULL if nullable else 0) | \
             (MEM_RINGBUF if protos.MEM_RINGBUF in flags else 0) | \
             (MEM_RDONLY if protos.MEM_RDONLY in flags else 0)
        r0 = Reg.pointer(PTR_TO_MEM, fl, mem_size=meta.mem_size, origin=origin)
    elif base == protos.RET_PTR_TO_BTF_ID and meta.kptr_field is not None:
        r0 = kptr.xchg_return(chk, meta)
    elif base == "RET_PTR_TO_MEM_OR_BTF_ID" and meta.kptr_field is not None:
        r0 = kptr.percpu_return(chk, meta, nullable)
    else:
        chk.error(f"verifier bug: unknown return type {proto.ret} of func "
                  f"{func_id_name(hid)}#{hid}", errno.EINVAL)
        return
    if r0.type != NOT_INIT and r0.flags & PTR_MAYBE_NULL:
        r0 = r0.replace(id=chk.new_id())
    elif r0.type == PTR_TO_MAP_VALUE and spin_lock.may_point_to_spin_lock(r0):
        r0 = r0.replace(id=chk.new_id())    # a never-NULL element (constant key): its lock's id
    if hid == protos.HELPER_IDS["dynptr_data"] and meta.dynptr is not None:
        # a data slice: tied to its dynptr (destroying the dynptr invalidates it)
        r0 = r0.replace(ref_obj_id=meta.dynptr[2])
        r0.dynptr_id = meta.dynptr[1]
    if hid in (protos.HELPER_IDS["ringbuf_reserve"], kptr.KPTR_XCHG):   # is_acquire_function
        ref = acquire_reference(chk, pc)
        r0 = r0.replace(id=ref, ref_obj_id=ref)
    _set_r0(chk, r0)


def _refine_retval(hid: int, meta: CallMeta):
    """do_refine_retval_range for the helpers pybpf implements; None = unknown scalar."""
    name = protos.HELPER_NAMES[hid] if 0 <= hid < protos.MAX_HELPER_ID else ""
    if name in ("probe_read_str", "probe_read_kernel_str", "probe_read_user_str"):
        hi = meta.msize_max
        return bounds.Scalar.from_bounds(smin=-MAX_ERRNO, smax=hi, s32_min=-MAX_ERRNO,
                                         s32_max=min(hi, bounds.S32_MAX))
    if name == "get_smp_processor_id":
        n = NR_CPU_IDS - 1
        return bounds.Scalar.from_bounds(smin=0, smax=n, umin=0, umax=n, s32_min=0, s32_max=n,
                                         u32_min=0, u32_max=n)
    return None


_MAP_ONLY = {   # map type -> the helpers that may take it (first switch of the kernel's check)
    "prog_array": ("tail_call",),
    "ringbuf": ("ringbuf_output", "ringbuf_reserve", "ringbuf_query",
                "ringbuf_reserve_dynptr", "ringbuf_submit_dynptr", "ringbuf_discard_dynptr"),
    "queue": ("map_peek_elem", "map_pop_elem", "map_push_elem"),
    "stack": ("map_peek_elem", "map_pop_elem", "map_push_elem"),
    "bloom_filter": ("map_peek_elem", "map_push_elem"),
    "array_of_maps": ("map_lookup_elem",),
    "hash_of_maps": ("map_lookup_elem",),
    "devmap": ("redirect_map", "map_lookup_elem"),
    "devmap_hash": ("redirect_map", "map_lookup_elem"),
    "cpumap": ("redirect_map",),
    "xskmap": ("redirect_map", "map_lookup_elem"),
    "perf_event_array": ("perf_event_read", "perf_event_output", "perf_event_read_value",
                         "skb_output", "xdp_output"),
    "user_ringbuf": ("user_ringbuf_drain",),
    "cgroup_storage": ("get_local_storage",),
    "percpu_cgroup_storage": ("get_local_storage",),
}
_FUNC_ONLY = {  # helper -> the map types it may take (second switch)
    "tail_call": ("prog_array",),
    "ringbuf_output": ("ringbuf",), "ringbuf_reserve": ("ringbuf",),
    "ringbuf_query": ("ringbuf",), "ringbuf_reserve_dynptr": ("ringbuf",),
    "map_pop_elem": ("queue", "stack"),
    "map_peek_elem": ("queue", "stack", "bloom_filter"),
    "map_push_elem": ("queue", "stack", "bloom_filter"),
    "map_lookup_percpu_elem": ("percpu_array", "percpu_hash", "lru_percpu_hash"),
    "redirect_map": ("devmap", "devmap_hash", "cpumap", "xskmap"),
    "for_each_map_elem": ("hash", "lru_hash", "array", "percpu_hash", "lru_percpu_hash",
                          "percpu_array"),
    "perf_event_output": ("perf_event_array",),
    "get_local_storage": ("cgroup_storage", "percpu_cgroup_storage"),
}


def _check_map_func_compatibility(chk, m, hid: int) -> None:
    """check_map_func_compatibility: ``cannot pass map_type %d into func %s#%d``."""
    name = protos.HELPER_NAMES[hid] if 0 <= hid < protos.MAX_HELPER_ID else ""
    allowed = _MAP_ONLY.get(m.type)
    ok = allowed is None or name in allowed
    types = _FUNC_ONLY.get(name)
    if ok and types is not None and m.type not in types:
        ok = False
    if not ok:
        chk.error(f"cannot pass map_type {_map_type_id(m)} into func {func_id_name(hid)}#{hid}",
                  errno.EINVAL)


# --- check_map_prog_compatibility: which maps a program type may use at all ------------------
# The kernel checks each map once, when resolve_pseudo_ldimm64 adds it to the program's used
# maps, before anything else: the error has no instruction line in the log. A sleepable program's
# allowed map types were measured on the running 6.18 kernel (a prog_array is refused).
_SLEEPABLE_MAPS = frozenset({
    "hash", "lru_hash", "array", "percpu_hash", "percpu_array", "lru_percpu_hash",
    "array_of_maps", "hash_of_maps", "ringbuf", "user_ringbuf", "inode_storage", "sk_storage",
    "task_storage", "cgrp_storage", "queue", "stack", "arena", "insn_array"})
_TRACING_TYPES = frozenset({"kprobe", "tracepoint", "perf_event", "raw_tracepoint",
                            "raw_tracepoint_writable", "tracing"})


def _compat_error(prog, m, prog_type: str) -> str | None:
    """check_map_prog_compatibility for one map, or None."""
    if spin_lock.lock_offset(m) >= 0:
        if prog_type == "socket_filter":
            return "socket filter progs cannot use bpf_spin_lock yet"
        if prog_type in _TRACING_TYPES:
            return "tracing progs cannot use bpf_spin_lock yet"
    if (prog_type == "syscall" or getattr(prog, "sleepable", False)) and \
            m.type not in _SLEEPABLE_MAPS:
        return ("Sleepable programs can only use array, hash, ringbuf and local storage maps, "
                "also as inner maps")
    return None


def missing_map(by_index: bool, imm: int) -> tuple[str, str, int]:
    """(log note, message, errno) for an ld_imm64 whose map fd or index names no map.

    The kernel reads a map index from the loader's ``fd_array`` (``fd_array[imm]``, unchecked:
    past its end is whatever follows) and then says ``fd N is not pointing to valid bpf_map``.
    pybpf's fd_array is the program's declared maps followed by zeros (as a zero-padded
    ``fd_array`` reads, tests/kernel_verifier.py's too), and fd 0 is never a map: so an index
    past the declared maps is the kernel's ``fd 0`` line, after a note naming the index. A
    negative index reads before the array (the kernel's answer is whatever memory is there):
    pybpf says it is out of range."""
    if not by_index:
        return "", f"fd {imm} is not pointing to valid bpf_map", errno.EBADF
    if imm < 0:
        return "", f"map index {imm} out of range", errno.EINVAL
    return (f"map index {imm} is past the program's declared maps (fd_array entries past them "
            f"read as fd 0)", "fd 0 is not pointing to valid bpf_map", errno.EINVAL)


def resolve_pseudo_ldimm64(prog, env, prog_type: str) -> None:
    """The kernel's resolve_pseudo_ldimm64, before every other check: each ld_imm64 in
    instruction order, reachable or not. A BTF id (pybpf has no kernel BTF), a map reference
    that names no map, a map this program type may not use (check_map_prog_compatibility, once
    per map), a direct value address outside its map: VerifierError (no instruction line in
    the log, as the kernel's)."""
    from pybpf.errors import VerifierError

    def fail(msg: str, pc: int, err: int = errno.EINVAL):
        raise VerifierError(msg, pc, log=msg + "\n", errno=err)

    seen = set()
    for pc, form, insn in prog.instructions():
        if form.kind != "lddw":
            continue
        op = form.op
        if op == "btf_id":
            if insn.imm == 0:       # check_pseudo_btf_id: id 0 is void in every BTF
                fail("pseudo btf_id 0 in ldimm64 isn't KIND_VAR or KIND_FUNC", pc)
            fail("ldimm64 btf_id needs kernel BTF, which pybpf does not have", pc)
        if not op.startswith("map"):
            continue
        by_index = op.startswith("map_idx")
        m = env.map_by_index(insn.imm) if by_index else env.map_by_fd(insn.imm)
        if m is None:
            note, msg, err = missing_map(by_index, insn.imm)
            raise VerifierError(msg, pc, log="".join(f"{t}\n" for t in (note, msg) if t),
                                errno=err)
        key = id(m.value if m.value is not None else m)
        if key not in seen:                         # __add_used_map: each map checked once
            seen.add(key)
            why = _compat_error(prog, m, prog_type)
            if why:
                fail(why, pc)
        if op in ("map_value", "map_idx_value"):
            off = prog.insns[pc + 1].imm & 0xFFFFFFFF
            if off >= (1 << 29):                     # BPF_MAX_VAR_OFF
                fail(f"direct value offset of {off} is not allowed", pc)
            if m.type not in ("array", "arena"):
                fail("no direct value access support for this map type", pc)
            if m.type == "array" and (m.max_entries != 1 or off >= m.value_size):
                fail(f"invalid access to map value pointer, value_size={m.value_size} "
                     f"off={off}", pc)


# --- references ----------------------------------------------------------------------------------
def acquire_reference(chk, pc: int) -> int:
    ref = chk.new_id()
    chk.state.refs[ref] = pc
    return ref


def release_reference(chk, ref_obj_id: int) -> None:
    """release_reference: forget the reference; every copy of the pointer becomes invalid."""
    chk.state.refs.pop(ref_obj_id, None)
    chk.state.map_regs(lambda r: _mark_invalid(r) if r.ref_obj_id == ref_obj_id else None)


def check_resource_leak(chk, exception_exit: bool, check_lock: bool, prefix: str) -> None:
    """check_resource_leak: refuse ``prefix`` (an exit, a tail call) while references or a
    lock are held. Only the main frame's references count, as in check_reference_leak."""
    st = chk.state
    if check_lock and st.active_lock:
        chk.error(f"{prefix} cannot be used inside bpf_spin_lock-ed region", errno.EINVAL)
    if exception_exit or st.cur.frameno == 0:
        if st.refs:
            for ref, at in st.refs.items():
                chk.log.line(f"Unreleased reference id={ref} alloc_insn={at}")
            chk.error(f"{prefix} would lead to reference leak", errno.EINVAL)
    if check_lock and special_kfuncs.rcu_active(st):
        chk.error(f"{prefix} cannot be used inside bpf_rcu_read_lock-ed region", errno.EINVAL)


def subprog_changes_pkt_data(chk, start: int) -> bool:
    """The kernel's ``subprog_info[].changes_pkt_data`` (check_cfg, merged from callees): the
    subprogram at ``start``, or one it calls, calls a helper whose prototype changes packet data
    or makes a tail call. A call to a global function, which is not entered, then invalidates
    the caller's packet pointers."""
    memo = chk.__dict__.setdefault("_changes_pkt_data", {})
    if start in memo:
        return memo[start]
    memo[start] = False                 # recursion (refused elsewhere) ends here
    i = chk.subprog_index(start)
    starts = chk.subprog_starts
    end = starts[i + 1] if i + 1 < len(starts) else len(chk.prog.insns)
    found = False
    for pc, form, insn in chk.prog.instructions():
        if not start <= pc < end or form.kind != "call":
            continue
        if form.op == "helper":
            proto = proto_of(chk.env.helper(insn.imm))
            found = insn.imm == protos.HELPER_IDS["tail_call"] or \
                bool(proto is not None and proto.changes_pkt_data)
        elif form.op == "local":
            found = subprog_changes_pkt_data(chk, pc + 1 + insn.imm)
        if found:
            break
    memo[start] = found
    return found


def clear_all_pkt_pointers(chk) -> None:
    """After a helper that may move the packet: every packet pointer is invalid, and so is
    every packet slice of a dynptr (reg_is_dynptr_slice_pkt)."""
    chk.state.map_regs(lambda r: _mark_invalid(r) if r.type in (
        PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_PACKET_END) or (
        r.type == PTR_TO_MEM and r.flags & dynptr.PKT_SLICE) else None)


# --- kfuncs --------------------------------------------------------------------------------------
def check_kfunc_call(chk, pc: int, insn):
    """check_kfunc_call for the kfuncs pybpf implements (by pybpf kfunc id). Returns False when
    the path ends at the call (bpf_throw), else None."""
    kid = insn.imm
    proto = proto_of(chk.env.kfunc(kid))
    if proto is None or proto.name not in graph.SPIN_ALLOWED:
        spin_lock.check_call_allowed(chk, None, protos.HELPER_IDS["spin_unlock"])
    if kid == 0 and insn.off == 0:
        # check_kfunc_call skips a call without a function id ("return error when we find this
        # in fixup_kfunc_call"): nothing is checked or changed, not even r0; run_checks refuses
        # it after verification unless no path reached it
        chk.kfunc0_calls.add(pc)
        return None
    if proto is None:
        chk.error(f"kernel btf_id {kid & 0xFFFFFFFF} is not a function", errno.EINVAL)
    name = proto.name or f"kfunc#{kid}"
    if not proto.allowed_in(chk.prog_type):
        chk.error(f"calling kernel function {name} is not allowed", errno.EACCES)
    if protos.KF_SLEEPABLE in proto.kfunc_flags and not _sleepable(chk):
        chk.error(f"program must be sleepable to call sleepable kfunc {name}", errno.EACCES)
    meta: dict = {}
    for i, kind in enumerate(proto.args):
        regno = i + 1
        base, kflags = split_kind(kind)
        if base == protos.KF_ARG_IGNORE:
            continue
        if base == protos.KF_ARG_PTR_TO_MEM_SIZE and chk.reg(regno + 1).type != SCALAR_VALUE:
            # get_kfunc_ptr_arg_type: the next argument is the buffer's size only when its
            # register holds a scalar (an unset one does not); else the buffer is plain memory,
            # which a ``void *`` (bpf_dynptr_slice's, the only such buffer) cannot be
            chk.error(f"arg#{i} pointer type UNKNOWN  must point to scalar, or struct with "
                      "scalar", errno.EINVAL)
        # check_kfunc_args reads scalar arguments without check_reg_arg: an uninitialised one
        # is "R2 is not a scalar", not "R2 !read_ok"
        reg = chk.reg(regno) if base in _KF_NO_READ_CHECK else chk.check_reg_read(regno)
        if base == protos.KF_ARG_CONST and i > 0 and \
                split_kind(proto.args[i - 1])[0] == protos.KF_ARG_PTR_TO_MEM_SIZE:
            continue                            # the size checked with its buffer
        if base in _KF_TRUSTED and (_is_null(reg) or reg.flags & PTR_MAYBE_NULL):
            # Linux 6.18 as measured here checks kfunc pointer arguments as trusted ones
            # (iterator kfuncs: KF_ITER_* implies KF_TRUSTED_ARGS)
            chk.error(f"Possibly NULL pointer passed to trusted arg{i}", errno.EACCES)
        if base in _KF_REG_OFF_FIRST and name not in graph.NAMES:
            # check_kfunc_args runs check_func_arg_reg_off on every pointer argument before
            # its kind's own checks: an unset register (its var_off unknown) is "variable ?
            # access", a ctx pointer moved back is "negative offset ctx ptr"
            if reg.type == NOT_INIT:        # pybpf's unset register holds no var_off
                chk.error("variable ? access var_off=(0x0; 0xffffffffffffffff) disallowed")
            release = protos.KF_RELEASE in proto.kfunc_flags and reg.ref_obj_id
            check_func_arg_reg_off(chk, reg, regno, ARG_DONTCARE,
                                   frozenset({protos.OBJ_RELEASE} if release else ()))
        if base in (protos.KF_ARG_SCALAR, protos.KF_ARG_CONST):
            if reg.type != SCALAR_VALUE:
                chk.error(f"R{regno} is not a scalar", errno.EINVAL)
            if base == protos.KF_ARG_CONST and not reg.var.is_const():
                chk.error(f"R{regno} must be a known constant", errno.EINVAL)
            if base == protos.KF_ARG_CONST:
                chk.mark_precise(regno)
            if name in (graph.OBJ_NEW, graph.PERCPU_NEW):
                meta["obj_new_type"] = reg.var.const_value()
        elif name in graph.NAMES:
            continue                            # verifier/graph.py checks them below
        elif base == protos.KF_ARG_PTR_TO_MAP:
            if reg.type != CONST_PTR_TO_MAP:
                chk.error(f"pointer in R{regno} isn't map pointer", errno.EINVAL)
            check_func_arg_reg_off(chk, reg, regno, ARG_DONTCARE, frozenset())
        elif base == protos.KF_ARG_PTR_TO_CTX:
            if reg.type != PTR_TO_CTX:
                chk.error(f"arg#{i} expected pointer to ctx, but got {reg.type_str()}",
                          errno.EINVAL)
        elif base == protos.KF_ARG_PTR_TO_DYNPTR:
            want = {"bpf_dynptr_from_skb": dynptr.SKB, "bpf_dynptr_from_xdp": dynptr.XDP,
                    "bpf_dynptr_from_skb_meta": dynptr.SKB_META}.get(name)
            clone_ref = 0
            if name == "bpf_dynptr_clone" and protos.MEM_UNINIT in kflags:
                # the clone is of its parent's type and shares a refcounted parent's reference
                want, _, clone_ref = meta["dynptr"]
            dynptr.process_dynptr_func(
                chk, regno, pc, uninit=protos.MEM_UNINIT in kflags,
                rdonly=reg.type == CONST_PTR_TO_DYNPTR, want_type=want, meta=meta,
                clone_ref_obj_id=clone_ref)
            if i == 0:
                meta["first_dynptr"] = meta.get("dynptr")
        elif base == protos.KF_ARG_PTR_TO_MEM_SIZE:
            # a buffer and its constant size (``__opt`` buffers may be NULL)
            size_reg = chk.check_reg_read(regno + 1)
            if not (_is_null(reg) and protos.PTR_MAYBE_NULL in kflags):
                # check_kfunc_mem_size_reg: a read then a write, neither in raw mode
                from pybpf.errors import VerifierError
                try:
                    chk.mem.check_mem_size_reg(chk, regno, regno + 1, False, True)
                    chk.mem.check_mem_size_reg(chk, regno, regno + 1, True, True)
                except VerifierError:
                    chk.error(f"arg#{i} arg#{i + 1} memory, len pair leads to invalid memory "
                              "access")
            if size_reg.type != SCALAR_VALUE or not size_reg.var.is_const():
                chk.error(f"R{regno + 1} must be a known constant", errno.EINVAL)
            meta["const_size"] = size_reg.var.const_value()
        elif base == protos.KF_ARG_PTR_TO_ITER:
            iters.process_iter_arg(chk, regno, proto, pc, meta)
        else:
            chk.error(f"verifier bug: unsupported kfunc arg kind {kind}", errno.EFAULT)
    # (a map that is not an arena is the kfunc's business at run time: NULL, nothing or
    # -EINVAL, as in the kernel, whose KF_ARG_PTR_TO_MAP check wants any map pointer)
    if name in graph.NAMES:
        graph.check_args(chk, pc, proto, meta)
        if name == graph.RB_ADD:
            graph.rbtree_callback(chk, pc, meta)     # before the call clobbers r1-r5
    special_kfuncs.check_rcu(chk, proto)
    if name in DYNPTR_WRITERS and meta.get("first_dynptr") and \
            meta["first_dynptr"][0] in (dynptr.SKB, dynptr.SKB_META):
        # a copy or fill into an skb (or its metadata) dynptr may write through
        # __bpf_dynptr_write, which may unclone the skb: Linux 6.18 as measured here
        # invalidates every packet pointer and packet slice, as after bpf_dynptr_write
        # (tests/verifier/dynptr/memset_keeps_slice.vt, skb_meta_memset_drops_slice.vt);
        # an xdp destination or an skb source keeps them
        clear_all_pkt_pointers(chk)
    if proto.name == special_kfuncs.THROW:
        special_kfuncs.check_throw(chk)
        return False                # an exception exit: this path ends here
    regs = chk.state.cur.regs
    for r in CALLER_SAVED:
        regs[r] = NOT_INIT_REG
    if name in graph.NAMES:
        r0 = graph.finish_call(chk, pc, proto, meta)
        _set_r0(chk, r0 if r0 is not None else NOT_INIT_REG)
    elif special_kfuncs.set_return(chk, proto):
        pass
    elif name in ("bpf_dynptr_slice", "bpf_dynptr_slice_rdwr"):
        rdwr = name == "bpf_dynptr_slice_rdwr"
        if rdwr:
            # Linux 6.18 as measured here refuses every bpf_dynptr_slice_rdwr call after its
            # arguments, whatever the program type (xdp and sched_cls included)
            chk.error("bpf_dynptr_slice_rdwr() is not allowed", errno.EPERM)
        _set_r0(chk, dynptr.slice_reg(chk, meta, meta["const_size"], not rdwr, name))
    elif proto.ret == protos.RET_VOID:
        _set_r0(chk, NOT_INIT_REG)
    elif protos.KF_ITER_NEXT in proto.kfunc_flags:
        iters.set_next_return(chk, proto, meta)
        iters.process_iter_next_call(chk, pc, meta)
    else:       # int, and void * (an arena address): unknown scalars
        _set_r0(chk, Reg.scalar(None, chk.origin(name)))


# kfuncs whose first argument is a dynptr they write into
DYNPTR_WRITERS = frozenset({"bpf_dynptr_copy", "bpf_dynptr_memset"})
# check_kfunc_args never runs check_reg_arg on an argument: an unset register fails the first
# check its kind meets (measured: tests/verifier/strings, dynptr, iters, special)
_KF_NO_READ_CHECK = frozenset({protos.KF_ARG_SCALAR, protos.KF_ARG_CONST,
                               protos.KF_ARG_PTR_TO_MAP, protos.KF_ARG_PTR_TO_CTX,
                               protos.KF_ARG_PTR_TO_DYNPTR, protos.KF_ARG_PTR_TO_ITER,
                               protos.KF_ARG_PTR_TO_MEM_SIZE})
# the pointer kinds whose offsets check_func_arg_reg_off checks first (a map pointer's after
# "isn't map pointer"; graph kfuncs: verifier/graph.py)
_KF_REG_OFF_FIRST = frozenset({protos.KF_ARG_PTR_TO_CTX, protos.KF_ARG_PTR_TO_DYNPTR,
                               protos.KF_ARG_PTR_TO_ITER, protos.KF_ARG_PTR_TO_MEM,
                               protos.KF_ARG_PTR_TO_MEM_SIZE})
# pointer kinds refused as "Possibly NULL pointer passed to trusted arg" when NULL
_KF_TRUSTED = frozenset({protos.KF_ARG_PTR_TO_CTX, protos.KF_ARG_PTR_TO_DYNPTR,
                         protos.KF_ARG_PTR_TO_ITER})


# --- BPF-to-BPF calls ----------------------------------------------------------------------------
def func_linkage(prog, start: int) -> str:
    """"global" or "static" for the subprogram starting at slot ``start`` (BTF func_info)."""
    info = (getattr(prog, "func_info", None) or {}).get(start)
    return getattr(info, "linkage", "static") if info is not None else "static"


def is_global(chk, start: int) -> bool:
    return start != 0 and func_linkage(chk.prog, start) == "global"


def check_subprog_call(chk, pc: int, insn) -> int:
    """check_func_call: enter a static subprogram (a new frame), or check a global one's
    arguments and go on. Returns the next pc."""
    target = pc + 1 + insn.imm
    subprog = chk.subprog_index(target)
    caller = chk.state.cur
    if is_global(chk, target):
        spin_lock.check_global_call(chk)
        name = chk.prog.functions.get(target, f"func#{subprog}")
        err = _check_global_args(chk, target)
        if err is not None:
            if err:
                chk.log.line(err)
            chk.error(f"Caller passes invalid args into func#{subprog} ('{name}')",
                      errno.EINVAL)
        if getattr(chk, "verifies_globals", False):
            chk.log.line(f"Func#{subprog} ('{name}') is global and assumed valid.")
            called = chk.__dict__.setdefault("global_funcs_called", set())
            called.add(target)
            for r in CALLER_SAVED:
                caller.regs[r] = NOT_INIT_REG
            caller.regs[0] = Reg.scalar(None, chk.origin(f"global function {name}"))
            if subprog_changes_pkt_data(chk, target):
                clear_all_pkt_pointers(chk)
            return pc + 1
        # a main loop that does not verify global functions on their own: enter this one like
        # a static function (sound: its body is checked with the caller's arguments)
    f = chk.push_frame(pc, subprog)
    for r in CALLER_SAVED:
        f.regs[r] = caller.regs[r]
        caller.regs[r] = NOT_INIT_REG
    return target


def prepare_func_exit(chk, pc: int) -> int:
    """prepare_func_exit: leave a subprogram or callback frame; returns the caller's next pc
    (a callback returns to its call site, which is processed again)."""
    st = chk.state
    callee = st.cur
    r0 = callee.regs[0]
    if r0.type == PTR_TO_STACK:
        chk.error("cannot return stack pointer to the caller", errno.EINVAL)
    if callee.in_callback_fn:
        if r0.type != SCALAR_VALUE:             # also NOT_INIT: no check_reg_arg before this
            chk.error("R0 not a scalar value")
        chk.mark_precise(0)                 # the range is enforced on its value
        lo, hi = callee.callback_ret_range or (0, 1)
        v = r0.var
        if v.smin < lo or v.smax > hi:
            parts = []
            if v.smin > bounds.S64_MIN:
                parts.append(f" smin={v.smin}")
            if v.smax < bounds.S64_MAX:
                parts.append(f" smax={v.smax}")
            desc = "".join(parts) or " unknown scalar value"
            chk.error(f"At callback return the register R0 has{desc} should have been in "
                      f"[{lo}, {hi}]", errno.EINVAL)
    st.frames.pop()
    caller = st.cur
    if callee.in_callback_fn:
        # widen imprecise scalars against the previous visit of the call site, so that a
        # callback counting in its ctx converges (the kernel's prepare_func_exit does as
        # process_iter_next_call does)
        from .check import _widen
        from .iters import _prev_entry
        prev = _prev_entry(st, callee.callsite)
        if prev is not None and len(prev.frames) == len(st.frames):
            _widen(prev, st)
        return callee.callsite
    caller.regs[0] = r0
    return callee.callsite + 1


# --- callbacks (bpf_loop) ------------------------------------------------------------------------
def calls_callback(chk, pc: int) -> bool:
    """Whether the instruction at ``pc`` calls a callback (the main loop makes it a prune point
    and prunes a state there that is within one still being explored, as the kernel's
    is_state_visited does for calls_callback instructions)."""
    entry = chk.form_at.get(pc)
    if entry is None:
        return False
    form, insn = entry
    if form.kind == "call" and form.op == "kfunc":      # bpf_rbtree_add's less
        proto = proto_of(chk.env.kfunc(insn.imm))
        return proto is not None and proto.name == graph.RB_ADD
    return form.kind == "call" and form.op == "helper" and insn.imm in CALLBACK_HELPERS


def _loop_callback(chk, pc: int, meta: CallMeta) -> None:
    """bpf_loop: push_callback_call with set_loop_callback_state, ``callback(index, ctx)``,
    while fewer iterations than ``nr_loops`` (r1's maximum) were unrolled."""
    caller = chk.state.cur
    depth = getattr(caller, "callback_depth", 0)
    nr = caller.regs[1]
    if nr.type == SCALAR_VALUE:
        chk.mark_precise(1)     # pybpf stops unrolling at nr_loops' maximum: it must hold
    if nr.type == SCALAR_VALUE and depth >= nr.var.umax:
        _set_depth(caller, 0)
        return

    def setup(callee, caller_regs):
        callee.regs[1] = Reg.scalar(None, chk.origin("bpf_loop's index"))
        callee.regs[2] = caller_regs[3]
    _push_callback(chk, pc, meta, setup, count_depth=True)


def _map_elem_callback(chk, pc: int, meta: CallMeta) -> None:
    """bpf_for_each_map_elem: set_map_elem_callback_state, ``callback(map, key, value, ctx)``."""
    m = meta.map
    if m is None or m.type not in _FOR_EACH_MAPS:
        chk.error("callback function not allowed for map", errno.ENOTSUPP
                  if hasattr(errno, "ENOTSUPP") else 524)
    # push_callback_call every time, as the kernel does: the walk ends where is_state_visited
    # prunes the call site (imprecise scalars compare equal, so a count kept in ctx converges;
    # a precise one never does and runs into the 1,000,000-instruction limit, as in the kernel)
    def setup(callee, caller_regs):
        callee.regs[1] = caller_regs[1]
        callee.regs[2] = Reg.pointer(PTR_TO_MAP_KEY, map=m, origin=chk.origin("the element's key"))
        callee.regs[3] = Reg.pointer(PTR_TO_MAP_VALUE, map=m,
                                     origin=chk.origin("the element's value"))
        callee.regs[4] = caller_regs[3]
    # push_callback_call counts callback_depth for every sync callback, not only bpf_loop's
    _push_callback(chk, pc, meta, setup, count_depth=True)


def _push_callback(chk, pc: int, meta: CallMeta, setup, count_depth: bool) -> None:
    """push_callback_call: a pending path that runs the callback in a new frame (r1-r5 from
    ``setup``, ``in_callback_fn``, return range [0, 1]) and comes back to this call site;
    this path goes on after the call."""
    st = chk.state
    caller = st.cur
    if meta.subprog is None:
        chk.error("verifier bug: callback helper without a callback", errno.EFAULT)
    start = meta.subprog
    cb = st.copy()
    if len(cb.frames) >= isa.MAX_CALL_FRAMES:
        chk.error(f"the call stack of {len(cb.frames) + 1} frames is too deep", errno.E2BIG)
    callee = FuncState(len(cb.frames), chk.subprog_index(start), pc)
    callee.regs[10] = Reg.pointer(PTR_TO_STACK, frameno=callee.frameno)
    setup(callee, cb.cur.regs)
    callee.in_callback_fn = True
    callee.callback_ret_range = (0, 1)
    if count_depth:
        _set_depth(cb.cur, getattr(caller, "callback_depth", 0) + 1)
    try:            # the unrolled iteration: states of different iterations are no loop
        cb.callback_unroll_depth += 1
    except AttributeError:
        pass
    cb.frames.append(callee)
    cb.insn_idx = pc
    if count_depth:
        _set_depth(caller, 0)
    chk.push_branch(cb, start)


def _set_depth(frame, value: int) -> None:
    try:
        frame.callback_depth = value
    except AttributeError:      # FuncState without the field: iterations are not counted
        pass


# --- global functions ----------------------------------------------------------------------------
_CTX_STRUCTS = {"socket_filter": "__sk_buff", "sched_cls": "__sk_buff", "cgroup_skb": "__sk_buff",
                "lwt_in": "__sk_buff", "xdp": "xdp_md", "kprobe": "pt_regs"}


class GlobalArg:
    """One parameter of a global function as btf_prepare_func_args reads it: ``kind`` is
    "scalar", "ctx", "arena" or "mem" (``mem_size`` bytes, ``nullable`` unless __arg_nonnull);
    ``error`` is the kernel's complaint when the parameter cannot be handled."""

    __slots__ = ("kind", "mem_size", "nullable", "error")

    def __init__(self, kind: str, mem_size: int = 0, nullable: bool = True, error: str = ""):
        self.kind, self.mem_size, self.nullable, self.error = kind, mem_size, nullable, error


def global_func_args(prog, prog_type: str, start: int) -> list[GlobalArg]:
    """The parameters of the global function at ``start`` (from its BTF FUNC type)."""
    info = prog.func_info[start]
    btf = getattr(prog, "btf", None)
    members = btf.func_params(info.btf_id) if btf is not None else ()
    out = []
    for i, (pname, ctype) in enumerate(info.params):
        tags = set(info.arg_tags.get(i, ()))
        if "arg:arena" in tags:
            out.append(GlobalArg("arena"))
            continue
        t = btf.resolve(members[i].type) if btf is not None and i < len(members) else None
        is_ptr = t.kind == "ptr" if t is not None else ctype.strip().endswith("*")
        if not is_ptr:
            out.append(GlobalArg("scalar"))
            continue
        pointee = btf.resolve(t.type) if t is not None else None
        name = pointee.name if pointee is not None else \
            ctype.replace("struct", "").strip(" *")
        if "arg:ctx" in tags or (pointee is None or pointee.kind == "struct") and \
                name == _CTX_STRUCTS.get(prog_type):
            out.append(GlobalArg("ctx"))
            continue
        try:
            size = btf.size_of(t.type) if btf is not None else 0
        except Exception:           # void *, function pointers...: no size
            size = -1
        if size <= 0:
            out.append(GlobalArg("mem", error=f"arg#{i} reference type('{ctype}') size cannot "
                                              f"be determined: -22"))
            continue
        out.append(GlobalArg("mem", size, nullable="arg:nonnull" not in tags))
    return out


def _check_global_args(chk, start: int) -> str | None:
    """btf_check_subprog_call for a global function: the reason its arguments do not match
    (the log line the kernel prints before ``Caller passes invalid args``; "" when a memory
    check already logged it), or None."""
    from pybpf.errors import VerifierError
    for i, arg in enumerate(global_func_args(chk.prog, chk.prog_type, start)):
        regno = i + 1
        reg = chk.reg(regno)
        if arg.error:
            return arg.error
        if arg.kind == "scalar":
            if reg.type != SCALAR_VALUE:
                return f"R{regno} is not a scalar"
        elif arg.kind == "ctx":
            if reg.type != PTR_TO_CTX:
                return f"arg#{i} expects pointer to ctx"
        elif arg.kind == "arena":
            if reg.type not in (PTR_TO_ARENA, SCALAR_VALUE):
                return f"R{regno} is not a pointer to arena or scalar."
        else:
            if reg.type == NOT_INIT:
                return f"R{regno} !read_ok"
            if _is_null(reg):
                continue
            try:
                check_func_arg_reg_off(chk, reg, regno, ARG_DONTCARE, frozenset())
                saved = reg
                chk.set_reg(regno, reg.replace(flags=reg.flags & ~PTR_MAYBE_NULL))
                try:
                    chk.mem.check_helper_mem_access(chk, regno, arg.mem_size, False, True)
                    chk.mem.check_helper_mem_access(chk, regno, arg.mem_size, True, True)
                finally:
                    chk.set_reg(regno, saved)
            except VerifierError:
                return ""               # check_helper_mem_access logged its own line
            if not arg.nullable and reg.flags & PTR_MAYBE_NULL:
                return f"arg#{i} is expected to be non-NULL"
    return None


def global_func_entry_regs(chk, start: int) -> dict[int, Reg]:
    """The registers a global function starts with when verified on its own (the kernel's
    do_check_common for a subprogram): r1-r5 by parameter kind (ctx pointer, unknown scalar,
    PTR_TO_MEM of the pointee's size or NULL with a fresh id, arena arguments as unknown
    scalars the callee must cast)."""
    out: dict[int, Reg] = {}
    info = chk.prog.func_info[start]
    for i, arg in enumerate(global_func_args(chk.prog, chk.prog_type, start)):
        origin = (start, f"argument {info.params[i][0]}")
        if arg.kind == "ctx":
            out[i + 1] = Reg.pointer(PTR_TO_CTX, origin=origin)
        elif arg.kind == "mem" and not arg.error:
            out[i + 1] = Reg.pointer(PTR_TO_MEM, PTR_MAYBE_NULL if arg.nullable else 0,
                                     mem_size=arg.mem_size, origin=origin,
                                     id=chk.new_id() if arg.nullable else 0)
        else:
            out[i + 1] = Reg.scalar(None, origin)
    return out
