/* A small allocator for the C samples: carves fixed pages of a bpf_arena into pieces.
 *
 * Pages come from the bpf_arena_alloc_pages kfunc one at a time; pieces are handed out from the
 * current page (8-byte aligned); callers keep their own free lists. Its state lives in the
 * arena itself (the __arena globals below, placed by clang in .addr_space.1), so user space
 * sees it too. The including file defines the `arena` map first.
 */
#ifndef PYBPF_ARENA_ALLOC_H
#define PYBPF_ARENA_ALLOC_H

#include "bpf_arena_common.h"

void __arena *__arena alloc_page;	/* page being carved, NULL before the first allocation */
__u32 __arena alloc_off;		/* next free byte in alloc_page */
__u32 __arena alloc_pages;		/* pages taken from the arena so far (guard included) */

/* One fresh zeroed page. The first page the arena hands out (offset 0: nothing else is there,
 * the globals sit at the end) is burnt as a guard: when the arena starts on a 4 GiB boundary
 * its address has zero low 32 bits, which reads back as NULL after addr_space_cast. */
static __always_inline void __arena *arena_alloc_page(void)
{
	void __arena *page;

	if (!alloc_pages) {
		if (!bpf_arena_alloc_pages(&arena, NULL, 1, NUMA_NO_NODE, 0))
			return NULL;
		alloc_pages = 1;
	}
	page = bpf_arena_alloc_pages(&arena, NULL, 1, NUMA_NO_NODE, 0);
	if (page)
		alloc_pages += 1;
	return page;
}

static __always_inline void __arena *arena_alloc(__u32 size)
{
	void __arena *page = alloc_page;
	__u32 off = alloc_off;

	size = (size + 7) & ~7U;
	if (size > PAGE_SIZE)
		return NULL;
	if (!page || off + size > PAGE_SIZE) {
		page = arena_alloc_page();
		if (!page)
			return NULL;
		alloc_page = page;
		off = 0;
	}
	alloc_off = off + size;
	return page + off;
}

#endif /* PYBPF_ARENA_ALLOC_H */
