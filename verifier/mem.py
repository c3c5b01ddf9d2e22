"""Pointer arithmetic, every memory access, and what conditional jumps teach about pointers.

The kernel's adjust_reg_min_max_vals / adjust_ptr_min_max_vals (ALU on pointers),
check_mem_access (stack with slot tracking, map values, packets against data_end, ctx, mem,
arena), check_atomic, check_helper_mem_access (for :mod:`.calls`) and check_cond_jmp_op's
pointer side (null checks marking every copy by id, find_good_pkt_pointers). Messages are the
kernel's (Linux 6.18) word for word. Privilege is root's (allow_ptr_leaks, allow_uninit_stack,
bypass_spec_v1/v4), as the oracle runs.
"""
from __future__ import annotations

import errno

from pybpf.uapi import BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG
from . import bounds, dynptr, kptr, precision, spin_lock
from .state import (BPF_REG_SIZE, CONST_PTR_TO_MAP, MAX_BPF_STACK, MEM_ALLOC, MEM_RDONLY, NOT_INIT,
                    PACKET_TYPES, PTR_MAYBE_NULL, PTR_TO_ARENA, PTR_TO_BTF_ID, PTR_TO_BUF,
                    PTR_TO_CTX, PTR_TO_FLOW_KEYS, PTR_TO_FUNC, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE,
                    PTR_TO_MEM, PTR_TO_PACKET, PTR_TO_PACKET_END, PTR_TO_PACKET_META,
                    PTR_TO_SOCK_COMMON, PTR_TO_SOCKET, PTR_TO_STACK, PTR_TO_TCP_SOCK,
                    PTR_TO_XDP_SOCK, PTR_UNTRUSTED, SCALAR_ADD_CONST, MEM_PERCPU,
                    PTR_TO_TP_BUFFER, SCALAR_VALUE, STACK_DYNPTR, STACK_INVALID,
                    STACK_IRQ_FLAG, STACK_ITER, STACK_MISC, STACK_SPILL, STACK_ZERO, Reg, Slot,
                    type_str)

BPF_MAX_VAR_OFF = 1 << 29
MAX_PACKET_OFF = 0xFFFF
S64_MIN = -(1 << 63)
ALU_STR = {"add": "+=", "sub": "-=", "mul": "*=", "div": "/=", "or": "|=", "and": "&=",
           "lsh": "<<=", "rsh": ">>=", "neg": "neg", "mod": "%=", "xor": "^=", "mov": "=",
           "arsh": "s>>=", "end": "endian", "sdiv": "/=", "smod": "%="}

_ARITH_OK = {PTR_TO_CTX, PTR_TO_MAP_VALUE, PTR_TO_MAP_KEY, PTR_TO_STACK, PTR_TO_PACKET_META,
             PTR_TO_PACKET, PTR_TO_TP_BUFFER, PTR_TO_BTF_ID, PTR_TO_MEM, PTR_TO_BUF, PTR_TO_FUNC}


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


# --- ALU ----------------------------------------------------------------------------------------
def adjust_reg(chk, op: str, dst: Reg, src: Reg, is64: bool, insn, src_is_reg: bool) -> Reg:
    """adjust_reg_min_max_vals: the new value of dst after ``dst op= src``."""
    if dst.type == PTR_TO_ARENA:
        return dst                  # any arithmetic is allowed on arena pointers
    if src.type != SCALAR_VALUE:
        if dst.type != SCALAR_VALUE:
            if op == "sub" and is64 or op == "sub":
                return Reg.scalar(None, chk.origin("a pointer difference"))
            chk.error(f"R{insn.dst} pointer {ALU_STR[op]} pointer prohibited")
        if src.type == PTR_TO_ARENA:
            return src.replace() if is64 else Reg.scalar(None, chk.origin("arena arithmetic"))
        chk.mark_precise(insn.dst)          # scalar += pointer: the scalar is the offset
        dst = chk.reg(insn.dst)
        return adjust_ptr(chk, op, src, dst, is64, insn, scalar_is_dst=True)
    if dst.type != SCALAR_VALUE:
        return adjust_ptr(chk, op, dst, src, is64, insn, scalar_is_dst=False,
                          src_is_reg=src_is_reg)
    r = Reg(SCALAR_VALUE, var=bounds.scalar_alu(op, dst.var, src.var, is64),
            origin=dst.origin)
    if op in ("add", "sub") and is64 and dst.id and src.var.is_const():
        # rX += K and rX -= K keep rX linked to its copies, K apart (BPF_ADD_CONST64), once;
        # K is any s32 (negative too), as the running kernel links them. The kernel also
        # links 32-bit adds (BPF_ADD_CONST32, zero-extended on sync); pybpf does not yet,
        # which only costs precision.
        val = src.var.const_value()
        val = val - (1 << 64) if val >= 1 << 63 else val
        off = -val if op == "sub" else val
        if not dst.flags & SCALAR_ADD_CONST and -(1 << 31) <= val < (1 << 31) and \
                off != (1 << 31):
            r.id, r.flags, r.off = dst.id, SCALAR_ADD_CONST, off
    return r


def scalar_id_before_mov(chk, reg: Reg) -> Reg:
    """assign_scalar_id_before_mov: a scalar about to be copied (rX = rY, a spill) shares a
    fresh id with its copy. One linked to another by a constant (rY += K, SCALAR_ADD_CONST)
    leaves that link first: the kernel clears its id and offset, so neither the source nor
    its copy learns from a later compare of the register it was K apart from."""
    if reg.type != SCALAR_VALUE:
        return reg
    if reg.flags & SCALAR_ADD_CONST:
        reg = reg.replace(id=0, off=0, flags=reg.flags & ~SCALAR_ADD_CONST)
    if not reg.id and not reg.var.is_const():
        reg = reg.replace(id=chk.new_id())
    return reg


