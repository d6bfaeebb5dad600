// `pagoda generate`: offline generation through the engine (continuous batching).
//
//   pagoda generate --model DIR|FILE.gguf --prompt TEXT  [sampling flags] [engine flags]
//   pagoda generate --model DIR --messages FILE.json  (chat template applied)
//   pagoda generate --model DIR --prompt-ids 1,2,3    (prints the generated ids)
//   pagoda generate --model DIR --input prompts.jsonl [--output out.jsonl]
//
// A JSONL input line is an object with "prompt" (text), "messages" (chat) or
// "prompt_token_ids", an optional "id", and any sampling field gen_request_from_json reads
// (max_tokens, temperature, top_p, top_k, min_p, seed, n, stop, logit_bias, ...); flags give the
// defaults. Each output line: {"id", "prompt_tokens", "cached_tokens", "outputs": [{"index",
// "text", "token_ids", "finish_reason", "stop_reason"}]} or {"id", "error"}, in input order.
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "engine/engine_args.h"
#include "engine/engine_offline.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

struct gen_cli {
    const char *model, *prompt, *messages, *prompt_ids, *input, *output, *device;
    int32_t *ids;                  // --prompt-ids, parsed
    int n_ids;
    bool max_tokens_set;
    struct gen_request defaults;   // sampling flags
    bool temperature_set;
    const char *stops[ENGINE_MAX_STOP];
    int n_stop;
    struct engine_config ecfg;
    struct backend_config bcfg;
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: pagoda generate --model DIR (--prompt TEXT | --messages FILE.json | --prompt-ids 1,2,3 |\n"
            "                       --input prompts.jsonl [--output out.jsonl]) [flags]\n"
            "sampling:\n"
            "  --max-tokens N (256, capped by the context)  --min-tokens N  --temperature F  --top-p F  --top-k N  --min-p F\n"
            "  --seed N (engine seed: runs reproduce)  --n N  --stop STR (repeatable)  --ignore-eos  --repetition-penalty F\n"
            "  --presence-penalty F  --frequency-penalty F  --logprobs N\n"
            "  --device auto|cpu|cuda (auto)\n");
    engine_args_usage(f);
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = v ? strtod(v, &end) : 0;
    if (!v || errno || end == v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "pagoda generate: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = d;
    return 0;
}

// Sampling and input flags. Returns values used (0 or 1), -1 on error, -2 if unknown.
static int parse_own(struct gen_cli *c, const char *a, const char *v) {
    struct gen_request *r = &c->defaults;
    const char **strs[] = {&c->model, &c->prompt, &c->messages, &c->prompt_ids, &c->input, &c->output, &c->device};
    const char *names[] = {"--model", "--prompt", "--messages", "--prompt-ids", "--input", "--output", "--device"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(a, names[i])) {
            if (!v) {
                fprintf(stderr, "pagoda generate: %s needs a value\n", a);
                return -1;
            }
            *strs[i] = v;
            return 1;
        }
    if (!strcmp(a, "--ignore-eos")) {
        r->ignore_eos = true;
        return 0;
    }
    if (!strcmp(a, "--stop")) {
        if (!v || c->n_stop == ENGINE_MAX_STOP) {
            fprintf(stderr, "pagoda generate: --stop needs a value (at most %d)\n", ENGINE_MAX_STOP);
            return -1;
        }
        c->stops[c->n_stop++] = v;
        return 1;
    }
    double d;
    struct { const char *name; double lo, hi; } nums[] = {
        {"--max-tokens", 1, 1e9}, {"--min-tokens", 0, 1e9}, {"--temperature", 0, 1e6},
        {"--top-p", 0, 1}, {"--top-k", -1, 1e9}, {"--min-p", 0, 1},
        {"--n", 1, 1024}, {"--repetition-penalty", 0, 1e6}, {"--presence-penalty", -2, 2},
        {"--frequency-penalty", -2, 2}, {"--logprobs", 0, SAMPLING_MAX_LOGPROBS}};
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        if (strcmp(a, nums[i].name)) continue;
        if (parse_num(a, v, nums[i].lo, nums[i].hi, &d)) return -1;
        switch (i) {
        case 0: r->max_tokens = (int)d; c->max_tokens_set = true; break;
        case 1: r->min_tokens = (int)d; break;
        case 2: r->sp.temperature = (float)d; c->temperature_set = true; break;
        case 3: r->sp.top_p = (float)d; break;
        case 4: r->sp.top_k = (int)d; break;
        case 5: r->sp.min_p = (float)d; break;
        case 6: r->n = (int)d; break;
        case 7: r->sp.repetition_penalty = (float)d; break;
        case 8: r->sp.presence_penalty = (float)d; break;
        case 9: r->sp.frequency_penalty = (float)d; break;
        default: r->sp.logprobs = (int)d; break;
        }
        return 1;
    }
    return -2;
}

