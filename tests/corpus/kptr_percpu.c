/* Allocated objects stashed in per-CPU map values (Linux 6.18 map_check_btf takes __kptr fields
 * in percpu_array, percpu_hash and lru_percpu_hash values): each CPU's copy of a value has its
 * own field, bpf_kptr_xchg reaches the running CPU's copy (or the one
 * bpf_map_lookup_percpu_elem names), a program's map update drops what the running CPU's copy
 * held, user space's update and an element's delete drop every CPU's (arraymap.c, hashtab.c).
 * tests/test_corpus.py runs these on CPU 0 against the kernel; tests/test_kptr_percpu.py runs
 * them on two CPUs. Syscall programs read their argument struct (ctx_in). */
#include "corpus.h"
#include "kptr.h"

/* enum bpf_map_type values bpf_helpers.h leaves out */
#define BPF_MAP_TYPE_PERCPU_HASH 5
#define BPF_MAP_TYPE_LRU_PERCPU_HASH 10

struct args {
	__s32 vals[8];
	char text[32];
};

/* bpf_obj_new does not zero an object: every field is set before it is read */
struct pc_node {
	__s64 key;
	__s64 seq;
};

struct pc_value {
	__s64 count;
	struct pc_node __kptr *node;
	__s64 last;
};

struct pc_count {
	__s64 hits;
};

struct pc_pvalue {
	__s64 seen;
	struct pc_count __percpu_kptr *pc;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct pc_value);
} pc_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct pc_value);
} pc_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct pc_value);
} pc_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_pvalue);
} pc_parray SEC(".maps");

static void *(*bpf_map_lookup_percpu_elem)(void *map, const void *key, __u32 cpu) = (void *) 195;

/* a new node (key vals[1]) goes into this CPU's copy of slot vals[0] & 1; the node it
 * replaces is read and dropped: its key and the count when it went in make the result */
SEC("syscall")
int pcpu_kptr_array_swap(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct pc_value *v = bpf_map_lookup_elem(&pc_array, &key);
	struct pc_node *n, *old;
	__s64 r = -1;

	if (!v)
		return -2;
	n = bpf_obj_new(struct pc_node);
	if (!n)
		return -3;
	n->key = a->vals[1];
	n->seq = v->count;
	old = bpf_kptr_xchg(&v->node, n);
	v->count++;
	if (old) {
		r = old->key * 100 + old->seq;
		v->last = old->key;
		bpf_obj_drop(old);
	}
	return r;
}

/* a program's update of slot 0 (when vals[0] is odd) drops the node this CPU's copy holds
 * (bpf_obj_free_fields of this CPU's value); then a node keyed vals[1] is stashed: the result
 * says whether one was still there */
SEC("syscall")
int pcpu_kptr_array_update(struct args *a)
{
	__u32 key = 0;
	struct pc_value val = { .count = a->vals[3], .last = 5 };
	struct pc_value *v;
	struct pc_node *n, *old;
	__s64 r = 0;

	if (a->vals[0] & 1)
		r = bpf_map_update_elem(&pc_array, &key, &val, 0) * 10;
	v = bpf_map_lookup_elem(&pc_array, &key);
	if (!v)
		return -2;
	n = bpf_obj_new(struct pc_node);
	if (!n)
		return -3;
	n->key = a->vals[1];
	n->seq = 0;
	old = bpf_kptr_xchg(&v->node, n);
	if (old) {
		r += 1000 + old->key;
		bpf_obj_drop(old);
	}
	return r;
}

static __always_inline __s64 hash_stash(void *map, struct args *a)
{
	__u32 key = a->vals[5] & 3;
	struct pc_value zero = {}, *v;
	struct pc_node *n, *old;
	__s64 r = 0;

	v = bpf_map_lookup_elem(map, &key);
	if (!v) {
		r = bpf_map_update_elem(map, &key, &zero, BPF_NOEXIST) * 10;
		v = bpf_map_lookup_elem(map, &key);
		if (!v)
			return -2;
	}
	n = bpf_obj_new(struct pc_node);
	if (!n)
		return -3;
	n->key = a->vals[1];
	n->seq = 0;
	old = bpf_kptr_xchg(&v->node, n);
	v->count++;
	if (old) {
		r += 1000 + old->key;
		bpf_obj_drop(old);
	}
	/* every second stash deletes the element: every CPU's node goes with it */
	if (!(v->count & 1))
		r += bpf_map_delete_elem(map, &key) * 100 + 5000;
	return r;
}

/* per-CPU hash values: an element inserted when missing (its kptrs start NULL on every CPU) */
SEC("syscall")
int pcpu_kptr_hash_stash(struct args *a)
{
	return hash_stash(&pc_hash, a);
}

