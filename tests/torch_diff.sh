#!/usr/bin/env bash
# nabla against PyTorch: tests/torch_diff.sh BUILD [GRAPHS] [SEED...]
# runs BUILD/tests/torch_diff (built by make) for each seed and compares
# its graphs, optimizer runs and refusals in torch (tests/torch_diff.py).
# Skips, with the line to install torch, when python3-torch is missing.
set -u
build=${1:-build}; graphs=${2:-500}; shift 2 2>/dev/null || shift $#
seeds=("$@"); [ ${#seeds[@]} -gt 0 ] || seeds=(1)
py=/usr/bin/python3
if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "torch-diff: skipped (apt-get install python3-torch)"; exit 0
fi
bin=$build/tests/torch_diff
[ -x "$bin" ] || { echo "torch-diff: $bin is missing (make tests builds it)"; exit 1; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
status=0
for s in "${seeds[@]}"; do
  "$bin" "$s" "$graphs" "$out/graphs.jsonl" || { echo "torch-diff: $bin failed on seed $s"; status=1; continue; }
  echo "seed $s:"
  "$py" tests/torch_diff.py "$out/graphs.jsonl" || status=1
done
exit $status
