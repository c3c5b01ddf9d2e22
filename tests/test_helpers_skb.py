"""The socket-buffer packet helpers (runtime/helpers_skb.py) in both engines, against the running
kernel's BPF_PROG_TEST_RUN: each case is a small program (sched_cls unless it says otherwise)
that calls helpers on a packet with ordinary and edge arguments (offsets past the packet, bad
flags, sizes, old struct sizes) and leaves what it saw in r0, the packet and ``__sk_buff.cb``.
Both engines run every case in a child process (JIT code can crash a process) and must agree;
where bpf() is permitted the kernel runs it too and the return value, data_out and the context
fields BPF_PROG_TEST_RUN copies back (mark, priority, cb) must be the kernel's."""
from __future__ import annotations

import ctypes
import errno
import functools
import struct
import sys

import pytest

import corpus_run
from kernel_probe import require_kernel
from support import asm, assert_case_passed, child, run_child

M32 = 0xFFFFFFFF
CB = 48                 # offsetof(struct __sk_buff, cb): cb[i] at 48 + 4 * i
PKT_UDP = corpus_run.eth(0x0800) + corpus_run.ipv4(17, corpus_run.udp(4000, 53))
PKT_TCP = corpus_run.eth(0x0800) + corpus_run.ipv4(6, corpus_run.tcp(5555, 80, 0x02, b"x" * 40))
PKT_V6 = corpus_run.eth(0x86DD) + corpus_run.ipv6(17, corpus_run.udp(6000, 53, b"y" * 20))
PKT_ARP = corpus_run.eth(0x0806) + bytes(28)


def _udp_with_csum() -> bytes:
    """An IPv4 UDP frame whose UDP checksum is set (pseudo header included)."""
    body = b"payload!" * 3
    ip = corpus_run.ipv4(17, corpus_run.udp(1234, 5678, body))
    udp = bytearray(ip[20:])
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    struct.pack_into("!H", udp, 6, corpus_run.csum(pseudo + bytes(udp)))
    return corpus_run.eth(0x0800) + ip[:20] + bytes(udp)


PKT_UDPC = _udp_with_csum()


def _save(*regs_to_cb: tuple[str, int]) -> str:
    return "\n".join(f"*(u32 *)(r6 + {CB + 4 * i}) = {reg}" for reg, i in regs_to_cb)


def _load_to_stack(helper_args: str, size: int, fill: int = 0xAB, ret: str = "") -> str:
    """Fill 16 stack bytes with ``fill``, call the helper with r3 = r10 - 16, then cb[0..3] =
    r0 and the first 12 bytes of the buffer; r0 = len (``ret``: then this instruction)."""
    word = int.from_bytes(bytes([fill]) * 8, "little")
    return f"""
r6 = r1
r1 = {word} ll
*(u64 *)(r10 - 16) = r1
*(u64 *)(r10 - 8) = r1
r1 = r6
r3 = r10
r3 += -16
{helper_args}
*(u32 *)(r6 + {CB}) = r0
r1 = *(u32 *)(r10 - 16)
*(u32 *)(r6 + {CB + 4}) = r1
r1 = *(u32 *)(r10 - 12)
*(u32 *)(r6 + {CB + 8}) = r1
r1 = *(u32 *)(r10 - 8)
*(u32 *)(r6 + {CB + 12}) = r1
r0 = *(u32 *)(r6 + 0)
{ret}
exit
"""


def _call(setup: str, helper: str, after: str = "") -> str:
    """r6 = ctx; ``setup`` (r1 = ctx already); the call; cb[0] = r0, cb[1] = len,
    cb[2] = protocol, cb[3] = data_end - data; ``after``; r0 = the call's r0."""
    return f"""
r6 = r1
{setup}
call bpf_{helper}
r7 = r0
*(u32 *)(r6 + {CB}) = r7
r1 = *(u32 *)(r6 + 0)
*(u32 *)(r6 + {CB + 4}) = r1
r1 = *(u32 *)(r6 + 16)
*(u32 *)(r6 + {CB + 8}) = r1
r2 = *(u32 *)(r6 + 76)
r3 = *(u32 *)(r6 + 80)
r3 -= r2
*(u32 *)(r6 + {CB + 12}) = r3
{after}
r0 = r7
exit
"""


def _twice(first: str, second: str) -> str:
    """Two calls: cb[0] = the first's r0, cb[1] = the second's, cb[2] = len after both."""
    return f"""
r6 = r1
{first}
*(u32 *)(r6 + {CB}) = r0
r1 = r6
{second}
*(u32 *)(r6 + {CB + 4}) = r0
r1 = *(u32 *)(r6 + 0)
*(u32 *)(r6 + {CB + 8}) = r1
r1 = *(u32 *)(r6 + 16)
*(u32 *)(r6 + {CB + 12}) = r1
r0 = 0
exit
"""


def _csum(helper: str, off: int, frm: int, to: int, flags: int) -> str:
    return _call(f"r2 = {off}\nr3 = {frm} ll\nr4 = {to} ll\nr5 = {flags} ll", helper)


