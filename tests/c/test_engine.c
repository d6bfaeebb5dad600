// Engine tests on the test-double backend (tests/c/test_engine_backend.h): outputs equal the
// one-by-one oracle under every scheduling configuration, prefix caching, preemption, n > 1,
// seeds, stop conditions, aborts, validation, a randomized stress test and threads.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "engine/engine_impl.h"
#include "model/config.h"
#include "test_engine_backend.h"

#define VOCAB 64
#define EOS 1
#define MAXTOK 256

struct out_seq {
    int32_t toks[MAXTOK];
    int n;
    enum finish_reason fin;
    int32_t stop_token;
    int n_cached, n_updates, n_after_finish, n_logprobs;
};

struct out_req {
    struct coll *c;
    struct out_seq seq[8];
    int abort_after;          // abort the request from the callback after this many tokens
    struct engine *e;
    uint64_t id;
};

struct coll {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_finished_seqs;
    struct out_req *reqs;
};

static void on_out(void *user, const struct engine_output *o) {
    struct out_req *r = user;
    pthread_mutex_lock(&r->c->mu);
    struct out_seq *s = &r->seq[o->index];
    if (s->fin != FINISH_NONE) s->n_after_finish++;
    for (int i = 0; i < o->n_tokens && s->n < MAXTOK; i++) s->toks[s->n++] = o->tokens[i];
    if (o->logprobs) s->n_logprobs++;
    s->n_updates++;
    s->n_cached = o->n_cached_tokens;
    if (o->finish != FINISH_NONE) {
        s->fin = o->finish;
        s->stop_token = o->stop_token;
        r->c->n_finished_seqs++;
        pthread_cond_broadcast(&r->c->cv);
    }
    bool ab = r->abort_after > 0 && s->n >= r->abort_after && o->finish == FINISH_NONE;
    pthread_mutex_unlock(&r->c->mu);
    if (ab) engine_abort(r->e, o->req_id);
}

static struct coll *coll_new(int n) {
    struct coll *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->reqs = calloc((size_t)n, sizeof *c->reqs);
    for (int i = 0; i < n; i++) c->reqs[i].c = c;
    return c;
}

static void coll_free(struct coll *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->reqs);
    free(c);
}

// The oracle: what the request's sequence `index` must produce, computed one token at a time.
static int ref_generate(const struct gen_request *r, int index, int max_model_len, int32_t *out) {
    int32_t toks[1024];
    memcpy(toks, r->prompt, (size_t)r->n_prompt * sizeof *toks);
    int n = r->n_prompt, k = 0;
    struct sampling_params sp = r->sp;
    if (index > 0) sp.seed = pg_mix64(sp.seed + (uint64_t)index);
    int max_tokens = r->max_tokens > 0 ? r->max_tokens : max_model_len - r->n_prompt;
    int32_t banned[17];
    int n_banned = 0;
    if (!r->ignore_eos) banned[n_banned++] = EOS;
    for (int i = 0; i < r->n_stop_token_ids; i++) banned[n_banned++] = r->stop_token_ids[i];
    for (;;) {
        struct sample_input in = {.params = &sp, .step = (uint64_t)k};
        if (k < r->min_tokens) {
            in.banned = banned;
            in.n_banned = n_banned;
        }
        int32_t t = ref_next(toks, n, &in, VOCAB);
        toks[n++] = t;
        out[k++] = t;
        bool stop = (!r->ignore_eos && t == EOS);
        for (int i = 0; i < r->n_stop_token_ids; i++) stop = stop || t == r->stop_token_ids[i];
        if ((stop && k > r->min_tokens) || k >= max_tokens || n >= max_model_len) return k;
    }
}

static void check_engine(struct engine *e) {
    char err[PG_ERR_LEN] = "";
    if (sched_check(e->sched, err)) fail_msg("invariant: %s", err);
}

static void run_to_completion(struct engine *e) {
    for (int guard = 0; engine_has_work(e); guard++) {
        assert_true(engine_step(e) >= 0);
        check_engine(e);
        assert_true(guard < 100000);
    }
}

static void assert_all_free(struct engine *e) {
    struct engine_stats st;
    engine_stats(e, &st);
    assert_int_equal(st.num_free_blocks, st.num_blocks);
    assert_int_equal(st.num_running + st.num_waiting, 0);
    check_engine(e);
}

