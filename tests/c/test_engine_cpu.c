// The engine on the real CPU backend with the tiny fixture models (tests/fixtures/models):
// greedy outputs through the engine (continuous batching, chunked prefill, prefix caching,
// preemption, async scheduling) equal greedy decoding one sequence at a time, where each
// token is the argmax of logits recomputed over the whole context (no KV cache reuse).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "engine/engine_offline.h"
#include "model/weights.h"

#define NREQ 12
#define MAXOUT 12

static int32_t g_prompts[NREQ][64];
static int g_len[NREQ];
static int32_t g_want[NREQ][MAXOUT];

static void make_prompts(int vocab) {
    for (int i = 0; i < NREQ; i++) {
        g_len[i] = 1 + (i * 19) % 50;
        uint64_t x = 7 + (uint64_t)(i % 3); // three shared 20-token prefixes
        for (int j = 0; j < g_len[i]; j++) {
            if (j == 20) x = 1000 + (uint64_t)i;
            x = pg_mix64(x);
            g_prompts[i][j] = (int32_t)(x % (uint64_t)vocab);
        }
    }
}

// Oracle: every token from logits over the full context, positions 0..n-1, fresh each time.
static void oracle(const struct model_weights *w, int vocab) {
    char err[PG_ERR_LEN] = "";
    struct backend_config bc = {.block_size = 16, .num_blocks = 8, .kv_dtype = PG_F32, .n_threads = 1};
    void *ctx;
    int nb;
    if (backend_cpu.init(&ctx, w, &bc, &nb, err)) fail_msg("%s", err);
    int32_t bt[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    float *logits = malloc((size_t)vocab * sizeof *logits);
    struct sampling_params sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .logprobs = -1};
    for (int i = 0; i < NREQ; i++) {
        int32_t toks[128];
        memcpy(toks, g_prompts[i], (size_t)g_len[i] * sizeof *toks);
        int n = g_len[i];
        for (int k = 0; k < MAXOUT; k++) {
            struct step_seq sq = {.n_new = n, .tokens = toks, .pos0 = 0, .block_table = bt,
                                  .n_blocks = (n + 15) / 16, .sample = true};
            sq.smp = (struct sample_input){.params = &sp};
            struct step_batch b = {1, &sq, n};
            if (backend_cpu.logits(ctx, &b, false, logits, err)) fail_msg("%s", err);
            int best = 0;
            for (int v = 1; v < vocab; v++)
                if (logits[v] > logits[best]) best = v;
            toks[n++] = best;
            g_want[i][k] = best;
        }
    }
    free(logits);
    backend_cpu.free(ctx);
}

struct cfgopt {
    bool caching, chunked, async;
    int budget, num_blocks, block_size;
};

static void run_engine(const struct model_weights *w, struct cfgopt o) {
    char err[PG_ERR_LEN] = "";
    struct backend_config bc = {.block_size = o.block_size, .num_blocks = o.num_blocks,
                                .kv_dtype = PG_F32, .n_threads = 2,
                                .max_inflight = o.async ? 2 : 1}; // engine_pipeline_depth
    void *ctx;
    int nb;
    if (backend_cpu.init(&ctx, w, &bc, &nb, err)) fail_msg("%s", err);
    struct engine_config ec;
    engine_config_defaults(&ec);
    ec.block_size = o.block_size;
    ec.max_model_len = 64;
    ec.enable_prefix_caching = o.caching;
    ec.enable_chunked_prefill = o.chunked;
    ec.async_scheduling = o.async;
    ec.max_num_batched_tokens = o.budget;
    struct engine *e = engine_create(&ec, &w->cfg, &backend_cpu, ctx, nb, NULL, err);
    if (!e) fail_msg("%s", err);
    struct gen_request reqs[NREQ];
    for (int i = 0; i < NREQ; i++) {
        gen_request_defaults(&reqs[i]);
        reqs[i].prompt = g_prompts[i];
        reqs[i].n_prompt = g_len[i];
        reqs[i].sp.temperature = 0;
        reqs[i].max_tokens = 1 + (i * 5) % MAXOUT;
        reqs[i].ignore_eos = true;
    }
    struct offline_result res[NREQ];
    if (engine_run_offline(e, reqs, NREQ, res, err)) fail_msg("%s", err);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(res[i].n, 1);
        assert_int_equal(res[i].seqs[0].n_tokens, reqs[i].max_tokens);
        for (int k = 0; k < reqs[i].max_tokens; k++)
            if (res[i].seqs[0].tokens[k] != g_want[i][k])
                fail_msg("request %d token %d: engine %d, oracle %d (caching %d chunked %d async %d "
                         "blocks %d)", i, k, res[i].seqs[0].tokens[k], g_want[i][k], o.caching,
                         o.chunked, o.async, o.num_blocks);
    }
    struct engine_stats st;
    engine_stats(e, &st);
    assert_int_equal(st.num_free_blocks, st.num_blocks);
    if (o.caching) assert_true(st.prefix_hits > 0);
    if (o.num_blocks < 20) assert_true(st.num_preemptions > 0);
    if (o.async) { // depth 2: decode steps were launched ahead, their inputs fed by the backend
        assert_true(st.fed_seqs > 0);
        assert_true(st.steps_ahead > 0);
    }
    offline_results_free(res, NREQ);
    engine_free(e);
    backend_cpu.free(ctx);
}

