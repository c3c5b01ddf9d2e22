/* Kernel kfunc declarations for the corpus (Linux 6.18 prototypes, kernel/bpf/), resolved by
 * name against the kernel's BTF at load time (libbpf's __ksym externs; pybpf resolves them by
 * name to its own kfunc ids, tests/kernel_bpf.py to the running kernel's BTF ids). Also the
 * loop macros programs use with open-coded iterators, in the shape libbpf's bpf_for and
 * bpf_repeat give them: the iterator is destroyed when it goes out of scope.
 */
#ifndef PYBPF_KFUNCS_H
#define PYBPF_KFUNCS_H

#define __ksym __attribute__((section(".ksyms")))
#define __weak __attribute__((weak))

/* open-coded numeric iterator (kernel/bpf/bpf_iter.c) */
struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __weak __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __weak __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __weak __ksym;

/* read-only string kfuncs (kernel/bpf/helpers.c): indexes or -errno, never pointers */
extern int bpf_strcmp(const char *s1__ign, const char *s2__ign) __weak __ksym;
extern int bpf_strcasecmp(const char *s1__ign, const char *s2__ign) __weak __ksym;
extern int bpf_strchr(const char *s__ign, char c) __weak __ksym;
extern int bpf_strchrnul(const char *s__ign, char c) __weak __ksym;
extern int bpf_strnchr(const char *s__ign, __u64 count, char c) __weak __ksym;
extern int bpf_strrchr(const char *s__ign, int c) __weak __ksym;
extern int bpf_strlen(const char *s__ign) __weak __ksym;
extern int bpf_strnlen(const char *s__ign, __u64 count) __weak __ksym;
extern int bpf_strspn(const char *s__ign, const char *accept__ign) __weak __ksym;
extern int bpf_strcspn(const char *s__ign, const char *reject__ign) __weak __ksym;
extern int bpf_strstr(const char *s1__ign, const char *s2__ign) __weak __ksym;
extern int bpf_strnstr(const char *s1__ign, const char *s2__ign, __u64 len) __weak __ksym;

/* dynamic pointers: kfuncs (net/core/filter.c, kernel/bpf/helpers.c) and helpers by id */
struct bpf_dynptr {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct __sk_buff;
struct xdp_md;
extern int bpf_dynptr_from_skb(struct __sk_buff *s, __u64 flags,
			       struct bpf_dynptr *ptr__uninit) __weak __ksym;
extern int bpf_dynptr_from_xdp(struct xdp_md *x, __u64 flags,
			       struct bpf_dynptr *ptr__uninit) __weak __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt,
			      __u32 buffer__szk) __weak __ksym;
static long (*bpf_dynptr_from_mem)(void *data, __u32 size, __u64 flags,
				   struct bpf_dynptr *ptr) = (void *) 197;
static long (*bpf_dynptr_read)(void *dst, __u32 len, const struct bpf_dynptr *src,
			       __u32 offset, __u64 flags) = (void *) 201;
static long (*bpf_dynptr_write)(const struct bpf_dynptr *dst, __u32 offset, void *src,
				__u32 len, __u64 flags) = (void *) 202;
static void *(*bpf_dynptr_data)(const struct bpf_dynptr *ptr, __u32 offset,
				__u32 len) = (void *) 203;

/* ring buffer dynptrs (kernel/bpf/ringbuf.c) and the generic dynptr kfuncs (kernel/bpf/helpers.c) */
static long (*bpf_ringbuf_reserve_dynptr)(void *ringbuf, __u32 size, __u64 flags,
					  struct bpf_dynptr *ptr) = (void *) 198;
static void (*bpf_ringbuf_submit_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *) 199;
static void (*bpf_ringbuf_discard_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *) 200;
extern int bpf_dynptr_adjust(const struct bpf_dynptr *p, __u32 start, __u32 end) __weak __ksym;
extern bool bpf_dynptr_is_null(const struct bpf_dynptr *p) __weak __ksym;
extern bool bpf_dynptr_is_rdonly(const struct bpf_dynptr *p) __weak __ksym;
extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __weak __ksym;
extern int bpf_dynptr_clone(const struct bpf_dynptr *p,
			    struct bpf_dynptr *clone__uninit) __weak __ksym;

/* for (i = start; i < end; i++) through an iterator; the range check after each step hands the
 * verifier i's bounds. The cast-to-void reference keeps clang emitting the destructor's BTF. */
#define bpf_for(i, start, end)								\
	for (struct bpf_iter_num __it __attribute__((aligned(8),			\
				cleanup(bpf_iter_num_destroy))),			\
	     *__once __attribute__((unused)) =						\
		(bpf_iter_num_new(&__it, (start), (end)),				\
		 (void)bpf_iter_num_destroy, (void *)0);				\
	     ({ int *__v = bpf_iter_num_next(&__it);					\
		__v && ((i) = *__v, (i) >= (start) && (i) < (end)); });)

/* repeat the body n times */
#define bpf_repeat(n)									\
	for (struct bpf_iter_num __it __attribute__((aligned(8),			\
				cleanup(bpf_iter_num_destroy))),			\
	     *__once __attribute__((unused)) =						\
		(bpf_iter_num_new(&__it, 0, (n)), (void)bpf_iter_num_destroy, (void *)0);\
	     bpf_iter_num_next(&__it);)

#endif
