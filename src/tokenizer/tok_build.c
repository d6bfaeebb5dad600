// tok_new_bpe: builds the tokenizer tables from a tok_bpe_spec (vocab, merges, pre-tokenizer
// steps, added tokens). Shared by tok_load (tokenizer.json) and the GGUF importer.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_impl.h"

#define TOK_MAX_IDS (1 << 26)

static uint32_t arena_add(struct tokenizer *t, const char *s, size_t n) {
    if (t->arena_len + n + 1 > t->arena_cap) {
        while (t->arena_len + n + 1 > t->arena_cap) t->arena_cap = t->arena_cap ? t->arena_cap * 2 : 1 << 16;
        t->arena = pg_realloc(t->arena, t->arena_cap);
    }
    uint32_t off = (uint32_t)t->arena_len;
    memcpy(t->arena + off, s, n);
    t->arena[off + n] = 0; // every entry is NUL-terminated (tok_token_bytes of added tokens)
    t->arena_len += n + 1;
    return off;
}

static void strmap_init(struct tok_strmap *m, int n) {
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2) cap *= 2;
    m->slots = pg_calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    m->keys = pg_malloc(((size_t)n + 1) * sizeof *m->keys);
}

// Maps the key at arena[off..off+len) to id unless the key is present (capacity: the n given
// to strmap_init); returns the id that holds the key.
static int32_t strmap_put(struct tokenizer *t, struct tok_strmap *m, uint32_t off, uint32_t len, int32_t id) {
    const char *s = t->arena + off;
    uint64_t h = tok_hash(s, len);
    uint32_t i = (uint32_t)h & m->mask;
    for (;;) {
        uint64_t v = m->slots[i];
        if (!v) {
            m->keys[m->n] = (struct tok_strkey){off, len, id};
            m->slots[i] = (h >> 32 << 32) | (uint32_t)++m->n;
            return id;
        }
        const struct tok_strkey *k = &m->keys[(uint32_t)v - 1];
        if ((v >> 32) == (h >> 32) && k->len == len && memcmp(t->arena + k->off, s, len) == 0) return k->id;
        i = (i + 1) & m->mask;
    }
}

static void pairmap_put(struct tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & m->mask;
    while (m->slots[i].key && m->slots[i].key != key) i = (i + 1) & m->mask;
    m->slots[i] = (struct tok_pair){key, rank, id}; // a repeated pair: the later rank wins (as HF)
}

static int build_vocab(struct tokenizer *t, const struct tok_bpe_spec *sp, char *err) {
    strmap_init(&t->vocab, sp->n_tokens);
    char *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < sp->n_tokens; i++) {
        const char *s = sp->tokens[i];
        if (!s) continue;
        size_t n = strlen(s);
        if (n + 1 > cap) buf = pg_realloc(buf, cap = n + 64);
        long k = tok_gpt2_to_bytes(s, n, buf);
        t->flags[i] = TOKF_PRESENT;
        if (k < 0) { // not byte-level text: never produced by BPE, decodes to itself
            t->off[i] = arena_add(t, s, n);
            t->len[i] = (uint32_t)n;
            continue;
        }
        t->off[i] = arena_add(t, buf, (size_t)k);
        t->len[i] = (uint32_t)k;
        if (k == 0) continue;
        if (strmap_put(t, &t->vocab, t->off[i], t->len[i], i) == i) t->flags[i] |= TOKF_VOCAB;
    }
    free(buf);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = tok_strmap_get(t, &t->vocab, &c, 1);
    }
    return 0;
}

// Looks up one side of a merge given in GPT-2 form.
static int32_t merge_side(const struct tokenizer *t, const char *s, size_t n, char *buf) {
    long k = tok_gpt2_to_bytes(s, n, buf);
    if (k <= 0) return -1;
    return tok_strmap_get(t, &t->vocab, buf, (size_t)k);
}

