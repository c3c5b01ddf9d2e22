"""Helper, kfunc, subprogram and callback calls, and context accesses, as the kernel verifies them.

Every case states the kernel's verdict and message (Linux 6.18, root; taken from the running
kernel when the cases were written). pybpf's verifier must give the same; where bpf() is
permitted each case is also loaded into the running kernel, so an expectation can never drift
from the oracle. Context accesses are swept offset by offset over every program type and
compared with the kernel (a sample in CI; ``PYBPF_FULL_KERNEL_CHECK=1`` for all 24,960
(type, offset, size, load/store) combinations).
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
from pybpf.insn import make  # noqa: E402
from pybpf.verifier import ctx as ctxrules  # noqa: E402
from pybpf.verifier.state import (PTR_MAYBE_NULL, PTR_TO_PACKET, PTR_TO_PACKET_END,  # noqa: E402
                                  PTR_TO_PACKET_META, PTR_TO_SOCK_COMMON, SCALAR_VALUE)

KERNEL = kv.available()
FULL = os.environ.get("PYBPF_FULL_KERNEL_CHECK") == "1"
NO_KERNEL = "bpf() is not permitted here: no kernel to compare with"

# (name, program type, kernel verdict, kernel message, program in pybpf's LLVM-style assembly)
CASES = [
    ('map_ptr_scalar', 'xdp', 'reject', 'R1 type=scalar expected=map_ptr', """
*(u32 *)(r10 - 4) = 0
r1 = 0
r2 = r10
r2 += -4
call bpf_map_lookup_elem
r0 = 0
exit
"""),
    ('key_is_ctx', 'sched_cls', 'reject', 'R2 type=ctx expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_', """
.map m type=hash key=4 value=8 max_entries=4
r2 = r1
r1 = map[m] ll
call bpf_map_lookup_elem
r0 = 0
exit
"""),
    ('key_from_zeroed_stack_elides_null', 'xdp', 'accept', '', """
.map m type=array key=4 value=8 max_entries=4
*(u64 *)(r10 - 8) = 0
r1 = map[m] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
r0 = *(u64 *)(r0 + 0)
r0 = 0
exit
"""),
    ('key_spilled_const_elides_null', 'xdp', 'accept', '', """
.map m type=array key=4 value=8 max_entries=4
r1 = 3
*(u32 *)(r10 - 8) = r1
r1 = map[m] ll
r2 = r10
r2 += -8
call bpf_map_lookup_elem
r0 = *(u64 *)(r0 + 0)
r0 = 0
exit
"""),
    ('hash_lookup_const_key_may_be_null', 'xdp', 'reject', "R0 invalid mem access 'map_value_or_null'", """
.map m type=hash key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
r1 = map[m] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
r0 = *(u64 *)(r0 + 0)
r0 = 0
exit
"""),
    ('lookup_copies_share_null_check', 'xdp', 'accept', '', """
.map m type=hash key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
r1 = map[m] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
r6 = r0
if r0 == 0 goto +1
r0 = *(u64 *)(r6 + 0)
r0 = 0
exit
"""),
    ('update_value_from_other_map_value', 'sched_cls', 'accept', '', """
.map a type=array key=4 value=8 max_entries=1
.map h type=hash key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
r1 = map[a] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
if r0 == 0 goto +5
r3 = r0
r1 = map[h] ll
r2 = r10
r2 += -4
r4 = 0
call bpf_map_update_elem
r0 = 0
exit
"""),
    ('update_flags_is_pointer_ok_for_root', 'sched_cls', 'accept', '', """
.map h type=hash key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
*(u64 *)(r10 - 16) = 0
r4 = r1
r1 = map[h] ll
r2 = r10
r2 += -4
r3 = r10
r3 += -16
call bpf_map_update_elem
r0 = 0
exit
"""),
    ('update_value_null', 'sched_cls', 'reject', 'R3 type=scalar expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_', """
.map h type=hash key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
r1 = map[h] ll
r2 = r10
r2 += -4
r3 = 0
r4 = 0
call bpf_map_update_elem
r0 = 0
exit
"""),
    ('printk_size_maybe_zero', 'xdp', 'reject', 'R2 invalid zero-sized read: u64=[0,7]', """
*(u64 *)(r10 - 8) = 0
call bpf_get_prandom_u32
r2 = r0
r2 &= 7
r1 = r10
r1 += -8
call bpf_trace_printk
r0 = 0
exit
"""),
    ('printk_size_bounded_ok', 'xdp', 'accept', '', """
*(u64 *)(r10 - 8) = 0
call bpf_get_prandom_u32
r2 = r0
r2 &= 7
r2 += 1
r1 = r10
r1 += -8
call bpf_trace_printk
r0 = 0
exit
"""),
    ('printk_size_negative', 'xdp', 'reject', "R2 min value is negative, either use unsigned or 'var &= const'", """
*(u64 *)(r10 - 8) = 0
call bpf_get_prandom_u32
r2 = r0
r2 -= 4
r1 = r10
r1 += -8
call bpf_trace_printk
r0 = 0
exit
"""),
    ('printk_size_huge', 'xdp', 'reject', "R2 unbounded memory access, use 'var &= const' or 'if (var < const)'", """
