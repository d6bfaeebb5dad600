// Runtime: a set of stacks of global DFA states (each stack = one way the output so far
// parses; the top is the current state of the innermost rule), advanced byte by byte, and
// token masks from a walk of the vocab trie with that set, cached per grammar by the set.
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

#define MAX_STACK_DEPTH 512  // deeper nesting is not followed (documented limit)
#define MAX_STACKS 4096      // ambiguity bound per step
#define MCACHE_BYTES (16u << 20) // per grammar
#define SPARSE_MAX 4096           // masks with at most this many tokens are stored as id lists

// A set of stacks with dedupe.
struct sset {
    int n, cap;
    int32_t *off, *len;
    uint64_t *hash;
    int32_t *data;
    int dlen, dcap;
    int32_t *slot;
    int nslot;
    bool accept;
};

static void ss_clear(struct sset *s) {
    s->n = 0;
    s->dlen = 0;
    s->accept = false;
    if (s->nslot) memset(s->slot, 0xff, (size_t)s->nslot * 4);
}

static void ss_free(struct sset *s) {
    free(s->off); free(s->len); free(s->hash); free(s->data); free(s->slot);
    memset(s, 0, sizeof(*s));
}

static uint64_t hash_stack(const int32_t *p, int n, int32_t top) {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++) h = (h ^ (uint32_t)p[i]) * 0x100000001b3ull;
    h = (h ^ (uint32_t)top) * 0x100000001b3ull;
    return h ^ (h >> 31);
}

static void ss_rehash(struct sset *s, int nslot) {
    free(s->slot);
    s->slot = pg_malloc((size_t)nslot * 4);
    memset(s->slot, 0xff, (size_t)nslot * 4);
    s->nslot = nslot;
    for (int k = 0; k < s->n; k++) {
        int i = (int)(s->hash[k] & (uint64_t)(nslot - 1));
        while (s->slot[i] >= 0) i = (i + 1) & (nslot - 1);
        s->slot[i] = k;
    }
}

// Adds stack base[0..n) + [top] unless present. Returns 1 if added.
static int ss_add(struct sset *s, const int32_t *base, int n, int32_t top) {
    if (s->n >= MAX_STACKS || n + 1 > MAX_STACK_DEPTH) return 0;
    if (2 * (s->n + 1) > s->nslot) ss_rehash(s, s->nslot ? 2 * s->nslot : 64);
    uint64_t h = hash_stack(base, n, top);
    int i = (int)(h & (uint64_t)(s->nslot - 1));
    for (; s->slot[i] >= 0; i = (i + 1) & (s->nslot - 1)) {
        int k = s->slot[i];
        if (s->hash[k] == h && s->len[k] == n + 1 && s->data[s->off[k] + n] == top &&
            !memcmp(s->data + s->off[k], base, (size_t)n * 4))
            return 0;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->off = pg_realloc(s->off, (size_t)s->cap * 4);
        s->len = pg_realloc(s->len, (size_t)s->cap * 4);
        s->hash = pg_realloc(s->hash, (size_t)s->cap * 8);
    }
    if (s->dlen + n + 1 > s->dcap) {
        while (s->dlen + n + 1 > s->dcap) s->dcap = s->dcap ? 2 * s->dcap : 256;
        s->data = pg_realloc(s->data, (size_t)s->dcap * 4);
    }
    if (n) memmove(s->data + s->dlen, base, (size_t)n * 4); // base may alias another set only
    s->data[s->dlen + n] = top;
    s->off[s->n] = s->dlen;
    s->len[s->n] = n + 1;
    s->hash[s->n] = h;
    s->dlen += n + 1;
    s->slot[i] = s->n;
    s->n++;
    return 1;
}

// Expands every stack queued in work (calls, returns) into out: out keeps the stacks whose top
// can consume a byte; out->accept when some stack returned from the root rule.
static void ss_close(const struct grammar *g, struct sset *work, struct sset *out) {
    int32_t tmp[MAX_STACK_DEPTH + 1];
    for (int k = 0; k < work->n; k++) {
        int n = work->len[k];
        memcpy(tmp, work->data + work->off[k], (size_t)n * 4);
        int32_t top = tmp[n - 1];
        uint8_t fl = g->st_flags[top];
        if (fl & GS_BYTES) ss_add(out, tmp, n - 1, top);
        if (fl & GS_CALLS)
            for (int c = g->st_call_off[top]; c < g->st_call_off[top + 1]; c++) {
                tmp[n - 1] = g->calls[c].ret;
                ss_add(work, tmp, n, g->rules[g->calls[c].rule].start);
                tmp[n - 1] = top;
            }
        if (fl & GS_ACCEPT) {
            if (n == 1) out->accept = true;
            else ss_add(work, tmp, n - 2, tmp[n - 2]);
        }
    }
}

