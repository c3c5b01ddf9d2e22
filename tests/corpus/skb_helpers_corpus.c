/* tc, socket filter and cgroup_skb programs built on the socket-buffer packet helpers: a NAT
 * rewriting addresses and ports with bpf_l3/l4_csum_replace, an IP-in-IP/UDP encapsulation with
 * bpf_skb_adjust_room and a header checksum from bpf_csum_diff, a header push and pop, padding
 * and trimming with bpf_skb_change_tail, an L2 header pushed with bpf_skb_change_head,
 * payload checksums, tunnel metadata and clones to the loopback. */
#include "corpus.h"

static long (*bpf_skb_store_bytes)(void *skb, __u32 off, const void *from, __u32 len, __u64 flags) = (void *) 9;
static long (*bpf_l3_csum_replace)(void *skb, __u32 off, __u64 from, __u64 to, __u64 flags) = (void *) 10;
static long (*bpf_l4_csum_replace)(void *skb, __u32 off, __u64 from, __u64 to, __u64 flags) = (void *) 11;
static long (*bpf_clone_redirect)(void *skb, __u32 ifindex, __u64 flags) = (void *) 13;
static long (*bpf_skb_get_tunnel_key)(void *skb, void *key, __u32 size, __u64 flags) = (void *) 20;
static long (*bpf_skb_set_tunnel_key)(void *skb, void *key, __u32 size, __u64 flags) = (void *) 21;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 off, void *to, __u32 len) = (void *) 26;
static __s64 (*bpf_csum_diff)(__be32 *from, __u32 from_size, __be32 *to, __u32 to_size, __u32 seed) = (void *) 28;
static long (*bpf_skb_change_tail)(void *skb, __u32 len, __u64 flags) = (void *) 38;
static long (*bpf_skb_pull_data)(void *skb, __u32 len) = (void *) 39;
static __s64 (*bpf_csum_update)(void *skb, __u32 csum) = (void *) 40;
static long (*bpf_skb_change_head)(void *skb, __u32 len, __u64 flags) = (void *) 43;
static long (*bpf_skb_adjust_room)(void *skb, __s32 len_diff, __u32 mode, __u64 flags) = (void *) 50;
static long (*bpf_skb_load_bytes_relative)(const void *skb, __u32 off, void *to, __u32 len, __u32 start) = (void *) 68;

#define BPF_F_RECOMPUTE_CSUM (1ULL << 0)
#define BPF_F_INVALIDATE_HASH (1ULL << 1)
#define BPF_F_PSEUDO_HDR (1ULL << 4)
#define BPF_F_MARK_MANGLED_0 (1ULL << 5)
#define BPF_ADJ_ROOM_NET 0
#define BPF_ADJ_ROOM_MAC 1
#define BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 (1ULL << 1)
#define BPF_F_ADJ_ROOM_ENCAP_L4_UDP (1ULL << 4)
#define BPF_HDR_START_MAC 0
#define BPF_HDR_START_NET 1
#define IP_CSUM_OFF (ETH_HLEN + 10)
#define IP_SRC_OFF (ETH_HLEN + 12)
#define IP_DST_OFF (ETH_HLEN + 16)

struct bpf_tunnel_key {
	__u32 tunnel_id;
	__u32 remote_ipv4[4];
	__u8 tunnel_tos, tunnel_ttl;
	__u16 tunnel_ext;
	__u32 tunnel_label;
	__u32 local_ipv4[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} helper_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __u32);
} payload_sums SEC(".maps");

__be32 nat_addr = 0x0a0a0a0a;   /* 10.10.10.10, the same bytes in either order */
__u16 nat_port_base = 40000;

static __always_inline void stat_add(__u32 k, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&helper_stats, &k);
	if (p)
		*p += v;
}

