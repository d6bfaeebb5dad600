// The engine: request intake (thread-safe), the schedule / execute / update step, and the
// loop thread. See engine.h for the contract and docs/engine.md for the design.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_impl.h"
#include "grammar/grammar.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"


void engine_config_defaults(struct engine_config *c) {
    memset(c, 0, sizeof *c);
    c->block_size = 16;
    c->max_num_seqs = 256;
    c->max_num_batched_tokens = 2048;
    c->max_model_len = 0; // the model's max_position_embeddings
    c->enable_prefix_caching = true;
    c->enable_chunked_prefill = true;
    c->num_scheduler_steps = 1;
    c->policy = SCHED_FCFS;
}

int engine_pipeline_depth(const struct engine_config *c) {
    int d = c->async_scheduling ? 2 : 1;
    return c->num_scheduler_steps > d ? c->num_scheduler_steps : d;
}

const char *finish_reason_name(enum finish_reason r) {
    switch (r) {
    case FINISH_STOP: return "stop";
    case FINISH_LENGTH: return "length";
    case FINISH_ABORT: return "abort";
    case FINISH_ERROR: return "error";
    default: return NULL;
    }
}

static int check_config(struct engine_config *c, const struct model_config *m, int num_blocks,
                        char *err) {
    if (c->max_model_len <= 0) c->max_model_len = m->max_pos;
    if (c->block_size <= 0 || c->max_num_seqs <= 0 || c->max_num_batched_tokens <= 0 ||
        c->max_model_len <= 0 || num_blocks <= 0) {
        pg_seterr(err, "engine: block_size (%d), max_num_seqs (%d), max_num_batched_tokens (%d), "
                       "max_model_len (%d) and the KV block count (%d) must be positive",
                  c->block_size, c->max_num_seqs, c->max_num_batched_tokens, c->max_model_len,
                  num_blocks);
        return -1;
    }
    if (m->max_pos > 0 && c->max_model_len > m->max_pos) {
        pg_seterr(err, "--max-model-len %d exceeds the model's max_position_embeddings %d",
                  c->max_model_len, m->max_pos);
        return -1;
    }
    if (!c->enable_chunked_prefill && c->max_num_batched_tokens < c->max_model_len) {
        pg_seterr(err, "--max-num-batched-tokens (%d) must be >= --max-model-len (%d) without "
                       "chunked prefill", c->max_num_batched_tokens, c->max_model_len);
        return -1;
    }
    if ((int64_t)num_blocks * c->block_size < c->max_model_len) {
        pg_seterr(err, "the KV cache holds %lld tokens (%d blocks of %d), fewer than "
                       "--max-model-len %d: lower --max-model-len or give the KV cache more memory",
                  (long long)num_blocks * c->block_size, num_blocks, c->block_size,
                  c->max_model_len);
        return -1;
    }
    if (c->num_scheduler_steps < 1) c->num_scheduler_steps = 1;
    return 0;
}

struct engine *engine_create(const struct engine_config *cfg, const struct model_config *mcfg,
                             const struct backend_ops *be, void *be_ctx, int num_blocks,
                             const struct tokenizer *tok, char *err) {
    struct engine_config c = *cfg;
    if (check_config(&c, mcfg, num_blocks, err)) return NULL;
    if (mcfg->vocab <= 0) {
        pg_seterr(err, "engine: model vocab size %d", mcfg->vocab);
        return NULL;
    }
    struct engine *e = pg_calloc(1, sizeof *e);
    e->cfg = c;
    e->mcfg = mcfg;
    e->be = be;
    e->be_ctx = be_ctx;
    e->tok = tok;
    e->vocab = mcfg->vocab;
    e->num_blocks = num_blocks;
    e->pool = kv_pool_new(num_blocks, c.block_size, c.enable_prefix_caching);
    struct sched_config sc = {
        .max_num_seqs = c.max_num_seqs, .max_num_batched_tokens = c.max_num_batched_tokens,
        .max_model_len = c.max_model_len, .chunked_prefill = c.enable_chunked_prefill,
        .priority_policy = c.policy == SCHED_PRIORITY, .prefix_caching = c.enable_prefix_caching,
        .stable_arrays = engine_pipeline_depth(&c) >= 2};
    e->sched = sched_new(&sc, e->pool);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->next_id = 1;
    e->stats.num_blocks = e->stats.num_free_blocks = num_blocks;
    e->depth = engine_pipeline_depth(&c);
    e->fl = pg_calloc((size_t)e->depth, sizeof *e->fl);
    return e;
}

