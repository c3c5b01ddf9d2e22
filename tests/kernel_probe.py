"""Which kernel features this machine allows, asked once per session: the gate in front of every
test that uses the running kernel as an oracle.

Kernels differ per feature, not per machine: one may allow bpf() but refuse
``BPF_MAP_TYPE_ARENA`` with EPERM, or run some program types but not test-run them. Each feature is
probed with a minimal valid use; a refusal becomes a skip that names it, so a machine that lacks
a feature skips exactly the checks that need it, and a kernel that answers differently from pybpf
on a feature it allows is still a failure (the test runs and compares).

Features (strings, so markers and messages can carry them):

* ``bpf`` -- the bpf() syscall is permitted (root or CAP_BPF, no seccomp filter);
* ``map:<type>`` -- a map of that type can be created (``map:arena``, ``map:ringbuf``);
* ``prog:<type>`` -- a two-instruction program of that type loads (``prog:xdp``; syscall
  programs load sleepable, the only way the verifier takes them); ``prog:<type>+sleepable``
  with BPF_F_SLEEPABLE;
* ``test_run:<type>`` -- BPF_PROG_TEST_RUN runs a program of that type (``test_run:sched_cls``);
* ``btf`` -- BPF_BTF_LOAD takes a minimal BTF blob;
* ``vmlinux_btf`` -- /sys/kernel/btf/vmlinux is readable;
* ``kfunc:<name>`` -- the kernel's BTF has that kfunc (``kfunc:bpf_arena_alloc_pages``).

Use: ``require_kernel("map:arena", "test_run:syscall")`` inside a test or fixture, or the marker
``@pytest.mark.kernel("map:arena")`` (tests/conftest.py applies it); ``object_features(obj)``
lists what loading and running a parsed ELF object needs. ``probe(feature)`` is the answer:
None when the feature works here, else the reason (``kernel refuses BPF_MAP_TYPE_ARENA: EPERM``).
"""
from __future__ import annotations

import functools
import os
import struct

import kernel_bpf as kb

# one valid (key_size, value_size, max_entries, map_flags) per map type; others take 4, 4, 1, 0
_MAP_SHAPES = {
    "ringbuf": (0, 0, 4096, 0), "user_ringbuf": (0, 0, 4096, 0), "queue": (0, 4, 1, 0),
    "stack": (0, 4, 1, 0), "bloom_filter": (0, 4, 1, 0), "arena": (0, 0, 1, 1 << 10),
    "lpm_trie": (8, 4, 1, 1),        # BPF_F_MMAPABLE for arena, BPF_F_NO_PREALLOC for the trie
}
# program types whose test_run takes a packet (the rest run with no data)
_PACKET_TYPES = {"socket_filter", "sched_cls", "sched_act", "cgroup_skb", "lwt_in", "lwt_out",
                 "lwt_xmit", "lwt_seg6local", "xdp", "flow_dissector", "sk_lookup"}
# the verifier takes syscall programs only when sleepable ("Syscall programs can only be sleepable")
_ALWAYS_SLEEPABLE = {"syscall"}
_RETURN_0 = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)

STANDARD = ("bpf", "btf", "vmlinux_btf",
            *(f"map:{t}" for t in ("array", "hash", "lru_hash", "percpu_array", "percpu_hash",
                                   "prog_array", "ringbuf", "queue", "stack", "arena")),
            *(f"prog:{t}" for t in ("socket_filter", "sched_cls", "cgroup_skb", "lwt_in", "xdp",
                                    "syscall", "tracepoint", "kprobe")),
            *(f"test_run:{t}" for t in ("socket_filter", "sched_cls", "cgroup_skb", "lwt_in",
                                        "xdp", "syscall")))
"""What the session header reports (tests/conftest.py): the features pybpf's tests use."""


def _enum(prefix: str, name: str) -> str:
    return f"BPF_{prefix}_{name.upper()}"


def _refused(what: str, err: int) -> str:
    return f"kernel refuses {what}: {kb.errno_name(err)}"


