"""The one prototype table (pybpf.verifier.protos): every helper and kfunc pybpf registers takes
its prototype from it, the interpreter, the JIT and the verifier agree on it, unknown ids are
refused at load with the kernel's message, and the table's kernel facts (which program types may
call a helper, which helpers are GPL-only) match the running kernel where bpf() is permitted.
"""
from __future__ import annotations

import ctypes
import inspect
import os
import struct

import pytest

import kernel_bpf
import pybpf
from pybpf import VerifierError
from pybpf.helper_names import HELPER_IDS, HELPER_NAMES
from pybpf.insn import make
from pybpf import uapi
from pybpf.kfunc_ids import KFUNC_IDS
from pybpf.runtime.helpers import kernel_helpers, ubpf_test_helpers
from pybpf.verifier import protos

KERNEL = kernel_bpf.available()
PROG_TYPE_IDS = {t: uapi.PROG_TYPE_IDS[t] for t in (
    "socket_filter", "kprobe", "sched_cls", "tracepoint", "xdp", "cgroup_skb", "lwt_in", "syscall",
    "perf_event", "cgroup_sock", "lwt_out", "lwt_xmit", "sock_ops", "sk_msg", "raw_tracepoint",
    "cgroup_sock_addr", "flow_dissector", "sk_lookup")}
FULL = os.environ.get("PYBPF_FULL_KERNEL_CHECK") == "1"


def _prog(*insns) -> pybpf.Program:
    return pybpf.Program([s for i in insns for s in i])


def _call(hid: int) -> pybpf.Program:
    return _prog(make("call_helper", imm=hid), make("mov64_imm", 0, imm=0), make("exit"))


# --- the table and the registries ----------------------------------------------------------------
def test_every_registered_helper_takes_its_prototype_from_the_table():
    vm = pybpf.VM()
    assert set(vm.helpers) == set(protos.HELPERS) - protos.AWAITING_IMPLEMENTATION
    for hid, h in vm.helpers.items():
        assert h.prototype is protos.HELPERS[hid], h.name
        assert h.name == HELPER_NAMES[hid] == h.prototype.name
    for hid, h in kernel_helpers().items():
        assert h.prototype is protos.HELPERS[hid]


def test_every_kfunc_takes_its_prototype_from_the_table():
    vm = pybpf.VM()
    assert sorted(vm.kfuncs) == sorted(KFUNC_IDS.values()) == sorted(protos.KFUNCS_BY_ID)
    for kid, k in vm.kfuncs.items():
        assert k.prototype is protos.KFUNCS_BY_ID[kid]
        assert protos.kfunc(k.name) is k.prototype and k.prototype.c_decl


def test_ubpf_test_helpers_take_theirs_from_the_table():
    reg = ubpf_test_helpers()
    assert sorted(reg) == sorted(protos.UBPF_TEST_HELPERS)
    for hid, h in reg.items():
        assert h.prototype is protos.UBPF_TEST_HELPERS[hid]
    assert reg[5].unwind and not reg[4].unwind


@pytest.mark.parametrize("registry", ["vm", "kfuncs", "ubpf"])
def test_interpreter_jit_and_table_agree_on_arguments(registry):
    """Both engines pass ``prototype.nargs`` registers (the interpreter's generated call and the
    JIT's bridge through helper_calls._entries); every implementation takes exactly that many."""
    from pybpf.jit.helper_calls import _entries
    vm = pybpf.VM()
    reg = {"vm": vm.helpers, "kfuncs": vm.kfuncs, "ubpf": ubpf_test_helpers()}[registry]
    bound = _entries(reg)
    for hid, h in reg.items():
        n = h.prototype.nargs
        assert bound[hid].nargs == n, h.name
        assert bound[hid].special == h.special
        params = inspect.signature(h.fn).parameters.values()
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            continue          # the engines' stand-ins for tail_call/loop take *args
        assert len(params) == n, (h.name, n)


