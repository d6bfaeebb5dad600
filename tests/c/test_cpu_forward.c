// CPU backend forward vs the golden fixtures in tests/fixtures/models/ (see its README):
// one-shot prompts, a batch of sequences of different lengths with scattered KV blocks,
// chunked prefill + decode against every-position logits, bf16 KV cache, greedy tokens.
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/backend.h"

#define FIX "tests/fixtures/models/"
#define BS 4 // small blocks so prompts span many

struct fixture {
    char dir[256];
    struct model_weights *w;
    int vocab, n_prompts, full;
    int32_t *prompts[8];
    int lens[8];
    float *last, *fullref, *bf16run; // [n_prompts, vocab], [lens[full], vocab], optional
    int greedy[8];
};

static float *read_f32(const char *dir, const char *name, size_t n) {
    char *p = pg_path_join(dir, name);
    size_t len = 0;
    char *buf = pg_read_file(p, &len, NULL);
    free(p);
    if (!buf) return NULL;
    assert_int_equal(len, n * sizeof(float));
    float *f = pg_malloc(len);
    memcpy(f, buf, len);
    free(buf);
    return f;
}

static void fixture_load(struct fixture *fx, const char *name) {
    memset(fx, 0, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, FIX "%s", name);
    char err[PG_ERR_LEN];
    fx->w = model_load(fx->dir, err);
    if (!fx->w) fail_msg("%s", err);
    char *rp = pg_path_join(fx->dir, "ref.json");
    json_t *r = json_load_file(rp, 0, NULL);
    free(rp);
    assert_non_null(r);
    fx->vocab = (int)json_integer_value(json_object_get(r, "vocab"));
    assert_int_equal(fx->vocab, fx->w->cfg.vocab);
    json_t *ps = json_object_get(r, "prompts"), *gr = json_object_get(r, "greedy_next");
    fx->n_prompts = (int)json_array_size(ps);
    assert_true(fx->n_prompts > 0 && fx->n_prompts <= 8);
    for (int i = 0; i < fx->n_prompts; i++) {
        json_t *p = json_array_get(ps, i);
        fx->lens[i] = (int)json_array_size(p);
        fx->prompts[i] = pg_malloc((size_t)fx->lens[i] * sizeof(int32_t));
        for (int t = 0; t < fx->lens[i]; t++) fx->prompts[i][t] = (int32_t)json_integer_value(json_array_get(p, t));
        fx->greedy[i] = (int)json_integer_value(json_array_get(gr, i));
    }
    fx->full = (int)json_integer_value(json_object_get(r, "full_prompt"));
    fx->last = read_f32(fx->dir, "ref_last.bin", (size_t)fx->n_prompts * fx->vocab);
    fx->fullref = read_f32(fx->dir, "ref_full.bin", (size_t)fx->lens[fx->full] * fx->vocab);
    if (json_object_get(r, "bf16run_last"))
        fx->bf16run = read_f32(fx->dir, "ref_bf16run_last.bin", (size_t)fx->n_prompts * fx->vocab);
    assert_non_null(fx->last);
    assert_non_null(fx->fullref);
    json_decref(r);
}

static void fixture_free(struct fixture *fx) {
    for (int i = 0; i < fx->n_prompts; i++) free(fx->prompts[i]);
    free(fx->last);
    free(fx->fullref);
    free(fx->bf16run);
    model_free(fx->w);
}

