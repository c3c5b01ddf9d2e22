/* bpf_kptr_xchg and __kptr fields the kernel's verifier refuses (and edge cases it takes), each
 * with the kernel's verdict recorded in tests/test_kptr.py (Linux 6.18). */
#include "corpus.h"
#include "kptr.h"

struct stash_node {
	__s64 key;
	__s64 seq;
};

struct other_node {
	__s64 a;
	__s64 b;
};

struct list_elem {
	__s64 key;
	struct bpf_list_node node;
};

struct pcpu_count {
	__s64 hits;
	__s64 sum;
};

struct pcpu_big {
	__s64 v[65];
};

struct pcpu_with_ptr {
	__s64 a;
	void *p;
};

struct pcpu_with_node {
	__s64 a;
	struct bpf_list_node node;
};

struct pcpu_value {
	struct pcpu_count __percpu_kptr *pc;
	struct pcpu_count __kptr *plain;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pcpu_value);
} pcpu SEC(".maps");

static __always_inline struct pcpu_value *pslot(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&pcpu, &key);
}

struct bag {
	struct bpf_spin_lock lock;
	struct bpf_list_head head __contains(list_elem, node);
};

struct bag2 {
	struct bpf_spin_lock lock;
	struct bpf_list_head head __contains(list_elem, node);
};

struct stash_value {
	__s64 count;
	struct stash_node __kptr *node;
	struct stash_node __kptr_untrusted *weak;
	struct list_elem __kptr *elem;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stash_value);
} stash SEC(".maps");

static __always_inline struct stash_value *slot(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&stash, &key);
}

/* the old object bpf_kptr_xchg returns is an owning reference: dropping it is required */
SEC("?syscall")
int leak_old(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return 0;
	bpf_kptr_xchg(&v->node, n);
	return 0;
}

/* a plain store into a referenced kptr field */
SEC("?syscall")
int store_referenced(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return 0;
	v->node = n;
	return 0;
}

/* an object of another type */
SEC("?syscall")
int xchg_wrong_type(void *ctx)
{
	struct stash_value *v = slot();
	struct other_node *n;

	if (!v)
		return 0;
	n = bpf_obj_new(struct other_node);
	if (!n)
		return 0;
	n = bpf_kptr_xchg(&v->node, (struct stash_node *)n);
	if (n)
		bpf_obj_drop(n);
	return 0;
}

/* the destination is not a kptr field */
SEC("?syscall")
int xchg_not_a_kptr(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return 0;
	n = bpf_kptr_xchg((void *)&v->count, n);
	if (n)
		bpf_obj_drop(n);
	return 0;
}

/* an unreferenced (__kptr_untrusted) field takes no xchg */
SEC("?syscall")
int xchg_untrusted_field(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return 0;
	n = bpf_kptr_xchg(&v->weak, n);
	if (n)
		bpf_obj_drop(n);
	return 0;
}

/* the stashed object belongs to the map: the program's pointer is gone */
SEC("?syscall")
int use_after_stash(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n, *old;

	if (!v)
		return 0;
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return 0;
	old = bpf_kptr_xchg(&v->node, n);
	if (old)
		bpf_obj_drop(old);
	return n->key;
}

/* bpf_obj_new's result before its NULL check */
SEC("?syscall")
int xchg_maybe_null(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = bpf_obj_new(struct stash_node);
	n = bpf_kptr_xchg(&v->node, n);
	if (n)
		bpf_obj_drop(n);
	return 0;
}

/* an array lookup with a constant in-range key needs no NULL check */
SEC("?syscall")
int xchg_value_maybe_null(void *ctx)
{
	__u32 key = 0;
	struct stash_value *v = bpf_map_lookup_elem(&stash, &key);
	struct stash_node *n;

	n = bpf_kptr_xchg(&v->node, NULL);
	if (n)
		bpf_obj_drop(n);
	return 0;
}

/* a sleepable program reads a __kptr outside an RCU section: an untrusted pointer, read only */
SEC("?syscall")
int untrusted_write(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = v->node;
	if (n)
		n->key = 1;
	return 0;
}

/* ... which it may read */
SEC("?syscall")
int untrusted_read(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = v->node;
	if (n)
		return n->key;
	return 0;
}

