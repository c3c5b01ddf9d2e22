"""Context layouts and access rules per program type (the kernel's ``is_valid_access`` callbacks).

:func:`ctx_access` answers, for a load or store through an unmodified ``PTR_TO_CTX`` at byte
``off`` of ``size`` bytes, whether the program type allows it and what the loaded register
becomes (a scalar, or ``PTR_TO_PACKET``/``_META``/``_END`` for the packet fields,
``PTR_TO_SOCK_COMMON`` or NULL for ``__sk_buff.sk``, ``PTR_TO_FLOW_KEYS`` for a flow
dissector's ``flow_keys``, ``PTR_TO_SOCKET`` (or NULL) for the ``sk`` of sock_addr, sk_lookup...);
a refusal carries the kernel's message ``invalid bpf_context access off=%d size=%d``. The rules
follow net/core/filter.c (``bpf_skb_is_valid_access``, ``sk_filter_is_valid_access``,
``tc_cls_act_is_valid_access``, ``cg_skb_is_valid_access``, ``lwt_is_valid_access`` for
lwt_in/out/xmit, ``xdp_is_valid_access``, ``flow_dissector_is_valid_access``,
``sk_lookup_is_valid_access``, ``sock_filter_is_valid_access`` for cgroup_sock,
``sock_addr_is_valid_access`` for cgroup_sock_addr, ``sk_msg_is_valid_access``,
``sock_ops_is_valid_access``), kernel/trace/bpf_trace.c (``kprobe_prog_is_valid_access``,
``tp_prog_is_valid_access``, ``raw_tp_prog_is_valid_access``, ``pe_prog_is_valid_access``)
and kernel/bpf/syscall.c (``syscall_prog_is_valid_access``) of Linux 6.18, for a privileged loader
(CAP_BPF: cgroup_skb may read ``data``/``data_end`` and write ``tstamp``); tests/test_verifier_calls.py
compares them with the running kernel offset by offset.

Narrow loads: the kernel lets most 4-byte ``__sk_buff`` fields be read with 1- or 2-byte loads
aligned to their size (``bpf_ctx_narrow_access_ok``), writes are whole fields only, ``cb[]`` may
be read and written at any size within ``cb[0..4]``; pointer fields (``data``...) are 4-byte
non-sign-extending loads only. pybpf's run-time contexts hold the real values at these offsets
(runtime/contexts.py), so a narrow load needs no rewriting.

Negative tracepoint offsets: ``tp_prog_is_valid_access`` compares the int ``off`` with
``sizeof(void *)``, as unsigned, and with ``PERF_MAX_TRACE_SIZE``, as int, so the kernel accepts a
read before the record (any negative offset the instruction can encode, aligned to its size), and
so does pybpf. The caller records the lowest such offset (``min_ctx_offset``) and a run puts that
many zero bytes, read-only, before its copy of the record (runtime/contexts.py), so the read
stays in memory the run owns on both engines.

The ``mem`` type is pybpf's own (r1 = memory, r2 = its length) and follows ``syscall``: any
offset below ``U16_MAX``, aligned to the access size, read and write. How far a program reaches
is recorded by the caller (the kernel's ``max_ctx_offset``) so a run can refuse shorter memory.
"""
from __future__ import annotations

from dataclasses import dataclass

from .protos import PROG_TYPES
from .state import (PTR_MAYBE_NULL, PTR_TO_FLOW_KEYS, PTR_TO_PACKET, PTR_TO_PACKET_END,
                    PTR_TO_PACKET_META, PTR_TO_SOCK_COMMON, PTR_TO_SOCKET, SCALAR_VALUE, RegType)

U16_MAX = 0xFFFF
PERF_MAX_TRACE_SIZE = 8192
SIZEOF_PT_REGS = 168                 # x86-64 struct pt_regs
SIZEOF_SK_BUFF = 192                 # struct __sk_buff
SIZEOF_XDP_MD = 24                   # struct xdp_md

