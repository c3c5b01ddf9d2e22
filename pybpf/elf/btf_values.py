"""Python values for bytes described by BTF: how ``obj.variables[name].value`` reads and writes.

Integers, enums, bools and pointers become Python ints (signed where the type is), floats
floats; arrays, structs and unions become ctypes objects laid out from BTF (members at their
BTF offsets; a struct with bitfields, or anything without a ctypes shape, stays ``bytes``).
Writing accepts an int (for scalars), ``bytes``-like data of the exact size, or a ctypes object.
"""
from __future__ import annotations

import ctypes
import struct

from .btf import BTF
from ..errors import ELFError

_INTS = {(1, False): ctypes.c_uint8, (1, True): ctypes.c_int8, (2, False): ctypes.c_uint16,
         (2, True): ctypes.c_int16, (4, False): ctypes.c_uint32, (4, True): ctypes.c_int32,
         (8, False): ctypes.c_uint64, (8, True): ctypes.c_int64}
_SCALARS = ("int", "enum", "enum64", "ptr")


def ctype(btf: BTF, tid: int):
    """A ctypes type with the layout of BTF type ``tid``, or None when there is none."""
    t = btf.resolve(tid)
    if t.kind in ("int", "enum", "enum64"):
        if t.kind == "int" and t.encoding & 4 and t.size == 1:
            return ctypes.c_bool
        if t.kind == "int" and t.size == 1 and (t.encoding & 2 or t.name == "char"):
            return ctypes.c_char   # so char arrays read as bytes (.value / .raw)
        return _INTS.get((t.size, t.signed))
    if t.kind == "ptr":
        return ctypes.c_uint64  # a BPF pointer is 64 bits whatever the host's void * is
    if t.kind == "float":
        return {4: ctypes.c_float, 8: ctypes.c_double}.get(t.size)
    if t.kind == "array":
        elem = ctype(btf, t.elem_type)
        return None if elem is None else elem * t.nelems
    if t.kind in ("struct", "union"):
        return _aggregate(btf, t)
    return None


def _aggregate(btf: BTF, t):
    """A ctypes Structure/Union for a BTF struct/union, or None when ctypes cannot match the
    layout BTF records. ctypes allocates bitfields in storage units of their declared type, not
    as the C compiler packs them, so bitfields are tried on 1-, 2-, 4- and 8-byte units and a
    layout is kept only if every member lands on the bit offset BTF gives it."""
    # Without bitfields the struct is packed with explicit padding; with them ctypes' natural
    # alignment has to reproduce the compiler's, which the offset check below confirms.
    for unit in ((None,) if not any(m.bitfield_size for m in t.members) else (1, 2, 4, 8)):
        cls = _layout(btf, t, unit)
        if cls is not None:
            return cls
    return None


def _layout(btf: BTF, t, unit: int | None):
    fields, checks, pos = [], [], 0
    for i, m in enumerate(t.members):
        ct = ctype(btf, m.type)
        if ct is None:
            return None
        name = m.name or f"_anon{i}"
        if m.bitfield_size:
            if unit is None or ct not in _INTS.values():
                return None
            ct = _INTS[(unit, btf.resolve(m.type).signed)]
        elif t.kind == "struct" and unit is None:   # packed, with explicit padding
            off, bit = divmod(m.bit_offset, 8)
            if bit or off < pos:
                return None
            if off > pos:
                fields.append((f"_pad{i}", ctypes.c_uint8 * (off - pos)))
            pos = off + ctypes.sizeof(ct)
        fields.append((name, ct, m.bitfield_size) if m.bitfield_size else (name, ct))
        checks.append((name, m))
    base = ctypes.LittleEndianStructure if t.kind == "struct" else ctypes.LittleEndianUnion
    ns = {"_fields_": fields} if unit else {"_fields_": fields, "_pack_": 1}
    try:
        cls = type(t.name or f"anon_{t.id}", (base,), ns)
        if ctypes.sizeof(cls) < t.size:
            ns["_fields_"] = fields + [("_pad_end", ctypes.c_uint8 * (t.size - ctypes.sizeof(cls)))]
            cls = type(t.name or f"anon_{t.id}", (base,), ns)
    except (TypeError, ValueError):
        return None
    if ctypes.sizeof(cls) != t.size:
        return None
    for name, m in checks:
        cf = getattr(cls, name)
        bits, shift = (cf.size >> 16, cf.size & 0xFFFF) if m.bitfield_size else (0, 0)
        if cf.offset * 8 + shift != m.bit_offset or bits != m.bitfield_size:
            return None
    return cls


def decode(btf: BTF | None, tid: int | None, raw: bytes):
    """The Python value of ``raw`` read as BTF type ``tid`` (bytes when untyped or shapeless)."""
    raw = bytes(raw)
    if btf is None or not tid:
        return raw
    t = btf.resolve(tid)
    if t.kind in _SCALARS and len(raw) in (1, 2, 4, 8):
        return int.from_bytes(raw, "little", signed=t.kind != "ptr" and t.signed)
    if t.kind == "float" and len(raw) in (4, 8):
        return struct.unpack("<f" if len(raw) == 4 else "<d", raw)[0]
    ct = ctype(btf, tid)
    if ct is not None and ctypes.sizeof(ct) == len(raw):
        return ct.from_buffer_copy(raw)
    return raw


def encode(btf: BTF | None, tid: int | None, value, size: int, what: str) -> bytes:
    """Bytes of ``value`` for a ``size``-byte object of BTF type ``tid`` (``what`` names it)."""
    t = btf.resolve(tid) if btf is not None and tid else None
    if isinstance(value, bool) or isinstance(value, int):
        if t is not None and t.kind not in _SCALARS:
            raise ELFError(f"{what}: cannot store an int in a {t.kind} ({btf.type_str(tid)})")
        if size not in (1, 2, 4, 8):
            raise ELFError(f"{what}: cannot store an int in {size} bytes")
        lo = -(1 << (8 * size - 1))
        if not lo <= int(value) < (1 << (8 * size)):
            raise ELFError(f"{what}: {value} does not fit in {size} bytes")
        return (int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    if isinstance(value, float) and t is not None and t.kind == "float":
        return struct.pack("<f" if size == 4 else "<d", value)
    if isinstance(value, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        value = ctypes.string_at(ctypes.addressof(value), ctypes.sizeof(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) != size:
            raise ELFError(f"{what}: got {len(data)} bytes, the variable has {size}")
        return data
    raise ELFError(f"{what}: cannot store a {type(value).__name__}")
