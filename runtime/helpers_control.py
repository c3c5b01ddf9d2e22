"""The "maps and control" helpers: for_each_map_elem, spin locks, strings, task identity, time.

Kernel semantics (Linux 6.18, kernel/bpf/helpers.c, bpf_trace.c, bpf_iter.c), each helper
registered under its kernel id with its prototype from the one table (:mod:`pybpf.verifier.protos`,
block "maps and control"); both engines call the same Python functions (the JIT through its
bridge), whose pointer arguments are checked against the run's regions before they are touched.

* ``bpf_for_each_map_elem(map, callback, ctx, flags)``: ``special = "for_each"``, each engine
  calls the callback subprogram itself (``callback(map, key, value, ctx)``), walking the map
  with :class:`ForEach`: every array index; the hash elements present (insertion order, where
  the kernel walks its buckets: an order-dependent program may see another order); percpu maps
  show the current CPU's value. The count of callbacks made is returned, the one that returned
  1 (stop) included; ``flags != 0`` is -EINVAL. The key is a read-only copy (a u32 index for
  arrays, as the kernel's on-stack index); elements deleted by the callback are not visited.
* ``bpf_spin_lock``/``bpf_spin_unlock``: the 4-byte ``struct bpf_spin_lock`` of a map value is a
  real lock word (0 free, 1 held: the kernel's qspinlock locked value) taken with an atomic
  compare-and-exchange, so runs in several threads, interpreter and JIT alike, exclude each
  other. A waiter yields the GIL while it spins (``time.sleep(0)``), so a holder running Python
  (the interpreter, or JIT code that calls Python) can finish. The verifier enforces the
  kernel's rules (one lock at a time, no calls while held, unlock before exit).
* ``bpf_strncmp``, ``bpf_strtol``, ``bpf_strtoul`` (``_parse_integer`` rules: base 0/8/10/16
  in the low 5 flag bits, leading spaces, one '-', -EINVAL/-ERANGE, the result written as 0
  on failure), ``bpf_snprintf`` (:mod:`pybpf.runtime.bprintf`).
* ``bpf_get_current_pid_tgid``, ``bpf_get_current_uid_gid``, ``bpf_get_current_comm``: the
  calling thread's, as BPF_PROG_TEST_RUN runs a program in the caller's task; a VM's ``task``
  (:class:`Task`, ``VM(task=Task(comm=b"nginx", pid=...))``) overrides any of them.
* ``bpf_perf_event_output`` (:mod:`.maps.perf_event_array`, with its Python consumer) and
  ``bpf_get_local_storage`` (:mod:`.maps.cgroup_storage`: a fresh storage per run, as
  BPF_PROG_TEST_RUN allocates one).
* ``bpf_jiffies64``: ``INITIAL_JIFFIES`` + CLOCK_MONOTONIC in ticks of the running kernel's HZ
  (from /proc/config.gz, else 250); ``bpf_get_numa_node_id``: node 0 (pybpf runs one virtual
  CPU on one node), native in JIT code.
"""
from __future__ import annotations

import ctypes
import errno
import gzip
import os
import threading
import time
from dataclasses import dataclass

from pybpf.errors import MemoryAccessError, VMError
from pybpf.helper_names import HELPER_IDS
from pybpf.verifier import protos

from .atomics import native_atomic
from .bprintf import bpf_snprintf
from .helpers import ACTIVE_RUN, Helper
from .maps.cgroup_storage import CgroupStorage
from .contexts import SKB_TYPES
from .maps.perf_event_array import BPF_F_CTXLEN_MASK, BPF_F_INDEX_MASK, PerfEventArray
from .memory import PROC, Buffer, Region

M64 = (1 << 64) - 1


def _err(e: int) -> int:
    return -e & M64