# struct __sk_buff (include/uapi/linux/bpf.h): field -> (offset, size)
SK_BUFF_FIELDS: dict[str, tuple[int, int]] = {
    "len": (0, 4), "pkt_type": (4, 4), "mark": (8, 4), "queue_mapping": (12, 4),
    "protocol": (16, 4), "vlan_present": (20, 4), "vlan_tci": (24, 4), "vlan_proto": (28, 4),
    "priority": (32, 4), "ingress_ifindex": (36, 4), "ifindex": (40, 4), "tc_index": (44, 4),
    "cb": (48, 20), "hash": (68, 4), "tc_classid": (72, 4), "data": (76, 4),
    "data_end": (80, 4), "napi_id": (84, 4), "family": (88, 4), "remote_ip4": (92, 4),
    "local_ip4": (96, 4), "remote_ip6": (100, 16), "local_ip6": (116, 16),
    "remote_port": (132, 4), "local_port": (136, 4), "data_meta": (140, 4),
    "flow_keys": (144, 8), "tstamp": (152, 8), "wire_len": (160, 4), "gso_segs": (164, 4),
    "sk": (168, 8), "gso_size": (176, 4), "tstamp_type": (180, 1), "_pad": (181, 3),
    "hwtstamp": (184, 8),
}

# struct xdp_md
XDP_MD_FIELDS: dict[str, tuple[int, int]] = {
    "data": (0, 4), "data_end": (4, 4), "data_meta": (8, 4), "ingress_ifindex": (12, 4),
    "rx_queue_index": (16, 4), "egress_ifindex": (20, 4),
}

CTX_STRUCT = {"socket_filter": "__sk_buff", "sched_cls": "__sk_buff", "cgroup_skb": "__sk_buff",
              "lwt_in": "__sk_buff", "xdp": "xdp_md", "kprobe": "pt_regs",
              "tracepoint": "trace record", "syscall": "ctx_in", "mem": "mem"}


@dataclass(frozen=True)
class CtxAccess:
    """The answer for one context access: ``ok``, the loaded register's type and flags (reads),
    the kernel's message when refused, and ``field_size`` (the whole field a narrow load reads
    from, the kernel's ``ctx_field_size``; 0 when the access is the whole field)."""

    ok: bool
    type: RegType = SCALAR_VALUE
    flags: int = 0
    error: str = ""
    field_size: int = 0

    @property
    def is_packet_pointer(self) -> bool:
        return self.type in (PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_PACKET_END)


def _refuse(off: int, size: int) -> CtxAccess:
    return CtxAccess(False, error=f"invalid bpf_context access off={off} size={size}")


def _in(off: int, name: str, fields=SK_BUFF_FIELDS) -> bool:
    start, size = fields[name]
    return start <= off < start + size


def _in_range(off: int, first: str, last: str) -> bool:
    """bpf_ctx_range_till(struct __sk_buff, first, last)."""
    lo = SK_BUFF_FIELDS[first][0]
    hi = sum(SK_BUFF_FIELDS[last])
    return lo <= off < hi


def _narrow_ok(size: int, size_default: int) -> bool:
    """bpf_ctx_narrow_access_ok."""
    return size <= size_default and size & (size - 1) == 0


_SKB_POINTERS = {"data": PTR_TO_PACKET, "data_meta": PTR_TO_PACKET_META,
                 "data_end": PTR_TO_PACKET_END}


def _skb_access(off: int, size: int, write: bool, sign_ext: bool) -> CtxAccess | None:
    """bpf_skb_is_valid_access: the checks every __sk_buff type shares (None = refused)."""
    if off < 0 or off >= SIZEOF_SK_BUFF or off % size:
        return None
    if _in_range(off, "cb", "cb"):
        return CtxAccess(True) if off + size <= sum(SK_BUFF_FIELDS["cb"]) else None
    for name in _SKB_POINTERS:
        if _in(off, name):
            return CtxAccess(True) if size == 4 and not sign_ext else None
    if any(_in(off, f) for f in ("remote_ip6", "local_ip6", "remote_ip4", "local_ip4")):
        return CtxAccess(True) if size == 4 else None
    if _in(off, "flow_keys"):
        return None
    if _in(off, "hwtstamp"):
        return CtxAccess(True) if not write and size == 8 else None
    if _in(off, "tstamp"):
        return CtxAccess(True) if size == 8 else None
    if _in(off, "sk"):
        if off == SK_BUFF_FIELDS["sk"][0] and not write and size == 8:
            return CtxAccess(True, PTR_TO_SOCK_COMMON, PTR_MAYBE_NULL)
        return None
    if _in(off, "tstamp_type") or _in(off, "_pad"):
        return None
    if write:
        return CtxAccess(True) if size == 4 else None
    if not _narrow_ok(size, 4):
        return None
    return CtxAccess(True, field_size=4 if size < 4 else 0)


