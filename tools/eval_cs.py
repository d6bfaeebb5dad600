#!/usr/bin/env python3
"""pagoda eval cs: the customer-service evaluation against any OpenAI-compatible endpoint.

For each case (data/customer-service/cases.jsonl): (1) the extraction, a chat request that
ends with a JSON instruction and carries guided_json (the case schema), (2) the reply, the
dialogue as is. The reply and the reference are embedded through an OpenAI-compatible
/v1/embeddings endpoint (--embed-base-url); a case passes when cosine >= --threshold.
Reports accuracy, mean cosine, JSON field accuracy (exact match on category, order_id,
urgency, sentiment, escalate; best-match character-bigram overlap for demands), and mean /
p50 / p90 latency; writes a per-case CSV, a JSON and a Markdown summary.

--compare-to RUN.json: instead of (or beside) the references, compare replies with an
earlier run's replies (token agreement through the server's /tokenize, and cosine): the
measure for random-weight checkpoints, whose replies have no meaning.
"""
import argparse
import copy
import concurrent.futures as cf
import csv
import json
import math
import os
import statistics
import sys
import time
import http.client
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serve import pct  # noqa: E402  (percentiles as `pagoda bench serve` reports them)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_ASK = {"zh": "请按系统提示中的JSON要求，只输出一个JSON对象。",
            "en": "Output the JSON object for this conversation, as the system prompt specifies."}
SCALARS = ["category", "order_id", "urgency", "sentiment", "escalate"]


def post(base, path, body, api_key, timeout):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn.request("POST", u.path.rstrip("/") + path, body=json.dumps(body).encode(), headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}: {data[:300].decode(errors='replace')}")
    return json.loads(data)


def chat(args, messages, extra=None):
    body = {"model": args.model, "messages": messages, "max_tokens": args.max_tokens,
            "temperature": args.temperature, "seed": args.seed}
    if extra:
        body.update(extra)
    t0 = time.perf_counter()
    r = post(args.base_url, "/chat/completions", body, args.api_key, args.timeout)
    return r["choices"][0]["message"].get("content") or "", time.perf_counter() - t0


def embed(args, texts):
    r = post(args.embed_base_url, "/embeddings", {"model": args.embed_model, "input": texts},
             args.api_key, args.timeout)
    return [d["embedding"] for d in sorted(r["data"], key=lambda d: d["index"])]


def cosine(a, b):
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else 0.0


def bigrams(s):
    s = "".join(str(s).lower().split())
    return {s[i:i + 2] for i in range(len(s) - 1)} or {s}


def demand_overlap(pred, ref):
    """Mean over reference demands of the best Jaccard (character bigrams) with a predicted one."""
    if not isinstance(pred, list) or not pred:
        return 0.0
    scores = []
    for r in ref:
        rb = bigrams(r)
        scores.append(max(len(rb & bigrams(p)) / len(rb | bigrams(p)) for p in pred))
    return statistics.fmean(scores) if scores else 0.0


def repeat_case(case, k):
    """Repeat k of a case: k == 0 is the case itself; otherwise a copy whose last user message
    carries a ' (#k)' suffix (a distinct prompt with the same content) and whose id is '<id>#k'."""
    if k == 0:
        return case
    c = copy.deepcopy(case)
    c["id"] = f"{case['id']}#{k}"
    for m in reversed(c["messages"]):
        if m["role"] == "user":
            m["content"] += f" (#{k})"
            break
    return c


