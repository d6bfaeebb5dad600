// Vocabulary: token byte strings and the token trie used by mask computation.
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

// Byte groups for subtree summaries: controls, \t, \n, other spaces, ' ', '"', '\\', digits,
// a-f, g-z, A-F, G-Z, '_', '-', '.', ',', ':', braces, brackets, other ASCII punctuation,
// UTF-8 continuation bytes, 2/3/4-byte leads (and invalid bytes).
const uint8_t gtrie_group[256] = {
#define R8(x) x, x, x, x, x, x, x, x
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 3, 3, 0, 0, R8(0), R8(0),
    /* 0x20 */ 4, 19, 5, 19, 19, 19, 19, 19, 19, 19, 19, 19, 15, 13, 14, 19,
    /* 0x30 */ 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 16, 19, 19, 19, 19, 19,
    /* 0x40 */ 19, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11,
    /* 0x50 */ 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 18, 6, 18, 19, 12,
    /* 0x60 */ 19, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    /* 0x70 */ 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 17, 19, 17, 19, 0,
    R8(20), R8(20), R8(20), R8(20), R8(20), R8(20), R8(20), R8(20),
    R8(21), R8(21), R8(21), R8(21), R8(22), R8(22), R8(23), R8(23),
#undef R8
};

static _Thread_local const struct grammar_vocab *t_sort_vocab;

static int cmp_tok(const void *a, const void *b) {
    const struct grammar_vocab *v = t_sort_vocab;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = v->tok_len[x], ly = v->tok_len[y];
    int c = memcmp(v->tok[x], v->tok[y], lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return (x > y) - (x < y);
}

static void build_trie(struct grammar_vocab *v, struct gtrie *tr, bool rest_only) {
    int32_t *ord = pg_malloc((size_t)v->n_tokens * 4 + 4);
    int n = 0;
    size_t total = 1;
    for (int i = 0; i < v->n_tokens; i++)
        if (v->tok[i] && (!rest_only || v->plain_cp[i] < 0)) { ord[n++] = i; total += v->tok_len[i]; }
    t_sort_vocab = v;
    qsort(ord, (size_t)n, 4, cmp_tok);
    tr->node_byte = pg_malloc(total);
    tr->node_depth = pg_malloc(total * 2);
    tr->node_end = pg_malloc(total * 4);
    int32_t *node_of_tok = pg_malloc((size_t)n * 4 + 4);
    int32_t path[1024];
    int nn = 1, plen = 0; // path[d-1] = node at depth d on the current branch
    tr->node_byte[0] = 0;
    tr->node_depth[0] = 0;
    const char *prev = NULL;
    size_t prev_len = 0;
    for (int k = 0; k < n; k++) {
        const char *t = v->tok[ord[k]];
        size_t len = v->tok_len[ord[k]], l = 0;
        while (prev && l < len && l < prev_len && t[l] == prev[l]) l++;
        if ((int)l > plen) l = (size_t)plen;
        plen = (int)l;
        for (size_t j = l; j < len; j++) {
            tr->node_byte[nn] = (uint8_t)t[j];
            tr->node_depth[nn] = (uint16_t)(j + 1);
            path[plen++] = nn++;
        }
        node_of_tok[k] = len ? path[len - 1] : 0;
        prev = t;
        prev_len = len;
    }
    tr->n_nodes = nn;
    // subtree ends: a node's subtree stops at the next node at the same or smaller depth
    int32_t *stk = pg_malloc((size_t)(v->max_len + 2) * 4);
    int sp = 0;
    for (int i = 0; i < nn; i++) {
        while (sp && tr->node_depth[stk[sp - 1]] >= tr->node_depth[i]) tr->node_end[stk[--sp]] = i;
        stk[sp++] = i;
    }
    while (sp) tr->node_end[stk[--sp]] = nn;
    free(stk);
    tr->node_tok_off = pg_calloc((size_t)nn + 1, 4);
    tr->node_tok_ids = pg_malloc((size_t)n * 4 + 4);
    for (int k = 0; k < n; k++) tr->node_tok_off[node_of_tok[k] + 1]++;
    for (int i = 0; i < nn; i++) tr->node_tok_off[i + 1] += tr->node_tok_off[i];
    for (int k = 0; k < n; k++) tr->node_tok_ids[k] = ord[k]; // sorted order = node order
    free(node_of_tok);
    free(ord);
    tr->node_sub = pg_calloc((size_t)nn, 4);
    for (int i = nn - 1; i >= 1; i--) {
        uint32_t m = 1u << gtrie_group[tr->node_byte[i]];
        for (int j = i + 1; j < tr->node_end[i]; j = tr->node_end[j]) m |= tr->node_sub[j];
        tr->node_sub[i] = m;
    }
}

// Code points of a plain token (complete valid UTF-8, every code point >= 0x20 and not '"' or
// '\\'), or -1.
static int16_t plain_count(const uint8_t *s, size_t n) {
    int cps = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf; // allowed range of the second byte
        if (c < 0x80) {
            if (c < 0x20 || c == '"' || c == '\\') return -1;
            len = 1;
        } else if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else return -1;
        if (i + len > n) return -1;
        for (size_t k = 1; k < len; k++) {
            uint8_t d = s[i + k];
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xbf)) return -1;
        }
        i += len;
        cps++;
    }
    return (int16_t)cps;
}