def _skb_rules(denied: tuple, writable: tuple, pointers: tuple, tstamp_type: bool = False):
    """An is_valid_access for one __sk_buff program type: fields it may never touch, fields it
    may write, the packet pointer fields it may read."""

    def rule(off: int, size: int, write: bool, sign_ext: bool,
             attach: str = "") -> CtxAccess | None:
        if any(_in(off, f) if f != "family..local_port" else _in_range(off, "family",
                                                                          "local_port")
               for f in denied):
            return None
        if write and not any(_in(off, f) for f in writable):
            return None
        if tstamp_type and off == SK_BUFF_FIELDS["tstamp_type"][0]:
            return CtxAccess(True) if size == 1 else None
        res = _skb_access(off, size, write, sign_ext)
        if res is None:
            return None
        for name in pointers:
            if _in(off, name):
                return CtxAccess(True, _SKB_POINTERS[name])
        return res
    return rule


_POINTERS_ALL = ("data", "data_meta", "data_end")
_SK_FILTER = _skb_rules(
    denied=("tc_classid", "data", "data_meta", "data_end", "family..local_port", "tstamp",
            "wire_len", "hwtstamp"),
    writable=("cb",), pointers=())
_TC_CLS_ACT = _skb_rules(
    denied=("family..local_port",),
    writable=("mark", "tc_index", "priority", "tc_classid", "cb", "tstamp", "queue_mapping"),
    pointers=_POINTERS_ALL, tstamp_type=True)
_CG_SKB = _skb_rules(
    denied=("tc_classid", "data_meta", "wire_len"),
    writable=("mark", "priority", "cb", "tstamp"), pointers=("data", "data_end"))
_LWT = _skb_rules(
    denied=("tc_classid", "family..local_port", "data_meta", "tstamp", "wire_len", "hwtstamp"),
    writable=("mark", "priority", "cb"), pointers=("data", "data_end"))

_XDP_POINTERS = {"data": PTR_TO_PACKET, "data_meta": PTR_TO_PACKET_META,
                 "data_end": PTR_TO_PACKET_END}


def _xdp(off: int, size: int, write: bool, sign_ext: bool,
         attach: str = "") -> CtxAccess | None:
    # egress_ifindex only for BPF_XDP_DEVMAP programs; writes only for offloaded programs
    if (off == XDP_MD_FIELDS["egress_ifindex"][0] and attach != "xdp_devmap") or write:
        return None
    if off < 0 or off >= SIZEOF_XDP_MD or off % size or size != 4:
        return None
    for name, t in _XDP_POINTERS.items():
        if off == XDP_MD_FIELDS[name][0]:
            return None if sign_ext else CtxAccess(True, t)
    return CtxAccess(True)


def _kprobe(off: int, size: int, write: bool, sign_ext: bool,
            attach: str = "") -> CtxAccess | None:
    if off < 0 or off >= SIZEOF_PT_REGS or write or off % size or off + size > SIZEOF_PT_REGS:
        return None
    return CtxAccess(True)


def _tracepoint(off: int, size: int, write: bool, sign_ext: bool,
                attach: str = "") -> CtxAccess | None:
    # `off < sizeof(void *)` is unsigned in the kernel: negative offsets pass (see above)
    if 0 <= off < 8 or off >= PERF_MAX_TRACE_SIZE or write or off % size:
        return None
    return CtxAccess(True)


def _syscall(off: int, size: int, write: bool, sign_ext: bool,
             attach: str = "") -> CtxAccess | None:
    if off < 0 or off >= U16_MAX or off % size:
        return None
    return CtxAccess(True)


_LWT_OUT = _LWT          # lwt_is_valid_access serves lwt_in, lwt_out and lwt_xmit alike


# --- flow_dissector (flow_dissector_is_valid_access) -------------------------------------------
SIZEOF_FLOW_KEYS = 56    # struct bpf_flow_keys


