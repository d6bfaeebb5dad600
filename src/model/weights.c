// Hugging Face checkpoint loader: config + safetensors -> struct model_weights (dense or GPTQ).
#include "model/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

struct loader_priv {
    struct st_file *st;
    void **owned;
    int n_owned, cap_owned;
};

void model_own(struct model_weights *m, void *p) {
    struct loader_priv *lp = m->priv;
    if (!lp) lp = m->priv = pg_calloc(1, sizeof *lp); // loaders other than model_load (GGUF)
    if (lp->n_owned == lp->cap_owned) {
        lp->cap_owned = lp->cap_owned ? 2 * lp->cap_owned : 64;
        lp->owned = pg_realloc(lp->owned, (size_t)lp->cap_owned * sizeof *lp->owned);
    }
    lp->owned[lp->n_owned++] = p;
}

void model_free(struct model_weights *m) {
    if (!m) return;
    struct loader_priv *lp = m->priv;
    if (lp) {
        for (int i = 0; i < lp->n_owned; i++) free(lp->owned[i]);
        free(lp->owned);
        st_close(lp->st);
        free(lp);
    }
    free(m->layers);
    free(m);
}

static bool is_float(enum pg_dtype t) { return t == PG_F32 || t == PG_F16 || t == PG_BF16; }

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

// Finds `name`, checks dtype class and shape; a misaligned tensor is copied into an owned
// buffer. Missing + optional: returns 0 with t->data NULL.
static int get_tensor(struct model_weights *m, const char *name, bool want_float, int ndim,
                      const int64_t *shape, bool optional, struct tensor *t, char *err) {
    struct loader_priv *lp = m->priv;
    memset(t, 0, sizeof *t);
    const struct st_tensor *s = st_find(lp->st, name);
    if (!s) {
        if (optional) return 0;
        pg_seterr(err, "tensor '%s' is missing from the checkpoint", name);
        return -1;
    }
    if (want_float ? !is_float(s->dtype) : s->dtype != PG_I32) {
        pg_seterr(err, "%s: tensor '%s': dtype expected %s, got %s", s->file, name,
                  want_float ? "F32/F16/BF16" : "I32", pg_dtype_name(s->dtype));
        return -1;
    }
    bool ok = s->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = s->shape[i] == shape[i];
    if (!ok) {
        char e[96], a[96];
        fmt_shape(e, sizeof e, ndim, shape);
        fmt_shape(a, sizeof a, s->ndim, s->shape);
        pg_seterr(err, "%s: tensor '%s': shape expected %s, got %s", s->file, name, e, a);
        return -1;
    }
    t->dtype = s->dtype;
    t->ndim = s->ndim;
    memcpy(t->shape, s->shape, sizeof t->shape);
    t->data = s->data;
    if ((uintptr_t)s->data % pg_dtype_size(s->dtype)) { // unaligned: keep an aligned copy
        void *p = pg_malloc(s->nbytes);
        memcpy(p, s->data, s->nbytes);
        model_own(m, p);
        t->data = p;
    }
    return 0;
}

static int get_vec(struct model_weights *m, const char *name, int64_t n, bool optional,
                   struct tensor *t, char *err) {
    return get_tensor(m, name, true, 1, &n, optional, t, err);
}

