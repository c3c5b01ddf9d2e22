"""The hostile-input audit of the command line (issue 12) as a test: every command with a
missing file, a directory, an empty file, random bytes, a truncated ELF, 100 MB of zeros,
the wrong ``--format``, an unknown option and out-of-range numbers exits 2 with one clear
line on stderr (an assembler error may add its source line and caret) within 10 s.

Before: 5 of the 118 cases hung (``disasm``/``verify``/``run``/``jit`` on 100 MB of zeros,
``packs --programs 1e20``) and 11 exited 0 (``test`` on empty, random or truncated input
reported "1 skipped"; negative or huge ``--insn-limit``, ``--mem-size``, ``--limit``).

The cases run in one child Python that calls ``pybpf.cli.main`` for each (a hang there is
stopped by an alarm after the budget and reported as such).
"""
from __future__ import annotations

import io
import json
import os
import random
import signal
import sys
import tempfile
import time

import pytest

from support import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_ASM = os.path.join(ROOT, "samples", "asm", "sum_bytes.s")
SAMPLE_ELF = os.path.join(ROOT, "samples", "c", "arena_list.o")
BUDGET = 10.0
FILE_COMMANDS = ("asm", "disasm", "verify", "run", "jit", "test")


def make_inputs(d: str) -> dict[str, str]:
    """The hostile inputs, as paths under ``d``."""
    paths = {"missing file": os.path.join(d, "no", "such.file"),
             "directory": os.path.join(d, "a_directory")}
    os.mkdir(paths["directory"])
    def put(name, data):
        paths[name] = os.path.join(d, name.replace(" ", "_"))
        with open(paths[name], "wb") as f:
            f.write(data)
    put("empty file", b"")
    put("random bytes", random.Random(12).randbytes(4096))
    with open(SAMPLE_ELF, "rb") as f:
        elf = f.read()
    put("truncated ELF", elf[:len(elf) // 2])
    paths["100 MB of zeros"] = os.path.join(d, "zeros")
    paths["a valid test"] = os.path.join(d, "valid.data")
    with open(paths["a valid test"], "w") as f:
        f.write("-- asm\nmov %r0, 1\nexit\n-- result\n0x1\n")
    with open(paths["100 MB of zeros"], "wb") as f:
        f.truncate(100 << 20)       # sparse: reading it is the test, writing it is not
    return paths


def cases(d: str) -> dict[str, list[str]]:
    inputs = make_inputs(d)
    valid_test = inputs.pop("a valid test")
    out = {}
    for cmd in FILE_COMMANDS:
        for what, path in inputs.items():
            out[f"{cmd} / {what}"] = [cmd, path]
        out[f"{cmd} / unknown option"] = [cmd, SAMPLE_ASM, "--frobnicate"]
        if cmd != "test":
            out[f"{cmd} / --format xyz"] = [cmd, SAMPLE_ASM, "--format", "xyz"]
            out[f"{cmd} / --format elf on text"] = [cmd, SAMPLE_ASM, "--format", "elf"]
    out["test / --format"] = ["test", SAMPLE_ASM, "--format", "elf"]
    for opt, values in (("--insn-limit", ("0", "-1", str(1 << 64), "1e20", "ten")),):
        for v in values:
            out[f"run {opt} {v}"] = ["run", SAMPLE_ASM, opt, v]
            out[f"test {opt} {v}"] = ["test", valid_test, opt, v]
    for v in ("-1", str(1 << 40)):
        out[f"verify --mem-size {v}"] = ["verify", SAMPLE_ASM, "--mem-size", v]
    for v in ("0", "-5", str(10 ** 12)):
        out[f"jit --limit {v}"] = ["jit", SAMPLE_ASM, "--limit", v]
        out[f"packs --limit {v}"] = ["packs", "--limit", v]
    for v in ("-1", "100000000000000000000", "1e20"):
        out[f"packs --programs {v}"] = ["packs", "--programs", v]
        out[f"packs --unload-every {v}"] = ["packs", "--unload-every", v]
    out["packs --seed -1"] = ["packs", "--seed", "-1"]
    out["jit -O 7"] = ["jit", SAMPLE_ASM, "-O", "7"]
    out["jit --cache bogus"] = ["jit", "--cache", "bogus"]
    out["bench / unknown option"] = ["bench", "--frobnicate"]
    out["bench --only nosuch"] = ["bench", "--only", "nosuch"]
    out["fuzz / unknown target"] = ["fuzz", "nosuch"]
    out["fuzz / unknown option"] = ["fuzz", "asm", "--frobnicate"]
    for v in ("0", "-1", "1e9", "nan", "inf", "ten"):
        out[f"fuzz --seconds {v}"] = ["fuzz", "asm", "--seconds", v]
    for v in ("-1", str(1 << 64)):
        out[f"fuzz --seed {v}"] = ["fuzz", "asm", "--seed", v]
    out["unknown command"] = ["frobnicate"]
    out["no command"] = []
    return out


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def child(names: list[str]) -> int:
    """Run each case through pybpf.cli.main in this process; print one JSON line each."""
    from pybpf.cli import main

    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as d:
        all_cases = cases(d)
        for name in names or list(all_cases):
            out, err = io.TextIOWrapper(io.BytesIO()), io.StringIO()
            saved = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = out, err
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, BUDGET + 5)
            try:
                rc = main(all_cases[name])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 2
            except _Timeout:
                rc = "hung"
            except BaseException as e:      # noqa: BLE001 -- report whatever escaped
                rc = f"raised {type(e).__name__}: {e}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                sys.stdout, sys.stderr = saved
            print(json.dumps({"case": name, "rc": rc, "seconds": time.perf_counter() - t0,
                              "stderr": err.getvalue()}), flush=True)
    return 0


def _ok(rec: dict) -> str | None:
    """Why the record breaks the contract, or None."""
    lines = rec["stderr"].splitlines()
    if rec["rc"] != 2:
        return f"exit {rec['rc']}"
    if rec["seconds"] > BUDGET:
        return f"took {rec['seconds']:.1f} s"
    if not lines or not lines[0].strip():
        return "no message"
    if "Traceback" in rec["stderr"]:
        return "traceback"
    caret = len(lines) == 3 and lines[2].strip() == "^"     # an assembler error's context
    if len(lines) != 1 and not caret:
        return f"{len(lines)} lines"
    return None


@pytest.fixture(scope="module")
def audit():
    proc = run_script(__file__, "child", timeout=1800)
    recs = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            recs[rec["case"]] = rec
    return recs, proc


with tempfile.TemporaryDirectory() as _d:
    CASE_NAMES = list(cases(_d))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_cli_input_exits_2_with_one_line(audit, name):
    recs, proc = audit
    rec = recs.get(name)
    assert rec is not None, f"the audit child died before {name}: {proc.stderr[-2000:]}"
    why = _ok(rec)
    assert why is None, f"{name}: {why}: {rec['stderr'][:500]!r}"


def test_every_command_is_audited():
    """Each subcommand the CLI has today appears in the audit (a new one must be added)."""
    import argparse

    from pybpf.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    audited = {argv[0] for argv in cases_argv() if argv}
    assert set(sub.choices) <= audited, sorted(set(sub.choices) - audited)


def cases_argv() -> list[list[str]]:
    with tempfile.TemporaryDirectory() as d:
        return list(cases(d).values())


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(sys.argv[2:]))
    print(__doc__)
