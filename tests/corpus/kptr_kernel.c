/* kptrs to kernel types (Linux 6.18's btf_parse_kptr finds the name in vmlinux BTF), which pybpf
 * cannot run: it has no kernel objects. A referenced __kptr to a type with a destructor
 * (task_struct, cgroup) and a __kptr_untrusted to any kernel type make a map the kernel creates
 * and pybpf refuses (its programs fail at vm.load, the others load); an allocated object may
 * hold one (direct access refused as the kernel refuses it, bpf_kptr_xchg on it refused by
 * pybpf, which the kernel takes); a kptr to a declared-only
 * struct is no kptr to the kernel (btf_parse_fields fails: the map has no special fields). The
 * structs are CO-RE views of the kernel's, as vmlinux.h users write them. */
#include "corpus.h"
#include "kptr.h"

struct task_struct {
	int pid;
} __attribute__((preserve_access_index));

struct cgroup {
	int level;
} __attribute__((preserve_access_index));

struct sock {
	int sk_rcvbuf;
} __attribute__((preserve_access_index));

struct ghost;

/* an allocated object holding a kernel kptr */
struct task_holder {
	__s64 v;
	struct task_struct __kptr *task;
};

struct task_value {
	__s64 count;
	struct task_struct __kptr *task;
};

struct cgroup_value {
	__s64 count;
	struct cgroup __kptr *cgrp;
};

struct sock_value {
	__s64 count;
	struct sock __kptr_untrusted *sk;
};

struct ghost_value {
	__s64 count;
	struct ghost __kptr *g;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct task_value);
} task_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgroup_value);
} cgroup_map SEC(".maps");

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
	__type(value, struct ghost_value);
} ghost_map SEC(".maps");

/* the full structs in BTF (a type-tagged pointer alone gives clang's BTF a forward declaration) */
SEC("?syscall")
int kernel_types_named(void *ctx)
{
	return (int)(__builtin_btf_type_id(*(struct task_struct *)0, 0) +
		     __builtin_btf_type_id(*(struct cgroup *)0, 0) +
		     __builtin_btf_type_id(*(struct sock *)0, 0));
}

#define COUNT(map, value_type)						\
	__u32 key = 0;							\
	struct value_type *v = bpf_map_lookup_elem(&map, &key);	\
	if (!v)								\
		return 1;						\
	v->count++;							\
	return 0;

SEC("?syscall")
int task_count(void *ctx)
{
	COUNT(task_map, task_value)
}

SEC("?tc")
int cgroup_count(struct __sk_buff *skb)
{
	COUNT(cgroup_map, cgroup_value)
}

SEC("?xdp")
int sock_count(struct xdp_md *xdp)
{
	COUNT(sock_map, sock_value)
}

/* a plain program of the object loads */
SEC("?syscall")
int no_kptr_map(void *ctx)
{
	return 3;
}

/* declared only: no kptr field */
SEC("?syscall")
int ghost_xchg(void *ctx)
{
	__u32 key = 0;
	struct ghost_value *v = bpf_map_lookup_elem(&ghost_map, &key);

	if (!v)
		return 1;
	return bpf_kptr_xchg(&v->g, 0) != 0;
}

SEC("?syscall")
int ghost_count(void *ctx)
{
	COUNT(ghost_map, ghost_value)
}

SEC("?syscall")
int holder_new(void *ctx)
{
	struct task_holder *h = bpf_obj_new(struct task_holder);

	if (!h)
		return 1;
	h->v = 2;
	bpf_obj_drop(h);
	return 0;
}

SEC("?syscall")
int holder_store(void *ctx)
{
	struct task_holder *h = bpf_obj_new(struct task_holder);

	if (!h)
		return 1;
	*(volatile __u64 *)&h->task = 0;
	bpf_obj_drop(h);
	return 0;
}

/* take the kernel object out (and leak it): the kernel takes the exchange and refuses at the
 * exit for the leak; pybpf refuses the exchange, having no kernel objects */
SEC("?syscall")
int holder_xchg(void *ctx)
{
	struct task_holder *h = bpf_obj_new(struct task_holder);
	struct task_struct *t;

	if (!h)
		return 1;
	t = bpf_kptr_xchg(&h->task, 0);
	bpf_obj_drop(h);
	return t != 0;
}

char LICENSE[] SEC("license") = "GPL";
