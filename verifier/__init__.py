"""The verifier: kernel-style abstract interpretation of BPF programs (imported as pybpf.verifier).

Entry point :func:`verify` (the kernel's ``bpf_check``): structural checks (:mod:`.cfg`), the
stack-depth limit (:mod:`.stack_depth`) and the abstract interpretation (:mod:`.check`). It asks
its environment (helpers, kfuncs, maps, context rules: :class:`.env.VerifierEnv`) through a
protocol the runtime implements; it never imports the runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pybpf.uapi import BPF_COMPLEXITY_LIMIT_INSNS
from .env import ArenaInfo, MapInfo, NullEnv, VerifierEnv

__all__ = ["verify", "VerifyResult", "VerifierEnv", "MapInfo", "ArenaInfo", "NullEnv"]

INSN_LIMIT = BPF_COMPLEXITY_LIMIT_INSNS


@dataclass
class VerifyResult:
    """An accepted program: its log (log_level > 0), per-instruction facts for the JIT, stats."""

    log: str
    facts: object = None                      # verifier.facts.Facts, or None (structural only)
    stats: dict = field(default_factory=dict)  # processed_insns, total_states, peak_states, ...
    max_ctx_offset: int = 0                   # largest ctx byte touched (mem/syscall programs)
    stack_depth: dict = field(default_factory=dict)   # subprogram start -> bytes
    full: bool = False                        # True when the abstract interpretation ran
    min_ctx_offset: int = 0                   # lowest ctx byte read, when negative (tracepoint)


def verify(prog, env=None, *, prog_type: str, log_level: int = 0,
           full: bool = True, attach_type: str | None = None) -> VerifyResult:
    """Verify ``prog`` (a pybpf.Program) as the kernel's bpf_check would for ``prog_type``.

    Raises :class:`pybpf.errors.VerifierError` with the kernel's message, the instruction index
    and the log; returns a :class:`VerifyResult`. ``full=False`` runs only the structural checks
    (the ``.data`` runner's default). ``attach_type`` is the program's expected attach type
    (:mod:`pybpf.attach_types` names; None: the type's default): a few types' context rules
    and return ranges depend on it, and cgroup_sock_addr cannot load without one."""
    from .cfg import check_structure
    from .stack_depth import check_stack_depth
    from pybpf.errors import VerifierError
    env = env if env is not None else NullEnv()
    if full:
        from pybpf.attach_types import check_attach_type, default_attach_type
        import errno
        attach_type = attach_type or default_attach_type(prog_type)
        why = check_attach_type(prog_type, attach_type)
        if why is not None:     # bpf_prog_load_check_attach: refused before the verifier runs
            raise VerifierError(why, 0, errno=errno.EINVAL)
    from .calls import check_kfunc_ids, resolve_pseudo_ldimm64
    if full:
        try:
            check_kfunc_ids(prog, env)      # bpf_check: add_subprog_and_kfunc comes first
        except VerifierError as e:
            e.program = prog
            raise
    # bpf_check resolves ld_imm64 references after check_subprogs, before check_cfg
    resolve = (lambda: resolve_pseudo_ldimm64(prog, env, prog_type)) if full else None
    try:
        cfg = check_structure(prog, after_subprogs=resolve)
    except VerifierError as e:
        e.program = prog
        raise
    if not full:
        check_stack_depth(prog, cfg)
        n = len(prog.instructions())
        return VerifyResult(log=f"structural checks passed: {n} insns\n",
                            stats={"insns": n})
    from .check import run_checks
    return run_checks(prog, cfg, env, prog_type=prog_type, log_level=log_level,
                      attach_type=attach_type)
