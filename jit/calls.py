"""Calls the JIT implements itself: tail calls, bpf_loop, kfuncs, native map lookups, ld_abs.

* ``bpf_tail_call(ctx, prog_array, index)``: a program that makes tail calls takes a third
  argument, a pointer to the chain record (the chain's count, the run's packet descriptor:
  :data:`CHAIN_DESC`), in its ``<entry>.tail`` function (the prog_array's ``native_entry``);
  ``<entry>`` is a wrapper that starts the count at 0. A call
  site reads the prog_array's native table (``MapHeader.data``, one code address per index, 0
  when empty or not JIT'd), and when ``index < max_entries``, the entry is non-zero and fewer
  than ``MAX_TAIL_CALL_CNT`` (33) tail calls were taken, counts one and calls the target with
  (ctx, 0, count); its r0 is this frame's return value (the target replaces the frame, as
  in the kernel, where a tail call from a subprogram returns to that subprogram's caller).
  Otherwise execution falls through with r0 unchanged, as the interpreter does. A program
  without tail calls can be entered with three arguments too: it ignores the third. Code that
  tail-calls is always entered with the GIL held, since its targets may call Python.
* ``bpf_loop(nr, callback, ctx, flags)``: a native loop calling the callback subprogram, found
  from its ``ld_imm64 src 4`` token (:func:`func_value`, the interpreter's value) when known
  at compile time, else by comparing the token with each referenced subprogram's.
* kfuncs (``call`` src 2): the VM's kfunc registry through the shared Python bridge
  (:mod:`pybpf.jit.helper_calls`); bpf_arena_alloc_pages and friends cost far more than the
  bridge (an mprotect per allocation).
* ``map_lookup_elem`` on an array or hash map whose pointer is a known constant:
  :mod:`pybpf.jit.maps` (no Python on that path); other map helpers use the bridge.
* ld_abs/ld_ind: a big-endian load from the run's packet; out of bounds stops the program with
  r0 = 0. Verified skb programs find the packet through r6 (``skb->data``/``len``, as the
  kernel); the others through the run's descriptor, two u64 words (address, length) the runner
  fills before each run, whose address the chain record carries along a tail-call chain (so a
  program reached by a tail call reads the packet the interpreter reads); a program with such
  loads takes the chain record even when it makes no tail calls (:func:`reads_run_packet`).
"""
from __future__ import annotations

import errno

from llvmlite import ir

from pybpf import isa
from pybpf.errors import VMError
from pybpf.jit import cgutils as cg
from pybpf.jit import maps as native_maps
from pybpf.jit import native_packet
from pybpf.jit.cgutils import I1, I32, I64, PTR
from pybpf.jit.helper_calls import BoundHelper, _entries
from pybpf.jit.native import emit_error_pending
from pybpf.uapi import MAX_TAIL_CALL_CNT

FUNC_BASE = 0xDEAD_0000_0000_0000   # pybpf.runtime.loader.FUNC_BASE: the same tokens
_HDR_MAX_ENTRIES, _HDR_DATA = 76, 168  # MapHeader field offsets (runtime/maps/base.py)
_M64 = (1 << 64) - 1


def func_value(slot: int) -> int:
    """The value of ``ld_imm64 src 4`` pointing at ``slot`` (the interpreter's token)."""
    return FUNC_BASE + 8 * slot


def has_tail_calls(mod, decoded) -> bool:
    for _, form, insn in decoded:
        if form.kind == "call" and form.op == "helper":
            h = mod.helpers.get(insn.imm)
            if h is not None and h.special == "tail_call":
                return True
    return False


# The chain record ``<entry>`` makes for a run and every tail call passes along: the tail-call
# count (an i32 at 0) and the address of the run's ld_abs packet descriptor (a u64 at 8).
CHAIN_DESC = 8


def ldabs_from_ctx(env) -> bool:
    """Whether ld_abs/ld_ind read the packet through r6, the __sk_buff (verified skb programs,
    as the kernel); otherwise through the run's packet descriptor (JitEnv.packet_desc)."""
    return bool(env.verified) and env.prog_type in native_packet.SKB_TYPES


def reads_run_packet(decoded, env) -> bool:
    """Whether ld_abs/ld_ind here read the run's packet descriptor. Such a program takes the
    chain record too (an ``<entry>.tail`` body): reached by a tail call it reads the packet of
    the run that entered the chain, whose descriptor the runner filled, not its own (filled
    only when it is run directly). Without the verifier r6 is nothing known, so the
    descriptor, checked against the run's packet, is the only safe source."""
    return bool(env.packet_desc) and not ldabs_from_ctx(env) \
        and any(f.kind == "ldabs" for _, f, _ in decoded)


