"""Fuzzing pybpf with its own invariants (``pybpf fuzz TARGET --seconds N``).

Targets, each a generator of inputs from a seed and a check of one input:

* ``asm``: assembler text -> ``pybpf.assemble``: three cases in four are a valid program's
  listing in either dialect, half of them mutated a little (:mod:`pybpf.fuzz_programs`), the rest
  mutated sample lines and token soup; what assembles must read back the same from its own
  listing (in one dialect per program, chosen by its bytes, and under syntax=auto), and an
  unmutated listing must assemble;
* ``decode``: bytes -> ``Program.from_bytes``: three cases in four are a valid program's bytes,
  half of them with fields changed, the rest random bytes or real opcodes with random fields;
  what decodes must encode to the same bytes and read back from its listings;
* ``elf``: sample objects with section-header, symbol, relocation, BTF, .BTF.ext, instruction
  or section-name fields changed (:mod:`pybpf.fuzz_elf`), flipped bytes, truncated files -> the
  ELF loader: parse, link every program (the first must read back from its listings), create
  the maps in a VM;
* ``engines``: half the cases are programs for the full verifier with map lookups and updates,
  ctx fields and packet reads (sometimes mutated): what it accepts runs on the interpreter and
  the JIT, which must give the same r0, packet or memory and map contents, and the interpreter
  must find no out-of-region access; the other half are random and mutated scalar programs
  under the structural checks only, on the interpreter and, when every memory access is a
  constant stack offset (safe without the full verifier), the JIT, with the same comparison;
* ``helpers``: programs calling helpers from the prototype table (verifier/protos.py: helpers
  added there are fuzzed too) with the argument kinds they name or hostile ones (stack pointers
  past the frame, the ctx, NULL, garbage): accepted ones run on both engines as above; every
  one also runs on the interpreter under the structural checks only, where a helper's checked
  pointers may only raise BPFError;
* ``maps``: hash, array and LRU map operations from four Python threads at once; the map must
  end up holding exactly what the threads' own records say, and a fifth thread, looking
  elements up inside read sections as a run does, must never see one change under it.

Invariants: only ``BPFError`` subclasses escape the library; no signal and no hang past the
per-case budget (each case runs in a worker subprocess with a limit of CASE_BUDGET seconds of
CPU time, and six times that of wall-clock time; the worker's start and a warm-up case are
outside it; a worker that dies or hangs fails that case and is replaced; a failing case is run
again alone in a fresh worker, and ``--isolate`` gives every case a fresh one); engines agree;
no mapping is writable and executable. The runner prints a progress line, then cases run, cases per second, failures and their distinct messages; each failing input is saved
(``--save DIR``) as ``TARGET-<hash>.json`` for tests/fuzz/test_fuzz.py to replay as a
regression test.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import BPFError

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("asm", "decode", "elf", "engines", "maps", "helpers")
CASE_BUDGET = 10.0          # CPU seconds per case before the worker counts as hung


# -- generators: seed -> JSON-able input --------------------------------------------------------

_ASM_LINES = ("r0 = 0", "r1 = r10", "r1 += -8", "*(u64 *)(r10 - 8) = r1", "r0 = *(u64 *)(r1 + 0)",
              "if r0 > 5 goto +1", "exit", "call 1", "r2 = 0x7fffffff ll", "lock *(u64 *)(r10 - 8) += r1",
              "mov %r0, 1", "add %r0, %r1", "ldxdw %r0, [%r1+8]", "ja +0", "l: r0 += 1", "goto l",
              "r0 = be16 r0", "w0 = w1", "r0 = addr_space_cast(r1, 0x0, 0x1)", ".map m type=hash",
              "r1 = map[m] ll", "callx r1", "may_goto +1", "r0 s>>= 63", "w1 /= 0")
_TOKENS = ("r", "w", "0", "1", "-", "+", "=", "*", "(", ")", "u64", "u8", "goto", "if", ">",
           "exit", "call", "ll", "lock", "%", "[", "]", ",", ":", "l", "0x", "ffffffff", " ",
           "\n", "#", ";", "\t", "é", "\x00", "s>", "<<=", "be", "le", "bswap")


def gen_asm(rng: random.Random) -> dict:
    """Three cases in four: a valid program's listing, sometimes mutated a little
    (:mod:`pybpf.fuzz_programs`); the fourth: sample lines and token soup."""
    if rng.random() < 0.75:
        from .fuzz_programs import asm_case
        return asm_case(rng)
    lines = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.6:
            line = rng.choice(_ASM_LINES)
            if rng.random() < 0.3:      # mutate a character
                i = rng.randrange(len(line))
                line = line[:i] + rng.choice(_TOKENS) + line[i + 1:]
        else:
            line = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 10)))
        lines.append(line)
    return {"text": "\n".join(lines), "syntax": rng.choice(("auto", "llvm", "ubpf"))}


def gen_decode(rng: random.Random) -> dict:
    """Three cases in four: a valid program's bytes, sometimes with fields changed
    (:mod:`pybpf.fuzz_programs`); the fourth: random bytes or real opcodes with random fields."""
    from . import isa

    if rng.random() < 0.75:
        from .fuzz_programs import decode_case
        return decode_case(rng)
    if rng.random() < 0.3:
        data = rng.randbytes(rng.randint(0, 96))
    else:
        opcodes = sorted(isa.FORMS_BY_OPCODE)
        data = b""
        for _ in range(rng.randint(1, 12)):
            regs = rng.choice((0, rng.randrange(256)))
            off = rng.choice((0, 1, -1, rng.randrange(-32768, 32768)))
            imm = rng.choice((0, 1, -1, rng.randrange(-(1 << 31), 1 << 31)))
            data += bytes([rng.choice(opcodes), regs]) + (off & 0xFFFF).to_bytes(2, "little") \
                + (imm & 0xFFFFFFFF).to_bytes(4, "little")
    return {"hex": data.hex()}


def _sample_objects() -> list[Path]:
    dirs = [ROOT / "tests" / "data" / "elf", ROOT / "samples" / "c"]
    return sorted(p for d in dirs if d.is_dir() for p in d.glob("*.o"))


def gen_elf(rng: random.Random) -> dict:
    """Three cases in four: one to three fields of a sample object's section headers, symbols,
    relocations, BTF, .BTF.ext, instructions or section names changed (:mod:`pybpf.fuzz_elf`);
    the fourth: flipped bytes or a truncated file."""
    objs = _sample_objects()
    if not objs:
        return {"hex": rng.randbytes(64).hex(), "base": ""}
    if rng.random() < 0.75:
        from .fuzz_elf import elf_case
        return elf_case(rng, objs)
    base = rng.choice(objs)
    data = bytearray(base.read_bytes())
    r = rng.random()
    if r < 0.3:
        data = data[:rng.randrange(len(data))]                  # truncated
    else:
        for _ in range(rng.randint(1, 8)):                     # flipped bytes
            i = rng.randrange(len(data))
            data[i] = rng.choice((0, 0xFF, rng.randrange(256), data[i] ^ (1 << rng.randrange(8))))
    return {"hex": bytes(data).hex(), "base": base.name}


_SAFE_OFFS = (-8, -16, -24, -32)


def gen_engines(rng: random.Random) -> dict:
    """Half the cases: a program for the full verifier with maps, ctx and packet accesses
    (:func:`_verified_program`), sometimes with one instruction mutated; what the verifier
    accepts runs on both engines. The other half: a program of scalar ALU on r0-r9, stack
    stores and loads at constant offsets from r10 and forward jumps (plus, mutated, anything),
    checked structurally only: the JIT runs it when it is stack-only."""
    if rng.random() < 0.5:
        ptype, text = _verified_program(rng)
        case = {"asm": text, "prog_type": ptype, "data": rng.randbytes(rng.choice((14, 34, 64))).hex(),
                "mem": rng.randbytes(256).hex()}
        if rng.random() < 0.3:
            case["mutate"] = [rng.randrange(1 << 30) for _ in range(3)]
        return case
    from . import isa
    from .insn import encode, make

    alu = [f for f in isa.FORMS if f.kind == "alu"]
    jumps = [f for f in isa.FORMS if f.kind == "jcond"]
    n = rng.randint(2, 24)
    raw: list = []
    for r in range(10):                             # every register initialised
        raw += make("mov64_imm", r, imm=rng.randrange(-100, 100))
    for off in _SAFE_OFFS:                          # and every stack slot read later
        raw += make("stxdw", 10, src=rng.randrange(10), off=off)
    for i in range(n):
        c = rng.random()
        if c < 0.55:
            f = rng.choice(alu)
            kw = {"imm": rng.choice((0, 1, -1, 7, 63, 64, rng.randrange(-(1 << 31), 1 << 31)))}
            if f.fields.get("src") == "reg":
                kw = {"src": rng.randrange(10)}
            try:
                raw += make(f.name, rng.randrange(10), **kw)
            except Exception:               # noqa: BLE001 -- a form that needs other fields
                continue
        elif c < 0.7:
            raw += make("stxdw", 10, src=rng.randrange(10), off=rng.choice(_SAFE_OFFS))
        elif c < 0.85:
            raw += make("ldxdw", rng.randrange(10), src=10, off=rng.choice(_SAFE_OFFS))
        else:
            f = rng.choice(jumps)
            try:
                raw += make(f.name, rng.randrange(10), imm=rng.randrange(-5, 5),
                            off=rng.randint(0, 2), src=rng.randrange(10))
            except Exception:               # noqa: BLE001
                continue
    raw += make("exit")
    data = bytearray(encode(raw))
    if rng.random() < 0.3:                          # mutated: any field of any slot
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
    return {"hex": bytes(data).hex(), "mem": rng.randbytes(16).hex()}


# Programs for the full verifier, so that what it accepts runs under the JIT too: map lookups
# (NULL-checked or not) and value accesses near the value's edges, ctx field reads (right and
# wrong offsets), packet reads behind a data_end check (sometimes off by a few bytes), helper
# calls that change maps, stack spills, ALU. Per type: (ctx fields, data/data_end offsets).
_VTYPES = {
    "xdp": ([(0, 4), (4, 4), (12, 4), (16, 4), (8, 4), (2, 4)], (0, 4)),
    "sched_cls": ([(0, 4), (8, 4), (16, 4), (32, 4), (48, 8), (76, 4), (140, 4), (3, 4)],
                  (76, 80)),
    "socket_filter": ([(0, 4), (4, 4), (8, 4), (16, 4), (48, 4), (52, 4), (76, 4), (7, 2)],
                      None),
    "mem": ([(0, 8), (8, 4), (16, 8), (32, 2), (60, 4), (64, 8), (250, 8)], None),
}
_VMAPS = (".map arr type=array key=4 value=16 max_entries=4\n"
          ".map h type=hash key=4 value=16 max_entries=8\n")
_SIZES = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
_VALU = ("+=", "-=", "*=", "&=", "|=", "^=", "<<=", ">>=", "s>>=", "/=", "%=")


def _o(off: int) -> str:
    return f"+ {off}" if off >= 0 else f"- {-off}"


def _verified_program(rng: random.Random) -> tuple[str, str]:
    from .helper_names import HELPER_IDS
    ptype = rng.choice(tuple(_VTYPES))
    fields, pkt = _VTYPES[ptype]
    out = ["r6 = r1", f"r7 = {rng.randrange(-50, 50)}", f"r8 = {rng.randrange(1, 50)}"]
    label = 0

    def skip():
        nonlocal label
        label += 1
        return f"l{label}"

    for _ in range(rng.randint(2, 8)):
        c = rng.random()
        if c < 0.3:                         # a map lookup, then an access to the value
            m = rng.choice(("arr", "h"))
            key = rng.choice((0, 1, 3, 4, 9))
            size = rng.choice((1, 2, 4, 8))
            off = rng.choice((0, 8, 16 - size, 16, -1, 4, 12 + rng.randrange(5)))
            end = skip()
            out += [f"*(u32 *)(r10 - 4) = {key}", f"r1 = map[{m}] ll", "r2 = r10", "r2 += -4",
                    f"call {HELPER_IDS['map_lookup_elem']}"]
            if rng.random() < 0.9:
                out.append(f"if r0 == 0 goto {end}")
            what = rng.random()
            if what < 0.4:
                out += [f"r1 = *({_SIZES[size]} *)(r0 {_o(off)})", "r7 += r1"]
            elif what < 0.8:
                out.append(f"*({_SIZES[size]} *)(r0 {_o(off)}) = r7")
            else:
                out.append(f"lock *({_SIZES[max(size, 4)]} *)(r0 {_o(off - off % 4)}) += r8")
            out.append(f"{end}:")
        elif c < 0.45:                      # a map update from the stack
            m = rng.choice(("arr", "h"))
            out += [f"*(u32 *)(r10 - 4) = {rng.choice((0, 1, 2, 5))}",
                    "*(u64 *)(r10 - 24) = r7", "*(u64 *)(r10 - 16) = r8",
                    f"r1 = map[{m}] ll", "r2 = r10", "r2 += -4", "r3 = r10", "r3 += -24",
                    f"r4 = {rng.choice((0, 0, 1, 2))}", f"call {HELPER_IDS['map_update_elem']}",
                    "r7 += r0"]
        elif c < 0.6:                       # a ctx field
            off, size = rng.choice(fields)
            out += [f"r1 = *({_SIZES[size]} *)(r6 + {off})", "r8 ^= r1"]
        elif c < 0.75 and pkt is not None:  # a packet read behind a bounds check
            size = rng.choice((1, 2, 4, 8))
            off = rng.randrange(0, 40)
            need = off + size + rng.choice((0, 0, 0, -1, -4))
            end = skip()
            out += [f"r2 = *(u32 *)(r6 + {pkt[0]})", f"r3 = *(u32 *)(r6 + {pkt[1]})",
                    "r4 = r2", f"r4 += {need}", f"if r4 > r3 goto {end}",
                    f"r1 = *({_SIZES[size]} *)(r2 + {off})", "r7 += r1",
                    f"{end}:"]
        elif c < 0.9:                       # ALU, a conditional jump over it
            op = rng.choice(_VALU)
            src = rng.choice(("r7", "r8", str(rng.randrange(-9, 64))))
            end = skip()
            out += [f"if r8 {rng.choice(('>', '<', '==', '!=', 's>'))} "
                    f"{rng.randrange(-5, 50)} goto {end}", f"r7 {op} {src}", f"{end}:"]
        else:                               # a spill and fill
            off = rng.choice((8, 16, 32, 64, 512))
            out += [f"*(u64 *)(r10 - {off}) = r7", f"r8 = *(u64 *)(r10 - {off})"]
    out += ["r0 = r7", "r0 ^= r8", "exit"]
    return ptype, _VMAPS + "\n".join(out)


_HMAPS = (".map arr type=array key=4 value=16 max_entries=4\n"
          ".map h type=hash key=4 value=16 max_entries=8\n"
          ".map q type=queue key=0 value=16 max_entries=4\n"
          ".map rb type=ringbuf key=0 value=0 max_entries=4096\n"
          ".map pa type=prog_array key=4 value=4 max_entries=2\n")
_VARYING = ("prandom", "ktime", "jiffies", "smp_processor", "pid_tgid", "uid_gid", "comm",
            "numa", "cgroup", "task")


def _helper_arg(rng: random.Random, kind: str, reg: int) -> list[str]:
    """Instructions setting ``r<reg>`` for an argument of ``kind`` (a prototype's arg kind):
    mostly what the kind asks for, sometimes something else (the verifier must refuse it, or
    the interpreter, checking every pointer, must)."""
    r = f"r{reg}"
    hostile = rng.random() < 0.2
    if "MAP_PTR" in kind and not hostile:
        return [f"{r} = map[{rng.choice(('arr', 'h', 'q', 'rb', 'pa'))}] ll"]
    if "SIZE" in kind and not hostile:
        return [f"{r} = {rng.choice((0, 1, 4, 8, 16, 32, 64, 4096, -1))}"]
    if "FUNC" in kind and not hostile:
        return [f"{r} = func(cb) ll"]
    if "CTX" in kind and not hostile:
        return [f"{r} = r6"]
    if kind in ("ARG_ANYTHING", "ARG_DONTCARE") and not hostile:
        return [f"{r} = {rng.choice((0, 1, 2, 7, 64, -1, 0x7fffffff))}"]
    c = rng.random()
    if c < 0.55:                            # a stack pointer (the common memory argument)
        return [f"{r} = r10", f"{r} += -{rng.choice((4, 8, 16, 32, 64, 128, 512, 513))}"]
    if c < 0.7:
        return [f"{r} = r6"]                # the ctx
    if c < 0.8:
        return [f"{r} = r9"]                # a map value, or NULL
    if c < 0.9:                             # garbage
        return [f"{r} = {rng.choice((0, 1, 4096, -8))}"]
    return [f"{r} = r10", f"{r} += {rng.choice((0, 8, 4096))}"]


def gen_helpers(rng: random.Random) -> dict:
    """A program calling one to three helpers from the prototype table (verifier/protos.py, so
    helpers added there are fuzzed too) with arguments of the kinds their prototypes name or,
    sometimes, not."""
    from .verifier.protos import AWAITING_IMPLEMENTATION, HELPERS
    protos = sorted((p for p in HELPERS.values() if p.id not in AWAITING_IMPLEMENTATION),
                    key=lambda p: p.id)
    ptype = rng.choice(("mem", "xdp", "sched_cls", "socket_filter", "tracepoint"))
    out = ["r6 = r1"]
    out += [f"*(u64 *)(r10 - {8 * i}) = {rng.randrange(-3, 300)}" for i in range(1, 17)]
    out += ["*(u32 *)(r10 - 4) = 1", "r1 = map[arr] ll", "r2 = r10", "r2 += -4",
            "call 1", "r9 = r0"]
    for _ in range(rng.randint(1, 3)):
        p = rng.choice(protos)
        for i, kind in enumerate(p.args[:5], 1):
            out += _helper_arg(rng, kind, i)
        out += [f"call {p.id}", f"r7 = r0"]
    out += ["r0 = 0", "exit"]
    if any("func(cb)" in line for line in out):
        out += ["cb:", "r0 = 0", "exit"]
    return {"asm": _HMAPS + "\n".join(out), "prog_type": ptype,
            "data": rng.randbytes(rng.choice((14, 64))).hex(), "mem": rng.randbytes(256).hex()}


def check_helpers(case: dict):
    """Under the full verifier: what it accepts runs on both engines (as the engines target's
    verified programs). Whatever it says, the interpreter also runs the program under the
    structural checks only: every pointer a helper gets is checked at run time, so it may only
    raise BPFError."""
    from .asm import assemble
    from .vm import VM
    prog = assemble(case["asm"])
    out = check_verified(case, compare=not any(
        v in p.name for _, f, i in prog.instructions() if f.kind == "call" and f.op == "helper"
        for p in [_helper_proto(i.imm)] if p is not None for v in _VARYING))
    vm = VM(seed=1)
    try:
        lp = vm.load(prog, prog_type=case["prog_type"], engine="interp", verify="structural",
                     insn_limit=100_000)
        if case["prog_type"] == "mem":
            lp.run(mem=bytearray(bytes.fromhex(case["mem"])))
        else:
            lp.run(data=bytes.fromhex(case["data"]))
        return out + "; unverified interp ran"
    except BPFError as e:
        return out + f"; unverified interp: {type(e).__name__}"
    finally:
        vm.close()


def _helper_proto(hid: int):
    from .verifier.protos import HELPERS
    return HELPERS.get(hid)


def gen_maps(rng: random.Random) -> dict:
    return {"type": rng.choice(("hash", "lru_hash", "array")), "seed": rng.randrange(1 << 30),
            "ops": rng.randint(50, 300), "max_entries": rng.choice((4, 16, 64))}


GENERATORS = {"asm": gen_asm, "decode": gen_decode, "elf": gen_elf, "engines": gen_engines,
              "maps": gen_maps, "helpers": gen_helpers}


# -- checks: input -> result (raise AssertionError for a broken invariant) ------------------------

def _decls(prog) -> list[tuple]:
    """What a listing's ``.map`` lines say about a program's maps (an ELF program's maps carry
    more, which no listing shows)."""
    return [(m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.map_extra)
            for m in prog.maps]


def _round_trip(prog, what: str) -> None:
    """A listing of ``prog`` assembles back to the same bytes and maps, in its dialect and when
    the assembler detects the dialect. One dialect per program (each assembly costs more than
    the rest of a case), chosen by its bytes so that both are covered and a case replays the
    same; the kernel style is printed too (it is not read back)."""
    from .asm import assemble
    from .disasm import disassemble
    raw = prog.to_bytes()
    syntax = ("ubpf", "llvm")[hashlib.sha1(raw).digest()[0] & 1]
    if syntax == "llvm" and _unnamed_call(prog):
        syntax = "ubpf"     # llvm prints objdump's raw imm, read back as a helper (syntax.md)
    text = disassemble(prog, syntax=syntax)
    try:
        again = assemble(text, syntax=syntax)
    except BPFError as e:
        raise AssertionError(f"{what}: its {syntax} listing does not assemble: "
                             f"{str(e).splitlines()[0][:150]}") from None
    assert again.to_bytes() == raw, f"{what}: its {syntax} listing assembles to other bytes"
    assert _decls(again) == _decls(prog), f"{what}: its {syntax} listing declares other maps"
    try:
        auto = assemble(text)
    except BPFError as e:
        raise AssertionError(f"{what}: its {syntax} listing is refused under syntax=auto: "
                             f"{str(e).splitlines()[0][:150]}") from None
    assert auto.to_bytes() == raw, \
        f"{what}: its {syntax} listing assembles to other bytes under syntax=auto"
    disassemble(prog, syntax="kernel")


_ASM_NAME = re.compile(r"(?![rw]\d+$)[A-Za-z_.][A-Za-z0-9_.]*$")


def _readable_names(prog) -> bool:
    """Whether every function, label and map name of an ELF program is one a listing can carry:
    an object's names are any bytes of its string tables, and a register-shaped name (a C map
    called ``r1``) reads as the register (docs/syntax.md)."""
    names = [*prog.functions.values(), *prog.labels.values(), *(m.name for m in prog.maps)]
    return all(_ASM_NAME.match(n) for n in names)


def _unnamed_call(prog) -> bool:
    """A BPF-to-BPF call to a slot where no instruction of the program starts: the llvm dialect
    has no spelling for it (docs/syntax.md)."""
    starts = {slot for slot, _, _ in prog.instructions()}
    return any(f.name == "call_local" and slot + 1 + i.imm not in starts
               for slot, f, i in prog.instructions())


def check_asm(case: dict):
    from .asm import assemble
    try:
        prog = assemble(case["text"], syntax=case["syntax"])
    except BPFError as e:
        # an unmutated case is a valid program's listing, respelled only in ways the assembler
        # reads (docs/syntax.md): refusing it is a round-trip failure
        assert case.get("mutations", 1), f"a valid program's listing is refused: " \
            f"{str(e).splitlines()[0][:150]}"
        return "refused"
    _round_trip(prog, "assembled text")
    return "assembled"


def check_decode(case: dict):
    from .program import Program
    raw = bytes.fromhex(case["hex"])
    try:
        prog = Program.from_bytes(raw)
    except BPFError:
        return "refused"
    assert prog.to_bytes() == raw, "decoded bytes encode to other bytes"
    _round_trip(prog, "decoded bytes")
    return "decoded"


def check_elf(case: dict):
    """Parse; every program that links decodes to the same bytes, and the first reads back from
    its listings (with its source lines) in both dialects; the maps are created in a VM (with a
    small memory limit) and the globals written, as ``load_elf`` does."""
    from .disasm import disassemble
    from .elf import parse_object
    from .elf.load import bind
    from .program import Program
    from .vm import VM
    data = bytes.fromhex(case["hex"])
    try:
        obj = parse_object(data, "fuzz")
    except BPFError:
        return "refused"
    linked = 0
    for name in list(obj.programs)[:8]:
        p = obj.program(name)
        if p.load_error is not None:
            continue
        linked += 1
        raw = p.to_bytes()
        assert Program.from_bytes(raw).to_bytes() == raw, f"program {name}: bytes do not decode back"
        if linked > 1:
            continue        # the round trip costs ~4 assemblies: the first linked program only
        if _readable_names(p):
            _round_trip(p, f"program {name}")
        else:
            for syntax in ("llvm", "ubpf", "kernel"):
                disassemble(p, syntax=syntax)
    vm = VM(max_map_bytes=64 << 20)
    try:
        bind(obj, vm)
        bound = "maps created"
    except BPFError:
        bound = "maps refused"
    finally:
        vm.close()
    return f"parsed, {'a program linked' if linked else 'no program linked'}, {bound}"


def _stack_only(prog) -> bool:
    """Every memory access is r10 + a constant offset inside the frame, r10 is never written,
    no calls: such a program cannot touch other memory, so its JIT code is safe to run."""
    for _, f, i in prog.instructions():
        if f.kind in ("call", "callx", "ldabs", "atomic", "lddw", "cast"):
            return False
        if f.kind in ("ldx", "st", "stx"):
            base = i.src if f.kind == "ldx" else i.dst
            if base != 10 or not -512 <= i.off <= -(f.size or 8):
                return False
        if getattr(f, "fields", None) and "dst" in f.fields and i.dst == 10 and \
                f.kind not in ("st", "stx", "jcond", "ja"):
            return False
    return True


def _mutated(prog, seeds):
    """``prog`` with one field of one instruction changed (register, offset or immediate)."""
    from .insn import split_slots
    from .program import Program
    raw = bytearray(prog.to_bytes())
    rng = random.Random(seeds[0])
    n = len(raw) // 8
    i = 8 * rng.randrange(n)
    what = seeds[1] % 3
    if what == 0:
        raw[i + 1] = rng.randrange(256)
    elif what == 1:
        raw[i + 2:i + 4] = (rng.choice((-8, -4, -1, 1, 4, 8, 512, -512)) +
                            int.from_bytes(raw[i + 2:i + 4], "little", signed=True)
                            & 0xFFFF).to_bytes(2, "little")
    else:
        raw[i + 4:i + 8] = (seeds[2] & 0xFFFFFFFF).to_bytes(4, "little")
    return Program(split_slots(bytes(raw)), functions=dict(prog.functions),
                   labels=dict(prog.labels), maps=list(prog.maps), name=prog.name)


def _run_verified(case: dict, engine: str, prog):
    """One engine's run of a program the full verifier accepted: r0, the packet or memory
    after the run, and every map's contents."""
    from .vm import VM
    vm = VM(seed=1)
    try:
        lp = vm.load(prog, prog_type=case["prog_type"], engine=engine, tier="quick")
    except BPFError as e:
        return ("load error", type(e).__name__, str(e).splitlines()[0][:120])
    try:
        if case["prog_type"] == "mem":
            mem = bytearray(bytes.fromhex(case["mem"]))
            r0 = lp.run(mem=mem)
            after = bytes(mem)
        else:
            r0 = lp.run(data=bytes.fromhex(case["data"]))
            after = bytes(lp.last_data or b"")
    except BPFError as e:
        return ("run error", type(e).__name__)
    maps = {name: _contents(m) for name, m in lp.maps.items()}
    lp.close()
    vm.close()
    return ("r0", r0, after, maps)


