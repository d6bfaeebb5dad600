#!/usr/bin/env python3
"""Single-thread tokenizer encode speed: pagoda vs Hugging Face `tokenizers`, same run, same
machine, same texts (a benchmark, not a test). Also checks that both give the same ids and
times loading tokenizer.json. Appends a Markdown section to --out.

    python3 bench/tokenizer_bench.py [--pagoda build/pagoda] [--model ../shared/models/qwen-tokenizer]
        [--reps 20] [--out bench/results/tokenizer.md] [--commit SHA]
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF single-threaded (before importing tokenizers)
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def corpora(cs_dir):
    zh, en = [], []
    for line in open(os.path.join(cs_dir, "cases.jsonl"), encoding="utf-8"):
        case = json.loads(line)
        texts = [m["content"] for m in case["messages"]] + [case["reference_reply"]]
        (zh if case["lang"] == "zh" else en).extend(texts)
    zh.append(open(os.path.join(cs_dir, "system_prompt_zh.txt"), encoding="utf-8").read())
    en.append(open(os.path.join(cs_dir, "system_prompt_en.txt"), encoding="utf-8").read())
    code = [open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(ROOT, "src", "*", "*.[ch]")))]
    out = {"customer-service zh": "\n".join(zh), "customer-service en": "\n".join(en), "C source": "\n".join(code)}
    mixed = "\n".join(out.values())
    out["mixed, 1 MiB"] = (mixed * (1 + (1 << 20) // len(mixed))).encode("utf-8")[: 1 << 20].decode("utf-8", "ignore")
    return out


def pagoda_bench(pagoda, model, path, reps):
    r = subprocess.run([pagoda, "tokenize", "--model", model, "--file", path, "--bench", str(reps)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def pagoda_ids(pagoda, model, path):
    r = subprocess.run([pagoda, "tokenize", "--model", model, "--file", path], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def hf_bench(tok, text, reps):
    """Best wall and best process-CPU time of one encode (process CPU counts every thread)."""
    tok.encode(text, add_special_tokens=False)  # warm (word cache)
    best = best_cpu = 1e30
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        enc = tok.encode(text, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, enc.ids


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pagoda", default=os.path.join(ROOT, "build", "pagoda"))
    ap.add_argument("--model", default=os.path.join(ROOT, "..", "shared", "models", "qwen-tokenizer"))
    ap.add_argument("--cs", default=os.path.join(ROOT, "..", "shared", "datasets", "customer-service"))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "tokenizer.md"))
    ap.add_argument("--commit", default=None)
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    commit = a.commit or subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip() or "?"
    tj = a.model if a.model.endswith(".json") else os.path.join(a.model, "tokenizer.json")
    t0 = time.perf_counter()
    hf = Tokenizer.from_file(tj)
    hf_load = time.perf_counter() - t0
    rows, loads = [], []
    for name, text in corpora(a.cs).items():
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
            f.write(text)
            path = f.name
        try:
            reps = a.reps if len(text) < (1 << 19) else max(3, a.reps // 4)
            p = pagoda_bench(a.pagoda, a.model, path, reps)
            loads.append(p["load_s"])
            h_s, h_cpu, h_ids = hf_bench(hf, text, reps)
            same = pagoda_ids(a.pagoda, a.model, path) == h_ids
        finally:
            os.unlink(path)
        nbytes = len(text.encode("utf-8"))
        rows.append((name, nbytes, len(h_ids), p["cpu_mb_per_s"], nbytes / 1e6 / h_cpu, p["mb_per_s"],
                     nbytes / 1e6 / h_s, same))
    lines = [f"\n## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}\n",
             f"- machine: {machine()}",
             f"- command: `{' '.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])}`",
             f"- tokenizer: {os.path.relpath(tj, ROOT)}; single thread each (HF: RAYON_NUM_THREADS=1, "
             f"`Tokenizer.encode`, best of {a.reps}); pagoda: `pagoda tokenize --bench`, best of {a.reps}",
             f"- load tokenizer.json: pagoda {min(loads):.3f} s (best of {len(loads)} process starts), "
             f"HF `Tokenizer.from_file` {hf_load:.3f} s"]
    if a.note:
        lines.append(f"- note: {a.note}")
    lines += ["", "MB/s = 10^6 bytes per second of process CPU time (wall-clock MB/s in parentheses).", "",
              "| corpus | bytes | tokens | pagoda MB/s | HF MB/s | speedup | same ids |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for name, nbytes, ntok, pm, hm, pw, hw, same in rows:
        lines.append(f"| {name} | {nbytes} | {ntok} | {pm:.2f} ({pw:.2f}) | {hm:.2f} ({hw:.2f}) | {pm / hm:.1f}x | "
                     f"{'yes' if same else 'NO'} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not os.path.exists(a.out):
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("# Tokenizer encode speed: pagoda vs Hugging Face tokenizers\n\n"
                    "Made by bench/tokenizer_bench.py; newest runs at the end.\n")
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(report)
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
