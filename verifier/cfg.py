"""Control-flow structure of a program: subprograms, basic blocks, and the structural checks.

The kernel's ``check_subprogs`` and ``check_cfg`` in miniature: subprogram boundaries come from
BPF-to-BPF call targets (and ld_imm64 func references), every jump must stay inside its
subprogram and must not land in the second slot of an ld_imm64, each subprogram must end in an
exit or an unconditional jump, and every instruction must be reachable. Messages are the kernel's
so users can search for them. The interpreter, the JIT and the verifier all take their leaders
and subprogram boundaries from here.
"""
from __future__ import annotations

import errno
from bisect import bisect_right
from dataclasses import dataclass, field

from pybpf.errors import VerifierError
from pybpf.program import Program


@dataclass
class Subprog:
    start: int          # first slot
    end: int            # one past the last slot
    name: str


@dataclass
class Block:
    start: int
    end: int                                   # one past the last slot of the block
    succs: list[int] = field(default_factory=list)   # successor block starts (within subprog)


@dataclass
class CFG:
    subprogs: list[Subprog]
    leaders: list[int]
    blocks: dict[int, Block]
    form_at: dict                              # slot -> (form, insn) for instruction starts

    def subprog_of(self, slot: int) -> Subprog:
        i = bisect_right([s.start for s in self.subprogs], slot) - 1
        if i < 0 or slot >= self.subprogs[i].end:
            raise KeyError(slot)
        return self.subprogs[i]


class _FormAtDict(dict):
    """form_at for a plain list of (slot, form, insn) (what pybpf.program.FormAt is for a
    Program's instructions)."""

    def __init__(self, decoded) -> None:
        super().__init__((pc, (form, insn)) for pc, form, insn in decoded)
        self._index = {pc: i for i, (pc, _, _) in enumerate(decoded)}

    def index(self, pc: int) -> int | None:
        return self._index.get(pc)


def jump_target(form, insn, pc: int) -> int | None:
    """Slot a jump/call at ``pc`` refers to (relative to the next slot), or None."""
    if form.kind in ("jcond", "may_goto") or form.name == "ja":
        return pc + 1 + insn.off
    if form.name == "gotol":
        return pc + 1 + insn.imm
    if form.kind == "call" and form.op == "local":
        return pc + 1 + insn.imm
    if form.kind == "lddw" and form.op == "func":
        return pc + 1 + insn.imm
    return None


def _ends_block(form) -> bool:
    return form.kind in ("jcond", "ja", "may_goto", "exit")


def _falls_through(form) -> bool:
    return form.kind not in ("ja", "exit")


def _targets(decoded, form_at, nslots) -> set:
    """The other subprogram starts (calls and func references inside the program)."""
    out = set()
    for pc, form, insn in decoded:
        if (form.kind == "call" and form.op == "local") or (form.kind == "lddw" and form.op == "func"):
            tgt = jump_target(form, insn, pc)
            if 0 <= tgt < nslots:
                out.add(tgt)
    return out


def _check_subprogs(decoded, form_at, starts: list, nslots: int, fail) -> None:
    """check_subprogs: in instruction order, a jump leaving its subprogram (``jump out of
    range``) and a subprogram whose last slot is not an exit or a jump (``last insn is not an
    exit or jmp``), whichever comes first."""
    ends = {e - 1: e for e in starts[1:] + [nslots]}
    sp = 0
    for pc, form, insn in decoded:
        while sp + 1 < len(starts) and pc >= starts[sp + 1]:
            sp += 1
        lo, hi = starts[sp], starts[sp + 1] if sp + 1 < len(starts) else nslots
        if form.kind in ("jcond", "ja", "may_goto"):
            tgt = jump_target(form, insn, pc)
            if not lo <= tgt < hi:
                fail(f"jump out of range from insn {pc} to {tgt}", pc)
        last = pc + form.slots - 1
        for slot in range(pc, last + 1):
            # the subprogram's last slot (of a two-slot ld_imm64: either half) must be an exit
            # or an unconditional jump
            if slot in ends and (slot != pc or form.kind not in ("exit", "ja")):
                fail("last insn is not an exit or jmp", pc)


