// OpenAI request bodies -> validated gen_request (see api.h).
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/api.h"
#include "server/respond.h"

void api_error_set(struct api_error *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

int api_check_fields(json_t *body, const char *const *allowed, const char *why, struct api_error *e) {
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        int i;
        for (i = 0; allowed[i] && strcmp(allowed[i], k); i++) {}
        if (!allowed[i]) {
            api_error_set(e, 400, k, "unknown field '%s'%s%s%s", k, why ? " (" : "", why ? why : "", why ? ")" : "");
            return -1;
        }
    }
    return 0;
}

json_t *api_error_json(const struct api_error *e) {
    const char *type = "invalid_request_error", *code = NULL;
    switch (e->status) {
    case 401: type = "authentication_error"; code = "invalid_api_key"; break;
    case 404: type = "not_found_error"; code = e->param[0] ? "model_not_found" : "not_found"; break;
    case 405: code = "method_not_allowed"; break;
    case 413: code = "request_too_large"; break;
    case 503: type = "server_error"; code = "overloaded"; break;
    case 500: type = "server_error"; code = "internal_error"; break;
    default: break;
    }
    json_t *err = json_object();
    // resp_text: a message or param cut inside a UTF-8 character still makes a JSON string
    json_object_set_new(err, "message", resp_text(e->message, strlen(e->message)));
    json_object_set_new(err, "type", json_string(type));
    json_object_set_new(err, "param", e->param[0] ? resp_text(e->param, strlen(e->param))
                                                  : json_null());
    json_object_set_new(err, "code", code ? json_string(code) : json_integer(e->status));
    json_t *o = json_object();
    json_object_set_new(o, "error", err);
    return o;
}

// ---- field access: JSON null counts as absent everywhere ----------------------------------

