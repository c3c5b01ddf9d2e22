"""Program types and their kernel-style contexts (interpreter): syscall, the __sk_buff types, xdp,
tracepoint/kprobe; ld_abs/ld_ind; and the xdp_filter, ringbuf and socket_count samples."""
from __future__ import annotations

import errno

import ctypes
import os
import struct

import pytest

import pybpf
from pybpf.errors import MemoryAccessError, VMError
from pybpf.runtime.contexts import SkBuff, XdpMd
from pybpf.vm import VM as _VM
from pybpf.uapi import XDP_DROP, XDP_PASS, XDP_TX


class VM(_VM):
    """These tests check the run-time contexts and the interpreter's checks on them (fields the
    kernel's verifier refuses for a type, writes to read-only packets): their hand-written
    programs load with the structural checks only. ELF samples load through their own VM,
    verified; tests/verifier/ctx and packet cover the verifier's context rules."""

    def load(self, prog, *args, verify="structural", **kw):
        return super().load(prog, *args, verify=verify, **kw)
from support import SAMPLES, asm, frame, sample_driver


# --- types -------------------------------------------------------------------------------------
def test_prog_type_comes_from_the_elf_section_and_aliases_are_known():
    obj = pybpf.load_elf(os.path.join(SAMPLES, "c", "ringbuf.o"))
    assert obj.vm.load(obj.programs["produce"]).prog_type == "syscall"
    assert obj.vm.load(obj.programs["on_write"]).prog_type == "tracepoint"
    vm, p = VM(), asm("r0 = 0\nexit")
    assert vm.load(p).prog_type == "mem"
    assert [vm.load(p, prog_type=t).prog_type for t in ("socket", "tc", "tp")] == \
        ["socket_filter", "sched_cls", "tracepoint"]
    with pytest.raises(VMError, match="not supported"):
        vm.load(p, prog_type="lsm")
    with pytest.raises(VMError, match="takes ctx="):
        vm.load(p, prog_type="xdp").run(mem=b"x")
    with pytest.raises(VMError, match="takes mem="):
        vm.load(p).run(ctx=b"x")


