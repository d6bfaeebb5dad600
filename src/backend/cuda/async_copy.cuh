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

// Hopper (sm_90+) bulk copies: one thread moves a contiguous global range into shared memory
// through the TMA unit, its completion counted in bytes on an mbarrier (init once by one
// thread, mbar_fence_init, then expect_tx + bulk copy by the issuing thread; waiters spin on
// parity 0 with mbar_wait). Global and shared addresses and the size must be multiples of 16.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PAGODA_HAS_BULK_COPY 1
#endif
__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
#ifdef PAGODA_HAS_BULK_COPY
// Makes the initialized barrier visible to the async proxy (the TMA unit).
__device__ __forceinline__ void mbar_fence_init(void) {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Announces `bytes` of bulk copies on bar and arrives (the barrier's one arrival).
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void bulk_copy_g2s(void *dst, const void *src, unsigned bytes, uint64_t *bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}
// Spins until the barrier's phase `parity` has completed (all announced bytes landed).
__device__ __forceinline__ void mbar_wait(uint64_t *bar, unsigned parity) {
    uint32_t done;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(smem_u32(bar)), "r"(parity)
            : "memory");
    } while (!done);
}
#endif
