// Unit tests for the grammar engine on a small synthetic vocabulary (fast; also run under
// ASan). Masks of regex and regular GBNF grammars are checked token by token against PCRE2's
// partial matching (the reference): a token is allowed iff prefix+token can still match, EOS iff
// prefix matches completely.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "grammar/grammar.h"

enum { N_SINGLE = 95, N_MULTI = 400, PAD = 37 };
static char *g_tok[N_SINGLE + N_MULTI + 2];
static size_t g_len[N_SINGLE + N_MULTI + 2];
static int g_n;       // tokens incl. EOS
static int32_t g_eos; // last id
static struct grammar_vocab *g_vocab;

static uint64_t rng(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static int setup(void **state) {
    (void)state;
    const char *alpha = "ab01-_.@x{}\":, []";
    uint64_t s = 42;
    int n = 0;
    for (int c = 0x20; c < 0x7f; c++) { // every printable ASCII byte as a token
        g_tok[n] = malloc(2);
        g_tok[n][0] = (char)c;
        g_len[n++] = 1;
    }
    for (int i = 0; i < N_MULTI; i++) {
        int len = 2 + (int)(rng(&s) % 5);
        g_tok[n] = malloc((size_t)len);
        for (int k = 0; k < len; k++) g_tok[n][k] = alpha[rng(&s) % strlen(alpha)];
        g_len[n++] = (size_t)len;
    }
    g_tok[n] = NULL; // EOS (special: no bytes)
    g_len[n] = 0;
    g_eos = n++;
    g_n = n;
    char err[PG_ERR_LEN];
    g_vocab = grammar_vocab_new_from_bytes((const char *const *)g_tok, g_len, g_n, g_n + PAD, &g_eos, 1, err);
    return g_vocab ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    grammar_vocab_free(g_vocab);
    for (int i = 0; i < g_n; i++) free(g_tok[i]);
    return 0;
}

static bool bit(const uint32_t *m, int id) { return (m[id >> 5] >> (id & 31)) & 1; }

// PCRE2 reference: 1 = complete match, 2 = viable prefix only, 0 = dead.
static int ref_status(pcre2_code *re, const char *s, size_t n) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int full = pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED, md, NULL);
    int part = pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED | PCRE2_PARTIAL_HARD, md, NULL);
    pcre2_match_data_free(md);
    if (full >= 0) return 1;
    return (part >= 0 || part == PCRE2_ERROR_PARTIAL) ? 2 : 0;
}

// Random walks over grammar g; every step the whole mask is compared with the reference regex.
static void check_against_pcre(struct grammar *g, const char *ref_regex, int walks, uint64_t seed) {
    char pat[1024];
    snprintf(pat, sizeof(pat), "(?:%s)\\z", ref_regex);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
    assert_non_null(re);
    int words = (g_n + PAD + 31) / 32;
    uint32_t *mask = malloc((size_t)words * 4);
    char buf[512];
    for (int w = 0; w < walks; w++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        size_t len = 0;
        for (int step = 0; step < 40; step++) {
            grammar_fill_mask(m, mask);
            int allowed[N_SINGLE + N_MULTI + 2], na = 0;
            for (int id = 0; id < g_n - 1; id++) {
                memcpy(buf + len, g_tok[id], g_len[id]);
                bool ok = ref_status(re, buf, len + g_len[id]) != 0;
                if (ok != bit(mask, id)) fail_msg("pattern %s prefix '%.*s' token '%.*s': mask %d ref %d", ref_regex,
                                                 (int)len, buf, (int)g_len[id], g_tok[id], bit(mask, id), ok);
                if (ok) allowed[na++] = id;
            }
            for (int id = g_n; id < g_n + PAD; id++) assert_false(bit(mask, id)); // padding
            bool complete = ref_status(re, buf, len) == 1;
            assert_int_equal(bit(mask, g_eos), complete);
            assert_int_equal(grammar_is_terminated(m), complete && na == 0);
            if (complete && (na == 0 || rng(&seed) % 4 == 0)) {
                assert_int_equal(grammar_accept_token(m, g_eos), 0);
                assert_true(grammar_is_terminated(m));
                break;
            }
            if (!complete) assert_int_equal(grammar_accept_token(m, g_eos), -1);
            if (na == 0) break;
            int pick = allowed[rng(&seed) % (uint64_t)na];
            if (len + g_len[pick] + 8 > sizeof(buf)) break;
            assert_int_equal(grammar_accept_token(m, pick), 0);
            memcpy(buf + len, g_tok[pick], g_len[pick]);
            len += g_len[pick];
        }
        grammar_matcher_free(m);
    }
    free(mask);
    pcre2_code_free(re);
}

