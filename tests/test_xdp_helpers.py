"""XDP packet helpers and redirects in both engines, against the kernel's BPF_PROG_TEST_RUN.

Each case is a program, a packet, map contents and the kernel's answer (Linux 6.18: retval, and
data_out as a function of the input packet: head/tail moves change its size). Both engines must
give that answer; where bpf() is permitted every case also runs in the kernel, so the stated
answers cannot drift from the oracle. Edge cases: deltas past the head room and the tail room,
below ETH_HLEN, load/store offsets past the packet and past 0xffff, redirect flags, missing
devmap keys, u64 keys truncated to u32, broadcasts; xskmaps hold a real (unbound) AF_XDP socket
in the kernel and a stand-in object in pybpf. The JIT runs in a child process.
"""
from __future__ import annotations

import errno
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "verifier"))

import kernel_bpf as kb  # noqa: E402
import kernel_verifier as kv  # noqa: E402
import pybpf  # noqa: E402
from support import in_child  # noqa: E402

KERNEL = kv.available()
PKT = bytes(range(64))
M32 = 0xFFFFFFFF
EINVAL, EFAULT = -errno.EINVAL & M32, -errno.EFAULT & M32


def _same(d):
    return d


# r0 = the helper's return (u32) unless the program says otherwise
def _delta(helper: str, delta: int) -> str:
    return f"r2 = {delta}\ncall bpf_{helper}\nexit"


# a write through a re-derived pointer after moving the head down: the new bytes are readable
_HEAD_WRITE = """
r6 = r1
r2 = -4
call bpf_xdp_adjust_head
if r0 != 0 goto out
r2 = *(u32 *)(r6 + 0)
r3 = *(u32 *)(r6 + 4)
r4 = r2
r4 += 4
if r4 > r3 goto out
r5 = 0x11223344
*(u32 *)(r2 + 0) = r5
out:
r0 = 2
exit
"""

_TAIL_READ = """
r6 = r1
r2 = 8
call bpf_xdp_adjust_tail
r2 = *(u32 *)(r6 + 0)
r3 = *(u32 *)(r6 + 4)
r4 = r2
r4 += 72
if r4 > r3 goto out
r0 = *(u64 *)(r2 + 64)
exit
out:
r0 = 99
exit
"""

_BUFF_LEN = """
r6 = r1
r2 = 4
call bpf_xdp_adjust_head
r1 = r6
r2 = -8
call bpf_xdp_adjust_tail
r1 = r6
call bpf_xdp_get_buff_len
exit
"""


def _load(off: int, size: int, ret_byte: bool = False) -> str:
    tail = "r0 = *(u8 *)(r10 - 7)\n" if ret_byte else ""
    return (f"*(u64 *)(r10 - 8) = 0\nr2 = {off}\nr3 = r10\nr3 += -8\nr4 = {size}\n"
            f"call bpf_xdp_load_bytes\nif r0 != 0 goto out\n{tail}out:\nexit")


def _store(off: int, size: int) -> str:
    return (f"r2 = 0x0807060504030201 ll\n*(u64 *)(r10 - 8) = r2\nr2 = {off}\nr3 = r10\n"
            f"r3 += -8\nr4 = {size}\ncall bpf_xdp_store_bytes\nexit")


def _redirect_map(mapdecl: str, key: str, flags: int) -> str:
    return f"{mapdecl}\nr1 = map[m] ll\n{key}\nr3 = {flags}\ncall bpf_redirect_map\nexit"


DEVMAP = ".map m type=devmap key=4 value=4 max_entries=4"
DEVMAP8 = ".map m type=devmap key=4 value=8 max_entries=4"
DEVHASH = ".map m type=devmap_hash key=4 value=4 max_entries=4"
CPUMAP = ".map m type=cpumap key=4 value=4 max_entries=2"
XSKMAP = ".map m type=xskmap key=4 value=4 max_entries=4"

