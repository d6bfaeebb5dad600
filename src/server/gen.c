// Generation requests: the tokenizer-pool job (template, tokens, grammar, engine_add), the
// engine output callback, and the streaming / non-streaming responses.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server/respond.h"
#include "server/server_impl.h"

static void on_output(void *user, const struct engine_output *o);

// A stream whose client has not taken this much text is treated as stalled.
#define STALLED_STREAM_BYTES (1u << 20)

// ---- the pool job ---------------------------------------------------------------------------------

static json_t *parse_body(struct req *q, struct api_error *e) {
    json_error_t je;
    json_t *body = json_loadb(q->body ? q->body : "", q->body_len, 0, &je);
    if (!body) api_error_set(e, 400, NULL, "malformed JSON body: %s (line %d, column %d)",
                             je.text, je.line, je.column);
    return body;
}

// Renders the chat template and tokenizes; *ids malloc'd.
static int chat_prompt(struct req *q, int32_t **ids, int *n, struct api_error *e) {
    const struct server_model *m = q->model;
    char err[PG_ERR_LEN] = "";
    if (!m->render_chat) {
        api_error_set(e, 400, "messages", "this model has no chat template (use /v1/completions "
                      "or --chat-template)");
        return -1;
    }
    struct chat_render_args a = {
        .messages = q->ar.messages, .tools = q->ar.tools,
        .add_generation_prompt = q->ar.add_generation_prompt,
        .bos_token = m->bos_token, .eos_token = m->eos_token, .extra = q->ar.template_kwargs,
    };
    char *text = NULL;
    if (m->render_chat(m->ctx, &a, &text, err)) {
        api_error_set(e, 400, "messages", "chat template: %s", err);
        return -1;
    }
    int rc = m->encode(m->ctx, text, strlen(text), true, ids, n, err);
    free(text);
    if (rc) api_error_set(e, 400, "messages", "tokenizer: %s", err);
    return rc;
}

static int get_grammar(struct req *q, struct grammar **g, struct api_error *e) {
    const struct server_model *m = q->model;
    char err[PG_ERR_LEN] = "";
    *g = NULL;
    if (!q->ar.has_grammar) return 0;
    if (!m->grammar_get) {
        api_error_set(e, 400, q->ar.grammar_param, "structured outputs are not available in "
                      "this build");
        return -1;
    }
    *g = m->grammar_get(m->ctx, q->ar.grammar_kind, q->ar.grammar_spec, q->ar.grammar_spec_len,
                        q->ar.whitespace_pattern, err);
    if (!*g) {
        api_error_set(e, 400, q->ar.grammar_param, "'%s': %s", q->ar.grammar_param, err);
        return -1;
    }
    return 0;
}

// Tokenizes every prompt (completions) or the rendered chat, checking lengths.
static int build_prompts(struct req *q, int32_t ***ids, int **lens, struct api_error *e) {
    const struct server_model *m = q->model;
    int np = q->route == R_CHAT ? 1 : q->ar.n_prompts;
    *ids = pg_calloc((size_t)np, sizeof **ids);
    *lens = pg_calloc((size_t)np, sizeof **lens);
    for (int p = 0; p < np; p++) {
        char err[PG_ERR_LEN] = "";
        if (q->route == R_CHAT) {
            if (chat_prompt(q, &(*ids)[p], &(*lens)[p], e)) return -1;
        } else if (q->ar.prompts[p].ids) {
            struct api_prompt *ap = &q->ar.prompts[p];
            (*ids)[p] = pg_malloc((size_t)ap->n_ids * sizeof(int32_t));
            memcpy((*ids)[p], ap->ids, (size_t)ap->n_ids * sizeof(int32_t));
            (*lens)[p] = ap->n_ids;
        } else if (m->encode(m->ctx, q->ar.prompts[p].text, q->ar.prompts[p].text_len, true,
                             &(*ids)[p], &(*lens)[p], err)) {
            api_error_set(e, 400, "prompt", "tokenizer: %s", err);
            return -1;
        }
        if (api_check_length(&q->ar, (*lens)[p], &q->srv->cfg.limits, e)) return -1;
    }
    return np;
}

