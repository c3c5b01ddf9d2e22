"""Referenced kptrs: allocated objects stashed in map values and in other objects
(kernel/bpf/verifier.c: process_kptr_func, map_kptr_match_type, check_map_kptr_access,
btf_ld_kptr_type, check_map_access's special fields; kernel/bpf/btf.c: btf_find_kptr).

* A ``__kptr`` field (BTF type tag ``kptr``) holds an owning reference to an object of the
  struct the pointer names. pybpf has no kernel objects, so every kptr is a local one (the
  kernel's btf_parse_kptr when the name is not a kernel type: MEM_ALLOC, dropped with
  bpf_obj_drop). ``__kptr_untrusted`` is the unreferenced kind (stored with plain stores),
  ``__percpu_kptr`` the per-CPU one (bpf_percpu_obj_new's objects: MEM_PERCPU, not
  dereferenceable; bpf_this_cpu_ptr/bpf_per_cpu_ptr of an RCU-protected one give a copy, an
  allocated object the program may read and write).
* ``bpf_kptr_xchg(dst, ptr)``: ``dst`` (ARG_KPTR_XCHG_DEST) is a map value or an allocated
  object at the constant offset of a referenced kptr field; ``ptr`` an owning reference to
  exactly the field's type at offset 0, or NULL; it is released (every copy becomes unusable)
  and r0 is an owning reference to the old object, maybe NULL (``PTR_TO_BTF_ID | MEM_ALLOC``).
* Loads of a kptr field give ``PTR_TO_BTF_ID | MEM_ALLOC | MEM_RCU`` (maybe NULL; plus
  NON_OWN_REF when the type holds a graph node) inside an RCU read section (a non-sleepable
  program, bpf_rcu_read_lock, a held bpf_spin_lock), else an untrusted pointer that may only be
  read; stores into a referenced kptr field are refused, helpers may not touch one.
* In an RCU read section bpf_kptr_xchg's per-CPU source stays usable as an RCU pointer
  (:func:`release_source`), so a program can set up the copies of an object it just stashed.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

from pybpf.errors import MapError

from .state import (MEM_ALLOC, MEM_PERCPU, MEM_RCU, NON_OWN_REF, PTR_MAYBE_NULL, PTR_TO_BTF_ID,
                    PTR_TO_MAP_VALUE, PTR_UNTRUSTED, SCALAR_VALUE, Reg, type_str)

KPTR_REF, KPTR_UNREF, KPTR_PERCPU = "kptr", "kptr_untrusted", "percpu_kptr"
KINDS = (KPTR_REF, KPTR_UNREF, KPTR_PERCPU)
KPTR_SIZE = 8
KPTR_XCHG = 194                                     # BPF_FUNC_kptr_xchg


@dataclass(frozen=True)
class KptrField:
    """One kptr field at ``offset`` of a value or an allocated object: ``kind`` (one of
    :data:`KINDS`), a pointer to ``struct type_name`` (type ``type_id`` of ``btf``)."""

    kind: str
    offset: int
    btf: object = field(compare=False, repr=False)
    type_id: int
    type_name: str

    @property
    def field_name(self) -> str:
        """btf_field_type_name: what the kernel's messages call the field."""
        return "percpu_kptr" if self.kind == KPTR_PERCPU else "kptr"

    @property
    def referenced(self) -> bool:
        return self.kind != KPTR_UNREF


# Kernel types a kptr may name (btf_parse_kptr finds the name in vmlinux BTF). pybpf has no
# kernel objects and no vmlinux BTF, so it knows these names only: the types Linux 6.18 registers
# a destructor for (register_btf_id_dtor_kfuncs: a referenced __kptr to them is accepted; bpf_qdisc's
# sk_buff only with CONFIG_NET_SCH_BPF, absent from the kernel compared), and common kernel
# types without one (a referenced __kptr to them fails BPF_BTF_LOAD with ENOENT:
# btf_find_dtor_kfunc). Any other name is taken for a program type, as the kernel takes a name
# vmlinux does not have.
KERNEL_DTOR_TYPES = frozenset((
    "task_struct", "cgroup", "bpf_cpumask", "bpf_crypto_ctx", "prog_test_ref_kfunc",
    "prog_test_member"))