def _flow_dissector(off: int, size: int, write: bool, sign_ext: bool,
                    attach: str = "") -> CtxAccess | None:
    """A __sk_buff of which only data, data_end (read, 4 bytes) and flow_keys (8) exist."""
    if off < 0 or off >= SIZEOF_SK_BUFF or off % size or write:
        return None
    for name, t in (("data", PTR_TO_PACKET), ("data_end", PTR_TO_PACKET_END)):
        if _in(off, name):
            return None if sign_ext or size != 4 else CtxAccess(True, t)
    if _in(off, "flow_keys"):
        return CtxAccess(True, PTR_TO_FLOW_KEYS) if size == 8 else None
    return None


# --- raw_tracepoint (raw_tp_prog_is_valid_access: bpf_tracing_ctx_access) ----------------------
MAX_BPF_FUNC_ARGS = 12


def _raw_tp(off: int, size: int, write: bool, sign_ext: bool,
            attach: str = "") -> CtxAccess | None:
    """The u64 arguments: any aligned read below 12 * 8 bytes."""
    if off < 0 or off >= 8 * MAX_BPF_FUNC_ARGS or write or off % size:
        return None
    return CtxAccess(True)


# --- sk_lookup (sk_lookup_is_valid_access) -----------------------------------------------------
# struct bpf_sk_lookup: field -> (offset, size); 72 bytes
SK_LOOKUP_FIELDS: dict[str, tuple[int, int]] = {
    "sk": (0, 8), "family": (8, 4), "protocol": (12, 4), "remote_ip4": (16, 4),
    "remote_ip6": (20, 16), "remote_port": (36, 2), "_pad": (38, 2), "local_ip4": (40, 4),
    "local_ip6": (44, 16), "local_port": (60, 4), "ingress_ifindex": (64, 4),
}
SIZEOF_SK_LOOKUP = 72


def _sk_lookup(off: int, size: int, write: bool, sign_ext: bool,
               attach: str = "") -> CtxAccess | None:
    if off < 0 or off >= SIZEOF_SK_LOOKUP or off % size or write:
        return None
    f = SK_LOOKUP_FIELDS
    if _in(off, "sk", f):
        return CtxAccess(True, PTR_TO_SOCKET, PTR_MAYBE_NULL) if size == 8 else None
    if _in(off, "remote_port", f):
        if size == 4:                  # 4-byte access to the 2-byte field (compatibility)
            return CtxAccess(True)
        return CtxAccess(True, field_size=2 if size < 2 else 0) if _narrow_ok(size, 2) else None
    if _in(off, "_pad", f):            # the zero padding after it, also for compatibility
        return CtxAccess(True, field_size=2 if size < 2 else 0) if _narrow_ok(size, 2) else None
    if any(_in(off, n, f) for n in ("family", "protocol", "remote_ip4", "local_ip4",
                                    "remote_ip6", "local_ip6", "local_port",
                                    "ingress_ifindex")):
        return CtxAccess(True, field_size=4 if size < 4 else 0) if _narrow_ok(size, 4) else None
    return None


# --- cgroup_sock (sock_filter_is_valid_access: bpf_sock_is_valid_access + attach type) ---------
def _bpf_sock_ok(off: int, size: int) -> bool:
    """bpf_sock_is_valid_access (:func:`sock_access` below holds the rule)."""
    return sock_access("sock", off, size)


def _cgroup_sock(off: int, size: int, write: bool, sign_ext: bool,
                 attach: str = "") -> CtxAccess | None:
    if not _bpf_sock_ok(off, size):
        return None
    f = BPF_SOCK_FIELDS
    full = attach in ("cgroup_inet_sock_create", "cgroup_inet_sock_release")
    if off in (f["bound_dev_if"][0], f["mark"][0], f["priority"][0]):
        return CtxAccess(True) if full else None
    if _in(off, "src_ip4", f):
        return CtxAccess(True) if attach == "cgroup_inet4_post_bind" and not write else None
    if _in(off, "src_ip6", f):
        return CtxAccess(True) if attach == "cgroup_inet6_post_bind" and not write else None
    if _in(off, "src_port", f):
        return CtxAccess(True) if attach in ("cgroup_inet4_post_bind",
                                             "cgroup_inet6_post_bind") and not write else None
    return None if write else CtxAccess(True)