# --- task identity --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """Who a run is "current" for; None fields come from the calling thread (BPF_PROG_TEST_RUN
    runs a program in the caller's task): ``pid`` is the thread id, ``tgid`` the process id,
    ``comm`` at most 15 bytes."""

    pid: int | None = None
    tgid: int | None = None
    uid: int | None = None
    gid: int | None = None
    comm: bytes | None = None

    def pid_tgid(self) -> int:
        pid = threading.get_native_id() if self.pid is None else self.pid
        tgid = os.getpid() if self.tgid is None else self.tgid
        return ((tgid & 0xFFFFFFFF) << 32) | (pid & 0xFFFFFFFF)

    def uid_gid(self) -> int:
        uid = os.getuid() if self.uid is None else self.uid
        gid = os.getgid() if self.gid is None else self.gid
        return ((gid & 0xFFFFFFFF) << 32) | (uid & 0xFFFFFFFF)

    def comm_bytes(self) -> bytes:
        if self.comm is not None:
            return bytes(self.comm)[:15]
        try:        # the thread's comm, as current->comm
            with open(f"/proc/self/task/{threading.get_native_id()}/comm", "rb") as f:
                return f.read().rstrip(b"\n")[:15]
        except OSError:
            return b""


def task_helpers(task_of) -> list[tuple[str, object]]:
    """get_current_pid_tgid/uid_gid/comm reading ``task_of()`` (the VM's :class:`Task`)."""
    def get_current_pid_tgid() -> int:
        return task_of().pid_tgid()

    def get_current_uid_gid() -> int:
        return task_of().uid_gid()

    def get_current_comm(buf: int, size: int) -> int:
        size &= 0xFFFFFFFF
        data = task_of().comm_bytes()[:max(size - 1, 0)]
        # strscpy_pad: the name, then NULs to the end of the buffer
        PROC[buf:buf + size] = data + bytes(size - len(data))
        return 0
    return [(f.__name__, f) for f in (get_current_pid_tgid, get_current_uid_gid,
                                      get_current_comm)]


# --- time and topology ---------------------------------------------------------------------------
def _kernel_hz() -> int:
    for path in ("/proc/config.gz", f"/boot/config-{os.uname().release}"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=", 1)[1])
        except (OSError, ValueError):
            continue
    return 250


HZ = _kernel_hz()
# include/linux/jiffies.h: jiffies start 5 minutes before they wrap a 32-bit counter
INITIAL_JIFFIES = (-300 * HZ) & 0xFFFFFFFF


def jiffies64() -> int:
    return INITIAL_JIFFIES + time.clock_gettime_ns(time.CLOCK_MONOTONIC) * HZ // 1_000_000_000


def get_numa_node_id() -> int:
    return 0


# --- strings -------------------------------------------------------------------------------------
def strncmp(s1: int, s1_sz: int, s2: int) -> int:
    """lib/string.c strncmp(s1, s2, s1_sz): -1, 0 or 1 (s2 is a checked NUL-terminated string)."""
    n = s1_sz & 0xFFFFFFFF
    a = bytes(PROC[s1:s1 + n])
    b = ctypes.string_at(s2) + b"\0"
    for i in range(n):
        c1, c2 = a[i], b[i] if i < len(b) else 0
        if c1 != c2:
            return 1 if c1 > c2 else M64
        if not c1:
            break
    return 0


# the kernel's isspace (lib/ctype.c): \t \n \v \f \r, space and Latin-1 NBSP (160)
_SPACE = frozenset(b"\t\n\v\f\r \xa0")
BPF_STRTOX_BASE_MASK = 0x1F
KSTRTOX_OVERFLOW = 1 << 31
_XDIGITS = frozenset(b"0123456789abcdefABCDEF")


def _parse_integer(s: bytes, base: int) -> tuple[int, int]:
    """lib/kstrtox.c _parse_integer: (value, digits consumed | KSTRTOX_OVERFLOW)."""
    res, rv = 0, 0
    for c in s:
        lc = c | 0x20
        if 0x30 <= c <= 0x39:
            val = c - 0x30
        elif 0x61 <= lc <= 0x66:
            val = lc - 0x61 + 10
        else:
            break
        if val >= base:
            break
        if res >> 60 and res > (M64 - val) // base:
            rv |= KSTRTOX_OVERFLOW
        res = (res * base + val) & M64
        rv += 1
    return res, rv


def _strtoull(buf: bytes, flags: int) -> tuple[int, int, bool]:
    """__bpf_strtoull: (consumed or -errno, value, negative)."""
    base = flags & BPF_STRTOX_BASE_MASK
    if base not in (0, 8, 10, 16) or flags & ~BPF_STRTOX_BASE_MASK or not buf:
        return -errno.EINVAL, 0, False
    i = 0
    while i < len(buf) and buf[i] in _SPACE:
        i += 1
    neg = i < len(buf) and buf[i] == 0x2D
    if neg:
        i += 1
    consumed = i
    if consumed == len(buf):
        return -errno.EINVAL, 0, neg
    s = buf[i:i + 63].split(b"\0", 1)[0]       # the kernel copies at most 63 bytes, NUL-ended
    # _parse_integer_fixup_radix
    start = 0
    if base == 0:
        if s[:1] == b"0":
            base = 16 if s[1:2].lower() == b"x" and len(s) > 2 and s[2] in _XDIGITS else 8
        else:
            base = 10
    if base == 16 and s[:1] == b"0" and s[1:2].lower() == b"x":
        start = 2
    value, n = _parse_integer(s[start:], base)
    if n & KSTRTOX_OVERFLOW:
        return -errno.ERANGE, 0, neg
    if n == 0:
        return -errno.EINVAL, 0, neg
    return consumed + start + n, value, neg


def strtol(buf: int, buf_len: int, flags: int, res: int) -> int:
    PROC[res:res + 8] = bytes(8)
    n, value, neg = _strtoull(bytes(PROC[buf:buf + (buf_len & 0xFFFFFFFF)]), flags)
    if n < 0:
        return _err(-n)
    if neg:
        value = -value & M64
        if value and not value >> 63:          # (long long)-_res > 0
            return _err(errno.ERANGE)
    elif value >> 63:
        return _err(errno.ERANGE)
    PROC[res:res + 8] = value.to_bytes(8, "little")
    return n


def strtoul(buf: int, buf_len: int, flags: int, res: int) -> int:
    PROC[res:res + 8] = bytes(8)
    n, value, neg = _strtoull(bytes(PROC[buf:buf + (buf_len & 0xFFFFFFFF)]), flags)
    if n < 0:
        return _err(-n)
    if neg:
        return _err(errno.EINVAL)
    PROC[res:res + 8] = value.to_bytes(8, "little")
    return n


def snprintf(out: int, out_size: int, fmt: int, data: int, data_len: int) -> int:
    return bpf_snprintf(out, out_size & 0xFFFFFFFF, fmt, data, data_len & 0xFFFFFFFF) & M64


# --- spin locks ----------------------------------------------------------------------------------
def _lock_word(lock: int) -> None:
    if lock % 4:        # only unverified code gets here: the verifier pins the lock's offset
        raise VMError(f"bpf_spin_lock: 0x{lock:x} is not 4-byte aligned")


_HELD = threading.local()      # lock words this thread holds
_TAKEN: set[int] = set()       # lock words some run took through spin_lock and still holds
_TAKEN_MUTEX = threading.Lock()    # makes "cmpxchg + record" and "forget + release" atomic
SPIN_TIMEOUT = 5.0             # seconds: a lock held longer was left by a run that ended


def _held() -> set:
    held = getattr(_HELD, "words", None)
    if held is None:
        held = _HELD.words = set()
    return held


def _try_take(lock: int) -> bool | None:
    """Take the word: True, or False while a run holds it, or None when it is non-zero but no
    run took it (memory an unverified program scribbled on: waiting would never end)."""
    with _TAKEN_MUTEX:
        if native_atomic("cmpxchg", lock, 4, 1, 0) == 0:
            _TAKEN.add(lock)
            return True
        return False if lock in _TAKEN else None


def spin_lock(lock: int) -> int:
    """Take the lock word. An unverified program (the verifier forbids all three) that locks a
    word this thread already holds, a word no run took that is not 0, or one held past
    SPIN_TIMEOUT (left by a run that ended holding it) gets a VMError instead of spinning."""
    _lock_word(lock)
    held = _held()
    if lock in held:
        raise VMError(f"bpf_spin_lock: this run already holds the lock at 0x{lock:x} "
                      f"(a deadlock the verifier refuses)")
    deadline = None
    while not (taken := _try_take(lock)):
        if taken is None:
            raise VMError(f"bpf_spin_lock: the word at 0x{lock:x} is not 0 and no run holds "
                          f"it (not an initialised struct bpf_spin_lock)")
        now = time.monotonic()
        deadline = deadline or now + SPIN_TIMEOUT
        if now > deadline:
            raise VMError(f"bpf_spin_lock: the lock at 0x{lock:x} has been held for "
                          f"{SPIN_TIMEOUT} s (left held by a run that ended?)")
        time.sleep(0)       # lets the holder run (it may need the GIL this thread has)
    held.add(lock)
    return 0


def spin_unlock(lock: int) -> int:
    _lock_word(lock)
    _held().discard(lock)
    with _TAKEN_MUTEX:
        _TAKEN.discard(lock)
        native_atomic("xchg", lock, 4, 0, 0)
    return 0


# --- for_each_map_elem ---------------------------------------------------------------------------
_ITERABLE = ("array", "percpu_array", "hash", "lru_hash", "percpu_hash", "lru_percpu_hash")


class ForEach:
    """One bpf_for_each_map_elem walk: :meth:`next` gives the next element's value address (0
    when done) and leaves its key in :attr:`key` (a read-only buffer of key_size bytes)."""

    def __init__(self, m) -> None:
        self.map = m
        self.key_buf = Buffer(max(m.key_size, 1))
        self.key = self.key_buf.address
        self.count = 0
        if m.type.endswith("array"):
            self._keys = iter(range(m.max_entries))
        else:
            self._keys = iter(m._raw_keys())

    def next(self) -> int:
        m = self.map
        for k in self._keys:
            raw = k.to_bytes(4, "little") if isinstance(k, int) else k
            base = m._value_base(raw)
            if not base:
                continue        # deleted since the walk began
            PROC[self.key:self.key + len(raw)] = raw
            self.count += 1
            return base + m.cpu * ((m.value_size + 7) & ~7) if m.percpu else base
        return 0

    def region(self) -> Region:
        return Region(self.key, self.map.key_size, "for_each key", False, self.key_buf)


def for_each_start(resolve_map, map_value: int, flags: int, pc: int | None = None):
    """A :class:`ForEach` over the map, or an int r0 (-EINVAL for flags)."""
    if flags:
        return _err(errno.EINVAL)
    m = resolve_map(map_value)
    if m is None or m.type not in _ITERABLE:
        raise VMError(f"bpf_for_each_map_elem: 0x{map_value:x} is not an array or hash map", pc)
    return ForEach(m)


def _special(name: str):
    def stand_in(*args) -> int:
        raise VMError(f"bpf_{name} transfers control: the engine implements it at its call "
                      f"sites (it cannot be reached through callx)")
    stand_in.__name__ = name
    return stand_in


# --- perf_event_output, get_local_storage ------------------------------------------------------
def _event_output_packet(ctx: int):
    """For the packet program types (bpf_skb_event_output, bpf_xdp_event_output): (the
    packet's length, a function giving its first n bytes), else None (the tracing variant).
    ``ctx`` must be the run's context (a verified program passes nothing else)."""
    rc = ACTIVE_RUN.get()
    xb, sb = getattr(rc, "xdp", None), getattr(rc, "skb", None)
    if xb is not None:
        if ctx != xb.ctx_address:
            raise MemoryAccessError(None, ctx, 24, "bpf_perf_event_output ctx argument",
                                    f"the run's xdp_md at 0x{xb.ctx_address:x}")
        return xb.buff_len(), lambda n: xb.read(0, n)
    if sb is not None and rc.prog_type in SKB_TYPES:
        if ctx != sb.ctx_address:
            raise MemoryAccessError(None, ctx, 4, "bpf_perf_event_output ctx argument",
                                    f"the run's __sk_buff at 0x{sb.ctx_address:x}")
        return sb.len, lambda n: sb[0:n]
    return None


def map_helpers(resolve_map) -> list[tuple[str, object]]:
    """bpf_perf_event_output (into a :class:`~.maps.perf_event_array.PerfEventArray`) and
    bpf_get_local_storage (a :class:`~.maps.cgroup_storage.CgroupStorage`'s run storage)."""
    def the_map(value: int, cls, name: str):
        m = resolve_map(value)
        if not isinstance(m, cls):
            raise VMError(f"bpf_{name}: 0x{value:x} is not a {cls.type} map")
        return m

    def perf_event_output(ctx: int, map_value: int, flags: int, data: int, size: int) -> int:
        m = the_map(map_value, PerfEventArray, "perf_event_output")
        meta = bytes(PROC[data:data + size]) if size else b""
        packet = _event_output_packet(ctx)
        if packet is None:          # the tracing variant: flags are the index bits only
            return m.map_perf_output(flags, meta) & M64
        # bpf_skb_event_output / bpf_xdp_event_output: BPF_F_CTXLEN_MASK asks for that many
        # bytes of the packet (from skb->data, or xdp->data across fragments) after the data
        if flags & ~(BPF_F_CTXLEN_MASK | BPF_F_INDEX_MASK):
            return -errno.EINVAL & M64
        length, take = packet
        ctx_size = (flags & BPF_F_CTXLEN_MASK) >> 32
        if ctx_size > length:
            return -errno.EFAULT & M64
        return m.map_perf_output(flags & BPF_F_INDEX_MASK, meta + take(ctx_size)) & M64

    def get_local_storage(map_value: int, flags: int) -> int:
        return the_map(map_value, CgroupStorage, "get_local_storage").map_local_storage()
    return [("perf_event_output", perf_event_output), ("get_local_storage", get_local_storage)]


# --- registration --------------------------------------------------------------------------------
def install(helpers, resolve_map, task_of) -> None:
    """Add this module's helpers to ``helpers`` (a HelperRegistry) under their kernel ids;
    ``task_of()`` gives the :class:`Task` that get_current_* report."""
    def add(name, fn, **kw):
        helpers.add(Helper(HELPER_IDS[name], name, fn, protos.helper_proto(name), **kw))

    add("for_each_map_elem", _special("for_each_map_elem"), special="for_each")
    add("spin_lock", spin_lock)         # the lock word's 4 bytes: protos.fixed_memory_args
    add("spin_unlock", spin_unlock)
    add("jiffies64", jiffies64)
    add("get_numa_node_id", get_numa_node_id, native=("const", 0))
    for fn in (strncmp, strtol, strtoul, snprintf):
        add(fn.__name__, fn)
    for name, fn in task_helpers(task_of) + map_helpers(resolve_map):
        add(name, fn)


__all__ = ["Task", "ForEach", "for_each_start", "install", "HZ", "INITIAL_JIFFIES"]
