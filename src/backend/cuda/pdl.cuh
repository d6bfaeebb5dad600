// Programmatic dependent launch (Hopper, sm_90+): a kernel launched with pdl_launch may
// start while the kernel before it on the stream is still running, so its launch, block
// scheduling and any prologue that reads only constant data (weights, biases, tables)
// overlap the previous kernel's tail. Works inside captured CUDA graphs. On sm_80, or with
// PAGODA_PDL=0, pdl_launch is a plain launch and the device calls are no-ops.
//
// The contract every kernel launched with pdl_launch must keep:
//  - call pdl_wait() before the first read of anything an earlier kernel of the step wrote
//    (activations, residual, KV cache, tickets, scratch) and before the first write of any
//    buffer an earlier kernel reads or writes. pdl_wait returns once the previous grid has
//    completed and its writes are visible; since that grid waited the same way, everything
//    earlier on the stream is complete too.
//  - every block executes pdl_wait() (no early return before it), so the chain holds.
//  - pdl_launch_dependents() may come anywhere (we call it first thing): the next kernel
//    is launched once every block of this one has called it or exited, i.e. once this grid
//    is fully resident, so waiting blocks never starve the running grid.
// Reading weights before pdl_wait() is the point: their loads are in flight while the
// previous kernel finishes.
#pragma once
#include <cuda_runtime.h>

__device__ __forceinline__ void pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launches carry the programmatic-serialization attribute: the current device is
// sm_90 or newer and PAGODA_PDL is not "0" (cuda_util.cu; cached per device).
extern "C" bool cu_pdl_enabled(void);

// The launch configuration: the n attributes already in attr, then the PDL attribute (attr
// must have room for it) when enabled.
static inline cudaLaunchConfig_t pdl_config(dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                            cudaLaunchAttribute *attr, unsigned n) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = attr;
    cfg.numAttrs = n + (cu_pdl_enabled() ? 1 : 0);
    return cfg;
}

// kernel<<<grid, block, smem, st>>>(args...) with the PDL attribute when enabled. Arguments
// are converted to the kernel's parameter types as in a <<<>>> launch.
template <typename... P, typename... A>
static inline cudaError_t pdl_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                     A... args) {
    cudaLaunchAttribute attr[1];
    const cudaLaunchConfig_t cfg = pdl_config(grid, block, smem, st, attr, 0);
    return cudaLaunchKernelEx(&cfg, kernel, ((P)args)...);
}

// pdl_launch with the grid in clusters of cluster_x x 1 x 1 blocks (sm_90+: the caller checks
// that the device launches clusters, cudaDevAttrClusterLaunch; grid.x a multiple of
// cluster_x, at most 8 without cudaFuncAttributeNonPortableClusterSizeAllowed). Both launch
// attributes together are allowed; a cluster launch is captured into graphs like any other.
template <typename... P, typename... A>
static inline cudaError_t pdl_launch_cluster(void (*kernel)(P...), dim3 grid, unsigned cluster_x, dim3 block,
                                             size_t smem, cudaStream_t st, A... args) {
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cluster_x;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    const cudaLaunchConfig_t cfg = pdl_config(grid, block, smem, st, attr, 1);
    return cudaLaunchKernelEx(&cfg, kernel, ((P)args)...);
}
