// A test-double backend for engine tests (header-only, included by tests/c/test_engine*.c).
//
// It keeps a KV "cache" of (token id, position) per block slot and computes the next token
// as a hash of every token of the context read back *through the block table*, so a wrong
// block id, a wrong position or a block overwritten while shared changes the outputs (or
// fails the step with a message). ref_next() is the same function over a plain token array:
// the oracle for what a sequence must produce.
//
// Sampling: temperature 0 picks hash % vocab; otherwise the hash is mixed with
// pg_uniform(seed, step) so a seed reproduces and a different seed differs. Banned ids and
// the allowed mask are honoured by stepping to the next permitted id.
#pragma once
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "engine/engine.h"

// A model config with only what the engine reads: vocab, max positions and one EOS id.
static inline struct model_config tb_model_config(int vocab, int max_pos, int eos) {
    struct model_config m;
    memset(&m, 0, sizeof m);
    m.vocab = vocab;
    m.max_pos = max_pos;
    m.eos_ids[0] = eos;
    m.n_eos = 1;
    return m;
}

// Engine defaults with 4-token blocks and the given max_model_len (most engine tests' set-up).
static inline struct engine_config tb_engine_config(int max_model_len) {
    struct engine_config c;
    engine_config_defaults(&c);
    c.block_size = 4;
    c.max_model_len = max_model_len;
    return c;
}

#define TB_MAX_QUEUE 64

struct tb_step {                   // an executed, not yet collected step
    const struct step_batch *batch;
    struct step_result *res;       // computed results (at execute, or at collect when lazy)
    int n_res, cap_res;
};

struct tb {
    int num_blocks, bs, vocab;
    int32_t *kv_tok, *kv_pos;      // [num_blocks * bs]; pos -1: never written
    int max_inflight;              // as backend_config.max_inflight (0 = 1)
    struct tb_step q[TB_MAX_QUEUE];// FIFO ring of steps in flight
    int q_head, q_n;
    struct step_result *prev;      // results of the last computed step (feeds read them)
    int n_prev, cap_prev;
    bool have_prev;
    long n_executed;
    bool lazy;                     // compute at collect, as an asynchronous device would:
                                   // the batch must still be intact then
    const int32_t *script;         // when set: output token k of every sequence is script[k]
    int n_script;
    int n_steps, max_seqs_seen, max_tokens_seen, fail_at_step;
    long n_tokens_computed;
    long n_fed;                    // sequences whose input came from a feed
    int max_depth_seen;            // most steps in flight at once
};

static uint64_t tb_ctx_hash(uint64_t h, int32_t tok) { return pg_mix64(h ^ (uint64_t)(uint32_t)tok); }

static int32_t tb_pick(uint64_t h, const struct sample_input *in, int vocab) {
    uint64_t x = h;
    if (in->params->temperature > 0) {
        float u = pg_uniform(in->params->seed, in->step, 0);
        x = pg_mix64(h ^ (uint64_t)(u * 16777216.0f));
    }
    int32_t t = (int32_t)(x % (uint64_t)vocab);
    for (int tries = 0; tries < vocab; tries++, t = (t + 1) % vocab) {
        bool ok = true;
        for (int i = 0; i < in->n_banned; i++) ok = ok && in->banned[i] != t;
        if (in->allowed && !(in->allowed[t / 32] >> (t % 32) & 1)) ok = false;
        if (ok) break;
    }
    return t;
}

// Oracle: the token a sequence with these tokens samples next.
static inline int32_t ref_next(const int32_t *toks, int n, const struct sample_input *in, int vocab) {
    uint64_t h = 0;
    for (int i = 0; i < n; i++) h = tb_ctx_hash(h, toks[i]);
    return tb_pick(h, in, vocab);
}

static int tb_run(struct tb *t, const struct step_batch *b, struct tb_step *st, char *err);

// Feed rules (backend.h): n_new 1, a placeholder input, a previous step, an index in range.
static int tb_check_feeds(const struct tb *t, const struct step_batch *b, char *err) {
    for (int s = 0; s < b->n_seqs; s++) {
        const struct step_seq *q = &b->seqs[s];
        for (int j = q->feed ? 1 : 0; j < q->n_new; j++)
            if (q->tokens[j] < 0 || q->tokens[j] >= t->vocab) {
                pg_seterr(err, "seq %d: input token %d at %d is not a vocabulary id", s,
                          q->tokens[j], q->pos0 + j);
                return -1;
            }
        if (!q->feed) continue;
        if (q->n_new != 1) {
            pg_seterr(err, "seq %d: feed with n_new %d (must be 1)", s, q->n_new);
            return -1;
        }
        if (t->n_executed == 0) {
            pg_seterr(err, "seq %d: feed without a previous step", s);
            return -1;
        }
        if (q->feed_idx < 0) {
            pg_seterr(err, "seq %d: feed_idx %d out of range", s, q->feed_idx);
            return -1;
        }
    }
    return 0;
}

static int tb_execute(void *ctx, const struct step_batch *b, char *err) {
    struct tb *t = ctx;
    int cap = t->max_inflight > 1 ? t->max_inflight : 1;
    if (cap > TB_MAX_QUEUE) cap = TB_MAX_QUEUE;
    if (t->q_n >= cap) {
        pg_seterr(err, "test backend: execute with %d steps in flight (max_inflight %d)", t->q_n,
                  cap);
        return -1;
    }
    if (tb_check_feeds(t, b, err)) return -1;
    struct tb_step *st = &t->q[(t->q_head + t->q_n) % TB_MAX_QUEUE];
    st->batch = b;
    st->n_res = 0;
    t->n_executed++;
    if (!t->lazy && tb_run(t, b, st, err)) return -1;
    t->q_n++;
    if (t->q_n > t->max_depth_seen) t->max_depth_seen = t->q_n;
    return 0;
}