*(u64 *)(r10 - 8) = 0
r2 = 536870912
r1 = r10
r1 += -8
call bpf_trace_printk
r0 = 0
exit
"""),
    ('printk_size_is_pointer', 'xdp', 'reject', 'R2 type=fp expected=scalar', """
*(u64 *)(r10 - 8) = 0
r2 = r10
r1 = r10
r1 += -8
call bpf_trace_printk
r0 = 0
exit
"""),
    ('printk_fmt_in_map_value', 'kprobe', 'accept', '', """
.map a type=array key=4 value=16 max_entries=1
*(u32 *)(r10 - 4) = 0
r1 = map[a] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
if r0 == 0 goto +3
r1 = r0
r2 = 16
call bpf_trace_printk
r0 = 0
exit
"""),
    ('printk_fmt_past_map_value', 'kprobe', 'reject', 'R1 min value is outside of the allowed memory range', """
.map a type=array key=4 value=16 max_entries=1
*(u32 *)(r10 - 4) = 0
r1 = map[a] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
if r0 == 0 goto +4
r1 = r0
r1 += 8
r2 = 16
call bpf_trace_printk
r0 = 0
exit
"""),
    ('printk_fmt_lookup_null_elided', 'kprobe', 'accept', '', """
.map a type=array key=4 value=16 max_entries=1
*(u32 *)(r10 - 8) = 0
r1 = map[a] ll
r2 = r10
r2 += -8
call bpf_map_lookup_elem
r1 = r0
r2 = 16
call bpf_trace_printk
r0 = 0
exit
"""),
    ('comm_zero_size', 'kprobe', 'reject', 'R2 invalid zero-sized read: u64=[0,0]', """
r1 = r10
r1 += -16
r2 = 0
call bpf_get_current_comm
r0 = 0
exit
"""),
    ('comm_into_uninit_stack', 'kprobe', 'accept', '', """
r1 = r10
r1 += -16
r2 = 16
call bpf_get_current_comm
r0 = *(u64 *)(r10 - 16)
r0 = 0
exit
"""),
    ('comm_into_rdonly_ctx', 'kprobe', 'reject', 'R1 type=ctx expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_', """
r2 = 16
call bpf_get_current_comm
r0 = 0
exit
"""),
    ('probe_read_into_packet_refused', 'xdp', 'reject', 'helper access to the packet is not allowed', """
r2 = *(u32 *)(r1 + 4)
r1 = *(u32 *)(r1 + 0)
r3 = r1
r3 += 8
if r3 > r2 goto +3
r2 = 8
r3 = 0
call bpf_probe_read_kernel
r0 = 2
exit
"""),
    ('lookup_key_in_checked_packet', 'xdp', 'accept', '', """
.map h type=hash key=4 value=8 max_entries=4
r2 = *(u32 *)(r1 + 4)
r6 = *(u32 *)(r1 + 0)
r3 = r6
r3 += 4
if r3 > r2 goto +4
r1 = map[h] ll
r2 = r6
call bpf_map_lookup_elem
r0 = 2
exit
"""),
    ('probe_read_str_retval_bounded', 'kprobe', 'accept', '', """
.map a type=array key=4 value=32 max_entries=1
r1 = r10
r1 += -16
r2 = 16
r3 = 0
call bpf_probe_read_kernel_str
if r0 s< 0 goto +10
r6 = r0
*(u32 *)(r10 - 20) = 0
r1 = map[a] ll
r2 = r10
r2 += -20
call bpf_map_lookup_elem
if r0 == 0 goto +2
r0 += r6
*(u8 *)(r0 + 0) = 1
r0 = 0
exit
"""),
    ('smp_id_retval_bounded', 'xdp', 'accept', '', """
.map a type=array key=4 value=256 max_entries=1
call bpf_get_smp_processor_id
r6 = r0
*(u32 *)(r10 - 4) = 0
r1 = map[a] ll
r2 = r10
r2 += -4
call bpf_map_lookup_elem
if r0 == 0 goto +2
r0 += r6
*(u8 *)(r0 + 0) = 1
r0 = 2
exit
"""),
    ('ringbuf_submit_unchecked', 'tracepoint', 'reject', 'R1 type=ringbuf_mem_or_null expected=ringbuf_mem', """
.map rb type=ringbuf key=0 value=0 max_entries=4096
r1 = map[rb] ll
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
r1 = r0
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
"""),
    ('ringbuf_submit_with_offset', 'tracepoint', 'reject', 'R1 must have zero offset when passed to release func or trusted arg to kfunc', """
.map rb type=ringbuf key=0 value=0 max_entries=4096
r1 = map[rb] ll
r2 = 16
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0 goto +4
r1 = r0
r1 += 8
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
"""),
    ('ringbuf_discard_ok', 'tracepoint', 'accept', '', """
