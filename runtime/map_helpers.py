"""The BPF helpers and arena kfuncs that work on maps, as plain Python functions.

Two layers, for whoever registers them in a VM's helper and kfunc tables:

* functions taking the map object first, then the raw register values (u64 ints; pointers are
  real process addresses): :func:`map_lookup_elem`, :func:`map_update_elem`, ...,
  :func:`bpf_arena_alloc_pages`, :func:`bpf_arena_free_pages`, :func:`bpf_arena_reserve_pages`.
  They return r0 as the kernel does, negative errnos as u64 (``-EEXIST & (2**64 - 1)``).
* :func:`make_helpers` / :func:`make_kfuncs` bind them to a ``resolve_map(value) -> Map | None``
  that turns the map argument a program passes (the ld_imm64 map constant: ``map.address``, the
  map's :class:`~pybpf.runtime.maps.base.MapHeader`, as the kernel passes ``struct bpf_map *``; or
  the map's fd, see :func:`resolver`) into the map. Each entry is a :class:`MapHelper`: id, name,
  a function of u64 arguments only, and the kernel prototype (return and argument kinds from
  the one table, :mod:`pybpf.verifier.protos`) so an argument checker knows what each register
  holds.

Memory arguments are trusted: the verifier (or the interpreter's per-call checks, using the
prototypes) must have checked that ``key``/``value`` pointers cover ``key_size``/``value_size``
bytes. An unknown map argument raises MapError (EBADF), which aborts the run.

Tail calls are the interpreter's business; :func:`tail_call_target` is the lookup it needs and
:data:`MAX_TAIL_CALL_CNT` the chain limit.
"""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass
from typing import Callable, Iterable

from pybpf.errors import MapError
from pybpf.verifier import protos
from pybpf.uapi import MAX_TAIL_CALL_CNT

from .maps.arena import Arena
from .maps.base import Map
from .maps.prog_array import ProgArrayMap
from .maps.ringbuf import RingBuf

M64 = (1 << 64) - 1
__all__ = ["MapHelper", "make_helpers", "make_kfuncs", "resolver", "tail_call_target",
           "MAX_TAIL_CALL_CNT", "map_lookup_elem", "map_update_elem", "map_delete_elem",
           "map_push_elem", "map_pop_elem", "map_peek_elem", "map_lookup_percpu_elem",
           "ringbuf_output", "ringbuf_reserve", "ringbuf_submit", "ringbuf_discard",
           "ringbuf_query", "bpf_arena_alloc_pages", "bpf_arena_free_pages",
           "bpf_arena_reserve_pages"]


def _r0(value: int) -> int:
    return value & M64


# --- helpers on a map object ---------------------------------------------------------------------
def map_lookup_elem(m: Map, key: int) -> int:
    """bpf_map_lookup_elem: the value's address, or 0 (NULL)."""
    return m.map_lookup_elem(ctypes.string_at(key, m.key_size))


def map_update_elem(m: Map, key: int, value: int, flags: int) -> int:
    return _r0(m.map_update_elem(ctypes.string_at(key, m.key_size),
                                 ctypes.string_at(value, m.value_size), flags))


def map_delete_elem(m: Map, key: int) -> int:
    return _r0(m.map_delete_elem(ctypes.string_at(key, m.key_size)))


def map_push_elem(m: Map, value: int, flags: int) -> int:
    return _r0(m.map_push_elem(ctypes.string_at(value, m.value_size), flags))


def _pop_like(m: Map, result: bytes | int, value: int) -> int:
    if isinstance(result, int):
        if result == -errno.ENOENT:
            # the kernel's __queue_map_get/__stack_map_get zero the buffer on an empty map
            ctypes.memset(value, 0, m.value_size)
        return _r0(result)
    ctypes.memmove(value, result, len(result))
    return 0


def map_pop_elem(m: Map, value: int) -> int:
    return _pop_like(m, m.map_pop_elem(), value)


def map_peek_elem(m: Map, value: int) -> int:
    if getattr(m, "peek_reads_value", False):    # bloom_filter: tests the value it is given
        return _r0(m.map_peek_value(ctypes.string_at(value, m.value_size)))
    return _pop_like(m, m.map_peek_elem(), value)


def map_lookup_percpu_elem(m: Map, key: int, cpu: int) -> int:
    return m.map_lookup_percpu_elem(ctypes.string_at(key, m.key_size), cpu & 0xFFFFFFFF)


def ringbuf_output(rb: RingBuf, data: int, size: int, flags: int) -> int:
    return _r0(rb.output(ctypes.string_at(data, size) if size else b"", flags))


def ringbuf_reserve(rb: RingBuf, size: int, flags: int) -> int:
    """A sample pointer, or 0 (also for any flags, as the kernel)."""
    return 0 if flags else rb.reserve(size)


def ringbuf_submit(rb: RingBuf, sample: int, flags: int) -> int:
    rb.commit(sample, flags, discard=False)
    return 0


def ringbuf_discard(rb: RingBuf, sample: int, flags: int) -> int:
    rb.commit(sample, flags, discard=True)
    return 0


