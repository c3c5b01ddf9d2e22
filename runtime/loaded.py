"""A loaded program: one Program bound to its VM's maps, ready to run on one engine.

``lp.run(mem=b"...")`` (prog_type "mem") gives the program a private copy of ``mem`` (r1 = its
address, r2 = its length; r1 = r2 = 0 without mem) and returns r0 as an unsigned 64-bit int;
the copy's final contents are ``lp.last_mem``. ``lp.run(ctx=..., data=packet)`` builds the
program type's kernel context (:mod:`pybpf.runtime.contexts`): ``lp.last_data`` is then the
packet after the run and ``lp.last_ctx`` the context. The interpreter checks every memory access
against the run's regions (stack frames, the mem/ctx copy, the packet, the VM's map values and
arena bands) and raises MemoryAccessError before touching anything else.
"""
from __future__ import annotations

from pybpf.errors import VMError

from .contexts import build_context
from .interp import Interpreter
from .memory import Buffer, RegionTable

DEFAULT_INSN_LIMIT = 100_000_000
ENGINES = ("interp", "jit")


def check_limit(limit) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise VMError(f"insn_limit must be a positive integer, not {limit!r}")
    return limit


class LoadedProgram:
    """A program ready to run on one engine; ``close()`` (or ``with``) releases it.

    ``maps``: the maps it uses by name; ``arena``: its arena map or None; ``fd``: its id in the
    VM (what a prog_array stores); ``prog_type``; ``engine``.
    """

    def __init__(self, vm, prog, prog_type: str, engine: str, insn_limit: int, name: str,
                 maps: list, arena, values64: dict[int, int], fd: int | None = None) -> None:
        """``maps``: (name, map) pairs of the maps the program uses."""
        self.vm, self.program, self.prog_type, self.engine = vm, prog, prog_type, engine
        self.insn_limit, self.name, self.fd = insn_limit, name, fd
        self.arena, self.values64 = arena, values64
        self.maps: dict[str, object] = {}
        for key, m in maps:
            if m not in self.maps.values():
                self.maps.setdefault(key, m)
        self.last_mem: bytes | None = None      # the private mem copy after the last run
        self.last_buffer: Buffer | None = None  # that copy itself (guard zones included)
        self.last_data: bytes | None = None     # the packet after the last run
        self.last_ctx = None                    # the context after the last run
        self.last_insn_count: int | None = None  # instructions executed (interpreter)
        self.closed = False
        self._interp = self._jit = None
        if engine == "interp":
            self._interp = Interpreter(prog, vm.helpers, vm.kfuncs, values64, arena=arena,
                                       resolve_map=vm.resolve_map)
        else:
            from pybpf.jit import compile_program   # imported on demand: pulls in llvmlite.ir
            self._jit = compile_program(prog, vm.helpers, name=name, values64=values64)

    def __repr__(self) -> str:
        return (f"<LoadedProgram {self.name!r} {self.prog_type} {self.engine}"
                f"{' closed' if self.closed else ''}>")

    @property
    def python_source(self) -> str | None:
        """The generated Python the interpreter runs (for the curious and for debugging)."""
        return self._interp.source if self._interp is not None else None

    def _prepare(self, mem, ctx, data, trace, insn_limit):
        if self.closed:
            raise VMError(f"program {self.name!r} is closed")
        rc = build_context(self.prog_type, mem, ctx, data)
        if self._jit is not None:
            if trace is not None:
                raise VMError("tracing needs engine='interp'")
            return rc, None
        regions = RegionTable(self.vm.run_regions())
        for region in rc.regions:
            regions.add(region)
        limit = check_limit(insn_limit if insn_limit is not None else self.insn_limit)
        return rc, self._interp.start(regions, rc.fast, limit, rc.packet, trace)

    def _finish(self, rc, session, r0) -> None:
        rc.finish(r0)
        self.last_buffer = rc.buffer if self.prog_type == "mem" else None
        self.last_mem = rc.last_mem
        self.last_data, self.last_ctx = rc.last_data, rc.last_ctx
        self.last_insn_count = session.executed if session is not None else None

    def run(self, mem=None, *, ctx=None, data=None, trace=None,
            insn_limit: int | None = None) -> int:
        """Run once; returns r0 (u64). ``trace`` is called with a TraceEvent per instruction.

        ``mem`` is for prog_type "mem"; ``ctx``/``data`` build the other types' contexts
        (for "mem", ``data`` is the packet the legacy ld_abs/ld_ind instructions read).
        """
        rc, session = self._prepare(mem, ctx, data, trace, insn_limit)
        r0 = None
        try:
            if session is None:
                r0 = self._jit.run(rc.r1, rc.r2)
            else:
                r0 = session.call(rc.r1, rc.r2)
            return r0
        finally:
            self._finish(rc, session, r0)

    def test_run(self, mem=None, repeat: int = 1, *, ctx=None, data=None,
                 insn_limit: int | None = None) -> tuple[int, float]:
        """Run ``repeat`` times on one private context (as the kernel's BPF_PROG_TEST_RUN
        does: changes persist between repetitions); returns (r0 of the last run, ns per run)."""
        repeat = max(int(repeat), 1)
        rc, session = self._prepare(mem, ctx, data, None, insn_limit)
        r0 = None
        try:
            if session is None:
                r0, ns = self._jit.test_run(rc.r1, rc.r2, repeat)
            else:
                r0, ns = session.repeat(rc.r1, rc.r2, repeat)
            return r0, ns
        finally:
            self._finish(rc, session, r0)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._jit is not None:
            self._jit.close()
        self._interp = self._jit = None

    def __enter__(self) -> "LoadedProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
