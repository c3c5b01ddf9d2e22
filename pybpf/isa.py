"""The BPF instruction set as one table of instruction forms (RFC 9669 plus kernel extensions).

Everything that needs to know about opcodes looks them up here: the codec (which fields must be
zero), the assembler (mnemonics, operand shapes, pseudo-C templates), the disassembler (three
printing styles), the interpreter and the JIT (semantic keys ``kind``/``op``/``width``/``size``).
Nothing else in pybpf lists opcodes.

A *form* is one opcode plus the value of its discriminator field where one opcode means several
things (``off`` for sdiv/smod/movsx/addr_space_cast, ``src`` for calls and ld_imm64 pseudos,
``imm`` for atomics and byte swaps). Each form fixes, for every field, what it may hold:
``"reg"`` (r0-r10), ``"any"`` (the whole field range), or an int (that exact value, usually 0).

Templates use these placeholders, rendered per style by :mod:`pybpf.disasm` and matched by the
assembler: ``{rd} {wd}`` dst register as r/w, ``{rs} {ws}`` src register, ``{imm}`` imm,
``{jimm}`` imm of a conditional jump, ``{off}`` memory displacement, ``{tgt}`` jump target in
``off``, ``{tgtl}`` jump target in ``imm``, ``{func}`` BPF-to-BPF call target, ``{helper}`` helper
id, ``{kfunc}`` kfunc id, ``{imm64}`` the 64-bit ld_imm64 constant, ``{map}`` map index/fd,
``{imm2}`` the imm of ld_imm64's second slot, ``{mem}`` = ``[{base}{off}]`` in the mnemonic dialect.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# --- encoding constants (RFC 9669 section 3 / uapi bpf.h) -----------------------------------
CLS_LD, CLS_LDX, CLS_ST, CLS_STX, CLS_ALU, CLS_JMP, CLS_JMP32, CLS_ALU64 = range(8)
SRC_K, SRC_X = 0x00, 0x08
MODE_IMM, MODE_ABS, MODE_IND, MODE_MEM, MODE_MEMSX, MODE_ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
SIZE_CODE = {4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18}
SIZE_NAME = {1: "b", 2: "h", 4: "w", 8: "dw"}
FETCH = 0x01

# Kernel constants that other modules need by name.
PSEUDO_CALL, PSEUDO_KFUNC_CALL = 1, 2
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID, PSEUDO_FUNC, PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE = 1, 2, 3, 4, 5, 6
ADDR_SPACE_CAST = 1
CAST_KERN_IMM, CAST_USER_IMM = 0x1, 0x10000
MAX_BPF_STACK = 512
MAX_CALL_FRAMES = 8
BPF_MAX_LOOPS = 8 * 1024 * 1024
NREGS = 11  # r0..r10
FIELD_RANGE = {"dst": (0, 15), "src": (0, 15), "off": (-(1 << 15), (1 << 15) - 1),
               "imm": (-(1 << 31), (1 << 31) - 1)}


@dataclass(frozen=True)
class Form:
    """One instruction form. ``fields`` maps dst/src/off/imm to "reg", "any" or a fixed int."""

    name: str
    opcode: int
    kind: str            # semantic group, the key for interpreter handlers and JIT lowerings
    op: str              # operation inside the group ("add", "jeq", "fetch_add", ...)
    fields: dict
    ubpf: str            # mnemonic-dialect template (conformance/uBPF spelling)
    llvm: str            # pseudo-C template as llvm-objdump prints it
    kernel: str          # kernel disasm.c template (without the "(%02x) " prefix)
    width: int = 64      # operand width for ALU/JMP (32 or 64)
    size: int = 0        # access size in bytes for memory forms
    source: str = ""     # "K" or "X" for ALU/JMP forms
    signed: bool = False  # sdiv/smod/sign-extending load
    slots: int = 1       # 2 for ld_imm64
    group: str = ""      # RFC 9669 conformance group
    imm2: object = 0     # ld_imm64 only: what the second slot's imm may hold ("any" or 0)
    aliases: tuple = ()  # extra mnemonic-dialect spellings accepted by the assembler

    @property
    def disc(self) -> dict:
        """The fixed-value fields that tell this form apart from its opcode's siblings."""
        return {k: v for k, v in self.fields.items() if isinstance(v, int) and v != 0}


