"""The bpf_conformance suite through the command line, as the issues state it.

The suite is a checkout of bpf_conformance found through --conformance-dir / PYBPF_CONFORMANCE
(tests/conftest.py); without it every test here skips with that one reason.

- ``pybpf test --engine interp|jit|both <suite>/tests`` ends with
  ``313 passed, 0 failed, 0 skipped`` (the JIT runs in the CLI's own process, a subprocess here);
- every file, parametrised, passes on the interpreter;
- every program survives ``pybpf asm x.s -o x.bin && pybpf disasm x.bin --syntax S | pybpf asm -``
  with identical bytes, for S in ubpf and llvm (driven through ``cli.main`` in-process, with
  stdin/stdout redirected, so 313 x 2 round trips stay fast).
"""
import io
import subprocess
import sys

import pytest

from pybpf import cli
from pybpf.datafile import parse_data_file
from pybpf.testrunner import PASS, run_file

from support import conformance_files, conformance_params

FILES = conformance_files("tests")


def test_suite_is_there(conformance_dir):
    assert len(FILES) == 313


@pytest.mark.parametrize("path", conformance_params("tests"), ids=lambda p: p.stem)
def test_file_passes_on_the_interpreter(path):
    outcome = run_file(path, engine="interp")
    assert outcome.status == PASS, outcome.message


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["interp", "jit", "both"])
def test_cli_summary_line(engine, conformance_dir):
    tests = conformance_dir / "tests"
    p = subprocess.run([sys.executable, "-m", "pybpf", "test", "--engine", engine, str(tests)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.splitlines()[-1] == "313 passed, 0 failed, 0 skipped"


class _Stdio:
    """Run cli.main with bytes on stdin and capture stdout bytes."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch

    def __call__(self, argv, stdin=b""):
        out = io.BytesIO()
        self.mp.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        wrapper = io.TextIOWrapper(out, write_through=True)
        self.mp.setattr(sys, "stdout", wrapper)
        rc = cli.main(argv)
        wrapper.flush()
        return rc, out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("syntax", ["ubpf", "llvm"])
def test_cli_round_trip_of_every_program(tmp_path, monkeypatch, syntax, conformance_dir):
    run = _Stdio(monkeypatch)
    for path in FILES:
        src = tmp_path / f"{path.stem}.s"
        src.write_text(parse_data_file(path).asm)
        x_bin, y_bin = tmp_path / "x.bin", tmp_path / "y.bin"
        assert run(["asm", str(src), "-o", str(x_bin)])[0] == 0, path.name
        rc, listing = run(["disasm", str(x_bin), "--syntax", syntax])
        assert rc == 0, path.name
        assert run(["asm", "-", "-o", str(y_bin)], stdin=listing)[0] == 0, (path.name, listing)
        assert y_bin.read_bytes() == x_bin.read_bytes(), path.name
