"""Hostile programs against the runtime (issue 12): whatever the verifier said, a helper checks
its pointer and size arguments against the run's regions before touching memory, in both
engines, and a program reaches one map value, never the map's own metadata (hash chain links,
the neighbouring array element, ring buffer record headers).

Each case is one of the issue's reproducers or a variant; they run in a child Python
(``python tests/test_hostile_programs.py child``), since before the fix several of them killed
the process with SIGSEGV. A case passes when the run ends in a ``BPFError`` (or a verifier
rejection at load) and the map is still intact afterwards.
"""
from __future__ import annotations

import ctypes
import struct

from support import asm, child_tests

import pybpf
from pybpf.errors import BPFError, MapError, MemoryAccessError, VerifierError


def VM():
    from pybpf.vm import VM as _VM

    return _VM(seed=1)


def outcome(vm, text: str, engine: str, verify: bool = False, **run):
    """The run's r0, or the name of the BPFError class the load or the run raised."""
    try:
        lp = vm.load(asm(text), prog_type=run.pop("prog_type", "mem"), engine=engine,
                     verify=verify)
    except VerifierError:
        return "VerifierError"
    try:
        return lp.run(**run)
    except BPFError as e:
        return type(e).__name__


# -- 1. helpers check their pointer arguments -----------------------------------------------------

def case_issue_repro_ringbuf_submit_of_ctx():
    """The issue's reproducer: ``r2 = 0; call 132 (ringbuf_submit); r0 = 0; exit`` as a
    socket_filter with 64 bytes of data: SIGSEGV in the interpreter before (10 of 10 runs)."""
    out = {}
    for engine in ("interp", "jit"):
        for verify in (True, False):
            r = outcome(VM(), "r2 = 0\ncall 132\nr0 = 0\nexit", engine, verify,
                        prog_type="socket_filter", data=bytes(64))
            assert r in ("MapError", "VerifierError"), (engine, verify, r)
            out[f"{engine} verify={verify}"] = r
    return out


WILD = 0x10          # an address no run may touch (the zero page)


def wild_calls(hash_fd: int, rb_fd: int) -> dict[str, str]:
    """Helper calls with one pointer argument the run may not touch."""
    return {
        "map_lookup_elem key": f"r1 = map_fd({hash_fd}) ll\nr2 = {WILD}\ncall bpf_map_lookup_elem",
        "map_update_elem key": (f"r1 = map_fd({hash_fd}) ll\nr2 = {WILD}\nr3 = r10\nr3 += -8\n"
                                f"*(u64 *)(r10 - 8) = 0\nr4 = 0\ncall bpf_map_update_elem"),
        "map_update_elem value": (f"r1 = map_fd({hash_fd}) ll\nr2 = r10\nr2 += -8\n"
                                  f"*(u64 *)(r10 - 8) = 0\nr3 = {WILD}\nr4 = 0\n"
                                  f"call bpf_map_update_elem"),
        "map_delete_elem key": f"r1 = map_fd({hash_fd}) ll\nr2 = {WILD}\ncall bpf_map_delete_elem",
        "ringbuf_output data": (f"r1 = map_fd({rb_fd}) ll\nr2 = {WILD}\nr3 = 64\nr4 = 0\n"
                                f"call bpf_ringbuf_output"),
        "ringbuf_output size": (f"r1 = map_fd({rb_fd}) ll\nr2 = r10\nr2 += -8\nr3 = 0x40000000\n"
                                f"r4 = 0\ncall bpf_ringbuf_output"),
        "ringbuf_submit wild": f"r1 = {WILD}\nr2 = 0\ncall bpf_ringbuf_submit",
        "probe_read_kernel dst": f"r1 = {WILD}\nr2 = 8\nr3 = r10\nr3 += -8\ncall bpf_probe_read_kernel",
        "trace_printk fmt": f"r1 = {WILD}\nr2 = 4\ncall bpf_trace_printk",
        "get_current_comm buf": f"r1 = {WILD}\nr2 = 16\ncall bpf_get_current_comm",
    }


