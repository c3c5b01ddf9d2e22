"""Redirect target maps: devmap, devmap_hash, cpumap and xskmap (kernel/bpf/devmap.c, cpumap.c,
net/xdp/xskmap.c), as ``bpf_redirect_map`` uses them.

Attribute checks are the kernel's (EINVAL otherwise): key_size 4; a devmap value is
``struct bpf_devmap_val`` (4 bytes: ifindex, or 8: ifindex and a program fd), a cpumap value
``struct bpf_cpumap_val`` (4: qsize, or 8: qsize and a program fd), an xskmap value a socket
(4 bytes); max_entries > 0 (devmap_hash at most 2**31; cpumap at most NR_CPUS, 256 on the reference kernel, E2BIG); flags
NUMA_NODE, RDONLY, WRONLY (cpumap: NUMA_NODE only).

Updates follow the kernel: flags above BPF_EXIST are -EINVAL; a devmap index past the end is
-E2BIG and BPF_NOEXIST is -EEXIST (every slot "exists"), ifindex 0 clears the slot; a device must
exist (``dev_get_by_index``: the VM's :class:`~pybpf.runtime.fib.FibTable` devices, -EINVAL
otherwise); a devmap_hash takes at most max_entries keys (-E2BIG) and needs an ifindex; a cpumap
qsize above 16384 is -EOVERFLOW, a CPU that is not possible -ENODEV, qsize 0 deletes. Programs
attached to entries (the value's fd) are not supported: a positive fd is refused as the kernel
refuses an fd that is not a devmap/cpumap program (-EINVAL, cpumap -ENOMEM).

An xskmap holds AF_XDP sockets, which pybpf cannot create: from Python any object stands for a
socket (``m[i] = "queue0"``); ``sys_update`` takes the fd as an int; user-space lookups fail with
-EOPNOTSUPP as in the kernel (``xsk_map_lookup_elem_sys_only``).

BPF programs may ``bpf_map_lookup_elem`` a devmap or devmap_hash (the kernel returns the
entry's ``struct bpf_devmap_val``, read-only here); ``redirect_target(index)`` is
``bpf_redirect_map``'s lookup (None when the key has no entry).
"""
from __future__ import annotations

import errno
import struct

from pybpf.uapi import BPF_EXIST, BPF_F_NUMA_NODE, BPF_F_RDONLY, BPF_F_WRONLY, BPF_NOEXIST

from .base import HEADER_SIZE, Map, Memory, check

DEV_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY
CPU_MAP_MAX_QSIZE = 16384
NR_CPUS = 256          # CONFIG_NR_CPUS of the kernel pybpf follows (measured: 257 entries is E2BIG)
_SLOT = 8               # struct bpf_devmap_val / bpf_cpumap_val: u32 + u32 (prog fd or id)
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


def _possible_cpus() -> int:
    from pybpf.verifier.calls import NR_CPU_IDS     # /sys/devices/system/cpu/possible
    return NR_CPU_IDS


