"""Expected attach types: the kernel's ``enum bpf_attach_type`` and the one libbpf picks per section.

A few program types are verified differently by attach type (``prog->expected_attach_type``):
``cgroup_sock_addr`` may touch ``user_ip4`` only when attached to an IPv4 hook and must return
1 from a recvmsg hook; ``cgroup_sock`` may write ``mark`` only at socket creation; an XDP program
reads ``egress_ifindex`` only in a devmap. Names are the enum's in lower case without ``BPF_``
(``BPF_CGROUP_INET4_CONNECT`` -> ``cgroup_inet4_connect``).

* :data:`ATTACH_TYPE_NAMES` the enum, index = value (include/uapi/linux/bpf.h, Linux 6.18);
* :func:`section_attach_type` what libbpf's ``section_defs`` set for a section name;
* :func:`default_attach_type` what a load without one means for a program type (the kernel's
  ``bpf_prog_load_fixup_attach_type`` for cgroup_sock; the only valid one for types that have
  one; None where the kernel insists on being told, as for cgroup_sock_addr).
"""
from __future__ import annotations

ATTACH_TYPE_NAMES: tuple[str, ...] = (
    "cgroup_inet_ingress", "cgroup_inet_egress", "cgroup_inet_sock_create", "cgroup_sock_ops",
    "sk_skb_stream_parser", "sk_skb_stream_verdict", "cgroup_device", "sk_msg_verdict",
    "cgroup_inet4_bind", "cgroup_inet6_bind", "cgroup_inet4_connect", "cgroup_inet6_connect",
    "cgroup_inet4_post_bind", "cgroup_inet6_post_bind", "cgroup_udp4_sendmsg",
    "cgroup_udp6_sendmsg", "lirc_mode2", "flow_dissector", "cgroup_sysctl",
    "cgroup_udp4_recvmsg", "cgroup_udp6_recvmsg", "cgroup_getsockopt", "cgroup_setsockopt",
    "trace_raw_tp", "trace_fentry", "trace_fexit", "modify_return", "lsm_mac", "trace_iter",
    "cgroup_inet4_getpeername", "cgroup_inet6_getpeername", "cgroup_inet4_getsockname",
    "cgroup_inet6_getsockname", "xdp_devmap", "cgroup_inet_sock_release", "xdp_cpumap",
    "sk_lookup", "xdp", "sk_skb_verdict", "sk_reuseport_select",
    "sk_reuseport_select_or_migrate", "perf_event", "trace_kprobe_multi", "lsm_cgroup",
    "struct_ops", "netfilter", "tcx_ingress", "tcx_egress", "trace_uprobe_multi",
    "cgroup_unix_connect", "cgroup_unix_sendmsg", "cgroup_unix_recvmsg",
    "cgroup_unix_getpeername", "cgroup_unix_getsockname", "netkit_primary", "netkit_peer",
    "trace_kprobe_session", "trace_uprobe_session",
)
ATTACH_TYPE_IDS: dict[str, int] = {n: i for i, n in enumerate(ATTACH_TYPE_NAMES)}

# libbpf's section_defs (tools/lib/bpf/libbpf.c): the expected_attach_type of each section a
# context rule or return range depends on (the others load with 0 and the verifier ignores it)
_SECTIONS = {
    "cgroup_skb/ingress": "cgroup_inet_ingress", "cgroup_skb/egress": "cgroup_inet_egress",
    "cgroup/skb": "cgroup_inet_ingress",
    "cgroup/sock_create": "cgroup_inet_sock_create", "cgroup/sock": "cgroup_inet_sock_create",
    "cgroup/sock_release": "cgroup_inet_sock_release",
    "cgroup/post_bind4": "cgroup_inet4_post_bind", "cgroup/post_bind6": "cgroup_inet6_post_bind",
    "cgroup/bind4": "cgroup_inet4_bind", "cgroup/bind6": "cgroup_inet6_bind",
    "cgroup/connect4": "cgroup_inet4_connect", "cgroup/connect6": "cgroup_inet6_connect",
    "cgroup/connect_unix": "cgroup_unix_connect",
    "cgroup/sendmsg4": "cgroup_udp4_sendmsg", "cgroup/sendmsg6": "cgroup_udp6_sendmsg",
    "cgroup/sendmsg_unix": "cgroup_unix_sendmsg",
    "cgroup/recvmsg4": "cgroup_udp4_recvmsg", "cgroup/recvmsg6": "cgroup_udp6_recvmsg",
    "cgroup/recvmsg_unix": "cgroup_unix_recvmsg",
    "cgroup/getpeername4": "cgroup_inet4_getpeername",
    "cgroup/getpeername6": "cgroup_inet6_getpeername",
    "cgroup/getpeername_unix": "cgroup_unix_getpeername",
    "cgroup/getsockname4": "cgroup_inet4_getsockname",
    "cgroup/getsockname6": "cgroup_inet6_getsockname",
    "cgroup/getsockname_unix": "cgroup_unix_getsockname",
    "sockops": "cgroup_sock_ops", "sk_msg": "sk_msg_verdict", "sk_lookup": "sk_lookup",
    "flow_dissector": "flow_dissector",
    "xdp/devmap": "xdp_devmap", "xdp.frags/devmap": "xdp_devmap",
    "xdp/cpumap": "xdp_cpumap", "xdp.frags/cpumap": "xdp_cpumap",
    "xdp": "xdp", "xdp.frags": "xdp",
}

# what a load without an attach type gets (None: the kernel refuses the load, EINVAL)
_DEFAULTS = {"cgroup_sock": "cgroup_inet_sock_create", "sk_lookup": "sk_lookup",
             "flow_dissector": "flow_dissector", "sk_msg": "sk_msg_verdict",
             "sock_ops": "cgroup_sock_ops", "cgroup_skb": "cgroup_inet_ingress",
             "cgroup_sock_addr": None}

# the attach types the kernel accepts per program type (bpf_prog_load_check_attach)
VALID = {
    "cgroup_sock": ("cgroup_inet_sock_create", "cgroup_inet_sock_release",
                    "cgroup_inet4_post_bind", "cgroup_inet6_post_bind"),
    "cgroup_sock_addr": tuple(n for n in ATTACH_TYPE_NAMES if n.startswith("cgroup_") and any(
        n.endswith(s) for s in ("_bind", "_connect", "_sendmsg", "_recvmsg", "_getpeername",
                                "_getsockname")) and "post_bind" not in n),
    "cgroup_skb": ("cgroup_inet_ingress", "cgroup_inet_egress"),
    "sk_lookup": ("sk_lookup",),
}


def section_attach_type(section: str) -> str | None:
    """The expected attach type libbpf sets for ``section`` (None when it sets none)."""
    return _SECTIONS.get(section.lstrip("?"))


def default_attach_type(prog_type: str) -> str | None:
    """The attach type a ``prog_type`` load without one is verified with (None: none)."""
    return _DEFAULTS.get(prog_type)


def check_attach_type(prog_type: str, attach_type: str | None) -> str | None:
    """Why the kernel refuses ``prog_type`` with ``attach_type`` at BPF_PROG_LOAD (EINVAL,
    before the verifier runs), or None."""
    valid = VALID.get(prog_type)
    if valid is None:
        return None
    if attach_type not in valid:
        what = attach_type or "none"
        return (f"program type {prog_type} needs an expected attach type "
                f"({', '.join(valid)}); got {what} (BPF_PROG_LOAD: EINVAL)")
    return None
