// Structured outputs: JSON Schema, regex, choice and EBNF grammars compiled to automata over
// bytes, driving per-step token masks over a byte-level BPE vocabulary.
// A compiled grammar is immutable and reference counted (shared by requests and the cache);
// a matcher is one sequence's position in it (one thread at a time).
#pragma once
#include "util/common.h"

struct tokenizer;
struct grammar_vocab;   // the tokenizer's tokens as byte strings, prepared once per model
struct grammar;
struct grammar_matcher;

// model_vocab: rows of the model's logits (>= the tokenizer's vocab: padding ids are never
// allowed). eos_ids: the tokens that end generation (allowed only where the grammar accepts).
struct grammar_vocab *grammar_vocab_new(const struct tokenizer *t, int model_vocab,
                                        const int32_t *eos_ids, int n_eos);
// The same from raw token byte strings: tokens[i] (lens[i] bytes) for ids [0, n_tokens); a NULL
// or empty entry is never allowed (use it for special tokens). Copies everything. NULL + err.
struct grammar_vocab *grammar_vocab_new_from_bytes(const char *const *tokens, const size_t *lens,
                                                   int n_tokens, int model_vocab,
                                                   const int32_t *eos_ids, int n_eos, char *err);
void grammar_vocab_free(struct grammar_vocab *v);

enum grammar_kind {
    GRAMMAR_JSON_SCHEMA = 0, // spec: a JSON Schema document
    GRAMMAR_JSON_OBJECT,     // spec ignored: any JSON object (response_format json_object)
    GRAMMAR_REGEX,           // spec: a regex (whole output must match)
    GRAMMAR_CHOICE,          // spec: a JSON array of strings (output is exactly one of them)
    GRAMMAR_EBNF,            // spec: a GBNF/EBNF grammar with a `root` rule
};

// Compiles spec. An unsupported keyword or construct fails with err naming it (-> HTTP 400).
// whitespace_pattern: for JSON kinds, the regex allowed between tokens (NULL: compact-ish default).
struct grammar *grammar_compile(const struct grammar_vocab *v, enum grammar_kind kind,
                                const char *spec, size_t spec_len,
                                const char *whitespace_pattern, char *err);
void grammar_retain(struct grammar *g);
void grammar_release(struct grammar *g);

// A bounded LRU of compiled grammars keyed by (kind, spec, whitespace pattern); thread-safe.
// Returns a retained grammar (caller releases) or NULL with err.
struct grammar_cache;
struct grammar_cache *grammar_cache_new(const struct grammar_vocab *v, int capacity);
void grammar_cache_free(struct grammar_cache *c);
struct grammar *grammar_cache_get(struct grammar_cache *c, enum grammar_kind kind,
                                  const char *spec, size_t spec_len,
                                  const char *whitespace_pattern, char *err);

// Warm-up (e.g. --structured-warmup): gets the grammar through the cache (compiling it if
// needed) and fills its mask cache with n_walks seeded pseudo-random walks of up to max_tokens
// tokens each, so that a first real request finds the compiled grammar and the common masks.
// Thread-safe; run it off the engine thread. Returns 0 or -1 with err (compile error).
int grammar_cache_warmup(struct grammar_cache *c, enum grammar_kind kind, const char *spec,
                         size_t spec_len, const char *whitespace_pattern, int n_walks,
                         int max_tokens, char *err);

struct grammar_matcher *grammar_matcher_new(struct grammar *g); // retains g
void grammar_matcher_free(struct grammar_matcher *m);
// mask: ceil(model_vocab / 32) words; bit (id % 32) of word id / 32 set = token allowed next.
void grammar_fill_mask(struct grammar_matcher *m, uint32_t *mask);
// Advances by one sampled token. Returns 0, or -1 if the token is not allowed (state unchanged).
int grammar_accept_token(struct grammar_matcher *m, int32_t token);
// True when the output so far is complete and nothing else may follow (generation must stop).
bool grammar_is_terminated(const struct grammar_matcher *m);
// True when the output so far is a complete match (EOS would be accepted now).
bool grammar_can_end(const struct grammar_matcher *m);
