"""The disassembler: one printer, three styles, driven by the templates of the ISA table.

Every form in :mod:`pybpf.isa` carries a template per style (``ubpf``, ``llvm``, ``kernel``);
this module only knows how each *placeholder* is written in each style (docs/syntax.md is the
contract shared with the assembler) and how a listing is laid out:

* ``llvm``: ``llvm-objdump-19 -d --mcpu=v4`` instruction lines (``%8d:`` TAB raw bytes TAB text)
  under objdump-style symbol headers, jump targets annotated ``<sym+0xOFF>``;
* ``ubpf``: the mnemonic dialect of bpf_conformance, re-assemblable: ``.map`` directives, then
  one instruction per line with ``name:`` label lines at named slots and jump/call targets;
* ``kernel``: ``bpftool prog dump xlated`` lines (``% 4u: (%02x) text``), kernel/bpf/disasm.c text.

:func:`format_insn` renders a single instruction without any prefix; the verifier log and the
interpreter's trace call it once per instruction, so it computes nothing program-wide unless a
placeholder needs names (jump annotations, call targets).

>>> from pybpf.insn import make
>>> format_insn(make("mov64_imm", dst=0, imm=42), 0, "kernel")
'r0 = 42'
>>> format_insn(make("jeq64_imm", dst=1, off=2, imm=-1), 0, "llvm")
'if r1 == -0x1 goto +0x2 <.text+0x18>'
"""
from __future__ import annotations

import re
from bisect import bisect_right

from . import isa
from .helper_names import HELPER_NAMES
from .insn import form_of, imm64, validate
from .kfunc_ids import KFUNC_NAMES
from .program import Program

STYLES = ("llvm", "ubpf", "kernel")

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


# --- number formats ----------------------------------------------------------------------
def _shex(v: int) -> str:
    """Signed hex as LLVM prints it: ``0x2a``, ``-0x8``."""
    return f"-{-v:#x}" if v < 0 else f"{v:#x}"


def _rel_hex(v: int) -> str:
    """A relative jump as llvm-objdump prints it: ``+0x1``, ``-0x3``."""
    return f"-{-v:#x}" if v < 0 else f"+{v:#x}"


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


# --- names a listing needs -----------------------------------------------------------------
# Placeholders whose value is a code location: slot -> target slot (all relative to slot + 1).
_TARGETS = {
    "tgt": lambda slot, i: slot + 1 + i.off,
    "tgtl": lambda slot, i: slot + 1 + i.imm,
    "func": lambda slot, i: slot + 1 + i.imm,
}
_PH = re.compile(r"\{(\w+)\}")
_FORM_TARGETS: dict[str, tuple[str, ...]] = {}


def _target_placeholders(form: isa.Form) -> tuple[str, ...]:
    """The code-location placeholders of a form (cached; the same in every style's template)."""
    phs = _FORM_TARGETS.get(form.name)
    if phs is None:
        phs = _FORM_TARGETS[form.name] = tuple(p for p in _PH.findall(form.ubpf) if p in _TARGETS)
    return phs


