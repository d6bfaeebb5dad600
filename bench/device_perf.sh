#!/usr/bin/env bash
# Decode performance pass on the GPU machine (issue 6), from the repository root, after the
# bundle from bench/device_bundle.sh sits in .devwork/cuda (as for bench/device_run.sh).
# Writes to $OUT: summary.txt, tests.log, ops.md (kernel microbenchmark, Markdown),
# lat-int4.log / lat-bf16.log (batch-1 latency, 512-token prompt, 64 new tokens) and
# results.jsonl. About 4-5 minutes.
set -u
cd "$(dirname "$0")/.."
D=.devwork/cuda
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; export OUT
BUDGET=330 bash bench/device_run.sh info tests
export LD_LIBRARY_PATH=$PWD/$D/lib:${LD_LIBRARY_PATH:-}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d $d ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
SITE=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
for d in "$SITE"/nvidia/cublas/lib "$SITE"/nvidia/cu13/lib "$SITE"/nvidia/cuda_runtime/lib; do [ -d "$d" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
echo "### ops: $D/bin/cuda_ops_bench 50" | tee -a $OUT/summary.txt
t0=$SECONDS
timeout 120 $D/bin/cuda_ops_bench 50 > $OUT/ops.md 2> $OUT/ops.err; echo "### ops rc=$? $((SECONDS - t0))s" | tee -a $OUT/summary.txt
cat $OUT/ops.md $OUT/ops.err
P=$D/bin/pagoda
for v in int4 bf16; do
  flag=; [ $v = int4 ] && flag=--gptq-int4
  echo "### lat-$v" | tee -a $OUT/summary.txt
  t0=$SECONDS
  timeout 120 $P bench latency --random qwen2.5-14b $flag --batch 1 --input-len 512 --output-len 64 --prefill-lens 512 --json $OUT/results.jsonl > $OUT/lat-$v.log 2>&1
  echo "### lat-$v rc=$? $((SECONDS - t0))s" | tee -a $OUT/summary.txt
  grep -E "RESULT|tok/s|ms|error|Error" $OUT/lat-$v.log | head -20 | tee -a $OUT/summary.txt
done
