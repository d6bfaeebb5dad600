// Decode attention on the tensor cores, the default (PAGODA_ATTN_TC=0: the CUDA-core kernel;
// attn_decode.cu has the design and the launcher, attn_decode.cuh what both kernels share).
// The same grid, splits, 32-key warp tiles, cp.async pipeline (first tile in flight before
// pdl_wait) and merges as the CUDA-core kernel, with the warp's two products on mma.sync
// m16n8k16:
//  - Q.K: A = the G query rows of the kv head padded to 16 (rows >= G zero; lane (g, c) =
//    (lane / 4, lane % 4) holds its row's fragments for every 16-dim step in registers,
//    loaded once), B = 8 keys x 16 dims: per tile 4 x HD/16 mma, after which lane (g, c)
//    holds head g's scores of keys 8 nt + 2c and + 1.
//  - online softmax per head across the quad's four lanes (two shuffles); p is rounded to
//    the mma type and l sums the rounded values, so the weights sum to one.
//  - P.V: A = P (the scores' C fragments are the A fragments of the next product, no
//    shuffle), B = 16 keys x 8 dims: 2 x HD/8 mma per tile.
// About 200 instructions per warp and 32-key tile against about 1900 on the CUDA cores, whose
// key loop was latency bound (one warp per scheduler at batch 1). Layer graph at batch 1,
// 512 keys: the attention advances the chain by 6.6-6.8 us instead of 10.4 (bench/results/
// 2026-11-29-session7-h200.md).
//
// bf16 cache: bf16 mma; B fragments by ldmatrix (K) and ldmatrix.trans (V) from the tiles
// (rows padded by 16 bytes: the eight rows of an 8x8 matrix hit distinct banks).
// fp8 cache (e4m3 / e5m2): f16 mma, fp8 -> f16 exact (one cvt per pair for e4m3, a byte
// permutation for e5m2, which is an f16's high byte); q is scaled by the softmax scale
// before its rounding to f16 (and clamped to f16's range). ldmatrix moves 16-bit elements, so
// each lane loads its fragments' bytes itself, with the head dims permuted so that they are
// contiguous (a dot product and a weighted sum do not care about the dims' order as long as
// both sides agree):
//  - Q.K: k index 2c + e of step s is dim (HD/4) c + 4s + e, k index 2c + 8 + e is dim
//    (HD/4) c + 4s + 2 + e: lane (key, c) reads its key row's bytes [(HD/4) c, (HD/4)(c + 1))
//    once per tile and n-tile, q the same dims.
//  - P.V: output column n of n-tile t is dim n (HD/8) + t: lane (n, c) reads bytes
//    [n HD/8, (n + 1) HD/8) of its four keys per 16-key step and pairs them with byte
//    permutations.
#include "backend/cuda/attn_decode.cuh"
#include "backend/cuda/mma.cuh"

typedef __nv_bfloat16 bf16;

static constexpr int cmax(int a, int b) { return a > b ? a : b; }

template <int HD, int KV>
struct dec_tc_shape {
    static constexpr int RB = HD * (KV == CU_KV_BF16 ? 2 : 1), RS = RB + 16;  // cache row, padded row
    static constexpr int WARP_BYTES = 2 * DEC_TILE * RS;                       // K and V tiles
    static constexpr int ML_BYTES = DEC_WARPS * 8 * 8;                         // warps' (m, l), G <= 8
    // after the loop the tiles hold the warps' states and the split merge's weights, or
    // (cluster merge) the warps' states and the block's
    static constexpr int MERGE_BYTES = (DEC_WARPS * 8 * HD + 3 * 8 * DEC_MAX_SPLITS) * 4;
    static constexpr int CLUSTER_BYTES = (DEC_WARPS * 8 * HD + 8 * HD + 2 * 8) * 4;
    static constexpr size_t SMEM = ML_BYTES + cmax(DEC_WARPS * WARP_BYTES, cmax(MERGE_BYTES, CLUSTER_BYTES));
};

