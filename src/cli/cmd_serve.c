// `pagoda serve MODEL_DIR [vLLM flags]`: loads the model, starts the engine and the
// OpenAI-compatible HTTP server; SIGTERM/SIGINT drain in-flight requests and exit 0.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <errno.h>
#include <unistd.h>

#include "cli/commands.h"
#include "engine/engine.h"
#include "grammar/grammar.h"
#include "model/embed.h"
#include "model/gguf.h"
#include "model/weights.h"
#include "server/args.h"
#include "server/server.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

// Everything `pagoda serve` owns, torn down in reverse order.
struct serve {
    struct serve_args a;
    struct model_config mcfg;
    struct tokenizer *tok;
    struct chat_template *tmpl;
    struct model_weights *w;
    const struct backend_ops *be;
    void *be_ctx;
    struct engine *eng;
    struct grammar_vocab *gvocab;
    struct grammar_cache *gcache;
    struct embed_model *emb;
    struct server_model model;
};

// ---- server_model adapters ---------------------------------------------------------------------

static int m_add(void *c, const struct gen_request *r, uint64_t *id, char *err) {
    return engine_add(((struct serve *)c)->eng, r, id, err);
}
static void m_abort(void *c, uint64_t id) { engine_abort(((struct serve *)c)->eng, id); }
static void m_stats(void *c, struct engine_stats *s) { engine_stats(((struct serve *)c)->eng, s); }
static int m_encode(void *c, const char *t, size_t n, bool sp, int32_t **ids, int *k, char *err) {
    return tok_encode(((struct serve *)c)->tok, t, n, sp, ids, k, err);
}
static char *m_decode(void *c, const int32_t *ids, int n, bool skip, size_t *len) {
    return tok_decode(((struct serve *)c)->tok, ids, n, skip, len);
}
static const char *m_token_bytes(void *c, int32_t id, size_t *len) {
    return tok_token_bytes(((struct serve *)c)->tok, id, len);
}
static int m_render(void *c, const struct chat_render_args *a, char **out, char *err) {
    return chat_template_render(((struct serve *)c)->tmpl, a, out, err);
}
static struct grammar *m_grammar(void *c, enum grammar_kind k, const char *spec, size_t len,
                                 const char *ws, char *err) {
    return grammar_cache_get(((struct serve *)c)->gcache, k, spec, len, ws, err);
}
// Compiled grammars kept by the server's LRU grammar cache. Each grammar's mask cache may
// grow to 16 MiB, so 64 grammars bound it at ~1 GiB (256 could reach 4 GiB).
#define GRAMMAR_CACHE_CAPACITY 64
// --structured-warmup fills each grammar's mask cache with this many seeded random walks of
// up to this many tokens (grammar_cache_warmup).
#define WARMUP_WALKS 8
#define WARMUP_WALK_TOKENS 128

static void m_grammar_release(void *c, struct grammar *g) { grammar_release(g); }
static int m_grammar_warmup(void *c, enum grammar_kind k, const char *spec, size_t len,
                            const char *ws, char *err) {
    return grammar_cache_warmup(((struct serve *)c)->gcache, k, spec, len, ws, WARMUP_WALKS,
                                WARMUP_WALK_TOKENS, err);
}
static int m_embed(void *c, const char *const *t, int n, float *out, int *nt, char *err) {
    return embed_model_encode(((struct serve *)c)->emb, t, n, out, nt, err);
}

// ---- loading -------------------------------------------------------------------------------------

static int load_template(struct serve *S, char *err) {
    const char *src = S->a.chat_template;
    char *owned = NULL;
    if (src && pg_file_exists(src)) {
        owned = pg_read_file(src, NULL, err);
        if (!owned) return -1;
        src = owned;
    }
    if (!src) src = tok_chat_template(S->tok);
    if (!src) {
        pg_warn("the model has no chat template: /v1/chat/completions answers 400 (pass "
                "--chat-template)");
        free(owned);
        return 0;
    }
    S->tmpl = chat_template_parse(src, err);
    free(owned);
    return S->tmpl ? 0 : -1;
}

static enum pg_dtype kv_dtype(const char *s, enum pg_dtype model) {
    if (!strcmp(s, "float32")) return PG_F32;
    if (!strcmp(s, "bfloat16")) return PG_BF16;
    if (!strcmp(s, "float16")) return PG_F16;
    if (!strcmp(s, "fp8") || !strcmp(s, "fp8_e4m3")) return PG_F8_E4M3;
    if (!strcmp(s, "fp8_e5m2")) return PG_F8_E5M2;
    return model;
}


