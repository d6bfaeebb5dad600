// Unit tests for the server's pure parts: `pagoda serve` flags, request validation
// (every field, unknown fields, ranges), errors, tool-call parsing, metrics, response pieces.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "server/api.h"
#include "server/args.h"
#include "server/metrics.h"
#include "server/respond.h"
#include "server/toolcall.h"

// ---- args -----------------------------------------------------------------------------------------

// NULL-terminated argument list after err
static int parse_args(struct serve_args *a, char *err, ...) {
    char *argv[64] = {"serve"};
    int n = 0;
    va_list ap;
    va_start(ap, err);
    for (char *s; (s = va_arg(ap, char *));) argv[++n] = s;
    va_end(ap);
    serve_args_defaults(a);
    return serve_args_parse(a, n + 1, argv, err);
}

static void test_args_vllm_line(void **state) {
    (void)state;
    struct serve_args a;
    char err[PG_ERR_LEN] = "";
    assert_int_equal(parse_args(&a, err, "./Qwen2.5-14B-Instruct-GPTQ-Int4",
                                "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.95",
                                "--enable-prefix-caching", "--num-scheduler-steps", "8",
                                "--enforce-eager", "--port=9000", "--max_model_len", "4096", NULL), 0);
    assert_string_equal(a.model_dir, "./Qwen2.5-14B-Instruct-GPTQ-Int4");
    assert_int_equal(a.tensor_parallel_size, 2);
    assert_true(a.gpu_memory_utilization > 0.949f && a.gpu_memory_utilization < 0.951f);
    assert_true(a.enable_prefix_caching);
    assert_int_equal(a.num_scheduler_steps, 8);
    assert_true(a.enforce_eager);
    assert_int_equal(a.port, 9000);
    assert_int_equal(a.max_model_len, 4096);
    assert_string_equal(a.served_model_name, a.model_dir);
    // CPU build: the CUDA-only flags are reported as having no effect
    char *msgs[8];
    int n = serve_args_no_effect(&a, false, msgs, 8);
    assert_int_equal(n, 3);
    bool saw_tp = false;
    for (int i = 0; i < n; i++) {
        if (strstr(msgs[i], "--tensor-parallel-size")) saw_tp = true;
        free(msgs[i]);
    }
    assert_true(saw_tp);
    assert_int_equal(serve_args_no_effect(&a, true, msgs, 8), 0);
    assert_int_equal(parse_args(&a, err, "m", "--generation-config", "/elsewhere", "--dtype",
                                "half", NULL), 0);
    n = serve_args_no_effect(&a, true, msgs, 8);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++) free(msgs[i]);
}

static void test_args_all_flags(void **state) {
    (void)state;
    struct serve_args a;
    char err[PG_ERR_LEN] = "";
    assert_int_equal(parse_args(&a, err, "m", "--host", "127.0.0.1", "--api-key", "k",
                                "--served-model-name", "qwen", "--max-num-seqs", "8",
                                "--max-num-batched-tokens", "512", "--block-size", "32",
                                "--no-enable-prefix-caching", "--enable-chunked-prefill",
                                "--kv-cache-dtype", "fp8", "--tokenizer-pool-size", "3",
                                "--dtype", "bfloat16", "--quantization", "gptq", "--seed", "7",
                                "--scheduling-policy", "priority", "--chat-template", "t.jinja",
                                "--generation-config", "vllm", "--disable-log-requests",
                                "--uvicorn-log-level", "warning", "--device", "cpu",
                                "--kv-cache-memory", "2GiB", "--task=embed",
                                "--structured-warmup", "w.jsonl", "--no-async-scheduling",
                                "--threads=2", "--num-gpu-blocks-override", "64", NULL), 0);
    assert_int_equal(a.async_scheduling, 0);
    assert_int_equal(a.threads, 2);
    assert_int_equal(a.num_gpu_blocks_override, 64);
    assert_string_equal(a.host, "127.0.0.1");
    assert_string_equal(a.api_key, "k");
    assert_string_equal(a.served_model_name, "qwen");
    assert_int_equal(a.max_num_seqs, 8);
    assert_int_equal(a.max_num_batched_tokens, 512);
    assert_int_equal(a.block_size, 32);
    assert_false(a.enable_prefix_caching);
    assert_string_equal(a.kv_cache_dtype, "fp8");
    assert_int_equal(a.tokenizer_pool_size, 3);
    assert_string_equal(a.quantization, "gptq");
    assert_int_equal(a.seed, 7);
    assert_string_equal(a.scheduling_policy, "priority");
    assert_true(a.disable_log_requests);
    assert_string_equal(a.log_level, "warning");
    assert_int_equal(a.kv_cache_memory, 2ll << 30);
    assert_string_equal(a.task, "embed");
    assert_string_equal(a.structured_warmup, "w.jsonl");
}

