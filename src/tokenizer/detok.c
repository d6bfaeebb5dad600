// Streaming detokenizer: holds back only an incomplete (but so far valid) UTF-8 tail, so that
// every delta ends at a character boundary and the deltas concatenate to tok_decode's output.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

struct detok {
    const struct tokenizer *t;
    bool skip_special;
    char *buf; // [0, held): bytes not yet emitted; after a push, [held, ...) is the delta
    size_t cap, held;
    size_t out_off, out_len; // the last delta
};

struct detok *detok_new(const struct tokenizer *t, bool skip_special) {
    struct detok *d = pg_calloc(1, sizeof *d);
    d->t = t;
    d->skip_special = skip_special;
    d->cap = 64;
    d->buf = pg_malloc(d->cap);
    return d;
}

// Length of an incomplete UTF-8 sequence at the end of s[0..n) that more bytes could still
// complete into a valid character; 0 if the tail is complete or can never become valid.
static size_t incomplete_tail(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = u[n - k];
        if ((c & 0xC0) == 0x80) continue; // continuation byte: the lead is further back
        size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
        if (need <= k) return 0;
        if (k >= 2) { // the second byte's range depends on the lead (no overlongs, surrogates)
            unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
            unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            if (u[n - k + 1] < lo || u[n - k + 1] > hi) return 0;
        }
        return k;
    }
    return 0;
}

static void emit(struct detok *d, const char *s, size_t n) {
    // buf = held bytes + new bytes; emit everything but an incomplete tail
    size_t total = d->held + n;
    if (total > d->cap) {
        while (total > d->cap) d->cap *= 2;
        d->buf = pg_realloc(d->buf, d->cap);
    }
    memcpy(d->buf + d->held, s, n);
    size_t keep = incomplete_tail(d->buf, total);
    d->out_off = 0;
    d->out_len = total - keep;
    d->held = keep;
}

void detok_push(struct detok *d, int32_t id, const char **delta, size_t *delta_len) {
    // move the previously held tail to the front first (the last delta is no longer borrowed)
    if (d->out_len) memmove(d->buf, d->buf + d->out_len, d->held), d->out_len = 0;
    size_t n = 0;
    const char *s = tok_token_bytes(d->t, id, &n);
    if (!s || (d->skip_special && tok_is_special(d->t, id))) s = "", n = 0;
    emit(d, s, n);
    *delta = d->buf;
    *delta_len = d->out_len;
}

void detok_flush(struct detok *d, const char **delta, size_t *delta_len) {
    if (d->out_len) memmove(d->buf, d->buf + d->out_len, d->held), d->out_len = 0;
    *delta = d->buf;
    *delta_len = d->held;
    d->out_len = d->held;
    d->held = 0;
}

void detok_free(struct detok *d) {
    if (!d) return;
    free(d->buf);
    free(d);
}