static void test_regex_masks_match_pcre2(void **state) {
    (void)state;
    static const char *res[] = {
        "a+b*", "[0-9]{2,4}-x", "(ab|a)(b|_)*\\.", "x?[a-c]{0,3}@[0-9]+", "\\{\"a\": [01]\\}",
        "(0|1|-)*", "[^ab]{1,6}", "\\w+\\s\\d", "(a{2}|b{3}){1,3}", ".{0,5}x",
    };
    char err[PG_ERR_LEN];
    for (size_t i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
        struct grammar *g = grammar_compile(g_vocab, GRAMMAR_REGEX, res[i], strlen(res[i]), NULL, err);
        if (!g) fail_msg("%s: %s", res[i], err);
        check_against_pcre(g, res[i], 6, 100 + i);
        grammar_release(g);
    }
}

static void test_ebnf_masks_match_pcre2(void **state) {
    (void)state;
    static const char *pairs[][2] = {
        {"root ::= item (\", \" item)*\nitem ::= [ab]+ | num\nnum ::= \"-\"? [0-9]{1,3}", "(?:[ab]+|-?[0-9]{1,3})(?:, (?:[ab]+|-?[0-9]{1,3}))*"},
        {"# comment\nroot ::= \"{\" ws \"\\\"a\\\"\" ws \":\" ws val ws \"}\"\nws ::= [ ]?\nval ::= \"0\" | \"1\" | \"[]\"",
         "\\{ ?\"a\" ?: ?(?:0|1|\\[\\]) ?\\}"},
        {"root ::= x{2,3} y?\nx ::= \"ab\" | \"a\"\ny ::= \"@\" root", "(?:(?:ab|a){2,3}@)*(?:ab|a){2,3}"},
    };
    char err[PG_ERR_LEN];
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        struct grammar *g = grammar_compile(g_vocab, GRAMMAR_EBNF, pairs[i][0], strlen(pairs[i][0]), NULL, err);
        if (!g) fail_msg("%s: %s", pairs[i][0], err);
        check_against_pcre(g, pairs[i][1], 6, 7 + i);
        grammar_release(g);
    }
}

static bool feed(struct grammar_matcher *m, const char *s) {
    for (; *s; s++) // single-byte tokens are ids c - 0x20
        if (grammar_accept_token(m, (int32_t)(*s - 0x20)) != 0) return false;
    return true;
}

static void test_recursive_grammar(void **state) {
    (void)state;
    const char *src = "root ::= \"[\" (root (\",\" root)*)? \"]\"";
    char err[PG_ERR_LEN];
    struct grammar *g = grammar_compile(g_vocab, GRAMMAR_EBNF, src, strlen(src), NULL, err);
    assert_non_null(g);
    const char *good[] = {"[]", "[[]]", "[[],[[]],[]]", "[[[[[[[[]]]]]]]]"};
    const char *bad[] = {"]", "[,]", "[[]", "[]]", "[[],]"};
    for (size_t i = 0; i < 4; i++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        assert_true(feed(m, good[i]));
        assert_true(grammar_is_terminated(m));
        grammar_matcher_free(m);
    }
    for (size_t i = 0; i < 5; i++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        bool ok = feed(m, bad[i]) && grammar_is_terminated(m);
        assert_false(ok);
        grammar_matcher_free(m);
    }
    grammar_release(g);
}

static void test_choice_and_termination(void **state) {
    (void)state;
    const char *spec = "[\"ab\", \"abx\"]";
    char err[PG_ERR_LEN];
    struct grammar *g = grammar_compile(g_vocab, GRAMMAR_CHOICE, spec, strlen(spec), NULL, err);
    assert_non_null(g);
    struct grammar_matcher *m = grammar_matcher_new(g);
    assert_int_equal(grammar_accept_token(m, g_eos), -1);
    assert_true(feed(m, "ab"));
    assert_false(grammar_is_terminated(m));
    assert_true(grammar_can_end(m));
    assert_int_equal(grammar_accept_token(m, 'y' - 0x20), -1); // rejected, state unchanged
    assert_true(feed(m, "x"));
    assert_true(grammar_is_terminated(m));
    assert_int_equal(grammar_accept_token(m, 'x' - 0x20), -1);
    assert_int_equal(grammar_accept_token(m, g_eos), 0);
    grammar_matcher_free(m);
    grammar_release(g);
}

