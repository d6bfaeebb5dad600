// GGUF -> struct model_weights for the qwen2 and llama architectures. Every tensor is
// dequantized into an owned dense buffer (the file is closed before returning), so backends
// see the same form as a Hugging Face checkpoint.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf.h"

struct gload {
    struct gguf_file *f;
    struct model_weights *m;
    enum pg_dtype wdtype;
    bool requant;         // Q4_0/Q5_0/Q8_0 linears -> GPTQ form (exact) instead of dense
    const char *path;
    char *err;
};

static int meta_int(struct gload *g, const char *arch, const char *key, int64_t *out, bool required) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!gguf_find_kv(g->f, k) && !required) return 1;
    if (gguf_get_int(g->f, k, out, g->err)) return -1;
    if (*out <= 0 || *out > (1 << 24)) {
        pg_seterr(g->err, "%s: %s = %lld is out of range", g->path, k, (long long)*out);
        return -1;
    }
    return 0;
}

static void add_eos(struct model_config *c, int64_t id) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return;
    if (c->n_eos < MODEL_MAX_EOS) c->eos_ids[c->n_eos++] = (int)id;
}

// End-of-generation ids: eos/eot from metadata, plus the control tokens whose text marks the
// end of a turn or of the text (as llama.cpp does; e.g. Qwen's <|endoftext|> next to <|im_end|>).
static void read_eos(struct gguf_file *f, struct model_config *c) {
    int64_t v;
    if (gguf_get_int(f, "tokenizer.ggml.eos_token_id", &v, NULL) == 0 && v >= 0) add_eos(c, v);
    if (gguf_get_int(f, "tokenizer.ggml.eot_token_id", &v, NULL) == 0 && v >= 0) add_eos(c, v);
    const struct gguf_kv *toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
    const struct gguf_kv *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (!toks || toks->type != GGUF_ARR || toks->arr_type != GGUF_STR || !types || types->type != GGUF_ARR ||
        types->arr_type != GGUF_I32 || types->arr_n != toks->arr_n)
        return;
    static const char *const eog[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>",
                                      "<end_of_turn>", "<|end|>"};
    for (uint64_t i = 0; i < toks->arr_n; i++) {
        int32_t ty;
        memcpy(&ty, (const uint8_t *)types->arr_data + 4 * i, 4);
        if (ty != 3) continue; // control
        for (size_t k = 0; k < sizeof eog / sizeof *eog; k++)
            if (toks->arr_str[i].n == strlen(eog[k]) && memcmp(toks->arr_str[i].p, eog[k], toks->arr_str[i].n) == 0)
                add_eos(c, (int64_t)i);
    }
}

static void gen_defaults(struct gen_defaults *d) {
    d->temperature = 1.0f;
    d->top_p = 1.0f;
    d->top_k = -1;
    d->min_p = 0.0f;
    d->repetition_penalty = 1.0f;
    d->do_sample = true;
}

