/* Raw tracepoint programs: the tracepoint's arguments arrive as an array of u64 (test-run with
 * BPF_PROG_TEST_RUN's ctx_in), as for sched_switch or sys_enter handlers. */
#include "corpus.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u64);
	__type(value, __u64);
} syscall_counts SEC(".maps");

__u64 last_args[4], max_arg, events;

SEC("raw_tp/sys_enter")
int raw_sys_enter(__u64 *ctx)
{
	__u64 id = ctx[1], one = 1;          /* (struct pt_regs *regs, long id) */
	__u64 *n = bpf_map_lookup_elem(&syscall_counts, &id);
	if (n)
		*n += 1;
	else
		bpf_map_update_elem(&syscall_counts, &id, &one, BPF_NOEXIST);
	events++;
	return 0;
}

SEC("raw_tracepoint/sched_switch")
int raw_sched_switch(__u64 *ctx)
{
	/* (bool preempt, struct task_struct *prev, struct task_struct *next, ...) */
	last_args[0] = ctx[0];
	last_args[1] = ctx[1] ^ ctx[2];
	last_args[2] = ctx[3];
	if (ctx[3] > max_arg)
		max_arg = ctx[3];
	return ctx[0] ? 1 : 0;
}

char LICENSE[] SEC("license") = "GPL";
