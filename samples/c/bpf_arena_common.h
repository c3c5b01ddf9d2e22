/* Arena conventions for the pybpf C samples (after the kernel's bpf_arena_common.h).
 *
 * __arena marks pointers into a bpf_arena map (address space 1). clang-19 with -mcpu=v4
 * defines __BPF_FEATURE_ADDR_SPACE_CAST, so it inserts the addr_space_cast instructions itself
 * and places __arena globals in the .addr_space.1 section; cast_kern/cast_user are then
 * no-ops kept for readability.
 */
#ifndef PYBPF_BPF_ARENA_COMMON_H
#define PYBPF_BPF_ARENA_COMMON_H

#include "bpf_helpers.h"

#ifndef __BPF_FEATURE_ADDR_SPACE_CAST
#error "the arena samples need clang with __BPF_FEATURE_ADDR_SPACE_CAST (clang-19 -mcpu=v4)"
#endif

#define __arena __attribute__((address_space(1)))
#define __arena_global __attribute__((address_space(1)))
#define cast_kern(ptr) /* the compiler inserts addr_space_cast */
#define cast_user(ptr) /* the compiler inserts addr_space_cast */

#define PAGE_SIZE 4096
#define NUMA_NO_NODE (-1)

#ifndef arena_container_of
#define arena_container_of(ptr, type, member)			\
	({							\
		void __arena *__mptr = (void __arena *)(ptr);	\
		((type *)(__mptr - __builtin_offsetof(type, member))); \
	})
#endif

/* The arena kfuncs, resolved by name from the .ksyms section. */
void __arena *bpf_arena_alloc_pages(void *map, void __arena *addr, __u32 page_cnt,
				    int node_id, __u64 flags) __ksym __weak;
void bpf_arena_free_pages(void *map, void __arena *ptr, __u32 page_cnt) __ksym __weak;
int bpf_arena_reserve_pages(void *map, void __arena *addr, __u32 page_cnt) __ksym __weak;

#endif /* PYBPF_BPF_ARENA_COMMON_H */
