"""Native map lookups on the baseline tier: a map's own ``gen_lookup`` emitted as x86-64.

The LLVM tiers inline ``bpf_map_lookup_elem`` by handing the map an :class:`IRKit`
(jit/maps.py), and the map builds its lookup with it (``runtime/maps/array.py``,
``runtime/maps/hash.py``: the kernel's ``map_gen_lookup``). The baseline tier has no LLVM, but
it runs the *same* ``gen_lookup`` against :class:`X86Kit`: an IRKit whose builder records the
few SSA operations a lookup uses (integer arithmetic, compares, selects, loads and stores,
branches and phis) and then emits them as x86, so a map's storage layout is still walked by
code written in one place, next to the code that builds it.

The emitted code is plain and slow by LLVM's standards but needs no Python and no GIL: every
SSA value lives in an 8-byte stack slot below the BPF frame (``sub rsp``, released after),
each operation loads its operands into scratch registers (r9-r11, which hold no BPF register),
computes, and stores; a phi's slot is written on each edge into its block (through temporaries
when a block has several, so they are copied in parallel). Every BPF register except r0 (rax,
the result) is left as it was. Values narrower than 64 bits are kept zero-extended in their
slots, so ``zext`` costs nothing and unsigned compares work on 64 bits.

What a lookup uses beyond this subset raises :class:`~pybpf.jit.baseline.Unsupported` (through
:class:`KitUnsupported`), and the baseline then calls the helper through the bridge instead:
slower, never wrong.
"""
from __future__ import annotations

from llvmlite import ir

from pybpf.errors import JITError
from pybpf.jit import x86_emit as X
from pybpf.jit.cgutils import I64, PTR, Const
from pybpf.jit.maps import IRKit

_M64 = (1 << 64) - 1
_CMP = {"==": 0x4, "!=": 0x5, "<": 0x2, "<=": 0x6, ">": 0x7, ">=": 0x3}   # unsigned conditions
_BIN = {"add": b"\x01", "sub": b"\x29", "and": b"\x21", "or": b"\x09", "xor": b"\x31"}


class KitUnsupported(JITError):
    """The lookup uses an operation this kit does not emit (the caller bridges the helper)."""


class _Val:
    """An SSA value: a constant, or the stack slot that holds it (zero-extended)."""

    __slots__ = ("type", "const", "slot")

    def __init__(self, ty, const: int | None = None, slot: int | None = None) -> None:
        self.type, self.const, self.slot = ty, const, slot


class _Phi(_Val):
    __slots__ = ("block", "incoming")

    def add_incoming(self, value, block) -> None:
        self.incoming.append((value, block))


class _Block:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.label = name, ("kit", n)
        self.ops: list = []
        self.phis: list[_Phi] = []
        self.term = None


def _width(ty) -> int:
    return 64 if isinstance(ty, ir.PointerType) else ty.width


