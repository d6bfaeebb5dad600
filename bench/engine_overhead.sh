#!/usr/bin/env bash
# Engine CPU overhead per step with a no-op backend (see engine_overhead.c).
# Usage: bench/engine_overhead.sh   (after `make`); prints one line per configuration.
set -eu
cd "$(dirname "$0")/.."
make -s build/libpagoda.a
cc -O2 -std=c11 -D_GNU_SOURCE -Isrc -o build/engine_overhead bench/engine_overhead.c build/libpagoda.a -lm -lpthread
./build/engine_overhead
