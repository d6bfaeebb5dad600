"""Tests of the GGUF test tools (tools/gguf_write.py, tools/gguf_read.py): the writer's files
read back exactly, the reference quantizers stay within half a quantization step, and the
numpy dequantizer agrees with an element-by-element transcription of ggml's formulas."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import gguf_read as G  # noqa: E402
import gguf_write as W  # noqa: E402


def test_roundtrip(tmp_path):
    w = W.Writer(version=2, alignment=64)
    w.add("general.architecture", G.STR, "llama")
    w.add("a.u32", G.U32, 7)
    w.add("a.f", G.F32V, 0.5)
    w.add("a.strs", G.ARR, ["x", "ÿ z", ""], G.STR)
    w.add("a.ints", G.ARR, [1, -2, 3], G.I32)
    x = np.arange(96, dtype=np.float32).reshape(3, 32)
    w.add_tensor("t", [32, 3], G.F32, x.tobytes())
    w.add_tensor("q", [32, 3], G.Q8_0, W.quantize_q8_0(x))
    p = tmp_path / "t.gguf"
    w.write(str(p))
    meta, tensors, data = G.read(str(p))
    assert meta["GGUF.version"] == 2 and meta["general.alignment"] == 64
    assert meta["a.u32"] == 7 and meta["a.f"] == 0.5
    assert meta["a.strs"] == ["x", "ÿ z", ""] and meta["a.ints"] == [1, -2, 3]
    t = {t["name"]: t for t in tensors}
    raw = data[t["t"]["offset"]:t["t"]["offset"] + G.tensor_bytes(t["t"])]
    assert np.array_equal(G.dequant(G.F32, raw).reshape(3, 32), x)
    assert t["q"]["offset"] % 64 == 0


def test_quantizers_error_bound():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    # bound in quantization steps: half a step, plus the fp16 rounding of the scale (Q8_0),
    # or one step for the value opposite the block's extreme, clamped at 15 (Q4_0)
    for q, tt, steps, bound in [(W.quantize_q8_0, G.Q8_0, 127, 0.6), (W.quantize_q4_0, G.Q4_0, 8, 1.01),
                                (W.quantize_q5_0, G.Q5_0, 16, 1.01)]:
        y = G.dequant(tt, q(x)).reshape(x.shape)
        step = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / steps
        err = np.abs((y - x).reshape(-1, 32))
        assert np.all(err <= step * bound + 1e-6), (tt, float((err / step).max()))
        assert (err / step).mean() < 0.3  # typical error is far below the bound


def _q4k_scalar(b):
    """Q4_K for one 144-byte block, transcribed loop by loop from ggml's dequantize_row_q4_K."""
    d = np.float32(np.frombuffer(bytes(b[0:2]), "<f2")[0])
    dmin = np.float32(np.frombuffer(bytes(b[2:4]), "<f2")[0])
    sc, q = b[4:16], b[16:144]

    def scale_min(j):
        if j < 4:
            return sc[j] & 63, sc[j + 4] & 63
        return (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)

    out, qi = [], 0
    for j in range(0, 256, 64):
        s1, m1 = scale_min(j // 32)
        s2, m2 = scale_min(j // 32 + 1)
        d1, mm1, d2, mm2 = d * np.float32(s1), dmin * np.float32(m1), d * np.float32(s2), dmin * np.float32(m2)
        out += [d1 * np.float32(q[qi + l] & 0xF) - mm1 for l in range(32)]
        out += [d2 * np.float32(q[qi + l] >> 4) - mm2 for l in range(32)]
        qi += 32
    return np.array(out, np.float32)


def test_q4_k_vectorized_matches_scalar():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=(4, 144), dtype=np.uint8)
    raw[:, 0:4] = (rng.standard_normal((4, 2)).astype(np.float32) * 0.05).astype("<f2").view(np.uint8)
    vec = G.dequant(G.Q4_K, raw.tobytes()).reshape(4, 256)
    for i in range(4):
        assert np.array_equal(vec[i], _q4k_scalar(raw[i]))


def test_get_models_print_without_models(tmp_path):
    import subprocess
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    env = dict(os.environ, PAGODA_MODELS=str(tmp_path))
    r = subprocess.run(["bash", os.path.join(root, "scripts", "get-models.sh"), "--print"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "get-models.sh" in r.stderr
    r = subprocess.run(["bash", os.path.join(root, "scripts", "get-models.sh"), "--bogus"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2
