"""The command line every sample driver shares: ``--engine interp|jit`` plus its own options.

Each ``samples/<name>/run.py`` defines ``run_sample(engine, ...) -> dict`` (with an ``"ok"``
entry) and calls :func:`main` with its extra options; this prints the verdict and turns a
pybpf error (for example an engine that cannot run the sample) into a clear message and exit 1.
"""
from __future__ import annotations

import argparse
import sys

import pybpf


def main(doc: str, run_sample, options=(), argv=None) -> int:
    """``options``: (flag, argparse kwargs) pairs; their values follow the engine positionally."""
    p = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    p.add_argument("--engine", choices=("interp", "jit"), default="interp")
    for flag, kwargs in options:
        p.add_argument(flag, **kwargs)
    args = p.parse_args(argv)
    values = [getattr(args, flag.lstrip("-").replace("-", "_")) for flag, _ in options]
    try:
        out = run_sample(args.engine, *values)
    except pybpf.BPFError as e:
        print(f"the {args.engine} engine cannot run this sample: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print("all checks passed" if out["ok"] else "SOME CHECKS FAILED")
    return 0 if out["ok"] else 1
