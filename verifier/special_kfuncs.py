"""Kfuncs the verifier knows by name (the kernel's special_kfunc_list, kernel/bpf/verifier.c):
RCU read-side critical sections, exceptions, and the two casts.

* ``bpf_rcu_read_lock`` / ``bpf_rcu_read_unlock``: the path's ``active_rcu_lock``
  (``nested rcu read lock (kernel function bpf_rcu_read_lock)``, ``unmatched rcu read unlock
  (kernel function bpf_rcu_read_unlock)``); an exit, a tail call or a throw inside the region is
  refused by :func:`pybpf.verifier.calls.check_resource_leak` (``... cannot be used inside
  bpf_rcu_read_lock-ed region``), so are sleepable helpers and kfuncs.
* ``bpf_throw``: the path ends there (an exception exit: every frame unwinds, the program returns
  the cookie through the default exception callback). The cookie is checked as the program's
  return value would be (``At program exit the register R1 has ...``), held references are a
  leak (``bpf_throw would lead to reference leak``), and so is a lock, in any frame; a throw
  inside a callback is refused (``bpf_throw kfunc (insn N) cannot be called from callback
  subprog M``).
* ``bpf_cast_to_kern_ctx``: r0 is a trusted pointer to the kernel's context object
  (PTR_TO_BTF_ID | PTR_TRUSTED). pybpf has no kernel BTF, so it knows no layout to read through
  it: loads are refused where the kernel would check them against ``struct sk_buff``.
* ``bpf_rdonly_cast``: the type id must be a known constant; r0 is an untrusted pointer
  (PTR_TO_BTF_ID | PTR_UNTRUSTED), again without a layout pybpf could check loads against.
"""
from __future__ import annotations

import errno

from .state import (MEM_ALLOC, MEM_RCU, NON_OWN_REF, PTR_MAYBE_NULL, PTR_TO_BTF_ID, PTR_TRUSTED,
                    PTR_UNTRUSTED, Reg)

RCU_LOCK, RCU_UNLOCK = "bpf_rcu_read_lock", "bpf_rcu_read_unlock"
THROW = "bpf_throw"
CAST_TO_KERN_CTX, RDONLY_CAST = "bpf_cast_to_kern_ctx", "bpf_rdonly_cast"
NAMES = frozenset({RCU_LOCK, RCU_UNLOCK, THROW, CAST_TO_KERN_CTX, RDONLY_CAST})


def rcu_active(state) -> bool:
    return bool(getattr(state, "active_rcu_lock", False))


def check_rcu(chk, proto) -> None:
    """The RCU part of check_kfunc_call, after the arguments."""
    st = chk.state
    name = proto.name
    if rcu_active(st):
        if name == RCU_LOCK:
            chk.error(f"nested rcu read lock (kernel function {name})", errno.EINVAL)
        elif name == RCU_UNLOCK:
            # every RCU-protected pointer becomes untrusted (a kptr loaded in the section): no
            # longer an allocated object one may write (measured on Linux 6.18: a store
            # through it is "only read is supported")
            st.map_regs(lambda r: r.replace(
                flags=r.flags & ~(MEM_RCU | PTR_MAYBE_NULL | MEM_ALLOC | NON_OWN_REF)
                | PTR_UNTRUSTED) if r.flags & MEM_RCU else None)
            st.active_rcu_lock = False
        elif "KF_SLEEPABLE" in proto.kfunc_flags:
            chk.error(f"kernel func {name} is sleepable within rcu_read_lock region")
    elif name == RCU_LOCK:
        st.active_rcu_lock = True
    elif name == RCU_UNLOCK:
        chk.error(f"unmatched rcu read unlock (kernel function {name})", errno.EINVAL)


def set_return(chk, proto) -> bool:
    """r0 of the casts; True when ``proto`` is one of them (r0 set)."""
    if proto.name == CAST_TO_KERN_CTX:
        chk.set_reg(0, Reg.pointer(PTR_TO_BTF_ID, PTR_TRUSTED,
                                   origin=chk.origin("bpf_cast_to_kern_ctx")))
        return True
    if proto.name == RDONLY_CAST:
        chk.set_reg(0, Reg.pointer(PTR_TO_BTF_ID, PTR_UNTRUSTED,
                                   origin=chk.origin("bpf_rdonly_cast")))
        return True
    return False


def check_throw(chk) -> None:
    """bpf_throw as do_check's exception exit: the cookie (r1) as a return value, then the
    resource checks for an exception exit (in every frame)."""
    from .check import check_return_code
    for f in chk.state.frames:
        # check_max_stack_depth_subprog: no throw in a callback or anything it calls
        if f.in_callback_fn:
            chk.error(f"bpf_throw kfunc (insn {chk.pc}) cannot be called from callback "
                      f"subprog {chk.state.cur.subprogno}", errno.EINVAL)
    check_return_code(chk, regno=1)
    chk.calls.check_resource_leak(chk, True, True, "bpf_throw")
