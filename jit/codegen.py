"""Turn LLVM IR text into placeable x86-64 machine code, through a pool of compile workers.

The process that runs BPF code builds IR with ``llvmlite.ir`` only and never loads LLVM itself
(see :mod:`pybpf.jit.worker` for why). :func:`compile_ir` hands the IR text to a worker process,
which parses, verifies and optimises it, emits an object and links it
(:mod:`pybpf.jit.link`): the laid-out code and read-only data, the function offsets and what
placement must fix up. Workers are started on first use (or by
:func:`start_workers`), reused, and replaced when they die; a worker crash or timeout becomes a
:class:`~pybpf.errors.JITError`. The pool holds at most ``PYBPF_JIT_WORKERS`` workers
(default ``min(2, cpu count)``) so that independent programs compile in parallel.

Environment switches:

* ``PYBPF_JIT_INPROCESS=1`` compiles in this process (debugging; loads LLVM here, W^X is lost);
* ``PYBPF_DUMP_IR=1`` prints the IR before and after optimisation to stderr,
  ``PYBPF_DUMP_OPT=1`` only after; ``PYBPF_DUMP_ASM=1`` prints the x86-64 listing;
* ``PYBPF_JIT_CPU=host|generic|<llvm cpu name>`` picks the target CPU (default ``host``);
* ``PYBPF_JIT_FAST_ISEL=1`` makes the workers select instructions with FastISel: about 30% less
  code generation time (-O2, 200 instructions: 2 ms of 17), but code up to a third slower.

>>> r = compile_ir("define i64 @f(i64 %a, i64 %b) {\\n  %s = add i64 %a, %b\\n  ret i64 %s\\n}")
>>> r.symbols, len(r.text) > 0
({'f': 0}, True)
"""
from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from pybpf.errors import JITError
from pybpf.jit.worker import _write_all, encode_frame

_LEN_SIZE = 8
# LLVM's global context keeps every type and constant it has seen (each program bakes in
# different addresses), so a worker is replaced after this many requests to bound its memory.
_MAX_REQUESTS = 1000


@dataclass
class CompileResult:
    """What a compile produced. ``symbols`` maps each function defined in ``.text`` to its offset;
    ``image`` is the linked image to place (:func:`pybpf.jit.native.place_image`), ``text`` its
    bytes (placeable as they are when ``image.fixups`` is empty).

    ``times`` (seconds): ``worker``, the request's round trip as seen from here, the
    worker's own steps ``parse``, ``verify``, ``opt``, ``emit``, ``extract`` (wall clock) and
    ``cpu``, the worker's CPU time for the compile."""

    text: bytes
    symbols: dict[str, int]
    image: object = None          # pybpf.jit.link.LinkImage: text is image.data
    ir_before: str | None = None
    ir_after: str | None = None
    asm: str | None = None
    times: dict[str, float] = field(default_factory=dict)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class _WorkerDied(Exception):
    """The worker's pipe closed under us; ``JITError`` once the pool has decided on a retry."""


