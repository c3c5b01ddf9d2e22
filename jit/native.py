"""Crossing between Python and placed native code, in both directions, without W+X pages.

Python -> native: :func:`make_caller` wraps a code address in a ctypes *foreign function
pointer*. Unlike a ctypes callback, a foreign function pointer allocates no libffi trampoline,
so it maps nothing writable and executable.

Native -> Python: a BPF program may call a helper written in Python. A ctypes callback would
cost a W+X page per helper, so pybpf builds the bridge in LLVM IR instead (:class:`PythonHelper`):
the JIT'd code calls CPython's C API by absolute address, with the callable's address baked in as
a constant, so the object needs no relocations. The bridge does not take the GIL. A program that
uses Python helpers must be entered through ``make_caller(..., holds_gil=True)``, that is a
``ctypes.PYFUNCTYPE`` pointer: ctypes then keeps the GIL across the call and, when the call
returns with a Python exception set, raises it in the caller. So a helper that raises stops the
program (the bridge reports the failure and the lowering returns at once) and the caller sees
the helper's own exception, traceback included. Programs without Python helpers can be entered
with the GIL released (the default), so threads run BPF code in parallel.

test_run: :func:`build_driver_ir` is a tiny native loop that calls a program ``repeat`` times
between two ``clock_gettime`` calls (libc's, which reads the vDSO), so the per-run overhead is
an indirect call, not a ctypes call. :func:`get_driver` places it once per process, its code
from the code cache once a process compiled it (:func:`place_runtime_module`).
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable

from llvmlite import ir

from pybpf.errors import JITError

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
NULL = ir.Constant(PTR, None)

# Result of a Python-helper bridge: the helper's return value and "it failed, stop now".
BRIDGE_RESULT = ir.LiteralStructType([I64, I1])

_PY_VECTORCALL_ARGUMENTS_OFFSET = 1 << 63
_CLOCK_MONOTONIC = 1

# The C API the bridge calls, with their LLVM signatures.
_CAPI = {
    "PyLong_FromUnsignedLongLong": ir.FunctionType(PTR, [I64]),
    "PyLong_AsUnsignedLongLongMask": ir.FunctionType(I64, [PTR]),
    "PyObject_Vectorcall": ir.FunctionType(PTR, [PTR, PTR, I64, PTR]),
    "Py_DecRef": ir.FunctionType(ir.VoidType(), [PTR]),   # NULL-safe, unlike the macro
    "PyErr_Occurred": ir.FunctionType(PTR, []),
}


def c_api_address(name: str) -> int:
    """Address of an exported CPython C API function (a plain foreign pointer, no callback)."""
    try:
        return ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value
    except AttributeError:
        raise JITError(f"this Python does not export {name}") from None


_libc = ctypes.CDLL(None)


def libc_address(name: str) -> int:
    """Address of a libc function in this process."""
    try:
        return ctypes.cast(getattr(_libc, name), ctypes.c_void_p).value
    except AttributeError:
        raise JITError(f"libc does not export {name}") from None


def absolute_function(builder: ir.IRBuilder, fnty: ir.FunctionType, address: int) -> ir.Value:
    """A callee for ``builder.call``: the function of type ``fnty`` at ``address``.

    An ``inttoptr`` of a constant (folded by LLVM), so the call is ``movabs reg, imm64; call
    reg`` with no relocation. (``ir.Constant.inttoptr`` would not do: llvmlite cannot call a
    constant expression, it needs a value that knows its function type.)
    """
    ext = getattr(builder, "ext", None)   # a program's builder: an external symbol
    return builder.inttoptr(ext(address) if ext is not None else ir.Constant(I64, address),
                            ir.PointerType(fnty))


def capi(builder: ir.IRBuilder, name: str) -> ir.Value:
    """A callee for ``builder.call``: the CPython C API function ``name`` (one of ``_CAPI``)."""
    return absolute_function(builder, _CAPI[name], c_api_address(name))


_capi = capi   # the old private name (kept for callers outside jit/)


def make_caller(address: int, restype=ctypes.c_uint64,
                argtypes=(ctypes.c_uint64, ctypes.c_uint64), holds_gil: bool = False):
    """A Python callable for the native function at ``address``.

    ``holds_gil=True`` (required when the code may call Python helpers) keeps the GIL during the
    call and raises any Python exception the code left set; otherwise the GIL is released.

    >>> import ctypes
    >>> labs = make_caller(libc_address("labs"), ctypes.c_long, (ctypes.c_long,))
    >>> labs(-7)
    7
    """
    factory = ctypes.PYFUNCTYPE if holds_gil else ctypes.CFUNCTYPE
    return factory(restype, *argtypes)(address)


# -- Python helpers ------------------------------------------------------------------------

class PythonHelper:
    """A Python callable that JIT'd code calls through an LLVM IR bridge.

    The bridge, ``{i64, i1} @<symbol>(i64 x5)``, converts ``nargs`` of its arguments to Python
    ints, calls ``func`` by vectorcall and converts the result with
    ``PyLong_AsUnsignedLongLongMask`` (``None`` counts as 0). The ``i1`` is true when the call or
    the conversion raised; the exception is left set for ctypes to raise, so the program must
    return straight away (:meth:`call` hands the lowering that flag).

    The owner must keep this object alive as long as code that calls it is placed: it holds the
    reference to ``func`` whose address is baked into the code.

    Use with an ``llvmlite.ir`` module::

        helper = PythonHelper(my_func, name="trace")
        value, failed = helper.call(builder, [r1, r2, r3, r4, r5])
        with builder.if_then(failed, likely=False):
            builder.ret(ir.Constant(I64, 0))      # the caller will raise the exception
    """

    def __init__(self, func: Callable, name: str | None = None, nargs: int = 5) -> None:
        if not callable(func):
            raise JITError(f"Python helper {name or func!r} is not callable")
        if not 0 <= nargs <= 5:
            raise JITError(f"a BPF helper takes 0..5 arguments, not {nargs}")
        self.func = func
        self.name = name or getattr(func, "__name__", "helper")
        self.nargs = nargs
        self.symbol = f"pybpf.pyhelper.{self.name}"

    def __repr__(self) -> str:
        return f"<PythonHelper {self.name} -> {self.func!r}>"

    def define(self, module: ir.Module) -> ir.Function:
        """Define the bridge in ``module`` (once; later calls return the same function)."""
        existing = module.globals.get(self.symbol)
        if existing is not None:
            if getattr(existing, "pybpf_helper", None) is not self:
                raise JITError(f"two Python helpers named {self.name!r} in one module")
            return existing
        fn = ir.Function(module, ir.FunctionType(BRIDGE_RESULT, [I64] * 5), name=self.symbol)
        fn.pybpf_helper = self
        fn.linkage = "internal"  # a direct call in the same .text: no relocation
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")  # one copy, however many call sites
        emit_bridge_body(fn, fn.args[:self.nargs],
                         lambda b: ir.Constant(I64, id(self.func)).inttoptr(PTR))
        return fn

    def call(self, builder: ir.IRBuilder, args) -> tuple[ir.Value, ir.Value]:
        """Emit a call of the bridge; returns ``(value i64, failed i1)``.

        ``args`` are up to five i64 values (missing ones are passed as 0).
        """
        fn = self.define(builder.module)
        args = list(args) + [I64(0)] * (5 - len(args))
        res = builder.call(fn, args[:5], name=f"{self.name}.res")
        return (builder.extract_value(res, 0, name=f"{self.name}.r0"),
                builder.extract_value(res, 1, name=f"{self.name}.failed"))


def emit_bridge_body(fn: ir.Function, args, callable_of: Callable, ext=None) -> None:
    """Fill ``fn`` (returning ``BRIDGE_RESULT``) with a Python call: ``args`` (i64 values of
    ``fn``) become Python ints, ``callable_of(builder)`` (emitted where the call is made) is
    called by vectorcall and its result converted with ``PyLong_AsUnsignedLongLongMask``
    (``None`` counts as 0). The i1 is true when the call or the conversion raised.

    The one body of both bridges: :class:`PythonHelper` (callable baked in) and the shared
    ``pybpf_pycall<n>`` of :mod:`pybpf.jit.helper_calls` (callable as an argument).
    ``ext`` (:class:`pybpf.jit.cgutils.Externs`): per-process addresses (the C API, ``None``)
    become external symbols, so the code is the same in every process (and cached)."""
    nargs = len(args)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if ext is not None:
        b.ext = ext         # capi() and absolute_function() name addresses through it
    fail = fn.append_basic_block("fail")

    # argv[0] is scratch that vectorcall may use (PY_VECTORCALL_ARGUMENTS_OFFSET).
    argv = b.alloca(ir.ArrayType(PTR, max(6, nargs + 1)), name="argv")
    objs = []
    for i, arg in enumerate(args):
        obj = b.call(capi(b, "PyLong_FromUnsignedLongLong"), [arg], name=f"o{i + 1}")
        b.store(obj, b.gep(argv, [I32(0), I32(i + 1)], inbounds=True))
        objs.append(obj)
    # A NULL argument is a MemoryError already set: do not call with it.
    any_null = I1(0)
    for obj in objs:
        any_null = b.or_(any_null, b.icmp_unsigned("==", obj, NULL))
    call_bb, after_bb = fn.append_basic_block("call"), fn.append_basic_block("after")
    entry_bb = b.block
    b.cbranch(any_null, after_bb, call_bb)

    b.position_at_end(call_bb)
    callable_ = callable_of(b)
    argp = b.gep(argv, [I32(0), I32(1)], inbounds=True)
    res = b.call(capi(b, "PyObject_Vectorcall"),
                 [callable_, argp, I64(nargs | _PY_VECTORCALL_ARGUMENTS_OFFSET), NULL],
                 name="res")
    b.branch(after_bb)

    b.position_at_end(after_bb)
    result = b.phi(PTR, name="result")
    result.add_incoming(NULL, entry_bb)
    result.add_incoming(res, call_bb)
    for obj in objs:
        b.call(capi(b, "Py_DecRef"), [obj])
    ok_bb, none_bb, int_bb = (fn.append_basic_block(n) for n in ("ok", "none", "int"))
    b.cbranch(b.icmp_unsigned("==", result, NULL), fail, ok_bb)

    b.position_at_end(ok_bb)
    none = ir.Constant(I64, id(None)).inttoptr(PTR) if ext is None \
        else b.inttoptr(ext(id(None)), PTR)
    b.cbranch(b.icmp_unsigned("==", result, none), none_bb, int_bb)

    b.position_at_end(none_bb)
    b.call(capi(b, "Py_DecRef"), [result])
    b.ret(ir.Constant(BRIDGE_RESULT, [I64(0), I1(0)]))

    b.position_at_end(int_bb)
    value = b.call(capi(b, "PyLong_AsUnsignedLongLongMask"), [result], name="value")
    b.call(capi(b, "Py_DecRef"), [result])
    # All ones is also the error return; only then ask whether an exception is set.
    with b.if_then(b.icmp_unsigned("==", value, I64(-1)), likely=False):
        raised = b.icmp_unsigned("!=", b.call(capi(b, "PyErr_Occurred"), []), NULL)
        with b.if_then(raised, likely=False):
            b.ret(ir.Constant(BRIDGE_RESULT, [I64(0), I1(1)]))
    out = b.insert_value(ir.Constant(BRIDGE_RESULT, ir.Undefined), value, 0)
    b.ret(b.insert_value(out, I1(0), 1))

    b.position_at_end(fail)
    b.ret(ir.Constant(BRIDGE_RESULT, [I64(0), I1(1)]))


def emit_error_pending(builder: ir.IRBuilder) -> ir.Value:
    """Emit ``PyErr_Occurred() != NULL`` (an i1): after a BPF-to-BPF call returns, this tells a
    program that uses Python helpers whether a helper deeper down failed, so that it returns
    too. It is thread-correct (the exception lives in the thread state) and costs a few ns."""
    return builder.icmp_unsigned("!=", builder.call(capi(builder, "PyErr_Occurred"), []), NULL)


def make_python_bridge_ir(func: Callable, name: str = "bridge",
                          nargs: int = 5) -> tuple[str, PythonHelper]:
    """A standalone module whose exported ``i64 @<name>(i64 x5)`` calls ``func``.

    For tests and tools: on failure it returns 0 with the exception set, so enter it with
    ``make_caller(address, argtypes=(c_uint64,) * 5, holds_gil=True)``. Keep the returned
    :class:`PythonHelper` alive while the code is placed.
    """
    helper = PythonHelper(func, name=f"{name}.impl", nargs=nargs)
    module = ir.Module(name=f"pybpf.bridge.{name}")
    fn = ir.Function(module, ir.FunctionType(I64, [I64] * 5), name=name)
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    value, _failed = helper.call(b, fn.args)
    b.ret(value)
    return str(module), helper


# -- test_run driver -----------------------------------------------------------------------

DRIVER_SYMBOL = "pybpf_test_run"
DRIVER_CHECKED_SYMBOL = "pybpf_test_run_checked"


def build_driver_ir(ext=None) -> str:
    """IR for ``u64 pybpf_test_run(u64 fn, u64 ctx, u64 len, u64 repeat, u64 *out_ns)``.

    Calls ``fn(ctx, len)`` ``max(repeat, 1)`` times, stores the elapsed CLOCK_MONOTONIC
    nanoseconds in ``*out_ns`` and returns the last r0. ``pybpf_test_run_checked`` is the same
    loop that also stops as soon as a Python helper has raised (for programs entered with the
    GIL held). ``ext(module)`` (e.g. :class:`pybpf.jit.cgutils.Externs`): the per-process
    addresses (clock_gettime, the C API) become its external symbols.
    """
    module = ir.Module(name="pybpf.test_run")
    ext = ext(module) if ext is not None else None
    timespec = ir.LiteralStructType([I64, I64])
    clock_ty = ir.FunctionType(I32, [I32, PTR])
    prog_ty = ir.FunctionType(I64, [I64, I64])
    for symbol, checked in ((DRIVER_SYMBOL, False), (DRIVER_CHECKED_SYMBOL, True)):
        fn = ir.Function(module, ir.FunctionType(I64, [I64, I64, I64, I64, PTR]), name=symbol)
        fn.attributes.add("nounwind")
        fnaddr, ctx, length, repeat, out_ns = fn.args
        entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
        b = ir.IRBuilder(entry)
        if ext is not None:
            b.ext = ext
        t0 = b.alloca(timespec, name="t0")
        t1 = b.alloca(timespec, name="t1")
        clock = absolute_function(b, clock_ty, libc_address("clock_gettime"))
        prog = b.inttoptr(fnaddr, ir.PointerType(prog_ty), name="prog")
        n = b.select(b.icmp_unsigned("==", repeat, I64(0)), I64(1), repeat, name="n")
        b.call(clock, [I32(_CLOCK_MONOTONIC), t0])
        b.branch(loop)

        b.position_at_end(loop)
        i = b.phi(I64, name="i")
        i.add_incoming(I64(0), entry)
        r0 = b.call(prog, [ctx, length], name="r0")
        nxt = b.add(i, I64(1), name="next")
        more = b.icmp_unsigned("<", nxt, n)
        if checked:
            more = b.and_(more, b.not_(emit_error_pending(b)))
        i.add_incoming(nxt, b.block)
        b.cbranch(more, loop, done)

        b.position_at_end(done)
        b.call(clock, [I32(_CLOCK_MONOTONIC), t1])

        def field(ts, k):
            return b.load(b.gep(ts, [I32(0), I32(k)], inbounds=True), typ=I64)

        sec = b.sub(field(t1, 0), field(t0, 0))
        nsec = b.sub(field(t1, 1), field(t0, 1))
        b.store(b.add(b.mul(sec, I64(1_000_000_000)), nsec), out_ns)
        b.ret(r0)
    return str(module)


class TestRunDriver:
    """The placed test_run loop. ``run`` returns ``(last r0, total ns for all runs)``."""

    __test__ = False  # not a pytest class

    def __init__(self, allocation, symbols: dict[str, int]) -> None:
        self.allocation = allocation  # never freed: one per process
        base = allocation.address
        argtypes = (ctypes.c_uint64,) * 4 + (ctypes.POINTER(ctypes.c_uint64),)
        self._fast = make_caller(base + symbols[DRIVER_SYMBOL], ctypes.c_uint64, argtypes)
        self._checked = make_caller(base + symbols[DRIVER_CHECKED_SYMBOL], ctypes.c_uint64,
                                    argtypes, holds_gil=True)

    def run(self, fn_address: int, ctx: int = 0, length: int = 0, repeat: int = 1,
            python_helpers: bool = False) -> tuple[int, int]:
        """Run the program at ``fn_address`` ``repeat`` times; with ``python_helpers`` the GIL
        is held and a helper's exception stops the loop and is raised here."""
        ns = ctypes.c_uint64(0)
        call = self._checked if python_helpers else self._fast
        r0 = call(fn_address, ctx, length, repeat, ctypes.byref(ns))
        return r0, ns.value


