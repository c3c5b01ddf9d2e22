"""The interpreter's semantics: one Python snippet per ISA form, keyed by the form's ``kind``/``op``.

:data:`SNIPPETS` maps ``(kind, op)`` (the semantic keys of :mod:`pybpf.isa`, never opcodes) to a
template or a function of :class:`Ops`, the operands of one instruction already spelled as Python
expressions (registers are locals ``r0``..``r10`` holding unsigned 64-bit ints). The code
generator (:mod:`pybpf.runtime.interp_codegen`) pastes the snippets into straight-line code; both
the fast and the tracing variants come from this one table.

Control transfers write ``{GOTO}`` where the generator inserts the jump (``pc = T; continue`` or a
local ``continue``/``break``). Memory snippets check the address against the current stack frame
and the fast region inline and fall back to the run's region table (``_ld``/``_st``), which raises
MemoryAccessError before touching memory.

Semantics (RFC 9669 sections 4-5): arithmetic wraps; 32-bit forms operate on the low
half and zero the upper half; K immediates are sign-extended for 64-bit forms; shift counts are
masked; x / 0 = 0, x % 0 = x (32-bit forms still zero-extend); INT_MIN s/ -1 = INT_MIN,
INT_MIN s% -1 = 0; sdiv/smod truncate toward zero.
"""
from __future__ import annotations

from dataclasses import dataclass

from pybpf import isa

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


def _hex(v: int) -> str:
    return hex(v) if v >= 0 else "-" + hex(-v)


@dataclass
class Ops:
    """Operands of one instruction as Python source text (see the module docstring)."""

    pc: int
    form: isa.Form
    insn: object
    d: str            # dst register local ("r3")
    sreg: str         # src register local
    s: str            # raw src operand: register, or K masked to the width (for ops masked after)
    sv: str           # src value at the width (unsigned)
    dv: str           # dst value at the width (unsigned)
    dsv: str          # dst value at the width, signed
    ssv: str          # src value at the width, signed
    sxv: str          # src value with the sign bit flipped (signed compares)
    M: str            # mask of the width
    SB: str           # sign bit of the width
    sh: str           # masked shift count
    K: int | None     # K immediate masked to the width (None for X forms)
    X: bool
    W: int
    n: int            # access size in bytes
    off: int
    value64: int = 0  # resolved ld_imm64 constant (cast_user: the arena's upper half)
    r10_fixed: bool = False  # the program never writes r10, so r10 is the frame pointer
    arena: bool = False  # the verifier typed the base register PTR_TO_ARENA (PROBE_MEM32)

    def wrap(self, expr: str) -> str:
        """``expr`` reduced to the width."""
        return f"({expr}) & {self.M}"

    def fit(self, expr: str) -> str:
        """``expr`` reduced to the width when it may exceed it (only 32-bit forms)."""
        return expr if self.W == 64 else self.wrap(expr)


def make_ops(pc: int, form: isa.Form, insn, value64: int = 0, r10_fixed: bool = False) -> Ops:
    W = form.width if form.kind in ("alu", "neg", "movsx", "jcond") else 64
    M, SB = (M64, 1 << 63) if W == 64 else (M32, 1 << 31)
    d, sreg = f"r{insn.dst}", f"r{insn.src}"
    if form.source == "K" and form.kind in ("alu", "jcond"):
        K = insn.imm & M
        s = sv = hex(K)
        ssv = _hex(insn.imm)            # imm is s32; sign-extended it is the same integer
        sxv = hex(K ^ SB)
        sh = str(K & (W - 1))
        X = False
    else:
        K, X = None, True
        s = sreg
        sv = sreg if W == 64 else f"({sreg} & {hex(M32)})"
        ssv = f"(({sv} ^ {hex(SB)}) - {hex(SB)})"
        sxv = f"({sv} ^ {hex(SB)})"
        sh = f"({sreg} & {W - 1})"
    dv = d if W == 64 else f"({d} & {hex(M32)})"
    dsv = f"(({dv} ^ {hex(SB)}) - {hex(SB)})"
    return Ops(pc, form, insn, d, sreg, s, sv, dv, dsv, ssv, sxv, hex(M), hex(SB), sh, K, X, W,
               form.size, insn.off, value64, r10_fixed)


