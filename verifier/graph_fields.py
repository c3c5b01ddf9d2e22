"""Graph roots in BTF (the kernel's btf_parse_fields for bpf_list_head and bpf_rb_root): one
parser for the maps (runtime/maps/btf_fields.py: roots in map values and global data) and the
verifier (verifier/graph.py: roots in allocated objects).

A ``struct bpf_list_head``/``struct bpf_rb_root`` member or variable with a
``contains:T:field`` decl tag (``__contains(T, field)``) holds ``struct T`` objects through
their ``bpf_list_node``/``bpf_rb_node`` member ``field``.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

from pybpf.errors import MapError

GRAPH_ROOTS = {"bpf_list_head": "bpf_list_node", "bpf_rb_root": "bpf_rb_node"}
GRAPH_NODES = frozenset(GRAPH_ROOTS.values())
ROOT_SIZE = 16


@dataclass(frozen=True)
class GraphRoot:
    """One ``bpf_list_head``/``bpf_rb_root`` at ``offset`` of a value: it holds ``struct
    value_name`` (type ``value_type`` of ``btf``) through its node field ``node_name`` at
    ``node_offset``."""

    kind: str               # "bpf_list_head" | "bpf_rb_root"
    offset: int
    btf: object = field(compare=False, repr=False)
    value_type: int
    value_name: str
    node_name: str
    node_offset: int

    @property
    def node_kind(self) -> str:
        return GRAPH_ROOTS[self.kind]


def _struct_name(btf, tid: int) -> str | None:
    t = btf.resolve(tid)
    return t.name if t.kind == "struct" else None


def _contains(btf, root_kind: str, off: int, tags) -> GraphRoot:
    tag = next((t for t in tags if t.startswith("contains:")), None)
    if tag is None:
        raise MapError(f"{root_kind} at offset {off} has no __contains(type, field) tag",
                       errno.EINVAL)
    _, name, node = (tag.split(":") + ["", ""])[:3]
    vt = btf.find(name, "struct")
    if vt is None:
        raise MapError(f"{root_kind} at offset {off}: no struct {name} for {tag!r}",
                       errno.EINVAL)
    for mb in vt.members:
        if mb.name == node and _struct_name(btf, mb.type) == GRAPH_ROOTS[root_kind]:
            return GraphRoot(root_kind, off, btf, vt.id, name, node, mb.bit_offset // 8)
    raise MapError(f"{root_kind} at offset {off}: struct {name} has no "
                   f"{GRAPH_ROOTS[root_kind]} {node}", errno.EINVAL)


def graph_roots(btf, type_id: int, var_offsets: dict | None = None) -> dict[int, GraphRoot]:
    """The graph roots of value type ``type_id`` (a struct, or a DATASEC), by offset."""
    if btf is None or not type_id:
        return {}
    t = btf.resolve(type_id)
    out: dict[int, GraphRoot] = {}
    if t.kind == "struct":
        tags: dict[int, list[str]] = {}
        for idx, tag in btf.decl_tags(t.id):
            tags.setdefault(idx, []).append(tag)
        for i, m in enumerate(t.members):
            kind = _struct_name(btf, m.type)
            if kind in GRAPH_ROOTS:
                off = m.bit_offset // 8
                out[off] = _contains(btf, kind, off, tags.get(i, ()))
    elif t.kind == "datasec":
        for v in t.secinfo:
            var = btf[v.type]
            kind = _struct_name(btf, var.type) if var.kind == "var" else None
            if kind in GRAPH_ROOTS:
                off = (var_offsets or {}).get(var.name, v.offset)
                out[off] = _contains(btf, kind, off, [tag for _, tag in btf.decl_tags(var.id)])
    return out
