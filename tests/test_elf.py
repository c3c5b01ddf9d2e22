"""The ELF loader: parsing the C samples, linking and relocations (cross-checked against
llvm-objdump-19), phase 2 binding against the documented VM API, and refusals.
test_elf_kernel.py runs the same linked programs on the running kernel."""
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest

import pybpf
from pybpf import isa
from pybpf.elf import load_elf_program, parse_object
from pybpf.elf.load import bind
from pybpf.elf.maps import internal_map_name
from pybpf.elf.sections import program_type
from pybpf.errors import ELFError
from pybpf.insn import split_slots
from pybpf.kfunc_ids import KFUNC_IDS
from pybpf.uapi import BPF_F_MMAPABLE, BPF_F_RDONLY_PROG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples", "c")
DATA = os.path.join(ROOT, "tests", "data", "elf")
OBJECTS = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.endswith(".o"))
OBJDUMP = shutil.which("llvm-objdump-19")
CALL, LDDW = isa.FORMS_BY_NAME["call_helper"].opcode, isa.FORMS_BY_NAME["lddw"].opcode


def sample(name):
    return os.path.join(SAMPLES, name + ".o")


def test_every_sample_has_its_prebuilt_object():
    sources = sorted(f[:-2] for f in os.listdir(SAMPLES) if f.endswith(".c"))
    assert sources == sorted(os.path.basename(o)[:-2] for o in OBJECTS)
    assert len(sources) >= 5


@pytest.mark.skipif(not (shutil.which("clang-19") and shutil.which("llvm-mc-19")),
                    reason="clang-19 and llvm-mc-19 are needed to rebuild the objects")
@pytest.mark.parametrize("script,objects", [("samples/build.sh", "samples/c"),
                                            ("tests/data/elf/build.sh", "tests/data/elf"),
                                            ("tests/corpus/build.sh", "tests/corpus")])
def test_committed_objects_are_what_the_build_scripts_make(tmp_path, script, objects):
    """The prebuilt objects match their sources: rebuilding elsewhere gives the same bytes."""
    top = tmp_path / "tree"     # the test and corpus objects include the samples' header
    for part in ["samples"] + ([] if objects.startswith("samples/") else [objects]):
        shutil.copytree(os.path.join(ROOT, part), top / part)
    built = top / objects
    for o in built.glob("*.o"):
        o.unlink()
    subprocess.run(["sh", str(top / script)], check=True, capture_output=True, timeout=300)
    names = sorted(f for f in os.listdir(os.path.join(ROOT, objects)) if f.endswith(".o"))
    assert names and names == sorted(f.name for f in built.glob("*.o"))
    for name in names:
        assert (built / name).read_bytes() == open(os.path.join(ROOT, objects, name), "rb").read(), name


@pytest.mark.parametrize("path", OBJECTS, ids=os.path.basename)
def test_every_sample_parses(path):
    obj = parse_object(path)
    assert obj.programs and obj.license
    for p in obj.programs.values():
        assert p.prog_type is not None, p.section
        assert p.functions[0] == p.name and p.lines, p.name


# --- programs, maps, variables, license --------------------------------------------------------
def test_arena_htab_contents():
    obj = parse_object(sample("arena_htab"))
    assert obj.name == "arena_htab" and obj.license == "GPL"
    assert list(obj.programs) == ["htab_insert_prog", "htab_lookup_prog", "htab_delete_prog",
                                  "htab_selftest", "htab_query"]
    assert {p.prog_type for p in obj.programs.values()} == {"syscall"}
    assert all(p.sleepable for p in obj.programs.values())
    arena = obj.map_defs["arena"]
    assert (arena.type, arena.max_entries, arena.flags) == ("arena", 64, BPF_F_MMAPABLE)
    assert obj.arena_map == "arena"
    # globals at the end of the arena: 64 pages, one page of globals
    assert obj.arena_data_off == 63 * 4096 == arena.initial_offset
    assert set(obj.map_defs) == {"arena", "arena_ht.rodata", "arena_ht.data", "arena_ht.bss"}
    assert obj.maps[".rodata"] is obj.map_defs["arena_ht.rodata"]
    v = obj.variables
    assert v["n_buckets"].initial == 64 and v["fill_count"].initial == 1000
    assert v["htab_for_user"].section == ".addr_space.1" and v["htab_for_user"].size == 8
    assert v["htab_for_user"].type_str == "struct htab *"
    assert v["query_keys"].type_str == "__u64[16]" and v["query_keys"].size == 128
    assert list(v["query_keys"].initial) == [0] * 16
    assert obj.externs["bpf_arena_alloc_pages"].id == KFUNC_IDS["bpf_arena_alloc_pages"]