static void test_args_errors(void **state) {
    (void)state;
    struct serve_args a;
    char err[PG_ERR_LEN] = "";
    assert_int_equal(parse_args(&a, err, "m", "--bogus", NULL), -1);
    assert_non_null(strstr(err, "--bogus"));
    assert_int_equal(parse_args(&a, err, "m", "--port", NULL), -1);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(parse_args(&a, err, "m", "--port", "80x", NULL), -1);
    assert_int_equal(parse_args(&a, err, "m", "--port=70000", NULL), -1);
    assert_int_equal(parse_args(&a, err, "m", "--gpu-memory-utilization", "1.5", NULL), -1);
    assert_int_equal(parse_args(&a, err, "m", "--kv-cache-dtype", "int3", NULL), -1);
    assert_non_null(strstr(err, "int3"));
    assert_int_equal(parse_args(&a, err, "m", "--enforce-eager=maybe", NULL), -1);
    assert_int_equal(parse_args(&a, err, "m", "n", NULL), -1);
    assert_int_equal(parse_args(&a, err, "--port=1", NULL), -1);
    assert_non_null(strstr(err, "MODEL_DIR"));
    assert_int_equal(parse_args(&a, err, "m", "--kv-cache-memory", "lots", NULL), -1);
}

// ---- requests -------------------------------------------------------------------------------------

static struct api_limits limits(void) {
    struct api_limits l = {.model_name = "tiny", .max_model_len = 128, .vocab = 1000, .max_n = 8,
                           .max_prompts = 4,
                           .gen = {.temperature = 0.7f, .top_p = 0.8f, .top_k = 20, .min_p = 0,
                                   .repetition_penalty = 1.05f, .do_sample = true}};
    return l;
}

// Parses text as a request of kind; returns the status (0 on success).
static int parse(struct api_request *r, enum api_kind kind, const char *text, struct api_error *e) {
    json_t *body = json_loads(text, 0, NULL);
    assert_non_null(body);
    struct api_limits l = limits();
    int rc = api_request_parse(r, kind, body, &l, e);
    json_decref(body);
    return rc ? e->status : 0;
}

static void expect_400(enum api_kind kind, const char *text, const char *param) {
    struct api_request r;
    struct api_error e = {0};
    int st = parse(&r, kind, text, &e);
    if (st != 400) fail_msg("expected 400 for %s, got %d", text, st);
    if (param && strcmp(e.param, param))
        fail_msg("%s: param '%s', expected '%s' (%s)", text, e.param, param, e.message);
    assert_true(strlen(e.message) > 0);
    api_request_free(&r);
}

static void test_chat_full(void **state) {
    (void)state;
    struct api_request r;
    struct api_error e;
    const char *body =
        "{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
        "\"text\":\"b\"}]}],\"temperature\":0.5,\"top_p\":0.9,\"top_k\":5,\"min_p\":0.1,\"n\":2,"
        "\"max_completion_tokens\":10,\"stop\":[\"x\",\"yz\"],\"stop_token_ids\":[3,4],"
        "\"seed\":42,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
        "\"repetition_penalty\":1.2,\"logit_bias\":{\"7\":-100,\"9\":5.5},\"logprobs\":true,"
        "\"top_logprobs\":3,\"ignore_eos\":true,\"min_tokens\":2,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"u1\",\"add_generation_prompt\":"
        "false,\"chat_template_kwargs\":{\"enable_thinking\":false},\"priority\":-3}";
    assert_int_equal(parse(&r, API_CHAT, body, &e), 0);
    assert_string_equal(r.model, "tiny");
    assert_int_equal(json_array_size(r.messages), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r.messages, 1),
                                                          "content")), "a\nb");
    assert_true(r.gen.sp.temperature == 0.5f && r.gen.sp.top_p == 0.9f);
    assert_int_equal(r.gen.sp.top_k, 5);
    assert_true(r.gen.sp.min_p == 0.1f);
    assert_int_equal(r.gen.n, 2);
    assert_int_equal(r.gen.max_tokens, 10);
    assert_int_equal(r.gen.n_stop, 2);
    assert_string_equal(r.gen.stop[1], "yz");
    assert_int_equal(r.gen.n_stop_token_ids, 2);
    assert_int_equal(r.gen.stop_token_ids[1], 4);
    assert_true(r.gen.seeded);
    assert_int_equal(r.gen.sp.seed, 42);
    assert_true(r.gen.sp.presence_penalty == 0.5f && r.gen.sp.frequency_penalty == -0.5f);
    assert_true(r.gen.sp.repetition_penalty == 1.2f);
    assert_int_equal(r.gen.sp.n_logit_bias, 2);
    assert_true(r.logprobs);
    assert_int_equal(r.gen.sp.logprobs, 3);
    assert_true(r.gen.ignore_eos);
    assert_int_equal(r.gen.min_tokens, 2);
    assert_true(r.stream && r.include_usage);
    assert_string_equal(r.user, "u1");
    assert_false(r.add_generation_prompt);
    assert_non_null(r.template_kwargs);
    assert_int_equal(r.gen.priority, -3);
    assert_false(r.has_grammar);
    api_request_free(&r);
}