static json_t *field(json_t *body, const char *k) {
    json_t *v = json_object_get(body, k);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_number(json_t *body, const char *k, double lo, double hi, bool lo_open,
                      double *out, struct api_error *e) {
    json_t *v = field(body, k);
    if (!v) return 0;
    if (!json_is_number(v)) {
        api_error_set(e, 400, k, "'%s' must be a number", k);
        return -1;
    }
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) {
        api_error_set(e, 400, k, "'%s' must be in %s%g, %g], got %g", k, lo_open ? "(" : "[", lo,
                      hi, x);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_int(json_t *body, const char *k, long long lo, long long hi, long long *out,
                   struct api_error *e) {
    json_t *v = field(body, k);
    if (!v) return 0;
    double rv = json_is_real(v) ? json_real_value(v) : 0;
    if (json_is_integer(v)) *out = json_integer_value(v);
    else if (json_is_real(v) && rv == floor(rv) && fabs(rv) < 9e15) *out = (long long)rv;
    else { // integral floats (5.0) are accepted, as Python would
        api_error_set(e, 400, k, "'%s' must be an integer", k);
        return -1;
    }
    if (*out < lo || *out > hi) {
        api_error_set(e, 400, k, "'%s' must be in [%lld, %lld], got %lld", k, lo, hi, *out);
        return -1;
    }
    return 0;
}

static int get_bool(json_t *body, const char *k, bool *out, struct api_error *e) {
    json_t *v = field(body, k);
    if (!v) return 0;
    if (!json_is_boolean(v)) {
        api_error_set(e, 400, k, "'%s' must be a boolean", k);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_string(json_t *body, const char *k, const char **out, struct api_error *e) {
    json_t *v = field(body, k);
    if (!v) return 0;
    if (!json_is_string(v)) {
        api_error_set(e, 400, k, "'%s' must be a string", k);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

// ---- known fields ------------------------------------------------------------------------

enum { F_CHAT = 1, F_COMP = 2, F_BOTH = 3 };
static const struct { const char *name; int kinds; } known[] = {
    {"model", F_BOTH}, {"messages", F_CHAT}, {"prompt", F_COMP}, {"temperature", F_BOTH},
    {"top_p", F_BOTH}, {"top_k", F_BOTH}, {"min_p", F_BOTH}, {"n", F_BOTH},
    {"max_tokens", F_BOTH}, {"max_completion_tokens", F_CHAT}, {"stop", F_BOTH},
    {"stop_token_ids", F_BOTH}, {"seed", F_BOTH}, {"presence_penalty", F_BOTH},
    {"frequency_penalty", F_BOTH}, {"repetition_penalty", F_BOTH}, {"logit_bias", F_BOTH},
    {"logprobs", F_BOTH}, {"top_logprobs", F_CHAT}, {"ignore_eos", F_BOTH},
    {"min_tokens", F_BOTH}, {"stream", F_BOTH}, {"stream_options", F_BOTH}, {"user", F_BOTH},
    {"echo", F_COMP}, {"add_generation_prompt", F_CHAT}, {"chat_template_kwargs", F_CHAT},
    {"priority", F_BOTH}, {"skip_special_tokens", F_BOTH}, {"tools", F_CHAT},
    {"tool_choice", F_CHAT}, {"parallel_tool_calls", F_CHAT}, {"response_format", F_BOTH},
    {"guided_json", F_BOTH}, {"guided_regex", F_BOTH}, {"guided_choice", F_BOTH},
    {"guided_grammar", F_BOTH}, {"guided_whitespace_pattern", F_BOTH},
    {"structured_outputs", F_BOTH},
};

static int check_known(json_t *body, enum api_kind kind, struct api_error *e) {
    const char *k;
    json_t *v;
    int bit = kind == API_CHAT ? F_CHAT : F_COMP;
    json_object_foreach(body, k, v) {
        size_t i;
        for (i = 0; i < sizeof known / sizeof known[0]; i++)
            if (!strcmp(k, known[i].name)) break;
        if (i == sizeof known / sizeof known[0] || !(known[i].kinds & bit)) {
            api_error_set(e, 400, k, "unknown field '%s' for %s", k,
                          kind == API_CHAT ? "/v1/chat/completions" : "/v1/completions");
            return -1;
        }
    }
    return 0;
}

// ---- token arrays ---------------------------------------------------------------------------

static int parse_ids(json_t *arr, const char *k, int vocab, int32_t **out, int *n,
                     struct api_error *e) {
    size_t len = json_array_size(arr);
    *out = pg_malloc((len ? len : 1) * sizeof(int32_t));
    *n = 0;
    for (size_t i = 0; i < len; i++) {
        json_t *x = json_array_get(arr, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            (vocab > 0 && json_integer_value(x) >= vocab)) {
            api_error_set(e, 400, k, "'%s'[%zu] must be a token id in [0, %d)", k, i, vocab);
            return -1;
        }
        (*out)[(*n)++] = (int32_t)json_integer_value(x);
    }
    return 0;
}

static int parse_stop(struct api_request *r, json_t *body, const struct api_limits *lim,
                      struct api_error *e) {
    json_t *v = field(body, "stop");
    if (v) {
        if (json_is_string(v)) {
            if (json_string_length(v)) r->gen.stop[r->gen.n_stop++] = json_string_value(v);
        } else if (json_is_array(v)) {
            if (json_array_size(v) > ENGINE_MAX_STOP) {
                api_error_set(e, 400, "stop", "'stop' has %zu strings; at most %d",
                              json_array_size(v), ENGINE_MAX_STOP);
                return -1;
            }
            size_t i;
            json_t *s;
            json_array_foreach(v, i, s) {
                if (!json_is_string(s)) {
                    api_error_set(e, 400, "stop", "'stop' must be a string or strings");
                    return -1;
                }
                if (json_string_length(s)) r->gen.stop[r->gen.n_stop++] = json_string_value(s);
            }
        } else {
            api_error_set(e, 400, "stop", "'stop' must be a string or an array of strings");
            return -1;
        }
    }
    v = field(body, "stop_token_ids");
    if (v) {
        if (!json_is_array(v)) {
            api_error_set(e, 400, "stop_token_ids", "'stop_token_ids' must be an array of ids");
            return -1;
        }
        int32_t *ids;
        int n;
        int rc = parse_ids(v, "stop_token_ids", lim->vocab, &ids, &n, e);
        r->gen.stop_token_ids = ids;
        r->gen.n_stop_token_ids = n;
        if (rc) return -1;
    }
    return 0;
}

static int parse_logit_bias(struct api_request *r, json_t *body, const struct api_limits *lim,
                            struct api_error *e) {
    json_t *v = field(body, "logit_bias");
    if (!v) return 0;
    if (!json_is_object(v)) {
        api_error_set(e, 400, "logit_bias", "'logit_bias' must be an object {token id: bias}");
        return -1;
    }
    size_t n = json_object_size(v);
    int32_t *ids = pg_malloc((n ? n : 1) * sizeof *ids);
    float *vals = pg_malloc((n ? n : 1) * sizeof *vals);
    r->gen.sp.logit_bias_ids = ids;
    r->gen.sp.logit_bias_vals = vals;
    const char *k;
    json_t *x;
    int i = 0;
    json_object_foreach(v, k, x) {
        char *end;
        long id = strtol(k, &end, 10);
        if (!*k || *end || id < 0 || (lim->vocab > 0 && id >= lim->vocab)) {
            api_error_set(e, 400, "logit_bias", "'logit_bias' key '%.40s' is not a token id in "
                          "[0, %d)", k, lim->vocab);
            return -1;
        }
        if (!json_is_number(x) || !(json_number_value(x) >= -100 && json_number_value(x) <= 100)) {
            api_error_set(e, 400, "logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
            return -1;
        }
        ids[i] = (int32_t)id;
        vals[i] = (float)json_number_value(x);
        r->gen.sp.n_logit_bias = ++i;
    }
    return 0;
}

static int parse_sampling(struct api_request *r, json_t *body, const struct api_limits *lim,
                          struct api_error *e) {
    struct sampling_params *sp = &r->gen.sp;
    double x;
    long long i;
    x = lim->gen.temperature;
    if (get_number(body, "temperature", 0, 100, false, &x, e)) return -1;
    sp->temperature = lim->gen.do_sample || field(body, "temperature") ? (float)x : 0.0f;
    x = lim->gen.top_p;
    if (get_number(body, "top_p", 0, 1, true, &x, e)) return -1;
    sp->top_p = (float)x;
    i = lim->gen.top_k;
    if (get_int(body, "top_k", -1, 1 << 30, &i, e)) return -1;
    sp->top_k = (int)i;
    x = lim->gen.min_p;
    if (get_number(body, "min_p", 0, 1, false, &x, e)) return -1;
    sp->min_p = (float)x;
    x = lim->gen.repetition_penalty;
    if (get_number(body, "repetition_penalty", 0, 100, true, &x, e)) return -1;
    sp->repetition_penalty = (float)x;
    x = 0;
    if (get_number(body, "presence_penalty", -2, 2, false, &x, e)) return -1;
    sp->presence_penalty = (float)x;
    x = 0;
    if (get_number(body, "frequency_penalty", -2, 2, false, &x, e)) return -1;
    sp->frequency_penalty = (float)x;
    if (field(body, "seed")) {
        json_t *v = field(body, "seed");
        if (!json_is_integer(v)) {
            api_error_set(e, 400, "seed", "'seed' must be an integer");
            return -1;
        }
        sp->seed = (uint64_t)json_integer_value(v);
        r->gen.seeded = true;
    }
    i = 1;
    if (get_int(body, "n", 1, lim->max_n, &i, e)) return -1;
    r->gen.n = (int)i;
    const char *mt = field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    i = -1;
    if (get_int(body, mt, 1, 1 << 30, &i, e)) return -1;
    r->gen.max_tokens = (int)i;
    r->max_tokens_given = i > 0;
    i = 0;
    if (get_int(body, "min_tokens", 0, 1 << 30, &i, e)) return -1;
    r->gen.min_tokens = (int)i;
    if (r->max_tokens_given && r->gen.min_tokens > r->gen.max_tokens) {
        api_error_set(e, 400, "min_tokens", "'min_tokens' (%d) must not exceed max_tokens (%d)",
                      r->gen.min_tokens, r->gen.max_tokens);
        return -1;
    }
    i = 0;
    if (get_int(body, "priority", -(1ll << 31), (1ll << 31) - 1, &i, e)) return -1;
    r->gen.priority = (int)i;
    if (get_bool(body, "ignore_eos", &r->gen.ignore_eos, e)) return -1;
    if (get_bool(body, "skip_special_tokens", &r->gen.skip_special_tokens, e)) return -1;
    return 0;
}

static int parse_logprobs(struct api_request *r, json_t *body, struct api_error *e) {
    long long k = 0;
    if (r->kind == API_CHAT) {
        if (get_bool(body, "logprobs", &r->logprobs, e)) return -1;
        if (get_int(body, "top_logprobs", 0, SAMPLING_MAX_LOGPROBS, &k, e)) return -1;
        if (k > 0 && !r->logprobs) {
            api_error_set(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
            return -1;
        }
    } else if (field(body, "logprobs")) {
        if (get_int(body, "logprobs", 0, SAMPLING_MAX_LOGPROBS, &k, e)) return -1;
        r->logprobs = true;
    }
    r->top_logprobs = (int)k;
    r->gen.sp.logprobs = r->logprobs ? (int)k : -1;
    return 0;
}

static int parse_stream(struct api_request *r, json_t *body, struct api_error *e) {
    if (get_bool(body, "stream", &r->stream, e)) return -1;
    json_t *so = field(body, "stream_options");
    if (!so) return 0;
    if (!json_is_object(so)) {
        api_error_set(e, 400, "stream_options", "'stream_options' must be an object");
        return -1;
    }
    if (!r->stream) {
        api_error_set(e, 400, "stream_options", "'stream_options' needs 'stream': true");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(so, k, v) {
        if (strcmp(k, "include_usage") && strcmp(k, "continuous_usage_stats")) {
            api_error_set(e, 400, "stream_options", "unknown field 'stream_options.%s'", k);
            return -1;
        }
    }
    if (get_bool(so, "include_usage", &r->include_usage, e)) return -1;
    if (get_bool(so, "continuous_usage_stats", &r->continuous_usage, e)) return -1;
    return 0;
}

// ---- chat messages ----------------------------------------------------------------------------

static int normalize_content(json_t *msg, size_t idx, struct api_error *e) {
    json_t *c = json_object_get(msg, "content");
    if (!c || json_is_null(c) || json_is_string(c)) return 0;
    if (!json_is_array(c)) {
        api_error_set(e, 400, "messages", "messages[%zu].content must be a string or an array "
                      "of content parts", idx);
        return -1;
    }
    size_t cap = 256, len = 0, i;
    char *buf = pg_malloc(cap);
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *text = json_object_get(part, "text");
        if (!type || strcmp(type, "text") || !json_is_string(text)) {
            free(buf);
            api_error_set(e, 400, "messages", "messages[%zu].content[%zu]: content part type "
                          "'%.40s' is not supported (only 'text')", idx, i, type ? type : "?");
            return -1;
        }
        size_t tl = json_string_length(text);
        while (len + tl + 2 > cap) buf = pg_realloc(buf, cap *= 2);
        if (i) buf[len++] = '\n';
        memcpy(buf + len, json_string_value(text), tl);
        len += tl;
    }
    json_object_set_new(msg, "content", json_stringn_nocheck(buf, len));
    free(buf);
    return 0;
}

// Assistant tool calls arrive with arguments as JSON text; templates want the object.
static void parse_tool_call_args(json_t *msg) {
    json_t *calls = json_object_get(msg, "tool_calls");
    if (!json_is_array(calls)) return;
    json_t *copy = json_deep_copy(calls), *tc;
    size_t i;
    json_array_foreach(copy, i, tc) {
        json_t *fn = json_object_get(tc, "function");
        json_t *args = json_object_get(fn, "arguments");
        if (!json_is_string(args)) continue;
        json_t *parsed = json_loadb(json_string_value(args), json_string_length(args),
                                    JSON_DECODE_ANY, NULL);
        if (parsed) json_object_set_new(fn, "arguments", parsed);
    }
    json_object_set_new(msg, "tool_calls", copy);
}

static int parse_messages(struct api_request *r, json_t *body, struct api_error *e) {
    json_t *msgs = field(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        api_error_set(e, 400, "messages", "'messages' must be a non-empty array");
        return -1;
    }
    r->messages = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            api_error_set(e, 400, "messages", "messages[%zu] must be an object with a 'role'", i);
            return -1;
        }
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
            strcmp(role, "tool") && strcmp(role, "developer")) {
            api_error_set(e, 400, "messages", "messages[%zu].role '%.40s' is not one of system, "
                          "developer, user, assistant, tool", i, role);
            return -1;
        }
        json_t *c = json_object_get(m, "content");
        if ((!c || json_is_null(c)) && strcmp(role, "assistant")) {
            api_error_set(e, 400, "messages", "messages[%zu] (%s) needs 'content'", i, role);
            return -1;
        }
        json_t *copy = json_copy(m);
        json_array_append_new(r->messages, copy);
        // an assistant turn that only made tool calls has content null (the OpenAI SDK sends
        // it so): templates get "" (Qwen3's does string tests on it; Qwen2.5's treats both alike)
        if (!c || json_is_null(c)) json_object_set_new(copy, "content", json_string(""));
        if (normalize_content(copy, i, e)) return -1;
        parse_tool_call_args(copy);
    }
    return 0;
}

// ---- completion prompts -------------------------------------------------------------------------

static int parse_prompts(struct api_request *r, json_t *body, const struct api_limits *lim,
                         struct api_error *e) {
    json_t *p = field(body, "prompt");
    if (!p) {
        api_error_set(e, 400, "prompt", "'prompt' is required");
        return -1;
    }
    json_t *one[1] = {p};
    json_t **items = one;
    size_t n = 1;
    bool batch = json_is_array(p) && json_array_size(p) > 0 &&
                 (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0)));
    if (batch) n = json_array_size(p);
    if (json_is_array(p) && json_array_size(p) == 0) {
        api_error_set(e, 400, "prompt", "'prompt' must not be empty");
        return -1;
    }
    if ((int)n > lim->max_prompts) {
        api_error_set(e, 400, "prompt", "%zu prompts in one request; at most %d", n,
                      lim->max_prompts);
        return -1;
    }
    r->prompts = pg_calloc(n, sizeof *r->prompts);
    for (size_t i = 0; i < n; i++) {
        json_t *x = batch ? json_array_get(p, i) : items[0];
        struct api_prompt *ap = &r->prompts[r->n_prompts++];
        if (json_is_string(x)) {
            ap->text = json_string_value(x);
            ap->text_len = json_string_length(x);
        } else if (json_is_array(x) && json_array_size(x) > 0) {
            if (parse_ids(x, "prompt", lim->vocab, &ap->ids, &ap->n_ids, e)) return -1;
        } else {
            api_error_set(e, 400, "prompt", "'prompt' must be a string, an array of strings, "
                          "token ids, or arrays of token ids (non-empty)");
            return -1;
        }
    }
    return 0;
}

// ---- structured outputs ---------------------------------------------------------------------

static int set_grammar(struct api_request *r, enum grammar_kind kind, json_t *spec,
                       const char *param, struct api_error *e) {
    if (r->has_grammar) {
        api_error_set(e, 400, param, "'%s': only one structured-output constraint (guided_*, "
                      "structured_outputs, response_format, tool_choice) may be given", param);
        return -1;
    }
    bool want_string = kind == GRAMMAR_REGEX || kind == GRAMMAR_EBNF;
    if (kind == GRAMMAR_CHOICE) {
        size_t i;
        json_t *s;
        if (!json_is_array(spec) || json_array_size(spec) == 0) {
            api_error_set(e, 400, param, "'%s' must be a non-empty array of strings", param);
            return -1;
        }
        json_array_foreach(spec, i, s) if (!json_is_string(s)) {
            api_error_set(e, 400, param, "'%s'[%zu] must be a string", param, i);
            return -1;
        }
    } else if (want_string && !json_is_string(spec)) {
        api_error_set(e, 400, param, "'%s' must be a string", param);
        return -1;
    } else if (kind == GRAMMAR_JSON_SCHEMA && !json_is_object(spec) && !json_is_string(spec) &&
               !json_is_boolean(spec)) {
        api_error_set(e, 400, param, "'%s' must be a JSON Schema (an object or its text)", param);
        return -1;
    }
    r->has_grammar = true;
    r->grammar_kind = kind;
    snprintf(r->grammar_param, sizeof r->grammar_param, "%s", param);
    if (json_is_string(spec)) {
        r->grammar_spec = pg_strdup(json_string_value(spec));
        r->grammar_spec_len = json_string_length(spec);
    } else if (spec) {
        r->grammar_spec = json_dumps(spec, JSON_COMPACT | JSON_ENCODE_ANY);
        r->grammar_spec_len = strlen(r->grammar_spec);
    } else {
        r->grammar_spec = pg_strdup("");
    }
    return 0;
}

static int parse_structured_outputs(struct api_request *r, json_t *body, struct api_error *e) {
    static const struct { const char *name; enum grammar_kind kind; } guided[] = {
        {"guided_json", GRAMMAR_JSON_SCHEMA}, {"guided_regex", GRAMMAR_REGEX},
        {"guided_choice", GRAMMAR_CHOICE}, {"guided_grammar", GRAMMAR_EBNF},
    };
    for (size_t i = 0; i < 4; i++) {
        json_t *v = field(body, guided[i].name);
        if (v && set_grammar(r, guided[i].kind, v, guided[i].name, e)) return -1;
    }
    if (get_string(body, "guided_whitespace_pattern", &r->whitespace_pattern, e)) return -1;
    json_t *so = field(body, "structured_outputs");
    if (so) {
        static const struct { const char *name; enum grammar_kind kind; } sok[] = {
            {"json", GRAMMAR_JSON_SCHEMA}, {"regex", GRAMMAR_REGEX},
            {"choice", GRAMMAR_CHOICE}, {"grammar", GRAMMAR_EBNF},
        };
        if (!json_is_object(so)) {
            api_error_set(e, 400, "structured_outputs", "'structured_outputs' must be an object");
            return -1;
        }
        const char *k;
        json_t *v;
        json_object_foreach(so, k, v) {
            if (json_is_null(v)) continue;
            char param[64];
            snprintf(param, sizeof param, "structured_outputs.%s", k);
            if (!strcmp(k, "whitespace_pattern")) {
                if (get_string(so, k, &r->whitespace_pattern, e)) return -1;
                continue;
            }
            size_t i;
            for (i = 0; i < 4 && strcmp(k, sok[i].name); i++) {}
            if (i == 4) {
                api_error_set(e, 400, param, "unknown field '%s'", param);
                return -1;
            }
            if (set_grammar(r, sok[i].kind, v, param, e)) return -1;
        }
    }
    json_t *rf = field(body, "response_format");
    if (!rf) return 0;
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!json_is_object(rf) || !type) {
        api_error_set(e, 400, "response_format", "'response_format' must be an object with "
                      "'type' text, json_object or json_schema");
        return -1;
    }
    if (!strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object")) return set_grammar(r, GRAMMAR_JSON_OBJECT, NULL,
                                                         "response_format", e);
    if (strcmp(type, "json_schema")) {
        api_error_set(e, 400, "response_format", "response_format.type '%.40s' is not one of "
                      "text, json_object, json_schema", type);
        return -1;
    }
    json_t *js = json_object_get(rf, "json_schema");
    json_t *schema = json_object_get(js, "schema");
    if (!json_is_object(js) || !schema) {
        api_error_set(e, 400, "response_format.json_schema", "response_format json_schema needs "
                      "'json_schema': {name, schema, strict}");
        return -1;
    }
    json_t *name = json_object_get(js, "name"), *strict = json_object_get(js, "strict");
    if ((name && !json_is_string(name)) || (strict && !json_is_boolean(strict) &&
                                            !json_is_null(strict))) {
        api_error_set(e, 400, "response_format.json_schema", "json_schema.name must be a string "
                      "and json_schema.strict a boolean");
        return -1;
    }
    return set_grammar(r, GRAMMAR_JSON_SCHEMA, schema, "response_format.json_schema.schema", e);
}

// ---- tools ---------------------------------------------------------------------------------------

static json_t *find_tool(json_t *tools, const char *name) {
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && !strcmp(n, name)) return t;
    }
    return NULL;
}

