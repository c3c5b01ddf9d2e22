"""The verifier's verdicts, cached on disk beside the JIT's code (issue 13).

A warm JIT load takes well under a millisecond, but the verifier takes tens to hundreds of
milliseconds on a 200-instruction program; :func:`verify` answers a program verified before
(in this process or another) from a content-addressed entry instead.

The key (SHA-256) covers everything the verifier reads:

* the program: its instruction bytes and every attribute the verifier reads (``PROG_ATTRS``:
  names, license, sleepable, BTF func_info and the BTF itself, line info and source lines);
* the program type, expected attach type and log level; the loader's privilege (pybpf
  verifies as a privileged loader, always);
* the environment, by the answer to every question the verifier can ask it about this
  program: the prototype of each helper and kfunc it calls, the description of each map its
  ``ld_imm64`` instructions name (by fd or by index; a map-in-map's inner template; which
  answers are the same map object and fd, not their numbers; what the verifier reads of the
  map object: its spin lock offset, BTF, graph roots, and the value bytes a constant string
  argument may be read from), the context rules, the arena (presence, user address, flags);
* the entry format and a digest of pybpf's own source (so any change of the verifier, its
  prototype table or its context rules changes every key).

A miss runs the verifier with an environment that records the questions it is actually asked:
a verdict is stored only when each was among those the key answers (else it counts as
``uncacheable``), only for an accepted program (a rejection is never stored: it is verified
again, and rejected again, each time) and only when the result holds nothing but plain data.
The value is the verdict's :class:`~pybpf.verifier.VerifyResult`: its facts (the JIT's pointer
kinds and arena classification per instruction), ``max_ctx_offset``, stack depths and stats.
A request for a log (``log_level`` > 0) and a structural-only check are never answered from
the cache: they run the verifier. Entries are JSON behind the checksum of
:mod:`pybpf.diskcache`; a damaged, truncated or foreign entry, or one whose structure does not
hold, is counted corrupt, removed and verified again. ``PYBPF_VERDICT_CACHE=off`` turns this
cache off alone (``PYBPF_JIT_CACHE=off`` turns off both).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref

from pybpf import diskcache
from pybpf.verifier import VerifyResult, bprintf, verify as _verify
from pybpf.verifier.facts import Facts

FORMAT = 1
MAGIC = b"PYBPFVFY"
SUFFIX = ".vfy"
# The program attributes the verifier reads (tests/test_verdicts.py checks the verifier's
# source for others): each is part of the key.
PROG_ATTRS = ("insns", "functions", "labels", "name", "license", "sleepable", "func_info",
              "btf", "line_info", "lines")
# What the verifier reads of a map object (MapInfo.value) besides its identity
VALUE_ATTRS = ("map_direct_value_addr", "spin_lock_off", "btf", "graph_roots", "kptr_fields")
_RESULT_FIELDS = {"log", "facts", "stats", "max_ctx_offset", "stack_depth", "full",
                  "min_ctx_offset"}
_FACTS_FIELDS = {"_seen", "_access"}

_counters = diskcache.Counters("hits", "misses", "stores", "corrupt", "uncacheable", "evicted",
                               "errors")
_btf_digests: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _Uncacheable(Exception):
    """Something the key cannot describe: verify without the cache."""


def enabled() -> bool:
    return os.environ.get("PYBPF_VERDICT_CACHE", "").lower() not in ("off", "0", "no", "false") \
        and diskcache.directory() is not None


def counters() -> dict:
    """This process's counters: hits, misses, stores, corrupt, uncacheable, evicted, errors."""
    return _counters.snapshot()


def stats() -> dict:
    root = diskcache.directory()
    found = diskcache.entries(root, (SUFFIX,)) if root else []
    return {"entries": len(found), "bytes": sum(size for _, size, _ in found),
            "limit": diskcache.limit(SUFFIX), **counters()}


def clear() -> int:
    return diskcache.clear((SUFFIX,))


def verify(prog, env, *, prog_type: str, log_level: int = 0, full: bool = True,
           attach_type: str | None = None) -> VerifyResult:
    """:func:`pybpf.verifier.verify`, answered from the cache when this exact question (program,
    type, attach type, environment, pybpf source) was answered "accepted" before."""
    if not full or log_level or not enabled():
        return _verify(prog, env, prog_type=prog_type, log_level=log_level, full=full,
                       attach_type=attach_type)
    try:
        k, asked = _key(prog, env, prog_type, attach_type, log_level)
    except _Uncacheable:
        _counters.add("uncacheable")
        return _verify(prog, env, prog_type=prog_type, log_level=log_level, full=full,
                       attach_type=attach_type)
    payload = diskcache.read(k, MAGIC, SUFFIX, _counters)
    if payload is not None:
        try:
            result = _decode(payload, k)
        except Exception:       # damaged or foreign structure: never trusted, verified again
            diskcache.discard(k, SUFFIX, _counters)
            _counters.add("misses")
        else:
            _counters.add("hits")
            return result
    recorder = _Recording(env)
    result = _verify(prog, recorder, prog_type=prog_type, log_level=log_level, full=full,
                     attach_type=attach_type)          # VerifierError: nothing stored
    if not recorder.asked <= asked:
        _counters.add("uncacheable")         # the verifier asked something the key misses
        return result
    try:
        payload = _encode(result, k)
    except _Uncacheable:
        _counters.add("uncacheable")
        return result
    diskcache.write(k, payload, MAGIC, SUFFIX, _counters)
    return result


