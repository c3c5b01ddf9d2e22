"""Map types, one module each, in the kernel map-ops style (imported as pybpf.runtime.maps)."""
