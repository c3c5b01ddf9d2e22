/* Context-only program types (issue 11): sk_msg, sock_ops and perf_event, as libbpf names their
 * sections. tests/test_ctx_types.py loads them with pybpf (verified), runs them in both engines on
 * user-provided contexts, and loads them into the running kernel (BPF_PROG_LOAD) to compare the
 * verifier's verdict: the kernel cannot BPF_PROG_TEST_RUN these types.
 * Self-contained: the uapi structs are spelled out here. Rebuild with tests/data/elf/build.sh. */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __bpf_md_ptr(type, name) union { type name; __u64 :64; } __attribute__((aligned(8)))

struct bpf_sock {
	__u32 bound_dev_if, family, type, protocol, mark, priority, src_ip4, src_ip6[4], src_port;
	__u16 dst_port;
	__u16 :16;
	__u32 dst_ip4, dst_ip6[4], state;
	int rx_queue_mapping;
};

struct sk_msg_md {
	__bpf_md_ptr(void *, data);
	__bpf_md_ptr(void *, data_end);
	__u32 family, remote_ip4, local_ip4, remote_ip6[4], local_ip6[4], remote_port, local_port;
	__u32 size;
	__bpf_md_ptr(struct bpf_sock *, sk);
};

struct bpf_sock_ops {
	__u32 op;
	union { __u32 args[4]; __u32 reply; __u32 replylong[4]; };
	__u32 family, remote_ip4, local_ip4, remote_ip6[4], local_ip6[4], remote_port, local_port;
	__u32 is_fullsock, snd_cwnd, srtt_us, bpf_sock_ops_cb_flags, state, rtt_min, snd_ssthresh;
	__u32 rcv_nxt, snd_nxt, snd_una, mss_cache, ecn_flags, rate_delivered, rate_interval_us;
	__u32 packets_out, retrans_out, total_retrans, segs_in, data_segs_in, segs_out;
	__u32 data_segs_out, lost_out, sacked_out, sk_txhash;
	__u64 bytes_received, bytes_acked;
	__bpf_md_ptr(struct bpf_sock *, sk);
	__bpf_md_ptr(void *, skb_data);
	__bpf_md_ptr(void *, skb_data_end);
	__u32 skb_len, skb_tcp_flags;
	__u64 skb_hwtstamp;
};

struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax;
	unsigned long ip, cs, flags, sp, ss;
};

struct bpf_perf_event_data {
	struct pt_regs regs;
	__u64 sample_period;
	__u64 addr;
};

#define SK_DROP 0
#define SK_PASS 1
#define BPF_SOCK_OPS_TCP_CONNECT_CB 3
#define BPF_SOCK_OPS_PARSE_HDR_OPT_CB 13

/* A message verdict: drop messages that start with "DROP", else pass them and count bytes in
 * the first byte when the socket is IPv4 (the socket pointer is never NULL for sk_msg). */
SEC("sk_msg")
int msg_verdict(struct sk_msg_md *msg)
{
	__u8 *data = msg->data, *end = msg->data_end;
	struct bpf_sock *sk = msg->sk;

	if (data + 4 > end)
		return SK_PASS;
	if (data[0] == 'D' && data[1] == 'R' && data[2] == 'O' && data[3] == 'P')
		return SK_DROP;
	if (sk->family == 2 && msg->remote_port == 0x5000)
		data[0] = (__u8)msg->size;
	return SK_PASS;
}

/* A sock_ops callback: on TCP_CONNECT reply with an initial window from the remote port; when
 * parsing a header, read the TCP flags from the packet if the whole header is there. */
SEC("sockops")
int tcp_tune(struct bpf_sock_ops *skops)
{
	__u8 *data = skops->skb_data, *end = skops->skb_data_end;

	if (skops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		skops->reply = skops->remote_port == 0x5000 ? 40 : 10;
		return 1;
	}
	if (skops->op == BPF_SOCK_OPS_PARSE_HDR_OPT_CB) {
		if (data + 20 > end)
			return 0;
		skops->reply = data[13] | (skops->skb_tcp_flags << 8);
		return 1;
	}
	return 0;
}

/* A perf_event sampler: a bucket from the instruction pointer, the sample period's low bits and
 * the sampled address's page. */
SEC("perf_event")
int sample(struct bpf_perf_event_data *ctx)
{
	__u64 period = ctx->sample_period;
	__u16 low = *(volatile __u16 *)&ctx->sample_period;	/* a narrow load of a u64 field */

	if (!period)
		return 0;
	return (int)((ctx->regs.ip & 0xff) + (low & 3) + (ctx->addr >> 12));
}

char LICENSE[] SEC("license") = "GPL";