def define_tail_wrapper(mod, body: ir.Function, entry: str, packet_desc: int) -> None:
    """``i64 @<entry>(r1, r2)``: a fresh chain record (tail-call count 0, this program's packet
    descriptor, the one the runner fills), then the program's body."""
    fn = cg.bpf_function(mod.module, ir.FunctionType(I64, [I64, I64]), entry)
    b = cg.TextBuilder(fn.append_basic_block("entry"), mod.externs)
    chain = b.alloca(ir.ArrayType(I64, 2), name="chain")
    b.store(I64(0), chain)
    b.store(b.ext(packet_desc) if packet_desc else I64(0), b.gep_i8(chain, CHAIN_DESC))
    b.ret(b.call(body, [fn.args[0], fn.args[1], chain]))


# -- helpers and kfuncs ------------------------------------------------------------------------

def lower_helper(fl, helper: BoundHelper) -> None:
    if helper.special == "tail_call":
        _tail_call(fl)
        return
    if helper.special == "loop":
        _bpf_loop(fl)
        return
    if helper.special == "for_each":
        from pybpf.jit.for_each import bad_callback, lower_for_each
        lower_for_each(fl, _callbacks(fl), bad_callback)
        return
    if helper.name == "map_lookup_elem" and fl.env.resolve_map is not None and fl.env.verified:
        value = fl.known(1)
        m = fl.env.resolve_map(value) if value is not None else None
        if m is not None and native_maps.supported(m):
            fl.set(0, native_maps.lookup(fl, m, fl.get(2)))
            return
    if native_packet.handles(fl, helper.name):
        native_packet.lower(fl, helper)
        return
    value, abort = fl.mod.helpers.emit_call(fl.b, helper, fl._args(), fl.frames)
    fl.set(0, value)
    if abort is not None:
        fl.abort_if(abort)


def calls_python_helpers(mod, decoded, env) -> bool:
    """Whether the program may call a helper or kfunc through the Python bridge with the
    frame-record argument (so its functions keep frame records: pybpf.jit.lower)."""
    kfuncs = None
    for _, form, insn in decoded:
        if form.kind == "callx":
            if any(h.bridged and h.framed for h in mod.helpers.all()):
                return True
        elif form.kind == "call" and form.op == "helper":
            h = mod.helpers.get(insn.imm)
            if h is not None and h.bridged and h.framed is not None:
                return True
        elif form.kind == "call" and form.op != "local":
            if kfuncs is None:
                kfuncs = _entries(env.kfuncs) if env.kfuncs is not None else {}
            kf = kfuncs.get(insn.imm)
            if kf is not None and kf.bridged and kf.framed is not None:
                return True
    return False


def lower_kfunc(fl, insn) -> None:
    registry = fl.env.kfuncs
    if registry is None:
        raise fl.error("call_kfunc: kfunc calls are not supported yet without the VM's kfunc "
                       "registry (JitEnv.kfuncs)")
    if insn.imm == 0 and insn.off == 0:
        # verified, only dead code (the kernel removes it); reached unverified: the interpreter's
        # VMError
        fl.mod.helpers.call_python(fl.b, ("kfunc0", fl.pc), _no_kfunc_id(fl.pc), 0, [])
        fl.abort_if(I1(1))
        fl.set(0, I64(0))                   # not reached: keeps the IR well formed
        return
    kf = _entries(registry).get(insn.imm)
    if kf is None:
        raise fl.error(f"unknown kernel function id {insn.imm}")
    if kf.special == "rbtree_add":
        from pybpf.jit.graph import lower_rbtree_add
        lower_rbtree_add(fl, kf, _callbacks(fl))
        return
    value, abort = fl.mod.helpers.emit_call(fl.b, kf, fl._args(), fl.frames)
    fl.set(0, value)
    if abort is not None:
        fl.abort_if(abort)


# -- tail calls --------------------------------------------------------------------------------

