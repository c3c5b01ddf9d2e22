/* "Maps and control" helpers: for_each_map_elem, spin locks, strtol/strtoul/strncmp/snprintf,
 * task identity, jiffies, perf_event_output (no event attached: the kernel's errors) and
 * cgroup local storage, in syscall and cgroup_skb programs as control planes write them. */
#include "corpus.h"

enum {
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_CGROUP_STORAGE = 19,
};
#define BPF_F_CURRENT_CPU 0xffffffffULL

struct bpf_spin_lock { __u32 val; };
struct bpf_cgroup_storage_key { __u64 cgroup_inode_id; __u32 attach_type; };

static long (*bpf_for_each_map_elem)(void *map, void *callback_fn, void *callback_ctx, __u64 flags) = (void *) 164;
static long (*bpf_spin_lock)(struct bpf_spin_lock *lock) = (void *) 93;
static long (*bpf_spin_unlock)(struct bpf_spin_lock *lock) = (void *) 94;
static long (*bpf_strtol)(const char *buf, unsigned long buf_len, __u64 flags, long *res) = (void *) 105;
static long (*bpf_strtoul)(const char *buf, unsigned long buf_len, __u64 flags, unsigned long *res) = (void *) 106;
static long (*bpf_strncmp)(const char *s1, __u32 s1_sz, const char *s2) = (void *) 182;
static long (*bpf_snprintf)(char *str, __u32 str_size, const char *fmt, __u64 *data, __u32 data_len) = (void *) 165;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *) 15;
static long (*bpf_get_current_comm)(void *buf, __u32 size_of_buf) = (void *) 16;
static __u64 (*bpf_jiffies64)(void) = (void *) 118;
static long (*bpf_get_numa_node_id)(void) = (void *) 42;
static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *) 25;
static void *(*bpf_get_local_storage)(void *map, __u64 flags) = (void *) 81;

struct args {
	__u32 vals[8];
	char text[32];
};

/* ---- for_each_map_elem -------------------------------------------------------------------- */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} fe_arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} fe_hash SEC(".maps");

struct fe_ctx { __u64 sum, limit, visited; };

static long sum_until(void *map, __u32 *key, __u64 *val, struct fe_ctx *c)
{
	c->visited++;
	c->sum += *val + *key;
	*val = *val * 2 + 1;          /* the callback may write the value */
	return c->sum > c->limit;     /* 1 stops the walk */
}

SEC("syscall")
int ctl_foreach_array(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	long ret_;
	struct fe_ctx c = { .limit = a->vals[7] ? a->vals[7] : 1000 };
	/* no loop here: the kernel's verifier reports an "infinite loop" in an update loop
	 * followed by the for_each call (pybpf's accepts it) */
	__u32 k0 = 0, k1 = 1, k2 = 2, k3 = 3, k4 = 4, k5 = 5, k6 = 6, k7 = 7;
	__u64 v0 = a->vals[0] & 0xffff, v1 = a->vals[1] & 0xffff, v2 = a->vals[2] & 0xffff,
	      v3 = a->vals[3] & 0xffff, v4 = a->vals[4] & 0xffff, v5 = a->vals[5] & 0xffff,
	      v6 = a->vals[6] & 0xffff, v7 = a->vals[7] & 0xffff;
	bpf_map_update_elem(&fe_arr, &k0, &v0, BPF_ANY);
	bpf_map_update_elem(&fe_arr, &k1, &v1, BPF_ANY);
	bpf_map_update_elem(&fe_arr, &k2, &v2, BPF_ANY);
	bpf_map_update_elem(&fe_arr, &k3, &v3, BPF_ANY);
	bpf_map_update_elem(&fe_arr, &k4, &v4, BPF_ANY);
	bpf_map_update_elem(&fe_arr, &k5, &v5, BPF_ANY);
	bpf_map_update_elem(&fe_arr, &k6, &v6, BPF_ANY);
	bpf_map_update_elem(&fe_arr, &k7, &v7, BPF_ANY);
	long n = bpf_for_each_map_elem(&fe_arr, sum_until, &c, 0);
	long bad = bpf_for_each_map_elem(&fe_arr, sum_until, &c, 1);   /* flags: -EINVAL */
	a->vals[0] = n;
	a->vals[1] = c.sum;
	a->vals[2] = c.visited;
	a->vals[3] = bad;
	{ ret_ = n; goto out_; }
out_:
	*ctx = arg;
	return ret_;
}

static long count_and_prune(void *map, __u32 *key, __u64 *val, struct fe_ctx *c)
{
	c->visited++;
	c->sum += *key;
	if (*key & 1)
		bpf_map_delete_elem(map, key);    /* deleting the current element is allowed */
	return 0;
}

