"""Native code for kernel helpers that programs call on hot paths, emitted inline.

A helper whose registry entry carries a ``native`` description (``runtime/helpers.py``) is not
called through the Python bridge: its result is computed by a few instructions in the program
itself, with no GIL, no Python objects and no exception to check. Each description names what
the interpreter's Python function does too, so both engines give the same results:

* ``("const", value)``: a constant (``bpf_get_smp_processor_id``: pybpf runs on CPU 0).
* ``("clock_gettime", clock_id)``: libc's ``clock_gettime`` (the vDSO, no system call) called
  by absolute address, ``tv_sec * 10**9 + tv_nsec`` (the ``bpf_ktime_get_*ns`` family).
* ``("prandom_u32", state)``: the kernel's taus113 step on the VM's 16-byte state at
  ``state.address``, with the step table ``state.steps`` (``runtime/prandom.py``, which the
  interpreter steps in Python; the JIT does not import it).
"""
from __future__ import annotations

import ctypes

from llvmlite import ir

from pybpf.errors import JITError
from pybpf.jit import cgutils as cg
from pybpf.jit.cgutils import I32, I64, PTR

_TIMESPEC = ir.ArrayType(I64, 2)      # struct timespec {tv_sec; tv_nsec} on x86-64
_clock_gettime: int | None = None


def clock_gettime_address() -> int:
    """Address of libc's ``clock_gettime`` (looked up once; a plain C function pointer)."""
    global _clock_gettime
    if _clock_gettime is None:
        _clock_gettime = ctypes.cast(ctypes.CDLL(None).clock_gettime, ctypes.c_void_p).value
    return _clock_gettime


def keepalive(spec: tuple) -> list:
    """Objects whose memory the emitted code uses (they must outlive it)."""
    return [spec[1]] if spec[0] == "prandom_u32" else []


def emit(b, spec: tuple) -> ir.Value:
    """The helper's r0 (i64) computed inline by builder ``b``."""
    kind = spec[0]
    if kind == "const":
        return cg.const(I64, spec[1])
    if kind == "clock_gettime":
        return _clock(b, int(spec[1]))
    if kind == "prandom_u32":
        return _prandom(b, spec[1])
    raise JITError(f"unknown native helper implementation {kind!r}")


def _clock(b, clock_id: int) -> ir.Value:
    ts = cg.alloca_once(b, _TIMESPEC, name="timespec", align=8)
    fnty = ir.FunctionType(I32, [I32, PTR])
    fn = b.inttoptr(b.ext(clock_gettime_address()), ir.PointerType(fnty))
    # The clock ids pybpf uses always exist on Linux, so the result is not checked (the
    # kernel's helpers cannot fail either).
    b.call(fn, [cg.const(I32, clock_id), ts])
    sec = b.load(b.gep(ts, [I32(0), I32(0)]), typ=I64)
    nsec = b.load(b.gep(ts, [I32(0), I32(1)]), typ=I64)
    return b.add(b.mul(sec, cg.const(I64, 1_000_000_000)), nsec)


def _prandom(b, state) -> ir.Value:
    address = state.address
    out = None
    for i, (a, sh, mask, d) in enumerate(state.steps):
        ptr = b.inttoptr(b.ext(address + 4 * i), PTR)
        s = b.load(ptr, typ=I32)
        # s = ((s & mask) << d) ^ (((s << a) ^ s) >> sh), all in u32
        left = b.shl(b.and_(s, cg.const(I32, mask)), cg.const(I32, d))
        right = b.lshr(b.xor(b.shl(s, cg.const(I32, a)), s), cg.const(I32, sh))
        s = b.xor(left, right)
        b.store(s, ptr)
        out = s if out is None else b.xor(out, s)
    return b.zext(out, I64)
