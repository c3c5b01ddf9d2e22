/* Packet pointers across global functions (kernel 6.13+: a subprogram that changes packet data,
 * by a helper such as bpf_xdp_adjust_head or a tail call, changes it for its callers too, so a
 * call to a global one invalidates the caller's packet pointers; tests/test_pkt_data_invalidation.py). */
#include "../../../samples/c/bpf_helpers.h"


struct {
	__uint(type, 3);              /* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jmp SEC(".maps");

__noinline int push4(struct xdp_md *ctx)
{
	return bpf_xdp_adjust_head(ctx, -4);
}

__noinline int jump(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp, 0);
	return 0;
}

__noinline int nothing(struct xdp_md *ctx)
{
	return ctx->ingress_ifindex;
}

__noinline int calls_push4(struct xdp_md *ctx)
{
	return push4(ctx) + 1;
}

/* the pointer proven before the call is used after it: refused */
#define USE_AFTER(fn)								\
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end; \
	unsigned char *p = data;						\
	if (p + 1 > (unsigned char *)data_end)					\
		return XDP_PASS;						\
	int r = fn(ctx);							\
	return *(volatile unsigned char *)p + r;

SEC("xdp") int stale_after_adjust(struct xdp_md *ctx) { USE_AFTER(push4) }
SEC("xdp") int stale_after_tail_call(struct xdp_md *ctx) { USE_AFTER(jump) }
SEC("xdp") int stale_after_nested(struct xdp_md *ctx) { USE_AFTER(calls_push4) }
SEC("xdp") int valid_after_nothing(struct xdp_md *ctx) { USE_AFTER(nothing) }

/* the program loads data and data_end again after the call: accepted */
SEC("xdp")
int reload_after_adjust(struct xdp_md *ctx)
{
	if (push4(ctx))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	unsigned char *p = data;
	if (p + 1 > (unsigned char *)data_end)
		return XDP_PASS;
	return *p;
}

char _license[] SEC("license") = "GPL";