# (name, asm, map contents {key: value} for map "m" ("sock": an AF_XDP socket), retval,
#  data_out from the input, last_redirect as (kind, target, flags) or None)
CASES = [
    ("head_min", _delta("xdp_adjust_head", -216), {}, 0, lambda d: bytes(216) + d, None),
    ("head_below_frame", _delta("xdp_adjust_head", -217), {}, EINVAL, _same, None),
    ("head_headroom", _delta("xdp_adjust_head", -256), {}, EINVAL, _same, None),
    ("head_max", _delta("xdp_adjust_head", 50), {}, 0, lambda d: d[50:], None),
    ("head_below_eth", _delta("xdp_adjust_head", 51), {}, EINVAL, _same, None),
    ("head_write", _HEAD_WRITE, {}, 2, lambda d: bytes.fromhex("44332211") + d, None),
    ("tail_min", _delta("xdp_adjust_tail", -50), {}, 0, lambda d: d[:14], None),
    ("tail_below_eth", _delta("xdp_adjust_tail", -51), {}, EINVAL, _same, None),
    ("tail_max", _delta("xdp_adjust_tail", 3456), {}, 0, lambda d: d + bytes(3456), None),
    ("tail_past_frame", _delta("xdp_adjust_tail", 3457), {}, EINVAL, _same, None),
    ("tail_huge", _delta("xdp_adjust_tail", 0x7FFFFFFF), {}, EINVAL, _same, None),
    ("tail_grown_zeroed", _TAIL_READ, {}, 0, lambda d: d + bytes(8), None),
    ("buff_len", _BUFF_LEN, {}, 52, lambda d: d[4:56], None),
    ("load_ok", _load(60, 4, True), {}, 61, _same, None),
    ("load_past_end", _load(61, 4), {}, EINVAL, _same, None),
    ("load_off_ffff", _load(0x10000, 4), {}, EFAULT, _same, None),
    ("load_off_neg", _load(-1, 4), {}, EFAULT, _same, None),
    ("store_ok", _store(56, 8), {}, 0, lambda d: d[:56] + bytes(range(1, 9)), None),
    ("store_past_end", _store(57, 8), {}, EINVAL, _same, None),
    ("store_off_ffff", _store(0x10000, 8), {}, EFAULT, _same, None),
    ("redirect", "r1 = 7\nr2 = 0\ncall bpf_redirect\nexit", {}, 4, _same, ("ifindex", 7, 0)),
    ("redirect_flags", "r1 = 7\nr2 = 1\ncall bpf_redirect\nexit", {}, 0, _same, None),
    ("devmap_hit", _redirect_map(DEVMAP, "r2 = 1", 0), {1: 1}, 4, _same, ("devmap", 1, 0)),
    ("devmap_miss_pass", _redirect_map(DEVMAP, "r2 = 2", 2), {1: 1}, 2, _same, None),
    ("devmap_miss_drop", _redirect_map(DEVMAP, "r2 = 2", 1), {1: 1}, 1, _same, None),
    ("devmap_past_end", _redirect_map(DEVMAP, "r2 = 4", 3), {1: 1}, 3, _same, None),
    ("devmap_u64_key", _redirect_map(DEVMAP, "r2 = 0x100000001 ll", 0), {1: 1}, 4, _same,
     ("devmap", 1, 0)),
    ("devmap_bad_flags", _redirect_map(DEVMAP, "r2 = 1", 4), {1: 1}, 0, _same, None),
    ("devmap_broadcast", _redirect_map(DEVMAP, "r2 = 3", 8 | 16), {1: 1}, 4, _same,
     ("devmap", 3, 24)),
    ("devmap8_hit", _redirect_map(DEVMAP8, "r2 = 0", 0), {0: (1).to_bytes(4, "little") +
                                                          (-1 & M32).to_bytes(4, "little")},
     4, _same, ("devmap", 0, 0)),
    ("devhash_hit", _redirect_map(DEVHASH, "r2 = 1000", 0), {1000: 1}, 4, _same,
     ("devmap_hash", 1000, 0)),
    ("devhash_miss", _redirect_map(DEVHASH, "r2 = 1001", 2), {1000: 1}, 2, _same, None),
    ("cpumap_hit", _redirect_map(CPUMAP, "r2 = 0", 0), {0: 192}, 4, _same, ("cpumap", 0, 0)),
    ("cpumap_miss", _redirect_map(CPUMAP, "r2 = 1", 2), {0: 192}, 2, _same, None),
    ("cpumap_broadcast_flag", _redirect_map(CPUMAP, "r2 = 0", 8), {0: 192}, 0, _same, None),
    ("xskmap_hit", _redirect_map(XSKMAP, "r2 = 3", 0), {3: "sock"}, 4, _same,
     ("xskmap", 3, 0)),
    ("xskmap_miss", _redirect_map(XSKMAP, "r2 = 2", 2), {3: "sock"}, 2, _same, None),
]


def _program(text: str) -> pybpf.Program:
    import re
    from pybpf.helper_names import HELPER_IDS
    text = re.sub(r"call bpf_(\w+)", lambda m: f"call {HELPER_IDS[m[1]]}", text)
    return pybpf.assemble(text, syntax="llvm")