FORMS: list[Form] = []


def _add(**kw) -> None:
    kw.setdefault("kernel", kw["llvm"])
    FORMS.append(Form(**kw))


def _fields(dst="reg", src=0, off=0, imm=0) -> dict:
    return {"dst": dst, "src": src, "off": off, "imm": imm}


# --- ALU / ALU64 ---------------------------------------------------------------------------
# (op name, code, pseudo-C operator, signed variant via off=1)
_ALU_BINOPS = [
    ("add", 0x00, "+="), ("sub", 0x10, "-="), ("mul", 0x20, "*="), ("div", 0x30, "/="),
    ("or", 0x40, "|="), ("and", 0x50, "&="), ("lsh", 0x60, "<<="), ("rsh", 0x70, ">>="),
    ("mod", 0x90, "%="), ("xor", 0xA0, "^="), ("mov", 0xB0, "="), ("arsh", 0xC0, "s>>="),
]
_SIGNED_ALU = [("sdiv", 0x30, "s/="), ("smod", 0x90, "s%=")]

for _cls, _w in ((CLS_ALU64, 64), (CLS_ALU, 32)):
    _sfx = "" if _w == 64 else "32"
    _r = "r" if _w == 64 else "w"
    _grp = "base64" if _w == 64 else "base32"
    for _name, _code, _sym in _ALU_BINOPS + _SIGNED_ALU:
        _signed = _name in ("sdiv", "smod")
        _g = ("divmul64" if _w == 64 else "divmul32") if _name in ("mul", "div", "mod", "sdiv", "smod") else _grp
        _opname = "=" if _name == "mov" else _sym
        for _src, _sname in ((SRC_K, "K"), (SRC_X, "X")):
            operand = "{imm}" if _src == SRC_K else "{%ss}" % _r
            _add(name=f"{_name}{_w}_{'imm' if _src == SRC_K else 'reg'}",
                 opcode=_cls | _src | _code, kind="alu", op=_name, width=_w, source=_sname,
                 signed=_signed, group=_g,
                 fields=_fields(src="reg" if _src == SRC_X else 0, off=1 if _signed else 0,
                                imm="any" if _src == SRC_K else 0),
                 ubpf=f"{_name}{_sfx} {{rd}}, " + ("{imm}" if _src == SRC_K else "{rs}"),
                 llvm=f"{{{_r}d}} {_opname} {operand}",
                 aliases=((f"{_name}64",) if _w == 64 else ()))
    _add(name=f"neg{_w}", opcode=_cls | SRC_K | 0x80, kind="neg", op="neg", width=_w, source="K",
         group=_grp, fields=_fields(), ubpf=f"neg{_sfx} {{rd}}", llvm=f"{{{_r}d}} = -{{{_r}d}}",
         aliases=((f"neg64",) if _w == 64 else ()))
    for _bits in ((8, 16, 32) if _w == 64 else (8, 16)):
        _add(name=f"movsx{_bits}_{_w}", opcode=_cls | SRC_X | 0xB0, kind="movsx", op=f"s{_bits}",
             width=_w, source="X", signed=True, group=_grp, fields=_fields(src="reg", off=_bits),
             ubpf=f"movsx{_bits}{_w} {{rd}}, {{rs}}", llvm=f"{{{_r}d}} = (s{_bits}){{{_r}s}}")

# Byte swaps: ALU class TO_LE / TO_BE, ALU64 class unconditional bswap (imm = width).
for _bits in (16, 32, 64):
    _grp = "base64" if _bits == 64 else "base32"
    _add(name=f"le{_bits}", opcode=CLS_ALU | SRC_K | 0xD0, kind="end", op="le", width=_bits,
         source="K", group=_grp, fields=_fields(imm=_bits), ubpf=f"le{_bits} {{rd}}",
         llvm=f"{{rd}} = le{_bits} {{rd}}")
    _add(name=f"be{_bits}", opcode=CLS_ALU | SRC_X | 0xD0, kind="end", op="be", width=_bits,
         source="X", group=_grp, fields=_fields(imm=_bits), ubpf=f"be{_bits} {{rd}}",
         llvm=f"{{rd}} = be{_bits} {{rd}}")
    _add(name=f"bswap{_bits}", opcode=CLS_ALU64 | SRC_K | 0xD0, kind="end", op="bswap",
         width=_bits, source="K", group="base64", fields=_fields(imm=_bits),
         ubpf=f"bswap{_bits} {{rd}}", llvm=f"{{rd}} = bswap{_bits} {{rd}}",
         aliases=(f"swap{_bits}",))

