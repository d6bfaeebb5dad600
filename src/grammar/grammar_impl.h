// Internals of the grammar engine (not a public contract; see grammar.h).
//
// Pipeline: a front end (schema.c, regex.c, ebnf.c) builds a set of rules whose bodies are
// regex-like expressions over bytes with references to other rules (struct gx, built with
// struct gbuild). automaton.c turns every rule into a byte-level DFA whose transitions are
// bytes (through per-rule byte classes) or calls of other rules; all DFA states get global
// ids. matcher.c runs a set of stacks of global states over that (a pushdown automaton with
// nondeterminism as a set of stacks) and computes token masks by walking the vocab trie.
#pragma once
#include <pthread.h>

#include "grammar/grammar.h"

// ---- expressions (arena-allocated; freed with the builder) ----
enum gx_kind { GX_EMPTY, GX_SET, GX_SEQ, GX_ALT, GX_REP, GX_REF, GX_FAIL };
struct gx {
    enum gx_kind kind;
    int n;              // SEQ/ALT: number of kids
    struct gx **kids;   // SEQ/ALT kids; REP: kids[0]
    uint32_t set[8];    // SET: 256-bit byte set
    int min, max;       // REP: max -1 = unbounded
    int rule;           // REF
};

struct gbuild_rule {
    char *name;
    struct gx *body; // NULL while only referenced
};

struct gbuild {
    struct gbuild_rule *rules;
    int n_rules, cap_rules;
    int *hash;     // open-addressing index of rules by name (-1 = empty), hash_cap slots
    int hash_cap;
    void **blocks; // arena blocks
    int n_blocks, cap_blocks;
    long budget;   // remaining expression nodes (guards against huge expansions)
    char *err;     // PG_ERR_LEN buffer
    bool failed;
};

