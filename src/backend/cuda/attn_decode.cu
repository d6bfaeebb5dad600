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
// Tensor-core variant (bf16 cache, the default; PAGODA_ATTN_TC=0: the CUDA-core kernel above
// for every cache): the same blocks, tiles, pipeline and merges, with Q.K and P.V on
// mma.sync m16n8k16 (k_attn_decode_tc below).
// Keys per split: a multiple of the tile, at least DEC_MIN_CHUNK, so short sequences use
// fewer splits than the grid offers (the spare blocks exit after pdl_wait). 64 (two of the
// four warps busy) beat 128 and 32 at context 512 inside the 14B layer graph on the H200
// (bench/results/2026-11-28-decode-latency-h200.md).
// dec_stamp (cu_attn_trace, for cuda_ops_bench timeline) records when each block reached each
// phase.
#include <math.h>
#include <stdlib.h>
#include <cuda_bf16.h>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/kv_cache.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/trace.cuh"

typedef __nv_bfloat16 bf16;
#define DEC_WARPS 4
#define DEC_TILE 32                            // keys per warp tile: one per lane
#define DEC_MIN_CHUNK (2 * DEC_TILE)           // fewest keys per split
#define DEC_MAX_SPLITS 64
#define DEC_PSTRIDE 8                          // floats per key in the probability buffer (G <= 8)

struct dec_args {
    const bf16 *q;
    struct cu_step s;
    const int32_t *seqs;
    int n_kv, bs, kv_type, n_splits, min_chunk;
    const uint8_t *kc, *vc;
    unsigned *tickets;
    float *partial;
    bf16 *out;
    uint64_t *trace;  // cu_attn_trace: [block][8] values, or NULL
};