// JSONL lines {"type": "json"|"json_object"|"regex"|"choice"|"grammar", "spec": ...}
static int structured_warmup(struct serve *S, char *err) {
    char *text = pg_read_file(S->a.structured_warmup, NULL, err);
    if (!text) return -1;
    int n = 0, line = 0;
    for (char *p = text, *nl; *p; p = nl ? nl + 1 : p + strlen(p)) {
        nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        if (!*p) continue;
        json_t *j = json_loads(p, 0, NULL), *spec = json_object_get(j, "spec");
        const char *type = json_string_value(json_object_get(j, "type"));
        static const struct { const char *name; enum grammar_kind k; } t[] = {
            {"json", GRAMMAR_JSON_SCHEMA}, {"json_object", GRAMMAR_JSON_OBJECT},
            {"regex", GRAMMAR_REGEX}, {"choice", GRAMMAR_CHOICE}, {"grammar", GRAMMAR_EBNF}};
        size_t i;
        for (i = 0; type && i < 5 && strcmp(type, t[i].name); i++) {}
        if (!j || !type || i == 5) {
            pg_seterr(err, "%s:%d: expected {\"type\": json|json_object|regex|choice|grammar, "
                      "\"spec\": ...}", S->a.structured_warmup, line);
            json_decref(j);
            free(text);
            return -1;
        }
        char *s = json_is_string(spec) ? pg_strdup(json_string_value(spec))
                  : spec ? json_dumps(spec, JSON_COMPACT) : pg_strdup("");
        char gerr[PG_ERR_LEN] = "";
        int rc = grammar_cache_warmup(S->gcache, t[i].k, s, strlen(s), NULL, WARMUP_WALKS,
                                      WARMUP_WALK_TOKENS, gerr);
        free(s);
        json_decref(j);
        if (rc) {
            pg_seterr(err, "%s:%d: %s", S->a.structured_warmup, line, gerr);
            free(text);
            return -1;
        }
        n++;
    }
    free(text);
    if (n > GRAMMAR_CACHE_CAPACITY)
        pg_warn("structured warm-up: %d grammars, but the grammar cache keeps only the %d most "
                "recently used", n, GRAMMAR_CACHE_CAPACITY);
    pg_info("structured warm-up: %d grammars compiled, masks pre-filled (%d walks of up to %d "
            "tokens each)", n, WARMUP_WALKS, WARMUP_WALK_TOKENS);
    return 0;
}