void gb_init(struct gbuild *b, char *err);
void gb_free(struct gbuild *b);
void *gb_alloc(struct gbuild *b, size_t n);
int gb_fail(struct gbuild *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Finds or creates a rule named name; returns its index.
int gb_rule(struct gbuild *b, const char *name);
int gb_new_rule(struct gbuild *b, const char *prefix); // fresh unique name
void gb_define(struct gbuild *b, int rule, struct gx *body);

struct gx *gx_empty(struct gbuild *b);
struct gx *gx_fail(struct gbuild *b);
struct gx *gx_set(struct gbuild *b, const uint32_t set[8]);
struct gx *gx_byte(struct gbuild *b, uint8_t c);
struct gx *gx_lit(struct gbuild *b, const char *s, size_t n);
struct gx *gx_seq(struct gbuild *b, int n, struct gx **kids);
struct gx *gx_alt(struct gbuild *b, int n, struct gx **kids);
struct gx *gx_seq2(struct gbuild *b, struct gx *x, struct gx *y);
struct gx *gx_alt2(struct gbuild *b, struct gx *x, struct gx *y);
struct gx *gx_rep(struct gbuild *b, struct gx *x, int min, int max);
struct gx *gx_ref(struct gbuild *b, int rule);

// Unicode code point ranges -> UTF-8 byte sequences (valid UTF-8 only, surrogates excluded).
struct cprange { uint32_t lo, hi; };
struct gx *gx_cpranges(struct gbuild *b, const struct cprange *r, int n);
struct gx *gx_codepoint(struct gbuild *b, uint32_t cp);

// ---- front ends: each defines the rule named "root" or fails with b->err ----
// Regex (whole-string match). json_string: the regex describes a JSON string's decoded
// value and the output is its JSON-escaped form (used for schema "pattern").
struct gx *regex_compile(struct gbuild *b, const char *re, size_t len, bool json_string);
// Helpers shared with the EBNF parser: s[*pos] is just after '[' / '\\' / at a UTF-8 char.
struct gx *regex_class_at(struct gbuild *b, const char *s, size_t n, size_t *pos);
int regex_escape_at(struct gbuild *b, const char *s, size_t n, size_t *pos, uint32_t *cp);
int regex_cp_at(struct gbuild *b, const char *s, size_t n, size_t *pos, uint32_t *cp);
int ebnf_compile(struct gbuild *b, const char *src, size_t len);
int schema_compile(struct gbuild *b, const char *spec, size_t len, const char *ws_pattern,
                   bool any_object);
int choice_compile(struct gbuild *b, const char *spec, size_t len);
// A JSON Schema document (object) starting at s[*pos] compiled into rule target; *pos advances
// past it. Used by the GBNF extension `%json {...}`.
int schema_compile_at(struct gbuild *b, const char *s, size_t n, size_t *pos, int target);

// ---- vocab ----
// Token trie in DFS preorder. Node 0 is the root (empty prefix).
struct gtrie {
    int n_nodes;
    uint8_t *node_byte;
    uint16_t *node_depth;
    int32_t *node_end;      // index just past the node's subtree
    int32_t *node_tok_off;  // CSR: tokens ending at node i are tok_ids[off[i]..off[i+1])
    int32_t *node_tok_ids;
    uint32_t *node_sub;     // byte groups (gtrie_group) of every byte in the node's subtree
};

// Bytes in 32 groups (digits, a-f, g-z, space, '"', ...); see vocab.c.
extern const uint8_t gtrie_group[256];

struct grammar_vocab {
    int n_tokens;    // tokenizer ids [0, n_tokens)
    int model_vocab; // mask covers [0, model_vocab)
    int mask_words;  // ceil(model_vocab / 32)
    char **tok;      // bytes of each token (NULL: never allowed, e.g. special)
    size_t *tok_len;
    int32_t *eos;
    int n_eos;
    int max_len;     // longest token in bytes
    struct gtrie full;   // every allowed token
    // Fast path inside string-like states: "plain" tokens are complete UTF-8 of code points
    // >= 0x20 other than '"' and '\\'; plain_cp[t] = their code point count (-1: not plain).
    int16_t *plain_cp;
    int max_plain_cp;
    uint32_t *plain_le;  // (max_plain_cp + 1) masks: plain tokens with plain_cp <= r
    struct gtrie rest;   // the tokens that are not plain
};

// ---- compiled automaton ----
struct gcall { int32_t rule, ret; }; // call rule, then continue in global state ret
struct grule {
    int32_t start;  // global id of the start state
    int32_t n_states, first;
    int32_t n_cls;
    uint8_t cls[256];
};
enum { GS_ACCEPT = 1, GS_BYTES = 2, GS_CALLS = 4 };
struct grammar {
    const struct grammar_vocab *v;
    int refs; // atomic
    int n_rules;
    struct grule *rules;
    int32_t n_states;
    int32_t *st_rule;   // rule of each global state
    uint8_t *st_flags;  // GS_*
    int32_t *st_row;    // offset of the state's row in next[] (n_cls entries)
    int32_t *next;      // global target or -1
    int32_t *st_call_off; // CSR into calls (n_states + 1)
    struct gcall *calls;
    int root;
    // per state: -1, or the number of plain code points (see grammar_vocab) it accepts in a row
    // while staying in pure states of its rule, every plain code point leading to one state
    // (INT16_MAX: unbounded). Lets masks use the precomputed plain-token masks.
    int16_t *budget;
    // per state: the byte groups whose every byte loops a pure state back to itself (0 for
    // other states). A trie subtree using only those groups is allowed as a whole.
    uint32_t *selfloop;
    // mask cache keyed by the canonical stack set (filled lazily, shared by matchers)
    pthread_mutex_t mu;
    struct mcache *mc;
};

// Compiles the builder's rules into g (g->v set by caller). Returns 0 or -1 with err.
int automaton_build(struct grammar *g, struct gbuild *b, char *err);
void automaton_free(struct grammar *g);

static inline int32_t g_next(const struct grammar *g, int32_t s, uint8_t c) {
    return g->next[g->st_row[s] + g->rules[g->st_rule[s]].cls[c]];
}

// mask cache (matcher.c)
void mcache_free(struct mcache *mc);
