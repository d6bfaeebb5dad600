// End-to-end tests of the HTTP server over real sockets, with a fake engine and tokenizer
// behind `struct server_model` (the real ones are tested in their own suites): routes,
// errors and statuses, streaming, n > 1, echo, tool calls, client disconnects, many idle
// keep-alive connections, concurrent streams, drain.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/server.h"

// ---- fake engine: one token per step per sequence; token k of a sequence is 'a' + k % 26,
// or, when the prompt contains "TOOL", the next byte of a scripted hermes tool call -----------

static const char *TOOL_SCRIPT =
    "Sure. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", "
    "\"days\": 3}}\n</tool_call>";

struct fake_req {
    uint64_t id;
    struct gen_request g;
    int n_out[8];
    bool done[8];
    bool aborted, tool;
    int n_prompt;
    double t_arrival;
};

struct fake {
    pthread_mutex_t mu; // recursive: callbacks may call abort
    pthread_t thread;
    bool stop, busy, stuck;
    struct fake_req *reqs[4096];
    int n;
    uint64_t next_id;
    uint64_t finished[5];
    int n_aborted;
};
static struct fake F;

static int f_add(void *ctx, const struct gen_request *r, uint64_t *id, char *err) {
    pthread_mutex_lock(&F.mu);
    if (F.busy || F.n >= 4096) {
        pthread_mutex_unlock(&F.mu);
        pg_seterr(err, "waiting queue full");
        return ENGINE_EBUSY;
    }
    struct fake_req *q = pg_calloc(1, sizeof *q);
    q->id = ++F.next_id;
    q->g = *r;
    q->n_prompt = r->n_prompt;
    q->tool = memmem(r->prompt, (size_t)r->n_prompt * 4, "T\0\0\0O\0\0\0O\0\0\0L", 13) != NULL;
    q->t_arrival = pg_now();
    F.reqs[F.n++] = q;
    *id = q->id;
    pthread_mutex_unlock(&F.mu);
    return ENGINE_OK;
}

static void f_abort(void *ctx, uint64_t id) {
    pthread_mutex_lock(&F.mu);
    for (int i = 0; i < F.n; i++)
        if (F.reqs[i]->id == id) F.reqs[i]->aborted = true;
    pthread_mutex_unlock(&F.mu);
}

static void f_stats(void *ctx, struct engine_stats *s) {
    pthread_mutex_lock(&F.mu);
    memset(s, 0, sizeof *s);
    s->num_running = F.n;
    s->num_blocks = 100;
    s->num_free_blocks = F.n ? 50 : 100;
    s->kv_usage = F.n ? 0.5 : 0.0;
    memcpy(s->finished, F.finished, sizeof s->finished);
    pthread_mutex_unlock(&F.mu);
}

static void f_emit(struct fake_req *q, int i, enum finish_reason fin) {
    char text[2] = {0};
    int32_t tok = 0;
    struct sample_output lp = {0};
    int nt = 0;
    if (fin != FINISH_ABORT) {
        int k = q->n_out[i]++;
        text[0] = q->tool ? TOOL_SCRIPT[k] : (char)('a' + k % 26);
        tok = (unsigned char)text[0];
        lp = (struct sample_output){.token = tok, .logprob = -0.5f, .n_top = 2,
                                    .top_ids = {tok, 'z'}, .top_logprobs = {-0.5f, -1.0f}};
        nt = 1;
    }
    double now = pg_now();
    struct engine_output o = {
        .req_id = q->id, .index = i, .tokens = &tok, .n_tokens = nt, .text = text,
        .text_len = strlen(text), .logprobs = q->g.sp.logprobs >= 0 && nt ? &lp : NULL,
        .finish = fin, .stop_token = -1, .n_prompt_tokens = q->n_prompt,
        .n_output_tokens = q->n_out[i], .t_arrival = q->t_arrival, .t_scheduled = q->t_arrival,
        .t_first_token = now, .t_now = now,
    };
    if (fin != FINISH_NONE) {
        q->done[i] = true;
        F.finished[fin]++;
    }
    q->g.on_output(q->g.user, &o);
}