static int read_config(struct gload *g, struct model_config *c) {
    char *arch = gguf_get_str(g->f, "general.architecture", g->err);
    if (!arch) return -1;
    int rc = -1;
    int64_t v;
    double fv;
    memset(c, 0, sizeof *c);
    if (strcmp(arch, "qwen2") == 0) {
        c->arch = ARCH_QWEN2;
        snprintf(c->arch_name, sizeof c->arch_name, "Qwen2ForCausalLM");
    } else if (strcmp(arch, "llama") == 0) {
        c->arch = ARCH_LLAMA;
        snprintf(c->arch_name, sizeof c->arch_name, "LlamaForCausalLM");
    } else {
        pg_seterr(g->err, "%s: architecture '%.60s' is not supported (qwen2, llama are)", g->path, arch);
        goto out;
    }
    if (meta_int(g, arch, "block_count", &v, true) < 0) goto out;
    c->n_layers = (int)v;
    if (meta_int(g, arch, "embedding_length", &v, true) < 0) goto out;
    c->hidden = (int)v;
    if (meta_int(g, arch, "feed_forward_length", &v, true) < 0) goto out;
    c->intermediate = (int)v;
    if (meta_int(g, arch, "attention.head_count", &v, true) < 0) goto out;
    c->n_heads = (int)v;
    int r = meta_int(g, arch, "attention.head_count_kv", &v, false);
    if (r < 0) goto out;
    c->n_kv_heads = r == 0 ? (int)v : c->n_heads;
    r = meta_int(g, arch, "attention.key_length", &v, false);
    if (r < 0) goto out;
    c->head_dim = r == 0 ? (int)v : c->hidden / c->n_heads;
    r = meta_int(g, arch, "context_length", &v, false);
    if (r < 0) goto out;
    c->max_pos = r == 0 ? (int)v : 4096;
    char k[128];
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", arch);
    if (gguf_get_float(g->f, k, &fv, g->err)) goto out;
    c->rms_eps = (float)fv;
    snprintf(k, sizeof k, "%s.rope.freq_base", arch);
    c->rope_theta = gguf_find_kv(g->f, k) && gguf_get_float(g->f, k, &fv, NULL) == 0 ? (float)fv : 10000.0f;
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    char *scaling = gguf_find_kv(g->f, k) ? gguf_get_str(g->f, k, NULL) : NULL;
    bool bad_scaling = scaling && strcmp(scaling, "none") != 0;
    if (bad_scaling) pg_seterr(g->err, "%s: %s = '%.40s' is not supported", g->path, k, scaling);
    free(scaling);
    if (bad_scaling) goto out;
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads || c->head_dim % 2) {
        pg_seterr(g->err, "%s: inconsistent heads (%d heads, %d kv heads, head_dim %d)", g->path, c->n_heads,
                  c->n_kv_heads, c->head_dim);
        goto out;
    }
    c->dtype = g->wdtype;
    c->bos_id = -1;
    if (gguf_get_int(g->f, "tokenizer.ggml.bos_token_id", &v, NULL) == 0) c->bos_id = (int)v;
    read_eos(g->f, c);
    gen_defaults(&c->gen);
    c->quant.method = QUANT_NONE;
    rc = 0;
out:
    free(arch);
    return rc;
}

// Finds a tensor and checks its HF-order shape (rows, cols; cols == 0 for a vector).
static const struct gguf_tensor *find(struct gload *g, const char *name, int64_t rows, int64_t cols, bool optional) {
    const struct gguf_tensor *t = gguf_find_tensor(g->f, name);
    if (!t) {
        if (!optional) pg_seterr(g->err, "%s: tensor %s is missing", g->path, name);
        return NULL;
    }
    int want_dims = cols ? 2 : 1;
    bool ok = t->n_dims == want_dims && (cols ? (t->ne[0] == cols && t->ne[1] == rows) : t->ne[0] == rows);
    if (!ok) {
        pg_seterr(g->err, "%s: tensor %s has shape ne=[%lld,%lld] (%d dims), expected ne=[%lld,%lld]", g->path,
                  name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims, (long long)(cols ? cols : rows),
                  (long long)(cols ? rows : 1));
        return NULL;
    }
    if (ggml_type_block(t->type, NULL, NULL) != 0) {
        pg_seterr(g->err, "%s: tensor %s has type %s, which is not supported", g->path, name,
                  ggml_type_name(t->type));
        return NULL;
    }
    return t;
}

// llama.cpp's converter permuted the Q/K rows of each head so that RoPE pairs are adjacent:
// GGUF row 2*j+s of a head is Hugging Face row s*hd/2+j. Returns the GGUF row of HF row r.
static int64_t gguf_row(int64_t r, int64_t rows, int n_head) {
    if (!n_head) return r;
    int64_t hd = rows / n_head, h = r / hd, i = r % hd, half = hd / 2;
    return h * hd + 2 * (i % half) + i / half;
}

struct deq_job {
    const struct gguf_tensor *t;
    uint8_t *dst;
    enum pg_dtype dtype;
    int64_t rows, cols, r0, r1;
    size_t row_bytes;
    int permute_heads; // rows (matrix) or elements (vector) are un-permuted when > 0
    bool mat;
};

