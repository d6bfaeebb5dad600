// Sampling on the GPU, with the host sampler's semantics (backend/sampling.h): allowed
// bitmask and banned ids (-inf), logit bias, repetition penalty (HF: prompt and output
// tokens, each distinct token once), presence/frequency penalties (output tokens);
// logprob = log softmax of those logits (before temperature and truncation), top-n logprobs
// from the same; temperature < 1e-5: argmax (ties to the lower id); else p = softmax(l / T),
// top_k, then the top_p nucleus of what top_k kept, then min_p (p >= min_p * p_max); draw
// u = pg_uniform(seed, step, 0) and take the first kept token in id order whose cumulative
// kept mass exceeds u * kept mass. Thresholds are found by bisection over the float bits of
// p (monotone for p >= 0), so no sort is needed: one block of 1024 threads per row. Exact
// ties of probability at a top_k / top_p boundary are all kept (the host keeps lower ids).
#include <math.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"
#include "backend/sampling.h"

#define SB 1024

__device__ float bsum(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) s += red[i];
    return s;
}
__device__ float bmax(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = -INFINITY;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) s = fmaxf(s, red[i]);
    return s;
}
// Block argmax: largest value, lowest index among ties. Values equal to -inf lose to any id.
__device__ void bargmax(float v, int idx, float *redv, int *redi, float *ov, int *oi) {
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        if (v2 > v || (v2 == v && i2 < idx)) {
            v = v2;
            idx = i2;
        }
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        redv[threadIdx.x >> 5] = v;
        redi[threadIdx.x >> 5] = idx;
    }
    __syncthreads();
    float bv = redv[0];
    int bi = redi[0];
    for (int i = 1; i < (int)(blockDim.x >> 5); i++)
        if (redv[i] > bv || (redv[i] == bv && redi[i] < bi)) {
            bv = redv[i];
            bi = redi[i];
        }
    *ov = bv;
    *oi = bi;
}

// Masks, then logit bias, then penalties: the order of the host sampler (backend/sampler.c).
__global__ void k_penalties(float *logits, int vocab, const struct cu_sample_params *pp, struct cu_sample_lists L) {
    pdl_launch_dependents();
    pdl_wait();
    const struct cu_sample_params p = pp[blockIdx.x];
    float *row = logits + (size_t)blockIdx.x * vocab;
    if (p.allowed_off >= 0)
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            if (!((L.allowed[p.allowed_off + (v >> 5)] >> (v & 31)) & 1)) row[v] = -INFINITY;
    for (int e = threadIdx.x; e < p.ban_n; e += blockDim.x) row[L.ban[p.ban_off + e]] = -INFINITY;
    __syncthreads();
    if (threadIdx.x == 0)
        for (int e = 0; e < p.bias_n; e++) row[L.bias_tok[p.bias_off + e]] += L.bias_val[p.bias_off + e];
    __syncthreads();
    for (int e = threadIdx.x; e < p.pen_n; e += blockDim.x) {
        int t = L.pen_tok[p.pen_off + e], cnt = L.pen_cnt[p.pen_off + e];
        float l = row[t];
        if ((L.pen_flags[p.pen_off + e] & 1) && p.repetition_penalty != 1.0f)
            l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
        if (cnt > 0) l -= p.presence_penalty + p.frequency_penalty * cnt;
        row[t] = l;
    }
}

// count of p >= t (as float bits) or mass of p >= t
__device__ float pass_ge(const float *pr, int vocab, uint32_t tb, bool mass, float *red) {
    float t = __uint_as_float(tb), s = 0;
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
        float p = pr[v];
        if (p >= t) s += mass ? p : 1.0f;
    }
    return bsum(s, red);
}

__device__ void top_logprobs(const float *row, int vocab, float inv_t, float M, float logZ, int n,
                             struct cu_sample_out *o, float *redv, int *redi) {
    __shared__ int picked[20];
    for (int k = 0; k < n; k++) {
        float best = -INFINITY;
        int bi = 0x7fffffff;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
            bool used = false;
            for (int u = 0; u < k; u++) used |= picked[u] == v;
            float z = row[v] * inv_t;
            if (!used && (z > best || (z == best && v < bi))) {
                best = z;
                bi = v;
            }
        }
        float bv;
        int id;
        bargmax(best, bi, redv, redi, &bv, &id);
        __syncthreads();
        if (threadIdx.x == 0) {
            picked[k] = id;
            o->top_ids[k] = id;
            o->top_logprobs[k] = bv - M - logZ;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) o->n_top = n;
}

