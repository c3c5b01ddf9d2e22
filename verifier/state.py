"""The verifier's abstract state, named as the kernel names it (include/linux/bpf_verifier.h).

* :class:`RegType` base register types and the flag bits (``PTR_MAYBE_NULL``, ``MEM_RDONLY``...)
  that the kernel ORs onto them;
* :class:`Reg` one register (``struct bpf_reg_state``): type, flags, fixed offset ``off``, the
  scalar value or variable offset ``var`` (a :class:`bounds.Scalar`), ids, map, packet range;
  Regs are immutable by convention: change one with :meth:`Reg.replace` and store the result;
* :class:`Slot` one 8-byte stack slot (``struct bpf_stack_state``): 8 slot-type characters as the
  kernel prints them (``?`` invalid, ``r`` spill, ``m`` misc, ``0`` zero...) and the spilled Reg;
* :class:`FuncState` one frame (r0-r10, its stack by slot index, callsite, subprogram);
* :class:`VerifierState` the frames of one path, with ``copy()`` and the pruning comparison
  (the kernel's states_equal / regsafe / stacksafe) in :func:`states_equal`.
"""
from __future__ import annotations

from enum import IntEnum

from . import bounds


class RegType(IntEnum):
    """Base register types (enum bpf_reg_type, without the flag bits)."""

    NOT_INIT = 0
    SCALAR_VALUE = 1
    PTR_TO_CTX = 2
    CONST_PTR_TO_MAP = 3
    PTR_TO_MAP_VALUE = 4
    PTR_TO_MAP_KEY = 5
    PTR_TO_STACK = 6
    PTR_TO_PACKET_META = 7
    PTR_TO_PACKET = 8
    PTR_TO_PACKET_END = 9
    PTR_TO_FLOW_KEYS = 10
    PTR_TO_SOCKET = 11
    PTR_TO_SOCK_COMMON = 12
    PTR_TO_TCP_SOCK = 13
    PTR_TO_TP_BUFFER = 14
    PTR_TO_XDP_SOCK = 15
    PTR_TO_BTF_ID = 16
    PTR_TO_MEM = 17
    PTR_TO_ARENA = 18
    PTR_TO_BUF = 19
    PTR_TO_FUNC = 20
    CONST_PTR_TO_DYNPTR = 21


globals().update(RegType.__members__)

# Flag bits (enum bpf_type_flag); values are pybpf's own, names the kernel's.
PTR_MAYBE_NULL = 1 << 0
MEM_RDONLY = 1 << 1
MEM_RINGBUF = 1 << 2
MEM_USER = 1 << 3
MEM_PERCPU = 1 << 4
PTR_UNTRUSTED = 1 << 5
MEM_UNINIT = 1 << 6
MEM_ALLOC = 1 << 7
PTR_TRUSTED = 1 << 8
MEM_RCU = 1 << 9
MEM_FIXED_SIZE = 1 << 10
NON_OWN_REF = 1 << 11          # a graph node a lock protects: valid until bpf_spin_unlock
SCALAR_ADD_CONST = 1 << 20     # the kernel's BPF_ADD_CONST id bit: a linked scalar, ``off`` apart

_TYPE_STR = {
    NOT_INIT: "?", SCALAR_VALUE: "scalar", PTR_TO_CTX: "ctx", CONST_PTR_TO_MAP: "map_ptr",
    PTR_TO_MAP_VALUE: "map_value", PTR_TO_STACK: "fp", PTR_TO_PACKET: "pkt",
    PTR_TO_PACKET_META: "pkt_meta", PTR_TO_PACKET_END: "pkt_end", PTR_TO_FLOW_KEYS: "flow_keys",
    PTR_TO_SOCKET: "sock", PTR_TO_SOCK_COMMON: "sock_common", PTR_TO_TCP_SOCK: "tcp_sock",
    PTR_TO_TP_BUFFER: "tp_buffer", PTR_TO_XDP_SOCK: "xdp_sock", PTR_TO_BTF_ID: "ptr_",
    PTR_TO_MEM: "mem", PTR_TO_ARENA: "arena", PTR_TO_BUF: "buf", PTR_TO_FUNC: "func",
    PTR_TO_MAP_KEY: "map_key", CONST_PTR_TO_DYNPTR: "dynptr_ptr",
}
_PREFIX = ((MEM_RDONLY, "rdonly_"), (MEM_RINGBUF, "ringbuf_"), (MEM_USER, "user_"),
           (MEM_PERCPU, "percpu_"), (MEM_RCU, "rcu_"), (PTR_UNTRUSTED, "untrusted_"),
           (PTR_TRUSTED, "trusted_"))