/* an RCU-protected kptr is no owning reference */
SEC("?syscall")
int drop_rcu_kptr(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	bpf_rcu_read_lock();
	n = v->node;
	if (n)
		bpf_obj_drop(n);
	bpf_rcu_read_unlock();
	return 0;
}

/* a helper may not read the kptr field */
SEC("?syscall")
int helper_reads_kptr(void *ctx)
{
	struct stash_value *v = slot();
	__u32 key = 0;

	if (!v)
		return 0;
	bpf_map_update_elem(&stash, &key, v, 0);
	return 0;
}

/* half of the kptr field */
SEC("?syscall")
int kptr_narrow_load(void *ctx)
{
	struct stash_value *v = slot();

	if (!v)
		return 0;
	return *(__u32 *)((void *)v + 8);
}

/* an untrusted field takes plain stores of an allocated object (and NULL) */
SEC("?syscall")
int store_untrusted_ok(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return 0;
	v->weak = n;
	v->weak = NULL;
	bpf_obj_drop(n);
	return 0;
}

/* a stashed object holding a list node: its RCU load is a non-owning reference */
SEC("?tc")
int rcu_graph_node_read(struct __sk_buff *skb)
{
	struct stash_value *v = slot();
	struct list_elem *e;

	if (!v)
		return 0;
	e = v->elem;
	if (!e) {
		e = bpf_obj_new(struct list_elem);
		if (!e)
			return 0;
		e = bpf_kptr_xchg(&v->elem, e);
		if (e)
			bpf_obj_drop(e);
		return 1;
	}
	return e->key;
}

/* xchg NULL in, drop what comes out */
SEC("?syscall")
int xchg_null_ok(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;

	if (!v)
		return 0;
	n = bpf_kptr_xchg(&v->node, NULL);
	if (n)
		bpf_obj_drop(n);
	return 0;
}

/* the RCU pointer after bpf_rcu_read_unlock */
SEC("?syscall")
int rcu_ptr_after_unlock(void *ctx)
{
	struct stash_value *v = slot();
	struct stash_node *n;
	__s64 r = 0;

	if (!v)
		return 0;
	bpf_rcu_read_lock();
	n = v->node;
	bpf_rcu_read_unlock();
	if (n)
		n->key = 5;
	return r;
}

/* a per-CPU object is not memory the program may touch: only its copies are */
SEC("?syscall")
int percpu_direct_access(void *ctx)
{
	struct pcpu_count *p = bpf_percpu_obj_new(struct pcpu_count);

	if (!p)
		return 0;
	p->hits = 1;
	bpf_percpu_obj_drop(p);
	return 0;
}

/* a per-CPU object goes to bpf_percpu_obj_drop, not bpf_obj_drop */
SEC("?syscall")
int percpu_obj_drop_mismatch(void *ctx)
{
	struct pcpu_count *p = bpf_percpu_obj_new(struct pcpu_count);

	if (!p)
		return 0;
	bpf_obj_drop(p);
	return 0;
}

/* at most 512 bytes */
SEC("?syscall")
int percpu_too_big(void *ctx)
{
	struct pcpu_big *p = bpf_percpu_obj_new(struct pcpu_big);

	if (!p)
		return 0;
	bpf_percpu_obj_drop(p);
	return 0;
}

/* scalars only */
SEC("?syscall")
int percpu_pointer_member(void *ctx)
{
	struct pcpu_with_ptr *p = bpf_percpu_obj_new(struct pcpu_with_ptr);

	if (!p)
		return 0;
	bpf_percpu_obj_drop(p);
	return 0;
}

/* no special fields */
SEC("?syscall")
int percpu_special_field(void *ctx)
{
	struct pcpu_with_node *p = bpf_percpu_obj_new(struct pcpu_with_node);

	if (!p)
		return 0;
	bpf_percpu_obj_drop(p);
	return 0;
}

/* an owning per-CPU object is no argument of bpf_this_cpu_ptr (an RCU one is) */
SEC("?syscall")
int percpu_this_cpu_owning(void *ctx)
{
	struct pcpu_count *p = bpf_percpu_obj_new(struct pcpu_count), *c;
	__s64 r;

	if (!p)
		return 0;
	c = bpf_this_cpu_ptr(p);
	r = c->hits;
	bpf_percpu_obj_drop(p);
	return r;
}