def test_xdp_filter_contents():
    obj = parse_object(sample("xdp_filter"))
    p = obj.programs["xdp_filter"]
    assert (p.section, p.prog_type, p.license) == ("xdp", "xdp", "Dual MIT/GPL")
    bp, ac = obj.map_defs["blocked_ports"], obj.map_defs["action_count"]
    assert (bp.type, bp.key_size, bp.value_size, bp.max_entries) == ("hash", 2, 1, 64)
    assert (ac.type, ac.key_size, ac.value_size, ac.max_entries) == ("array", 4, 8, 5)
    assert obj.btf.type_str(bp.btf_key_type) == "__u16"
    ro = obj.map_defs["xdp_filt.rodata"]
    assert ro.flags == BPF_F_RDONLY_PROG | BPF_F_MMAPABLE and ro.value_size == 5
    assert obj.variables["mode"].initial == 1 and obj.variables["drop_icmp"].initial == 0
    stats = obj.variables["stats"].initial
    assert [f[0] for f in stats._fields_] == ["packets", "bytes", "dropped", "malformed"]


def test_legacy_maps_and_string_literals():
    obj = parse_object(sample("socket_count"))
    pc, pb = obj.map_defs["proto_count"], obj.map_defs["proto_bytes"]
    assert (pc.origin, pc.type, pc.key_size, pc.value_size, pc.max_entries, pc.flags) == \
        ("legacy", "array", 4, 8, 256, 0)
    assert (pb.type, pb.max_entries, pb.flags, pb.sec_offset) == ("hash", 64, 1, 20)
    s = obj.map_defs[".rodata.str1.1"]   # libbpf keeps dotted section names whole
    assert s.initial == b"proto %u len %u\n\0" and s.flags == BPF_F_RDONLY_PROG
    assert list(obj.variables["rejected_protos"].initial) == [2, 0, 0, 0]
    assert obj.programs["socket_count"].prog_type == "socket_filter"


def test_ringbuf_contents():
    obj = parse_object(sample("ringbuf"))
    assert obj.map_defs["events"].type == "ringbuf" and obj.map_defs["events"].max_entries == 4096
    on_write = obj.programs["on_write"]
    assert (on_write.prog_type, on_write.attach_to) == ("tracepoint", "syscalls/sys_enter_write")
    assert obj.variables["lcg_mul"].initial == 6364136223846793005


@pytest.mark.parametrize("section,expect", [
    ("syscall", ("syscall", "", True)), ("xdp", ("xdp", "", False)),
    ("socket", ("socket_filter", "", False)), ("tc", ("sched_cls", "", False)),
    ("classifier", ("sched_cls", "", False)),
    ("tp/syscalls/sys_enter_write", ("tracepoint", "syscalls/sys_enter_write", False)),
    ("tracepoint/sched/sched_switch", ("tracepoint", "sched/sched_switch", False)),
    ("kprobe/do_sys_open", ("kprobe", "do_sys_open", False)), ("kprobe", ("kprobe", "", False)),
    ("kretprobe/x", ("kprobe", "x", False)), ("fentry.s/f", ("tracing", "f", True)),
    ("raw_tp/sys_enter", ("raw_tracepoint", "sys_enter", False)),
    ("cgroup_skb/ingress", ("cgroup_skb", "", False)), ("lsm.s/file_open", ("lsm", "file_open", True)),
    ("xdpfoo", (None, "", False)), ("my_section", (None, "", False)),
])
def test_section_names_map_to_program_types_as_libbpf(section, expect):
    assert program_type(section) == expect