.map rb type=ringbuf key=0 value=0 max_entries=4096
r1 = map[rb] ll
r2 = 16
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0 goto +4
*(u64 *)(r0 + 8) = 7
r1 = r0
r2 = 0
call bpf_ringbuf_discard
r0 = 0
exit
"""),
    ('ringbuf_submit_stack', 'tracepoint', 'reject', 'R1 type=fp expected=ringbuf_mem', """
*(u64 *)(r10 - 8) = 0
r1 = r10
r1 += -8
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
"""),
    ('ringbuf_use_after_submit', 'tracepoint', 'reject', "R6 invalid mem access 'scalar'", """
.map rb type=ringbuf key=0 value=0 max_entries=4096
r1 = map[rb] ll
r2 = 16
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0 goto +5
r6 = r0
r1 = r0
r2 = 0
call bpf_ringbuf_submit
*(u64 *)(r6 + 0) = 1
r0 = 0
exit
"""),
    ('ringbuf_output_stack_ok', 'xdp', 'accept', '', """
.map rb type=ringbuf key=0 value=0 max_entries=4096
*(u64 *)(r10 - 8) = 0
r1 = map[rb] ll
r2 = r10
r2 += -8
r3 = 8
r4 = 0
call bpf_ringbuf_output
call bpf_get_prandom_u32
r1 = map[rb] ll
r2 = 0
call bpf_ringbuf_query
r0 = 2
exit
"""),
    ('tail_call_holding_reference', 'sched_cls', 'reject', 'tail_call would lead to reference leak', """
.map rb type=ringbuf key=0 value=0 max_entries=4096
.map jt type=prog_array key=4 value=4 max_entries=4
r6 = r1
r1 = map[rb] ll
r2 = 16
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0 goto +8
r7 = r0
r1 = r6
r2 = map[jt] ll
r3 = 0
call bpf_tail_call
r1 = r7
r2 = 0
call bpf_ringbuf_discard
r0 = 0
exit
"""),
    ('tail_call_modified_ctx', 'sched_cls', 'reject', 'dereference of modified ctx ptr R1 off=8 disallowed', """
.map jt type=prog_array key=4 value=4 max_entries=4
r1 += 8
r2 = map[jt] ll
r3 = 0
call bpf_tail_call
r0 = 0
exit
"""),
    ('pop_on_hash', 'xdp', 'reject', 'cannot pass map_type 1 into func bpf_map_pop_elem#88', """
.map h type=hash key=4 value=8 max_entries=4
r1 = map[h] ll
r2 = r10
r2 += -8
call bpf_map_pop_elem
r0 = 2
exit
"""),
    ('queue_push_pop_ok', 'xdp', 'accept', '', """
.map q type=queue key=0 value=8 max_entries=4
*(u64 *)(r10 - 8) = 5
r1 = map[q] ll
r2 = r10
r2 += -8
r3 = 0
call bpf_map_push_elem
r1 = map[q] ll
r2 = r10
r2 += -16
call bpf_map_pop_elem
r0 = *(u64 *)(r10 - 16)
r0 = 2
exit
"""),
    ('queue_pop_into_short_stack', 'xdp', 'reject', 'invalid write to stack R2 off=-4 size=8', """
.map q type=queue key=0 value=8 max_entries=4
r1 = map[q] ll
r2 = r10
r2 += -4
call bpf_map_pop_elem
r0 = 2
exit
"""),
    ('percpu_lookup_on_array', 'xdp', 'reject', 'cannot pass map_type 2 into func bpf_map_lookup_percpu_elem#195', """
.map a type=array key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
r1 = map[a] ll
r2 = r10
r2 += -4
r3 = 0
call bpf_map_lookup_percpu_elem
r0 = 2
exit
"""),
    ('percpu_lookup_ok', 'xdp', 'accept', '', """
.map a type=percpu_array key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
r1 = map[a] ll
r2 = r10
r2 += -4
r3 = 0
call bpf_map_lookup_percpu_elem
if r0 == 0 goto +1
r0 = *(u64 *)(r0 + 0)
r0 = 2
exit
"""),
    ('delete_on_array_passes_verifier', 'xdp', 'accept', '', """
.map a type=array key=4 value=8 max_entries=4
*(u32 *)(r10 - 4) = 0
r1 = map[a] ll
r2 = r10
r2 += -4
call bpf_map_delete_elem
r0 = 2
exit
"""),
    ('helper_clobbers_r1_to_r5', 'xdp', 'reject', 'R1 !read_ok', """
r6 = r1
call bpf_ktime_get_ns
r0 = r1
r0 = 2
exit
"""),
    ('helper_keeps_r6_to_r9', 'xdp', 'accept', '', """
r6 = r1
call bpf_ktime_get_ns
r0 = *(u32 *)(r6 + 0)
r0 = 2
exit
"""),
    ('callee_cannot_read_caller_r6', 'xdp', 'reject', 'R6 !read_ok', """
r6 = 1
call f
r0 = 2
exit
f:
r0 = r6
exit
"""),
    ('caller_r1_clobbered_after_call', 'xdp', 'reject', 'R1 !read_ok', """
call f
r0 = r1
exit
f:
r0 = 2
exit
"""),
    ('subprog_returns_ctx', 'xdp', 'accept', '', """
