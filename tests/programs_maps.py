"""Map programs shared by tests/test_vm_maps.py (interpreter) and tests/test_jit_maps.py (both
engines): ring buffer output, a tail call that keeps ctx, a self tail-calling counter and
bpf_loop with a summing callback."""
from __future__ import annotations


def ringbuf_prog(fd: int) -> str:
    """Reserves 16 bytes, fills them with mem[0] twice, submits (mem[8] == 0) or discards them,
    then outputs mem[0..8] and returns bpf_ringbuf_query(rb, 0) (the bytes in the buffer)."""
    return f"""
        r6 = r1
        r1 = map_fd({fd}) ll
        r2 = 16
        r3 = 0
        call bpf_ringbuf_reserve
        if r0 == 0 goto +9
        r1 = *(u64 *)(r6 + 0)
        *(u64 *)(r0 + 0) = r1
        *(u64 *)(r0 + 8) = r1
        r7 = r0
        r1 = r7
        r2 = 0
        r3 = *(u64 *)(r6 + 8)
        if r3 != 0 goto +2
        call bpf_ringbuf_submit
        goto +1
        call bpf_ringbuf_discard
        r1 = map_fd({fd}) ll
        r2 = r6
        r3 = 8
        r4 = 0
        call bpf_ringbuf_output
        r1 = map_fd({fd}) ll
        r2 = 0
        call bpf_ringbuf_query
        exit"""


def tail_caller(jt_fd: int) -> str:
    """Tail-calls prog_array slot mem[8] (u32) with ctx kept; falls through to r0 = 1000."""
    return f"""
        r6 = 1000
        r2 = map_fd({jt_fd}) ll
        r3 = *(u32 *)(r1 + 8)
        call bpf_tail_call
        r0 = r6
        exit"""


def tail_chain(jt_fd: int, runs_fd: int) -> str:
    """Counts its runs in array ``runs_fd`` and tail-calls slot 0 of ``jt_fd`` (itself);
    returns 7 when the call falls through."""
    return f"""
        r6 = r1
        r2 = map_value_fd({runs_fd}) + 0 ll
        r3 = 1
        lock *(u64 *)(r2 + 0) += r3
        r1 = r6
        r2 = map_fd({jt_fd}) ll
        r3 = 0
        call bpf_tail_call
        r0 = 7
        exit"""


def bpf_loop_prog(flags: str = "0") -> str:
    """bpf_loop(mem[0] as u32, cb, &sum on the stack, ``flags``) where cb adds i to the sum and
    stops at i = 6; the sum goes to mem[8], r0 is bpf_loop's return."""
    return f"""
    r6 = r1
    *(u64 *)(r10 - 8) = 0
    r1 = *(u32 *)(r6 + 0)
    r2 = func(cb) ll
    r3 = r10
    r3 += -8
    r4 = {flags}
    call bpf_loop
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 8) = r1
    exit
cb:
    r3 = *(u64 *)(r2 + 0)
    r3 += r1
    *(u64 *)(r2 + 0) = r3
    r0 = 0
    if r1 != 6 goto +1
    r0 = 1
    exit"""
