"""The instruction codec: ``Insn`` records and strict little-endian encoding/decoding.

An instruction slot is 8 bytes, ``<BBhi``: opcode, regs (dst low nibble, src high nibble), off
(s16), imm (s32). ld_imm64 takes two slots; the second has only ``imm`` set. Decoding is strict:
every field the ISA table says must be zero is checked, and a failure is a ``DecodeError`` naming
the slot.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from . import isa
from .errors import DecodeError

_SLOT = struct.Struct("<BBhi")


def s16(v: int) -> int:
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


def s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - 0x100000000 if v & 0x80000000 else v


class Insn(NamedTuple):
    """One 8-byte instruction slot (the second slot of ld_imm64 is an Insn with opcode 0)."""

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        return _SLOT.pack(self.opcode & 0xFF, (self.dst & 0xF) | ((self.src & 0xF) << 4),
                          s16(self.off), s32(self.imm))

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> "Insn":
        op, regs, off, imm = _SLOT.unpack_from(data, offset)
        return cls(op, regs & 0xF, regs >> 4, off, imm)


def encode(insns) -> bytes:
    """Bytes of a sequence of slots."""
    return b"".join(i.encode() for i in insns)


def split_slots(data: bytes) -> list[Insn]:
    """Raw slots without validation; the length must be a multiple of 8."""
    if len(data) % 8:
        raise DecodeError(f"bytecode length {len(data)} is not a multiple of 8", len(data) // 8)
    return [Insn.decode(data, o) for o in range(0, len(data), 8)]


def form_of(insns, pc: int) -> isa.Form:
    """Validate slot ``pc`` (and its second slot for ld_imm64) against the ISA table.

    Raises DecodeError naming the slot and the offending field, the way the kernel's
    "unknown opcode" / "uses reserved fields" checks do.
    """
    i = insns[pc]
    form = isa.find_form(i.opcode, i.src, i.off, i.imm)
    if form is None:
        if i.opcode in isa.FORMS_BY_OPCODE:
            sib = isa.FORMS_BY_OPCODE[i.opcode][0]
            field = next(iter(sib.disc))
            raise DecodeError(f"invalid {field} {getattr(i, field):#x} for opcode {i.opcode:#04x}", pc)
        raise DecodeError(f"unknown opcode {i.opcode:#04x}", pc)
    for name, constraint in form.fields.items():
        value = getattr(i, name)
        if not isa.field_ok(constraint, value):
            if constraint == "reg":
                raise DecodeError(f"invalid register r{value} in {name} of {form.name}", pc)
            raise DecodeError(f"{form.name} uses reserved field {name} (value {value:#x} must be "
                              f"{constraint:#x})", pc)
    if form.slots == 2:
        if pc + 1 >= len(insns):
            raise DecodeError("ld_imm64 is missing its second slot", pc)
        nxt = insns[pc + 1]
        if nxt.opcode or nxt.dst or nxt.src or nxt.off:
            raise DecodeError("invalid second slot of ld_imm64 (only imm may be set)", pc + 1)
        if not isa.field_ok(form.imm2, nxt.imm):
            # the kernel: "unrecognized bpf_ld_imm64 insn" for map fd/idx, func and btf_id forms
            raise DecodeError(f"{form.name} uses reserved field imm of its second slot "
                              f"(value {nxt.imm:#x} must be 0)", pc + 1)
    return form


def decode_all(data: bytes) -> list[tuple[int, isa.Form, Insn]]:
    """Validate every instruction of raw bytecode; returns (pc, form, insn) per instruction."""
    insns = split_slots(data)
    return validate(insns)


def validate(insns) -> list[tuple[int, isa.Form, Insn]]:
    out = []
    pc = 0
    while pc < len(insns):
        form = form_of(insns, pc)
        out.append((pc, form, insns[pc]))
        pc += form.slots
    return out


def imm64(insns, pc: int) -> int:
    """The 64-bit constant of the ld_imm64 at ``pc`` (unsigned)."""
    return (insns[pc].imm & 0xFFFFFFFF) | ((insns[pc + 1].imm & 0xFFFFFFFF) << 32)


def make(form: isa.Form | str, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
         imm2: int = 0) -> list[Insn]:
    """Slots for ``form`` with the given operands; fixed fields come from the table."""
    if isinstance(form, str):
        form = isa.FORMS_BY_NAME[form]
    vals = {"dst": dst, "src": src, "off": off, "imm": imm}
    for name, c in form.fields.items():
        if isinstance(c, int):
            vals[name] = c
    first = Insn(form.opcode, vals["dst"], vals["src"], s16(vals["off"]), s32(vals["imm"]))
    if form.slots == 2:
        return [first, Insn(0, 0, 0, 0, s32(imm2))]
    return [first]
