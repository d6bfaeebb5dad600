// Prometheus /metrics in vLLM's names (prefix `vllm:`, label model_name) so existing
// dashboards work. Gauges and counters come from engine_stats; latency histograms are
// observed by the server from each request's engine_output timestamps. Thread-safe.
#pragma once
#include <pthread.h>

#include "engine/engine.h"

enum { METRICS_MAX_BUCKETS = 24 };
struct histogram {
    int n_buckets;
    const double *bounds;               // upper bounds (le), ascending; +Inf implied
    uint64_t counts[METRICS_MAX_BUCKETS + 1]; // non-cumulative, last = +Inf
    double sum;
    uint64_t count;
};

enum metrics_hist { HIST_TTFT = 0, HIST_ITL, HIST_E2E, HIST_QUEUE, HIST_COUNT };

struct metrics {
    pthread_mutex_t mu;
    struct histogram h[HIST_COUNT];
};

void metrics_init(struct metrics *m);
void metrics_free(struct metrics *m);
void metrics_observe(struct metrics *m, enum metrics_hist h, double seconds);
// Renders the exposition text (malloc'd; caller frees). model_name is escaped.
char *metrics_render(struct metrics *m, const struct engine_stats *s, const char *model_name);
