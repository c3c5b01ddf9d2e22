/* A type that owns itself: a list node and a list of its own type (Linux 6.18's
 * btf_check_and_fixup_fields refuses the object's BTF with ELOOP). */
#include "corpus.h"
#include "graph_kfuncs.h"

struct selfish {
	struct bpf_list_node node;
	struct bpf_spin_lock lock;
	struct bpf_list_head kids __contains(selfish, node);
};

SEC("?syscall")
int cycle_self_new(void *ctx)
{
	struct selfish *s = bpf_obj_new(struct selfish);

	if (!s)
		return 1;
	bpf_obj_drop(s);
	return 0;
}

SEC("?syscall")
int cycle_self_plain(void *ctx)
{
	return 7;
}

char LICENSE[] SEC("license") = "GPL";
