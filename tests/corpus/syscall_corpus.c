/* BPF_PROG_TYPE_SYSCALL programs: user space calls them with an argument struct (ctx_in) that
 * they read and rewrite (ctx_out), as loaders and control planes use them. */
#include "corpus.h"

struct args {
	__u32 vals[8];
	char text[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
} sys_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 33);
	__type(key, __u32);
	__type(value, __u64);
} log2_hist SEC(".maps");

__u64 calls, last_fib;

SEC("syscall")
int sys_sum(struct args *a)
{
	__u64 sum = 0;
	for (int i = 0; i < 8; i++)
		sum += a->vals[i];
	a->vals[0] = sum;
	a->vals[1] = sum >> 32;
	calls++;
	return sum & 0x7fffffff;
}

SEC("syscall")
int sys_sort(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	int swaps = 0;
	for (int i = 0; i < 8; i++) {
		for (int j = 0; j < 7 - i; j++) {
			if (a->vals[j] > a->vals[j + 1]) {
				__u32 t = a->vals[j];
				a->vals[j] = a->vals[j + 1];
				a->vals[j + 1] = t;
				swaps++;
			}
		}
	}
	*ctx = arg;
	return swaps;
}

SEC("syscall")
int sys_atoi(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	int i = 0, neg = 0;
	long v = 0;
	while (i < 31 && a->text[i] == ' ')
		i++;
	if (i < 31 && a->text[i] == '-') {
		neg = 1;
		i++;
	}
	for (; i < 31; i++) {
		char c = a->text[i];
		if (c < '0' || c > '9')
			break;
		v = v * 10 + (c - '0');
	}
	ctx->vals[7] = i;
	return neg ? -v : v;
}

static __always_inline int fill_one(struct args *a, __u32 i)
{
	__u32 v = a->vals[i];
	if (!v) {
		bpf_map_delete_elem(&sys_table, &i);
		return 0;
	}
	__u32 *old = bpf_map_lookup_elem(&sys_table, &i);
	if (old)
		v += *old;
	return bpf_map_update_elem(&sys_table, &i, &v, BPF_ANY) == 0;
}

SEC("syscall")
int sys_fill_table(struct args *ctx)
{
	struct args arg = *ctx;
	return fill_one(&arg, 0) + fill_one(&arg, 1) + fill_one(&arg, 2) + fill_one(&arg, 3) +
	       fill_one(&arg, 4) + fill_one(&arg, 5) + fill_one(&arg, 6) + fill_one(&arg, 7);
}

struct fib_state { __u64 a, b; };

static long fib_step(__u32 index, struct fib_state *st)
{
	__u64 next = st->a + st->b;
	st->a = st->b;
	st->b = next;
	return 0;
}

SEC("syscall")
int sys_loop_fib(struct args *a)
{
	struct fib_state st = { 0, 1 };
	long n = bpf_loop(a->vals[0] % 64, fib_step, &st, 0);
	last_fib = st.a;
	a->vals[2] = st.a;
	a->vals[3] = st.a >> 32;
	return n;
}

SEC("syscall")
int sys_log2_hist(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	for (int i = 0; i < 8; i++) {
		__u32 v = a->vals[i], k = 0;
		while (v && k < 32) {
			v >>= 1;
			k++;
		}
		__u64 *slot = bpf_map_lookup_elem(&log2_hist, &k);
		if (slot)
			*slot += 1;
	}
	return 0;
}

SEC("syscall")
int sys_fnv1a(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	__u32 h = 2166136261u;
	for (int i = 0; i < 32; i++) {
		char c = a->text[i];
		if (!c)
			break;
		h = (h ^ (__u8)c) * 16777619u;
	}
	ctx->vals[6] = h;
	return h >> 1;
}

char LICENSE[] SEC("license") = "GPL";
