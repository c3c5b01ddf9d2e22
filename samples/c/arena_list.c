// SPDX-License-Identifier: MIT
/* A linked list in a bpf_arena, built by BPF and read back by Python.
 *
 * arena_list_add appends `cnt` elements (values 0..cnt-1) with bpf_loop; arena_list_sum walks
 * the list in BPF (returns its length, -1 if that disagrees with arena_len); arena_list_del
 * empties it onto a free list that later adds reuse.
 * list_head (an ordinary .bss global) holds the arena address of the first element, so user space
 * can follow the same pointers; arena_sum and arena_len are globals inside the arena itself.
 *
 * Layout (shared with samples/arena_list/README.md):
 *   struct elem { struct elem *next; u64 value; }   (pointers are 64-bit user addresses)
 */
#include "bpf_arena_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARENA);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 16);	/* pages */
} arena SEC(".maps");

#include "arena_alloc.h"

struct elem {
	struct elem __arena *next;
	__u64 value;
};

struct elem __arena *list_head;		/* first element, newest first */
__u32 cnt = 10;				/* how many elements arena_list_add appends */
__u64 list_sum;				/* written by arena_list_sum */
__u64 __arena arena_sum;		/* running sum of the values added */
__u32 __arena arena_len;		/* current length */
struct elem __arena *__arena free_list;	/* elements removed by arena_list_del */

/* bpf_loop callback: one element per iteration; returning 1 stops the loop. */
static long add_one(__u32 i, void *ctx)
{
	struct elem __arena *n = free_list;

	if (n)
		free_list = n->next;
	else
		n = arena_alloc(sizeof(*n));
	if (!n)
		return 1;
	n->value = i;
	n->next = list_head;
	list_head = n;
	arena_sum += i;
	arena_len += 1;
	return 0;
}

SEC("syscall")
int arena_list_add(void *ctx)
{
	return bpf_loop(cnt, add_one, NULL, 0);
}

SEC("syscall")
int arena_list_sum(void *ctx)
{
	struct elem __arena *n;
	__u64 sum = 0;
	int len = 0;

	for (n = list_head; n && can_loop; n = n->next) {
		sum += n->value;
		len++;
	}
	list_sum = sum;
	/* reading arena_len (an __arena global) also ties this program to the arena map */
	return len == arena_len ? len : -1;
}

SEC("syscall")
int arena_list_del(void *ctx)
{
	struct elem __arena *n, *next;
	int freed = 0;

	for (n = list_head; n && can_loop; n = next) {
		next = n->next;
		n->next = free_list;
		free_list = n;
		arena_sum -= n->value;
		arena_len -= 1;
		freed++;
	}
	list_head = NULL;
	return freed;
}

char _license[] SEC("license") = "GPL";
