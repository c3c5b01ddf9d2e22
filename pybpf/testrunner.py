"""Runs bpf_conformance / uBPF ``.data`` files against pybpf's engines.

Each file is assembled (or decoded from its raw section), loaded with the uBPF/conformance
helper set, run with its ``mem`` on the chosen engine(s) and compared with ``-- result`` or
``-- error``/``-- error pattern``. ``both`` runs the interpreter and the JIT and also compares
them with each other. ``any_error`` lets an expected-error file pass whenever pybpf refuses the
program at the stage the file implies, whatever the message (for suites written against other
runtimes' wording).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .datafile import DataFile, parse_data_file
from .errors import AsmError, BPFError, DecodeError, VerifierError

PASS, FAIL, SKIP = "pass", "fail", "skip"
_LOAD_WORDS = re.compile(r"load|invalid|unknown|assembl|decode|verif|reject", re.I)
_RUN_WORDS = re.compile(r"at PC|out of bounds|runtime|uBPF error|memory", re.I)


@dataclass
class Outcome:
    path: str
    status: str
    message: str = ""


def collect(paths) -> list[Path]:
    """The .data files named, directories expanded (sorted), in command-line order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.data")))
        else:
            files.append(p)
    return files


def check_test_file(path) -> None:
    """InputError unless ``path`` reads as a .data test file (it has an ``-- asm`` or
    ``-- raw`` section): the command line refuses a named file that is not a test at all
    rather than report it skipped."""
    from .inputs import InputError
    try:
        df = parse_data_file(path)
    except BPFError as e:
        raise InputError(f"{path}: not a readable .data test file: {e}") from None
    if df.asm is None and df.raw is None:
        raise InputError(f"{path}: not a .data test file (no '-- asm' or '-- raw' section)")


def _expected_stage(df: DataFile) -> str:
    """'load' or 'run' or 'any': where the file's expected error should happen."""
    text = df.error or df.error_pattern or ""
    if text == "" or _LOAD_WORDS.search(text):
        return "load" if text or df.result is None else "any"
    if _RUN_WORDS.search(text):
        return "run"
    return "any"


def _message_matches(df: DataFile, message: str) -> bool:
    if df.error_pattern is not None:
        return re.search(df.error_pattern, message) is not None
    return df.error == "" or message.strip() == df.error


def _build(df: DataFile):
    from .asm import assemble
    from .program import Program
    if df.raw is not None:
        return Program.from_bytes(df.raw, name=Path(df.path).stem)
    return assemble(df.asm, filename=df.path)


def _run(prog, mem, engine: str, insn_limit: int | None, verify=False) -> int:
    from .runtime.helpers import ubpf_test_helpers
    from .vm import VM
    vm = VM(helpers=ubpf_test_helpers())
    kwargs = {"insn_limit": insn_limit} if insn_limit else {}
    # .data suites test instruction semantics with programs written for runtimes without a
    # verifier: structural checks by default (the interpreter checks memory at run time; the
    # JIT runs them as trusted input), the whole verifier with verify=True (--verify).
    lp = vm.load(prog, prog_type="mem", engine=engine,
                 verify=True if verify else "structural", **kwargs)
    try:
        return lp.run(mem=mem)
    finally:
        lp.close()


def run_file(path, engine: str = "interp", any_error: bool = False,
             insn_limit: int | None = None, verify: bool = False) -> Outcome:
    """Run one .data file; never raises for a bad file (it becomes a FAIL outcome)."""
    path = str(path)
    try:
        df = parse_data_file(path)
    except BPFError as e:
        return Outcome(path, FAIL, f"cannot read: {e}")
    if df.unknown:
        return Outcome(path, SKIP, "unknown section(s): " + ", ".join(f"'-- {s}'" for s in df.unknown))
    if df.asm is None and df.raw is None:
        return Outcome(path, SKIP, "no asm or raw section")
    expects_error = df.error is not None or df.error_pattern is not None
    if not expects_error and df.result is None:
        return Outcome(path, SKIP, "nothing to check (no result or error section)")
    if engine == "jit" and df.has("no jit"):
        return Outcome(path, SKIP, "no jit: " + " ".join(df.body("no jit")).strip())
    stage = _expected_stage(df) if expects_error else None

    def refused(at: str, err: BaseException) -> Outcome:
        msg = str(err).splitlines()[0]
        if not expects_error:
            return Outcome(path, FAIL, f"{at} failed: {msg}")
        if any_error:
            if stage in (at, "any"):
                return Outcome(path, PASS)
            return Outcome(path, FAIL, f"refused at {at} but the file implies {stage}: {msg}")
        if _message_matches(df, getattr(err, "message", msg)) or _message_matches(df, msg):
            return Outcome(path, PASS)
        want = df.error if df.error_pattern is None else f"/{df.error_pattern}/"
        return Outcome(path, FAIL, f"{at} error {msg!r}, expected {want!r}")

    try:
        prog = _build(df)
    except (AsmError, DecodeError) as e:
        return refused("load", e)
    except BPFError as e:
        return refused("load", e)
    engines = ["interp", "jit"] if engine == "both" else [engine]
    if df.has("no jit") and "jit" in engines and len(engines) > 1:
        engines.remove("jit")  # the file asks not to be JIT-compiled; 'both' checks the interpreter
    results = {}
    for eng in engines:
        try:
            results[eng] = _run(prog, df.mem, eng, insn_limit, verify)
        except (VerifierError, DecodeError) as e:
            return refused("load", e)
        except BPFError as e:
            if "not available" in str(e).lower():
                return Outcome(path, SKIP, f"{eng}: {e}")
            return refused("run", e)
    if expects_error:
        return Outcome(path, FAIL, f"expected error {df.error or df.error_pattern!r}, "
                                   f"got r0=0x{next(iter(results.values())):x}")
    if len(set(results.values())) > 1:
        return Outcome(path, FAIL, "engines differ: " + ", ".join(f"{k}=0x{v:x}" for k, v in results.items()))
    got = next(iter(results.values()))
    if got != df.result:
        return Outcome(path, FAIL, f"r0=0x{got:x}, expected 0x{df.result:x}")
    return Outcome(path, PASS)


def summary_line(outcomes) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in (PASS, FAIL, SKIP)}
    return f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"
