#!/usr/bin/env bash
# Runs every C test binary in $1/tests (cmocka) and prints "N passed, N failed".
# A binary that crashes or exits non-zero without cmocka's summary counts as one failure.
set -u
dir=${1:-build}
pass=0; fail=0
for t in "$dir"/tests/test_*; do
  [ -x "$t" ] || continue
  out=$(cd "$(dirname "$0")/.." && CMOCKA_MESSAGE_OUTPUT=stdout timeout 600 "$t" 2>&1); rc=$?
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed.*/\1/p' | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f))
  if [ "$f" -ne 0 ]; then
    echo "FAIL $(basename "$t") (exit $rc)"; printf '%s\n' "$out" | tail -40
  else
    echo "ok   $(basename "$t"): $p passed"
  fi
done
echo "c-tests($dir): $pass passed, $fail failed"
