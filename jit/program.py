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

import ctypes
import os
import threading
import time
import weakref

from pybpf.errors import JITError
from pybpf.jit import cache, loadkey, native, tiers
from pybpf.jit.codegen import compile_ir
from pybpf.jit.lower import LoweredModule, ModuleLowerer, gc_paused
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
    :func:`compile_programs` batch); ``tier`` ("quick" or "O2": the code running now) and
    ``cache`` ("hit": taken from the code cache, "miss": compiled and stored, "off").
    """

    tier = "O2"
    cache = "off"
    _entry = _tail = None    # tiered: the patchable entry points (jit/tiers.py)

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
        self._ir_before, self.ir_after, self.asm = ir_before, ir_after, asm
        self._lower_again = None    # a hit of the load-input key: how to get ir_before
        self.text_size = text_size
        self.symbols: dict[str, int] = {}   # every function of the placed .text -> its offset
        self._call = native.make_caller(self.address, holds_gil=needs_gil)
        self.closed = False
        self.timings: dict[str, float] = {}

    @property
    def ir_before(self) -> str:
        """The lowered IR. Code taken from the cache by the load-input key was not lowered:
        the lowering runs now, on first use, from the same inputs."""
        if not self._ir_before and self._lower_again is not None:
            self._ir_before, self._lower_again = self._lower_again(), None
        return self._ir_before

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
        self._lower_again = None    # it holds the load's inputs (maps among them)
        with _swap_lock:
            codes = [self._code] + getattr(self, "_retired", [])
            self._retired = []
        for code in codes:
            code.release()

    def _install(self, code: "_PlacedCode", offset: int, tail_offset: int | None,
                 opt_level: int, image, cache_state: str) -> None:
        """Tier up: point the entries at ``code`` (placed -O2 code) and free the quick code
        once no run can be inside it (jit/tiers.py)."""
        base = code.allocation.address
        address = base + offset
        tail = base + (offset if tail_offset is None else tail_offset)
        with _swap_lock:
            if self.closed:
                code.release()
                return
            old_code = self._code
            records = [self._entry.swap(address)]
            if self._tail is not None:
                records.append(self._tail.swap(tail))
            # Python's own entries go straight to the new code from now on.
            self._code, self.allocation = code, code.allocation
            self.address, self.tail_entry = address, tail
            self._call = native.make_caller(address, holds_gil=self.needs_gil)
            self.opt_level, self.tier, self.image, self.cache = opt_level, "O2", image, \
                cache_state
            self._retired = getattr(self, "_retired", []) + [old_code]
            self.installed_at = time.perf_counter()
        _label(code.allocation, "O2", cache_state)
        tiers.wait_quiescent(records)
        with _swap_lock:
            retired = getattr(self, "_retired", [])
            if old_code in retired:
                retired.remove(old_code)
            else:
                return      # closed meanwhile: close() released it
        old_code.release()

    def __enter__(self) -> "JitProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, allocator gone: nothing useful to do
            pass


_swap_lock = threading.Lock()
TIERS = ("auto", "quick", "O2", "baseline")
QUICK_OPT = 0    # the quick tier: no passes, -O0 code generation (bench_tiers measures it)


def _label(allocation, tier: str, cache_state: str) -> None:
    """What placement() reports for this allocation's code."""
    allocation.info = {"tier": tier, "cache": cache_state}


def _dumping() -> bool:
    return any(os.environ.get(k, "") not in ("", "0")
               for k in ("PYBPF_DUMP_IR", "PYBPF_DUMP_OPT", "PYBPF_DUMP_ASM"))


def _image(ir_text: str, opt_level: int, want_ir: bool, want_asm: bool, keyed=None,
           looked: bool = False):
    """(linked image, CompileResult or None, cache state) for ``ir_text`` at ``opt_level``:
    from the code cache when it has the entry, else from the compile worker (then stored).
    ``keyed`` (load-input key, load record; see :func:`_keyed`) replaces the key over the IR,
    so that the next load of the same inputs skips the lowering (jit/loadkey.py); ``looked``:
    that key was just looked up and missed."""
    root = cache.directory()
    if keyed is not None:
        k, record = keyed
    else:
        k, record = (cache.key(ir_text, opt_level) if root is not None else None), None
    if k is not None and not (want_ir or want_asm or _dumping() or looked and keyed):
        image = cache.get(k)
        if image is not None:
            return image, None, "hit"
    result = compile_ir(ir_text, opt_level=opt_level, want_ir=want_ir, want_asm=want_asm)
    if k is not None:
        cache.put(k, result.image, record)
    return result.image, result, "miss" if k is not None else "off"


