"""Kfuncs without memory effects in pybpf: ``bpf_rcu_read_lock``/``bpf_rcu_read_unlock``,
``bpf_cast_to_kern_ctx``, ``bpf_rdonly_cast`` and ``bpf_throw`` (kernel/bpf/helpers.c).

* RCU: a run is one thread's straight execution with nothing to free under it, so the read-side
  critical section is the verifier's business only (no-ops here, as the kernel's are cheap
  preemption-count changes).
* The casts return their pointer unchanged, as the kernel's do (``return obj``): only the
  verifier's type changes, and pybpf's verifier refuses loads through those types (no kernel BTF
  layout to check them against), so the value is only ever passed on.
* ``bpf_throw(cookie)`` raises :class:`BpfThrow`; both engines let it unwind every frame (a
  Python exception through the interpreter's frames, the JIT bridge's abort path through native
  ones) and the run returns the cookie as r0, which is what the kernel's default exception
  callback makes the program return.
"""
from __future__ import annotations


class BpfThrow(Exception):
    """``bpf_throw(cookie)`` was called: the run ends and returns ``cookie``."""

    def __init__(self, cookie: int) -> None:
        super().__init__(f"bpf_throw({cookie:#x})")
        self.cookie = cookie


def bpf_rcu_read_lock() -> int:
    return 0


def bpf_rcu_read_unlock() -> int:
    return 0


def bpf_cast_to_kern_ctx(obj: int) -> int:
    return obj


def bpf_rdonly_cast(obj: int, btf_id: int) -> int:
    return obj


def bpf_throw(cookie: int) -> int:
    raise BpfThrow(cookie)


KFUNC_FNS = {f.__name__: f for f in (bpf_rcu_read_lock, bpf_rcu_read_unlock,
                                     bpf_cast_to_kern_ctx, bpf_rdonly_cast, bpf_throw)}
