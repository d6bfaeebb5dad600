// grammar_compile (front-end dispatch), reference counting and the compiled-grammar LRU.
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

static int front_end(struct gbuild *b, enum grammar_kind kind, const char *spec, size_t len,
                     const char *ws) {
    switch (kind) {
    case GRAMMAR_JSON_SCHEMA: return schema_compile(b, spec, len, ws, false);
    case GRAMMAR_JSON_OBJECT: return schema_compile(b, NULL, 0, ws, true);
    case GRAMMAR_REGEX: {
        struct gx *x = regex_compile(b, spec, len, false);
        if (!x || b->failed) return -1;
        gb_define(b, gb_rule(b, "root"), x);
        return 0;
    }
    case GRAMMAR_CHOICE: return choice_compile(b, spec, len);
    case GRAMMAR_EBNF: return ebnf_compile(b, spec, len);
    }
    return gb_fail(b, "unknown grammar kind %d", (int)kind);
}

struct grammar *grammar_compile(const struct grammar_vocab *v, enum grammar_kind kind,
                                const char *spec, size_t spec_len,
                                const char *whitespace_pattern, char *err) {
    if (!v) { pg_seterr(err, "grammar_compile: no vocabulary"); return NULL; }
    if (!spec && kind != GRAMMAR_JSON_OBJECT) { pg_seterr(err, "grammar_compile: empty spec"); return NULL; }
    struct gbuild b;
    gb_init(&b, err);
    if (front_end(&b, kind, spec, spec_len, whitespace_pattern) || b.failed) {
        if (!b.failed) gb_fail(&b, "grammar compile failed");
        gb_free(&b);
        return NULL;
    }
    struct grammar *g = pg_calloc(1, sizeof(*g));
    g->v = v;
    g->refs = 1;
    pthread_mutex_init(&g->mu, NULL);
    int rc = automaton_build(g, &b, err);
    gb_free(&b);
    if (rc) { grammar_release(g); return NULL; }
    return g;
}

void grammar_retain(struct grammar *g) { __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED); }

void grammar_release(struct grammar *g) {
    if (!g || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    automaton_free(g);
    mcache_free(g->mc);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

// ---- cache: a small array in LRU order (capacity is tens to hundreds) ----
struct centry {
    enum grammar_kind kind;
    char *spec, *ws;
    size_t spec_len;
    struct grammar *g;
    uint64_t used;
};

struct grammar_cache {
    const struct grammar_vocab *v;
    pthread_mutex_t mu;
    struct centry *e;
    int n, cap;
    uint64_t clock;
};

struct grammar_cache *grammar_cache_new(const struct grammar_vocab *v, int capacity) {
    struct grammar_cache *c = pg_calloc(1, sizeof(*c));
    c->v = v;
    c->cap = capacity > 0 ? capacity : 1;
    c->e = pg_calloc((size_t)c->cap, sizeof(*c->e));
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void grammar_cache_free(struct grammar_cache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].spec); free(c->e[i].ws);
        grammar_release(c->e[i].g);
    }
    free(c->e);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int find(struct grammar_cache *c, enum grammar_kind kind, const char *spec, size_t len,
                const char *ws) {
    for (int i = 0; i < c->n; i++) {
        struct centry *e = &c->e[i];
        if (e->kind == kind && e->spec_len == len && (!len || !memcmp(e->spec, spec, len)) &&
            ((!e->ws && !ws) || (e->ws && ws && !strcmp(e->ws, ws))))
            return i;
    }
    return -1;
}

struct grammar *grammar_cache_get(struct grammar_cache *c, enum grammar_kind kind,
                                  const char *spec, size_t spec_len,
                                  const char *whitespace_pattern, char *err) {
    if (kind == GRAMMAR_JSON_OBJECT) spec_len = 0; // spec ignored
    pthread_mutex_lock(&c->mu);
    int i = find(c, kind, spec, spec_len, whitespace_pattern);
    if (i >= 0) {
        struct grammar *g = c->e[i].g;
        grammar_retain(g);
        c->e[i].used = ++c->clock;
        pthread_mutex_unlock(&c->mu);
        return g;
    }
    pthread_mutex_unlock(&c->mu);
    // compile outside the lock so that other requests are not held up by a slow compile
    struct grammar *g = grammar_compile(c->v, kind, spec, spec_len, whitespace_pattern, err);
    if (!g) return NULL;
    pthread_mutex_lock(&c->mu);
    i = find(c, kind, spec, spec_len, whitespace_pattern);
    if (i >= 0) { // another thread compiled it meanwhile: use that one
        grammar_release(g);
        g = c->e[i].g;
        grammar_retain(g);
        c->e[i].used = ++c->clock;
        pthread_mutex_unlock(&c->mu);
        return g;
    }
    if (c->n == c->cap) { // evict the least recently used
        int lru = 0;
        for (int k = 1; k < c->n; k++) if (c->e[k].used < c->e[lru].used) lru = k;
        free(c->e[lru].spec); free(c->e[lru].ws);
        grammar_release(c->e[lru].g);
        c->e[lru] = c->e[--c->n];
    }
    struct centry *e = &c->e[c->n++];
    e->kind = kind;
    e->spec_len = spec_len;
    e->spec = pg_malloc(spec_len + 1);
    if (spec_len) memcpy(e->spec, spec, spec_len);
    e->ws = whitespace_pattern ? pg_strdup(whitespace_pattern) : NULL;
    e->g = g;
    e->used = ++c->clock;
    grammar_retain(g);
    pthread_mutex_unlock(&c->mu);
    return g;
}

int grammar_cache_warmup(struct grammar_cache *c, enum grammar_kind kind, const char *spec,
                         size_t spec_len, const char *whitespace_pattern, int n_walks,
                         int max_tokens, char *err) {
    struct grammar *g = grammar_cache_get(c, kind, spec, spec_len, whitespace_pattern, err);
    if (!g) return -1;
    const struct grammar_vocab *v = c->v;
    uint32_t *mask = pg_malloc((size_t)v->mask_words * 4);
    int32_t *allowed = pg_malloc((size_t)v->model_vocab * 4);
    uint64_t seed = 0x853c49e6748fea9bull;
    for (int w = 0; w < n_walks; w++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        for (int step = 0; step < max_tokens && !grammar_is_terminated(m); step++) {
            grammar_fill_mask(m, mask);
            int na = 0;
            for (int i = 0; i < v->mask_words; i++)
                for (uint32_t bits = mask[i]; bits; bits &= bits - 1) {
                    int32_t id = i * 32 + __builtin_ctz(bits);
                    if (id < v->n_tokens && v->tok[id]) allowed[na++] = id; // EOS has no bytes
                }
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t r = seed >> 33;
            if (!na || (grammar_can_end(m) && r % 3 == 0)) break;
            grammar_accept_token(m, allowed[r % (uint64_t)na]);
        }
        grammar_matcher_free(m);
    }
    free(mask);
    free(allowed);
    grammar_release(g);
    return 0;
}
