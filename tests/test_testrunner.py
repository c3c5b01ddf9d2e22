"""The .data runner: expected results and errors, --any-error, skips with reasons, includes."""
import subprocess
import sys

import pytest

from pybpf.testrunner import FAIL, PASS, SKIP, run_file, summary_line


def write(tmp_path, text, name="t.data"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,status", [
    ("-- asm\nmov %r0, 7\nexit\n-- result\n0x7\n", PASS),
    ("-- asm\nmov %r0, 7\nexit\n-- result\n8\n", FAIL),
    ("-- raw\n0x00000007000000b7\n0x0000000000000095\n-- result\n7\n", PASS),
    ("-- asm\nldxw %r0, [%r1+0]\nexit\n-- mem\n00: 01 00 00 00\n-- result\n1\n", PASS),
    ("-- asm\nexit\n-- frobnicate\nx\n-- result\n0\n", SKIP),
    ("-- asm\nmov %r0, 1\nexit\n-- description\nsays what it does\n-- result\n1\n", PASS),
    # a runtime fault where an error is expected: its message must match the pattern
    ("-- asm\nldxdw %r0, [%r1+64]\nexit\n-- mem\n00\n-- error pattern\ninvalid read of 8 bytes\n", PASS),
    ("-- asm\nldxdw %r0, [%r1+64]\nexit\n-- mem\n00\n-- error pattern\nsomething else\n", FAIL),
    # the decoder refuses a reserved field: an empty error means "must be rejected"
    ("-- raw\n07 10 00 00 01 00 00 00\n95 00 00 00 00 00 00 00\n-- error\n", PASS),
    ("-- asm\nmov %r0, 1\nexit\n-- error\n\n", FAIL),       # accepted although it must be refused
])
def test_outcomes(tmp_path, text, status):
    o = run_file(write(tmp_path, text))
    assert o.status == status, o.message


def test_any_error_accepts_other_wording_at_the_implied_stage(tmp_path):
    f = write(tmp_path, "-- asm\nldxq %r0, %r1\nexit\n-- error\nFailed to load code: bad mnemonic\n")
    assert run_file(f).status == FAIL                       # our wording differs
    assert run_file(f, any_error=True).status == PASS       # refused while loading: fine
    g = write(tmp_path, "-- asm\nmov %r0, 1\nexit\n-- error\nuBPF error: out of bounds at PC 0\n", "g.data")
    assert run_file(g, any_error=True).status == FAIL       # nothing refused it at all


def test_no_jit_section(tmp_path):
    f = write(tmp_path, "-- asm\nmov %r0, 3\nexit\n-- no jit\nnot for the JIT\n-- result\n3\n")
    assert run_file(f, engine="jit").status == SKIP
    assert run_file(f, engine="both").status == PASS


def test_asm_include(tmp_path):
    (tmp_path / "prog.s").write_text("mov %r0, 9\nexit\n")
    f = write(tmp_path, "-- asm @ prog.s\n-- result\n9\n")
    assert run_file(f).status == PASS


def test_cli_prints_failures_skips_and_summary(tmp_path):
    write(tmp_path, "-- asm\nmov %r0, 1\nexit\n-- result\n1\n", "a.data")
    write(tmp_path, "-- asm\nmov %r0, 1\nexit\n-- result\n2\n", "b.data")
    write(tmp_path, "-- asm\nexit\n-- pyelf\nx = 1\n-- result\n0\n", "c.data")
    p = subprocess.run([sys.executable, "-m", "pybpf", "test", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1
    out = p.stdout.splitlines()
    assert any(line.startswith("FAIL") and "b.data" in line and "expected 0x2" in line for line in out)
    assert any(line.startswith("SKIP") and "c.data" in line and "'-- pyelf'" in line for line in out)
    assert out[-1] == "1 passed, 1 failed, 1 skipped"


def test_summary_line():
    from pybpf.testrunner import Outcome
    assert summary_line([Outcome("a", PASS), Outcome("b", SKIP)]) == "1 passed, 0 failed, 1 skipped"
