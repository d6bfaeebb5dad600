// Unit tests for the tokenizer: golden ids from HF tokenizers (tests/fixtures/tok/golden.jsonl,
// made by tests/py/make_tok_fixtures.py), streaming detokenization, tok_new_bpe validation,
// load errors, accessors, invalid UTF-8 and concurrent encoding.
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <unistd.h>

#include "tokenizer/tok_jsonlite.h"
#include "tokenizer/tokenizer.h"

#define QWEN "../shared/models/qwen-tokenizer"
#define FIX "tests/fixtures/tok/"

static const char *model_path(const char *name) {
    if (!strcmp(name, "qwen")) return QWEN;
    if (!strcmp(name, "gpt2")) return FIX "gpt2.json";
    if (!strcmp(name, "smollm")) return FIX "smollm.json";
    if (!strcmp(name, "llama3")) return FIX "llama3.json";
    if (!strcmp(name, "edge")) return FIX "edge.json";
    return NULL;
}

static struct tokenizer *load(const char *path) {
    char err[PG_ERR_LEN] = "";
    struct tokenizer *t = tok_load(path, err);
    if (!t) fail_msg("tok_load(%s): %s", path, err);
    return t;
}

// Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF).
static bool valid_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int len = u[i] < 0x80 ? 1 : (u[i] >> 5) == 6 ? 2 : (u[i] >> 4) == 14 ? 3 : (u[i] >> 3) == 30 ? 4 : 0;
        if (!len || i + (size_t)len > n) return false;
        uint32_t cp = len == 1 ? u[i] : (uint32_t)(u[i] & (0x7F >> len));
        for (int k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += (size_t)len;
    }
    return true;
}

// Streams ids through a detok and checks: every delta is whole UTF-8 characters (when the
// full text is valid), and deltas + flush == tok_decode.
static void check_stream(const struct tokenizer *t, const int32_t *ids, int n, bool skip) {
    size_t full_len;
    char *full = tok_decode(t, ids, n, skip, &full_len);
    bool valid = valid_utf8(full, full_len);
    struct detok *d = detok_new(t, skip);
    char *acc = malloc(full_len + 1);
    size_t acc_len = 0;
    const char *delta;
    size_t dl;
    for (int i = 0; i < n; i++) {
        detok_push(d, ids[i], &delta, &dl);
        if (valid) assert_true(valid_utf8(delta, dl));
        assert_true(acc_len + dl <= full_len);
        memcpy(acc + acc_len, delta, dl);
        acc_len += dl;
    }
    detok_flush(d, &delta, &dl);
    if (valid) assert_int_equal(dl, 0);
    assert_true(acc_len + dl <= full_len);
    memcpy(acc + acc_len, delta, dl);
    acc_len += dl;
    assert_int_equal(acc_len, full_len);
    assert_memory_equal(acc, full, full_len);
    detok_free(d);
    free(acc);
    free(full);
}

static void test_golden(void **state) {
    (void)state;
    json_error_t je;
    FILE *f = fopen(FIX "golden.jsonl", "r");
    assert_non_null(f);
    char line[1 << 16];
    struct tokenizer *t = NULL;
    char cur[32] = "";
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *c = json_loads(line, 0, &je);
        assert_non_null(c);
        const char *model = json_string_value(json_object_get(c, "model"));
        if (strcmp(model, cur) != 0) {
            tok_free(t);
            t = load(model_path(model));
            snprintf(cur, sizeof cur, "%s", model);
        }
        const char *text = json_string_value(json_object_get(c, "text"));
        json_t *want = json_object_get(c, "ids");
        int32_t *ids;
        int n;
        char err[PG_ERR_LEN];
        assert_int_equal(tok_encode(t, text, strlen(text), true, &ids, &n, err), 0);
        if ((size_t)n != json_array_size(want)) fail_msg("%s: %s: %d ids, want %zu", model, text, n, json_array_size(want));
        for (int i = 0; i < n; i++) assert_int_equal(ids[i], json_integer_value(json_array_get(want, (size_t)i)));
        // skip_special decode: HF decodes lossily, so compare only when ours is valid UTF-8
        size_t dl;
        char *dec = tok_decode(t, ids, n, true, &dl);
        const char *hf = json_string_value(json_object_get(c, "decoded_skip_special"));
        if (valid_utf8(dec, dl)) assert_string_equal(dec, hf);
        free(dec);
        check_stream(t, ids, n, false);
        check_stream(t, ids, n, true);
        free(ids);
        json_decref(c);
        cases++;
    }
    fclose(f);
    tok_free(t);
    assert_true(cases >= 50);
}