static void setup_subs(struct req *q, int np, int32_t **ids, int *lens) {
    int n = q->ar.gen.n;
    q->subs = pg_calloc((size_t)np, sizeof *q->subs);
    q->choices = pg_calloc((size_t)(np * n), sizeof *q->choices);
    q->n_subs = np;
    q->n_choices = np * n;
    for (int p = 0; p < np; p++) {
        struct sub *s = &q->subs[p];
        s->req = q;
        s->first_choice = p * n;
        s->n_live = n;
        s->n_prompt = lens[p];
        if (q->ar.echo) {
            if (q->ar.prompts[p].text) {
                s->echo = pg_malloc(q->ar.prompts[p].text_len + 1);
                memcpy(s->echo, q->ar.prompts[p].text, q->ar.prompts[p].text_len);
                s->echo_len = q->ar.prompts[p].text_len;
            } else {
                s->echo = q->model->decode(q->model->ctx, ids[p], lens[p], false, &s->echo_len);
            }
        }
        for (int i = 0; i < n; i++) {
            struct choice *c = &q->choices[p * n + i];
            c->sub = s;
            c->index = p * n + i;
            c->stop_token = -1;
            hermes_init(&c->hermes);
        }
    }
}

// Queues every prompt in the engine. Returns 0, or -1 with e (earlier ones aborted).
static int add_all(struct req *q, int32_t **ids, int *lens, struct grammar *g,
                   struct api_error *e) {
    const struct server_model *m = q->model;
    pthread_mutex_lock(&q->mu);
    q->n_live_subs = q->n_subs;
    pthread_mutex_unlock(&q->mu);
    for (int p = 0; p < q->n_subs; p++) {
        struct gen_request r = q->ar.gen;
        r.prompt = ids[p];
        r.n_prompt = lens[p];
        if (!q->ar.max_tokens_given) // up to the context, per prompt of a batch
            r.max_tokens = q->srv->cfg.limits.max_model_len - lens[p];
        r.grammar = g;
        r.on_output = on_output;
        r.user = &q->subs[p];
        char err[PG_ERR_LEN] = "";
        uint64_t id = 0;
        pthread_mutex_lock(&q->mu);
        q->refs++;
        pthread_mutex_unlock(&q->mu);
        int rc = m->add(m->ctx, &r, &id, err);
        pthread_mutex_lock(&q->mu);
        if (rc == ENGINE_OK) {
            q->subs[p].added = true;
            q->subs[p].engine_id = id;
            pthread_mutex_unlock(&q->mu);
            continue;
        }
        q->refs--;
        q->n_live_subs -= q->n_subs - p;
        for (int k = p; k < q->n_subs; k++) q->subs[k].done = true;
        pthread_mutex_unlock(&q->mu);
        for (int k = 0; k < p; k++) m->abort(m->ctx, q->subs[k].engine_id);
        if (rc == ENGINE_EBUSY) {
            api_error_set(e, 503, NULL, "the server is overloaded (waiting queue full): %s", err);
            e->retry_after = 1;
        } else if (rc == ENGINE_ECLOSED) {
            api_error_set(e, 503, NULL, "the server is shutting down");
            e->retry_after = 1;
        } else {
            api_error_set(e, 400, NULL, "%s", err[0] ? err : "invalid request");
        }
        return -1;
    }
    return 0;
}

void gen_job(void *arg) {
    struct req *q = arg;
    struct api_error e = {0};
    int32_t **ids = NULL;
    int *lens = NULL, np = 0;
    struct grammar *g = NULL;
    json_t *body = NULL;
    bool ok = false;
    if (atomic_load(&q->srv->draining)) {
        api_error_set(&e, 503, NULL, "the server is shutting down");
        e.retry_after = 1;
        goto done;
    }
    body = parse_body(q, &e);
    if (!body) goto done;
    if (api_request_parse(&q->ar, q->route == R_CHAT ? API_CHAT : API_COMPLETION, body,
                          &q->srv->cfg.limits, &e))
        goto done;
    if (q->ar.echo && q->ar.logprobs) {
        api_error_set(&e, 400, "echo", "'echo' together with 'logprobs' is not supported");
        goto done;
    }
    np = build_prompts(q, &ids, &lens, &e);
    if (np < 0 || get_grammar(q, &g, &e)) goto done;
    setup_subs(q, np, ids, lens);
    if (add_all(q, ids, lens, g, &e)) goto done;
    ok = true;
done:
    if (g) q->model->grammar_release(q->model->ctx, g);
    for (int p = 0; ids && p < (np > 0 ? np : (q->route == R_CHAT ? 1 : q->ar.n_prompts)); p++)
        free(ids[p]);
    free(ids);
    free(lens);
    json_decref(body);
    pthread_mutex_lock(&q->mu);
    if (!ok) req_reply_error(q, &e);
    else q->phase = q->ar.stream ? P_STREAM : P_ENGINE;
    bool wake = (q->phase != P_ENGINE || q->n_live_subs == 0) && req_wake(q);
    pthread_mutex_unlock(&q->mu);
    if (wake) MHD_resume_connection(q->conn);
}

