"""The files of pybpf's persistent caches: where they live, how an entry is written and checked,
and the size bound they share.

Two caches use it: the JIT's code (:mod:`pybpf.jit.cache`, ``.jit`` entries) and the verifier's
verdicts (:mod:`pybpf.verdicts`, ``.vfy`` entries). Both sit in one directory:
``$PYBPF_JIT_CACHE`` if it names a directory, nothing at all if it is ``off``, else
``$XDG_CACHE_HOME/pybpf/jit`` (``~/.cache/pybpf/jit``).

One file per entry, ``<key[:2]>/<key><suffix>``: an 8-byte magic naming the cache, the SHA-256
of key and payload, the payload's length, then the payload. :func:`read` returns the payload
only when magic, length and checksum match (a damaged, truncated or foreign entry is counted as
corrupt and removed); its caller still checks the payload's structure and calls :func:`discard`
when it does not hold. Writers write a temporary file in the same directory and rename it over
the entry, so several processes can fill one cache at once and a reader sees a whole entry or
none. Each kind of entry is bounded (``PYBPF_JIT_CACHE_SIZE`` bytes of code, default 64 MiB;
``PYBPF_VERDICT_CACHE_SIZE`` bytes of verdicts, default 16 MiB): after a store pushes a kind
over its bound, its least recently used entries (file modification time, refreshed on every
hit) are removed down to 90% of the bound.

This module imports neither engine: the VM (which must not load the JIT to verify) uses it.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading

HEAD = struct.Struct("<8s32sQ")          # magic, sha256(key + payload), payload length
SUFFIXES = (".jit", ".vfy")              # every kind of entry: the bound and clear() cover all
DEFAULT_LIMIT = 64 << 20

_lock = threading.Lock()
_digest: str | None = None


class Counters:
    """One cache's counters in this process (hits, misses, stores, corrupt, ...)."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._c = dict.fromkeys(names, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] = self._c.get(name, 0) + n

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._c)


def directory() -> str | None:
    """The cache directory, or None when the caches are off."""
    env = os.environ.get("PYBPF_JIT_CACHE", "")
    if env.lower() in ("off", "0", "no", "false"):
        return None
    if env:
        return os.path.abspath(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pybpf", "jit")


# each kind of entry has its own bound: (environment variable, default bytes)
BOUNDS = {".jit": ("PYBPF_JIT_CACHE_SIZE", DEFAULT_LIMIT),
          ".vfy": ("PYBPF_VERDICT_CACHE_SIZE", 16 << 20)}


def limit(suffix: str = ".jit") -> int:
    """The bound, in bytes, of the entries with ``suffix``."""
    name, default = BOUNDS[suffix]
    try:
        return max(0, int(os.environ[name]))
    except (KeyError, ValueError):
        return default


def source_digest() -> str:
    """SHA-256 of pybpf's own Python source (once per process, about 2 ms). A key built from a
    load's inputs sees neither the lowering code nor the verifier's, and the package version
    does not change with every edit of a checkout: this does."""
    global _digest
    if _digest is not None:
        return _digest
    import importlib.util

    import pybpf

    h = hashlib.sha256()
    roots = [os.path.dirname(os.path.abspath(pybpf.__file__))]
    for sub in ("jit", "verifier", "runtime"):
        # found, not imported: the JIT does not import the runtime (tests/test_layers.py)
        spec = importlib.util.find_spec(f"pybpf.{sub}")
        if spec is not None and spec.submodule_search_locations:
            roots.extend(os.path.abspath(p) for p in spec.submodule_search_locations)
    files = []
    for root in dict.fromkeys(roots):
        for dirpath, dirnames, names in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files.extend(os.path.join(dirpath, n) for n in names if n.endswith(".py"))
    for path in sorted(files):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        h.update(f"{os.path.basename(path)}:{len(data)}:".encode())
        h.update(data)
    _digest = h.hexdigest()
    return _digest


def path(root: str, k: str, suffix: str) -> str:
    return os.path.join(root, k[:2], k + suffix)


def read(k: str, magic: bytes, suffix: str, counters: Counters) -> bytes | None:
    """The checked payload of entry ``k``, or None: a miss, counted; an entry whose magic,
    length or checksum does not match is also counted corrupt and removed. The caller counts
    the hit once the payload's structure holds (else :func:`discard` and a miss)."""
    root = directory()
    if root is None:
        return None
    p = path(root, k, suffix)
    try:
        with open(p, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        counters.add("misses")
        return None
    except OSError:
        counters.add("errors")
        return None
    try:
        got_magic, digest, length = HEAD.unpack_from(blob)
        payload = blob[HEAD.size:]
        ok = got_magic == magic and length == len(payload) \
            and hashlib.sha256(k.encode() + payload).digest() == digest
    except struct.error:
        ok = False
    if not ok:
        discard(k, suffix, counters)
        counters.add("misses")
        return None
    try:
        os.utime(p)   # least recently used = oldest modification time
    except OSError:
        pass
    return payload


def discard(k: str, suffix: str, counters: Counters) -> None:
    """Count entry ``k`` as corrupt and remove it (never used again)."""
    counters.add("corrupt")
    root = directory()
    if root is not None:
        try:
            os.unlink(path(root, k, suffix))
        except OSError:
            pass


def write(k: str, payload: bytes, magic: bytes, suffix: str, counters: Counters) -> None:
    """Store ``payload`` under ``k`` atomically (temporary file, then rename); never raises."""
    root = directory()
    if root is None:
        return
    blob = HEAD.pack(magic, hashlib.sha256(k.encode() + payload).digest(), len(payload)) \
        + payload
    p = path(root, k, suffix)
    try:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(p))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, p)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        counters.add("errors")
        return
    counters.add("stores")
    _maybe_evict(root, suffix, len(blob), counters)


