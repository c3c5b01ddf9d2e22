"""The arena programs and harness shared by tests/test_arena_vm.py (interpreter) and
tests/test_jit_arena.py (both engines): the kfunc wrappers, a load/store through an arena
pointer, the atomics, the casts, building and walking a list, the per-(offset, size) access
programs and the hypothesis strategy of 32-bit addresses that the fuzz cases share."""
from __future__ import annotations

import struct

from pybpf.runtime.maps.arena import LO32
from pybpf.vm import VM
from pybpf.uapi import BPF_F_MMAPABLE
from support import M64, asm

PAGE = 4096
ARENA = f".map arena type=arena max_entries=16 flags={BPF_F_MMAPABLE:#x}\n"


def args(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}Q", *(v & M64 for v in values))


def kfunc_prog(name: str, nargs: int):
    """r0 = kfunc(&arena, args from mem as u64 at 0, 8, ...)."""
    loads = "\n".join(f"r{2 + i} = *(u64 *)(r6 + {8 * i})" for i in range(nargs))
    # bpf_arena_free_pages returns void: the kernel refuses an exit with r0 unset (R0 !read_ok)
    ret = "r0 = 0\n" if name == "bpf_arena_free_pages" else ""
    return asm(ARENA + f"r6 = r1\n{loads}\nr1 = map[arena] ll\ncall {name}\n{ret}exit")


# *(u64 *)(arena ptr + 0): load (mem[8] == 0) or store mem[16] (mem[8] == 1), after a cast
ACCESS = """
    r9 = map[arena] ll
    r6 = r1
    r2 = *(u64 *)(r6 + 0)
    r2 = addr_space_cast(r2, 0x0, 0x1)
    r3 = *(u64 *)(r6 + 8)
    if r3 != 0 goto +2
    r0 = *(u64 *)(r2 + 0)
    exit
    r4 = *(u64 *)(r6 + 16)
    *(u64 *)(r2 + 0) = r4
    r0 = 0
    exit"""

# add, fetch_add, or, xchg and cmpxchg through the arena pointer mem[0]; the fetched values
# go to mem[8], mem[16], mem[24] (the program goes on: callers end it)
ATOMICS_BODY = """
    r9 = map[arena] ll
    r6 = r1
    r7 = *(u64 *)(r6 + 0)
    r7 = addr_space_cast(r7, 0x0, 0x1)
    r2 = 5
    lock *(u64 *)(r7 + 0) += r2
    r2 = 3
    r2 = atomic_fetch_add((u64 *)(r7 + 0), r2)
    *(u64 *)(r6 + 8) = r2
    r3 = 0x70
    lock *(u32 *)(r7 + 8) |= w3
    r3 = 0xff
    r3 = xchg_64(r7 + 16, r3)
    *(u64 *)(r6 + 16) = r3
    r0 = 0xff
    r4 = 0x99
    r0 = cmpxchg_64(r7 + 16, r0, r4)
    *(u64 *)(r6 + 24) = r0"""

# mem[0] cast to user (mem[8]) and to kernel (mem[16])
CASTS = """
    r9 = map[arena] ll
    r6 = r1
    r2 = *(u64 *)(r6 + 0)
    r3 = addr_space_cast(r2, 0x1, 0x0)
    *(u64 *)(r6 + 8) = r3
    r4 = addr_space_cast(r2, 0x0, 0x1)
    *(u64 *)(r6 + 16) = r4
    r0 = 0
    exit"""

# allocates a page, links nodes {next, value} with values 1..5 and stores the head (a user
# pointer) at mem[0]
BUILD_LIST = """
    r6 = r1
    r1 = map[arena] ll
    r2 = 0
    r3 = 1
    r4 = -1
    r5 = 0
    call bpf_arena_alloc_pages
    if r0 == 0 goto out
    r7 = addr_space_cast(r0, 0x0, 0x1)
    r8 = 0
    r1 = 1
next:
    r2 = r1
    r2 <<= 4
    r2 += r7
    *(u64 *)(r2 + 8) = r1
    *(u64 *)(r2 + 0) = r8
    r8 = addr_space_cast(r2, 0x1, 0x0)
    r1 += 1
    if r1 < 6 goto next
    *(u64 *)(r6 + 0) = r8
out:
    r0 = 0
    exit"""

# r0 = the sum of the values of the list whose head is at mem[0] (may_goto bounds the walk, as
# can_loop does in C: without it the kernel's verifier sees an infinite loop)
WALK_LIST = """
    r9 = map[arena] ll
    r2 = *(u64 *)(r1 + 0)
    r0 = 0
loop:
    may_goto done
    if r2 == 0 goto done
    r2 = addr_space_cast(r2, 0x0, 0x1)
    r3 = *(u64 *)(r2 + 8)
    r0 += r3
    r2 = *(u64 *)(r2 + 0)
    goto loop
done:
    exit"""


