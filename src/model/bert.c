// BERT encoder forward pass (see bert.h). Layout follows Hugging Face BertModel:
//   x = LN(word[id] + pos[i] + type[0])
//   per layer: a = LN(x + Wo . attn(Wq x, Wk x, Wv x)); x = LN(a + W2 . gelu(W1 a))
#include "model/bert.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct dense { float *w, *b; int out, in; };           // w: [out, in]
struct lnorm { float *g, *b; };

struct bert_layer {
    struct dense q, k, v, o, up, down;
    struct lnorm ln_attn, ln_out;
};

struct bert_model {
    struct bert_config c;
    float *word, *pos, *type;  // [vocab, H], [max_pos, H], [type_vocab, H]
    struct lnorm ln_emb;
    struct bert_layer *layers;
    void **owned;
    int n_owned;
};

const struct bert_config *bert_get_config(const struct bert_model *m) { return &m->c; }

static int cfg_int(json_t *root, const char *key, int dflt, int *out, const char *path, char *err) {
    json_t *v = json_object_get(root, key);
    if (!v) {
        if (dflt < 0) {
            pg_seterr(err, "%s: %s is missing", path, key);
            return -1;
        }
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 24)) {
        pg_seterr(err, "%s: %s must be a positive integer", path, key);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int parse_config(struct bert_config *c, json_t *root, const char *path, char *err) {
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (!mt || strcmp(mt, "bert") != 0) {
        pg_seterr(err, "%s: model_type %s is not supported for embeddings (bert is)", path, mt ? mt : "(none)");
        return -1;
    }
    if (cfg_int(root, "hidden_size", -1, &c->hidden, path, err) ||
        cfg_int(root, "num_hidden_layers", -1, &c->n_layers, path, err) ||
        cfg_int(root, "num_attention_heads", -1, &c->n_heads, path, err) ||
        cfg_int(root, "intermediate_size", -1, &c->intermediate, path, err) ||
        cfg_int(root, "max_position_embeddings", 512, &c->max_pos, path, err) ||
        cfg_int(root, "type_vocab_size", 2, &c->type_vocab, path, err) ||
        cfg_int(root, "vocab_size", -1, &c->vocab, path, err))
        return -1;
    if (c->hidden % c->n_heads) {
        pg_seterr(err, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, c->hidden, c->n_heads);
        return -1;
    }
    json_t *eps = json_object_get(root, "layer_norm_eps");
    c->ln_eps = json_is_number(eps) ? (float)json_number_value(eps) : 1e-12f;
    const char *act = json_string_value(json_object_get(root, "hidden_act"));
    if (act && strcmp(act, "gelu") != 0 && strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0) {
        pg_seterr(err, "%s: hidden_act %s is not supported", path, act);
        return -1;
    }
    c->gelu_tanh = act && strcmp(act, "gelu") != 0;
    const char *pe = json_string_value(json_object_get(root, "position_embedding_type"));
    if (pe && strcmp(pe, "absolute") != 0) {
        pg_seterr(err, "%s: position_embedding_type %s is not supported", path, pe);
        return -1;
    }
    return 0;
}

// A minimal safetensors view: the mapped file and its JSON header. Only the tensors BERT
// needs are looked up (others, e.g. an I64 position_ids buffer, are ignored).
struct stview {
    uint8_t *map;
    size_t size, data_off;
    json_t *header;
};

static int stview_open(struct stview *v, const char *path, char *err) {
    memset(v, 0, sizeof *v);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        pg_seterr(err, "%s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    v->size = (size_t)st.st_size;
    v->map = v->size >= 8 ? mmap(NULL, v->size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    if (v->map == MAP_FAILED) {
        v->map = NULL;
        pg_seterr(err, "%s: cannot map (too small or unreadable)", path);
        return -1;
    }
    uint64_t hl;
    memcpy(&hl, v->map, 8);
    json_error_t je;
    if (hl > v->size - 8 || !(v->header = json_loadb((const char *)v->map + 8, (size_t)hl, 0, &je))) {
        pg_seterr(err, "%s: corrupt safetensors header", path);
        return -1;
    }
    v->data_off = 8 + (size_t)hl;
    return 0;
}

static void stview_close(struct stview *v) {
    json_decref(v->header);
    if (v->map) munmap(v->map, v->size);
}

struct wload {
    struct bert_model *m;
    struct stview st;
    const char *prefix;   // "" or "bert."
    const char *path;
    char *err;
};

static int parse_dtype(const char *s, enum pg_dtype *t) {
    if (!s) return -1;
    if (strcmp(s, "F32") == 0) *t = PG_F32;
    else if (strcmp(s, "F16") == 0) *t = PG_F16;
    else if (strcmp(s, "BF16") == 0) *t = PG_BF16;
    else return -1;
    return 0;
}

// Copies tensor `name` (shape [rows] when cols == 0, else [rows, cols]) to an owned f32 buffer.
static float *get(struct wload *L, const char *name, int64_t rows, int64_t cols) {
    char full[160];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    json_t *t = json_object_get(L->st.header, full);
    if (!t) {
        pg_seterr(L->err, "%s: tensor %s is missing", L->path, full);
        return NULL;
    }
    json_t *shape = json_object_get(t, "shape"), *offs = json_object_get(t, "data_offsets");
    enum pg_dtype dt = PG_F32;
    size_t nd = json_array_size(shape);
    int64_t s0 = json_integer_value(json_array_get(shape, 0)), s1 = json_integer_value(json_array_get(shape, 1));
    bool ok = parse_dtype(json_string_value(json_object_get(t, "dtype")), &dt) == 0 &&
              (cols ? (nd == 2 && s0 == rows && s1 == cols) : (nd == 1 && s0 == rows));
    if (!ok) {
        pg_seterr(L->err, "%s: tensor %s: expected F32/F16/BF16 [%lld%s%lld], got %s with %zu dims [%lld, %lld]",
                  L->path, full, (long long)rows, cols ? ", " : "", (long long)(cols ? cols : 0),
                  json_string_value(json_object_get(t, "dtype")) ? json_string_value(json_object_get(t, "dtype")) : "?",
                  nd, (long long)s0, (long long)s1);
        return NULL;
    }
    size_t n = (size_t)(rows * (cols ? cols : 1));
    json_int_t b = json_integer_value(json_array_get(offs, 0)), e = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || e < b || (size_t)(e - b) != n * pg_dtype_size(dt) || (size_t)e > L->st.size - L->st.data_off) {
        pg_seterr(L->err, "%s: tensor %s has invalid data_offsets", L->path, full);
        return NULL;
    }
    float *p = pg_malloc(n * sizeof(float));
    pg_to_f32(dt, L->st.map + L->st.data_off + b, p, n);
    L->m->owned = pg_realloc(L->m->owned, (size_t)(L->m->n_owned + 1) * sizeof(void *));
    L->m->owned[L->m->n_owned++] = p;
    return p;
}

static int get_dense(struct wload *L, const char *name, int out, int in, struct dense *d) {
    char nm[160];
    d->out = out;
    d->in = in;
    snprintf(nm, sizeof nm, "%s.weight", name);
    if (!(d->w = get(L, nm, out, in))) return -1;
    snprintf(nm, sizeof nm, "%s.bias", name);
    return (d->b = get(L, nm, out, 0)) ? 0 : -1;
}

static int get_ln(struct wload *L, const char *name, int h, struct lnorm *n) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s.weight", name);
    if (!(n->g = get(L, nm, h, 0))) return -1;
    snprintf(nm, sizeof nm, "%s.bias", name);
    return (n->b = get(L, nm, h, 0)) ? 0 : -1;
}

static int load_weights(struct wload *L) {
    struct bert_model *m = L->m;
    const struct bert_config *c = &m->c;
    L->prefix = json_object_get(L->st.header, "embeddings.word_embeddings.weight") ? "" : "bert.";
    if (!(m->word = get(L, "embeddings.word_embeddings.weight", c->vocab, c->hidden)) ||
        !(m->pos = get(L, "embeddings.position_embeddings.weight", c->max_pos, c->hidden)) ||
        !(m->type = get(L, "embeddings.token_type_embeddings.weight", c->type_vocab, c->hidden)) ||
        get_ln(L, "embeddings.LayerNorm", c->hidden, &m->ln_emb))
        return -1;
    m->layers = pg_calloc((size_t)c->n_layers, sizeof *m->layers);
    for (int i = 0; i < c->n_layers; i++) {
        struct bert_layer *y = &m->layers[i];
        char p[64], nm[128];
        snprintf(p, sizeof p, "encoder.layer.%d", i);
#define SUB(s) (snprintf(nm, sizeof nm, "%s.%s", p, s), nm)
        if (get_dense(L, SUB("attention.self.query"), c->hidden, c->hidden, &y->q) ||
            get_dense(L, SUB("attention.self.key"), c->hidden, c->hidden, &y->k) ||
            get_dense(L, SUB("attention.self.value"), c->hidden, c->hidden, &y->v) ||
            get_dense(L, SUB("attention.output.dense"), c->hidden, c->hidden, &y->o) ||
            get_ln(L, SUB("attention.output.LayerNorm"), c->hidden, &y->ln_attn) ||
            get_dense(L, SUB("intermediate.dense"), c->intermediate, c->hidden, &y->up) ||
            get_dense(L, SUB("output.dense"), c->hidden, c->intermediate, &y->down) ||
            get_ln(L, SUB("output.LayerNorm"), c->hidden, &y->ln_out))
            return -1;
#undef SUB
    }
    return 0;
}

struct bert_model *bert_load(const char *dir, char *err) {
    char *path = pg_path_join(dir, "config.json");
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    struct bert_model *m = NULL;
    if (!root) {
        pg_seterr(err, "%s: %s", path, je.text);
        free(path);
        return NULL;
    }
    m = pg_calloc(1, sizeof *m);
    int rc = parse_config(&m->c, root, path, err);
    json_decref(root);
    free(path);
    if (rc == 0) {
        struct wload L = {m, {0}, "", NULL, err};
        char *st = pg_path_join(dir, "model.safetensors");
        L.path = st;
        rc = stview_open(&L.st, st, err) ? -1 : load_weights(&L);
        stview_close(&L.st);
        free(st);
    }
    if (rc) {
        bert_free(m);
        return NULL;
    }
    return m;
}

void bert_free(struct bert_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m);
}