// Rows [r0, r1) of a job, in Hugging Face row order. Types were checked by find(), so
// ggml_dequant cannot fail here.
static void *deq_rows(void *arg) {
    const struct deq_job *j = arg;
    float *tmp = pg_malloc((size_t)j->cols * 2 * sizeof(float)), *perm = tmp + j->cols;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const uint8_t *src = (const uint8_t *)j->t->data +
                             (size_t)gguf_row(r, j->rows, j->mat ? j->permute_heads : 0) * j->row_bytes;
        float *v = tmp;
        PG_CHECK(ggml_dequant(j->t->type, src, tmp, j->cols, NULL) == 0);
        if (!j->mat && j->permute_heads) { // a q/k bias: permute its elements like rows
            for (int64_t i = 0; i < j->cols; i++) perm[i] = tmp[gguf_row(i, j->cols, j->permute_heads)];
            v = perm;
        }
        if (j->dtype == PG_BF16) {
            uint16_t *d = (uint16_t *)j->dst + (size_t)r * j->cols;
            for (int64_t i = 0; i < j->cols; i++) d[i] = pg_f32_to_bf16(v[i]);
        } else {
            memcpy(j->dst + (size_t)r * j->cols * 4, v, (size_t)j->cols * 4);
        }
    }
    free(tmp);
    return NULL;
}

#define DEQ_MAX_THREADS 8

// Dequantizes t into an owned buffer of dtype (F32 or BF16) in Hugging Face row order
// (un-permuting Q/K rows when permute_heads > 0); large tensors are split across threads.
static int load_dense(struct gload *g, const struct gguf_tensor *t, enum pg_dtype dtype, int permute_heads,
                      struct tensor *out) {
    bool mat = t->n_dims > 1;
    int64_t rows = mat ? t->ne[1] : 1, cols = t->ne[0];
    if (permute_heads && (mat ? rows : cols) % (2 * permute_heads)) {
        pg_seterr(g->err, "%s: tensor %.*s cannot be split into %d heads", g->path, (int)t->name.n, t->name.p,
                  permute_heads);
        return -1;
    }
    size_t n = (size_t)(rows * cols), esz = dtype == PG_BF16 ? 2 : 4;
    struct deq_job base = {t, pg_malloc(n * esz), dtype, rows, cols, 0, rows, (size_t)(t->nbytes / (uint64_t)rows),
                           permute_heads, mat};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = n < (1u << 20) || ncpu < 2 ? 1 : (int)(ncpu < DEQ_MAX_THREADS ? ncpu : DEQ_MAX_THREADS);
    struct deq_job jobs[DEQ_MAX_THREADS];
    pthread_t th[DEQ_MAX_THREADS];
    int started = 0;
    for (int i = 0; i < nt; i++) {
        jobs[i] = base;
        jobs[i].r0 = rows * i / nt;
        jobs[i].r1 = rows * (i + 1) / nt;
        if (i > 0 && pthread_create(&th[i], NULL, deq_rows, &jobs[i]) == 0) started |= 1 << i;
    }
    deq_rows(&jobs[0]);
    for (int i = 1; i < nt; i++) {
        if (started & (1 << i)) pthread_join(th[i], NULL);
        else deq_rows(&jobs[i]); // thread creation failed: do its share here
    }
    out->ndim = mat ? 2 : 1;
    out->shape[0] = mat ? rows : cols;
    out->shape[1] = mat ? cols : 0;
    out->dtype = dtype;
    out->data = base.dst;
    model_own(g->m, base.dst);
    return 0;
}

