/* XDP programs using the packet helpers and redirects, in the style of real VLAN taggers,
 * tunnel endpoints, reflectors, routers and load balancers. Map contents the programs expect
 * (devmap, cpumap) are set by tests/corpus_run.py (MAP_INIT) in pybpf and in the kernel. */
#include "corpus.h"

#define BPF_MAP_TYPE_DEVMAP 14
#define BPF_MAP_TYPE_CPUMAP 16
#define BPF_MAP_TYPE_DEVMAP_HASH 25
#define AF_INET 2
#define BPF_FIB_LKUP_RET_SUCCESS 0

static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *) 23;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *) 51;
static long (*bpf_xdp_adjust_tail)(struct xdp_md *xdp_md, int delta) = (void *) 65;
static long (*bpf_fib_lookup)(void *ctx, void *params, int plen, __u32 flags) = (void *) 69;
static long (*bpf_xdp_get_buff_len)(struct xdp_md *xdp_md) = (void *) 188;
static long (*bpf_xdp_load_bytes)(struct xdp_md *xdp_md, __u32 offset, void *buf, __u32 len) = (void *) 189;
static long (*bpf_xdp_store_bytes)(struct xdp_md *xdp_md, __u32 offset, void *buf, __u32 len) = (void *) 190;

struct bpf_fib_lookup {
	__u8 family, l4_protocol;
	__be16 sport, dport;
	__u16 tot_len;
	__u32 ifindex;
	__u32 tos;
	__u32 ipv4_src, src_pad[3];
	__u32 ipv4_dst, dst_pad[3];
	__be16 h_vlan_proto, h_vlan_TCI;
	__u8 smac[6], dmac[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} tx_by_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} xstats SEC(".maps");

static __always_inline void count(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&xstats, &slot);
	if (v)
		*v += n;
}

