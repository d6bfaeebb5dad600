#!/usr/bin/env python3
"""Wall time of N concurrent streamed completions on `pagoda serve` with the tiny random Qwen2
(vocab 151936: the sampler dominates), greedy vs temperature 1.0 vs Qwen's defaults.
Usage: python3 bench/server_sampling.py [--bin build/pagoda] [--n 64] [--max-tokens 32]"""
import argparse
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
import server_util  # noqa: E402


def stream(port, body, out, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    out[i] = r.status == 200 and r.read().decode().rstrip().endswith("data: [DONE]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=server_util.BIN)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    server_util.BIN = os.path.abspath(a.bin)
    s = server_util.Server("--max-num-seqs", "64")
    try:
        for name, extra in [("greedy", {"temperature": 0}), ("temperature=1", {"temperature": 1.0}),
                            ("t=0.7 top_p=0.8 top_k=20", {"temperature": 0.7, "top_p": 0.8, "top_k": 20})]:
            body = {"model": "tiny", "prompt": "Tell me a story about a lost parcel.", "stream": True,
                    "max_tokens": a.max_tokens, "ignore_eos": True, "seed": 1, **extra}
            out = [None] * a.n
            th = [threading.Thread(target=stream, args=(s.port, body, out, i)) for i in range(a.n)]
            t0 = time.time()
            for t in th:
                t.start()
            for t in th:
                t.join()
            dt = time.time() - t0
            assert all(o is True for o in out), out
            print(f"{name:28s} {a.n} streams x {a.max_tokens} tokens: {dt:6.2f} s "
                  f"({a.n * a.max_tokens / dt:7.1f} tok/s)", flush=True)
    finally:
        s.stop()


if __name__ == "__main__":
    main()