class _PoisonedStack:
    """While active, every interpreter run starts on a stack filled with 0xA5 instead of zeroes,
    at an address no unpoisoned run had. A program whose results change with it reads stack it
    never wrote (root may: the kernel's allow_uninit_stack), which the JIT leaves as whatever was
    on the thread's stack, or depends on the stack's address (root may pass a pointer where a
    helper takes a number, e.g. bpf_l3_csum_replace's ``to``), which differs between the
    engines: its results are not compared between the engines."""

    # An odd multiple of 64 under 64 KiB: the poisoned stack's low 16 bits differ from those of a
    # stack allocated where it is (a freed run's stack is often reused at the same address, and
    # a 16-bit checksum helper sees only those bits).
    SHIFT = 0x1240

    def __enter__(self):
        from .runtime import interp
        from .runtime.memory import PROC, Buffer
        self.cls, self.orig = interp.Interpreter, interp.Interpreter.take_stack
        size, shift = interp.STACK_SIZE, self.SHIFT

        def take_stack(itp):
            # a fresh buffer, used from SHIFT bytes in: its address is never that of the
            # stack an unpoisoned run of the same program just freed
            stack = Buffer(size + shift, align=64)
            stack.address += shift
            stack.size = size
            PROC[stack.address:stack.address + size] = b"\xa5" * size
            stack.deep = True           # zeroed whole when it is reused
            return stack
        self.cls.take_stack = take_stack
        return self

    def __exit__(self, *exc):
        self.cls.take_stack = self.orig


