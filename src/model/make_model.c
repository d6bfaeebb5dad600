// Random-weight Qwen2.5 checkpoints (see make_model.h).
#include "model/make_model.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/sampling.h"  // pg_mix64

struct preset {
    const char *name;
    int hidden, inter, layers, heads, kv, vocab, max_window;
    float eps;
    bool tie;
};

static const struct preset presets[] = {
    {"qwen2.5-0.5b", 896, 4864, 24, 14, 2, 151936, 21, 1e-6f, true},
    {"qwen2.5-1.5b", 1536, 8960, 28, 12, 2, 151936, 21, 1e-6f, true},
    {"qwen2.5-3b", 2048, 11008, 36, 16, 2, 151936, 70, 1e-6f, true},
    {"qwen2.5-7b", 3584, 18944, 28, 28, 4, 152064, 28, 1e-6f, false},
    {"qwen2.5-14b", 5120, 13824, 48, 40, 8, 152064, 48, 1e-5f, false},
    {"qwen2.5-32b", 5120, 27648, 64, 40, 8, 152064, 64, 1e-5f, false},
    {"qwen2.5-72b", 8192, 29568, 80, 64, 8, 152064, 80, 1e-6f, false},
    {"tiny", 256, 512, 2, 4, 2, 512, 2, 1e-6f, true},
};

const char *make_model_presets(void) {
    return "qwen2.5-0.5b|qwen2.5-1.5b|qwen2.5-3b|qwen2.5-7b|qwen2.5-14b|qwen2.5-32b|qwen2.5-72b|tiny";
}

static const struct preset *find_preset(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

int make_model_config(const char *name, bool gptq, struct model_config *c, char *err) {
    const struct preset *p = find_preset(name);
    if (!p) {
        pg_seterr(err, "unknown preset '%s' (expected %s)", name, make_model_presets());
        return -1;
    }
    memset(c, 0, sizeof *c);
    c->arch = ARCH_QWEN2;
    snprintf(c->arch_name, sizeof c->arch_name, "Qwen2ForCausalLM");
    c->hidden = p->hidden;
    c->intermediate = p->inter;
    c->n_layers = p->layers;
    c->n_heads = p->heads;
    c->n_kv_heads = p->kv;
    c->head_dim = p->hidden / p->heads;
    c->vocab = p->vocab;
    c->max_pos = 32768;
    c->rms_eps = p->eps;
    c->rope_theta = 1000000.0f;
    c->tie_embeddings = p->tie && !gptq;  // the GPTQ releases ship an untied fp16 lm_head
    c->qkv_bias = true;
    c->dtype = gptq ? PG_F16 : PG_BF16;
    if (gptq) {
        c->quant.method = QUANT_GPTQ;
        c->quant.bits = 4;
        c->quant.group_size = 128;
        c->quant.sym = true;
        c->quant.format = 1;
    }
    c->bos_id = 151643;
    c->eos_ids[0] = 151645;
    c->eos_ids[1] = 151643;
    c->n_eos = 2;
    if (c->vocab < 151936) {  // tiny: keep ids inside the vocab
        c->bos_id = c->vocab - 2;
        c->eos_ids[0] = c->vocab - 1;
        c->eos_ids[1] = c->vocab - 2;
    }
    c->gen = (struct gen_defaults){0.7f, 0.8f, 20, 0.0f, 1.05f, true};
    return 0;
}

// ---- the tensor list ----

enum mm_kind { MK_UNIFORM, MK_NORM, MK_QWEIGHT, MK_QZEROS, MK_SCALES, MK_GIDX };

struct mm_t {
    char name[112];
    enum pg_dtype dtype;
    int ndim;
    int64_t shape[2];
    enum mm_kind kind;
    float a;        // uniform half-width (MK_UNIFORM, MK_NORM) or mean scale (MK_SCALES)
    int gs, bits;   // MK_GIDX, MK_QZEROS
    uint64_t id;
    size_t nbytes;
};

struct mm_list {
    struct mm_t *t;
    int n, cap;
};

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static struct mm_t *add(struct mm_list *l, const char *name, enum pg_dtype dt, int64_t d0, int64_t d1, enum mm_kind k,
                        float a) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->t = pg_realloc(l->t, sizeof(struct mm_t) * l->cap);
    }
    struct mm_t *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->kind = k;
    t->a = a;
    t->id = name_hash(name);
    t->nbytes = (size_t)d0 * (d1 ? d1 : 1) * pg_dtype_size(dt);
    return t;
}

