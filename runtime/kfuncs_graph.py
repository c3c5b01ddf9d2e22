"""Allocated objects and the graph data structures built from them (kernel/bpf/helpers.c):
``bpf_obj_new_impl``/``bpf_obj_drop_impl``, linked lists (``bpf_list_push_front_impl``,
``_push_back_impl``, ``bpf_list_pop_front/back``, ``bpf_list_front/back``) and red-black trees
(``bpf_rbtree_add_impl`` with its ``less`` callback, ``bpf_rbtree_remove``,
``bpf_rbtree_first``).

* Objects come from one :class:`ObjHeap` per VM: an anonymous mapping (pages appear when
  touched) carved into 8-byte-granular blocks, zeroed on allocation. The heap is one region of
  every run's table whose ``allow`` admits an access only inside one live or retired object,
  never the bytes between two objects. A dropped object is *retired*, as the kernel's
  bpf_obj_drop/bpf_percpu_obj_drop free through bpf_mem_free_rcu: its bytes stay as they were
  and its block is reused only once every run that started before the drop has ended, the
  dropping run included (runtime/grace.py ``settled``), and only when the heap has no fresh
  memory left (the kernel's grace period outlasts many runs); until it is reused it stays
  retired (never merely free). So a pointer the verifier still lets a
  program use after the drop (an untrusted kptr load, an RCU-protected one, a per-CPU copy:
  tests/data/elf/freed_objects.c) reads the object's last contents and writes land in it, in
  both engines and as in the kernel; the JIT, which does not check, reads the same bytes. The
  graph kfuncs and bpf_obj_drop know only live objects. The size
  is the struct's, from the running program's BTF (the kernel's verifier rewrites the type id
  into the size; pybpf reads the BTF of the program the run belongs to).
* Lists and trees are Python structures beside the objects, never pointers in BPF-visible
  memory: a root (``struct bpf_list_head``/``bpf_rb_root`` in a map value or global data)
  holds a token in its first 8 bytes that names its :class:`Root`; a node is the address of the
  node field inside its object. A program that scribbles over a root or a node (possible only
  unverified) can lose track of nodes (the root reads as a new, empty one; the old one's nodes
  are freed as the kernel's bpf_list_head_free frees a deleted element's) but never make the
  runtime follow a pointer it wrote. User space reads roots as zeros (btf_fields.without_special).
* Trees are red-black trees shaped as Linux's lib/rbtree.c shapes them (:mod:`.rbtree`):
  ``bpf_rbtree_add`` descends from the root calling ``less(new, node)`` (left when true) as the
  kernel's __bpf_rbtree_add does, so the calls to ``less``, ``bpf_rbtree_root/left/right`` and
  ``bpf_rbtree_first`` see the kernel's tree.
* ``bpf_obj_drop`` of an object still in a list or tree (possible only unverified) takes it out
  first; dropping anything that is not a live object is a VMError, as are graph kfuncs given a
  node that is not inside a live object.
* ``bpf_kptr_xchg`` (helper 194) stashes an object in a ``__kptr`` field: :meth:`Graphs.
  kptr_xchg` records what each field holds, so the element's delete or update
  (:func:`pybpf.runtime.maps.btf_fields.free_fields`), dropping the object the field is in and
  closing the map or the VM drop the stashed object (bpf_obj_free_fields).
* Map close frees what its roots hold (bpf_list_head_free / bpf_rb_root_free): :meth:`Graphs.
  free_in`.
"""
from __future__ import annotations

import bisect
import ctypes
import functools
import itertools
import mmap
import threading
from collections import deque
from dataclasses import dataclass, field

from pybpf.errors import VMError
from pybpf.kfunc_ids import KFUNC_IDS

from pybpf.verifier.calls import NR_CPU_IDS

from . import grace
from .helpers import ACTIVE_REGIONS, ACTIVE_RUN
from .memory import PACK, PROC, UNPACK, Region
from .rbtree import RbTree

