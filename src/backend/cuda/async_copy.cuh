// cp.async (global -> shared without registers, sm_80+), shared by the kernels. Every wrapper
// carries a "memory" clobber, so the compiler neither caches shared values in registers across
// it nor moves other shared accesses over it; completion is still only what
// cp_async_wait<N>() (plus the warp or block barrier the caller needs) guarantees.
#pragma once
#include <stdint.h>

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes from src to dst; src_bytes < 16 zero-fills the rest (0: nothing read from src).
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes = 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
