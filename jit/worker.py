"""The compile worker: LLVM IR text in, a linked x86-64 image out, in a separate process.

This is the only module of pybpf that imports ``llvmlite.binding``, and it does so lazily inside
:class:`Compiler`, so that :mod:`pybpf.jit.codegen` can import the framing helpers below without
loading LLVM. Two reasons keep LLVM out of the process that runs BPF code: importing
``llvmlite.binding`` leaves a writable+executable page behind (llvmlite creates ctypes callbacks
at import, and libffi maps a W+X trampoline page for them), and an LLVM fatal error calls
``abort()`` on whatever process it happens in.

Run as ``python -m pybpf.jit.worker``. The protocol is strict request/response over the
inherited stdin/stdout pipes; each frame is an 8-byte little-endian length and a pickle of a
dict. The worker first sends ``{"ok": True, "ready": True, ...}`` once LLVM is initialised, then
for each request ``{"op": "compile", "ir": str, "opt": int, "want_ir": bool, "want_asm": bool}``
answers ``{"ok": True, "image": LinkImage, "ir_after": str|None, "asm": str|None,
"times": {step: seconds}}`` (:class:`pybpf.jit.link.LinkImage`: the laid-out, position-independent
code and read-only data with what placement must still fix up) or ``{"ok": False, "error": str}``. It exits when stdin reaches end
of file (the parent closed it or died). ``PYBPF_JIT_TEST_HOOKS=1`` enables ``{"op": "_abort"}``,
which crashes the worker the way an LLVM fatal error would, and ``{"op": "_sleep", "seconds":
s}``, a compile that hangs.
"""
from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import time

_LEN = struct.Struct("<Q")


# -- framing (shared with codegen.py) ------------------------------------------------------

def encode_frame(message: dict) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(payload)) + payload


