"""A loaded program: one Program bound to its VM's maps, ready to run on one engine.

This module and :mod:`pybpf.vm` are the facade above both engines: they import the runtime
(interpreter, maps, helpers, contexts) and, on demand, the JIT; the runtime and the JIT never
import each other (tests/test_layers.py checks it).

``lp.run(mem=b"...")`` (prog_type "mem") gives the program a private copy of ``mem`` (r1 = its
address, r2 = its length; r1 = r2 = 0 without mem) and returns r0 as an unsigned 64-bit int;
the copy's final contents are ``lp.last_mem``. ``lp.run(ctx=..., data=packet)`` builds the
program type's kernel context (:mod:`pybpf.runtime.contexts`): ``lp.last_data`` is then the
packet after the run and ``lp.last_ctx`` the context; ``lp.last_redirect`` is where a redirect
helper sent the packet when the verdict acts on it (a
:class:`~pybpf.runtime.helpers_xdp.Redirect`, else None). The interpreter checks every memory access
against the run's regions (stack frames, the mem/ctx copy, the packet, the VM's map values and
arena bands) and raises MemoryAccessError before touching anything else.
"""
from __future__ import annotations

import ctypes
import threading

from pybpf.errors import VMError

from .runtime.contexts import LOW_POOL_END, LOW_POOL_START, MEM_GUARD, build_context
from .runtime.xdp_buff import XDP_HEAD_FLOOR
from .runtime import grace as _grace
from .runtime.grace import enter as grace_enter, in_read_section, leave as grace_leave, retire, wait
from .runtime.helpers import ACTIVE_REGIONS, ACTIVE_RUN
from .runtime.interp import Interpreter
from .runtime.kfuncs_misc import BpfThrow
from .runtime.maps.prog_array import ProgArrayMap
from .runtime.memory import Buffer, RegionTable

_libc = ctypes.CDLL(None)
_libc.pthread_self.restype = ctypes.c_ulong


def thread_stack() -> tuple[int, int]:
    """(lowest address, size) of the calling thread's stack (pthread_getattr_np)."""
    attr = ctypes.create_string_buffer(128)     # pthread_attr_t: 56 bytes on x86-64
    if _libc.pthread_getattr_np(ctypes.c_ulong(_libc.pthread_self()), attr):
        raise VMError("cannot find the thread's stack (pthread_getattr_np failed)")
    addr, size = ctypes.c_void_p(), ctypes.c_size_t()
    _libc.pthread_attr_getstack(attr, ctypes.byref(addr), ctypes.byref(size))
    _libc.pthread_attr_destroy(attr)
    return addr.value or 0, size.value

_STACKS = threading.local()


def _thread_stack() -> tuple[int, int]:
    """:func:`thread_stack`, once per thread (pthread_getattr_np reads /proc/self/maps for
    the main thread)."""
    stack = getattr(_STACKS, "stack", None)
    if stack is None:
        stack = _STACKS.stack = thread_stack()
    return stack


DEFAULT_INSN_LIMIT = 100_000_000
_READERS = _grace._readers          # run()'s inlined read section (grace.enter/leave)
_get_ident = threading.get_ident
ENGINES = ("interp", "jit")


def check_limit(limit) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise VMError(f"insn_limit must be a positive integer, not {limit!r}")
    return limit


def jit_env(vm, arena=None, prog_type: str = "mem", packet_desc: int = 0, verified: bool = True,
            budget_cell: int = 0):
    """The :class:`pybpf.jit.env.JitEnv` a VM gives a program: its kfuncs and map resolver, the
    run memory pool below 4 GiB (contexts and packets)."""
    from pybpf.jit.env import JitEnv

    return JitEnv(arena=arena, kfuncs=vm.kfuncs, resolve_map=vm.resolve_map, prog_type=prog_type,
                  packet_desc=packet_desc, low_pool=(LOW_POOL_START, LOW_POOL_END),
                  verified=verified, budget_cell=budget_cell, xdp_head_floor=XDP_HEAD_FLOOR,
                  o2_max_slots=getattr(vm, "max_o2_slots", None))


_FROM_BUFFER = object()     # LoadedProgram._last_mem: not copied out of last_buffer yet


