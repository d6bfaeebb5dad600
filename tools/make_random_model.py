#!/usr/bin/env python3
"""Writes a random-weight Qwen2 checkpoint (default: Qwen2.5-0.5B shapes) for benchmarks.

  python3 tools/make_random_model.py --out models/rand-0.5b-bf16 [--gptq-int4] [--layers 24 ...]

bf16: every weight N(0, 0.02) (norms 1), tied embeddings. --gptq-int4: layer linears as
GPTQ (bits 4, group 128, sym, checkpoint_format gptq) with random packed values, fp16 scales
and embeddings. Tensors are generated and written one at a time (streaming), so memory stays
small. The logits are meaningless; only shapes, dtypes and bytes matter.
"""
import argparse
import json
import os
import struct

import numpy as np


def bf16_random(rng, shape, std):
    a = (rng.standard_normal(shape, dtype=np.float32) * std).view(np.uint32)
    return (a >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=4864)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--gptq-int4", action="store_true")
    a = ap.parse_args()
    H, I, V, hd = a.hidden, a.intermediate, a.vocab, a.hidden // a.heads
    rng = np.random.default_rng(0)
    emb_dt = "F16" if a.gptq_int4 else "BF16"
    # name -> (dtype, shape, generator)
    specs = [("model.embed_tokens.weight", emb_dt, (V, H)), ("model.norm.weight", emb_dt, (H,))]
    lin = {"self_attn.q_proj": (a.heads * hd, H), "self_attn.k_proj": (a.kv_heads * hd, H),
           "self_attn.v_proj": (a.kv_heads * hd, H), "self_attn.o_proj": (H, a.heads * hd),
           "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
    for l in range(a.layers):
        p = f"model.layers.{l}."
        specs += [(p + "input_layernorm.weight", emb_dt, (H,)), (p + "post_attention_layernorm.weight", emb_dt, (H,))]
        for n, (o, i) in lin.items():
            if a.gptq_int4:
                g = i // 128
                specs += [(p + n + ".qweight", "I32", (i // 8, o)), (p + n + ".qzeros", "I32", (g, o // 8)),
                          (p + n + ".scales", "F16", (g, o)), (p + n + ".g_idx", "I32", (i,))]
            else:
                specs.append((p + n + ".weight", "BF16", (o, i)))
            if n.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                specs.append((p + n + ".bias", emb_dt, (o,)))
    size = {"BF16": 2, "F16": 2, "I32": 4}
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape in specs:
        nb = int(np.prod(shape)) * size[dt]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, dt, shape in specs:
            if name.endswith("norm.weight"):
                arr = np.full(shape, 1.0, np.float16) if dt == "F16" else np.full(shape, 0x3F80, np.uint16)
            elif name.endswith(".qweight"):
                arr = rng.integers(0, 2**32, shape, dtype=np.uint32)
            elif name.endswith(".qzeros"):
                arr = np.full(shape, 0x77777777, np.uint32)  # v1 stores zero - 1 = 7
            elif name.endswith(".scales"):
                arr = np.full(shape, 0.002, np.float16)
            elif name.endswith(".g_idx"):
                arr = (np.arange(shape[0]) // 128).astype(np.int32)
            elif dt == "F16":
                arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
            else:
                arr = bf16_random(rng, shape, 0.02)
            f.write(np.ascontiguousarray(arr).tobytes())
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
           "num_key_value_heads": a.kv_heads, "vocab_size": V, "max_position_embeddings": 32768,
           "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
           "torch_dtype": "float16" if a.gptq_int4 else "bfloat16", "bos_token_id": 151643,
           "eos_token_id": 151645, "use_sliding_window": False}
    if a.gptq_int4:
        cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True,
                                      "desc_act": False, "checkpoint_format": "gptq"}
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    print(f"wrote {a.out}: {off / 1e6:.0f} MB of tensors")


if __name__ == "__main__":
    main()