void engine_free(struct engine *e) {
    if (!e) return;
    if (e->has_thread) engine_stop(e, 0);
    char err[PG_ERR_LEN];
    for (; e->n_fl > 0; e->n_fl--) e->be->collect(e->be_ctx, e->results, err);
    for (int i = 0; i < e->depth; i++) {
        free(e->fl[i].plan.items);
        free(e->fl[i].bseqs);
    }
    free(e->fl);
    free(e->emitq);
    free(e->next.items);
    for (struct ereq *q = e->active, *n; q; q = n) {
        n = q->next;
        ereq_free(q);
    }
    for (struct ereq *q = e->in_head, *n; q; q = n) {
        n = q->next;
        ereq_free(q);
    }
    sched_free(e->sched);
    kv_pool_free(e->pool);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e->aborts);
    free(e->results);
    free(e);
}

int engine_add(struct engine *e, const struct gen_request *r, uint64_t *req_id, char *err) {
    if (ereq_validate(e, r, err)) return ENGINE_EINVAL;
    pthread_mutex_lock(&e->mu);
    int rc = ENGINE_OK;
    if (e->closed) {
        pg_seterr(err, "the engine is shutting down");
        rc = ENGINE_ECLOSED;
    } else if (e->cfg.max_waiting > 0 && e->stats.num_waiting + e->n_incoming >= e->cfg.max_waiting) {
        pg_seterr(err, "too many requests waiting (%d)", e->cfg.max_waiting);
        rc = ENGINE_EBUSY;
    }
    uint64_t id = e->next_id++;
    pthread_mutex_unlock(&e->mu);
    if (rc) return rc;
    struct ereq *q = ereq_new(e, r, id); // outside the lock: copies, detok/matcher creation
    pthread_mutex_lock(&e->mu);
    if (e->in_tail) e->in_tail->next = q;
    else e->in_head = q;
    e->in_tail = q;
    e->n_incoming++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (req_id) *req_id = id;
    return ENGINE_OK;
}

void engine_abort(struct engine *e, uint64_t req_id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_aborts == e->cap_aborts) {
        e->cap_aborts = e->cap_aborts ? e->cap_aborts * 2 : 16;
        e->aborts = pg_realloc(e->aborts, (size_t)e->cap_aborts * sizeof *e->aborts);
    }
    e->aborts[e->n_aborts++] = req_id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void finish_req(struct engine *e, struct ereq *q, enum finish_reason why) {
    for (int i = 0; i < q->r.n; i++) eseq_finish_now(e, &q->seqs[i], why);
}

// Frees finished requests.
static void reap(struct engine *e) {
    for (struct ereq **pp = &e->active; *pp;) {
        struct ereq *q = *pp;
        bool pinned = false; // a batch in flight still points into it
        for (int i = 0; i < q->r.n; i++) pinned = pinned || q->seqs[i].s.n_inflight || q->seqs[i].pend;
        if (q->n_unfinished == 0 && !pinned) {
            *pp = q->next;
            ereq_free(q);
            e->n_active--;
        } else {
            pp = &q->next;
        }
    }
}

// Moves new requests into the scheduler and applies aborts (on the engine thread).
static void intake(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    struct ereq *in = e->in_head;
    e->in_head = e->in_tail = NULL;
    e->n_incoming = 0;
    int n_ab = e->n_aborts;
    uint64_t *ab = NULL;
    if (n_ab) {
        ab = pg_malloc((size_t)n_ab * sizeof *ab);
        memcpy(ab, e->aborts, (size_t)n_ab * sizeof *ab);
        e->n_aborts = 0;
    }
    bool all = e->abort_all || (e->closed && pg_now() >= e->deadline);
    e->abort_all = false;
    pthread_mutex_unlock(&e->mu);
    struct ereq **tail = &e->active;
    while (*tail) tail = &(*tail)->next;
    for (struct ereq *q = in, *n; q; q = n) {
        n = q->next;
        q->next = NULL;
        *tail = q;
        tail = &q->next;
        e->n_active++;
        e->prompt_tokens += (uint64_t)q->r.n_prompt;
        for (int i = 0; i < q->r.n; i++) sched_add(e->sched, &q->seqs[i].s);
    }
    for (struct ereq *q = e->active; q; q = q->next) {
        bool hit = all;
        for (int i = 0; i < n_ab && !hit; i++) hit = ab[i] == q->id;
        if (hit) finish_req(e, q, FINISH_ABORT);
    }
    free(ab);
    reap(e);
}

