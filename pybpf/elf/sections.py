"""What ELF section names mean, the way libbpf reads them.

``program_type(section)`` maps a program's section name to its program type (libbpf's
``section_defs``). Program type names are the kernel enum names in lower case without their
prefix (``BPF_PROG_TYPE_SCHED_CLS`` -> ``sched_cls``); their numbers, and the map types', are in
:mod:`pybpf.uapi`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SectionDef:
    """One libbpf SEC_DEF: ``pattern`` ending in ``+`` matches the name alone or ``name/...``;
    ending in ``/`` matches that prefix; otherwise the exact name."""

    pattern: str
    prog_type: str
    sleepable: bool = False


# libbpf's section_defs (tools/lib/bpf/libbpf.c), in its matching order.
SECTION_DEFS: tuple[SectionDef, ...] = tuple(SectionDef(*d) for d in (
    ("socket", "socket_filter"), ("sk_reuseport/migrate", "sk_reuseport"),
    ("sk_reuseport", "sk_reuseport"),
    ("kprobe+", "kprobe"), ("uprobe+", "kprobe"), ("uprobe.s+", "kprobe", True),
    ("kretprobe+", "kprobe"), ("uretprobe+", "kprobe"), ("uretprobe.s+", "kprobe", True),
    ("kprobe.multi+", "kprobe"), ("kretprobe.multi+", "kprobe"), ("kprobe.session+", "kprobe"),
    ("uprobe.multi+", "kprobe"), ("uretprobe.multi+", "kprobe"),
    ("uprobe.multi.s+", "kprobe", True), ("uretprobe.multi.s+", "kprobe", True),
    ("ksyscall+", "kprobe"), ("kretsyscall+", "kprobe"), ("usdt+", "kprobe"),
    ("usdt.s+", "kprobe", True),
    ("tc/ingress", "sched_cls"), ("tc/egress", "sched_cls"), ("tcx/ingress", "sched_cls"),
    ("tcx/egress", "sched_cls"), ("tc", "sched_cls"), ("classifier", "sched_cls"),
    ("action", "sched_act"), ("netkit/primary", "sched_cls"), ("netkit/peer", "sched_cls"),
    ("tracepoint+", "tracepoint"), ("tp+", "tracepoint"),
    ("raw_tracepoint+", "raw_tracepoint"), ("raw_tp+", "raw_tracepoint"),
    ("raw_tracepoint.w+", "raw_tracepoint_writable"), ("raw_tp.w+", "raw_tracepoint_writable"),
    ("tp_btf+", "tracing"), ("fentry+", "tracing"), ("fmod_ret+", "tracing"),
    ("fexit+", "tracing"), ("fentry.s+", "tracing", True), ("fmod_ret.s+", "tracing", True),
    ("fexit.s+", "tracing", True), ("freplace+", "ext"), ("lsm+", "lsm"),
    ("lsm.s+", "lsm", True), ("lsm_cgroup+", "lsm"), ("iter+", "tracing"),
    ("iter.s+", "tracing", True), ("syscall", "syscall", True),
    ("xdp.frags/devmap", "xdp"), ("xdp/devmap", "xdp"), ("xdp.frags/cpumap", "xdp"),
    ("xdp/cpumap", "xdp"), ("xdp.frags", "xdp"), ("xdp", "xdp"),
    ("perf_event", "perf_event"), ("lwt_in", "lwt_in"), ("lwt_out", "lwt_out"),
    ("lwt_xmit", "lwt_xmit"), ("lwt_seg6local", "lwt_seg6local"), ("sockops", "sock_ops"),
    ("sk_skb/stream_parser", "sk_skb"), ("sk_skb/stream_verdict", "sk_skb"),
    ("sk_skb/verdict", "sk_skb"), ("sk_skb", "sk_skb"), ("sk_msg", "sk_msg"),
    ("lirc_mode2", "lirc_mode2"), ("flow_dissector", "flow_dissector"),
    ("cgroup_skb/ingress", "cgroup_skb"), ("cgroup_skb/egress", "cgroup_skb"),
    ("cgroup/skb", "cgroup_skb"), ("cgroup/sock_create", "cgroup_sock"),
    ("cgroup/sock_release", "cgroup_sock"), ("cgroup/sock", "cgroup_sock"),
    ("cgroup/post_bind4", "cgroup_sock"), ("cgroup/post_bind6", "cgroup_sock"),
    ("cgroup/bind4", "cgroup_sock_addr"), ("cgroup/bind6", "cgroup_sock_addr"),
    ("cgroup/connect4", "cgroup_sock_addr"), ("cgroup/connect6", "cgroup_sock_addr"),
    ("cgroup/connect_unix", "cgroup_sock_addr"), ("cgroup/sendmsg4", "cgroup_sock_addr"),
    ("cgroup/sendmsg6", "cgroup_sock_addr"), ("cgroup/sendmsg_unix", "cgroup_sock_addr"),
    ("cgroup/recvmsg4", "cgroup_sock_addr"), ("cgroup/recvmsg6", "cgroup_sock_addr"),
    ("cgroup/recvmsg_unix", "cgroup_sock_addr"), ("cgroup/getpeername4", "cgroup_sock_addr"),
    ("cgroup/getpeername6", "cgroup_sock_addr"), ("cgroup/getpeername_unix", "cgroup_sock_addr"),
    ("cgroup/getsockname4", "cgroup_sock_addr"), ("cgroup/getsockname6", "cgroup_sock_addr"),
    ("cgroup/getsockname_unix", "cgroup_sock_addr"), ("cgroup/sysctl", "cgroup_sysctl"),
    ("cgroup/getsockopt", "cgroup_sockopt"), ("cgroup/setsockopt", "cgroup_sockopt"),
    ("cgroup/dev", "cgroup_device"), ("struct_ops+", "struct_ops"),
    ("struct_ops.s+", "struct_ops", True), ("sk_lookup", "sk_lookup"),
    ("netfilter", "netfilter"),
))


def _matches(pattern: str, section: str) -> bool:
    if pattern.endswith("+"):
        base = pattern[:-1]
        return section == base or section.startswith(base + "/")
    if pattern.endswith("/"):
        return section.startswith(pattern)
    return section == pattern


def program_type(section: str) -> tuple[str | None, str, bool]:
    """(program type, attach target, sleepable) for a program section name.

    The attach target is what follows the matched prefix (``tp/syscalls/sys_enter_write`` ->
    ``syscalls/sys_enter_write``). Sections libbpf does not know give ``(None, "", False)``.
    """
    for d in SECTION_DEFS:
        if _matches(d.pattern, section):
            base = d.pattern.rstrip("+")
            attach = section[len(base) + 1:] if section.startswith(base + "/") else ""
            return d.prog_type, attach, d.sleepable
    return None, "", False