// ---- engine callback (engine thread: append, account, wake; no JSON here) -----------------------

static bool peer_closed(int fd) {
    if (fd < 0) return false;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0; // orderly shutdown by the client (errors: the HTTP thread will notice)
}

static void choice_append(struct choice *c, const struct engine_output *o) {
    if (o->text_len) {
        if (c->pend_len + o->text_len + 1 > c->pend_cap) {
            c->pend_cap = (c->pend_len + o->text_len + 1) * 2;
            c->pend = pg_realloc(c->pend, c->pend_cap);
        }
        memcpy(c->pend + c->pend_len, o->text, o->text_len);
        c->pend_len += o->text_len;
        c->pend[c->pend_len] = 0;
    }
    if (o->logprobs && o->n_tokens > 0) {
        if (c->n_pend_lp + o->n_tokens > c->cap_lp) {
            c->cap_lp = (c->n_pend_lp + o->n_tokens) * 2;
            c->pend_lp = pg_realloc(c->pend_lp, (size_t)c->cap_lp * sizeof *c->pend_lp);
        }
        memcpy(c->pend_lp + c->n_pend_lp, o->logprobs, (size_t)o->n_tokens * sizeof *o->logprobs);
        c->n_pend_lp += o->n_tokens;
    }
}

static void observe(struct metrics *m, struct choice *c, const struct engine_output *o) {
    if (o->n_tokens > 0) {
        if (c->n_out == 0 && c->index == c->sub->first_choice)
            metrics_observe(m, HIST_TTFT, o->t_first_token - o->t_arrival);
        else if (c->t_last > 0)
            metrics_observe(m, HIST_ITL, (o->t_now - c->t_last) / o->n_tokens);
        c->t_last = o->t_now;
    }
}

static void on_output(void *user, const struct engine_output *o) {
    struct sub *s = user;
    struct req *q = s->req;
    struct metrics *m = &q->srv->metrics;
    uint64_t abort_id = 0;
    bool release = false, wake = false;
    pthread_mutex_lock(&q->mu);
    s->engine_id = o->req_id;
    if (o->index < 0 || o->index >= q->ar.gen.n) { // broken engine contract: ignore
        pthread_mutex_unlock(&q->mu);
        return;
    }
    struct choice *c = &q->choices[s->first_choice + o->index];
    if (c->finished) {
        pthread_mutex_unlock(&q->mu);
        return;
    }
    choice_append(c, o);
    observe(m, c, o);
    c->n_out = o->n_output_tokens;
    s->n_prompt = o->n_prompt_tokens;
    s->n_cached = o->n_cached_tokens;
    if (o->finish != FINISH_NONE) {
        c->finished = true;
        c->finish = o->finish;
        c->stop_token = o->stop_token;
        if (o->stop_reason) c->stop_str = pg_strdup(o->stop_reason);
        if (--s->n_live == 0) {
            s->done = true;
            q->n_live_subs--;
            release = true;
            metrics_observe(m, HIST_E2E, o->t_now - o->t_arrival);
            if (o->t_scheduled > 0) metrics_observe(m, HIST_QUEUE, o->t_scheduled - o->t_arrival);
        }
    } else if (!q->conn_closed && peer_closed(q->fd)) {
        abort_id = o->req_id;
    } else if (q->ar.stream && c->pend_len > STALLED_STREAM_BYTES) {
        // the client stopped reading: free the engine's resources now rather than at the
        // connection timeout
        pg_warn("request %s: client not reading its stream, aborting", q->id);
        abort_id = o->req_id;
    }
    if (q->phase == P_SENT && q->ar.stream) wake = req_wake(q);
    else if (q->phase == P_ENGINE && q->n_live_subs == 0) wake = req_wake(q);
    pthread_mutex_unlock(&q->mu);
    if (wake) MHD_resume_connection(q->conn);
    if (abort_id) q->model->abort(q->model->ctx, abort_id);
    if (release) req_unref(q);
}

