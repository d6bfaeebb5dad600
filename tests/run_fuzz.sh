#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.c) and runs each for a bounded number of
# inputs from its seed corpus (fuzz/corpus/<name>/) plus mutations. Each target is one test.
set -u
LOGDIR=${LOGDIR:-$(mktemp -d /tmp/pagoda-fuzz.XXXXXX)}
cd "$(dirname "$0")/.."
RUNS=${FUZZ_RUNS:-20000}
pass=0; fail=0
if ! make -j"$(nproc)" fuzz >$LOGDIR/fuzz-build.log 2>&1; then
  tail -30 $LOGDIR/fuzz-build.log; echo "fuzz: 0 passed, 1 failed"; exit 0
fi
for bin in build-fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  case "$bin" in *.a|*.o) continue;; esac
  name=$(basename "$bin"); corpus=fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d); [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
  if ASAN_OPTIONS=detect_leaks=1 timeout 300 "$bin" -runs="$RUNS" -max_total_time=${FUZZ_SECONDS:-20} -max_len=65536 \
        -rss_limit_mb=4096 "$work" >$LOGDIR/$name.log 2>&1; then
    echo "ok   $name"; pass=$((pass + 1))
  else
    echo "FAIL $name"; tail -30 $LOGDIR/$name.log; fail=$((fail + 1))
  fi
  rm -rf "$work"
done
echo "fuzz: $pass passed, $fail failed"