static void test_qwen_accessors(void **state) {
    (void)state;
    struct tokenizer *t = load(QWEN);
    assert_int_equal(tok_vocab_size(t), 151669);
    int32_t im_end = tok_find(t, "<|im_end|>");
    assert_int_equal(im_end, 151645);
    assert_true(tok_is_special(t, im_end));
    assert_false(tok_is_special(t, tok_find(t, "<think>")));
    assert_false(tok_is_special(t, 0));
    assert_false(tok_is_special(t, -1));
    assert_false(tok_is_special(t, 1 << 30));
    size_t len;
    const char *b = tok_token_bytes(t, im_end, &len);
    assert_int_equal(len, strlen("<|im_end|>"));
    assert_memory_equal(b, "<|im_end|>", len);
    assert_null(tok_token_bytes(t, -5, &len));
    assert_null(tok_token_bytes(t, 200000, &len));
    // " the" in GPT-2 form and as raw bytes find the same id
    int32_t the = tok_find(t, "\xc4\xa0the");
    assert_true(the >= 0);
    assert_int_equal(tok_find(t, " the"), the);
    assert_int_equal(tok_find(t, "no such token at all \x01"), -1);
    assert_non_null(tok_chat_template(t));
    assert_string_equal(tok_eos_token(t), "<|im_end|>");
    assert_null(tok_bos_token(t)); // bos_token is null in tokenizer_config.json
    // unknown ids are skipped by decode
    int32_t ids[] = {-1, the, 999999999};
    char *s = tok_decode(t, ids, 3, false, &len);
    assert_string_equal(s, " the");
    free(s);
    tok_free(t);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    struct tokenizer *t = load(QWEN);
    const char *cases[] = {"\xff", "abc\xff" "def", "caf\xc3", "\xe4\xbd", "\xed\xa0\x80 x", "\xc0\xaf",
                           "\xf4\x90\x80\x80", "<|im_start|>\xfe<|im_end|>", "a\0b"};
    size_t lens[] = {1, 7, 4, 2, 5, 2, 4, 23, 3};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int32_t *ids;
        int n;
        char err[PG_ERR_LEN];
        assert_int_equal(tok_encode(t, cases[c], lens[c], true, &ids, &n, err), 0);
        size_t dl;
        char *d = tok_decode(t, ids, n, false, &dl);
        assert_int_equal(dl, lens[c]); // decode gives the raw bytes back
        assert_memory_equal(d, cases[c], dl);
        check_stream(t, ids, n, false);
        free(d);
        free(ids);
    }
    // a lone 0xFF is exactly its byte token
    int32_t *ids;
    int n;
    assert_int_equal(tok_encode(t, "\xff", 1, true, &ids, &n, NULL), 0);
    assert_int_equal(n, 1);
    size_t bl;
    const char *bb = tok_token_bytes(t, ids[0], &bl);
    assert_int_equal(bl, 1);
    assert_int_equal((unsigned char)bb[0], 0xFF);
    free(ids);
    // empty input
    assert_int_equal(tok_encode(t, "", 0, true, &ids, &n, NULL), 0);
    assert_int_equal(n, 0);
    free(ids);
    tok_free(t);
}

// Streaming: a 3-byte character split over byte tokens is held back until complete; an
// invalid tail is flushed as is.
static void test_detok_holds_partial_chars(void **state) {
    (void)state;
    struct tokenizer *t = load(QWEN);
    const unsigned char zh[] = {0xE4, 0xBD, 0xA0}; // 你
    int32_t ids[3];
    for (int i = 0; i < 3; i++) {
        int32_t *one;
        int n;
        assert_int_equal(tok_encode(t, (const char *)zh + i, 1, false, &one, &n, NULL), 0);
        assert_int_equal(n, 1);
        ids[i] = one[0];
        free(one);
    }
    struct detok *d = detok_new(t, false);
    const char *delta;
    size_t dl;
    detok_push(d, ids[0], &delta, &dl);
    assert_int_equal(dl, 0);
    detok_push(d, ids[1], &delta, &dl);
    assert_int_equal(dl, 0);
    detok_push(d, ids[2], &delta, &dl);
    assert_int_equal(dl, 3);
    assert_memory_equal(delta, zh, 3);
    detok_push(d, ids[0], &delta, &dl); // dangling lead byte
    assert_int_equal(dl, 0);
    detok_flush(d, &delta, &dl);
    assert_int_equal(dl, 1);
    assert_int_equal((unsigned char)delta[0], 0xE4);
    detok_free(d);
    // special tokens skipped when asked
    d = detok_new(t, true);
    detok_push(d, tok_find(t, "<|im_end|>"), &delta, &dl);
    assert_int_equal(dl, 0);
    detok_push(d, tok_find(t, "<think>"), &delta, &dl); // not special
    assert_int_equal(dl, 7);
    detok_free(d);
    tok_free(t);
}