# --- cgroup_sock_addr (sock_addr_is_valid_access) ----------------------------------------------
# struct bpf_sock_addr: field -> (offset, size); 72 bytes
SOCK_ADDR_FIELDS: dict[str, tuple[int, int]] = {
    "user_family": (0, 4), "user_ip4": (4, 4), "user_ip6": (8, 16), "user_port": (24, 4),
    "family": (28, 4), "type": (32, 4), "protocol": (36, 4), "msg_src_ip4": (40, 4),
    "msg_src_ip6": (44, 16), "sk": (64, 8),
}
SIZEOF_SOCK_ADDR = 72
_SOCK_ADDR_FAMILY = {
    "user_ip4": ("cgroup_inet4_bind", "cgroup_inet4_connect", "cgroup_inet4_getpeername",
                 "cgroup_inet4_getsockname", "cgroup_udp4_sendmsg", "cgroup_udp4_recvmsg"),
    "user_ip6": ("cgroup_inet6_bind", "cgroup_inet6_connect", "cgroup_inet6_getpeername",
                 "cgroup_inet6_getsockname", "cgroup_udp6_sendmsg", "cgroup_udp6_recvmsg"),
    "msg_src_ip4": ("cgroup_udp4_sendmsg",), "msg_src_ip6": ("cgroup_udp6_sendmsg",),
}


def _wide_ok(off: int, size: int, name: str) -> bool:
    """bpf_ctx_wide_access_ok: an aligned 8-byte access inside a u32[4] address."""
    start, n = SOCK_ADDR_FIELDS[name]
    return size == 8 and start <= off and off + 8 <= start + n and off % 8 == 0


def _cgroup_sock_addr(off: int, size: int, write: bool, sign_ext: bool,
                      attach: str = "") -> CtxAccess | None:
    if off < 0 or off >= SIZEOF_SOCK_ADDR or off % size:
        return None
    f = SOCK_ADDR_FIELDS
    for name, hooks in _SOCK_ADDR_FAMILY.items():     # the attach type's address family only
        if _in(off, name, f) and attach not in hooks:
            return None
    if any(_in(off, n, f) for n in ("user_ip4", "user_ip6", "msg_src_ip4", "msg_src_ip6",
                                    "user_port")):
        if _wide_ok(off, size, "user_ip6") or _wide_ok(off, size, "msg_src_ip6"):
            return CtxAccess(True)
        if write:
            return CtxAccess(True) if size == 4 else None
        return CtxAccess(True, field_size=4 if size < 4 else 0) if _narrow_ok(size, 4) else None
    if _in(off, "sk", f):
        return CtxAccess(True, PTR_TO_SOCKET) if not write and size == 8 else None
    if any(_in(off, n, f) for n in ("user_family", "family", "type", "protocol")):
        return CtxAccess(True) if not write and size == 4 else None
    return None


# --- sk_msg, sock_ops, perf_event (context only) -----------------------------------------------
# struct sk_msg_md: field -> (offset, size); 80 bytes
SK_MSG_FIELDS: dict[str, tuple[int, int]] = {
    "data": (0, 8), "data_end": (8, 8), "family": (16, 4), "remote_ip4": (20, 4),
    "local_ip4": (24, 4), "remote_ip6": (28, 16), "local_ip6": (44, 16), "remote_port": (60, 4),
    "local_port": (64, 4), "size": (68, 4), "sk": (72, 8),
}
SIZEOF_SK_MSG_MD = 80


def _sk_msg(off: int, size: int, write: bool, sign_ext: bool,
            attach: str = "") -> CtxAccess | None:
    """sk_msg_is_valid_access: read-only; data/data_end/sk are 8-byte pointers, the rest
    whole u32 fields."""
    if write or off % size:
        return None
    f = SK_MSG_FIELDS
    for name, t in (("data", PTR_TO_PACKET), ("data_end", PTR_TO_PACKET_END),
                    ("sk", PTR_TO_SOCKET)):
        if _in(off, name, f):
            return CtxAccess(True, t) if size == 8 else None
    if any(_in(off, n, f) for n in ("family", "remote_ip4", "local_ip4", "remote_ip6",
                                    "local_ip6", "remote_port", "local_port", "size")):
        return CtxAccess(True) if size == 4 else None
    return None


# struct bpf_sock_ops: the fields the rule names -> (offset, size); 224 bytes
SOCK_OPS_FIELDS: dict[str, tuple[int, int]] = {
    "op": (0, 4), "reply": (4, 4), "args": (4, 16), "family": (20, 4),
    "sk_txhash": (164, 4), "bytes_received": (168, 8), "bytes_acked": (176, 8), "sk": (184, 8),
    "skb_data": (192, 8), "skb_data_end": (200, 8), "skb_len": (208, 4),
    "skb_tcp_flags": (212, 4), "skb_hwtstamp": (216, 8),
}
SIZEOF_SOCK_OPS = 224


