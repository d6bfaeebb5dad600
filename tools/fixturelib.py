"""Helpers for Pagoda's model fixtures (numpy only; no torch needed).

- st_write: writes a .safetensors file (any dtype, including BF16 given as uint16 bits)
- gptq_quantize: round-to-nearest quantization of a float weight into the exact GPTQ
  checkpoint layout (qweight / qzeros / scales / g_idx), v1 ("gptq") or v2 ("gptq_v2")
- np_forward: a plain numpy Qwen2/Llama forward (float64), used as a cross-check of the
  transformers reference and as the fallback reference when transformers is unavailable.
"""
import json
import struct

import numpy as np

ST_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "I32": (np.int32, 4)}


def st_write(path, tensors, metadata=None):
    """tensors: name -> (dtype string, numpy array). BF16 arrays are uint16 bit patterns."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        dt, arr = tensors[name]
        arr = np.ascontiguousarray(arr.astype(ST_DTYPES[dt][0], copy=False))
        b = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def f32_to_bf16_bits(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def gptq_quantize(w, bits, group_size, sym, desc_act, fmt, rng):
    """w: (out, in) float. Returns (tensors dict name-suffix -> (dtype, array), dequantized w).

    As AutoGPTQ's quantizer: per group and output row, xmin = min(w, 0), xmax = max(w, 0);
    sym: xmax = max(|xmin|, xmax), xmin = -xmax, zero = (maxq + 1) / 2; asym: zero =
    round(-xmin / scale). q = clamp(round(w / scale) + zero, 0, maxq). Scales are stored as
    fp16 and quantization uses the fp16-rounded scale. v1 stores zero - 1 (wrapping)."""
    out_f, in_f = w.shape
    gs = in_f if group_size == -1 else group_size
    ng = (in_f + gs - 1) // gs
    maxq = (1 << bits) - 1
    if desc_act:
        perm = rng.permutation(in_f)
        g_idx = np.empty(in_f, dtype=np.int32)
        g_idx[perm] = np.arange(in_f) // gs
    else:
        g_idx = (np.arange(in_f) // gs).astype(np.int32)
    scales = np.zeros((ng, out_f), np.float16)
    zeros = np.zeros((ng, out_f), np.int64)
    q = np.zeros((out_f, in_f), np.int64)
    deq = np.zeros((out_f, in_f), np.float32)
    for g in range(ng):
        cols = np.nonzero(g_idx == g)[0]
        wg = w[:, cols].astype(np.float32)
        xmin = np.minimum(wg.min(1), 0)
        xmax = np.maximum(wg.max(1), 0)
        if sym:
            xmax = np.maximum(-xmin, xmax)
            xmin = np.where(xmin < 0, -xmax, xmin)
        same = (xmin == 0) & (xmax == 0)
        xmin[same], xmax[same] = -1, 1
        s16 = ((xmax - xmin) / maxq).astype(np.float16)
        s = s16.astype(np.float32)
        z = np.full(out_f, (maxq + 1) // 2) if sym else np.clip(np.round(-xmin / s), 0, maxq).astype(np.int64)
        qg = np.clip(np.round(wg / s[:, None]) + z[:, None], 0, maxq).astype(np.int64)
        q[:, cols] = qg
        deq[:, cols] = (qg - z[:, None]).astype(np.float32) * s[:, None]
        scales[g], zeros[g] = s16, z
    pack = 32 // bits
    qweight = np.zeros((in_f // pack, out_f), np.uint32)
    for i in range(in_f):
        qweight[i // pack] |= (q[:, i].astype(np.uint32) << np.uint32(bits * (i % pack)))
    stored = (zeros - 1) & maxq if fmt == 1 else zeros
    qzeros = np.zeros((ng, out_f // pack), np.uint32)
    for o in range(out_f):
        qzeros[:, o // pack] |= (stored[:, o].astype(np.uint32) << np.uint32(bits * (o % pack)))
    t = {"qweight": ("I32", qweight.view(np.int32)), "qzeros": ("I32", qzeros.view(np.int32)),
         "scales": ("F16", scales), "g_idx": ("I32", g_idx)}
    return t, deq


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x, pos, theta):  # x: (T, H, D)
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    a = pos[:, None].astype(np.float64) * inv[None]
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def np_forward(W, cfg, ids):
    """W: name -> float64 array (HF names, lm_head.weight present). Returns (T, vocab) logits."""
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    T = len(ids)
    pos = np.arange(T)
    x = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)

    def lin(name, v):
        y = v @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = _rms(x, W[p + "input_layernorm.weight"], eps)
        q = _rope(lin(p + "self_attn.q_proj", h).reshape(T, nh, hd), pos, theta)
        k = _rope(lin(p + "self_attn.k_proj", h).reshape(T, nkv, hd), pos, theta)
        v = lin(p + "self_attn.v_proj", h).reshape(T, nkv, hd)
        rep = nh // nkv
        k, v = np.repeat(k, rep, 1), np.repeat(v, rep, 1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, nh * hd)
        x = x + lin(p + "self_attn.o_proj", o)
        h = _rms(x, W[p + "post_attention_layernorm.weight"], eps)
        g, u = lin(p + "mlp.gate_proj", h), lin(p + "mlp.up_proj", h)
        x = x + lin(p + "mlp.down_proj", g / (1 + np.exp(-g)) * u)
    x = _rms(x, W["model.norm.weight"], eps)
    return x @ W["lm_head.weight"].T
