/* Allocated objects and graph data structures (tests/corpus/graph_kfuncs.h): bpf_obj_new and
 * bpf_obj_drop, linked lists and red-black trees whose roots live in global data (private
 * sections, one lock per section) and in map values, in the style of the kernel's selftests
 * linked_list.c and rbtree.c. Syscall programs read their argument struct (ctx_in) and report
 * through their return value, the argument struct (ctx_out) and maps; lists and trees keep
 * their nodes from one run to the next, so later runs see what earlier ones left. */
#include "corpus.h"
#include "graph_kfuncs.h"

struct args {
	__s32 vals[8];
	char text[32];
};

struct elem {
	__s64 key;
	struct bpf_list_node node;
	__s64 data;
};

struct tnode {
	struct bpf_rb_node rb;
	__s64 key;
	__s64 seq;
};

/* one lock and the roots it protects per section (the kernel wants them in one allocation) */
private(A) struct bpf_spin_lock glock;
private(A) struct bpf_list_head ghead __contains(elem, node);
private(B) struct bpf_spin_lock tlock;
private(B) struct bpf_rb_root groot __contains(tnode, rb);

__s64 graph_out[8];
__u64 graph_runs;

/* a map value holding a lock and a list (the kernel's linked_list.c map_value) */
struct map_value {
	struct bpf_spin_lock lock;
	__s32 count;
	struct bpf_list_head head __contains(elem, node);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct map_value);
} list_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct map_value);
} list_hash SEC(".maps");

/* bpf_obj_new, fields written and read back, bpf_obj_drop: no list involved */
SEC("syscall")
int obj_new_drop(struct args *a)
{
	struct elem *e = bpf_obj_new(struct elem);
	__s64 r;

	if (!e)
		return -1;
	e->key = a->vals[0];
	e->data = a->vals[1] * 3;
	r = e->key + e->data;
	bpf_obj_drop(e);
	graph_runs++;
	return r;
}

/* three pushes (front, back, front) onto a global list, two pops (front, back): the order shows
 * in the returned keys; the third node stays, so the list grows by one node per run */
SEC("syscall")
int list_push_pop(struct args *a)
{
	struct bpf_list_node *n;
	struct elem *e, *f, *g;
	__s64 k1 = -1, k2 = -1;

	e = bpf_obj_new(struct elem);
	if (!e)
		return -1;
	f = bpf_obj_new(struct elem);
	if (!f) {
		bpf_obj_drop(e);
		return -2;
	}
	g = bpf_obj_new(struct elem);
	if (!g) {
		bpf_obj_drop(e);
		bpf_obj_drop(f);
		return -3;
	}
	e->key = a->vals[0];
	f->key = a->vals[1];
	g->key = a->vals[2];
	e->data = f->data = g->data = graph_runs;

	bpf_spin_lock(&glock);
	bpf_list_push_front(&ghead, &e->node);
	bpf_list_push_back(&ghead, &f->node);
	bpf_list_push_front(&ghead, &g->node);
	n = bpf_list_pop_front(&ghead);
	bpf_spin_unlock(&glock);
	if (n) {
		e = container_of(n, struct elem, node);
		k1 = e->key;
		bpf_obj_drop(e);
	}
	bpf_spin_lock(&glock);
	n = bpf_list_pop_back(&ghead);
	bpf_spin_unlock(&glock);
	if (n) {
		e = container_of(n, struct elem, node);
		k2 = e->key;
		bpf_obj_drop(e);
	}
	graph_out[0] = k1;
	graph_out[1] = k2;
	graph_runs++;
	return (int)(k1 * 1000 + k2);
}

/* push vals[0] & 7 nodes at the back (keys from vals[1..]), then drain the global list: the
 * count and the keys in list order, folded into one number */
SEC("syscall")
int list_drain(struct args *a)
{
	struct bpf_list_node *n;
	__s64 sum = 0;
	int i, cnt = 0, todo = a->vals[0] & 7;
	__s64 keys[4] = { a->vals[1], a->vals[2], a->vals[3], a->vals[4] };

	for (i = 0; i < 7; i++) {
		struct elem *e;

		if (i >= todo)
			break;
		e = bpf_obj_new(struct elem);
		if (!e)
			return -1;
		e->key = keys[i & 3] + i;
		bpf_spin_lock(&glock);
		bpf_list_push_back(&ghead, &e->node);
		bpf_spin_unlock(&glock);
	}
	for (i = 0; i < 64; i++) {
		bpf_spin_lock(&glock);
		n = bpf_list_pop_front(&ghead);
		bpf_spin_unlock(&glock);
		if (!n)
			break;
		struct elem *e = container_of(n, struct elem, node);
		sum = sum * 3 + e->key;
		cnt++;
		bpf_obj_drop(e);
	}
	graph_out[2] = sum;
	graph_out[3] = cnt;
	return cnt;
}

