// The int4 tile layout (backend/gptq_pack.h): every checkpoint nibble lands where the
// header says, and decoding a lane's words the way the CUDA kernel does (nibble pairs
// (i, i + 4) as the mma.m16n8k16 A registers a0..a3) gives back the weight matrix.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "backend/gptq_pack.h"

static uint32_t rng = 12345;
static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static int ckpt_nibble(const uint32_t *q, int out, int n, int k) { return (int)((q[(size_t)(k / 8) * out + n] >> (4 * (k % 8))) & 15); }

static void check_shape(int in, int out) {
    size_t words = (size_t)(in / 8) * out;
    uint32_t *q = malloc(words * 4), *t = malloc(words * 4);
    for (size_t i = 0; i < words; i++) q[i] = next_u32();
    gptq_tile_pack(q, in, out, t);
    for (int n = 0; n < out; n++)
        for (int k = 0; k < in; k++) assert_int_equal(gptq_tile_nibble(t, in, n, k), ckpt_nibble(q, out, n, k));
    // The kernel's view: strip s, tile kt, lane (g, t), word j; register r = (word >> 4r) & 0x000F000F
    // holds (row, col) pairs of the 16x16 A fragment: r0 (g, 2t|2t+1), r1 (g+8, ..), r2 (g, 2t+8|9), r3 (g+8, 2t+8|9).
    for (int s = 0; s < out / 16; s++)
        for (int kt = 0; kt < in / 64; kt++)
            for (int lane = 0; lane < 32; lane++)
                for (int j = 0; j < 4; j++) {
                    uint32_t w = t[(((size_t)s * (in / 64) + kt) * 32 + lane) * 4 + j];
                    int g = lane / 4, tt = lane % 4;
                    for (int r = 0; r < 4; r++) {
                        uint32_t v = (w >> (4 * r)) & 0x000F000Fu;
                        int row = s * 16 + g + (r & 1) * 8, col = kt * 64 + j * 16 + 2 * tt + (r & 2) * 4;
                        assert_int_equal((int)(v & 15), ckpt_nibble(q, out, row, col));
                        assert_int_equal((int)(v >> 16), ckpt_nibble(q, out, row, col + 1));
                    }
                }
    free(q);
    free(t);
}

static void test_tile_layout(void **state) {
    (void)state;
    check_shape(64, 16);
    check_shape(128, 48);
    check_shape(896, 1152 / 8);
    check_shape(320, 32);
    check_shape(1024, 4096 + 16);  // large enough for the threaded split (uneven strip ranges)
}

static void test_tile_sz(void **state) {
    (void)state;
    const int ng = 5, out = 48;
    uint32_t src[5 * 48], dst[5 * 48];
    for (int i = 0; i < ng * out; i++) src[i] = next_u32();
    gptq_tile_pack_sz(src, ng, out, dst);
    for (int g = 0; g < ng; g++)
        for (int n = 0; n < out; n++) assert_int_equal(dst[((n / 16) * ng + g) * 16 + n % 16], src[g * out + n]);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tile_layout), cmocka_unit_test(test_tile_sz)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
