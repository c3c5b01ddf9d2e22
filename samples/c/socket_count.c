// SPDX-License-Identifier: MIT
/* A socket filter in the old style: a legacy map definition in the "maps" section, packet bytes
 * read with the LD_ABS instructions (llvm.bpf.load.* intrinsics), and bpf_trace_printk with a string
 * literal (.rodata.str1.1). It counts IPv4 packets per IP protocol and keeps every packet
 * (returns -1: the whole packet), or drops those whose protocol is in the .data list (returns 0).
 * Like a filter on an AF_INET socket (and as BPF_PROG_TEST_RUN runs it) it sees each packet from
 * the network header: LD_ABS offsets count from the IP header, skb->len leaves out Ethernet.
 */
#include "bpf_helpers.h"

/* LD_ABS packet loads through LLVM intrinsics (libbpf's bpf_legacy.h); they return host order. */
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
#define ETH_P_IP 0x0800
#define bpf_htons(x) __builtin_bswap16(x)

struct bpf_map_def SEC("maps") proto_count = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 256,
};

struct bpf_map_def SEC("maps") proto_bytes = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 64,
	.map_flags = BPF_F_NO_PREALLOC,
};

__u8 rejected_protos[4] = { 2, 0, 0, 0 };	/* IGMP; zero ends the list */
int verbose;					/* .bss: 1 = trace every packet */

SEC("socket")
int socket_count(struct __sk_buff *skb)
{
	__u32 proto;
	__u64 *n, one = 1, len = skb->len;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return -1;
	proto = load_byte(skb, 9);
	n = bpf_map_lookup_elem(&proto_count, &proto);
	if (n)
		__sync_fetch_and_add(n, 1);
	n = bpf_map_lookup_elem(&proto_bytes, &proto);
	if (n)
		__sync_fetch_and_add(n, len);
	else
		bpf_map_update_elem(&proto_bytes, &proto, &len, BPF_NOEXIST);
	if (verbose)
		bpf_trace_printk("proto %u len %u\n", sizeof("proto %u len %u\n"), proto, skb->len);
	for (int i = 0; i < 4; i++) {
		if (!rejected_protos[i])
			break;
		if (rejected_protos[i] == proto)
			return 0;
	}
	return -1;
}

char _license[] SEC("license") = "GPL";
