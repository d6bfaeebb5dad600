// The tokenizer stored in a GGUF file's metadata (tokenizer.ggml.*), built with tok_new_bpe:
// byte-level BPE ("gpt2" model) with the pre-tokenizer named by tokenizer.ggml.pre.
// Token types (llama.cpp llama_token_type): 1 normal, 2 unknown, 3 control, 4 user-defined,
// 5 unused, 6 byte. Control tokens become special added tokens, user-defined ones non-special
// added tokens; unused ids are holes.
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

struct tok_parts {
    char **tokens, **merges;
    int n_tokens, n_merges;
    struct tok_added_token *added;
    int n_added;
    char *pre, *chat_template;
};

static char *dup_str(struct gguf_str s) {
    char *p = pg_malloc(s.n + 1);
    memcpy(p, s.p, s.n);
    p[s.n] = 0;
    return p;
}

static const struct gguf_kv *str_array(struct gguf_file *f, const char *key, bool required, char *err) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv && !required) return NULL;
    if (!kv || kv->type != GGUF_ARR || kv->arr_type != GGUF_STR) {
        pg_seterr(err, "GGUF metadata %s is %s", key, kv ? "not an array of strings" : "missing");
        return NULL;
    }
    return kv;
}

// Reads the i-th element of an integer array of any integer element type.
static int64_t arr_int(const struct gguf_kv *kv, uint64_t i) {
    const uint8_t *p = kv->arr_data;
    switch (kv->arr_type) {
    case GGUF_I8: return ((const int8_t *)p)[i];
    case GGUF_U8: return p[i];
    case GGUF_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case GGUF_U16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case GGUF_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case GGUF_U32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case GGUF_I64: case GGUF_U64: { int64_t v; memcpy(&v, p + 8 * i, 8); return v; }
    default: return TT_NORMAL;
    }
}

static int read_parts(struct gguf_file *f, struct tok_parts *tp, char *err) {
    char *model = gguf_get_str(f, "tokenizer.ggml.model", err);
    if (!model) return -1;
    bool gpt2 = strcmp(model, "gpt2") == 0;
    if (!gpt2) pg_seterr(err, "GGUF tokenizer model '%.40s' is not supported (gpt2 byte-level BPE is)", model);
    free(model);
    if (!gpt2) return -1;
    const struct gguf_kv *toks = str_array(f, "tokenizer.ggml.tokens", true, err);
    const struct gguf_kv *merges = toks ? str_array(f, "tokenizer.ggml.merges", true, err) : NULL;
    if (!toks || !merges) return -1;
    if (toks->arr_n == 0 || toks->arr_n > (1u << 24) || merges->arr_n > (1u << 24)) {
        pg_seterr(err, "GGUF tokenizer: %llu tokens / %llu merges is out of range",
                  (unsigned long long)toks->arr_n, (unsigned long long)merges->arr_n);
        return -1;
    }
    const struct gguf_kv *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (types && (types->type != GGUF_ARR || types->arr_n != toks->arr_n || !types->arr_data)) {
        pg_seterr(err, "GGUF tokenizer: token_type must be an integer array as long as tokens");
        return -1;
    }
    tp->n_tokens = (int)toks->arr_n;
    tp->tokens = pg_calloc((size_t)tp->n_tokens, sizeof *tp->tokens);
    tp->added = pg_calloc((size_t)tp->n_tokens, sizeof *tp->added);
    for (int i = 0; i < tp->n_tokens; i++) {
        int64_t ty = types ? arr_int(types, (uint64_t)i) : TT_NORMAL;
        if (memchr(toks->arr_str[i].p, 0, toks->arr_str[i].n)) {
            pg_seterr(err, "GGUF tokenizer: token %d contains a NUL byte", i);
            return -1;
        }
        if (ty == TT_CONTROL || ty == TT_USER) {
            tp->added[tp->n_added++] = (struct tok_added_token){
                .id = i, .content = dup_str(toks->arr_str[i]), .special = ty == TT_CONTROL};
        } else if (ty != TT_UNUSED) {
            tp->tokens[i] = dup_str(toks->arr_str[i]);
        }
    }
    tp->n_merges = (int)merges->arr_n;
    tp->merges = pg_calloc((size_t)tp->n_merges + 1, sizeof *tp->merges);
    for (int i = 0; i < tp->n_merges; i++) tp->merges[i] = dup_str(merges->arr_str[i]);
    tp->pre = gguf_find_kv(f, "tokenizer.ggml.pre") ? gguf_get_str(f, "tokenizer.ggml.pre", err) : pg_strdup("default");
    if (!tp->pre) return -1;
    if (gguf_find_kv(f, "tokenizer.chat_template") && !(tp->chat_template = gguf_get_str(f, "tokenizer.chat_template", err)))
        return -1;
    return 0;
}

static void free_parts(struct tok_parts *tp) {
    for (int i = 0; i < tp->n_tokens; i++) free(tp->tokens[i]);
    for (int i = 0; i < tp->n_merges; i++) free(tp->merges[i]);
    for (int i = 0; i < tp->n_added; i++) free((char *)tp->added[i].content);
    free(tp->tokens), free(tp->merges), free(tp->added), free(tp->pre), free(tp->chat_template);
}

static int32_t meta_id(struct gguf_file *f, const char *key, int n_tokens) {
    int64_t v;
    if (gguf_get_int(f, key, &v, NULL) != 0 || v < 0 || v >= n_tokens) return -1;
    return (int32_t)v;
}

struct tokenizer *tok_load_gguf(const char *path, char *err) {
    struct gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    struct tok_parts tp = {0};
    struct tokenizer *t = NULL;
    if (read_parts(f, &tp, err)) goto out;
    struct tok_bpe_spec sp = {
        .tokens = (const char *const *)tp.tokens, .n_tokens = tp.n_tokens,
        .merges = (const char *const *)tp.merges, .n_merges = tp.n_merges,
        .added = tp.added, .n_added = tp.n_added,
        .bos_id = meta_id(f, "tokenizer.ggml.bos_token_id", tp.n_tokens),
        .eos_id = meta_id(f, "tokenizer.ggml.eos_token_id", tp.n_tokens),
        // Hugging Face's Qwen2 tokenizer normalizes to NFC; the Llama-3 one ignores merges
        // for whole words found in the vocabulary (llama.cpp does the same for these names).
        .nfc = strcmp(tp.pre, "qwen2") == 0,
        .ignore_merges = strcmp(tp.pre, "llama-bpe") == 0 || strcmp(tp.pre, "llama3") == 0,
        .chat_template = tp.chat_template,
    };
    int n = tok_pretok_preset(tp.pre, &sp.pretok, err);
    if (n < 0) {
        pg_seterr(err, "%s: tokenizer.ggml.pre '%.40s' is not supported", path, tp.pre);
        goto out;
    }
    sp.n_pretok = n;
    t = tok_new_bpe(&sp, err);
out:
    free_parts(&tp);
    gguf_close(f);
    return t;
}

struct tokenizer *model_open_tokenizer(const char *path, char *err) {
    char *g = model_gguf_path(path);
    if (!g) return tok_load(path, err);
    struct tokenizer *t = tok_load_gguf(g, err);
    free(g);
    return t;
}
