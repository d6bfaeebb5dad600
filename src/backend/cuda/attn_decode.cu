// Paged GQA attention for decode (one new token per sequence), Flash-Decoding style, one
// kernel: grid (split, kv head, sequence); a block reads its split's keys once and serves all
// G = n_heads / n_kv query heads of that kv head.
//  - Each warp takes 32-key tiles of the split round-robin and copies a tile's K and V rows
//    into its own shared-memory buffers with cp.async (coalesced 16-byte copies, rows found
//    through the block table; the next tile's K is in flight during this tile's P.V, its V
//    during the next Q.K).
//  - Q.K: lane j owns key j and forms its G dot products alone (16-byte shared loads of the
//    row, q broadcast from shared memory): no shuffle per key. One warp max per head and tile
//    gives the online-softmax rescale; sums of p stay lane-local until the end.
//  - P.V: lanes own HD/32 dims and loop over the tile's keys, p broadcast from shared memory.
//  - The block merges its warps; a single split writes the output, otherwise each block
//    writes a partial (max, sum, weighted values) and the last block of its (sequence, kv
//    head) (atomic ticket + fences) merges the splits in split order (deterministic, timing
//    independent), writes the output and re-arms the ticket (graph replays).
//  - Or, by default on sm_90+ (at most 8 splits; PAGODA_ATTN_CLUSTER=0: tickets), the splits of a (sequence, kv
//    head) are one thread block cluster: each block leaves its state in its own shared memory
//    and block 0 of the cluster merges them through distributed shared memory, in split order
//    (cluster_merge): no global partials, tickets or fences.
// Launched with programmatic dependent launch: before pdl_wait() each warp looks up its first
// tile's rows and puts the tile in flight, all but the new key's row (the previous kernel
// stores it; it comes after the wait, as q does); the scratch is touched only after it.
// Tensor-core variant (the default for every cache; PAGODA_ATTN_TC=0: the CUDA-core kernel
// described above): the same blocks, tiles, pipeline and merges, with Q.K and P.V on mma.sync
// m16n8k16 (attn_decode_tc.cu). Shared pieces: attn_decode.cuh.
// Keys per split: a multiple of the tile, at least DEC_MIN_CHUNK, so short sequences use
// fewer splits than the grid offers (the spare blocks exit after pdl_wait). 64 (two of the
// four warps busy) beat 128 and 32 at context 512 inside the 14B layer graph on the H200
// (bench/results/2026-11-28-decode-latency-h200.md).
// dec_stamp (cu_attn_trace, for cuda_ops_bench timeline) records when each block reached each
// phase.
#include <stdlib.h>

#include "backend/cuda/attn_decode.cuh"
#include "backend/cuda/trace.cuh"
// N (even) elements packed in 32-bit words (bf16: 2 per word, fp8: 4 per word, low first) as floats.
template <bool FP8, int N>
__device__ __forceinline__ void cvt_elems(const uint32_t *w, __nv_fp8_interpretation_t fmt, float *o) {
#pragma unroll
    for (int i = 0; i < N / 2; i++) {
        if (FP8) {
            const uint32_t x = (w[i / 2] >> (16 * (i % 2))) & 0xffffu;
            __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)x, fmt);
            float2 f = __half22float2(__half2(hr));
            o[2 * i] = f.x;
            o[2 * i + 1] = f.y;
        } else {
            o[2 * i] = __uint_as_float(w[i] << 16);
            o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
}

// N consecutive cache elements at p (shared memory, aligned to their size) as floats.
template <bool FP8, int N>
__device__ __forceinline__ void lds_elems(const uint8_t *p, __nv_fp8_interpretation_t fmt, float *o) {
    constexpr int B = N * (FP8 ? 1 : 2);
    uint32_t w[2] = {0, 0};
    if (B == 8) {
        uint2 u = *(const uint2 *)p;
        w[0] = u.x;
        w[1] = u.y;
    } else if (B == 4) {
        w[0] = *(const uint32_t *)p;
    } else {
        w[0] = *(const uint16_t *)p;
    }
    cvt_elems<FP8, N>(w, fmt, o);
}