// Two fp8 values (the low 16 bits of x, low byte first) as f16x2, exactly.
template <int KV>
__device__ __forceinline__ uint32_t fp8x2_f16x2(uint32_t x) {
    if (KV == CU_KV_E5M2) return __byte_perm(x, 0u, 0x1404);  // each byte becomes an f16's high byte
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(x & 0xffffu), __NV_E4M3);
    return (uint32_t)h.x | ((uint32_t)h.y << 16);
}

// A bf16 pair times s, as f16x2 (clamped to f16's finite range).
__device__ __forceinline__ uint32_t bf16x2_scaled_f16x2(uint32_t x, float s) {
    const float lo = fminf(fmaxf(__uint_as_float(x << 16) * s, -65504.f), 65504.f);
    const float hi = fminf(fmaxf(__uint_as_float(x & 0xffff0000u) * s, -65504.f), 65504.f);
    const __half2 h = __floats2half2_rn(lo, hi);
    return *(const uint32_t *)&h;
}

// p (two probabilities) in the mma's type; *sum += the rounded values.
template <bool FP8>
__device__ __forceinline__ uint32_t pack_p(float p0, float p1, float *sum) {
    if (FP8) {
        const __half2 h = __floats2half2_rn(p0, p1);
        const float2 f = __half22float2(h);
        *sum += f.x + f.y;
        return *(const uint32_t *)&h;
    }
    const __nv_bfloat162 b = __floats2bfloat162_rn(p0, p1);
    const float2 f = __bfloat1622float2(b);
    *sum += f.x + f.y;
    return *(const uint32_t *)&b;
}

template <bool FP8>
__device__ __forceinline__ void mma_kv(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    if (FP8)
        mma_f16(d, a, b0, b1);
    else
        mma_bf16(d, a, b0, b1);
}