# addr_space_cast (kernel arena extension): ALU64 MOV X with off=1; imm = dst_as << 16 | src_as.
_add(name="cast_kern", opcode=CLS_ALU64 | SRC_X | 0xB0, kind="cast", op="kern", width=64,
     source="X", group="arena", fields=_fields(src="reg", off=ADDR_SPACE_CAST, imm=CAST_KERN_IMM),
     ubpf="cast_kern {rd}, {rs}", llvm="{rd} = addr_space_cast({rs}, 0x0, 0x1)",
     kernel="{rd} = addr_space_cast({rs}, 0, 1)")
_add(name="cast_user", opcode=CLS_ALU64 | SRC_X | 0xB0, kind="cast", op="user", width=64,
     source="X", group="arena", fields=_fields(src="reg", off=ADDR_SPACE_CAST, imm=CAST_USER_IMM),
     ubpf="cast_user {rd}, {rs}", llvm="{rd} = addr_space_cast({rs}, 0x1, 0x0)",
     kernel="{rd} = addr_space_cast({rs}, 1, 0)")

# --- loads and stores ----------------------------------------------------------------------
for _size in (1, 2, 4, 8):
    _sn, _ty = SIZE_NAME[_size], f"u{_size * 8}"
    _grp = "base64" if _size == 8 else "base32"
    _v = "r" if _size == 8 else "w"  # llvm-objdump (alu32) prints narrow values as wN
    _add(name=f"ldx{_sn}", opcode=CLS_LDX | MODE_MEM | SIZE_CODE[_size], kind="ldx", op="ldx",
         size=_size, group=_grp, fields=_fields(src="reg", off="any"),
         ubpf=f"ldx{_sn} {{rd}}, [{{rs}}{{off}}]", llvm=f"{{{_v}d}} = *({_ty} *)({{rs}}{{off}})",
         kernel=f"{{rd}} = *({_ty} *)({{rs}}{{off}})")
    _add(name=f"st{_sn}", opcode=CLS_ST | MODE_MEM | SIZE_CODE[_size], kind="st", op="st",
         size=_size, group=_grp, fields=_fields(off="any", imm="any"),
         ubpf=f"st{_sn} [{{rd}}{{off}}], {{imm}}", llvm=f"*({_ty} *)({{rd}}{{off}}) = {{imm}}")
    _add(name=f"stx{_sn}", opcode=CLS_STX | MODE_MEM | SIZE_CODE[_size], kind="stx", op="stx",
         size=_size, group=_grp, fields=_fields(src="reg", off="any"),
         ubpf=f"stx{_sn} [{{rd}}{{off}}], {{rs}}", llvm=f"*({_ty} *)({{rd}}{{off}}) = {{{_v}s}}",
         kernel=f"*({_ty} *)({{rd}}{{off}}) = {{rs}}")
    if _size != 8:
        _add(name=f"ldxs{_sn}", opcode=CLS_LDX | MODE_MEMSX | SIZE_CODE[_size], kind="ldx",
             op="ldxs", size=_size, signed=True, group="base64",
             fields=_fields(src="reg", off="any"), ubpf=f"ldxs{_sn} {{rd}}, [{{rs}}{{off}}]",
             llvm=f"{{rd}} = *(s{_size * 8} *)({{rs}}{{off}})")
    # load-acquire / store-release (v6.15+): STX|ATOMIC, every size.
    _add(name=f"load_acq{_sn}", opcode=CLS_STX | MODE_ATOMIC | SIZE_CODE[_size], kind="atomic",
         op="load_acq", size=_size, group="atomic64" if _size == 8 else "atomic32",
         fields=_fields(src="reg", off="any", imm=0x100),
         ubpf=f"ldacq{_sn} {{rd}}, [{{rs}}{{off}}]",
         llvm=f"{{{_v}d}} = load_acquire(({_ty} *)({{rs}}{{off}}))",
         kernel=f"{{rd}} = load_acquire(({_ty} *)({{rs}}{{off}}))")
    _add(name=f"store_rel{_sn}", opcode=CLS_STX | MODE_ATOMIC | SIZE_CODE[_size], kind="atomic",
         op="store_rel", size=_size, group="atomic64" if _size == 8 else "atomic32",
         fields=_fields(src="reg", off="any", imm=0x110),
         ubpf=f"strel{_sn} [{{rd}}{{off}}], {{rs}}",
         llvm=f"store_release(({_ty} *)({{rd}}{{off}}), {{{_v}s}})",
         kernel=f"store_release(({_ty} *)({{rd}}{{off}}), {{rs}})")

