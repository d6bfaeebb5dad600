// libFuzzer target: the safetensors header parser. Input: a whole .safetensors file image
// (8-byte little-endian header length, JSON header, data section).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    if (hlen > size - 8) hlen = size - 8; // the file-level check rejects this; fuzz the parser anyway
    char *json = malloc(hlen ? hlen : 1);
    memcpy(json, data + 8, hlen);
    const uint8_t *d = data + 8 + hlen;
    size_t dlen = size - 8 - hlen;
    struct st_tensor *t;
    int n;
    char err[PG_ERR_LEN];
    if (st_parse_header(json, hlen, d, dlen, "fuzz.safetensors", &t, &n, err) == 0) {
        for (int i = 0; i < n; i++) { // every accepted tensor lies inside the data section
            const uint8_t *p = t[i].data;
            if (p < d || p + t[i].nbytes > d + dlen) abort();
            if (t[i].nbytes) (void)*(volatile const uint8_t *)(p + t[i].nbytes - 1);
        }
        st_free_tensors(t, n);
    }
    free(json);
    return 0;
}
