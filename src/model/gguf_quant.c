// ggml block formats and their dequantization, written from ggml-common.h (block layouts)
// and ggml-quants.c (dequantize_row_*): same float arithmetic in the same order, so the
// results are bit-identical to ggml's reference path. All blocks are little-endian bytes;
// fp16 scales are read with memcpy (blocks are not aligned in the file).
#include <stdio.h>
#include <string.h>

#include "model/gguf.h"

#define QK_K 256

static float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return pg_f16_to_f32(h);
}

int ggml_type_block(uint32_t type, int *block_elems, int *block_bytes) {
    int e, b;
    switch (type) {
    case GGML_T_F32: e = 1, b = 4; break;
    case GGML_T_F16: case GGML_T_BF16: e = 1, b = 2; break;
    case GGML_T_Q4_0: e = 32, b = 18; break;   // d, qs[16]
    case GGML_T_Q4_1: e = 32, b = 20; break;   // d, m, qs[16]
    case GGML_T_Q5_0: e = 32, b = 22; break;   // d, qh[4], qs[16]
    case GGML_T_Q5_1: e = 32, b = 24; break;   // d, m, qh[4], qs[16]
    case GGML_T_Q8_0: e = 32, b = 34; break;   // d, qs[32] int8
    case GGML_T_Q4_K: e = QK_K, b = 144; break; // d, dmin, scales[12], qs[128]
    case GGML_T_Q5_K: e = QK_K, b = 176; break; // d, dmin, scales[12], qh[32], qs[128]
    case GGML_T_Q6_K: e = QK_K, b = 210; break; // ql[128], qh[64], scales[16] int8, d
    default: return -1;
    }
    if (block_elems) *block_elems = e;
    if (block_bytes) *block_bytes = b;
    return 0;
}

const char *ggml_type_name(uint32_t type) {
    switch (type) {
    case GGML_T_F32: return "F32";
    case GGML_T_F16: return "F16";
    case GGML_T_BF16: return "BF16";
    case GGML_T_Q4_0: return "Q4_0";
    case GGML_T_Q4_1: return "Q4_1";
    case GGML_T_Q5_0: return "Q5_0";
    case GGML_T_Q5_1: return "Q5_1";
    case GGML_T_Q8_0: return "Q8_0";
    case GGML_T_Q4_K: return "Q4_K";
    case GGML_T_Q5_K: return "Q5_K";
    case GGML_T_Q6_K: return "Q6_K";
    default: {
        static _Thread_local char buf[24];
        snprintf(buf, sizeof buf, "type%u", type);
        return buf;
    }
    }
}

// 32-value blocks: Q4_0/Q4_1 (4-bit), Q5_0/Q5_1 (4 + 1 high bit), Q8_0.
static void deq_q4(const uint8_t *b, float *y, bool has_min) {
    const float d = h2f(b);
    const float m = has_min ? h2f(b + 2) : 0.0f;
    const uint8_t *qs = b + (has_min ? 4 : 2);
    for (int j = 0; j < 16; j++) {
        if (has_min) {
            y[j] = (qs[j] & 0x0F) * d + m;
            y[j + 16] = (qs[j] >> 4) * d + m;
        } else {
            y[j] = ((qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((qs[j] >> 4) - 8) * d;
        }
    }
}

static void deq_q5(const uint8_t *b, float *y, bool has_min) {
    const float d = h2f(b);
    const float m = has_min ? h2f(b + 2) : 0.0f;
    uint32_t qh;
    memcpy(&qh, b + (has_min ? 4 : 2), 4);
    const uint8_t *qs = b + (has_min ? 8 : 6);
    for (int j = 0; j < 16; j++) {
        const uint8_t h0 = (uint8_t)(((qh >> j) << 4) & 0x10);
        const uint8_t h1 = (uint8_t)((qh >> (j + 12)) & 0x10);
        if (has_min) {
            y[j] = ((qs[j] & 0x0F) | h0) * d + m;
            y[j + 16] = ((qs[j] >> 4) | h1) * d + m;
        } else {
            y[j] = (((qs[j] & 0x0F) | h0) - 16) * d;
            y[j + 16] = (((qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void deq_q8_0(const uint8_t *b, float *y) {
    const float d = h2f(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) y[j] = qs[j] * d;
}

// The 8 six-bit scales and mins of a Q4_K/Q5_K super-block, packed into 12 bytes.
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Q4_K (qh == NULL) and Q5_K: 8 sub-blocks of 32, value = d*sc*q - dmin*m.
static void deq_qk45(const uint8_t *b, float *y, bool five) {
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *scales = b + 4;
    const uint8_t *qh = five ? b + 16 : NULL;
    const uint8_t *q = b + (five ? 48 : 16);
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
        uint8_t sc, mn;
        scale_min_k4(is, scales, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        scale_min_k4(is + 1, scales, &sc, &mn);
        const float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * ((q[l] & 0xF) + (qh && (qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * ((q[l] >> 4) + (qh && (qh[l] & u2) ? 16 : 0)) - m2;
        q += 32;
        u1 = (uint8_t)(u1 << 2);
        u2 = (uint8_t)(u2 << 2);
    }
}

// Q6_K: 16 sub-blocks of 16 with int8 scales; 6-bit values = 4 low bits (ql) + 2 high (qh).
static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = h2f(b + 208);
    for (int n = 0; n < QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int8_t q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

int ggml_dequant(uint32_t type, const void *src, float *dst, int64_t n, char *err) {
    int be, bb;
    if (ggml_type_block(type, &be, &bb) != 0) {
        pg_seterr(err, "ggml tensor type %s is not supported", ggml_type_name(type));
        return -1;
    }
    if (n < 0 || n % be) {
        pg_seterr(err, "%lld elements is not a whole number of %s blocks", (long long)n, ggml_type_name(type));
        return -1;
    }
    const uint8_t *s = src;
    if (type == GGML_T_F32) { memcpy(dst, src, (size_t)n * 4); return 0; }
    if (type == GGML_T_F16) { pg_to_f32(PG_F16, src, dst, (size_t)n); return 0; }
    if (type == GGML_T_BF16) { pg_to_f32(PG_BF16, src, dst, (size_t)n); return 0; }
    for (int64_t i = 0; i < n / be; i++, s += bb, dst += be) {
        switch (type) {
        case GGML_T_Q4_0: deq_q4(s, dst, false); break;
        case GGML_T_Q4_1: deq_q4(s, dst, true); break;
        case GGML_T_Q5_0: deq_q5(s, dst, false); break;
        case GGML_T_Q5_1: deq_q5(s, dst, true); break;
        case GGML_T_Q8_0: deq_q8_0(s, dst); break;
        case GGML_T_Q4_K: deq_qk45(s, dst, false); break;
        case GGML_T_Q5_K: deq_qk45(s, dst, true); break;
        case GGML_T_Q6_K: deq_q6_k(s, dst); break;
        default: PG_CHECK(0);
        }
    }
    return 0;
}