def case_helpers_refuse_wild_pointers_in_both_engines():
    """Unverified programs passing a pointer outside the run's memory to each helper: a
    MemoryAccessError (or the helper's own MapError), never a signal."""
    out = {}
    for engine in ("interp", "jit"):
        vm = VM()
        h = vm.create_map("hash", 8, 8, 4, name="h")
        rb = vm.create_map("ringbuf", max_entries=4096, name="rb")
        for what, text in wild_calls(h.fd, rb.fd).items():
            r = outcome(vm, text + "\nr0 = 0\nexit", engine)
            assert r in ("MemoryAccessError", "MapError"), (engine, what, r)
            out[f"{engine} {what}"] = r
        assert len(h) == 0 and rb.consume() == []
    return out


def case_ringbuf_sample_submitted_twice_is_refused():
    """Submitting a sample twice (the verifier's OBJ_RELEASE rule): the second is a MapError."""
    out = {}
    for engine in ("interp", "jit"):
        vm = VM()
        rb = vm.create_map("ringbuf", max_entries=4096, name="rb")
        text = f"""
            r1 = map_fd({rb.fd}) ll
            r2 = 8
            r3 = 0
            call bpf_ringbuf_reserve
            if r0 == 0 goto out
            r6 = r0
            *(u64 *)(r6 + 0) = 7
            r1 = r6
            r2 = 0
            call bpf_ringbuf_submit
            r1 = r6
            r2 = 0
            call bpf_ringbuf_submit
        out:
            r0 = 0
            exit"""
        out[engine] = outcome(vm, text, engine)
        assert out[engine] == "MapError", out
        assert rb.consume() == [struct.pack("<Q", 7)]
    return out


# -- 2. map internals are out of reach ------------------------------------------------------------

def case_hash_element_header_out_of_reach():
    """The issue's reproducer: a store at ``r0 - 24`` after a hash lookup rewrote the element's
    chain link (then a JIT lookup crashed and ``map.delete()`` looped forever)."""
    vm = VM()
    h = vm.create_map("hash", 8, 8, 16, name="h")
    h[1] = 5
    text = f"""
        *(u64 *)(r10 - 8) = 1
        r1 = map_fd({h.fd}) ll
        r2 = r10
        r2 += -8
        call bpf_map_lookup_elem
        if r0 == 0 goto out
        r1 = 0x7fffffff
        *(u32 *)(r0 - 24) = r1
    out:
        r0 = 0
        exit"""
    r = outcome(vm, text, "interp")
    assert r == "MemoryAccessError", r
    h[2] = 6
    del h[1]
    jit = vm.load(asm(f"""
        *(u64 *)(r10 - 8) = 2
        r1 = map_fd({h.fd}) ll
        r2 = r10
        r2 += -8
        call bpf_map_lookup_elem
        if r0 == 0 goto out
        r0 = *(u64 *)(r0 + 0)
    out:
        exit"""), engine="jit")
    assert jit.run() == 6 and len(h) == 1 and h[2] == struct.pack("<Q", 6)
    return r


def case_array_neighbour_value_out_of_reach():
    """The issue's reproducer: a write past one value landed in the next array element."""
    vm = VM()
    a = vm.create_map("array", 4, 4, 2, name="a")
    text = f"""
        *(u32 *)(r10 - 4) = 0
        r1 = map_fd({a.fd}) ll
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0 goto out
        *(u32 *)(r0 + 0) = 1
        *(u32 *)(r0 + {{off}}) = 99
    out:
        r0 = 0
        exit"""
    past_value = outcome(vm, text.replace("{off}", "8"), "interp")     # element 1's value
    padding = outcome(vm, text.replace("{off}", "4"), "interp")        # element 0's padding
    assert past_value == padding == "MemoryAccessError", (past_value, padding)
    assert a[1] == bytes(4), a[1]
    return past_value, padding