def adjust_ptr(chk, op: str, ptr: Reg, off: Reg, is64: bool, insn, scalar_is_dst: bool,
               src_is_reg: bool = True) -> Reg:
    """adjust_ptr_min_max_vals: pointer +/- scalar (the kernel's rules for root)."""
    dst = insn.dst
    if src_is_reg and not scalar_is_dst:
        chk.mark_precise(insn.src)          # pointer += scalar: the offset's value matters
    v = off.var
    known = v.is_const()
    if not is64:
        if op == "sub":
            return Reg.scalar(None, chk.origin("32-bit pointer arithmetic"))
        chk.error(f"R{dst} 32-bit pointer arithmetic prohibited")
    if ptr.flags & PTR_MAYBE_NULL:
        chk.error(f"R{dst} pointer arithmetic on {ptr.type_str()} prohibited, "
                  f"null-check it first")
    t = ptr.type
    if t not in _ARITH_OK:
        ok = False
        if t == PTR_TO_FLOW_KEYS and known:
            ok = True
        elif t == CONST_PTR_TO_MAP and known and v.smin == 0 and op == "add":
            ok = True
        if not ok:
            chk.error(f"R{dst} pointer arithmetic on {ptr.type_str()} prohibited")
    if (known and (v.smin != v.smax or v.umin != v.umax)) or v.smin > v.smax or v.umin > v.umax:
        return Reg.scalar(None, chk.origin("an impossible offset"))
    _sane_offset(chk, off, ptr.type)
    _sane_offset(chk, ptr, ptr.type)
    smin = v.smin
    if op == "add":
        if known and ptr.off + smin == _s32(ptr.off + smin) and -(1 << 31) <= ptr.off + smin < (1 << 31):
            res = ptr.replace(off=ptr.off + smin)
        else:
            var = bounds.scalar_alu("add", ptr.var, v, True)
            res = ptr.replace(var=var)
            if t in PACKET_TYPES:
                res = res.replace(id=chk.new_id(), range=0)
    elif op == "sub":
        if scalar_is_dst:
            chk.error(f"R{dst} tried to subtract pointer from scalar")
        if t == PTR_TO_STACK:
            chk.error(f"R{dst} subtraction from stack pointer prohibited")
        if known and -(1 << 31) <= ptr.off - smin < (1 << 31):
            res = ptr.replace(off=ptr.off - smin)
        else:
            var = bounds.scalar_alu("sub", ptr.var, v, True)
            res = ptr.replace(var=var)
            if t in PACKET_TYPES:
                res = res.replace(id=chk.new_id(), range=ptr.range if v.smin >= 0 else 0)
    elif op in ("and", "or", "xor"):
        chk.error(f"R{dst} bitwise operator {ALU_STR[op]} on pointer prohibited")
    else:
        chk.error(f"R{dst} pointer arithmetic with {ALU_STR[op]} operator prohibited")
    _sane_offset(chk, res, ptr.type)
    return res


def _sane_offset(chk, reg: Reg, ptype) -> None:
    """check_reg_sane_offset."""
    tstr = type_str(ptype)
    v = reg.var
    known = v.is_const()
    val = v.smin if known else 0
    if known and (val >= BPF_MAX_VAR_OFF or val <= -BPF_MAX_VAR_OFF):
        chk.error(f"math between {tstr} pointer and {val} is not allowed", errno.EINVAL)
    # a linked scalar's distance to its copies (BPF_ADD_CONST) is not an offset: the kernel
    # keeps it apart from reg->off
    off = reg.off if reg.type != SCALAR_VALUE else 0
    if off >= BPF_MAX_VAR_OFF or off <= -BPF_MAX_VAR_OFF:
        chk.error(f"{tstr} pointer offset {off} is not allowed", errno.EINVAL)
    if v.smin == S64_MIN:
        chk.error(f"math between {tstr} pointer and register with unbounded min value is not "
                  f"allowed", errno.EINVAL)
    if v.smin >= BPF_MAX_VAR_OFF or v.smin <= -BPF_MAX_VAR_OFF:
        chk.error(f"value {v.smin} makes {tstr} pointer be out of bounds", errno.EINVAL)


# --- memory access ------------------------------------------------------------------------------
def check_mem_access(chk, regno: int, off: int, size: int, write: bool, value_regno: int,
                     signed: bool = False, imm: int | None = None, helper: bool = False,
                     strict: bool = False) -> None:
    """check_mem_access: ``size`` bytes at reg + off; a load sets ``value_regno``."""
    reg = chk.reg(regno)
    t, flags = reg.type, reg.flags
    pc = chk.pc
    kind = int(t) if not flags & PTR_MAYBE_NULL else -1
    kinds = chk.access.get(pc)
    if kinds is None or kind not in kinds:
        kinds = frozenset((kind,)) if kinds is None else kinds | {kind}
        chk.access[pc] = chk.shared_facts.setdefault(("access", kinds), kinds)
    if t != PTR_TO_STACK:
        # check_ptr_alignment comes first (strict for atomics: a misaligned scalar or
        # NULL-able pointer is "misaligned access", not an invalid access)
        _check_alignment(chk, reg, off, size, strict)
    if flags & PTR_MAYBE_NULL:
        chk.error(f"R{regno} invalid mem access '{reg.type_str()}'")
    if t == PTR_TO_STACK:
        _stack_access(chk, regno, reg, off, size, write, value_regno, imm, signed)
        return
    off += reg.off
    if t == PTR_TO_MAP_VALUE:
        m = reg.map
        if write and value_regno >= 0 and chk.reg(value_regno).is_pointer:
            pass                                    # root may store pointers into maps
        if write and (m.flags & BPF_F_RDONLY_PROG or reg.flags & MEM_RDONLY):
            chk.error(f"write into map forbidden, value_size={m.value_size} off={off} "
                      f"size={size}")
        if not write and m.flags & BPF_F_WRONLY_PROG:
            chk.error(f"read from map forbidden, value_size={m.value_size} off={off} "
                      f"size={size}")
        _region_access(chk, regno, reg, off, size, m.value_size, "map_value")
        spin_lock.check_field_access(chk, reg, off, size)
        kptr.check_field_access(chk, reg, off, size, helper=False)
        if kptr.check_map_kptr_access(chk, reg, off, write, value_regno, imm, strict):
            return
        _load_result(chk, value_regno, write, size, signed, f"a load from map '{m.name}'")
    elif t == PTR_TO_MAP_KEY:
        if write:
            chk.error(f"write to change key R{regno} not allowed")
        _region_access(chk, regno, reg, off, size, reg.map.key_size, "map_key")
        _load_result(chk, value_regno, write, size, signed, "a map key")
    elif t == PTR_TO_MEM:
        if write and flags & MEM_RDONLY:
            chk.error(f"R{regno} cannot write into {reg.type_str()}")
        _region_access(chk, regno, reg, off, size, reg.mem_size, "mem")
        _load_result(chk, value_regno, write, size, signed, "a load from memory")
    elif t == PTR_TO_CTX:
        _ctx_access(chk, regno, reg, off, size, write, value_regno, signed)
    elif t in PACKET_TYPES:
        if write and not _may_write_packet(chk.prog_type):
            chk.error("cannot write into packet")
        _packet_access(chk, regno, reg, off, size)
        _load_result(chk, value_regno, write, size, signed, "a packet load")
    elif t == PTR_TO_ARENA:
        _load_result(chk, value_regno, write, size, signed, "an arena load")
    elif t == CONST_PTR_TO_MAP:
        from .map_btf import check_ptr_to_map_access
        check_ptr_to_map_access(chk, regno, reg.map, off, size, write)
        _load_result(chk, value_regno, write, size, signed, "a struct bpf_map field")
    elif t == PTR_TO_BTF_ID and flags & (PTR_UNTRUSTED | MEM_PERCPU) and \
            reg.btf_type is not None:
        kptr.check_untrusted_access(chk, regno, reg, off, size, write)
        _load_result(chk, value_regno, write, size, signed, "an untrusted object load")
    elif t == PTR_TO_BTF_ID and flags & MEM_ALLOC:
        from .graph import check_access
        check_access(chk, regno, reg, off, size, write)
        _load_result(chk, value_regno, write, size, signed, "a load from an allocated object")
    elif t == PTR_TO_FLOW_KEYS:
        # (a pointer stored here "leaks addr into flow keys" only for unprivileged loaders)
        from .ctx import SIZEOF_FLOW_KEYS      # check_flow_keys_access
        if off < 0 or off + size > SIZEOF_FLOW_KEYS:
            chk.error(f"invalid access to flow keys off={off} size={size}")
        _load_result(chk, value_regno, write, size, signed, "a flow keys load")
    elif t in (PTR_TO_SOCKET, PTR_TO_SOCK_COMMON):
        if write:
            chk.error(f"R{regno} cannot write into {reg.type_str()}")
        if reg.var.smin < 0:                  # check_sock_access
            chk.error(f"R{regno} min value is negative, either use unsigned index or do a if "
                      f"(index >=0) check.")
        from .ctx import sock_access
        if not sock_access("sock" if t == PTR_TO_SOCKET else "sock_common", off, size):
            chk.error(f"R{regno} invalid {reg.type_str()} access off={off} size={size}")
        _load_result(chk, value_regno, write, size, signed, "a socket field")
    else:
        chk.error(f"R{regno} invalid mem access '{reg.type_str()}'")