// out = the set after consuming byte c from in. top_override >= 0 replaces the top of in's
// only stack.
static void ss_step(const struct grammar *g, const struct sset *in, int32_t top_override, uint8_t c,
                    struct sset *work, struct sset *out) {
    ss_clear(work);
    ss_clear(out);
    for (int k = 0; k < in->n; k++) {
        const int32_t *p = in->data + in->off[k];
        int n = in->len[k];
        int32_t top = top_override >= 0 ? top_override : p[n - 1];
        int32_t t = g_next(g, top, c);
        if (t >= 0) ss_add(work, p, n - 1, t);
    }
    ss_close(g, work, out);
}

// ---- mask cache ----
struct mentry { uint64_t h; int32_t *key; int klen; uint32_t *mask; int n_ids; }; // n_ids >= 0: mask holds ids
struct mcache { struct mentry *e; int n, cap, nslot; int32_t *slot; size_t bytes; };

void mcache_free(struct mcache *mc) {
    if (!mc) return;
    for (int i = 0; i < mc->n; i++) { free(mc->e[i].key); free(mc->e[i].mask); }
    free(mc->e); free(mc->slot); free(mc);
}

static const struct mentry *mcache_find(const struct mcache *mc, uint64_t h, const int32_t *key, int klen) {
    if (!mc || !mc->nslot) return NULL;
    for (int i = (int)(h & (uint64_t)(mc->nslot - 1)); mc->slot[i] >= 0; i = (i + 1) & (mc->nslot - 1)) {
        const struct mentry *e = &mc->e[mc->slot[i]];
        if (e->h == h && e->klen == klen && !memcmp(e->key, key, (size_t)klen * 4)) return e;
    }
    return NULL;
}

// Writes a cached mask into out (mb bytes).
static void mentry_copy(const struct mentry *e, uint32_t *out, size_t mb) {
    if (e->n_ids < 0) { memcpy(out, e->mask, mb); return; }
    memset(out, 0, mb);
    for (int k = 0; k < e->n_ids; k++) out[e->mask[k] >> 5] |= 1u << (e->mask[k] & 31);
}

static void mcache_put(struct grammar *g, uint64_t h, const int32_t *key, int klen, const uint32_t *mask) {
    size_t mb = (size_t)g->v->mask_words * 4;
    if (!g->mc) g->mc = pg_calloc(1, sizeof(*g->mc));
    struct mcache *mc = g->mc;
    if (mcache_find(mc, h, key, klen)) return;
    if (mc->bytes + mb + (size_t)klen * 4 > MCACHE_BYTES) { // full: start over (bounded memory)
        for (int i = 0; i < mc->n; i++) { free(mc->e[i].key); free(mc->e[i].mask); }
        mc->n = 0;
        mc->bytes = 0;
        memset(mc->slot, 0xff, (size_t)mc->nslot * 4);
    }
    if (2 * (mc->n + 1) > mc->nslot) {
        int ns = mc->nslot ? 2 * mc->nslot : 256;
        free(mc->slot);
        mc->slot = pg_malloc((size_t)ns * 4);
        memset(mc->slot, 0xff, (size_t)ns * 4);
        mc->nslot = ns;
        for (int k = 0; k < mc->n; k++) {
            int i = (int)(mc->e[k].h & (uint64_t)(ns - 1));
            while (mc->slot[i] >= 0) i = (i + 1) & (ns - 1);
            mc->slot[i] = k;
        }
    }
    if (mc->n == mc->cap) {
        mc->cap = mc->cap ? 2 * mc->cap : 64;
        mc->e = pg_realloc(mc->e, (size_t)mc->cap * sizeof(*mc->e));
    }
    struct mentry *e = &mc->e[mc->n];
    e->h = h;
    e->klen = klen;
    e->key = pg_malloc((size_t)klen * 4 + 4);
    memcpy(e->key, key, (size_t)klen * 4);
    int words = (int)(mb / 4), n_ids = 0;
    for (int w = 0; w < words && n_ids <= SPARSE_MAX; w++) n_ids += __builtin_popcount(mask[w]);
    if (n_ids <= SPARSE_MAX) { // sparse: keep the ids
        e->mask = pg_malloc((size_t)n_ids * 4 + 4);
        e->n_ids = 0;
        for (int w = 0; w < words; w++)
            for (uint32_t bits = mask[w]; bits; bits &= bits - 1) e->mask[e->n_ids++] = w * 32 + __builtin_ctz(bits);
        mc->bytes += (size_t)n_ids * 4 + (size_t)klen * 4 + sizeof(*e);
    } else {
        e->mask = pg_malloc(mb);
        e->n_ids = -1;
        memcpy(e->mask, mask, mb);
        mc->bytes += mb + (size_t)klen * 4 + sizeof(*e);
    }
    int i = (int)(h & (uint64_t)(mc->nslot - 1));
    while (mc->slot[i] >= 0) i = (i + 1) & (mc->nslot - 1);
    mc->slot[i] = mc->n++;
}

