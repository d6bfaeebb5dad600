#!/usr/bin/env bash
# Runs every GPU test binary in $1/tests-cuda (default build-cuda) and prints "N passed, N failed".
set -u
dir=${1:-build-cuda}
cd "$(dirname "$0")/../.."
pass=0; fail=0
for t in "$dir"/tests-cuda/test_*; do
  [ -x "$t" ] || continue
  echo "=== $(basename "$t")"
  out=$(CMOCKA_MESSAGE_OUTPUT=stdout timeout 900 "$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed.*/\1/p' | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f))
done
echo "cuda-tests($dir): $pass passed, $fail failed"
[ "$fail" -eq 0 ]