def _tail_call(fl) -> None:
    b = fl.b
    if fl.tcc is None:  # cannot happen: has_tail_calls saw this call
        raise fl.error("tail call in a program lowered without a tail-call count")
    known = fl.known(2)
    m = fl.env.resolve_map(known) if known is not None and fl.env.resolve_map else None
    if m is not None and getattr(m, "table_address", None) is not None:
        table, limit = b.ext(m.table_address), cg.const(I32, m.max_entries)
    else:   # read the prog_array's MapHeader
        hdr = fl.get(2)
        limit = b.load(b.inttoptr(b.add(hdr, cg.const(I64, _HDR_MAX_ENTRIES)), PTR), typ=I32)
        table = b.load(b.inttoptr(b.add(hdr, cg.const(I64, _HDR_DATA)), PTR), typ=I64)
    index = cg.low32(b, fl.get(3))
    ctx = fl.get(1)
    count = b.load(fl.tcc, typ=I32)
    in_range = b.icmp_unsigned("<", index, limit)
    budget = b.icmp_unsigned("<", count, cg.const(I32, MAX_TAIL_CALL_CNT))
    go = fl.fn.append_basic_block(f"tail{fl.pc}.lookup")
    enter = fl.fn.append_basic_block(f"tail{fl.pc}.enter")
    fall = fl.fn.append_basic_block(f"tail{fl.pc}.fall")
    b.cbranch(b.and_(in_range, budget), go, fall)
    b.position_at_end(go)
    slot = b.add(table, b.mul(b.zext(index, I64), cg.const(I64, 8)))
    target = b.load(b.inttoptr(slot, PTR), typ=I64)
    b.cbranch(b.icmp_unsigned("!=", target, cg.const(I64, 0)), enter, fall)
    b.position_at_end(enter)
    b.store(b.add(count, cg.const(I32, 1)), fl.tcc)
    fnty = ir.FunctionType(I64, [I64, I64, PTR])
    r0 = b.call(b.inttoptr(target, ir.PointerType(fnty)), [ctx, cg.const(I64, 0), fl.tcc])
    if fl.is_main or not fl.may_abort:
        b.ret(r0)
    else:
        # A Python helper of the target may have raised: this frame's caller must stop too.
        pair = b.insert_value(ir.Constant(fl.fn.function_type.return_type, ir.Undefined), r0, 0)
        b.ret(b.insert_value(pair, emit_error_pending(b), 1))
    b.position_at_end(fall)


# -- bpf_loop ----------------------------------------------------------------------------------

def _callbacks(fl) -> dict[int, ir.Function]:
    """Subprograms referenced by ld_imm64 src 4, by token value."""
    out = {}
    for pc, form, insn in fl.prog.instructions():
        if form.kind == "lddw" and form.op == "func":
            target = pc + 1 + insn.imm
            fn = fl.functions.get(target)
            if fn is not None:
                out[func_value(target)] = fn
    return out


def _no_kfunc_id(pc: int):
    def refuse(*_):
        raise VMError("invalid kernel function call not eliminated in verifier pass", pc)
    return refuse


def _bad_callback(pc: int):
    def raise_unknown(value, *_):
        raise VMError(f"bpf_loop: 0x{value:x} is not a function of this program", pc)
    return raise_unknown


def _bpf_loop(fl) -> None:
    """r0 = bpf_loop(r1 nr, r2 callback, r3 ctx, r4 flags) as the interpreter's Run.loop."""
    b, fn, pc = fl.b, fl.fn, fl.pc
    nr = cg.low32(b, fl.get(1))
    cb_value, ctx, flags = fl.get(2), fl.get(3), fl.get(4)
    callbacks = _callbacks(fl)
    known = fl.known(2)
    if known is not None and known in callbacks:
        candidates = {known: callbacks[known]}
    else:
        candidates = callbacks
    done = fn.append_basic_block(f"loop{pc}.done")
    results = []        # (r0 value, block)
    # flags != 0 -> -EINVAL; nr > BPF_MAX_LOOPS -> -E2BIG
    bad_flags = b.icmp_unsigned("!=", flags, cg.const(I64, 0))
    too_many = b.icmp_unsigned(">", nr, cg.const(I32, isa.BPF_MAX_LOOPS))
    err = b.select(bad_flags, cg.const(I64, -errno.EINVAL & _M64),
                   cg.const(I64, -errno.E2BIG & _M64))
    run = fn.append_basic_block(f"loop{pc}.run")
    results.append((err, b.block))
    b.cbranch(b.or_(bad_flags, too_many), done, run)
    b.position_at_end(run)
    for value, callee in candidates.items():
        if len(candidates) > 1 or known is None:
            hit = fn.append_basic_block(f"loop{pc}.cb{value - FUNC_BASE >> 3}")
            miss = fn.append_basic_block(f"loop{pc}.not{value - FUNC_BASE >> 3}")
            b.cbranch(b.icmp_unsigned("==", cb_value, cg.const(I64, value)), hit, miss)
            b.position_at_end(hit)
            results.append((_loop_body(fl, callee, nr, ctx), b.block))
            b.branch(done)
            b.position_at_end(miss)
        else:
            results.append((_loop_body(fl, callee, nr, ctx), b.block))
            b.branch(done)
            break
    else:   # no callback matched: the interpreter's VMError
        value, _failed = fl.mod.helpers.call_python(b, ("loop", pc), _bad_callback(pc), 1,
                                                    [cb_value])
        fl.abort_if(I1(1))
        results.append((value, b.block))   # not reached: keeps the IR well formed
        b.branch(done)
    b.position_at_end(done)
    phi = b.phi(I64, name="loop.r0")
    for value, blk in results:
        phi.add_incoming(value, blk)
    fl.set(0, phi)


