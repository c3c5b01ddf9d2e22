"""The code cache's key computed from a load's inputs, before lowering (issue 13).

A cache key over the lowered IR (:func:`pybpf.jit.cache.key`) is exact but needs the lowering,
which is most of a warm load's time. :class:`LoadInputs` builds the key from what the lowering
reads instead, so a hit skips both the lowering and LLVM:

* the program: its instruction bytes and its function and label names;
* the program type and the :class:`~pybpf.jit.env.JitEnv` switches (verified, run budget,
  ld_abs packet descriptor, the low run-memory pool);
* every helper and kfunc the program calls: id, name, argument count, unwind, special and
  inline (``native``) implementation;
* every ld_imm64/cast_user value the loader resolved (``values64``), by slot, with the map it
  stands for when it is one (kind, sizes, flags, layout of the native lookups: what
  :mod:`pybpf.jit.maps` and :mod:`pybpf.jit.calls` bake into the code);
* which of all the per-process values (the above, helper bridges, helper objects, the packet
  descriptor, ...) are equal: the IR names one external symbol per distinct value;
* the verifier's facts, when the load has them;
* the optimisation level; the salt of :func:`pybpf.jit.cache._codegen_salt` adds the
  llvmlite/LLVM version, CPU and features, pybpf's version and a digest of pybpf's own source
  (the lowering code itself).

The code depends on per-process values only through external symbols (``pybpf.x<n>``). A cache
entry stored under this key carries a *recipe*: for each external symbol, the *path* of the
input it stands for (``("v", slot)``, ``("m", slot, "data")``, ``("h", id)``, ...). A hit
rebuilds the symbols' values from this load's inputs by those paths; no path, no value.

A program is keyed this way only when the lowering's every dependence is covered; otherwise
:attr:`LoadInputs.keyable` is False (with ``why``) and the load falls back to the IR key:
programs with an arena (the access classification compares addresses with the arena's band),
``callx`` and ``bpf_loop`` (per-load closures in the code), helpers given as something other
than a registry or dict. After a lowering, :meth:`LoadInputs.recipe` checks that every external
symbol's value is one of the paths and that every map the lowering resolved (native lookups,
tail calls) was a ``values64`` slot's; if not, nothing is stored under this key.
"""
from __future__ import annotations

import dataclasses
import hashlib

from pybpf.jit import native_helpers, native_packet

_M64 = (1 << 64) - 1
VERSION = 1
# The map attributes the native lookups and tail calls read (the maps' gen_lookup in
# runtime/maps/, jit/calls.py): keep this list in step with them.
_MAP_ATTRS = ("type", "key_size", "value_size", "max_entries", "flags", "map_extra", "percpu",
              "stride", "lru", "value_off", "closed")
_HEADER_ATTRS = ("elem_size", "index_mask")
_MAP_PATHS = (("cpu", lambda m: m.address + type(m.header).cpu.offset),
              ("data", lambda m: m.header.data),
              ("index", lambda m: m.header.index), ("table", lambda m: m.table_address))


def _bound(registry, hid: int):
    """The JIT's :class:`BoundHelper` of ``hid`` in ``registry`` (None: not there), without
    normalising the whole registry."""
    from pybpf.jit.helper_calls import _entries

    helper = registry.get(hid)
    if helper is None:
        return None
    return _entries({hid: helper})[hid]