#define W_STD 0.02f
#define SQRT3 1.7320508f

static void add_linear(struct mm_list *l, const struct model_config *c, const char *base, int in, int out, bool bias) {
    char n[112];
    if (c->quant.method == QUANT_GPTQ) {
        int bits = c->quant.bits, gs = c->quant.group_size, ng = in / gs;
        snprintf(n, sizeof n, "%s.qweight", base);
        add(l, n, PG_I32, in * bits / 32, out, MK_QWEIGHT, 0);
        snprintf(n, sizeof n, "%s.qzeros", base);
        add(l, n, PG_I32, ng, out * bits / 32, MK_QZEROS, 0)->bits = bits;
        snprintf(n, sizeof n, "%s.scales", base);
        // (q - zero) has std ~4.6 for uniform 4-bit q: scale so that weights have std W_STD
        add(l, n, PG_F16, ng, out, MK_SCALES, bits == 4 ? W_STD / 4.6f : W_STD / 73.9f);
        snprintf(n, sizeof n, "%s.g_idx", base);
        add(l, n, PG_I32, in, 0, MK_GIDX, 0)->gs = gs;
    } else {
        snprintf(n, sizeof n, "%s.weight", base);
        add(l, n, c->dtype, out, in, MK_UNIFORM, W_STD * SQRT3);
    }
    if (bias) {
        snprintf(n, sizeof n, "%s.bias", base);
        add(l, n, c->dtype, out, 0, MK_UNIFORM, W_STD * SQRT3);
    }
}

static void build_list(const struct model_config *c, struct mm_list *l) {
    char n[112];
    int H = c->hidden, qo = c->n_heads * c->head_dim, kvo = c->n_kv_heads * c->head_dim;
    add(l, "model.embed_tokens.weight", c->dtype, c->vocab, H, MK_UNIFORM, W_STD * SQRT3);
    for (int i = 0; i < c->n_layers; i++) {
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", i);
        add(l, n, c->dtype, H, 0, MK_NORM, 0.05f);
        static const char *attn[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s", i, attn[k]);
            add_linear(l, c, n, k == 3 ? qo : H, k == 0 ? qo : k == 3 ? H : kvo, k < 3 && c->qkv_bias);
        }
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", i);
        add(l, n, c->dtype, H, 0, MK_NORM, 0.05f);
        static const char *mlp[] = {"gate_proj", "up_proj", "down_proj"};
        for (int k = 0; k < 3; k++) {
            snprintf(n, sizeof n, "model.layers.%d.mlp.%s", i, mlp[k]);
            add_linear(l, c, n, k == 2 ? c->intermediate : H, k == 2 ? H : c->intermediate, false);
        }
    }
    add(l, "model.norm.weight", c->dtype, H, 0, MK_NORM, 0.05f);
    if (!c->tie_embeddings) add(l, "lm_head.weight", c->dtype, c->vocab, H, MK_UNIFORM, W_STD * SQRT3);
}

// ---- parallel fill ----