// sc[g] = q_g . k for the key row at krow (shared memory); q (G x HD floats, scaled) in qs.
template <int HD, int G, bool FP8>
__device__ __forceinline__ void qk_row(const uint8_t *krow, const float *qs, __nv_fp8_interpretation_t fmt,
                                       float *sc) {
    constexpr int EPC = FP8 ? 16 : 8;  // elements per 16-byte chunk
    float sa[G], sb[G];
#pragma unroll
    for (int g = 0; g < G; g++) sa[g] = sb[g] = 0;
#pragma unroll
    for (int c = 0; c < HD / EPC; c++) {
        const uint4 u = *(const uint4 *)(krow + 16 * c);
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
        float k[EPC];
        cvt_elems<FP8, EPC>(w, fmt, k);
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < EPC / 4; e++) {
                const float4 qq = *(const float4 *)(qs + g * HD + c * EPC + 4 * e);
                sa[g] = fmaf(qq.x, k[4 * e], sa[g]);
                sb[g] = fmaf(qq.y, k[4 * e + 1], sb[g]);
                sa[g] = fmaf(qq.z, k[4 * e + 2], sa[g]);
                sb[g] = fmaf(qq.w, k[4 * e + 3], sb[g]);
            }
    }
#pragma unroll
    for (int g = 0; g < G; g++) sc[g] = sa[g] + sb[g];
}

template <int HD, int G, bool FP8>
struct dec_shape {
    static constexpr int ES = FP8 ? 1 : 2, RB = HD * ES, RSK = RB + 16;  // K rows padded: no bank conflicts
    static constexpr int WARP_BYTES = DEC_TILE * (RSK + RB);
    static constexpr size_t SMEM = (size_t)G * HD * 4 + DEC_WARPS * DEC_TILE * DEC_PSTRIDE * 4 + DEC_WARPS * WARP_BYTES;
    // The tile buffers later hold the warps' states and the split weights, or (cluster merge)
    // the warps' states and the block's (acc [G][HD], then (m, l) [G]).
    static_assert((DEC_WARPS * G * HD + 3 * G * DEC_MAX_SPLITS) * 4 <= DEC_WARPS * WARP_BYTES, "merge space");
    static_assert((DEC_WARPS * G * HD + G * HD + 2 * G) * 4 <= DEC_WARPS * WARP_BYTES, "cluster state space");
};