# Allocation names of the native code pybpf itself keeps placed for the life of the process
# (the test_run driver, the Python-helper bridge); placement reports mark them as runtime.
DRIVER_ALLOCATION = "pybpf_test_run"
BRIDGE_ALLOCATION = "pybpf_pycall"
XCHG_ALLOCATION = "pybpf_atomic_xchg"   # jit/tiers.py: the entry slots' exchange
RUNTIME_ALLOCATIONS = frozenset({DRIVER_ALLOCATION, BRIDGE_ALLOCATION, XCHG_ALLOCATION})


def place(text: bytes, name: str, allocator=None):
    """Copy ``text`` into executable memory from ``allocator`` (the process's pack allocator by
    default) and return the allocation; the caller frees it."""
    if allocator is None:
        from pybpf.jit.execmem import default_allocator

        allocator = default_allocator()
    allocation = allocator.alloc(len(text), name)
    try:
        allocator.fill(allocation, text)
    except BaseException:
        allocator.free(allocation)
        raise
    return allocation


def place_image(image, name: str, allocator=None, resolve=None):
    """Place a linked image (:class:`pybpf.jit.link.LinkImage`): allocate, apply its fixups for
    that address with ``resolve`` giving the external symbols, copy; returns the allocation."""
    if allocator is None:
        from pybpf.jit.execmem import default_allocator

        allocator = default_allocator()
    allocation = allocator.alloc(len(image.data), name)
    try:
        allocator.fill(allocation, image.link(allocation.address, resolve))
    except BaseException:
        allocator.free(allocation)
        raise
    return allocation


