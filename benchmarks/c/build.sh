#!/bin/sh
# Rebuild the benchmark C objects from their sources. Needs clang-19 (or CLANG=...); pybpf and
# its benchmarks never run a compiler. Usage: benchmarks/c/build.sh
#   switch64.bpf.o     clang -O2 -target bpf: the program the JIT compiles
#   switch64.x86_64.o  clang -O2 for x86-64 (generic CPU, position-independent, no unwind
#                      tables): the native baseline, placed with pybpf's own linker
set -eu
CLANG=${CLANG:-clang-19}
cd "$(dirname "$0")"
set -x
"$CLANG" -O2 -target bpf -mcpu=v4 -c switch64_bpf.c -o switch64.bpf.o
"$CLANG" -O2 -target x86_64-linux-gnu -fPIC -fno-asynchronous-unwind-tables \
	-fno-stack-protector -c switch64_native.c -o switch64.x86_64.o
