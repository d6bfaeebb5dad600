// WordPiece (BERT) tokenizer: see wordpiece.h for the pipeline. Text is processed as arrays
// of code points; the vocabulary is an open-addressing hash of UTF-8 strings.
#include "tokenizer/wordpiece.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define WP_MAX_ADDED 64

struct wp_added { char *content; size_t len; int32_t id; };

struct wordpiece {
    char **keys;          // [cap] hash slots (NULL = empty)
    int32_t *vals;
    size_t cap;
    int vocab_size;
    int32_t unk, cls, sep;
    char prefix[16];      // continuing_subword_prefix
    int max_chars;        // max_input_chars_per_word
    bool clean_text, chinese, strip_accents, lowercase;
    struct wp_added added[WP_MAX_ADDED];
    int n_added;
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static void map_put(struct wordpiece *w, const char *k, int32_t v) {
    size_t n = strlen(k), i = hash_bytes(k, n) & (w->cap - 1);
    while (w->keys[i] && strcmp(w->keys[i], k) != 0) i = (i + 1) & (w->cap - 1);
    if (!w->keys[i]) w->keys[i] = pg_strdup(k);
    w->vals[i] = v;
}

static int32_t map_get(const struct wordpiece *w, const char *k, size_t n) {
    size_t i = hash_bytes(k, n) & (w->cap - 1);
    while (w->keys[i]) {
        if (strlen(w->keys[i]) == n && memcmp(w->keys[i], k, n) == 0) return w->vals[i];
        i = (i + 1) & (w->cap - 1);
    }
    return -1;
}

int32_t wp_token_id(const struct wordpiece *w, const char *token) { return map_get(w, token, strlen(token)); }
int wp_vocab_size(const struct wordpiece *w) { return w->vocab_size; }

static int parse_normalizer(struct wordpiece *w, json_t *norm, const char *path, char *err) {
    const char *type = json_string_value(json_object_get(norm, "type"));
    if (!type || strcmp(type, "BertNormalizer") != 0) {
        pg_seterr(err, "%s: normalizer %s is not supported (BertNormalizer is)", path, type ? type : "(none)");
        return -1;
    }
    json_t *v;
    w->clean_text = !(v = json_object_get(norm, "clean_text")) || json_is_true(v);
    w->chinese = !(v = json_object_get(norm, "handle_chinese_chars")) || json_is_true(v);
    w->lowercase = !(v = json_object_get(norm, "lowercase")) || json_is_true(v);
    v = json_object_get(norm, "strip_accents");
    w->strip_accents = (!v || json_is_null(v)) ? w->lowercase : json_is_true(v);
    return 0;
}

static int parse_json(struct wordpiece *w, json_t *root, const char *path, char *err) {
    json_t *model = json_object_get(root, "model");
    const char *mt = json_string_value(json_object_get(model, "type"));
    if (!mt || strcmp(mt, "WordPiece") != 0) {
        pg_seterr(err, "%s: model type %s is not WordPiece", path, mt ? mt : "(none)");
        return -1;
    }
    const char *pre = json_string_value(json_object_get(json_object_get(root, "pre_tokenizer"), "type"));
    if (!pre || strcmp(pre, "BertPreTokenizer") != 0) {
        pg_seterr(err, "%s: pre_tokenizer %s is not supported (BertPreTokenizer is)", path, pre ? pre : "(none)");
        return -1;
    }
    if (parse_normalizer(w, json_object_get(root, "normalizer"), path, err)) return -1;
    const char *pfx = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    snprintf(w->prefix, sizeof w->prefix, "%s", pfx ? pfx : "##");
    json_t *mc = json_object_get(model, "max_input_chars_per_word");
    w->max_chars = json_is_integer(mc) ? (int)json_integer_value(mc) : 100;
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab) || json_object_size(vocab) == 0) {
        pg_seterr(err, "%s: model.vocab is missing or empty", path);
        return -1;
    }
    w->cap = 1;
    while (w->cap < 2 * json_object_size(vocab) + 2 * WP_MAX_ADDED) w->cap <<= 1;
    w->keys = pg_calloc(w->cap, sizeof *w->keys);
    w->vals = pg_calloc(w->cap, sizeof *w->vals);
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id > (1 << 24)) {
            pg_seterr(err, "%s: vocab entry '%.40s' has an invalid id", path, k);
            return -1;
        }
        map_put(w, k, (int32_t)id);
        if (id + 1 > w->vocab_size) w->vocab_size = (int)id + 1;
    }
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, v) {
        const char *c = json_string_value(json_object_get(v, "content"));
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (!c || !*c || id < 0 || id > (1 << 24) || w->n_added == WP_MAX_ADDED) continue;
        w->added[w->n_added++] = (struct wp_added){pg_strdup(c), strlen(c), (int32_t)id};
        map_put(w, c, (int32_t)id);
        if (id + 1 > w->vocab_size) w->vocab_size = (int)id + 1;
    }
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    w->unk = map_get(w, unk ? unk : "[UNK]", strlen(unk ? unk : "[UNK]"));
    w->cls = wp_token_id(w, "[CLS]");
    w->sep = wp_token_id(w, "[SEP]");
    if (w->unk < 0 || w->cls < 0 || w->sep < 0) {
        pg_seterr(err, "%s: vocabulary lacks [UNK], [CLS] or [SEP]", path);
        return -1;
    }
    return 0;
}