// cu_attn_trace: thread 0 of each block records in slot k of the block's 8 the global timer at
// its start (0), after pdl_wait (1), once its warp's first K tile is in shared memory (2),
// after its warp's key loop (3), once the block's partial is written and its ticket taken (4;
// one split: once the output is written; cluster merge: past the first cluster barrier) and,
// in the block that merges the splits (cluster merge: block 0), at the end (5); slot 6 = the
// SM it ran on. Blocks without keys record only 0, 1 and 6. Blocks are numbered (sequence, kv
// head, split), split fastest.
__device__ __forceinline__ void dec_record(const dec_args &a, int k, uint64_t v) {
    if (a.trace && threadIdx.x == 0)
        a.trace[(((size_t)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x) * 8 + k] = v;
}
__device__ __forceinline__ void dec_stamp(const dec_args &a, int k) {
    if (!a.trace || threadIdx.x != 0) return;
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    dec_record(a, k, t);
}

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

// Byte offset of key `key`'s row (dim 0) in one layer's K or V cache.
template <int RB>
__device__ __forceinline__ long long row_off(const int32_t *bt, int key, int kvh, int n_kv, int bs) {
    return (long long)kv_index(bt[key / bs], kvh, key % bs, 0, n_kv, bs, 1) * RB;
}

// The warp copies a tile's rows (row r's byte offset is lane r's `off`; rows >= nv are zero
// filled; row `skip` is left alone) into dst with row stride RS: coalesced, 16 bytes per lane
// per copy.
template <int RB, int RS>
__device__ __forceinline__ void copy_tile(uint8_t *dst, const uint8_t *src, long long off, int nv, int lane,
                                          int skip = -1) {
    constexpr int CPR = RB / 16;  // 16-byte chunks per row
#pragma unroll
    for (int i = 0; i < CPR; i++) {
        const int c = i * 32 + lane, r = c / CPR, col = c % CPR;
        const long long ro = __shfl_sync(0xffffffffu, off, r);
        const bool ok = r < nv;
        if (r != skip) cp_async16(dst + r * RS + col * 16, src + (ok ? ro : 0) + col * 16, ok ? 16 : 0);
    }
}

// The new key's K and V rows (row `fresh` of the warp's first tile, byte offset `off` in each
// cache), which the kernel before wrote: plain loads after pdl_wait, while the rest of the
// tile came by cp.async before it (copy_tile's skip). Warp-uniform call; visible to the warp
// after the __syncwarp that follows the loop's cp_async_wait.
template <int RB, int RSK, int RSV>
__device__ __forceinline__ void copy_fresh_row(uint8_t *ks, uint8_t *vs, const uint8_t *kc, const uint8_t *vc,
                                               long long off, int fresh, int lane) {
    constexpr int CPR = RB / 16;
    for (int x = lane; x < 2 * CPR; x += 32) {
        const bool k = x < CPR;
        const int col = k ? x : x - CPR;
        const uint4 v = __ldcg((const uint4 *)((k ? kc : vc) + off + col * 16));
        *(uint4 *)((k ? ks + fresh * RSK : vs + fresh * RSV) + col * 16) = v;
    }
}

// Before pdl_wait: the warp's first tile (keys [tk, min(tk + 32, j1))) of K and V in flight
// by cp.async (two groups, K then V), all but the row of the sequence's new key L - 1, which
// the kernel before writes in this step (every other row is from earlier steps). Returns
// that row's index in the tile, or -1; after pdl_wait the caller copies it (copy_fresh_row).
template <int RB, int RSK, int RSV>
__device__ __forceinline__ int first_tile_early(uint8_t *ks, uint8_t *vs, const dec_args &a, long long off, int tk,
                                                int j1, int L, int lane) {
    if (tk >= j1) return -1;
    const int nv = min(DEC_TILE, j1 - tk), fresh = L - 1 - tk < nv ? L - 1 - tk : -1;
    copy_tile<RB, RSK>(ks, a.kc, off, nv, lane, fresh);
    cp_async_commit();
    copy_tile<RB, RSV>(vs, a.vc, off, nv, lane, fresh);
    cp_async_commit();
    return fresh;
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

// Thread block clusters (sm_90+; no-ops below, where the cluster kernel is never launched).
// Every thread of every block of the cluster passes the barrier; arrive releases the
// thread's earlier shared-memory writes, wait acquires everyone's.
__device__ __forceinline__ void cluster_sync(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\n"
                 "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}
// The shared::cluster address of p (this block's shared memory) in block `rank` of the cluster.
__device__ __forceinline__ uint32_t cluster_map(const void *p, int rank) {
    uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem_u32(p)), "r"(rank));
#endif
    return r;
}
__device__ __forceinline__ float2 ld_cluster_f2(uint32_t addr) {
    float2 v = make_float2(0.f, 0.f);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("ld.shared::cluster.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(addr) : "memory");
#endif
    return v;
}
__device__ __forceinline__ float4 ld_cluster_f4(uint32_t addr) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(addr)
                 : "memory");
#endif
    return v;
}

// Merges the block's partials of all splits (last block only) into the output.
template <int HD, int G>
__device__ void merge_splits(const dec_args &a, float *sm, int i, int kvh, int t, int ns) {
    const int n_heads = G * a.n_kv;
    float *ms = sm, *ls = ms + G * DEC_MAX_SPLITS, *fw = ls + G * DEC_MAX_SPLITS;
    const float *pp0 = a.partial + ((size_t)i * n_heads + kvh * G) * a.n_splits * (HD + 2);
    for (int e = threadIdx.x; e < G * ns; e += blockDim.x) {
        const int g = e / ns, k = e % ns;
        const float *pp = pp0 + ((size_t)g * a.n_splits + k) * (HD + 2);
        ms[g * DEC_MAX_SPLITS + k] = __ldcg(pp);
        ls[g * DEC_MAX_SPLITS + k] = __ldcg(pp + 1);
    }
    __syncthreads();
    if (threadIdx.x < G) {
        const int g = threadIdx.x;
        float M = -INFINITY, Ls = 0;
        for (int k = 0; k < ns; k++) M = fmaxf(M, ms[g * DEC_MAX_SPLITS + k]);
        for (int k = 0; k < ns; k++) {
            const float f = exp2f(ms[g * DEC_MAX_SPLITS + k] - M);
            fw[g * DEC_MAX_SPLITS + k] = f;
            Ls += ls[g * DEC_MAX_SPLITS + k] * f;
        }
        const float inv = Ls > 0 ? 1.f / Ls : 0.f;
        for (int k = 0; k < ns; k++) fw[g * DEC_MAX_SPLITS + k] *= inv;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < G * HD; e += blockDim.x) {
        const int g = e / HD, d = e % HD;
        const float *pp = pp0 + (size_t)g * a.n_splits * (HD + 2) + 2 + d;
        float o = 0;
#pragma unroll 8
        for (int k = 0; k < ns; k++) o = fmaf(fw[g * DEC_MAX_SPLITS + k], __ldcg(pp + (size_t)k * (HD + 2)), o);
        a.out[((size_t)t * n_heads + kvh * G) * HD + e] = __float2bfloat16(o);
    }
}

