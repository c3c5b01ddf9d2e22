"""Property tests for the assembler (hypothesis, bounded to a few seconds).

* any valid instruction of any form survives encode -> decode -> disassemble -> assemble;
* no input text makes ``assemble`` raise anything but ``AsmError``, and whatever does assemble
  reads back the same from its own listing.
"""
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybpf import isa
from pybpf.asm import assemble
from pybpf.disasm import disassemble
from pybpf.errors import AsmError
from pybpf.insn import encode, make
from pybpf.program import Program

PAD = 3          # exit instructions on each side of the instruction under test
EXIT = make("exit")
FIELD = {"off": st.integers(-(1 << 15), (1 << 15) - 1), "imm": st.integers(-(1 << 31), (1 << 31) - 1)}
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def programs(draw):
    form = draw(st.sampled_from(isa.FORMS))
    vals = {}
    for name, c in form.fields.items():
        if c == "reg":
            vals[name] = draw(st.integers(0, isa.NREGS - 1))
        elif c == "any":
            vals[name] = draw(FIELD[name])
    if "{func}" in form.ubpf:
        # BPF-to-BPF call targets must be instructions of the program: one of the exits
        target = draw(st.sampled_from([*range(PAD), *range(PAD + form.slots, 2 * PAD + form.slots)]))
        vals["imm"] = target - PAD - 1
    imm2 = draw(FIELD["imm"]) if "{imm2}" in form.ubpf or "{imm64}" in form.ubpf else 0
    return form, encode(EXIT * PAD + make(form, imm2=imm2, **vals) + EXIT * PAD)


@settings(max_examples=400, **SETTINGS)
@given(programs(), st.sampled_from(["ubpf", "llvm"]))
def test_random_instructions_round_trip(case, syntax):
    form, raw = case
    prog = Program.from_bytes(raw)
    assert prog.instructions()[PAD][1] is form
    text = disassemble(prog, syntax=syntax)
    assert assemble(text, syntax=syntax).to_bytes() == raw, text
    assert assemble(text).to_bytes() == raw, text


# Tokens that look like BPF assembly in either dialect, good and bad.
TOKENS = ["r0", "r1", "w2", "%r3", "%r10", "%r11", "r99", "w10", "=", "+=", "-=", "s>>=", "s/=",
          "s%=", "<<=", "==", "!=", "s<", "s>=", "<", "&", "(", ")", "[", "]", "*", "+", "-", ",",
          ":", "u8", "u32", "u64", "s16", "0", "1", "-1", "0x10", "0xffffffff", "2147483648",
          "0x10000", "99999999999999999999", "goto", "gotol", "if", "lock", "fetch", "add", "xchg",
          "call", "callx", "local", "runtime", "helper", "kfunc", "map", "map_value", "map_fd",
          "func", "ll", "exit", "ja", "ja32", "lddw", "ldxb", "ldxdw", "stxw", "stw", "mov", "mov32",
          "neg", "jeq", "jne32", "le16", "be64", "skb", "may_goto", "L1", "L1:", "exit:", "f:",
          ".map m type=hash key=4 value=8 max_entries=1", ".map", ".foo", "type=array", "#", "//",
          ";", "<f+0x8>", "0:", "85 00 00 00", "\n", "\n", "\n", "\t", "bpf_arena_alloc_pages",
          "atomic_fetch_add", "addr_space_cast", "0000000000000000 <g>:", "[%r1+4]", "[%r10-8]",
          "9" * 5000, "0x" + "f" * 300, "r" + "1" * 5000]
soups = st.lists(st.sampled_from(TOKENS), max_size=24).map(" ".join)
texts = st.text(alphabet=string.printable, max_size=80)
lines = st.lists(st.sampled_from(["mov %r0, 1", "r0 = 1", "exit", "ja +1", "goto -1",
                                  "L1:", "call local L1", "lddw %r1, 5", "jeq %r0, 1, L1"]),
                 max_size=8).map("\n".join)


@pytest.mark.slow
@settings(max_examples=1500, **SETTINGS)
@given(st.one_of(soups, texts, lines), st.sampled_from(["auto", "ubpf", "llvm"]))
def test_any_text_assembles_or_raises_asm_error(text, syntax):
    try:
        prog = assemble(text, syntax=syntax, filename="fuzz.s")
    except AsmError as e:
        assert e.line >= 1 and e.col >= 1 and str(e).startswith("fuzz.s:")
        return
    # What assembles reads back the same from its mnemonic-dialect listing.
    assert assemble(disassemble(prog, syntax="ubpf"), syntax="ubpf").to_bytes() == prog.to_bytes()