# Read-modify-write atomics: W and DW only.
_ATOMIC_ALU = [("add", 0x00, "+="), ("or", 0x40, "|="), ("and", 0x50, "&="), ("xor", 0xA0, "^=")]
for _size in (4, 8):
    _sfx = "" if _size == 8 else "32"
    _ty, _v, _k64 = f"u{_size * 8}", ("r" if _size == 8 else "w"), ("64" if _size == 8 else "")
    _grp = "atomic64" if _size == 8 else "atomic32"
    _opc = CLS_STX | MODE_ATOMIC | SIZE_CODE[_size]
    _f = dict(opcode=_opc, kind="atomic", size=_size, group=_grp)
    for _name, _code, _sym in _ATOMIC_ALU:
        _add(name=f"atomic_{_name}{_size * 8}", op=_name,
             fields=_fields(src="reg", off="any", imm=_code if _code else 0),
             ubpf=f"lock {_name}{_sfx} [{{rd}}{{off}}], {{rs}}",
             llvm=f"lock *({_ty} *)({{rd}}{{off}}) {_sym} {{{_v}s}}",
             kernel=f"lock *({_ty} *)({{rd}}{{off}}) {_sym} {{rs}}", **_f)
        _add(name=f"atomic_fetch_{_name}{_size * 8}", op=f"fetch_{_name}",
             fields=_fields(src="reg", off="any", imm=_code | FETCH),
             ubpf=f"lock fetch {_name}{_sfx} [{{rd}}{{off}}], {{rs}}",
             llvm=f"{{{_v}s}} = atomic_fetch_{_name}(({_ty} *)({{rd}}{{off}}), {{{_v}s}})",
             kernel=f"{{rs}} = atomic{_k64}_fetch_{_name}(({_ty} *)({{rd}}{{off}}), {{rs}})", **_f)
    _add(name=f"atomic_xchg{_size * 8}", op="xchg", fields=_fields(src="reg", off="any", imm=0xE1),
         ubpf=f"lock xchg{_sfx} [{{rd}}{{off}}], {{rs}}",
         llvm=(f"{{rs}} = xchg_64({{rd}}{{off}}, {{rs}})" if _size == 8
               else "{ws} = xchg32_32({rd}{off}, {ws})"),
         kernel=f"{{rs}} = atomic{_k64}_xchg(({_ty} *)({{rd}}{{off}}), {{rs}})", **_f)
    _add(name=f"atomic_cmpxchg{_size * 8}", op="cmpxchg",
         fields=_fields(src="reg", off="any", imm=0xF1),
         ubpf=f"lock cmpxchg{_sfx} [{{rd}}{{off}}], {{rs}}",
         llvm=("r0 = cmpxchg_64({rd}{off}, r0, {rs})" if _size == 8
               else "w0 = cmpxchg32_32({rd}{off}, w0, {ws})"),
         kernel=f"r0 = atomic{_k64}_cmpxchg(({_ty} *)({{rd}}{{off}}), r0, {{rs}})", **_f)

# 64-bit immediate loads (two slots); src selects the meaning.
_LDDW = CLS_LD | MODE_IMM | SIZE_CODE[8]
_add(name="lddw", opcode=_LDDW, kind="lddw", op="imm64", slots=2, group="base64", imm2="any",
     fields=_fields(imm="any"), ubpf="lddw {rd}, {imm64}", llvm="{rd} = {imm64} ll",
     kernel="{rd} = {imm64}")
_add(name="lddw_map_fd", opcode=_LDDW, kind="lddw", op="map_fd", slots=2,
     fields=_fields(src=PSEUDO_MAP_FD, imm="any"), ubpf="lddw {rd}, map_fd({imm})",
     llvm="{rd} = map_fd({imm}) ll", kernel="{rd} = map[id:{imm}]")