PACKET_TYPES = (PTR_TO_PACKET, PTR_TO_PACKET_META)


def type_str(type_: RegType, flags: int = 0) -> str:
    """The kernel's reg_type_str: ``map_value_or_null``, ``rdonly_mem``, ``fp``..."""
    prefix = "".join(p for bit, p in _PREFIX if flags & bit)
    post = ("or_null_" if type_ == PTR_TO_BTF_ID else "_or_null") if flags & PTR_MAYBE_NULL else ""
    return prefix + _TYPE_STR[type_] + post


_new_reg = object.__new__


class Reg:
    """One register's abstract value (struct bpf_reg_state). Treat as immutable."""

    __slots__ = ("type", "flags", "off", "var", "id", "ref_obj_id", "map", "range", "mem_size",
                 "frameno", "subprog", "origin", "precise", "dynptr_id", "btf_type")

    def __init__(self, type_: RegType = NOT_INIT, flags: int = 0, off: int = 0, var=None,
                 id: int = 0, ref_obj_id: int = 0, map=None, range: int = 0, mem_size: int = 0,
                 frameno: int = 0, subprog: int = 0, origin=None) -> None:
        self.type = type_
        self.flags = flags
        self.off = off
        self.var = var if var is not None else _ZERO
        self.id = id
        self.ref_obj_id = ref_obj_id
        self.map = map              # verifier.env.MapInfo for map pointers / map values
        self.range = range          # packet: bytes proven readable from (pkt + off)
        self.mem_size = mem_size    # PTR_TO_MEM / PTR_TO_BUF size
        self.frameno = frameno      # PTR_TO_STACK: the frame it points into
        self.subprog = subprog      # PTR_TO_FUNC: the subprogram's start slot
        self.origin = origin        # (pc, what): where the type came from, for explain()
        self.precise = False        # a scalar used where its value matters (no may_goto widening)
        self.dynptr_id = 0          # a dynptr slice: the id of the dynptr it came from
        self.btf_type = None        # PTR_TO_BTF_ID | MEM_ALLOC: its graph.AllocType

    def replace(self, **kw) -> "Reg":
        # field by field rather than a loop over __slots__ with getattr/setattr: this copy is
        # the verifier's most frequent operation (a third of its time on a large program)
        r = _new_reg(Reg)
        r.type, r.flags, r.off, r.var, r.id = self.type, self.flags, self.off, self.var, self.id
        r.ref_obj_id, r.map, r.range, r.mem_size = self.ref_obj_id, self.map, self.range, \
            self.mem_size
        r.frameno, r.subprog, r.origin, r.precise = self.frameno, self.subprog, self.origin, \
            self.precise
        r.dynptr_id, r.btf_type = self.dynptr_id, self.btf_type
        if kw:
            for k, v in kw.items():
                if k == "type_":
                    r.type = v
                elif k in _REPLACEABLE:     # other names are ignored, as they always were
                    setattr(r, k, v)
        return r

    # -- constructors ------------------------------------------------------------------------
    @staticmethod
    def scalar(value=None, origin=None) -> "Reg":
        """A scalar: ``value`` a bounds.Scalar, an int constant, or None for unknown."""
        if value is None:
            value = bounds.Scalar.unknown()
        elif isinstance(value, int):
            value = bounds.Scalar.const(value)
        return Reg(SCALAR_VALUE, var=value, origin=origin)

    @staticmethod
    def pointer(type_: RegType, flags: int = 0, off: int = 0, origin=None, **kw) -> "Reg":
        return Reg(type_, flags, off, bounds.Scalar.const(0), origin=origin, **kw)

    # -- queries -----------------------------------------------------------------------------
    @property
    def is_scalar(self) -> bool:
        return self.type == SCALAR_VALUE

    @property
    def is_pointer(self) -> bool:
        return self.type not in (NOT_INIT, SCALAR_VALUE)

    @property
    def maybe_null(self) -> bool:
        return bool(self.flags & PTR_MAYBE_NULL)

    def is_const(self) -> bool:
        return self.type == SCALAR_VALUE and self.var.is_const()

    def const_value(self) -> int:
        return self.var.const_value()

    def type_str(self) -> str:
        return type_str(self.type, self.flags)

    def same_pointer(self, other: "Reg") -> bool:
        """Same base type, flags and object (the kernel's check before comparing offsets)."""
        return (self.type == other.type and self.flags == other.flags
                and self.map is other.map and self.frameno == other.frameno
                and self.btf_type is other.btf_type)

    def __repr__(self) -> str:
        return f"Reg({self.type_str()}, off={self.off}, var={self.var}, id={self.id})"



