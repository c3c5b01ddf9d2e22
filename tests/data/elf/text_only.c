// SPDX-License-Identifier: MIT
/* Test object: plain functions, no SEC() at all (everything lands in .text).
 * Rebuild: tests/data/elf/build.sh
 */
static __attribute__((noinline)) long twice(long x)
{
	return 2 * x;
}

long add_twice(long a, long b)
{
	return twice(a) + b;
}

long negate(long a)
{
	return -a;
}
