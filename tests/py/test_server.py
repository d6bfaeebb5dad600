"""`pagoda serve` against a tiny checkpoint, in the style of vLLM's and llama.cpp's server tests:
the official openai SDK for the happy paths, raw HTTP for every bad input, a concurrency test
with disconnecting clients, and a graceful SIGTERM. Skips when `pagoda serve` or a tiny
checkpoint with a tokenizer is not available in this build."""
import http.client
import json
import signal
import socket
import threading
import time

import pytest

from server_util import Server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def srv():
    s = Server()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=60)


MSGS = [{"role": "user", "content": "Hello there"}]


# ---- the happy paths through the official SDK ----------------------------------------------------

def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_chat_completion(client):
    r = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # greedy is deterministic
    r2 = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=8, temperature=0)
    assert r2.choices[0].message.content == c.message.content


def test_completion_and_echo(client):
    r = client.completions.create(model="tiny", prompt="The sky is", max_tokens=6, temperature=0,
                                  echo=True)
    assert r.object == "text_completion"
    assert r.choices[0].text.startswith("The sky is")
    r2 = client.completions.create(model="tiny", prompt="The sky is", max_tokens=6, temperature=0)
    assert r.choices[0].text == "The sky is" + r2.choices[0].text


def test_stream_include_usage(client):
    stream = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=10,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    finish = [c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason]
    assert len(finish) == 1
    full = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=10, temperature=0)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_n_and_seed(client):
    kw = dict(model="tiny", messages=MSGS, max_tokens=6, temperature=1.0, n=3, seed=1234)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert 3 <= a.usage.completion_tokens <= 18


