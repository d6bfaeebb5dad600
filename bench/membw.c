// Memory read bandwidth: T threads sum disjoint parts of a 1 GiB buffer (AVX2 loads);
// best of 5 passes. Prints "membw_read_GBps=<x> threads=<T>".
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BYTES ((size_t)1 << 30)
static float *buf;
static int nthr;
static float sink[64];

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static void *reader(void *arg) {
    long id = (long)arg;
    size_t n = BYTES / sizeof(float) / nthr, i0 = n * id;
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps(), c = _mm256_setzero_ps(), d = _mm256_setzero_ps();
    for (size_t i = i0; i < i0 + n; i += 32) {
        a = _mm256_add_ps(a, _mm256_load_ps(buf + i));
        b = _mm256_add_ps(b, _mm256_load_ps(buf + i + 8));
        c = _mm256_add_ps(c, _mm256_load_ps(buf + i + 16));
        d = _mm256_add_ps(d, _mm256_load_ps(buf + i + 24));
    }
    float o[8];
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    sink[id] = o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
    return NULL;
}

int main(int argc, char **argv) {
    nthr = argc > 1 ? atoi(argv[1]) : 2;
    buf = aligned_alloc(64, BYTES);
    memset(buf, 1, BYTES);
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        pthread_t th[64];
        double t0 = now();
        for (long i = 0; i < nthr; i++) pthread_create(&th[i], NULL, reader, (void *)i);
        for (int i = 0; i < nthr; i++) pthread_join(th[i], NULL);
        double t = now() - t0;
        if (t < best) best = t;
    }
    printf("membw_read_GBps=%.2f threads=%d (best pass %.1f ms, checksum %g)\n", BYTES / best / 1e9, nthr, best * 1e3, (double)sink[0]);
    free(buf);
    return 0;
}
