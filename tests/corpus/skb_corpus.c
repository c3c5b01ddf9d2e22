/* Socket filters and cgroup_skb programs: they see packets from the network header (the
 * kernel's BPF_PROG_TEST_RUN pulls the Ethernet header), read them with LD_ABS (socket filters)
 * or through __sk_buff fields, and return how many bytes to keep / whether to allow. */
#include "corpus.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} sock_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} cg_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} cg_verdicts SEC(".maps");

__u32 max_len = 60;
__u64 denied;

SEC("socket")
int sock_keep_udp(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	return load_byte(skb, 9) == IPPROTO_UDP ? -1 : 0;
}

SEC("socket")
int sock_headers_only(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return skb->len;
	__u32 ihl = (load_byte(skb, 0) & 0xf) * 4;
	__u32 proto = load_byte(skb, 9);
	__u32 l4 = proto == IPPROTO_TCP ? 20 : proto == IPPROTO_UDP ? 8 : 0;
	return ihl + l4;
}

SEC("socket")
int sock_count_proto(struct __sk_buff *skb)
{
	__u32 proto = skb->protocol == bpf_htons(ETH_P_IP) ? load_byte(skb, 9) :
		      skb->protocol == bpf_htons(ETH_P_IPV6) ? load_byte(skb, 6) : 255;
	__u64 *n = bpf_map_lookup_elem(&sock_proto, &proto);
	if (n)
		__sync_fetch_and_add(n, skb->len);
	return -1;
}

SEC("socket")
int sock_dport_filter(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP) || load_byte(skb, 9) != IPPROTO_TCP)
		return 0;
	if (load_half(skb, 6) & 0x3fff)             /* fragments have no ports */
		return 0;
	__u32 ihl = (load_byte(skb, 0) & 0xf) * 4;
	__u32 dport = load_half(skb, ihl + 2);
	__u32 flags = load_byte(skb, ihl + 13);
	return dport == 80 && (flags & 0x02) ? 0xffff : 0;
}

SEC("socket")
int sock_ipv6_nexthdr(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return 0;
	__u32 nh = load_byte(skb, 6), hop = load_byte(skb, 7);
	return (nh << 8 | hop) + load_word(skb, 36);
}

SEC("socket")
int sock_len_cap(struct __sk_buff *skb)
{
	return skb->len > max_len ? max_len : skb->len;
}

SEC("socket")
int sock_pkt_type(struct __sk_buff *skb)
{
	return skb->pkt_type << 16 | skb->ifindex << 8 | (skb->protocol >> 8);
}

SEC("cgroup_skb/egress")
int cg_allow_ip(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP) || skb->protocol == bpf_htons(ETH_P_IPV6))
		return 1;
	denied++;
	return 0;
}

SEC("cgroup_skb/ingress")
int cg_byte_budget(struct __sk_buff *skb)
{
	__u32 key = skb->protocol;
	__u64 *used = bpf_map_lookup_elem(&cg_bytes, &key);
	__u64 len = skb->len;
	if (!used) {
		bpf_map_update_elem(&cg_bytes, &key, &len, BPF_NOEXIST);
		return 1;
	}
	if (*used + len > 200)
		return 0;
	*used += len;
	return 1;
}

SEC("cgroup_skb/egress")
int cg_len_mark(struct __sk_buff *skb)
{
	__u32 k = skb->len > 50 ? 1 : 0;
	__u32 *v = bpf_map_lookup_elem(&cg_verdicts, &k);
	if (v)
		*v += 1;
	if (skb->mark == 0)
		skb->mark = 0x42 + k;
	skb->priority = skb->pkt_type;
	return skb->len <= max_len;
}

SEC("cgroup/skb")
int cg_cb_state(struct __sk_buff *skb)
{
	skb->cb[0] = skb->len;
	skb->cb[1] = skb->protocol;
	skb->cb[4] = skb->cb[0] * 3;
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
