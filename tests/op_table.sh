#!/usr/bin/env bash
# Every op of README's "## Ops" table must be exercised by the differential
# test against PyTorch (tests/torch_diff*.c): fails naming any that is not.
# So must it be by the graph fuzzer (fuzz/fuzz_graph.c); NB_STRICT_FUZZ_OPS=0
# only lists the ones the fuzzer lacks, for an op just added.
set -u
cd "$(dirname "$0")/.."
ops=$(awk '/^## Ops/{on=1; next} /^## /{on=0} on' README.md | grep -o 'nb_[a-z0-9_]*' | sort -u)
[ -n "$ops" ] || { echo "op-table: no ops found in README's Ops table"; exit 1; }
missing=(); fuzz_missing=()
for op in $ops; do
  grep -qw "$op" tests/torch_diff*.c || missing+=("$op")
  [ -f fuzz/fuzz_graph.c ] && ! grep -qw "$op" fuzz/fuzz_graph.c && fuzz_missing+=("$op")
done
n=$(echo "$ops" | wc -w)
if [ ${#fuzz_missing[@]} -gt 0 ]; then
  echo "op-table: not in fuzz/fuzz_graph.c: ${fuzz_missing[*]}"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "op-table: not in tests/torch_diff*.c: ${missing[*]}"
  echo "op-table: 0 passed, 1 failed"; exit 1
fi
if [ ${#fuzz_missing[@]} -gt 0 ] && [ "${NB_STRICT_FUZZ_OPS:-1}" = 1 ]; then
  echo "op-table: 0 passed, 1 failed (NB_STRICT_FUZZ_OPS=1)"; exit 1
fi
echo "op-table: $n ops of README's table in tests/torch_diff*.c and fuzz/fuzz_graph.c; 1 passed, 0 failed"