static void test_schema_errors_name_keyword(void **state) {
    (void)state;
    static const char *cases[][2] = {
        {"{\"type\":\"object\",\"patternProperties\":{}}", "patternProperties"},
        {"{\"type\":\"string\",\"contentEncoding\":\"base64\"}", "contentEncoding"},
        {"{\"type\":\"integer\",\"multipleOf\":2}", "multipleOf"},
        {"{\"type\":\"string\",\"format\":\"ipv6\"}", "ipv6"},
        {"{\"$ref\":\"#/$defs/nope\"}", "#/$defs/nope"},
        {"{\"type\":", "invalid JSON"},
        {"{\"type\":\"string\",\"pattern\":\"a(?!b)\"}", "lookaround"},
        {"{\"type\":\"string\",\"minLength\":3,\"pattern\":\"a+\"}", "minLength"},
    };
    char err[PG_ERR_LEN];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct grammar *g = grammar_compile(g_vocab, GRAMMAR_JSON_SCHEMA, cases[i][0], strlen(cases[i][0]), NULL, err);
        assert_null(g);
        if (!strstr(err, cases[i][1])) fail_msg("%s: error '%s' does not name '%s'", cases[i][0], err, cases[i][1]);
    }
}

static void test_schema_accepts_valid_json(void **state) {
    (void)state;
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":-5,\"maximum\":120},"
                         "\"b\":{\"enum\":[\"x\",null]}},\"required\":[\"a\"],\"additionalProperties\":false}";
    char err[PG_ERR_LEN];
    struct grammar *g = grammar_compile(g_vocab, GRAMMAR_JSON_SCHEMA, schema, strlen(schema), "[ ]?", err);
    if (!g) fail_msg("%s", err);
    const char *good[] = {"{\"a\":0}", "{ \"a\": -5, \"b\": null }", "{\"a\":120,\"b\":\"x\"}", "{\"a\":99}"};
    const char *bad[] = {"{\"a\":121}", "{\"a\":-6}", "{\"b\":\"x\"}", "{\"a\":01}", "{\"a\":1,\"c\":2}", "{\"a\":-0}"};
    for (size_t i = 0; i < 4; i++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        if (!feed(m, good[i]) || !grammar_is_terminated(m)) fail_msg("rejected %s", good[i]);
        grammar_matcher_free(m);
    }
    for (size_t i = 0; i < 6; i++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        if (feed(m, bad[i]) && grammar_can_end(m)) fail_msg("accepted %s", bad[i]);
        grammar_matcher_free(m);
    }
    grammar_release(g);
}

static void test_cache_lru(void **state) {
    (void)state;
    char err[PG_ERR_LEN];
    struct grammar_cache *c = grammar_cache_new(g_vocab, 2);
    struct grammar *a = grammar_cache_get(c, GRAMMAR_REGEX, "a+", 2, NULL, err);
    struct grammar *a2 = grammar_cache_get(c, GRAMMAR_REGEX, "a+", 2, NULL, err);
    assert_non_null(a);
    assert_ptr_equal(a, a2);
    struct grammar *a3 = grammar_cache_get(c, GRAMMAR_REGEX, "a+", 2, "x", err); // other ws: other key
    assert_ptr_not_equal(a, a3);
    struct grammar *b = grammar_cache_get(c, GRAMMAR_EBNF, "root ::= \"b\"", 12, NULL, err); // evicts a
    assert_non_null(b);
    struct grammar *a4 = grammar_cache_get(c, GRAMMAR_REGEX, "a+", 2, NULL, err);
    assert_ptr_not_equal(a, a4); // recompiled after eviction; the old one is still usable
    struct grammar_matcher *m = grammar_matcher_new(a);
    assert_true(feed(m, "aaa"));
    grammar_matcher_free(m);
    assert_null(grammar_cache_get(c, GRAMMAR_REGEX, "(", 1, NULL, err));
    assert_non_null(strstr(err, "regex"));
    grammar_release(a); grammar_release(a2); grammar_release(a3); grammar_release(b); grammar_release(a4);
    grammar_cache_free(c);
}

static void test_warmup(void **state) {
    (void)state;
    char err[PG_ERR_LEN];
    struct grammar_cache *c = grammar_cache_new(g_vocab, 2);
    const char *spec = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":5}},\"required\":[\"a\"]}";
    assert_int_equal(grammar_cache_warmup(c, GRAMMAR_JSON_SCHEMA, spec, strlen(spec), NULL, 4, 50, err), 0);
    struct grammar *g = grammar_cache_get(c, GRAMMAR_JSON_SCHEMA, spec, strlen(spec), NULL, err);
    struct grammar *g2 = grammar_cache_get(c, GRAMMAR_JSON_SCHEMA, spec, strlen(spec), NULL, err);
    assert_ptr_equal(g, g2); // warm-up left it in the cache
    assert_int_equal(grammar_cache_warmup(c, GRAMMAR_JSON_SCHEMA, "{\"not\":{}}", 10, NULL, 1, 10, err), -1);
    assert_non_null(strstr(err, "not"));
    grammar_release(g); grammar_release(g2);
    grammar_cache_free(c);
}

struct thr { struct grammar_cache *c; int ok; };

