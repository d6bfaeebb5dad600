"""Structured outputs and tool calling through `pagoda serve` on a tiny random checkpoint at high
temperature: every guided output must parse and validate (jsonschema), regex and choice outputs
must match, forced tool calls must be valid calls, and streamed tool-call arguments must equal
the non-streamed ones character for character. Skips like test_server.py."""
import json
import re

import pytest

from server_util import Server

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")


REGEX = r"[a-z]{2,5}@(x|y)\.com"


def warm_file(tmp_path_factory, lines):
    p = tmp_path_factory.mktemp("warm") / "warm.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines) if isinstance(lines, list) else lines)
    return str(p)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # --structured-warmup: the grammars (and their first masks) are ready before /health
    warm = warm_file(tmp_path_factory, [{"type": "json", "spec": SCHEMA},
                                        {"type": "regex", "spec": REGEX}])
    # the Qwen template's tool preamble is long
    s = Server("--max-model-len", "1024", "--structured-warmup", warm)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=60)


MSGS = [{"role": "user", "content": "Extract the complaint."}]
COMPACT = {"guided_whitespace_pattern": ""}  # keeps a random model's JSON short

SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "integer", "minimum": 0, "maximum": 9999},
        "issue": {"enum": ["late", "damaged", "wrong_item"]},
        "note": {"type": "string", "maxLength": 8},
        "refund": {"type": "boolean"},
    },
    "required": ["order_id", "issue", "note", "refund"],
    "additionalProperties": False,
}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                     "days": {"type": "integer", "minimum": 1,
                                                              "maximum": 7}},
                   "required": ["city", "days"], "additionalProperties": False}}}
REFUND = {"type": "function", "function": {
    "name": "refund", "parameters": {"type": "object", "properties": {"amount": {"type": "integer",
                                                                                 "minimum": 0,
                                                                                 "maximum": 100}},
                                     "required": ["amount"], "additionalProperties": False}}}


def chat(client, **kw):
    kw.setdefault("max_tokens", 120)
    kw.setdefault("temperature", 1.5)
    return client.chat.completions.create(model="tiny", messages=MSGS, **kw)


@pytest.mark.parametrize("how", ["guided_json", "guided_json_text", "structured_outputs",
                                 "response_format"])
