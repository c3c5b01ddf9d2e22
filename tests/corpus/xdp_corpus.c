/* XDP programs in the style of real load balancers, firewalls and routers. */
#include "corpus.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} proto_pkts SEC(".maps");

struct flow_key { __u32 saddr, daddr; __u16 sport, dport; __u8 proto, pad[3]; };
struct flow_stats { __u64 packets, bytes; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u16);
	__type(value, __u32);
} vlan_pkts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u16);
	__type(value, __u32);
} syn_per_port SEC(".maps");

/* configuration, as a loader would set it before load */
volatile __u32 blocked_saddr = 0x0300000a;      /* 10.0.0.3 in network order */
volatile __u32 syn_limit = 2;
volatile __u16 dns_port = 53;
__u32 dns_allow[4] = { 0x0100000a, 0x0200000a, 0, 0 };
__u64 dropped, passed;

static __always_inline int parse_eth(void *data, void *data_end, __u16 *proto, __u32 *off)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	*proto = bpf_ntohs(eth->h_proto);
	*off = sizeof(*eth);
	return 0;
}

SEC("xdp")
int xdp_pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_drop_non_ip(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u16 proto;
	__u32 off;
	if (parse_eth(data, data_end, &proto, &off))
		return XDP_ABORTED;
	if (proto == ETH_P_IP || proto == ETH_P_IPV6) {
		passed++;
		return XDP_PASS;
	}
	dropped++;
	return XDP_DROP;
}

SEC("xdp")
int xdp_count_proto(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	__u32 key = ip->protocol;
	__u64 *v = bpf_map_lookup_elem(&proto_pkts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_PASS;
}

SEC("xdp")
int xdp_blocklist(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP) && ip->saddr == blocked_saddr) {
		dropped++;
		return XDP_DROP;
	}
	return XDP_PASS;
}

SEC("xdp")
int xdp_swap_macs(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 tmp[ETH_ALEN];
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return XDP_TX;
}

SEC("xdp")
int xdp_router_ttl(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->ttl <= 1)
		return XDP_DROP;
	__u16 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	ip->check = csum_replace2(ip->check, old, *(__u16 *)&ip->ttl);
	return XDP_TX;
}

SEC("xdp")
int xdp_vlan_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__u16 proto = eth->h_proto;
	struct vlan_hdr *vh = (void *)(eth + 1);
	__u16 vid = 0;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return XDP_DROP;
		vid = bpf_ntohs(vh->h_vlan_TCI) & 0x0fff;
		proto = vh->h_vlan_encapsulated_proto;
		vh++;
	}
	__u32 one = 1, *cnt = bpf_map_lookup_elem(&vlan_pkts, &vid);
	if (cnt)
		(*cnt)++;
	else
		bpf_map_update_elem(&vlan_pkts, &vid, &one, BPF_NOEXIST);
	return proto == bpf_htons(ETH_P_IP) ? XDP_PASS : XDP_DROP;
}

SEC("xdp")
int xdp_ipv6_hoplimit(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	if ((void *)(ip6 + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	if (ip6->hop_limit <= 1)
		return XDP_DROP;
	ip6->hop_limit--;
	return XDP_TX;
}

SEC("xdp")
int xdp_syn_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > data_end)
		return XDP_DROP;
	if (!tcp->syn || tcp->ack)
		return XDP_PASS;
	__u16 port = bpf_ntohs(tcp->dest);
	__u32 *n = bpf_map_lookup_elem(&syn_per_port, &port);
	if (!n) {
		__u32 one = 1;
		bpf_map_update_elem(&syn_per_port, &port, &one, BPF_ANY);
		return XDP_PASS;
	}
	if (++*n > syn_limit)
		return XDP_DROP;
	return XDP_PASS;
}

SEC("xdp")
int xdp_dns_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_DROP;
	if (udp->dest != bpf_htons(dns_port))
		return XDP_PASS;
	for (int i = 0; i < 4; i++)
		if (dns_allow[i] && dns_allow[i] == ip->saddr)
			return XDP_PASS;
	dropped++;
	return XDP_DROP;
}

SEC("xdp")
int xdp_icmp_echo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_ICMP || ip->ihl != 5)
		return XDP_PASS;
	struct icmphdr *icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) > data_end)
		return XDP_DROP;
	if (icmp->type != 8)
		return XDP_PASS;
	__u32 tmp = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = tmp;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__u16 old = *(__u16 *)icmp;
	icmp->type = 0;
	icmp->checksum = csum_replace2(icmp->checksum, old, *(__u16 *)icmp);
	return XDP_TX;
}

SEC("xdp")
int xdp_flow_stats(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct flow_key key = {};
	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.proto = ip->protocol;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		__u16 *ports = (void *)ip + ip->ihl * 4;
		if ((void *)(ports + 2) > data_end)
			return XDP_PASS;
		key.sport = bpf_ntohs(ports[0]);
		key.dport = bpf_ntohs(ports[1]);
	}
	__u64 len = data_end - data;
	struct flow_stats *st = bpf_map_lookup_elem(&flows, &key);
	if (st) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, len);
	} else {
		struct flow_stats init = { 1, len };
		bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST);
	}
	return XDP_PASS;
}

SEC("xdp")
int xdp_conntrack_lru(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	__u32 peer = ip->saddr ^ ip->daddr;
	__u64 *seen = bpf_map_lookup_elem(&conntrack, &peer);
	if (seen) {
		*seen += 1;
		return XDP_PASS;
	}
	__u64 one = 1;
	bpf_map_update_elem(&conntrack, &peer, &one, BPF_ANY);
	return XDP_DROP;
}

SEC("xdp")
int xdp_ip_options(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	__u8 *opt = (void *)(ip + 1);
	__u32 olen = ip->ihl * 4 - sizeof(*ip), i = 0, kinds = 0;
	/* walk the options as a router's slow path does: end (0), nop (1), others with a length */
#pragma clang loop unroll(disable)
	for (int n = 0; n < 10; n++) {
		if (i >= olen || i > 36)
			break;
		if ((void *)(opt + i + 2) > data_end)
			return XDP_DROP;
		__u8 kind = opt[i];
		if (kind == 0)
			break;
		kinds = kinds * 31 + kind;
		if (kind == 1) {
			i++;
			continue;
		}
		__u8 l = opt[i + 1];
		if (l < 2)
			return XDP_DROP;
		i += l;
	}
	passed += kinds;
	return kinds & 1 ? XDP_TX : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