def _value(v, value_size: int):
    if isinstance(v, bytes):
        return v
    return int(v).to_bytes(value_size, "little")


def run_pybpf(case, engine: str):
    name, text, contents, _ret, _out, _redir = case
    vm = pybpf.VM()
    lp = vm.load(_program(text), prog_type="xdp", engine=engine)
    m = lp.maps.get("m")
    for k, v in contents.items():
        if v == "sock":
            m[k] = f"xsk-{k}"
        else:
            m.sys_update(k.to_bytes(4, "little"), _value(v, m.value_size))
    r0 = lp.run(data=PKT) & M32
    red = lp.last_redirect
    return r0, lp.last_data, None if red is None else (red.kind, red.target, red.flags)


def run_kernel(case):
    name, text, contents, _ret, _out, _redir = case
    prog = _program(text)
    fds = kv.create_maps(prog)
    socks = []
    try:
        for k, v in contents.items():
            if v == "sock":
                socks.append(socket.socket(44, socket.SOCK_RAW))    # AF_XDP, unbound
                raw = socks[-1].fileno().to_bytes(4, "little")
            else:
                raw = _value(v, prog.maps[0].value_size)
            kb.update(fds[0], k.to_bytes(4, "little"), raw)
        fd = kv._load(prog, "xdp", fds, 0, None)
        try:
            r0, out, _ctx = kb.test_run(fd, data=PKT, data_out_size=8192)
        finally:
            os.close(fd)
    finally:
        for f in fds:
            os.close(f)
        for s in socks:
            s.close()
    return r0, out


def _check(engine: str) -> None:
    bad = []
    for case in CASES:
        name, _t, _c, ret, out, redir = case
        got = run_pybpf(case, engine)
        if got != (ret, out(PKT), redir):
            bad.append((name, got[0], ret, len(got[1]), len(out(PKT)), got[2], redir))
    assert not bad, bad


def test_cases_interp():
    _check("interp")


@pytest.mark.jit
@in_child
def test_cases_jit():
    _check("jit")


@pytest.mark.skipif(not KERNEL, reason="bpf() is not permitted here: no kernel to compare with")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_kernel_agrees(case):
    name, _t, _c, ret, out, _redir = case
    assert run_kernel(case) == (ret, out(PKT))


# --- hostile input: what a verifier would refuse, run unverified --------------------------------
def _unverified(text: str, engine: str = "interp"):
    vm = pybpf.VM()
    return vm.load(_program(text), prog_type="xdp", engine=engine, verify=False)


def _hostile(engine: str) -> None:
    from pybpf.errors import MemoryAccessError, VMError
    cases = {
        # a ctx that is not the run's xdp_md
        "ctx_is_stack": "r1 = r10\nr1 += -24\nr2 = 0\ncall bpf_xdp_adjust_head\nexit",
        # load_bytes into memory the run does not own
        "buf_outside": "r2 = 0\nr3 = 4096\nr4 = 8\ncall bpf_xdp_load_bytes\nexit",
        # store_bytes from memory the run does not own
        "src_outside": "r2 = 0\nr3 = 8192\nr4 = 8\ncall bpf_xdp_store_bytes\nexit",
    }
    for name, text in cases.items():
        with pytest.raises(MemoryAccessError):
            _unverified(text, engine).run(data=PKT)
    # after the head moved up, the old first bytes are outside the packet region
    lp = _unverified("r6 = r1\nr7 = *(u32 *)(r1 + 0)\nr2 = 8\ncall bpf_xdp_adjust_head\n"
                     "r0 = *(u8 *)(r7 + 0)\nexit", engine)
    if engine == "interp":      # unverified JIT code runs unchecked (trusted input only)
        with pytest.raises(MemoryAccessError):
            lp.run(data=PKT)
    # and the tail grown is inside it
    lp = _unverified("r6 = r1\nr2 = 8\ncall bpf_xdp_adjust_tail\nr7 = *(u32 *)(r6 + 4)\n"
                     "r0 = *(u8 *)(r7 - 1)\nexit", engine)
    assert lp.run(data=PKT) == 0
    # an xdp helper in a run without an xdp context
    vm = pybpf.VM()
    lp = vm.load(_program("r2 = 0\ncall bpf_xdp_adjust_head\nexit"), prog_type="mem",
                 engine=engine, verify=False)
    with pytest.raises(VMError, match="needs an xdp run"):
        lp.run(mem=bytes(8))


def test_hostile_interp():
    _hostile("interp")


@pytest.mark.jit
@in_child
def test_hostile_jit():
    _hostile("jit")