class Arena:
    """One VM, one arena and programs over it, all on ``engine``. ``declared``: the arena is
    the one the first program's ``.map`` declaration creates at load (else ``create_map``
    with ``flags``)."""

    def __init__(self, engine: str = "interp", flags: int = BPF_F_MMAPABLE,
                 declared: bool = False) -> None:
        self.engine = engine
        self.vm = VM()
        if declared:
            self.alloc = self.vm.load(kfunc_prog("bpf_arena_alloc_pages", 4), engine=engine)
            self.arena = self.alloc.maps["arena"]  # created at load from the .map declaration
        else:
            self.arena = self.vm.create_map("arena", max_entries=16, flags=flags, name="arena")
            self.alloc = self.load(kfunc_prog("bpf_arena_alloc_pages", 4))
        self.free = self.load(kfunc_prog("bpf_arena_free_pages", 2))
        self.reserve = self.load(kfunc_prog("bpf_arena_reserve_pages", 2))
        self.access = self.load(ACCESS)

    def load(self, prog, verify: bool = True):
        """Load another program declaring ``arena``, bound to this arena (not a new one).
        ``verify=False`` for programs the kernel would refuse on purpose (a plain u32 used as
        an arena address: pybpf's run-time classification of unverified code)."""
        if isinstance(prog, str):
            prog = asm(ARENA + prog)
        return self.vm.load(prog, maps={"arena": self.arena}, engine=self.engine,
                            verify=verify)

    def page(self, i: int) -> int:
        return self.arena.user_vm_start + i * PAGE

    def read(self, ptr: int) -> int:
        """A BPF load of the u64 at arena pointer ``ptr``."""
        return self.access.run(mem=args(ptr, 0, 0))

    def store(self, ptr: int, value: int) -> None:
        """A BPF store of the u64 ``value`` at arena pointer ``ptr``."""
        self.access.run(mem=args(ptr, 1, value))


# -- arbitrary addresses ------------------------------------------------------------------------
OFFS = (-32768, -4097, -8, -1, 0, 1, 4092, 32767)


def access_progs(t: Arena, how: str) -> dict:
    """Per (off, size): load, store, load again, and for u64 an add and a fetch_add, through a
    32-bit base that is a cast_kern result ("cast": known statically) or a plain u32 loaded
    from memory ("loaded": classified at run time)."""
    progs = {}
    get = ("r7 = *(u64 *)(r6 + 0)\nr7 = addr_space_cast(r7, 0x0, 0x1)" if how == "cast"
           else "r7 = *(u32 *)(r6 + 0)")
    for off in OFFS:
        o = f"+ {off}" if off >= 0 else f"- {-off}"
        for size in (1, 2, 4, 8):
            ty = f"u{8 * size}"
            atomic = ("r2 = r8\nlock *(u64 *)(r7 {0}) += r2\nr2 = r8\n"
                      "r2 = atomic_fetch_add((u64 *)(r7 {0}), r2)\n*(u64 *)(r6 + 32) = r2"
                      if size == 8 else "").format(o)
            # "loaded": a u32 from memory is a scalar to the kernel's verifier (it refuses the
            # access); pybpf runs such unverified code with run-time classification. The
            # kernel also refuses misaligned atomics (strict alignment): those load unverified.
            verify = how != "loaded" and (size != 8 or off % 8 == 0)
            progs[off, size] = t.load(verify=verify, prog=f"""
                r9 = map[arena] ll
                r6 = r1
                {get}
                r8 = *(u64 *)(r6 + 8)
                r0 = *({ty} *)(r7 {o})
                *(u64 *)(r6 + 16) = r0
                *({ty} *)(r7 {o}) = r8
                r0 = *({ty} *)(r7 {o})
                *(u64 *)(r6 + 24) = r0
                {atomic}
                r0 = 0
                exit""")
    return progs


def addr32_strategy(base32: int, *extra: int):
    """Hypothesis: any 32-bit address, or one near the arena's pages, its end, the top of the
    band, 0x8000_0000 and ``extra``."""
    from hypothesis import strategies as st

    near = st.sampled_from([0, base32, base32 + PAGE, base32 + 7 * PAGE, base32 + 16 * PAGE,
                            0xFFFF_F000, 0x8000_0000, *extra])
    return st.one_of(st.integers(0, LO32),
                     st.builds(lambda b, d: (b + d) & LO32, near, st.integers(-70000, 70000)))


def backed(arena, k: int, size: int) -> bool:
    """Whether all ``size`` bytes at arena offset ``k`` are on allocated pages."""
    return 0 <= k and k + size <= 1 << 32 and arena.is_allocated(k) and \
        arena.is_allocated(k + size - 1)


# --- which accesses are arena accesses: the verifier's types (issue 10) -----------------------
# An xdp packet lies below 4 GiB, so its address is also a valid 32-bit arena offset. Cast to an
# arena pointer, the kernel's verifier types it PTR_TO_ARENA and the access goes to the arena
# (kern_vm_start + zext32(reg)): an unallocated page there, so the store is dropped and the load
# reads 0, and the packet is untouched. Only a range rule would take it for a packet access.
PACKET_AS_ARENA = ARENA + """
    r9 = map[arena] ll
    r2 = *(u32 *)(r1 + 0)
    w2 = w2
    r2 = addr_space_cast(r2, 0x0, 0x1)
    r3 = 0x55
    *(u8 *)(r2 + 1) = r3
    r4 = 0x11
    lock *(u32 *)(r2 + 4) += w4
    r0 = *(u8 *)(r2 + 1)
    exit"""


def packet_as_arena(engine: str, verify: bool = True):
    """(r0, the packet after the run) of PACKET_AS_ARENA on ``engine``."""
    from pybpf import VM as _VM
    from support import asm as _asm, frame as _frame
    vm = _VM()
    lp = vm.load(_asm(PACKET_AS_ARENA), prog_type="xdp", engine=engine, verify=verify)
    pkt = _frame()
    r0 = lp.run(data=pkt)
    out = (r0, lp.last_data == pkt)
    lp.close()
    return out
