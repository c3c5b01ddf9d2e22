"""Ids pybpf gives the kfuncs it implements (there is no vmlinux BTF to take them from).

Data only. The assembler resolves ``call bpf_arena_alloc_pages`` by name through this table, the
disassembler prints names from it, and the ELF loader resolves ``.ksyms`` externs by name.
"""

KFUNC_IDS: dict[str, int] = {
    "bpf_arena_alloc_pages": 1001,
    "bpf_arena_free_pages": 1002,
    "bpf_arena_reserve_pages": 1003,
    # open-coded numeric iterator (kernel/bpf/bpf_iter.c)
    "bpf_iter_num_new": 1010,
    "bpf_iter_num_next": 1011,
    "bpf_iter_num_destroy": 1012,
    # string kfuncs (kernel/bpf/helpers.c)
    "bpf_strcmp": 1020,
    "bpf_strcasecmp": 1021,
    "bpf_strchr": 1022,
    "bpf_strchrnul": 1023,
    "bpf_strnchr": 1024,
    "bpf_strrchr": 1025,
    "bpf_strlen": 1026,
    "bpf_strnlen": 1027,
    "bpf_strspn": 1028,
    "bpf_strcspn": 1029,
    "bpf_strstr": 1030,
    "bpf_strnstr": 1031,
    # RCU, casts, exceptions (kernel/bpf/helpers.c)
    "bpf_rcu_read_lock": 1040,
    "bpf_rcu_read_unlock": 1041,
    "bpf_cast_to_kern_ctx": 1042,
    "bpf_rdonly_cast": 1043,
    "bpf_throw": 1044,
    # dynamic pointers (kernel/bpf/helpers.c, net/core/filter.c)
    "bpf_dynptr_from_skb": 1050,
    "bpf_dynptr_from_xdp": 1051,
    "bpf_dynptr_slice": 1052,
    "bpf_dynptr_slice_rdwr": 1053,
    "bpf_dynptr_adjust": 1054,
    "bpf_dynptr_is_null": 1055,
    "bpf_dynptr_is_rdonly": 1056,
    "bpf_dynptr_size": 1057,
    "bpf_dynptr_clone": 1058,
    "bpf_dynptr_copy": 1059,
    # allocated objects, linked lists, red-black trees (kernel/bpf/helpers.c)
    "bpf_obj_new_impl": 1060,
    "bpf_obj_drop_impl": 1061,
    "bpf_refcount_acquire_impl": 1062,
    "bpf_list_push_front_impl": 1063,
    "bpf_list_push_back_impl": 1064,
    "bpf_list_pop_front": 1065,
    "bpf_list_pop_back": 1066,
    "bpf_list_front": 1067,
    "bpf_list_back": 1068,
    "bpf_rbtree_add_impl": 1069,
    "bpf_rbtree_remove": 1070,
    "bpf_rbtree_first": 1071,
    "bpf_rbtree_root": 1072,
    "bpf_rbtree_left": 1073,
    "bpf_rbtree_right": 1074,
    # per-CPU allocated objects (kernel/bpf/helpers.c)
    "bpf_percpu_obj_new_impl": 1075,
    "bpf_percpu_obj_drop_impl": 1076,
    # dynptr fills and the skb metadata dynptr (kernel/bpf/helpers.c, net/core/filter.c)
    "bpf_dynptr_memset": 1080,
    "bpf_dynptr_from_skb_meta": 1081,
}

KFUNC_NAMES: dict[int, str] = {v: k for k, v in KFUNC_IDS.items()}
