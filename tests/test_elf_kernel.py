"""The running kernel as the reference engine for the ELF loader: each sample's programs, linked
by pybpf.elf, are loaded with bpf(2) (maps by fd_array index, BTF func/line info) and run with
BPF_PROG_TEST_RUN; the verifier's acceptance and the results check the linking, and the Python
side of each sample (walking arena pointers, building a table BPF reads, consuming the ring
buffer, building packets) is exercised for real. Each test skips, naming the feature, where the
kernel refuses something its object needs (kernel_probe.object_features: map types such as
arena, program types, BTF, kfuncs, test_run of the programs it runs)."""
import mmap
import os
import struct

import pytest

from pybpf.elf import parse_object

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples", "c")
DATA = os.path.join(ROOT, "tests", "data", "elf")


def sample(name):
    return os.path.join(SAMPLES, name + ".o")


import kernel_bpf  # noqa: E402  (tests/ is on sys.path under pytest)
from kernel_probe import object_features, require_kernel  # noqa: E402

pytestmark = pytest.mark.kernel


@pytest.fixture
def kernel():
    made = []

    def load(path, run=True):
        """The object's maps and programs in the kernel; skips when the kernel refuses a feature
        they (or test-running the programs named in ``run``) need."""
        obj = parse_object(path)
        require_kernel(*object_features(obj, run))
        ko = kernel_bpf.KernelObject(obj)
        made.append(ko)
        return ko, {n: ko.load(p) for n, p in ko.obj.programs.items()}
    yield load
    for ko in made:
        ko.close()


def _u64(b):
    return struct.unpack("<Q", b)[0]


def test_kernel_runs_the_linked_arena_htab_and_python_walks_it(kernel):
    ko, fds = kernel(sample("arena_htab"))
    v = ko.obj.variables
    assert ko.run(fds["htab_selftest"], ctx=bytes(8))[0] == 0
    htab = _u64(ko.global_bytes(v["htab_for_user"]))
    assert htab - ko.arena_base >= 4096          # the allocator burnt page 0
    n_buckets, count = struct.unpack("<II", ko.arena_read(htab, 8))
    items = {}
    for b in range(n_buckets):
        e = _u64(ko.arena_read(htab + 8 + 8 * b, 8))
        while e:
            e, key, value = struct.unpack("<QQQ", ko.arena_read(e, 24))
            items[key] = value
    assert count == len(items) == 500 and items == {k: 3 * k + 1 for k in range(0, 1000, 2)}
    r, ctx = ko.run(fds["htab_lookup_prog"], ctx=struct.pack("<QQ", 10, 0))
    assert (r, ctx) == (0, struct.pack("<QQ", 10, 31))
    r, _ = ko.run(fds["htab_lookup_prog"], ctx=struct.pack("<QQ", 11, 0))
    assert r == 2**32 - 2    # -ENOENT
    assert ko.run(fds["htab_insert_prog"], ctx=struct.pack("<QQ", 11, 77))[0] == 0
    assert ko.run(fds["htab_lookup_prog"], ctx=struct.pack("<QQ", 11, 0))[1][8:] == struct.pack("<Q", 77)
    assert ko.run(fds["htab_delete_prog"], ctx=struct.pack("<QQ", 11, 0))[0] == 0


def test_kernel_looks_up_a_table_python_built(kernel):
    ko, fds = kernel(sample("arena_htab"))
    v = ko.obj.variables
    nb, base = 8, ko.arena_base + 8 * 4096            # pages Python takes for itself
    table = {k * 7 + 3: k * k for k in range(20)}
    buckets = [0] * nb
    elem = base + 4096
    for k, val in table.items():
        b = ((k * 0x9E3779B97F4A7C15 % 2**64) >> 32) & (nb - 1)
        ko.arena_write(elem, struct.pack("<QQQ", buckets[b], k, val))
        buckets[b], elem = elem, elem + 24
    ko.arena_write(base, struct.pack("<II", nb, len(table)) + struct.pack(f"<{nb}Q", *buckets))
    ko.arena_write(ko.arena_base + ko.obj.arena_data_off + v["user_table"].offset,
                   struct.pack("<Q", base))
    keys = list(table)[:12] + [1000, 1001, 5, 6]
    ko.set_global(v["query_keys"], struct.pack("<16Q", *keys))
    assert ko.run(fds["htab_query"], ctx=bytes(8))[0] == 12
    got = struct.unpack("<16Q", ko.global_bytes(v["query_values"]))
    assert list(got) == [table.get(k, 0) for k in keys]


