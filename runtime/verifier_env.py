"""The runtime's side of the verifier protocol (:class:`pybpf.verifier.env.VerifierEnv`).

A :class:`VMEnv` answers the verifier's questions from a VM: helper and kfunc prototypes (from
the VM's registries), the maps a program names by fd or by index (its declarations, or the maps
they are bound to at load), the context rules of a program type and the program's arena.
"""
from __future__ import annotations

from pybpf.verifier.env import ArenaInfo, MapInfo
from pybpf.uapi import BPF_F_NO_USER_CONV



def map_info(m, index: int | None = None) -> MapInfo:
    """A runtime map (or a MapDecl not created yet) as the verifier sees it."""
    return MapInfo(type=m.type, key_size=m.key_size, value_size=m.value_size,
                   max_entries=m.max_entries, flags=getattr(m, "flags", 0),
                   name=getattr(m, "name", "") or "", fd=getattr(m, "fd", None), index=index,
                   map_extra=getattr(m, "map_extra", 0), value=m, inner=_inner_info(m))


def _inner_info(m) -> MapInfo | None:
    """A map-in-map's inner template (a created map's ``template``, a declaration's ``inner``),
    what the kernel keeps as ``inner_map_meta``."""
    t = getattr(m, "template", None)
    if isinstance(t, dict):
        return MapInfo(type=t["type"], key_size=t["key_size"], value_size=t["value_size"],
                       max_entries=t["max_entries"], flags=t.get("flags", 0),
                       name=f"{getattr(m, 'name', '') or 'map'}.inner")
    d = getattr(m, "inner", None)
    if d is not None and hasattr(d, "key_size"):
        return MapInfo(type=d.type, key_size=d.key_size, value_size=d.value_size,
                       max_entries=d.max_entries, flags=getattr(d, "flags", 0),
                       name=f"{getattr(m, 'name', '') or 'map'}.inner")
    return None


class VMEnv:
    """The environment of a program about to load into ``vm``.

    ``decl_maps`` are the maps bound to ``prog.maps`` (after :func:`bind_declarations`); when
    None the declarations themselves describe the maps (a verify without a load)."""

    def __init__(self, vm, prog, decl_maps: list | None = None) -> None:
        self.vm, self.prog = vm, prog
        src = decl_maps if decl_maps is not None else prog.maps
        self._by_index = [map_info(m, i) for i, m in enumerate(src)]
        self._arena = None
        for pc, form, insn in prog.instructions():
            if form.kind == "lddw" and form.op in ("map_fd", "map_value", "map_idx",
                                                   "map_idx_value"):
                mi = (self.map_by_index(insn.imm) if form.op.startswith("map_idx")
                      else self.map_by_fd(insn.imm))
                if mi is not None and mi.type == "arena" and self._arena is None:
                    self._arena = mi

    def helper(self, id: int):
        h = self.vm.helpers.get(id)
        return None if h is None else h

    def kfunc(self, name_or_btf_id):
        if isinstance(name_or_btf_id, str):
            for kid, k in self.vm.kfuncs.items():
                if k.name == name_or_btf_id:
                    return k
            return None
        return self.vm.kfuncs.get(name_or_btf_id)

    def map_by_fd(self, fd: int) -> MapInfo | None:
        m = self.vm.map_by_fd(fd, default=None)
        return None if m is None else map_info(m)

    def map_by_index(self, index: int) -> MapInfo | None:
        return self._by_index[index] if 0 <= index < len(self._by_index) else None

    def ctx_rules(self, prog_type: str):
        return None         # verifier.ctx holds the rules; the runtime adds nothing yet

    @property
    def has_arena(self) -> bool:
        return self._arena is not None

    @property
    def arena_info(self) -> ArenaInfo | None:
        a = self._arena
        if a is None:
            return None
        return ArenaInfo(a, getattr(a.value, "user_vm_start", 0),
                         bool(a.flags & BPF_F_NO_USER_CONV))
