// Internals shared by server.c (HTTP plumbing, routes) and gen.c (generation requests).
#pragma once
#include <microhttpd.h>
#include <stdatomic.h>

#include "server/metrics.h"
#include "server/pool.h"
#include "server/server.h"
#include "server/toolcall.h"

struct server {
    struct server_config cfg;
    struct MHD_Daemon *daemon;
    struct pool *pool;
    _Atomic(const struct server_model *) model;
    struct metrics metrics;
    atomic_bool draining;
    atomic_uint_fast64_t next_id;
    pthread_mutex_t mu;         // guards n_live
    pthread_cond_t idle;
    int n_live;                 // requests (struct req) alive
    struct req *live;           // their list (guarded by mu)
    int port;
};

enum route {
    R_NONE = 0, R_CHAT, R_COMPLETIONS, R_MODELS, R_HEALTH, R_METRICS, R_TOKENIZE,
    R_DETOKENIZE, R_VERSION, R_EMBEDDINGS, R_WARMUP,
};

enum phase {
    P_UPLOAD = 0,   // receiving the body
    P_WORKING,      // in the tokenizer pool (connection suspended)
    P_ENGINE,       // non-streaming, in the engine (suspended until every sequence is done)
    P_STREAM,       // streaming response queued
    P_REPLY,        // reply (status + body) ready to queue
    P_SENT,         // response queued
};

// One choice of the response (prompt p, sample i -> index p * n + i).
struct choice {
    struct sub *sub;
    int index;
    // appended by the engine callback, consumed by the HTTP thread (under req.mu)
    char *pend;
    size_t pend_len, pend_cap;
    struct sample_output *pend_lp;
    int n_pend_lp, cap_lp;
    int n_out;
    bool finished, final_sent;
    enum finish_reason finish;
    char *stop_str;             // matched stop string (owned), or NULL
    int32_t stop_token;
    double t_last;              // time of the last token (inter-token latency)
    // HTTP-thread state
    bool role_sent;
    struct hermes hermes;
    int n_calls_sent;
    bool named_started;         // TOOLS_NAMED streaming: the call header went out
    size_t text_offset;         // completions logprobs
};

// One engine request (one prompt of the HTTP request; n choices).
struct sub {
    struct req *req;
    int first_choice;
    uint64_t engine_id;
    bool added, done;
    int n_live;                 // choices not finished
    int n_prompt, n_cached;
    char *echo;                 // echo text (completions), owned
    size_t echo_len;
};

struct req {
    struct req *prev, *next;    // server's live list
    pthread_mutex_t mu;
    int refs;                   // 1 for the connection + 1 per engine request in flight
    struct server *srv;
    const struct server_model *model;
    struct MHD_Connection *conn;
    int fd;
    enum route route;
    enum phase phase;
    bool suspended, conn_closed;
    char *body;
    size_t body_len;
    bool too_large;
    struct api_request ar;
    struct sub *subs;
    int n_subs, n_live_subs;
    struct choice *choices;
    int n_choices;
    // reply
    int status;
    char *reply;                // malloc'd body
    size_t reply_len;
    const char *reply_type;     // content type
    int retry_after;
    // streaming output not yet handed to libmicrohttpd
    char *out;
    size_t out_len, out_pos, out_cap;
    bool done_sent;
    char id[48];
    long long created;
    double t_start;
};

// server.c
void req_reply_json(struct req *q, int status, json_t *body); // steals body
void req_reply_error(struct req *q, const struct api_error *e);
void req_unref(struct req *q);
// q->mu held: marks a suspended connection resumed; the caller then calls
// MHD_resume_connection(q->conn) after unlocking when this returns true.
bool req_wake(struct req *q);
// gen.c
void gen_job(void *q);        // pool job: chat / completions
void tokenize_job(void *q);   // pool job: /tokenize, /detokenize, /v1/embeddings
ssize_t gen_stream_reader(void *cls, uint64_t pos, char *buf, size_t max);
void gen_build_reply(struct req *q); // non-streaming: every sequence finished -> P_REPLY
void gen_free(struct req *q);
