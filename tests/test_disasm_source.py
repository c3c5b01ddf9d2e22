"""Source lines from .BTF.ext in listings of clang objects (pybpf disasm x.o)."""
import os
import subprocess
import sys

from pybpf.disasm import disassemble
from pybpf.elf import load_elf_program

OBJ = os.path.join(os.path.dirname(__file__), "..", "samples", "c", "xdp_filter.o")


def test_source_lines_interleaved_in_each_style():
    prog = load_elf_program(open(OBJ, "rb").read(), OBJ, None)
    llvm = disassemble(prog, "llvm").splitlines()
    i = llvm.index("; stats.packets++;")
    assert llvm[i + 1].strip().startswith("2:")          # the comment sits right above its insn
    kernel = disassemble(prog, "kernel")
    assert "; stats.packets++; @ xdp_filter.c:" in kernel
    assert "# stats.packets++;" in disassemble(prog, "ubpf")
    assert ";" not in disassemble(prog, "llvm", source=False)


def test_listing_with_source_still_assembles_to_the_same_bytes():
    prog = load_elf_program(open(OBJ, "rb").read(), OBJ, None)
    from pybpf.asm import assemble
    for style in ("llvm", "ubpf"):
        assert assemble(disassemble(prog, style)).to_bytes() == prog.to_bytes()


def test_cli_disasm_object_shows_source():
    out = subprocess.run([sys.executable, "-m", "pybpf", "disasm", OBJ], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "; stats.packets++;" in out.stdout