def _tunnel(set_flags: int, set_size: int, get_flags: int, get_size: int,
            key: bytes) -> str:
    """Set a tunnel key from ``key`` (44 bytes on the stack at r10 - 48), then get one into
    r10 - 96 (filled with 0xcd first); cb[0] = set's r0, cb[1] = get's, cb[2..4] = words 0, 1
    and 5 of what get wrote (id, remote address, tos/ttl/flags), r0 word 7 (local address)."""
    words = [int.from_bytes(key.ljust(48, b"\0")[i:i + 8], "little") for i in range(0, 48, 8)]
    fill = int.from_bytes(b"\xcd" * 8, "little")
    lines = ["r6 = r1"]
    for i, w in enumerate(words):
        lines += [f"r1 = {w} ll", f"*(u64 *)(r10 - {48 - 8 * i}) = r1"]
    for i in range(6):
        lines += [f"r1 = {fill} ll", f"*(u64 *)(r10 - {96 - 8 * i}) = r1"]
    lines += ["r1 = r6", "r2 = r10", "r2 += -48", f"r3 = {set_size}", f"r4 = {set_flags}",
              "call bpf_skb_set_tunnel_key", f"*(u32 *)(r6 + {CB}) = r0",
              "r1 = r6", "r2 = r10", "r2 += -96", f"r3 = {get_size}", f"r4 = {get_flags}",
              "call bpf_skb_get_tunnel_key", f"*(u32 *)(r6 + {CB + 4}) = r0"]
    for i, word in ((2, 0), (3, 1), (4, 5)):
        lines += [f"r1 = *(u32 *)(r10 - {96 - 4 * word})", f"*(u32 *)(r6 + {CB + 4 * i}) = r1"]
    lines += [f"r0 = *(u32 *)(r10 - {96 - 4 * 7})", "exit"]
    return "\n".join(lines)


KEY_V4 = struct.pack("<I16sBBHI16s", 42, struct.pack("<I", 0x0A000063), 0x10, 64, 0, 0,
                     struct.pack("<I", 0x0A000001))
KEY_V6 = struct.pack("<I16sBBHI16s", 0x12345678, bytes(range(16)), 0, 9, 0, 0xABCDEF,
                     bytes(range(100, 116)))
KEY_V4_LABEL = struct.pack("<I16sBBHI16s", 1, bytes(16), 0, 0, 0, 7, bytes(16))

# The program that rewrites an IPv4 UDP packet's source (NAT): new address in the IP header with
# skb_store_bytes, IP and UDP checksums with l3/l4_csum_replace (pseudo header), then the port.
_NAT = f"""
r6 = r1
r1 = *(u32 *)(r6 + 76)
r2 = *(u32 *)(r6 + 80)
r3 = r1
r3 += 42
if r3 > r2 goto drop
r7 = *(u32 *)(r1 + 26)
r8 = *(u16 *)(r1 + 34)
r1 = 0x0a0a0a0a
*(u32 *)(r10 - 4) = r1
r1 = r6
r2 = 26
r3 = r10
r3 += -4
r4 = 4
r5 = 0
call bpf_skb_store_bytes
*(u32 *)(r6 + {CB}) = r0
r1 = r6
r2 = 24
r3 = r7
r4 = 0x0a0a0a0a
r5 = 4
call bpf_l3_csum_replace
*(u32 *)(r6 + {CB + 4}) = r0
r1 = r6
r2 = 40
r3 = r7
r4 = 0x0a0a0a0a
r5 = 0x34
call bpf_l4_csum_replace
*(u32 *)(r6 + {CB + 8}) = r0
r9 = 0xb822
*(u16 *)(r10 - 8) = r9
r1 = r6
r2 = 34
r3 = r10
r3 += -8
r4 = 2
r5 = 0
call bpf_skb_store_bytes
r1 = r6
r2 = 40
r3 = r8
r4 = r9
r5 = 0x32
call bpf_l4_csum_replace
*(u32 *)(r6 + {CB + 12}) = r0
r0 = 0
exit
drop:
r0 = 2
exit
"""

# csum_diff over packet bytes (pkt_access): the IP addresses' 8 bytes against a 4-byte word,
# seeded, and with NULL/0 arguments
_CSUM_DIFF_PKT = f"""
r6 = r1
r1 = *(u32 *)(r6 + 76)
r2 = *(u32 *)(r6 + 80)
r3 = r1
r3 += 34
if r3 > r2 goto out
r1 += 26
r2 = 8
r3 = r10
r3 += -4
r4 = 0x01020304
*(u32 *)(r10 - 4) = r4
r4 = 4
r5 = 0xffff
call bpf_csum_diff
*(u32 *)(r6 + {CB}) = r0
r1 = 0
r2 = 0
r3 = r10
r3 += -4
r4 = 4
r5 = 0
call bpf_csum_diff
*(u32 *)(r6 + {CB + 4}) = r0
r1 = 0
r2 = 0
r3 = 0
r4 = 0
r5 = 0x12345678
call bpf_csum_diff
*(u32 *)(r6 + {CB + 8}) = r0
out:
r0 = 0
exit
"""

# A direct packet write after bpf_skb_change_tail: the program reloads data/data_end (its old
# packet pointers are invalid) and writes the new last byte; then ld_abs reads it back.
_TAIL_WRITE = f"""
r6 = r1
r2 = 64
r3 = 0
call bpf_skb_change_tail
r1 = *(u32 *)(r6 + 76)
r2 = *(u32 *)(r6 + 80)
r3 = r1
r3 += 64
if r3 > r2 goto out
r4 = 0x77
*(u8 *)(r1 + 63) = r4
r0 = *(u8 *)skb[63]
*(u32 *)(r6 + {CB}) = r0
out:
r0 = *(u32 *)(r6 + 0)
exit
"""

_HEAD_LDABS = f"""
r6 = r1
r2 = 4
r3 = 0
call bpf_skb_change_head
r0 = *(u8 *)skb[10]
*(u32 *)(r6 + {CB}) = r0
r0 = *(u32 *)skb[16]
*(u32 *)(r6 + {CB + 4}) = r0
r0 = *(u32 *)(r6 + 0)
exit
"""

