"""What BPF_BTF_LOAD refuses in an object's BTF, as far as pybpf can tell, and libbpf's answer.

Linux 6.18 parses, when it loads a BTF, the special fields of every struct that has one
(kernel/bpf/btf.c: btf_parse_struct_metas, then btf_check_and_fixup_fields). Two refusals
concern the types pybpf runs:

* ENOENT: a struct holds a referenced ``__kptr`` to a kernel type the kernel has no destructor
  for (btf_parse_kptr -> btf_find_dtor_kfunc), e.g. ``struct sock __kptr *``. pybpf knows the
  kernel type names of :data:`pybpf.verifier.kptr.KERNEL_TYPES` only.
* ELOOP: graph types own each other in a cycle: ``struct a`` holds a ``bpf_list_head`` or
  ``bpf_rb_root`` of ``struct b`` whose roots lead back to ``struct a`` (a type owning itself,
  two or three types in a ring). Chains are allowed, however long: the running kernel (6.18.44)
  takes a node-and-root type owning another node-and-root type that owns plain nodes, although
  btf_check_and_fixup_fields' comment describes that shape as refused; pybpf follows the
  kernel's answers (tests/test_btf_refusals.py compares both on each shape).

libbpf then loads the object without BTF ("Error loading .BTF into kernel: -ELOOP. BTF is
optional, ignoring."): its maps get no value BTF and its programs no BTF, func_info or
line_info, so what needs them fails at program load with the verifier's messages ("bpf_obj_new/
bpf_percpu_obj_new requires prog BTF", "map 'x' has to have BTF in order to use
bpf_spin_lock"), and the rest loads and runs. :func:`pybpf.elf.load.bind` does the same and
keeps the refusal in ``obj.btf_error``.
"""
from __future__ import annotations

import errno

from pybpf.errors import MapError


def kernel_refusal(btf) -> tuple[int, str] | None:
    """(errno, why) when BPF_BTF_LOAD refuses ``btf``, else None (for what pybpf checks)."""
    if btf is None:
        return None
    from pybpf.verifier.kptr import kernel_kptr_without_dtor
    structs = [t for t in btf.types if t is not None and t.kind == "struct"]
    for t in structs:                           # btf_parse_struct_metas, in type id order
        for m in t.members:
            name = kernel_kptr_without_dtor(btf, m.type)
            if name is not None:
                return errno.ENOENT, (f"struct {t.name}'s __kptr {m.name} points to struct "
                                      f"{name}, a kernel type without a destructor")
    cycle = ownership_cycle(btf, structs)
    if cycle is not None:
        return errno.ELOOP, ("graph types own each other in a cycle: "
                             + " -> ".join(f"struct {n}" for n in cycle))
    return None


def ownership_cycle(btf, structs) -> list[str] | None:
    """A cycle of struct names (first name repeated last) in the graph 'struct a holds a list or
    tree of struct b', or None."""
    from pybpf.verifier.graph_fields import graph_roots
    owns: dict[str, list[str]] = {}
    for t in structs:
        try:
            roots = graph_roots(btf, t.id)
        except MapError:            # a root BTF_BTF_LOAD refuses for another reason
            continue
        if roots:
            owns[t.name] = [r.value_name for r in roots.values()]
    state: dict[str, int] = {}      # 1: on the path, 2: done (an iterative walk: any depth)
    for start in owns:
        if start in state:
            continue
        path, stack = [start], [iter(owns[start])]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(owns.get(nxt, ())))
    return None