def case_verified_pointer_may_leave_its_value_between_accesses():
    """The kernel accepts ``r0 += 24; r0 = *(u64 *)(r0 - 16)`` on a 16-byte value (the access
    is at offset 8): a verified program runs it in both engines (the interpreter's base-register
    check is for unverified code, found by the verifier soundness run). Unverified, the
    interpreter still refuses a base register in the neighbour's element."""
    results = {}
    for mtype in ("array", "percpu_array", "hash"):
        vm = VM()
        m = vm.create_map(mtype, 4, 16, 4, name="m")
        m.update(bytes(4), bytes(8) + (5).to_bytes(8, "little"))
        text = f"""
            *(u32 *)(r10 - 4) = 0
            r1 = map_fd({m.fd}) ll
            r2 = r10
            r2 += -4
            call bpf_map_lookup_elem
            if r0 == 0 goto out
            r0 += 24
            r0 = *(u64 *)(r0 - 16)
            exit
        out:
            r0 = 0
            exit"""
        got = [outcome(vm, text, e, verify=True, prog_type="syscall", ctx=b"")
               for e in ("interp", "jit")]
        got.append(outcome(vm, text, "interp", verify=False, prog_type="syscall", ctx=b""))
        assert got == [5, 5, "MemoryAccessError"], (mtype, got)
        results[mtype] = got
    return results

def case_ringbuf_header_out_of_reach():
    """The issue's reproducer: a record header forged so an 8-byte reservation was delivered
    as 3,000 bytes. From BPF the header is out of reach; forged from outside, the consumer
    refuses it."""
    vm = VM()
    rb = vm.create_map("ringbuf", max_entries=4096, name="rb")
    text = f"""
        r1 = map_fd({rb.fd}) ll
        r2 = 8
        r3 = 0
        call bpf_ringbuf_reserve
        if r0 == 0 goto out
        r6 = r0
        r1 = 3000
        *(u32 *)(r6 - 8) = r1
        r1 = r6
        r2 = 0
        call bpf_ringbuf_submit
    out:
        r0 = 0
        exit"""
    from_bpf = outcome(vm, text, "interp")
    assert from_bpf == "MemoryAccessError", from_bpf
    # the same forgery written from outside (JIT code of an unverified program could do it)
    rb2 = vm.create_map("ringbuf", max_entries=4096, name="rb2")
    assert rb2.output(b"12345678") == 0
    hdr = ctypes.c_uint32.from_address(rb2.data_address)
    assert hdr.value == 8
    hdr.value = 3000
    try:
        rb2.consume()
    except MapError as e:
        return from_bpf, str(e)
    raise AssertionError("the consumer delivered a forged record")


def case_map_metadata_outside_every_region():
    """No region a run gets covers a map's own header fields, hash buckets or ring positions;
    the struct bpf_map view before them (what programs read through a map pointer) is
    read-only."""
    vm = VM()
    maps = [vm.create_map("hash", 8, 8, 4, name="h"), vm.create_map("array", 4, 8, 4, name="a"),
            vm.create_map("ringbuf", max_entries=4096, name="rb")]
    from pybpf.runtime.memory import RegionTable
    table = RegionTable(vm.run_regions())
    from pybpf.runtime.maps.base import KERNEL_VIEW_SIZE, MapHeader
    for m in maps:
        view = table.find(m.address, KERNEL_VIEW_SIZE)
        assert view is not None and not view.writable, m       # struct bpf_map, read-only
        assert table.find(m.address + KERNEL_VIEW_SIZE, 1) is None, m   # pybpf's own fields
        assert table.find(m.address + MapHeader.data.offset, 8) is None, m
    assert table.find(maps[0]._buckets, 4) is None                  # hash bucket heads
    assert table.find(maps[0].elems_address, 4) is None             # first element's chain link
    assert table.find(maps[2].address + 4096, 8) is None           # consumer position
    return "ok"