static int load_generator(struct serve *S, struct server_config *sc, char *err) {
    struct serve_args *a = &S->a;
    if (a->quantization && S->mcfg.quant.method != QUANT_GPTQ) {
        pg_seterr(err, "--quantization %s, but %s is not a GPTQ checkpoint", a->quantization,
                  a->model_dir);
        return -1;
    }
    // the same loaders as `pagoda generate`: a Hugging Face directory, a .gguf file, or a
    // directory holding one (tokenizer and chat template then come from the GGUF metadata)
    if (!(S->tok = model_open_tokenizer(a->model_dir, err)) || load_template(S, err)) return -1;
    if (!S->w && !(S->w = model_open(a->model_dir, err))) return -1;
    if (!(S->be = backend_pick(a->device, err))) return -1;
    struct backend_config bc = {
        .block_size = a->block_size, .kv_cache_bytes = (size_t)a->kv_cache_memory,
        .gpu_memory_utilization = a->gpu_memory_utilization,
        .kv_dtype = kv_dtype(a->kv_cache_dtype, S->mcfg.dtype), .max_num_seqs = a->max_num_seqs,
        .max_num_batched_tokens = a->max_num_batched_tokens, .max_model_len = sc->limits.max_model_len,
        .enforce_eager = a->enforce_eager, .tensor_parallel_size = a->tensor_parallel_size,
        .seed = (uint64_t)a->seed, .n_threads = a->threads,
        .num_blocks = a->num_gpu_blocks_override,
    };
    struct engine_config ec;
    engine_config_defaults(&ec);
    ec.block_size = a->block_size;
    ec.max_num_seqs = a->max_num_seqs;
    if (a->max_num_batched_tokens) ec.max_num_batched_tokens = a->max_num_batched_tokens;
    // as vLLM: without chunked prefill a whole prompt must fit in one step
    if (!a->enable_chunked_prefill && ec.max_num_batched_tokens < sc->limits.max_model_len) {
        if (a->max_num_batched_tokens) {
            pg_seterr(err, "--max-num-batched-tokens %d is below --max-model-len %d, which "
                      "needs --enable-chunked-prefill", a->max_num_batched_tokens,
                      sc->limits.max_model_len);
            return -1;
        }
        ec.max_num_batched_tokens = sc->limits.max_model_len;
    }
    if (!bc.max_num_batched_tokens) bc.max_num_batched_tokens = ec.max_num_batched_tokens;
    ec.max_model_len = sc->limits.max_model_len;
    ec.enable_prefix_caching = a->enable_prefix_caching;
    ec.enable_chunked_prefill = a->enable_chunked_prefill;
    ec.num_scheduler_steps = a->num_scheduler_steps;
    if (a->async_scheduling >= 0) ec.async_scheduling = a->async_scheduling;
    ec.policy = !strcmp(a->scheduling_policy, "priority") ? SCHED_PRIORITY : SCHED_FCFS;
    ec.max_waiting = a->max_waiting;
    ec.seed = (uint64_t)a->seed;
    bc.max_inflight = engine_pipeline_depth(&ec);
    int num_blocks = 0;
    if (S->be->init(&S->be_ctx, S->w, &bc, &num_blocks, err)) return -1;
    if (!(S->eng = engine_create(&ec, &S->mcfg, S->be, S->be_ctx, num_blocks, S->tok, err)))
        return -1;
    S->gvocab = grammar_vocab_new(S->tok, S->mcfg.vocab, S->mcfg.eos_ids, S->mcfg.n_eos);
    S->gcache = S->gvocab ? grammar_cache_new(S->gvocab, GRAMMAR_CACHE_CAPACITY) : NULL;
    if (a->structured_warmup && (!S->gcache || structured_warmup(S, err))) {
        if (!S->gcache) pg_seterr(err, "--structured-warmup: no grammar engine");
        return -1;
    }
    if (engine_start(S->eng)) {
        pg_seterr(err, "cannot start the engine thread");
        return -1;
    }
    S->model = (struct server_model){
        .ctx = S, .add = m_add, .abort = m_abort, .stats = m_stats, .encode = m_encode,
        .decode = m_decode, .token_bytes = m_token_bytes, .render_chat = S->tmpl ? m_render : NULL,
        .grammar_get = S->gcache ? m_grammar : NULL, .grammar_release = m_grammar_release,
        .grammar_warmup = S->gcache ? m_grammar_warmup : NULL,
        .bos_token = tok_bos_token(S->tok), .eos_token = tok_eos_token(S->tok),
    };
    pg_info("engine ready: backend %s, %d KV blocks of %d tokens, max_model_len %d",
            S->be->name, num_blocks, a->block_size, sc->limits.max_model_len);
    return 0;
}

static void teardown(struct serve *S) {
    if (S->eng) engine_free(S->eng);
    if (S->be && S->be_ctx) S->be->free(S->be_ctx);
    if (S->gcache) grammar_cache_free(S->gcache);
    if (S->gvocab) grammar_vocab_free(S->gvocab);
    if (S->w) model_free(S->w);
    if (S->tmpl) chat_template_free(S->tmpl);
    if (S->tok) tok_free(S->tok);
    if (S->emb) embed_model_free(S->emb);
}

static int g_sig_pipe[2] = {-1, -1}; // written by the signal handler, read by cmd_serve

static void on_signal(int sig) {
    unsigned char b = (unsigned char)sig;
    ssize_t rc = write(g_sig_pipe[1], &b, 1); // async-signal-safe; a full pipe means one is pending
    (void)rc;
}

