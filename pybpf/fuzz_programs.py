"""Structure-aware inputs for the ``asm`` and ``decode`` fuzz targets (:mod:`pybpf.fuzz`).

Random bytes and token soups mostly test refusals (before this module 3.6% of the assembler's
inputs assembled and 1.6% of the decoder's decoded). Here a case starts from a *valid* program
built from the ISA table (any form, registers up to r10, fields at their boundaries, jumps and
local calls to instruction starts, labels and function names, every ld_imm64 pseudo source with
declared maps), written out by the disassembler in one of the two dialects the assembler reads,
sometimes respelled (objdump columns dropped, hex/decimal, comments, blank lines), then changed a
little: a number at a boundary (0, -1, 2^31, 2^32, 2^63, +-32768, huge literals), a register
r10/r11, two tokens or lines swapped, a label renamed, unicode, a very long line; or, for the
decoder, the encoded program with a bit flipped or a field set to a boundary. Many cases stay
valid, so the invariants about valid input (round trips) run as often as the error paths.
"""
from __future__ import annotations

import random
import re

from . import isa
from .helper_names import HELPER_NAMES
from .insn import encode, make
from .kfunc_ids import KFUNC_NAMES
from .program import MapDecl, Program

_IMMS = (0, 1, -1, 2, 7, 8, 16, 31, 32, 63, 64, 255, 0x7FFF, -0x8000, 0xFFFF, 0x10000,
         (1 << 31) - 1, -(1 << 31), -2, 4096)
_OFFS = (0, 1, -1, 2, 4, -4, 8, -8, -512, 512, 0x7FFF, -0x8000, 0x4000)
_MAP_TYPES = ("hash", "array", "percpu_array", "lru_hash", "ringbuf", "queue", "prog_array",
              "arena", "bogus_type")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz_."
# forms a program may contain; exit ends every function
_FORMS = [f for f in isa.FORMS]
_EXIT = isa.FORMS_BY_NAME["exit"]


def _imm(rng: random.Random) -> int:
    return rng.choice(_IMMS) if rng.random() < 0.6 else rng.randrange(-(1 << 31), 1 << 31)


def _off(rng: random.Random) -> int:
    return rng.choice(_OFFS) if rng.random() < 0.6 else rng.randrange(-(1 << 15), 1 << 15)


def _name(rng: random.Random, taken: set) -> str:
    while True:
        name = rng.choice("abcdefghijklmnopqrstuvwxyz_") + "".join(
            rng.choice(_NAME_CHARS + "0123456789") for _ in range(rng.randint(0, 6)))
        # not a register, keyword or mnemonic: those are not labels in either dialect
        if name not in taken and not re.fullmatch(r"[rw]\d+", name) and name not in (
                "exit", "call", "goto", "gotol", "if", "lock", "ll", "map", "func", "skb", "be16",
                "le16", "be32", "le32", "be64", "le64") and name not in isa.FORMS_BY_MNEMONIC \
                and not any(name in m.split() for m in isa.FORMS_BY_MNEMONIC):
            taken.add(name)
            return name


