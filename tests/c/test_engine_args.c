// Engine / backend flag parsing (engine_args.h).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "engine/engine_args.h"

// Parses argv the way the header's example does; returns 0 or the first error code.
static int parse(int argc, const char **argv, struct engine_config *e, struct backend_config *b,
                 char *err) {
    for (int i = 0; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int r = engine_args_parse(e, argv[i], val, err);
        int r2 = backend_args_parse(b, argv[i], val, err);
        if (r == ENGINE_ARGS_UNKNOWN) r = r2;
        if (r < 0) return r;
        i += r;
    }
    return 0;
}

static void test_parse_all(void **state) {
    (void)state;
    struct engine_config e;
    struct backend_config b;
    engine_config_defaults(&e);
    backend_config_defaults(&b);
    char err[PG_ERR_LEN] = "";
    const char *argv[] = {"--block-size", "32", "--max-num-seqs=8", "--max-num-batched-tokens", "512",
                          "--max-model-len", "1024", "--no-enable-prefix-caching",
                          "--enable-chunked-prefill=false", "--num-scheduler-steps", "4",
                          "--async-scheduling", "--scheduling-policy", "priority", "--seed", "7",
                          "--kv-cache-memory", "2GiB", "--kv-cache-dtype", "fp8",
                          "--gpu-memory-utilization", "0.5", "--enforce-eager", "-tp", "2"};
    assert_int_equal(parse(sizeof argv / sizeof *argv, argv, &e, &b, err), 0);
    assert_int_equal(e.block_size, 32);
    assert_int_equal(b.block_size, 32);
    assert_int_equal(e.max_num_seqs, 8);
    assert_int_equal(e.max_num_batched_tokens, 512);
    assert_int_equal(e.max_model_len, 1024);
    assert_false(e.enable_prefix_caching);
    assert_false(e.enable_chunked_prefill);
    assert_int_equal(e.num_scheduler_steps, 4);
    assert_true(e.async_scheduling);
    assert_int_equal(e.policy, SCHED_PRIORITY);
    assert_int_equal(e.seed, 7);
    assert_true(b.kv_cache_bytes == 2ull << 30);
    assert_int_equal(b.kv_dtype, PG_F8_E4M3);
    assert_true(b.gpu_memory_utilization == 0.5f);
    assert_true(b.enforce_eager);
    assert_int_equal(b.tensor_parallel_size, 2);
    // without chunked prefill the budget must cover max_model_len
    assert_int_equal(engine_args_finalize(&e, &b, 4096, err), -1);
    assert_non_null(strstr(err, "512"));
    e.max_num_batched_tokens = 2048;
    assert_int_equal(engine_args_finalize(&e, &b, 4096, err), 0);
    assert_int_equal(b.max_model_len, 1024);
    e.max_model_len = 0;
    assert_int_equal(engine_args_finalize(&e, &b, 2000, err), 0);
    assert_int_equal(e.max_model_len, 2000);
    e.max_model_len = 5000;
    assert_int_equal(engine_args_finalize(&e, &b, 4096, err), -1);
}

static void test_errors(void **state) {
    (void)state;
    struct engine_config e;
    struct backend_config b;
    engine_config_defaults(&e);
    backend_config_defaults(&b);
    char err[PG_ERR_LEN] = "";
    assert_int_equal(engine_args_parse(&e, "--block-size", "x", err), ENGINE_ARGS_ERROR);
    assert_non_null(strstr(err, "--block-size"));
    assert_int_equal(engine_args_parse(&e, "--block-size", NULL, err), ENGINE_ARGS_ERROR);
    assert_non_null(strstr(err, "missing"));
    assert_int_equal(engine_args_parse(&e, "--max-num-seqs", "0", err), ENGINE_ARGS_ERROR);
    assert_int_equal(engine_args_parse(&e, "--scheduling-policy", "lifo", err), ENGINE_ARGS_ERROR);
    assert_int_equal(engine_args_parse(&e, "--seed", "-1", err), ENGINE_ARGS_ERROR);
    assert_int_equal(engine_args_parse(&e, "--enable-prefix-caching=maybe", NULL, err),
                     ENGINE_ARGS_ERROR);
    assert_int_equal(engine_args_parse(&e, "--model", "x", err), ENGINE_ARGS_UNKNOWN);
    assert_int_equal(engine_args_parse(&e, "--enable-prefix", NULL, err), ENGINE_ARGS_UNKNOWN);
    assert_int_equal(backend_args_parse(&b, "--kv-cache-memory", "12XB", err), ENGINE_ARGS_ERROR);
    assert_int_equal(backend_args_parse(&b, "--kv-cache-memory", "-5", err), ENGINE_ARGS_ERROR);
    assert_int_equal(backend_args_parse(&b, "--kv-cache-dtype", "int3", err), ENGINE_ARGS_ERROR);
    assert_int_equal(backend_args_parse(&b, "--gpu-memory-utilization", "1.5", err),
                     ENGINE_ARGS_ERROR);
    assert_int_equal(backend_args_parse(&b, "--seed", "abc", err), ENGINE_ARGS_ERROR);
    assert_int_equal(backend_args_parse(&b, "--kv-cache-memory", "512M", err), 1);
    assert_true(b.kv_cache_bytes == 512000000);
    // defaults survive failed parses
    assert_int_equal(e.block_size, 16);
    assert_int_equal(e.max_num_seqs, 256);
    assert_true(e.enable_prefix_caching);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_all),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
