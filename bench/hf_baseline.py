"""Hugging Face transformers baseline on the same random Qwen2.5-14B shape: eager attention,
bf16, 512-token random prompts, 150 new greedy tokens, batch 1 and 64. Prints and appends
JSON lines (ms/token at batch 1 = wall time / 150; tokens/s = batch * 150 / wall time)."""
import argparse, json, time
import torch
import transformers
from transformers import AutoModelForCausalLM, Qwen2Config

ap = argparse.ArgumentParser()
ap.add_argument("--json", default=None)
ap.add_argument("--batches", default="1,64")
ap.add_argument("--prompt", type=int, default=512)
ap.add_argument("--new", type=int, default=150)
a = ap.parse_args()

cfg = Qwen2Config(hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
                  num_key_value_heads=8, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
                  rms_norm_eps=1e-5, tie_word_embeddings=False, use_sliding_window=False)
cfg._attn_implementation = "eager"
t0 = time.time()
torch.manual_seed(0)
with torch.device("cuda"):
    try:
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation="eager")
model.eval()
print(f"transformers {transformers.__version__} torch {torch.__version__}; model built in {time.time()-t0:.1f}s;"
      f" attn {model.config._attn_implementation}", flush=True)

def gen(b, new):
    ids = torch.randint(0, 151000, (b, a.prompt), device="cuda")
    mask = torch.ones_like(ids)
    torch.cuda.synchronize()
    t = time.time()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == a.prompt + new
    return time.time() - t

gen(1, 4)  # warm-up
for b in [int(x) for x in a.batches.split(",")]:
    t = gen(b, a.new)
    r = {"mode": "hf_transformers_eager_bf16", "batch": b, "input_len": a.prompt, "output_len": a.new,
         "wall_s": round(t, 3), "ms_per_token": round(t / a.new * 1e3, 2), "tok_per_s": round(b * a.new / t, 1)}
    print("RESULT " + json.dumps(r), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(r) + "\n")
