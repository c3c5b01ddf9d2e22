"""The README's commands are true: every command in its code blocks runs here and succeeds, and
the outputs the README states are the outputs printed.

Shell blocks run line by line with bash from the project root, with this interpreter's bin/ first
on PATH (the ``pybpf`` console script of the installation under test); ``/tmp/`` is a private
directory per run. ``bpf_conformance/tests`` stands for the suite's ``tests/`` folder
(``--conformance-dir`` / ``PYBPF_CONFORMANCE``): without it that command skips with the reason.
The Python block runs in a child. The install and test commands are the two that .ci/run runs
(it takes them from the README), so they are checked to be there and not run here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest

from support import ROOT, conformance_dir, conformance_missing, run_code

README = os.path.join(ROOT, "README.md")
CI = os.path.join(ROOT, ".ci", "run")
CI_COMMANDS = ("pip install -e '.[test]'", "python -m pytest")
SUITE = "bpf_conformance/tests"
SUMMARY = re.compile(r"^\d+ passed, \d+ failed, \d+ skipped$")


def code_blocks(text: str) -> list[tuple[str, list[str], str | None]]:
    """(language, lines, stated output) of each fenced or four-space-indented block. The stated
    output is the ``prints `X``` of the prose line just before the block, if any."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        before = lines[i - 1] if i else ""
        if line.startswith("```"):
            j = lines.index("```", i + 1)
            blocks.append((line[3:].strip() or "sh", lines[i + 1:j], None))
            i = j + 1
        elif line.startswith("    ") and not before.strip():
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            said = re.search(r"prints `([^`]+)`", lines[i - 2] if i >= 2 else "")
            blocks.append(("sh", [ln[4:] for ln in lines[i:j] if ln.strip()],
                           said[1] if said else None))
            i = j
        else:
            i += 1
    return blocks


def commands() -> list[tuple[int, str, str | None]]:
    """(block number, command, stated output) of each shell command, in README order."""
    out = []
    for n, (lang, lines, said) in enumerate(code_blocks(open(README).read())):
        if lang == "python":
            continue
        for line in lines:
            cmd, _, comment = line.partition("  #")
            comment = comment.strip()
            out.append((n, cmd.strip(), comment if SUMMARY.match(comment) else said))
    return out


COMMANDS = commands()
RUN_HERE = [c for c in COMMANDS if c[1] not in CI_COMMANDS]


def test_the_readme_has_its_blocks():
    assert [c for _, c, _ in COMMANDS if c in CI_COMMANDS] == list(CI_COMMANDS)
    assert len(RUN_HERE) >= 10 and any(SUITE in c for _, c, _ in RUN_HERE)
    assert any(lang == "python" for lang, _, _ in code_blocks(open(README).read()))


def test_ci_runs_the_install_and_test_commands_from_the_readme():
    """.ci/run takes the first indented ``pip install`` and ``python -m pytest`` lines."""
    ci = open(CI).read()
    assert r"s/^    \(pip install .*\)$/\1/p" in ci and r"s/^    \(python -m pytest.*\)$/\1/p" in ci
    assert 'eval "$install_cmd"' in ci and 'eval "$test_cmd' in ci


@pytest.fixture(scope="module")
def results():
    """``result(cmd)``: the command's CompletedProcess, or the reason it cannot run here. Each
    command runs once, after the commands before it in its block (it may read their files)."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    done = {}
    with tempfile.TemporaryDirectory(prefix="pybpf-readme-") as tmp:
        def run(cmd: str):
            line = cmd.replace("/tmp/", tmp + "/")
            if SUITE in line:
                if conformance_missing():
                    return conformance_missing()
                line = line.replace(SUITE, str(conformance_dir() / "tests"))
            return subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=600)

        def result(cmd: str):
            block = next(n for n, c, _ in RUN_HERE if c == cmd)
            for n, c, _ in RUN_HERE:
                if n == block and c not in done:
                    done[c] = run(c)
                if c == cmd:
                    return done[c]
        yield result


def _params() -> list:
    return [pytest.param(cmd, said, id=cmd, marks=[pytest.mark.slow] +
                         ([pytest.mark.conformance] if SUITE in cmd else []))
            for _, cmd, said in RUN_HERE]


@pytest.mark.parametrize("cmd,said", _params())
def test_readme_command(results, cmd, said):
    r = results(cmd)
    if isinstance(r, str):
        pytest.skip(r)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if said is not None:
        assert r.stdout.splitlines()[-1].strip() == said, r.stdout[-2000:]


def test_readme_python_block():
    """The tour runs, and prints what its comments say (``print(...)  # 42``)."""
    blocks = [lines for lang, lines, _ in code_blocks(open(README).read()) if lang == "python"]
    for lines in blocks:
        r = run_code("\n".join(lines) + "\n", timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        printed = r.stdout.splitlines()
        for line in lines:
            m = re.search(r"print\(.*#\s*(-?\w+)\s*$", line)
            if m and re.fullmatch(r"-?(0x[0-9a-f]+|\d+)", m[1]):
                assert m[1] in printed, (line, printed[:10])
