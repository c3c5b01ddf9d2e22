"""The kernel's check_max_stack_depth: at most 8 frames and 512 bytes of stack along any call chain.

The walk is the kernel's (check_max_stack_depth_subprog, for a kernel whose JIT is on, as the
running kernel's is: ``jit_requested``): from the main program, each subprogram's instructions
in order, dead code included, entering every BPF-to-BPF call and every callback a ``ld_imm64``
names (a callback's frame counts as a call's), each subprogram's depth rounded up to 16 bytes
(``round_up_stack_depth``: 0 stays 0), the 8th nested call "the call stack of 8 frames is too
deep !". A subprogram with a tail call may not be entered with 256 bytes or more above it.
Private stacks (``bpf_enable_priv_stack``: tracepoint, kprobe... subprograms of 64 bytes or more
kept out of the combined depth) are not in effect on the running kernel, measured
(tests/verifier/subprog/private_stack_*.vt): every frame counts. The depth of a subprogram is
the deepest stack byte the abstract interpreter saw it touch (``update_stack_depth``); without
that figure (structural checks only) what it addresses directly through r10.
"""
from __future__ import annotations

from pybpf import isa
from pybpf.errors import VerifierError
from pybpf.helper_names import HELPER_IDS
from pybpf.program import Program

from .cfg import jump_target

TAIL_CALL = HELPER_IDS["tail_call"]


def direct_stack_use(prog: Program, sp) -> int:
    """Bytes of stack a subprogram addresses directly through r10."""
    deepest = 0
    for pc, form, insn in prog.instructions():
        if not sp.start <= pc < sp.end or not form.size:
            continue
        base = insn.src if form.kind == "ldx" or form.op == "load_acq" else insn.dst
        if base == 10 and insn.off < 0:
            deepest = max(deepest, -insn.off)
    return deepest


def round_stack(depth: int) -> int:
    """round_up_stack_depth with the JIT on: up to a multiple of 16."""
    return -(-depth // 16) * 16


def check_stack_depth(prog: Program, cfg, use: dict[int, int] | None = None) -> None:
    """Raise VerifierError unless every call chain fits in 8 frames and 512 bytes combined.

    ``use`` maps subprogram start -> deepest stack byte it touches (the abstract interpreter's
    figure); without it the direct r10 use is taken."""
    if use is None:
        use = {sp.start: direct_stack_use(prog, sp) for sp in cfg.subprogs}
    starts = [sp.start for sp in cfg.subprogs]
    calls: dict[int, list[int]] = {s: [] for s in starts}     # callee starts, in insn order
    tail_calls: set[int] = set()
    for pc, form, insn in prog.instructions():
        local = form.kind == "call" and form.op == "local"
        if local or (form.kind == "lddw" and form.op == "func"):
            calls[cfg.subprog_of(pc).start].append(jump_target(form, insn, pc))
        elif form.kind == "call" and form.op == "helper" and insn.imm == TAIL_CALL:
            tail_calls.add(cfg.subprog_of(pc).start)
    # (start, depth, frame) walked without an error: the same again cannot fail (the kernel
    # walks every call site again; a program calling 100 times per level would take 100^7)
    done: set[tuple[int, int, int]] = set()

    def fail(msg: str, start: int):
        raise VerifierError(msg, start)

    def walk(start: int, depth: int, frame: int) -> None:
        if (start, depth, frame) in done:
            return
        if frame and start in tail_calls and depth >= 256:
            fail(f"tail_calls are not allowed when call stack of previous frames is {depth} "
                 f"bytes. Too large", start)
        depth += round_stack(use.get(start, 0))
        if depth > isa.MAX_BPF_STACK:
            fail(f"combined stack size of {frame + 1} calls is {depth}. Too large", start)
        for callee in calls[start]:
            if frame + 1 >= isa.MAX_CALL_FRAMES:
                fail(f"the call stack of {frame + 1} frames is too deep !", callee)
            walk(callee, depth, frame + 1)
        done.add((start, depth, frame))

    walk(starts[0], 0, 0)
