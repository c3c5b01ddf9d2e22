"""The open-coded numeric iterator kfuncs (kernel/bpf/bpf_iter.c): ``bpf_iter_num_new``,
``bpf_iter_num_next``, ``bpf_iter_num_destroy``, what libbpf's ``bpf_for`` and ``bpf_repeat``
compile to.

The iterator is the program's own 8 bytes (``struct bpf_iter_num``, on its stack), laid out as
the kernel's ``struct bpf_iter_num_kern { int cur; int end; }``: the functions read and write it
there, so a program that copies or inspects it sees what it would see in the kernel. Every call
names the iterator as a memory argument (:func:`iter_mem_args`): both engines check those 8
bytes against the run's regions before the function touches them (the verifier proves it is a
stack slot; a run without verification still cannot reach outside its memory).

Semantics are the kernel's, including its int arithmetic: ``start > end`` is -EINVAL and
``end - start > BPF_MAX_LOOPS`` is -E2BIG (both leave an empty iterator), ``next`` returns the
address of ``cur`` after incrementing it, or NULL (and empties the iterator) once ``cur + 1``
reaches ``end``. The ``int`` results come back as the x86-64 kernel leaves them in r0: the 32-bit
value zero-extended.
"""
from __future__ import annotations

import errno
import struct

from .memory import PROC

BPF_MAX_LOOPS = 8 * 1024 * 1024         # include/linux/bpf.h
ITER_NUM_SIZE = 8
_PAIR = struct.Struct("<ii")
M32 = 0xFFFFFFFF


def _s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v >> 31 else v


def _int_ret(v: int) -> int:
    return v & M32


def iter_mem_args(args: tuple) -> list[tuple[int, int, str]]:
    """The iterator each of these kfuncs reads and writes: ``(it, 8, "write")``."""
    return [(args[0], ITER_NUM_SIZE, "write")]


def bpf_iter_num_new(it: int, start: int, end: int) -> int:
    start, end = _s32(start), _s32(end)
    if start > end:
        _PAIR.pack_into(PROC, it, 0, 0)
        return _int_ret(-errno.EINVAL)
    if end - start > BPF_MAX_LOOPS:
        _PAIR.pack_into(PROC, it, 0, 0)
        return _int_ret(-errno.E2BIG)
    _PAIR.pack_into(PROC, it, _s32(start - 1), end)   # next() sets cur to exactly start
    return 0


def bpf_iter_num_next(it: int) -> int:
    cur, end = _PAIR.unpack_from(PROC, it)
    nxt = _s32(cur + 1)                 # int arithmetic: INT_MAX + 1 wraps, as in the kernel
    if nxt >= end:
        _PAIR.pack_into(PROC, it, 0, 0)
        return 0
    _PAIR.pack_into(PROC, it, nxt, end)
    return it                           # &s->cur: cur is the struct's first member


def bpf_iter_num_destroy(it: int) -> int:
    _PAIR.pack_into(PROC, it, 0, 0)
    return 0


KFUNC_FNS = {f.__name__: f for f in (bpf_iter_num_new, bpf_iter_num_next, bpf_iter_num_destroy)}
"""name -> implementation; each takes the iterator's address first (checked by the engines
through :func:`iter_mem_args`)."""
