"""Run the corpus (tests/corpus/*.o) the same way in pybpf's engines and in the kernel.

Each program of the corpus runs on every packet of :data:`PACKETS` (or every context of
:data:`SYSCALL_CTXS` for syscall programs), one after another on one set of maps, as a loader
would leave them: in pybpf through ``lp.run`` and in the running kernel through
BPF_PROG_TEST_RUN with maps created from the same object (tests/kernel_bpf.py). After each run
it records the return value, the packet after the run, the context fields BPF_PROG_TEST_RUN
copies back, and every map's contents; :func:`compare` says where two records differ.
"""
from __future__ import annotations

import ctypes
import glob
import os
import struct

import pybpf
from pybpf.elf import parse_object
from pybpf.runtime.contexts import SKB_TYPES, SOCK_STRUCTS, BpfSkLookup, SkBuff

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
# maps that have no keys to walk, or whose values are fds (their inner maps are dumped)
# (a ring buffer's "contents" are the records the run left, consumed after each run)
NOT_DUMPED = ("prog_array", "queue", "stack", "bloom_filter", "array_of_maps",
              "perf_event_array",
              "hash_of_maps")
# Map contents programs expect before they run, set in pybpf and in the kernel alike (what a
# loader would put there): devmap entries name ifindex 1, the loopback, which both have.
MAP_INIT: dict[str, dict[int, bytes]] = {
    "tx_ports": {0: struct.pack("<I", 1)},
    "tx_by_addr": {0x0A000009: struct.pack("<I", 1)},
    "cpus": {0: struct.pack("<I", 192), 1: struct.pack("<I", 256)},
}
# __sk_buff fields BPF_PROG_TEST_RUN copies back to ctx_out (convert_skb_to___skb)
SKB_OUT = ("mark", "priority", "cb")


# --- packets -------------------------------------------------------------------------------------
def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(proto: int, dst: bytes = bytes(6), src: bytes = b"\x02\0\0\0\0\x01") -> bytes:
    return dst + src + struct.pack("!H", proto)


def ipv4(proto: int, payload: bytes, src: int = 1, dst: int = 2, ttl: int = 64, tos: int = 0,
         options: bytes = b"", frag: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, 4 * ihl + len(payload), 0x1234, frag,
                      ttl, proto, 0, bytes([10, 0, 0, src]), bytes([10, 0, 0, dst])) + options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def udp(sport: int, dport: int, body: bytes = b"hello") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body


def tcp(sport: int, dport: int, flags: int, body: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 512, 0, 0) + body


def icmp(kind: int, body: bytes = b"ping") -> bytes:
    hdr = struct.pack("!BBHHH", kind, 0, 0, 7, 1) + body
    return hdr[:2] + struct.pack("!H", csum(hdr)) + hdr[4:]


def ipv6(nexthdr: int, payload: bytes, hop: int = 64) -> bytes:
    return (struct.pack("!IHBB", 0x60000000, len(payload), nexthdr, hop)
            + bytes(15) + b"\x01" + bytes(15) + b"\x02" + payload)


def vlan(vid: int, proto: int) -> bytes:
    return struct.pack("!HH", vid, proto)


