// Internals of the byte-level BPE tokenizer (tokenizer.c, bpe.c, tok_json.c, detok.c).
// Not a public contract: only src/tokenizer/ includes this.
#pragma once
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "tokenizer/tokenizer.h"

// Open-addressing map from a byte string (stored in the tokenizer arena) to an id.
struct tok_strkey {
    uint32_t off, len; // key in the arena
    int32_t id;
};
struct tok_strmap {
    uint64_t *slots; // (hash >> 32) << 32 | (entry + 1); 0 = empty
    uint32_t mask;
    struct tok_strkey *keys;
    int n;
};

// Open-addressing map from a pair of ids to (rank, merged id).
struct tok_pair {
    uint64_t key; // (left << 32 | right) + 1, 0 = empty
    int32_t rank;
    int32_t id;
};
struct tok_pairmap {
    struct tok_pair *slots;
    uint32_t mask;
};

// Per-id flags.
enum {
    TOKF_PRESENT = 1, // id exists
    TOKF_VOCAB = 2,   // in the BPE vocab (reachable by merges), key in tok->vocab
    TOKF_ADDED = 4,   // an added token
    TOKF_SPECIAL = 8, // added and special
};

struct tok_added {
    int32_t id;
    uint32_t off, len; // content in arena (NFC'd when normalized and the tokenizer uses NFC)
    bool special, lstrip, rstrip, single_word, normalized;
};

// A group of added tokens matched on the same text (raw or normalized).
struct tok_added_set {
    struct tok_added *tok; // sorted by length, longest first
    int n;
    uint8_t first[256];    // first[b]: some token starts with byte b
};

struct tok_step {
    enum tok_pretok_kind kind;
    pcre2_code *re; // SPLIT, or BYTELEVEL with use_regex (the GPT-2 regex)
    bool add_prefix_space;
};

// Word cache: direct-mapped, sharded with try-locks so that concurrent encoders never wait.
#define TOK_CACHE_SHARDS 16
#define TOK_CACHE_SLOTS 4096 // per shard
#define TOK_CACHE_WORD 54 // bytes (18 CJK characters)
#define TOK_CACHE_IDS 16
struct tok_cache_entry {
    uint64_t hash;
    uint8_t wlen, nids;
    char word[TOK_CACHE_WORD];
    int32_t ids[TOK_CACHE_IDS];
};
struct tok_cache_shard {
    pthread_mutex_t mu;
    struct tok_cache_entry *e;
};

struct tokenizer {
    int n_ids;          // highest id + 1
    char *arena;        // all token bytes
    size_t arena_len, arena_cap;
    uint32_t *off, *len; // per id: decoded bytes (tok_token_bytes)
    uint8_t *flags;      // per id: TOKF_*
    struct tok_strmap vocab;  // decoded bytes -> id (BPE vocab only)
    struct tok_strmap byname; // added-token content -> id
    struct tok_pairmap merges;
    int32_t byte_id[256]; // id of the single-byte token, -1 if none
    struct tok_added_set added_raw, added_norm;
    struct tok_step *steps;
    int n_steps;
    bool nfc, ignore_merges;
    int32_t bos_id, eos_id;
    char *chat_template, *bos_token, *eos_token;
    struct tok_cache_shard cache[TOK_CACHE_SHARDS];
};

// Growable id output.
struct tok_ids {
    int32_t *v;
    int n, cap;
};
void tok_ids_push(struct tok_ids *o, int32_t id);

extern const char *const tok_gpt2_re;

uint64_t tok_hash(const void *p, size_t n);
int32_t tok_strmap_get(const struct tokenizer *t, const struct tok_strmap *m, const char *s, size_t n);

// GPT-2 byte-to-unicode: the code point that stands for byte b, and the inverse (-1 if cp
// stands for no byte).
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);
// Decodes a GPT-2-form string to bytes into out (capacity >= n). Returns the byte count, or -1
// if some character is not in the byte map.
long tok_gpt2_to_bytes(const char *s, size_t n, char *out);

// BPE of one pre-tokenized word (raw bytes) appended to o. (bpe.c)
void bpe_encode_word(const struct tokenizer *t, const char *w, size_t n, struct tok_ids *o);
void bpe_cache_init(struct tokenizer *t);
void bpe_cache_free(struct tokenizer *t);

// Length of the valid UTF-8 prefix of s[0..n) (utf8.c style helper in tokenizer.c).
size_t tok_utf8_valid_prefix(const char *s, size_t n);
// Length of the UTF-8 sequence at s if valid (1..4), 0 if s starts an invalid sequence
// (also when it is truncated by n).
int tok_utf8_seq(const unsigned char *s, size_t n);
