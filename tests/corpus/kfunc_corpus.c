/* Programs using kfuncs (tests/corpus/kfuncs.h): open-coded iterators, as syscall programs that
 * read their argument struct (ctx_in) and report through it (ctx_out) and through maps. */
#include "corpus.h"
#include "kfuncs.h"

struct args {
	__s32 vals[8];
	char text[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} iter_hist SEC(".maps");

__u64 iter_runs;
__s64 iter_ret_new, iter_ret_next;

/* bpf_for over [vals[0], vals[1]): the sum of the indexes, the count, and every i % 16 counted in
 * a map; ranges the kernel refuses (start > end, too long) give no iteration */
SEC("syscall")
int iter_for_range(struct args *a)
{
	__s32 start = a->vals[0], end = a->vals[1];
	__s64 sum = 0;
	int i, n = 0;

	bpf_for(i, start, end) {
		__u32 k = i & 15;
		__u64 *slot = bpf_map_lookup_elem(&iter_hist, &k);

		if (slot)
			*slot += 1;
		sum += i;
		n++;
		if (n > 1000)
			break;
	}
	a->vals[2] = n;
	a->vals[3] = (__s32)sum;
	a->vals[4] = (__s32)(sum >> 32);
	iter_runs++;
	return n;
}

/* bpf_repeat(vals[5] & 63) with nested bpf_for(0, 3) */
SEC("syscall")
int iter_nested(struct args *a)
{
	int n = 0, j;

	bpf_repeat(a->vals[5] & 63) {
		bpf_for(j, 0, 3)
			n += j + 1;
	}
	a->vals[6] = n;
	return n;
}

/* The raw kfuncs: new's return value for vals[0]..vals[1] (-EINVAL when start > end, -E2BIG past
 * BPF_MAX_LOOPS), then the first two values next gives, and next after draining */
SEC("syscall")
int iter_raw(struct args *a)
{
	struct bpf_iter_num it;
	int *v, got = 0, end = a->vals[1];

	if (a->vals[7] == 42)		/* [-1, 16M): longer than BPF_MAX_LOOPS */
		end = a->vals[6] << 4;
	iter_ret_new = bpf_iter_num_new(&it, a->vals[0], end);
	v = bpf_iter_num_next(&it);
	if (v) {
		a->vals[2] = *v;
		got++;
	}
	v = bpf_iter_num_next(&it);
	if (v) {
		a->vals[3] = *v;
		got++;
	}
	while (bpf_iter_num_next(&it))
		got++;
	iter_ret_next = bpf_iter_num_next(&it) != 0;
	bpf_iter_num_destroy(&it);
	a->vals[4] = got;
	return got;
}

/* Parse the text field with the string kfuncs: its length, where the first space and the last
 * 'l' are, how long the leading number is, whether it says "world" (in any case) */
SEC("syscall")
int str_parse(struct args *a)
{
	char *t = a->text;
	int n;

	t[31] = 0;
	n = bpf_strlen(t);
	a->vals[0] = bpf_strchr(t, ' ');
	a->vals[1] = bpf_strrchr(t, 'l');
	a->vals[2] = bpf_strspn(t, "-0123456789");
	a->vals[3] = bpf_strcspn(t, " \t");
	a->vals[4] = bpf_strstr(t, "world");
	a->vals[5] = bpf_strcasecmp(t, "PYBPF");
	a->vals[6] = bpf_strnstr(t, "abc", 10);
	a->vals[7] = bpf_strcmp(t, "hello world") == 0 ? bpf_strchrnul(t, 'q') : bpf_strnchr(t, 4, 'b');
	return n;
}

char _license[] SEC("license") = "GPL";
