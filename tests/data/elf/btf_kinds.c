// SPDX-License-Identifier: MIT
/* Test object for pybpf's BTF reader and ELF loader: one of each BTF kind clang emits, globals
 * of every shape (bool, signed and 64-bit enums, bitfields, unions, nested arrays, pointers),
 * a CO-RE field access (.BTF.ext core_relo) and a bpf_loop callback (ld_imm64 of a function).
 * Rebuild: tests/data/elf/build.sh
 */
#include "../../../samples/c/bpf_helpers.h"

#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __user __attribute__((btf_type_tag("user")))

enum color { RED = -1, GREEN = 0, BLUE = 7 };
enum big { BIG_ONE = 1, BIG_HUGE = 0x1122334455667788ULL };
typedef unsigned int u32_t;
typedef u32_t my_u32;

struct opaque;				/* FWD */

struct flags {
	unsigned int a : 3;
	unsigned int b : 5;
	int c : 4;
	__u16 d;
} __attribute__((preserve_access_index));

union either {
	__u32 word;
	__u8 bytes[4];
};

struct point {
	__s32 x;
	__s32 y __tag("y_member");
	union either u;
	struct flags f;
	double weight;
	struct opaque *hidden;
	int __user *uptr;
	long (*fn)(int, char);
	const volatile my_u32 *restrict cvp;
};

bool enabled = true;
enum color shade = BLUE;
enum big bigval = BIG_HUGE;
__s16 neg = -12345;
struct point origin = { .x = -3, .y = 4, .u = { .word = 0x01020304 }, .weight = 2.5 };
__u32 grid[2][3] = { { 1, 2, 3 }, { 4, 5, 6 } };
char name[8] = "pybpf";
struct flags bits = { .a = 5, .b = 17, .c = -2, .d = 0xBEEF };
const volatile __u64 limit = 99;
static __u32 hidden_counter;		/* static global: still a DATASEC VAR */
__u32 results[4];

static long cb(__u32 i, void *ctx)
{
	hidden_counter += i;
	return 0;
}

__noinline int __tag("global_fn") sum_fields(struct point *p)
{
	return p ? p->x + p->y : 0;
}

SEC("tc")
int kinds(struct __sk_buff *skb)
{
	struct point p = origin;

	bpf_loop(4, cb, NULL, 0);
	results[0] = sum_fields(&p);
	results[1] = hidden_counter;
	results[2] = bits.b;	/* CO-RE: struct flags has preserve_access_index */
	results[3] = enabled ? shade : limit;
	return grid[1][2] + name[0];
}

char _license[] SEC("license") = "MIT";