class _Builder:
    """The part of llvmlite's IRBuilder that a map's ``gen_lookup`` uses, recording."""

    def __init__(self, kit: "X86Kit") -> None:
        self.kit = kit
        self.block = kit.new_block("entry")

    def __getattr__(self, name):
        raise KitUnsupported(f"baseline map kit: no rule for builder.{name}")

    # values
    def _v(self, v) -> _Val:
        if isinstance(v, _Val):
            return v
        if isinstance(v, (Const, ir.Constant)) and isinstance(v.type, ir.IntType):
            return _Val(v.type, int(v.value) & ((1 << v.type.width) - 1))
        raise KitUnsupported(f"baseline map kit: operand {v!r}")

    def _new(self, ty) -> _Val:
        return self.kit.new_val(ty)

    def _op(self, *op) -> None:
        if self.block.term is not None:
            raise KitUnsupported("baseline map kit: code after a terminator")
        self.block.ops.append(op)

    def ext(self, address: int) -> _Val:
        return _Val(I64, address & _M64)

    # arithmetic
    def _binop(self, name: str, a, b) -> _Val:
        a, b = self._v(a), self._v(b)
        ty = a.type
        w = _width(ty)
        mask = (1 << w) - 1
        if a.const is not None and b.const is not None:
            x, y = a.const, b.const
            r = {"add": x + y, "sub": x - y, "mul": x * y, "and": x & y, "or": x | y,
                 "xor": x ^ y, "shl": x << y if y < w else 0,
                 "lshr": x >> y if y < w else 0}[name]
            return _Val(ty, r & mask)
        if name in ("shl", "lshr") and b.const is None:
            raise KitUnsupported("baseline map kit: a shift by a variable amount")
        out = self._new(ty)
        self._op("bin", name, out, a, b)
        return out

    def add(self, a, b, name=""):
        return self._binop("add", a, b)

    def sub(self, a, b, name=""):
        return self._binop("sub", a, b)

    def mul(self, a, b, name=""):
        return self._binop("mul", a, b)

    def and_(self, a, b, name=""):
        return self._binop("and", a, b)

    def or_(self, a, b, name=""):
        return self._binop("or", a, b)

    def xor(self, a, b, name=""):
        return self._binop("xor", a, b)

    def shl(self, a, b, name=""):
        return self._binop("shl", a, b)

    def lshr(self, a, b, name=""):
        return self._binop("lshr", a, b)

    def _retype(self, v, ty, truncate: bool) -> _Val:
        v = self._v(v)
        if v.const is not None:
            return _Val(ty, v.const & ((1 << _width(ty)) - 1))
        if not truncate and not isinstance(v, _Phi):
            return _Val(ty, slot=v.slot)     # already zero-extended in its slot
        out = self._new(ty)
        self._op("mask", out, v)             # a phi's slot is rewritten on edges: a copy
        return out

    def zext(self, v, ty, name=""):
        return self._retype(v, ty, False)

    def trunc(self, v, ty, name=""):
        return self._retype(v, ty, _width(ty) < _width(self._v(v).type))

    def inttoptr(self, v, ty=PTR, name=""):
        return self._retype(v, PTR, False)

    def ptrtoint(self, v, ty=I64, name=""):
        return self._retype(v, ty, False)

    def icmp_unsigned(self, op: str, a, b, name=""):
        a, b = self._v(a), self._v(b)
        if op not in _CMP:
            raise KitUnsupported(f"baseline map kit: compare {op!r}")
        out = self._new(ir.IntType(1))
        self._op("cmp", _CMP[op], out, a, b)
        return out

    def select(self, cond, a, b, name=""):
        cond, a, b = self._v(cond), self._v(a), self._v(b)
        out = self._new(a.type)
        self._op("select", out, cond, a, b)
        return out

    # memory
    def load(self, ptr, typ=None, align=None, name=""):
        if typ is None or not isinstance(typ, ir.IntType) or typ.width not in (8, 16, 32, 64):
            raise KitUnsupported(f"baseline map kit: load of {typ}")
        out = self._new(typ)
        self._op("load", out, self._v(ptr))
        return out

    def load_atomic(self, ptr, ordering, align, typ=None, name=""):
        # x86 loads are acquire loads (and sequentially consistent ones for aligned words)
        return self.load(ptr, typ)

    def store(self, value, ptr, align=None):
        value = self._v(value)
        if _width(value.type) not in (8, 16, 32, 64):
            raise KitUnsupported(f"baseline map kit: store of {value.type}")
        self._op("store", value, self._v(ptr))

    # control flow
    def position_at_end(self, block: _Block) -> None:
        self.block = block

    def phi(self, ty, name=""):
        p = _Phi(ty, None, self.kit.new_slot())
        p.block, p.incoming = self.block, []
        if self.block.ops:
            raise KitUnsupported("baseline map kit: a phi after other instructions")
        self.block.phis.append(p)
        return p

    def _end(self, term: tuple) -> None:
        if self.block.term is not None:
            raise KitUnsupported("baseline map kit: a block with two terminators")
        self.block.term = term

    def branch(self, target: _Block) -> None:
        self._end(("br", target))

    def cbranch(self, cond, yes: _Block, no: _Block) -> None:
        self._end(("cbr", self._v(cond), yes, no))


class X86Kit(IRKit):
    """The kit a map's ``gen_lookup`` builds with, emitting x86 (:func:`emit_lookup`)."""

    def __init__(self) -> None:   # no LLVM function: blocks and values are this kit's own
        self.blocks: list[_Block] = []
        self.nslots = 0
        self.b = _Builder(self)

    def new_block(self, name: str) -> _Block:
        blk = _Block(name, len(self.blocks))
        self.blocks.append(blk)
        return blk

    def new_slot(self) -> int:
        self.nslots += 1
        return self.nslots - 1

    def new_val(self, ty) -> _Val:
        return _Val(ty, None, self.new_slot())

    def ext(self, address: int):
        return self.b.ext(address)

    def block(self, name: str):
        return self.new_block(name)

    def ptr(self, addr):
        return self.b.inttoptr(addr, PTR)


