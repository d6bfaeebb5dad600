// Small helpers shared by the C tests (header-only).
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// True when got[0..n) equals the JSON array of integers want (a reference tokenizer's ids).
static inline bool test_ids_match(const int32_t *got, int n, const json_t *want) {
    if ((size_t)n != json_array_size(want)) return false;
    for (int k = 0; k < n; k++)
        if (got[k] != json_integer_value(json_array_get(want, (size_t)k))) return false;
    return true;
}
