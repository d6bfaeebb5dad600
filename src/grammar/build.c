// Grammar builder: rules, arena-allocated expressions, UTF-8 code point ranges.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

#define GB_NODE_BUDGET 2000000L
#define GB_RULE_LIMIT 4000 // as automaton_build; checked here too so a huge grammar fails fast

void gb_init(struct gbuild *b, char *err) {
    memset(b, 0, sizeof(*b));
    b->err = err;
    b->budget = GB_NODE_BUDGET;
}

void gb_free(struct gbuild *b) {
    for (int i = 0; i < b->n_rules; i++) free(b->rules[i].name);
    free(b->rules);
    free(b->hash);
    for (int i = 0; i < b->n_blocks; i++) free(b->blocks[i]);
    free(b->blocks);
}

void *gb_alloc(struct gbuild *b, size_t n) {
    if (b->n_blocks == b->cap_blocks) {
        b->cap_blocks = b->cap_blocks ? 2 * b->cap_blocks : 64;
        b->blocks = pg_realloc(b->blocks, (size_t)b->cap_blocks * sizeof(void *));
    }
    void *p = pg_calloc(1, n ? n : 1);
    b->blocks[b->n_blocks++] = p;
    return p;
}

int gb_fail(struct gbuild *b, const char *fmt, ...) {
    if (!b->failed && b->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, PG_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    b->failed = true;
    return -1;
}

static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

// The slot of name in b->hash: where it is, or the empty slot where it would go.
static int hash_slot(const struct gbuild *b, const char *name) {
    uint32_t m = (uint32_t)b->hash_cap - 1, i = name_hash(name) & m;
    while (b->hash[i] >= 0 && strcmp(b->rules[b->hash[i]].name, name)) i = (i + 1) & m;
    return (int)i;
}

static void hash_grow(struct gbuild *b) {
    free(b->hash);
    b->hash_cap = b->hash_cap ? 2 * b->hash_cap : 64;
    b->hash = pg_malloc((size_t)b->hash_cap * sizeof(int));
    for (int i = 0; i < b->hash_cap; i++) b->hash[i] = -1;
    for (int r = 0; r < b->n_rules; r++) b->hash[hash_slot(b, b->rules[r].name)] = r;
}

int gb_rule(struct gbuild *b, const char *name) {
    if (2 * (b->n_rules + 1) > b->hash_cap) hash_grow(b);
    int slot = hash_slot(b, name);
    if (b->hash[slot] >= 0) return b->hash[slot];
    if (b->n_rules >= GB_RULE_LIMIT) {
        // sticky failure; hand back an existing rule so callers stay in bounds
        gb_fail(b, "grammar too large (more than %d rules)", GB_RULE_LIMIT);
        return b->n_rules - 1;
    }
    if (b->n_rules == b->cap_rules) {
        b->cap_rules = b->cap_rules ? 2 * b->cap_rules : 16;
        b->rules = pg_realloc(b->rules, (size_t)b->cap_rules * sizeof(*b->rules));
    }
    b->rules[b->n_rules].name = pg_strdup(name);
    b->rules[b->n_rules].body = NULL;
    b->hash[slot] = b->n_rules;
    return b->n_rules++;
}

int gb_new_rule(struct gbuild *b, const char *prefix) {
    char name[96];
    snprintf(name, sizeof(name), "%.60s#%d", prefix, b->n_rules);
    return gb_rule(b, name);
}

void gb_define(struct gbuild *b, int rule, struct gx *body) { b->rules[rule].body = body; }

static struct gx *node(struct gbuild *b, enum gx_kind k) {
    if (--b->budget < 0) {
        gb_fail(b, "grammar too large (more than %ld expression nodes)", GB_NODE_BUDGET);
        b->budget = GB_NODE_BUDGET; // keep allocating harmlessly; the failure is sticky
    }
    struct gx *x = gb_alloc(b, sizeof(*x));
    x->kind = k;
    return x;
}

struct gx *gx_empty(struct gbuild *b) { return node(b, GX_EMPTY); }
struct gx *gx_fail(struct gbuild *b) { return node(b, GX_FAIL); }

struct gx *gx_set(struct gbuild *b, const uint32_t set[8]) {
    struct gx *x = node(b, GX_SET);
    memcpy(x->set, set, sizeof(x->set));
    return x;
}

struct gx *gx_byte(struct gbuild *b, uint8_t c) {
    uint32_t s[8] = {0};
    s[c >> 5] |= 1u << (c & 31);
    return gx_set(b, s);
}

struct gx *gx_lit(struct gbuild *b, const char *s, size_t n) {
    if (n == 0) return gx_empty(b);
    if (n == 1) return gx_byte(b, (uint8_t)s[0]);
    struct gx **k = gb_alloc(b, n * sizeof(*k));
    for (size_t i = 0; i < n; i++) k[i] = gx_byte(b, (uint8_t)s[i]);
    return gx_seq(b, (int)n, k);
}

static struct gx *multi(struct gbuild *b, enum gx_kind kind, int n, struct gx **kids) {
    if (n == 0) return kind == GX_SEQ ? gx_empty(b) : gx_fail(b);
    if (n == 1) return kids[0];
    struct gx *x = node(b, kind);
    x->n = n;
    x->kids = gb_alloc(b, (size_t)n * sizeof(*kids));
    memcpy(x->kids, kids, (size_t)n * sizeof(*kids));
    return x;
}

struct gx *gx_seq(struct gbuild *b, int n, struct gx **kids) { return multi(b, GX_SEQ, n, kids); }
struct gx *gx_alt(struct gbuild *b, int n, struct gx **kids) { return multi(b, GX_ALT, n, kids); }
struct gx *gx_seq2(struct gbuild *b, struct gx *x, struct gx *y) {
    struct gx *k[2] = {x, y};
    return gx_seq(b, 2, k);
}
struct gx *gx_alt2(struct gbuild *b, struct gx *x, struct gx *y) {
    struct gx *k[2] = {x, y};
    return gx_alt(b, 2, k);
}

struct gx *gx_rep(struct gbuild *b, struct gx *x, int min, int max) {
    if (max == 0) return gx_empty(b);
    if (min == 1 && max == 1) return x;
    struct gx *r = node(b, GX_REP);
    r->n = 1;
    r->kids = gb_alloc(b, sizeof(*r->kids));
    r->kids[0] = x;
    r->min = min;
    r->max = max;
    return r;
}

struct gx *gx_ref(struct gbuild *b, int rule) {
    struct gx *x = node(b, GX_REF);
    x->rule = rule;
    return x;
}

// ---- UTF-8 ranges ----
static struct gx *byte_range(struct gbuild *b, unsigned lo, unsigned hi) {
    uint32_t s[8] = {0};
    for (unsigned c = lo; c <= hi; c++) s[c >> 5] |= 1u << (c & 31);
    return gx_set(b, s);
}

static const uint32_t utf8_max[4] = {0x7f, 0x7ff, 0xffff, 0x10ffff};

static int utf8_encode(uint32_t cp, uint8_t *o) {
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xc0 | cp >> 6); o[1] = (uint8_t)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | cp >> 12); o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (uint8_t)(0xf0 | cp >> 18); o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