def emit_lookup(a: X.Asm, m, key_reg: int, tag) -> None:
    """rax = ``m``'s lookup of the key at ``key_reg`` (a BPF register's x86 register), by
    ``m.gen_lookup``; every other register is kept. ``tag`` makes this site's labels unique.
    Raises :class:`KitUnsupported` (before emitting anything) for what the kit cannot emit."""
    emit(a, lambda kit, key: m.gen_lookup(kit, key), tag, key_reg)


def emit(a: X.Asm, build, tag, arg_reg: int | None = None) -> None:
    """rax = the value ``build(kit, arg)`` returns, built with an :class:`X86Kit` (``arg``: the
    i64 in ``arg_reg``, or None); the same contract as :func:`emit_lookup`."""
    kit = X86Kit()
    arg = kit.new_val(I64) if arg_reg is not None else None
    result = kit.b._v(build(kit, arg))
    last = kit.b.block
    if last.term is not None:
        raise KitUnsupported("baseline map kit: the code ends in a branch")
    for blk in kit.blocks:
        if blk is not last and blk.term is None:
            raise KitUnsupported(f"baseline map kit: block {blk.name} has no terminator")
        for succ in (blk.term[2:] if blk.term and blk.term[0] == "cbr" else blk.term[1:]
                     if blk.term else ()):
            for p in succ.phis:
                if sum(1 for _, b in p.incoming if b is blk) != 1:
                    raise KitUnsupported(f"baseline map kit: a phi in {succ.name} needs one "
                                         f"value from {blk.name}")
    _Emit(a, kit, tag).run(arg, arg_reg, result, last)


