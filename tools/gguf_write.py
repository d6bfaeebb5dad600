#!/usr/bin/env python3
"""A GGUF writer of our own (test tool), written from the GGUF spec (ggml docs/gguf.md).

  gguf_write.py convert HF_DIR OUT.gguf [f32|bf16|q8_0|q5_0|q4_0]
      Hugging Face Qwen2/Llama checkpoint (config.json, *.safetensors, tokenizer.json) -> GGUF,
      2-D weights quantized with ggml's reference Q8_0/Q4_0 quantizers (norms, biases F32);
      for llama the Q/K rows are permuted as llama.cpp's converter does.
  gguf_write.py bad-fixtures DIR
      A tiny valid llama GGUF and broken variants (missing tensor, wrong shape, unsupported
      architecture, rope scaling) for the importer's error tests.
  gguf_write.py dequant-fixture OUT.gguf
      Random blocks of every supported type plus their dequantized values computed by
      tools/gguf_read.py (numpy), stored as F32 tensors "ref.<name>".
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_read as G  # noqa: E402

U32, I32, F32V, BOOL, STR, ARR, U64 = G.U32, G.I32, G.F32V, G.BOOL, G.STR, G.ARR, G.U64


def _s(x):
    b = x.encode("utf-8") if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


class Writer:
    def __init__(self, version=3, alignment=32):
        self.version, self.alignment = version, alignment
        self.kv, self.tensors = [], []

    def add(self, key, vtype, value, elem=None):
        self.kv.append((key, vtype, value, elem))

    def add_tensor(self, name, ne, ttype, raw):
        self.tensors.append((name, list(ne), ttype, bytes(raw)))

    def _value(self, vtype, v, elem):
        if vtype == STR:
            return _s(v)
        if vtype == ARR:
            out = struct.pack("<IQ", elem, len(v))
            if elem == STR:
                return out + b"".join(_s(x) for x in v)
            return out + np.asarray(v, dtype=G._SCALAR[elem]).tobytes()
        return struct.pack(G._SCALAR[vtype], v)

    def write(self, path):
        kvs = list(self.kv)
        if self.alignment != 32:
            kvs.append(("general.alignment", U32, self.alignment, None))
        head = b"GGUF" + struct.pack("<IQQ", self.version, len(self.tensors), len(kvs))
        for k, t, v, e in kvs:
            head += _s(k) + struct.pack("<I", t) + self._value(t, v, e)
        off, offs = 0, []
        for name, ne, tt, raw in self.tensors:
            offs.append(off)
            off += (len(raw) + self.alignment - 1) // self.alignment * self.alignment
        for (name, ne, tt, raw), o in zip(self.tensors, offs):
            head += _s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            head += struct.pack("<IQ", tt, o)
        pad = (-len(head)) % self.alignment
        with open(path, "wb") as f:
            f.write(head + b"\0" * pad)
            for name, ne, tt, raw in self.tensors:
                f.write(raw + b"\0" * ((-len(raw)) % self.alignment))


def quantize_q8_0(x):
    """ggml quantize_row_q8_0_ref: d = amax/127, q = round(x/d)."""
    x = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    d = amax / np.float32(127)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.round(x * idv)  # roundf: half away from zero; differs from np.round only on exact .5
    q = np.where(np.abs(x * idv - np.trunc(x * idv)) == 0.5, np.trunc(x * idv) + np.sign(x * idv), q)
    out = np.empty((x.shape[0], 34), np.uint8)
    out[:, 0:2] = d.astype("<f2").view(np.uint8)
    out[:, 2:] = q.astype(np.int8).view(np.uint8)
    return out.tobytes()


def quantize_q4_0(x):
    """ggml quantize_row_q4_0_ref: d = (value of max |x|) / -8, q = min(15, (int8)(x/d + 8.5))."""
    x = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(x).argmax(axis=1)
    mx = x[np.arange(x.shape[0]), idx][:, None]
    d = mx / np.float32(-8)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(15, np.trunc(x * idv + np.float32(8.5)).astype(np.int8)).astype(np.uint8)
    out = np.empty((x.shape[0], 18), np.uint8)
    out[:, 0:2] = d.astype("<f2").view(np.uint8)
    out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
    return out.tobytes()


def quantize_q5_0(x):
    """ggml quantize_row_q5_0_ref: d = (value of max |x|) / -16, q = min(31, (int8)(x/d + 16.5)),
    low nibbles in qs (first 16 values low, last 16 high), 5th bits in the u32 qh."""
    x = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(x).argmax(axis=1)
    mx = x[np.arange(x.shape[0]), idx][:, None]
    d = mx / np.float32(-16)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(31, np.trunc(x * idv + np.float32(16.5)).astype(np.int8)).astype(np.uint32)
    qh = np.zeros(x.shape[0], np.uint32)
    for j in range(16):
        qh |= ((q[:, j] >> 4) & 1) << j
        qh |= ((q[:, j + 16] >> 4) & 1) << (j + 16)
    out = np.empty((x.shape[0], 22), np.uint8)
    out[:, 0:2] = d.astype("<f2").view(np.uint8)
    out[:, 2:6] = qh.astype("<u4").view(np.uint8).reshape(-1, 4)
    out[:, 6:] = ((q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)).astype(np.uint8)
    return out.tobytes()


def llama_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf permute: rotate-half pairs -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


TENSOR_MAP = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
              "post_attention_layernorm": "ffn_norm"}


def _gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")  # model.layers.N.<module>.<sub>.weight
    mod = ".".join(parts[3:-1])
    return "blk.%s.%s.%s" % (parts[2], TENSOR_MAP[mod], parts[-1])


def _tokenizer_kv(w, hf_dir, pre):
    tj = json.load(open(os.path.join(hf_dir, "tokenizer.json"), encoding="utf-8"))
    vocab = dict(tj["model"]["vocab"])
    special = set()
    for a in tj.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
        special.add(a["id"])
    n = max(vocab.values()) + 1
    toks, types = ["[PAD%d]" % i for i in range(n)], [5] * n  # 5: unused
    for t, i in vocab.items():
        toks[i], types[i] = t, (3 if i in special else 1)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add("tokenizer.ggml.model", STR, "gpt2")
    w.add("tokenizer.ggml.pre", STR, pre)
    w.add("tokenizer.ggml.tokens", ARR, toks, STR)
    w.add("tokenizer.ggml.token_type", ARR, types, I32)
    w.add("tokenizer.ggml.merges", ARR, merges, STR)
    tc = os.path.join(hf_dir, "tokenizer_config.json")  # as llama.cpp's converter: the template too
    tmpl = json.load(open(tc, encoding="utf-8")).get("chat_template") if os.path.exists(tc) else None
    if isinstance(tmpl, str):
        w.add("tokenizer.chat_template", STR, tmpl)
    return n


def load_safetensors(path):
    """All tensors of a .safetensors file as float32 numpy arrays (BF16 included)."""
    raw = open(path, "rb").read()
    n = struct.unpack_from("<Q", raw, 0)[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for name, info in head.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[8 + n + b:8 + n + e]
        dt = info["dtype"]
        if dt == "BF16":
            a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, {"F32": "<f4", "F16": "<f2"}[dt]).astype(np.float32)
        out[name] = a.reshape(info["shape"])
    return out


def convert(hf_dir, out, qtype="q8_0"):
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    arch = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}[cfg["architectures"][0]]
    t = {}
    for f in sorted(os.listdir(hf_dir)):
        if f.endswith(".safetensors"):
            t.update(load_safetensors(os.path.join(hf_dir, f)))
    w = Writer()
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    w.add("general.architecture", STR, arch)
    w.add("general.name", STR, "pagoda test model")
    for k, v, ty in [("block_count", cfg["num_hidden_layers"], U32),
                     ("context_length", cfg.get("max_position_embeddings", 2048), U32),
                     ("embedding_length", cfg["hidden_size"], U32),
                     ("feed_forward_length", cfg["intermediate_size"], U32),
                     ("attention.head_count", nh, U32), ("attention.head_count_kv", nkv, U32),
                     ("rope.freq_base", float(cfg.get("rope_theta") or
                                             cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)), F32V),
                     ("attention.layer_norm_rms_epsilon", float(cfg["rms_norm_eps"]), F32V)]:
        w.add("%s.%s" % (arch, k), ty, v)
    if "head_dim" in cfg:
        w.add("%s.attention.key_length" % arch, U32, cfg["head_dim"])
    if os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
        _tokenizer_kv(w, hf_dir, "qwen2" if arch == "qwen2" else "llama-bpe")
    eos = cfg.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0]
    if eos is not None:
        w.add("tokenizer.ggml.eos_token_id", U32, eos)
    if cfg.get("bos_token_id") is not None:
        w.add("tokenizer.ggml.bos_token_id", U32, cfg["bos_token_id"])
    for name in sorted(t):
        x = t[name].astype(np.float32)
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            x = llama_permute(x, nh)
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            x = llama_permute(x, nkv)
        ne = list(reversed(x.shape))
        if x.ndim == 2 and qtype == "bf16":
            raw, tt = (x.view(np.uint32) >> 16).astype("<u2").tobytes(), G.BF16  # exact for bf16 sources
        elif x.ndim == 2 and qtype not in ("f32", "bf16") and x.shape[1] % 32 == 0:
            raw, tt = {"q8_0": (quantize_q8_0, G.Q8_0), "q4_0": (quantize_q4_0, G.Q4_0),
                       "q5_0": (quantize_q5_0, G.Q5_0)}[qtype]
            raw = raw(x)
        else:
            raw, tt = x.astype("<f4").tobytes(), G.F32
        w.add_tensor(_gguf_name(name), ne, tt, raw)
    w.write(out)


def _random_blocks(rng, ttype, nblk):
    per, nb = G.BLOCK[ttype]
    raw = rng.integers(0, 256, size=(nblk, nb), dtype=np.uint8)
    f16 = lambda n: (rng.standard_normal((nblk, n)).astype(np.float32) * 0.05).astype("<f2").view(np.uint8)  # noqa: E731
    if ttype in (G.Q4_0, G.Q8_0, G.Q5_0):
        raw[:, 0:2] = f16(1)
    elif ttype in (G.Q4_1, G.Q5_1, G.Q4_K, G.Q5_K):
        raw[:, 0:4] = f16(2)
    elif ttype == G.Q6_K:
        raw[:, 208:210] = f16(1)
    elif ttype == G.F16:
        raw = rng.standard_normal(nblk).astype("<f2").view(np.uint8).reshape(nblk, 2)
    elif ttype == G.BF16:
        raw = (rng.standard_normal(nblk).astype(np.float32).view(np.uint32) >> 16).astype("<u2").view(np.uint8).reshape(nblk, 2)
    elif ttype == G.F32:
        raw = rng.standard_normal(nblk).astype("<f4").view(np.uint8).reshape(nblk, 4)
    return raw.tobytes()


def dequant_fixture(out):
    rng = np.random.default_rng(1234)
    w = Writer(alignment=64)
    w.add("general.architecture", STR, "test")
    w.add("test.note", STR, "random ggml blocks; ref.* = tools/gguf_read.py dequant (numpy)")
    for tt in [G.F32, G.F16, G.BF16, G.Q4_0, G.Q4_1, G.Q5_0, G.Q5_1, G.Q8_0, G.Q4_K, G.Q5_K, G.Q6_K]:
        per, nb = G.BLOCK[tt]
        rows, cols = 3, 512
        raw = _random_blocks(rng, tt, rows * cols // per)
        name = G.TYPE_NAMES[tt]
        w.add_tensor(name, [cols, rows], tt, raw)
        w.add_tensor("ref." + name, [cols, rows], G.F32, G.dequant(tt, raw).astype("<f4").tobytes())
    w.write(out)


def tiny_model(path, arch="llama", drop=None, reshape=None, bad_type=None, extra_kv=()):
    """A 1-layer random model (hidden 32, 2 heads, vocab 64) for importer error tests."""
    rng = np.random.default_rng(5)
    w = Writer()
    w.add("general.architecture", STR, arch)
    for k, v in [("block_count", 1), ("embedding_length", 32), ("feed_forward_length", 64),
                 ("attention.head_count", 2), ("attention.head_count_kv", 2), ("context_length", 128)]:
        w.add("%s.%s" % (arch, k), U32, v)
    w.add("%s.attention.layer_norm_rms_epsilon" % arch, F32V, 1e-5)
    for k, t, v in extra_kv:
        w.add(k, t, v)
    shapes = {"token_embd.weight": [32, 64], "output_norm.weight": [32], "blk.0.attn_norm.weight": [32],
              "blk.0.ffn_norm.weight": [32], "blk.0.attn_q.weight": [32, 32], "blk.0.attn_k.weight": [32, 32],
              "blk.0.attn_v.weight": [32, 32], "blk.0.attn_output.weight": [32, 32],
              "blk.0.ffn_gate.weight": [32, 64], "blk.0.ffn_up.weight": [32, 64], "blk.0.ffn_down.weight": [64, 32]}
    for name, ne in shapes.items():
        if name == drop:
            continue
        if name == reshape:
            ne = list(reversed(ne)) if len(ne) == 2 else [ne[0] * 2]
        x = rng.standard_normal(int(np.prod(ne))).astype(np.float32)
        if name == bad_type:
            w.add_tensor(name, ne, 10, bytes(int(np.prod(ne)) // 256 * 84 or 84))  # Q2_K
        else:
            w.add_tensor(name, ne, G.F32, x.tobytes())
    w.write(path)


def bad_fixtures(d):
    os.makedirs(d, exist_ok=True)
    tiny_model(os.path.join(d, "tiny_ok.gguf"))
    tiny_model(os.path.join(d, "tiny_missing.gguf"), drop="blk.0.ffn_up.weight")
    tiny_model(os.path.join(d, "tiny_shape.gguf"), reshape="blk.0.ffn_down.weight")
    tiny_model(os.path.join(d, "tiny_gemma3.gguf"), arch="gemma3")
    tiny_model(os.path.join(d, "tiny_rope_scaling.gguf"), extra_kv=[("llama.rope.scaling.type", STR, "yarn")])


if __name__ == "__main__":
    if sys.argv[1] == "convert":
        convert(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "q8_0")
    elif sys.argv[1] == "bad-fixtures":
        bad_fixtures(sys.argv[2])
    elif sys.argv[1] == "dequant-fixture":
        dequant_fixture(sys.argv[2])
    else:
        sys.exit(__doc__)