// y[n, out] = x[n, in] . W^T + b (+ y when accumulate)
static void linear(const struct dense *d, const float *x, int n, float *y, bool accumulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d->out, d->in, 1.0f, x, d->in, d->w, d->in,
                accumulate ? 1.0f : 0.0f, y, d->out);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < d->out; j++) y[(size_t)t * d->out + j] += d->b[j];
}

static void layer_norm(const struct lnorm *ln, float *x, int n, int h, float eps) {
    for (int t = 0; t < n; t++) {
        float *r = x + (size_t)t * h;
        double mean = 0, var = 0;
        for (int j = 0; j < h; j++) mean += r[j];
        mean /= h;
        for (int j = 0; j < h; j++) var += (r[j] - mean) * (r[j] - mean);
        var /= h;
        float inv = (float)(1.0 / sqrt(var + eps));
        for (int j = 0; j < h; j++) r[j] = (float)(r[j] - mean) * inv * ln->g[j] + ln->b[j];
    }
}

static float gelu(float x, bool tanh_approx) {
    if (tanh_approx) return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x)));
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// ctx[n, H] = softmax(q k^T / sqrt(d)) v, per head (no mask: one unpadded sequence).
static void attention(const struct bert_config *c, const float *q, const float *k, const float *v, int n,
                      float *scores, float *ctx) {
    int H = c->hidden, d = H / c->n_heads;
    for (int h = 0; h < c->n_heads; h++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, 1.0f / sqrtf((float)d), q + h * d, H,
                    k + h * d, H, 0.0f, scores, n);
        for (int t = 0; t < n; t++) {
            float *r = scores + (size_t)t * n, mx = r[0], sum = 0;
            for (int j = 1; j < n; j++) mx = r[j] > mx ? r[j] : mx;
            for (int j = 0; j < n; j++) sum += (r[j] = expf(r[j] - mx));
            for (int j = 0; j < n; j++) r[j] /= sum;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, 1.0f, scores, n, v + h * d, H, 0.0f,
                    ctx + h * d, H);
    }
}

