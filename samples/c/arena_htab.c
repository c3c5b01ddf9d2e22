// SPDX-License-Identifier: MIT
/* A hash table that lives in a bpf_arena: an array of buckets, each a singly linked list.
 *
 * BPF builds it (htab_selftest, htab_insert_prog...) and publishes its address in the arena
 * global htab_for_user, so Python can walk the 64-bit pointers BPF wrote. The reverse works
 * too: Python builds a table in the arena with the same layout, stores its address in
 * user_table and runs htab_query, which looks the keys of query_keys up in it.
 *
 * Layout (shared with samples/arena_htab/walk.py): every pointer is a 64-bit user address.
 *   struct htab      { u32 n_buckets; u32 count; struct htab_elem *buckets[n_buckets]; }
 *   struct htab_elem { struct htab_elem *next; u64 key; u64 value; }
 *   bucket of key k = (u32)((k * 0x9E3779B97F4A7C15) >> 32) & (n_buckets - 1)
 */
#include "bpf_arena_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARENA);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 64);	/* pages */
} arena SEC(".maps");

#include "arena_alloc.h"

struct htab_elem {
	struct htab_elem __arena *next;
	__u64 key;
	__u64 value;
};

struct htab {
	__u32 n_buckets;
	__u32 count;
	struct htab_elem __arena *buckets[];
};

/* Set by user space before load (it lands in .rodata); a power of two below 512. */
const volatile __u32 n_buckets = 64;

/* Globals in the arena itself. Besides being visible to user space they tie every program
 * that reads them to the arena map, which the kernel requires of any program that uses
 * arena pointers ("addr_space_cast insn can only be used in a program that has an
 * associated arena"). */
struct htab __arena *__arena htab_for_user;	/* the table BPF built, for user space to walk */
struct htab __arena *__arena user_table;	/* a table user space built, for htab_query */
struct htab_elem __arena *__arena free_elems;	/* deleted elements, reused first */

__u32 fill_count = 1000;		/* how many keys htab_selftest inserts (.data) */
__u64 query_keys[16];
__u64 query_values[16];
__u32 query_found;

struct htab_args {
	__u64 key;
	__u64 value;
};

/* Weak so that a program linking this file can bring its own hash function. */
__weak __u32 htab_hash(__u64 key, __u32 nbuckets)
{
	return (__u32)((key * 0x9E3779B97F4A7C15ULL) >> 32) & (nbuckets - 1);
}

static __noinline struct htab_elem __arena *htab_find(struct htab __arena *htab, __u64 key)
{
	struct htab_elem __arena *e;

	if (!htab)
		return NULL;
	for (e = htab->buckets[htab_hash(key, htab->n_buckets)]; e && can_loop; e = e->next)
		if (e->key == key)
			return e;
	return NULL;
}

static __noinline struct htab __arena *htab_create(void)
{
	struct htab __arena *htab = htab_for_user;

	if (htab)
		return htab;
	/* The bucket array fills one page: a fresh page from the kfunc reads as zero. */
	htab = arena_alloc_page();
	if (!htab)
		return NULL;
	htab->n_buckets = n_buckets;
	htab_for_user = htab;
	return htab;
}

/* Global functions: verified on their own, so the table comes in as an __arg_arena pointer. */
int htab_insert(struct htab __arena *htab __arg_arena, __u64 key, __u64 value)
{
	struct htab_elem __arena *e;
	__u32 b;

	if (!htab)
		return -22;	/* -EINVAL */
	e = htab_find(htab, key);
	if (e) {
		e->value = value;
		return 0;
	}
	e = free_elems;
	if (e)
		free_elems = e->next;
	else
		e = arena_alloc(sizeof(*e));
	if (!e)
		return -12;	/* -ENOMEM */
	b = htab_hash(key, htab->n_buckets);
	e->key = key;
	e->value = value;
	e->next = htab->buckets[b];
	htab->buckets[b] = e;
	htab->count++;
	return 0;
}

int htab_delete(struct htab __arena *htab __arg_arena, __u64 key)
{
	struct htab_elem __arena *e, *prev = NULL;
	__u32 b;

	if (!htab)
		return -22;
	b = htab_hash(key, htab->n_buckets);
	for (e = htab->buckets[b]; e && can_loop; prev = e, e = e->next) {
		if (e->key != key)
			continue;
		if (prev)
			prev->next = e->next;
		else
			htab->buckets[b] = e->next;
		htab->count--;
		e->next = free_elems;
		free_elems = e;
		return 0;
	}
	return -2;	/* -ENOENT */
}

SEC("syscall")
int htab_insert_prog(struct htab_args *args)
{
	return htab_insert(htab_create(), args->key, args->value);
}

SEC("syscall")
int htab_lookup_prog(struct htab_args *args)
{
	struct htab_elem __arena *e = htab_find(htab_for_user, args->key);

	if (!e)
		return -2;
	args->value = e->value;
	return 0;
}

SEC("syscall")
int htab_delete_prog(struct htab_args *args)
{
	return htab_delete(htab_for_user, args->key);
}

/* Insert 0..fill_count-1 (value = 3 * key + 1), check them, delete the odd keys.
 * Returns the number of mismatches (0 when the table works). */
SEC("syscall")
int htab_selftest(void *ctx)
{
	struct htab __arena *htab = htab_create();
	struct htab_elem __arena *e;
	int bad = 0;
	__u64 i;

	if (!htab)
		return -12;
	for (i = 0; i < fill_count && can_loop; i++)
		if (htab_insert(htab, i, 3 * i + 1))
			bad++;
	for (i = 0; i < fill_count && can_loop; i++) {
		e = htab_find(htab, i);
		if (!e || e->value != 3 * i + 1)
			bad++;
	}
	for (i = 1; i < fill_count && can_loop; i += 2)
		if (htab_delete(htab, i))
			bad++;
	return bad;
}

/* Look query_keys up in the table user space built (user_table). */
SEC("syscall")
int htab_query(void *ctx)
{
	struct htab_elem __arena *e;
	__u32 i, found = 0;

	for (i = 0; i < 16 && can_loop; i++) {
		e = htab_find(user_table, query_keys[i]);
		query_values[i] = e ? e->value : 0;
		found += !!e;
	}
	query_found = found;
	return found;
}

char _license[] SEC("license") = "GPL";
