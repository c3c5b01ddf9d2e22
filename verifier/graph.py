"""Allocated objects and graph data structures (kernel/bpf/verifier.c: check_kfunc_args'
KF_ARG_PTR_TO_ALLOC_BTF_ID, _LIST_HEAD/_NODE, _RB_ROOT/_NODE cases, check_kfunc_call's r0 for
bpf_obj_new and the graph kfuncs, check_ptr_to_btf_access for local types).

* ``bpf_obj_new_impl(type_id, NULL)``: the type id is a constant naming a struct of the
  program's BTF; r0 is ``PTR_TO_BTF_ID | MEM_ALLOC`` (an :class:`AllocType`), maybe NULL, and an
  acquired reference (an *owning* reference: ``Unreleased reference id=N alloc_insn=M`` at exit).
* ``bpf_obj_drop_impl`` releases an owning reference (offset 0).
* Graph roots are map value fields (map.graph_roots, runtime/maps/btf_fields.py) or fields of an
  allocated object (:class:`AllocType` ``graph_roots``, owning references only) at a constant
  offset, and the value's (the object's) ``bpf_spin_lock`` must be held (``bpf_spin_lock at off=.. must be held
  for bpf_list_head``). A node argument is an owning reference whose offset is the node field
  the root's ``__contains`` names. Pushing or adding turns the owning reference into a
  *non-owning* one (``NON_OWN_REF``, no reference id), valid until ``bpf_spin_unlock``, which
  invalidates every non-owning reference. ``pop``/``rbtree_remove`` return a new owning reference
  (maybe NULL) at the node's offset; ``front``/``back``/``rbtree_first`` a non-owning one.
* ``bpf_rbtree_add``'s ``less(a, b)`` is verified as a callback with both arguments non-owning
  references to the contained type at its node offset, returning [0, 1].
* Loads and stores through these pointers stay inside the struct and off its special fields
  (``direct access to bpf_list_node is disallowed``).
"""
from __future__ import annotations

import errno

from . import protos
from .state import MEM_ALLOC, MEM_PERCPU, NON_OWN_REF, PTR_MAYBE_NULL, PTR_TO_BTF_ID, PTR_TO_FUNC, \
    PTR_TO_MAP_VALUE, PTR_TRUSTED, Reg, SCALAR_VALUE

OBJ_NEW, OBJ_DROP, REFCOUNT_ACQUIRE = ("bpf_obj_new_impl", "bpf_obj_drop_impl",
                                       "bpf_refcount_acquire_impl")
PERCPU_NEW, PERCPU_DROP = "bpf_percpu_obj_new_impl", "bpf_percpu_obj_drop_impl"
PERCPU_MAX_SIZE = 512                   # BPF_GLOBAL_PERCPU_MA_MAX_SIZE
LIST_PUSH = ("bpf_list_push_front_impl", "bpf_list_push_back_impl")
LIST_POP = ("bpf_list_pop_front", "bpf_list_pop_back")
LIST_PEEK = ("bpf_list_front", "bpf_list_back")
RB_ADD, RB_REMOVE, RB_FIRST = "bpf_rbtree_add_impl", "bpf_rbtree_remove", "bpf_rbtree_first"
RB_WALK = ("bpf_rbtree_root", "bpf_rbtree_left", "bpf_rbtree_right")     # Linux 6.16+
LIST_API = frozenset(LIST_PUSH + LIST_POP + LIST_PEEK)
RBTREE_API = frozenset({RB_ADD, RB_REMOVE, RB_FIRST, *RB_WALK})
# kfunc_spin_allowed: graph kfuncs (and the numeric iterator) may run under a bpf_spin_lock
SPIN_ALLOWED = LIST_API | RBTREE_API | {REFCOUNT_ACQUIRE, "bpf_iter_num_new",
                                        "bpf_iter_num_next", "bpf_iter_num_destroy"}
NAMES = LIST_API | RBTREE_API | {OBJ_NEW, OBJ_DROP, REFCOUNT_ACQUIRE, PERCPU_NEW, PERCPU_DROP}

# btf_field_type_name and sizes of the special fields a local struct may hold
_SPECIAL = {"bpf_list_node": 24, "bpf_rb_node": 32, "bpf_list_head": 16, "bpf_rb_root": 16,
            "bpf_spin_lock": 4, "bpf_refcount": 4}
