#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run):
#   1. C unit tests (cmocka), normal build
#   2. the same C tests under ASan+UBSan
#   3. fuzz targets, a bounded number of runs each on their seed corpora (clang libFuzzer)
#   4. Python tests: differential tests against HF tokenizers / jinja2, server tests (pytest)
# Ends with one line "N passed, N failed".
set -u
LOGDIR=${LOGDIR:-$(mktemp -d /tmp/pagoda-test.XXXXXX)}; export LOGDIR
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
total_p=0; total_f=0
add() { # parse "X passed, Y failed" from the last matching line of $1
  local line p f
  line=$(printf '%s\n' "$1" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(printf '%s' "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); p=${p:-0}
  f=$(printf '%s' "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+'); f=${f:-0}
  total_p=$((total_p + p)); total_f=$((total_f + f))
}

step() { echo; echo "=== $* ==="; }

step "build"
if ! make -j"$JOBS" test-bins >$LOGDIR/build.log 2>&1; then
  tail -50 $LOGDIR/build.log; echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi
step "C unit tests"
out=$(bash tests/run_c.sh build); echo "$out"; add "$out"

if [ "${SKIP_SAN:-0}" != 1 ]; then
  step "C unit tests under ASan+UBSan"
  if make -j"$JOBS" SAN=1 test-bins >$LOGDIR/build-san.log 2>&1; then
    out=$(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 bash tests/run_c.sh build-san)
    echo "$out"; add "$out"
  else
    tail -50 $LOGDIR/build-san.log; total_f=$((total_f + 1))
  fi
fi

if [ "${SKIP_FUZZ:-0}" != 1 ] && ls fuzz/fuzz_*.c >/dev/null 2>&1; then
  step "fuzz targets"
  out=$(bash tests/run_fuzz.sh); echo "$out"; add "$out"
fi

if [ "${SKIP_PY:-0}" != 1 ] && ls tests/py/test_*.py >/dev/null 2>&1; then
  step "Python tests"
  out=$(python3 -m pytest -q -p no:cacheprovider tests/py 2>&1); rc=$?
  echo "$out" | tail -30
  line=$(printf '%s\n' "$out" | tail -1)
  p=$(printf '%s' "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); p=${p:-0}
  f=$(printf '%s' "$line" | grep -oE '[0-9]+ (failed|error|errors)' | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && [ "$f" -eq 0 ]; then f=1; fi
  total_p=$((total_p + p)); total_f=$((total_f + f))
fi

echo
echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
