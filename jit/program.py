"""``JitProgram``: a BPF program lowered, compiled by the worker, placed in a pack and callable.

:func:`compile_program` runs the whole pipeline: :mod:`pybpf.jit.lower` builds the IR in this
process (``llvmlite.ir`` only), :func:`pybpf.jit.codegen.compile_ir` turns it into ``.text`` in a
compile worker, the pack allocator (:mod:`pybpf.jit.execmem`) places it, and
:func:`pybpf.jit.native.make_caller` makes the entry callable without any ctypes callback.
:func:`compile_programs` puts several programs in one module and one allocation (one compile
round trip for all of them); each program then shares that placement and the code is freed when
the last of them is closed.

The JIT does no run-time bounds checks: memory safety is the verifier's job. Code that has not
been verified may crash the process (tests run such code in subprocesses).
"""
from __future__ import annotations

import os
import threading
import time

from pybpf.errors import JITError
from pybpf.jit import native
from pybpf.jit.codegen import compile_ir
from pybpf.jit.lower import ModuleLowerer, gc_paused
from pybpf.program import Program

_U64 = (1 << 64) - 1


class _PlacedCode:
    """One placed ``.text`` shared by the programs compiled with it; freed with the last user."""

    def __init__(self, allocation, allocator, keepalive: list, users: int) -> None:
        self.allocation, self.allocator = allocation, allocator
        self.keepalive = keepalive   # helper bridges whose addresses are in the code
        self._users = users
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users or self.allocation is None:
                return
            allocation, self.allocation = self.allocation, None
        self.allocator.free(allocation)
        self.keepalive = []


class JitProgram:
    """A compiled, placed program. Call :meth:`run` or :meth:`test_run`; :meth:`close` frees it.

    Attributes: ``name``, ``address`` (entry point), ``allocation`` (the pack allocator's
    record), ``symbol`` (entry function name), ``needs_gil`` (the code may call Python helpers,
    so it is entered with the GIL held and a helper's exception propagates), ``opt_level``,
    ``ir_before`` (the lowered IR), ``ir_after`` / ``asm`` (when requested), ``text_size``,
    ``tail_entry`` (the address tail calls enter, a prog_array's ``native_entry``),
    ``timings`` (seconds spent on its compile: ``lower``, ``worker`` (round trip), ``llvm``
    (the worker's own time) and its steps ``parse``/``verify``/``opt``/``emit``/``extract``,
    ``cpu`` (the worker's CPU time), ``place``; shared by the programs of one
    :func:`compile_programs` batch).
    """

    def __init__(self, code: _PlacedCode, symbol: str, offset: int, name: str, needs_gil: bool,
                 opt_level: int, ir_before: str, ir_after: str | None, asm: str | None,
                 text_size: int, tail_offset: int | None = None) -> None:
        self._code = code
        self.allocation = code.allocation
        self.symbol, self.name, self.needs_gil, self.opt_level = symbol, name, needs_gil, opt_level
        self.address = code.allocation.address + offset
        # What bpf_tail_call enters: (ctx, r2, tail-call count pointer); see jit/calls.py.
        self.tail_entry = code.allocation.address + (offset if tail_offset is None
                                                     else tail_offset)
        self.ir_before, self.ir_after, self.asm = ir_before, ir_after, asm
        self.text_size = text_size
        self.symbols: dict[str, int] = {}   # every function of the placed .text -> its offset
        self._call = native.make_caller(self.address, holds_gil=needs_gil)
        self.closed = False
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"0x{self.address:x}"
        return f"<JitProgram {self.name!r} {state}>"

    def _check(self) -> None:
        if self.closed:
            raise JITError(f"JIT program {self.name!r} is closed")

    def run(self, r1: int = 0, r2: int = 0) -> int:
        """Run once with r1, r2 (usually a memory address and its length); returns r0 (u64).

        A Python helper's exception propagates from here (the program stops at once).
        """
        self._check()
        return self._call(r1 & _U64, r2 & _U64)

    def test_run(self, r1: int = 0, r2: int = 0, repeat: int = 1) -> tuple[int, float]:
        """Run ``repeat`` times in a native loop; returns (last r0, mean ns per run)."""
        self._check()
        repeat = max(int(repeat), 1)
        r0, total = native.get_driver().run(self.address, r1 & _U64, r2 & _U64, repeat,
                                            python_helpers=self.needs_gil)
        return r0, total / repeat

    def close(self) -> None:
        """Free the code (once every program sharing its placement is closed); idempotent."""
        if self.closed:
            return
        self.closed = True
        self._call = None
        self._code.release()

    def __enter__(self) -> "JitProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, allocator gone: nothing useful to do
            pass


