// Model loading: config parsing, safetensors parsing, the weights loader (dense and GPTQ),
// and bad input (missing files, unknown arch, unsupported quantization, shape/dtype
// mismatch, truncated/corrupt files): a clear message and -1/NULL, never a crash.
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "model/safetensors.h"
#include "model/weights.h"

#define FIX "tests/fixtures/models/"

static const char *QWEN_CFG =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":1000,"
    "\"rms_norm_eps\":1e-5,\"rope_theta\":1000000.0,\"tie_word_embeddings\":true,"
    "\"torch_dtype\":\"bfloat16\",\"eos_token_id\":[2,3],\"max_position_embeddings\":4096}";

// Replaces the first occurrence of `from` in s by `to` (malloc'd result).
static char *subst(const char *s, const char *from, const char *to) {
    const char *p = strstr(s, from);
    assert_non_null(p);
    size_t a = (size_t)(p - s), n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *r = pg_malloc(n);
    memcpy(r, s, a);
    strcpy(r + a, to);
    strcat(r, p + strlen(from));
    return r;
}

static void expect_cfg_error(const char *from, const char *to, const char *msg_part) {
    char *j = subst(QWEN_CFG, from, to);
    struct model_config c;
    char err[PG_ERR_LEN] = "";
    assert_int_equal(model_config_parse(&c, j, "x/config.json", err), -1);
    if (!strstr(err, msg_part)) fail_msg("error '%s' lacks '%s'", err, msg_part);
    assert_non_null(strstr(err, "x/config.json"));
    free(j);
}

static void test_config_parse(void **state) {
    (void)state;
    struct model_config c;
    char err[PG_ERR_LEN];
    assert_int_equal(model_config_parse(&c, QWEN_CFG, "config.json", err), 0);
    assert_int_equal(c.arch, ARCH_QWEN2);
    assert_int_equal(c.hidden, 64);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.n_kv_heads, 2);
    assert_true(c.qkv_bias && c.tie_embeddings);
    assert_int_equal(c.dtype, PG_BF16);
    assert_true(c.rope_theta == 1e6f && c.rms_eps == 1e-5f);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.eos_ids[1], 3);
    assert_int_equal(c.quant.method, QUANT_NONE);
    // Llama: explicit head_dim, attention_bias default false, HF 5.x dtype + rope_parameters
    char *j = subst(QWEN_CFG, "Qwen2ForCausalLM", "LlamaForCausalLM");
    char *j2 = subst(j, "\"rope_theta\":1000000.0", "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":500000.0},\"head_dim\":32");
    assert_int_equal(model_config_parse(&c, j2, "config.json", err), 0);
    assert_int_equal(c.arch, ARCH_LLAMA);
    assert_false(c.qkv_bias);
    assert_int_equal(c.head_dim, 32);
    assert_true(c.rope_theta == 5e5f);
    free(j);
    free(j2);
    assert_int_equal(model_config_parse_generation(&c, "{\"eos_token_id\":7,\"temperature\":0.7,\"top_k\":20,\"do_sample\":false}", "g", err), 0);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_ids[0], 7);
    assert_int_equal(c.gen.top_k, 20);
    assert_false(c.gen.do_sample);
    assert_true(c.gen.temperature == 0.7f);
}