static void *thread_main(void *arg) {
    struct thr *t = arg;
    char err[PG_ERR_LEN];
    uint32_t *mask = malloc((size_t)((g_n + PAD + 31) / 32) * 4);
    t->ok = 1;
    for (int i = 0; i < 20; i++) {
        const char *spec = i % 2 ? "{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}" : "{\"type\":\"string\",\"maxLength\":9}";
        struct grammar *g = grammar_cache_get(t->c, GRAMMAR_JSON_SCHEMA, spec, strlen(spec), NULL, err);
        if (!g) { t->ok = 0; break; }
        struct grammar_matcher *m = grammar_matcher_new(g);
        grammar_fill_mask(m, mask);
        t->ok &= bit(mask, (i % 2 ? '[' : '"') - 0x20);
        grammar_matcher_free(m);
        grammar_release(g);
    }
    free(mask);
    return NULL;
}

static void test_cache_threads(void **state) {
    (void)state;
    struct grammar_cache *c = grammar_cache_new(g_vocab, 4);
    pthread_t th[4];
    struct thr t[4];
    for (int i = 0; i < 4; i++) { t[i].c = c; pthread_create(&th[i], NULL, thread_main, &t[i]); }
    for (int i = 0; i < 4; i++) { pthread_join(th[i], NULL); assert_true(t[i].ok); }
    grammar_cache_free(c);
}

static void test_ebnf_embedded_json_schema(void **state) {
    (void)state;
    const char *src = "root ::= \"<a>\" %json {\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}},"
                      "\"required\":[\"x\"]} \"</a>\" tail\ntail ::= \"!\"?";
    char err[PG_ERR_LEN];
    struct grammar *g = grammar_compile(g_vocab, GRAMMAR_EBNF, src, strlen(src), NULL, err);
    if (!g) fail_msg("%s", err);
    const char *good[] = {"<a>{\"x\":12}</a>", "<a>{ \"x\": -3 }</a>!"};
    const char *bad[] = {"<a>{\"x\":\"s\"}</a>", "<a>{}</a>", "{\"x\":1}"};
    for (size_t i = 0; i < 2; i++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        if (!feed(m, good[i]) || !grammar_can_end(m)) fail_msg("rejected %s", good[i]);
        grammar_matcher_free(m);
    }
    for (size_t i = 0; i < 3; i++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        if (feed(m, bad[i]) && grammar_can_end(m)) fail_msg("accepted %s", bad[i]);
        grammar_matcher_free(m);
    }
    grammar_release(g);
    const char *broken = "root ::= %json {\"type\": \"strange\"}";
    assert_null(grammar_compile(g_vocab, GRAMMAR_EBNF, broken, strlen(broken), NULL, err));
    assert_non_null(strstr(err, "strange"));
}

static void test_left_recursion_rejected(void **state) {
    (void)state;
    const char *src = "root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"z\"";
    char err[PG_ERR_LEN];
    assert_null(grammar_compile(g_vocab, GRAMMAR_EBNF, src, strlen(src), NULL, err));
    assert_non_null(strstr(err, "left recursion"));
}

// A grammar of very many rules (a few MB of request body) is rejected as too large; rules are
// looked up by hash, so this takes no longer than parsing (it was quadratic in the rule count).
static void test_many_rules_rejected(void **state) {
    (void)state;
    enum { N = 150000 };
    size_t cap = (size_t)N * 40, len = 0;
    char *src = malloc(cap);
    len += (size_t)snprintf(src + len, cap - len, "root ::= r0\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(src + len, cap - len, "r%d ::= r%d \"a\"\n", i, i + 1);
    len += (size_t)snprintf(src + len, cap - len, "r%d ::= \"b\"\n", N);
    char err[PG_ERR_LEN];
    assert_null(grammar_compile(g_vocab, GRAMMAR_EBNF, src, len, NULL, err));
    assert_non_null(strstr(err, "too large"));
    // a grammar under the limit that refers to its rules many times still compiles
    len = (size_t)snprintf(src, cap, "root ::= (r0 | r1999)*\n");
    for (int i = 0; i < 2000; i++)
        len += (size_t)snprintf(src + len, cap - len, "r%d ::= \"w%d\"\n", i, i);
    struct grammar *g = grammar_compile(g_vocab, GRAMMAR_EBNF, src, len, NULL, err);
    assert_non_null(g);
    grammar_release(g);
    free(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regex_masks_match_pcre2),
        cmocka_unit_test(test_ebnf_masks_match_pcre2),
        cmocka_unit_test(test_recursive_grammar),
        cmocka_unit_test(test_choice_and_termination),
        cmocka_unit_test(test_schema_errors_name_keyword),
        cmocka_unit_test(test_schema_accepts_valid_json),
        cmocka_unit_test(test_cache_lru),
        cmocka_unit_test(test_cache_threads),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_left_recursion_rejected),
        cmocka_unit_test(test_many_rules_rejected),
        cmocka_unit_test(test_ebnf_embedded_json_schema),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
