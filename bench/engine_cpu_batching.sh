#!/usr/bin/env bash
# Continuous batching and prefix caching on the CPU backend through `pagoda generate --input`.
# A random-weight Qwen2 (hidden 256, 4 layers, Qwen2.5 vocabulary and tokenizer) is written by
# tools/make_random_model.py; outputs are compared between configurations (the token ids must
# be identical; only cached_tokens may differ).
#   bench/engine_cpu_batching.sh [OUTDIR]   (needs build/pagoda with generate, numpy)
set -eu
cd "$(dirname "$0")/.."
D=${1:-/tmp/pagoda-bench-engine}
mkdir -p "$D"
M=$D/qwen256
[ -f "$M/model.safetensors" ] || python3 tools/make_random_model.py --out "$M" --hidden 256 --layers 4 \
    --heads 4 --kv-heads 2 --intermediate 768
cp ../shared/models/qwen-tokenizer/tokenizer.json ../shared/models/qwen-tokenizer/tokenizer_config.json "$M/"
python3 - "$D" <<'PY'
import json, random, sys
d = sys.argv[1]
random.seed(0)
words = "the a customer order refund delivery late broken package support account password reset billing invoice help please thank you".split()
with open(d + "/plain.jsonl", "w") as f:  # 32 distinct prompts (no shared prefix)
    for i in range(32):
        n = random.randint(20, 120)
        f.write(json.dumps({"id": i, "prompt": " ".join(random.choice(words) for _ in range(n)),
                            "max_tokens": 32, "temperature": 0, "ignore_eos": True}) + "\n")
sysp = open("../shared/datasets/customer-service/system_prompt_en.txt").read()
cases = [json.loads(l) for l in open("../shared/datasets/customer-service/cases.jsonl")][:32]
with open(d + "/cs.jsonl", "w") as f:  # 32 chats sharing the customer-service system prompt
    for c in cases:
        f.write(json.dumps({"id": c["id"], "messages": [{"role": "system", "content": sysp}] + c["messages"],
                            "max_tokens": 32, "temperature": 0, "ignore_eos": True}, ensure_ascii=False) + "\n")
PY
G="build/pagoda generate --model $M --threads 2 --max-model-len 2048 --kv-cache-memory 512MiB"
for s in 1 32; do echo "plain, --max-num-seqs $s:"; $G --input $D/plain.jsonl --output $D/plain_$s.jsonl --max-num-seqs $s 2>&1 | tail -1; done
cmp $D/plain_1.jsonl $D/plain_32.jsonl && echo "plain: identical outputs"
for p in enable no-enable; do echo "customer-service chats, --$p-prefix-caching:"; $G --input $D/cs.jsonl --output $D/cs_$p.jsonl --$p-prefix-caching 2>&1 | tail -1; done
python3 - "$D" <<'PY'
import json, sys
d = sys.argv[1]
a = [json.loads(l)["outputs"][0]["token_ids"] for l in open(d + "/cs_enable.jsonl")]
b = [json.loads(l)["outputs"][0]["token_ids"] for l in open(d + "/cs_no-enable.jsonl")]
print("cs: token ids identical with and without prefix caching:", a == b)
PY
