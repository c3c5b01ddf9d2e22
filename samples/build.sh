#!/bin/sh
# Rebuild the prebuilt BPF objects of the C samples (samples/c/*.o) from their sources.
# Needs clang-19 (or CLANG=...); pybpf itself never runs a compiler. Usage: samples/build.sh
set -eu
CLANG=${CLANG:-clang-19}
cd "$(dirname "$0")/c"
for src in *.c; do
	obj=${src%.c}.o
	echo "$CLANG -g -O2 -target bpf -mcpu=v4 -c $src -o $obj"
	# the prefix map keeps the checkout path out of the debug info (same bytes everywhere)
	"$CLANG" -g -O2 -target bpf -mcpu=v4 -fdebug-prefix-map="$PWD"=. -c "$src" -o "$obj"
done