static int parse_ids(const char *str, int32_t **ids, int *n);

static int parse_args(struct gen_cli *c, int argc, char **argv) {
    char err[PG_ERR_LEN];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        int r = engine_args_parse(&c->ecfg, a, v, err);
        int rb = backend_args_parse(&c->bcfg, a, v, err);
        if (r == ENGINE_ARGS_UNKNOWN) r = rb;
        if (r == ENGINE_ARGS_UNKNOWN) r = parse_own(c, a, v);
        else if (r == ENGINE_ARGS_ERROR) fprintf(stderr, "pagoda generate: %s\n", err);
        if (r == -2) {
            fprintf(stderr, "pagoda generate: unknown flag %s\n", a);
            usage(stderr);
        }
        if (r < 0) return -1;
        i += r;
    }
    int n_inputs = !!c->prompt + !!c->messages + !!c->prompt_ids + !!c->input;
    if (!c->model || n_inputs != 1) {
        fprintf(stderr, "pagoda generate: give --model and exactly one of --prompt, --messages, "
                        "--prompt-ids, --input\n");
        usage(stderr);
        return -1;
    }
    if (c->prompt_ids && parse_ids(c->prompt_ids, &c->ids, &c->n_ids)) {
        fprintf(stderr, "pagoda generate: --prompt-ids must be comma-separated token ids\n");
        return -1;
    }
    return 0;
}

struct gen_state {
    struct gen_cli *cli;
    struct model_weights *w;
    struct tokenizer *tok;
    struct chat_template *tmpl;
    const struct backend_ops *be;
    void *be_ctx;
    struct engine *eng;
};

static void state_free(struct gen_state *s) {
    if (s->eng) engine_free(s->eng);
    if (s->be_ctx) s->be->free(s->be_ctx);
    if (s->tmpl) chat_template_free(s->tmpl);
    if (s->tok) tok_free(s->tok);
    if (s->w) model_free(s->w);
}

static int state_init(struct gen_state *s, char *err) {
    struct gen_cli *c = s->cli;
    if (!(s->w = model_open(c->model, err))) return -1;
    // A GGUF carries its tokenizer; a Hugging Face directory may lack tokenizer.json (then
    // only token-id prompts work).
    char *gguf = model_gguf_path(c->model), *tj = pg_path_join(c->model, "tokenizer.json");
    bool have_tok = gguf || pg_file_exists(tj);
    free(gguf);
    free(tj);
    if (have_tok && !(s->tok = model_open_tokenizer(c->model, err))) {
        if (!c->prompt_ids && !c->input) return -1;
        pg_warn("no tokenizer (%s): token ids only", err); // ids work without one
        err[0] = 0;
    }
    if (!s->tok && !c->prompt_ids && !c->input) {
        pg_seterr(err, "%s has no tokenizer (tokenizer.json): only --prompt-ids can be used", c->model);
        return -1;
    }
    if (engine_args_finalize(&c->ecfg, &c->bcfg, s->w->cfg.max_pos, err)) return -1;
    if (!(s->be = backend_pick(c->device, err))) return -1;
    int nb = 0;
    if (s->be->init(&s->be_ctx, s->w, &c->bcfg, &nb, err)) return -1;
    s->eng = engine_create(&c->ecfg, &s->w->cfg, s->be, s->be_ctx, nb, s->tok, err);
    return s->eng ? 0 : -1;
}

