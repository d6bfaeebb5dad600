// libFuzzer target: config.json and generation_config.json parsing.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    struct model_config c;
    char err[PG_ERR_LEN], buf[256];
    if (model_config_parse(&c, s, "fuzz/config.json", err) == 0) {
        if (c.hidden <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads || c.head_dim <= 0) abort();
        model_config_describe(&c, buf, sizeof buf);
        model_config_parse_generation(&c, s, "fuzz/generation_config.json", err);
    }
    free(s);
    return 0;
}