// ---- response building (HTTP thread, q->mu held) ----------------------------------------------

static uint64_t call_seed(struct req *q, struct choice *c, int k) {
    return pg_mix64((uint64_t)q->created ^ ((uint64_t)c->index << 32) ^ (uint64_t)k) ^
           (uint64_t)(uintptr_t)q;
}

// Splits the pending text into content and tool calls per the request's tool mode, consuming
// it. calls gets {"name", "arguments"}; for TOOLS_NAMED the text is the arguments (content
// stays empty, *named_args gets it).
static void take_text(struct req *q, struct choice *c, bool final, char **content, size_t *clen,
                      json_t *calls) {
    enum tool_mode mode = q->ar.tool_mode;
    *content = NULL;
    *clen = 0;
    if (mode == TOOLS_REQUIRED) {
        if (!final) return; // the whole array is parsed at the end
        if (tool_forced_parse(c->pend ? c->pend : "", c->pend_len, NULL, calls) &&
            c->pend_len) {
            json_array_clear(calls);
            *content = pg_malloc(c->pend_len + 1);
            memcpy(*content, c->pend, c->pend_len + 1);
            *clen = c->pend_len;
        }
    } else if (mode == TOOLS_AUTO) {
        if (c->pend_len) hermes_feed(&c->hermes, c->pend, c->pend_len, content, clen, calls);
        if (final) hermes_finish(&c->hermes, content, clen, calls);
    } else if (c->pend_len) {
        *content = pg_malloc(c->pend_len + 1);
        memcpy(*content, c->pend, c->pend_len + 1);
        *clen = c->pend_len;
    }
    c->pend_len = 0;
}

static json_t *chunk_base(struct req *q, const char *object) {
    return json_pack("{s:s, s:s, s:I, s:s, s:[]}", "id", q->id, "object", object, "created",
                     (json_int_t)q->created, "model", q->srv->cfg.limits.model_name, "choices");
}

static json_t *logprobs_json(struct req *q, struct choice *c) {
    if (!q->ar.logprobs || !c->n_pend_lp) return NULL;
    const struct server_model *m = q->model;
    json_t *lp;
    if (q->route == R_CHAT) {
        json_t *content = json_array();
        resp_chat_logprobs(content, c->pend_lp, c->n_pend_lp, q->ar.top_logprobs, m->token_bytes,
                           m->ctx);
        lp = json_pack("{s:o}", "content", content);
    } else {
        lp = resp_completion_logprobs_new();
        resp_completion_logprobs(lp, c->pend_lp, c->n_pend_lp, q->ar.top_logprobs,
                                 m->token_bytes, m->ctx, &c->text_offset);
    }
    c->n_pend_lp = 0;
    return lp;
}

static int usage_totals(struct req *q, int *prompt, int *completion, int *cached) {
    *prompt = *completion = *cached = 0;
    for (int i = 0; i < q->n_subs; i++) *prompt += q->subs[i].n_prompt, *cached += q->subs[i].n_cached;
    for (int i = 0; i < q->n_choices; i++) *completion += q->choices[i].n_out;
    return 0;
}

static json_t *usage_json(struct req *q) {
    int p, c, k;
    usage_totals(q, &p, &c, &k);
    return resp_usage(p, c, k);
}

