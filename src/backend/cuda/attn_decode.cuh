// Decode attention, what its two kernels share: the arguments, the block stamps, the tile
// copies (and the first tile in flight before pdl_wait), and the merges of the warps' and the
// splits' online-softmax states. attn_decode.cu holds the CUDA-core kernel and the launcher
// (cu_attn_decode); attn_decode_tc.cu the tensor-core kernel (the default). The design is in
// attn_decode.cu's header.
#pragma once
#include <math.h>
#include <stdint.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_cache.cuh"
#include "backend/cuda/pdl.cuh"

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

// A block's place: split sp of kv head kvh of the i-th decode sequence, whose L keys give ns
// splits with keys (each a multiple of the tile, at least a.min_chunk keys); this split ends
// at key j1; this warp's first tile starts at key tk, and lane r's `off` is the byte offset of
// key tk + r's row (0 past j1). Reads only step arrays (before pdl_wait).
struct dec_block {
    int sp, kvh, i, L, t, ns, j1, tk;
    const int32_t *bt;
    long long off;
};
template <int RB>
__device__ __forceinline__ dec_block dec_block_of(const dec_args &a) {
    dec_block b;
    b.sp = blockIdx.x, b.kvh = blockIdx.y, b.i = blockIdx.z;
    const int seq = a.seqs[b.i];
    b.L = a.s.seq_len[seq], b.t = a.s.seq_q0[seq];
    int chunk = (b.L + a.n_splits - 1) / a.n_splits;
    chunk = max(a.min_chunk, (chunk + DEC_TILE - 1) / DEC_TILE * DEC_TILE);
    b.ns = (b.L + chunk - 1) / chunk;
    b.j1 = min(b.L, (b.sp + 1) * chunk);
    b.bt = a.s.block_tables + (size_t)seq * a.s.bt_stride;
    b.tk = b.sp * chunk + (threadIdx.x >> 5) * DEC_TILE;
    const int r = b.tk + (threadIdx.x & 31);
    b.off = r < b.j1 ? row_off<RB>(b.bt, r, b.kvh, a.n_kv, a.bs) : 0;
    return b;
}

// Right after pdl_wait: the stamps; a block whose split holds no keys is done (in a cluster it
// still passes the merge's barriers; with no keys at all split 0 writes zeros, as a merge
// would). Returns whether the block goes on to its keys.
template <int HD, int G, bool CL>
__device__ __forceinline__ bool dec_block_has_keys(const dec_args &a, const dec_block &b, const float *cl_state) {
    dec_stamp(a, 1);
    if (a.trace) {
        unsigned smid;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
        dec_record(a, 6, smid);
    }
    if (b.sp < b.ns) return true;
    if (CL) {  // ns = 0 is the same here (sp == 0 only when no split has keys) and compiles out the merge
        cluster_merge<HD, G>(a, cl_state, b.kvh, b.sp, b.t, 0);
    } else if (b.L <= 0 && b.sp == 0) {
        for (int e = threadIdx.x; e < G * HD; e += blockDim.x)
            a.out[((size_t)b.t * G * a.n_kv + b.kvh * G) * HD + e] = __float2bfloat16(0.f);
    }
    return false;
}

// The block's end, once every warp has left its state in shared memory (ml, sm; cl_state
// after sm): merges the warps, then the splits (cluster or ticket; the ticket's last block
// re-arms it for the next launch or graph replay).
template <int HD, int G, bool CL>
__device__ __forceinline__ void dec_block_finish(const dec_args &a, const dec_block &b, const float2 *ml, float *sm,
                                                 float *cl_state) {
    const bool last = merge_warps<HD, G, CL>(a, ml, sm, cl_state, b.i, b.kvh, b.sp, b.t, b.ns);
    if (CL) {
        cluster_merge<HD, G>(a, cl_state, b.kvh, b.sp, b.t, b.ns);
        return;
    }
    dec_stamp(a, 4);
    if (!last) return;
    merge_splits<HD, G>(a, sm + DEC_WARPS * G * HD, b.i, b.kvh, b.t, b.ns);
    if (threadIdx.x == 0) a.tickets[(size_t)b.i * a.n_kv + b.kvh] = 0;
    dec_stamp(a, 5);
}

