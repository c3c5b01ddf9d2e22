"""pybpf's linker (jit/link.py), position-independent code and switch recovery (jit/switches.py).

Linking is checked on bytes in this process (no code runs): layouts, relocations resolved at
link time, fixups left for placement, the call stub for a far external, refusals that name the
relocation. Code that runs (jump tables, the 64-way switch benchmark program against its native
baseline, compare trees of every shape) runs in a child Python
(``python tests/test_link.py child``), one JSON line per case.
"""
from __future__ import annotations

import os
import random
import struct
import sys

import pytest

from support import ROOT, child_tests

from pybpf.errors import JITError
from pybpf.jit import codegen
from pybpf.jit.link import link_object

NATIVE_SWITCH = os.path.join(ROOT, "benchmarks", "c", "switch64.x86_64.o")
BPF_SWITCH = os.path.join(ROOT, "benchmarks", "c", "switch64.bpf.o")

EXTERN_IR = """\
@"pybpf.x0" = external global i8
@"pybpf.x1" = external global i8
define i64 @f(i64 %a) nounwind {
  %base = ptrtoint ptr @"pybpf.x0" to i64
  %s = add i64 %base, %a
  %r = call i64 @"pybpf.x1"(i64 %s)
  ret i64 %r
}
"""


# -- linking, on bytes ---------------------------------------------------------------------

def test_native_object_jump_table_is_resolved_at_link_time():
    with open(NATIVE_SWITCH, "rb") as f:
        image = link_object(f.read())
    sections = {name: (off, size) for name, off, size in image.sections}
    text_off, text_size = sections[".text"]
    rodata_off, rodata_size = sections[".rodata"]
    assert text_off == 0 and image.code_size >= text_size
    assert rodata_off >= image.code_size and rodata_size == 64 * 4   # 64 cases, 32-bit entries
    assert image.symbols == {"switch64": 0}
    assert not image.fixups and not image.externals
    # each entry is (case label - table), and every label lies inside .text
    for k in range(64):
        rel, = struct.unpack_from("<i", image.data, rodata_off + 4 * k)
        assert 0 <= rodata_off + rel < text_size


def test_externals_get_got_slots_and_far_calls_a_stub():
    image = codegen.compile_ir(EXTERN_IR, opt_level=2).image
    assert set(image.externals) == {"pybpf.x0", "pybpf.x1"}
    sections = {name: (off, size) for name, off, size in image.sections}
    got_off, got_size = sections[".got"]
    plt_off, plt_size = sections[".plt"]
    assert got_size == 16 and plt_size == 8 and plt_off < image.code_size <= got_off
    values = {"pybpf.x0": 0x1122334455667788, "pybpf.x1": 0x7F00_0000_0000}
    base = 0x10_0000_0000           # the callee is ~128 TiB away: the call takes the stub
    data = image.link(base, values)
    slots = {struct.unpack_from("<Q", data, got_off + 8 * i)[0] for i in range(2)}
    assert slots == set(values.values())
    call = [fx for fx in image.fixups if fx.kind == "call32"]
    assert len(call) == 1
    rel, = struct.unpack_from("<i", data, call[0].offset)
    assert call[0].offset + 4 + rel == plt_off                      # call -> stub
    assert data[plt_off:plt_off + 2] == b"\xff\x25"                   # jmp *slot(%rip)
    disp, = struct.unpack_from("<i", data, plt_off + 2)
    slot = plt_off + 6 + disp
    assert struct.unpack_from("<Q", data, slot)[0] == values["pybpf.x1"]
    # near: the call goes straight to the callee
    near = image.link(0x7F00_1000_0000, values)
    rel, = struct.unpack_from("<i", near, call[0].offset)
    assert 0x7F00_1000_0000 + call[0].offset + 4 + rel == values["pybpf.x1"]
    # the position-independent bytes do not depend on the values
    assert image.data == codegen.compile_ir(EXTERN_IR, opt_level=2).image.data


def test_unresolved_external_is_a_jiterror_at_placement():
    image = codegen.compile_ir(EXTERN_IR, opt_level=2).image
    with pytest.raises(JITError, match="undefined external symbol 'pybpf.x1'"):
        image.link(0x10000, {"pybpf.x0": 1})


def test_unknown_relocation_is_refused_by_name():
    ir = ('@t = external thread_local global i64\n'
          'define i64 @f() {\n  %v = load i64, ptr @t\n  ret i64 %v\n}\n')
    with pytest.raises(JITError, match=r"relocation R_X86_64_(GOTTPOFF|TLSGD|TPOFF32|GOTPC"
                                       r"\w*|TLSLD)\b.* not supported by pybpf's linker"):
        codegen.compile_ir(ir, opt_level=2)


def test_absolute_reference_that_does_not_fit_32s_is_refused_at_placement():
    from pybpf.jit.link import Fixup, LinkImage

    image = LinkImage(bytes(8), 8, {"f": 0}, (Fixup(0, "abs32s", "pybpf.far", 0),),
                      ("pybpf.far",))
    assert image.link(0, {"pybpf.far": 0x7FFF_FFFF})[:4] == b"\xff\xff\xff\x7f"
    with pytest.raises(JITError, match="R_X86_64_32S against 'pybpf.far'"):
        image.link(0, {"pybpf.far": 0x8000_0000})


def test_garbage_is_refused():
    for blob in (b"", b"\x7fELF" + bytes(60), b"not an object at all" * 5):
        with pytest.raises(JITError, match="object refused"):
            link_object(blob)


