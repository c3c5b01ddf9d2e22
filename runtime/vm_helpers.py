"""The helpers and kfuncs a VM adds to the map-free kernel set: map helpers, ring buffers, arena
kfuncs, probe reads, and the control-transfer helpers tail_call and bpf_loop (task identity,
spin locks, strings and for_each_map_elem: :mod:`.helpers_control`).

:func:`install` registers the helpers under their kernel ids (``enum bpf_func_id``) and
:func:`install_kfuncs` the kfuncs under ``pybpf.kfunc_ids``, bound to the VM's map resolver
(the map argument a program passes is ``map.address`` from ld_imm64, or an fd). Pointer
arguments are checked by the interpreter before each call: from the prototype (the one table,
:mod:`pybpf.verifier.protos`: ``ARG_PTR_TO_MEM`` with its size) and, for map keys and values
whose size comes from the map, through ``Helper.mem_args``.

``bpf_probe_read_kernel`` (and ``probe_read``, ``probe_read_user``, the ``_str`` variants) read
only memory the running program may read (its regions; arena pages only where allocated):
anything else gives -EFAULT and a zeroed destination, as a faulting read does in the kernel.

``bpf_tail_call`` and ``bpf_loop`` carry ``special`` markers: the interpreter's code generator
emits their control transfer itself (see :mod:`pybpf.runtime.interp`).
"""
from __future__ import annotations

import ctypes
import errno

from pybpf.errors import VMError
from pybpf.helper_names import HELPER_IDS

from pybpf.verifier import protos

from . import helpers_skb
from .helpers import ACTIVE_REGIONS, Helper
from . import kfuncs_dynptr, kfuncs_iter, kfuncs_misc, kfuncs_string, ringbuf_dynptr
from .map_helpers import make_helpers, make_kfuncs
from .maps.arena import Arena
from .maps.base import PAGE_SHIFT
from .memory import PROC

M64 = (1 << 64) - 1
EFAULT = -errno.EFAULT & M64


def _map_mem_args(resolve_map, spec):
    """``Helper.mem_args`` for a prototype's map-sized pointers (``Prototype.map_args``)."""
    def mem_args(args: tuple) -> list:
        m = resolve_map(args[0])
        if m is None:
            return []       # the helper itself refuses an unknown map (MapError EBADF)
        out = []
        for i, what, kind in spec:
            size = m.key_size if what == "key" else m.value_size
            if size:
                out.append((args[i], size, kind))
        return out
    return mem_args


def _readable(address: int, size: int) -> bool:
    """Whether the running program may read [address, address + size) (arena: allocated)."""
    regions = ACTIVE_REGIONS.get()
    if regions is None or size <= 0:
        return size == 0
    r = regions.find(address, size)
    if r is None:
        return False
    if isinstance(r.owner, Arena):
        first, last = address >> PAGE_SHIFT, (address + size - 1) >> PAGE_SHIFT
        return all(r.owner.is_allocated(p << PAGE_SHIFT) for p in range(first, last + 1))
    return True


def probe_read(dst: int, size: int, src: int) -> int:
    size &= 0xFFFFFFFF
    if not _readable(src, size):
        ctypes.memset(dst, 0, size)
        return EFAULT
    ctypes.memmove(dst, src, size)
    return 0


def probe_read_str(dst: int, size: int, src: int) -> int:
    """Copy a NUL-terminated string of at most size - 1 bytes; returns its length + 1."""
    size &= 0xFFFFFFFF
    if not size:
        return 0
    regions = ACTIVE_REGIONS.get()
    r = regions.find(src, 1) if regions is not None else None
    if r is None or not _readable(src, 1):
        ctypes.memset(dst, 0, size)
        return EFAULT
    avail = min(size - 1, r.end - src)
    chunk = bytes(PROC[src:src + avail])
    nul = chunk.find(b"\0")
    if nul < 0 and avail < size - 1:       # the string runs past readable memory
        ctypes.memset(dst, 0, size)
        return EFAULT
    text = chunk if nul < 0 else chunk[:nul]
    ctypes.memmove(dst, text + b"\0", len(text) + 1)
    return len(text) + 1


def _special(name: str):
    def stand_in(*args) -> int:
        raise VMError(f"bpf_{name} transfers control: the engine implements it at its call "
                      f"sites (the interpreter does; it cannot be reached through callx)")
    stand_in.__name__ = name
    return stand_in