// A deterministic mixed workload: prompts from 4 shared prefixes plus distinct tails.
static int32_t g_prompts[64][200];
static void make_prompt(int i, int len, int32_t *p) {
    uint64_t x = 1000 + (uint64_t)(i % 4);
    for (int j = 0; j < len; j++) {
        if (j == 40) x = 5000 + (uint64_t)i; // distinct tail after a shared 40-token prefix
        x = pg_mix64(x);
        p[j] = 2 + (int32_t)(x % (VOCAB - 2));
    }
}

static void workload(int n, struct gen_request *reqs, struct coll *c) {
    for (int i = 0; i < n; i++) {
        int len = 1 + (i * 37) % 120;
        make_prompt(i, len, g_prompts[i]);
        gen_request_defaults(&reqs[i]);
        reqs[i].prompt = g_prompts[i];
        reqs[i].n_prompt = len;
        reqs[i].sp.temperature = 0;
        reqs[i].max_tokens = 1 + (i * 13) % 40;
        reqs[i].ignore_eos = i % 5 == 0;
        reqs[i].on_output = on_out;
        reqs[i].user = &c->reqs[i];
    }
}

struct run_opts {
    bool caching, chunked;
    int num_blocks, budget, block_size, max_num_seqs, steps;
    bool async; // async scheduling, on a backend that computes at collect
    int depth;  // > 0: async with --num-scheduler-steps depth (pipeline depth)
    bool mix;   // every 3rd request seeded at temperature 0.8; every 4th with penalties (not
                // feedable: the test backend ignores penalties, so the oracle still holds)
};

// Runs the 32-request workload and checks every output against the oracle.
static void run_workload(struct run_opts o, struct engine_stats *st_out) {
    const int N = 32, MML = 160;
    struct engine_config cfg;
    engine_config_defaults(&cfg);
    cfg.block_size = o.block_size ? o.block_size : 4;
    cfg.max_model_len = MML;
    cfg.enable_prefix_caching = o.caching;
    cfg.enable_chunked_prefill = o.chunked;
    cfg.max_num_batched_tokens = o.budget;
    cfg.max_num_seqs = o.max_num_seqs ? o.max_num_seqs : 256;
    cfg.num_scheduler_steps = o.depth ? o.depth : o.steps ? o.steps : 1;
    cfg.async_scheduling = o.async || o.depth;
    int depth = engine_pipeline_depth(&cfg);
    struct model_config m = tb_model_config(VOCAB, MML, EOS);
    struct tb *t = tb_new(o.num_blocks, cfg.block_size, VOCAB);
    t->lazy = cfg.async_scheduling;
    t->max_inflight = engine_pipeline_depth(&cfg);
    char err[PG_ERR_LEN] = "";
    struct engine *e = engine_create(&cfg, &m, &tb_ops, t, o.num_blocks, NULL, err);
    if (!e) fail_msg("%s", err);
    struct coll *c = coll_new(N);
    struct gen_request reqs[32];
    workload(N, reqs, c);
    for (int i = 0; i < N && o.mix; i++) {
        if (i % 3 == 1) {
            reqs[i].sp.temperature = 0.8f;
            reqs[i].sp.seed = 77 + (uint64_t)i;
            reqs[i].seeded = true;
        }
        if (i % 4 == 2) {
            reqs[i].sp.repetition_penalty = 1.1f;
            reqs[i].sp.presence_penalty = 0.5f;
        }
    }
    for (int i = 0; i < N; i++) {
        c->reqs[i].e = e;
        if (engine_add(e, &reqs[i], &c->reqs[i].id, err)) fail_msg("add %d: %s", i, err);
    }
    run_to_completion(e);
    for (int i = 0; i < N; i++) {
        int32_t want[MAXTOK];
        int nw = ref_generate(&reqs[i], 0, MML, want);
        struct out_seq *s = &c->reqs[i].seq[0];
        assert_int_equal(s->n, nw);
        assert_memory_equal(s->toks, want, (size_t)nw * sizeof *want);
        assert_true(s->fin == FINISH_STOP || s->fin == FINISH_LENGTH);
        assert_int_equal(s->n_after_finish, 0);
    }
    assert_true(t->max_tokens_seen <= o.budget);
    assert_true(t->max_seqs_seen <= cfg.max_num_seqs);
    assert_all_free(e);
    engine_stats(e, st_out);
    assert_true(t->max_depth_seen <= depth);
    assert_int_equal(st_out->fed_seqs, (uint64_t)t->n_fed);
    if (depth >= 2) { // decode steps were launched ahead, their inputs fed by the backend
        assert_true(t->n_fed > 0);
        if (o.mix) // penalty requests force a collect whenever they hold an unresolved token
            assert_true(t->max_depth_seen >= 2);
        else
            assert_int_equal(t->max_depth_seen, depth);
        assert_true(st_out->steps_ahead > 0);
    } else {
        assert_int_equal(t->n_fed, 0);
    }
    engine_free(e);
    tb_free(t);
    coll_free(c);
}

