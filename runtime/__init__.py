"""The runtime: reference interpreter, memory regions, maps, helpers and kfuncs (imported as pybpf.runtime)."""
