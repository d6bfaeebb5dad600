#!/usr/bin/env python3
"""pagoda bench serve: a load generator for any OpenAI-compatible endpoint.

Reports the metrics vLLM's `bench serve` reports (request throughput, output and total
tokens/s, TTFT, TPOT excluding the first token, ITL, end-to-end latency: mean, median,
p90, p99; failed requests) and writes JSON (with raw per-request records), a Markdown
summary and SVG plots. Standard library only; a client tool, never in the serving path.

Datasets:
  random            --random-input-len, --random-output-len, --random-prefix-len (shared
                    prefix), token ids drawn from --random-vocab; sent as /v1/completions
                    with a prompt of token ids and ignore_eos
  jsonl             --dataset-path: lines {"prompt": str} or {"messages": [...]} (+ optional max_tokens)
  customer-service  the repo's data/customer-service cases as chat requests
Sweep: --max-concurrency 1,8,32 runs each level in turn and adds throughput/TPOT plots.
"""
import argparse
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import http.client
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- datasets

def cs_messages(case, system_prompts):
    return [{"role": "system", "content": system_prompts[case["lang"]]}] + case["messages"]


def load_cs(path):
    cases = [json.loads(l) for l in open(os.path.join(path, "cases.jsonl"), encoding="utf-8") if l.strip()]
    sp = {lang: open(os.path.join(path, f"system_prompt_{lang}.txt"), encoding="utf-8").read()
          for lang in ("zh", "en")}
    return cases, sp


def make_requests(args, rng):
    reqs = []
    if args.dataset == "random":
        prefix = [rng.randrange(10, args.random_vocab) for _ in range(args.random_prefix_len)]
        for _ in range(args.num_prompts):
            ids = prefix + [rng.randrange(10, args.random_vocab) for _ in range(args.random_input_len)]
            reqs.append({"kind": "completions", "body": {
                "prompt": ids, "max_tokens": args.random_output_len, "ignore_eos": True,
                "temperature": 0.0}})
    elif args.dataset == "jsonl":
        lines = [json.loads(l) for l in open(args.dataset_path, encoding="utf-8") if l.strip()]
        for i in range(args.num_prompts):
            d = lines[i % len(lines)]
            mt = d.get("max_tokens", args.output_len)
            if "messages" in d:
                reqs.append({"kind": "chat", "body": {"messages": d["messages"], "max_tokens": mt,
                                                      "temperature": 0.0}})
            else:
                reqs.append({"kind": "completions", "body": {"prompt": d["prompt"], "max_tokens": mt,
                                                             "temperature": 0.0}})
    elif args.dataset == "customer-service":
        cases, sp = load_cs(args.dataset_path or os.path.join(REPO, "data", "customer-service"))
        for i in range(args.num_prompts):
            c = cases[i % len(cases)]
            reqs.append({"kind": "chat", "body": {"messages": cs_messages(c, sp),
                                                  "max_tokens": args.output_len, "temperature": 0.0}})
    else:
        sys.exit(f"unknown dataset {args.dataset}")
    return reqs


# ----------------------------------------------------------------------------- client

