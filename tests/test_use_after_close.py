"""Use after close (issue 12): a closed map, program or VM raises a BPFError for every
operation; a program that uses a map keeps it alive and working (as a kernel program holds
its maps); the VM lets go of a closed map once no program holds it.

Before the fix an arena used by JIT code after ``close()`` crashed the process (its band was
unmapped) and raised TypeError in the interpreter, so the cases run in a child Python.
"""
from __future__ import annotations

import gc
import struct
import weakref


from programs_arena import ACCESS, ARENA, args
from support import asm, child_tests

from pybpf.errors import BPFError, MapError, VMError


def VM():
    from pybpf.vm import VM as _VM

    return _VM(seed=1)


MAP_KINDS = {
    "hash": dict(key_size=4, value_size=8, max_entries=4),
    "lru_hash": dict(key_size=4, value_size=8, max_entries=4),
    "percpu_hash": dict(key_size=4, value_size=8, max_entries=4),
    "array": dict(key_size=4, value_size=8, max_entries=4),
    "percpu_array": dict(key_size=4, value_size=8, max_entries=4),
    "prog_array": dict(key_size=4, value_size=4, max_entries=4),
    "ringbuf": dict(max_entries=4096),
    "queue": dict(value_size=8, max_entries=4),
    "stack": dict(value_size=8, max_entries=4),
    "arena": dict(max_entries=4, flags=1 << 10),
}


def _refusals(m) -> dict[str, str]:
    """Every user-space operation on closed map ``m``: what it raised (or 'no error')."""
    ops = {"len": lambda: len(m), "iter": lambda: list(iter(m)), "getitem": lambda: m[0],
           "setitem": lambda: m.__setitem__(0, 0), "delitem": lambda: m.__delitem__(0),
           "contains": lambda: 0 in m}
    for name in dir(m):
        attr = getattr(type(m), name, None)
        if name.startswith("_") or name.startswith("map_") or name in m.bpf_face or \
                not callable(attr) or isinstance(attr, type):
            continue
        ops[name] = (lambda n=name: getattr(m, n)(0, 0) if n.startswith("sys_") else
                     getattr(m, n)())
    out = {}
    for name, op in ops.items():
        try:
            op()
            out[name] = "no error"
        except MapError as e:
            out[name] = f"EBADF" if e.errno == 9 else f"MapError {e.errno}"
        except Exception as e:      # noqa: BLE001 -- the point is to see what escapes
            out[name] = type(e).__name__
    return out


def case_closed_maps_refuse_every_user_operation():
    vm = VM()
    report = {}
    for kind, attrs in MAP_KINDS.items():
        m = vm.create_map(kind, name=f"m_{kind}", **attrs)
        m.close()
        got = _refusals(m)
        bad = {op: r for op, r in got.items() if r != "EBADF"}
        assert not bad, (kind, bad)
        report[kind] = len(got)
    return report


def _lookup_prog(fd: int) -> str:
    return f"""
        *(u32 *)(r10 - 4) = 1
        r1 = map_fd({fd}) ll
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0 goto miss
        r0 = *(u64 *)(r0 + 0)
        exit
    miss:
        r0 = 999
        exit"""


def case_programs_keep_closed_maps_alive():
    """A program using a closed map still runs on it (both engines); the VM drops the map once
    its last program closes, and then the map's memory can go (for JIT code loaded with tier
    "auto", once the program's background -O2 compile, which holds the load's inputs, ended)."""
    from pybpf.jit import tiers

    out = {}
    for engine in ("interp", "jit"):
        vm = VM()
        h = vm.create_map("hash", 4, 8, 4, name="h")
        h.sys_update(struct.pack("<I", 1), struct.pack("<Q", 41))
        lp = vm.load(asm(_lookup_prog(h.fd)), engine=engine)
        fd = h.fd
        h.close()
        assert lp.run() == 41
        assert vm.map_by_fd(fd, None) is h            # held by the program
        ref = weakref.ref(h)
        del h
        lp.close()
        assert vm.map_by_fd(fd, None) is None         # released with its last program
        tiers.drain()
        gc.collect()
        out[engine] = ref() is None
        assert out[engine], "the VM or something else still holds the closed map"
    return out


def case_arena_after_close_under_both_engines():
    """The issue's reproducer: using an arena after close() crashed the JIT (SIGSEGV) and
    raised TypeError in the interpreter. The program holding it keeps it; Python gets EBADF."""
    out = {}
    for engine in ("interp", "jit"):
        vm = VM()
        lp = vm.load(asm(ARENA + ACCESS), engine=engine)
        a = lp.arena
        p = a.alloc_pages(0, 1)
        assert lp.run(args(p, 1, 77)) == 0
        a.close()
        # (mem of 24 bytes: the verifier proved the program may read up to byte 24)
        assert lp.run(args(p, 0, 0)) == 77              # the program still has its arena
        assert lp.run(args(p, 1, 78)) == 0 and lp.run(args(p, 0, 0)) == 78
        try:
            a.read(p, 8)
        except MapError as e:
            out[engine] = e.errno
        assert out.get(engine) == 9, out
        lp.close()
    return out


def case_closed_program_and_vm_refuse_everything():
    vm = VM()
    h = vm.create_map("hash", 4, 8, 4, name="h")
    lps = [vm.load(asm("r0 = 7\nexit"), engine=e) for e in ("interp", "jit")]
    out = {}
    lps[0].close()
    for what, op in (("run", lambda: lps[0].run()), ("test_run", lambda: lps[0].test_run())):
        try:
            op()
            out[what] = "no error"
        except VMError:
            out[what] = "VMError"
    vm.close()
    assert lps[1].closed and h.closed
    for what, op in (("closed vm run", lambda: lps[1].run()),
                     ("create_map", lambda: vm.create_map("array", 4, 4, 1)),
                     ("load", lambda: vm.load(asm("r0 = 0\nexit"))),
                     ("map_by_fd", lambda: vm.map_by_fd(h.fd)),
                     ("map lookup", lambda: h[1]),
                     ("register_helper", lambda: vm.register_helper(300, lambda: 0))):
        try:
            op()
            out[what] = "no error"
        except BPFError as e:
            out[what] = type(e).__name__
    bad = {k: v for k, v in out.items() if v == "no error"}
    assert not bad, out
    return out


child_tests(globals(), lambda d: repr(d)[:300], "test_case_in_child")