def entries(root: str, suffixes=SUFFIXES) -> list[tuple[float, int, str]]:
    """(modification time, size, path) of every entry under ``root`` with one of ``suffixes``."""
    out = []
    try:
        subdirs = os.listdir(root)
    except OSError:
        return out
    for sub in subdirs:
        d = os.path.join(root, sub)
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if not name.endswith(suffixes):
                continue
            p = os.path.join(d, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            out.append((st.st_mtime, st.st_size, p))
    return out


# Bytes this process believes the directory holds, per kind of entry: one scan, then its own
# stores added; a scan again when that passes the bound or every _RESCAN stores (other
# processes write too).
_estimate: dict[tuple[str, str], int] = {}
_since_scan: dict[tuple[str, str], int] = {}
_RESCAN = 256


def _maybe_evict(root: str, suffix: str, added: int, counters: Counters) -> None:
    at = (root, suffix)
    with _lock:
        known = at in _estimate
        _estimate[at] = _estimate.get(at, 0) + added
        _since_scan[at] = _since_scan.get(at, 0) + 1
        due = not known or _estimate[at] > limit(suffix) or _since_scan[at] >= _RESCAN
        if due:
            _since_scan[at] = 0
    if due:
        total = _evict(root, suffix, counters)
        with _lock:
            _estimate[at] = total


def _evict(root: str, suffix: str, counters: Counters) -> int:
    """Remove the least recently used entries with ``suffix`` down to 90% of their bound when
    over it; returns the bytes left."""
    bound = limit(suffix)
    found = entries(root, (suffix,))
    total = sum(size for _, size, _ in found)
    if total <= bound:
        return total
    removed = 0
    for _, size, p in sorted(found):
        if total <= bound * 0.9:
            break
        try:
            os.unlink(p)
        except OSError:
            continue
        total -= size
        removed += 1
    counters.add("evicted", removed)
    return total


def clear(suffixes=SUFFIXES) -> int:
    """Remove every entry with one of ``suffixes``; returns how many."""
    root = directory()
    if root is None:
        return 0
    n = 0
    with _lock:
        for suffix in suffixes:
            _estimate.pop((root, suffix), None)
    for _, _, p in entries(root, suffixes):
        try:
            os.unlink(p)
            n += 1
        except OSError:
            pass
    return n
