"""XDP runs take their input as the kernel's BPF_PROG_TEST_RUN does (bpf_prog_test_run_xdp):
packets shorter than an Ethernet header, ctx_in with data_meta/data/data_end (metadata and the
end of the linear part), ingress_ifindex/rx_queue_index/egress_ifindex, the linear part and the
fragments of long packets (at most 17: ENOMEM) -- each input compared with the running kernel:
the errno of a refusal, else the return value (what the program saw: data_end - data, the
metadata length, ingress_ifindex, rx_queue_index) and data_out. Both engines (the JIT in a
child process); the multi-buffer helpers are compared on tests/corpus/frags_corpus.c."""
from __future__ import annotations

import errno
import struct
import sys

import pytest

from pybpf.helper_names import HELPER_IDS
from support import assert_case_passed, child, run_child

# r0 = (data_end - data) | metadata length << 16 | ingress_ifindex << 24 | rx_queue_index << 28
SEES = """
r2 = *(u32 *)(r1 + 0)
r3 = *(u32 *)(r1 + 4)
r4 = *(u32 *)(r1 + 8)
r5 = *(u32 *)(r1 + 12)
r6 = *(u32 *)(r1 + 16)
r0 = r3
r0 -= r2
r2 -= r4
r2 <<= 16
r0 |= r2
r5 <<= 24
r0 |= r5
r6 <<= 28
r0 |= r6
exit
"""


def md(data_meta=0, data=0, data_end=0, ifi=0, rxq=0, egress=0) -> bytes:
    """A struct xdp_md as ctx_in."""
    return struct.pack("<6I", data, data_end, data_meta, ifi, rxq, egress)


def pattern(n: int) -> bytes:
    return bytes((i * 13 + 1) & 0xFF for i in range(n))


# (name, ctx_in or None, data_in)
INPUTS = [
    ("no data", None, b""),
    ("13 bytes", None, pattern(13)),
    ("14 bytes", None, pattern(14)),
    ("linear 3520", None, pattern(3520)),
    ("one fragment byte", None, pattern(3521)),
    ("fragments 10000", None, pattern(10000)),
    ("17 fragments", None, pattern(3520 + 17 * 4096)),
    ("18 fragments", None, pattern(3520 + 17 * 4096 + 1)),
    ("ctx whole packet", md(data_end=20), pattern(20)),
    ("ctx linear part 10 of 20", md(data_end=10), pattern(20)),
    ("ctx linear part 0", md(), pattern(20)),
    ("ctx data_end past the data", md(data_end=30), pattern(20)),
    ("ctx 4 bytes of metadata", md(data=4, data_end=20), pattern(20)),
    ("ctx metadata leaves 13 bytes", md(data=4, data_end=17), pattern(17)),
    ("ctx metadata leaves 14 bytes", md(data=4, data_end=18), pattern(18)),
    ("ctx metadata not a multiple of 4", md(data=3, data_end=20), pattern(20)),
    ("ctx 216 bytes of metadata", md(data=216, data_end=240), pattern(240)),
    ("ctx 220 bytes of metadata", md(data=220, data_end=240), pattern(240)),
    ("ctx metadata and fragments", md(data=4, data_end=3604), pattern(3604)),
    ("ctx data_meta set", md(data_meta=4, data_end=20), pattern(20)),
    ("ctx data past data_end", md(data=24, data_end=20), pattern(20)),
    ("ctx ingress_ifindex 1", md(data_end=20, ifi=1), pattern(20)),
    ("ctx rx queue 1 of the loopback", md(data_end=20, ifi=1, rxq=1), pattern(20)),
    ("ctx rx queue without a device", md(data_end=20, rxq=1), pattern(20)),
    ("ctx no such device", md(data_end=20, ifi=999), pattern(20)),
    ("ctx egress_ifindex set", md(data_end=20, egress=1), pattern(20)),
    ("ctx 8 bytes", bytes(8), pattern(20)),
    ("ctx 28 bytes, zero tail", md(data_end=20) + bytes(4), pattern(20)),
    ("ctx 28 bytes, non-zero tail", md(data_end=20) + b"\1\0\0\0", pattern(20)),
]


# moves the pointers ctx_out reports: the head 8 bytes down (the metadata moves with it), the
# tail 2 bytes in; r0 = the two helpers' returns (low bytes) and data_end - data after them
MOVES = f"""
r6 = r1
r2 = -8
call {HELPER_IDS["xdp_adjust_head"]}
r7 = r0
r7 &= 0xff
r1 = r6
r2 = -2
call {HELPER_IDS["xdp_adjust_tail"]}
r0 &= 0xff
r0 <<= 8
r0 |= r7
r2 = *(u32 *)(r6 + 0)
r3 = *(u32 *)(r6 + 4)
r3 -= r2
r3 <<= 16
r0 |= r3
exit
"""
PROGRAMS = {"sees": SEES, "moves": MOVES}
RUNS = [(p, name, ctx, data) for p in PROGRAMS for name, ctx, data in INPUTS]


