"""What the verifier asks of its environment (the kernel's prog/env lookups), as a protocol.

The verifier never imports the runtime: the runtime implements :class:`VerifierEnv`
(:mod:`pybpf.runtime.verifier_env`) and passes it to :func:`pybpf.verifier.verify`. Map
descriptions travel as :class:`MapInfo`, plain data the verifier can print and compare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class MapInfo:
    """A map as the verifier sees it (struct bpf_map's attributes)."""

    type: str                 # kernel name without prefix: "hash", "array", "arena", ...
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    name: str = ""
    fd: int | None = None     # ld_imm64 src 1/2
    index: int | None = None  # ld_imm64 src 5/6 (Program.maps)
    map_extra: int = 0
    value: object = None      # the runtime map object, opaque to the verifier (identity only)
    inner: "MapInfo | None" = None   # map-in-map: the inner map template (inner_map_meta)


@dataclass(frozen=True)
class ArenaInfo:
    """The program's arena: its map and whether pointers convert to user addresses."""

    map: MapInfo
    user_vm_start: int = 0
    no_user_conv: bool = False


@runtime_checkable
class VerifierEnv(Protocol):
    """Lookups the verifier needs; each returns None for something that does not exist."""

    def helper(self, id: int):
        """The helper's prototype (verifier.protos) or None: `invalid func unknown#ID`."""

    def kfunc(self, name_or_btf_id):
        """The kfunc's prototype or None."""

    def map_by_fd(self, fd: int) -> MapInfo | None:
        """The map an ld_imm64 src 1/2 names."""

    def map_by_index(self, index: int) -> MapInfo | None:
        """The map an ld_imm64 src 5/6 names (Program.maps[index])."""

    def ctx_rules(self, prog_type: str):
        """Context layout and access rules for ``prog_type`` (verifier.ctx), or None."""

    @property
    def has_arena(self) -> bool:
        """Whether the program has an arena map."""

    @property
    def arena_info(self) -> ArenaInfo | None:
        """The program's arena, or None."""


class NullEnv:
    """An environment with no helpers, kfuncs or maps (bytecode checked on its own)."""

    def helper(self, id):
        return None

    def kfunc(self, name_or_btf_id):
        return None

    def map_by_fd(self, fd):
        return None

    def map_by_index(self, index):
        return None

    def ctx_rules(self, prog_type):
        return None

    has_arena = False
    arena_info = None
