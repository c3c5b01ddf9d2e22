"""Redirect target maps (devmap, devmap_hash, cpumap, xskmap) and bpf_fib_lookup.

Map creation and element operations are compared errno for errno with the running kernel where
bpf() is permitted (each row states the kernel's answer, measured on Linux 6.18; the kernel's
loopback, ifindex 1, is the device entries point at, as pybpf's FibTable has it). bpf_fib_lookup
is compared with the kernel where its answer does not depend on the host's routes (argument
errors, an unknown device, the loopback that does not forward); the table's own answers
(routes, gateways, neighbours, MTU, source address) are checked against the kernel's
semantics in both engines.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import struct
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "verifier"))

import kernel_bpf as kb  # noqa: E402
import kernel_verifier as kv  # noqa: E402
import pybpf  # noqa: E402
from pybpf import uapi  # noqa: E402
from pybpf.errors import MapError  # noqa: E402
from pybpf.runtime.fib import BpfFibLookup  # noqa: E402
from support import in_child  # noqa: E402

KERNEL = kv.available()
NO_KERNEL = "bpf() is not permitted here: no kernel to compare with"
OK = 0
U32 = struct.Struct("<I")

# (type, key_size, value_size, max_entries, flags, kernel errno or 0)
CREATE = [
    ("devmap", 4, 4, 4, 0, OK), ("devmap", 4, 8, 4, 0, OK), ("devmap", 4, 6, 4, 0, errno.EINVAL),
    ("devmap", 8, 4, 4, 0, errno.EINVAL), ("devmap", 4, 4, 0, 0, errno.EINVAL),
    ("devmap", 4, 4, 4, 1, errno.EINVAL), ("devmap", 4, 4, 4, 4, OK),
    ("devmap", 4, 4, 4, 1 << 7, errno.EINVAL), ("devmap_hash", 4, 4, 4, 0, OK),
    ("devmap_hash", 4, 4, (1 << 31) + 1, 0, errno.EINVAL), ("cpumap", 4, 4, 4, 0, OK),
    ("cpumap", 4, 8, 4, 0, OK), ("cpumap", 4, 4, 256, 0, OK), ("cpumap", 4, 4, 257, 0, errno.E2BIG),
    ("cpumap", 4, 4, 4, 8, errno.EINVAL), ("cpumap", 4, 4, 4, 4, OK), ("xskmap", 4, 4, 4, 0, OK),
    ("xskmap", 4, 8, 4, 0, errno.EINVAL), ("xskmap", 4, 4, 4, 8, OK),
]


def _pybpf_create(t, k, v, n, f) -> int:
    try:
        pybpf.VM().create_map(t, k, v, n, f)
    except MapError as e:
        return e.errno
    return OK


@pytest.mark.parametrize("row", CREATE, ids=[f"{r[0]}-{r[1]}-{r[2]}-{r[3]}-{r[4]}" for r in CREATE])
def test_create(row):
    *args, want = row
    assert _pybpf_create(*args) == want
    if KERNEL:
        fd = kb.try_create_map(*args)
        if fd > 0:
            os.close(fd)
        assert (0 if fd > 0 else -fd) == want


# (type, value_size, max_entries, [(op, key, value, flags)], kernel errnos of each op)
# ops: "u" update, "l" lookup (value returned compared too), "d" delete
_IF1 = U32.pack(1)
_NOIF = U32.pack(999999)
OPS = [
    ("devmap", 4, 4, [("u", 0, _IF1, 0), ("l", 0, None, 0), ("u", 4, _IF1, 0), ("u", 1, _IF1, 1),
                      ("u", 1, _IF1, 3), ("u", 1, _NOIF, 0), ("l", 1, None, 0), ("d", 1, None, 0),
                      ("d", 4, None, 0), ("u", 0, U32.pack(0), 0), ("l", 0, None, 0)],
     [0, 0, errno.E2BIG, errno.EEXIST, errno.EINVAL, errno.EINVAL, errno.ENOENT, 0,
      errno.EINVAL, 0, errno.ENOENT]),
    ("devmap", 8, 2, [("u", 0, _IF1 + struct.pack("<i", -1), 0), ("l", 0, None, 0),
                      ("u", 1, U32.pack(0) + struct.pack("<i", 5), 0)],
     [0, 0, errno.EINVAL]),
    ("devmap_hash", 4, 2, [("u", 70000, _IF1, 0), ("u", 70000, _IF1, 1), ("u", 5, _IF1, 2),
                           ("u", 6, _IF1, 0), ("u", 7, _IF1, 0), ("u", 8, U32.pack(0), 0),
                           ("l", 70000, None, 0), ("d", 9, None, 0), ("d", 6, None, 0)],
     [0, errno.EEXIST, 0, errno.E2BIG, errno.E2BIG, errno.EINVAL, 0, errno.ENOENT,
      errno.ENOENT]),
    ("cpumap", 4, 4, [("u", 0, U32.pack(192), 0), ("l", 0, None, 0), ("u", 0, U32.pack(20000), 0),
                      ("u", 3, U32.pack(192), 0), ("u", 4, U32.pack(192), 0),
                      ("u", 1, U32.pack(192), 1), ("u", 1, U32.pack(0), 0), ("l", 1, None, 0),
                      ("d", 0, None, 0), ("l", 0, None, 0), ("d", 7, None, 0)],
     [0, 0, errno.EOVERFLOW, "ENODEV?", errno.E2BIG, errno.EEXIST, 0, errno.ENOENT, 0,
      errno.ENOENT, errno.EINVAL]),
]


def _ncpus() -> int:
    from pybpf.verifier.calls import NR_CPU_IDS
    return NR_CPU_IDS


def _want(w):
    if w == "ENODEV?":          # key 3: not a possible CPU on a machine with fewer than 4
        return errno.ENODEV if _ncpus() <= 3 else 0
    return w


def _pybpf_ops(t, vs, n, ops):
    m = pybpf.VM().create_map(t, 4, vs, n)
    out = []
    for op, key, value, flags in ops:
        k = U32.pack(key)
        try:
            if op == "u":
                m.sys_update(k, value, flags)
                out.append((0, None))
            elif op == "l":
                out.append((0, m.sys_lookup(k)))
            else:
                m.sys_delete(k)
                out.append((0, None))
        except MapError as e:
            out.append((e.errno, None))
    return out


def _kernel_ops(t, vs, n, ops):
    fd = kb.create_map(t, 4, vs, n)
    cmd = {"u": uapi.BPF_MAP_UPDATE_ELEM, "l": uapi.BPF_MAP_LOOKUP_ELEM,
           "d": uapi.BPF_MAP_DELETE_ELEM}
    out = []
    try:
        for op, key, value, flags in ops:
            val = value if op == "u" else (bytes(vs) if op == "l" else None)
            err, got = kb.elem_op(cmd[op], fd, U32.pack(key), val, flags)
            out.append((-err, got if op == "l" and err == 0 else None))
    finally:
        os.close(fd)
    return out


@pytest.mark.parametrize("row", OPS, ids=[f"{r[0]}-{r[1]}" for r in OPS])
def test_element_ops(row):
    t, vs, n, ops, want = row
    got = _pybpf_ops(t, vs, n, ops)
    assert [e for e, _ in got] == [_want(w) for w in want]
    if KERNEL:
        k = _kernel_ops(t, vs, n, ops)
        assert got == k


def test_xskmap_holds_sockets_from_python_and_refuses_user_lookups():
    m = pybpf.VM().create_map("xskmap", 4, 4, 4)
    m[1] = "queue1"
    assert m[1] == "queue1" and len(m) == 1
    with pytest.raises(MapError) as e:
        m.sys_lookup(U32.pack(1))
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(MapError) as e:
        m.update(2, "q2", 2)                 # BPF_EXIST on an empty slot
    assert e.value.errno == errno.ENOENT
    if KERNEL:                               # the kernel: -EOPNOTSUPP for a real socket too
        fd = kb.create_map("xskmap", 4, 4, 4)
        s = socket.socket(44, socket.SOCK_RAW)
        try:
            kb.update(fd, U32.pack(1), U32.pack(s.fileno()))
            assert kb.elem_op(uapi.BPF_MAP_LOOKUP_ELEM, fd, U32.pack(1), bytes(4))[0] == \
                -errno.EOPNOTSUPP
            assert kb.elem_op(uapi.BPF_MAP_UPDATE_ELEM, fd, U32.pack(2), U32.pack(s.fileno()),
                              2)[0] == -errno.ENOENT
        finally:
            s.close()
            os.close(fd)


def test_devmap_entries_need_a_device_of_the_vms_table():
    vm = pybpf.VM()
    m = vm.create_map("devmap", 4, 4, 4)
    with pytest.raises(MapError) as e:
        m[0] = 5
    assert e.value.errno == errno.EINVAL
    vm.fib.add_device(5)
    m[0] = 5
    assert m[0] == (5).to_bytes(4, "little")


# --- bpf_fib_lookup ------------------------------------------------------------------------------
# r6 = ctx; a struct bpf_fib_lookup at r10-64 filled from the template; fib_lookup(ctx, p, plen,
# flags); r0 = the result; the struct is copied into the packet (64 bytes) so data_out shows it.
def _fib_prog(params: bytes, plen: int = 64, flags: int = 0) -> str:
    lines = ["r6 = r1"]
    for off in range(0, 64, 8):
        q = int.from_bytes(params[off:off + 8], "little")
        lines += [f"r1 = {q} ll", f"*(u64 *)(r10 - {64 - off}) = r1"]
    lines += ["r1 = r6", "r2 = r10", "r2 += -64", f"r3 = {plen}", f"r4 = {flags}",
              "call 69", "r7 = r0",
              "r1 = r6", "r2 = 0", "r3 = r10", "r3 += -64", "r4 = 64", "call 190",
              "r0 = r7", "exit"]
    return "\n".join(lines)


def _params(family=2, ifindex=1, dst="10.1.2.3", src="0.0.0.0", tot_len=0) -> bytes:
    p = BpfFibLookup()
    p.family, p.ifindex, p.tot_len = family, ifindex, tot_len
    import ipaddress
    d, s = ipaddress.ip_address(dst).packed, ipaddress.ip_address(src).packed
    ctypes.memmove(p.dst, d, len(d))
    ctypes.memmove(p.src, s, len(s))
    return bytes(p)


PKT = bytes(64)
M32 = 0xFFFFFFFF

# (name, params, plen, flags, kernel retval) - answers that do not depend on the host's routes
KERNEL_FIB = [
    ("lo_does_not_forward", _params(), 64, 0, 5),
    ("lo_v6_does_not_forward", _params(10, 1, "2001:db8::1", "::"), 64, 0, 5),
    ("unknown_device", _params(ifindex=99999), 64, 0, -errno.ENODEV & M32),
    ("bad_family", _params(family=7), 64, 0, -errno.EAFNOSUPPORT & M32),
    ("short_plen", _params(), 63, 0, -errno.EINVAL & M32),
    ("bad_flags", _params(), 64, 64, -errno.EINVAL & M32),
]


def _pybpf_fib(text: str, engine: str, table=None):
    vm = pybpf.VM()
    if table is not None:
        table(vm.fib)
    lp = vm.load(pybpf.assemble(text, syntax="llvm"), prog_type="xdp", engine=engine)
    r0 = lp.run(data=PKT) & M32
    return r0, BpfFibLookup.from_buffer_copy(lp.last_data[:64])


@pytest.mark.parametrize("case", KERNEL_FIB, ids=[c[0] for c in KERNEL_FIB])
def test_fib_lookup_like_the_kernel(case):
    name, params, plen, flags, want = case
    text = _fib_prog(params, plen, flags)
    assert _pybpf_fib(text, "interp")[0] == want
    if KERNEL:
        prog = pybpf.assemble(text, syntax="llvm")
        fd = kv._load(prog, "xdp", [], 0, None)
        try:
            assert kb.test_run(fd, data=PKT, data_out_size=256)[0] == want
        finally:
            os.close(fd)


def _net(fib):
    fib.add_device(2, mac="02:00:00:00:00:02", mtu=1500)
    fib.add_device(3, mac="02:00:00:00:00:03", mtu=9000, forwarding=False)
    fib.add_route("10.0.0.0/8", 2, gateway="192.168.0.1", metric=10)
    fib.add_route("10.1.0.0/16", 2, metric=5, prefsrc="192.168.0.2")
    fib.add_route("10.9.0.0/16", 2, gateway="192.168.0.9")
    fib.add_route("10.66.0.0/16", 0, type="blackhole")
    fib.add_route("10.67.0.0/16", 0, type="unreachable")
    fib.add_route("2001:db8::/32", 2, gateway="fe80::1")
    fib.add_neighbour(2, "192.168.0.1", "02:00:00:00:00:aa")
    fib.add_neighbour(2, "10.1.2.3", "02:00:00:00:00:bb")
    fib.add_neighbour(2, "fe80::1", "02:00:00:00:00:cc")


def _table_cases(engine: str) -> None:
    def run(params, flags=0):
        return _pybpf_fib(_fib_prog(params, 64, flags), engine, _net)

    r, p = run(_params(ifindex=2, dst="10.2.3.4"))      # via the gateway, /8
    assert r == 0 and p.ifindex == 2 and bytes(p.dst)[:4] == bytes([192, 168, 0, 1])
    assert bytes(p.dmac) == bytes.fromhex("0200000000aa") and \
        bytes(p.smac) == bytes.fromhex("020000000002")
    assert p.tos == 10 and p.tot_len == 1500             # rt_metric, mtu_result
    r, p = run(_params(ifindex=2, dst="10.1.2.3"))      # the longer prefix, on link
    assert r == 0 and bytes(p.dst)[:4] == bytes([10, 1, 2, 3]) and p.tos == 5
    r, p = run(_params(ifindex=2, dst="10.1.2.3"), flags=16)     # BPF_FIB_LOOKUP_SRC
    assert r == 0 and bytes(p.src)[:4] == bytes([192, 168, 0, 2])
    assert run(_params(ifindex=2, dst="10.2.3.4"), flags=16)[0] == 9     # NO_SRC_ADDR
    assert run(_params(ifindex=2, dst="10.9.0.1"))[0] == 7               # NO_NEIGH
    r, p = run(_params(ifindex=2, dst="10.9.0.1"), flags=4)              # SKIP_NEIGH
    assert r == 0 and bytes(p.dst)[:4] == bytes([192, 168, 0, 9]) and bytes(p.dmac) == bytes(6)
    assert run(_params(ifindex=2, dst="10.66.0.1"))[0] == 1              # BLACKHOLE
    assert run(_params(ifindex=2, dst="10.67.0.1"))[0] == 2              # UNREACHABLE
    assert run(_params(ifindex=2, dst="172.16.0.1"))[0] == 4             # NOT_FWDED
    assert run(_params(ifindex=3, dst="10.2.3.4"))[0] == 5               # FWD_DISABLED
    r, p = run(_params(ifindex=2, dst="10.2.3.4", tot_len=1501))         # FRAG_NEEDED
    assert r == 8 and p.tot_len == 1500
    r, p = run(_params(10, 2, "2001:db8::5", "::"))
    assert r == 0 and bytes(p.dst) == socket.inet_pton(socket.AF_INET6, "fe80::1")
    assert bytes(p.dmac) == bytes.fromhex("0200000000cc")


def test_fib_table_interp():
    _table_cases("interp")


@pytest.mark.jit
@in_child
def test_fib_table_jit():
    _table_cases("jit")


def test_fib_params_must_be_writable_memory_of_plen_bytes():
    # the verifier checks [params, params + plen) like the kernel (ARG_PTR_TO_MEM | MEM_WRITE)
    text = re.sub("r3 = 64\n", "r3 = 72\n", _fib_prog(_params()), count=1)
    prog = pybpf.assemble(text, syntax="llvm")
    with pytest.raises(pybpf.VerifierError) as e:
        pybpf.VM().verify(prog, prog_type="xdp")
    if KERNEL:
        assert kv.kernel_verify(prog, "xdp").message == e.value.message