static int tb_run(struct tb *t, const struct step_batch *b, struct tb_step *st, char *err) {
    if (t->fail_at_step && t->n_steps + 1 == t->fail_at_step) {
        t->n_steps++;
        pg_seterr(err, "test backend: injected failure");
        return -1;
    }
    t->n_steps++;
    if (b->n_seqs > t->max_seqs_seen) t->max_seqs_seen = b->n_seqs;
    if (b->n_tokens > t->max_tokens_seen) t->max_tokens_seen = b->n_tokens;
    st->n_res = 0;
    if (b->n_seqs > st->cap_res) {
        st->cap_res = b->n_seqs * 2;
        st->res = realloc(st->res, (size_t)st->cap_res * sizeof *st->res);
    }
    int total = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const struct step_seq *q = &b->seqs[s];
        int end = q->pos0 + q->n_new;
        total += q->n_new;
        if (q->n_new < 1 || q->n_blocks * t->bs < end || (q->n_blocks - 1) * t->bs >= end) {
            pg_seterr(err, "seq %d: %d blocks for positions [0, %d)", s, q->n_blocks, end);
            return -1;
        }
        for (int i = 0; i < q->n_blocks; i++)
            if (q->block_table[i] < 0 || q->block_table[i] >= t->num_blocks) {
                pg_seterr(err, "seq %d: block id %d out of range", s, q->block_table[i]);
                return -1;
            }
        if (q->feed && (!t->have_prev || q->feed_idx >= t->n_prev)) {
            pg_seterr(err, "seq %d: feed_idx %d out of range (previous step has %d results)", s,
                      q->feed_idx, t->have_prev ? t->n_prev : 0);
            return -1;
        }
        for (int j = 0; j < q->n_new; j++) { // write KV
            int p = q->pos0 + j;
            int slot = q->block_table[p / t->bs] * t->bs + p % t->bs;
            t->kv_tok[slot] = q->feed ? t->prev[q->feed_idx].token : q->tokens[j];
            t->kv_pos[slot] = p;
        }
        t->n_fed += q->feed;
        t->n_tokens_computed += q->n_new;
    }
    if (total != b->n_tokens) {
        pg_seterr(err, "n_tokens %d but sequences sum to %d", b->n_tokens, total);
        return -1;
    }
    for (int s = 0; s < b->n_seqs; s++) { // read the context back through the block table
        const struct step_seq *q = &b->seqs[s];
        if (!q->sample) continue;
        uint64_t h = 0;
        for (int p = 0; p < q->pos0 + q->n_new; p++) {
            int slot = q->block_table[p / t->bs] * t->bs + p % t->bs;
            if (t->kv_pos[slot] != p) {
                pg_seterr(err, "seq %d: KV slot for position %d holds position %d", s, p,
                          t->kv_pos[slot]);
                return -1;
            }
            h = tb_ctx_hash(h, t->kv_tok[slot]);
        }
        struct step_result *r = &st->res[st->n_res++];
        memset(r, 0, sizeof *r);
        r->token = tb_pick(h, &q->smp, t->vocab);
        if (t->script && q->smp.step < (uint64_t)t->n_script) r->token = t->script[q->smp.step];
        r->logprob = -0.25f * (float)(r->token % 8);
        int k = q->smp.params->logprobs;
        r->n_top = k > 0 ? k : 0;
        for (int i = 0; i < r->n_top; i++) {
            r->top_ids[i] = (r->token + i) % t->vocab;
            r->top_logprobs[i] = r->logprob - (float)i;
        }
    }
    if (st->n_res > t->cap_prev) {
        t->cap_prev = st->n_res * 2;
        t->prev = realloc(t->prev, (size_t)t->cap_prev * sizeof *t->prev);
    }
    if (st->n_res) memcpy(t->prev, st->res, (size_t)st->n_res * sizeof *st->res);
    t->n_prev = st->n_res;
    t->have_prev = true;
    return 0;
}

// The oldest step's results (FIFO); a lazy backend computes it now. The step leaves the
// queue even when it fails.
static int tb_collect(void *ctx, struct step_result *out, char *err) {
    struct tb *t = ctx;
    if (t->q_n == 0) {
        pg_seterr(err, "test backend: collect without execute");
        return -1;
    }
    struct tb_step *st = &t->q[t->q_head];
    t->q_head = (t->q_head + 1) % TB_MAX_QUEUE;
    t->q_n--;
    if (t->lazy && tb_run(t, st->batch, st, err)) return -1;
    if (st->n_res) memcpy(out, st->res, (size_t)st->n_res * sizeof *out);
    return 0;
}

static const struct backend_ops tb_ops = {
    .name = "test", .execute = tb_execute, .collect = tb_collect};

static struct tb *tb_new(int num_blocks, int bs, int vocab) {
    struct tb *t = calloc(1, sizeof *t);
    t->num_blocks = num_blocks;
    t->bs = bs;
    t->vocab = vocab;
    t->kv_tok = malloc((size_t)num_blocks * bs * sizeof *t->kv_tok);
    t->kv_pos = malloc((size_t)num_blocks * bs * sizeof *t->kv_pos);
    for (int i = 0; i < num_blocks * bs; i++) t->kv_pos[i] = -1;
    return t;
}

static void tb_free(struct tb *t) {
    free(t->kv_tok);
    free(t->kv_pos);
    for (int i = 0; i < TB_MAX_QUEUE; i++) free(t->q[i].res);
    free(t->prev);
    free(t);
}
