"""Random and mutated BPF programs for checking pybpf's verifier against the kernel's.

Two sources, both seeded and reproducible:

- :func:`random_program`: a program for socket_filter, sched_cls, xdp, tracepoint or syscall
  that exercises what a verifier tracks: ctx field reads (right and wrong offsets and sizes),
  packet pointers checked (or not) against data_end, a map lookup null-checked (or not), map
  value, stack and packet accesses at offsets near the edges, scalar ALU and bounds from forward
  branches, pointer arithmetic, spills and fills, helper calls, an occasional bounded loop.
- with ``--extra``, 40% of a random program's statements come from :meth:`_Gen.extra_stmt`
  (atomics on every pointer kind, ALU on pointers, partial spills, immediate stores, variable
  stack offsets, pointer comparisons, helpers taking memory and sizes, 32-bit bounds of 64-bit
  values, signed division, sign-extending loads); with ``--bounds SHARE`` that share of the
  random programs come from :func:`bounds_program` (scalar bounds only, read through accesses).
- :func:`mutate`: an accepted corpus program (tests/verifier/) with one to three instruction
  edits: a field flipped (register, opcode within its class, JMP<->JMP32, ALU<->ALU64, access
  size), an offset or immediate changed, a conditional jump dropped (a bounds or NULL check
  becomes ``goto +0``) or made unconditional, or an instruction spliced in from elsewhere.

:func:`differential` loads each program into the running kernel (tests/kernel_verifier.py) and
into pybpf (``VM.verify(full=True)``) and tallies the verdicts: kernel rejects / pybpf accepts
(unsound: must be 0), kernel accepts / pybpf rejects (too strict: aim < 5%), and for programs
both reject, how often pybpf's message is the kernel's last log line.

    python tests/verifier_gen.py --count 20000 --seed 1 [--dump DIR] [--show 10]
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "verifier"))

import vt_corpus as corpus  # noqa: E402
import kernel_verifier as kv  # noqa: E402

PROG_TYPES = ("socket_filter", "sched_cls", "xdp", "tracepoint", "syscall")

# (offset, size) of context fields worth reading, per type; the generator also tries wrong ones
CTX_FIELDS = {
    "socket_filter": [(0, 4), (4, 4), (8, 4), (16, 4), (48, 4), (52, 4), (64, 4), (68, 4)],
    "sched_cls": [(0, 4), (8, 4), (12, 4), (32, 4), (48, 8), (72, 4), (140, 4), (152, 8)],
    "xdp": [(12, 4), (16, 4), (0, 4), (4, 4)],
    "tracepoint": [(0, 8), (8, 8), (16, 8), (8, 4), (24, 8)],
    "syscall": [(0, 8), (8, 4), (16, 8), (24, 2), (32, 1)],
}
PACKET = {"sched_cls": (76, 80), "xdp": (0, 4)}       # data, data_end offsets
SIZES = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
ALU_OPS = ["+=", "-=", "*=", "&=", "|=", "^=", "<<=", ">>=", "s>>=", "/=", "%="]
JMP_OPS = ["==", "!=", ">", ">=", "<", "<=", "s>", "s>=", "s<", "s<=", "&"]


def _named_calls(text: str) -> str:
    from pybpf.helper_names import HELPER_IDS
    return re.sub(r"call bpf_(\w+)", lambda m: f"call {HELPER_IDS[m[1]]}", text)


def assemble(text: str):
    import pybpf
    return pybpf.assemble(_named_calls(text), syntax="llvm")


_LABEL_LINE = re.compile(r"^(\w+):$")
_GOTO_LABEL = re.compile(r"goto ([A-Za-z_]\w*)$")
_MAP_STUB = ".map m type=array key=4 value=8 max_entries=1\n"
_NUMBER = re.compile(r"(?<![\w-])(-?)(\d+)\b")
_SENTINEL = 20011                     # fits off (s16) and imm; k-th number: _SENTINEL + 10 * k
_FIT = {"off": (-(1 << 15), (1 << 15) - 1), "imm": (-(1 << 31), (1 << 31) - 1)}
_SHAPES: dict = {}


def _shape(key: str):
    """(instructions, [(index, field, sign)] per number) of a line whose numbers are ``#``:
    assembled once with sentinel numbers, to learn which field each number lands in. None when
    a number does not land in a field as itself (then lines of this shape are assembled whole)."""
    k = iter(range(100))
    text = re.sub(r"(-?)#", lambda m: f"{m[1]}{_SENTINEL + 10 * next(k)}", key)
    insns = assemble(_MAP_STUB + text).insns
    where = []
    for j, m in enumerate(_NUMBER.finditer(text)):
        want = int(m[0])
        hits = [(i, f, 1 if getattr(ins, f) == want else -1) for i, ins in enumerate(insns)
                for f in ("off", "imm") if abs(getattr(ins, f)) == abs(want)]
        if len(hits) != 1 or want != _SENTINEL + 10 * j and -want != _SENTINEL + 10 * j:
            return None
        where.append(hits[0])
    return insns, where


def _one_line(line: str) -> list:
    """The instructions of one generated line (a label target already a number). The Lark
    parse is most of a program's generation time and the generator repeats few line shapes, so
    each shape (the line with its numbers as ``#``) is assembled once and numbers are set in
    the fields they land in."""
    if line.startswith(".map"):
        got = _SHAPES.get(line)
        if got is None:
            got = _SHAPES[line] = assemble(line + "\nexit").maps[0]
        return copy.copy(got)        # a VM binds a map to each declaration object
    key = _NUMBER.sub(lambda m: m[1] + "#", line)
    if key not in _SHAPES:
        _SHAPES[key] = _shape(key)
    shape = _SHAPES[key]
    if shape is not None:
        insns, where = shape
        insns = list(insns)
        for (i, f, sign), m in zip(where, _NUMBER.finditer(line)):
            v = sign * int(m[0])
            lo, hi = _FIT[f]
            if not lo <= v <= hi:
                break
            insns[i] = insns[i]._replace(**{f: v})
        else:
            return insns
    got = _SHAPES.get(line)
    if got is None:
        got = _SHAPES[line] = assemble(_MAP_STUB + line).insns
    return got


def fast_assemble(text: str):
    """:func:`assemble` for the generator's own texts (one map ``m``, labels on lines of their
    own, ``goto label`` last on a line): the same Program, from per-line cached assemblies.
    Any other shape goes to :func:`assemble` (tests/test_verifier_soundness.py checks both
    agree)."""
    import pybpf
    text = _named_calls(text)
    rows = [ln.strip() for ln in text.split("\n")]
    maps, body, labels, pending = [], [], {}, []
    slot = 0
    for ln in rows:                                 # pass 1: slots and labels
        m = _LABEL_LINE.match(ln)
        if m:
            pending.append(m[1])
            continue
        if ln.startswith(".map"):
            if maps or body:
                return assemble(text)
            maps.append(_one_line(ln))
            continue
        if not ln or len(pending) > 1:
            return assemble(text)
        for name in pending:
            labels[slot] = name
        pending = []
        size = len(_one_line(_GOTO_LABEL.sub("goto +0", ln)))
        body.append((slot, ln))
        slot += size
    if pending or len(set(labels.values())) != len(labels):
        return assemble(text)
    where = {name: s for s, name in labels.items()}
    insns, lines = [], {}
    for s, ln in body:                              # pass 2: targets as numbers
        m = _GOTO_LABEL.search(ln)
        line = ln
        if m:
            if m[1] not in where:
                return assemble(text)
            line = ln[:m.start(1)] + f"{where[m[1]] - (s + 1):+d}"
        insns += _one_line(line)
        lines[s] = ln
    return pybpf.Program(insns, functions={0: "prog"}, labels=labels, maps=maps, lines=lines,
                         name="prog")


class _Gen:
    """Builds one random program as assembly text."""

    def __init__(self, rng: random.Random, ptype: str, extra: bool = False):
        self.rng, self.ptype, self.out, self.extra = rng, ptype, [], extra
        self.vsize = rng.choice([8, 16, 32, 48])
        self.checked = False           # r9 null-checked on the main path
        self.nstmt = 0

    def pick_off(self, size: int, limit: int) -> int:
        """An offset near the valid window [0, limit - size], edges included, sometimes past."""
        r = self.rng
        choice = r.random()
        if choice < 0.88:
            return r.randrange(0, max(limit - size, 0) + 1, size if r.random() < 0.8 else 1)
        if choice < 0.96:
            return max(limit - size, 0) + r.choice([0, 1, 4, 8])
        return r.choice([-8, -1, limit, limit + 8, 2 * limit])

    def scalar_reg(self) -> int:
        return self.rng.choice([0, 2, 3, 4, 5])

    def stmt(self, labels_after: list[str]) -> list[str]:
        r, t = self.rng, self.ptype
        a, b = self.scalar_reg(), self.scalar_reg()
        kind = r.choices(
            ["ctx", "alu", "alu32", "bound", "mapacc", "stack", "spill", "pkt", "pktacc",
             "ptradd", "call", "null", "loop", "movsx", "sizedld"],
            [6, 10, 4, 10, 10, 7, 5, 6 if t in PACKET else 0, 8 if t in PACKET else 0,
             6, 3, 2, 1, 2, 3])[0]
        target = r.choice(labels_after)
        if self.extra and r.random() < 0.4:
            return self.extra_stmt(a, b, target)
        if kind == "ctx":
            off, size = r.choice(CTX_FIELDS[t])
            if r.random() < 0.06:
                off, size = off + r.choice([1, 2, 4, -4]), r.choice([1, 2, 4, 8])
            return [f"r{a} = *({SIZES[size]} *)(r6 + {off})"]
        if kind in ("alu", "alu32"):
            op = r.choice(ALU_OPS)
            w = "w" if kind == "alu32" else "r"
            src = f"{w}{b}" if r.random() < 0.3 else str(
                r.choice([0, 1, 3, 7, 8, 15, 31, 48, 63, 255, -1, -8, 1 << 20]))
            if op in ("<<=", ">>=", "s>>=") and not src.startswith(w):
                src = str(r.randrange(0, 64 if w == "r" else 32))
            return [f"{w}{a} {op} {src}"]
        if kind == "movsx":
            bits = r.choice([8, 16, 32])
            return [f"r{a} = (s{bits})r{b}"]
        if kind == "bound":
            op = r.choice(JMP_OPS)
            w = "w" if r.random() < 0.25 else "r"
            rhs = f"{w}{b}" if r.random() < 0.25 else str(
                r.choice([0, 1, 7, 8, 15, 16, self.vsize - 8, self.vsize, 255, -1]))
            return [f"if {w}{a} {op} {rhs} goto {target}"]
        if kind == "mapacc":
            size = r.choice([1, 2, 4, 8])
            base = "r9"
            lines = []
            if r.random() < 0.4:
                lines += [f"r1 = r9", f"r1 += r{a}"]
                base = "r1"
            off = self.pick_off(size, self.vsize)
            if r.random() < 0.5:
                return lines + [f"r{b} = *({SIZES[size]} *)({base} + {off})"]
            return lines + [f"*({SIZES[size]} *)({base} + {off}) = r{b}"]
        if kind == "stack":
            size = r.choice([1, 2, 4, 8])
            off = -(self.pick_off(size, 64) + size)
            mem = f"*({SIZES[size]} *)(r10 - {-off})" if off < 0 else f"*({SIZES[size]} *)(r10 + {off})"
            return [f"r{a} = {mem}"] if r.random() < 0.5 else [f"{mem} = r{b}"]
        if kind == "spill":
            slot = 8 * r.randrange(2, 8)
            src = r.choice(["r6", "r7", "r9", "r10", f"r{a}"]) if t in PACKET else r.choice(
                ["r6", "r9", "r10", f"r{a}"])
            dst = r.choice([7, 8, 9]) if r.random() < 0.3 else 1
            size = r.choice([8, 8, 8, 4])
            lines = [f"*(u64 *)(r10 - {slot}) = {src}", f"r{dst} = *({SIZES[size]} *)(r10 - {slot})"]
            if dst == 1:
                lines.append(f"r{b} = *(u8 *)(r1 + {r.choice([0, 1, 4])})")
            return lines
        if kind == "pkt":
            n = r.choice([1, 2, 4, 8, 14, 20, 34])
            op = r.choice([">", ">", ">=", "<"])
            return ["r1 = r7", f"r1 += {n}", f"if r1 {op} r8 goto {target}"]
        if kind == "pktacc":
            size = r.choice([1, 2, 4, 8])
            lim = r.choice([8, 14, 20, 34])
            off = self.pick_off(size, lim)
            check = ["r1 = r7", f"r1 += {lim}", f"if r1 > r8 goto {target}"] if r.random() < 0.7 else []
            if check and r.random() < 0.7:
                return check + [f"r{b} = *({SIZES[size]} *)(r7 + {off})"]
            if r.random() < 0.3:
                return ["r1 = r7", f"r1 += r{a}", f"r{b} = *({SIZES[size]} *)(r1 + {off})"]
            if r.random() < 0.3:
                return [f"*({SIZES[size]} *)(r7 + {off}) = r{b}"]
            return [f"r{b} = *({SIZES[size]} *)(r7 + {off})"]
        if kind == "ptradd":
            p = r.choice(["r9", "r10", "r6"] + (["r7"] if t in PACKET else []))
            d = r.choice([1, 2])
            lines = [f"r{d} = {p}"]
            lines.append(f"r{d} += {r.choice([-8, -16, -8, -16, 4, 8, -520])}" if r.random() < 0.5
                         else f"r{d} += r{a}")
            size = r.choice([1, 4, 8])
            lines.append(f"r{b} = *({SIZES[size]} *)(r{d} + 0)")
            return lines
        if kind == "call":
            # r1-r5 are clobbered by the call: give the scalar registers values again
            return [r.choice(["call bpf_get_prandom_u32", "call bpf_ktime_get_ns",
                              "call bpf_get_smp_processor_id"]), f"r{a} = r0",
                    *[f"r{x} = {r.choice(['r0', '0', '7', '64'])}" for x in (2, 3, 4, 5) if x != a]]
        if kind == "null":
            return [f"if r9 {r.choice(['==', '!='])} 0 goto {target}"]
        if kind == "loop":
            n = r.choice([3, 10, 40])
            lab = f"lp{self.nstmt}"
            return [f"r1 = {n}", f"{lab}:", f"r{a} += 1", "r1 -= 1",
                    f"if r1 {r.choice(['!=', '>'])} 0 goto {lab}"]
        # sizedld: an index loaded from the map value, masked, then used
        mask = r.choice([3, 7, 15, self.vsize - 1, self.vsize])
        return [f"r{a} = *(u8 *)(r9 + 0)", f"r{a} &= {mask}", "r1 = r9", f"r1 += r{a}",
                f"r{b} = *(u8 *)(r1 + 0)"]

    def pointer(self) -> str:
        """A register holding a pointer of this program: ctx, map value (or NULL), stack, and
        the packet and its end where the type has them."""
        return self.rng.choice(["r6", "r9", "r9", "r10"] + (["r7", "r7", "r8"] if self.ptype in PACKET
                                                          else []))

    def extra_stmt(self, a: int, b: int, target: str) -> list[str]:
        """Statements of ``--extra``: the rules the base mix rarely reaches (atomics on every
        pointer kind, ALU on pointers (32-bit, bitwise, neg, swaps, pointer minus pointer),
        partial spills of pointers and scalars, immediate stores, variable stack offsets,
        pointer comparisons, helpers taking memory and sizes, 32-bit bounds of 64-bit values,
        signed division, sign-extending loads)."""
        r, t = self.rng, self.ptype
        kind = r.choice(["atomic", "ptralu", "pspill", "imm_store", "varstack", "ptrcmp",
                         "memhelper", "wide32", "salu", "ldsx", "ptrpair"])
        size = r.choice([1, 2, 4, 8])
        if kind == "atomic":
            p = self.pointer()
            base = {"r10": -8 * r.randrange(1, 5), "r9": self.pick_off(8, self.vsize),
                    "r6": r.choice([0, 4, 8, 16, 48]), "r7": r.choice([0, 4, 8]),
                    "r8": 0}[p]
            if r.random() < 0.2:
                base += r.choice([1, 2, 4, -4])
            mem = f"{p} + {base}" if base >= 0 else f"{p} - {-base}"
            w = r.choice(["r", "w"])
            bits, s_ = ("64", "u64") if w == "r" else ("32", "u32")
            op = r.choice(["lock", "fetch", "xchg", "cmpxchg", "acq", "rel"])
            pre = []
            if p == "r7" and r.random() < 0.7:
                pre = ["r1 = r7", "r1 += 16", f"if r1 > r8 goto {target}"]
            if op == "lock":
                return pre + [f"lock *({s_} *)({mem}) {r.choice(['+=', '|=', '&=', '^='])} {w}{b}"]
            if op == "fetch":
                fn = r.choice(["add", "or", "and", "xor"])
                return pre + [f"{w}{b} = atomic_fetch_{fn}(({s_} *)({mem}), {w}{b})"]
            if op == "xchg":
                return pre + [f"{w}{b} = xchg{'_64' if w == 'r' else '32_32'}({mem}, {w}{b})"]
            if op == "cmpxchg":
                return pre + [f"{w}0 = cmpxchg{'_64' if w == 'r' else '32_32'}({mem}, {w}0, {w}{b})"]
            if op == "acq":
                return pre + [f"{'w' if size < 8 else 'r'}{b} = load_acquire(({SIZES[size]} *)({mem}))"]
            return pre + [f"store_release(({SIZES[size]} *)({mem}), {'w' if size < 8 else 'r'}{b})"]
        if kind == "ptralu":
            p = self.pointer()
            d = r.choice([1, 1, b])
            op = r.choice(["+=", "-=", "*=", "&=", "|=", "^=", "<<=", ">>=", "s>>=", "/=", "%=",
                           "neg", "swap", "w+=", "w=", "sx", "-=p", "+=p"])
            lines = [f"r{d} = {p}"]
            if op == "neg":
                lines.append(f"r{d} = -r{d}")
            elif op == "swap":
                lines.append(f"r{d} = {r.choice(['be16', 'le32', 'bswap64', 'le64'])} r{d}")
            elif op == "w+=":
                lines.append(f"w{d} += {r.choice([0, 1, 8])}")
            elif op == "w=":
                lines.append(f"w{d} = w{d}")
            elif op == "sx":
                lines.append(f"r{d} = (s{r.choice([8, 16, 32])})r{d}")
            elif op in ("-=p", "+=p"):
                lines.append(f"r{d} {op[:2]} {self.pointer()}")
            else:
                lines.append(f"r{d} {op} {r.choice([0, 1, 8, f'r{a}'])}")
            if r.random() < 0.6:
                lines.append(f"r{r.choice([0, 2, 3])} = *({SIZES[size]} *)(r{d} + 0)")
            else:
                lines.append(f"r{a} = r{d}")
            return lines
        if kind == "pspill":
            slot = 8 * r.randrange(2, 8)
            src = r.choice([self.pointer(), self.pointer(), f"r{a}"])
            wsz = r.choice([1, 2, 4, 8])
            woff = slot - r.choice([0, 0, 4, 2 if wsz <= 2 else 0])
            rsz = r.choice([1, 2, 4, 8])
            roff = slot - r.choice([0, 0, 4 if rsz <= 4 else 0, 1 if rsz == 1 else 0])
            wsrc = src if wsz == 8 else ("w" + src[1:])
            lines = [f"*({SIZES[wsz]} *)(r10 - {woff}) = {wsrc}"]
            if r.random() < 0.3:
                lines.append(f"*(u8 *)(r10 - {slot - r.randrange(8)}) = r{b}")
            d = r.choice([1, 1, b])
            lines.append(f"r{d} = *({SIZES[rsz]} *)(r10 - {roff})")
            if d == 1:
                lines.append(f"r{b} = *({SIZES[size]} *)(r1 + {r.choice([0, 1, 4])})")
            return lines
        if kind == "imm_store":
            slot = 8 * r.randrange(2, 8)
            wsz = r.choice([1, 2, 4, 8])
            imm = r.choice([0, 0, 1, 7, -1, 255, 65536])
            rsz = r.choice([1, 2, 4, 8])
            roff = slot - r.choice([0, 0, 4 if rsz <= 4 else 0])
            lines = [f"*({SIZES[wsz]} *)(r10 - {slot - r.choice([0, 0, 4 if wsz <= 4 else 0])}) = {imm}",
                     f"r{a} = *({SIZES[rsz]} *)(r10 - {roff})"]
            if r.random() < 0.5:
                lines += ["r1 = r9", f"r1 += r{a}", f"r{b} = *(u8 *)(r1 + 0)"]
            return lines
        if kind == "varstack":
            mask = r.choice([7, 15, 31, 63, 64])
            lines = ["r1 = r10", f"r{a} &= {mask}", f"r1 += r{a}",
                     f"r1 += {r.choice([-64, -72, -40, -8, -80])}"]
            if r.random() < 0.5:
                lines.insert(1, f"r{a} = -r{a}") if r.random() < 0.2 else None
                return [x for x in lines if x] + [f"r{b} = *({SIZES[size]} *)(r1 + 0)"]
            return lines + [f"*({SIZES[size]} *)(r1 + 0) = r{b}"]
        if kind == "ptrcmp":
            x, y = self.pointer(), r.choice([self.pointer(), f"r{a}", "r1"])
            w = "w" if r.random() < 0.2 else "r"
            if w == "w":
                x, y = "w" + x[1:], "w" + y[1:]
            lines = []
            if y == "r1" or y == "w1":
                lines.append(f"r1 = {r.choice(['0', 'r9', 'r10', 'r6'])}")
            return lines + [f"if {x} {r.choice(JMP_OPS)} {y} goto {target}"]
        if kind == "memhelper":
            p = r.choice(["r10", "r9", "r9"] + (["r7"] if t in PACKET else []))
            off = {"r10": -r.choice([8, 16, 32, 64]), "r9": r.choice([0, 8, self.vsize - 8]),
                   "r7": r.choice([0, 8, 14])}[p]
            n = r.choice(["0", "1", "8", "16", f"r{a}", f"r{a}", "-1", "64"])
            skb = t in ("socket_filter", "sched_cls") and r.random() < 0.3
            buf, size = ("r3", "r4") if skb else ("r1", "r2")   # bpf_skb_load_bytes(skb, off, to, len)
            lines = [f"{size} = {n}", f"{buf} = {p}", f"{buf} += {off}"]
            if n.startswith("r") and r.random() < 0.7:
                lines.append(f"{size} &= {r.choice([7, 15, 8])}")
            if skb:
                return lines + ["r1 = r6", f"r2 = {r.choice([0, 4, 14])}", "call bpf_skb_load_bytes",
                                f"r{a} = r0", *[f"r{x} = 0" for x in (2, 3, 4, 5) if x != a]]
            helper = r.choice(["bpf_probe_read_kernel", "bpf_probe_read_kernel", "bpf_csum_diff",
                               "bpf_get_current_comm" if t == "tracepoint" else "bpf_probe_read_kernel"])
            if helper == "bpf_csum_diff":
                lines += ["r3 = 0", "r4 = 0", "r5 = 0"]
            else:
                lines += [f"r3 = {r.choice(['r6', 'r10', '0'])}"]
            return lines + [f"call {helper}", f"r{a} = r0",
                            *[f"r{x} = 0" for x in (2, 3, 4, 5) if x != a]]
        if kind == "wide32":
            big = r.choice([4294967301, 4294967295, -4294967288, 8589934592, 2147483648])
            lines = [f"r{a} = {big} ll"] if r.random() < 0.5 else [f"r{a} <<= 32",
                                                                    f"r{a} |= {r.choice([3, 7])}"]
            lines.append(f"if w{a} {r.choice(['>', '>=', 's>', 's<', '<'])} {r.choice([7, 8, -1, 0])} goto {target}")
            lines += ["r1 = r9", f"r1 += r{a}", f"r{b} = *(u8 *)(r1 + 0)"]
            return lines
        if kind == "salu":
            op = r.choice(["s/=", "s%=", "s>>="])
            w = r.choice(["r", "w"])
            src = r.choice([f"{w}{b}", "-1", "3", "-8", "0"])
            lines = [f"{w}{a} {op} {src}"]
            if r.random() < 0.5:
                lines += ["r1 = r9", f"r1 += r{a}", f"r{b} = *(u8 *)(r1 + 0)"]
            return lines
        if kind == "ldsx":
            p = r.choice(["r9", "r10", "r6"] + (["r7"] if t in PACKET else []))
            ssz = r.choice([1, 2, 4])
            off = {"r9": self.pick_off(ssz, self.vsize), "r10": -8, "r6": r.choice(CTX_FIELDS[t])[0],
                   "r7": r.choice([0, 2])}[p]
            mem = f"{p} + {off}" if off >= 0 else f"{p} - {-off}"
            lines = [f"r{a} = *(s{8 * ssz} *)({mem})"]
            if r.random() < 0.5:
                lines += [f"if r{a} s< 0 goto {target}", "r1 = r9", f"r1 += r{a}",
                          f"r{b} = *(u8 *)(r1 + 0)"]
            return lines
        # ptrpair: the packet range learned through a second pointer, or map_value_or_null copies
        if t in PACKET and r.random() < 0.6:
            n = r.choice([8, 14, 20])
            return ["r1 = r7", f"r1 += {n}", f"if r8 {r.choice(['<', '<=', '>', '>='])} r1 goto {target}",
                    f"r{b} = *({SIZES[size]} *)(r7 + {self.pick_off(size, n)})"]
        return ["r1 = r9", f"if r1 {r.choice(['==', '!='])} r{a} goto {target}",
                f"r{b} = *({SIZES[size]} *)(r9 + {self.pick_off(size, self.vsize)})"]

    def build(self) -> str:
        r, t = self.rng, self.ptype
        mtype = r.choice(["array", "array", "hash", "percpu_array", "lru_hash"])
        out = [f".map m type={mtype} key=4 value={self.vsize} max_entries={r.choice([1, 4])}",
               "r6 = r1"]
        if t in PACKET:
            d, e = PACKET[t]
            out += [f"r7 = *(u32 *)(r6 + {d})", f"r8 = *(u32 *)(r6 + {e})"]
        out += [f"*(u32 *)(r10 - 4) = {r.choice([0, 0, 1, 3, 4])}", "r1 = map[m] ll", "r2 = r10",
                "r2 += -4", "call bpf_map_lookup_elem", "r9 = r0"]
        for reg in (0, 2, 3, 4, 5) if r.random() < 0.95 else (2, 3, 4, 5):
            out.append(f"r{reg} = {r.choice([0, 1, 8, -1, 100, 2])}")
        if r.random() < 0.9:
            out.append("if r9 == 0 goto out")
            for reg in (2, 3, 4, 5):
                if r.random() < 0.3:
                    out.append(f"r{reg} = *({r.choice(['u64', 'u32', 'u8'])} *)(r9 + 0)")
        n = r.randrange(3, 14) if not self.extra else r.randrange(2, 9)
        stmts = []
        for i in range(n):
            self.nstmt = i
            later = [f"s{j}" for j in range(i + 1, n)] + ["out"]
            stmts.append([f"s{i}:"] + self.stmt(later))
        for s in stmts:
            out += s
        out += ["out:", r.choice(["r0 = 0", "r0 = 1", "r0 = 2", "r0 = r3"]), "exit"]
        return "\n".join(out)


def bounds_program(rng: random.Random, ptype: str):
    """:func:`bounds_text`, assembled."""
    return fast_assemble(bounds_text(rng, ptype))


def bounds_text(rng: random.Random, ptype: str) -> str:
    """A program about scalar bounds only (``--bounds``): unknown values of every width and
    signedness from a map value, chains of 64- and 32-bit ALU ops (signed division, swaps,
    sign extension, negation), copies linked to their source (also with a constant added),
    JMP/JMP32 conditions in every form, spills and fills of parts of a scalar, and accesses
    to the map value and the stack at the resulting variable offsets. Each access is accepted
    exactly when the verifier's bounds prove it, so a verifier more precise than the kernel's
    (an unsound one) shows as an accept the kernel refuses."""
    r = rng
    vsize = r.choice([8, 16, 48, 64, 256])
    regs = [2, 3, 4, 5, 7, 8]
    out = [f".map m type=array key=4 value={vsize} max_entries=1", "r6 = r1",
           "*(u32 *)(r10 - 4) = 0", "r1 = map[m] ll", "r2 = r10", "r2 += -4",
           "call bpf_map_lookup_elem", "r9 = r0", "if r9 == 0 goto out"]
    for x in regs:
        src = r.choice(["u8", "u16", "u32", "u64", "s8", "s16", "s32", "const", "big"])
        if src == "const":
            out.append(f"r{x} = {r.choice([0, 1, 7, -1, -8, 255, 4096])}")
        elif src == "big":
            out.append(f"r{x} = {r.choice([4294967296, 4294967295, 4294967303, -4294967296, -2147483648, 9223372036854775807])} ll")
        else:
            out.append(f"r{x} = *({src} *)(r9 + {r.choice([0, 0, 1, 2, 4]) if vsize > 8 else 0})")
    n = r.randrange(3, 12)
    consts = [0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 63, 64, 255, 256, -1, -2, -8, -16, -256,
              0x7fffffff, -0x80000000, 0xffff, vsize, vsize - 1, vsize - 8]
    body = []
    for i in range(n):
        a, b = r.choice(regs), r.choice(regs)
        w = "w" if r.random() < 0.35 else "r"
        target = r.choice([f"s{j}" for j in range(i + 1, n)] + ["out", "acc"])
        kind = r.choices(["alu", "jmp", "copy", "spill", "acc", "misc"], [8, 8, 3, 2, 3, 3])[0]
        lines = [f"s{i}:"]
        if kind == "alu":
            op = r.choice(ALU_OPS + ["s/=", "s%=", "="])
            src = f"{w}{b}" if r.random() < 0.35 else str(r.choice(consts))
            if op in ("<<=", ">>=", "s>>=") and not src.startswith(w):
                src = str(r.randrange(0, 64 if w == "r" else 32))
            lines.append(f"{w}{a} {op} {src}")
        elif kind == "jmp":
            rhs = f"{w}{b}" if r.random() < 0.3 else str(r.choice(consts))
            lines.append(f"if {w}{a} {r.choice(JMP_OPS)} {rhs} goto {target}")
        elif kind == "copy":
            lines.append(f"{w}{b} = {w}{a}")
            if r.random() < 0.6:
                lines.append(f"{w}{b} += {r.choice([1, 4, -1, 8, -4, 2147483647])}")
            if r.random() < 0.5:
                lines.append(f"if {r.choice(['r', 'w'])}{a} {r.choice(JMP_OPS)} {r.choice(consts)} goto {target}")
        elif kind == "spill":
            sz = r.choice([1, 2, 4, 8])
            slot = 8 * r.randrange(2, 6)
            woff = slot - r.choice([0, 0, 4 if sz <= 4 else 0])
            lines += [f"*({SIZES[sz]} *)(r10 - {woff}) = {'r' if sz == 8 else 'w'}{a}",
                      f"r{b} = *({SIZES[r.choice([sz, sz, 1, 2, 4, 8])]} *)(r10 - {woff})"]
        elif kind == "acc":
            lines += access(r, a, vsize)
        else:
            lines.append(r.choice([f"r{a} = -r{a}", f"w{a} = -w{a}",
                                   f"r{a} = {r.choice(['be16', 'be32', 'le16', 'le32', 'bswap16', 'bswap32', 'bswap64'])} r{a}",
                                   f"r{a} = (s{r.choice([8, 16, 32])})r{b}",
                                   f"w{a} = (s{r.choice([8, 16])})w{b}",
                                   f"w{a} = w{a}"]))
        body += lines
    out += body
    a = r.choice(regs)
    out += ["goto out", "acc:", *access(r, a, vsize), "out:", "r0 = 0", "exit"]
    return re.sub(r"\+ -(\d)", r"- \1", "\n".join(out))


def access(r: random.Random, a: int, vsize: int) -> list[str]:
    """An access at a variable offset held in r{a}: into the map value or the stack."""
    size = r.choice([1, 1, 2, 4, 8])
    if r.random() < 0.75:
        return ["r1 = r9", f"r1 += r{a}", f"r0 = *({SIZES[size]} *)(r1 + {r.choice([0, 0, 1, -1, 4])})"]
    return ["r1 = r10", f"r1 += r{a}",
            f"r0 = *({SIZES[size]} *)(r1 - {r.choice([64, 128, 256, 512, 8])})"]


def random_program(rng: random.Random, ptype: str, extra: bool = False):
    """A random program for ``ptype``, assembled (AsmError never: the text is well formed).
    ``extra``: 40% of the statements (2 to 8 of them) come from :meth:`_Gen.extra_stmt`."""
    text = _Gen(rng, ptype, extra).build()
    return fast_assemble(re.sub(r"\+ -(\d)", r"- \1", text))


# -- mutations ----------------------------------------------------------------------------------
JCOND_OPS = [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0]
ALU_OPCODES = [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0, 0xb0, 0xc0]


def _edit(rng: random.Random, insns: list, i: int, donor: list):
    ins = insns[i]
    cls, op = ins.opcode & 0x07, ins.opcode & 0xF0
    what = rng.choice(["imm", "off", "dst", "src", "opcode", "drop", "splice", "nop"])
    if what == "imm":
        return ins._replace(imm=rng.choice([ins.imm + 1, ins.imm - 1, ins.imm + 8, ins.imm - 8,
                                            -ins.imm, 0, rng.randrange(-64, 64),
                                            ins.imm * 2, 0x7fffffff]))
    if what == "off":
        return ins._replace(off=max(-32768, min(32767, rng.choice(
            [ins.off + 1, ins.off - 1, ins.off + 4, ins.off - 4, ins.off + 8, ins.off - 8,
             -ins.off, 0, rng.randrange(-32, 32)]))))
    if what == "dst":
        return ins._replace(dst=rng.randrange(0, 11))
    if what == "src":
        return ins._replace(src=rng.randrange(0, 11))
    if what == "opcode":
        if cls in (0x05, 0x06) and op in JCOND_OPS:
            if rng.random() < 0.3:
                return ins._replace(opcode=ins.opcode ^ 0x03)            # JMP <-> JMP32
            return ins._replace(opcode=(ins.opcode & 0x0F) | rng.choice(JCOND_OPS))
        if cls in (0x04, 0x07) and op in ALU_OPCODES:
            if rng.random() < 0.3:
                return ins._replace(opcode=ins.opcode ^ 0x03)            # ALU <-> ALU64
            return ins._replace(opcode=(ins.opcode & 0x0F) | rng.choice(ALU_OPCODES))
        if cls in (0x01, 0x02, 0x03):                                     # LDX, ST, STX size
            return ins._replace(opcode=(ins.opcode & ~0x18) | rng.choice([0x00, 0x08, 0x10, 0x18]))
        return ins._replace(imm=ins.imm ^ 1)
    if what == "drop":
        if cls in (0x05, 0x06) and op in JCOND_OPS:
            # drop the check (fall through always) or take it always
            return ins._replace(opcode=0x05, dst=0, src=0, imm=0,
                                off=0 if rng.random() < 0.6 else ins.off)
        return ins
    if what == "splice":
        return rng.choice(donor)
    return ins._replace(opcode=0x05, dst=0, src=0, off=0, imm=0)          # goto +0


def mutate(rng: random.Random, prog, donor_progs=(), edits=(1, 1, 2, 3)):
    """A copy of ``prog`` with one to three edits (a choice from ``edits``); None when no edit
    gave a decodable program."""
    import pybpf
    from pybpf.errors import DecodeError
    base = list(prog.insns)
    # second slots of ld_imm64 are not edited on their own
    starts = [pc for pc, _f, _i in prog.instructions()]
    donor = [i for p in donor_progs for i in p.insns if i.opcode != 0] or base
    for _attempt in range(8):
        insns = list(base)
        for _ in range(rng.choice(edits)):
            i = rng.choice(starts)
            new = _edit(rng, insns, i, donor)
            if insns[i].opcode == 0x18 and new.opcode != 0x18:
                continue                   # keep ld_imm64 pairs whole
            insns[i] = new
        if insns == base:
            continue
        try:
            out = pybpf.Program(insns, functions=dict(prog.functions), maps=list(prog.maps),
                                name=prog.name)
        except (DecodeError, ValueError):
            continue
        return out
    return None


# -- the differential run -----------------------------------------------------------------------
@dataclass
class Tally:
    total: int = 0
    both_accept: int = 0
    both_reject: int = 0
    message_match: int = 0
    unsound: list = field(default_factory=list)        # kernel rejects, pybpf accepts
    too_strict: list = field(default_factory=list)     # kernel accepts, pybpf rejects
    crashes: list = field(default_factory=list)        # pybpf raised something else
    kernel_bugs: list = field(default_factory=list)    # the kernel said "verifier bug: ..."
    skipped: int = 0                                    # maps the kernel refused
    by_type: Counter = field(default_factory=Counter)
    mismatched_messages: Counter = field(default_factory=Counter)
    # per program type: kernel accepts, kernel rejects, unsound, too strict, both reject, match
    per_type: dict = field(default_factory=dict)
    mismatch_examples: dict = field(default_factory=dict)  # (kernel, pybpf) -> first example
    kernel_s: float = 0.0
    pybpf_s: float = 0.0
    slowest: list = field(default_factory=list)         # (pybpf seconds, label, type, prog)

    @property
    def kernel_accepts(self) -> int:
        return self.both_accept + len(self.too_strict)

    @property
    def kernel_rejects(self) -> int:
        return self.both_reject + len(self.unsound)

    def summary(self) -> str:
        # total = accepted + rejected by the kernel + its internal errors
        ka, kr = self.kernel_accepts, self.kernel_rejects
        pct = lambda n, d: f"{100 * n / d:.2f}%" if d else "n/a"
        return "\n".join([
            f"programs compared: {self.total} ({', '.join(f'{t} {n}' for t, n in sorted(self.by_type.items()))}); "
            f"kernel accepted {ka}, rejected {kr}; skipped {self.skipped}",
            f"kernel rejects / pybpf accepts: {len(self.unsound)} (must be 0)",
            f"kernel accepts / pybpf rejects: {len(self.too_strict)} of {ka} = {pct(len(self.too_strict), ka)} (aim < 5%)",
            f"rejections whose message matches the kernel's last log line: {self.message_match} of "
            f"{self.both_reject} = {pct(self.message_match, self.both_reject)}",
            f"  of the {self.both_reject - self.message_match} mismatches, {self.past_maps()} are "
            f"map indexes outside the harness's zero-padded fd_array (negative, or past its "
            f"{kv.FD_ARRAY_PAD} entries: the kernel reads whatever memory is there): no message "
            f"of the kernel's to match",
            f"pybpf crashes (non-VerifierError): {len(self.crashes)}",
            f"kernel internal errors ('verifier bug: ...', not verdicts, not counted above): "
            f"{len(self.kernel_bugs)}",
            *(self.type_line(t) for t in sorted(self.per_type)),
            f"time: kernel {self.kernel_s:.1f} s, pybpf {self.pybpf_s:.1f} s; slowest pybpf: "
            + ", ".join(f"{dt:.2f} s {label}" for dt, label, _t, _p in self.slowest[:3])])


    def past_maps(self) -> int:
        """Mismatched messages of programs that reference a map index outside the harness's
        fd_array (kernel_verifier pads it with zeros to FD_ARRAY_PAD entries, which pybpf's
        'fd 0' matches): the kernel's message there depends on the memory around it."""
        return sum(n for (k, p), n in self.mismatched_messages.items()
                   if re.fullmatch(r"map index -\d+ out of range", p) or
                   p == "fd 0 is not pointing to valid bpf_map" and k != p)

    def count(self, ptype: str, key: str) -> None:
        row = self.per_type.setdefault(ptype, Counter())
        row[key] += 1

    def type_line(self, ptype: str) -> str:
        """The three figures for one program type."""
        r = self.per_type[ptype]
        pct = lambda n, d: f"{100 * n / d:.2f}%" if d else "n/a"
        return (f"  {ptype}: kernel accepts {r['ka']}, rejects {r['kr']}; kernel rejects / pybpf "
                f"accepts {r['unsound']}; kernel accepts / pybpf rejects {r['strict']} = "
                f"{pct(r['strict'], r['ka'])}; messages {r['match']} of {r['both']} = "
                f"{pct(r['match'], r['both'])}")