template <int HD, int G, int KV, bool CL>
__global__ void __launch_bounds__(DEC_WARPS * 32) k_attn_decode_tc(const dec_args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    if (CL) {  // no clusters before sm_90: never launched there (and not compiled)
        __trap();
        return;
    }
#endif
    typedef dec_tc_shape<HD, KV> S;
    constexpr bool FP8 = KV != CU_KV_BF16;
    constexpr int RB = S::RB, RS = S::RS, NT = HD / 8, KS = HD / 16;  // NT output n-tiles, KS k-steps
    extern __shared__ __align__(16) uint8_t smem[];
    float2 *ml = (float2 *)smem;          // [warp][G] (m, l), after the loop
    uint8_t *tiles = smem + S::ML_BYTES;  // per warp: K [32][RS], V [32][RS]
    pdl_launch_dependents();
    dec_stamp(a, 0);
    const dec_block b = dec_block_of<RB>(a);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, c = lane & 3, j1 = b.j1;
    uint8_t *ks = tiles + w * S::WARP_BYTES, *vs = ks + DEC_TILE * RS;
    const int fresh = b.sp < b.ns ? first_tile_early<RB, RS, RS>(ks, vs, a, b.off, b.tk, j1, b.L, lane) : -1;
    pdl_wait();
    float *cl_state = (float *)tiles + DEC_WARPS * G * HD;  // cluster merge: after the warps' states
    if (!dec_block_has_keys<HD, G, CL>(a, b, cl_state)) return;
    if (fresh >= 0)
        copy_fresh_row<RB, RS, RS>(ks, vs, a.kc, a.vc, __shfl_sync(0xffffffffu, b.off, fresh), fresh, lane);
    const float scale = rsqrtf((float)HD) * 1.4426950408889634f;  // log2(e) folded in
    // q[g]'s A fragments, k indices 2c, 2c + 1 and 2c + 8, 2c + 9 of each step (rows g + 8: zero):
    // bf16 as is (the scores are scaled after the product), f16 scaled, dims permuted (header)
    uint32_t qa[KS][2];
    {
        const bf16 *qr = a.q + ((size_t)b.t * G * a.n_kv + b.kvh * G + min(g, G - 1)) * HD;
#pragma unroll
        for (int k = 0; k < KS; k++) {
            if (FP8) {
                const uint2 u = g < G ? __ldcg((const uint2 *)(qr + (HD / 4) * c + 4 * k)) : make_uint2(0u, 0u);
                qa[k][0] = bf16x2_scaled_f16x2(u.x, scale);
                qa[k][1] = bf16x2_scaled_f16x2(u.y, scale);
            } else {
                const uint32_t *qw = (const uint32_t *)qr;
                qa[k][0] = g < G ? __ldcg(qw + 8 * k + c) : 0u;
                qa[k][1] = g < G ? __ldcg(qw + 8 * k + 4 + c) : 0u;
            }
        }
    }
    // bf16 ldmatrix row addresses: K, matrix j = lane / 8: key lane % 8 of an 8-key group, dims
    // 8 j of a 32-dim pair of steps; V (transposed), matrix j: key 8 (j & 1) + lane % 8 of a
    // 16-key step, dims 8 (j >> 1) of a pair of n-tiles.
    const uint8_t *k_ld = ks + (lane & 7) * RS + (lane >> 3) * 16;
    const uint8_t *v_ld = vs + (((lane >> 3) & 1) * 8 + (lane & 7)) * RS + (lane >> 4) * 16;
    float m = -INFINITY, l = 0;  // head g: running max (log2 units), this lane's part of the sum
    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0;
    dec_stamp_first_tile(a);
    for (int tk = b.tk; tk < j1; tk += DEC_WARPS * DEC_TILE) {
        const int nv = min(DEC_TILE, j1 - tk);
        long long noff;
        const int nn = next_tile<RB>(a, b, tk + DEC_WARPS * DEC_TILE, &noff);
        wait_k();
        float s[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0;
            if (FP8) {  // lane (key g of the n-tile, c): its row's bytes [(HD/4) c, (HD/4)(c + 1))
                uint32_t kw[KS];
                const uint8_t *kr = ks + (nt * 8 + g) * RS + (HD / 4) * c;
#pragma unroll
                for (int j = 0; j < KS / 4; j++) {
                    const uint4 u = *(const uint4 *)(kr + 16 * j);
                    kw[4 * j] = u.x, kw[4 * j + 1] = u.y, kw[4 * j + 2] = u.z, kw[4 * j + 3] = u.w;
                }
#pragma unroll
                for (int k = 0; k < KS; k++) {
                    const uint32_t ak[4] = {qa[k][0], 0u, qa[k][1], 0u};
                    mma_kv<FP8>(s[nt], ak, fp8x2_f16x2<KV>(kw[k]), fp8x2_f16x2<KV>(kw[k] >> 16));
                }
            } else {
#pragma unroll
                for (int kp = 0; kp < KS / 2; kp++) {
                    uint32_t b[4];
                    ldsm_x4(b, k_ld + nt * 8 * RS + kp * 64);
                    const uint32_t a0[4] = {qa[2 * kp][0], 0u, qa[2 * kp][1], 0u};
                    const uint32_t a1[4] = {qa[2 * kp + 1][0], 0u, qa[2 * kp + 1][1], 0u};
                    mma_kv<FP8>(s[nt], a0, b[0], b[1]);
                    mma_kv<FP8>(s[nt], a1, b[2], b[3]);
                }
            }
        }
        const float ssc = FP8 ? 1.f : scale;  // f16 q was scaled already
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float v = nt * 8 + 2 * c + e < nv ? s[nt][e] * ssc : -INFINITY;
                s[nt][e] = v;
                mx = fmaxf(mx, v);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(m, mx);  // finite: key tk is valid
        const float corr = exp2f(m - mn);
        m = mn;
        uint32_t pk[4];  // p of keys 8 nt + 2c, + 1
        float psum = 0;
#pragma unroll
        for (int nt = 0; nt < 4; nt++) pk[nt] = pack_p<FP8>(exp2f(s[nt][0] - mn), exp2f(s[nt][1] - mn), &psum);
        l = l * corr + psum;
        next_k_wait_v<RB, RS>(ks, a.kc, noff, nn);  // this tile's V awaited
#pragma unroll
        for (int n = 0; n < NT; n++) o[n][0] *= corr, o[n][1] *= corr;  // rows g + 8 stay zero
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            const uint32_t pa[4] = {pk[2 * kk], 0u, pk[2 * kk + 1], 0u};
            if (FP8) {  // lane (n = g, c): bytes [n HD/8, (n + 1) HD/8) of keys 2c, 2c + 1, 2c + 8, 2c + 9
                constexpr int W = NT / 4;  // words per row
                uint32_t x[4][W];
                const uint8_t *vr = vs + (kk * 16 + 2 * c) * RS + g * NT;
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    const uint8_t *p = vr + ((r & 1) + (r >> 1) * 8) * RS;
                    if constexpr (W == 4) {
                        const uint4 u = *(const uint4 *)p;
                        x[r][0] = u.x, x[r][1] = u.y, x[r][2] = u.z, x[r][3] = u.w;
                    } else {
                        const uint2 u = *(const uint2 *)p;
                        x[r][0] = u.x, x[r][1] = u.y;
                    }
                }
#pragma unroll
                for (int n = 0; n < NT; n++) {
                    const unsigned sel = (n & 3) | ((4 + (n & 3)) << 4);  // byte n & 3 of both rows
                    mma_kv<FP8>(o[n], pa, fp8x2_f16x2<KV>(__byte_perm(x[0][n >> 2], x[1][n >> 2], sel)),
                                fp8x2_f16x2<KV>(__byte_perm(x[2][n >> 2], x[3][n >> 2], sel)));
                }
            } else {
#pragma unroll
                for (int dp = 0; dp < NT / 2; dp++) {
                    uint32_t b[4];
                    ldsm_x4_t(b, v_ld + kk * 16 * RS + dp * 32);
                    mma_kv<FP8>(o[2 * dp], pa, b[0], b[1]);
                    mma_kv<FP8>(o[2 * dp + 1], pa, b[2], b[3]);
                }
            }
        }
        next_v<RB, RS>(vs, a.vc, noff, nn);
    }
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    dec_stamp(a, 3);
    float *sm = (float *)tiles;  // [warp][G][HD], once every warp is done with its tiles
    __syncthreads();
    if (g < G) {
        if (c == 0) ml[w * G + g] = make_float2(m, l);
        float *so = sm + (w * G + g) * HD;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            if (FP8) {  // column 2c + e of n-tile n is dim (2c + e) NT + n
                so[2 * c * NT + n] = o[n][0];
                so[(2 * c + 1) * NT + n] = o[n][1];
            } else {
                *(float2 *)(so + 8 * n + 2 * c) = make_float2(o[n][0], o[n][1]);
            }
        }
    }
    dec_block_finish<HD, G, CL>(a, b, ml, sm, cl_state);
}

