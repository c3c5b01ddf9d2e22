"""Translate a Program into Python source once at load, so the interpreter's hot loop never decodes.

Each BPF subprogram becomes one Python function ``F<slot>(r1..r5, fp, depth, left)`` returning
``(r0, left)``. Registers are its locals; ``fp`` is the frame pointer the interpreter gave it (r10
starts equal to it, but a store to r10 cannot move the frame); ``left`` is the instruction budget,
threaded through calls. Inside a function, code is laid out as *runs*: straight-line code from
each jump target (an *entry*) to the next unconditional transfer, so fall-through needs no
dispatch. Jumps set ``pc`` and go back to a binary ``if pc < N`` tree over the entries; a run that
jumps back to its own entry becomes a local ``while True`` loop and needs no dispatch at all.

The instruction budget is charged at the start of every basic block (leaders from
:func:`pybpf.verifier.cfg.build_cfg`), before the block runs: a run that executes at most
``insn_limit`` instructions always completes; one that would execute more stops before the block
that crosses the limit, so it never executes more than the limit.

Large subprograms (more than :data:`CHUNK_INSNS` instructions, up to the kernel's 1,000,000) are
split into *chunks*: consecutive entries adding up to about CHUNK_INSNS instructions, each one
function ``C<slot>_<k>(pc, r0..r10, fp, depth, left, mg)`` with the same dispatch inside; a jump
to another chunk's entry returns ``(pc, r0..r10, left, mg)`` to the subprogram's function, which
dispatches over its chunks, and an exit returns pc -1. Each chunk is its own source unit
(``def _mk<k>(ENV)`` building the chunk's closure from ``_build``'s names), compiled on its own
and its text dropped: CPython's compiler needs memory superlinear in one function's size (one
100,000-instruction function took 1.5 GB), while many small functions cost memory in proportion
to the program.

Everything an instruction does comes from :mod:`pybpf.runtime.interp_snippets`; the ``trace``
variant adds a hook after each instruction and is otherwise the same code.
"""
from __future__ import annotations

import bisect
import dataclasses
import os

from pybpf import isa
from pybpf.errors import VMError
from pybpf.verifier.cfg import CFG, jump_target
from pybpf.verifier.regs import written_regs

from .interp_snippets import make_ops, snippet

REGS = "(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10)"
_CONTROL = ("jcond", "ja", "may_goto", "exit")
# A subprogram of more instructions is split into chunk functions of about this many (module
# docstring); below it the generated code is one function, as it always was.
# PYBPF_INTERP_CHUNK=N sets it (tests run whole suites with tiny chunks to exercise the split).
CHUNK_INSNS = int(os.environ.get("PYBPF_INTERP_CHUNK") or 2048)
_STATE = "r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10"
# what a chunk passes back to its subprogram's dispatcher
_CHUNK_OUT = f"{_STATE}, left, mg"


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str, depth: int) -> None:
        pad = "    " * depth
        self.lines.extend(pad + line for line in text.split("\n"))