static void test_batch_configs(void **state) {
    (void)state;
    struct engine_stats st;
    struct run_opts base = {.caching = true, .chunked = true, .num_blocks = 2000, .budget = 256};
    run_workload(base, &st);
    assert_true(st.prefix_hits > 0);
    assert_int_equal(st.num_preemptions, 0);
    struct run_opts o = base;
    o.caching = false;
    run_workload(o, &st);
    assert_int_equal(st.prefix_hits, 0);
    o = base;
    o.budget = 16; // long prompts are chunked across many steps
    run_workload(o, &st);
    o.chunked = false;
    o.budget = 160;
    run_workload(o, &st);
    o = base;
    o.num_blocks = 48; // 192 token slots for 32 requests: forced preemption
    run_workload(o, &st);
    assert_true(st.num_preemptions > 0);
    o.caching = false;
    run_workload(o, &st);
    assert_true(st.num_preemptions > 0);
    o = base;
    o.max_num_seqs = 3;
    o.block_size = 16;
    o.num_blocks = 30;
    o.budget = 40;
    o.steps = 3;
    run_workload(o, &st);
    // async scheduling: the same outputs, with and without preemption and chunking
    o = base;
    o.async = true;
    run_workload(o, &st);
    assert_true(st.prefix_hits > 0);
    o.num_blocks = 48;
    run_workload(o, &st);
    assert_true(st.num_preemptions > 0);
    o.budget = 16;
    o.caching = false;
    run_workload(o, &st);
    o = base;
    o.async = true;
    o.chunked = false;
    o.budget = 160;
    o.steps = 4;
    run_workload(o, &st);
}

// The test backend enforces backend.h's feed rules and max_inflight, and resolves feeds
// from the previous step's results (FIFO collects).
static void test_backend_feed_rules(void **state) {
    (void)state;
    struct tb *t = tb_new(8, 4, VOCAB);
    t->max_inflight = 2;
    struct sampling_params sp;
    memset(&sp, 0, sizeof sp);
    int32_t bt[2] = {0, 1}, bt2[2] = {2, 3}, prompt[3] = {5, 6, 7}, ph[2] = {-1, -1};
    char err[PG_ERR_LEN];
    struct step_seq fed = {.n_new = 1, .tokens = ph, .pos0 = 3, .block_table = bt, .n_blocks = 1,
                           .sample = true, .smp = {.params = &sp}, .feed = true, .feed_idx = 0};
    struct step_batch b = {1, &fed, 1};
    assert_int_not_equal(tb_ops.execute(t, &b, err), 0); // no previous step
    assert_non_null(strstr(err, "previous"));
    struct step_seq pre[2] = {
        {.n_new = 3, .tokens = prompt, .block_table = bt, .n_blocks = 1, .sample = true, .smp = {.params = &sp}},
        {.n_new = 3, .tokens = prompt, .block_table = bt2, .n_blocks = 1, .sample = true, .smp = {.params = &sp}}};
    struct step_batch pb = {2, pre, 6};
    assert_int_equal(tb_ops.execute(t, &pb, err), 0);
    struct step_seq bad = fed;
    bad.tokens = ph;
    bad.feed = false; // a placeholder without a feed
    b.seqs = &bad;
    assert_int_not_equal(tb_ops.execute(t, &b, err), 0);
    int32_t ph9[2] = {-1, 9};
    bad = fed;
    bad.tokens = ph9;
    bad.n_new = 2;
    b = (struct step_batch){1, &bad, 2};
    assert_int_not_equal(tb_ops.execute(t, &b, err), 0); // feed with n_new 2
    assert_non_null(strstr(err, "n_new"));
    struct step_seq fed2[2] = {fed, fed};
    fed2[0].feed_idx = 1; // sequence 0 continues from the prefill's second result...
    fed2[1].feed_idx = 0;
    fed2[1].block_table = bt2;
    struct step_batch fb = {2, fed2, 2};
    assert_int_equal(tb_ops.execute(t, &fb, err), 0); // executed before the prefill's collect
    assert_int_not_equal(tb_ops.execute(t, &fb, err), 0); // a third step: over max_inflight
    struct step_result r1[2], r2[2];
    assert_int_equal(tb_ops.collect(t, r1, err), 0);
    assert_int_equal(tb_ops.collect(t, r2, err), 0);
    assert_int_equal(r1[0].token, r1[1].token); // the same prompt
    struct sample_input in = {.params = &sp};
    int32_t ctx[4] = {5, 6, 7, r1[1].token};
    assert_int_equal(r2[0].token, ref_next(ctx, 4, &in, VOCAB)); // the fed token was used
    assert_int_equal(t->n_fed, 2);
    assert_int_equal(t->max_depth_seen, 2);
    fed.feed_idx = 5; // out of range for a 2-result previous step
    b = (struct step_batch){1, &fed, 1};
    assert_int_not_equal(tb_ops.execute(t, &b, err), 0); // computed at execute (not lazy)
    assert_non_null(strstr(err, "out of range"));
    t->lazy = true; // a lazy backend finds it when it computes the step, at collect
    assert_int_equal(tb_ops.execute(t, &b, err), 0);
    assert_int_not_equal(tb_ops.collect(t, r1, err), 0);
    assert_non_null(strstr(err, "out of range"));
    tb_free(t);
}

