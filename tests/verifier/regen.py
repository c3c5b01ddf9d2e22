"""Rewrite every corpus file's expectation (verdict, errno, message) from the running kernel.

    python tests/verifier/regen.py [--check] [PATH_OR_TOPIC...]

The files record the kernel's truth: this script loads each program into the running kernel's
verifier (tests/kernel_verifier.py) as its ``type:`` and writes back what the kernel said.
``--check`` only reports the files whose recorded expectation differs (exit 1 if any). Files
whose maps the kernel refuses (``requires: arena`` here) are left alone and listed.
"""
from __future__ import annotations

import errno as _errno
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import vt_corpus as corpus  # noqa: E402
import kernel_verifier as kv  # noqa: E402


def kernel_fields(case: corpus.Case) -> dict[str, str] | str:
    """The kernel's expectation fields for ``case``, or the reason it cannot be asked."""
    try:
        v = kv.kernel_verify(case.program(), case.prog_type, attach_type=case.attach_type)
    except kv.MapsUnavailable as e:
        return str(e)
    if v.accepted:
        return {"verdict": "accept", "errno": "", "message": ""}
    return {"verdict": "reject", "errno": _errno.errorcode.get(v.errno, str(v.errno)),
            "message": v.message}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    targets = [a for a in argv if not a.startswith("--")]
    paths = corpus.files()
    if targets:
        paths = [p for p in paths if any(t in str(p) for t in targets)]
    if not kv.available():
        print("bpf() is not permitted here: nothing regenerated", file=sys.stderr)
        return 2
    changed, skipped, tally = [], [], Counter()
    for path in paths:
        case = corpus.parse(path)
        got = kernel_fields(case)
        if isinstance(got, str):
            skipped.append(f"{case.name}: {got}")
            continue
        tally[(case.topic, got["verdict"])] += 1
        old = {k: case.fields.get(k, "") for k in got}
        if old != got:
            changed.append(f"{case.name}: {old['verdict']} {old['message']!r} -> "
                           f"{got['verdict']} {got['message']!r}")
            if not check:
                case.fields.update(got)
                path.write_text(case.render())
    for line in changed:
        print(("differs " if check else "updated ") + line)
    for line in skipped:
        print("skipped " + line)
    topics = sorted({t for t, _ in tally})
    for t in topics:
        print(f"{t:14} accept {tally[(t, 'accept')]:4}  reject {tally[(t, 'reject')]:4}")
    print(f"{len(paths)} files, {len(changed)} {'differ' if check else 'updated'}, "
          f"{len(skipped)} skipped")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
