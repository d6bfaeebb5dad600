#!/usr/bin/env python3
"""The configuration sweep of the customer-service deployment report.

Starts `pagoda serve MODEL` once per configuration (defaults; prefix caching; fp8 KV cache;
--num-scheduler-steps 8; --tokenizer-pool-size 2; chunked prefill; all together), runs the
customer-service workload at each concurrency, and writes one Markdown table (+ JSON, SVG).
With a random-weight checkpoint the accuracy column has no meaning, so each configuration's
replies are compared with the default configuration's (token agreement, identical replies).
With --embed-base-url and a real model, real accuracy is reported as well.

  python3 bench/sweep_cs.py --pagoda build-cuda/pagoda --model /tmp/qwen14b-gptq \
      --concurrency 1,2,8,32,64,128 --out bench/results/sweep
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
import eval_cs  # noqa: E402
import bench_serve  # noqa: E402

BASE = ["--max-model-len", "12288", "--max-num-batched-tokens", "12288", "--block-size", "32",
        "--gpu-memory-utilization", "0.90"]
CONFIGS = [
    ("defaults", ["--no-enable-prefix-caching"]),
    ("prefix caching", ["--enable-prefix-caching"]),
    ("fp8 KV cache", ["--no-enable-prefix-caching", "--kv-cache-dtype", "fp8"]),
    ("scheduler steps 8", ["--no-enable-prefix-caching", "--num-scheduler-steps", "8"]),
    ("tokenizer pool 2", ["--no-enable-prefix-caching", "--tokenizer-pool-size", "2"]),
    ("chunked prefill", ["--no-enable-prefix-caching", "--enable-chunked-prefill"]),
    ("all together", ["--enable-prefix-caching", "--kv-cache-dtype", "fp8", "--num-scheduler-steps", "8",
                      "--tokenizer-pool-size", "2", "--enable-chunked-prefill"]),
]


def wait_healthy(port, proc, timeout=900):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(1)
    raise RuntimeError("server did not become healthy")


def stop(proc):
    """SIGTERM the server's process group (it drains), SIGKILL after 60 s; a dead one is fine."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pagoda", default=os.path.join(REPO, "build", "pagoda"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--served-model-name", default="model")
    ap.add_argument("--concurrency", default="1,2,8,32,64,128")
    ap.add_argument("--configs", default="", help="comma list of config indices (default all)")
    ap.add_argument("--limit", type=int, default=0, help="cases per level (0: all 40)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--min-requests", type=int, default=0,
                    help="each level runs max(K, concurrency) requests, cycling over the cases with distinct "
                         "prompts (eval_cs --num-requests); 0: the --limit cases once")
    ap.add_argument("--embed-base-url", default=None)
    ap.add_argument("--embed-model-dir", default=None,
                    help="a sentence-embedding model directory: served by `pagoda serve --device cpu` beside "
                         "the sweep, for reply cosine against the default configuration (and accuracy)")
    ap.add_argument("--baseline-dir", default=None,
                    help="where an earlier run's default-configuration results (c0-n<conc>.json) are, when "
                         "this run does not include configuration 0")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--extra", default="", help="extra serve flags")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "sweep"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    levels = [int(x) for x in args.concurrency.split(",")]
    configs = CONFIGS if not args.configs else [CONFIGS[int(i)] for i in args.configs.split(",")]
    rows = []
    emb = None
    if args.embed_model_dir:
        eport = args.port + 1
        emb = subprocess.Popen([args.pagoda, "serve", args.embed_model_dir, "--device", "cpu", "--port", str(eport),
                                "--served-model-name", "all-MiniLM-L6-v2", "--disable-log-requests"],
                               stdout=open(os.path.join(args.out, "embed-server.log"), "w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(eport, emb, timeout=120)
        args.embed_base_url = f"http://127.0.0.1:{eport}/v1"
    try:
        run_configs(args, configs, levels, rows)
    finally:
        if emb:
            stop(emb)



def run_configs(args, configs, levels, rows):
    for name, flags in configs:
        ci = [c[0] for c in CONFIGS].index(name)
        cmd = [args.pagoda, "serve", args.model, "--port", str(args.port), "--served-model-name",
               args.served_model_name, "--disable-log-requests"] + BASE + flags + args.extra.split()
        log = open(os.path.join(args.out, f"server-{ci}.log"), "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(args.port, proc)
            for conc in levels:
                tag = f"c{ci}-n{conc}"
                ev = ["--base-url", f"http://127.0.0.1:{args.port}/v1", "--model", args.served_model_name,
                      "--concurrency", str(conc), "--max-tokens", str(args.max_tokens), "--output-dir", args.out,
                      "--tag", tag]
                if args.limit:
                    ev += ["--limit", str(args.limit)]
                if args.min_requests:
                    ev += ["--num-requests", str(max(args.min_requests, conc))]
                if args.embed_base_url:
                    ev += ["--embed-base-url", args.embed_base_url]
                base = os.path.join(args.out, f"c0-n{conc}.json")
                if args.baseline_dir and not os.path.exists(base):
                    base = os.path.join(args.baseline_dir, f"c0-n{conc}.json")
                if name != CONFIGS[0][0] and os.path.exists(base):
                    ev += ["--compare-to", base]
                eval_cs.main(ev)
                s = json.load(open(os.path.join(args.out, f"{tag}.json")))["summary"]
                rows.append({"config": name, "flags": " ".join(flags), "concurrency": conc, **s})
                write_tables(args, rows)  # after every level: a cut-short run still leaves its table
        finally:
            stop(proc)


def write_tables(args, rows):
    json.dump(rows, open(os.path.join(args.out, "sweep.json"), "w"), indent=1)
    hdr = ("| configuration | concurrency | cases | mean latency (s) | p50 (s) | p90 (s) | JSON valid | accuracy | "
           "token agreement vs defaults | identical replies | reply cosine vs defaults |")
    lines = [hdr, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda k: (f"{r[k]:.3f}" if isinstance(r.get(k), float) else "-")
        lines.append(f"| {r['config']} | {r['concurrency']} | {r['cases']} | {f('latency_mean_s')} | "
                     f"{f('latency_p50_s')} | {f('latency_p90_s')} | {f('json_valid')} | {f('accuracy')} | "
                     f"{f('token_agreement_vs_baseline')} | {f('identical_vs_baseline')} | "
                     f"{f('cosine_vs_baseline')} |")
    open(os.path.join(args.out, "sweep.md"), "w").write("\n".join(lines) + "\n")
    series = {}
    for r in rows:
        series.setdefault(r["config"], []).append((r["concurrency"], r["latency_mean_s"]))
    open(os.path.join(args.out, "sweep-latency.svg"), "w").write(
        bench_serve.svg_lines("Mean response time vs concurrency", "concurrency", "seconds",
                              list(series.items()), logx=True))
    print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