def _contents(m):
    """A map's keys and values; a queue's values; what is waiting in a ring buffer."""
    if m.type in ("queue", "stack"):
        return [bytes(v) for v in m._raw_values()]
    if m.type == "ringbuf":
        try:
            return [bytes(r) for r in m.consume()]
        except BPFError as e:
            return f"consume: {type(e).__name__}"
    if m.type == "prog_array":
        return None
    return sorted((k, m.sys_lookup(k)) for k in m._raw_keys())


def check_verified(case: dict, compare: bool = True):
    from .asm import assemble
    from .vm import VM
    prog = assemble(case["asm"])
    if case.get("mutate"):
        try:
            prog = _mutated(prog, case["mutate"])
        except BPFError:
            return "refused at decode"
    vm = VM(seed=1)
    try:
        vm.verify(prog, prog_type=case["prog_type"], full=True)
    except BPFError:
        return "rejected by the verifier"
    finally:
        vm.close()
    a = _run_verified(case, "interp", prog)
    if a[0] == "run error" and a[1] == "MemoryAccessError":
        raise AssertionError(f"the verifier accepted an out-of-region access: {a}")
    b = _run_verified(case, "jit", prog)
    from .jit.execmem import wx_mappings
    assert not wx_mappings(), f"a writable and executable mapping: {wx_mappings()[0]}"
    assert a[0] != "load error" and b[0] != "load error", f"accepted, then not loaded: {a} {b}"
    if not compare:
        return "verified, ran interp+jit; results vary by run: not compared"
    with _PoisonedStack():
        if _run_verified(case, "interp", prog) != a:
            return "verified, ran interp+jit; reads unwritten stack or its address: not compared"
    if a[0] == b[0] == "r0":
        assert a == b, f"engines differ on an accepted program: interp {a[1]:#x} jit {b[1]:#x}" \
            if a[1] != b[1] else f"engines differ in memory or maps: interp {a[2:]} jit {b[2:]}"
    return "verified, ran interp+jit"


