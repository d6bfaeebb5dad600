// The tokenizer built from GGUF metadata (tok_load_gguf) vs Hugging Face `tokenizers` on the
// same vocabulary: tests/fixtures/gguf/qwen_tok_ref.json holds HF's ids for 23 strings
// (tools/gguf_tok_ref.py, Qwen2.5 tokenizer.json); the GGUF is the default chat model that
// scripts/get-models.sh fetches (skipped when absent).
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

#define QWEN "models/qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
#define REF "tests/fixtures/gguf/qwen_tok_ref.json"

static void test_qwen_gguf_tokenizer_matches_hf(void **state) {
    (void)state;
    if (!pg_file_exists(QWEN)) {
        print_message("SKIP: %s absent (run scripts/get-models.sh)\n", QWEN);
        skip();
        return;
    }
    char err[PG_ERR_LEN] = "";
    struct tokenizer *t = tok_load_gguf(QWEN, err);
    if (!t) fail_msg("%s", err);
    json_t *ref = json_load_file(REF, 0, NULL);
    assert_non_null(ref);
    json_t *strs = json_object_get(ref, "strings"), *ids = json_object_get(ref, "ids");
    int bad = 0;
    for (size_t i = 0; i < json_array_size(strs); i++) {
        const char *s = json_string_value(json_array_get(strs, i));
        json_t *want = json_array_get(ids, i);
        int32_t *got;
        int n;
        assert_int_equal(tok_encode(t, s, strlen(s), true, &got, &n, err), 0);
        bool same = test_ids_match(got, n, want);
        if (!same) {
            bad++;
            print_error("string %zu differs (%d vs %zu ids): %.80s\n", i, n, json_array_size(want), s);
        }
        // decoding gives the text back (except where NFC changed it)
        size_t len;
        char *back = tok_decode(t, got, n, false, &len);
        if (strcmp(back, s) != 0 && strstr(s, "NFC") == NULL) {
            bad++;
            print_error("string %zu does not decode back: %.80s\n", i, back);
        }
        free(back);
        free(got);
    }
    assert_int_equal(bad, 0);
    assert_int_equal(tok_find(t, "<|im_end|>"), 151645);
    assert_true(tok_is_special(t, 151645));
    const char *tmpl = tok_chat_template(t);
    assert_non_null(tmpl);
    assert_non_null(strstr(tmpl, "<|im_start|>"));
    json_decref(ref);
    tok_free(t);
}

static void test_errors(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    // a GGUF without tokenizer metadata
    assert_null(tok_load_gguf("tests/fixtures/gguf/dequant.gguf", err));
    assert_non_null(strstr(err, "tokenizer.ggml.model"));
    assert_null(tok_load_gguf("no/such.gguf", err));
    assert_null(model_open_tokenizer("no/such/dir", err));
    if (pg_file_exists(QWEN)) { // a directory holding the GGUF opens its tokenizer
        struct tokenizer *t = model_open_tokenizer("models/qwen2.5-coder-0.5b-instruct", err);
        if (!t) fail_msg("%s", err);
        assert_int_equal(tok_find(t, "<|im_start|>"), 151644);
        tok_free(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen_gguf_tokenizer_matches_hf),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
