/* The same 64-way switch compiled for x86-64: the native baseline of benchmarks/bench_switch.py.
 * pybpf places this object with its own linker (pybpf.jit.link) and calls it like a JIT'd
 * program, (data, len) -> u64, so both sides go through the same test_run driver. */
#include "switch64.h"

unsigned long long switch64(const unsigned char *data, unsigned long long len)
{
	return switch64_body(data, len);
}