// Tiny tokenizer from parts: 256 byte tokens in GPT-2 form plus a few merges.
static char bytetok[256][4];
static void make_bytetoks(void) {
    int k = 0;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t cp = self ? (uint32_t)b : 256u + (uint32_t)k++;
        if (cp < 0x80) bytetok[b][0] = (char)cp, bytetok[b][1] = 0;
        else bytetok[b][0] = (char)(0xC0 | (cp >> 6)), bytetok[b][1] = (char)(0x80 | (cp & 0x3F)), bytetok[b][2] = 0;
    }
}

static void test_new_bpe(void **state) {
    (void)state;
    make_bytetoks();
    const char *tokens[260];
    for (int b = 0; b < 256; b++) tokens[b] = bytetok[b];
    tokens[256] = "ab";
    tokens[257] = "abc";
    tokens[258] = "\xc4\xa0" "abc"; // " abc"
    tokens[259] = NULL;             // a hole
    const char *merges[] = {"a b", "ab c", "\xc4\xa0 abc"};
    struct tok_added_token added[] = {{.id = 260, .content = "<eos>", .special = true}};
    struct tok_bpe_spec sp = {.tokens = tokens, .n_tokens = 260, .merges = merges, .n_merges = 3,
                              .added = added, .n_added = 1, .bos_id = -1, .eos_id = 260};
    char err[PG_ERR_LEN] = "";
    struct tokenizer *t = tok_new_bpe(&sp, err);
    if (!t) fail_msg("%s", err);
    assert_int_equal(tok_vocab_size(t), 261);
    assert_string_equal(tok_eos_token(t), "<eos>");
    assert_null(tok_token_bytes(t, 259, NULL));
    int32_t *ids;
    int n;
    assert_int_equal(tok_encode(t, "abc abc ab<eos>", 15, true, &ids, &n, err), 0);
    // pieces "abc", " abc", " ab" (no " ab" merge: " " + "ab"), then <eos>
    int32_t want[] = {257, 258, ' ', 256, 260};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    assert_int_equal(tok_encode(t, "<eos>", 5, false, &ids, &n, err), 0);
    assert_int_equal(n, 5); // not parsed: five byte tokens
    free(ids);
    tok_free(t);

    // invalid specs fail with a message
    const char *bad_merge[] = {"a zz"};
    sp.merges = bad_merge;
    sp.n_merges = 1;
    assert_null(tok_new_bpe(&sp, err));
    assert_non_null(strstr(err, "not in the vocab"));
    const char *unmergeable[] = {"b c"}; // "bc" is not a token
    sp.merges = unmergeable;
    assert_null(tok_new_bpe(&sp, err));
    const char *no_space[] = {"abc"};
    sp.merges = no_space;
    assert_null(tok_new_bpe(&sp, err));
    sp.n_merges = 0;
    struct tok_pretok_step bad_re = {.kind = TOK_PRE_SPLIT, .regex = "(unclosed"};
    struct tok_pretok_step steps[] = {bad_re, {.kind = TOK_PRE_BYTELEVEL}};
    sp.pretok = steps;
    sp.n_pretok = 2;
    assert_null(tok_new_bpe(&sp, err));
    assert_non_null(strstr(err, "regex"));
    sp.n_pretok = 1;
    steps[0].regex = "\\p{N}";
    assert_null(tok_new_bpe(&sp, err)); // no ByteLevel step
    sp.n_pretok = 0;
    struct tok_added_token dup[] = {{.id = 260, .content = "<a>"}, {.id = 260, .content = "<b>"}};
    sp.added = dup;
    sp.n_added = 2;
    assert_null(tok_new_bpe(&sp, err));
    dup[1].id = -3;
    assert_null(tok_new_bpe(&sp, err));
    dup[1].id = 261;
    dup[1].content = "";
    assert_null(tok_new_bpe(&sp, err));
}