static void test_defaults_from_generation_config(void **state) {
    (void)state;
    struct api_request r;
    struct api_error e;
    assert_int_equal(parse(&r, API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                           "\"stop\":null,\"seed\":null}", &e), 0);
    assert_true(r.gen.sp.temperature == 0.7f && r.gen.sp.top_p == 0.8f);
    assert_int_equal(r.gen.sp.top_k, 20);
    assert_true(r.gen.sp.repetition_penalty == 1.05f);
    assert_int_equal(r.gen.n, 1);
    assert_int_equal(r.gen.max_tokens, -1);
    assert_false(r.max_tokens_given);
    assert_int_equal(r.gen.sp.logprobs, -1);
    assert_true(r.gen.skip_special_tokens);
    assert_false(r.gen.seeded);
    // the length check fills max_tokens up to the context, and rejects overflows with numbers
    struct api_limits l = limits();
    assert_int_equal(api_check_length(&r, 100, &l, &e), 0);
    assert_int_equal(r.gen.max_tokens, 28);
    api_request_free(&r);
    assert_int_equal(parse(&r, API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                           "\"max_tokens\":50}", &e), 0);
    assert_int_equal(api_check_length(&r, 100, &l, &e), -1);
    assert_int_equal(e.status, 400);
    assert_non_null(strstr(e.message, "128"));
    assert_non_null(strstr(e.message, "150"));
    assert_non_null(strstr(e.message, "100"));
    assert_non_null(strstr(e.message, "50"));
    assert_int_equal(api_check_length(&r, 0, &l, &e), -1);
    api_request_free(&r);
}