def _load_inputs(progs, helpers, values64, envs, want_ir, want_asm):
    """The load-input key's inputs of a single-program load (None: the IR key only)."""
    if len(progs) != 1 or want_ir or want_asm or _dumping() or cache.directory() is None:
        return None
    inputs = loadkey.LoadInputs(progs[0], helpers, values64[0], envs[0])
    return inputs if inputs.keyable else None


def _keyed(inputs, lowered, opt_level: int):
    """(load-input key, load record) of ``lowered`` at ``opt_level``, or None: the IR key."""
    if inputs is None:
        return None
    recipe = inputs.recipe(lowered.externs)
    if recipe is None:
        return None
    return inputs.key(opt_level), {"recipe": recipe, "needs_gil": lowered.needs_gil,
                                   "tail_entries": dict(lowered.tail_entries)}


def _from_cache(inputs, opt_level: int, env):
    """(image, a LoweredModule without IR) of the load-input key's entry, or None."""
    k = inputs.key(opt_level)
    found = cache.get_load(k)
    if found is None:
        return None
    image, record = found
    resolved = inputs.resolve(record["recipe"])
    if resolved is None:    # never written by this key's loads: damaged or foreign
        cache.reject(k)
        return None
    externs, keep = resolved
    lowered = LoweredModule("", ["bpf_main"], keep + list(env.keepalive), record["needs_gil"],
                            dict(record["tail_entries"]), externs)
    return image, lowered


def compile_programs(progs: list[Program], helpers=None, opt_level: int = 2,
                     names: list[str] | None = None, want_ir: bool = False,
                     want_asm: bool = False, values64: list[dict] | None = None,
                     allocator=None, envs: list | None = None,
                     tier: str | None = None) -> list[JitProgram]:
    """Compile several programs in one module, one worker round trip and one allocation.

    ``values64`` is one slot -> constant table per program and ``envs`` one
    :class:`~pybpf.jit.env.JitEnv` per program (see :func:`compile_program`). ``tier``: None or
    "O2" compile at ``opt_level`` and return; "quick" compiles the quick tier only; "auto"
    (one program only) returns quick-tier code at once unless the -O2 code is in the code
    cache, and installs -O2 code compiled in the background when it is ready."""
    if tier is not None and tier not in TIERS:
        raise JITError(f"unknown JIT tier {tier!r} (expected one of {', '.join(TIERS)})")
    if not progs:
        return []
    names = list(names) if names is not None else [p.name for p in progs]
    values64 = list(values64) if values64 is not None else [None] * len(progs)
    envs = list(envs) if envs is not None else [None] * len(progs)
    # Per-instruction comments make the IR readable but cost time to build, print and parse,
    # so they are only there when someone will read the IR.
    comments = want_ir or os.environ.get("PYBPF_DUMP_IR", "") not in ("", "0")
    t0 = time.perf_counter()
    inputs = _load_inputs(progs, helpers, values64, envs, want_ir, want_asm)
    image = result = lowered = lower_again = None
    # PYBPF_DUMP_*: the dumps describe the code that runs, so such a load waits for -O2
    tiered = tier == "auto" and len(progs) == 1 and not want_ir and not want_asm \
        and not _dumping()
    if inputs is not None and tier != "baseline":
        # A key from the load's inputs: a hit skips the lowering and LLVM alike. (Tier
        # "baseline" asks for the baseline's code, not -O2 code from the cache.)
        wanted = 2 if tier == "auto" else QUICK_OPT if tier == "quick" else opt_level
        hit = _from_cache(inputs, wanted, envs[0])
        if hit is not None:
            image, lowered = hit
            env0, prog0, v0 = envs[0], progs[0], values64[0]
            lower_again = lambda: _lower_one(prog0, helpers, v0, env0)  # noqa: E731
            tiered, opt_level, cache_state = False, wanted, "hit"
            symbols = ["bpf_main"]
        else:
            envs[0] = inputs.recording_env(envs[0])
    if lowered is None and len(progs) == 1 and (
            tier == "baseline" or tiered and _baseline_enabled()):
        # The baseline tier (jit/baseline.py): no lowering and no LLVM before the first run;
        # the lowering and -O2 compile (or, for a load keyed on its IR, the -O2 code from
        # the cache) come in the background. None: the LLVM quick tier.
        jp = _baseline_load(progs[0], helpers, values64[0], envs[0], names[0], allocator,
                            inputs, tiered, t0)
        if jp is not None:
            return [jp]
    if lowered is None:
        if tier != "quick" and not tiered and opt_level > QUICK_OPT:
            check_o2_size(progs, envs)      # before the lowering: its time is lost too
        with gc_paused():
            lowerer = ModuleLowerer(helpers, comments,
                                    name=names[0] if len(progs) == 1 else "batch")
            symbols = [lowerer.add_program(p, "bpf_main" if len(progs) == 1 else f"bpf_main.{i}",
                                           v, e)
                       for i, (p, v, e) in enumerate(zip(progs, values64, envs))]
            lowered = lowerer.finish()
    t1 = time.perf_counter()
    if image is None and tiered:
        # -O2 code already in the cache: no quick tier needed
        # (a load-input key was looked up before the lowering)
        keyed = _keyed(inputs, lowered, 2)
        o2 = cache.get(cache.key(lowered.ir, 2)) \
            if keyed is None and cache.directory() is not None else None
        if o2 is not None:
            tiered, opt_level, image, cache_state = False, 2, o2, "hit"
        else:
            opt_level = QUICK_OPT
    elif image is None and tier == "quick":
        opt_level = QUICK_OPT
    o2_refused = None
    if tiered and image is None and _largest(progs) > o2_limit(envs):
        # the quick tier stays (the baseline could not emit the program): no -O2 behind it
        tiered, o2_refused = False, _o2_refusal(_largest(progs), o2_limit(envs))
    if tiered and allocator is None:
        allocator = _default_allocator()
    # The -O2 compile starts now, beside the quick tier's.
    tier_up = _TierUp(lowered, symbols[0], names[0], allocator, inputs) if tiered else None
    try:
        jits = _finish_programs(progs, names, symbols, lowered, image, result, opt_level,
                                cache_state if image is not None else None, want_ir, want_asm,
                                inputs, wanted if inputs is not None else None, tier, tiered,
                                allocator, tier_up, t0, t1, lower_again)
        if o2_refused is not None:
            jits[0].tier_error = o2_refused
        return jits
    except BaseException:
        if tier_up is not None:
            tier_up.cancel()
        raise