static void *f_loop(void *arg) {
    while (!__atomic_load_n(&F.stop, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&F.mu);
        for (int r = 0; r < F.n && !F.stuck; r++) {
            struct fake_req *q = F.reqs[r];
            bool all = true;
            for (int i = 0; i < q->g.n; i++) {
                if (q->done[i]) continue;
                int limit = q->tool ? (int)strlen(TOOL_SCRIPT) : q->g.max_tokens;
                if (q->aborted) f_emit(q, i, FINISH_ABORT);
                else f_emit(q, i, q->n_out[i] + 1 >= limit ? (q->tool ? FINISH_STOP : FINISH_LENGTH)
                                                           : FINISH_NONE);
                all = all && q->done[i];
            }
            if (all) {
                if (q->aborted) F.n_aborted++;
                free(q);
                F.reqs[r--] = F.reqs[--F.n];
            }
        }
        pthread_mutex_unlock(&F.mu);
        usleep(1000);
    }
    return NULL;
}

// fake tokenizer: one token per byte
static int f_encode(void *ctx, const char *text, size_t len, bool special, int32_t **ids, int *n,
                    char *err) {
    *ids = pg_malloc((len ? len : 1) * sizeof(int32_t));
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    *n = (int)len;
    return 0;
}
static char *f_decode(void *ctx, const int32_t *ids, int n, bool skip, size_t *len) {
    char *s = pg_malloc((size_t)n + 1);
    for (int i = 0; i < n; i++) s[i] = (char)ids[i];
    s[n] = 0;
    *len = (size_t)n;
    return s;
}
static char TOKS[256][2];
static const char *f_token_bytes(void *ctx, int32_t id, size_t *len) {
    if (id < 0 || id > 255) return NULL;
    TOKS[id][0] = (char)id;
    *len = 1;
    return TOKS[id];
}
static int f_render(void *ctx, const struct chat_render_args *a, char **out, char *err) {
    size_t cap = 64, len = 0, i;
    char *s = pg_malloc(cap);
    json_t *m;
    json_array_foreach(a->messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *c = json_string_value(json_object_get(m, "content"));
        if (c && !strcmp(c, "RAISE")) {
            free(s);
            pg_seterr(err, "raise_exception: roles must alternate");
            return -1;
        }
        size_t need = strlen(role) + (c ? strlen(c) : 0) + 3;
        while (len + need + 16 > cap) s = pg_realloc(s, cap *= 2);
        len += (size_t)sprintf(s + len, "%s:%s\n", role, c ? c : "");
    }
    if (a->tools) len += (size_t)sprintf(s + len, "tools\n"); // (cap has room: +16)
    if (a->add_generation_prompt) {
        s = pg_realloc(s, len + 16);
        len += (size_t)sprintf(s + len, "assistant:");
    }
    *out = s;
    return 0;
}

static struct server_model MODEL = {
    .add = f_add, .abort = f_abort, .stats = f_stats, .encode = f_encode, .decode = f_decode,
    .token_bytes = f_token_bytes, .render_chat = f_render,
};

// ---- HTTP client ----------------------------------------------------------------------------------

static int PORT;

static int connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0) return;
        s += k;
        n -= (size_t)k;
    }
}

static void send_request(int fd, const char *method, const char *path, const char *body,
                         const char *extra_headers) {
    char head[1024];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", method, path,
                     extra_headers ? extra_headers : "", body ? strlen(body) : 0);
    send_all(fd, head, (size_t)n);
    if (body) send_all(fd, body, strlen(body));
}

struct resp {
    int status;
    char *head, *body; // body de-chunked
    size_t body_len;
};

static void dechunk(struct resp *r) {
    if (!strcasestr(r->head, "Transfer-Encoding: chunked")) return;
    char *in = r->body, *out = pg_malloc(r->body_len + 1);
    size_t o = 0;
    for (char *p = in; p < in + r->body_len;) {
        size_t n = strtoul(p, &p, 16);
        p = strstr(p, "\r\n");
        if (!p || !n) break;
        p += 2;
        memcpy(out + o, p, n);
        o += n;
        p += n + 2;
    }
    out[o] = 0;
    free(r->body);
    r->body = out;
    r->body_len = o;
}