// Renders messages (a JSON array) with the model's chat template and tokenizes.
static int encode_messages(struct gen_state *s, json_t *messages, int32_t **ids, int *n, char *err) {
    if (!s->tok) {
        pg_seterr(err, "messages need a tokenizer");
        return -1;
    }
    if (!s->tmpl) {
        const char *src = tok_chat_template(s->tok);
        if (!src) {
            pg_seterr(err, "%s has no chat template (tokenizer_config.json chat_template)", s->cli->model);
            return -1;
        }
        if (!(s->tmpl = chat_template_parse(src, err))) return -1;
    }
    if (!json_is_array(messages)) {
        pg_seterr(err, "\"messages\" must be an array");
        return -1;
    }
    struct chat_render_args a = {.messages = messages, .add_generation_prompt = true,
                                 .bos_token = tok_bos_token(s->tok), .eos_token = tok_eos_token(s->tok)};
    char *text;
    if (chat_template_render(s->tmpl, &a, &text, err)) return -1;
    int rc = tok_encode(s->tok, text, strlen(text), true, ids, n, err);
    free(text);
    return rc;
}

static int encode_text(struct gen_state *s, const char *text, int32_t **ids, int *n, char *err) {
    if (!s->tok) {
        pg_seterr(err, "a text prompt needs a tokenizer");
        return -1;
    }
    return tok_encode(s->tok, text, strlen(text), true, ids, n, err);
}

static int parse_ids(const char *str, int32_t **ids, int *n) {
    *n = 0;
    *ids = NULL;
    int cap = 0;
    while (*str) {
        char *end;
        errno = 0;
        long v = strtol(str, &end, 10);
        if (end == str || errno || v < 0 || v > INT32_MAX) return -1;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            *ids = pg_realloc(*ids, (size_t)cap * sizeof **ids);
        }
        (*ids)[(*n)++] = (int32_t)v;
        str = end;
        if (*str == ',') str++;
        else if (*str) return -1;
    }
    return *n > 0 ? 0 : -1;
}

// Without --max-tokens (or a line's max_tokens): 256, capped by what the context leaves.
static void default_max_tokens(struct gen_state *s, struct gen_request *r, int n_prompt) {
    if (r->max_tokens != -1) return;
    int room = s->cli->ecfg.max_model_len - n_prompt;
    r->max_tokens = room < 256 ? (room > 0 ? room : 1) : 256;
}

// The request defaults: the model's generation_config, then the flags.
static void request_defaults(struct gen_state *s, struct gen_request *r) {
    const struct gen_defaults *g = &s->w->cfg.gen;
    *r = s->cli->defaults;
    if (!s->cli->temperature_set) r->sp.temperature = g->do_sample ? g->temperature : 0;
    if (r->sp.top_p == 1.0f) r->sp.top_p = g->top_p;
    if (r->sp.top_k == -1) r->sp.top_k = g->top_k;
    if (r->sp.min_p == 0) r->sp.min_p = g->min_p;
    if (r->sp.repetition_penalty == 1.0f) r->sp.repetition_penalty = g->repetition_penalty;
    for (int i = 0; i < s->cli->n_stop; i++) r->stop[i] = s->cli->stops[i];
    r->n_stop = s->cli->n_stop;
}

static void print_stats(struct gen_state *s, double t0) {
    struct engine_stats st;
    engine_stats(s->eng, &st);
    double dt = pg_now() - t0;
    fprintf(stderr, "pagoda generate: %llu prompt + %llu generated tokens in %.2f s (%.1f tok/s), "
                    "prefix cache %llu/%llu tokens, %llu preemptions\n",
            (unsigned long long)st.prompt_tokens, (unsigned long long)st.generation_tokens, dt,
            dt > 0 ? (double)st.generation_tokens / dt : 0.0, (unsigned long long)st.prefix_hits,
            (unsigned long long)st.prefix_queries, (unsigned long long)st.num_preemptions);
}