class LoadInputs:
    """What the lowering of one program reads, as a key and a table of per-process values."""

    def __init__(self, prog, helpers, values64: dict | None, env) -> None:
        self.keyable, self.why = True, ""
        self.paths: dict[tuple, int] = {}       # path -> value (u64)
        self.keep: dict[tuple, object] = {}     # path -> object whose memory/identity it is
        self._digest: str | None = None
        values64 = values64 or {}
        h = hashlib.sha256()
        self._h = h
        if env is None or getattr(env, "arena", None) is not None:
            self._refuse("no JitEnv" if env is None else "arena program")
            return
        if helpers is not None and not hasattr(helpers, "get"):
            self._refuse("helpers are not a registry")
            return
        upd = h.update
        upd(prog.to_bytes())
        upd(repr((sorted(prog.functions.items()), sorted(prog.labels.items()))).encode())
        upd(repr((env.prog_type, bool(env.verified), bool(env.budget_cell),
                  bool(env.packet_desc), tuple(env.low_pool), env.resolve_map is None,
                  env.kfuncs is None, env.xdp_head_floor)).encode())
        self._global_paths()
        helper_ids, kfunc_ids = set(), set()
        for _, form, insn in prog.instructions():
            if form.kind == "callx":
                self._refuse("callx")
                return
            if form.kind == "call":
                if form.op == "helper":
                    helper_ids.add(insn.imm)
                elif form.op != "local":
                    kfunc_ids.add(insn.imm)
        for kind, registry, ids in (("h", helpers, helper_ids), ("k", env.kfuncs, kfunc_ids)):
            for hid in sorted(ids):
                bh = _bound(registry, hid) if registry is not None else None
                if bh is None:
                    upd(f"{kind}{hid}:none;".encode())
                    continue
                if bh.special == "loop":
                    self._refuse("bpf_loop")
                    return
                spec = bh.native
                static = tuple(x for x in spec[1:] if isinstance(x, (int, str, float)))
                # the generator's step table is constants in the code; its state an address
                steps = getattr(spec[1], "steps", None) if len(spec) > 1 else None
                upd(repr((kind, hid, bh.name, bh.nargs, bh.unwind, bh.special,
                          spec[:1], static, steps)).encode())
                self._add((kind, hid), id(bh.fn), bh.fn)
                if bh.framed is not None:       # what code keeping frame records calls
                    self._add((kind, hid, "framed"), id(bh.framed), bh.framed)
                if spec and spec[0] == "prandom_u32":
                    for i in range(len(spec[1].steps)):
                        self._add((kind, hid, "prandom", i), spec[1].address + 4 * i, spec[1])
        resolve = env.resolve_map
        for slot in sorted(values64):
            value = values64[slot] & _M64
            self._add(("v", slot), value)
            self._add(("vh", slot), value & ~0xFFFFFFFF)
            m = resolve(value) if resolve is not None else None
            if m is None:
                upd(f"v{slot}:-;".encode())
                continue
            header = getattr(m, "header", None)
            upd(repr((slot, [getattr(m, a, None) for a in _MAP_ATTRS],
                      [getattr(header, a, None) for a in _HEADER_ATTRS],
                      getattr(m, "table_address", None) is None)).encode())
            for name, get in _MAP_PATHS:
                try:
                    v = get(m)
                except (AttributeError, TypeError):
                    continue
                if isinstance(v, int):
                    self._add(("m", slot, name), v, m)
        if env.packet_desc:
            self._add(("e", "pkt"), env.packet_desc)
            self._add(("e", "pkt8"), env.packet_desc + 8)
        if env.budget_cell:
            self._add(("e", "budget"), env.budget_cell)
        # which values are equal: one external symbol per distinct value
        first: dict[int, int] = {}
        upd(repr([first.setdefault(v, i) for i, v in enumerate(self.paths.values())]).encode())
        facts = getattr(env, "facts", None)
        if facts is not None:
            upd(self._facts_text(facts).encode())

    def _refuse(self, why: str) -> None:
        self.keyable, self.why = False, why

    def _add(self, path: tuple, value: int, obj=None) -> None:
        self.paths[path] = value & _M64
        if obj is not None:
            self.keep[path] = obj

    def _global_paths(self) -> None:
        from pybpf.jit import lower

        self._add(("g", "signals"), lower._check_signals_address())
        self._add(("g", "budget_spent"), id(lower._budget_spent), lower._budget_spent)
        self._add(("g", "clock"), native_helpers.clock_gettime_address())
        self._add(("g", "memmove"), native_packet.memmove_address())
        # The shared Python-call bridge (``("g", "bridge", n)``) is code in the pack, equal to
        # no other value; it is left out of the table (so out of the key), which does not
        # depend on whether this process has placed it yet: recipe() and resolve() add it.

    def _bridges(self, place: bool) -> dict:
        from pybpf.jit import helper_calls

        addresses = helper_calls.bridge_addresses() if place else helper_calls._bridge
        return {("g", "bridge", n): a for n, a in enumerate(addresses or ())}

    def _facts_text(self, facts) -> str:
        """The verifier's facts, with constants that are per-process values named by path."""
        by_value = {}
        for path, v in self.paths.items():
            by_value.setdefault(v, path)

        def kind(k):
            if k and k[0] == "const" and isinstance(k[1], int):
                return ("const", by_value.get(k[1] & _M64, k[1]))
            return k
        seen = sorted((pc, e[0], kind(e[1])) for pc, e in facts._seen.items())
        access = sorted((pc, sorted(v)) for pc, v in facts._access.items())
        return repr((seen, access))

    def key(self, opt_level: int) -> str:
        """The cache key of this load's code at ``opt_level`` (keyable loads only)."""
        from pybpf.jit import cache

        if self._digest is None:
            self._digest = self._h.hexdigest()
        h = hashlib.sha256(cache._codegen_salt())
        h.update(f"\ninputs={VERSION}\nopt={opt_level}\n{self._digest}".encode())
        return h.hexdigest()

    # -- miss: what a lowering used; hit: the values again ---------------------------------------

    def recording_env(self, env):
        """A copy of ``env`` whose map resolver records each map it finds (see recipe())."""
        self.resolved: list[int] = []
        resolve = env.resolve_map
        if resolve is None:
            return env

        def recording(value):
            m = resolve(value)
            if m is not None:
                self.resolved.append(value & _M64)
            return m
        copy = dataclasses.replace(env, resolve_map=recording)
        if hasattr(env, "facts"):
            copy.facts = env.facts
        return copy

    def recipe(self, externs: dict) -> list | None:
        """[[symbol, path], ...] rebuilding ``externs`` (symbol -> value) from these inputs, or
        None when some value is not one of them or the lowering resolved a map that is not a
        values64 slot's: such code is not stored under this key."""
        if not self.keyable:
            return None
        slots = {v for p, v in self.paths.items() if p[0] == "v"}
        if any(v not in slots for v in getattr(self, "resolved", ())):
            return None
        by_value: dict[int, tuple] = {}
        for path, v in [*self.paths.items(), *self._bridges(False).items()]:
            by_value.setdefault(v, path)
        out = []
        for name, value in externs.items():
            path = by_value.get(value & _M64)
            if path is None:
                return None
            out.append([name, list(path)])
        return out

    def resolve(self, recipe: list) -> tuple[dict, list] | None:
        """(symbol -> value, objects to keep alive) by ``recipe``; None if a path is unknown."""
        externs, keep = {}, []
        for name, path in recipe:
            path = tuple(path)
            if path[:2] == ("g", "bridge") and path not in self.paths:
                self.paths.update(self._bridges(True))
            value = self.paths.get(path)
            if value is None or not isinstance(name, str):
                return None
            externs[name] = value
            obj = self.keep.get(path)
            if obj is not None:
                keep.append(obj)
        return externs, keep
