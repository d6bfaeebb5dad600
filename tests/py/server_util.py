"""Helpers for the server tests: start `pagoda serve` on a free loopback port, always stop it."""
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("PAGODA_BIN", os.path.join(ROOT, "build", "pagoda"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


QWEN_TOKENIZER = os.path.join(ROOT, "..", "shared", "models", "qwen-tokenizer")


def make_tiny_qwen():
    """A 2-layer, hidden-64 random Qwen2 with the real Qwen2.5 tokenizer and chat template (vocab
    151936), written once per machine by tools/make_random_model.py (~1 s, 30 MB)."""
    out = os.path.join(tempfile.gettempdir(), f"pagoda-test-qwen-tiny-{os.getuid()}")
    if os.path.exists(os.path.join(out, "tokenizer.json")):
        return out
    tool = os.path.join(ROOT, "tools", "make_random_model.py")
    if not (os.path.exists(tool) and os.path.isdir(QWEN_TOKENIZER)):
        return None
    tmp = tempfile.mkdtemp(prefix="pagoda-test-qwen-")
    subprocess.run([sys.executable, tool, "--out", tmp, "--hidden", "64", "--layers", "2",
                    "--heads", "4", "--kv-heads", "2", "--intermediate", "128"],
                   check=True, capture_output=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(QWEN_TOKENIZER, f), tmp)
    try:
        os.rename(tmp, out)
    except OSError:  # another test process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def find_model():
    """A tiny checkpoint with a tokenizer: $PAGODA_TEST_MODEL, a fixture that has one, or a tiny
    random Qwen2 made on the fly with the shared Qwen tokenizer."""
    env = os.environ.get("PAGODA_TEST_MODEL")
    if env:
        return env
    base = os.path.join(ROOT, "tests", "fixtures", "models")
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            d = os.path.join(base, name)
            if os.path.exists(os.path.join(d, "tokenizer.json")) and \
               os.path.exists(os.path.join(d, "config.json")):
                return d
    return make_tiny_qwen()


def serve_available():
    if not os.path.exists(BIN):
        return "build/pagoda is not built"
    r = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        return "pagoda serve is not in this build: " + r.stderr.strip()
    if not find_model():
        return "no tiny checkpoint with a tokenizer (fixtures, or ../shared/models/qwen-tokenizer)"
    return None


class Server:
    def __init__(self, *flags, name="tiny", model=None):
        why = serve_available()
        if why:
            pytest.skip(why)
        self.port = free_port()
        self.model = model or find_model()
        self.name = name
        cmd = [BIN, "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port),
               "--served-model-name", name, "--max-model-len", "256", "--max-num-seqs", "32",
               "--kv-cache-memory", "64MiB", "--seed", "0", "--disable-log-requests",
               "--uvicorn-log-level", "warning", *flags]
        self.log = open(os.path.join("/tmp", f"pagoda-serve-{self.port}.log"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("pagoda serve exited: " + self.read_log())
            with contextlib.suppress(OSError):
                status, _, _ = self.request("GET", "/health")
                if status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("pagoda serve did not become healthy: " + self.read_log())

    def read_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def request(self, method, path, body=None, headers=None, raw=None):
        """Returns (status, headers dict, body bytes)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **(headers or {})}
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, out

    def metrics(self):
        _, _, body = self.request("GET", "/metrics")
        vals = {}
        for line in body.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, val = line.rsplit(" ", 1)
            vals[key] = float(val)
        return vals

    def metric(self, name):
        m = self.metrics()
        return sum(v for k, v in m.items() if k.split("{")[0] == "vllm:" + name)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
