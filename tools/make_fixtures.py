#!/usr/bin/env python3
"""Builds Pagoda's golden model fixtures (tests/fixtures/models/<name>/).

  python3 tools/make_fixtures.py --out DIR [--mode hf|numpy]

--mode hf (the reference; needs torch + transformers, run on the GPU machine's CPU):
  tiny random checkpoints are built with transformers (Qwen2ForCausalLM / LlamaForCausalLM,
  eager attention) and written with its own save_pretrained (dense fp32 / bf16, one sharded).
  GPTQ variants: an fp16 model is saved with save_pretrained, then its linear layers are
  replaced by our round-to-nearest packer (tools/fixturelib.py gptq_quantize) in the exact
  GPTQ tensor layout, and config.json (or quantize_config.json) gets the quantization config.
  Reference logits: transformers in float32 on the CPU, on the weights as stored (bf16/fp16
  upcast; GPTQ dequantized). bf16 models also get logits from a bf16 transformers run.
  Every fixture is cross-checked against tools/fixturelib.py np_forward (float64).
--mode numpy (fallback when transformers is unavailable): checkpoints written by
  fixturelib.st_write with HF tensor names, references from np_forward. Labelled in ref.json.

Per fixture: the checkpoint files, ref.json (prompts, provenance), ref_last.bin (f32
[n_prompts, vocab]: logits of each prompt's last position), ref_full.bin (f32 [len, vocab]:
every position of prompt `full_prompt`), ref_bf16run_last.bin (bf16 models, hf mode only).
"""
import argparse
import json
import os
import shutil
import sys
import traceback
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixturelib as fl  # noqa: E402

VOCAB = 1000
PROMPT_LENS = [1, 6, 17, 40]
FULL_PROMPT = 2

Q = lambda bits, group, sym, desc_act, fmt: dict(bits=bits, group=group, sym=sym, desc_act=desc_act, fmt=fmt)
SPECS = [
    dict(name="qwen2_f32", arch="qwen2", dtype="float32", hidden=64, inter=128, layers=2, heads=4, kv=2, tied=False),
    dict(name="llama_bf16_sharded", arch="llama", dtype="bfloat16", hidden=64, inter=160, layers=3, heads=4, kv=1,
         tied=False, shard="150KB"),
    dict(name="qwen2_bf16_tied", arch="qwen2", dtype="bfloat16", hidden=64, inter=128, layers=2, heads=8, kv=2, tied=True),
    dict(name="gptq_q4_g128_sym", arch="qwen2", dtype="float16", hidden=128, inter=256, layers=2, heads=4, kv=2,
         tied=True, gptq=Q(4, 128, True, False, 1)),
    dict(name="gptq_q4_g32_asym", arch="qwen2", dtype="float16", hidden=128, inter=256, layers=2, heads=4, kv=2,
         tied=True, gptq=Q(4, 32, False, False, 1)),
    dict(name="gptq_q4_g32_descact", arch="qwen2", dtype="float16", hidden=128, inter=256, layers=2, heads=4, kv=2,
         tied=True, gptq=Q(4, 32, True, True, 1)),
    dict(name="gptq_q8_g64_sym_v2", arch="qwen2", dtype="float16", hidden=128, inter=256, layers=2, heads=4, kv=2,
         tied=True, gptq=Q(8, 64, True, False, 2)),
    dict(name="gptq_q4_gall_asym_v2", arch="qwen2", dtype="float16", hidden=128, inter=256, layers=2, heads=4, kv=2,
         tied=True, gptq=Q(4, -1, False, False, 2)),
    dict(name="llama_gptq_q8_g128_asym_descact_qcfg", arch="llama", dtype="float16", hidden=128, inter=256, layers=2,
         heads=4, kv=2, tied=False, qcfg_file=True, gptq=Q(8, 128, False, True, 1)),
]
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
ST_NAME = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def round_to(a, dtype):
    """Rounds float32 values to what a dtype stores; returns (stored array for st_write, f32 values)."""
    if dtype == "float32":
        return a.astype(np.float32), a.astype(np.float32)
    if dtype == "float16":
        h = a.astype(np.float16)
        return h, h.astype(np.float32)
    b = fl.f32_to_bf16_bits(a)
    return b, fl.bf16_bits_to_f32(b)


def rope_theta(cfg):
    rp = cfg.get("rope_parameters") or {}
    return cfg.get("rope_theta") or rp.get("rope_theta") or 10000.0


# ---- numpy mode -----------------------------------------------------------------------------
def np_config(s):
    arch = "Qwen2ForCausalLM" if s["arch"] == "qwen2" else "LlamaForCausalLM"
    c = {"architectures": [arch], "model_type": s["arch"], "hidden_size": s["hidden"],
         "intermediate_size": s["inter"], "num_hidden_layers": s["layers"],
         "num_attention_heads": s["heads"], "num_key_value_heads": s["kv"], "vocab_size": VOCAB,
         "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
         "rope_theta": 1000000.0 if s["arch"] == "qwen2" else 10000.0,
         "tie_word_embeddings": s["tied"], "torch_dtype": s["dtype"], "bos_token_id": 1, "eos_token_id": 2,
         "hidden_act": "silu"}
    if s["arch"] == "llama":
        c["attention_bias"] = False
    return c