class _Names:
    """Code symbols for one program and style: which slots carry which names.

    ``at[slot]`` lists the names printed at a slot (the program's function name, then its label,
    or a synthesized one); the first of them is used for operands and headers. Call targets
    without a name get ``sub_<slot>``; in the mnemonic style, jump targets without a name get
    ``L<slot>`` so the listing reads like hand-written assembly. Synthesized names never collide
    with the program's own. Only the mnemonic style prints labels after the last instruction.
    """

    def __init__(self, insns, decoded, prog: Program | None, style: str, symbols: bool):
        self.at: dict[int, list[str]] = {}
        self.starts = {slot for slot, _, _ in decoded}
        self.end = len(insns) if style == "ubpf" else None
        if not symbols:
            self.at[0] = [".text"] if style == "llvm" else []
            self.sorted = [0]
            return
        if prog is not None:
            for table in (prog.functions, prog.labels):
                for slot, name in sorted(table.items()):
                    names = self.at.setdefault(slot, [])
                    if name not in names:
                        names.append(name)
        taken = {n for names in self.at.values() for n in names}
        calls, jumps = set(), set()
        for slot, form, insn in decoded:
            for ph in _target_placeholders(form):
                (calls if ph == "func" else jumps).add(_TARGETS[ph](slot, insn))
        wanted = [(t, "sub_") for t in sorted(calls)]
        if style == "ubpf":
            wanted += [(t, "L") for t in sorted(jumps - calls)]
        for target, prefix in wanted:
            if target in self.starts and not self.at.get(target):
                name = base = f"{prefix}{target}"
                n = 0
                while name in taken:
                    n += 1
                    name = f"{base}_{n}"
                taken.add(name)
                self.at[target] = [name]
        if style == "llvm" and not self.at.get(0):
            self.at[0] = [".text"]  # objdump's section symbol when nothing is named at 0
        self.sorted = sorted(s for s, names in self.at.items() if names and s in self.starts)

    def name(self, target: int) -> str | None:
        """The name to print for a jump/call target, if the listing has a line for it."""
        names = self.at.get(target)
        if names and (target in self.starts or target == self.end):
            return names[0]
        return None

    def annotate(self, target: int) -> str:
        """llvm-objdump's ``<sym>`` / ``<sym+0xOFF>`` for a target slot (byte offsets)."""
        i = bisect_right(self.sorted, target) - 1
        base = self.sorted[max(i, 0)]  # before the first symbol objdump wraps the offset
        name = self.at[base][0]
        delta = ((target - base) * 8) & _U64
        return f"<{name}>" if delta == 0 else f"<{name}+{delta:#x}>"


class _Site:
    """One instruction being rendered, with lazy access to program-wide names."""

    __slots__ = ("insns", "slot", "insn", "prog", "style", "symbols", "_names", "_decoded")

    def __init__(self, insns, slot, prog, style, symbols, names=None, decoded=None):
        self.insns, self.slot, self.insn, self.prog = insns, slot, insns[slot], prog
        self.style, self.symbols, self._names, self._decoded = style, symbols, names, decoded

    @property
    def names(self) -> _Names:
        if self._names is None:
            decoded = self._decoded
            if decoded is None:
                decoded = self.prog.instructions() if self.prog is not None else validate(self.insns)
            self._names = _Names(self.insns, decoded, self.prog, self.style, self.symbols)
        return self._names

    def target(self, ph: str) -> int:
        return _TARGETS[ph](self.slot, self.insn)

    def kfunc_name(self) -> str | None:
        imm = self.insn.imm
        if self.prog is not None and imm in self.prog.kfuncs:
            return self.prog.kfuncs[imm]
        return KFUNC_NAMES.get(imm)

    def map_name(self) -> str:
        imm = self.insn.imm
        if self.prog is not None and 0 <= imm < len(self.prog.maps):
            return self.prog.maps[imm].name
        return str(imm)


# --- per-style placeholder formatters --------------------------------------------------------
def _ubpf_target(s: _Site, ph: str) -> str:
    name = s.names.name(s.target(ph)) if s.symbols else None
    return name or f"{s.target(ph) - s.slot - 1:+d}"


def _llvm_jump(s: _Site, ph: str) -> str:
    t = s.target(ph)
    return f"{_rel_hex(t - s.slot - 1)} {s.names.annotate(t)}"


def _llvm_func(s: _Site) -> str:
    name = s.names.name(s.target("func")) if s.symbols else None
    return name or _shex(s.insn.imm)  # no name: what objdump prints (`call 0x6a`)


def _helper_kernel(s: _Site) -> str:
    imm = s.insn.imm
    name = f"bpf_{HELPER_NAMES[imm]}" if 0 <= imm < len(HELPER_NAMES) else "unknown"
    return f"{name}#{imm}"


def _imm64(s: _Site) -> int:
    return imm64(s.insns, s.slot)


_COMMON = {
    "rd": lambda s: f"r{s.insn.dst}",
    "rs": lambda s: f"r{s.insn.src}",
    "wd": lambda s: f"w{s.insn.dst}",
    "ws": lambda s: f"w{s.insn.src}",
    "map": _Site.map_name,
}

