"""Verified runs of the context program types (flow_dissector, raw_tracepoint, sk_lookup, lwt_*,
cgroup_sock, cgroup_sock_addr): what the verifier's context rules let a program reach (flow keys,
socket pointers, packet pointers) is real memory of the run in both engines, and the run
refuses contexts that would break what the verifier assumed (a caller-set ``skb->sk``, a
raw_tracepoint ctx shorter than the arguments read). The JIT cases run in a child process.
The rules themselves are compared with the kernel in tests/test_verifier_calls.py and
tests/verifier/ctx/*.vt."""
from __future__ import annotations

import struct
import sys

import pytest

import pybpf
from pybpf.errors import VerifierError, VMError
from pybpf.runtime.contexts import AF_INET, BpfSkLookup, BpfSockAddr
from support import asm, assert_case_passed, cases_of, child, frame, run_child

# ctx->sk of a connect4 program: never NULL, its family/type/protocol those of the address
SOCK_ADDR_SK = asm("r2 = *(u64 *)(r1 + 64)\nr0 = *(u32 *)(r2 + 4)\nr3 = *(u32 *)(r2 + 12)\n"
                   "r3 <<= 8\nr0 |= r3\n*(u32 *)(r1 + 24) = r0\nr3 = *(u32 *)(r1 + 4)\n"
                   "r3 += 1\n*(u32 *)(r1 + 4) = r3\nr0 = 1\nexit")
# flow keys: nhoff from the packet's first byte, n_proto read back
FLOW_KEYS = asm("r2 = *(u32 *)(r1 + 76)\nr3 = *(u32 *)(r1 + 80)\nr4 = r2\nr4 += 14\n"
                "if r4 > r3 goto +5\nr5 = *(u64 *)(r1 + 144)\nr0 = *(u8 *)(r2 + 12)\n"
                "*(u16 *)(r5 + 12) = r0\nr0 = *(u16 *)(r5 + 10)\nexit\nr0 = 1\nexit")
# sk_lookup: ctx->sk is NULL in a test run (no socket selected); the check keeps it safe
SK_LOOKUP = asm("r2 = *(u64 *)(r1 + 0)\nr0 = 1\nif r2 == 0 goto +2\nr0 = *(u32 *)(r2 + 4)\n"
                "r0 = 0\nexit")


def _sock_addr(engine: str):
    vm = pybpf.VM()
    lp = vm.load(SOCK_ADDR_SK, prog_type="cgroup_sock_addr", engine=engine,
                 attach_type="cgroup_inet4_connect")
    ctx = BpfSockAddr(user_family=AF_INET, family=AF_INET, type=1, protocol=6, user_ip4=41)
    r0 = lp.run(ctx=ctx)
    out = (r0, ctx.user_port, ctx.user_ip4, ctx.sk, lp.last_ctx.sk)
    lp.close()
    return out


def _flow(engine: str):
    lp = pybpf.VM().load(FLOW_KEYS, prog_type="flow_dissector", engine=engine)
    r0 = lp.run(data=frame())
    out = (r0, lp.last_ctx.sport)
    lp.close()
    return out


def _sk_lookup(engine: str):
    lp = pybpf.VM().load(SK_LOOKUP, prog_type="sk_lookup", engine=engine)
    r0 = lp.run(ctx=BpfSkLookup(family=AF_INET, protocol=6, local_port=80))
    lp.close()
    return r0


def case_sock_addr_sk_is_a_real_socket():
    for engine in ("interp", "jit"):
        assert _sock_addr(engine) == (1, (6 << 8) | AF_INET, 42, 0, 0), engine


def case_flow_keys_pointer():
    assert _flow("interp") == _flow("jit") == (0x0008, 0x08)


def case_sk_lookup_null_socket():
    assert _sk_lookup("interp") == _sk_lookup("jit") == 1


CASES = cases_of(globals())


@pytest.fixture(scope="module")
def child_results():
    return run_child(__file__, CASES)


@pytest.mark.jit
@pytest.mark.parametrize("name", sorted(CASES))
def test_verified_context_programs_in_both_engines(child_results, name):
    assert_case_passed(child_results, name)