def test_interpreter_checks_what_the_prototype_announces():
    """Pointer arguments the interpreter checks at run time come from the same table: sized
    memory from memory_args(), map keys and values (sized by the map) and dynptrs through
    mem_args."""
    vm = pybpf.VM()
    for hid, h in vm.helpers.items():
        p = protos.HELPERS[hid]
        # a dynptr argument's 16 bytes are checked through mem_args too (runtime/kfuncs_dynptr)
        dynptr = any(p.arg(i)[0] == protos.ARG_PTR_TO_DYNPTR for i in range(p.nargs))
        assert (h.mem_args is not None) == bool(p.map_args() or dynptr), h.name
        for pi, si, kind in p.memory_args():
            base, flags = p.arg(pi)
            assert base in (protos.ARG_PTR_TO_MEM, protos.ARG_PTR_TO_CONST_STR,
                            protos.ARG_PTR_TO_RINGBUF_MEM)
            assert kind == ("read" if protos.MEM_RDONLY in flags else
                            "str" if base == protos.ARG_PTR_TO_CONST_STR else
                            "ringbuf" if base == protos.ARG_PTR_TO_RINGBUF_MEM else "write")
    assert protos.helper_proto("probe_read_kernel").memory_args() == [(0, 1, "write")]
    assert protos.helper_proto("trace_printk").memory_args() == [(0, 1, "read")]
    assert protos.helper_proto("ringbuf_submit").memory_args() == [(0, None, "ringbuf")]
    assert protos.helper_proto("map_pop_elem").map_args() == [(1, "value", "write")]
    assert protos.helper_proto("map_update_elem").map_args() == [(1, "key", "read"),
                                                                 (2, "value", "read")]


def test_run_time_check_plan_is_computed_once_and_follows_the_kinds():
    """check_args reads Prototype.memory_checks, built once per prototype (rebuilding it from
    the kind strings on every bridged call was most of the call's cost): the same object on
    every read, and it skips a zero size only where the size argument is ``_OR_ZERO``."""
    from pybpf.runtime.helpers import Helper, check_args
    from pybpf.runtime.memory import Region, RegionTable
    from pybpf.errors import MemoryAccessError
    csum = protos.helper_proto("csum_diff")           # ARG_CONST_SIZE_OR_ZERO sizes
    load = protos.helper_proto("probe_read_kernel")   # ARG_CONST_SIZE_OR_ZERO, writes
    plan = csum.memory_checks
    assert csum.memory_checks is plan
    assert plan == ((0, 1, 1, "read", True), (2, 3, 1, "read", True))
    lock = protos.helper_proto("spin_lock").memory_checks
    assert lock == ((0, None, 4, "write", False),)
    sized = protos.Prototype(args=(protos.ARG_PTR_TO_MEM, protos.ARG_CONST_SIZE))
    assert sized.memory_checks == ((0, 1, 1, "write", False),)
    buf = ctypes.create_string_buffer(16)
    table = RegionTable([Region(ctypes.addressof(buf), 16, "buf")])
    bad = ctypes.addressof(buf) + 64
    noop = lambda *a: 0                                # noqa: E731
    check_args(table, Helper(1, "csum", noop, csum), (bad, 0, bad, 0, 0))   # zero: skipped
    with pytest.raises(MemoryAccessError):
        check_args(table, Helper(1, "csum", noop, csum), (bad, 4, 0, 0, 0))
    with pytest.raises(MemoryAccessError):        # ARG_CONST_SIZE: a 0 is still checked
        check_args(table, Helper(2, "sized", noop, sized), (bad, 0))
    check_args(table, Helper(3, "load", noop, load), (ctypes.addressof(buf), 16, 0))
    with pytest.raises(MemoryAccessError):
        check_args(table, Helper(3, "load", noop, load), (ctypes.addressof(buf), 17, 0))


def test_table_uses_kernel_kinds_and_ids():
    for hid, p in protos.HELPERS.items():
        assert HELPER_IDS[p.name] == hid
        for kind in (p.ret, *p.args):
            base, _flags = protos.split_kind(kind)
            assert base.startswith(("ARG_", "RET_")), kind
    with pytest.raises(ValueError, match="unknown flag"):
        protos.Prototype(args=("ARG_PTR_TO_MEM|MEM_RDONLYY",))
    with pytest.raises(ValueError, match="at most 5"):
        protos.Prototype(args=("ARG_ANYTHING",) * 6)
    rb = protos.helper_proto("ringbuf_reserve")
    assert rb.ret == "RET_PTR_TO_MEM|PTR_MAYBE_NULL|MEM_RINGBUF" and rb.ret_size_arg == 1
    assert protos.helper_proto("map_lookup_elem").ret == "RET_PTR_TO_MAP_VALUE|PTR_MAYBE_NULL"
    assert protos.helper_proto("tail_call").args[0] == "ARG_PTR_TO_CTX"