# Reg.replace copies these fields one by one: a new field must be added there too
_REPLACEABLE = frozenset(Reg.__slots__) - {"type"}
if set(Reg.__slots__) != {"type", "flags", "off", "var", "id", "ref_obj_id", "map", "range",
                          "mem_size", "frameno", "subprog", "origin", "precise", "dynptr_id",
                          "btf_type"}:
    raise AssertionError("Reg.replace does not copy every field of Reg")

_ZERO = bounds.Scalar.const(0) if hasattr(bounds, "Scalar") else None
NOT_INIT_REG = Reg()

# Stack slot types as print_verifier_state prints them (slot_type_char).
STACK_INVALID, STACK_SPILL, STACK_MISC, STACK_ZERO = "?", "r", "m", "0"
STACK_DYNPTR, STACK_ITER, STACK_IRQ_FLAG = "d", "i", "f"
BPF_REG_SIZE = 8
MAX_BPF_STACK = 512


class Slot:
    """One 8-byte stack slot: ``types`` (8 chars) and ``spilled`` (the spilled Reg or None).

    ``types[i]`` is the kernel's ``slot_type[i]``: byte ``fp - 8 * spi - 1 - i`` (index 0 is the
    slot's highest address, index 7 its lowest), and the string prints as the kernel prints it.
    """

    __slots__ = ("types", "spilled")

    def __init__(self, types: str = STACK_INVALID * 8, spilled: Reg | None = None) -> None:
        self.types = types
        self.spilled = spilled

    def __repr__(self) -> str:
        return f"Slot({self.types!r}, {self.spilled!r})"


EMPTY_SLOT = Slot()


class FuncState:
    """One frame (struct bpf_func_state): registers, stack slots, where it was called from.

    ``stack`` maps slot index ``spi`` (0 = fp-8..fp-1, 63 = fp-512..fp-505) to a Slot; slots
    never written are absent (STACK_INVALID)."""

    __slots__ = ("regs", "stack", "callsite", "frameno", "subprogno", "allocated_stack",
                 "in_callback_fn", "callback_ret_range", "callback_depth")

    def __init__(self, frameno: int = 0, subprogno: int = 0, callsite: int = -1) -> None:
        self.regs: list[Reg] = [NOT_INIT_REG] * 11
        self.stack: dict[int, Slot] = {}
        self.callsite = callsite
        self.frameno = frameno
        self.subprogno = subprogno
        self.allocated_stack = 0
        self.in_callback_fn = False
        self.callback_ret_range = None
        self.callback_depth = 0

    def copy(self) -> "FuncState":
        f = FuncState.__new__(FuncState)
        f.regs = list(self.regs)
        f.stack = dict(self.stack)
        f.callsite = self.callsite
        f.frameno = self.frameno
        f.subprogno = self.subprogno
        f.allocated_stack = self.allocated_stack
        f.in_callback_fn = self.in_callback_fn
        f.callback_ret_range = self.callback_ret_range
        f.callback_depth = self.callback_depth
        return f


