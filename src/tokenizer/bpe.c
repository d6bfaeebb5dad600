// BPE merging of one pre-tokenized word, the GPT-2 byte map, hashing and the word cache.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

uint64_t tok_hash(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

int32_t tok_strmap_get(const struct tokenizer *t, const struct tok_strmap *m, const char *s, size_t n) {
    if (!m->slots) return -1;
    uint64_t h = tok_hash(s, n);
    uint32_t i = (uint32_t)h & m->mask;
    for (;;) {
        uint64_t v = m->slots[i];
        if (!v) return -1;
        if ((v >> 32) == (h >> 32)) {
            const struct tok_strkey *k = &m->keys[(uint32_t)v - 1];
            if (k->len == n && memcmp(t->arena + k->off, s, n) == 0) return k->id;
        }
        i = (i + 1) & m->mask;
    }
}

// ---- GPT-2 byte <-> unicode map -------------------------------------------------------

static bool byte_is_printable(int b) { // bytes that stand for themselves
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    int k = 0; // rank of b among the non-printable bytes
    for (int i = 0; i < b; i++) k += !byte_is_printable(i);
    return 256u + (uint32_t)k;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1; // 68 non-printable bytes
    int k = (int)cp - 256;
    for (int i = 0; i < 256; i++) {
        if (byte_is_printable(i)) continue;
        if (k-- == 0) return i;
    }
    return -1;
}

static int16_t cp_map[324]; // code point -> byte, -1 if none
static pthread_once_t cp_map_once = PTHREAD_ONCE_INIT;
static void cp_map_init(void) {
    for (uint32_t c = 0; c < 324; c++) cp_map[c] = (int16_t)tok_cp_to_byte(c);
}

long tok_gpt2_to_bytes(const char *s, size_t n, char *out) {
    pthread_once(&cp_map_once, cp_map_init);
    const int16_t *map = cp_map;
    const unsigned char *u = (const unsigned char *)s;
    long k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        if (u[i] < 0x80) {
            cp = u[i++];
        } else if ((u[i] & 0xE0) == 0xC0 && i + 1 < n) {
            cp = ((uint32_t)(u[i] & 0x1F) << 6) | (u[i + 1] & 0x3F);
            i += 2;
        } else {
            return -1; // every mapped code point is < 0x800
        }
        if (cp >= 324 || map[cp] < 0) return -1;
        out[k++] = (char)map[cp];
    }
    return k;
}

// ---- merging ---------------------------------------------------------------------------

static inline const struct tok_pair *pair_get(const struct tok_pairmap *m, int32_t a, int32_t b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & m->mask;
    for (;;) {
        const struct tok_pair *p = &m->slots[i];
        if (p->key == key) return p;
        if (!p->key) return NULL;
        i = (i + 1) & m->mask;
    }
}

#define NO_RANK 0x7fffffff

static inline int32_t rank_of(const struct tokenizer *t, int32_t a, int32_t b, int32_t *merged) {
    if (a < 0 || b < 0) return NO_RANK;
    const struct tok_pair *p = pair_get(&t->merges, a, b);
    if (!p) return NO_RANK;
    *merged = p->id;
    return p->rank;
}

// Short words: repeatedly merge the lowest-ranked (then leftmost) adjacent pair, O(n^2).
static int merge_short(const struct tokenizer *t, int32_t *ids, int n) {
    int32_t rank[64], merged[64];
    for (int i = 0; i + 1 < n; i++) rank[i] = rank_of(t, ids[i], ids[i + 1], &merged[i]);
    while (n > 1) {
        int best = -1;
        int32_t br = NO_RANK;
        for (int i = 0; i + 1 < n; i++)
            if (rank[i] < br) br = rank[i], best = i;
        if (best < 0) break;
        ids[best] = merged[best];
        size_t tail = (size_t)(n - best - 2); // ids after the pair (best <= n - 2)
        memmove(ids + best + 1, ids + best + 2, tail * sizeof *ids);
        if (tail > 1) { // pairs after the pair's right neighbour: rank[best + 2 .. n - 2]
            memmove(rank + best + 1, rank + best + 2, (tail - 1) * sizeof *rank);
            memmove(merged + best + 1, merged + best + 2, (tail - 1) * sizeof *merged);
        }
        n--;
        if (best > 0) rank[best - 1] = rank_of(t, ids[best - 1], ids[best], &merged[best - 1]);
        if (best + 1 < n) rank[best] = rank_of(t, ids[best], ids[best + 1], &merged[best]);
    }
    return n;
}

