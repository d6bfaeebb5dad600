// GGUF parser and ggml dequantization tests.
// tests/fixtures/gguf/dequant.gguf was written by tools/gguf_write.py dequant-fixture: random
// blocks of every supported type, each with "ref.<type>" = the same values dequantized by an
// independent numpy implementation (tools/gguf_read.py). Our C dequantizer must match bit for bit.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "model/gguf.h"

#define FIXTURE "tests/fixtures/gguf/dequant.gguf"

static void test_dequant_matches_numpy(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct gguf_file *f = gguf_open(FIXTURE, err);
    assert_non_null(f);
    const char *types[] = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"};
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        char refname[32];
        snprintf(refname, sizeof refname, "ref.%s", types[k]);
        const struct gguf_tensor *t = gguf_find_tensor(f, types[k]);
        const struct gguf_tensor *r = gguf_find_tensor(f, refname);
        assert_non_null(t);
        assert_non_null(r);
        assert_string_equal(ggml_type_name(t->type), types[k]);
        int64_t n = t->ne[0] * t->ne[1];
        assert_int_equal(n, 3 * 512);
        float *out = malloc((size_t)n * sizeof(float));
        assert_int_equal(ggml_dequant(t->type, t->data, out, n, err), 0);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            float want;
            memcpy(&want, (const char *)r->data + i * 4, 4);
            if (memcmp(&want, &out[i], 4) != 0 && bad++ < 3)
                print_error("%s[%lld]: got %.9g want %.9g\n", types[k], (long long)i, out[i], want);
        }
        assert_int_equal(bad, 0);
        free(out);
    }
    gguf_close(f);
}

static void test_metadata(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct gguf_file *f = gguf_open(FIXTURE, err);
    assert_non_null(f);
    assert_int_equal(gguf_version(f), 3);
    int64_t v;
    assert_int_equal(gguf_get_int(f, "general.alignment", &v, err), 0);
    assert_int_equal(v, 64);
    char *arch = gguf_get_str(f, "general.architecture", err);
    assert_non_null(arch);
    assert_string_equal(arch, "test");
    free(arch);
    assert_null(gguf_get_str(f, "general.alignment", err)); // not a string
    assert_non_null(strstr(err, "not a string"));
    assert_int_equal(gguf_get_int(f, "no.such.key", &v, err), -1);
    assert_non_null(strstr(err, "missing"));
    assert_int_equal(gguf_n_tensors(f), 22);
    for (int i = 0; i < gguf_n_tensors(f); i++)
        assert_int_equal((uintptr_t)gguf_tensor_at(f, i)->data % 64, 0); // aligned in the mapping
    gguf_close(f);
}

static void test_unsupported_type(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    float y[256];
    uint8_t blk[256] = {0};
    assert_int_equal(ggml_dequant(10 /* Q2_K */, blk, y, 256, err), -1);
    assert_non_null(strstr(err, "type10"));
    assert_int_equal(ggml_dequant(GGML_T_Q4_0, blk, y, 31, err), -1); // not whole blocks
}

// Every truncation of a valid file must fail cleanly (ASan checks the reads).
static void test_truncations(void **state) {
    (void)state;
    char err[PG_ERR_LEN];
    size_t len;
    char *buf = pg_read_file(FIXTURE, &len, err);
    assert_non_null(buf);
    for (size_t n = 0; n < len; n += (n < 2048 ? 1 : 997)) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        struct gguf_file *f = gguf_parse(copy, n, "trunc", err);
        assert_null(f);
        assert_true(err[0] != 0);
        free(copy);
    }
    struct gguf_file *f = gguf_parse(buf, len, "whole", err);
    assert_non_null(f);
    gguf_close(f);
    free(buf);
}

static void patch_u32(char *p, uint32_t v) { memcpy(p, &v, 4); }
static void patch_u64(char *p, uint64_t v) { memcpy(p, &v, 8); }

static void test_malformed_headers(void **state) {
    (void)state;
    char err[PG_ERR_LEN];
    size_t len;
    char *buf = pg_read_file(FIXTURE, &len, err);
    assert_non_null(buf);
    char *c = malloc(len);
    struct { const char *what; int kind; } cases[] = {
        {"bad magic", 0}, {"version 4", 1}, {"version 1", 2}, {"huge tensor count", 3}, {"huge kv count", 4},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        memcpy(c, buf, len);
        switch (cases[k].kind) {
        case 0: c[0] = 'X'; break;
        case 1: patch_u32(c + 4, 4); break;
        case 2: patch_u32(c + 4, 1); break;
        case 3: patch_u64(c + 8, UINT64_MAX / 2); break;
        case 4: patch_u64(c + 16, 1ull << 40); break;
        }
        err[0] = 0;
        assert_null(gguf_parse(c, len, "bad", err));
        print_message("%s -> %s\n", cases[k].what, err);
        assert_true(err[0] != 0);
    }
    free(c);
    free(buf);
}

// A hand-built file: one tensor whose offset is misaligned, then one running past the end.
static size_t build_one(char *b, uint64_t ne0, uint32_t type, uint64_t offset) {
    size_t o = 0;
    memcpy(b, "GGUF", 4), o = 4;
    patch_u32(b + o, 3), o += 4;
    patch_u64(b + o, 1), o += 8;  // tensors
    patch_u64(b + o, 0), o += 8;  // kv
    patch_u64(b + o, 1), o += 8;
    b[o++] = 'w';
    patch_u32(b + o, 1), o += 4;
    patch_u64(b + o, ne0), o += 8;
    patch_u32(b + o, type), o += 4;
    patch_u64(b + o, offset), o += 8;
    size_t data = (o + 31) / 32 * 32;
    memset(b + o, 0, data + 64 - o);
    return data + 64;  // 64 bytes of data section
}

static void test_tensor_bounds(void **state) {
    (void)state;
    char err[PG_ERR_LEN], b[256];
    size_t n = build_one(b, 16, GGML_T_F32, 0);
    struct gguf_file *f = gguf_parse(b, n, "ok", err);
    assert_non_null(f);
    assert_int_equal(gguf_tensor_at(f, 0)->nbytes, 64);
    gguf_close(f);
    n = build_one(b, 16, GGML_T_F32, 8);
    assert_null(gguf_parse(b, n, "misaligned", err));
    assert_non_null(strstr(err, "aligned"));
    n = build_one(b, 17, GGML_T_F32, 0);
    assert_null(gguf_parse(b, n, "past end", err));
    assert_non_null(strstr(err, "past the end"));
    n = build_one(b, 16, GGML_T_Q8_0, 0);
    assert_null(gguf_parse(b, n, "partial block", err));
    assert_non_null(strstr(err, "multiple"));
    n = build_one(b, 1ull << 41, GGML_T_F32, 0);
    assert_null(gguf_parse(b, n, "huge", err));
}

static void test_model_path_detection(void **state) {
    (void)state;
    char *p = model_gguf_path(FIXTURE);
    assert_non_null(p);
    assert_string_equal(p, FIXTURE);
    free(p);
    p = model_gguf_path("tests/fixtures/gguf"); // a directory holding exactly one .gguf
    assert_non_null(p);
    assert_non_null(strstr(p, "dequant.gguf"));
    free(p);
    assert_null(model_gguf_path("tests/fixtures/embed/sentences.json")); // not GGUF
    assert_null(model_gguf_path("no/such/path"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequant_matches_numpy), cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_unsupported_type),      cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_malformed_headers),     cmocka_unit_test(test_tensor_bounds),
        cmocka_unit_test(test_model_path_detection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