/* a map value's list (array element vals[3] & 1): push one node per run, then peek at the front
 * and the back (bpf_list_front/back, non-owning references valid until the unlock) */
SEC("syscall")
int list_map_value(struct args *a)
{
	__u32 key = a->vals[3] & 1;
	struct map_value *v = bpf_map_lookup_elem(&list_array, &key);
	struct bpf_list_node *n;
	struct elem *e;
	__s64 front = -1, back = -1;

	if (!v)
		return -1;
	e = bpf_obj_new(struct elem);
	if (!e)
		return -2;
	e->key = a->vals[4] + graph_runs;
	e->data = 0;
	bpf_spin_lock(&v->lock);
	bpf_list_push_back(&v->head, &e->node);
	v->count++;
	n = bpf_list_front(&v->head);
	if (n)
		front = container_of(n, struct elem, node)->key;
	n = bpf_list_back(&v->head);
	if (n)
		back = container_of(n, struct elem, node)->key;
	bpf_spin_unlock(&v->lock);
	graph_out[4] = front;
	graph_out[5] = back;
	return (int)(front * 100 + back);
}

/* the kernel's linked_list.c test_list_push_pop on a hash map element: push, pop and check the
 * popped node is the one pushed, at both ends */
SEC("syscall")
int list_hash_push_pop(struct args *a)
{
	__u32 key = a->vals[5] & 3;
	struct map_value init = {}, *v;
	struct bpf_list_node *n;
	struct elem *e;

	v = bpf_map_lookup_elem(&list_hash, &key);
	if (!v) {
		bpf_map_update_elem(&list_hash, &key, &init, 0);
		v = bpf_map_lookup_elem(&list_hash, &key);
		if (!v)
			return -1;
	}
	e = bpf_obj_new(struct elem);
	if (!e)
		return -2;
	e->key = 42;
	e->data = key;
	bpf_spin_lock(&v->lock);
	bpf_list_push_front(&v->head, &e->node);
	n = bpf_list_pop_front(&v->head);
	bpf_spin_unlock(&v->lock);
	if (!n)
		return -3;
	e = container_of(n, struct elem, node);
	if (e->key != 42) {
		bpf_obj_drop(e);
		return -4;
	}
	bpf_spin_lock(&v->lock);
	bpf_list_push_back(&v->head, &e->node);
	n = bpf_list_pop_back(&v->head);
	bpf_spin_unlock(&v->lock);
	if (!n)
		return -5;
	e = container_of(n, struct elem, node);
	/* the second copy stays in the element: one more per run */
	bpf_spin_lock(&v->lock);
	v->count++;
	bpf_list_push_back(&v->head, &e->node);
	bpf_spin_unlock(&v->lock);
	return v->count;
}

static bool less(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	struct tnode *x = container_of(a, struct tnode, rb);
	struct tnode *y = container_of(b, struct tnode, rb);

	return x->key < y->key;
}

/* four keys into the global rbtree (the tree keeps what earlier runs left), then the two
 * smallest removed through bpf_rbtree_first + bpf_rbtree_remove */
SEC("syscall")
int rbtree_add_first_remove(struct args *a)
{
	struct bpf_rb_node *rb;
	struct tnode *t;
	__s64 out = 0;
	int i;

	for (i = 0; i < 4; i++) {
		t = bpf_obj_new(struct tnode);
		if (!t)
			return -1;
		t->key = a->vals[i & 7];
		t->seq = graph_runs * 4 + i;
		bpf_spin_lock(&tlock);
		bpf_rbtree_add(&groot, &t->rb, less);
		bpf_spin_unlock(&tlock);
	}
	for (i = 0; i < 2; i++) {
		bpf_spin_lock(&tlock);
		rb = bpf_rbtree_first(&groot);
		if (!rb) {
			bpf_spin_unlock(&tlock);
			break;
		}
		rb = bpf_rbtree_remove(&groot, rb);
		bpf_spin_unlock(&tlock);
		if (!rb)
			break;
		t = container_of(rb, struct tnode, rb);
		out = out * 1000 + t->key;
		graph_out[6 + i] = t->seq;
		bpf_obj_drop(t);
	}
	graph_runs++;
	return (int)out;
}