def _sock_ops(off: int, size: int, write: bool, sign_ext: bool,
              attach: str = "") -> CtxAccess | None:
    """sock_ops_is_valid_access: writes only to reply and sk_txhash (4 bytes); u64 counters,
    sk (NULL or a socket), skb_data/skb_data_end (packet pointers) and skb_hwtstamp are 8-byte
    reads; skb_tcp_flags may be read narrow; every other field is a 4-byte read."""
    if off < 0 or off >= SIZEOF_SOCK_OPS or off % size:
        return None
    f = SOCK_OPS_FIELDS
    if write:
        if off in (f["reply"][0], f["sk_txhash"][0]):
            return CtxAccess(True) if size == 4 else None
        return None
    if f["bytes_received"][0] <= off < sum(f["bytes_acked"]):
        return CtxAccess(True) if size == 8 else None
    for name, t, flags in (("sk", PTR_TO_SOCKET, PTR_MAYBE_NULL), ("skb_data", PTR_TO_PACKET, 0),
                           ("skb_data_end", PTR_TO_PACKET_END, 0)):
        if _in(off, name, f):
            return CtxAccess(True, t, flags) if size == 8 else None
    if off == f["skb_tcp_flags"][0]:
        return CtxAccess(True, field_size=4 if size < 4 else 0) if _narrow_ok(size, 4) else None
    if _in(off, "skb_hwtstamp", f):
        return CtxAccess(True) if size == 8 else None
    return CtxAccess(True) if size == 4 else None


SIZEOF_PERF_EVENT_DATA = SIZEOF_PT_REGS + 16     # struct bpf_perf_event_data (x86-64)


def _perf_event(off: int, size: int, write: bool, sign_ext: bool,
                attach: str = "") -> CtxAccess | None:
    """pe_prog_is_valid_access: read-only; the pt_regs are whole longs, sample_period and addr
    u64s that may be read narrow."""
    if off < 0 or off >= SIZEOF_PERF_EVENT_DATA or write or off % size:
        return None
    if off >= SIZEOF_PT_REGS:                   # sample_period, addr
        return CtxAccess(True, field_size=8 if size < 8 else 0) if _narrow_ok(size, 8) else None
    return CtxAccess(True) if size == 8 else None


_RULES = {"socket_filter": _SK_FILTER, "sched_cls": _TC_CLS_ACT, "cgroup_skb": _CG_SKB,
          "lwt_in": _LWT, "lwt_out": _LWT_OUT, "lwt_xmit": _LWT_OUT, "xdp": _xdp,
          "kprobe": _kprobe, "tracepoint": _tracepoint, "syscall": _syscall, "mem": _syscall,
          "flow_dissector": _flow_dissector, "raw_tracepoint": _raw_tp,
          "sk_lookup": _sk_lookup, "cgroup_sock": _cgroup_sock,
          "cgroup_sock_addr": _cgroup_sock_addr, "sk_msg": _sk_msg, "sock_ops": _sock_ops,
          "perf_event": _perf_event}

assert set(_RULES) == set(PROG_TYPES)

# What the ctx holds past the struct: the largest offset + 1 an access may reach
CTX_LIMIT = {"socket_filter": SIZEOF_SK_BUFF, "sched_cls": SIZEOF_SK_BUFF,
             "cgroup_skb": SIZEOF_SK_BUFF, "lwt_in": SIZEOF_SK_BUFF, "lwt_out": SIZEOF_SK_BUFF,
             "lwt_xmit": SIZEOF_SK_BUFF, "xdp": SIZEOF_XDP_MD, "kprobe": SIZEOF_PT_REGS,
             "tracepoint": PERF_MAX_TRACE_SIZE, "syscall": U16_MAX, "mem": U16_MAX,
             "flow_dissector": SIZEOF_SK_BUFF, "raw_tracepoint": 8 * MAX_BPF_FUNC_ARGS,
             "sk_lookup": SIZEOF_SK_LOOKUP, "cgroup_sock": 80,
             "cgroup_sock_addr": SIZEOF_SOCK_ADDR, "sk_msg": SIZEOF_SK_MSG_MD,
             "sock_ops": SIZEOF_SOCK_OPS, "perf_event": SIZEOF_PERF_EVENT_DATA}

