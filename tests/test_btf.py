"""The BTF reader: every kind, DATASEC, .BTF.ext func/line/CO-RE records, value decoding, and
refusals; dumps are compared line for line with ``bpftool btf dump file``."""
import os
import re
import shutil
import struct
import subprocess

import pytest

from pybpf.elf.btf import BTF, BTFError, BTFExt
from pybpf.elf.btf_values import ctype, decode, encode
from pybpf.elf.reader import ElfReader
from pybpf.errors import ELFError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples", "c")
DATA = os.path.join(ROOT, "tests", "data", "elf")
KINDS_O = os.path.join(DATA, "btf_kinds.o")
SAMPLE_OBJECTS = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.endswith(".o"))
BPFTOOL = shutil.which("bpftool")
OBJDUMP = shutil.which("llvm-objdump-19")


def sections(path):
    rd = ElfReader(open(path, "rb").read(), path)
    return rd.section_data(rd.section(".BTF")), rd.section_data(rd.section(".BTF.ext"))


@pytest.fixture(scope="module")
def kinds():
    raw, ext = sections(KINDS_O)
    btf = BTF.parse(raw)
    return btf, BTFExt.parse(ext, btf)


# --- bpftool agreement ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["btf_kinds", "ksym_var"])
def test_dump_matches_recorded_bpftool_output(name):
    raw, _ = sections(os.path.join(DATA, name + ".o"))
    with open(os.path.join(DATA, name + ".btf.txt")) as f:
        assert BTF.parse(raw).dump() == f.read()


@pytest.mark.skipif(BPFTOOL is None, reason="bpftool is not installed")
@pytest.mark.parametrize("path", SAMPLE_OBJECTS + [KINDS_O], ids=os.path.basename)
def test_dump_matches_live_bpftool(path):
    want = subprocess.run([BPFTOOL, "btf", "dump", "file", path], capture_output=True, text=True,
                          check=True).stdout
    assert BTF.parse(sections(path)[0]).dump() == want


# --- kinds ------------------------------------------------------------------------------------
def test_every_kind_clang_emits_is_read(kinds):
    btf, _ = kinds
    assert {t.kind for t in btf.types[1:]} == {
        "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef", "volatile", "const",
        "restrict", "func", "func_proto", "var", "datasec", "float", "decl_tag", "type_tag", "enum64"}


def test_int_enum_and_float_details(kinds):
    btf, _ = kinds
    color = btf.find("color", "enum")
    assert color.values == (("RED", -1), ("GREEN", 0), ("BLUE", 7)) and color.signed
    big = btf.find("big", "enum64")
    assert big.values == (("BIG_ONE", 1), ("BIG_HUGE", 0x1122334455667788)) and big.size == 8
    assert not big.signed
    boolean = btf.find("_Bool", "int")
    assert boolean.encoding == 4 and boolean.size == 1 and boolean.bits == 8
    short = btf.find("short", "int")
    assert short.signed and short.size == 2
    assert btf.find("double", "float").size == 8


def test_struct_union_bitfields_and_modifiers(kinds):
    btf, _ = kinds
    flags = btf.find("flags", "struct")
    assert [(m.name, m.bit_offset, m.bitfield_size) for m in flags.members] == \
        [("a", 0, 3), ("b", 3, 5), ("c", 8, 4), ("d", 16, 0)]
    assert flags.kind_flag and flags.size == 4
    point = btf.find("point", "struct")
    assert btf.size_of(point.id) == 56
    types = {m.name: btf.type_str(m.type) for m in point.members}
    assert types == {"x": "__s32", "y": "__s32", "u": "union either", "f": "struct flags",
                     "weight": "double", "hidden": "struct opaque *", "uptr": "int *",
                     "fn": "long (*)(int, char) *", "cvp": "restrict const volatile my_u32 *"}
    cvp = next(m for m in point.members if m.name == "cvp")
    assert btf.resolve(cvp.type).kind == "ptr"
    target = btf.resolve(btf[btf.resolve(cvp.type).id].type)
    assert (target.kind, target.name) == ("int", "unsigned int")   # through typedef chain
    either = btf.find("either", "union")
    assert [m.bit_offset for m in either.members] == [0, 0] and btf.size_of(either.id) == 4
    assert btf.find("opaque", "fwd") is not None and btf.find("user", "type_tag") is not None