def test_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens
    for e in lp:
        assert e.logprob <= 0
        assert len(e.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert e.logprob >= max(t.logprob for t in e.top_logprobs) - 1e-4
    assert "".join(e.token for e in lp) == r.choices[0].message.content
    c = client.completions.create(model="tiny", prompt="abc", max_tokens=4, temperature=0,
                                  logprobs=2)
    assert len(c.choices[0].logprobs.tokens) == c.usage.completion_tokens


def test_stop_string(client):
    kw = dict(model="tiny", prompt="Once upon a time", max_tokens=24, temperature=0.8, seed=7)
    full = client.completions.create(**kw).choices[0].text
    if len(full) < 6:
        pytest.skip("the tiny model stopped too early to pick a stop string")
    stop = full[3:5]
    cut = client.completions.create(stop=[stop], **kw).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[:full.index(stop)]


# ---- bad inputs over raw HTTP ---------------------------------------------------------------------

def error_of(status_body):
    status, _, body = status_body
    err = json.loads(body)["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return status, err


@pytest.mark.parametrize("body,param", [
    ({"messages": MSGS, "frobnicate": 1}, "frobnicate"),
    ({"messages": MSGS, "temperature": -1}, "temperature"),
    ({"messages": MSGS, "top_p": 0}, "top_p"),
    ({"messages": MSGS, "n": 0}, "n"),
    ({"messages": MSGS, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSGS, "logprobs": True, "top_logprobs": 99}, "top_logprobs"),
    ({"messages": MSGS, "stop_token_ids": [10 ** 9]}, "stop_token_ids"),
    ({"messages": MSGS, "logit_bias": {"x": 1}}, "logit_bias"),
    ({"messages": MSGS, "presence_penalty": 5}, "presence_penalty"),
    ({"messages": "hi"}, "messages"),
    ({"messages": MSGS, "response_format": {"type": "yaml"}}, "response_format"),
])
def test_bad_fields(srv, body, param):
    status, err = error_of(srv.request("POST", "/v1/chat/completions", body))
    assert status == 400
    assert err["param"] == param


def test_malformed_json(srv):
    status, err = error_of(srv.request("POST", "/v1/chat/completions", raw=b'{"messages": ['))
    assert status == 400 and "JSON" in err["message"]


def test_unknown_model(srv):
    status, err = error_of(srv.request("POST", "/v1/chat/completions",
                                       {"model": "gpt-5", "messages": MSGS}))
    assert status == 404 and err["param"] == "model"


def test_too_long(srv):
    status, err = error_of(srv.request("POST", "/v1/completions",
                                       {"prompt": "hello", "max_tokens": 10000}))
    assert status == 400
    assert "256" in err["message"] and "10000" in err["message"]


def test_routes_and_methods(srv):
    assert srv.request("GET", "/nope")[0] == 404
    assert srv.request("GET", "/v1/chat/completions")[0] == 405
    assert srv.request("POST", "/v1/models", {})[0] == 405
    assert srv.request("GET", "/version")[0] == 200


def test_body_limit(srv):
    # the server answers 413 from the headers alone and closes, without reading the body
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: %d\r\n\r\n{\"prompt\": \"" % (9 << 20))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413"
    assert "error" in json.loads(body)


def test_tokenize_roundtrip(srv):
    _, _, body = srv.request("POST", "/tokenize", {"prompt": "Hello world"})
    toks = json.loads(body)["tokens"]
    _, _, body = srv.request("POST", "/detokenize", {"tokens": toks})
    assert json.loads(body)["prompt"] == "Hello world"


# ---- concurrency and lifecycle ----------------------------------------------------------------------

def stream_once(port, quit_early, results, i):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        # greedy keeps the tiny model's steps cheap on a loaded 2-core CPU
        body = {"messages": MSGS, "max_tokens": 200 if quit_early else 8, "stream": True,
                "temperature": 0, "ignore_eos": quit_early}
        c.request("POST", "/v1/chat/completions", body=json.dumps(body),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if quit_early:
            r.read(6)
            c.sock.close()  # hang up mid-stream
            results[i] = r.status == 200
            return
        data = r.read().decode()
        results[i] = r.status == 200 and data.rstrip().endswith("data: [DONE]")
    except Exception as e:  # noqa: BLE001 - reported through results
        results[i] = repr(e)


def test_concurrent_streams_with_disconnects(srv):
    n = 64
    results = [None] * n
    threads = [threading.Thread(target=stream_once, args=(srv.port, i % 4 == 0, results, i))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is True for r in results), results
    end = time.time() + 20
    while time.time() < end:
        if srv.metric("num_requests_running") == 0 and srv.metric("num_requests_waiting") == 0 \
                and srv.metric("kv_cache_usage_perc") == 0:
            break
        time.sleep(0.05)
    assert srv.metric("num_requests_running") == 0
    assert srv.metric("num_requests_waiting") == 0
    assert srv.metric("kv_cache_usage_perc") == 0
    m = srv.metrics()
    assert any(k.startswith("vllm:request_success_total") for k in m)
    assert any(k.startswith("vllm:e2e_request_latency_seconds_bucket") for k in m)


def test_api_key():
    s = Server("--api-key", "sekrit")
    try:
        assert s.request("GET", "/v1/models")[0] == 401
        hdr = {"Authorization": "Bearer wrong"}
        assert s.request("POST", "/v1/completions", {"prompt": "a"}, hdr)[0] == 401
        hdr = {"Authorization": "Bearer sekrit"}
        assert s.request("POST", "/v1/completions", {"prompt": "a", "max_tokens": 2}, hdr)[0] == 200
        assert s.request("GET", "/health")[0] == 200
        assert s.request("GET", "/metrics")[0] == 200
    finally:
        s.stop()


def test_sigterm_finishes_inflight():
    s = Server()
    try:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        c.request("POST", "/v1/completions",
                  body=json.dumps({"prompt": "a", "max_tokens": 24, "ignore_eos": True,
                                   "temperature": 0, "stream": True}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        first = r.read(6)  # through the chunked decoder: "data: "
        s.proc.send_signal(signal.SIGTERM)
        data = (first + r.read()).decode()
        assert data.rstrip().endswith("data: [DONE]")
        assert '"finish_reason":"length"' in data
        assert s.proc.wait(timeout=30) == 0
    finally:
        s.stop()