// Q4_0 / Q5_0 / Q8_0 blocks hold (q - z) * d with an integer q and one fp16 scale per 32
// inputs: exactly the GPTQ form of weights.h (bits 4 or 8, group 32, zero z), so such a linear
// is stored as qweight/zeros/scales/g_idx without any rounding. Returns 1 if t is not such a type.
static int load_gptq(struct gload *g, const struct gguf_tensor *t, int permute_heads, struct linear *l) {
    int zero, bits;
    switch (t->type) {
    case GGML_T_Q4_0: zero = 8, bits = 4; break;
    case GGML_T_Q5_0: zero = 16, bits = 8; break;
    case GGML_T_Q8_0: zero = 128, bits = 8; break;
    default: return 1;
    }
    int in = (int)t->ne[0], out = (int)t->ne[1], ng = in / 32, pack = 32 / bits;
    int bb = t->type == GGML_T_Q4_0 ? 18 : t->type == GGML_T_Q5_0 ? 22 : 34;
    uint32_t *qw = pg_calloc((size_t)in / (size_t)pack * (size_t)out, sizeof *qw);
    uint8_t *zeros = pg_malloc((size_t)ng * out);
    uint16_t *scales = pg_malloc((size_t)ng * out * sizeof *scales);
    int32_t *gidx = pg_malloc((size_t)in * sizeof *gidx);
    memset(zeros, zero, (size_t)ng * out);
    for (int i = 0; i < in; i++) gidx[i] = i / 32;
    for (int o = 0; o < out; o++) {
        const uint8_t *row = (const uint8_t *)t->data + (size_t)gguf_row(o, out, permute_heads) * (size_t)ng * bb;
        for (int b = 0; b < ng; b++) {
            const uint8_t *blk = row + (size_t)b * bb;
            uint8_t q[32];
            memcpy(&scales[(size_t)b * out + o], blk, 2);
            if (t->type == GGML_T_Q8_0) {
                for (int j = 0; j < 32; j++) q[j] = (uint8_t)((int8_t)blk[2 + j] + 128);
            } else if (t->type == GGML_T_Q4_0) {
                for (int j = 0; j < 16; j++) q[j] = blk[2 + j] & 0xF, q[j + 16] = blk[2 + j] >> 4;
            } else {
                uint32_t qh;
                memcpy(&qh, blk + 2, 4);
                for (int j = 0; j < 16; j++) {
                    q[j] = (uint8_t)((blk[6 + j] & 0xF) | (((qh >> j) & 1) << 4));
                    q[j + 16] = (uint8_t)((blk[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
                }
            }
            for (int j = 0; j < 32; j++) {
                int i = b * 32 + j;
                qw[(size_t)(i / pack) * out + o] |= (uint32_t)q[j] << (bits * (i % pack));
            }
        }
    }
    l->quantized = true;
    l->bits = bits;
    l->group_size = 32;
    l->n_groups = ng;
    l->desc_act = false;
    l->qweight = (const int32_t *)qw;
    l->zeros = zeros;
    l->g_idx = gidx;
    l->scales = (struct tensor){.dtype = PG_F16, .ndim = 2, .shape = {ng, out}, .data = scales};
    model_own(g->m, qw);
    model_own(g->m, zeros);
    model_own(g->m, scales);
    model_own(g->m, gidx);
    return 0;
}

static int load_linear(struct gload *g, const char *name, int64_t out_dim, int64_t in_dim, int permute_heads,
                       bool want_bias, struct linear *l) {
    char nm[96];
    snprintf(nm, sizeof nm, "%s.weight", name);
    const struct gguf_tensor *t = find(g, nm, out_dim, in_dim, false);
    if (!t) return -1;
    int r = g->requant ? load_gptq(g, t, permute_heads, l) : 1;
    if (r == 1 && load_dense(g, t, g->wdtype, permute_heads, &l->w)) return -1;
    l->in = (int)in_dim;
    l->out = (int)out_dim;
    snprintf(nm, sizeof nm, "%s.bias", name);
    const struct gguf_tensor *b = find(g, nm, out_dim, 0, true);
    if (!b && gguf_find_tensor(g->f, nm)) return -1; // present with the wrong shape
    if (b && load_dense(g, b, PG_F32, permute_heads, &l->bias)) return -1;
    if (want_bias && !b) {
        pg_seterr(g->err, "%s: tensor %s is missing", g->path, nm);
        return -1;
    }
    return 0;
}

static int load_layer(struct gload *g, int i, struct layer_weights *L) {
    const struct model_config *c = &g->m->cfg;
    char p[64], nm[96];
    snprintf(p, sizeof p, "blk.%d", i);
    int perm = c->arch == ARCH_LLAMA;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kd = (int64_t)c->n_kv_heads * c->head_dim;
    const struct gguf_tensor *t;
    snprintf(nm, sizeof nm, "%s.attn_norm.weight", p);
    if (!(t = find(g, nm, c->hidden, 0, false)) || load_dense(g, t, PG_F32, 0, &L->attn_norm)) return -1;
    snprintf(nm, sizeof nm, "%s.ffn_norm.weight", p);
    if (!(t = find(g, nm, c->hidden, 0, false)) || load_dense(g, t, PG_F32, 0, &L->ffn_norm)) return -1;
    snprintf(nm, sizeof nm, "%s.attn_q", p);
    if (load_linear(g, nm, qd, c->hidden, perm ? c->n_heads : 0, c->qkv_bias, &L->q)) return -1;
    snprintf(nm, sizeof nm, "%s.attn_k", p);
    if (load_linear(g, nm, kd, c->hidden, perm ? c->n_kv_heads : 0, c->qkv_bias, &L->k)) return -1;
    snprintf(nm, sizeof nm, "%s.attn_v", p);
    if (load_linear(g, nm, kd, c->hidden, 0, c->qkv_bias, &L->v)) return -1;
    snprintf(nm, sizeof nm, "%s.attn_output", p);
    if (load_linear(g, nm, c->hidden, qd, 0, false, &L->o)) return -1;
    snprintf(nm, sizeof nm, "%s.ffn_gate", p);
    if (load_linear(g, nm, c->intermediate, c->hidden, 0, false, &L->gate)) return -1;
    snprintf(nm, sizeof nm, "%s.ffn_up", p);
    if (load_linear(g, nm, c->intermediate, c->hidden, 0, false, &L->up)) return -1;
    snprintf(nm, sizeof nm, "%s.ffn_down", p);
    return load_linear(g, nm, c->hidden, c->intermediate, 0, false, &L->down);
}

static int load_all(struct gload *g) {
    struct model_weights *m = g->m;
    struct model_config *c = &m->cfg;
    if (read_config(g, c)) return -1;
    const struct gguf_tensor *emb = gguf_find_tensor(g->f, "token_embd.weight");
    if (!emb || emb->n_dims != 2) {
        pg_seterr(g->err, "%s: tensor token_embd.weight is missing or not 2-D", g->path);
        return -1;
    }
    c->vocab = (int)emb->ne[1];
    c->tie_embeddings = gguf_find_tensor(g->f, "output.weight") == NULL;
    c->qkv_bias = gguf_find_tensor(g->f, "blk.0.attn_q.bias") != NULL;
    if (!find(g, "token_embd.weight", c->vocab, c->hidden, false) || load_dense(g, emb, g->wdtype, 0, &m->embed))
        return -1;
    const struct gguf_tensor *t = find(g, "output_norm.weight", c->hidden, 0, false);
    if (!t || load_dense(g, t, PG_F32, 0, &m->final_norm)) return -1;
    m->layers = pg_calloc((size_t)c->n_layers, sizeof *m->layers);
    for (int i = 0; i < c->n_layers; i++)
        if (load_layer(g, i, &m->layers[i])) return -1;
    if (c->tie_embeddings) {
        m->lm_head.in = c->hidden;
        m->lm_head.out = c->vocab;
        m->lm_head.w = m->embed;
        return 0;
    }
    g->requant = false; // lm_head is dense (weights.h)
    return load_linear(g, "output", c->vocab, c->hidden, 0, false, &m->lm_head);
}

struct model_weights *model_load_gguf_opts(const char *path, enum pg_dtype wdtype, bool requant, char *err) {
    if (wdtype != PG_F32 && wdtype != PG_BF16) {
        pg_seterr(err, "GGUF import: weights dtype must be F32 or BF16");
        return NULL;
    }
    struct gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    struct gload g = {f, pg_calloc(1, sizeof(struct model_weights)), wdtype, requant, path, err};
    int rc = load_all(&g);
    gguf_close(f);
    if (rc) {
        model_free(g.m);
        return NULL;
    }
    char desc[256];
    model_config_describe(&g.m->cfg, desc, sizeof desc);
    pg_info("loaded GGUF %s: %s", path, desc);
    return g.m;
}

struct model_weights *model_load_gguf_ex(const char *path, enum pg_dtype wdtype, char *err) {
    return model_load_gguf_opts(path, wdtype, false, err);
}

struct model_weights *model_load_gguf(const char *path, char *err) {
    return model_load_gguf_opts(path, PG_BF16, false, err);
}

struct model_weights *model_open(const char *path, char *err) {
    char *g = model_gguf_path(path);
    if (!g) return model_load(path, err);
    struct model_weights *m = model_load_gguf(g, err);
    free(g);
    return m;
}