static inline float unif(uint64_t seed, uint64_t id, size_t i) {
    uint64_t h = pg_mix64(seed ^ id ^ pg_mix64(i));
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

static void store(enum pg_dtype dt, void *dst, size_t i, float v) {
    if (dt == PG_BF16) ((uint16_t *)dst)[i] = pg_f32_to_bf16(v);
    else if (dt == PG_F16) ((uint16_t *)dst)[i] = pg_f32_to_f16(v);
    else ((float *)dst)[i] = v;
}

static void fill_range(const struct mm_t *t, uint64_t seed, void *dst, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
        switch (t->kind) {
        case MK_UNIFORM: store(t->dtype, dst, i, (2 * unif(seed, t->id, i) - 1) * t->a); break;
        case MK_NORM: store(t->dtype, dst, i, 1 + (2 * unif(seed, t->id, i) - 1) * t->a); break;
        case MK_QWEIGHT: ((uint32_t *)dst)[i] = (uint32_t)pg_mix64(seed ^ t->id ^ pg_mix64(i)); break;
        case MK_QZEROS: ((uint32_t *)dst)[i] = t->bits == 4 ? 0x77777777u : 0x7f7f7f7fu; break;
        case MK_SCALES: store(PG_F16, dst, i, t->a * (0.75f + 0.5f * unif(seed, t->id, i))); break;
        case MK_GIDX: ((int32_t *)dst)[i] = (int32_t)(i / t->gs); break;
        }
    }
}

struct fill_job {
    const struct mm_t *t;
    uint64_t seed;
    void *dst;
    size_t i0, i1;
};

static void *fill_thread(void *arg) {
    struct fill_job *j = arg;
    fill_range(j->t, j->seed, j->dst, j->i0, j->i1);
    return NULL;
}

static int threads_for(int n_threads) {
    if (n_threads > 0) return n_threads > 64 ? 64 : n_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static void fill(const struct mm_t *t, uint64_t seed, void *dst, int nt) {
    size_t n = t->nbytes / pg_dtype_size(t->dtype);
    if (n < 65536 || nt == 1) {
        fill_range(t, seed, dst, 0, n);
        return;
    }
    pthread_t th[64];
    struct fill_job jobs[64];
    for (int k = 0; k < nt; k++) {
        jobs[k] = (struct fill_job){t, seed, dst, n * k / nt, n * (k + 1) / nt};
        if (pthread_create(&th[k], NULL, fill_thread, &jobs[k])) fill_thread(&jobs[k]), th[k] = 0;
    }
    for (int k = 0; k < nt; k++)
        if (th[k]) pthread_join(th[k], NULL);
}

// ---- in memory ----

struct mm_priv {
    void **bufs;
    int n;
};

static const void *buf_of(const struct mm_list *l, void **bufs, const char *fmt, int layer, const char *part) {
    char n[112];
    snprintf(n, sizeof n, fmt, layer, part);
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->t[i].name, n)) return bufs[i];
    return NULL;
}

static struct tensor mk_tensor(enum pg_dtype dt, int64_t d0, int64_t d1, const void *data) {
    struct tensor t = {dt, d1 ? 2 : 1, {d0, d1, 0, 0}, data};
    return t;
}

static void wire_linear(struct linear *lin, const struct model_config *c, const struct mm_list *l, void **bufs,
                        int layer, const char *base, int in, int out, bool bias, struct mm_priv *pv) {
    char fmt[112];
    memset(lin, 0, sizeof *lin);
    lin->in = in;
    lin->out = out;
    if (c->quant.method == QUANT_GPTQ) {
        lin->quantized = true;
        lin->bits = c->quant.bits;
        lin->group_size = c->quant.group_size;
        lin->n_groups = in / lin->group_size;
        snprintf(fmt, sizeof fmt, "model.layers.%%d.%%s.qweight");
        lin->qweight = buf_of(l, bufs, fmt, layer, base);
        snprintf(fmt, sizeof fmt, "model.layers.%%d.%%s.scales");
        lin->scales = mk_tensor(PG_F16, lin->n_groups, out, buf_of(l, bufs, fmt, layer, base));
        snprintf(fmt, sizeof fmt, "model.layers.%%d.%%s.g_idx");
        lin->g_idx = buf_of(l, bufs, fmt, layer, base);
        uint8_t *z = pg_malloc((size_t)lin->n_groups * out);
        memset(z, lin->bits == 4 ? 8 : 128, (size_t)lin->n_groups * out);  // qzeros (z - 1) + 1
        lin->zeros = z;
        pv->bufs = pg_realloc(pv->bufs, sizeof(void *) * (pv->n + 1));
        pv->bufs[pv->n++] = z;
    } else {
        snprintf(fmt, sizeof fmt, "model.layers.%%d.%%s.weight");
        lin->w = mk_tensor(c->dtype, out, in, buf_of(l, bufs, fmt, layer, base));
    }
    if (bias) {
        snprintf(fmt, sizeof fmt, "model.layers.%%d.%%s.bias");
        lin->bias = mk_tensor(c->dtype, out, 0, buf_of(l, bufs, fmt, layer, base));
    }
}