// Merges the warps' states (shared memory: ml [warp][G] = (m, l), sm [warp][G][HD] = acc; a
// warp without keys left m = -inf, l = acc = 0) and writes the output (one split), the
// block's state into its shared memory (CL: st, for cluster_merge) or this split's partial;
// returns whether this block must merge the splits (ticket: it came last). The caller has
// stored its warp's state and not yet synchronized.
template <int HD, int G, bool CL>
__device__ __forceinline__ bool merge_warps(const dec_args &a, const float2 *ml, const float *sm, float *st, int i,
                                            int kvh, int sp, int t, int ns) {
    const int n_heads = G * a.n_kv;
    __shared__ bool last;
    __syncthreads();
    for (int e = threadIdx.x; e < G * HD; e += blockDim.x) {
        const int g = e / HD, d = e % HD;
        float M = -INFINITY, Ls = 0, A = 0;
#pragma unroll
        for (int ww = 0; ww < DEC_WARPS; ww++) M = fmaxf(M, ml[ww * G + g].x);
#pragma unroll
        for (int ww = 0; ww < DEC_WARPS; ww++) {
            const float f = exp2f(ml[ww * G + g].x - M);
            Ls += ml[ww * G + g].y * f;
            A += sm[(ww * G + g) * HD + d] * f;
        }
        if (ns == 1) {
            a.out[((size_t)t * n_heads + kvh * G) * HD + e] = __float2bfloat16(Ls > 0 ? A / Ls : 0.f);
        } else if (CL) {
            st[e] = A;
            if (d == 0) ((float2 *)(st + G * HD))[g] = make_float2(M, Ls);
        } else {
            float *pp = a.partial + (((size_t)i * n_heads + kvh * G + g) * a.n_splits + sp) * (HD + 2);
            if (d == 0) pp[0] = M, pp[1] = Ls;
            pp[2 + d] = A;
        }
    }
    if (ns == 1 || CL) return false;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&a.tickets[(size_t)i * a.n_kv + kvh], 1u) == (unsigned)ns - 1;
    __syncthreads();
    if (!last) return false;
    __threadfence();
    return true;
}

