"""A tiny bpf(2) client for cross-checking pybpf's ELF linker against the running kernel.

Test support only (pybpf never needs a kernel): it creates the maps an object declares, loads a
program exactly as ``pybpf.elf.parse_object`` linked it (map references by index through
``fd_array``; pybpf kfunc ids swapped for the kernel's BTF ids) and runs it with
BPF_PROG_TEST_RUN. If the kernel verifier accepts the linked program and it computes the right
answers, the linking (subprogram order, call offsets, map and global relocations, arena offsets)
is right. Needs root (CAP_BPF). Which features this kernel allows is :mod:`kernel_probe`'s job:
tests ask it (``require_kernel("map:arena")``) before using them, so a refused feature skips.

Besides the object loader: ``try_create_map``, ``elem_op`` and ``prog_load`` answer with 0/fd or
-errno instead of raising, for tests that compare the kernel's errnos with pybpf's.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import platform
import struct

from pybpf.elf.reader import ElfReader
from pybpf.uapi import (BPF_BTF_LOAD, BPF_F_SLEEPABLE, BPF_MAP_CREATE, BPF_MAP_GET_NEXT_KEY,
                        BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD, BPF_PROG_TEST_RUN,
                        BPF_F_RDONLY_PROG, ENOTSUPP, MAP_TYPE_IDS, PROG_TYPE_IDS)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# __NR_bpf by machine (asm/unistd*.h); None where unknown: then bpf() counts as unavailable
SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "loongarch64": 280, "s390x": 351,
           "ppc64le": 361, "ppc64": 361}.get(platform.machine())
BPF_MAP_FREEZE = 22         # not in pybpf.uapi (pybpf has no syscall face for it)


def errno_name(err: int) -> str:
    """``EPERM``; the kernel-internal ENOTSUPP (524) by name too."""
    return "ENOTSUPP" if err == ENOTSUPP else errno.errorcode.get(err, f"errno {err}")


class KernelError(OSError):
    def __init__(self, what: str, err: int, log: str = ""):
        super().__init__(err, f"{what}: {os.strerror(err)}" + (f"\n{log}" if log else ""))
        self.log = log


def _bpf(cmd: int, attr: bytearray, what: str) -> int:
    if SYS_BPF is None:
        raise KernelError(f"{what} (no bpf() syscall number known for {platform.machine()})",
                          errno.ENOSYS)
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    r = _libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        raise KernelError(what, ctypes.get_errno())
    return r


def available() -> bool:
    """True when bpf() works here (root, not blocked by seccomp): ``kernel_probe``'s "bpf"."""
    import kernel_probe  # here, not at the top: kernel_probe imports this module
    return kernel_probe.probe("bpf") is None


def _addr(buf) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def create_map(mtype: str, key: int, value: int, entries: int, flags: int = 0,
               map_extra: int = 0, name: str = "", inner_fd: int = 0,
               btf: tuple[int, int, int] | None = None) -> int:
    """BPF_MAP_CREATE; ``btf`` = (btf fd, key type id, value type id) for a map with BTF."""
    attr = bytearray(80)
    struct.pack_into("<IIIIII", attr, 0, MAP_TYPE_IDS[mtype], key, value, entries, flags,
                     inner_fd)
    attr[28:28 + 15] = name.encode()[:15].ljust(15, b"\0")
    if btf is not None:
        struct.pack_into("<III", attr, 48, *btf)
    struct.pack_into("<Q", attr, 64, map_extra)
    return _bpf(BPF_MAP_CREATE, attr, f"map_create {name} ({mtype})")


def try_create_map(mtype: str, key: int, value: int, entries: int, flags: int = 0,
                   map_extra: int = 0, name: str = "") -> int:
    """A map fd, or -errno when the kernel refuses (for comparing errnos with pybpf's)."""
    try:
        return create_map(mtype, key, value, entries, flags, map_extra, name)
    except KernelError as e:
        return -e.errno