static struct resp read_response(int fd) {
    size_t cap = 4096, len = 0;
    char *buf = pg_malloc(cap);
    for (;;) {
        if (len + 4096 > cap) buf = pg_realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k <= 0) break;
        len += (size_t)k;
    }
    buf[len] = 0;
    struct resp r = {0};
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r.status) != 1) {
        r.status = -1;
        r.head = buf;
        r.body = pg_strdup("");
        return r;
    }
    *sep = 0;
    r.head = buf;
    r.body_len = len - (size_t)(sep + 4 - buf);
    r.body = pg_malloc(r.body_len + 1);
    memcpy(r.body, sep + 4, r.body_len);
    r.body[r.body_len] = 0;
    dechunk(&r);
    return r;
}

static struct resp http(const char *method, const char *path, const char *body,
                        const char *headers) {
    int fd = connect_port(PORT);
    assert_true(fd >= 0);
    send_request(fd, method, path, body, headers);
    struct resp r = read_response(fd);
    close(fd);
    return r;
}

static void resp_free(struct resp *r) {
    free(r->head);
    free(r->body);
}

static json_t *body_json(struct resp *r) {
    json_t *j = json_loads(r->body, 0, NULL);
    if (!j) fail_msg("not JSON (status %d): %s", r->status, r->body);
    return j;
}

// status + error param check
static void expect_error(const char *method, const char *path, const char *body,
                         const char *headers, int status, const char *param) {
    struct resp r = http(method, path, body, headers);
    if (r.status != status) fail_msg("%s %s %.80s: status %d, expected %d: %s", method, path,
                                     body ? body : "", r.status, status, r.body);
    json_t *j = body_json(&r), *e = json_object_get(j, "error");
    assert_non_null(json_string_value(json_object_get(e, "message")));
    assert_non_null(json_string_value(json_object_get(e, "type")));
    if (param) {
        const char *p = json_string_value(json_object_get(e, "param"));
        if (!p || strcmp(p, param)) fail_msg("param %s, expected %s (%s)", p, param, r.body);
    }
    json_decref(j);
    resp_free(&r);
}

static struct server *SRV;

static struct server *start(const char *api_key, int max_model_len) {
    struct server_config cfg = {
        .host = "127.0.0.1", .port = 0, .api_key = api_key, .model_root = "/models/tiny",
        .limits = {.model_name = "tiny", .max_model_len = max_model_len, .vocab = 256,
                   .gen = {.temperature = 1, .top_p = 1, .top_k = -1, .repetition_penalty = 1,
                           .do_sample = true}},
        .max_body_bytes = 1 << 16, .request_timeout_s = 10, .max_connections = 4000,
        .pool_threads = 2,
    };
    char err[PG_ERR_LEN] = "";
    struct server *s = server_start(&cfg, err);
    if (!s) fail_msg("server_start: %s", err);
    return s;
}

static int setup(void **state) {
    pthread_mutexattr_t at;
    pthread_mutexattr_init(&at);
    pthread_mutexattr_settype(&at, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&F.mu, &at);
    pthread_create(&F.thread, NULL, f_loop, NULL);
    SRV = start(NULL, 4096);
    PORT = server_port(SRV);
    return 0;
}

static int teardown(void **state) {
    server_drain(SRV);
    server_wait_idle(SRV, 5);
    __atomic_store_n(&F.stop, true, __ATOMIC_SEQ_CST);
    pthread_join(F.thread, NULL);
    server_free(SRV);
    return 0;
}

// ---- tests -------------------------------------------------------------------------------------------

static const char *CHAT5 = "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"hi\"}],\"max_tokens\":5%s}";

static char *fmt(const char *f, const char *a) {
    char *s = pg_malloc(strlen(f) + strlen(a) + 1);
    sprintf(s, f, a);
    return s;
}