// Copies a plan's items into an engine-owned array (the scheduler's is overwritten by the
// next sched_schedule, which pipelining calls while earlier plans are in flight).
static void keep_plan(struct step_plan *dst, const struct sched_plan *p) {
    if (p->n_items > dst->cap) {
        dst->cap = p->n_items * 2;
        dst->items = pg_realloc(dst->items, (size_t)dst->cap * sizeof *dst->items);
    }
    if (p->n_items) memcpy(dst->items, p->items, (size_t)p->n_items * sizeof *p->items);
    dst->n = p->n_items;
}

static struct inflight *fl_at(struct engine *e, int k) {
    return &e->fl[(e->fl_head + k) % e->depth];
}

// A sampling item whose output index is past max_tokens / max_model_len (counting the
// placeholders in flight): an earlier token in flight ends the sequence, so build_batch
// leaves it out.
static bool beyond_limits(const struct engine *e, const struct sched_item *it) {
    const struct sched_seq *q = it->seq;
    const struct eseq *s = q->owner;
    return it->sample && (q->n_tokens - q->n_prompt >= s->req->max_tokens ||
                          q->n_tokens >= e->cfg.max_model_len);
}

// Whether a plan can be launched before the steps in flight are collected: every item of a
// sequence with unresolved tokens computes exactly its last placeholder, produced by the
// most recently launched step (the backend feeds it on the device), and its sampling needs
// no host knowledge of the unknown tokens (no grammar mask, no penalties).
static bool feedable(const struct engine *e, const struct step_plan *p) {
    for (int i = 0; i < p->n; i++) {
        const struct sched_item *it = &p->items[i];
        const struct eseq *s = it->seq->owner;
        if (s->finished || s->s.n_unresolved == 0 || beyond_limits(e, it)) continue;
        if (it->n_new != 1 || it->pos0 != it->seq->n_tokens - 1 || s->ph_step != e->n_launched)
            return false;
        if (s->gm || sampling_penalized(&s->sp)) return false;
    }
    return true;
}

// Builds the backend batch of slot f from a plan, leaving out sequences that finished since
// it was scheduled and sampling items that could only produce tokens past the length limits
// (also from the plan: afterwards plan item i is batch sequence i). Returns the number of
// sequences in it.
static int build_batch(struct engine *e, struct step_plan *plan, struct inflight *f) {
    if (plan->n > f->cap_bseqs) {
        f->cap_bseqs = plan->n * 2;
        f->bseqs = pg_realloc(f->bseqs, (size_t)f->cap_bseqs * sizeof *f->bseqs);
    }
    if (plan->n > e->cap_results) {
        e->cap_results = plan->n * 2;
        e->results = pg_realloc(e->results, (size_t)e->cap_results * sizeof *e->results);
    }
    double now = pg_now();
    int n = 0, n_tokens = 0;
    for (int i = 0; i < plan->n; i++) {
        const struct sched_item *it = &plan->items[i];
        struct sched_seq *q = it->seq;
        struct eseq *s = q->owner;
        if (s->finished) continue;
        struct ereq *r = s->req;
        int n_out = q->n_tokens - q->n_prompt; // index of the output sampled (counts placeholders)
        if (beyond_limits(e, it)) continue; // it would only compute a dropped token
        if (!r->t_scheduled) r->t_scheduled = now;
        bool ban = n_out < r->r.min_tokens && r->n_banned > 0;
        if (it->sample && s->gm) grammar_fill_mask(s->gm, s->mask);
        bool feed = s->s.n_unresolved > 0; // feedable() checked it is the last placeholder
        s->s.n_inflight++;
        n_tokens += it->n_new;
        plan->items[n] = *it;
        f->bseqs[n++] = (struct step_seq){
            .n_new = it->n_new, .tokens = q->tokens + it->pos0, .pos0 = it->pos0,
            .block_table = q->blocks, .n_blocks = (it->pos0 + it->n_new + e->cfg.block_size - 1) /
                                                  e->cfg.block_size,
            .sample = it->sample,
            .smp = {.params = &s->sp, .step = (uint64_t)n_out, .prompt = q->tokens,
                    .n_prompt = q->n_prompt, .output = q->tokens + q->n_prompt, .n_output = n_out,
                    .allowed = s->gm ? s->mask : NULL, .banned = ban ? r->banned : NULL,
                    .n_banned = ban ? r->n_banned : 0},
            .feed = feed, .feed_idx = feed ? s->ph_idx : 0};
        e->fed_seqs += feed;
    }
    plan->n = n;
    f->batch = (struct step_batch){.n_seqs = n, .seqs = f->bseqs, .n_tokens = n_tokens};
    return n;
}

static void drop_ph(struct eseq *s) {
    if (s->s.n_unresolved > 0) s->s.n_unresolved--;
}

