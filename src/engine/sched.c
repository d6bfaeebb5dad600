// Continuous-batching scheduler with chunked prefill, prefix caching and preemption by
// recompute (see sched.h).
#include "engine/sched.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sched {
    struct sched_config cfg;
    struct kv_pool *pool;
    int bs;
    struct sched_seq **running; // admission order
    int n_running, cap_running;
    struct sched_seq **waiting; // arrival order of insertion; the best is picked each time
    int n_waiting, cap_waiting;
    struct sched_item *items;
    int cap_items;
    int32_t *scratch_ids;
    uint64_t *scratch_hashes;
    int cap_scratch;
    uint64_t n_preemptions;
    int admit_need;             // blocks the last admit that returned -1 needed
};

void sched_seq_init(struct sched_seq *s, const int32_t *prompt, int n_prompt) {
    memset(s, 0, sizeof *s);
    s->cap_tokens = n_prompt + 16;
    s->tokens = pg_malloc((size_t)s->cap_tokens * sizeof *s->tokens);
    memcpy(s->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    s->n_tokens = s->n_prompt = n_prompt;
    s->status = SEQ_NEW;
}

void sched_seq_destroy(struct sched_seq *s) {
    free(s->tokens);
    free(s->blocks);
    free(s->hashes);
    memset(s, 0, sizeof *s);
}

void sched_seq_append(struct sched_seq *s, int32_t token) {
    if (s->n_tokens == s->cap_tokens) {
        s->cap_tokens *= 2;
        s->tokens = pg_realloc(s->tokens, (size_t)s->cap_tokens * sizeof *s->tokens);
    }
    s->tokens[s->n_tokens++] = token;
}

static void reserve_blocks(struct sched_seq *q, int n);

void sched_seq_reserve(struct sched_seq *s, int n_tokens, int block_size) {
    if (n_tokens > s->cap_tokens) {
        s->cap_tokens = n_tokens;
        s->tokens = pg_realloc(s->tokens, (size_t)n_tokens * sizeof *s->tokens);
    }
    reserve_blocks(s, (n_tokens + block_size - 1) / block_size + 1);
}

struct sched *sched_new(const struct sched_config *cfg, struct kv_pool *pool) {
    struct sched *s = pg_calloc(1, sizeof *s);
    s->cfg = *cfg;
    s->pool = pool;
    s->bs = kv_pool_block_size(pool);
    return s;
}

static void release_blocks(struct sched *s, struct sched_seq *q) {
    kv_pool_release(s->pool, q->blocks, q->n_blocks);
    q->n_blocks = 0;
    q->n_hashed = 0;
    q->num_computed = 0;
}

void sched_free(struct sched *s) {
    if (!s) return;
    for (int i = 0; i < s->n_running; i++) release_blocks(s, s->running[i]);
    free(s->running);
    free(s->waiting);
    free(s->items);
    free(s->scratch_ids);
    free(s->scratch_hashes);
    free(s);
}

static void grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    *arr = pg_realloc(*arr, (size_t)c * elem);
    *cap = c;
}

static void push_waiting(struct sched *s, struct sched_seq *q) {
    grow((void **)&s->waiting, &s->cap_waiting, s->n_waiting + 1, sizeof *s->waiting);
    s->waiting[s->n_waiting++] = q;
    q->status = SEQ_WAITING;
}

void sched_add(struct sched *s, struct sched_seq *seq) {
    PG_CHECK(seq->status == SEQ_NEW && seq->n_tokens > 0);
    push_waiting(s, seq);
}

static void remove_at(struct sched_seq **arr, int *n, int i) {
    memmove(arr + i, arr + i + 1, (size_t)(*n - i - 1) * sizeof *arr);
    (*n)--;
}

static int find(struct sched_seq **arr, int n, const struct sched_seq *q) {
    for (int i = 0; i < n; i++)
        if (arr[i] == q) return i;
    return -1;
}

void sched_remove(struct sched *s, struct sched_seq *seq) {
    int i;
    if (seq->status == SEQ_RUNNING) {
        i = find(s->running, s->n_running, seq);
        PG_CHECK(i >= 0);
        remove_at(s->running, &s->n_running, i);
    } else if (seq->status == SEQ_WAITING) {
        i = find(s->waiting, s->n_waiting, seq);
        PG_CHECK(i >= 0);
        remove_at(s->waiting, &s->n_waiting, i);
    }
    release_blocks(s, seq);
    seq->status = SEQ_DONE;
    for (int j = 0; j < s->n_waiting; j++)
        if (s->waiting[j]->leader == seq) s->waiting[j]->leader = NULL;
    for (int j = 0; j < s->n_running; j++)
        if (s->running[j]->leader == seq) s->running[j]->leader = NULL;
}

