// Engine text output: stop strings (never emitted, held back in streams while they could
// still match, spanning tokens), eos / stop-token text excluded, min_tokens before stops.
// The detokenizer here is a fake defined in this file (token id -> a fixed string), so the
// test needs neither the real tokenizer nor a model; the backend plays a fixed script.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "model/config.h"
#include "test_engine_backend.h"
#include "tokenizer/tokenizer.h"

#define VOCAB 32
#define EOS 1

static const char *g_vocab[VOCAB] = {
    "<pad>", "<eos>", "he", "llo", " wor", "ld", "!", " x", "y", "z", "lo", " ", "w", "STOP", "ab", "c"};

// Fake tokenizer / detokenizer: what the engine calls. detok output is the token's string,
// special tokens (0, 1) skipped.
struct tokenizer {
    int dummy;
};
struct detok {
    char buf[64];
};
struct detok *detok_new(const struct tokenizer *t, bool skip_special) {
    (void)t;
    (void)skip_special;
    return calloc(1, sizeof(struct detok));
}
void detok_push(struct detok *d, int32_t id, const char **delta, size_t *len) {
    const char *s = id > 1 && id < VOCAB && g_vocab[id] ? g_vocab[id] : "";
    snprintf(d->buf, sizeof d->buf, "%s", s);
    *delta = d->buf;
    *len = strlen(d->buf);
}
void detok_flush(struct detok *d, const char **delta, size_t *len) {
    *delta = d->buf;
    *len = 0;
}
void detok_free(struct detok *d) { free(d); }

// Fake grammar: only tokens 2..5 allowed, complete after 3 tokens.
#include "grammar/grammar.h"
struct grammar {
    int refs;
};
struct grammar_matcher {
    struct grammar *g;
    int n;
};
void grammar_retain(struct grammar *g) { g->refs++; }
void grammar_release(struct grammar *g) { g->refs--; }
struct grammar_matcher *grammar_matcher_new(struct grammar *g) {
    struct grammar_matcher *m = calloc(1, sizeof *m);
    m->g = g;
    grammar_retain(g);
    return m;
}
void grammar_matcher_free(struct grammar_matcher *m) {
    grammar_release(m->g);
    free(m);
}
void grammar_fill_mask(struct grammar_matcher *m, uint32_t *mask) {
    assert_true(m->n < 3); // never asked after termination
    mask[0] = 0x3c;        // bits 2..5
}
int grammar_accept_token(struct grammar_matcher *m, int32_t t) {
    if (t < 2 || t > 5) return -1;
    m->n++;
    return 0;
}
bool grammar_is_terminated(const struct grammar_matcher *m) { return m->n == 3; }

struct stream {
    char text[512];
    size_t len;
    int n_tokens, n_updates;
    enum finish_reason fin;
    char stop_reason[32];
    int32_t stop_token;
};

static void on_out(void *user, const struct engine_output *o) {
    struct stream *s = user;
    assert_true(s->len + o->text_len < sizeof s->text);
    memcpy(s->text + s->len, o->text, o->text_len);
    s->len += o->text_len;
    s->text[s->len] = 0;
    s->n_tokens += o->n_tokens;
    s->n_updates++;
    if (o->finish) {
        s->fin = o->finish;
        s->stop_token = o->stop_token;
        if (o->stop_reason) snprintf(s->stop_reason, sizeof s->stop_reason, "%s", o->stop_reason);
    }
}

// Runs one request with the given script; the stream lands in *out.
// depth 0: synchronous; >= 2: async scheduling with --num-scheduler-steps depth.
static void run(const int32_t *script, int n_script, struct gen_request *r, struct stream *out,
                int depth) {
    bool async = depth >= 2;
    static struct model_config m;
    m = tb_model_config(VOCAB, 128, EOS);
    struct engine_config cfg = tb_engine_config(128);
    cfg.async_scheduling = async;
    cfg.num_scheduler_steps = async ? depth : 1;
    struct tb *t = tb_new(64, 4, VOCAB);
    t->lazy = async;
    t->max_inflight = engine_pipeline_depth(&cfg);
    t->script = script;
    t->n_script = n_script;
    struct tokenizer tok;
    char err[PG_ERR_LEN] = "";
    struct engine *e = engine_create(&cfg, &m, &tb_ops, t, 64, &tok, err);
    if (!e) fail_msg("%s", err);
    int32_t prompt[3] = {2, 3, 4};
    r->prompt = prompt;
    r->n_prompt = 3;
    r->on_output = on_out;
    r->user = out;
    memset(out, 0, sizeof *out);
    if (engine_add(e, r, NULL, err)) fail_msg("%s", err);
    while (engine_has_work(e)) assert_true(engine_step(e) >= 0);
    struct engine_stats st;
    engine_stats(e, &st);
    assert_int_equal(st.num_free_blocks, 64);
    engine_free(e);
    tb_free(t);
}

static void both(const int32_t *script, int n, struct gen_request *r, struct stream *out) {
    struct stream a;
    run(script, n, r, &a, 0);
    run(script, n, r, out, 3); // pipelined, 3 steps in flight
    assert_string_equal(a.text, out->text);
    assert_int_equal(a.fin, out->fin);
    assert_int_equal(a.n_tokens, out->n_tokens);
    run(script, n, r, out, 2);
    assert_string_equal(a.text, out->text); // async scheduling streams the same text
    assert_int_equal(a.fin, out->fin);
    assert_int_equal(a.n_tokens, out->n_tokens);
}

