"""What the loader knows about a program that its JIT code depends on (``JitEnv``).

The kernel JITs after maps exist, so map addresses, the arena's ``kern_vm_start`` (its r12) and
helper addresses are immediates in the code; pybpf's code reaches them through external symbols
that placement resolves (``cgutils.Externs``), so the same bytes serve every process. pybpf's loader (:mod:`pybpf.runtime.loader`)
passes the same facts: ``values64`` (the constant of every ld_imm64 and cast_user, by slot) and this
record. Every field is optional; without it the forms that need it raise :class:`JITError`.
The facade above both engines (:func:`pybpf.loaded.jit_env`) fills it from a VM; nothing here
imports the runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pybpf.errors import JITError

SZ_4G = 1 << 32


@dataclass(frozen=True)
class ArenaLayout:
    """The constants arena accesses need: ``kern_vm_start``, the page map (one byte per page of
    the reservation, 1 = allocated, entry of kern_vm_start's page at ``page_map``), and the
    readable reservation ``[band_lo, band_lo + band_size)`` (the 4 GiB band and its guards)."""

    kern_vm_start: int
    page_map: int
    band_lo: int
    band_size: int

    @classmethod
    def of(cls, arena) -> "ArenaLayout":
        guard = arena.guard_size
        return cls(arena.kern_vm_start, arena.page_map_address, arena.kern_vm_start - guard,
                   SZ_4G + 2 * guard)


@dataclass
class JitEnv:
    """Load-time facts for one program.

    ``arena``: the program's arena map (or its :class:`ArenaLayout`); ``kfuncs``: the kfunc
    registry (id -> Helper); ``resolve_map``: map pointer value -> map object, so calls whose map
    argument is a known constant get native code (array and hash lookups, tail calls);
    ``prog_type``: where ld_abs/ld_ind find the packet (verified skb types: ``skb->data``/``len``
    through r6, as the kernel, so a tail-call target reads the run's packet; others and
    unverified code: the two u64 words at ``packet_desc``, data address and length (-1: the
    run has no packet), which the runner fills before each run of the program it enters
    (a tail-call chain's record carries that one's address along, jit/calls.py); it belongs to
    one loaded program, so threads running the same ld_abs program at once share it); ``low_pool``: the only run memory below
    4 GiB (contexts and packets), so a 32-bit base outside it is an arena offset.
    """

    arena: object = None
    kfuncs: object = None
    resolve_map: Callable[[int], object] | None = None
    prog_type: str = "mem"
    packet_desc: int = 0
    low_pool: tuple[int, int] = (1 << 30, 1 << 31)
    keepalive: list = field(default_factory=list)
    # False for an unverified load: nothing vouches for pointer arguments, so helper calls go
    # to the run-time-checked Python helpers instead of native code (map lookups).
    verified: bool = True
    # Unverified loads: the address of a signed u64 run budget the runner sets to insn_limit
    # before each run; the code counts it down at back edges (jit/lower.py), 0: no counter.
    budget_cell: int = 0
    # The runtime's XDP layout: how far past the xdp_md the lowest byte bpf_xdp_adjust_head may
    # move data to (less the metadata) lies (the end of the frame's struct xdp_frame); 0:
    # unknown, the helper stays on the bridge (jit/native_packet.py)
    xdp_head_floor: int = 0
    # The largest program compiled at -O2 for this load (jit/program.py o2_limit; None:
    # O2_MAX_SLOTS): the VM's max_o2_slots.
    o2_max_slots: int | None = None

    def arena_layout(self) -> ArenaLayout | None:
        if self.arena is None:
            return None
        if isinstance(self.arena, ArenaLayout):
            return self.arena
        try:
            return ArenaLayout.of(self.arena)
        except AttributeError as e:
            raise JITError(f"{self.arena!r} is not an arena: {e}") from None