def test_kernel_runs_the_arena_list(kernel):
    ko, fds = kernel(sample("arena_list"))
    v = ko.obj.variables
    assert ko.run(fds["arena_list_add"], ctx=bytes(8))[0] == 10
    assert ko.run(fds["arena_list_sum"], ctx=bytes(8))[0] == 10
    assert _u64(ko.global_bytes(v["list_sum"])) == 45 == _u64(ko.global_bytes(v["arena_sum"]))
    values, e = [], _u64(ko.global_bytes(v["list_head"]))
    while e:
        e, value = struct.unpack("<QQ", ko.arena_read(e, 16))
        values.append(value)
    assert values == list(range(9, -1, -1))
    assert ko.run(fds["arena_list_del"], ctx=bytes(8))[0] == 10
    assert _u64(ko.global_bytes(v["arena_sum"])) == 0


def _packet(ethertype, proto=17, dport=80, ihl=5):
    eth = b"\x02" * 6 + b"\x04" * 6 + struct.pack(">H", ethertype)
    if ethertype == 0x86DD:
        ip = struct.pack(">IHBB", 6 << 28, 8, proto, 64) + bytes(32)
    else:
        ip = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, 28, 0, 0, 64, proto, 0, bytes(4), bytes(4))
        ip += bytes(max(4 * ihl - 20, 0))
    return eth + ip + struct.pack(">HHHH", 1234, dport, 8, 0) + bytes(16)


def test_kernel_runs_the_xdp_filter_on_python_packets(kernel):
    ko, fds = kernel(sample("xdp_filter"))
    kernel_bpf.update(ko.fds["blocked_ports"], struct.pack("<H", 53), b"\x01")
    cases = [(_packet(0x0800, 17, 53), 1), (_packet(0x0800, 6, 80), 2), (_packet(0x86DD, 17, 53), 1),
             (_packet(0x0806), 2), (_packet(0x0800, 1), 2), (_packet(0x0800, 17, 53, ihl=4), 0),
             (_packet(0x0800, 6, 53, ihl=6), 1)]
    for pkt, verdict in cases:
        assert ko.run(fds["xdp_filter"], data=pkt)[0] == verdict, pkt.hex()
    counts = [_u64(kernel_bpf.lookup(ko.fds["action_count"], struct.pack("<I", a), 8)) for a in range(3)]
    assert counts == [1, 3, 3]
    stats = struct.unpack("<4Q", ko.global_bytes(ko.obj.variables["stats"]))
    assert stats[0] == len(cases) and stats[2] == 3 and stats[3] == 1


def test_kernel_runs_the_ringbuf_producer_and_python_consumes(kernel):
    ko, fds = kernel(sample("ringbuf"), run=["produce"])
    assert ko.run(fds["produce"], ctx=struct.pack("<II", 6, 1))[0] == 6
    size = ko.obj.map_defs["events"].max_entries
    fd = ko.fds["events"]
    prod = mmap.mmap(fd, mmap.PAGESIZE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=mmap.PAGESIZE)
    producer = _u64(prod[:8])
    data = prod[mmap.PAGESIZE:]
    pos, events = 0, []
    while pos < producer:
        length, _pg = struct.unpack_from("<II", data, pos % size)
        assert not length & (3 << 30)                   # committed, not discarded
        events.append(struct.unpack_from("<IIQ16s", data, pos % size + 8))
        pos += (8 + length + 7) & ~7
    value, mul, add = 1, 6364136223846793005, 1442695040888963407
    for i, (seq, kind, val, tag) in enumerate(events):
        value = (value * mul + add) % 2**64
        assert (seq, kind, val, tag) == (i, 1 if i % 2 == 0 else 2, value, b"pybpf-ringbuf\0\0\0")
    assert len(events) == 6
    prod.close()


def test_kernel_runs_the_legacy_socket_filter(kernel):
    ko, fds = kernel(sample("socket_count"))
    # BPF_PROG_TEST_RUN pulls the Ethernet header before a socket filter runs, as pybpf does
    run = lambda pkt: ko.run(fds["socket_count"], data=pkt)[0]   # noqa: E731
    assert run(_packet(0x0800, 17)) == 0xFFFFFFFF
    assert run(_packet(0x0800, 2)) == 0        # IGMP is rejected
    assert run(_packet(0x0806)) == 0xFFFFFFFF
    count = kernel_bpf.lookup(ko.fds["proto_count"], struct.pack("<I", 17), 8)
    assert _u64(count) == 1


def test_kernel_runs_the_btf_kinds_program(kernel):
    ko, fds = kernel(os.path.join(DATA, "btf_kinds.o"))
    assert ko.run(fds["kinds"], data=_packet(0x0800))[0] == 6 + ord("p")
    results = struct.unpack("<4I", ko.global_bytes(ko.obj.variables["results"]))
    assert results == (1, 0 + 1 + 2 + 3, 17, 7)
