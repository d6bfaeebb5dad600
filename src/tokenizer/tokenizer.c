// Byte-level BPE tokenizer: construction from parts (tok_new_bpe), encoding pipeline
// (added tokens -> NFC -> pre-tokenizer steps -> BPE), decoding and accessors.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_impl.h"

// GPT-2 regex (ByteLevel use_regex) and the presets for GGUF "tokenizer.ggml.pre".
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3_HEAD "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const char *const tok_gpt2_re = RE_GPT2;

static const struct tok_pretok_step PRE_GPT2[] = {{TOK_PRE_BYTELEVEL, NULL, false, false, true}};
static const struct tok_pretok_step PRE_LLAMA3[] = {
    {TOK_PRE_SPLIT, RE_LLAMA3_HEAD "\\p{N}{1,3}" RE_LLAMA3_TAIL, false, false, false},
    {TOK_PRE_BYTELEVEL, NULL, false, false, false}};
static const struct tok_pretok_step PRE_QWEN2[] = {
    {TOK_PRE_SPLIT, RE_LLAMA3_HEAD "\\p{N}" RE_LLAMA3_TAIL, false, false, false},
    {TOK_PRE_BYTELEVEL, NULL, false, false, false}};
static const struct tok_pretok_step PRE_SMOLLM[] = {{TOK_PRE_SPLIT, "\\p{N}", false, false, false},
                                                    {TOK_PRE_BYTELEVEL, NULL, false, false, true}};

int tok_pretok_preset(const char *name, const struct tok_pretok_step **steps, char *err) {
    if (!name || !strcmp(name, "default") || !strcmp(name, "gpt2") || !strcmp(name, "gpt-2")) {
        *steps = PRE_GPT2;
        return 1;
    }
    if (!strcmp(name, "llama-bpe") || !strcmp(name, "llama3") || !strcmp(name, "llama-v3")) {
        *steps = PRE_LLAMA3;
        return 2;
    }
    if (!strcmp(name, "qwen2") || !strcmp(name, "qwen35")) {
        *steps = PRE_QWEN2;
        return 2;
    }
    if (!strcmp(name, "smollm") || !strcmp(name, "starcoder") || !strcmp(name, "refact")) {
        *steps = PRE_SMOLLM;
        return 2;
    }
    pg_seterr(err, "unknown pre-tokenizer preset '%s'", name);
    return -1;
}

void tok_ids_push(struct tok_ids *o, int32_t id) {
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 256;
        o->v = pg_realloc(o->v, (size_t)o->cap * sizeof *o->v);
    }
    o->v[o->n++] = id;
}

// ---- UTF-8 helpers ------------------------------------------------------------------------

int tok_utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF; // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F; // no surrogates
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

size_t tok_utf8_valid_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = tok_utf8_seq(u + i, n - i);
        if (!k) break;
        i += (size_t)k;
    }
    return i;
}

