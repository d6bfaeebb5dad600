// The same CPU op tests against the portable (non-AVX2) linear kernels: cpu_linear.c is
// compiled here with PG_NO_SIMD, replacing the library's vectorized copy in this binary.
#define PG_NO_SIMD 1
#include "backend/cpu/cpu_linear.c"
#include "test_cpu_ops.c"
