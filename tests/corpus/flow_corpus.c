/* Flow dissectors in the style of the kernel's selftest bpf_flow.c: parse VLAN, IPv4 (with
 * fragments and options), IPv6 and the L4 ports into struct bpf_flow_keys, with direct packet
 * access, and one that hands IPv6 to a second program by tail call. Raw tracepoints beside. */
#include "corpus.h"

#define BPF_OK 0
#define BPF_DROP 2
#define BPF_FLOW_DISSECTOR_F_PARSE_1ST_FRAG (1U << 0)
#define BPF_FLOW_DISSECTOR_F_STOP_AT_ENCAP (1U << 2)

struct bpf_flow_keys {
	__u16 nhoff, thoff, addr_proto;
	__u8 is_frag, is_first_frag, is_encap, ip_proto;
	__be16 n_proto, sport, dport;
	union {
		struct { __be32 ipv4_src, ipv4_dst; };
		struct { __u32 ipv6_src[4], ipv6_dst[4]; };
	};
	__u32 flags;
	__be32 flow_label;
};

/* the flow dissector's view of __sk_buff: data, data_end and flow_keys (offset 144) */
struct fd_skb {
	__u32 pad0[19], data, data_end, pad1[15];
	struct bpf_flow_keys *flow_keys;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} dissected SEC(".maps");

static __always_inline void bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&dissected, &k);
	if (v)
		*v += 1;
}

static __always_inline int parse_ports(struct fd_skb *skb, struct bpf_flow_keys *keys,
				       void *l4, __u8 proto)
{
	void *data_end = (void *)(long)skb->data_end;
	keys->ip_proto = proto;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end || tcp->doff < 5)
			return BPF_DROP;
		keys->sport = tcp->source;
		keys->dport = tcp->dest;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return BPF_DROP;
		keys->sport = udp->source;
		keys->dport = udp->dest;
	}
	return BPF_OK;
}

static __always_inline int parse_ipv4(struct fd_skb *skb, struct bpf_flow_keys *keys)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	__u32 nh = keys->nhoff;
	if (nh > 64)                    /* bounded offsets, as the verifier wants them */
		return BPF_DROP;
	struct iphdr *ip = data + nh;
	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		return BPF_DROP;
	keys->addr_proto = ETH_P_IP;
	keys->ipv4_src = ip->saddr;
	keys->ipv4_dst = ip->daddr;
	__u32 th = nh + ip->ihl * 4;
	keys->thoff = th;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) {
		keys->is_frag = 1;
		if (ip->frag_off & bpf_htons(IP_OFFSET))
			return BPF_OK;              /* later fragments: no ports */
		keys->is_first_frag = 1;
		if (!(keys->flags & BPF_FLOW_DISSECTOR_F_PARSE_1ST_FRAG))
			return BPF_OK;
	}
	return parse_ports(skb, keys, data + th, ip->protocol);
}

static __always_inline int parse_ipv6(struct fd_skb *skb, struct bpf_flow_keys *keys)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	__u32 nh = keys->nhoff;
	if (nh > 64)
		return BPF_DROP;
	struct ipv6hdr *ip6 = data + nh;
	if ((void *)(ip6 + 1) > data_end)
		return BPF_DROP;
	keys->addr_proto = ETH_P_IPV6;
	__builtin_memcpy(keys->ipv6_src, ip6->saddr, 16);
	__builtin_memcpy(keys->ipv6_dst, ip6->daddr, 16);
	keys->flow_label = *(__be32 *)ip6 & bpf_htonl(0x000fffff);
	keys->thoff = nh + sizeof(*ip6);
	return parse_ports(skb, keys, data + nh + sizeof(*ip6), ip6->nexthdr);
}

static __always_inline int skip_vlans(struct fd_skb *skb, struct bpf_flow_keys *keys,
				      __be16 *proto)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		__u32 nh = keys->nhoff;
		if (nh > 64)
			return BPF_DROP;
		struct vlan_hdr *vh = data + nh;
		if ((void *)(vh + 1) > data_end)
			return BPF_DROP;
		*proto = vh->h_vlan_encapsulated_proto;
		keys->nhoff += sizeof(*vh);
		keys->thoff = keys->nhoff;
	}
	return BPF_OK;
}

SEC("flow_dissector")
int flow_dissect(struct fd_skb *skb)
{
	struct bpf_flow_keys *keys = skb->flow_keys;
	__be16 proto = keys->n_proto;
	if (skip_vlans(skb, keys, &proto) != BPF_OK)
		return BPF_DROP;
	keys->n_proto = proto;
	if (proto == bpf_htons(ETH_P_IP)) {
		bump(0);
		return parse_ipv4(skb, keys);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		bump(1);
		return parse_ipv6(skb, keys);
	}
	bump(2);
	return BPF_DROP;
}

int flow_ipv6_stage(struct fd_skb *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} flow_stages SEC(".maps") = {
	.values = { [1] = (void *)&flow_ipv6_stage },
};

SEC("flow_dissector")
int flow_dissect_staged(struct fd_skb *skb)
{
	struct bpf_flow_keys *keys = skb->flow_keys;
	if (keys->n_proto == bpf_htons(ETH_P_IPV6))
		bpf_tail_call(skb, &flow_stages, 1);
	if (keys->n_proto != bpf_htons(ETH_P_IP))
		return BPF_DROP;
	return parse_ipv4(skb, keys);
}

SEC("flow_dissector")
int flow_ipv6_stage(struct fd_skb *skb)
{
	bump(3);
	return parse_ipv6(skb, skb->flow_keys);
}

SEC("flow_dissector")
int flow_l3_only(struct fd_skb *skb)
{
	/* moves nhoff past the end and thoff before nhoff: the kernel clamps both */
	struct bpf_flow_keys *keys = skb->flow_keys;
	keys->nhoff = 0xfff0;
	keys->thoff = 3;
	keys->is_encap = 1;
	return keys->n_proto == bpf_htons(ETH_P_ARP) ? BPF_DROP : BPF_OK;
}

char LICENSE[] SEC("license") = "GPL";