def test_redirect_is_reported_only_when_the_verdict_acts_on_it():
    # bpf_redirect sets the target, but the program returns XDP_PASS: nothing was redirected
    lp = pybpf.VM().load(_program("r1 = 3\nr2 = 0\ncall bpf_redirect\nr0 = 2\nexit"),
                         prog_type="xdp")
    assert lp.run(data=PKT) == 2 and lp.last_redirect is None
    # a later miss clears an earlier hit (the kernel clears bpf_redirect_info)
    text = _redirect_map(DEVMAP, "r2 = 1", 0).replace("exit", "") + \
        "r1 = map[m] ll\nr2 = 2\nr3 = 0\ncall bpf_redirect_map\nr0 = 4\nexit"
    vm = pybpf.VM()
    lp = vm.load(_program(text), prog_type="xdp")
    lp.maps["m"][1] = 1
    assert lp.run(data=PKT) == 4 and lp.last_redirect is None
    lp.maps["m"][2] = 1
    assert lp.run(data=PKT) == 4 and lp.last_redirect.target == 2
    assert lp.last_redirect.value == (1).to_bytes(4, "little") + bytes(4)


# bpf_redirect in tc: TC_ACT_REDIRECT with flags 0 or BPF_F_INGRESS, TC_ACT_SHOT otherwise
TC_REDIRECT = [(0, 7, ("ifindex", 1, 0)), (1, 7, ("ifindex", 1, 1)), (2, 2, None),
               (1 << 31, 2, None)]


@pytest.mark.parametrize("flags,ret,redir", TC_REDIRECT, ids=[str(t[0]) for t in TC_REDIRECT])
def test_tc_redirect(flags, ret, redir):
    text = f"r1 = 1\nr2 = {flags} ll\ncall bpf_redirect\nexit"
    lp = pybpf.VM().load(_program(text), prog_type="sched_cls")
    r0 = lp.run(data=PKT) & M32
    red = lp.last_redirect
    assert (r0, None if red is None else (red.kind, red.target, red.flags)) == (ret, redir)
    if KERNEL:
        fd = kv._load(_program(text), "sched_cls", [], 0, None)
        try:
            assert kb.test_run(fd, data=PKT, data_out_size=256)[0] == ret
        finally:
            os.close(fd)


def _adjust_meta(engine: str) -> None:
    # Linux 6.18 as built here refuses bpf_xdp_adjust_meta for XDP at load ("program of this
    # type cannot use helper bpf_xdp_adjust_meta#54": no kernel answer to compare with, and
    # pybpf's verifier refuses it too); its run-time rules (net/core/filter.c) are checked on
    # unverified loads: -EINVAL below the xdp_frame or above data, -EACCES for a length that is
    # not a multiple of 4 (above 255 cannot happen in a 256-byte headroom); data_out then starts
    # at data_meta, and ctx_out's data is the metadata length.
    def meta(delta):
        lp = _unverified(f"r2 = {delta}\ncall bpf_xdp_adjust_meta\nexit", engine)
        return lp.run(data=PKT) & M32, lp.last_data
    assert meta(-8) == (0, bytes(8) + PKT)
    assert meta(-6) == (-errno.EACCES & M32, PKT)
    assert meta(-216) == (0, bytes(216) + PKT)               # down to the xdp_frame
    assert meta(-220) == (EINVAL, PKT)
    assert meta(4) == (EINVAL, PKT)                          # above data
    # the head moves the metadata with it
    lp = _unverified("r6 = r1\nr2 = -4\ncall bpf_xdp_adjust_meta\nr1 = r6\nr2 = 10\n"
                     "call bpf_xdp_adjust_head\nexit", engine)
    assert (lp.run(data=PKT), lp.last_data) == (0, bytes(4) + PKT[10:])
    assert (lp.last_ctx.data, lp.last_ctx.data_end) == (4, 4 + len(PKT) - 10)


def test_adjust_meta_semantics_unverified():
    _adjust_meta("interp")


@pytest.mark.jit
@in_child
def test_adjust_meta_semantics_unverified_jit():
    _adjust_meta("jit")


def test_the_kernel_refuses_adjust_meta_in_xdp_as_pybpf_does():
    text = "r2 = -8\ncall bpf_xdp_adjust_meta\nexit"
    with pytest.raises(pybpf.VerifierError, match="cannot use helper bpf_xdp_adjust_meta#54"):
        pybpf.VM().load(_program(text), prog_type="xdp")
    if KERNEL:
        fd, log = kb.prog_load(_program(text).to_bytes(), "xdp")
        assert fd < 0 and "cannot use helper bpf_xdp_adjust_meta#54" in log
