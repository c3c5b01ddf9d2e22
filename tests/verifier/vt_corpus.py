"""The verifier corpus: one program per ``.vt`` file, with the running kernel's verdict on it.

File format (one file per test, grouped by topic in sub-directories)::

    # What the program shows and why the kernel decides as it does (free text, any number
    # of lines starting with '#').
    type: xdp
    verdict: reject
    errno: EACCES
    message: R0 invalid mem access 'map_value_or_null'
    ---
    .map counts type=array key=4 value=8 max_entries=4
    r1 = map[counts] ll
    ...

- ``type``: the program type it is loaded as (socket_filter, sched_cls, xdp, tracepoint, kprobe,
  syscall, cgroup_skb, lwt_*, flow_dissector, raw_tracepoint, sk_lookup, cgroup_sock(_addr)).
- ``attach`` (optional): the expected attach type (``cgroup_inet4_connect``...: the names of
  pybpf.attach_types); without it the type's default (tests/kernel_verifier.py EXPECTED_ATTACH).
- ``verdict`` (accept | reject), ``errno`` and ``message`` are the KERNEL's (Linux 6.18, root):
  ``tests/verifier/regen.py`` rewrites them from a load into the running kernel, never by hand.
  ``message`` is the log's last line before ``processed N insns`` (the line the kernel printed
  when it gave up), verbatim; empty for accepted programs.
- ``requires: arena`` (optional) names a map type the kernel may refuse (this machine's refuses
  arena maps): then the kernel check is skipped with the reason.
- ``slow: REASON`` (optional): the program drives a verifier to its 1,000,000-instruction limit;
  pybpf's check of it runs only with ``PYBPF_VERIFIER_SLOW=1`` (CI cost), the kernel's always.
- After ``---``: the program in pybpf's LLVM pseudo-C assembly. Maps are declared with ``.map``
  directives (``.map NAME type=T key=K value=V max_entries=N``) and referenced as ``map[NAME] ll``
  or ``map_value[NAME] + OFF ll`` (ld_imm64 by map index: the kernel resolves it through
  ``fd_array``). Helpers may be called by name (``call bpf_map_lookup_elem``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER_KEYS = ("type", "attach", "verdict", "errno", "message", "requires", "slow")


@dataclass
class Case:
    path: Path
    comments: list[str]
    fields: dict[str, str]
    asm: str
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"

    @property
    def topic(self) -> str:
        return self.path.parent.name

    @property
    def prog_type(self) -> str:
        return self.fields["type"]

    @property
    def attach_type(self) -> str | None:
        """The expected attach type (``attach:``, a pybpf.attach_types name), or None."""
        return self.fields.get("attach") or None

    @property
    def verdict(self) -> str:
        return self.fields.get("verdict", "")

    @property
    def message(self) -> str:
        return self.fields.get("message", "")

    def program(self):
        """The assembled pybpf Program (helper names resolved to ids)."""
        import pybpf
        from pybpf.helper_names import HELPER_IDS
        text = re.sub(r"call bpf_(\w+)",
                      lambda m: f"call {HELPER_IDS[m[1]]}" if m[1] in HELPER_IDS else m[0],
                      self.asm)
        prog = pybpf.assemble(text, syntax="llvm", filename=str(self.path))
        prog.name = self.path.stem[:15].replace("-", "_")
        return prog

    def render(self) -> str:
        out = list(self.comments)
        for k in HEADER_KEYS:
            if k in self.fields:
                v = self.fields[k]
                out.append(f"{k}: {v}" if v else f"{k}:")
        out.append("---")
        return "\n".join(out) + "\n" + self.asm.rstrip("\n") + "\n"


def parse(path: Path) -> Case:
    text = Path(path).read_text()
    head, sep, body = text.partition("\n---\n")
    if not sep:
        raise ValueError(f"{path}: no '---' line between the header and the program")
    comments, fields = [], {}
    for line in head.splitlines():
        if line.startswith("#") or not line.strip():
            comments.append(line)
            continue
        key, colon, value = line.partition(":")
        if not colon or key.strip() not in HEADER_KEYS:
            raise ValueError(f"{path}: bad header line {line!r}")
        fields[key.strip()] = value.strip()
    if "type" not in fields:
        raise ValueError(f"{path}: no 'type:' line")
    return Case(Path(path), comments, fields, body)


def files(root: Path = HERE) -> list[Path]:
    return sorted(p for p in root.rglob("*.vt"))


def cases(root: Path = HERE) -> list[Case]:
    return [parse(p) for p in files(root)]


def pybpf_verify(prog, prog_type: str, vm=None, log_level: int = 0, attach_type=None):
    """(accepted, message) from pybpf's full verifier (``VM.verify(..., full=True)``: the
    abstract interpretation, as a user's default load runs it). Only VerifierError counts as a
    rejection: any other exception propagates (a verifier crash is a bug, never a verdict)."""
    import pybpf
    from pybpf import VerifierError
    vm = vm if vm is not None else pybpf.VM()
    try:
        if attach_type is None:
            import kernel_verifier
            attach_type = kernel_verifier.EXPECTED_ATTACH.get(prog_type)
        vm.verify(prog, prog_type=prog_type, log_level=log_level, full=True,
                  attach_type=attach_type)
    except VerifierError as e:
        return False, e.message
    return True, ""


def pybpf_verdict(case: Case, vm=None, log_level: int = 0):
    """:func:`pybpf_verify` on a corpus case."""
    return pybpf_verify(case.program(), case.prog_type, vm, log_level, case.attach_type)
