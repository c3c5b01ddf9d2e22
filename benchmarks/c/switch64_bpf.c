/* The 64-way switch as a BPF program (prog_type "mem": r1 = the buffer, r2 = its length). */
#include "switch64.h"

__attribute__((section("socket"), used))
unsigned long long switch64(const unsigned char *data, unsigned long long len)
{
	return switch64_body(data, len);
}

char _license[] __attribute__((section("license"), used)) = "GPL";