static void fail_all(struct engine *e, const char *msg) {
    pg_error("engine: backend step failed: %s", msg);
    char err[PG_ERR_LEN];
    while (e->n_fl > 0) { // the backend's other steps in flight: drain, results dropped
        e->be->collect(e->be_ctx, e->results, err);
        e->fl_head = (e->fl_head + 1) % e->depth;
        e->n_fl--;
    }
    for (struct ereq *q = e->active; q; q = q->next)
        for (int i = 0; i < q->r.n; i++) {
            struct eseq *s = &q->seqs[i];
            bool unresolved = s->s.n_unresolved > 0; // a preempted one could never be recomputed
            s->s.n_inflight = 0;
            s->s.n_unresolved = 0;
            if (s->s.status == SEQ_RUNNING || (unresolved && !s->finished))
                eseq_finish_now(e, s, FINISH_ERROR);
        }
    // blocks registered for the failed step may hold garbage: forget every cached block
    kv_pool_reset_cache(e->pool);
}

static void publish_stats(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    struct engine_stats *s = &e->stats;
    s->num_running = sched_num_running(e->sched);
    s->num_waiting = sched_num_waiting(e->sched);
    s->num_blocks = e->num_blocks;
    s->num_free_blocks = kv_pool_num_free(e->pool);
    s->kv_usage = 1.0 - (double)s->num_free_blocks / e->num_blocks;
    s->prefix_queries = kv_pool_queries(e->pool);
    s->prefix_hits = kv_pool_hits(e->pool);
    s->prompt_tokens = e->prompt_tokens;
    s->generation_tokens = e->generation_tokens;
    s->num_preemptions = sched_num_preemptions(e->sched);
    memcpy(s->finished, e->finished, sizeof s->finished);
    s->fed_seqs = e->fed_seqs;
    s->steps_ahead = e->steps_ahead;
    e->n_active_shared = e->n_active + e->n_fl;
    pthread_mutex_unlock(&e->mu);
}

// After execute: the plan's tokens count as computed (their KV is being written, in stream
// order before any later step), and when pipelining each sampling sequence gets a
// placeholder for the token being sampled, so the next schedule can already include it.
static void launched(struct engine *e, const struct inflight *f) {
    struct sched_plan sp = {.items = f->plan.items, .n_items = f->plan.n};
    sched_update(e->sched, &sp);
    if (e->depth < 2) return;
    int k = 0;
    for (int i = 0; i < f->plan.n; i++) {
        struct eseq *s = f->plan.items[i].seq->owner;
        if (!f->plan.items[i].sample) continue;
        int idx = k++;
        if (s->finished) continue;
        sched_seq_append(&s->s, -1);
        s->s.n_unresolved++;
        s->ph_step = f->id;
        s->ph_idx = idx;
    }
}

// Collects the oldest step in flight and accepts its tokens (phase 1; the sequences go to
// the emit queue). Returns 0 or -1.
static int collect_oldest(struct engine *e) {
    char err[PG_ERR_LEN] = "";
    struct inflight *f = fl_at(e, 0);
    e->fl_head = (e->fl_head + 1) % e->depth;
    e->n_fl--;
    if (e->be->collect(e->be_ctx, e->results, err)) {
        fail_all(e, err);
        return -1;
    }
    const struct step_plan *p = &f->plan;
    int k = 0;
    for (int i = 0; i < p->n; i++) {
        struct eseq *s = p->items[i].seq->owner;
        s->s.n_inflight--;
        if (!p->items[i].sample) continue;
        const struct step_result *res = &e->results[k++];
        if (s->finished) { // aborted or stopped meanwhile: the token is dropped
            drop_ph(s);
            continue;
        }
        if (res->token < 0 || res->token >= e->vocab) {
            pg_error("engine: backend returned token %d outside the vocabulary", res->token);
            drop_ph(s);
            eseq_finish_now(e, s, FINISH_ERROR);
            continue;
        }
        eseq_accept(e, s, res);
        if (e->n_emitq == e->cap_emitq) {
            e->cap_emitq = e->cap_emitq ? e->cap_emitq * 2 : 64;
            e->emitq = pg_realloc(e->emitq, (size_t)e->cap_emitq * sizeof *e->emitq);
        }
        e->emitq[e->n_emitq++] = s;
    }
    return 0;
}

// Phase 2 for everything accepted so far (detokenize, stream).
static void emit_all(struct engine *e) {
    for (int i = 0; i < e->n_emitq; i++) eseq_emit(e, e->emitq[i]);
    e->n_emitq = 0;
}