class _Worker:
    """One worker process and its two pipes. Used by one thread at a time (the pool ensures it)."""

    def __init__(self) -> None:
        env = os.environ.copy()
        # The worker must import the same pybpf as we did, wherever that came from.
        path = [p for p in sys.path if p and os.path.isdir(p)]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        # Its stderr (LLVM's fatal error text, Python tracebacks) is kept to explain a crash.
        self.stderr = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pybpf.jit.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr, env=env, bufsize=0)
        self.rfd = self.proc.stdout.fileno()
        self.ready = False
        self.startup_s: float | None = None
        self.requests = 0

    # -- pipes with deadlines --

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        poller = select.poll()
        poller.register(self.rfd, select.POLLIN)
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(self.rfd, n - len(buf))
            if not chunk:
                raise _WorkerDied
            buf += chunk
        return bytes(buf)

    def _recv(self, deadline: float) -> dict:
        size = int.from_bytes(self._read_exact(_LEN_SIZE, deadline), "little")
        return pickle.loads(self._read_exact(size, deadline))

    def wait_ready(self, deadline: float) -> None:
        if self.ready:
            return
        msg = self._recv(deadline)
        if not msg.get("ok"):
            raise JITError(f"compile worker did not start: {msg.get('error')}")
        self.ready = True
        self.startup_s = time.perf_counter() - self.started

    def request(self, message: dict, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        try:
            self.wait_ready(deadline)
            _write_all(self.proc.stdin.fileno(), encode_frame(message))
            self.requests += 1
            return self._recv(deadline)
        except (BrokenPipeError, ConnectionResetError):
            raise _WorkerDied from None

    # -- life and death --

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            self.stderr.seek(0)
            data = self.stderr.read()
        except (OSError, ValueError):
            return ""
        return data[-limit:].decode("utf-8", "replace").strip()

    def death_note(self) -> str:
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        note = f"compile worker {self.proc.pid} died ({_signal_name(self.proc.returncode)})"
        tail = self.stderr_tail()
        return f"{note}; its stderr ended with:\n{tail}" if tail else note

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.proc.kill()
            self.proc.stdin.close()  # the worker exits at end of input
        except OSError:
            pass
        try:
            self.proc.wait(timeout=0 if kill else 2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self.proc.stdout.close()
            self.stderr.close()


class _Pool:
    """Up to ``size`` workers, each lent to one compile at a time."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.count = 0  # idle + lent out

    def _acquire(self) -> tuple[_Worker, bool]:
        """Return an idle worker, or a fresh one (second item True) if the pool may grow."""
        with self.cond:
            while True:
                while self.idle:
                    worker = self.idle.pop()
                    if worker.alive():
                        return worker, False
                    self.count -= 1  # died while idle; its replacement starts below
                    worker.close()
                if self.count < self.size:
                    self.count += 1
                    break
                self.cond.wait()
        try:
            return _Worker(), True
        except BaseException:
            self._release(None)
            raise

    def _release(self, worker: _Worker | None) -> None:
        retire = worker is not None and worker.requests >= _MAX_REQUESTS
        with self.cond:
            if worker is None or retire:
                self.count -= 1
            else:
                self.idle.append(worker)
            self.cond.notify()
        if retire:
            worker.close()

    def request(self, message: dict, timeout: float) -> dict:
        # A worker that had been idle may have been killed meanwhile (OOM killer, a test); the
        # request then gets one more chance on a new worker. A worker that dies on its first
        # request died of that request, and retrying would only crash another one.
        for attempt in range(2):
            worker, fresh = self._acquire()
            try:
                reply = worker.request(message, timeout)
            except _WorkerDied:
                note = worker.death_note()
                worker.close()
                self._release(None)
                if fresh or attempt:
                    raise JITError(note) from None
                continue
            except TimeoutError:
                worker.close(kill=True)
                self._release(None)
                raise JITError(f"compile timed out after {timeout:g} s "
                               f"(worker {worker.proc.pid} killed)") from None
            except BaseException:
                # Interrupted mid-frame (KeyboardInterrupt...): the pipe is out of sync.
                worker.close(kill=True)
                self._release(None)
                raise
            self._release(worker)
            return reply
        raise AssertionError("unreachable")

    def start(self, n: int, wait: bool, timeout: float) -> list[float]:
        with self.cond:
            new = max(0, min(n, self.size) - self.count)
            self.count += new
        started: list[_Worker] = []
        try:
            for _ in range(new):
                started.append(_Worker())
        finally:
            with self.cond:
                self.count -= new - len(started)
        deadline = time.monotonic() + timeout
        failure = None
        for w in started:
            try:
                if wait and failure is None:
                    w.wait_ready(deadline)
            except (_WorkerDied, TimeoutError, JITError) as exc:
                failure = exc if isinstance(exc, JITError) else JITError(
                    w.death_note() if isinstance(exc, _WorkerDied)
                    else f"compile worker not ready after {timeout:g} s")
                w.close(kill=True)
                self._release(None)
                continue
            self._release(w)
        if failure is not None:
            raise failure
        return [w.startup_s for w in started if w.startup_s is not None]

    def shutdown(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
            self.count -= len(idle)
        for worker in idle:
            worker.close()


_pool: _Pool | None = None
_pool_lock = threading.Lock()
_inprocess = None
_inprocess_lock = threading.Lock()


def _default_size() -> int:
    try:
        return max(1, int(os.environ["PYBPF_JIT_WORKERS"]))
    except (KeyError, ValueError):
        return min(2, os.cpu_count() or 1)


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(_default_size())
        return _pool


def _forget_pool_in_child() -> None:
    # A forked child must not talk to its parent's workers over shared pipes; it gets its own.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def start_workers(n: int | None = None, wait: bool = False, timeout: float = 60) -> list[float]:
    """Start up to ``n`` workers now (all the pool allows by default), so that the first compile
    does not pay for starting LLVM. With ``wait``, block until they are ready and return their
    start-up times in seconds."""
    if _env_flag("PYBPF_JIT_INPROCESS"):
        return []
    pool = _get_pool()
    return pool.start(pool.size if n is None else n, wait, timeout)


def shutdown_workers() -> None:
    """Stop every idle worker; workers still compiling finish, and later compiles start new ones."""
    with _pool_lock:
        pool = _pool
    if pool is not None:
        pool.shutdown()


atexit.register(shutdown_workers)


def worker_info() -> list[dict]:
    """The idle workers: ``pid``, ``startup_s`` (spawn to ready) and ``requests`` served."""
    with _pool_lock:
        pool = _pool
    if pool is None:
        return []
    with pool.cond:
        return [{"pid": w.proc.pid, "startup_s": w.startup_s, "requests": w.requests}
                for w in pool.idle]


def _compile_inprocess(message: dict) -> dict:
    global _inprocess
    from pybpf.jit.worker import Compiler

    with _inprocess_lock:  # LLVM's global context is not thread-safe
        if _inprocess is None:
            _inprocess = Compiler()
        try:
            out = _inprocess.compile(message["ir"], message["opt"], message["want_ir"],
                                     message["want_asm"])
        except JITError as exc:
            return {"ok": False, "error": str(exc)}
        finally:
            _inprocess.collect()
    out["ok"] = True
    return out


def _dump(title: str, text: str) -> None:
    bar = "-" * 20
    print(f"{bar} {title} {bar}\n{text.rstrip()}\n", file=sys.stderr, flush=True)


def compile_ir(ir_text: str, opt_level: int = 2, want_ir: bool = False, want_asm: bool = False,
               timeout: float = 60) -> CompileResult:
    """Compile one LLVM IR module to x86-64 ``.text``.

    Raises :class:`JITError` with LLVM's message for IR that does not parse or verify, with the
    linker's message for an object it cannot link, and for a worker that crashed or
    took longer than ``timeout`` seconds.
    """
    dump_ir, dump_opt = _env_flag("PYBPF_DUMP_IR"), _env_flag("PYBPF_DUMP_OPT")
    dump_asm = _env_flag("PYBPF_DUMP_ASM")
    message = {"op": "compile", "ir": ir_text, "opt": int(opt_level),
               "want_ir": want_ir or dump_ir or dump_opt, "want_asm": want_asm or dump_asm}
    if dump_ir:
        _dump("LLVM IR (before optimisation)", ir_text)
    t0 = time.perf_counter()
    if _env_flag("PYBPF_JIT_INPROCESS"):
        reply = _compile_inprocess(message)
    else:
        reply = _get_pool().request(message, timeout)
    elapsed = time.perf_counter() - t0
    if not reply.get("ok"):
        raise JITError(reply.get("error", "compile failed"))
    if dump_ir or dump_opt:
        _dump(f"LLVM IR (after O{opt_level})", reply["ir_after"])
    if dump_asm:
        _dump("x86-64 assembly", reply["asm"])
    image = reply["image"]
    return CompileResult(
        text=image.data, symbols=image.symbols, image=image,
        ir_before=ir_text if want_ir else None,
        ir_after=reply["ir_after"] if want_ir else None,
        asm=reply["asm"] if want_asm else None,
        times=dict(reply.get("times") or {}, worker=elapsed))
