#!/usr/bin/env bash
# Chat template benchmark (issue 3 item 5): Pagoda's Jinja interpreter vs Python jinja2 (as
# transformers configures it), parse and render CPU time for the Qwen2.5, Qwen3, Llama 3.1 and
# SmolLM2 templates over conversations of 10, 100 and 1000 messages (Chinese customer-service
# text, tool definitions and calls). Both run in the same invocation, timed in thread CPU time.
#   bash bench/chat_template_bench.sh [REPEATS]
# Writes bench/results/chat-template-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
make -s -j2 build/libpagoda.a
mkdir -p build/bench bench/results
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc bench/chat_template_bench.c build/libpagoda.a \
   $(pkg-config --libs jansson libutf8proc) -lm -lpthread -o build/bench/chat_template_bench
out=bench/results/chat-template-$(date -u +%Y%m%d-%H%M%S).md
python3 - "$N" "$out" <<'PY'
import json, os, subprocess, sys, time, datetime, platform
sys.path.insert(0, "tests/py")
import test_chat_template as T
n, out = int(sys.argv[1]), sys.argv[2]
with open("tests/fixtures/chat/messages.json", encoding="utf-8") as f:
    sets = {m["name"]: m for m in json.load(f)}
flow = sets["tool_call_flow"]
turn = sets["chinese_customer_service"]["messages"][1:]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
rows = []
for name in ("qwen2.5", "qwen3", "llama3.1", "smollm2"):
    src, bos, eos = T.TEMPLATES[name]
    for n_msgs in (10, 100, 1000):
        msgs = [flow["messages"][0]] + [turn[i % len(turn)] for i in range(n_msgs - 1)]
        if msgs[-1]["role"] != "user":
            msgs.append(turn[0])
        case = {"messages": msgs, "tools": flow["tools"], "bos_token": bos, "eos_token": eos}
        with open("build/bench/chat_case.json", "w", encoding="utf-8") as f:
            json.dump(case, f, ensure_ascii=False)
        with open("build/bench/chat_tmpl.jinja", "w", encoding="utf-8") as f:
            f.write(src)
        r = json.loads(subprocess.run(["build/bench/chat_template_bench", "build/bench/chat_tmpl.jinja",
                                       "build/bench/chat_case.json", str(n)], capture_output=True,
                                      text=True, check=True).stdout)
        tp, tr = [], []
        for _ in range(n):
            t0 = time.thread_time()
            t = T.hf_env().from_string(src)
            t1 = time.thread_time()
            t.render(messages=msgs, tools=flow["tools"], documents=None, add_generation_prompt=True,
                     **({"bos_token": bos} if bos else {}), eos_token=eos)
            tp.append(t1 - t0)
            tr.append(time.thread_time() - t1)
        tp.sort(), tr.sort()
        rows.append((name, len(msgs), r["out_bytes"], r["parse_us"], r["render_us"], tp[n // 2] * 1e6, tr[n // 2] * 1e6))
with open(out, "w") as f:
    f.write(f"# Chat template benchmark\n\n- date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC\n")
    f.write(f"- machine: {cpu}, {os.cpu_count()} cores visible (shared host)\n- commit: {commit}\n")
    f.write(f"- command: `bash bench/chat_template_bench.sh {n}`\n")
    f.write("- times: medians of thread CPU time over the repeats; parse = template source to AST "
            "(jinja2: compile to Python), render = one render with add_generation_prompt\n\n")
    f.write("| template | messages | output bytes | pagoda parse us | pagoda render us | jinja2 compile us | jinja2 render us | render speedup |\n")
    f.write("|---|---:|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        f.write(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.0f} | {r[6] / max(r[4], 1):.1f}x |\n")
print(open(out).read())
PY