static void test_config_errors(void **state) {
    (void)state;
    expect_cfg_error("Qwen2ForCausalLM", "MistralForCausalLM", "MistralForCausalLM");
    expect_cfg_error("\"rope_theta\":1000000.0", "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}", "yarn");
    expect_cfg_error("\"hidden_size\":64,", "", "hidden_size");
    expect_cfg_error("\"hidden_size\":64", "\"hidden_size\":\"64\"", "hidden_size");
    expect_cfg_error("\"num_key_value_heads\":2", "\"num_key_value_heads\":3", "num_key_value_heads");
    expect_cfg_error("\"torch_dtype\":\"bfloat16\"", "\"torch_dtype\":\"float8\"", "float8");
    expect_cfg_error("\"vocab_size\":1000", "\"vocab_size\":-5", "vocab_size");
    const char *q = "\"vocab_size\":1000,\"quantization_config\":{\"quant_method\":\"gptq\",";
    char buf[512];
    snprintf(buf, sizeof buf, "%s\"bits\":3}", q);
    expect_cfg_error("\"vocab_size\":1000", buf, "bits = 3");
    snprintf(buf, sizeof buf, "%s\"bits\":4,\"group_size\":0}", q);
    expect_cfg_error("\"vocab_size\":1000", buf, "group_size");
    snprintf(buf, sizeof buf, "%s\"bits\":4,\"checkpoint_format\":\"marlin\"}", q);
    expect_cfg_error("\"vocab_size\":1000", buf, "marlin");
    expect_cfg_error("\"vocab_size\":1000", "\"vocab_size\":1000,\"quantization_config\":{\"quant_method\":\"awq\"}", "awq");
    struct model_config c;
    char err[PG_ERR_LEN];
    assert_int_equal(model_config_parse(&c, "{not json", "bad.json", err), -1);
    assert_non_null(strstr(err, "bad.json"));
    assert_int_equal(model_config_parse(&c, "[1,2]", "arr.json", err), -1);
    assert_int_equal(model_config_load(&c, "tests/fixtures/no_such_model", err), -1);
    assert_non_null(strstr(err, "no_such_model/config.json"));
}

static void test_config_gptq_files(void **state) {
    (void)state;
    struct model_config c;
    char err[PG_ERR_LEN];
    assert_int_equal(model_config_load(&c, FIX "llama_gptq_q8_g128_asym_descact_qcfg", err), 0);
    assert_int_equal(c.quant.method, QUANT_GPTQ); // from quantize_config.json
    assert_int_equal(c.quant.bits, 8);
    assert_int_equal(c.quant.group_size, 128);
    assert_false(c.quant.sym);
    assert_true(c.quant.desc_act);
    assert_int_equal(c.quant.format, 1);
    assert_int_equal(model_config_load(&c, FIX "gptq_q4_gall_asym_v2", err), 0);
    assert_int_equal(c.quant.group_size, -1);
    assert_int_equal(c.quant.format, 2);
    char d[160];
    model_config_describe(&c, d, sizeof d);
    assert_non_null(strstr(d, "gptq int4"));
}

// ---- safetensors ----------------------------------------------------------------------------
struct wt { const char *name, *dtype; int ndim; int64_t shape[4]; const void *data; size_t nbytes; };

// Writes a safetensors file; `hdr_override` replaces the generated header when non-NULL.
static void st_write(const char *path, const struct wt *t, int n, const char *hdr_override) {
    static char hdr[65536];
    size_t k = 0, off = 0;
    k += (size_t)snprintf(hdr + k, sizeof hdr - k, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].nbytes);
        off += t[i].nbytes;
    }
    k += (size_t)snprintf(hdr + k, sizeof hdr - k, "}");
    const char *h = hdr_override ? hdr_override : hdr;
    uint64_t hl = strlen(h);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, hl, f);
    for (int i = 0; i < n; i++) fwrite(t[i].data, 1, t[i].nbytes, f);
    fclose(f);
}

static char tmpdir[64];

