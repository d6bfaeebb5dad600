// In-place JSON parser (see tok_jsonlite.h).
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_jsonlite.h"

#define JL_MAX_DEPTH 128

struct jp {
    struct jl_doc *d;
    char *start, *p, *end;
    char *err;
    int depth;
};

static int fail(struct jp *j, const char *what) {
    pg_seterr(j->err, "JSON: %s at byte %td", what, j->p - j->start);
    return -1;
}

static void skip_ws(struct jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static int32_t new_node(struct jp *j, uint8_t type) {
    struct jl_doc *d = j->d;
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 1024;
        d->nodes = pg_realloc(d->nodes, (size_t)d->cap * sizeof *d->nodes);
    }
    d->nodes[d->n] = (struct jl_node){.type = type, .first = -1, .next = -1};
    return d->n++;
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if ((c | 32) >= 'a' && (c | 32) <= 'f') v |= (uint32_t)((c | 32) - 'a' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static char *put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

// j->p at the opening quote. Unescapes in place; the result starts at the opening quote + 1.
static int parse_string(struct jp *j, int32_t *out) {
    char *start = ++j->p, *o = start;
    for (;;) {
        if (j->p >= j->end) return fail(j, "unterminated string");
        char c = *j->p;
        if (c == '"') break;
        if ((unsigned char)c < 0x20) return fail(j, "control character in string");
        if (c != '\\') {
            *o++ = c;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2) return fail(j, "bad escape");
        char e = j->p[1];
        j->p += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (j->end - j->p < 4 || hex4(j->p, &cp)) return fail(j, "bad \\u escape");
            j->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { // a surrogate pair (6 escaped bytes -> 4 out)
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return fail(j, "unpaired surrogate");
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(j, "unpaired surrogate");
            }
            if (cp == 0) return fail(j, "\\u0000 in string");
            o = put_utf8(o, cp);
            break;
        }
        default: return fail(j, "bad escape");
        }
    }
    *o = 0; // o <= the closing quote: the string shrank or kept its size
    j->p++;
    int32_t n = new_node(j, JL_STR);
    j->d->nodes[n].s = start;
    j->d->nodes[n].len = (uint32_t)(o - start);
    *out = n;
    return 0;
}

static int parse_number(struct jp *j, int32_t *out) {
    char *s = j->p;
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return fail(j, "bad number");
    if (*j->p == '0') j->p++;
    else
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return fail(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return fail(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    int32_t n = new_node(j, JL_NUM);
    j->d->nodes[n].s = s;
    j->d->nodes[n].len = (uint32_t)(j->p - s);
    *out = n;
    return 0;
}

static int parse_value(struct jp *j, int32_t *out);

// Arrays and objects: children are linked by index as they are parsed.
static int parse_container(struct jp *j, int32_t *out, bool obj) {
    if (++j->depth > JL_MAX_DEPTH) return fail(j, "nesting too deep");
    j->p++;
    int32_t n = new_node(j, obj ? JL_OBJ : JL_ARR), last = -1;
    uint32_t count = 0;
    skip_ws(j);
    if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
        j->p++;
        j->depth--;
        *out = n;
        return 0;
    }
    for (;;) {
        int32_t k = -1, v;
        skip_ws(j);
        if (obj) {
            if (j->p >= j->end || *j->p != '"') return fail(j, "expected a key");
            if (parse_string(j, &k)) return -1;
            skip_ws(j);
            if (j->p >= j->end || *j->p != ':') return fail(j, "expected ':'");
            j->p++;
        }
        if (parse_value(j, &v)) return -1;
        if (k >= 0) j->d->nodes[k].next = v;
        int32_t head = k >= 0 ? k : v;
        if (last < 0) j->d->nodes[n].first = head;
        else j->d->nodes[last].next = head;
        last = v;
        count++;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == (obj ? '}' : ']')) break;
        return fail(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    j->p++;
    j->d->nodes[n].len = count;
    j->depth--;
    *out = n;
    return 0;
}

static int parse_lit(struct jp *j, const char *lit, uint8_t type, int32_t *out) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return fail(j, "bad literal");
    j->p += n;
    *out = new_node(j, type);
    return 0;
}

static int parse_value(struct jp *j, int32_t *out) {
    skip_ws(j);
    if (j->p >= j->end) return fail(j, "unexpected end");
    switch (*j->p) {
    case '{': return parse_container(j, out, true);
    case '[': return parse_container(j, out, false);
    case '"': return parse_string(j, out);
    case 't': return parse_lit(j, "true", JL_TRUE, out);
    case 'f': return parse_lit(j, "false", JL_FALSE, out);
    case 'n': return parse_lit(j, "null", JL_NULL, out);
    default: return parse_number(j, out);
    }
}

int jl_parse(struct jl_doc *d, char *buf, size_t len, char *err) {
    memset(d, 0, sizeof *d);
    struct jp j = {.d = d, .start = buf, .p = buf, .end = buf + len, .err = err};
    int32_t root;
    if (parse_value(&j, &root)) goto fail;
    skip_ws(&j);
    if (j.p != j.end) {
        fail(&j, "trailing characters");
        goto fail;
    }
    return 0;
fail:
    jl_free(d);
    return -1;
}

void jl_free(struct jl_doc *d) {
    free(d->nodes);
    d->nodes = NULL;
    d->n = d->cap = 0;
}

const struct jl_node *jl_get(const struct jl_doc *d, const struct jl_node *obj, const char *key) {
    if (!obj || obj->type != JL_OBJ) return NULL;
    for (int32_t k = obj->first; k >= 0;) {
        const struct jl_node *kn = &d->nodes[k], *v = &d->nodes[kn->next];
        if (!strcmp(kn->s, key)) return v;
        k = v->next;
    }
    return NULL;
}

const struct jl_node *jl_at(const struct jl_doc *d, const struct jl_node *arr, uint32_t i) {
    if (!arr || arr->type != JL_ARR || i >= arr->len) return NULL;
    const struct jl_node *n = jl_first(d, arr);
    while (i-- && n) n = jl_next(d, n);
    return n;
}

const char *jl_str(const struct jl_node *n) { return n && n->type == JL_STR ? n->s : NULL; }
bool jl_is_true(const struct jl_node *n) { return n && n->type == JL_TRUE; }
bool jl_is_null(const struct jl_node *n) { return !n || n->type == JL_NULL; }

bool jl_int(const struct jl_node *n, int64_t *out) {
    if (!n || n->type != JL_NUM || n->len > 20) return false;
    char tmp[24];
    memcpy(tmp, n->s, n->len);
    tmp[n->len] = 0;
    if (strpbrk(tmp, ".eE")) return false;
    errno = 0;
    char *end;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}
