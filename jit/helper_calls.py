"""How lowered code calls BPF helpers: one table per module, one call path per helper.

Today every helper is a Python callable. Lowered code reaches it through a *shared bridge*: a
few native functions ``{i64, i1} pybpf_pycall<n>(i64 callable, i64 r1..r5)`` (one per argument
count ``n``), built from LLVM IR once per process and placed like a program. A call site passes
the callable's address and calls the bridge, both as external symbols (``pybpf.x<n>``, resolved at
placement: the code itself is the same in every process), and, unlike a per-module bridge (:class:`pybpf.jit.native.PythonHelper`), the
bridge's ~40 instructions are not optimised and compiled again with every program (that cost
about 5 ms per program). The bridge converts ``n`` arguments to Python ints, calls by
vectorcall, converts the result with ``PyLong_AsUnsignedLongLongMask`` (``None`` counts as 0)
and returns ``{value, failed}``; a failure leaves the exception set for ctypes to raise.

Code that records its BPF stack frames (:mod:`pybpf.jit.lower`) calls a registry helper's
``framed_fn`` instead, with the innermost frame record as an extra first argument (so through
``pybpf_pycall<n + 1>``, up to ``pybpf_pycall6``): the run's stack regions are then exactly the
program's frames at that call, and a helper refuses a pointer anywhere else in the thread's
stack, as the interpreter does.

Helpers with a ``native`` description are computed inline instead (:mod:`pybpf.jit.native_helpers`).
Native implementations plug in at :meth:`HelperTable.emit_call`; the lowering only sees
``(r0 value, abort flag or None)``. ``unwind``-style helpers (the program stops with r0 = 0 when
they return 0) set the same abort flag that a raising Python helper sets.

The registry is the runtime's ``HelperRegistry`` (id -> ``Helper(name, fn, prototype)``); a plain
``{id: callable}`` dict is accepted too, for tests and tools. :func:`_entries` is the only place
that knows the registry's shape.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

from llvmlite import ir

from pybpf.errors import JITError, VMError
from pybpf.jit import native, native_helpers
from pybpf.jit.cgutils import I1, I64, PTR, const

_BRIDGE_TY = native.BRIDGE_RESULT
_BRIDGE_TEXT = str(_BRIDGE_TY)


@dataclass(frozen=True)
class BoundHelper:
    """What the JIT needs to know about one helper id."""

    id: int
    name: str
    fn: Callable
    nargs: int = 5
    unwind: bool = False   # returning 0 stops the program with r0 = 0
    special: str = ""      # "tail_call", "loop": the engine implements the control transfer
    native: tuple = ()     # an inline implementation (jit/native_helpers.py) instead of fn
    framed: Callable | None = None  # framed(frame_record, *args): fn behind the region checks,
                                    # for code that records its frames (helpers.Helper.framed_fn)

    @property
    def bridged(self) -> bool:
        """Called through the Python bridge (not inline, not a control transfer)."""
        return not self.native and not self.special


def _nargs(helper) -> int:
    proto = getattr(helper, "prototype", None)
    for attr in ("nargs", "args", "arg_types"):
        value = getattr(proto, attr, None)
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)):
            return len(value)
    return 5


def _entries(registry) -> dict[int, BoundHelper]:
    """Normalise the registry into {id: BoundHelper}."""
    if registry is None:
        return {}
    items = registry.items() if hasattr(registry, "items") else (
        (h.id, h) for h in registry)
    out = {}
    for hid, helper in items:
        if callable(helper) and not hasattr(helper, "fn"):
            out[int(hid)] = BoundHelper(int(hid), getattr(helper, "__name__", f"helper{hid}"),
                                        helper)
            continue
        name = getattr(helper, "name", f"helper{hid}")
        # checked_fn: the helper's pointer arguments checked against the run's regions
        fn = getattr(helper, "checked_fn", helper.fn)
        out[int(hid)] = BoundHelper(int(hid), name, fn, _nargs(helper),
                                    bool(getattr(helper, "unwind", False)),
                                    str(getattr(helper, "special", "") or ""),
                                    tuple(getattr(helper, "native", ()) or ()),
                                    getattr(helper, "framed_fn", None))
    return out


def _bad_callx(pc: int) -> Callable:
    def raise_unknown(hid, *_):
        raise VMError(f"callx to unknown helper id {hid}", pc)
    return raise_unknown


class HelperTable:
    """Helper bindings for one LLVM module; the callables it baked in are kept alive."""

    def __init__(self, registry=None, kfuncs=None) -> None:
        self._helpers = _entries(registry)
        self._kfuncs = _entries(kfuncs)
        self._called: dict[object, Callable] = {}  # key -> callable whose address is in the IR
        self._native_keep: list = []   # memory that inline helpers use (prandom state)
        self.force_gil = False     # set when code may enter other programs (tail calls)

    def get(self, hid: int) -> BoundHelper | None:
        return self._helpers.get(hid)

    def kfunc(self, kid: int) -> BoundHelper | None:
        return self._kfuncs.get(kid)

    def all(self) -> list[BoundHelper]:
        return [self._helpers[k] for k in sorted(self._helpers)]

    @property
    def needs_gil(self) -> bool:
        """Some code in the module calls Python, so it must run with the GIL held."""
        return bool(self._called) or self.force_gil

    def call_python(self, builder: ir.IRBuilder, key, fn: Callable, nargs: int,
                    args: list[ir.Value]) -> tuple[ir.Value, ir.Value]:
        """Call any Python callable ``fn(*args[:nargs])`` through the bridge: (r0, failed)."""
        return self._call_python(builder, key, fn, nargs, args)

    def keepalive(self) -> list:
        return list(self._called.values()) + self._native_keep

    def _call_python(self, builder: ir.IRBuilder, key, fn: Callable, nargs: int,
                     args: list[ir.Value]) -> tuple[ir.Value, ir.Value]:
        if not callable(fn):
            raise JITError(f"Python helper {key!r} is not callable")
        if not 0 <= nargs <= 5:
            raise JITError(f"a BPF helper takes 0..5 arguments, not {nargs}")
        return self._bridge_call(builder, key, fn, nargs, args)

    def _bridge_call(self, builder, key, fn: Callable, nargs: int,
                     args: list[ir.Value]) -> tuple[ir.Value, ir.Value]:
        fn = self._called.setdefault(key, fn)
        address = bridge_addresses()[nargs]
        width = max(5, nargs)
        args = (list(args) + [const(I64, 0)] * width)[:width]
        text = ", ".join(f"i64 {a.get_reference()}" for a in args)
        # One text call through a constant address: no callee object, no relocation.
        callee, obj = builder.ext(address), builder.ext(id(fn))
        res = builder._emit(_BRIDGE_TY, f"call {_BRIDGE_TEXT} inttoptr (i64 "
                                        f"{callee.get_reference()} to ptr)"
                                        f"(i64 {obj.get_reference()}, {text}) nounwind")
        return builder.extract_value(res, 0), builder.extract_value(res, 1)

    def emit_call(self, builder: ir.IRBuilder, helper: BoundHelper, args: list[ir.Value],
                  frames: ir.Value | None = None) -> tuple[ir.Value, ir.Value | None]:
        """Call ``helper`` with r1..r5; returns (r0, abort flag i1 or None).

        ``builder`` is a :class:`pybpf.jit.cgutils.TextBuilder`; ``frames`` (i64) the calling
        function's frame record, when the code records its frames."""
        if helper.native:
            self._native_keep.extend(native_helpers.keepalive(helper.native))
            value = native_helpers.emit(builder, helper.native)
            return value, (builder.icmp_unsigned("==", value, const(I64, 0))
                           if helper.unwind else None)
        key = helper.id if self._helpers.get(helper.id) is helper else ("kfunc", helper.id)
        if frames is not None and helper.framed is not None:
            value, failed = self._bridge_call(builder, ("framed", key), helper.framed,
                                              helper.nargs + 1,
                                              [frames] + list(args)[:helper.nargs])
        else:
            value, failed = self._call_python(builder, key, helper.fn, helper.nargs, args)
        if helper.unwind:
            failed = builder.or_(failed, builder.icmp_unsigned("==", value, const(I64, 0)))
        return value, failed

    def emit_bad_callx(self, builder: ir.IRBuilder, hid: ir.Value,
                       pc: int) -> tuple[ir.Value, ir.Value]:
        """The default arm of a callx dispatch: raise VMError in Python, then abort."""
        value, _failed = self._call_python(builder, ("callx", pc), _bad_callx(pc), 1, [hid])
        return value, I1(1)