def build_cfg(prog: Program, check: bool = True, after_subprogs=None) -> CFG:
    """Subprograms, leaders and blocks of ``prog``; with ``check`` also the structural checks.
    ``after_subprogs()`` runs between the kernel's check_subprogs and check_cfg stages (where
    bpf_check resolves ld_imm64 references)."""
    decoded = prog.instructions()
    nslots = len(prog.insns)
    # slot -> (form, insn) for instruction starts: the Program's compact mapping
    form_at = decoded.form_at() if hasattr(decoded, "form_at") else _FormAtDict(decoded)

    def fail(msg: str, idx: int | None, kind: int = errno.EINVAL):
        raise VerifierError(msg, idx, log=msg + "\n", errno=kind)

    starts = {0}
    for pc, form, insn in decoded:
        if (form.kind == "call" and form.op == "local") or (form.kind == "lddw" and form.op == "func"):
            tgt = jump_target(form, insn, pc)
            if tgt < 0 or tgt >= nslots:          # add_subprog, for calls and func refs alike
                fail("call to invalid destination", pc)
            if tgt not in form_at:
                # the kernel starts a subprogram there: the one before it then ends inside
                # ld_imm64 (check_subprogs: "last insn is not an exit or jmp", in index order)
                if check:
                    _check_subprogs(decoded, form_at, sorted(starts | {tgt}
                                    | _targets(decoded, form_at, nslots)), nslots, fail)
                fail(f"invalid func reference at insn {pc}", pc)
            starts.add(tgt)
    starts_sorted = sorted(starts)
    subprogs = []
    for i, s in enumerate(starts_sorted):
        end = starts_sorted[i + 1] if i + 1 < len(starts_sorted) else nslots
        name = prog.functions.get(s) or prog.labels.get(s) or (prog.name if s == 0 else f"sub_{s}")
        subprogs.append(Subprog(s, end, name))

    sp_starts = [sp.start for sp in subprogs]

    def subprog_at(slot: int) -> Subprog:
        return subprogs[bisect_right(sp_starts, slot) - 1]

    if check:
        _check_subprogs(decoded, form_at, starts_sorted, nslots, fail)
        if after_subprogs is not None:
            after_subprogs()
    leaders = set(starts)
    for pc, form, insn in decoded:
        tgt = jump_target(form, insn, pc) if form.kind in ("jcond", "ja", "may_goto") else None
        if tgt is not None:
            sp = subprog_at(pc)
            inside = sp.start <= tgt < sp.end
            if check and tgt not in form_at:
                fail(f"jump into the middle of ldimm64 insn {tgt - 1}", pc)
            if inside and tgt in form_at:
                leaders.add(tgt)
        if _ends_block(form) and pc + form.slots < nslots:
            leaders.add(pc + form.slots)

    # index of each instruction start, so "the last instruction before slot N" is O(1)
    def last_before(end: int) -> int:
        return decoded[(form_at.index(end) if end < nslots else len(decoded)) - 1][0]

    ordered = sorted(leaders)
    blocks: dict[int, Block] = {}
    for i, start in enumerate(ordered):
        end = min(ordered[i + 1] if i + 1 < len(ordered) else nslots, subprog_at(start).end)
        blocks[start] = Block(start, end)
    for b in blocks.values():
        last = last_before(b.end)
        form, insn = form_at[last]
        if form.kind in ("jcond", "ja", "may_goto"):
            tgt = jump_target(form, insn, last)
            if tgt in blocks:
                b.succs.append(tgt)
        if _falls_through(form) and b.end in blocks and b.end not in starts:
            b.succs.append(b.end)

    cfg = CFG(subprogs, ordered, blocks, form_at)
    if check:
        _check_reachable(cfg, fail)
    return cfg


def _check_reachable(cfg: CFG, fail) -> None:
    seen: set[int] = set()
    for sp in cfg.subprogs:
        stack = [sp.start]
        while stack:
            b = stack.pop()
            if b in seen:
                continue
            seen.add(b)
            stack.extend(cfg.blocks[b].succs)
    for start in cfg.leaders:
        if start not in seen:
            fail(f"unreachable insn {start}", start)


def check_structure(prog: Program, after_subprogs=None) -> CFG:
    """Raise VerifierError (kernel wording) unless ``prog`` is structurally sound; return its CFG.
    ``after_subprogs``: see :func:`build_cfg`."""
    if not prog.insns:
        raise VerifierError("empty program", 0, errno=errno.EINVAL)
    return build_cfg(prog, check=True, after_subprogs=after_subprogs)