def elem_op(cmd: int, fd: int, key: bytes | None, value: bytes | None = None,
            flags: int = 0) -> tuple[int, bytes | None]:
    """One element command (BPF_MAP_LOOKUP_ELEM, UPDATE_ELEM, DELETE_ELEM, ...); ``None`` passes
    a NULL pointer. (0 or -errno, the value buffer after the call or None)."""
    kb = ctypes.create_string_buffer(key, max(len(key), 1)) if key is not None else None
    vb = ctypes.create_string_buffer(value, max(len(value), 1)) if value is not None else None
    attr = bytearray(32)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, _addr(kb), _addr(vb), flags)
    try:
        _bpf(cmd, attr, "map elem op")
    except KernelError as e:
        return -e.errno, None
    return 0, (vb.raw if vb is not None else None)


def prog_load(code: bytes, prog_type: str, *, sleepable: bool = False, fd_array=(),
              log_level: int = 1, log_size: int = 1 << 16, license: str = "GPL",
              name: str = "") -> tuple[int, str]:
    """BPF_PROG_LOAD of raw instructions: (fd or -errno, the verifier log). With ``log_level``
    0 no log is asked for (a log that overflows fails even a good load)."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size if log_level else 1)
    fds = (ctypes.c_int * max(len(fd_array), 1))(*fd_array)
    attr = bytearray(152)
    struct.pack_into("<IIQQIIQ", attr, 0, PROG_TYPE_IDS[prog_type], len(code) // 8,
                     _addr(insns), _addr(lic), log_level, log_size if log_level else 0,
                     _addr(log) if log_level else 0)
    struct.pack_into("<I", attr, 44, BPF_F_SLEEPABLE if sleepable else 0)
    attr[48:48 + 15] = name.encode()[:15].ljust(15, b"\0")
    if fd_array:
        struct.pack_into("<Q", attr, 120, _addr(fds))
    try:
        fd = _bpf(BPF_PROG_LOAD, attr, f"prog_load {name or prog_type}")
    except KernelError as e:
        return -e.errno, log.value.decode(errors="replace")
    return fd, log.value.decode(errors="replace")


def _elem(cmd: int, fd: int, key: bytes, value, flags: int = 0) -> None:
    k = ctypes.create_string_buffer(bytes(key), len(key))
    attr = bytearray(32)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, _addr(k), _addr(value), flags)
    _bpf(cmd, attr, "map elem op")


def update(fd: int, key: bytes, value: bytes) -> None:
    _elem(BPF_MAP_UPDATE_ELEM, fd, key, ctypes.create_string_buffer(bytes(value), len(value)))


def lookup(fd: int, key: bytes, size: int) -> bytes:
    out = ctypes.create_string_buffer(size)
    _elem(BPF_MAP_LOOKUP_ELEM, fd, key, out)
    return out.raw


def possible_cpus() -> int:
    """num_possible_cpus(): how many values a per-CPU map's lookup gives user space."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    return sum(int(b) - int(a) + 1 if "-" in r else 1
               for r in text.split(",") for a, _, b in [r.partition("-")])


def dump(fd: int, key_size: int, value_size: int) -> dict[bytes, bytes]:
    """Every (key, value) of a map, walked with BPF_MAP_GET_NEXT_KEY."""
    out, key = {}, None
    while True:
        k = ctypes.create_string_buffer(bytes(key), key_size) if key is not None else None
        nxt = ctypes.create_string_buffer(key_size)
        attr = bytearray(32)
        struct.pack_into("<IIQQ", attr, 0, fd, 0, _addr(k), _addr(nxt))
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, attr, "map get_next_key")
        except KernelError as e:
            if e.errno == 2:        # ENOENT: the last key
                return out
            raise
        key = nxt.raw
        try:
            out[key] = lookup(fd, key, value_size)
        except KernelError as e:
            if e.errno != 2:
                raise


