// The CPU backend: the reference forward pass over a step_batch with a paged KV cache.
// execute computes synchronously (forward + sampling); collect hands the results back, oldest
// first (a ring of max_inflight result sets); a fed token is read from the previous step's
// results.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"

struct cpu_layer {
    float *attn_norm, *ffn_norm; // [hidden] f32 (owned)
    struct cpu_linear q, k, v, o, gate, up, down;
    struct cpu_kv_layer kv;
};

struct cpu_ctx {
    const struct model_weights *w;
    struct model_config c;
    struct cpu_pool *pool;
    struct cpu_layer *layers;
    float *final_norm;
    struct cpu_linear lm_head;
    void *kv_mem;
    int num_blocks, block_size;
    // activations, grown on demand to cap tokens
    int cap;
    float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up;
    int32_t *pos;
    float *logits;   // (rows, vocab)
    int cap_rows;
    void *smp_scratch;
    struct cpu_slot {         // results of one executed, not yet collected step
        struct step_result *res;
        int n, cap;
    } *ring;
    int n_ring, ring_head, ring_n;
    int last;                 // slot of the last executed step, -1: none (feeds read it)
};

static float *vec_f32(const struct tensor *t, size_t n) {
    float *p = pg_malloc(n * sizeof *p);
    pg_to_f32(t->dtype, t->data, p, n);
    return p;
}

