"""Per-instruction facts the verifier hands to the JIT (the kernel JIT's ``insn_aux_data``).

``reg(pc, r)`` answers, for the base register ``r`` of a load/store/atomic at ``pc``, with the
kinds :mod:`pybpf.jit.kinds` uses: ``("arena",)`` for an arena pointer, ``("stack", off)`` for a
frame pointer plus a known constant, ``("const", value)`` for a known constant, None otherwise;
the kinds are joined over every path that reached ``pc``.
``access_kind(pc)`` says what a load/store/atomic at ``pc`` touches on every path: "arena",
"stack", "map_value", "ctx", "packet", "mem" or "mixed"; None for an instruction never reached.
``btf_access(pc)``: whether it may go through a BTF object pointer (the JIT's NULL check).
"""
from __future__ import annotations

from .state import (PTR_TO_ARENA, PTR_TO_BTF_ID, PTR_TO_CTX, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE,
                    PTR_TO_MEM, PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_STACK)

ARENA = ("arena",)
_ACCESS = {int(PTR_TO_ARENA): "arena", int(PTR_TO_STACK): "stack",
           int(PTR_TO_MAP_VALUE): "map_value", int(PTR_TO_MAP_KEY): "map_key",
           int(PTR_TO_CTX): "ctx", int(PTR_TO_PACKET): "packet", int(PTR_TO_PACKET_META): "packet",
           int(PTR_TO_MEM): "mem"}


class Facts:
    """What the verifier proved about each instruction, for the JIT."""

    def __init__(self, seen: dict, access: dict) -> None:
        self._seen = seen
        self._access = access

    def reached(self, pc: int) -> bool:
        return pc in self._seen or pc in self._access

    def reg(self, pc: int, r: int):
        """The kind of ``r`` at a memory instruction ``pc`` if ``r`` is its base register."""
        entry = self._seen.get(pc)
        if entry is None or entry[0] != r:
            return None
        k = entry[1]
        if k is None:
            return None
        if k[0] == "arena":
            return ARENA
        if k[0] == "stack" and k[2] == 0:
            return ("stack", k[1])
        if k[0] == "const":
            return ("const", k[1])
        return None

    def const(self, pc: int, r: int):
        k = self.reg(pc, r)
        return k[1] if k is not None and k[0] == "const" else None

    def arena_access(self, pc: int):
        """Whether the memory instruction at ``pc`` is an arena access (PROBE_MEM32): True when
        its base register was PTR_TO_ARENA on every path, False when on none, "mixed" when on
        some, None when no path reached it."""
        kinds = self._access.get(pc)
        if not kinds:
            return None
        arena = int(PTR_TO_ARENA)
        if arena not in kinds:
            return False
        return True if kinds == {arena} else "mixed"

    def btf_access(self, pc: int) -> bool:
        """Whether the memory instruction at ``pc`` may go through a PTR_TO_BTF_ID register
        on some path (an allocated object, a kptr, a per-CPU object's copy)."""
        return int(PTR_TO_BTF_ID) in self._access.get(pc, ())

    def access_kind(self, pc: int):
        kinds = self._access.get(pc)
        if not kinds:
            return None
        names = {_ACCESS.get(k, "other") for k in kinds}
        return names.pop() if len(names) == 1 else "mixed"