SYN, ACK = 0x02, 0x10
PACKETS: list[tuple[str, bytes]] = [
    ("udp dns from .1", eth(0x0800) + ipv4(17, udp(4000, 53))),
    ("udp dns from .9", eth(0x0800) + ipv4(17, udp(4001, 53), src=9)),
    ("udp 8080", eth(0x0800) + ipv4(17, udp(4002, 8080, b"x" * 40), tos=0xB8)),
    ("tcp syn :80", eth(0x0800) + ipv4(6, tcp(5555, 80, SYN))),
    ("tcp syn :80 from .3", eth(0x0800) + ipv4(6, tcp(5556, 80, SYN), src=3)),
    ("tcp syn :80 again", eth(0x0800) + ipv4(6, tcp(5557, 80, SYN), src=4)),
    ("tcp syn :80 flood", eth(0x0800) + ipv4(6, tcp(5558, 80, SYN), src=5)),
    ("tcp ack :443", eth(0x0800) + ipv4(6, tcp(5559, 443, ACK, b"data" * 10))),
    ("icmp echo", eth(0x0800) + ipv4(1, icmp(8))),
    ("icmp reply", eth(0x0800) + ipv4(1, icmp(0), src=2, dst=1)),
    ("ttl 1", eth(0x0800) + ipv4(17, udp(1, 2), ttl=1)),
    ("ip options", eth(0x0800) + ipv4(17, udp(7, 9), options=b"\x01\x01\x07\x07\x04"
                                                         + bytes(4) + b"\x00\x00\x00")),
    ("fragment", eth(0x0800) + ipv4(17, udp(3, 4), frag=0x2000)),
    ("ipv6 udp", eth(0x86DD) + ipv6(17, udp(6000, 53))),
    ("ipv6 hop 1", eth(0x86DD) + ipv6(58, icmp(128), hop=1)),
    ("arp", eth(0x0806, dst=b"\xff" * 6) + bytes(28)),
    ("vlan 42", eth(0x8100) + vlan(42, 0x0800) + ipv4(17, udp(1, 53))),
    ("qinq 7/99", eth(0x88A8) + vlan(7, 0x8100) + vlan(99, 0x86DD) + ipv6(17, udp(1, 2))),
    ("broadcast udp", eth(0x0800, dst=b"\xff" * 6) + ipv4(17, udp(68, 67), dst=255)),
    ("udp ecn ce", eth(0x0800) + ipv4(17, udp(4003, 4433), tos=0x03)),
    ("eth only", eth(0x0800)),
    ("truncated ip", eth(0x0800) + ipv4(6, tcp(1, 2, SYN))[:24]),
]

# struct args of the syscall programs (tests/corpus/syscall_corpus.c): 64 bytes
SYSCALL_CTXS: list[tuple[str, bytes]] = [
    ("zeros", bytes(64)),
    ("small", struct.pack("<8I", 3, 1, 4, 1, 5, 9, 2, 6) + b"pybpf\0" + bytes(26)),
    ("big", struct.pack("<8I", 0xFFFFFFFF, 7, 0x80000000, 12, 0, 99, 1 << 20, 42)
     + b"hello world\0" + bytes(20)),
    ("text", struct.pack("<8I", 10, 20, 30, 40, 50, 60, 70, 80) + b"-12345 abc\0" + bytes(21)),
]


# u64 arguments of the raw tracepoint programs (tests/corpus/trace_corpus.c): 4 of them
RAW_TP_ARGS: list[tuple[str, bytes]] = [
    ("zeros", bytes(32)),
    ("write", struct.pack("<4Q", 0xFFFF888000001000, 1, 0, 7)),
    ("write again", struct.pack("<4Q", 0xFFFF888000002000, 1, 3, 2)),
    ("openat", struct.pack("<4Q", 1, 257, 0xFFFF888000003000, 1 << 40)),
]


def _sk_lookup(family: int, proto: int, rport: int, lport: int, rip: int = 1, lip: int = 2,
               v6_last: int = 0) -> bytes:
    ctx = BpfSkLookup(family=family, protocol=proto, remote_port=socket_htons(rport),
                      local_port=lport)
    if family == 2:
        ctx.remote_ip4 = int.from_bytes(bytes([10, 0, 0, rip]), "little")
        ctx.local_ip4 = int.from_bytes(bytes([10, 0, 0, lip]), "little")
    else:
        ctx.remote_ip6[0], ctx.remote_ip6[3] = 0x80FE, v6_last
        ctx.local_ip6[0], ctx.local_ip6[3] = 0x80FE, 1 << 24
    return bytes(ctx)