def programs(count: int, seed: int, types=PROG_TYPES, mutate_share: float = 0.5,
             exclude=(), extra: bool = False, bounds: float = 0.0):
    """Yield (label, prog_type, program) for ``count`` programs: random ones and mutations of
    the corpus's accepted programs of ``types`` (but not the topics in ``exclude``),
    interleaved, reproducible from ``seed``."""
    rng = random.Random(seed)
    base = [(c, c.program()) for c in corpus.cases()
            if c.verdict == "accept" and c.prog_type in types and c.topic not in exclude]
    donors = [p for _c, p in base]
    n = 0
    while n < count:
        if base and rng.random() < mutate_share:
            case, prog = rng.choice(base)
            m = mutate(rng, prog, [rng.choice(donors)])
            if m is None:
                continue
            yield f"mut:{case.name}", case.prog_type, m
        else:
            t = rng.choice(types)
            if bounds and rng.random() < bounds:
                yield "bounds", t, bounds_program(rng, t)
            else:
                yield "rand", t, random_program(rng, t, extra)
        n += 1


def differential(count: int, seed: int = 1, types=PROG_TYPES, mutate_share: float = 0.5,
                 vm=None, keep: int = 50, progress: int = 0, exclude=(),
                 extra: bool = False, bounds: float = 0.0) -> Tally:
    """Load ``count`` programs into the kernel and into pybpf; the tally of their verdicts.
    At most ``keep`` examples of each disagreement are kept (as (label, type, prog, detail)).
    ``progress``: print the running summary to stderr every that many programs."""
    import pybpf
    vm = vm if vm is not None else pybpf.VM()
    tally = Tally()
    for label, ptype, prog in programs(count, seed, types, mutate_share, exclude, extra,
                                                      bounds):
        t0 = time.perf_counter()
        try:
            kernel = kv.kernel_verify(prog, ptype)
        except kv.MapsUnavailable:
            tally.skipped += 1
            continue
        t1 = time.perf_counter()
        try:
            accepted, message = corpus.pybpf_verify(prog, ptype, vm)
        except Exception as e:          # a verifier crash is a finding, not a verdict
            tally.pybpf_s += time.perf_counter() - t1
            tally.kernel_s += t1 - t0
            tally.total += 1
            tally.by_type[ptype] += 1
            if len(tally.crashes) < keep:
                tally.crashes.append((label, ptype, prog, f"{type(e).__name__}: {e}"))
            continue
        dt = time.perf_counter() - t1
        tally.pybpf_s += dt
        tally.kernel_s += t1 - t0
        tally.total += 1
        tally.by_type[ptype] += 1
        if progress and tally.total % progress == 0:
            print(tally.summary(), file=sys.stderr, flush=True)
        tally.slowest = sorted(tally.slowest + [(dt, label, ptype, prog)], key=lambda r: -r[0])[:5]
        if not kernel.accepted and kernel.message.startswith("verifier bug"):
            # the kernel's own internal error (it WARNs): not a verdict on the program
            tally.kernel_bugs.append((label, ptype, prog, f"{kernel.message}; pybpf "
                                      f"{'accepts' if accepted else 'rejects: ' + message}"))
        elif kernel.accepted and accepted:
            tally.both_accept += 1
            tally.count(ptype, "ka")
        elif not kernel.accepted and not accepted:
            tally.both_reject += 1
            tally.count(ptype, "kr")
            tally.count(ptype, "both")
            if message == kernel.message:
                tally.message_match += 1
                tally.count(ptype, "match")
            else:
                tally.mismatched_messages[(kernel.message, message)] += 1
                tally.mismatch_examples.setdefault((kernel.message, message), (label, ptype, prog))
        elif accepted:
            tally.unsound.append((label, ptype, prog, kernel.message))
            tally.count(ptype, "kr")
            tally.count(ptype, "unsound")
        else:
            tally.too_strict.append((label, ptype, prog, message))
            tally.count(ptype, "ka")
            tally.count(ptype, "strict")
    return tally