def test_internal_map_names_follow_libbpf():
    assert internal_map_name("arena_htab", ".bss") == "arena_ht.bss"
    assert internal_map_name("x", ".rodata") == "x.rodata"
    assert internal_map_name("prog", ".rodata.str1.1") == ".rodata.str1.1"
    assert internal_map_name("a-b", ".data") == "a_b.data"
    assert len(internal_map_name("averyverylongname", ".data.custom_long")) <= 15


def test_typed_variables_from_btf():
    v = parse_object(os.path.join(DATA, "btf_kinds.o")).variables
    assert v["enabled"].initial == 1
    assert v["shade"].initial == 7 and v["bigval"].initial == 0x1122334455667788
    assert v["neg"].initial == -12345 and v["limit"].initial == 99
    o = v["origin"].initial
    assert (o.x, o.y, o.u.word, list(o.u.bytes), o.weight) == (-3, 4, 0x01020304, [4, 3, 2, 1], 2.5)
    b = v["bits"].initial
    assert (b.a, b.b, b.c, b.d) == (5, 17, -2, 0xBEEF)   # bitfields at the offsets BTF gives
    assert [list(r) for r in v["grid"].initial] == [[1, 2, 3], [4, 5, 6]]
    assert v["grid"].type_str == "__u32[2][3]" and v["name"].initial.value == b"pybpf"
    assert v["hidden_counter"].linkage == "static" and v["hidden_counter"].offset == 16


# --- linking and relocations, cross-checked with llvm-objdump ------------------------------------
def _objdump_relocs(path):
    out = subprocess.run([OBJDUMP, "-r", path], capture_output=True, text=True, check=True).stdout
    relocs, sec = {}, None
    for line in out.splitlines():
        m = re.match(r"RELOCATION RECORDS FOR \[(.*)\]:", line)
        if m:
            sec = m.group(1)
            continue
        m = re.match(r"([0-9a-f]{16}) (R_BPF_\w+)\s+(\S+)", line)
        if m and sec is not None:
            relocs.setdefault(sec, {})[int(m.group(1), 16)] = (m.group(2), m.group(3))
    return relocs