# -- the key -------------------------------------------------------------------------------------
def _key(prog, env, prog_type, attach_type, log_level) -> tuple[str, set]:
    """(key, the questions to the environment it answers)."""
    ids: dict[int, int] = {}
    h = hashlib.sha256()
    h.update(f"verdict format={FORMAT}\nsource={diskcache.source_digest()}\n"
             f"privileged=1\n".encode())
    h.update(repr((prog_type, attach_type, log_level)).encode())
    h.update(prog.to_bytes())
    for attr in PROG_ATTRS[1:]:
        value = getattr(prog, attr, None)
        if attr == "btf":
            h.update(b"btf=" + (b"-" if value is None else _btf_digest(value)))
        else:
            h.update(f"\n{attr}=".encode() + repr(_canon(value, ids)).encode())
    asked = set()
    for pc, form, insn in prog.instructions():
        q = None
        if form.kind == "call" and form.op == "helper":
            q = ("helper", insn.imm)
        elif form.kind == "call" and form.op == "kfunc":
            q = ("kfunc", insn.imm)
        elif form.kind == "lddw" and form.op in ("map_fd", "map_value"):
            q = ("map_by_fd", insn.imm)
        elif form.kind == "lddw" and form.op in ("map_idx", "map_idx_value"):
            q = ("map_by_index", insn.imm)
        if q is not None:
            asked.add(q)
    asked |= {("has_arena",), ("arena_info",), ("ctx_rules", prog_type)}
    for q in sorted(asked, key=repr):
        h.update(repr((q, _canon(_answer(env, q), ids))).encode())
    return h.hexdigest(), asked


def _answer(env, q: tuple):
    attr = getattr(env, q[0])
    if len(q) == 1:
        return attr
    answer = attr(*q[1:])
    if q[0] in ("helper", "kfunc") and answer is not None:
        # the verifier reads a registry entry's prototype only (verifier/calls.py proto_of)
        answer = ("entry", getattr(answer, "prototype", answer))
    return answer


def _canon(x, ids: dict):
    """A description of ``x`` whose repr is the same for equal values in any process: sets
    sorted, dataclasses by field, runtime objects (a map behind a MapInfo) by the order they
    first appeared (the verifier compares them by identity only)."""
    if x is None or isinstance(x, (bool, int, float, str, bytes)):
        return x
    if isinstance(x, (tuple, list)):
        return (type(x).__name__, [_canon(v, ids) for v in x])
    if isinstance(x, (set, frozenset)):
        return ("set", sorted(repr(_canon(v, ids)) for v in x))
    if isinstance(x, dict):
        return ("dict", sorted(((repr(_canon(k, ids)), _canon(v, ids)) for k, v in x.items()),
                               key=lambda kv: kv[0]))
    if type(x).__name__ == "BTF" and hasattr(x, "types") and hasattr(x, "strings"):
        return ("btf", _btf_digest(x).decode())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        out = [type(x).__qualname__]
        for f in dataclasses.fields(x):
            v = getattr(x, f.name)
            if type(x).__name__ == "MapInfo" and f.name in ("value", "fd") and v is not None:
                # the map object and the fd a VM gave it differ between VMs and processes; the
                # verifier compares them (equality only) and prints the fd: their pattern is
                # the key, the numbers only in messages of rejections, which are not cached.
                # Of the map object it reads VALUE_ATTRS: those are the key too.
                tag = ("fd", v) if f.name == "fd" else id(v)
                out.append((f.name, ("obj", ids.setdefault(tag, len(ids))),
                            _map_reads(x) if f.name == "value" else None))
            else:
                out.append((f.name, _canon(v, ids)))
        return tuple(out)
    raise _Uncacheable(type(x).__name__)


def _map_reads(info) -> tuple:
    """What the verifier reads of the map object behind a MapInfo (``VALUE_ATTRS``): its
    spin lock offset, whether it has BTF, its value's bytes where a helper's constant string
    argument is read from it (verifier/bprintf.py; hashed, whatever the map's flags: a map
    whose contents change gets a new key) and its graph roots (bpf_list_head, bpf_rb_root)."""
    value = info.value
    raw = bprintf.map_value_bytes(info)
    return (getattr(value, "spin_lock_off", -1), bool(getattr(value, "btf", False)),
            None if raw is None else hashlib.sha256(raw).hexdigest(),
            _canon(getattr(value, "graph_roots", None) or {}, {}),
            _canon(getattr(value, "kptr_fields", None) or {}, {}))


