// The engine with real structured-output grammars (src/grammar): a random-weight fixture
// model (tests/fixtures/models/qwen2_f32, vocab 1000) and a byte-level BPE tokenizer built
// here with tok_new_bpe (ids 0..255 = bytes, no merges; model ids past it are padding that
// the grammar never allows). Every sampled output must match its grammar exactly, with
// synchronous and async scheduling.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

static void grammar_run(bool async) {
    char err[PG_ERR_LEN] = "";
    struct model_weights *w = model_load(MODEL, err);
    if (!w) fail_msg("%s", err);
    struct tokenizer *tok = byte_tokenizer(err);
    if (!tok) fail_msg("%s", err);
    struct backend_config bc = {.block_size = 16, .num_blocks = 256, .kv_dtype = PG_F32, .n_threads = 2,
                                .max_inflight = async ? 2 : 1};
    void *ctx;
    int nb;
    if (backend_cpu.init(&ctx, w, &bc, &nb, err)) fail_msg("%s", err);
    struct engine_config ec;
    engine_config_defaults(&ec);
    ec.max_model_len = 256;
    ec.async_scheduling = async;
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
    struct gen_request reqs[8];
    for (int i = 0; i < 8; i++) {
        gen_request_defaults(&reqs[i]);
        reqs[i].prompt = ids;
        reqs[i].n_prompt = n;
        reqs[i].sp.temperature = 1.0f;
        reqs[i].sp.seed = (uint64_t)i;
        reqs[i].seeded = true;
        reqs[i].max_tokens = 40;
        reqs[i].grammar = i % 2 ? g2 : g1;
    }
    struct offline_result res[8];
    if (engine_run_offline(e, reqs, 8, res, err)) fail_msg("%s", err);
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
    offline_results_free(res, 8);
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
    grammar_run(false);
    grammar_run(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grammar_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
