"""The performance suite (imported as pybpf.benchmarks); `pybpf bench` runs it and prints ratios."""
