// Fuzzes the engine's request-facing surface: sampling parameters from JSON
// (gen_request_from_json) and engine_add validation, then random add / abort / step
// sequences against the block-table-checking test backend, with the scheduler and pool
// invariants checked after every step and every block back in the pool at the end.
// Input: "<json>\n<op bytes>". Each op byte: 0-3 add (prompt from the next bytes), 4 abort,
// else step.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/c/test_engine_backend.h"
#include "engine/engine_impl.h"
#include "engine/engine_offline.h"
#include "model/config.h"

#define VOCAB 40

static void on_out(void *u, const struct engine_output *o) { (void)u; (void)o; }

static void check(struct engine *e) {
    char err[PG_ERR_LEN];
    if (sched_check(e->sched, err)) {
        fprintf(stderr, "invariant: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    size_t jlen = nl ? (size_t)(nl - data) : size;
    json_error_t je;
    json_t *obj = json_loadb((const char *)data, jlen, 0, &je);
    struct gen_request base;
    gen_request_defaults(&base);
    int32_t stop_ids[8];
    char err[PG_ERR_LEN];
    if (obj) gen_request_from_json(&base, obj, stop_ids, 8, err);
    base.n_stop = 0; // no tokenizer in this engine: stop strings are rejected anyway
    base.on_output = on_out;
    if (base.n > 4) base.n = 4;
    static struct model_config m;
    m = tb_model_config(VOCAB, 64, 1);
    struct engine_config cfg = tb_engine_config(64);
    cfg.max_num_batched_tokens = 24;
    cfg.async_scheduling = size % 2;
    struct tb *t = tb_new(24, 4, VOCAB);
    t->lazy = cfg.async_scheduling;
    struct engine *e = engine_create(&cfg, &m, &tb_ops, t, 24, NULL, err);
    const uint8_t *p = nl ? nl + 1 : data + size, *end = data + size;
    uint64_t ids[64];
    int n_ids = 0, steps = 0;
    while (p < end && steps < 2000) {
        uint8_t op = *p++;
        if (op % 8 < 4) {
            int32_t prompt[32];
            int n = 0;
            while (p < end && n < 1 + op % 32 && *p != 0xff) prompt[n++] = (int32_t)(*p++ % (VOCAB + 2)) - 1;
            struct gen_request r = base;
            r.prompt = prompt;
            r.n_prompt = n;
            uint64_t id;
            if (engine_add(e, &r, &id, err) == ENGINE_OK && n_ids < 64) ids[n_ids++] = id;
        } else if (op % 8 == 4 && n_ids) {
            engine_abort(e, ids[op % n_ids]);
        } else {
            engine_step(e);
            check(e);
            steps++;
        }
    }
    while (engine_has_work(e) && steps++ < 100000) {
        engine_step(e);
        check(e);
    }
    struct engine_stats st;
    engine_stats(e, &st);
    if (st.num_free_blocks != st.num_blocks) abort();
    engine_free(e);
    tb_free(t);
    json_decref(obj);
    return 0;
}
