"""Programs read struct bpf_map fields through a map pointer, as the kernel lets root do.

A verified program may load the scalar members of the ``struct bpf_map`` its map pointer points
to (``map->max_entries``...; the verifier's rules are verifier/map_btf.py, their verdicts the
tests/verifier/map_ptr corpus). Here the VALUES: the same syscall program, reading ten members
of three maps into its context, runs in both engines and, where bpf() is permitted, in the
kernel (BPF_PROG_TEST_RUN); every value must be the kernel's (``id``, a global counter in the
kernel, is only checked to be an unsigned int). And the view is read-only in both engines: a
store the verifier would refuse, run unverified, faults in the interpreter.
"""
from __future__ import annotations

import struct

import pytest

import pybpf
from pybpf.errors import MemoryAccessError
from support import in_child

MAPS = """
.map cfg type=hash key=4 value=24 max_entries=7 flags=1
.map arr type=array key=4 value=12 max_entries=3
.map q type=queue key=0 value=8 max_entries=5
"""
# (offset in struct bpf_map, size) of the members read, in the order they land in ctx
FIELDS = [(64, 4), (68, 4), (72, 4), (76, 4), (88, 4), (104, 4), (80, 8), (136, 8), (0, 8),
          (32, 4)]
SLOT = 8          # each value lands in an 8-byte slot of ctx, per map


def _source() -> str:
    lines = [MAPS, "r6 = r1"]
    for i, name in enumerate(("cfg", "arr", "q")):
        lines.append(f"r7 = map[{name}] ll")
        for j, (off, size) in enumerate(FIELDS):
            t = {4: "u32", 8: "u64"}[size]
            lines += [f"r2 = *({t} *)(r7 + {off})",
                      f"*(u64 *)(r6 + {(i * len(FIELDS) + j) * SLOT}) = r2"]
    lines += ["r0 = 0", "exit"]
    return "\n".join(lines)


CTX = 3 * len(FIELDS) * SLOT


def _values(ctx: bytes) -> list[int]:
    return list(struct.unpack(f"<{CTX // 8}Q", ctx))


def _pybpf(engine: str) -> list[int]:
    vm = pybpf.VM()
    prog = pybpf.assemble(_source(), syntax="llvm")
    lp = vm.load(prog, prog_type="syscall", engine=engine)
    buf = bytearray(CTX)
    assert lp.run(ctx=buf) == 0
    return _values(bytes(buf))


def _expected_by_hand() -> list[int]:
    """What the fields hold for these maps, from their declarations (kernel enum values)."""
    out = []
    for mtype, ks, vs, n, flags, name in ((1, 4, 24, 7, 1, b"cfg"), (2, 4, 12, 3, 0, b"arr"),
                                         (22, 0, 8, 5, 0, b"q")):
        out += [mtype, ks, vs, n, flags, 0xFFFFFFFF, 0,
                int.from_bytes(name.ljust(8, b"\0"), "little"), 0, 0]
    return out


def test_interpreter_reads_the_fields():
    assert _pybpf("interp") == _expected_by_hand()


@pytest.mark.jit
@in_child
def test_jit_reads_the_fields():
    assert _pybpf("jit") == _expected_by_hand()


def test_kernel_reads_the_same_values():
    import kernel_bpf as kb
    import kernel_verifier as kv
    from kernel_probe import require_kernel
    require_kernel("bpf")
    prog = pybpf.assemble(_source(), syntax="llvm")
    fds = kv.create_maps(prog)
    try:
        code = b"".join(i.encode() for i in kv._insns(prog))
        fd, log = kb.prog_load(code, "syscall", sleepable=True, fd_array=fds)
        assert fd >= 0, log
        try:
            _r, _d, ctx = kb.test_run(fd, ctx=bytes(CTX))
        finally:
            import os
            os.close(fd)
    finally:
        import os
        for f in fds:
            os.close(f)
    assert _values(ctx) == _expected_by_hand()


def test_the_view_is_read_only_at_run_time():
    """Unverified, a store through the map pointer faults before touching the header."""
    vm = pybpf.VM()
    prog = pybpf.assemble(MAPS + "r1 = map[cfg] ll\n*(u32 *)(r1 + 76) = 1000\nr0 = 0\nexit",
                          syntax="llvm")
    lp = vm.load(prog, prog_type="syscall", verify=False)
    with pytest.raises(MemoryAccessError):
        lp.run(ctx=bytearray(8))
    assert vm.maps["cfg"].header.max_entries == 7