static int setup_tmp(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/pagoda_test_model_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void expect_st_error(const char *path, const char *part) {
    char err[PG_ERR_LEN] = "";
    struct st_file *f = st_open(path, err);
    assert_null(f);
    if (!strstr(err, part)) fail_msg("error '%s' lacks '%s'", err, part);
    assert_non_null(strstr(err, path));
}

static void test_safetensors(void **state) {
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, 6};
    int32_t b[2] = {7, -8};
    uint16_t h[3] = {0x3c00, 0x4000, 0xc000};
    struct wt t[] = {{"a", "F32", 2, {2, 3}, a, sizeof a}, {"b", "I32", 1, {2}, b, sizeof b},
                     {"h", "F16", 1, {3}, h, sizeof h}};
    char *p = pg_path_join(tmpdir, "ok.safetensors");
    st_write(p, t, 3, NULL);
    char err[PG_ERR_LEN];
    struct st_file *f = st_open(p, err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(st_count(f), 3);
    const struct st_tensor *x = st_find(f, "a");
    assert_non_null(x);
    assert_int_equal(x->dtype, PG_F32);
    assert_int_equal(x->shape[1], 3);
    float v[6];
    memcpy(v, x->data, sizeof v);
    assert_true(v[5] == 6);
    x = st_find(f, "b");
    int32_t bv[2];
    memcpy(bv, x->data, sizeof bv);
    assert_int_equal(bv[1], -8);
    assert_null(st_find(f, "zz"));
    st_close(f);
    // truncated: data shorter than the header says
    char *q = pg_path_join(tmpdir, "trunc.safetensors");
    size_t len;
    char *buf = pg_read_file(p, &len, err);
    FILE *w = fopen(q, "wb");
    fwrite(buf, 1, len - 5, w);
    fclose(w);
    expect_st_error(q, "truncated");
    w = fopen(q, "wb"); // header length beyond the file
    fwrite(buf, 1, 20, w);
    fclose(w);
    expect_st_error(q, "header length");
    w = fopen(q, "wb");
    fwrite(buf, 1, 3, w);
    fclose(w);
    expect_st_error(q, "truncated");
    free(buf);
    st_write(q, t, 1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}");
    expect_st_error(q, "'a'");
    st_write(q, t, 1, "{\"a\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}}");
    expect_st_error(q, "I64");
    st_write(q, t, 1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"a\":{}}");
    expect_st_error(q, "corrupt");
    st_write(q, t, 1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3]}}");
    expect_st_error(q, "data_offsets");
    st_write(q, t, 1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1,3],\"data_offsets\":[0,24]}}");
    expect_st_error(q, "shape");
    st_write(q, t, 1, "\x01\x02garbage");
    expect_st_error(q, "corrupt");
    expect_st_error("/tmp/pagoda_no_such_file.safetensors", "No such file");
    free(p);
    free(q);
}

// ---- loader ----------------------------------------------------------------------------------
// Copies fixture `name` into tmpdir/`sub` and applies a text substitution to its config.json.
static char *copy_fixture(const char *name, const char *sub, const char *from, const char *to) {
    char cmd[512];
    char *d = pg_path_join(tmpdir, sub);
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r " FIX "%s %s", d, name, d);
    assert_int_equal(system(cmd), 0);
    if (from) {
        char *cp = pg_path_join(d, "config.json");
        char *txt = pg_read_file(cp, NULL, NULL);
        char *n = subst(txt, from, to);
        FILE *f = fopen(cp, "wb");
        fputs(n, f);
        fclose(f);
        free(cp);
        free(txt);
        free(n);
    }
    return d;
}

static void expect_load_error(const char *dir, const char *p1, const char *p2) {
    char err[PG_ERR_LEN] = "";
    struct model_weights *m = model_load(dir, err);
    if (m) fail_msg("%s loaded but should fail with '%s'", dir, p1);
    if (!strstr(err, p1) || (p2 && !strstr(err, p2))) fail_msg("error '%s' lacks '%s' / '%s'", err, p1, p2 ? p2 : "");
}

static void test_load_fixtures(void **state) {
    (void)state;
    const char *names[] = {"qwen2_f32", "llama_bf16_sharded", "qwen2_bf16_tied", "gptq_q4_g32_descact",
                           "gptq_q8_g64_sym_v2"};
    char err[PG_ERR_LEN];
    for (size_t i = 0; i < 5; i++) {
        char d[256];
        snprintf(d, sizeof d, FIX "%s", names[i]);
        struct model_weights *m = model_load(d, err);
        if (!m) fail_msg("%s", err);
        const struct linear *q = &m->layers[0].q;
        assert_int_equal(q->in, m->cfg.hidden);
        assert_int_equal(q->out, m->cfg.n_heads * m->cfg.head_dim);
        assert_int_equal(q->bias.data != NULL, m->cfg.arch == ARCH_QWEN2);
        if (m->cfg.tie_embeddings) assert_ptr_equal(m->lm_head.w.data, m->embed.data);
        if (q->quantized) {
            assert_int_equal(q->bits, m->cfg.quant.bits);
            assert_int_equal(q->n_groups, q->in / q->group_size);
            assert_int_equal(q->desc_act, m->cfg.quant.desc_act);
            // dequantized weights are bounded by the scales: |w| <= (2^bits - 1) * max scale
            float *w = pg_malloc((size_t)q->in * q->out * sizeof *w), mx = 0, ms = 0;
            linear_to_f32(q, w);
            for (size_t k = 0; k < (size_t)q->in * q->out; k++) mx = w[k] > mx ? w[k] : -w[k] > mx ? -w[k] : mx;
            for (int k = 0; k < q->n_groups * q->out; k++) {
                float s = pg_f16_to_f32(((const uint16_t *)q->scales.data)[k]);
                ms = s > ms ? s : ms;
            }
            assert_true(mx > 0 && mx <= ((1 << q->bits) - 1) * ms);
            free(w);
        }
        model_free(m);
    }
}