def _baseline_enabled() -> bool:
    from pybpf.jit import baseline

    return baseline.enabled()


def _lower_one(prog, helpers, values64, env) -> str:
    return _lowered_one(prog, helpers, values64, env).ir


def _lowered_one(prog, helpers, values64, env, name: str | None = None) -> LoweredModule:
    with gc_paused():
        lowerer = ModuleLowerer(helpers, False, name=name or prog.name)
        lowerer.add_program(prog, "bpf_main", values64, env)
        return lowerer.finish()


# -O2's time grows about with the square of the program, the quick tier's and the baseline's
# about linearly (bench_bigprog.py's branchy program, LLVM in the measuring process, CPU time:
# -O2 2,000 slots 0.65 s, 4,000 1.9 s, 8,000 6.5 s, 16,000 25 s, 100,000 over 280 s; the quick
# tier 8,000 slots 0.3 s, 32,000 0.7 s, 100,000 2.0 s: one branchy program each). The limit is
# per program, not per module: compile_programs' batches of many small programs (250 random
# programs, 16,521 slots, in tests/test_jit_diff.py) are not what it is for. Above it nothing is
# compiled at -O2: tier "auto" keeps its first tier's code, with no
# background compile holding a core and hundreds of MiB (``tier_error`` says why), and an
# explicit -O2 compile (tier "O2", or an opt_level without a tier) is a JITError naming the
# limit at once, instead of minutes of LLVM ending in the compile worker's timeout. Per VM:
# ``VM(max_o2_slots=...)`` (JitEnv.o2_max_slots).
O2_MAX_SLOTS = 16_384


def o2_limit(envs) -> int:
    """The largest program -O2 compiles for loads with these environments."""
    limits = [getattr(e, "o2_max_slots", None) for e in envs]
    return min((v for v in limits if v is not None), default=O2_MAX_SLOTS)


def _o2_refusal(slots: int, limit: int) -> str:
    return (f"not compiled at -O2: {slots:,} slots, more than the {limit:,} -O2 compiles "
            f"(VM(max_o2_slots=...))")


def _largest(progs) -> int:
    return max((len(p) for p in progs), default=0)


def check_o2_size(progs, envs) -> None:
    """JITError when one of ``progs`` is larger than -O2 may compile."""
    slots, limit = _largest(progs), o2_limit(envs)
    if slots > limit:
        raise JITError(f"program too large for -O2: {slots:,} slots, more than the {limit:,} "
                       f"this VM compiles at -O2 (VM(max_o2_slots=...) raises it); LLVM's -O2 "
                       f"time grows with the square of the program (25 s of CPU at 16,000 "
                       f"slots, over 280 s at 100,000): load it with tier=\"auto\" (baseline code "
                       f"at once), tier=\"baseline\" or tier=\"quick\"")