/* push an 802.1Q tag (VLAN 100) in front of the ethertype */
SEC("xdp")
int xdp_vlan_push(struct xdp_md *ctx)
{
	struct ethhdr eth;
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return XDP_DROP;
	__builtin_memcpy(&eth, data, sizeof(eth));
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct vlan_hdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *neth = data;
	struct vlan_hdr *vh = data + sizeof(*neth);
	if ((void *)(vh + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(neth->h_dest, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(neth->h_source, eth.h_source, ETH_ALEN);
	neth->h_proto = bpf_htons(ETH_P_8021Q);
	vh->h_vlan_TCI = bpf_htons(100);
	vh->h_vlan_encapsulated_proto = eth.h_proto;
	count(0, 1);
	return XDP_PASS;
}

/* strip an outer 802.1Q/802.1ad tag */
SEC("xdp")
int xdp_vlan_pop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vlan_hdr *vh = data + sizeof(*eth);
	if ((void *)(vh + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_8021Q) && eth->h_proto != bpf_htons(ETH_P_8021AD))
		return XDP_PASS;
	struct ethhdr copy;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	copy.h_proto = vh->h_vlan_encapsulated_proto;
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct vlan_hdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(copy) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &copy, sizeof(copy));
	count(1, 1);
	return XDP_PASS;
}

static __always_inline __u16 ip_csum(struct iphdr *ip)
{
	__u32 sum = 0;
	__u16 *p = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += p[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* IPIP encapsulation towards 192.0.2.1, sent back out (XDP_TX) */
SEC("xdp")
int xdp_ipip_encap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *inner = data + sizeof(*eth);
	if ((void *)(inner + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct ethhdr e;
	__builtin_memcpy(&e, eth, sizeof(e));
	__u16 inner_len = bpf_ntohs(inner->tot_len);
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	struct iphdr *outer = data + sizeof(*eth);
	if ((void *)(outer + 1) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, &e, sizeof(e));
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = 0;
	outer->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
	outer->id = 0;
	outer->frag_off = 0;
	outer->ttl = 64;
	outer->protocol = 4;
	outer->check = 0;
	outer->saddr = bpf_htonl(0xc0000264);
	outer->daddr = bpf_htonl(0xc0000201);
	outer->check = ip_csum(outer);
	count(2, bpf_xdp_get_buff_len(ctx));
	return XDP_TX;
}

/* snap every packet to 60 bytes, counting what was cut */
SEC("xdp")
int xdp_snaplen(struct xdp_md *ctx)
{
	long len = bpf_xdp_get_buff_len(ctx);
	if (len > 60) {
		if (bpf_xdp_adjust_tail(ctx, (int)(60 - len)))
			return XDP_ABORTED;
		count(3, len - 60);
	}
	count(4, bpf_xdp_get_buff_len(ctx));
	return XDP_PASS;
}

/* pad short frames to 64 bytes with a trailer marker */
SEC("xdp")
int xdp_pad_min(struct xdp_md *ctx)
{
	long len = bpf_xdp_get_buff_len(ctx);
	if (len >= 64)
		return XDP_PASS;
	if (bpf_xdp_adjust_tail(ctx, (int)(64 - len)))
		return XDP_ABORTED;
	__u8 marker = 0xee;
	if (bpf_xdp_store_bytes(ctx, 63, &marker, 1))
		return XDP_ABORTED;
	count(5, 64 - len);
	return XDP_PASS;
}

/* a reflector: swap MACs and IPv4 addresses with load/store_bytes, send back */
SEC("xdp")
int xdp_reflect(struct xdp_md *ctx)
{
	struct ethhdr eth;
	struct iphdr ip;
	if (bpf_xdp_load_bytes(ctx, 0, &eth, sizeof(eth)))
		return XDP_PASS;
	if (eth.h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (bpf_xdp_load_bytes(ctx, sizeof(eth), &ip, sizeof(ip)))
		return XDP_DROP;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, mac, ETH_ALEN);
	__u32 a = ip.saddr;
	ip.saddr = ip.daddr;
	ip.daddr = a;
	if (bpf_xdp_store_bytes(ctx, 0, &eth, sizeof(eth)) ||
	    bpf_xdp_store_bytes(ctx, sizeof(eth), &ip, sizeof(ip)))
		return XDP_ABORTED;
	/* a read past the end fails with -EINVAL, counted */
	__u64 probe;
	long err = bpf_xdp_load_bytes(ctx, bpf_xdp_get_buff_len(ctx) - 4, &probe, sizeof(probe));
	count(6, (__u64)-err);
	return XDP_TX;
}

/* a port-based forwarder: UDP to tx_ports[0], TCP to tx_ports[1] (empty: XDP_PASS) */
SEC("xdp")
int xdp_devmap_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return bpf_redirect_map(&tx_ports, 3, XDP_DROP);
	__u32 key = ip->protocol == IPPROTO_UDP ? 0 : ip->protocol == IPPROTO_TCP ? 1 : 2;
	long act = bpf_redirect_map(&tx_ports, key, XDP_PASS);
	count(7 + (act == XDP_REDIRECT), 1);
	return act;
}

/* per-source steering: devmap_hash by source address, else a CPU by address parity */
SEC("xdp")
int xdp_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	__u32 src = bpf_ntohl(ip->saddr);
	long act = bpf_redirect_map(&tx_by_addr, src, 0);
	if (act == XDP_REDIRECT)
		return act;
	return bpf_redirect_map(&cpus, src & 1, XDP_DROP);
}

/* UDP goes out ifindex 1 with bpf_redirect; a bad flag aborts */
SEC("xdp")
int xdp_redirect_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->protocol == IPPROTO_UDP)
		return bpf_redirect(1, 0);
	if (ip->protocol == IPPROTO_ICMP)
		return bpf_redirect(1, 1);
	return XDP_PASS;
}

/* a router: fib_lookup from the IPv4 header, forward on success, count the result codes */
SEC("xdp")
int xdp_router(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->ttl <= 1)
		return XDP_PASS;
	struct bpf_fib_lookup p = {};
	p.family = AF_INET;
	p.tos = ip->tos;
	p.l4_protocol = ip->protocol;
	p.tot_len = bpf_ntohs(ip->tot_len);
	p.ipv4_src = ip->saddr;
	p.ipv4_dst = ip->daddr;
	p.ifindex = ctx->ingress_ifindex;
	long rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	count(9 + (rc < 0 ? 6 : rc > 5 ? 5 : rc), 1);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;
	__u16 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	ip->check = csum_replace2(ip->check, old, *(__u16 *)&ip->ttl);
	__builtin_memcpy(eth->h_dest, p.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, p.smac, ETH_ALEN);
	return bpf_redirect(p.ifindex, 0);
}

char _license[] SEC("license") = "GPL";