SEC("syscall")
int ctl_foreach_hash(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	long ret_;
	struct fe_ctx c = {};
	for (int i = 0; i < 8; i++) {
		__u32 k = a->vals[i] & 0xff;
		__u64 v = i;
		bpf_map_update_elem(&fe_hash, &k, &v, BPF_ANY);
	}
	long n = bpf_for_each_map_elem(&fe_hash, count_and_prune, &c, 0);
	a->vals[0] = n;
	a->vals[1] = c.sum;
	a->vals[2] = c.visited;
	{ ret_ = n; goto out_; }
out_:
	*ctx = arg;
	return ret_;
}

/* ---- strings ----------------------------------------------------------------------------- */
static __always_inline void parse(struct args *a, int slot, const char *s, __u32 len, __u64 flags)
{
	long res = 0x5555;
	long r = bpf_strtol(s, len, flags, &res);
	a->vals[slot] = r;
	a->vals[slot + 1] = res;
}

SEC("syscall")
int ctl_strtol(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	long ret_;
	char buf[24] = "  -0x1fZ";
	char big[24] = "99999999999999999999";
	char min[24] = "-9223372036854775808";
	char oct[8] = "0778";
	parse(a, 0, a->text, sizeof(a->text), 0);
	parse(a, 2, a->text, 4, 10);
	parse(a, 4, buf, 8, 0);
	parse(a, 6, buf, 8, 16);
	long r1, r2, r3, r4;
	long x = 0;
	r1 = bpf_strtol(big, sizeof(big), 0, &x);
	r2 = bpf_strtol(min, sizeof(min), 0, &x);
	a->text[0] = x == (-9223372036854775807L - 1);
	r3 = bpf_strtol(oct, sizeof(oct), 0, &x);
	a->text[1] = x;
	r4 = bpf_strtol(oct, sizeof(oct), 7, &x);      /* base 7: -EINVAL */
	a->text[2] = r1;
	a->text[3] = r2;
	a->text[4] = r3;
	a->text[5] = r4;
	{ ret_ = 0; goto out_; }
out_:
	*ctx = arg;
	return ret_;
}

SEC("syscall")
int ctl_strtoul(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	long ret_;
	char hex[16] = "0XfFfF\n";
	char neg[8] = " -1";
	char sp[8] = "\t\v 12";
	unsigned long x = 7;
	a->vals[0] = bpf_strtoul(a->text, sizeof(a->text), 0, &x);
	a->vals[1] = x;
	a->vals[2] = bpf_strtoul(hex, sizeof(hex), 0, &x);
	a->vals[3] = x;
	a->vals[4] = bpf_strtoul(neg, sizeof(neg), 10, &x);
	a->vals[5] = x;
	a->vals[6] = bpf_strtoul(sp, sizeof(sp), 0, &x);
	a->vals[7] = bpf_strtoul(hex, 1, 32, &x);     /* unknown flag bits: -EINVAL */
	{ ret_ = x; goto out_; }
out_:
	*ctx = arg;
	return ret_;
}

SEC("syscall")
int ctl_strncmp(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	long ret_;
	a->vals[0] = bpf_strncmp(a->text, sizeof(a->text), "hello world");
	a->vals[1] = bpf_strncmp(a->text, 5, "hello there");
	a->vals[2] = bpf_strncmp(a->text, sizeof(a->text), "pybpf");
	a->vals[3] = bpf_strncmp(a->text, 3, "-12");
	a->vals[4] = bpf_strncmp(a->text, sizeof(a->text), "");
	a->vals[5] = bpf_strncmp(a->text, 1, "zzz");
	{ ret_ = a->vals[0] + 2 * a->vals[2]; goto out_; }
out_:
	*ctx = arg;
	return ret_;
}

SEC("syscall")
int ctl_snprintf(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	long ret_;
	static const char fmt1[] = "%d|%u|%x|%X|%5d|%-5d|%05d|%+d|% d|%lld|%llx|%c";
	static const char fmt2[] = "[%s] %pI4 %%";
	static const char fmt3[] = "%10s|%-6s|%px";
	__u64 data[12];
	char out[96];
	for (int i = 0; i < 8; i++)
		data[i] = (__s32)a->vals[i];
	data[8] = -(__s64)a->vals[1];
	data[9] = ((__u64)a->vals[2] << 32) | a->vals[3];
	data[10] = (__u64)a->vals[5] << 20;
	data[11] = 'A' + (a->vals[0] & 15);
	long n1 = bpf_snprintf(out, sizeof(out), fmt1, data, sizeof(data));
	__builtin_memcpy(a->text, out, 32);
	a->text[31] = 0;
	data[0] = (__u64)(long)a->text;
	data[1] = (__u64)(long)&a->vals[4];
	long n2 = bpf_snprintf(out, 12, fmt2, data, 16);              /* truncated */
	__builtin_memcpy(&a->vals[4], out, 12);
	long n3 = bpf_snprintf(0, 0, fmt2, data, 16);                 /* length only */
	data[1] = (__u64)(long)"ab";
	data[2] = 0x1234abcd;
	long n4 = bpf_snprintf(out, sizeof(out), fmt3, data, 24);
	a->vals[0] = n1;
	a->vals[1] = n2;
	a->vals[2] = n3;
	a->vals[3] = n4;
	{ ret_ = n1 + n4; goto out_; }
out_:
	*ctx = arg;
	return ret_;
}