struct grammar_vocab *grammar_vocab_new_from_bytes(const char *const *tokens, const size_t *lens,
                                                   int n_tokens, int model_vocab,
                                                   const int32_t *eos_ids, int n_eos, char *err) {
    if (n_tokens <= 0 || model_vocab < n_tokens || n_eos < 0) {
        pg_seterr(err, "grammar vocab: bad sizes (tokens %d, model vocab %d)", n_tokens, model_vocab);
        return NULL;
    }
    struct grammar_vocab *v = pg_calloc(1, sizeof(*v));
    v->n_tokens = n_tokens;
    v->model_vocab = model_vocab;
    v->mask_words = (model_vocab + 31) / 32;
    v->tok = pg_calloc((size_t)n_tokens, sizeof(char *));
    v->tok_len = pg_calloc((size_t)n_tokens, sizeof(size_t));
    v->eos = pg_malloc((size_t)(n_eos ? n_eos : 1) * 4);
    v->n_eos = n_eos;
    if (n_eos) memcpy(v->eos, eos_ids, (size_t)n_eos * 4);
    for (int i = 0; i < n_tokens; i++) {
        if (!tokens[i] || lens[i] == 0 || lens[i] > 1000) continue;
        bool eos = false;
        for (int k = 0; k < n_eos; k++) eos |= eos_ids[k] == i;
        if (eos) continue;
        v->tok[i] = pg_malloc(lens[i]);
        memcpy(v->tok[i], tokens[i], lens[i]);
        v->tok_len[i] = lens[i];
        if ((int)lens[i] > v->max_len) v->max_len = (int)lens[i];
    }
    v->plain_cp = pg_malloc((size_t)n_tokens * sizeof(int16_t));
    for (int i = 0; i < n_tokens; i++) {
        v->plain_cp[i] = v->tok[i] ? plain_count((const uint8_t *)v->tok[i], v->tok_len[i]) : -1;
        if (v->plain_cp[i] > v->max_plain_cp) v->max_plain_cp = v->plain_cp[i];
    }
    size_t mw = (size_t)v->mask_words;
    v->plain_le = pg_calloc((size_t)(v->max_plain_cp + 1) * mw, 4);
    for (int i = 0; i < n_tokens; i++)
        if (v->plain_cp[i] >= 0) v->plain_le[v->plain_cp[i] * mw + (size_t)(i >> 5)] |= 1u << (i & 31);
    for (int r = 1; r <= v->max_plain_cp; r++)
        for (size_t w = 0; w < mw; w++) v->plain_le[r * mw + w] |= v->plain_le[(r - 1) * mw + w];
    build_trie(v, &v->full, false);
    build_trie(v, &v->rest, true);
    return v;
}

void grammar_vocab_free(struct grammar_vocab *v) {
    if (!v) return;
    for (int i = 0; i < v->n_tokens; i++) free(v->tok[i]);
    free(v->tok); free(v->tok_len); free(v->eos);
    struct gtrie *tries[2] = {&v->full, &v->rest};
    for (int k = 0; k < 2; k++) {
        struct gtrie *tr = tries[k];
        free(tr->node_byte); free(tr->node_depth); free(tr->node_end);
        free(tr->node_tok_off); free(tr->node_tok_ids); free(tr->node_sub);
    }
    free(v->plain_cp); free(v->plain_le);
    free(v);
}
