"""The records an ELF object becomes: ``BpfObject`` with its ``ElfProgram``s, ``ElfMap``s,
``Variable``s and ``Extern``s. ``pybpf.elf`` fills them in; ``pybpf.elf.load`` binds them to a VM.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .btf import BTF, BTFExt, LineInfo
from .btf_values import decode, encode
from ..errors import ELFError
from ..program import MapDecl, Program


@dataclass
class ElfMap(MapDecl):
    """A map of the object: a MapDecl plus where it came from and what it starts with.

    ``origin`` is ``"btf"`` (``.maps``), ``"legacy"`` (``maps``), ``"data"`` (a global data
    section; ``real_name`` is that section) or ``"arena"``'s globals go to the arena map itself.
    ``initial`` holds the bytes to write at ``initial_offset`` of the value (data maps: key 0;
    arena: byte offset in the arena) right after the map is created, as libbpf does.
    """

    origin: str = "btf"
    section: str = ""
    sec_offset: int = 0
    real_name: str = ""
    btf_key_type: int = 0
    btf_value_type: int = 0
    initial: bytes | None = field(default=None, repr=False)
    initial_offset: int = 0
    numa_node: int = 0
    pinning: int = 0
    # __array(values, ...): the inner map's template (map-in-map) and the initial entries,
    # index -> the program (prog_array) or map (map-in-map) name libbpf puts there
    inner: "ElfMap | None" = field(default=None, repr=False)
    init_slots: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class FuncInfo:
    """A function of a linked program, from .BTF.ext func_info and its BTF FUNC type.

    ``arg_tags`` maps argument index -> decl tags (``arg:arena`` marks an ``__arg_arena``
    argument of a global function; the verifier checks those functions on their own).
    """

    name: str
    btf_id: int
    linkage: str                       # "static" | "global" | "extern"
    params: tuple = ()                 # (name, C type) per argument
    arg_tags: dict = field(default_factory=dict)


@dataclass
class ElfProgram(Program):
    """A linked program of an object: entry function first, then the subprograms it calls.

    ``prog_type``/``attach_to``/``sleepable`` come from the section name as libbpf reads it;
    ``autoload`` is False for a ``SEC("?...")`` program (libbpf does not load it unless asked);
    ``load_error`` is the error that stops this program (and only it) from loading: libbpf opens
    an object whose programs cannot all be loaded, and the failure shows at ``vm.load``;
    ``func_info`` maps entry slots to FuncInfo and ``line_info`` lists (slot, LineInfo);
    ``Program.lines`` holds the same source text by slot for listings.
    """

    section: str = ""
    prog_type: str | None = None
    attach_to: str = ""
    sleepable: bool = False
    license: str = ""
    autoload: bool = True
    load_error: object = field(default=None, repr=False)
    prog_array_slots: list = field(default_factory=list, repr=False)   # (map, index) to fill
    func_info: dict = field(default_factory=dict)
    line_info: list = field(default_factory=list)
    btf: BTF | None = field(default=None, repr=False)


@dataclass
class Extern:
    """An undefined symbol the object uses: a kfunc (resolved to a pybpf kfunc id) or other."""

    name: str
    kind: str          # "kfunc"
    section: str       # ".ksyms"
    id: int = 0
    weak: bool = False


class Variable:
    """A global variable: where it lives (``section``, ``offset``, ``size``) and its BTF type.

    After ``load_elf`` it is bound to the map (or arena) that holds it: ``.value`` reads and
    writes the live bytes as a typed Python value (see ``pybpf.elf.btf_values``) and ``.address``
    gives its address (arena globals: their arena user address). ``.initial`` is the value the
    object file gives it, available without loading.
    """

    def __init__(self, name: str, section: str, offset: int, size: int, type_id: int = 0,
                 btf: BTF | None = None, linkage: str = "global", map_name: str = "",
                 initial_bytes: bytes = b""):
        self.name, self.section, self.offset, self.size = name, section, offset, size
        self.type_id, self.btf, self.linkage, self.map_name = type_id, btf, linkage, map_name
        self.initial_bytes = initial_bytes
        self._backing = None   # set by load_elf: reads/writes (offset, size) of the live storage

    def __repr__(self) -> str:
        return (f"Variable({self.name!r}, section={self.section!r}, offset={self.offset}, "
                f"size={self.size}, type={self.type_str!r})")

    @property
    def type_str(self) -> str:
        return self.btf.type_str(self.type_id) if self.btf is not None and self.type_id else "?"

    @property
    def initial(self):
        return decode(self.btf, self.type_id, self.initial_bytes)

    def _bound(self):
        if self._backing is None:
            raise ELFError(f"variable '{self.name}' ({self.section}) is not loaded into a VM; "
                           f"use pybpf.load_elf() to create its map")
        return self._backing

    @property
    def address(self) -> int | None:
        return self._bound().address(self.offset)

    @property
    def raw(self) -> bytes:
        return self._bound().read(self.offset, self.size)

    @raw.setter
    def raw(self, data: bytes) -> None:
        self.value = bytes(data)

    @property
    def value(self):
        return decode(self.btf, self.type_id, self.raw)

    @value.setter
    def value(self, v) -> None:
        self._bound().write(self.offset, encode(self.btf, self.type_id, v, self.size,
                                                f"variable '{self.name}'"))


class BpfObject:
    """A parsed BPF object file (phase 1) that ``load_elf`` can bind to a VM (phase 2).

    ``programs[name]``: ElfProgram by function name; ``maps[name]``: ElfMap declarations (after
    ``load_elf``, the VM's map objects; ``map_defs`` keeps the declarations);
    ``variables[name]``; ``externs[name]``; ``license``; ``btf`` / ``btf_ext`` (None without
    debug info); ``arena_data_off``: where the arena globals start inside the arena (newer libbpf
    puts them at its end so that offset 0 stays free).
    """

    def __init__(self, name: str, filename: str):
        self.name, self.filename = name, filename
        self.license = ""
        self.kern_version = 0
        self.btf: BTF | None = None
        self.btf_ext: BTFExt | None = None
        self.programs: dict[str, ElfProgram] = {}
        self.map_defs: dict[str, ElfMap] = {}
        self.maps: dict = _MapTable()
        self.variables: dict[str, Variable] = {}
        self.externs: dict[str, Extern] = {}
        self.data_sections: dict[str, bytes] = {}
        self.arena_data_off = 0
        self.arena_map: str | None = None
        self.map_errors: dict = {}     # after load_elf: map name -> why it could not be created
        self.btf_error = None          # after load_elf: ELFError (with .errno) when the kernel
        #                                would refuse the BTF (elf/btf_load.py): loaded without it
        self.vm = None

    def __repr__(self) -> str:
        return (f"BpfObject({self.name!r}, programs={list(self.programs)}, maps={list(self.map_defs)}, "
                f"variables={len(self.variables)}, license={self.license!r})")

    def program(self, name: str | None = None) -> ElfProgram:
        """The program called ``name`` or the only/first program in section ``name``."""
        if not self.programs:
            raise ELFError(f"{self.filename}: the object has no programs")
        if name is None:
            return next(iter(self.programs.values()))
        if name in self.programs:
            return self.programs[name]
        for p in self.programs.values():
            if p.section == name:
                return p
        raise ELFError(f"{self.filename}: no program or section '{name}' "
                       f"(programs: {', '.join(f'{p.name} [{p.section}]' for p in self.programs.values())})")


class _MapTable(dict):
    """Maps by name; a global-data map also answers to its section name (``maps['.bss']``)."""

    def __init__(self, *args, aliases: dict[str, str] | None = None):
        super().__init__(*args)
        self.aliases = dict(aliases or {})

    def __missing__(self, key):
        if key in self.aliases and self.aliases[key] in self:
            return self[self.aliases[key]]
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or (key in self.aliases and
                                                dict.__contains__(self, self.aliases[key]))


def line_text(info: LineInfo) -> str:
    """The source text shown for a line record (bpftool strips leading blanks too)."""
    return info.text.strip()