// Starts the step in e->next (already scheduled). Returns 1 if launched, 0 if empty, -1.
static int launch(struct engine *e) {
    struct inflight *f = fl_at(e, e->n_fl); // free: n_fl < depth
    if (build_batch(e, &e->next, f) == 0) return 0;
    char err[PG_ERR_LEN] = "";
    if (e->be->execute(e->be_ctx, &f->batch, err)) {
        fail_all(e, err);
        return -1;
    }
    if (e->n_fl > 0) e->steps_ahead++;
    e->n_fl++;
    f->id = ++e->n_launched;
    struct step_plan t = f->plan; // the slot keeps the plan until collected
    f->plan = e->next;
    e->next = t;
    launched(e, f);
    return 1;
}

// One round, synchronous: schedule, execute, collect, accept, emit.
static int round_sync(struct engine *e) {
    struct sched_plan plan;
    sched_schedule(e->sched, &plan);
    keep_plan(&e->next, &plan);
    int r = launch(e);
    if (r <= 0) return r;
    if (collect_oldest(e)) return -1;
    emit_all(e);
    return 1;
}

// One round, pipelined (depth >= 2): schedule step n+1 while up to depth steps run (each
// sampling sequence of a step in flight holds a placeholder token). If the plan is feedable
// it is launched at once, its unknown inputs fed on the device, and the oldest step is
// collected only when the pipeline is full (or nothing was launched). Otherwise every step
// in flight is collected first (the batch is then built from resolved tokens). Detokenizing
// and streaming come after the launch, overlapping the device.
static int round_pipe(struct engine *e) {
    struct sched_plan plan;
    sched_schedule(e->sched, &plan);
    keep_plan(&e->next, &plan);
    if (e->n_fl == 0) return launch(e);
    int r;
    if (e->n_fl < e->depth && feedable(e, &e->next)) {
        r = launch(e);
        if (r < 0) return -1;
        if ((e->n_fl == e->depth || r == 0) && collect_oldest(e)) return -1;
    } else {
        while (e->n_fl > 0)
            if (collect_oldest(e)) return -1;
        r = launch(e);
    }
    emit_all(e);
    if (r > 0 && e->n_fl > 1)
        pg_debug("engine: step %llu launched with %d in flight (%llu fed so far)",
                 (unsigned long long)e->n_launched, e->n_fl - 1,
                 (unsigned long long)e->fed_seqs);
    return r < 0 ? -1 : 1;
}

int engine_step(struct engine *e) {
    intake(e);
    int rc = 0;
    for (int i = 0; i < e->cfg.num_scheduler_steps; i++) {
        int n = e->depth >= 2 ? round_pipe(e) : round_sync(e);
        if (n < 0) rc = -1;
        if (n <= 0 && e->n_fl == 0) break;
    }
    emit_all(e); // before reap: the queue points into requests
    reap(e);
    publish_stats(e);
    return rc < 0 ? -1 : e->n_active;
}

bool engine_has_work(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    bool w = e->n_incoming > 0 || e->n_aborts > 0 || e->n_active_shared > 0;
    pthread_mutex_unlock(&e->mu);
    return w;
}

static void *loop_main(void *arg) {
    struct engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        bool work = e->n_incoming > 0 || e->n_aborts > 0 || e->n_active_shared > 0;
        if (e->stop_now || (e->closed && !work)) break;
        if (!work) {
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        int before = e->n_active;
        engine_step(e);
        // Nothing could be scheduled (cannot happen with a validated request mix, but never
        // spin): wait for a change or 10 ms.
        bool stalled = e->n_active > 0 && before == e->n_active && sched_num_running(e->sched) == 0;
        pthread_mutex_lock(&e->mu);
        if (stalled && !e->n_incoming && !e->n_aborts) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

int engine_start(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    if (e->has_thread) {
        pthread_mutex_unlock(&e->mu);
        return -1;
    }
    e->has_thread = true;
    pthread_mutex_unlock(&e->mu);
    if (pthread_create(&e->thread, NULL, loop_main, e)) {
        e->has_thread = false;
        return -1;
    }
    return 0;
}

void engine_stop(struct engine *e, double grace_s) {
    pthread_mutex_lock(&e->mu);
    e->closed = true;
    e->deadline = pg_now() + (grace_s > 0 ? grace_s : 0);
    bool thread = e->has_thread;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (thread) {
        // the loop aborts what is left at the deadline, then exits once idle
        pthread_join(e->thread, NULL);
        e->has_thread = false;
        return;
    }
    while (engine_has_work(e))
        if (engine_step(e) < 0 && pg_now() >= e->deadline) break;
}

void engine_stats(struct engine *e, struct engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    pthread_mutex_unlock(&e->mu);
}