def valid_program(rng: random.Random) -> Program:
    """A program every field of which the ISA table allows, with its symbols and maps."""
    maps = [MapDecl(name=f"m{i}", type=rng.choice(_MAP_TYPES), key_size=rng.choice((0, 4, 8)),
                    value_size=rng.choice((0, 4, 8, 16, 4096)),
                    max_entries=rng.choice((0, 1, 64, 4096, (1 << 32) - 1)),
                    flags=rng.choice((0, 0, 0, 1, 1024)), map_extra=rng.choice((0, 0, 0, 1 << 40)))
            for i in range(rng.choice((0, 1, 1, 2, 3)))]
    forms = [f for f in _FORMS if maps or f.name not in ("lddw_map_idx", "lddw_map_idx_value")]
    funcs = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        funcs.append([rng.choice(forms) for _ in range(rng.randint(0, 12))] + [_EXIT])
    # layout: the slot of every instruction and of every function's entry
    entries, starts, plan, slot = [], [], [], 0
    for body in funcs:
        entries.append(slot)
        for form in body:
            starts.append(slot)
            plan.append((slot, form))
            slot += form.slots
    insns = []
    for slot, form in plan:
        vals, imm2 = {}, 0
        for name, c in form.fields.items():
            if c == "reg":
                vals[name] = rng.randrange(isa.NREGS)
            elif c == "any":
                vals[name] = _imm(rng) if name == "imm" else _off(rng)
        if form.imm2 == "any":
            imm2 = _imm(rng)
        if "{tgt}" in form.ubpf:
            vals["off"] = rng.choice(starts) - slot - 1
        if "{tgtl}" in form.ubpf:
            vals["imm"] = rng.choice(starts) - slot - 1
        if "{func}" in form.ubpf:
            vals["imm"] = rng.choice(entries) - slot - 1
        if form.name in ("lddw_map_idx", "lddw_map_idx_value"):
            vals["imm"] = rng.randrange(len(maps))
        if form.name == "call_helper" and rng.random() < 0.7:
            vals["imm"] = rng.randrange(len(HELPER_NAMES) + 2)
        if form.name == "call_kfunc" and rng.random() < 0.7:
            vals["imm"] = rng.choice(sorted(KFUNC_NAMES))
        insns += make(form, imm2=imm2, **vals)
    taken: set = {m.name for m in maps}
    functions = {e: _name(rng, taken) for e in entries if rng.random() < 0.5}
    labels = {s: _name(rng, taken) for s in starts if s not in functions and rng.random() < 0.15}
    return Program(insns, functions=functions, labels=labels, maps=maps)


# -- text: a listing, respelled, then mutated ----------------------------------------------------

_NUM = re.compile(r"(?<![\w.])-?(?:0x[0-9a-fA-F]+|\d+)(?![\w])")
_REG = re.compile(r"(?<![\w])%?[rw]\d+\b")
_BOUNDARY = ("0", "-1", "1", "2147483647", "2147483648", "-2147483648", "-2147483649",
             "4294967295", "4294967296", "0xffffffff", "0x100000000", "-0x80000000",
             "9223372036854775807", "9223372036854775808", "-9223372036854775808",
             "18446744073709551615", "18446744073709551616", "0xffffffffffffffff",
             "0x10000000000000000", "32767", "32768", "-32768", "-32769", "65535", "65536",
             "0x7fff", "0x8000", "-0x8000", "9" * 40, "0x" + "f" * 40, "00", "0x", "-0", "--1",
             "+1", "1e3", "0b1", "0o7", "1_000", "\uff11", "\u0661", "١٢")
_REGS = ("r10", "r11", "w10", "w11", "r15", "r16", "r99", "%r10", "%r11", "r0", "w0", "r-1",
         "R1", "r01", "r1" + "0" * 30)
_UNICODE = ("é", "\u200b", "\u00a0", "\uff52", "\u2028", "\x85", "\x0b", "\x0c", "\x1c", "\r",
            "\x00", "\t", "\ufeff", "\U0001f600", "\ud7ff", "ı", "K", "ſ")
_INSERTS = ("#", "//", ";", ":", ",", "+", "-", "*", "(", ")", "[", "]", "ll", "goto", "=",
            " ", "\n", "exit", "lock", "%", "<x>", "<", "map[", "func(", ".map")


_HEX = re.compile(r"(?<![\w.<+])(-?)0x([0-9a-fA-F]+)(?![\w])")
_DEC = re.compile(r"(?<![\w.%<+-])(-?)(\d+)(?![\w:])")
_ALIASES = {isa.mnemonic(f): f.aliases for f in isa.FORMS
            if f.aliases and " " not in isa.mnemonic(f) and isa.mnemonic(f) != "call"}


def _renumber(line: str, to_dec: bool) -> str:
    """The same numbers in the other base the assembler reads (docs/syntax.md). Decimal to hex
    only outside labels and registers; an objdump header or index column is left alone."""
    if re.match(r"^\s*(\d+:|[0-9a-fA-F]{16}\s)", line):
        return line
    if to_dec:
        return _HEX.sub(lambda m: f"{m.group(1)}{int(m.group(2), 16)}", line)
    return _DEC.sub(lambda m: f"{m.group(1)}{int(m.group(2)):#x}", line)