// The warp's walk over its tiles (keys [tk, tk + 32), then tk + 128, ... below j1), K and V by
// cp.async, one commit group each: the next tile's K is in flight during this tile's P.V, its
// V during the next tile's Q.K.
// The next tile's key count (0: none) and lane r's byte offset of its key tn + r.
template <int RB>
__device__ __forceinline__ int next_tile(const dec_args &a, const dec_block &b, int tn, long long *noff) {
    const int lane = threadIdx.x & 31, nn = tn < b.j1 ? min(DEC_TILE, b.j1 - tn) : 0;
    *noff = lane < nn ? row_off<RB>(b.bt, tn + lane, b.kvh, a.n_kv, a.bs) : 0;
    return nn;
}
// This tile's K is in shared memory (its V may still be in flight).
__device__ __forceinline__ void wait_k(void) {
    cp_async_wait<1>();
    __syncwarp();
}
// cu_attn_trace's stamp 2: warp 0's first K tile is in shared memory (waited for here, before
// the loop: a test inside it cost registers).
__device__ __forceinline__ void dec_stamp_first_tile(const dec_args &a) {
    if (a.trace && threadIdx.x < 32) {
        wait_k();
        dec_stamp(a, 2);
    }
}
// The warp is done with the K buffer (and what else its lanes shared): the next tile's K in
// flight (nn > 0), then this tile's V awaited.
template <int RB, int RS>
__device__ __forceinline__ void next_k_wait_v(uint8_t *ks, const uint8_t *kc, long long noff, int nn) {
    __syncwarp();
    if (nn) {
        copy_tile<RB, RS>(ks, kc, noff, nn, threadIdx.x & 31);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncwarp();
}
// The warp is done with the V buffer: the next tile's V in flight.
template <int RB, int RS>
__device__ __forceinline__ void next_v(uint8_t *vs, const uint8_t *vc, long long noff, int nn) {
    __syncwarp();
    if (nn) {
        copy_tile<RB, RS>(vs, vc, noff, nn, threadIdx.x & 31);
        cp_async_commit();
    }
}

// Launches kern over grid (blocks of DEC_WARPS warps, sm bytes of dynamic shared memory) with
// PDL, in clusters of grid.x blocks when `cluster` (at most 8 blocks of 128 threads and at
// most 74 KiB of shared memory each fit in any GPC of an H100/H200, so no occupancy query).
static inline void dec_launch(void (*kern)(const dec_args), size_t sm, const dec_args &a, dim3 grid, bool cluster,
                              cudaStream_t st, const char *what) {
    CU_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    const dim3 block(DEC_WARPS * 32);
    cu_note(cluster ? pdl_launch_cluster(kern, grid, grid.x, block, sm, st, a) : pdl_launch(kern, grid, block, sm, st, a),
            __FILE__, __LINE__, what);
}

// L::run<G>(args...) with the query heads per kv head G (1..8) as a constant.
template <typename L, typename... A>
static inline void with_g(int G, A... args) {
    switch (G) {
    case 1: L::template run<1>(args...); break;
    case 2: L::template run<2>(args...); break;
    case 3: L::template run<3>(args...); break;
    case 4: L::template run<4>(args...); break;
    case 5: L::template run<5>(args...); break;
    case 6: L::template run<6>(args...); break;
    case 7: L::template run<7>(args...); break;
    default: L::template run<8>(args...); break;
    }
}

// The tensor-core kernel's launcher (attn_decode_tc.cu): G = n_heads / n_kv in 1..8, hd 64 or
// 128, any cache type; cluster: the split merge through a cluster of grid.x (<= 8) blocks.
void attn_decode_tc_launch(const dec_args &a, int G, int hd, int kv_type, dim3 grid, bool cluster, cudaStream_t st);