static void test_stop_string_across_tokens(void **state) {
    (void)state;
    int32_t script[] = {2, 3, 4, 5, 6, 6, 6, 6}; // "he" "llo" " wor" "ld" "!"...
    struct gen_request r;
    gen_request_defaults(&r);
    r.sp.temperature = 0;
    r.max_tokens = 8;
    r.stop[0] = "lo w";
    r.stop[1] = "zzz";
    r.n_stop = 2;
    struct stream s;
    both(script, 8, &r, &s);
    assert_string_equal(s.text, "hel");
    assert_int_equal(s.fin, FINISH_STOP);
    assert_string_equal(s.stop_reason, "lo w");
    assert_int_equal(s.stop_token, -1);
    assert_int_equal(s.n_tokens, 3); // the token completing the stop string ends it
}

// Text that could still become a stop string is held back, then released when it cannot.
static void test_hold_back_released(void **state) {
    (void)state;
    int32_t script[] = {7, 8, 6, 14, 15, 6}; // " x" "y" "!" "ab" "c" "!"
    struct gen_request r;
    gen_request_defaults(&r);
    r.sp.temperature = 0;
    r.max_tokens = 6;
    r.stop[0] = " xyz";
    r.stop[1] = "abcd";
    r.n_stop = 2;
    struct stream s;
    both(script, 6, &r, &s);
    assert_string_equal(s.text, " xy!abc!");
    assert_int_equal(s.fin, FINISH_LENGTH);
}

static void test_eos_and_stop_token_text(void **state) {
    (void)state;
    int32_t script[] = {2, 3, 13, 6, EOS, 6};
    struct gen_request r;
    gen_request_defaults(&r);
    r.sp.temperature = 0;
    r.max_tokens = 6;
    struct stream s;
    both(script, 6, &r, &s);
    assert_string_equal(s.text, "helloSTOP!");
    assert_int_equal(s.fin, FINISH_STOP);
    assert_int_equal(s.stop_token, EOS);
    assert_int_equal(s.n_tokens, 5); // eos is in the token ids, not in the text
    int32_t stop_id = 13;
    r.stop_token_ids = &stop_id;
    r.n_stop_token_ids = 1;
    both(script, 6, &r, &s);
    assert_string_equal(s.text, "hello");
    assert_int_equal(s.stop_token, 13);
    // ignore_eos: eos is just a token (its text is empty: special)
    r.n_stop_token_ids = 0;
    r.ignore_eos = true;
    both(script, 6, &r, &s);
    assert_string_equal(s.text, "helloSTOP!!");
    assert_int_equal(s.fin, FINISH_LENGTH);
}

// Stop strings and stop tokens do not count before min_tokens outputs.
static void test_min_tokens_before_stops(void **state) {
    (void)state;
    int32_t script[] = {2, 3, 2, 3, 6};
    struct gen_request r;
    gen_request_defaults(&r);
    r.sp.temperature = 0;
    r.max_tokens = 5;
    r.stop[0] = "hello";
    r.n_stop = 1;
    struct stream s;
    both(script, 5, &r, &s);
    assert_string_equal(s.text, "");
    assert_int_equal(s.n_tokens, 2);
    r.min_tokens = 3;
    both(script, 5, &r, &s);
    // "hello" is complete after 2 tokens but not checked (and streamed); the next "hello"
    // (tokens 3-4) ends the output
    assert_string_equal(s.text, "hello");
    assert_int_equal(s.n_tokens, 4);
    r.stop[0] = "llo!";
    both(script, 5, &r, &s);
    assert_string_equal(s.text, "hellohe");
    assert_int_equal(s.fin, FINISH_STOP);
}

static void test_grammar(void **state) {
    (void)state;
    struct grammar g = {.refs = 1};
    for (int depth = 0; depth <= 3; depth += depth ? 1 : 2) { // 0, 2, 3
        struct gen_request r;
        gen_request_defaults(&r);
        r.sp.temperature = 0.9f;
        r.sp.seed = 5;
        r.seeded = true;
        r.max_tokens = 10;
        r.grammar = &g;
        r.n = 2;
        struct stream s;
        run(NULL, 0, &r, &s, depth);
        assert_int_equal(s.fin, FINISH_STOP);
        assert_int_equal(s.n_tokens, 6); // 3 per sequence (both write into one stream)
        for (size_t i = 0; i < s.len;) { // every piece is one of tokens 2..5
            bool ok = false;
            for (int t = 2; t <= 5 && !ok; t++) {
                size_t L = strlen(g_vocab[t]);
                if (!strncmp(s.text + i, g_vocab[t], L)) {
                    i += L;
                    ok = true;
                }
            }
            if (!ok) fail_msg("text '%s' has a token outside the grammar", s.text);
        }
        assert_int_equal(g.refs, 1); // the engine released everything it retained
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_string_across_tokens),
        cmocka_unit_test(test_hold_back_released),
        cmocka_unit_test(test_eos_and_stop_token_text),
        cmocka_unit_test(test_min_tokens_before_stops),
        cmocka_unit_test(test_grammar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
