/* The ownership shapes Linux 6.18.44 takes: a map value's root owns ok_mid, an allocated ok_top owns
 * ok_mid, ok_mid (a node and a root) owns ok_leaf; no cycle, so the BTF loads */
#include "corpus.h"
#include "graph_kfuncs.h"

struct ok_leaf {
	struct bpf_rb_node rb;
	__u64 v;
};

struct ok_mid {
	struct bpf_list_node node;
	struct bpf_spin_lock lock;
	struct bpf_rb_root leaves __contains(ok_leaf, rb);
};

struct ok_top {
	struct bpf_spin_lock lock;
	struct bpf_list_head mids __contains(ok_mid, node);
};

private(A) struct bpf_spin_lock glock;
private(A) struct bpf_list_head gmids __contains(ok_mid, node);

static bool leaf_less(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	return container_of(a, struct ok_leaf, rb)->v < container_of(b, struct ok_leaf, rb)->v;
}

/* a leaf in a mid's tree, the mid in a top's list and then in the global list */
SEC("?syscall")
int owner_ok_push(void *ctx)
{
	struct ok_top *t = bpf_obj_new(struct ok_top);
	struct ok_mid *m;
	struct ok_leaf *f;

	if (!t)
		return 1;
	m = bpf_obj_new(struct ok_mid);
	if (!m) {
		bpf_obj_drop(t);
		return 2;
	}
	f = bpf_obj_new(struct ok_leaf);
	if (!f) {
		bpf_obj_drop(m);
		bpf_obj_drop(t);
		return 3;
	}
	f->v = 5;
	bpf_spin_lock(&m->lock);
	bpf_rbtree_add(&m->leaves, &f->rb, leaf_less);
	bpf_spin_unlock(&m->lock);
	bpf_spin_lock(&t->lock);
	bpf_list_push_back(&t->mids, &m->node);
	bpf_spin_unlock(&t->lock);
	bpf_obj_drop(t);
	m = bpf_obj_new(struct ok_mid);
	if (!m)
		return 4;
	bpf_spin_lock(&glock);
	bpf_list_push_back(&gmids, &m->node);
	bpf_spin_unlock(&glock);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