// Pipelined (depth 2, 3, 8) runs of the same workload: equal to the oracle, with feeds.
static void test_pipeline_depths(void **state) {
    (void)state;
    struct engine_stats st;
    struct run_opts base = {.caching = true, .chunked = true, .num_blocks = 2000, .budget = 256};
    int depths[] = {2, 3, 8};
    for (int d = 0; d < 3; d++) {
        struct run_opts o = base;
        o.depth = depths[d];
        run_workload(o, &st);
        assert_true(st.prefix_hits > 0);
        o.caching = false;
        run_workload(o, &st);
        o = base;
        o.depth = depths[d];
        o.budget = 16; // chunked prefills beside fed decodes
        run_workload(o, &st);
        o = base;
        o.depth = depths[d];
        o.num_blocks = 48; // forced preemption: victims may hold unresolved tokens
        run_workload(o, &st);
        assert_true(st.num_preemptions > 0);
        o.caching = false;
        run_workload(o, &st);
        assert_true(st.num_preemptions > 0);
        o = base;
        o.depth = depths[d];
        o.mix = true; // seeded sampling and penalty requests (those are never fed)
        run_workload(o, &st);
        o.num_blocks = 48;
        run_workload(o, &st);
    }
}

// --scheduling-policy priority on a tiny pool: 12 low-priority requests fill it, then 4
// higher-priority ones arrive that fit only by preempting them (one gets its first token in
// the very next step); every output still equals the oracle.
static void priority_preemption_case(int depth) {
    bool async = depth >= 2;
    enum { N = 16, N1 = 12 };
    const int MML = 160, NB = 48;
    struct engine_config cfg = tb_engine_config(MML);
    cfg.enable_prefix_caching = true;
    cfg.enable_chunked_prefill = true;
    cfg.max_num_batched_tokens = 256;
    cfg.policy = SCHED_PRIORITY;
    cfg.async_scheduling = async;
    cfg.num_scheduler_steps = async ? depth : 1;
    struct model_config m = tb_model_config(VOCAB, MML, EOS);
    struct tb *t = tb_new(NB, cfg.block_size, VOCAB);
    t->lazy = async;
    t->max_inflight = engine_pipeline_depth(&cfg);
    char err[PG_ERR_LEN] = "";
    struct engine *e = engine_create(&cfg, &m, &tb_ops, t, NB, NULL, err);
    if (!e) fail_msg("%s", err);
    struct coll *c = coll_new(N);
    struct gen_request reqs[N];
    for (int i = 0; i < N; i++) {
        int len = i < N1 ? 12 : 60; // 3 blocks each, then 15 blocks each
        for (int j = 0; j < len; j++)
            g_prompts[i][j] = 2 + (int32_t)(pg_mix64(7000 + (uint64_t)(i * 1000 + j)) % (VOCAB - 2));
        gen_request_defaults(&reqs[i]);
        reqs[i].prompt = g_prompts[i];
        reqs[i].n_prompt = len;
        reqs[i].sp.temperature = i % 2 ? 0.8f : 0;
        reqs[i].sp.seed = (uint64_t)i;
        reqs[i].seeded = true;
        reqs[i].max_tokens = i < N1 ? 30 : 10;
        reqs[i].ignore_eos = i < N1;
        reqs[i].priority = i < N1 ? 5 : i % 2;
        reqs[i].on_output = on_out;
        reqs[i].user = &c->reqs[i];
        c->reqs[i].e = e;
    }
    for (int i = 0; i < N1; i++)
        if (engine_add(e, &reqs[i], &c->reqs[i].id, err)) fail_msg("add %d: %s", i, err);
    for (int k = 0; k < 4; k++) {
        assert_true(engine_step(e) >= 0);
        check_engine(e);
    }
    struct engine_stats st;
    engine_stats(e, &st);
    assert_true(st.num_free_blocks < 15); // a newcomer does not fit without preemption
    uint64_t pre0 = st.num_preemptions;
    for (int i = N1; i < N; i++)
        if (engine_add(e, &reqs[i], &c->reqs[i].id, err)) fail_msg("add %d: %s", i, err);
    assert_true(engine_step(e) >= 0);
    if (async) assert_true(engine_step(e) >= 0); // its results arrive one step later
    check_engine(e);
    engine_stats(e, &st);
    assert_true(st.num_preemptions > pre0);
    int got = 0;
    for (int i = N1; i < N; i++) got += c->reqs[i].seq[0].n > 0 && reqs[i].priority == 0;
    assert_true(got > 0);
    run_to_completion(e);
    for (int i = 0; i < N; i++) {
        int32_t want[MAXTOK];
        int nw = ref_generate(&reqs[i], 0, MML, want);
        struct out_seq *sq = &c->reqs[i].seq[0];
        assert_int_equal(sq->n, nw);
        assert_memory_equal(sq->toks, want, (size_t)nw * sizeof *want);
        assert_int_equal(sq->n_after_finish, 0);
    }
    assert_all_free(e);
    if (async) assert_true(t->n_fed > 0);
    engine_free(e);
    tb_free(t);
    coll_free(c);
}

