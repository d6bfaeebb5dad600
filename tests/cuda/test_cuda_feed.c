// GPU test of the device-side token feed (pipelining): the real CUDA backend on a small random
// model decodes 3 sequences for 24 steps (a) classically, host tokens, execute + collect each
// step, and (b) pipelined at max_inflight 2, step n+1 executed with feeds before step n is
// collected. The token streams must be identical, through the decode graphs and with
// --enforce-eager, with one sequence sampled with a seed at temperature 0.8. The batch order
// rotates every step, so a feed's result index differs from the sequence's batch index.
// Also: the feed rules are enforced (no previous step, n_new != 1, feed_idx out of range).
#include "cuda_test_util.h"
#include "backend/backend.h"
#include "model/make_model.h"

extern const struct backend_ops backend_cuda;

enum { NS = 3, STEPS = 24, BS = 16 };

struct run {
    void *ctx;
    struct sampling_params sp[NS];
    int32_t prompt[NS][32];
    int n_prompt[NS];
    int32_t bt[NS][64];
    int32_t out[NS][STEPS];  // out[i][k]: output k of sequence i
};

static void run_init(struct run *r, const struct model_weights *w, bool eager) {
    struct backend_config bc;
    memset(&bc, 0, sizeof bc);
    bc.block_size = BS;
    bc.num_blocks = 256;
    bc.kv_dtype = PG_BF16;
    bc.max_num_seqs = 8;
    bc.max_num_batched_tokens = 256;
    bc.max_model_len = 512;
    bc.enforce_eager = eager;
    bc.tensor_parallel_size = 1;
    bc.max_inflight = 2;
    int nb = 0;
    char err[PG_ERR_LEN] = "";
    if (backend_cuda.init(&r->ctx, w, &bc, &nb, err)) fail_msg("init: %s", err);
    for (int i = 0; i < NS; i++) {
        memset(&r->sp[i], 0, sizeof r->sp[i]);
        r->sp[i].top_p = 1;
        r->sp[i].repetition_penalty = 1;
        r->sp[i].logprobs = -1;
        r->n_prompt[i] = 5 + 7 * i;
        for (int j = 0; j < r->n_prompt[i]; j++) r->prompt[i][j] = (int32_t)(urand() % (uint32_t)w->cfg.vocab);
        for (int j = 0; j < 64; j++) r->bt[i][j] = 200 - 64 * i - j;  // disjoint, out of order
    }
    r->sp[1].temperature = 0.8f;  // seeded sampling beside greedy ones
    r->sp[1].seed = 1234;
}

// Sequence at batch position j of step k (the order rotates every step).
static int seq_at(int k, int j) { return (k + j) % NS; }
static int pos_of(int k, int i) { return (i - k % NS + NS) % NS; }

static struct step_seq mk_seq(struct run *r, int i, const int32_t *toks, int n, int pos0, int k) {
    struct step_seq s;
    memset(&s, 0, sizeof s);
    s.n_new = n;
    s.tokens = toks;
    s.pos0 = pos0;
    s.block_table = r->bt[i];
    s.n_blocks = (pos0 + n + BS - 1) / BS;
    s.sample = true;
    s.smp.params = &r->sp[i];
    s.smp.step = (uint64_t)k;
    s.smp.prompt = r->prompt[i];
    s.smp.n_prompt = r->n_prompt[i];
    return s;
}

// Step 0: the prompts in batch order seq_at(0, j).
static void prefill_batch(struct run *r, struct step_seq *seqs, struct step_batch *b) {
    b->n_seqs = NS;
    b->seqs = seqs;
    b->n_tokens = 0;
    for (int j = 0; j < NS; j++) {
        int i = seq_at(0, j);
        seqs[j] = mk_seq(r, i, r->prompt[i], r->n_prompt[i], 0, 0);
        b->n_tokens += r->n_prompt[i];
    }
}

static void store(struct run *r, int k, const struct step_result *res) {
    for (int j = 0; j < NS; j++) r->out[seq_at(k, j)][k] = res[j].token;
}

// (a) host tokens, execute + collect every step.
static void run_classic(struct run *r) {
    char err[PG_ERR_LEN] = "";
    struct step_seq seqs[NS];
    struct step_batch b;
    struct step_result res[NS];
    int32_t in[NS];
    prefill_batch(r, seqs, &b);
    if (backend_cuda.execute(r->ctx, &b, err) || backend_cuda.collect(r->ctx, res, err)) fail_msg("step 0: %s", err);
    store(r, 0, res);
    for (int k = 1; k < STEPS; k++) {
        for (int j = 0; j < NS; j++) {
            int i = seq_at(k, j);
            in[j] = r->out[i][k - 1];
            seqs[j] = mk_seq(r, i, &in[j], 1, r->n_prompt[i] + k - 1, k);
        }
        b = (struct step_batch){NS, seqs, NS};
        if (backend_cuda.execute(r->ctx, &b, err) || backend_cuda.collect(r->ctx, res, err))
            fail_msg("step %d: %s", k, err);
        store(r, k, res);
    }
}

