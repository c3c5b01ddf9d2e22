"""How lowered code calls BPF helpers: one table per module, one call path per helper.

Today every helper is a Python callable reached through the IR bridge of
:mod:`pybpf.jit.native` (the helper's address is a constant, so the object has no relocations).
Native helper implementations plug in at :meth:`HelperTable.emit_call`; the lowering only sees
``(r0 value, abort flag or None)``. ``unwind``-style helpers (the program stops with r0 = 0 when
they return 0) set the same abort flag that a raising Python helper sets.

The registry is the runtime's ``HelperRegistry`` (id -> ``Helper(name, fn, prototype)``); a plain
``{id: callable}`` dict is accepted too, for tests and tools. :func:`_entries` is the only place
that knows the registry's shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llvmlite import ir

from pybpf.errors import VMError
from pybpf.jit.cgutils import I1, I64
from pybpf.jit.native import PythonHelper


@dataclass(frozen=True)
class BoundHelper:
    """What the JIT needs to know about one helper id."""

    id: int
    name: str
    fn: Callable
    nargs: int = 5
    unwind: bool = False   # returning 0 stops the program with r0 = 0


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
        out[int(hid)] = BoundHelper(int(hid), name, helper.fn, _nargs(helper),
                                    bool(getattr(helper, "unwind", False)))
    return out


def _bad_callx(pc: int) -> Callable:
    def raise_unknown(hid, *_):
        raise VMError(f"callx to unknown helper id {hid}", pc)
    return raise_unknown


class HelperTable:
    """Helper bindings for one LLVM module; bridges are defined once per module and kept alive."""

    def __init__(self, registry=None) -> None:
        self._helpers = _entries(registry)
        self._bridges: dict[object, PythonHelper] = {}

    def get(self, hid: int) -> BoundHelper | None:
        return self._helpers.get(hid)

    def all(self) -> list[BoundHelper]:
        return [self._helpers[k] for k in sorted(self._helpers)]

    @property
    def needs_gil(self) -> bool:
        """Some code in the module calls Python, so it must run with the GIL held."""
        return bool(self._bridges)

    def keepalive(self) -> list:
        return list(self._bridges.values())

    def _bridge(self, key, fn: Callable, name: str, nargs: int) -> PythonHelper:
        bridge = self._bridges.get(key)
        if bridge is None:
            bridge = PythonHelper(fn, name=name, nargs=nargs)
            self._bridges[key] = bridge
        return bridge

    def emit_call(self, builder: ir.IRBuilder, helper: BoundHelper,
                  args: list[ir.Value]) -> tuple[ir.Value, ir.Value | None]:
        """Call ``helper`` with r1..r5; returns (r0, abort flag i1 or None)."""
        bridge = self._bridge(helper.id, helper.fn, f"{helper.name}.{helper.id}", helper.nargs)
        value, failed = bridge.call(builder, args)
        if helper.unwind:
            failed = builder.or_(failed, builder.icmp_unsigned("==", value, I64(0)))
        return value, failed

    def emit_bad_callx(self, builder: ir.IRBuilder, hid: ir.Value,
                       pc: int) -> tuple[ir.Value, ir.Value]:
        """The default arm of a callx dispatch: raise VMError in Python, then abort."""
        bridge = self._bridge(("callx", pc), _bad_callx(pc), f"callx_unknown.{pc}", 1)
        value, _failed = bridge.call(builder, [hid])
        return value, I1(1)