def check_engines(case: dict):
    from .program import Program
    from .vm import VM
    if "asm" in case:
        return check_verified(case)
    try:
        prog = Program.from_bytes(bytes.fromhex(case["hex"]))
    except BPFError:
        return "refused at decode"
    mem = bytes.fromhex(case["mem"])
    vm = VM(seed=1)
    # random programs compare the engines' semantics: structural checks only (the full
    # verifier refuses nearly all of them; unverified JIT code runs with its budget)
    try:
        vm.verify(prog, full=False)
    except BPFError:
        return "rejected"
    results = {}
    engines = ["interp"] + (["jit"] if _stack_only(prog) else [])
    for engine in engines:
        try:
            lp = vm.load(prog, engine=engine, insn_limit=100_000, verify="structural")
            results[engine] = ("r0", lp.run(mem=mem), lp.last_mem)
        except BPFError as e:
            results[engine] = ("error", type(e).__name__)
    if "jit" in results:
        from .jit.execmem import wx_mappings
        assert not wx_mappings(), f"a writable and executable mapping: {wx_mappings()[0]}"
    if len(results) == 2:
        a, b = results["interp"], results["jit"]
        with _PoisonedStack():
            try:
                lp = vm.load(prog, engine="interp", insn_limit=100_000, verify="structural")
                poisoned = ("r0", lp.run(mem=mem), lp.last_mem)
            except BPFError as e:
                poisoned = ("error", type(e).__name__)
        if poisoned != a:
            return "ran interp+jit; reads unwritten stack or its address: not compared"
        # the JIT stops loops by budget counted per iteration, the interpreter per
        # instruction: a limit error on either side is not a disagreement
        if a[0] == b[0] == "r0":
            assert a == b, f"engines differ: interp {a[:2]} jit {b[:2]}"
    return "ran " + "+".join(engines)