HEAP_BYTES = 16 << 20           # per VM; objects beyond it make bpf_obj_new return NULL
# (a block retired by a drop counts until its grace period has passed)
ROOT_SIZE = 16
LIST, RBTREE = "bpf_list_head", "bpf_rb_root"
_TOKENS = itertools.count(0x9E3779B97F4A7C15, 0x10001)
GRAPH_KFUNC_IDS = frozenset(KFUNC_IDS[n] for n in (
    "bpf_obj_new_impl", "bpf_obj_drop_impl", "bpf_refcount_acquire_impl",
    "bpf_list_push_front_impl", "bpf_list_push_back_impl", "bpf_list_pop_front",
    "bpf_list_pop_back", "bpf_list_front", "bpf_list_back", "bpf_rbtree_add_impl",
    "bpf_rbtree_remove", "bpf_rbtree_first", "bpf_rbtree_root", "bpf_rbtree_left",
    "bpf_rbtree_right", "bpf_percpu_obj_new_impl", "bpf_percpu_obj_drop_impl"))
KPTR_XCHG_ID = 194                  # BPF_FUNC_kptr_xchg
NR_CPUS = NR_CPU_IDS                 # per-CPU objects have a copy per possible CPU


@dataclass
class Obj:
    base: int
    size: int
    refcount: int = 1
    nodes: dict = field(default_factory=dict)     # node address -> Root holding it
    stride: int = 0                  # a per-CPU object: each CPU's copy is this far apart


@dataclass
class Root:
    kind: str
    address: int
    token: int
    nodes: object                                # deque (list) or sorted list (rbtree)


class _NoHeap:
    """The heap before any program that allocates was loaded: nothing lives there."""

    objects: dict = {}

    def find(self, address: int) -> None:
        return None

    def alloc(self, size: int) -> int:
        return 0


class ObjHeap:
    """Memory for bpf_obj_new: blocks of a private anonymous mapping, by size class."""

    def __init__(self, size: int = HEAP_BYTES) -> None:
        self._mm = mmap.mmap(-1, size)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self._mm))
        self.size = size
        self._top = 0
        self._starts: list[int] = []
        self.objects: dict[int, Obj] = {}
        # dropped objects, readable and writable still: a block is live or retired from its
        # first allocation on (a retired one is reused as it is reallocated, never free in
        # between), so both engines reach the same bytes through any stale pointer
        self.retired: dict[int, Obj] = {}
        self._retired_starts: list[int] = []
        self._pending: dict[int, deque] = {}     # size class -> (token, base), oldest first
        self.region = Region(self.base, size, "bpf_obj_new objects", True, self,
                             allow=self.allow)

    def find(self, address: int) -> Obj | None:
        """The live object holding ``address``."""
        return _holding(self.objects, self._starts, address)

    def allow(self, address: int, size: int) -> bool:
        obj = self.find(address)
        if obj is None:
            obj = _holding(self.retired, self._retired_starts, address)
        return obj is not None and address + size <= obj.base + obj.size

    def alloc(self, size: int) -> int:
        cls = max(8, (size + 7) & ~7)
        if self._top + cls <= self.size:
            # fresh memory first: the kernel's grace period outlasts many runs, so a retired
            # object's bytes stay as they were for as long as there is other memory
            base, self._top = self.base + self._top, self._top + cls
        else:
            base = self._reuse(cls)
            if not base:
                return 0
        PROC[base:base + cls] = bytes(cls)
        self.objects[base] = Obj(base, size)
        bisect.insort(self._starts, base)
        return base

    def free(self, obj: Obj) -> None:
        """Retire ``obj`` (module docstring): its block is reused after a grace period."""
        del self.objects[obj.base]
        del self._starts[bisect.bisect_left(self._starts, obj.base)]
        self.retired[obj.base] = obj
        bisect.insort(self._retired_starts, obj.base)
        self._pending.setdefault(max(8, (obj.size + 7) & ~7), deque()).append(
            (grace.retire(), obj.base))

    def _reuse(self, cls: int) -> int:
        """The oldest retired block of ``cls`` whose grace period has passed, taken out of the
        retired ones (0: none)."""
        pending = self._pending.get(cls)
        if not pending or not grace.settled(pending[0][0]):
            return 0
        _, base = pending.popleft()
        del self.retired[base]
        del self._retired_starts[bisect.bisect_left(self._retired_starts, base)]
        return base