// CL: the split merge through a cluster (cluster_merge); launched on sm_90+ only.
template <int HD, int G, bool FP8, bool CL>
__global__ void __launch_bounds__(DEC_WARPS * 32) k_attn_decode(const dec_args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    if (CL) {  // no clusters before sm_90: never launched there (and not compiled)
        __trap();
        return;
    }
#endif
    typedef dec_shape<HD, G, FP8> S;
    constexpr int DPL = HD / 32, RB = S::RB, RSK = S::RSK;
    extern __shared__ __align__(16) uint8_t smem[];
    float *qs = (float *)smem;                                                  // [G][HD], scaled
    float *ps = qs + G * HD;                                                    // [warp][key][DEC_PSTRIDE]
    uint8_t *tiles = (uint8_t *)(ps + DEC_WARPS * DEC_TILE * DEC_PSTRIDE);      // per warp: K [32][RSK], V [32][RB]
    pdl_launch_dependents();
    dec_stamp(a, 0);
    const dec_block b = dec_block_of<RB>(a);
    const int n_heads = G * a.n_kv, lane = threadIdx.x & 31, w = threadIdx.x >> 5, j1 = b.j1;
    uint8_t *ks = tiles + w * S::WARP_BYTES, *vs = ks + DEC_TILE * RSK;
    float *pw = ps + w * DEC_TILE * DEC_PSTRIDE;
    const int fresh = b.sp < b.ns ? first_tile_early<RB, RSK, RB>(ks, vs, a, b.off, b.tk, j1, b.L, lane) : -1;
    pdl_wait();
    float *cl_state = (float *)tiles + DEC_WARPS * G * HD;  // cluster merge: after the warps' states
    if (!dec_block_has_keys<HD, G, CL>(a, b, cl_state)) return;
    if (fresh >= 0)
        copy_fresh_row<RB, RSK, RB>(ks, vs, a.kc, a.vc, __shfl_sync(0xffffffffu, b.off, fresh), fresh, lane);
    const float scale = rsqrtf((float)HD) * 1.4426950408889634f;  // log2(e) folded in
    const bf16 *qg = a.q + ((size_t)b.t * n_heads + b.kvh * G) * HD;
    for (int e = threadIdx.x; e < G * HD; e += blockDim.x) qs[e] = __bfloat162float(qg[e]) * scale;
    __syncthreads();

    const __nv_fp8_interpretation_t fmt = a.kv_type == CU_KV_E5M2 ? __NV_E5M2 : __NV_E4M3;
    float m[G], l[G], acc[G][DPL];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY, l[g] = 0;
#pragma unroll
        for (int dd = 0; dd < DPL; dd++) acc[g][dd] = 0;
    }
    dec_stamp_first_tile(a);
    for (int tk = b.tk; tk < j1; tk += DEC_WARPS * DEC_TILE) {
        const int nv = min(DEC_TILE, j1 - tk);
        long long noff;
        const int nn = next_tile<RB>(a, b, tk + DEC_WARPS * DEC_TILE, &noff);
        wait_k();
        float sc[G], mx[G], corr[G];
        qk_row<HD, G, FP8>(ks + lane * RSK, qs, fmt, sc);
#pragma unroll
        for (int g = 0; g < G; g++) mx[g] = sc[g] = lane < nv ? sc[g] : -INFINITY;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
#pragma unroll
            for (int g = 0; g < G; g++) mx[g] = fmaxf(mx[g], __shfl_xor_sync(0xffffffffu, mx[g], o));
        float p[DEC_PSTRIDE];
#pragma unroll
        for (int g = 0; g < DEC_PSTRIDE; g++) p[g] = 0;
#pragma unroll
        for (int g = 0; g < G; g++) {
            const float mn = fmaxf(m[g], mx[g]);  // finite: key tk is valid
            corr[g] = exp2f(m[g] - mn);
            m[g] = mn;
            p[g] = exp2f(sc[g] - mn);
            l[g] = l[g] * corr[g] + p[g];
        }
        *(float4 *)(pw + lane * DEC_PSTRIDE) = make_float4(p[0], p[1], p[2], p[3]);
        if (G > 4) *(float4 *)(pw + lane * DEC_PSTRIDE + 4) = make_float4(p[4], p[5], p[6], p[7]);
        next_k_wait_v<RB, RSK>(ks, a.kc, noff, nn);  // p visible to every lane too
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int dd = 0; dd < DPL; dd++) acc[g][dd] *= corr[g];
#pragma unroll 8
        for (int j = 0; j < DEC_TILE; j++) {  // rows >= nv are zero filled and have p = 0
            float v[DPL], pj[8];
            lds_elems<FP8, DPL>(vs + j * RB + lane * DPL * S::ES, fmt, v);
            const float4 pa = *(const float4 *)(pw + j * DEC_PSTRIDE);
            const float4 pb = G > 4 ? *(const float4 *)(pw + j * DEC_PSTRIDE + 4) : pa;
            pj[0] = pa.x, pj[1] = pa.y, pj[2] = pa.z, pj[3] = pa.w, pj[4] = pb.x, pj[5] = pb.y, pj[6] = pb.z, pj[7] = pb.w;
#pragma unroll
            for (int g = 0; g < G; g++)
#pragma unroll
                for (int dd = 0; dd < DPL; dd++) acc[g][dd] = fmaf(pj[g], v[dd], acc[g][dd]);
        }
        next_v<RB, RB>(vs, a.vc, noff, nn);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
        for (int g = 0; g < G; g++) l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
    dec_stamp(a, 3);
    float *sm = (float *)tiles;  // [warp][G][HD]: reused once every warp is done with its tiles
    float2 *ml = (float2 *)ps;   // [warp][G]: likewise the probability buffer
    __syncthreads();
    if (lane == 0)
#pragma unroll
        for (int g = 0; g < G; g++) ml[w * G + g] = make_float2(m[g], l[g]);
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int dd = 0; dd < DPL; dd++) sm[(w * G + g) * HD + lane * DPL + dd] = acc[g][dd];
    dec_block_finish<HD, G, CL>(a, b, ml, sm, cl_state);
}

template <int HD, bool FP8>
struct cc_launch {
    template <int G>
    static void run(const dec_args &a, dim3 grid, bool cluster, cudaStream_t st) {
        dec_launch(cluster ? k_attn_decode<HD, G, FP8, true> : k_attn_decode<HD, G, FP8, false>,
                   dec_shape<HD, G, FP8>::SMEM, a, grid, cluster, st, "attn_decode");
    }
};

// Fewest keys per split, a multiple of DEC_TILE: the default, PAGODA_ATTN_MIN_KEYS (A/B runs
// of whole models; read at the first launch) or the benchmark hook (cuda_ops_bench),
// whichever came last.
static int min_chunk_of(int keys) { return keys <= 0 ? DEC_MIN_CHUNK : (keys + DEC_TILE - 1) / DEC_TILE * DEC_TILE; }
static int g_min_chunk = -1;  // -1: not set yet
extern "C" void cu_attn_decode_tune(int min_keys_per_split) { g_min_chunk = min_chunk_of(min_keys_per_split); }

