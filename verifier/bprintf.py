"""The format grammar of bpf_snprintf (the kernel's ``bpf_bprintf_prepare``, kernel/bpf/helpers.c).

One parser for both users: the verifier checks a format it can read (a read-only map's value,
``check_bpf_snprintf_call``: "Invalid format string") and the runtime formats with the same
parse (:mod:`pybpf.runtime.bprintf`). Here, not in the runtime, because imports flow
runtime -> verifier.

Rules (6.18): every character printable ASCII or a space; ``%%`` is a literal; each other ``%``
takes one argument (more specifiers than ``num_args`` is -EINVAL), with optional flags
``0 + - space`` and a width, then ``d i u x X`` (``l``/``ll`` for 64 bits), ``c``, ``s``
(followed by the end, a space or punctuation), or ``p`` with nothing (hashed), ``K x s S B``,
``ks``/``us`` (strings), ``i4 I4 i6 I6`` (addresses read through the pointer).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

MAX_BPRINTF_VARARGS = 12
_PUNCT = frozenset(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_SPACE = frozenset(b"\t\n\v\f\r ")


@dataclass(frozen=True)
class Spec:
    """One conversion: ``conv`` is d i u x X c s p px pK ps pS pB ks us pI4 pi4 pI6 pi6;
    ``size`` the argument's size (4 or 8 for integers)."""

    flags: str
    width: int | None
    conv: str
    size: int = 8


class FormatError(ValueError):
    """A format the kernel refuses; ``errno`` is the helper's -errno (EINVAL)."""

    errno = errno.EINVAL


def _end_ok(c: int) -> bool:
    return c == 0 or c in _SPACE or c in _PUNCT


def parse(fmt: bytes, num_args: int) -> list:
    """``fmt`` (without its NUL) as a list of ``bytes`` (literal text) and :class:`Spec`;
    FormatError where bpf_bprintf_prepare returns -EINVAL."""
    f = bytes(fmt) + b"\0\0\0"
    n = len(fmt)
    out: list = []
    text = bytearray()
    i = 0
    num_spec = 0
    while i < n:
        c = f[i]
        if not (0x20 <= c < 0x7F or c in _SPACE):
            raise FormatError(f"character 0x{c:02x} is not printable ASCII")
        if c != 0x25:
            text.append(c)
            i += 1
            continue
        if f[i + 1] == 0x25:
            text.append(0x25)
            i += 2
            continue
        if num_spec >= num_args:
            raise FormatError("more format specifiers than arguments")
        if text:
            out.append(bytes(text))
            text.clear()
        i += 1
        flags = ""
        while f[i] in b"0+- ":
            flags += chr(f[i])
            i += 1
        width = None
        if 0x31 <= f[i] <= 0x39:
            w = i
            i += 1
            while 0x30 <= f[i] <= 0x39:
                i += 1
            width = int(f[w:i])
        c = f[i]
        if c == 0x70:                                   # p
            nxt = f[i + 1]
            if _end_ok(nxt):
                out.append(Spec(flags, width, "p"))
                i += 1
            elif nxt in b"ku" and f[i + 2] == 0x73:
                if not _end_ok(f[i + 3]):
                    raise FormatError("%pks/%pus must end the word")
                out.append(Spec(flags, width, chr(nxt) + "s"))
                i += 3
            elif nxt in b"KxsSB":
                out.append(Spec(flags, width, "p" + chr(nxt)))
                i += 2
            elif nxt in b"iI" and f[i + 2] in b"46":
                out.append(Spec(flags, width, "p" + chr(nxt) + chr(f[i + 2])))
                i += 3
            else:
                raise FormatError(f"unsupported pointer format %p{chr(nxt)}")
        elif c == 0x73:                                 # s
            if not _end_ok(f[i + 1]):
                raise FormatError("%s must end the word")
            out.append(Spec(flags, width, "s"))
            i += 1
        elif c == 0x63:                                 # c
            out.append(Spec(flags, width, "c", 1))
            i += 1
        else:
            size = 4
            if c == 0x6C:                               # l
                size = 8
                i += 1
            if f[i] == 0x6C:
                i += 1
            if f[i] not in b"iduxX":
                raise FormatError(f"unsupported format specifier at offset {i}")
            out.append(Spec(flags, width, chr(f[i]), size))
            i += 1
        num_spec += 1
    if text:
        out.append(bytes(text))
    return out


# --- the verifier's side ---------------------------------------------------------------------
def map_value_bytes(m) -> bytes | None:
    """The current bytes of a single-element array's value (a read-only global section) as
    the verifier may read them (``map_direct_value_addr``), or None when it cannot."""
    value = getattr(m, "value", None)
    addr_of = getattr(value, "map_direct_value_addr", None)
    if addr_of is None:
        return None
    try:
        addr = addr_of(0)
    except Exception:           # not a direct-value map: nothing to read
        return None
    import ctypes
    return ctypes.string_at(addr, m.value_size)


def check_const_str(chk, reg, regno: int) -> None:
    """check_reg_const_str's last rule: the string must end inside the value."""
    raw = map_value_bytes(reg.map)
    if raw is None:
        return
    off = reg.off + reg.var.const_value()
    if raw.find(b"\0", off) < 0:
        chk.error("string is not zero-terminated", errno.EINVAL)


def check_snprintf_call(chk) -> None:
    """check_bpf_snprintf_call: a format the verifier can read must parse with r5 / 8
    arguments ("Invalid format string"); a data_len that is not a multiple of 8 is EINVAL
    without a message, as in the kernel."""
    regs = chk.state.cur.regs
    fmt, data_len = regs[3], regs[5]
    if data_len.var.var_off.value % 8:
        chk.error("", errno.EINVAL)
    raw = map_value_bytes(fmt.map) if fmt.map is not None else None
    if raw is None:
        return
    off = fmt.off + fmt.var.const_value()
    try:
        parse(raw[off:raw.index(b"\0", off)], data_len.var.var_off.value // 8)
    except (FormatError, ValueError):
        chk.error("Invalid format string", errno.EINVAL)