struct wordpiece *wp_load(const char *path, char *err) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        pg_seterr(err, "%s: %s (line %d)", path, je.text, je.line);
        return NULL;
    }
    struct wordpiece *w = pg_calloc(1, sizeof *w);
    int rc = parse_json(w, root, path, err);
    json_decref(root);
    if (rc) {
        wp_free(w);
        return NULL;
    }
    return w;
}

void wp_free(struct wordpiece *w) {
    if (!w) return;
    for (size_t i = 0; i < w->cap; i++) free(w->keys[i]);
    free(w->keys);
    free(w->vals);
    for (int i = 0; i < w->n_added; i++) free(w->added[i].content);
    free(w);
}

// ---- character classes (as Rust's char methods used by HF tokenizers) ----

static bool is_ws(int32_t c) { // char::is_whitespace (Unicode White_Space)
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// BertNormalizer's is_control: \t\n\r count as whitespace; else categories Cc, Cf, Co, Cs.
// Unassigned code points (Cn) are kept, as HF tokenizers does (checked against it).
static bool is_control(int32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CS ||
           k == UTF8PROC_CATEGORY_CO;
}

static bool is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static bool is_punct(int32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

struct cps { int32_t *v; size_t n, cap; };

static void cps_push(struct cps *a, int32_t c) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = pg_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = c;
}

// BertNormalizer over one stretch of raw text, appended to out as code points.
static void normalize(const struct wordpiece *w, const uint8_t *s, size_t len, struct cps *out) {
    for (size_t i = 0; i < len;) {
        int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) { c = 0xFFFD; k = 1; }
        i += (size_t)k;
        if (w->clean_text) {
            if (c == 0 || c == 0xFFFD || is_control(c)) continue;
            if (is_ws(c)) c = ' ';
        }
        bool cjk = w->chinese && is_chinese(c);
        if (cjk) cps_push(out, ' ');
        int32_t dec[8];
        utf8proc_ssize_t nd = 1;
        dec[0] = c;
        if (w->strip_accents) {
            int last = 0;
            nd = utf8proc_decompose_char(c, dec, 8, UTF8PROC_DECOMPOSE, &last);
            if (nd < 0 || nd > 8) { dec[0] = c; nd = 1; }
        }
        for (utf8proc_ssize_t j = 0; j < nd; j++) {
            if (w->strip_accents && utf8proc_category(dec[j]) == UTF8PROC_CATEGORY_MN) continue;
            cps_push(out, w->lowercase ? utf8proc_tolower(dec[j]) : dec[j]);
        }
        if (cjk) cps_push(out, ' ');
    }
}