// Builds a tokenizer the way the GGUF importer does: vocab and merges from parts, the
// pre-tokenizer from a preset name; it must encode exactly like tok_load of the same file.
static void check_preset_equivalence(const char *file, const char *preset, const char *text) {
    json_error_t je;
    json_t *root = json_load_file(file, 0, &je);
    assert_non_null(root);
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges"), *added = json_object_get(root, "added_tokens");
    int nt = (int)json_object_size(vocab);
    const char **tokens = calloc((size_t)nt, sizeof *tokens);
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) tokens[json_integer_value(v)] = key;
    size_t nm = json_array_size(merges);
    char **ms = calloc(nm, sizeof *ms);
    for (size_t i = 0; i < nm; i++) {
        json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            ms[i] = strdup(json_string_value(m));
        } else {
            const char *l = json_string_value(json_array_get(m, 0)), *r = json_string_value(json_array_get(m, 1));
            ms[i] = malloc(strlen(l) + strlen(r) + 2);
            sprintf(ms[i], "%s %s", l, r);
        }
    }
    size_t na = json_array_size(added);
    struct tok_added_token *at = calloc(na + 1, sizeof *at);
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i);
        at[i] = (struct tok_added_token){.id = (int32_t)json_integer_value(json_object_get(a, "id")),
                                         .content = json_string_value(json_object_get(a, "content")),
                                         .special = json_is_true(json_object_get(a, "special"))};
    }
    char err[PG_ERR_LEN] = "";
    struct tok_bpe_spec sp = {.tokens = tokens, .n_tokens = nt, .merges = (const char *const *)ms,
                              .n_merges = (int)nm, .added = at, .n_added = (int)na, .bos_id = -1, .eos_id = -1,
                              .nfc = json_object_get(root, "normalizer") && !json_is_null(json_object_get(root, "normalizer")),
                              .ignore_merges = json_is_true(json_object_get(model, "ignore_merges"))};
    sp.n_pretok = tok_pretok_preset(preset, &sp.pretok, err);
    assert_true(sp.n_pretok > 0);
    struct tokenizer *a = tok_new_bpe(&sp, err);
    if (!a) fail_msg("%s: %s", file, err);
    struct tokenizer *b = load(file);
    int32_t *ia, *ib;
    int na_, nb;
    assert_int_equal(tok_encode(a, text, strlen(text), true, &ia, &na_, err), 0);
    assert_int_equal(tok_encode(b, text, strlen(text), true, &ib, &nb, err), 0);
    assert_int_equal(na_, nb);
    assert_memory_equal(ia, ib, (size_t)nb * sizeof *ia);
    free(ia);
    free(ib);
    tok_free(a);
    tok_free(b);
    for (size_t i = 0; i < nm; i++) free(ms[i]);
    free(ms);
    free(at);
    free(tokens);
    json_decref(root);
}

static void test_presets(void **state) {
    (void)state;
    const struct tok_pretok_step *steps;
    char err[PG_ERR_LEN];
    const char *names[] = {"gpt2", "llama-bpe", "qwen2", "smollm", "default"};
    for (size_t i = 0; i < 5; i++) assert_true(tok_pretok_preset(names[i], &steps, err) > 0);
    assert_int_equal(tok_pretok_preset("no-such-pre", &steps, err), -1);
    // the qwen2 preset regex is the one in the Qwen tokenizer.json
    json_error_t je;
    json_t *q = json_load_file(QWEN "/tokenizer.json", 0, &je);
    assert_non_null(q);
    json_t *split = json_array_get(json_object_get(json_object_get(q, "pre_tokenizer"), "pretokenizers"), 0);
    assert_int_equal(tok_pretok_preset("qwen2", &steps, err), 2);
    assert_string_equal(steps[0].regex, json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex")));
    json_decref(q);
    const char *text = "Hello world's 12345 ab  \n\n  x 你好，世界 😀 <|im_start|> <|endoftext|> 'LL";
    check_preset_equivalence(FIX "gpt2.json", "gpt2", text);
    check_preset_equivalence(FIX "llama3.json", "llama-bpe", text);
    check_preset_equivalence(FIX "smollm.json", "smollm", text);
}

static void test_load_errors(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    assert_null(tok_load("/nonexistent/dir", err));
    assert_true(strlen(err) > 0);
    assert_null(tok_load(NULL, err));
    const char *bad[] = {
        "{",
        "[]",
        "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": null}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"NFKC\"}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
        "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"WordPiece\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"added_tokens\": [{\"id\": 5}]}",
    };
    char path[] = "/tmp/pagoda-test-tok-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i], f);
        fclose(f);
        err[0] = 0;
        struct tokenizer *t = tok_load(path, err);
        if (t) fail_msg("case %zu loaded: %s", i, bad[i]);
        assert_true(strlen(err) > 0);
    }
    // a minimal valid one: string pattern Split, Digits, merges as pairs
    FILE *f = fopen(path, "w");
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"1\": 3}, \"merges\": [[\"a\", \"b\"]]},"
          " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
          " {\"String\": \"+\"}, \"behavior\": \"Isolated\"}, {\"type\": \"Digits\", \"individual_digits\": true},"
          " {\"type\": \"ByteLevel\", \"use_regex\": false}]}}", f);
    fclose(f);
    struct tokenizer *t = tok_load(path, err);
    if (!t) fail_msg("%s", err);
    int32_t *ids;
    int n;
    assert_int_equal(tok_encode(t, "ab+ab11", 7, true, &ids, &n, err), 0);
    // "ab" "+"(no token: dropped) "ab" "1" "1"
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[2], 3);
    assert_int_equal(ids[3], 3);
    free(ids);
    tok_free(t);
    unlink(path);
}