// SIGTERM/SIGINT go through a self-pipe: a handler works whichever thread the signal lands
// on (libraries such as OpenBLAS start threads before main, so masking is not enough).
static int install_signals(void) {
    if (pipe(g_sig_pipe)) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void server_config_from_args(const struct serve_args *a, struct server_config *sc) {
    *sc = (struct server_config){
        .host = a->host, .port = a->port, .api_key = a->api_key, .model_root = a->model_dir,
        .max_body_bytes = (size_t)a->max_body_bytes, .request_timeout_s = a->request_timeout,
        .max_connections = a->max_connections, .pool_threads = a->tokenizer_pool_size,
        .log_requests = !a->disable_log_requests,
    };
    sc->limits.model_name = a->served_model_name;
    sc->limits.max_n = 64;
    sc->limits.max_prompts = 64;
}

int cmd_serve(int argc, char **argv) {
    struct serve S;
    memset(&S, 0, sizeof S);
    char err[PG_ERR_LEN] = "";
    serve_args_defaults(&S.a);
    int rc = serve_args_parse(&S.a, argc, argv, err);
    if (rc) {
        if (rc < 0) fprintf(stderr, "pagoda serve: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    if (!S.a.api_key && getenv("VLLM_API_KEY") && *getenv("VLLM_API_KEY"))
        S.a.api_key = getenv("VLLM_API_KEY"); // as vLLM
    enum pg_log_level lvl;
    if (pg_log_parse_level(S.a.log_level, &lvl) == 0) pg_log_set_level(lvl);
#ifdef PAGODA_CUDA
    bool have_cuda = true;
#else
    bool have_cuda = false;
#endif
    char *msgs[16];
    int n_msgs = serve_args_no_effect(&S.a, have_cuda, msgs, 16);
    for (int i = 0; i < n_msgs; i++) {
        pg_warn("!!! %s", msgs[i]);
        free(msgs[i]);
    }
    if (install_signals()) {
        fprintf(stderr, "pagoda serve: pipe failed\n");
        return 1;
    }
    raise_fd_limit();

    struct server_config sc;
    server_config_from_args(&S.a, &sc);
    bool embed = !strcmp(S.a.task, "embed") || !strcmp(S.a.task, "embedding") ||
                 (!strcmp(S.a.task, "auto") && embed_model_detect(S.a.model_dir));
    struct server *srv = NULL;
    if (embed) {
        if (!(S.emb = embed_model_load(S.a.model_dir, err))) goto fail;
        sc.limits.max_model_len = embed_model_max_tokens(S.emb);
        S.model = (struct server_model){.ctx = &S, .embed = m_embed,
                                        .embed_dim = embed_model_dim(S.emb)};
        if (!(srv = server_start(&sc, err))) goto fail;
    } else {
        // A GGUF carries its hyperparameters, eos ids and tokenizer in the file: load it now
        // (the config comes with the weights); a Hugging Face directory is read from
        // config.json and its weights load while /health answers 503.
        char *gguf = model_gguf_path(S.a.model_dir);
        if (gguf) {
            free(gguf);
            if (!(S.w = model_open(S.a.model_dir, err))) goto fail;
            S.mcfg = S.w->cfg;
        } else if (model_config_load(&S.mcfg, S.a.model_dir, err)) {
            goto fail;
        }
        sc.limits.max_model_len = S.a.max_model_len ? S.a.max_model_len : S.mcfg.max_pos;
        sc.limits.vocab = S.mcfg.vocab;
        sc.limits.gen = S.mcfg.gen;
        if (!strcmp(S.a.generation_config, "vllm"))
            sc.limits.gen = (struct gen_defaults){1.0f, 1.0f, -1, 0.0f, 1.0f, true};
        // listen first: /health answers 503 while the weights load
        if (!(srv = server_start(&sc, err))) goto fail;
        pg_info("listening on %s:%d (loading %s)", S.a.host, server_port(srv), S.a.model_dir);
        if (load_generator(&S, &sc, err)) goto fail;
    }
    server_set_model(srv, &S.model);
    pg_info("serving '%s' on http://%s:%d", S.a.served_model_name, S.a.host, server_port(srv));
    unsigned char sig = 0;
    while (read(g_sig_pipe[0], &sig, 1) < 0 && errno == EINTR) {}
    pg_info("%s: draining (grace %.0f s)", sig == SIGINT ? "SIGINT" : "SIGTERM",
            S.a.shutdown_grace);
    server_drain(srv);
    if (S.eng) engine_stop(S.eng, S.a.shutdown_grace);
    pg_debug("engine stopped");
    int left = server_wait_idle(srv, S.eng ? 5.0 : S.a.shutdown_grace);
    if (left) pg_warn("%d requests still open at exit", left);
    pg_debug("drained; closing connections");
    server_free(srv);
    teardown(&S);
    pg_info("bye");
    return 0;
fail:
    fprintf(stderr, "pagoda serve: %s\n", err);
    if (srv) {
        server_drain(srv);
        server_free(srv);
    }
    teardown(&S);
    return 1;
}