def _read_exact_blocking(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the compiler --------------------------------------------------------------------------

class Compiler:
    """Parse, verify, optimise and emit one module at a time; target machines are cached."""

    def __init__(self) -> None:
        import llvmlite.binding as llvm  # the one place pybpf loads LLVM

        # llvm.initialize() raises in llvmlite >= 0.45: the core is initialised on load.
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        if os.environ.get("PYBPF_JIT_FAST_ISEL", "") not in ("", "0"):
            # FastISel instead of SelectionDAG at every level: about 30% less code generation
            # time for somewhat larger, slower code. A process-wide LLVM option.
            llvm.set_option("pybpf-jit-worker", "-fast-isel")
        self.llvm = llvm
        self.triple = llvm.get_process_triple()
        self.target = llvm.Target.from_triple(self.triple)
        cpu = os.environ.get("PYBPF_JIT_CPU", "host")
        if cpu == "host":
            # The code runs on this machine (the parent of this worker), so tune for it.
            self.cpu = llvm.get_host_cpu_name()
            try:
                self.features = llvm.get_host_cpu_features().flatten()
            except RuntimeError:  # some hypervisors hide CPUID leaves LLVM asks for
                self.features = ""
        else:
            self.cpu, self.features = ("" if cpu == "generic" else cpu), ""
        self._machines: dict[int, tuple] = {}
        self._garbage: list = []
        self.llvm_version = ".".join(map(str, llvm.llvm_version_info))

    def machine(self, opt: int):
        return self._machine(opt)[0]

    def _machine(self, opt: int) -> tuple:
        """(target machine, its triple, its data layout string, pipeline tuning options)."""
        entry = self._machines.get(opt)
        if entry is None:
            # reloc="pic" + small code model: references inside the object are RIP-relative
            # (jump tables hold 32-bit differences), external symbols go through GOT slots
            # and calls through PLT32; pybpf.jit.link applies all of them. Function sections
            # stay off (LLVM's default).
            tm = self.target.create_target_machine(
                cpu=self.cpu, features=self.features, opt=opt, reloc="pic", codemodel="small")
            pto = self.llvm.create_pipeline_tuning_options(speed_level=opt) if opt else None
            entry = self._machines[opt] = (tm, tm.triple, str(tm.target_data), pto)
        return entry

    def compile(self, ir_text: str, opt: int = 2, want_ir: bool = False,
                want_asm: bool = False) -> dict:
        """Compile ``ir_text``; raises ``JITError`` for bad IR or a refused object.

        The reply's ``times`` gives the seconds spent in each step (parse, verify, opt, emit,
        extract) and ``cpu``, this thread's CPU time for all of them."""
        from pybpf.errors import JITError
        from pybpf.jit.link import link_object

        llvm = self.llvm
        self.collect()
        if not 0 <= opt <= 3:
            raise JITError(f"optimisation level must be 0..3, not {opt}")
        tm, triple, layout, pto = self._machine(opt)
        clock = time.perf_counter
        cpu0 = time.thread_time()
        t0 = clock()
        try:
            mod = llvm.parse_assembly(ir_text)
        except RuntimeError as exc:
            raise JITError(f"LLVM IR parse error: {str(exc).strip()}") from None
        mod.triple = triple
        mod.data_layout = layout
        t1 = clock()
        try:
            # Unverified IR can crash LLVM's passes; a verifier message is far more useful.
            # (About 1% of a compile, so it always runs.)
            mod.verify()
        except RuntimeError as exc:
            raise JITError(f"LLVM IR verification failed: {str(exc).strip()}") from None
        t2 = clock()
        if opt > 0:
            # The real -O<opt> pipeline (buildPerModuleDefaultPipeline). A pass builder owns
            # the analysis caches, which are keyed by IR object addresses; a fresh one per
            # module (10 us) rules out stale results for a new module at a reused address.
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
        t3 = clock()
        ir_after = str(mod) if want_ir else None
        # Nothing ever links against this code. Made local after optimisation (so that entry
        # points survived it), calls between functions are resolved by the assembler in place;
        # a call to a global function would be a PLT32 relocation even at -O2.
        for fn in mod.functions:
            if not fn.is_declaration and fn.linkage.name == "external":
                fn.linkage = "internal"
        obj = tm.emit_object(mod)
        t4 = clock()
        image = link_object(obj)
        t5 = clock()
        asm = tm.emit_assembly(mod) if want_asm else None
        # Freeing the module and the pass builder's analyses waits until the reply is out.
        self._garbage.append((mod, pb if opt > 0 else None))
        return {
            "image": image,
            "ir_after": ir_after,
            "asm": asm,
            "times": {"parse": t1 - t0, "verify": t2 - t1, "opt": t3 - t2, "emit": t4 - t3,
                      "extract": t5 - t4, "cpu": time.thread_time() - cpu0},
        }

    def collect(self) -> None:
        """Free what the last compiles left (call once their replies are sent)."""
        self._garbage.clear()


# -- the serving loop ----------------------------------------------------------------------

def _handle(compiler: Compiler, msg: dict) -> dict:
    op = msg.get("op")
    if op == "compile":
        try:
            out = compiler.compile(msg["ir"], msg.get("opt", 2), msg.get("want_ir", False),
                                   msg.get("want_asm", False))
        except Exception as exc:  # every failure goes back as a message; JITError keeps its text
            from pybpf.errors import JITError
            text = str(exc) if isinstance(exc, JITError) else f"{type(exc).__name__}: {exc}"
            return {"ok": False, "error": text}
        out["ok"] = True
        return out
    if op == "ping":
        return {"ok": True, "pid": os.getpid()}
    if os.environ.get("PYBPF_JIT_TEST_HOOKS") == "1":
        if op == "_abort":  # what an LLVM fatal error does
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for a test
            os.abort()
        if op == "_sleep":  # a compile that never ends
            time.sleep(msg.get("seconds", 3600))
            return {"ok": True}
    return {"ok": False, "error": f"unknown worker request {op!r}"}


def main() -> None:
    started = time.perf_counter()
    # Ctrl-C in a terminal reaches the whole process group; the parent decides what a
    # KeyboardInterrupt means for a compile (it kills the worker mid-request).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Keep the protocol pipes private: anything LLVM or Python prints goes to stderr, and
    # nothing can read our requests by accident.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    try:
        compiler = Compiler()
        # Importing these now keeps their cost out of the first compile's latency.
        import pybpf.jit.link  # noqa: F401
    except Exception as exc:
        _write_all(fd_out, encode_frame({"ok": False, "error": f"worker start failed: "
                                                               f"{type(exc).__name__}: {exc}"}))
        return
    _write_all(fd_out, encode_frame({"ok": True, "ready": True, "pid": os.getpid(),
                                     "llvm": compiler.llvm_version,
                                     "startup_s": time.perf_counter() - started}))
    while True:
        head = _read_exact_blocking(fd_in, _LEN.size)
        if head is None:
            return
        payload = _read_exact_blocking(fd_in, _LEN.unpack(head)[0])
        if payload is None:
            return
        reply = _handle(compiler, pickle.loads(payload))
        _write_all(fd_out, encode_frame(reply))
        compiler.collect()


if __name__ == "__main__":
    main()