def _holding(objects: dict, starts: list, address: int) -> Obj | None:
    """The object of ``objects`` (bases sorted in ``starts``) holding ``address``."""
    i = bisect.bisect_right(starts, address) - 1
    if i < 0:
        return None
    obj = objects[starts[i]]
    return obj if address < obj.base + obj.size else None


def _locked(fn):
    """Runs on several threads share a VM: one lock keeps the heap and the graphs whole (the
    kernel's programs hold the root's bpf_spin_lock; the structures here are Python's)."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kw):
        with self.lock:
            return fn(self, *args, **kw)
    return wrapper


def _struct_size(type_id: int) -> int:
    """The size of the running program's BTF struct ``type_id`` (bpf_obj_new's local type),
    0 when the id names no sized struct (the kfunc then returns NULL)."""
    btf = getattr(ACTIVE_RUN.get(), "prog_btf", None)
    if btf is None or not 0 < type_id < len(btf.types):
        return 0
    t = btf.resolve(type_id)
    return t.size if t.kind == "struct" else 0


class Graphs:
    """One VM's objects, lists and trees. The heap is mapped when the first program that calls
    a graph kfunc is loaded (:meth:`prepare`), so every run of such a program has its region."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.heap = _NoHeap()
        self.roots: dict[int, Root] = {}
        self.kptrs: dict[int, int] = {}      # __kptr field address -> the object stashed there
        self._regions: list[Region] = []

    @_locked
    def prepare(self, prog) -> None:
        if self._regions:
            return
        for _, form, insn in prog.instructions():
            if form.kind == "call" and (form.op == "kfunc" and insn.imm in GRAPH_KFUNC_IDS
                                        or form.op == "helper" and insn.imm == KPTR_XCHG_ID):
                self.heap = ObjHeap()
                self._regions = [self.heap.region]
                return

    def regions(self) -> list[Region]:
        return self._regions

    # -- objects ----------------------------------------------------------------------------
    @_locked
    def obj_new(self, type_id: int, meta: int) -> int:
        size = _struct_size(type_id)
        return self.heap.alloc(size) if size else 0

    def _object(self, ptr: int, what: str) -> Obj:
        obj = self.heap.objects.get(ptr)
        if obj is None:
            raise VMError(f"{what}: 0x{ptr:x} is not an object bpf_obj_new returned")
        return obj

    def drop(self, obj: Obj) -> None:
        """__bpf_obj_drop_impl: one reference less; the last one frees the object (taking it
        out of any graph first: only an unverified program drops an object a graph holds)."""
        obj.refcount -= 1
        if obj.refcount > 0:
            return
        for node, root in list(obj.nodes.items()):
            self._unlink(root, node)
        # bpf_obj_free_fields of the object's own record: what its lists, trees and kptr
        # fields hold goes too
        for address in [a for a in self.roots if obj.base <= a < obj.base + obj.size]:
            self._free_root(self.roots[address])
        for address in [a for a in self.kptrs if obj.base <= a < obj.base + obj.size]:
            self.kptr_free(address)
        self.heap.free(obj)

    @_locked
    def percpu_obj_new(self, type_id: int, meta: int) -> int:
        """bpf_percpu_obj_new: one copy of the struct per possible CPU (NR_CPUS, the kernel's
        nr_cpu_ids), zeroed; the returned address is the first copy's (a per-CPU pointer the
        program cannot dereference: bpf_this_cpu_ptr/bpf_per_cpu_ptr give a copy)."""
        size = _struct_size(type_id)
        if not size:
            return 0
        stride = (size + 7) & ~7
        base = self.heap.alloc(stride * NR_CPUS)
        if base:
            self.heap.objects[base].stride = stride
        return base

    def _percpu(self, ptr: int, what: str) -> Obj:
        obj = self.heap.objects.get(ptr)
        if obj is None or not obj.stride:
            raise VMError(f"{what}: 0x{ptr:x} is not a per-CPU object bpf_percpu_obj_new "
                          f"returned")
        return obj

    @_locked
    def per_cpu_ptr(self, ptr: int, cpu: int) -> int:
        """bpf_per_cpu_ptr: CPU ``cpu``'s copy, NULL for a CPU past nr_cpu_ids, as the
        kernel's (kernel/bpf/helpers.c). Its verifier types an RCU per-CPU object's copy as
        never NULL, so a program may dereference that NULL: the kernel then faults; both
        engines stop with a MemoryAccessError (the JIT checks such accesses: jit/lower.py
        btf_accesses)."""
        obj = self._percpu(ptr, "bpf_per_cpu_ptr")
        cpu &= 0xFFFFFFFF                   # u32 cpu
        return obj.base + cpu * obj.stride if cpu < NR_CPUS else 0

    @_locked
    def this_cpu_ptr(self, ptr: int) -> int:
        """bpf_this_cpu_ptr: the running CPU's copy (pybpf runs on CPU 0, as
        bpf_get_smp_processor_id answers)."""
        return self._percpu(ptr, "bpf_this_cpu_ptr").base

    @_locked
    def percpu_obj_drop(self, ptr: int, meta: int) -> int:
        self.drop(self._percpu(ptr, "bpf_percpu_obj_drop"))
        return 0

    @_locked
    def obj_drop(self, ptr: int, meta: int) -> int:
        self.drop(self._object(ptr, "bpf_obj_drop"))
        return 0

    @_locked
    def refcount_acquire(self, ptr: int, meta: int) -> int:
        obj = self.heap.find(ptr)
        if obj is None or obj.base != ptr:
            raise VMError(f"bpf_refcount_acquire: 0x{ptr:x} is not an object bpf_obj_new "
                          f"returned")
        obj.refcount += 1
        return ptr

    # -- roots and nodes --------------------------------------------------------------------
    def root(self, address: int, kind: str) -> Root:
        """The list or tree whose head is at ``address`` (a new empty one if its token is
        not there: a fresh or overwritten head, as the kernel's lazy head init)."""
        regions = ACTIVE_REGIONS.get()
        if regions is not None:
            regions.check(address, ROOT_SIZE, "write")
        r = self.roots.get(address)
        token = UNPACK[8](PROC, address)[0]
        if r is not None and r.token == token and r.kind == kind:
            return r
        if r is not None:
            self._free_root(r)
        r = Root(kind, address, next(_TOKENS) & (1 << 64) - 1,
                 deque() if kind == LIST else RbTree())
        PACK[8](PROC, address, r.token)
        PACK[8](PROC, address + 8, 0)
        self.roots[address] = r
        return r

    def _node(self, address: int, what: str) -> Obj:
        obj = self.heap.find(address)
        if obj is None:
            raise VMError(f"{what}: 0x{address:x} is not a node inside a live object")
        return obj

    def _unlink(self, root: Root, node: int) -> None:
        if root.kind == RBTREE:
            root.nodes.erase(node)
        else:
            root.nodes.remove(node)
        obj = self.heap.find(node)
        if obj is not None:
            obj.nodes.pop(node, None)

    def _free_root(self, root: Root) -> None:
        """bpf_list_head_free / bpf_rb_root_free: drop every object the root holds."""
        self.roots.pop(root.address, None)
        nodes = list(root.nodes)
        root.nodes.clear()
        for node in nodes:
            obj = self.heap.find(node)
            if obj is not None:
                obj.nodes.pop(node, None)
                self.drop(obj)

    @_locked
    def free_at(self, address: int) -> None:
        """Free the root at ``address`` (bpf_obj_free_fields of a map value)."""
        root = self.roots.get(address)
        if root is not None:
            self._free_root(root)

    @_locked
    def free_in(self, start: int, size: int) -> None:
        """Free the roots and kptrs in [start, start + size) (a closed map's memory)."""
        for address in [a for a in self.roots if start <= a < start + size]:
            self._free_root(self.roots[address])
        for address in [a for a in self.kptrs if start <= a < start + size]:
            self.kptr_free(address, read=False)

    @_locked
    def close(self) -> None:
        for root in list(self.roots.values()):
            self._free_root(root)
        for address in list(self.kptrs):
            self.kptr_free(address, read=False)

    # -- stashed objects: bpf_kptr_xchg and __kptr fields ------------------------------------
    @_locked
    def kptr_xchg(self, dst: int, ptr: int) -> int:
        """bpf_kptr_xchg: store ``ptr`` (an object, or NULL) at ``dst`` and return what was
        there. ``dst`` must be 8 writable bytes of the run (a map value's or an object's kptr
        field, as the verifier proved); ``ptr`` must be a live object's start."""
        regions = ACTIVE_REGIONS.get()
        if regions is not None:
            regions.check(dst, 8, "write")
        if ptr and self.heap.objects.get(ptr) is None:
            raise VMError(f"bpf_kptr_xchg: 0x{ptr:x} is not an object bpf_obj_new returned")
        old = UNPACK[8](PROC, dst)[0]
        PACK[8](PROC, dst, ptr)
        if ptr:
            self.kptrs[dst] = ptr
        else:
            self.kptrs.pop(dst, None)
        return old

    @_locked
    def kptr_free(self, address: int, read: bool = True) -> None:
        """bpf_obj_free_fields for the kptr field at ``address``: xchg(field, NULL) and drop
        the object. ``read``: the field's memory is still mapped (a value deleted or replaced,
        an object dropped); a closed map's memory is gone, its record of the field is used.
        A field that no longer holds what bpf_kptr_xchg put there (only an unverified program
        can write it) loses its object, as the kernel would lose it."""
        stashed = self.kptrs.pop(address, None)
        if read:
            if UNPACK[8](PROC, address)[0] != stashed:
                return
            PACK[8](PROC, address, 0)
        obj = self.heap.objects.get(stashed) if stashed else None
        if obj is not None:
            self.drop(obj)

    def _add(self, root: Root, node: int, what: str) -> Obj | None:
        """Own ``node`` by ``root``; None (and the object dropped) if it is in a graph
        already, as __bpf_list_add / __bpf_rbtree_add do (-EINVAL)."""
        obj = self._node(node, what)
        if obj.nodes.get(node) is not None:
            self.drop(obj)          # the owning reference passed in is consumed
            return None
        obj.nodes[node] = root
        return obj

    # -- lists ------------------------------------------------------------------------------
    @_locked
    def push(self, head: int, node: int, back: bool) -> int:
        root = self.root(head, LIST)
        if self._add(root, node, "bpf_list_push") is None:
            return -22 & (1 << 64) - 1
        (root.nodes.append if back else root.nodes.appendleft)(node)
        return 0

    @_locked
    def pop(self, head: int, back: bool) -> int:
        root = self.root(head, LIST)
        if not root.nodes:
            return 0
        node = root.nodes.pop() if back else root.nodes.popleft()
        obj = self.heap.find(node)
        if obj is not None:
            obj.nodes.pop(node, None)
        return node

    @_locked
    def peek(self, head: int, back: bool) -> int:
        root = self.root(head, LIST)
        return (root.nodes[-1] if back else root.nodes[0]) if root.nodes else 0

    # -- trees ------------------------------------------------------------------------------
    @_locked
    def rbtree_first(self, root_addr: int) -> int:
        return self.root(root_addr, RBTREE).nodes.first()

    @_locked
    def rbtree_root(self, root_addr: int) -> int:
        tree = self.root(root_addr, RBTREE).nodes
        return tree.root.key if tree.root is not None else 0

    @_locked
    def rbtree_child(self, root_addr: int, node: int, right: bool) -> int:
        """bpf_rbtree_left/right: NULL unless ``node`` is in this tree (the owner check)."""
        root = self.root(root_addr, RBTREE)
        obj = self.heap.find(node)
        if obj is None or obj.nodes.get(node) is not root:
            return 0
        return root.nodes.child(node, right)

    @_locked
    def rbtree_remove(self, root_addr: int, node: int) -> int:
        root = self.root(root_addr, RBTREE)
        obj = self.heap.find(node)
        if obj is None or obj.nodes.get(node) is not root:
            return 0            # not in this tree: NULL, as the kernel's owner check answers
        self._unlink(root, node)
        return node

    @_locked
    def rbtree_add_start(self, root_addr: int, node: int) -> "RbAdd":
        return RbAdd(self, self.root(root_addr, RBTREE), node)


