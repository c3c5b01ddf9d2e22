"""The inspection and benchmark commands: ``pybpf jit --show``, ``pybpf packs``, ``pybpf bench``,
and the PYBPF_DUMP_* switches through ``pybpf run --engine jit``. Each runs as a child process.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.jit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVG = "{http://www.w3.org/2000/svg}"
HAVE_CAPSTONE = importlib.util.find_spec("capstone") is not None

# A loop whose trip count comes from the input (so LLVM keeps code), and a helper call (14,
# get_current_pid_tgid: a Python helper, reached through pybpf's native bridge). A verifier
# cannot bound that loop (the kernel's refuses it too), so these inspections pass --no-verify.
PROG = """\
    r6 = r2
    r0 = 0
    r1 = r2
loop:
    r0 += r1
    r0 *= 3
    r1 += -1
    if r1 > 0 goto loop
    r7 = r0
    call 14
    r0 = r7
    exit
"""


def pybpf(*args, env=None, timeout=180):
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **(env or {}))
    for key in ("PYBPF_DUMP_IR", "PYBPF_DUMP_OPT", "PYBPF_DUMP_ASM", "PYBPF_EXECMEM_BACKEND"):
        if key not in (env or {}):
            full.pop(key, None)
    p = subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=full)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    path = tmp_path_factory.mktemp("jit") / "loopy.s"
    path.write_text(PROG)
    return str(path)


def test_show_ir_has_both_stages(src):
    rc, out, err = pybpf("jit", src, "--no-verify", "--show", "ir", "-O", "2")
    assert rc == 0, err
    before, _, after = out.partition("LLVM IR after -O2")
    assert "before optimisation" in before and after
    assert "define i64 @\"bpf_main\"" in before or "define i64 @bpf_main" in before
    assert "define" in after
    # the lowered IR carries a comment per BPF instruction (r6 is never read: its copy is
    # skipped, and says so); optimisation promoted the registers
    assert "; 0: mov64_reg dst=6: result never read, skipped" in before
    assert "; 1: mov64_imm dst=0 src=0 off=0 imm=0" in before
    assert 'alloca i64' in before and 'alloca i64' not in after


@pytest.mark.skipif(not HAVE_CAPSTONE, reason="capstone (pybpf[disasm]) is not installed")
@pytest.mark.parametrize("syntax,ret", [("att", "retq"), ("intel", "ret")])
def test_show_asm_capstone_at_real_addresses(src, syntax, ret):
    rc, out, err = pybpf("jit", src, "--no-verify", "--show", "asm", "--show", "placement",
                         "--asm-syntax", syntax)
    assert rc == 0, err
    assert f"{'AT&T' if syntax == 'att' else 'Intel'} syntax" in out and "capstone" in out
    # the listing starts at the address the placement reports, labelled with the entry
    entry = int(re.search(r"entry bpf_main at 0x([0-9a-f]+)", out).group(1), 16)
    assert f"{entry:016x} <bpf_main>:" in out
    assert re.search(rf"^  {entry:x}:  ", out, re.M)
    mnemonics = re.findall(r"^  [0-9a-f]+:  (?:[0-9a-f]{2} )*[0-9a-f]{2}\s+(\w+)", out, re.M)
    assert ret in mnemonics and any(m.startswith("mov") for m in mnemonics)
    # the helper call reaches pybpf's bridge (a function of this code, or shared native code
    # placed apart), and the listing names it
    assert re.search(r"[#;] <pybpf[\w.]*(\+0x[0-9a-f]+)?>$", out, re.M)
    if syntax == "att":
        assert "%rax" in out or "%eax" in out
    else:
        assert "%" not in out.split("<bpf_main>:", 1)[1].split("\n\n")[0]


@pytest.mark.skipif(not HAVE_CAPSTONE, reason="capstone (pybpf[disasm]) is not installed")
def test_show_asm_lists_the_switch_jump_table_as_data():
    """switch64's compare tree becomes a jump table in .rodata (jit/switches.py, jit/link.py):
    --show asm lists it entry by entry, each entry the start of an instruction of the listed
    code, instead of decoding the table as instructions. --no-verify shows the code of an
    unverified load: the loop head's latch charges the run budget."""
    obj = os.path.join(ROOT, "benchmarks", "c", "switch64.bpf.o")
    rc, out, err = pybpf("jit", obj, "--prog-type", "mem", "--no-verify", "--show", "asm")
    assert rc == 0, err
    code, _, data = out.partition("<.rodata>:")
    starts = {int(a, 16) for a in re.findall(r"^  ([0-9a-f]+):  ", code, re.M)}
    head = re.search(r"jump table at 0x([0-9a-f]+): (\d+) entries", data)
    assert head and int(head.group(2)) == 64, data[:500]
    table = int(head.group(1), 16)
    entries = re.findall(r"^  ([0-9a-f]+):  (?:[0-9a-f]{2} ){4}\s*\.long\s+(-?0x[0-9a-f]+)  "
                         r"# \[(\d+)\] -> 0x([0-9a-f]+) <bpf_main\+0x[0-9a-f]+>$", data, re.M)
    assert [int(e[2]) for e in entries] == list(range(64)), data[:2000]
    for at, rel, _, target in entries:
        assert table + int(rel, 16) == int(target, 16) and int(target, 16) in starts
    assert all(a < table for a in starts)             # no instruction decoded from the data
    # the code loads the table's address and jumps through it
    assert re.search(r"lea\w*\s+0x[0-9a-f]+\(%rip\), %\w+  # <\.rodata>$", code, re.M)
    assert re.search(r"jmpq\s+\*%\w+$", code, re.M)
    # the run budget's cell is reached through the GOT, and PyErr_CheckSignals is called
    assert re.search(r"movq\s+0x[0-9a-f]+\(%rip\), %\w+  # <\.got\+0x[0-9a-f]+>$", code, re.M)
    rc, ir, err = pybpf("jit", obj, "--prog-type", "mem", "--no-verify", "--show", "ir")
    assert rc == 0 and ".latch" in ir.split("LLVM IR after")[0], err


