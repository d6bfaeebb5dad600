// HTTP plumbing: libmicrohttpd daemon, routing, auth, limits, request lifecycle, and the
// small endpoints. Generation lives in gen.c.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>

#include "server/server_impl.h"

#define PAGODA_SERVER_VERSION "0.1.0"

static const struct { const char *path; enum route r; const char *method; } routes[] = {
    {"/v1/chat/completions", R_CHAT, "POST"}, {"/v1/completions", R_COMPLETIONS, "POST"},
    {"/v1/models", R_MODELS, "GET"}, {"/health", R_HEALTH, "GET"},
    {"/metrics", R_METRICS, "GET"}, {"/tokenize", R_TOKENIZE, "POST"},
    {"/detokenize", R_DETOKENIZE, "POST"}, {"/version", R_VERSION, "GET"},
    {"/v1/embeddings", R_EMBEDDINGS, "POST"},
    {"/v1/structured_outputs/warmup", R_WARMUP, "POST"},
};

static enum MHD_Result queue_body(struct MHD_Connection *c, int status, const char *type,
                                  char *body, size_t len, int retry_after, const char *allow) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, body ? MHD_RESPMEM_MUST_FREE
                                                        : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (type) MHD_add_response_header(r, "Content-Type", type);
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    if (allow) MHD_add_response_header(r, "Allow", allow);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result queue_json(struct MHD_Connection *c, int status, json_t *j,
                                  int retry_after, const char *allow) {
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return queue_body(c, status, "application/json", s, s ? strlen(s) : 0, retry_after, allow);
}

static enum MHD_Result queue_error(struct MHD_Connection *c, int status, const char *param,
                                   int retry_after, const char *allow, const char *fmt,
                                   const char *arg) {
    struct api_error e;
    api_error_set(&e, status, param, fmt, arg);
    return queue_json(c, status, api_error_json(&e), retry_after, allow);
}

// ---- request lifecycle -------------------------------------------------------------------------

void req_reply_json(struct req *q, int status, json_t *body) {
    free(q->reply);
    q->reply = json_dumps(body, JSON_COMPACT);
    q->reply_len = q->reply ? strlen(q->reply) : 0;
    q->reply_type = "application/json";
    q->status = status;
    q->phase = P_REPLY;
    json_decref(body);
}

void req_reply_error(struct req *q, const struct api_error *e) {
    q->retry_after = e->retry_after;
    req_reply_json(q, e->status, api_error_json(e));
}

bool req_wake(struct req *q) {
    if (q->suspended && !q->conn_closed) {
        q->suspended = false;
        return true;
    }
    return false;
}

static struct req *req_new(struct server *s, struct MHD_Connection *c, enum route r) {
    struct req *q = pg_calloc(1, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    q->refs = 1;
    q->srv = s;
    q->model = atomic_load(&s->model);
    q->conn = c;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    q->fd = ci ? ci->connect_fd : -1;
    q->route = r;
    q->t_start = pg_now();
    q->created = (long long)time(NULL);
    uint64_t n = atomic_fetch_add(&s->next_id, 1);
    snprintf(q->id, sizeof q->id, "%s-%016llx%08llx", r == R_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)pg_mix64(n ^ (uint64_t)q->created << 20),
             (unsigned long long)(n & 0xffffffffu));
    pthread_mutex_lock(&s->mu);
    s->n_live++;
    q->next = s->live;
    if (s->live) s->live->prev = q;
    s->live = q;
    pthread_mutex_unlock(&s->mu);
    return q;
}