// GPTQ tensors of `base` (qweight, qzeros, scales, g_idx) into l.
static int load_gptq(struct model_weights *m, const char *base, struct linear *l, char *err) {
    const struct quant_config *q = &m->cfg.quant;
    char name[256];
    int bits = q->bits, pack = 32 / bits;
    if (l->in % pack || l->out % pack) {
        pg_seterr(err, "%s: in %d / out %d not divisible by %d (GPTQ %d-bit packing)", base, l->in,
                  l->out, pack, bits);
        return -1;
    }
    l->quantized = true;
    l->bits = bits;
    l->group_size = q->group_size < 0 ? l->in : q->group_size;
    l->n_groups = (l->in + l->group_size - 1) / l->group_size;
    struct tensor qw, qz, gi;
    snprintf(name, sizeof name, "%s.qweight", base);
    if (get_tensor(m, name, false, 2, (int64_t[]){l->in / pack, l->out}, false, &qw, err)) return -1;
    snprintf(name, sizeof name, "%s.qzeros", base);
    if (get_tensor(m, name, false, 2, (int64_t[]){l->n_groups, l->out / pack}, false, &qz, err))
        return -1;
    snprintf(name, sizeof name, "%s.scales", base);
    if (get_tensor(m, name, true, 2, (int64_t[]){l->n_groups, l->out}, false, &l->scales, err))
        return -1;
    snprintf(name, sizeof name, "%s.g_idx", base);
    if (get_tensor(m, name, false, 1, (int64_t[]){l->in}, true, &gi, err)) return -1;
    l->qweight = qw.data;
    uint8_t *zeros = pg_malloc((size_t)l->n_groups * l->out);
    model_own(m, zeros);
    const uint32_t *pz = qz.data;
    uint32_t mask = (1u << bits) - 1;
    int add = q->format == 1 ? 1 : 0;
    for (int g = 0; g < l->n_groups; g++)
        for (int o = 0; o < l->out; o++) {
            uint32_t word = pz[(size_t)g * (l->out / pack) + o / pack];
            zeros[(size_t)g * l->out + o] = (uint8_t)((((word >> (bits * (o % pack))) & mask) + add) & mask);
        }
    l->zeros = zeros;
    if (gi.data) {
        const int32_t *g = gi.data;
        l->desc_act = false;
        for (int i = 0; i < l->in; i++) {
            if (g[i] < 0 || g[i] >= l->n_groups) {
                pg_seterr(err, "tensor '%s': g_idx[%d] = %d is outside [0, %d)", name, i, g[i], l->n_groups);
                return -1;
            }
            if (g[i] != i / l->group_size) l->desc_act = true;
        }
        l->g_idx = g;
    } else {
        int32_t *g = pg_malloc((size_t)l->in * sizeof *g);
        model_own(m, g);
        for (int i = 0; i < l->in; i++) g[i] = i / l->group_size;
        l->g_idx = g;
        l->desc_act = false;
    }
    return 0;
}

// Loads `base`.weight (dense) or the GPTQ tensors when `base`.qweight exists, plus bias.
static int load_linear(struct model_weights *m, const char *base, int in, int out, bool bias,
                       struct linear *l, char *err) {
    char name[256];
    memset(l, 0, sizeof *l);
    l->in = in;
    l->out = out;
    snprintf(name, sizeof name, "%s.qweight", base);
    struct loader_priv *lp = m->priv;
    if (st_find(lp->st, name)) {
        if (m->cfg.quant.method != QUANT_GPTQ) {
            pg_seterr(err, "tensor '%s' is quantized but config.json has no GPTQ quantization_config", name);
            return -1;
        }
        if (load_gptq(m, base, l, err)) return -1;
    } else {
        snprintf(name, sizeof name, "%s.weight", base);
        if (get_tensor(m, name, true, 2, (int64_t[]){out, in}, false, &l->w, err)) {
            if (m->cfg.quant.method == QUANT_GPTQ && !st_find(lp->st, name))
                pg_seterr(err, "tensor '%s.qweight' (GPTQ) is missing from the checkpoint", base);
            return -1;
        }
    }
    snprintf(name, sizeof name, "%s.bias", base);
    return get_vec(m, name, out, !bias, &l->bias, err);
}