call f
r0 = *(u32 *)(r0 + 12)
r0 = 2
exit
f:
r0 = r1
exit
"""),
    ('subprog_writes_caller_stack', 'xdp', 'accept', '', """
r1 = r10
r1 += -8
call f
r0 = *(u64 *)(r10 - 8)
r0 = 2
exit
f:
*(u64 *)(r1 + 0) = 7
r0 = 0
exit
"""),
    ('loop_callback_counts_in_ctx', 'xdp', 'accept', '', """
*(u64 *)(r10 - 8) = 0
r1 = 3
r2 = func(cb) ll
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 2
exit
cb:
r3 = *(u64 *)(r2 + 0)
r3 += 1
*(u64 *)(r2 + 0) = r3
r0 = 0
exit
"""),
    ('loop_callback_ctx_null_deref', 'xdp', 'reject', "R2 invalid mem access 'scalar'", """
r1 = 3
r2 = func(cb) ll
r3 = 0
r4 = 0
call bpf_loop
r0 = 2
exit
cb:
r0 = *(u64 *)(r2 + 0)
r0 = 0
exit
"""),
    ('loop_callback_returns_pointer', 'xdp', 'reject', 'cannot return stack pointer to the caller', """
r1 = 3
r2 = func(cb) ll
r3 = 0
r4 = 0
call bpf_loop
r0 = 2
exit
cb:
r0 = r10
exit
"""),
    ('key_spilled_const_out_of_range', 'xdp', 'reject', "R0 invalid mem access 'map_value_or_null'", """
.map m type=array key=4 value=8 max_entries=4
r1 = 4
*(u32 *)(r10 - 8) = r1
r1 = map[m] ll
r2 = r10
r2 += -8
call bpf_map_lookup_elem
r0 = *(u64 *)(r0 + 0)
r0 = 0
exit
"""),
    ('probe_read_str_retval_past_value', 'kprobe', 'reject', 'R0 max value is outside of the allowed memory range', """
.map a type=array key=4 value=16 max_entries=1
r1 = r10
r1 += -16
r2 = 16
r3 = 0
call bpf_probe_read_kernel_str
if r0 s< 0 goto +10
r6 = r0
*(u32 *)(r10 - 20) = 0
r1 = map[a] ll
r2 = r10
r2 += -20
call bpf_map_lookup_elem
if r0 == 0 goto +2
r0 += r6
*(u8 *)(r0 + 0) = 1
r0 = 0
exit
"""),
    ('global_data_fmt_for_printk', 'kprobe', 'accept', '', """
.map rodata type=array key=4 value=8 max_entries=1
r1 = map_value[rodata] + 0 ll
r2 = 8
call bpf_trace_printk
r0 = 0
exit
"""),
    ('loop_not_const_nr_ok', 'xdp', 'accept', '', """
call bpf_get_prandom_u32
r1 = r0
r2 = func(cb) ll
r3 = 0
r4 = 0
call bpf_loop
r0 = 2
exit
cb:
r0 = 1
exit
"""),
    ('loop_ctx_not_stack', 'xdp', 'reject', 'R3 type=ctx expected=fp', """