class RbAdd:
    """One bpf_rbtree_add: ``next()`` gives the node to compare the new one with (0 once it is
    linked), ``answer(less)`` takes ``less(new, that node)`` and goes left when true, as
    __bpf_rbtree_add descends; ``result`` is the kfunc's. A ``less`` that changed the tree
    (possible only unverified) makes the descent start again from the root."""

    def __init__(self, graphs: Graphs, root: Root, node: int) -> None:
        self.graphs, self.root, self.node = graphs, root, node
        self.parent = self.cur = None
        self.right = self.started = False
        self.result = 0
        self.done = graphs._add(root, node, "bpf_rbtree_add") is None
        if self.done:
            self.result = -22 & (1 << 64) - 1

    @property
    def lock(self):
        return self.graphs.lock

    def _consistent(self, tree: RbTree) -> bool:
        p = self.parent
        if p is None:
            return tree.root is self.cur
        return tree.nodes.get(p.key) is p and (p.right if self.right else p.left) is self.cur

    @_locked
    def next(self) -> int:
        if self.done:
            return 0
        tree = self.root.nodes
        if not self.started or not self._consistent(tree) or self.node in tree:
            if self.node in tree:           # added meanwhile (unverified): nothing to do
                self.done = True
                return 0
            self.parent, self.right, self.cur, self.started = None, False, tree.root, True
        if self.cur is not None:
            return self.cur.key
        tree.link(self.node, self.parent.key if self.parent is not None else 0, self.right)
        self.done = True
        return 0

    @_locked
    def answer(self, less: int) -> None:
        cur = self.cur
        if cur is None:
            return
        self.parent, self.right = cur, not less
        self.cur = cur.left if less else cur.right


