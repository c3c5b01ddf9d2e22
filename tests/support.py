"""What the tests share: assembling with helpers named, running a scenario on both engines, a
test packet, the sample drivers, the process's RSS, where the bpf_conformance suite is, and the
one child-process harness for crash-prone tests (JIT'd code runs unchecked, arenas and fuzzers
can fault): ``run_code``/``run_script`` start a child Python that sees the project and tests/;
``start_code`` without waiting; ``in_child`` runs a test's body there; ``run_child`` + ``assert_case_passed`` run a module's
``case_*`` functions there, one JSON line per case, so a crash fails only the cases it did not
report.

Imported as ``support`` (tests/ is on sys.path under pytest and when a test file runs as a
script)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

import pybpf
from pybpf.helper_names import HELPER_IDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
SAMPLES = os.path.join(ROOT, "samples")
M64 = (1 << 64) - 1
ENGINES = ("interp", "jit")


def asm(text: str):
    """Assemble; helper calls may be written by name (``call bpf_map_lookup_elem`` ->
    ``call 1``; kfunc names stay names)."""
    return pybpf.assemble(re.sub(r"call bpf_(\w+)",
                                 lambda m: f"call {HELPER_IDS.get(m[1], m[0][5:])}", text))


def both(fn):
    """Run ``fn(engine)`` on each engine; the results must be equal (returns the JIT's)."""
    results = {engine: fn(engine) for engine in ENGINES}
    assert results["interp"] == results["jit"], results
    return results["jit"]


def frame(ethertype: int = 0x0800, proto: int = 17, payload: bytes = bytes(8)) -> bytes:
    """An Ethernet frame with an IPv4 header (10.0.0.1 -> 10.0.0.2) and ``payload``."""
    eth = bytes.fromhex("0a0b0c0d0e0f" "010203040506") + struct.pack(">H", ethertype)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return eth + ip + payload


# An skb program reading the packet with the legacy loads (r6 = the __sk_buff, as the kernel
# wants): r0 = the EtherType << 8 | byte 23 (the IP protocol of a frame()); a packet too short for
# byte 23 ends it with 0, as the kernel's ld_abs does. The tail-call tests call it as a target.
LDABS_TARGET = """
r6 = r1
r0 = *(u8 *)skb[23]
r7 = r0
r8 = 10
r0 = *(u16 *)skb[r8 + 2]
r0 <<= 8
r0 |= r7
exit
"""


def sample_driver(name: str):
    """The driver module of a sample (``samples/<name>/run.py``)."""
    spec = importlib.util.spec_from_file_location(f"sample_{name}",
                                                  os.path.join(SAMPLES, name, "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) * 1024


# -- the bpf_conformance suite -------------------------------------------------------------------
# The suite is someone else's work and stays outside the project: a checkout of
# https://github.com/Alan-Jowett/bpf_conformance (its tests/ and negative/ folders). Tests find it
# through --conformance-dir (conftest.py), else PYBPF_CONFORMANCE, else the test configuration's
# default: ../shared/conformance beside the project, where CI keeps it.
CONFORMANCE_ENV = "PYBPF_CONFORMANCE"
CONFORMANCE_DEFAULT = os.path.join(os.path.dirname(ROOT), "shared", "conformance")
CONFORMANCE_URL = "https://github.com/Alan-Jowett/bpf_conformance"
_conformance_option: str | None = None


def set_conformance_dir(path: str | None) -> None:
    """(conftest) The --conformance-dir option, which wins over the environment."""
    global _conformance_option
    _conformance_option = path


def conformance_dir() -> Path:
    """Where the suite should be (it may be absent: see :func:`conformance_missing`)."""
    where = _conformance_option or os.environ.get(CONFORMANCE_ENV) or CONFORMANCE_DEFAULT
    return Path(where).expanduser().resolve()


def conformance_missing() -> str | None:
    """None when the suite is there, else the one reason every test that reads it skips with."""
    d = conformance_dir()
    if any((d / "tests").glob("*.data")):
        return None
    return (f"bpf_conformance suite not found at {d} (no tests/*.data): point --conformance-dir "
            f"or {CONFORMANCE_ENV} at a checkout of {CONFORMANCE_URL}")


def require_conformance() -> Path:
    """The suite's directory; skips the calling test when it is absent."""
    why = conformance_missing()
    if why:
        import pytest
        pytest.skip(why)
    return conformance_dir()


def conformance_files(sub: str = "tests", pattern: str = "*.data") -> list[Path]:
    """The suite's files under ``sub`` (sorted; empty when the suite is absent)."""
    return [] if conformance_missing() else sorted((conformance_dir() / sub).glob(pattern))


def conformance_params(sub: str = "tests", pattern: str = "*.data") -> list:
    """:func:`conformance_files` for ``parametrize``; when the suite is absent, one parameter
    that skips with the reason (not pytest's anonymous "got empty parameter set")."""
    import pytest
    why = conformance_missing()
    if why:
        return [pytest.param(None, id="no-conformance-suite", marks=pytest.mark.skip(reason=why))]
    return conformance_files(sub, pattern)


# -- the child-process harness ------------------------------------------------------------------

def child_env(env: dict | None = None) -> dict:
    """The environment of a child Python: this one, with the project and tests/ importable,
    changed by ``env`` (a value of None removes the variable)."""
    path = os.pathsep.join(p for p in (ROOT, TESTS, os.environ.get("PYTHONPATH", "")) if p)
    out = dict(os.environ, PYTHONPATH=path)
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def run_code(code: str, *args: str, timeout: float = 120, env: dict | None = None,
             cwd: str | None = None) -> subprocess.CompletedProcess:
    """``python -c <code> args...`` (dedented) in a child; text output captured; ``env`` as in
    :func:`child_env`."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, env=child_env(env),
                          cwd=cwd)


def start_code(code: str, env: dict | None = None) -> subprocess.Popen:
    """:func:`run_code` without waiting (for watching the child while it runs)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=child_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_script(path: str, *args: str, timeout: float = 900, env: dict | None = None,
               cwd: str | None = None) -> subprocess.CompletedProcess:
    """``python <path> args...`` in a child; text output captured."""
    return subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=child_env(env), cwd=cwd)


def in_child(fn):
    """Decorator: run a test body in a child process, so a fault kills the child, not pytest.
    The body takes no arguments and lives at module level of a test module under tests/."""
    def test():
        r = run_code(f"import {fn.__module__} as t; t.{fn.__name__}.body(); print('child ok')")
        assert r.returncode == 0 and r.stdout.endswith("child ok\n"), \
            (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    test.__name__, test.__doc__, test.body = fn.__name__, fn.__doc__, fn
    test.__module__ = fn.__module__
    return test


def cases_of(namespace: dict) -> dict:
    """The ``case_*`` functions of a test module's globals, by name without the prefix."""
    return {name[5:]: fn for name, fn in namespace.items() if name.startswith("case_")}


def child(cases: dict, names: list[str], detail=lambda d: d) -> int:
    """(child) Run the named cases, printing one JSON line each: ``ok`` and ``detail(result)``,
    or the traceback."""
    for name in names:
        try:
            out = detail(cases[name]())
            print(json.dumps({"case": name, "ok": True, "detail": out}), flush=True)
        except Exception:
            print(json.dumps({"case": name, "ok": False, "error": traceback.format_exc()}),
                  flush=True)
    return 0


def run_child(path: str, cases: dict) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``python <path> child <every case>``; returns ({case: record}, the process)."""
    proc = run_script(path, "child", *cases)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            results[rec["case"]] = rec
    return results, proc


def assert_case_passed(child_results: tuple, name: str) -> None:
    """Fail unless the child of :func:`run_child` reported case ``name`` as passed."""
    results, proc = child_results
    rec = results.get(name)
    assert rec is not None, (f"the child died before reporting {name} (exit {proc.returncode})"
                             f"\n{proc.stderr[-3000:]}")
    assert rec["ok"], rec["error"]


def child_tests(namespace: dict, detail=lambda d: d, test_name: str = "test_case",
                marks=()) -> dict:
    """The tail of a test module whose ``case_*`` functions run in a child process: call it
    last, ``child_tests(globals(), detail)``. It defines ``CASES``, the module-scoped
    ``child_results`` fixture (one child runs every case) and ``test_name``, a test per case;
    run as ``python <module> child [case...]`` (what :func:`run_child` starts), it runs the cases
    and exits with :func:`child`'s status, ``detail(result)`` giving each case's reported detail.
    ``marks`` (e.g. ``[pytest.mark.jit]``) decorate the per-case test.
    """
    if "CASES" in namespace:      # it would be replaced, silently
        raise RuntimeError("child_tests defines CASES; the module already has one")
    cases = cases_of(namespace)
    path = namespace["__file__"]

    @pytest.fixture(scope="module")
    def child_results():
        return run_child(path, cases)

    @pytest.mark.parametrize("name", list(cases))
    def test(child_results, name):
        assert_case_passed(child_results, name)

    for mark in marks:
        test = mark(test)
    test.__name__ = test.__qualname__ = test_name
    namespace.update({"CASES": cases, "child_results": child_results, test_name: test})
    if namespace.get("__name__") == "__main__":
        if len(sys.argv) >= 2 and sys.argv[1] == "child":
            sys.exit(child(cases, sys.argv[2:] or list(cases), detail))
        print(namespace.get("__doc__"))
    return cases


# --- verdicts of one program of a committed object: pybpf's and the running kernel's -------------
def pybpf_verdict(path: str, name: str) -> tuple[str, str, str]:
    """("accept"|"reject", errno name, message) of pybpf's verifier on program ``name``."""
    import errno
    obj = pybpf.load_elf(path)
    try:
        obj.vm.verify(obj.programs[name])
    except pybpf.VerifierError as e:
        return "reject", errno.errorcode.get(e.errno, str(e.errno)), e.message
    finally:
        obj.vm.close()
    return "accept", "", ""


def kernel_verdict(path: str, name: str) -> tuple[str, str, str]:
    """The same for the running kernel (its log's last line before the "processed" line)."""
    import kernel_bpf
    from pybpf.elf import parse_object
    obj = parse_object(path)
    ko = kernel_bpf.KernelObject(obj)
    try:
        ko.load(obj.programs[name])
    except kernel_bpf.KernelError as e:
        lines = [ln for ln in e.log.strip().splitlines() if not ln.startswith("processed ")]
        return "reject", kernel_bpf.errno_name(e.errno), lines[-1] if lines else ""
    finally:
        ko.close()
    return "accept", "", ""


def verdict_record_tests(namespace: dict, path: str, expected: dict, *kernel_needs: str) -> None:
    """Define, in a test module, the three tests of a recorded-verdicts object: every program of
    ``path`` has a record in ``expected`` (name -> (verdict, errno name, message)), pybpf's
    verifier says what is recorded, and so does the running kernel (``kernel_needs`` are
    :func:`kernel_probe.require_kernel` features)."""
    from kernel_probe import require_kernel

    def test_every_fail_program_has_a_record():
        from pybpf.elf import parse_object
        assert set(parse_object(path).programs) == set(expected)

    @pytest.mark.parametrize("name", sorted(expected))
    def test_pybpf_verifier_says_what_the_kernel_said(name):
        assert pybpf_verdict(path, name) == expected[name]

    @pytest.mark.kernel
    @pytest.mark.parametrize("name", sorted(expected))
    def test_records_match_the_running_kernel(name):
        require_kernel(*kernel_needs)
        assert kernel_verdict(path, name) == expected[name]

    for fn in (test_every_fail_program_has_a_record, test_pybpf_verifier_says_what_the_kernel_said,
               test_records_match_the_running_kernel):
        namespace[fn.__name__] = fn


# --- hostile programs run without the verifier (child-process cases) ------------------------------
def run_unverified_syscall(text: str, engine: str):
    """r0 of ``text`` loaded with verify=False as a syscall program and run on a 64-byte ctx."""
    vm = pybpf.VM()
    lp = vm.load(pybpf.assemble(text), prog_type="syscall", engine=engine, verify=False)
    try:
        return lp.run(ctx=bytearray(64))
    finally:
        vm.close()


def refused_unverified(text: str, engine: str, exc_name: str, match: str) -> str:
    """:func:`run_unverified_syscall` must raise ``pybpf.<exc_name>`` matching ``match``."""
    with pytest.raises(getattr(pybpf, exc_name), match=match):
        run_unverified_syscall(text, engine)
    return "refused"
