// SPDX-License-Identifier: MIT
/* A ring-buffer producer: BPF writes fixed-size events into a BPF_MAP_TYPE_RINGBUF map and a
 * Python consumer reads them (samples/ringbuf/README.md).
 *
 * produce() emits args->count events: even sequence numbers through bpf_ringbuf_reserve +
 * bpf_ringbuf_submit (zero-copy), odd ones through bpf_ringbuf_output (copied from the stack),
 * so the consumer sees both paths. on_write() is the same producer as one would attach it to
 * a tracepoint in the kernel.
 */
#include "bpf_helpers.h"

enum event_kind {
	EV_RESERVED = 1,	/* written in place after bpf_ringbuf_reserve */
	EV_COPIED = 2,		/* copied in by bpf_ringbuf_output */
};

struct event {
	__u32 seq;
	__u32 kind;		/* enum event_kind */
	__u64 value;
	char tag[16];
};

struct produce_args {
	__u32 count;
	__u32 seed;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);	/* bytes, a power of two and a multiple of the page size */
} events SEC(".maps");

__u64 produced;			/* events committed */
__u64 dropped;			/* reserve/output failures (ring full) */
static const char tag[16] = "pybpf-ringbuf";	/* folded into the code by clang */
/* The value sequence is an LCG; user space may change its constants before load (.rodata). */
const volatile __u64 lcg_mul = 6364136223846793005ULL;
const volatile __u64 lcg_add = 1442695040888963407ULL;

static __always_inline void fill_tag(char *dst)
{
	for (int i = 0; i < 16; i++)
		dst[i] = tag[i];
}

SEC("syscall")
int produce(struct produce_args *args)
{
	__u32 n = args->count;
	__u64 value = args->seed;

	for (__u32 i = 0; i < n && i < 1024; i++) {
		value = value * lcg_mul + lcg_add;
		if ((i & 1) == 0) {
			struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

			if (!e) {
				dropped++;
				continue;
			}
			e->seq = i;
			e->kind = EV_RESERVED;
			e->value = value;
			fill_tag(e->tag);
			bpf_ringbuf_submit(e, 0);
		} else {
			struct event e = { .seq = i, .kind = EV_COPIED, .value = value };

			fill_tag(e.tag);
			if (bpf_ringbuf_output(&events, &e, sizeof(e), 0)) {
				dropped++;
				continue;
			}
		}
		produced++;
	}
	return produced;
}

SEC("tp/syscalls/sys_enter_write")
int on_write(void *ctx)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		dropped++;
		return 0;
	}
	e->seq = produced++;
	e->kind = EV_RESERVED;
	e->value = bpf_get_current_pid_tgid() >> 32;
	fill_tag(e->tag);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char _license[] SEC("license") = "GPL";