def socket_htons(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


# struct bpf_sk_lookup contexts of the sk_lookup programs (tests/corpus/sock_corpus.c)
SK_LOOKUP_CTXS: list[tuple[str, bytes]] = [
    ("tcp :80", _sk_lookup(2, 6, 40000, 80)),
    ("tcp :7001", _sk_lookup(2, 6, 40001, 7001)),
    ("udp :7001", _sk_lookup(2, 17, 40002, 7001)),
    ("tcp :22 from high port", _sk_lookup(2, 6, 60000, 22)),
    ("tcp :22 to .3", _sk_lookup(2, 6, 60001, 22, lip=3)),
    ("tcp6 :443", _sk_lookup(10, 6, 50000, 443, v6_last=1 << 24)),
    ("udp6 :53 to ::", _sk_lookup(10, 17, 5353, 53)),
    ("tcp :80 again", _sk_lookup(2, 6, 40003, 80)),
]

# struct bpf_sock_addr / struct bpf_sock contexts (no kernel test run: both engines only)
SOCK_ADDR_CTXS: list[tuple[str, dict]] = [
    ("connect vip:80", dict(user_family=2, user_ip4=0x0A00000A, user_port=socket_htons(80),
                            family=2, type=1, protocol=6)),
    ("connect other", dict(user_family=2, user_ip4=0x0300000A, user_port=socket_htons(80),
                           family=2, type=1, protocol=6)),
    ("udp to :53", dict(user_family=2, user_ip4=0x0800000A, user_port=socket_htons(53),
                        family=2, type=2, protocol=17)),
    ("udp to :123", dict(user_family=2, user_ip4=0x0800000A, user_port=socket_htons(123),
                         family=2, type=2, protocol=17)),
]
SOCK_CTXS: list[tuple[str, dict]] = [
    ("tcp4", dict(family=2, type=1, protocol=6)),
    ("udp6", dict(family=10, type=2, protocol=17)),
    ("raw4", dict(family=2, type=3, protocol=1)),
]


# Packets longer than the XDP test run's linear part (3520 bytes): the kernel puts the rest in
# page-sized fragments (xdp.frags programs run on these as well as on PACKETS); the last needs
# an 18th fragment, which the kernel refuses (ENOMEM)
def _long_udp(n: int) -> bytes:
    """An n-byte UDP frame (IP and UDP lengths as far as 16 bits hold them) with a pattern."""
    size = min(n - 14, 0xFFFF)
    head = eth(0x0800) + ipv4(17, udp(9000, 9001, bytes(size - 28)))[:28]
    return head + bytes((i * 7 + 3) & 0xFF for i in range(n - len(head)))


FRAG_PACKETS: list[tuple[str, bytes]] = [
    ("linear 3520", _long_udp(3520)),
    ("one frag byte", _long_udp(3521)),
    ("frags 5000 sel 1", _long_udp(5000)[:42] + b"\x01" + _long_udp(5000)[43:]),
    ("frags 9000 sel 2", _long_udp(9000)[:42] + b"\x02" + _long_udp(9000)[43:]),
    ("frags 9000 sel 3", _long_udp(9000)[:42] + b"\x03" + _long_udp(9000)[43:]),
    ("frags 20000", _long_udp(20000)),
    ("17 frags", _long_udp(3520 + 17 * 4096)),
    ("18 frags", _long_udp(3520 + 17 * 4096 + 1)),
]


def inputs_for(prog_type: str, section: str = "") -> list[tuple[str, dict]]:
    if prog_type == "sk_lookup":
        return [(n, {"ctx": c}) for n, c in SK_LOOKUP_CTXS]
    if prog_type == "cgroup_sock_addr":
        return [(n, {"ctx": c}) for n, c in SOCK_ADDR_CTXS]
    if prog_type == "cgroup_sock":
        return [(n, {"ctx": c}) for n, c in SOCK_CTXS]
    if prog_type == "syscall":
        return [(n, {"ctx": c}) for n, c in SYSCALL_CTXS]
    if prog_type == "raw_tracepoint":
        return [(n, {"ctx": c}) for n, c in RAW_TP_ARGS]
    if prog_type == "xdp":
        # with a ctx_in (the whole packet, no metadata), so ctx_out is compared too: the
        # pointers the head/tail helpers moved, as offsets (xdp_convert_buff_to_md)
        packets = PACKETS + FRAG_PACKETS if section.startswith("xdp.frags") else PACKETS
        return [(n, {"data": p, "ctx": struct.pack("<6I", 0, len(p), 0, 0, 0, 0)})
                for n, p in packets]
    return [(n, {"data": p}) for n, p in PACKETS]


# --- the programs ------------------------------------------------------------------------------
def objects() -> list[str]:
    return sorted(glob.glob(os.path.join(CORPUS, "*.o")))


def programs() -> list[tuple[str, str]]:
    """(object path, program name) of every corpus program that is autoloaded."""
    out = []
    for path in objects():
        for name, p in parse_object(path).programs.items():
            if p.autoload:
                out.append((path, name))
    return out


def _companions(obj, name: str) -> list[str]:
    """Programs a prog_array of the object names (tail-call targets), besides ``name``."""
    names = []
    for m in obj.map_defs.values():
        if m.type == "prog_array":
            names += [t for t in m.init_slots.values() if t != name and t not in names]
    return names


# --- records -------------------------------------------------------------------------------------
def _ctx_record(prog_type: str, ctx) -> dict | bytes | None:
    if prog_type == "syscall":
        return bytes(ctx) if ctx is not None else None
    if prog_type == "raw_tracepoint":
        return None         # read-only; BPF_PROG_TEST_RUN has no ctx_out for it
    if prog_type in ("sk_lookup", "cgroup_sock_addr", "cgroup_sock"):
        return bytes(ctx) if ctx is not None else None
    if prog_type == "xdp":
        return bytes(ctx) if ctx is not None else None
    if _kind(prog_type) == "skb":
        skb = ctx if isinstance(ctx, SkBuff) else SkBuff.from_buffer_copy(
            bytes(ctx).ljust(ctypes.sizeof(SkBuff), b"\0"))
        return {f: (list(getattr(skb, f)) if f == "cb" else getattr(skb, f)) for f in SKB_OUT}
    return None


# The programs the kernel accepts that pybpf's verifier still refuses, each with the reason;
# only these load unverified (so both engines are still compared), without paying for the
# refusal; every other corpus program loads verified, as a user's load does.
# tests/test_corpus.py checks this list is exact (the refusals with PYBPF_VERIFIER_SLOW=1).
# Empty since precision tracking (verifier/precision.py): sys_sort and sys_log2_hist, which
# reached the 1,000,000-instruction limit when every scalar was precise, now verify.
KNOWN_UNVERIFIED: dict[str, str] = {}


def _load(obj, prog, engine: str):
    if prog.name in KNOWN_UNVERIFIED:
        return obj.vm.load(prog, engine=engine, verify=False)
    return obj.vm.load(prog, engine=engine)


def pybpf_records(path: str, name: str, engine: str) -> list[dict]:
    obj = pybpf.load_elf(path)
    prog = obj.programs[name]
    keep = [_load(obj, obj.programs[c], engine) for c in _companions(obj, name)]
    lp = _load(obj, prog, engine)
    for n, entries in MAP_INIT.items():
        if n in obj.maps:
            for k, v in entries.items():
                obj.maps[n].sys_update(struct.pack("<I", k), v)
    out = []
    for what, kw in inputs_for(lp.prog_type, prog.section):
        if isinstance(kw.get("ctx"), bytes):
            kw = {**kw, "ctx": bytearray(kw["ctx"])}
        try:
            r0 = lp.run(**kw)
        except pybpf.BPFError as e:       # an input the kernel refuses too (EINVAL)
            out.append({"input": what, "error": str(e), "errno": getattr(e, "errno", None)})
            continue
        out.append({"input": what, "retval": r0 & 0xFFFFFFFF, "data": lp.last_data,
                    "ctx": _ctx_record(lp.prog_type, lp.last_ctx),
                    "maps": {n: _pybpf_dump(obj.maps[n]) for n, d in obj.map_defs.items()
                             if d.type not in NOT_DUMPED and n in obj.maps}})
    for lp2 in keep + [lp]:
        lp2.close()
    return out


def _records(records: list[bytes]) -> dict[bytes, bytes]:
    """A ring buffer's records as a map dump: record index (u32) -> record."""
    return {i.to_bytes(4, "little"): r for i, r in enumerate(records)}


def _pybpf_dump(m) -> dict[bytes, bytes]:
    if m.type == "ringbuf":
        return _records(m.consume())
    out, key = {}, None
    while True:
        try:
            key = bytes(m.sys_get_next_key(key))
        except pybpf.BPFError:
            return out
        try:
            out[key] = bytes(m.sys_lookup(key))
        except pybpf.MapError as e:       # a key without an element (devmap): the kernel's
            if e.errno != 2:               # dump skips its ENOENT too
                raise


def kernel_records(path: str, name: str) -> list[dict]:
    """The kernel's records, run on CPU 0 as pybpf runs (bpf_get_smp_processor_id, the copy
    bpf_this_cpu_ptr gives): the calling thread is pinned for the runs."""
    affinity = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {0})
    except OSError:
        affinity = None
    try:
        return _kernel_records(path, name)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


