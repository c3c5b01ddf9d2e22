/* Allocated objects stashed in map values (Linux 6.18): ``__kptr`` fields (BTF type tag
 * "kptr") hold a referenced pointer to a program-allocated object (bpf_obj_new), exchanged
 * with bpf_kptr_xchg (helper 194) as the kernel's selftests do (local_kptr_stash.c).
 * ``__kptr_untrusted`` is the unreferenced kind (plain stores, no xchg); ``__percpu_kptr`` holds
 * a per-CPU object (bpf_percpu_obj_new), whose copies bpf_this_cpu_ptr/bpf_per_cpu_ptr give.
 */
#ifndef PYBPF_KPTR_H
#define PYBPF_KPTR_H

#include "graph_kfuncs.h"

#define __kptr __attribute__((btf_type_tag("kptr")))
#define __kptr_untrusted __attribute__((btf_type_tag("kptr_untrusted")))
#define __percpu_kptr __attribute__((btf_type_tag("percpu_kptr")))

static void *(*bpf_kptr_xchg)(void *dst, void *ptr) = (void *) 194;
extern void *bpf_percpu_obj_new_impl(__u64 local_type_id, void *meta) __ksym;
extern void bpf_percpu_obj_drop_impl(void *kptr, void *meta) __ksym;
static void *(*bpf_per_cpu_ptr)(const void *percpu_ptr, __u32 cpu) = (void *) 153;
static void *(*bpf_this_cpu_ptr)(const void *percpu_ptr) = (void *) 154;
#define bpf_percpu_obj_new(type) \
	((type __percpu_kptr *)bpf_percpu_obj_new_impl(__builtin_btf_type_id(*(type *)0, 0), 0))
#define bpf_percpu_obj_drop(kptr) bpf_percpu_obj_drop_impl(kptr, 0)
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

#endif