static int run_single(struct gen_state *s, char *err) {
    struct gen_cli *c = s->cli;
    int32_t *ids = NULL;
    int n = 0, rc = -1;
    if (c->prompt_ids) {
        ids = pg_malloc((size_t)c->n_ids * sizeof *ids);
        memcpy(ids, c->ids, (size_t)c->n_ids * sizeof *ids);
        n = c->n_ids;
    } else if (c->prompt) {
        if (encode_text(s, c->prompt, &ids, &n, err)) return -1;
    } else {
        json_error_t je;
        json_t *m = json_load_file(c->messages, 0, &je);
        if (!m) {
            pg_seterr(err, "%s:%d: %s", c->messages, je.line, je.text);
            return -1;
        }
        json_t *arr = json_is_object(m) ? json_object_get(m, "messages") : m;
        rc = encode_messages(s, arr, &ids, &n, err);
        json_decref(m);
        if (rc) return -1;
    }
    struct gen_request r;
    request_defaults(s, &r);
    if (c->prompt_ids && !c->temperature_set) r.sp.temperature = 0; // greedy ids, as before
    r.prompt = ids;
    r.n_prompt = n;
    default_max_tokens(s, &r, n);
    struct offline_result res;
    double t0 = pg_now();
    rc = engine_run_offline(s->eng, &r, 1, &res, err);
    if (res.n == 0) {
        pg_seterr(err, "%s", res.error);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < res.n; i++) {
        const struct offline_seq *q = &res.seqs[i];
        if (res.n > 1) printf("%s--- %d (%s)\n", i ? "\n" : "", i, finish_reason_name(q->finish));
        if (c->prompt_ids) {
            for (int k = 0; k < q->n_tokens; k++) printf("%s%d", k ? "," : "", q->tokens[k]);
            printf("\n");
        } else {
            fwrite(q->text, 1, q->text_len, stdout);
            printf("\n");
        }
    }
    offline_results_free(&res, 1);
    free(ids);
    print_stats(s, t0);
    return rc;
}

// One JSONL input line turned into a request. ids / stop_ids are owned; strings borrow obj.
struct line_req {
    json_t *obj;
    int32_t *ids;
    int32_t stop_ids[64];
    int32_t bias_ids[300];  // logit_bias: up to 300 entries, as OpenAI
    float bias_vals[300];
    char error[PG_ERR_LEN];
};

static int prepare_line(struct gen_state *s, struct line_req *L, struct gen_request *r) {
    json_t *o = L->obj;
    request_defaults(s, r);
    int n = 0;
    json_t *p = json_object_get(o, "prompt"), *m = json_object_get(o, "messages"),
           *pi = json_object_get(o, "prompt_token_ids");
    if (!json_is_object(o)) {
        pg_seterr(L->error, "each line must be a JSON object");
        return -1;
    }
    if (json_is_string(p)) {
        if (encode_text(s, json_string_value(p), &L->ids, &n, L->error)) return -1;
    } else if (m) {
        if (encode_messages(s, m, &L->ids, &n, L->error)) return -1;
    } else if (json_is_array(pi) && json_array_size(pi) > 0) {
        n = (int)json_array_size(pi);
        L->ids = pg_malloc((size_t)n * sizeof *L->ids);
        for (int i = 0; i < n; i++) {
            json_t *x = json_array_get(pi, (size_t)i);
            if (!json_is_integer(x)) {
                pg_seterr(L->error, "prompt_token_ids must hold integers");
                return -1;
            }
            L->ids[i] = (int32_t)json_integer_value(x);
        }
    } else {
        pg_seterr(L->error, "a line needs \"prompt\", \"messages\" or \"prompt_token_ids\"");
        return -1;
    }
    if (gen_request_from_json_bias(r, o, L->stop_ids, 64, L->bias_ids, L->bias_vals, 300,
                                   L->error))
        return -1;
    r->prompt = L->ids;
    r->n_prompt = n;
    default_max_tokens(s, r, n);
    return 0;
}

