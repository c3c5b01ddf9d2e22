"""Load a program into the running kernel's verifier and bring back its verdict and log.

Test support only (the kernel is the oracle for pybpf's verifier): :func:`kernel_verify` creates
the maps a program declares (``.map`` directives, referenced by index through ``fd_array`` as
``map[NAME]``/``map_value[NAME]`` encode them), loads the program as ``prog_type`` with the
attributes that type needs, and returns a :class:`KernelVerdict`: accepted or not, the errno,
the log, and the message (the log's last line before ``processed N insns``, i.e. the line the
kernel printed when it gave up). Built on tests/kernel_bpf.py (its syscall wrapper and map
creation); ``available()`` says whether this process may use bpf() at all, ``map_type_ok``
whether the kernel lets us create a map type (this one refuses arena maps with EPERM), both
through tests/kernel_probe.py when it is there.

The verdict comes from a load without a log (a log that overflows fails even a good load), the
message from a second load with ``log_level`` 1 whose rotating buffer keeps the log's tail.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import re
import struct
from dataclasses import dataclass

from pybpf import uapi
from pybpf.uapi import BPF_BTF_LOAD, BPF_F_SLEEPABLE, BPF_PROG_LOAD

import kernel_bpf
from kernel_bpf import KernelError, _addr, _bpf, create_map

try:        # tests/kernel_probe.py: the suite's one feature probe (skips name the refusal)
    import kernel_probe
except ImportError:         # pragma: no cover - older trees probe here
    kernel_probe = None

# the program types these checks load, with their enum bpf_prog_type values
PROG_TYPE_IDS = {t: uapi.PROG_TYPE_IDS[t] for t in (
    "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp", "perf_event",
    "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops", "sk_msg",
    "raw_tracepoint", "cgroup_sock_addr", "flow_dissector", "sk_lookup", "syscall")}
# enum bpf_attach_type values a type needs as expected_attach_type when the caller names none:
# pybpf's defaults (pybpf.attach_types), cgroup_sock_addr as connect4; others ignore the field
EXPECTED_ATTACH = {"cgroup_skb": "cgroup_inet_ingress", "cgroup_sock": "cgroup_inet_sock_create",
                   "cgroup_sock_addr": "cgroup_inet4_connect", "sk_lookup": "sk_lookup",
                   "flow_dissector": "flow_dissector", "sk_msg": "sk_msg_verdict",
                   "sock_ops": "cgroup_sock_ops"}
PROG_FLAGS = {"syscall": BPF_F_SLEEPABLE}     # syscall programs may call sleepable helpers
LOG_SIZE = 1 << 24
FD_ARRAY_PAD = 1024


@dataclass
class KernelVerdict:
    accepted: bool
    errno: int                  # 0 when accepted
    message: str                # the log's last error line ("" when accepted)
    log: str

    def __str__(self) -> str:
        return "accept" if self.accepted else f"reject ({_errno.errorcode.get(self.errno, self.errno)}): {self.message}"


def available() -> bool:
    if kernel_probe is not None:
        return kernel_probe.probe("bpf") is None
    return kernel_bpf.available()


@functools.lru_cache(maxsize=None)
def map_type_ok(mtype: str) -> str | None:
    """None when the kernel creates a small map of ``mtype``, else the reason it refused."""
    if kernel_probe is not None:
        return kernel_probe.probe(f"map:{mtype}")
    sizes = {"ringbuf": (0, 0, 4096), "arena": (0, 0, 1), "prog_array": (4, 4, 1),
             "perf_event_array": (4, 4, 1), "queue": (0, 4, 1), "stack": (0, 4, 1)}
    k, v, n = sizes.get(mtype, (4, 8, 1))
    flags = 1 << 10 if mtype == "arena" else 0   # BPF_F_MMAPABLE
    try:
        fd = create_map(mtype, k, v, n, flags, name="probe")
    except (OSError, KeyError) as e:
        return f"the kernel refuses {mtype} maps here: {e}"
    os.close(fd)
    return None


def message_of(log: str) -> str:
    """The line the kernel printed when it rejected: the last non-empty line of the log that is
    not the closing statistics (``processed N insns ...``, ``verification time``, ``stack depth``)
    or a state dump following the message (``cur state:``/``old state:`` after ``infinite loop
    detected``)."""
    # a few kernel messages lack their newline ("expected prog array map for tail call"), so the
    # statistics line is glued to them
    log = re.sub(r"(?<=\S)(processed \d+ insns \(limit)", r"\n\1", log)
    lines = [ln for ln in log.splitlines() if ln.strip()]
    while lines and lines[-1].startswith(("processed ", "verification time", "stack depth",
                                          "cur state:", "old state:")):
        lines.pop()
    return lines[-1] if lines else ""


def _insns(prog):
    """Encoded instructions; kfunc ids swapped for the kernel's BTF ids."""
    from pybpf.kfunc_ids import KFUNC_NAMES
    insns = list(prog.insns)
    for pc, form, insn in prog.instructions():
        if form.kind == "call" and form.op == "kfunc":
            # by the program's names, else pybpf's ids (a mutated program keeps no names)
            name = prog.kfuncs.get(insn.imm) or KFUNC_NAMES.get(insn.imm)
            if name is not None:
                insns[pc] = insn._replace(imm=kernel_bpf.kernel_btf_id(name))
    return insns


