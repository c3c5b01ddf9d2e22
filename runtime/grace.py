"""Grace periods for memory that native readers may still hold (the kernel's RCU, in miniature).

JIT code looks hash elements up inline without the GIL, and interpreter runs keep element
addresses in registers across Python thread switches. A freed element must therefore not be
reused while a run that might hold it is still going: the kernel waits an RCU grace period
before freeing such memory; pybpf waits the same way.

Every program run is a read section (:func:`reading`, entered by ``LoadedProgram.run`` and
``test_run`` in both engines). Each thread inside a run records the epoch it started in. Freeing
memory calls :func:`retire`, which advances the epoch and returns it as a token; the memory may
be reused once every run that started before (epoch < token) has ended, i.e. once the token is
at or below :func:`horizon`. The calling thread's own run is not counted: a program reusing
memory it freed itself sees what the kernel's preallocated maps give it, and waiting for itself
would never end. A thread outside any run may :func:`wait` for a token; a thread inside a run
must not (two runs waiting for each other would deadlock), so map code refuses instead.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

_lock = threading.Lock()
_epoch = 0
# thread ident -> [epoch at entry, nesting depth]: a thread is in a run while its depth is
# above 0. A record stays once made (one small list per thread ident: threads reuse idents),
# so entering a run allocates nothing. Never rebound: LoadedProgram.run's fast path
# (pybpf/loaded.py) inlines enter()/leave() on it.
_readers: dict[int, list[int]] = {}
_get_ident = threading.get_ident
NEVER = 1 << 62                          # the horizon when no other thread is in a run


def enter() -> None:
    """Start a read section in this thread (nested sections keep the outermost epoch)."""
    # No lock: under the GIL the list and dict operations are atomic and only this thread
    # changes its own record. The epoch is written before the depth, so a record whose depth
    # is above 0 always holds its run's epoch. A retire() racing with the entry may leave the
    # record one epoch behind, which only makes horizon() more careful (the run has not looked
    # anything up yet).
    tid = _get_ident()
    r = _readers.get(tid)
    if r is None:
        r = _readers[tid] = [0, 0]
    if not r[1]:
        r[0] = _epoch
    r[1] += 1


def leave() -> None:
    _readers[_get_ident()][1] -= 1


@contextmanager
def reading():
    enter()
    try:
        yield
    finally:
        leave()


def in_read_section() -> bool:
    r = _readers.get(_get_ident())
    return r is not None and r[1] > 0


def retire() -> int:
    """Mark memory freed now: returns the token to compare with :func:`horizon`."""
    global _epoch
    with _lock:
        _epoch += 1
        return _epoch


def horizon() -> int:
    """Memory retired with a token <= this may be reused by the calling thread: no other
    thread is in a run that started before it was retired."""
    me = _get_ident()
    readers = list(_readers.items())        # one atomic copy under the GIL
    # a record read while its thread leaves and enters again shows the newer run's epoch: the
    # older run has ended, so that is still right
    return min((r[0] for t, r in readers if t != me and r[1] > 0), default=NEVER)


def settled(token: int) -> bool:
    """Whether memory retired with ``token`` may be reused by the calling thread now: no run
    that started before it was retired is still going, the calling thread's own included (the
    kernel's bpf_mem_free_rcu: the program that freed an object is inside the RCU read section
    that keeps its memory)."""
    if token > horizon():
        return False
    r = _readers.get(_get_ident())
    return r is None or r[1] <= 0 or r[0] >= token


def wait(token: int, timeout: float = 60.0) -> bool:
    """Wait (outside any run) until ``token`` may be reused; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.0
    while horizon() < token:
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2 or 1e-5, 1e-3)
    return True
