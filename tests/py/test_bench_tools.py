"""Tests for tools/bench_serve.py and tools/eval_cs.py against a scripted fake endpoint.

The fake speaks just enough of the OpenAI API (streaming completions/chat, /v1/embeddings,
/tokenize) to check the tools' bookkeeping: token counts, failures, metrics, scoring.
"""
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))
import bench_serve  # noqa: E402
import eval_cs  # noqa: E402


class Fake(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fail_every = 0
    count = 0
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Fake.lock:
            Fake.count += 1
            n = Fake.count
        if self.path.endswith("/embeddings"):
            # embedding = letter histogram: identical texts -> cosine 1
            vecs = []
            for t in body["input"]:
                v = [0.0] * 27
                for ch in t.lower():
                    v[ord(ch) - 97 if "a" <= ch <= "z" else 26] += 1
                vecs.append(v)
            return self._json(200, {"data": [{"index": i, "embedding": v} for i, v in enumerate(vecs)]})
        if self.path == "/tokenize":
            return self._json(200, {"tokens": [ord(c) for c in body["prompt"]]})
        if Fake.fail_every and n % Fake.fail_every == 0:
            return self._json(503, {"error": {"message": "busy"}})
        if not body.get("stream"):
            msgs = body["messages"]
            if "guided_json" in body:
                text = json.dumps({"category": "refund", "order_id": None, "core_issue": "x",
                                   "demands": ["refund now"], "urgency": "high", "sentiment": "angry",
                                   "escalate": True})
            else:
                text = "hello " + msgs[-1]["content"][:10]
            return self._json(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
        max_tokens = body["max_tokens"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj):
            data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        chat = "messages" in body
        for i in range(max_tokens):
            ch = {"index": 0, "delta": {"content": f"t{i} "}} if chat else {"index": 0, "text": f"t{i} "}
            send({"choices": [ch]})
        send({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": max_tokens}})
        send(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture()
def server():
    Fake.count = 0
    Fake.fail_every = 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_bench_counts_tokens_and_failures(server, tmp_path):
    Fake.fail_every = 4  # every 4th request fails
    rc = bench_serve.main(["--base-url", server + "/v1", "--model", "m", "--num-prompts", "12",
                           "--random-input-len", "5", "--random-output-len", "6", "--max-concurrency", "3",
                           "--result-dir", str(tmp_path), "--tag", "t"])
    assert rc == 0
    res = json.load(open(tmp_path / "t.json"))
    s = res["summaries"][0]
    assert s["failed"] == 3 and s["completed"] == 9
    assert s["total_output_tokens"] == 9 * 6
    assert s["total_input_tokens"] == 9 * 7
    recs = res["records"]["3"]
    assert all(len(r["itl"]) == 5 for r in recs if r["ok"])  # first token excluded
    assert s["ttft_ms"]["p99"] >= s["ttft_ms"]["median"] > 0
    assert (tmp_path / "t-latency-cdf.svg").read_text().startswith("<svg")


def test_bench_sweep_writes_plots(server, tmp_path):
    rc = bench_serve.main(["--base-url", server + "/v1", "--model", "m", "--num-prompts", "4",
                           "--dataset", "customer-service", "--output-len", "3", "--max-concurrency", "1,2",
                           "--result-dir", str(tmp_path), "--tag", "s"])
    assert rc == 0
    res = json.load(open(tmp_path / "s.json"))
    assert [s["max_concurrency"] for s in res["summaries"]] == [1, 2]
    assert "<path" in (tmp_path / "s-throughput.svg").read_text()


def test_percentiles():
    assert bench_serve.pct([1, 2, 3, 4, 5], 50) == 3
    assert bench_serve.pct([1, 2], 90) == pytest.approx(1.9)


def test_eval_scores_json_fields(server, tmp_path):
    rc = eval_cs.main(["--base-url", server + "/v1", "--model", "m", "--embed-base-url", server + "/v1",
                       "--limit", "6", "--concurrency", "2", "--output-dir", str(tmp_path), "--tag", "e"])
    assert rc == 0
    res = json.load(open(tmp_path / "e.json"))
    cases = [json.loads(l) for l in open(os.path.join(REPO, "data/customer-service/cases.jsonl"))][:6]
    want = sum(c["reference_json"]["category"] == "refund" for c in cases) / 6
    assert res["summary"]["acc_category"] == pytest.approx(want)
    assert res["summary"]["json_valid"] == 1.0
    assert all(-1.0 <= r["cosine"] <= 1.0 for r in res["cases"])
    # comparing a run with itself: full agreement
    rc = eval_cs.main(["--base-url", server + "/v1", "--model", "m", "--limit", "6",
                       "--compare-to", str(tmp_path / "e.json"), "--output-dir", str(tmp_path), "--tag", "c"])
    res2 = json.load(open(tmp_path / "c.json"))
    assert res2["summary"]["token_agreement_vs_baseline"] == 1.0


def test_demand_overlap():
    assert eval_cs.demand_overlap(["退货退款699元"], ["退货退款699元"]) == 1.0
    assert eval_cs.demand_overlap([], ["x"]) == 0.0
    assert 0 < eval_cs.demand_overlap(["refund the money"], ["refund money"]) < 1


def test_eval_num_requests_cycles_with_distinct_prompts(server, tmp_path):
    rc = eval_cs.main(["--base-url", server + "/v1", "--model", "m", "--limit", "4", "--num-requests", "9",
                       "--concurrency", "3", "--output-dir", str(tmp_path), "--tag", "r"])
    assert rc == 0
    res = json.load(open(tmp_path / "r.json"))
    cases = [json.loads(l) for l in open(os.path.join(REPO, "data/customer-service/cases.jsonl"))][:4]
    ids = [c["id"] for c in cases]
    assert [r["id"] for r in res["cases"]] == ids + [i + "#1" for i in ids] + [ids[0] + "#2"]
    assert res["summary"]["cases"] == 9
    rep = eval_cs.repeat_case(cases[1], 2)
    users = [m for m in rep["messages"] if m["role"] == "user"]
    orig = [m for m in cases[1]["messages"] if m["role"] == "user"]
    assert users[-1]["content"] == orig[-1]["content"] + " (#2)"
    assert users[:-1] == orig[:-1]
    assert eval_cs.repeat_case(cases[1], 0) is cases[1]


def test_eval_percentiles_ordered():
    assert eval_cs.pct([26.1, 45.4], 90) == pytest.approx(26.1 + 0.9 * 19.3)
    assert eval_cs.pct([3, 1, 2], 50) == 2
    xs = [0.5, 9.0, 2.5, 7.25, 1.0]
    assert eval_cs.pct(xs, 50) <= eval_cs.pct(xs, 90) <= max(xs)
