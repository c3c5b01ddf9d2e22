"""The VM API: ``pybpf.VM`` owns helpers (later maps); ``vm.load`` gives a runnable LoadedProgram.

    >>> import pybpf
    >>> from pybpf.insn import make
    >>> prog = pybpf.Program(make("mov64_imm", 0, imm=42) + make("exit"))
    >>> lp = pybpf.VM().load(prog, engine="interp")
    >>> lp.run()
    42

``lp.run(mem=b"...")`` gives the program a private copy of ``mem`` (r1 = its address, r2 = its
length; r1 = r2 = 0 without mem) and returns r0 as an unsigned 64-bit int; the copy's final
contents are ``lp.last_mem``. The interpreter checks every memory access against the run's
regions (stack frames, the mem copy, packet data, VM-wide regions such as map values) and raises
MemoryAccessError before touching anything else. ``insn_limit`` (default 100 million executed
instructions; ``VM(insn_limit=)``, ``vm.load(insn_limit=)`` or ``lp.run(insn_limit=)``) stops
programs that would run longer with a VMError naming the limit.
"""
from __future__ import annotations

import random

from pybpf import isa
from pybpf.errors import VerifierError, VMError
from pybpf.insn import imm64
from pybpf.program import Program
from pybpf.verifier.cfg import check_structure, jump_target

from .helpers import HelperRegistry, Prototype, kernel_helpers
from .interp import Interpreter
from .memory import Buffer, Region, RegionTable

DEFAULT_INSN_LIMIT = 100_000_000
ENGINES = ("interp", "jit")
PROG_TYPES = ("mem",)
MEM_GUARD = 64  # canary bytes on each side of a run's private copy of mem


class VM:
    """Helper and kfunc registries, trace output, and (later) maps shared by loaded programs.

    ``helpers`` replaces the default kernel set (``runtime.helpers.kernel_helpers``), e.g. with
    ``ubpf_test_helpers()`` for bpf_conformance files. ``seed`` makes bpf_get_prandom_u32
    reproducible. ``regions`` lists memory every run of every program may access (map values,
    the arena band) in addition to its own stack and mem.
    """

    def __init__(self, helpers: HelperRegistry | None = None, *,
                 insn_limit: int = DEFAULT_INSN_LIMIT, seed: int | None = None) -> None:
        self._trace_lines: list[str] = []
        self.random = random.Random(seed)
        self.helpers = helpers if helpers is not None else kernel_helpers(self._trace_lines,
                                                                            self.random)
        self.kfuncs = HelperRegistry(kind="kfunc")
        self.insn_limit = _check_limit(insn_limit)
        self.regions: list[Region] = []

    def register_helper(self, id: int, fn, name: str | None = None,
                        prototype: Prototype | None = None, unwind: bool = False,
                        mem_args=None):
        """Add or replace helper ``id`` (``fn`` takes one int per prototype argument)."""
        return self.helpers.register(id, fn, name, prototype, unwind, mem_args)

    def run_regions(self) -> list[Region]:
        """Memory every run may access besides its own stack and mem (map values, the arena
        band...): ``self.regions`` today; the map layer extends this."""
        return list(self.regions)

    def trace_output(self, clear: bool = True) -> list[str]:
        """Lines written by bpf_trace_printk since the last call (the VM's trace pipe)."""
        lines = list(self._trace_lines)
        if clear:
            self._trace_lines.clear()
        return lines

    def verify(self, prog, prog_type: str = "mem") -> str:
        """Structural checks (decoding, jump targets, reachability, exit, call depth and stack).

        Until the abstract-interpretation verifier lands this is all ``verify=True`` checks;
        it raises VerifierError with the kernel's message or returns a short log.
        """
        prog = _as_program(prog)
        _check_prog_type(prog_type)
        cfg = check_structure(prog)
        _check_stack_depth(prog, cfg)
        return f"structural checks passed: {len(prog.instructions())} insns\n"

    def load(self, prog, prog_type: str = "mem", engine: str = "interp", verify: bool = True,
             insn_limit: int | None = None, name: str | None = None) -> "LoadedProgram":
        """Decode, check and prepare ``prog`` (a Program or raw bytecode) for ``engine``.

        ``verify=True`` runs :meth:`verify` (today: the structural checks). The interpreter
        checks memory at run time either way; the JIT does not, so unverified JIT code is
        trusted input.
        """
        prog = _as_program(prog, name)
        _check_prog_type(prog_type)
        if engine not in ENGINES:
            raise VMError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")
        if verify:
            self.verify(prog, prog_type)
        limit = _check_limit(insn_limit if insn_limit is not None else self.insn_limit)
        return LoadedProgram(self, prog, prog_type, engine, limit, name or prog.name)

    # -- load-time resolution (maps and the arena extend these) -------------------------------
    def values64(self, prog: Program) -> dict[int, int]:
        """The constant each ld_imm64 and addr_space_cast of ``prog`` stands for, by slot."""
        out = {}
        for pc, form, insn in prog.instructions():
            if form.kind == "lddw":
                if form.op != "imm64":
                    raise VMError(f"ld_imm64 {form.op} needs maps, which this VM does not "
                                  f"provide yet", pc)
                out[pc] = imm64(prog.insns, pc)
            elif form.kind == "cast":
                raise VMError("addr_space_cast insn can only be used in a program that has an "
                              "associated arena", pc)
        return out


