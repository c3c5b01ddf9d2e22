/* Allocated objects, linked lists and red-black trees (kernel/bpf/helpers.c, Linux 6.18), the
 * way the kernel's selftests declare them (tools/testing/selftests/bpf/bpf_experimental.h):
 * the ``_impl`` kfuncs take a ``meta__ign`` and an ``off__k`` the verifier fills in, the macros
 * pass NULL and 0. ``__contains(type, field)`` names what a graph root holds (a BTF decl tag the
 * kernel's btf_parse_fields reads); ``private(X)`` puts globals in their own ``.bss.X`` map, so
 * a lock and the roots it protects share one value.
 */
#ifndef PYBPF_GRAPH_KFUNCS_H
#define PYBPF_GRAPH_KFUNCS_H

#ifndef __ksym
#define __ksym __attribute__((section(".ksyms")))
#endif

struct bpf_spin_lock {
	__u32 val;
};

struct bpf_list_head {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_list_node {
	__u64 __opaque[3];
} __attribute__((aligned(8)));

struct bpf_rb_root {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_rb_node {
	__u64 __opaque[4];
} __attribute__((aligned(8)));

struct bpf_refcount {
	__u32 __opaque[1];
} __attribute__((aligned(4)));

#define __contains(name, node) __attribute__((btf_decl_tag("contains:" #name ":" #node)))
#define private(name) SEC(".bss." #name) __attribute__((visibility("hidden"), aligned(8)))
#define container_of(ptr, type, member) \
	((type *)((void *)(ptr) - __builtin_offsetof(type, member)))

extern void *bpf_obj_new_impl(__u64 local_type_id, void *meta) __ksym;
extern void bpf_obj_drop_impl(void *kptr, void *meta) __ksym;
extern void *bpf_refcount_acquire_impl(void *kptr, void *meta) __ksym;
extern int bpf_list_push_front_impl(struct bpf_list_head *head, struct bpf_list_node *node,
				    void *meta, __u64 off) __ksym;
extern int bpf_list_push_back_impl(struct bpf_list_head *head, struct bpf_list_node *node,
				   void *meta, __u64 off) __ksym;
extern struct bpf_list_node *bpf_list_pop_front(struct bpf_list_head *head) __ksym;
extern struct bpf_list_node *bpf_list_pop_back(struct bpf_list_head *head) __ksym;
extern struct bpf_list_node *bpf_list_front(struct bpf_list_head *head) __ksym;
extern struct bpf_list_node *bpf_list_back(struct bpf_list_head *head) __ksym;
extern struct bpf_rb_node *bpf_rbtree_remove(struct bpf_rb_root *root,
					     struct bpf_rb_node *node) __ksym;
extern int bpf_rbtree_add_impl(struct bpf_rb_root *root, struct bpf_rb_node *node,
			       _Bool (less)(struct bpf_rb_node *a, const struct bpf_rb_node *b),
			       void *meta, __u64 off) __ksym;
extern struct bpf_rb_node *bpf_rbtree_first(struct bpf_rb_root *root) __ksym;
extern struct bpf_rb_node *bpf_rbtree_root(struct bpf_rb_root *root) __ksym;
extern struct bpf_rb_node *bpf_rbtree_left(struct bpf_rb_root *root,
					   struct bpf_rb_node *node) __ksym;
extern struct bpf_rb_node *bpf_rbtree_right(struct bpf_rb_root *root,
					    struct bpf_rb_node *node) __ksym;

#define bpf_obj_new(type) ((type *)bpf_obj_new_impl(__builtin_btf_type_id(*(type *)0, 0), 0))
#define bpf_obj_drop(kptr) bpf_obj_drop_impl(kptr, 0)
#define bpf_refcount_acquire(kptr) ((typeof(kptr))bpf_refcount_acquire_impl(kptr, 0))
#define bpf_list_push_front(head, node) bpf_list_push_front_impl(head, node, 0, 0)
#define bpf_list_push_back(head, node) bpf_list_push_back_impl(head, node, 0, 0)
#define bpf_rbtree_add(root, node, less) bpf_rbtree_add_impl(root, node, less, 0, 0)

static long (*bpf_spin_lock)(struct bpf_spin_lock *lock) = (void *) 93;
static long (*bpf_spin_unlock)(struct bpf_spin_lock *lock) = (void *) 94;

#endif