void req_unref(struct req *q) {
    pthread_mutex_lock(&q->mu);
    int left = --q->refs;
    pthread_mutex_unlock(&q->mu);
    if (left) return;
    struct server *s = q->srv;
    pthread_mutex_lock(&s->mu);
    if (q->prev) q->prev->next = q->next;
    else s->live = q->next;
    if (q->next) q->next->prev = q->prev;
    pthread_mutex_unlock(&s->mu);
    gen_free(q);
    api_request_free(&q->ar);
    free(q->body);
    free(q->reply);
    free(q->out);
    pthread_mutex_destroy(&q->mu);
    free(q);
    pthread_mutex_lock(&s->mu);
    if (--s->n_live == 0) pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    struct req *q = *con_cls;
    if (!q) return;
    *con_cls = NULL;
    uint64_t ids[64];
    int n_abort = 0;
    pthread_mutex_lock(&q->mu);
    q->conn_closed = true;
    for (int i = 0; i < q->n_subs; i++)
        if (q->subs[i].added && !q->subs[i].done && n_abort < 64) ids[n_abort++] = q->subs[i].engine_id;
    pthread_mutex_unlock(&q->mu);
    if (n_abort && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        pg_debug("request %s: client gone (code %d), aborting", q->id, (int)toe);
    for (int i = 0; i < n_abort; i++) q->model->abort(q->model->ctx, ids[i]);
    req_unref(q);
}

// ---- auth ---------------------------------------------------------------------------------------

// Runs in time that depends on the key's length only, never on where a guess goes wrong.
static bool const_time_eq(const char *given, const char *key) {
    size_t lg = strlen(given), lk = strlen(key);
    unsigned char d = (unsigned char)(lg != lk);
    for (size_t i = 0; i < lk; i++) d |= (unsigned char)((i < lg ? given[i] : 0) ^ key[i]);
    return d == 0;
}

static bool authorized(struct server *s, struct MHD_Connection *c) {
    if (!s->cfg.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    return const_time_eq(h + 7, s->cfg.api_key);
}

// ---- GET endpoints ------------------------------------------------------------------------------

static enum MHD_Result serve_get(struct server *s, struct MHD_Connection *c, enum route r) {
    const struct server_model *m = atomic_load(&s->model);
    switch (r) {
    case R_HEALTH:
        if (!m || atomic_load(&s->draining))
            return queue_body(c, 503, "text/plain", pg_strdup(m ? "draining\n" : "loading\n"),
                              m ? 9 : 8, 1, NULL);
        return queue_body(c, 200, "text/plain", NULL, 0, 0, NULL);
    case R_VERSION:
        return queue_json(c, 200, json_pack("{s:s}", "version", PAGODA_SERVER_VERSION), 0, NULL);
    case R_MODELS: {
        json_t *card = json_pack("{s:s, s:s, s:I, s:s, s:s, s:i}", "id", s->cfg.limits.model_name,
                                 "object", "model", "created", (json_int_t)time(NULL),
                                 "owned_by", "pagoda", "root",
                                 s->cfg.model_root ? s->cfg.model_root : s->cfg.limits.model_name,
                                 "max_model_len", s->cfg.limits.max_model_len);
        return queue_json(c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", card), 0,
                          NULL);
    }
    case R_METRICS: {
        struct engine_stats st;
        memset(&st, 0, sizeof st);
        if (m && m->stats) m->stats(m->ctx, &st);
        char *t = metrics_render(&s->metrics, &st, s->cfg.limits.model_name);
        return queue_body(c, 200, "text/plain; version=0.0.4; charset=utf-8", t, strlen(t), 0,
                          NULL);
    }
    default:
        return queue_error(c, 404, NULL, 0, NULL, "Not Found: %s", "route");
    }
}

// ---- POST dispatch ------------------------------------------------------------------------------

static void dispatch(struct req *q) {
    struct server *s = q->srv;
    struct api_error e;
    if (q->too_large) {
        api_error_set(&e, 413, NULL, "request body over the limit of %zu bytes",
                      s->cfg.max_body_bytes);
        req_reply_error(q, &e);
        return;
    }
    if (!q->model || atomic_load(&s->draining)) {
        api_error_set(&e, 503, NULL, "%s", q->model ? "the server is shutting down"
                                                    : "the model is still loading");
        e.retry_after = 1;
        req_reply_error(q, &e);
        return;
    }
    if (q->route == R_EMBEDDINGS && !q->model->embed) {
        api_error_set(&e, 404, NULL, "this server does not serve an embedding model");
        req_reply_error(q, &e);
        return;
    }
    if ((q->route == R_TOKENIZE || q->route == R_DETOKENIZE) && !q->model->encode) {
        api_error_set(&e, 404, NULL, "this server's model has no tokenizer endpoints");
        req_reply_error(q, &e);
        return;
    }
    if (q->route == R_WARMUP && !q->model->grammar_get) {
        api_error_set(&e, 404, NULL, "this server has no structured-output engine");
        req_reply_error(q, &e);
        return;
    }
    if ((q->route == R_CHAT || q->route == R_COMPLETIONS) && !q->model->add) {
        api_error_set(&e, 404, NULL, "this server serves an embedding model: use /v1/embeddings");
        req_reply_error(q, &e);
        return;
    }
    q->phase = P_WORKING;
    q->suspended = true;
    MHD_suspend_connection(q->conn);
    if (pool_submit(s->pool, q->route == R_CHAT || q->route == R_COMPLETIONS ? gen_job
                                                                             : tokenize_job, q)) {
        q->suspended = false;
        MHD_resume_connection(q->conn);
        api_error_set(&e, 503, NULL, "the server is shutting down");
        req_reply_error(q, &e);
    }
}

static enum MHD_Result respond(struct req *q) {
    struct MHD_Connection *c = q->conn;
    pthread_mutex_lock(&q->mu);
    enum MHD_Result rc = MHD_YES;
    if (q->phase == P_ENGINE && q->n_live_subs == 0) gen_build_reply(q);
    if (q->phase == P_REPLY) {
        char *body = q->reply;
        size_t len = q->reply_len;
        q->reply = NULL;
        q->phase = P_SENT;
        int status = q->status, ra = q->retry_after;
        const char *type = q->reply_type;
        pthread_mutex_unlock(&q->mu);
        if (q->srv->cfg.log_requests) pg_info("%s -> %d", q->id, status);
        return queue_body(c, status, type, body, len, ra, NULL);
    }
    if (q->phase == P_STREAM) {
        q->phase = P_SENT;
        pthread_mutex_unlock(&q->mu);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
                                                                   gen_stream_reader, q, NULL);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        rc = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return rc;
    }
    if (q->phase == P_WORKING || q->phase == P_ENGINE) { // woken early: wait again
        q->suspended = true;
        MHD_suspend_connection(c);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls) {
    struct server *s = cls;
    struct req *q = *con_cls;
    if (q) {
        if (q->phase == P_UPLOAD && *upload_size) {
            if (!q->too_large) {
                if (q->body_len + *upload_size > s->cfg.max_body_bytes) {
                    q->too_large = true;
                } else {
                    q->body = pg_realloc(q->body, q->body_len + *upload_size + 1);
                    memcpy(q->body + q->body_len, upload, *upload_size);
                    q->body_len += *upload_size;
                }
            }
            *upload_size = 0;
            return MHD_YES;
        }
        if (q->phase == P_UPLOAD) { // body complete
            pthread_mutex_lock(&q->mu);
            dispatch(q);
            bool parked = q->phase == P_WORKING;
            pthread_mutex_unlock(&q->mu);
            if (parked) return MHD_YES; // the pool job resumes the connection
        }
        return respond(q);
    }
    // first call: headers only
    size_t i, n = sizeof routes / sizeof routes[0];
    for (i = 0; i < n && strcmp(url, routes[i].path); i++) {}
    if (i == n) return queue_error(c, 404, NULL, 0, NULL, "Not Found: no route %.200s", url);
    if (strcmp(method, routes[i].method)) {
        char msg[128];
        snprintf(msg, sizeof msg, "Method Not Allowed: %s takes %s", routes[i].path,
                 routes[i].method);
        return queue_error(c, 405, NULL, 0, routes[i].method, "%s", msg);
    }
    enum route r = routes[i].r;
    if (r != R_HEALTH && r != R_METRICS && !authorized(s, c))
        return queue_error(c, 401, NULL, 0, NULL, "%s", "Unauthorized: missing or wrong API key "
                           "(Authorization: Bearer ...)");
    if (!strcmp(method, "GET")) return serve_get(s, c, r);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body over the limit of %zu bytes", s->cfg.max_body_bytes);
        return queue_error(c, 413, NULL, 0, NULL, "%s", msg);
    }
    *con_cls = req_new(s, c, r);
    return MHD_YES;
}

// ---- daemon ---------------------------------------------------------------------------------------

static void log_mhd(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    pg_debug("http: %s", msg);
}

struct server *server_start(const struct server_config *cfg, char *err) {
    struct server *s = pg_calloc(1, sizeof *s);
    s->cfg = *cfg;
    if (!s->cfg.max_body_bytes) s->cfg.max_body_bytes = 8u << 20;
    if (s->cfg.request_timeout_s <= 0) s->cfg.request_timeout_s = 60;
    if (s->cfg.max_connections <= 0) s->cfg.max_connections = 4096;
    if (s->cfg.http_threads <= 0) s->cfg.http_threads = 2;
    if (s->cfg.limits.max_n <= 0) s->cfg.limits.max_n = 64;
    if (s->cfg.limits.max_prompts <= 0) s->cfg.limits.max_prompts = 64;
    metrics_init(&s->metrics);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle, NULL);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->port)};
    const char *host = cfg->host && *cfg->host ? cfg->host : "0.0.0.0";
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        pg_seterr(err, "--host %s: not an IPv4 address", host);
        goto fail;
    }
    s->pool = pool_new(cfg->pool_threads);
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->cfg.request_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)s->cfg.max_connections, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)s->cfg.http_threads, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!s->daemon) {
        pg_seterr(err, "cannot listen on %s:%d (address in use, or no permission)", host,
                  cfg->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
fail:
    pool_free(s->pool);
    metrics_free(&s->metrics);
    free(s);
    return NULL;
}

int server_port(const struct server *s) { return s->port; }

void server_set_model(struct server *s, const struct server_model *m) { atomic_store(&s->model, m); }

void server_drain(struct server *s) {
    atomic_store(&s->draining, true);
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

int server_wait_idle(struct server *s, double grace_s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + grace_s;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&s->mu);
    while (s->n_live > 0)
        if (pthread_cond_timedwait(&s->idle, &s->mu, &ts)) break;
    int left = s->n_live;
    pthread_mutex_unlock(&s->mu);
    return left;
}

// Resumes every connection still parked (past the grace period: the engine never finished
// them) with a 503, since libmicrohttpd refuses to stop with suspended connections.
static void resume_all(struct server *s) {
    pthread_mutex_lock(&s->mu);
    int n = 0, cap = s->n_live;
    struct MHD_Connection **conns = pg_calloc((size_t)(cap ? cap : 1), sizeof *conns);
    for (struct req *q = s->live; q && n < cap; q = q->next) {
        pthread_mutex_lock(&q->mu);
        if (req_wake(q)) {
            if (q->phase != P_SENT) {
                struct api_error e;
                api_error_set(&e, 503, NULL, "the server is shutting down");
                req_reply_error(q, &e);
            } else {
                q->done_sent = true; // end the stream where it is
            }
            conns[n++] = q->conn;
        }
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&s->mu);
    // (a suspended connection cannot complete, so these stay valid until resumed)
    for (int i = 0; i < n; i++) MHD_resume_connection(conns[i]);
    free(conns);
}

void server_free(struct server *s) {
    if (!s) return;
    pool_free(s->pool); // runs queued jobs (they answer 503 when draining)
    s->pool = NULL;
    resume_all(s);
    server_wait_idle(s, 1.0); // let the resumed ones send their 503
    MHD_stop_daemon(s->daemon);
    // what is left waits on an engine that never answered (the caller has stopped it: no
    // callback can come any more)
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct req *q = s->live;
        pthread_mutex_unlock(&s->mu);
        if (!q) break;
        q->refs = 1;
        req_unref(q);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->idle);
    metrics_free(&s->metrics);
    free(s);
}