static uint32_t utf8_decode(const unsigned char *s, int len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

// The code point that ends at s[end) (valid UTF-8 assumed), or -1.
static int32_t cp_before(const char *s, size_t end) {
    if (end == 0) return -1;
    size_t b = end - 1;
    while (b > 0 && end - b < 4 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
    int k = tok_utf8_seq((const unsigned char *)s + b, end - b);
    if (k != (int)(end - b)) return -1;
    return (int32_t)utf8_decode((const unsigned char *)s + b, k);
}

static int32_t cp_at(const char *s, size_t n, size_t i, int *len) {
    if (i >= n) return -1;
    int k = tok_utf8_seq((const unsigned char *)s + i, n - i);
    *len = k;
    return k ? (int32_t)utf8_decode((const unsigned char *)s + i, k) : -1;
}

static bool cp_is_space(int32_t c) { // Rust char::is_whitespace (Unicode White_Space)
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static bool cp_is_word(int32_t c) { // \w of the Rust regex crate: Alphabetic, M, Nd, Pc, ZWJ/ZWNJ
    if (c < 0) return false;
    if (c < 128) return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true;
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_MN && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
           k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_PC;
}

// NFC-inert code points: combining class 0, not excluded from composition, not the second
// half of any canonical composition (Hangul jamo included), and NFC-stable themselves. A
// string made only of them is its own NFC. One bit per code point, built once per process
// (about 7 ms); checked against Python's unicodedata when it was written.
static uint8_t nfc_inert[0x110000 / 8];
static pthread_once_t nfc_inert_once = PTHREAD_ONCE_INIT;

static bool cp_nfc_inert_slow(utf8proc_int32_t c) {
    if ((c >= 0x1100 && c <= 0x11FF) || (c >= 0xD800 && c <= 0xDFFF)) return false;
    const utf8proc_property_t *p = utf8proc_get_property(c);
    if (p->combining_class != 0 || p->comp_exclusion) return false;
    if (p->comb_index != UINT16_MAX && p->comb_index >= 0x8000) return false; // can combine with a predecessor
    if (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) { // canonical decomposition
        utf8proc_uint8_t in[4], *out = NULL;
        utf8proc_ssize_t n = utf8proc_encode_char(c, in);
        utf8proc_ssize_t r = utf8proc_map(in, n, &out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        bool same = r == n && memcmp(in, out, (size_t)n) == 0;
        free(out);
        return same;
    }
    return true;
}

static void nfc_inert_init(void) {
    for (utf8proc_int32_t c = 0; c < 0x110000; c++)
        if (cp_nfc_inert_slow(c)) nfc_inert[c >> 3] |= (uint8_t)(1u << (c & 7));
}

// True when NFC leaves s (valid UTF-8) unchanged for sure.
static bool nfc_trivial(const char *s, size_t n) {
    pthread_once(&nfc_inert_once, nfc_inert_init);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = tok_utf8_seq(u + i, n - i);
        if (!k) return false;
        uint32_t c = utf8_decode(u + i, k);
        if (!(nfc_inert[c >> 3] & (1u << (c & 7)))) return false;
        i += (size_t)k;
    }
    return true;
}

// ---- encoding --------------------------------------------------------------------------

struct enc {
    const struct tokenizer *t;
    struct tok_ids out;
    pcre2_match_data *md;
    bool parse_special;
    char *err;
    int failed;
};

static void pretok(struct enc *e, int step, const char *s, size_t n);

static void split_regex(struct enc *e, int step, pcre2_code *re, const char *s, size_t n) {
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            pg_seterr(e->err, "pre-tokenizer regex failed: %s", (char *)msg);
            e->failed = 1;
            return;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t a = ov[0], b = ov[1];
        if (a == b) { // empty match: step over one character
            int k = tok_utf8_seq((const unsigned char *)s + a, n - a);
            pos = a + (size_t)(k ? k : 1);
            continue;
        }
        if (a > gap) pretok(e, step + 1, s + gap, a - gap);
        pretok(e, step + 1, s + a, b - a);
        gap = pos = b;
    }
    if (gap < n) pretok(e, step + 1, s + gap, n - gap);
}

static void pretok(struct enc *e, int step, const char *s, size_t n) {
    const struct tokenizer *t = e->t;
    if (e->failed || n == 0) return;
    if (step == t->n_steps) {
        bpe_encode_word(t, s, n, &e->out);
        return;
    }
    const struct tok_step *st = &t->steps[step];
    if (st->kind == TOK_PRE_BYTELEVEL && st->add_prefix_space && s[0] != ' ') {
        char *buf = pg_malloc(n + 1);
        buf[0] = ' ';
        memcpy(buf + 1, s, n);
        if (st->re) split_regex(e, step, st->re, buf, n + 1);
        else pretok(e, step + 1, buf, n + 1);
        free(buf);
        return;
    }
    if (st->re) split_regex(e, step, st->re, s, n);
    else pretok(e, step + 1, s, n);
}

// Finds the next added token of set in s[from..n) (leftmost, then longest). Matches that are
// rejected (special with !parse_special, single_word inside a word) are skipped and the
// search resumes after them, as Hugging Face does. Returns the token or NULL; *ms/*me: the
// match, *me extended over whitespace for rstrip (lstrip is applied by the caller).
static const struct tok_added *added_next(const struct enc *e, const struct tok_added_set *set,
                                          const char *s, size_t n, size_t from, size_t *ms, size_t *me) {
    const struct tokenizer *t = e->t;
    for (size_t i = from; i < n; i++) {
        if (!set->first[(uint8_t)s[i]]) continue;
        const struct tok_added *hit = NULL;
        for (int k = 0; k < set->n; k++) {
            const struct tok_added *a = &set->tok[k];
            if (a->len <= n - i && memcmp(s + i, t->arena + a->off, a->len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) continue;
        size_t b0 = i + hit->len;
        bool ok = !hit->special || e->parse_special;
        if (ok && hit->single_word) {
            int kl;
            ok = !cp_is_word(cp_before(s, i)) && !cp_is_word(cp_at(s, n, b0, &kl));
        }
        if (!ok) {
            i = b0 - 1;
            continue;
        }
        *ms = i;
        *me = b0;
        return hit;
    }
    return NULL;
}

typedef void (*gap_fn)(struct enc *e, const char *s, size_t n);

// Splits s on the added tokens of set, like Hugging Face's AddedVocabulary::find_matches:
// lstrip/rstrip widen a match over whitespace, the search continues after the unwidened
// match, and a gap is emitted only where the previous (widened) match ended before this one.
static void split_added(struct enc *e, const struct tok_added_set *set, const char *s, size_t n, gap_fn gap) {
    size_t search = 0, done = 0, ms, me;
    const struct tok_added *a;
    while (!e->failed && set->n && (a = added_next(e, set, s, n, search, &ms, &me))) {
        search = me;
        size_t start = ms, stop = me;
        if (a->lstrip) {
            for (int32_t c; start > 0 && cp_is_space(c = cp_before(s, start));)
                start -= c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
            if (start < done) start = done;
        }
        if (a->rstrip)
            for (int kl; stop < n && cp_is_space(cp_at(s, n, stop, &kl));) stop += (size_t)kl;
        if (start > stop) start = stop;
        if (done < start) gap(e, s + done, start - done);
        tok_ids_push(&e->out, a->id);
        done = stop;
    }
    if (done < n) gap(e, s + done, n - done);
}

static void encode_normalized(struct enc *e, const char *s, size_t n);

// Valid UTF-8 text after the raw added tokens were split off: NFC, then normalized added tokens.
static void encode_valid(struct enc *e, const char *s, size_t n) {
    const struct tokenizer *t = e->t;
    char *nfc = NULL;
    if (t->nfc && !nfc_trivial(s, n)) {
        utf8proc_uint8_t *o = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &o,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (r < 0) { // cannot happen for valid UTF-8; fall back to the unnormalized text
            free(o);
        } else {
            nfc = (char *)o;
            s = nfc;
            n = (size_t)r;
        }
    }
    encode_normalized(e, s, n);
    free(nfc);
}

static void pretok_all(struct enc *e, const char *s, size_t n) { pretok(e, 0, s, n); }

static void encode_normalized(struct enc *e, const char *s, size_t n) {
    split_added(e, &e->t->added_norm, s, n, pretok_all);
}

// A gap between raw added tokens: valid runs go through the pipeline, every byte of an
// invalid UTF-8 sequence becomes its own byte token.
static void encode_gap(struct enc *e, const char *s, size_t n) {
    size_t i = 0;
    while (i < n && !e->failed) {
        size_t v = tok_utf8_valid_prefix(s + i, n - i);
        if (v) encode_valid(e, s + i, v);
        i += v;
        if (i < n) {
            int32_t id = e->t->byte_id[(uint8_t)s[i]];
            if (id >= 0) tok_ids_push(&e->out, id);
            i++;
        }
    }
}

int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool parse_special,
               int32_t **ids, int *n_ids, char *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len)) {
        pg_seterr(err, "tok_encode: no tokenizer or text");
        return -1;
    }
    if (len > (size_t)1 << 31) {
        pg_seterr(err, "tok_encode: input of %zu bytes is too large", len);
        return -1;
    }
    struct enc e = {.t = t, .parse_special = parse_special, .err = err};
    e.md = pcre2_match_data_create(1, NULL);
    split_added(&e, &t->added_raw, text, len, encode_gap);
    pcre2_match_data_free(e.md);
    if (e.failed) {
        free(e.out.v);
        return -1;
    }
    if (!e.out.v) e.out.v = pg_malloc(sizeof(int32_t));
    *ids = e.out.v;
    *n_ids = e.out.n;
    return 0;
}

// ---- decoding and accessors ---------------------------------------------------------------

char *tok_decode(const struct tokenizer *t, const int32_t *ids, int n, bool skip_special, size_t *len) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->flags[id] & TOKF_PRESENT)) continue;
        if (skip_special && (t->flags[id] & TOKF_SPECIAL)) continue;
        total += t->len[id];
    }
    char *out = pg_malloc(total + 1), *p = out;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->flags[id] & TOKF_PRESENT)) continue;
        if (skip_special && (t->flags[id] & TOKF_SPECIAL)) continue;
        memcpy(p, t->arena + t->off[id], t->len[id]);
        p += t->len[id];
    }
    *p = 0;
    if (len) *len = total;
    return out;
}