__global__ void __launch_bounds__(SB) k_sample(const float *logits, int vocab, const struct cu_sample_params *pp,
                                               float *scratch, struct cu_sample_out *outs) {
    __shared__ float red[32], redv[32];
    __shared__ int redi[32];
    __shared__ float sh_cum[SB];
    pdl_launch_dependents();
    pdl_wait();
    const struct cu_sample_params p = pp[blockIdx.x];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    float *pr = scratch + (size_t)blockIdx.x * vocab;
    struct cu_sample_out *o = outs + blockIdx.x;
    const bool greedy = !(p.temperature >= 1e-5f);
    const float inv_t = greedy ? 1.0f : 1.0f / p.temperature;

    // max / argmax and the log-partition of the processed logits at temperature 1 (logprobs);
    // p = exp((l - max) / T) for the draw (the max of l / T is max / T since T > 0).
    float mx = -INFINITY;
    int mi = 0x7fffffff;
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
        float z = row[v];
        if (z > mx || (z == mx && v < mi)) {
            mx = z;
            mi = v;
        }
    }
    float M;
    int amax;
    bargmax(mx, mi, redv, redi, &M, &amax);
    float z = 0;
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
        z += __expf(row[v] - M);
        if (!greedy) pr[v] = __expf((row[v] - M) * inv_t);
    }
    const float Z = bsum(z, red), logZ = logf(Z);
    int tok = amax;
    if (!greedy) {
        // top_k (ties kept), then the top_p nucleus of what top_k kept, then min_p.
        uint32_t thr = 0;
        if (p.top_k > 0 && p.top_k < vocab) {
            uint32_t lo = 0, hi = 0x3F800001u;
            while (hi - lo > 1) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (pass_ge(pr, vocab, mid, false, red) >= (float)p.top_k) lo = mid; else hi = mid;
            }
            thr = lo;
        }
        if (p.top_p < 1.0f) {
            float target = p.top_p * pass_ge(pr, vocab, thr, true, red);
            uint32_t lo = thr, hi = 0x3F800001u;
            while (hi - lo > 1) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (pass_ge(pr, vocab, mid, true, red) >= target) lo = mid; else hi = mid;
            }
            thr = lo;
        }
        if (p.min_p > 0) thr = max(thr, __float_as_uint(p.min_p));
        const float t = __uint_as_float(thr);
        // Contiguous ranges per thread so that the scan runs in token-id order.
        const int per = (vocab + SB - 1) / SB, b0 = threadIdx.x * per, b1 = min(vocab, b0 + per);
        float local = 0;
        for (int v = b0; v < b1; v++) local += pr[v] >= t ? pr[v] : 0.f;
        sh_cum[threadIdx.x] = local;
        __syncthreads();
        if (threadIdx.x == 0) {
            float c = 0;
            for (int i = 0; i < SB; i++) {
                float x = sh_cum[i];
                sh_cum[i] = c;
                c += x;
            }
            redv[0] = c;
        }
        __syncthreads();
        const float total = redv[0], u = pg_uniform(p.seed, p.step, 0) * total;
        __shared__ int chosen;
        if (threadIdx.x == 0) chosen = -1;
        __syncthreads();
        float c = sh_cum[threadIdx.x];
        const bool last_nz = threadIdx.x == SB - 1 || sh_cum[threadIdx.x + 1] >= total;
        if (local > 0 && c <= u && (u < c + local || last_nz)) {
            int last = -1;
            for (int v = b0; v < b1; v++) {
                if (pr[v] < t) continue;
                last = v;
                c += pr[v];
                if (c > u) break;
            }
            atomicMax(&chosen, last);
        }
        __syncthreads();
        tok = chosen >= 0 ? chosen : amax;
    }
    if (threadIdx.x == 0) {
        o->token = tok;
        o->logprob = row[tok] - M - logZ;
        o->n_top = 0;
    }
    if (p.n_logprobs > 0) top_logprobs(row, vocab, 1.0f, M, logZ, min(p.n_logprobs, 20), o, redv, redi);
}

extern "C" void cu_sample(float *logits, int n, int vocab, const struct cu_sample_params *p,
                          const struct cu_sample_lists *lists, float *scratch, struct cu_sample_out *out,
                          cudaStream_t st) {
    if (n <= 0) return;
    CU_CHECK(pdl_launch(k_penalties, n, 256, 0, st, logits, vocab, p, *lists));
    CU_CHECK(pdl_launch(k_sample, n, SB, 0, st, logits, vocab, p, scratch, out));
}

// ---- greedy argmax ----
// Each block reduces a chunk of a row: m = its largest logit, idx = the lowest id holding it,
// z = sum of exp(x - m). A row of one chunk is finished by its block; otherwise each block
// stores its partial and takes a ticket, and the row's last block merges the partials:
// M = max m, token = the lowest idx among the chunks holding M (chunks are in id order),
// Z = sum of z * exp(m - M) (a fixed reduction order: deterministic), logprob = -log(Z).
#define AM_SPLIT_THREADS 256
#define AM_MAX_CHUNKS 128   // blocks per row when split (<= AM_SPLIT_THREADS: one thread per chunk in the merge)
#define AM_MIN_CHUNK 1024   // fewest logits per block