static void test_health_loading_then_ready(void **state) {
    struct resp r = http("GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    char *b = fmt(CHAT5, "");
    expect_error("POST", "/v1/chat/completions", b, NULL, 503, NULL);
    free(b);
    server_set_model(SRV, &MODEL);
    r = http("GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http("GET", "/version", NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_non_null(json_string_value(json_object_get(j, "version")));
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/v1/models", NULL, NULL);
    j = body_json(&r);
    json_t *card = json_array_get(json_object_get(j, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(card, "id")), "tiny");
    assert_int_equal(json_integer_value(json_object_get(card, "max_model_len")), 4096);
    json_decref(j);
    resp_free(&r);
}

static void test_chat_nonstream(void **state) {
    char *b = fmt(CHAT5, ",\"n\":2,\"logprobs\":true,\"top_logprobs\":2");
    struct resp r = http("POST", "/v1/chat/completions", b, NULL);
    free(b);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    assert_true(!strncmp(json_string_value(json_object_get(j, "id")), "chatcmpl-", 9));
    assert_string_equal(json_string_value(json_object_get(j, "model")), "tiny");
    json_t *choices = json_object_get(j, "choices");
    assert_int_equal(json_array_size(choices), 2);
    for (int i = 0; i < 2; i++) {
        json_t *c = json_array_get(choices, (size_t)i);
        assert_int_equal(json_integer_value(json_object_get(c, "index")), i);
        json_t *msg = json_object_get(c, "message");
        assert_string_equal(json_string_value(json_object_get(msg, "role")), "assistant");
        assert_string_equal(json_string_value(json_object_get(msg, "content")), "abcde");
        assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
        json_t *lp = json_object_get(json_object_get(c, "logprobs"), "content");
        assert_int_equal(json_array_size(lp), 5);
        assert_string_equal(json_string_value(json_object_get(json_array_get(lp, 1), "token")), "b");
        assert_int_equal(json_array_size(json_object_get(json_array_get(lp, 1), "top_logprobs")), 2);
    }
    json_t *u = json_object_get(j, "usage");
    // the fake template renders "user:hi\nassistant:" = 18 bytes = 18 tokens
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 18);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 10);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 28);
    json_decref(j);
    resp_free(&r);
}

// Parses an SSE body into its JSON frames; checks it ends with [DONE].
static json_t *sse_frames(const char *body) {
    json_t *frames = json_array();
    const char *p = body;
    bool done = false;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_false(done); // nothing after [DONE]
        if (!strncmp(p, "[DONE]", 6)) done = true;
        else json_array_append_new(frames, json_loadb(p, (size_t)(end - p), 0, NULL));
        p = end + 2;
    }
    assert_true(done);
    return frames;
}

static void test_chat_stream_usage(void **state) {
    char *b = fmt(CHAT5, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    struct resp r = http("POST", "/v1/chat/completions", b, NULL);
    free(b);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.head, "text/event-stream"));
    json_t *frames = sse_frames(r.body), *f;
    size_t i, n = json_array_size(frames);
    assert_true(n >= 3);
    char text[64] = "";
    const char *finish = NULL;
    json_array_foreach(frames, i, f) {
        assert_string_equal(json_string_value(json_object_get(f, "object")), "chat.completion.chunk");
        json_t *choices = json_object_get(f, "choices");
        if (i == n - 1) { // the usage chunk: no choices
            assert_int_equal(json_array_size(choices), 0);
            json_t *u = json_object_get(f, "usage");
            assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 5);
            assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 18);
            continue;
        }
        assert_true(json_is_null(json_object_get(f, "usage")));
        json_t *c = json_array_get(choices, 0), *d = json_object_get(c, "delta");
        if (i == 0) assert_string_equal(json_string_value(json_object_get(d, "role")), "assistant");
        const char *t = json_string_value(json_object_get(d, "content"));
        if (t) strcat(text, t);
        if (json_string_value(json_object_get(c, "finish_reason")))
            finish = json_string_value(json_object_get(c, "finish_reason"));
    }
    assert_string_equal(text, "abcde");
    assert_non_null(finish);
    assert_string_equal(finish, "length");
    json_decref(frames);
    resp_free(&r);
}

static void test_completions_echo_and_batch(void **state) {
    struct resp r = http("POST", "/v1/completions", "{\"prompt\":[\"xy\",\"pq\"],\"max_tokens\":3,"
                         "\"echo\":true}", NULL);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r), *choices = json_object_get(j, "choices");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    assert_int_equal(json_array_size(choices), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(choices, 0), "text")),
                        "xyabc");
    assert_string_equal(json_string_value(json_object_get(json_array_get(choices, 1), "text")),
                        "pqabc");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "prompt_tokens")), 4);
    json_decref(j);
    resp_free(&r);
    // a batch without max_tokens: each prompt may run to the context (40 - its length)
    struct server *small = start(NULL, 40);
    server_set_model(small, &MODEL);
    int saved = PORT;
    PORT = server_port(small);
    r = http("POST", "/v1/completions", "{\"prompt\":[\"a\",\"bbbbbbbb\"]}", NULL);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "completion_tokens")), 39 + 32);
    json_decref(j);
    resp_free(&r);
    PORT = saved;
    server_drain(small);
    assert_int_equal(server_wait_idle(small, 5), 0);
    server_free(small);
    // streaming completions with logprobs
    r = http("POST", "/v1/completions", "{\"prompt\":[1,2,3],\"max_tokens\":4,\"stream\":true,"
             "\"logprobs\":1}", NULL);
    json_t *frames = sse_frames(r.body), *f;
    size_t i;
    char text[32] = "";
    int n_lp = 0;
    json_array_foreach(frames, i, f) {
        json_t *c = json_array_get(json_object_get(f, "choices"), 0);
        strcat(text, json_string_value(json_object_get(c, "text")));
        n_lp += (int)json_array_size(json_object_get(json_object_get(c, "logprobs"), "tokens"));
    }
    assert_string_equal(text, "abcd");
    assert_int_equal(n_lp, 4);
    json_decref(frames);
    resp_free(&r);
}