def test_json_schema_outputs_validate(client, how):
    for seed in range(4):
        if how == "guided_json":
            extra = {"guided_json": SCHEMA, **COMPACT}
        elif how == "guided_json_text":
            extra = {"guided_json": json.dumps(SCHEMA), **COMPACT}
        elif how == "structured_outputs":
            extra = {"structured_outputs": {"json": SCHEMA}, **COMPACT}
        else:
            extra = dict(COMPACT)
        kw = {"extra_body": extra, "seed": seed}
        if how == "response_format":
            kw["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "complaint", "schema": SCHEMA, "strict": True}}
        r = chat(client, **kw)
        c = r.choices[0]
        assert c.finish_reason == "stop", c
        jsonschema.validate(json.loads(c.message.content), SCHEMA)


def test_json_object(client):
    r = chat(client, response_format={"type": "json_object"}, seed=1, max_tokens=200,
             extra_body=COMPACT)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # a random model may write a long object; what it wrote is still an object prefix
        assert r.choices[0].message.content.lstrip().startswith("{")


def test_regex_and_choice(client):
    for seed in range(3):
        r = chat(client, seed=seed, extra_body={"guided_regex": REGEX})  # warmed at startup
        assert re.fullmatch(REGEX, r.choices[0].message.content)
        r = chat(client, seed=seed, extra_body={"guided_choice": ["refund", "replace", "escalate"]})
        assert r.choices[0].message.content in ("refund", "replace", "escalate")
        r = client.completions.create(model="tiny", prompt="Answer:", max_tokens=20, seed=seed,
                                      temperature=1.5,
                                      extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
        assert r.choices[0].text in ("yes", "no")


def test_grammar_ebnf(client):
    g = 'root ::= "order-" digit digit digit\ndigit ::= [0-9]'
    r = chat(client, seed=5, extra_body={"guided_grammar": g})
    assert re.fullmatch(r"order-[0-9]{3}", r.choices[0].message.content)


def test_unsupported_keyword_is_400(srv):
    status, _, body = srv.request("POST", "/v1/chat/completions", {
        "messages": MSGS, "guided_json": {"type": "integer", "multipleOf": 3}})
    err = json.loads(body)["error"]
    assert status == 400
    assert err["param"] == "guided_json" and "multipleOf" in err["message"]
    status, _, body = srv.request("POST", "/v1/chat/completions", {
        "messages": MSGS, "guided_regex": "a(b"})
    assert status == 400 and json.loads(body)["error"]["param"] == "guided_regex"


def test_warmup_endpoint_generates_nothing(srv, client):
    # POST /v1/structured_outputs/warmup compiles and warms a constraint without generating
    schema = {"type": "object", "properties": {"k": {"enum": ["a", "b"]}}, "required": ["k"],
              "additionalProperties": False}
    before = srv.request("GET", "/metrics")[2].decode()
    gen_before = re.search(r"^vllm:generation_tokens_total\S* (\S+)", before, re.M)
    status, _, body = srv.request("POST", "/v1/structured_outputs/warmup", {"guided_json": schema})
    assert status == 200, body
    out = json.loads(body)
    assert out["object"] == "structured_outputs.warmup" and out["constraint"] == "guided_json"
    after = srv.request("GET", "/metrics")[2].decode()
    gen_after = re.search(r"^vllm:generation_tokens_total\S* (\S+)", after, re.M)
    assert gen_before and gen_after and gen_before.group(1) == gen_after.group(1)
    # the warmed constraint then works as usual
    r = chat(client, seed=3, extra_body={"guided_json": schema})
    assert json.loads(r.choices[0].message.content)["k"] in ("a", "b")
    # every other spelling, and the errors
    for body_ in ({"response_format": {"type": "json_object"}}, {"guided_regex": REGEX},
                  {"structured_outputs": {"choice": ["x", "y"]}}, {"guided_choice": ["p", "q"]}):
        assert srv.request("POST", "/v1/structured_outputs/warmup", body_)[0] == 200
    for body_, param in (({"guided_json": {"type": "integer", "multipleOf": 3}}, "guided_json"),
                         ({"guided_regex": "a(b"}, "guided_regex"),
                         ({"messages": MSGS, "guided_regex": "a"}, "messages"),
                         ({}, None)):
        status, _, b = srv.request("POST", "/v1/structured_outputs/warmup", body_)
        assert status == 400 and json.loads(b)["error"]["param"] == param
        if param == "messages":
            assert "a warm-up takes only the structured-output fields" in json.loads(b)["error"]["message"]
    status, _, _ = srv.request("POST", "/v1/structured_outputs/warmup", {"model": "other",
                                                                         "guided_regex": "a"})
    assert status == 404
    assert srv.request("GET", "/v1/structured_outputs/warmup")[0] == 405


def test_structured_warmup_errors_and_capacity(tmp_path_factory):
    # a grammar that does not compile stops startup, naming the file and line
    bad = warm_file(tmp_path_factory, [{"type": "regex", "spec": "a+"},
                                       {"type": "json", "spec": {"type": "integer",
                                                                 "multipleOf": 3}}])
    with pytest.raises(RuntimeError, match=r"warm\.jsonl:2: .*multipleOf"):
        Server("--structured-warmup", bad).stop()
    with pytest.raises(RuntimeError, match=r"warm\.jsonl:1: expected"):
        Server("--structured-warmup", warm_file(tmp_path_factory, "{\"type\": \"xml\"}\n")).stop()
    # more grammars than the cache holds (64): a warning, and the server still runs
    many = warm_file(tmp_path_factory, [{"type": "choice", "spec": [f"w{i}", "z"]}
                                        for i in range(65)])
    s = Server("--structured-warmup", many)
    try:
        assert "65 grammars, but the grammar cache keeps only the 64" in s.read_log()
        status, _, _ = s.request("GET", "/health")
        assert status == 200
    finally:
        s.stop()


def check_call(call, tools):
    spec = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in spec
    jsonschema.validate(json.loads(call.function.arguments), spec[call.function.name])


def test_tool_choice_required(client):
    tools = [WEATHER, REFUND]
    for seed in range(3):
        r = chat(client, seed=seed, tools=tools, tool_choice="required",
                 parallel_tool_calls=False, extra_body=COMPACT)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls"
        assert len(c.message.tool_calls) == 1
        check_call(c.message.tool_calls[0], tools)


def test_tool_choice_named_stream_matches(client):
    tools = [WEATHER, REFUND]
    kw = dict(seed=11, tools=tools, extra_body=COMPACT,
              tool_choice={"type": "function", "function": {"name": "get_weather"}})
    full = chat(client, **kw).choices[0]
    assert full.message.tool_calls[0].function.name == "get_weather"
    check_call(full.message.tool_calls[0], tools)
    args, names = "", []
    for chunk in chat(client, stream=True, **kw):
        for tc in chunk.choices[0].delta.tool_calls or []:
            assert tc.index == 0
            if tc.function.name:
                names.append(tc.function.name)
            args += tc.function.arguments or ""
    assert names == ["get_weather"]
    assert args == full.message.tool_calls[0].function.arguments


def test_tools_rendered_through_template(client):
    plain = chat(client, max_tokens=1, temperature=0)
    with_tools = chat(client, max_tokens=1, temperature=0, tools=[WEATHER])
    # the Qwen2.5 template lists the tools in the system prompt
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 20
    none = chat(client, max_tokens=1, temperature=0, tools=[WEATHER], tool_choice="none")
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
