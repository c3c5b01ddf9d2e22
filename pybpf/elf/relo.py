"""Linking one program of a BPF object, the way libbpf does before it loads a program.

A program is its entry function followed by every subprogram it reaches (transitively), each
appended once, in the order the relocation pass first meets it. The pass walks the placed
instructions and applies what the object's ``.rel<section>`` entries and pc-relative calls say:

* ``call`` with R_BPF_64_32 against a function (or its section symbol) or with src 1 and no
  relocation -> BPF-to-BPF call, imm re-aimed at the appended copy; target slot =
  symbol value / 8 + imm + 1 within the symbol's section (libbpf's ``sub_insn_idx``);
* ``call`` against an undefined ``.ksyms`` symbol -> kfunc call (src 2) by pybpf kfunc id;
* ``ld_imm64`` with R_BPF_64_64 against a map -> src 5 (map index in ``Program.maps``); against
  a global data section -> src 6 with the variable's offset (insn imm + symbol value) in the
  second slot; against an ``__arena`` global -> src 6 on the arena map with
  ``arena_data_off`` added; against a function -> src 4 (a callback for bpf_loop & co).

CO-RE records (.BTF.ext core_relo) need no change: clang already wrote offsets for the object's
own types, which are the only types pybpf runs against.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import isa
from .btf import BTF, LINKAGE, BTFExt
from .maps import ARENA_SECTIONS
from .model import ElfMap, FuncInfo, line_text
from .reader import R_BPF_64_32, R_BPF_64_64, ElfReader, Reloc, Section
from ..errors import ELFError
from ..insn import Insn, s32, split_slots
from ..program import too_large
from ..kfunc_ids import KFUNC_IDS

MAP_SECTIONS = (".maps", "maps")   # map definitions (BTF-defined, legacy)
_CALL = isa.FORMS_BY_NAME["call_helper"].opcode
_LDDW = isa.FORMS_BY_NAME["lddw"].opcode


@dataclass(frozen=True)
class Func:
    """A function symbol: slots [start, end) of an executable section."""

    name: str
    section: Section
    start: int
    end: int
    bind: str


class Linker:
    """Links programs of one object; shared state is read-only, so one Linker serves them all."""

    def __init__(self, rd: ElfReader, maps: list[ElfMap], arena: ElfMap | None, arena_off: int,
                 btf: BTF | None, btf_ext: BTFExt | None):
        self.rd, self.maps, self.arena, self.arena_off = rd, maps, arena, arena_off
        self.btf, self.btf_ext = btf, btf_ext
        # code sections are decoded when a program first links them (section_insns), so an
        # object's size costs memory only for the programs loaded from it
        self.code_sections = {s.index: s for s in rd.sections if s.is_exec}
        self._decoded: dict[int, list[Insn]] = {}
        self.funcs = {i: functions_of(rd, sec) for i, sec in self.code_sections.items()}
        self._func_at = {(f.section.index, f.start): f for fs in self.funcs.values() for f in fs}
        self._ksyms = self._datasec_names(".ksyms")
        self._kconfig = self._datasec_names(".kconfig")

    def section_insns(self, index: int) -> list[Insn]:
        insns = self._decoded.get(index)
        if insns is None:
            insns = self._decoded[index] = _slots(self.rd, self.code_sections[index])
        return insns

    def _datasec_names(self, name: str) -> set[str]:
        ds = self.btf.datasecs().get(name) if self.btf else None
        return {self.btf[v.type].name for v in ds.secinfo} if ds else set()

    # --- the pass ------------------------------------------------------------------------------
    def link(self, entry: Func) -> dict:
        """Keyword arguments for ElfProgram: insns, functions, labels, maps, kfuncs, lines..."""
        st = _State()
        if entry.section.index not in self.code_sections:   # a program in a section without code
            raise ELFError(f"{self.rd.filename}: program '{entry.name}' is in section "
                           f"{entry.section.name}, which is not executable (SHF_EXECINSTR)")
        st.place(entry, self.section_insns(entry.section.index))
        i = 0
        while i < len(st.order):
            func, base = st.order[i]
            i += 1
            self._relocate(func, base, st)
        return dict(insns=st.out, functions={b: f.name for f, b in st.order},
                    labels=self._labels(st), maps=st.maps, kfuncs=st.kfuncs,
                    **self._debug_info(st))

    def _relocate(self, func: Func, base: int, st: "_State") -> None:
        relocs = self.rd.relocs_for(func.section)
        k = 0
        while k < func.end - func.start:
            orig, out_i = func.start + k, base + k
            insn = st.out[out_i]
            rel = relocs.get(orig * 8)
            where = f"{func.section.name}+{orig * 8:#x} (in {func.name})"
            if insn.opcode == _CALL and insn.src != isa.PSEUDO_KFUNC_CALL and (rel or insn.src == isa.PSEUDO_CALL):
                self._call(func, orig, out_i, insn, rel, where, st)
            elif insn.opcode == _LDDW:
                if rel is not None:
                    self._lddw(out_i, insn, rel, where, st)
                k += 1
                if relocs.get((orig + 1) * 8) is not None:
                    raise ELFError(f"{self.rd.filename}: relocation at {func.section.name}+"
                                   f"{(orig + 1) * 8:#x} points into the second slot of an ld_imm64")
            elif rel is not None:
                raise ELFError(f"{self.rd.filename}: {rel.type_name} at {where} against "
                               f"'{rel.symbol.name}' applies to an instruction (opcode "
                               f"{insn.opcode:#04x}) that is neither ld_imm64 nor call")
            k += 1

    def _call(self, func, orig, out_i, insn, rel: Reloc | None, where, st) -> None:
        if rel is None:   # pc-relative call inside the section
            sec, target = func.section, orig + insn.imm + 1
        else:
            if rel.type != R_BPF_64_32:
                raise self._bad_type(rel, where, "call", "R_BPF_64_32")
            sym = rel.symbol
            if not sym.defined:
                st.out[out_i] = self._kfunc(sym.name, where, st)
                return
            sec = self._section_of(sym, where)
            if not sec.is_exec:
                raise ELFError(f"{self.rd.filename}: call at {where} targets '{sym.name}' in "
                               f"non-executable section '{sec.name}'")
            target = sym.value // 8 + insn.imm + 1
        new = st.place_once(self._callee(sec, target, where), self.section_insns(sec.index))
        st.out[out_i] = insn._replace(src=isa.PSEUDO_CALL, imm=new - (out_i + 1))

    def _kfunc(self, name: str, where: str, st) -> Insn:
        kid = KFUNC_IDS.get(name)
        if kid is None:
            if self.btf is not None and name not in self._ksyms:
                raise ELFError(f"{self.rd.filename}: call at {where} to undefined function '{name}' "
                               f"(not a __ksym kfunc; link the objects first, e.g. bpftool gen object)")
            raise ELFError(f"{self.rd.filename}: unknown kfunc '{name}' called at {where} "
                           f"(pybpf implements: {', '.join(sorted(KFUNC_IDS))})")
        st.kfuncs[kid] = name
        return Insn(_CALL, 0, isa.PSEUDO_KFUNC_CALL, 0, kid)

    def _lddw(self, out_i, insn, rel: Reloc, where, st) -> None:
        if rel.type != R_BPF_64_64:
            raise self._bad_type(rel, where, "ld_imm64", "R_BPF_64_64")
        sym = rel.symbol
        if not sym.defined:
            kind = ("__kconfig extern" if sym.name in self._kconfig else
                    "__ksym variable (typed kernel symbols need the kernel's BTF)"
                    if sym.name in self._ksyms else "extern variable")
            raise ELFError(f"{self.rd.filename}: ld_imm64 at {where} refers to {kind} "
                           f"'{sym.name}', which pybpf cannot resolve")
        sec = self._section_of(sym, where)
        off = sym.value + insn.imm
        nxt = out_i + 1
        if sec.is_exec:   # address of a function: a callback (byte offset)
            if off % 8:
                raise ELFError(f"{self.rd.filename}: ld_imm64 at {where}: function address "
                               f"'{sym.name}'+{insn.imm} is not instruction aligned")
            new = st.place_once(self._callee(sec, off // 8, where), self.section_insns(sec.index))
            st.out[out_i] = insn._replace(src=isa.PSEUDO_FUNC, imm=new - (out_i + 1))
            st.out[nxt] = st.out[nxt]._replace(imm=0)
            return
        m = self._map_for(sec, off, sym, where)
        idx = st.map_index(m)
        if sec.name in MAP_SECTIONS:
            st.out[out_i] = insn._replace(src=isa.PSEUDO_MAP_IDX, imm=idx)
            st.out[nxt] = st.out[nxt]._replace(imm=0)
        else:
            value_off = off + (self.arena_off if m.type == "arena" else 0)
            st.out[out_i] = insn._replace(src=isa.PSEUDO_MAP_IDX_VALUE, imm=idx)
            st.out[nxt] = st.out[nxt]._replace(imm=s32(value_off))

    # --- lookups ---------------------------------------------------------------------------------
    def _map_for(self, sec: Section, off: int, sym, where: str) -> ElfMap:
        if sec.name in MAP_SECTIONS:
            for m in self.maps:
                if m.section == sec.name and m.sec_offset == off:
                    return m
            raise ELFError(f"{self.rd.filename}: ld_imm64 at {where} refers to '{sym.name}' at "
                           f"{sec.name}+{off:#x}, which is not the start of a map definition")
        for m in self.maps:
            if m.origin == "data" and m.section == sec.name:
                return m
        if self.arena is not None and sec.name in ARENA_SECTIONS:
            return self.arena
        raise ELFError(f"{self.rd.filename}: ld_imm64 at {where} refers to '{sym.name}' in section "
                       f"'{sec.name}', which is not a map, global data or function section")

    def _section_of(self, sym, where: str) -> Section:
        if not 0 <= sym.shndx < len(self.rd.sections):
            raise ELFError(f"{self.rd.filename}: relocation at {where} against '{sym.name}', which "
                           f"is not in any section (absolute or common symbol)")
        return self.rd.sections[sym.shndx]

    def _callee(self, sec: Section, slot: int, where: str) -> Func:
        f = self._func_at.get((sec.index, slot))
        if f is None:
            raise ELFError(f"{self.rd.filename}: call or function address at {where} targets "
                           f"{sec.name}+{slot * 8:#x}, which is not the start of a function")
        return f

    def _bad_type(self, rel: Reloc, where: str, insn: str, want: str) -> ELFError:
        return ELFError(f"{self.rd.filename}: unsupported relocation {rel.type_name} ({rel.type}) "
                        f"at {where} against '{rel.symbol.name}' ({insn} takes {want})")

    # --- symbols and debug info --------------------------------------------------------------------
    def _labels(self, st: "_State") -> dict[int, str]:
        labels = {}
        for func, base in st.order:
            for s in self.rd.symbols_in(func.section, types=("notype",)):
                slot = s.value // 8
                if func.start <= slot < func.end and s.value % 8 == 0:
                    labels.setdefault(base + slot - func.start, s.name)
        return labels

    def _debug_info(self, st: "_State") -> dict:
        lines, line_info, func_info = {}, [], {}
        if self.btf_ext is None:
            return dict(lines=lines, line_info=line_info, func_info=func_info)
        for func, base in st.order:
            sec = func.section.name
            for rec in self.btf_ext.line_info.get(sec, ()):
                slot = rec.insn_off // 8
                if func.start <= slot < func.end:
                    out = base + slot - func.start
                    line_info.append((out, rec))
                    lines.setdefault(out, line_text(rec))
            for insn_off, type_id in self.btf_ext.func_info.get(sec, ()):
                slot = insn_off // 8
                if func.start <= slot < func.end:
                    func_info[base + slot - func.start] = self._func_info(type_id)
        line_info.sort(key=lambda r: r[0])
        return dict(lines=lines, line_info=line_info, func_info=func_info)

    def _func_info(self, type_id: int) -> FuncInfo:
        btf = self.btf
        t = btf[type_id]     # BTFExt.parse checked that it is a FUNC
        params = tuple((p.name, btf.type_str(p.type)) for p in btf.func_params(type_id))
        tags: dict[int, list[str]] = {}
        for idx, tag in btf.decl_tags(type_id):
            tags.setdefault(idx, []).append(tag)
        return FuncInfo(t.name, type_id, LINKAGE.get(t.linkage, str(t.linkage)), params, tags)


class _State:
    """The program being linked: output slots, placed functions, maps and kfuncs it uses."""

    def __init__(self):
        self.out: list[Insn] = []
        self.order: list[tuple[Func, int]] = []
        self._placed: dict[tuple[int, int], int] = {}
        self.maps: list[ElfMap] = []
        self.kfuncs: dict[int, str] = {}

    def place(self, func: Func, section_insns: list[Insn]) -> int:
        base = len(self.out)
        self.out.extend(section_insns[func.start:func.end])
        self._placed[(func.section.index, func.start)] = base
        self.order.append((func, base))
        return base

    def place_once(self, func: Func, section_insns: list[Insn]) -> int:
        """Where ``func`` starts in the output, appending it on first use."""
        base = self._placed.get((func.section.index, func.start))
        return self.place(func, section_insns) if base is None else base

    def map_index(self, m: ElfMap) -> int:
        for i, have in enumerate(self.maps):
            if have is m:
                return i
        self.maps.append(m)
        return len(self.maps) - 1


def _slots(rd: ElfReader, sec: Section) -> list[Insn]:
    data = rd.section_data(sec)
    if len(data) % 8:
        raise ELFError(f"{rd.filename}: section '{sec.name}' is {len(data)} bytes, not a whole "
                       f"number of 8-byte instructions")
    # a section past the kernel's instruction limit is refused before it is decoded (the
    # programs that link it fail, as bpf_prog_load refuses them with E2BIG). A program using
    # only part of such a .text would load in the kernel; no real object comes near this.
    msg = too_large(len(data) // 8)
    if msg:
        raise ELFError(f"{rd.filename}: section '{sec.name}': {msg}")
    return split_slots(data)


def functions_of(rd: ElfReader, sec: Section) -> list[Func]:
    """The functions of an executable section, from its FUNC symbols (sizes from the symbols;
    a section without any, e.g. hand-written assembly, is one function named after it)."""
    n = sec.size // 8
    syms = rd.symbols_in(sec, types=("func",))
    if not syms:
        return [Func(sec.name, sec, 0, n, "global")] if n else []
    out = []
    for i, s in enumerate(syms):
        if s.value % 8:
            raise ELFError(f"{rd.filename}: function '{s.name}' starts at {sec.name}+{s.value:#x}, "
                           f"not on an instruction boundary")
        start = s.value // 8
        end = start + s.size // 8 if s.size else (syms[i + 1].value // 8 if i + 1 < len(syms) else n)
        if end > n or end <= start:
            raise ELFError(f"{rd.filename}: function '{s.name}' ({s.value:#x}+{s.size:#x}) does "
                           f"not fit in section '{sec.name}' ({sec.size:#x} bytes)")
        out.append(Func(s.name, sec, start, end, s.bind))
    return out