static int build_merges(struct tokenizer *t, const struct tok_bpe_spec *sp, char *err) {
    uint32_t cap = 16;
    while (cap < (uint32_t)sp->n_merges * 2) cap *= 2;
    t->merges.slots = pg_calloc(cap, sizeof *t->merges.slots);
    t->merges.mask = cap - 1;
    char *buf = NULL;
    size_t bcap = 0;
    for (int r = 0; r < sp->n_merges; r++) {
        const char *m = sp->merges[r];
        const char *sp1 = m ? strchr(m, ' ') : NULL;
        if (!sp1 || strchr(sp1 + 1, ' ')) {
            pg_seterr(err, "merge %d ('%.60s') is not two tokens separated by one space", r, m ? m : "");
            free(buf);
            return -1;
        }
        size_t n = strlen(m);
        if (n + 1 > bcap) buf = pg_realloc(buf, bcap = n + 64);
        int32_t a = merge_side(t, m, (size_t)(sp1 - m), buf);
        int32_t b = merge_side(t, sp1 + 1, n - (size_t)(sp1 - m) - 1, buf);
        if (a < 0 || b < 0) {
            pg_seterr(err, "merge %d ('%.60s') names a token that is not in the vocab", r, m);
            free(buf);
            return -1;
        }
        memcpy(buf, t->arena + t->off[a], t->len[a]);
        memcpy(buf + t->len[a], t->arena + t->off[b], t->len[b]);
        int32_t id = tok_strmap_get(t, &t->vocab, buf, t->len[a] + t->len[b]);
        if (id < 0) {
            pg_seterr(err, "merge %d ('%.60s'): the merged token is not in the vocab", r, m);
            free(buf);
            return -1;
        }
        pairmap_put(&t->merges, a, b, r, id);
    }
    free(buf);
    return 0;
}

