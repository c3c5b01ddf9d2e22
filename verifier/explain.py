"""Why the verifier refused a program, in a few lines a person can read (beyond the kernel).

:func:`explain` turns a :class:`~pybpf.errors.VerifierError` into: the failing instruction with
its source line (``.BTF.ext`` line info when the program came from an object), the kernel's
message, the branch decisions on the path that reached it, and where the register the message
names got its type (``r0 may be NULL: it comes from bpf_map_lookup_elem at insn 5 (xdp.c:31),
and no branch on this path compared it with 0``).
"""
from __future__ import annotations

import re


def source_location(prog, pc: int):
    """(file:line, text) of the source line an instruction came from, or None."""
    if prog is None or pc is None:
        return None
    best = None
    for slot, rec in getattr(prog, "line_info", ()) or ():
        if slot <= pc:
            best = rec
        else:
            break
    if best is not None:
        name = best.file.rsplit("/", 1)[-1] if best.file else "?"
        return f"{name}:{best.line}", best.text.strip()
    text = (getattr(prog, "lines", None) or {}).get(pc)
    return (None, text.strip()) if text else None


def _where(prog, pc: int) -> str:
    loc = source_location(prog, pc)
    if loc is None or loc[0] is None:
        return f"insn {pc}"
    return f"insn {pc} ({loc[0]})"


def _insn_text(prog, pc: int) -> str:
    from pybpf.disasm import format_insn
    try:
        return format_insn(prog, pc, "kernel")
    except Exception:      # a bad slot: the message already says why
        return "?"


def explain(err) -> str:
    """The explanation of ``err`` (a VerifierError); plain message when nothing is known."""
    ctx = getattr(err, "context", None)
    prog = getattr(err, "program", None)
    pc = err.insn_idx
    out = []
    if prog is not None and pc is not None and 0 <= pc < len(prog.insns):
        line = f"insn {pc}: {_insn_text(prog, pc)}"
        loc = source_location(prog, pc)
        if loc is not None:
            line += f"    ; {loc[0] + ': ' if loc[0] else ''}{loc[1]}"
        out.append(line)
    out.append(f"rejected: {err.message}")
    if ctx is None:
        return "\n".join(out)
    path = ctx.get("branch_path", ())
    if path:
        steps = []
        for bpc, taken in path[-8:]:
            steps.append(f"insn {bpc} `{_insn_text(prog, bpc)}` "
                         f"{'taken' if taken else 'not taken'}")
        more = f" (and {len(path) - 8} earlier)" if len(path) > 8 else ""
        out.append("path" + more + ": " + "; ".join(steps))
    m = re.match(r"R(\d+) ", err.message)
    regs = ctx.get("regs")
    if m and regs is not None:
        regno = int(m.group(1))
        r = regs[regno] if regno < len(regs) else None
        if r is not None:
            out.append(_about_reg(prog, regno, r, path, ctx))
    return "\n".join(out)


def _is_zero_test(prog, pc: int) -> bool:
    from pybpf import isa
    insn = prog.insns[pc]
    form = isa.find_form(insn.opcode, insn.src, insn.off, insn.imm)
    return (form is not None and form.kind == "jcond" and form.op in ("jeq", "jne")
            and form.source == "K" and insn.imm == 0)


def _about_reg(prog, regno: int, r, path, ctx) -> str:
    from .state import NOT_INIT, PTR_MAYBE_NULL, SCALAR_VALUE
    origin = r.origin
    src = ""
    if origin is not None:
        opc, what = origin
        src = f"it comes from {what} at {_where(prog, opc)}"
    if r.type == NOT_INIT:
        return (f"r{regno} was never written on this path"
                + (" (or a call clobbered it: r1-r5 do not survive calls)" if regno in
                   range(1, 6) else ""))
    if r.flags & PTR_MAYBE_NULL:
        start = origin[0] if origin else -1
        compared = [p for p, _ in path if p > start and _is_zero_test(prog, p)]
        tail = ("and no branch on this path compared it with 0" if not compared else
                "and the comparisons with 0 on this path (" +
                ", ".join(f"insn {p}" for p in compared) + ") tested another register")
        return f"r{regno} may be NULL: {src}, {tail}" if src else f"r{regno} may be NULL"
    if r.type == SCALAR_VALUE:
        return f"r{regno} is a number, not a pointer ({r.var}){': ' + src if src else ''}"
    return f"r{regno} is {r.type_str()}{': ' + src if src else ''}"
