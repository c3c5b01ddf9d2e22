"""What the benchmarks share: medians and percentiles of trials, the machine's description, a
pause of the garbage collector around measurements, and the command-line entry point."""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys


def median_of(trial, trials: int) -> float:
    """The median of ``trials`` calls of ``trial()``."""
    return statistics.median(trial() for _ in range(trials))


def percentile(values, q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank below."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict:
    """Kernel release, Python version and CPU count of this machine."""
    return {"kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count()}


@contextlib.contextmanager
def gc_paused():
    """The collector off for the block (its pauses are not what is measured), then as before."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def main(run, format_table, argv=None) -> None:
    """``python -m pybpf.benchmarks.<bench> [--quick]``: progress on stderr, the table on
    stdout."""
    argv = sys.argv[1:] if argv is None else argv
    print(format_table(run(report=lambda line: print(line, file=sys.stderr),
                           quick="--quick" in argv)))