class _RedirectMap(Map):
    """Shared parts: u32 keys, entries by index, 8-byte value slots BPF lookups may read."""

    key_default = int
    value_sizes = (4, 8)
    flag_mask = DEV_CREATE_FLAG_MASK
    hashed = False          # devmap_hash: any u32 key, at most max_entries of them

    def _setup(self) -> None:
        check(self.max_entries and self.key_size == 4 and self.value_size in self.value_sizes
              and not self.flags & ~self.flag_mask, errno.EINVAL,
              f"{self.type} needs key_size 4, value_size "
              f"{' or '.join(map(str, self.value_sizes))}, max_entries > 0 and known flags")
        self._check_more()
        self._mem = Memory(HEADER_SIZE + _SLOT * self.max_entries)
        self._place_header(self._mem)
        self.data_address = self._mem.address + HEADER_SIZE
        self.header.data, self.header.elem_size = self.data_address, _SLOT
        self.stride = _SLOT
        self._entries: dict[int, object] = {}       # key -> value (bytes, or an xsk object)
        self._slots: dict[int, int] = {}            # key -> slot index (BPF lookups)
        self._free = list(range(self.max_entries - 1, -1, -1)) if self.hashed else None
        self.devices = None     # callable: ifindex -> bool (the VM's FibTable), None: any

    def _check_more(self) -> None:
        pass

    # -- storage ----------------------------------------------------------------------------
    def _slot_address(self, key: int) -> int:
        return self.data_address + _SLOT * self._slots[key]

    def _store(self, key: int, value: bytes) -> None:
        if key not in self._slots:
            self._slots[key] = self._free.pop() if self.hashed else key
        self._entries[key] = value
        self._mem.view[self._slot_address(key) - self._mem.address:][:_SLOT] = \
            value.ljust(_SLOT, b"\0")[:_SLOT]

    def map_delete_elem(self, key: bytes) -> int:
        """Array-indexed delete (devmap, cpumap, xskmap): past the end is EINVAL."""
        k = _U32.unpack(key)[0]
        if k >= self.max_entries:
            return -errno.EINVAL
        self._drop(k)
        return 0

    def _drop(self, key: int) -> bool:
        if key not in self._entries:
            return False
        del self._entries[key]
        slot = self._slots.pop(key)
        off = HEADER_SIZE + _SLOT * slot
        self._mem.view[off:off + _SLOT] = bytes(_SLOT)
        if self.hashed:
            self._free.append(slot)
        return True

    def redirect_target(self, index: int):
        """bpf_redirect_map's lookup_elem: the entry's value for ``index`` (u32), or None."""
        return self._entries.get(index)

    # -- BPF face -----------------------------------------------------------------------------
    def _value_base(self, key: bytes) -> int:
        k = _U32.unpack(key)[0]
        return self._slot_address(k) if k in self._entries else 0

    def regions(self) -> list[tuple[int, int, bool]]:
        return [(self.data_address, _SLOT * self.max_entries, False)]

    def region_rule(self) -> dict:
        return {"stride": _SLOT, "lo": 0, "hi": self.value_size}

    def map_mem_usage(self) -> int:
        return _SLOT * self.max_entries

    # -- syscall face -------------------------------------------------------------------------
    def _raw_keys(self) -> list[bytes]:
        if self.hashed:
            return [_U32.pack(k) for k in self._entries]
        return [_U32.pack(i) for i in range(self.max_entries)]   # array-like get_next_key

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        self._sys_check(False)
        if self.hashed:
            return super().sys_get_next_key(key)
        index = _U32.unpack(self._key(key))[0] if key is not None else self.max_entries
        if index >= self.max_entries:
            return _U32.pack(0)
        check(index != self.max_entries - 1, errno.ENOENT, "no next key")
        return _U32.pack(index + 1)

    def sys_lookup(self, key: bytes) -> bytes:
        self._sys_check(False)
        k = _U32.unpack(self._key(key))[0]
        check(k in self._entries, errno.ENOENT, f"key {k} not found")
        return bytes(self._entries[k])[:self.value_size].ljust(self.value_size, b"\0")

    def sys_update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self._sys_check(True)
        check(len(value) == self.value_size, errno.EINVAL,
              f"value is {len(value)} bytes, expected {self.value_size}")
        err = self._update(self._key(key), value, flags, False)
        check(err == 0, -err, f"update of key {_U32.unpack(key)[0]} failed: "
                              f"{errno.errorcode.get(-err, -err)}")

    def _device_ok(self, ifindex: int) -> bool:
        return self.devices is None or self.devices(ifindex)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list:
        return [(k, self._decode_value(self.sys_lookup(_U32.pack(k))))
                for k in sorted(self._entries)]

    def clear(self) -> None:
        for k in list(self._entries):
            self._drop(k)


class DevMap(_RedirectMap):
    """BPF_MAP_TYPE_DEVMAP: index -> ``struct bpf_devmap_val`` (ifindex[, prog fd])."""

    type = "devmap"

    def _value(self, value: bytes) -> tuple[int, int]:
        ifindex = _U32.unpack_from(value)[0]
        fd = _I32.unpack_from(value, 4)[0] if len(value) >= 8 else 0
        return ifindex, fd

    def _new_entry(self, ifindex: int, fd: int) -> int:
        """__dev_map_alloc_node: 0, or -errno."""
        if not self._device_ok(ifindex):
            return -errno.EINVAL        # dev_get_by_index failed
        if fd > 0:
            return -errno.EINVAL        # not a BPF_XDP_DEVMAP program (pybpf has none)
        return 0

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        i = _U32.unpack(key)[0]
        if flags > BPF_EXIST:
            return -errno.EINVAL
        if i >= self.max_entries:
            return -errno.E2BIG
        if flags == BPF_NOEXIST:
            return -errno.EEXIST
        ifindex, fd = self._value(value)
        if not ifindex:
            if fd > 0:
                return -errno.EINVAL    # can not specify fd if ifindex is 0
            self._drop(i)
            return 0
        err = self._new_entry(ifindex, fd)
        if err:
            return err
        self._store(i, _U32.pack(ifindex) + bytes(4))   # bpf_prog.id 0: no program
        return 0