def np_weights(s, rng):
    H, I = s["hidden"], s["inter"]
    hd = H // s["heads"]
    W = {"model.embed_tokens.weight": rng.normal(0, 0.5, (VOCAB, H)),
         "model.norm.weight": 1 + 0.1 * rng.normal(size=H)}
    if not s["tied"]:
        W["lm_head.weight"] = rng.normal(0, 0.08, (VOCAB, H))
    dims = {"q_proj": (s["heads"] * hd, H), "k_proj": (s["kv"] * hd, H), "v_proj": (s["kv"] * hd, H),
            "o_proj": (H, s["heads"] * hd), "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
    for l in range(s["layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        W[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        for lin in LINEARS:
            W[p + lin + ".weight"] = rng.normal(0, 0.08, dims[lin.split(".")[1]])
            if s["arch"] == "qwen2" and lin.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                W[p + lin + ".bias"] = rng.normal(0, 0.05, dims[lin.split(".")[1]][0])
    return {k: v.astype(np.float32) for k, v in W.items()}


def np_write_dense(d, s, W):
    t, vals = {}, {}
    for k, v in W.items():
        t[k] = (ST_NAME[s["dtype"]], round_to(v, s["dtype"])[0])
        vals[k] = round_to(v, s["dtype"])[1]
    if s.get("shard"):
        names = sorted(t)
        half = len(names) // 2
        parts = [names[:half], names[half:]]
        wm = {}
        for i, part in enumerate(parts):
            fn = f"model-{i + 1:05d}-of-00002.safetensors"
            fl.st_write(os.path.join(d, fn), {k: t[k] for k in part}, {"format": "pt"})
            wm.update({k: fn for k in part})
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    else:
        fl.st_write(os.path.join(d, "model.safetensors"), t, {"format": "pt"})
    return vals


# ---- hf mode ----------------------------------------------------------------------------------
def hf_model(s, torch):
    import transformers as tf
    kw = dict(vocab_size=VOCAB, hidden_size=s["hidden"], intermediate_size=s["inter"],
              num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
              max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=s["tied"],
              bos_token_id=1, eos_token_id=2, initializer_range=0.08)
    theta = 1000000.0 if s["arch"] == "qwen2" else 10000.0
    cls = tf.Qwen2Config if s["arch"] == "qwen2" else tf.LlamaConfig
    try:
        cfg = cls(**kw, rope_parameters={"rope_type": "default", "rope_theta": theta})
    except TypeError:
        cfg = cls(**kw, rope_theta=theta)
    torch.manual_seed(zlib.crc32(s["name"].encode()) % 1000)
    m = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif "embed" in n:
                p.copy_(0.5 * torch.randn_like(p))
    return m


def hf_logits(m, prompts, torch):
    out = []
    with torch.no_grad():
        for ids in prompts:
            out.append(m(input_ids=torch.tensor([ids])).logits[0].float().numpy())
    return out


# ---- common ------------------------------------------------------------------------------------
def quantize_linears(s, vals, rng):
    """Replaces each layer linear's weight by GPTQ tensors; returns (st tensors, dequantized vals)."""
    g = s["gptq"]
    t, deq = {}, dict(vals)
    for k, v in vals.items():
        base = k[: -len(".weight")]
        if k.endswith(".weight") and any(base.endswith(l) for l in LINEARS):
            qt, w = fl.gptq_quantize(v, g["bits"], g["group"], g["sym"], g["desc_act"], g["fmt"], rng)
            for suf, tv in qt.items():
                t[base + "." + suf] = tv
            deq[k] = w
        else:
            t[k] = ("F16", v.astype(np.float16))
    return t, deq


def gptq_config(s):
    g = s["gptq"]
    return {"quant_method": "gptq", "bits": g["bits"], "group_size": g["group"], "sym": g["sym"],
            "desc_act": g["desc_act"], "checkpoint_format": "gptq" if g["fmt"] == 1 else "gptq_v2",
            "damp_percent": 0.01, "true_sequential": True}


def write_gptq(d, s, vals, rng):
    t, deq = quantize_linears(s, vals, rng)
    for fn in os.listdir(d):
        if fn.endswith(".safetensors") or fn.endswith(".index.json"):
            os.remove(os.path.join(d, fn))
    fl.st_write(os.path.join(d, "model.safetensors"), t, {"format": "pt"})
    cp = os.path.join(d, "config.json")
    cfg = json.load(open(cp))
    if s.get("qcfg_file"):
        json.dump(gptq_config(s), open(os.path.join(d, "quantize_config.json"), "w"), indent=2)
    else:
        cfg["quantization_config"] = gptq_config(s)
    json.dump(cfg, open(cp, "w"), indent=2)
    return deq


def saved_values(d):
    """Every tensor of the saved checkpoint as float32 (bf16 decoded by hand)."""
    from safetensors import safe_open
    vals = {}
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    for fn in files:
        with open(os.path.join(d, fn), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            hdr = json.loads(f.read(n))
            data = f.read()
        for k, e in hdr.items():
            if k == "__metadata__":
                continue
            b0, b1 = e["data_offsets"]
            raw = np.frombuffer(data[b0:b1], dtype=fl.ST_DTYPES[e["dtype"]][0]).reshape(e["shape"])
            vals[k] = fl.bf16_bits_to_f32(raw) if e["dtype"] == "BF16" else raw.astype(np.float32)
    del safe_open
    return vals


def make_one(s, out, mode, prompts):
    d = os.path.join(out, s["name"])
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    rng = np.random.default_rng(zlib.crc32(s["name"].encode()))
    info = {"name": s["name"], "spec": s, "prompts": prompts, "full_prompt": FULL_PROMPT, "vocab": VOCAB}
    torch = None
    if mode == "hf":
        import torch
        import transformers
        m = hf_model(s, torch)
        dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[s["dtype"]]
        m.to(dt).save_pretrained(d, max_shard_size=s.get("shard", "1GB"))
        vals = saved_values(d)
        info["source"] = (f"transformers {transformers.__version__} (torch {torch.__version__}) save_pretrained; "
                          "reference logits: transformers float32 eager attention on CPU")
    else:
        json.dump(np_config(s), open(os.path.join(d, "config.json"), "w"), indent=2)
        json.dump({"bos_token_id": 1, "eos_token_id": [2, 3], "do_sample": True, "temperature": 0.7,
                   "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05},
                  open(os.path.join(d, "generation_config.json"), "w"), indent=2)
        vals = np_write_dense(d, s, np_weights(s, rng))
        info["source"] = "NUMPY FALLBACK: checkpoint by fixturelib.st_write, reference by fixturelib.np_forward (float64)"
    if "gptq" in s:
        vals = write_gptq(d, s, vals, rng)
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = {k: v.astype(np.float64) for k, v in vals.items()}
    if "lm_head.weight" not in W:
        W["lm_head.weight"] = W["model.embed_tokens.weight"]
    ncfg = dict(cfg, rope_theta=rope_theta(cfg))
    np_ref = [fl.np_forward(W, ncfg, ids) for ids in prompts]
    if mode == "hf":
        # a fresh float32 model (so rotary inv_freq is computed in float32, not cast from the
        # saved dtype) holding the stored (or dequantized) values
        import transformers as tf
        rm = tf.AutoModelForCausalLM.from_config(m.config, attn_implementation="eager").float().eval()
        hd = s["hidden"] // s["heads"]
        inv = 1.0 / (rope_theta(cfg) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        for mod in rm.modules():  # default rope init, in float32
            for bn in ("inv_freq", "original_inv_freq"):
                if isinstance(getattr(mod, bn, None), torch.Tensor):
                    getattr(mod, bn).copy_(inv)
        sd = rm.state_dict()
        with torch.no_grad():
            for k, v in vals.items():
                if k in sd:
                    sd[k].copy_(torch.from_numpy(v))
        ref = hf_logits(rm, prompts, torch)
        diff = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(np_ref, ref))
        info["numpy_vs_reference_max_rel_diff"] = diff
        if s["dtype"] == "bfloat16":  # as users run it: from_pretrained in bfloat16
            mb = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager").eval()
            rb = hf_logits(mb, prompts, torch)
            np.stack([r[-1] for r in rb]).astype("<f4").tofile(os.path.join(d, "ref_bf16run_last.bin"))
            info["bf16run_last"] = "ref_bf16run_last.bin"
            info["bf16run_vs_reference_max_rel_diff"] = max(
                float(np.abs(a[-1] - b[-1]).max() / np.abs(b[-1]).max()) for a, b in zip(rb, ref))
    else:
        ref = np_ref
    np.stack([r[-1] for r in ref]).astype("<f4").tofile(os.path.join(d, "ref_last.bin"))
    ref[FULL_PROMPT].astype("<f4").tofile(os.path.join(d, "ref_full.bin"))
    info["greedy_next"] = [int(np.argmax(r[-1])) for r in ref]
    json.dump(info, open(os.path.join(d, "ref.json"), "w"), indent=1)
    print(f"{s['name']}: ok numpy diff {info.get('numpy_vs_reference_max_rel_diff', '')} "
          f"bf16run diff {info.get('bf16run_vs_reference_max_rel_diff', '')}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=["hf", "numpy"], default="hf")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    rng = np.random.default_rng(1234)
    prompts = [[int(x) for x in rng.integers(0, VOCAB, n)] for n in PROMPT_LENS]
    os.makedirs(a.out, exist_ok=True)
    bad = 0
    for s in SPECS:
        if a.only and a.only not in s["name"]:
            continue
        try:
            make_one(s, a.out, a.mode, prompts)
        except Exception:
            bad += 1
            print(f"{s['name']}: FAILED", flush=True)
            traceback.print_exc()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
