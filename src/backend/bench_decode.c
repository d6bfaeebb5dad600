// The bench's decode loop (see bench_decode.h): synchronous or with one step in flight.
#include "backend/bench_decode.h"

#include <stdlib.h>
#include <string.h>

static const int32_t feed_placeholder = -1;

// The batch of step k: every sequence decodes one token at pos0 + k, its input either last[i]
// or (feed) the token the previous step sampled for it, taken on the device.
static void fill_step(const struct bench_decode *d, const struct sampling_params *sp, int k, bool feed,
                      struct step_seq *ss) {
    for (int i = 0; i < d->n_seqs; i++) {
        struct step_seq *q = &ss[i];
        memset(q, 0, sizeof *q);
        q->n_new = 1;
        q->tokens = feed ? &feed_placeholder : &d->last[i];
        q->pos0 = d->pos0 + k;
        q->block_table = d->block_tables[i];
        q->n_blocks = d->n_blocks;
        q->sample = true;
        q->smp.params = sp;
        q->smp.step = (uint64_t)k + 1;
        q->feed = feed;
        q->feed_idx = feed ? i : 0;
    }
}

// Collects the oldest step in flight (step k); its tokens go to last[] and tokens[k].
static int collect_step(const struct backend_ops *be, void *ctx, const struct bench_decode *d, int k,
                        struct step_result *res, char *err) {
    if (be->collect(ctx, res, err)) return -1;
    for (int i = 0; i < d->n_seqs; i++) {
        d->last[i] = res[i].token;
        if (d->tokens) d->tokens[(size_t)k * d->n_seqs + i] = res[i].token;
    }
    return 0;
}

int bench_decode_run(const struct backend_ops *be, void *ctx, const struct bench_decode *d, char *err) {
    if (d->n_seqs < 1 || d->n_steps < 1) {
        pg_seterr(err, "bench decode: %d sequences, %d steps (need >= 1 each)", d->n_seqs, d->n_steps);
        return -1;
    }
    const int B = d->n_seqs;
    struct sampling_params sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .logprobs = -1};
    // two batches: step k's stays untouched while step k + 1 is built and executed
    struct step_seq *ss = pg_calloc(2 * (size_t)B, sizeof *ss);
    struct step_batch b[2] = {{B, ss, B}, {B, ss + B, B}};
    struct step_result *res = pg_calloc(B, sizeof *res);
    int n_fl = 0, rc = -1; // n_fl: steps executed and not yet collected
    double t_prev = 0;
    for (int k = 0; k < d->n_steps; k++) {
        struct step_batch *bk = &b[k & 1];
        fill_step(d, &sp, k, d->pipelined && k > 0, bk->seqs);
        double t0 = pg_now();
        if (k == 0) t_prev = t0;
        if (be->execute(ctx, bk, err)) goto fail;
        n_fl++;
        if (d->pipelined && k == 0) continue; // step 1 launches before step 0 is collected
        int kc = d->pipelined ? k - 1 : k;    // the oldest step in flight
        n_fl--;                               // a collect takes its step even when it fails
        if (collect_step(be, ctx, d, kc, res, err)) goto fail;
        double t1 = pg_now();
        if (d->t_step) d->t_step[kc] = t1 - (d->pipelined ? t_prev : t0);
        t_prev = t1;
    }
    if (d->pipelined) { // the last step
        n_fl--;
        if (collect_step(be, ctx, d, d->n_steps - 1, res, err)) goto fail;
        if (d->t_step) d->t_step[d->n_steps - 1] = pg_now() - t_prev;
    }
    rc = 0;
fail:
    for (; n_fl > 0; n_fl--) { // a failed step: drain the one still in flight, results dropped
        char drop[PG_ERR_LEN];
        be->collect(ctx, res, drop);
    }
    free(ss);
    free(res);
    return rc;
}
