// Jinja lexer: template text -> tokens, reproducing jinja2 3.x's lexer with trim_blocks
// and lstrip_blocks on (as Hugging Face configures it) and keep_trailing_newline off.
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/jinja.h"

struct lexer {
    struct jarena *arena;
    const char *src;
    size_t n, pos;
    int line;           // line at pos
    bool line_starting; // the last consumed text ended with '\n' (or nothing consumed yet)
    struct jtok *toks;
    int n_toks, cap;
    char *err;
};

static void advance_to(struct lexer *L, size_t to) {
    for (size_t i = L->pos; i < to; i++)
        if (L->src[i] == '\n') L->line++;
    if (to > L->pos) L->line_starting = L->src[to - 1] == '\n';
    L->pos = to;
}

static struct jtok *push(struct lexer *L, enum jtok_type type, const char *s, size_t n, int line) {
    if (L->n_toks == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 256;
        L->toks = pg_realloc(L->toks, (size_t)L->cap * sizeof *L->toks);
    }
    struct jtok *t = &L->toks[L->n_toks++];
    memset(t, 0, sizeof *t);
    t->type = type, t->s = s, t->n = n, t->line = line;
    return t;
}

// Length of the Unicode whitespace code point at s[i..n), or 0.
static int space_at(const char *s, size_t i, size_t n) {
    if (i >= n) return 0;
    uint32_t cp;
    int k = utf8_dec(s + i, n - i, &cp);
    return py_isspace(cp) ? k : 0;
}

static size_t skip_space(const char *s, size_t i, size_t n) {
    int k;
    while ((k = space_at(s, i, n)) > 0) i += (size_t)k;
    return i;
}

// Length of text after Python's str.rstrip().
static size_t rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t i = n - 1;
        while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
        uint32_t cp;
        utf8_dec(s + i, n - i, &cp);
        if (!py_isspace(cp)) break;
        n = i;
    }
    return n;
}

// Applies {%- / lstrip_blocks to the text preceding a tag; emits it.
static void emit_text(struct lexer *L, size_t start, size_t end, char sign, bool lstrip_ok) {
    const char *s = L->src + start;
    size_t n = end - start;
    if (sign == '-') {
        n = rstrip_len(s, n);
    } else if (sign != '+' && lstrip_ok) {
        size_t l_pos = 0;
        for (size_t i = n; i > 0; i--)
            if (s[i - 1] == '\n') { l_pos = i; break; }
        if ((l_pos > 0 || L->line_starting) && l_pos < n && skip_space(s, l_pos, n) == n) n = l_pos;
    }
    if (n > 0) push(L, JT_DATA, s, n, L->line);
}

// Consumes a closing tag's tail: '-' -> all whitespace; '+' -> nothing; else one '\n' if trim.
static size_t end_tail(struct lexer *L, size_t i, char sign, bool trim) {
    if (sign == '-') return skip_space(L->src, i, L->n);
    if (sign != '+' && trim && i < L->n && L->src[i] == '\n') return i + 1;
    return i;
}