r3 = r1
r1 = 3
r2 = func(cb) ll
r4 = 0
call bpf_loop
r0 = 2
exit
cb:
r0 = 0
exit
"""),
]


def _assemble(asm: str, name: str) -> pybpf.Program:
    text = re.sub(r"call bpf_(\w+)", lambda m: f"call {HELPER_IDS[m[1]]}" if m[1] in HELPER_IDS
                  else m[0], asm)
    prog = pybpf.assemble(text, syntax="llvm", filename=name)
    prog.name = name[:15]
    return prog


def _pybpf(prog, prog_type: str, attach: str | None = None) -> tuple[str, str]:
    try:
        pybpf.VM().verify(prog, prog_type=prog_type, full=True, attach_type=attach)
    except VerifierError as e:
        return "reject", e.message
    return "accept", ""


@pytest.mark.parametrize("name,prog_type,verdict,message,asm", CASES, ids=[c[0] for c in CASES])
def test_call(name, prog_type, verdict, message, asm):
    prog = _assemble(asm, name)
    assert _pybpf(prog, prog_type) == (verdict, message)
    if KERNEL:
        k = kv.kernel_verify(prog, prog_type)
        assert ("accept" if k.accepted else "reject", k.message) == (verdict, message), \
            "the kernel no longer agrees with this expectation"


# Arena kfuncs. The expectations follow kernel 6.18's check_kfunc_args (``__map`` argument:
# "pointer in R%d isn't map pointer"; scalars: "R%d is not a scalar"; a ``void *`` return is an
# unknown scalar); this kernel refuses arena maps, so the kernel check below usually skips.
ARENA = ".map ar type=arena max_entries=4 flags=0x400\n"
ALLOC = "r2 = 0\nr3 = 1\nr4 = -1\nr5 = 0\ncall bpf_arena_alloc_pages\n"
ARENA_CASES = [
    ("arena_alloc_free_ok", "accept", "", ARENA + "r1 = map[ar] ll\n" + ALLOC +
     "r2 = r0\nr1 = map[ar] ll\nr3 = 1\ncall bpf_arena_free_pages\nr0 = 0\nexit"),
    ("arena_alloc_map_not_map", "reject", "pointer in R1 isn't map pointer",
     ARENA + "r1 = 0\n" + ALLOC + "r0 = 0\nexit"),
    ("arena_alloc_count_is_pointer", "reject", "R3 is not a scalar",
     ARENA + "r1 = map[ar] ll\nr2 = 0\nr3 = r10\nr4 = -1\nr5 = 0\n"
     "call bpf_arena_alloc_pages\nr0 = 0\nexit"),
    # check_kfunc_args reads scalar args without check_reg_arg (measured with bpf_strchr:
    # tests/verifier/strings/strchr_char_uninit.vt; this kernel refuses arena maps)
    ("arena_alloc_flags_uninit", "reject", "R5 is not a scalar",
     ARENA + "r1 = map[ar] ll\nr2 = 0\nr3 = 1\nr4 = -1\n"
     "call bpf_arena_alloc_pages\nr0 = 0\nexit"),
    ("arena_alloc_result_is_scalar", "reject", "R0 invalid mem access 'scalar'",
     ARENA + "r1 = map[ar] ll\n" + ALLOC + "if r0 == 0 goto +1\nr0 = *(u64 *)(r0 + 0)\n"
     "r0 = 0\nexit"),
    ("arena_reserve_clobbers_args", "reject", "R1 !read_ok",
     ARENA + "r1 = map[ar] ll\nr2 = 0\nr3 = 1\ncall bpf_arena_reserve_pages\n"
     "r0 = r1\nexit"),
]


@pytest.mark.parametrize("name,verdict,message,asm", ARENA_CASES, ids=[c[0] for c in ARENA_CASES])
def test_arena_kfunc_call(name, verdict, message, asm):
    assert _pybpf(_assemble(asm, name), "syscall") == (verdict, message)


@pytest.mark.skipif(not KERNEL, reason=NO_KERNEL)
@pytest.mark.parametrize("name,verdict,message,asm", ARENA_CASES, ids=[c[0] for c in ARENA_CASES])
def test_arena_kfunc_call_in_the_kernel(name, verdict, message, asm):
    refused = kv.map_type_ok("arena")
    if refused:
        pytest.skip(f"this kernel refuses arena maps: {refused}")
    k = kv.kernel_verify(_assemble(asm, name), "syscall")
    assert ("accept" if k.accepted else "reject", k.message) == (verdict, message)


def test_cases_are_balanced():
    verdicts = [c[2] for c in CASES]
    assert len(CASES) >= 50
    assert verdicts.count("accept") >= 0.4 * len(CASES) <= verdicts.count("reject")


# --- context accesses ----------------------------------------------------------------------------
SZ = {1: "b", 2: "h", 4: "w", 8: "dw"}
TYPES = ("socket_filter", "sched_cls", "cgroup_skb", "lwt_in", "xdp", "tracepoint", "kprobe",
         "syscall", "lwt_out", "lwt_xmit", "flow_dissector", "raw_tracepoint", "sk_lookup",
         "cgroup_sock", "cgroup_sock_addr", "sk_msg", "sock_ops", "perf_event")
# program types whose rules depend on the expected attach type: each one swept with these
ATTACHED = (("cgroup_sock", "cgroup_inet4_post_bind"), ("cgroup_sock", "cgroup_inet6_post_bind"),
            ("cgroup_sock", "cgroup_inet_sock_release"),
            ("cgroup_sock_addr", "cgroup_inet6_connect"), ("cgroup_sock_addr", "cgroup_udp4_sendmsg"),
            ("cgroup_sock_addr", "cgroup_udp6_sendmsg"), ("cgroup_sock_addr", "cgroup_udp4_recvmsg"),
            ("cgroup_sock_addr", "cgroup_unix_connect"), ("xdp", "xdp_devmap"))
SWEEP = [(t, None) for t in TYPES] + list(ATTACHED)


def _access_prog(off: int, size: int, mode: str) -> pybpf.Program:
    if mode == "ldx":
        body = make(f"ldx{SZ[size]}", 0, 1, off=off)
    elif mode == "ldsx":
        body = make(f"ldxs{SZ[size]}", 0, 1, off=off)
    elif mode == "stx":
        body = make("mov64_imm", 2, imm=0) + make(f"stx{SZ[size]}", 1, 2, off=off)
    else:
        body = make(f"st{SZ[size]}", 1, off=off, imm=0)
    # r0 = 1 lies in every return range (recvmsg hooks must return 1)
    return pybpf.Program(body + make("mov64_imm", 0, imm=1) + make("exit"))


def _sweep(prog_type: str):
    """(off, size, mode) combinations to compare: all of them with FULL, else a sample that
    still crosses every field boundary of __sk_buff / xdp_md / pt_regs at every size."""
    lo = -8
    hi = min(200, ctxrules.CTX_LIMIT[prog_type] + 8)
    for off in range(lo, hi):
        for size in (1, 2, 4, 8):
            for mode in ("ldx", "ldsx", "stx", "st"):
                if mode == "ldsx" and size == 8:
                    continue
                if not FULL and (off % max(size, 4) or mode == "st" and off % 8):
                    continue
                yield off, size, mode


def _rule(prog_type, off, size, mode, attach=None):
    from pybpf.attach_types import default_attach_type
    return ctxrules.ctx_access(prog_type, off, size, mode in ("stx", "st"),
                               sign_ext=mode == "ldsx",
                               attach_type=attach or default_attach_type(prog_type) or
                               kv.EXPECTED_ATTACH.get(prog_type))


@pytest.mark.skipif(not KERNEL, reason=NO_KERNEL)
@pytest.mark.parametrize("prog_type,attach", SWEEP, ids=[f"{t}-{a}" if a else t for t, a in SWEEP])
def test_ctx_access_matches_the_kernel(prog_type, attach):
    wrong = []
    n = 0
    for off, size, mode in _sweep(prog_type):
        prog = _access_prog(off, size, mode)
        k = kv.kernel_verify(prog, prog_type, attach_type=attach)
        rule = _rule(prog_type, off, size, mode, attach)
        n += 1
        if rule.ok != k.accepted or (not k.accepted and rule.error != k.message):
            wrong.append((off, size, mode, k.message, rule))
    assert n > 100 and not wrong, wrong[:10]


@pytest.mark.parametrize("prog_type,attach", SWEEP + [("mem", None)],
                         ids=[f"{t}-{a}" if a else t for t, a in SWEEP + [("mem", None)]])
def test_verifier_applies_the_ctx_rules(prog_type, attach):
    """pybpf's whole verifier (not only ctx.py) gives each access the rule's verdict."""
    attach = attach or kv.EXPECTED_ATTACH.get(prog_type)
    for off, size, mode in _sweep(prog_type):
        if off % 8 and size != 4:          # keep it quick: one size per unaligned offset
            continue
        rule = _rule(prog_type, off, size, mode, attach)
        verdict, message = _pybpf(_access_prog(off, size, mode), prog_type, attach)
        if prog_type == "mem" and mode.startswith("st") and off < 0:
            continue
        assert (verdict == "accept") == rule.ok, (off, size, mode, message)
        if not rule.ok:
            assert message == rule.error


def test_ctx_rules_by_hand():
    """What filter.c says, field by field (independent of any kernel)."""
    acc = ctxrules.ctx_access
    # packet pointers: 4-byte loads only, never sign-extended, never written
    assert acc("xdp", 0, 4, False).type == PTR_TO_PACKET
    assert acc("xdp", 4, 4, False).type == PTR_TO_PACKET_END
    assert acc("xdp", 8, 4, False).type == PTR_TO_PACKET_META
    assert not acc("xdp", 0, 4, False, sign_ext=True).ok
    assert not acc("xdp", 0, 2, False).ok and not acc("xdp", 12, 4, True).ok
    assert not acc("xdp", 20, 4, False).ok           # egress_ifindex: devmap programs only
    assert acc("sched_cls", 76, 4, False).type == PTR_TO_PACKET
    assert acc("sched_cls", 140, 4, False).type == PTR_TO_PACKET_META
    assert acc("cgroup_skb", 80, 4, False).type == PTR_TO_PACKET_END
    assert not acc("cgroup_skb", 140, 4, False).ok    # no data_meta
    assert not acc("socket_filter", 76, 4, False).ok  # socket filters see no packet pointers
    assert acc("lwt_in", 76, 4, False).type == PTR_TO_PACKET
    sk = acc("sched_cls", 168, 8, False)
    assert sk.type == PTR_TO_SOCK_COMMON and sk.flags == PTR_MAYBE_NULL
    # narrow loads of 4-byte fields, whole-field writes, cb[] at any size
    assert acc("socket_filter", 1, 1, False).ok and acc("socket_filter", 2, 2, False).ok
    assert acc("socket_filter", 2, 2, False).field_size == 4
    assert not acc("socket_filter", 1, 2, False).ok  # misaligned
    assert not acc("sched_cls", 8, 2, True).ok and acc("sched_cls", 8, 4, True).ok  # mark
    assert acc("socket_filter", 49, 1, True).ok and acc("socket_filter", 56, 8, True).ok
    assert not acc("socket_filter", 64, 8, False).ok  # past cb[4]
    assert not acc("socket_filter", 8, 4, True).ok    # socket filters write cb[] only
    assert acc("sched_cls", 152, 8, True).ok and not acc("sched_cls", 152, 4, False).ok
    assert acc("sched_cls", 180, 1, False).ok and not acc("socket_filter", 180, 1, False).ok
    assert not acc("sched_cls", 144, 8, False).ok     # flow_keys
    assert not acc("sched_cls", 92, 4, False).ok      # remote_ip4: sockets only
    assert acc("cgroup_skb", 92, 4, False).ok and not acc("cgroup_skb", 92, 2, False).ok
    # tracing: read-only; kprobe within pt_regs, tracepoint past the common header
    assert acc("kprobe", 160, 8, False).ok and not acc("kprobe", 168, 1, False).ok
    assert not acc("kprobe", 0, 8, True).ok
    assert not acc("tracepoint", 0, 8, False).ok and acc("tracepoint", 8, 8, False).ok
    assert acc("tracepoint", 8184, 8, False).ok and not acc("tracepoint", 8192, 1, False).ok
    # syscall and mem: any aligned offset below U16_MAX, read and write
    for t in ("syscall", "mem"):
        assert acc(t, 4096, 8, True).ok and not acc(t, 4, 8, False).ok
        assert not acc(t, 0xFFFF, 1, False).ok and acc(t, 0xFFFE, 2, False).ok
    r = acc("xdp", 24, 4, False)
    assert not r.ok and r.error == "invalid bpf_context access off=24 size=4"
    assert acc("sched_cls", 0, 4, False).type == SCALAR_VALUE
    assert ctxrules.field_name("sched_cls", 56) == "cb[2]"
    assert ctxrules.field_name("xdp", 4) == "data_end"


def test_tracepoint_negative_offsets():
    """Linux 6.18 accepts negative tracepoint ctx offsets (tp_prog_is_valid_access compares
    ``off < sizeof(void *)`` unsigned), down to the instruction's -32768, aligned to the size;
    so does pybpf (the run gives the program zeros there: tests/test_ctx_types.py)."""
    for off, size, ok in ((-8, 8, True), (-32768, 8, True), (-4, 8, False), (-2, 2, True),
                          (-3, 2, False), (-1, 1, True)):
        r = ctxrules.ctx_access("tracepoint", off, size, False)
        assert r.ok == ok, (off, size)
        if not ok:
            assert r.error == f"invalid bpf_context access off={off} size={size}"
        if KERNEL:
            assert kv.kernel_verify(_access_prog(off, size, "ldx"), "tracepoint").accepted == ok


def test_ctx_rules_cover_every_program_type():
    from pybpf.runtime.contexts import PROG_TYPES
    from pybpf.verifier import protos
    assert set(PROG_TYPES) == set(protos.PROG_TYPES) == set(ctxrules.CTX_LIMIT)


# --- global functions (BTF linkage global) ---------------------------------------------------------
def _btf_kinds(mutate=None):
    import dataclasses
    obj = pybpf.load_elf(os.path.join(os.path.dirname(__file__), "data", "elf", "btf_kinds.o"))
    prog = obj.programs["kinds"]
    insns = list(prog.insns)
    for pc, form_name, imm in mutate or ():
        insns[pc] = make(form_name, 1, imm=imm)[0]
    return obj, dataclasses.replace(prog, insns=insns)


def test_global_function_parameters_from_btf():
    from pybpf.verifier.calls import global_func_args
    _obj, prog = _btf_kinds()
    (p,) = global_func_args(prog, "sched_cls", 67)          # sum_fields(struct point *p)
    assert (p.kind, p.nullable, p.error) == ("mem", True, "")
    point = next(i for i, t in enumerate(prog.btf.types)
                 if t.kind == "struct" and t.name == "point")
    assert p.mem_size == prog.btf.size_of(point) > 0
    arena = pybpf.load_elf(os.path.join(os.path.dirname(__file__), "..", "samples", "c",
                                        "arena_htab.o"))
    ins = arena.programs["htab_insert_prog"]
    start = next(s for s, i in ins.func_info.items() if i.name == "htab_insert")
    assert [a.kind for a in global_func_args(ins, "syscall", start)] == \
        ["arena", "scalar", "scalar"]                        # __arg_arena htab, key, value


# sum_fields is called at insn 24 with r1 = r10 - 56 (a 56-byte struct point on the stack).
# Expectations per the kernel's btf_check_func_arg_match / check_mem_reg (not compared with the
# kernel here: the object's map references need libbpf-style fd_array loading).
@pytest.mark.parametrize("mutate,verdict", [
    ((), "accept"),
    (((23, "add64_imm", -48),), "Caller passes invalid args into func#2 ('sum_fields')"),
    (((22, "mov64_imm", 5), (23, "add64_imm", 0)),
     "Caller passes invalid args into func#2 ('sum_fields')"),
    (((22, "mov64_imm", 0), (23, "add64_imm", 0)), "accept"),   # NULL is fine: nullable
], ids=["stack_struct", "struct_past_frame", "scalar_pointer", "null_pointer"])
def test_global_function_call_arguments(mutate, verdict):
    obj, prog = _btf_kinds(mutate)
    try:
        obj.vm.load(prog, engine="interp")
        got = "accept"
    except VerifierError as e:
        got = e.message
    assert got == verdict


@pytest.mark.skipif(not KERNEL, reason=NO_KERNEL)
def test_sock_common_access_matches_the_kernel():
    """Loads through __sk_buff.sk after its NULL check (bpf_sock_common_is_valid_access)."""
    wrong = []
    for off in range(-4, 84):
        for size in (1, 2, 4, 8):
            prog = pybpf.Program(make("ldxdw", 2, 1, off=168) + make("jeq64_imm", 2, off=1) +
                                 make(f"ldx{SZ[size]}", 0, 2, off=off) +
                                 make("mov64_imm", 0, imm=0) + make("exit"))
            k = kv.kernel_verify(prog, "sched_cls")
            ours = ctxrules.sock_access("sock_common", off, size)
            if ours != k.accepted or not k.accepted and \
                    k.message != f"R2 invalid sock_common access off={off} size={size}":
                wrong.append((off, size, k.message))
    assert not wrong, wrong[:10]


def test_mem_type_passes_its_memory_to_helpers():
    """pybpf's own ``mem`` type: r1 is plain memory, so a helper may read or fill it (bounded
    like a direct access, and recorded in max_ctx_offset); the kernel's syscall type refuses
    its ctx there, and pybpf follows the kernel for syscall."""
    asm = "r2 = 8\nr3 = 0\ncall bpf_probe_read_kernel\nr0 = 0\nexit"
    prog = _assemble(asm, "mem_helper")
    assert _pybpf(prog, "mem") == ("accept", "")
    res = pybpf.VM().verify_result(prog, prog_type="mem", full=True)
    assert res.max_ctx_offset >= 8
    msg = ("R1 type=ctx expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, "
           "buf, trusted_ptr_")
    assert _pybpf(prog, "syscall") == ("reject", msg)
    if KERNEL:
        k = kv.kernel_verify(prog, "syscall")
        assert (k.accepted, k.message) == (False, msg)
    vm = pybpf.VM()

    def reach(head: str):
        p = _assemble(head + "r2 = 8\nr3 = 0\ncall bpf_probe_read_kernel\nr0 = 0\nexit", "m")
        try:
            return vm.verify_result(p, prog_type="mem", full=True).max_ctx_offset
        except VerifierError as e:
            return e.message
    assert reach("r1 += 16\n") == 24                   # offsets count: the run needs 24 bytes
    assert reach("r6 = r1\ncall bpf_get_prandom_u32\nr0 &= 255\nr6 += r0\nr1 = r6\n") == 263
    assert reach("r1 += 65530\n") == "invalid bpf_context access off=65530 size=8"
    assert reach("r1 += -8\n") == "invalid bpf_context access off=-8 size=8"
    assert reach("r6 = r1\ncall bpf_get_prandom_u32\nr6 += r0\nr1 = r6\n") == \
        "math between ctx pointer and register with unbounded min value is not allowed"
    key = _assemble(".map h type=hash key=4 value=8 max_entries=4\nr2 = r1\nr2 += 12\n"
                    "r1 = map[h] ll\ncall bpf_map_lookup_elem\nr0 = 0\nexit", "mem_key")
    assert vm.verify_result(key, prog_type="mem", full=True).max_ctx_offset == 16


# bpf_for_each_map_elem: its prototype is in the table, its implementation awaits issue 11; the
# verifier's side (callback(map, key, value, ctx), key read-only) is checked with a stand-in.
FOR_EACH_CASES = [
    ('for_each_cb_key_write', 'xdp', 'reject', 'write to change key R2 not allowed', """