def _baseline_load(prog, helpers, values64, env, name, allocator, inputs, tiered: bool,
                   t0: float | None = None):
    """Place baseline-tier code for ``prog`` (tiered: with entry stubs and the -O2 compile
    started in the background); None when the baseline cannot emit it and the load takes the
    LLVM quick tier (counted). ``tier="baseline"`` (not tiered) raises instead."""
    from pybpf.jit import baseline

    t0 = time.perf_counter() if t0 is None else t0
    try:
        made = baseline.compile_baseline(prog, helpers, values64, env)
    except baseline.Unsupported as exc:
        baseline.count(False, str(exc))
        if not tiered:
            raise
        return None
    t1 = time.perf_counter()
    if allocator is None:
        allocator = _default_allocator()
    allocation = native.place(made.code, name, allocator)
    keep = made.keepalive + list(getattr(env, "keepalive", ()) or ())
    code = _PlacedCode(allocation, allocator, keep, 1)
    _label(allocation, "baseline", "off")
    jp = JitProgram(code, "bpf_main", made.symbols["bpf_main"], name, made.needs_gil, 0, "",
                    None, None, len(made.code), made.symbols.get("bpf_main.tail"))
    jp.tier, jp.cache = "baseline", "off"
    jp.image, jp.externs, jp.symbols = None, {}, dict(made.symbols)
    jp.timings = {"baseline": t1 - t0, "place": time.perf_counter() - t1}
    jp._lower_again = lambda: _lower_one(prog, helpers, values64, env)  # noqa: E731
    baseline.count(True)
    if tiered and len(prog) > o2_limit([env]):
        jp.tier_error = _o2_refusal(len(prog), o2_limit([env]))
    elif tiered:
        _make_tiered(jp, allocator, None, "bpf_main", name)
        _TierUp(lambda: _lowered_one(prog, helpers, values64, env, name), "bpf_main", name,
                allocator, inputs).attach(jp)
    return jp


def _default_allocator():
    from pybpf.jit.execmem import default_allocator

    return default_allocator()


def _finish_programs(progs, names, symbols, lowered, image, result, opt_level, cache_state,
                     want_ir, want_asm, inputs, wanted, tier, tiered, allocator, tier_up,
                     t0, t1, lower_again=None) -> list[JitProgram]:
    """The second half of :func:`compile_programs`: code (cache or worker), placement."""
    if image is None:
        image, result, cache_state = _image(lowered.ir, opt_level, want_ir, want_asm,
                                            _keyed(inputs, lowered, opt_level),
                                            looked=inputs is not None and opt_level == wanted)
    if result is None:   # from the cache: what a compile result would have said
        from pybpf.jit.codegen import CompileResult

        result = CompileResult(image.data, image.symbols, image,
                               times={"cache_load": time.perf_counter() - t1})
    missing = [s for s in symbols if s not in result.symbols]
    if missing:
        raise JITError(f"compiled object lacks entry functions {missing}")
    if allocator is None:
        allocator = _default_allocator()
    label = names[0] if len(progs) == 1 else f"{names[0]}+{len(progs) - 1}"
    t2 = time.perf_counter()
    allocation = native.place_image(result.image, label, allocator, lowered.externs)
    code = _PlacedCode(allocation, allocator, lowered.keepalive, len(progs))
    tier_name = "quick" if opt_level == QUICK_OPT and tier in ("quick", "auto") \
        else f"O{opt_level}"
    _label(allocation, tier_name, cache_state)
    jits = [JitProgram(code, sym, result.symbols[sym], name, lowered.needs_gil, opt_level,
                       lowered.ir, result.ir_after, result.asm, len(result.text),
                       result.symbols.get(lowered.tail_entries.get(sym, sym)))
            for sym, name in zip(symbols, names)]
    if tiered:
        _make_tiered(jits[0], allocator, lowered, symbols[0], label)
    timings = dict(result.times, lower=t1 - t0, place=time.perf_counter() - t2)
    steps = ("parse", "verify", "opt", "emit", "extract")
    if all(k in timings for k in steps):
        timings["llvm"] = sum(timings[k] for k in steps)
    for jp in jits:
        jp.timings = timings
        jp.symbols = dict(result.symbols)
        jp.image, jp.externs = result.image, dict(lowered.externs)
        jp.cache, jp.tier = cache_state, tier_name
    if lower_again is not None:
        jits[0]._lower_again = lower_again
    if tier_up is not None:
        tier_up.attach(jits[0])
    return jits