static void test_completion_prompts(void **state) {
    (void)state;
    struct api_request r;
    struct api_error e;
    assert_int_equal(parse(&r, API_COMPLETION, "{\"prompt\":\"hello\",\"echo\":true,"
                           "\"logprobs\":2,\"max_tokens\":3}", &e), 0);
    assert_int_equal(r.n_prompts, 1);
    assert_string_equal(r.prompts[0].text, "hello");
    assert_true(r.echo && r.logprobs);
    assert_int_equal(r.top_logprobs, 2);
    api_request_free(&r);
    assert_int_equal(parse(&r, API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", &e), 0);
    assert_int_equal(r.n_prompts, 2);
    api_request_free(&r);
    assert_int_equal(parse(&r, API_COMPLETION, "{\"prompt\":[1,2,3]}", &e), 0);
    assert_int_equal(r.n_prompts, 1);
    assert_int_equal(r.prompts[0].n_ids, 3);
    api_request_free(&r);
    assert_int_equal(parse(&r, API_COMPLETION, "{\"prompt\":[[1,2],[3]]}", &e), 0);
    assert_int_equal(r.n_prompts, 2);
    assert_int_equal(r.prompts[1].ids[0], 3);
    api_request_free(&r);
    expect_400(API_COMPLETION, "{\"prompt\":[]}", "prompt");
    expect_400(API_COMPLETION, "{\"prompt\":[1,5000]}", "prompt");
    expect_400(API_COMPLETION, "{\"prompt\":[1,-1]}", "prompt");
    expect_400(API_COMPLETION, "{\"prompt\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "prompt");
    expect_400(API_COMPLETION, "{\"prompt\":[\"a\",1]}", "prompt");
    expect_400(API_COMPLETION, "{\"prompt\":5}", "prompt");
    expect_400(API_COMPLETION, "{}", "prompt");
}

static void test_bad_fields(void **state) {
    (void)state;
    const char *M = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    char buf[512];
#define BAD(field_json, param)                                                              \
    do {                                                                                    \
        snprintf(buf, sizeof buf, "{%s,%s}", M, field_json);                                \
        expect_400(API_CHAT, buf, param);                                                   \
    } while (0)
    BAD("\"frobnicate\":1", "frobnicate");
    BAD("\"echo\":true", "echo");                  // completions-only field
    BAD("\"temperature\":-0.1", "temperature");
    BAD("\"temperature\":\"hot\"", "temperature");
    BAD("\"top_p\":0", "top_p");
    BAD("\"top_p\":1.5", "top_p");
    BAD("\"top_k\":-2", "top_k");
    BAD("\"min_p\":2", "min_p");
    BAD("\"n\":0", "n");
    BAD("\"n\":9", "n");
    BAD("\"max_tokens\":0", "max_tokens");
    BAD("\"max_tokens\":1.5", "max_tokens");
    BAD("\"stop\":[1]", "stop");
    BAD("\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\","
        "\"m\",\"n\",\"o\",\"p\",\"q\"]", "stop");
    BAD("\"stop_token_ids\":[1000]", "stop_token_ids");
    BAD("\"seed\":1.5", "seed");
    BAD("\"presence_penalty\":3", "presence_penalty");
    BAD("\"frequency_penalty\":-3", "frequency_penalty");
    BAD("\"repetition_penalty\":0", "repetition_penalty");
    BAD("\"logit_bias\":{\"abc\":1}", "logit_bias");
    BAD("\"logit_bias\":{\"5\":101}", "logit_bias");
    BAD("\"logit_bias\":[1]", "logit_bias");
    BAD("\"logprobs\":3", "logprobs");
    BAD("\"top_logprobs\":2", "top_logprobs");  // without logprobs
    BAD("\"logprobs\":true,\"top_logprobs\":21", "top_logprobs");
    BAD("\"ignore_eos\":1", "ignore_eos");
    BAD("\"min_tokens\":5,\"max_tokens\":2", "min_tokens");
    BAD("\"stream\":\"yes\"", "stream");
    BAD("\"stream_options\":{\"include_usage\":true}", "stream_options"); // without stream
    BAD("\"stream\":true,\"stream_options\":{\"bogus\":1}", "stream_options");
    BAD("\"priority\":\"high\"", "priority");
    BAD("\"chat_template_kwargs\":[]", "chat_template_kwargs");
    BAD("\"tool_choice\":\"required\"", "tool_choice"); // without tools
    BAD("\"tools\":[{\"type\":\"function\"}]", "tools");
    BAD("\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}", "tool_choice");
    BAD("\"guided_regex\":5", "guided_regex");
    BAD("\"guided_choice\":[]", "guided_choice");
    BAD("\"guided_choice\":[1]", "guided_choice");
    BAD("\"guided_json\":5", "guided_json");
    BAD("\"guided_regex\":\"a\",\"guided_grammar\":\"root ::= \\\"a\\\"\"", "guided_grammar");
    BAD("\"structured_outputs\":{\"xml\":\"a\"}", "structured_outputs.xml");
    BAD("\"response_format\":{\"type\":\"yaml\"}", "response_format");
    BAD("\"response_format\":{\"type\":\"json_schema\"}", "response_format.json_schema");
    BAD("\"response_format\":{\"type\":\"json_object\"},\"guided_regex\":\"a\"",
        "response_format");
#undef BAD
    expect_400(API_CHAT, "{\"messages\":[]}", "messages");
    expect_400(API_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "messages");
    expect_400(API_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages");
    expect_400(API_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "messages");
    expect_400(API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
               "\"image_url\",\"image_url\":{}}]}]}", "messages");
    expect_400(API_CHAT, "[1,2]", NULL);
    // another model: 404
    struct api_request r;
    struct api_error e;
    assert_int_equal(parse(&r, API_CHAT, "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}]}", &e), 404);
    assert_string_equal(e.param, "model");
    api_request_free(&r);
}

static void test_structured_outputs(void **state) {
    (void)state;
    const char *M = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    static const struct { const char *field; enum grammar_kind kind; const char *spec; } cases[] = {
        {"\"guided_json\":{\"type\":\"object\"}", GRAMMAR_JSON_SCHEMA, "{\"type\":\"object\"}"},
        {"\"guided_json\":\"{\\\"type\\\": \\\"string\\\"}\"", GRAMMAR_JSON_SCHEMA,
         "{\"type\": \"string\"}"},
        {"\"guided_regex\":\"[a-z]+\"", GRAMMAR_REGEX, "[a-z]+"},
        {"\"guided_choice\":[\"yes\",\"no\"]", GRAMMAR_CHOICE, "[\"yes\",\"no\"]"},
        {"\"guided_grammar\":\"root ::= \\\"a\\\"\"", GRAMMAR_EBNF, "root ::= \"a\""},
        {"\"structured_outputs\":{\"regex\":\"\\\\d+\"}", GRAMMAR_REGEX, "\\d+"},
        {"\"structured_outputs\":{\"json\":{\"type\":\"integer\"}}", GRAMMAR_JSON_SCHEMA,
         "{\"type\":\"integer\"}"},
        {"\"structured_outputs\":{\"choice\":[\"a\"]}", GRAMMAR_CHOICE, "[\"a\"]"},
        {"\"structured_outputs\":{\"grammar\":\"root ::= x\"}", GRAMMAR_EBNF, "root ::= x"},
        {"\"response_format\":{\"type\":\"json_object\"}", GRAMMAR_JSON_OBJECT, ""},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":{\"type\":\"boolean\"},\"strict\":true}}", GRAMMAR_JSON_SCHEMA,
         "{\"type\":\"boolean\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "{%s,%s,\"guided_whitespace_pattern\":\" ?\"}", M,
                 cases[i].field);
        struct api_request r;
        struct api_error e;
        if (parse(&r, API_CHAT, buf, &e)) fail_msg("%s: %s", buf, e.message);
        assert_true(r.has_grammar);
        assert_int_equal(r.grammar_kind, cases[i].kind);
        assert_string_equal(r.grammar_spec, cases[i].spec);
        assert_int_equal(r.grammar_spec_len, strlen(cases[i].spec));
        assert_string_equal(r.whitespace_pattern, " ?");
        char top[64];
        snprintf(top, sizeof top, "\"%.*s\"", (int)strcspn(r.grammar_param, "."), r.grammar_param);
        assert_non_null(strstr(cases[i].field, top)); // the error names the field used
        api_request_free(&r);
    }
    struct api_request r;
    struct api_error e;
    assert_int_equal(parse(&r, API_COMPLETION, "{\"prompt\":\"x\",\"response_format\":{\"type\":"
                           "\"text\"}}", &e), 0);
    assert_false(r.has_grammar);
    api_request_free(&r);
}

static void test_tools(void **state) {
    (void)state;
    const char *T = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\","
                    "\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
                    "\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},"
                    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"5C\"}],"
                    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":"
                    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
                    "\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":{\"name\":"
                    "\"noargs\"}}]";
    char buf[2048];
    struct api_request r;
    struct api_error e;
    snprintf(buf, sizeof buf, "{%s}", T);
    assert_int_equal(parse(&r, API_CHAT, buf, &e), 0);
    assert_int_equal(r.tool_mode, TOOLS_AUTO);
    assert_non_null(r.tools);
    assert_false(r.gen.skip_special_tokens); // the parser needs <tool_call> in the text
    assert_false(r.has_grammar);
    // the assistant's tool-call arguments reach the template as an object
    json_t *args = json_object_get(json_object_get(json_array_get(json_object_get(
        json_array_get(r.messages, 1), "tool_calls"), 0), "function"), "arguments");
    assert_true(json_is_object(args));
    // its content null reaches the template as "" (Qwen3's template tests strings on it)
    assert_string_equal(json_string_value(json_object_get(json_array_get(r.messages, 1), "content")), "");
    api_request_free(&r);

    snprintf(buf, sizeof buf, "{%s,\"tool_choice\":\"none\"}", T);
    assert_int_equal(parse(&r, API_CHAT, buf, &e), 0);
    assert_int_equal(r.tool_mode, TOOLS_NONE);
    assert_null(r.tools);
    api_request_free(&r);

    snprintf(buf, sizeof buf, "{%s,\"tool_choice\":{\"type\":\"function\",\"function\":"
             "{\"name\":\"get\"}}}", T);
    assert_int_equal(parse(&r, API_CHAT, buf, &e), 0);
    assert_int_equal(r.tool_mode, TOOLS_NAMED);
    assert_string_equal(r.tool_name, "get");
    assert_true(r.has_grammar);
    assert_int_equal(r.grammar_kind, GRAMMAR_JSON_SCHEMA);
    json_t *schema = json_loads(r.grammar_spec, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(
        schema, "properties"), "city"), "type")), "string");
    json_decref(schema);
    api_request_free(&r);

    snprintf(buf, sizeof buf, "{%s,\"tool_choice\":\"required\",\"parallel_tool_calls\":false}", T);
    assert_int_equal(parse(&r, API_CHAT, buf, &e), 0);
    assert_int_equal(r.tool_mode, TOOLS_REQUIRED);
    schema = json_loads(r.grammar_spec, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(schema, "type")), "array");
    assert_int_equal(json_integer_value(json_object_get(schema, "minItems")), 1);
    assert_int_equal(json_integer_value(json_object_get(schema, "maxItems")), 1);
    json_t *any = json_object_get(json_object_get(schema, "items"), "anyOf");
    assert_int_equal(json_array_size(any), 2);
    json_t *names = json_object_get(json_object_get(json_object_get(json_array_get(any, 1),
                                                                    "properties"), "name"), "enum");
    assert_string_equal(json_string_value(json_array_get(names, 0)), "noargs");
    json_decref(schema);
    api_request_free(&r);

    // a forced tool call and another constraint conflict
    snprintf(buf, sizeof buf, "{%s,\"tool_choice\":\"required\",\"guided_regex\":\"a\"}", T);
    expect_400(API_CHAT, buf, "tool_choice");
}

static void test_error_json(void **state) {
    (void)state;
    static const struct { int status; const char *type; } t[] = {
        {400, "invalid_request_error"}, {401, "authentication_error"}, {404, "not_found_error"},
        {413, "invalid_request_error"}, {503, "server_error"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct api_error e;
        api_error_set(&e, t[i].status, i ? NULL : "temperature", "bad %d", 7);
        json_t *j = api_error_json(&e), *err = json_object_get(j, "error");
        assert_string_equal(json_string_value(json_object_get(err, "message")), "bad 7");
        assert_string_equal(json_string_value(json_object_get(err, "type")), t[i].type);
        if (i == 0) assert_string_equal(json_string_value(json_object_get(err, "param")),
                                        "temperature");
        else assert_true(json_is_null(json_object_get(err, "param")));
        assert_non_null(json_object_get(err, "code"));
        json_decref(j);
    }
}

// Messages and params are cut to fixed buffers; a cut inside a multi-byte UTF-8 character must
// still give an error body with its message and param (jansson refuses invalid UTF-8).
static void test_error_json_cut_utf8(void **state) {
    (void)state;
    char big[3000] = "{\"prompt\": \"a\", \"a";
    size_t n = strlen(big);
    for (int i = 0; i < 1000; i++) n += (size_t)sprintf(big + n, "\u00e9");
    strcpy(big + n, "\": 1}");
    struct api_request r;
    struct api_error e = {0};
    assert_int_equal(parse(&r, API_COMPLETION, big, &e), 400);
    api_request_free(&r);
    json_t *j = api_error_json(&e), *err = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(err, "message"));
    assert_non_null(msg);
    assert_non_null(strstr(msg, "unknown field"));
    assert_true(json_is_string(json_object_get(err, "param")));
    json_decref(j);
}

// api_check_fields: the first unknown key is the param, the optional reason follows the message.
static void test_check_fields(void **state) {
    (void)state;
    static const char *const allowed[] = {"model", "text", NULL};
    json_t *ok = json_pack("{s:s, s:s}", "model", "m", "text", "t"), *bad = json_pack("{s:s, s:i}", "text", "t", "extra", 1);
    struct api_error e = {0};
    assert_int_equal(api_check_fields(ok, allowed, NULL, &e), 0);
    assert_int_equal(api_check_fields(bad, allowed, NULL, &e), -1);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.param, "extra");
    assert_string_equal(e.message, "unknown field 'extra'");
    assert_int_equal(api_check_fields(bad, allowed, "only text here", &e), -1);
    assert_string_equal(e.message, "unknown field 'extra' (only text here)");
    json_decref(ok);
    json_decref(bad);
}