static void test_priority_preemption(void **state) {
    (void)state;
    priority_preemption_case(1);
    priority_preemption_case(2); // async scheduling: victims may be in the batch in flight
    priority_preemption_case(3); // pipelined: victims may hold several unresolved tokens
}

// Runs one request alone and returns its output in out_seq form.
static struct engine *mk_engine(struct tb **t, int num_blocks, int bs, int mml, bool caching) {
    struct engine_config cfg;
    engine_config_defaults(&cfg);
    cfg.block_size = bs;
    cfg.max_model_len = mml;
    cfg.enable_prefix_caching = caching;
    static struct model_config m;
    m = tb_model_config(VOCAB, mml, EOS);
    *t = tb_new(num_blocks, bs, VOCAB);
    char err[PG_ERR_LEN] = "";
    struct engine *e = engine_create(&cfg, &m, &tb_ops, *t, num_blocks, NULL, err);
    if (!e) fail_msg("%s", err);
    return e;
}

static void test_prefix_cache_multiturn(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk_engine(&t, 64, 4, 200, true);
    struct coll *c = coll_new(3);
    int32_t p1[30], p2[80];
    make_prompt(7, 30, p1);
    struct gen_request r;
    gen_request_defaults(&r);
    r.prompt = p1;
    r.n_prompt = 30;
    r.sp.temperature = 0;
    r.max_tokens = 10;
    r.ignore_eos = true;
    r.on_output = on_out;
    r.user = &c->reqs[0];
    char err[PG_ERR_LEN];
    assert_int_equal(engine_add(e, &r, NULL, err), ENGINE_OK);
    run_to_completion(e);
    assert_int_equal(c->reqs[0].seq[0].n_cached, 0);
    // turn 2: the first prompt + its answer + a new user message
    memcpy(p2, p1, sizeof p1);
    memcpy(p2 + 30, c->reqs[0].seq[0].toks, 10 * sizeof *p2);
    for (int i = 40; i < 55; i++) p2[i] = 2 + i % 50;
    r.prompt = p2;
    r.n_prompt = 55;
    r.user = &c->reqs[1];
    assert_int_equal(engine_add(e, &r, NULL, err), ENGINE_OK);
    run_to_completion(e);
    // 40 tokens (prompt + answer) were computed before; the answer's last token was sampled
    // but never fed back, so positions 0..38 are cached: 9 full blocks of 4
    assert_int_equal(c->reqs[1].seq[0].n_cached, 36);
    int32_t want[MAXTOK];
    int nw = ref_generate(&r, 0, 200, want);
    assert_int_equal(c->reqs[1].seq[0].n, nw);
    assert_memory_equal(c->reqs[1].seq[0].toks, want, (size_t)nw * sizeof *want);
    // the same prompt again: everything but the last token's block comes from the cache
    r.user = &c->reqs[2];
    assert_int_equal(engine_add(e, &r, NULL, err), ENGINE_OK);
    run_to_completion(e);
    assert_int_equal(c->reqs[2].seq[0].n_cached, 52);
    assert_memory_equal(c->reqs[2].seq[0].toks, want, (size_t)nw * sizeof *want);
    struct engine_stats st;
    engine_stats(e, &st);
    assert_int_equal(st.prefix_queries, 30 + 55 + 55);
    assert_int_equal(st.prefix_hits, 36 + 52);
    assert_all_free(e);
    engine_free(e);
    tb_free(t);
    coll_free(c);
}

