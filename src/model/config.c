// config.json / generation_config.json / quantize_config.json parsing (jansson).
#include "model/config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Reads an integer key; absent keeps *out. Returns -1 (err set) when present but not an int
// or outside [lo, hi].
static int get_int(json_t *o, const char *key, int *out, long long lo, long long hi,
                   const char *src, char *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) {
        pg_seterr(err, "%s: key '%s' must be an integer", src, key);
        return -1;
    }
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        pg_seterr(err, "%s: key '%s' = %lld is out of range [%lld, %lld]", src, key, x, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int get_float(json_t *o, const char *key, float *out, const char *src, char *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) {
        pg_seterr(err, "%s: key '%s' must be a number", src, key);
        return -1;
    }
    double d = json_number_value(v);
    if (!isfinite(d)) {
        pg_seterr(err, "%s: key '%s' is not finite", src, key);
        return -1;
    }
    *out = (float)d;
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *out, const char *src, char *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        pg_seterr(err, "%s: key '%s' must be true or false", src, key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int parse_dtype(const char *s, enum pg_dtype *out) {
    if (!strcmp(s, "float32")) *out = PG_F32;
    else if (!strcmp(s, "float16")) *out = PG_F16;
    else if (!strcmp(s, "bfloat16")) *out = PG_BF16;
    else return -1;
    return 0;
}

// eos_token_id: an int or a list of ints.
static int parse_eos(struct model_config *cfg, json_t *v, const char *src, char *err) {
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) {
        cfg->eos_ids[0] = (int)json_integer_value(v);
        cfg->n_eos = 1;
        return 0;
    }
    if (!json_is_array(v)) {
        pg_seterr(err, "%s: key 'eos_token_id' must be an integer or a list of integers", src);
        return -1;
    }
    size_t n = json_array_size(v);
    if (n > MODEL_MAX_EOS) {
        pg_seterr(err, "%s: 'eos_token_id' lists %zu ids (at most %d supported)", src, n, MODEL_MAX_EOS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX) {
            pg_seterr(err, "%s: 'eos_token_id'[%zu] is not a valid token id", src, i);
            return -1;
        }
        cfg->eos_ids[i] = (int)json_integer_value(e);
    }
    cfg->n_eos = (int)n;
    return 0;
}

static int parse_quant(struct quant_config *q, json_t *o, const char *src, char *err) {
    json_t *m = json_object_get(o, "quant_method");
    if (m && !json_is_string(m)) {
        pg_seterr(err, "%s: 'quant_method' must be a string", src);
        return -1;
    }
    if (m && strcmp(json_string_value(m), "gptq") != 0) {
        pg_seterr(err, "%s: quant_method '%s' is not supported (only gptq)", src, json_string_value(m));
        return -1;
    }
    q->method = QUANT_GPTQ;
    q->bits = 4;
    q->group_size = 128;
    q->sym = true;
    q->desc_act = false;
    q->format = 1;
    if (get_int(o, "bits", &q->bits, 1, 64, src, err) ||
        get_int(o, "group_size", &q->group_size, -1, 1 << 20, src, err) ||
        get_bool(o, "sym", &q->sym, src, err) || get_bool(o, "desc_act", &q->desc_act, src, err))
        return -1;
    if (q->bits != 4 && q->bits != 8) {
        pg_seterr(err, "%s: GPTQ bits = %d is not supported (4 or 8)", src, q->bits);
        return -1;
    }
    if (q->group_size == 0 || q->group_size < -1) {
        pg_seterr(err, "%s: GPTQ group_size = %d is not supported (-1 or a positive size)", src,
                  q->group_size);
        return -1;
    }
    json_t *f = json_object_get(o, "checkpoint_format");
    if (f && !json_is_null(f)) {
        const char *s = json_is_string(f) ? json_string_value(f) : "";
        if (!strcmp(s, "gptq")) q->format = 1;
        else if (!strcmp(s, "gptq_v2")) q->format = 2;
        else {
            pg_seterr(err, "%s: checkpoint_format '%s' is not supported (gptq or gptq_v2)", src, s);
            return -1;
        }
    }
    bool marlin = false;
    if (get_bool(o, "is_marlin_format", &marlin, src, err)) return -1;
    if (marlin) {
        pg_seterr(err, "%s: is_marlin_format = true is not supported (use the gptq checkpoint)", src);
        return -1;
    }
    return 0;
}

// rope: rope_scaling (HF 4.x) or rope_parameters (HF 5.x). Only the default rope is supported.
static int parse_rope(struct model_config *cfg, json_t *root, const char *src, char *err) {
    const char *keys[] = {"rope_scaling", "rope_parameters"};
    for (int k = 0; k < 2; k++) {
        json_t *r = json_object_get(root, keys[k]);
        if (!r || json_is_null(r)) continue;
        if (!json_is_object(r)) {
            pg_seterr(err, "%s: '%s' must be an object or null", src, keys[k]);
            return -1;
        }
        json_t *t = json_object_get(r, "rope_type");
        if (!t) t = json_object_get(r, "type");
        if (t && (!json_is_string(t) || strcmp(json_string_value(t), "default") != 0)) {
            pg_seterr(err, "%s: %s type '%s' is not supported (only default rope)", src, keys[k],
                      json_is_string(t) ? json_string_value(t) : "?");
            return -1;
        }
        if (get_float(r, "rope_theta", &cfg->rope_theta, src, err)) return -1;
    }
    return 0;
}

static void config_defaults(struct model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->rms_eps = 1e-6f;
    cfg->rope_theta = 10000.0f;
    cfg->max_pos = 2048;
    cfg->dtype = PG_BF16;
    cfg->bos_id = -1;
    cfg->gen = (struct gen_defaults){1.0f, 1.0f, -1, 0.0f, 1.0f, true};
}

static int parse_arch(struct model_config *cfg, json_t *root, const char *src, char *err) {
    json_t *a = json_object_get(root, "architectures");
    const char *name = NULL;
    if (json_is_array(a) && json_array_size(a) > 0 && json_is_string(json_array_get(a, 0)))
        name = json_string_value(json_array_get(a, 0));
    if (!name) {
        json_t *mt = json_object_get(root, "model_type");
        if (json_is_string(mt) && !strcmp(json_string_value(mt), "qwen2")) name = "Qwen2ForCausalLM";
        else if (json_is_string(mt) && !strcmp(json_string_value(mt), "llama")) name = "LlamaForCausalLM";
    }
    if (!name) {
        pg_seterr(err, "%s: no 'architectures' list (expected Qwen2ForCausalLM or LlamaForCausalLM)", src);
        return -1;
    }
    if (!strcmp(name, "Qwen2ForCausalLM")) cfg->arch = ARCH_QWEN2;
    else if (!strcmp(name, "LlamaForCausalLM")) cfg->arch = ARCH_LLAMA;
    else {
        pg_seterr(err, "%s: architecture '%.80s' is not supported (Qwen2ForCausalLM, LlamaForCausalLM)",
                  src, name);
        return -1;
    }
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", name);
    return 0;
}

static int parse_shapes(struct model_config *cfg, json_t *root, const char *src, char *err) {
    const int big = 1 << 24;
    if (get_int(root, "hidden_size", &cfg->hidden, 1, big, src, err) ||
        get_int(root, "intermediate_size", &cfg->intermediate, 1, big, src, err) ||
        get_int(root, "num_hidden_layers", &cfg->n_layers, 1, 4096, src, err) ||
        get_int(root, "num_attention_heads", &cfg->n_heads, 1, 4096, src, err) ||
        get_int(root, "vocab_size", &cfg->vocab, 1, 1 << 26, src, err) ||
        get_int(root, "max_position_embeddings", &cfg->max_pos, 1, 1 << 30, src, err))
        return -1;
    const char *req[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                         "num_attention_heads", "vocab_size"};
    for (int i = 0; i < 5; i++)
        if (!json_object_get(root, req[i])) {
            pg_seterr(err, "%s: required key '%s' is missing", src, req[i]);
            return -1;
        }
    cfg->n_kv_heads = cfg->n_heads;
    if (get_int(root, "num_key_value_heads", &cfg->n_kv_heads, 1, 4096, src, err)) return -1;
    cfg->head_dim = cfg->hidden / cfg->n_heads;
    if (get_int(root, "head_dim", &cfg->head_dim, 1, 1 << 16, src, err)) return -1;
    if (!json_is_integer(json_object_get(root, "head_dim")) && cfg->hidden % cfg->n_heads) {
        pg_seterr(err, "%s: hidden_size %d is not divisible by num_attention_heads %d", src,
                  cfg->hidden, cfg->n_heads);
        return -1;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        pg_seterr(err, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", src,
                  cfg->n_heads, cfg->n_kv_heads);
        return -1;
    }
    if (cfg->head_dim % 2) {
        pg_seterr(err, "%s: head_dim %d must be even for rotary embeddings", src, cfg->head_dim);
        return -1;
    }
    return 0;
}

static int parse_root(struct model_config *cfg, json_t *root, const char *src, char *err) {
    if (parse_arch(cfg, root, src, err) || parse_shapes(cfg, root, src, err)) return -1;
    if (get_float(root, "rms_norm_eps", &cfg->rms_eps, src, err) ||
        get_float(root, "rope_theta", &cfg->rope_theta, src, err) ||
        parse_rope(cfg, root, src, err) ||
        get_bool(root, "tie_word_embeddings", &cfg->tie_embeddings, src, err) ||
        get_bool(root, "mlp_bias", &cfg->mlp_bias, src, err))
        return -1;
    if (cfg->arch == ARCH_QWEN2) {
        cfg->qkv_bias = true;
        bool sw = false;
        if (get_bool(root, "use_sliding_window", &sw, src, err)) return -1;
        if (sw) {
            pg_seterr(err, "%s: use_sliding_window = true is not supported", src);
            return -1;
        }
    } else if (get_bool(root, "attention_bias", &cfg->qkv_bias, src, err)) {
        return -1;
    }
    if (!(cfg->rms_eps > 0) || !(cfg->rope_theta > 0)) {
        pg_seterr(err, "%s: rms_norm_eps and rope_theta must be positive", src);
        return -1;
    }
    json_t *dt = json_object_get(root, "dtype"); // transformers 5.x
    if (!dt || json_is_null(dt)) dt = json_object_get(root, "torch_dtype");
    if (dt && !json_is_null(dt)) {
        if (!json_is_string(dt) || parse_dtype(json_string_value(dt), &cfg->dtype)) {
            pg_seterr(err, "%s: dtype '%s' is not supported (float32, float16, bfloat16)", src,
                      json_is_string(dt) ? json_string_value(dt) : "?");
            return -1;
        }
    }
    if (get_int(root, "bos_token_id", &cfg->bos_id, -1, INT32_MAX, src, err) ||
        parse_eos(cfg, json_object_get(root, "eos_token_id"), src, err))
        return -1;
    json_t *q = json_object_get(root, "quantization_config");
    if (q && !json_is_null(q)) {
        if (!json_is_object(q)) {
            pg_seterr(err, "%s: 'quantization_config' must be an object", src);
            return -1;
        }
        char qsrc[256];
        snprintf(qsrc, sizeof qsrc, "%s quantization_config", src);
        if (parse_quant(&cfg->quant, q, qsrc, err)) return -1;
    }
    return 0;
}

static json_t *load_json(const char *text, const char *src, char *err) {
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        pg_seterr(err, "%s: invalid JSON at line %d: %s", src, je.line, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        pg_seterr(err, "%s: expected a JSON object", src);
        json_decref(root);
        return NULL;
    }
    return root;
}

int model_config_parse(struct model_config *cfg, const char *json_text, const char *src_name,
                       char *err) {
    config_defaults(cfg);
    json_t *root = load_json(json_text, src_name, err);
    if (!root) return -1;
    int rc = parse_root(cfg, root, src_name, err);
    json_decref(root);
    return rc;
}

int model_config_parse_generation(struct model_config *cfg, const char *json_text,
                                  const char *src_name, char *err) {
    json_t *root = load_json(json_text, src_name, err);
    if (!root) return -1;
    struct gen_defaults *g = &cfg->gen;
    int rc = -1;
    if (get_float(root, "temperature", &g->temperature, src_name, err) ||
        get_float(root, "top_p", &g->top_p, src_name, err) ||
        get_int(root, "top_k", &g->top_k, -1, INT32_MAX, src_name, err) ||
        get_float(root, "min_p", &g->min_p, src_name, err) ||
        get_float(root, "repetition_penalty", &g->repetition_penalty, src_name, err) ||
        get_bool(root, "do_sample", &g->do_sample, src_name, err) ||
        get_int(root, "bos_token_id", &cfg->bos_id, -1, INT32_MAX, src_name, err) ||
        parse_eos(cfg, json_object_get(root, "eos_token_id"), src_name, err))
        goto out;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static int load_file_json(const char *dir, const char *name, char **path, char **text, char *err) {
    *path = pg_path_join(dir, name);
    *text = NULL;
    if (!pg_file_exists(*path)) return 0;
    *text = pg_read_file(*path, NULL, err);
    return *text ? 0 : -1;
}

int model_config_load(struct model_config *cfg, const char *dir, char *err) {
    char *path = NULL, *text = NULL;
    int rc = -1;
    if (load_file_json(dir, "config.json", &path, &text, err)) goto out;
    if (!text) {
        pg_seterr(err, "%s: missing (not a Hugging Face model directory?)", path);
        goto out;
    }
    if (model_config_parse(cfg, text, path, err)) goto out;
    free(path), free(text);
    if (load_file_json(dir, "generation_config.json", &path, &text, err)) goto out;
    if (text && model_config_parse_generation(cfg, text, path, err)) goto out;
    free(path), free(text);
    if (load_file_json(dir, "quantize_config.json", &path, &text, err)) goto out;
    if (text && cfg->quant.method == QUANT_NONE) {
        json_t *root = load_json(text, path, err);
        if (!root) goto out;
        int q = parse_quant(&cfg->quant, root, path, err);
        json_decref(root);
        if (q) goto out;
    }
    rc = 0;
out:
    free(path);
    free(text);
    return rc;
}

void model_config_describe(const struct model_config *cfg, char *buf, size_t n) {
    char q[96] = "dense";
    if (cfg->quant.method == QUANT_GPTQ)
        snprintf(q, sizeof q, "gptq int%d g%d %s%s v%d", cfg->quant.bits, cfg->quant.group_size,
                 cfg->quant.sym ? "sym" : "asym", cfg->quant.desc_act ? " desc_act" : "",
                 cfg->quant.format);
    snprintf(buf, n,
             "%s: %d layers, hidden %d, ffn %d, heads %d/%d (dim %d), vocab %d, %s, %s%s",
             cfg->arch_name, cfg->n_layers, cfg->hidden, cfg->intermediate, cfg->n_heads,
             cfg->n_kv_heads, cfg->head_dim, cfg->vocab, pg_dtype_name(cfg->dtype), q,
             cfg->tie_embeddings ? ", tied" : "");
}
