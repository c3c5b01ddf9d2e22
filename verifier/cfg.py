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
        for sp in self.subprogs:
            if sp.start <= slot < sp.end:
                return sp
        raise KeyError(slot)


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


def build_cfg(prog: Program, check: bool = True) -> CFG:
    """Subprograms, leaders and blocks of ``prog``; with ``check`` also the structural checks."""
    decoded = prog.instructions()
    nslots = len(prog.insns)
    form_at = {pc: (form, insn) for pc, form, insn in decoded}

    def fail(msg: str, idx: int | None, kind: int = errno.EINVAL):
        raise VerifierError(msg, idx, log=msg + "\n", errno=kind)

    starts = {0}
    for pc, form, insn in decoded:
        if (form.kind == "call" and form.op == "local") or (form.kind == "lddw" and form.op == "func"):
            tgt = jump_target(form, insn, pc)
            if tgt < 0 or tgt >= nslots or tgt not in form_at:
                fail(f"call to invalid destination" if form.kind == "call"
                     else f"invalid func reference at insn {pc}", pc)
            starts.add(tgt)
    starts_sorted = sorted(starts)
    subprogs = []
    for i, s in enumerate(starts_sorted):
        end = starts_sorted[i + 1] if i + 1 < len(starts_sorted) else nslots
        name = prog.functions.get(s) or prog.labels.get(s) or (prog.name if s == 0 else f"sub_{s}")
        subprogs.append(Subprog(s, end, name))

    leaders = set(starts)
    for pc, form, insn in decoded:
        tgt = jump_target(form, insn, pc) if form.kind in ("jcond", "ja", "may_goto") else None
        if tgt is not None:
            sp = next(s for s in subprogs if s.start <= pc < s.end)
            if check and not (sp.start <= tgt < sp.end):
                fail(f"jump out of range from insn {pc} to {tgt}", pc)
            if check and tgt not in form_at:
                fail(f"jump into the middle of ldimm64 insn {tgt - 1}", pc)
            leaders.add(tgt)
        if _ends_block(form) and pc + form.slots < nslots:
            leaders.add(pc + form.slots)

    if check:
        for sp in subprogs:
            last = max(p for p in form_at if sp.start <= p < sp.end)
            lform = form_at[last][0]
            if lform.kind not in ("exit", "ja"):
                fail("last insn is not an exit or jmp", last)

    ordered = sorted(leaders)
    blocks: dict[int, Block] = {}
    for i, start in enumerate(ordered):
        sp_end = next(s.end for s in subprogs if s.start <= start < s.end)
        end = min(ordered[i + 1] if i + 1 < len(ordered) else nslots, sp_end)
        blocks[start] = Block(start, end)
    for b in blocks.values():
        last = max(p for p in form_at if b.start <= p < b.end)
        form, insn = form_at[last]
        if form.kind in ("jcond", "ja", "may_goto"):
            b.succs.append(jump_target(form, insn, last))
        if _falls_through(form) and b.end in blocks and last + form.slots == b.end:
            if not any(s.start == b.end for s in subprogs):
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


def check_structure(prog: Program) -> CFG:
    """Raise VerifierError (kernel wording) unless ``prog`` is structurally sound; return its CFG."""
    if not prog.insns:
        raise VerifierError("empty program", 0, errno=errno.EINVAL)
    return build_cfg(prog, check=True)
