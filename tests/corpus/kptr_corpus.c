/* Allocated objects stashed in map values with bpf_kptr_xchg (tests/corpus/kptr.h), in the
 * style of the kernel's selftests local_kptr_stash.c: objects survive from one run to the next
 * inside array and hash map values, are taken back out, read and dropped; a __kptr field is
 * read directly inside an RCU read section; a stashed object holds a stashed object of its own.
 * Syscall programs read their argument struct (ctx_in) and report through their return value
 * and maps (user space reads __kptr fields as zeros, as the kernel's lookups give them). */
#include "corpus.h"
#include "kptr.h"

struct args {
	__s32 vals[8];
	char text[32];
};

/* bpf_obj_new does not zero an object (bpf_obj_init sets only its special fields: a
 * freed object's bytes come back), so every field is set before it is read */
struct stash_node {
	__s64 key;
	__s64 seq;
};

struct stash_outer {
	__s64 tag;
	struct stash_node __kptr *inner;
};

struct stash_value {
	__s64 count;
	struct stash_node __kptr *node;
	__s64 last;
	struct stash_outer __kptr *outer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct stash_value);
} stash_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct stash_value);
} stash_hash SEC(".maps");

__u64 kptr_runs;

/* a new node goes into slot vals[0] & 1; the node it replaces (from an earlier run) is read and
 * dropped: its key and run number make the result */
SEC("syscall")
int kptr_stash_swap(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct stash_value *v = bpf_map_lookup_elem(&stash_array, &key);
	struct stash_node *n, *old;
	__s64 r = -1;

	if (!v)
		return -2;
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return -3;
	n->key = a->vals[1];
	n->seq = kptr_runs++;
	old = bpf_kptr_xchg(&v->node, n);
	v->count++;
	if (old) {
		r = old->key * 100 + old->seq;
		v->last = old->key;
		bpf_obj_drop(old);
	}
	return r;
}

/* take the node out of slot vals[0] & 1, report it, put it back when vals[2] is odd (an empty
 * slot gets a first node) */
SEC("syscall")
int kptr_take_put_back(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct stash_value *v = bpf_map_lookup_elem(&stash_array, &key);
	struct stash_node *n;
	__s64 r;

	if (!v)
		return -2;
	n = bpf_kptr_xchg(&v->node, NULL);
	if (!n) {
		/* an empty slot: stash a first node for a later run */
		n = bpf_obj_new(struct stash_node);
		if (!n)
			return -3;
		n->key = a->vals[1];
		n->seq = 0;
		n = bpf_kptr_xchg(&v->node, n);
		if (n)
			bpf_obj_drop(n);
		return -1;
	}
	r = n->key;
	n->key += a->vals[3];
	if (a->vals[2] & 1) {
		n = bpf_kptr_xchg(&v->node, n);
		if (n)
			bpf_obj_drop(n);
		return r;
	}
	bpf_obj_drop(n);
	return r + 1000;
}

/* hash values: insert an element when missing (its kptr starts NULL), stash a node, and
 * delete the element on every third run (the kernel drops the stashed node with it) */
SEC("syscall")
int kptr_hash_stash(struct args *a)
{
	__u32 key = a->vals[5] & 3;
	struct stash_value zero = {}, *v;
	struct stash_node *n, *old;
	__s64 r = 0;

	v = bpf_map_lookup_elem(&stash_hash, &key);
	if (!v) {
		bpf_map_update_elem(&stash_hash, &key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&stash_hash, &key);
		if (!v)
			return -2;
		r = 10000;
	}
	n = bpf_obj_new(struct stash_node);
	if (!n)
		return -3;
	n->key = a->vals[1] + a->vals[2];
	n->seq = kptr_runs++;
	old = bpf_kptr_xchg(&v->node, n);
	v->count++;
	if (old) {
		r += old->key;
		bpf_obj_drop(old);
	}
	if (kptr_runs % 3 == 0)
		bpf_map_delete_elem(&stash_hash, &key);
	return r;
}

/* read the stashed node in place: a direct load of the __kptr field inside an RCU read section
 * gives an RCU-protected pointer the program may read and write (an empty slot gets a node) */
SEC("syscall")
int kptr_rcu_read(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct stash_value *v = bpf_map_lookup_elem(&stash_array, &key);
	struct stash_node *n;
	__s64 r = -1;

	if (!v)
		return -2;
	bpf_rcu_read_lock();
	n = v->node;
	if (n) {
		r = n->key;
		n->seq += 1000;
		v->last = n->seq;
	}
	bpf_rcu_read_unlock();
	if (r < 0) {
		/* nothing stashed yet: stash a node for a later run */
		n = bpf_obj_new(struct stash_node);
		if (!n)
			return -3;
		n->key = a->vals[2];
		n->seq = 0;
		n = bpf_kptr_xchg(&v->node, n);
		if (n)
			bpf_obj_drop(n);
	}
	return r;
}

/* an object that holds an object: the inner node is stashed in the outer one, the outer one in
 * the map; replacing the outer one drops both (bpf_obj_drop frees the object's own kptrs) */
SEC("syscall")
int kptr_nested(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct stash_value *v = bpf_map_lookup_elem(&stash_array, &key);
	struct stash_outer *o, *old;
	struct stash_node *n, *prev;
	__s64 r = 0;

	if (!v)
		return -2;
	o = bpf_obj_new(struct stash_outer);
	if (!o)
		return -3;
	o->tag = a->vals[4];
	n = bpf_obj_new(struct stash_node);
	if (!n) {
		bpf_obj_drop(o);
		return -4;
	}
	n->key = a->vals[6];
	n->seq = 0;
	prev = bpf_kptr_xchg(&o->inner, n);
	if (prev)
		bpf_obj_drop(prev);
	old = bpf_kptr_xchg(&v->outer, o);
	if (!old)
		return -1;
	r = old->tag * 10;
	if (a->vals[7] & 1) {
		n = bpf_kptr_xchg(&old->inner, NULL);
		if (n) {
			r += n->key;
			bpf_obj_drop(n);
		}
	}
	bpf_obj_drop(old);
	return r;
}