def pybpf_results(engine: str) -> list:
    """Per program and input: [errno name] for a refusal, else [retval, data_out hex] and, when
    a ctx_in was given, ctx_out hex (the kernel writes one only then)."""
    import pybpf
    out = []
    for prog, text in PROGRAMS.items():
        lp = pybpf.VM().load(pybpf.assemble(text), prog_type="xdp", engine=engine)
        for _, ctx, data in INPUTS:
            try:
                r0 = lp.run(ctx=bytearray(ctx) if ctx is not None else None, data=data)
            except pybpf.VMError as e:
                out.append([errno.errorcode.get(e.errno, str(e))])
                continue
            out.append([r0 & 0xFFFFFFFF, lp.last_data.hex()]
                       + ([bytes(lp.last_ctx).hex()] if ctx is not None else []))
    return out


def kernel_results() -> list:
    import kernel_bpf as kb
    import pybpf
    out = []
    for prog, text in PROGRAMS.items():
        fd, log = kb.prog_load(pybpf.assemble(text).to_bytes(), "xdp")
        assert fd >= 0, log
        try:
            for _, ctx, data in INPUTS:
                try:
                    r, dout, cout = kb.test_run(fd, ctx=ctx, data=data or None,
                                                data_out_size=len(data) + 256,
                                                ctx_out_size=24 if ctx else 0)
                except kb.KernelError as e:
                    out.append([errno.errorcode[e.errno]])
                    continue
                out.append([r, dout.hex()] + ([cout.hex()] if ctx else []))
        finally:
            import os
            os.close(fd)
    return out


def _diffs(mine: list, theirs: list, who: str) -> list[str]:
    what = ("retval", "data_out", "ctx_out")
    return [f"{prog} {name}: pybpf {a} {who} {b} (" +
            ", ".join(w for w, x, y in zip(what, a, b) if x != y) + ")"
            for (prog, name, _, _), a, b in zip(RUNS, mine, theirs) if a != b]


CASES = {"jit": lambda: pybpf_results("jit")}


@pytest.fixture(scope="module")
def jit_results():
    return run_child(__file__, CASES)


@pytest.fixture(scope="module")
def interp():
    return pybpf_results("interp")


@pytest.mark.kernel
def test_the_interpreter_takes_every_input_as_the_kernel_does(interp):
    from kernel_probe import require_kernel
    require_kernel("test_run:xdp")
    theirs = kernel_results()
    assert not _diffs(interp, theirs, "kernel")
    # the inputs cover refusals with each errno and runs with fragments
    kinds = {r[0] for r in theirs if len(r) == 1}
    assert kinds == {"EINVAL", "ENODEV", "ENOMEM", "E2BIG"}, kinds
    assert sum(len(r) >= 2 for r in theirs) >= 28
    # ctx_out compared on every run given a ctx_in, some with the pointers moved
    outs = [bytes.fromhex(r[2]) for r in theirs if len(r) == 3]
    assert len(outs) >= 16 and any(struct.unpack("<2I", o[:8]) != (4, 20) for o in outs)


@pytest.mark.jit
def test_the_jit_takes_every_input_as_the_interpreter(jit_results, interp):
    assert_case_passed(jit_results, "jit")
    assert not _diffs(jit_results[0]["jit"]["detail"], interp, "interp")


def test_a_short_packet_is_refused_with_einval(interp):
    names = [n for _, n, _, _ in RUNS]
    assert interp[names.index("13 bytes")] == ["EINVAL"]
    assert interp[names.index("14 bytes")][0] == 14 | 1 << 24


def test_fragments_hold_what_the_linear_part_does_not(interp):
    names = [n for _, n, _, _ in RUNS]
    r0, out = interp[names.index("fragments 10000")]
    assert r0 & 0xFFFF == 3520 and bytes.fromhex(out) == pattern(10000)



def test_ctx_out_holds_offsets_from_data_meta(interp):
    """xdp_convert_buff_to_md: data = the metadata length, data_end = the linear part's end,
    both from data_meta after the run; the other fields are the ctx_in's (ingress_ifindex 0
    stays 0 although the program saw the loopback's 1)."""
    at = [(p, n) for p, n, _, _ in RUNS].index(("moves", "ctx 4 bytes of metadata"))
    r0, _out, ctx_out = interp[at]
    assert r0 & 0xFFFF == 0 and r0 >> 16 == 20 - 4 + 8 - 2      # both helpers returned 0
    assert struct.unpack("<6I", bytes.fromhex(ctx_out)) == (4, 4 + 16 + 8 - 2, 0, 0, 0, 0)
    see = RUNS.index(("sees", "ctx ingress_ifindex 1", md(data_end=20, ifi=1), pattern(20)))
    assert interp[see][0] >> 24 == 1
    assert struct.unpack("<6I", bytes.fromhex(interp[see][2])) == (0, 20, 0, 1, 0, 0)

if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CASES, sys.argv[2:] or list(CASES)))
