// Host packing of GPTQ int4 weights into the CUDA backend's tile layout (see gptq_pack.h).
#include "backend/gptq_pack.h"

#include <stddef.h>

// Where W[n][k] lives in the tile layout: word index and nibble shift.
static void tile_pos(int in, int n, int k, size_t *word, int *shift) {
    int nt = n / 16, r = n % 16, kt = k / 64, kk = k % 64;
    int j = kk / 16, c = kk % 16;          // 16-input step, column within it
    int hi_k = c >= 8, cc = c % 8;         // columns 8..15 -> nibbles 2,3,6,7
    int g = r % 8, hi_n = r >= 8, t = cc / 2, odd = cc % 2;
    int lane = g * 4 + t;
    int i = (hi_k ? 2 : 0) + (hi_n ? 1 : 0) + (odd ? 4 : 0);
    *word = (((size_t)nt * (in / 64) + kt) * 32 + lane) * 4 + j;
    *shift = 4 * i;
}

// In destination order: each tile word gathers its 8 nibbles (inputs k0 + {0, 1, 8, 9} of
// rows g and g + 8) from the checkpoint words of inputs k0..k0+9 (two words per row).
void gptq_tile_pack(const uint32_t *src, int in, int out, uint32_t *dst) {
    uint32_t *d = dst;
    for (int nt = 0; nt < out / 16; nt++)
        for (int kt = 0; kt < in / 64; kt++)
            for (int lane = 0; lane < 32; lane++)
                for (int j = 0; j < 4; j++, d++) {
                    const int g = lane / 4, t = lane % 4, k0 = kt * 64 + j * 16 + 2 * t;
                    uint32_t v = 0;
                    for (int i = 0; i < 8; i++) {
                        int n = nt * 16 + g + (i & 1) * 8, k = k0 + ((i >> 1) & 1) * 8 + (i >> 2);
                        v |= ((src[(size_t)(k / 8) * out + n] >> (4 * (k % 8))) & 0xFu) << (4 * i);
                    }
                    *d = v;
                }
}

int gptq_tile_nibble(const uint32_t *tiles, int in, int n, int k) {
    size_t word;
    int shift;
    tile_pos(in, n, k, &word, &shift);
    return (int)((tiles[word] >> shift) & 0xFu);
}

void gptq_tile_pack_sz(const uint32_t *src, int n_groups, int out, uint32_t *dst) {
    for (int g = 0; g < n_groups; g++)
        for (int n = 0; n < out; n++) dst[((size_t)(n / 16) * n_groups + g) * 16 + n % 16] = src[(size_t)g * out + n];
}