def stream_request(base, api_key, model, req, timeout):
    """Sends one streaming request; returns a record with per-token arrival times."""
    u = urllib.parse.urlparse(base)
    path = u.path.rstrip("/") + ("/chat/completions" if req["kind"] == "chat" else "/completions")
    body = dict(req["body"])
    body.update({"model": model, "stream": True, "stream_options": {"include_usage": True}})
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    rec = {"ok": False, "error": "", "ttft": None, "itl": [], "latency": None,
           "prompt_tokens": 0, "output_tokens": 0, "text": ""}
    t0 = time.perf_counter()
    last = None
    n_chunks = 0
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
        conn.request("POST", path, body=data, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            rec["error"] = f"HTTP {resp.status}: {resp.read()[:300].decode(errors='replace')}"
            return rec
        text = []
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            ev = json.loads(payload)
            now = time.perf_counter()
            if ev.get("usage"):
                rec["prompt_tokens"] = ev["usage"].get("prompt_tokens", 0)
                rec["output_tokens"] = ev["usage"].get("completion_tokens", 0)
            for ch in ev.get("choices", []):
                piece = ch.get("delta", {}).get("content") if "delta" in ch else ch.get("text")
                if piece:
                    text.append(piece)
                    n_chunks += 1
                    if rec["ttft"] is None:
                        rec["ttft"] = now - t0
                    else:
                        rec["itl"].append(now - last)
                    last = now
        rec["latency"] = time.perf_counter() - t0
        rec["text"] = "".join(text)
        if rec["output_tokens"] == 0:
            rec["output_tokens"] = n_chunks
        rec["ok"] = rec["ttft"] is not None or rec["output_tokens"] == 0
        if not rec["ok"]:
            rec["error"] = "no tokens received"
        conn.close()
    except Exception as e:  # network errors count as failed requests
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


def run_level(args, reqs, concurrency, rng):
    """Runs all requests with at most `concurrency` in flight and Poisson arrivals."""
    records = [None] * len(reqs)
    sem = threading.Semaphore(concurrency if concurrency > 0 else len(reqs))
    threads = []

    def worker(i):
        try:
            records[i] = stream_request(args.base_url, args.api_key, args.model, reqs[i], args.timeout)
        finally:
            sem.release()

    t_start = time.perf_counter()
    for i in range(len(reqs)):
        if args.request_rate != math.inf and i > 0:
            time.sleep(rng.expovariate(args.request_rate))
        sem.acquire()
        th = threading.Thread(target=worker, args=(i,), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    duration = time.perf_counter() - t_start
    return records, duration


# ----------------------------------------------------------------------------- metrics

def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    f, c = math.floor(k), math.ceil(k)
    return xs[f] if f == c else xs[f] + (xs[c] - xs[f]) * (k - f)


def summarize(records, duration, concurrency):
    ok = [r for r in records if r["ok"]]
    out_tok = sum(r["output_tokens"] for r in ok)
    in_tok = sum(r["prompt_tokens"] for r in ok)
    ttft = [r["ttft"] * 1e3 for r in ok if r["ttft"] is not None]
    tpot = [(r["latency"] - r["ttft"]) / (r["output_tokens"] - 1) * 1e3
            for r in ok if r["ttft"] is not None and r["output_tokens"] > 1]
    itl = [x * 1e3 for r in ok for x in r["itl"]]
    e2e = [r["latency"] * 1e3 for r in ok if r["latency"] is not None]
    s = {"max_concurrency": concurrency, "completed": len(ok), "failed": len(records) - len(ok),
         "duration_s": duration, "request_throughput": len(ok) / duration,
         "output_throughput": out_tok / duration, "total_token_throughput": (in_tok + out_tok) / duration,
         "total_input_tokens": in_tok, "total_output_tokens": out_tok}
    for name, xs in (("ttft_ms", ttft), ("tpot_ms", tpot), ("itl_ms", itl), ("e2el_ms", e2e)):
        s[name] = {"mean": statistics.fmean(xs) if xs else float("nan"), "median": pct(xs, 50),
                   "p90": pct(xs, 90), "p99": pct(xs, 99)}
    errors = [r["error"] for r in records if not r["ok"]]
    s["errors_sample"] = errors[:5]
    return s


def markdown(summaries, args):
    lines = [f"# pagoda bench serve: {args.dataset} on {args.base_url} ({args.model})", "",
             "| conc | ok | fail | req/s | out tok/s | total tok/s | TTFT mean/p99 ms | TPOT mean/p99 ms | ITL mean/p99 ms | E2E mean/p99 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        f = lambda k: f"{s[k]['mean']:.1f} / {s[k]['p99']:.1f}"
        lines.append(f"| {s['max_concurrency']} | {s['completed']} | {s['failed']} | {s['request_throughput']:.2f} | "
                     f"{s['output_throughput']:.1f} | {s['total_token_throughput']:.1f} | {f('ttft_ms')} | "
                     f"{f('tpot_ms')} | {f('itl_ms')} | {f('e2el_ms')} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- SVG plots

def svg_lines(title, xlabel, ylabel, series, logx=False, w=640, h=400):
    """series: [(name, [(x, y), ...])]. A small self-contained line chart."""
    pts = [p for _, s in series for p in s if not (math.isnan(p[1]) or math.isinf(p[1]))]
    if not pts:
        return f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}'><text x='20' y='40'>{title}: no data</text></svg>"
    tx = (lambda x: math.log10(max(x, 1e-9))) if logx else (lambda x: x)
    xs, ys = [tx(p[0]) for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, max(ys) * 1.05 or 1.0
    if x1 == x0:
        x1 = x0 + 1
    L, R, T, B = 70, 20, 40, 50
    sx = lambda x: L + (tx(x) - x0) / (x1 - x0) * (w - L - R)
    sy = lambda y: h - B - (y - y0) / (y1 - y0) * (h - T - B)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>",
           f"<rect width='{w}' height='{h}' fill='white'/>",
           f"<text x='{w/2}' y='22' text-anchor='middle' font-size='15'>{title}</text>",
           f"<line x1='{L}' y1='{h-B}' x2='{w-R}' y2='{h-B}' stroke='black'/>",
           f"<line x1='{L}' y1='{T}' x2='{L}' y2='{h-B}' stroke='black'/>",
           f"<text x='{w/2}' y='{h-12}' text-anchor='middle'>{xlabel}</text>",
           f"<text x='16' y='{h/2}' text-anchor='middle' transform='rotate(-90 16 {h/2})'>{ylabel}</text>"]
    for i in range(6):
        yv = y0 + (y1 - y0) * i / 5
        out.append(f"<text x='{L-6}' y='{sy(yv)+4}' text-anchor='end'>{yv:.3g}</text>")
        out.append(f"<line x1='{L}' y1='{sy(yv)}' x2='{w-R}' y2='{sy(yv)}' stroke='#ddd'/>")
    xt = sorted({p[0] for p in pts})
    if len(xt) > 8:
        xt = [xt[int(i * (len(xt) - 1) / 7)] for i in range(8)]
    for xv in xt:
        out.append(f"<text x='{sx(xv)}' y='{h-B+16}' text-anchor='middle'>{xv:.3g}</text>")
    for k, (name, s) in enumerate(series):
        c = colors[k % len(colors)]
        s = [p for p in s if not (math.isnan(p[1]) or math.isinf(p[1]))]
        if not s:
            continue
        d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(s))
        out.append(f"<path d='{d}' fill='none' stroke='{c}' stroke-width='2'/>")
        if len(s) < 30:
            out += [f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='{c}'/>" for x, y in s]
        out.append(f"<text x='{w-R-150}' y='{T+16*k+10}' fill='{c}'>{name}</text>")
    out.append("</svg>")
    return "\n".join(out)


def cdf(xs):
    xs = sorted(xs)
    n = len(xs)
    step = max(1, n // 200)
    return [(xs[i], (i + 1) / n) for i in range(0, n, step)] + ([(xs[-1], 1.0)] if xs else [])


def write_plots(outdir, tag, levels):
    files = {}
    series = []
    for conc, recs in levels:
        ok = [r for r in recs if r["ok"]]
        series.append((f"E2E c={conc}", [(x, y) for x, y in cdf([r["latency"] * 1e3 for r in ok])]))
        series.append((f"TTFT c={conc}", [(x, y) for x, y in cdf([r["ttft"] * 1e3 for r in ok if r["ttft"]])]))
    files["cdf"] = os.path.join(outdir, f"{tag}-latency-cdf.svg")
    open(files["cdf"], "w").write(svg_lines("Latency CDF", "ms", "fraction of requests", series[:8]))
    return files


def write_sweep_plots(outdir, tag, summaries):
    xs = [s["max_concurrency"] for s in summaries]
    p1 = os.path.join(outdir, f"{tag}-throughput.svg")
    open(p1, "w").write(svg_lines("Output throughput vs concurrency", "max concurrency", "output tokens/s",
                                  [("output tok/s", list(zip(xs, [s["output_throughput"] for s in summaries])))],
                                  logx=True))
    p2 = os.path.join(outdir, f"{tag}-tpot.svg")
    open(p2, "w").write(svg_lines("TPOT vs concurrency", "max concurrency", "ms",
                                  [("TPOT mean", list(zip(xs, [s["tpot_ms"]["mean"] for s in summaries]))),
                                   ("TPOT p99", list(zip(xs, [s["tpot_ms"]["p99"] for s in summaries])))],
                                  logx=True))
    return [p1, p2]


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(prog="pagoda bench serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""))
    ap.add_argument("--max-concurrency", default="1", help="an int, or a comma list for a sweep")
    ap.add_argument("--request-rate", type=float, default=math.inf, help="req/s, Poisson arrivals (inf: all at once)")
    ap.add_argument("--num-prompts", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="random", choices=["random", "jsonl", "customer-service"])
    ap.add_argument("--dataset-path", default=None)
    ap.add_argument("--random-input-len", type=int, default=512)
    ap.add_argument("--random-output-len", type=int, default=128)
    ap.add_argument("--random-prefix-len", type=int, default=0)
    ap.add_argument("--random-vocab", type=int, default=1000)
    ap.add_argument("--output-len", type=int, default=256, help="max_tokens for jsonl/customer-service")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--result-dir", default=".")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    levels = [int(x) for x in str(args.max_concurrency).split(",")]
    tag = args.tag or time.strftime("bench-%Y%m%d-%H%M%S")
    os.makedirs(args.result_dir, exist_ok=True)
    summaries, raw = [], []
    for conc in levels:
        reqs = make_requests(args, random.Random(args.seed))
        recs, dur = run_level(args, reqs, conc, rng)
        s = summarize(recs, dur, conc)
        summaries.append(s)
        raw.append((conc, recs))
        print(f"concurrency {conc}: {s['completed']} ok, {s['failed']} failed, "
              f"{s['output_throughput']:.1f} out tok/s, TTFT mean {s['ttft_ms']['mean']:.1f} ms, "
              f"TPOT mean {s['tpot_ms']['mean']:.2f} ms", flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
              "args": {k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in vars(args).items()
                       if k != "api_key"},
              "summaries": summaries,
              "records": {str(c): [{k: v for k, v in r.items() if k != "text"} for r in recs] for c, recs in raw}}
    jpath = os.path.join(args.result_dir, f"{tag}.json")
    json.dump(result, open(jpath, "w"), indent=1)
    md = markdown(summaries, args)
    open(os.path.join(args.result_dir, f"{tag}.md"), "w").write(md)
    write_plots(args.result_dir, tag, raw)
    if len(summaries) > 1:
        write_sweep_plots(args.result_dir, tag, summaries)
    print(md)
    print(f"results: {jpath}")
    return 0 if all(s["completed"] > 0 for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
