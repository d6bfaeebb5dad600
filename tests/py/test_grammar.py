"""Grammar engine correctness on the real Qwen vocabulary (issue 7, item 5).

A C driver (bench/grammar_bench.c, built here against build/libpagoda.a) random-walks the token
mask for every schema / regex / choice / grammar: uniform over allowed tokens (a high-temperature
sampler stand-in), EOS often when allowed. The driver itself fails when accept_token disagrees
with the mask. Here every finished output must parse and validate with python jsonschema
(Draft 2020-12 format checks), regex outputs must re.fullmatch, choice outputs must be one of the
choices. Unsupported keywords/constructs must fail compile with an error naming them.
"""
import glob
import json
import os
import re
import subprocess

import jsonschema
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VOCAB = os.path.join(ROOT, "..", "shared", "models", "qwen-tokenizer", "tokenizer.json")
SCHEMAS = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "schemas", "*.json")))
DRIVER = os.path.join(ROOT, "build", "bench", "grammar_bench")
SAMPLES = 6

pytestmark = pytest.mark.skipif(not os.path.exists(VOCAB), reason="Qwen tokenizer.json not available")


def _pkg_libs():
    out = subprocess.run(["pkg-config", "--libs", "jansson"], capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else ["-ljansson"]


@pytest.fixture(scope="module")
def driver():
    subprocess.run(["make", "-s", "-j2", "build/libpagoda.a"], cwd=ROOT, check=True)
    os.makedirs(os.path.dirname(DRIVER), exist_ok=True)
    cmd = ["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-Isrc",
           "bench/grammar_bench.c", "build/libpagoda.a", *_pkg_libs(), "-lm", "-lpthread", "-o", DRIVER]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return DRIVER


def run(driver, cmd, kind, specs, *extra):
    args = [driver, cmd, "--vocab", VOCAB, "--kind", kind, *extra]
    for s in specs:
        args += ["--spec", s]
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return p, [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def write_specs(tmp_path, items):
    paths = []
    for i, text in enumerate(items):
        path = tmp_path / f"spec{i}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def schema_outputs(driver):
    p, rows = run(driver, "gen", "json_schema", SCHEMAS, "--n", str(SAMPLES), "--seed", "11")
    assert p.returncode == 0, p.stderr[-2000:]
    by = {}
    for r in rows:
        by.setdefault(r["spec"], []).append(r)
    return by


def test_fixture_set_size():
    names = [os.path.basename(s) for s in SCHEMAS]
    assert "customer_service_extraction.json" in names
    assert len(SCHEMAS) >= 51


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=[os.path.basename(s)[:-5] for s in SCHEMAS])
def test_schema_outputs_validate(schema_outputs, schema_path):
    schema = json.load(open(schema_path, encoding="utf-8"))
    rows = schema_outputs[schema_path]
    assert len(rows) == SAMPLES
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = validator_cls(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    finished = [r for r in rows if r["finished"]]
    # A walk that hits the token limit is a length-truncated output (finish_reason "length");
    # most walks must finish, and every finished one must be valid.
    assert len(finished) >= SAMPLES // 2, f"only {len(finished)} of {SAMPLES} walks finished"
    for r in finished:
        assert r["text"] is not None, "output is not valid UTF-8"
        value = json.loads(r["text"])
        errors = list(validator.iter_errors(value))
        assert not errors, f"{r['text']!r}: {errors[0].message}"


REGEXES = [
    r"[a-z]{3,8}@[a-z]{2,5}\.(com|org|net)",
    r"\d{3}-\d{4}",
    r"(yes|no|maybe)",
    r"[A-Z][a-z]*( [A-Z][a-z]*){0,3}",
    r"0x[0-9a-fA-F]{1,8}",
    r"\w+\s\w+",
    r"[^\n]{1,20}",
    r"(ab|cd)*e?",
    r"[αβγ]{2}[中文]+\.",
    r"\(\d+(\.\d+)?\)",
    r"[-+]?[0-9]{1,4}(,[0-9]{3})*",
    r"(?:https?://)?[a-z0-9]+\.[a-z]{2,3}/?",
]


def test_regex_outputs_match(driver, tmp_path):
    specs = write_specs(tmp_path, REGEXES)
    p, rows = run(driver, "gen", "regex", specs, "--n", "8", "--seed", "5")
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(rows) == 8 * len(REGEXES)
    n_fin = 0
    for r in rows:
        pattern = REGEXES[specs.index(r["spec"])]
        if not r["finished"]:
            continue
        n_fin += 1
        assert re.fullmatch(pattern, r["text"]), (pattern, r["text"])
    assert n_fin >= len(rows) * 3 // 4


CHOICES = [["yes", "no"], ["positive", "negative", "neutral", "mixed feelings"],
           ["北京", "上海", "深圳"], ["a", "ab", "abc"], ["{\"json\": 1}", "plain text"]]


def test_choice_outputs_exact(driver, tmp_path):
    specs = write_specs(tmp_path, [json.dumps(c, ensure_ascii=False) for c in CHOICES])
    p, rows = run(driver, "gen", "choice", specs, "--n", "12", "--seed", "9")
    assert p.returncode == 0, p.stderr[-2000:]
    seen = set()
    for r in rows:
        choices = CHOICES[specs.index(r["spec"])]
        assert r["finished"]
        assert r["text"] in choices, r["text"]
        seen.add(r["text"])
    assert len(seen) >= 8  # the walk explores, not always the same choice


EBNF = [
    # arithmetic: checked by a Python regex of the same language (no nesting) and by eval
    ('root ::= expr\nexpr ::= term ((" + " | " - ") term)*\nterm ::= num ("*" num)?\nnum ::= [1-9] [0-9]{0,3}\n',
     r"[1-9][0-9]{0,3}(\*[1-9][0-9]{0,3})?(( \+ | - )[1-9][0-9]{0,3}(\*[1-9][0-9]{0,3})?)*"),
    # nested parentheses (recursion): balanced check below
    ('root ::= group\ngroup ::= "(" (group | "x")* ")"\n', None),
    # GBNF classes, comments, repetition
    ('# a list\nroot ::= "[" item ("," item){0,4} "]"\nitem ::= [a-c]+ | "\\"q\\""\n',
     r'\[([a-c]+|"q")(,([a-c]+|"q")){0,4}\]'),
]


def balanced(s):
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return False
        elif ch != "x":
            return False
    return depth == 0 and s.startswith("(")


def test_ebnf_outputs_match(driver, tmp_path):
    specs = write_specs(tmp_path, [g for g, _ in EBNF])
    p, rows = run(driver, "gen", "ebnf", specs, "--n", "10", "--seed", "4")
    assert p.returncode == 0, p.stderr[-2000:]
    n_fin = 0
    for r in rows:
        _, pattern = EBNF[specs.index(r["spec"])]
        if not r["finished"]:
            continue
        n_fin += 1
        if pattern:
            assert re.fullmatch(pattern, r["text"]), (pattern, r["text"])
        else:
            assert balanced(r["text"]), r["text"]
    assert n_fin >= len(rows) // 2


TOOL_SCHEMA = {"type": "object", "properties": {
    "name": {"const": "get_weather"},
    "arguments": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                  "required": ["city"], "additionalProperties": False}},
    "required": ["name", "arguments"], "additionalProperties": False}


def test_ebnf_embedded_schema_tool_call(driver, tmp_path):
    grammar = 'root ::= "<tool_call>\\n" %json ' + json.dumps(TOOL_SCHEMA) + ' "\\n</tool_call>"\n'
    specs = write_specs(tmp_path, [grammar])
    p, rows = run(driver, "gen", "ebnf", specs, "--n", "8", "--seed", "8")
    assert p.returncode == 0, p.stderr[-2000:]
    fin = [r for r in rows if r["finished"]]
    assert len(fin) >= 4
    for r in fin:
        m = re.fullmatch(r"<tool_call>\n(.*)\n</tool_call>", r["text"], re.S)
        assert m, r["text"]
        jsonschema.validate(json.loads(m.group(1)), TOOL_SCHEMA)


def test_json_object_outputs(driver, tmp_path):
    specs = write_specs(tmp_path, [""])
    p, rows = run(driver, "gen", "json_object", specs, "--n", "10", "--seed", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    fin = [r for r in rows if r["finished"]]
    assert len(fin) >= 5
    for r in fin:
        assert isinstance(json.loads(r["text"]), dict)


UNSUPPORTED = [
    ("json_schema", '{"type": "object", "patternProperties": {"^a": {}}}', "patternProperties"),
    ("json_schema", '{"type": "array", "uniqueItems": true}', "uniqueItems"),
    ("json_schema", '{"not": {"type": "string"}}', "not"),
    ("json_schema", '{"type": "integer", "multipleOf": 3}', "multipleOf"),
    ("json_schema", '{"if": {}, "then": {}}', "if"),
    ("json_schema", '{"type": "string", "format": "credit-card"}', "credit-card"),
    ("json_schema", '{"type": "object", "minProperties": 1}', "minProperties"),
    ("json_schema", '{"type": "strange"}', "strange"),
    ("json_schema", '{"$ref": "https://example.com/s.json"}', "https://example.com/s.json"),
    ("json_schema", '{"type": "number", "minimum": 0.5}', "minimum"),
    ("json_schema", '{"type": "string", "pattern": "(a)\\\\1"}', "backreference"),
    ("regex", "(?=abc)", "lookaround"),
    ("regex", "a\\bc", "\\b"),
    ("regex", "[[:alpha:]]", "POSIX"),
    ("ebnf", 'root ::= root "a" | "b"', "left recursion"),
    ("ebnf", 'root ::= missing', "missing"),
    ("ebnf", 'start ::= "a"', "root"),
    ("choice", '["a", 3]', "not a string"),
]


def test_unsupported_fails_naming_it(driver, tmp_path):
    by_kind = {}
    for i, (kind, spec, name) in enumerate(UNSUPPORTED):
        path = tmp_path / f"bad{i}.txt"
        path.write_text(spec)
        by_kind.setdefault(kind, []).append((str(path), spec, name))
    for kind, items in by_kind.items():  # one driver run (one vocab load) per kind
        p, rows = run(driver, "check", kind, [path for path, _, _ in items])
        assert len(rows) == len(items), p.stderr
        for row, (path, spec, name) in zip(rows, items):
            assert row["spec"] == path
            assert not row["ok"], f"{spec} compiled"
            assert name in row["error"], (spec, row["error"])
