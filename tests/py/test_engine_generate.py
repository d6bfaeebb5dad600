"""`pagoda generate --input prompts.jsonl` (the whole batch through the engine at once) on a
fixture model: each line's greedy tokens equal `--prompt-ids` run alone; per-line sampling
fields apply; bad lines get an error line without stopping the others; output order is
input order."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "build", "pagoda")
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "qwen2_f32")


def gen(*args):
    return subprocess.run([BIN, "generate", "--model", MODEL, "--kv-cache-memory", "64MiB", *args],
                          capture_output=True, text=True, timeout=120)


def alone(ids, n):
    r = gen("--prompt-ids", ",".join(map(str, ids)), "--max-tokens", str(n))
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.strip().split(",")]


def test_batch_equals_one_by_one(tmp_path):
    prompts = [[(i * 37 + j * 11) % 1000 for j in range(1 + (i * 13) % 60)] for i in range(12)]
    lines = [{"id": f"r{i}", "prompt_token_ids": p, "max_tokens": 3 + i % 5, "temperature": 0,
              "ignore_eos": True} for i, p in enumerate(prompts)]
    lines.insert(3, {"id": "bad", "prompt_token_ids": [1, 2], "top_p": 5})
    lines.insert(6, {"id": "empty"})
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("\n".join(json.dumps(l) for l in lines) + "\n\nnot json\n")
    r = gen("--input", str(inp), "--output", str(out), "--max-num-batched-tokens", "32")
    assert r.returncode == 0, r.stderr
    res = [json.loads(l) for l in out.read_text().splitlines()]
    assert [x["id"] for x in res[:len(lines)]] == [l["id"] for l in lines]
    assert "top_p" in res[3]["error"] and "prompt" in res[6]["error"]
    assert "error" in res[-1]
    for l, x in zip(lines, res):
        if "prompt_token_ids" not in l or "error" in x:
            continue
        o = x["outputs"][0]
        assert o["token_ids"] == alone(l["prompt_token_ids"], l["max_tokens"])
        assert o["finish_reason"] == "length" and x["prompt_tokens"] == len(l["prompt_token_ids"])


def test_stop_ids_n_and_seed(tmp_path):
    ids = [5, 6, 7, 8]
    first = alone(ids, 6)
    lines = [{"prompt_token_ids": ids, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
              "stop_token_ids": [first[2]]},
             {"prompt_token_ids": ids, "max_tokens": 8, "temperature": 1.0, "seed": 7, "n": 3,
              "ignore_eos": True}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(json.dumps(l) for l in lines))
    runs = []
    for _ in range(2):
        r = gen("--input", str(inp))
        assert r.returncode == 0, r.stderr
        runs.append([json.loads(l) for l in r.stdout.splitlines()])
    stop = runs[0][0]["outputs"][0]
    k = first.index(first[2])
    assert stop["token_ids"] == first[:k + 1] and stop["finish_reason"] == "stop"
    assert stop["stop_reason"] == first[2]
    outs = runs[0][1]["outputs"]
    assert len(outs) == 3 and all(len(o["token_ids"]) == 8 for o in outs)
    assert runs[0][1] == runs[1][1]  # seeded: the same samples every run


def test_bad_flags():
    assert gen("--prompt-ids", "1", "--top-p", "2").returncode == 2
    assert gen("--prompt-ids", "1", "--max-num-seqs", "0").returncode == 2
    assert gen("--prompt-ids", "1", "--no-such-flag").returncode == 2
    r = gen("--prompt", "hi")
    assert r.returncode == 1 and "tokenizer" in r.stderr
    r = gen("--prompt-ids", "1,2", "--max-tokens", "1000")
    assert r.returncode == 1 and "max_tokens" in r.stderr
