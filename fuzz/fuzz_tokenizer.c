// libFuzzer target for the tokenizer. The first input byte picks the mode:
//   0-2: encode the rest with a fixture tokenizer (llama3 / edge / gpt2), parse_special from
//        bit 7; checks decode(encode(x)) == x where that must hold (llama3, gpt2: no
//        normalizer, no prefix space) and that streaming detok concatenates to the decode.
//   3:   the rest is tokenizer.json text for tok_from_json (must fail cleanly or load).
// Run from the repository root (the fixtures are read from tests/fixtures/tok/).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static struct tokenizer *toks[3];

static void init(void) {
    static const char *files[3] = {"tests/fixtures/tok/llama3.json", "tests/fixtures/tok/edge.json",
                                   "tests/fixtures/tok/gpt2.json"};
    for (int i = 0; i < 3; i++) {
        char err[PG_ERR_LEN];
        toks[i] = tok_load(files[i], err);
        if (!toks[i]) {
            fprintf(stderr, "fuzz_tokenizer: %s (run from the repo root)\n", err);
            abort();
        }
    }
}

static void check_encode(const struct tokenizer *t, const char *s, size_t n, bool special, bool roundtrip) {
    int32_t *ids;
    int nid;
    char err[PG_ERR_LEN];
    if (tok_encode(t, s, n, special, &ids, &nid, err) != 0) abort(); // never fails on any bytes
    size_t dl;
    char *d = tok_decode(t, ids, nid, false, &dl);
    if (roundtrip && (dl != n || memcmp(d, s, n) != 0)) abort();
    struct detok *dt = detok_new(t, false);
    size_t acc = 0;
    const char *delta;
    size_t len;
    for (int i = 0; i < nid; i++) {
        detok_push(dt, ids[i], &delta, &len);
        if (acc + len > dl || memcmp(d + acc, delta, len) != 0) abort();
        acc += len;
    }
    detok_flush(dt, &delta, &len);
    if (acc + len != dl || memcmp(d + acc, delta, len) != 0) abort();
    detok_free(dt);
    free(d);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!toks[0]) init();
    if (size < 1) return 0;
    int mode = data[0] & 3;
    bool special = data[0] & 0x80;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if (mode < 3) {
        check_encode(toks[mode], s, n, special, mode != 1);
    } else {
        char err[PG_ERR_LEN];
        struct tokenizer *t = tok_from_json(s, n, err);
        if (t) {
            check_encode(t, "hello world 123 <|x|>", 21, true, false);
            tok_free(t);
        }
    }
    return 0;
}