// ---- matcher ----
struct grammar_matcher {
    struct grammar *g;
    struct sset cur, work, tmp, tmp2;
    bool terminated;
    struct sset *lvl;  // per trie depth (max_len + 1)
    int n_lvl;
    int32_t *key;
    int key_cap;
};

struct grammar_matcher *grammar_matcher_new(struct grammar *g) {
    struct grammar_matcher *m = pg_calloc(1, sizeof(*m));
    grammar_retain(g);
    m->g = g;
    ss_clear(&m->work);
    ss_clear(&m->cur);
    int32_t start = g->rules[g->root].start;
    ss_add(&m->work, NULL, 0, start);
    ss_close(g, &m->work, &m->cur);
    return m;
}

void grammar_matcher_free(struct grammar_matcher *m) {
    if (!m) return;
    ss_free(&m->cur); ss_free(&m->work); ss_free(&m->tmp); ss_free(&m->tmp2);
    for (int i = 0; i < m->n_lvl; i++) ss_free(&m->lvl[i]);
    free(m->lvl);
    free(m->key);
    grammar_release(m->g);
    free(m);
}

bool grammar_is_terminated(const struct grammar_matcher *m) {
    return m->terminated || (m->cur.n == 0 && m->cur.accept);
}

static bool is_eos(const struct grammar_vocab *v, int32_t t) {
    for (int i = 0; i < v->n_eos; i++) if (v->eos[i] == t) return true;
    return false;
}

int grammar_accept_token(struct grammar_matcher *m, int32_t token) {
    const struct grammar_vocab *v = m->g->v;
    if (token < 0 || token >= v->model_vocab) return -1;
    if (is_eos(v, token)) {
        if (!m->terminated && !m->cur.accept) return -1;
        m->terminated = true;
        return 0;
    }
    if (m->terminated || token >= v->n_tokens || !v->tok[token]) return -1;
    const uint8_t *p = (const uint8_t *)v->tok[token];
    size_t n = v->tok_len[token];
    struct sset *bufs[2] = {&m->tmp, &m->tmp2}, *in = &m->cur;
    for (size_t i = 0; i < n; i++) {
        struct sset *out = bufs[i & 1];
        ss_step(m->g, in, -1, p[i], &m->work, out);
        if (out->n == 0 && !(out->accept && i + 1 == n)) return -1;
        in = out;
    }
    struct sset x = m->cur; // commit: the last output becomes current
    m->cur = *in;
    *in = x;
    return 0;
}

// ---- masks ----
static _Thread_local const struct sset *g_cmp_set; // qsort has no context argument
static int cmp_stack(const void *a, const void *b) {
    const struct sset *s = g_cmp_set;
    int x = *(const int *)a, y = *(const int *)b;
    if (s->len[x] != s->len[y]) return s->len[x] - s->len[y];
    return memcmp(s->data + s->off[x], s->data + s->off[y], (size_t)s->len[x] * 4);
}

// Canonical key of the current set (order-independent); returns its length.
static int build_key(struct grammar_matcher *m, uint64_t *h) {
    const struct sset *s = &m->cur;
    int need = 2 + s->n + s->dlen;
    if (need > m->key_cap) {
        m->key_cap = 2 * need;
        m->key = pg_realloc(m->key, (size_t)m->key_cap * 4);
    }
    int *idx = pg_malloc((size_t)(s->n ? s->n : 1) * sizeof(int));
    for (int i = 0; i < s->n; i++) idx[i] = i;
    if (s->n > 1) {
        g_cmp_set = s;
        qsort(idx, (size_t)s->n, sizeof(int), cmp_stack);
    }
    int k = 0;
    m->key[k++] = s->accept;
    m->key[k++] = s->n;
    for (int i = 0; i < s->n; i++) {
        m->key[k++] = s->len[idx[i]];
        memcpy(m->key + k, s->data + s->off[idx[i]], (size_t)s->len[idx[i]] * 4);
        k += s->len[idx[i]];
    }
    free(idx);
    *h = hash_stack(m->key, k, 0);
    return k;
}

