// KV block pool: exact block ids, eviction order, prefix-cache hits and counters.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/kv_pool.h"

static void check(struct kv_pool *p) {
    char err[PG_ERR_LEN] = "";
    if (kv_pool_check(p, err)) fail_msg("%s", err);
}

static void test_alloc_release_order(void **state) {
    (void)state;
    struct kv_pool *p = kv_pool_new(6, 4, true);
    int32_t a[3], b[2], fl[6];
    assert_int_equal(kv_pool_alloc(p, 3, a), 0);
    assert_int_equal(a[0], 0);
    assert_int_equal(a[1], 1);
    assert_int_equal(a[2], 2);
    assert_int_equal(kv_pool_alloc(p, 2, b), 0);
    assert_int_equal(b[0], 3);
    assert_int_equal(b[1], 4);
    assert_int_equal(kv_pool_num_free(p), 1);
    int32_t c[2];
    assert_int_equal(kv_pool_alloc(p, 2, c), -1); // not enough: nothing changes
    assert_int_equal(kv_pool_num_free(p), 1);
    // release appends in reverse order: 2, 1, 0 after the remaining free block 5
    kv_pool_release(p, a, 3);
    assert_int_equal(kv_pool_free_list(p, fl, 6), 4);
    int32_t want[] = {5, 2, 1, 0};
    for (int i = 0; i < 4; i++) assert_int_equal(fl[i], want[i]);
    check(p);
    // shared block: two references, freed only when both are dropped
    kv_pool_ref(p, b, 1);
    assert_int_equal(kv_pool_refcount(p, 3), 2);
    kv_pool_release(p, b, 2);
    assert_int_equal(kv_pool_refcount(p, 3), 1);
    assert_int_equal(kv_pool_refcount(p, 4), 0);
    kv_pool_release(p, b, 1);
    assert_int_equal(kv_pool_num_free(p), 6);
    check(p);
    kv_pool_free(p);
}

static void fill(int32_t *t, int n, int base) {
    for (int i = 0; i < n; i++) t[i] = base + i;
}

static void test_prefix_cache_hits_and_eviction(void **state) {
    (void)state;
    const int bs = 4;
    struct kv_pool *p = kv_pool_new(4, bs, true);
    int32_t toks[12], ids[3], hit[3];
    uint64_t hs[3];
    fill(toks, 12, 100);
    assert_int_equal(kv_pool_alloc(p, 3, ids), 0); // 0, 1, 2
    uint64_t h = 0;
    for (int b = 0; b < 3; b++) h = kv_pool_cache_block(p, ids[b], h, toks + b * bs, 0);
    assert_int_equal(kv_pool_match(p, toks, 12, 0, 3, hit, hs), 3);
    assert_int_equal(hit[0], 0);
    assert_int_equal(hit[2], 2);
    assert_true(hs[2] == h);
    // a different extra key (cache salt) or a different first block: no hit
    assert_int_equal(kv_pool_match(p, toks, 12, 7, 3, hit, NULL), 0);
    int32_t other[12];
    memcpy(other, toks, sizeof other);
    other[5] = 1; // second block differs: only the first hits
    assert_int_equal(kv_pool_match(p, other, 12, 0, 3, hit, NULL), 1);
    // max_blocks limits the match; a partial trailing block never matches
    assert_int_equal(kv_pool_match(p, toks, 11, 0, 3, hit, NULL), 2);
    assert_int_equal(kv_pool_match(p, toks, 12, 0, 1, hit, NULL), 1);
    // released cached blocks stay cached in the free list: 3 (never used), then 2, 1, 0
    kv_pool_release(p, ids, 3);
    assert_int_equal(kv_pool_num_free(p), 4);
    assert_int_equal(kv_pool_match(p, toks, 12, 0, 3, hit, NULL), 3);
    // a hit on a free block takes it out of the free list
    kv_pool_ref(p, hit, 1); // block 0
    assert_int_equal(kv_pool_num_free(p), 3);
    check(p);
    // allocating evicts LRU-first: 3 (uncached), then 2 (the chain's tail)
    int32_t n2[2];
    assert_int_equal(kv_pool_alloc(p, 2, n2), 0);
    assert_int_equal(n2[0], 3);
    assert_int_equal(n2[1], 2);
    assert_false(kv_pool_is_cached(p, 2));
    assert_true(kv_pool_is_cached(p, 1));
    assert_int_equal(kv_pool_match(p, toks, 12, 0, 3, hit, NULL), 2);
    check(p);
    kv_pool_release(p, n2, 2);
    kv_pool_release(p, (int32_t[]){0}, 1);
    assert_int_equal(kv_pool_num_free(p), 4);
    assert_int_equal(kv_pool_reset_cache(p), 2);
    assert_int_equal(kv_pool_match(p, toks, 12, 0, 3, hit, NULL), 0);
    check(p);
    kv_pool_free(p);
}