# -- 3. stack pointers: the run's own BPF frames, never the rest of the thread's stack ------------
# Before, helpers reached from JIT code accepted a pointer anywhere in the thread's stack (only
# verify=False exposed it). Offsets from r10: +64 is above the frame (the JIT function's saved
# registers and return address, then Python's C frames), -600 below it, -8192 and +8192 deep in
# the Python thread's stack on either side (where the bridge and the helper's own C frames run).
OUTSIDE = {"r10+64": 64, "r10-600": -600, "r10-8192": -8192, "r10+8192": 8192}


def outside_stack_calls(hash_fd: int, rb_fd: int, off: int) -> dict[str, str]:
    """Helper calls with one pointer argument at ``r10 + off``, the other arguments valid."""
    ptr = f"r10\nr{{}} += {off}"
    return {
        "probe_read_kernel dst": f"r1 = {ptr.format(1)}\nr2 = 8\nr3 = r10\nr3 += -8\n"
                                 f"call bpf_probe_read_kernel",
        "map_update_elem key": (f"*(u64 *)(r10 - 8) = 0\nr1 = map_fd({hash_fd}) ll\n"
                                f"r2 = {ptr.format(2)}\nr3 = r10\nr3 += -8\nr4 = 0\n"
                                f"call bpf_map_update_elem"),
        "map_update_elem value": (f"*(u64 *)(r10 - 8) = 0\nr1 = map_fd({hash_fd}) ll\n"
                                  f"r2 = r10\nr2 += -8\nr3 = {ptr.format(3)}\nr4 = 0\n"
                                  f"call bpf_map_update_elem"),
        "ringbuf_output data": (f"r1 = map_fd({rb_fd}) ll\nr2 = {ptr.format(2)}\nr3 = 8\nr4 = 0\n"
                                f"call bpf_ringbuf_output"),
        "get_current_comm buf": f"r1 = {ptr.format(1)}\nr2 = 16\ncall bpf_get_current_comm",
        "trace_printk fmt": f"r1 = {ptr.format(1)}\nr2 = 4\ncall bpf_trace_printk",
    }


def case_helpers_refuse_stack_outside_the_frames():
    """Unverified programs pass a stack pointer outside their frame to helpers: a
    MemoryAccessError in both engines before anything is touched (the map and ring buffer stay
    empty), whatever the pointer's distance from the frame."""
    out = {}
    for engine in ("interp", "jit"):
        vm = VM()
        h = vm.create_map("hash", 8, 8, 4, name="h")
        rb = vm.create_map("ringbuf", max_entries=4096, name="rb")
        for where, off in OUTSIDE.items():
            for what, text in outside_stack_calls(h.fd, rb.fd, off).items():
                r = outcome(vm, text + "\nr0 = 0\nexit", engine)
                assert r == "MemoryAccessError", (engine, where, what, r)
                out[f"{engine} {what} {where}"] = r
        assert len(h) == 0 and rb.consume() == []
    return {k: v for k, v in out.items() if "r10+64" in k}


def case_probe_read_of_the_stack_outside_the_frames_is_efault():
    """probe_read_kernel/user read *any* address the kernel's way: outside the frames (and
    every other region) they give -EFAULT and zero the destination, as the kernel's
    copy_from_kernel_nofault does, in both engines."""
    out = {}
    for engine in ("interp", "jit"):
        for name in ("probe_read_kernel", "probe_read_user", "probe_read"):
            for where, off in OUTSIDE.items():
                vm = VM()
                text = f"""
                    r1 = -1
                    *(u64 *)(r10 - 8) = r1
                    r1 = r10
                    r1 += -8
                    r2 = 8
                    r3 = r10
                    r3 += {off}
                    call bpf_{name}
                    r6 = r0
                    r0 = *(u64 *)(r10 - 8)
                    if r0 != 0 goto bad
                    r0 = r6
                    exit
                bad:
                    r0 = 1
                    exit"""
                r = outcome(vm, text, engine)
                assert r == (-14) & (2**64 - 1), (engine, name, where, r)
                out[f"{engine} {name} {where}"] = "-EFAULT"
    return {k: v for k, v in out.items() if "r10+64" in k}


