/* Socket-level programs: sk_lookup steering decisions, cgroup connect/sendmsg address rewriting
 * and socket-creation policy, and lightweight-tunnel (lwt) packet programs. */
#include "corpus.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define SK_DROP 0
#define SK_PASS 1
#define BPF_OK 0
#define BPF_DROP 2

struct bpf_sk_lookup {
	__u64 cookie;
	__u32 family, protocol, remote_ip4, remote_ip6[4];
	__be16 remote_port;
	__u16 pad;
	__u32 local_ip4, local_ip6[4], local_port, ingress_ifindex;
};

struct bpf_sock_addr {
	__u32 user_family, user_ip4, user_ip6[4], user_port, family, type, protocol;
	__u32 msg_src_ip4, msg_src_ip6[4];
	__u64 sk;
};

struct bpf_sock {
	__u32 bound_dev_if, family, type, protocol, mark, priority, src_ip4, src_ip6[4], src_port;
	__be16 dst_port;
	__u16 pad;
	__u32 dst_ip4, dst_ip6[4], state;
	__s32 rx_queue_mapping;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
} lookups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} lwt_stats SEC(".maps");

__u32 connects_rewritten, sockets_denied;
const volatile __u32 service_vip = 0x0a00000a;      /* 10.0.0.10, network order */
const volatile __u32 backend_ip = 0x0200000a;       /* 10.0.0.2 */

SEC("sk_lookup")
int sk_lookup_port_range(struct bpf_sk_lookup *ctx)
{
	/* a dispatcher answers 7000-7999 on TCP; everything else goes the usual way */
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (ctx->local_port >= 7000 && ctx->local_port < 8000)
		return SK_DROP;
	return SK_PASS;
}

SEC("sk_lookup")
int sk_lookup_count(struct bpf_sk_lookup *ctx)
{
	__u32 key = ctx->local_port << 8 | ctx->protocol, one = 1;
	__u32 *n = bpf_map_lookup_elem(&lookups, &key);
	if (n)
		*n += 1;
	else
		bpf_map_update_elem(&lookups, &key, &one, BPF_NOEXIST);
	return ctx->family == AF_INET6 && ctx->remote_ip6[3] == 0 ? SK_DROP : SK_PASS;
}

SEC("sk_lookup")
int sk_lookup_src_filter(struct bpf_sk_lookup *ctx)
{
	if (ctx->family != AF_INET)
		return SK_PASS;
	/* drop 10.0.0.0/24 clients talking to low ports from a high source port */
	if ((ctx->remote_ip4 & bpf_htonl(0xffffff00)) == bpf_htonl(0x0a000000) &&
	    ctx->local_port < 1024 && bpf_ntohs(ctx->remote_port) > 50000)
		return SK_DROP;
	return SK_PASS;
}

SEC("cgroup/connect4")
int connect4_vip(struct bpf_sock_addr *ctx)
{
	/* client-side load balancing: a virtual service address becomes a backend */
	if (ctx->user_ip4 == service_vip && ctx->protocol == IPPROTO_TCP) {
		ctx->user_ip4 = backend_ip;
		ctx->user_port = bpf_htons(bpf_ntohs(ctx->user_port) + 1000);
		connects_rewritten++;
	}
	return 1;
}

SEC("cgroup/sendmsg4")
int sendmsg4_dns_only(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_DGRAM)
		return 1;
	return ctx->user_port == bpf_htons(53) ? 1 : 0;
}

SEC("cgroup/sock_create")
int sock_create_policy(struct bpf_sock *sk)
{
	if (sk->type == SOCK_RAW) {
		sockets_denied++;
		return 0;
	}
	sk->mark = sk->family == AF_INET6 ? 6 : 4;
	sk->priority = sk->protocol == IPPROTO_UDP ? 2 : 0;
	return 1;
}

static __always_inline void lwt_count(__u32 k, __u32 len)
{
	__u64 *v = bpf_map_lookup_elem(&lwt_stats, &k);
	if (v)
		*v += len;
}

SEC("lwt_in")
int lwt_in_ttl_guard(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data;                       /* lwt sees the packet from L3 */
	if ((void *)(ip + 1) > data_end)
		return BPF_OK;
	lwt_count(0, skb->len);
	return ip->version == 4 && ip->ttl <= 1 ? BPF_DROP : BPF_OK;
}

SEC("lwt_out")
int lwt_out_mark(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data;
	if ((void *)(ip + 1) > data_end)
		return BPF_OK;
	lwt_count(1, ip->protocol);
	skb->mark = ip->protocol == IPPROTO_TCP ? 0x10 : 0x20;
	skb->priority = ip->tos >> 5;
	return BPF_OK;
}

SEC("lwt_xmit")
int lwt_xmit_clear_ecn(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data;
	if ((void *)(ip + 1) > data_end || ip->version != 4)
		return BPF_OK;
	if (ip->tos & 3) {
		__u16 old = *(__u16 *)ip;
		ip->tos &= ~3;
		ip->check = csum_replace2(ip->check, old, *(__u16 *)ip);
		lwt_count(2, 1);
	}
	return BPF_OK;
}

char LICENSE[] SEC("license") = "GPL";