KERNEL_TYPES = KERNEL_DTOR_TYPES | frozenset((
    "sk_buff", "sock", "sock_common", "tcp_sock", "udp_sock", "socket", "file", "inode",
    "dentry", "mm_struct", "net_device", "net", "nf_conn", "xdp_buff", "xdp_md", "bpf_map",
    "bpf_prog", "cred", "path", "super_block", "request_sock", "inet_sock", "unix_sock",
    "mptcp_sock", "bpf_sock", "__sk_buff", "iphdr", "ipv6hdr", "tcphdr", "udphdr", "ethhdr"))


class FieldError(MapError):
    """btf_parse_fields failed on a value's special fields (a kptr tag on something else than a
    pointer to a struct, two tags, an unknown tag): the kernel keeps no record for the map, which
    it creates all the same, its value then having no special fields (map_check_btf goes on with
    an error record; a bpf_kptr_xchg on the field is "R1 has no valid kptr")."""


def _kptr_of(btf, tid: int, off: int) -> KptrField | None:
    """btf_find_kptr, then btf_parse_kptr and map_check_btf's rules for the field."""
    t = btf[tid]
    if t.kind == "volatile":
        t = btf[t.type]
    if t.kind != "ptr" or not t.type:
        return None
    tag = btf[t.type]
    if tag.kind != "type_tag":
        return None
    if btf[tag.type].kind == "type_tag":
        raise FieldError(f"the pointer at offset {off} has more than one type tag", errno.EINVAL)
    if tag.name not in KINDS + ("uptr",):
        raise FieldError(f"the pointer at offset {off} has an unknown type tag {tag.name!r}",
                         errno.EINVAL)
    target = btf.resolve(tag.type)
    if target.kind != "struct":
        raise FieldError(f"the __{tag.name} at offset {off} must point to a struct",
                         errno.EINVAL)
    if tag.name == "uptr":
        raise MapError(f"the __uptr at offset {off}: only task storage maps hold them (pybpf "
                       f"has none)", errno.EOPNOTSUPP)
    if target.name in KERNEL_TYPES and (tag.name != KPTR_REF
                                        or target.name in KERNEL_DTOR_TYPES):
        raise MapError(f"the __{tag.name} at offset {off} points to struct {target.name}, a "
                       f"kernel type: the kernel takes it, pybpf has no kernel objects to "
                       f"stash", errno.EOPNOTSUPP)
    if target.name in KERNEL_TYPES:
        # no destructor: BPF_BTF_LOAD refuses the object's BTF (pybpf.elf.btf_load), so a map
        # created from it has no BTF; a map given this BTF some other way is refused the same
        raise MapError(f"the __kptr at offset {off} points to struct {target.name}, a kernel "
                       f"type without a destructor", errno.ENOENT)
    return KptrField(tag.name, off, btf, target.id, target.name)