template <int HD, int KV>
struct tc_launch {
    template <int G>
    static void run(const dec_args &a, dim3 grid, bool cluster, cudaStream_t st) {
        dec_launch(cluster ? k_attn_decode_tc<HD, G, KV, true> : k_attn_decode_tc<HD, G, KV, false>,
                   dec_tc_shape<HD, KV>::SMEM, a, grid, cluster, st, "attn_decode_tc");
    }
};

template <int HD>
static void launch_kv(int G, int kv_type, const dec_args &a, dim3 grid, bool cluster, cudaStream_t st) {
    if (kv_type == CU_KV_E4M3)
        with_g<tc_launch<HD, CU_KV_E4M3>>(G, a, grid, cluster, st);
    else if (kv_type == CU_KV_E5M2)
        with_g<tc_launch<HD, CU_KV_E5M2>>(G, a, grid, cluster, st);
    else
        with_g<tc_launch<HD, CU_KV_BF16>>(G, a, grid, cluster, st);
}

void attn_decode_tc_launch(const dec_args &a, int G, int hd, int kv_type, dim3 grid, bool cluster, cudaStream_t st) {
    if (hd == 128)
        launch_kv<128>(G, kv_type, a, grid, cluster, st);
    else
        launch_kv<64>(G, kv_type, a, grid, cluster, st);
}
