"""The one table of helper and kfunc prototypes, in the kernel's terms (``struct bpf_func_proto``).

Every consumer reads it: the verifier (argument and return checks, :mod:`.calls`), the
interpreter (run-time pointer checks, :meth:`Prototype.memory_args`) and the JIT (argument counts
for its bridge), through the runtime's helper registries, which take their prototypes from here.
Imports flow runtime -> verifier: this module imports nothing from the runtime.

* :data:`HELPERS` kernel helpers by id (``enum bpf_func_id``): return and argument kinds as the
  kernel names them (``ARG_CONST_MAP_PTR``, ``ARG_PTR_TO_MEM | MEM_RDONLY``, ...),
  ``gpl_only``, ``pkt_access``, and the program types whose ``get_func_proto`` returns it.
* :data:`KFUNCS` kfuncs by name (pybpf's ids in :mod:`pybpf.kfunc_ids`): argument kinds as the
  kernel classifies BTF parameters (``KF_ARG_PTR_TO_MAP`` for ``__map``, ``KF_ARG_IGNORE`` for
  ``__ign``, ``KF_ARG_SCALAR``...), the ``KF_*`` flags, the C declaration.
* :data:`UBPF_TEST_HELPERS` the bpf_conformance/uBPF plugin's helpers (ids 0-5 clash with kernel
  ids, so they are a separate table, used only by ``.data`` files).

Adding a helper: add one :func:`_h` row (kernel prototype from ``net/core/filter.c``,
``kernel/bpf/helpers.c``, ``kernel/trace/bpf_trace.c``...). Which program types may call a
kernel helper comes from :data:`KERNEL_HELPER_PROG_TYPES`, measured on Linux 6.18 (a helper
whose ``get_func_proto`` returns NULL for a type answers ``program of this type cannot use
helper``); ``tests/test_protos.py`` re-measures it against the running kernel.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from pybpf.helper_names import HELPER_IDS, HELPER_NAMES  # noqa: F401  (re-exported)
from pybpf.kfunc_ids import KFUNC_IDS

# --- argument and return kinds (enum bpf_arg_type, enum bpf_return_type, enum bpf_type_flag) ---
ARG_ANYTHING = "ARG_ANYTHING"
ARG_DONTCARE = "ARG_DONTCARE"
ARG_CONST_MAP_PTR = "ARG_CONST_MAP_PTR"
ARG_PTR_TO_MAP_KEY = "ARG_PTR_TO_MAP_KEY"
ARG_PTR_TO_MAP_VALUE = "ARG_PTR_TO_MAP_VALUE"
ARG_PTR_TO_MEM = "ARG_PTR_TO_MEM"                   # the helper may write [ptr, ptr + size)
ARG_CONST_SIZE = "ARG_CONST_SIZE"
ARG_CONST_SIZE_OR_ZERO = "ARG_CONST_SIZE_OR_ZERO"
ARG_CONST_ALLOC_SIZE_OR_ZERO = "ARG_CONST_ALLOC_SIZE_OR_ZERO"
ARG_PTR_TO_CTX = "ARG_PTR_TO_CTX"
ARG_PTR_TO_FUNC = "ARG_PTR_TO_FUNC"
ARG_PTR_TO_STACK = "ARG_PTR_TO_STACK"
ARG_PTR_TO_CONST_STR = "ARG_PTR_TO_CONST_STR"       # a NUL-terminated string the helper reads
ARG_PTR_TO_LONG = "ARG_PTR_TO_LONG"
ARG_PTR_TO_INT = "ARG_PTR_TO_INT"
ARG_PTR_TO_SPIN_LOCK = "ARG_PTR_TO_SPIN_LOCK"
ARG_PTR_TO_BTF_ID = "ARG_PTR_TO_BTF_ID"
ARG_PTR_TO_DYNPTR = "ARG_PTR_TO_DYNPTR"
ARG_PTR_TO_TIMER = "ARG_PTR_TO_TIMER"
ARG_PTR_TO_KPTR = "ARG_PTR_TO_KPTR"
ARG_PTR_TO_PERCPU_BTF_ID = "ARG_PTR_TO_PERCPU_BTF_ID"   # a per-CPU object (bpf_per_cpu_ptr)
ARG_KPTR_XCHG_DEST = "ARG_KPTR_XCHG_DEST"   # a map value's or an object's referenced kptr field
ARG_PTR_TO_SOCKET = "ARG_PTR_TO_SOCKET"
ARG_PTR_TO_SOCK_COMMON = "ARG_PTR_TO_SOCK_COMMON"
ARG_PTR_TO_ARENA = "ARG_PTR_TO_ARENA"
ARG_PTR_TO_RINGBUF_MEM = "ARG_PTR_TO_RINGBUF_MEM"     # memory bpf_ringbuf_reserve returned

# flags OR'ed onto a base kind; written "BASE|FLAG|FLAG" in the table
PTR_MAYBE_NULL = "PTR_MAYBE_NULL"
MEM_RDONLY = "MEM_RDONLY"
MEM_UNINIT = "MEM_UNINIT"
MEM_WRITE = "MEM_WRITE"
MEM_RINGBUF = "MEM_RINGBUF"
MEM_FIXED_SIZE = "MEM_FIXED_SIZE"
MEM_ALLOC = "MEM_ALLOC"
OBJ_RELEASE = "OBJ_RELEASE"
FLAGS = frozenset({PTR_MAYBE_NULL, MEM_RDONLY, MEM_UNINIT, MEM_WRITE, MEM_RINGBUF,
                   MEM_FIXED_SIZE, MEM_ALLOC, OBJ_RELEASE, "MEM_USER", "MEM_PERCPU",
                   "PTR_TRUSTED", "PTR_UNTRUSTED", "MEM_RCU", "DYNPTR_TYPE_LOCAL",
                   "DYNPTR_TYPE_RINGBUF", "DYNPTR_TYPE_SKB", "DYNPTR_TYPE_XDP"})

# the kernel's composite names (include/linux/bpf.h)
ARG_PTR_TO_UNINIT_MEM = "ARG_PTR_TO_MEM|MEM_UNINIT|MEM_WRITE"   # the helper fills it
ARG_PTR_TO_MEM_RDONLY = "ARG_PTR_TO_MEM|MEM_RDONLY"
ARG_PTR_TO_STACK_OR_NULL = "ARG_PTR_TO_STACK|PTR_MAYBE_NULL"
ARG_PTR_TO_MAP_VALUE_UNINIT = "ARG_PTR_TO_MAP_VALUE|MEM_UNINIT|MEM_WRITE"

RET_INTEGER = "RET_INTEGER"
RET_VOID = "RET_VOID"
RET_PTR_TO_MAP_VALUE = "RET_PTR_TO_MAP_VALUE"
RET_PTR_TO_MAP_VALUE_OR_NULL = "RET_PTR_TO_MAP_VALUE|PTR_MAYBE_NULL"
RET_PTR_TO_MEM = "RET_PTR_TO_MEM"
RET_PTR_TO_MEM_OR_NULL = "RET_PTR_TO_MEM|PTR_MAYBE_NULL"
RET_PTR_TO_RINGBUF_MEM_OR_NULL = "RET_PTR_TO_MEM|PTR_MAYBE_NULL|MEM_RINGBUF"
RET_PTR_TO_SOCKET_OR_NULL = "RET_PTR_TO_SOCKET|PTR_MAYBE_NULL"
RET_PTR_TO_BTF_ID = "RET_PTR_TO_BTF_ID"

# kfunc parameter kinds (enum kfunc_ptr_arg_type plus scalars, kernel/bpf/verifier.c)
KF_ARG_SCALAR = "KF_ARG_SCALAR"                 # an integer parameter: R%d must be a scalar
KF_ARG_IGNORE = "KF_ARG_IGNORE"                 # a ``__ign`` parameter: not checked at all
KF_ARG_PTR_TO_MAP = "KF_ARG_PTR_TO_MAP"         # a ``__map`` parameter: a map pointer
KF_ARG_PTR_TO_CTX = "KF_ARG_PTR_TO_CTX"
KF_ARG_PTR_TO_MEM = "KF_ARG_PTR_TO_MEM"
KF_ARG_PTR_TO_MEM_SIZE = "KF_ARG_PTR_TO_MEM_SIZE"   # a pointer followed by its ``__sz`` size
KF_ARG_CONST = "KF_ARG_CONST"                   # a ``__k`` parameter: a known constant
KF_ARG_PTR_TO_ITER = "KF_ARG_PTR_TO_ITER"       # ``struct bpf_iter_<type> *`` on the stack
KF_ARG_PTR_TO_DYNPTR = "KF_ARG_PTR_TO_DYNPTR"   # ``struct bpf_dynptr *`` (16 bytes of stack)
KF_ARG_PTR_TO_ALLOC_BTF_ID = "KF_ARG_PTR_TO_ALLOC_BTF_ID"   # an object bpf_obj_new returned
KF_ARG_PTR_TO_REFCOUNTED_KPTR = "KF_ARG_PTR_TO_REFCOUNTED_KPTR"
KF_ARG_PTR_TO_LIST_HEAD = "KF_ARG_PTR_TO_LIST_HEAD"         # ``struct bpf_list_head *``
KF_ARG_PTR_TO_LIST_NODE = "KF_ARG_PTR_TO_LIST_NODE"         # ``struct bpf_list_node *``
KF_ARG_PTR_TO_RB_ROOT = "KF_ARG_PTR_TO_RB_ROOT"             # ``struct bpf_rb_root *``
KF_ARG_PTR_TO_RB_NODE = "KF_ARG_PTR_TO_RB_NODE"             # ``struct bpf_rb_node *``
KF_ARG_PTR_TO_CALLBACK = "KF_ARG_PTR_TO_CALLBACK"           # a static subprogram (``less``)

# KF_* flags (include/linux/btf.h)
KF_ACQUIRE, KF_RELEASE, KF_RET_NULL = "KF_ACQUIRE", "KF_RELEASE", "KF_RET_NULL"
KF_TRUSTED_ARGS, KF_SLEEPABLE, KF_DESTRUCTIVE = "KF_TRUSTED_ARGS", "KF_SLEEPABLE", "KF_DESTRUCTIVE"
KF_ARENA_RET, KF_ARENA_ARG1, KF_ARENA_ARG2 = "KF_ARENA_RET", "KF_ARENA_ARG1", "KF_ARENA_ARG2"
KF_ITER_NEW, KF_ITER_NEXT, KF_ITER_DESTROY = "KF_ITER_NEW", "KF_ITER_NEXT", "KF_ITER_DESTROY"

# the program types pybpf runs (runtime/contexts.py PROG_TYPES; ``mem`` is pybpf's own and may
# call every helper pybpf implements, as BPF_PROG_TYPE_SYSCALL may call the tracing set)
PROG_TYPES = ("mem", "syscall", "socket_filter", "sched_cls", "cgroup_skb", "lwt_in", "xdp",
              "tracepoint", "kprobe", "lwt_out", "lwt_xmit", "flow_dissector", "raw_tracepoint",
              "sk_lookup", "cgroup_sock", "cgroup_sock_addr", "sk_msg", "sock_ops", "perf_event")

# Which helper ids each program type's get_func_proto returns, measured on Linux 6.18 by
# loading ``call N; r0 = 0; exit`` (syscall programs loaded sleepable, as 6.18 requires):
# "program of this type cannot use helper" and "invalid func" count as refused.
_MEASURED_6_18 = {
    "socket_filter": "1-3 5-8 12 14-17 22 25-26 35 37 42 46-47 55 68 80 87-89 93-94 105-106 "
                     "109 112-115 117-118 120 122-123 125 130-134 136-141 148-149 153-154 "
                     "156-158 160 164-165 169-172 175-178 180-182 191 194-203 208-211",
    "kprobe": "1-8 12 14-17 22 25 27 35 37 42 45 55 67 80 87-89 93-94 105-106 109 112-115 "
              "117-118 120 123 125 130-134 141 148-149 153-154 156-158 164-165 169-177 180-182 "
              "191 194-195 197-203 208-211",
    "sched_cls": "1-3 5-26 28-35 37-43 46-48 50 55 66 68-69 79-80 83-89 93-100 105-110 112-115 "
                 "117-118 120 122-125 130-141 148-149 151-158 160 163-165 169-172 175-178 "
                 "180-182 191-192 194-211",
    "tracepoint": "1-8 12 14-17 22 25 27 35 37 42 45 55 67 80 87-89 93-94 105-106 109 112-115 "
                  "117-118 120 123 125 130-134 141 148-149 153-154 156-158 164-165 169-177 "
                  "180-182 191 194-195 197-203 208-211",
    "xdp": "1-3 5-8 12 14-17 22-23 25 28 35 37 42 44 51 55 65 69 80 84-89 93-94 99-100 105-106 "
           "109-110 112-115 117-118 120 123 125 130-134 136-141 148-149 153-154 156-158 160 "
           "163-165 169-172 175-178 180-182 188-191 194-211",
    "cgroup_skb": "1-3 5-8 12 14-17 22 25-26 35 37 42 46-47 55 68 79-81 83-89 93-99 105-109 "
                  "112-115 117-118 120 122-123 125 128-134 136-141 148-149 153-154 156-158 160 "
                  "164-165 169-172 175-178 180-182 191 194-203 208-211",
    "lwt_in": "1-3 5-8 12 14-17 22 24-26 28 33-35 37 39 42 55 73 80 87-89 93-94 105-106 109 "
              "112-115 117-118 120 123 125 130-134 136-141 148-149 153-154 156-158 160 164-165 "
              "169-172 175-178 180-182 191 194-203 208-211",
    "syscall": "1-8 12 14-17 22 25 27 35 37 42 45-46 55 67 80 87-89 93-94 105-109 111-115 "
               "117-118 120-121 123 125 130-134 136-141 147-149 153-154 156-158 162 164-173 "
               "175-182 188 191 194-203 208-211",
    # context program types (issue 10/11 ctx rules; cgroup_sock_addr measured as connect4,
    # sk_lookup/cgroup_sock/flow_dissector/sk_msg/sock_ops with their one libbpf attach type)
    "lwt_out": "1-3 5-8 12 14-17 22 24-26 28 33-35 37 39 42 55 80 87-89 93-94 105-106 109 "
               "112-115 117-118 120 123 125 130-134 136-141 148-149 153-154 156-158 160 "
               "164-165 169-172 175-178 180-182 191 194-203 208-211",
    "lwt_xmit": "1-3 5-17 20-26 28-30 33-35 37-43 55 73 80 87-89 93-94 105-106 109 112-115 "
                "117-118 120 123 125 130-141 148-149 153-154 156-158 160 164-165 169-172 "
                "175-178 180-182 191 194-203 208-211",
    "flow_dissector": "1-3 5-8 12 14-17 22 26 35 37 42 55 80 87-89 93-94 105-106 109 112-115 "
                      "117-118 120 123 125 130-134 136-141 148-149 153-154 156-158 160 164-165 "
                      "169-172 175-178 180-182 191 194-203 208-211",
    "raw_tracepoint": "1-8 12 14-17 22 25 27 35 37 42 45 55 67 80 87-89 93-94 105-106 109 "
                      "112-115 117-118 120 123 125 130-134 141 148-149 153-154 156-158 164-165 "
                      "169-177 180-182 191 194-195 197-203 208-211",
    "sk_lookup": "1-3 5-8 12 14-17 22 25 35 37 42 55 80 86-89 93-94 105-106 109 112-115 117-118 "
                 "120 123-125 130-134 136-141 148-149 153-154 156-158 160 164-165 169-172 "
                 "175-178 180-182 191 194-203 208-211",
    "cgroup_sock": "1-3 5-8 12 14-17 22 25 35 37 42 46 55 80-81 87-89 93-94 105-107 109 112-115 "
                   "117-118 120 122-123 125 130-134 141 148-149 153-154 156-158 160 164-165 "
                   "169-172 175-177 180-182 186-187 191 194-195 197-203 208-211",
    "cgroup_sock_addr": "1-3 5-8 12 14-17 22 25 35 37 42 46 49 55 57 64 80-81 84-89 93-94 99 "
                        "105-109 112-115 117-118 120 122-123 125 130-134 136-141 148-149 "
                        "153-154 156-158 160 164-165 169-172 175-178 180-182 186-187 191 "
                        "194-203 208-211",
    "sk_msg": "1-3 5-8 12 14-17 22 25 35 37 42 55 60-63 71 80 87-91 93-94 105-109 112-115 "
              "117-118 120 122-123 125 130-134 136-141 148-149 153-154 156-158 160 164-165 "
              "169-172 175-178 180-182 191 194-203 208-211",
    "sock_ops": "1-3 5-8 12 14-17 22 25 35 37 42 46 49 53 55 57 59 70 80-81 87-89 93-94 96 "
                "105-109 112-115 117-118 120 122-123 125 130-134 136-144 148-149 153-154 "
                "156-158 160 164-165 169-172 175-178 180-182 191 194-203 208-211",
    "perf_event": "1-8 12 14-17 22 25 27 35 37 42 45 55-56 67 80 87-89 93-94 105-106 109 "
                  "112-115 117-120 123 125 130-134 141 148-149 153-154 156-158 164-165 169-177 "
                  "180-182 191 194-195 197-203 208-211",
}


def _ids(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split():
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(out)


KERNEL_HELPER_PROG_TYPES: dict[str, frozenset[int]] = {
    t: _ids(s) for t, s in _MEASURED_6_18.items()}
"""Program type -> helper ids its ``get_func_proto`` answers (Linux 6.18), for every kernel
helper, implemented by pybpf or not."""

MAX_HELPER_ID = len(HELPER_NAMES)        # __BPF_FUNC_MAX_ID: larger ids are `invalid func`


def split_kind(kind: str) -> tuple[str, frozenset[str]]:
    """``"ARG_PTR_TO_MEM|MEM_RDONLY"`` -> ``("ARG_PTR_TO_MEM", {"MEM_RDONLY"})``."""
    base, *flags = kind.split("|")
    return base, frozenset(flags)


@dataclass(frozen=True)
class Prototype:
    """Return and argument kinds of one helper or kfunc, kernel ``bpf_func_proto`` style.

    ``ret`` and ``args`` are kind names (module constants); ``nargs`` is how many registers the
    implementation takes (trailing ``ARG_DONTCARE`` ones are passed but not checked, as the
    kernel leaves unnamed arguments of a bpf_func_proto); ``prog_types`` the program types
    that may call it (None: every type, e.g. a helper a user registers); ``gpl_only``,
    ``pkt_access`` (may take packet pointers), ``might_sleep`` as the kernel's fields;
    ``kfunc_flags`` the ``KF_*`` set of a kfunc; ``ret_size_arg`` the argument whose constant
    gives the size of returned memory (``bpf_ringbuf_reserve``'s size); ``c_decl`` a kfunc's C
    declaration, for people reading the table; ``changes_pkt_data`` for helpers that may move
    the packet (bpf_helper_changes_pkt_data: every packet pointer is invalid after the call);
    ``arg_size`` the byte size of each ``MEM_FIXED_SIZE`` argument (by argument index);
    ``ret_size`` the size of the memory a kfunc's pointer return points to (``int *``: 4, the
    kernel's ``meta.r0_size`` from the BTF return type); ``iter_type`` the ``<type>`` of the
    ``struct bpf_iter_<type>`` a ``KF_ARG_PTR_TO_ITER`` argument takes, ``iter_size`` its size.
    """

    ret: str = RET_INTEGER
    args: tuple[str, ...] = ()
    name: str = ""
    id: int | None = None
    prog_types: frozenset[str] | None = None
    gpl_only: bool = False
    pkt_access: bool = False
    might_sleep: bool = False
    kfunc_flags: frozenset[str] = field(default_factory=frozenset)
    ret_size_arg: int | None = None
    c_decl: str = ""
    changes_pkt_data: bool = False
    arg_size: tuple[int, ...] = ()
    ret_size: int = 0
    iter_type: str = ""
    iter_size: int = 0

    def __post_init__(self) -> None:
        for kind in (self.ret, *self.args):
            if not isinstance(kind, str):
                raise TypeError(f"prototype kinds are kernel names (str), got {kind!r}")
            unknown = split_kind(kind)[1] - FLAGS
            if unknown:
                raise ValueError(f"{kind}: unknown flag {', '.join(sorted(unknown))}")
        if len(self.args) > 5:
            raise ValueError(f"{self.name or 'prototype'}: at most 5 arguments, "
                             f"got {len(self.args)}")

    @property
    def nargs(self) -> int:
        return len(self.args)

    @property
    def is_kfunc(self) -> bool:
        return any(a.startswith("KF_") for a in self.args) or bool(self.kfunc_flags)

    def arg(self, i: int) -> tuple[str, frozenset[str]]:
        """(base kind, flags) of argument ``i`` (0-based: r1 is argument 0)."""
        return split_kind(self.args[i])

    def ret_kind(self) -> tuple[str, frozenset[str]]:
        return split_kind(self.ret)

    def allowed_in(self, prog_type: str) -> bool:
        return self.prog_types is None or prog_type in self.prog_types

    def memory_args(self) -> list[tuple[int, int | None, str]]:
        """(pointer arg index, size arg index or None, access kind) for each memory argument
        sized by the prototype itself (not by a map).

        ``kind`` is "write" (``ARG_PTR_TO_MEM``, also ``MEM_UNINIT|MEM_WRITE``), "read"
        (``MEM_RDONLY``), "str" (``ARG_PTR_TO_CONST_STR``) or "ringbuf" (a ring buffer sample,
        checked by the helper against the ring's books). Computed once per prototype
        (a copy of :attr:`_memory_args`); the engines' run-time check reads
        :attr:`memory_checks`.
        """
        return list(self._memory_args)

    def fixed_memory_args(self) -> list[tuple[int, int, str]]:
        """(pointer arg index, byte size, "read"/"write") of each ``MEM_FIXED_SIZE`` argument
        (``arg_size`` gives the size, as the kernel's ``arg%d_size``) and of each
        ``struct bpf_spin_lock`` (4 bytes). Computed once per prototype (a copy)."""
        return list(self._fixed_memory_args)

    # The three below are cached in the instance's __dict__ (a frozen dataclass allows that to
    # functools.cached_property); they are not fields, so equality, dataclasses.replace and
    # the verdict keys (pybpf/verdicts.py reads fields only) never see them.
    @functools.cached_property
    def _memory_args(self) -> tuple[tuple[int, int | None, str], ...]:
        out = []
        for i, a in enumerate(self.args):
            base, flags = split_kind(a)
            if base == ARG_PTR_TO_CONST_STR:
                out.append((i, None, "str"))
            elif base == ARG_PTR_TO_RINGBUF_MEM:
                # a reserved sample: its size is in the ring's books, which the helper checks
                # (the pointer must be an outstanding reservation)
                out.append((i, None, "ringbuf"))
            elif base == ARG_PTR_TO_MEM and MEM_FIXED_SIZE in flags:
                continue        # sized by the table: fixed_memory_args
            elif base == ARG_PTR_TO_MEM:
                sized = i + 1 < len(self.args) and split_kind(self.args[i + 1])[0] in (
                    ARG_CONST_SIZE, ARG_CONST_SIZE_OR_ZERO)
                out.append((i, i + 1 if sized else None,
                            "read" if MEM_RDONLY in flags else "write"))
        return tuple(out)

    @functools.cached_property
    def _fixed_memory_args(self) -> tuple[tuple[int, int, str], ...]:
        out = []
        for i, a in enumerate(self.args):
            base, flags = split_kind(a)
            if base == ARG_PTR_TO_MEM and MEM_FIXED_SIZE in flags:
                out.append((i, self.arg_size[i] if i < len(self.arg_size) else 0,
                            "read" if MEM_RDONLY in flags else "write"))
            elif base == ARG_PTR_TO_SPIN_LOCK:
                out.append((i, 4, "write"))     # struct bpf_spin_lock: the lock word
        return tuple(out)

    @functools.cached_property
    def memory_checks(self) -> tuple[tuple[int, int | None, int, str, bool], ...]:
        """:meth:`memory_args` and :meth:`fixed_memory_args` as one plan for the run-time
        argument check (runtime/helpers.py ``check_args``): (pointer arg index, size arg index
        or None, size when there is no size argument, kind, whether a size of 0 skips the
        check (``ARG_CONST_SIZE_OR_ZERO``)). Computed once per prototype."""
        out = []
        for pi, si, kind in self._memory_args:
            zero_ok = si is not None and self.args[si].endswith("OR_ZERO")
            out.append((pi, si, 1, kind, zero_ok))
        for pi, size, kind in self._fixed_memory_args:
            out.append((pi, None, size, kind, False))
        return tuple(out)

    def map_args(self) -> list[tuple[int, str, str]]:
        """(arg index, "key" or "value", "read"/"write") for pointers sized by the map."""
        out = []
        for i, a in enumerate(self.args):
            base, flags = split_kind(a)
            if base == ARG_PTR_TO_MAP_KEY:
                out.append((i, "key", "read"))
            elif base == ARG_PTR_TO_MAP_VALUE:
                out.append((i, "value", "write" if MEM_WRITE in flags or MEM_UNINIT in flags
                            else "read"))
        return out

    def size_arg(self, i: int) -> tuple[str, bool] | None:
        """For argument ``i`` a size: (kind, zero allowed), else None."""
        base = split_kind(self.args[i])[0]
        if base in (ARG_CONST_SIZE, ARG_CONST_SIZE_OR_ZERO, ARG_CONST_ALLOC_SIZE_OR_ZERO):
            return base, base != ARG_CONST_SIZE
        return None


# --- kernel helpers ------------------------------------------------------------------------------
_ALL_KERNEL = frozenset(PROG_TYPES) - {"mem"}


def _h(name: str, ret: str, *args: str, gpl: bool = False, pkt: bool = False,
       ret_size_arg: int | None = None, changes_pkt_data: bool = False,
       arg_size: tuple[int, ...] = ()) -> Prototype:
    """One kernel helper row. ``changes_pkt_data``: the kernel's bpf_helper_changes_pkt_data
    lists the helper (it may move or resize the packet): the verifier invalidates every packet
    pointer after a call to it (clear_all_pkt_pointers). ``arg_size``: the byte size of each
    MEM_FIXED_SIZE argument (the kernel's ``arg%d_size``)."""
    hid = HELPER_IDS[name]
    types = frozenset(t for t in _ALL_KERNEL if hid in KERNEL_HELPER_PROG_TYPES[t]) | {"mem"}
    return Prototype(ret, tuple(args), name=name, id=hid, prog_types=types, gpl_only=gpl,
                     pkt_access=pkt, ret_size_arg=ret_size_arg,
                     changes_pkt_data=changes_pkt_data, arg_size=arg_size)


def _skb(proto: Prototype, moves: bool = False) -> Prototype:
    """``proto`` of a helper working on the run's socket buffer (r1 = the __sk_buff), which
    pybpf's ``mem`` type has not; ``moves``: it may move or resize the packet (the kernel's
    bpf_helper_changes_pkt_data)."""
    return replace(proto, prog_types=proto.prog_types - {"mem"}, changes_pkt_data=moves)


_MEM_RO_OR_NULL = ARG_PTR_TO_MEM + "|" + PTR_MAYBE_NULL + "|" + MEM_RDONLY
MAP_PTR, KEY, VALUE, ANY = ARG_CONST_MAP_PTR, ARG_PTR_TO_MAP_KEY, ARG_PTR_TO_MAP_VALUE, ARG_ANYTHING
_PROBE = (ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE_OR_ZERO, ANY)

_HELPER_ROWS = (
    # maps (kernel/bpf/helpers.c)
    _h("map_lookup_elem", RET_PTR_TO_MAP_VALUE_OR_NULL, MAP_PTR, KEY, pkt=True),
    _h("map_update_elem", RET_INTEGER, MAP_PTR, KEY, VALUE, ANY, pkt=True),
    _h("map_delete_elem", RET_INTEGER, MAP_PTR, KEY, pkt=True),
    _h("map_push_elem", RET_INTEGER, MAP_PTR, VALUE, ANY, pkt=True),
    _h("map_pop_elem", RET_INTEGER, MAP_PTR, ARG_PTR_TO_MAP_VALUE_UNINIT),
    _h("map_peek_elem", RET_INTEGER, MAP_PTR, ARG_PTR_TO_MAP_VALUE_UNINIT),
    _h("map_lookup_percpu_elem", RET_PTR_TO_MAP_VALUE_OR_NULL, MAP_PTR, KEY, ANY, pkt=True),
    # time, randomness, cpu
    _h("ktime_get_ns", RET_INTEGER),
    _h("ktime_get_boot_ns", RET_INTEGER),
    _h("ktime_get_coarse_ns", RET_INTEGER),
    _h("ktime_get_tai_ns", RET_INTEGER),
    _h("get_prandom_u32", RET_INTEGER),
    _h("get_smp_processor_id", RET_INTEGER),
    # tracing (kernel/trace/bpf_trace.c)
    # the kernel declares two arguments; the three format values are ARG_DONTCARE (unchecked)
    _h("trace_printk", RET_INTEGER, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE, ARG_DONTCARE,
       ARG_DONTCARE, ARG_DONTCARE, gpl=True),
    _h("probe_read", RET_INTEGER, *_PROBE, gpl=True),
    _h("probe_read_str", RET_INTEGER, *_PROBE, gpl=True),
    _h("probe_read_user", RET_INTEGER, *_PROBE, gpl=True),
    _h("probe_read_kernel", RET_INTEGER, *_PROBE, gpl=True),
    _h("probe_read_user_str", RET_INTEGER, *_PROBE, gpl=True),
    _h("probe_read_kernel_str", RET_INTEGER, *_PROBE, gpl=True),
    _h("get_current_pid_tgid", RET_INTEGER),
    _h("get_current_uid_gid", RET_INTEGER),
    _h("get_current_comm", RET_INTEGER, ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE),
    # ring buffers (kernel/bpf/ringbuf.c)
    _h("ringbuf_output", RET_INTEGER, MAP_PTR, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE_OR_ZERO, ANY),
    _h("ringbuf_reserve", RET_PTR_TO_RINGBUF_MEM_OR_NULL, MAP_PTR, ARG_CONST_ALLOC_SIZE_OR_ZERO,
       ANY, ret_size_arg=1),
    _h("ringbuf_submit", RET_VOID, ARG_PTR_TO_RINGBUF_MEM + "|" + OBJ_RELEASE, ANY),
    _h("ringbuf_discard", RET_VOID, ARG_PTR_TO_RINGBUF_MEM + "|" + OBJ_RELEASE, ANY),
    _h("ringbuf_query", RET_INTEGER, MAP_PTR, ANY),
    # control transfer: the engines implement these at their call sites
    _h("tail_call", RET_VOID, ARG_PTR_TO_CTX, MAP_PTR, ANY),
    _h("loop", RET_INTEGER, ANY, ARG_PTR_TO_FUNC, ARG_PTR_TO_STACK_OR_NULL, ANY),
    # dynamic pointers (kernel/bpf/helpers.c): local dynptrs over program memory, reads, writes
    # and data slices of any dynptr (verifier/dynptr.py, runtime/kfuncs_dynptr.py)
    _h("dynptr_from_mem", RET_INTEGER, ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE_OR_ZERO, ANY,
       ARG_PTR_TO_DYNPTR + "|DYNPTR_TYPE_LOCAL|" + MEM_UNINIT),
    _h("dynptr_read", RET_INTEGER, ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE_OR_ZERO,
       ARG_PTR_TO_DYNPTR + "|" + MEM_RDONLY, ANY, ANY),
    _h("dynptr_write", RET_INTEGER, ARG_PTR_TO_DYNPTR + "|" + MEM_RDONLY, ANY,
       ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE_OR_ZERO, ANY),
    _h("dynptr_data", RET_PTR_TO_MEM_OR_NULL, ARG_PTR_TO_DYNPTR + "|" + MEM_RDONLY, ANY,
       ARG_CONST_ALLOC_SIZE_OR_ZERO),
    # ring buffer dynptrs (kernel/bpf/ringbuf.c; runtime/ringbuf_dynptr.py): the reserved
    # sample is a refcounted dynptr the program must submit or discard on every path, also
    # when the reservation failed (the dynptr is then NULL)
    _h("ringbuf_reserve_dynptr", RET_INTEGER, MAP_PTR, ANY, ANY,
       ARG_PTR_TO_DYNPTR + "|DYNPTR_TYPE_RINGBUF|" + MEM_UNINIT + "|" + MEM_WRITE),
    _h("ringbuf_submit_dynptr", RET_VOID,
       ARG_PTR_TO_DYNPTR + "|DYNPTR_TYPE_RINGBUF|" + OBJ_RELEASE, ANY),
    _h("ringbuf_discard_dynptr", RET_VOID,
       ARG_PTR_TO_DYNPTR + "|DYNPTR_TYPE_RINGBUF|" + OBJ_RELEASE, ANY),
    # maps and control (kernel/bpf/helpers.c, bpf_trace.c, cgroup.c, net/core/filter.c);
    # implemented in runtime/helpers_control.py
    _h("for_each_map_elem", RET_INTEGER, MAP_PTR, ARG_PTR_TO_FUNC, ARG_PTR_TO_STACK_OR_NULL, ANY),
    _h("spin_lock", RET_VOID, ARG_PTR_TO_SPIN_LOCK),
    _h("spin_unlock", RET_VOID, ARG_PTR_TO_SPIN_LOCK),
    _h("jiffies64", RET_INTEGER),
    _h("get_numa_node_id", RET_INTEGER),
    _h("strncmp", RET_INTEGER, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE, ARG_PTR_TO_CONST_STR),
    # the result is ARG_PTR_TO_FIXED_SIZE_MEM|MEM_UNINIT|MEM_WRITE|MEM_ALIGNED, arg4_size 8
    # (pybpf does not check MEM_ALIGNED's alignment)
    _h("strtol", RET_INTEGER, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE, ANY,
       ARG_PTR_TO_UNINIT_MEM + "|" + MEM_FIXED_SIZE, arg_size=(0, 0, 0, 8)),
    _h("strtoul", RET_INTEGER, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE, ANY,
       ARG_PTR_TO_UNINIT_MEM + "|" + MEM_FIXED_SIZE, arg_size=(0, 0, 0, 8)),
    _h("snprintf", RET_INTEGER, ARG_PTR_TO_MEM + "|" + PTR_MAYBE_NULL, ARG_CONST_SIZE_OR_ZERO,
       ARG_PTR_TO_CONST_STR, ARG_PTR_TO_MEM_RDONLY + "|" + PTR_MAYBE_NULL,
       ARG_CONST_SIZE_OR_ZERO, gpl=True),
    # one id, three kernel protos (tracing, skb, xdp) with the same argument kinds
    _h("perf_event_output", RET_INTEGER, ARG_PTR_TO_CTX, MAP_PTR, ANY, ARG_PTR_TO_MEM_RDONLY,
       ARG_CONST_SIZE_OR_ZERO, gpl=True),
    _h("get_local_storage", RET_PTR_TO_MAP_VALUE, MAP_PTR, ANY),
    # allocated objects stashed in map values and objects (kernel/bpf/helpers.c; verifier/kptr.py,
    # runtime/kfuncs_graph.py Graphs.kptr_xchg): r0's type is the destination field's
    _h("kptr_xchg", RET_PTR_TO_BTF_ID + "|" + PTR_MAYBE_NULL, ARG_KPTR_XCHG_DEST,
       ARG_PTR_TO_BTF_ID + "|" + PTR_MAYBE_NULL + "|" + OBJ_RELEASE),
    # one CPU's copy of a per-CPU object (kernel/bpf/helpers.c): pybpf has no per-CPU kernel
    # variables (ksyms), only bpf_percpu_obj_new's objects
    _h("per_cpu_ptr", "RET_PTR_TO_MEM_OR_BTF_ID|PTR_MAYBE_NULL|MEM_RDONLY",
       ARG_PTR_TO_PERCPU_BTF_ID, ANY),
    _h("this_cpu_ptr", "RET_PTR_TO_MEM_OR_BTF_ID|MEM_RDONLY", ARG_PTR_TO_PERCPU_BTF_ID),
    # XDP packets and redirects (net/core/filter.c: xdp_func_proto). bpf_redirect (23) is one
    # id with two prototypes in the kernel (bpf_redirect_proto for tc, bpf_xdp_redirect_proto);
    # both are (ARG_ANYTHING, ARG_ANYTHING), the implementation picks by the run's type.
    _h("xdp_adjust_head", RET_INTEGER, ARG_PTR_TO_CTX, ANY, changes_pkt_data=True),
    _h("xdp_adjust_meta", RET_INTEGER, ARG_PTR_TO_CTX, ANY, changes_pkt_data=True),
    _h("xdp_adjust_tail", RET_INTEGER, ARG_PTR_TO_CTX, ANY, changes_pkt_data=True),
    _h("xdp_get_buff_len", RET_INTEGER, ARG_PTR_TO_CTX),
    _h("xdp_load_bytes", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE),
    _h("xdp_store_bytes", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ARG_PTR_TO_MEM_RDONLY,
       ARG_CONST_SIZE),
    _h("redirect", RET_INTEGER, ANY, ANY),
    _h("redirect_map", RET_INTEGER, MAP_PTR, ANY, ANY),
    _h("fib_lookup", RET_INTEGER, ARG_PTR_TO_CTX, ARG_PTR_TO_MEM + "|" + MEM_WRITE, ARG_CONST_SIZE,
       ANY, gpl=True),
    # socket-buffer packets (net/core/filter.c; runtime/helpers_skb.py). moves=True marks the
    # kernel's bpf_helper_changes_pkt_data: the verifier forgets every packet pointer after them
    _skb(_h("skb_store_bytes", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ARG_PTR_TO_MEM_RDONLY,
            ARG_CONST_SIZE, ANY), moves=True),
    _skb(_h("skb_load_bytes", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ARG_PTR_TO_UNINIT_MEM,
            ARG_CONST_SIZE)),
    _skb(_h("skb_load_bytes_relative", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ARG_PTR_TO_UNINIT_MEM,
            ARG_CONST_SIZE, ANY)),
    _skb(_h("skb_pull_data", RET_INTEGER, ARG_PTR_TO_CTX, ANY), moves=True),
    _skb(_h("skb_change_tail", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY), moves=True),
    _skb(_h("skb_change_head", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY), moves=True),
    _skb(_h("skb_adjust_room", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY, ANY), moves=True),
    _skb(_h("l3_csum_replace", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY, ANY, ANY), moves=True),
    _skb(_h("l4_csum_replace", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY, ANY, ANY), moves=True),
    _h("csum_diff", RET_INTEGER, _MEM_RO_OR_NULL, ARG_CONST_SIZE_OR_ZERO, _MEM_RO_OR_NULL,
       ARG_CONST_SIZE_OR_ZERO, ANY, pkt=True),
    _skb(_h("csum_update", RET_INTEGER, ARG_PTR_TO_CTX, ANY)),
    _skb(_h("skb_get_tunnel_key", RET_INTEGER, ARG_PTR_TO_CTX, ARG_PTR_TO_UNINIT_MEM,
            ARG_CONST_SIZE, ANY)),
    _skb(_h("skb_set_tunnel_key", RET_INTEGER, ARG_PTR_TO_CTX, ARG_PTR_TO_MEM_RDONLY,
            ARG_CONST_SIZE, ANY)),
    _skb(_h("clone_redirect", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY), moves=True),
)

# verifier, issue 10: kernel helpers pybpf does not implement yet, whose prototypes use argument
# kinds the verifier checks. Their calls get the kernel's argument checks (and its messages:
# the kernel checks the arguments of a helper it knows) before the verifier refuses them with
# ``helper ... is not implemented by pybpf`` (a dead call is left to the engines, which refuse
# an unregistered helper at load). Prototypes from the 6.18 sources (net/core/filter.c,
# kernel/trace/bpf_trace.c, kernel/bpf/helpers.c); gpl_only and program types as measured.
_AWAITING_ROWS = (
    _h("get_current_task", RET_INTEGER, gpl=True),
    _h("get_current_cgroup_id", RET_INTEGER),
    _h("get_current_ancestor_cgroup_id", RET_INTEGER, ANY),
    _h("send_signal", RET_INTEGER, ANY),
    _h("send_signal_thread", RET_INTEGER, ANY),
    _h("get_ns_current_pid_tgid", RET_INTEGER, ANY, ANY, ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE),
    _h("perf_event_read", RET_INTEGER, MAP_PTR, ANY, gpl=True),
    _h("perf_event_read_value", RET_INTEGER, MAP_PTR, ANY, ARG_PTR_TO_UNINIT_MEM,
       ARG_CONST_SIZE, gpl=True),
    _h("current_task_under_cgroup", RET_INTEGER, MAP_PTR, ANY),
    _h("trace_vprintk", RET_INTEGER, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE, _MEM_RO_OR_NULL,
       ARG_CONST_SIZE_OR_ZERO, gpl=True),
    _h("get_branch_snapshot", RET_INTEGER, ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE_OR_ZERO, ANY,
       gpl=True),
    _skb(_h("get_cgroup_classid", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("get_socket_uid", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("get_route_realm", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("get_hash_recalc", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("set_hash_invalid", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("set_hash", RET_INTEGER, ARG_PTR_TO_CTX, ANY)),
    _skb(_h("skb_vlan_push", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY), moves=True),
    _skb(_h("skb_vlan_pop", RET_INTEGER, ARG_PTR_TO_CTX), moves=True),
    _skb(_h("skb_change_proto", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY), moves=True),
    _skb(_h("skb_change_type", RET_INTEGER, ARG_PTR_TO_CTX, ANY), moves=True),
    _skb(_h("skb_under_cgroup", RET_INTEGER, ARG_PTR_TO_CTX, MAP_PTR, ANY)),
    _skb(_h("csum_level", RET_INTEGER, ARG_PTR_TO_CTX, ANY)),
    _skb(_h("skb_cgroup_id", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("skb_ancestor_cgroup_id", RET_INTEGER, ARG_PTR_TO_CTX, ANY)),
    _skb(_h("skb_cgroup_classid", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("skb_ecn_set_ce", RET_INTEGER, ARG_PTR_TO_CTX)),
    _skb(_h("skb_set_tstamp", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ANY)),
    _skb(_h("skb_get_tunnel_opt", RET_INTEGER, ARG_PTR_TO_CTX, ARG_PTR_TO_UNINIT_MEM,
            ARG_CONST_SIZE)),
    _skb(_h("skb_set_tunnel_opt", RET_INTEGER, ARG_PTR_TO_CTX, ARG_PTR_TO_MEM_RDONLY,
            ARG_CONST_SIZE)),
    _skb(_h("skb_get_xfrm_state", RET_INTEGER, ARG_PTR_TO_CTX, ANY, ARG_PTR_TO_UNINIT_MEM,
            ARG_CONST_SIZE, ANY)),
    _h("redirect_neigh", RET_INTEGER, ANY, _MEM_RO_OR_NULL, ARG_CONST_SIZE_OR_ZERO, ANY),
    _h("redirect_peer", RET_INTEGER, ANY, ANY),
    _h("sys_close", RET_INTEGER, ANY),
    _h("sys_bpf", RET_INTEGER, ANY, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE),
    _h("btf_find_by_name_kind", RET_INTEGER, ARG_PTR_TO_MEM_RDONLY, ARG_CONST_SIZE, ANY, ANY),
)

HELPERS: dict[int, Prototype] = {p.id: p for p in _HELPER_ROWS + _AWAITING_ROWS}
"""Kernel helper prototypes by id: every helper pybpf implements, and those whose implementation
is still to come (:data:`AWAITING_IMPLEMENTATION`; a VM without them refuses their calls with
``helper ... is not implemented by pybpf``, after checking their arguments)."""

AWAITING_IMPLEMENTATION: frozenset[int] = frozenset(p.id for p in _AWAITING_ROWS)

HELPERS_BY_NAME: dict[str, Prototype] = {p.name: p for p in HELPERS.values()}

# --- kfuncs --------------------------------------------------------------------------------------
# program types of the kernel's generic_kfunc_set (kernel/bpf/helpers.c), measured on Linux 6.18
_GENERIC = frozenset({"mem", "sched_cls", "tracepoint", "xdp", "cgroup_skb", "syscall"})
_ALLOC_OR_NULL = "RET_PTR_TO_BTF_ID|MEM_ALLOC|PTR_MAYBE_NULL"
# Arena kfuncs (kernel/bpf/arena.c). ``void *`` returns are unknown scalars to the verifier: the
# as(1) pointer must go through addr_space_cast before it is dereferenced.
_KFUNC_ROWS = (
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_MAP, KF_ARG_IGNORE, KF_ARG_SCALAR, KF_ARG_SCALAR,
                            KF_ARG_SCALAR),
              name="bpf_arena_alloc_pages", kfunc_flags=frozenset({KF_ARENA_RET, KF_ARENA_ARG2}),
              c_decl="void __arena *bpf_arena_alloc_pages(void *p__map, void __arena *addr__ign, "
                     "u32 page_cnt, int node_id, u64 flags)"),
    Prototype(RET_VOID, (KF_ARG_PTR_TO_MAP, KF_ARG_IGNORE, KF_ARG_SCALAR),
              name="bpf_arena_free_pages", kfunc_flags=frozenset({KF_ARENA_ARG2}),
              c_decl="void bpf_arena_free_pages(void *p__map, void __arena *ptr__ign, "
                     "u32 page_cnt)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_MAP, KF_ARG_IGNORE, KF_ARG_SCALAR),
              name="bpf_arena_reserve_pages", kfunc_flags=frozenset({KF_ARENA_ARG2}),
              c_decl="int bpf_arena_reserve_pages(void *p__map, void __arena *ptr__ign, "
                     "u32 page_cnt)"),
    # open-coded numeric iterator (kernel/bpf/bpf_iter.c; what bpf_for and bpf_repeat compile
    # to): ``struct bpf_iter_num`` (8 bytes) lives on the program's stack (STACK_ITER slots);
    # new takes it uninitialised and acquires a reference, destroy releases it
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_ITER + "|" + MEM_UNINIT, KF_ARG_SCALAR, KF_ARG_SCALAR),
              name="bpf_iter_num_new", kfunc_flags=frozenset({KF_ITER_NEW}),
              iter_type="num", iter_size=8,
              c_decl="int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end)"),
    Prototype("RET_PTR_TO_MEM|MEM_RDONLY|PTR_MAYBE_NULL", (KF_ARG_PTR_TO_ITER,),
              name="bpf_iter_num_next", kfunc_flags=frozenset({KF_ITER_NEXT, KF_RET_NULL}),
              ret_size=4, iter_type="num", iter_size=8,
              c_decl="int *bpf_iter_num_next(struct bpf_iter_num *it)"),
    Prototype(RET_VOID, (KF_ARG_PTR_TO_ITER + "|" + OBJ_RELEASE,),
              name="bpf_iter_num_destroy", kfunc_flags=frozenset({KF_ITER_DESTROY}),
              iter_type="num", iter_size=8,
              c_decl="void bpf_iter_num_destroy(struct bpf_iter_num *it)"),
    # string kfuncs (kernel/bpf/helpers.c): every string is ``__ign`` (no verifier check: the
    # kfunc checks at run time, -ERANGE outside the kernel's address space, -EFAULT on a fault,
    # -E2BIG past XATTR_SIZE_MAX); results are indexes or errors, never pointers
    *(Prototype(RET_INTEGER, tuple(KF_ARG_IGNORE if "__ign" in a else KF_ARG_SCALAR
                                   for a in params.split(", ")),
                name=name, c_decl=f"int {name}({params})")
      for name, params in (
          ("bpf_strcmp", "const char *s1__ign, const char *s2__ign"),
          ("bpf_strcasecmp", "const char *s1__ign, const char *s2__ign"),
          ("bpf_strchr", "const char *s__ign, char c"),
          ("bpf_strchrnul", "const char *s__ign, char c"),
          ("bpf_strnchr", "const char *s__ign, size_t count, char c"),
          ("bpf_strrchr", "const char *s__ign, int c"),
          ("bpf_strlen", "const char *s__ign"),
          ("bpf_strnlen", "const char *s__ign, size_t count"),
          ("bpf_strspn", "const char *s__ign, const char *accept__ign"),
          ("bpf_strcspn", "const char *s__ign, const char *reject__ign"),
          ("bpf_strstr", "const char *s1__ign, const char *s2__ign"),
          ("bpf_strnstr", "const char *s1__ign, const char *s2__ign, size_t len"))),
    # RCU read-side sections, casts and exceptions (kernel/bpf/helpers.c; the verifier knows
    # them by name, verifier/special_kfuncs.py). Program types measured on Linux 6.18: the
    # others answer "calling kernel function ... is not allowed" (bpf_cast_to_kern_ctx is
    # listed for tracepoint and syscall too, whose ctx is no struct: "kern ctx type id N is not
    # a struct", kept out here)
    Prototype(RET_VOID, (), name="bpf_rcu_read_lock", c_decl="void bpf_rcu_read_lock(void)"),
    Prototype(RET_VOID, (), name="bpf_rcu_read_unlock", c_decl="void bpf_rcu_read_unlock(void)"),
    Prototype("RET_PTR_TO_BTF_ID|PTR_TRUSTED", (KF_ARG_PTR_TO_CTX,), name="bpf_cast_to_kern_ctx",
              prog_types=frozenset({"mem", "socket_filter", "kprobe", "sched_cls", "xdp",
                                    "cgroup_skb", "lwt_in"}),
              c_decl="void *bpf_cast_to_kern_ctx(void *obj)"),
    Prototype("RET_PTR_TO_BTF_ID|PTR_UNTRUSTED", (KF_ARG_IGNORE, KF_ARG_CONST),
              name="bpf_rdonly_cast", c_decl="void *bpf_rdonly_cast(const void *obj__ign, "
                                             "u32 btf_id__k)"),
    Prototype(RET_VOID, (KF_ARG_SCALAR,), name="bpf_throw",
              prog_types=frozenset({"mem", "sched_cls", "tracepoint", "xdp", "cgroup_skb",
                                    "syscall"}),
              c_decl="void bpf_throw(u64 cookie)"),
    # generic dynptr kfuncs (kernel/bpf/helpers.c common_btf_ids: every program type;
    # runtime/kfuncs_dynptr.py): clone shares the parent's reference (a ringbuf clone is
    # released with it), adjust narrows the view, the rest read the dynptr's header
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_DYNPTR, KF_ARG_SCALAR, KF_ARG_SCALAR),
              name="bpf_dynptr_adjust",
              c_decl="int bpf_dynptr_adjust(const struct bpf_dynptr *p, u32 start, u32 end)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_DYNPTR,), name="bpf_dynptr_is_null",
              c_decl="bool bpf_dynptr_is_null(const struct bpf_dynptr *p)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_DYNPTR,), name="bpf_dynptr_is_rdonly",
              c_decl="bool bpf_dynptr_is_rdonly(const struct bpf_dynptr *p)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_DYNPTR,), name="bpf_dynptr_size",
              c_decl="u32 bpf_dynptr_size(const struct bpf_dynptr *p)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_DYNPTR, KF_ARG_PTR_TO_DYNPTR + "|" + MEM_UNINIT),
              name="bpf_dynptr_clone",
              c_decl="int bpf_dynptr_clone(const struct bpf_dynptr *p, "
                     "struct bpf_dynptr *clone__uninit)"),
    # dynptr constructors for packets and slices (net/core/filter.c, kernel/bpf/helpers.c);
    # program types measured on Linux 6.18 (bpf_dynptr_from_skb also answers tracepoint, with
    # "R1 must be referenced or trusted": no skb there)
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_CTX, KF_ARG_SCALAR,
                            KF_ARG_PTR_TO_DYNPTR + "|" + MEM_UNINIT),
              name="bpf_dynptr_from_skb",
              prog_types=frozenset({"socket_filter", "sched_cls", "cgroup_skb", "lwt_in"}),
              c_decl="int bpf_dynptr_from_skb(struct __sk_buff *s, u64 flags, "
                     "struct bpf_dynptr *ptr__uninit)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_CTX, KF_ARG_SCALAR,
                            KF_ARG_PTR_TO_DYNPTR + "|" + MEM_UNINIT),
              name="bpf_dynptr_from_xdp", prog_types=frozenset({"xdp"}),
              c_decl="int bpf_dynptr_from_xdp(struct xdp_md *x, u64 flags, "
                     "struct bpf_dynptr *ptr__uninit)"),
    Prototype("RET_PTR_TO_MEM|MEM_RDONLY|PTR_MAYBE_NULL",
              (KF_ARG_PTR_TO_DYNPTR, KF_ARG_SCALAR, KF_ARG_PTR_TO_MEM_SIZE + "|" + PTR_MAYBE_NULL,
               KF_ARG_CONST),
              name="bpf_dynptr_slice", kfunc_flags=frozenset({KF_RET_NULL}),
              c_decl="void *bpf_dynptr_slice(const struct bpf_dynptr *p, u32 offset, "
                     "void *buffer__opt, u32 buffer__szk)"),
    Prototype("RET_PTR_TO_MEM|PTR_MAYBE_NULL",
              (KF_ARG_PTR_TO_DYNPTR, KF_ARG_SCALAR, KF_ARG_PTR_TO_MEM_SIZE + "|" + PTR_MAYBE_NULL,
               KF_ARG_CONST),
              name="bpf_dynptr_slice_rdwr", kfunc_flags=frozenset({KF_RET_NULL}),
              c_decl="void *bpf_dynptr_slice_rdwr(const struct bpf_dynptr *p, u32 offset, "
                     "void *buffer__opt, u32 buffer__szk)"),
    # dynptr copies and fills, the skb metadata dynptr (kernel/bpf/helpers.c common_btf_ids,
    # net/core/filter.c bpf_kfunc_set_skb_meta: sched_cls and sched_act only; prototypes from
    # the running 6.18 kernel's BTF; runtime/kfuncs_dynptr.py)
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_DYNPTR, KF_ARG_SCALAR, KF_ARG_PTR_TO_DYNPTR,
                            KF_ARG_SCALAR, KF_ARG_SCALAR),
              name="bpf_dynptr_copy",
              c_decl="int bpf_dynptr_copy(struct bpf_dynptr *dst_ptr, u32 dst_off, "
                     "struct bpf_dynptr *src_ptr, u32 src_off, u32 size)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_DYNPTR, KF_ARG_SCALAR, KF_ARG_SCALAR, KF_ARG_SCALAR),
              name="bpf_dynptr_memset",
              c_decl="int bpf_dynptr_memset(struct bpf_dynptr *p, u32 offset, u32 size, u8 val)"),
    Prototype(RET_INTEGER, (KF_ARG_PTR_TO_CTX, KF_ARG_SCALAR,
                            KF_ARG_PTR_TO_DYNPTR + "|" + MEM_UNINIT),
              name="bpf_dynptr_from_skb_meta", prog_types=frozenset({"sched_cls", "sched_act"}),
              c_decl="int bpf_dynptr_from_skb_meta(struct __sk_buff *skb_, u64 flags, "
                     "struct bpf_dynptr *ptr__uninit)"),
    # allocated objects and graph data structures (kernel/bpf/helpers.c; verifier/graph.py,
    # runtime/kfuncs_graph.py). generic_kfunc_set's program types, as bpf_throw's above.
    *(Prototype(ret, args, name=name, kfunc_flags=frozenset(flags), prog_types=_GENERIC,
                c_decl=decl)
      for ret, args, name, flags, decl in (
          (_ALLOC_OR_NULL, (KF_ARG_CONST, KF_ARG_IGNORE), "bpf_obj_new_impl",
           (KF_ACQUIRE, KF_RET_NULL),
           "void *bpf_obj_new_impl(u64 local_type_id__k, void *meta__ign)"),
          (RET_VOID, (KF_ARG_PTR_TO_ALLOC_BTF_ID + "|" + OBJ_RELEASE, KF_ARG_IGNORE),
           "bpf_obj_drop_impl", (KF_RELEASE,),
           "void bpf_obj_drop_impl(void *p__alloc, void *meta__ign)"),
          ("RET_PTR_TO_BTF_ID|MEM_ALLOC|MEM_PERCPU|PTR_MAYBE_NULL", (KF_ARG_CONST, KF_ARG_IGNORE),
           "bpf_percpu_obj_new_impl", (KF_ACQUIRE, KF_RET_NULL),
           "void *bpf_percpu_obj_new_impl(u64 local_type_id__k, void *meta__ign)"),
          (RET_VOID, (KF_ARG_PTR_TO_ALLOC_BTF_ID + "|" + OBJ_RELEASE, KF_ARG_IGNORE),
           "bpf_percpu_obj_drop_impl", (KF_RELEASE,),
           "void bpf_percpu_obj_drop_impl(void *p__alloc, void *meta__ign)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_REFCOUNTED_KPTR, KF_ARG_IGNORE),
           "bpf_refcount_acquire_impl", (KF_ACQUIRE, KF_RET_NULL, "KF_RCU"),
           "void *bpf_refcount_acquire_impl(void *p__refcounted_kptr, void *meta__ign)"),
          (RET_INTEGER, (KF_ARG_PTR_TO_LIST_HEAD, KF_ARG_PTR_TO_LIST_NODE, KF_ARG_IGNORE,
                         KF_ARG_IGNORE), "bpf_list_push_front_impl", (),
           "int bpf_list_push_front_impl(struct bpf_list_head *head, struct bpf_list_node "
           "*node, void *meta__ign, u64 off)"),
          (RET_INTEGER, (KF_ARG_PTR_TO_LIST_HEAD, KF_ARG_PTR_TO_LIST_NODE, KF_ARG_IGNORE,
                         KF_ARG_IGNORE), "bpf_list_push_back_impl", (),
           "int bpf_list_push_back_impl(struct bpf_list_head *head, struct bpf_list_node "
           "*node, void *meta__ign, u64 off)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_LIST_HEAD,), "bpf_list_pop_front",
           (KF_ACQUIRE, KF_RET_NULL),
           "struct bpf_list_node *bpf_list_pop_front(struct bpf_list_head *head)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_LIST_HEAD,), "bpf_list_pop_back",
           (KF_ACQUIRE, KF_RET_NULL),
           "struct bpf_list_node *bpf_list_pop_back(struct bpf_list_head *head)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_LIST_HEAD,), "bpf_list_front", (KF_RET_NULL,),
           "struct bpf_list_node *bpf_list_front(struct bpf_list_head *head)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_LIST_HEAD,), "bpf_list_back", (KF_RET_NULL,),
           "struct bpf_list_node *bpf_list_back(struct bpf_list_head *head)"),
          (RET_INTEGER, (KF_ARG_PTR_TO_RB_ROOT, KF_ARG_PTR_TO_RB_NODE, KF_ARG_PTR_TO_CALLBACK,
                         KF_ARG_IGNORE, KF_ARG_IGNORE), "bpf_rbtree_add_impl", (),
           "int bpf_rbtree_add_impl(struct bpf_rb_root *root, struct bpf_rb_node *node, "
           "bool (less)(struct bpf_rb_node *a, const struct bpf_rb_node *b), "
           "void *meta__ign, u64 off)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_RB_ROOT, KF_ARG_PTR_TO_RB_NODE), "bpf_rbtree_remove",
           (KF_ACQUIRE, KF_RET_NULL),
           "struct bpf_rb_node *bpf_rbtree_remove(struct bpf_rb_root *root, "
           "struct bpf_rb_node *node)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_RB_ROOT,), "bpf_rbtree_first", (KF_RET_NULL,),
           "struct bpf_rb_node *bpf_rbtree_first(struct bpf_rb_root *root)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_RB_ROOT,), "bpf_rbtree_root", (KF_RET_NULL,),
           "struct bpf_rb_node *bpf_rbtree_root(struct bpf_rb_root *root)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_RB_ROOT, KF_ARG_PTR_TO_RB_NODE), "bpf_rbtree_left",
           (KF_RET_NULL,), "struct bpf_rb_node *bpf_rbtree_left(struct bpf_rb_root *root, "
                           "struct bpf_rb_node *node)"),
          (_ALLOC_OR_NULL, (KF_ARG_PTR_TO_RB_ROOT, KF_ARG_PTR_TO_RB_NODE), "bpf_rbtree_right",
           (KF_RET_NULL,), "struct bpf_rb_node *bpf_rbtree_right(struct bpf_rb_root *root, "
                           "struct bpf_rb_node *node)"),
      )),
)