class VerifierState:
    """The state of one path (struct bpf_verifier_state): its frames, innermost last."""

    __slots__ = ("frames", "refs", "branch_path", "loop_entry", "may_goto_depth",
                 "active_lock", "insn_idx", "parent", "active_rcu_lock", "hist",
                 "first_insn_idx", "last_insn_idx", "hist_cnt", "hist_tag")

    def __init__(self) -> None:
        self.frames: list[FuncState] = [FuncState()]
        self.refs: dict[int, int] = {}        # acquired reference id -> pc that acquired it
        self.branch_path = None               # (pc, taken, earlier) cons list, for explain()
        self.may_goto_depth = 0
        self.active_lock = None
        self.active_rcu_lock = False          # inside bpf_rcu_read_lock() .. unlock()
        self.loop_entry = None
        self.insn_idx = 0
        self.parent = None
        self.hist = None                      # jump history since first_insn_idx (precision.py)
        self.hist_cnt = 0                     # its entries (the kernel's jmp_history_cnt)
        self.hist_tag = -1                    # the processed-insn count its newest entry is for
        self.first_insn_idx = 0               # where this state's history starts
        self.last_insn_idx = -1               # a checkpoint: the instruction before it

    @property
    def cur(self) -> FuncState:
        return self.frames[-1]

    @property
    def curframe(self) -> int:
        return len(self.frames) - 1

    def copy(self) -> "VerifierState":
        s = VerifierState.__new__(VerifierState)
        s.frames = [f.copy() for f in self.frames]
        s.refs = dict(self.refs)
        s.branch_path = self.branch_path
        s.may_goto_depth = self.may_goto_depth
        s.active_lock = self.active_lock
        s.active_rcu_lock = self.active_rcu_lock
        s.loop_entry = self.loop_entry
        s.insn_idx = self.insn_idx
        s.parent = self.parent
        s.hist = self.hist
        s.hist_cnt = self.hist_cnt
        s.hist_tag = self.hist_tag
        s.first_insn_idx = self.first_insn_idx
        s.last_insn_idx = self.last_insn_idx
        return s

    def all_regs(self):
        """(frame, regno or None, slot spi or None, Reg) of every register and spilled reg."""
        for f in self.frames:
            for i, r in enumerate(f.regs):
                yield f, i, None, r
            for spi, slot in f.stack.items():
                if slot.spilled is not None:
                    yield f, None, spi, slot.spilled

    def map_regs(self, fn) -> None:
        """Replace every register and spilled register ``r`` with ``fn(r)`` (None = keep)."""
        for f in self.frames:
            for i, r in enumerate(f.regs):
                n = fn(r)
                if n is not None:
                    f.regs[i] = n
            for spi, slot in list(f.stack.items()):
                if slot.spilled is not None:
                    n = fn(slot.spilled)
                    if n is not None:
                        f.stack[spi] = Slot(slot.types, n)


# --- pruning: is a new state contained in one already explored? ------------------------------
def _check_ids(old_id: int, cur_id: int, idmap: dict) -> bool:
    if not old_id and not cur_id:
        return True
    if not old_id or not cur_id:
        return False
    seen = idmap.get(old_id)
    if seen is None:
        if cur_id in idmap.get("_cur", ()):
            return False
        idmap[old_id] = cur_id
        idmap.setdefault("_cur", set()).add(cur_id)
        return True
    return seen == cur_id


def _check_scalar_ids(old_id: int, cur_id: int, idmap: dict) -> bool:
    """check_scalar_ids: scalars without an id are each unique."""
    if not old_id or not cur_id:
        n = idmap.get("_tmp", 1 << 40)
        if not old_id:
            old_id, n = n, n + 1
        if not cur_id:
            cur_id, n = n, n + 1
        idmap["_tmp"] = n
    return _check_ids(old_id, cur_id, idmap)


def _range_within(old, cur) -> bool:
    return bounds.within(old, cur)


# How states_equal compares (enum exact_level): NOT_EXACT lets an imprecise scalar of the old
# state match any scalar; RANGE_WITHIN compares every scalar's range (a loop state whose
# precision marks are not final yet); EXACT wants the same values (infinite loop detection).
NOT_EXACT, EXACT, RANGE_WITHIN = 0, 1, 2


