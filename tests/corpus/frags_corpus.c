/* XDP multi-buffer programs (SEC("xdp.frags"), BPF_F_XDP_HAS_FRAGS): BPF_PROG_TEST_RUN puts a
 * packet longer than the linear part (3520 bytes) in page-sized fragments; these programs read
 * and write across them with bpf_xdp_load/store_bytes and an XDP dynptr, and grow and shrink the
 * tail. tests/corpus_run.py runs them on long packets too (FRAG_PACKETS). */
#include "corpus.h"
#include "kfuncs.h"

static long (*bpf_xdp_adjust_tail)(struct xdp_md *xdp_md, int delta) = (void *) 65;
static long (*bpf_xdp_get_buff_len)(struct xdp_md *xdp_md) = (void *) 188;
static long (*bpf_xdp_load_bytes)(struct xdp_md *xdp_md, __u32 offset, void *buf, __u32 len) = (void *) 189;
static long (*bpf_xdp_store_bytes)(struct xdp_md *xdp_md, __u32 offset, void *buf, __u32 len) = (void *) 190;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __s64);
} frag_results SEC(".maps");

static __always_inline void put(__u32 k, __s64 v)
{
	bpf_map_update_elem(&frag_results, &k, &v, BPF_ANY);
}

/* The buffer's length and the linear part's; 16 bytes read at offsets around the end of the
 * linear part and of the first fragment (each xor-folded into one value), then rewritten
 * across the boundary; XDP_PASS for multi-buffer packets, XDP_DROP for linear ones */
SEC("xdp.frags")
int frags_load_store(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 linear = data_end - data;
	long len = bpf_xdp_get_buff_len(ctx);
	__u8 buf[16], mark[16];
	__u32 offs[3], i;
	__s64 fold;

	put(0, len);
	put(1, linear);
	offs[0] = linear > 8 ? linear - 8 : 0;
	offs[1] = linear + 4096 - 8;
	offs[2] = len > 16 ? len - 16 : 0;
	for (i = 0; i < 3; i++) {
		long err = bpf_xdp_load_bytes(ctx, offs[i], buf, sizeof(buf));

		fold = err;
		if (!err)
			fold = *(__s64 *)buf ^ *(__s64 *)&buf[8];
		put(2 + i, fold);
	}
	put(5, bpf_xdp_load_bytes(ctx, 0x10000, buf, 1));
	put(6, bpf_xdp_load_bytes(ctx, len - 1, buf, 2));
	for (i = 0; i < sizeof(mark); i++)
		mark[i] = 0xa0 + i;
	put(7, bpf_xdp_store_bytes(ctx, offs[0], mark, sizeof(mark)));
	return len > linear ? XDP_PASS : XDP_DROP;
}

/* Tail adjustments on a multi-buffer packet: grow the last fragment by 100 bytes (zeroed), then
 * past its page (-EINVAL), then shrink by the argument the first payload byte picks (across
 * fragments, freeing them, or back to linear) */
SEC("xdp.frags")
int frags_tail(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	long len = bpf_xdp_get_buff_len(ctx);
	int shrink;
	__u8 sel;

	if (data + 43 > data_end)
		return XDP_ABORTED;
	sel = *(__u8 *)(data + 42);
	put(8, bpf_xdp_adjust_tail(ctx, 100));
	put(9, bpf_xdp_adjust_tail(ctx, 4096));
	shrink = sel == 1 ? 4200 : sel == 2 ? (int)len : sel == 3 ? (int)len - 20 : 50;
	put(10, bpf_xdp_adjust_tail(ctx, -shrink));
	put(11, bpf_xdp_get_buff_len(ctx));
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	put(12, data_end - data);
	return XDP_TX;
}

/* An XDP dynptr over the whole buffer: its size, a read across the linear/fragment boundary, a
 * slice inside a fragment and one across the boundary (copied into the buffer), a write into
 * the last fragment */
SEC("xdp.frags")
int frags_dynptr(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 linear = data_end - data;
	struct bpf_dynptr ptr;
	__u8 buf[8], sbuf[8], *s;
	__u32 size;

	bpf_dynptr_from_xdp(ctx, 0, &ptr);
	size = bpf_dynptr_size(&ptr);
	put(13, size);
	put(14, bpf_dynptr_read(buf, sizeof(buf), &ptr, linear - 4, 0) ?: *(__s64 *)buf);
	s = bpf_dynptr_slice(&ptr, linear + 8, sbuf, sizeof(sbuf));
	put(15, s ? *(__s64 *)s : -1);
	s = bpf_dynptr_slice(&ptr, linear - 2, sbuf, sizeof(sbuf));
	if (s)
		put(3, (s == sbuf) * 1000 + s[0] + s[7]);
	buf[0] = 0x5a;
	return bpf_dynptr_write(&ptr, size - 1, buf, 1, 0) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
