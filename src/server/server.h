// The OpenAI-compatible HTTP server (libmicrohttpd + jansson).
//
// Threading: one libmicrohttpd epoll thread per HTTP worker (suspend/resume: a connection
// waiting on the engine costs no thread, so thousands of idle keep-alive connections and
// many concurrent streams are cheap); a tokenizer pool renders templates, tokenizes and
// compiles grammars; the engine thread delivers outputs through a callback that only
// appends to the request's state and resumes its connection. JSON is built on the HTTP
// threads.
//
// The server drives the model through `struct server_model`, a small table of functions
// (filled from the real engine/tokenizer by `pagoda serve`, and by fakes in tests).
#pragma once
#include "server/api.h"
#include "tokenizer/chat.h"

struct server_model {
    void *ctx;
    // engine (engine.h semantics; on_output is called on any one thread per request)
    int (*add)(void *ctx, const struct gen_request *r, uint64_t *id, char *err);
    void (*abort)(void *ctx, uint64_t id);
    void (*stats)(void *ctx, struct engine_stats *s);
    // tokenizer (tokenizer.h semantics)
    int (*encode)(void *ctx, const char *text, size_t len, bool parse_special, int32_t **ids,
                  int *n, char *err);
    char *(*decode)(void *ctx, const int32_t *ids, int n, bool skip_special, size_t *len);
    const char *(*token_bytes)(void *ctx, int32_t id, size_t *len);
    // chat template (NULL: /v1/chat/completions answers 400 "no chat template")
    int (*render_chat)(void *ctx, const struct chat_render_args *a, char **out, char *err);
    // structured outputs (NULL: guided requests answer 400); returns a retained grammar
    struct grammar *(*grammar_get)(void *ctx, enum grammar_kind kind, const char *spec,
                                   size_t len, const char *ws, char *err);
    void (*grammar_release)(void *ctx, struct grammar *g);
    // compiles through the cache and pre-fills its masks (NULL: compile only)
    int (*grammar_warmup)(void *ctx, enum grammar_kind kind, const char *spec, size_t len,
                          const char *ws, char *err);
    // embeddings (non-NULL only when serving an embedding model)
    int (*embed)(void *ctx, const char *const *texts, int n, float *out, int *n_tokens, char *err);
    int embed_dim;
    const char *bos_token, *eos_token; // passed to the chat template
};

struct server_config {
    const char *host;          // NULL/"0.0.0.0": all IPv4 addresses
    int port;                  // 0: pick a free port (server_port tells which)
    const char *api_key;       // NULL: no auth
    const char *model_root;    // the model directory (for /v1/models "root")
    struct api_limits limits;  // model_name, max_model_len, vocab, ...
    size_t max_body_bytes;
    int request_timeout_s;
    int max_connections;
    int http_threads;          // libmicrohttpd epoll threads (0: 2)
    int pool_threads;          // tokenizer pool (0: from the cores)
    bool log_requests;
};

struct server;

// Binds and starts serving immediately (/health answers 503 until server_set_model).
struct server *server_start(const struct server_config *cfg, char *err);
int server_port(const struct server *s);
// Makes the server ready with a model (borrowed until server_free). model NULL: loading.
void server_set_model(struct server *s, const struct server_model *m);
// Stops accepting connections and new requests (503), then waits up to grace_s seconds for
// requests in flight to finish. The caller stops the engine in between (its final outputs
// complete the streams). Returns the number of requests still unfinished.
void server_drain(struct server *s);
int server_wait_idle(struct server *s, double grace_s);
// Closes every connection and frees the server. The engine must be stopped first: requests it
// never finished are answered 503 and freed, and no output callback may come afterwards.
void server_free(struct server *s);
