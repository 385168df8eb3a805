#!/usr/bin/env bash
# Runs each test program, shows its cmocka output, and ends with one line
# "<label>: N passed, N failed" counting test programs' cases.
set -u
label=$1; shift
passed=0; failed=0; broken=()
for t in "$@"; do
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ $rc -ne 0 ] && [ -z "$f" ]; then failed=$((failed + 1)); broken+=("$t (exit $rc)"); fi
done
[ ${#broken[@]} -gt 0 ] && printf 'crashed or failed to start: %s\n' "${broken[@]}"
echo "$label: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
