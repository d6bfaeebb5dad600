// bench_decode_run (the decode loop of `pagoda bench`) on the CPU backend with make_model's
// "tiny" random model: greedy tokens with one step in flight (inputs fed by the backend) equal
// the synchronous loop's, and those equal the argmax of logits recomputed over the whole
// context; every batch is unchanged at its collect; an injected backend failure (a feed_idx out of range, a failing collect) returns
// -1 with no step left in flight.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/bench_decode.h"
#include "model/make_model.h"

#define NS 2     // sequences
#define PLEN 9   // prompt tokens, the same for every sequence (one pos0 for all, as in the bench)
#define NSTEP 12 // decode steps
#define BLK 16
#define PER 4    // blocks per sequence: 64 positions

// What a step's batch held at execute; compared at its collect (backend.h: the batch and all
// it points to stay unchanged until then; the CPU backend computes at execute and would not
// notice, a GPU would read a changed batch).
struct snap {
    const struct step_batch *b;
    struct step_batch copy;
    struct step_seq seqs[NS];
    int32_t tok[NS];
};

// The CPU backend behind a counting wrapper that can break one execute or one collect.
struct wrap {
    void *inner;
    int n_exec, n_coll;     // calls so far
    int in_flight, max_in_flight, n_fed;
    int bad_exec;           // this execute call gets sequence 0 fed from result index n_seqs (-1: none)
    int bad_collect;        // this collect call takes its step, then reports failure (-1: none)
    struct snap q[2];       // steps in flight, oldest at q_head
    int q_head, n_changed;  // batches found changed at their collect
};

static void snap_take(struct snap *p, const struct step_batch *b) {
    assert_true(b->n_seqs <= NS);
    p->b = b;
    memcpy(&p->copy, b, sizeof *b);
    memcpy(p->seqs, b->seqs, (size_t)b->n_seqs * sizeof *b->seqs);
    for (int i = 0; i < b->n_seqs; i++) p->tok[i] = b->seqs[i].tokens[0];
}

static bool snap_changed(const struct snap *p) {
    const struct step_batch *b = p->b;
    if (memcmp(&p->copy, b, sizeof *b) || memcmp(p->seqs, b->seqs, (size_t)b->n_seqs * sizeof *b->seqs)) return true;
    for (int i = 0; i < b->n_seqs; i++)
        if (p->tok[i] != b->seqs[i].tokens[0]) return true;
    return false;
}

static int w_execute(void *ctx, const struct step_batch *b, char *err) {
    struct wrap *w = ctx;
    struct step_seq ss[NS];
    struct step_batch bb = *b;
    if (w->n_exec++ == w->bad_exec) {
        assert_true(b->n_seqs <= NS);
        memcpy(ss, b->seqs, (size_t)b->n_seqs * sizeof *ss);
        ss[0].feed = true;
        ss[0].feed_idx = b->n_seqs;
        bb.seqs = ss;
    }
    if (backend_cpu.execute(w->inner, &bb, err)) return -1;
    assert_true(w->in_flight < 2);
    snap_take(&w->q[(w->q_head + w->in_flight) % 2], b);
    for (int i = 0; i < b->n_seqs; i++) w->n_fed += b->seqs[i].feed;
    if (++w->in_flight > w->max_in_flight) w->max_in_flight = w->in_flight;
    return 0;
}

static int w_collect(void *ctx, struct step_result *out, char *err) {
    struct wrap *w = ctx;
    if (w->in_flight > 0) {
        w->n_changed += snap_changed(&w->q[w->q_head]);
        w->q_head = (w->q_head + 1) % 2;
    }
    int rc = backend_cpu.collect(w->inner, out, err);
    if (!rc) w->in_flight--;
    if (w->n_coll++ == w->bad_collect && !rc) {
        pg_seterr(err, "injected collect failure");
        return -1;
    }
    return rc;
}

static const struct backend_ops wrap_ops = {.name = "wrap", .execute = w_execute, .collect = w_collect};

struct fixture {
    struct model_weights *w;
    int32_t prompt[NS][PLEN];
    int32_t bt[NS][PER];
    const int32_t *bts[NS];
};

