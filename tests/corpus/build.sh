#!/bin/sh
# Rebuild the corpus objects (tests/corpus/*.o) from their sources with clang-19 (or CLANG=...).
# pybpf never runs a compiler; tests use the committed objects. Usage: tests/corpus/build.sh
set -eu
CLANG=${CLANG:-clang-19}
cd "$(dirname "$0")"
for src in *.c; do
	echo "$CLANG -g -O2 -target bpf -mcpu=v4 -c $src -o ${src%.c}.o"
	"$CLANG" -g -O2 -target bpf -mcpu=v4 -fdebug-prefix-map="$PWD"=. -c "$src" -o "${src%.c}.o"
done
