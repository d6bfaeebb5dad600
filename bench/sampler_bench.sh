#!/usr/bin/env bash
# Host sampler cost per call over a 151936-token vocabulary (see sampler_bench.c).
# Usage: bench/sampler_bench.sh [--vs REV] [VOCAB] [REPS]   (after `make`)
#   --vs REV also builds the bench against src/backend/sampler.c of git revision REV and runs
#   both (same logits, same seeds: equal token checksums mean the same draws).
set -eu
cd "$(dirname "$0")/.."
make -s build/libpagoda.a
CC="cc -O2 -std=c11 -D_GNU_SOURCE -Isrc"
$CC -o build/sampler_bench bench/sampler_bench.c build/libpagoda.a -lm -lpthread
if [ "${1:-}" = "--vs" ]; then
  REV=$2
  git show "$REV:src/backend/sampler.c" > build/sampler_old.c
  $CC -Wno-unused-function -o build/sampler_bench_old bench/sampler_bench.c build/sampler_old.c build/libpagoda.a -lm -lpthread
  shift 2
  echo "== sampler.c of $REV =="
  ./build/sampler_bench_old "$@"
  echo "== this tree =="
fi
./build/sampler_bench "$@"
