/* tc (sched_cls) programs: classifiers, markers and header rewriters, with direct packet access
 * and the legacy LD_ABS loads, and a tail-call dispatcher filled by __array(values, ...). */
#include "corpus.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u16);
	__type(value, __u32);
} port_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} tc_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} handled SEC(".maps");

__u32 frags_dropped, rewrites;
const volatile __u16 nat_from = 53, nat_to = 5353;

static __always_inline struct iphdr *ip_of(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	return ip;
}

static __always_inline __u16 l4_dport(struct __sk_buff *skb, struct iphdr *ip)
{
	void *data_end = (void *)(long)skb->data_end;
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > data_end)
		return 0;
	return bpf_ntohs(ports[1]);
}

SEC("tc")
int tc_mark_by_port(struct __sk_buff *skb)
{
	struct iphdr *ip = ip_of(skb);
	if (!ip || (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return TC_ACT_OK;
	__u16 port = l4_dport(skb, ip);
	__u32 *mark = bpf_map_lookup_elem(&port_marks, &port);
	if (mark) {
		skb->mark = *mark;
	} else {
		__u32 m = 0x100 + port % 7;
		bpf_map_update_elem(&port_marks, &port, &m, BPF_NOEXIST);
		skb->mark = m;
	}
	return TC_ACT_OK;
}

SEC("tc")
int tc_priority_from_dscp(struct __sk_buff *skb)
{
	struct iphdr *ip = ip_of(skb);
	if (!ip)
		return TC_ACT_OK;
	__u8 dscp = ip->tos >> 2;
	skb->priority = dscp >= 46 ? 6 : dscp >= 32 ? 4 : 0;
	skb->tc_index = dscp;
	return TC_ACT_OK;
}

SEC("tc")
int tc_dscp_rewrite(struct __sk_buff *skb)
{
	struct iphdr *ip = ip_of(skb);
	if (!ip || ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	__u16 old = *(__u16 *)ip;
	ip->tos = (0x0a << 2) | (ip->tos & 3);        /* AF11 */
	ip->check = csum_replace2(ip->check, old, *(__u16 *)ip);
	rewrites++;
	return TC_ACT_OK;
}

SEC("tc")
int tc_drop_fragments(struct __sk_buff *skb)
{
	struct iphdr *ip = ip_of(skb);
	if (ip && (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))) {
		frags_dropped++;
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

SEC("tc")
int tc_count_bytes(struct __sk_buff *skb)
{
	__u32 key = skb->protocol == bpf_htons(ETH_P_IP) ? 0 :
		    skb->protocol == bpf_htons(ETH_P_IPV6) ? 1 :
		    skb->protocol == bpf_htons(ETH_P_ARP) ? 2 : 3;
	__u64 *v = bpf_map_lookup_elem(&tc_bytes, &key);
	if (v)
		__sync_fetch_and_add(v, skb->len);
	return TC_ACT_OK;
}

SEC("tc")
int tc_cb_scratch(struct __sk_buff *skb)
{
	skb->cb[0] = skb->len;
	skb->cb[1] = skb->protocol;
	skb->cb[2] = skb->ifindex;
	skb->cb[3] = skb->cb[0] ^ skb->cb[1];
	skb->cb[4] = skb->pkt_type;
	return skb->len & 1;
}

SEC("tc")
int tc_ldabs_classify(struct __sk_buff *skb)
{
	if (load_half(skb, 12) != ETH_P_IP)
		return TC_ACT_OK;
	__u32 proto = load_byte(skb, ETH_HLEN + 9);
	__u32 ihl = (load_byte(skb, ETH_HLEN) & 0xf) * 4;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
		skb->mark = load_half(skb, ETH_HLEN + ihl + 2);
	skb->priority = load_word(skb, ETH_HLEN + 12) & 0xff;
	return proto == IPPROTO_ICMP ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("tc")
int tc_port_nat(struct __sk_buff *skb)
{
	struct iphdr *ip = ip_of(skb);
	void *data_end = (void *)(long)skb->data_end;
	if (!ip || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return TC_ACT_OK;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end || udp->dest != bpf_htons(nat_from))
		return TC_ACT_OK;
	__u16 old = udp->dest;
	udp->dest = bpf_htons(nat_to);
	if (udp->check)
		udp->check = csum_replace2(udp->check, old, udp->dest);
	rewrites++;
	return TC_ACT_OK;
}

static __always_inline void count(__u32 k)
{
	__u32 *v = bpf_map_lookup_elem(&handled, &k);
	if (v)
		*v += 1;
}

int tc_handle_tcp(struct __sk_buff *skb);
int tc_handle_udp(struct __sk_buff *skb);
int tc_handle_other(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} dispatch SEC(".maps") = {
	.values = { [0] = (void *)&tc_handle_tcp, [1] = (void *)&tc_handle_udp,
		    [2] = (void *)&tc_handle_other },
};

SEC("tc")
int tc_dispatch(struct __sk_buff *skb)
{
	struct iphdr *ip = ip_of(skb);
	__u32 slot = !ip ? 2 : ip->protocol == IPPROTO_TCP ? 0 : ip->protocol == IPPROTO_UDP ? 1 : 2;
	count(7);
	bpf_tail_call(skb, &dispatch, slot);
	return TC_ACT_SHOT;          /* only when the slot is empty */
}

SEC("tc")
int tc_handle_tcp(struct __sk_buff *skb)
{
	count(0);
	skb->mark = 6;
	return TC_ACT_OK;
}

SEC("tc")
int tc_handle_udp(struct __sk_buff *skb)
{
	count(1);
	skb->mark = 17;
	return TC_ACT_OK;
}

SEC("tc")
int tc_handle_other(struct __sk_buff *skb)
{
	count(2);
	return skb->protocol == bpf_htons(ETH_P_ARP) ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