// The split merge through a cluster: the cluster is the n_splits blocks of one (sequence, kv
// head), block rank = split. Every block of the cluster comes here, keys or not (the barrier
// counts them all). Blocks with keys have left their state in st (merge_warps); after the
// barrier block 0 reads those of the ns splits with keys (the others would add m = -inf,
// l = acc = 0, i.e. nothing) through distributed shared memory in split order
// (deterministic) and writes the output; the second barrier keeps the other blocks, and so
// their shared memory, alive until it has read them.
template <int HD, int G>
__device__ __forceinline__ void cluster_merge(const dec_args &a, const float *st, int kvh, int sp, int t, int ns) {
    constexpr int Q = HD / 4;  // float4 per head
    cluster_sync();
    if (sp < ns) dec_stamp(a, 4);
    if (sp == 0) {
        bf16 *out = a.out + ((size_t)t * G * a.n_kv + kvh * G) * HD;
        if (ns > 1) {
            uint32_t base[8];  // st in block k (gridDim.x = n_splits <= 8)
#pragma unroll
            for (int k = 0; k < 8; k++) base[k] = cluster_map(st, k < ns ? k : 0);
            for (int e = threadIdx.x; e < G * Q; e += blockDim.x) {
                const int g = e / Q;
                float2 ml[8];
                float4 v[8];
#pragma unroll
                for (int k = 0; k < 8; k++) {  // all loads in flight before the math
                    ml[k] = k < ns ? ld_cluster_f2(base[k] + (G * HD + 2 * g) * 4) : make_float2(-INFINITY, 0.f);
                    v[k] = k < ns ? ld_cluster_f4(base[k] + e * 16) : make_float4(0.f, 0.f, 0.f, 0.f);
                }
                float M = -INFINITY, Ls = 0;
#pragma unroll
                for (int k = 0; k < 8; k++) M = fmaxf(M, ml[k].x);  // finite: split 0 has keys
                float4 A = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    if (k >= ns) break;
                    const float f = exp2f(ml[k].x - M);
                    Ls = fmaf(ml[k].y, f, Ls);
                    A.x = fmaf(v[k].x, f, A.x), A.y = fmaf(v[k].y, f, A.y);
                    A.z = fmaf(v[k].z, f, A.z), A.w = fmaf(v[k].w, f, A.w);
                }
                const float inv = Ls > 0 ? 1.f / Ls : 0.f;
                __nv_bfloat162 lo = __floats2bfloat162_rn(A.x * inv, A.y * inv),
                               hi = __floats2bfloat162_rn(A.z * inv, A.w * inv);
                uint2 u;
                u.x = *(const uint32_t *)&lo, u.y = *(const uint32_t *)&hi;
                *(uint2 *)(out + 4 * e) = u;
            }
            dec_stamp(a, 5);
        } else if (ns == 0) {  // no keys (not a decode case): zeros, as the ticket path writes
            for (int e = threadIdx.x; e < G * HD; e += blockDim.x) out[e] = __float2bfloat16(0.f);
        }  // ns == 1: merge_warps wrote the output
    }
    cluster_sync();
}

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
    const int sp = blockIdx.x, kvh = blockIdx.y, i = blockIdx.z, n_heads = G * a.n_kv;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int seq = a.seqs[i], L = a.s.seq_len[seq], t = a.s.seq_q0[seq];
    int chunk = (L + a.n_splits - 1) / a.n_splits;
    chunk = max(a.min_chunk, (chunk + DEC_TILE - 1) / DEC_TILE * DEC_TILE);
    const int ns = (L + chunk - 1) / chunk;  // splits holding keys
    const int j1 = min(L, (sp + 1) * chunk);
    const int32_t *bt = a.s.block_tables + (size_t)seq * a.s.bt_stride;
    uint8_t *ks = tiles + w * S::WARP_BYTES, *vs = ks + DEC_TILE * RSK;
    float *pw = ps + w * DEC_TILE * DEC_PSTRIDE;
    int tk = sp * chunk + w * DEC_TILE;  // this warp's first tile
    long long off = tk + lane < j1 ? row_off<RB>(bt, tk + lane, kvh, a.n_kv, a.bs) : 0;
    const int fresh = sp < ns ? first_tile_early<RB, RSK, RB>(ks, vs, a, off, tk, j1, L, lane) : -1;
    pdl_wait();
    dec_stamp(a, 1);
    if (a.trace) {
        unsigned smid;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
        dec_record(a, 6, smid);
    }
    // Cluster merge: this block's state, after the warps' in the tile buffers (merge_warps).
    auto cl_state = [&]() { return (float *)tiles + DEC_WARPS * G * HD; };
    if (CL && sp >= ns) {  // ns = 0 is the same here (sp == 0 only when no split has keys) and
        cluster_merge<HD, G>(a, cl_state(), kvh, sp, t, 0);  // compiles out the merge
        return;
    }
    if (sp >= ns) {
        if (L <= 0 && sp == 0)  // no keys (not a decode case): zeros, as the split merge would give
            for (int e = threadIdx.x; e < G * HD; e += blockDim.x)
                a.out[((size_t)t * n_heads + kvh * G) * HD + e] = __float2bfloat16(0.f);
        return;
    }
    if (fresh >= 0)
        copy_fresh_row<RB, RSK, RB>(ks, vs, a.kc, a.vc, __shfl_sync(0xffffffffu, off, fresh), fresh, lane);
    const float scale = rsqrtf((float)HD) * 1.4426950408889634f;  // log2(e) folded in
    const bf16 *qg = a.q + ((size_t)t * n_heads + kvh * G) * HD;
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
    if (a.trace && w == 0) {  // the loop's first wait, early (a test inside the loop cost registers)
        cp_async_wait<1>();
        __syncwarp();
        dec_stamp(a, 2);
    }
    for (; tk < j1; tk += DEC_WARPS * DEC_TILE) {
        const int nv = min(DEC_TILE, j1 - tk), tn = tk + DEC_WARPS * DEC_TILE;
        const bool more = tn < j1;
        const long long noff = more && tn + lane < j1 ? row_off<RB>(bt, tn + lane, kvh, a.n_kv, a.bs) : 0;
        cp_async_wait<1>();  // this tile's K (its V may still be in flight)
        __syncwarp();
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
        __syncwarp();  // K buffer read by all lanes, p visible
        if (more) {
            copy_tile<RB, RSK>(ks, a.kc, noff, min(DEC_TILE, j1 - tn), lane);
            cp_async_commit();
            cp_async_wait<1>();  // this tile's V
        } else {
            cp_async_wait<0>();
        }
        __syncwarp();
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
        __syncwarp();  // V buffer and p read by all lanes
        if (more) {
            copy_tile<RB, RB>(vs, a.vc, noff, min(DEC_TILE, j1 - tn), lane);
            cp_async_commit();
        }
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
    const bool last = merge_warps<HD, G, CL>(a, ml, sm, cl_state(), i, kvh, sp, t, ns);
    if (CL) {
        cluster_merge<HD, G>(a, cl_state(), kvh, sp, t, ns);
        return;
    }
    dec_stamp(a, 4);
    if (!last) return;
    merge_splits<HD, G>(a, sm + DEC_WARPS * G * HD, i, kvh, t, ns);
    if (threadIdx.x == 0) a.tickets[(size_t)i * a.n_kv + kvh] = 0;  // re-arm for the next launch / replay
    dec_stamp(a, 5);
}