KFUNCS: dict[str, Prototype] = {
    p.name: replace(p, id=KFUNC_IDS[p.name]) for p in _KFUNC_ROWS}
"""Kfuncs pybpf implements, by name (``id`` is pybpf's kfunc id)."""

KFUNCS_BY_ID: dict[int, Prototype] = {p.id: p for p in KFUNCS.values()}

# --- bpf_conformance / uBPF test helpers (ASM.md section 1) --------------------------------------
UBPF_TEST_HELPERS: dict[int, Prototype] = {p.id: p for p in (
    Prototype(RET_INTEGER, (ANY,) * 5, name="gather_bytes", id=0),
    Prototype(RET_INTEGER, (ARG_PTR_TO_MEM, ARG_CONST_SIZE_OR_ZERO), name="memfrob", id=1),
    Prototype(RET_INTEGER, (), name="no_op", id=2),
    Prototype(RET_INTEGER, (ANY,), name="sqrti", id=3),
    Prototype(RET_INTEGER, (ARG_PTR_TO_CONST_STR, ARG_PTR_TO_CONST_STR), name="strcmp", id=4),
    Prototype(RET_INTEGER, (ANY,), name="unwind", id=5),
)}


# --- lookups -------------------------------------------------------------------------------------
def helper(hid: int) -> Prototype | None:
    """The kernel helper ``hid``'s prototype, or None when pybpf does not implement it."""
    return HELPERS.get(hid)


