"""BTF, the BPF Type Format: the types, data sections and function records of a clang object.

``BTF.parse`` reads a ``.BTF`` section (header, type records, string table) into ``BTFType``
records indexed by type id (id 0 is void). ``BTFExt.parse`` reads ``.BTF.ext``: per ELF section,
the function records (instruction byte offset -> FUNC type), the line records (instruction byte
offset -> file, line, column and the source line's text) and the CO-RE relocation records.
``BTF.format`` prints a type the way ``bpftool btf dump file x.o`` does, so the two can be
compared line for line. Layout reference: the kernel's Documentation/bpf/btf.rst and
include/uapi/linux/btf.h. Only little-endian BTF is read (pybpf loads little-endian objects).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import ELFError

BTF_MAGIC = 0xEB9F
KINDS = {1: "int", 2: "ptr", 3: "array", 4: "struct", 5: "union", 6: "enum", 7: "fwd",
         8: "typedef", 9: "volatile", 10: "const", 11: "restrict", 12: "func", 13: "func_proto",
         14: "var", 15: "datasec", 16: "float", 17: "decl_tag", 18: "type_tag", 19: "enum64"}
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
LINKAGE = {0: "static", 1: "global", 2: "extern"}
# Kinds that only qualify or rename another type; skipped when looking for the real type.
MODIFIERS = frozenset({"typedef", "volatile", "const", "restrict", "type_tag"})


class BTFError(ELFError):
    """Malformed BTF or .BTF.ext; the message names the section and the byte offset or type id."""


@dataclass(frozen=True)
class Member:
    """A struct/union member (bit_offset from the start of the aggregate) or a FUNC_PROTO parameter."""

    name: str
    type: int
    bit_offset: int = 0
    bitfield_size: int = 0


@dataclass(frozen=True)
class VarSecinfo:
    """One variable (or extern function) of a DATASEC: its VAR/FUNC type id, offset and size."""

    type: int
    offset: int
    size: int


@dataclass(frozen=True)
class BTFType:
    """One BTF type record. Which fields matter depends on ``kind`` (see the module docstring)."""

    id: int
    kind: str
    name: str = ""
    size: int = 0           # int, struct, union, enum, enum64, datasec, float
    type: int = 0           # ptr, typedef, modifiers, func, var, decl_tag (target); func_proto: return
    kind_flag: bool = False
    vlen: int = 0
    encoding: int = 0       # int: INT_SIGNED | INT_CHAR | INT_BOOL
    bits: int = 0           # int: number of bits
    bit_offset: int = 0     # int: bit offset of the value
    elem_type: int = 0      # array
    index_type: int = 0     # array
    nelems: int = 0         # array
    members: tuple = ()     # struct, union, func_proto (Member)
    values: tuple = ()      # enum, enum64: (name, value)
    linkage: int = 0        # func (in vlen), var
    secinfo: tuple = ()     # datasec (VarSecinfo)
    component_idx: int = -1  # decl_tag: -1 for the whole declaration, else member/argument index

    @property
    def signed(self) -> bool:
        if self.kind == "int":
            return bool(self.encoding & INT_SIGNED)
        return self.kind in ("enum", "enum64") and self.kind_flag


@dataclass(frozen=True)
class LineInfo:
    """A .BTF.ext line record: the instruction's byte offset in its section and its source line."""

    insn_off: int
    file: str
    line: int
    col: int
    text: str


@dataclass(frozen=True)
class CoreRelo:
    """A CO-RE relocation record (the access string is kept as written, e.g. ``0:1:2``)."""

    insn_off: int
    type_id: int
    access: str
    kind: int


_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")


def _cstr(strings: bytes, off: int, what: str) -> str:
    if not 0 <= off < max(len(strings), 1):
        raise BTFError(f"{what}: string offset {off} outside the string table ({len(strings)} bytes)")
    end = strings.find(b"\0", off)
    if end < 0:
        raise BTFError(f"{what}: unterminated string at offset {off}")
    return strings[off:end].decode("utf-8", errors="replace")