def check_maps(case: dict):
    from .runtime.maps import create_map
    kind, n = case["type"], case["max_entries"]
    m = create_map(kind, 4, 8, n)
    owned: list[dict] = [{} for _ in range(4)]
    errors: list[str] = []

    def worker(t: int):
        rng = random.Random(case["seed"] * 10 + t)
        mine = owned[t]
        try:
            for _ in range(case["ops"]):
                k = t * 1000 + rng.randrange(8) if kind != "array" else rng.randrange(n)
                kb, v = k.to_bytes(4, "little"), rng.randrange(1 << 60).to_bytes(8, "little")
                op = rng.random()
                try:
                    if op < 0.5:
                        m.sys_update(kb, v)
                        mine[k] = v
                    elif op < 0.8 and kind != "array":
                        m.sys_delete(kb)
                        mine.pop(k, None)
                    else:
                        m.sys_lookup(kb)
                except BPFError:
                    if kind != "array":
                        mine.pop(k, None) if op >= 0.5 else None
        except Exception as e:      # noqa: BLE001 -- reported as the failure
            errors.append(f"{type(e).__name__}: {e}")

    done = threading.Event()
    changed: list[str] = []

    def reader():
        # a program's view: inside a run (a read section) the element a lookup returned keeps
        # its value whatever the other threads do (hash updates never write in place, and a
        # freed element is reused only after the run ends)
        from .runtime import grace
        rng = random.Random(case["seed"] * 10 + 9)
        while not done.is_set():
            with grace.reading():
                kb = (rng.randrange(4) * 1000 + rng.randrange(8)).to_bytes(4, "little")
                addr = m.map_lookup_elem(kb)
                if addr:
                    first = ctypes.string_at(addr, 8)
                    for _ in range(rng.randint(1, 20)):
                        time.sleep(0)
                    if ctypes.string_at(addr, 8) != first:
                        changed.append(kb.hex())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    watcher = threading.Thread(target=reader) if kind != "array" else None
    for t in threads + ([watcher] if watcher else []):
        t.start()
    for t in threads:
        t.join()
    done.set()
    if watcher:
        watcher.join()
    assert not errors, errors[0]
    assert not changed, f"an element changed under a read section (key {changed[0]})"
    if kind == "hash":       # an LRU map may evict; an array's slots are shared by threads
        want = {k.to_bytes(4, "little"): v for d in owned for k, v in d.items()}
        got = {k: m.sys_lookup(k) for k in m._raw_keys()}
        assert got == want, f"hash holds {len(got)} keys, the threads' records say {len(want)}"
    assert len(m._raw_keys()) <= n
    return "consistent"


