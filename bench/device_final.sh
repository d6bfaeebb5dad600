#!/usr/bin/env bash
# One device call for the end of a session with little GPU time: gate tests for the kernels
# that have not run on hardware yet (each failure switches its kernel off for what follows,
# through the env switches the backend reads), then the customer-service sweep
# (bench/device_sweep.sh) with what is left (after bench/overlap.sh on a random 0.5B), then the remaining GPU tests if time allows.
#   here:        bash bench/device_final.sh --prepare
#   GPU machine: TOTAL=<seconds> bash bench/device_final.sh CONFIGS CONC LIMIT MAXTOK MINREQ
set -u
if [ "${1:-}" = "--prepare" ]; then
  set -e
  bash bench/device_sweep.sh --prepare >/dev/null   # builds build-cuda, fills .devwork/sweep
  make -j2 CUDA=1 test-cuda-bins >/dev/null
  mkdir -p .devwork/sweep/tests
  for t in test_cuda_attn_prefill test_cuda_gptq_sampling test_cuda_feed test_cuda_model; do cp build-cuda/tests-cuda/$t .devwork/sweep/tests/; done
  strip .devwork/sweep/tests/*
  cp -L "$(ldconfig -p | awk '/libcmocka.so.0 /{print $NF; exit}')" .devwork/sweep/lib/
  # the embedding model does not fit the device tool's 64 MiB with the rest: left out here
  rm -rf .devwork/finalz && mkdir -p .devwork/finalz && tar -I 'xz -T2 -6' --exclude=.devwork/sweep/minilm -cf .devwork/finalz/final.tar.xz .devwork/sweep
  du -sh .devwork/finalz; exit 0
fi
T0=$SECONDS; TOTAL=${TOTAL:-540}
D=.devwork/sweep
[ -d $D ] || tar xJf .devwork/finalz/final.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
export LD_LIBRARY_PATH=$PWD/$D/lib:${LD_LIBRARY_PATH:-}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d $d ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
gate() { # test binary, env switch that turns its kernel off
  local t0=$SECONDS
  timeout 90 env CMOCKA_MESSAGE_OUTPUT=stdout $D/tests/$1 > $OUT/$1.log 2>&1; local rc=$?
  echo "### $1 rc=$rc $((SECONDS - t0))s $(grep -E '^\[  (PASSED|FAILED)' $OUT/$1.log | tr '\n' ' ')" | tee -a $OUT/summary.txt
  if [ $rc != 0 ] && [ -n "$2" ]; then export "$2"; echo "### $1 failed: $2 for the sweep" | tee -a $OUT/summary.txt; fi
}
gate test_cuda_attn_prefill ""
gate test_cuda_gptq_sampling ""
gate test_cuda_feed ""
t0=$SECONDS
timeout 150 bash bench/overlap.sh $D/bin/pagoda $OUT > /dev/null 2>&1
echo "### overlap $((SECONDS - t0))s" | tee -a $OUT/summary.txt; grep RESULT $OUT/overlap.log | tee -a $OUT/summary.txt
left=$((TOTAL - (SECONDS - T0) - 45))
echo "### sweep with ${left}s" | tee -a $OUT/summary.txt
SWEEP_TIMEOUT=$left bash bench/device_sweep.sh "$@" 2>&1 | tail -50 | tee -a $OUT/summary.txt
for t in test_cuda_model; do
  [ $((SECONDS - T0)) -lt $((TOTAL - 40)) ] && gate $t ""
done
echo "### total $((SECONDS - T0))s" | tee -a $OUT/summary.txt