.map m type=array key=4 value=8 max_entries=4
r1 = map[m] ll
r2 = func(cb) ll
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 2
exit
cb:
*(u32 *)(r2 + 0) = 0
r0 = 0
exit
"""),
    ('for_each_cb_value_access', 'xdp', 'accept', '', """
.map m type=array key=4 value=8 max_entries=4
r1 = map[m] ll
r2 = func(cb) ll
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 2
exit
cb:
r0 = *(u64 *)(r3 + 0)
r0 = 0
exit
"""),
    ('for_each_cb_value_oob', 'xdp', 'reject', 'R3 min value is outside of the allowed memory range', """
.map m type=array key=4 value=8 max_entries=4
r1 = map[m] ll
r2 = func(cb) ll
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 2
exit
cb:
r0 = *(u64 *)(r3 + 8)
r0 = 0
exit
"""),
    ('for_each_map_elem_ok', 'xdp', 'accept', '', """
.map m type=array key=4 value=8 max_entries=4
r1 = map[m] ll
r2 = func(cb) ll
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 2
exit
cb:
r0 = 0
exit
"""),
]


@pytest.mark.parametrize("name,prog_type,verdict,message,asm", FOR_EACH_CASES,
                         ids=[c[0] for c in FOR_EACH_CASES])
def test_for_each_map_elem_callback(name, prog_type, verdict, message, asm):
    from pybpf.verifier import protos
    vm = pybpf.VM()
    if 164 not in vm.helpers:
        vm.register_helper(164, lambda *a: 0, "for_each_map_elem",
                           protos.helper_proto("for_each_map_elem"))
    prog = _assemble(asm, name)
    try:
        vm.verify(prog, prog_type=prog_type, full=True)
        got = ("accept", "")
    except VerifierError as e:
        got = ("reject", e.message)
    assert got == (verdict, message)
    if KERNEL:
        k = kv.kernel_verify(prog, prog_type)
        assert ("accept" if k.accepted else "reject", k.message) == (verdict, message)