CHECKS = {"asm": check_asm, "decode": check_decode, "elf": check_elf, "engines": check_engines,
          "maps": check_maps, "helpers": check_helpers}


def case_input(target: str, seed: int, index: int) -> dict:
    return GENERATORS[target](random.Random(f"{target}:{seed}:{index}"))


def run_case(target: str, case: dict) -> dict:
    """One case in this process: {"ok": True, "result"} or {"ok": False, "message"}."""
    try:
        return {"ok": True, "result": CHECKS[target](case)}
    except BPFError as e:       # a check may let one escape where anything goes
        return {"ok": True, "result": f"refused: {type(e).__name__}"}
    except AssertionError as e:
        return {"ok": False, "message": f"invariant: {str(e).splitlines()[0][:200]}"}
    except Exception as e:      # noqa: BLE001 -- the invariant: only BPFError escapes
        return {"ok": False, "message": f"escaped {type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:160] if str(e) else ''}"}


# -- the worker (a subprocess) and the runner ---------------------------------------------------

def worker_main(target: str | None = None) -> int:
    """Run one case of ``target`` to import and warm what its cases use, say ``ready``, then read
    JSON cases (one per line) from stdin and answer each with one JSON line."""
    if target in GENERATORS:
        run_case(target, case_input(target, 0, 0))
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        out = run_case(req["target"], req["case"])
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