/* a per-CPU object into a plain __kptr field */
SEC("?syscall")
int percpu_into_plain_kptr(void *ctx)
{
	struct pcpu_value *v = pslot();
	struct pcpu_count *p;

	if (!v)
		return 0;
	p = bpf_percpu_obj_new(struct pcpu_count);
	if (!p)
		return 0;
	p = bpf_kptr_xchg(&v->plain, p);
	if (p)
		bpf_obj_drop(p);
	return 0;
}

/* outside an RCU section (a sleepable program) the stashed per-CPU object is gone */
SEC("?syscall")
int percpu_use_after_xchg_outside_rcu(void *ctx)
{
	struct pcpu_value *v = pslot();
	struct pcpu_count *p, *old, *c;

	if (!v)
		return 0;
	p = bpf_percpu_obj_new(struct pcpu_count);
	if (!p)
		return 0;
	old = bpf_kptr_xchg(&v->pc, p);
	if (old)
		bpf_percpu_obj_drop(old);
	c = bpf_this_cpu_ptr(p);
	return c->hits;
}

/* ... inside one, it stays readable through bpf_this_cpu_ptr */
SEC("?syscall")
int percpu_use_after_xchg_in_rcu(void *ctx)
{
	struct pcpu_value *v = pslot();
	struct pcpu_count *p, *old, *c;
	__s64 r;

	if (!v)
		return 0;
	p = bpf_percpu_obj_new(struct pcpu_count);
	if (!p)
		return 0;
	bpf_rcu_read_lock();
	old = bpf_kptr_xchg(&v->pc, p);
	c = bpf_this_cpu_ptr(p);
	c->hits = 3;
	r = c->hits;
	bpf_rcu_read_unlock();
	if (old)
		bpf_percpu_obj_drop(old);
	return r;
}

/* a loaded per-CPU kptr outside an RCU section is untrusted: no copies of it */
SEC("?syscall")
int percpu_untrusted_load(void *ctx)
{
	struct pcpu_value *v = pslot();
	struct pcpu_count *p, *c;

	if (!v)
		return 0;
	p = v->pc;
	if (!p)
		return 0;
	c = bpf_this_cpu_ptr(p);
	return c->hits;
}

/* a list inside an allocated object needs that object's lock */
SEC("?syscall")
int bag_push_without_lock(void *ctx)
{
	struct bag *b = bpf_obj_new(struct bag);
	struct list_elem *e;

	if (!b)
		return 0;
	e = bpf_obj_new(struct list_elem);
	if (!e) {
		bpf_obj_drop(b);
		return 0;
	}
	bpf_list_push_back(&b->head, &e->node);
	bpf_obj_drop(b);
	return 0;
}

/* ... not another object's */
SEC("?syscall")
int bag_push_other_lock(void *ctx)
{
	struct bag *b = bpf_obj_new(struct bag);
	struct bag2 *c;
	struct list_elem *e;

	if (!b)
		return 0;
	c = bpf_obj_new(struct bag2);
	if (!c) {
		bpf_obj_drop(b);
		return 0;
	}
	e = bpf_obj_new(struct list_elem);
	if (!e) {
		bpf_obj_drop(b);
		bpf_obj_drop(c);
		return 0;
	}
	bpf_spin_lock(&c->lock);
	bpf_list_push_back(&b->head, &e->node);
	bpf_spin_unlock(&c->lock);
	bpf_obj_drop(b);
	bpf_obj_drop(c);
	return 0;
}

/* ... which makes it fine, also for a bag dropped with what it holds */
SEC("?syscall")
int bag_push_ok(void *ctx)
{
	struct bag *b = bpf_obj_new(struct bag);
	struct list_elem *e;

	if (!b)
		return 0;
	e = bpf_obj_new(struct list_elem);
	if (!e) {
		bpf_obj_drop(b);
		return 0;
	}
	bpf_spin_lock(&b->lock);
	bpf_list_push_back(&b->head, &e->node);
	bpf_spin_unlock(&b->lock);
	bpf_obj_drop(b);
	return 0;
}

char _license[] SEC("license") = "GPL";
