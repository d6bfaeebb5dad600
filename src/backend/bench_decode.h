// Greedy decode straight through a backend: the decode phase of `pagoda bench latency|throughput`
// (src/cli/cmd_bench.c), here in the library so that it runs on the CPU backend in tests.
// n_seqs sequences whose prompts are already in the KV cache decode n_steps tokens each, one
// step per token, every sequence sampling (greedy) in every step.
//   synchronous: execute(k), collect(k), execute(k + 1), ...
//   pipelined:   execute(k + 1) with every input token fed on the device from step k's results
//                (step_seq.feed, feed_idx = the sequence's index), then collect(k) (FIFO): one
//                step stays in flight while the host collects the previous one, as the engine's
//                --async-scheduling does. The backend must have been built with
//                backend_config.max_inflight >= 2.
#pragma once
#include "backend/backend.h"

struct bench_decode {
    int n_seqs;
    const int32_t *const *block_tables; // [n_seqs][n_blocks] (borrowed): each covers pos0 + n_steps positions
    int n_blocks;
    int pos0;            // tokens already in every sequence's KV cache (position of the first step's token)
    int n_steps;         // >= 1
    bool pipelined;
    int32_t *last;       // [n_seqs] in: each sequence's first input token (its prefill's sample);
                         // out: the token its last collected step sampled
    int32_t *tokens;     // NULL or [n_steps][n_seqs] out: the token each step sampled per sequence
    double *t_step;      // NULL or [n_steps] out, seconds: synchronous, from the step's execute to
                         // its collect's return; pipelined, from the previous step's collect
                         // return to this one's (step 0: from its execute)
};

// Runs the steps (smp.step = k + 1 for step k, as the bench always has). Returns 0, or -1 with
// err set; on failure every step it executed has been collected (results dropped), so none is
// left in flight in the backend.
int bench_decode_run(const struct backend_ops *be, void *ctx, const struct bench_decode *d, char *err);
