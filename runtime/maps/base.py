"""What every map shares: storage at real addresses, the ops and dict faces.

A map has three faces, as in the kernel:

* the **BPF face** (``map_lookup_elem``, ``map_update_elem``, ``map_delete_elem``, ``map_push_elem``
  ...), the ``struct bpf_map_ops`` calls a BPF program reaches through helpers. Keys and values
  are ``bytes``; lookups return the *real address* of the value (0 when absent) and the others
  return 0 or a negative errno, exactly what the helper hands back in r0. Percpu maps act on
  the current CPU (``map.cpu``).
* the **syscall face** (``sys_lookup``, ``sys_update``, ``sys_delete``, ``sys_get_next_key``),
  what ``bpf(BPF_MAP_*_ELEM)`` does for user space: bytes in and out (percpu maps: every CPU's
  value, each rounded up to 8 bytes), failures raise :class:`~pybpf.errors.MapError` with the
  kernel's errno.
* the **Python face** on top of the syscall face: ``m[key]``, ``m[key] = v``, ``del m[key]``,
  ``key in m``, ``len(m)``, ``keys()/values()/items()``, ``clear()``, ``lookup/update/delete``,
  ``dump()`` in bpftool's format. Keys and values may be bytes, ints, ctypes objects or numpy
  values; ``typed(key_type, value_type)`` makes results come back as ints, ctypes or numpy values.

Storage is allocated once, at creation, in anonymous mappings (:class:`Memory`), so a value's
address never changes while the map lives: BPF programs and JIT'd code hold raw pointers. Each
map keeps a small :class:`MapHeader` at ``map.address`` describing its layout for native code
(the value a BPF program's map pointer should carry, like the kernel's ``struct bpf_map *``).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import weakref

from pybpf.errors import MapError
from pybpf.uapi import (BPF_ANY, BPF_F_RDONLY, BPF_F_RDONLY_PROG, BPF_F_WRONLY, BPF_F_WRONLY_PROG,
                        MAP_TYPE_IDS as KERNEL_MAP_TYPE_IDS)

PAGE_SIZE = mmap.PAGESIZE
PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

# The types pybpf implements (runtime/maps/__init__.py registers a class for each), with their
# values from the one enum bpf_map_type table the ELF loader also uses.
MAP_TYPE_IDS = {name: KERNEL_MAP_TYPE_IDS[name] for name in (
    "hash", "array", "prog_array", "percpu_hash", "percpu_array", "lru_hash", "lru_percpu_hash",
    "queue", "stack", "ringbuf", "arena", "lpm_trie", "bloom_filter", "array_of_maps",
    "hash_of_maps", "devmap", "devmap_hash", "cpumap", "xskmap", "perf_event_array",
    "cgroup_storage", "percpu_cgroup_storage")}

KMALLOC_MAX_SIZE = 1 << 22      # x86-64: 1 << (MAX_PAGE_ORDER + PAGE_SHIFT)
PCPU_MIN_UNIT_SIZE = 32 << 10   # bound on a percpu value
INT_MAX = (1 << 31) - 1

PROT_NONE, PROT_READ, PROT_WRITE = 0, mmap.PROT_READ, mmap.PROT_WRITE
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10
MAP_NORESERVE = 0x4000
MAP_FIXED_NOREPLACE = 0x100000
MADV_DONTNEED = 4


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


# --- libc memory calls --------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _bind(name, res, args):
    fn = getattr(_libc, name)
    fn.restype, fn.argtypes = res, args
    return fn


_mmap = _bind("mmap", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                         ctypes.c_int, ctypes.c_int, ctypes.c_long])
_munmap = _bind("munmap", ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t])
_mprotect = _bind("mprotect", ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
_madvise = _bind("madvise", ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
MAP_FAILED = ctypes.c_void_p(-1).value


def sys_mmap(addr: int | None, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
    """mmap(2); a failure raises MapError with the errno."""
    res = _mmap(addr, length, prot, flags, fd, offset)
    if res in (None, MAP_FAILED):
        err = ctypes.get_errno()
        raise MapError(f"mmap of {length} bytes failed: {errno.errorcode.get(err, err)}", err)
    return res


def sys_munmap(addr: int, length: int) -> None:
    _munmap(addr, length)


def sys_mprotect(addr: int, length: int, prot: int) -> int:
    """mprotect(2); returns 0 or the errno (ENOMEM when the VMA limit is reached)."""
    return ctypes.get_errno() if _mprotect(addr, length, prot) else 0


def sys_madvise(addr: int, length: int, advice: int) -> int:
    return ctypes.get_errno() if _madvise(addr, length, advice) else 0


class Memory:
    """``size`` zeroed bytes (page-rounded) of private anonymous memory at a fixed address.

    Pages cost nothing until touched (MAP_NORESERVE). ``view`` is a writable byte memoryview
    of the whole mapping; the mapping is unmapped when this object is collected.
    """

    def __init__(self, size: int) -> None:
        self.size = max(round_up(size, PAGE_SIZE), PAGE_SIZE)
        self.address = sys_mmap(None, self.size, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        self._finalizer = weakref.finalize(self, sys_munmap, self.address, self.size)
        self.view = memoryview((ctypes.c_ubyte * self.size).from_address(self.address)).cast("B")


class MapHeader(ctypes.Structure):
    """The map as native code and BPF programs see it (``Map.address``, the map pointer).

    Its first :data:`KERNEL_VIEW_SIZE` bytes are the kernel's ``struct bpf_map`` (Linux 6.18,
    x86-64, from the running kernel's BTF) up to ``name``: a program may read ``map_type``,
    ``key_size``, ``value_size``, ``max_entries``, ``map_flags``... through its map pointer, as
    the kernel lets it (check_ptr_to_map_access; the verifier allows the scalar members, pybpf's
    maps keep the kernel's pointer members zero). Runs see these bytes read-only (a Region per
    map). pybpf's own fields follow, past what a program may reach. Their meanings per type:

    array/percpu_array: ``data`` values, ``elem_size`` stride of one index (round8(value_size)
    * n_cpus); hash family: ``data`` elements, ``index`` u32 buckets, ``index_mask`` buckets - 1
    (see hash.py for the element layout); prog_array: ``data`` u64 table; ringbuf: ``data``
    the double-mapped ring, ``index`` the consumer page; arena: ``data`` kern_vm_start,
    ``index`` the page map, ``extra`` user_vm_start.
    """

    _fields_ = [
        # struct bpf_map (6.18) up to name; the pointer members stay 0
        ("sha", ctypes.c_uint8 * 32), ("excl", ctypes.c_uint32), ("_hole", ctypes.c_uint32),
        ("ops", ctypes.c_uint64), ("inner_map_meta", ctypes.c_uint64),
        ("security", ctypes.c_uint64), ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32), ("map_extra", ctypes.c_uint64),
        ("map_flags", ctypes.c_uint32), ("id", ctypes.c_uint32), ("record", ctypes.c_uint64),
        ("numa_node", ctypes.c_int32), ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("btf", ctypes.c_uint64), ("objcg", ctypes.c_uint64), ("name", ctypes.c_char * 16),
        # pybpf's own
        ("elem_size", ctypes.c_uint32), ("n_cpus", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
        ("data", ctypes.c_uint64), ("index", ctypes.c_uint64),
        ("index_mask", ctypes.c_uint64), ("extra", ctypes.c_uint64)]


KERNEL_VIEW_SIZE = MapHeader.elem_size.offset     # 152: struct bpf_map's bytes up to name's end
HEADER_SIZE = 256
assert ctypes.sizeof(MapHeader) <= HEADER_SIZE


class MapKeyError(MapError, KeyError):
    """A missing key (ENOENT), also a KeyError so the dict face behaves like a dict."""

    def __init__(self, message: str, errno_: int = errno.ENOENT):
        MapError.__init__(self, message, errno_)


def fail(message: str, err: int) -> MapError:
    """The typed error for ``-err`` (MapKeyError for ENOENT)."""
    return MapKeyError(message, err) if err == errno.ENOENT else MapError(message, err)


def check(cond: object, err: int, message: str) -> None:
    if not cond:
        raise fail(message, err)


# --- key/value conversion -----------------------------------------------------------------------
def _is_ctypes_type(t) -> bool:
    return isinstance(t, type) and issubclass(t, (ctypes._SimpleCData, ctypes.Structure,
                                                  ctypes.Union, ctypes.Array))


class Codec:
    """Converts one key or value between Python objects and ``size`` raw bytes.

    ``kind`` is None (bytes), ``int`` (unsigned little-endian), a ctypes type or a numpy dtype
    (anything ``numpy.dtype()`` accepts). Encoding accepts any of those forms regardless of
    ``kind``; decoding produces ``kind``.
    """

    def __init__(self, size: int, kind=None, what: str = "value") -> None:
        self.size, self.what, self.kind, self.dtype = size, what, kind, None
        if kind is None or kind is int or kind is bytes:
            self.kind = None if kind is bytes else kind
        elif _is_ctypes_type(kind):
            check(ctypes.sizeof(kind) == size, errno.EINVAL,
                  f"{what} type {kind.__name__} is {ctypes.sizeof(kind)} bytes, map has {size}")
        else:
            import numpy as np
            self.dtype = np.dtype(kind)
            check(self.dtype.itemsize == size, errno.EINVAL,
                  f"{what} dtype {self.dtype} is {self.dtype.itemsize} bytes, map has {size}")

    def encode(self, obj) -> bytes:
        size = self.size
        if isinstance(obj, (bytes, bytearray, memoryview)):
            raw = bytes(obj)
        elif isinstance(obj, int):
            if not -(1 << (8 * size - 1)) <= obj < (1 << (8 * size)):
                raise MapError(f"{self.what} {obj} does not fit in {size} bytes", errno.EINVAL)
            raw = (obj & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif isinstance(obj, (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)):
            raw = bytes(obj)
        elif hasattr(obj, "tobytes"):   # numpy arrays and scalars
            raw = obj.tobytes()
        elif self.dtype is not None:
            import numpy as np
            raw = np.array(obj, dtype=self.dtype).tobytes()
        elif _is_ctypes_type(self.kind) and isinstance(obj, tuple):
            raw = bytes(self.kind(*obj))
        else:
            raise MapError(f"cannot use {type(obj).__name__} as a map {self.what}", errno.EINVAL)
        check(len(raw) == size, errno.EINVAL,
              f"{self.what} is {len(raw)} bytes, map {self.what} size is {size}")
        return raw

    def decode(self, raw: bytes):
        if self.dtype is not None:
            import numpy as np
            return np.frombuffer(raw, dtype=self.dtype)[0].copy()
        if self.kind is None:
            return raw
        if self.kind is int:
            return int.from_bytes(raw, "little")
        return self.kind.from_buffer_copy(raw)


def hex_bytes(data: bytes) -> str:
    """bpftool's fprint_hex: bytes as "%02x", two spaces after every 8th, a newline every 16th."""
    out = []
    for i, b in enumerate(data):
        if i:
            out.append("\n" if i % 16 == 0 else "  " if i % 8 == 0 else " ")
        out.append(f"{b:02x}")
    return "".join(out)


