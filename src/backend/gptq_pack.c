// Host packing of GPTQ int4 weights into the CUDA backend's tile layout (see gptq_pack.h).
#include "backend/gptq_pack.h"

#include <pthread.h>
#include <stddef.h>
#include <unistd.h>

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

// Spreads byte b's two nibbles to bits 0-3 and 16-19.
static uint32_t spread(uint32_t b) { return (b & 0xFu) | ((b >> 4) << 16); }

// In destination order. The word of lane (g, t), step j of tile (nt, kt) takes byte t (inputs
// 2t, 2t+1) of four checkpoint words: rows k/8 = 8kt + 2j (inputs +0..7) and 8kt + 2j + 1
// (+8..15), columns 16nt + g and 16nt + g + 8, landing at nibble pairs (0,4) (1,5) (2,6) (3,7).
static void pack_strips(const uint32_t *src, int in, int out, uint32_t *dst, int nt0, int nt1) {
    uint32_t *d = dst + (size_t)nt0 * (in / 64) * 128;
    for (int nt = nt0; nt < nt1; nt++)
        for (int kt = 0; kt < in / 64; kt++)
            for (int lane = 0; lane < 32; lane++) {
                const int g = lane / 4, t = lane % 4, n = nt * 16 + g;
                for (int j = 0; j < 4; j++, d++) {
                    const uint32_t *r0 = src + (size_t)(kt * 8 + 2 * j) * out + n, *r1 = r0 + out;
                    const int sh = 8 * t;
                    *d = spread((r0[0] >> sh) & 0xFFu) | spread((r0[8] >> sh) & 0xFFu) << 4 |
                         spread((r1[0] >> sh) & 0xFFu) << 8 | spread((r1[8] >> sh) & 0xFFu) << 12;
                }
            }
}

struct pack_job {
    const uint32_t *src;
    uint32_t *dst;
    int in, out, nt0, nt1;
};

static void *pack_thread(void *arg) {
    const struct pack_job *j = arg;
    pack_strips(j->src, j->in, j->out, j->dst, j->nt0, j->nt1);
    return NULL;
}

// Large matrices are split by strips over up to 8 threads (a 14B checkpoint is ~6 GB of
// int4 words: ~12 s on one core of the development VM).
void gptq_tile_pack(const uint32_t *src, int in, int out, uint32_t *dst) {
    const int strips = out / 16;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nth = (size_t)in * out < ((size_t)1 << 22) ? 1 : cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
    if (nth > strips) nth = strips > 0 ? strips : 1;
    pthread_t th[8];
    struct pack_job jobs[8];
    int started = 0;
    for (int i = 1; i < nth; i++) {
        jobs[i] = (struct pack_job){src, dst, in, out, (int)((long)strips * i / nth), (int)((long)strips * (i + 1) / nth)};
        if (pthread_create(&th[i], NULL, pack_thread, &jobs[i])) break;
        started = i;
    }
    // this thread takes strip range 0 and any range whose thread did not start
    pack_strips(src, in, out, dst, 0, (int)((long)strips * 1 / nth));
    for (int i = started + 1; i < nth; i++)
        pack_strips(src, in, out, dst, (int)((long)strips * i / nth), (int)((long)strips * (i + 1) / nth));
    for (int i = 1; i <= started; i++) pthread_join(th[i], NULL);
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
