"""The verifier: kernel-style abstract interpretation of BPF programs (imported as pybpf.verifier)."""