static void test_tokenize_detokenize(void **state) {
    struct resp r = http("POST", "/tokenize", "{\"prompt\":\"AB\"}", NULL);
    json_t *j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "tokens"), 1)), 'B');
    json_decref(j);
    resp_free(&r);
    r = http("POST", "/tokenize", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", NULL);
    j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 18);
    json_decref(j);
    resp_free(&r);
    r = http("POST", "/detokenize", "{\"tokens\":[72,105]}", NULL);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "prompt")), "Hi");
    json_decref(j);
    resp_free(&r);
    expect_error("POST", "/detokenize", "{\"tokens\":[999]}", NULL, 400, "tokens");
    expect_error("POST", "/tokenize", "{\"prompt\":\"a\",\"x\":1}", NULL, 400, "x");
    expect_error("POST", "/v1/embeddings", "{\"input\":\"a\"}", NULL, 404, NULL);
}

static void test_errors(void **state) {
    expect_error("POST", "/v1/chat/completions", "{\"messages\": [", NULL, 400, NULL);
    expect_error("POST", "/v1/chat/completions", "", NULL, 400, NULL);
    char *b = fmt(CHAT5, ",\"bogus_field\":1");
    expect_error("POST", "/v1/chat/completions", b, NULL, 400, "bogus_field");
    free(b);
    b = fmt(CHAT5, ",\"temperature\":-1");
    expect_error("POST", "/v1/chat/completions", b, NULL, 400, "temperature");
    free(b);
    expect_error("POST", "/v1/chat/completions", "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"x\"}]}", NULL, 404, "model");
    expect_error("POST", "/v1/completions", "{\"prompt\":\"ab\",\"max_tokens\":4095}", NULL, 400,
                 "max_tokens");
    expect_error("POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":"
                 "\"RAISE\"}]}", NULL, 400, "messages");
    b = fmt(CHAT5, ",\"guided_regex\":\"a+\"");
    expect_error("POST", "/v1/chat/completions", b, NULL, 400, "guided_regex"); // no grammar engine here
    free(b);
    expect_error("GET", "/v1/chat/completions", NULL, NULL, 405, NULL);
    expect_error("POST", "/health", "{}", NULL, 405, NULL);
    expect_error("GET", "/nope", NULL, NULL, 404, NULL);
    char *big = pg_malloc(70000);
    memset(big, ' ', 69999);
    big[69999] = 0;
    big[0] = '{';
    big[69998] = '}';
    expect_error("POST", "/v1/completions", big, NULL, 413, NULL);
    free(big);
    // the fake engine's waiting queue is full: 503 with Retry-After
    F.busy = true;
    b = fmt(CHAT5, "");
    struct resp r = http("POST", "/v1/chat/completions", b, NULL);
    F.busy = false;
    assert_int_equal(r.status, 503);
    assert_non_null(strcasestr(r.head, "Retry-After: 1"));
    resp_free(&r);
    // the length check message carries the numbers
    r = http("POST", "/v1/completions", "{\"prompt\":\"ab\",\"max_tokens\":4095}", NULL);
    assert_non_null(strstr(r.body, "4096"));
    assert_non_null(strstr(r.body, "4097"));
    resp_free(&r);
    free(b);
}