@functools.lru_cache(maxsize=None)
def probe(feature: str) -> str | None:
    """None when ``feature`` works on this kernel, else why not (one line)."""
    kind, _, arg = feature.partition(":")
    if kind == "bpf":
        return _probe_bpf()
    if kind == "vmlinux_btf":
        path = "/sys/kernel/btf/vmlinux"
        return None if os.access(path, os.R_OK) else f"{path} is not readable (kernel BTF off?)"
    if kind == "kfunc":
        return probe("vmlinux_btf") or _probe_kfunc(arg)
    if kind not in ("map", "prog", "test_run", "btf"):
        raise ValueError(f"unknown kernel feature {feature!r} (see kernel_probe's docstring)")
    why = probe("bpf")
    if why:
        return why
    if kind == "map":
        return _probe_map(arg)
    if kind == "btf":
        return _probe_btf()
    ptype, _, flag = arg.partition("+")
    if ptype not in kb.PROG_TYPE_IDS or flag not in ("", "sleepable"):
        raise ValueError(f"unknown program type feature {feature!r}")
    if kind == "prog":
        return _probe_prog(ptype, flag == "sleepable")
    return probe(f"prog:{ptype}") or _probe_test_run(ptype)


def _probe_bpf() -> str | None:
    if kb.SYS_BPF is None:
        return f"no bpf() syscall number known for this machine ({os.uname().machine})"
    fd = kb.try_create_map("array", 4, 4, 1, name="pybpf_probe")
    if fd < 0:
        return f"bpf() is not permitted here: {kb.errno_name(-fd)} (needs root or CAP_BPF)"
    os.close(fd)
    return None


def _probe_map(mtype: str) -> str | None:
    if mtype not in kb.MAP_TYPE_IDS:
        raise ValueError(f"unknown map type {mtype!r}")
    fd = kb.try_create_map(mtype, *_MAP_SHAPES.get(mtype, (4, 4, 1, 0)), name="pybpf_probe")
    if fd < 0:
        return _refused(_enum("MAP_TYPE", mtype), -fd)
    os.close(fd)
    return None


def _probe_prog(ptype: str, sleepable: bool) -> str | None:
    sleepable = sleepable or ptype in _ALWAYS_SLEEPABLE
    fd, _ = kb.prog_load(_RETURN_0, ptype, sleepable=sleepable, log_level=0)
    if fd < 0:
        what = _enum("PROG_TYPE", ptype) + (" (sleepable)" if sleepable else "")
        return _refused(what, -fd)
    os.close(fd)
    return None


def _probe_test_run(ptype: str) -> str | None:
    fd, _ = kb.prog_load(_RETURN_0, ptype, sleepable=ptype in _ALWAYS_SLEEPABLE, log_level=0)
    try:
        kb.KernelObject.run(fd, data=bytes(64) if ptype in _PACKET_TYPES else None)
    except kb.KernelError as e:
        return _refused(f"BPF_PROG_TEST_RUN for {_enum('PROG_TYPE', ptype)}", e.errno)
    finally:
        os.close(fd)
    return None


def minimal_btf() -> bytes:
    """A BTF blob with one type, ``int`` (4 bytes, signed, 32 bits)."""
    strings = b"\0int\0"
    types = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def _probe_btf() -> str | None:
    try:
        fd = kb.load_raw_btf(minimal_btf())
    except kb.KernelError as e:
        return _refused("BPF_BTF_LOAD", e.errno)
    os.close(fd)
    return None


def _probe_kfunc(name: str) -> str | None:
    try:
        kb.kernel_btf_id(name)
    except LookupError:
        return f"this kernel has no kfunc {name} (not in /sys/kernel/btf/vmlinux)"
    return None


def require_kernel(*features: str) -> None:
    """Skip the calling test, naming the first of ``features`` this kernel refuses."""
    __tracebackhide__ = True    # the skip is reported at the caller's line
    import pytest   # here: kernel_probe is also imported by child processes without pytest
    for feature in features or ("bpf",):
        why = probe(feature)
        if why:
            pytest.skip(why)


def object_features(obj, run=True) -> list[str]:
    """What creating a parsed ELF object's maps and loading its programs needs from the kernel,
    plus test_run for the programs named in ``run`` (True: all of them)."""
    need = ["bpf"] + (["btf"] if obj.btf is not None else [])
    need += [f"map:{m.type}" for m in obj.map_defs.values()]
    for name, p in obj.programs.items():
        need.append(f"prog:{p.prog_type}" + ("+sleepable" if p.sleepable else ""))
        need += [f"kfunc:{k}" for k in sorted(set(p.kfuncs.values()))]
        if run is True or name in run:
            need.append(f"test_run:{p.prog_type}")
    return list(dict.fromkeys(need))


def summary(features=STANDARD) -> str:
    """One line: which of ``features`` this kernel refuses (for the session header)."""
    if probe("bpf"):
        return probe("bpf")
    refused = [f"{f} ({probe(f).rsplit(': ', 1)[-1]})" for f in features if probe(f)]
    return ("bpf() permitted; refused: " + ", ".join(refused)) if refused else \
        "bpf() permitted; every probed feature works"