def _make_tiered(jp: JitProgram, allocator, lowered, symbol: str, label: str) -> None:
    """Give ``jp`` patchable entry points (stubs) in front of its quick code."""
    jp._entry = tiers.Entry(jp.address)
    has_tail = jp.tail_entry != jp.address
    jp._tail = tiers.Entry(jp.tail_entry) if has_tail else None
    stubs = [jp._entry] + ([jp._tail] if has_tail else [])
    code = b"".join(tiers.stub_code(ctypes.addressof(e.slot)) for e in stubs)
    stub_alloc = native.place(code, f"{label}:entry", allocator)
    _label(stub_alloc, "entry", "-")
    jp._stub = _PlacedCode(stub_alloc, allocator, [], 1)
    jp._retired = [jp._stub]       # freed with the program (close)
    for i, e in enumerate(stubs):
        e.address = stub_alloc.address + i * tiers.STUB_SIZE
    jp.address = jp._entry.address
    jp.tail_entry = jp._tail.address if has_tail else jp.address
    jp._call = native.make_caller(jp.address, holds_gil=jp.needs_gil)


class _TierUp:
    """The background -O2 compile of a tiered load. It starts as soon as the IR exists, so it
    runs beside the quick tier's compile (the pool has a worker for each); the code is
    installed once the quick code is placed (:meth:`attach`), or dropped (:meth:`cancel`)."""

    def __init__(self, lowered, symbol: str, label: str, allocator, inputs=None) -> None:
        """``lowered``: the LoweredModule, or a function making it (the baseline tier: the
        lowering runs here, in the background, too)."""
        self.started = time.perf_counter()
        self._jp = None
        self._ready = threading.Event()

        def job() -> None:
            nonlocal lowered
            # It runs even when the program was closed meanwhile: its -O2 code still goes to
            # the code cache, for the next load of the same program. Without a cache it would
            # be wasted, and a fast load/close loop would queue such compiles without bound.
            if self._unwanted():
                return
            try:
                if callable(lowered):
                    lowered = lowered()
                keyed = _keyed(inputs, lowered, 2)
                image, _, state = _image(lowered.ir, 2, False, False, keyed)
            except Exception as exc:   # the quick code keeps running; say why it stayed
                error = f"{type(exc).__name__}: {exc}"
                self._ready.wait()
                jp = self._jp() if self._jp is not None else None
                if jp is not None:
                    jp.tier_error = error
                return
            self._ready.wait()
            jp = self._jp() if self._jp is not None else None
            if jp is None or jp.closed:
                return
            try:
                allocation = native.place_image(image, label, allocator, lowered.externs)
            except Exception as exc:
                jp.tier_error = f"{type(exc).__name__}: {exc}"
                return
            code = _PlacedCode(allocation, allocator, lowered.keepalive, 1)
            tail_symbol = lowered.tail_entries.get(symbol, symbol)
            jp._install(code, image.symbols[symbol], image.symbols.get(tail_symbol), 2, image,
                        state)
            jp.timings["tier_up"] = time.perf_counter() - self.started

        tiers.submit(job)

    def _unwanted(self) -> bool:
        """Whether the program is gone (closed, dropped or cancelled) and no code cache would
        keep its -O2 code."""
        if cache.directory() is not None or not self._ready.is_set():
            return False
        jp = self._jp() if self._jp is not None else None
        return jp is None or jp.closed

    def attach(self, jp: JitProgram) -> None:
        # weakly: a program dropped while its -O2 compile runs is freed (and closed) at once
        self._jp = weakref.ref(jp)
        self._ready.set()

    def cancel(self) -> None:
        self._ready.set()


def compile_program(prog: Program, helpers=None, opt_level: int = 2, name: str | None = None,
                    want_ir: bool = False, want_asm: bool = False,
                    values64: dict[int, int] | None = None, allocator=None,
                    env=None, tier: str | None = None) -> JitProgram:
    """Lower, compile (``opt_level`` 0..3, -O2 by default), place and wrap one program.

    ``helpers`` is the runtime's helper registry (id -> Helper) or ``{id: callable}``.
    ``values64`` holds what the loader resolved (the interpreter's table): slot -> constant of
    each ld_imm64 pseudo form, and the arena's upper half for each cast_user; ``env`` (a
    :class:`~pybpf.jit.env.JitEnv`) the rest the loader knows: arena, kfuncs, maps, packet.
    ``tier`` (see :func:`compile_programs`): None compiles at ``opt_level``. Raises
    :class:`JITError` for forms the JIT cannot lower yet, LLVM failures and placement failures.
    """
    return compile_programs([prog], helpers, opt_level, [name or prog.name], want_ir, want_asm,
                            [values64], allocator, [env], tier)[0]
