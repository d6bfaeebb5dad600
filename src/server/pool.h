// The tokenizer pool (--tokenizer-pool-size): worker threads that render chat templates,
// tokenize and compile grammars off the HTTP and engine threads. A plain FIFO of jobs.
#pragma once
#include <pthread.h>

#include "util/common.h"

typedef void (*pool_fn)(void *arg);
struct pool;

// n_threads <= 0: sized from the cores (max(2, cores / 2)).
struct pool *pool_new(int n_threads);
int pool_size(const struct pool *p);
// Queues fn(arg); never blocks (the queue is unbounded: admission control is the engine's
// waiting-queue limit). Returns -1 once pool_free has begun.
int pool_submit(struct pool *p, pool_fn fn, void *arg);
// Runs every queued job, then joins the threads.
void pool_free(struct pool *p);
