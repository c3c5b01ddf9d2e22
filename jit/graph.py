"""bpf_rbtree_add_impl in JIT code: a native loop that calls the program's ``less`` callback.

The placement itself is the runtime's (:class:`pybpf.runtime.kfuncs_graph.RbAdd`, reached
through the Python bridge), so both engines build the same trees: ``begin`` starts an add (a
handle), ``next`` gives the node to compare the new one with (0 once it is placed), the callback
``less(node, other)`` runs natively and ``answer`` takes its result; ``end`` returns the kfunc's
result (0, or -EINVAL for a node already in a graph). The callback is found from its
``ld_imm64 src 4`` token as for bpf_loop (:func:`pybpf.jit.calls._callbacks`).
"""
from __future__ import annotations

import itertools

from pybpf.errors import VMError
from pybpf.jit import cgutils as cg
from pybpf.jit.callback_dispatch import call_callback
from pybpf.jit.cgutils import I1, I64

_ADDS: dict[int, object] = {}        # handle -> RbAdd, while an add lasts
_HANDLES = itertools.count(1)
_MAX_STALE = 4096                    # adds left behind by aborted runs, at most


def _begin_fn(graphs):
    def begin(root: int, node: int) -> int:
        add = graphs.rbtree_add_start(root, node)
        if len(_ADDS) >= _MAX_STALE:
            for h in sorted(_ADDS)[:len(_ADDS) // 2]:
                _ADDS.pop(h, None)
        h = next(_HANDLES)
        _ADDS[h] = add
        return h
    return begin


def _next(h: int) -> int:
    return _ADDS[h].next()


def _answer(h: int, less: int) -> int:
    _ADDS[h].answer(less)
    return 0


def _end(h: int) -> int:
    return _ADDS.pop(h).result


def lower_rbtree_add(fl, kf, callbacks: dict) -> None:
    """r0 = bpf_rbtree_add_impl(r1 root, r2 node, r3 less, meta, off)."""
    b, fn, pc = fl.b, fl.fn, fl.pc
    helpers = fl.mod.helpers
    root, node, cb_value = fl.get(1), fl.get(2), fl.get(3)
    known = fl.known(3)
    if known is not None and known in callbacks:
        callbacks = {known: callbacks[known]}

    def call(key, f, nargs, args):
        value, failed = helpers.call_python(b, (key, pc), f, nargs, args)
        fl.abort_if(failed)
        return value

    if not callbacks:
        call("rbtree_add.bad", bad_callback(pc), 1, [cb_value])
        fl.abort_if(I1(1))
        fl.set(0, cg.const(I64, 0))
        return
    handle = call("rbtree_add.begin", _begin_fn(kf.fn.graphs), 2, [root, node])
    walk = fn.append_basic_block(f"rbadd{pc}.walk")
    body = fn.append_basic_block(f"rbadd{pc}.body")
    end = fn.append_basic_block(f"rbadd{pc}.end")
    b.branch(walk)
    b.position_at_end(walk)
    other = call("rbtree_add.next", _next, 1, [handle])
    zero = cg.const(I64, 0)
    b.cbranch(b.icmp_unsigned("==", other, zero), end, body)
    b.position_at_end(body)
    args = [node, other, zero, zero, zero]
    less = call_callback(fl, callbacks, known, cb_value, args,
                         lambda v: call("rbtree_add.bad", bad_callback(pc), 1, [v]), "rbadd")
    call("rbtree_add.answer", _answer, 2, [handle, less])
    b.branch(walk)
    b.position_at_end(end)
    fl.set(0, call("rbtree_add.end", _end, 1, [handle]))


def bad_callback(pc: int):
    def raise_unknown(value, *_):
        raise VMError(f"bpf_rbtree_add: 0x{value:x} is not a function of this program", pc)
    return raise_unknown


__all__ = ["lower_rbtree_add"]