// ---- hermes tool calls ------------------------------------------------------------------------------

static const char *HERMES =
    "Let me check. <tool_call>\n{\"name\": \"get\", \"arguments\": {\"city\": \"Oslo \\u00e6\"}}\n"
    "</tool_call>\n<tool_call>\n{\"name\": \"noargs\", \"arguments\": {}}\n</tool_call> done <tool"
    "_c <tool_call>not json</tool_call> <b>";

static void run_hermes(size_t piece, char **content, size_t *clen, json_t *calls) {
    struct hermes h;
    hermes_init(&h);
    *content = NULL;
    *clen = 0;
    size_t n = strlen(HERMES);
    for (size_t i = 0; i < n; i += piece)
        hermes_feed(&h, HERMES + i, i + piece <= n ? piece : n - i, content, clen, calls);
    hermes_finish(&h, content, clen, calls);
    hermes_free(&h);
}

static void test_hermes_streaming_splits(void **state) {
    (void)state;
    char *ref;
    size_t ref_len;
    json_t *ref_calls = json_array();
    run_hermes(strlen(HERMES), &ref, &ref_len, ref_calls);
    assert_int_equal(json_array_size(ref_calls), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ref_calls, 0), "name")),
                        "get");
    json_t *args = json_loads(json_string_value(json_object_get(json_array_get(ref_calls, 0),
                                                                "arguments")), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(args, "city")), "Oslo \xc3\xa6");
    json_decref(args);
    assert_string_equal(ref, "Let me check. \n done <tool_c <tool_call>not json</tool_call> <b>");
    // every split of the stream gives the same content and calls: nothing lost or duplicated
    for (size_t piece = 1; piece < 40; piece++) {
        char *c;
        size_t cl;
        json_t *calls = json_array();
        run_hermes(piece, &c, &cl, calls);
        assert_int_equal(cl, ref_len);
        assert_memory_equal(c, ref, cl);
        assert_true(json_equal(calls, ref_calls));
        free(c);
        json_decref(calls);
    }
    free(ref);
    json_decref(ref_calls);
}

