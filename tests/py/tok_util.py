"""Helpers for the tokenizer differential tests: run `pagoda tokenize --batch` on many strings."""
import functools
import json
import os
import subprocess
import tempfile
import unicodedata

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PAGODA = os.environ.get("PAGODA", os.path.join(ROOT, "build", "pagoda"))
QWEN = os.path.join(ROOT, "..", "shared", "models", "qwen-tokenizer", "tokenizer.json")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tok")
TOKENIZERS = {
    "qwen": QWEN,
    "gpt2": os.path.join(FIXTURES, "gpt2.json"),
    "smollm": os.path.join(FIXTURES, "smollm.json"),
    "llama3": os.path.join(FIXTURES, "llama3.json"),
    "edge": os.path.join(FIXTURES, "edge.json"),
}


def pagoda_encode_batch(model, items, special=True, roundtrip=True):
    """items: list of bytes or str. Returns a list of id lists (one per item). roundtrip: also
    asserts decode(encode(x)) == x (NFC(x) for NFC tokenizers; raw bytes for invalid UTF-8)."""
    with tempfile.NamedTemporaryFile(delete=False, suffix=".bin") as f:
        for x in items:
            b = x.encode("utf-8") if isinstance(x, str) else x
            f.write(b"%d\n" % len(b))
            f.write(b)
        path = f.name
    try:
        cmd = [PAGODA, "tokenize", "--model", model, "--batch", path]
        if not special:
            cmd.append("--no-special")
        if roundtrip:
            cmd.append("--decode")
        r = subprocess.run(cmd, capture_output=True, timeout=600)
    finally:
        os.unlink(path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    lines = r.stdout.decode().splitlines()
    if not roundtrip:
        assert len(lines) == len(items)
        return [json.loads(line) for line in lines]
    assert len(lines) == 2 * len(items)
    nfc, prefix = uses_nfc(model), adds_prefix_space(model)

    def norm(b):  # NFC (where the tokenizer normalizes) is applied to both sides
        return unicodedata.normalize("NFC", b.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape") if nfc else b

    for i, x in enumerate(items):
        b = x.encode("utf-8") if isinstance(x, str) else x
        got = bytes.fromhex(lines[2 * i + 1])
        if prefix:  # add_prefix_space inserts spaces; lstrip/rstrip tokens remove some
            continue
        assert norm(got) == norm(b), f"decode(encode(x)) != x for item {i}: {x[:100]!r} -> {got[:100]!r}"
    return [json.loads(line) for line in lines[0::2]]


def adds_prefix_space(model):
    d = json.load(open(model, encoding="utf-8"))
    return '"add_prefix_space": true' in json.dumps(d.get("pre_tokenizer"))


def uses_nfc(model):
    d = json.load(open(model, encoding="utf-8"))
    return "NFC" in json.dumps(d.get("normalizer"))


@functools.lru_cache(maxsize=None)
def hf_tokenizer(model, special=True):
    """One HF tokenizer per (file, special) for the whole session (loading Qwen takes ~1 s)."""
    from tokenizers import Tokenizer
    t = Tokenizer.from_file(model)
    t.encode_special_tokens = not special
    return t


def hf_encode_batch(tok, texts):
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))
