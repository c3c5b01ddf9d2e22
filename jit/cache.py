"""The persistent JIT code cache: linked images on disk, content-addressed, shared by processes.

The compiled bytes depend only on the IR (addresses are external symbols resolved at placement,
:mod:`pybpf.jit.link`), and the IR is everything the lowering read. A single-program load keys
its entry on the lowering's inputs instead (:mod:`pybpf.jit.loadkey`: the program, its type, map
kinds, sizes and flags, helper and kfunc ids, the verifier's facts, the loader's values up to
which of them are equal), computed before lowering, so a hit skips the lowering and the compile
worker alike; such an entry carries a *load record* (how to rebuild each external symbol's value
from the load, whether the code calls Python, its tail-call entry). Other loads (batches,
programs the input key cannot cover) key on the IR text. Both keys are a SHA-256 that also
covers the optimisation level, the code generator's settings (target CPU and its features as
this process sees them, FastISel), the llvmlite version (which pins its LLVM), pybpf's version,
a digest of pybpf's own source and the cache format.

Where: ``$PYBPF_JIT_CACHE`` if it names a directory, nothing at all if it is ``off``, else
``$XDG_CACHE_HOME/pybpf/jit`` (``~/.cache/pybpf/jit``). One file per entry,
``<key[:2]>/<key>.jit``: a magic, the SHA-256 of key and payload, the payload's length, then
the payload (a JSON header: sizes, symbols, fixups, externals, sections; then the image's
bytes). Nothing in an entry is executable Python (no pickle): a damaged, truncated or foreign
entry (one whose checksum, length, key or structure does not match) is counted, deleted and
compiled again, never placed. Writers write a temporary file in the same directory and rename
it over the entry, so several processes can fill one cache at once and a reader sees a whole
entry or none. The cache is bounded (``PYBPF_JIT_CACHE_SIZE`` bytes, default 64 MiB): after a
store pushes it over, the least recently used entries (file modification time, refreshed on
every hit) are removed down to 90% of the bound.

``stats()`` and ``clear()`` back ``pybpf jit --cache stats|clear``.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import threading

from pybpf.jit.link import Fixup, LinkImage

FORMAT = 2
_MAGIC = b"PYBPFJIT"
_HEAD = struct.Struct("<8s32sQ")          # magic, sha256(key + payload), payload length
_SUFFIX = ".jit"
DEFAULT_LIMIT = 64 << 20

_lock = threading.Lock()
_counters = {"hits": 0, "misses": 0, "stores": 0, "corrupt": 0, "evicted": 0, "errors": 0}
_salt: bytes | None = None


def directory() -> str | None:
    """The cache directory, or None when the cache is off."""
    env = os.environ.get("PYBPF_JIT_CACHE", "")
    if env.lower() in ("off", "0", "no", "false"):
        return None
    if env:
        return os.path.abspath(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pybpf", "jit")


def limit() -> int:
    try:
        return max(0, int(os.environ["PYBPF_JIT_CACHE_SIZE"]))
    except (KeyError, ValueError):
        return DEFAULT_LIMIT


def _cpu() -> str:
    """The CPU as LLVM's host detection would see it: model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().split("\n\n")[0].splitlines()
    except OSError:
        return "unknown"
    keep = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags")
    return "\n".join(line for line in lines if line.split(":")[0].strip() in keep)


def _source_digest() -> str:
    """SHA-256 of pybpf's own Python source. A key built from a load's inputs
    (:mod:`pybpf.jit.loadkey`) does not see the lowering code, and the package version does not
    change with every edit of a checkout: this does (about 2 ms, once per process)."""
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
    return h.hexdigest()


def _codegen_salt() -> bytes:
    """Everything besides the IR that decides the bytes: versions and code generator settings."""
    global _salt
    if _salt is None:
        import llvmlite

        try:
            from importlib.metadata import version
            pybpf_version = version("pybpf")
        except Exception:  # running from a checkout without metadata
            pybpf_version = "unknown"
        parts = [f"format={FORMAT}", f"pybpf={pybpf_version}", f"source={_source_digest()}",
                 f"llvmlite={llvmlite.__version__}", _cpu()]
        _salt = "\n".join(parts).encode()
    cpu = os.environ.get("PYBPF_JIT_CPU", "host")
    fast = os.environ.get("PYBPF_JIT_FAST_ISEL", "") not in ("", "0")
    return _salt + f"\ncpu={cpu}\nfast_isel={fast}".encode()