def test_funcs_linkage_params_and_decl_tags(kinds):
    btf, _ = kinds
    sum_fields, cb = btf.find("sum_fields", "func"), btf.find("cb", "func")
    assert (sum_fields.linkage, cb.linkage) == (1, 0)
    assert [(p.name, btf.type_str(p.type)) for p in btf.func_params(sum_fields.id)] == [("p", "struct point *")]
    assert btf.decl_tags(sum_fields.id) == [(-1, "global_fn")]
    assert btf.decl_tags(btf.find("point", "struct").id) == [(1, "y_member")]
    with pytest.raises(BTFError, match="not func"):
        btf.func_params(btf.find("point", "struct").id)


def test_datasecs_and_vars(kinds):
    btf, _ = kinds
    secs = btf.datasecs()
    assert set(secs) == {".bss", ".data", ".rodata", "license"}
    names = [btf[v.type].name for v in secs[".data"].secinfo]
    assert names == ["enabled", "shade", "bigval", "neg", "origin", "grid", "name", "bits"]
    assert [v.size for v in secs[".data"].secinfo] == [1, 4, 8, 2, 56, 24, 8, 4]
    hidden = next(btf[v.type] for v in secs[".bss"].secinfo if btf[v.type].name == "hidden_counter")
    assert hidden.linkage == 0     # static
    # clang leaves DATASEC sizes (and global VAR offsets) to the loader, as libbpf expects
    assert secs[".data"].size == 0


def test_ksyms_datasec_lists_extern_functions():
    btf = BTF.parse(sections(os.path.join(SAMPLES, "arena_htab.o"))[0])
    ks = btf.datasecs()[".ksyms"]
    funcs = [btf[v.type] for v in ks.secinfo]
    assert [(f.kind, f.name, f.linkage) for f in funcs] == [("func", "bpf_arena_alloc_pages", 2)]
    tags = btf.decl_tags(btf.find("htab_insert", "func").id)
    assert tags == [(0, "arg:arena")]


# --- .BTF.ext -----------------------------------------------------------------------------------
def test_func_info_names_every_function(kinds):
    btf, ext = kinds
    assert {s: [btf[t].name for _, t in recs] for s, recs in ext.func_info.items()} == \
        {".text": ["sum_fields", "cb"], "tc": ["kinds"]}
    assert [off for off, _ in ext.func_info[".text"]] == [0, 0x30]


def test_line_info_points_at_source_lines(kinds):
    _, ext = kinds
    src = open(os.path.join(DATA, "btf_kinds.c")).read().splitlines()
    for sec, recs in ext.line_info.items():
        offs = [r.insn_off for r in recs]
        assert offs == sorted(offs) and all(o % 8 == 0 for o in offs)
        for r in recs:
            assert r.file.endswith("btf_kinds.c") and src[r.line - 1] == r.text
            assert 0 <= r.col <= len(src[r.line - 1]) + 1


@pytest.mark.skipif(OBJDUMP is None, reason="llvm-objdump-19 is not installed")
def test_core_relocation_matches_llvm_objdump(kinds):
    btf, ext = kinds
    out = subprocess.run([OBJDUMP, "-dr", KINDS_O], capture_output=True, text=True, check=True).stdout
    want = [(int(m.group(1), 16), int(m.group(2)), m.group(3))
            for m in re.finditer(r"([0-9a-f]{16}):  CO-RE <\w+> \[(\d+)\] struct \w+::\w+ \(([\d:]+)\)", out)]
    got = [(r.insn_off, r.type_id, r.access) for r in ext.core_relos["tc"]]
    assert got == want and len(got) == 1
    assert ext.core_relos["tc"][0].kind == 0      # BPF_CORE_FIELD_BYTE_OFFSET
    assert btf[got[0][1]].name == "flags"