static void test_seeds_and_n(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk_engine(&t, 256, 4, 200, true);
    struct coll *c = coll_new(40);
    struct gen_request reqs[40];
    workload(40, reqs, c);
    char err[PG_ERR_LEN];
    // request 0 alone, seeded, temperature 1
    reqs[0].sp.temperature = 1.0f;
    reqs[0].sp.seed = 42;
    reqs[0].seeded = true;
    reqs[0].max_tokens = 30;
    reqs[0].ignore_eos = true;
    assert_int_equal(engine_add(e, &reqs[0], NULL, err), ENGINE_OK);
    run_to_completion(e);
    // the same request in a batch with others: same tokens
    struct gen_request same = reqs[0];
    same.user = &c->reqs[1];
    for (int i = 2; i < 12; i++) assert_int_equal(engine_add(e, &reqs[i], NULL, err), ENGINE_OK);
    assert_int_equal(engine_add(e, &same, NULL, err), ENGINE_OK);
    // a different seed
    struct gen_request other = reqs[0];
    other.sp.seed = 43;
    other.user = &c->reqs[12];
    assert_int_equal(engine_add(e, &other, NULL, err), ENGINE_OK);
    // n = 4 with the same seed: index 0 equals the n = 1 output, the others differ
    struct gen_request par = reqs[0];
    par.n = 4;
    par.sp.logprobs = 3;
    par.user = &c->reqs[13];
    assert_int_equal(engine_add(e, &par, NULL, err), ENGINE_OK);
    run_to_completion(e);
    struct out_seq *a = &c->reqs[0].seq[0];
    assert_int_equal(a->n, 30);
    assert_memory_equal(c->reqs[1].seq[0].toks, a->toks, 30 * sizeof(int32_t));
    assert_memory_not_equal(c->reqs[12].seq[0].toks, a->toks, 30 * sizeof(int32_t));
    assert_memory_equal(c->reqs[13].seq[0].toks, a->toks, 30 * sizeof(int32_t));
    for (int i = 0; i < 4; i++) {
        int32_t want[MAXTOK];
        assert_int_equal(ref_generate(&par, i, 200, want), 30);
        assert_int_equal(c->reqs[13].seq[i].n, 30);
        assert_memory_equal(c->reqs[13].seq[i].toks, want, 30 * sizeof *want);
        assert_int_equal(c->reqs[13].seq[i].n_logprobs, 30);
        if (i) assert_memory_not_equal(c->reqs[13].seq[i].toks, a->toks, 30 * sizeof(int32_t));
    }
    // the n = 4 siblings shared the prompt's full blocks through the prefix cache
    int full = (par.n_prompt - 1) / 4 * 4;
    for (int i = 1; i < 4; i++) assert_int_equal(c->reqs[13].seq[i].n_cached, full);
    assert_int_equal(c->reqs[0].seq[0].n_logprobs, 0);
    assert_all_free(e);
    engine_free(e);
    tb_free(t);
    coll_free(c);
}