int tok_vocab_size(const struct tokenizer *t) { return t->n_ids; }

const char *tok_token_bytes(const struct tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & TOKF_PRESENT)) return NULL;
    if (len) *len = t->len[id];
    return t->arena + t->off[id];
}

bool tok_is_special(const struct tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & TOKF_SPECIAL);
}

int32_t tok_find(const struct tokenizer *t, const char *s) {
    if (!s) return -1;
    size_t n = strlen(s);
    int32_t id = tok_strmap_get(t, &t->byname, s, n);
    if (id >= 0) return id;
    id = tok_strmap_get(t, &t->vocab, s, n); // raw bytes
    if (id >= 0) return id;
    char *b = pg_malloc(n + 1);
    long k = tok_gpt2_to_bytes(s, n, b); // GPT-2 form ("Ġthe")
    id = k >= 0 ? tok_strmap_get(t, &t->vocab, b, (size_t)k) : -1;
    free(b);
    return id;
}

const char *tok_chat_template(const struct tokenizer *t) { return t->chat_template; }
const char *tok_bos_token(const struct tokenizer *t) { return t->bos_token; }
const char *tok_eos_token(const struct tokenizer *t) { return t->eos_token; }

void tok_free(struct tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_steps; i++) pcre2_code_free(t->steps[i].re);
    free(t->steps);
    bpe_cache_free(t);
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->flags);
    struct tok_strmap *maps[2] = {&t->vocab, &t->byname};
    for (int i = 0; i < 2; i++) {
        free(maps[i]->slots);
        free(maps[i]->keys);
    }
    free(t->merges.slots);
    free(t->added_raw.tok);
    free(t->added_norm.tok);
    free(t->chat_template);
    free(t->bos_token);
    free(t->eos_token);
    free(t);
}