def run_case(args, case, sp, schema):
    msgs = [{"role": "system", "content": sp[case["lang"]]}] + case["messages"]
    rec = {"id": case["id"], "lang": case["lang"], "error": ""}
    try:
        jmsgs = msgs + [{"role": "user", "content": JSON_ASK[case["lang"]]}]
        jtext, jlat = chat(args, jmsgs, {"guided_json": schema} if not args.no_guided else None)
        reply, rlat = chat(args, msgs)
        rec.update(json_text=jtext, json_latency=jlat, reply=reply, reply_latency=rlat,
                   latency=jlat + rlat)
        try:
            pred = json.loads(jtext)
            rec["json_valid"] = isinstance(pred, dict)
        except ValueError:
            pred, rec["json_valid"] = {}, False
        if not isinstance(pred, dict):
            pred = {}
        ref = case["reference_json"]
        for k in SCALARS:
            rec[f"match_{k}"] = pred.get(k, "<missing>") == ref[k]
        rec["demands_overlap"] = demand_overlap(pred.get("demands"), ref["demands"])
    except Exception as e:  # a failed request is recorded, not fatal
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(prog="pagoda eval cs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--embed-base-url", default=None, help="OpenAI-compatible /v1 with an embedding model")
    ap.add_argument("--embed-model", default="all-MiniLM-L6-v2")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""))
    ap.add_argument("--dataset-path", default=os.path.join(REPO, "data", "customer-service"))
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases")
    ap.add_argument("--num-requests", type=int, default=0,
                    help="run this many cases, cycling over the (limited) set: repeat k >= 1 of a case gets "
                         "the id '<id>#k' and ' (#k)' appended to its last user message, so no two prompts are "
                         "identical (0: each case once)")
    ap.add_argument("--no-guided", action="store_true", help="ask for JSON without guided_json")
    ap.add_argument("--compare-to", default=None, help="an earlier run's JSON: report agreement with it")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--output-dir", default=".")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)

    path = args.dataset_path
    cases = [json.loads(l) for l in open(os.path.join(path, "cases.jsonl"), encoding="utf-8") if l.strip()]
    if args.limit:
        cases = cases[:args.limit]
    if args.num_requests > 0 and cases:
        cases = [repeat_case(cases[i % len(cases)], i // len(cases)) for i in range(args.num_requests)]
    sp = {l: open(os.path.join(path, f"system_prompt_{l}.txt"), encoding="utf-8").read() for l in ("zh", "en")}
    schema = json.load(open(os.path.join(path, "extraction.schema.json"), encoding="utf-8"))

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as ex:
        recs = list(ex.map(lambda c: run_case(args, c, sp, schema), cases))
    wall = time.perf_counter() - t0
    ok = [r for r in recs if not r["error"]]
    by_id = {c["id"]: c for c in cases}

    if args.embed_base_url and ok:
        for r in ok:
            a, b = embed(args, [r["reply"] or " ", by_id[r["id"]]["reference_reply"]])
            r["cosine"] = cosine(a, b)
            r["pass"] = r["cosine"] >= args.threshold
    if args.compare_to:
        prev = {r["id"]: r for r in json.load(open(args.compare_to))["cases"] if not r.get("error")}
        for r in ok:
            p = prev.get(r["id"])
            if not p:
                continue
            ta = post(args.base_url.rsplit("/v1", 1)[0], "/tokenize", {"model": args.model, "prompt": r["reply"]},
                      args.api_key, args.timeout)["tokens"]
            tb = post(args.base_url.rsplit("/v1", 1)[0], "/tokenize", {"model": args.model, "prompt": p["reply"]},
                      args.api_key, args.timeout)["tokens"]
            n = 0
            while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
                n += 1
            r["token_agreement"] = n / max(len(ta), len(tb), 1)
            r["identical_to_baseline"] = r["reply"] == p["reply"]
            if args.embed_base_url:
                a, b = embed(args, [r["reply"] or " ", p["reply"] or " "])
                r["cosine_vs_baseline"] = cosine(a, b)

    lat = [r["latency"] for r in ok]
    summ = {"cases": len(recs), "failed": len(recs) - len(ok), "concurrency": args.concurrency,
            "wall_s": wall,
            "latency_mean_s": statistics.fmean(lat) if lat else float("nan"),
            "latency_p50_s": pct(lat, 50),
            "latency_p90_s": pct(lat, 90),
            "reply_latency_mean_s": statistics.fmean([r["reply_latency"] for r in ok]) if ok else float("nan"),
            "json_valid": sum(r["json_valid"] for r in ok) / max(len(ok), 1)}
    for k in SCALARS:
        summ[f"acc_{k}"] = sum(r[f"match_{k}"] for r in ok) / max(len(ok), 1)
    summ["demands_overlap"] = statistics.fmean([r["demands_overlap"] for r in ok]) if ok else float("nan")
    if args.embed_base_url and ok:
        summ["accuracy"] = sum(r["pass"] for r in ok) / len(ok)
        summ["mean_cosine"] = statistics.fmean(r["cosine"] for r in ok)
        summ["threshold"] = args.threshold
    if args.compare_to:
        agree = [r["token_agreement"] for r in ok if "token_agreement" in r]
        summ["token_agreement_vs_baseline"] = statistics.fmean(agree) if agree else float("nan")
        summ["identical_vs_baseline"] = (sum(r.get("identical_to_baseline", False) for r in ok) / len(agree)
                                         if agree else float("nan"))
        cv = [r["cosine_vs_baseline"] for r in ok if "cosine_vs_baseline" in r]
        if cv:
            summ["cosine_vs_baseline"] = statistics.fmean(cv)

    tag = args.tag or time.strftime("eval-cs-%Y%m%d-%H%M%S")
    os.makedirs(args.output_dir, exist_ok=True)
    json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv), "summary": summ,
               "cases": recs}, open(os.path.join(args.output_dir, f"{tag}.json"), "w"), indent=1, ensure_ascii=False)
    cols = ["id", "lang", "latency", "reply_latency", "json_valid", "cosine", "pass", "token_agreement",
            "demands_overlap"] + [f"match_{k}" for k in SCALARS] + ["error"]
    with open(os.path.join(args.output_dir, f"{tag}.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(recs)
    md = ["| metric | value |", "|---|---|"] + [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in summ.items()]
    open(os.path.join(args.output_dir, f"{tag}.md"), "w").write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