/* Source NAT: rewrite saddr (IP and L4 checksums through the pseudo header) and the source port */
SEC("tc")
int tc_snat(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return TC_ACT_OK;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return TC_ACT_OK;
	__u8 proto = ip->protocol;
	__u32 l4_csum_off, port_off = ETH_HLEN + sizeof(struct iphdr);
	if (proto == IPPROTO_TCP)
		l4_csum_off = port_off + 16;
	else if (proto == IPPROTO_UDP)
		l4_csum_off = port_off + 6;
	else
		return TC_ACT_OK;
	__be32 old_addr = ip->saddr, new_addr = nat_addr;
	__be16 old_port;
	if (bpf_skb_load_bytes(skb, port_off, &old_port, 2))
		return TC_ACT_SHOT;
	__be16 new_port = bpf_htons(nat_port_base + (bpf_ntohs(old_port) & 0xff));
	/* UDP checksum 0 means none: BPF_F_MARK_MANGLED_0 leaves it so */
	__u64 l4_flags = BPF_F_PSEUDO_HDR | (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	long r = bpf_l4_csum_replace(skb, l4_csum_off, old_addr, new_addr, l4_flags | 4);
	r |= bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, 4);
	r |= bpf_skb_store_bytes(skb, IP_SRC_OFF, &new_addr, 4, 0);
	r |= bpf_l4_csum_replace(skb, l4_csum_off, old_port, new_port,
				 (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0) | 2);
	r |= bpf_skb_store_bytes(skb, port_off, &new_port, 2, BPF_F_INVALIDATE_HASH);
	stat_add(0, r ? 0 : 1);
	return r ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Destination rewrite with one bpf_csum_diff for both checksums (size-0 replace) */
SEC("tc")
int tc_dnat_diff(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct tcphdr *tcp = data + ETH_HLEN + sizeof(*ip);
	if ((void *)(tcp + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
		return TC_ACT_OK;
	__be32 old = ip->daddr, new = bpf_htonl(0xc0a80001);
	__s64 diff = bpf_csum_diff(&old, 4, &new, 4, 0);
	if (diff < 0)
		return TC_ACT_SHOT;
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, 0, diff, 0);
	bpf_l4_csum_replace(skb, ETH_HLEN + sizeof(*ip) + 16, 0, diff, BPF_F_PSEUDO_HDR);
	bpf_skb_store_bytes(skb, IP_DST_OFF, &new, 4, 0);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return TC_ACT_SHOT;
	stat_add(1, ip->check);
	return TC_ACT_OK;
}

/* IP-in-UDP-in-IP encapsulation: room for an outer IPv4 + UDP header after the MAC header,
 * filled with bpf_skb_store_bytes, its IP checksum from bpf_csum_diff */
SEC("tc")
int tc_encap_udp(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct { struct iphdr ip; struct udphdr udp; } outer = {};
	__u32 inner_len = skb->len - ETH_HLEN;
	if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP))
		return TC_ACT_SHOT;
	outer.ip.version = 4;
	outer.ip.ihl = 5;
	outer.ip.ttl = 64;
	outer.ip.protocol = IPPROTO_UDP;
	outer.ip.tot_len = bpf_htons(inner_len + sizeof(outer));
	outer.ip.saddr = bpf_htonl(0xc0000201);
	outer.ip.daddr = bpf_htonl(0xc0000202);
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)&outer.ip, sizeof(outer.ip), 0);
	outer.ip.check = ~((sum & 0xffff) + (sum >> 16));
	outer.udp.source = bpf_htons(5000);
	outer.udp.dest = bpf_htons(4789);
	outer.udp.len = bpf_htons(inner_len + sizeof(outer.udp));
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &outer, sizeof(outer), 0))
		return TC_ACT_SHOT;
	stat_add(2, skb->len);
	/* a second encapsulation is refused (-EALREADY) */
	return bpf_skb_adjust_room(skb, 8, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) == -114 ?
	       TC_ACT_OK : TC_ACT_SHOT;
}

/* Push an 8-byte shim after the IP header, check it through fresh packet pointers, pop it */
SEC("tc")
int tc_push_pop(struct __sk_buff *skb)
{
	__u32 before = skb->len;
	long r = bpf_skb_adjust_room(skb, 8, BPF_ADJ_ROOM_NET, 0);
	if (r)
		return r == -524 ? TC_ACT_OK : TC_ACT_SHOT;     /* -ENOTSUPP: not IPv4/IPv6 */
	__u64 shim = 0x5348494d00000001ULL;
	__u32 off = ETH_HLEN + (skb->protocol == bpf_htons(ETH_P_IP) ? 20 : 40);
	bpf_skb_store_bytes(skb, off, &shim, 8, 0);
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	if (data + off + 8 > end)
		return TC_ACT_SHOT;
	__u8 tag = *(__u8 *)(data + off + 4);
	stat_add(3, tag + skb->len - before);
	r = bpf_skb_adjust_room(skb, -8, BPF_ADJ_ROOM_NET, 0);
	return r ? TC_ACT_SHOT : (skb->len == before ? TC_ACT_OK : TC_ACT_SHOT);
}

