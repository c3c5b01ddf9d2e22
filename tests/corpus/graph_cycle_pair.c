/* Two types that own each other: a list of pair_b in pair_a, a tree of pair_a in pair_b */
#include "corpus.h"
#include "graph_kfuncs.h"

struct pair_a {
	struct bpf_rb_node rb;
	struct bpf_spin_lock lock;
	struct bpf_list_head bs __contains(pair_b, node);
};

struct pair_b {
	struct bpf_list_node node;
	struct bpf_spin_lock lock;
	struct bpf_rb_root as __contains(pair_a, rb);
};

SEC("?syscall")
int cycle_pair_new(void *ctx)
{
	struct pair_a *a = bpf_obj_new(struct pair_a);
	struct pair_b *b = bpf_obj_new(struct pair_b);

	if (a)
		bpf_obj_drop(a);
	if (b)
		bpf_obj_drop(b);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
