// Prometheus text exposition with vLLM's metric names.
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// vLLM's bucket boundaries, so dashboards' quantile queries read the same.
static const double ttft_b[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double itl_b[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                               1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double req_b[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                               30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
#define NB(a) (int)(sizeof a / sizeof a[0])

void metrics_init(struct metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->h[HIST_TTFT] = (struct histogram){.n_buckets = NB(ttft_b), .bounds = ttft_b};
    m->h[HIST_ITL] = (struct histogram){.n_buckets = NB(itl_b), .bounds = itl_b};
    m->h[HIST_E2E] = (struct histogram){.n_buckets = NB(req_b), .bounds = req_b};
    m->h[HIST_QUEUE] = (struct histogram){.n_buckets = NB(req_b), .bounds = req_b};
}

void metrics_free(struct metrics *m) { pthread_mutex_destroy(&m->mu); }

void metrics_observe(struct metrics *m, enum metrics_hist which, double s) {
    if (!(s >= 0)) s = 0; // clocks are monotonic, but never let NaN into the sum
    pthread_mutex_lock(&m->mu);
    struct histogram *h = &m->h[which];
    int b = 0;
    while (b < h->n_buckets && s > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += s;
    h->count++;
    pthread_mutex_unlock(&m->mu);
}

struct sbuf { char *p; size_t len, cap; };
__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 64;
        b->p = pg_realloc(b->p, b->cap);
    }
}

static void metric_head(struct sbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP vllm:%s %s\n# TYPE vllm:%s %s\n", name, help, name, type);
}

static void hist_render(struct sbuf *b, const struct histogram *h, const char *name,
                        const char *help, const char *label) {
    metric_head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_buckets; i++) {
        cum += h->counts[i];
        if (i < h->n_buckets)
            sb_printf(b, "vllm:%s_bucket{le=\"%g\",%s} %llu\n", name, h->bounds[i], label,
                      (unsigned long long)cum);
        else
            sb_printf(b, "vllm:%s_bucket{le=\"+Inf\",%s} %llu\n", name, label,
                      (unsigned long long)cum);
    }
    sb_printf(b, "vllm:%s_sum{%s} %.9g\nvllm:%s_count{%s} %llu\n", name, label, h->sum, name,
              label, (unsigned long long)h->count);
}

char *metrics_render(struct metrics *m, const struct engine_stats *s, const char *model_name) {
    struct sbuf b = {pg_malloc(4096), 0, 4096};
    char label[512];
    size_t k = 0;
    k += (size_t)snprintf(label, sizeof label, "model_name=\"");
    for (const char *c = model_name; *c && k < sizeof label - 8; c++) {
        if (*c == '"' || *c == '\\') label[k++] = '\\', label[k++] = *c;
        else if (*c == '\n') label[k++] = '\\', label[k++] = 'n';
        else label[k++] = *c;
    }
    snprintf(label + k, sizeof label - k, "\"");
    static const struct { const char *name, *type, *help; size_t off; bool is_int; } g[] = {
        {"num_requests_running", "gauge", "Number of requests in model execution batches.",
         offsetof(struct engine_stats, num_running), true},
        {"num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
         offsetof(struct engine_stats, num_waiting), true},
    };
    for (size_t i = 0; i < 2; i++) {
        metric_head(&b, g[i].name, g[i].type, g[i].help);
        sb_printf(&b, "vllm:%s{%s} %d\n", g[i].name, label,
                  *(const int *)((const char *)s + g[i].off));
    }
    metric_head(&b, "kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
    sb_printf(&b, "vllm:kv_cache_usage_perc{%s} %.9g\n", label, s->kv_usage);
    const struct { const char *name, *help; uint64_t v; } c[] = {
        {"prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried "
         "tokens.", s->prefix_queries},
        {"prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.",
         s->prefix_hits},
        {"prompt_tokens_total", "Number of prefill tokens processed.", s->prompt_tokens},
        {"generation_tokens_total", "Number of generation tokens processed.",
         s->generation_tokens},
        {"num_preemptions_total", "Cumulative number of preemption from the engine.",
         s->num_preemptions},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        metric_head(&b, c[i].name, "counter", c[i].help);
        sb_printf(&b, "vllm:%s{%s} %llu\n", c[i].name, label, (unsigned long long)c[i].v);
    }
    metric_head(&b, "request_success_total", "counter", "Count of successfully processed "
                "requests.");
    for (int r = FINISH_STOP; r <= FINISH_ERROR; r++)
        sb_printf(&b, "vllm:request_success_total{finished_reason=\"%s\",%s} %llu\n",
                  r == FINISH_STOP ? "stop" : r == FINISH_LENGTH ? "length"
                  : r == FINISH_ABORT ? "abort" : "error", label,
                  (unsigned long long)s->finished[r]);
    pthread_mutex_lock(&m->mu);
    hist_render(&b, &m->h[HIST_TTFT], "time_to_first_token_seconds",
                "Histogram of time to first token in seconds.", label);
    hist_render(&b, &m->h[HIST_ITL], "inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.", label);
    hist_render(&b, &m->h[HIST_E2E], "e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.", label);
    hist_render(&b, &m->h[HIST_QUEUE], "request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.", label);
    pthread_mutex_unlock(&m->mu);
    return b.p;
}
