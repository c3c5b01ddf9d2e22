#!/bin/sh
# Rebuild the test objects of tests/data/elf (clang-19, llvm-mc-19). Usage: tests/data/elf/build.sh
set -eu
CLANG=${CLANG:-clang-19}
MC=${MC:-llvm-mc-19}
cd "$(dirname "$0")"
for src in *.c; do
	"$CLANG" -g -O2 -target bpf -mcpu=v4 -fdebug-prefix-map="$PWD"=. -c "$src" -o "${src%.c}.o"
done
"$MC" -triple bpf -mcpu=v4 -filetype=obj asm_only.s -o asm_only.o