# --- memory access code ---------------------------------------------------------------------
def _read(n: int, signed: bool, a: str) -> str:
    if signed:
        return f"_I{n}(P, {a})[0] & {hex(M64)}"
    return f"P[{a}]" if n == 1 else f"_U{n}(P, {a})[0]"


def _write(n: int, a: str, v: str) -> str:
    return f"P[{a}] = {v}" if n == 1 else f"_W{n}(P, {a}, {v})"


def _addr(base: str, off: int) -> str:
    return base if off == 0 else f"{base} + {off}" if off > 0 else f"{base} - {-off}"


def static_stack(o: Ops, base: str) -> bool:
    """Whether the access is inside the current frame without a run-time check.

    Only for ``r10 + off`` in programs that never write r10 (``o.r10_fixed`` set by the
    generator): r10 then always equals the frame pointer.
    """
    return (base == "r10" and o.r10_fixed and -isa.MAX_BPF_STACK <= o.off and o.off + o.n <= 0)


def load_code(o: Ops, dest: str, base: str, signed: bool) -> str:
    n, a = o.n, _addr(base, o.off)
    if o.arena:
        return f"{dest} = _ald({o.pc}, {base}, {o.off}, {n}, {signed})"
    if static_stack(o, base):
        return f"{dest} = {_read(n, signed, a)}"
    return (f"a = {a}\n"
            f"if SLO <= a <= SH{n} or MLO <= a <= MH{n}:\n"
            f"    {dest} = {_read(n, signed, 'a')}\n"
            f"else:\n"
            f"    {dest} = _ld({o.pc}, SLO, a, {n}, {signed})")


def store_code(o: Ops, base: str, value: str) -> str:
    n, a = o.n, _addr(base, o.off)
    if o.arena:
        return f"_ast({o.pc}, {base}, {o.off}, {n}, {value})"
    if static_stack(o, base):
        return _write(n, a, value)
    return (f"a = {a}\n"
            f"if SLO <= a <= SH{n} or MLO <= a <= MH{n}:\n"
            f"    {_write(n, 'a', value)}\n"
            f"else:\n"
            f"    _st({o.pc}, SLO, a, {n}, {value})")


def _size_mask(n: int) -> int:
    return (1 << (8 * n)) - 1


def _stx_value(o: Ops) -> str:
    return o.sreg if o.n == 8 else f"{o.sreg} & {hex(_size_mask(o.n))}"


def _atomic(o: Ops, op: str, target: str | None) -> str:
    if o.arena:
        call = f"_aat({o.pc}, {o.d}, {o.off}, {o.n}, {op!r}, {o.sreg}, r0)"
    else:
        call = f"_atomic({o.pc}, SLO, {_addr(o.d, o.off)}, {o.n}, {op!r}, {o.sreg}, r0)"
    return f"{target} = {call}" if target else call


# --- the table --------------------------------------------------------------------------------
def _div(o: Ops) -> str:
    if o.X:
        return f"{o.d} = {o.dv} // {o.sv} if {o.sv} else 0"
    return f"{o.d} = {o.dv} // {o.K}" if o.K else f"{o.d} = 0"


def _mod(o: Ops) -> str:
    if o.X:
        return f"{o.d} = {o.dv} % {o.sv} if {o.sv} else {o.dv}"
    return f"{o.d} = {o.dv} % {o.K}" if o.K else f"{o.d} = {o.dv}"


def _sdiv(o: Ops) -> str:
    if not o.X and not o.K:
        return f"{o.d} = 0"
    return f"{o.d} = _sdiv({o.dsv}, {o.ssv}) & {o.M}"


def _smod(o: Ops) -> str:
    if not o.X and not o.K:
        return f"{o.d} = {o.dv}"
    return f"{o.d} = _smod({o.dsv}, {o.ssv}) & {o.M}"


