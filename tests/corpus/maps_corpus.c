/* XDP and tc programs over the lookup structures real data planes use: an LPM routing table,
 * a bloom filter in front of a hash, and per-protocol counters in maps of maps. */
#include "corpus.h"

#define BPF_MAP_TYPE_LPM_TRIE 11
#define BPF_MAP_TYPE_ARRAY_OF_MAPS 12
#define BPF_MAP_TYPE_HASH_OF_MAPS 13
#define BPF_MAP_TYPE_BLOOM_FILTER 30

struct lpm_v4 { __u32 prefixlen; __u8 addr[4]; };

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u32);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 64);
	__type(value, __u32);
} seen_src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} src_count SEC(".maps");

struct inner_counters {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
};

struct inner_counters tcp_counters SEC(".maps"), udp_counters SEC(".maps"),
	other_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, struct inner_counters);
} counters_by_proto SEC(".maps") = {
	.values = { [0] = &tcp_counters, [1] = &udp_counters, [2] = &other_counters },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u16);
	__array(values, struct inner_counters);
} counters_by_port SEC(".maps") = {
	.values = { [0] = &tcp_counters },
};

__u32 routes_ready, bloom_hits, bloom_misses;

static __always_inline void add_route(__u32 plen, __u8 a, __u8 b, __u8 c, __u32 nexthop)
{
	struct lpm_v4 k = { plen, { a, b, c, 0 } };
	bpf_map_update_elem(&routes, &k, &nexthop, BPF_ANY);
}

SEC("xdp")
int xdp_lpm_route(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if (!routes_ready) {
		add_route(0, 0, 0, 0, 1);          /* default route */
		add_route(8, 10, 0, 0, 2);
		add_route(24, 10, 0, 0, 3);
		add_route(32, 10, 0, 0, 4);        /* 10.0.0.0/32: never matches our hosts */
		routes_ready = 1;
	}
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct lpm_v4 key = { 32 };
	__builtin_memcpy(key.addr, &ip->daddr, 4);
	__u32 *nh = bpf_map_lookup_elem(&routes, &key);
	if (!nh)
		return XDP_DROP;
	if (*nh == 3 && ip->ttl == 1) {          /* a host route learnt from the traffic */
		struct lpm_v4 host = { 32 };
		__builtin_memcpy(host.addr, &ip->saddr, 4);
		__u32 v = 9;
		bpf_map_update_elem(&routes, &host, &v, BPF_NOEXIST);
	}
	return *nh >= 3 ? XDP_TX : XDP_PASS;
}

SEC("xdp")
int xdp_lpm_prefixes(struct xdp_md *ctx)
{
	/* lookups with shorter keys, deletes, and NOEXIST/EXIST on exact prefixes */
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct lpm_v4 k = { 16 };
	__builtin_memcpy(k.addr, &ip->saddr, 4);
	__u32 one = ip->protocol, r = 0;
	r |= (bpf_map_update_elem(&routes, &k, &one, BPF_NOEXIST) == 0) << 0;
	r |= (bpf_map_update_elem(&routes, &k, &one, BPF_EXIST) == 0) << 1;
	k.prefixlen = 12;
	r |= (bpf_map_lookup_elem(&routes, &k) != 0) << 2;
	k.prefixlen = 20;
	__u32 *v = bpf_map_lookup_elem(&routes, &k);
	if (v)
		r |= *v << 8;
	if (ip->protocol == IPPROTO_ICMP) {
		k.prefixlen = 16;
		r |= (bpf_map_delete_elem(&routes, &k) == 0) << 3;
	}
	k.prefixlen = 33;
	r |= (bpf_map_update_elem(&routes, &k, &one, BPF_ANY) != 0) << 4;
	return r;
}

SEC("xdp")
int xdp_bloom_gate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	__u32 src = ip->saddr;
	if (bpf_map_peek_elem(&seen_src, &src) == 0) {
		bloom_hits++;
		__u32 *n = bpf_map_lookup_elem(&src_count, &src);
		if (n)
			*n += 1;
		return XDP_PASS;
	}
	bloom_misses++;
	bpf_map_push_elem(&seen_src, &src, BPF_ANY);
	__u32 one = 1;
	bpf_map_update_elem(&src_count, &src, &one, BPF_NOEXIST);
	return XDP_DROP;
}

SEC("tc")
int tc_counters_in_maps(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 outer = 2, pkts = 0, bytes = 1;
	if ((void *)(ip + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IP))
		outer = ip->protocol == IPPROTO_TCP ? 0 : ip->protocol == IPPROTO_UDP ? 1 : 2;
	void *inner = bpf_map_lookup_elem(&counters_by_proto, &outer);
	if (!inner)
		return TC_ACT_SHOT;
	__u64 *p = bpf_map_lookup_elem(inner, &pkts), *b = bpf_map_lookup_elem(inner, &bytes);
	if (p)
		*p += 1;
	if (b)
		*b += skb->len;
	__u16 port = 0;
	void *by_port = bpf_map_lookup_elem(&counters_by_port, &port);
	if (by_port) {
		__u32 k = 3;
		__u64 *c = bpf_map_lookup_elem(by_port, &k);
		if (c)
			*c += outer;
	}
	__u32 missing = 7;
	return bpf_map_lookup_elem(&counters_by_proto, &missing) ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