static int lex_error(struct lexer *L, int line, const char *fmt, ...) {
    char msg[PG_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pg_seterr(L->err, "line %d: %s", line, msg);
    return -1;
}

// Decodes a string literal body with Python's unicode-escape rules.
static int decode_string(struct lexer *L, const char *s, size_t n, struct jtok *t) {
    char *out = jarena_alloc(L->arena, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) { out[o++] = s[i]; continue; }
        char c = s[++i];
        static const char from[] = "nrtabfv\\'\"", to[] = "\n\r\t\a\b\f\v\\'\"";
        const char *simple = strchr(from, c);
        if (c && simple) {
            out[o++] = to[simple - from];
        } else if (c == '\n') {
            // backslash-newline: line continuation
        } else if (c == 'x' || c == 'u' || c == 'U') {
            int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            uint32_t cp = 0;
            if (i + (size_t)nd >= n)
                return lex_error(L, t->line, "truncated \\%c escape in string literal", c);
            for (int k = 1; k <= nd; k++) {
                char h = s[i + (size_t)k];
                if (!isxdigit((unsigned char)h))
                    return lex_error(L, t->line, "invalid \\%c escape in string literal", c);
                cp = cp * 16 + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return lex_error(L, t->line, "invalid code point in string literal");
            i += (size_t)nd;
            o += (size_t)utf8_enc(cp, out + o);
        } else if (c >= '0' && c <= '7') {
            uint32_t cp = 0;
            int k = 0;
            while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') cp = cp * 8 + (uint32_t)(s[i++] - '0'), k++;
            i--;
            o += (size_t)utf8_enc(cp, out + o);
        } else {
            out[o++] = '\\';
            out[o++] = c;
        }
    }
    out[o] = 0;
    t->s = out, t->n = o;
    return 0;
}

static const char *const OPS[] = {"**", "//", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~",
                                  "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|",
                                  ",", ";"};

// Lexes one token inside a tag at L->pos (whitespace already skipped).
static int lex_token(struct lexer *L, int *depth) {
    const char *s = L->src;
    size_t i = L->pos, n = L->n;
    unsigned char c = (unsigned char)s[i];
    if (isdigit(c)) {
        size_t j = i;
        while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) j++;
        bool is_float = false;
        if (j + 1 < n && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
            is_float = true;
            for (j++; j < n && (isdigit((unsigned char)s[j]) || s[j] == '_');) j++;
        }
        if (j < n && (s[j] == 'e' || s[j] == 'E')) {
            size_t k = j + 1;
            if (k < n && (s[k] == '+' || s[k] == '-')) k++;
            if (k < n && isdigit((unsigned char)s[k])) {
                is_float = true;
                for (j = k; j < n && (isdigit((unsigned char)s[j]) || s[j] == '_');) j++;
            }
        }
        char buf[64];
        size_t m = 0;
        for (size_t k = i; k < j && m < sizeof buf - 1; k++)
            if (s[k] != '_') buf[m++] = s[k];
        buf[m] = 0;
        struct jtok *t = push(L, is_float ? JT_FLOAT : JT_INT, s + i, j - i, L->line);
        if (is_float) {
            t->fval = strtod(buf, NULL);
        } else {
            char *e;
            t->ival = strtoll(buf, &e, 10);
            if (m >= 19 && (t->ival == LLONG_MAX)) return lex_error(L, t->line, "integer literal too large");
        }
        advance_to(L, j);
        return 0;
    }
    if (isalpha(c) || c == '_') {
        size_t j = i;
        while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
        push(L, JT_NAME, s + i, j - i, L->line);
        advance_to(L, j);
        return 0;
    }
    if (c == '\'' || c == '"') {
        size_t j = i + 1;
        while (j < n && s[j] != (char)c) j += s[j] == '\\' ? 2 : 1;
        if (j >= n) return lex_error(L, L->line, "unterminated string literal");
        struct jtok *t = push(L, JT_STRING, NULL, 0, L->line);
        if (decode_string(L, s + i + 1, j - i - 1, t)) return -1;
        advance_to(L, j + 1);
        return 0;
    }
    for (size_t k = 0; k < sizeof OPS / sizeof OPS[0]; k++) {
        size_t m = strlen(OPS[k]);
        if (i + m <= n && !memcmp(s + i, OPS[k], m)) {
            if (m == 1 && strchr("([{", OPS[k][0])) (*depth)++;
            if (m == 1 && strchr(")]}", OPS[k][0])) {
                if (*depth == 0) return lex_error(L, L->line, "unexpected '%c'", OPS[k][0]);
                (*depth)--;
            }
            push(L, JT_OP, s + i, m, L->line);
            advance_to(L, i + m);
            return 0;
        }
    }
    return lex_error(L, L->line, "unexpected character '%c'", c);
}

// Lexes the inside of a {{ }} or {% %} tag up to and including its end delimiter.
static int lex_tag(struct lexer *L, bool block) {
    int depth = 0, start_line = L->line;
    char close = block ? '%' : '}';
    for (;;) {
        advance_to(L, skip_space(L->src, L->pos, L->n));
        if (L->pos >= L->n)
            return lex_error(L, start_line, "unexpected end of template, expected '%s'",
                             block ? "%}" : "}}");
        const char *s = L->src + L->pos;
        size_t left = L->n - L->pos;
        if (depth == 0) {
            char sign = 0;
            size_t k = 0;
            if ((s[0] == '-' || (block && s[0] == '+')) && left >= 3 && s[1] == close && s[2] == '}')
                sign = s[0], k = 1;
            if (left >= k + 2 && s[k] == close && s[k + 1] == '}') {
                push(L, block ? JT_BLOCK_END : JT_VAR_END, s, k + 2, L->line);
                size_t end = end_tail(L, L->pos + k + 2, sign, block);
                advance_to(L, end);
                return 0;
            }
        }
        if (lex_token(L, &depth)) return -1;
    }
}