/* Pad short frames to 64 bytes, trim long ones to 96, then touch the last byte */
SEC("tc")
int tc_pad_trim(struct __sk_buff *skb)
{
	__u32 want = skb->len < 64 ? 64 : skb->len > 96 ? 96 : skb->len;
	if (bpf_skb_change_tail(skb, want, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_pull_data(skb, 0) || bpf_skb_pull_data(skb, want + 1) != -12)
		return TC_ACT_SHOT;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	if (data + 64 > end)
		return TC_ACT_SHOT;
	*(__u8 *)(data + 63) ^= 0xff;
	stat_add(4, want);
	return TC_ACT_OK;
}

/* An L3 frame gets a new 14-byte Ethernet header in front (change_head) */
SEC("tc")
int tc_push_l2(struct __sk_buff *skb)
{
	struct ethhdr eth = { .h_dest = {2, 0, 0, 0, 0, 2}, .h_source = {2, 0, 0, 0, 0, 3},
			      .h_proto = bpf_htons(0x88b5) };
	if (bpf_skb_change_head(skb, sizeof(eth), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), BPF_F_RECOMPUTE_CSUM))
		return TC_ACT_SHOT;
	__u8 first;
	bpf_skb_load_bytes(skb, sizeof(eth), &first, 1);
	stat_add(5, first);
	return skb->len;
}

/* The ones' complement sum of the first 32 payload bytes after the IP header, per protocol */
SEC("tc")
int tc_payload_sum(struct __sk_buff *skb)
{
	__u8 buf[32] = {};
	__u32 len = skb->len - ETH_HLEN - 20;
	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->len < ETH_HLEN + 20)
		return TC_ACT_OK;
	if (len > sizeof(buf))
		len = sizeof(buf);
	len &= ~3;
	if (bpf_skb_load_bytes_relative(skb, 20, buf, sizeof(buf), BPF_HDR_START_NET))
		bpf_skb_load_bytes(skb, ETH_HLEN + 20, buf, 4);
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)buf, sizeof(buf), 0);
	__u8 proto;
	bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1);
	__u32 key = proto, val = sum;
	bpf_map_update_elem(&payload_sums, &key, &val, BPF_ANY);
	stat_add(6, bpf_csum_update(skb, val) == -524);
	return TC_ACT_OK;
}

/* Tunnel metadata: attach a key for UDP, read it back (remote and local swap) */
SEC("tc")
int tc_tunnel_meta(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {}, got = {};
	if (bpf_skb_get_tunnel_key(skb, &got, sizeof(got), 0) != -22)
		return TC_ACT_SHOT;
	key.tunnel_id = skb->len;
	key.remote_ipv4[0] = 0x0a000063;
	key.local_ipv4[0] = 0x0a000001;
	key.tunnel_ttl = 17;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_get_tunnel_key(skb, &got, sizeof(got), 0))
		return TC_ACT_SHOT;
	__u32 k = got.tunnel_id & 31, v = got.remote_ipv4[0] ^ got.local_ipv4[0] ^ got.tunnel_ttl;
	bpf_map_update_elem(&payload_sums, &k, &v, BPF_ANY);
	return TC_ACT_OK;
}

/* ICMP is cloned to the loopback, in and out; the original goes on */
SEC("tc")
int tc_clone_icmp(struct __sk_buff *skb)
{
	__u8 proto = 0;
	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) || proto != IPPROTO_ICMP)
		return TC_ACT_OK;
	long a = bpf_clone_redirect(skb, 1, 0);
	long b = bpf_clone_redirect(skb, 1, 1);
	long c = bpf_clone_redirect(skb, 0x7ffffff0, 0);
	stat_add(7, (a == 0) + (b == 0) + (c == -22));
	return TC_ACT_OK;
}

/* A socket filter that reads the Ethernet source through the MAC header (pulled by the run) */
SEC("socket")
int sock_mac_source(struct __sk_buff *skb)
{
	__u8 mac[6] = {};
	if (bpf_skb_load_bytes_relative(skb, 6, mac, 6, BPF_HDR_START_MAC))
		return 0;
	__u8 ver;
	if (bpf_skb_load_bytes(skb, 0, &ver, 1))
		return 1;
	return (mac[0] << 8 | mac[5]) + (ver >> 4);
}

/* cgroup_skb: allow only packets whose IPv4 payload starts with a known port */
SEC("cgroup_skb/ingress")
int cg_port_gate(struct __sk_buff *skb)
{
	__be16 ports[2];
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 1;
	if (bpf_skb_load_bytes(skb, 20, ports, sizeof(ports)))
		return 0;
	__u32 k = bpf_ntohs(ports[1]) & 31, one = 1;
	bpf_map_update_elem(&payload_sums, &k, &one, BPF_ANY);
	return ports[1] != bpf_htons(8080);
}

char LICENSE[] SEC("license") = "GPL";
