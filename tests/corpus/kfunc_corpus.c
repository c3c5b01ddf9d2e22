/* Programs using kfuncs (tests/corpus/kfuncs.h): open-coded iterators, as syscall programs that
 * read their argument struct (ctx_in) and report through it (ctx_out) and through maps. */
#include "corpus.h"
#include "kfuncs.h"

struct args {
	__s32 vals[8];
	char text[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} iter_hist SEC(".maps");

__u64 iter_runs;
__s64 iter_ret_new, iter_ret_next;

/* bpf_for over [vals[0], vals[1]): the sum of the indexes, the count, and every i % 16 counted in
 * a map; ranges the kernel refuses (start > end, too long) give no iteration */
SEC("syscall")
int iter_for_range(struct args *a)
{
	__s32 start = a->vals[0], end = a->vals[1];
	__s64 sum = 0;
	int i, n = 0;

	bpf_for(i, start, end) {
		__u32 k = i & 15;
		__u64 *slot = bpf_map_lookup_elem(&iter_hist, &k);

		if (slot)
			*slot += 1;
		sum += i;
		n++;
		if (n > 1000)
			break;
	}
	a->vals[2] = n;
	a->vals[3] = (__s32)sum;
	a->vals[4] = (__s32)(sum >> 32);
	iter_runs++;
	return n;
}

/* bpf_repeat(vals[5] & 63) with nested bpf_for(0, 3) */
SEC("syscall")
int iter_nested(struct args *a)
{
	int n = 0, j;

	bpf_repeat(a->vals[5] & 63) {
		bpf_for(j, 0, 3)
			n += j + 1;
	}
	a->vals[6] = n;
	return n;
}

/* The raw kfuncs: new's return value for vals[0]..vals[1] (-EINVAL when start > end, -E2BIG past
 * BPF_MAX_LOOPS), then the first two values next gives, and next after draining */
SEC("syscall")
int iter_raw(struct args *a)
{
	struct bpf_iter_num it;
	int *v, got = 0, end = a->vals[1];

	if (a->vals[7] == 42)		/* [-1, 16M): longer than BPF_MAX_LOOPS */
		end = a->vals[6] << 4;
	iter_ret_new = bpf_iter_num_new(&it, a->vals[0], end);
	v = bpf_iter_num_next(&it);
	if (v) {
		a->vals[2] = *v;
		got++;
	}
	v = bpf_iter_num_next(&it);
	if (v) {
		a->vals[3] = *v;
		got++;
	}
	while (bpf_iter_num_next(&it))
		got++;
	iter_ret_next = bpf_iter_num_next(&it) != 0;
	bpf_iter_num_destroy(&it);
	a->vals[4] = got;
	return got;
}

/* Parse the text field with the string kfuncs: its length, where the first space and the last
 * 'l' are, how long the leading number is, whether it says "world" (in any case) */
SEC("syscall")
int str_parse(struct args *a)
{
	char *t = a->text;
	int n;

	t[31] = 0;
	n = bpf_strlen(t);
	a->vals[0] = bpf_strchr(t, ' ');
	a->vals[1] = bpf_strrchr(t, 'l');
	a->vals[2] = bpf_strspn(t, "-0123456789");
	a->vals[3] = bpf_strcspn(t, " \t");
	a->vals[4] = bpf_strstr(t, "world");
	a->vals[5] = bpf_strcasecmp(t, "PYBPF");
	a->vals[6] = bpf_strnstr(t, "abc", 10);
	a->vals[7] = bpf_strcmp(t, "hello world") == 0 ? bpf_strchrnul(t, 'q') : bpf_strnchr(t, 4, 'b');
	return n;
}

/* ---- dynptrs ---- */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __s64);
} dynptr_results SEC(".maps");

static __always_inline void record(__u32 k, __s64 v)
{
	bpf_map_update_elem(&dynptr_results, &k, &v, BPF_ANY);
}

