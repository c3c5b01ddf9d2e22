"""Random bytecode never crashes anything: the decoder raises only DecodeError, and whatever
decodes gets a verdict from the verifier (VerifierError or accepted, nothing else), and what
passes the structural checks runs in the interpreter to a result or a BPFError (memory is
checked, the budget stops loops). Runs in a subprocess, as fuzzing should."""
import textwrap

import pytest

from support import run_code

CHILD = textwrap.dedent("""
    import random, struct
    from hypothesis import given, settings, strategies as st, HealthCheck
    import pybpf
    from pybpf import isa
    from pybpf.errors import BPFError, DecodeError
    from pybpf.runtime.helpers import ubpf_test_helpers

    counts = {"decoded": 0, "ran": 0, "refused": 0, "verified": 0}

    @settings(max_examples=600, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=0, max_size=96))
    def raw_bytes(data):
        try:
            pybpf.Program.from_bytes(data)
        except DecodeError:
            pass

    # slots built from real opcodes with random fields: far more of them decode
    OPCODES = sorted(isa.FORMS_BY_OPCODE)
    # biased to zero fields and small values, so that many slots are valid instructions
    slot = st.tuples(st.sampled_from(OPCODES), st.integers(0, 10),
                     st.one_of(st.just(0), st.integers(0, 15)),
                     st.one_of(st.just(0), st.integers(-16, 16), st.integers(-(1 << 15), (1 << 15) - 1)),
                     st.one_of(st.just(0), st.integers(-64, 64), st.integers(-(1 << 31), (1 << 31) - 1)))

    @settings(max_examples=1500, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(slot, min_size=1, max_size=6), st.binary(max_size=32))
    def plausible(slots, mem):
        raw = b"".join(struct.pack("<BBhi", op, d | (s << 4), off, imm) for op, d, s, off, imm in slots)
        raw += struct.pack("<BBhi", 0x95, 0, 0, 0)
        try:
            prog = pybpf.Program.from_bytes(raw)
        except DecodeError:
            return
        counts["decoded"] += 1
        vm = pybpf.VM(helpers=ubpf_test_helpers())
        try:                        # the whole verifier: a verdict, never a Python exception
            pybpf.VM().verify(prog)
            counts["verified"] += 1
        except BPFError:
            pass
        try:    # the interpreter runs what passes the structural checks (memory checked)
            with vm.load(prog, insn_limit=10_000, verify="structural") as lp:
                lp.run(mem=mem)
            counts["ran"] += 1
        except BPFError:
            counts["refused"] += 1

    raw_bytes()
    plausible()
    print(counts)
    assert counts["decoded"] > 100 and counts["ran"] > 20, counts
""")


@pytest.mark.slow
def test_random_bytecode_never_crashes():
    p = run_code(CHILD, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