# (program type, program, packet)
CASES: dict[str, tuple[str, str, bytes]] = {
    # skb_load_bytes / skb_load_bytes_relative
    "load_bytes": ("sched_cls", _load_to_stack("r2 = 14\nr4 = 12\ncall bpf_skb_load_bytes", 12),
                   PKT_UDP),
    "load_bytes_to_the_end": ("sched_cls", _load_to_stack(
        f"r2 = {len(PKT_UDP) - 12}\nr4 = 12\ncall bpf_skb_load_bytes", 12), PKT_UDP),
    "load_bytes_past_the_end": ("sched_cls", _load_to_stack(
        f"r2 = {len(PKT_UDP) - 11}\nr4 = 12\ncall bpf_skb_load_bytes", 12), PKT_UDP),
    "load_bytes_offset_above_int_max": ("sched_cls", _load_to_stack(
        "r2 = 0x80000000 ll\nr4 = 4\ncall bpf_skb_load_bytes", 4), PKT_UDP),
    "load_bytes_socket_filter": ("socket_filter", _load_to_stack(
        "r2 = 0\nr4 = 12\ncall bpf_skb_load_bytes", 12), PKT_UDP),
    "load_bytes_cgroup_skb": ("cgroup_skb", _load_to_stack(
        "r2 = 8\nr4 = 8\ncall bpf_skb_load_bytes", 8, ret="r0 &= 1"), PKT_TCP),
    "load_bytes_lwt_in": ("lwt_in", _load_to_stack("r2 = 12\nr4 = 8\ncall bpf_skb_load_bytes", 8),
                          PKT_UDP),
    "pull_data_lwt_in": ("lwt_in", _call(f"r2 = {len(PKT_UDP) - 14}", "skb_pull_data"), PKT_UDP),
    "pull_data_lwt_in_too_much": ("lwt_in", _call(f"r2 = {len(PKT_UDP) - 13}", "skb_pull_data"),
                                  PKT_UDP),
    # BPF_PROG_TEST_RUN's flow dissector has no skb: -EFAULT, the buffer zeroed (r0 = both)
    "load_bytes_flow_dissector": ("flow_dissector", """
r6 = r1
r1 = -1
*(u64 *)(r10 - 8) = r1
r1 = r6
r2 = 0
r3 = r10
r3 += -8
r4 = 8
call bpf_skb_load_bytes
r1 = *(u32 *)(r10 - 8)
r0 ^= r1
exit""", PKT_UDP),
    "store_bytes_lwt_xmit": ("lwt_xmit", _call(
        "r2 = 0x44332211\n*(u32 *)(r10 - 4) = r2\nr2 = 12\nr3 = r10\nr3 += -4\nr4 = 4\nr5 = 0",
        "skb_store_bytes"), PKT_UDP),
    "l3_csum_lwt_xmit": ("lwt_xmit", _csum("l3_csum_replace", 10, 0x0100000a, 0x0a0a0a0a, 4),
                         PKT_UDP),
    "change_head_lwt_xmit": ("lwt_xmit", _call("r2 = 14\nr3 = 0", "skb_change_head"), PKT_UDP),
    "clone_redirect_lwt_xmit": ("lwt_xmit", _call("r2 = 1\nr3 = 0", "clone_redirect"), PKT_UDP),
    "pull_data_lwt_out": ("lwt_out", _call("r2 = 8", "skb_pull_data"), PKT_UDP),
    "load_relative_mac_socket_filter": ("socket_filter", _load_to_stack(
        "r2 = 0\nr4 = 12\nr5 = 0\ncall bpf_skb_load_bytes_relative", 12), PKT_UDP),
    "load_relative_net_tc": ("sched_cls", _load_to_stack(
        "r2 = 4\nr4 = 12\nr5 = 1\ncall bpf_skb_load_bytes_relative", 12), PKT_UDP),
    "load_relative_bad_header": ("sched_cls", _load_to_stack(
        "r2 = 0\nr4 = 4\nr5 = 2\ncall bpf_skb_load_bytes_relative", 4), PKT_UDP),
    "load_relative_offset_0x10000": ("cgroup_skb", _load_to_stack(
        "r2 = 0x10000\nr4 = 4\nr5 = 1\ncall bpf_skb_load_bytes_relative", 4, ret="r0 = 1"),
        PKT_UDP),
    "load_relative_past_the_end": ("socket_filter", _load_to_stack(
        f"r2 = {len(PKT_UDP) - 14 - 3}\nr4 = 4\nr5 = 1\ncall bpf_skb_load_bytes_relative", 4),
        PKT_UDP),
    "load_relative_mac_to_the_end": ("socket_filter", _load_to_stack(
        f"r2 = {len(PKT_UDP) - 4}\nr4 = 4\nr5 = 0\ncall bpf_skb_load_bytes_relative", 4),
        PKT_UDP),
    # skb_store_bytes
    "store_bytes": ("sched_cls", _call(
        "r2 = 0x44332211\n*(u32 *)(r10 - 4) = r2\nr2 = 30\nr3 = r10\nr3 += -4\nr4 = 4\nr5 = 0",
        "skb_store_bytes"), PKT_UDP),
    "store_bytes_hash_flags": ("sched_cls", _call(
        "r2 = 7\n*(u32 *)(r10 - 4) = r2\nr2 = 0\nr3 = r10\nr3 += -4\nr4 = 1\nr5 = 3",
        "skb_store_bytes", f"r1 = *(u32 *)(r6 + 68)\n*(u32 *)(r6 + {CB + 16}) = r1"), PKT_UDP),
    "store_bytes_bad_flags": ("sched_cls", _call(
        "r2 = 0\n*(u32 *)(r10 - 4) = r2\nr2 = 0\nr3 = r10\nr3 += -4\nr4 = 4\nr5 = 4",
        "skb_store_bytes"), PKT_UDP),
    "store_bytes_past_the_end": ("sched_cls", _call(
        f"r2 = 0\n*(u32 *)(r10 - 4) = r2\nr2 = {len(PKT_UDP) - 3}\nr3 = r10\nr3 += -4\nr4 = 4"
        f"\nr5 = 0",
        "skb_store_bytes"), PKT_UDP),
    "store_bytes_last_byte": ("sched_cls", _call(
        f"r2 = 0x5a\n*(u8 *)(r10 - 1) = r2\nr2 = {len(PKT_UDP) - 1}\nr3 = r10\nr3 += -1\nr4 = 1"
        f"\nr5 = 1", "skb_store_bytes"), PKT_UDP),
    # skb_pull_data
    "pull_data_0": ("sched_cls", _call("r2 = 0", "skb_pull_data"), PKT_UDP),
    "pull_data_all": ("sched_cls", _call(f"r2 = {len(PKT_UDP)}", "skb_pull_data"), PKT_UDP),
    "pull_data_too_much": ("sched_cls", _call(f"r2 = {len(PKT_UDP) + 1}", "skb_pull_data"),
                           PKT_UDP),
    # skb_change_tail / skb_change_head
    "change_tail_grow": ("sched_cls", _call("r2 = 80\nr3 = 0", "skb_change_tail"), PKT_UDP),
    "change_tail_trim": ("sched_cls", _call("r2 = 20\nr3 = 0", "skb_change_tail"), PKT_UDP),
    "change_tail_to_the_network_header": ("sched_cls", _call("r2 = 14\nr3 = 0",
                                                             "skb_change_tail"), PKT_UDP),
    "change_tail_into_the_mac_header": ("sched_cls", _call("r2 = 13\nr3 = 0",
                                                           "skb_change_tail"), PKT_UDP),
    "change_tail_flags": ("sched_cls", _call("r2 = 60\nr3 = 1", "skb_change_tail"), PKT_UDP),
    "change_tail_max": ("sched_cls", _call("r2 = 16064\nr3 = 0", "skb_change_tail"), PKT_UDP),
    "change_tail_past_max": ("sched_cls", _call("r2 = 16065\nr3 = 0", "skb_change_tail"),
                             PKT_UDP),
    "change_tail_then_write": ("sched_cls", _TAIL_WRITE, PKT_UDP),
    "change_head": ("sched_cls", _call("r2 = 14\nr3 = 0", "skb_change_head"), PKT_UDP),
    "change_head_big": ("sched_cls", _call(f"r2 = {16064 - len(PKT_UDP)}\nr3 = 0",
                                           "skb_change_head"), PKT_UDP),
    "change_head_too_big": ("sched_cls", _call(f"r2 = {16065 - len(PKT_UDP)}\nr3 = 0",
                                               "skb_change_head"), PKT_UDP),
    "change_head_wraps": ("sched_cls", _call("r2 = 0xffffffff ll\nr3 = 0", "skb_change_head"),
                          PKT_UDP),
    "change_head_flags": ("sched_cls", _call("r2 = 4\nr3 = 2", "skb_change_head"), PKT_UDP),
    "change_head_then_ld_abs": ("sched_cls", _HEAD_LDABS, PKT_UDP),
    "change_head_twice": ("sched_cls", _twice("r1 = r6\nr2 = 100\nr3 = 0\ncall bpf_skb_change_head",
                                              "r2 = 60\nr3 = 0\ncall bpf_skb_change_head"),
                          PKT_UDP),
    # skb_adjust_room
    "adjust_room_mac_grow": ("sched_cls", _call("r2 = 8\nr3 = 1\nr4 = 0", "skb_adjust_room"),
                             PKT_UDP),
    "adjust_room_net_grow": ("sched_cls", _call("r2 = 8\nr3 = 0\nr4 = 0", "skb_adjust_room"),
                             PKT_UDP),
    "adjust_room_net_shrink": ("sched_cls", _call("r2 = -4\nr3 = 0\nr4 = 0",
                                                  "skb_adjust_room"), PKT_TCP),
    "adjust_room_mac_shrink": ("sched_cls", _call("r2 = -8\nr3 = 1\nr4 = 0",
                                                  "skb_adjust_room"), PKT_TCP),
    "adjust_room_shrink_below_the_ip_header": ("sched_cls", _call(
        "r2 = -20\nr3 = 0\nr4 = 0", "skb_adjust_room"), PKT_UDP),
    "adjust_room_shrink_all": ("sched_cls", _call(f"r2 = -{len(PKT_UDP) - 14}\nr3 = 1\nr4 = 0",
                                                  "skb_adjust_room"), PKT_UDP),
    "adjust_room_bad_mode": ("sched_cls", _call("r2 = 4\nr3 = 2\nr4 = 0", "skb_adjust_room"),
                             PKT_UDP),
    "adjust_room_0x1000": ("sched_cls", _call("r2 = 0x1000\nr3 = 0\nr4 = 0",
                                              "skb_adjust_room"), PKT_UDP),
    "adjust_room_0xfff": ("sched_cls", _call("r2 = 0xfff\nr3 = 0\nr4 = 0", "skb_adjust_room"),
                          PKT_UDP),
    "adjust_room_bad_flags": ("sched_cls", _call("r2 = 4\nr3 = 0\nr4 = 0x200",
                                                 "skb_adjust_room"), PKT_UDP),
    "adjust_room_arp": ("sched_cls", _call("r2 = 4\nr3 = 0\nr4 = 0", "skb_adjust_room"),
                        PKT_ARP),
    "adjust_room_ipv6_net_grow": ("sched_cls", _call("r2 = 16\nr3 = 0\nr4 = 0",
                                                     "skb_adjust_room"), PKT_V6),
    "adjust_room_encap_ipip_udp": ("sched_cls", _call("r2 = 28\nr3 = 1\nr4 = 0x12",
                                                      "skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_6in4": ("sched_cls", _call("r2 = 40\nr3 = 1\nr4 = 0x04",
                                                  "skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_4in6": ("sched_cls", _call("r2 = 20\nr3 = 1\nr4 = 0x02",
                                                  "skb_adjust_room"), PKT_V6),
    "adjust_room_encap_both_l3": ("sched_cls", _call("r2 = 20\nr3 = 1\nr4 = 0x06",
                                                     "skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_gre_and_udp": ("sched_cls", _call("r2 = 28\nr3 = 1\nr4 = 0x1a",
                                                         "skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_l2_eth_short": ("sched_cls", _call(
        "r2 = 40\nr3 = 1\nr4 = 0x0c00000000000052 ll", "skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_l2_eth": ("sched_cls", _call(
        "r2 = 40\nr3 = 1\nr4 = 0x0e0000000000004a ll", "skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_l2_longer_than_room": ("sched_cls", _call(
        "r2 = 8\nr3 = 1\nr4 = 0x0e00000000000002 ll", "skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_twice": ("sched_cls", _twice(
        "r1 = r6\nr2 = 20\nr3 = 1\nr4 = 2\ncall bpf_skb_adjust_room",
        "r2 = 20\nr3 = 1\nr4 = 2\ncall bpf_skb_adjust_room"), PKT_UDP),
    "adjust_room_encap_then_change_tail": ("sched_cls", _twice(
        "r1 = r6\nr2 = 20\nr3 = 1\nr4 = 2\ncall bpf_skb_adjust_room",
        "r2 = 40\nr3 = 0\ncall bpf_skb_change_tail"), PKT_UDP),
    "adjust_room_decap_to_ipv4": ("sched_cls", _call("r2 = -20\nr3 = 1\nr4 = 0x80",
                                                     "skb_adjust_room"), PKT_V6),
    "adjust_room_decap_to_ipv6": ("sched_cls", _call("r2 = -4\nr3 = 1\nr4 = 0x100",
                                                     "skb_adjust_room"), PKT_TCP),
    "adjust_room_decap_on_grow": ("sched_cls", _call("r2 = 4\nr3 = 1\nr4 = 0x80",
                                                     "skb_adjust_room"), PKT_UDP),
    "adjust_room_decap_both": ("sched_cls", _call("r2 = -4\nr3 = 1\nr4 = 0x180",
                                                  "skb_adjust_room"), PKT_TCP),
    "adjust_room_shrink_encap_flag": ("sched_cls", _call("r2 = -4\nr3 = 1\nr4 = 2",
                                                         "skb_adjust_room"), PKT_TCP),
    "adjust_room_push_pop": ("sched_cls", _twice(
        "r1 = r6\nr2 = 12\nr3 = 0\nr4 = 0\ncall bpf_skb_adjust_room",
        "r2 = -12\nr3 = 0\nr4 = 0\ncall bpf_skb_adjust_room"), PKT_TCP),
    # l3_csum_replace / l4_csum_replace
    "nat_rewrite": ("sched_cls", _NAT, PKT_UDPC),
    "l3_csum_size_2": ("sched_cls", _csum("l3_csum_replace", 24, 0x4000, 0x2000, 2), PKT_UDP),
    "l3_csum_size_0": ("sched_cls", _csum("l3_csum_replace", 24, 0, 0x12345, 0), PKT_UDP),
    "l3_csum_size_0_from": ("sched_cls", _csum("l3_csum_replace", 24, 1, 0x12345, 0), PKT_UDP),
    "l3_csum_size_3": ("sched_cls", _csum("l3_csum_replace", 24, 1, 2, 3), PKT_UDP),
    "l3_csum_pseudo_flag": ("sched_cls", _csum("l3_csum_replace", 24, 1, 2, 0x14), PKT_UDP),
    "l3_csum_odd_offset": ("sched_cls", _csum("l3_csum_replace", 25, 1, 2, 2), PKT_UDP),
    "l3_csum_offset_0x10000": ("sched_cls", _csum("l3_csum_replace", 0x10000, 1, 2, 2),
                               PKT_UDP),
    "l3_csum_last_word": ("sched_cls", _csum("l3_csum_replace", len(PKT_UDP) - 3, 1, 2, 2),
                          PKT_UDP),
    "l3_csum_past_the_end": ("sched_cls", _csum("l3_csum_replace", len(PKT_UDP) - 1, 1, 2, 2),
                             PKT_UDP),
    "l3_csum_to_zero": ("sched_cls", _csum("l3_csum_replace", 24, 0, 0xffff, 0), PKT_UDP),
    "l4_csum_size_2": ("sched_cls", _csum("l4_csum_replace", 40, 0x1234, 0x4321, 0x12),
                       PKT_UDPC),
    "l4_csum_size_4_ipv6": ("sched_cls", _csum("l4_csum_replace", 60, 0x01020304, 0x0a0b0c0d,
                                               0x94), PKT_V6),
    "l4_csum_mangled_zero_stays": ("sched_cls", _csum("l4_csum_replace", 40, 0x1234, 0x4321,
                                                      0x22), PKT_UDP),
    "l4_csum_mangled_zero_enforced": ("sched_cls", _csum("l4_csum_replace", 40, 0x1234, 0x4321,
                                                         0x62), PKT_UDP),
    "l4_csum_bad_flags": ("sched_cls", _csum("l4_csum_replace", 40, 1, 2, 0x102), PKT_UDPC),
    "l4_csum_size_0_diff": ("sched_cls", _csum("l4_csum_replace", 40, 0, 0xfffe0001, 0x10),
                            PKT_UDPC),
    "l4_csum_bad_size": ("sched_cls", _csum("l4_csum_replace", 40, 1, 2, 8), PKT_UDPC),
    # csum_diff / csum_update
    "csum_diff_over_the_packet": ("sched_cls", _CSUM_DIFF_PKT, PKT_UDP),
    "csum_diff_xdp": ("xdp", _CSUM_DIFF_PKT.replace("r6 + 76", "r6 + 0")
                      .replace("r6 + 80", "r6 + 4").replace(f"*(u32 *)(r6 + {CB}) = r0",
                                                            "r7 = r0")
                      .replace(f"*(u32 *)(r6 + {CB + 4}) = r0", "r7 ^= r0")
                      .replace(f"*(u32 *)(r6 + {CB + 8}) = r0", "r7 += r0")
                      .replace("out:\nr0 = 0", "r0 = r7\nexit\nout:\nr0 = 0"), PKT_UDP),
    "csum_update": ("sched_cls", _call("r2 = 0x1234", "csum_update"), PKT_UDP),
    # tunnel keys
    "tunnel_get_without_key": ("sched_cls", _load_to_stack(
        "r2 = r3\nr3 = 8\nr4 = 0\ncall bpf_skb_get_tunnel_key", 8), PKT_UDP),
    "tunnel_v4": ("sched_cls", _tunnel(0, 44, 0, 44, KEY_V4), PKT_UDP),
    "tunnel_v4_flags": ("sched_cls", _tunnel(0x0e, 44, 0x10, 44, KEY_V4), PKT_UDP),
    "tunnel_v4_no_key_flag": ("sched_cls", _tunnel(0x10, 44, 0x10, 44, KEY_V4), PKT_UDP),
    "tunnel_v4_get_as_v6": ("sched_cls", _tunnel(0, 44, 1, 44, KEY_V4), PKT_UDP),
    "tunnel_v4_old_sizes": ("sched_cls", _tunnel(0, 28, 0, 8, KEY_V4), PKT_UDP),
    "tunnel_v4_size_24": ("sched_cls", _tunnel(0, 24, 0, 22, KEY_V4), PKT_UDP),
    "tunnel_v4_bad_size": ("sched_cls", _tunnel(0, 44, 0, 30, KEY_V4), PKT_UDP),
    "tunnel_set_bad_size": ("sched_cls", _tunnel(0, 40, 0, 44, KEY_V4), PKT_UDP),
    "tunnel_set_bad_flags": ("sched_cls", _tunnel(0x20, 44, 0, 44, KEY_V4), PKT_UDP),
    "tunnel_get_bad_flags": ("sched_cls", _tunnel(0, 44, 0x2, 44, KEY_V4), PKT_UDP),
    "tunnel_v4_label": ("sched_cls", _tunnel(0, 44, 0, 44, KEY_V4_LABEL), PKT_UDP),
    "tunnel_v6": ("sched_cls", _tunnel(1, 44, 1, 44, KEY_V6), PKT_UDP),
    "tunnel_v6_get_as_v4": ("sched_cls", _tunnel(1, 44, 0, 44, KEY_V6), PKT_UDP),
    "tunnel_v6_get_size_8": ("sched_cls", _tunnel(1, 44, 1, 8, KEY_V6), PKT_UDP),
    # clone_redirect: the loopback takes the copy; other ifindexes and flags are refused
    "clone_redirect_lo": ("sched_cls", _twice("r1 = r6\nr2 = 1\nr3 = 0\ncall bpf_clone_redirect",
                                              "r2 = 1\nr3 = 1\ncall bpf_clone_redirect"),
                          PKT_UDP),
    "clone_redirect_unknown_ifindex": ("sched_cls", _call("r2 = 0x7ffffff0\nr3 = 0",
                                                          "clone_redirect"), PKT_UDP),
    "clone_redirect_bad_flags": ("sched_cls", _call("r2 = 1\nr3 = 2", "clone_redirect"),
                                 PKT_UDP),
}


def _record(retval: int, data: bytes | None, ctx, prog_type: str) -> dict:
    # xdp runs here take no ctx_in, so the kernel writes no ctx_out (the corpus compares it)
    rec = corpus_run._ctx_record(prog_type, ctx) if ctx is not None and prog_type != "xdp" \
        else None
    return {"retval": retval & M32, "data": (data or b"").hex(), "ctx": rec}


@functools.lru_cache(maxsize=None)
def program(name: str):
    """Case ``name``'s program, assembled once (the engines and the kernel share it)."""
    return asm(CASES[name][1])


def pybpf_record(name: str, engine: str) -> dict:
    import pybpf
    prog_type, _text, packet = CASES[name]
    vm = pybpf.VM()
    # the JIT's quick tier: the helpers run in Python either way, and a -O2 compile per case
    # would triple the time (the corpus, tests/test_corpus.py, runs these helpers at -O2)
    with vm.load(program(name), prog_type=prog_type, engine=engine, tier="quick") as lp:
        r0 = lp.run(data=packet)
        return _record(r0, lp.last_data, lp.last_ctx, prog_type)


def kernel_record(name: str) -> dict:
    import kernel_bpf
    from pybpf.runtime.contexts import SkBuff
    prog_type, _text, packet = CASES[name]
    fd, log = kernel_bpf.prog_load(program(name).to_bytes(), prog_type)
    assert fd >= 0, f"the kernel refuses {name}: {errno.errorcode.get(-fd)}\n{log[-2000:]}"
    try:
        skb = prog_type != "xdp"
        retval, dout, cout = kernel_bpf.test_run(
            fd, data=packet, data_out_size=len(packet) + 20000,
            ctx_out_size=ctypes.sizeof(SkBuff) if skb else 0)
    finally:
        import os
        os.close(fd)
    return _record(retval, dout, cout if skb else None, prog_type)


def _case(name: str):
    def case():
        return {engine: pybpf_record(name, engine) for engine in ("interp", "jit")}
    return case


CHILD_CASES = {name: _case(name) for name in CASES}


@pytest.fixture(scope="module")
def child_results():
    return run_child(__file__, CHILD_CASES)


@pytest.mark.jit
@pytest.mark.parametrize("name", list(CASES))
def test_both_engines_agree(child_results, name):
    assert_case_passed(child_results, name)
    rec = child_results[0][name]["detail"]
    assert rec["interp"] == rec["jit"]


@pytest.mark.jit
@pytest.mark.kernel
@pytest.mark.parametrize("name", list(CASES))
def test_the_kernel_agrees(child_results, name):
    require_kernel("bpf", f"test_run:{CASES[name][0]}")
    assert_case_passed(child_results, name)
    mine = child_results[0][name]["detail"]["interp"]
    assert mine == kernel_record(name)


# -- repeated runs: BPF_PROG_TEST_RUN's repeat runs the program on the same skb -------------------
_GROW_EACH_RUN = f"""
r6 = r1
r1 = r6
r2 = r10
r2 += -48
r3 = 44
r4 = 0
call bpf_skb_get_tunnel_key
if r0 != 0 goto set
r1 = *(u32 *)(r6 + {CB})
r1 += 1
*(u32 *)(r6 + {CB}) = r1
set:
r1 = r6
r2 = r10
r2 += -48
r3 = 44
r4 = 0
call bpf_skb_set_tunnel_key
r1 = r6
r2 = *(u32 *)(r6 + 0)
r2 += 3
r3 = 0
call bpf_skb_change_tail
r0 = *(u32 *)(r6 + 0)
exit"""


def _repeat_record(engine: str) -> dict:
    import pybpf
    with pybpf.VM().load(asm(_GROW_EACH_RUN), prog_type="sched_cls", engine=engine,
                         tier="quick") as lp:
        r0, _ns = lp.test_run(data=PKT_UDP, repeat=5)
        return _record(r0, lp.last_data, lp.last_ctx, "sched_cls")


CHILD_CASES["repeat"] = lambda: {e: _repeat_record(e) for e in ("interp", "jit")}


@pytest.mark.jit
@pytest.mark.kernel
def test_repeated_runs_change_one_skb_as_the_kernels_do(child_results):
    # five runs: the packet grows by 3 bytes each, the tunnel key set by one is there in the
    # next (cb[0] counts the gets that found it: 4)
    assert_case_passed(child_results, "repeat")
    rec = child_results[0]["repeat"]["detail"]
    assert rec["interp"] == rec["jit"]
    assert rec["interp"]["retval"] == len(PKT_UDP) + 15 and rec["interp"]["ctx"]["cb"][0] == 4
    require_kernel("bpf", "test_run:sched_cls")
    import kernel_bpf
    from pybpf.runtime.contexts import SkBuff
    fd, log = kernel_bpf.prog_load(asm(_GROW_EACH_RUN).to_bytes(), "sched_cls")
    assert fd >= 0, log[-2000:]
    try:
        retval, dout, cout = kernel_bpf.test_run(fd, data=PKT_UDP, data_out_size=4096,
                                                 ctx_out_size=ctypes.sizeof(SkBuff), repeat=5)
    finally:
        import os
        os.close(fd)
    assert rec["interp"] == _record(retval, dout, cout, "sched_cls")


# -- hostile programs: checked in both engines before memory is touched ----------------------------
def _unverified(text: str, engine: str, prog_type: str = "sched_cls", packet=PKT_UDP):
    import pybpf
    lp = pybpf.VM().load(asm(text), prog_type=prog_type, engine=engine, verify=False,
                         tier="quick")
    try:
        return lp.run(data=packet) if packet is not None else lp.run()
    finally:
        lp.close()


def _expect(exc_name: str, text: str, prog_type: str = "sched_cls", packet=PKT_UDP):
    def case():
        out = {}
        for engine in ("interp", "jit"):
            try:
                out[engine] = f"r0 {_unverified(text, engine, prog_type, packet)}"
            except Exception as e:      # the typed error, whichever engine raised it
                out[engine] = type(e).__name__
        assert out == {"interp": exc_name, "jit": exc_name}, out
        return out
    return case


HOSTILE = {
    # r1 is not the run's __sk_buff
    "ctx_argument_is_the_stack": _expect("MemoryAccessError", """
        r1 = r10
        r1 += -192
        r2 = 0
        r3 = r10
        r3 += -8
        r4 = 8
        call bpf_skb_load_bytes
        exit"""),
    # the destination is outside every region of the run
    "load_bytes_to_nowhere": _expect("MemoryAccessError", """
        r2 = 0
        r3 = 4096
        r4 = 8
        call bpf_skb_load_bytes
        exit"""),
    # the source runs past the end of the __sk_buff
    "store_bytes_from_past_the_ctx": _expect("MemoryAccessError", """
        r2 = 0
        r3 = r1
        r3 += 188
        r4 = 16
        r5 = 0
        call bpf_skb_store_bytes
        exit"""),
    "csum_diff_from_nowhere": _expect("MemoryAccessError", """
        r1 = 8192
        r2 = 4
        r3 = 0
        r4 = 0
        r5 = 0
        call bpf_csum_diff
        exit"""),
    # a prog_type without a socket buffer (an unverified load gets that far)
    "mem_program": _expect("VMError", """
        r2 = 0
        r3 = r10
        r3 += -8
        r4 = 8
        call bpf_skb_load_bytes
        exit""", prog_type="mem", packet=None),
}


def _stale_pointer_case():
    """The interpreter checks packet accesses against the packet's current bounds: after a
    trim an old pointer past the new end is refused, after a push the new head is readable."""
    import pybpf
    trim = """
        r6 = r1
        r7 = *(u32 *)(r6 + 76)
        r2 = 20
        r3 = 0
        call bpf_skb_change_tail
        r0 = *(u8 *)(r7 + 30)
        exit"""
    push = """
        r6 = r1
        r2 = 6
        r3 = 0
        call bpf_skb_change_head
        r7 = *(u32 *)(r6 + 76)
        r0 = *(u8 *)(r7 + 0)
        r0 += 1
        exit"""
    with pytest.raises(pybpf.MemoryAccessError):
        _unverified(trim, "interp")
    return _unverified(push, "interp")


CHILD_CASES.update({f"hostile_{n}": c for n, c in HOSTILE.items()})


def _clones_case():
    """bpf_clone_redirect's copies are the run's ``last_clones``: the packet as it was at each
    call (the second after a store changed it), with the ifindex and flags."""
    import pybpf
    text = """
        r6 = r1
        r2 = 1
        r3 = 0
        call bpf_clone_redirect
        r1 = 0x11
        *(u8 *)(r10 - 1) = r1
        r1 = r6
        r2 = 0
        r3 = r10
        r3 += -1
        r4 = 1
        r5 = 0
        call bpf_skb_store_bytes
        r1 = r6
        r2 = 1
        r3 = 1
        call bpf_clone_redirect
        r1 = r6
        r2 = 5
        r3 = 0
        call bpf_clone_redirect
        exit"""
    out = {}
    for engine in ("interp", "jit"):
        with pybpf.VM().load(asm(text), prog_type="sched_cls", engine=engine,
                             tier="quick") as lp:
            r0 = lp.run(data=PKT_UDP)
            out[engine] = (r0, [(c.ifindex, c.flags, c.data.hex()) for c in lp.last_clones])
    changed = b"\x11" + PKT_UDP[1:]
    assert out["interp"] == out["jit"] == (
        -errno.EINVAL & (2**64 - 1), [(1, 0, PKT_UDP.hex()), (1, 1, changed.hex())]), out
    return out["interp"][0]


CHILD_CASES["clones"] = _clones_case


@pytest.mark.jit
def test_clones_are_recorded_in_both_engines(child_results):
    assert_case_passed(child_results, "clones")


@pytest.mark.jit
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_arguments_are_refused_in_both_engines(child_results, name):
    assert_case_passed(child_results, f"hostile_{name}")


def test_the_interpreter_follows_the_packet_bounds():
    assert _stale_pointer_case() == 1


def test_a_tail_call_target_that_moves_the_packet_is_checked_against_its_bounds():
    # the caller has no packet-changing call (its run checks the packet inline); the target
    # trims the packet and reads through a pointer taken before: refused in the interpreter
    import pybpf
    vm = pybpf.VM()
    jt = vm.create_map("prog_array", key_size=4, value_size=4, max_entries=1)
    target = vm.load(asm("""
        r6 = r1
        r7 = *(u32 *)(r6 + 76)
        r2 = 20
        r3 = 0
        call bpf_skb_change_tail
        r0 = *(u8 *)(r7 + 30)
        exit"""), prog_type="sched_cls", engine="interp", verify=False)
    jt[0] = target
    caller = vm.load(asm(f"""
        r2 = *(u32 *)(r1 + 76)
        r0 = *(u8 *)(r2 + 30)
        r2 = map_fd({jt.fd}) ll
        r3 = 0
        call bpf_tail_call
        exit"""), prog_type="sched_cls", engine="interp", verify=False)
    with pytest.raises(pybpf.MemoryAccessError):
        caller.run(data=PKT_UDP)


def test_the_table_rows_are_the_kernels():
    """Which helpers move the packet (bpf_helper_changes_pkt_data) and which program types may
    call each (their ids in the kernel's measured allow-lists); ``mem`` has no __sk_buff."""
    from pybpf.verifier import protos
    moving = {"skb_store_bytes", "skb_pull_data", "skb_change_tail", "skb_change_head",
              "skb_adjust_room", "l3_csum_replace", "l4_csum_replace", "clone_redirect"}
    for name in ("skb_load_bytes", "skb_load_bytes_relative", "csum_diff", "csum_update",
                 "skb_get_tunnel_key", "skb_set_tunnel_key", *moving):
        p = protos.helper_proto(name)
        assert p.changes_pkt_data == (name in moving), name
        kernel = {t for t, ids in protos.KERNEL_HELPER_PROG_TYPES.items() if p.id in ids}
        assert p.prog_types - {"mem"} == kernel & set(protos.PROG_TYPES), name
        assert ("mem" in p.prog_types) == (name == "csum_diff"), name


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        sys.exit(child(CHILD_CASES, sys.argv[2:] or list(CHILD_CASES)))
    print(__doc__)