def _alias(line: str, rng: random.Random) -> str:
    words = line.split(" ", 1)
    aliases = _ALIASES.get(words[0])
    if aliases and rng.random() < 0.5:
        words[0] = rng.choice(aliases)
    return " ".join(words)


def _respell(text: str, rng: random.Random, syntax: str) -> str:
    """Spellings the assembler also reads, so a case stays valid: objdump columns and ``<sym>``
    annotations dropped (llvm), comments and blank lines added, extra blanks."""
    lines = text.splitlines()
    if syntax == "llvm" and rng.random() < 0.5:
        lines = [re.sub(r"^\s*\d+:\t[0-9a-f ]+\t", "", ln) for ln in lines]
        if rng.random() < 0.5:
            lines = [re.sub(r"\s+<[\w.+]*>$", "", ln) for ln in lines]
    if rng.random() < 0.3:                          # hex numbers in decimal, or decimal in hex
        to_dec = syntax == "llvm" or rng.random() < 0.5
        lines = [_renumber(ln, to_dec) for ln in lines]
    if syntax == "ubpf" and rng.random() < 0.3:     # mnemonic aliases (add64, neg64, swap16)
        lines = [_alias(ln, rng) for ln in lines]
    out = []
    for ln in lines:
        if rng.random() < 0.05:
            out.append(rng.choice(("", "   ", "# a comment", "\t")))
        if rng.random() < 0.05:
            ln = ln + rng.choice(("  # trailing", "\t", "   "))
        out.append(ln)
    return "\n".join(out) + rng.choice(("\n", "", "\n\n"))


def _mutate_text(text: str, rng: random.Random) -> str:
    lines = text.split("\n") or [""]
    i = rng.randrange(len(lines))
    ln = lines[i]
    m = rng.random()
    if m < 0.3:                                     # a number at a boundary
        nums = list(_NUM.finditer(ln)) or list(_NUM.finditer(text))
        if nums:
            target = ln if list(_NUM.finditer(ln)) else None
            src = ln if target is not None else text
            n = rng.choice(nums)
            new = src[:n.start()] + rng.choice(_BOUNDARY) + src[n.end():]
            if target is None:
                return new
            lines[i] = new
    elif m < 0.45:                                  # a register
        regs = list(_REG.finditer(ln))
        if regs:
            r = rng.choice(regs)
            rep = rng.choice(_REGS)
            if r.group().startswith("%") and not rep.startswith("%") and rng.random() < 0.7:
                rep = "%" + rep
            lines[i] = ln[:r.start()] + rep + ln[r.end():]
    elif m < 0.55:                                  # two tokens swapped
        toks = re.split(r"(\s+)", ln)
        words = [k for k, t in enumerate(toks) if t.strip()]
        if len(words) >= 2:
            a, b = rng.sample(words, 2)
            toks[a], toks[b] = toks[b], toks[a]
            lines[i] = "".join(toks)
    elif m < 0.63:                                  # lines swapped, duplicated or dropped
        j = rng.randrange(len(lines))
        op = rng.random()
        if op < 0.4:
            lines[i], lines[j] = lines[j], lines[i]
        elif op < 0.7:
            lines.insert(j, ln)
        else:
            del lines[i]
    elif m < 0.73:                                  # unicode, or a control character
        k = rng.randrange(len(ln) + 1)
        lines[i] = ln[:k] + rng.choice(_UNICODE) + ln[k:]
    elif m < 0.8:                                   # a very long line
        what = rng.random()
        if what < 0.25:
            lines[i] = ln + " " * rng.choice((1000, 100_000))
        elif what < 0.5:
            lines[i] = "r0 = " + "9" * rng.choice((400, 5000, 50_000))
        elif what < 0.75:
            lines[i] = "; ".join([ln] * rng.choice((50, 2000)))
        else:
            lines[i] = "l" * rng.choice((300, 70_000)) + ":"
    elif m < 0.9:                                   # a character dropped, or a token inserted
        k = rng.randrange(len(ln) + 1)
        if rng.random() < 0.5 and ln:
            lines[i] = ln[:k] + ln[k + 1:]
        else:
            lines[i] = ln[:k] + rng.choice(_INSERTS) + ln[k:]
    else:                                           # a label: renamed, undefined or repeated
        labels = re.findall(r"^\s*([A-Za-z_.][\w.]*):", text, re.M)
        if labels:
            lab = rng.choice(labels)
            new = rng.choice(("exit", "r1", "undefined_label", lab + "_x", "L0", "sub_0",
                              "m0", "main", "é", ".text"))
            if rng.random() < 0.5:
                return re.sub(rf"\b{re.escape(lab)}\b", new, text, count=1)
            lines.insert(rng.randrange(len(lines) + 1), f"{lab}:")
    return "\n".join(lines)