def case_skb_load_bytes_refuses_stack_outside_the_frames():
    """bpf_skb_load_bytes(skb, 0, r10 + off, 8) from a socket filter: MemoryAccessError in both
    engines; inside the frame it copies 8 of the packet's bytes (the same in both)."""
    out = {}
    data = bytes(range(64))
    for engine in ("interp", "jit"):
        for where, off in {**OUTSIDE, "r10-8 (inside)": -8}.items():
            vm = VM()
            text = f"""
                r2 = 0
                r3 = r10
                r3 += {off}
                r4 = 8
                call bpf_skb_load_bytes
                if r0 != 0 goto out
                r0 = *(u64 *)(r10 - 8)
            out:
                exit"""
            r = outcome(vm, text, engine, prog_type="socket_filter", data=data)
            if "inside" in where:
                assert isinstance(r, int) and r.to_bytes(8, "little") in data, (engine, r)
            else:
                assert r == "MemoryAccessError", (engine, where, r)
            out[f"{engine} {where}"] = r
    assert out["interp r10-8 (inside)"] == out["jit r10-8 (inside)"], out
    return out


def case_helpers_reach_every_active_frame():
    """What must keep working: a helper given the caller's frame from a subprogram two calls
    down, a bpf_loop callback's and a for_each callback's pointer into their caller's frame,
    and each function's own frame; verified and unverified, both engines give the same."""
    results = {}
    for engine in ("interp", "jit"):
        for verify in (True, False):
            vm = VM()
            h = vm.create_map("hash", 8, 8, 8, name="h")
            a = vm.create_map("array", 4, 8, 1, name="a")
            text = f"""
                *(u64 *)(r10 - 8) = 11
                *(u64 *)(r10 - 16) = 22
                r1 = r10
                r1 += -16
                call sub1
                r1 = 3
                r2 = func(cb_loop) ll
                r3 = r10
                r3 += -16
                r4 = 0
                call bpf_loop
                r1 = map_fd({a.fd}) ll
                r2 = func(cb_each) ll
                r3 = r10
                r3 += -16
                r4 = 0
                call bpf_for_each_map_elem
                r0 = *(u64 *)(r10 - 16)
                exit
            sub1:
                *(u64 *)(r10 - 8) = 33
                r2 = r10
                r2 += -8
                call sub2
                exit
            sub2:
                r6 = r1
                r7 = r2
                r1 = map_fd({h.fd}) ll
                r2 = r6
                r3 = r7
                r4 = 0
                call bpf_map_update_elem
                *(u64 *)(r10 - 8) = 44
                r1 = map_fd({h.fd}) ll
                r2 = r10
                r2 += -8
                r3 = r10
                r3 += -8
                r4 = 0
                call bpf_map_update_elem
                r0 = 0
                exit
            cb_loop:
                r6 = r2
                r1 = r10
                r1 += -8
                r2 = 8
                r3 = r6
                call bpf_probe_read_kernel
                r1 = *(u64 *)(r10 - 8)
                r1 += 1
                *(u64 *)(r6 + 0) = r1
                r0 = 0
                exit
            cb_each:
                r6 = r4
                r1 = map_fd({h.fd}) ll
                r2 = r6
                r3 = r6
                r4 = 0
                call bpf_map_update_elem
                r0 = 0
                exit"""
            r = outcome(vm, text, engine, verify=verify, prog_type="syscall", ctx=b"")
            keys = sorted(int.from_bytes(k, "little") for k in h.keys())
            results[f"{engine} verify={verify}"] = (r, keys)
    first = results["interp verify=True"]
    assert first == (25, [22, 25, 44]), results
    assert all(v == first for v in results.values()), results
    return results


child_tests(globals(), lambda d: repr(d)[:300], "test_case_in_child")