def install_kfuncs(kfuncs, resolve_map) -> None:
    """Add the kfuncs to ``kfuncs`` (a HelperRegistry) under pybpf.kfunc_ids: the arena ones
    (map_helpers), the open-coded iterators (kfuncs_iter), the string kfuncs (kfuncs_string),
    RCU, the casts and bpf_throw (kfuncs_misc)."""
    for kid, mk in make_kfuncs(resolve_map).items():
        kfuncs.add(Helper(kid, mk.name, mk.fn, protos.KFUNCS_BY_ID[kid]))
    for name, fn in kfuncs_iter.KFUNC_FNS.items():
        proto = protos.kfunc(name)
        kfuncs.add(Helper(proto.id, name, fn, proto, mem_args=kfuncs_iter.iter_mem_args))
    for name, fn in kfuncs_string.KFUNC_FNS.items():
        proto = protos.kfunc(name)
        kfuncs.add(Helper(proto.id, name, fn, proto, mem_args=kfuncs_string.no_mem_args))
    for name, fn in kfuncs_misc.KFUNC_FNS.items():
        proto = protos.kfunc(name)
        kfuncs.add(Helper(proto.id, name, fn, proto))
    for name, (fn, index, kind) in kfuncs_dynptr.KFUNC_FNS.items():
        proto = protos.kfunc(name)
        kfuncs.add(Helper(proto.id, name, fn, proto,
                          mem_args=kfuncs_dynptr.dynptr_mem_args(index, kind)))


def install_graph_kfuncs(kfuncs, graphs) -> None:
    """Add the allocated-object and graph kfuncs bound to one VM's ``graphs``
    (:class:`pybpf.runtime.kfuncs_graph.Graphs`)."""
    from . import kfuncs_graph
    for name, (fn, mem_args, special) in kfuncs_graph.kfunc_fns(graphs).items():
        proto = protos.kfunc(name)
        kfuncs.add(Helper(proto.id, name, fn, proto, mem_args=mem_args, special=special))


def install_kptr_xchg(helpers, graphs) -> None:
    """bpf_kptr_xchg (helper 194) and bpf_per_cpu_ptr/bpf_this_cpu_ptr (153, 154) bound to one
    VM's objects: the destination is checked against the run's regions inside
    :meth:`pybpf.runtime.kfuncs_graph.Graphs.kptr_xchg` (the verifier's ARG_KPTR_XCHG_DEST is
    no memory kind of the prototype table); the per-CPU helpers take only live per-CPU
    objects."""
    hid = protos.HELPER_IDS["kptr_xchg"]
    helpers.add(Helper(hid, "kptr_xchg", graphs.kptr_xchg, protos.HELPERS[hid]))
    for name, fn in (("per_cpu_ptr", graphs.per_cpu_ptr), ("this_cpu_ptr", graphs.this_cpu_ptr)):
        hid = protos.HELPER_IDS[name]
        helpers.add(Helper(hid, name, fn, protos.HELPERS[hid]))


def install(helpers, resolve_map) -> None:
    """Add the VM helpers to ``helpers`` (a HelperRegistry) under their kernel ids."""
    for hid, mh in make_helpers(resolve_map).items():
        proto = protos.HELPERS[hid]
        spec = proto.map_args()
        helpers.add(Helper(hid, mh.name, mh.fn, proto,
                           mem_args=_map_mem_args(resolve_map, spec) if spec else None))
    for name in ("probe_read", "probe_read_kernel", "probe_read_user"):
        helpers.add(Helper(HELPER_IDS[name], name, probe_read, protos.helper_proto(name)))
    for name in ("probe_read_str", "probe_read_kernel_str", "probe_read_user_str"):
        helpers.add(Helper(HELPER_IDS[name], name, probe_read_str, protos.helper_proto(name)))
    for name, (fn, index, kind) in kfuncs_dynptr.HELPER_FNS.items():
        helpers.add(Helper(HELPER_IDS[name], name, fn, protos.helper_proto(name),
                           mem_args=kfuncs_dynptr.dynptr_mem_args(index, kind)))
    for name, (fn, index, kind) in ringbuf_dynptr.make(resolve_map).items():
        helpers.add(Helper(HELPER_IDS[name], name, fn, protos.helper_proto(name),
                           mem_args=kfuncs_dynptr.dynptr_mem_args(index, kind)))
    for name in ("tail_call", "loop"):
        helpers.add(Helper(HELPER_IDS[name], name, _special(name), protos.helper_proto(name),
                           special=name))
    helpers_skb.install(helpers)
