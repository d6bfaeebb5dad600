#!/usr/bin/env bash
# Engine-level decode throughput through `pagoda generate --input` (scheduler + backend, no
# HTTP) with the three overlap modes side by side in one run: synchronous steps, async
# scheduling (step n+1 launched before step n is collected, sampled tokens fed on the device)
# and --num-scheduler-steps 8 (up to 8 steps in flight).
#   bash bench/overlap.sh PAGODA OUTDIR [MODEL_DIR...]
# Default models: a random Qwen2.5-0.5B (bf16, written to /tmp/q05 by make-model, where host
# overhead per step matters most) and /tmp/q14-int4 when it exists. Prompts: 256 random token
# ids, 128 greedy new tokens, ignore_eos; batch 1 (4 requests in a row) and 64.
set -u
P=$1; OUT=$2; shift 2
mkdir -p "$OUT"
MODELS=("$@")
if [ ${#MODELS[@]} -eq 0 ]; then
  [ -f /tmp/q05/config.json ] || $P make-model --out /tmp/q05 --preset qwen2.5-0.5b > "$OUT/overlap-makemodel.log" 2>&1
  MODELS=(/tmp/q05)
  [ -f /tmp/q14-int4/config.json ] && MODELS+=(/tmp/q14-int4)
fi
python3 - <<'PY'
import json, random
r = random.Random(7)
for n in (4, 64):
    with open(f"/tmp/overlap-{n}.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "prompt_token_ids": [r.randrange(100, 500) for _ in range(256)],
                                "max_tokens": 128, "ignore_eos": True, "temperature": 0}) + "\n")
PY
for M in "${MODELS[@]}"; do
  for B in 1 64; do
    N=$([ $B = 1 ] && echo 4 || echo 64)
    for mode in sync async steps8; do
      case $mode in
        sync) F="--no-async-scheduling" ;;
        async) F="--async-scheduling" ;;
        steps8) F="--async-scheduling --num-scheduler-steps 8" ;;
      esac
      line=$(timeout 120 $P generate --model "$M" --input /tmp/overlap-$N.jsonl --output /tmp/overlap-out-$mode-$B.jsonl \
        --device ${DEVICE:-cuda} --max-num-seqs $B --max-model-len 1024 --max-num-batched-tokens 8192 $F 2>&1 | tee -a "$OUT/overlap.log" |
        grep "tokens in" | tail -1)
      echo "RESULT overlap model=$(basename "$M") batch=$B mode=$mode :: $line" | tee -a "$OUT/overlap.log"
    done
    # the three modes must produce the same greedy tokens
    python3 - "$B" <<'PY' | tee -a "$OUT/overlap.log"
import json, sys
b = sys.argv[1]
outs = {m: [json.loads(l) for l in open(f"/tmp/overlap-out-{m}-{b}.jsonl")] for m in ("sync", "async", "steps8")}
ids = {m: [o["outputs"][0]["token_ids"] for o in v if "outputs" in o] for m, v in outs.items()}
print(f"RESULT overlap batch={b} identical tokens async={ids['async'] == ids['sync']} steps8={ids['steps8'] == ids['sync']}"
      f" (requests {len(ids['sync'])})")
PY
  done
done
