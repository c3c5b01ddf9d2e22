"""The assembly samples and their README commands, on both engines (the JIT via the CLI, in a
subprocess)."""
import collections
import os
import subprocess
import sys

import pytest

import pybpf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIST = os.path.join(ROOT, "samples", "asm", "histogram.s")


def test_histogram_counts_every_byte_in_the_map():
    data = bytes(range(256)) + b"hello, world"
    vm = pybpf.VM()
    # the sample loops over a buffer of any length: no verifier can bound it (samples/asm/README)
    with vm.load(pybpf.assemble(open(HIST).read()), engine="interp", verify=False) as lp:
        assert lp.run(mem=data) == len(data)
        hist = lp.maps["hist"]
        want = collections.Counter(data)
        assert {k: int.from_bytes(hist[k], "little") for k in range(256)} == \
            {k: want.get(k, 0) for k in range(256)}


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_histogram_cli_dump(engine):
    p = subprocess.run([sys.executable, "-m", "pybpf", "run", HIST, "--mem", "01020201ff",
                        "--dump-maps", "--engine", engine, "--no-verify"], capture_output=True,
                       text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "0x5" and lines[1] == "map hist (array):"
    assert "key: 01 00 00 00  value: 02 00 00 00 00 00 00 00" in lines
    assert "key: ff 00 00 00  value: 01 00 00 00 00 00 00 00" in lines
    assert lines[-1] == "Found 256 elements"