// The split merge through a cluster, on by default: PAGODA_ATTN_CLUSTER=0 (read at the first
// launch) turns it off, the benchmark hook (1 on, 0 off, -1: the environment's again) sets it,
// whichever came last. Taken only where the device launches clusters (sm_90+; one answer per
// device, up to 16). The 14B layer graph at 512 keys: 79.6 vs 81.6 us per layer at batch 1,
// 135.5 vs 143.3 at batch 8 (bench/results/2026-11-29-fused-layer-h200.md).
#define DEC_CLUSTER_MAX 8  // portable cluster size: more would need NonPortableClusterSizeAllowed
static int g_cluster = -1;  // -1: not read yet
extern "C" void cu_attn_decode_cluster(int on) { g_cluster = on < 0 ? -1 : on > 0; }
static int g_cluster_dev[16];  // 0 unknown, 1 no clusters, 2 clusters
static bool cluster_path(void) {
    if (g_cluster < 0) {
        const char *e = getenv("PAGODA_ATTN_CLUSTER");
        g_cluster = !(e && atoi(e) <= 0);
    }
    int dev = 0;
    if (!g_cluster || cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 16) return false;
    if (!g_cluster_dev[dev]) {
        int v = 0;
        g_cluster_dev[dev] = cudaDeviceGetAttribute(&v, cudaDevAttrClusterLaunch, dev) == cudaSuccess && v ? 2 : 1;
    }
    return g_cluster_dev[dev] == 2;
}

// The tensor-core kernel (attn_decode_tc.cu), on by default: PAGODA_ATTN_TC=0 (read at the first
// launch) or the hook (1 on, 0 off, -1: the environment's again), whichever came last.
static int g_tc = -1;  // -1: not read yet
extern "C" void cu_attn_decode_tc(int on) { g_tc = on < 0 ? -1 : on > 0; }
static bool tc_path(void) {
    if (g_tc < 0) {
        const char *e = getenv("PAGODA_ATTN_TC");
        g_tc = !(e && atoi(e) <= 0);
    }
    return g_tc;
}

static struct trace_slots g_trace;
extern "C" void cu_attn_trace(uint64_t *buf, int blocks_per_launch) { trace_set(&g_trace, buf, blocks_per_launch); }

extern "C" void cu_attn_decode(const bf16_t *q, const struct cu_step *s, const int32_t *seqs, int n,
                               int n_heads, int n_kv, int hd, int block_size, int kv_type, const void *k_cache,
                               const void *v_cache, int n_splits, float *partial, bf16_t *out, cudaStream_t st) {
    if (n <= 0) return;
    const int G = n_kv > 0 ? n_heads / n_kv : 0;
    if (G < 1 || G > 8 || G * n_kv != n_heads || (hd != 64 && hd != 128) || n_splits < 1 ||
        n_splits > DEC_MAX_SPLITS || (size_t)n * n_kv > CU_ATTN_TICKETS || block_size < 1) {
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "attn_decode: unsupported shape");
        return;
    }
    if (g_min_chunk < 0) {
        const char *e = getenv("PAGODA_ATTN_MIN_KEYS");
        g_min_chunk = min_chunk_of(e ? atoi(e) : 0);
    }
    // Cluster merge: at most 8 splits (each takes more keys; the chunk rule is unchanged); with
    // one left there is nothing to merge and the plain kernel runs.
    const bool cluster = cluster_path() && n_splits > 1;
    if (cluster && n_splits > DEC_CLUSTER_MAX) n_splits = DEC_CLUSTER_MAX;
    const dim3 grid(n_splits, n_kv, n);
    uint64_t *const trace = trace_next(&g_trace, (size_t)grid.x * grid.y * grid.z);
    dec_args a = {(const bf16 *)q, *s, seqs, n_kv, block_size, kv_type, n_splits, g_min_chunk, (const uint8_t *)k_cache,
                  (const uint8_t *)v_cache, (unsigned *)partial, partial + CU_ATTN_TICKETS, (bf16 *)out, trace};
    const bool fp8 = kv_type != CU_KV_BF16;
    if (tc_path())
        attn_decode_tc_launch(a, G, hd, kv_type, grid, cluster, st);
    else if (hd == 128)
        fp8 ? with_g<cc_launch<128, true>>(G, a, grid, cluster, st) : with_g<cc_launch<128, false>>(G, a, grid, cluster, st);
    else
        fp8 ? with_g<cc_launch<64, true>>(G, a, grid, cluster, st) : with_g<cc_launch<64, false>>(G, a, grid, cluster, st);
}