static size_t find_tag(const char *s, size_t i, size_t n) {
    for (; i + 1 < n; i++)
        if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) return i;
    return n;
}

// Matches "{%[-+]?\s*raw\s*(-%}|%})" at i; returns the end offset or 0.
static size_t match_raw(const char *s, size_t i, size_t n, const char *word, char *end_sign) {
    size_t j = i + 2;
    if (j < n && (s[j] == '-' || s[j] == '+')) j++;
    j = skip_space(s, j, n);
    size_t w = strlen(word);
    if (j + w > n || memcmp(s + j, word, w)) return 0;
    j = skip_space(s, j + w, n);
    *end_sign = 0;
    if (j < n && (s[j] == '-' || s[j] == '+')) *end_sign = s[j++];
    if (j + 2 > n || s[j] != '%' || s[j + 1] != '}') return 0;
    return j + 2;
}

static int lex_raw(struct lexer *L, size_t body) {
    const char *s = L->src;
    for (size_t i = body;; i++) {
        i = find_tag(s, i, L->n);
        if (i >= L->n) return lex_error(L, L->line, "missing end of raw directive");
        char es;
        size_t e = s[i + 1] == '%' ? match_raw(s, i, L->n, "endraw", &es) : 0;
        if (!e) continue;
        char sign = (s[i + 2] == '-' || s[i + 2] == '+') ? s[i + 2] : 0;
        emit_text(L, body, i, sign, true);
        advance_to(L, i);
        advance_to(L, end_tail(L, e, es, true));
        return 0;
    }
}

int jinja_lex(struct jarena *a, const char *src, size_t len, struct jtok **toks, int *n_toks,
              char *err) {
    struct lexer L = {.arena = a, .src = src, .n = len, .line = 1, .line_starting = true, .err = err};
    while (L.pos < L.n) {
        size_t p = find_tag(src, L.pos, L.n);
        if (p >= L.n) {
            push(&L, JT_DATA, src + L.pos, L.n - L.pos, L.line);
            advance_to(&L, L.n);
            break;
        }
        char kind = src[p + 1];
        char sign = (p + 2 < L.n && (src[p + 2] == '-' || src[p + 2] == '+')) ? src[p + 2] : 0;
        char raw_sign;
        size_t raw_end = kind == '%' ? match_raw(src, p, L.n, "raw", &raw_sign) : 0;
        emit_text(&L, L.pos, p, sign, kind != '{');
        advance_to(&L, p);
        int tag_line = L.line;
        if (raw_end) {
            advance_to(&L, raw_sign == '-' ? skip_space(src, raw_end, L.n) : raw_end);
            if (lex_raw(&L, L.pos)) goto fail;
        } else if (kind == '#') {
            size_t q = p + 2 + (sign ? 1 : 0);
            for (; q + 1 < L.n && !(src[q] == '#' && src[q + 1] == '}'); q++) {}
            if (q + 1 >= L.n) {
                lex_error(&L, tag_line, "missing end of comment tag");
                goto fail;
            }
            char es = (q > p + 2 + (sign ? 1 : 0) && (src[q - 1] == '-' || src[q - 1] == '+')) ? src[q - 1] : 0;
            advance_to(&L, end_tail(&L, q + 2, es, true));
        } else {
            push(&L, kind == '%' ? JT_BLOCK_BEGIN : JT_VAR_BEGIN, src + p, 2, tag_line);
            advance_to(&L, p + 2 + (sign ? 1 : 0));
            if (lex_tag(&L, kind == '%')) goto fail;
        }
    }
    push(&L, JT_EOF, src + L.n, 0, L.line);
    *toks = L.toks;
    *n_toks = L.n_toks;
    return 0;
fail:
    free(L.toks);
    return -1;
}