/* a tc program (not sleepable: always an RCU read section) counts packets per protocol in a
 * stashed object, read through the __kptr field directly */
SEC("tc")
int kptr_tc_count(struct __sk_buff *skb)
{
	__u32 key = skb->protocol == bpf_htons(ETH_P_IPV6);
	struct stash_value *v = bpf_map_lookup_elem(&stash_array, &key);
	struct stash_node *n;

	if (!v)
		return 0;
	n = v->node;
	if (!n) {
		n = bpf_obj_new(struct stash_node);
		if (!n)
			return 0;
		n->key = skb->len;
		n->seq = 0;
		n = bpf_kptr_xchg(&v->node, n);
		if (n)
			bpf_obj_drop(n);
		return 1;
	}
	n->seq++;
	v->last = n->seq;
	return 0;
}

/* per-CPU objects: a counter with a copy per CPU, stashed in a __percpu_kptr field; a new
 * one's running-CPU copy is set up through the RCU pointer bpf_kptr_xchg leaves behind */
struct pcpu_count {
	__s64 hits;
	__s64 sum;
};

struct pcpu_value {
	struct pcpu_count __percpu_kptr *pc;
	__s64 seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct pcpu_value);
} pcpu_array SEC(".maps");

SEC("syscall")
int kptr_percpu_count(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct pcpu_value *v = bpf_map_lookup_elem(&pcpu_array, &key);
	struct pcpu_count __percpu_kptr *p, *old;
	struct pcpu_count *c;
	__s64 r = -1;

	if (!v)
		return -2;
	bpf_rcu_read_lock();
	p = v->pc;
	if (p) {
		c = bpf_this_cpu_ptr(p);
		c->hits++;
		c->sum += a->vals[1];
		r = c->hits * 1000 + c->sum;
	}
	bpf_rcu_read_unlock();
	if (r >= 0)
		return r;
	p = bpf_percpu_obj_new(struct pcpu_count);
	if (!p)
		return -3;
	bpf_rcu_read_lock();
	old = bpf_kptr_xchg(&v->pc, p);
	c = bpf_this_cpu_ptr(p);
	c->hits = 1;
	c->sum = a->vals[1];
	bpf_rcu_read_unlock();
	v->seen++;
	if (old)
		bpf_percpu_obj_drop(old);
	return 0;
}

/* CPU 0's copy by number (bpf_per_cpu_ptr), then the object taken out and dropped every other
 * run */
SEC("syscall")
int kptr_percpu_take(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct pcpu_value *v = bpf_map_lookup_elem(&pcpu_array, &key);
	struct pcpu_count __percpu_kptr *p;
	struct pcpu_count *c;
	__s64 r = 0;

	if (!v)
		return -2;
	bpf_rcu_read_lock();
	p = v->pc;
	if (p) {
		c = bpf_per_cpu_ptr(p, 0);
		c->sum += 7;
		r = c->sum;
	}
	bpf_rcu_read_unlock();
	if (!p) {
		struct pcpu_count __percpu_kptr *n = bpf_percpu_obj_new(struct pcpu_count);

		if (!n)
			return -3;
		bpf_rcu_read_lock();
		p = bpf_kptr_xchg(&v->pc, n);
		c = bpf_per_cpu_ptr(n, 0);
		c->sum = a->vals[2] & 0xff;
		bpf_rcu_read_unlock();
		if (p)
			bpf_percpu_obj_drop(p);
		return -1;
	}
	if (v->seen++ & 1) {
		p = bpf_kptr_xchg(&v->pc, NULL);
		if (p)
			bpf_percpu_obj_drop(p);
	}
	return r;
}

/* a list inside an allocated object (its own lock and bpf_list_head), the object stashed in a
 * map value between runs: each run takes the bag out, pushes an item, pops the oldest one on
 * odd vals[0] and puts the bag back */
struct bag_item {
	__s64 key;
	struct bpf_list_node node;
};

struct bag {
	struct bpf_spin_lock lock;
	struct bpf_list_head head __contains(bag_item, node);
	__s64 n;
};

struct bag_value {
	struct bag __kptr *bag;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bag_value);
} bag_array SEC(".maps");

SEC("syscall")
int kptr_bag(struct args *a)
{
	__u32 key = 0;
	struct bag_value *v = bpf_map_lookup_elem(&bag_array, &key);
	struct bpf_list_node *n = NULL;
	struct bag_item *it;
	struct bag *b;
	__s64 r;

	if (!v)
		return -2;
	b = bpf_kptr_xchg(&v->bag, NULL);
	if (!b) {
		b = bpf_obj_new(struct bag);
		if (!b)
			return -3;
	}
	it = bpf_obj_new(struct bag_item);
	if (!it) {
		bpf_obj_drop(b);
		return -4;
	}
	it->key = a->vals[1];
	bpf_spin_lock(&b->lock);
	bpf_list_push_back(&b->head, &it->node);
	if (a->vals[0] & 1)
		n = bpf_list_pop_front(&b->head);
	bpf_spin_unlock(&b->lock);
	b->n++;
	r = b->n * 1000;
	if (n) {
		it = container_of(n, struct bag_item, node);
		r += it->key;
		bpf_obj_drop(it);
	}
	b = bpf_kptr_xchg(&v->bag, b);
	if (b)
		bpf_obj_drop(b);
	return r;
}

char _license[] SEC("license") = "GPL";
