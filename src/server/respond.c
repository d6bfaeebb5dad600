// OpenAI response pieces (see respond.h).
#include "server/respond.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/sampling.h"

// Length of the valid UTF-8 sequence at s (n bytes left), or 0 when invalid.
static size_t utf8_seq(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (!len || len > n || (s[0] >= 0xf8)) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))) return 0;
    if (len == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))) return 0;
    return len;
}

json_t *resp_text(const char *s, size_t n) {
    json_t *j = json_stringn(s ? s : "", n);
    if (j) return j;
    char *out = pg_malloc(n * 3 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i);
        if (l && s[i]) {
            memcpy(out + k, s + i, l);
            k += l;
            i += l;
        } else {
            memcpy(out + k, "\xef\xbf\xbd", 3); // U+FFFD (also for NUL, which jansson rejects)
            k += 3;
            i++;
        }
    }
    j = json_stringn(out, k);
    free(out);
    return j ? j : json_string("");
}

static json_t *bytes_array(const char *s, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

static json_t *lp_value(float lp) {
    // -inf (a masked token) has no JSON form; OpenAI clients expect a number
    return json_real(isfinite(lp) ? lp : -9999.0);
}

static json_t *chat_entry(int32_t id, float lp, token_bytes_fn tb, void *ctx) {
    size_t n = 0;
    const char *s = tb(ctx, id, &n);
    if (!s) s = "", n = 0;
    return json_pack("{s:o, s:o, s:o}", "token", resp_text(s, n), "logprob", lp_value(lp), "bytes",
                     bytes_array(s, n));
}

void resp_chat_logprobs(json_t *content, const struct sample_output *lp, int n, int top_k,
                        token_bytes_fn tb, void *ctx) {
    for (int i = 0; i < n; i++) {
        json_t *e = chat_entry(lp[i].token, lp[i].logprob, tb, ctx);
        json_t *top = json_array();
        int k = lp[i].n_top < top_k ? lp[i].n_top : top_k;
        for (int t = 0; t < k; t++)
            json_array_append_new(top, chat_entry(lp[i].top_ids[t], lp[i].top_logprobs[t], tb, ctx));
        json_object_set_new(e, "top_logprobs", top);
        json_array_append_new(content, e);
    }
}

json_t *resp_completion_logprobs_new(void) {
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

void resp_completion_logprobs(json_t *obj, const struct sample_output *lp, int n, int top_k,
                              token_bytes_fn tb, void *ctx, size_t *offset) {
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        const char *s = tb(ctx, lp[i].token, &len);
        if (!s) s = "", len = 0;
        json_array_append_new(json_object_get(obj, "tokens"), resp_text(s, len));
        json_array_append_new(json_object_get(obj, "token_logprobs"), lp_value(lp[i].logprob));
        json_array_append_new(json_object_get(obj, "text_offset"), json_integer((json_int_t)*offset));
        *offset += len;
        json_t *top = json_object();
        int k = lp[i].n_top < top_k ? lp[i].n_top : top_k;
        for (int t = 0; t < k; t++) {
            size_t tl = 0;
            const char *ts = tb(ctx, lp[i].top_ids[t], &tl);
            json_t *key = resp_text(ts ? ts : "", ts ? tl : 0);
            json_object_set_new(top, json_string_value(key), lp_value(lp[i].top_logprobs[t]));
            json_decref(key);
        }
        json_array_append_new(json_object_get(obj, "top_logprobs"), top);
    }
}

json_t *resp_usage(int p, int c, int cached) {
    json_t *u = json_pack("{s:i, s:i, s:i}", "prompt_tokens", p, "completion_tokens", c,
                          "total_tokens", p + c);
    if (cached > 0)
        json_object_set_new(u, "prompt_tokens_details", json_pack("{s:i}", "cached_tokens", cached));
    return u;
}

const char *resp_finish(enum finish_reason r, bool tool_calls) {
    switch (r) {
    case FINISH_STOP: return tool_calls ? "tool_calls" : "stop";
    case FINISH_LENGTH: return "length";
    case FINISH_ABORT: return "abort";
    case FINISH_ERROR: return "error";
    default: return NULL;
    }
}

json_t *resp_tool_call(json_t *call, int index, uint64_t seed) {
    char id[40];
    snprintf(id, sizeof id, "call_%016llx", (unsigned long long)pg_mix64(seed));
    json_t *fn = json_pack("{s:O, s:O}", "name", json_object_get(call, "name"), "arguments",
                           json_object_get(call, "arguments"));
    json_t *tc = json_pack("{s:s, s:s, s:o}", "id", id, "type", "function", "function", fn);
    if (index >= 0) json_object_set_new(tc, "index", json_integer(index));
    return tc;
}

void resp_sse_raw(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = pg_realloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
}

void resp_sse(char **buf, size_t *len, size_t *cap, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT);
    resp_sse_raw(buf, len, cap, "data: ");
    resp_sse_raw(buf, len, cap, s ? s : "{}");
    resp_sse_raw(buf, len, cap, "\n\n");
    free(s);
}
