"""The ISA table and the strict codec: table sanity, encode/decode, reserved fields, negatives."""
import os
import re

import pytest
from hypothesis import given, settings, strategies as st

from pybpf import isa
from pybpf.datafile import parse_data_file
from pybpf.errors import DecodeError
from pybpf.insn import Insn, decode_all, encode, form_of, make, split_slots

from support import conformance_files, conformance_params

PLACEHOLDER = re.compile(r"\{(\w+)\}")
KNOWN_PLACEHOLDERS = {"rd", "wd", "rs", "ws", "imm", "jimm", "off", "tgt", "tgtl", "func", "helper",
                      "kfunc", "imm64", "map", "imm2"}


def test_table_is_consistent():
    assert len(isa.FORMS) == len(isa.FORMS_BY_NAME)
    for f in isa.FORMS:
        assert f.opcode & 0x07 in range(8)
        assert set(f.fields) == {"dst", "src", "off", "imm"}
        for tpl in (f.ubpf, f.llvm, f.kernel):
            assert set(PLACEHOLDER.findall(tpl)) <= KNOWN_PLACEHOLDERS, (f.name, tpl)
        # siblings sharing an opcode must be told apart by a discriminator
        sibs = isa.FORMS_BY_OPCODE[f.opcode]
        assert sum(1 for s in sibs if not s.disc) <= 1, f.name
    discs = [(f.opcode, tuple(sorted(f.disc.items()))) for f in isa.FORMS]
    assert len(discs) == len(set(discs)), "two forms with the same opcode and discriminator"


def test_required_families_present():
    kinds = {(f.kind, f.op) for f in isa.FORMS}
    for needed in [("alu", "sdiv"), ("alu", "smod"), ("movsx", "s32"), ("neg", "neg"), ("end", "bswap"),
                   ("jcond", "jset"), ("ja", "gotol"), ("call", "helper"), ("call", "local"),
                   ("call", "kfunc"), ("callx", "callx"), ("exit", "exit"), ("may_goto", "may_goto"),
                   ("ldx", "ldxs"), ("atomic", "fetch_xor"), ("atomic", "xchg"), ("atomic", "cmpxchg"),
                   ("atomic", "load_acq"), ("atomic", "store_rel"), ("ldabs", "abs"), ("ldabs", "ind"),
                   ("cast", "kern"), ("cast", "user")]:
        assert needed in kinds, needed
    assert {f.fields["src"] for f in isa.FORMS if f.kind == "lddw"} == {0, 1, 2, 3, 4, 5, 6}
    assert {f.size for f in isa.FORMS if f.kind == "atomic" and f.op == "load_acq"} == {1, 2, 4, 8}


def test_insn_encoding_is_little_endian_and_masked():
    i = Insn(0x07, 1, 2, -1, -2)
    assert i.encode() == bytes([0x07, 0x21, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF])
    assert Insn.decode(i.encode()) == i
    assert Insn(0xB7, 0, 0, 0, 0xFFFFFFFF).encode()[4:] == b"\xff\xff\xff\xff"
    with pytest.raises(DecodeError):
        split_slots(b"\x95" * 7)


def _example(form):
    vals = {}
    for name, c in form.fields.items():
        vals[name] = {"reg": 3, "any": -5 if name in ("off", "imm") else 0}.get(c, c) if not isinstance(c, int) else c
    return make(form, vals["dst"], vals["src"], vals["off"], vals["imm"],
                imm2=7 if form.imm2 == "any" else 0)


@pytest.mark.parametrize("form", isa.FORMS, ids=lambda f: f.name)
def test_every_form_encodes_and_decodes_to_itself(form):
    slots = _example(form)
    raw = encode(slots)
    assert len(raw) == 8 * form.slots
    back = split_slots(raw)
    assert form_of(back, 0) is form
    assert back == slots


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(isa.FORMS), st.data())
def test_random_valid_fields_round_trip(form, data):
    vals = {}
    for name, c in form.fields.items():
        lo, hi = isa.FIELD_RANGE[name]
        if c == "reg":
            vals[name] = data.draw(st.integers(0, 10))
        elif c == "any":
            vals[name] = data.draw(st.integers(lo, hi))
        else:
            vals[name] = c
    imm2 = data.draw(st.integers(-(1 << 31), (1 << 31) - 1)) if form.imm2 == "any" else 0
    slots = make(form, **vals, imm2=imm2)
    back = split_slots(encode(slots))
    assert back == slots and form_of(back, 0) is form


@pytest.mark.parametrize("path", conformance_params("negative", "unused-*.data"),
                         ids=os.path.basename)
def test_unused_programs_are_refused_by_the_decoder(path):
    raw = parse_data_file(path).raw
    assert raw
    with pytest.raises(DecodeError) as e:
        decode_all(raw)
    assert e.value.index == 0  # every one of them is wrong in its first instruction


def test_unused_count(conformance_dir):
    assert len(conformance_files("negative", "unused-*.data")) == 45


@pytest.mark.parametrize("slots,msg", [
    ([Insn(0xFF)], "unknown opcode 0xff"),
    ([Insn(0xD4, imm=8)], "invalid imm 0x8 for opcode 0xd4"),
    ([Insn(0xB7, dst=11)], "invalid register r11"),
    ([Insn(0x18, imm=1)], "missing its second slot"),
    ([Insn(0x18), Insn(0x18)], "invalid second slot"),
    ([Insn(0x18, src=5), Insn(0, imm=3)], "reserved field imm of its second slot"),
    ([Insn(0xDB, imm=0x42)], "reserved field imm"),
])
def test_decode_errors_name_the_problem(slots, msg):
    with pytest.raises(DecodeError) as e:
        decode_all(encode(slots))
    assert msg in str(e.value)