_add(name="lddw_map_value", opcode=_LDDW, kind="lddw", op="map_value", slots=2, imm2="any",
     fields=_fields(src=PSEUDO_MAP_VALUE, imm="any"),
     ubpf="lddw {rd}, map_value_fd({imm}, {imm2})", llvm="{rd} = map_value_fd({imm}) + {imm2} ll",
     kernel="{rd} = map[id:{imm}][0]+{imm2}")
_add(name="lddw_btf_id", opcode=_LDDW, kind="lddw", op="btf_id", slots=2,
     fields=_fields(src=PSEUDO_BTF_ID, imm="any"), ubpf="lddw {rd}, btf_id({imm})",
     llvm="{rd} = btf_id({imm}) ll", kernel="{rd} = btf_id({imm})")
_add(name="lddw_func", opcode=_LDDW, kind="lddw", op="func", slots=2,
     fields=_fields(src=PSEUDO_FUNC, imm="any"), ubpf="lddw {rd}, func({func})",
     llvm="{rd} = func({func}) ll", kernel="{rd} = func(pc{func})")
_add(name="lddw_map_idx", opcode=_LDDW, kind="lddw", op="map_idx", slots=2,
     fields=_fields(src=PSEUDO_MAP_IDX, imm="any"), ubpf="lddw {rd}, map[{map}]",
     llvm="{rd} = map[{map}] ll", kernel="{rd} = map[idx:{imm}]")
_add(name="lddw_map_idx_value", opcode=_LDDW, kind="lddw", op="map_idx_value", slots=2, imm2="any",
     fields=_fields(src=PSEUDO_MAP_IDX_VALUE, imm="any"),
     ubpf="lddw {rd}, map_value[{map}]+{imm2}", llvm="{rd} = map_value[{map}] + {imm2} ll",
     kernel="{rd} = map[idx:{imm}][0]+{imm2}")

# Legacy packet access (the "packet" conformance group): r0 = ntoh(*(size *)(skb + [src] + imm)).
for _size in (1, 2, 4):
    _sn, _ty = SIZE_NAME[_size], f"u{_size * 8}"
    _add(name=f"ldabs{_sn}", opcode=CLS_LD | MODE_ABS | SIZE_CODE[_size], kind="ldabs",
         op="abs", size=_size, group="packet", fields=_fields(dst=0, imm="any"),
         ubpf=f"ldabs{_sn} {{imm}}", llvm=f"r0 = *({_ty} *)skb[{{imm}}]")
    _add(name=f"ldind{_sn}", opcode=CLS_LD | MODE_IND | SIZE_CODE[_size], kind="ldabs",
         op="ind", size=_size, group="packet", fields=_fields(dst=0, src="reg", imm="any"),
         ubpf=f"ldind{_sn} {{rs}}, {{imm}}", llvm=f"r0 = *({_ty} *)skb[{{rs}} + {{imm}}]")

# --- jumps ---------------------------------------------------------------------------------
_JMP_CONDS = [
    ("jeq", 0x10, "=="), ("jgt", 0x20, ">"), ("jge", 0x30, ">="), ("jset", 0x40, "&"),
    ("jne", 0x50, "!="), ("jsgt", 0x60, "s>"), ("jsge", 0x70, "s>="), ("jlt", 0xA0, "<"),
    ("jle", 0xB0, "<="), ("jslt", 0xC0, "s<"), ("jsle", 0xD0, "s<="),
]
for _cls, _w in ((CLS_JMP, 64), (CLS_JMP32, 32)):
    _sfx, _r = ("", "r") if _w == 64 else ("32", "w")
    _grp = "base64" if _w == 64 else "base32"
    for _name, _code, _sym in _JMP_CONDS:
        for _src, _sname in ((SRC_K, "K"), (SRC_X, "X")):
            _rhs = "{jimm}" if _src == SRC_K else "{%ss}" % _r
            _add(name=f"{_name}{_w}_{'imm' if _src == SRC_K else 'reg'}",
                 opcode=_cls | _src | _code, kind="jcond", op=_name, width=_w, source=_sname,
                 signed=_name.startswith("js") and _name != "jset", group=_grp,
                 fields=_fields(src="reg" if _src == SRC_X else 0, off="any",
                                imm="any" if _src == SRC_K else 0),
                 ubpf=f"{_name}{_sfx} {{rd}}, " + ("{imm}" if _src == SRC_K else "{rs}") + ", {tgt}",
                 llvm=f"if {{{_r}d}} {_sym} {_rhs} goto {{tgt}}")

