// Request validation at engine_add and the engine's private copy of a request.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_impl.h"
#include "grammar/grammar.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

void gen_request_defaults(struct gen_request *r) {
    memset(r, 0, sizeof *r);
    r->sp.temperature = 1.0f;
    r->sp.top_p = 1.0f;
    r->sp.top_k = -1;
    r->sp.min_p = 0.0f;
    r->sp.repetition_penalty = 1.0f;
    r->sp.logprobs = -1;
    r->max_tokens = -1;
    r->skip_special_tokens = true;
    r->n = 1;
}

#define ENGINE_MAX_N 128

static int validate_sampling(const struct sampling_params *p, int vocab, char *err) {
    if (!(p->temperature >= 0) || !isfinite(p->temperature)) {
        pg_seterr(err, "temperature must be >= 0, got %g", p->temperature);
        return -1;
    }
    if (!(p->top_p > 0 && p->top_p <= 1)) {
        pg_seterr(err, "top_p must be in (0, 1], got %g", p->top_p);
        return -1;
    }
    if (p->top_k < -1) {
        pg_seterr(err, "top_k must be -1 (off) or >= 0, got %d", p->top_k);
        return -1;
    }
    if (!(p->min_p >= 0 && p->min_p <= 1)) {
        pg_seterr(err, "min_p must be in [0, 1], got %g", p->min_p);
        return -1;
    }
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty)) {
        pg_seterr(err, "repetition_penalty must be > 0, got %g", p->repetition_penalty);
        return -1;
    }
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2)) {
        pg_seterr(err, "presence_penalty must be in [-2, 2], got %g", p->presence_penalty);
        return -1;
    }
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2)) {
        pg_seterr(err, "frequency_penalty must be in [-2, 2], got %g", p->frequency_penalty);
        return -1;
    }
    if (p->logprobs < -1 || p->logprobs > SAMPLING_MAX_LOGPROBS) {
        pg_seterr(err, "logprobs must be in [0, %d], got %d", SAMPLING_MAX_LOGPROBS, p->logprobs);
        return -1;
    }
    if (p->n_logit_bias < 0 || (p->n_logit_bias && (!p->logit_bias_ids || !p->logit_bias_vals))) {
        pg_seterr(err, "logit_bias: bad array");
        return -1;
    }
    for (int i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias_ids[i] < 0 || p->logit_bias_ids[i] >= vocab) {
            pg_seterr(err, "logit_bias: token id %d is outside the vocabulary [0, %d)",
                      p->logit_bias_ids[i], vocab);
            return -1;
        }
        if (!(p->logit_bias_vals[i] >= -100 && p->logit_bias_vals[i] <= 100)) {
            pg_seterr(err, "logit_bias: value %g for token %d is outside [-100, 100]",
                      p->logit_bias_vals[i], p->logit_bias_ids[i]);
            return -1;
        }
    }
    return 0;
}

static int validate_lengths(const struct engine *e, const struct gen_request *r, char *err) {
    int mml = e->cfg.max_model_len;
    if (!r->prompt || r->n_prompt <= 0) {
        pg_seterr(err, "the prompt is empty");
        return -1;
    }
    if (r->n_prompt >= mml) {
        pg_seterr(err, "the prompt has %d tokens; this model's maximum context length is %d "
                       "(prompt plus at least one output token)", r->n_prompt, mml);
        return -1;
    }
    if (r->max_tokens == 0 || r->max_tokens < -1) {
        pg_seterr(err, "max_tokens must be >= 1, got %d", r->max_tokens);
        return -1;
    }
    if (r->max_tokens > 0 && (int64_t)r->n_prompt + r->max_tokens > mml) {
        pg_seterr(err, "the prompt (%d tokens) plus max_tokens (%d) is %lld tokens, more than "
                       "this model's maximum context length of %d tokens", r->n_prompt,
                  r->max_tokens, (long long)r->n_prompt + r->max_tokens, mml);
        return -1;
    }
    if (r->min_tokens < 0 || (r->max_tokens > 0 && r->min_tokens > r->max_tokens)) {
        pg_seterr(err, "min_tokens must be in [0, max_tokens], got %d", r->min_tokens);
        return -1;
    }
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->vocab) {
            pg_seterr(err, "prompt token %d at position %d is outside the vocabulary [0, %d)",
                      r->prompt[i], i, e->vocab);
            return -1;
        }
    return 0;
}