int bert_forward(const struct bert_model *m, const int32_t *ids, int n, float *x, char *err) {
    const struct bert_config *c = &m->c;
    int H = c->hidden, ni = c->intermediate;
    if (n < 1 || n > c->max_pos) {
        pg_seterr(err, "sequence of %d tokens is outside 1..%d", n, c->max_pos);
        return -1;
    }
    for (int t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= c->vocab) {
            pg_seterr(err, "token id %d is outside the vocabulary (%d)", ids[t], c->vocab);
            return -1;
        }
        for (int j = 0; j < H; j++)
            x[(size_t)t * H + j] = m->word[(size_t)ids[t] * H + j] + m->pos[(size_t)t * H + j] + m->type[j];
    }
    layer_norm(&m->ln_emb, x, n, H, c->ln_eps);
    size_t nh = (size_t)n * H;
    float *buf = pg_malloc((4 * nh + (size_t)n * n + (size_t)n * ni) * sizeof(float));
    float *q = buf, *k = q + nh, *v = k + nh, *ctx = v + nh, *scores = ctx + nh, *mid = scores + (size_t)n * n;
    for (int l = 0; l < c->n_layers; l++) {
        const struct bert_layer *y = &m->layers[l];
        linear(&y->q, x, n, q, false);
        linear(&y->k, x, n, k, false);
        linear(&y->v, x, n, v, false);
        attention(c, q, k, v, n, scores, ctx);
        linear(&y->o, ctx, n, x, true); // x += Wo ctx + bo  (residual)
        layer_norm(&y->ln_attn, x, n, H, c->ln_eps);
        linear(&y->up, x, n, mid, false);
        for (size_t j = 0; j < (size_t)n * ni; j++) mid[j] = gelu(mid[j], c->gelu_tanh);
        linear(&y->down, mid, n, x, true);
        layer_norm(&y->ln_out, x, n, H, c->ln_eps);
    }
    free(buf);
    return 0;
}