# Types whose context size is the caller's (r1 copied from user memory): a run must supply at
# least max_ctx_offset bytes (BPF_PROG_TEST_RUN refuses a shorter ctx_in for syscall).
CALLER_SIZED = frozenset({"syscall", "mem", "tracepoint", "kprobe", "raw_tracepoint",
                          "perf_event"})


def ctx_access(prog_type: str, off: int, size: int, write: bool, *,
               sign_ext: bool = False, attach_type: str | None = None) -> CtxAccess:
    """Whether a ``size``-byte load (``write=False``; ``sign_ext`` for ldsx) or store at
    ``off`` of ``prog_type``'s context is allowed, and what a load yields.

    ``off`` is the whole offset (the register's fixed offset is always 0 here: the kernel
    refuses ``dereference of modified ctx ptr`` before it asks); ``attach_type`` is the
    program's expected attach type (:mod:`pybpf.attach_types` names), which cgroup_sock,
    cgroup_sock_addr and xdp rules depend on. KeyError for an unknown type.
    """
    res = _RULES[prog_type](off, size, write, sign_ext, attach_type or "")
    return res if res is not None else _refuse(off, size)


def field_name(prog_type: str, off: int) -> str | None:
    """The context field at ``off`` (``data_end``, ``cb[2]``...), for logs and explanations."""
    fields = {"xdp": XDP_MD_FIELDS}.get(prog_type, SK_BUFF_FIELDS
                                       if CTX_STRUCT.get(prog_type) == "__sk_buff" else None)
    if fields is None:
        return None
    for name, (start, size) in fields.items():
        if start <= off < start + size:
            if name in ("cb", "remote_ip6", "local_ip6"):
                return f"{name}[{(off - start) // 4}]"
            return name
    return None


# --- socket pointers (net/core/filter.c bpf_sock_is_valid_access, bpf_sock_common_...) --------
# struct bpf_sock (include/uapi/linux/bpf.h): field -> (offset, size); 80 bytes
BPF_SOCK_FIELDS: dict[str, tuple[int, int]] = {
    "bound_dev_if": (0, 4), "family": (4, 4), "type": (8, 4), "protocol": (12, 4),
    "mark": (16, 4), "priority": (20, 4), "src_ip4": (24, 4), "src_ip6": (28, 16),
    "src_port": (44, 4), "dst_port": (48, 2), "_pad": (50, 2), "dst_ip4": (52, 4),
    "dst_ip6": (56, 16), "state": (72, 4), "rx_queue_mapping": (76, 4),
}
SIZEOF_BPF_SOCK = 80
_SOCK_NARROW = ("state", "family", "type", "protocol", "src_port", "rx_queue_mapping",
                "src_ip4", "src_ip6", "dst_ip4", "dst_ip6")


def sock_access(reg_type: str, off: int, size: int) -> bool:
    """Whether a ``size``-byte load at ``off`` of a socket pointer is allowed (check_sock_access;
    stores are refused before: ``R%d cannot write into %s``). ``reg_type`` is "sock_common"
    (``__sk_buff.sk``: bpf_sock_common_is_valid_access, no type..priority) or "sock". The
    kernel's refusal is ``R%d invalid %s access off=%d size=%d``."""
    if reg_type == "sock_common" and BPF_SOCK_FIELDS["type"][0] <= off < \
            sum(BPF_SOCK_FIELDS["priority"]):
        return False
    if reg_type not in ("sock", "sock_common"):
        return False
    if off < 0 or off >= SIZEOF_BPF_SOCK or off % size:
        return False

    def at(name):
        start, n = BPF_SOCK_FIELDS[name]
        return start <= off < start + n
    # the kernel's switch matches exact offsets for the scalar fields, ranges for the addresses
    for name in _SOCK_NARROW:
        start, n = BPF_SOCK_FIELDS[name]
        if off == start or (n > 4 or name in ("src_ip4", "dst_ip4")) and at(name):
            return _narrow_ok(size, 4)
    if at("dst_port"):
        field = 4 if size == 4 else 2
        return _narrow_ok(size, field)
    if at("_pad"):
        return False
    return size == 4