// Tensor-core decode attention over a bf16 cache: the same grid, splits, tiles, cp.async
// pipeline and merges as k_attn_decode, with the warp's two products on mma.sync m16n8k16:
//  - Q.K: A = the G query rows of the kv head padded to 16 (rows >= G zero; lane (g, c) =
//    (lane / 4, lane % 4) holds q[g] dims 16 ks + 2c.. and + 8 in registers, loaded once),
//    B = 8 keys x 16 dims by ldmatrix from the K tile: per 32-key tile 4 x HD/16 mma, and lane
//    (g, c) ends with head g's scores of keys 8 nt + 2c, + 1.
//  - online softmax per head across the quad's lanes (two shuffles), p rounded to bf16 (the
//    sum l adds the rounded values, so the weights sum to one);
//  - P.V: A = P (the scores' C fragments are the A fragments of the next product: no shuffle),
//    B = 16 keys x 8 dims by ldmatrix.trans from the V tile: 2 x HD/8 mma per tile.
// About 200 instructions per warp and tile against about 1900 on the CUDA cores, whose key
// loop at 32 keys per warp was latency bound (one warp per scheduler).
template <int HD>
struct dec_tc_shape {
    static constexpr int RB = HD * 2, RS = RB + 16;  // rows padded: ldmatrix rows hit distinct banks
    static constexpr int WARP_BYTES = 2 * DEC_TILE * RS;
    static constexpr int ML_BYTES = DEC_WARPS * 8 * 8;  // warps' (m, l) per head, G <= 8
    static constexpr size_t SMEM = ML_BYTES + DEC_WARPS * WARP_BYTES;
    static_assert((DEC_WARPS * 8 * HD + 3 * 8 * DEC_MAX_SPLITS) * 4 <= DEC_WARPS * WARP_BYTES, "merge space");
    static_assert((DEC_WARPS * 8 * HD + 8 * HD + 2 * 8) * 4 <= DEC_WARPS * WARP_BYTES, "cluster state space");
};