// Long words: linked list of symbols and a binary min-heap of (rank, position).
struct hent {
    int32_t rank, pos;
};
static inline bool hless(struct hent a, struct hent b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}
static void hpush(struct hent *h, int *n, struct hent e) {
    int i = (*n)++;
    while (i > 0 && hless(e, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}
static struct hent hpop(struct hent *h, int *n) {
    struct hent top = h[0], e = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(h[c + 1], h[c])) c++;
        if (!hless(h[c], e)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
    return top;
}

static int merge_long(const struct tokenizer *t, int32_t *ids, int n) {
    int *prev = pg_malloc((size_t)n * sizeof *prev), *next = pg_malloc((size_t)n * sizeof *next);
    struct hent *heap = pg_malloc((size_t)3 * (size_t)n * sizeof *heap);
    int nh = 0;
    int32_t m = -1;
    for (int i = 0; i < n; i++) {
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
        if (i + 1 < n) {
            int32_t r = rank_of(t, ids[i], ids[i + 1], &m);
            if (r != NO_RANK) hpush(heap, &nh, (struct hent){r, i});
        }
    }
    while (nh > 0) {
        struct hent e = hpop(heap, &nh);
        int p = e.pos, q = next[p];
        if (ids[p] < 0 || q < 0) continue; // symbol merged away or now last
        if (rank_of(t, ids[p], ids[q], &m) != e.rank) continue; // stale
        ids[p] = m;
        ids[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0) {
            int32_t r = rank_of(t, ids[prev[p]], ids[p], &m);
            if (r != NO_RANK) hpush(heap, &nh, (struct hent){r, prev[p]});
        }
        if (next[p] >= 0) {
            int32_t r = rank_of(t, ids[p], ids[next[p]], &m);
            if (r != NO_RANK) hpush(heap, &nh, (struct hent){r, p});
        }
    }
    int k = 0;
    for (int i = 0; i >= 0; i = next[i]) ids[k++] = ids[i];
    free(prev);
    free(next);
    free(heap);
    return k;
}

// ---- word cache ------------------------------------------------------------------------

void bpe_cache_init(struct tokenizer *t) {
    for (int s = 0; s < TOK_CACHE_SHARDS; s++) {
        pthread_mutex_init(&t->cache[s].mu, NULL);
        t->cache[s].e = pg_calloc(TOK_CACHE_SLOTS, sizeof(struct tok_cache_entry));
    }
}

void bpe_cache_free(struct tokenizer *t) {
    for (int s = 0; s < TOK_CACHE_SHARDS; s++) {
        if (!t->cache[s].e) continue;
        pthread_mutex_destroy(&t->cache[s].mu);
        free(t->cache[s].e);
    }
}

static bool cache_get(const struct tokenizer *t, uint64_t h, const char *w, size_t n, struct tok_ids *o) {
    struct tok_cache_shard *sh = (struct tok_cache_shard *)&t->cache[h >> 60];
    if (pthread_mutex_trylock(&sh->mu) != 0) return false;
    const struct tok_cache_entry *e = &sh->e[h & (TOK_CACHE_SLOTS - 1)];
    bool hit = e->hash == h && e->wlen == n && memcmp(e->word, w, n) == 0;
    int32_t ids[TOK_CACHE_IDS];
    int nids = e->nids;
    if (hit) memcpy(ids, e->ids, (size_t)nids * sizeof *ids);
    pthread_mutex_unlock(&sh->mu);
    if (hit)
        for (int i = 0; i < nids; i++) tok_ids_push(o, ids[i]);
    return hit;
}

static void cache_put(const struct tokenizer *t, uint64_t h, const char *w, size_t n, const int32_t *ids, int nids) {
    struct tok_cache_shard *sh = (struct tok_cache_shard *)&t->cache[h >> 60];
    if (pthread_mutex_trylock(&sh->mu) != 0) return;
    struct tok_cache_entry *e = &sh->e[h & (TOK_CACHE_SLOTS - 1)];
    e->hash = h;
    e->wlen = (uint8_t)n;
    e->nids = (uint8_t)nids;
    memcpy(e->word, w, n);
    memcpy(e->ids, ids, (size_t)nids * sizeof *ids);
    pthread_mutex_unlock(&sh->mu);
}

// ---- one word ---------------------------------------------------------------------------

void bpe_encode_word(const struct tokenizer *t, const char *w, size_t n, struct tok_ids *o) {
    if (n == 0) return;
    if (n == 1) {
        int32_t id = t->byte_id[(uint8_t)w[0]];
        if (id >= 0) tok_ids_push(o, id);
        return;
    }
    if (t->ignore_merges) {
        int32_t id = tok_strmap_get(t, &t->vocab, w, n);
        if (id >= 0) {
            tok_ids_push(o, id);
            return;
        }
    }
    bool cacheable = n <= TOK_CACHE_WORD;
    uint64_t h = 0;
    if (cacheable) {
        h = tok_hash(w, n);
        if (cache_get(t, h, w, n, o)) return;
    }
    int32_t stack[64], *ids = n <= 64 ? stack : pg_malloc(n * sizeof *ids);
    int k = 0;
    for (size_t i = 0; i < n; i++) { // bytes without a token are dropped (no unk token)
        int32_t id = t->byte_id[(uint8_t)w[i]];
        if (id >= 0) ids[k++] = id;
    }
    k = k <= 64 ? merge_short(t, ids, k) : merge_long(t, ids, k);
    for (int i = 0; i < k; i++) tok_ids_push(o, ids[i]);
    if (cacheable && k <= TOK_CACHE_IDS && k > 0) cache_put(t, h, w, n, ids, k);
    if (ids != stack) free(ids);
}