// a runs before b (FCFS: older first; PRIORITY: lower priority value, then older).
static bool before(const struct sched *s, const struct sched_seq *a, const struct sched_seq *b) {
    if (s->cfg.priority_policy && a->priority != b->priority) return a->priority < b->priority;
    return a->arrival < b->arrival;
}

static int blocks_for(const struct sched *s, int n_tokens) { return (n_tokens + s->bs - 1) / s->bs; }

// Block table and hash arrays hold at least n blocks.
static void reserve_blocks(struct sched_seq *q, int n) {
    if (n <= q->cap_blocks) return;
    int c = q->cap_blocks ? q->cap_blocks : 4;
    while (c < n) c *= 2;
    q->blocks = pg_realloc(q->blocks, (size_t)c * sizeof *q->blocks);
    q->hashes = pg_realloc(q->hashes, (size_t)c * sizeof *q->hashes);
    q->cap_blocks = c;
}

// Grows q's block table to cover n_tokens. Returns 0, or -1 when the pool is short.
static int alloc_for(struct sched *s, struct sched_seq *q, int n_tokens) {
    int need = blocks_for(s, n_tokens) - q->n_blocks;
    if (need <= 0) return 0;
    reserve_blocks(q, q->n_blocks + need);
    if (kv_pool_alloc(s->pool, need, q->blocks + q->n_blocks)) return -1;
    q->n_blocks += need;
    return 0;
}

static void preempt(struct sched *s, int running_idx) {
    struct sched_seq *q = s->running[running_idx];
    remove_at(s->running, &s->n_running, running_idx);
    release_blocks(s, q);
    q->n_preempted++;
    s->n_preemptions++;
    push_waiting(s, q);
}

// The running sequence that yields first: lowest priority (highest value), then newest.
static int pick_victim(const struct sched *s) {
    int v = 0;
    for (int i = 1; i < s->n_running; i++)
        if (before(s, s->running[v], s->running[i])) v = i;
    return v;
}

static void add_item(struct sched *s, struct sched_plan *plan, struct sched_seq *q, int n_new) {
    grow((void **)&s->items, &s->cap_items, plan->n_items + 1, sizeof *s->items);
    plan->items = s->items;
    plan->items[plan->n_items++] = (struct sched_item){
        .seq = q, .pos0 = q->num_computed, .n_new = n_new,
        .sample = q->num_computed + n_new == q->n_tokens};
    plan->n_tokens += n_new;
}

static void drop_item(struct sched_plan *plan, const struct sched_seq *q, int *budget) {
    for (int i = 0; i < plan->n_items; i++)
        if (plan->items[i].seq == q) {
            *budget += plan->items[i].n_new;
            plan->n_tokens -= plan->items[i].n_new;
            memmove(plan->items + i, plan->items + i + 1,
                    (size_t)(plan->n_items - i - 1) * sizeof *plan->items);
            plan->n_items--;
            return;
        }
}

// Schedules the running sequences; returns the budget left.
static int schedule_running(struct sched *s, struct sched_plan *plan, int budget) {
    for (int i = 0; i < s->n_running && budget > 0;) {
        struct sched_seq *q = s->running[i];
        int n_new = q->n_tokens - q->num_computed;
        if (n_new > budget) n_new = budget;
        int max_len = q->max_len > 0 ? q->max_len : s->cfg.max_model_len;
        if (n_new <= 0 || q->n_tokens >= max_len) { // complete: about to finish
            i++;
            continue;
        }
        bool self_preempted = false;
        while (alloc_for(s, q, q->num_computed + n_new)) {
            int v = pick_victim(s);
            struct sched_seq *vq = s->running[v];
            if (vq != q) drop_item(plan, vq, &budget); // may have been scheduled already
            preempt(s, v);
            plan->n_preempted++;
            if (vq == q) {
                self_preempted = true;
                break;
            }
            if (v < i) i--;
        }
        if (self_preempted) continue; // running[i] is now the next sequence
        add_item(s, plan, q, n_new);
        budget -= n_new;
        i++;
    }
    return budget;
}

// Best schedulable waiting sequence, or -1.
static int pick_waiting(const struct sched *s) {
    int best = -1;
    for (int i = 0; i < s->n_waiting; i++) {
        const struct sched_seq *q = s->waiting[i];
        const struct sched_seq *l = q->leader;
        // n > 1: wait until the leader has computed the prompt's full blocks (then they are
        // found in the prefix cache), unless caching is off.
        if (s->cfg.prefix_caching && l && l->status != SEQ_DONE &&
            l->num_computed < (q->n_prompt / s->bs) * s->bs)
            continue;
        if (q->n_inflight > 0) continue; // preempted while still in a batch in flight

        if (best < 0 || before(s, q, s->waiting[best])) best = i;
    }
    return best;
}

