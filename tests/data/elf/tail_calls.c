/* Tail calls from a subprogram: each one replaces the subprogram's frame with the target
 * program, whose own call to the subprogram stacks on the caller's frames. The kernel runs the
 * chain to its MAX_TAIL_CALL_CNT (33) tail calls: the counter ends at 34 (tests/test_tail_calls.py). */
#include "../../../samples/c/bpf_helpers.h"


int entry(struct __sk_buff *skb);

struct {
	__uint(type, 3);              /* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jmp SEC(".maps") = { .values = { [0] = (void *)&entry } };

__u32 count;

static __noinline int sub(struct __sk_buff *skb)
{
	count++;
	bpf_tail_call(skb, &jmp, 0);
	return 1;
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	int r = sub(skb);
	return r + skb->len;
}

char LICENSE[] SEC("license") = "GPL";