def asm_case(rng: random.Random) -> dict:
    """A valid program's listing in one dialect, respelled, and half the time mutated."""
    from .disasm import disassemble
    prog = valid_program(rng)
    syntax = rng.choice(("ubpf", "llvm"))
    text = _respell(disassemble(prog, syntax=syntax), rng, syntax)
    mutations = 0 if rng.random() < 0.5 else rng.choice((1, 1, 1, 2, 3))
    for _ in range(mutations):
        text = _mutate_text(text, rng)
    return {"text": text, "syntax": rng.choice((syntax, syntax, "auto")), "mutations": mutations}


# -- bytes: an encoded program, then fields changed ---------------------------------------------

_BYTE_OPCODES = sorted(isa.FORMS_BY_OPCODE)


def _mutate_bytes(data: bytearray, rng: random.Random) -> bytearray:
    n = len(data) // 8
    s = 8 * rng.randrange(n) if n else 0
    m = rng.random()
    if m < 0.25 and data:                           # one bit flipped
        k = rng.randrange(len(data))
        data[k] ^= 1 << rng.randrange(8)
    elif m < 0.4 and n:                             # another opcode (a real one, mostly)
        data[s] = rng.choice(_BYTE_OPCODES) if rng.random() < 0.8 else rng.randrange(256)
    elif m < 0.55 and n:                            # a register nibble: r10, r11, r15
        nib = rng.choice((10, 11, 15, 0, rng.randrange(16)))
        data[s + 1] = (data[s + 1] & 0xF0) | nib if rng.random() < 0.5 else \
            (data[s + 1] & 0x0F) | (nib << 4)
    elif m < 0.7 and n:                             # off at a boundary
        off = rng.choice((0, 1, -1, 0x7FFF, -0x8000, 8, 16, 32, 64, 1, 3))
        data[s + 2:s + 4] = (off & 0xFFFF).to_bytes(2, "little")
    elif m < 0.85 and n:                            # imm at a boundary
        imm = rng.choice((0, 1, -1, (1 << 31) - 1, -(1 << 31), 8, 16, 32, 64, 0x100, 0x110,
                          0xE1, 0xF1, 0x10000, 0x1))
        data[s + 4:s + 8] = (imm & 0xFFFFFFFF).to_bytes(4, "little")
    elif m < 0.92:                                  # truncated (mid-slot or between slots)
        del data[rng.randrange(len(data) + 1):]
    elif n >= 2:                                    # slots swapped or duplicated
        t = 8 * rng.randrange(n)
        if rng.random() < 0.5:
            data[s:s + 8], data[t:t + 8] = data[t:t + 8], data[s:s + 8]
        else:
            data[t:t] = data[s:s + 8]
    return data


def decode_case(rng: random.Random) -> dict:
    """A valid program's bytes, half the time with one to three fields changed."""
    data = bytearray(encode(valid_program(rng).insns))
    mutations = 0 if rng.random() < 0.5 else rng.choice((1, 1, 1, 2, 3))
    for _ in range(mutations):
        data = _mutate_bytes(data, rng)
    return {"hex": bytes(data).hex(), "mutations": mutations}