def _kernel_records(path: str, name: str) -> list[dict]:
    import kernel_bpf
    obj = parse_object(path)
    prog = obj.programs[name]
    ko = kernel_bpf.KernelObject(obj)
    try:
        fds = {n: ko.load(obj.programs[n]) for n in [name] + _companions(obj, name)}
        for m in obj.map_defs.values():       # __array(values, ...), as libbpf fills them
            for index, target in m.init_slots.items():
                value = fds[target] if m.type == "prog_array" else ko.fds[target]
                key = index.to_bytes(4, "little")[:m.key_size].ljust(m.key_size, b"\0")
                kernel_bpf.update(ko.fds[m.name], key,
                                  struct.pack("<I", value))
        for n, entries in MAP_INIT.items():
            if n in ko.fds:
                for k, v in entries.items():
                    kernel_bpf.update(ko.fds[n], struct.pack("<I", k), v)
        out = []
        for what, kw in inputs_for(prog.prog_type, prog.section):
            data, ctx = kw.get("data"), kw.get("ctx")
            if isinstance(ctx, dict):           # the socket types' struct, as bytes
                ctx = bytes(SOCK_STRUCTS[prog.prog_type](**ctx))
            ctx_size = {"skb": ctypes.sizeof(SkBuff), "sk_lookup": ctypes.sizeof(BpfSkLookup),
                        "xdp": 24}.get(_kind(prog.prog_type), 0)
            try:
                retval, dout, cout = kernel_bpf.test_run(
                    fds[name], ctx=ctx, data=data,
                    data_out_size=len(data) + 512 if data else 0,
                    ctx_out_size=ctx_size)
            except kernel_bpf.KernelError as e:
                if e.errno not in (22, 12):       # EINVAL, ENOMEM (too many fragments)
                    raise
                out.append({"input": what, "error": str(e), "errno": e.errno})
                continue
            out.append({"input": what, "retval": retval,
                        "data": dout if data is not None else None,
                        "ctx": _ctx_record(prog.prog_type, cout) if cout else None,
                        "maps": {n: _records(kernel_bpf.ringbuf_consume(ko.fds[n], d.max_entries))
                                 if d.type == "ringbuf" else
                                 _without_roots(obj, d, _kernel_dump(ko.fds[n], d))
                                 for n, d in obj.map_defs.items() if d.type not in NOT_DUMPED}})
        return out
    finally:
        ko.close()