_driver: TestRunDriver | None = None
_driver_lock = threading.Lock()


def get_driver(allocator=None) -> TestRunDriver:
    """The process's test_run driver, compiled and placed on first use."""
    global _driver
    with _driver_lock:
        if _driver is None:
            allocation, symbols = place_runtime_module(build_driver_ir, DRIVER_ALLOCATION,
                                                       allocator)
            _driver = TestRunDriver(allocation, symbols)
        return _driver


# The per-process addresses a runtime module may use, by path: what an entry's recipe names.
_RUNTIME_LIBC = ("clock_gettime",)


def _runtime_value(path) -> int | None:
    if path[:1] == ["capi"] and len(path) == 2 and path[1] in _CAPI:
        return c_api_address(path[1])
    if path[:1] == ["libc"] and len(path) == 2 and path[1] in _RUNTIME_LIBC:
        return libc_address(path[1])
    if path == ["none"]:
        return id(None)
    return None


def _runtime_paths() -> dict[int, list]:
    out = {id(None): ["none"]}
    out.update({libc_address(n): ["libc", n] for n in _RUNTIME_LIBC})
    out.update({c_api_address(n): ["capi", n] for n in _CAPI})
    return out


def place_runtime_module(build, name: str, allocator=None):
    """(allocation, symbols) of a module pybpf keeps placed for the life of the process (the
    test_run driver, the Python-call bridge ``name``), its code from the code cache once a
    process compiled it. ``build(ext)`` returns the module's IR with every per-process address
    an external symbol of ``ext(module)`` (the C API, ``None``, libc's clock_gettime), so the
    code is the same in every process. The IR is a function of pybpf's source, which the cache
    key covers (with the Python version: the code calls its C API): the key is the module's
    name, and a hit builds no IR. The entry's recipe names each symbol's value by path
    (``["capi", fn]``, ``["libc", fn]``, ``["none"]``); an entry whose recipe names anything
    else, or whose image does not link, is dropped and compiled again."""
    from pybpf.jit import cache
    from pybpf.jit.cgutils import Externs
    from pybpf.jit.codegen import compile_ir

    k = cache.key("", 2, pipeline=f"runtime-module:{name}")
    found = cache.get_load(k)
    if found is not None:
        image, record = found
        values = {sym: _runtime_value(path) for sym, path in record["recipe"]}
        if None not in values.values():
            try:
                return place_image(image, name, allocator, resolve=values), image.symbols
            except JITError:
                pass
        cache.reject(k)
    made = []

    def ext(module):
        made.append(Externs(module))
        return made[-1]
    text = build(ext)
    values = made[0].values if made else {}
    image = compile_ir(text, opt_level=2).image
    allocation = place_image(image, name, allocator, resolve=values)
    paths = _runtime_paths()
    recipe = [[sym, paths.get(v & ((1 << 64) - 1))] for sym, v in values.items()]
    if all(path is not None for _, path in recipe):
        cache.put(k, image, {"recipe": recipe, "needs_gil": False, "tail_entries": {}})
    return allocation, image.symbols


def _forget_driver_in_child() -> None:
    # The child gets a fresh pack allocator; do not rely on the parent's placement.
    global _driver, _driver_lock
    _driver, _driver_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_driver_in_child)
