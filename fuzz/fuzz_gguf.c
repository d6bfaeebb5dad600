// libFuzzer target: the GGUF parser (metadata, tensor infos, bounds) and dequantization of
// every tensor it accepts.
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[PG_ERR_LEN];
    uint8_t *copy = malloc(size ? size : 1); // exact-size buffer so ASan sees overreads
    memcpy(copy, data, size);
    struct gguf_file *f = gguf_parse(copy, size, "fuzz", err);
    if (f) {
        int64_t v;
        double d;
        free(gguf_get_str(f, "general.architecture", err));
        (void)gguf_get_int(f, "general.alignment", &v, err);
        (void)gguf_get_float(f, "llama.rope.freq_base", &d, err);
        for (int i = 0; i < gguf_n_tensors(f); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(f, i);
            int be, bb;
            if (ggml_type_block(t->type, &be, &bb) || t->nbytes > (1u << 20)) continue;
            int64_t n = (int64_t)(t->nbytes / (uint64_t)bb) * be;
            float *y = malloc((size_t)(n ? n : 1) * sizeof(float));
            (void)ggml_dequant(t->type, t->data, y, n, err);
            free(y);
        }
        gguf_close(f);
    }
    free(copy);
    return 0;
}