PERCPU_TYPES = ("percpu_array", "percpu_hash", "lru_percpu_hash")


def _kernel_dump(fd: int, d) -> dict:
    """A kernel map's contents; a per-CPU map's as CPU 0's values (8-aligned, as pybpf's one-CPU
    maps from an object give them): the runs are pinned to CPU 0, the other CPUs' copies stay
    as the map created them (tests/test_kptr_percpu.py compares runs on two CPUs)."""
    import kernel_bpf
    if d.type not in PERCPU_TYPES:
        return kernel_bpf.dump(fd, d.key_size, d.value_size)
    stride = (d.value_size + 7) & ~7
    return {k: v[:stride] for k, v in kernel_bpf.dump(
        fd, d.key_size, stride * kernel_bpf.possible_cpus()).items()}


def _without_roots(obj, d, dump: dict) -> dict:
    """A kernel map dump with its graph roots (bpf_list_head, bpf_rb_root) zeroed: the kernel
    hands user space its list pointers there (an empty list points at itself), pybpf zeros."""
    from pybpf.runtime.maps.btf_fields import ROOT_SIZE, graph_roots
    offsets = {v.name: v.offset for v in obj.variables.values() if v.map_name == d.name}
    roots = graph_roots(obj.btf, d.btf_value_type, offsets) if d.btf_value_type else {}
    if not roots:
        return dump
    out = {}
    for k, v in dump.items():
        v = bytearray(v)
        for off in roots:
            v[off:off + ROOT_SIZE] = bytes(ROOT_SIZE)
        out[k] = bytes(v)
    return out


