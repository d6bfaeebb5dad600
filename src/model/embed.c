// Sentence-transformers models: modules.json (Transformer -> Pooling -> [Normalize]),
// 1_Pooling/config.json, sentence_bert_config.json (max_seq_length), a BERT encoder (bert.c)
// and its WordPiece tokenizer (tokenizer/wordpiece.c). Implements model/embed.h.
#include "model/embed.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/bert.h"
#include "tokenizer/wordpiece.h"

// Pooling modes, in the order sentence-transformers concatenates them.
enum { POOL_CLS = 1, POOL_MAX = 2, POOL_MEAN = 4, POOL_MEAN_SQRT = 8, POOL_LAST = 16 };

struct embed_model {
    struct bert_model *bert;
    struct wordpiece *tok;
    int pool;          // POOL_* bits
    int n_modes;
    bool normalize;
    int max_tokens;
    int hidden;
};

static json_t *load_json(const char *dir, const char *name, bool required, char *err) {
    char *p = pg_path_join(dir, name);
    json_t *j = NULL;
    if (pg_file_exists(p)) {
        json_error_t je;
        j = json_load_file(p, 0, &je);
        if (!j) pg_seterr(err, "%s: %s (line %d)", p, je.text, je.line);
    } else if (required) {
        pg_seterr(err, "%s: missing", p);
    }
    free(p);
    return j;
}

// Reads modules.json; *sub gets the Transformer's path and *pool_dir the Pooling's (malloc'd).
static int read_modules(struct embed_model *m, const char *dir, char **sub, char **pool_dir, char *err) {
    char e2[PG_ERR_LEN] = "";
    json_t *mods = load_json(dir, "modules.json", false, e2);
    if (!mods && e2[0]) { pg_seterr(err, "%s", e2); return -1; }
    *sub = pg_strdup("");
    *pool_dir = NULL;
    if (!mods) return 0; // plain Hugging Face BertModel: mean pooling, no normalization
    size_t i;
    json_t *v;
    int rc = 0;
    json_array_foreach(mods, i, v) {
        const char *type = json_string_value(json_object_get(v, "type"));
        const char *path = json_string_value(json_object_get(v, "path"));
        if (!type) continue;
        const char *leaf = strrchr(type, '.') ? strrchr(type, '.') + 1 : type;
        if (strcmp(leaf, "Transformer") == 0) {
            free(*sub);
            *sub = pg_strdup(path ? path : "");
        } else if (strcmp(leaf, "Pooling") == 0) {
            free(*pool_dir);
            *pool_dir = pg_strdup(path ? path : "1_Pooling");
        } else if (strcmp(leaf, "Normalize") == 0) {
            m->normalize = true;
        } else {
            pg_seterr(err, "%s/modules.json: module %s is not supported", dir, type);
            rc = -1;
            break;
        }
    }
    json_decref(mods);
    return rc;
}

static int read_pooling(struct embed_model *m, const char *dir, const char *pool_dir, char *err) {
    m->pool = POOL_MEAN;
    if (!pool_dir) return 0;
    char *pd = pg_path_join(dir, pool_dir);
    json_t *pc = load_json(pd, "config.json", true, err);
    free(pd);
    if (!pc) return -1;
    static const struct { const char *key; int bit; } modes[] = {
        {"pooling_mode_cls_token", POOL_CLS}, {"pooling_mode_max_tokens", POOL_MAX},
        {"pooling_mode_mean_tokens", POOL_MEAN}, {"pooling_mode_mean_sqrt_len_tokens", POOL_MEAN_SQRT},
        {"pooling_mode_lasttoken", POOL_LAST},
    };
    m->pool = 0;
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        if (json_is_true(json_object_get(pc, modes[i].key))) m->pool |= modes[i].bit;
    int rc = 0;
    if (json_is_true(json_object_get(pc, "pooling_mode_weightedmean_tokens"))) {
        pg_seterr(err, "%s/%s/config.json: weighted-mean pooling is not supported", dir, pool_dir);
        rc = -1;
    } else if (m->pool == 0) {
        pg_seterr(err, "%s/%s/config.json: no pooling mode is enabled", dir, pool_dir);
        rc = -1;
    }
    json_decref(pc);
    return rc;
}

static void read_max_len(struct embed_model *m, const char *dir, int max_pos) {
    m->max_tokens = max_pos;
    json_t *sb = load_json(dir, "sentence_bert_config.json", false, NULL);
    json_t *v = sb ? json_object_get(sb, "max_seq_length") : NULL;
    if (json_is_integer(v) && json_integer_value(v) >= 2 && json_integer_value(v) < max_pos)
        m->max_tokens = (int)json_integer_value(v);
    json_decref(sb);
}