class _Emit:
    def __init__(self, a: X.Asm, kit: X86Kit, tag) -> None:
        self.a, self.kit, self.tag = a, kit, tag
        self.nphi_tmp = max([len(b.phis) for b in kit.blocks] + [0])
        self.tmp0 = kit.nslots                   # temporaries of parallel phi copies
        nslots = kit.nslots + self.nphi_tmp
        self.frame = (nslots * 8 + 15) & ~15

    def label(self, blk_or_name):
        name = blk_or_name.label if isinstance(blk_or_name, _Block) else blk_or_name
        return (self.tag, name)

    def disp(self, slot: int) -> int:
        return slot * 8

    def get(self, reg: int, v: _Val) -> None:
        if v.const is not None:
            self.a.mov_imm(reg, v.const)
        else:
            self.a.rm(b"\x8B", reg, X.RSP, self.disp(v.slot), 1)       # mov reg, [rsp+d]

    def put(self, v: _Val, reg: int) -> None:
        self.a.rm(b"\x89", reg, X.RSP, self.disp(v.slot), 1)           # mov [rsp+d], reg

    def zext_to(self, reg: int, width: int) -> None:
        a = self.a
        if width == 8:
            a.rr(b"\x0F\xB6", reg, reg, 0, force=True)                  # movzx r32, r8
        elif width == 16:
            a.rr(b"\x0F\xB7", reg, reg, 0)
        elif width == 32:
            a.rr(b"\x89", reg, reg, 0)                                  # mov r32, r32
        elif width == 1:
            a.ri(4, reg, 1, 0)

    def run(self, key: _Val, key_reg: int, result: _Val, last: _Block) -> None:
        a = self.a
        if self.frame:
            a.ri(5, X.RSP, self.frame)                                  # sub rsp, frame
        if key is not None:
            self.put(key, key_reg)
        for blk in self.kit.blocks:
            a.label(self.label(blk))
            for op in blk.ops:
                getattr(self, "_" + op[0])(*op[1:])
            if blk is last:
                self.get(X.R10, result)
                a.jmp(self.label("exit"))
            elif blk.term is not None:
                self._term(blk)
        a.label(self.label("exit"))
        if self.frame:
            a.ri(0, X.RSP, self.frame)                                  # add rsp, frame
        a.mov(X.RAX, X.R10)

    # operations
    def _bin(self, name: str, out: _Val, x: _Val, y: _Val) -> None:
        a = self.a
        width = _width(out.type)
        w = 1 if width == 64 else 0
        self.get(X.R10, x)
        if name in ("shl", "lshr"):
            a.rr(b"\xC1", 4 if name == "shl" else 5, X.R10, w)
            a.b.append(y.const & (63 if w else 31))
        else:
            self.get(X.R11, y)
            if name == "mul":
                a.rr(b"\x0F\xAF", X.R10, X.R11, w)                      # imul r10, r11
            else:
                a.rr(_BIN[name], X.R11, X.R10, w)
        if width < 32:
            self.zext_to(X.R10, width)
        self.put(out, X.R10)

    def _mask(self, out: _Val, v: _Val) -> None:
        self.get(X.R10, v)
        width = _width(out.type)
        if width < 64:
            self.zext_to(X.R10, width)
        self.put(out, X.R10)

    def _cmp(self, cc: int, out: _Val, x: _Val, y: _Val) -> None:
        a = self.a
        self.get(X.R10, x)
        self.get(X.R11, y)
        a.rr(b"\x39", X.R11, X.R10, 1)                                  # cmp r10, r11
        a.rr(bytes((0x0F, 0x90 | cc)), 0, X.R10, 0, force=True)         # setcc r10b
        a.rr(b"\x0F\xB6", X.R10, X.R10, 0, force=True)                  # movzx r10d, r10b
        self.put(out, X.R10)

    def _select(self, out: _Val, cond: _Val, x: _Val, y: _Val) -> None:
        a = self.a
        self.get(X.R10, y)
        self.get(X.R11, x)
        self.get(X.R9, cond)
        a.rr(b"\x85", X.R9, X.R9, 1)                                    # test r9, r9
        a.rr(b"\x0F\x45", X.R10, X.R11, 1)                              # cmovnz r10, r11
        self.put(out, X.R10)

    def _load(self, out: _Val, ptr: _Val) -> None:
        a = self.a
        self.get(X.R10, ptr)
        width = out.type.width
        if width == 64:
            a.rm(b"\x8B", X.R10, X.R10, 0, 1)
        elif width == 32:
            a.rm(b"\x8B", X.R10, X.R10, 0, 0)
        else:
            a.rm(b"\x0F\xB6" if width == 8 else b"\x0F\xB7", X.R10, X.R10, 0, 0)
        self.put(out, X.R10)

    def _store(self, value: _Val, ptr: _Val) -> None:
        a = self.a
        self.get(X.R10, ptr)
        self.get(X.R11, value)
        width = _width(value.type)
        if width == 8:
            a.rm(b"\x88", X.R11, X.R10, 0, 0, force=True)
        elif width == 16:
            a.rm(b"\x89", X.R11, X.R10, 0, 0, pre=b"\x66")
        else:
            a.rm(b"\x89", X.R11, X.R10, 0, 1 if width == 64 else 0)

    # edges
    def _copies(self, src: _Block, dst: _Block) -> None:
        """Write ``dst``'s phis with their values from ``src`` (in parallel)."""
        moves = []
        if not dst.phis:
            return
        for p in dst.phis:
            value = next(v for v, b in p.incoming if b is src)     # one: checked by emit()
            moves.append((p, self.kit.b._v(value)))
        if len(moves) == 1:
            p, v = moves[0]
            self.get(X.R10, v)
            self.put(p, X.R10)
            return
        for i, (_, v) in enumerate(moves):
            self.get(X.R10, v)
            self.a.rm(b"\x89", X.R10, X.RSP, self.disp(self.tmp0 + i), 1)
        for i, (p, _) in enumerate(moves):
            self.a.rm(b"\x8B", X.R10, X.RSP, self.disp(self.tmp0 + i), 1)
            self.put(p, X.R10)

    def _term(self, blk: _Block) -> None:
        a, term = self.a, blk.term
        if term[0] == "br":
            self._copies(blk, term[1])
            a.jmp(self.label(term[1]))
            return
        _, cond, yes, no = term
        other = (self.tag, "edge", blk.label)
        self.get(X.R9, cond)
        a.rr(b"\x85", X.R9, X.R9, 1)
        a.jcc(X.CC["z"], other)
        self._copies(blk, yes)
        a.jmp(self.label(yes))
        a.label(other)
        self._copies(blk, no)
        a.jmp(self.label(no))
