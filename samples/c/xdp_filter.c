// SPDX-License-Identifier: MIT
/* An XDP packet filter: drops IPv4/IPv6 TCP and UDP packets whose destination port is in the
 * blocked_ports hash map (and, if drop_icmp is set, ICMP), passes everything else, and counts
 * verdicts per action in an array map and in the stats global.
 *
 * Packets are parsed with direct packet access (data/data_end bounds checks the verifier needs).
 * Run against packets built in Python: see samples/xdp_filter/README.md.
 */
#include "bpf_helpers.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58

struct ethhdr {
	__u8 h_dest[6];
	__u8 h_source[6];
	__be16 h_proto;
};

struct iphdr {
	__u8 ihl_version;	/* ihl in the low nibble (little-endian bitfield order) */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ports {		/* the first four bytes of both TCP and UDP headers */
	__be16 source;
	__be16 dest;
};

enum filter_mode {
	MODE_PASS_ALL = 0,	/* count only */
	MODE_BLOCKLIST = 1,	/* drop blocked ports */
};

struct filter_stats {
	__u64 packets;
	__u64 bytes;
	__u64 dropped;
	__u64 malformed;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);		/* destination port, host order */
	__type(value, __u8);		/* unused */
	__uint(max_entries, 64);
} blocked_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);		/* enum xdp_action */
	__type(value, __u64);
	__uint(max_entries, 5);
} action_count SEC(".maps");

const volatile enum filter_mode mode = MODE_BLOCKLIST;
const volatile bool drop_icmp = false;
struct filter_stats stats;
__u16 last_port = 0;

static __always_inline int count(int action)
{
	__u32 key = action;
	__u64 *n = bpf_map_lookup_elem(&action_count, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
	if (action == XDP_DROP)
		stats.dropped++;
	return action;
}

static __always_inline int port_verdict(void *l4, void *data_end)
{
	struct ports *p = l4;
	__u16 port;

	if ((void *)(p + 1) > data_end) {
		stats.malformed++;
		return count(XDP_ABORTED);
	}
	port = bpf_ntohs(p->dest);
	last_port = port;
	if (mode == MODE_BLOCKLIST && bpf_map_lookup_elem(&blocked_ports, &port))
		return count(XDP_DROP);
	return count(XDP_PASS);
}

SEC("xdp")
int xdp_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 proto;
	void *l4;

	stats.packets++;
	stats.bytes += data_end - data;
	if ((void *)(eth + 1) > data_end) {
		stats.malformed++;
		return count(XDP_ABORTED);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 ihl;

		if ((void *)(ip + 1) > data_end) {
			stats.malformed++;
			return count(XDP_ABORTED);
		}
		ihl = (ip->ihl_version & 0xf) * 4;
		if (ihl < sizeof(*ip)) {
			stats.malformed++;
			return count(XDP_ABORTED);
		}
		proto = ip->protocol;
		l4 = (void *)ip + ihl;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end) {
			stats.malformed++;
			return count(XDP_ABORTED);
		}
		proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return count(XDP_PASS);
	}
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
		return port_verdict(l4, data_end);
	if ((proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) && drop_icmp)
		return count(XDP_DROP);
	return count(XDP_PASS);
}

char _license[] SEC("license") = "Dual MIT/GPL";
