#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: bench/device_run.sh PHASE...
# Phases: info tests tests2 sass timeline tlenv layers abenv ceilings makemodel lat-int4 lat-int4-async lat-bf16 thr-int4 thr-bf16 hf fp8 ab ab1 ops attnpf overlap
# lat-int4: batch-1 int4 latency, then again at 1k prefill with --async-scheduling (one decode
# step in flight, as `pagoda serve --async-scheduling`); lat-int4-async: only the latter.
# ab1: batch-1 int4 and bf16 latency (1k and 4k prefill), base then new. ops: the kernel
# microbenchmark (new, then bin/cuda_ops_bench-base when bundled). attnpf: prefill attention
# ms and TFLOP/s against the cuBLAS bf16 GEMM rate (tests/cuda/bench_attn_prefill).
# ab: the same latency runs with bin/pagoda-base (an older build bundled beside the new one,
# see device_bundle.sh) and bin/pagoda, one after the other in this session.
# Logs go to $OUT (one file per phase) and a summary to stdout.
set -u
D=.devwork/cuda
export LD_LIBRARY_PATH=$PWD/$D/lib:${LD_LIBRARY_PATH:-}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d $d ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
PY=$(command -v python3)
SITE=$($PY -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
for d in "$SITE"/nvidia/cublas/lib "$SITE"/nvidia/cu13/lib "$SITE"/nvidia/cuda_runtime/lib; do [ -d "$d" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
P=$D/bin/pagoda
run() { # name timeout cmd...
  local name=$1 to=$2; shift 2
  echo "### $name: $*" | tee -a $OUT/summary.txt
  local t0=$SECONDS
  timeout $to "$@" >> $OUT/$name.log 2>&1; local rc=$?
  echo "### $name rc=$rc $((SECONDS - t0))s" | tee -a $OUT/summary.txt
  grep -E "RESULT|passed|FAILED|rel err|tok/s|ms|refusal|KV|wrote|error|Error" $OUT/$name.log | head -${TAILN:-60} | tee -a $OUT/summary.txt
}
for ph in "$@"; do [ $SECONDS -gt ${BUDGET:-99999} ] && { echo "### skipped $ph (time)" | tee -a $OUT/summary.txt; continue; }; case $ph in
  info) { date -u; cat $D/COMMIT; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; ldd $P | grep -E "cublas|cudart|not found"; } 2>&1 | tee -a $OUT/summary.txt ;;
  tests) for t in $D/bin/test_cuda_*; do run tests 200 env CMOCKA_MESSAGE_OUTPUT=stdout $t; done ;;
  ceilings) run ceilings 120 $P bench ceilings --json $OUT/results.jsonl ;;
  makemodel) run makemodel 90 $P make-model --out /tmp/q14-int4 --preset qwen2.5-14b --gptq-int4 && ls -la /tmp/q14-int4 >> $OUT/makemodel.log && du -sh /tmp/q14-int4 | tee -a $OUT/summary.txt ;;
  lat-int4) run lat-int4 150 $P bench latency --random qwen2.5-14b --gptq-int4 --ceilings --batch 1 --output-len 64 --prefill-lens 1024,4096 --json $OUT/results.jsonl
      run lat-int4 150 $P bench latency --random qwen2.5-14b --gptq-int4 --batch 1 --output-len 64 --prefill-lens 1024 --async-scheduling --json $OUT/results.jsonl ;;
  lat-int4-async) run lat-int4-async 150 $P bench latency --random qwen2.5-14b --gptq-int4 --batch 1 --output-len 64 --prefill-lens 1024 --async-scheduling --json $OUT/results.jsonl ;;
  lat-bf16) run lat-bf16 150 $P bench latency --random qwen2.5-14b --ceilings --batch 1 --output-len 64 --prefill-lens 1024,4096 --json $OUT/results.jsonl ;;
  thr-int4) run thr-int4 200 $P bench throughput --random qwen2.5-14b --gptq-int4 --batch 1,8,32,64,128,256 --input-len 512 --output-len 150 --json $OUT/results.jsonl ;;
  thr-bf16) run thr-bf16 200 $P bench throughput --random qwen2.5-14b --batch 1,8,32,64,128,256 --input-len 512 --output-len 150 --json $OUT/results.jsonl ;;
  hfcmp-int4) run hfcmp-int4 300 $P bench throughput --random qwen2.5-14b --gptq-int4 --batch 1,64 --input-len 512 --output-len 150 --json $OUT/results.jsonl ;;
  hfcmp-bf16) run hfcmp-bf16 300 $P bench throughput --random qwen2.5-14b --batch 1,64 --input-len 512 --output-len 150 --json $OUT/results.jsonl ;;
  thr-int4-small) run thr-int4-small 120 $P bench throughput --random qwen2.5-14b --gptq-int4 --batch 1,2,3,8 --input-len 512 --output-len 64 --json $OUT/results.jsonl ;;
  thr-small) run thr-small 150 $P bench throughput --random qwen2.5-14b --batch 1,8 --input-len 512 --output-len 150 --json $OUT/results.jsonl ;;
  fp8) for kv in bf16 fp8; do run fp8 150 $P bench latency --random qwen2.5-14b --gptq-int4 --kv-cache-dtype $kv --batch 1,32 --input-len 4096 --output-len 32 --prefill-lens 4096 --json $OUT/results.jsonl; done ;;
  ab) for bin in pagoda-base pagoda; do
        [ -x $D/bin/$bin ] || continue
        B=$D/bin/$bin
        run ab-$bin 150 $B bench latency --random qwen2.5-14b --gptq-int4 --batch 1 --output-len 64 --prefill-lens 1024 --json $OUT/ab-$bin.jsonl
        run ab-$bin 150 $B bench latency --random qwen2.5-14b --batch 1 --output-len 64 --prefill-lens 1024 --json $OUT/ab-$bin.jsonl
        run ab-$bin 150 $B bench latency --random qwen2.5-14b --gptq-int4 --batch 32 --input-len 4096 --output-len 32 --prefill-lens 4096 --json $OUT/ab-$bin.jsonl
        run ab-$bin 150 $B bench latency --random qwen2.5-14b --gptq-int4 --kv-cache-dtype fp8 --batch 32 --input-len 4096 --output-len 32 --prefill-lens 4096 --json $OUT/ab-$bin.jsonl
      done ;;
  ab1) for bin in pagoda-base pagoda; do
        [ -x $D/bin/$bin ] || continue
        B=$D/bin/$bin
        run ab1-$bin 150 $B bench latency --random qwen2.5-14b --gptq-int4 --batch 1 --output-len 64 --prefill-lens 1024,4096 --json $OUT/ab1-$bin.jsonl
        run ab1-$bin 150 $B bench latency --random qwen2.5-14b --batch 1 --output-len 64 --prefill-lens 1024,4096 --json $OUT/ab1-$bin.jsonl
      done ;;
  layers) # only the layer-graph variants and per-op prices (cuda_ops_bench layers)
      timeout 200 $D/bin/cuda_ops_bench layers > $OUT/layers.md 2>&1; echo "### cuda_ops_bench layers rc=$?" | tee -a $OUT/summary.txt
      cat $OUT/layers.md | tee -a $OUT/summary.txt ;;
  ops) for bin in cuda_ops_bench cuda_ops_bench-base; do
        [ -x $D/bin/$bin ] || continue
        echo "### $bin" | tee -a $OUT/summary.txt
        timeout 150 $D/bin/$bin ${OPS_REPS:-30} > $OUT/$bin.md 2> $OUT/$bin.err; echo "### $bin rc=$?" | tee -a $OUT/summary.txt
      done ;;
  tests2) for r in 1 2; do run tests2 200 env CMOCKA_MESSAGE_OUTPUT=stdout $D/bin/test_cuda_model; done ;;
  initcheck) run initcheck 200 env CMOCKA_MESSAGE_OUTPUT=stdout CMOCKA_FILTER='test_vs_cpu*' compute-sanitizer --tool initcheck $D/bin/test_cuda_model ;;
  thr-ab) for bin in pagoda-base pagoda; do
        [ -x $D/bin/$bin ] || continue
        run thr-ab-$bin 200 $D/bin/$bin bench throughput --random qwen2.5-14b --gptq-int4 --batch 1,8,16,64 --input-len 512 --output-len 128 --json $OUT/thr-ab-$bin.jsonl
      done ;;
  lat-nopdl) run lat-nopdl 150 env PAGODA_PDL=0 $P bench latency --random qwen2.5-14b --gptq-int4 --batch 1 --output-len 64 --prefill-lens 1024 --json $OUT/lat-nopdl.jsonl ;;
  attnpf) run attnpf 150 env CMOCKA_MESSAGE_OUTPUT=stdout $D/bin/bench_attn_prefill ;;
  overlap) run overlap 400 bash bench/overlap.sh $P $OUT ;;
  abenv) # batch-1 int4 latency under A/B knobs (docs/cuda.md), e.g. ABENV="X=0 PAGODA_ATTN_MIN_KEYS=128";
      # with bin/pagoda-base bundled, it runs first and last (no knobs) around them
      bins=""; [ -x $D/bin/pagoda-base ] && bins="base"
      for e in $bins ${ABENV:-"X=0" "PAGODA_ATTN_MIN_KEYS=128" "X=0"} $bins; do
        b=$P; [ "$e" = base ] && b=$D/bin/pagoda-base && e=X=0
        run abenv 150 env $e $b bench latency --random qwen2.5-14b --gptq-int4 --batch 1 --output-len 64 --prefill-lens 1024 --json $OUT/abenv.jsonl
      done ;;
  timeline) # when each kernel of the 6-layer decode graph ran (CUPTI), batch 1 and 8, unfused and fused layer
      for f in unfused fused; do for m in 1 8; do
        timeout 120 $D/bin/cuda_ops_bench timeline $m $f > $OUT/timeline-$f-m$m.md 2>&1
        echo "### timeline $f M=$m rc=$?" | tee -a $OUT/summary.txt; cat $OUT/timeline-$f-m$m.md | tee -a $OUT/summary.txt
      done; done ;;
  tlenv) # the 6-kernel fused layer's timeline at batch 1 and 8 under each TLENV knob (e.g. TLENV="X=0 PAGODA_ATTN_TC=0")
      for e in ${TLENV:-X=0}; do for m in 1 8; do
        timeout 120 env $e $D/bin/cuda_ops_bench timeline $m fused-rope > $OUT/tl-$e-m$m.md 2>&1
        echo "### timeline fused-rope M=$m $e rc=$?" | tee -a $OUT/summary.txt; head -${TLN:-40} $OUT/tl-$e-m$m.md | tee -a $OUT/summary.txt
      done; done ;;
  sass) # instruction mix of the decode kernels (cuobjdump from the device's toolkit)
      CO=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
      [ -n "$CO" ] && $CO -sass -arch sm_90a $P > $OUT/sass-all.txt 2>&1
      python3 bench/sass_stats.py $OUT/sass-all.txt $OUT/sass-kern.txt > $OUT/sass.txt 2>&1; head -60 $OUT/sass.txt | tee -a $OUT/summary.txt; rm -f $OUT/sass-all.txt ;;
  hf) run hf 200 env PYTHONUNBUFFERED=1 $PY $D/hf_baseline.py --json $OUT/results.jsonl ;;
esac; done