def test_run(prog_fd: int, ctx: bytes | None = None, data: bytes | None = None,
             data_out_size: int = 0, ctx_out_size: int = 0,
             repeat: int = 0) -> tuple[int, bytes, bytes]:
    """BPF_PROG_TEST_RUN once (``repeat`` > 1: that many runs on the same context and packet):
    (retval, data_out, ctx after the run)."""
    c = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    d = ctypes.create_string_buffer(data, len(data)) if data else None
    dout = ctypes.create_string_buffer(data_out_size) if data_out_size else None
    cout = ctypes.create_string_buffer(ctx_out_size) if ctx_out_size else None
    attr = bytearray(80)
    struct.pack_into("<IIII", attr, 0, prog_fd, 0, len(data or b""), data_out_size)
    struct.pack_into("<QQI", attr, 16, _addr(d), _addr(dout), repeat)
    struct.pack_into("<IIQQ", attr, 40, len(ctx or b""), ctx_out_size, _addr(c), _addr(cout))
    _bpf(BPF_PROG_TEST_RUN, attr, "prog_test_run")
    # test.retval at 4, test.data_size_out at 12 (the kernel writes the output's real size:
    # XDP head/tail adjustments change it)
    retval, size_out = struct.unpack_from("<I", attr, 4)[0], struct.unpack_from("<I", attr, 12)[0]
    csize = struct.unpack_from("<I", attr, 44)[0]
    # without ctx_out (syscall programs take none) the kernel writes ctx back into ctx_in
    ctx_after = cout.raw[:csize] if cout is not None else (c.raw if c is not None else b"")
    return retval, dout.raw[:size_out] if dout is not None else b"", ctx_after


# bytes that follow the 12-byte common header of each BTF kind, by kind number and vlen
_EXTRA = {1: lambda v: 4, 3: lambda v: 12, 4: lambda v: 12 * v, 5: lambda v: 12 * v,
          6: lambda v: 8 * v, 13: lambda v: 8 * v, 14: lambda v: 4, 15: lambda v: 12 * v,
          17: lambda v: 4, 19: lambda v: 12 * v}


