// SPDX-License-Identifier: MIT
/* Test object: a typed __ksym variable, which pybpf cannot resolve (no kernel symbols).
 * Rebuild: tests/data/elf/build.sh
 */
#include "../../../samples/c/bpf_helpers.h"

extern const int bpf_prog_active __ksym;

SEC("syscall")
int read_active(void *ctx)
{
	return *(const int *)&bpf_prog_active;
}

char _license[] SEC("license") = "GPL";