def key(ir_text: str, opt_level: int, pipeline: str = "") -> str:
    """The entry key of ``ir_text`` compiled at ``opt_level`` (``pipeline`` names a variant)."""
    h = hashlib.sha256(_codegen_salt())
    h.update(f"\nopt={opt_level}\npipeline={pipeline}\n".encode())
    h.update(ir_text.encode())
    return h.hexdigest()


def _path(root: str, k: str) -> str:
    return os.path.join(root, k[:2], k + _SUFFIX)


def _count(name: str, n: int = 1) -> None:
    with _lock:
        _counters[name] += n


def _encode(image: LinkImage, load: dict | None = None) -> bytes:
    meta = {"code_size": image.code_size, "symbols": image.symbols,
            "fixups": [[f.offset, f.kind, f.target, f.addend, f.stub] for f in image.fixups],
            "externals": list(image.externals),
            "sections": [list(s) for s in image.sections], "size": len(image.data)}
    if load is not None:
        meta["load"] = load
    head = json.dumps(meta, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + image.data


_KINDS = ("abs64", "abs32", "abs32s", "call32")


def _check_load(load, image: LinkImage) -> dict:
    """The load record of an entry stored under a load-input key (:mod:`pybpf.jit.loadkey`):
    ``recipe`` ([symbol, path] for every external symbol), ``needs_gil``, ``tail_entries``."""
    recipe = load["recipe"]
    if not isinstance(load["needs_gil"], bool) or not isinstance(load["tail_entries"], dict):
        raise ValueError("bad load record")
    names = set()
    for name, path in recipe:
        if not isinstance(name, str) or not isinstance(path, list) \
                or not all(isinstance(p, (str, int)) for p in path):
            raise ValueError("bad recipe")
        names.add(name)
    if not set(image.externals) <= names:
        raise ValueError("recipe misses external symbols")
    for k, v in load["tail_entries"].items():
        if not isinstance(k, str) or v not in image.symbols:
            raise ValueError("bad tail entry")
    return load


def _decode(payload: bytes) -> LinkImage:
    """The image in ``payload``; ValueError (or KeyError/TypeError) for anything malformed.
    An entry with a load record has it as ``image.load`` (see :func:`get_load`)."""
    (n,) = struct.unpack_from("<I", payload)
    meta = json.loads(payload[4:4 + n])
    data = payload[4 + n:]
    size = len(data)
    if meta["size"] != size or not 0 < meta["code_size"] <= size:
        raise ValueError("sizes do not match")
    symbols = {str(k): int(v) for k, v in meta["symbols"].items()}
    fixups = []
    for off, kind, target, addend, stub in meta["fixups"]:
        width = 8 if kind == "abs64" else 4
        if kind not in _KINDS or not 0 <= off <= size - width \
                or not isinstance(target, (int, str)) or not isinstance(addend, int) \
                or isinstance(target, int) and not 0 <= target <= size \
                or not -1 <= stub <= size - 8:
            raise ValueError("bad fixup")
        fixups.append(Fixup(off, kind, target, addend, stub))
    if any(not 0 <= v < meta["code_size"] for v in symbols.values()):
        raise ValueError("symbol outside the code")
    image = LinkImage(data, meta["code_size"], symbols, tuple(fixups),
                      tuple(str(e) for e in meta["externals"]),
                      tuple((str(a), int(b), int(c)) for a, b, c in meta["sections"]))
    if "load" in meta:
        return image, _check_load(meta["load"], image)
    return image, None


def get(k: str) -> LinkImage | None:
    """The cached image of key ``k``, or None (a miss; a bad entry is counted and removed)."""
    found = _get(k)
    return None if found is None else found[0]


def get_load(k: str) -> tuple[LinkImage, dict] | None:
    """(image, load record) of an entry stored under a load-input key, or None; an entry
    without a load record there is foreign: counted as corrupt, removed."""
    found = _get(k, load=True)
    return found


def reject(k: str) -> None:
    """Count the entry of ``k`` as corrupt and remove it (its contents passed the checks of
    :func:`get_load` but cannot serve this load: a recipe naming a value it does not have)."""
    _count("corrupt")
    root = directory()
    if root is not None:
        try:
            os.unlink(_path(root, k))
        except OSError:
            pass


def _get(k: str, load: bool = False):
    root = directory()
    if root is None:
        return None
    path = _path(root, k)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        _count("misses")
        return None
    except OSError:
        _count("errors")
        return None
    try:
        magic, digest, length = _HEAD.unpack_from(blob)
        payload = blob[_HEAD.size:]
        if magic != _MAGIC or length != len(payload) \
                or hashlib.sha256(k.encode() + payload).digest() != digest:
            raise ValueError("checksum")
        image, record = _decode(payload)
        if load and record is None:
            raise ValueError("no load record")
    except Exception:  # damaged, truncated or foreign: never placed, compiled again
        _count("corrupt")
        _count("misses")
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    try:
        os.utime(path)   # least recently used = oldest modification time
    except OSError:
        pass
    _count("hits")
    return image, record


def put(k: str, image: LinkImage, load: dict | None = None) -> None:
    """Store ``image`` under ``k`` (atomically: temporary file, then rename); never raises.
    ``load``: the record a load-input key's entry carries (:func:`get_load`)."""
    root = directory()
    if root is None:
        return
    payload = _encode(image, load)
    blob = _HEAD.pack(_MAGIC, hashlib.sha256(k.encode() + payload).digest(), len(payload)) \
        + payload
    path = _path(root, k)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        _count("errors")
        return
    _count("stores")
    _maybe_evict(root, len(blob))


def _entries(root: str) -> list[tuple[float, int, str]]:
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
            if not name.endswith(_SUFFIX):
                continue
            p = os.path.join(d, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            out.append((st.st_mtime, st.st_size, p))
    return out


# Bytes this process believes the directory holds: one scan, then its own stores added; a
# scan again when that passes the bound or every _RESCAN stores (other processes write too).
_estimate: dict[str, int] = {}
_since_scan: dict[str, int] = {}
_RESCAN = 256


def _maybe_evict(root: str, added: int) -> None:
    with _lock:
        known = root in _estimate
        _estimate[root] = _estimate.get(root, 0) + added
        _since_scan[root] = _since_scan.get(root, 0) + 1
        due = not known or _estimate[root] > limit() or _since_scan[root] >= _RESCAN
        if due:
            _since_scan[root] = 0
    if due:
        total = _evict(root)
        with _lock:
            _estimate[root] = total


def _evict(root: str) -> int:
    """Remove the least recently used entries down to 90% of the bound when over it; returns
    the bytes left."""
    bound = limit()
    entries = _entries(root)
    total = sum(size for _, size, _ in entries)
    if total <= bound:
        return total
    removed = 0
    for _, size, p in sorted(entries):
        if total <= bound * 0.9:
            break
        try:
            os.unlink(p)
        except OSError:
            continue
        total -= size
        removed += 1
    _count("evicted", removed)
    return total


def counters() -> dict:
    """This process's counters: hits, misses, stores, corrupt, evicted, errors."""
    with _lock:
        return dict(_counters)


def stats() -> dict:
    """The cache's directory, entries, bytes and bound, and this process's counters."""
    root = directory()
    entries = _entries(root) if root else []
    return {"directory": root, "enabled": root is not None, "entries": len(entries),
            "bytes": sum(size for _, size, _ in entries), "limit": limit(), **counters()}


def clear() -> int:
    """Remove every entry; returns how many."""
    root = directory()
    if root is None:
        return 0
    n = 0
    with _lock:
        _estimate.pop(root, None)
    for _, _, p in _entries(root):
        try:
            os.unlink(p)
            n += 1
        except OSError:
            pass
    return n