static void test_api_key(void **state) {
    struct server *s = start("sekrit", 256);
    server_set_model(s, &MODEL);
    int saved = PORT;
    PORT = server_port(s);
    char *b = fmt(CHAT5, "");
    expect_error("POST", "/v1/chat/completions", b, NULL, 401, NULL);
    expect_error("POST", "/v1/chat/completions", b, "Authorization: Bearer sekrix\r\n", 401, NULL);
    expect_error("POST", "/v1/chat/completions", b, "Authorization: Bearer sekrit2\r\n", 401, NULL);
    expect_error("GET", "/v1/models", NULL, NULL, 401, NULL);
    struct resp r = http("POST", "/v1/chat/completions", b, "Authorization: Bearer sekrit\r\n");
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http("GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http("GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    free(b);
    PORT = saved;
    server_drain(s);
    assert_int_equal(server_wait_idle(s, 5), 0);
    server_free(s);
}

static void test_tool_calls(void **state) {
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"TOOL please\"}],\"tools\":"
                      "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                      "\"parameters\":{\"type\":\"object\"}}}]%s}";
    char *b = fmt(req, "");
    struct resp r = http("POST", "/v1/chat/completions", b, NULL);
    free(b);
    json_t *j = body_json(&r), *c = json_array_get(json_object_get(j, "choices"), 0);
    if (strcmp(json_string_value(json_object_get(c, "finish_reason")), "tool_calls"))
        fail_msg("%s", r.body);
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "tool_calls");
    json_t *msg = json_object_get(c, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "Sure. ");
    json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
    assert_true(!strncmp(json_string_value(json_object_get(tc, "id")), "call_", 5));
    json_t *fn = json_object_get(tc, "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_weather");
    json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(args, "city")), "Oslo");
    assert_int_equal(json_integer_value(json_object_get(args, "days")), 3);
    json_decref(args);
    char *want_args = pg_strdup(json_string_value(json_object_get(fn, "arguments")));
    json_decref(j);
    resp_free(&r);
    // streamed: the same content and arguments, each character exactly once
    b = fmt(req, ",\"stream\":true");
    r = http("POST", "/v1/chat/completions", b, NULL);
    free(b);
    json_t *frames = sse_frames(r.body), *f;
    size_t i;
    char content[256] = "", argstr[256] = "";
    const char *finish = NULL;
    json_array_foreach(frames, i, f) {
        c = json_array_get(json_object_get(f, "choices"), 0);
        json_t *d = json_object_get(c, "delta");
        if (json_string_value(json_object_get(d, "content")))
            strcat(content, json_string_value(json_object_get(d, "content")));
        json_t *tcs = json_object_get(d, "tool_calls");
        if (tcs) {
            tc = json_array_get(tcs, 0);
            assert_int_equal(json_integer_value(json_object_get(tc, "index")), 0);
            strcat(argstr, json_string_value(json_object_get(json_object_get(tc, "function"),
                                                             "arguments")));
        }
        if (json_string_value(json_object_get(c, "finish_reason")))
            finish = json_string_value(json_object_get(c, "finish_reason"));
    }
    assert_string_equal(content, "Sure. ");
    assert_string_equal(argstr, want_args);
    assert_string_equal(finish, "tool_calls");
    free(want_args);
    json_decref(frames);
    resp_free(&r);
}

static int running(void) {
    struct engine_stats s;
    f_stats(NULL, &s);
    return s.num_running;
}

static void wait_engine_idle(void) {
    for (int i = 0; i < 5000 && running(); i++) usleep(1000);
    assert_int_equal(running(), 0);
}

static void test_disconnect_aborts(void **state) {
    int aborted0 = F.n_aborted;
    // streaming: read the first bytes, then hang up
    int fd = connect_port(PORT);
    send_request(fd, "POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":4000,"
                 "\"stream\":true}", NULL);
    char buf[256];
    assert_true(recv(fd, buf, sizeof buf, 0) > 0);
    close(fd);
    // non-streaming: hang up while it runs
    fd = connect_port(PORT);
    send_request(fd, "POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":4000}", NULL);
    usleep(50000);
    close(fd);
    wait_engine_idle();
    assert_int_equal(F.n_aborted - aborted0, 2);
}

struct client_arg {
    int i;
    bool ok;
};