_add(name="ja", opcode=CLS_JMP | 0x00, kind="ja", op="ja", group="base32",
     fields=_fields(dst=0, off="any"), ubpf="ja {tgt}", llvm="goto {tgt}")
_add(name="gotol", opcode=CLS_JMP32 | 0x00, kind="ja", op="gotol", group="base32",
     fields=_fields(dst=0, imm="any"), ubpf="ja32 {tgtl}", llvm="gotol {tgtl}")
_add(name="may_goto", opcode=CLS_JMP | 0xE0, kind="may_goto", op="may_goto", group="kernel",
     fields=_fields(dst=0, off="any"), ubpf="may_goto {tgt}", llvm="may_goto {tgt}")
_add(name="call_helper", opcode=CLS_JMP | 0x80, kind="call", op="helper", group="base32",
     fields=_fields(dst=0, imm="any"), ubpf="call {helper}", llvm="call {helper}",
     kernel="call {helper}", aliases=("call helper",))
_add(name="call_local", opcode=CLS_JMP | 0x80, kind="call", op="local", group="base32",
     fields=_fields(dst=0, src=PSEUDO_CALL, imm="any"), ubpf="call local {func}",
     llvm="call {func}", kernel="call pc{func}")
_add(name="call_kfunc", opcode=CLS_JMP | 0x80, kind="call", op="kfunc", group="kernel",
     fields=_fields(dst=0, src=PSEUDO_KFUNC_CALL, imm="any"), ubpf="call runtime {kfunc}",
     llvm="call {kfunc}", kernel="call {kfunc}")
_add(name="callx", opcode=CLS_JMP | SRC_X | 0x80, kind="callx", op="callx", group="base32",
     fields=_fields(), ubpf="call {rd}", llvm="callx {rd}")
_add(name="exit", opcode=CLS_JMP | 0x90, kind="exit", op="exit", group="base32",
     fields=_fields(dst=0), ubpf="exit", llvm="exit")

del _cls, _w, _sfx, _r, _grp, _name, _code, _sym, _src, _sname, _signed, _g, _opname, _bits
del _size, _sn, _ty, _v, _k64, _opc, _f, _rhs

# --- lookup tables built from FORMS ----------------------------------------------------------
FORMS_BY_NAME: dict[str, Form] = {f.name: f for f in FORMS}
FORMS_BY_OPCODE: dict[int, list[Form]] = {}
for _f in FORMS:
    FORMS_BY_OPCODE.setdefault(_f.opcode, []).append(_f)
del _f
KINDS: frozenset[str] = frozenset(f.kind for f in FORMS)

assert len(FORMS_BY_NAME) == len(FORMS), "form names must be unique"


def _mnemonic(template: str) -> str:
    """The mnemonic words of a mnemonic-dialect template ("lock fetch add32", "call local")."""
    words = []
    for w in template.split():
        if "{" in w or "[" in w:
            break
        words.append(w.rstrip(","))
    return " ".join(words)


def mnemonic(form: Form) -> str:
    return _mnemonic(form.ubpf)


FORMS_BY_MNEMONIC: dict[str, list[Form]] = {}
for _f in FORMS:
    for _m in (mnemonic(_f), *_f.aliases):
        FORMS_BY_MNEMONIC.setdefault(_m, []).append(_f)
del _f, _m


def find_form(opcode: int, src: int, off: int, imm: int) -> Form | None:
    """The form whose opcode and discriminator values match, or None."""
    vals = {"src": src, "off": off, "imm": imm}
    for f in FORMS_BY_OPCODE.get(opcode, ()):
        if f.disc and all(vals.get(k) == v for k, v in f.disc.items()):
            return f
    # forms with no discriminator match when no sibling claimed the value
    for f in FORMS_BY_OPCODE.get(opcode, ()):
        if not f.disc:
            return f
    return None


def field_ok(constraint, value: int) -> bool:
    """Whether ``value`` satisfies a field constraint of the table."""
    if constraint == "reg":
        return 0 <= value < NREGS
    if constraint == "any":
        return True
    return value == constraint
