"""Calling a callback a helper or kfunc received as a value (bpf_for_each_map_elem's callback,
bpf_rbtree_add's less): a direct call when the verifier knows which function it is, otherwise
a compare chain over the program's callbacks with a run-time error for any other value."""
from __future__ import annotations

from pybpf.jit import cgutils as cg
from pybpf.jit.cgutils import I1, I64


def call_callback(fl, callbacks: dict, known, cb_value, args: list, refuse, label: str):
    """The callback's r0. ``callbacks`` maps each possible token to its function, ``known`` is
    the token when the verifier knows it, ``refuse(cb_value)`` emits the call that raises for a
    value that is no callback of the program; ``label`` names the blocks."""
    if len(callbacks) == 1 and known is not None:
        return fl.call_local(next(iter(callbacks.values())), args)
    b, fn, pc = fl.b, fl.fn, fl.pc
    zero = cg.const(I64, 0)
    merge = fn.append_basic_block(f"{label}{pc}.ret")
    incoming = []
    for token, callee in callbacks.items():
        hit = fn.append_basic_block(f"{label}{pc}.cb")
        miss = fn.append_basic_block(f"{label}{pc}.not")
        b.cbranch(b.icmp_unsigned("==", cb_value, cg.const(I64, token)), hit, miss)
        b.position_at_end(hit)
        incoming.append((fl.call_local(callee, args), b.block))
        b.branch(merge)
        b.position_at_end(miss)
    refuse(cb_value)
    fl.abort_if(I1(1))
    incoming.append((zero, b.block))
    b.branch(merge)
    b.position_at_end(merge)
    phi = b.phi(I64, name=f"{label}.cb.r0")
    for v, blk in incoming:
        phi.add_incoming(v, blk)
    return phi


__all__ = ["call_callback"]