// The chat delta (content / tool calls) of one choice; NULL when there is nothing to say.
static json_t *chat_delta(struct req *q, struct choice *c, bool final) {
    json_t *delta = json_object(), *calls = json_array();
    char *content;
    size_t clen;
    if (q->ar.tool_mode == TOOLS_NAMED) {
        if (!c->named_started || c->pend_len) {
            json_t *call = json_pack("{s:s, s:o}", "name", q->ar.tool_name, "arguments",
                                     resp_text(c->pend, c->pend_len));
            json_t *tc = resp_tool_call(call, 0, call_seed(q, c, 0));
            json_decref(call);
            if (c->named_started) { // later deltas carry only argument text
                json_object_del(tc, "id");
                json_object_del(tc, "type");
                json_object_del(json_object_get(tc, "function"), "name");
            }
            c->named_started = true;
            json_object_set_new(delta, "tool_calls", json_pack("[o]", tc));
        }
        c->pend_len = 0;
    } else {
        take_text(q, c, final, &content, &clen, calls);
        if (clen) json_object_set_new(delta, "content", resp_text(content, clen));
        free(content);
        if (json_array_size(calls)) {
            json_t *tcs = json_array(), *call;
            size_t i;
            json_array_foreach(calls, i, call) {
                json_array_append_new(tcs, resp_tool_call(call, c->n_calls_sent,
                                                          call_seed(q, c, c->n_calls_sent)));
                c->n_calls_sent++;
            }
            json_object_set_new(delta, "tool_calls", tcs);
        }
    }
    json_decref(calls);
    return delta;
}

static void stream_choice(struct req *q, struct choice *c) {
    bool chat = q->route == R_CHAT;
    bool final = c->finished && !c->final_sent;
    if (!c->pend_len && !c->n_pend_lp && !final && (!chat || c->role_sent)) return;
    json_t *chunk;
    if (chat && !c->role_sent) {
        chunk = chunk_base(q, "chat.completion.chunk");
        json_array_append_new(json_object_get(chunk, "choices"),
                              json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", c->index,
                                        "delta", "role", "assistant", "content", "", "logprobs",
                                        "finish_reason"));
        if (q->ar.include_usage) json_object_set_new(chunk, "usage", json_null());
        resp_sse(&q->out, &q->out_len, &q->out_cap, chunk);
        json_decref(chunk);
        c->role_sent = true;
    }
    json_t *ch;
    if (chat) {
        json_t *delta = chat_delta(q, c, final);
        if (!json_object_size(delta) && !c->n_pend_lp && !final) {
            json_decref(delta);
            return;
        }
        ch = json_pack("{s:i, s:o}", "index", c->index, "delta", delta);
    } else {
        size_t el = q->ar.echo && !c->role_sent && c->sub->echo ? c->sub->echo_len : 0;
        char *t = pg_malloc(el + c->pend_len + 1);
        if (el) memcpy(t, c->sub->echo, el);
        if (c->pend_len) memcpy(t + el, c->pend, c->pend_len);
        c->role_sent = true; // (completions: "echo sent")
        ch = json_pack("{s:i, s:o}", "index", c->index, "text", resp_text(t, el + c->pend_len));
        free(t);
        c->pend_len = 0;
    }
    json_t *lp = logprobs_json(q, c);
    json_object_set_new(ch, "logprobs", lp ? lp : json_null());
    const char *fr = final ? resp_finish(c->finish, c->n_calls_sent > 0 &&
                                                        q->ar.tool_mode != TOOLS_NAMED) : NULL;
    json_object_set_new(ch, "finish_reason", fr ? json_string(fr) : json_null());
    if (final) {
        json_object_set_new(ch, "stop_reason",
                            c->stop_str ? json_string(c->stop_str)
                            : c->stop_token >= 0 ? json_integer(c->stop_token) : json_null());
        c->final_sent = true;
    }
    chunk = chunk_base(q, chat ? "chat.completion.chunk" : "text_completion");
    json_array_append_new(json_object_get(chunk, "choices"), ch);
    if (q->ar.include_usage)
        json_object_set_new(chunk, "usage", q->ar.continuous_usage ? usage_json(q) : json_null());
    resp_sse(&q->out, &q->out_len, &q->out_cap, chunk);
    json_decref(chunk);
}

static bool all_done(struct req *q) { return q->n_live_subs == 0; }