static int load_layer(struct model_weights *m, int i, char *err) {
    const struct model_config *c = &m->cfg;
    struct layer_weights *L = &m->layers[i];
    char p[128], name[192];
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    snprintf(p, sizeof p, "model.layers.%d", i);
    snprintf(name, sizeof name, "%s.input_layernorm.weight", p);
    if (get_vec(m, name, c->hidden, false, &L->attn_norm, err)) return -1;
    snprintf(name, sizeof name, "%s.post_attention_layernorm.weight", p);
    if (get_vec(m, name, c->hidden, false, &L->ffn_norm, err)) return -1;
    struct { const char *n; struct linear *l; int in, out; bool bias; } lin[] = {
        {"self_attn.q_proj", &L->q, c->hidden, qd, c->qkv_bias},
        {"self_attn.k_proj", &L->k, c->hidden, kvd, c->qkv_bias},
        {"self_attn.v_proj", &L->v, c->hidden, kvd, c->qkv_bias},
        {"self_attn.o_proj", &L->o, qd, c->hidden, false},
        {"mlp.gate_proj", &L->gate, c->hidden, c->intermediate, c->mlp_bias},
        {"mlp.up_proj", &L->up, c->hidden, c->intermediate, c->mlp_bias},
        {"mlp.down_proj", &L->down, c->intermediate, c->hidden, c->mlp_bias},
    };
    for (size_t k = 0; k < sizeof lin / sizeof lin[0]; k++) {
        snprintf(name, sizeof name, "%s.%s", p, lin[k].n);
        if (load_linear(m, name, lin[k].in, lin[k].out, lin[k].bias, lin[k].l, err)) return -1;
    }
    return 0;
}

struct model_weights *model_load(const char *dir, char *err) {
    struct model_weights *m = pg_calloc(1, sizeof *m);
    struct loader_priv *lp = pg_calloc(1, sizeof *lp);
    m->priv = lp;
    char e2[PG_ERR_LEN];
    if (model_config_load(&m->cfg, dir, err)) goto fail;
    lp->st = st_open_dir(dir, err);
    if (!lp->st) goto fail;
    const struct model_config *c = &m->cfg;
    int64_t es[2] = {c->vocab, c->hidden};
    if (get_tensor(m, "model.embed_tokens.weight", true, 2, es, false, &m->embed, err)) goto fail;
    if (get_vec(m, "model.norm.weight", c->hidden, false, &m->final_norm, err)) goto fail;
    m->layers = pg_calloc((size_t)c->n_layers, sizeof *m->layers);
    for (int i = 0; i < c->n_layers; i++)
        if (load_layer(m, i, err)) goto fail;
    m->lm_head.in = c->hidden;
    m->lm_head.out = c->vocab;
    if (c->tie_embeddings) {
        m->lm_head.w = m->embed;
    } else if (get_tensor(m, "lm_head.weight", true, 2, es, false, &m->lm_head.w, err)) {
        goto fail;
    }
    return m;
fail:
    if (err) { // prefix with the directory when the message does not name a file already
        snprintf(e2, sizeof e2, "%s", err);
        if (!strstr(e2, dir)) snprintf(err, PG_ERR_LEN, "%.200s: %.300s", dir, e2);
    }
    model_free(m);
    return NULL;
}

void linear_to_f32(const struct linear *l, float *dst) {
    size_t n = (size_t)l->in * l->out;
    if (!l->quantized) {
        pg_to_f32(l->w.dtype, l->w.data, dst, n);
        return;
    }
    int pack = 32 / l->bits;
    uint32_t mask = (1u << l->bits) - 1;
    const uint32_t *qw = (const uint32_t *)l->qweight;
    float *sc = pg_malloc((size_t)l->n_groups * l->out * sizeof *sc);
    pg_to_f32(l->scales.dtype, l->scales.data, sc, (size_t)l->n_groups * l->out);
    for (int i = 0; i < l->in; i++) {
        int g = l->g_idx[i];
        for (int o = 0; o < l->out; o++) {
            uint32_t word = qw[(size_t)(i / pack) * l->out + o];
            int qv = (int)((word >> (l->bits * (i % pack))) & mask);
            size_t gi = (size_t)g * l->out + o;
            dst[(size_t)o * l->in + i] = (float)(qv - (int)l->zeros[gi]) * sc[gi];
        }
    }
    free(sc);
}