int ereq_validate(const struct engine *e, const struct gen_request *r, char *err) {
    if (validate_lengths(e, r, err) || validate_sampling(&r->sp, e->vocab, err)) return -1;
    if (r->n < 1 || r->n > ENGINE_MAX_N) {
        pg_seterr(err, "n must be in [1, %d], got %d", ENGINE_MAX_N, r->n);
        return -1;
    }
    if (r->n_stop < 0 || r->n_stop > ENGINE_MAX_STOP) {
        pg_seterr(err, "at most %d stop strings, got %d", ENGINE_MAX_STOP, r->n_stop);
        return -1;
    }
    for (int i = 0; i < r->n_stop; i++)
        if (!r->stop[i] || !r->stop[i][0]) {
            pg_seterr(err, "stop string %d is empty", i);
            return -1;
        }
    if (r->n_stop && !e->tok) {
        pg_seterr(err, "stop strings need a tokenizer (the engine has none)");
        return -1;
    }
    if (r->n_stop_token_ids < 0 || (r->n_stop_token_ids && !r->stop_token_ids)) {
        pg_seterr(err, "stop_token_ids: bad array");
        return -1;
    }
    for (int i = 0; i < r->n_stop_token_ids; i++)
        if (r->stop_token_ids[i] < 0 || r->stop_token_ids[i] >= e->vocab) {
            pg_seterr(err, "stop_token_ids: %d is outside the vocabulary [0, %d)",
                      r->stop_token_ids[i], e->vocab);
            return -1;
        }
    if (!r->on_output) {
        pg_seterr(err, "internal: request without an output callback");
        return -1;
    }
    // The longest this request can grow must fit in the KV pool, or it could never run.
    int max_tokens = r->max_tokens > 0 ? r->max_tokens : e->cfg.max_model_len - r->n_prompt;
    int64_t need = ((int64_t)r->n_prompt + max_tokens + e->cfg.block_size - 1) / e->cfg.block_size;
    if (need > e->num_blocks) {
        pg_seterr(err, "the prompt (%d tokens) plus max_tokens (%d) needs %lld KV blocks of %d "
                       "tokens; the KV cache has %d", r->n_prompt, max_tokens, (long long)need,
                  e->cfg.block_size, e->num_blocks);
        return -1;
    }
    return 0;
}

static void *dup_array(const void *src, size_t n, size_t elem) {
    if (!n) return NULL;
    void *d = pg_malloc(n * elem);
    memcpy(d, src, n * elem);
    return d;
}

static void eseq_init(struct engine *e, struct ereq *q, int i) {
    struct eseq *s = &q->seqs[i];
    s->req = q;
    s->index = i;
    sched_seq_init(&s->s, q->prompt, q->r.n_prompt);
    s->s.priority = q->r.priority;
    s->s.arrival = e->arrival++;
    s->s.owner = s;
    s->s.leader = i > 0 ? &q->seqs[0].s : NULL;
    s->s.max_len = q->r.n_prompt + q->max_tokens;
    if (s->s.max_len > e->cfg.max_model_len) s->s.max_len = e->cfg.max_model_len;
    s->sp = q->r.sp;
    uint64_t seed = q->r.seeded ? q->r.sp.seed : pg_mix64(e->cfg.seed ^ pg_mix64(q->id));
    s->sp.seed = i == 0 ? seed : pg_mix64(seed + (uint64_t)i);
    if (e->tok) s->dt = detok_new(e->tok, q->r.skip_special_tokens);
    if (q->r.grammar) {
        s->gm = grammar_matcher_new(q->r.grammar);
        s->mask = pg_malloc((size_t)(e->vocab + 31) / 32 * sizeof *s->mask);
    }
}

struct ereq *ereq_new(struct engine *e, const struct gen_request *r, uint64_t id) {
    struct ereq *q = pg_calloc(1, sizeof *q);
    q->id = id;
    q->r = *r;
    q->prompt = dup_array(r->prompt, (size_t)r->n_prompt, sizeof *r->prompt);
    q->r.prompt = q->prompt;
    for (int i = 0; i < r->n_stop; i++) {
        q->stops[i] = pg_strdup(r->stop[i]);
        q->stop_len[i] = strlen(r->stop[i]);
        q->r.stop[i] = q->stops[i];
    }
    q->stop_ids = dup_array(r->stop_token_ids, (size_t)r->n_stop_token_ids, sizeof(int32_t));
    q->r.stop_token_ids = q->stop_ids;
    q->bias_ids = dup_array(r->sp.logit_bias_ids, (size_t)r->sp.n_logit_bias, sizeof(int32_t));
    q->bias_vals = dup_array(r->sp.logit_bias_vals, (size_t)r->sp.n_logit_bias, sizeof(float));
    q->r.sp.logit_bias_ids = q->bias_ids;
    q->r.sp.logit_bias_vals = q->bias_vals;
    q->max_tokens = r->max_tokens > 0 ? r->max_tokens : e->cfg.max_model_len - r->n_prompt;
    // banned under min_tokens: eos (unless ignored) and the stop ids
    q->banned = pg_malloc((size_t)(MODEL_MAX_EOS + r->n_stop_token_ids + 1) * sizeof *q->banned);
    if (!r->ignore_eos)
        for (int i = 0; i < e->mcfg->n_eos; i++) q->banned[q->n_banned++] = e->mcfg->eos_ids[i];
    for (int i = 0; i < r->n_stop_token_ids; i++) q->banned[q->n_banned++] = r->stop_token_ids[i];
    if (r->grammar) grammar_retain(r->grammar);
    q->t_arrival = pg_now();
    q->n_unfinished = r->n;
    q->seqs = pg_calloc((size_t)r->n, sizeof *q->seqs);
    for (int i = 0; i < r->n; i++) eseq_init(e, q, i);
    return q;
}

void ereq_free(struct ereq *q) {
    if (!q) return;
    for (int i = 0; i < q->r.n; i++) {
        struct eseq *s = &q->seqs[i];
        sched_seq_destroy(&s->s);
        if (s->dt) detok_free(s->dt);
        if (s->gm) grammar_matcher_free(s->gm);
        free(s->mask);
        free(s->held);
    }
    if (q->r.grammar) grammar_release(q->r.grammar);
    free(q->seqs);
    free(q->prompt);
    for (int i = 0; i < q->r.n_stop; i++) free(q->stops[i]);
    free(q->stop_ids);
    free(q->bias_ids);
    free(q->bias_vals);
    free(q->banned);
    free(q);
}
