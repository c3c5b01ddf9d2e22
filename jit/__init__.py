"""The JIT (imported as pybpf.jit): BPF -> LLVM IR lowering, compile worker, object extraction
and the execmem pack allocator.

``compile_program(prog, helpers)`` returns a callable :class:`JitProgram`; ``placement()`` shows
where the process's programs landed in the pack allocator.
"""
from pybpf.jit.program import JitProgram, compile_program, compile_programs

try:
    from pybpf.jit.execmem import placement
except ImportError:  # execmem offers the allocator method only
    def placement() -> dict:
        """Packs, their programs and utilisation for the process's pack allocator."""
        from pybpf.jit.execmem import default_allocator

        return default_allocator().placement()

__all__ = ["JitProgram", "compile_program", "compile_programs", "placement"]
