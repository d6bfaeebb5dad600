#include "backend/backend.h"

#include <string.h>

#ifdef PAGODA_CUDA
extern const struct backend_ops backend_cuda;
int cuda_device_count(void);
#endif

const struct backend_ops *backend_find(const char *name) {
    if (!strcmp(name, "cpu")) return &backend_cpu;
#ifdef PAGODA_CUDA
    if (!strcmp(name, "cuda")) return &backend_cuda;
#endif
    return NULL;
}

const struct backend_ops *backend_pick(const char *device, char *err) {
    if (!device || !strcmp(device, "auto")) {
#ifdef PAGODA_CUDA
        if (cuda_device_count() > 0) return &backend_cuda;
#endif
        return &backend_cpu;
    }
    const struct backend_ops *b = backend_find(device);
    if (!b) {
#ifndef PAGODA_CUDA
        if (!strcmp(device, "cuda")) {
            pg_seterr(err, "--device cuda: this binary was built without CUDA (rebuild with make CUDA=1)");
            return NULL;
        }
#endif
        pg_seterr(err, "--device %s: unknown device (expected auto, cpu or cuda)", device);
    }
    return b;
}