def test_sock_addr_socket_is_read_only_and_not_the_callers():
    vm = pybpf.VM()
    lp = vm.load(SOCK_ADDR_SK, prog_type="cgroup_sock_addr",
                 attach_type="cgroup_inet4_connect")
    with pytest.raises(VMError, match="set by the run itself"):
        lp.run(ctx={"sk": 0x1000, "family": AF_INET})
    # a store through ctx->sk: the verifier refuses it; unverified, the interpreter does
    store = asm("r2 = *(u64 *)(r1 + 64)\nr3 = 0\n*(u32 *)(r2 + 16) = r3\nr0 = 1\nexit")
    with pytest.raises(VerifierError, match="R2 cannot write into sock"):
        vm.load(store, prog_type="cgroup_sock_addr", attach_type="cgroup_inet4_connect")
    with pytest.raises(pybpf.errors.MemoryAccessError, match="read-only"):
        vm.load(store, prog_type="cgroup_sock_addr", verify=False).run(ctx={"family": 2})


def test_cgroup_sock_addr_needs_an_attach_type():
    """bpf_prog_load_check_attach refuses a sock_addr program without one (EINVAL); ELF
    programs get theirs from the section, as libbpf sets it."""
    with pytest.raises(VerifierError, match="needs an expected attach type"):
        pybpf.VM().load(asm("r0 = 1\nexit"), prog_type="cgroup_sock_addr")
    ok = pybpf.VM().load(asm("r0 = 1\nexit"), prog_type="cgroup_sock_addr",
                         attach_type="cgroup_udp4_recvmsg")
    assert ok.run(ctx={"family": 2}) == 1
    with pytest.raises(VerifierError, match=r"should have been in \[1, 1\]"):
        pybpf.VM().load(asm("r0 = 0\nexit"), prog_type="cgroup_sock_addr",
                        attach_type="cgroup_udp4_recvmsg")


def test_skb_sk_cannot_come_from_the_caller():
    """The verifier lets a program read through __sk_buff.sk after a NULL check: a run's sk is
    NULL, and a caller-supplied one is refused as BPF_PROG_TEST_RUN refuses it."""
    prog = asm("r2 = *(u64 *)(r1 + 168)\nr0 = 0\nif r2 == 0 goto +1\nr0 = *(u32 *)(r2 + 4)\n"
               "exit")
    lp = pybpf.VM().load(prog, prog_type="sched_cls")
    assert lp.run(data=frame()) == 0
    with pytest.raises(VMError, match="sk and flow_keys must be zero"):
        lp.run(data=frame(), ctx={"sk": 0x10000})


def test_raw_tracepoint_ctx_must_cover_what_the_program_reads():
    lp = pybpf.VM().load(asm("r0 = *(u64 *)(r1 + 16)\nexit"), prog_type="raw_tracepoint")
    assert lp.run(ctx=struct.pack("<3Q", 1, 2, 3)) == 3
    for short in (None, struct.pack("<2Q", 1, 2)):
        with pytest.raises(VMError, match="max_ctx_offset"):
            lp.run(ctx=short)


def test_map_in_map_lookup_gives_the_inner_map():
    """After its NULL check a lookup in an array_of_maps is the inner map (CONST_PTR_TO_MAP
    with the template's sizes), as the kernel's inner_map_meta: its value bounds are the
    inner map's."""
    vm = pybpf.VM()
    inner = vm.create_map("array", key_size=4, value_size=8, max_entries=2)
    outer = vm.create_map("array_of_maps", key_size=4, value_size=4, max_entries=1,
                          inner=inner)
    outer.update(0, inner)
    head = (f"r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nr1 = map_fd({outer.fd}) ll\n"
            f"call bpf_map_lookup_elem\nif r0 == 0 goto +6\nr1 = r0\nr2 = r10\nr2 += -4\n"
            f"call bpf_map_lookup_elem\nif r0 == 0 goto +1\n")
    good = asm(head + "r0 = *(u64 *)(r0 + 0)\nr0 = 0\nexit")
    bad = asm(head + "r0 = *(u64 *)(r0 + 8)\nr0 = 0\nexit")
    assert vm.load(good, prog_type="sched_cls").run(data=frame()) == 0
    with pytest.raises(VerifierError, match="R0 min value is outside of the allowed memory"):
        vm.load(bad, prog_type="sched_cls")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