def test_syscall_context_is_written_back():
    lp = VM().load(asm("r2 = *(u64 *)(r1 + 0)\nr2 *= 3\n*(u64 *)(r1 + 8) = r2\nr0 = 7\nexit"),
                   prog_type="syscall")
    ctx = bytearray(struct.pack("<QQ", 5, 0))
    assert lp.run(ctx=ctx) == 7 and struct.unpack("<QQ", ctx) == (5, 15)
    assert lp.last_ctx == bytes(ctx)

    class Args(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
    args = Args(11, 0)
    lp.run(ctx=args)
    assert args.b == 33
    lp.run(ctx=bytes(struct.pack("<QQ", 2, 0)))          # immutable: only last_ctx changes
    assert lp.last_ctx == struct.pack("<QQ", 2, 6)
    null = VM().load(asm("r0 = r1\nexit"), prog_type="syscall")
    assert null.run() == 0                                # no ctx: r1 = NULL, as test_run


XDP_SWAP = """
    r2 = *(u32 *)(r1 + 0)
    r3 = *(u32 *)(r1 + 4)
    r4 = *(u32 *)(r1 + 8)
    if r4 != r2 goto aborted
    r4 = r2
    r4 += 14
    if r4 > r3 goto aborted
    r5 = *(u16 *)(r2 + 12)
    if r5 != 0x8 goto pass
    r5 = *(u32 *)(r2 + 0)
    r6 = *(u16 *)(r2 + 4)
    r7 = *(u32 *)(r2 + 6)
    r8 = *(u16 *)(r2 + 10)
    *(u32 *)(r2 + 0) = r7
    *(u16 *)(r2 + 4) = r8
    *(u32 *)(r2 + 6) = r5
    *(u16 *)(r2 + 10) = r6
    r0 = 3
    exit
pass:
    r0 = 2
    exit
aborted:
    r0 = 0
    exit
"""


def test_xdp_is_one_call_against_a_packet_and_may_rewrite_it():
    lp = VM().load(asm(XDP_SWAP), prog_type="xdp")
    pkt = frame()
    assert lp.run(data=pkt) == XDP_TX
    assert lp.last_data == pkt[6:12] + pkt[0:6] + pkt[12:]          # MACs swapped in place
    md = lp.last_ctx        # the kernel's ctx_out: offsets from data_meta, ctx_in's ifindex
    assert isinstance(md, XdpMd) and (md.data_meta, md.data, md.data_end) == (0, 0, len(pkt))
    assert md.ingress_ifindex == 0
    assert lp.run(data=frame(0x86DD)) == XDP_PASS and lp.last_data == frame(0x86DD)
    with pytest.raises(VMError, match="Ethernet header") as e:         # too short: EINVAL,
        lp.run(data=pkt[:10])                                          # as BPF_PROG_TEST_RUN
    assert e.value.errno == errno.EINVAL
    # a linear part shorter than the packet (ctx_in data_end): the rest is a fragment
    assert lp.run(data=pkt, ctx={"data_end": 10}) == 0
    assert lp.last_data == pkt
    with pytest.raises(MemoryAccessError, match="read-only"):         # xdp_md is read-only
        VM().load(asm("*(u32 *)(r1 + 12) = 1\nr0 = 2\nexit"), prog_type="xdp").run(data=pkt)
    with pytest.raises(MemoryAccessError):                            # past data_end
        VM().load(asm("r2 = *(u32 *)(r1 + 4)\nr0 = *(u8 *)(r2 + 0)\nexit"),
                  prog_type="xdp").run(data=pkt)
    q = VM().load(asm("r0 = *(u32 *)(r1 + 16)\nexit"), prog_type="xdp")
    assert q.run(data=pkt, ctx={"ingress_ifindex": 1, "rx_queue_index": 0}) == 0
    for bad in ({"rx_queue_index": 3}, {"ingress_ifindex": 1, "rx_queue_index": 1},
                {"data_meta": 4}, {"egress_ifindex": 1}):
        with pytest.raises(VMError, match="BPF_PROG_TEST_RUN: EINVAL"):
            q.run(data=pkt, ctx=bad)


SKB_FIELDS = ["len", "pkt_type", "mark", "queue_mapping", "protocol", "vlan_present",
              "vlan_tci", "vlan_proto", "priority", "ingress_ifindex", "ifindex", "tc_index",
              "hash", "tc_classid", "napi_id", "wire_len"]


def _dump_skb() -> str:
    """A program returning a checksum of the __sk_buff fields (each times its offset + 1, cb[i]
    times 1000 + i), plus (data_end - data) << 40 and the packet's first byte << 56 read through
    ``data`` (r0 = 0 first if data_meta != data)."""
    lines = ["r6 = r1", "r7 = *(u32 *)(r6 + 76)", "r8 = *(u32 *)(r6 + 80)",
             "r9 = *(u32 *)(r6 + 140)", "r0 = 0"]
    for name in SKB_FIELDS:                               # a checksum of field * weight
        off = getattr(SkBuff, name).offset
        lines += [f"r1 = *(u32 *)(r6 + {off})", f"r1 *= {off + 1}", "r0 += r1"]
    for i in range(5):
        lines += [f"r1 = *(u32 *)(r6 + {48 + 4 * i})", f"r1 *= {1000 + i}", "r0 += r1"]
    lines += ["r1 = r8", "r1 -= r7", "r1 <<= 40", "r0 += r1",          # data_end - data
              "if r9 == r7 goto +1", "r0 = 0", "r1 = *(u8 *)(r7 + 0)", "r1 <<= 56", "r0 += r1",
              "exit"]
    return "\n".join(lines)


@pytest.mark.parametrize("prog_type", ["socket_filter", "sched_cls", "cgroup_skb", "lwt_in"])
def test_sk_buff_fields_are_real_values_visible_to_the_program(prog_type):
    lp = VM().load(asm(_dump_skb()), prog_type=prog_type)
    # BPF_PROG_TEST_RUN pulls the Ethernet header; only tc gets it pushed back
    l2 = prog_type == "sched_cls"
    pkt = frame() if l2 else frame()[14:]
    ctx = {"mark": 7, "priority": 3, "cb": [1, 2, 3, 4, 5], "vlan_present": 1, "vlan_tci": 42,
           "hash": 99, "tc_index": 2, "ifindex": 5, "ingress_ifindex": 4, "queue_mapping": 1}
    r0 = lp.run(data=frame(), ctx=ctx)
    skb = lp.last_ctx
    # frame()'s destination is not the loopback's (zero) address: PACKET_OTHERHOST
    want = {"len": len(pkt), "protocol": 0x0008, "pkt_type": 3, "vlan_proto": 0,
            "tc_classid": 0, "napi_id": 0, "wire_len": len(pkt)}
    want.update({k: v for k, v in ctx.items() if k != "cb"})
    assert {n: getattr(skb, n) for n in SKB_FIELDS} == want
    assert list(skb.cb) == [1, 2, 3, 4, 5] and skb.data_end - skb.data == len(pkt)
    assert 0 < skb.data < 1 << 32 and skb.data_meta == skb.data
    checksum = sum(want[n] * (getattr(SkBuff, n).offset + 1) for n in SKB_FIELDS)
    checksum += sum((i + 1) * (1000 + i) for i in range(5))
    assert r0 == checksum + (len(pkt) << 40) + (pkt[0] << 56)   # data points at the packet
    assert lp.last_data == (frame() if l2 else bytes(14) + frame()[14:])   # data_out
    lp.run(data=frame(0x86DD, payload=bytes(20)))
    assert lp.last_ctx.protocol == 0xDD86                       # __be16 ETH_P_IPV6
    lp.run(data=b"\xff" * 6 + frame(0x0806)[6:])
    # the loopback's broadcast address is all zeros: ff:ff:ff:ff:ff:ff is PACKET_MULTICAST there
    assert (lp.last_ctx.protocol, lp.last_ctx.pkt_type) == (0x0608, 2)


@pytest.mark.parametrize("data,why", [(frame()[:13], "shorter than the Ethernet header"),
                                      (frame()[:33], "less than its header's 20"),
                                      (frame(0x86DD), "less than its header's 40")])
def test_sk_buff_frames_the_kernel_refuses(data, why):
    lp = VM().load(asm("r0 = 0\nexit"), prog_type="socket_filter")
    with pytest.raises(VMError, match=why):
        lp.run(data=data)


def test_sk_buff_ctx_errors_and_ctypes_input():
    lp = VM().load(asm("r0 = *(u32 *)(r1 + 8)\n*(u32 *)(r1 + 8) = 9\nexit"), prog_type="tc")
    with pytest.raises(VMError, match="has no field 'marks'"):
        lp.run(data=frame(), ctx={"marks": 1})
    with pytest.raises(VMError, match="set by the run"):
        lp.run(data=frame(), ctx={"len": 1})
    skb = SkBuff(mark=5)
    assert lp.run(data=frame(), ctx=skb) == 5 and skb.mark == 9       # written back
    assert skb.len == len(frame()) and skb.data != 0
    assert skb.protocol == 0x0008 and skb.ifindex == 1     # zero fields keep the defaults
    assert lp.run(data=frame(), ctx=skb) == 9              # the written-back struct is reusable
    assert lp.run(data=frame(), ctx=bytes(SkBuff(mark=3))[:12]) == 3     # or its first bytes


def test_packet_writability_follows_the_program_type():
    store = asm("r2 = *(u32 *)(r1 + 76)\nr3 = 0xee\n*(u8 *)(r2 + 0) = r3\nr0 = 0\nexit")
    tc = VM().load(store, prog_type="sched_cls")
    assert tc.run(data=frame()) == 0 and tc.last_data[0] == 0xEE
    for t in ("socket_filter", "cgroup_skb", "lwt_in"):
        with pytest.raises(MemoryAccessError, match="read-only"):
            VM().load(store, prog_type=t).run(data=frame())


LDABS = """
    r6 = r1
    r0 = *(u16 *)skb[12]
    if r0 != 0x800 goto +5
    r7 = 23
    r0 = *(u8 *)skb[r7 + 0]
    r8 = r0
    r0 = *(u32 *)skb[26]
    r0 += r8
    exit
"""


def test_ld_abs_and_ld_ind_read_the_packet_in_network_order():
    lp = VM().load(asm(LDABS), prog_type="sched_cls")
    pkt = frame(proto=6)
    assert lp.run(data=pkt) == 0x0A000001 + 6                  # saddr 10.0.0.1 + protocol
    assert lp.run(data=frame(0x0806)) == 0x0806
    assert lp.run(data=frame(0x0806)[:20]) == 0x0806
    past = VM().load(asm("r6 = r1\nr0 = 5\nr0 = *(u32 *)skb[34]\nexit"), prog_type="tc")
    assert past.run(data=frame(proto=6, payload=b"\1\2\3\4")) == 0x01020304
    assert past.run(data=frame(proto=6, payload=b"\1\2\3")) == 0    # out of bounds: ends, r0 0


def test_socket_filter_ld_abs_offsets_start_at_the_network_header():
    # BPF_PROG_TEST_RUN pulls the Ethernet header before a socket filter runs
    lp = VM().load(asm("r6 = r1\nr0 = *(u16 *)skb[0]\nr7 = r0\nr7 <<= 8\n"
                       "r0 = *(u8 *)skb[9]\nr0 |= r7\nexit"), prog_type="socket")
    assert lp.run(data=frame(proto=6)) == (0x4500 << 8) | 6


def test_socket_filter_data_out_is_the_whole_packet_whatever_it_keeps():
    lp = VM().load(asm("r0 = *(u32 *)(r1 + 0)\nr0 >>= 1\nexit"), prog_type="socket")
    pkt = frame()
    assert lp.run(data=pkt) == (len(pkt) - 14) // 2
    assert lp.last_data == bytes(14) + pkt[14:]            # BPF_PROG_TEST_RUN's data_out


@pytest.mark.parametrize("prog_type,size", [("tracepoint", 8), ("kprobe", 168)])
def test_trace_contexts_are_read_only_buffers(prog_type, size):
    reader = VM().load(asm("r0 = *(u64 *)(r1 + 0)\nexit"), prog_type=prog_type)
    assert reader.run() == 0 and reader.last_ctx == bytes(size)
    assert reader.run(ctx=struct.pack("<Q", 0xABCD)) == 0xABCD
    with pytest.raises(MemoryAccessError, match="read-only"):
        VM().load(asm("*(u64 *)(r1 + 0) = 1\nexit"), prog_type=prog_type).run()
    with pytest.raises(VMError, match="no packet"):
        reader.run(data=b"x")


# --- the samples ------------------------------------------------------------------------------
def test_xdp_filter_sample():
    out = sample_driver("xdp_filter").run_sample("interp", 53, say=lambda s: None)
    assert out["ok"] and out["verdicts"] == [XDP_DROP, XDP_PASS, XDP_DROP, XDP_PASS, XDP_PASS,
                                             0, XDP_DROP]
    assert out["counts"] == [1, 3, 3] and out["stats"][0] == 7


def test_ringbuf_sample():
    out = sample_driver("ringbuf").run_sample("interp", 6, 1, say=lambda s: None)
    assert out["ok"] and out["produced"] == out["consumed"] == 102 and out["dropped"] == 898


def test_socket_count_sample():
    lines = []
    out = sample_driver("socket_count").run_sample("interp", True, say=lines.append)
    assert out["ok"] and any("trace_printk: proto 2 len 28" in line for line in lines)


def test_flow_dissector_context_keys_and_clamping():
    # r2 = skb->flow_keys; keys->nhoff = 0xfff0 (clamped to the frame), thoff = 3 (to nhoff)
    lp = VM().load(asm("r2 = *(u64 *)(r1 + 144)\nr3 = 0xfff0\n*(u16 *)(r2 + 0) = r3\n"
                       "r3 = 3\n*(u16 *)(r2 + 2) = r3\nr0 = *(u16 *)(r2 + 10)\nexit"),
                   prog_type="flow_dissector")
    pkt = frame()
    assert lp.run(data=pkt) == 0x0008                     # n_proto as stored (__be16)
    keys = lp.last_ctx
    assert (keys.nhoff, keys.thoff) == (len(pkt), len(pkt))
    assert lp.last_data == bytes(keys)              # data_out: the 56-byte keys
    lp.run(data=pkt, ctx={"flags": 1})
    assert lp.last_ctx.flags == 1
    with pytest.raises(VMError, match="only flags"):
        lp.run(data=pkt, ctx={"nhoff": 3})
    with pytest.raises(VMError, match="shorter than the Ethernet header"):
        lp.run(data=pkt[:10])


def test_raw_tracepoint_context_is_the_u64_arguments():
    lp = VM().load(asm("r0 = *(u64 *)(r1 + 8)\nexit"), prog_type="raw_tp")
    assert lp.prog_type == "raw_tracepoint"
    assert lp.run(ctx=struct.pack("<2Q", 1, 99)) == 99
    assert VM().load(asm("r0 = r1\nexit"), prog_type="raw_tracepoint").run() == 0   # NULL
    with pytest.raises(VMError, match="12 u64 arguments"):
        lp.run(ctx=bytes(8 * 13))
    with pytest.raises(MemoryAccessError):
        VM().load(asm("r2 = 1\n*(u64 *)(r1 + 0) = r2\nr0 = 0\nexit"),
                  prog_type="raw_tracepoint").run(ctx=bytes(8))


def test_lwt_types_see_the_network_header_and_only_xmit_may_write():
    store = asm("r2 = *(u32 *)(r1 + 76)\nr3 = 0xee\n*(u8 *)(r2 + 1) = r3\nr0 = 0\nexit")
    lp = VM().load(store, prog_type="lwt_xmit")
    assert lp.run(data=frame()) == 0
    assert lp.last_data == bytes(14) + frame()[14:15] + b"\xee" + frame()[16:]
    for t in ("lwt_in", "lwt_out"):
        with pytest.raises(MemoryAccessError, match="read-only"):
            VM().load(store, prog_type=t).run(data=frame())


def test_sk_lookup_context_and_the_kernels_refusals():
    from pybpf.runtime.contexts import BpfSkLookup
    lp = VM().load(asm("r0 = *(u32 *)(r1 + 60)\nr2 = *(u16 *)(r1 + 36)\nr2 <<= 16\n"
                       "r0 |= r2\nexit"), prog_type="sk_lookup")
    ctx = BpfSkLookup(family=2, protocol=6, remote_port=0x5000, local_port=8080)
    assert lp.run(ctx=ctx) == 0x5000 << 16 | 8080
    assert lp.last_ctx.cookie == 0 and lp.last_ctx.local_port == 8080
    for bad, why in (({"family": 1, "local_port": 1}, "EAFNOSUPPORT"),
                     ({"family": 2, "local_port": 70000}, "ERANGE"),
                     ({"family": 2, "cookie": 5}, "must be zero")):
        with pytest.raises(VMError, match=why):
            lp.run(ctx=bad)
    with pytest.raises(VMError, match="needs ctx="):
        lp.run()
    with pytest.raises(MemoryAccessError, match="read-only"):
        VM().load(asm("r2 = 1\n*(u32 *)(r1 + 60) = r2\nr0 = 1\nexit"),
                  prog_type="sk_lookup").run(ctx=ctx)


@pytest.mark.parametrize("prog_type,field,offset", [("cgroup_sock_addr", "user_ip4", 4),
                                                    ("cgroup_sock", "mark", 16)])
def test_sock_contexts_are_written_back(prog_type, field, offset):
    from pybpf.runtime.contexts import SOCK_STRUCTS
    lp = VM().load(asm(f"r2 = *(u32 *)(r1 + {offset})\nr2 += 1\n*(u32 *)(r1 + {offset}) = r2\n"
                       f"r0 = 1\nexit"), prog_type=prog_type)
    ctx = SOCK_STRUCTS[prog_type](**{field: 41})
    assert lp.run(ctx=ctx) == 1 and getattr(ctx, field) == 42
    assert getattr(lp.last_ctx, field) == 42
    lp.run(ctx={field: 7})
    assert getattr(lp.last_ctx, field) == 8