struct model_weights *make_model_weights(const struct model_config *c, uint64_t seed, int n_threads, char *err) {
    struct mm_list l = {0};
    build_list(c, &l);
    int nt = threads_for(n_threads);
    void **bufs = pg_calloc(l.n, sizeof(void *));
    for (int i = 0; i < l.n; i++) {
        bufs[i] = malloc(l.t[i].nbytes);
        if (!bufs[i]) {
            for (int k = 0; k < i; k++) free(bufs[k]);
            free(bufs);
            pg_seterr(err, "make-model: out of host memory for %s (%zu bytes)", l.t[i].name, l.t[i].nbytes);
            free(l.t);
            return NULL;
        }
        fill(&l.t[i], seed, bufs[i], nt);
    }
    struct model_weights *w = pg_calloc(1, sizeof *w);
    struct mm_priv *pv = pg_calloc(1, sizeof *pv);
    w->cfg = *c;
    w->priv = pv;
    int H = c->hidden, qo = c->n_heads * c->head_dim, kvo = c->n_kv_heads * c->head_dim, I = c->intermediate;
    w->embed = mk_tensor(c->dtype, c->vocab, H, bufs[0]);
    w->layers = pg_calloc(c->n_layers, sizeof(struct layer_weights));
    for (int i = 0; i < c->n_layers; i++) {
        struct layer_weights *L = &w->layers[i];
        L->attn_norm = mk_tensor(c->dtype, H, 0, buf_of(&l, bufs, "model.layers.%d.%s.weight", i, "input_layernorm"));
        L->ffn_norm = mk_tensor(c->dtype, H, 0, buf_of(&l, bufs, "model.layers.%d.%s.weight", i, "post_attention_layernorm"));
        wire_linear(&L->q, c, &l, bufs, i, "self_attn.q_proj", H, qo, c->qkv_bias, pv);
        wire_linear(&L->k, c, &l, bufs, i, "self_attn.k_proj", H, kvo, c->qkv_bias, pv);
        wire_linear(&L->v, c, &l, bufs, i, "self_attn.v_proj", H, kvo, c->qkv_bias, pv);
        wire_linear(&L->o, c, &l, bufs, i, "self_attn.o_proj", qo, H, false, pv);
        wire_linear(&L->gate, c, &l, bufs, i, "mlp.gate_proj", H, I, false, pv);
        wire_linear(&L->up, c, &l, bufs, i, "mlp.up_proj", H, I, false, pv);
        wire_linear(&L->down, c, &l, bufs, i, "mlp.down_proj", I, H, false, pv);
    }
    for (int i = 0; i < l.n; i++) {
        if (!strcmp(l.t[i].name, "model.norm.weight")) w->final_norm = mk_tensor(c->dtype, H, 0, bufs[i]);
        if (!strcmp(l.t[i].name, "lm_head.weight")) w->lm_head.w = mk_tensor(c->dtype, c->vocab, H, bufs[i]);
    }
    if (c->tie_embeddings) w->lm_head.w = w->embed;
    w->lm_head.in = H;
    w->lm_head.out = c->vocab;
    pv->bufs = pg_realloc(pv->bufs, sizeof(void *) * (pv->n + l.n));
    for (int i = 0; i < l.n; i++) pv->bufs[pv->n++] = bufs[i];
    free(bufs);
    free(l.t);
    return w;
}