def _records(raw):
    """(type id, byte position, kind number, vlen, name offset, info) of each BTF type record."""
    _m, _v, _f, hdr, toff, tlen, _soff, _slen = struct.unpack_from("<HBBIIIII", raw)
    pos, tid = hdr + toff, 1
    while pos < hdr + toff + tlen:
        name_off, info, _ = struct.unpack_from("<III", raw, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        yield tid, pos, kind, vlen, name_off, info
        pos += 12 + _EXTRA.get(kind, lambda v: 0)(vlen)
        tid += 1


@functools.lru_cache(maxsize=None)
def kernel_btf_id(name: str, path: str = "/sys/kernel/btf/vmlinux") -> int:
    """BTF id of FUNC ``name`` in the kernel's BTF (a quick scan, not a full parse)."""
    data = open(path, "rb").read()
    _m, _v, _f, hdr, _toff, _tlen, soff, slen = struct.unpack_from("<HBBIIIII", data)
    want = data[hdr + soff:hdr + soff + slen].find(b"\0" + name.encode() + b"\0") + 1
    for tid, _pos, kind, _vlen, name_off, _info in _records(data):
        if kind == 12 and name_off == want:
            return tid
    raise LookupError(f"no FUNC {name} in {path}")


def sanitized_btf(obj) -> bytes:
    """The object's .BTF fixed up the way libbpf does before BPF_BTF_LOAD: DATASEC sizes and
    variable offsets from the ELF, extern FUNCs made global, .ksyms entries pointed at a dummy
    int VAR (the kernel takes only VARs in a DATASEC)."""
    rd = ElfReader(open(obj.filename, "rb").read(), obj.filename)
    raw = bytearray(rd.section_data(rd.section(".BTF")))
    _m, _v, _f, hdr, toff, tlen, soff, slen = struct.unpack_from("<HBBIIIII", raw)
    btf = obj.btf
    int_id = next(t.id for t in btf.types if t.kind == "int" and t.size == 4)
    dummy = len(btf.types)                      # the VAR appended below
    # the dummy VAR (and nameless extern params) need an identifier for a name: any VAR's will do
    some_var = next(t.name for t in btf.types if t.kind == "var").encode()
    name_off = raw[hdr + soff:].find(b"\0" + some_var + b"\0") + 1
    where, externs = {}, []
    for tid, pos, kind, vlen, _name, info in _records(bytes(raw)):
        t = btf[tid]
        where[tid] = pos
        if kind == 12 and t.linkage == 2:       # extern FUNC -> global, its params get names
            struct.pack_into("<I", raw, pos + 4, (info & ~0xFFFF) | 1)
            externs.append(t.type)
        if kind == 15:
            sec = rd.section(t.name)
            syms = {sy.name: sy.value for sy in rd.symbols_in(sec)} if sec else {}
            for i, vi in enumerate(t.secinfo):
                at = pos + 12 + 12 * i
                if t.name == ".ksyms":
                    struct.pack_into("<III", raw, at, dummy, 4 * i, 4)
                else:
                    struct.pack_into("<I", raw, at + 4, syms.get(btf[vi.type].name, vi.offset))
            size = 4 * vlen if t.name == ".ksyms" else (sec.size if sec else 0)
            struct.pack_into("<I", raw, pos + 8, size)
    for proto in externs:
        for i, prm in enumerate(btf[proto].members):
            if prm.type and not prm.name:
                struct.pack_into("<I", raw, where[proto] + 12 + 8 * i, name_off)
    var = struct.pack("<IIII", name_off, 14 << 24, int_id, 1)
    types_end = hdr + toff + tlen
    out = raw[:types_end] + var + raw[types_end:]
    struct.pack_into("<IIII", out, 8, toff, tlen + len(var), soff + len(var), slen)
    return bytes(out)


def load_btf(obj) -> int:
    return load_raw_btf(sanitized_btf(obj))


def load_raw_btf(blob: bytes) -> int:
    """BPF_BTF_LOAD; the fd (KernelError carries the kernel's log)."""
    data = ctypes.create_string_buffer(blob)
    log = ctypes.create_string_buffer(1 << 16)
    attr = bytearray(40)
    struct.pack_into("<QQIII", attr, 0, _addr(data), _addr(log), len(data) - 1, len(log), 1)
    try:
        return _bpf(BPF_BTF_LOAD, attr, "btf_load")
    except KernelError as e:
        raise KernelError("btf_load", e.errno, log.value.decode()) from None


# enum bpf_attach_type of the sections whose program types need one at load (libbpf's
# expected_attach_type from its section_defs); 0 for the others
_ATTACH_TYPES = {"cgroup/sock_create": 2, "cgroup/sock": 2, "cgroup/connect4": 10,
                 "cgroup/connect6": 11, "cgroup/sendmsg4": 14, "cgroup/sendmsg6": 15,
                 "cgroup/recvmsg4": 19, "cgroup/recvmsg6": 20, "sk_lookup": 36}


def expected_attach_type(section: str) -> int:
    return _ATTACH_TYPES.get(section, 0)


def freeze(fd: int) -> None:
    attr = bytearray(8)
    struct.pack_into("<I", attr, 0, fd)
    _bpf(BPF_MAP_FREEZE, attr, "map_freeze")


def _has_spin_lock(btf, m) -> bool:
    """Whether the map needs its value BTF: a bpf_spin_lock or kptr fields (or kptr fields
    pybpf refuses: the kernel says what it makes of them)."""
    from pybpf.errors import MapError
    from pybpf.runtime.maps.btf_fields import kptr_fields, spin_lock_offset
    try:
        return (spin_lock_offset(btf, m.btf_value_type) >= 0
                or bool(kptr_fields(btf, m.btf_value_type)))
    except MapError:
        return True



def ringbuf_consume(fd: int, size: int) -> list[bytes]:
    """Consume every committed record of the kernel ring buffer ``fd`` (``size`` data bytes),
    as libbpf's ring_buffer__consume does: page 0 is the consumer position (writable), then the
    producer page and the data pages mapped twice; discarded records are skipped."""
    page = mmap.PAGESIZE
    cons_map = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    prod_map = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    try:
        cons = struct.unpack_from("<Q", cons_map, 0)[0]
        prod = struct.unpack_from("<Q", prod_map, 0)[0]
        out = []
        while cons < prod:
            at = page + (cons & (size - 1))
            length, _ = struct.unpack_from("<II", prod_map, at)
            if length & (1 << 31):              # BPF_RINGBUF_BUSY_BIT: not committed yet
                break
            n = length & ~(3 << 30)
            if not length & (1 << 30):          # BPF_RINGBUF_DISCARD_BIT
                out.append(bytes(prod_map[at + 8:at + 8 + n]))
            cons += (n + 8 + 7) & ~7
            struct.pack_into("<Q", cons_map, 0, cons)
        return out
    finally:
        cons_map.close()
        prod_map.close()


class KernelObject:
    """The maps of a parsed BpfObject, created in the kernel, plus the arena's user mapping."""

    def __init__(self, obj):
        self.obj, self.fds, self.arena, self.prog_fds = obj, {}, None, []
        self.arena_base = 0
        self.btf_fd, self.btf_error = None, None
        if obj.btf is not None:
            try:
                self.btf_fd = load_btf(obj)
            except KernelError as e:    # libbpf: "BTF is optional, ignoring": no map gets
                self.btf_error = e      # value BTF, no program BTF, func_info or line_info
        for m in obj.map_defs.values():
            value_size = 4 if m.type == "prog_array" else m.value_size
            inner_fd = 0
            if m.inner is not None:      # map-in-map: a template map for inner_map_fd
                i = m.inner
                inner_fd = create_map(i.type, i.key_size, i.value_size, i.max_entries, i.flags,
                                      i.map_extra, "inner")
            # value BTF where the kernel needs it: a struct bpf_spin_lock in the value
            btf = None
            if self.btf_fd is not None and m.btf_value_type and _has_spin_lock(obj.btf, m):
                btf = (self.btf_fd, m.btf_key_type, m.btf_value_type)
            try:
                fd = create_map(m.type, m.key_size, value_size, m.max_entries, m.flags,
                                m.map_extra, m.name, inner_fd, btf)
            finally:
                if inner_fd:
                    os.close(inner_fd)
            self.fds[m.name] = fd
            if m.type == "arena":
                self.arena = mmap.mmap(fd, m.max_entries * mmap.PAGESIZE, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE)
                self.arena_base = ctypes.addressof(ctypes.c_char.from_buffer(self.arena))
                if m.initial:
                    self.arena[m.initial_offset:m.initial_offset + len(m.initial)] = m.initial
            elif m.initial is not None:
                update(fd, b"\0\0\0\0", m.initial)
            if m.origin == "data" and m.flags & BPF_F_RDONLY_PROG:
                freeze(fd)      # libbpf freezes .rodata: bpf_snprintf's fmt must be read-only

    def close(self) -> None:
        for fd in [*self.prog_fds, *self.fds.values()]:
            os.close(fd)
        self.fds.clear()
        self.prog_fds.clear()
        if self.btf_fd is not None:
            os.close(self.btf_fd)
            self.btf_fd = None
        # the arena mapping stays until garbage collection: ctypes views of it may be alive

    def global_bytes(self, var) -> bytes:
        m = self.obj.map_defs[var.map_name]
        if m.type == "arena":
            start = m.initial_offset + var.offset
            return bytes(self.arena[start:start + var.size])
        return lookup(self.fds[m.name], b"\0\0\0\0", m.value_size)[var.offset:var.offset + var.size]

    def set_global(self, var, data: bytes) -> None:
        m = self.obj.map_defs[var.map_name]
        value = bytearray(lookup(self.fds[m.name], b"\0\0\0\0", m.value_size))
        value[var.offset:var.offset + var.size] = data
        update(self.fds[m.name], b"\0\0\0\0", bytes(value))

    def arena_read(self, addr: int, size: int) -> bytes:
        off = addr - self.arena_base
        return bytes(self.arena[off:off + size])

    def arena_write(self, addr: int, data: bytes) -> None:
        off = addr - self.arena_base
        self.arena[off:off + len(data)] = data

    def load(self, prog, log_level: int = 0) -> int:
        """Load a linked ElfProgram; returns its fd (KernelError carries the verifier log).
        With ``log_level``, the load itself asks for the log, kept in ``self.last_log`` (its
        last line has the kernel's processed-insns and states figures)."""
        insns = list(prog.insns)
        for pc, form, insn in prog.instructions():
            if form.kind == "call" and form.op == "kfunc":
                insns[pc] = insn._replace(imm=kernel_btf_id(prog.kfuncs[insn.imm]))
        code = ctypes.create_string_buffer(b"".join(i.encode() for i in insns))
        fds = (ctypes.c_int * max(len(prog.maps), 1))(*[self.fds[m.name] for m in prog.maps])
        lic = ctypes.create_string_buffer((prog.license or "GPL").encode())
        log = ctypes.create_string_buffer(1 << 22)
        attr = bytearray(152)
        struct.pack_into("<IIQQIIQ", attr, 0, PROG_TYPE_IDS[prog.prog_type], len(insns),
                         _addr(code), _addr(lic), 0, 0, 0)
        # libbpf's prog_flags: xdp.frags sections load with BPF_F_XDP_HAS_FRAGS (1 << 5)
        frags = (1 << 5) if prog.section.startswith("xdp.frags") else 0
        struct.pack_into("<I", attr, 44, (BPF_F_SLEEPABLE if prog.sleepable else 0) | frags)
        attr[48:48 + 15] = prog.name.encode()[:15].ljust(15, b"\0")
        struct.pack_into("<I", attr, 68, expected_attach_type(prog.section))
        struct.pack_into("<Q", attr, 120, _addr(fds))
        keep = self._btf_info(prog, attr)   # noqa: F841  (buffers the kernel reads)
        if log_level:
            struct.pack_into("<IIQ", attr, 24, log_level, len(log), _addr(log))
        try:
            fd = _bpf(BPF_PROG_LOAD, attr, f"prog_load {prog.name}")
            if log_level:
                self.last_log = log.value.decode()
        except KernelError:
            # again with a log for the message (a log that overflows fails even a good load)
            struct.pack_into("<IIQ", attr, 24, 1, len(log), _addr(log))
            try:
                fd = _bpf(BPF_PROG_LOAD, attr, f"prog_load {prog.name}")
            except KernelError as e:
                raise KernelError(f"prog_load {prog.name}", e.errno, log.value.decode()) from None
        self.prog_fds.append(fd)
        return fd

    def _btf_info(self, prog, attr: bytearray):
        """Point PROG_LOAD at the object's BTF, func_info and line_info (buffers to keep alive)."""
        if self.btf_fd is None or not prog.func_info:
            return None
        fi = b"".join(struct.pack("<II", slot, info.btf_id) for slot, info in sorted(prog.func_info.items()))
        li, last = [], -1
        for slot, rec in prog.line_info:
            if slot > last:
                li.append(struct.pack("<IIII", slot, self._str_off(rec.file), self._str_off(rec.text),
                                      rec.line << 10 | rec.col))
                last = slot
        fbuf = ctypes.create_string_buffer(fi, len(fi))
        lbuf = ctypes.create_string_buffer(b"".join(li), max(16 * len(li), 1))
        struct.pack_into("<IIQI", attr, 72, self.btf_fd, 8, _addr(fbuf), len(prog.func_info))
        struct.pack_into("<IQI", attr, 92, 16, _addr(lbuf) if li else 0, len(li))
        return fbuf, lbuf

    def _str_off(self, text: str) -> int:
        # any offset of an equal string will do: the kernel only reads the text
        s = self.obj.btf.strings
        return s.find(b"\0" + text.encode() + b"\0") + 1 if text else 0

    @staticmethod
    def run(prog_fd: int, ctx: bytes | None = None, data: bytes | None = None) -> tuple[int, bytes]:
        """(retval, ctx after the run)."""
        c = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
        d = ctypes.create_string_buffer(data, len(data)) if data else None
        attr = bytearray(80)
        struct.pack_into("<IIII", attr, 0, prog_fd, 0, len(data or b""), 0)
        struct.pack_into("<QQI", attr, 16, _addr(d), 0, 0)   # repeat 0: once (syscall needs 0)
        struct.pack_into("<IIQ", attr, 40, len(ctx or b""), 0, _addr(c))
        _bpf(BPF_PROG_TEST_RUN, attr, "prog_test_run")
        return struct.unpack_from("<I", attr, 4)[0], (c.raw if c is not None else b"")