// out = in's only stack with its top replaced by t, expanded.
static void ss_from_top(const struct grammar *g, const struct sset *in, int32_t t, struct sset *work,
                        struct sset *out) {
    ss_clear(work);
    ss_clear(out);
    ss_add(work, in->data + in->off[0], in->len[0] - 1, t);
    ss_close(g, work, out);
}

struct rep { const struct sset *s; int32_t top; };

static void walk_trie(struct grammar_matcher *m, const struct gtrie *v, uint32_t *mask) {
    const struct grammar *g = m->g;
    const int max_len = g->v->max_len;
    if (m->n_lvl < max_len + 1) {
        m->lvl = pg_realloc(m->lvl, (size_t)(max_len + 1) * sizeof(*m->lvl));
        memset(m->lvl + m->n_lvl, 0, (size_t)(max_len + 1 - m->n_lvl) * sizeof(*m->lvl));
        m->n_lvl = max_len + 1;
    }
    struct rep *r = pg_malloc((size_t)(max_len + 2) * sizeof(*r));
    r[0] = (struct rep){&m->cur, -1};
    const uint8_t *flags = g->st_flags;
    for (int i = 1; i < v->n_nodes;) {
        int d = v->node_depth[i];
        const struct rep *pr = &r[d - 1];
        uint8_t c = v->node_byte[i];
        struct sset *out = &m->lvl[d];
        if (pr->s->n == 1 && !pr->s->accept) {
            const struct sset *s = pr->s;
            int32_t g0 = pr->top >= 0 ? pr->top : s->data[s->off[0] + s->len[0] - 1];
            uint32_t loop = g->selfloop[g0];
            if (loop && !(v->node_sub[i] & ~loop)) { // the whole subtree stays in g0: allowed
                for (int k = v->node_tok_off[i]; k < v->node_tok_off[v->node_end[i]]; k++) {
                    int32_t id = v->node_tok_ids[k];
                    mask[id >> 5] |= 1u << (id & 31);
                }
                i = v->node_end[i];
                continue;
            }
            int32_t t = g_next(g, g0, c);
            if (t < 0) { i = v->node_end[i]; continue; }
            if (flags[t] == GS_BYTES) r[d] = (struct rep){s, t};
            else {
                ss_from_top(g, s, t, &m->work, out);
                if (out->n == 0 && !out->accept) { i = v->node_end[i]; continue; }
                r[d] = (struct rep){out, -1};
            }
        } else {
            if (pr->s->n == 0) { i = v->node_end[i]; continue; }
            ss_step(g, pr->s, -1, c, &m->work, out);
            if (out->n == 0 && !out->accept) { i = v->node_end[i]; continue; }
            r[d] = (struct rep){out, -1};
        }
        for (int k = v->node_tok_off[i]; k < v->node_tok_off[i + 1]; k++) {
            int32_t id = v->node_tok_ids[k];
            mask[id >> 5] |= 1u << (id & 31);
        }
        i++;
    }
    free(r);
}

void grammar_fill_mask(struct grammar_matcher *m, uint32_t *mask) {
    struct grammar *g = m->g;
    const struct grammar_vocab *v = g->v;
    size_t mb = (size_t)v->mask_words * 4;
    memset(mask, 0, mb);
    if (!grammar_is_terminated(m) && m->cur.n > 0) {
        uint64_t h;
        int klen = build_key(m, &h);
        pthread_mutex_lock(&g->mu);
        const struct mentry *hit = mcache_find(g->mc, h, m->key, klen);
        if (hit) mentry_copy(hit, mask, mb);
        pthread_mutex_unlock(&g->mu);
        if (!hit) {
            const struct sset *c = &m->cur;
            int32_t top = c->data[c->off[0] + c->len[0] - 1];
            if (c->n == 1 && g->budget[top] >= 0) { // plain tokens by count, the rest by walking
                int r = g->budget[top] < v->max_plain_cp ? g->budget[top] : v->max_plain_cp;
                memcpy(mask, v->plain_le + (size_t)r * v->mask_words, mb);
                walk_trie(m, &v->rest, mask);
            } else walk_trie(m, &v->full, mask);
            pthread_mutex_lock(&g->mu);
            mcache_put(g, h, m->key, klen, mask);
            pthread_mutex_unlock(&g->mu);
        }
    }
    if (m->cur.accept || m->terminated)
        for (int i = 0; i < v->n_eos; i++) {
            int32_t id = v->eos[i];
            if (id >= 0 && id < v->model_vocab) mask[id >> 5] |= 1u << (id & 31);
        }
}

bool grammar_can_end(const struct grammar_matcher *m) { return m->terminated || m->cur.accept; }