# --- refusals at load ----------------------------------------------------------------------------
def test_unknown_helper_messages():
    m = protos.unknown_helper_message
    assert m(212, "xdp", None) == "invalid func unknown#212"
    assert m(-1, "xdp", None) == "invalid func unknown#-1"
    assert m(0, "xdp", None) == "program of this type cannot use helper bpf_unspec#0"
    assert m(26, "xdp", None) == "program of this type cannot use helper bpf_skb_load_bytes#26"
    assert m(26, "sched_cls", None) == "helper bpf_skb_load_bytes#26 is not implemented by pybpf"
    assert m(4, "xdp", protos.HELPERS[4]) == \
        "program of this type cannot use helper bpf_probe_read#4"
    assert m(4, "kprobe", protos.HELPERS[4]) is None
    assert m(160, "kprobe", protos.HELPERS[160]) == \
        "program of this type cannot use helper bpf_ktime_get_coarse_ns#160"
    assert m(0x1000, "xdp", protos.Prototype()) is None          # a user's helper: any type


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_unknown_helper_is_refused_at_load_not_at_run_time(engine):
    vm = pybpf.VM()
    with pytest.raises(pybpf.BPFError, match="invalid func unknown#212"):
        vm.load(_call(212), prog_type="xdp", engine=engine)
    with pytest.raises(VerifierError, match="invalid func unknown#212"):
        vm.verify(_call(212), prog_type="xdp", full=True)


def test_call_targets_are_checked_before_anything_runs():
    """calls.check_call_targets: the structural check every load runs (also without the full
    verifier), with the kernel's messages, for helpers and kfuncs."""
    from pybpf.runtime.verifier_env import VMEnv
    from pybpf.verifier.calls import check_call_targets
    vm = pybpf.VM()
    for prog, ptype, msg in (
            (_call(212), "xdp", "invalid func unknown#212"),
            (_call(4), "xdp", "program of this type cannot use helper bpf_probe_read#4"),
            (_prog(make("mov64_imm", 0, imm=0), make("call_kfunc", imm=99), make("exit")),
             "syscall", "kernel btf_id 99 is not a function")):
        with pytest.raises(VerifierError) as e:
            check_call_targets(prog, VMEnv(vm, prog), ptype)
        assert e.value.message == msg
        assert e.value.insn_idx == (1 if "btf_id" in msg else 0)
    ok = _prog(make("call_helper", imm=5), make("call_kfunc", imm=KFUNC_IDS[
        "bpf_arena_free_pages"]), make("exit"))
    check_call_targets(ok, VMEnv(vm, ok), "syscall")


def test_helper_of_another_program_type_is_refused_by_the_verifier():
    vm = pybpf.VM()
    with pytest.raises(VerifierError) as e:
        vm.verify(_call(HELPER_IDS["probe_read"]), prog_type="xdp", full=True)
    assert e.value.message == "program of this type cannot use helper bpf_probe_read#4"
    vm.verify(_call(HELPER_IDS["ktime_get_ns"]), prog_type="xdp", full=True)


def test_unknown_kfunc_is_refused_by_the_verifier():
    vm = pybpf.VM()
    prog = _prog(make("call_kfunc", imm=4242), make("mov64_imm", 0, imm=0), make("exit"))
    with pytest.raises(VerifierError) as e:
        vm.verify(prog, prog_type="syscall", full=True)
    assert e.value.message == "kernel btf_id 4242 is not a function"


# --- the kernel's own answers --------------------------------------------------------------------
def _kernel_load(prog_type: str, prog: pybpf.Program, license: str = "GPL") -> tuple[int, str]:
    code = ctypes.create_string_buffer(prog.to_bytes())
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(1 << 16)
    attr = bytearray(152)
    struct.pack_into("<IIQQIIQ", attr, 0, PROG_TYPE_IDS[prog_type], len(prog.insns),
                     ctypes.addressof(code), ctypes.addressof(lic), 1, len(log),
                     ctypes.addressof(log))
    struct.pack_into("<I", attr, 44, 1 << 4 if prog_type == "syscall" else 0)  # sleepable
    import kernel_verifier                 # the attach type the type needs (EINVAL without)
    struct.pack_into("<I", attr, 68, kernel_verifier.attach_id(prog_type, None))
    try:
        fd = kernel_bpf._bpf(kernel_bpf.BPF_PROG_LOAD, attr, "prog_load")
    except OSError as e:
        return e.errno, log.value.decode()
    os.close(fd)
    return 0, log.value.decode()


def _kernel_allows(prog_type: str, hid: int) -> bool:
    _err, log = _kernel_load(prog_type, _call(hid))
    return not ("cannot use helper" in log or "invalid func" in log)