def _kind(prog_type: str) -> str:
    return "skb" if prog_type in SKB_TYPES else prog_type


def compare(a: list[dict], b: list[dict], what_a: str, what_b: str) -> list[str]:
    """Differences between two runs' records, one line each."""
    diffs = []
    for ra, rb in zip(a, b):
        if "error" in ra or "error" in rb:
            if ("error" in ra) != ("error" in rb):
                diffs.append(f"{ra['input']}: {what_a} {ra.get('error', 'runs')} but "
                             f"{what_b} {rb.get('error', 'runs')}")
            elif None not in (ra.get("errno"), rb.get("errno")) and ra["errno"] != rb["errno"]:
                diffs.append(f"{ra['input']}: errno {what_a} {ra['errno']} != "
                             f"{what_b} {rb['errno']}")
            continue
        for field in ("retval", "data", "ctx", "maps"):
            if ra[field] != rb[field]:
                diffs.append(f"{ra['input']}: {field}: {what_a} {_short(ra[field])} != "
                             f"{what_b} {_short(rb[field])}")
    if len(a) != len(b):
        diffs.append(f"{len(a)} runs != {len(b)} runs")
    return diffs


def _short(v) -> str:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return repr({k: (_short(x) if isinstance(x, (bytes, dict)) else x)
                     for k, x in v.items()})[:600]
    return repr(v)


def census() -> tuple[dict, dict]:
    """(programs per program type, programs per helper, kfunc or instruction family they use)."""
    types, helpers = {}, {}
    for path, name in programs():
        p = parse_object(path).programs[name]
        types[p.prog_type] = types.get(p.prog_type, 0) + 1
        for u in calls_of(p):
            helpers[u] = helpers.get(u, 0) + 1
    return types, helpers