def _movsx(o: Ops) -> str:
    bits = int(o.form.op[1:])
    bm, bs = hex((1 << bits) - 1), hex(1 << (bits - 1))
    return f"{o.d} = " + o.wrap(f"(({o.sreg} & {bm}) ^ {bs}) - {bs}")


def _end(o: Ops) -> str:
    bits = o.form.width
    if o.form.op == "le":  # the VM is little-endian: to-LE only truncates
        return "pass" if bits == 64 else f"{o.d} = {o.d} & {hex((1 << bits) - 1)}"
    if bits == 16:
        return f"{o.d} = (({o.d} & 0xff) << 8) | (({o.d} >> 8) & 0xff)"
    if bits == 32:  # inline: cheaper than a call
        return (f"{o.d} = (({o.d} & 0xff) << 24) | (({o.d} & 0xff00) << 8) | "
                f"(({o.d} >> 8) & 0xff00) | (({o.d} >> 24) & 0xff)")
    return f"{o.d} = _bswap64({o.d})"


def _cast(o: Ops) -> str:
    low = f"{o.sreg} & {hex(M32)}"
    if o.form.op == "kern":
        return f"{o.d} = {low}"
    # cast_user: rebuild the user pointer from the arena's upper half; low 32 bits 0 is NULL.
    return f"{o.d} = ({hex(o.value64)} | ({low})) if {low} else 0"


def _cond(op: str, o: Ops) -> str:
    rel = {"jeq": "==", "jne": "!=", "jgt": ">", "jge": ">=", "jlt": "<", "jle": "<="}
    srel = {"jsgt": ">", "jsge": ">=", "jslt": "<", "jsle": "<="}
    if op in rel:
        return f"{o.dv} {rel[op]} {o.sv}"
    if op in srel:
        return f"({o.dv} ^ {o.SB}) {srel[op]} {o.sxv}"
    assert op == "jset", op
    return f"{o.d} & {o.sv}"     # sv is masked for 32-bit forms, so upper bits never count


def _ldabs(o: Ops) -> str:
    where = str(o.insn.imm) if o.form.op == "abs" else f"{o.sreg} + {o.insn.imm}"
    return f"r0 = _ldabs({o.pc}, {where}, {o.n})"


