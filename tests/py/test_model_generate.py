"""`pagoda generate --prompt-ids` on the golden fixtures: the first generated id is the
transformers reference's greedy token; bad input exits non-zero with one clear line."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "build", "pagoda")
FIX = os.path.join(ROOT, "tests", "fixtures", "models")


def gen(*args):
    return subprocess.run([BIN, "generate", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["qwen2_f32", "llama_bf16_sharded", "gptq_q4_g32_descact"])
def test_first_token_matches_reference(name):
    ref = json.load(open(os.path.join(FIX, name, "ref.json")))
    for prompt, want in zip(ref["prompts"][:3], ref["greedy_next"][:3]):
        r = gen("--model", os.path.join(FIX, name), "--prompt-ids", ",".join(map(str, prompt)), "--max-tokens", "3")
        assert r.returncode == 0, r.stderr
        ids = [int(x) for x in r.stdout.strip().split(",")]
        assert len(ids) == 3 and ids[0] == want


def test_bad_input():
    r = gen("--model", "/nonexistent", "--prompt-ids", "1")
    assert r.returncode == 1 and "config.json" in r.stderr
    r = gen("--model", os.path.join(FIX, "qwen2_f32"), "--prompt-ids", "1,5000")
    assert r.returncode == 1 and "vocabulary" in r.stderr
    r = gen("--model", os.path.join(FIX, "qwen2_f32"), "--prompt-ids", "a,b")
    assert r.returncode == 2
