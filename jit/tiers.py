"""Tiered compilation's moving parts: one patchable entry point per program and a safe swap.

A program loaded with ``tier="auto"`` first runs quick-tier code (the cheapest correct
pipeline: no optimisation passes, -O0 code generation; measured in ``pybpf bench``) while a
background thread has the compile worker build -O2 code, which then replaces it without
stopping anyone. Every entry into the program goes through a stub in the pack (RX, written
once) that calls through a *slot*, an 8-byte word in ordinary writable, non-executable memory:

.. code-block:: none

    movabs $slot, %rcx
    retry: mov (%rcx), %rax        ; the current version record {entry, runs inside}
           lock incq 8(%rax)       ; announce the run
           cmp (%rcx), %rax        ; still current? (else the swap happened meanwhile)
           jne undo
           push %rax               ; keeps the record, and the stack 16-byte aligned
           call *(%rax)            ; the code; rdi, rsi, rdx are the untouched arguments
           pop %rcx
           lock decq 8(%rcx)       ; the run left (rax, r0, is kept)
           ret
    undo:  lock decq 8(%rax)
           jmp retry

:meth:`Entry.swap` exchanges the slot with a locked ``xchg`` (a few bytes of native code placed
once; a plain store could be reordered after the following load of the counter), then waits
until the old record's count is zero: a run that announced itself before the exchange is
counted and runs to its end in the old code; one that announces itself after it sees a new slot
and retries. Only then is the old code freed (and int3-filled by the pack allocator), the
grace period the kernel gets from ``synchronize_rcu_tasks``. The slot is never executable and
the stub never written again: no mapping is writable and executable at any time.

Entries from Python (``lp.run``, ``test_run``) go straight to the -O2 code once it is in; the
stub stays for what captured its address before (prog_array slots for tail calls).
"""
from __future__ import annotations

import ctypes
import os
import queue
import struct
import threading
import time

from pybpf.jit import native

_STUB = bytes.fromhex("48b9") + b"%SLOT%" + bytes.fromhex(
    "488b01" "f048ff4008" "483b01" "750a" "50" "ff10" "59" "f048ff4908" "c3"
    "f048ff4808" "ebe2")
STUB_SIZE = 40
_XCHG = bytes.fromhex("488737" "4889f0" "c3")     # xchg %rsi,(%rdi); mov %rsi,%rax; ret

_xchg = None
_xchg_lock = threading.Lock()


def _atomic_xchg():
    """``u64 xchg(u64 *slot, u64 value)``, a locked exchange, placed once per process."""
    global _xchg
    with _xchg_lock:
        if _xchg is None:
            allocation = native.place(_XCHG, native.XCHG_ALLOCATION)
            _xchg = native.make_caller(allocation.address, ctypes.c_uint64,
                                       (ctypes.c_uint64, ctypes.c_uint64))
        return _xchg


def stub_code(slot_address: int) -> bytes:
    code = _STUB.replace(b"%SLOT%", struct.pack("<Q", slot_address))
    assert len(code) == STUB_SIZE
    return code


class Entry:
    """One patchable entry point: a slot, its version records and the stub's address."""

    def __init__(self, target: int) -> None:
        self.slot = ctypes.c_uint64()
        self.records: list = []              # every version record stays alive with the entry
        self.current = self._record(target)
        self.slot.value = ctypes.addressof(self.current)
        self.address = 0                     # set once the stub is placed

    def _record(self, target: int):
        rec = (ctypes.c_uint64 * 2)(target, 0)
        self.records.append(rec)
        return rec

    def swap(self, target: int):
        """Point the entry at ``target``; returns the old record (see :func:`quiescent`)."""
        old, self.current = self.current, self._record(target)
        _atomic_xchg()(ctypes.addressof(self.slot), ctypes.addressof(self.current))
        return old


def inside(record) -> int:
    """How many runs are inside the code of ``record`` (0: nothing can be there any more)."""
    return record[1]


def wait_quiescent(records, timeout: float | None = None) -> bool:
    """Wait until no run is inside any of ``records``' code; False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.0002
    while any(inside(r) for r in records):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    return True


# -- the background compiles -------------------------------------------------------------------

_jobs: queue.Queue | None = None
_jobs_lock = threading.Lock()
_threads: list[threading.Thread] = []


def _serve(q: queue.Queue) -> None:
    while True:
        job = q.get()
        try:
            job()
        except BaseException:  # a job reports its own failure; the thread must live on
            pass
        finally:
            # not kept until the next job: what it holds (a load's inputs, maps) must go now
            job = None
            q.task_done()


def submit(job, threads: int = 2) -> None:
    """Run ``job()`` on a background daemon thread (at most ``threads`` of them)."""
    global _jobs
    with _jobs_lock:
        if _jobs is None:
            _jobs = queue.Queue()
        while len(_threads) < threads:
            t = threading.Thread(target=_serve, args=(_jobs,), daemon=True,
                                 name=f"pybpf-jit-tier-{len(_threads)}")
            t.start()
            _threads.append(t)
        _jobs.put(job)


def drain() -> None:
    """Wait for every background compile submitted so far (tests, benchmarks)."""
    q = _jobs
    if q is not None:
        q.join()


def _forget_in_child() -> None:
    global _jobs, _jobs_lock, _threads, _xchg, _xchg_lock
    _jobs, _jobs_lock, _threads = None, threading.Lock(), []
    _xchg, _xchg_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
