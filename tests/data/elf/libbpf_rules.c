/* libbpf's object rules pybpf follows (tests/test_elf_libbpf.py): programs that cannot load
 * fail alone, SEC("?...") is not autoloaded, __array(values, ...) fills a prog_array. */
#include "../../../samples/c/bpf_helpers.h"



struct {
	__uint(type, 15);               /* BPF_MAP_TYPE_SOCKMAP: pybpf has no sockets */
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

int leaf(struct __sk_buff *skb);

struct {
	__uint(type, 3);                /* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [2] = (void *)&leaf },
};

SEC("tc")
int leaf(struct __sk_buff *skb)
{
	__u32 k = 1;
	__u64 *v = bpf_map_lookup_elem(&hits, &k);
	if (v)
		*v += 1;
	return 7;
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &jumps, 2);
	return 1;
}

SEC("?tc")
int optional(struct __sk_buff *skb)
{
	return skb->len;
}

SEC("sk_skb/stream_verdict")
int uses_sockmap(struct __sk_buff *skb)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&socks, &k) != 0;
}

SEC("not_a_libbpf_section")
int unknown_section(struct __sk_buff *skb)
{
	return 3;
}

char LICENSE[] SEC("license") = "GPL";