# --- the map base class --------------------------------------------------------------------------
class Map:
    """Base of every map type: attributes, the syscall and Python faces, dump and show.

    Subclasses set ``type`` (the kernel name), validate their attributes in ``_setup`` (raising
    MapError with the kernel's errno for what ``map_alloc_check`` refuses), allocate storage, and
    implement the BPF face and ``_raw_keys``.
    """

    type = ""
    key_default = None      # decoded key type when untyped (arrays use int indexes)
    percpu = False          # values are per CPU (n_cpus of them, each rounded up to 8 bytes)
    n_cpus = 1
    btf = False             # created with value BTF (maps.btf_fields.attach)
    spin_lock_off = -1      # offset of the value's struct bpf_spin_lock, -1 without
    graph_roots: dict = {}  # offset -> btf_fields.GraphRoot (bpf_list_head, bpf_rb_root)
    kptr_fields: dict = {}  # offset -> btf_fields.KptrField (__kptr, __kptr_untrusted)
    # The kernel's map_gen_lookup: a map whose lookup the JIT may inline defines
    # ``gen_lookup(ir, key) -> r0`` building LLVM IR with the kit pybpf.jit.maps passes in (``key``
    # the i64 key address; r0 the value's address or 0). None: lookups call the helper.
    gen_lookup = None

    def __init__(self, key_size: int, value_size: int, max_entries: int, flags: int = 0,
                 map_extra: int = 0, *, name: str | None = None, fd: int | None = None,
                 key_type=None, value_type=None) -> None:
        for what, v, bits in (("key_size", key_size, 32), ("value_size", value_size, 32),
                              ("max_entries", max_entries, 32), ("map_flags", flags, 32),
                              ("map_extra", map_extra, 64)):
            check(isinstance(v, int) and 0 <= v < (1 << bits), errno.EINVAL,
                  f"{what} must be an unsigned {bits}-bit int, got {v!r}")
        check(flags & (BPF_F_RDONLY | BPF_F_WRONLY) != BPF_F_RDONLY | BPF_F_WRONLY,
              errno.EINVAL, "BPF_F_RDONLY and BPF_F_WRONLY are exclusive")
        check(flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG) !=
              BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG, errno.EINVAL,
              "BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG are exclusive")
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        self.flags, self.map_extra = flags, map_extra
        self.name = name or ""
        self.fd = fd
        self.type_id = MAP_TYPE_IDS[self.type]
        self.closed = self.frozen = False
        self._setup()
        h = self.header
        h.map_type, h.key_size, h.value_size = self.type_id, key_size, value_size
        h.max_entries, h.map_flags, h.n_cpus = max_entries, flags, self.n_cpus
        h.map_extra, h.numa_node, h.name = map_extra, -1, self.name.encode()[:15]
        h.id = fd if fd is not None else 0
        self._cpu = 0
        self.typed(key_type if key_type is not None else self.key_default, value_type)

    @property
    def cpu(self) -> int:
        """The CPU BPF programs run on (percpu maps show them that CPU's values)."""
        return self._cpu

    @cpu.setter
    def cpu(self, value: int) -> None:
        check(isinstance(value, int) and 0 <= value < (self.n_cpus if self.percpu else 1 << 32),
              errno.EINVAL, f"cpu {value!r} out of range for {self.n_cpus} CPUs")
        self._cpu = self.header.cpu = value

    # -- subclass hooks ---------------------------------------------------------------------
    def _setup(self) -> None:
        raise NotImplementedError

    def _gen_cpu_offset(self, ir):
        """IR: the current CPU's offset into a percpu element (0 for other maps). The CPU is read
        from the header at run time, so changing ``map.cpu`` between runs needs no recompile."""
        if not self.percpu:
            return ir.const(ir.I64, 0)
        cpu = ir.load(ir.ext(self.address + MapHeader.cpu.offset), ir.I32)
        return ir.b.mul(ir.b.zext(cpu, ir.I64), ir.const(ir.I64, self.stride))

    def _place_header(self, mem: Memory, offset: int = 0) -> None:
        self.header = MapHeader.from_address(mem.address + offset)
        self.address = mem.address + offset

    def _raw_keys(self) -> list[bytes]:
        raise NotImplementedError

    def _value_base(self, key: bytes) -> int:
        """Address of the value of ``key`` (CPU 0's for percpu maps) or 0; no side effects."""
        return 0

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> int:
        """Store ``value`` (every CPU's when ``onallcpus``, else the current CPU's); 0 or -errno."""
        return -errno.EINVAL

    # -- the BPF face (struct bpf_map_ops); bytes in, address / 0 / -errno out -----------------
    def map_lookup_elem(self, key: bytes) -> int:
        base = self._value_base(key)
        return base + self.cpu * round_up(self.value_size, 8) if base and self.percpu else base

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> int:
        return self._update(key, value, flags, False)

    def map_delete_elem(self, key: bytes) -> int:
        return -errno.EINVAL

    def map_push_elem(self, value: bytes, flags: int) -> int:
        return -errno.EOPNOTSUPP

    def map_pop_elem(self) -> bytes | int:
        return -errno.EOPNOTSUPP

    def map_peek_elem(self) -> bytes | int:
        return -errno.EOPNOTSUPP

    def map_lookup_percpu_elem(self, key: bytes, cpu: int) -> int:
        if not self.percpu or cpu >= self.n_cpus:
            return 0
        base = self._value_base(key)
        return base + cpu * round_up(self.value_size, 8) if base else 0

    def regions(self) -> list[tuple[int, int, bool]]:
        """(address, size, writable) of memory BPF programs may access through this map."""
        return []

    def region_rule(self) -> dict:
        """Extra :class:`~pybpf.runtime.memory.Region` fields for :meth:`regions`: which parts
        of the memory a program may touch (``stride``/``lo``/``hi``: one value per element,
        ``allow``: a callback); {} when all of it."""
        return {}

    def map_mem_usage(self) -> int:
        return sum(size for _, size, _ in self.regions())

    # -- the syscall face; raises MapError ----------------------------------------------------
    @property
    def sys_value_size(self) -> int:
        """Bytes of a value as the syscall sees it (every CPU's, 8-aligned, for percpu maps)."""
        return round_up(self.value_size, 8) * self.n_cpus if self.percpu else self.value_size

    def _sys_check(self, write: bool) -> None:
        check(not self.closed, errno.EBADF, f"map {self.name!r} is closed")
        if write:
            check(not self.flags & BPF_F_RDONLY and not self.frozen, errno.EPERM,
                  "map is read-only for user space" + (" (frozen)" if self.frozen else ""))
        else:
            check(not self.flags & BPF_F_WRONLY, errno.EPERM, "map is write-only for user space")

    def _key(self, key: bytes) -> bytes:
        check(len(key) == self.key_size, errno.EINVAL,
              f"key is {len(key)} bytes, map key size is {self.key_size}")
        return key

    def sys_lookup(self, key: bytes) -> bytes:
        self._sys_check(False)
        addr = self._value_base(self._key(key))
        check(addr, errno.ENOENT, f"key {key.hex()} not found")
        value = ctypes.string_at(addr, self.sys_value_size)
        if self.spin_lock_off >= 0 or self.kptr_fields:
            from .btf_fields import without_special
            value = without_special(self, value)    # user space never sees locks, roots, kptrs
        return value

    def sys_update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._sys_check(True)
        check(len(value) == self.sys_value_size, errno.EINVAL,
              f"value is {len(value)} bytes, expected {self.sys_value_size}")
        err = self._update(self._key(key), value, flags, self.percpu)
        check(err == 0, -err, f"update of key {key.hex()} failed: "
                              f"{errno.errorcode.get(-err, -err)}")

    def sys_delete(self, key: bytes) -> None:
        self._sys_check(True)
        err = self.map_delete_elem(self._key(key))
        check(err == 0, -err, f"delete of key {key.hex()} failed: "
                              f"{errno.errorcode.get(-err, -err)}")

    def sys_get_next_key(self, key: bytes | None) -> bytes:
        """The key after ``key`` (the first key for None or a missing key); ENOENT at the end."""
        self._sys_check(False)
        keys = self._raw_keys()
        if key is not None and key in keys:
            i = keys.index(key) + 1
        else:
            i = 0
        check(i < len(keys), errno.ENOENT, "no next key")
        return keys[i]

    # -- the Python face ----------------------------------------------------------------------
    def typed(self, key_type=None, value_type=None) -> "Map":
        """Decode keys as ``key_type`` and values as ``value_type`` (None: bytes); returns self."""
        self.key_codec = Codec(self.key_size, key_type, "key")
        self.value_codec = Codec(self.value_size, value_type, "value")
        return self

    def _encode_value(self, value) -> bytes:
        return self.value_codec.encode(value)

    def _decode_value(self, raw: bytes):
        return self.value_codec.decode(raw)

    def lookup(self, key):
        return self._decode_value(self.sys_lookup(self.key_codec.encode(key)))

    def get(self, key, default=None):
        try:
            return self.lookup(key)
        except MapKeyError:
            return default

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        self.sys_update(self.key_codec.encode(key), self._encode_value(value), flags)

    def delete(self, key) -> None:
        self.sys_delete(self.key_codec.encode(key))

    __getitem__ = lookup
    __delitem__ = delete

    def __setitem__(self, key, value) -> None:
        self.update(key, value)

    def __contains__(self, key) -> bool:
        try:
            self.sys_lookup(self.key_codec.encode(key))
        except MapKeyError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._raw_keys())

    def __bool__(self) -> bool:
        return True     # a map is a resource: ``if m:`` means it exists, empty or not

    def __iter__(self):
        return iter(self.keys())

    def keys(self) -> list:
        self._sys_check(False)
        return [self.key_codec.decode(k) for k in self._raw_keys()]

    def values(self) -> list:
        return [v for _, v in self.items()]

    def items(self) -> list:
        self._sys_check(False)
        return [(self.key_codec.decode(k), self._decode_value(self.sys_lookup(k)))
                for k in self._raw_keys()]

    def clear(self) -> None:
        for k in self._raw_keys():
            self.sys_delete(k)

    def dump(self) -> str:
        """``bpftool map dump`` without BTF: one entry per key, then ``Found N elements``."""
        lines = []
        for k in self._raw_keys():
            lines.append(self._dump_entry(k, self.sys_lookup(k)))
        n = len(lines)
        lines.append(f"Found {n} element{'s' if n != 1 else ''}")
        return "\n".join(lines) + "\n"

    def _dump_entry(self, key: bytes, value: bytes) -> str:
        ks, vs = self.key_size, self.value_size
        if self.percpu:                     # one value line per CPU
            step = round_up(vs, 8)
            out = [f"key:\n{hex_bytes(key)}"]
            for cpu in range(self.n_cpus):
                sep = "\n" if vs > 16 else " "
                out.append(f"value (CPU {cpu:02d}):{sep}"
                           f"{hex_bytes(value[cpu * step:cpu * step + vs])}")
            return "\n".join(out)
        brk = ks > 16 or vs > 16
        single = ks + vs <= 24 and not brk
        sep = "\n" if brk else " "
        return (f"key:{sep}{hex_bytes(key)}{'  ' if single else chr(10)}"
                f"value:{sep}{hex_bytes(value)}")

    def show(self) -> str:
        """``bpftool map show``: id, type, name, flags, then sizes."""
        name = f"  name {self.name}" if self.name else ""
        fd = self.fd if self.fd is not None else 0
        return (f"{fd}: {self.type}{name}  flags 0x{self.flags:x}\n"
                f"\tkey {self.key_size}B  value {self.value_size}B  "
                f"max_entries {self.max_entries}  memlock {self.map_mem_usage()}B\n")

    def freeze(self) -> None:
        """BPF_MAP_FREEZE: user space may no longer write (libbpf freezes .rodata after load)."""
        self.frozen = True

    def close(self) -> None:
        """Mark the map closed: every user-space operation then raises MapError (EBADF);
        programs that use it keep it alive and working, as a kernel program holds its maps.
        Its memory goes when the last reference (a program, its VM) drops it."""
        if self.closed:
            return
        self.closed = True
        hook, self._close_hook = self._close_hook, None
        if hook is not None and (fn := hook()) is not None:
            fn(self)

    def __repr__(self) -> str:
        closed = " closed" if getattr(self, "closed", False) else ""
        return (f"<{type(self).__name__} {self.name!r} fd={self.fd} key={self.key_size}B "
                f"value={self.value_size}B max_entries={self.max_entries}{closed}>")

    _close_hook = None      # a weak reference to the owner's callback, called once at close()
    # Methods the engines call for programs that still hold a closed map (the BPF face); every
    # other public method and container dunder raises MapError (EBADF) once the map is closed.
    bpf_face = frozenset({"close", "typed", "show", "freeze", "regions", "region_rule",
                          "map_mem_usage", "map_direct_value_addr",
                          # ring buffers
                          "reserve", "commit", "output", "query", "holds_sample",
                          "ring_of_sample",
                          # prog_array
                          "get_prog", "refresh_native", "set_prog",
                          # arena
                          "load", "store", "atomic", "alloc_pages", "free_pages",
                          "reserve_pages", "is_allocated", "bpf_address", "cast_user",
                          "cast_kern", "compute_pgoff"})

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        _guard_closed(cls)


_GUARDED_DUNDERS = ("__len__", "__iter__", "__getitem__", "__setitem__", "__delitem__",
                    "__contains__")


def _guard_closed(cls) -> None:
    """Wrap the user-space methods ``cls`` defines so that a closed map refuses them."""
    for name, fn in list(vars(cls).items()):
        if not callable(fn) or isinstance(fn, (staticmethod, classmethod, type)):
            continue
        if (name.startswith("_") and name not in _GUARDED_DUNDERS) or \
                name.startswith("map_") or name in cls.bpf_face or \
                getattr(fn, "_closed_guard", False):
            continue
        setattr(cls, name, _closed_guard(fn, name))


def _closed_guard(fn, name: str):
    @functools.wraps(fn)
    def guarded(self, *args, **kwargs):
        if self.closed:
            raise MapError(f"{self.type} map {self.name or self.fd!r} is closed "
                           f"({name} after close())", errno.EBADF)
        return fn(self, *args, **kwargs)
    guarded._closed_guard = True
    return guarded


_guard_closed(Map)