def subprograms(prog) -> list[tuple[int, str]]:
    """(start slot, name) of each subprogram as the kernel finds them (add_subprog_and_kfunc:
    slot 0, bpf-to-bpf call targets, ld_imm64 BPF_PSEUDO_FUNC targets), so func_info matches the
    kernel's layout even after a mutation moved or removed a call."""
    n = len(prog.insns)
    starts = {0}
    for pc, form, insn in prog.instructions():
        if (form.kind == "call" and form.op == "local") or (insn.opcode == 0x18 and insn.src == 4):
            target = pc + 1 + insn.imm
            if 0 <= target < n:
                starts.add(target)
    return [(s, prog.functions.get(s, f"sub_{s}")) for s in sorted(starts)]


def func_btf(names: list[str]) -> bytes:
    """A minimal BTF: ``int``, one ``int (void)`` FUNC_PROTO and a static FUNC per name (ids 3..).
    The kernel wants func_info for programs with callbacks (``missing btf func_info``) and
    for tail calls from subprograms; the argument types of static functions are not checked."""
    strings = b"\0int\0" + b"".join(n.encode() + b"\0" for n in names)
    types = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)       # INT int, signed 32
    types += struct.pack("<III", 0, 13 << 24, 1)                       # FUNC_PROTO -> int
    off = 5
    for n in names:
        types += struct.pack("<III", off, 12 << 24, 2)                 # FUNC static -> proto
        off += len(n) + 1
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def lock_btf(key_size: int, value_size: int, lock_off: int) -> tuple[bytes, int, int]:
    """(BTF, key type id, value type id) for a map whose value holds a ``struct bpf_spin_lock``
    at ``lock_off`` (``.map ... lock=OFF``): ``struct val { <hole> struct bpf_spin_lock lock;
    <hole> }`` of ``value_size`` bytes; the key an ``int`` (array maps want one) or a char array."""
    strings = b"\0int\0bpf_spin_lock\0val\0char\0lock\0"
    at = {n: strings.index(b"\0" + n + b"\0") + 1 for n in
          (b"int", b"bpf_spin_lock", b"val", b"char", b"lock")}
    types = struct.pack("<IIII", at[b"int"], 1 << 24, 4, (1 << 24) | 32)          # 1: int
    types += struct.pack("<III", at[b"bpf_spin_lock"], (4 << 24) | 1, 4)           # 2: the lock
    types += struct.pack("<III", at[b"val"], 1, 0)                                 #    int val
    types += struct.pack("<IIII", at[b"char"], 1 << 24, 1, 8)                      # 3: char
    types += struct.pack("<III", 0, 3 << 24, 0) + struct.pack("<III", 3, 1, key_size)  # 4: key
    types += struct.pack("<III", at[b"val"], (4 << 24) | 1, value_size)            # 5: value
    types += struct.pack("<III", at[b"lock"], 2, lock_off * 8)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings, 1 if key_size == 4 else 4, 5


def _load_btf(data: bytes) -> int:
    buf = ctypes.create_string_buffer(data, len(data))
    log = ctypes.create_string_buffer(1 << 16)
    attr = bytearray(40)
    struct.pack_into("<QQIII", attr, 0, _addr(buf), _addr(log), len(data), len(log), 1)
    try:
        return _bpf(BPF_BTF_LOAD, attr, "btf_load")
    except KernelError as e:
        raise KernelError("btf_load", e.errno, log.value.decode()) from None


def attach_id(prog_type: str, attach_type: str | None) -> int:
    """enum bpf_attach_type value for a load of ``prog_type`` (``attach_type`` names it)."""
    from pybpf.attach_types import ATTACH_TYPE_IDS
    name = attach_type or EXPECTED_ATTACH.get(prog_type)
    return ATTACH_TYPE_IDS[name] if name else 0


