"""Typed errors for every stage of pybpf, all rooted at :class:`BPFError`.

Each error carries the location it is about (source line and column, instruction index,
program counter and address) so that callers can point at the problem. The library raises
these; only the command line prints them.
"""
from __future__ import annotations

import errno as _errno


class BPFError(Exception):
    """Root of every error pybpf raises on purpose."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # subclasses add the location
        return self.message


class AsmError(BPFError):
    """Assembly text that cannot be assembled.

    ``line`` and ``col`` are 1-based; ``source`` is the offending line so that ``str()`` shows a
    caret under the problem, the way compilers do::

        prog.s:3:11: unknown label 'NOPE'
            ja NOPE
               ^
    """

    def __init__(self, message: str, line: int = 0, col: int = 0, source: str | None = None,
                 filename: str | None = None):
        super().__init__(message)
        self.line = line
        self.col = col
        self.source = source
        self.filename = filename

    def location(self) -> str:
        return f"{self.filename or '<asm>'}:{self.line}:{self.col}"

    def __str__(self) -> str:
        head = f"{self.location()}: {self.message}"
        if self.source is None:
            return head
        caret = " " * max(self.col - 1, 0) + "^"
        return f"{head}\n    {self.source.rstrip()}\n    {caret}"


class DecodeError(BPFError):
    """Bytecode that is not a valid instruction stream; ``index`` is the instruction slot."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index

    def __str__(self) -> str:
        if self.index is None:
            return self.message
        return f"insn {self.index}: {self.message}"


class VerifierError(BPFError):
    """The verifier refused a program. ``log`` is the kernel-format log, ``errno`` -EINVAL-like
    kind, ``insn_idx`` (also ``pc``) the instruction, ``source`` its ``(file:line, text)`` from
    ``.BTF.ext`` when the program came from an object; :meth:`explain` says why in words."""

    def __init__(self, message: str, insn_idx: int | None = None, log: str = "",
                 errno: int = _errno.EACCES):
        super().__init__(message)
        self.insn_idx = insn_idx
        self.log = log
        self.errno = errno
        self.program = None        # set by the verifier: the Program it refused
        self.context = None        # set by the verifier: what explain() needs

    @property
    def pc(self) -> int | None:
        return self.insn_idx

    @property
    def source(self):
        from pybpf.verifier.explain import source_location
        return source_location(self.program, self.insn_idx)

    def explain(self) -> str:
        """The failing instruction with its source line, the branches taken to reach it and
        where the offending register got its type (pybpf.verifier.explain)."""
        from pybpf.verifier.explain import explain
        return explain(self)

    def __str__(self) -> str:
        if self.insn_idx is None:
            return self.message
        return f"insn {self.insn_idx}: {self.message}"


class VMError(BPFError):
    """A run-time failure of a loaded program (instruction budget, bad helper call...)."""

    def __init__(self, message: str, pc: int | None = None, errno: int | None = None):
        super().__init__(message)
        self.pc = pc
        self.errno = errno      # the kernel's errno for the same input, where it has one

    def __str__(self) -> str:
        if self.pc is None:
            return self.message
        return f"pc {self.pc}: {self.message}"


class MemoryAccessError(VMError):
    """An access outside every region the program was given; raised before memory is touched."""

    def __init__(self, pc: int, address: int, size: int, kind: str, regions: str = ""):
        msg = f"invalid {kind} of {size} bytes at address 0x{address:x}"
        if regions:
            msg += f" (allowed: {regions})"
        super().__init__(msg, pc)
        self.address = address
        self.size = size
        self.kind = kind


class JITError(BPFError):
    """Lowering, code generation, object extraction or placement failed."""


class MapError(BPFError):
    """A map cannot be created or an operation on it failed; ``errno`` is the kernel's code."""

    def __init__(self, message: str, errno: int = _errno.EINVAL):
        super().__init__(message)
        self.errno = errno


class ELFError(BPFError):
    """An object file that cannot be loaded; the message names the section, symbol or relocation."""


def ensure(cond: object, exc: type[BPFError], *args, **kwargs) -> None:
    """Raise ``exc(*args, **kwargs)`` unless ``cond`` holds (pyelftools' ``elf_assert`` habit)."""
    if not cond:
        raise exc(*args, **kwargs)
