// make_model: configs, safetensors layout (header, offsets, sharding + index), GPTQ fields,
// and identical tensors from the writer and the in-memory generator.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "model/make_model.h"

static void rmdir_all(char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

static char *tmpdir(void) {
    char tmpl[] = "/tmp/pagoda-mm-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return pg_strdup(d);
}

// Reads a safetensors file: returns the header JSON, the data section and its size.
static json_t *read_st(const char *path, char **data, size_t *data_len) {
    size_t len = 0;
    char err[PG_ERR_LEN];
    char *buf = pg_read_file(path, &len, err);
    assert_non_null(buf);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    assert_true(hl % 8 == 0 && 8 + hl <= len);
    json_error_t je;
    json_t *h = json_loadb(buf + 8, hl, 0, &je);
    assert_non_null(h);
    *data_len = len - 8 - hl;
    *data = pg_malloc(*data_len + 1);
    memcpy(*data, buf + 8 + hl, *data_len);
    free(buf);
    return h;
}

static void test_gptq_tiny_files_match_memory(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "", *dir = tmpdir();
    struct model_config c;
    assert_int_equal(make_model_config("tiny", true, &c, err), 0);
    assert_int_equal(make_model_write(dir, &c, 7, 4.0, 2, err), 0);
    char *p = pg_path_join(dir, "model.safetensors"), *data;
    size_t dl;
    json_t *h = read_st(p, &data, &dl);
    // offsets are contiguous and cover the data section exactly
    size_t end = 0, n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        json_t *off = json_object_get(v, "data_offsets");
        size_t b = json_integer_value(json_array_get(off, 1));
        if (b > end) end = b;
        n++;
    }
    assert_int_equal(end, dl);
    // embed; per layer 2 norms + q/k/v (4 GPTQ tensors + bias each) + o (4) + gate/up/down (4 each);
    // final norm; lm_head
    assert_int_equal(n, 1 + 2 * (2 + 3 * 5 + 4 + 3 * 4) + 2);
    json_t *qw = json_object_get(h, "model.layers.1.mlp.down_proj.qweight");
    assert_string_equal(json_string_value(json_object_get(qw, "dtype")), "I32");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(qw, "shape"), 0)), c.intermediate / 8);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(qw, "shape"), 1)), c.hidden);
    json_t *qz = json_object_get(h, "model.layers.0.self_attn.q_proj.qzeros");
    uint32_t z;
    memcpy(&z, data + json_integer_value(json_array_get(json_object_get(qz, "data_offsets"), 0)), 4);
    assert_int_equal(z, 0x77777777u);  // v1: stored zero = 8 - 1
    // the in-memory model holds the same bytes
    struct model_weights *w = make_model_weights(&c, 7, 2, err);
    assert_non_null(w);
    size_t off = json_integer_value(json_array_get(json_object_get(qw, "data_offsets"), 0));
    assert_memory_equal(data + off, w->layers[1].down.qweight, (size_t)c.intermediate / 8 * c.hidden * 4);
    json_t *em = json_object_get(h, "model.embed_tokens.weight");
    assert_string_equal(json_string_value(json_object_get(em, "dtype")), "F16");
    off = json_integer_value(json_array_get(json_object_get(em, "data_offsets"), 0));
    assert_memory_equal(data + off, w->embed.data, (size_t)c.vocab * c.hidden * 2);
    assert_int_equal(w->layers[0].q.zeros[0], 8);
    assert_int_equal(w->layers[0].q.g_idx[200], 1);
    assert_false(c.tie_embeddings);
    assert_ptr_not_equal(w->lm_head.w.data, w->embed.data);
    make_model_free(w);
    json_decref(h);
    free(data);
    free(p);
    // config.json carries the GPTQ quantization_config
    p = pg_path_join(dir, "config.json");
    json_error_t je;
    json_t *cfg = json_load_file(p, 0, &je);
    assert_non_null(cfg);
    json_t *q = json_object_get(cfg, "quantization_config");
    assert_int_equal(json_integer_value(json_object_get(q, "bits")), 4);
    assert_int_equal(json_integer_value(json_object_get(q, "group_size")), 128);
    assert_string_equal(json_string_value(json_object_get(q, "checkpoint_format")), "gptq");
    assert_true(json_is_true(json_object_get(q, "sym")));
    assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "float16");
    json_decref(cfg);
    free(p);
    rmdir_all(dir);
}

static void test_bf16_sharded_index(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "", *dir = tmpdir();
    struct model_config c;
    assert_int_equal(make_model_config("tiny", false, &c, err), 0);
    assert_int_equal(make_model_write(dir, &c, 1, 0.0003, 1, err), 0);  // 300 kB shards
    char *p = pg_path_join(dir, "model.safetensors.index.json");
    json_error_t je;
    json_t *idx = json_load_file(p, 0, &je);
    assert_non_null(idx);
    json_t *map = json_object_get(idx, "weight_map");
    const char *key;
    json_t *v;
    int n = 0, shards_seen = 0;
    char last[64] = "";
    size_t total = 0;
    json_object_foreach(map, key, v) {
        n++;
        if (strcmp(last, json_string_value(v))) {
            snprintf(last, sizeof last, "%s", json_string_value(v));
            shards_seen++;
            char *sp = pg_path_join(dir, last), *data;
            size_t dl;
            json_t *h = read_st(sp, &data, &dl);
            total += dl;
            json_decref(h);
            free(data);
            free(sp);
        }
        assert_non_null(strstr(json_string_value(v), "-of-"));
    }
    assert_true(shards_seen > 1);
    assert_int_equal(n, 1 + 2 * (2 + 3 * 2 + 1 + 3) + 1);  // tied: no lm_head; q/k/v weight+bias, o, 3 mlp
    assert_int_equal(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")), total);
    json_decref(idx);
    free(p);
    rmdir_all(dir);
}

static void test_presets(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    struct model_config c;
    assert_int_equal(make_model_config("qwen2.5-14b", true, &c, err), 0);
    assert_int_equal(c.n_layers, 48);
    assert_int_equal(c.hidden, 5120);
    assert_int_equal(c.n_heads, 40);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.intermediate, 13824);
    assert_int_equal(c.vocab, 152064);
    assert_true(c.qkv_bias);
    assert_int_not_equal(make_model_config("qwen9", false, &c, err), 0);
    assert_non_null(strstr(err, "unknown preset"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gptq_tiny_files_match_memory),
        cmocka_unit_test(test_bf16_sharded_index),
        cmocka_unit_test(test_presets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