static int parse_tools(struct api_request *r, json_t *body, struct api_error *e) {
    json_t *tools = field(body, "tools"), *tc = field(body, "tool_choice");
    if (tools) {
        size_t i;
        json_t *t;
        if (!json_is_array(tools)) {
            api_error_set(e, 400, "tools", "'tools' must be an array");
            return -1;
        }
        json_array_foreach(tools, i, t) {
            const char *type = json_string_value(json_object_get(t, "type"));
            json_t *fn = json_object_get(t, "function");
            json_t *params = json_object_get(fn, "parameters");
            if (!type || strcmp(type, "function") || !json_is_object(fn) ||
                !json_is_string(json_object_get(fn, "name")) ||
                (params && !json_is_object(params) && !json_is_null(params))) {
                api_error_set(e, 400, "tools", "tools[%zu] must be {\"type\": \"function\", "
                              "\"function\": {\"name\", \"description\", \"parameters\"}}", i);
                return -1;
            }
        }
        r->tools = json_array_size(tools) ? tools : NULL;
        r->tool_mode = r->tools ? TOOLS_AUTO : TOOLS_NONE;
        // the parser must see <tool_call> even where a tokenizer marks it special (as vLLM's
        // hermes parser does), unless the client decided
        if (r->tools && !field(body, "skip_special_tokens")) r->gen.skip_special_tokens = false;
    }
    if (!tc) return 0;
    const char *s = json_string_value(tc);
    if (s && !strcmp(s, "none")) {
        r->tools = NULL;
        r->tool_mode = TOOLS_NONE;
        return 0;
    }
    if (s && !strcmp(s, "auto")) return 0;
    if (s && !strcmp(s, "required")) {
        r->tool_mode = TOOLS_REQUIRED;
    } else if (json_is_object(tc)) {
        r->tool_name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        if (!r->tool_name) {
            api_error_set(e, 400, "tool_choice", "'tool_choice' object must be {\"type\": "
                          "\"function\", \"function\": {\"name\": ...}}");
            return -1;
        }
        r->tool_mode = TOOLS_NAMED;
    } else {
        api_error_set(e, 400, "tool_choice", "'tool_choice' must be none, auto, required or "
                      "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        return -1;
    }
    if (!r->tools) {
        api_error_set(e, 400, "tool_choice", "'tool_choice' %s needs 'tools'", s ? s : "function");
        return -1;
    }
    if (r->tool_mode == TOOLS_NAMED && !find_tool(r->tools, r->tool_name)) {
        api_error_set(e, 400, "tool_choice", "tool_choice names '%.60s', which is not in 'tools'",
                      r->tool_name);
        return -1;
    }
    bool parallel = true;
    if (get_bool(body, "parallel_tool_calls", &parallel, e)) return -1;
    char *schema = api_tool_schema(r->tools, r->tool_mode, r->tool_name, e);
    if (!schema) return -1;
    if (parallel == false && r->tool_mode == TOOLS_REQUIRED) {
        json_t *o = json_loads(schema, 0, NULL);
        json_object_set_new(o, "maxItems", json_integer(1));
        free(schema);
        schema = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    }
    json_t *js = json_string(schema);
    free(schema);
    int rc = set_grammar(r, GRAMMAR_JSON_SCHEMA, js, "tool_choice", e);
    json_decref(js);
    return rc;
}

char *api_tool_schema(json_t *tools, enum tool_mode mode, const char *name, struct api_error *e) {
    if (mode == TOOLS_NAMED) {
        json_t *t = find_tool(tools, name);
        if (!t) {
            api_error_set(e, 400, "tool_choice", "no tool named '%.60s'", name);
            return NULL;
        }
        json_t *params = json_object_get(json_object_get(t, "function"), "parameters");
        if (params && json_is_object(params)) return json_dumps(params, JSON_COMPACT);
        return pg_strdup("{\"type\":\"object\"}");
    }
    json_t *any = json_array(), *t;
    size_t i;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        json_t *params = json_object_get(fn, "parameters");
        json_t *args = json_is_object(params) ? json_incref(params)
                                              : json_pack("{s:s}", "type", "object");
        json_t *call = json_pack("{s:s, s:{s:{s:[O]}, s:o}, s:[s,s]}", "type", "object",
                                 "properties", "name", "enum", json_object_get(fn, "name"),
                                 "arguments", args, "required", "name", "arguments");
        json_array_append_new(any, call);
    }
    json_t *schema = json_pack("{s:s, s:i, s:{s:o}}", "type", "array", "minItems", 1, "items",
                               "anyOf", any);
    char *s = json_dumps(schema, JSON_COMPACT);
    json_decref(schema);
    return s;
}

