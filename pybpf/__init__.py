"""pybpf: a BPF toolchain and virtual machine in Python.

Assemble (two dialects), disassemble (llvm-objdump, uBPF and bpftool styles), load clang-built
objects, verify, interpret and JIT-compile BPF programs inside the calling process::

    import pybpf
    prog = pybpf.assemble("r0 = 42\\nexit")
    vm = pybpf.VM()
    lp = vm.load(prog, engine="interp")
    assert lp.run() == 42
"""
from .errors import (AsmError, BPFError, DecodeError, ELFError, JITError, MapError,
                     MemoryAccessError, VerifierError, VMError)
from .insn import Insn
from .program import MapDecl, Program

__all__ = ["assemble", "disassemble", "Program", "MapDecl", "Insn", "VM", "load_elf",
           "BPFError", "AsmError", "DecodeError", "VerifierError", "VMError",
           "MemoryAccessError", "JITError", "MapError", "ELFError"]
__version__ = "0.1.0"


def assemble(text: str, syntax: str = "auto", filename: str | None = None, **kw) -> Program:
    """Assemble ``text`` ("llvm", "ubpf" or "auto" dialect) into a Program."""
    from .asm import assemble as _assemble
    return _assemble(text, syntax=syntax, filename=filename, **kw)


def disassemble(prog_or_bytes, syntax: str = "llvm", **kw) -> str:
    """Listing of a Program or raw bytecode in "llvm", "ubpf" or "kernel" style."""
    from .disasm import disassemble as _disassemble
    return _disassemble(prog_or_bytes, syntax=syntax, **kw)


def __getattr__(name):
    # The runtime and loaders import lazily so that `import pybpf` stays cheap.
    if name == "VM":
        from .vm import VM
        return VM
    if name == "load_elf":
        from .elf import load_elf
        return load_elf
    raise AttributeError(f"module 'pybpf' has no attribute {name!r}")