def test_show_asm_from_llvm(src):
    rc, out, err = pybpf("jit", src, "--no-verify", "--show", "asm", "--disassembler", "llvm")
    assert rc == 0, err
    assert "from LLVM (AT&T syntax)" in out
    assert re.search(r"^bpf_main:", out, re.M) and re.search(r"^\s+retq", out, re.M)
    rc, _, err = pybpf("jit", src, "--no-verify", "--show", "asm", "--disassembler", "llvm",
                       "--asm-syntax", "intel")
    assert rc == 2 and "Intel syntax needs capstone" in err


def test_show_placement_names_the_program(src):
    rc, out, err = pybpf("jit", src, "--no-verify")                   # placement is the default
    assert rc == 0, err
    first = out.splitlines()[0]
    assert first.startswith("loopy: entry bpf_main at 0x")
    marked = [l for l in out.splitlines() if l.lstrip().startswith("*")]
    assert len(marked) == 1 and marked[0].rstrip().endswith("loopy")
    assert "pack 0: " in out and "counters:" in out


def test_jit_bad_input_exits_2(tmp_path):
    bad = tmp_path / "bad.s"
    bad.write_text("r0 = \n")
    assert pybpf("jit", str(bad))[0] == 2
    assert pybpf("jit", str(tmp_path / "missing.s"))[0] == 2
    rc, _, err = pybpf("jit", str(bad), "--show", "everything")
    assert rc == 2 and "invalid choice" in err


