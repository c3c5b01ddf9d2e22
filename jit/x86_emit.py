"""A minimal x86-64 encoder for the baseline JIT (jit/baseline.py): just the shapes it emits.

Registers are x86 numbers (rax 0 .. r15 15). Memory operands are ``[base + disp]`` only.
Jumps and calls to labels are always rel32 and patched by :meth:`Asm.finish`; labels are any
hashable value (the baseline uses BPF slot numbers and small tuples).
"""
from __future__ import annotations

import struct

from pybpf.errors import JITError

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
R8, R9, R10, R11, R12, R13, R14, R15 = range(8, 16)

# Condition codes (the low nibble of jcc 0F 8x).
CC = {"jeq": 0x4, "jne": 0x5, "jgt": 0x7, "jge": 0x3, "jlt": 0x2, "jle": 0x6,
      "jsgt": 0xF, "jsge": 0xD, "jslt": 0xC, "jsle": 0xE, "jset": 0x5,
      "z": 0x4, "nz": 0x5, "s": 0x8, "g": 0xF}

_pack_i = struct.Struct("<i").pack
_pack_q = struct.Struct("<q").pack
_pack_Q = struct.Struct("<Q").pack


class Asm:
    """An append-only code buffer with rel32 label fixups."""

    def __init__(self) -> None:
        self.b = bytearray()
        self.labels: dict = {}
        self.fixups: list = []          # (position of the rel32, label)

    # -- encoding pieces ---------------------------------------------------------------------

    def _rex(self, w: int, reg: int, rm: int, force: bool) -> None:
        v = 0x40 | (w << 3) | ((reg >> 3) << 2) | (rm >> 3)
        if v != 0x40 or force:
            self.b.append(v)

    def rr(self, opc: bytes, reg: int, rm: int, w: int = 1, force: bool = False,
           pre: bytes = b"") -> None:
        """``opc /r`` with a register operand: ModRM reg=``reg``, rm=``rm``."""
        b = self.b
        if pre:
            b += pre
        self._rex(w, reg, rm, force)
        b += opc
        b.append(0xC0 | (reg & 7) << 3 | (rm & 7))

    def rm(self, opc: bytes, reg: int, base: int, disp: int, w: int = 1, force: bool = False,
           pre: bytes = b"") -> None:
        """``opc /r`` with the memory operand ``[base + disp]``."""
        b = self.b
        if pre:
            b += pre
        self._rex(w, reg, base, force)
        b += opc
        low = base & 7
        if disp == 0 and low != 5:
            mod = 0x00
        elif -128 <= disp < 128:
            mod = 0x40
        else:
            mod = 0x80
        b.append(mod | (reg & 7) << 3 | low)
        if low == 4:
            b.append(0x24)
        if mod == 0x40:
            b.append(disp & 0xFF)
        elif mod == 0x80:
            b += _pack_i(disp)

    def ri(self, ext: int, rm: int, imm: int, w: int = 1) -> None:
        """``81 /ext imm32`` or ``83 /ext imm8`` (add or adc sbb and sub xor cmp)."""
        if -128 <= imm < 128:
            self.rr(b"\x83", ext, rm, w)
            self.b.append(imm & 0xFF)
        else:
            self.rr(b"\x81", ext, rm, w)
            self.b += _pack_i(imm)

    # -- common instructions -----------------------------------------------------------------

    def mov(self, dst: int, src: int, w: int = 1) -> None:
        if dst != src or not w:        # a 32-bit self-move zero-extends: keep it
            self.rr(b"\x89", src, dst, w)

    def mov_imm(self, dst: int, value: int) -> None:
        """dst = value (64-bit, any value) in the shortest form."""
        value &= (1 << 64) - 1
        if value < (1 << 32):
            if value == 0:
                self.rr(b"\x31", dst, dst, 0)            # xor r32, r32
                return
            self._rex(0, 0, dst, False)
            self.b.append(0xB8 | (dst & 7))
            self.b += _pack_i(value - (1 << 32) if value >> 31 else value)
        elif value >= (1 << 64) - (1 << 31):
            self.rr(b"\xC7", 0, dst, 1)                  # sign-extended imm32
            self.b += _pack_i(value - (1 << 64))
        else:
            self._rex(1, 0, dst, False)
            self.b.append(0xB8 | (dst & 7))
            self.b += _pack_Q(value)

    def movabs(self, dst: int, value: int) -> None:
        self._rex(1, 0, dst, False)
        self.b.append(0xB8 | (dst & 7))
        self.b += _pack_Q(value & ((1 << 64) - 1))

    def push(self, r: int) -> None:
        if r >= 8:
            self.b.append(0x41)
        self.b.append(0x50 | (r & 7))

    def pop(self, r: int) -> None:
        if r >= 8:
            self.b.append(0x41)
        self.b.append(0x58 | (r & 7))

    def call_reg(self, r: int) -> None:
        self.rr(b"\xFF", 2, r, 0)

    def ret(self) -> None:
        self.b.append(0xC3)

    def imm32(self, v: int) -> None:
        self.b += _pack_i(v)

    # -- labels --------------------------------------------------------------------------------

    def label(self, name) -> None:
        if name in self.labels:
            raise JITError(f"baseline: label {name!r} placed twice")
        self.labels[name] = len(self.b)

    def _rel32(self, name) -> None:
        self.fixups.append((len(self.b), name))
        self.b += b"\0\0\0\0"

    def jmp(self, name) -> None:
        self.b.append(0xE9)
        self._rel32(name)

    def jcc(self, cc: int, name) -> None:
        self.b += bytes((0x0F, 0x80 | cc))
        self._rel32(name)

    def call(self, name) -> None:
        self.b.append(0xE8)
        self._rel32(name)

    def finish(self) -> bytes:
        b, labels = self.b, self.labels
        for pos, name in self.fixups:
            target = labels.get(name)
            if target is None:
                raise JITError(f"baseline: jump to undefined label {name!r}")
            b[pos:pos + 4] = _pack_i(target - (pos + 4))
        return bytes(b)