# --- values -------------------------------------------------------------------------------------
def test_decode_and_encode_round_trip(kinds):
    btf, _ = kinds
    neg = btf.find("neg", "var")
    assert decode(btf, neg.type, struct.pack("<h", -5)) == -5
    assert encode(btf, neg.type, -5, 2, "neg") == struct.pack("<h", -5)
    point = btf.find("point", "struct")
    raw = bytes(range(56))
    p = decode(btf, point.id, raw)
    assert p.x == struct.unpack_from("<i", raw, 0)[0] and p.hidden == struct.unpack_from("<Q", raw, 24)[0]
    assert encode(btf, point.id, p, 56, "origin") == raw
    with pytest.raises(ELFError, match="cannot store an int in a struct"):
        encode(btf, point.id, 3, 56, "origin")
    with pytest.raises(ELFError, match="does not fit"):
        encode(btf, neg.type, 1 << 16, 2, "neg")
    assert decode(None, 0, b"\x01\x02") == b"\x01\x02"      # untyped stays bytes


def test_ctypes_layout_matches_btf_offsets(kinds):
    import ctypes
    btf, _ = kinds
    for t in btf.types:
        if t.kind in ("struct", "union") and t.name != "opaque":
            ct = ctype(btf, t.id)
            assert ct is not None and ctypes.sizeof(ct) == t.size, t.name
            for i, m in enumerate(t.members):
                if not m.bitfield_size:     # an anonymous member is "_anon<i>" (btf_values)
                    field = getattr(ct, m.name or f"_anon{i}")
                    assert field.offset * 8 == m.bit_offset, (t.name, m.name, i)


# --- refusals -------------------------------------------------------------------------------------
def _hdr(raw):
    return struct.unpack_from("<HBBIIIII", raw)


def test_bad_headers_are_refused(kinds):
    raw, _ = sections(KINDS_O)
    with pytest.raises(BTFError, match="too short"):
        BTF.parse(raw[:10])
    with pytest.raises(BTFError, match="bad magic 0x9feb"):
        BTF.parse(b"\xeb\x9f" + raw[2:])   # big-endian BTF
    with pytest.raises(BTFError, match="unsupported BTF version 2"):
        BTF.parse(raw[:2] + b"\x02" + raw[3:])
    with pytest.raises(BTFError, match="past the end"):
        BTF.parse(raw[:len(raw) // 2])


def test_damaged_types_are_refused():
    raw = bytearray(sections(KINDS_O)[0])
    _m, _v, _f, hdr, toff, tlen, soff, slen = _hdr(raw)
    first = hdr + toff
    bad_kind = bytearray(raw)
    struct.pack_into("<I", bad_kind, first + 4, 31 << 24)
    with pytest.raises(BTFError, match=r"type \[1\] .* unknown kind 31"):
        BTF.parse(bytes(bad_kind))
    bad_name = bytearray(raw)
    struct.pack_into("<I", bad_name, first, slen + 100)
    with pytest.raises(BTFError, match=r"type \[1\]: string offset"):
        BTF.parse(bytes(bad_name))
    bad_ref = bytearray(raw)
    struct.pack_into("<I", bad_ref, first + 8, 10_000)   # [1] is a PTR: its target
    with pytest.raises(BTFError, match=r"type \[1\] refers to missing type id 10000"):
        BTF.parse(bytes(bad_ref))
    short = bytearray(raw)
    struct.pack_into("<I", short, 12, tlen - 2)           # cut the last record
    with pytest.raises(BTFError, match="truncated"):
        BTF.parse(bytes(short))


def test_damaged_ext_is_refused(kinds):
    btf, _ = kinds
    _, ext = sections(KINDS_O)
    with pytest.raises(BTFError, match="bad magic"):
        BTFExt.parse(b"\0\0" + ext[2:], btf)
    with pytest.raises(BTFError, match="outside the section|truncated"):
        BTFExt.parse(ext[:40], btf)
    bad = bytearray(ext)
    hdr_len, fi_off = struct.unpack_from("<II", bad, 4)
    struct.pack_into("<I", bad, hdr_len + fi_off, 4)       # func_info record size 4 < 8
    with pytest.raises(BTFError, match="record size 4"):
        BTFExt.parse(bytes(bad), btf)