static int cmp_added_len(const void *x, const void *y) {
    const struct tok_added *a = x, *b = y;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

// Bytes an added token decodes to: like the Hugging Face ByteLevel decoder, its characters go
// through the byte map when all of them are in it, else the content is used as is.
static int build_added(struct tokenizer *t, const struct tok_bpe_spec *sp, char *err) {
    strmap_init(&t->byname, sp->n_added);
    t->added_raw.tok = pg_calloc((size_t)sp->n_added + 1, sizeof(struct tok_added));
    t->added_norm.tok = pg_calloc((size_t)sp->n_added + 1, sizeof(struct tok_added));
    for (int i = 0; i < sp->n_added; i++) {
        const struct tok_added_token *a = &sp->added[i];
        size_t n = a->content ? strlen(a->content) : 0;
        if (n == 0) {
            pg_seterr(err, "added token %d has empty content", a->id);
            return -1;
        }
        if (tok_utf8_valid_prefix(a->content, n) != n) {
            pg_seterr(err, "added token %d is not valid UTF-8", a->id);
            return -1;
        }
        int32_t id = a->id;
        char *buf = pg_malloc(n + 1);
        long k = tok_gpt2_to_bytes(a->content, n, buf);
        t->off[id] = k >= 0 ? arena_add(t, buf, (size_t)k) : arena_add(t, a->content, n);
        t->len[id] = k >= 0 ? (uint32_t)k : (uint32_t)n;
        free(buf);
        t->flags[id] |= TOKF_PRESENT | TOKF_ADDED | (a->special ? TOKF_SPECIAL : 0);
        if (!a->special) t->flags[id] &= (uint8_t)~TOKF_SPECIAL;
        // content as matched in the text (NFC'd for normalized tokens)
        const char *c = a->content;
        utf8proc_uint8_t *nfc = NULL;
        bool norm = a->normalized && sp->nfc;
        if (norm && utf8proc_map((const utf8proc_uint8_t *)c, (utf8proc_ssize_t)n, &nfc,
                                 UTF8PROC_STABLE | UTF8PROC_COMPOSE) >= 0) {
            c = (const char *)nfc;
        }
        struct tok_added_set *set = a->normalized ? &t->added_norm : &t->added_raw;
        struct tok_added *d = &set->tok[set->n++];
        size_t cn = strlen(c);
        *d = (struct tok_added){.id = id, .off = arena_add(t, c, cn), .len = (uint32_t)cn,
                                .special = a->special, .lstrip = a->lstrip, .rstrip = a->rstrip,
                                .single_word = a->single_word, .normalized = a->normalized};
        set->first[(uint8_t)c[0]] = 1;
        free(nfc);
        strmap_put(t, &t->byname, arena_add(t, a->content, n), (uint32_t)n, id); // tok_find
    }
    qsort(t->added_raw.tok, (size_t)t->added_raw.n, sizeof(struct tok_added), cmp_added_len);
    qsort(t->added_norm.tok, (size_t)t->added_norm.n, sizeof(struct tok_added), cmp_added_len);
    return 0;
}

static pcre2_code *compile_re(const char *pat, char *err) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        pg_seterr(err, "pre-tokenizer regex '%.80s' at offset %zu: %s", pat, (size_t)eo, (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // falls back to the interpreter if JIT is unavailable
    return re;
}

static int build_steps(struct tokenizer *t, const struct tok_bpe_spec *sp, char *err) {
    const struct tok_pretok_step *steps = sp->pretok;
    int n = sp->n_pretok;
    if (n == 0) n = tok_pretok_preset("gpt2", &steps, err);
    t->steps = pg_calloc((size_t)n, sizeof *t->steps);
    bool seen_bytelevel = false;
    for (int i = 0; i < n; i++) {
        const struct tok_pretok_step *s = &steps[i];
        struct tok_step *d = &t->steps[t->n_steps];
        d->kind = s->kind;
        if (s->kind == TOK_PRE_SPLIT) {
            if (seen_bytelevel) {
                pg_seterr(err, "a Split pre-tokenizer after ByteLevel is not supported");
                return -1;
            }
            if (!s->regex) {
                pg_seterr(err, "Split pre-tokenizer without a regex");
                return -1;
            }
            if (!(d->re = compile_re(s->regex, err))) return -1;
        } else if (s->kind == TOK_PRE_BYTELEVEL) {
            seen_bytelevel = true;
            d->add_prefix_space = s->add_prefix_space;
            if (s->use_regex && !(d->re = compile_re(tok_gpt2_re, err)))
                return -1;
        } else {
            pg_seterr(err, "unknown pre-tokenizer step kind %d", (int)s->kind);
            return -1;
        }
        t->n_steps++;
    }
    if (!seen_bytelevel) {
        pg_seterr(err, "not a byte-level tokenizer (no ByteLevel pre-tokenizer)");
        return -1;
    }
    return 0;
}

struct tokenizer *tok_new_bpe(const struct tok_bpe_spec *sp, char *err) {
    if (!sp || sp->n_tokens < 0 || sp->n_merges < 0 || sp->n_added < 0 || sp->n_pretok < 0 ||
        (sp->n_tokens && !sp->tokens) || (sp->n_merges && !sp->merges) || (sp->n_added && !sp->added) ||
        (sp->n_pretok && !sp->pretok)) {
        pg_seterr(err, "tok_new_bpe: invalid spec");
        return NULL;
    }
    int n_ids = sp->n_tokens;
    for (int i = 0; i < sp->n_added; i++) {
        int32_t id = sp->added[i].id;
        if (id < 0 || id >= TOK_MAX_IDS) {
            pg_seterr(err, "added token id %d out of range", id);
            return NULL;
        }
        if (id >= n_ids) n_ids = id + 1;
    }
    if (n_ids > TOK_MAX_IDS || n_ids == 0) {
        pg_seterr(err, "vocabulary size %d out of range", n_ids);
        return NULL;
    }
    struct tokenizer *t = pg_calloc(1, sizeof *t);
    t->n_ids = n_ids;
    t->off = pg_calloc((size_t)n_ids, sizeof *t->off);
    t->len = pg_calloc((size_t)n_ids, sizeof *t->len);
    t->flags = pg_calloc((size_t)n_ids, 1);
    t->nfc = sp->nfc;
    t->ignore_merges = sp->ignore_merges;
    bpe_cache_init(t);
    if (build_vocab(t, sp, err) || build_merges(t, sp, err) || build_added(t, sp, err) ||
        build_steps(t, sp, err))
        goto fail;
    for (int i = 0; i < sp->n_added; i++)
        for (int j = 0; j < i; j++)
            if (sp->added[i].id == sp->added[j].id) {
                pg_seterr(err, "added token id %d appears twice", sp->added[i].id);
                goto fail;
            }
    t->bos_id = sp->bos_id;
    t->eos_id = sp->eos_id;
    if (sp->bos_id >= 0 && sp->bos_id < n_ids && (t->flags[sp->bos_id] & TOKF_PRESENT))
        t->bos_token = pg_strdup(tok_token_bytes(t, sp->bos_id, NULL));
    if (sp->eos_id >= 0 && sp->eos_id < n_ids && (t->flags[sp->eos_id] & TOKF_PRESENT))
        t->eos_token = pg_strdup(tok_token_bytes(t, sp->eos_id, NULL));
    if (sp->chat_template) t->chat_template = pg_strdup(sp->chat_template);
    return t;
fail:
    tok_free(t);
    return NULL;
}