static void *stream_client(void *p) {
    struct client_arg *a = p;
    int fd = connect_port(PORT);
    if (fd < 0) return NULL;
    bool quit_early = a->i % 4 == 0;
    send_request(fd, "POST", "/v1/chat/completions",
                 quit_early ? "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\""
                              ":3000,\"stream\":true}"
                            : "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\""
                              ":40,\"stream\":true}", NULL);
    if (quit_early) {
        char buf[64];
        a->ok = recv(fd, buf, sizeof buf, 0) > 0;
        close(fd);
        return NULL;
    }
    struct resp r = read_response(fd);
    close(fd);
    a->ok = r.status == 200 && strstr(r.body, "data: [DONE]") != NULL;
    resp_free(&r);
    return NULL;
}

static void test_concurrent_streams(void **state) {
    enum { N = 64 };
    pthread_t t[N];
    struct client_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (struct client_arg){.i = i};
        pthread_create(&t[i], NULL, stream_client, &a[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++) assert_true(a[i].ok);
    wait_engine_idle();
    struct resp r = http("GET", "/metrics", NULL, NULL);
    assert_non_null(strstr(r.body, "vllm:num_requests_running{model_name=\"tiny\"} 0\n"));
    assert_non_null(strstr(r.body, "vllm:num_requests_waiting{model_name=\"tiny\"} 0\n"));
    assert_non_null(strstr(r.body, "vllm:kv_cache_usage_perc{model_name=\"tiny\"} 0\n"));
    assert_non_null(strstr(r.body, "vllm:time_to_first_token_seconds_count"));
    resp_free(&r);
}

static void test_idle_keepalive_connections(void **state) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int want = 1000;
    if (rl.rlim_cur < 2200) want = (int)(rl.rlim_cur - 200) / 2; // client + server sides
    int *fds = pg_malloc((size_t)want * sizeof *fds), n = 0;
    for (int i = 0; i < want; i++) {
        fds[n] = connect_port(PORT);
        if (fds[n] >= 0) n++;
    }
    assert_int_equal(n, want);
    // each idle connection still serves a keep-alive request
    for (int i = 0; i < n; i += n / 8) {
        const char *req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        send_all(fds[i], req, strlen(req));
        char buf[256];
        ssize_t k = recv(fds[i], buf, sizeof buf - 1, 0);
        assert_true(k > 12);
        buf[k] = 0;
        assert_non_null(strstr(buf, "200"));
    }
    char *b = fmt(CHAT5, "");
    struct resp r = http("POST", "/v1/chat/completions", b, NULL);
    free(b);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    for (int i = 0; i < n; i++) close(fds[i]);
    free(fds);
}

// fake embedding model: dim 3, vector (len, first byte, 1)
static int f_embed(void *ctx, const char *const *t, int n, float *out, int *nt, char *err) {
    *nt = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(t[i], "FAIL")) {
            pg_seterr(err, "input %d is too long", i);
            return -1;
        }
        out[i * 3] = (float)strlen(t[i]);
        out[i * 3 + 1] = (float)(unsigned char)t[i][0];
        out[i * 3 + 2] = 1.0f;
        *nt += (int)strlen(t[i]);
    }
    return 0;
}

static void test_embeddings(void **state) {
    struct server *s = start(NULL, 512);
    struct server_model em = {.embed = f_embed, .embed_dim = 3};
    server_set_model(s, &em);
    int saved = PORT;
    PORT = server_port(s);
    struct resp r = http("POST", "/v1/embeddings", "{\"input\":[\"ab\",\"xyz\"],\"model\":\"tiny\"}",
                         NULL);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r), *d = json_object_get(j, "data");
    assert_int_equal(json_array_size(d), 2);
    json_t *e1 = json_object_get(json_array_get(d, 1), "embedding");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(d, 1), "index")), 1);
    assert_true(json_number_value(json_array_get(e1, 0)) == 3.0);
    assert_true(json_number_value(json_array_get(e1, 1)) == 'x');
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "prompt_tokens")), 5);
    json_decref(j);
    resp_free(&r);
    // base64 of float32 little-endian (1.0f, 97.0f, 1.0f) for "a"
    r = http("POST", "/v1/embeddings", "{\"input\":\"a\",\"encoding_format\":\"base64\"}", NULL);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"),
                                                                         0), "embedding")),
                        "AACAPwAAwkIAAIA/");
    json_decref(j);
    resp_free(&r);
    expect_error("POST", "/v1/embeddings", "{\"input\":\"FAIL\"}", NULL, 400, "input");
    expect_error("POST", "/v1/embeddings", "{\"input\":[1,2]}", NULL, 400, "input");
    expect_error("POST", "/v1/embeddings", "{\"input\":\"a\",\"dimensions\":8}", NULL, 400,
                 "dimensions");
    expect_error("POST", "/v1/embeddings", "{\"input\":\"a\",\"bogus\":1}", NULL, 400, "bogus");
    expect_error("POST", "/v1/chat/completions", "{\"messages\":[]}", NULL, 404, NULL);
    expect_error("POST", "/tokenize", "{\"prompt\":\"a\"}", NULL, 404, NULL);
    r = http("GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    PORT = saved;
    server_drain(s);
    assert_int_equal(server_wait_idle(s, 5), 0);
    server_free(s);
}