// [lo, hi] with both ends of the same encoded length -> alternation of byte-range sequences.
static struct gx *same_len_range(struct gbuild *b, uint32_t lo, uint32_t hi) {
    uint8_t a[4], z[4];
    int n = utf8_encode(lo, a);
    utf8_encode(hi, z);
    if (n == 1) return byte_range(b, a[0], z[0]);
    // split so that every continuation position spans a full or a prefix-sharing range
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * (n - i))) - 1; // bits below position i
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0)
                return gx_alt2(b, same_len_range(b, lo, lo | m), same_len_range(b, (lo | m) + 1, hi));
            if ((hi & m) != m)
                return gx_alt2(b, same_len_range(b, lo, (hi & ~m) - 1), same_len_range(b, hi & ~m, hi));
        }
    }
    struct gx *k[4];
    for (int i = 0; i < n; i++) k[i] = byte_range(b, a[i], z[i]);
    return gx_seq(b, n, k);
}

static struct gx *cp_range(struct gbuild *b, uint32_t lo, uint32_t hi) {
    struct gx *alts[8];
    int na = 0;
    if (lo <= 0xd7ff && hi >= 0xe000) { // skip surrogates
        alts[na++] = cp_range(b, lo, 0xd7ff);
        alts[na++] = cp_range(b, 0xe000, hi);
        return gx_alt(b, na, alts);
    }
    if (lo >= 0xd800 && hi <= 0xdfff) return gx_fail(b);
    if (lo >= 0xd800 && lo <= 0xdfff) lo = 0xe000;
    if (hi >= 0xd800 && hi <= 0xdfff) hi = 0xd7ff;
    if (lo > hi) return gx_fail(b);
    for (int len = 0; len < 4 && lo <= hi; len++) {
        uint32_t top = utf8_max[len];
        if (lo > top) continue;
        uint32_t h = hi < top ? hi : top;
        alts[na++] = same_len_range(b, lo, h);
        lo = h + 1;
    }
    return gx_alt(b, na, alts);
}

struct gx *gx_cpranges(struct gbuild *b, const struct cprange *r, int n) {
    struct gx **alts = pg_malloc((size_t)(n ? n : 1) * sizeof(*alts));
    int na = 0;
    for (int i = 0; i < n; i++) {
        uint32_t hi = r[i].hi > 0x10ffff ? 0x10ffff : r[i].hi;
        if (r[i].lo <= hi) alts[na++] = cp_range(b, r[i].lo, hi);
    }
    struct gx *x = gx_alt(b, na, alts);
    free(alts);
    return x;
}

struct gx *gx_codepoint(struct gbuild *b, uint32_t cp) {
    uint8_t o[4];
    int n = utf8_encode(cp, o);
    return gx_lit(b, (const char *)o, (size_t)n);
}
