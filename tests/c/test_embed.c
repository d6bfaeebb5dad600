// Sentence embeddings vs sentence-transformers: tests/fixtures/embed/minilm_ref.{json,f32} hold
// the reference vectors for 50 English/Chinese sentences (tools/embed_fixture.py, run with
// sentence-transformers on the real all-MiniLM-L6-v2 weights). The model itself is not in the
// repo: scripts/get-models.sh puts it under models/; without it the model tests are skipped.
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

#include "model/embed.h"

#define MODEL "models/all-MiniLM-L6-v2"
#define REF "tests/fixtures/embed/minilm_ref"

static bool have_model(void) {
    if (pg_file_exists(MODEL "/model.safetensors")) return true;
    print_message("SKIP: %s absent (run scripts/get-models.sh)\n", MODEL);
    return false;
}

static void test_matches_sentence_transformers(void **state) {
    (void)state;
    if (!have_model()) { skip(); return; }
    char err[PG_ERR_LEN] = "";
    struct embed_model *m = embed_model_load(MODEL, err);
    if (!m) print_error("%s\n", err);
    assert_non_null(m);
    assert_int_equal(embed_model_dim(m), 384);
    assert_int_equal(embed_model_max_tokens(m), 256);
    json_error_t je;
    json_t *meta = json_load_file(REF ".json", 0, &je);
    assert_non_null(meta);
    json_t *sents = json_object_get(meta, "sentences");
    int n = (int)json_array_size(sents);
    assert_int_equal(n, 50);
    const char **texts = malloc((size_t)n * sizeof *texts);
    int want_tokens = 0;
    for (int i = 0; i < n; i++) {
        texts[i] = json_string_value(json_array_get(sents, (size_t)i));
        want_tokens += (int)json_array_size(json_array_get(json_object_get(meta, "input_ids"), (size_t)i));
    }
    size_t len;
    float *ref = (float *)pg_read_file(REF ".f32", &len, err);
    assert_non_null(ref);
    assert_int_equal(len, (size_t)n * 384 * sizeof(float));
    float *out = malloc((size_t)n * 384 * sizeof(float));
    int n_tokens = 0;
    assert_int_equal(embed_model_encode(m, texts, n, out, &n_tokens, err), 0);
    assert_int_equal(n_tokens, want_tokens);
    double worst = 1.0;
    for (int i = 0; i < n; i++) {
        double dot = 0, na = 0, nb = 0;
        for (int j = 0; j < 384; j++) {
            double a = out[i * 384 + j], b = ref[i * 384 + j];
            dot += a * b, na += a * a, nb += b * b;
        }
        double cos = dot / sqrt(na * nb);
        if (cos < worst) worst = cos;
        if (cos < 0.9999) print_error("sentence %d: cosine %.6f: %s\n", i, cos, texts[i]);
        assert_true(fabs(sqrt(na) - 1.0) < 1e-4); // normalized (modules.json has Normalize)
    }
    print_message("worst cosine over %d sentences: %.8f\n", n, worst);
    assert_true(worst >= 0.9999);
    free(out), free(ref), free(texts);
    json_decref(meta);
    embed_model_free(m);
}

static void test_detect_and_errors(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    assert_false(embed_model_detect("tests/fixtures/gguf"));
    assert_null(embed_model_load("tests/fixtures/gguf", err)); // no config.json
    assert_true(err[0] != 0);
    if (!have_model()) return;
    assert_true(embed_model_detect(MODEL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_sentence_transformers),
        cmocka_unit_test(test_detect_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