def _btf_digest(btf) -> bytes:
    """The digest of a BTF object (types and strings), once per object."""
    try:
        d = _btf_digests.get(btf)
    except TypeError:
        d = None
    if d is None:
        d = hashlib.sha256(repr((_canon(list(btf.types), {}), bytes(btf.strings)))
                           .encode()).hexdigest().encode()
        try:
            _btf_digests[btf] = d
        except TypeError:
            pass
    return d


class _Recording:
    """The verifier's environment, noting each question asked (``asked``, as :func:`_key`
    names them)."""

    def __init__(self, env) -> None:
        self._env = env
        self.asked: set = set()

    def helper(self, id):
        self.asked.add(("helper", id))
        return self._env.helper(id)

    def kfunc(self, name_or_btf_id):
        self.asked.add(("kfunc", name_or_btf_id))
        return self._env.kfunc(name_or_btf_id)

    def map_by_fd(self, fd):
        self.asked.add(("map_by_fd", fd))
        return self._env.map_by_fd(fd)

    def map_by_index(self, index):
        self.asked.add(("map_by_index", index))
        return self._env.map_by_index(index)

    def ctx_rules(self, prog_type):
        self.asked.add(("ctx_rules", prog_type))
        return self._env.ctx_rules(prog_type)

    @property
    def has_arena(self):
        self.asked.add(("has_arena",))
        return self._env.has_arena

    @property
    def arena_info(self):
        self.asked.add(("arena_info",))
        return self._env.arena_info

    def __getattr__(self, name):
        # anything else the verifier reads of its environment: not covered by the key
        self.asked.add(("?", name))
        return getattr(self._env, name)


# -- the value -----------------------------------------------------------------------------------
def _kind_ok(k) -> bool:
    return k is None or isinstance(k, tuple) and bool(k) and isinstance(k[0], str) and all(
        v is None or type(v) in (int, str) for v in k)


def _encode(result: VerifyResult, k: str) -> bytes:
    facts = result.facts
    if {f.name for f in dataclasses.fields(result)} != _RESULT_FIELDS or facts is None \
            or type(facts) is not Facts or set(vars(facts)) != _FACTS_FIELDS:
        raise _Uncacheable("result")
    seen = []
    for pc, entry in facts._seen.items():
        base, kind = entry
        if type(pc) is not int or type(base) is not int or not _kind_ok(kind):
            raise _Uncacheable("facts")
        seen.append([pc, base, None if kind is None else list(kind)])
    access = []
    for pc, kinds in facts._access.items():
        if type(pc) is not int or not all(type(v) is int for v in kinds):
            raise _Uncacheable("facts")
        access.append([pc, sorted(kinds)])
    plain = (result.stats, result.stack_depth)
    if not all(type(a) in (int, str) and type(b) is int for d in plain for a, b in d.items()) \
            or type(result.max_ctx_offset) is not int or not isinstance(result.log, str) \
            or type(result.min_ctx_offset) is not int:
        raise _Uncacheable("result")
    value = {"key": k, "log": result.log, "full": bool(result.full),
             "max_ctx_offset": result.max_ctx_offset, "min_ctx_offset": result.min_ctx_offset,
             "stats": result.stats,
             "stack_depth": sorted(result.stack_depth.items()), "seen": seen, "access": access}
    return json.dumps(value, separators=(",", ":")).encode()


def _int(v) -> int:
    if type(v) is not int:
        raise ValueError("not an int")
    return v


def _decode(payload: bytes, k: str) -> VerifyResult:
    """The VerifyResult of an entry; ValueError (or KeyError/TypeError) for anything that does
    not have the shape :func:`_encode` writes, or an entry stored under another key."""
    v = json.loads(payload)
    if v["key"] != k or not isinstance(v["log"], str) or type(v["full"]) is not bool:
        raise ValueError("foreign entry")
    seen = {}
    for pc, base, kind in v["seen"]:
        kind = None if kind is None else tuple(kind)
        if not _kind_ok(kind):
            raise ValueError("bad kind")
        seen[_int(pc)] = (_int(base), kind)
    access = {_int(pc): {_int(t) for t in kinds} for pc, kinds in v["access"]}
    stats = {str(a): _int(b) for a, b in v["stats"].items()}
    depth = {_int(a): _int(b) for a, b in v["stack_depth"]}
    return VerifyResult(log=v["log"], facts=Facts(seen, access), stats=stats,
                        max_ctx_offset=_int(v["max_ctx_offset"]), stack_depth=depth,
                        full=v["full"], min_ctx_offset=_int(v["min_ctx_offset"]))
