// Scheduler: exact plans (chunked prefill, running first, budget, max_num_seqs), exact block
// ids, preemption order under FCFS and priority, prefix-cache admission.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/sched.h"

struct fx {
    struct kv_pool *pool;
    struct sched *s;
    struct sched_plan plan;
};

static void fx_init(struct fx *f, int num_blocks, int bs, int budget, bool chunked, bool prio,
                    bool caching, int max_seqs) {
    f->pool = kv_pool_new(num_blocks, bs, caching);
    struct sched_config c = {.max_num_seqs = max_seqs, .max_num_batched_tokens = budget,
                             .max_model_len = 1000, .chunked_prefill = chunked,
                             .priority_policy = prio, .prefix_caching = caching};
    f->s = sched_new(&c, f->pool);
}

static void fx_check(struct fx *f) {
    char err[PG_ERR_LEN] = "";
    if (sched_check(f->s, err)) fail_msg("%s", err);
}

// One step: schedule, "execute", update, append token 7 to every sampling sequence.
static void step(struct fx *f) {
    sched_schedule(f->s, &f->plan);
    sched_update(f->s, &f->plan);
    for (int i = 0; i < f->plan.n_items; i++)
        if (f->plan.items[i].sample) sched_seq_append(f->plan.items[i].seq, 7);
    fx_check(f);
}

static int32_t g_toks[256];

static void mkseq(struct sched_seq *q, int n, uint64_t arrival, int prio, int base) {
    for (int i = 0; i < n; i++) g_toks[i] = base + i;
    sched_seq_init(q, g_toks, n);
    q->arrival = arrival;
    q->priority = prio;
}

static const struct sched_item *item_of(struct fx *f, const struct sched_seq *q) {
    for (int i = 0; i < f->plan.n_items; i++)
        if (f->plan.items[i].seq == q) return &f->plan.items[i];
    return NULL;
}

static void test_chunked_prefill_plan(void **state) {
    (void)state;
    struct fx f;
    fx_init(&f, 16, 4, 4, true, false, true, 8);
    struct sched_seq a;
    mkseq(&a, 10, 0, 0, 100);
    sched_add(f.s, &a);
    int want_pos[] = {0, 4, 8, 10, 11};
    int want_n[] = {4, 4, 2, 1, 1};
    for (int k = 0; k < 5; k++) {
        step(&f);
        assert_int_equal(f.plan.n_items, 1);
        assert_int_equal(f.plan.items[0].pos0, want_pos[k]);
        assert_int_equal(f.plan.items[0].n_new, want_n[k]);
        assert_int_equal(f.plan.items[0].sample, k >= 2);
    }
    // blocks were allocated in order from the head of the free list
    assert_int_equal(a.n_blocks, 3);
    for (int b = 0; b < 3; b++) assert_int_equal(a.blocks[b], b);
    assert_int_equal(a.num_computed, 12);
    assert_int_equal(a.n_hashed, 3);
    sched_remove(f.s, &a);
    assert_int_equal(kv_pool_num_free(f.pool), 16);
    sched_seq_destroy(&a);
    sched_free(f.s);
    kv_pool_free(f.pool);
}

static void test_running_first_and_limits(void **state) {
    (void)state;
    struct fx f;
    fx_init(&f, 64, 4, 5, true, false, true, 2);
    struct sched_seq a, b, c;
    mkseq(&a, 3, 0, 0, 10);
    mkseq(&b, 20, 1, 0, 50);
    mkseq(&c, 2, 2, 0, 90);
    sched_add(f.s, &a);
    step(&f); // a prefills (3 tokens)
    sched_add(f.s, &b);
    sched_add(f.s, &c);
    step(&f); // a decodes 1; b gets the other 4; c waits: max_num_seqs 2
    assert_int_equal(f.plan.n_items, 2);
    assert_int_equal(item_of(&f, &a)->n_new, 1);
    assert_int_equal(item_of(&f, &b)->n_new, 4);
    assert_null(item_of(&f, &c));
    for (int k = 0; k < 4; k++) step(&f); // b's 20-token prompt in chunks of 4 beside a's decodes
    assert_int_equal(b.num_computed, 20);
    assert_int_equal(a.num_computed, 3 + 5);
    sched_remove(f.s, &a); // frees a slot: c is admitted next step
    step(&f);
    assert_non_null(item_of(&f, &c));
    sched_remove(f.s, &b);
    sched_remove(f.s, &c);
    assert_int_equal(kv_pool_num_free(f.pool), 64);
    sched_seq_destroy(&a);
    sched_seq_destroy(&b);
    sched_seq_destroy(&c);
    sched_free(f.s);
    kv_pool_free(f.pool);
}

