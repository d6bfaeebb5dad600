"""Markdown tables from bench results.jsonl files (pagoda bench + hf_baseline.py lines).
Floors: decode = step_bytes / measured copy bandwidth; prefill = FLOPs / measured GEMM rate.
Usage: python3 bench/summarize.py results.jsonl [more.jsonl ...]"""
import json, sys

rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.strip()]
ceil = [r for r in rows if r["mode"] == "ceilings"]
bw = max(r["copy_GBps"] for r in ceil) * 1e9 if ceil else 0
fl = max(r["bf16_gemm_TFLOPs"] for r in ceil) * 1e12 if ceil else 0
print(f"Ceilings measured in the same session: copy {bw/1e9:.0f} GB/s (read+write), cuBLAS bf16 GEMM {fl/1e12:.0f} TFLOP/s\n")
print("| model | KV | batch | input | output | decode ms/step (median) | floor ms | decode tok/s | end-to-end tok/s | prefill s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    if r["mode"] in ("latency", "throughput"):
        floor = r["step_bytes"] / bw * 1e3 if bw else 0
        print(f"| {r.get('model','?')} | {r.get('kv','BF16')} | {r['batch']} | {r['input_len']} | {r['output_len']} | "
              f"{r['decode_ms_per_step_median']:.2f} | {floor:.2f} | {r['decode_tok_per_s']:.0f} | {r['e2e_tok_per_s']:.0f} | {r['prefill_s']:.2f} |")
print("\n| model | KV | prompt tokens | prefill ms (median) | floor ms | TFLOP/s achieved |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    if r["mode"] == "prefill":
        print(f"| {r.get('model','?')} | {r.get('kv','BF16')} | {r['prompt_len']} | {r['prefill_ms_median']:.1f} | "
              f"{r['flops']/fl*1e3 if fl else 0:.1f} | {r['tflops_achieved']:.0f} |")
hf = [r for r in rows if r["mode"].startswith("hf_")]
if hf:
    print("\n| HF transformers (eager, bf16) | batch | input | output | wall s | ms/token | tok/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in hf:
        print(f"| {r['mode']} | {r['batch']} | {r['input_len']} | {r['output_len']} | {r['wall_s']} | {r['ms_per_token']} | {r['tok_per_s']} |")
