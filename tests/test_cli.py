"""The command line: its contracts (README, docs/architecture.md), exit statuses, and no
tracebacks on bad input."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "samples", "asm", "sum_bytes.s")


def pybpf(*args, stdin=b""):
    p = subprocess.run([sys.executable, "-m", "pybpf", *args], input=stdin, capture_output=True,
                       timeout=120, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr.decode()


def test_run_sample_from_readme():
    # sum_bytes loops over a buffer of any length, which no verifier can bound (the kernel's
    # neither): it runs unverified on the interpreter, which checks every access at run time
    rc, out, err = pybpf("run", SAMPLE, "--no-verify", "--mem", "01020304")
    assert rc == 0, err
    assert out.decode().strip() == "0xa"
    rc, out, err = pybpf("run", SAMPLE, "--mem", "01020304")
    assert rc == 1 and "too complex" in err, err


def test_asm_disasm_round_trip_through_stdin(tmp_path):
    binf = tmp_path / "x.bin"
    assert pybpf("asm", SAMPLE, "-o", str(binf))[0] == 0
    for syntax in ("ubpf", "llvm"):
        rc, listing, err = pybpf("disasm", str(binf), "--syntax", syntax)
        assert rc == 0, err
        rc, again, err = pybpf("asm", "-", stdin=listing)
        assert rc == 0, err
        assert again == binf.read_bytes()


@pytest.mark.parametrize("args,stdin,needle", [
    (("asm", "-"), b"mov %r0, %r50\nexit\n", "invalid register"),
    (("asm", "-"), b"ldxq %r0, %r1\n", "unknown mnemonic"),
    (("disasm", "-"), b"\xff\x00\x00\x00\x00\x00\x00\x00", "unknown opcode 0xff"),
    (("disasm", "-"), b"\x95\x00\x00", "not a multiple of 8"),
    (("run", "/nonexistent/file.s"), b"", "No such file"),
    (("run", "-", "--mem", "zz"), b"exit\n", "not hex"),
    (("test", "/nonexistent.data"), b"", "no such file"),
])
def test_bad_input_exits_2_without_traceback(args, stdin, needle):
    rc, out, err = pybpf(*args, stdin=stdin)
    assert rc == 2, (rc, err)
    assert needle in err
    assert "Traceback" not in err


def test_usage_error_exits_2():
    rc, _, err = pybpf("frobnicate")
    assert rc == 2 and "Traceback" not in err


def test_asm_error_has_location_and_caret():
    rc, _, err = pybpf("asm", "-", stdin=b"exit\n  ja NOPE\n")
    assert rc == 2
    lines = err.splitlines()
    assert lines[0].startswith("<stdin>:2:")
    assert "NOPE" in lines[0] and lines[2].strip() == "^"