void make_model_free(struct model_weights *w) {
    if (!w) return;
    struct mm_priv *pv = w->priv;
    for (int i = 0; pv && i < pv->n; i++) free(pv->bufs[i]);
    if (pv) free(pv->bufs);
    free(pv);
    free(w->layers);
    free(w);
}

// ---- on disk ----

static const char *st_dtype(enum pg_dtype t) {
    switch (t) {
    case PG_BF16: return "BF16";
    case PG_F16: return "F16";
    case PG_F32: return "F32";
    default: return "I32";
    }
}

static int write_json(const char *dir, const char *name, json_t *j, char *err) {
    char *path = pg_path_join(dir, name);
    int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (rc) pg_seterr(err, "make-model: cannot write %s", path);
    free(path);
    json_decref(j);
    return rc ? -1 : 0;
}

static int write_configs(const char *dir, const struct model_config *c, char *err) {
    const struct preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (presets[i].hidden == c->hidden && presets[i].layers == c->n_layers && presets[i].inter == c->intermediate)
            p = &presets[i];
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", "Qwen2ForCausalLM"));
    json_object_set_new(j, "attention_dropout", json_real(0.0));
    json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(j, "eos_token_id", json_integer(c->eos_ids[0]));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "hidden_size", json_integer(c->hidden));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "intermediate_size", json_integer(c->intermediate));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_pos));
    json_object_set_new(j, "max_window_layers", json_integer(p ? p->max_window : c->n_layers));
    json_object_set_new(j, "model_type", json_string("qwen2"));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    char eps[32];
    snprintf(eps, sizeof eps, "%g", c->rms_eps);
    json_object_set_new(j, "rms_norm_eps", json_real(strtod(eps, NULL)));
    json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(j, "sliding_window", json_integer(131072));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    json_object_set_new(j, "torch_dtype", json_string(c->dtype == PG_F16 ? "float16" : c->dtype == PG_F32 ? "float32" : "bfloat16"));
    json_object_set_new(j, "transformers_version", json_string("4.43.1"));
    json_object_set_new(j, "use_cache", json_true());
    json_object_set_new(j, "use_sliding_window", json_false());
    json_object_set_new(j, "vocab_size", json_integer(c->vocab));
    if (c->quant.method == QUANT_GPTQ) {
        json_t *q = json_object();
        json_object_set_new(q, "bits", json_integer(c->quant.bits));
        json_object_set_new(q, "checkpoint_format", json_string("gptq"));
        json_object_set_new(q, "damp_percent", json_real(0.01));
        json_object_set_new(q, "desc_act", json_false());
        json_object_set_new(q, "group_size", json_integer(c->quant.group_size));
        json_object_set_new(q, "model_file_base_name", json_string("model"));
        json_object_set_new(q, "model_name_or_path", json_null());
        json_object_set_new(q, "quant_method", json_string("gptq"));
        json_object_set_new(q, "static_groups", json_false());
        json_object_set_new(q, "sym", json_true());
        json_object_set_new(q, "true_sequential", json_true());
        json_object_set_new(j, "quantization_config", q);
    }
    if (write_json(dir, "config.json", j, err)) return -1;
    j = json_object();
    json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(j, "pad_token_id", json_integer(c->eos_ids[1]));
    json_object_set_new(j, "do_sample", json_true());
    json_object_set_new(j, "eos_token_id", json_pack("[ii]", c->eos_ids[0], c->eos_ids[1]));
    json_object_set_new(j, "repetition_penalty", json_real(1.05));
    json_object_set_new(j, "temperature", json_real(0.7));
    json_object_set_new(j, "top_p", json_real(0.8));
    json_object_set_new(j, "top_k", json_integer(20));
    json_object_set_new(j, "transformers_version", json_string("4.37.0"));
    return write_json(dir, "generation_config.json", j, err);
}