class BTF:
    """A parsed ``.BTF`` section: ``types[id]`` (``types[0]`` is void) plus lookups and printing."""

    def __init__(self, types: list[BTFType], strings: bytes):
        self.types = types
        self.strings = strings
        self._by_name: dict[str, list[BTFType]] = {}
        self._tags: dict[int, list[BTFType]] = {}
        for t in types[1:]:
            if t.name:
                self._by_name.setdefault(t.name, []).append(t)
            if t.kind == "decl_tag":
                self._tags.setdefault(t.type, []).append(t)

    # --- parsing -----------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes, section: str = ".BTF") -> "BTF":
        data = bytes(data)
        if len(data) < _HDR.size:
            raise BTFError(f"{section}: {len(data)} bytes is too short for a BTF header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data)
        if magic != BTF_MAGIC:
            raise BTFError(f"{section}: bad magic {magic:#06x} (want {BTF_MAGIC:#06x}, little-endian)")
        if version != 1:
            raise BTFError(f"{section}: unsupported BTF version {version}")
        tstart, sstart = hdr_len + type_off, hdr_len + str_off
        if hdr_len < _HDR.size or tstart + type_len > len(data) or sstart + str_len > len(data):
            raise BTFError(f"{section}: header points past the end of the section "
                           f"(types {tstart}+{type_len}, strings {sstart}+{str_len}, size {len(data)})")
        strings = data[sstart:sstart + str_len]
        types = [BTFType(0, "void")]
        pos, end = tstart, tstart + type_len
        while pos < end:
            t, pos = cls._parse_type(data, pos, end, len(types), strings, section)
            types.append(t)
        for t in types:
            for ref in _refs(t):
                if ref >= len(types):
                    raise BTFError(f"{section}: type [{t.id}] refers to missing type id {ref}")
        _check_resolvable(types, section)
        return cls(types, strings)

    @staticmethod
    def _parse_type(data: bytes, pos: int, end: int, tid: int, strings: bytes, section: str):
        if pos + _TYPE.size > end:
            raise BTFError(f"{section}: type [{tid}] at byte {pos} is truncated")
        name_off, info, size_type = _TYPE.unpack_from(data, pos)
        pos += _TYPE.size
        kind_no, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        kind = KINDS.get(kind_no)
        if kind is None:
            raise BTFError(f"{section}: type [{tid}] at byte {pos - _TYPE.size} has unknown kind {kind_no}")
        what = f"{section}: type [{tid}]"
        name = _cstr(strings, name_off, what)
        common = dict(id=tid, kind=kind, name=name, kind_flag=kflag, vlen=vlen)

        def need(n):
            if pos + n > end:
                raise BTFError(f"{what} ({kind.upper()}) is truncated")

        if kind in ("int",):
            need(4)
            (enc,) = struct.unpack_from("<I", data, pos)
            return BTFType(size=size_type, encoding=(enc >> 24) & 0xF, bit_offset=(enc >> 16) & 0xFF,
                           bits=enc & 0xFF, **common), pos + 4
        if kind == "array":
            need(12)
            elem, index, n = struct.unpack_from("<III", data, pos)
            return BTFType(elem_type=elem, index_type=index, nelems=n, **common), pos + 12
        if kind in ("struct", "union"):
            need(12 * vlen)
            members = []
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                bf, off = ((m_off >> 24), m_off & 0xFFFFFF) if kflag else (0, m_off)
                members.append(Member(_cstr(strings, m_name, what), m_type, off, bf))
            return BTFType(size=size_type, members=tuple(members), **common), pos + 12 * vlen
        if kind == "enum":
            need(8 * vlen)
            vals = []
            for i in range(vlen):
                v_name, v = struct.unpack_from("<Ii" if kflag else "<II", data, pos + 8 * i)
                vals.append((_cstr(strings, v_name, what), v))
            return BTFType(size=size_type, values=tuple(vals), **common), pos + 8 * vlen
        if kind == "enum64":
            need(12 * vlen)
            vals = []
            for i in range(vlen):
                v_name, lo, hi = struct.unpack_from("<III", data, pos + 12 * i)
                v = lo | (hi << 32)
                if kflag and v >> 63:
                    v -= 1 << 64
                vals.append((_cstr(strings, v_name, what), v))
            return BTFType(size=size_type, values=tuple(vals), **common), pos + 12 * vlen
        if kind == "func_proto":
            need(8 * vlen)
            params = tuple(Member(_cstr(strings, struct.unpack_from("<I", data, pos + 8 * i)[0], what),
                                  struct.unpack_from("<I", data, pos + 8 * i + 4)[0])
                           for i in range(vlen))
            return BTFType(type=size_type, members=params, **common), pos + 8 * vlen
        if kind == "var":
            need(4)
            (linkage,) = struct.unpack_from("<I", data, pos)
            return BTFType(type=size_type, linkage=linkage, **common), pos + 4
        if kind == "datasec":
            need(12 * vlen)
            info_ = tuple(VarSecinfo(*struct.unpack_from("<III", data, pos + 12 * i)) for i in range(vlen))
            return BTFType(size=size_type, secinfo=info_, **common), pos + 12 * vlen
        if kind == "decl_tag":
            need(4)
            (comp,) = struct.unpack_from("<i", data, pos)
            return BTFType(type=size_type, component_idx=comp, **common), pos + 4
        if kind == "func":
            return BTFType(type=size_type, linkage=vlen, **common), pos
        if kind == "float":
            return BTFType(size=size_type, **common), pos
        return BTFType(type=size_type, **common), pos  # ptr, fwd, typedef, modifiers, type_tag

    # --- lookups -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.types)

    def __getitem__(self, tid: int) -> BTFType:
        if not 0 <= tid < len(self.types):
            raise BTFError(f".BTF: there is no type id {tid} ({len(self.types) - 1} types)")
        return self.types[tid]

    def find(self, name: str, kind: str | None = None) -> BTFType | None:
        """The first type called ``name`` (of ``kind`` when given)."""
        for t in self._by_name.get(name, ()):
            if kind is None or t.kind == kind:
                return t
        return None

    def resolve(self, tid: int) -> BTFType:
        """The type behind typedefs, const/volatile/restrict and type tags."""
        seen = 0
        t = self.types[tid]
        while t.kind in MODIFIERS:
            t = self.types[t.type]
            seen += 1
            if seen > len(self.types):
                raise BTFError(f".BTF: type [{tid}] is a modifier loop")
        return t

    def size_of(self, tid: int) -> int:
        """Size in bytes, as the C ``sizeof`` would give it (pointers are 8 bytes)."""
        t = self.resolve(tid)
        if t.kind == "ptr":
            return 8
        if t.kind == "array":
            return t.nelems * self.size_of(t.elem_type)
        if t.kind in ("int", "struct", "union", "enum", "enum64", "float", "datasec"):
            return t.size
        if t.kind == "var":
            return self.size_of(t.type)
        raise BTFError(f".BTF: type [{tid}] ({t.kind}) has no size")

    def datasecs(self) -> dict[str, BTFType]:
        return {t.name: t for t in self.types if t.kind == "datasec"}

    def decl_tags(self, tid: int) -> list[tuple[int, str]]:
        """(component_idx, tag) of every DECL_TAG on type ``tid`` (-1 = the declaration itself)."""
        return [(t.component_idx, t.name) for t in self._tags.get(tid, ())]

    def func_params(self, func_id: int) -> tuple[Member, ...]:
        """Parameters of a FUNC type (from its FUNC_PROTO)."""
        f = self.types[func_id]
        if f.kind != "func":
            raise BTFError(f".BTF: type [{func_id}] is {f.kind}, not func")
        return self.types[f.type].members

    def type_str(self, tid: int, _path: frozenset = frozenset()) -> str:
        """A C-like spelling: ``unsigned int``, ``struct htab *``, ``__u64[16]``, ``void``.

        BTF the kernel accepts may still point back at itself through a function prototype or
        an array (``typedef void (*f)(f *)`` has no C spelling): a type met again on its own
        path prints as ``[id]``."""
        if tid in _path or len(_path) > 64:
            return f"[{tid}]"
        _path = _path | {tid}
        type_str = lambda t_id: self.type_str(t_id, _path)  # noqa: E731
        t = self.types[tid]
        if t.kind == "void":
            return "void"
        if t.kind == "ptr":
            return type_str(t.type) + " *"
        if t.kind == "array":   # C order: int[2][3] is an array of 2 arrays of 3 ints
            dims = ""
            while t.kind == "array":
                dims += f"[{t.nelems}]"
                t = self.types[t.elem_type]
            return type_str(t.id) + dims
        if t.kind in ("const", "volatile", "restrict"):
            return f"{t.kind} {type_str(t.type)}"
        if t.kind in ("struct", "union", "enum", "enum64"):
            tag = "enum" if t.kind == "enum64" else t.kind
            return f"{tag} {t.name or '(anon)'}"
        if t.kind == "fwd":
            return f"{'union' if t.kind_flag else 'struct'} {t.name}"
        if t.kind == "func_proto":
            args = ", ".join(type_str(p.type) for p in t.members) or "void"
            return f"{type_str(t.type)} (*)({args})"
        if t.kind in ("var", "type_tag", "decl_tag", "func"):
            return type_str(t.type)
        return t.name

    # --- bpftool-style printing ----------------------------------------------------------------
    def format(self, tid: int) -> str:
        """Type ``tid`` as ``bpftool btf dump file`` prints it (one or more lines)."""
        t = self.types[tid]
        name = t.name or "(anon)"
        head = f"[{tid}] {t.kind.upper()} '{name}'"
        if t.kind == "int":
            enc = {0: "(none)", INT_SIGNED: "SIGNED", INT_CHAR: "CHAR", INT_BOOL: "BOOL"}.get(t.encoding, "UNKN")
            return f"{head} size={t.size} bits_offset={t.bit_offset} nr_bits={t.bits} encoding={enc}"
        if t.kind in ("ptr", "typedef", "volatile", "const", "restrict", "type_tag"):
            return f"{head} type_id={t.type}"
        if t.kind == "array":
            return f"{head} type_id={t.elem_type} index_type_id={t.index_type} nr_elems={t.nelems}"
        if t.kind in ("struct", "union"):
            lines = [f"{head} size={t.size} vlen={t.vlen}"]
            for m in t.members:
                s = f"\t'{m.name or '(anon)'}' type_id={m.type} bits_offset={m.bit_offset}"
                lines.append(s + (f" bitfield_size={m.bitfield_size}" if m.bitfield_size else ""))
            return "\n".join(lines)
        if t.kind in ("enum", "enum64"):
            enc = "SIGNED" if t.kind_flag else "UNSIGNED"
            lines = [f"{head} encoding={enc} size={t.size} vlen={t.vlen}"]
            sfx = "" if t.kind == "enum" else ("LL" if t.kind_flag else "ULL")
            lines += [f"\t'{n}' val={v}{sfx}" for n, v in t.values]
            return "\n".join(lines)
        if t.kind == "fwd":
            return f"{head} fwd_kind={'union' if t.kind_flag else 'struct'}"
        if t.kind == "func":
            return f"{head} type_id={t.type} linkage={LINKAGE.get(t.linkage, t.linkage)}"
        if t.kind == "func_proto":
            lines = [f"{head} ret_type_id={t.type} vlen={t.vlen}"]
            lines += [f"\t'{p.name or '(anon)'}' type_id={p.type}" for p in t.members]
            return "\n".join(lines)
        if t.kind == "var":
            return f"{head} type_id={t.type}, linkage={LINKAGE.get(t.linkage, t.linkage)}"
        if t.kind == "datasec":
            lines = [f"{head} size={t.size} vlen={t.vlen}"]
            for v in t.secinfo:
                vt = self.types[v.type]
                lines.append(f"\ttype_id={v.type} offset={v.offset} size={v.size} "
                             f"({vt.kind.upper()} '{vt.name}')")
            return "\n".join(lines)
        if t.kind == "float":
            return f"{head} size={t.size}"
        if t.kind == "decl_tag":
            return f"{head} type_id={t.type} component_idx={t.component_idx}"
        return head

    def dump(self) -> str:
        """Every type, as ``bpftool btf dump file x.o`` prints them."""
        return "\n".join(self.format(i) for i in range(1, len(self.types))) + "\n"


MAX_RESOLVE_DEPTH = 32     # kernel/bpf/btf.c


_NEEDS_RESOLVE = MODIFIERS | {"ptr", "struct", "union", "array", "var", "func", "decl_tag",
                              "datasec"}


def _is_sink(kind: str, mode: str) -> bool:
    """env_type_is_resolve_sink(): whether a type the walk reaches needs no resolving first.
    The mode is that of the type the walk started from: for a pointer only pointers and
    modifiers are walked through (so a struct may point at itself); for a struct or an array
    only modifiers, arrays and structs (a struct holds a pointer, not what it points at)."""
    if mode == "ptr":
        return kind not in MODIFIERS and kind != "ptr"
    if mode == "struct":
        return kind not in MODIFIERS and kind not in ("array", "struct", "union")
    return kind not in _NEEDS_RESOLVE


def _next_types(t: BTFType):
    if t.kind == "array":
        yield t.elem_type
    elif t.kind in ("struct", "union"):
        yield from (m.type for m in t.members)
    elif t.kind == "datasec":
        yield from (v.type for v in t.secinfo)
    elif t.kind in _NEEDS_RESOLVE:
        yield t.type


def _check_resolvable(types: list[BTFType], section: str) -> None:
    """Refuse what btf_resolve() refuses: a loop of types each of which must be resolved before
    the other ('Loop detected': a struct holding itself by value, a pointer to itself, a typedef
    of itself, an array of itself) and a walk deeper than MAX_RESOLVE_DEPTH. Everything that
    follows types later (sizes, C spellings, value layouts) then ends. As the kernel: types in
    id order, a resolved type never walked again, the mode fixed by where a walk starts."""
    resolved = [False] * len(types)
    for start in range(1, len(types)):
        if resolved[start] or types[start].kind not in _NEEDS_RESOLVE:
            continue
        kind = types[start].kind
        mode = "ptr" if kind == "ptr" else "struct" if kind in ("struct", "union", "array") \
            else "tbd"
        on_stack = {start}
        stack = [(start, _next_types(types[start]))]
        while stack:
            tid, nexts = stack[-1]
            nxt = next(nexts, None)
            if nxt is None:
                resolved[tid] = True
                on_stack.discard(tid)
                stack.pop()
            elif nxt == 0 or resolved[nxt] or _is_sink(types[nxt].kind, mode):
                continue
            elif nxt in on_stack:
                raise BTFError(f"{section}: type [{nxt}] ({types[nxt].kind}): Loop detected")
            elif len(stack) >= MAX_RESOLVE_DEPTH:
                raise BTFError(f"{section}: type [{start}] ({kind}): Exceeded max resolving "
                               f"depth:{MAX_RESOLVE_DEPTH}")
            else:
                on_stack.add(nxt)
                stack.append((nxt, _next_types(types[nxt])))


def _refs(t: BTFType):
    """Type ids a record points at (to check they exist)."""
    if t.kind in ("ptr", "typedef", "volatile", "const", "restrict", "type_tag", "func", "var",
                  "func_proto", "decl_tag"):
        yield t.type
    if t.kind == "array":
        yield t.elem_type
        yield t.index_type
    for m in t.members:
        yield m.type
    for v in t.secinfo:
        yield v.type


# --- .BTF.ext -----------------------------------------------------------------------------------
_EXT_HDR = struct.Struct("<HBBIIIII")


@dataclass
class BTFExt:
    """Parsed ``.BTF.ext``: per ELF section name, func records, line records and CO-RE records.

    ``func_info[sec]`` is a list of (insn byte offset, FUNC type id); offsets are in bytes within
    the section, as clang writes them (libbpf divides by 8 when it loads).
    """

    func_info: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    line_info: dict[str, list[LineInfo]] = field(default_factory=dict)
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes, btf: BTF, section: str = ".BTF.ext") -> "BTFExt":
        data = bytes(data)
        if len(data) < 8:
            raise BTFError(f"{section}: {len(data)} bytes is too short for a header")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data)
        if magic != BTF_MAGIC or version != 1:
            raise BTFError(f"{section}: bad magic {magic:#06x} or version {version}")
        if hdr_len < 24 or hdr_len > len(data):
            raise BTFError(f"{section}: bad header length {hdr_len}")
        fi_off, fi_len, li_off, li_len = struct.unpack_from("<IIII", data, 8)
        core_off = core_len = 0
        if hdr_len >= 32:
            core_off, core_len = struct.unpack_from("<II", data, 24)
        ext = cls()
        s = btf.strings

        def name(off: int) -> str:
            return _cstr(s, off, section)

        for sec, recs in _ext_records(data, hdr_len + fi_off, fi_len, 8, section, "func_info", name):
            ext.func_info[sec] = [struct.unpack_from("<II", r) for r in recs]
            for off, tid in ext.func_info[sec]:
                if btf[tid].kind != "func":
                    raise BTFError(f"{section}: func_info of '{sec}' at {off:#x} names type "
                                   f"[{tid}], a {btf[tid].kind}, not a func")
        for sec, recs in _ext_records(data, hdr_len + li_off, li_len, 16, section, "line_info", name):
            out = []
            for r in recs:
                insn_off, file_off, line_off, line_col = struct.unpack_from("<IIII", r)
                out.append(LineInfo(insn_off, name(file_off), line_col >> 10, line_col & 0x3FF,
                                    name(line_off)))
            ext.line_info[sec] = out
        if core_len:
            for sec, recs in _ext_records(data, hdr_len + core_off, core_len, 16, section, "core_relo", name):
                out = []
                for r in recs:
                    insn_off, type_id, acc, kind = struct.unpack_from("<IIII", r)
                    btf[type_id]   # must exist
                    out.append(CoreRelo(insn_off, type_id, name(acc), kind))
                ext.core_relos[sec] = out
        return ext


def _ext_records(data: bytes, start: int, length: int, min_size: int, section: str, what: str, name):
    """Yield (section name, [record bytes]) of one .BTF.ext info block."""
    if not length:
        return
    end = start + length
    if end > len(data) or length < 4:
        raise BTFError(f"{section}: {what} block ({start}+{length}) lies outside the section")
    (rec_size,) = struct.unpack_from("<I", data, start)
    if rec_size < min_size:
        raise BTFError(f"{section}: {what} record size {rec_size} is below {min_size}")
    pos = start + 4
    while pos < end:
        if pos + 8 > end:
            raise BTFError(f"{section}: {what} block truncated at byte {pos}")
        sec_off, n = struct.unpack_from("<II", data, pos)
        pos += 8
        if pos + n * rec_size > end:
            raise BTFError(f"{section}: {what} of section '{name(sec_off)}' is truncated")
        yield name(sec_off), [data[pos + i * rec_size: pos + (i + 1) * rec_size] for i in range(n)]
        pos += n * rec_size