static void stream_fill(struct req *q) {
    for (int i = 0; i < q->n_choices; i++) {
        struct choice *c = &q->choices[i];
        if (c->finished && c->finish == FINISH_ERROR && !c->final_sent) {
            struct api_error e;
            api_error_set(&e, 500, NULL, "the engine failed while generating (see the server "
                          "log)");
            json_t *j = api_error_json(&e);
            resp_sse(&q->out, &q->out_len, &q->out_cap, j);
            json_decref(j);
        }
        stream_choice(q, c);
    }
    if (all_done(q) && !q->done_sent) {
        if (q->ar.include_usage) {
            json_t *chunk = chunk_base(q, q->route == R_CHAT ? "chat.completion.chunk"
                                                            : "text_completion");
            json_object_set_new(chunk, "usage", usage_json(q));
            resp_sse(&q->out, &q->out_len, &q->out_cap, chunk);
            json_decref(chunk);
        }
        resp_sse_raw(&q->out, &q->out_len, &q->out_cap, "data: [DONE]\n\n");
        q->done_sent = true;
    }
}

ssize_t gen_stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    struct req *q = cls;
    pthread_mutex_lock(&q->mu);
    if (q->out_pos == q->out_len) {
        q->out_pos = q->out_len = 0;
        stream_fill(q);
    }
    ssize_t n;
    if (q->out_pos < q->out_len) {
        n = (ssize_t)(q->out_len - q->out_pos < max ? q->out_len - q->out_pos : max);
        memcpy(buf, q->out + q->out_pos, (size_t)n);
        q->out_pos += (size_t)n;
    } else if (q->done_sent) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else { // nothing yet: park the connection until the engine's next output
        q->suspended = true;
        MHD_suspend_connection(q->conn);
        n = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}

static json_t *reply_choice(struct req *q, struct choice *c) {
    json_t *ch;
    if (q->route == R_CHAT) {
        json_t *delta = chat_delta(q, c, true);
        json_t *msg = json_pack("{s:s, s:O}", "role", "assistant", "content",
                                json_object_get(delta, "content") ? json_object_get(delta,
                                "content") : json_null());
        json_t *tcs = json_object_get(delta, "tool_calls"), *tc;
        size_t i;
        if (tcs) {
            json_array_foreach(tcs, i, tc) json_object_del(tc, "index");
            json_object_set(msg, "tool_calls", tcs);
        }
        json_decref(delta);
        ch = json_pack("{s:i, s:o}", "index", c->index, "message", msg);
    } else {
        size_t el = q->ar.echo && c->sub->echo ? c->sub->echo_len : 0;
        char *t = pg_malloc(el + c->pend_len + 1);
        if (el) memcpy(t, c->sub->echo, el);
        if (c->pend_len) memcpy(t + el, c->pend, c->pend_len);
        ch = json_pack("{s:i, s:o}", "index", c->index, "text", resp_text(t, el + c->pend_len));
        free(t);
        c->pend_len = 0;
    }
    json_t *lp = logprobs_json(q, c);
    json_object_set_new(ch, "logprobs", lp ? lp : json_null());
    json_object_set_new(ch, "finish_reason",
                        json_string(resp_finish(c->finish, c->n_calls_sent > 0 &&
                                                               q->ar.tool_mode != TOOLS_NAMED)));
    json_object_set_new(ch, "stop_reason",
                        c->stop_str ? json_string(c->stop_str)
                        : c->stop_token >= 0 ? json_integer(c->stop_token) : json_null());
    return ch;
}

void gen_build_reply(struct req *q) {
    for (int i = 0; i < q->n_choices; i++) {
        if (q->choices[i].finish == FINISH_ERROR) {
            struct api_error e;
            api_error_set(&e, 500, NULL, "the engine failed while generating (see the server log)");
            req_reply_error(q, &e);
            return;
        }
    }
    json_t *r = chunk_base(q, q->route == R_CHAT ? "chat.completion" : "text_completion");
    for (int i = 0; i < q->n_choices; i++)
        json_array_append_new(json_object_get(r, "choices"), reply_choice(q, &q->choices[i]));
    json_object_set_new(r, "usage", usage_json(q));
    req_reply_json(q, 200, r);
}

void gen_free(struct req *q) {
    for (int i = 0; i < q->n_choices; i++) {
        struct choice *c = &q->choices[i];
        free(c->pend);
        free(c->pend_lp);
        free(c->stop_str);
        hermes_free(&c->hermes);
    }
    for (int i = 0; i < q->n_subs; i++) free(q->subs[i].echo);
    free(q->choices);
    free(q->subs);
}

// ---- /tokenize, /detokenize, /v1/embeddings (pool jobs) ----------------------------------------