static void test_hermes_unclosed_and_forced(void **state) {
    (void)state;
    struct hermes h;
    hermes_init(&h);
    char *c = NULL;
    size_t cl = 0;
    json_t *calls = json_array();
    const char *s = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}";
    hermes_feed(&h, s, strlen(s), &c, &cl, calls);
    assert_int_equal(cl, 0);
    hermes_finish(&h, &c, &cl, calls); // the model stopped before </tool_call>
    assert_int_equal(json_array_size(calls), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(calls, 0), "arguments")),
                        "{\"a\":1}");
    hermes_free(&h);
    json_array_clear(calls);
    const char *arr = "[{\"name\":\"f\",\"arguments\":{\"x\":[1]}},{\"name\":\"g\",\"arguments\":{}}]";
    assert_int_equal(tool_forced_parse(arr, strlen(arr), NULL, calls), 0);
    assert_int_equal(json_array_size(calls), 2);
    json_array_clear(calls);
    assert_int_equal(tool_forced_parse("{\"x\": 2}", 8, "f", calls), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(calls, 0), "name")), "f");
    assert_int_equal(tool_forced_parse("[{\"nam", 6, NULL, calls), -1);
    json_decref(calls);
    free(c);
}

// ---- metrics and response pieces ---------------------------------------------------------------------