def helper_proto(name: str) -> Prototype:
    """The prototype of the kernel helper called ``name`` (KeyError if pybpf lacks it)."""
    return HELPERS_BY_NAME[name]


def kfunc(name_or_id) -> Prototype | None:
    if isinstance(name_or_id, str):
        return KFUNCS.get(name_or_id)
    return KFUNCS_BY_ID.get(name_or_id)


def func_id_name(hid: int) -> str:
    """The kernel's func_id_name: ``bpf_map_lookup_elem``, or ``unknown`` past the last id."""
    return f"bpf_{HELPER_NAMES[hid]}" if 0 <= hid < MAX_HELPER_ID else "unknown"


# cgroup_sock_addr's get_func_proto also looks at the expected attach type (sock_addr_func_proto,
# cgroup_current_func_proto). Measured on 6.18 for each of its 17 attach types by loading
# ``call N; r0 = 1; exit`` (the table above is connect4's): bpf_bind only from the inet4/inet6
# connect hooks; bpf_get_retval/bpf_set_retval not from the recvmsg, getpeername and getsockname
# hooks (inet4, inet6 and unix alike). Every other helper answers alike for all 17. (The four
# cgroup_sock attach types and cgroup_skb's ingress/egress were measured too: no difference.)
_ATTACH_ONLY = {
    ("cgroup_sock_addr", HELPER_IDS["bind"]): frozenset({"cgroup_inet4_connect",
                                                          "cgroup_inet6_connect"}),
    **{("cgroup_sock_addr", HELPER_IDS[n]): frozenset({
        "cgroup_inet4_bind", "cgroup_inet6_bind", "cgroup_inet4_connect", "cgroup_inet6_connect",
        "cgroup_unix_connect", "cgroup_udp4_sendmsg", "cgroup_udp6_sendmsg",
        "cgroup_unix_sendmsg"}) for n in ("get_retval", "set_retval")},
}


