// The engine with real structured-output grammars (src/grammar): a random-weight fixture
// model (tests/fixtures/models/qwen2_f32, vocab 1000) and a byte-level BPE tokenizer built
// here with tok_new_bpe (ids 0..255 = bytes, no merges; model ids past it are padding that
// the grammar never allows). Every sampled output must match its grammar exactly, with
// synchronous and async scheduling.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "engine/engine_offline.h"
#include "grammar/grammar.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

#define MODEL "tests/fixtures/models/qwen2_f32"

// GPT-2's byte-to-unicode map: token i is byte i, written as that byte's code point.
static struct tokenizer *byte_tokenizer(char *err) {
    static char strs[256][4];
    static const char *tokens[256];
    int cp[256], n = 0;
    bool printable[256] = {0};
    for (int b = 0; b < 256; b++)
        printable[b] = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    for (int b = 0; b < 256; b++) cp[b] = printable[b] ? b : 256 + n++;
    for (int b = 0; b < 256; b++) {
        int c = cp[b];
        if (c < 0x80) {
            strs[b][0] = (char)c;
        } else {
            strs[b][0] = (char)(0xc0 | (c >> 6));
            strs[b][1] = (char)(0x80 | (c & 0x3f));
        }
        tokens[b] = strs[b];
    }
    struct tok_bpe_spec spec = {.tokens = tokens, .n_tokens = 256, .bos_id = -1, .eos_id = -1};
    return tok_new_bpe(&spec, err);
}

#define NG 12 // 8 grammar requests, then 4 plain ones (fed when pipelined)

// depth 0: synchronous; >= 2: pipelined with that many steps in flight. Writes each
// request's output text (up to 63 bytes) to texts.
static void grammar_run(int depth, char texts[NG][64]) {
    bool async = depth >= 2;
    char err[PG_ERR_LEN] = "";
    struct model_weights *w = model_load(MODEL, err);
    if (!w) fail_msg("%s", err);
    struct tokenizer *tok = byte_tokenizer(err);
    if (!tok) fail_msg("%s", err);
    struct backend_config bc = {.block_size = 16, .num_blocks = 256, .kv_dtype = PG_F32, .n_threads = 2,
                                .max_inflight = async ? depth : 1};
    void *ctx;
    int nb;
    if (backend_cpu.init(&ctx, w, &bc, &nb, err)) fail_msg("%s", err);
    struct engine_config ec;
    engine_config_defaults(&ec);
    ec.max_model_len = 256;
    ec.async_scheduling = async;
    ec.num_scheduler_steps = async ? depth : 1;
    struct engine *e = engine_create(&ec, &w->cfg, &backend_cpu, ctx, nb, tok, err);
    if (!e) fail_msg("%s", err);
    struct grammar_vocab *gv = grammar_vocab_new(tok, w->cfg.vocab, w->cfg.eos_ids, w->cfg.n_eos);
    const char *choice = "[\"yes\", \"no\", \"maybe not\"]";
    const char *regex = "[0-9]{3}-[a-z]{2}";
    struct grammar *g1 = grammar_compile(gv, GRAMMAR_CHOICE, choice, strlen(choice), NULL, err);
    if (!g1) fail_msg("%s", err);
    struct grammar *g2 = grammar_compile(gv, GRAMMAR_REGEX, regex, strlen(regex), NULL, err);
    if (!g2) fail_msg("%s", err);
    int32_t *ids;
    int n;
    assert_int_equal(tok_encode(tok, "Answer:", 7, true, &ids, &n, err), 0);
    struct gen_request reqs[NG];
    for (int i = 0; i < NG; i++) {
        gen_request_defaults(&reqs[i]);
        reqs[i].prompt = ids;
        reqs[i].n_prompt = n;
        reqs[i].sp.temperature = 1.0f;
        reqs[i].sp.seed = (uint64_t)i;
        reqs[i].seeded = true;
        reqs[i].max_tokens = 40;
        reqs[i].grammar = i % 2 ? g2 : g1;
        if (i >= 8) { // plain: greedy or seeded, no grammar
            reqs[i].grammar = NULL;
            reqs[i].sp.temperature = i % 2 ? 0.8f : 0;
            reqs[i].max_tokens = 12;
            reqs[i].ignore_eos = true;
        }
    }
    struct offline_result res[NG];
    if (engine_run_offline(e, reqs, NG, res, err)) fail_msg("%s", err);
    for (int i = 0; i < NG; i++) snprintf(texts[i], 64, "%s", res[i].seqs[0].text);
    for (int i = 8; i < NG; i++) assert_int_equal(res[i].seqs[0].n_tokens, 12);
    struct engine_stats st;
    engine_stats(e, &st);
    if (async) assert_true(st.fed_seqs > 0); // the plain requests were fed
    for (int i = 0; i < 8; i++) {
        const char *t = res[i].seqs[0].text;
        assert_int_equal(res[i].seqs[0].finish, FINISH_STOP);
        if (i % 2 == 0) {
            bool ok = !strcmp(t, "yes") || !strcmp(t, "no") || !strcmp(t, "maybe not");
            if (!ok) fail_msg("choice output '%s'", t);
        } else {
            bool ok = strlen(t) == 6 && t[3] == '-';
            for (int k = 0; k < 3 && ok; k++) ok = t[k] >= '0' && t[k] <= '9';
            for (int k = 4; k < 6 && ok; k++) ok = t[k] >= 'a' && t[k] <= 'z';
            if (!ok) fail_msg("regex output '%s'", t);
        }
    }
    offline_results_free(res, NG);
    free(ids);
    grammar_release(g1);
    grammar_release(g2);
    engine_free(e);
    grammar_vocab_free(gv);
    backend_cpu.free(ctx);
    tok_free(tok);
    model_free(w);
}

static void test_grammar_outputs(void **state) {
    (void)state;
    static char want[NG][64], got[NG][64];
    grammar_run(0, want);
    for (int depth = 2; depth <= 3; depth++) { // grammar requests are never fed: collect-first
        grammar_run(depth, got);
        for (int i = 0; i < NG; i++) assert_string_equal(got[i], want[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grammar_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