def kernel_kptr_fields(btf, type_id: int) -> dict[int, str]:
    """The kptr fields of struct ``type_id`` that name a kernel type the kernel takes there
    (:func:`_kptr_of` refuses them: pybpf has no kernel objects), by offset -> type name."""
    out: dict[int, str] = {}
    t = btf.resolve(type_id)
    for m in t.members if t.kind == "struct" else ():
        try:
            _kptr_of(btf, m.type, m.bit_offset // 8)
        except FieldError:
            continue
        except MapError as e:
            if e.errno == errno.EOPNOTSUPP and "kernel type" in e.message:
                tag = btf[btf[m.type].type] if btf[m.type].kind == "ptr" else None
                out[m.bit_offset // 8] = btf.resolve(tag.type).name if tag else ""
    return out


def kernel_kptr_without_dtor(btf, tid: int) -> str | None:
    """The kernel type a referenced __kptr pointer type ``tid`` names when the kernel has no
    destructor for it (btf_parse_struct_metas then fails BPF_BTF_LOAD with ENOENT), else None."""
    t = btf[tid]
    if t.kind == "volatile":
        t = btf[t.type]
    if t.kind != "ptr" or not t.type or btf[t.type].kind != "type_tag":
        return None
    tag = btf[t.type]
    if tag.name != KPTR_REF or btf[tag.type].kind == "type_tag":
        return None
    target = btf.resolve(tag.type)
    if target.kind == "struct" and target.name in KERNEL_TYPES - KERNEL_DTOR_TYPES:
        return target.name
    return None


def kptr_fields(btf, type_id: int, var_offsets: dict | None = None) -> dict[int, KptrField]:
    """The kptr fields of type ``type_id`` (a struct, or a DATASEC of global variables whose
    offsets ``var_offsets`` gives by name), by offset."""
    if btf is None or not type_id:
        return {}
    t = btf.resolve(type_id)
    out: dict[int, KptrField] = {}
    if t.kind == "struct":
        for m in t.members:
            k = _kptr_of(btf, m.type, m.bit_offset // 8)
            if k is not None:
                out[k.offset] = k
    elif t.kind == "datasec":
        for v in t.secinfo:
            var = btf[v.type]
            if var.kind == "var":
                off = (var_offsets or {}).get(var.name, v.offset)
                k = _kptr_of(btf, var.type, off)
                if k is not None:
                    out[off] = k
    return out


def record_of(reg: Reg) -> dict:
    """The kptr fields of what ``reg`` points to (a map value or an allocated object)."""
    if reg.type == PTR_TO_MAP_VALUE:
        value = getattr(reg.map, "value", reg.map)
        return getattr(value, "kptr_fields", None) or {}
    t = reg.btf_type
    return getattr(t, "kptrs", None) or {}


# --- direct loads and stores of a map value's kptr field --------------------------------------
def check_field_access(chk, reg: Reg, off: int, size: int, helper: bool) -> None:
    """check_map_access's rules for kptr fields overlapping [off, off + size)."""
    v = reg.var
    for p, k in record_of(reg).items():
        if not (v.smin + off < p + KPTR_SIZE and p < v.umax + off + size):
            continue
        name = k.field_name
        if helper:
            chk.error(f"{name} cannot be accessed indirectly by helper", errno.EACCES)
        if not v.is_const():
            chk.error(f"{name} access cannot have variable offset", errno.EACCES)
        if p != off + v.const_value():
            chk.error(f"{name} access misaligned expected={p} off={off + v.const_value()}",
                      errno.EACCES)
        if size != KPTR_SIZE:
            chk.error(f"{name} access size must be BPF_DW", errno.EACCES)


def in_rcu_cs(chk) -> bool:
    """in_rcu_cs: bpf_rcu_read_lock held, a bpf_spin_lock held, or a non-sleepable program."""
    from .calls import _sleepable
    st = chk.state
    return bool(getattr(st, "active_rcu_lock", False) or st.active_lock is not None
                or not _sleepable(chk))


def check_map_kptr_access(chk, reg: Reg, off: int, write: bool, value_regno: int,
                          imm: int | None, atomic: bool) -> bool:
    """check_map_kptr_access when [off, +8) is exactly a kptr field: True when it was one (a
    load's register is set)."""
    v = reg.var
    if not v.is_const():
        return False
    k = record_of(reg).get(off + v.const_value())
    if k is None:
        return False
    if atomic:
        chk.error("kptr in map can only be accessed using BPF_MEM instruction mode",
                  errno.EACCES)
    if write and k.referenced:
        chk.error("store to referenced kptr disallowed", errno.EACCES)
    if not write:
        chk.set_reg(value_regno, loaded_reg(chk, k))
    elif imm is not None:
        if imm:
            chk.error(f"BPF_ST imm must be 0 when storing to kptr at off={k.offset}",
                      errno.EACCES)
    else:
        val = chk.reg(value_regno)
        if not (val.type == SCALAR_VALUE and val.var.is_const() and not val.var.const_value()):
            match_type(chk, k, val, value_regno)
    return True


def loaded_reg(chk, k: KptrField) -> Reg:
    """mark_btf_ld_reg with btf_ld_kptr_type: what a load of the field gives."""
    from .graph import AllocType
    t = AllocType.of(k.btf, k.type_id)
    flags = PTR_MAYBE_NULL
    if k.kind != KPTR_UNREF and in_rcu_cs(chk):       # rcu_safe_kptr: every local kptr
        flags |= MEM_RCU | (MEM_PERCPU if k.kind == KPTR_PERCPU else MEM_ALLOC)
        if any(f[0] in ("bpf_list_node", "bpf_rb_node") for f in t.fields.values()):
            flags |= NON_OWN_REF
    else:
        flags |= PTR_UNTRUSTED
    return Reg.pointer(PTR_TO_BTF_ID, flags, origin=chk.origin(f"a load of the kptr at "
                                                                f"off={k.offset}")).replace(
        id=chk.new_id(), btf_type=t)


def match_type(chk, k: KptrField, reg: Reg, regno: int) -> None:
    """map_kptr_match_type for a program-allocated type (the only kind pybpf has)."""
    perm = PTR_MAYBE_NULL | MEM_ALLOC | (MEM_PERCPU if k.kind == KPTR_PERCPU else 0)
    reg_name = ""
    # a __percpu_kptr field takes only a per-CPU object: Linux 6.18 refuses a plain one before
    # it names the register's type ("R2 type=ptr_ expected=ptr_T", seen on 6.18.44)
    ok = (reg.type == PTR_TO_BTF_ID and not reg.flags & ~perm
          and (k.kind != KPTR_PERCPU or bool(reg.flags & MEM_PERCPU)))
    if ok:
        t = reg.btf_type
        reg_name = t.name if t is not None else ""
        v = reg.var
        if reg.off < 0:
            chk.error(f"negative offset {reg.type_str()} ptr R{regno} off={reg.off} disallowed",
                      errno.EACCES)
        if not v.is_const() or v.const_value():
            chk.error(f"variable {reg.type_str()} access var_off={v.var_off} disallowed",
                      errno.EACCES)
        # btf_struct_ids_match, strict for referenced kptrs: the very type at offset 0; an
        # unreferenced one may also point to a struct's first member
        ok = t is not None and t.btf is k.btf and (
            t.type_id == k.type_id and reg.off == 0
            or not k.referenced and _first_member_is(t, reg.off, k))
    if not ok:
        chk.error(f"invalid kptr access, R{regno} type={reg.type_str()}{reg_name} "
                  f"expected={type_str(PTR_TO_BTF_ID)}{k.type_name}"
                  + (f" or {type_str(PTR_TO_BTF_ID, PTR_UNTRUSTED)}{k.type_name}"
                     if not k.referenced else ""), errno.EACCES)


def _first_member_is(t, off: int, k: KptrField) -> bool:
    """btf_struct_ids_match's walk: a struct's member at ``off`` whose type is the field's."""
    btf = t.btf
    cur, at = btf.resolve(t.type_id), off
    while cur.kind == "struct":
        inner = next((m for m in cur.members if m.bit_offset // 8 <= at
                      < m.bit_offset // 8 + max(btf.resolve(m.type).size or 0, 1)), None)
        if inner is None:
            return False
        at -= inner.bit_offset // 8
        cur = btf.resolve(inner.type)
        if at == 0 and cur.id == k.type_id:
            return True
    return False


# --- bpf_kptr_xchg's arguments and r0 ---------------------------------------------------------
def check_xchg_arg(chk, arg: int, meta, proto) -> None:
    """check_func_arg for bpf_kptr_xchg's two arguments."""
    from . import calls
    regno = arg + 1
    reg = chk.check_reg_read(regno)
    if arg == 0:                                        # ARG_KPTR_XCHG_DEST
        if (reg.type, reg.flags) not in ((PTR_TO_MAP_VALUE, 0), (PTR_TO_BTF_ID, MEM_ALLOC)):
            chk.error(f"R{regno} type={reg.type_str()} expected=map_value, ptr_", errno.EACCES)
        if reg.type == PTR_TO_BTF_ID:
            calls._check_ptr_off_reg(chk, reg, regno, fixed_off_ok=True)
        _process_kptr_func(chk, regno, reg, meta)
        return
    if arg != 1:
        return
    # ARG_PTR_TO_BTF_ID | PTR_MAYBE_NULL | OBJ_RELEASE
    null = reg.type == SCALAR_VALUE and reg.var.is_const() and not reg.var.const_value()
    if not null:
        folded = reg.flags & ~PTR_MAYBE_NULL
        if reg.type == PTR_TO_BTF_ID and folded & MEM_ALLOC:
            folded &= ~(MEM_ALLOC | MEM_PERCPU)         # local kptrs are allowed as the source
        from .state import PTR_TRUSTED
        if reg.type != PTR_TO_BTF_ID or folded not in (0, PTR_TRUSTED, MEM_RCU):
            chk.error(f"R{regno} type={reg.type_str()} expected=ptr_, trusted_ptr_, rcu_ptr_",
                      errno.EACCES)
        exact = reg.flags & ~NON_OWN_REF
        if exact not in (MEM_ALLOC, MEM_ALLOC | MEM_PERCPU) and reg.flags & MEM_ALLOC:
            chk.error("verifier bug: invalid PTR_TO_BTF_ID register for type match",
                      errno.EFAULT)
        if reg.flags & PTR_MAYBE_NULL:
            chk.error(f"Possibly NULL pointer passed to helper arg{regno}", errno.EACCES)
        match_type(chk, meta.kptr_field, reg, regno)
        if reg.off:
            chk.error(f"R{regno} must have zero offset when passed to release func or trusted "
                      f"arg to kfunc", errno.EINVAL)
        calls._check_ptr_off_reg(chk, reg, regno, fixed_off_ok=False)
    if not reg.ref_obj_id and not null:
        chk.error(f"R{regno} must be referenced when passed to release function", errno.EINVAL)
    meta.release_regno = regno
    if reg.ref_obj_id:
        meta.ref_obj_id = reg.ref_obj_id


def _process_kptr_func(chk, regno: int, reg: Reg, meta) -> None:
    if reg.type == PTR_TO_MAP_VALUE:
        value = getattr(reg.map, "value", reg.map)
        if not getattr(value, "btf", False):
            chk.error(f"map '{reg.map.name}' has to have BTF in order to use bpf_kptr_xchg",
                      errno.EINVAL)
    chk.check_const_offset(regno, reg, "kptr")
    rec = record_of(reg)
    if not rec and not getattr(reg.btf_type, "kernel_kptrs", None):
        chk.error(f"R{regno} has no valid kptr", errno.EINVAL)
    off = reg.off + reg.var.const_value()
    k = rec.get(off)
    kernel = getattr(reg.btf_type, "kernel_kptrs", {}) if reg.type == PTR_TO_BTF_ID else {}
    if k is None and off in kernel:
        chk.error(f"off={off} is a kptr to struct {kernel[off]}, a kernel type: the kernel "
                  f"takes it, pybpf has no kernel objects", errno.EOPNOTSUPP)
    if k is None:
        chk.error(f"off={off} doesn't point to kptr", errno.EACCES)
    if not k.referenced:
        chk.error(f"off={off} kptr isn't referenced kptr", errno.EACCES)
    meta.kptr_field = k


def release_source(chk, ref_obj_id: int) -> None:
    """bpf_kptr_xchg's release of its source: every copy becomes unusable, except that in an RCU
    read section a per-CPU object stays readable as an RCU pointer (MEM_PERCPU | MEM_RCU)."""
    from .calls import _mark_invalid
    chk.state.refs.pop(ref_obj_id, None)
    rcu = in_rcu_cs(chk)

    def fix(r: Reg):
        if r.ref_obj_id != ref_obj_id:
            return None
        if rcu and r.flags & MEM_ALLOC and r.flags & MEM_PERCPU:
            return r.replace(ref_obj_id=0, flags=r.flags & ~MEM_ALLOC | MEM_RCU)
        return _mark_invalid(r)
    chk.state.map_regs(fix)


def check_percpu_arg(chk, regno: int, reg: Reg, meta) -> None:
    """ARG_PTR_TO_PERCPU_BTF_ID (bpf_per_cpu_ptr, bpf_this_cpu_ptr): a per-CPU object."""
    from .calls import _check_ptr_off_reg
    from .state import PTR_TRUSTED
    if reg.type != PTR_TO_BTF_ID or reg.flags not in (MEM_PERCPU, MEM_PERCPU | MEM_RCU,
                                                      MEM_PERCPU | PTR_TRUSTED):
        chk.error(f"R{regno} type={reg.type_str()} expected=percpu_ptr_, percpu_rcu_ptr_, "
                  f"percpu_trusted_ptr_", errno.EACCES)
    _check_ptr_off_reg(chk, reg, regno, fixed_off_ok=False)
    if reg.btf_type is None:
        chk.error(f"Helper has invalid btf_id in R{regno}", errno.EACCES)
    meta.kptr_field = reg


def percpu_return(chk, meta, nullable: bool) -> Reg:
    """r0 of bpf_per_cpu_ptr/bpf_this_cpu_ptr: one CPU's copy of an RCU-protected per-CPU
    object is an allocated object the program may read and write (never NULL to the verifier,
    as Linux 6.18 types it, though bpf_per_cpu_ptr answers NULL for a CPU past nr_cpu_ids: an
    access through that NULL is a MemoryAccessError in both engines)."""
    arg = meta.kptr_field
    if arg.flags & MEM_RCU:
        flags = MEM_ALLOC | MEM_RCU
    else:
        flags = PTR_MAYBE_NULL if nullable else 0
    return Reg.pointer(PTR_TO_BTF_ID, flags, origin=chk.origin("a per-CPU object's copy")
                       ).replace(btf_type=arg.btf_type)


def xchg_return(chk, meta) -> Reg:
    """r0 of bpf_kptr_xchg (before its id and reference): the field's type, maybe NULL."""
    from .graph import AllocType
    k = meta.kptr_field
    flags = PTR_MAYBE_NULL | MEM_ALLOC | (MEM_PERCPU if k.kind == KPTR_PERCPU else 0)
    return Reg.pointer(PTR_TO_BTF_ID, flags, origin=chk.origin("bpf_kptr_xchg")).replace(
        btf_type=AllocType.of(k.btf, k.type_id))


# --- reads through an untrusted pointer to a local type ---------------------------------------
def check_untrusted_access(chk, regno: int, reg: Reg, off: int, size: int,
                           write: bool) -> None:
    """check_ptr_to_btf_access for PTR_TO_BTF_ID | PTR_UNTRUSTED of a program type (a kptr
    loaded outside an RCU read section): reads inside the struct only."""
    t = reg.btf_type
    if off < 0:
        chk.error(f"R{regno} is ptr_{t.name} invalid negative access: off={off}", errno.EACCES)
    v = reg.var
    if not v.is_const() or v.const_value():
        chk.error(f"R{regno} is ptr_{t.name} invalid variable offset: off={off}, "
                  f"var_off={v.var_off}", errno.EACCES)
    if reg.flags & MEM_PERCPU:
        chk.error(f"R{regno} is ptr_{t.name} access percpu memory: off={off}", errno.EACCES)
    if write and not reg.flags & MEM_ALLOC:
        chk.error("only read is supported", errno.EACCES)
    if off + size > t.size:
        chk.error(f"access beyond struct {t.name} at off {off} size {size}", errno.EACCES)