// Tries to admit waiting[wi]; returns the tokens scheduled, 0 if it does not fit in the
// token budget, or -1 if it does not fit in the free blocks (nothing changed either way).
static int admit(struct sched *s, struct sched_plan *plan, int wi, int budget) {
    struct sched_seq *q = s->waiting[wi];
    int bs = s->bs, n_hit = 0;
    int max_hit = (q->n_tokens - 1) / bs; // always compute >= 1 token, to sample from
    if (s->cfg.prefix_caching && max_hit > 0) {
        if (max_hit > s->cap_scratch) {
            s->cap_scratch = max_hit;
            s->scratch_ids = pg_realloc(s->scratch_ids, (size_t)max_hit * sizeof *s->scratch_ids);
            s->scratch_hashes = pg_realloc(s->scratch_hashes, (size_t)max_hit * sizeof *s->scratch_hashes);
        }
        n_hit = kv_pool_match(s->pool, q->tokens, q->n_tokens, q->cache_extra, max_hit,
                              s->scratch_ids, s->scratch_hashes);
    }
    int computed = n_hit * bs;
    int n_new = q->n_tokens - computed;
    if (n_new > budget) {
        if (!s->cfg.chunked_prefill) return 0;
        n_new = budget;
    }
    // Blocks needed: new ones, plus the hit blocks that sit in the free list (taking a
    // reference removes them from it). Check first so a failure changes nothing.
    int need = blocks_for(s, computed + n_new) - n_hit;
    for (int i = 0; i < n_hit; i++) need += kv_pool_refcount(s->pool, s->scratch_ids[i]) == 0;
    if (need > kv_pool_num_free(s->pool)) {
        s->admit_need = need;
        return -1;
    }
    reserve_blocks(q, blocks_for(s, q->n_tokens) + 1);
    if (s->cfg.stable_arrays) // nothing points into q yet: it is not in a batch in flight
        sched_seq_reserve(q, (q->max_len > 0 ? q->max_len : s->cfg.max_model_len) + 1, bs);
    kv_pool_ref(s->pool, s->scratch_ids, n_hit);
    if (n_hit) {
        memcpy(q->blocks, s->scratch_ids, (size_t)n_hit * sizeof *q->blocks);
        memcpy(q->hashes, s->scratch_hashes, (size_t)n_hit * sizeof *q->hashes);
    }
    q->n_blocks = q->n_hashed = n_hit;
    q->num_computed = computed;
    PG_CHECK(alloc_for(s, q, computed + n_new) == 0);
    if (s->cfg.prefix_caching) kv_pool_count(s->pool, q->n_tokens, computed);
    if (!q->admitted_once) q->n_cached_prompt = computed < q->n_prompt ? computed : q->n_prompt;
    q->admitted_once = true;
    remove_at(s->waiting, &s->n_waiting, wi);
    grow((void **)&s->running, &s->cap_running, s->n_running + 1, sizeof *s->running);
    s->running[s->n_running++] = q;
    q->status = SEQ_RUNNING;
    add_item(s, plan, q, n_new);
    plan->n_admitted++;
    return n_new;
}

// PRIORITY: waiting[wi] is short of blocks; preempts one running sequence of strictly
// lower priority (highest value, then newest), dropping its item from the plan. Returns
// the victim's priority, or INT_MIN if there is none (nothing changed).
static int preempt_for(struct sched *s, struct sched_plan *plan, int wi, int *budget) {
    if (!s->cfg.priority_policy || s->n_running == 0) return INT_MIN;
    int v = pick_victim(s);
    struct sched_seq *vq = s->running[v];
    if (vq->priority <= s->waiting[wi]->priority) return INT_MIN;
    drop_item(plan, vq, budget);
    preempt(s, v); // appended to waiting: wi stays valid
    plan->n_preempted++;
    return vq->priority;
}

// PRIORITY: whether preempting every running sequence of priority value > prio would free
// at least `need` blocks (counting only blocks no other sequence holds: conservative).
static bool preemption_frees(const struct sched *s, int prio, int need) {
    if (!s->cfg.priority_policy) return false;
    int n = kv_pool_num_free(s->pool);
    for (int i = 0; i < s->n_running && n < need; i++) {
        const struct sched_seq *q = s->running[i];
        if (q->priority <= prio) continue;
        for (int b = 0; b < q->n_blocks; b++) n += kv_pool_refcount(s->pool, q->blocks[b]) == 1;
    }
    return n >= need;
}

