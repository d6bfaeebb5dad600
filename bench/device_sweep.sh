#!/usr/bin/env bash
# On the GPU machine, from the repository root: the customer-service configuration sweep on a
# random-weight Qwen2.5-14B GPTQ-Int4 checkpoint (bench/sweep_cs.py).
# Prepare here first:  bash bench/device_sweep.sh --prepare   (bundles build-cuda/pagoda, its
# libraries and the Qwen tokenizer into .devwork/sweep, )
# (compressed into .devwork/sweepz, which the device call carries)
# Then on the device:  bash bench/device_sweep.sh [CONFIGS] [CONCURRENCY] [LIMIT] [MAX_TOKENS] [MIN_REQUESTS] [BASELINE_DIR]
# (MIN_REQUESTS: each level runs max(MIN_REQUESTS, concurrency) requests; BASELINE_DIR: an earlier
# run's unpacked sweep folder holding the default configuration's c0-n*.json, when CONFIGS lacks 0).
# The f16 copy of all-MiniLM-L6-v2 (bundled by --prepare from models/, see scripts/get-models.sh) is
# served on the CPU beside the sweep for reply cosine against the default configuration.
set -u
D=.devwork/sweep
if [ "${1:-}" = "--prepare" ]; then
  set -e
  make -j"$(nproc)" CUDA=1 all
  rm -rf $D && mkdir -p $D/bin $D/lib $D/tok
  cp build-cuda/pagoda $D/bin/
  ldd build-cuda/pagoda | awk '/=> \//{print $3}' | grep -vE 'libc\.so|libm\.so|libpthread|libdl|librt|ld-linux|libcuda|libcublas|libcudart|libstdc\+\+|libgcc_s' | xargs -r -I{} cp -L {} $D/lib/
  cp ../shared/models/qwen-tokenizer/tokenizer.json ../shared/models/qwen-tokenizer/qwen2.5-chat-template.jinja $D/tok/
  git rev-parse --short HEAD > $D/COMMIT
  strip $D/bin/pagoda
  python3 - <<'PY'
import numpy as np, os, shutil
from safetensors.numpy import load_file, save_file
src, dst = "models/all-MiniLM-L6-v2", ".devwork/sweep/minilm"
os.makedirs(dst, exist_ok=True)
t = load_file(src + "/model.safetensors")
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in t.items()}, dst + "/model.safetensors")
for f in os.listdir(src):
    if f != "model.safetensors":
        (shutil.copytree if os.path.isdir(src + "/" + f) else shutil.copy)(src + "/" + f, dst + "/" + f)
PY
  rm -rf .devwork/sweepz && mkdir -p .devwork/sweepz && tar -I 'xz -T2 -6' -cf .devwork/sweepz/sweep.tar.xz $D
  du -sh .devwork/sweepz; exit 0
fi
[ -d $D ] || tar xJf .devwork/sweepz/sweep.tar.xz
CONFIGS=${1:-0,1,2,6}; CONC=${2:-1,8,64}; LIMIT=${3:-16}; MAXTOK=${4:-64}; MINREQ=${5:-0}; BASE=${6:-}
export LD_LIBRARY_PATH=$PWD/$D/lib:${LD_LIBRARY_PATH:-}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d $d ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
M=/tmp/q14-int4
{ date -u; echo "commit $(cat $D/COMMIT)"; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; } | tee $OUT/sweep-info.txt
[ -f $M/config.json ] || timeout 120 $D/bin/pagoda make-model --out $M --preset qwen2.5-14b --gptq-int4 > $OUT/makemodel.log 2>&1
cp $D/tok/tokenizer.json $M/
python3 - "$M" "$D/tok/qwen2.5-chat-template.jinja" <<'PY'
import json, sys
m, t = sys.argv[1], sys.argv[2]
json.dump({"chat_template": open(t).read(), "bos_token": None, "eos_token": "<|im_end|>",
           "pad_token": "<|endoftext|>"}, open(m + "/tokenizer_config.json", "w"))
PY
timeout ${SWEEP_TIMEOUT:-540} python3 bench/sweep_cs.py --pagoda $D/bin/pagoda --model $M --configs "$CONFIGS" \
  --concurrency "$CONC" --limit "$LIMIT" --max-tokens "$MAXTOK" --min-requests "$MINREQ" \
  ${BASE:+--baseline-dir "$BASE"} $([ -d $D/minilm ] && echo --embed-model-dir $D/minilm) --out $OUT/sweep 2>&1 | tail -60
cp $OUT/sweep/sweep.md $OUT/sweep/sweep-latency.svg $OUT/ 2>/dev/null
tar czf $OUT/sweep.tgz -C $OUT sweep && rm -rf $OUT/sweep