static int do_tokenize(struct req *q, json_t *body, struct api_error *e) {
    const struct server_model *m = q->model;
    struct api_limits *lim = &q->srv->cfg.limits;
    int32_t *ids = NULL;
    int n = 0;
    if (json_object_get(body, "messages")) {
        json_t *copy = json_copy(body);
        json_object_del(copy, "add_special_tokens");
        int rc = api_request_parse(&q->ar, API_CHAT, copy, lim, e);
        json_decref(copy);
        if (rc || chat_prompt(q, &ids, &n, e)) return -1;
    } else {
        static const char *const allowed[] = {"model", "prompt", "add_special_tokens", NULL};
        if (api_check_fields(body, allowed, NULL, e)) return -1;
        json_t *p = json_object_get(body, "prompt"), *model = json_object_get(body, "model");
        if (!json_is_string(p)) {
            api_error_set(e, 400, "prompt", "'prompt' (a string) or 'messages' is required");
            return -1;
        }
        if (json_is_string(model) && strcmp(json_string_value(model), lim->model_name)) {
            api_error_set(e, 404, "model", "The model '%.200s' does not exist",
                          json_string_value(model));
            return -1;
        }
        char err[PG_ERR_LEN] = "";
        if (m->encode(m->ctx, json_string_value(p), json_string_length(p), true, &ids, &n, err)) {
            api_error_set(e, 400, "prompt", "tokenizer: %s", err);
            return -1;
        }
    }
    json_t *toks = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(toks, json_integer(ids[i]));
    free(ids);
    req_reply_json(q, 200, json_pack("{s:i, s:i, s:o, s:n}", "count", n, "max_model_len",
                                     lim->max_model_len, "tokens", toks, "token_strs"));
    return 0;
}

static int do_detokenize(struct req *q, json_t *body, struct api_error *e) {
    static const char *const allowed[] = {"model", "tokens", NULL};
    if (api_check_fields(body, allowed, NULL, e)) return -1;
    json_t *t = json_object_get(body, "tokens");
    if (!json_is_array(t)) {
        api_error_set(e, 400, "tokens", "'tokens' (an array of token ids) is required");
        return -1;
    }
    size_t n = json_array_size(t);
    int32_t *ids = pg_malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(t, i);
        json_int_t v = json_is_integer(x) ? json_integer_value(x) : -1;
        if (v < 0 || v >= q->srv->cfg.limits.vocab) {
            free(ids);
            api_error_set(e, 400, "tokens", "tokens[%zu] is not a token id in [0, %d)", i,
                          q->srv->cfg.limits.vocab);
            return -1;
        }
        ids[i] = (int32_t)v;
    }
    size_t len = 0;
    char *text = q->model->decode(q->model->ctx, ids, (int)n, false, &len);
    free(ids);
    req_reply_json(q, 200, json_pack("{s:o}", "prompt", resp_text(text, len)));
    free(text);
    return 0;
}

static char *base64(const unsigned char *p, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = pg_malloc((n + 2) / 3 * 4 + 1), *w = o;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *w++ = t[v >> 18 & 63];
        *w++ = t[v >> 12 & 63];
        *w++ = i + 1 < n ? t[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? t[v & 63] : '=';
    }
    *w = 0;
    return o;
}

