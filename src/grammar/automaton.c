// Rules -> byte-level DFAs with call transitions (Thompson NFA, then subset construction
// over per-rule byte classes), numbered into one global state space.
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

#define MAX_NFA_STATES 2000000
#define MAX_DFA_STATES 400000 // over all rules

// NFA state: up to two epsilon edges and one labelled edge (byte set or call).
struct nst {
    int32_t e1, e2;
    int32_t set; // index into sets, or -1
    int32_t call; // rule, or -1
    int32_t to;
};

struct nfa {
    struct nst *s;
    int n, cap;
    uint32_t (*sets)[8];
    int n_sets, cap_sets;
    int32_t *slots; // hash of sets
    int n_slots;
    bool overflow;
};

static int nfa_add(struct nfa *a) {
    if (a->n >= MAX_NFA_STATES) { a->overflow = true; return 0; }
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 256;
        a->s = pg_realloc(a->s, (size_t)a->cap * sizeof(*a->s));
    }
    a->s[a->n] = (struct nst){-1, -1, -1, -1, -1};
    return a->n++;
}

static void eps(struct nfa *a, int from, int to) {
    if (a->overflow) return;
    if (a->s[from].e1 < 0) a->s[from].e1 = to;
    else if (a->s[from].e2 < 0) a->s[from].e2 = to;
    else {
        int m = nfa_add(a); // chain through a fresh state
        if (a->overflow) return;
        a->s[m].e1 = a->s[from].e2;
        a->s[m].e2 = to;
        a->s[from].e2 = m;
    }
}