template <int HD, int G, bool CL>
__global__ void __launch_bounds__(DEC_WARPS * 32) k_attn_decode_tc(const dec_args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    if (CL) {  // no clusters before sm_90: never launched there (and not compiled)
        __trap();
        return;
    }
#endif
    typedef dec_tc_shape<HD> S;
    constexpr int RB = S::RB, RS = S::RS, NT = HD / 8;  // NT: 8-dim column tiles of the output
    extern __shared__ __align__(16) uint8_t smem[];
    float2 *ml = (float2 *)smem;          // [warp][G] (m, l), after the loop
    uint8_t *tiles = smem + S::ML_BYTES;  // per warp: K [32][RS], V [32][RS]
    pdl_launch_dependents();
    dec_stamp(a, 0);
    const int sp = blockIdx.x, kvh = blockIdx.y, i = blockIdx.z, n_heads = G * a.n_kv;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
    const int seq = a.seqs[i], L = a.s.seq_len[seq], t = a.s.seq_q0[seq];
    int chunk = (L + a.n_splits - 1) / a.n_splits;
    chunk = max(a.min_chunk, (chunk + DEC_TILE - 1) / DEC_TILE * DEC_TILE);
    const int ns = (L + chunk - 1) / chunk;  // splits holding keys
    const int j1 = min(L, (sp + 1) * chunk);
    const int32_t *bt = a.s.block_tables + (size_t)seq * a.s.bt_stride;
    uint8_t *ks = tiles + w * S::WARP_BYTES, *vs = ks + DEC_TILE * RS;
    int tk = sp * chunk + w * DEC_TILE;  // this warp's first tile
    long long off = tk + lane < j1 ? row_off<RB>(bt, tk + lane, kvh, a.n_kv, a.bs) : 0;
    const int fresh = sp < ns ? first_tile_early<RB, RS, RS>(ks, vs, a, off, tk, j1, L, lane) : -1;
    pdl_wait();
    dec_stamp(a, 1);
    if (a.trace) {
        unsigned smid;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
        dec_record(a, 6, smid);
    }
    auto cl_state = [&]() { return (float *)tiles + DEC_WARPS * G * HD; };
    if (CL && sp >= ns) {
        cluster_merge<HD, G>(a, cl_state(), kvh, sp, t, 0);
        return;
    }
    if (sp >= ns) {
        if (L <= 0 && sp == 0)  // no keys (not a decode case): zeros, as the split merge would give
            for (int e = threadIdx.x; e < G * HD; e += blockDim.x)
                a.out[((size_t)t * n_heads + kvh * G) * HD + e] = __float2bfloat16(0.f);
        return;
    }
    if (fresh >= 0)
        copy_fresh_row<RB, RS, RS>(ks, vs, a.kc, a.vc, __shfl_sync(0xffffffffu, off, fresh), fresh, lane);
    // q[g] as A fragments: per 16-dim step, dims 2c, 2c + 1 and 2c + 8, 2c + 9 (rows g + 8: zero)
    uint32_t qa[HD / 16][2];
    {
        const uint32_t *qw = (const uint32_t *)(a.q + ((size_t)t * n_heads + kvh * G + min(g, G - 1)) * HD);
#pragma unroll
        for (int k = 0; k < HD / 16; k++) {
            qa[k][0] = g < G ? __ldcg(qw + 8 * k + c) : 0u;
            qa[k][1] = g < G ? __ldcg(qw + 8 * k + 4 + c) : 0u;
        }
    }
    const float scale = rsqrtf((float)HD) * 1.4426950408889634f;  // log2(e) folded in
    // ldmatrix row addresses: K, matrix j = lane / 8: key lane % 8 of an 8-key group, dims 8 j
    // of a 32-dim step; V (transposed), matrix j: key 8 (j & 1) + lane % 8 of a 16-key step,
    // dims 8 (j >> 1) of a 16-dim pair of column tiles.
    const uint8_t *k_ld = ks + (lane & 7) * RS + (lane >> 3) * 16;
    const uint8_t *v_ld = vs + (((lane >> 3) & 1) * 8 + (lane & 7)) * RS + (lane >> 4) * 16;
    float m = -INFINITY, l = 0;  // head g: running max (log2 units), this lane's part of the sum
    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0;
    if (a.trace && w == 0) {  // the loop's first wait, early
        cp_async_wait<1>();
        __syncwarp();
        dec_stamp(a, 2);
    }
    for (; tk < j1; tk += DEC_WARPS * DEC_TILE) {
        const int nv = min(DEC_TILE, j1 - tk), tn = tk + DEC_WARPS * DEC_TILE;
        const bool more = tn < j1;
        const long long noff = more && tn + lane < j1 ? row_off<RB>(bt, tn + lane, kvh, a.n_kv, a.bs) : 0;
        cp_async_wait<1>();  // this tile's K (its V may still be in flight)
        __syncwarp();
        float s[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0;
#pragma unroll
            for (int kp = 0; kp < HD / 32; kp++) {
                uint32_t b[4];
                ldsm_x4(b, k_ld + nt * 8 * RS + kp * 64);
                const uint32_t a0[4] = {qa[2 * kp][0], 0u, qa[2 * kp][1], 0u};
                const uint32_t a1[4] = {qa[2 * kp + 1][0], 0u, qa[2 * kp + 1][1], 0u};
                mma_bf16(s[nt], a0, b[0], b[1]);
                mma_bf16(s[nt], a1, b[2], b[3]);
            }
        }
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float v = nt * 8 + 2 * c + e < nv ? s[nt][e] * scale : -INFINITY;
                s[nt][e] = v;
                mx = fmaxf(mx, v);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(m, mx);  // finite: key tk is valid
        const float corr = exp2f(m - mn);
        m = mn;
        uint32_t pk[4];  // p of keys 8 nt + 2c, + 1 as bf16 pairs
        float psum = 0;
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const __nv_bfloat162 p2 = __floats2bfloat162_rn(exp2f(s[nt][0] - mn), exp2f(s[nt][1] - mn));
            const float2 pf = __bfloat1622float2(p2);
            psum += pf.x + pf.y;
            pk[nt] = *(const uint32_t *)&p2;
        }
        l = l * corr + psum;
        __syncwarp();  // every lane is done with the K buffer
        if (more) {
            copy_tile<RB, RS>(ks, a.kc, noff, min(DEC_TILE, j1 - tn), lane);
            cp_async_commit();
            cp_async_wait<1>();  // this tile's V
        } else {
            cp_async_wait<0>();
        }
        __syncwarp();
#pragma unroll
        for (int n = 0; n < NT; n++) o[n][0] *= corr, o[n][1] *= corr;  // rows g + 8 stay zero
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            const uint32_t pa[4] = {pk[2 * kk], 0u, pk[2 * kk + 1], 0u};
#pragma unroll
            for (int dp = 0; dp < NT / 2; dp++) {
                uint32_t b[4];
                ldsm_x4_t(b, v_ld + kk * 16 * RS + dp * 32);
                mma_bf16(o[2 * dp], pa, b[0], b[1]);
                mma_bf16(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
        __syncwarp();  // V buffer read by all lanes
        if (more) {
            copy_tile<RB, RS>(vs, a.vc, noff, min(DEC_TILE, j1 - tn), lane);
            cp_async_commit();
        }
    }
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    dec_stamp(a, 3);
    float *sm = (float *)tiles;  // [warp][G][HD], once every warp is done with its tiles
    __syncthreads();
    if (g < G) {
        if (c == 0) ml[w * G + g] = make_float2(m, l);
#pragma unroll
        for (int n = 0; n < NT; n++) *(float2 *)(sm + (w * G + g) * HD + 8 * n + 2 * c) = make_float2(o[n][0], o[n][1]);
    }
    const bool last = merge_warps<HD, G, CL>(a, ml, sm, cl_state(), i, kvh, sp, t, ns);
    if (CL) {
        cluster_merge<HD, G>(a, cl_state(), kvh, sp, t, ns);
        return;
    }
    dec_stamp(a, 4);
    if (!last) return;
    merge_splits<HD, G>(a, sm + DEC_WARPS * G * HD, i, kvh, t, ns);
    if (threadIdx.x == 0) a.tickets[(size_t)i * a.n_kv + kvh] = 0;  // re-arm for the next launch / replay
    dec_stamp(a, 5);
}

// cluster: the split merge through a cluster of grid.x (<= 8, portable) blocks. At most 8
// blocks of 128 threads and at most 74 KiB of shared memory each (hd 128, G = 8) fit in any
// GPC of an H100/H200 (16+ SMs, 3 such blocks per SM), so no occupancy query is needed.
// tc: the tensor-core kernel (bf16 cache only: FP8 false).
template <int HD, int G, bool FP8>
static void launch(const dec_args &a, dim3 grid, bool cluster, bool tc, cudaStream_t st) {
    void (*kern)(const dec_args) = cluster ? k_attn_decode<HD, G, FP8, true> : k_attn_decode<HD, G, FP8, false>;
    size_t sm = dec_shape<HD, G, FP8>::SMEM;
    if (tc && !FP8) {
        kern = cluster ? k_attn_decode_tc<HD, G, true> : k_attn_decode_tc<HD, G, false>;
        sm = dec_tc_shape<HD>::SMEM;
    }
    CU_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    const dim3 block(DEC_WARPS * 32);
    cu_note(cluster ? pdl_launch_cluster(kern, grid, grid.x, block, sm, st, a) : pdl_launch(kern, grid, block, sm, st, a),
            __FILE__, __LINE__, "attn_decode");
}

template <int HD, bool FP8>
static void launch_g(int G, const dec_args &a, dim3 grid, bool cluster, bool tc, cudaStream_t st) {
    switch (G) {
    case 1: launch<HD, 1, FP8>(a, grid, cluster, tc, st); break;
    case 2: launch<HD, 2, FP8>(a, grid, cluster, tc, st); break;
    case 3: launch<HD, 3, FP8>(a, grid, cluster, tc, st); break;
    case 4: launch<HD, 4, FP8>(a, grid, cluster, tc, st); break;
    case 5: launch<HD, 5, FP8>(a, grid, cluster, tc, st); break;
    case 6: launch<HD, 6, FP8>(a, grid, cluster, tc, st); break;
    case 7: launch<HD, 7, FP8>(a, grid, cluster, tc, st); break;
    default: launch<HD, 8, FP8>(a, grid, cluster, tc, st); break;
    }
}

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

// The tensor-core kernel for bf16 caches, on by default: PAGODA_ATTN_TC=0 (read at the first
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
    const bool fp8 = kv_type != CU_KV_BF16, tc = !fp8 && tc_path();
    if (hd == 128)
        fp8 ? launch_g<128, true>(G, a, grid, cluster, false, st) : launch_g<128, false>(G, a, grid, cluster, tc, st);
    else
        fp8 ? launch_g<64, true>(G, a, grid, cluster, false, st) : launch_g<64, false>(G, a, grid, cluster, tc, st);
}
