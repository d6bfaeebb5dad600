// Engine stress tests: a seeded randomized add / abort / step run with invariant checks
// after every step, and multithreaded add / abort against the running loop thread.
// Every sequence that was not aborted must produce exactly the oracle's output; an aborted
// one a prefix of it.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "engine/engine_impl.h"
#include "model/config.h"
#include "test_engine_backend.h"

#define VOCAB 48
#define EOS 1
#define MML 96
#define MAXREQ 600

struct oseq {
    int32_t toks[MML];
    int n;
    enum finish_reason fin;
    int n_after_finish;
};

struct oreq {
    struct gen_request r;
    int32_t prompt[MML];
    struct oseq seq[4];
    uint64_t id;
    bool added, aborted;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_finished;

static void on_out(void *user, const struct engine_output *o) {
    struct oreq *q = user;
    pthread_mutex_lock(&g_mu);
    struct oseq *s = &q->seq[o->index];
    if (s->fin != FINISH_NONE) s->n_after_finish++;
    for (int i = 0; i < o->n_tokens && s->n < MML; i++) s->toks[s->n++] = o->tokens[i];
    if (o->finish != FINISH_NONE) {
        s->fin = o->finish;
        g_finished++;
        pthread_cond_broadcast(&g_cv);
    }
    pthread_mutex_unlock(&g_mu);
}

static uint64_t rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void random_request(struct oreq *q, uint64_t *rs) {
    gen_request_defaults(&q->r);
    int len = 1 + (int)(rnd(rs) % 60);
    uint64_t x = 77 + rnd(rs) % 3; // three shared prefixes of 24 tokens
    for (int j = 0; j < len; j++) {
        if (j == 24) x = rnd(rs);
        x = pg_mix64(x);
        q->prompt[j] = 2 + (int32_t)(x % (VOCAB - 2));
    }
    q->r.prompt = q->prompt;
    q->r.n_prompt = len;
    q->r.max_tokens = rnd(rs) % 4 ? 1 + (int)(rnd(rs) % 30) : -1;
    if (q->r.max_tokens > MML - len) q->r.max_tokens = MML - len;
    q->r.n = rnd(rs) % 4 == 0 ? 2 + (int)(rnd(rs) % 3) : 1;
    q->r.sp.temperature = rnd(rs) % 2 ? 0 : 0.8f;
    q->r.sp.seed = rnd(rs);
    q->r.seeded = true;
    q->r.priority = (int)(rnd(rs) % 3);
    q->r.min_tokens = rnd(rs) % 5 == 0 ? 2 : 0;
    if (q->r.max_tokens > 0 && q->r.min_tokens > q->r.max_tokens) q->r.min_tokens = 0;
    q->r.on_output = on_out;
    q->r.user = q;
}

static int ref_generate(const struct gen_request *r, int index, int32_t *out) {
    int32_t toks[MML + 1];
    memcpy(toks, r->prompt, (size_t)r->n_prompt * sizeof *toks);
    int n = r->n_prompt, k = 0;
    struct sampling_params sp = r->sp;
    if (index > 0) sp.seed = pg_mix64(sp.seed + (uint64_t)index);
    int max_tokens = r->max_tokens > 0 ? r->max_tokens : MML - r->n_prompt;
    int32_t eos = EOS;
    for (;;) {
        struct sample_input in = {.params = &sp, .step = (uint64_t)k};
        if (k < r->min_tokens) {
            in.banned = &eos;
            in.n_banned = 1;
        }
        int32_t t = ref_next(toks, n, &in, VOCAB);
        toks[n++] = t;
        out[k++] = t;
        if ((t == EOS && k > r->min_tokens) || k >= max_tokens || n >= MML) return k;
    }
}

// Every finished, non-aborted sequence equals the oracle; aborted ones are a prefix of it.
static void verify(struct oreq *reqs, int n) {
    for (int i = 0; i < n; i++) {
        if (!reqs[i].added) continue;
        for (int j = 0; j < reqs[i].r.n; j++) {
            struct oseq *s = &reqs[i].seq[j];
            int32_t want[MML];
            int nw = ref_generate(&reqs[i].r, j, want);
            assert_true(s->fin != FINISH_NONE);
            assert_int_equal(s->n_after_finish, 0);
            if (s->fin == FINISH_ABORT) {
                assert_true(reqs[i].aborted);
                assert_true(s->n <= nw);
            } else {
                if (s->n != nw) fail_msg("req %d seq %d: %d tokens, oracle %d", i, j, s->n, nw);
            }
            assert_memory_equal(s->toks, want, (size_t)s->n * sizeof *want);
        }
    }
}

static bool g_async;
static int g_depth; // > 0 with g_async: --num-scheduler-steps (pipeline depth)

static struct engine *mk(struct tb **t, int num_blocks, bool caching, bool chunked, bool prio,
                         int budget) {
    static struct model_config m;
    m = tb_model_config(VOCAB, MML, EOS);
    struct engine_config cfg = tb_engine_config(MML);
    cfg.enable_prefix_caching = caching;
    cfg.enable_chunked_prefill = chunked;
    cfg.policy = prio ? SCHED_PRIORITY : SCHED_FCFS;
    cfg.max_num_batched_tokens = budget;
    cfg.max_num_seqs = 12;
    cfg.async_scheduling = g_async;
    if (g_async && g_depth > 0) cfg.num_scheduler_steps = g_depth;
    *t = tb_new(num_blocks, 4, VOCAB);
    (*t)->lazy = g_async;
    (*t)->max_inflight = engine_pipeline_depth(&cfg);
    char err[PG_ERR_LEN] = "";
    struct engine *e = engine_create(&cfg, &m, &tb_ops, *t, num_blocks, NULL, err);
    if (!e) fail_msg("%s", err);
    return e;
}

static void check_inv(struct engine *e) {
    char err[PG_ERR_LEN] = "";
    if (sched_check(e->sched, err)) fail_msg("invariant: %s", err);
}

// Checks every output against the oracle and that every KV block came back; *st gets the
// final stats. Frees the engine, the backend and reqs.
static void verify_and_free(struct engine *e, struct tb *t, struct oreq *reqs, int n,
                            struct engine_stats *st) {
    verify(reqs, n);
    engine_stats(e, st);
    assert_int_equal(st->num_free_blocks, st->num_blocks);
    engine_free(e);
    tb_free(t);
    free(reqs);
}

static void stress_run(uint64_t seed, int num_blocks, bool caching, bool chunked, bool prio,
                       int budget) {
    struct tb *t;
    struct engine *e = mk(&t, num_blocks, caching, chunked, prio, budget);
    struct oreq *reqs = calloc(MAXREQ, sizeof *reqs);
    uint64_t rs = seed;
    int n_req = 0;
    char err[PG_ERR_LEN];
    for (int it = 0; it < 400; it++) {
        int op = (int)(rnd(&rs) % 10);
        if (op < 4 && n_req < MAXREQ) {
            struct oreq *q = &reqs[n_req++];
            random_request(q, &rs);
            if (engine_add(e, &q->r, &q->id, err)) fail_msg("add: %s", err);
            q->added = true;
        } else if (op == 4 && n_req > 0) {
            struct oreq *q = &reqs[rnd(&rs) % (uint64_t)n_req];
            q->aborted = true;
            engine_abort(e, q->id);
        }
        assert_true(engine_step(e) >= 0);
        check_inv(e);
    }
    for (int guard = 0; engine_has_work(e); guard++) {
        assert_true(engine_step(e) >= 0);
        check_inv(e);
        assert_true(guard < 100000);
    }
    struct engine_stats st;
    bool piped = t->max_inflight >= 2;
    long fed = t->n_fed;
    int depth_seen = t->max_depth_seen;
    verify_and_free(e, t, reqs, n_req, &st);
    if (num_blocks < 60) assert_true(st.num_preemptions > 0);
    if (piped) {
        assert_true(fed > 0);
        assert_true(depth_seen >= 2);
        assert_int_equal(st.fed_seqs, (uint64_t)fed);
    }
}

static void test_stress(void **state) {
    (void)state;
    stress_run(1, 40, true, true, false, 64);
    stress_run(2, 40, false, true, true, 64);
    stress_run(3, 30, true, false, true, MML);
    stress_run(4, 400, true, true, false, 24);
    g_async = true;
    stress_run(5, 40, true, true, false, 64);
    stress_run(6, 40, false, true, true, 64);
    stress_run(7, 30, true, false, true, MML);
    stress_run(8, 400, true, true, false, 24);
    g_depth = 3; // pipelined: up to 3 steps in flight, inputs fed on the device
    stress_run(9, 40, true, true, false, 64);
    stress_run(10, 40, false, true, true, 64);
    stress_run(11, 30, true, false, true, MML);
    stress_run(12, 400, true, true, false, 24);
    g_depth = 0;
    g_async = false;
}



struct producer {
    struct engine *e;
    struct oreq *reqs;
    int n;
    uint64_t seed;
};

static void *produce(void *arg) {
    struct producer *p = arg;
    uint64_t rs = p->seed;
    char err[PG_ERR_LEN];
    for (int i = 0; i < p->n; i++) {
        struct oreq *q = &p->reqs[i];
        random_request(q, &rs);
        pthread_mutex_lock(&g_mu);
        q->added = true;
        pthread_mutex_unlock(&g_mu);
        if (engine_add(p->e, &q->r, &q->id, err)) {
            fprintf(stderr, "add: %s\n", err);
            abort();
        }
        if (i % 5 == 2) {
            q->aborted = true;
            engine_abort(p->e, q->id);
        }
        if (i % 7 == 0) sched_yield();
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk(&t, 50, true, true, false, 64);
    const int NT = 4, PER = 25;
    struct oreq *reqs = calloc((size_t)(NT * PER), sizeof *reqs);
    g_finished = 0;
    assert_int_equal(engine_start(e), 0);
    pthread_t th[4];
    struct producer ps[4];
    for (int i = 0; i < NT; i++) {
        ps[i] = (struct producer){.e = e, .reqs = reqs + i * PER, .n = PER, .seed = 100 + (uint64_t)i};
        pthread_create(&th[i], NULL, produce, &ps[i]);
    }
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    int total = 0;
    for (int i = 0; i < NT * PER; i++) total += reqs[i].r.n;
    pthread_mutex_lock(&g_mu);
    while (g_finished < total) pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    engine_stop(e, 1.0); // all finished: returns once the loop has reaped them
    assert_false(engine_has_work(e));
    verify(reqs, NT * PER);
    struct engine_stats st;
    engine_stats(e, &st);
    assert_int_equal(st.num_free_blocks, st.num_blocks);
    char err[PG_ERR_LEN];
    struct oreq late;
    random_request(&late, &(uint64_t){5});
    assert_int_equal(engine_add(e, &late.r, NULL, err), ENGINE_ECLOSED);
    engine_free(e);
    tb_free(t);
    free(reqs);
}

// Starts the engine loop and adds n random requests (seeded by seed); endless ones have no
// max_tokens and are expected to be aborted by engine_stop. Returns the number of sequences.
static int start_with_requests(struct engine *e, struct oreq *reqs, int n, uint64_t seed,
                               bool endless) {
    uint64_t rs = seed;
    g_finished = 0;
    assert_int_equal(engine_start(e), 0);
    char err[PG_ERR_LEN];
    int total = 0;
    for (int i = 0; i < n; i++) {
        random_request(&reqs[i], &rs);
        if (endless) {
            reqs[i].r.max_tokens = -1;
            reqs[i].r.min_tokens = 0;
            reqs[i].aborted = true; // may be aborted by the stop
        }
        reqs[i].added = true;
        total += reqs[i].r.n;
        assert_int_equal(engine_add(e, &reqs[i].r, &reqs[i].id, err), ENGINE_OK);
    }
    return total;
}

// engine_stop with no grace aborts what is still running; engine_free after it is clean.
static void test_stop_aborts(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk(&t, 100, true, true, false, 64);
    struct oreq *reqs = calloc(20, sizeof *reqs);
    int total = start_with_requests(e, reqs, 20, 9, true);
    engine_stop(e, 0);
    assert_int_equal(g_finished, total);
    struct engine_stats st;
    verify_and_free(e, t, reqs, 20, &st);
}

// engine_stop with a grace period lets running requests finish normally.
static void test_stop_grace(void **state) {
    (void)state;
    struct tb *t;
    struct engine *e = mk(&t, 100, true, true, false, 64);
    struct oreq *reqs = calloc(10, sizeof *reqs);
    start_with_requests(e, reqs, 10, 11, false);
    engine_stop(e, 60.0); // returns as soon as they are done
    struct engine_stats st;
    verify_and_free(e, t, reqs, 10, &st); // none aborted (aborted flags are false)
    assert_int_equal(st.finished[FINISH_ABORT], 0);
}

// max_waiting: engine_add refuses with ENGINE_EBUSY once that many are queued.
static void test_max_waiting(void **state) {
    (void)state;
    static struct model_config m;
    m = tb_model_config(VOCAB, MML, EOS);
    struct engine_config cfg = tb_engine_config(MML);
    cfg.max_waiting = 3;
    struct tb *t = tb_new(100, 4, VOCAB);
    char err[PG_ERR_LEN];
    struct engine *e = engine_create(&cfg, &m, &tb_ops, t, 100, NULL, err);
    struct oreq *reqs = calloc(5, sizeof *reqs);
    uint64_t rs = 3;
    for (int i = 0; i < 5; i++) random_request(&reqs[i], &rs);
    for (int i = 0; i < 3; i++) assert_int_equal(engine_add(e, &reqs[i].r, NULL, err), ENGINE_OK);
    assert_int_equal(engine_add(e, &reqs[3].r, NULL, err), ENGINE_EBUSY);
    assert_non_null(strstr(err, "waiting"));
    while (engine_has_work(e)) engine_step(e);
    assert_int_equal(engine_add(e, &reqs[4].r, NULL, err), ENGINE_OK);
    while (engine_has_work(e)) engine_step(e);
    engine_free(e);
    tb_free(t);
    free(reqs);
}

static void test_threads_async(void **state) {
    g_async = true;
    test_threads(state);
    test_stop_aborts(state);
    g_depth = 3;
    test_threads(state);
    test_stop_aborts(state);
    g_depth = 0;
    g_async = false;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_stop_aborts),
        cmocka_unit_test(test_threads_async),
        cmocka_unit_test(test_stop_grace),
        cmocka_unit_test(test_max_waiting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
