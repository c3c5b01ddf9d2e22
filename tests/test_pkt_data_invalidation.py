"""Helpers that may move the packet invalidate every packet pointer (the kernel's
bpf_helper_changes_pkt_data / clear_all_pkt_pointers), driven by ``Prototype.changes_pkt_data``.

Each case states the running kernel's verdict and message (Linux 6.18, root: an invalidated
pointer becomes an unknown scalar, so a later access is ``invalid mem access 'scalar'``); where
bpf() is permitted each case is loaded into the kernel too. The helpers are registered with
their rows from the one table, so this checks the flag and the verifier whatever engine
implements them.
"""
from __future__ import annotations

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "verifier"))

import kernel_verifier as kv  # noqa: E402
import pybpf  # noqa: E402
from pybpf import VerifierError  # noqa: E402
from pybpf.helper_names import HELPER_IDS  # noqa: E402
from pybpf.verifier import protos  # noqa: E402

KERNEL = kv.available()

# r7 = a packet pointer proven to have one byte; then a call; then a read through r7
_TEMPLATE = """
r6 = r1
r2 = *(u32 *)(r1 + 0)
r3 = *(u32 *)(r1 + 4)
r7 = r2
r4 = r2
r4 += 1
if r4 > r3 goto out
r1 = r6
{setup}
call bpf_{helper}
r0 = *(u8 *)(r7 + 0)
out:
r0 = 2
exit
"""

# (helper, argument setup, kernel verdict, kernel message)
CASES = [
    ("xdp_adjust_head", "r2 = 0", "reject", "R7 invalid mem access 'scalar'"),
    ("xdp_adjust_tail", "r2 = 0", "reject", "R7 invalid mem access 'scalar'"),
    # Linux 6.18 as built here answers NULL from xdp_func_proto for bpf_xdp_adjust_meta
    # (measured: KERNEL_HELPER_PROG_TYPES has no 54 for any type), and pybpf follows it
    ("xdp_adjust_meta", "r2 = 0", "reject",
     "program of this type cannot use helper bpf_xdp_adjust_meta#54"),
    ("xdp_get_buff_len", "", "accept", ""),
]


def _program(helper: str, setup: str) -> pybpf.Program:
    asm = _TEMPLATE.format(helper=helper, setup=setup)
    text = re.sub(r"call bpf_(\w+)", lambda m: f"call {HELPER_IDS[m[1]]}", asm)
    return pybpf.assemble(text, syntax="llvm", filename=helper)


def _vm_with(helper: str) -> pybpf.VM:
    vm = pybpf.VM()
    proto = protos.helper_proto(helper)
    if proto.id not in vm.helpers:       # until the VM implements it: the table's row
        vm.register_helper(proto.id, lambda *a: 0, helper, proto)
    return vm


def test_the_table_marks_the_kernels_pkt_data_changers():
    # bpf_helper_changes_pkt_data (net/core/filter.c) among the rows the table has
    kernel_list = {"skb_store_bytes", "skb_change_head", "skb_change_tail", "skb_pull_data",
                   "clone_redirect", "skb_vlan_push", "skb_vlan_pop", "skb_change_proto",
                   "skb_change_type", "skb_adjust_room", "l3_csum_replace", "l4_csum_replace",
                   "xdp_adjust_head", "xdp_adjust_meta", "xdp_adjust_tail", "lwt_push_encap",
                   "lwt_seg6_store_bytes", "lwt_seg6_adjust_srh", "lwt_seg6_action",
                   "msg_pull_data", "msg_push_data", "msg_pop_data", "store_hdr_opt"}
    for p in protos.HELPERS.values():
        assert p.changes_pkt_data == (p.name in kernel_list), p.name


@pytest.mark.parametrize("helper,setup,verdict,message", CASES, ids=[c[0] for c in CASES])
def test_packet_pointers_after_the_call(helper, setup, verdict, message):
    prog = _program(helper, setup)
    try:
        _vm_with(helper).verify(prog, prog_type="xdp", full=True)
        got = ("accept", "")
    except VerifierError as e:
        got = ("reject", e.message)
    assert got == (verdict, message)
    if KERNEL:
        k = kv.kernel_verify(prog, "xdp")
        assert ("accept" if k.accepted else "reject", k.message) == (verdict, message)


# --- across subprograms: global functions and tail calls (kernel 6.13+) -------------------------
OBJ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "elf", "pkt_global.o")
# program -> (kernel verdict, message): a global function that changes packet data (itself, in a
# function it calls, or by a tail call) invalidates the caller's packet pointers
GLOBAL_CASES = {
    "stale_after_adjust": ("reject", "R6 invalid mem access 'scalar'"),
    "stale_after_tail_call": ("reject", "R6 invalid mem access 'scalar'"),
    "stale_after_nested": ("reject", "R6 invalid mem access 'scalar'"),
    "valid_after_nothing": ("accept", ""),
    "reload_after_adjust": ("accept", ""),
}


@pytest.mark.parametrize("name", sorted(GLOBAL_CASES))
def test_global_functions_that_change_packet_data(name):
    obj = pybpf.load_elf(OBJ)
    try:
        obj.vm.verify(obj.programs[name], "xdp")
        got = ("accept", "")
    except VerifierError as e:
        got = ("reject", e.message)
    assert got == GLOBAL_CASES[name]
    if KERNEL:
        import kernel_bpf
        from pybpf.elf import parse_object
        o = parse_object(OBJ)
        ko = kernel_bpf.KernelObject(o)
        try:
            ko.load(o.programs[name])
            k = ("accept", "")
        except kernel_bpf.KernelError as e:
            k = ("reject", kv.message_of(e.log))
        finally:
            ko.close()
        assert k == GLOBAL_CASES[name]