FORMATTERS: dict[str, dict] = {
    "ubpf": {
        **_COMMON,
        "rd": lambda s: f"%r{s.insn.dst}",
        "rs": lambda s: f"%r{s.insn.src}",
        "wd": lambda s: f"%r{s.insn.dst}",
        "ws": lambda s: f"%r{s.insn.src}",
        "imm": lambda s: str(s.insn.imm),
        "jimm": lambda s: str(s.insn.imm),
        "off": lambda s: f"{s.insn.off:+d}",
        "tgt": lambda s: _ubpf_target(s, "tgt"),
        "tgtl": lambda s: _ubpf_target(s, "tgtl"),
        "func": lambda s: _ubpf_target(s, "func"),
        "helper": lambda s: str(s.insn.imm),
        "kfunc": lambda s: s.kfunc_name() or str(s.insn.imm),
        "imm64": lambda s: f"{_imm64(s):#x}",
        "imm2": lambda s: str(s.insns[s.slot + 1].imm),
    },
    "llvm": {
        **_COMMON,
        "imm": lambda s: _shex(s.insn.imm),
        "jimm": lambda s: _shex(s.insn.imm),
        "off": lambda s: f" - {-s.insn.off:#x}" if s.insn.off < 0 else f" + {s.insn.off:#x}",
        "tgt": lambda s: _llvm_jump(s, "tgt"),
        "tgtl": lambda s: _llvm_jump(s, "tgtl"),
        "func": _llvm_func,
        "helper": lambda s: _shex(s.insn.imm),
        "kfunc": lambda s: s.kfunc_name() or f"kfunc({s.insn.imm})",
        "imm64": lambda s: _shex(_s64(_imm64(s))),
        "imm2": lambda s: _shex(s.insns[s.slot + 1].imm),
    },
    "kernel": {
        **_COMMON,
        "imm": lambda s: str(s.insn.imm),
        "jimm": lambda s: f"{s.insn.imm & _U32:#x}",
        "off": lambda s: f" {s.insn.off:+d}",
        "tgt": lambda s: f"pc{s.insn.off:+d}",
        "tgtl": lambda s: f"pc{s.insn.imm:+d}",
        "func": lambda s: f"{s.insn.imm:+d}",
        "helper": _helper_kernel,
        "kfunc": lambda s: f"{s.kfunc_name() or 'kernel-function'}#{s.insn.imm}",
        "imm64": lambda s: f"{_imm64(s):#x}",
        "imm2": lambda s: str(s.insns[s.slot + 1].imm),
    },
}

# Compiled templates: (form name, style) -> alternating literal / formatter parts.
_COMPILED: dict[tuple[str, str], tuple] = {}


def _compiled(form: isa.Form, style: str) -> tuple:
    key = (form.name, style)
    parts = _COMPILED.get(key)
    if parts is None:
        table = FORMATTERS[style]
        split = _PH.split(getattr(form, style))
        parts = tuple(p if i % 2 == 0 else table[p] for i, p in enumerate(split))
        _COMPILED[key] = parts
    return parts


def _render(form: isa.Form, site: _Site) -> str:
    return "".join(p if isinstance(p, str) else p(site) for p in _compiled(form, site.style))


def _check_style(style: str) -> None:
    if style not in FORMATTERS:
        raise ValueError(f"unknown syntax {style!r} (expected one of {', '.join(STYLES)})")


# --- public API --------------------------------------------------------------------------------
def format_insn(prog_or_insns, slot: int, style: str = "kernel", *, symbols: bool = True) -> str:
    """The text of the instruction at ``slot`` in one style, without index, bytes or opcode.

    ``prog_or_insns`` is a :class:`Program` or a sequence of :class:`Insn` (validated here; a bad
    slot raises ``DecodeError``). Kernel style needs nothing beyond the instruction (and the second
    slot of ld_imm64). In llvm/ubpf style a jump or call target makes it compute the program's
    names, a pass over the whole program: for listings use :func:`disassemble`, which does it once.
    ``symbols`` is as for :func:`disassemble`.
    """
    _check_style(style)
    if isinstance(prog_or_insns, Program):
        prog, insns = prog_or_insns, prog_or_insns.insns
        i = insns[slot]
        form = isa.find_form(i.opcode, i.src, i.off, i.imm)
        if form is None:  # slot is the second half of an ld_imm64 (a Program is validated)
            form = form_of(insns, slot)
    else:
        prog, insns = None, prog_or_insns
        form = form_of(insns, slot)
    return _render(form, _Site(insns, slot, prog, style, symbols))