static void test_stop_conditions(void **state) {
    (void)state;
    struct tb *t;
    const int MML = 64;
    struct engine *e = mk_engine(&t, 64, 4, MML, true);
    struct coll *c = coll_new(8);
    int32_t p[20];
    make_prompt(3, 20, p);
    struct gen_request r;
    gen_request_defaults(&r);
    r.prompt = p;
    r.n_prompt = 20;
    r.sp.temperature = 0;
    r.on_output = on_out;
    char err[PG_ERR_LEN];
    // find the greedy continuation with ignore_eos, then use its tokens as stop ids
    r.ignore_eos = true;
    r.user = &c->reqs[0];
    assert_int_equal(engine_add(e, &r, NULL, err), ENGINE_OK);
    run_to_completion(e);
    struct out_seq *full = &c->reqs[0].seq[0];
    assert_int_equal(full->n, MML - 20); // ran to max_model_len
    assert_int_equal(full->fin, FINISH_LENGTH);
    int32_t stop_id = full->toks[5];
    int first = 0;
    while (full->toks[first] != stop_id) first++;
    struct gen_request r2 = r;
    r2.stop_token_ids = &stop_id;
    r2.n_stop_token_ids = 1;
    r2.user = &c->reqs[1];
    assert_int_equal(engine_add(e, &r2, NULL, err), ENGINE_OK);
    // min_tokens past the stop id: the stop id is banned until then, output differs
    struct gen_request r3 = r2;
    r3.min_tokens = first + 2;
    r3.max_tokens = first + 6;
    r3.user = &c->reqs[2];
    assert_int_equal(engine_add(e, &r3, NULL, err), ENGINE_OK);
    struct gen_request r4 = r;
    r4.max_tokens = 3;
    r4.user = &c->reqs[3];
    assert_int_equal(engine_add(e, &r4, NULL, err), ENGINE_OK);
    run_to_completion(e);
    assert_int_equal(c->reqs[1].seq[0].n, first + 1);
    assert_int_equal(c->reqs[1].seq[0].fin, FINISH_STOP);
    assert_int_equal(c->reqs[1].seq[0].stop_token, stop_id);
    int32_t want[MAXTOK];
    int nw = ref_generate(&r3, 0, MML, want);
    assert_int_equal(c->reqs[2].seq[0].n, nw);
    assert_memory_equal(c->reqs[2].seq[0].toks, want, (size_t)nw * sizeof *want);
    for (int i = 0; i < r3.min_tokens; i++) assert_int_not_equal(want[i], stop_id);
    assert_int_equal(c->reqs[3].seq[0].n, 3);
    assert_int_equal(c->reqs[3].seq[0].fin, FINISH_LENGTH);
    assert_all_free(e);
    engine_free(e);
    tb_free(t);
    coll_free(c);
}

static void test_abort(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk_engine(&t, 128, 4, 200, true);
    struct coll *c = coll_new(4);
    struct gen_request reqs[4];
    workload(4, reqs, c);
    char err[PG_ERR_LEN];
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) {
        reqs[i].max_tokens = 50;
        reqs[i].ignore_eos = true;
        reqs[i].n = i == 1 ? 3 : 1;
        reqs[i].sp.temperature = i == 1 ? 0.7f : 0;
        c->reqs[i].e = e;
        assert_int_equal(engine_add(e, &reqs[i], &ids[i], err), ENGINE_OK);
    }
    c->reqs[0].abort_after = 5; // from the callback
    for (int k = 0; k < 8; k++) engine_step(e);
    engine_abort(e, ids[1]);  // mid-stream, from outside
    engine_abort(e, ids[3]);
    engine_abort(e, 999999);  // unknown: no-op
    engine_step(e);
    struct engine_stats st;
    engine_stats(e, &st);
    assert_int_equal(st.num_running + st.num_waiting, 1); // only request 2 left
    run_to_completion(e);
    assert_int_equal(c->reqs[0].seq[0].fin, FINISH_ABORT);
    assert_int_equal(c->reqs[0].seq[0].n, 5);
    for (int i = 0; i < 3; i++) assert_int_equal(c->reqs[1].seq[i].fin, FINISH_ABORT);
    assert_int_equal(c->reqs[2].seq[0].fin, FINISH_LENGTH);
    assert_int_equal(c->reqs[3].seq[0].fin, FINISH_ABORT);
    for (int i = 0; i < 4; i++) assert_int_equal(c->reqs[i].seq[0].n_after_finish, 0);
    engine_abort(e, ids[2]); // already finished: no-op
    engine_step(e);
    assert_int_equal(c->reqs[2].seq[0].n_after_finish, 0);
    engine_stats(e, &st);
    assert_int_equal(st.finished[FINISH_ABORT], 5);
    assert_all_free(e);
    engine_free(e);
    tb_free(t);
    coll_free(c);
}

static void test_backend_failure(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk_engine(&t, 128, 4, 200, true);
    struct coll *c = coll_new(3);
    struct gen_request reqs[3];
    workload(3, reqs, c);
    char err[PG_ERR_LEN];
    for (int i = 0; i < 3; i++) assert_int_equal(engine_add(e, &reqs[i], NULL, err), ENGINE_OK);
    t->fail_at_step = 2;
    engine_step(e);
    assert_int_equal(engine_step(e), -1);
    run_to_completion(e);
    for (int i = 0; i < 3; i++) assert_true(c->reqs[i].seq[0].fin != FINISH_NONE);
    assert_all_free(e);
    engine_free(e);
    tb_free(t);
    coll_free(c);
}

