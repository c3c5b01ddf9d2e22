/* A referenced __kptr to a kernel type the kernel has no destructor for (struct sock): Linux
 * 6.18 refuses the object's BTF (BPF_BTF_LOAD: ENOENT) and libbpf loads the object without BTF,
 * so a program that needs BTF fails at load with the verifier's message and the others run. */
#include "corpus.h"
#include "kptr.h"

struct sock {
	int sk_rcvbuf;
} __attribute__((preserve_access_index));

struct sock_value {
	__s64 count;
	struct sock __kptr *sk;
};

struct lock_value {
	struct bpf_spin_lock lock;
	__s64 count;
};

struct plain_node {
	__s64 key;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sock_value);
} sock_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lock_value);
} lock_map SEC(".maps");

SEC("?syscall")
int nodtor_types_named(void *ctx)
{
	return (int)__builtin_btf_type_id(*(struct sock *)0, 0);
}

SEC("?syscall")
int nodtor_count(void *ctx)
{
	__u32 key = 0;
	struct sock_value *v = bpf_map_lookup_elem(&sock_map, &key);

	if (!v)
		return 1;
	v->count++;
	return v->count;
}

SEC("?syscall")
int nodtor_lock(void *ctx)
{
	__u32 key = 0;
	struct lock_value *v = bpf_map_lookup_elem(&lock_map, &key);

	if (!v)
		return 1;
	bpf_spin_lock(&v->lock);
	v->count++;
	bpf_spin_unlock(&v->lock);
	return 0;
}

SEC("?syscall")
int nodtor_obj_new(void *ctx)
{
	struct plain_node *n = bpf_obj_new(struct plain_node);

	if (!n)
		return 1;
	n->key = 1;
	bpf_obj_drop(n);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
