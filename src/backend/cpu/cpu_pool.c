// A small fork-join thread pool: workers sleep on a condition variable between jobs and
// take task indices from an atomic counter.
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "backend/cpu/cpu_ops.h"

struct cpu_pool {
    int n_workers;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    void (*fn)(void *, int);
    void *arg;
    int n_tasks;
    atomic_int next;
    int generation;
    int n_busy;       // workers still inside the current job
    bool stop;
};

static void drain(struct cpu_pool *p) {
    for (;;) {
        int t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) return;
        p->fn(p->arg, t);
    }
}

static void *worker(void *arg) {
    struct cpu_pool *p = arg;
    int seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        drain(p);
        pthread_mutex_lock(&p->mu);
        if (--p->n_busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct cpu_pool *cpu_pool_new(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    struct cpu_pool *p = pg_calloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->th = pg_calloc((size_t)n_threads, sizeof *p->th);
    for (int i = 0; i < n_threads - 1; i++) {
        if (pthread_create(&p->th[i], NULL, worker, p) != 0) break; // run with fewer workers
        p->n_workers++;
    }
    return p;
}

void cpu_pool_free(struct cpu_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->th);
    free(p);
}

int cpu_pool_size(const struct cpu_pool *p) { return p->n_workers + 1; }

void cpu_pool_run(struct cpu_pool *p, int n_tasks, void (*fn)(void *arg, int task), void *arg) {
    if (n_tasks <= 0) return;
    if (p->n_workers == 0 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(arg, t);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->n_busy = p->n_workers;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p);
    pthread_mutex_lock(&p->mu);
    while (p->n_busy > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
