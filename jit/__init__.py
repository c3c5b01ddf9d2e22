"""The JIT (imported as pybpf.jit): BPF -> LLVM IR lowering, compile worker, object extraction
and the execmem pack allocator.

``compile_program(prog, helpers)`` returns a callable :class:`JitProgram`; ``placement()`` shows
where the process's programs landed in the pack allocator (see :mod:`pybpf.jit.placement` for
the text table, the SVG picture and the x86-64 listing).

Note: the name ``pybpf.jit.placement`` is the function; reach the module's other functions with
``from pybpf.jit.placement import placement_svg`` (a ``from`` import finds the module).
"""
from pybpf.jit.env import JitEnv
from pybpf.jit.program import JitProgram, compile_program, compile_programs
from pybpf.jit.placement import placement  # noqa: E402  (binds the function over the module)

__all__ = ["JitEnv", "JitProgram", "compile_program", "compile_programs", "placement"]