def graph_mem_args(args: tuple) -> list:
    """Every graph kfunc's first argument is its root: 16 bytes it reads and writes."""
    return [(args[0], ROOT_SIZE, "write")]


def kfunc_fns(g: Graphs) -> dict:
    """name -> (implementation, mem_args or None, special) for a VM's Graphs."""
    return {
        "bpf_obj_new_impl": (g.obj_new, None, ""),
        "bpf_obj_drop_impl": (g.obj_drop, None, ""),
        "bpf_percpu_obj_new_impl": (g.percpu_obj_new, None, ""),
        "bpf_percpu_obj_drop_impl": (g.percpu_obj_drop, None, ""),
        "bpf_refcount_acquire_impl": (g.refcount_acquire, None, ""),
        "bpf_list_push_front_impl": (lambda h, n, meta, off: g.push(h, n, False),
                                     graph_mem_args, ""),
        "bpf_list_push_back_impl": (lambda h, n, meta, off: g.push(h, n, True),
                                    graph_mem_args, ""),
        "bpf_list_pop_front": (lambda h: g.pop(h, False), graph_mem_args, ""),
        "bpf_list_pop_back": (lambda h: g.pop(h, True), graph_mem_args, ""),
        "bpf_list_front": (lambda h: g.peek(h, False), graph_mem_args, ""),
        "bpf_list_back": (lambda h: g.peek(h, True), graph_mem_args, ""),
        "bpf_rbtree_first": (g.rbtree_first, graph_mem_args, ""),
        "bpf_rbtree_remove": (g.rbtree_remove, graph_mem_args, ""),
        "bpf_rbtree_root": (g.rbtree_root, graph_mem_args, ""),
        "bpf_rbtree_left": (lambda r, n: g.rbtree_child(r, n, False), graph_mem_args, ""),
        "bpf_rbtree_right": (lambda r, n: g.rbtree_child(r, n, True), graph_mem_args, ""),
        "bpf_rbtree_add_impl": (RbtreeAddStandIn(g), graph_mem_args, "rbtree_add"),
    }


class RbtreeAddStandIn:
    """The registry's ``fn`` for bpf_rbtree_add_impl: the engines implement the call (it calls
    the program's ``less``) with ``graphs.rbtree_add_start``."""

    __name__ = "bpf_rbtree_add_impl"

    def __init__(self, graphs: Graphs) -> None:
        self.graphs = graphs

    def __call__(self, *args) -> int:
        raise VMError("bpf_rbtree_add calls its less callback: the engine implements it at "
                      "its call sites")
