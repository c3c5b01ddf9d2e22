"""bpf_spin_lock rules (kernel/bpf/verifier.c process_spin_lock, check_map_access, do_check).

A map value may hold one ``struct bpf_spin_lock`` (4 bytes), found by the loader in the value's
BTF (the runtime map's ``spin_lock_off``, -1 without; ``btf`` false for a map created without
BTF). The verifier's state holds the lock taken (``active_lock``: the map and the register id
of the value pointer, as the kernel's lock state records ``reg->id`` and the map):

* bpf_spin_lock's argument must point at the lock, at a constant offset, in a map with BTF;
  a second lock while one is held, an unlock without a lock or of another lock are refused;
* while a lock is held no helper other than bpf_spin_unlock, no kfunc and no global
  function may be called (static subprograms may), and the main program may not exit
  (``check_resource_leak``);
* no load or store may touch the lock's bytes.
"""
from __future__ import annotations

import errno

from .state import PTR_TO_BTF_ID, PTR_TO_MAP_VALUE

SPIN_LOCK_SIZE = 4


def lock_offset(m) -> int:
    """The map's bpf_spin_lock offset in its value, or -1 (MapInfo or runtime map)."""
    value = getattr(m, "value", m)
    return getattr(value, "spin_lock_off", -1)


def has_btf(m) -> bool:
    value = getattr(m, "value", m)
    return bool(getattr(value, "btf", False)) or lock_offset(m) >= 0


def may_point_to_spin_lock(reg) -> bool:
    """reg_may_point_to_spin_lock: a map value of a map with a lock, or an allocated object with
    its own. Such a pointer keeps its id after its NULL check (mark_ptr_or_null_reg) and a
    never-NULL lookup result gets one (check_helper_call), so that bpf_spin_unlock can tell
    which element's lock it is given."""
    if reg.type == PTR_TO_MAP_VALUE:
        return reg.map is not None and lock_offset(reg.map) >= 0
    return reg.type == PTR_TO_BTF_ID and getattr(reg.btf_type, "spin_lock_off", -1) >= 0


def process_spin_lock(chk, regno: int, is_lock: bool) -> None:
    reg = chk.reg(regno)
    chk.check_const_offset(regno, reg, "bpf_spin_lock")
    m = reg.map if reg.type == PTR_TO_MAP_VALUE else None
    name = getattr(m, "name", "") if m is not None else "kptr"
    if m is not None and not has_btf(m):
        chk.error(f"map '{name}' has to have BTF in order to use bpf_spin_lock", errno.EINVAL)
    obj = reg.btf_type if m is None else None       # an allocated object's own lock
    off = lock_offset(m) if m is not None else getattr(obj, "spin_lock_off", -1)
    if off < 0:
        chk.error(f"{'map' if m is not None else 'local'} '{name}' has no valid bpf_spin_lock",
                  errno.EINVAL)
    at = reg.var.const_value() + reg.off
    if at != off:
        chk.error(f"off {at} doesn't point to 'struct bpf_spin_lock' that is at {off}",
                  errno.EINVAL)
    st = chk.state
    # the kernel's lock state records the map, or the object's BTF, and the register id
    key = (id(getattr(m, "value", m)) if m is not None else id(obj.btf), reg.id)
    if is_lock:
        if st.active_lock is not None:
            chk.error("Locking two bpf_spin_locks are not allowed", errno.EINVAL)
        st.active_lock = key
    else:
        if st.active_lock is None:
            chk.error("bpf_spin_unlock without taking a lock", errno.EINVAL)
        if st.active_lock != key:
            chk.error("bpf_spin_unlock of different lock", errno.EINVAL)
        st.active_lock = None
        from .graph import invalidate_non_owning_refs
        invalidate_non_owning_refs(chk)         # graph nodes seen under the lock


def check_call_allowed(chk, helper_id: int | None, unlock_id: int) -> None:
    """do_check's rule for calls while a lock is held (helper_id None: a kfunc)."""
    if chk.state.active_lock is not None and helper_id != unlock_id:
        chk.error("function calls are not allowed while holding a lock", errno.EINVAL)


def check_global_call(chk) -> None:
    if chk.state.active_lock is not None:
        chk.error("global function calls are not allowed while holding a lock,\nuse static "
                  "function instead", errno.EINVAL)


def check_field_access(chk, reg, off: int, size: int) -> None:
    """check_map_access's special-field rule for [off, off + size) of a map value."""
    v = reg.var
    value = getattr(reg.map, "value", reg.map)
    for root_off, root in (getattr(value, "graph_roots", None) or {}).items():
        if v.smin + off < root_off + 16 and root_off < v.umax + off + size:
            chk.error(f"{root.kind} cannot be accessed directly by load/store", errno.EACCES)
    p = lock_offset(reg.map)
    if p < 0:
        return
    v = reg.var
    if v.smin + off < p + SPIN_LOCK_SIZE and p < v.umax + off + size:
        chk.error("bpf_spin_lock cannot be accessed directly by load/store", errno.EACCES)
