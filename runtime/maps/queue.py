"""BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK (kernel/bpf/queue_stack_maps.c).

Keyless maps of ``max_entries`` values, reached from BPF only through bpf_map_push_elem,
bpf_map_pop_elem and bpf_map_peek_elem. As in the kernel, the values live in a ring of
``max_entries + 1`` slots of ``value_size`` bytes (one slot stays free so that ``head == tail``
means empty), allocated once at ``data_address``; the u32 ``head``, ``tail`` and ``size`` follow
the :class:`MapHeader` at ``header.index``. Push writes at ``head``; a queue pops at ``tail``
(FIFO), a stack at ``head - 1`` (LIFO).

Kernel rules: key_size 0, value_size > 0, max_entries > 0 and flags within BPF_F_NUMA_NODE |
BPF_F_ACCESS_MASK, else -EINVAL (value_size over KMALLOC_MAX_SIZE: -E2BIG). Push takes BPF_ANY
or BPF_EXIST (anything else -EINVAL); when full it fails with -E2BIG unless BPF_EXIST, which drops
the oldest element to make room. Pop and peek of an empty map give -ENOENT. The lookup, update
and delete ops give NULL / -EINVAL. From user space, BPF_MAP_LOOKUP_ELEM (NULL key) peeks,
BPF_MAP_UPDATE_ELEM (NULL key) pushes, BPF_MAP_LOOKUP_AND_DELETE_ELEM pops (flags must be 0);
delete and get_next_key give EINVAL. A key is NULL when it is None or b"" (key_size is 0).

Python face: ``q.push(v, flags=0)``, ``q.pop()``, ``q.peek()`` (MapKeyError when empty),
``len(q)``, ``v in q``, iteration in pop order without consuming, ``clear()``, and ``dump()``:
bpftool's ``map peek`` line per element in pop order, then ``Found N elements`` (bpftool's own
dump of these maps shows nothing: it walks keys, and there are none).
"""
from __future__ import annotations

import ctypes
import errno
import struct
import threading

from pybpf.uapi import BPF_EXIST, BPF_F_ACCESS_MASK, BPF_F_NUMA_NODE, BPF_NOEXIST
from .base import HEADER_SIZE, KMALLOC_MAX_SIZE, Map, Memory, check, fail, hex_bytes

QUEUE_STACK_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK
_STATE = struct.Struct("<III")      # head, tail, size: the kernel's struct bpf_queue_stack order
STATE_SIZE = 16                     # keeps the elements 8-byte aligned


