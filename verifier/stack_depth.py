"""The kernel's check_max_stack_depth: at most 8 frames and 512 bytes of stack along any call chain.

Until the abstract interpreter tracks the deepest stack slot each subprogram touches, the
depth of a subprogram is what it addresses directly through r10 (a lower bound), rounded to 32
bytes as the kernel rounds it.
"""
from __future__ import annotations

from pybpf import isa
from pybpf.errors import VerifierError
from pybpf.program import Program

from .cfg import jump_target


def direct_stack_use(prog: Program, sp) -> int:
    """Bytes of stack a subprogram addresses directly through r10, rounded to 32."""
    deepest = 0
    for pc, form, insn in prog.instructions():
        if not sp.start <= pc < sp.end or not form.size:
            continue
        base = insn.src if form.kind == "ldx" or form.op == "load_acq" else insn.dst
        if base == 10 and insn.off < 0:
            deepest = max(deepest, -insn.off)
    return deepest


def round_stack(depth: int) -> int:
    return -(-max(depth, 1) // 32) * 32


def check_stack_depth(prog: Program, cfg, use: dict[int, int] | None = None) -> None:
    """Raise VerifierError unless every call chain fits in 8 frames and 512 bytes combined.

    ``use`` maps subprogram start -> deepest stack byte it touches (the abstract interpreter's
    figure); without it the direct r10 use is taken."""
    if use is None:
        use = {sp.start: direct_stack_use(prog, sp) for sp in cfg.subprogs}
    use = {k: round_stack(v) for k, v in use.items()}
    callees: dict[int, list[int]] = {sp.start: [] for sp in cfg.subprogs}
    for pc, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "local":
            callees[cfg.subprog_of(pc).start].append(jump_target(form, insn, pc))

    memo: dict[tuple[int, int], tuple[int, int]] = {}

    def deepest(start: int, frames: int) -> tuple[int, int]:
        """(stack bytes, frames) of the deepest call chain from ``start`` at ``frames`` deep."""
        if frames > isa.MAX_CALL_FRAMES:
            raise VerifierError(f"the call stack of {frames} frames is too deep !", start)
        key = (start, frames)
        if key not in memo:
            below = [deepest(c, frames + 1) for c in callees[start]]
            depth, n = max(below, default=(0, frames))
            memo[key] = (use.get(start, 32) + depth, n)
        return memo[key]

    total, frames = deepest(cfg.subprogs[0].start, 1)
    if total > isa.MAX_BPF_STACK:
        raise VerifierError(f"combined stack size of {frames} calls is {total}. Too large", 0)
