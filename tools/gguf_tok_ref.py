#!/usr/bin/env python3
"""Reference token ids from Hugging Face `tokenizers` for the GGUF tokenizer test.

  python3 tools/gguf_tok_ref.py ../shared/models/qwen-tokenizer/tokenizer.json \
      tests/fixtures/gguf/qwen_tok_ref.json
Encodes a fixed list of strings (plus the first customer-service cases) with the Qwen2.5
tokenizer.json; tests/c/test_gguf_tok.c checks that the tokenizer built from the Qwen2.5
GGUF's metadata (tok_load_gguf) produces the same ids.
"""
import json
import os
import sys

from tokenizers import Tokenizer

STRINGS = [
    "Hello, world!", "  leading spaces and trailing   ", "tabs\tand\nnewlines\r\n\n",
    "I've been waiting 3 weeks for order #123456 - it's still not here!!",
    "我的订单已经两个星期了还没有到。请问怎么申请退款？",
    "中英混合 mixed 文本 123 text", "日本語のテキスト", "한국어 텍스트", "Ελληνικά", "emoji 😀🚀 ok",
    "def f(x):\n    return x ** 2  # square\n", "C'est déjà l'été. NAÏVE café", "ﬁ ligature and Å (NFC test: A\u030a)",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "numbers 1234567890 3.14159 1,000,000", "URL https://example.com/a?b=c&d=e", "",
]


def main(tok_path, out):
    tok = Tokenizer.from_file(tok_path)
    strings = list(STRINGS)
    cs = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "customer-service")
    for root, _, files in os.walk(cs):
        for f in sorted(files):
            if f.endswith(".jsonl"):
                for line in open(os.path.join(root, f), encoding="utf-8").readlines()[:6]:
                    rec = json.loads(line)
                    for v in rec.values():
                        if isinstance(v, str) and 20 < len(v) < 2000:
                            strings.append(v)
                            break
    ids = [tok.encode(s, add_special_tokens=False).ids for s in strings]
    json.dump({"how": "HF tokenizers %s on %s, add_special_tokens=False (tools/gguf_tok_ref.py)"
               % (__import__("tokenizers").__version__, os.path.basename(os.path.dirname(tok_path))),
               "strings": strings, "ids": ids}, open(out, "w", encoding="utf-8"), ensure_ascii=False)
    print(len(strings), "strings")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
