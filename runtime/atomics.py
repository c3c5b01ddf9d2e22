"""The interpreter's BPF atomics as real atomic instructions on shared memory.

JIT code runs ``lock xadd``/``lock cmpxchg`` on map values without the GIL; an interpreter
atomic done as read-modify-write under a Python lock would lose updates racing with it. So
:func:`native_atomic` calls GCC's libatomic (``__atomic_fetch_add_8`` and friends: lock-prefixed
instructions for 4 and 8 bytes), the same operations the kernel's JIT emits. BPF atomics are
4 or 8 bytes and naturally aligned (the verifier refuses others); a misaligned one (from an
unverified program) and every one without libatomic fall back to a process-wide lock (atomic
among interpreter runs only), rather than risk a split-locked bus access.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

from pybpf.errors import VMError

__all__ = ["native_atomic", "NATIVE"]

SEQ_CST = 5          # __ATOMIC_SEQ_CST
_TYPES = {4: ctypes.c_uint32, 8: ctypes.c_uint64}
_FNS: dict[tuple[str, int], object] = {}
_LOCK = threading.Lock()


def _load() -> bool:
    name = ctypes.util.find_library("atomic") or "libatomic.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return False
    for n, ty in _TYPES.items():
        for op in ("add", "or", "and", "xor"):
            fn = lib[f"__atomic_fetch_{op}_{n}"]
            fn.argtypes, fn.restype = [ctypes.c_void_p, ty, ctypes.c_int], ty
            _FNS[op, n] = fn
        fn = lib[f"__atomic_exchange_{n}"]
        fn.argtypes, fn.restype = [ctypes.c_void_p, ty, ctypes.c_int], ty
        _FNS["xchg", n] = fn
        fn = lib[f"__atomic_compare_exchange_{n}"]
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ty, ctypes.c_bool, ctypes.c_int,
                       ctypes.c_int]
        fn.restype = ctypes.c_bool
        _FNS["cmpxchg", n] = fn
    return True


NATIVE = _load()


def native_atomic(op: str, address: int, size: int, value: int, expected: int,
                  pc: int | None = None) -> int:
    """Apply BPF atomic ``op`` (add, or, and, xor, xchg, cmpxchg) of ``size`` bytes at
    ``address`` (already checked writable); returns the old value. ``expected`` is r0 for
    cmpxchg."""
    if size not in _TYPES:
        raise VMError(f"atomic operations are 4 or 8 bytes, not {size}", pc)
    if not NATIVE or address % size:
        # misaligned: only unverified code gets here (the verifier requires alignment); a
        # split-locked instruction could fault, so such accesses are atomic among Python only
        return _locked(op, address, size, value, expected, pc)
    if op == "cmpxchg":
        old = _TYPES[size](expected)
        _FNS[op, size](address, ctypes.addressof(old), value, False, SEQ_CST, SEQ_CST)
        return old.value        # the value found, whether or not it was replaced
    fn = _FNS.get((op, size))
    if fn is None:
        raise VMError(f"unknown atomic operation {op}", pc)
    return fn(address, value, SEQ_CST)


def _locked(op: str, address: int, size: int, value: int, expected: int, pc) -> int:
    cell = _TYPES[size].from_address(address)
    with _LOCK:
        old = cell.value
        new = {"add": lambda: old + value, "or": lambda: old | value,
               "and": lambda: old & value, "xor": lambda: old ^ value,
               "xchg": lambda: value,
               "cmpxchg": lambda: value if old == expected else old}.get(op)
        if new is None:
            raise VMError(f"unknown atomic operation {op}", pc)
        cell.value = new() & ((1 << (8 * size)) - 1)
    return old