static void expect_einval(struct engine *e, const struct gen_request *r, const char *needle) {
    char err[PG_ERR_LEN] = "";
    assert_int_equal(engine_add(e, r, NULL, err), ENGINE_EINVAL);
    if (!strstr(err, needle)) fail_msg("expected '%s' in '%s'", needle, err);
}

static void test_validation(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk_engine(&t, 64, 4, 100, true);
    struct coll *c = coll_new(1);
    int32_t p[120];
    make_prompt(1, 120, p);
    struct gen_request ok;
    gen_request_defaults(&ok);
    ok.prompt = p;
    ok.n_prompt = 10;
    ok.on_output = on_out;
    ok.user = &c->reqs[0];
    struct gen_request r = ok;
    r.n_prompt = 100;
    expect_einval(e, &r, "100 tokens");
    r = ok;
    r.n_prompt = 0;
    expect_einval(e, &r, "empty");
    r = ok;
    r.max_tokens = 95;
    expect_einval(e, &r, "105");
    r = ok;
    r.sp.temperature = -0.5f;
    expect_einval(e, &r, "temperature");
    r = ok;
    r.sp.top_p = 0;
    expect_einval(e, &r, "top_p");
    r.sp.top_p = 1.5f;
    expect_einval(e, &r, "top_p");
    r = ok;
    r.sp.top_k = -2;
    expect_einval(e, &r, "top_k");
    r = ok;
    r.sp.min_p = 1.1f;
    expect_einval(e, &r, "min_p");
    r = ok;
    r.sp.repetition_penalty = 0;
    expect_einval(e, &r, "repetition_penalty");
    r = ok;
    r.sp.logprobs = SAMPLING_MAX_LOGPROBS + 1;
    expect_einval(e, &r, "logprobs");
    r = ok;
    r.n = 0;
    expect_einval(e, &r, "n must");
    r.n = 100000;
    expect_einval(e, &r, "n must");
    int32_t bad[3] = {1, VOCAB, 2};
    r = ok;
    r.prompt = bad;
    r.n_prompt = 3;
    expect_einval(e, &r, "vocabulary");
    r = ok;
    r.stop_token_ids = bad + 1;
    r.n_stop_token_ids = 1;
    expect_einval(e, &r, "stop_token_ids");
    int32_t bias_id = -1;
    float bias_val = 1;
    r = ok;
    r.sp.logit_bias_ids = &bias_id;
    r.sp.logit_bias_vals = &bias_val;
    r.sp.n_logit_bias = 1;
    expect_einval(e, &r, "logit_bias");
    r = ok;
    r.stop[0] = "x";
    r.n_stop = 1;
    expect_einval(e, &r, "tokenizer"); // no tokenizer in this engine
    r = ok;
    r.min_tokens = 5;
    r.max_tokens = 3;
    expect_einval(e, &r, "min_tokens");
    r = ok;
    r.max_tokens = -5;
    expect_einval(e, &r, "max_tokens");
    // nothing was queued; a valid request still runs
    char err[PG_ERR_LEN];
    assert_false(engine_has_work(e));
    assert_int_equal(engine_add(e, &ok, NULL, err), ENGINE_OK);
    run_to_completion(e);
    assert_true(c->reqs[0].seq[0].fin != FINISH_NONE);
    // a pool too small for max_model_len is refused at creation
    struct engine_config cfg = tb_engine_config(100);
    struct model_config m = tb_model_config(VOCAB, 100, EOS);
    assert_null(engine_create(&cfg, &m, &tb_ops, t, 10, NULL, err));
    assert_non_null(strstr(err, "max-model-len"));
    cfg.enable_chunked_prefill = false;
    cfg.max_num_batched_tokens = 50;
    assert_null(engine_create(&cfg, &m, &tb_ops, t, 100, NULL, err));
    assert_non_null(strstr(err, "chunked"));
    assert_all_free(e);
    engine_free(e);
    tb_free(t);
    coll_free(c);
}


int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_configs),
        cmocka_unit_test(test_backend_feed_rules),
        cmocka_unit_test(test_pipeline_depths),
        cmocka_unit_test(test_priority_preemption),
        cmocka_unit_test(test_prefix_cache_multiturn),
        cmocka_unit_test(test_seeds_and_n),
        cmocka_unit_test(test_stop_conditions),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_backend_failure),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