def test_code_is_position_independent_across_vms():
    """Every sample program lowers to the same IR and links to the same bytes in two VMs whose
    maps, arenas and helpers live at different addresses: what differs is only the values of
    the external symbols resolved at placement (DESIGN.md, "The JIT"). Compiling and placing
    runs no code, so this runs here."""
    import glob

    import pybpf

    compared = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "samples", "c", "*.o"))):
        seen = []
        for k in range(2):
            obj = pybpf.load_elf(path)
            if k:   # move the second VM's maps elsewhere
                obj.vm.create_map("array", key_size=4, value_size=64, max_entries=1000)
            out = {}
            for name, prog in obj.programs.items():
                # -O2 both times (a tiered load may still run its quick code)
                with obj.vm.load(prog, engine="jit", tier="O2") as lp:
                    out[name] = (lp._jit.ir_before, lp._jit.image.data, lp._jit.externs)
            seen.append(out)
        for name, (ir, data, externs) in seen[0].items():
            ir2, data2, externs2 = seen[1][name]
            assert ir == ir2 and data == data2, (path, name)
            assert set(externs) == set(externs2) and externs != externs2, (path, name)
            compared += 1
    assert compared >= 10


# -- running code (child process) -------------------------------------------------------------

def _switch_tree_program(cases: int, seed: int, mask: bool):
    """A compare tree like clang's for ``switch (x & 63)`` (or over all of ``x``, where values
    outside the cases' span take the original tree) with ``cases`` arms and a signed/unsigned
    mix of range tests; ``x`` is the u64 at the start of the memory."""
    import pybpf

    rnd = random.Random(seed)
    lines = ["r3 = *(u64 *)(r1 + 0)", "r2 = r3"] + (["r2 &= 63"] if mask else [])
    values = sorted(rnd.sample(range(64), cases))
    labels = {}

    def tree(lo: int, hi: int, depth: int) -> None:
        if hi - lo <= 2:
            for v in values[lo:hi]:
                lines.append(f"if r2 == {v} goto c{v}")
            lines.append("goto dflt")
            return
        mid = (lo + hi) // 2
        op = rnd.choice(["s>", ">"])
        label = f"t{lo}_{hi}"
        labels[label] = (mid, hi)
        lines.append(f"if r2 {op} {values[mid] - 1} goto {label}")
        tree(lo, mid, depth + 1)
        lines.append(f"{label}:")
        tree(mid, hi, depth + 1)

    tree(0, len(values), 0)
    lines += ["dflt:", "r0 = 999", "exit"]
    for v in values:
        lines += [f"c{v}:", f"r0 = {rnd.randrange(1 << 31)}", "r0 ^= r3", "exit"]
    return pybpf.assemble("\n".join(lines))


def case_compare_trees_become_switches_with_the_same_answers():
    from pybpf.jit.lower import lower_program
    from pybpf.vm import VM

    vm = VM()
    checked = 0
    for seed in range(8):
        prog = _switch_tree_program(8 + 7 * seed, seed, mask=seed % 2 == 0)
        assert "switch i64" in lower_program(prog).ir
        with vm.load(prog, engine="jit", verify=False) as lj, \
                vm.load(prog, engine="interp", verify=False) as li:
            for x in list(range(-70, 130)) + [2**31, 2**32 + 5, 2**63, 2**64 - 1]:
                mem = struct.pack("<Q", x & ((1 << 64) - 1))
                assert lj.run(mem=mem) == li.run(mem=mem), (seed, x)
                checked += 1
    return checked


def case_lookup_table_switch_runs_like_the_interpreter():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_lower import switch_program
    from pybpf.vm import VM

    prog = switch_program()
    vm = VM()
    out = []
    with vm.load(prog, engine="jit", verify=False) as lj:
        for k in range(-1, 26):
            out.append(lj._jit.run(k & ((1 << 64) - 1)))
    want = [(1 << 64) - 1 if not 0 <= k < 24 else
            ((k ** 3 * 7919) & 0x7FFFFFFF) << 32 | ((k * k * 0x9E3779B1) & 0xFFFFFFFF)
            for k in range(-1, 26)]
    assert out == want, (out, want)
    return len(out)


def case_switch64_jit_native_and_interpreter_agree():
    sys.path.insert(0, ROOT)
    from pybpf.benchmarks.bench_switch import NativeSwitch, buffer
    import pybpf

    obj = pybpf.load_elf(BPF_SWITCH)
    prog = obj.programs["switch64"]
    nat = NativeSwitch()
    try:
        # a loop over 4 KiB of mem of any length: no verifier can bound it, trusted here
        with obj.vm.load(prog, prog_type="mem", engine="jit", verify=False) as lj, \
                obj.vm.load(prog, prog_type="mem", engine="interp", verify=False) as li:
            assert "switch i32" in lj._jit.ir_before or "switch i64" in lj._jit.ir_before
            results = []
            for seed in range(3):
                data = buffer(seed)
                r = (li.run(mem=data), lj.run(mem=data), nat.test_run(data, 1)[0])
                assert r[0] == r[1] == r[2], [hex(v) for v in r]
                results.append(hex(r[0]))
            assert lj.run(mem=bytes(100)) == li.run(mem=bytes(100)) == 0   # too short
    finally:
        nat.close()
    return results


child_tests(globals(), lambda d: repr(d)[:200], "test_case")
