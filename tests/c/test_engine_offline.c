// Offline runner (engine_run_offline) and JSON sampling parameters (gen_request_from_json).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/sampling.h"
#include "engine/engine_offline.h"
#include "model/config.h"
#include "test_engine_backend.h"

#define VOCAB 50
#define EOS 1

static void test_run_offline(void **state) {
    (void)state;
    struct model_config m = tb_model_config(VOCAB, 128, EOS);
    struct engine_config cfg = tb_engine_config(128);
    cfg.max_num_batched_tokens = 32;
    struct tb *t = tb_new(80, 4, VOCAB);
    char err[PG_ERR_LEN] = "";
    struct engine *e = engine_create(&cfg, &m, &tb_ops, t, 80, NULL, err);
    assert_non_null(e);
    enum { N = 20 };
    static int32_t prompts[N][60];
    struct gen_request reqs[N];
    for (int i = 0; i < N; i++) {
        int len = 5 + (i * 11) % 50;
        for (int j = 0; j < len; j++) prompts[i][j] = 2 + (int32_t)(pg_mix64((uint64_t)(i * 100 + j)) % 40);
        gen_request_defaults(&reqs[i]);
        reqs[i].prompt = prompts[i];
        reqs[i].n_prompt = len;
        reqs[i].sp.temperature = 0;
        reqs[i].max_tokens = 1 + i % 17;
        reqs[i].n = i % 6 == 0 ? 2 : 1;
        reqs[i].sp.logprobs = i % 4 == 0 ? 2 : -1;
    }
    reqs[7].sp.top_p = 2; // rejected: the rest still run
    struct offline_result res[N];
    assert_int_equal(engine_run_offline(e, reqs, N, res, err), 0);
    for (int i = 0; i < N; i++) {
        if (i == 7) {
            assert_int_equal(res[i].n, 0);
            assert_non_null(strstr(res[i].error, "top_p"));
            continue;
        }
        assert_int_equal(res[i].n, reqs[i].n);
        // oracle: greedy, one token at a time
        int32_t toks[200];
        memcpy(toks, prompts[i], (size_t)reqs[i].n_prompt * sizeof *toks);
        int n = reqs[i].n_prompt, k = 0;
        int32_t want[64];
        for (;;) {
            struct sample_input in = {.params = &reqs[i].sp, .step = (uint64_t)k};
            int32_t tok = ref_next(toks, n, &in, VOCAB);
            toks[n++] = tok;
            want[k++] = tok;
            if (tok == EOS || k >= reqs[i].max_tokens) break;
        }
        for (int j = 0; j < res[i].n; j++) {
            struct offline_seq *s = &res[i].seqs[j];
            assert_int_equal(s->n_tokens, k);
            assert_memory_equal(s->tokens, want, (size_t)k * sizeof *want);
            assert_int_equal(s->finish, want[k - 1] == EOS ? FINISH_STOP : FINISH_LENGTH);
            assert_int_equal(s->n_prompt_tokens, reqs[i].n_prompt);
            assert_true((s->logprobs != NULL) == (reqs[i].sp.logprobs >= 0));
            if (s->logprobs) assert_int_equal(s->logprobs[k - 1].token, want[k - 1]);
            assert_string_equal(s->text, "");
            assert_true(s->t_done >= s->t_first_token);
        }
    }
    offline_results_free(res, N);
    struct engine_stats st;
    engine_stats(e, &st);
    assert_int_equal(st.num_free_blocks, 80);
    engine_free(e);
    tb_free(t);
}

static void test_from_json(void **state) {
    (void)state;
    json_error_t je;
    json_t *o = json_loads("{\"max_tokens\": 12, \"temperature\": 0.5, \"top_p\": 0.9, \"top_k\": 7,"
                           " \"min_p\": 0.1, \"seed\": 99, \"n\": 3, \"stop\": [\"a\", \"bc\"],"
                           " \"stop_token_ids\": [5, 6], \"ignore_eos\": true, \"min_tokens\": 2,"
                           " \"presence_penalty\": 0.5, \"frequency_penalty\": -0.5,"
                           " \"repetition_penalty\": 1.1, \"logprobs\": true, \"top_logprobs\": 4,"
                           " \"priority\": -1, \"skip_special_tokens\": false}", 0, &je);
    assert_non_null(o);
    struct gen_request r;
    gen_request_defaults(&r);
    int32_t ids[4];
    char err[PG_ERR_LEN] = "";
    assert_int_equal(gen_request_from_json(&r, o, ids, 4, err), 0);
    assert_int_equal(r.max_tokens, 12);
    assert_true(r.sp.temperature == 0.5f);
    assert_true(r.sp.top_p == 0.9f);
    assert_int_equal(r.sp.top_k, 7);
    assert_true(r.sp.min_p == 0.1f);
    assert_true(r.seeded);
    assert_int_equal(r.sp.seed, 99);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "bc");
    assert_int_equal(r.n_stop_token_ids, 2);
    assert_int_equal(r.stop_token_ids[1], 6);
    assert_true(r.ignore_eos);
    assert_false(r.skip_special_tokens);
    assert_int_equal(r.min_tokens, 2);
    assert_true(r.sp.frequency_penalty == -0.5f);
    assert_true(r.sp.repetition_penalty == 1.1f);
    assert_int_equal(r.sp.logprobs, 4);
    assert_int_equal(r.priority, -1);
    json_decref(o);
    const char *bad[] = {"{\"max_tokens\": \"x\"}", "{\"temperature\": []}", "{\"stop\": 5}",
                         "{\"stop\": [1]}", "{\"stop_token_ids\": [1, 2, 3, 4, 5]}",
                         "{\"stop_token_ids\": [-1]}", "{\"ignore_eos\": 1}", "{\"seed\": 1.5}",
                         "{\"n\": 1e10}", "[]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        o = json_loads(bad[i], 0, &je);
        assert_non_null(o);
        err[0] = 0;
        assert_int_equal(gen_request_from_json(&r, o, ids, 4, err), -1);
        assert_true(err[0] != 0);
        json_decref(o);
    }
    o = json_loads("{\"stop\": \"x\", \"logprobs\": 3, \"max_tokens\": null}", 0, &je);
    gen_request_defaults(&r);
    assert_int_equal(gen_request_from_json(&r, o, ids, 4, err), 0);
    assert_int_equal(r.n_stop, 1);
    assert_int_equal(r.sp.logprobs, 3);
    assert_int_equal(r.max_tokens, -1);
    json_decref(o);
}

