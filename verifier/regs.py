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


_ARGS = (1, 2, 3, 4, 5)


def read_regs(form: isa.Form, insn) -> tuple[int, ...]:
    """Registers an instruction may read (from the form's kind/op).

    Calls read all five argument registers: the lowering passes r1-r5 whatever the callee's
    prototype, so this is what the code really reads, and never too little."""
    k, op = form.kind, form.op
    if k == "alu":
        own = () if op == "mov" else (insn.dst,)
        return own + ((insn.src,) if form.source == "X" else ())
    if k in ("neg", "end"):
        return (insn.dst,)
    if k in ("movsx", "cast", "ldx"):
        return (insn.src,)
    if k == "st":
        return (insn.dst,)
    if k == "stx":
        return (insn.dst, insn.src)
    if k == "atomic":
        if op == "load_acq":
            return (insn.src,)
        return (0, insn.dst, insn.src) if op == "cmpxchg" else (insn.dst, insn.src)
    if k == "jcond":
        return (insn.dst, insn.src) if form.source == "X" else (insn.dst,)
    if k == "exit":
        return (0,)
    if k == "call":
        return _ARGS
    if k == "callx":
        return (insn.dst,) + _ARGS
    if k == "ldabs":
        # The kernel reads the skb from r6 implicitly; ld_ind adds its index register.
        return (6, insn.src) if op == "ind" else (6,)
    return ()     # lddw, ja, may_goto


def is_pure(form: isa.Form) -> bool:
    """True when the instruction's only effect is writing its destination register: no memory
    write, no call, no control flow, nothing that can stop the program. Loads count as pure
    (BPF loads have no side effects; LLVM also deletes a load whose value is unused)."""
    return form.kind in ("alu", "neg", "movsx", "end", "cast", "ldx", "lddw")