def regsafe(rold: Reg, rcur: Reg, idmap: dict, exact: int) -> bool:
    """The kernel's regsafe: whether ``rcur`` is within ``rold`` for every later use."""
    if rold is rcur:
        return True
    if rold.type == NOT_INIT:
        return exact != EXACT or rcur.type == NOT_INIT
    if rcur.type == NOT_INIT:
        return False
    if exact == EXACT:
        return _regs_exact(rold, rcur, idmap)
    if rold.type == SCALAR_VALUE and rcur.type == SCALAR_VALUE and not rold.precise and \
            exact == NOT_EXACT:
        return True              # no path after the old state used its value (nor its links)
    if rold.type != rcur.type or rold.flags != rcur.flags:
        return False
    t = rold.type
    if t == SCALAR_VALUE:
        if (rold.flags ^ rcur.flags) & SCALAR_ADD_CONST or \
                (rold.flags & SCALAR_ADD_CONST and rold.off != rcur.off):
            return False
        return _range_within(rold.var, rcur.var) and _check_scalar_ids(rold.id, rcur.id, idmap)
    if t in (PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_BUF, PTR_TO_TP_BUFFER):
        return (rold.off == rcur.off and rold.map is rcur.map and rold.mem_size == rcur.mem_size
                and _range_within(rold.var, rcur.var) and _check_ids(rold.id, rcur.id, idmap)
                and _check_ids(rold.ref_obj_id, rcur.ref_obj_id, idmap))
    if t in PACKET_TYPES:
        if rold.range > rcur.range or rold.off != rcur.off:
            return False
        if not _check_ids(rold.id, rcur.id, idmap):
            return False
        return _range_within(rold.var, rcur.var)
    if t == PTR_TO_ARENA:
        return True
    return _regs_exact(rold, rcur, idmap) and rold.frameno == rcur.frameno


def _regs_exact(a: Reg, b: Reg, idmap: dict) -> bool:
    return (a.type == b.type and a.flags == b.flags and a.off == b.off and a.map is b.map
            and a.range == b.range and a.mem_size == b.mem_size and a.frameno == b.frameno
            and a.subprog == b.subprog and a.btf_type is b.btf_type
            and _same_scalar(a.var, b.var)
            and _check_ids(a.id, b.id, idmap) and _check_ids(a.ref_obj_id, b.ref_obj_id, idmap))


def _same_scalar(a, b) -> bool:
    return a is b or (a.tv == b.tv and a.tm == b.tm and a.umin == b.umin and
                      a.umax == b.umax and a.smin == b.smin and a.smax == b.smax and
                      a.u32_min == b.u32_min and a.u32_max == b.u32_max and
                      a.s32_min == b.s32_min and a.s32_max == b.s32_max)


def stacksafe(old: FuncState, cur: FuncState, idmap: dict, exact: bool) -> bool:
    """The kernel's stacksafe for root: INVALID (and MISC) bytes in the old state match
    anything; spilled registers must be regsafe."""
    for spi in set(old.stack) | set(cur.stack):
        o = old.stack.get(spi, EMPTY_SLOT)
        c = cur.stack.get(spi, EMPTY_SLOT)
        if o is c:
            continue
        if exact == EXACT:
            if o.types != c.types:
                return False
            if (o.spilled is None) != (c.spilled is None):
                return False
            if STACK_ITER in o.types:
                if not _iters_equal(o, c, idmap):
                    return False
                continue
            if STACK_DYNPTR in o.types:
                if not _dynptrs_equal(o, c, idmap):
                    return False
                continue
            if o.spilled is not None and not _regs_exact(o.spilled, c.spilled, idmap):
                return False
            continue
        if o.types == _SPILL8 and c.types == _MISC8 and o.spilled is not None and \
                o.spilled.type == SCALAR_VALUE:
            # a 64-bit scalar spill against eight MISC bytes (an unbound scalar when read):
            # compared as registers (scalar_reg_for_stack)
            if not regsafe(o.spilled, _UNBOUND, idmap, exact):
                return False
            continue
        for i in range(BPF_REG_SIZE):
            ot, ct = o.types[i], c.types[i]
            if ot == STACK_INVALID or ot == STACK_MISC:
                continue
            if ot == STACK_ZERO and ct == STACK_ZERO:
                continue
            if ot == STACK_ZERO and ct == STACK_SPILL and c.spilled is not None and \
                    c.spilled.type == SCALAR_VALUE and c.spilled.var.is_const() and \
                    c.spilled.var.const_value() == 0:
                continue
            if ot != ct:
                return False
        if o.spilled is not None and STACK_SPILL in o.types:
            if c.spilled is None or not regsafe(o.spilled, c.spilled, idmap, exact):
                return False
        if STACK_ITER in o.types and not _iters_equal(o, c, idmap):
            return False
        if STACK_DYNPTR in o.types and not _dynptrs_equal(o, c, idmap):
            return False
    return True