def attach_refuses(hid: int, prog_type: str, attach_type: str | None) -> bool:
    """Whether ``prog_type`` loaded for ``attach_type`` may not call helper ``hid`` although
    the type's table allows it (None attach type: the type's default, no refinement)."""
    hooks = _ATTACH_ONLY.get((prog_type, hid))
    return hooks is not None and bool(attach_type) and attach_type not in hooks


def unknown_helper_message(hid: int, prog_type: str, proto: Prototype | None,
                           attach_type: str | None = None) -> str | None:
    """Why a call to helper ``hid`` cannot load for ``prog_type`` (the kernel's words), or None.

    ``proto`` is what the VM's registry holds for the id (None when it has nothing). Ids past
    the kernel's last are ``invalid func unknown#ID`` unless the VM registered them; a kernel id
    the type's get_func_proto refuses is ``program of this type cannot use helper``; a kernel id
    pybpf has no implementation for says so (the kernel would accept it)."""
    if proto is not None:
        if proto.allowed_in(prog_type) and not attach_refuses(hid, prog_type, attach_type):
            return None
        return f"program of this type cannot use helper {func_id_name(hid)}#{hid}"
    if not 0 <= hid < MAX_HELPER_ID:
        return f"invalid func {func_id_name(hid)}#{hid}"
    allowed = KERNEL_HELPER_PROG_TYPES.get(prog_type)
    if hid == 0 or (allowed is not None and hid not in allowed) or \
            attach_refuses(hid, prog_type, attach_type):
        return f"program of this type cannot use helper {func_id_name(hid)}#{hid}"
    return f"helper {func_id_name(hid)}#{hid} is not implemented by pybpf"
