"""What each instruction form does to registers, read off the ISA table's ``kind``/``op`` fields.

Shared by the interpreter's code generator, the JIT's lowering and its static register-kind
analysis (and later the verifier), so that no two of them keep their own list.
"""
from __future__ import annotations

from pybpf import isa


def written_regs(form: isa.Form, insn) -> tuple[int, ...]:
    """Registers an instruction writes (from the form's kind/op)."""
    k, op = form.kind, form.op
    if k in ("alu", "neg", "movsx", "end", "cast", "ldx", "lddw") or op == "load_acq":
        return (insn.dst,)
    if k == "atomic" and (op.startswith("fetch_") or op == "xchg"):
        return (insn.src,)
    if k in ("call", "callx", "ldabs") or (k, op) == ("atomic", "cmpxchg"):
        return (0,)
    return ()