class LoadedProgram:
    """A program ready to run on one engine; ``close()`` (or ``with``) releases it."""

    def __init__(self, vm: VM, prog: Program, prog_type: str, engine: str, insn_limit: int,
                 name: str) -> None:
        self.vm, self.program, self.prog_type, self.engine = vm, prog, prog_type, engine
        self.insn_limit, self.name = insn_limit, name
        self.last_mem: bytes | None = None      # the private mem copy after the last run
        self.last_buffer: Buffer | None = None  # that copy itself (guard zones included)
        self.last_insn_count: int | None = None  # instructions executed (interpreter)
        self.closed = False
        self._interp = self._jit = None
        values = vm.values64(prog)
        if engine == "interp":
            self._interp = Interpreter(prog, vm.helpers, vm.kfuncs, values)
        else:
            from pybpf.jit import compile_program   # imported on demand: pulls in llvmlite.ir
            self._jit = compile_program(prog, vm.helpers, name=name)

    def __repr__(self) -> str:
        return f"<LoadedProgram {self.name!r} {self.engine}{' closed' if self.closed else ''}>"

    @property
    def python_source(self) -> str | None:
        """The generated Python the interpreter runs (for the curious and for debugging)."""
        return self._interp.source if self._interp is not None else None

    def _prepare(self, mem, data, trace, insn_limit):
        if self.closed:
            raise VMError(f"program {self.name!r} is closed")
        buf = Buffer(len(mem), init=mem, guard=MEM_GUARD) if mem is not None and len(mem) else None
        region = Region(buf.address, buf.size, "mem", True, buf) if buf is not None else None
        r1, r2 = (buf.address, buf.size) if buf is not None else (0, 0)
        if self._jit is not None:
            if trace is not None:
                raise VMError("tracing needs engine='interp'")
            return buf, r1, r2, None
        regions = RegionTable(self.vm.run_regions())
        if region is not None:
            regions.add(region)
        packet = bytes(data) if data is not None else None
        limit = _check_limit(insn_limit if insn_limit is not None else self.insn_limit)
        return buf, r1, r2, self._interp.start(regions, region, limit, packet, trace)

    def _finish(self, buf, session) -> None:
        self.last_buffer = buf
        self.last_mem = buf.bytes() if buf is not None else None
        self.last_insn_count = session.executed if session is not None else None

    def run(self, mem=None, *, data=None, trace=None, insn_limit: int | None = None) -> int:
        """Run once; returns r0 (u64). ``trace`` is called with a TraceEvent per instruction.

        ``data`` is packet data for the legacy ld_abs/ld_ind instructions.
        """
        buf, r1, r2, session = self._prepare(mem, data, trace, insn_limit)
        try:
            if session is None:
                return self._jit.run(r1, r2)
            return session.call(r1, r2)
        finally:
            self._finish(buf, session)

    def test_run(self, mem=None, repeat: int = 1, *, data=None,
                 insn_limit: int | None = None) -> tuple[int, float]:
        """Run ``repeat`` times on one private copy of mem (as the kernel's BPF_PROG_TEST_RUN
        does: changes persist between repetitions); returns (r0 of the last run, ns per run)."""
        repeat = max(int(repeat), 1)
        buf, r1, r2, session = self._prepare(mem, data, None, insn_limit)
        try:
            if session is None:
                return self._jit.test_run(r1, r2, repeat)
            return session.repeat(r1, r2, repeat)
        finally:
            self._finish(buf, session)

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


# --- helpers ----------------------------------------------------------------------------------
def _as_program(prog, name: str | None = None) -> Program:
    if isinstance(prog, Program):
        return prog
    if isinstance(prog, (bytes, bytearray, memoryview)):
        return Program.from_bytes(bytes(prog), name=name or "prog")
    inner = getattr(prog, "program", None)
    if isinstance(inner, Program):
        return inner
    raise TypeError(f"cannot load {type(prog).__name__}: expected a Program or raw bytecode")


def _check_prog_type(prog_type: str) -> None:
    if prog_type not in PROG_TYPES:
        raise VMError(f"program type {prog_type!r} is not supported yet "
                      f"(supported: {', '.join(PROG_TYPES)})")


def _check_limit(limit) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise VMError(f"insn_limit must be a positive integer, not {limit!r}")
    return limit


def _stack_use(prog: Program, sp) -> int:
    """Bytes of stack a subprogram addresses directly through r10, rounded as the kernel's
    interpreter rounds it (a lower bound: pointers derived from r10 are the verifier's job)."""
    deepest = 0
    for pc, form, insn in prog.instructions():
        if not sp.start <= pc < sp.end or not form.size:
            continue
        base = insn.src if form.kind == "ldx" or form.op == "load_acq" else insn.dst
        if base == 10 and insn.off < 0:
            deepest = max(deepest, -insn.off)
    return -(-max(deepest, 1) // 32) * 32


def _check_stack_depth(prog: Program, cfg) -> None:
    """The kernel's check_max_stack_depth on direct r10 use: <= 8 frames, <= 512 bytes combined."""
    use = {sp.start: _stack_use(prog, sp) for sp in cfg.subprogs}
    callees: dict[int, list[int]] = {sp.start: [] for sp in cfg.subprogs}
    for pc, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "local":
            callees[cfg.subprog_of(pc).start].append(jump_target(form, insn, pc))

    memo: dict[tuple[int, int], tuple[int, int]] = {}

    def deepest(start: int, frames: int) -> tuple[int, int]:
        """(stack bytes, frames) of the deepest call chain from ``start`` at ``frames`` deep."""
        if frames > isa.MAX_CALL_FRAMES:
            raise VerifierError(f"the call stack of {frames} frames is too deep !", start)
        key = (start, frames)
        if key not in memo:
            below = [deepest(c, frames + 1) for c in callees[start]]
            depth, n = max(below, default=(0, frames))
            memo[key] = (use[start] + depth, n)
        return memo[key]

    total, frames = deepest(cfg.subprogs[0].start, 1)
    if total > isa.MAX_BPF_STACK:
        raise VerifierError(f"combined stack size of {frames} calls is {total}. Too large", 0)