void sched_schedule(struct sched *s, struct sched_plan *plan) {
    memset(plan, 0, sizeof *plan);
    plan->items = s->items;
    int budget = schedule_running(s, plan, s->cfg.max_num_batched_tokens);
    if (plan->n_preempted) return; // the pool is full: admit nobody this step
    // Once lower-priority sequences were preempted for a waiting one, only sequences of
    // strictly higher priority than every victim are admitted this step (no churn).
    int floor = INT_MAX;
    while (budget > 0 && s->n_running < s->cfg.max_num_seqs) {
        int wi = pick_waiting(s);
        if (wi < 0 || s->waiting[wi]->priority >= floor) break;
        int b0 = budget, n = admit(s, plan, wi, budget);
        if (n < 0 && !preemption_frees(s, s->waiting[wi]->priority, s->admit_need)) break;
        while (n < 0) {
            int vp = preempt_for(s, plan, wi, &budget);
            if (vp == INT_MIN) break;
            if (vp < floor) floor = vp;
            n = admit(s, plan, wi, b0); // b0: the victims' tokens must not raise the need
        }
        if (n <= 0) break; // head of line does not fit: keep the order, try next step
        budget -= n;
    }
}

// Registers the full blocks of q that are computed and hold no unresolved token.
static void hash_blocks(struct sched *s, struct sched_seq *q) {
    if (!s->cfg.prefix_caching || q->status != SEQ_RUNNING) return;
    int limit = q->n_tokens - q->n_unresolved;
    if (limit > q->num_computed) limit = q->num_computed;
    while ((q->n_hashed + 1) * s->bs <= limit) {
        int b = q->n_hashed;
        uint64_t parent = b ? q->hashes[b - 1] : 0;
        q->hashes[b] = kv_pool_cache_block(s->pool, q->blocks[b], parent,
                                           q->tokens + (size_t)b * s->bs, q->cache_extra);
        q->n_hashed++;
    }
}

void sched_update(struct sched *s, const struct sched_plan *plan) {
    for (int i = 0; i < plan->n_items; i++) {
        const struct sched_item *it = &plan->items[i];
        struct sched_seq *q = it->seq;
        if (q->status != SEQ_RUNNING || q->num_computed != it->pos0) continue; // removed since
        q->num_computed += it->n_new;
        hash_blocks(s, q);
    }
}

void sched_seq_settle(struct sched *s, struct sched_seq *q) { hash_blocks(s, q); }

int sched_num_running(const struct sched *s) { return s->n_running; }
int sched_num_waiting(const struct sched *s) { return s->n_waiting; }
uint64_t sched_num_preemptions(const struct sched *s) { return s->n_preemptions; }

int sched_check(const struct sched *s, char *err) {
    if (kv_pool_check(s->pool, err)) return -1;
    int nb = kv_pool_num_blocks(s->pool);
    int *refs = pg_calloc((size_t)nb, sizeof *refs);
    int rc = -1;
    for (int i = 0; i < s->n_running; i++) {
        const struct sched_seq *q = s->running[i];
        if (q->status != SEQ_RUNNING || q->num_computed > q->n_tokens ||
            q->n_tokens > s->cfg.max_model_len || q->n_blocks * s->bs < q->num_computed ||
            q->n_blocks > blocks_for(s, q->n_tokens) + 1 || q->n_hashed * s->bs > q->num_computed) {
            pg_seterr(err, "running seq %d: status %d computed %d tokens %d blocks %d hashed %d", i,
                      q->status, q->num_computed, q->n_tokens, q->n_blocks, q->n_hashed);
            goto out;
        }
        for (int b = 0; b < q->n_blocks; b++) refs[q->blocks[b]]++;
    }
    for (int i = 0; i < s->n_waiting; i++) {
        const struct sched_seq *q = s->waiting[i];
        if (q->status != SEQ_WAITING || q->n_blocks || q->num_computed) {
            pg_seterr(err, "waiting seq %d holds %d blocks / %d computed", i, q->n_blocks,
                      q->num_computed);
            goto out;
        }
    }
    for (int b = 0; b < nb; b++)
        if (refs[b] != kv_pool_refcount(s->pool, b)) {
            pg_seterr(err, "block %d: %d references from block tables, refcount %d", b, refs[b],
                      kv_pool_refcount(s->pool, b));
            goto out;
        }
    rc = 0;
out:
    free(refs);
    return rc;
}
