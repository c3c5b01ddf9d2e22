"""The fuzzers (pybpf/fuzz.py) in CI: a short run of every target, then every saved failing
input (tests/fuzz/corpus/*.json, written by ``pybpf fuzz TARGET --save tests/fuzz/corpus``)
replayed as a regression test. Each case runs in a worker subprocess with a time limit, so a
signal or a hang fails the case, not the test session (the saved inputs share one worker). ``PYBPF_FUZZ_SECONDS`` sets the run per
target (default 4 s)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pybpf import fuzz

SECONDS = float(os.environ.get("PYBPF_FUZZ_SECONDS", "4"))
CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.json"))


# What a valid input's outcome starts with, per target whose generator is structure-aware: a
# fuzzer whose inputs are nearly all refused tests only the error paths (before
# pybpf/fuzz_programs.py, 3.6% of asm and 1.6% of decode inputs were valid; now about half are).
VALID = {"asm": "assembled", "decode": "decoded", "elf": "parsed"}


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_short_fuzz_run_finds_nothing(target):
    r = fuzz.fuzz(target, SECONDS, seed=1)
    print(fuzz.format_report(r))
    assert r["cases"] > 0
    assert r["failures"] == 0, fuzz.format_report(r)
    if target in VALID and r["cases"] >= 40:
        valid = sum(n for k, n in r["results"].items() if k.startswith(VALID[target]))
        assert valid >= 0.3 * r["cases"], fuzz.format_report(r)


@pytest.mark.parametrize("target", ["asm", "decode"])
def test_round_trip_is_checked(target, monkeypatch):
    """The asm and decode targets compare a listing's assembly with the program: an assembler
    that read every immediate one too high would fail them."""
    import pybpf.asm
    from pybpf.disasm import disassemble
    from pybpf.insn import encode, make
    from pybpf.program import Program
    real = pybpf.asm.assemble

    def off_by_one(text, syntax="auto", **kw):
        p = real(text, syntax=syntax, **kw)
        p.insns[0] = p.insns[0]._replace(imm=p.insns[0].imm + 1)
        return p

    raw = encode(make("mov64_imm", 0, imm=5) + make("exit"))
    case = {"hex": raw.hex()} if target == "decode" else \
        {"text": disassemble(Program.from_bytes(raw), syntax="ubpf"), "syntax": "ubpf",
         "mutations": 0}
    assert fuzz.run_case(target, case) == {"ok": True, "result": VALID[target]}
    monkeypatch.setattr(pybpf.asm, "assemble", off_by_one)
    out = fuzz.run_case(target, case)
    assert not out["ok"] and "assembles to other bytes" in out["message"], out


@pytest.mark.parametrize("path", CORPUS or [pytest.param(None, marks=pytest.mark.skip(
    reason="tests/fuzz/corpus is empty: no fuzzer has saved a failing input yet"))],
    ids=[p.stem for p in CORPUS] or ["no-saved-inputs"])
def test_saved_failure_stays_fixed(path, replay_worker):
    rec = json.loads(path.read_text())
    out = replay_worker.ask(rec["target"], rec["case"], fuzz.CASE_BUDGET)
    assert out["ok"], f"{path.name} (first seen as: {rec['message']}): {out['message']}"


def test_address_dependent_program_is_not_compared_in_a_reused_worker(replay_worker):
    """helpers-b3718a8f2e4c (the helpers target's 10-minute run, seed 14) passes the stack's
    address as bpf_l3_csum_replace's ``to``: the checksum it writes depends on the address,
    which differs between the engines. Alone the poisoned-stack rerun caught that; in a reused
    worker the rerun's stack landed where the first run's had been, so the engines were
    compared and 'differed'. The rerun's stack now never has the first run's address: the
    case passes however often one worker runs it."""
    rec = json.loads((Path(__file__).parent / "corpus" / "helpers-b3718a8f2e4c.json").read_text())
    for _ in range(3):
        out = replay_worker.ask(rec["target"], rec["case"], fuzz.CASE_BUDGET)
        assert out["ok"], out["message"]
        assert "not compared" in out["result"], out["result"]


@pytest.mark.parametrize("code, wall, why", [("while True: pass", 30.0, "cpu"),
                                             ("import time; time.sleep(60)", 0.5, "wall")])
def test_a_case_budget_counts_cpu_time_with_a_wall_clock_backstop(code, wall, why):
    """A worker that spins past its CPU budget, or sits without running past the wall-clock
    limit (a deadlock), is a hang; a loaded machine that only slows a worker is not."""
    import subprocess
    import sys
    import time
    w = object.__new__(fuzz._Worker)
    w.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        line, got = w._read_line(0.1, wall)
        assert (line, got) == (None, why)
        assert time.monotonic() - start < wall + 2
    finally:
        w.kill()


class _Replayer:
    """One worker subprocess for every saved input (starting one costs ~1 s of CI); a worker
    that dies or hangs is replaced before the next input."""

    def __init__(self):
        self.worker = None

    def ask(self, target, case, budget):
        if self.worker is None or not self.worker.alive():
            self.worker = fuzz._Worker()
        return self.worker.ask(target, case, budget)


@pytest.fixture(scope="module")
def replay_worker():
    r = _Replayer()
    yield r
    if r.worker is not None:
        r.worker.close()
