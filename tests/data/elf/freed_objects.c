/* Allocated objects read and written after bpf_obj_drop through pointers the verifier still
 * lets a program use, and bpf_per_cpu_ptr past the last CPU (issue 11; Linux 6.18 accepts
 * every program here). bpf_obj_drop and bpf_percpu_obj_drop free through bpf_mem_free_rcu: the
 * memory keeps its bytes and is not reused before an RCU grace period, which cannot end while
 * the program runs, so these reads see the object's last contents (tests/test_freed_objects.py).
 */
#include "../../../samples/c/bpf_helpers.h"

/* the allocated-object kfuncs and kptr tags (as tests/corpus/kptr.h, which this directory's
 * build.sh cannot reach) */
#define __kptr __attribute__((btf_type_tag("kptr")))
#define __kptr_untrusted __attribute__((btf_type_tag("kptr_untrusted")))
#define __percpu_kptr __attribute__((btf_type_tag("percpu_kptr")))
extern void *bpf_obj_new_impl(__u64 local_type_id, void *meta) __ksym;
extern void bpf_obj_drop_impl(void *kptr, void *meta) __ksym;
extern void *bpf_percpu_obj_new_impl(__u64 local_type_id, void *meta) __ksym;
extern void bpf_percpu_obj_drop_impl(void *kptr, void *meta) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
static void *(*bpf_kptr_xchg)(void *dst, void *ptr) = (void *) 194;
static void *(*bpf_per_cpu_ptr)(const void *percpu_ptr, __u32 cpu) = (void *) 153;
static void *(*bpf_this_cpu_ptr)(const void *percpu_ptr) = (void *) 154;
#define bpf_obj_new(type) ((type *)bpf_obj_new_impl(__builtin_btf_type_id(*(type *)0, 0), 0))
#define bpf_obj_drop(kptr) bpf_obj_drop_impl(kptr, 0)
#define bpf_percpu_obj_new(type) \
	((type __percpu_kptr *)bpf_percpu_obj_new_impl(__builtin_btf_type_id(*(type *)0, 0), 0))
#define bpf_percpu_obj_drop(kptr) bpf_percpu_obj_drop_impl(kptr, 0)

struct args {
	__s32 vals[8];
};

struct freed_node {
	__s64 key;
	__s64 seq;
};

struct freed_counts {
	__s64 hits;
	__s64 sum;
};

struct freed_value {
	struct freed_node __kptr *node;
	struct freed_counts __percpu_kptr *pc;
	struct freed_node __kptr_untrusted *weak;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct freed_value);
} slots SEC(".maps");

static __always_inline struct freed_value *slot(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&slots, &key);
}

/* a new node with key and seq stashed in the slot (what was there is dropped) */
static __always_inline int stash(struct freed_value *v, __s64 key, __s64 seq)
{
	struct freed_node *n = bpf_obj_new(struct freed_node), *old;

	if (!n)
		return -3;
	n->key = key;
	n->seq = seq;
	old = bpf_kptr_xchg(&v->node, n);
	if (old)
		bpf_obj_drop(old);
	return 0;
}

/* a sleepable program: a kptr load outside an RCU section is an untrusted pointer (PROBE_MEM
 * loads), which the drop does not invalidate */
SEC("syscall")
int untrusted_after_drop(struct args *a)
{
	struct freed_value *v = slot();
	struct freed_node *n, *m;

	if (!v)
		return -2;
	if (stash(v, a->vals[0], a->vals[1]))
		return -3;
	n = v->node;
	m = bpf_kptr_xchg(&v->node, NULL);
	if (m)
		bpf_obj_drop(m);
	if (!n)
		return -4;
	return n->key * 1000 + n->seq;
}

/* a non-sleepable program: the kptr load is RCU-protected (MEM_RCU) and stays usable after
 * the object is taken out and dropped */
SEC("tc")
int rcu_after_drop(struct __sk_buff *skb)
{
	struct freed_value *v = slot();
	struct freed_node *n, *m;

	if (!v)
		return -2;
	if (stash(v, skb->len, skb->protocol))
		return -3;
	n = v->node;
	if (!n)
		return -4;
	m = bpf_kptr_xchg(&v->node, NULL);
	if (m)
		bpf_obj_drop(m);
	m = bpf_obj_new(struct freed_node);       /* not the dropped one's memory: RCU keeps it */
	if (m) {
		m->key = 11;
		m->seq = 12;
		bpf_obj_drop(m);
	}
	return n->key * 1000 + n->seq;
}