static json_t *result_json(const struct line_req *L, const struct offline_result *res, int line) {
    json_t *out = json_object();
    json_t *id = json_object_get(L->obj, "id");
    json_object_set_new(out, "id", id ? json_deep_copy(id) : json_integer(line));
    if (L->error[0] || res->n == 0) {
        json_object_set_new(out, "error", json_string(L->error[0] ? L->error : res->error));
        return out;
    }
    json_object_set_new(out, "prompt_tokens", json_integer(res->seqs[0].n_prompt_tokens));
    json_object_set_new(out, "cached_tokens", json_integer(res->seqs[0].n_cached_tokens));
    json_t *outs = json_array();
    for (int i = 0; i < res->n; i++) {
        const struct offline_seq *q = &res->seqs[i];
        json_t *ids = json_array();
        for (int k = 0; k < q->n_tokens; k++) json_array_append_new(ids, json_integer(q->tokens[k]));
        json_t *o = json_pack("{s:i, s:s%, s:o, s:s}", "index", i, "text", q->text, q->text_len,
                              "token_ids", ids, "finish_reason", finish_reason_name(q->finish));
        if (q->stop_reason) json_object_set_new(o, "stop_reason", json_string(q->stop_reason));
        else if (q->stop_token >= 0) json_object_set_new(o, "stop_reason", json_integer(q->stop_token));
        json_array_append_new(outs, o);
    }
    json_object_set_new(out, "outputs", outs);
    return out;
}

static int run_batch(struct gen_state *s, char *err) {
    struct gen_cli *c = s->cli;
    FILE *in = fopen(c->input, "r");
    if (!in) {
        pg_seterr(err, "cannot open %s: %s", c->input, strerror(errno));
        return -1;
    }
    struct line_req *lines = NULL;
    int n = 0, cap = 0;
    char *buf = NULL;
    size_t bcap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&buf, &bcap, in)) >= 0) {
        lineno++;
        if (strspn(buf, " \t\r\n") == (size_t)len) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            lines = pg_realloc(lines, (size_t)cap * sizeof *lines);
        }
        struct line_req *L = &lines[n++];
        memset(L, 0, sizeof *L);
        json_error_t je;
        if (!(L->obj = json_loads(buf, 0, &je))) pg_seterr(L->error, "line %d: %s", lineno, je.text);
    }
    free(buf);
    fclose(in);
    struct gen_request *reqs = pg_calloc((size_t)(n ? n : 1), sizeof *reqs);
    for (int i = 0; i < n; i++) {
        if (!lines[i].error[0]) prepare_line(s, &lines[i], &reqs[i]);
        if (lines[i].error[0]) gen_request_defaults(&reqs[i]); // empty prompt: engine rejects it
    }
    struct offline_result *res = pg_calloc((size_t)(n ? n : 1), sizeof *res);
    double t0 = pg_now();
    if (engine_run_offline(s->eng, reqs, n, res, err)) rc = -1;
    FILE *out = c->output ? fopen(c->output, "w") : stdout;
    if (!out) {
        pg_seterr(err, "cannot write %s: %s", c->output, strerror(errno));
        rc = -1;
    }
    for (int i = 0; out && i < n; i++) {
        json_t *j = result_json(&lines[i], &res[i], i);
        char *txt = json_dumps(j, JSON_COMPACT);
        fprintf(out, "%s\n", txt);
        free(txt);
        json_decref(j);
    }
    if (out && out != stdout) fclose(out);
    print_stats(s, t0);
    offline_results_free(res, n);
    for (int i = 0; i < n; i++) {
        free(lines[i].ids);
        json_decref(lines[i].obj);
    }
    free(res);
    free(reqs);
    free(lines);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    struct gen_cli c = {0};
    gen_request_defaults(&c.defaults);
    c.defaults.max_tokens = -1; // 256 capped by the context unless given
    engine_config_defaults(&c.ecfg);
    backend_config_defaults(&c.bcfg);
    int r = parse_args(&c, argc, argv);
    if (r) {
        free(c.ids);
        return r > 0 ? 0 : 2;
    }
    char err[PG_ERR_LEN] = "";
    struct gen_state s = {.cli = &c};
    int rc = state_init(&s, err);
    if (rc == 0) rc = c.input ? run_batch(&s, err) : run_single(&s, err);
    if (rc) fprintf(stderr, "pagoda generate: %s\n", err);
    state_free(&s);
    free(c.ids);
    return rc ? 1 : 0;
}