def disassemble(prog_or_bytes, syntax: str = "llvm", *, symbols: bool = True,
                filename: str | None = None, source: bool | None = None) -> str:
    """A listing of a whole program (a :class:`Program`, or raw bytes decoded strictly).

    ``symbols=False`` ignores the program's function and label names and synthesizes none:
    jumps and calls print as offsets (in llvm style calls then print as objdump does, ``call 0x6``,
    which does not re-assemble as a local call). ``filename`` adds llvm-objdump's preamble
    (``<file>:\\tfile format elf64-bpf`` and ``Disassembly of section .text:``) in llvm style.
    ``source`` interleaves the source lines a clang object's ``.BTF.ext`` records (``; text`` as
    ``llvm-objdump -S``, ``; text @ file:line`` as ``bpftool ... linum``, ``# text`` in ubpf style);
    the default shows them whenever the program carries line info.
    """
    _check_style(syntax)
    prog = prog_or_bytes if isinstance(prog_or_bytes, Program) else Program.from_bytes(prog_or_bytes)
    decoded = prog.instructions()
    names = None if syntax == "kernel" else _Names(prog.insns, decoded, prog, syntax, symbols)
    sites = ((slot, form, _Site(prog.insns, slot, prog, syntax, symbols, names, decoded))
             for slot, form, _ in decoded)
    lister = _LISTERS[syntax](prog, sites, names, filename)
    if source is None:
        source = bool(getattr(prog, "line_info", None))
    if not source or not prog.lines:
        return "".join(chunk for _, chunk in lister)
    return "".join(_with_source(prog, lister, syntax))


_COMMENT = {"llvm": "; {text}", "kernel": "; {text}{where}", "ubpf": "# {text}"}


def _with_source(prog: Program, lister, syntax: str):
    """Insert a comment line with the source text before each instruction where it changes."""
    where = {slot: f" @ {li.file.rsplit('/', 1)[-1]}:{li.line}"
             for slot, li in (getattr(prog, "line_info", None) or ())}
    last = None
    for slot, chunk in lister:
        text = prog.lines.get(slot) if slot is not None else None
        if text is not None and text.strip() and text != last:
            last = text
            comment = _COMMENT[syntax].format(text=text.strip(), where=where.get(slot, "")) + "\n"
            # symbol headers and labels stay above the comment, the instruction below it
            lines = chunk.splitlines(keepends=True)
            chunk = "".join(lines[:-1]) + comment + lines[-1]
        yield chunk


def _list_llvm(prog: Program, sites, names: _Names, filename: str | None):
    if filename is not None:
        yield None, f"\n{filename}:\tfile format elf64-bpf\n\nDisassembly of section .text:\n\n"
    yield from _map_directives(prog)  # not objdump's, but needed to read map[NAME] back
    for slot, form, site in sites:
        head = ""
        if names.at.get(slot):
            sep = "\n" if slot else ""  # objdump separates symbol blocks with a blank line
            head = f"{sep}{slot * 8:016x} <{names.at[slot][0]}>:\n"
        raw = b"".join(i.encode() for i in prog.insns[slot:slot + form.slots])
        yield slot, f"{head}{slot:8d}:\t{' '.join(f'{b:02x}' for b in raw)}\t{_render(form, site)}\n"


def _map_directives(prog: Program):
    """``.map`` lines for the maps the program refers to by index, so listings re-assemble."""
    for m in prog.maps:
        extra = "".join(f" {k}={getattr(m, k)}" for k in ("flags", "map_extra") if getattr(m, k))
        if getattr(m, "spin_lock_off", -1) >= 0:
            extra += f" lock={m.spin_lock_off}"
        yield None, (f".map {m.name} type={m.type} key={m.key_size} value={m.value_size} "
                     f"max_entries={m.max_entries}{extra}\n")


def _list_ubpf(prog: Program, sites, names: _Names, filename: str | None):
    yield from _map_directives(prog)
    for slot, form, site in sites:
        labels = "".join(f"{name}:\n" for name in names.at.get(slot, ()))
        yield slot, labels + _render(form, site) + "\n"
    yield None, "".join(f"{name}:\n" for name in names.at.get(len(prog.insns), ()))


def _list_kernel(prog: Program, sites, names, filename: str | None):
    for slot, form, site in sites:
        yield slot, f"{slot:4d}: ({form.opcode:02x}) {_render(form, site)}\n"


_LISTERS = {"llvm": _list_llvm, "ubpf": _list_ubpf, "kernel": _list_kernel}

__all__ = ["disassemble", "format_insn", "STYLES", "FORMATTERS"]