static int setup(void **state) {
    struct fixture *f = calloc(1, sizeof *f);
    struct model_config mc;
    char err[PG_ERR_LEN] = "";
    if (make_model_config("tiny", false, &mc, err)) fail_msg("%s", err);
    mc.tie_embeddings = false; // tied, the random model's argmax is its input token: one token forever
    if (!(f->w = make_model_weights(&mc, 11, 1, err))) fail_msg("%s", err);
    for (int i = 0; i < NS; i++) {
        for (int j = 0; j < PLEN; j++) f->prompt[i][j] = (int32_t)(pg_mix64(100 * i + j) % (uint64_t)mc.vocab);
        for (int k = 0; k < PER; k++) f->bt[i][k] = i * PER + k;
        f->bts[i] = f->bt[i];
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    struct fixture *f = *state;
    make_model_free(f->w);
    free(f);
    return 0;
}

static void *cpu_init(const struct fixture *f, int max_inflight) {
    char err[PG_ERR_LEN] = "";
    struct backend_config bc = {.block_size = BLK, .num_blocks = NS * PER, .kv_dtype = PG_F32, .n_threads = 1,
                                .max_inflight = max_inflight};
    void *ctx;
    int nb;
    if (backend_cpu.init(&ctx, f->w, &bc, &nb, err)) fail_msg("%s", err);
    return ctx;
}

// Prefills every prompt (one synchronous step) and leaves each sequence's sample in last[].
static void prefill(const struct fixture *f, void *ctx, int32_t *last) {
    char err[PG_ERR_LEN] = "";
    struct sampling_params sp = {.top_p = 1, .repetition_penalty = 1, .logprobs = -1};
    struct step_seq ss[NS];
    int T = 0;
    for (int i = 0; i < NS; i++) {
        ss[i] = (struct step_seq){.n_new = PLEN, .tokens = f->prompt[i], .block_table = f->bt[i],
                                  .n_blocks = PER, .sample = true};
        ss[i].smp.params = &sp;
        T += PLEN;
    }
    struct step_batch b = {NS, ss, T};
    struct step_result res[NS];
    if (backend_cpu.execute(ctx, &b, err) || backend_cpu.collect(ctx, res, err)) fail_msg("%s", err);
    for (int i = 0; i < NS; i++) last[i] = res[i].token;
}

// Prefill, then NSTEP decode steps through the wrapper; returns bench_decode_run's status.
// first: [NS] the prefill's tokens; tokens: [NSTEP][NS]. Checks that no step is left in flight.
static int run(const struct fixture *f, bool pipelined, struct wrap *w, int32_t *first, int32_t *tokens, char *err) {
    w->inner = cpu_init(f, pipelined ? 2 : 0);
    int32_t last[NS];
    prefill(f, w->inner, last);
    memcpy(first, last, sizeof last);
    double t_step[NSTEP];
    struct bench_decode d = {.n_seqs = NS, .block_tables = f->bts, .n_blocks = PER, .pos0 = PLEN, .n_steps = NSTEP,
                             .pipelined = pipelined, .last = last, .tokens = tokens, .t_step = t_step};
    int rc = bench_decode_run(&wrap_ops, w, &d, err);
    assert_int_equal(w->in_flight, 0);
    assert_int_equal(w->n_changed, 0);
    char e2[PG_ERR_LEN] = "";
    struct step_result res[NS];
    assert_int_equal(backend_cpu.collect(w->inner, res, e2), -1); // the backend itself holds no step
    assert_non_null(strstr(e2, "collect without execute"));
    if (!rc) {
        for (int i = 0; i < NS; i++) assert_int_equal(last[i], tokens[(NSTEP - 1) * NS + i]);
        for (int k = 0; k < NSTEP; k++) assert_true(t_step[k] >= 0);
    }
    backend_cpu.free(w->inner);
    return rc;
}

static struct wrap wrap_new(void) {
    return (struct wrap){.bad_exec = -1, .bad_collect = -1};
}

// Oracle: each sequence's token k is the argmax of the logits over its whole context (prompt,
// the prefill's token, tokens 0..k-1), recomputed from position 0 without reusing the cache.
static void check_oracle(const struct fixture *f, const int32_t *first, const int32_t *tokens) {
    char err[PG_ERR_LEN] = "";
    void *ctx = cpu_init(f, 0);
    const int V = f->w->cfg.vocab;
    float *logits = malloc((size_t)V * sizeof *logits);
    struct sampling_params sp = {.top_p = 1, .repetition_penalty = 1, .logprobs = -1};
    for (int i = 0; i < NS; i++) {
        int32_t toks[PLEN + 1 + NSTEP];
        memcpy(toks, f->prompt[i], sizeof f->prompt[i]);
        toks[PLEN] = first[i];
        for (int k = 0; k < NSTEP; k++) {
            int n = PLEN + 1 + k;
            struct step_seq q = {.n_new = n, .tokens = toks, .block_table = f->bt[0], .n_blocks = PER, .sample = true};
            q.smp.params = &sp;
            struct step_batch b = {1, &q, n};
            if (backend_cpu.logits(ctx, &b, false, logits, err)) fail_msg("%s", err);
            int best = 0;
            for (int v = 1; v < V; v++)
                if (logits[v] > logits[best]) best = v;
            if (tokens[k * NS + i] != best) fail_msg("sequence %d step %d: decode %d, oracle %d", i, k, tokens[k * NS + i], best);
            toks[n] = best;
        }
    }
    free(logits);
    backend_cpu.free(ctx);
}

static void test_pipelined_equals_sync(void **state) {
    struct fixture *f = *state;
    char err[PG_ERR_LEN] = "";
    int32_t first_s[NS], first_p[NS], tok_s[NSTEP * NS], tok_p[NSTEP * NS];
    struct wrap ws = wrap_new(), wp = wrap_new();
    if (run(f, false, &ws, first_s, tok_s, err)) fail_msg("sync: %s", err);
    if (run(f, true, &wp, first_p, tok_p, err)) fail_msg("pipelined: %s", err);
    assert_memory_equal(first_s, first_p, sizeof first_s);
    for (int k = 0; k < NSTEP; k++)
        for (int i = 0; i < NS; i++)
            if (tok_s[k * NS + i] != tok_p[k * NS + i])
                fail_msg("sequence %d step %d: sync %d, pipelined %d", i, k, tok_s[k * NS + i], tok_p[k * NS + i]);
    // the runs were what they claim: one step at a time, vs. two in flight with every input
    // of steps 1.. fed by the backend
    assert_int_equal(ws.max_in_flight, 1);
    assert_int_equal(ws.n_fed, 0);
    assert_int_equal(wp.max_in_flight, 2);
    assert_int_equal(wp.n_fed, (NSTEP - 1) * NS);
    assert_int_equal(ws.n_exec, NSTEP);
    assert_int_equal(wp.n_coll, NSTEP);
    // a swapped or stale feed would show: the sequences differ and do not repeat one token
    bool differ = false, varied[NS] = {false};
    for (int k = 0; k < NSTEP; k++) {
        differ |= tok_s[k * NS] != tok_s[k * NS + 1];
        for (int i = 0; i < NS; i++) varied[i] |= tok_s[k * NS + i] != tok_s[i];
    }
    assert_true(differ);
    for (int i = 0; i < NS; i++) assert_true(varied[i]);
    check_oracle(f, first_s, tok_s);
}

// Failures at the first step, mid-run with a step in flight, and at the last collect: -1, the
// injected message kept (not the drain's), nothing left in flight (run checks), no leak (ASan).
static void test_errors_drain(void **state) {
    struct fixture *f = *state;
    struct {
        bool pipelined;
        int bad_exec, bad_collect;
        const char *msg;
    } cases[] = {
        {true, 0, -1, "feed_idx"},   // step 0: nothing in flight yet
        {true, 5, -1, "feed_idx"},   // step 5 refused while step 4 is in flight
        {true, -1, 3, "injected"},   // collect of step 3 fails while step 4 is in flight
        {true, -1, NSTEP - 1, "injected"}, // the final collect
        {false, 5, -1, "feed_idx"},
        {false, -1, 3, "injected"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char err[PG_ERR_LEN] = "";
        int32_t first[NS], tok[NSTEP * NS];
        struct wrap w = wrap_new();
        w.bad_exec = cases[c].bad_exec;
        w.bad_collect = cases[c].bad_collect;
        assert_int_equal(run(f, cases[c].pipelined, &w, first, tok, err), -1);
        if (!strstr(err, cases[c].msg)) fail_msg("case %zu: error \"%s\" lacks \"%s\"", c, err, cases[c].msg);
        // collect calls: a refused execute k leaves steps 0..k-1 collected (pipelined, step k - 1
        // by the drain); a failed collect k also drains step k + 1 when pipelined and k + 1 ran
        int k = cases[c].bad_exec >= 0 ? cases[c].bad_exec : cases[c].bad_collect;
        int want = cases[c].bad_exec >= 0 ? k : cases[c].pipelined && k < NSTEP - 1 ? k + 2 : k + 1;
        assert_int_equal(w.n_coll, want);
    }
}

static void test_bad_args(void **state) {
    char err[PG_ERR_LEN] = "";
    struct wrap w = wrap_new();
    int32_t last[1] = {0};
    struct bench_decode d = {.n_seqs = 1, .n_steps = 0, .last = last};
    assert_int_equal(bench_decode_run(&wrap_ops, &w, &d, err), -1);
    assert_int_equal(w.n_exec, 0);
    assert_non_null(strstr(err, "steps"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_equals_sync),
        cmocka_unit_test(test_errors_drain),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