def as_vt(label: str, ptype: str, prog, note: str) -> str:
    """A disagreement written as a corpus-style file (expectations to be filled by regen.py)."""
    import pybpf
    body = []
    for ln in pybpf.disassemble(prog).splitlines():
        head = re.match(r"^[0-9a-f]+ <(\w+)>:$", ln)
        if head and head[1] != prog.name:
            body.append(f"{head[1]}:")
        elif ln.startswith(".map") or "\t" in ln:
            body.append(ln.split("\t")[-1].strip())
    return "\n".join([f"# {label}: {note}", f"type: {ptype}", "---", *body]) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--types", default=",".join(PROG_TYPES))
    ap.add_argument("--mutate-share", type=float, default=0.5)
    ap.add_argument("--show", type=int, default=5, help="print this many examples of each disagreement")
    ap.add_argument("--dump", help="write disagreements as .vt files into this directory")
    ap.add_argument("--progress", type=int, default=0, metavar="N",
                    help="print the running figures to stderr every N programs")
    ap.add_argument("--extra", action="store_true",
                    help="random programs also use the extra statement kinds (_Gen.extra_stmt)")
    ap.add_argument("--bounds", type=float, default=0.0, metavar="SHARE",
                    help="this share of the random programs come from bounds_program")
    args = ap.parse_args(argv)
    if not kv.available():
        print("bpf() is not permitted here: no kernel to compare with", file=sys.stderr)
        return 2
    tally = differential(args.count, args.seed, tuple(args.types.split(",")), args.mutate_share,
                         progress=args.progress, extra=args.extra, bounds=args.bounds)
    print(tally.summary())
    import pybpf
    for title, rows in (("kernel rejects / pybpf accepts", tally.unsound),
                        ("kernel accepts / pybpf rejects", tally.too_strict),
                        ("pybpf crashes", tally.crashes),
                        ("kernel internal errors", tally.kernel_bugs)):
        for label, ptype, prog, detail in rows[:args.show]:
            print(f"--- {title}: {label} ({ptype}): {detail}")
            print(pybpf.disassemble(prog))
    for (k, p), n in tally.mismatched_messages.most_common(args.show):
        print(f"--- message x{n}: kernel {k!r} / pybpf {p!r}")
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        for kind, rows in (("unsound", tally.unsound), ("strict", tally.too_strict),
                           ("crash", tally.crashes)):
            for i, (label, ptype, prog, detail) in enumerate(rows):
                with open(os.path.join(args.dump, f"{kind}_{i}.vt"), "w") as f:
                    f.write(as_vt(label, ptype, prog, detail))
        for i, ((k, p), n) in enumerate(tally.mismatched_messages.most_common()):
            label, ptype, prog = tally.mismatch_examples[(k, p)]
            with open(os.path.join(args.dump, f"message_{i}.vt"), "w") as f:
                f.write(as_vt(label, ptype, prog, f"x{n} kernel {k!r} / pybpf {p!r}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