static void cpu_free(void *vctx) {
    struct cpu_ctx *c = vctx;
    if (!c) return;
    for (int i = 0; c->layers && i < c->c.n_layers; i++) {
        struct cpu_layer *L = &c->layers[i];
        free(L->attn_norm);
        free(L->ffn_norm);
        struct cpu_linear *ls[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (int k = 0; k < 7; k++) cpu_linear_free(ls[k]);
    }
    free(c->layers);
    free(c->final_norm);
    cpu_linear_free(&c->lm_head);
    free(c->kv_mem);
    float *bufs[] = {c->x, c->xn, c->q, c->k, c->v, c->att, c->tmp, c->gate, c->up, c->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c->pos);
    free(c->smp_scratch);
    for (int i = 0; c->ring && i < c->n_ring; i++) free(c->ring[i].res);
    free(c->ring);
    cpu_pool_free(c->pool);
    free(c);
}

static void init_linear_task(void *arg, int task) {
    struct cpu_ctx *c = arg;
    const struct layer_weights *lw = &c->w->layers[task / 7];
    struct cpu_layer *L = &c->layers[task / 7];
    struct cpu_linear *dst[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    const struct linear *src[] = {&lw->q, &lw->k, &lw->v, &lw->o, &lw->gate, &lw->up, &lw->down};
    cpu_linear_init(dst[task % 7], src[task % 7]);
}

static int cpu_init(void **out, const struct model_weights *w, const struct backend_config *bc,
                    int *num_blocks, char *err) {
    const struct model_config *mc = &w->cfg;
    if (mc->head_dim > 1024) {
        pg_seterr(err, "cpu backend: head_dim %d is not supported (at most 1024)", mc->head_dim);
        return -1;
    }
    enum pg_dtype kvt = bc->kv_dtype == PG_BF16 ? PG_BF16 : PG_F32;
    if (bc->kv_dtype != PG_F32 && bc->kv_dtype != PG_BF16 && bc->kv_dtype != PG_F16) {
        pg_seterr(err, "cpu backend: kv cache dtype %s is not supported (float32 or bfloat16)",
                  pg_dtype_name(bc->kv_dtype));
        return -1;
    }
    struct cpu_ctx *c = pg_calloc(1, sizeof *c);
    c->w = w;
    c->c = *mc;
    c->block_size = bc->block_size > 0 ? bc->block_size : 16;
    size_t row = (size_t)mc->n_kv_heads * mc->head_dim * pg_dtype_size(kvt);
    size_t per_block = 2 * (size_t)mc->n_layers * c->block_size * row;
    if (bc->num_blocks > 0) {
        c->num_blocks = bc->num_blocks;
    } else {
        size_t bytes = bc->kv_cache_bytes ? bc->kv_cache_bytes : (size_t)4 << 30;
        size_t nb = bytes / per_block;
        c->num_blocks = nb > (size_t)1 << 30 ? 1 << 30 : (int)nb;
    }
    if (c->num_blocks < 1) {
        pg_seterr(err, "cpu backend: KV cache budget holds no block (one block needs %zu bytes)", per_block);
        free(c);
        return -1;
    }
    c->kv_mem = calloc((size_t)c->num_blocks, per_block); // lazily zero-mapped
    if (!c->kv_mem) {
        pg_seterr(err, "cpu backend: cannot allocate %zu bytes of KV cache", (size_t)c->num_blocks * per_block);
        free(c);
        return -1;
    }
    c->pool = cpu_pool_new(bc->n_threads);
    openblas_set_num_threads(cpu_pool_size(c->pool));
    c->layers = pg_calloc((size_t)mc->n_layers, sizeof *c->layers);
    size_t layer_bytes = (size_t)c->num_blocks * c->block_size * row;
    for (int i = 0; i < mc->n_layers; i++) {
        const struct layer_weights *lw = &w->layers[i];
        struct cpu_layer *L = &c->layers[i];
        L->attn_norm = vec_f32(&lw->attn_norm, (size_t)mc->hidden);
        L->ffn_norm = vec_f32(&lw->ffn_norm, (size_t)mc->hidden);
        char *base = (char *)c->kv_mem + 2 * (size_t)i * layer_bytes;
        L->kv = (struct cpu_kv_layer){base, base + layer_bytes, kvt, c->block_size, mc->n_kv_heads, mc->head_dim};
    }
    cpu_pool_run(c->pool, mc->n_layers * 7, init_linear_task, c); // GPTQ repacking in parallel
    c->final_norm = vec_f32(&w->final_norm, (size_t)mc->hidden);
    cpu_linear_init(&c->lm_head, &w->lm_head);
    c->smp_scratch = pg_malloc(sampler_scratch_size(mc->vocab));
    c->n_ring = bc->max_inflight > 1 ? bc->max_inflight : 1;
    c->ring = pg_calloc((size_t)c->n_ring, sizeof *c->ring);
    c->last = -1;
    *num_blocks = c->num_blocks;
    *out = c;
    return 0;
}

static void grow(struct cpu_ctx *c, int n_tokens, int n_rows) {
    const struct model_config *m = &c->c;
    if (n_tokens > c->cap) {
        c->cap = n_tokens;
        size_t n = (size_t)n_tokens, qd = (size_t)m->n_heads * m->head_dim, kvd = (size_t)m->n_kv_heads * m->head_dim;
        c->x = pg_realloc(c->x, n * m->hidden * sizeof(float));
        c->xn = pg_realloc(c->xn, n * m->hidden * sizeof(float));
        c->tmp = pg_realloc(c->tmp, n * m->hidden * sizeof(float));
        c->q = pg_realloc(c->q, n * qd * sizeof(float));
        c->att = pg_realloc(c->att, n * qd * sizeof(float));
        c->k = pg_realloc(c->k, n * kvd * sizeof(float));
        c->v = pg_realloc(c->v, n * kvd * sizeof(float));
        c->gate = pg_realloc(c->gate, n * m->intermediate * sizeof(float));
        c->up = pg_realloc(c->up, n * m->intermediate * sizeof(float));
        c->pos = pg_realloc(c->pos, n * sizeof(int32_t));
    }
    if (n_rows > c->cap_rows) {
        c->cap_rows = n_rows;
        c->logits = pg_realloc(c->logits, (size_t)n_rows * m->vocab * sizeof(float));
    }
}

static int check_batch(const struct cpu_ctx *c, const struct step_batch *b, char *err) {
    int total = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const struct step_seq *q = &b->seqs[s];
        if (q->n_new < 1 || q->pos0 < 0 || !q->tokens) {
            pg_seterr(err, "cpu backend: sequence %d: n_new %d, pos0 %d invalid", s, q->n_new, q->pos0);
            return -1;
        }
        if (q->feed && q->n_new != 1) {
            pg_seterr(err, "cpu backend: sequence %d: feed with n_new %d (must be 1)", s, q->n_new);
            return -1;
        }
        if (q->feed && (c->last < 0 || q->feed_idx < 0 || q->feed_idx >= c->ring[c->last].n)) {
            pg_seterr(err, "cpu backend: sequence %d: feed_idx %d but the previous step %s", s,
                      q->feed_idx, c->last < 0 ? "does not exist" : "has fewer results");
            return -1;
        }
        for (int t = q->feed ? 1 : 0; t < q->n_new; t++)
            if (q->tokens[t] < 0 || q->tokens[t] >= c->c.vocab) {
                pg_seterr(err, "cpu backend: sequence %d: token id %d outside the vocabulary [0, %d)", s,
                          q->tokens[t], c->c.vocab);
                return -1;
            }
        long need = ((long)q->pos0 + q->n_new + c->block_size - 1) / c->block_size;
        if (q->n_blocks < need || !q->block_table) {
            pg_seterr(err, "cpu backend: sequence %d: %d blocks cover fewer than %d positions", s,
                      q->n_blocks, q->pos0 + q->n_new);
            return -1;
        }
        for (long i = 0; i < need; i++)
            if (q->block_table[i] < 0 || q->block_table[i] >= c->num_blocks) {
                pg_seterr(err, "cpu backend: sequence %d: block id %d outside [0, %d)", s,
                          q->block_table[i], c->num_blocks);
                return -1;
            }
        total += q->n_new;
    }
    if (total != b->n_tokens) {
        pg_seterr(err, "cpu backend: n_tokens %d != sum of n_new %d", b->n_tokens, total);
        return -1;
    }
    return 0;
}

static void add_into(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void layer_forward(struct cpu_ctx *c, int li, const struct step_batch *b) {
    const struct model_config *m = &c->c;
    struct cpu_layer *L = &c->layers[li];
    int T = b->n_tokens, qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
    cpu_rmsnorm(c->xn, c->x, L->attn_norm, T, m->hidden, m->rms_eps);
    cpu_linear_forward(c->pool, &L->q, c->xn, T, c->q);
    cpu_linear_forward(c->pool, &L->k, c->xn, T, c->k);
    cpu_linear_forward(c->pool, &L->v, c->xn, T, c->v);
    cpu_rope(c->q, T, m->n_heads, m->head_dim, c->pos, m->rope_theta);
    cpu_rope(c->k, T, m->n_kv_heads, m->head_dim, c->pos, m->rope_theta);
    int off = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const struct step_seq *q = &b->seqs[s];
        cpu_kv_write(&L->kv, q->block_table, q->pos0, q->n_new, c->k + (size_t)off * kvd, c->v + (size_t)off * kvd);
        cpu_attention(c->pool, &L->kv, q->block_table, q->pos0, q->n_new, m->n_heads,
                      c->q + (size_t)off * qd, c->att + (size_t)off * qd);
        off += q->n_new;
    }
    cpu_linear_forward(c->pool, &L->o, c->att, T, c->tmp);
    add_into(c->x, c->tmp, (size_t)T * m->hidden);
    cpu_rmsnorm(c->xn, c->x, L->ffn_norm, T, m->hidden, m->rms_eps);
    cpu_linear_forward(c->pool, &L->gate, c->xn, T, c->gate);
    cpu_linear_forward(c->pool, &L->up, c->xn, T, c->up);
    cpu_silu_mul(c->gate, c->up, (size_t)T * m->intermediate);
    cpu_linear_forward(c->pool, &L->down, c->gate, T, c->tmp);
    add_into(c->x, c->tmp, (size_t)T * m->hidden);
}

enum rows_mode { ROWS_ALL_POSITIONS, ROWS_LAST, ROWS_LAST_SAMPLING };

// Runs the batch and writes logits into c->logits for: every token (ROWS_ALL_POSITIONS), the
// last token of every sequence (ROWS_LAST), or the last token of each sampling sequence
// only (ROWS_LAST_SAMPLING: prefill chunks that do not sample skip the lm_head). Returns
// the number of rows.
static int forward(struct cpu_ctx *c, const struct step_batch *b, enum rows_mode mode, char *err) {
    if (check_batch(c, b, err)) return -1;
    const struct model_config *m = &c->c;
    int T = b->n_tokens;
    grow(c, T, mode == ROWS_ALL_POSITIONS ? T : b->n_seqs);
    int t = 0;
    for (int s = 0; s < b->n_seqs; s++)
        for (int i = 0; i < b->seqs[s].n_new; i++, t++) {
            c->pos[t] = b->seqs[s].pos0 + i;
            int32_t tok = b->seqs[s].feed ? c->ring[c->last].res[b->seqs[s].feed_idx].token
                                           : b->seqs[s].tokens[i];
            cpu_embed_row(&c->w->embed, tok, m->hidden, c->x + (size_t)t * m->hidden);
        }
    for (int l = 0; l < m->n_layers; l++) layer_forward(c, l, b);
    int rows = T;
    if (mode != ROWS_ALL_POSITIONS) { // gather the wanted last rows to the front
        int off = 0;
        rows = 0;
        for (int s = 0; s < b->n_seqs; s++) {
            off += b->seqs[s].n_new;
            if (mode == ROWS_LAST_SAMPLING && !b->seqs[s].sample) continue;
            memmove(c->x + (size_t)rows++ * m->hidden, c->x + (size_t)(off - 1) * m->hidden,
                    (size_t)m->hidden * sizeof(float));
        }
    }
    if (rows == 0) return 0;
    cpu_rmsnorm(c->xn, c->x, c->final_norm, rows, m->hidden, m->rms_eps);
    cpu_linear_forward(c->pool, &c->lm_head, c->xn, rows, c->logits);
    return rows;
}

static int cpu_logits(void *vctx, const struct step_batch *b, bool all_positions, float *out, char *err) {
    struct cpu_ctx *c = vctx;
    int rows = forward(c, b, all_positions ? ROWS_ALL_POSITIONS : ROWS_LAST, err);
    if (rows < 0) return -1;
    memcpy(out, c->logits, (size_t)rows * c->c.vocab * sizeof(float));
    return 0;
}

static int cpu_execute(void *vctx, const struct step_batch *b, char *err) {
    struct cpu_ctx *c = vctx;
    if (c->ring_n == c->n_ring) {
        pg_seterr(err, "cpu backend: execute with %d steps uncollected (max_inflight %d)",
                  c->ring_n, c->n_ring);
        return -1;
    }
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seqs[s].sample && !b->seqs[s].smp.params) {
            pg_seterr(err, "cpu backend: sequence %d: sample without sampling parameters", s);
            return -1;
        }
    int si = (c->ring_head + c->ring_n) % c->n_ring;
    struct cpu_slot *slot = &c->ring[si];
    // forward reads fed tokens from the previous slot, which is never this one: with one slot
    // the previous step has been collected, and its results stay in the slot until now
    if (forward(c, b, ROWS_LAST_SAMPLING, err) < 0) {
        c->last = -1; // a failed step has no results to feed from
        return -1;
    }
    if (b->n_seqs > slot->cap) {
        slot->cap = b->n_seqs;
        slot->res = pg_realloc(slot->res, (size_t)b->n_seqs * sizeof *slot->res);
    }
    slot->n = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        if (!b->seqs[s].sample) continue;
        struct sample_output so;
        sampler_sample(c->logits + (size_t)slot->n * c->c.vocab, c->c.vocab, &b->seqs[s].smp, c->smp_scratch, &so);
        struct step_result *r = &slot->res[slot->n++];
        r->token = so.token;
        r->logprob = so.logprob;
        r->n_top = so.n_top;
        memcpy(r->top_ids, so.top_ids, sizeof r->top_ids);
        memcpy(r->top_logprobs, so.top_logprobs, sizeof r->top_logprobs);
    }
    c->last = si;
    c->ring_n++;
    return 0;
}

// The oldest uncollected step's results.
static int cpu_collect(void *vctx, struct step_result *out, char *err) {
    struct cpu_ctx *c = vctx;
    if (c->ring_n == 0) {
        pg_seterr(err, "cpu backend: collect without execute");
        return -1;
    }
    const struct cpu_slot *slot = &c->ring[c->ring_head];
    c->ring_head = (c->ring_head + 1) % c->n_ring;
    c->ring_n--;
    if (slot->n) memcpy(out, slot->res, (size_t)slot->n * sizeof *out);
    return 0;
}

const struct backend_ops backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .execute = cpu_execute,
    .collect = cpu_collect,
    .logits = cpu_logits,
    .free = cpu_free,
};