class DevMapHash(DevMap):
    """BPF_MAP_TYPE_DEVMAP_HASH: any u32 key -> ``struct bpf_devmap_val``."""

    type = "devmap_hash"
    hashed = True

    def _check_more(self) -> None:
        check(self.max_entries <= 1 << 31, errno.EINVAL,
              "devmap_hash max_entries must be at most 2**31")

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        k = _U32.unpack(key)[0]
        ifindex, fd = self._value(value)
        if flags > BPF_EXIST or not ifindex:
            return -errno.EINVAL
        old = k in self._entries
        if old and flags & BPF_NOEXIST:
            return -errno.EEXIST
        err = self._new_entry(ifindex, fd)
        if err:
            return err
        if not old and len(self._entries) >= self.max_entries:
            return -errno.E2BIG
        self._store(k, _U32.pack(ifindex) + bytes(4))
        return 0

    def map_delete_elem(self, key: bytes) -> int:
        return 0 if self._drop(_U32.unpack(key)[0]) else -errno.ENOENT


class CpuMap(_RedirectMap):
    """BPF_MAP_TYPE_CPUMAP: CPU -> ``struct bpf_cpumap_val`` (qsize[, prog fd])."""

    type = "cpumap"
    flag_mask = BPF_F_NUMA_NODE

    def _check_more(self) -> None:
        check(self.max_entries <= NR_CPUS, errno.E2BIG, f"cpumap has at most {NR_CPUS} CPUs")

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        cpu = _U32.unpack(key)[0]
        qsize = _U32.unpack_from(value)[0]
        fd = _I32.unpack_from(value, 4)[0] if len(value) >= 8 else 0
        if flags > BPF_EXIST:
            return -errno.EINVAL
        if cpu >= self.max_entries:
            return -errno.E2BIG
        if flags == BPF_NOEXIST:
            return -errno.EEXIST
        if qsize > CPU_MAP_MAX_QSIZE:
            return -errno.EOVERFLOW
        if cpu >= _possible_cpus():
            return -errno.ENODEV
        if not qsize:
            self._drop(cpu)         # same as deleting
            return 0
        if fd > 0:
            return -errno.ENOMEM    # __cpu_map_entry_alloc fails: not a BPF_XDP_CPUMAP program
        self._store(cpu, _U32.pack(qsize) + bytes(4))
        return 0

    def _value_base(self, key: bytes) -> int:
        return 0        # BPF programs cannot look a cpumap up (only bpf_redirect_map)

    def regions(self) -> list[tuple[int, int, bool]]:
        return []


class XskMap(_RedirectMap):
    """BPF_MAP_TYPE_XSKMAP: queue index -> AF_XDP socket (any Python object stands for one)."""

    type = "xskmap"
    value_sizes = (4,)

    def _update(self, key: bytes, value, flags: int, onallcpus: bool) -> int:
        i = _U32.unpack(key)[0]
        if flags > BPF_EXIST:
            return -errno.EINVAL
        if i >= self.max_entries:
            return -errno.E2BIG
        old = i in self._entries
        if old and flags == BPF_NOEXIST:
            return -errno.EEXIST
        if not old and flags == BPF_EXIST:
            return -errno.ENOENT
        self._entries[i] = value
        return 0

    def _drop(self, key: int) -> bool:
        return self._entries.pop(key, None) is not None

    def update(self, key, sock, flags: int = 0) -> None:
        """Put ``sock`` (anything standing for an AF_XDP socket) at index ``key``."""
        self._sys_check(True)
        check(sock is not None, errno.EINVAL, "no socket given")
        err = self._update(self.key_codec.encode(key), sock, flags, False)
        check(err == 0, -err, f"update of key {key} failed: {errno.errorcode.get(-err, -err)}")

    __setitem__ = update

    def sys_update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self._sys_check(True)
        check(len(value) == 4, errno.EINVAL, "xskmap values are 4-byte socket fds")
        err = self._update(self._key(key), _I32.unpack(value)[0], flags, False)
        check(err == 0, -err, f"update failed: {errno.errorcode.get(-err, -err)}")

    def sys_lookup(self, key: bytes) -> bytes:
        self._sys_check(False)
        check(False, errno.EOPNOTSUPP, "xskmap elements cannot be looked up from user space")

    def lookup(self, key):
        """The socket stand-in at ``key`` (the kernel's syscall lookup is -EOPNOTSUPP)."""
        k = int(key)
        check(k in self._entries, errno.ENOENT, f"key {k} not found")
        return self._entries[k]

    __getitem__ = lookup

    def _value_base(self, key: bytes) -> int:
        return 0        # the kernel hands BPF a struct xdp_sock: not modelled

    def regions(self) -> list[tuple[int, int, bool]]:
        return []

    def items(self) -> list:
        return sorted(self._entries.items())