def _load_result(chk, value_regno: int, write: bool, size: int, signed: bool, what: str):
    if write or value_regno < 0:
        return
    chk.set_reg(value_regno, Reg.scalar(bounds.load_result(size, signed), chk.origin(what)))


_ALIGN_DESC = {PTR_TO_MAP_VALUE: "value ", PTR_TO_MAP_KEY: "key ", PTR_TO_CTX: "context ",
               PTR_TO_STACK: "stack ", PTR_TO_FLOW_KEYS: "flow keys "}


def _tnum_short(v) -> str:
    return str(v.smin) if v.is_const() else str(v.var_off)


def _check_alignment(chk, reg: Reg, off: int, size: int, strict: bool = False) -> None:
    """check_ptr_alignment: x86 is strict only for the stack and for atomics."""
    if not strict or size == 1:
        return
    v = reg.var
    if reg.type in PACKET_TYPES:
        # check_pkt_ptr_alignment: NET_IP_ALIGN (2) in front of the packet
        if v.tm & (size - 1) or (v.tv + 2 + reg.off + off) & (size - 1):
            chk.error(f"misaligned packet access off 2+{_tnum_short(v)}+{reg.off}+{off} "
                      f"size {size}")
        return
    if v.tm & (size - 1) or (v.tv + reg.off + off) & (size - 1):       # var_off, raw
        desc = '' if reg.flags & PTR_MAYBE_NULL else _ALIGN_DESC.get(reg.type, '')
        chk.error(f"misaligned {desc}access off "
                  f"{_tnum_short(v)}+{reg.off}+{off} size {size}")


def _region_access(chk, regno: int, reg: Reg, off: int, size: int, mem_size: int,
                   kind: str, zero_ok: bool = False) -> None:
    """check_mem_region_access: fixed ``off`` plus the register's variable bounds."""
    v = reg.var
    if v.smin < 0 and (v.smin == S64_MIN or off + v.smin != _s32(off + v.smin)
                       or v.smin + off < 0):
        chk.error(f"R{regno} min value is negative, either use unsigned index or do a if "
                  f"(index >=0) check.")
    if not _mem_ok(v.smin + off, size, mem_size, zero_ok):
        _bad_mem(chk, regno, reg, v.smin + off, size, mem_size, kind)
        chk.error(f"R{regno} min value is outside of the allowed memory range")
    if v.umax >= BPF_MAX_VAR_OFF:
        chk.error(f"R{regno} unbounded memory access, make sure to bounds check any such "
                  f"access")
    if not _mem_ok(v.umax + off, size, mem_size, zero_ok):
        _bad_mem(chk, regno, reg, v.umax + off, size, mem_size, kind)
        chk.error(f"R{regno} max value is outside of the allowed memory range")


def _mem_ok(off: int, size: int, mem_size: int, zero_ok: bool) -> bool:
    size_ok = size > 0 or (size == 0 and zero_ok)
    return off >= 0 and size_ok and off + size <= mem_size


def _bad_mem(chk, regno, reg, off, size, mem_size, kind) -> None:
    """__check_mem_access's message; raised at once for a constant offset."""
    if kind == "map_value":
        msg = f"invalid access to map value, value_size={mem_size} off={off} size={size}"
    elif kind == "map_key":
        msg = f"invalid access to map key, key_size={mem_size} off={off} size={size}"
    elif kind == "packet":
        msg = (f"invalid access to packet, off={off} size={size}, "
               f"R{regno}(id={reg.id},off={off},r={mem_size})")
    else:
        msg = f"invalid access to memory, mem_size={mem_size} off={off} size={size}"
    chk.log.line(msg)


def _packet_access(chk, regno: int, reg: Reg, off: int, size: int,
                   zero_ok: bool = False) -> None:
    """check_packet_access: the fixed offset against the range proven by data_end compares."""
    if reg.var.smin < 0:
        chk.error(f"R{regno} min value is negative, either use unsigned index or do a if "
                  f"(index >=0) check.")
    if reg.range < 0 or not _mem_ok(off, size, reg.range, zero_ok):
        _bad_mem(chk, regno, reg, off, size, reg.range, "packet")
        chk.error(f"R{regno} offset is outside of the packet")
    chk.max_pkt_offset = max(chk.max_pkt_offset, off + reg.var.umax + size - 1)


def _may_write_packet(prog_type: str) -> bool:
    """may_access_direct_pkt_data for BPF_WRITE."""
    return prog_type in ("sched_cls", "xdp", "lwt_xmit", "sk_skb", "sk_msg")