static void test_metrics_render(void **state) {
    (void)state;
    struct metrics m;
    metrics_init(&m);
    metrics_observe(&m, HIST_TTFT, 0.003);
    metrics_observe(&m, HIST_TTFT, 1000);
    metrics_observe(&m, HIST_E2E, 0.4);
    struct engine_stats s = {.num_running = 3, .num_waiting = 2, .kv_usage = 0.25,
                             .prefix_queries = 10, .prefix_hits = 4, .prompt_tokens = 100,
                             .generation_tokens = 50, .num_preemptions = 1,
                             .finished = {0, 5, 6, 7, 0}};
    char *t = metrics_render(&m, &s, "q\"wen");
    static const char *const want[] = {
        "vllm:num_requests_running{model_name=\"q\\\"wen\"} 3\n",
        "vllm:num_requests_waiting{model_name=\"q\\\"wen\"} 2\n",
        "vllm:kv_cache_usage_perc{model_name=\"q\\\"wen\"} 0.25\n",
        "vllm:prefix_cache_queries_total{model_name=\"q\\\"wen\"} 10\n",
        "vllm:prefix_cache_hits_total{model_name=\"q\\\"wen\"} 4\n",
        "vllm:prompt_tokens_total{model_name=\"q\\\"wen\"} 100\n",
        "vllm:generation_tokens_total{model_name=\"q\\\"wen\"} 50\n",
        "vllm:num_preemptions_total{model_name=\"q\\\"wen\"} 1\n",
        "vllm:request_success_total{finished_reason=\"stop\",model_name=\"q\\\"wen\"} 5\n",
        "vllm:request_success_total{finished_reason=\"abort\",model_name=\"q\\\"wen\"} 7\n",
        "# TYPE vllm:time_to_first_token_seconds histogram\n",
        "vllm:time_to_first_token_seconds_bucket{le=\"0.001\",model_name=\"q\\\"wen\"} 0\n",
        "vllm:time_to_first_token_seconds_bucket{le=\"0.005\",model_name=\"q\\\"wen\"} 1\n",
        "vllm:time_to_first_token_seconds_bucket{le=\"2560\",model_name=\"q\\\"wen\"} 2\n",
        "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"q\\\"wen\"} 2\n",
        "vllm:time_to_first_token_seconds_count{model_name=\"q\\\"wen\"} 2\n",
        "vllm:e2e_request_latency_seconds_bucket{le=\"0.3\",model_name=\"q\\\"wen\"} 0\n",
        "vllm:e2e_request_latency_seconds_bucket{le=\"0.5\",model_name=\"q\\\"wen\"} 1\n",
        "# TYPE vllm:inter_token_latency_seconds histogram\n",
        "# TYPE vllm:request_queue_time_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(t, want[i])) fail_msg("missing: %s", want[i]);
    free(t);
    metrics_free(&m);
}

static const char *fake_bytes(void *ctx, int32_t id, size_t *len) {
    (void)ctx;
    static const char *const toks[] = {"he", "llo", "\xe2\x82", "\xac", "!"};
    if (id < 0 || id >= 5) return NULL;
    *len = strlen(toks[id]);
    return toks[id];
}

static void test_response_pieces(void **state) {
    (void)state;
    json_t *t = resp_text("a\xe2\x82", 3); // a cut UTF-8 sequence never breaks the JSON
    assert_string_equal(json_string_value(t), "a\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(t);
    struct sample_output lp[2] = {{.token = 2, .logprob = -0.5f, .n_top = 2,
                                   .top_ids = {2, 0}, .top_logprobs = {-0.5f, -1.5f}},
                                  {.token = 1, .logprob = -0.25f, .n_top = 2,
                                   .top_ids = {1, 4}, .top_logprobs = {-0.25f, -2.0f}}};
    json_t *content = json_array();
    resp_chat_logprobs(content, lp, 2, 1, fake_bytes, NULL);
    assert_int_equal(json_array_size(content), 2);
    json_t *e0 = json_array_get(content, 0);
    assert_true(json_real_value(json_object_get(e0, "logprob")) == -0.5);
    assert_int_equal(json_array_size(json_object_get(e0, "bytes")), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(e0, "bytes"), 0)), 0xe2);
    assert_int_equal(json_array_size(json_object_get(e0, "top_logprobs")), 1);
    json_decref(content);
    json_t *obj = resp_completion_logprobs_new();
    size_t off = 0;
    resp_completion_logprobs(obj, lp, 2, 2, fake_bytes, NULL, &off);
    assert_int_equal(off, 5);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(obj, "text_offset"), 1)), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(obj, "tokens"), 1)),
                        "llo");
    assert_int_equal(json_object_size(json_array_get(json_object_get(obj, "top_logprobs"), 1)), 2);
    json_decref(obj);
    json_t *u = resp_usage(7, 3, 0);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 10);
    json_decref(u);
    assert_string_equal(resp_finish(FINISH_STOP, true), "tool_calls");
    assert_string_equal(resp_finish(FINISH_LENGTH, true), "length");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    json_t *j = json_pack("{s:i}", "a", 1);
    resp_sse(&buf, &len, &cap, j);
    json_decref(j);
    assert_string_equal(buf, "data: {\"a\":1}\n\n");
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_args_vllm_line),
        cmocka_unit_test(test_args_all_flags),
        cmocka_unit_test(test_args_errors),
        cmocka_unit_test(test_chat_full),
        cmocka_unit_test(test_defaults_from_generation_config),
        cmocka_unit_test(test_completion_prompts),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_structured_outputs),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_error_json_cut_utf8),
        cmocka_unit_test(test_hermes_streaming_splits),
        cmocka_unit_test(test_hermes_unclosed_and_forced),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_response_pieces),
        cmocka_unit_test(test_check_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