// logit_bias (OpenAI: {"token id": bias in [-100, 100]}): parsed into the caller's arrays,
// rejected when malformed or when the caller gives no room, and it steers generation.
static void test_logit_bias(void **state) {
    (void)state;
    json_error_t je;
    json_t *o = json_loads("{\"logit_bias\": {\"9\": 100, \"12\": -100, \"3\": 0.5},"
                           " \"temperature\": 0, \"max_tokens\": 6}", 0, &je);
    assert_non_null(o);
    struct gen_request r;
    gen_request_defaults(&r);
    int32_t stop[4], bids[4];
    float bvals[4];
    char err[PG_ERR_LEN] = "";
    assert_int_equal(gen_request_from_json_bias(&r, o, stop, 4, bids, bvals, 4, err), 0);
    assert_int_equal(r.sp.n_logit_bias, 3);
    assert_ptr_equal(r.sp.logit_bias_ids, bids);
    assert_ptr_equal(r.sp.logit_bias_vals, bvals);
    int32_t want_ids[3] = {9, 12, 3};
    float want_vals[3] = {100, -100, 0.5f};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(bids[i], want_ids[i]);
        assert_true(bvals[i] == want_vals[i]);
    }
    // with the host sampler, greedy: token 12 wins unbiased, token 9 with the parsed bias
    float logits[VOCAB] = {0};
    logits[12] = 50;
    void *scratch = malloc(sampler_scratch_size(VOCAB));
    struct sample_output so;
    struct sampling_params plain = r.sp;
    plain.n_logit_bias = 0;
    struct sample_input in = {.params = &plain};
    sampler_sample(logits, VOCAB, &in, scratch, &so);
    assert_int_equal(so.token, 12);
    memset(logits, 0, sizeof logits);
    logits[12] = 50;
    in.params = &r.sp;
    sampler_sample(logits, VOCAB, &in, scratch, &so);
    assert_int_equal(so.token, 9);
    free(scratch);
    // engine_add takes it (arrays copied); an id outside the vocabulary is rejected there
    struct model_config m = tb_model_config(VOCAB, 64, EOS);
    struct engine_config cfg = tb_engine_config(64);
    struct tb *t = tb_new(40, 4, VOCAB);
    struct engine *e = engine_create(&cfg, &m, &tb_ops, t, 40, NULL, err);
    assert_non_null(e);
    int32_t prompt[5] = {4, 8, 15, 16, 23};
    r.prompt = prompt;
    r.n_prompt = 5;
    struct gen_request two[2] = {r, r};
    json_t *o2 = json_loads("{\"logit_bias\": {\"50\": 1}}", 0, &je);
    int32_t bids2[1];
    float bvals2[1];
    assert_int_equal(gen_request_from_json_bias(&two[1], o2, stop, 4, bids2, bvals2, 1, err), 0);
    struct offline_result res[2];
    assert_int_equal(engine_run_offline(e, two, 2, res, err), 0);
    assert_int_equal(res[0].n, 1);
    assert_int_equal(res[0].seqs[0].n_tokens, 6);
    assert_int_equal(res[1].n, 0);
    assert_non_null(strstr(res[1].error, "logit_bias"));
    offline_results_free(res, 2);
    json_decref(o2);
    engine_free(e);
    tb_free(t);
    // the plain parser has no room for a bias: a non-empty one is an error, not ignored
    err[0] = 0;
    assert_int_equal(gen_request_from_json(&r, o, stop, 4, err), -1);
    assert_non_null(strstr(err, "logit_bias"));
    json_decref(o);
    const char *bad[] = {"{\"logit_bias\": [1]}", "{\"logit_bias\": {\"x\": 1}}",
                         "{\"logit_bias\": {\"-1\": 1}}", "{\"logit_bias\": {\"5\": 101}}",
                         "{\"logit_bias\": {\"5\": \"1\"}}", "{\"logit_bias\": {\"5a\": 1}}",
                         "{\"logit_bias\": {\"99999999999\": 1}}",
                         "{\"logit_bias\": {\"1\": 1, \"2\": 1, \"3\": 1, \"4\": 1, \"5\": 1}}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        o = json_loads(bad[i], 0, &je);
        assert_non_null(o);
        err[0] = 0;
        assert_int_equal(gen_request_from_json_bias(&r, o, stop, 4, bids, bvals, 4, err), -1);
        assert_non_null(strstr(err, "logit_bias"));
        json_decref(o);
    }
    o = json_loads("{\"logit_bias\": {}}", 0, &je); // empty or null: fine for both
    gen_request_defaults(&r);
    assert_int_equal(gen_request_from_json(&r, o, stop, 4, err), 0);
    assert_int_equal(r.sp.n_logit_bias, 0);
    json_decref(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_offline),
        cmocka_unit_test(test_from_json),
        cmocka_unit_test(test_logit_bias),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