/* ---- task identity, time ------------------------------------------------------------------ */
SEC("syscall")
int ctl_task(struct args *ctx)
{
	struct args arg = *ctx, *a = &arg;
	long ret_;
	__u64 pt = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();
	__u64 j1 = bpf_jiffies64(), j2 = bpf_jiffies64();
	a->vals[0] = pt;
	a->vals[1] = pt >> 32;
	a->vals[2] = ug;
	a->vals[3] = ug >> 32;
	a->vals[4] = j1 > 0xffffffffULL - 300 * 1000 && j2 >= j1;
	a->vals[5] = bpf_get_numa_node_id();
	a->vals[6] = bpf_get_current_comm(a->text, 16);   /* a stack copy of ctx */
	{ ret_ = (pt >> 32) == (__u32)pt; goto out_; }     /* the main thread's pid is its tgid */
out_:
	*ctx = arg;
	return ret_;
}

/* ---- spin locks ---------------------------------------------------------------------------- */
struct counter {
	__u64 hits;
	struct bpf_spin_lock lock;
	__u32 last;
	__u64 sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct counter);
} locked_arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct counter);
} locked_hash SEC(".maps");

SEC("syscall")
int ctl_spin_lock(struct args *ctx)
{
	__u32 k = ctx->vals[0] & 1, v1 = ctx->vals[1], v2 = ctx->vals[2];
	__u32 hk = ctx->vals[3] & 7;
	struct counter *c = bpf_map_lookup_elem(&locked_arr, &k), fresh = {};
	if (!c)
		return -1;
	bpf_spin_lock(&c->lock);
	c->hits++;
	c->last = v1;
	c->sum += v2;
	bpf_spin_unlock(&c->lock);
	bpf_map_update_elem(&locked_hash, &hk, &fresh, BPF_NOEXIST);
	struct counter *h = bpf_map_lookup_elem(&locked_hash, &hk);
	if (!h)
		return -2;
	bpf_spin_lock(&h->lock);
	h->hits += 2;
	h->sum += c->hits;
	bpf_spin_unlock(&h->lock);
	ctx->vals[4] = h->hits;
	return c->hits;
}

/* ---- perf_event_output without an event (the kernel's errors) ----------------------------- */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __s64);
} perf_res SEC(".maps");

/* XDP: the kernel refuses perf_event_array maps in (sleepable) syscall programs */
SEC("xdp")
int ctl_perf_output(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u64 rec[2] = { end - data, 7 };
	__s64 r[4];
	r[0] = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, rec, sizeof(rec));
	r[1] = bpf_perf_event_output(ctx, &events, 2, rec, sizeof(rec));
	r[2] = bpf_perf_event_output(ctx, &events, 9, rec, sizeof(rec));
	r[3] = bpf_perf_event_output(ctx, &events, 1ULL << 60, rec, sizeof(rec));
	__u32 k0 = 0, k1 = 1, k2 = 2, k3 = 3;     /* no loop: see ctl_foreach_array */
	bpf_map_update_elem(&perf_res, &k0, &r[0], BPF_ANY);
	bpf_map_update_elem(&perf_res, &k1, &r[1], BPF_ANY);
	bpf_map_update_elem(&perf_res, &k2, &r[2], BPF_ANY);
	bpf_map_update_elem(&perf_res, &k3, &r[3], BPF_ANY);
	return XDP_PASS;
}

/* ---- cgroup local storage: BPF_PROG_TEST_RUN allocates a fresh one per run ------------------ */
struct pkt_stats { __u64 packets, bytes; };

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct pkt_stats);
} cg_stats SEC(".maps");

SEC("cgroup_skb/ingress")
int ctl_cgroup_storage(struct __sk_buff *skb)
{
	struct pkt_stats *s = bpf_get_local_storage(&cg_stats, 0);
	int fresh = s->packets == 0 && s->bytes == 0;
	s->packets++;
	s->bytes += skb->len;
	skb->cb[0] = s->bytes;
	return fresh;
}
