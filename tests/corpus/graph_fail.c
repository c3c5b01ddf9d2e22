/* Programs the kernel's verifier refuses (tests/test_graph_kfuncs.py compares pybpf's verdict
 * and message with the kernel's): allocated objects and graph data structures used wrongly,
 * in the style of the kernel's linked_list_fail.c and rbtree_fail.c, and edge cases it accepts.
 * Not autoloaded ("?"). */
#include "corpus.h"
#include "graph_kfuncs.h"

struct elem {
	__s64 key;
	struct bpf_list_node node;
	__s64 data;
};

struct other {
	struct bpf_list_node n;
	__s64 key;
};

struct tnode {
	struct bpf_rb_node rb;
	__s64 key;
};

private(A) struct bpf_spin_lock glock;
private(A) struct bpf_list_head ghead __contains(elem, node);
private(B) struct bpf_spin_lock tlock;
private(B) struct bpf_rb_root groot __contains(tnode, rb);

__s64 sink;

/* the object is never dropped */
SEC("?syscall")
int leak_obj(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);

	if (!e)
		return 0;
	e->key = 1;
	return 0;
}

/* bpf_obj_new may return NULL */
SEC("?syscall")
int no_null_check(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);

	e->key = 1;
	bpf_obj_drop(e);
	return 0;
}

/* graph operations need the root's lock */
SEC("?syscall")
int push_without_lock(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);

	if (!e)
		return 0;
	bpf_list_push_back(&ghead, &e->node);
	return 0;
}

/* a non-owning reference does not survive the unlock */
SEC("?syscall")
int use_after_unlock(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);

	if (!e)
		return 0;
	bpf_spin_lock(&glock);
	bpf_list_push_back(&ghead, &e->node);
	bpf_spin_unlock(&glock);
	sink = e->key;
	return 0;
}

/* the list holds struct elem: a struct other node does not match __contains */
SEC("?syscall")
int wrong_node_type(void *ctx)
{
	struct other *o = bpf_obj_new(struct other);

	if (!o)
		return 0;
	bpf_spin_lock(&glock);
	bpf_list_push_back(&ghead, &o->n);
	bpf_spin_unlock(&glock);
	return 0;
}

/* the node field belongs to the list implementation */
SEC("?syscall")
int node_direct_access(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);
	__u64 v;

	if (!e)
		return 0;
	v = *(__u64 *)&e->node;
	bpf_obj_drop(e);
	return v;
}

/* a dropped object is gone */
SEC("?syscall")
int use_after_drop(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);

	if (!e)
		return 0;
	bpf_obj_drop(e);
	return e->key;
}

/* pushing twice: after the first push the pointer is a non-owning reference */
SEC("?syscall")
int push_twice(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);

	if (!e)
		return 0;
	bpf_spin_lock(&glock);
	bpf_list_push_back(&ghead, &e->node);
	bpf_list_push_front(&ghead, &e->node);
	bpf_spin_unlock(&glock);
	return 0;
}

/* an owning reference to bpf_rbtree_remove: Linux 6.18 as measured here takes it (a node in
 * no tree: NULL at run time), so this one is accepted */
SEC("?syscall")
int rbtree_remove_owning(void *ctx)
{
	struct tnode *t = bpf_obj_new(struct tnode);
	struct bpf_rb_node *rb;

	if (!t)
		return 0;
	bpf_spin_lock(&tlock);
	rb = bpf_rbtree_remove(&groot, &t->rb);
	bpf_spin_unlock(&tlock);
	bpf_obj_drop(t);
	if (rb)
		bpf_obj_drop(container_of(rb, struct tnode, rb));
	return 0;
}

/* a popped node is an owning reference that must be dropped or pushed again */
SEC("?syscall")
int pop_leak(void *ctx)
{
	struct bpf_list_node *n;

	bpf_spin_lock(&glock);
	n = bpf_list_pop_front(&ghead);
	bpf_spin_unlock(&glock);
	return n ? 1 : 0;
}

/* the list head itself is not for loads and stores */
SEC("?syscall")
int head_direct_access(void *ctx)
{
	return *(volatile __u64 *)&ghead;
}