def _load(prog, prog_type: str, fds: list[int], log_level: int, log,
          attach_type: str | None = None) -> int:
    insns = _insns(prog)
    code = ctypes.create_string_buffer(b"".join(i.encode() for i in insns))
    # padded with zeros: a map index past the program's maps reads fd 0 ("fd 0 is not pointing
    # to valid bpf_map"), the same every run, instead of whatever follows a short array
    fd_arr = (ctypes.c_int * max(len(fds), FD_ARRAY_PAD))(*fds)
    lic = ctypes.create_string_buffer(b"GPL")
    attr = bytearray(152)
    struct.pack_into("<IIQQ", attr, 0, PROG_TYPE_IDS[prog_type], len(insns), _addr(code), _addr(lic))
    if log_level:
        struct.pack_into("<IIQ", attr, 24, log_level, len(log), _addr(log))
    struct.pack_into("<I", attr, 44, PROG_FLAGS.get(prog_type, 0))
    attr[48:48 + 15] = prog.name.encode()[:15].ljust(15, b"\0")
    struct.pack_into("<I", attr, 68, attach_id(prog_type, attach_type))
    struct.pack_into("<Q", attr, 120, _addr(fd_arr))
    btf_fd, finfo = None, None
    funcs = subprograms(prog)
    if len(funcs) > 1:
        names = [f"f{i}_{''.join(ch if ch.isalnum() else '_' for ch in name)}"
                 for i, (_slot, name) in enumerate(funcs)]
        btf_fd = _load_btf(func_btf(names))
        fi = b"".join(struct.pack("<II", slot, 3 + i) for i, (slot, _n) in enumerate(funcs))
        finfo = ctypes.create_string_buffer(fi, len(fi))
        struct.pack_into("<IIQI", attr, 72, btf_fd, 8, _addr(finfo), len(funcs))
    try:
        return _bpf(BPF_PROG_LOAD, attr, f"prog_load {prog.name}")
    finally:
        if btf_fd is not None:
            os.close(btf_fd)


class MapsUnavailable(Exception):
    """A map the program declares cannot be created here (the reason says why)."""


def create_maps(prog) -> list[int]:
    """Create the program's declared maps; MapsUnavailable (after closing what was made) when
    the kernel refuses one."""
    fds: list[int] = []
    try:
        for m in prog.maps:
            why = map_type_ok(m.type)
            if why:
                raise MapsUnavailable(f"map {m.name}: {why}")
            flags = m.flags | ((1 << 10) if m.type == "arena" else 0)
            btf_fd = None
            try:
                btf = None
                if getattr(m, "spin_lock_off", -1) >= 0:     # value BTF naming the lock
                    data, key_id, value_id = lock_btf(m.key_size, m.value_size, m.spin_lock_off)
                    btf_fd = _load_btf(data)
                    btf = (btf_fd, key_id, value_id)
                fds.append(create_map(m.type, m.key_size, m.value_size, m.max_entries, flags,
                                      m.map_extra, m.name, btf=btf))
            except (OSError, KeyError) as e:
                raise MapsUnavailable(f"map {m.name} ({m.type}): {e}") from None
            finally:
                if btf_fd is not None:
                    os.close(btf_fd)        # the map holds its own reference
    except MapsUnavailable:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def kernel_verify(prog, prog_type: str, log_level: int = 1, want_log: bool = False,
                  attach_type: str | None = None) -> KernelVerdict:
    """The kernel's verdict on ``prog`` (a pybpf Program) as ``prog_type`` (with the expected
    attach type ``attach_type``, a pybpf.attach_types name, or the type's default). The log is
    fetched for rejections always, for accepted programs only with ``want_log``."""
    fds = create_maps(prog)
    try:
        try:
            pfd = _load(prog, prog_type, fds, 0, None, attach_type)
        except KernelError as e:
            err = e.errno
            log = ctypes.create_string_buffer(LOG_SIZE)
            try:
                pfd2 = _load(prog, prog_type, fds, log_level or 1, log, attach_type)
                os.close(pfd2)   # the logged load accepted what the silent one refused: odd
            except KernelError:
                pass
            text = log.value.decode(errors="replace")
            return KernelVerdict(False, err, message_of(text), text)
        os.close(pfd)
        text = ""
        if want_log and log_level:
            log = ctypes.create_string_buffer(LOG_SIZE)
            try:
                os.close(_load(prog, prog_type, fds, log_level, log, attach_type))
            except KernelError:
                pass
            text = log.value.decode(errors="replace")
        return KernelVerdict(True, 0, "", text)
    finally:
        for fd in fds:
            os.close(fd)
