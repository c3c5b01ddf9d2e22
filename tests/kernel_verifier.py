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

import kernel_bpf
from kernel_bpf import KernelError, _addr, _bpf, create_map

try:        # tests/kernel_probe.py: the suite's one feature probe (skips name the refusal)
    import kernel_probe
except ImportError:         # pragma: no cover - older trees probe here
    kernel_probe = None

# include/uapi/linux/bpf.h enum bpf_prog_type
PROG_TYPE_IDS = {"socket_filter": 1, "kprobe": 2, "sched_cls": 3, "sched_act": 4,
                 "tracepoint": 5, "xdp": 6, "perf_event": 7, "cgroup_skb": 8,
                 "lwt_in": 10, "syscall": 31}
# enum bpf_attach_type values a type needs as expected_attach_type (0 = BPF_CGROUP_INET_INGRESS
# is also right for cgroup_skb; the others ignore the field)
EXPECTED_ATTACH = {"cgroup_skb": 0}
PROG_FLAGS = {"syscall": 1 << 4}     # BPF_F_SLEEPABLE: syscall programs may call sleepable helpers
BPF_PROG_LOAD, BPF_BTF_LOAD = 5, 18
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


def _load_btf(data: bytes) -> int:
    buf = ctypes.create_string_buffer(data, len(data))
    log = ctypes.create_string_buffer(1 << 16)
    attr = bytearray(40)
    struct.pack_into("<QQIII", attr, 0, _addr(buf), _addr(log), len(data), len(log), 1)
    try:
        return _bpf(BPF_BTF_LOAD, attr, "btf_load")
    except KernelError as e:
        raise KernelError("btf_load", e.errno, log.value.decode()) from None


def _load(prog, prog_type: str, fds: list[int], log_level: int, log) -> int:
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
    struct.pack_into("<I", attr, 68, EXPECTED_ATTACH.get(prog_type, 0))
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
            try:
                fds.append(create_map(m.type, m.key_size, m.value_size, m.max_entries, flags,
                                      m.map_extra, m.name))
            except (OSError, KeyError) as e:
                raise MapsUnavailable(f"map {m.name} ({m.type}): {e}") from None
    except MapsUnavailable:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def kernel_verify(prog, prog_type: str, log_level: int = 1, want_log: bool = False) -> KernelVerdict:
    """The kernel's verdict on ``prog`` (a pybpf Program) as ``prog_type``. The log is fetched
    for rejections always, for accepted programs only with ``want_log``."""
    fds = create_maps(prog)
    try:
        try:
            pfd = _load(prog, prog_type, fds, 0, None)
        except KernelError as e:
            err = e.errno
            log = ctypes.create_string_buffer(LOG_SIZE)
            try:
                pfd2 = _load(prog, prog_type, fds, log_level or 1, log)
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
                os.close(_load(prog, prog_type, fds, log_level, log))
            except KernelError:
                pass
            text = log.value.decode(errors="replace")
        return KernelVerdict(True, 0, "", text)
    finally:
        for fd in fds:
            os.close(fd)