/* a per-CPU object's copy through the RCU pointer bpf_kptr_xchg leaves behind, written and
 * read after the object was taken out again and dropped */
SEC("syscall")
int percpu_after_drop(struct args *a)
{
	struct freed_value *v = slot();
	struct freed_counts *p, *old, *c;
	__s64 r;

	if (!v)
		return -2;
	p = bpf_percpu_obj_new(struct freed_counts);
	if (!p)
		return -3;
	bpf_rcu_read_lock();
	old = bpf_kptr_xchg(&v->pc, p);
	c = bpf_this_cpu_ptr(p);
	c->hits = a->vals[0];
	c->sum = a->vals[1];
	if (old)
		bpf_percpu_obj_drop(old);
	old = bpf_kptr_xchg(&v->pc, NULL);
	if (old)
		bpf_percpu_obj_drop(old);
	c->hits += 1;
	r = c->hits * 1000 + c->sum;
	bpf_rcu_read_unlock();
	return r;
}

/* an untrusted pointer kept across runs in a __kptr_untrusted field, by vals[0]: 1 a new node
 * (key, seq from vals[1], vals[2]) goes to node and weak; 2 node is taken out and dropped;
 * 8 a new node goes to node only; 16 a node is made and dropped; otherwise weak is read */
SEC("syscall")
int weak_across_runs(struct args *a)
{
	struct freed_value *v = slot();
	struct freed_node *n, *m;

	if (!v)
		return -2;
	if (a->vals[0] & 25) {
		n = bpf_obj_new(struct freed_node);
		if (!n)
			return -3;
		n->key = a->vals[1];
		n->seq = a->vals[2];
		if (a->vals[0] & 16) {
			bpf_obj_drop(n);
			return 16;
		}
		if (a->vals[0] & 1)
			v->weak = n;
		m = bpf_kptr_xchg(&v->node, n);
		if (m)
			bpf_obj_drop(m);
		return a->vals[0];
	}
	if (a->vals[0] & 2) {
		m = bpf_kptr_xchg(&v->node, NULL);
		if (m)
			bpf_obj_drop(m);
		return 2;
	}
	n = v->weak;
	if (!n)
		return -4;
	return n->key * 1000 + n->seq;
}

/* bpf_per_cpu_ptr(p, cpu) for a CPU from the arguments: NULL past nr_cpu_ids. The verifier
 * types the copy as never NULL, so the program returns the pointer itself (a NULL test would
 * be dead code to the kernel) */
SEC("syscall")
long per_cpu_ptr_of_cpu(struct args *a)
{
	struct freed_value *v = slot();
	struct freed_counts *p, *old, *c = 0;

	if (!v)
		return -2;
	p = bpf_percpu_obj_new(struct freed_counts);
	if (!p)
		return -3;
	old = bpf_kptr_xchg(&v->pc, p);
	if (old)
		bpf_percpu_obj_drop(old);
	bpf_rcu_read_lock();
	p = v->pc;
	if (p)
		c = bpf_per_cpu_ptr(p, a->vals[0]);
	bpf_rcu_read_unlock();
	return (long)c;
}

/* the same copy dereferenced: the kernel loads it (and would fault on the NULL past the last
 * CPU: never run in the kernel); pybpf stops with a MemoryAccessError in both engines */
SEC("?syscall")
long per_cpu_ptr_deref(struct args *a)
{
	struct freed_value *v = slot();
	struct freed_counts *p, *old, *c;
	long r = -5;

	if (!v)
		return -2;
	p = bpf_percpu_obj_new(struct freed_counts);
	if (!p)
		return -3;
	old = bpf_kptr_xchg(&v->pc, p);
	if (old)
		bpf_percpu_obj_drop(old);
	bpf_rcu_read_lock();
	p = v->pc;
	if (p) {
		c = bpf_per_cpu_ptr(p, a->vals[0]);
		c->sum = a->vals[1] * 2;        /* a new object's copies are not zeroed */
		r = c->sum + 3;
	}
	bpf_rcu_read_unlock();
	return r;
}

char LICENSE[] SEC("license") = "GPL";