static void test_load_errors(void **state) {
    (void)state;
    char *d = copy_fixture("qwen2_f32", "shape", "\"intermediate_size\": 128", "\"intermediate_size\": 96");
    expect_load_error(d, "model.layers.0.mlp.gate_proj.weight", "expected [96, 64], got [128, 64]");
    free(d);
    d = copy_fixture("qwen2_f32", "arch", "Qwen2ForCausalLM", "GPT2LMHeadModel");
    expect_load_error(d, "GPT2LMHeadModel", "config.json");
    free(d);
    d = copy_fixture("gptq_q4_g32_asym", "bits", "\"bits\": 4", "\"bits\": 2");
    expect_load_error(d, "bits = 2", "config.json");
    free(d);
    d = copy_fixture("gptq_q4_g32_asym", "group", "\"group_size\": 32", "\"group_size\": 64");
    expect_load_error(d, "q_proj.qzeros", "expected [2, 16], got [4, 16]");
    free(d);
    d = copy_fixture("qwen2_f32", "noquant", NULL, NULL);
    char *p = pg_path_join(d, "model.safetensors");
    unlink(p);
    expect_load_error(d, "no model.safetensors", NULL);
    // truncated weights file
    char cmd[512];
    snprintf(cmd, sizeof cmd, "head -c 100000 " FIX "qwen2_f32/model.safetensors > %s", p);
    assert_int_equal(system(cmd), 0);
    expect_load_error(d, p, "truncated");
    // a dtype mismatch (I32 norm) and a missing tensor, written from the fixture's tensors
    char err[PG_ERR_LEN];
    struct st_file *src = st_open(FIX "qwen2_f32/model.safetensors", err);
    assert_non_null(src);
    int n = st_count(src);
    struct wt *t = pg_calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        const struct st_tensor *s = st_get(src, i);
        t[i] = (struct wt){s->name, pg_dtype_name(s->dtype), s->ndim, {0}, s->data, s->nbytes};
        memcpy(t[i].shape, s->shape, sizeof t[i].shape);
        if (!strcmp(s->name, "model.norm.weight")) t[i].dtype = "I32";
    }
    st_write(p, t, n, NULL);
    expect_load_error(d, "model.norm.weight", "dtype expected F32/F16/BF16, got I32");
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, "model.norm.weight")) t[i] = t[--n];
    st_write(p, t, n, NULL);
    expect_load_error(d, "model.norm.weight", "missing");
    free(t);
    st_close(src);
    free(p);
    free(d);
    // a GPTQ checkpoint lacking one qzeros
    d = copy_fixture("gptq_q4_g32_asym", "noqzeros", NULL, NULL);
    p = pg_path_join(d, "model.safetensors");
    src = st_open(FIX "gptq_q4_g32_asym/model.safetensors", err);
    assert_non_null(src);
    n = st_count(src);
    t = pg_calloc((size_t)n, sizeof *t);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const struct st_tensor *s = st_get(src, i);
        if (!strcmp(s->name, "model.layers.1.mlp.up_proj.qzeros")) continue;
        t[k] = (struct wt){s->name, pg_dtype_name(s->dtype), s->ndim, {0}, s->data, s->nbytes};
        memcpy(t[k++].shape, s->shape, sizeof t[0].shape);
    }
    st_write(p, t, k, NULL);
    expect_load_error(d, "model.layers.1.mlp.up_proj.qzeros", "missing");
    free(t);
    st_close(src);
    free(p);
    free(d);
    expect_load_error("tests/fixtures/does_not_exist", "config.json", "missing");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_parse),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_gptq_files),
        cmocka_unit_test(test_safetensors),
        cmocka_unit_test(test_load_fixtures),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
