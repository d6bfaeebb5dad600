"""Builds the small byte-level BPE tokenizer.json fixtures in tests/fixtures/tok/ with the
Hugging Face `tokenizers` package (offline training on local text). Run from the repo root:
    python3 tests/py/make_tok_fixtures.py
The outputs are committed; this script documents how they were made. It also writes
golden.jsonl (HF ids for a few texts under each tokenizer) for the C tests.

  gpt2.json    GPT-2 style: ByteLevel(use_regex, no prefix space), <|endoftext|>, merges as "a b"
  smollm.json  SmolLM style: Sequence[Digits(individual), ByteLevel(use_regex)], ChatML specials
  llama3.json  Llama-3 style: Sequence[Split(llama3 regex, Isolated), ByteLevel(no regex)],
               ignore_merges, 64 reserved special tokens, NFC-free
  edge.json    NFC + ByteLevel(add_prefix_space) + added tokens with lstrip/rstrip/single_word/
               normalized, special and not; merges as pairs
"""
import glob
import json
import os

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import AddedToken

OUT = "tests/fixtures/tok"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus():
    texts = []
    for line in open("../shared/datasets/customer-service/cases.jsonl", encoding="utf-8"):
        case = json.loads(line)
        texts += [m["content"] for m in case["messages"]]
        texts.append(case.get("reference_reply", ""))
    for p in sorted(glob.glob("../shared/datasets/customer-service/*.txt") + glob.glob("../shared/docs/*.md")):
        texts.append(open(p, encoding="utf-8").read())
    for p in sorted(glob.glob("src/*/*.[ch]")):
        texts.append(open(p, encoding="utf-8").read())
    texts.append("café naïve résumé Ångström 😀👍🏽👨‍👩‍👧 Привет мир Γειά σου κόσμε مرحبا नमस्ते こんにちは 안녕하세요")
    return texts


def train(pre, vocab_size, special, normalizer=None):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    return tok


def merges_as_strings(path):
    d = json.load(open(path, encoding="utf-8"))
    d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
    json.dump(d, open(path, "w", encoding="utf-8"), ensure_ascii=False, indent=1)


def llama3_ignore_merges(path):
    """ignore_merges, plus whole words in the vocab that no merge sequence reaches, so that the
    flag changes the result (as in Llama-3, whose vocab has such words)."""
    d = json.load(open(path, encoding="utf-8"))
    d["model"]["ignore_merges"] = True
    vocab = d["model"]["vocab"]
    for w in ["Ġzyxwv", "qqqq", "Ġ12345", "Ġä½łå¥½åķĬ"]:  # " 你好啊"
        if w not in vocab:
            vocab[w] = len(vocab)
    n = len(vocab)
    for a in d["added_tokens"]:  # keep added-token ids past the vocab
        if a["id"] < n and a["content"] not in vocab:
            raise SystemExit("added token id collides with the new vocab entries")
    json.dump(d, open(path, "w", encoding="utf-8"), ensure_ascii=False, indent=1)


def main():
    os.makedirs(OUT, exist_ok=True)
    t = train(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), 3000, ["<|endoftext|>"])
    t.save(f"{OUT}/gpt2.json")
    merges_as_strings(f"{OUT}/gpt2.json")

    t = train(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
              3000, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    t.save(f"{OUT}/smollm.json")

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>", "<|python_tag|>"] + [f"<|reserved_special_token_{i}|>" for i in range(58)]
    t = train(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
              4000, special)
    t.save(f"{OUT}/llama3.json")
    llama3_ignore_merges(f"{OUT}/llama3.json")

    t = train(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), 2000, ["<s>", "</s>"],
              normalizer=normalizers.Sequence([normalizers.NFC()]))
    t.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False),
                          AddedToken("[SEP]", lstrip=False, rstrip=True, normalized=False)])
    t.add_tokens([AddedToken("fooword", single_word=True, normalized=False),
                  AddedToken("é!", normalized=True),
                  AddedToken("<tool>", normalized=False),
                  AddedToken("  ", normalized=False)])
    t.save(f"{OUT}/edge.json")




GOLDEN_TEXTS = [
    "Hello, world! It's a test. I'll we've they're DON'T",
    "你好，我在你们家买的那件长款羽绒服，订单LT2312083309，12月8号签收的，699元。",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 🏳️‍🌈 and combining e\u0301 a\u0308 \u212b",
    "full-width 【测试】（括号）：“引号” ＡＢＣ１２３　全角",
    "code:\n\tint main(void) {\n\t\treturn 0;   // done\n\t}\n\n\n",
    "mixed Привет мир Γειά σου مرحبا नमस्ते こんにちは 안녕하세요",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\nok</think>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "edge: a <mask> b   <mask>c [SEP]  d fooword xfooword é! <tool>x  y",
    "   spaces   and\ttabs\r\n\r\n  ",
    "ignore_merges: zyxwv qqqq 12345 你好啊",
]


def golden():
    """tests/fixtures/tok/golden.jsonl: HF ids for GOLDEN_TEXTS under every fixture tokenizer
    (and the Qwen one), read by tests/c/test_tok.c."""
    models = {"qwen": "../shared/models/qwen-tokenizer/tokenizer.json"}
    for name in ("gpt2", "smollm", "llama3", "edge"):
        models[name] = f"{OUT}/{name}.json"
    with open(f"{OUT}/golden.jsonl", "w", encoding="utf-8") as f:
        for name, path in models.items():
            tok = Tokenizer.from_file(path)
            for text in GOLDEN_TEXTS:
                ids = tok.encode(text, add_special_tokens=False).ids
                dec = tok.decode(ids, skip_special_tokens=True)
                f.write(json.dumps({"model": name, "text": text, "ids": ids, "decoded_skip_special": dec},
                                   ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if not os.environ.get("GOLDEN_ONLY"):  # GOLDEN_ONLY=1: keep the tokenizers, redo golden.jsonl
        main()
    golden()