/* bpf_obj_new is no graph kfunc: not under the lock */
SEC("?syscall")
int obj_new_under_lock(void *ctx)
{
	struct elem *e;

	bpf_spin_lock(&glock);
	e = bpf_obj_new(struct elem);
	bpf_spin_unlock(&glock);
	if (e)
		bpf_obj_drop(e);
	return 0;
}

/* writing past the end of the object */
SEC("?syscall")
int beyond_object(void *ctx)
{
	struct elem *e = bpf_obj_new(struct elem);

	if (!e)
		return 0;
	*(volatile __u64 *)((char *)e + 40) = 1;
	bpf_obj_drop(e);
	return 0;
}

/* bpf_obj_drop takes an object bpf_obj_new returned */
SEC("?syscall")
int drop_map_value(void *ctx)
{
	bpf_obj_drop(&sink);
	return 0;
}

static bool less(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	return container_of(a, struct tnode, rb)->key < container_of(b, struct tnode, rb)->key;
}

static bool less_two(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	return 2;
}

static bool less_drops(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	bpf_obj_drop(container_of(a, struct tnode, rb));
	return 0;
}

/* bpf_rbtree_add needs the tree's lock */
SEC("?syscall")
int rbtree_add_without_lock(void *ctx)
{
	struct tnode *t = bpf_obj_new(struct tnode);

	if (!t)
		return 0;
	bpf_rbtree_add(&groot, &t->rb, less);
	return 0;
}

/* the list's lock does not protect the tree */
SEC("?syscall")
int rbtree_add_wrong_lock(void *ctx)
{
	struct tnode *t = bpf_obj_new(struct tnode);

	if (!t)
		return 0;
	bpf_spin_lock(&glock);
	bpf_rbtree_add(&groot, &t->rb, less);
	bpf_spin_unlock(&glock);
	return 0;
}

/* less answers a bool: clang makes "return 2" 1, so this one is accepted */
SEC("?syscall")
int rbtree_less_returns_two(void *ctx)
{
	struct tnode *t = bpf_obj_new(struct tnode);

	if (!t)
		return 0;
	bpf_spin_lock(&tlock);
	bpf_rbtree_add(&groot, &t->rb, less_two);
	bpf_spin_unlock(&tlock);
	return 0;
}

/* less runs under the lock: no kfunc calls there */
SEC("?syscall")
int rbtree_less_calls_kfunc(void *ctx)
{
	struct tnode *t = bpf_obj_new(struct tnode);

	if (!t)
		return 0;
	bpf_spin_lock(&tlock);
	bpf_rbtree_add(&groot, &t->rb, less_drops);
	bpf_spin_unlock(&tlock);
	return 0;
}

/* bpf_rbtree_first may return NULL */
SEC("?syscall")
int rbtree_first_no_null_check(void *ctx)
{
	struct bpf_rb_node *rb;
	__s64 k;

	bpf_spin_lock(&tlock);
	rb = bpf_rbtree_first(&groot);
	k = container_of(rb, struct tnode, rb)->key;
	bpf_spin_unlock(&tlock);
	return k;
}

/* bpf_list_front's node is only valid under the lock */
SEC("?syscall")
int list_front_after_unlock(void *ctx)
{
	struct bpf_list_node *n;

	bpf_spin_lock(&glock);
	n = bpf_list_front(&ghead);
	bpf_spin_unlock(&glock);
	if (!n)
		return 0;
	return container_of(n, struct elem, node)->key;
}

/* bpf_obj_drop wants the object, not its node field */
SEC("?syscall")
int drop_node_pointer(void *ctx)
{
	struct bpf_list_node *n;

	bpf_spin_lock(&glock);
	n = bpf_list_pop_front(&ghead);
	bpf_spin_unlock(&glock);
	if (n)
		bpf_obj_drop(n);
	return 0;
}

/* the kernel's linked_list.c: push, pop and drop in one locked region, all accepted */
SEC("?syscall")
int push_pop_drop_ok(void *ctx)
{
	struct bpf_list_node *n;
	struct elem *e = bpf_obj_new(struct elem);

	if (!e)
		return 0;
	bpf_spin_lock(&glock);
	bpf_list_push_front(&ghead, &e->node);
	n = bpf_list_pop_back(&ghead);
	bpf_spin_unlock(&glock);
	if (n)
		bpf_obj_drop(container_of(n, struct elem, node));
	return 0;
}
