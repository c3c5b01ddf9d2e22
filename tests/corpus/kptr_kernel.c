/* kptrs to kernel types (Linux 6.18's btf_parse_kptr finds the name in vmlinux BTF), which pybpf
 * cannot run: it has no kernel objects. A referenced __kptr to a type with a destructor
 * (task_struct, cgroup) and a __kptr_untrusted to any kernel type make a map the kernel creates
 * and pybpf refuses (its programs fail at vm.load, the others load); a kptr to a declared-only
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

char LICENSE[] SEC("license") = "GPL";