/* a refcounted object (the kernel's refcounted_kptr.c): one reference goes into a tree, a
 * second one (bpf_refcount_acquire) into a list, both protected by one lock; then both are
 * taken out again and dropped (the object is freed with its last reference) */
struct rnode {
	struct bpf_rb_node rb;
	struct bpf_list_node l;
	struct bpf_refcount ref;
	__s64 key;
};

private(C) struct bpf_spin_lock rlock;
private(C) struct bpf_rb_root rroot __contains(rnode, rb);
private(C) struct bpf_list_head rhead __contains(rnode, l);

static bool rless(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	return container_of(a, struct rnode, rb)->key < container_of(b, struct rnode, rb)->key;
}

SEC("syscall")
int refcount_tree_and_list(struct args *a)
{
	struct bpf_list_node *l;
	struct bpf_rb_node *rb;
	struct rnode *n, *m;
	__s64 sum = 0;

	n = bpf_obj_new(struct rnode);
	if (!n)
		return -1;
	n->key = a->vals[0];
	m = bpf_refcount_acquire(n);
	bpf_spin_lock(&rlock);
	bpf_rbtree_add(&rroot, &n->rb, rless);
	if (m)
		bpf_list_push_back(&rhead, &m->l);
	bpf_spin_unlock(&rlock);

	bpf_spin_lock(&rlock);
	l = bpf_list_pop_front(&rhead);
	rb = bpf_rbtree_first(&rroot);
	if (rb)
		rb = bpf_rbtree_remove(&rroot, rb);
	bpf_spin_unlock(&rlock);
	if (l) {
		m = container_of(l, struct rnode, l);
		sum += m->key;
		bpf_obj_drop(m);
	}
	if (rb) {
		n = container_of(rb, struct rnode, rb);
		sum += n->key * 10;
		bpf_obj_drop(n);
	}
	return (int)sum;
}

/* the tree's shape (Linux 6.16+ bpf_rbtree_root/left/right): eight keys added per run, the
 * smallest and then the root removed, and the top three levels recorded (-1 for no node).
 * The tree keeps growing from run to run, so later runs rebalance deeper trees. */
private(D) struct bpf_spin_lock wlock;
private(D) struct bpf_rb_root wroot __contains(tnode, rb);
__s64 shape_out[8];

static __always_inline __s64 key_of(struct bpf_rb_node *rb)
{
	return rb ? container_of(rb, struct tnode, rb)->key : -1;
}

SEC("syscall")
int rbtree_shape(struct args *a)
{
	struct bpf_rb_node *rb, *l, *r;
	struct tnode *t;
	int i;

#pragma clang loop unroll(full)
	for (i = 0; i < 8; i++) {
		t = bpf_obj_new(struct tnode);
		if (!t)
			return -1;
		t->key = a->vals[i] & 0xff;
		t->seq = i;
		bpf_spin_lock(&wlock);
		bpf_rbtree_add(&wroot, &t->rb, less);
		bpf_spin_unlock(&wlock);
	}
	bpf_spin_lock(&wlock);
	rb = bpf_rbtree_first(&wroot);
	if (rb)
		rb = bpf_rbtree_remove(&wroot, rb);
	bpf_spin_unlock(&wlock);
	if (rb)
		bpf_obj_drop(container_of(rb, struct tnode, rb));
	bpf_spin_lock(&wlock);
	rb = bpf_rbtree_root(&wroot);
	if (rb)
		rb = bpf_rbtree_remove(&wroot, rb);
	bpf_spin_unlock(&wlock);
	if (rb)
		bpf_obj_drop(container_of(rb, struct tnode, rb));

	bpf_spin_lock(&wlock);
	rb = bpf_rbtree_root(&wroot);
	shape_out[0] = key_of(rb);
	if (rb) {
		l = bpf_rbtree_left(&wroot, rb);
		r = bpf_rbtree_right(&wroot, rb);
		shape_out[1] = key_of(l);
		shape_out[2] = key_of(r);
		if (l) {
			shape_out[3] = key_of(bpf_rbtree_left(&wroot, l));
			shape_out[4] = key_of(bpf_rbtree_right(&wroot, l));
		}
		if (r) {
			shape_out[5] = key_of(bpf_rbtree_left(&wroot, r));
			shape_out[6] = key_of(bpf_rbtree_right(&wroot, r));
		}
	}
	bpf_spin_unlock(&wlock);
	return (int)shape_out[0];
}
