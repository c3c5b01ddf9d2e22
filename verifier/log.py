"""The verifier log in the kernel's format (kernel/bpf/log.c and the printers in verifier.c).

Each processed instruction prints as ``IDX: (OPCODE) TEXT`` in the kernel's disassembly style
(:func:`pybpf.disasm.format_insn`), followed, at the kernel's alignment column, by ``;`` and the
registers the instruction wrote (``R0_w=0``). A state popped from the branch stack prints
``from A to B:`` and its registers; the log ends with ``processed N insns (limit 1000000)
max_states_per_insn N total_states N peak_states N mark_read N``. Registers print as
print_verifier_state prints them: ``R1=ctx()``, ``R10=fp0``, ``R0=map_value(map=counts,ks=4,vs=8)``,
``R2=pkt(off=14,r=14)``, scalars as :class:`bounds.Scalar` prints them.
"""
from __future__ import annotations

from pybpf.disasm import format_insn

from .state import (CONST_PTR_TO_MAP, PACKET_TYPES, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE, PTR_TO_MEM,
                    PTR_TO_STACK, SCALAR_VALUE, STACK_INVALID, STACK_SPILL, NOT_INIT, Reg)

LIMIT_LINE = "processed {processed_insns} insns (limit 1000000) max_states_per_insn " \
             "{max_states_per_insn} total_states {total_states} peak_states {peak_states} " \
             "mark_read {mark_read}\n"


def _snum(v: int) -> str:
    """verbose_snum: decimal for small numbers, else hex."""
    if -512 <= v <= 512:
        return str(v)
    return hex(v & ((1 << 64) - 1))


def reg_str(r: Reg, frameno: int = 0) -> str:
    """One register as print_reg_state prints it (without the ``R1=`` prefix)."""
    t = r.type
    if t == SCALAR_VALUE:
        return str(r.var)
    if t == NOT_INIT:
        return "?"
    s = r.type_str()
    v = r.var
    if t == PTR_TO_STACK:
        if r.frameno != frameno:
            s += f"[{r.frameno}]"
        if v.is_const():
            return s + _snum(v.smin + r.off)
    parts = []
    if r.id:
        parts.append(f"id={r.id}")
    if r.ref_obj_id:
        parts.append(f"ref_obj_id={r.ref_obj_id}")
    if t in (CONST_PTR_TO_MAP, PTR_TO_MAP_VALUE, PTR_TO_MAP_KEY) and r.map is not None:
        if r.map.name:
            parts.append(f"map={r.map.name}")
        parts.append(f"ks={r.map.key_size},vs={r.map.value_size}")
    if r.off:
        parts.append(f"off={_snum(r.off)}")
    if t in PACKET_TYPES:
        parts.append(f"r={r.range}")
    if t == PTR_TO_MEM:
        parts.append(f"sz={r.mem_size}")
    if v.is_const():
        if v.const_value():
            parts.append(f"imm={_snum(v.smin)}")
    else:
        inner = str(v)
        if inner.startswith("scalar(") and inner.endswith(")"):
            inner = inner[7:-1]
        if inner:
            parts.append(inner)
    return f"{s}({','.join(parts)})"


def state_str(state, written: set | None = None) -> str:
    """The registers (and stack slots) of the innermost frame, kernel order."""
    f = state.cur
    out = []
    for i, r in enumerate(f.regs):
        if r.type == NOT_INIT:
            continue
        w = "_w" if written and i in written else ""
        out.append(f"R{i}{w}={reg_str(r, f.frameno)}")
    for spi in sorted(f.stack):
        slot = f.stack[spi]
        if slot.types == STACK_INVALID * 8:
            continue
        if slot.spilled is not None and slot.types[7] == STACK_SPILL:
            out.append(f"fp{-(spi + 1) * 8}={reg_str(slot.spilled, f.frameno)}")
        elif hasattr(slot.spilled, "describe"):     # an iterator: iter_num(ref_id=1,...)
            out.append(f"fp{-(spi + 1) * 8}={slot.spilled.describe()}")
        else:
            out.append(f"fp{-(spi + 1) * 8}={slot.types}")
    return " ".join(out)


class Log:
    """Collects the log; every method is a no-op at level 0 except :meth:`line`."""

    def __init__(self, level: int, prog) -> None:
        self.level = level
        self.enabled = level > 0
        self.prog = prog
        self.lines: list[str] = []
        self._pending = None           # (text, regs before) of the instruction being stepped

    def line(self, msg: str) -> None:
        self.lines.append(msg)

    def insn(self, pc: int, state) -> None:
        insn = self.prog.insns[pc]
        text = f"{pc}: ({insn.opcode:02x}) {format_insn(self.prog, pc, 'kernel')}"
        self._pending = (text, list(state.cur.regs), state.curframe)

    def after(self, state) -> None:
        if self._pending is None:
            return
        text, before, frame = self._pending
        self._pending = None
        if state.curframe != frame:
            self.lines.append(text)
            return
        regs = state.cur.regs
        changed = {i for i, (a, b) in enumerate(zip(before, regs)) if a is not b}
        if not changed:
            self.lines.append(text)
            return
        parts = [f"R{i}_w={reg_str(regs[i], state.cur.frameno)}" for i in sorted(changed)
                 if regs[i].type != NOT_INIT]
        pad = max(40 - len(text) - 1, 1) if len(text) < 40 else (-len(text)) % 8 or 8
        self.lines.append(f"{text}{' ' * pad}; {' '.join(parts)}" if parts else text)

    def flush_pending(self) -> None:
        if self._pending is not None:
            self.lines.append(self._pending[0])
            self._pending = None

    def from_to(self, src: int, dst: int, state) -> None:
        """Level 2, the first instruction after a pop or a function's return: the state."""
        if self.enabled:
            self.flush_pending()
            self.lines.append("")
            self.lines.append(f"from {src} to {dst}: {state_str(state)}")

    def pruned(self, src: int, pc: int, popped: bool) -> None:
        """A state pruned at ``pc``: ``from A to B: safe`` when nothing was processed since
        the pop (or return) that led there, else ``B: safe`` (do_check)."""
        if self.enabled:
            self.flush_pending()
            if popped:
                self.lines.append("")
                self.lines.append(f"from {src} to {pc}: safe")
            else:
                self.lines.append(f"{pc}: safe")

    def reset(self, pos: int) -> None:
        """bpf_vlog_reset: forget what was logged after ``pos`` lines."""
        self._pending = None
        del self.lines[pos:]

    def text(self) -> str:
        self.flush_pending()
        return "".join(line + "\n" for line in self.lines)

    @staticmethod
    def stats_line(stats: dict) -> str:
        return LIMIT_LINE.format(**stats)