static void test_duplicate_block_not_cached(void **state) {
    (void)state;
    struct kv_pool *p = kv_pool_new(4, 2, true);
    int32_t t[2] = {5, 6}, a[2], hit[1];
    assert_int_equal(kv_pool_alloc(p, 2, a), 0);
    kv_pool_cache_block(p, a[0], 0, t, 0);
    kv_pool_cache_block(p, a[1], 0, t, 0); // same content computed twice
    assert_true(kv_pool_is_cached(p, a[0]));
    assert_false(kv_pool_is_cached(p, a[1]));
    assert_int_equal(kv_pool_match(p, t, 2, 0, 1, hit, NULL), 1);
    assert_int_equal(hit[0], a[0]);
    kv_pool_count(p, 2, 2);
    assert_int_equal(kv_pool_queries(p), 2);
    assert_int_equal(kv_pool_hits(p), 2);
    kv_pool_release(p, a, 2);
    check(p);
    kv_pool_free(p);
}

static void test_caching_disabled(void **state) {
    (void)state;
    struct kv_pool *p = kv_pool_new(2, 2, false);
    int32_t t[2] = {1, 2}, a[1], hit[1];
    assert_int_equal(kv_pool_alloc(p, 1, a), 0);
    kv_pool_cache_block(p, a[0], 0, t, 0);
    assert_false(kv_pool_is_cached(p, a[0]));
    assert_int_equal(kv_pool_match(p, t, 2, 0, 1, hit, NULL), 0);
    kv_pool_release(p, a, 1);
    check(p);
    kv_pool_free(p);
}

// Random alloc/ref/release/cache against a reference count model.
static void test_random_ops(void **state) {
    (void)state;
    const int nb = 32, bs = 2;
    struct kv_pool *p = kv_pool_new(nb, bs, true);
    int refs[32] = {0};
    uint64_t r = 12345;
    for (int it = 0; it < 20000; it++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int op = (int)(r >> 60) % 4;
        int32_t id = (int32_t)((r >> 20) % nb);
        if (op == 0) {
            int32_t got;
            int nfree = kv_pool_num_free(p);
            if (kv_pool_alloc(p, 1, &got) == 0) {
                assert_int_equal(refs[got], 0);
                refs[got] = 1;
            } else {
                assert_int_equal(nfree, 0);
            }
        } else if (op == 1 && refs[id] > 0) {
            kv_pool_ref(p, &id, 1);
            refs[id]++;
        } else if (op == 2 && refs[id] > 0) {
            kv_pool_release(p, &id, 1);
            refs[id]--;
        } else if (op == 3 && refs[id] > 0) {
            int32_t t[2] = {(int32_t)(r >> 40) % 5, 1};
            kv_pool_cache_block(p, id, 0, t, 0);
        }
        if (it % 97 == 0) check(p);
        for (int b = 0; b < nb; b++) assert_int_equal(kv_pool_refcount(p, b), refs[b]);
    }
    check(p);
    kv_pool_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_release_order),
        cmocka_unit_test(test_prefix_cache_hits_and_eviction),
        cmocka_unit_test(test_duplicate_block_not_cached),
        cmocka_unit_test(test_caching_disabled),
        cmocka_unit_test(test_random_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
