/* Allocated objects stashed in map values (Linux 6.18): ``__kptr`` fields (BTF type tag
 * "kptr") hold a referenced pointer to a program-allocated object (bpf_obj_new), exchanged
 * with bpf_kptr_xchg (helper 194) as the kernel's selftests do (local_kptr_stash.c).
 * ``__kptr_untrusted`` is the unreferenced kind (plain stores, no xchg).
 */
#ifndef PYBPF_KPTR_H
#define PYBPF_KPTR_H

#include "graph_kfuncs.h"

#define __kptr __attribute__((btf_type_tag("kptr")))
#define __kptr_untrusted __attribute__((btf_type_tag("kptr_untrusted")))
#define __percpu_kptr __attribute__((btf_type_tag("percpu_kptr")))

static void *(*bpf_kptr_xchg)(void *dst, void *ptr) = (void *) 194;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

#endif