// The in-place JSON parser used for tokenizer.json, checked against jansson on valid input.
static void test_jsonlite(void **state) {
    (void)state;
    const char *good[] = {
        "{\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\\\"\\\\/\"], \"b\": {}, \"c\": []}",
        " [ ] ", "\"\"", "0", "{\"k\":{\"k\":{\"k\":[[[]]]}}}",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char *buf = strdup(good[i]), err[PG_ERR_LEN];
        struct jl_doc d;
        if (jl_parse(&d, buf, strlen(buf), err)) fail_msg("%s: %s", good[i], err);
        jl_free(&d);
        free(buf);
    }
    char *buf = strdup(good[0]), err[PG_ERR_LEN];
    struct jl_doc d;
    assert_int_equal(jl_parse(&d, buf, strlen(buf), err), 0);
    const struct jl_node *a = jl_get(&d, &d.nodes[0], "a");
    assert_int_equal(a->len, 6);
    int64_t v;
    assert_true(jl_int(jl_at(&d, a, 0), &v));
    assert_int_equal(v, 1);
    assert_false(jl_int(jl_at(&d, a, 1), &v));
    assert_true(jl_is_true(jl_at(&d, a, 2)));
    assert_true(jl_is_null(jl_at(&d, a, 4)));
    json_t *ref = json_loads(good[0], 0, NULL);
    const char *want = json_string_value(json_array_get(json_object_get(ref, "a"), 5));
    assert_string_equal(jl_str(jl_at(&d, a, 5)), want);
    assert_int_equal(jl_at(&d, a, 5)->len, strlen(want));
    assert_null(jl_at(&d, a, 6));
    assert_null(jl_get(&d, &d.nodes[0], "zz"));
    assert_int_equal(jl_get(&d, &d.nodes[0], "b")->type, JL_OBJ);
    json_decref(ref);
    jl_free(&d);
    free(buf);
    const char *bad[] = {"", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "tru", "\"\\u0000\"",
                         "\"\\ud800\"", "\"\\udc00x\"", "\"\\x\"", "\"a\nb\"", "[1] 2", "\"abc", "{1: 2}",
                         "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                         "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        buf = strdup(bad[i]);
        err[0] = 0;
        if (jl_parse(&d, buf, strlen(buf), err) == 0) fail_msg("parsed bad JSON %s", bad[i]);
        assert_true(strlen(err) > 0);
        free(buf);
    }
}

struct thr {
    const struct tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    int n;
};
static void *enc_thread(void *p) {
    struct thr *a = p;
    for (int r = 0; r < 20; r++) {
        free(a->ids);
        if (tok_encode(a->t, a->text, a->len, true, &a->ids, &a->n, NULL)) a->n = -1;
    }
    return NULL;
}

static void test_concurrent(void **state) {
    (void)state;
    struct tokenizer *t = load(QWEN);
    char err[PG_ERR_LEN];
    size_t len;
    char *text = pg_read_file("../shared/datasets/customer-service/system_prompt_zh.txt", &len, err);
    assert_non_null(text);
    int32_t *ref;
    int nref;
    assert_int_equal(tok_encode(t, text, len, true, &ref, &nref, err), 0);
    struct thr a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct thr){t, text, len, NULL, 0};
        pthread_create(&th[i], NULL, enc_thread, &a[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].n, nref);
        assert_memory_equal(a[i].ids, ref, (size_t)nref * sizeof *ref);
        free(a[i].ids);
    }
    free(ref);
    free(text);
    tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_qwen_accessors),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_detok_holds_partial_chars),
        cmocka_unit_test(test_new_bpe),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_jsonlite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
