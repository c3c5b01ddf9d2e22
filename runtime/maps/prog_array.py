"""BPF_MAP_TYPE_PROG_ARRAY: the jump table of bpf_tail_call (kernel/bpf/arraymap.c, fd_array ops).

Values are loaded programs. User space stores them by index (``pa[i] = loaded_program``, or an
int fd that ``resolve_prog`` turns into one; the VM sets that hook); BPF programs cannot read or
write the map, they only ``bpf_tail_call(ctx, &map, index)`` through it.

Tail-call support data: :meth:`get_prog` is the interpreter's lookup (None for an index past the
end or an empty slot: the call falls through); ``table_address`` (also ``MapHeader.data``) is a
u64 per index holding the program's ``native_entry`` attribute (its JIT'd entry point) or 0, for
JIT'd tail calls; :meth:`refresh_native` rewrites it after programs are (re)compiled.
``MAX_TAIL_CALL_CNT`` bounds the chain length (33, as in the kernel).

Kernel rules: key_size and value_size must be 4; update flags other than BPF_ANY give -EINVAL;
indexes past the end give -E2BIG (update and delete); deleting an empty slot gives -ENOENT.
"""
from __future__ import annotations

import ctypes
import errno
import struct

from pybpf.uapi import BPF_ANY, BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG
from .array import ArrayMap
from .base import HEADER_SIZE, Memory, check, fail

_U32 = struct.Struct("<I")


class ProgArrayMap(ArrayMap):
    """Index -> loaded program. ``m[i]`` returns the program object itself."""

    type = "prog_array"
    gen_lookup = None       # no native lookup: BPF programs only tail-call through the map

    def _check_attrs(self) -> None:
        # fd_array_map_alloc_check, then the array checks.
        check(self.value_size == 4, errno.EINVAL, "prog_array values are 4-byte fds")
        check(not self.flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG), errno.EINVAL,
              "prog_array takes no BPF_F_RDONLY_PROG/BPF_F_WRONLY_PROG")
        super()._check_attrs()

    def _setup(self) -> None:
        self._check_attrs()
        self.stride = self.elem_size = 8
        self._mem = Memory(HEADER_SIZE + 8 * self.max_entries)
        self._place_header(self._mem)
        self.table_address = self.data_address = self._mem.address + HEADER_SIZE
        self.header.data, self.header.elem_size = self.table_address, 8
        # index -> program, only the filled slots: max_entries may be 2^32 - 1 (a list of that
        # many Nones took minutes and 32 GB before the VM's map memory limit could refuse it)
        self._progs: dict = {}
        self.resolve_prog = None      # fd -> loaded program, installed by the VM

    # -- BPF face: programs can only tail-call through the map -------------------------------
    def _value_base(self, key: bytes) -> int:
        return 0

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        return -errno.EINVAL

    def map_delete_elem(self, key: bytes) -> int:
        return -errno.EINVAL

    def regions(self) -> list[tuple[int, int, bool]]:
        return []

    def map_mem_usage(self) -> int:
        # its table of entry points (8 bytes a slot, as the kernel's fd array): what the VM's
        # map memory limit counts, though no program may read it
        return HEADER_SIZE + 8 * self.max_entries

    def get_prog(self, index: int):
        """The program bpf_tail_call jumps to for ``index`` (a u32), or None to fall through."""
        index &= 0xFFFFFFFF
        return self._progs.get(index) if index < self.max_entries else None

    def refresh_native(self) -> None:
        """Rewrite the native table from each program's ``native_entry`` (0 when absent)."""
        for i, prog in list(self._progs.items()):
            self._store_entry(i, prog)

    def _store_entry(self, index: int, prog) -> None:
        # One aligned 8-byte store: JIT code running in another thread reads the entry without
        # a lock and must see the old or the new entry point, never a torn mix of both (which
        # struct.pack_into can expose: it writes byte by byte, after zeroing).
        entry = (getattr(prog, "native_entry", 0) or 0) if prog is not None else 0
        ctypes.c_uint64.from_address(self.table_address + 8 * index).value = entry

    # -- syscall / Python faces ------------------------------------------------------------------
    def _set(self, index: int, prog) -> None:
        if prog is None:
            self._progs.pop(index, None)
        else:
            self._progs[index] = prog
        self._store_entry(index, prog)

    def update(self, key, prog, flags: int = BPF_ANY) -> None:
        """Store ``prog`` (a loaded program, or an int fd for ``resolve_prog``) at ``key``."""
        self._sys_check(True)
        index = self._index(self.key_codec.encode(key))
        check(flags == BPF_ANY, errno.EINVAL, "prog_array updates take BPF_ANY only")
        check(index < self.max_entries, errno.E2BIG, f"index {index} out of range")
        if isinstance(prog, int):
            fd = prog
            prog = self.resolve_prog(fd) if self.resolve_prog is not None else None
            check(prog is not None, errno.EINVAL, f"fd {fd} is not a loaded program")
        check(prog is not None, errno.EINVAL, "no program given")
        self._set(index, prog)

    __setitem__ = update

    def sys_update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self.update(self._index(self._key(key)), _U32.unpack(value)[0], flags)

    def lookup(self, key):
        self._sys_check(False)
        index = self._index(self.key_codec.encode(key))
        prog = self.get_prog(index)
        if prog is None:
            raise fail(f"no program at index {index}", errno.ENOENT)
        return prog

    __getitem__ = lookup

    def sys_lookup(self, key: bytes) -> bytes:
        """The kernel returns the program's id; here its ``id`` (or ``fd``) attribute, or 0."""
        prog = self.lookup(self._index(self._key(key)))
        return _U32.pack((getattr(prog, "id", None) or getattr(prog, "fd", None) or 0)
                         & 0xFFFFFFFF)

    def sys_delete(self, key: bytes) -> None:
        self._sys_check(True)
        index = self._index(self._key(key))
        check(index < self.max_entries, errno.E2BIG, f"index {index} out of range")
        check(self._progs.get(index) is not None, errno.ENOENT, f"no program at index {index}")
        self._set(index, None)

    def _raw_keys(self) -> list[bytes]:
        return [_U32.pack(i) for i in sorted(self._progs)]

    def __len__(self) -> int:
        return len(self._progs)

    def __contains__(self, key) -> bool:
        return self.get_prog(self._index(self.key_codec.encode(key))) is not None

    def items(self) -> list:
        return sorted(self._progs.items(), key=lambda ip: ip[0])

    def clear(self) -> None:
        for i in range(self.max_entries):
            self._set(i, None)
