#!/usr/bin/env python3
"""Guided (structured-output) vs unconstrained generation throughput through `pagoda serve`.

Issue 7 asks that guided requests keep >= 95% of unconstrained throughput, at batch 1 and 64.
This starts `pagoda serve` on a random-weight Qwen2 (with the real Qwen tokenizer, vocab
151936) on the CPU, sends the same chat requests with and without `guided_json` (the
customer-service extraction schema) at concurrency 1 and 64, and reports output tokens/s.
Guided outputs end when the JSON is complete, so throughput (tokens/s), not wall time, is
compared. Temperature 1.0 so that outputs vary.

  python3 bench/guided_throughput.py [--layers 4 --hidden 512] [--out bench/results/guided-DATE.md]
"""
import argparse
import concurrent.futures as cf
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
import server_util  # noqa: E402


def one(port, body):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = json.loads(c.getresponse().read())
    c.close()
    return r, time.perf_counter() - t0


def run(port, bodies, conc):
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=conc) as ex:
        res = list(ex.map(lambda b: one(port, b), bodies))
    wall = time.perf_counter() - t0
    toks = sum(r["usage"]["completion_tokens"] for r, _ in res)
    valid = 0
    for r, _ in res:
        try:
            json.loads(r["choices"][0]["message"]["content"])
            valid += 1
        except (ValueError, KeyError, TypeError):
            pass
    return toks / wall, toks, wall, valid


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  time.strftime("guided-throughput-%Y-%m-%d.md")))
    args = ap.parse_args()
    model = tempfile.mkdtemp(prefix="pagoda-guided-")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_model.py"), "--out", model,
                    "--hidden", str(args.hidden), "--layers", str(args.layers), "--heads", "8", "--kv-heads", "2",
                    "--intermediate", str(args.hidden * 3)], check=True, capture_output=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        subprocess.run(["cp", os.path.join(server_util.QWEN_TOKENIZER, f), model], check=True)
    schema = json.load(open(os.path.join(ROOT, "data", "customer-service", "extraction.schema.json")))
    cases = [json.loads(l) for l in open(os.path.join(ROOT, "data", "customer-service", "cases.jsonl"))]
    port = server_util.free_port()
    log = open(os.path.join(model, "serve.log"), "w")
    proc = subprocess.Popen([server_util.BIN, "serve", model, "--port", str(port), "--max-model-len", "2048",
                             "--served-model-name", "m"], stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            except Exception:
                time.sleep(0.5)
        for conc, n in ((1, 8), (64, 64)):
            base = [{"model": "m", "max_tokens": args.max_tokens, "temperature": 1.0, "seed": i,
                     "messages": [{"role": "user", "content": "Extract the complaint as JSON: " +
                                   cases[i % len(cases)]["messages"][-1]["content"][:200]}]} for i in range(n)]
            guided = [dict(b, guided_json=schema) for b in base]
            run(port, base[:2], 2)  # warm-up (and grammar compile into the cache)
            run(port, guided[:2], 2)
            u = run(port, base, conc)
            g = run(port, guided, conc)
            rows.append((conc, n, u, g))
            print(f"concurrency {conc}: unconstrained {u[0]:.1f} tok/s ({u[1]} tokens), guided {g[0]:.1f} tok/s "
                  f"({g[1]} tokens, {g[3]}/{n} valid JSON): {100 * g[0] / u[0]:.1f}%", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    load = open("/proc/loadavg").read().split()[:3]
    lines = [f"# Guided vs unconstrained throughput, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"- commit {commit}; machine: {os.cpu_count()}-core dev VM, CPU backend; load average {' '.join(load)}",
             f"- command: `python3 bench/guided_throughput.py --layers {args.layers} --hidden {args.hidden} "
             f"--max-tokens {args.max_tokens}`",
             f"- model: random Qwen2, {args.layers} layers, hidden {args.hidden}, Qwen tokenizer (vocab 151936); "
             "guided = `guided_json` with data/customer-service/extraction.schema.json; temperature 1.0", "",
             "| concurrency | requests | unconstrained tok/s | guided tok/s | guided / unconstrained | valid JSON |",
             "|---|---|---|---|---|---|"]
    for conc, n, u, g in rows:
        lines.append(f"| {conc} | {n} | {u[0]:.1f} | {g[0]:.1f} | {100 * g[0] / u[0]:.1f}% | {g[3]}/{n} |")
    open(args.out, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