// ---- the whole request ---------------------------------------------------------------------

int api_request_parse(struct api_request *r, enum api_kind kind, json_t *body,
                      const struct api_limits *lim, struct api_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->add_generation_prompt = true;
    // (gen_request_defaults lives in the engine; the server sets every field itself)
    r->gen.n = 1;
    r->gen.max_tokens = -1;
    r->gen.skip_special_tokens = true;
    r->gen.sp.logprobs = -1;
    if (!json_is_object(body)) {
        api_error_set(e, 400, NULL, "the request body must be a JSON object");
        return -1;
    }
    r->body = json_incref(body);
    if (check_known(body, kind, e)) return -1;
    if (get_string(body, "model", &r->model, e)) return -1;
    if (r->model && lim->model_name && strcmp(r->model, lim->model_name)) {
        api_error_set(e, 404, "model", "The model '%.200s' does not exist (this server serves "
                      "'%.200s')", r->model, lim->model_name);
        return -1;
    }
    if (kind == API_CHAT) {
        if (parse_messages(r, body, e)) return -1;
        if (get_bool(body, "add_generation_prompt", &r->add_generation_prompt, e)) return -1;
        json_t *kw = field(body, "chat_template_kwargs");
        if (kw && !json_is_object(kw)) {
            api_error_set(e, 400, "chat_template_kwargs", "'chat_template_kwargs' must be an "
                          "object");
            return -1;
        }
        r->template_kwargs = kw;
    } else {
        if (parse_prompts(r, body, lim, e)) return -1;
        if (get_bool(body, "echo", &r->echo, e)) return -1;
    }
    if (parse_sampling(r, body, lim, e) || parse_stop(r, body, lim, e) ||
        parse_logit_bias(r, body, lim, e) || parse_logprobs(r, body, e) ||
        parse_stream(r, body, e) || get_string(body, "user", &r->user, e) ||
        parse_structured_outputs(r, body, e))
        return -1;
    if (kind == API_CHAT && parse_tools(r, body, e)) return -1;
    if (kind == API_CHAT && r->tool_mode == TOOLS_NONE && field(body, "parallel_tool_calls") &&
        !json_is_boolean(field(body, "parallel_tool_calls"))) {
        api_error_set(e, 400, "parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
        return -1;
    }
    return 0;
}

int api_check_length(struct api_request *r, int n_prompt, const struct api_limits *lim,
                     struct api_error *e) {
    if (n_prompt <= 0) {
        api_error_set(e, 400, r->kind == API_CHAT ? "messages" : "prompt",
                      "the prompt is empty (0 tokens)");
        return -1;
    }
    const char *what = r->kind == API_CHAT ? "messages" : "prompt";
    if (r->max_tokens_given) {
        if ((long long)n_prompt + r->gen.max_tokens > lim->max_model_len) {
            api_error_set(e, 400, r->kind == API_CHAT ? "max_tokens" : "max_tokens",
                          "This model's maximum context length is %d tokens. However, you "
                          "requested %lld tokens (%d in the %s, %d for the completion). Please "
                          "reduce the length of the %s or completion.", lim->max_model_len,
                          (long long)n_prompt + r->gen.max_tokens, n_prompt, what,
                          r->gen.max_tokens, what);
            return -1;
        }
    } else {
        if (n_prompt >= lim->max_model_len) {
            api_error_set(e, 400, what, "This model's maximum context length is %d tokens. "
                          "However, your %s has %d tokens, leaving no room for the completion.",
                          lim->max_model_len, what, n_prompt);
            return -1;
        }
        r->gen.max_tokens = lim->max_model_len - n_prompt;
    }
    return 0;
}

int api_structured_parse(struct api_request *r, json_t *body, const struct api_limits *lim,
                         struct api_error *e) {
    static const char *const allowed[] = {"model", "guided_json", "guided_regex", "guided_choice",
                                          "guided_grammar", "guided_whitespace_pattern",
                                          "structured_outputs", "response_format", NULL};
    memset(r, 0, sizeof *r);
    if (!json_is_object(body)) {
        api_error_set(e, 400, NULL, "the request body must be a JSON object");
        return -1;
    }
    r->body = json_incref(body);
    if (api_check_fields(body, allowed, "a warm-up takes only the structured-output fields of a generation request", e))
        return -1;
    if (get_string(body, "model", &r->model, e)) return -1;
    if (r->model && lim->model_name && strcmp(r->model, lim->model_name)) {
        api_error_set(e, 404, "model", "The model '%.200s' does not exist (this server serves "
                      "'%.200s')", r->model, lim->model_name);
        return -1;
    }
    if (parse_structured_outputs(r, body, e)) return -1;
    if (!r->has_grammar) {
        api_error_set(e, 400, NULL, "a warm-up needs one structured-output constraint (guided_json, "
                      "guided_regex, guided_choice, guided_grammar, structured_outputs or "
                      "response_format)");
        return -1;
    }
    return 0;
}

void api_request_free(struct api_request *r) {
    json_decref(r->messages);
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i].ids);
    free(r->prompts);
    free((void *)r->gen.stop_token_ids);
    free((void *)r->gen.sp.logit_bias_ids);
    free((void *)r->gen.sp.logit_bias_vals);
    free(r->grammar_spec);
    json_decref(r->body);
    memset(r, 0, sizeof *r);
}
