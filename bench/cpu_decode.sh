#!/usr/bin/env bash
# CPU decode benchmark: tokens/s and weight bytes read per second for a random checkpoint with
# Qwen2.5-0.5B shapes (hidden 896, 24 layers, 14/2 heads, ffn 4864, vocab 151936, tied), in
# bf16 and GPTQ int4 (g128 sym), next to the machine's memory read bandwidth measured in the
# same run. Writes bench/results/cpu_decode-<date>.txt.
#   bash bench/cpu_decode.sh [threads] [decode_tokens]
set -eu
cd "$(dirname "$0")/.."
THREADS=${1:-$(nproc)}
N=${2:-32}
make -s -j2 build/libpagoda.a
CFLAGS="-O2 -std=c11 -D_GNU_SOURCE -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread"
cc $CFLAGS -o build/bench_cpu_decode bench/cpu_decode.c build/libpagoda.a $(pkg-config --libs jansson) -lopenblas -lm -lpthread
cc -O2 -mavx2 -pthread -o build/bench_membw bench/membw.c
for v in bf16 gptq-int4; do
  d=models/rand-qwen2.5-0.5b-$v
  [ -f $d/model.safetensors ] || python3 tools/make_random_model.py --out $d $([ $v = gptq-int4 ] && echo --gptq-int4)
done
out=bench/results/cpu_decode-$(date -u +%Y%m%d-%H%M).txt
{
  echo "# CPU decode benchmark"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p') x $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+dirty')"
  echo "command: bash bench/cpu_decode.sh $THREADS $N"
  echo "load: $(uptime | sed "s/.*load average/load average/") (the machine is shared; numbers vary with load)"
  echo "threads: $THREADS, prompt 16 tokens, $N decode steps (first decode step excluded as warm-up)"
  ./build/bench_membw 1
  ./build/bench_membw "$THREADS"
  for v in bf16 gptq-int4; do
    echo "== rand-qwen2.5-0.5b-$v"
    ./build/bench_cpu_decode models/rand-qwen2.5-0.5b-$v "$THREADS" 16 "$N"
  done
} | tee "$out"
echo "recorded in $out"
