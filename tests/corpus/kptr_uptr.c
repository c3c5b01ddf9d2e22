/* __uptr (a user-memory pointer, Linux 6.18): only task storage maps hold one; map_check_btf
 * refuses it in an array or hash value with EOPNOTSUPP, and so does pybpf (which has no task
 * storage): the programs using the map fail at load, the others run. */
#include "corpus.h"
#include "kptr.h"

#define __uptr __attribute__((btf_type_tag("uptr")))

struct user_data {
	int a;
	int b;
};

struct uptr_value {
	__s64 count;
	struct user_data __uptr *udata;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct uptr_value);
} uptr_map SEC(".maps");

SEC("?syscall")
int uptr_count(void *ctx)
{
	__u32 key = 0;
	struct uptr_value *v = bpf_map_lookup_elem(&uptr_map, &key);

	if (!v)
		return (int)__builtin_btf_type_id(*(struct user_data *)0, 0);
	v->count++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
