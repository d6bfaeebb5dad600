// Offline batch runner and JSON sampling parameters (see engine_offline.h).
#include "engine/engine_offline.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct offline_ctx {
    struct offline_result *res;
    double t_added;
    int logprobs;
};

static void offline_on_output(void *user, const struct engine_output *o) {
    struct offline_ctx *c = user;
    struct offline_seq *s = &c->res->seqs[o->index];
    if (o->n_tokens) {
        s->tokens = pg_realloc(s->tokens, (size_t)(s->n_tokens + o->n_tokens) * sizeof *s->tokens);
        memcpy(s->tokens + s->n_tokens, o->tokens, (size_t)o->n_tokens * sizeof *o->tokens);
        if (o->logprobs) {
            s->logprobs = pg_realloc(s->logprobs,
                                     (size_t)(s->n_tokens + o->n_tokens) * sizeof *s->logprobs);
            memcpy(s->logprobs + s->n_tokens, o->logprobs, (size_t)o->n_tokens * sizeof *o->logprobs);
        }
        s->n_tokens += o->n_tokens;
        if (!s->t_first_token) s->t_first_token = pg_now() - c->t_added;
    }
    if (o->text_len) {
        s->text = pg_realloc(s->text, s->text_len + o->text_len + 1);
        memcpy(s->text + s->text_len, o->text, o->text_len);
        s->text_len += o->text_len;
        s->text[s->text_len] = 0;
    }
    s->n_prompt_tokens = o->n_prompt_tokens;
    s->n_cached_tokens = o->n_cached_tokens;
    if (o->finish != FINISH_NONE) {
        s->finish = o->finish;
        s->stop_token = o->stop_token;
        if (o->stop_reason) s->stop_reason = pg_strdup(o->stop_reason);
        s->t_done = pg_now() - c->t_added;
    }
}

int engine_run_offline(struct engine *e, const struct gen_request *reqs, int n,
                       struct offline_result *results, char *err) {
    struct offline_ctx *ctx = pg_calloc((size_t)(n > 0 ? n : 1), sizeof *ctx);
    memset(results, 0, (size_t)n * sizeof *results);
    for (int i = 0; i < n; i++) {
        struct gen_request r = reqs[i];
        struct offline_result *res = &results[i];
        ctx[i].res = res;
        ctx[i].t_added = pg_now();
        r.on_output = offline_on_output;
        r.user = &ctx[i];
        // the sequences must exist before the first callback
        int ns = r.n >= 1 && r.n <= 1024 ? r.n : 1;
        res->seqs = pg_calloc((size_t)ns, sizeof *res->seqs);
        for (int j = 0; j < ns; j++) {
            res->seqs[j].text = pg_strdup("");
            res->seqs[j].stop_token = -1;
        }
        res->n = ns;
        if (engine_add(e, &r, NULL, res->error) != ENGINE_OK) {
            for (int j = 0; j < ns; j++) free(res->seqs[j].text);
            free(res->seqs);
            res->seqs = NULL;
            res->n = 0;
        }
    }
    int rc = 0;
    while (engine_has_work(e))
        if (engine_step(e) < 0) {
            pg_seterr(err, "the backend failed during the batch (see the log)");
            rc = -1;
        }
    free(ctx);
    return rc;
}

void offline_results_free(struct offline_result *results, int n) {
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < results[i].n; j++) {
            struct offline_seq *s = &results[i].seqs[j];
            free(s->tokens);
            free(s->text);
            free(s->logprobs);
            free(s->stop_reason);
        }
        free(results[i].seqs);
        results[i].seqs = NULL;
        results[i].n = 0;
    }
}

static int get_int(const json_t *obj, const char *key, int *dst, char *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < -2147483647 ||
        json_integer_value(v) > 2147483647) {
        pg_seterr(err, "'%s' must be an integer", key);
        return -1;
    }
    *dst = (int)json_integer_value(v);
    return 0;
}

static int get_float(const json_t *obj, const char *key, float *dst, char *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) {
        pg_seterr(err, "'%s' must be a number", key);
        return -1;
    }
    *dst = (float)json_number_value(v);
    return 0;
}

static int get_bool(const json_t *obj, const char *key, bool *dst, char *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        pg_seterr(err, "'%s' must be true or false", key);
        return -1;
    }
    *dst = json_is_true(v);
    return 0;
}

static int get_stop(struct gen_request *r, const json_t *obj, char *err) {
    json_t *v = json_object_get(obj, "stop");
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        r->stop[0] = json_string_value(v);
        r->n_stop = 1;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > ENGINE_MAX_STOP) {
        pg_seterr(err, "'stop' must be a string or an array of at most %d strings", ENGINE_MAX_STOP);
        return -1;
    }
    r->n_stop = 0;
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s)) {
            pg_seterr(err, "'stop' must be a string or an array of strings");
            return -1;
        }
        r->stop[r->n_stop++] = json_string_value(s);
    }
    return 0;
}

