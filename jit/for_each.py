"""bpf_for_each_map_elem in JIT code: a native loop that calls the callback subprogram.

The walk itself is the interpreter's (:class:`pybpf.runtime.helpers_control.ForEach`, reached
through the Python bridge), so both engines visit the same elements in the same order: ``begin``
gives a walk handle (or -EINVAL for flags), then per element ``next`` (the value's address, 0
at the end) and ``key`` (the address of its read-only key copy), then the callback
``callback(map, key, value, ctx)`` runs natively; a non-zero return stops the walk, and ``end``
returns the count of elements visited. The callback is found from its ``ld_imm64 src 4``
token as for bpf_loop (:func:`pybpf.jit.calls._callbacks`).
"""
from __future__ import annotations

import itertools

from pybpf.errors import VMError
from pybpf.jit import cgutils as cg
from pybpf.jit.callback_dispatch import call_callback
from pybpf.jit.cgutils import I1, I64

_WALKS: dict[int, object] = {}       # handle -> ForEach, while a walk lasts
_HANDLES = itertools.count(1)
_MAX_STALE = 4096                    # walks left behind by aborted runs, at most


def _begin_fn(resolve_map, pc: int):
    from pybpf.runtime.helpers import ACTIVE_REGIONS
    from pybpf.runtime.helpers_control import for_each_start

    def begin(map_value: int, flags: int) -> int:
        walk = for_each_start(resolve_map or (lambda v: None), map_value, flags, pc)
        if isinstance(walk, int):
            return walk
        if len(_WALKS) >= _MAX_STALE:            # runs that aborted mid-walk left these
            for h in sorted(_WALKS)[:len(_WALKS) // 2]:
                _WALKS.pop(h, None)
        h = next(_HANDLES)
        _WALKS[h] = walk
        table = ACTIVE_REGIONS.get()        # helpers called by the callback check the key
        if table is not None:
            walk.table = table
            table.add(walk.region())
        return h
    return begin


def _next(h: int) -> int:
    return _WALKS[h].next()


def _key(h: int) -> int:
    return _WALKS[h].key


def _end(h: int) -> int:
    """The walk's count; its key region leaves the run's table."""
    walk = _WALKS.pop(h)
    table = getattr(walk, "table", None)
    if table is not None:
        for r in table:
            if r.owner is walk.key_buf:
                table.remove(r)
                break
    return walk.count


def lower_for_each(fl, callbacks: dict, bad_callback) -> None:
    """r0 = bpf_for_each_map_elem(r1 map, r2 callback, r3 ctx, r4 flags)."""
    b, fn, pc = fl.b, fl.fn, fl.pc
    helpers = fl.mod.helpers
    map_value, cb_value, ctx, flags = fl.get(1), fl.get(2), fl.get(3), fl.get(4)
    known = fl.known(2)
    if known is not None and known in callbacks:
        callbacks = {known: callbacks[known]}
    if not callbacks:
        value, _ = helpers.call_python(b, ("for_each.bad", pc), bad_callback(pc), 1, [cb_value])
        fl.abort_if(I1(1))
        fl.set(0, value)
        return

    def call(key, f, nargs, args):
        value, failed = helpers.call_python(b, (key, pc), f, nargs, args)
        fl.abort_if(failed)
        return value

    handle = call("for_each.begin", _begin_fn(fl.env.resolve_map, pc), 2, [map_value, flags])
    start_bb = b.block
    walk = fn.append_basic_block(f"foreach{pc}.walk")
    body = fn.append_basic_block(f"foreach{pc}.body")
    end = fn.append_basic_block(f"foreach{pc}.end")
    done = fn.append_basic_block(f"foreach{pc}.done")
    failed_begin = b.icmp_unsigned(">=", handle, cg.const(I64, 1 << 63))   # -errno
    b.cbranch(failed_begin, done, walk)
    b.position_at_end(walk)
    value = call("for_each.next", _next, 1, [handle])
    b.cbranch(b.icmp_unsigned("==", value, cg.const(I64, 0)), end, body)
    b.position_at_end(body)
    key = call("for_each.key", _key, 1, [handle])
    zero = cg.const(I64, 0)
    args = [map_value, key, value, ctx, zero]
    results = [call_callback(fl, callbacks, known, cb_value, args,
                             lambda v: call("for_each.bad", bad_callback(pc), 1, [v]),
                             "foreach")]
    b.cbranch(b.icmp_unsigned("!=", results[0], zero), end, walk)
    b.position_at_end(end)
    count = call("for_each.end", _end, 1, [handle])
    end_bb = b.block
    b.branch(done)
    b.position_at_end(done)
    phi = b.phi(I64, name="foreach.r0")
    phi.add_incoming(handle, start_bb)
    phi.add_incoming(count, end_bb)
    fl.set(0, phi)


def bad_callback(pc: int):
    def raise_unknown(value, *_):
        raise VMError(f"bpf_for_each_map_elem: 0x{value:x} is not a function of this program",
                      pc)
    return raise_unknown


__all__ = ["lower_for_each", "bad_callback"]