class Generator:
    """Python source for one program. ``values64`` maps ld_imm64/cast slots to resolved constants."""

    def __init__(self, prog, cfg: CFG, helpers, kfuncs, values64: dict[int, int],
                 trace: bool = False, arena_pcs: frozenset = frozenset()) -> None:
        self.prog, self.cfg, self.trace = prog, cfg, trace
        self.arena_pcs = arena_pcs      # memory insns the verifier proved arena accesses
        self.helpers, self.kfuncs, self.values64 = helpers, kfuncs, values64
        self.form_at = cfg.form_at
        self.slots = sorted(self.form_at)           # instruction starts (ld_imm64 once)
        self.r10_fixed = not any(10 in written_regs(f, i) for f, i in self.form_at.values())
        self.chunks: list[str] = []
        self._chunk_exit: str | None = None     # while writing a chunk: its exit template
        self._called: set[str] = set()          # helpers, kfuncs and functions code calls
        self.block_len = {b.start: self._count(b.start, b.end) for b in cfg.blocks.values()}
        self.used_helpers: set[int] = set()
        self.checked_helpers: set[int] = set()
        self.used_kfuncs: set[int] = set()
        self.checked_kfuncs: set[int] = set()

    def _count(self, start: int, end: int) -> int:
        """Instructions in slots [start, end)."""
        return bisect.bisect_left(self.slots, end) - bisect.bisect_left(self.slots, start)

    # -- whole program -----------------------------------------------------------------------
    def units(self):
        """The program's source in compilable units: first each chunk's ``def _mk<k>(ENV)``
        (module docstring), one at a time so the caller can compile it and drop its text, then
        ``_build(R)``, which calls ``MK[k](ENV)`` (the caller binds ``MK``, the made functions in
        order) for every chunk."""
        funcs = _Lines()
        self.chunks: list[str] = []             # chunk function names, in MK order
        for sp in self.cfg.subprogs:
            yield from self._function(funcs, sp)
        out = _Lines()
        out.add("def _build(R):", 0)
        out.add("\n".join(f"{name} = {expr}" for name, expr in self._prologue()), 1)
        out.lines.extend("    " + line for line in funcs.lines)
        if self.chunks:
            out.add("ENV = locals()", 1)
            out.add("\n".join(f"{c} = MK[{k}](ENV)" for k, c in enumerate(self.chunks)), 1)
        # every subprogram by its first slot, for callbacks (bpf_loop) and tail calls
        table = ", ".join(f"{sp.start}: F{sp.start}" for sp in self.cfg.subprogs)
        out.add(f"R.funcs = {{{table}}}", 1)
        out.add(f"return F{self.cfg.subprogs[0].start}", 1)
        yield "\n".join(out.lines) + "\n"

    def source(self) -> str:
        """All of :meth:`units` as one text (what ``lp.python_source`` shows)."""
        return "\n".join(self.units())

    def _prologue(self, calls: bool = True) -> list[tuple[str, str]]:
        """(name, expression) for what ``_build`` binds from the run ``R`` before the functions
        (``calls``: with the helpers and kfuncs the code calls)."""
        out = [("STOP", "R.stop"), ("MLO", "R.mlo"), ("MHI", "R.mhi")]
        for n in (1, 2, 4, 8):
            out += [(f"SH{n}", f"STOP - {n}"), (f"MH{n}", f"MHI - {n}")]
        out += [("_ld", "R.ld"), ("_st", "R.st"), ("_atomic", "R.atomic"), ("_ldabs", "R.ldabs"),
                ("_callx", "R.callx"), ("_limit", "R.limit_error"), ("_tail", "R.tail_call"),
                ("_loop", "R.loop"), ("_foreach", "R.for_each"), ("_rbadd", "R.rbtree_add")]
        if self.arena_pcs:
            out += [("_ald", "R.arena_ld"), ("_ast", "R.arena_st"), ("_aat", "R.arena_atomic")]
        if calls:
            out += [(f"_h{h}", f"R.helper_fn({h})") for h in sorted(self.used_helpers)]
            out += [(f"_hc{h}", f"R.helper_check({h})") for h in sorted(self.checked_helpers)]
            out += [(f"_k{k}", f"R.kfunc_fn({k})") for k in sorted(self.used_kfuncs)]
            out += [(f"_kc{k}", f"R.kfunc_check({k})") for k in sorted(self.checked_kfuncs)]
        if self.trace:
            out += [("_T", "R.trace_insn"), ("_TS", "R.trace_sync"), ("_TE", "R.trace_enter")]
        return out

    # -- one subprogram ----------------------------------------------------------------------
    def _function(self, out: _Lines, sp):
        """Write F<start> into ``out``; yield the source of each chunk maker (large ones)."""
        pcs = self.slots[bisect.bisect_left(self.slots, sp.start):
                         bisect.bisect_left(self.slots, sp.end)]
        entries = {sp.start}
        for p in pcs:
            form, insn = self.form_at[p]
            if form.kind in ("jcond", "ja", "may_goto"):
                t = jump_target(form, insn, p)
                if sp.start <= t < sp.end and t in self.form_at:
                    entries.add(t)
        entries = sorted(entries)
        uses_mg = any(self.form_at[p][0].kind == "may_goto" for p in pcs)
        out.add(f"def F{sp.start}(r1, r2, r3, r4, r5, fp, depth, left):", 0)
        out.add("r0 = r6 = r7 = r8 = r9 = 0\nr10 = fp", 1)
        if len(pcs) > CHUNK_INSNS:
            yield from self._chunked(out, sp, entries)
            return
        out.add("SLO = fp - 512", 1)
        if uses_mg:
            out.add(f"mg = {isa.BPF_MAX_LOOPS}", 1)
        if self.trace:
            out.add(f"_TE(depth, {REGS})", 1)
        if len(entries) == 1:
            self._run(out, sp, entries[0], set(entries), 1, dispatch=False)
            return
        out.add(f"pc = {sp.start}\nwhile True:", 1)
        self._tree(out, sp, entries, set(entries), 0, len(entries), 2)

    def _chunked(self, out: _Lines, sp, entries: list[int]):
        """The rest of F<start> as a dispatcher over chunk functions; yields each chunk's maker."""
        groups, cur, size = [], [], 0
        for i, e in enumerate(entries):
            nxt = entries[i + 1] if i + 1 < len(entries) else sp.end
            cur.append(e)
            size += self._count(e, nxt)
            if size >= CHUNK_INSNS:
                groups.append(cur)
                cur, size = [], 0
        if cur:
            groups.append(cur)
        names = []
        for group in groups:
            name = f"C{sp.start}_{len(names)}"
            names.append(name)
            yield self._chunk(sp, name, group, len(self.chunks))
            self.chunks.append(name)
        out.add(f"mg = {isa.BPF_MAX_LOOPS}", 1)
        if self.trace:
            out.add(f"_TE(depth, {REGS})", 1)
        out.add(f"pc = {sp.start}\nwhile True:", 1)
        starts = [g[0] for g in groups]

        def tree(lo: int, hi: int, depth: int) -> None:
            if hi - lo == 1:
                out.add(f"pc, {_CHUNK_OUT} = {names[lo]}(pc, {_STATE}, fp, depth, left, mg)",
                        depth)
                return
            mid = (lo + hi) // 2
            out.add(f"if pc < {starts[mid]}:", depth)
            tree(lo, mid, depth + 1)
            out.add("else:", depth)
            tree(mid, hi, depth + 1)

        tree(0, len(groups), 2)
        out.add("if pc < 0:\n    return r0, left", 2)

    def _chunk(self, sp, name: str, group: list[int], k: int) -> str:
        """The source of ``_mk<k>(ENV)``, which returns chunk function ``name`` covering the runs
        from the entries in ``group``; jumps to other entries of ``sp`` leave the chunk."""
        body = _Lines()
        body.add(f"def {name}(pc, {_STATE}, fp, depth, left, mg):", 0)
        body.add("SLO = fp - 512\nwhile True:", 1)
        self._chunk_exit = f"return {{}}, {_CHUNK_OUT}"
        self._called = set()
        try:
            self._tree(body, sp, group, set(group), 0, len(group), 2)
        finally:
            self._chunk_exit = None
        # the fixed names of _build's prologue, and the helpers, kfuncs, functions it calls
        binds = [n for n, _ in self._prologue(calls=False)] + sorted(self._called)
        head = [f"def _mk{k}(ENV):"] + [f"    {n} = ENV[{n!r}]" for n in binds]
        return "\n".join(head + ["    " + line for line in body.lines]
                         + [f"    return {name}", ""])

    def _tree(self, out: _Lines, sp, entries: list[int], entry_set: set[int], lo: int, hi: int,
              depth: int) -> None:
        if hi - lo == 1:
            self._run(out, sp, entries[lo], entry_set, depth, dispatch=True)
            return
        mid = (lo + hi) // 2
        out.add(f"if pc < {entries[mid]}:", depth)
        self._tree(out, sp, entries, entry_set, lo, mid, depth + 1)
        out.add("else:", depth)
        self._tree(out, sp, entries, entry_set, mid, hi, depth + 1)

    def _run(self, out: _Lines, sp, entry: int, entries: set[int], depth: int,
             dispatch: bool) -> None:
        seq, end, pc = [], None, entry
        while True:
            seq.append(pc)
            form, _ = self.form_at[pc]
            if form.kind in ("ja", "exit"):
                break
            nxt = pc + form.slots
            if nxt >= sp.end:
                end = "falloff"
                break
            if nxt in entries:
                end = nxt
                break
            pc = nxt
        selfloop = any(self.form_at[p][0].kind in ("jcond", "ja", "may_goto")
                       and jump_target(*self.form_at[p], p) == entry for p in seq)

        def goto(target: int, src: int) -> str:
            if target not in entries and self._chunk_exit and target in self.form_at \
                    and sp.start <= target < sp.end:
                return self._chunk_exit.format(target)      # another chunk's entry
            if target not in entries:
                return f"raise VMError('jump out of range from insn {src} to {target}', {src})"
            if selfloop and target == entry:
                return "continue"
            if selfloop:
                return f"pc = {target}; break"
            assert dispatch, "a single-entry function only jumps to its own entry"
            return f"pc = {target}; continue"

        if selfloop:
            out.add("while True:", depth)
            depth += 1
        for p in seq:
            if p in self.block_len:
                out.add(f"left -= {self.block_len[p]}\nif left < 0: raise _limit({p})", depth)
            out.add(self._insn(p, goto), depth)
        if end == "falloff":
            msg = f"fell off the end of subprogram {sp.name} at insn {seq[-1]}"
            out.add(f"raise VMError({msg!r}, {seq[-1]})", depth)
        elif end is not None:
            out.add(goto(end, seq[-1]), depth)

    # -- one instruction ---------------------------------------------------------------------
    def _insn(self, pc: int, goto) -> str:
        form, insn = self.form_at[pc]
        o = make_ops(pc, form, insn, self.values64.get(pc, 0), self.r10_fixed)
        if pc in self.arena_pcs:
            o = dataclasses.replace(o, arena=True)
        code = snippet(o)
        if form.kind in ("jcond", "ja", "may_goto"):
            code = code.replace("{GOTO}", goto(jump_target(form, insn, pc), pc))
        if form.kind == "call":
            code = self._call(pc, form, insn)
        if form.kind == "exit" and self._chunk_exit:
            code = self._chunk_exit.format(-1)
        if not self.trace:
            return code
        hook = f"_T({pc}, depth, {REGS})"
        if form.kind in _CONTROL:
            return hook + "\n" + code
        if (form.kind, form.op) == ("call", "local"):
            return hook + "\n" + code + f"\n_TS(depth, {REGS})"
        return code + "\n" + hook

    def _call(self, pc: int, form: isa.Form, insn) -> str:
        if form.op == "local":
            t = jump_target(form, insn, pc)
            self._called.add(f"F{t}")
            return (f"if depth >= {isa.MAX_CALL_FRAMES - 1}: raise VMError("
                    f"'the call stack of {{}} frames is too deep'.format(depth + 2), {pc})\n"
                    f"r0, left = F{t}(r1, r2, r3, r4, r5, fp - {isa.MAX_BPF_STACK}, depth + 1, "
                    f"left)")
        if form.op == "helper":
            reg, used, checked, pre = self.helpers, self.used_helpers, self.checked_helpers, "h"
            missing = f"invalid func unknown#{insn.imm}"
        else:
            if insn.imm == 0 and insn.off == 0:
                # the verifier accepts it only as dead code (the kernel removes it); reached in
                # an unverified program it is the kernel's fixup refusal, at run time
                return ("raise VMError('invalid kernel function call not eliminated in verifier "
                        f"pass', {pc})")
            reg, used, checked, pre = self.kfuncs, self.used_kfuncs, self.checked_kfuncs, "k"
            missing = f"unknown kernel function id {insn.imm}"
        h = reg.get(insn.imm) if reg is not None else None
        if h is None:
            raise VMError(missing, pc)
        if h.special == "tail_call":
            # On success the target replaces this frame (r1 = ctx, same stack frame, the
            # budget goes on); on failure execution falls through with r0 unchanged. The target
            # counts its own call depth from 0: the kernel's frame limit is per program, and
            # tail calls from subprograms stack programs up to MAX_TAIL_CALL_CNT deep.
            enter = "t(r1, 0, 0, 0, 0, fp, 0, left)"
            if self._chunk_exit:        # leave the chunk and its subprogram with the result
                enter = f"r0, left = {enter}\n    " + self._chunk_exit.format(-1)
            else:
                enter = "return " + enter
            return f"t = _tail({pc}, r2, r3)\nif t is not None:\n    {enter}"
        if h.special == "loop":
            return f"r0, left = _loop({pc}, fp, depth, left, r1, r2, r3, r4)"
        if h.special == "for_each":
            return f"r0, left = _foreach({pc}, fp, depth, left, r1, r2, r3, r4)"
        if h.special == "rbtree_add":
            return f"r0, left = _rbadd({pc}, fp, depth, left, r1, r2, r3)"
        used.add(h.id)
        self._called.add(f"_{pre}{h.id}")
        args = ", ".join(f"r{i}" for i in range(1, h.prototype.nargs + 1))
        lines = []
        if h.checks_memory:
            checked.add(h.id)
            self._called.add(f"_{pre}c{h.id}")
            lines.append(f"_{pre}c{h.id}({pc}, SLO, r1, r2, r3, r4, r5)")
        lines.append(f"r0 = _{pre}{h.id}({args}) & 0xffffffffffffffff")
        if h.unwind:
            lines.append("if not r0: raise _Stop()")
        return "\n".join(lines)
