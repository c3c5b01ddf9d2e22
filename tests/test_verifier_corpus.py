"""The verifier corpus (tests/verifier/*/*.vt): pybpf's verifier must give the kernel's verdict
and, for rejections, the kernel's message (Linux 6.18, root), on every program.

Each file records what the running kernel said (tests/verifier/regen.py writes it); where bpf()
is permitted the expectation is re-checked against the live kernel too, so a file can never
drift from the kernel's truth. See tests/verifier/vt_corpus.py for the format.
"""
from __future__ import annotations

import errno
import os
import sys
from collections import Counter

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "verifier"))

import vt_corpus as corpus  # noqa: E402
import kernel_verifier as kv  # noqa: E402

CASES = corpus.cases()
KERNEL = kv.available()


@pytest.fixture(scope="module")
def vm():
    import pybpf
    return pybpf.VM()


def test_corpus_size_and_balance():
    """At least 300 programs, every topic present, about as many accepts as rejects."""
    assert len(CASES) >= 300
    verdicts = Counter(c.verdict for c in CASES)
    assert set(verdicts) == {"accept", "reject"}, verdicts
    assert min(verdicts.values()) >= 0.4 * len(CASES), verdicts
    topics = {c.topic for c in CASES}
    for t in ("structure", "regs", "bounds", "alu", "sext", "ptr_arith", "stack", "ctx",
              "map_value", "packet", "null", "helpers", "subprog", "callbacks", "loops",
              "retval", "limits", "atomics"):
        assert t in topics, t


def test_rejections_record_a_message():
    for c in CASES:
        assert (c.verdict == "reject") == bool(c.message), c.name
        if c.verdict == "reject":
            assert c.fields.get("errno") in errno.errorcode.values(), c.name


# Known differences, each a REFUSAL by pybpf (never an acceptance the kernel refuses): none
DEVIATIONS: dict[str, str] = {}


def _case_param(c):
    marks = [pytest.mark.xfail(reason=DEVIATIONS[c.name], strict=True)] \
        if c.name in DEVIATIONS else []
    return pytest.param(c, id=c.name, marks=marks)


@pytest.mark.parametrize("case", [_case_param(c) for c in CASES])
def test_pybpf_matches_kernel(case, vm):
    if case.fields.get("slow") and not os.environ.get("PYBPF_VERIFIER_SLOW"):
        pytest.skip(f"slow ({case.fields['slow']}): runs with PYBPF_VERIFIER_SLOW=1")
    accepted, message = corpus.pybpf_verdict(case, vm)
    want = case.verdict == "accept"
    assert accepted == want, (f"kernel {case.verdict}s ({case.message!r}), pybpf "
                              f"{'accepts' if accepted else 'rejects: ' + repr(message)}")
    if not want:
        assert message == case.message


@pytest.mark.skipif(not KERNEL, reason="bpf() is not permitted here: no live kernel check")
def test_expectations_are_the_running_kernels():
    """Every file's verdict and message is what this kernel says now (one test: ~0.5 s)."""
    wrong, skipped = [], []
    for c in CASES:
        try:
            v = kv.kernel_verify(c.program(), c.prog_type, attach_type=c.attach_type)
        except kv.MapsUnavailable as e:
            skipped.append(f"{c.name}: {e}")
            continue
        got = ("accept", "") if v.accepted else ("reject", v.message)
        if got != (c.verdict, c.message):
            wrong.append(f"{c.name}: file {c.verdict} {c.message!r}, kernel {got[0]} {got[1]!r}")
    assert not wrong, "\n".join(wrong)
