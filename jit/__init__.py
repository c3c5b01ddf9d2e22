"""The JIT: BPF -> LLVM IR lowering, compile worker, object extraction and the execmem pack allocator (imported as pybpf.jit)."""