def calls_of(prog) -> set[str]:
    """The helpers and kfuncs a loaded program calls, by name (kfunc ids as pybpf numbers
    them), plus ld_abs/ld_ind, BPF-to-BPF calls and atomics as census() names them."""
    from pybpf.helper_names import HELPER_NAMES
    from pybpf.kfunc_ids import KFUNC_IDS
    kfuncs = {v: k for k, v in KFUNC_IDS.items()}
    used = set()
    for _, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "helper":
            used.add(f"bpf_{HELPER_NAMES[insn.imm]}")
        elif form.kind == "call" and form.op == "kfunc":
            used.add(kfuncs.get(insn.imm, f"kfunc#{insn.imm}"))
        elif form.kind == "ldabs":
            used.add("ld_abs/ld_ind")
        elif form.kind == "call" and form.op == "local":
            used.add("bpf-to-bpf call")
        elif form.kind == "atomic":
            used.add("atomics")
    return used


def run_stats(programs_=None, kernel: bool = True, say=None) -> dict:
    """Run every corpus program (or ``programs_``: (path, name) pairs) in both engines and, with
    ``kernel``, in the running kernel; per program type and per helper/kfunc it uses: programs,
    runs, runs where the interpreter and the JIT agree, runs where both equal the kernel, runs
    the kernel could not do (it refuses BPF_PROG_TEST_RUN for the type: only both engines)."""
    import errno as _errno
    import kernel_bpf
    by_type, by_call = {}, {}
    for path, name in programs_ if programs_ is not None else programs():
        obj = pybpf.load_elf(path)
        prog = obj.programs[name]
        calls = calls_of(prog)
        interp = pybpf_records(path, name, "interp")
        jit = pybpf_records(path, name, "jit")
        theirs = None
        if kernel:
            try:
                theirs = kernel_records(path, name)
            except kernel_bpf.KernelError as e:
                if e.errno not in (524, _errno.EOPNOTSUPP):     # ENOTSUPP: no test run
                    raise
        row = {"programs": 1, "runs": len(interp), "engines_equal": 0, "kernel_equal": 0,
               "no_kernel": 0 if theirs is not None else len(interp)}
        for i, r in enumerate(interp):
            same = not compare([r], [jit[i]], "interp", "jit")
            row["engines_equal"] += same
            if theirs is not None:
                row["kernel_equal"] += same and not compare([r], [theirs[i]], "pybpf", "kernel")
        if say is not None:
            say(f"{name} ({prog.prog_type}): {row}")
        for table, keys in ((by_type, [prog.prog_type]), (by_call, sorted(calls))):
            for k in keys:
                acc = table.setdefault(k, dict.fromkeys(row, 0))
                for f, v in row.items():
                    acc[f] += v
    return {"types": by_type, "calls": by_call}


def format_stats(st: dict) -> str:
    cols = ("programs", "runs", "engines_equal", "kernel_equal", "no_kernel")
    head = f"{{:<34}}{''.join('{:>15}' for _ in cols)}"
    lines = []
    for title, table in (("program type", st["types"]), ("helper / kfunc", st["calls"])):
        lines.append(head.format(title, "programs", "runs", "interp=jit", "=kernel",
                                 "no kernel run"))
        for k, row in sorted(table.items(), key=lambda kv: (-kv[1]["programs"], kv[0])):
            lines.append(head.format(k, *(row[c] for c in cols)))
        total = {c: sum(r[c] for r in table.values()) for c in cols}
        if title == "program type":
            lines.append(head.format("total", *(total[c] for c in cols)))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    if "--stats" in sys.argv:
        # runs per program type and per helper/kfunc, in both engines and in the kernel
        # (python tests/corpus_run.py --stats [--no-kernel] [-v]); JIT code runs in this process
        verbose = "-v" in sys.argv
        st = run_stats(kernel="--no-kernel" not in sys.argv,
                       say=(lambda line: print(line, flush=True)) if verbose else None)
        print(format_stats(st))
        sys.exit(0)
    t, h = census()
    print(f"{sum(t.values())} programs:", ", ".join(f"{k} {v}" for k, v in sorted(t.items())))
    print("uses:", ", ".join(f"{k} {v}" for k, v in sorted(h.items(), key=lambda x: -x[1])))
