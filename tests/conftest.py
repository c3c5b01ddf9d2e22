"""What every test module shares: markers, the kernel probe, where the conformance suite is.

Markers (registered in pyproject.toml; select with ``-m``, e.g. ``-m "not slow"``):

* ``kernel`` / ``kernel("map:arena", "test_run:syscall")`` -- uses the running kernel as an
  oracle. Before the test, each named feature (``bpf`` when none is named) is probed once per
  session; a feature the kernel refuses skips the test with the reason
  (``kernel refuses BPF_MAP_TYPE_ARENA: EPERM``). A kernel that answers differently from pybpf
  on a feature it allows still fails the test.
* ``jit`` -- runs JIT-compiled native code (in a child process: tests/support.py).
* ``slow`` -- takes more than a few seconds on a 2-core machine.
* ``conformance`` -- reads the bpf_conformance suite; added here to every test that uses the
  ``conformance_dir`` fixture or is parametrised over the suite's files (``-m conformance`` is
  what .ci/run runs a second time with the suite hidden).

The kernel probe (tests/kernel_probe.py; its docstring lists the features):

* ``require_kernel("map:arena", "prog:xdp", "test_run:sched_cls")`` -- call it in a test or
  fixture (``from kernel_probe import require_kernel``, or the fixture of the same name) when
  the features depend on the test's data; ``object_features(obj)`` names what an ELF object
  needs; ``probe(feature)`` is None or the reason.
* The session header and the run's last lines say what this kernel refuses.
* The bpf(2) client itself is tests/kernel_bpf.py.

The bpf_conformance suite (a checkout of https://github.com/Alan-Jowett/bpf_conformance; it is
not part of this project): ``--conformance-dir DIR``, else ``PYBPF_CONFORMANCE``, else
``../shared/conformance`` beside the project (the test configuration's default). Tests that read
it skip with one reason when it is absent: ``support.require_conformance()`` /
``support.conformance_params()`` / the ``conformance_dir`` fixture.

The JIT's code cache lives in a temporary directory of the session (``PYBPF_JIT_CACHE``), so
tests never write to the user's cache directory.

Crash-prone tests (JIT code, arena faults, fuzzers) run in child processes through the one
harness in tests/support.py (``run_code``, ``run_script``, ``in_child``, ``run_child``).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

import kernel_probe
import support

# The JIT's code cache (jit/cache.py) goes to a directory of this session, never the user's
# cache; child processes inherit it. A test that needs its own sets PYBPF_JIT_CACHE itself.
if "PYBPF_JIT_CACHE" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="pybpf-test-jit-cache-")
    os.environ["PYBPF_JIT_CACHE"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, True)
# JIT loads take the tier users get by default ("auto": the baseline tier, or LLVM's quick tier
# where the baseline cannot emit the program, then -O2 installed in the background); a test that
# needs one tier asks for it (tier="O2", with its reason). PYBPF_JIT_TIER=O2 (or quick,
# baseline) runs the whole suite on one tier.


def pytest_addoption(parser):
    parser.addoption("--conformance-dir", default=None, metavar="DIR",
                     help="a checkout of bpf_conformance (tests/*.data, negative/*.data); "
                          f"default ${support.CONFORMANCE_ENV} or ../shared/conformance")


def pytest_configure(config):
    # before collection: test modules list the suite's files when they are imported
    support.set_conformance_dir(config.getoption("--conformance-dir"))


def pytest_report_header(config):
    return [f"kernel probe: {kernel_probe.summary()}",
            "conformance suite: " + (support.conformance_missing() or
                                     str(support.conformance_dir()))]


def pytest_terminal_summary(terminalreporter):
    # the header is hidden under -q (our default), so the same two lines close the run
    for line in pytest_report_header(terminalreporter.config):
        terminalreporter.write_line(line)


def _reads_the_suite(item) -> bool:
    if "conformance_dir" in getattr(item, "fixturenames", ()):
        return True
    spec = getattr(item, "callspec", None)
    if spec is None:
        return False
    suite = str(support.conformance_dir())
    return "no-conformance-suite" in spec.id or \
        any(str(v).startswith(suite) for v in spec.params.values())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _reads_the_suite(item):
            item.add_marker(pytest.mark.conformance)
        for mark in item.iter_markers(name="kernel"):
            why = next(filter(None, map(kernel_probe.probe, mark.args or ("bpf",))), None)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))   # reported at the test's line


@pytest.fixture(name="require_kernel", scope="session")
def require_kernel_fixture():
    """``require_kernel(*features)``: skip unless this kernel allows each feature."""
    return kernel_probe.require_kernel


@pytest.fixture
def conformance_dir():
    """The bpf_conformance checkout (a Path); skips the test when it is absent."""
    return support.require_conformance()