SEC("syscall")
int pcpu_kptr_lru_stash(struct args *a)
{
	return hash_stash(&pc_lru, a);
}

/* CPU 0's copy through bpf_map_lookup_percpu_elem: take its node out, put a new one keyed
 * vals[1] back */
SEC("syscall")
int pcpu_kptr_lookup_percpu(struct args *a)
{
	__u32 key = a->vals[0] & 1;
	struct pc_value *v = bpf_map_lookup_percpu_elem(&pc_array, &key, 0);
	struct pc_node *n, *old;
	__s64 r = -1;

	if (!v)
		return -2;
	n = bpf_obj_new(struct pc_node);
	if (!n)
		return -3;
	n->key = a->vals[1];
	n->seq = 7;
	old = bpf_kptr_xchg(&v->node, n);
	if (old) {
		r = old->key + old->seq;
		bpf_obj_drop(old);
	}
	return r;
}

/* the node this CPU's copy holds, read in an RCU read section without taking it out; a first
 * run stashes one */
SEC("syscall")
int pcpu_kptr_rcu_read(struct args *a)
{
	__u32 key = 1;
	struct pc_value *v = bpf_map_lookup_elem(&pc_array, &key);
	struct pc_node *n;
	__s64 r = -1;

	if (!v)
		return -2;
	bpf_rcu_read_lock();
	n = v->node;
	if (n)
		r = n->key;
	bpf_rcu_read_unlock();
	if (r >= 0)
		return r;
	n = bpf_obj_new(struct pc_node);
	if (!n)
		return -3;
	n->key = a->vals[1] + 40;
	n->seq = 0;
	n = bpf_kptr_xchg(&v->node, n);
	if (n)
		bpf_obj_drop(n);
	return -1;
}

/* a per-CPU object in a per-CPU value's __percpu_kptr field: its running-CPU copy counts */
SEC("syscall")
int pcpu_kptr_percpu_obj(struct args *a)
{
	__u32 key = 0;
	struct pc_pvalue *v = bpf_map_lookup_elem(&pc_parray, &key);
	struct pc_count __percpu_kptr *p, *old;
	struct pc_count *c;
	__s64 r = -1;

	if (!v)
		return -2;
	v->seen++;
	bpf_rcu_read_lock();
	p = v->pc;
	if (p) {
		c = bpf_this_cpu_ptr(p);
		c->hits += a->vals[1];
		r = c->hits;
	}
	bpf_rcu_read_unlock();
	if (r >= 0)
		return r;
	p = bpf_percpu_obj_new(struct pc_count);
	if (!p)
		return -3;
	bpf_rcu_read_lock();
	old = bpf_kptr_xchg(&v->pc, p);
	c = bpf_this_cpu_ptr(p);
	c->hits = 1;
	bpf_rcu_read_unlock();
	if (old)
		bpf_percpu_obj_drop(old);
	return 0;
}

/* --- programs the kernel's verifier refuses: the kptr rules of a per-CPU value are a map
 * value's (not autoloaded: tests/test_kptr_percpu.py compares the verdicts) --- */
SEC("?syscall")
int pcpu_store_referenced(struct args *a)
{
	__u32 key = 0;
	struct pc_value *v = bpf_map_lookup_elem(&pc_array, &key);

	if (!v)
		return 0;
	*(volatile __u64 *)&v->node = 0;
	return 0;
}

SEC("?syscall")
int pcpu_narrow_load(struct args *a)
{
	__u32 key = 0;
	struct pc_value *v = bpf_map_lookup_elem(&pc_hash, &key);

	if (!v)
		return 0;
	return *(volatile __u32 *)&v->node;
}

SEC("?syscall")
int pcpu_helper_reads_kptr(struct args *a)
{
	__u32 key = 0;
	struct pc_value *v = bpf_map_lookup_elem(&pc_array, &key);

	if (!v)
		return 0;
	return bpf_map_update_elem(&pc_lru, &key, v, 0);
}

SEC("?syscall")
int pcpu_leak_old(struct args *a)
{
	__u32 key = 0;
	struct pc_value *v = bpf_map_lookup_elem(&pc_lru, &key);
	struct pc_node *old;

	if (!v)
		return 0;
	old = bpf_kptr_xchg(&v->node, NULL);
	return old != 0;
}

SEC("?syscall")
int pcpu_plain_into_percpu_field(struct args *a)
{
	__u32 key = 0;
	struct pc_pvalue *v = bpf_map_lookup_elem(&pc_parray, &key);
	struct pc_count *n, *old;

	if (!v)
		return 0;
	n = bpf_obj_new(struct pc_count);
	if (!n)
		return 0;
	old = bpf_kptr_xchg(&v->pc, n);
	if (old)
		bpf_obj_drop(old);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
