"""`pagoda serve` on GGUF models: a .gguf file and a directory holding one open through the same
loaders as `pagoda generate`, with the tokenizer, chat template and eos ids read from the GGUF
metadata (no config.json / tokenizer.json next to it). The GGUF is converted from the tiny random
Qwen2 checkpoint with our own writer (tools/gguf_write.py, bf16: the weights are bit-identical),
so every greedy answer must equal the one served from the Hugging Face directory."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from server_util import ROOT, Server, make_tiny_qwen, serve_available

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gguf_write as W  # noqa: E402

MSGS = [{"role": "user", "content": "Hello there, my order never arrived."}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    why = serve_available()
    if why:
        pytest.skip(why)
    hf = make_tiny_qwen()
    if not hf:
        pytest.skip("no tiny Qwen2 checkpoint (needs ../shared/models/qwen-tokenizer)")
    d = tmp_path_factory.mktemp("gguf")
    f = str(d / "tiny-qwen-bf16.gguf")
    W.convert(hf, f, "bf16")
    gdir = d / "dir"
    gdir.mkdir()
    shutil.copy(f, gdir / "model.gguf")
    return hf, f, str(gdir)


def answers(model):
    s = Server(model=model)
    try:
        out = {}
        st, _, body = s.request("GET", "/v1/models")
        assert st == 200, body
        out["models"] = [m["id"] for m in json.loads(body)["data"]]
        for kind, path, body in [
            ("chat", "/v1/chat/completions",
             {"model": "tiny", "messages": MSGS, "max_tokens": 12, "temperature": 0, "logprobs": True}),
            ("text", "/v1/completions",
             {"model": "tiny", "prompt": "The parcel is late because", "max_tokens": 12, "temperature": 0}),
            ("tokenize", "/tokenize", {"model": "tiny", "prompt": "Héllo wörld <|im_end|> 你好"}),
        ]:
            st, _, raw = s.request("POST", path, body)
            assert st == 200, (kind, raw, s.read_log())
            out[kind] = json.loads(raw)
        return out
    finally:
        assert s.stop() == 0


def strip(r):
    """The parts of a response that depend on the model, not on ids or timestamps."""
    if "choices" not in r:
        return r
    ch = []
    for c in r["choices"]:
        m = c.get("message") or {}
        lp = c.get("logprobs") or {}
        ch.append((c.get("text"), m.get("content"), c["finish_reason"],
                   [t["token"] for t in (lp.get("content") or [])]))
    return ch, r["usage"]


def test_gguf_file_and_dir_serve_like_the_hf_checkpoint(models):
    hf, f, gdir = models
    ref = answers(hf)
    assert ref["chat"]["usage"]["completion_tokens"] > 0
    for m in (f, gdir):
        got = answers(m)
        assert got["models"] == ["tiny"]
        # same prompt tokens: the GGUF's tokenizer and chat template match tokenizer.json's
        assert got["chat"]["usage"]["prompt_tokens"] == ref["chat"]["usage"]["prompt_tokens"]
        assert got["tokenize"]["tokens"] == ref["tokenize"]["tokens"]
        for kind in ("chat", "text"):
            assert strip(got[kind]) == strip(ref[kind]), kind


def test_gguf_without_tokenizer_is_refused(tmp_path):
    why = serve_available()
    if why:
        pytest.skip(why)
    # the golden fixture GGUFs carry weights only: serve must say why it cannot start
    f = os.path.join(ROOT, "tests", "fixtures", "gguf", "models", "qwen2_f32_q8_0.gguf")

    from server_util import BIN, free_port
    r = subprocess.run([BIN, "serve", f, "--port", str(free_port()), "--max-model-len", "64",
                        "--kv-cache-memory", "16MiB"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "pagoda serve:" in r.stderr and "tokenizer" in r.stderr, r.stderr