class QueueMap(Map):
    """BPF_MAP_TYPE_QUEUE: first in, first out."""

    type = "queue"
    lifo = False

    def _setup(self) -> None:
        # queue_stack_map_alloc_check
        check(self.max_entries and not self.key_size and self.value_size and
              not self.flags & ~QUEUE_STACK_CREATE_FLAG_MASK, errno.EINVAL,
              f"{self.type} needs key_size 0, value_size > 0, max_entries > 0 and known flags")
        check(self.value_size <= KMALLOC_MAX_SIZE, errno.E2BIG, "value_size too large")
        self.size = self.max_entries + 1
        self._mem = Memory(HEADER_SIZE + STATE_SIZE + self.size * self.value_size)
        self._place_header(self._mem)
        self._view = self._mem.view
        self.data_address = self._mem.address + HEADER_SIZE + STATE_SIZE
        h = self.header
        h.data, h.index, h.elem_size = self.data_address, self._mem.address + HEADER_SIZE, \
            self.value_size
        self._set(0, 0)
        self._lock = threading.Lock()

    # -- ring state ----------------------------------------------------------------------------
    def _get(self) -> tuple[int, int]:
        head, tail, _ = _STATE.unpack_from(self._view, HEADER_SIZE)
        return head, tail

    def _set(self, head: int, tail: int) -> None:
        _STATE.pack_into(self._view, HEADER_SIZE, head, tail, self.size)

    def _slot(self, i: int) -> bytes:
        return ctypes.string_at(self.data_address + i * self.value_size, self.value_size)

    def _order(self) -> list[int]:
        """Slots holding elements, in the order pops would take them."""
        head, tail = self._get()
        n = (head - tail) % self.size
        if self.lifo:
            return [(head - 1 - i) % self.size for i in range(n)]
        return [(tail + i) % self.size for i in range(n)]

    # -- the BPF face ----------------------------------------------------------------------------
    def map_push_elem(self, value: bytes, flags: int) -> int:
        if flags & BPF_NOEXIST or flags > BPF_EXIST:
            return -errno.EINVAL
        with self._lock:
            head, tail = self._get()
            if (head + 1) % self.size == tail:          # full
                if not flags & BPF_EXIST:
                    return -errno.E2BIG
                tail = (tail + 1) % self.size           # drop the oldest element
            ctypes.memmove(self.data_address + head * self.value_size, value, self.value_size)
            self._set((head + 1) % self.size, tail)
        return 0

    def _get_elem(self, delete: bool) -> bytes | int:
        with self._lock:
            head, tail = self._get()
            if head == tail:
                return -errno.ENOENT
            if self.lifo:
                index = (head - 1) % self.size
                if delete:
                    head = index
            else:
                index = tail
                if delete:
                    tail = (tail + 1) % self.size
            value = self._slot(index)
            self._set(head, tail)
        return value

    def map_pop_elem(self) -> bytes | int:
        return self._get_elem(True)

    def map_peek_elem(self) -> bytes | int:
        return self._get_elem(False)

    def map_mem_usage(self) -> int:
        return HEADER_SIZE + STATE_SIZE + self.size * self.value_size

    # -- the syscall face ------------------------------------------------------------------------
    def _null_key(self, key: bytes | None) -> None:
        # key_size is 0: a non-NULL key pointer is refused (__bpf_copy_key)
        check(not key, errno.EINVAL, f"{self.type} maps take a NULL key")

    def _sys_result(self, result: bytes | int, what: str) -> bytes:
        if isinstance(result, int):
            raise fail(f"{what} failed: {self.type} is empty" if result == -errno.ENOENT else
                       f"{what} failed: {errno.errorcode.get(-result, -result)}", -result)
        return result

    def sys_lookup(self, key: bytes | None = None) -> bytes:
        """BPF_MAP_LOOKUP_ELEM: peek."""
        self._sys_check(False)
        self._null_key(key)
        return self._sys_result(self.map_peek_elem(), "peek")

    def sys_update(self, key: bytes | None, value: bytes, flags: int = 0) -> None:
        """BPF_MAP_UPDATE_ELEM: push."""
        self._sys_check(True)
        self._null_key(key)
        check(len(value) == self.value_size, errno.EINVAL,
              f"value is {len(value)} bytes, expected {self.value_size}")
        err = self.map_push_elem(value, flags)
        check(err == 0, -err, f"push failed: {errno.errorcode.get(-err, -err)}")

    def sys_lookup_and_delete(self, key: bytes | None = None, flags: int = 0) -> bytes:
        """BPF_MAP_LOOKUP_AND_DELETE_ELEM: pop (needs read and write access)."""
        check(not flags, errno.EINVAL, f"{self.type} pops take no flags")
        self._sys_check(False)
        self._sys_check(True)
        self._null_key(key)
        return self._sys_result(self.map_pop_elem(), "pop")

    def sys_delete(self, key: bytes | None) -> None:
        self._sys_check(True)
        raise fail(f"{self.type} maps cannot delete by key", errno.EINVAL)

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        self._sys_check(False)
        raise fail(f"{self.type} maps have no keys", errno.EINVAL)

    def _raw_keys(self) -> list[bytes]:
        raise fail(f"{self.type} maps have no keys", errno.EINVAL)

    # -- the Python face -------------------------------------------------------------------------
    def push(self, value, flags: int = 0) -> None:
        self.sys_update(None, self._encode_value(value), flags)

    def pop(self):
        return self._decode_value(self.sys_lookup_and_delete())

    def peek(self):
        return self._decode_value(self.sys_lookup())

    def _raw_values(self) -> list[bytes]:
        self._sys_check(False)
        with self._lock:
            return [self._slot(i) for i in self._order()]

    def __len__(self) -> int:
        head, tail = self._get()
        return (head - tail) % self.size

    def __iter__(self):
        return iter(self.values())

    def __contains__(self, value) -> bool:
        return self._encode_value(value) in self._raw_values()

    def values(self) -> list:
        return [self._decode_value(v) for v in self._raw_values()]

    def items(self) -> list:
        raise fail(f"{self.type} maps have no keys", errno.EINVAL)

    def clear(self) -> None:
        self._sys_check(True)
        with self._lock:
            self._set(0, 0)

    def dump(self) -> str:
        lines = [f"value:{chr(10) if self.value_size > 16 else ' '}{hex_bytes(v)}"
                 for v in self._raw_values()]
        n = len(lines)
        lines.append(f"Found {n} element{'s' if n != 1 else ''}")
        return "\n".join(lines) + "\n"


class StackMap(QueueMap):
    """BPF_MAP_TYPE_STACK: last in, first out."""

    type = "stack"
    lifo = True