STARTUP_BUDGET = 120.0      # seconds for a worker to import pybpf and run its warm-up case
WALL_FACTOR = 6             # a case's wall-clock limit is this many times its CPU budget


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class _Worker:
    """A worker subprocess. Its start (Python, pybpf's imports, a warm-up case of its target) is
    outside any case's budget; a case's budget is the CPU time the worker spends on it, so that
    a loaded machine (the fuzzers run under ``nice``) does not turn slow cases into hangs, with
    a wall-clock limit of WALL_FACTOR times the budget for a worker that hangs without
    running (a deadlock)."""

    def __init__(self, target: str | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "pybpf.fuzz", *([target] if target else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.ready = False
        self.last_cpu = 0.0     # CPU seconds the last case took (rates that a loaded machine
                                # does not skew)

    def _read_line(self, cpu_budget: float, wall_budget: float) -> tuple[str | None, str]:
        """The worker's next line, or None and why not ("cpu", "wall")."""
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()),
                                  daemon=True)
        cpu0, start = _cpu_seconds(self.proc.pid), time.monotonic()
        reader.start()
        while True:
            reader.join(0.05)
            if not reader.is_alive():
                return (result[0] if result else ""), ""
            if _cpu_seconds(self.proc.pid) - cpu0 > cpu_budget:
                return None, "cpu"
            if time.monotonic() - start > wall_budget:
                return None, "wall"

    def ask(self, target: str, case: dict, budget: float) -> dict:
        if not self.ready:
            line, why = self._read_line(STARTUP_BUDGET, STARTUP_BUDGET)
            if line is None or not line:
                self.kill()
                return {"ok": False, "message": f"worker did not start within "
                                                f"{STARTUP_BUDGET:g} s" if line is None else
                        f"worker died at start: exit {self.proc.returncode}"}
            self.ready = True
        self.proc.stdin.write(json.dumps({"target": target, "case": case}) + "\n")
        self.proc.stdin.flush()
        cpu0 = _cpu_seconds(self.proc.pid)
        line, why = self._read_line(budget, budget * WALL_FACTOR)
        self.last_cpu = _cpu_seconds(self.proc.pid) - cpu0
        if line is None:
            self.kill()
            return {"ok": False, "message": f"hang: no answer within {budget:g} s of CPU time"
                    if why == "cpu" else
                    f"hang: no answer within {budget * WALL_FACTOR:g} s (using no CPU)"}
        if not line:
            code = self.proc.wait()
            return {"ok": False, "message": f"worker died: signal {-code}" if code < 0 else
                    f"worker died: exit {code}"}
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