static uint64_t hash_set(const uint32_t set[8]) {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 8; i++) h = (h ^ set[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

// Interns a byte set (exact dedupe keeps the byte-class computation small).
static int add_set(struct nfa *a, const uint32_t set[8]) {
    if (2 * (a->n_sets + 1) > a->n_slots) {
        int ns = a->n_slots ? 2 * a->n_slots : 64;
        free(a->slots);
        a->slots = pg_malloc((size_t)ns * 4);
        memset(a->slots, 0xff, (size_t)ns * 4);
        a->n_slots = ns;
        for (int k = 0; k < a->n_sets; k++) {
            int i = (int)(hash_set(a->sets[k]) & (uint64_t)(ns - 1));
            while (a->slots[i] >= 0) i = (i + 1) & (ns - 1);
            a->slots[i] = k;
        }
    }
    int i = (int)(hash_set(set) & (uint64_t)(a->n_slots - 1));
    for (; a->slots[i] >= 0; i = (i + 1) & (a->n_slots - 1))
        if (!memcmp(a->sets[a->slots[i]], set, 32)) return a->slots[i];
    if (a->n_sets == a->cap_sets) {
        a->cap_sets = a->cap_sets ? 2 * a->cap_sets : 64;
        a->sets = pg_realloc(a->sets, (size_t)a->cap_sets * 32);
    }
    memcpy(a->sets[a->n_sets], set, 32);
    a->slots[i] = a->n_sets;
    return a->n_sets++;
}

// Builds x between fresh states; returns its end state, start written to *start.
static int build(struct nfa *a, const struct gx *x, int *start, int depth) {
    int s = nfa_add(a), e;
    *start = s;
    if (a->overflow || depth > 2000) { a->overflow = true; return s; }
    switch (x->kind) {
    case GX_EMPTY: return s;
    case GX_FAIL: return nfa_add(a); // unreachable end
    case GX_SET:
    case GX_REF:
        e = nfa_add(a);
        if (a->overflow) return e;
        if (x->kind == GX_SET) a->s[s].set = add_set(a, x->set);
        else a->s[s].call = x->rule;
        a->s[s].to = e;
        return e;
    case GX_SEQ: {
        int cur = s;
        for (int i = 0; i < x->n; i++) {
            int ks, ke = build(a, x->kids[i], &ks, depth + 1);
            eps(a, cur, ks);
            cur = ke;
        }
        return cur;
    }
    case GX_ALT:
        e = nfa_add(a);
        for (int i = 0; i < x->n; i++) {
            int ks, ke = build(a, x->kids[i], &ks, depth + 1);
            eps(a, s, ks);
            eps(a, ke, e);
        }
        return e;
    case GX_REP: {
        int cur = s;
        for (int i = 0; i < x->min && !a->overflow; i++) {
            int ks, ke = build(a, x->kids[0], &ks, depth + 1);
            eps(a, cur, ks);
            cur = ke;
        }
        if (x->max < 0) { // star: loop through a hub state
            int ks, ke = build(a, x->kids[0], &ks, depth + 1);
            e = nfa_add(a);
            eps(a, cur, ks);
            eps(a, cur, e);
            eps(a, ke, cur);
            return e;
        }
        e = nfa_add(a);
        for (int i = x->min; i < x->max && !a->overflow; i++) {
            int ks, ke = build(a, x->kids[0], &ks, depth + 1);
            eps(a, cur, e);
            eps(a, cur, ks);
            cur = ke;
        }
        eps(a, cur, e);
        return e;
    }
    }
    return s;
}

// ---- subset construction ----
struct subset_tab { // hash of sorted NFA state sets -> DFA state
    int32_t *keys_off, *keys_len, *data;
    int n, cap, dlen, dcap;
    int32_t *slot; int nslot;
};

static uint64_t hash_ints(const int32_t *p, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) h = (h ^ (uint32_t)p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void st_grow(struct subset_tab *t) {
    int ns = t->nslot ? 2 * t->nslot : 1024;
    free(t->slot);
    t->slot = pg_malloc((size_t)ns * sizeof(int32_t));
    for (int i = 0; i < ns; i++) t->slot[i] = -1;
    t->nslot = ns;
    for (int k = 0; k < t->n; k++) {
        uint64_t h = hash_ints(t->data + t->keys_off[k], t->keys_len[k]);
        int i = (int)(h & (uint64_t)(ns - 1));
        while (t->slot[i] >= 0) i = (i + 1) & (ns - 1);
        t->slot[i] = k;
    }
}

// Returns the index of set p[0..n) (adding it if new); *added tells whether it was new.
static int st_get(struct subset_tab *t, const int32_t *p, int n, bool *added) {
    if (2 * (t->n + 1) > t->nslot) st_grow(t);
    uint64_t h = hash_ints(p, n);
    int i = (int)(h & (uint64_t)(t->nslot - 1));
    for (; t->slot[i] >= 0; i = (i + 1) & (t->nslot - 1)) {
        int k = t->slot[i];
        if (t->keys_len[k] == n && !memcmp(t->data + t->keys_off[k], p, (size_t)n * 4)) {
            *added = false;
            return k;
        }
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->keys_off = pg_realloc(t->keys_off, (size_t)t->cap * 4);
        t->keys_len = pg_realloc(t->keys_len, (size_t)t->cap * 4);
    }
    if (t->dlen + n > t->dcap) {
        while (t->dlen + n > t->dcap) t->dcap = t->dcap ? 2 * t->dcap : 4096;
        t->data = pg_realloc(t->data, (size_t)t->dcap * 4);
    }
    memcpy(t->data + t->dlen, p, (size_t)n * 4);
    t->keys_off[t->n] = t->dlen;
    t->keys_len[t->n] = n;
    t->dlen += n;
    t->slot[i] = t->n;
    *added = true;
    return t->n++;
}

static void st_free(struct subset_tab *t) {
    free(t->keys_off); free(t->keys_len); free(t->data); free(t->slot);
}

struct closure_ws { int32_t *stack, *out; uint32_t *mark; uint32_t gen; };

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

// Epsilon closure of seeds (n) into ws->out (sorted); returns its size.
static int closure(const struct nfa *a, struct closure_ws *ws, const int32_t *seeds, int n) {
    ws->gen++;
    int sp = 0, no = 0;
    for (int i = 0; i < n; i++) {
        if (ws->mark[seeds[i]] == ws->gen) continue;
        ws->mark[seeds[i]] = ws->gen;
        ws->stack[sp++] = seeds[i];
    }
    while (sp) {
        int32_t q = ws->stack[--sp];
        const struct nst *st = &a->s[q];
        if (st->set >= 0 || st->call >= 0 || st->e1 < 0) ws->out[no++] = q; // keep labelled/final
        int32_t es[2] = {st->e1, st->e2};
        for (int k = 0; k < 2; k++)
            if (es[k] >= 0 && ws->mark[es[k]] != ws->gen) {
                ws->mark[es[k]] = ws->gen;
                ws->stack[sp++] = es[k];
            }
    }
    if (no > 24) qsort(ws->out, (size_t)no, 4, cmp_i32);
    else
        for (int i = 1; i < no; i++) { // small sets: insertion sort
            int32_t x = ws->out[i];
            int j = i - 1;
            for (; j >= 0 && ws->out[j] > x; j--) ws->out[j + 1] = ws->out[j];
            ws->out[j + 1] = x;
        }
    return no;
}

struct dfa_out { // growable per-grammar tables
    int32_t n, cap, *rule, *row, ncall, capcall, nnext, capnext, *next, *call_off;
    uint8_t *flags;
    struct gcall *calls;
};

static void byte_classes(const struct nfa *a, struct grule *r) {
    memset(r->cls, 0, 256);
    int ncls = 1;
    for (int s = 0; s < a->n_sets; s++) {
        int map[256][2];
        for (int c = 0; c < ncls; c++) map[c][0] = map[c][1] = -1;
        int nn = 0;
        uint8_t nc[256];
        for (int c = 0; c < 256; c++) {
            int in = (a->sets[s][c >> 5] >> (c & 31)) & 1;
            int *m = &map[r->cls[c]][in];
            if (*m < 0) *m = nn++;
            nc[c] = (uint8_t)*m;
        }
        memcpy(r->cls, nc, 256);
        ncls = nn;
    }
    r->n_cls = ncls;
}

// Subset construction for one rule whose NFA is a (start s0, final f).
static int rule_dfa(const struct nfa *a, int s0, int f, struct grule *r, struct dfa_out *o,
                    char *err) {
    byte_classes(a, r);
    uint8_t rep[256];
    for (int c = 255; c >= 0; c--) rep[r->cls[c]] = (uint8_t)c;
    struct closure_ws ws = {pg_malloc((size_t)a->n * 8 + 8), pg_malloc((size_t)a->n * 4 + 4),
                            pg_calloc((size_t)a->n + 1, 4), 0};
    int32_t *seeds = pg_malloc((size_t)a->n * 4 + 4);
    // classes of every byte set (CSR), and per-class buckets for the subset step
    int32_t *set_cls_off = pg_malloc((size_t)(a->n_sets + 1) * 4), *set_cls = NULL;
    int nsc = 0, cap_sc = 0;
    for (int si = 0; si < a->n_sets; si++) {
        set_cls_off[si] = nsc;
        for (int c = 0; c < r->n_cls; c++)
            if ((a->sets[si][rep[c] >> 5] >> (rep[c] & 31)) & 1) {
                if (nsc == cap_sc) {
                    cap_sc = cap_sc ? 2 * cap_sc : 256;
                    set_cls = pg_realloc(set_cls, (size_t)cap_sc * 4);
                }
                set_cls[nsc++] = c;
            }
    }
    set_cls_off[a->n_sets] = nsc;
    int32_t head[256];
    int ent_cap = 1024;
    int32_t *ent_to = pg_malloc((size_t)ent_cap * 4), *ent_next = pg_malloc((size_t)ent_cap * 4);
    struct subset_tab t = {0};
    bool added;
    int n = closure(a, &ws, &s0, 1);
    st_get(&t, ws.out, n, &added);
    r->first = o->n;
    int rc = 0;
    for (int d = 0; d < t.n; d++) {
        if (o->n >= MAX_DFA_STATES) {
            pg_seterr(err, "grammar too large (more than %d automaton states)", MAX_DFA_STATES);
            rc = -1;
            break;
        }
        if (o->n == o->cap) {
            o->cap = o->cap ? 2 * o->cap : 1024;
            o->rule = pg_realloc(o->rule, (size_t)o->cap * 4);
            o->row = pg_realloc(o->row, (size_t)o->cap * 4);
            o->flags = pg_realloc(o->flags, (size_t)o->cap);
            o->call_off = pg_realloc(o->call_off, (size_t)(o->cap + 1) * 4);
        }
        int gid = o->n++;
        o->rule[gid] = 0; // set by the caller
        if (o->nnext + r->n_cls > o->capnext) {
            while (o->nnext + r->n_cls > o->capnext) o->capnext = o->capnext ? 2 * o->capnext : 4096;
            o->next = pg_realloc(o->next, (size_t)o->capnext * 4);
        }
        o->row[gid] = o->nnext;
        o->nnext += r->n_cls;
        o->call_off[gid] = o->ncall;
        uint8_t fl = 0;
        const int32_t *set = t.data + t.keys_off[d];
        int len = t.keys_len[d];
        for (int i = 0; i < len; i++) if (set[i] == f) fl |= GS_ACCEPT;
        // bucket the labelled NFA states' targets by byte class (each set lists its classes)
        for (int c = 0; c < r->n_cls; c++) head[c] = -1;
        int ne = 0;
        for (int i = 0; i < len; i++) {
            const struct nst *st = &a->s[set[i]];
            if (st->set < 0) continue;
            for (int k = set_cls_off[st->set]; k < set_cls_off[st->set + 1]; k++) {
                if (ne == ent_cap) {
                    ent_cap *= 2;
                    ent_to = pg_realloc(ent_to, (size_t)ent_cap * 4);
                    ent_next = pg_realloc(ent_next, (size_t)ent_cap * 4);
                }
                int c = set_cls[k];
                ent_to[ne] = st->to;
                ent_next[ne] = head[c];
                head[c] = ne++;
            }
        }
        for (int c = 0; c < r->n_cls; c++) {
            int ns = 0;
            for (int e = head[c]; e >= 0; e = ent_next[e]) seeds[ns++] = ent_to[e];
            int32_t tgt = -1;
            if (ns) {
                int m = closure(a, &ws, seeds, ns);
                tgt = st_get(&t, ws.out, m, &added);
                set = t.data + t.keys_off[d]; // data may have moved
                fl |= GS_BYTES;
            }
            o->next[o->row[gid] + c] = tgt; // local id for now
        }
        for (int i = 0; i < len; i++) { // calls, grouped by rule
            int32_t cr = a->s[set[i]].call;
            if (cr < 0) continue;
            bool seen = false;
            for (int j = 0; j < i; j++) seen |= a->s[set[j]].call == cr;
            if (seen) continue;
            int ns = 0;
            for (int j = i; j < len; j++) if (a->s[set[j]].call == cr) seeds[ns++] = a->s[set[j]].to;
            int m = closure(a, &ws, seeds, ns);
            int32_t tgt = st_get(&t, ws.out, m, &added);
            set = t.data + t.keys_off[d];
            if (o->ncall == o->capcall) {
                o->capcall = o->capcall ? 2 * o->capcall : 256;
                o->calls = pg_realloc(o->calls, (size_t)o->capcall * sizeof(*o->calls));
            }
            o->calls[o->ncall++] = (struct gcall){cr, tgt};
            fl |= GS_CALLS;
        }
        o->flags[gid] = fl;
    }
    r->n_states = t.n;
    r->start = r->first;
    // local -> global ids
    o->call_off[o->n] = o->ncall;
    for (int gid = r->first; gid < o->n; gid++)
        for (int c = 0; c < r->n_cls; c++) {
            int32_t *p = &o->next[o->row[gid] + c];
            if (*p >= 0) *p += r->first;
        }
    for (int k = o->call_off[r->first]; k < o->ncall; k++) o->calls[k].ret += r->first;
    st_free(&t);
    free(ws.stack); free(ws.out); free(ws.mark); free(seeds);
    free(set_cls_off); free(set_cls); free(ent_to); free(ent_next);
    return rc;
}

// Rejects left recursion (a rule reaching itself without consuming a byte).
static int check_left_recursion(struct grammar *g, char *err, const struct gbuild *b) {
    int nr = g->n_rules;
    bool *nullable = pg_calloc((size_t)nr, 1);
    for (bool changed = true; changed;) { // fixpoint: start reaches accept through nullable calls
        changed = false;
        for (int r = 0; r < nr; r++) {
            if (nullable[r]) continue;
            // DFS over states of r through calls of nullable rules
            int32_t *stk = pg_malloc((size_t)g->rules[r].n_states * 4 + 4);
            bool *seen = pg_calloc((size_t)g->rules[r].n_states + 1, 1);
            int sp = 0, first = g->rules[r].first;
            stk[sp++] = g->rules[r].start;
            seen[g->rules[r].start - first] = true;
            while (sp && !nullable[r]) {
                int32_t s = stk[--sp];
                if (g->st_flags[s] & GS_ACCEPT) { nullable[r] = changed = true; break; }
                for (int k = g->st_call_off[s]; k < g->st_call_off[s + 1]; k++)
                    if (nullable[g->calls[k].rule] && !seen[g->calls[k].ret - first]) {
                        seen[g->calls[k].ret - first] = true;
                        stk[sp++] = g->calls[k].ret;
                    }
            }
            free(stk); free(seen);
        }
    }
    // left-call graph: r -> q when r can call q before consuming a byte
    uint8_t *adj = pg_calloc((size_t)nr * (size_t)nr, 1);
    for (int r = 0; r < nr; r++) {
        int32_t *stk = pg_malloc((size_t)g->rules[r].n_states * 4 + 4);
        bool *seen = pg_calloc((size_t)g->rules[r].n_states + 1, 1);
        int sp = 0, first = g->rules[r].first;
        stk[sp++] = g->rules[r].start;
        seen[g->rules[r].start - first] = true;
        while (sp) {
            int32_t s = stk[--sp];
            for (int k = g->st_call_off[s]; k < g->st_call_off[s + 1]; k++) {
                adj[(size_t)r * nr + g->calls[k].rule] = 1;
                if (nullable[g->calls[k].rule] && !seen[g->calls[k].ret - first]) {
                    seen[g->calls[k].ret - first] = true;
                    stk[sp++] = g->calls[k].ret;
                }
            }
        }
        free(stk); free(seen);
    }
    int rc = 0;
    for (int k = 0; k < nr; k++) // transitive closure (Warshall); rules are few
        for (int i = 0; i < nr; i++)
            if (adj[(size_t)i * nr + k])
                for (int j = 0; j < nr; j++) adj[(size_t)i * nr + j] |= adj[(size_t)k * nr + j];
    for (int r = 0; r < nr && !rc; r++)
        if (adj[(size_t)r * nr + r]) {
            pg_seterr(err, "unsupported grammar construct: left recursion in rule '%s'", b->rules[r].name);
            rc = -1;
        }
    free(adj); free(nullable);
    return rc;
}

// ---- plain-code-point budgets (see struct grammar) ----
struct u8seq { int n; uint8_t lo[4], hi[4]; };
static const struct u8seq k_plain_seqs[] = { // valid UTF-8 of code points >= 0x20 except '"' '\\'
    {1, {0x20}, {0x21}}, {1, {0x23}, {0x5b}}, {1, {0x5d}, {0x7f}},
    {2, {0xc2, 0x80}, {0xdf, 0xbf}},
    {3, {0xe0, 0xa0, 0x80}, {0xe0, 0xbf, 0xbf}}, {3, {0xe1, 0x80, 0x80}, {0xec, 0xbf, 0xbf}},
    {3, {0xed, 0x80, 0x80}, {0xed, 0x9f, 0xbf}}, {3, {0xee, 0x80, 0x80}, {0xef, 0xbf, 0xbf}},
    {4, {0xf0, 0x90, 0x80, 0x80}, {0xf0, 0xbf, 0xbf, 0xbf}}, {4, {0xf1, 0x80, 0x80, 0x80}, {0xf3, 0xbf, 0xbf, 0xbf}},
    {4, {0xf4, 0x80, 0x80, 0x80}, {0xf4, 0x8f, 0xbf, 0xbf}},
};
enum { SUCC_UNSET = -3, SUCC_MIXED = -2, SUCC_DEAD = -1 };

static void merge_succ(int32_t *acc, int32_t x) {
    if (*acc == SUCC_UNSET) *acc = x;
    else if (*acc != x) *acc = SUCC_MIXED;
}

static void plain_paths(const struct grammar *g, int32_t st, const struct u8seq *q, int pos, int32_t *acc) {
    if (pos == q->n) { merge_succ(acc, st); return; }
    const struct grule *r = &g->rules[g->st_rule[st]];
    uint8_t seen[256] = {0};
    for (int b = q->lo[pos]; b <= q->hi[pos] && *acc != SUCC_MIXED; b++) {
        if (seen[r->cls[b]]) continue;
        seen[r->cls[b]] = 1;
        int32_t t = g_next(g, st, (uint8_t)b);
        if (t < 0) merge_succ(acc, SUCC_DEAD);
        else if (pos + 1 < q->n && g->st_flags[t] != GS_BYTES) *acc = SUCC_MIXED;
        else plain_paths(g, t, q, pos + 1, acc);
    }
}

// plain_lead[r * 256 + c]: class c of rule r holds a byte that can start a plain code point.
static int32_t plain_succ(const struct grammar *g, int32_t s, const uint8_t *plain_lead) {
    const struct grule *r = &g->rules[g->st_rule[s]];
    const uint8_t *pl = plain_lead + (size_t)g->st_rule[s] * 256;
    bool alive = false;
    for (int c = 0; c < r->n_cls && !alive; c++) alive = pl[c] && g->next[g->st_row[s] + c] >= 0;
    if (!alive) return SUCC_DEAD;
    int32_t acc = SUCC_UNSET;
    for (size_t i = 0; i < sizeof(k_plain_seqs) / sizeof(k_plain_seqs[0]) && acc != SUCC_MIXED; i++)
        plain_paths(g, s, &k_plain_seqs[i], 0, &acc);
    return acc;
}

static void compute_budgets(struct grammar *g) {
    enum { UNKNOWN = -3, INF = INT16_MAX };
    int32_t n = g->n_states;
    int32_t *bud = pg_malloc((size_t)n * 4 + 4), *path = pg_malloc((size_t)n * 4 + 4);
    uint8_t *onpath = pg_calloc((size_t)n + 1, 1);
    for (int32_t i = 0; i < n; i++) bud[i] = UNKNOWN;
    uint8_t *plain_lead = pg_calloc((size_t)g->n_rules * 256, 1);
    for (int r = 0; r < g->n_rules; r++)
        for (size_t q = 0; q < sizeof(k_plain_seqs) / sizeof(k_plain_seqs[0]); q++)
            for (int b = k_plain_seqs[q].lo[0]; b <= k_plain_seqs[q].hi[0]; b++)
                plain_lead[(size_t)r * 256 + g->rules[r].cls[b]] = 1;
    for (int32_t s = 0; s < n; s++) {
        if (bud[s] != UNKNOWN) continue;
        int np = 0;
        int32_t cur = s, base;
        for (;;) {
            if (bud[cur] != UNKNOWN) { base = bud[cur]; break; }
            if (g->st_flags[cur] != GS_BYTES) { bud[cur] = -1; base = -1; break; }
            if (onpath[cur]) { base = INF; break; }
            onpath[cur] = 1;
            path[np++] = cur;
            int32_t t = plain_succ(g, cur, plain_lead);
            if (t == SUCC_DEAD || t == SUCC_MIXED) {
                bud[cur] = t == SUCC_DEAD ? 0 : -1;
                onpath[cur] = 0;
                base = bud[cur];
                np--;
                break;
            }
            cur = t;
        }
        while (np > 0) {
            int32_t p = path[--np];
            onpath[p] = 0;
            base = base < 0 ? -1 : base >= INF - 1 ? INF : base + 1;
            bud[p] = base;
        }
    }
    g->selfloop = pg_calloc((size_t)n + 1, 4);
    for (int32_t st = 0; st < n; st++) {
        if (g->st_flags[st] != GS_BYTES) continue;
        uint32_t bad = 0, seen = 0;
        for (int c = 0; c < 256; c++) {
            uint32_t gb = 1u << gtrie_group[c];
            seen |= gb;
            if (g_next(g, st, (uint8_t)c) != st) bad |= gb;
        }
        g->selfloop[st] = seen & ~bad;
    }
    g->budget = pg_malloc((size_t)n * sizeof(int16_t) + 2);
    for (int32_t i = 0; i < n; i++) g->budget[i] = (int16_t)bud[i];
    free(bud); free(path); free(onpath); free(plain_lead);
}

int automaton_build(struct grammar *g, struct gbuild *b, char *err) {
    int nr = b->n_rules;
    bool has_root = false;
    for (int r = 0; r < nr; r++) has_root |= !strcmp(b->rules[r].name, "root");
    if (!has_root) {
        pg_seterr(err, "grammar has no 'root' rule");
        return -1;
    }
    for (int r = 0; r < nr; r++)
        if (!b->rules[r].body) {
            pg_seterr(err, "undefined grammar rule '%s'", b->rules[r].name);
            return -1;
        }
    if (nr > 4000) {
        pg_seterr(err, "grammar too large (%d rules)", nr);
        return -1;
    }
    g->n_rules = nr;
    g->rules = pg_calloc((size_t)nr, sizeof(*g->rules));
    struct dfa_out o = {0};
    int rc = 0;
    for (int r = 0; r < nr && !rc; r++) {
        struct nfa a = {0};
        int s0, f = build(&a, b->rules[r].body, &s0, 0);
        if (a.overflow) {
            pg_seterr(err, "grammar too large: rule '%s' expands past %d states", b->rules[r].name,
                      MAX_NFA_STATES);
            rc = -1;
        } else {
            int before = o.n;
            rc = rule_dfa(&a, s0, f, &g->rules[r], &o, err);
            for (int i = before; i < o.n; i++) o.rule[i] = r;
        }
        free(a.s); free(a.sets); free(a.slots);
    }
    g->n_states = o.n;
    g->st_rule = o.rule; g->st_row = o.row; g->st_flags = o.flags; g->next = o.next;
    g->st_call_off = o.call_off; g->calls = o.calls;
    if (!o.call_off) g->st_call_off = pg_calloc(1, 4);
    if (rc) return -1;
    g->root = gb_rule(b, "root");
    if (check_left_recursion(g, err, b)) return -1;
    compute_budgets(g);
    return 0;
}

void automaton_free(struct grammar *g) {
    free(g->rules); free(g->st_rule); free(g->st_row); free(g->st_flags); free(g->next);
    free(g->st_call_off); free(g->calls); free(g->budget); free(g->selfloop);
}