static void test_no_chunking_head_of_line(void **state) {
    (void)state;
    struct fx f;
    fx_init(&f, 64, 4, 10, false, false, true, 8);
    struct sched_seq a, b;
    mkseq(&a, 8, 0, 0, 10);
    mkseq(&b, 3, 1, 0, 30);
    sched_add(f.s, &a);
    sched_add(f.s, &b);
    step(&f); // a: 8 tokens; b (3) does not fit in the remaining 2: waits, whole
    assert_int_equal(f.plan.n_items, 1);
    assert_int_equal(f.plan.items[0].n_new, 8);
    step(&f);
    assert_int_equal(item_of(&f, &b)->n_new, 3);
    sched_remove(f.s, &a);
    sched_remove(f.s, &b);
    sched_seq_destroy(&a);
    sched_seq_destroy(&b);
    sched_free(f.s);
    kv_pool_free(f.pool);
}

// Three sequences fill the pool; when the oldest needs a block, the victim is the newest
// (FCFS) or the lowest priority (highest value) under PRIORITY.
static void preempt_case(bool prio, int victim_idx, int survivor) {
    struct fx f;
    fx_init(&f, 6, 4, 100, true, prio, false, 8);
    struct sched_seq q[3];
    int prios[3] = {0, 2, 1};
    for (int i = 0; i < 3; i++) {
        mkseq(&q[i], 8, (uint64_t)i, prios[i], 10 * i);
        sched_add(f.s, &q[i]);
    }
    step(&f); // each 8 tokens + 1 sampled: 2 blocks each, pool full
    assert_int_equal(kv_pool_num_free(f.pool), 0);
    step(&f); // every one needs a third block
    // the victim's two blocks cover both remaining needs: one preemption
    assert_int_equal(f.plan.n_preempted, 1);
    assert_int_equal(sched_num_preemptions(f.s), 1);
    assert_int_equal(q[survivor].status, SEQ_RUNNING);
    assert_non_null(item_of(&f, &q[survivor]));
    assert_null(item_of(&f, &q[victim_idx]));
    // the first in line kept running and got its block
    assert_non_null(item_of(&f, &q[0]));
    assert_int_equal(q[0].status, SEQ_RUNNING);
    assert_int_equal(q[victim_idx].status, SEQ_WAITING);
    assert_int_equal(q[victim_idx].num_computed, 0);
    assert_int_equal(q[victim_idx].n_tokens, 9); // keeps its output for recompute
    assert_int_equal(q[victim_idx].n_preempted, 1);
    for (int i = 0; i < 3; i++) sched_remove(f.s, &q[i]);
    assert_int_equal(kv_pool_num_free(f.pool), 6);
    for (int i = 0; i < 3; i++) sched_seq_destroy(&q[i]);
    sched_free(f.s);
    kv_pool_free(f.pool);
}

static void test_preemption_order(void **state) {
    (void)state;
    preempt_case(false, 2, 1); // FCFS: the newest (q2) yields
    preempt_case(true, 1, 2);  // PRIORITY: q1 (priority value 2, the lowest) yields
}

// Under PRIORITY a high-priority arrival is admitted before older low-priority ones.
static void test_priority_admission(void **state) {
    (void)state;
    struct fx f;
    fx_init(&f, 64, 4, 100, true, true, true, 1);
    struct sched_seq lo, hi;
    mkseq(&lo, 4, 0, 5, 10);
    mkseq(&hi, 4, 1, 0, 30);
    sched_add(f.s, &lo);
    sched_add(f.s, &hi);
    step(&f);
    assert_int_equal(f.plan.n_items, 1);
    assert_ptr_equal(f.plan.items[0].seq, &hi);
    sched_remove(f.s, &lo);
    sched_remove(f.s, &hi);
    sched_seq_destroy(&lo);
    sched_seq_destroy(&hi);
    sched_free(f.s);
    kv_pool_free(f.pool);
}