// Writes tensors [a, b) of the list as one safetensors file.
static int write_shard(const char *path, const struct mm_list *l, int a, int b, uint64_t seed, int nt, char *err) {
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t off = 0, maxb = 0;
    for (int i = a; i < b; i++) {
        const struct mm_t *t = &l->t[i];
        json_t *shape = t->ndim == 2 ? json_pack("[II]", (json_int_t)t->shape[0], (json_int_t)t->shape[1])
                                     : json_pack("[I]", (json_int_t)t->shape[0]);
        json_object_set_new(h, t->name, json_pack("{s:s,s:o,s:[II]}", "dtype", st_dtype(t->dtype), "shape", shape,
                                                  "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes)));
        off += t->nbytes;
        if (t->nbytes > maxb) maxb = t->nbytes;
    }
    char *hs = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    size_t hl = strlen(hs), padded = (hl + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    void *buf = malloc(maxb ? maxb : 1);
    int rc = -1;
    if (!f || !buf) {
        pg_seterr(err, "make-model: cannot write %s: %s", path, f ? "out of memory" : strerror(errno));
        goto done;
    }
    uint64_t le = padded;
    if (fwrite(&le, 8, 1, f) != 1 || fwrite(hs, 1, hl, f) != hl) goto io;
    for (size_t i = hl; i < padded; i++)
        if (fputc(' ', f) == EOF) goto io;
    for (int i = a; i < b; i++) {
        fill(&l->t[i], seed, buf, nt);
        if (fwrite(buf, 1, l->t[i].nbytes, f) != l->t[i].nbytes) goto io;
    }
    if (fclose(f)) {
        f = NULL;
        goto io;
    }
    f = NULL;
    rc = 0;
    goto done;
io:
    pg_seterr(err, "make-model: writing %s: %s", path, strerror(errno));
done:
    if (f) fclose(f);
    free(buf);
    free(hs);
    return rc;
}

int make_model_write(const char *dir, const struct model_config *c, uint64_t seed, double shard_gb, int n_threads,
                     char *err) {
    if (mkdir(dir, 0755) && errno != EEXIST) {
        pg_seterr(err, "make-model: cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (write_configs(dir, c, err)) return -1;
    struct mm_list l = {0};
    build_list(c, &l);
    const size_t limit = shard_gb > 0 ? (size_t)(shard_gb * 1e9) : (size_t)4e9;
    int *start = pg_malloc(sizeof(int) * (l.n + 1)), ns = 0;
    size_t acc = 0, total = 0;
    for (int i = 0; i < l.n; i++) {
        if (i == 0 || (acc + l.t[i].nbytes > limit && acc > 0)) {
            start[ns++] = i;
            acc = 0;
        }
        acc += l.t[i].nbytes;
        total += l.t[i].nbytes;
    }
    start[ns] = l.n;
    int nt = threads_for(n_threads), rc = 0;
    json_t *map = json_object();
    for (int s = 0; s < ns && !rc; s++) {
        char name[64];
        if (ns == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, ns);
        char *path = pg_path_join(dir, name);
        rc = write_shard(path, &l, start[s], start[s + 1], seed, nt, err);
        free(path);
        for (int i = start[s]; i < start[s + 1]; i++) json_object_set_new(map, l.t[i].name, json_string(name));
    }
    if (!rc && ns > 1) {
        json_t *idx = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
        rc = write_json(dir, "model.safetensors.index.json", idx, err);
    } else {
        json_decref(map);
    }
    free(start);
    free(l.t);
    return rc;
}
