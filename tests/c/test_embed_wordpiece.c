// WordPiece tokenizer vs the reference: tests/fixtures/embed/minilm_ref.json holds the input
// ids sentence-transformers (HF tokenizers) produced for 50 sentences (tools/embed_fixture.py),
// tests/fixtures/embed/tokenizer.json is all-MiniLM-L6-v2's tokenizer.
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tokenizer/wordpiece.h"
#include "test_util.h"

#define TOK "tests/fixtures/embed/tokenizer.json"
#define REF "tests/fixtures/embed/minilm_ref.json"

static void test_matches_reference_ids(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct wordpiece *w = wp_load(TOK, err);
    assert_non_null(w);
    assert_int_equal(wp_vocab_size(w), 30522);
    json_error_t je;
    json_t *ref = json_load_file(REF, 0, &je);
    assert_non_null(ref);
    json_t *sents = json_object_get(ref, "sentences"), *ids = json_object_get(ref, "input_ids");
    int max_len = (int)json_integer_value(json_object_get(ref, "max_seq_length"));
    assert_int_equal(json_array_size(sents), 50);
    int mismatches = 0;
    for (size_t i = 0; i < json_array_size(sents); i++) {
        const char *s = json_string_value(json_array_get(sents, i));
        json_t *want = json_array_get(ids, i);
        int32_t *got;
        int n;
        assert_int_equal(wp_encode(w, s, strlen(s), max_len, &got, &n, err), 0);
        bool same = test_ids_match(got, n, want);
        if (!same) {
            mismatches++;
            print_error("sentence %zu differs: %s (got %d ids, want %zu)\n", i, s, n, json_array_size(want));
        }
        free(got);
    }
    assert_int_equal(mismatches, 0);
    json_decref(ref);
    wp_free(w);
}

// 400 random strings (controls, whitespace kinds, accents, combining marks, CJK, Hangul,
// kana, fullwidth, emoji, private use, long words) vs HF tokenizers' ids
// (tests/fixtures/embed/wordpiece_ref.json, tools/embed_fixture.py wordpiece).
static void test_matches_hf_random_strings(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct wordpiece *w = wp_load(TOK, err);
    assert_non_null(w);
    json_t *ref = json_load_file("tests/fixtures/embed/wordpiece_ref.json", JSON_ALLOW_NUL, NULL);
    assert_non_null(ref);
    json_t *strs = json_object_get(ref, "strings"), *ids = json_object_get(ref, "ids");
    assert_int_equal(json_array_size(strs), 400);
    int bad = 0;
    for (size_t i = 0; i < json_array_size(strs); i++) {
        json_t *js = json_array_get(strs, i), *want = json_array_get(ids, i);
        int32_t *got;
        int n;
        assert_int_equal(wp_encode(w, json_string_value(js), json_string_length(js), 1 << 20, &got, &n, err), 0);
        bool same = test_ids_match(got, n, want);
        if (!same && bad++ < 5) print_error("string %zu differs (%d vs %zu ids)\n", i, n, json_array_size(want));
        free(got);
    }
    assert_int_equal(bad, 0);
    json_decref(ref);
    wp_free(w);
}

static void test_truncation_and_specials(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct wordpiece *w = wp_load(TOK, err);
    assert_non_null(w);
    int32_t *ids;
    int n;
    const char *s = "hello world hello world hello world";
    assert_int_equal(wp_encode(w, s, strlen(s), 5, &ids, &n, err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[0], wp_token_id(w, "[CLS]"));
    assert_int_equal(ids[1], wp_token_id(w, "hello"));
    assert_int_equal(ids[4], wp_token_id(w, "[SEP]"));
    free(ids);
    // an added token in the text is matched as itself, not split into [ / sep / ]
    s = "a [SEP] b";
    assert_int_equal(wp_encode(w, s, strlen(s), 64, &ids, &n, err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[2], wp_token_id(w, "[SEP]"));
    free(ids);
    // invalid UTF-8 and control bytes do not crash and are dropped by clean_text
    s = "ok\xff\xfe\x01 fine";
    assert_int_equal(wp_encode(w, s, strlen(s), 64, &ids, &n, err), 0);
    assert_int_equal(n, 4);
    free(ids);
    assert_int_equal(wp_encode(w, "x", 1, 1, &ids, &n, err), -1);
    wp_free(w);
}

// Random byte strings and random code points (ASCII, Latin with accents, combining marks,
// CJK, controls, invalid UTF-8): no crash, ids in range, [CLS] ... [SEP], length bound held.
static void test_random_inputs(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct wordpiece *w = wp_load(TOK, err);
    assert_non_null(w);
    static const uint32_t pool[] = {'a', 'Z', ' ', '#', '.', 0xE9, 0x301, 0x4E2D, 0x3000, 0x7, 0x0, 0xFFFD, 0x1F600, 0x130};
    uint64_t st = 12345;
    char buf[600];
    for (int it = 0; it < 3000; it++) {
        size_t n = 0;
        int len = (int)((st = st * 6364136223846793005ull + 1442695040888963407ull) >> 58);
        for (int k = 0; k < len * 4 && n < sizeof buf - 5; k++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            if (it % 2) { buf[n++] = (char)(st >> 56); continue; } // raw bytes
            uint32_t c = pool[(st >> 40) % (sizeof pool / sizeof *pool)];
            if (c < 0x80) buf[n++] = (char)c;
            else if (c < 0x800) buf[n++] = (char)(0xC0 | (c >> 6)), buf[n++] = (char)(0x80 | (c & 63));
            else if (c < 0x10000)
                buf[n++] = (char)(0xE0 | (c >> 12)), buf[n++] = (char)(0x80 | ((c >> 6) & 63)), buf[n++] = (char)(0x80 | (c & 63));
            else
                buf[n++] = (char)(0xF0 | (c >> 18)), buf[n++] = (char)(0x80 | ((c >> 12) & 63)),
                buf[n++] = (char)(0x80 | ((c >> 6) & 63)), buf[n++] = (char)(0x80 | (c & 63));
        }
        int32_t *ids;
        int m, max_len = 2 + it % 40;
        assert_int_equal(wp_encode(w, buf, n, max_len, &ids, &m, err), 0);
        assert_true(m >= 2 && m <= max_len);
        assert_int_equal(ids[0], wp_token_id(w, "[CLS]"));
        assert_int_equal(ids[m - 1], wp_token_id(w, "[SEP]"));
        for (int k = 0; k < m; k++) assert_true(ids[k] >= 0 && ids[k] < wp_vocab_size(w));
        free(ids);
    }
    wp_free(w);
}

static void test_load_errors(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    assert_null(wp_load("no/such/tokenizer.json", err));
    assert_true(err[0] != 0);
    assert_null(wp_load("tests/fixtures/embed/sentences.json", err)); // JSON, but not a tokenizer
    assert_non_null(strstr(err, "WordPiece"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference_ids),
        cmocka_unit_test(test_matches_hf_random_strings),
        cmocka_unit_test(test_truncation_and_specials),
        cmocka_unit_test(test_random_inputs),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
