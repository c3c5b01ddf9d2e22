"""bpf_throw, bpf_rcu_read_lock/unlock, bpf_cast_to_kern_ctx and bpf_rdonly_cast in both engines,
each program also run in the running kernel (BPF_PROG_TEST_RUN) where bpf() is permitted.

bpf_throw unwinds every frame (from a subprogram; the kernel refuses it in callbacks) and the program
returns the cookie, as the kernel's default exception callback makes it; what the program wrote
before the throw stays written. The RCU section and the casts change nothing at run time: the
programs check that the pointers come back as given. The verifier's rules for them are in
tests/verifier/special/ (the kernel's verdicts)."""
from __future__ import annotations

import struct
import sys

import pytest

import pybpf
from kernel_probe import require_kernel
from kfunc_run import kernel_run, pybpf_run
from support import assert_case_passed, child, run_child, frame

# syscall programs on a 16-byte context: u64 @0 the cookie to throw, u64 @8 what the run wrote
PROGRAMS = {
    # a subprogram throws ctx[0] after the main program wrote 1 to ctx[8]
    "throw_from_subprog": ("syscall", """
r6 = r1
r1 = 1
*(u64 *)(r6 + 8) = r1
r1 = *(u64 *)(r6 + 0)
call thrower
r1 = 99
*(u64 *)(r6 + 8) = r1
r0 = 7
exit
thrower:
r6 = r1
r1 = r6
if r1 == 0 goto none
call bpf_throw
none:
r0 = 0
exit
"""),
    # an RCU read-side section around a store; the section changes nothing at run time
    "rcu_section": ("syscall", """
r6 = r1
call bpf_rcu_read_lock
r1 = *(u64 *)(r6 + 0)
r1 += 1
*(u64 *)(r6 + 8) = r1
call bpf_rcu_read_unlock
r0 = 3
exit
"""),
    # bpf_rdonly_cast gives its pointer back
    "rdonly_cast_value": ("syscall", """
r6 = r1
r1 = r6
r2 = 0
call bpf_rdonly_cast
r0 -= r6
*(u64 *)(r6 + 8) = r0
r0 = 0
exit
"""),
}

# an XDP program: bpf_cast_to_kern_ctx gives a non-NULL pointer, XDP_PASS (2) then
CAST_XDP = """
r6 = r1
call bpf_cast_to_kern_ctx
r1 = 1
if r0 == 0 goto out
r1 = 2
out:
r0 = r1
exit
"""

COOKIES = {"small": 3, "wide": 0x1234_5678_9ABC_DEF0}


def _ctx(cookie: int) -> bytes:
    return struct.pack("<QQ", cookie, 0)


def _run(name: str, cookie: str, engine: str | None):
    ptype, text = PROGRAMS[name]
    c = _ctx(COOKIES[cookie])
    r0, after = kernel_run(text, c) if engine is None else pybpf_run(text, c, engine)
    return r0, struct.unpack("<QQ", after[:16])[1]


def _full_r0(name: str, cookie: str, engine: str) -> int:
    """The 64-bit r0 pybpf returns (BPF_PROG_TEST_RUN only reports the low 32 bits)."""
    import pybpf
    from kfunc_run import assemble
    lp = pybpf.VM().load(assemble(PROGRAMS[name][1]), prog_type="syscall", engine=engine)
    return lp.run(ctx=bytearray(_ctx(COOKIES[cookie])))


def _cast(engine: str | None) -> int:
    if engine is None:
        return kernel_run(CAST_XDP, b"", prog_type="xdp", data=frame())[0]
    return pybpf_run(CAST_XDP, b"", engine, prog_type="xdp", data=frame())[0]


# A kfunc call without a function id: the kernel loads it as dead code (removed before
# fixup_kfunc_call refuses it: tests/verifier/special/kfunc_no_id_*.vt); both engines compile
# it, and reached in an unverified program it is that refusal, at run time
KFUNC0_DEAD = "r0 = 2\nif r0 == 2 goto +1\ncall kfunc(0)\nexit"
KFUNC0_REACHED = "r0 = 2\ncall kfunc(0)\nexit"


def _kfunc0(engine: str):
    out = [pybpf.VM().load(pybpf.assemble(KFUNC0_DEAD), prog_type="xdp",
                           engine=engine).run(data=frame())]
    lp = pybpf.VM().load(pybpf.assemble(KFUNC0_REACHED), prog_type="xdp", engine=engine,
                         verify=False)
    try:
        lp.run(data=frame())
    except pybpf.errors.VMError as e:
        out.append(str(e))
    return out


RUNS = [(n, c) for n in PROGRAMS for c in COOKIES]
CASES = {f"{n}-{c}": (lambda n=n, c=c: _run(n, c, "jit")) for n, c in RUNS}
CASES["cast_xdp"] = lambda: _cast("jit")
CASES["wide_cookie"] = lambda: _full_r0("throw_from_subprog", "wide", "jit")
CASES["kfunc0"] = lambda: _kfunc0("jit")


@pytest.fixture(scope="module")
def jit_results():
    return run_child(__file__, CASES)


@pytest.mark.parametrize("name,cookie", RUNS)
def test_interpreter_matches_the_kernel(name, cookie):
    mine = _run(name, cookie, "interp")
    require_kernel("bpf", "kfunc:bpf_throw", "prog:syscall")
    assert mine == _run(name, cookie, None)


@pytest.mark.jit
@pytest.mark.parametrize("name,cookie", RUNS)
def test_the_jit_matches_the_interpreter(jit_results, name, cookie):
    assert_case_passed(jit_results, f"{name}-{cookie}")
    assert tuple(jit_results[0][f"{name}-{cookie}"]["detail"]) == _run(name, cookie, "interp")


def test_the_throw_returns_the_whole_cookie_and_stops_the_program():
    cookie = COOKIES["wide"]
    assert _full_r0("throw_from_subprog", "wide", "interp") == cookie
    assert _run("throw_from_subprog", "wide", "interp") == (cookie & 0xFFFFFFFF, 1)


@pytest.mark.jit
def test_the_jit_returns_the_whole_cookie(jit_results):
    assert_case_passed(jit_results, "wide_cookie")
    assert jit_results[0]["wide_cookie"]["detail"] == COOKIES["wide"]


def test_cast_to_kern_ctx_matches_the_kernel():
    mine = _cast("interp")
    assert mine == 2
    require_kernel("bpf", "kfunc:bpf_cast_to_kern_ctx", "test_run:xdp")
    assert _cast(None) == mine


@pytest.mark.jit
def test_cast_to_kern_ctx_in_the_jit(jit_results):
    assert_case_passed(jit_results, "cast_xdp")
    assert jit_results[0]["cast_xdp"]["detail"] == _cast("interp")


def test_a_kfunc_call_without_an_id_is_dead_code_or_refused():
    want = [2, "pc 1: invalid kernel function call not eliminated in verifier pass"]
    assert _kfunc0("interp") == want
    with pytest.raises(pybpf.VerifierError, match="not eliminated in verifier pass"):
        pybpf.VM().load(pybpf.assemble(KFUNC0_REACHED), prog_type="xdp")


@pytest.mark.jit
def test_a_kfunc_call_without_an_id_in_the_jit(jit_results):
    assert_case_passed(jit_results, "kfunc0")
    assert jit_results[0]["kfunc0"]["detail"] == _kfunc0("interp")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