// (b) step k is executed with feeds (from step k-1's results) before step k-1 is collected.
static void run_pipelined(struct run *r) {
    char err[PG_ERR_LEN] = "";
    struct step_seq seqs[2][NS];  // two batches in flight: each stays intact until collected
    struct step_batch b[2];
    struct step_result res[NS];
    static const int32_t placeholder[NS] = {-1, -1, -1};
    prefill_batch(r, seqs[0], &b[0]);
    if (backend_cuda.execute(r->ctx, &b[0], err)) fail_msg("step 0: %s", err);
    for (int k = 1; k < STEPS; k++) {
        struct step_seq *s = seqs[k % 2];
        for (int j = 0; j < NS; j++) {
            int i = seq_at(k, j);
            s[j] = mk_seq(r, i, &placeholder[j], 1, r->n_prompt[i] + k - 1, k);
            s[j].feed = true;
            s[j].feed_idx = pos_of(k - 1, i);  // its result index in step k-1
        }
        b[k % 2] = (struct step_batch){NS, s, NS};
        if (backend_cuda.execute(r->ctx, &b[k % 2], err)) fail_msg("step %d: %s", k, err);
        if (backend_cuda.collect(r->ctx, res, err)) fail_msg("collect %d: %s", k - 1, err);
        store(r, k - 1, res);
    }
    if (backend_cuda.collect(r->ctx, res, err)) fail_msg("collect last: %s", err);
    store(r, STEPS - 1, res);
}

static void feed_case(bool eager) {
    char err[PG_ERR_LEN] = "";
    struct model_config mc;
    assert_int_equal(make_model_config("tiny", false, &mc, err), 0);
    struct model_weights *w = make_model_weights(&mc, 7, 0, err);
    assert_non_null(w);
    rng_seed(99);
    struct run a, p;
    run_init(&a, w, eager);
    rng_seed(99);
    run_init(&p, w, eager);
    run_classic(&a);
    run_pipelined(&p);
    int same = 0;
    for (int i = 0; i < NS; i++)
        for (int k = 0; k < STEPS; k++) same += a.out[i][k] == p.out[i][k];
    printf("  %s: %d/%d tokens equal (classic vs pipelined with feeds)\n", eager ? "eager" : "graphs", same,
           NS * STEPS);
    for (int i = 0; i < NS; i++) assert_memory_equal(a.out[i], p.out[i], sizeof a.out[i]);
    backend_cuda.free(a.ctx);
    backend_cuda.free(p.ctx);
    make_model_free(w);
}

static void test_feed_graphs(void **state) {
    (void)state;
    feed_case(false);
}

static void test_feed_eager(void **state) {
    (void)state;
    feed_case(true);
}

// A feed without a previous step, with n_new != 1 or with feed_idx out of range is refused.
static void test_feed_rules(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct model_config mc;
    assert_int_equal(make_model_config("tiny", false, &mc, err), 0);
    struct model_weights *w = make_model_weights(&mc, 7, 0, err);
    struct run r;
    run_init(&r, w, true);
    static const int32_t ph[2] = {-1, -1};
    struct step_seq s = mk_seq(&r, 0, ph, 1, r.n_prompt[0], 1);
    s.feed = true;
    struct step_batch b = {1, &s, 1};
    assert_int_not_equal(backend_cuda.execute(r.ctx, &b, err), 0);  // no previous step
    printf("  refused: %s\n", err);
    struct step_seq seqs[NS];
    struct step_result res[NS];
    prefill_batch(&r, seqs, &b);
    if (backend_cuda.execute(r.ctx, &b, err) || backend_cuda.collect(r.ctx, res, err)) fail_msg("prefill: %s", err);
    b = (struct step_batch){1, &s, 1};
    s.feed_idx = NS;  // the previous step has NS results
    assert_int_not_equal(backend_cuda.execute(r.ctx, &b, err), 0);
    printf("  refused: %s\n", err);
    // a refused step leaves no previous step: run the prefill again, then n_new 2
    prefill_batch(&r, seqs, &b);
    if (backend_cuda.execute(r.ctx, &b, err) || backend_cuda.collect(r.ctx, res, err)) fail_msg("prefill: %s", err);
    s = mk_seq(&r, 0, ph, 2, r.n_prompt[0], 1);
    s.feed = true;
    b = (struct step_batch){1, &s, 2};
    assert_int_not_equal(backend_cuda.execute(r.ctx, &b, err), 0);
    printf("  refused: %s\n", err);
    backend_cuda.free(r.ctx);
    make_model_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feed_graphs),
        cmocka_unit_test(test_feed_eager),
        cmocka_unit_test(test_feed_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