static int am_chunks(int vocab) {
    int c = (vocab + AM_MIN_CHUNK - 1) / AM_MIN_CHUNK;
    return c < 1 ? 1 : c > AM_MAX_CHUNKS ? AM_MAX_CHUNKS : c;
}

// grid (chunks, rows), chunk logits per block. scratch (chunks > 1), per row: slot 0's first
// word is the row's ticket, slot 1 + c chunk c's partial (m, z, idx as float bits, unused).
__global__ void __launch_bounds__(SB) k_argmax(const float *logits, int vocab, int chunk, float4 *scratch,
                                               struct cu_sample_out *outs) {
    __shared__ float red[32], redv[32];
    __shared__ int redi[32];
    __shared__ bool last;
    pdl_launch_dependents();
    pdl_wait();
    const int row = blockIdx.y, nc = gridDim.x;
    const float *lg = logits + (size_t)row * vocab;
    const int v0 = blockIdx.x * chunk, v1 = min(vocab, v0 + chunk);
    float mx = -INFINITY;
    int mi = 0x7fffffff;
#pragma unroll 4  // four loads in flight
    for (int v = v0 + threadIdx.x; v < v1; v += blockDim.x) {
        const float x = lg[v];
        if (x > mx || (x == mx && v < mi)) {  // -inf ties too: a row of only -inf gives id 0
            mx = x;
            mi = v;
        }
    }
    float m;
    int idx;
    bargmax(mx, mi, redv, redi, &m, &idx);
    // A chunk of only -inf (m = -inf) sums exp(x) instead (0; NaN if it holds a NaN) and its
    // weight exp(m - M) is 0, so it adds to Z what exp(x - M) adds in one sum over the row; when
    // the whole row is -inf, M = -inf makes the weight, Z and the logprob NaN, as the host
    // sampler's -inf - (-inf).
    const float ref = m > -INFINITY ? m : 0.f;
    float z = 0;
    for (int v = v0 + threadIdx.x; v < v1; v += blockDim.x) z += __expf(lg[v] - ref);
    z = bsum(z, red);
    float pm = -INFINITY, pz = 0;  // the merge's input: thread c holds chunk c
    int pi = 0x7fffffff;
    if (nc == 1) {
        if (threadIdx.x == 0) pm = m, pz = z, pi = idx;
    } else {
        float4 *slots = scratch + (size_t)row * (nc + 1);
        unsigned *ticket = (unsigned *)slots;
        if (threadIdx.x == 0) {  // release the partial, take a ticket; the last block acquires all
            slots[1 + blockIdx.x] = make_float4(m, z, __int_as_float(idx), 0.f);
            __threadfence();
            const bool l = atomicAdd(ticket, 1u) == (unsigned)nc - 1;
            if (l) __threadfence();
            last = l;
        }
        __syncthreads();
        if (!last) return;
        if (threadIdx.x < nc) {
            const float4 p = __ldcg(slots + 1 + threadIdx.x);
            pm = p.x, pz = p.y, pi = __float_as_int(p.z);
        }
        if (threadIdx.x == 0) *ticket = 0;  // re-armed for the next launch (graph replays)
    }
    float M;
    int tok;
    bargmax(pm, pi, redv, redi, &M, &tok);
    const float Z = bsum(threadIdx.x < nc ? pz * __expf(pm - M) : 0.f, red);
    if (threadIdx.x == 0) {
        outs[row].token = tok;
        outs[row].logprob = -logf(Z);
        outs[row].n_top = 0;
    }
}

extern "C" void cu_argmax(const float *logits, int n, int vocab, struct cu_sample_out *out, cudaStream_t st) {
    if (n <= 0) return;
    CU_CHECK(pdl_launch(k_argmax, dim3(1, n), SB, 0, st, logits, vocab, vocab, (float4 *)NULL, out));
}

extern "C" size_t cu_argmax_scratch_bytes(int n, int vocab) {
    return (size_t)n * (am_chunks(vocab) + 1) * sizeof(float4);
}

extern "C" void cu_argmax_split(const float *logits, int n, int vocab, void *scratch, struct cu_sample_out *out,
                                cudaStream_t st) {
    if (n <= 0) return;
    const int nc = am_chunks(vocab), chunk = (vocab + nc - 1) / nc;
    CU_CHECK(pdl_launch(k_argmax, dim3(nc, n), AM_SPLIT_THREADS, 0, st, logits, vocab, chunk, (float4 *)scratch, out));
}
