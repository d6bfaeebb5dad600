"""Differential tests: pagoda's tokenizer vs Hugging Face `tokenizers` (the reference), on the
Qwen tokenizer and on small GPT-2/SmolLM/Llama-3-style and edge-case tokenizers built by
tests/py/make_tok_fixtures.py. Every comparison is exact (same ids)."""
import json
import os
import random
import subprocess
import unicodedata

import pytest

from tok_util import (PAGODA, ROOT, TOKENIZERS, first_diff, hf_encode_batch, hf_tokenizer,
                      pagoda_encode_batch)

CS = os.path.join(ROOT, "..", "shared", "datasets", "customer-service")
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
            "<|begin_of_text|>", "<|eot_id|>", "<|reserved_special_token_3|>", "<mask>", "[SEP]",
            "fooword", "é!", "<tool>", "<s>", "</s>"]


def customer_service_texts():
    texts = []
    for line in open(os.path.join(CS, "cases.jsonl"), encoding="utf-8"):
        case = json.loads(line)
        texts += [m["content"] for m in case["messages"]]
        texts += [case["reference_reply"], json.dumps(case["reference_json"], ensure_ascii=False)]
    for name in ("system_prompt_zh.txt", "system_prompt_en.txt", "README.md"):
        texts.append(open(os.path.join(CS, name), encoding="utf-8").read())
    return texts


def handpicked():
    code = "".join(open(os.path.join(ROOT, p), encoding="utf-8").read()
                   for p in ("src/tokenizer/bpe.c", "tests/py/tok_util.py", "Makefile"))
    return [
        "", " ", "a", "Hello, world! It's a test. I'll we've they're DON'T 'S",
        "The quick brown fox jumps over the lazy dog 1234567890 3.14159 1,000,000",
        code, code[:3000],
        "emoji: 😀👍🏽👨‍👩‍👧‍👦 🏳️‍🌈 ❤️‍🔥 🇯🇵🇺🇸 #️⃣ 🧑🏿‍🤝‍🧑🏻",
        "combining: e\u0301 a\u0308\u0304 o\u0328\u0301 \u1100\u1161\u11a8 \u0915\u093c \u212b A\u030a "
        "\u1e9b\u0323 \u0344 \u0958 \uf900 \u2126 \u00c5 \u0065\u0301\u0301",
        "full-width: 你好，世界！【测试】（括号）：“引号”‘单’《书名》、。？ ＡＢＣ１２３ｱｲｳ　全角空格",
        "mixed: Привет мир Γειά σου κόσμε مرحبا بالعالم नमस्ते दुनिया こんにちは世界 안녕하세요 שלום עולם ไทย",
        "spaces:   a    b\t\tc\n\n\nd \n \n  \r\n\r\n\t \t e      \n",
        "    leading and trailing    ", "\n", "\t", "\r\n", " \n", "  \u3000\u00a0\u2003\u0085\u2028x",
        "specials: <|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\nok</think>",
        "<|im_start|><|im_start|> <|im_end|>x<|endoftext|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
        "edge: a <mask> b   <mask>c [SEP]  d [SEP]\n e fooword xfooword foowordy (fooword) é! e\u0301! <tool>x  y",
        "numbers 0 12 345 6789 12345678901234567890 ١٢٣ ½ ² Ⅻ",
        "apostrophes 's 'S 'Ll 'LL ſ 'ſ K 'K",
        "ignore_merges: zyxwv qqqq 12345 你好啊",
        "x" * 5000, "ab" * 3000, "中" * 3000, " " * 3000, "\n" * 500, "😀" * 700,
    ]


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def model(request):
    return request.param


def compare(model, texts, special=True):
    hf = hf_tokenizer(TOKENIZERS[model], special)
    want = hf_encode_batch(hf, texts)
    got = pagoda_encode_batch(TOKENIZERS[model], texts, special=special)
    bad = [i for i in range(len(texts)) if want[i] != got[i]]
    if bad:
        i = bad[0]
        k = first_diff(want[i], got[i])
        pytest.fail(f"{model}: {len(bad)}/{len(texts)} differ; first: {texts[i][:200]!r}\n"
                    f"at token {k}: hf {want[i][k:k+8]} pagoda {got[i][k:k+8]}")


def test_customer_service(model):
    compare(model, customer_service_texts())


def test_handpicked(model):
    compare(model, handpicked())


def test_no_parse_special(model):
    compare(model, handpicked(), special=False)


