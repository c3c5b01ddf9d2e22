"""bpf_snprintf's output: the kernel's bpf_bprintf_prepare + bstr_printf (lib/vsprintf.c).

The format is parsed by :mod:`pybpf.verifier.bprintf` (the verifier checks the same grammar);
this module renders it as the kernel's vsnprintf does for that subset: integers with flags and
width (``+``/space only for signed conversions), ``%c``, ``%s`` with width, ``%px`` as 16
zero-padded hex digits, ``%p``/``%pK`` hashed (``ptr_to_id``: a keyed hash per process, 32
bits, printed as ``%px``; NULL and error pointers raw), ``%ps``/``%pS``/``%pB`` as ``0x...``
(a user address has no kernel symbol), ``%pI4 %pi4 %pI6 %pi6`` and the strings
``%s %pks %pus`` read through their pointer from the run's readable memory (a fault gives
zeros / the empty string, as ``copy_from_kernel_nofault``). Strings and addresses share the
kernel's 512-byte argument buffer: past it the helper returns -ENOSPC. After any ``%p``
conversion bstr_printf skips the letters and digits that follow (``%pI4abc`` prints the address
alone, ``%pxyz`` the pointer), and so does pybpf. ``bpf_trace_printk`` formats the same way
(:func:`trace_printk`: three arguments, a 1024-byte buffer).

Measured against the running kernel's bpf_snprintf (tests/test_bprintf_kernel.py), byte for
byte except where pybpf cannot know what the kernel knows:

- ``%p`` and ``%pK`` (kptr_restrict 0) print a hash of the pointer, which the kernel keys with
  a secret per boot: pybpf keys its own per process, so the value differs but the shape is
  the same (8 zero digits, 8 hex digits; NULL and error pointers raw, as the kernel prints).
- ``%ps``/``%pS``/``%pB`` print ``0x`` and the address: pybpf has no kernel symbols, and the
  addresses a program holds name none (the kernel prints the same for them).
- ``%pus`` reads the run's memory, as pybpf's ``bpf_probe_read_user_str`` does (pybpf has one
  address space); the kernel reads user memory there, so a pointer to the BPF stack or a map
  value prints the empty string in the kernel and the string in pybpf.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os

from pybpf.verifier.bprintf import MAX_BPRINTF_VARARGS, FormatError, Spec, parse

from .helpers import ACTIVE_REGIONS
from .memory import PROC

MAX_BPRINTF_BIN_ARGS = 512
MAX_BPRINTF_BUF = 1024              # bpf_trace_printk's output buffer
MAX_TRACE_PRINTK_VARARGS = 3
M64 = (1 << 64) - 1
_PTR_KEY = os.urandom(16)
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_ERRNO = 4095


def _readable(address: int, size: int) -> bool:
    regions = ACTIVE_REGIONS.get()
    return regions is not None and size > 0 and regions.find(address, size) is not None


def _read_str(address: int, limit: int) -> tuple[bytes, int]:
    """(string, bytes of the buffer used) as strncpy_from_kernel_nofault into ``limit`` bytes."""
    regions = ACTIVE_REGIONS.get()
    r = regions.find(address, 1) if regions is not None else None
    if r is None:
        return b"", 1
    chunk = bytes(PROC[address:min(r.end, address + limit)])
    nul = chunk.find(b"\0")
    if nul >= 0:
        return chunk[:nul], nul + 1
    if len(chunk) == limit:          # truncated to the buffer, NUL-ended
        return chunk[:limit - 1], limit
    return b"", 1                    # runs into unreadable memory: a fault


def _hashed(v: int) -> int:
    if v == 0 or v >= (-MAX_ERRNO & M64):
        return v
    h = hashlib.blake2b(v.to_bytes(8, "little"), key=_PTR_KEY, digest_size=8).digest()
    return int.from_bytes(h, "little") & 0xFFFFFFFF


def _pad(s: str, spec: Spec) -> str:
    if spec.width is None or len(s) >= spec.width:
        return s
    return s.ljust(spec.width) if "-" in spec.flags else s.rjust(spec.width)


def _number(v: int, spec: Spec) -> str:
    conv = spec.conv
    bits = 8 * spec.size
    v &= (1 << bits) - 1
    flags = spec.flags
    if conv in "di":
        if v >> (bits - 1):
            v -= 1 << bits
        conv = "d"
    else:
        flags = flags.replace("+", "").replace(" ", "")     # no sign for unsigned
        conv = "d" if conv == "u" else conv
    return ("%" + flags + (str(spec.width) if spec.width else "") + conv) % v


def _pointer(v: int, spec: Spec) -> str:
    if spec.width is None:
        return f"{v:016x}"
    fl = spec.flags if "0" in spec.flags and "-" not in spec.flags else ""
    return _pad(f"{v:x}", spec) if not fl else f"{v:0{spec.width}x}"


def render(fmt: bytes, args: list[int], size: int = 1 << 31) -> bytes:
    """The bytes bstr_printf produces into a ``size``-byte buffer, untruncated (no NUL; the
    length is what the helper reports); FormatError for -EINVAL, OSError(ENOSPC).

    Strings bpf_bprintf_prepare rendered beforehand (``%pI4``... ``%pks``, ``%pus``, ``%pB``)
    are copied by bstr_printf only while the output has not reached the end of the buffer:
    past it they count for nothing, as in the kernel."""
    out: list[str] = []

    def prerendered(text: str) -> None:
        if sum(map(len, out)) < size:
            out.append(text)
    buf_left = MAX_BPRINTF_BIN_ARGS
    argi = 0
    after_pointer = False
    for item in parse(fmt, len(args)):
        if isinstance(item, bytes):
            text = item.decode("latin-1")
            if after_pointer:       # bstr_printf: while (isalnum(*fmt)) fmt++;
                text = text[len(text) - len(text.lstrip(_ALNUM)):]
            out.append(text)
            after_pointer = False
            continue
        v = args[argi] & M64
        argi += 1
        conv = item.conv
        after_pointer = conv.startswith("p")
        if conv in ("s", "ks", "us"):
            if buf_left <= 0:
                raise OSError(errno.ENOSPC, "bprintf buffer full")
            s, used = _read_str(v, buf_left)
            buf_left -= used
            text = s.decode("latin-1")
            if conv == "s":
                out.append(_pad(text, item))
            else:
                prerendered(text)
        elif conv == "c":
            if buf_left <= 0:
                raise OSError(errno.ENOSPC, "bprintf buffer full")
            buf_left -= 1
            out.append(_pad(chr(v & 0xFF), item))
        elif conv in ("pI4", "pi4", "pI6", "pi6"):
            n = 4 if conv.endswith("4") else 16
            if buf_left < n:
                raise OSError(errno.ENOSPC, "bprintf buffer full")
            raw = bytes(PROC[v:v + n]) if _readable(v, n) else bytes(n)
            if conv == "pI4":
                text = ".".join(str(b) for b in raw)
            elif conv == "pi4":
                text = ".".join(f"{b:03d}" for b in raw)
            elif conv == "pI6":
                text = ":".join(raw[j:j + 2].hex() for j in range(0, 16, 2))
            else:
                text = raw.hex()
            buf_left -= len(text) + 1
            prerendered(text)
        elif conv == "pB":
            # sprint_backtrace looks the symbol up at address - 1 and, finding none, prints
            # the address itself
            text = f"0x{v:x}"
            buf_left -= len(text) + 1
            prerendered(text)
        else:
            buf_left -= (-(MAX_BPRINTF_BIN_ARGS - buf_left)) % 4     # PTR_ALIGN(tmp_buf, 4)
            if buf_left < item.size:
                raise OSError(errno.ENOSPC, "bprintf buffer full")
            buf_left -= item.size
            if conv in ("ps", "pS"):
                out.append(_pad(f"0x{v:x}", item))
            elif conv == "px":
                out.append(_pointer(v, item))
            elif conv in ("p", "pK"):
                out.append(_pointer(_hashed(v), item))
            else:
                out.append(_number(v, item))
    return "".join(out).encode("latin-1")


def bpf_snprintf(out: int, out_size: int, fmt: int, data: int, data_len: int) -> int:
    """BPF_CALL_5(bpf_snprintf): the length with its NUL, or -errno (pointers already checked:
    out for out_size bytes, data for data_len, fmt a NUL-terminated string)."""
    if data_len % 8 or data_len > MAX_BPRINTF_VARARGS * 8 or (data_len and not data):
        return -errno.EINVAL
    n = data_len // 8
    args = [int.from_bytes(PROC[data + 8 * k:data + 8 * k + 8], "little") for k in range(n)]
    fmt_bytes = ctypes.string_at(fmt) if fmt else b""     # checked: NUL inside a region
    try:
        text = render(fmt_bytes, args, out_size)
    except FormatError:
        return -errno.EINVAL
    except OSError as e:
        return -e.errno
    if out_size:
        k = min(len(text), out_size - 1)
        PROC[out:out + k + 1] = text[:k] + b"\0"
    return len(text) + 1


def trace_printk(fmt: bytes, args: tuple[int, ...]) -> tuple[int, str | None]:
    """BPF_CALL_5(bpf_trace_printk) on the ``fmt_size`` bytes at ``fmt``: (the length
    bstr_printf reports, the line the trace buffer gets: at most 1023 bytes) or (-errno, None).
    The format ends at its first NUL, which must lie within ``fmt_size`` bytes."""
    nul = fmt.find(b"\0")
    if nul < 0:
        return -errno.EINVAL, None
    try:
        text = render(fmt[:nul], list(args[:MAX_TRACE_PRINTK_VARARGS]), MAX_BPRINTF_BUF)
    except FormatError:
        return -errno.EINVAL, None
    except OSError as e:
        return -e.errno, None
    return len(text), text[:MAX_BPRINTF_BUF - 1].decode("latin-1")