def _objdump_symbols(path):
    out = subprocess.run([OBJDUMP, "-t", path], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        m = re.match(r"([0-9a-f]{16}) (.{7}) (\S+)\s+([0-9a-f]{16}) (\S+)$", line)
        if m:
            syms.setdefault(m.group(5), (m.group(3), int(m.group(1), 16)))
    return syms


@pytest.mark.skipif(OBJDUMP is None, reason="llvm-objdump-19 is not installed")
@pytest.mark.parametrize("path", OBJECTS + [os.path.join(DATA, "btf_kinds.o")], ids=os.path.basename)
def test_relocations_applied_as_llvm_objdump_lists_them(path):
    """Every slot of every linked program is the object's slot, except where llvm-objdump lists
    a relocation or a pc-relative call; those hold what the relocated symbol means."""
    from pybpf.elf.reader import ElfReader
    from pybpf.elf.relo import functions_of
    rd = ElfReader(open(path, "rb").read(), path)
    relocs, syms = _objdump_relocs(path), _objdump_symbols(path)
    obj = parse_object(path)
    raw = {s.name: split_slots(rd.section_data(s)) for s in rd.sections if s.is_exec}
    funcs = {f.name: f for s in rd.sections if s.is_exec for f in functions_of(rd, s)}
    checked = 0
    for prog in obj.programs.values():
        starts = {slot: name for slot, name in prog.functions.items()}
        by_name = {name: slot for slot, name in starts.items()}
        for base, fname in starts.items():
            f = funcs[fname]
            sec_relocs = relocs.get(f.section.name, {})
            for k in range(f.end - f.start):
                orig, out = raw[f.section.name][f.start + k], prog.insns[base + k]
                rel = sec_relocs.get((f.start + k) * 8)
                if rel is None and not (orig.opcode == CALL and orig.src == isa.PSEUDO_CALL):
                    # only the second slot of a relocated ld_imm64 may differ
                    prev = sec_relocs.get((f.start + k - 1) * 8)
                    if prev is None or prev[0] != "R_BPF_64_64":
                        assert out == orig, (prog.name, fname, k)
                    continue
                assert (out.opcode, out.dst, out.off) == (orig.opcode, orig.dst, orig.off)
                checked += 1
                if rel is None or rel[0] == "R_BPF_64_32":
                    if rel is not None and syms[rel[1]][0] == "*UND*":
                        assert (out.src, out.imm) == (isa.PSEUDO_KFUNC_CALL, KFUNC_IDS[rel[1]])
                        continue
                    if rel is None:   # pc-relative call inside the section
                        sec, slot = f.section.name, f.start + k + orig.imm + 1
                    else:             # symbol value (bytes) + imm + 1, in the symbol's section
                        sec, value = syms[rel[1]]
                        slot = value // 8 + orig.imm + 1
                    target = next(g.name for g in funcs.values()
                                  if g.section.name == sec and g.start == slot)
                    assert out.src == isa.PSEUDO_CALL
                    assert starts[base + k + out.imm + 1] == target, (prog.name, k)
                    continue
                assert rel[0] == "R_BPF_64_64" and orig.opcode == LDDW
                sec, value = syms[rel[1]]
                nxt = prog.insns[base + k + 1]
                if sec in (".maps", "maps"):
                    assert out.src == isa.PSEUDO_MAP_IDX and prog.maps[out.imm].name == rel[1]
                elif sec == ".addr_space.1":
                    assert out.src == isa.PSEUDO_MAP_IDX_VALUE and prog.maps[out.imm].type == "arena"
                    assert nxt.imm == obj.arena_data_off + value + orig.imm
                elif sec in raw:   # a function's address (bpf_loop callback)
                    assert out.src == isa.PSEUDO_FUNC
                    assert starts[base + k + out.imm + 1] in by_name
                else:
                    assert out.src == isa.PSEUDO_MAP_IDX_VALUE
                    assert prog.maps[out.imm].section == sec and nxt.imm == value + orig.imm
    assert checked > 0


def test_subprograms_are_appended_once_and_calls_land_on_them():
    obj = parse_object(sample("arena_htab"))
    p = obj.programs["htab_selftest"]
    names = list(p.functions.values())
    assert names[0] == "htab_selftest" and len(names) == len(set(names))
    assert set(names) == {"htab_selftest", "htab_create", "htab_insert", "htab_find", "htab_hash"}
    for pc, form, insn in p.instructions():
        if form.name == "call_local":
            assert pc + insn.imm + 1 in p.functions
    # callee order is the order the relocation pass meets them (libbpf's)
    assert names[1] == "htab_create"
    starts = sorted(p.functions)
    assert starts[0] == 0 and all(a < b for a, b in zip(starts, starts[1:]))


def test_global_functions_carry_btf_func_info_and_arena_arg_tags():
    p = parse_object(sample("arena_htab")).programs["htab_insert_prog"]
    info = {fi.name: fi for fi in p.func_info.values()}
    assert info["htab_insert"].linkage == "global"
    assert info["htab_insert"].arg_tags == {0: ["arg:arena"]}
    assert info["htab_insert"].params[0] == ("htab", "struct htab *")
    assert info["htab_find"].linkage == "static" and info["htab_find"].arg_tags == {}
    assert info["htab_hash"].linkage == "global"     # __weak in C, global in BTF
    assert {p.functions[s] for s in p.func_info} == set(info)


def test_kfunc_calls_are_resolved_by_name():
    p = parse_object(sample("arena_list")).programs["arena_list_add"]
    calls = [i for _, f, i in p.instructions() if f.name == "call_kfunc"]
    assert calls and all(i.imm == KFUNC_IDS["bpf_arena_alloc_pages"] for i in calls)
    assert p.kfuncs == {KFUNC_IDS["bpf_arena_alloc_pages"]: "bpf_arena_alloc_pages"}


def test_callback_address_becomes_pseudo_func():
    p = parse_object(sample("arena_list")).programs["arena_list_add"]
    funcs = [(pc, i) for pc, f, i in p.instructions() if f.name == "lddw_func"]
    assert len(funcs) == 1
    pc, i = funcs[0]
    assert p.functions[pc + i.imm + 1] == "add_one"


def test_may_goto_survives_linking():
    p = parse_object(sample("arena_list")).programs["arena_list_sum"]
    assert any(f.name == "may_goto" for _, f, _ in p.instructions())


def test_line_info_is_source_text():
    src = open(os.path.join(SAMPLES, "xdp_filter.c")).read().splitlines()
    stripped = {line.strip() for line in src}
    p = parse_object(sample("xdp_filter")).programs["xdp_filter"]
    assert p.lines and all(text in stripped for text in p.lines.values())
    for slot, rec in p.line_info:
        assert 0 <= slot < len(p) and rec.file.endswith("xdp_filter.c")
        assert src[rec.line - 1].strip() == rec.text.strip()


def test_load_elf_program_selects_by_name_or_section():
    data = open(sample("ringbuf"), "rb").read()
    assert load_elf_program(data, "ringbuf.o", None).name == "produce"
    assert load_elf_program(data, "ringbuf.o", "on_write").name == "on_write"
    assert load_elf_program(data, "ringbuf.o", "tp/syscalls/sys_enter_write").name == "on_write"
    with pytest.raises(ELFError, match=r"no program or section 'nope'.*produce \[syscall\]"):
        load_elf_program(data, "ringbuf.o", "nope")


def test_cli_disassembles_an_object():
    p = subprocess.run([sys.executable, "-m", "pybpf", "disasm", sample("xdp_filter")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "<xdp_filter>:" in p.stdout and "exit" in p.stdout


def test_objects_without_sections_or_symbols():
    text = parse_object(os.path.join(DATA, "text_only.o"))
    assert list(text.programs) == ["add_twice", "negate"]     # .text globals, statics stay subprograms
    p = text.programs["add_twice"]
    assert p.prog_type is None and p.functions == {0: "add_twice", 4: "twice"}
    call = p.insns[1]
    assert (call.src, 1 + call.imm + 1) == (isa.PSEUDO_CALL, 4)
    asm = parse_object(os.path.join(DATA, "asm_only.o"))   # llvm-mc output: no FUNC symbols
    assert [(p.name, p.prog_type, len(p)) for p in asm.programs.values()] == \
        [("xdp", "xdp", 2), ("socket", "socket_filter", 4)]
    assert asm.license == "GPL" and asm.btf is None and not asm.variables


# --- refusals --------------------------------------------------------------------------------
def _patched(path, patches):
    data = bytearray(open(path, "rb").read())
    for off, new in patches:
        data[off:off + len(new)] = new
    return bytes(data)


def _reloc_entry(path, section, sym_name):
    """File offset of the first relocation entry of ``section`` against ``sym_name``."""
    from pybpf.elf.reader import ElfReader
    rd = ElfReader(open(path, "rb").read(), path)
    rel = rd.section(".rel" + section)
    for i in range(rel.size // 16):
        r_off, r_info = struct.unpack_from("<QQ", rd.data, rel.offset + 16 * i)
        if rd.symbols[r_info >> 32].name == sym_name:
            return rel.offset + 16 * i, r_off
    raise LookupError(sym_name)


@pytest.mark.parametrize("cut", [0, 3, 40, 64, 1000, -100])
def test_truncated_file_is_refused(cut):
    data = open(sample("xdp_filter"), "rb").read()
    data = data[:cut] if cut >= 0 else data[:cut]
    with pytest.raises(ELFError, match=r"truncated|not an ELF|extends past the end"):
        parse_object(data, filename="x.o")


def test_non_bpf_elf_is_refused():
    with pytest.raises(ELFError, match=r"/bin/true: not a BPF object: machine is X86_64"):
        parse_object("/bin/true")
    data = _patched(sample("xdp_filter"), [(18, struct.pack("<H", 62))])   # e_machine
    with pytest.raises(ELFError, match="machine is X86_64"):
        parse_object(data, filename="x.o")
    with pytest.raises(ELFError, match="big-endian"):
        parse_object(_patched(sample("xdp_filter"), [(5, b"\x02")]), filename="x.o")
    with pytest.raises(ELFError, match="not an ELF"):
        parse_object(b"-- asm\nexit\n", filename="x.data")


def _prog_of(data, section):
    """The one program of ``section`` that cannot load."""
    bad = [p.name for p in parse_object(data, filename="x.o").programs.values()
           if p.section == section and p.load_error is not None]
    assert len(bad) == 1, bad
    return bad[0]


def _load_error(data, filename, program):
    """libbpf opens an object whose program cannot load; the failure comes at vm.load, and it
    is that program's only (the others of the object still load)."""
    obj = bind(parse_object(data, filename=filename))
    bad = obj.programs[program]
    assert bad.load_error is not None
    with pytest.raises(ELFError) as e:
        obj.vm.load(bad)
    for other in obj.programs.values():
        if other.load_error is None:
            obj.vm.load(other).close()
    return e


def test_unsupported_relocation_type_is_refused_with_its_place():
    path = sample("arena_htab")
    entry, r_off = _reloc_entry(path, "syscall", "fill_count")
    data = _patched(path, [(entry + 8, struct.pack("<I", 2))])   # R_BPF_64_64 -> R_BPF_64_ABS64
    e = _load_error(data, "h.o", _prog_of(data, "syscall"))
    msg = str(e.value)
    assert "unsupported relocation R_BPF_64_ABS64" in msg and "'fill_count'" in msg
    assert f"syscall+{r_off:#x}" in msg


def test_relocation_on_a_plain_instruction_is_refused():
    path = sample("arena_htab")
    entry, r_off = _reloc_entry(path, "syscall", "fill_count")
    data = _patched(path, [(entry, struct.pack("<Q", r_off + 16))])  # onto the following ldx
    e = _load_error(data, "h.o", _prog_of(data, "syscall"))
    assert "neither ld_imm64 nor call" in str(e.value)


def test_unknown_kfunc_is_refused_by_name():
    data = open(sample("arena_list"), "rb").read()   # rename it in .strtab and .BTF alike
    data = data.replace(b"bpf_arena_alloc_pages\0", b"bpf_arena_alloc_pagez\0")
    obj = parse_object(data, filename="l.o")
    bad = [p for p in obj.programs.values() if p.load_error is not None]
    assert bad and all(re.search(r"unknown kfunc 'bpf_arena_alloc_pagez' called at \.text\+0x",
                                 str(p.load_error)) for p in bad)
    e = _load_error(data, "l.o", bad[0].name)
    assert "l.o: program" in str(e.value)


def test_typed_ksym_variable_is_refused_by_name():
    obj = pybpf.load_elf(os.path.join(DATA, "ksym_var.o"))
    prog = next(iter(obj.programs.values()))
    with pytest.raises(ELFError, match=r"__ksym variable.*'bpf_prog_active'"):
        obj.vm.load(prog)


def test_section_past_end_of_file_is_named():
    from pybpf.elf.reader import ElfReader
    path = sample("xdp_filter")
    rd = ElfReader(open(path, "rb").read(), path)
    h = rd.elf.header
    idx = rd.section(".BTF").index
    off = h["e_shoff"] + idx * h["e_shentsize"] + 32            # sh_size of .BTF
    data = _patched(path, [(off, struct.pack("<Q", 1 << 30))])
    with pytest.raises(ELFError, match=r"section '.BTF'.*past the end"):
        parse_object(data, filename="x.o")


def test_bad_btf_is_named():
    data = open(sample("xdp_filter"), "rb").read()
    from pybpf.elf.reader import ElfReader
    sec = ElfReader(data).section(".BTF")
    with pytest.raises(ELFError, match=r"x.o: .BTF: bad magic"):
        parse_object(_patched(sample("xdp_filter"), [(sec.offset, b"\0\0")]), filename="x.o")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["arena_htab", "socket_count"])
def test_damaged_objects_give_typed_errors_only(name):
    """Random byte damage and truncation: the loader either copes or raises a BPFError."""
    import random
    from pybpf.errors import BPFError
    rng = random.Random(name)
    base = open(sample(name), "rb").read()
    refused = 0
    for _ in range(250):
        d = bytearray(base)
        for _ in range(rng.choice([1, 2, 4, 8, 16])):
            d[rng.randrange(len(d))] = rng.randrange(256)
        if rng.random() < 0.2:
            d = d[:rng.randrange(len(d))]
        try:
            parse_object(bytes(d), filename="damaged.o")
        except BPFError:
            refused += 1
    assert refused > 25      # the damage was noticed often enough to mean something


def test_missing_file_is_an_elf_error():
    with pytest.raises(ELFError, match="No such file"):
        parse_object("/nonexistent/x.o")


# --- phase 2 against the documented VM API ----------------------------------------------------
class FakeMap:
    """Just the map faces pybpf.elf.load uses (bytes syscall face; arena read/write by address)."""

    def __init__(self, fd, mtype, **kw):
        import ctypes
        self.fd, self.type, self.kw = fd, mtype, kw
        self.values = {}
        if mtype == "arena":
            self._mem = ctypes.create_string_buffer(kw["max_entries"] * 4096)
            self.user_vm_start = ctypes.addressof(self._mem)

    def sys_lookup(self, key):
        return self.values.get(key, bytes(self.kw["value_size"]))

    def sys_update(self, key, value):
        assert len(value) == self.kw["value_size"]
        self.values[key] = bytes(value)

    def read(self, addr, size):
        off = addr - self.user_vm_start
        return self._mem.raw[off:off + size]

    def write(self, addr, data):
        import ctypes
        assert self.user_vm_start <= addr and addr + len(data) <= self.user_vm_start + len(self._mem)
        ctypes.memmove(addr, data, len(data))


class FakeVM:
    def __init__(self):
        self.created = []

    def create_map(self, mtype, **kw):
        m = FakeMap(100 + len(self.created), mtype, **kw)
        self.created.append((mtype, kw))
        return m


def test_bind_creates_maps_writes_initial_values_and_uses_fds():
    vm = FakeVM()
    obj = bind(parse_object(sample("arena_list")), vm)
    assert obj.vm is vm
    assert [(t, kw["name"]) for t, kw in vm.created] == [("arena", "arena"), ("array", "arena_li.data"),
                                                         ("array", "arena_li.bss")]
    assert vm.created[0][1]["max_entries"] == 16 and vm.created[0][1]["flags"] == BPF_F_MMAPABLE
    v = obj.variables
    assert v["cnt"].value == 10                     # .data initial value written at load
    v["cnt"].value = 25
    assert obj.maps[".data"].values[b"\0\0\0\0"][:4] == struct.pack("<I", 25)
    arena = obj.maps["arena"]
    assert v["arena_sum"].address == arena.user_vm_start + obj.arena_data_off + v["arena_sum"].offset
    v["arena_sum"].value = 1234
    import ctypes
    assert ctypes.c_uint64.from_address(v["arena_sum"].address).value == 1234
    prog, before = obj.programs["arena_list_add"], parse_object(sample("arena_list")).programs["arena_list_add"]
    assert not prog.maps and len(prog) == len(before)
    fd_src = {isa.PSEUDO_MAP_IDX: isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_IDX_VALUE: isa.PSEUDO_MAP_VALUE}
    seen = set()
    for (pc, f, old), new in zip(before.instructions(), prog.instructions()):
        if f.kind == "lddw" and old.src in fd_src:
            assert new[2].src == fd_src[old.src]
            assert new[2].imm == obj.maps[before.maps[old.imm].name].fd
            assert prog.insns[pc + 1] == before.insns[pc + 1]      # the value offset stays
            seen.add(old.src)
        else:
            assert new[2] == old
    assert seen == set(fd_src)
    with pytest.raises(ELFError, match="already loaded"):
        bind(obj, vm)


def test_variables_need_a_vm():
    obj = parse_object(sample("arena_list"))
    with pytest.raises(ELFError, match="not loaded into a VM"):
        obj.variables["cnt"].value
    with pytest.raises(ELFError, match="cannot create maps"):
        bind(obj, object())


def test_variable_writes_are_checked():
    obj = bind(parse_object(sample("arena_list")), FakeVM())
    with pytest.raises(ELFError, match="does not fit"):
        obj.variables["cnt"].value = 1 << 40
    with pytest.raises(ELFError, match="got 3 bytes"):
        obj.variables["list_sum"].value = b"abc"


def test_bind_with_the_runtime_maps():
    """The same binding against pybpf's own map classes (through a VM stand-in that only
    creates maps, until pybpf.VM.create_map exists)."""
    from pybpf.runtime.maps import create_map

    class MapsOnly:
        def create_map(self, mtype, **kw):
            return create_map(mtype, fd=10 + len(made), **kw)
    made = []
    obj = bind(parse_object(sample("arena_htab")), MapsOnly())
    v = obj.variables
    assert v["fill_count"].value == 1000 and v["n_buckets"].value == 64
    v["fill_count"].value = 7
    assert obj.maps["arena_ht.data"].sys_lookup(b"\0\0\0\0") == struct.pack("<I", 7)
    arena = obj.maps["arena"]
    assert v["htab_for_user"].address == arena.user_vm_start + obj.arena_data_off + v["htab_for_user"].offset
    assert v["htab_for_user"].value == 0
    v["user_table"].value = arena.user_vm_start + 8 * 4096
    assert arena.read(v["user_table"].address, 8) == struct.pack("<Q", arena.user_vm_start + 8 * 4096)
    assert v["query_keys"].address == obj.maps[".bss"].map_lookup_elem(b"\0\0\0\0") + v["query_keys"].offset
    keys = v["query_keys"].value
    keys[3] = 99
    v["query_keys"].value = keys
    assert list(v["query_keys"].value)[:4] == [0, 0, 0, 99]


def test_load_elf_with_the_real_vm():
    obj = pybpf.load_elf(sample("xdp_filter"))
    assert obj.variables["mode"].value == 1
    assert set(obj.maps) >= {"blocked_ports", "action_count"}


def test_a_code_section_past_the_kernel_limit_fails_only_its_programs(monkeypatch):
    # a section over the kernel's instruction limit is refused before it is decoded, and only
    # the programs that link it fail at vm.load (libbpf opens the object; bpf_prog_load says
    # E2BIG); the limit is lowered to 50 here: produce's section has 97 slots, on_write's 45
    from pybpf import program

    monkeypatch.setattr(program, "BPF_COMPLEXITY_LIMIT_INSNS", 50)
    obj = pybpf.load_elf(os.path.join(ROOT, "samples/c/ringbuf.o"))
    with pytest.raises(ELFError, match=r"program 'produce' \(section 'syscall'\): section "
                                       r"'syscall': program too large: 97 instructions, more "
                                       r"than the kernel's 50 \(E2BIG\)"):
        obj.vm.load(obj.programs["produce"])
    with obj.vm.load(obj.programs["on_write"]) as lp:
        assert lp.prog_type == "tracepoint"
    obj.vm.close()