def _ctx_access(chk, regno, reg, off, size, write, value_regno, signed) -> None:
    """check_ctx_access (after check_ptr_off_reg), rules from :mod:`.ctx` (CALLS)."""
    if chk.prog_type == "mem":
        # pybpf's mem type (and syscall): r1 is the memory; constant or bounded offsets
        v = reg.var
        lo, hi = v.smin + off, v.umax + off
        if v.smin < 0 or lo < 0 or hi + size > 0xFFFF or (v.is_const() and lo % size):
            if v.is_const():
                chk.error(f"invalid bpf_context access off={lo} size={size}")
            chk.error(f"R{regno} unbounded memory access, make sure to bounds check any such "
                      f"access")
        chk.max_ctx_offset = max(chk.max_ctx_offset, hi + size)
        _load_result(chk, value_regno, write, size, signed, "a load from the mem buffer")
        return
    if reg.off < 0:
        chk.error(f"negative offset ctx ptr R{regno} off={reg.off} disallowed")
    if reg.off:
        chk.error(f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
    if not reg.var.is_const() or reg.var.const_value():
        chk.error(f"variable ctx access var_off={reg.var.var_off} disallowed")
    res = ctx_field(chk, off, size, write, signed)
    if res is None:
        chk.error(f"invalid bpf_context access off={off} size={size}")
    chk.max_ctx_offset = max(chk.max_ctx_offset, off + size)
    chk.min_ctx_offset = min(chk.min_ctx_offset, off)      # a read before a tracepoint record
    rtype, rflags = res
    if not write and value_regno >= 0:
        if rtype == SCALAR_VALUE:
            _load_result(chk, value_regno, False, size, signed, "a context field")
        else:
            names = {PTR_TO_PACKET: "ctx->data", PTR_TO_PACKET_END: "ctx->data_end",
                     PTR_TO_PACKET_META: "ctx->data_meta"}
            r = Reg.pointer(rtype, rflags, origin=chk.origin(names.get(rtype, "ctx")))
            if rflags & PTR_MAYBE_NULL:
                r = r.replace(id=chk.new_id())
            chk.set_reg(value_regno, r)


def ctx_field(chk, off: int, size: int, write: bool, signed: bool = False):
    """(type, flags) a ctx access yields, None if the program type refuses it (:mod:`.ctx`)."""
    from . import ctx as ctxmod
    try:
        res = ctxmod.ctx_access(chk.prog_type, off, size, write, sign_ext=signed,
                                attach_type=chk.attach_type)
    except KeyError:
        return None
    if not res.ok:
        return None
    return res.type, res.flags


# --- the stack ----------------------------------------------------------------------------------
def _stack_frame(chk, reg: Reg):
    return chk.state.frames[reg.frameno]


def _stack_access(chk, regno, reg, off, size, write, value_regno, imm, signed,
                  helper: bool = False) -> None:
    """check_stack_access_within_bounds + the fixed/variable-offset read and write paths."""
    v = reg.var
    # check_ptr_alignment: stack accesses must be aligned (spill tracking relies on it)
    if not helper:
        _check_alignment(chk, reg, off, size, True)
    min_off, max_off = _stack_bounds(chk, regno, reg, off, size, write)
    frame = _stack_frame(chk, reg)
    _grow(chk, frame, -min_off)
    if helper:
        return
    if write:
        if v.is_const():
            _stack_write_fixed(chk, frame, min_off, size, value_regno, imm)
        else:
            _stack_write_var(chk, frame, min_off, max_off, value_regno, imm)
    else:
        if v.is_const():
            _stack_read_fixed(chk, frame, min_off, size, value_regno, signed)
        else:
            _stack_read_var(chk, frame, min_off, max_off, value_regno)


def _stack_bounds(chk, regno, reg, off, size, write) -> tuple[int, int]:
    """check_stack_access_within_bounds: (min_off, max_off) of the access, or the refusal."""
    v = reg.var
    full = off + reg.off
    extra = " write to" if write else " read from"
    if v.is_const():
        min_off = v.smin + full
        max_off = min_off + size
    else:
        if v.smax >= BPF_MAX_VAR_OFF or v.smin <= -BPF_MAX_VAR_OFF:
            chk.error(f"invalid unbounded variable-offset{extra} stack R{regno}")
        min_off = v.smin + full
        max_off = v.smax + full + size
    if min_off < -MAX_BPF_STACK or min_off > -1 or max_off > 0:
        if v.is_const():
            chk.error(f"invalid{extra} stack R{regno} off={min_off} size={size}")
        chk.error(f"invalid variable-offset{extra} stack R{regno} var_off={v.var_off} "
                  f"off={full} size={size}")
    return min_off, max_off


def _grow(chk, frame, depth: int) -> None:
    """update_stack_depth for the frame's subprogram."""
    start = chk.subprog_starts[frame.subprogno] if frame.subprogno < len(
        chk.subprog_starts) else 0
    if depth > chk.stack_depth.get(start, 0):
        chk.stack_depth[start] = depth
    if depth > frame.allocated_stack:
        frame.allocated_stack = depth


def _slot_bytes(off: int, size: int):
    """(spi, byte index in slot_type) for each byte of [off, off + size), kernel indexing."""
    for i in range(size):
        a = off + i
        slot = -a - 1
        yield slot // BPF_REG_SIZE, slot % BPF_REG_SIZE


def _set_types(frame, spi: int, types: str, spilled) -> None:
    frame.stack[spi] = Slot(types, spilled)


def _stack_write_fixed(chk, frame, off: int, size: int, value_regno: int, imm) -> None:
    """check_stack_write_fixed_off."""
    spi = (-off - 1) // BPF_REG_SIZE
    dynptr.destroy_if_dynptr_stack_slot(chk, frame, spi)
    slot = frame.stack.get(spi) or Slot()
    reg = chk.reg(value_regno) if value_regno >= 0 else None
    aligned8 = off % BPF_REG_SIZE == 0
    cur_frame = chk.state.cur
    if reg is not None and aligned8 and reg.type == SCALAR_VALUE:
        fits = _reg_width(reg) <= 8 * size
        if fits:
            linked = scalar_id_before_mov(chk, reg)     # link the spill with the register
            if linked is not reg:
                reg = linked
                chk.set_reg(value_regno, reg)
        _save_spill(frame, spi, slot, reg if fits else reg.replace(id=0), size)
        precision.push_flags(chk, stack=(frame.frameno, spi))       # a spill: backtrackable
    elif reg is None and aligned8 and imm is not None:
        _save_spill(frame, spi, slot, Reg.scalar(imm & ((1 << 64) - 1)), size)
        precision.push_flags(chk, stack=(frame.frameno, spi))
    elif reg is not None and reg.is_pointer:
        if size != BPF_REG_SIZE:
            chk.error("invalid size of register spill")
        if frame is not cur_frame and reg.type == PTR_TO_STACK:
            chk.error("cannot spill pointers to stack into stack frame of the caller",
                      errno.EINVAL)
        _save_spill(frame, spi, slot, reg, size)
        precision.push_flags(chk, stack=(frame.frameno, spi))
    else:
        zero = (reg is not None and reg.is_const() and reg.const_value() == 0) or \
            (reg is None and imm == 0)
        if zero and reg is not None:
            # STACK_ZERO rests on the register being 0: it must stay 0 in pruned states
            chk.mark_precise(value_regno)
        new = STACK_ZERO if zero else STACK_MISC
        types = list(slot.types)
        if any(c in "rdif" for c in types):       # scrub a spilled reg / special slot
            types = [STACK_MISC if c in "rdif" else c for c in types]
        for s, idx in _slot_bytes(off, size):
            types[idx] = new
        _set_types(frame, spi, "".join(types), None)


def _reg_width(reg: Reg) -> int:
    """get_reg_width: bits needed for the scalar's unsigned maximum."""
    return max(reg.var.umax.bit_length(), 0)


def _save_spill(frame, spi: int, slot: Slot, reg: Reg, size: int) -> None:
    """save_register_state: the top ``size`` kernel indexes become STACK_SPILL."""
    types = list(slot.types)
    for i in range(BPF_REG_SIZE, BPF_REG_SIZE - size, -1):
        types[i - 1] = STACK_SPILL
    for i in range(BPF_REG_SIZE - size, 0, -1):
        c = types[i - 1]
        if c == STACK_ZERO or c == STACK_INVALID:     # mark_stack_slot_misc (root)
            continue
        types[i - 1] = STACK_MISC
    frame.stack[spi] = Slot("".join(types), reg)


def _stack_write_var(chk, frame, min_off: int, max_off: int, value_regno: int, imm) -> None:
    """check_stack_write_var_off: every byte in range becomes MISC (or stays ZERO for zero)."""
    reg = chk.reg(value_regno) if value_regno >= 0 else None
    zero = (reg is not None and reg.is_const() and reg.const_value() == 0) or \
        (reg is None and imm == 0)
    if zero and reg is not None:
        chk.mark_precise(value_regno)        # ZERO bytes rest on the register being 0
    touched: dict[int, list] = {}
    for spi, idx in _slot_bytes(min_off, max_off - min_off):
        if spi not in touched:
            dynptr.destroy_if_dynptr_stack_slot(chk, frame, spi)
            touched[spi] = list((frame.stack.get(spi) or Slot()).types)
        c = touched[spi][idx]
        touched[spi][idx] = STACK_ZERO if zero and c == STACK_ZERO else STACK_MISC
    for spi, types in touched.items():
        old = frame.stack.get(spi)
        if old is not None and old.spilled is not None:
            types = [STACK_MISC if c == STACK_SPILL else c for c in types]
        frame.stack[spi] = Slot("".join(types), None)


def _stack_read_fixed(chk, frame, off: int, size: int, value_regno: int, signed: bool) -> None:
    """check_stack_read_fixed_off."""
    spi = (-off - 1) // BPF_REG_SIZE
    slot = frame.stack.get(spi) or Slot()
    stype = slot.types
    if slot.spilled is not None and stype[BPF_REG_SIZE - 1] == STACK_SPILL:
        reg = slot.spilled
        spill_size = 1
        i = BPF_REG_SIZE - 1
        while i > 0 and stype[i - 1] == STACK_SPILL:
            spill_size += 1
            i -= 1
        if size != BPF_REG_SIZE or spill_size != BPF_REG_SIZE:
            if reg.type != SCALAR_VALUE:
                chk.error("invalid size of register fill")
            if value_regno < 0:
                return
            if size <= spill_size and off % BPF_REG_SIZE == 0:
                if _reg_width(reg) <= 8 * size and not signed:
                    chk.set_reg(value_regno, reg.replace(id=0))
                else:
                    # copy_register_state, then check_mem_access's coerce_reg_to_size(_sx):
                    # the low bytes keep what the spilled register knew about them (its
                    # 32-bit bounds for a 4-byte fill)
                    var = bounds.coerce_sx(reg.var, size) if signed else \
                        bounds.coerce(reg.var, size)
                    chk.set_reg(value_regno, reg.replace(id=0, var=var))
                precision.push_flags(chk, stack=(frame.frameno, spi))    # a fill, both ways
            else:
                spill_cnt = zero_cnt = 0
                for s, idx in _slot_bytes(off, size):
                    c = stype[idx]
                    if c == STACK_SPILL:
                        spill_cnt += 1
                    elif c == STACK_ZERO:
                        zero_cnt += 1
                if (spill_cnt == size and reg.is_const() and reg.const_value() == 0) or \
                        zero_cnt == size:
                    chk.set_reg(value_regno, Reg.scalar(0, chk.origin("a zeroed stack slot")))
                    if zero_cnt != size:        # the 0 came from the spilled register
                        precision.push_flags(chk, stack=(frame.frameno, spi))
                else:
                    _load_result(chk, value_regno, False, size, signed, "a stack read")
            return
        if value_regno >= 0:
            chk.set_reg(value_regno, reg)
        precision.push_flags(chk, stack=(frame.frameno, spi))            # a fill
        return
    for i in range(size):
        # iterator, dynptr and irq-flag bytes are the kernel's objects, never program data
        c = stype[(-off - 1 - i) % BPF_REG_SIZE]
        if c in "dif":
            chk.error(f"invalid read from stack off {off}+{i} size {size}")
    if value_regno < 0:
        return
    zero = all(stype[idx] == STACK_ZERO for _, idx in _slot_bytes(off, size))
    if zero:
        chk.set_reg(value_regno, Reg.scalar(0, chk.origin("a zeroed stack slot")))
    else:
        _load_result(chk, value_regno, False, size, signed, "a stack read")


def _stack_read_var(chk, frame, min_off: int, max_off: int, value_regno: int) -> None:
    """check_stack_read_var_off: the result is unknown (zero if every byte is zero)."""
    zero = True
    for spi, idx in _slot_bytes(min_off, max_off - min_off):
        slot = frame.stack.get(spi) or Slot()
        c = slot.types[idx]
        if c != STACK_ZERO:
            zero = False
            if c == STACK_SPILL and slot.spilled is not None and \
                    slot.spilled.type != SCALAR_VALUE:
                pass     # root: a pointer read through a variable offset becomes a scalar
    if value_regno >= 0:
        if zero:
            chk.set_reg(value_regno, Reg.scalar(0, chk.origin("a zeroed stack range")))
        else:
            chk.mark_unknown(value_regno, "a variable-offset stack read")


# --- atomics ------------------------------------------------------------------------------------
# atomic_ptr_type_ok: ctx, packet, flow keys and socket pointers take no atomic access
_NO_ATOMICS = frozenset({PTR_TO_CTX, PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_FLOW_KEYS,
                         PTR_TO_SOCKET, PTR_TO_SOCK_COMMON, PTR_TO_TCP_SOCK, PTR_TO_XDP_SOCK})


def check_atomic(chk, form, insn) -> None:
    """check_atomic: load-acquire/store-release, RMW ops, xchg and cmpxchg."""
    op, size = form.op, form.size
    if op == "load_acq":
        # check_atomic_load: atomic_ptr_type_ok before the access (measured on 6.18)
        s = chk.check_reg_read(insn.src)
        chk.check_reg_write(insn.dst)
        if s.type in _NO_ATOMICS:
            chk.error(f"BPF_ATOMIC loads from R{insn.src} {s.type_str()} is not allowed")
        check_mem_access(chk, insn.src, insn.off, size, False, insn.dst, strict=True)
        return
    if op == "store_rel":
        # check_atomic_store: the (strictly aligned) store first, then atomic_ptr_type_ok
        chk.check_reg_read(insn.src)
        d = chk.check_reg_read(insn.dst)
        check_mem_access(chk, insn.dst, insn.off, size, True, insn.src, strict=True)
        if d.type in _NO_ATOMICS:
            chk.error(f"BPF_ATOMIC stores into R{insn.dst} {d.type_str()} is not allowed")
        return
    src = chk.check_reg_read(insn.src)
    dst = chk.check_reg_read(insn.dst)
    if op == "cmpxchg":
        chk.check_reg_read(0)
    if dst.type not in (PTR_TO_STACK, PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_ARENA) or \
            dst.flags & (PTR_MAYBE_NULL | MEM_RDONLY):
        if dst.type in _NO_ATOMICS:             # atomic_ptr_type_ok
            chk.error(f"BPF_ATOMIC stores into R{insn.dst} {dst.type_str()} is not allowed")
        if dst.flags & PTR_MAYBE_NULL or dst.type not in (PTR_TO_STACK, PTR_TO_MAP_VALUE,
                                                           PTR_TO_MEM, PTR_TO_ARENA,
                                                           CONST_PTR_TO_MAP):
            # check_mem_access checks the (strict) alignment before the pointer's type
            _check_alignment(chk, dst, insn.off, size, True)
            chk.error(f"R{insn.dst} invalid mem access '{dst.type_str()}'")
    fetch = op.startswith("fetch_") or op in ("xchg", "cmpxchg")
    load_reg = (0 if op == "cmpxchg" else insn.src) if fetch else -1
    if load_reg >= 0:
        # check_reg_arg(load_reg, DST_OP): the old value may not land in r10 (an xchg into
        # w10 would move the frame pointer the verifier still trusts)
        chk.check_reg_write(load_reg)
    # read (into the fetch register: the memory's old value) then write, as the kernel does
    check_mem_access(chk, insn.dst, insn.off, size, False, -1, strict=True)
    if load_reg >= 0:
        check_mem_access(chk, insn.dst, insn.off, size, False, load_reg, strict=True)
    check_mem_access(chk, insn.dst, insn.off, size, True, -1, strict=True)


# --- helper memory arguments (for calls.py) --------------------------------------------------
def check_helper_mem_access(chk, regno: int, size: int, write: bool,
                            zero_size_allowed: bool = False) -> None:
    """check_helper_mem_access: [reg, reg + size) must be valid memory of the right kind."""
    reg = chk.reg(regno)
    t = reg.type
    # A zero size is checked like any other (the kernel has no early return: an offset past
    # the packet's proven range or past the value is refused even for 0 bytes). A nullable
    # pointer (map_value_or_null for an ARG_PTR_TO_MEM | PTR_MAYBE_NULL argument) is checked
    # as its base type, as the kernel switches on base_type(reg->type); non-nullable
    # arguments refused it in check_reg_type already.
    if t in PACKET_TYPES:
        if write and not _may_write_packet(chk.prog_type):
            chk.error("cannot write into packet")
        _packet_access(chk, regno, reg, reg.off, size, zero_size_allowed)
    elif t == PTR_TO_MAP_KEY:
        # zero_size_allowed false, as the kernel passes it for keys
        _region_access(chk, regno, reg, reg.off, size, reg.map.key_size, "map_key", False)
    elif t == PTR_TO_MAP_VALUE:
        if write and reg.map.flags & BPF_F_RDONLY_PROG:
            chk.error(f"write into map forbidden, value_size={reg.map.value_size} "
                      f"off={reg.off} size={size}")
        _region_access(chk, regno, reg, reg.off, size, reg.map.value_size, "map_value",
                       zero_size_allowed)
        spin_lock.check_field_access(chk, reg, reg.off, size)
        kptr.check_field_access(chk, reg, reg.off, size, helper=True)
    elif t == PTR_TO_MEM:
        if write and reg.flags & MEM_RDONLY:
            chk.error(f"R{regno} cannot write into {reg.type_str()}")
        _region_access(chk, regno, reg, reg.off, size, reg.mem_size, "mem", zero_size_allowed)
    elif t == PTR_TO_CTX and chk.prog_type in ("mem", "syscall"):
        if size == 0 and zero_size_allowed:     # "Allow zero-byte read from PTR_TO_CTX"
            return
        # no convert_ctx_access: the kernel checks the last byte (check_mem_access, BPF_B)
        _ctx_access(chk, regno, reg, size - 1, 1, write, -1, False)
    elif t == PTR_TO_STACK:
        if size == 0 and zero_size_allowed:
            # check_stack_range_initialized checks the bounds before its zero-size return
            _stack_bounds(chk, regno, reg, 0, 0, write)
            return
        if size == 0:           # check_stack_range_initialized (a ringbuf's zero key_size)
            chk.error("invalid zero-sized read")
        _stack_access(chk, regno, reg, 0, size, write, -1, None, False, helper=True)
        _helper_stack_objects(chk, regno, reg, size, write)
        _helper_stack_effect(chk, reg, size, write)
    elif t == PTR_TO_ARENA:
        return
    else:
        if size == 0 and zero_size_allowed and reg.type == SCALAR_VALUE and reg.is_const() \
                and reg.const_value() == 0:
            return              # "Allow zero-byte read from NULL, regardless of pointer type"
        chk.error(f"R{regno} type={reg.type_str()} expected=fp, pkt, pkt_meta, map_key, "
                  f"map_value, mem, ringbuf_mem, buf, trusted_ptr_")


def _helper_stack_objects(chk, regno: int, reg: Reg, size: int, write: bool) -> None:
    """check_stack_range_initialized's refusals for root: a helper that writes raw memory
    (``write``: MEM_UNINIT) may not overlap a dynptr, and one that reads may not read dynptr,
    iterator or irq-flag bytes (the kernel's objects: a forged dynptr would be a pointer)."""
    v = reg.var
    lo = v.smin + reg.off
    frame = _stack_frame(chk, reg)
    const = v.is_const()
    for i in range(lo, v.smax + reg.off + size):
        spi, idx = next(_slot_bytes(i, 1))
        slot = frame.stack.get(spi)
        c = slot.types[idx] if slot is not None else STACK_INVALID
        if write:
            if c == STACK_DYNPTR:
                chk.error(f"potential write to dynptr at off={i} disallowed")
        elif c in (STACK_DYNPTR, STACK_ITER, STACK_IRQ_FLAG):
            where = f"off {lo}" if const else f"var_off {v.var_off}"
            chk.error(f"invalid read from stack R{regno} {where}+{i - lo} size {size}")


def _helper_stack_effect(chk, reg: Reg, size: int, write: bool) -> None:
    """check_stack_range_initialized: a helper that writes the range leaves MISC bytes
    (spilled registers there are destroyed); reads of uninit bytes are fine for root."""
    if not write or size <= 0:
        return
    v = reg.var
    lo = v.smin + reg.off
    hi = v.smax + reg.off + size
    frame = _stack_frame(chk, reg)
    touched: dict[int, list] = {}
    for spi, idx in _slot_bytes(lo, hi - lo):
        if spi not in touched:
            touched[spi] = list((frame.stack.get(spi) or Slot()).types)
        touched[spi][idx] = STACK_MISC
    for spi, types in touched.items():
        old = frame.stack.get(spi)
        if old is not None and old.spilled is not None:
            types = [STACK_MISC if c == STACK_SPILL else c for c in types]
        frame.stack[spi] = Slot("".join(types), None)


def check_mem_size_reg(chk, mem_regno: int, size_regno: int, write: bool,
                       zero_size_allowed: bool) -> None:
    """check_mem_size_reg: ARG_CONST_SIZE[_OR_ZERO] after a memory argument."""
    size = chk.check_reg_read(size_regno)
    if size.type != SCALAR_VALUE:
        chk.error(f"R{size_regno} type={size.type_str()} expected=scalar")
    v = size.var
    if v.smin < 0:
        chk.error(f"R{size_regno} min value is negative, either use unsigned or 'var &= const'")
    if v.umin == 0 and not zero_size_allowed:
        chk.error(f"R{size_regno} invalid zero-sized read: u64=[{v.umin},{v.umax}]")
    if v.umax >= BPF_MAX_VAR_OFF:
        chk.error(f"R{size_regno} unbounded memory access, use 'var &= const' or 'if (var < "
                  f"const)'")
    check_helper_mem_access(chk, mem_regno, v.umax, write, zero_size_allowed and v.umax == 0)
    chk.mark_precise(size_regno)


# --- conditional jumps --------------------------------------------------------------------------
_FLIP = {"jeq": "jeq", "jne": "jne", "jset": "jset", "jgt": "jlt", "jlt": "jgt", "jge": "jle",
         "jle": "jge", "jsgt": "jslt", "jslt": "jsgt", "jsge": "jsle", "jsle": "jsge"}


def _not_null(r: Reg) -> bool:
    """reg_not_null: the pointer types a comparison with 0 can decide."""
    return not r.flags & PTR_MAYBE_NULL and r.type in _NOT_NULL_TYPES


_NOT_NULL_TYPES = {PTR_TO_MAP_VALUE, PTR_TO_MAP_KEY, PTR_TO_MEM, CONST_PTR_TO_MAP,
                   PTR_TO_SOCKET, PTR_TO_SOCK_COMMON, PTR_TO_TCP_SOCK}


def _branch_taken(dst: Reg, src: Reg, op: str, is32: bool) -> int:
    """is_branch_taken."""
    if dst.type in (PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_PACKET_END) and \
            src.type in (PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_PACKET_END) and not is32:
        return -1
    if dst.is_pointer or src.is_pointer:
        if is32:
            # the low 32 bits of a valid pointer can be 0: Linux 6.18 decides no 32-bit compare
            # of a pointer (measured: 'if w0 != 0' after a NULL check explores both branches)
            return -1
        r1, r2 = dst, src
        if not (r2.type == SCALAR_VALUE and r2.var.is_const()):
            op = _FLIP[op]
            r1, r2 = r2, r1
        if not (r2.type == SCALAR_VALUE and r2.var.is_const()):
            return -1
        if not _not_null(r1):
            return -1
        val = r2.var.const_value() & (0xFFFFFFFF if is32 else (1 << 64) - 1)
        if val != 0:
            return -1
        return {"jeq": 0, "jne": 1}.get(op, -1)
    return bounds.is_branch_taken(op, dst.var, src.var, is32)


def check_cond_jmp(chk, pc: int, form, insn) -> int:
    """check_cond_jmp_op: decide or split the path; returns the pc to continue at."""
    op, is32 = form.op, form.width == 32
    dst = chk.check_reg_read(insn.dst)
    if form.source == "X":
        src = chk.check_reg_read(insn.src)
        src_regno = insn.src
    else:
        imm = insn.imm & (0xFFFFFFFF if is32 else (1 << 64) - 1)
        src = Reg.scalar(imm)
        src_regno = -1
    target = pc + 1 + insn.off
    pred = _branch_taken(dst, src, op, is32)
    st = chk.state
    if pred >= 0:
        # the bounds decided the branch: they must hold on every state pruned against this
        # path's checkpoints (mark_chain_precision of both operands that are scalars)
        if dst.type == SCALAR_VALUE:
            chk.mark_precise(insn.dst)
        if src_regno >= 0 and src.type == SCALAR_VALUE:
            chk.mark_precise(src_regno)
    if pred == 1:
        st.branch_path = (pc, True, st.branch_path)
        return target
    if pred == 0:
        st.branch_path = (pc, False, st.branch_path)
        return pc + 1
    _push_linked_regs(chk, pc, dst, src, src_regno)
    other = st.copy()                       # the jump-taken state (the kernel's other_branch)
    other.insn_idx = pc
    other.branch_path = (pc, True, st.branch_path)
    st.branch_path = (pc, False, st.branch_path)
    this_possible = other_possible = True
    if dst.type == SCALAR_VALUE and src.type == SCALAR_VALUE:
        (a_t, b_t), (a_f, b_f) = bounds.refine(op, dst.var, src.var, is32)
        if a_t is None or b_t is None:
            other_possible = False
        else:
            _set_scalar(other, insn.dst, a_t)
            if src_regno >= 0:
                _set_scalar(other, src_regno, b_t)
        if a_f is None or b_f is None:
            this_possible = False
        else:
            _set_scalar(st, insn.dst, a_f)
            if src_regno >= 0:
                _set_scalar(st, src_regno, b_f)
    # null checks: "if rX == 0" / "!= 0" (BPF_K, immediate 0 only) on a maybe-null pointer
    # marks every copy (by id). A register holding 0 is not a null check for the kernel
    # (if r9 != r2 with r2 = 0 leaves r9 map_value_or_null on both sides).
    if not is32 and op in ("jeq", "jne"):
        if src_regno < 0 and dst.flags & PTR_MAYBE_NULL and src.var.is_const() \
                and src.var.const_value() == 0:
            mark_ptr_or_null(st, dst.id, is_null=(op == "jne"))
            mark_ptr_or_null(other, dst.id, is_null=(op == "jeq"))
        elif src_regno >= 0 and dst.is_pointer and src.is_pointer and \
                bool(dst.flags & PTR_MAYBE_NULL) != bool(src.flags & PTR_MAYBE_NULL) and \
                dst.type == src.type and dst.type != PTR_TO_BTF_ID:
            # equal to a non-null pointer: not null on the "equal" side. Only the compared
            # register itself (mark_ptr_not_null_reg, not its copies), and only against a
            # pointer of the same type: the running kernel keeps map_value_or_null compared
            # with ctx, fp or pkt (measured), and never lifts PTR_TO_BTF_ID
            regno = src_regno if src.flags & PTR_MAYBE_NULL else insn.dst
            _mark_one_not_null(other if op == "jeq" else st, regno)
    if src_regno >= 0 and not is32:
        _match_pkt_pointers(chk, op, dst, src, st, other)
    if not other_possible and not this_possible:
        return pc + 1
    if not other_possible:
        return pc + 1
    if not this_possible:
        chk.state = other
        return target
    chk.push_branch(other, target)
    return pc + 1


def _push_linked_regs(chk, pc: int, dst: Reg, src: Reg, src_regno: int) -> None:
    """collect_linked_regs: the scalars sharing an id with an operand are refined together by
    this jump, so they need precision together (recorded in the jump history, before the
    branch is copied so both sides share the record)."""
    ids = set()
    if src_regno >= 0 and src.type == SCALAR_VALUE and src.id:
        ids.add(src.id)
    if dst.type == SCALAR_VALUE and dst.id:
        ids.add(dst.id)
    if not ids:
        return
    linked = []
    for f in chk.state.frames:
        for i, r in enumerate(f.regs):
            if r.type == SCALAR_VALUE and r.id in ids:
                linked.append((f.frameno, True, i))
        for spi, slot in f.stack.items():
            sp = slot.spilled
            if sp is not None and getattr(sp, "type", None) == SCALAR_VALUE and sp.id in ids:
                linked.append((f.frameno, False, spi))
    if len(linked) > 1:
        precision.push_flags(chk, linked=tuple(linked))


def _set_scalar(state, regno: int, var) -> None:
    """Store a refined scalar, and give every scalar linked to it by id the same bounds, or
    the bounds shifted by their constant distance (sync_linked_regs)."""
    r = state.cur.regs[regno]
    known = r.replace(var=var)
    state.cur.regs[regno] = known
    if not r.id:
        return
    rid, kadd, koff = r.id, known.flags & SCALAR_ADD_CONST, known.off

    def fix(x: Reg):
        if x.id != rid or x.type != SCALAR_VALUE or x is known:
            return None
        xadd = x.flags & SCALAR_ADD_CONST
        if (not xadd and not kadd) or x.off == koff:
            return x.replace(var=var) if x.var is not var else None
        delta = bounds.Scalar.const(((x.off if xadd else 0) - (koff if kadd else 0))
                                    & ((1 << 64) - 1))
        return x.replace(var=bounds.scalar_alu("add", var, delta, True))
    state.map_regs(fix)


def _mark_one_not_null(state, regno: int) -> None:
    """mark_ptr_not_null_reg: one register's pointer is not NULL (its id and copies stay)."""
    r = state.cur.regs[regno]
    if r.type == PTR_TO_MAP_VALUE and r.map is not None and \
            getattr(r.map, "inner", None) is not None:
        state.cur.regs[regno] = Reg.pointer(CONST_PTR_TO_MAP, map=r.map.inner, origin=r.origin)
        return
    state.cur.regs[regno] = r.replace(flags=r.flags & ~PTR_MAYBE_NULL)


def mark_ptr_or_null(state, ptr_id: int, is_null: bool) -> None:
    """mark_ptr_or_null_regs: every register and spill with this id becomes NULL (a scalar 0)
    or the non-null pointer type."""
    if not ptr_id:
        return

    def fix(r: Reg):
        if r.id != ptr_id or not r.flags & PTR_MAYBE_NULL:
            return None
        if is_null:
            return Reg.scalar(0, r.origin)
        if r.type == PTR_TO_MAP_VALUE and r.map is not None and \
                getattr(r.map, "inner", None) is not None:
            # a map-in-map lookup: the value is the inner map (inner_map_meta)
            return Reg.pointer(CONST_PTR_TO_MAP, map=r.map.inner, origin=r.origin)
        # reg_may_point_to_spin_lock: a map value whose map has a lock, or an allocated object
        # with its own lock, keeps its id, which names the lock held (verifier/spin_lock.py)
        keep = spin_lock.may_point_to_spin_lock(r)
        return r.replace(flags=r.flags & ~PTR_MAYBE_NULL, id=r.id if keep else 0)
    state.map_regs(fix)
    if is_null:
        state.refs.pop(ptr_id, None)


def _init_pkt(r: Reg, t) -> bool:
    return r.type == t and r.off == 0 and r.var.is_const() and r.var.const_value() == 0


def _match_pkt_pointers(chk, op: str, dst: Reg, src: Reg, this, other) -> None:
    """try_match_pkt_pointers: learn packet ranges from comparisons with data_end."""
    P, E, M = PTR_TO_PACKET, PTR_TO_PACKET_END, PTR_TO_PACKET_META
    left = (dst.type == P and src.type == E) or (dst.type == M and _init_pkt(src, P))
    right = (dst.type == E and src.type == P) or (_init_pkt(dst, P) and src.type == M)
    if op == "jgt":
        if left:
            _good_pkt(this, dst, False)
        elif right:
            _good_pkt(other, src, True)
    elif op == "jlt":
        if left:
            _good_pkt(other, dst, True)
        elif right:
            _good_pkt(this, src, False)
    elif op == "jge":
        if left:
            _good_pkt(this, dst, True)
        elif right:
            _good_pkt(other, src, False)
    elif op == "jle":
        if left:
            _good_pkt(other, dst, False)
        elif right:
            _good_pkt(this, src, True)


def _good_pkt(state, reg: Reg, right_open: bool) -> None:
    """find_good_pkt_pointers: every packet pointer with reg's id gets range >= reg.off."""
    if reg.off < 0 or (reg.off == 0 and right_open):
        return
    if reg.var.umax > MAX_PACKET_OFF or reg.var.umax + reg.off > MAX_PACKET_OFF:
        return
    new_range = reg.off + (1 if right_open else 0)

    def fix(r: Reg):
        if r.type == reg.type and r.id == reg.id and r.range < new_range:
            return r.replace(range=new_range)
        return None
    state.map_regs(fix)
