// Internals shared by the JSON Schema front end (schema.c: structure, schema_prim.c: values).
#pragma once
#include <jansson.h>

#include "grammar/grammar_impl.h"

struct sc {
    struct gbuild *b;
    json_t *root;
    struct gx *ws;      // whitespace between JSON tokens (inlined)
    json_t **memo_key;  // schema object -> rule (so $ref recursion terminates)
    int *memo_rule;
    char **memo_text;   // compact sorted serialization of memo_key[i]
    int n_memo, cap_memo;
    json_t **owned;     // merged schemas created here (decref'd at the end)
    int n_owned, cap_owned;
    int any_rule;       // rule for an arbitrary JSON value (-1 until needed)
    int any_object_rule;
    int string_rule;    // arbitrary JSON string
    int depth;
};

// Expressions for primitive values (schema_prim.c). s is the (merged) schema object.
struct gx *sc_string(struct sc *c, json_t *s);
struct gx *sc_integer(struct sc *c, json_t *s);
struct gx *sc_number(struct sc *c, json_t *s);
struct gx *sc_json_literal(struct sc *c, json_t *v); // the compact serialization of v
int sc_any_value(struct sc *c);   // rule of any JSON value
int sc_any_object(struct sc *c);  // rule of any JSON object
int sc_any_string(struct sc *c);  // rule of any JSON string
struct gx *sc_string_char(struct sc *c); // one JSON string character (raw or escaped)