// max |a - b| / max |b| over n values
static double rel_err(const float *a, const float *b, int n) {
    double md = 0, mb = 0;
    for (int i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / (mb > 0 ? mb : 1);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void *backend(struct fixture *fx, enum pg_dtype kv, int num_blocks) {
    struct backend_config bc = {.block_size = BS, .num_blocks = num_blocks, .kv_dtype = kv, .n_threads = 2};
    void *ctx;
    int nb;
    char err[PG_ERR_LEN];
    if (backend_cpu.init(&ctx, fx->w, &bc, &nb, err)) fail_msg("%s", err);
    assert_int_equal(nb, num_blocks);
    return ctx;
}

static void check_row(const float *got, const float *want, int vocab, double tol, const char *what, const char *name) {
    double e = rel_err(got, want, vocab);
    if (!(e <= tol)) fail_msg("%s %s: rel error %.3g > %.3g", name, what, e, tol);
}

// Each prompt alone, blocks 0.. in order.
static void one_shot(struct fixture *fx, void *ctx, double tol, const float *ref, const char *tag) {
    float *lg = pg_malloc((size_t)fx->vocab * sizeof *lg);
    int32_t bt[64];
    for (int i = 0; i < 64; i++) bt[i] = i;
    char err[PG_ERR_LEN];
    for (int p = 0; p < fx->n_prompts; p++) {
        struct step_seq s = {.n_new = fx->lens[p], .tokens = fx->prompts[p], .block_table = bt, .n_blocks = 64};
        struct step_batch b = {1, &s, s.n_new};
        if (backend_cpu.logits(ctx, &b, false, lg, err)) fail_msg("%s", err);
        char what[64];
        snprintf(what, sizeof what, "%s prompt %d (len %d)", tag, p, fx->lens[p]);
        check_row(lg, ref + (size_t)p * fx->vocab, fx->vocab, tol, what, fx->dir);
        const float *r = ref + (size_t)p * fx->vocab;
        int g = argmax(r, fx->vocab);
        float second = -INFINITY;
        for (int i = 0; i < fx->vocab; i++)
            if (i != g && r[i] > second) second = r[i];
        if (r[g] - second > 1e-3f * fabsf(r[g])) assert_int_equal(argmax(lg, fx->vocab), g);
    }
    free(lg);
}

// All prompts in one batch; block ids taken from a shuffled pool (non-contiguous, out of order).
static void batched_scattered(struct fixture *fx, void *ctx, int num_blocks, double tol) {
    int32_t pool[512], *bts[8];
    assert_true(num_blocks <= 512);
    for (int i = 0; i < num_blocks; i++) pool[i] = i;
    uint64_t st = 42;
    for (int i = num_blocks - 1; i > 0; i--) {
        st = pg_mix64(st);
        int j = (int)(st % (uint64_t)(i + 1));
        int32_t t = pool[i]; pool[i] = pool[j]; pool[j] = t;
    }
    struct step_seq seqs[8];
    int used = 0, total = 0;
    for (int p = 0; p < fx->n_prompts; p++) {
        int nb = (fx->lens[p] + BS - 1) / BS;
        bts[p] = pool + used;
        used += nb;
        assert_true(used <= num_blocks);
        seqs[p] = (struct step_seq){.n_new = fx->lens[p], .tokens = fx->prompts[p], .block_table = bts[p], .n_blocks = nb};
        total += fx->lens[p];
    }
    struct step_batch b = {fx->n_prompts, seqs, total};
    float *lg = pg_malloc((size_t)fx->n_prompts * fx->vocab * sizeof *lg);
    char err[PG_ERR_LEN];
    if (backend_cpu.logits(ctx, &b, false, lg, err)) fail_msg("%s", err);
    for (int p = 0; p < fx->n_prompts; p++)
        check_row(lg + (size_t)p * fx->vocab, fx->last + (size_t)p * fx->vocab, fx->vocab, tol, "batched", fx->dir);
    free(lg);
}

// The full prompt in chunks (5, 1, 7, rest one token at a time), every position checked;
// a second sequence decodes alongside in the same steps to mix batch shapes.
static void chunked(struct fixture *fx, void *ctx, double tol) {
    int f = fx->full, n = fx->lens[f];
    const int32_t *toks = fx->prompts[f];
    int32_t bt[16] = {7, 3, 11, 0, 9, 1, 14, 5, 2, 13, 4, 8, 6, 10, 12, 15};
    int32_t bt2[16] = {16, 20, 17, 19, 18, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    int chunks[32] = {5, 1, 7}, nc = 3, done = 0;
    for (int s = 13; s < n; s++) chunks[nc++] = 1;
    float *lg = pg_malloc((size_t)2 * 8 * fx->vocab * sizeof *lg);
    char err[PG_ERR_LEN];
    int p2 = 1, done2 = 0; // the second prompt, fed one token per step
    for (int c = 0; c < nc; c++) {
        struct step_seq s[2] = {{.n_new = chunks[c], .tokens = toks + done, .pos0 = done, .block_table = bt, .n_blocks = 16}};
        int ns = 1;
        if (done2 < fx->lens[p2]) {
            s[1] = (struct step_seq){.n_new = 1, .tokens = fx->prompts[p2] + done2, .pos0 = done2, .block_table = bt2, .n_blocks = 16};
            ns = 2;
        }
        struct step_batch b = {ns, s, chunks[c] + (ns == 2)};
        if (backend_cpu.logits(ctx, &b, true, lg, err)) fail_msg("%s", err);
        for (int t = 0; t < chunks[c]; t++) {
            char what[64];
            snprintf(what, sizeof what, "chunked position %d", done + t);
            check_row(lg + (size_t)t * fx->vocab, fx->fullref + (size_t)(done + t) * fx->vocab, fx->vocab, tol, what, fx->dir);
        }
        if (ns == 2 && ++done2 == fx->lens[p2])
            check_row(lg + (size_t)chunks[c] * fx->vocab, fx->last + (size_t)p2 * fx->vocab, fx->vocab, tol, "decode seq", fx->dir);
        done += chunks[c];
    }
    assert_int_equal(done, n);
    // prefix caching: a new sequence with the same prompt shares the first two blocks
    // (8 positions) computed above and only computes the rest, into fresh blocks
    int32_t bt3[8] = {bt[0], bt[1], 40, 45, 41, 44, 42, 43};
    struct step_seq s3 = {.n_new = n - 2 * BS, .tokens = toks + 2 * BS, .pos0 = 2 * BS, .block_table = bt3, .n_blocks = 8};
    struct step_batch b3 = {1, &s3, s3.n_new};
    float *lg3 = pg_malloc((size_t)n * fx->vocab * sizeof *lg3);
    if (backend_cpu.logits(ctx, &b3, true, lg3, err)) fail_msg("%s", err);
    for (int t = 0; t < s3.n_new; t++)
        check_row(lg3 + (size_t)t * fx->vocab, fx->fullref + (size_t)(2 * BS + t) * fx->vocab, fx->vocab, tol, "prefix-cached", fx->dir);
    free(lg3);
    free(lg);
}

static void run_fixture(void **state) {
    const char *name = *state;
    struct fixture fx;
    fixture_load(&fx, name);
    int nb = 64;
    void *ctx = backend(&fx, PG_F32, nb);
    // references are computed in float32 on the stored values, so every dtype matches tightly
    one_shot(&fx, ctx, 1e-4, fx.last, "f32kv");
    batched_scattered(&fx, ctx, nb, 1e-4);
    chunked(&fx, ctx, 1e-4);
    if (fx.bf16run) one_shot(&fx, ctx, 2e-2, fx.bf16run, "vs bf16 transformers run");
    backend_cpu.free(ctx);
    ctx = backend(&fx, PG_BF16, nb);
    one_shot(&fx, ctx, 2e-2, fx.last, "bf16kv");
    backend_cpu.free(ctx);
    fixture_free(&fx);
}

// generate-style greedy decode: the first token must be the reference's greedy token.
static void test_execute_greedy(void **state) {
    (void)state;
    struct fixture fx;
    fixture_load(&fx, "qwen2_f32");
    void *ctx = backend(&fx, PG_F32, 64);
    struct sampling_params sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .logprobs = 3};
    int32_t bt[64];
    for (int i = 0; i < 64; i++) bt[i] = 63 - i;
    char err[PG_ERR_LEN];
    for (int p = 0; p < fx.n_prompts; p++) {
        struct step_seq s = {.n_new = fx.lens[p], .tokens = fx.prompts[p], .block_table = bt, .n_blocks = 64, .sample = true};
        s.smp = (struct sample_input){.params = &sp, .prompt = fx.prompts[p], .n_prompt = fx.lens[p]};
        struct step_batch b = {1, &s, s.n_new};
        struct step_result r;
        if (backend_cpu.execute(ctx, &b, err) || backend_cpu.collect(ctx, &r, err)) fail_msg("%s", err);
        assert_int_equal(r.token, fx.greedy[p]);
        assert_int_equal(r.n_top, 3);
        assert_int_equal(r.top_ids[0], r.token);
        assert_true(r.logprob <= 0 && r.logprob == r.top_logprobs[0]);
    }
    // a mixed batch: a prefill chunk that does not sample, then two sampling sequences
    int32_t bt2[64];
    for (int i = 0; i < 64; i++) bt2[i] = i;
    struct step_seq ms[3] = {
        {.n_new = 5, .tokens = fx.prompts[3], .block_table = bt2, .n_blocks = 20},
        {.n_new = fx.lens[2], .tokens = fx.prompts[2], .block_table = bt2 + 20, .n_blocks = 20, .sample = true},
        {.n_new = fx.lens[1], .tokens = fx.prompts[1], .block_table = bt2 + 40, .n_blocks = 20, .sample = true}};
    ms[1].smp = (struct sample_input){.params = &sp};
    ms[2].smp = (struct sample_input){.params = &sp};
    struct step_batch mb = {3, ms, 5 + fx.lens[2] + fx.lens[1]};
    struct step_result mr[3];
    if (backend_cpu.execute(ctx, &mb, err) || backend_cpu.collect(ctx, mr, err)) fail_msg("%s", err);
    assert_int_equal(mr[0].token, fx.greedy[2]);
    assert_int_equal(mr[1].token, fx.greedy[1]);
    // bad batches: a clear error, no crash
    int32_t bad_tok = 5000, tok = 1, bad_bt = 64;
    struct step_seq s = {.n_new = 1, .tokens = &bad_tok, .block_table = bt, .n_blocks = 64};
    struct step_batch b = {1, &s, 1};
    float *lg = pg_malloc((size_t)fx.vocab * sizeof *lg);
    assert_int_equal(backend_cpu.logits(ctx, &b, false, lg, err), -1);
    assert_non_null(strstr(err, "vocabulary"));
    s.tokens = &tok;
    s.block_table = &bad_bt;
    s.n_blocks = 1;
    assert_int_equal(backend_cpu.logits(ctx, &b, false, lg, err), -1);
    assert_non_null(strstr(err, "block id"));
    s.block_table = bt;
    s.pos0 = 10;
    s.n_blocks = 2;
    assert_int_equal(backend_cpu.logits(ctx, &b, false, lg, err), -1);
    free(lg);
    backend_cpu.free(ctx);
    fixture_free(&fx);
}

#define FX(n) {n, run_fixture, NULL, NULL, (void *)n}

int main(void) {
    const struct CMUnitTest tests[] = {
        FX("qwen2_f32"),
        FX("llama_bf16_sharded"),
        FX("qwen2_bf16_tied"),
        FX("gptq_q4_g128_sym"),
        FX("gptq_q4_g32_asym"),
        FX("gptq_q4_g32_descact"),
        FX("gptq_q8_g64_sym_v2"),
        FX("gptq_q4_gall_asym_v2"),
        FX("llama_gptq_q8_g128_asym_descact_qcfg"),
        cmocka_unit_test(test_execute_greedy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
