/* Copies between dynptrs and fills (bpf_dynptr_copy, bpf_dynptr_memset) over packets, packet
 * fragments, map values and read-only packets, and the skb metadata dynptr
 * (bpf_dynptr_from_skb_meta): every result code goes into the `ops` map, the packets come back
 * changed, compared with the kernel after every run (tests/corpus_run.py). */
#include "corpus.h"
#include "kfuncs.h"

/* copies between dynptrs and fills (kernel/bpf/helpers.c), the skb metadata dynptr
 * (net/core/filter.c: tc only); Linux 6.18 prototypes */
extern int bpf_dynptr_copy(struct bpf_dynptr *dst_ptr, __u32 dst_off, struct bpf_dynptr *src_ptr,
			   __u32 src_off, __u32 size) __weak __ksym;
extern int bpf_dynptr_memset(struct bpf_dynptr *p, __u32 offset, __u32 size, __u8 val) __weak __ksym;
extern int bpf_dynptr_from_skb_meta(struct __sk_buff *skb_, __u64 flags,
				    struct bpf_dynptr *ptr__uninit) __weak __ksym;

#define NRES 16

struct res { __s32 r[NRES]; };
struct scratch { __u8 buf[64]; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct res);
} ops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

static __always_inline void *slot(void *map, __u32 k)
{
	return bpf_map_lookup_elem(map, &k);
}

/* XDP (with fragments): the head of the packet into a map value, the destination MAC filled,
 * the source MAC from the copy, a move inside the packet (overlapping), a copy that crosses the
 * linear part and the fragments, fills past the end, and a NULL dynptr on both sides */
SEC("xdp.frags")
int xdp_dynptr_copy(struct xdp_md *ctx)
{
	struct bpf_dynptr pkt, loc, bad;
	struct scratch *s = slot(&scratch, 0);
	struct res *r = slot(&ops, 0);
	__u32 size;

	if (!s || !r)
		return XDP_ABORTED;
	bpf_dynptr_from_xdp(ctx, 0, &pkt);
	bpf_dynptr_from_mem(s->buf, sizeof(s->buf), 0, &loc);
	size = bpf_dynptr_size(&pkt);
	r->r[0] = bpf_dynptr_copy(&loc, 0, &pkt, 0, 32);
	r->r[1] = bpf_dynptr_copy(&loc, 40, &pkt, 6, 32);	/* past the value: -E2BIG */
	r->r[2] = bpf_dynptr_memset(&pkt, 0, 6, 0xff);
	r->r[3] = bpf_dynptr_memset(&pkt, size - 2, 4, 0);	/* past the packet: -E2BIG */
	r->r[4] = bpf_dynptr_copy(&pkt, 6, &loc, 0, 6);
	r->r[5] = bpf_dynptr_copy(&pkt, 14, &pkt, 20, 8);	/* overlapping */
	r->r[6] = bpf_dynptr_memset(&loc, 32, 32, 0xa5);
	r->r[7] = bpf_dynptr_memset(&loc, 64, 0, 1);
	r->r[8] = bpf_dynptr_memset(&loc, 65, 0, 1);
	/* across the end of the linear part (3520 bytes) when there are fragments */
	r->r[9] = bpf_dynptr_copy(&pkt, size > 4000 ? 3500 : 0, &loc, 0, 64);
	r->r[10] = bpf_dynptr_memset(&pkt, size > 5000 ? 3000 : 20, size > 5000 ? 1500 : 4, 0x3c);
	r->r[11] = bpf_dynptr_copy(&pkt, size > 5000 ? 4000 : 30, &pkt, size > 5000 ? 3400 : 14,
				   size > 5000 ? 700 : 8);
	r->r[12] = bpf_dynptr_from_mem(s->buf, 8, 1, &bad);	/* -EINVAL, a NULL dynptr */
	r->r[13] = bpf_dynptr_copy(&loc, 0, &bad, 0, 4);
	r->r[14] = bpf_dynptr_copy(&bad, 0, &loc, 0, 0);
	r->r[15] = bpf_dynptr_memset(&bad, 0, 0, 7) * 100 + bpf_dynptr_memset(&bad, 0, 1, 7);
	return size > 40 ? XDP_PASS : XDP_DROP;
}

/* tc: fills and copies through the skb dynptr (a clone narrowed to the IP header), the skb
 * metadata dynptr (BPF_PROG_TEST_RUN gives no metadata: an empty dynptr) */
