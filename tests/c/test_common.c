// Unit tests for util/common: float conversions and helpers.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util/common.h"

static void test_f16_roundtrip(void **state) {
    (void)state;
    // every finite f16 converts to f32 and back unchanged
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint16_t x = (uint16_t)h;
        if ((x & 0x7c00) == 0x7c00 && (x & 0x3ff)) continue; // NaN payloads
        assert_int_equal(pg_f32_to_f16(pg_f16_to_f32(x)), x);
    }
    assert_true(pg_f16_to_f32(0x3c00) == 1.0f);
    assert_true(pg_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_int_equal(pg_f32_to_f16(1e6f), 0x7c00); // overflow -> inf
}

static void test_bf16_rounding(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint16_t x = (uint16_t)h;
        if ((x & 0x7f80) == 0x7f80 && (x & 0x7f)) continue;
        assert_int_equal(pg_f32_to_bf16(pg_bf16_to_f32(x)), x);
    }
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0)
    assert_int_equal(pg_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);
    assert_int_equal(pg_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82);
}

static void test_read_file_missing(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    assert_null(pg_read_file("/nonexistent/x", NULL, err));
    assert_non_null(strstr(err, "/nonexistent/x"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_roundtrip),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_read_file_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