_SPILL8, _MISC8 = STACK_SPILL * 8, STACK_MISC * 8
_UNBOUND = Reg(SCALAR_VALUE, var=bounds.Scalar.unknown())


def _dynptrs_equal(o: Slot, c: Slot, idmap: dict) -> bool:
    from .dynptr import dynptrs_equal
    return dynptrs_equal(o, c, lambda a, b: _check_ids(a, b, idmap))


def _iters_equal(o: Slot, c: Slot, idmap: dict) -> bool:
    from .iters import iters_equal
    return iters_equal(o, c, lambda a, b: _check_ids(a, b, idmap))


def func_states_equal(old: FuncState, cur: FuncState, idmap: dict, exact: int,
                      live: int = 0x7FF) -> bool:
    if old.callsite != cur.callsite:
        return False
    for i, (a, b) in enumerate(zip(old.regs, cur.regs)):
        if live >> i & 1 and not regsafe(a, b, idmap, exact):
            return False
    return stacksafe(old, cur, idmap, exact)


def states_equal(old: VerifierState, cur: VerifierState, exact: int, live: int = 0x7FF,
                 outer_live=None) -> bool:
    """Whether every path from ``cur`` is covered by the exploration from ``old`` (``exact``:
    NOT_EXACT, RANGE_WITHIN or EXACT, as the kernel's enum exact_level). ``live``: the
    innermost frame's registers some later instruction may read (dead ones are ignored, as
    the kernel's clean_live_states does; not for the exact comparison). ``outer_live``: the
    same for the outer frames, one mask per frame (those live before the call each one is
    in, func_states_equal's frame_insn_idx), or None to compare them whole."""
    exact = int(exact)
    if len(old.frames) != len(cur.frames) or old.active_rcu_lock != cur.active_rcu_lock:
        return False
    if exact == EXACT:
        live = 0x7FF
    # cheap first: the innermost frame's registers (most states differ there)
    fo, fc = old.frames[-1], cur.frames[-1]
    for i, (a, b) in enumerate(zip(fo.regs, fc.regs)):
        if a is not b and a.type != NOT_INIT and live >> i & 1 and (a.type != b.type or (
                a.type == SCALAR_VALUE and (a.precise or exact != NOT_EXACT) and
                not bounds.within(a.var, b.var))):
            return False
    idmap: dict = {}
    if old.refs or cur.refs:
        if len(old.refs) != len(cur.refs):
            return False
        for oid, cid in zip(sorted(old.refs), sorted(cur.refs)):
            if not _check_ids(oid, cid, idmap):
                return False
    if old.active_lock != cur.active_lock:      # refsafe: the same lock (map, pointer id)
        if old.active_lock is None or cur.active_lock is None or \
                old.active_lock[0] != cur.active_lock[0] or \
                not _check_ids(old.active_lock[1], cur.active_lock[1], idmap):
            return False
    last = len(old.frames) - 1
    for i, (fo, fc) in enumerate(zip(old.frames, cur.frames)):
        if i == last:
            m = live
        elif outer_live is not None and exact != EXACT:
            m = outer_live[i]
        else:
            m = 0x7FF
        if not func_states_equal(fo, fc, idmap, exact, m):
            return False
    return True