_ROOT_OF = {protos.KF_ARG_PTR_TO_LIST_HEAD: "bpf_list_head",
            protos.KF_ARG_PTR_TO_RB_ROOT: "bpf_rb_root"}
_NODE_OF = {"bpf_list_head": "bpf_list_node", "bpf_rb_root": "bpf_rb_node"}


class AllocType:
    """A struct of the program's BTF that bpf_obj_new allocates: its name, size and special
    fields (offset -> (name, size)). One object per (BTF, type id), compared by identity."""

    _cache: dict = {}

    def __init__(self, btf, type_id: int) -> None:
        t = btf.resolve(type_id)
        self.btf, self.type_id, self.name, self.size = btf, t.id, t.name, t.size
        self.fields: dict[int, tuple[str, int]] = {}
        self.members: dict[str, int] = {}
        from pybpf.errors import MapError
        for m in t.members:
            mt = btf.resolve(m.type)
            self.members[m.name] = m.bit_offset // 8
            if mt.kind == "struct" and mt.name in _SPECIAL:
                self.fields[m.bit_offset // 8] = (mt.name, _SPECIAL[mt.name])
        # graph roots of the object (a list or tree inside an allocated object, under the
        # object's own bpf_spin_lock)
        from .graph_fields import graph_roots
        try:
            self.graph_roots = graph_roots(btf, t.id)
        except MapError:
            self.graph_roots = {}
        self.spin_lock_off = next((off for off, (name, _) in self.fields.items()
                                   if name == "bpf_spin_lock"), -1)
        # kptr fields of the object (bpf_kptr_xchg's destinations): "direct access to kptr"
        from .kptr import KPTR_SIZE, kernel_kptr_fields, kptr_fields
        try:
            self.kptrs = kptr_fields(btf, t.id)
        except MapError:
            self.kptrs = {}
        # kptrs to kernel types (the kernel's fields, which pybpf cannot fill): special fields
        # all the same, so the kernel's "direct access to kptr" holds; bpf_kptr_xchg refuses them
        self.kernel_kptrs = kernel_kptr_fields(btf, t.id) if not self.kptrs else {}
        for off in self.kernel_kptrs:
            self.fields[off] = ("kptr", KPTR_SIZE)
        for off, k in self.kptrs.items():
            self.fields[off] = (k.field_name, KPTR_SIZE)

    @classmethod
    def of(cls, btf, type_id: int) -> "AllocType":
        key = (id(btf), type_id)
        t = cls._cache.get(key)
        if t is None or t.btf is not btf:
            t = cls._cache[key] = cls(btf, type_id)
        return t


def is_alloc(reg: Reg) -> bool:
    return reg.type == PTR_TO_BTF_ID and bool(reg.flags & MEM_ALLOC)


def alloc_reg(t: AllocType, flags: int, off: int, origin) -> Reg:
    return Reg.pointer(PTR_TO_BTF_ID, MEM_ALLOC | flags, off=off, origin=origin).replace(
        btf_type=t)


# --- memory access through allocated objects -----------------------------------------------
def check_access(chk, regno: int, reg: Reg, off: int, size: int, write: bool) -> None:
    """check_ptr_to_btf_access + btf_struct_access for a local type (``off`` includes the
    register's fixed offset)."""
    t = reg.btf_type
    tname = t.name if t is not None else ""
    if off < 0:
        chk.error(f"R{regno} is ptr_{tname} invalid negative access: off={off}", errno.EACCES)
    v = reg.var
    if not v.is_const() or v.const_value():
        chk.error(f"R{regno} is ptr_{tname} invalid variable offset: off={off}, "
                  f"var_off={v.var_off}", errno.EACCES)
    if t is None:
        chk.error(f"R{regno} invalid mem access '{reg.type_str()}'", errno.EACCES)
    for foff, (fname, fsize) in t.fields.items():
        if off < foff + fsize and foff < off + size:
            chk.error(f"direct access to {fname} is disallowed", errno.EACCES)
    if off + size > t.size:
        chk.error(f"access beyond struct {tname} at off {off} size {size}", errno.EACCES)


# --- arguments -------------------------------------------------------------------------------
def _root_field(chk, regno: int, reg: Reg, kind: str, func: str):
    """process_kf_arg_ptr_to_graph_root -> (GraphRoot)."""
    owning = reg.type == PTR_TO_BTF_ID and reg.flags == MEM_ALLOC
    if not (reg.type == PTR_TO_MAP_VALUE or owning) or reg.flags & PTR_MAYBE_NULL:
        chk.error(f"arg#{regno - 1} expected pointer to map value or allocated object",
                  errno.EINVAL)
    chk.check_const_offset(regno, reg, kind)
    v = reg.var
    if owning:                              # a root inside an allocated object
        value = reg.btf_type
        owner = id(value.btf)
    else:
        m = reg.map
        value = getattr(m, "value", m)
        owner = id(value)
    roots = getattr(value, "graph_roots", {}) or {}
    off = reg.off + v.const_value()
    root = roots.get(off)
    if root is None or root.kind != kind:
        chk.error(f"{kind} not found at offset={off}", errno.EINVAL)
    # check_reg_allocation_locked: the lock of this value must be held
    st = chk.state
    lock_off = getattr(value, "spin_lock_off", -1)
    if st.active_lock is None:
        chk.error(f"bpf_spin_lock at off={lock_off} must be held for {kind}", errno.EINVAL)
    if st.active_lock != (owner, reg.id):
        chk.log.line("held lock and object are not in the same allocation")
        chk.error(f"bpf_spin_lock at off={lock_off} must be held for {kind}", errno.EINVAL)
    return root


def _node_arg(chk, regno: int, reg: Reg, root, func: str, owning: bool) -> None:
    """The KF_ARG_PTR_TO_LIST_NODE / _RB_NODE case and __process_kf_arg_ptr_to_graph_node."""
    i = regno - 1
    node_kind = _NODE_OF[root.kind]
    if owning:
        if reg.type != PTR_TO_BTF_ID or reg.flags != MEM_ALLOC:
            chk.error(f"arg#{i} expected pointer to allocated object", errno.EINVAL)
        if not reg.ref_obj_id:
            chk.error("allocated object must be referenced", errno.EINVAL)
    elif not is_alloc(reg) or reg.flags & PTR_MAYBE_NULL or not (
            reg.flags & NON_OWN_REF or reg.ref_obj_id):
        # Linux 6.18 as measured here also takes an owning reference (a node in no tree:
        # NULL at run time)
        chk.error(f"{func} node input must be non-owning ref", errno.EINVAL)
    chk.check_const_offset(regno, reg, node_kind)
    v = reg.var
    t = reg.btf_type
    off = reg.off + v.const_value()
    field = t.fields.get(off) if t is not None else None
    if field is None or field[0] != node_kind:
        chk.error(f"{node_kind} not found at offset={off}", errno.EINVAL)
    if t.btf is not root.btf or t.type_id != root.value_type or off != root.node_offset:
        chk.error(f"operation on {root.kind} expects arg#{i} {node_kind} at offset="
                  f"{root.node_offset} in struct {root.value_name}, but arg is at offset={off} "
                  f"in struct {t.name}", errno.EINVAL)


def _in_rbtree_cb(chk) -> bool:
    """in_rbtree_lock_required_cb: the current frame is bpf_rbtree_add's ``less``."""
    f = chk.state.cur
    if not f.in_callback_fn or f.callsite < 0:
        return False
    entry = chk.form_at.get(f.callsite)
    if entry is None or entry[0].op != "kfunc":
        return False
    proto = chk.env.kfunc(entry[1].imm)
    proto = getattr(proto, "prototype", proto)
    return getattr(proto, "name", "") == RB_ADD


def check_args(chk, pc: int, proto, meta: dict) -> None:
    """The graph arguments of ``proto`` (called for each kfunc of :data:`NAMES`)."""
    name = proto.name
    root = None
    for i, kind in enumerate(proto.args):
        regno = i + 1
        base, kflags = protos.split_kind(kind)
        if base in (protos.KF_ARG_IGNORE, protos.KF_ARG_CONST, protos.KF_ARG_SCALAR):
            continue
        reg = chk.check_reg_read(regno)
        if base != protos.KF_ARG_PTR_TO_CALLBACK and (
                reg.flags & PTR_MAYBE_NULL or reg.type == SCALAR_VALUE and reg.var.is_const()
                and not reg.var.const_value()):
            # Linux 6.18's kfunc arguments are trusted: NULL (or maybe NULL) is refused first
            chk.error(f"Possibly NULL pointer passed to trusted arg{i}", errno.EACCES)
        if base in _ROOT_OF:
            root = meta["graph_root"] = _root_field(chk, regno, reg, _ROOT_OF[base], name)
        elif base in (protos.KF_ARG_PTR_TO_LIST_NODE, protos.KF_ARG_PTR_TO_RB_NODE):
            if name in (RB_REMOVE, *RB_WALK) and _in_rbtree_cb(chk):
                chk.error(f"{name} not allowed in rbtree cb", errno.EINVAL)
            _node_arg(chk, regno, reg, root, name, owning=name == RB_ADD or name in LIST_PUSH)
            meta["node_ref"] = reg.ref_obj_id
        elif base == protos.KF_ARG_PTR_TO_ALLOC_BTF_ID:
            trusted = MEM_ALLOC | PTR_TRUSTED | NON_OWN_REF     # is_trusted_reg's modifiers
            if reg.is_pointer and not reg.ref_obj_id and not (
                    reg.flags & trusted and not reg.flags & ~trusted):
                chk.error(f"R{regno} must be referenced or trusted", errno.EINVAL)
            if reg.type == PTR_TO_BTF_ID and reg.flags == MEM_ALLOC:
                if name != OBJ_DROP:
                    chk.error(f"arg#{i} expected for {OBJ_DROP}()", errno.EINVAL)
            elif reg.type == PTR_TO_BTF_ID and reg.flags == MEM_ALLOC | MEM_PERCPU:
                if name != PERCPU_DROP:
                    chk.error(f"arg#{i} expected for {PERCPU_DROP}()", errno.EINVAL)
            else:
                chk.error(f"arg#{i} expected pointer to allocated object", errno.EINVAL)
            if not reg.ref_obj_id:
                chk.error("allocated object must be referenced", errno.EINVAL)
            if reg.off or not reg.var.is_const() or reg.var.const_value():
                chk.error(f"R{regno} must have zero offset when passed to release func or "
                          f"trusted arg to kfunc", errno.EINVAL)
            meta["release_ref"] = reg.ref_obj_id
        elif base == protos.KF_ARG_PTR_TO_REFCOUNTED_KPTR:
            if not is_alloc(reg) or reg.flags & PTR_MAYBE_NULL:
                chk.error(f"arg#{i} is neither owning or non-owning ref", errno.EINVAL)
            t = reg.btf_type
            if t is None or not any(f[0] == "bpf_refcount" for f in t.fields.values()):
                chk.error(f"arg#{i} doesn't point to a type with bpf_refcount field",
                          errno.EINVAL)
            meta["refcounted"] = t
        elif base == protos.KF_ARG_PTR_TO_CALLBACK:
            if reg.type != PTR_TO_FUNC:
                chk.error(f"arg#{i} expected pointer to func", errno.EINVAL)
            meta["callback"] = reg.subprog
        else:
            chk.error(f"verifier bug: unsupported kfunc arg kind {kind}", errno.EFAULT)


def _scalar_struct(chk, btf, t, depth: int) -> bool:
    """__btf_type_is_scalar_struct: members are scalars, arrays of scalars or such structs."""
    if t.kind != "struct":
        return False
    for m in t.members:
        mt = btf.resolve(m.type)
        if mt.kind == "struct":
            if depth >= 3:
                chk.log.line("max struct nesting depth exceeded")
                return False
            if not _scalar_struct(chk, btf, mt, depth + 1):
                return False
            continue
        if mt.kind == "array":
            if not mt.nelems:
                return False
            mt = btf.resolve(mt.elem_type)
        if mt.kind not in ("int", "enum"):                 # btf_type_is_scalar
            return False
    return True


# --- effects and r0 --------------------------------------------------------------------------
def invalidate_non_owning_refs(chk) -> None:
    """At bpf_spin_unlock: every non-owning reference becomes unusable."""
    from .calls import _mark_invalid
    chk.state.map_regs(lambda r: _mark_invalid(r) if is_alloc(r) and r.flags & NON_OWN_REF
                       else None)


def _owning_to_non_owning(chk, ref_obj_id: int) -> None:
    """ref_convert_owning_non_owning + release_reference_nomark: every copy of the node's
    object pointer becomes a non-owning reference; the reference is gone."""
    chk.state.refs.pop(ref_obj_id, None)
    chk.state.map_regs(lambda r: r.replace(flags=r.flags | NON_OWN_REF, ref_obj_id=0)
                       if r.ref_obj_id == ref_obj_id and is_alloc(r) else None)


def rbtree_callback(chk, pc: int, meta: dict) -> None:
    """bpf_rbtree_add's ``less``: verified once per call site state (set_rbtree_add_callback_
    state), with both arguments non-owning references to the contained type."""
    from .calls import CallMeta, _push_callback, _set_depth
    caller = chk.state.cur
    if getattr(caller, "callback_depth", 0) >= 1:
        _set_depth(caller, 0)
        return
    root = meta["graph_root"]
    t = AllocType.of(root.btf, root.value_type)
    cm = CallMeta(0, False)
    cm.subprog = meta["callback"]

    def setup(callee, caller_regs):
        for r in (1, 2):
            callee.regs[r] = alloc_reg(t, NON_OWN_REF, root.node_offset,
                                       chk.origin("bpf_rbtree_add's less argument"))
    _push_callback(chk, pc, cm, setup, count_depth=True)


def finish_call(chk, pc: int, proto, meta: dict) -> Reg | None:
    """After the arguments and the caller-saved clobber: references and r0 (None: void)."""
    from .calls import acquire_reference, release_reference
    name = proto.name
    origin = chk.origin(name)
    if name in (OBJ_NEW, PERCPU_NEW):
        btf = getattr(chk.prog, "btf", None)
        if btf is None:
            chk.error("bpf_obj_new/bpf_percpu_obj_new requires prog BTF", errno.EINVAL)
        tid = meta.get("obj_new_type", 0)
        if not 0 < tid < len(btf.types) or btf.resolve(tid).kind != "struct":
            chk.error("bpf_obj_new/bpf_percpu_obj_new type ID argument must be of a struct",
                      errno.EINVAL)
        t = AllocType.of(btf, tid)
        flags = PTR_MAYBE_NULL
        if name == PERCPU_NEW:
            if t.size > PERCPU_MAX_SIZE:
                chk.error(f"bpf_percpu_obj_new type size ({t.size}) is greater than "
                          f"{PERCPU_MAX_SIZE}", errno.EINVAL)
            if not _scalar_struct(chk, btf, btf.resolve(tid), 0):
                chk.error("bpf_percpu_obj_new type ID argument must be of a struct of scalars",
                          errno.EINVAL)
            if t.fields:
                chk.error("bpf_percpu_obj_new type ID argument must not contain special "
                          "fields", errno.EINVAL)
            flags |= MEM_PERCPU
        ref = acquire_reference(chk, pc)
        return alloc_reg(t, flags, 0, origin).replace(id=ref, ref_obj_id=ref)
    if name in (OBJ_DROP, PERCPU_DROP):
        release_reference(chk, meta["release_ref"])
        return None
    if name == REFCOUNT_ACQUIRE:
        ref = acquire_reference(chk, pc)
        return alloc_reg(meta["refcounted"], PTR_MAYBE_NULL, 0, origin).replace(
            id=ref, ref_obj_id=ref)
    if name in LIST_PUSH or name == RB_ADD:
        _owning_to_non_owning(chk, meta["node_ref"])
        return Reg.scalar(None, origin)
    root = meta["graph_root"]
    t = AllocType.of(root.btf, root.value_type)
    if name in LIST_POP or name == RB_REMOVE:
        ref = acquire_reference(chk, pc)
        return alloc_reg(t, PTR_MAYBE_NULL, root.node_offset, origin).replace(
            id=ref, ref_obj_id=ref)
    # bpf_list_front/back, bpf_rbtree_first/root/left/right: a non-owning reference, maybe NULL
    return alloc_reg(t, NON_OWN_REF | PTR_MAYBE_NULL, root.node_offset, origin).replace(
        id=chk.new_id())


__all__ = ["AllocType", "check_access", "check_args", "finish_call", "invalidate_non_owning_refs",
           "is_alloc", "rbtree_callback", "NAMES", "SPIN_ALLOWED", "SCALAR_VALUE"]