# -- the shared bridge ---------------------------------------------------------------------


BRIDGE_MAX_ARGS = 6      # a helper's five arguments and a frame record


def _define_bridge(module: ir.Module, nargs: int, ext=None) -> None:
    """``{i64, i1} pybpf_pycall<nargs>(i64 callable, i64 a1..a5)`` (``a1..a6`` for 6): the body
    of :func:`pybpf.jit.native.emit_bridge_body` with the callable as an argument."""
    fn = ir.Function(module, ir.FunctionType(_BRIDGE_TY, [I64] * (1 + max(5, nargs))),
                     name=f"pybpf_pycall{nargs}")
    fn.attributes.add("nounwind")
    native.emit_bridge_body(fn, fn.args[1:nargs + 1], lambda b: b.inttoptr(fn.args[0], PTR),
                            ext=ext)


def build_bridge_ir(ext=None) -> str:
    """IR of the shared bridge module: ``pybpf_pycall0`` .. ``pybpf_pycall6``; ``ext(module)``
    names the per-process addresses (:func:`pybpf.jit.native.place_runtime_module`)."""
    module = ir.Module(name="pybpf.pycall")
    ext = ext(module) if ext is not None else None
    for nargs in range(BRIDGE_MAX_ARGS + 1):
        _define_bridge(module, nargs, ext)
    return str(module)


_bridge: list[int] | None = None
_bridge_lock = threading.Lock()


def bridge_addresses() -> list[int]:
    """Entry addresses of ``pybpf_pycall0..6``, placed on first use (never freed, like the
    test_run driver: one per process); the code comes from the code cache after the first
    process compiled it."""
    global _bridge
    if _bridge is None:
        with _bridge_lock:
            if _bridge is None:
                allocation, symbols = native.place_runtime_module(build_bridge_ir,
                                                                  native.BRIDGE_ALLOCATION)
                _bridge = [allocation.address + symbols[f"pybpf_pycall{n}"]
                           for n in range(BRIDGE_MAX_ARGS + 1)]
    return _bridge


def _forget_bridge_in_child() -> None:
    # As for the test_run driver: the child places its own copy with its own allocator.
    global _bridge, _bridge_lock
    _bridge, _bridge_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_bridge_in_child)