class LoadedProgram:
    """A program ready to run on one engine; ``close()`` (or ``with``) releases it.

    ``maps``: the maps it uses by name; ``arena``: its arena map or None; ``fd``: its id in the
    VM (what a prog_array stores); ``prog_type``; ``engine``.
    """

    def __init__(self, vm, prog, prog_type: str, engine: str, insn_limit: int, name: str,
                 maps: list, arena, values64: dict[int, int], fd: int | None = None,
                 verified: bool = True, verify_result=None,
                 tier: str = "auto") -> None:
        """``maps``: (name, map) pairs of the maps the program uses; ``verified``: the load
        ran the whole verifier (JIT code for an unverified load calls the checked helpers and
        counts a run budget); ``verify_result``: its VerifyResult (facts, max_ctx_offset)."""
        self.vm, self.program, self.prog_type, self.engine = vm, prog, prog_type, engine
        # which ifindexes exist (an xdp ctx_in's ingress_ifindex): the VM's FibTable devices
        fib = getattr(vm, "fib", None)
        self._has_device = fib.has_device if fib is not None else None
        self.verify_result = verify_result
        # The kernel's max_ctx_offset: a run must give at least this much mem/ctx (as
        # BPF_PROG_TEST_RUN refuses a shorter ctx_in for syscall programs).
        self.min_mem_size = verify_result.max_ctx_offset if verify_result is not None else 0
        # A tracepoint program may read before its record (the kernel allows negative offsets):
        # that many zero bytes go before the run's copy of the ctx
        self.ctx_headroom = -getattr(verify_result, "min_ctx_offset", 0)
        self.insn_limit, self.name, self.fd = insn_limit, name, fd
        self.verified, self.tier = verified, tier
        self.arena, self.values64 = arena, values64
        self.maps: dict[str, object] = {}
        for key, m in maps:
            if m not in self.maps.values():
                self.maps.setdefault(key, m)
        self._last_mem: object = None           # last_mem, or _FROM_BUFFER: copied when read
        self.last_buffer: Buffer | None = None  # that copy itself (guard zones included)
        self.last_data: bytes | None = None     # the packet after the last run
        self.last_ctx = None                    # the context after the last run
        self.last_insn_count: int | None = None  # instructions executed (interpreter)
        self.last_redirect = None               # where the last run redirected the packet
        self.last_clones: list = []             # bpf_clone_redirect's copies (helpers_skb.Clone)
        self.closed = False
        self._interp = self._jit = None
        self._base_key: list | None = None      # vm.run_regions() when _base_table was built
        self._base_table: RegionTable | None = None
        self._plain_jit = False                 # JIT run needing no packet or region setup
        self._plain_mem = False                 # ... and a "mem" program (run() inlines it)
        self._budget = None                     # the run budget of unverified JIT code
        # a program calling a helper that moves the packet (bpf_xdp_adjust_head...) gets no
        # inline fast-region check: its bounds would go stale; the region table moves instead
        self._moves_packet = _moves_packet(prog, vm.helpers)
        if engine == "interp":
            self._interp = Interpreter(prog, vm.helpers, vm.kfuncs, values64, arena=arena,
                                       resolve_map=vm.resolve_map, same_value=not verified,
                                       facts=verify_result_facts(verify_result))
        else:
            self._jit = self._compile(vm, prog, prog_type, name, arena, values64)

    def _compile(self, vm, prog, prog_type, name, arena, values64):
        from pybpf.jit import compile_program   # imported on demand: pulls in llvmlite.ir

        # ld_abs/ld_ind read the run's packet through two u64 words: address, length. A
        # program reached by a tail call reads the descriptor of the run's first program
        # (jit/calls.py: the chain record), so one that makes tail calls fills it too.
        self._packet_desc = (ctypes.c_uint64 * 2)()
        self._ldabs = any(f.kind == "ldabs" for _, f, _ in prog.instructions()) \
            or _makes_tail_calls(prog, vm.helpers)
        # unverified code may loop for ever: it counts a run budget down at back edges
        self._budget = None if self.verified else (ctypes.c_int64 * 1)()
        env = jit_env(vm, arena, prog_type, ctypes.addressof(self._packet_desc),
                      verified=self.verified,
                      budget_cell=0 if self._budget is None else ctypes.addressof(self._budget))
        if verify_result_facts(self.verify_result) is not None:
            env.facts = self.verify_result.facts    # the verifier's per-insn facts (insn_aux_data)
        jit = compile_program(prog, vm.helpers, name=name, values64=values64, env=env,
                              tier=self.tier)
        # Code that calls Python may reach a helper that follows or checks pointers: its runs
        # get the run's region table (ACTIVE_REGIONS); purely native code needs none.
        self._regions = jit.needs_gil
        self._plain_jit = not (self._ldabs or self._regions)
        self._plain_mem = self._plain_jit and prog_type == "mem"
        return jit

    @property
    def native_entry(self) -> int:
        """Where a JIT'd bpf_tail_call enters this program (0: not JIT'd, or closed)."""
        jit = self._jit
        return jit.tail_entry if jit is not None and not self.closed else 0

    def _set_packet(self, rc) -> None:
        """Point the JIT's ld_abs descriptor at this run's packet (the interpreter's). Without
        one its length is NO_PACKET: ld_abs/ld_ind raise the interpreter's VMError when they
        run (the interpreter's behaviour, tail-call targets included)."""
        from pybpf.jit.calls import NO_PACKET

        packet = rc.packet
        if packet is None:
            self._packet_desc[0], self._packet_desc[1] = 0, NO_PACKET & 0xFFFFFFFFFFFFFFFF
            return
        if packet is rc.skb:
            # the live sk_buff: the packet helpers move the descriptor with the packet
            packet.ld_desc = self._packet_desc
            address = packet.data
        elif isinstance(packet, memoryview) and not packet.readonly:
            address = ctypes.addressof(ctypes.c_char.from_buffer(packet)) if len(packet) else 0
        else:
            rc.jit_packet = Buffer(len(packet), init=bytes(packet))
            address = rc.jit_packet.address
        self._packet_desc[0], self._packet_desc[1] = address, len(packet)

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
        rc = build_context(self.prog_type, mem, ctx, data, self._has_device,
                               self.ctx_headroom)
        rc.prog_btf = getattr(self.program, "btf", None)    # bpf_obj_new's types
        self._check_ctx_size(rc)
        if self._jit is not None:
            if trace is not None:
                raise VMError("tracing needs engine='interp'")
            if self._budget is not None:
                self._budget[0] = check_limit(insn_limit if insn_limit is not None
                                              else self.insn_limit)
            if self._ldabs:
                self._set_packet(rc)
            if self._regions:
                rc.jit_regions = self._run_regions(rc)
                # no stack region yet: each bridged helper call makes the program's frames
                # at that call the stack regions (frame records inside this thread's stack)
                lo, size = _thread_stack()
                rc.jit_regions.frame_bounds = (lo, lo + size)
                if rc.xdp is not None:
                    # native bpf_xdp_adjust_head moves the packet's pointers in the xdp_md
                    # only; the table follows them before each lookup
                    rc.jit_regions.follow(rc.xdp)
            return rc, None
        limit = check_limit(insn_limit if insn_limit is not None else self.insn_limit)
        fast = None if self._moves_packet else rc.fast
        return rc, self._interp.start(self._run_regions(rc), fast, limit, rc.packet, trace)

    def _run_regions(self, rc) -> RegionTable:
        """The VM's map and arena regions plus this run's context regions."""
        base = self.vm.run_regions()
        # The VM's regions rarely change between runs: sort them once, copy the table per run.
        # (List equality compares the Region objects by identity first, so this is cheap.)
        if base != self._base_key:
            self._base_table, self._base_key = RegionTable(base), base
        regions = self._base_table.copy()
        for region in rc.regions:
            regions.add(region)
        return regions

    def _finish(self, rc, session, r0) -> None:
        rc.finish(r0)
        self.last_buffer = rc.buffer if self.prog_type == "mem" else None
        self.last_mem = rc.last_mem
        self.last_data, self.last_ctx = rc.last_data, rc.last_ctx
        self.last_redirect = redirect_of(rc, r0)
        self.last_clones = rc.clones
        self.last_insn_count = session.executed if session is not None else None

    @property
    def last_mem(self) -> bytes | None:
        """The private mem copy's contents after the last run (None: no mem)."""
        value = self._last_mem
        if value is _FROM_BUFFER:
            buf = self.last_buffer
            value = self._last_mem = buf.bytes() if buf is not None else None
        return value

    @last_mem.setter
    def last_mem(self, value: bytes | None) -> None:
        self._last_mem = value

    def run(self, mem=None, *, ctx=None, data=None, trace=None,
            insn_limit: int | None = None) -> int:
        """Run once; returns r0 (u64). ``trace`` is called with a TraceEvent per instruction.

        ``mem`` is for prog_type "mem"; ``ctx``/``data`` build the other types' contexts
        (for "mem", ``data`` is the packet the legacy ld_abs/ld_ind instructions read).
        """
        if self._plain_mem and ctx is None and data is None and trace is None \
                and not self.closed:
            # The commonest JIT run, a "mem" program, inlined without a RunContext: the
            # private copy of mem (guarded, as build_context makes it), one native call, and
            # what _finish records. Every attribute it needs is read once, and the read
            # section is runtime/grace.py's enter()/leave() inlined (same protocol).
            if self.min_mem_size:
                self._check_mem_size(mem, None)
            self.last_data = self.last_ctx = self.last_insn_count = None
            if mem is None or not len(mem):
                buf = None
                r1 = r2 = 0
            else:
                buf = Buffer.guarded_copy(mem, MEM_GUARD)
                r1, r2 = buf.address, buf.size
            call = self._jit._call
            rec = _READERS.get(_get_ident())
            if rec is None:
                rec = _READERS[_get_ident()] = [0, 0]
            if not rec[1]:
                rec[0] = _grace._epoch
            rec[1] += 1
            try:
                return call(r1, r2)
            finally:
                rec[1] -= 1
                self.last_buffer = buf
                # copied from the buffer when first read (most runs never read it)
                self._last_mem = _FROM_BUFFER if buf is not None else None
        if self.min_mem_size:
            self._check_mem_size(mem, ctx)
        if self._plain_jit and trace is None and not self.closed:
            # The common JIT run, inlined: context, one native call, results.
            rc = build_context(self.prog_type, mem, ctx, data, self._has_device,
                               self.ctx_headroom)
            self._check_ctx_size(rc)
            r0 = None
            grace_enter()
            try:
                r0 = self._jit._call(rc.r1, rc.r2)
                return r0
            except BpfThrow as thrown:      # bpf_throw: the default callback returns the cookie
                r0 = thrown.cookie & 0xFFFFFFFFFFFFFFFF
                return r0
            finally:
                grace_leave()
                self._finish(rc, None, r0)
                rc.release()
        return self._execute(mem, ctx, data, trace, insn_limit,
                             lambda rc: self._jit.run(rc.r1, rc.r2),
                             lambda session, rc: session.call(rc.r1, rc.r2))

    def _check_mem_size(self, mem, ctx) -> None:
        """Refuse memory shorter than the verifier proved the program may touch."""
        if self.prog_type == "mem":
            given, what = (0 if mem is None else len(mem)), "mem"
        elif self.prog_type == "syscall":
            given, what = (0 if ctx is None else _size_of(ctx)), "ctx"
        else:
            return
        if given < self.min_mem_size:
            raise VMError(f"{what} is {given} bytes but the program accesses up to byte "
                          f"{self.min_mem_size} (max_ctx_offset): give at least "
                          f"{self.min_mem_size} bytes")

    def _check_ctx_size(self, rc) -> None:
        """Refuse a run whose context (r1's memory) is shorter than the verifier let the program
        read (max_ctx_offset): a tracepoint or raw_tracepoint ctx comes from the caller, and JIT
        code does not check ctx accesses at run time (the kernel refuses such an attach)."""
        if not self.min_mem_size or self.prog_type in ("mem", "syscall"):
            return                      # checked from the arguments by _check_mem_size
        given = next((r.size for r in rc.regions if r.start == rc.r1), 0) if rc.r1 else 0
        if given < self.min_mem_size:
            rc.release()
            raise VMError(f"ctx is {given} bytes but the program reads up to byte "
                          f"{self.min_mem_size} of it (max_ctx_offset): give at least "
                          f"{self.min_mem_size} bytes")

    def test_run(self, mem=None, repeat: int = 1, *, ctx=None, data=None,
                 insn_limit: int | None = None) -> tuple[int, float]:
        """Run ``repeat`` times on one private context (as the kernel's BPF_PROG_TEST_RUN
        does: changes persist between repetitions); returns (r0 of the last run, ns per run)."""
        repeat = max(int(repeat), 1)
        if self.min_mem_size:
            self._check_mem_size(mem, ctx)
        out = self._execute(mem, ctx, data, None, insn_limit,
                            lambda rc: self._jit.test_run(rc.r1, rc.r2, repeat),
                            lambda session, rc: session.repeat(rc.r1, rc.r2, repeat))
        return out if isinstance(out, tuple) else (out, 0.0)     # (cookie, -) after a throw

    def _execute(self, mem, ctx, data, trace, insn_limit, on_jit, on_interp):
        """Prepare a run, call ``on_jit(rc)`` or ``on_interp(session, rc)`` (whose result is
        r0 or ``(r0, ...)``) and record the run's outputs whatever happens."""
        rc, session = self._prepare(mem, ctx, data, trace, insn_limit)
        r0 = None
        token = None
        run_token = ACTIVE_RUN.set(rc)
        grace_enter()       # a read section: freed map elements wait until the run ends
        try:
            try:
                if session is None:
                    if getattr(rc, "jit_regions", None) is not None:
                        token = ACTIVE_REGIONS.set(rc.jit_regions)
                    out = on_jit(rc)
                else:
                    out = on_interp(session, rc)
            except BpfThrow as thrown:
                # bpf_throw unwound every frame: the kernel's default exception callback makes
                # the program return the cookie (a repeated test run stops at the throw)
                out = thrown.cookie & 0xFFFFFFFFFFFFFFFF
            r0 = out[0] if isinstance(out, tuple) else out
            return out
        finally:
            grace_leave()
            if token is not None:
                ACTIVE_REGIONS.reset(token)
            ACTIVE_RUN.reset(run_token)
            self._finish(rc, session, r0)
            if session is not None:
                session.close()
            rc.release()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        jit = self._jit
        self._interp = self._jit = None
        # let go of the maps (a closed map goes with its last program) and the run's memory
        self.maps, self.arena, self.values64 = {}, None, {}
        self._base_key = self._base_table = None
        self.last_buffer = self.last_ctx = None
        if jit is not None:
            # prog_arrays holding this program must not keep its code address
            for m in list(getattr(self.vm, "_by_fd", {}).values()):
                if isinstance(m, ProgArrayMap) and any(p is self for p in m._progs.values()):
                    m.refresh_native()
            # a run in another thread may have tail-called in before the entry went: its code
            # is freed after the runs that started before this point have ended
            if not in_read_section():
                wait(retire(), timeout=10.0)
            jit.close()
        release = getattr(self.vm, "release_closed", None)
        if release is not None:
            release()       # the closed maps only this program held can go now

    def __enter__(self) -> "LoadedProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _makes_tail_calls(prog, helpers) -> bool:
    for _pc, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "helper":
            h = helpers.get(insn.imm) if helpers is not None else None
            if h is not None and getattr(h, "special", None) == "tail_call":
                return True
    return False


def _moves_packet(prog, helpers) -> bool:
    """Whether ``prog`` calls a helper whose prototype says it changes packet data."""
    for _pc, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "helper":
            h = helpers.get(insn.imm) if helpers is not None else None
            if h is not None and getattr(h.prototype, "changes_pkt_data", False):
                return True
    return False


def redirect_of(rc, r0):
    """The run's :class:`~pybpf.runtime.helpers_xdp.Redirect` when the program's verdict sends
    the packet to it (XDP_REDIRECT for xdp, TC_ACT_REDIRECT for tc), else None."""
    target = getattr(rc, "redirect", None)
    if target is None or r0 is None:
        return None
    want = {"xdp": 4, "sched_cls": 7}.get(rc.prog_type)
    return target if want is not None and (r0 & 0xFFFFFFFF) == want else None


def verify_result_facts(result):
    return None if result is None else result.facts


def _size_of(ctx) -> int:
    """Bytes in a context given as bytes-like or as a ctypes object."""
    try:
        return len(ctx)
    except TypeError:
        return ctypes.sizeof(ctx)