/* XDP: the Ethernet header through a slice, the IPv4 header through bpf_dynptr_read, the TTL
 * lowered through bpf_dynptr_write; reads past the end give -E2BIG */
SEC("xdp")
int xdp_dynptr_ttl(struct xdp_md *ctx)
{
	struct bpf_dynptr ptr;
	__u8 buf[14], ip[20], ttl;
	__u8 *eth;
	long err;

	record(0, bpf_dynptr_from_xdp(ctx, 0, &ptr));
	eth = bpf_dynptr_slice(&ptr, 0, buf, sizeof(buf));
	if (!eth)
		return XDP_PASS;
	if (eth[12] != 0x08 || eth[13] != 0x00)
		return XDP_DROP;
	err = bpf_dynptr_read(ip, sizeof(ip), &ptr, 14, 0);
	record(1, err);
	if (err)
		return XDP_ABORTED;
	ttl = ip[8] - 1;
	record(2, bpf_dynptr_write(&ptr, 14 + 8, &ttl, 1, 0));
	record(3, bpf_dynptr_read(ip, sizeof(ip), &ptr, 60000, 0));
	record(4, bpf_dynptr_write(&ptr, 0, &ttl, 1, 1));
	return XDP_TX;
}

/* tc: the protocol from an skb dynptr slice becomes the mark; the first byte of the IP header
 * is rewritten through bpf_dynptr_write */
SEC("tc")
int tc_dynptr_mark(struct __sk_buff *skb)
{
	struct bpf_dynptr ptr;
	__u8 buf[14], v = 0x45;
	__u8 *eth;

	if (bpf_dynptr_from_skb(skb, 0, &ptr))
		return 2;
	eth = bpf_dynptr_slice(&ptr, 0, buf, sizeof(buf));
	if (!eth)
		return 1;
	skb->mark = eth[12] << 8 | eth[13];
	record(5, bpf_dynptr_write(&ptr, 14, &v, 1, 0));
	return 0;
}

/* a socket filter's skb dynptr is read-only: writes are -EINVAL */
SEC("socket")
int sock_dynptr_ro(struct __sk_buff *skb)
{
	struct bpf_dynptr ptr;
	__u8 b = 0;

	bpf_dynptr_from_skb(skb, 0, &ptr);
	record(6, bpf_dynptr_read(&b, 1, &ptr, 0, 0) ?: b);
	record(7, bpf_dynptr_write(&ptr, 0, &b, 1, 0));
	return skb->len;
}

__u8 dyn_mem[32];

/* syscall: a local dynptr over a global buffer: write the argument text into it, read part of it
 * back, take a data slice, and the errors of bad flags, ranges and sizes */
SEC("syscall")
int sys_dynptr_local(struct args *a)
{
	struct bpf_dynptr ptr;
	__u8 tmp[8], text[16];
	__u8 *d;

	__builtin_memcpy(text, a->text, sizeof(text));
	a->vals[0] = bpf_dynptr_from_mem(dyn_mem, sizeof(dyn_mem), 0, &ptr);
	a->vals[1] = bpf_dynptr_write(&ptr, 4, text, 16, 0);
	a->vals[2] = bpf_dynptr_read(tmp, sizeof(tmp), &ptr, 6, 0);
	a->vals[3] = tmp[0] | tmp[7] << 8;
	d = bpf_dynptr_data(&ptr, 8, 8);
	a->vals[4] = d ? d[0] : -1;
	a->vals[5] = bpf_dynptr_read(tmp, sizeof(tmp), &ptr, 30, 0);
	a->vals[6] = bpf_dynptr_write(&ptr, 0, tmp, 1, 7);
	a->vals[7] = bpf_dynptr_from_mem(dyn_mem, sizeof(dyn_mem), 1, &ptr);
	return bpf_dynptr_read(tmp, 1, &ptr, 0, 0);
}

char _license[] SEC("license") = "GPL";
