/* Three types in an ownership ring: ring_a holds a list of ring_b, ring_b of ring_c, ring_c of
 * ring_a (Linux 6.18 refuses the object's BTF with ELOOP; libbpf loads it without BTF) */
#include "corpus.h"
#include "graph_kfuncs.h"

struct ring_a {
	struct bpf_list_node n;
	struct bpf_spin_lock lock;
	struct bpf_list_head h __contains(ring_b, n);
};

struct ring_b {
	struct bpf_list_node n;
	struct bpf_spin_lock lock;
	struct bpf_list_head h __contains(ring_c, n);
};

struct ring_c {
	struct bpf_list_node n;
	struct bpf_spin_lock lock;
	struct bpf_list_head h __contains(ring_a, n);
};

private(R) struct bpf_spin_lock ring_lock;
private(R) struct bpf_list_head ring_top __contains(ring_a, n);

SEC("?syscall")
int cycle_ring_new(void *ctx)
{
	struct ring_a *a = bpf_obj_new(struct ring_a);
	struct ring_b *b = bpf_obj_new(struct ring_b);
	struct ring_c *c = bpf_obj_new(struct ring_c);

	if (a)
		bpf_obj_drop(a);
	if (b)
		bpf_obj_drop(b);
	if (c)
		bpf_obj_drop(c);
	return 0;
}

/* no BTF: the global root's lock is a plain word to the verifier */
SEC("?syscall")
int cycle_ring_lock(void *ctx)
{
	bpf_spin_lock(&ring_lock);
	bpf_spin_unlock(&ring_lock);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
