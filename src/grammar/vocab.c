// Vocabulary: token byte strings and the token trie used by mask computation.
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

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

static void build_trie(struct grammar_vocab *v) {
    int32_t *ord = pg_malloc((size_t)v->n_tokens * 4 + 4);
    int n = 0;
    size_t total = 1;
    for (int i = 0; i < v->n_tokens; i++)
        if (v->tok[i]) { ord[n++] = i; total += v->tok_len[i]; }
    t_sort_vocab = v;
    qsort(ord, (size_t)n, 4, cmp_tok);
    v->node_byte = pg_malloc(total);
    v->node_depth = pg_malloc(total * 2);
    v->node_end = pg_malloc(total * 4);
    int32_t *node_of_tok = pg_malloc((size_t)n * 4 + 4);
    int32_t path[1024];
    int nn = 1, plen = 0; // path[d-1] = node at depth d on the current branch
    v->node_byte[0] = 0;
    v->node_depth[0] = 0;
    const char *prev = NULL;
    size_t prev_len = 0;
    for (int k = 0; k < n; k++) {
        const char *t = v->tok[ord[k]];
        size_t len = v->tok_len[ord[k]], l = 0;
        while (prev && l < len && l < prev_len && t[l] == prev[l]) l++;
        if ((int)l > plen) l = (size_t)plen;
        plen = (int)l;
        for (size_t j = l; j < len; j++) {
            v->node_byte[nn] = (uint8_t)t[j];
            v->node_depth[nn] = (uint16_t)(j + 1);
            path[plen++] = nn++;
        }
        node_of_tok[k] = len ? path[len - 1] : 0;
        prev = t;
        prev_len = len;
    }
    v->n_nodes = nn;
    // subtree ends: a node's subtree stops at the next node at the same or smaller depth
    int32_t *stk = pg_malloc((size_t)(v->max_len + 2) * 4);
    int sp = 0;
    for (int i = 0; i < nn; i++) {
        while (sp && v->node_depth[stk[sp - 1]] >= v->node_depth[i]) v->node_end[stk[--sp]] = i;
        stk[sp++] = i;
    }
    while (sp) v->node_end[stk[--sp]] = nn;
    free(stk);
    v->node_tok_off = pg_calloc((size_t)nn + 1, 4);
    v->node_tok_ids = pg_malloc((size_t)n * 4 + 4);
    for (int k = 0; k < n; k++) v->node_tok_off[node_of_tok[k] + 1]++;
    for (int i = 0; i < nn; i++) v->node_tok_off[i + 1] += v->node_tok_off[i];
    for (int k = 0; k < n; k++) v->node_tok_ids[k] = ord[k]; // sorted order = node order
    free(node_of_tok);
    free(ord);
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
    build_trie(v);
    return v;
}

void grammar_vocab_free(struct grammar_vocab *v) {
    if (!v) return;
    for (int i = 0; i < v->n_tokens; i++) free(v->tok[i]);
    free(v->tok); free(v->tok_len); free(v->eos);
    free(v->node_byte); free(v->node_depth); free(v->node_end);
    free(v->node_tok_off); free(v->node_tok_ids);
    free(v);
}