def fuzz(target: str, seconds: float, seed: int = 0, save: str | None = None,
         progress=None, max_cases: int | None = None, budget: float = CASE_BUDGET,
         isolate: bool = False) -> dict:
    """Run ``target`` for ``seconds`` (or ``max_cases``); returns the figures.

    Cases run in a worker subprocess with a time limit each; the worker is reused (starting
    Python and pybpf costs ~0.3 s, 100-1000 cases' worth) unless ``isolate`` asks for a fresh one
    per case. A case that fails in a reused worker is run again alone in a fresh one, and its
    message says whether it fails there too (the saved input replays in a fresh worker)."""
    if target not in TARGETS:
        raise ValueError(f"unknown fuzz target {target!r} (one of {', '.join(TARGETS)})")
    worker = _Worker(target)
    start = last = time.monotonic()
    cases, failures, messages, saved, cpu = 0, 0, {}, [], 0.0
    results: dict[str, int] = {}
    try:
        while time.monotonic() - start < seconds and (max_cases is None or cases < max_cases):
            case = case_input(target, seed, cases)
            if not worker.alive() or (isolate and cases):
                worker.close()
                worker = _Worker(target)
            out = worker.ask(target, case, budget)
            cpu += worker.last_cpu
            cases += 1
            if not out["ok"] and not isolate:
                alone = _Worker(target)
                try:
                    again = alone.ask(target, case, budget)
                finally:
                    alone.close()
                out["message"] += (" (fails alone too)" if not again["ok"] else
                                   " (only after earlier cases in the same worker)")
            if out["ok"]:
                key = str(out["result"])
                results[key] = results.get(key, 0) + 1
            else:
                failures += 1
                msg = out["message"]
                messages[msg] = messages.get(msg, 0) + 1
                if not worker.alive():
                    worker = _Worker(target)
                if save:
                    saved.append(save_case(save, target, case, msg))
            now = time.monotonic()
            if progress is not None and now - last >= 1.0:
                last = now
                progress(f"{target}: {cases} cases, {cases / (now - start):.0f}/s, "
                         f"{failures} failures, {len(messages)} distinct")
    finally:
        worker.close()
    elapsed = time.monotonic() - start
    return {"target": target, "seed": seed, "cases": cases, "seconds": round(elapsed, 2),
            "cases_per_second": round(cases / elapsed, 1) if elapsed else 0.0,
            "cpu_seconds": round(cpu, 2),
            "cases_per_cpu_second": round(cases / cpu, 1) if cpu else 0.0,
            "failures": failures, "distinct": messages, "results": results, "saved": saved}


def save_case(directory: str, target: str, case: dict, message: str) -> str:
    text = json.dumps({"target": target, "case": case, "message": message}, sort_keys=True)
    name = f"{target}-{hashlib.sha1(text.encode()).hexdigest()[:12]}.json"
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return str(path)


def format_report(r: dict) -> str:
    lines = [f"{r['target']}: {r['cases']} cases in {r['seconds']} s "
             f"({r['cases_per_second']}/s; {r['cases_per_cpu_second']} per CPU second of the "
             f"workers, {r['cpu_seconds']} s), {r['failures']} failures, "
             f"{len(r['distinct'])} distinct"]
    if r["results"]:
        lines.append("  outcomes: " + ", ".join(f"{k} {v}" for k, v in
                                                 sorted(r["results"].items(), key=lambda kv: -kv[1])))
    for msg, n in sorted(r["distinct"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n:6d}  {msg}")
    for path in r["saved"][:20]:
        lines.append(f"  saved {path}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1] if len(sys.argv) > 1 else None))