// PRIORITY: a waiting sequence short of blocks preempts running ones of strictly lower
// priority, lowest then newest first, until it fits. A (prio 2), B and C (prio 5) hold the
// 6 blocks (2 each); H arrives with prio h_prio and h_len prompt tokens.
// want_victims: how many of C, then B are preempted (0 => H waits, nothing preempted).
static void waiting_preempt_case(bool prio, int h_prio, int h_len, int want_victims) {
    struct fx f;
    fx_init(&f, 6, 4, 100, true, prio, false, 8);
    struct sched_seq q[3], h;
    int prios[3] = {2, 5, 5};
    for (int i = 0; i < 3; i++) {
        mkseq(&q[i], 6, (uint64_t)i, prios[i], 10 * i);
        sched_add(f.s, &q[i]);
    }
    step(&f); // 6 prompt tokens + 1 sampled each: 2 blocks each, pool full
    assert_int_equal(kv_pool_num_free(f.pool), 0);
    int32_t c_blocks[2] = {q[2].blocks[0], q[2].blocks[1]};
    mkseq(&h, h_len, 3, h_prio, 100);
    sched_add(f.s, &h);
    step(&f); // running decode within their blocks; H needs blocks
    assert_int_equal(f.plan.n_preempted, want_victims);
    assert_int_equal(sched_num_preemptions(f.s), (uint64_t)want_victims);
    bool c_out = want_victims >= 1, b_out = want_victims >= 2;
    assert_int_equal(q[0].status, SEQ_RUNNING); // A: higher priority than every victim
    assert_non_null(item_of(&f, &q[0]));
    assert_int_equal(q[1].status, b_out ? SEQ_WAITING : SEQ_RUNNING);
    assert_int_equal(q[2].status, c_out ? SEQ_WAITING : SEQ_RUNNING);
    assert_true((item_of(&f, &q[1]) == NULL) == b_out);
    assert_true((item_of(&f, &q[2]) == NULL) == c_out);
    if (c_out) {
        assert_int_equal(q[2].n_preempted, 1);
        assert_int_equal(q[2].num_computed, 0);
        assert_int_equal(q[2].n_tokens, 7); // keeps its sampled output for recompute
    }
    const struct sched_item *ih = item_of(&f, &h);
    if (want_victims) {
        assert_non_null(ih);
        assert_int_equal(h.status, SEQ_RUNNING);
        assert_int_equal(ih->pos0, 0);
        assert_int_equal(ih->n_new, h_len);
        assert_true(ih->sample);
        // C released its blocks last first (tail of the free list): H gets them reversed
        assert_int_equal(h.blocks[0], c_blocks[1]);
        assert_int_equal(h.blocks[1], c_blocks[0]);
        assert_int_equal(f.plan.n_items, 3 - want_victims + 1); // + H
        assert_int_equal(f.plan.n_admitted, 1);
    } else {
        assert_null(ih);
        assert_int_equal(h.status, SEQ_WAITING);
        assert_int_equal(f.plan.n_items, 3);
        assert_int_equal(f.plan.n_admitted, 0);
    }
    step(&f); // victims are not re-admitted while the pool is full
    assert_int_equal(sched_num_preemptions(f.s), (uint64_t)want_victims);
    for (int i = 0; i < 3; i++) sched_remove(f.s, &q[i]);
    sched_remove(f.s, &h);
    assert_int_equal(kv_pool_num_free(f.pool), 6);
    for (int i = 0; i < 3; i++) sched_seq_destroy(&q[i]);
    sched_seq_destroy(&h);
    sched_free(f.s);
    kv_pool_free(f.pool);
}

static void test_priority_preempts_for_waiting(void **state) {
    (void)state;
    waiting_preempt_case(true, 0, 5, 1);   // needs 2 blocks: C (prio 5, newest) yields
    waiting_preempt_case(true, 3, 13, 2);  // needs 4: C then B yield; A (prio 2) is kept
    waiting_preempt_case(true, 3, 17, 0);  // needs 5: B and C hold only 4, nobody yields
    waiting_preempt_case(true, 5, 5, 0);   // equal priority never preempts
    waiting_preempt_case(false, 0, 5, 0);  // FCFS: unchanged, H waits
}

// A second sequence with the same prompt reuses the first's full blocks (same ids) and
// computes only the rest; a sibling with a leader waits for the leader's prompt blocks.
static void test_prefix_admission(void **state) {
    (void)state;
    struct fx f;
    fx_init(&f, 32, 4, 6, true, false, true, 8);
    struct sched_seq a, b;
    mkseq(&a, 13, 0, 0, 10);
    mkseq(&b, 13, 1, 0, 10);
    b.leader = &a;
    sched_add(f.s, &a);
    sched_add(f.s, &b);
    step(&f); // a: 6; b waits for a's 12 full-block tokens
    assert_int_equal(f.plan.n_items, 1);
    step(&f); // a: 6 more (12 computed)
    assert_int_equal(a.num_computed, 12);
    step(&f); // a: last prompt token; b admitted with 12 cached tokens, computes 1
    const struct sched_item *ib = item_of(&f, &b);
    assert_non_null(ib);
    assert_int_equal(ib->pos0, 12);
    assert_int_equal(ib->n_new, 1);
    assert_int_equal(b.n_cached_prompt, 12);
    for (int i = 0; i < 3; i++) assert_int_equal(b.blocks[i], a.blocks[i]);
    assert_int_not_equal(b.blocks[3], a.blocks[3]);
    assert_int_equal(kv_pool_refcount(f.pool, a.blocks[0]), 2);
    assert_int_equal(kv_pool_queries(f.pool), 26); // a and b each looked up 13
    assert_int_equal(kv_pool_hits(f.pool), 12);
    sched_remove(f.s, &a);
    sched_remove(f.s, &b);
    assert_int_equal(kv_pool_num_free(f.pool), 32);
    sched_seq_destroy(&a);
    sched_seq_destroy(&b);
    sched_free(f.s);
    kv_pool_free(f.pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_prefill_plan),
        cmocka_unit_test(test_running_first_and_limits),
        cmocka_unit_test(test_no_chunking_head_of_line),
        cmocka_unit_test(test_preemption_order),
        cmocka_unit_test(test_priority_admission),
        cmocka_unit_test(test_priority_preempts_for_waiting),
        cmocka_unit_test(test_prefix_admission),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