struct embed_model *embed_model_load(const char *dir, char *err) {
    struct embed_model *m = pg_calloc(1, sizeof *m);
    char *sub = NULL, *pool_dir = NULL, *mdir = NULL, *tokp = NULL;
    if (read_modules(m, dir, &sub, &pool_dir, err) || read_pooling(m, dir, pool_dir, err)) goto fail;
    mdir = sub[0] ? pg_path_join(dir, sub) : pg_strdup(dir);
    if (!(m->bert = bert_load(mdir, err))) goto fail;
    tokp = pg_path_join(mdir, "tokenizer.json");
    if (!(m->tok = wp_load(tokp, err))) goto fail;
    const struct bert_config *c = bert_get_config(m->bert);
    if (wp_vocab_size(m->tok) > c->vocab) {
        pg_seterr(err, "%s: tokenizer vocabulary (%d) is larger than the model's (%d)", tokp, wp_vocab_size(m->tok),
                  c->vocab);
        goto fail;
    }
    m->hidden = c->hidden;
    for (int b = 1; b <= POOL_LAST; b <<= 1) m->n_modes += (m->pool & b) != 0;
    read_max_len(m, dir, c->max_pos);
    pg_info("embedding model %s: BERT %d layers, hidden %d, pooling 0x%x, normalize %d, max %d tokens", dir,
            c->n_layers, c->hidden, m->pool, m->normalize, m->max_tokens);
    free(sub), free(pool_dir), free(mdir), free(tokp);
    return m;
fail:
    free(sub), free(pool_dir), free(mdir), free(tokp);
    embed_model_free(m);
    return NULL;
}

void embed_model_free(struct embed_model *m) {
    if (!m) return;
    bert_free(m->bert);
    wp_free(m->tok);
    free(m);
}

bool embed_model_detect(const char *dir) {
    char *p = pg_path_join(dir, "modules.json");
    bool st = pg_file_exists(p);
    free(p);
    json_t *cfg = load_json(dir, "config.json", false, NULL);
    const char *mt = cfg ? json_string_value(json_object_get(cfg, "model_type")) : NULL;
    bool bert = mt && strcmp(mt, "bert") == 0;
    json_decref(cfg);
    return st || bert;
}

int embed_model_dim(const struct embed_model *m) { return m->hidden * m->n_modes; }
int embed_model_max_tokens(const struct embed_model *m) { return m->max_tokens; }

// Pools hidden states h[n, H] into out[dim] in sentence-transformers' concatenation order.
static void pool(const struct embed_model *m, const float *h, int n, float *out) {
    int H = m->hidden, o = 0;
    if (m->pool & POOL_CLS) memcpy(out + o, h, (size_t)H * sizeof(float)), o += H;
    if (m->pool & POOL_MAX) {
        for (int j = 0; j < H; j++) {
            float mx = h[j];
            for (int t = 1; t < n; t++) mx = h[(size_t)t * H + j] > mx ? h[(size_t)t * H + j] : mx;
            out[o + j] = mx;
        }
        o += H;
    }
    for (int mode = POOL_MEAN; mode <= POOL_MEAN_SQRT; mode <<= 1) {
        if (!(m->pool & mode)) continue;
        float div = mode == POOL_MEAN ? (float)n : sqrtf((float)n);
        for (int j = 0; j < H; j++) {
            double s = 0;
            for (int t = 0; t < n; t++) s += h[(size_t)t * H + j];
            out[o + j] = (float)(s / div);
        }
        o += H;
    }
    if (m->pool & POOL_LAST) memcpy(out + o, h + (size_t)(n - 1) * H, (size_t)H * sizeof(float));
}

int embed_model_encode(const struct embed_model *m, const char *const *texts, int n, float *out, int *n_tokens,
                       char *err) {
    int dim = embed_model_dim(m), total = 0;
    float *h = pg_malloc((size_t)m->max_tokens * m->hidden * sizeof(float));
    for (int i = 0; i < n; i++) {
        int32_t *ids = NULL;
        int nt = 0;
        const char *s = texts[i] ? texts[i] : "";
        if (wp_encode(m->tok, s, strlen(s), m->max_tokens, &ids, &nt, err) ||
            bert_forward(m->bert, ids, nt, h, err)) {
            free(ids);
            free(h);
            return -1;
        }
        free(ids);
        total += nt;
        float *v = out + (size_t)i * dim;
        pool(m, h, nt, v);
        if (m->normalize) {
            double ss = 0;
            for (int j = 0; j < dim; j++) ss += (double)v[j] * v[j];
            float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
            for (int j = 0; j < dim; j++) v[j] *= inv;
        }
    }
    free(h);
    if (n_tokens) *n_tokens = total;
    return 0;
}
