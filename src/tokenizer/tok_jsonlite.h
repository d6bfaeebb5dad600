// A small in-place JSON parser for tokenizer.json: the 11 MB Qwen file has ~750k values, and
// a general DOM (jansson) spends most of the load time in per-value allocations and hashing.
// Strings are unescaped in place inside the caller's buffer and NUL-terminated there; nodes
// live in one array and link by index. Strict RFC 8259 syntax; "\u0000" is rejected.
#pragma once
#include "util/common.h"

enum jl_type { JL_NULL, JL_FALSE, JL_TRUE, JL_NUM, JL_STR, JL_ARR, JL_OBJ };

struct jl_node {
    uint8_t type;
    uint32_t len;  // JL_STR: bytes; JL_ARR/JL_OBJ: number of elements / members
    int32_t first; // JL_ARR: first element; JL_OBJ: first key (the key's next is its value)
    int32_t next;  // next sibling (-1 at the end)
    const char *s; // JL_STR: the NUL-terminated string; JL_NUM: the number's text
};

struct jl_doc {
    struct jl_node *nodes; // nodes[0] is the root
    int n, cap;
};

// Parses buf[0..len) (modified in place; must outlive the doc). Returns 0, or -1 with err.
int jl_parse(struct jl_doc *d, char *buf, size_t len, char *err);
void jl_free(struct jl_doc *d);

// Member of an object by key, or NULL (also when obj is NULL or not an object).
const struct jl_node *jl_get(const struct jl_doc *d, const struct jl_node *obj, const char *key);
// Element i of an array (O(i)), or NULL.
const struct jl_node *jl_at(const struct jl_doc *d, const struct jl_node *arr, uint32_t i);
static inline const struct jl_node *jl_next(const struct jl_doc *d, const struct jl_node *n) {
    return n->next >= 0 ? &d->nodes[n->next] : NULL;
}
static inline const struct jl_node *jl_first(const struct jl_doc *d, const struct jl_node *n) {
    return n && (n->type == JL_ARR || n->type == JL_OBJ) && n->first >= 0 ? &d->nodes[n->first] : NULL;
}
// String value or NULL.
const char *jl_str(const struct jl_node *n);
bool jl_is_true(const struct jl_node *n);
bool jl_is_null(const struct jl_node *n); // also true for NULL
// Integer value; false if n is not an integer number in [INT64_MIN, INT64_MAX].
bool jl_int(const struct jl_node *n, int64_t *out);
