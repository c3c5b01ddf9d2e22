/* Ring buffer dynptrs and the generic dynptr kfuncs (tests/corpus/kfuncs.h): samples reserved as
 * dynptrs, filled from packet dynptrs (clones narrowed with bpf_dynptr_adjust), submitted or
 * discarded on every path (also when the reservation failed); the records each run leaves in the
 * ring are compared with the kernel's (tests/corpus_run.py reads both rings). */
#include "corpus.h"
#include "kfuncs.h"

#define BPF_MAP_TYPE_RINGBUF 27

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} dyn_events SEC(".maps");

struct pkt_event {
	__u32 size;		/* bpf_dynptr_size of the packet dynptr */
	__u32 l3_size;		/* of its clone narrowed to the network header onwards */
	__s32 adjust_err;	/* bpf_dynptr_adjust past the end */
	__s32 read_err;		/* bpf_dynptr_read of 20 bytes of the clone */
	__u8 rdonly, clone_rdonly, is_null, pad;
	__u8 l3[20];
};

/* XDP: the IPv4/IPv6 header through a clone of the packet dynptr goes into a ring buffer dynptr;
 * ARP and short packets are discarded, the rest submitted */
SEC("xdp")
int xdp_rb_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr pkt, l3, rec;
	struct pkt_event *e;
	__u32 size;
	long err;

	err = bpf_ringbuf_reserve_dynptr(&dyn_events, sizeof(*e), 0, &rec);
	e = bpf_dynptr_data(&rec, 0, sizeof(*e));
	if (err || !e) {
		bpf_ringbuf_discard_dynptr(&rec, 0);
		return XDP_ABORTED;
	}
	__builtin_memset(e, 0, sizeof(*e));
	bpf_dynptr_from_xdp(ctx, 0, &pkt);
	size = bpf_dynptr_size(&pkt);
	e->size = size;
	bpf_dynptr_clone(&pkt, &l3);
	e->adjust_err = bpf_dynptr_adjust(&l3, 14, size + 1);
	bpf_dynptr_adjust(&l3, size < 14 ? size : 14, size);
	e->l3_size = bpf_dynptr_size(&l3);
	e->read_err = bpf_dynptr_read(e->l3, sizeof(e->l3), &l3, 0, 0);
	e->rdonly = bpf_dynptr_is_rdonly(&pkt);
	e->clone_rdonly = bpf_dynptr_is_rdonly(&l3);
	e->is_null = bpf_dynptr_is_null(&l3);
	if (e->read_err || (e->l3[0] >> 4 != 4 && e->l3[0] >> 4 != 6)) {
		bpf_ringbuf_discard_dynptr(&rec, 0);
		return XDP_DROP;
	}
	bpf_ringbuf_submit_dynptr(&rec, 0);
	return XDP_PASS;
}

/* tc: the transport header's first 8 bytes (after a 20-byte IPv4 header) through an adjusted
 * skb dynptr clone, written into the sample with bpf_dynptr_write; the mark is the clone's size */
SEC("tc")
int tc_rb_dynptr(struct __sk_buff *skb)
{
	struct bpf_dynptr pkt, l4, rec;
	__u8 ports[8] = {};
	__s32 res[4];

	bpf_ringbuf_reserve_dynptr(&dyn_events, sizeof(ports) + sizeof(res), 0, &rec);
	if (bpf_dynptr_from_skb(skb, 0, &pkt)) {
		bpf_ringbuf_discard_dynptr(&rec, 0);
		return 2;
	}
	bpf_dynptr_clone(&pkt, &l4);
	res[0] = bpf_dynptr_adjust(&l4, 34, bpf_dynptr_size(&pkt));
	res[1] = bpf_dynptr_read(ports, sizeof(ports), &l4, 0, 0);
	res[2] = bpf_dynptr_is_rdonly(&l4);
	res[3] = bpf_dynptr_size(&l4);
	skb->mark = res[3];
	bpf_dynptr_write(&rec, 0, ports, sizeof(ports), 0);
	bpf_dynptr_write(&rec, sizeof(ports), res, sizeof(res), 0);
	if (res[0])
		bpf_ringbuf_discard_dynptr(&rec, 0);
	else
		bpf_ringbuf_submit_dynptr(&rec, 0);
	return 0;
}

/* socket filter: the skb dynptr and its clones are read-only; the record says so */
SEC("socket")
int sock_rb_dynptr(struct __sk_buff *skb)
{
	struct bpf_dynptr pkt, c, rec;
	__u32 v[4];

	if (bpf_ringbuf_reserve_dynptr(&dyn_events, sizeof(v), 0, &rec)) {
		bpf_ringbuf_discard_dynptr(&rec, 0);
		return 0;
	}
	bpf_dynptr_from_skb(skb, 0, &pkt);
	bpf_dynptr_clone(&pkt, &c);
	v[0] = bpf_dynptr_is_rdonly(&pkt);
	v[1] = bpf_dynptr_is_rdonly(&c);
	v[2] = bpf_dynptr_adjust(&c, 2, 1);
	v[3] = bpf_dynptr_size(&c);
	bpf_dynptr_write(&rec, 0, v, sizeof(v), 0);
	bpf_ringbuf_submit_dynptr(&rec, 0);
	return skb->len;
}

struct args {
	__s32 vals[8];
	char text[32];
};

/* syscall: reservations of the argument's size and flags (too big: -E2BIG, flags: -EINVAL,
 * while another sample is outstanding and the ring is full: -EINVAL), NULL dynptrs (is_null,
 * size, adjust, clone of one), and a discard or a submit chosen by the argument */
SEC("syscall")
int sys_rb_dynptr(struct args *a)
{
	struct bpf_dynptr rec, big, c;
	__u32 size = a->vals[0] & 0x1ffffff, flags = a->vals[1] >> 4;
	char text[8];
	int err;

	__builtin_memcpy(text, a->text, sizeof(text));	/* helpers take no ctx memory */

	a->vals[0] = bpf_ringbuf_reserve_dynptr(&dyn_events, size, flags, &rec);
	a->vals[1] = bpf_dynptr_is_null(&rec);
	a->vals[2] = bpf_dynptr_size(&rec);
	a->vals[3] = bpf_dynptr_write(&rec, 0, text, sizeof(text), 0);
	a->vals[4] = bpf_ringbuf_reserve_dynptr(&dyn_events, 4080, 0, &big);
	bpf_ringbuf_discard_dynptr(&big, 0);
	err = bpf_dynptr_clone(&rec, &c);
	a->vals[5] = err;
	a->vals[6] = bpf_dynptr_adjust(&c, 1, 3) ?: bpf_dynptr_size(&c);
	if (a->vals[7] & 1)
		bpf_ringbuf_discard_dynptr(&c, 0);
	else
		bpf_ringbuf_submit_dynptr(&c, 0);
	return a->vals[0];
}

char _license[] SEC("license") = "GPL";
