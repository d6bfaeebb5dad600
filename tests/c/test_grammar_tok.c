// grammar_vocab_new from the real tokenizer module (Qwen2.5 tokenizer.json): the token bytes it
// takes must equal the ones decoded independently from tokenizer.json (vocab_json.c), and a
// schema compiled on it must allow exactly the expected first token class.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "grammar/grammar.h"
#include "grammar/vocab_json.h"
#include "tokenizer/tokenizer.h"

#define TOK_DIR "../shared/models/qwen-tokenizer"

static void test_vocab_from_tokenizer_matches_json(void **state) {
    (void)state;
    if (!pg_file_exists(TOK_DIR "/tokenizer.json")) skip();
    char err[PG_ERR_LEN];
    struct tokenizer *t = tok_load(TOK_DIR, err);
    if (!t) fail_msg("%s", err);
    const int32_t eos[2] = {151643, 151645};
    struct grammar_vocab *a = grammar_vocab_new(t, 151936, eos, 2);
    struct grammar_vocab *b = grammar_vocab_load_hf(TOK_DIR "/tokenizer.json", 151936, eos, 2, err);
    assert_non_null(a);
    assert_non_null(b);
    int n = tok_vocab_size(t), compared = 0;
    for (int32_t id = 0; id < n; id++) {
        size_t la, lb;
        const char *pa = grammar_vocab_token(a, id, &la), *pb = grammar_vocab_token(b, id, &lb);
        if (!pa || !pb) { // specials and EOS: absent in both
            if (pa != pb) fail_msg("token %d present in one vocab only", id);
            continue;
        }
        if (la != lb || memcmp(pa, pb, la)) fail_msg("token %d differs", id);
        compared++;
    }
    assert_true(compared > 150000);
    // a compiled schema on the tokenizer's vocab starts with '{'-tokens only
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]}";
    struct grammar *g = grammar_compile(a, GRAMMAR_JSON_SCHEMA, schema, strlen(schema), NULL, err);
    if (!g) fail_msg("%s", err);
    struct grammar_matcher *m = grammar_matcher_new(g);
    uint32_t *mask = calloc((151936 + 31) / 32, 4);
    grammar_fill_mask(m, mask);
    int allowed = 0;
    for (int32_t id = 0; id < 151936; id++)
        if ((mask[id >> 5] >> (id & 31)) & 1) {
            size_t l;
            const char *p = grammar_vocab_token(a, id, &l);
            assert_non_null(p);
            assert_int_equal(p[0], '{');
            allowed++;
        }
    assert_true(allowed >= 2); // "{" and "{\"" at least
    int32_t brace = tok_find(t, "{");
    assert_true(brace >= 0);
    assert_int_equal(grammar_accept_token(m, brace), 0);
    free(mask);
    grammar_matcher_free(m);
    grammar_release(g);
    grammar_vocab_free(a);
    grammar_vocab_free(b);
    tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_vocab_from_tokenizer_matches_json)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