SNIPPETS: dict = {
    ("alu", "add"): lambda o: f"{o.d} = " + o.wrap(f"{o.d} + {o.s}"),
    ("alu", "sub"): lambda o: f"{o.d} = " + o.wrap(f"{o.d} - {o.s}"),
    ("alu", "mul"): lambda o: f"{o.d} = " + o.wrap(f"{o.d} * {o.s}"),
    ("alu", "div"): _div,
    ("alu", "sdiv"): _sdiv,
    ("alu", "mod"): _mod,
    ("alu", "smod"): _smod,
    ("alu", "or"): lambda o: f"{o.d} = " + o.fit(f"{o.d} | {o.s}"),
    ("alu", "and"): lambda o: f"{o.d} = " + o.fit(f"{o.d} & {o.s}"),
    ("alu", "xor"): lambda o: f"{o.d} = " + o.fit(f"{o.d} ^ {o.s}"),
    ("alu", "lsh"): lambda o: f"{o.d} = " + o.wrap(f"{o.d} << {o.sh}"),
    ("alu", "rsh"): lambda o: f"{o.d} = {o.dv} >> {o.sh}",
    ("alu", "arsh"): lambda o: f"{o.d} = " + o.wrap(f"{o.dsv} >> {o.sh}"),
    ("alu", "mov"): lambda o: f"{o.d} = {o.sv}",
    ("neg", "neg"): lambda o: f"{o.d} = -{o.d} & {o.M}",
    ("movsx", "s8"): _movsx,
    ("movsx", "s16"): _movsx,
    ("movsx", "s32"): _movsx,
    ("end", "le"): _end,
    ("end", "be"): _end,
    ("end", "bswap"): _end,
    ("cast", "kern"): _cast,
    ("cast", "user"): _cast,
    ("ldx", "ldx"): lambda o: load_code(o, o.d, o.sreg, False),
    ("ldx", "ldxs"): lambda o: load_code(o, o.d, o.sreg, True),
    ("st", "st"): lambda o: store_code(o, o.d, hex(o.insn.imm & _size_mask(o.n))),
    ("stx", "stx"): lambda o: store_code(o, o.d, _stx_value(o)),
    ("atomic", "load_acq"): lambda o: load_code(o, o.d, o.sreg, False),
    ("atomic", "store_rel"): lambda o: store_code(o, o.d, _stx_value(o)),
    ("atomic", "add"): lambda o: _atomic(o, "add", None),
    ("atomic", "or"): lambda o: _atomic(o, "or", None),
    ("atomic", "and"): lambda o: _atomic(o, "and", None),
    ("atomic", "xor"): lambda o: _atomic(o, "xor", None),
    ("atomic", "fetch_add"): lambda o: _atomic(o, "add", o.sreg),
    ("atomic", "fetch_or"): lambda o: _atomic(o, "or", o.sreg),
    ("atomic", "fetch_and"): lambda o: _atomic(o, "and", o.sreg),
    ("atomic", "fetch_xor"): lambda o: _atomic(o, "xor", o.sreg),
    ("atomic", "xchg"): lambda o: _atomic(o, "xchg", o.sreg),
    ("atomic", "cmpxchg"): lambda o: _atomic(o, "cmpxchg", "r0"),
    # Every ld_imm64 is a constant by the time the program runs: the loader resolves the pseudo
    # forms (map addresses, arena values, ...) into ``value64`` first, as the kernel does.
    ("lddw", "imm64"): lambda o: f"{o.d} = {hex(o.value64)}",
    ("lddw", "map_fd"): lambda o: f"{o.d} = {hex(o.value64)}",
    ("lddw", "map_value"): lambda o: f"{o.d} = {hex(o.value64)}",
    ("lddw", "btf_id"): lambda o: f"{o.d} = {hex(o.value64)}",
    ("lddw", "func"): lambda o: f"{o.d} = {hex(o.value64)}",
    ("lddw", "map_idx"): lambda o: f"{o.d} = {hex(o.value64)}",
    ("lddw", "map_idx_value"): lambda o: f"{o.d} = {hex(o.value64)}",
    ("ldabs", "abs"): _ldabs,
    ("ldabs", "ind"): _ldabs,
    ("jcond", "*"): lambda o: f"if {_cond(o.form.op, o)}:\n    {{GOTO}}",
    ("ja", "ja"): "{GOTO}",
    ("ja", "gotol"): "{GOTO}",
    # may_goto: a hidden per-frame counter starting at BPF_MAX_LOOPS; 0 means "take the jump".
    ("may_goto", "may_goto"): "if not mg:\n    {GOTO}\nmg -= 1",
    # Calls and exit need the generator's frame bookkeeping (see interp_codegen.call_code).
    ("call", "helper"): "{CALL}",
    ("call", "local"): "{CALL}",
    ("call", "kfunc"): "{CALL}",
    ("callx", "callx"): "r0 = _callx({pc}, SLO, {d}, r1, r2, r3, r4, r5)",
    ("exit", "exit"): "return r0, left",
}


def snippet(o: Ops) -> str:
    """The code for one instruction (``{GOTO}``/``{CALL}`` left for the generator)."""
    entry = SNIPPETS.get((o.form.kind, o.form.op)) or SNIPPETS.get((o.form.kind, "*"))
    if entry is None:  # the table covers every form; tests/test_interp.py checks it
        raise KeyError(f"no interpreter snippet for {o.form.name} ({o.form.kind}/{o.form.op})")
    if callable(entry):
        return entry(o)
    return entry.replace("{pc}", str(o.pc)).replace("{d}", o.d)


def has_snippet(form: isa.Form) -> bool:
    return (form.kind, form.op) in SNIPPETS or (form.kind, "*") in SNIPPETS