@pytest.mark.skipif(not KERNEL, reason="bpf() is not permitted here: no kernel to compare with")
@pytest.mark.parametrize("prog_type", sorted(PROG_TYPE_IDS))
def test_program_types_match_the_kernel(prog_type):
    """For every helper pybpf implements (every kernel helper with PYBPF_FULL_KERNEL_CHECK=1):
    the table allows it for ``prog_type`` exactly when the kernel's get_func_proto does."""
    ids = range(1, protos.MAX_HELPER_ID) if FULL else sorted(protos.HELPERS)
    wrong = []
    for hid in ids:
        p = protos.HELPERS.get(hid)
        ours = p.allowed_in(prog_type) if p is not None else \
            hid in protos.KERNEL_HELPER_PROG_TYPES[prog_type]
        if ours != _kernel_allows(prog_type, hid):
            wrong.append(f"{protos.func_id_name(hid)}#{hid}")
    assert not wrong, wrong


@pytest.mark.skipif(not KERNEL, reason="bpf() is not permitted here: no kernel to compare with")
def test_gpl_only_matches_the_kernel():
    """A non-GPL program may not call a gpl_only helper (kprobe: every helper of the table is
    allowed there except ktime_get_coarse_ns, checked in sched_cls)."""
    msg = "cannot call GPL-restricted function from non-GPL compatible program"
    for hid, p in sorted(protos.HELPERS.items()):
        ptype = "kprobe" if p.allowed_in("kprobe") else "sched_cls"
        _err, log = _kernel_load(ptype, _call(hid), license="MIT")
        assert (msg in log) == p.gpl_only, (p.name, log.splitlines()[-2:])


@pytest.mark.skipif(not KERNEL, reason="bpf() is not permitted here: no kernel to compare with")
@pytest.mark.parametrize("prog_type", ["xdp", "kprobe", "sched_cls"])
def test_bare_calls_get_the_kernels_verdict(prog_type):
    """``call N`` with only r1 (the ctx) set, for every helper the VM has: the first argument's
    kind (its compatible register types, printed by the kernel as ``expected=...``) and the
    number of checked arguments (``R2 !read_ok``) must be the kernel's."""
    vm = pybpf.VM()
    wrong = []
    for hid in sorted(vm.helpers):
        prog = _call(hid)
        try:
            vm.verify(prog, prog_type=prog_type, full=True)
            ours = ""
        except VerifierError as e:
            ours = e.message
        _err, log = _kernel_load(prog_type, prog)
        lines = [ln for ln in log.splitlines() if ln.strip()]
        theirs = "" if _err == 0 else lines[-2]
        if ours != theirs:
            wrong.append((protos.func_id_name(hid), ours, theirs))
    assert not wrong, wrong


@pytest.mark.skipif(not KERNEL, reason="bpf() is not permitted here: no kernel to compare with")
@pytest.mark.parametrize("prog_type", ["sched_cls", "xdp", "tracepoint", "syscall"])
def test_awaiting_helpers_check_their_arguments_first(prog_type):
    """A helper whose prototype pybpf has but not its implementation (AWAITING_IMPLEMENTATION):
    its call gets the kernel's argument checks, so where the kernel refuses the call the
    message is the kernel's; where the kernel accepts it pybpf refuses it after the arguments
    as not implemented (never accepted: nothing could run it)."""
    assert protos.AWAITING_IMPLEMENTATION
    asm = {"bare": "call {}", "zeros": "r2 = 0\nr3 = 0\nr4 = 0\nr5 = 0\ncall {}",
           "stack": "r2 = r10\nr3 = r10\nr3 += -8\nr4 = 8\nr5 = 0\ncall {}"}
    vm, wrong, refused_by_both = pybpf.VM(), [], 0
    for hid in sorted(protos.AWAITING_IMPLEMENTATION):
        for name, body in asm.items():
            prog = pybpf.assemble(body.format(hid) + "\nr0 = 0\nexit", syntax="llvm")
            with pytest.raises(VerifierError) as e:
                vm.verify(prog, prog_type=prog_type, full=True)
            err, log = _kernel_load(prog_type, prog)
            lines = [ln for ln in log.splitlines() if ln.strip()]
            theirs = "" if err == 0 else lines[-2]
            ours = e.value.message
            refused_by_both += bool(theirs)
            if theirs != ours and not (theirs == "" and ours ==
                                       f"helper {protos.func_id_name(hid)}#{hid} is not "
                                       "implemented by pybpf"):
                wrong.append((protos.func_id_name(hid), name, ours, theirs))
    assert not wrong, wrong
    assert refused_by_both      # the comparison saw kernel messages, not only acceptances