static void check_fixture(const char *dir) {
    char err[PG_ERR_LEN] = "";
    struct model_weights *w = model_load(dir, err);
    if (!w) fail_msg("%s", err);
    make_prompts(w->cfg.vocab);
    oracle(w, w->cfg.vocab);
    struct cfgopt base = {.caching = true, .chunked = true, .budget = 64, .num_blocks = 200, .block_size = 4};
    run_engine(w, base);
    struct cfgopt o = base;
    o.caching = false;
    o.budget = 16;
    run_engine(w, o);
    o = base;
    o.num_blocks = 18; // 72 token slots: forced preemption
    run_engine(w, o);
    o.async = true;
    run_engine(w, o);
    o = base;
    o.async = true; // pipelined without preemption: mostly fed decode steps
    run_engine(w, o);
    o = base;
    o.chunked = false;
    o.block_size = 16;
    o.num_blocks = 40;
    run_engine(w, o);
    model_free(w);
}

static void test_qwen2_f32(void **state) {
    (void)state;
    check_fixture("tests/fixtures/models/qwen2_f32");
}

static void test_llama_bf16(void **state) {
    (void)state;
    check_fixture("tests/fixtures/models/llama_bf16_sharded");
}

static void test_gptq(void **state) {
    (void)state;
    check_fixture("tests/fixtures/models/gptq_q4_g32_asym");
}

// A seeded request samples the same tokens alone and inside a batch (counter-based draws).
static void test_seed_batch_invariant(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct model_weights *w = model_load("tests/fixtures/models/qwen2_f32", err);
    if (!w) fail_msg("%s", err);
    make_prompts(w->cfg.vocab);
    struct backend_config bc = {.block_size = 4, .num_blocks = 200, .kv_dtype = PG_F32, .n_threads = 2};
    void *ctx;
    int nb;
    if (backend_cpu.init(&ctx, w, &bc, &nb, err)) fail_msg("%s", err);
    struct engine_config ec;
    engine_config_defaults(&ec);
    ec.block_size = 4;
    ec.max_model_len = 64;
    struct engine *e = engine_create(&ec, &w->cfg, &backend_cpu, ctx, nb, NULL, err);
    struct gen_request reqs[NREQ];
    for (int i = 0; i < NREQ; i++) {
        gen_request_defaults(&reqs[i]);
        reqs[i].prompt = g_prompts[i];
        reqs[i].n_prompt = g_len[i];
        reqs[i].sp.temperature = 1.0f;
        reqs[i].sp.top_p = 0.9f;
        reqs[i].sp.seed = 1234 + (uint64_t)i;
        reqs[i].seeded = true;
        reqs[i].max_tokens = MAXOUT;
        reqs[i].ignore_eos = true;
    }
    struct offline_result alone[NREQ], batch[NREQ];
    for (int i = 0; i < NREQ; i++)
        if (engine_run_offline(e, &reqs[i], 1, &alone[i], err)) fail_msg("%s", err);
    if (engine_run_offline(e, reqs, NREQ, batch, err)) fail_msg("%s", err);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(alone[i].seqs[0].n_tokens, MAXOUT);
        assert_memory_equal(alone[i].seqs[0].tokens, batch[i].seqs[0].tokens, MAXOUT * sizeof(int32_t));
        offline_results_free(&alone[i], 1);
    }
    offline_results_free(batch, NREQ);
    engine_free(e);
    backend_cpu.free(ctx);
    model_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen2_f32),
        cmocka_unit_test(test_llama_bf16),
        cmocka_unit_test(test_gptq),
        cmocka_unit_test(test_seed_batch_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