static void *nonstream_client(void *p) {
    struct resp *r = p;
    *r = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":5}", NULL);
    return NULL;
}

static void test_free_with_stuck_engine(void **state) {
    // the engine never answers: past the grace period the server still closes cleanly (503)
    struct server *s = start(NULL, 512);
    server_set_model(s, &MODEL);
    int saved = PORT;
    PORT = server_port(s);
    F.stuck = true;
    struct resp r;
    pthread_t t;
    pthread_create(&t, NULL, nonstream_client, &r);
    while (running() == 0) usleep(1000);
    server_drain(s);
    assert_int_equal(server_wait_idle(s, 0.2), 1);
    server_free(s);
    pthread_join(t, NULL);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    pthread_mutex_lock(&F.mu); // forget the orphan (its server is gone)
    for (int i = 0; i < F.n; i++) free(F.reqs[i]);
    F.n = 0;
    F.stuck = false;
    pthread_mutex_unlock(&F.mu);
    PORT = saved;
}

static void test_slow_client_times_out(void **state) {
    // a client that sends half its headers and stalls is disconnected after the timeout
    struct server_config cfg = {.host = "127.0.0.1", .limits = {.model_name = "tiny",
                                .max_model_len = 64, .vocab = 256}, .request_timeout_s = 1};
    char err[PG_ERR_LEN] = "";
    struct server *s = server_start(&cfg, err);
    assert_non_null(s);
    server_set_model(s, &MODEL);
    int fd = connect_port(server_port(s));
    const char *partial = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le";
    send_all(fd, partial, strlen(partial));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64];
    assert_int_equal(recv(fd, buf, sizeof buf, 0), 0); // closed by the server, not by our timeout
    close(fd);
    server_drain(s);
    assert_int_equal(server_wait_idle(s, 5), 0);
    server_free(s);
}

static void test_drain(void **state) {
    // a stream in flight finishes after drain begins; new connections are refused
    int fd = connect_port(PORT);
    send_request(fd, "POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":200,"
                 "\"stream\":true}", NULL);
    while (running() == 0) usleep(1000); // in the engine before the drain begins
    server_drain(SRV);
    struct resp r = read_response(fd);
    close(fd);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "data: [DONE]"));
    assert_non_null(strstr(r.body, "\"finish_reason\":\"length\""));
    resp_free(&r);
    assert_int_equal(connect_port(PORT), -1);
    assert_int_equal(server_wait_idle(SRV, 5), 0);
}

// A failed assertion leaves a test early: point the client back at the shared server.
static int reset_port(void **state) {
    PORT = server_port(SRV);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_health_loading_then_ready, reset_port),
        cmocka_unit_test_setup(test_chat_nonstream, reset_port),
        cmocka_unit_test_setup(test_chat_stream_usage, reset_port),
        cmocka_unit_test_setup(test_completions_echo_and_batch, reset_port),
        cmocka_unit_test_setup(test_tokenize_detokenize, reset_port),
        cmocka_unit_test_setup(test_errors, reset_port),
        cmocka_unit_test_setup(test_api_key, reset_port),
        cmocka_unit_test_setup(test_tool_calls, reset_port),
        cmocka_unit_test_setup(test_disconnect_aborts, reset_port),
        cmocka_unit_test_setup(test_concurrent_streams, reset_port),
        cmocka_unit_test_setup(test_idle_keepalive_connections, reset_port),
        cmocka_unit_test_setup(test_embeddings, reset_port),
        cmocka_unit_test_setup(test_slow_client_times_out, reset_port),
        cmocka_unit_test_setup(test_free_with_stuck_engine, reset_port),
        cmocka_unit_test_setup(test_drain, reset_port),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
