"""Map types, one module each, in the kernel map-ops style (imported as pybpf.runtime.maps).

:data:`MAP_TYPES` maps the kernel's type names (``bpftool`` spelling) to classes, and
:func:`create_map` is ``BPF_MAP_CREATE``: it validates the attributes with the kernel's rules and
errnos (a :class:`~pybpf.errors.MapError` otherwise) and returns the map.

>>> m = create_map("hash", key_size=4, value_size=8, max_entries=16)
>>> m[1] = 42
>>> int.from_bytes(m[1], "little")
42
>>> print(m.dump(), end="")
key: 01 00 00 00  value: 2a 00 00 00 00 00 00 00
Found 1 element
"""
from __future__ import annotations

import errno

from pybpf.errors import MapError
from pybpf.uapi import MAP_TYPE_NAMES

from .arena import Arena
from .array import ArrayMap
from .base import MAP_TYPE_IDS, Map, MapKeyError
from .bloom_filter import BloomFilterMap
from .hash import HashMap, LruHashMap
from .lpm_trie import LpmTrieMap
from .map_in_map import ArrayOfMapsMap, HashOfMapsMap
from .percpu import LruPercpuHashMap, PercpuArrayMap, PercpuHashMap
from .prog_array import ProgArrayMap
from .queue import QueueMap, StackMap
from .redirect import CpuMap, DevMap, DevMapHash, XskMap
from .ringbuf import RingBuf

MAP_TYPES: dict[str, type[Map]] = {cls.type: cls for cls in (
    HashMap, ArrayMap, ProgArrayMap, PercpuHashMap, PercpuArrayMap, LruHashMap,
    LruPercpuHashMap, RingBuf, Arena, QueueMap, StackMap, LpmTrieMap, BloomFilterMap,
    ArrayOfMapsMap, HashOfMapsMap, DevMap, DevMapHash, CpuMap, XskMap)}

__all__ = ["create_map", "MAP_TYPES", "Map", "MapKeyError", "Arena", "ArrayMap", "HashMap",
           "LruHashMap", "PercpuArrayMap", "PercpuHashMap", "LruPercpuHashMap", "ProgArrayMap",
           "RingBuf", "QueueMap", "StackMap", "LpmTrieMap", "BloomFilterMap", "ArrayOfMapsMap",
           "HashOfMapsMap", "DevMap", "DevMapHash", "CpuMap", "XskMap"]


def create_map(map_type: str | int, key_size: int = 0, value_size: int = 0,
               max_entries: int = 0, flags: int = 0, map_extra: int = 0,
               name: str | None = None, **kwargs) -> Map:
    """A new map of ``map_type`` (a kernel name such as "hash", or its enum value).

    ``kwargs`` go to the class: ``fd=`` (the VM's id), ``key_type=``/``value_type=``,
    ``n_cpus=`` (percpu types), ``max_runs=`` (arena), ``inner=`` (map-in-map: the inner
    map template, a map or a dict of create_map arguments).
    """
    if isinstance(map_type, int):
        if not 0 <= map_type < len(MAP_TYPE_NAMES):
            raise MapError(f"unsupported map type {map_type}", errno.EINVAL)
        map_type = MAP_TYPE_NAMES[map_type]
    cls = MAP_TYPES.get(str(map_type).lower().removeprefix("bpf_map_type_"))
    if cls is None:
        raise MapError(f"unsupported map type {map_type!r} (supported: "
                       f"{', '.join(sorted(MAP_TYPES))})", errno.EINVAL)
    return cls(key_size, value_size, max_entries, flags, map_extra, name=name, **kwargs)
