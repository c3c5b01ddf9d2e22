"""Switch recovery: a tree of compares of one register against constants becomes an LLVM switch.

clang's BPF backend has no jump tables: it compiles a C ``switch`` into a binary search tree of
conditional jumps (``if w8 s> 0x1f goto ...``), each in a block of its own. LLVM's SimplifyCFG
rebuilds switches from chains of equality compares but not from such range trees, so without
help the JIT'd code runs the whole tree (six mispredicted compares for 64 cases) where native
code takes one indirect jump.

:func:`find_trees` finds, in one subprogram, each compare tree: a conditional jump of a register
against an immediate whose successors are blocks made of nothing but another compare of the
same register (same width) against an immediate, recursively. The tree is evaluated here, with
BPF's exact compare semantics, for every value in ``[min constant - 1, max constant + 1]``, and
:func:`emit` writes ``switch iN %reg`` with one case per value, straight to the leaf each value
reaches; any other value goes to the original root compare, whose tree is lowered as before.
LLVM then knows the register's range (from the ``and`` before the switch, say), drops the
default when the cases cover it, and builds a jump table (``pybpf.jit.link`` places it).
The interior compare blocks are still lowered (other code may jump into them), so this never
changes which block any value reaches.
"""
from __future__ import annotations

from dataclasses import dataclass

from pybpf.jit import cgutils as cg

# A tree needs this many compares to be worth a switch, and its constants this narrow a span.
MIN_COMPARES = 4
MAX_SPAN = 1024

_SIGNED = {"jsgt", "jsge", "jslt", "jsle"}


@dataclass(frozen=True)
class Tree:
    width: int
    # (value as a signed width-bit int, leaf pc, pc of the compare that jumps to the leaf)
    cases: tuple[tuple[int, int, int], ...]
    compares: int


def _test(op: str, a: int, c: int, width: int) -> bool:
    mask = (1 << width) - 1
    if op in _SIGNED:
        half = 1 << (width - 1)
        a, c = ((a & mask) ^ half) - half, ((c & mask) ^ half) - half
    else:
        a, c = a & mask, c & mask
    if op in ("jeq",):
        return a == c
    if op == "jne":
        return a != c
    if op in ("jgt", "jsgt"):
        return a > c
    if op in ("jge", "jsge"):
        return a >= c
    if op in ("jlt", "jslt"):
        return a < c
    return a <= c   # jle, jsle


def _compare(form, insn) -> bool:
    return form.kind == "jcond" and form.source == "K" and form.op != "jset"


def find_trees(body, leaders) -> dict[int, Tree]:
    """pc of each root compare -> its :class:`Tree`, for the subprogram ``body`` (a list of
    (pc, form, insn)) with block leaders ``leaders``."""
    at = {pc: (form, insn) for pc, form, insn in body}
    block_end = {}
    starts = sorted(leaders)
    for i, s in enumerate(starts):
        block_end[s] = starts[i + 1] if i + 1 < len(starts) else None

    def lone_compare(pc: int, reg: int, width: int):
        """(form, insn) when the block at ``pc`` is one compare of ``reg`` at ``width``."""
        if pc not in block_end or block_end[pc] != pc + 1 or pc not in at:
            return None
        form, insn = at[pc]
        if _compare(form, insn) and insn.dst == reg and form.width == width:
            return form, insn
        return None

    claimed: set[int] = set()
    trees: dict[int, Tree] = {}
    for pc, form, insn in body:
        if pc in claimed or not _compare(form, insn):
            continue
        reg, width = insn.dst, form.width
        nodes: dict[int, tuple] = {pc: (form, insn)}
        todo = [pc]
        while todo:
            node = todo.pop()
            f, i = nodes[node]
            for succ in (node + 1 + i.off, node + 1):
                if succ not in nodes:
                    inner = lone_compare(succ, reg, width)
                    if inner is not None:
                        nodes[succ] = inner
                        todo.append(succ)
        if len(nodes) < MIN_COMPARES:
            continue
        consts = [i.imm for _, i in nodes.values()]   # imm sign-extends to either width
        lo, hi = min(consts) - 1, max(consts) + 1
        if hi - lo > MAX_SPAN:
            continue
        cases = []
        for v in range(lo, hi + 1):
            node, seen, origin = pc, set(), pc
            while node in nodes and node not in seen:
                seen.add(node)
                f, i = nodes[node]
                origin = node
                node = node + 1 + i.off if _test(f.op, v, i.imm, width) else node + 1
            if node in nodes:   # a cycle of compares: leave this tree alone
                cases = None
                break
            cases.append((v, node, origin))
        if cases is None:
            continue
        claimed.update(n for n in nodes if n != pc)
        trees[pc] = Tree(width, tuple(cases), len(nodes))
    return trees


def emit(fl, tree: Tree, value, cond, taken, fallthrough) -> None:
    """End the current block with ``switch`` over ``value`` (the root's compare operand, already
    narrowed to the tree's width); other values take the root compare ``cond``. A case whose
    leaf lies backwards is a back edge of the compare that jumps there (``fl.back_edge``: in
    code for an unverified load it goes through the leaf's latch, which charges the run
    budget, as the compare itself would)."""
    b = fl.b
    rest = fl.fn.append_basic_block(f"L{fl.pc}.tree")
    sw = b.switch(value, rest)
    ty = cg.INT[tree.width]
    edges: dict[tuple[int, int], object] = {}
    for v, leaf, origin in tree.cases:
        if (leaf, origin) not in edges:
            edges[leaf, origin] = fl.back_edge(leaf, origin)
        sw.add_case(cg.const(ty, v), edges[leaf, origin])
    b.position_at_end(rest)
    b.branch_if(cond, taken, fallthrough)