def _loop_body(fl, callee: ir.Function, nr, ctx) -> ir.Value:
    """for i in range(nr): if callee(i, ctx): return i + 1; return nr."""
    b, fn = fl.b, fl.fn
    head_bb = b.block
    loop = fn.append_basic_block("loop.iter")
    stop = fn.append_basic_block("loop.stop")
    b.cbranch(b.icmp_unsigned("==", nr, cg.const(I32, 0)), stop, loop)
    b.position_at_end(loop)
    i = b.phi(I32, name="loop.i")
    i.add_incoming(cg.const(I32, 0), head_bb)
    zero = cg.const(I64, 0)
    r = fl.call_local(callee, [b.zext(i, I64), ctx, zero, zero, zero])
    nxt = b.add(i, cg.const(I32, 1))
    i.add_incoming(nxt, b.block)
    more = b.and_(b.icmp_unsigned("==", r, zero), b.icmp_unsigned("<", nxt, nr))
    body_end = b.block
    b.cbranch(more, loop, stop)
    b.position_at_end(stop)
    out = b.phi(I32, name="loop.n")
    out.add_incoming(cg.const(I32, 0), head_bb)
    out.add_incoming(nxt, body_end)
    return b.zext(out, I64)


# -- ld_abs / ld_ind ---------------------------------------------------------------------------

NO_PACKET = -1      # a descriptor's length when the run has no packet (pybpf.loaded)
NO_PACKET_MESSAGE = "ld_abs/ld_ind needs a socket-filter context: run with data=<packet>"


def no_packet(pc: int):
    """What ld_abs/ld_ind at ``pc`` do in a run without a packet: the interpreter's VMError."""
    def refuse(*_):
        raise VMError(NO_PACKET_MESSAGE, pc)
    return refuse


def lower_ldabs(fl, form, insn) -> None:
    """r0 = big-endian ``size`` bytes at packet offset imm (+ src for ld_ind); out of bounds
    stops the program with r0 = 0 (the interpreter's Run.ldabs)."""
    b, size = fl.b, form.size
    desc = fl.env.packet_desc
    from_ctx = ldabs_from_ctx(fl.env)
    if not desc and not from_ctx:
        raise fl.error(f"{form.name}: legacy packet access (ld_abs/ld_ind) is not supported yet "
                       "without the run's packet (JitEnv.packet_desc, from the loader)")
    off = cg.const(I32, insn.imm)
    if form.op == "ind":
        off = b.add(cg.low32(b, fl.get(insn.src)), off)
    off64 = b.sext(off, I64)                   # a negative offset is out of bounds
    if from_ctx:
        # as the kernel: the verifier proved r6 is the __sk_buff, whose len (@0) and data
        # (@76, the real address) say where the packet is now, whichever program's run it
        # is (a tail-call target's own descriptor is only set when it is run directly)
        ctx = fl.get(6)
        length = b.zext(b.load(b.inttoptr(ctx, PTR), typ=I32), I64)
        data = b.zext(b.load(b.inttoptr(b.add(ctx, cg.const(I64, 76)), PTR), typ=I32), I64)
    else:
        # the run's descriptor, from the chain record (reads_run_packet): whichever program
        # of a tail-call chain this is, the packet of the run that entered the chain
        where = b.load(b.gep_i8(fl.tcc, CHAIN_DESC), typ=I64)
        data = b.load(b.inttoptr(where, PTR), typ=I64)
        length = b.load(b.inttoptr(b.add(where, cg.const(I64, 8)), PTR), typ=I64)
    bad = b.or_(b.icmp_signed("<", off64, cg.const(I64, 0)),
                b.icmp_signed(">", b.add(off64, cg.const(I64, size)), length))
    if not from_ctx:
        # a run without a packet (length NO_PACKET, -1: every offset is out of bounds): the
        # interpreter's VMError, not r0 = 0
        with b.if_then(b.and_(bad, b.icmp_signed("==", length, cg.const(I64, NO_PACKET))),
                       likely=False):
            fl.mod.helpers.call_python(b, ("ldabs_no_packet", fl.pc), no_packet(fl.pc), 0, [])
    fl.abort_if(bad)
    value = b.load(b.inttoptr(b.add(data, off64), PTR), typ=cg.BYTES[size], align=1)
    if size > 1:
        value = b.bswap(value)
    fl.set(0, cg.zext64(b, value))
