"""Kernel constants pybpf shares with Linux: one table, imported by every user.

Values are the kernel's (``include/uapi/linux/bpf.h`` unless a comment names another header;
a few kernel-internal limits pybpf must match are marked as such). Names are the kernel's; map
and program types are keyed by the enum name in lower case without its prefix
(``BPF_MAP_TYPE_PERCPU_HASH`` -> ``percpu_hash``), the spelling pybpf uses everywhere.
Nothing here depends on the rest of pybpf, so any layer may import it.
"""
from __future__ import annotations

# --- enum bpf_map_type, index = value -----------------------------------------------------------
MAP_TYPE_NAMES: tuple[str, ...] = (
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
    "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
    "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
    "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage",
    "devmap_hash", "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter",
    "user_ringbuf", "cgrp_storage", "arena",
)
MAP_TYPE_IDS: dict[str, int] = {n: i for i, n in enumerate(MAP_TYPE_NAMES)}


def map_type_name(value: int) -> str:
    """bpftool's name for an ``enum bpf_map_type`` value (``map_type_<N>`` for unknown ones)."""
    return MAP_TYPE_NAMES[value] if 0 <= value < len(MAP_TYPE_NAMES) else f"map_type_{value}"


# --- enum bpf_prog_type, index = value ----------------------------------------------------------
PROG_TYPE_NAMES: tuple[str, ...] = (
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp",
    "perf_event", "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops",
    "sk_skb", "cgroup_device", "sk_msg", "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local",
    "lirc_mode2", "sk_reuseport", "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable",
    "cgroup_sockopt", "tracing", "struct_ops", "ext", "lsm", "sk_lookup", "syscall", "netfilter",
)
PROG_TYPE_IDS: dict[str, int] = {n: i for i, n in enumerate(PROG_TYPE_NAMES) if n != "unspec"}

# --- enum bpf_cmd (the bpf() commands pybpf's kernel checks issue) ------------------------------
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM = 0, 1, 2, 3
BPF_MAP_GET_NEXT_KEY, BPF_PROG_LOAD = 4, 5
BPF_PROG_TEST_RUN = 10
BPF_BTF_LOAD = 18
BPF_OBJ_NAME_LEN = 16

# --- map_flags at creation ----------------------------------------------------------------------
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_ZERO_SEED = 1 << 6
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8
BPF_F_MMAPABLE = 1 << 10
BPF_F_PRESERVE_ELEMS = 1 << 11
BPF_F_INNER_MAP = 1 << 12
BPF_F_SEGV_ON_FAULT = 1 << 17
BPF_F_NO_USER_CONV = 1 << 18
BPF_F_ACCESS_MASK = BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG

# --- map element update flags -------------------------------------------------------------------
BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4

# --- prog_flags at load -------------------------------------------------------------------------
BPF_F_SLEEPABLE = 1 << 4

# --- ring buffer (record header bits, bpf_ringbuf_* flags and query selectors) ------------------
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8
BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP = 1, 2
BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BPF_RB_CONS_POS, BPF_RB_PROD_POS = 0, 1, 2, 3

# --- program return codes -----------------------------------------------------------------------
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
XDP_ACTIONS = ("XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT")
TC_ACT_OK, TC_ACT_SHOT = 0, 2               # include/uapi/linux/pkt_cls.h

# --- kernel-internal values pybpf must match ----------------------------------------------------
MAX_TAIL_CALL_CNT = 33                      # include/linux/bpf.h: tail calls per run
ENOTSUPP = 524                              # include/linux/errno.h (not in errno.h)
BPF_COMPLEXITY_LIMIT_INSNS = 1_000_000      # include/linux/bpf.h: the verifier's budget