SEC("tc")
int tc_dynptr_copy(struct __sk_buff *skb)
{
	struct bpf_dynptr pkt, l3, meta, loc;
	struct scratch *s = slot(&scratch, 1);
	struct res *r = slot(&ops, 1);
	__u32 size;

	if (!s || !r)
		return TC_ACT_SHOT;
	bpf_dynptr_from_skb(skb, 0, &pkt);
	bpf_dynptr_from_mem(s->buf, sizeof(s->buf), 0, &loc);
	size = bpf_dynptr_size(&pkt);
	bpf_dynptr_clone(&pkt, &l3);
	bpf_dynptr_adjust(&l3, 14, size);
	r->r[0] = bpf_dynptr_copy(&loc, 0, &l3, 0, 20);
	r->r[1] = bpf_dynptr_memset(&l3, 1, 1, 0x28);		/* TOS */
	r->r[2] = bpf_dynptr_copy(&pkt, 0, &pkt, 6, 6);
	r->r[3] = bpf_dynptr_copy(&l3, size - 20, &loc, 0, 8);	/* -E2BIG */
	r->r[4] = bpf_dynptr_from_skb_meta(skb, 0, &meta);
	r->r[5] = bpf_dynptr_size(&meta);
	r->r[6] = bpf_dynptr_is_rdonly(&meta);
	r->r[7] = bpf_dynptr_memset(&meta, 0, 4, 1);
	r->r[8] = bpf_dynptr_memset(&meta, 0, 0, 1);
	r->r[9] = bpf_dynptr_copy(&loc, 0, &meta, 0, 4);
	r->r[10] = bpf_dynptr_copy(&meta, 0, &loc, 0, 0);
	r->r[11] = bpf_dynptr_read(s->buf, 4, &meta, 0, 0);
	r->r[12] = bpf_dynptr_write(&meta, 0, s->buf, 4, 0);
	r->r[13] = bpf_dynptr_slice(&meta, 0, NULL, 4) != 0;
	r->r[14] = bpf_dynptr_from_skb_meta(skb, 1, &meta);	/* -EINVAL, NULL */
	r->r[15] = bpf_dynptr_is_null(&meta) * 10 + bpf_dynptr_adjust(&meta, 0, 0);
	skb->mark = size;
	return TC_ACT_OK;
}

/* socket filter: the skb dynptr is read-only: fills and copies into it are -EINVAL, copies out
 * of it work */
SEC("socket")
int sock_dynptr_copy(struct __sk_buff *skb)
{
	struct bpf_dynptr pkt, loc;
	struct scratch *s = slot(&scratch, 2);
	struct res *r = slot(&ops, 2);

	if (!s || !r)
		return 0;
	bpf_dynptr_from_skb(skb, 0, &pkt);
	bpf_dynptr_from_mem(s->buf, sizeof(s->buf), 0, &loc);
	r->r[0] = bpf_dynptr_memset(&pkt, 0, 4, 0);
	r->r[1] = bpf_dynptr_memset(&pkt, 0, 0, 0);
	r->r[2] = bpf_dynptr_copy(&pkt, 0, &loc, 0, 4);
	r->r[3] = bpf_dynptr_copy(&loc, 8, &pkt, 0, 16);
	r->r[4] = bpf_dynptr_copy(&loc, 0, &pkt, 2, 1000);	/* -E2BIG */
	return skb->len;
}

struct args {
	__s32 vals[8];
	char text[32];
};

/* syscall: copies and fills at offsets and sizes the argument chooses, within one map value
 * (overlapping both ways) and between two, results and the value after each run */
SEC("syscall")
int sys_dynptr_copy(struct args *a)
{
	struct bpf_dynptr x, y;
	struct scratch *s = slot(&scratch, 3), *t = slot(&scratch, 0);
	struct res *r = slot(&ops, 3);
	__u32 o1 = a->vals[0] & 0xff, o2 = a->vals[1] & 0xff, n = a->vals[2] & 0x1ff;

	if (!s || !t || !r)
		return 0;
	__builtin_memcpy(s->buf, a->text, sizeof(a->text));
	bpf_dynptr_from_mem(s->buf, sizeof(s->buf), 0, &x);
	bpf_dynptr_from_mem(t->buf, sizeof(t->buf), 0, &y);
	r->r[0] = bpf_dynptr_copy(&x, o1, &x, o2, n);
	r->r[1] = bpf_dynptr_copy(&x, o2, &x, o1, n & 0xf);
	r->r[2] = bpf_dynptr_copy(&y, o1 & 0x1f, &x, 0, 16);
	r->r[3] = bpf_dynptr_memset(&y, o2, n, a->vals[3]);
	r->r[4] = bpf_dynptr_memset(&x, o1 & 0x3f, 64 - (o1 & 0x3f), a->vals[4]);
	bpf_dynptr_adjust(&y, 8, 24);
	r->r[5] = bpf_dynptr_memset(&y, 0, 16, 0x11);
	r->r[6] = bpf_dynptr_memset(&y, 1, 16, 0x22);
	r->r[7] = bpf_dynptr_copy(&y, 4, &x, 60, 4);
	r->r[8] = bpf_dynptr_copy(&y, 4, &x, 61, 4);
	return r->r[0];
}

char _license[] SEC("license") = "GPL";