def ringbuf_query(rb: RingBuf, flags: int) -> int:
    return _r0(rb.query(flags))


def tail_call_target(prog_array: Map, index: int):
    """The program bpf_tail_call(ctx, prog_array, index) enters, or None to fall through."""
    return prog_array.get_prog(index) if isinstance(prog_array, ProgArrayMap) else None


# --- arena kfuncs --------------------------------------------------------------------------------
def bpf_arena_alloc_pages(arena: Map, addr: int, page_cnt: int, node_id: int, flags: int) -> int:
    """A user pointer to ``page_cnt`` fresh pages, or 0 (NULL) on any failure."""
    if not isinstance(arena, Arena):
        return 0
    node = node_id & 0xFFFFFFFF
    node = node - (1 << 32) if node >> 31 else node    # int node_id
    return arena.alloc_pages(addr & M64, page_cnt & 0xFFFFFFFF, node, flags & M64)


def bpf_arena_free_pages(arena: Map, ptr: int, page_cnt: int) -> int:
    if isinstance(arena, Arena):
        arena.free_pages(ptr & M64, page_cnt & 0xFFFFFFFF)
    return 0


def bpf_arena_reserve_pages(arena: Map, ptr: int, page_cnt: int) -> int:
    if not isinstance(arena, Arena):
        return _r0(-errno.EINVAL)
    return _r0(arena.reserve_pages(ptr & M64, page_cnt & 0xFFFFFFFF))


# --- binding to a VM -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MapHelper:
    """A helper or kfunc ready to register: ``fn`` takes u64 register values only."""

    id: int
    name: str
    fn: Callable[..., int]
    ret: str
    args: tuple[str, ...]


# name -> function; the prototype (return and argument kinds) is the table's, verifier.protos.
HELPER_FNS = {f.__name__: f for f in (
    map_lookup_elem, map_update_elem, map_delete_elem, map_push_elem, map_pop_elem,
    map_peek_elem, map_lookup_percpu_elem, ringbuf_output, ringbuf_reserve, ringbuf_submit,
    ringbuf_discard, ringbuf_query)}

KFUNC_FNS = {f.__name__: f for f in (
    bpf_arena_alloc_pages, bpf_arena_free_pages, bpf_arena_reserve_pages)}


def resolver(maps: Iterable[Map]) -> Callable[[int], Map | None]:
    """A ``resolve_map`` over ``maps`` accepting a map's address (``map.address``) or its fd."""
    by_value: dict[int, Map] = {}
    for m in maps:
        if m.fd is not None:
            by_value.setdefault(m.fd, m)
        by_value[m.address] = m
    return by_value.get


# helpers whose map must be a ring buffer (the verifier's map/func compatibility check; a
# program loaded unverified reaches them with any map)
_RINGBUF_ONLY = {"ringbuf_output", "ringbuf_reserve", "ringbuf_query"}


def _bind(fn, resolve_map, name: str):
    ringbuf_only = fn.__name__ in _RINGBUF_ONLY

    def bound(map_value: int, *args: int) -> int:
        m = resolve_map(map_value)
        if m is None:
            raise MapError(f"{name}: no map at 0x{map_value:x}", errno.EBADF)
        if ringbuf_only and not isinstance(m, RingBuf):
            raise MapError(f"{name}: map {m.name or m.fd} is a {m.type} map, not a ringbuf",
                           errno.EINVAL)
        return fn(m, *args)
    bound.__name__ = name
    return bound


def _bind_sample(fn, resolve_map, name: str):
    # submit/discard find their ring from the record header, as the kernel does.
    def bound(sample: int, flags: int) -> int:
        m = resolve_map(RingBuf.ring_of_sample(sample))
        if not isinstance(m, RingBuf):
            raise MapError(f"{name}: 0x{sample:x} is not a ring buffer sample", errno.EINVAL)
        return fn(m, sample, flags)
    bound.__name__ = name
    return bound


def make_helpers(resolve_map: Callable[[int], Map | None]) -> dict[int, MapHelper]:
    """The map helpers under their kernel ids, taking u64 register values only."""
    out = {}
    for name, fn in HELPER_FNS.items():
        proto = protos.helper_proto(name)
        bind = _bind if proto.args[0] == protos.ARG_CONST_MAP_PTR else _bind_sample
        out[proto.id] = MapHelper(proto.id, name, bind(fn, resolve_map, name), proto.ret,
                                  proto.args)
    return out


def make_kfuncs(resolve_map: Callable[[int], Map | None]) -> dict[int, MapHelper]:
    """The arena kfuncs under pybpf's kfunc ids (pybpf.kfunc_ids), taking u64 values only.

    A map argument that is not an arena gives what the kernel gives: NULL from alloc, nothing
    from free, -EINVAL from reserve.
    """
    out = {}
    for name, fn in KFUNC_FNS.items():
        def bound(map_value: int, *rest: int, _fn=fn) -> int:
            return _fn(resolve_map(map_value), *rest)
        bound.__name__ = name
        proto = protos.kfunc(name)
        out[proto.id] = MapHelper(proto.id, name, bound, proto.ret, proto.args)
    return out