def test_packs_svg_one_group_per_program(tmp_path):
    svg = tmp_path / "out.svg"
    # -O2 loads: one allocation per program (tiered loads add an entry stub each)
    rc, out, err = pybpf("packs", "--programs", "50", "--svg", str(svg),
                         env={"PYBPF_JIT_TIER": "O2"})
    assert rc == 0, err
    assert "1 pack(s)" in out and "50 allocation(s)" in out and f"wrote {svg}" in err
    root = ET.parse(svg).getroot()
    assert root.tag == SVG + "svg"
    names = [g.get("data-name") for g in root.iter(SVG + "g") if g.get("class") == "program"]
    assert sorted(names) == [f"sample{i:03d}" for i in range(50)]
    assert root.findall(f".//{SVG}path[@class='huge-boundary']")
    assert root.find(f".//{SVG}rect[@class='huge-page']") is not None


def test_packs_unload_every_leaves_holes_and_json(tmp_path):
    # -O2 loads: the pack holds the programs alone (tiered loads add entry stubs and swaps)
    rc, out, err = pybpf("packs", "--programs", "12", "--unload-every", "3", "--json",
                         env={"PYBPF_JIT_TIER": "O2"})
    assert rc == 0, err
    import json
    rep = json.loads(out)
    names = [p["name"] for p in rep["packs"][0]["programs"]]
    assert names == [f"sample{i:03d}" for i in range(12) if i % 3]
    assert len(rep["packs"][0]["free_ranges"]) >= 4      # a hole where each unloaded one was


def test_dump_switches_work_through_run(tmp_path):
    src = os.path.join(ROOT, "samples", "asm", "sum_bytes.s")
    # sum_bytes loops over a buffer of any length: trusted input (--no-verify, see its README)
    rc, out, err = pybpf("run", src, "--engine", "jit", "--no-verify", "--mem", "01020304",
                         env={"PYBPF_DUMP_IR": "1", "PYBPF_DUMP_ASM": "1"})
    assert rc == 0, err
    assert out.strip() == "0xa"
    assert "LLVM IR (before optimisation)" in err and "LLVM IR (after O2)" in err
    assert err.count("define") >= 2
    asm = err.split("x86-64 assembly", 1)[1]
    assert re.search(r"^\s+retq", asm, re.M)
    rc, out, err = pybpf("run", src, "--engine", "jit", "--no-verify", "--mem", "01020304")
    assert rc == 0 and "LLVM IR" not in err and "x86-64" not in err


@pytest.mark.slow
def test_bench_quick_prints_goals():
    rc, out, err = pybpf("bench", "--quick", timeout=300)
    assert rc == 0, out + err
    goals = out.split("\ngoals:\n", 1)[1].splitlines()
    assert any("test_run overhead per run" in l and "(goal < 5 ns)" in l for l in goals)
    assert any("alloc+fill+free procmem" in l and "(goal < 20 us)" in l for l in goals)
    compile_present = os.path.exists(os.path.join(ROOT, "benchmarks", "bench_compile.py"))
    assert any("compile+place ~200 insns -O2, median" in l and "(goal < 10 ms)" in l
               for l in goals) == compile_present
    assert re.search(r"^\d+ of \d+ goals met$", out, re.M)
    # each ratio is against a baseline measured in this run
    line = next(l for l in out.splitlines() if l.startswith("test_run overhead per run"))
    assert "ctypes call from a Python loop" in line and re.search(r"\d+\.\d\dx$", line)


def test_bench_runner_as_module():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    p = subprocess.run([sys.executable, "-m", "pybpf.benchmarks.run", "--quick", "--only", "jit"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    assert "running JIT code (bench_jit" in p.stdout
    assert re.search(r"^[01] of 1 goals met$", p.stdout, re.M)
    rc, _, err = pybpf("bench", "--only", "nonsense")
    assert rc == 2 and "unknown benchmark section" in err


def test_jit_show_on_an_arena_object_section():
    """pybpf jit resolves maps, the arena and kfuncs as a load does (arena_htab uses all three)."""
    obj = os.path.join(ROOT, "samples", "c", "arena_htab.o")
    p = subprocess.run([sys.executable, "-m", "pybpf", "jit", obj, "--section", "htab_query",
                        "--show", "ir", "--show", "placement"], capture_output=True, text=True,
                       timeout=180, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "define" in p.stdout and "htab_query" in p.stdout