static int do_embeddings(struct req *q, json_t *body, struct api_error *e) {
    static const char *const allowed[] = {"model", "input", "encoding_format", "dimensions",
                                          "user", NULL};
    const struct server_model *m = q->model;
    if (api_check_fields(body, allowed, NULL, e)) return -1;
    json_t *in = json_object_get(body, "input"), *model = json_object_get(body, "model");
    json_t *fmt = json_object_get(body, "encoding_format"), *dims = json_object_get(body, "dimensions");
    if (json_is_string(model) && strcmp(json_string_value(model), q->srv->cfg.limits.model_name)) {
        api_error_set(e, 404, "model", "The model '%.200s' does not exist", json_string_value(model));
        return -1;
    }
    bool b64 = json_is_string(fmt) && !strcmp(json_string_value(fmt), "base64");
    if (fmt && !json_is_null(fmt) && !b64 &&
        !(json_is_string(fmt) && !strcmp(json_string_value(fmt), "float"))) {
        api_error_set(e, 400, "encoding_format", "'encoding_format' must be float or base64");
        return -1;
    }
    if (dims && !json_is_null(dims) && (!json_is_integer(dims) ||
                                        json_integer_value(dims) != m->embed_dim)) {
        api_error_set(e, 400, "dimensions", "this model only produces %d dimensions", m->embed_dim);
        return -1;
    }
    size_t n = json_is_string(in) ? 1 : json_array_size(in);
    if (!n || n > 2048) {
        api_error_set(e, 400, "input", "'input' must be a string or 1 to 2048 strings");
        return -1;
    }
    const char **texts = pg_calloc(n, sizeof *texts);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_is_string(in) ? in : json_array_get(in, i);
        if (!json_is_string(x)) {
            free(texts);
            api_error_set(e, 400, "input", "'input' must be a string or an array of strings");
            return -1;
        }
        texts[i] = json_string_value(x);
    }
    float *out = pg_malloc(n * (size_t)m->embed_dim * sizeof *out);
    int n_tok = 0;
    char err[PG_ERR_LEN] = "";
    int rc = m->embed(m->ctx, texts, (int)n, out, &n_tok, err);
    free(texts);
    if (rc) {
        free(out);
        api_error_set(e, 400, "input", "%s", err);
        return -1;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++) {
        float *v = out + i * (size_t)m->embed_dim;
        json_t *emb;
        if (b64) {
            char *s = base64((const unsigned char *)v, (size_t)m->embed_dim * sizeof(float));
            emb = json_string(s);
            free(s);
        } else {
            emb = json_array();
            for (int d = 0; d < m->embed_dim; d++) json_array_append_new(emb, json_real(v[d]));
        }
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding",
                                              "index", (int)i, "embedding", emb));
    }
    free(out);
    req_reply_json(q, 200, json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data",
                                     data, "model", q->srv->cfg.limits.model_name, "usage",
                                     "prompt_tokens", n_tok, "total_tokens", n_tok));
    return 0;
}

// POST /v1/structured_outputs/warmup: compiles a constraint into the grammar cache and pre-fills
// its masks, generating nothing, so that the first real request with it pays nothing.
static int do_warmup(struct req *q, json_t *body, struct api_error *e) {
    const struct server_model *m = q->model;
    struct api_request r;
    int rc = -1;
    if (api_structured_parse(&r, body, &q->srv->cfg.limits, e)) goto done;
    char err[PG_ERR_LEN] = "";
    double t0 = pg_now();
    if (m->grammar_warmup) {
        if (m->grammar_warmup(m->ctx, r.grammar_kind, r.grammar_spec, r.grammar_spec_len,
                              r.whitespace_pattern, err)) {
            api_error_set(e, 400, r.grammar_param, "'%s': %s", r.grammar_param, err);
            goto done;
        }
    } else {
        struct grammar *g = m->grammar_get(m->ctx, r.grammar_kind, r.grammar_spec,
                                           r.grammar_spec_len, r.whitespace_pattern, err);
        if (!g) {
            api_error_set(e, 400, r.grammar_param, "'%s': %s", r.grammar_param, err);
            goto done;
        }
        m->grammar_release(m->ctx, g);
    }
    req_reply_json(q, 200, json_pack("{s:s, s:s, s:f}", "object", "structured_outputs.warmup",
                                     "constraint", r.grammar_param, "seconds", pg_now() - t0));
    rc = 0;
done:
    api_request_free(&r);
    return rc;
}

void tokenize_job(void *arg) {
    struct req *q = arg;
    struct api_error e = {0};
    json_t *body = parse_body(q, &e);
    int rc = -1;
    if (body && !json_is_object(body)) api_error_set(&e, 400, NULL, "the body must be an object");
    else if (body && q->route == R_TOKENIZE) rc = do_tokenize(q, body, &e);
    else if (body && q->route == R_DETOKENIZE) rc = do_detokenize(q, body, &e);
    else if (body && q->route == R_WARMUP) rc = do_warmup(q, body, &e);
    else if (body) rc = do_embeddings(q, body, &e);
    json_decref(body);
    pthread_mutex_lock(&q->mu);
    if (rc) req_reply_error(q, &e);
    bool wake = req_wake(q);
    pthread_mutex_unlock(&q->mu);
    if (wake) MHD_resume_connection(q->conn);
}