@pytest.mark.parametrize("model", ["qwen", "llama3"])
def test_one_megabyte(model):
    cs = "\n".join(customer_service_texts())
    rng = random.Random(7)
    mixed = "".join(rng.choice(handpicked()[2:25]) for _ in range(2000))
    mb = lambda s: (s * (1 + (1 << 20) // len(s))).encode("utf-8")[: 1 << 20].decode("utf-8", "ignore")
    texts = [mb(cs), mb(mixed)] if model == "qwen" else [mb(mixed)]
    compare(model, texts)


ALPHABET = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3 +
            list(" " * 20 + "\t\n\r.,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`") +
            ["'s", "'t", "'ll", "'RE", "中", "文", "，", "。", "😀", "👍🏽", "\u200d", "\u0301", "\u0308",
             "e\u0301", "\u00e9", "\u3000", "\u00a0", "\u0085", "\u2028", "ß", "ſ", "K", "١", "½", "  ", "\r\n"] +
            SPECIALS)


def known_cn(cp):
    """Unassigned code points that no newer Unicode version assigns (planes 3-16 outside the
    CJK extensions, noncharacters): safe to include. Characters assigned after Unicode 15 are
    excluded: PCRE2 10.42 (Unicode 15) and HF's regex engine disagree on their categories."""
    return cp >= 0x40000 or (cp & 0xFFFE) == 0xFFFE or 0xFDD0 <= cp <= 0xFDEF


def random_strings(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.75:
                parts.append(rng.choice(ALPHABET))
            elif r < 0.9:  # any code point but surrogates, and assigned in Unicode <= 15
                cp = rng.randint(0x20, 0x10FFFF)
                if 0xD800 <= cp <= 0xDFFF or unicodedata.category(chr(cp)) == "Cn" and not known_cn(cp):
                    cp = 0xFFFD
                parts.append(chr(cp))
            else:
                parts.append(chr(rng.randint(0x300, 0x36F)))  # combining marks
        out.append("".join(parts))
    return out


def test_random_strings_100k():
    """Seeded property test: 100,000 random strings, exact ids and decode(encode(x)) == x."""
    compare("qwen", random_strings(100_000, seed=1234))


@pytest.mark.parametrize("name", ["llama3", "edge"])
def test_random_strings_20k(name):
    compare(name, random_strings(20_000, seed=4321))


def test_random_strings_small_all(model):
    compare(model, random_strings(5_000, seed=99), special=False)


def split_invalid(b):
    """Valid UTF-8 runs and single invalid bytes, as pagoda defines invalid input."""
    s = b.decode("utf-8", errors="surrogateescape")
    parts, cur = [], ""
    for ch in s:
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            if cur:
                parts.append(cur)
            parts.append(ord(ch) - 0xDC00)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return parts


def test_invalid_utf8(model):
    """Each byte of an invalid UTF-8 sequence becomes its byte token; the valid runs around it
    are tokenized as separate texts; decode gives the input bytes back."""
    hf = hf_tokenizer(TOKENIZERS[model])
    byte_tok = {}
    from tokenizers import pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    assert len(alphabet) == 256
    for b, c in zip(bs, cs):
        byte_tok[b] = hf.token_to_id(chr(c))
    rng = random.Random(5)
    cases = [b"\xff", b"abc\xffdef", b"\xc3", b"\xc3(", b"caf\xc3", b"\xe4\xbd", b"\xe4\xbd\xa0\xe4",
             b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b" \x80 \x80\x80x",
             "<|im_start|>".encode() + b"\xfe" + "<|im_end|>".encode(), b"\x00\x01\x7f"]
    for _ in range(300):
        cases.append(bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 30))))
    got = pagoda_encode_batch(TOKENIZERS[model], cases)
    for b, ids in zip(cases, got):
        want = []
        for p in split_invalid(b):
            want += [byte_tok[p]] if isinstance(p, int) else hf.encode(p, add_special_tokens=False).ids
        assert ids == want, (b, ids, want)


def run(args, **kw):
    return subprocess.run([PAGODA] + args, capture_output=True, timeout=120, **kw)


def test_cli_tokenize_detokenize(tmp_path):
    q = TOKENIZERS["qwen"]
    hf = hf_tokenizer(q)
    text = "你好，<|im_start|>world 🎉"
    r = run(["tokenize", "--model", os.path.dirname(q), "--text", text])
    assert r.returncode == 0, r.stderr
    ids = json.loads(r.stdout)
    assert ids == hf.encode(text, add_special_tokens=False).ids
    f = tmp_path / "in.txt"
    f.write_text(text, encoding="utf-8")
    r = run(["tokenize", "--model", q, "--file", str(f)])
    assert json.loads(r.stdout) == ids
    for skip in (False, True):
        r = run(["detokenize", "--model", q, "--ids", ",".join(map(str, ids))] + (["--skip-special"] if skip else []))
        assert r.returncode == 0
        assert r.stdout.decode() == hf.decode(ids, skip_special_tokens=skip)
    # a directory holding only tokenizer files
    d = tmp_path / "tokdir"
    d.mkdir()
    (d / "tokenizer.json").write_bytes(open(TOKENIZERS["gpt2"], "rb").read())
    r = run(["tokenize", "--model", str(d), "--text", "hello world"])
    assert json.loads(r.stdout) == hf_tokenizer(TOKENIZERS["gpt2"]).encode("hello world").ids


def test_cli_errors(tmp_path):
    assert run(["tokenize", "--model", "/nonexistent", "--text", "x"]).returncode == 1
    assert run(["tokenize", "--text", "x"]).returncode == 2
    assert run(["detokenize", "--model", TOKENIZERS["qwen"], "--ids", "1,x"]).returncode == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"type": "WordPiece"}}')
    r = run(["tokenize", "--model", str(bad), "--text", "x"])
    assert r.returncode == 1 and b"not supported" in r.stderr


def test_decode_matches_hf(model):
    hf = hf_tokenizer(TOKENIZERS[model])
    texts = handpicked()
    ids = hf_encode_batch(hf, texts)
    all_ids = [i for x in ids[:30] for i in x]  # one call: every handpicked text concatenated
    for skip in (False, True):
        r = run(["detokenize", "--model", TOKENIZERS[model], "--ids", ",".join(map(str, all_ids))] +
                (["--skip-special"] if skip else []))
        # HF decodes lossily (U+FFFD); pagoda returns the raw bytes (docs/tokenizer.md)
        assert r.stdout.decode(errors="replace") == hf.decode(all_ids, skip_special_tokens=skip)