def compile_programs(progs: list[Program], helpers=None, opt_level: int = 2,
                     names: list[str] | None = None, want_ir: bool = False,
                     want_asm: bool = False, values64: list[dict] | None = None,
                     allocator=None, envs: list | None = None) -> list[JitProgram]:
    """Compile several programs in one module, one worker round trip and one allocation.

    ``values64`` is one slot -> constant table per program and ``envs`` one
    :class:`~pybpf.jit.env.JitEnv` per program (see :func:`compile_program`)."""
    if not progs:
        return []
    names = list(names) if names is not None else [p.name for p in progs]
    values64 = list(values64) if values64 is not None else [None] * len(progs)
    envs = list(envs) if envs is not None else [None] * len(progs)
    # Per-instruction comments make the IR readable but cost time to build, print and parse,
    # so they are only there when someone will read the IR.
    comments = want_ir or os.environ.get("PYBPF_DUMP_IR", "") not in ("", "0")
    t0 = time.perf_counter()
    with gc_paused():
        lowerer = ModuleLowerer(helpers, comments, name=names[0] if len(progs) == 1 else "batch")
        symbols = [lowerer.add_program(p, "bpf_main" if len(progs) == 1 else f"bpf_main.{i}", v,
                                       e)
                   for i, (p, v, e) in enumerate(zip(progs, values64, envs))]
        lowered = lowerer.finish()
    t1 = time.perf_counter()
    result = compile_ir(lowered.ir, opt_level=opt_level, want_ir=want_ir, want_asm=want_asm)
    missing = [s for s in symbols if s not in result.symbols]
    if missing:
        raise JITError(f"compiled object lacks entry functions {missing}")
    if allocator is None:
        from pybpf.jit.execmem import default_allocator

        allocator = default_allocator()
    label = names[0] if len(progs) == 1 else f"{names[0]}+{len(progs) - 1}"
    t2 = time.perf_counter()
    allocation = native.place_image(result.image, label, allocator)
    code = _PlacedCode(allocation, allocator, lowered.keepalive, len(progs))
    jits = [JitProgram(code, sym, result.symbols[sym], name, lowered.needs_gil, opt_level,
                       lowered.ir, result.ir_after, result.asm, len(result.text),
                       result.symbols.get(lowered.tail_entries.get(sym, sym)))
            for sym, name in zip(symbols, names)]
    timings = dict(result.times, lower=t1 - t0, place=time.perf_counter() - t2)
    steps = ("parse", "verify", "opt", "emit", "extract")
    if all(k in timings for k in steps):
        timings["llvm"] = sum(timings[k] for k in steps)
    for jp in jits:
        jp.timings = timings
        jp.symbols = dict(result.symbols)
    return jits


def compile_program(prog: Program, helpers=None, opt_level: int = 2, name: str | None = None,
                    want_ir: bool = False, want_asm: bool = False,
                    values64: dict[int, int] | None = None, allocator=None,
                    env=None) -> JitProgram:
    """Lower, compile (``opt_level`` 0..3, -O2 by default), place and wrap one program.

    ``helpers`` is the runtime's helper registry (id -> Helper) or ``{id: callable}``.
    ``values64`` holds what the loader resolved (the interpreter's table): slot -> constant of
    each ld_imm64 pseudo form, and the arena's upper half for each cast_user; ``env`` (a
    :class:`~pybpf.jit.env.JitEnv`) the rest the loader knows: arena, kfuncs, maps, packet.
    Raises :class:`JITError` for forms the JIT cannot lower yet, LLVM failures and placement
    failures.
    """
    return compile_programs([prog], helpers, opt_level, [name or prog.name], want_ir, want_asm,
                            [values64], allocator, [env])[0]
