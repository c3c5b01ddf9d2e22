"""Register liveness: after each instruction, which registers some later instruction may read.

The kernel computes such sets (``compute_live_registers`` in verifier.c) to ignore dead
registers when it compares states; the JIT uses them to skip instructions whose result nobody
reads and to write back only live registers at the end of a block. It is the backward dataflow
of *strong* liveness over the blocks of :func:`pybpf.verifier.cfg.build_cfg`: a pure
instruction (:func:`~pybpf.verifier.regs.is_pure`) whose result is dead reads nothing, so a
chain of computations that only feeds dead ones is dead as a whole. Register sets are 11-bit
masks; each subprogram is its own function (a call reads r1-r5, an exit reads r0). A call does
not count as writing r0 here: a tail call that fails falls through with r0 unchanged, so a value
put in r0 before a call may still be read after it.
"""
from __future__ import annotations

from dataclasses import dataclass

from pybpf.verifier.regs import is_pure, read_regs, written_regs


def _mask(regs) -> int:
    m = 0
    for r in regs:
        m |= 1 << r
    return m


@dataclass
class Liveness:
    live_in: dict[int, int]       # block start -> registers live on entry (mask)
    live_out: dict[int, int]      # block start -> registers live on exit (mask)
    after: dict[int, int]         # instruction slot -> registers live after it (mask)

    def dead(self, pc: int) -> bool:
        """The instruction at ``pc`` is pure and nothing reads what it writes."""
        return pc in self._dead

    def __post_init__(self) -> None:
        self._dead: set[int] = set()


def liveness(cfg, decoded, strong: bool = True, call_uses=None) -> Liveness:
    """Liveness for a program given its CFG and ``prog.instructions()``.

    ``strong=False`` is the verifier's view (compute_live_registers): every instruction's
    operands count as read (a dead load is still checked, and still executed, so its base
    register matters), and a call writes r0-r5 (the verifier gives r0 the call's result and
    clobbers r1-r5, also after a tail call that does not happen). ``call_uses(insn)``, when
    given, is the mask of argument registers a call reads (a helper's prototype: the kernel's
    get_call_summary) or None for r1-r5."""
    steps = {}     # pc -> (uses, defs, pure)
    for pc, form, insn in decoded:
        uses = None
        if form.kind in ("call", "callx"):
            defs = 0 if strong else 0b111111
            if call_uses is not None and form.kind == "call":
                uses = call_uses(form, insn)
        else:
            defs = _mask(written_regs(form, insn))
        if uses is None:
            uses = _mask(read_regs(form, insn))
        steps[pc] = (uses, defs, strong and is_pure(form))
    order = sorted(cfg.blocks)
    pcs_of: dict[int, list[int]] = {start: [] for start in order}
    k, n = -1, len(order)
    for pc, _, _ in decoded:
        while k + 1 < n and pc >= order[k + 1]:
            k += 1
        if k >= 0 and pc < cfg.blocks[order[k]].end:
            pcs_of[order[k]].append(pc)

    def through(start: int, live: int, record: dict | None = None) -> int:
        """Registers live before block ``start`` given those live after it."""
        for pc in reversed(pcs_of[start]):
            if record is not None:
                record[pc] = live
            uses, defs, pure = steps[pc]
            if pure and not defs & live:
                continue          # dead: its operands are not read on its account
            live = (live & ~defs) | uses
        return live

    live_in = dict.fromkeys(order, 0)
    live_out = dict.fromkeys(order, 0)
    changed = True
    while changed:           # blocks mostly jump forward: reverse order converges fast
        changed = False
        for start in reversed(order):
            out = 0
            for succ in cfg.blocks[start].succs:
                out |= live_in.get(succ, 0)
            live_out[start] = out
            new_in = through(start, out)
            if new_in != live_in[start]:
                live_in[start] = new_in
                changed = True
    result = Liveness(live_in, live_out, {})
    for start in order:
        through(start, live_out[start], result.after)
    result._dead = {pc for pc, live in result.after.items()
                    if steps[pc][2] and not steps[pc][1] & live}
    result.before = {pc: (live & ~steps[pc][1]) | steps[pc][0]
                     for pc, live in result.after.items()}
    return result