struct ids { int32_t *v; int n, cap; };

static void ids_push(struct ids *a, int32_t id) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = pg_realloc(a->v, (size_t)a->cap * sizeof *a->v);
    }
    a->v[a->n++] = id;
}

// WordPiece of one pre-tokenized word (code points cp[0..n)).
static void wordpiece_word(const struct wordpiece *w, const int32_t *cp, size_t n, struct ids *out) {
    if ((int)n > w->max_chars) { ids_push(out, w->unk); return; }
    size_t plen = strlen(w->prefix);
    char *buf = pg_malloc(n * 4 + plen + 1);
    size_t *off = pg_malloc((n + 1) * sizeof *off); // byte offset of each char after the prefix
    memcpy(buf, w->prefix, plen);
    off[0] = plen;
    for (size_t i = 0; i < n; i++) off[i + 1] = off[i] + (size_t)utf8proc_encode_char(cp[i], (uint8_t *)buf + off[i]);
    int start_n = out->n;
    for (size_t start = 0; start < n;) {
        int32_t id = -1;
        size_t end = n;
        for (; end > start; end--) {
            size_t from = start ? off[start] - plen : off[start];
            if (start) memcpy(buf + from, w->prefix, plen); // "##" + piece, contiguous
            id = map_get(w, buf + from, off[end] - from);
            if (id >= 0) break;
        }
        if (id < 0) { out->n = start_n; ids_push(out, w->unk); break; }
        ids_push(out, id);
        start = end;
        // restore the chars the prefix overwrote for later pieces
        for (size_t i = 0; i < n; i++) utf8proc_encode_char(cp[i], (uint8_t *)buf + off[i]);
    }
    free(buf);
    free(off);
}

// BertPreTokenizer + WordPiece over normalized code points.
static void tokenize_cps(const struct wordpiece *w, const struct cps *a, struct ids *out) {
    size_t i = 0;
    while (i < a->n) {
        if (is_ws(a->v[i])) { i++; continue; }
        if (is_punct(a->v[i])) { wordpiece_word(w, a->v + i, 1, out); i++; continue; }
        size_t j = i;
        while (j < a->n && !is_ws(a->v[j]) && !is_punct(a->v[j])) j++;
        wordpiece_word(w, a->v + i, j - i, out);
        i = j;
    }
}

// Leftmost (then longest) added-token occurrence in s[0..len); -1 if none.
static int find_added(const struct wordpiece *w, const char *s, size_t len, size_t *at) {
    int best = -1;
    for (int k = 0; k < w->n_added; k++) {
        const char *p = memmem(s, len, w->added[k].content, w->added[k].len);
        if (!p) continue;
        size_t pos = (size_t)(p - s);
        if (best < 0 || pos < *at || (pos == *at && w->added[k].len > w->added[best].len)) {
            best = k;
            *at = pos;
        }
    }
    return best;
}

int wp_encode(const struct wordpiece *w, const char *text, size_t len, int max_len, int32_t **ids, int *n_ids,
              char *err) {
    if (max_len < 2) {
        pg_seterr(err, "max_len %d is too small for [CLS] and [SEP]", max_len);
        return -1;
    }
    struct ids out = {0};
    struct cps cp = {0};
    ids_push(&out, w->cls);
    while (len > 0) {
        size_t at = 0;
        int k = find_added(w, text, len, &at);
        size_t plain = k < 0 ? len : at;
        cp.n = 0;
        normalize(w, (const uint8_t *)text, plain, &cp);
        tokenize_cps(w, &cp, &out);
        if (k < 0) break;
        ids_push(&out, w->added[k].id);
        text += at + w->added[k].len;
        len -= at + w->added[k].len;
    }
    if (out.n > max_len - 1) out.n = max_len - 1;
    ids_push(&out, w->sep);
    free(cp.v);
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}
