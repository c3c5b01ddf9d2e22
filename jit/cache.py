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
this process sees them, FastISel), the llvmlite version (which pins its LLVM), the Python
version (the code calls its C API), pybpf's version, a digest of pybpf's own source and the
cache format.

Where and how (:mod:`pybpf.diskcache`, shared with the verifier's verdicts): under
``$PYBPF_JIT_CACHE`` (``off``: no cache) or ``$XDG_CACHE_HOME/pybpf/jit``, one file per entry,
``<key[:2]>/<key>.jit``: a magic, the SHA-256 of key and payload, the payload's length, then
the payload (a JSON header: sizes, symbols, fixups, externals, sections; then the image's
bytes). Nothing in an entry is executable Python (no pickle): a damaged, truncated or foreign
entry (one whose checksum, length, key or structure does not match) is counted, deleted and
compiled again, never placed. Writes are atomic (temporary file, rename); the directory is
bounded with least-recently-used eviction (``PYBPF_JIT_CACHE_SIZE``, default 64 MiB).

``stats()`` and ``clear()`` back ``pybpf jit --cache stats|clear``.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys

from pybpf import diskcache
from pybpf.diskcache import DEFAULT_LIMIT, directory  # noqa: F401  (this module's API)
from pybpf.jit.link import Fixup, LinkImage

FORMAT = 2
_MAGIC = b"PYBPFJIT"
_HEAD = diskcache.HEAD                  # magic, sha256(key + payload), payload length
_SUFFIX = ".jit"

_counters = diskcache.Counters("hits", "misses", "stores", "corrupt", "evicted", "errors")
_salt: bytes | None = None
_source_digest = diskcache.source_digest


def limit() -> int:
    """The code entries' bound in bytes (``PYBPF_JIT_CACHE_SIZE``)."""
    return diskcache.limit(_SUFFIX)


def _cpu() -> str:
    """The CPU as LLVM's host detection would see it: model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().split("\n\n")[0].splitlines()
    except OSError:
        return "unknown"
    keep = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags")
    return "\n".join(line for line in lines if line.split(":")[0].strip() in keep)


def _codegen_salt() -> bytes:
    """Everything besides the IR that decides the bytes: versions and code generator settings."""
    global _salt
    if _salt is None:
        import llvmlite

        import pybpf

        # pybpf.__version__, not importlib.metadata (tens of ms in a fresh process); the
        # source digest covers every change anyway
        parts = [f"format={FORMAT}", f"pybpf={pybpf.__version__}", f"source={_source_digest()}",
                 f"llvmlite={llvmlite.__version__}", f"python={sys.version}", _cpu()]
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


def _count(name: str, n: int = 1) -> None:
    _counters.add(name, n)


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
    diskcache.discard(k, _SUFFIX, _counters)


def _get(k: str, load: bool = False):
    payload = diskcache.read(k, _MAGIC, _SUFFIX, _counters)
    if payload is None:
        return None
    try:
        image, record = _decode(payload)
        if load and record is None:
            raise ValueError("no load record")
    except Exception:  # damaged or foreign: never placed, compiled again
        diskcache.discard(k, _SUFFIX, _counters)
        _count("misses")
        return None
    _count("hits")
    return image, record


def put(k: str, image: LinkImage, load: dict | None = None) -> None:
    """Store ``image`` under ``k`` (atomically: temporary file, then rename); never raises.
    ``load``: the record a load-input key's entry carries (:func:`get_load`)."""
    diskcache.write(k, _encode(image, load), _MAGIC, _SUFFIX, _counters)


def counters() -> dict:
    """This process's counters: hits, misses, stores, corrupt, evicted, errors."""
    return _counters.snapshot()


def stats() -> dict:
    """The cache's directory, entries, bytes and bound, and this process's counters (the
    code's; :func:`pybpf.verdicts.stats` gives the verdicts')."""
    root = directory()
    entries = diskcache.entries(root, (_SUFFIX,)) if root else []
    return {"directory": root, "enabled": root is not None, "entries": len(entries),
            "bytes": sum(size for _, size, _ in entries), "limit": limit(), **counters()}


def clear() -> int:
    """Remove every code entry; returns how many."""
    return diskcache.clear((_SUFFIX,))
