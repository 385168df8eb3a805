#!/usr/bin/env bash
# Data-parallel training under mpirun (tests/mpi/test_distributed.c): with 2
# and 3 ranks on this machine (--oversubscribe: more ranks than cores is
# fine for correctness), then a rank that stops answering and one that is
# killed.  Ends with "mpi: N passed, N failed".
set -u
bin=${1:-build}/tests/mpi/test_distributed
tmp=$(mktemp -d /tmp/nabla-mpi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0
mpirun=(mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && mpirun+=(--allow-run-as-root)

for np in 2 3; do
  if timeout 120 "${mpirun[@]}" -np $np "$bin" > "$tmp/out" 2>&1 && grep -q "^mpi, $np ranks: 0 failed" "$tmp/out"; then
    passed=$((passed + $(grep -c '^ok:' "$tmp/out")))
  else
    failed=$((failed + 1)); echo "FAIL: $np ranks"; sed 's/^/    /' "$tmp/out" | tail -30
  fi
  grep -E '^(ok|FAIL):' "$tmp/out"
done

# A rank that stops answering: the other gives up after its 2 s timeout,
# says so, and ends the job; a killed rank ends the job too.  Both well
# within 20 s.
check_ends() { # NAME FLAG PATTERN
  local start=$(date +%s)
  timeout 60 "${mpirun[@]}" -np 2 "$bin" "$2" > "$tmp/out" 2>&1
  local took=$(( $(date +%s) - start ))
  if [ $took -le 20 ] && grep -Eq "$3" "$tmp/out"; then passed=$((passed + 1)); echo "ok: $1 (the job ended after $took s)"
  else failed=$((failed + 1)); echo "FAIL: $1 (after $took s)"; sed 's/^/    /' "$tmp/out" | tail -20; fi
}
check_ends "a rank that stops answering" --stall "rank 0 of 2 had no answer from the other ranks for 2 s"
check_ends "a rank that is killed" --kill "signal 9|exited on signal|killed"
# Ranks on different paths: collectives that do not match come back as
# errors on both ranks (MPI's default handler would end the job at once).
check_both() { # NAME FLAG
  local start=$(date +%s)
  timeout 60 "${mpirun[@]}" -np 2 "$bin" "$2" > "$tmp/out" 2>&1
  local took=$(( $(date +%s) - start ))
  if [ $took -le 20 ] && grep -q "^rank 0 returned: nb_dist" "$tmp/out" && grep -q "^rank 1 returned: nb_dist" "$tmp/out"; then
    passed=$((passed + 1)); echo "ok: $1 (both ranks returned an error, after $took s)"
  else failed=$((failed + 1)); echo "FAIL: $1 (after $took s)"; sed 's/^/    /' "$tmp/out" | tail -20; fi
}
check_both "ranks whose collectives do not match" --paths
check_ends "a rank that never sets up" --skip-setup "rank 0 returned: nb_dist_new: rank 0 of 2 had no answer"

echo "mpi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