// stop_token_ids: written into ids_buf (caller-provided, max entries) and pointed to by r.
static int get_stop_ids(struct gen_request *r, const json_t *obj, int32_t *ids_buf, int max,
                        char *err) {
    json_t *v = json_object_get(obj, "stop_token_ids");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v) || json_array_size(v) > (size_t)max) {
        pg_seterr(err, "'stop_token_ids' must be an array of at most %d token ids", max);
        return -1;
    }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 0x7fffffff) {
            pg_seterr(err, "'stop_token_ids' must hold non-negative integers");
            return -1;
        }
        ids_buf[i] = (int32_t)json_integer_value(x);
    }
    r->stop_token_ids = ids_buf;
    r->n_stop_token_ids = (int)json_array_size(v);
    return 0;
}

static int get_logprobs(struct gen_request *r, const json_t *obj, char *err) {
    json_t *v = json_object_get(obj, "logprobs");
    if (!v || json_is_null(v)) return 0;
    if (json_is_boolean(v)) { // chat style: logprobs: true, top_logprobs: k
        r->sp.logprobs = json_is_true(v) ? 0 : -1;
        int top = 0;
        if (get_int(obj, "top_logprobs", &top, err)) return -1;
        if (json_is_true(v)) r->sp.logprobs = top;
        return 0;
    }
    return get_int(obj, "logprobs", &r->sp.logprobs, err);
}

// logit_bias: {"<token id>": bias in [-100, 100]} into ids / vals (max entries).
static int get_logit_bias(struct gen_request *r, const json_t *obj, int32_t *ids, float *vals,
                          int max, char *err) {
    json_t *v = json_object_get(obj, "logit_bias");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_object(v)) {
        pg_seterr(err, "'logit_bias' must be an object {\"token id\": bias}");
        return -1;
    }
    if (json_object_size(v) > (size_t)max) {
        if (max == 0) pg_seterr(err, "'logit_bias' is not supported here");
        else pg_seterr(err, "'logit_bias' has more than %d entries", max);
        return -1;
    }
    const char *k;
    json_t *x;
    int n = 0;
    json_object_foreach(v, k, x) {
        char *end;
        errno = 0;
        long id = strtol(k, &end, 10);
        if (*k < '0' || *k > '9' || *end || errno || id > 0x7fffffff) {
            pg_seterr(err, "'logit_bias' key '%.40s' is not a token id", k);
            return -1;
        }
        double b = json_is_number(x) ? json_number_value(x) : NAN;
        if (!(b >= -100 && b <= 100)) {
            pg_seterr(err, "'logit_bias' value for token %ld must be a number in [-100, 100]", id);
            return -1;
        }
        ids[n] = (int32_t)id;
        vals[n++] = (float)b;
    }
    r->sp.logit_bias_ids = ids;
    r->sp.logit_bias_vals = vals;
    r->sp.n_logit_bias = n;
    return 0;
}

int gen_request_from_json(struct gen_request *r, const json_t *obj, int32_t *stop_ids,
                          int max_stop_ids, char *err) {
    return gen_request_from_json_bias(r, obj, stop_ids, max_stop_ids, NULL, NULL, 0, err);
}

int gen_request_from_json_bias(struct gen_request *r, const json_t *obj, int32_t *stop_ids,
                               int max_stop_ids, int32_t *bias_ids, float *bias_vals,
                               int max_bias, char *err) {
    if (!json_is_object(obj)) {
        pg_seterr(err, "sampling parameters must be a JSON object");
        return -1;
    }
    json_t *seed = json_object_get(obj, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) {
            pg_seterr(err, "'seed' must be an integer");
            return -1;
        }
        r->sp.seed = (uint64_t)json_integer_value(seed);
        r->seeded = true;
    }
    if (get_int(obj, "max_tokens", &r->max_tokens, err) ||
        get_int(obj, "max_completion_tokens", &r->max_tokens, err) ||
        get_int(obj, "min_tokens", &r->min_tokens, err) || get_int(obj, "n", &r->n, err) ||
        get_int(obj, "top_k", &r->sp.top_k, err) || get_int(obj, "priority", &r->priority, err) ||
        get_float(obj, "temperature", &r->sp.temperature, err) ||
        get_float(obj, "top_p", &r->sp.top_p, err) || get_float(obj, "min_p", &r->sp.min_p, err) ||
        get_float(obj, "repetition_penalty", &r->sp.repetition_penalty, err) ||
        get_float(obj, "presence_penalty", &r->sp.presence_penalty, err) ||
        get_float(obj, "frequency_penalty", &r->sp.frequency_penalty, err) ||
        get_bool(obj, "ignore_eos", &r->ignore_eos, err) ||
        get_bool(obj, "skip_special_tokens", &r->skip_special_tokens, err) ||
        get_stop(r, obj, err) || get_logprobs(r, obj, err) ||
        get_stop_ids(r, obj, stop_ids, max_stop_ids, err) ||
        get_logit_bias(r, obj, bias_ids, bias_vals, max_bias, err))
        return -1;
    return 0;
}
