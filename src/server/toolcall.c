// Hermes tool-call parser (see toolcall.h).
#include "server/toolcall.h"

#include <stdlib.h>
#include <string.h>

static const char OPEN[] = "<tool_call>", CLOSE[] = "</tool_call>";

void hermes_init(struct hermes *h) { memset(h, 0, sizeof *h); }
void hermes_free(struct hermes *h) { free(h->buf); memset(h, 0, sizeof *h); }

static void append(char **dst, size_t *len, const char *s, size_t n) {
    if (!n) return;
    *dst = pg_realloc(*dst, *len + n + 1);
    memcpy(*dst + *len, s, n);
    *len += n;
    (*dst)[*len] = 0;
}

static void buf_append(struct hermes *h, const char *s, size_t n) {
    if (h->len + n + 1 > h->cap) {
        h->cap = (h->len + n + 1) * 2;
        h->buf = pg_realloc(h->buf, h->cap);
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
    h->buf[h->len] = 0;
}

static void buf_consume(struct hermes *h, size_t n) {
    memmove(h->buf, h->buf + n, h->len - n);
    h->len -= n;
    h->buf[h->len] = 0;
}

// Longest suffix of s[0..n) that is a proper prefix of tag.
static size_t partial_tag(const char *s, size_t n, const char *tag) {
    size_t tl = strlen(tag);
    for (size_t k = tl - 1 < n ? tl - 1 : n; k > 0; k--)
        if (!memcmp(s + n - k, tag, k)) return k;
    return 0;
}

static void *memmem_s(const char *h, size_t hl, const char *n) {
    return memmem(h, hl, n, strlen(n));
}

// body -> {"name", "arguments" (text)}; NULL unless it is an object with a string name.
static json_t *parse_call(const char *body, size_t len) {
    json_t *o = json_loadb(body, len, 0, NULL);
    json_t *name = json_object_get(o, "name");
    if (!json_is_object(o) || !json_is_string(name)) {
        json_decref(o);
        return NULL;
    }
    json_t *args = json_object_get(o, "arguments");
    if (!args) args = json_object_get(o, "parameters");
    char *text = args ? json_dumps(args, JSON_ENCODE_ANY | JSON_COMPACT) : pg_strdup("{}");
    json_t *call = json_pack("{s:O, s:s}", "name", name, "arguments", text ? text : "{}");
    free(text);
    json_decref(o);
    return call;
}

void hermes_feed(struct hermes *h, const char *text, size_t len, char **content,
                 size_t *content_len, json_t *calls) {
    buf_append(h, text, len);
    for (;;) {
        if (!h->in_call) {
            char *p = memmem_s(h->buf, h->len, OPEN);
            if (p) {
                append(content, content_len, h->buf, (size_t)(p - h->buf));
                buf_consume(h, (size_t)(p - h->buf) + strlen(OPEN));
                h->in_call = true;
                continue;
            }
            size_t keep = partial_tag(h->buf, h->len, OPEN);
            append(content, content_len, h->buf, h->len - keep);
            buf_consume(h, h->len - keep);
            return;
        }
        char *p = memmem_s(h->buf, h->len, CLOSE);
        if (!p) return;
        size_t body = (size_t)(p - h->buf);
        json_t *call = parse_call(h->buf, body);
        if (call) {
            json_array_append_new(calls, call);
            h->n_calls++;
        } else { // not a call after all: give the text back verbatim
            append(content, content_len, OPEN, strlen(OPEN));
            append(content, content_len, h->buf, body + strlen(CLOSE));
        }
        buf_consume(h, body + strlen(CLOSE));
        h->in_call = false;
    }
}

void hermes_finish(struct hermes *h, char **content, size_t *content_len, json_t *calls) {
    if (h->in_call) {
        json_t *call = parse_call(h->buf, h->len);
        if (call) {
            json_array_append_new(calls, call);
            h->n_calls++;
        } else {
            append(content, content_len, OPEN, strlen(OPEN));
            append(content, content_len, h->buf, h->len);
        }
    } else {
        append(content, content_len, h->buf, h->len);
    }
    h->len = 0;
    h->in_call = false;
}

int tool_forced_parse(const char *text, size_t len, const char *named, json_t *calls) {
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY, NULL);
    if (!v) return -1;
    int rc = 0;
    if (named) {
        char *args = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        json_array_append_new(calls, json_pack("{s:s, s:s}", "name", named, "arguments", args));
        free(args);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) {
            char *s = json_dumps(c, JSON_COMPACT);
            json_t *call = s ? parse_call(s, strlen(s)) : NULL;
            free(s);
            if (!call) { rc = -1; break; }
            json_array_append_new(calls, call);
        }
    } else {
        rc = -1;
    }
    json_decref(v);
    return rc;
}
