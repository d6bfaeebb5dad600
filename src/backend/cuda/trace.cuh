// Block stamp buffers for the benchmark's timeline (cu_gptq_trace, cu_attn_trace): the hook
// hands out one slot of `blocks` x 8 words per launch, launch after launch.
#pragma once
#include <stddef.h>
#include <stdint.h>

struct trace_slots {
    uint64_t *buf;  // NULL: tracing off
    int slot, blocks;
};

static inline void trace_set(struct trace_slots *t, uint64_t *buf, int blocks_per_launch) {
    t->buf = buf;
    t->slot = 0;
    t->blocks = blocks_per_launch;
}

// The next launch's slot, or NULL when tracing is off or the launch has more blocks than a
// slot holds (it still takes its slot, so later launches keep their places).
static inline uint64_t *trace_next(struct trace_slots *t, size_t launch_blocks) {
    if (!t->buf) return NULL;
    uint64_t *s = t->buf + (size_t)t->slot++ * t->blocks * 8;
    return launch_blocks <= (size_t)t->blocks ? s : NULL;
}
