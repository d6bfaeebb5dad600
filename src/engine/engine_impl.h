// Engine internals shared by engine.c (lifecycle, threads, the step loop), engine_req.c
// (validation, request copies) and engine_output.c (applying sampled tokens: stop
// conditions, detokenization, stop strings, streaming). Not a public header.
#pragma once
#include <pthread.h>

#include "engine/engine.h"
#include "engine/sched.h"

// One of a request's n sequences.
struct eseq {
    struct sched_seq s;
    struct ereq *req;
    int index;
    struct sampling_params sp; // the request's, with this sequence's seed
    bool finished;
    struct detok *dt;          // NULL without a tokenizer
    char *held;                // decoded text not yet emitted (could start a stop string)
    size_t held_len, held_cap;
    struct grammar_matcher *gm;
    uint32_t *mask;            // [ceil(vocab / 32)] when gm
    double t_first_token;
    uint64_t ph_step;          // the step that produces the last placeholder
    int ph_idx;                // its result index in that step
    // accepted but not yet emitted (between eseq_accept and eseq_emit):
    bool pend, pend_text;
    int pend_n_out;            // outputs including the pending token
    struct step_result pend_res;
    enum finish_reason pend_fin;
    int32_t pend_stop_token;
};

struct ereq {
    uint64_t id;
    struct gen_request r;      // copy; the pointers below own its arrays
    int32_t *prompt;
    char *stops[ENGINE_MAX_STOP];
    size_t stop_len[ENGINE_MAX_STOP];
    int32_t *stop_ids;
    int32_t *bias_ids;
    float *bias_vals;
    int32_t *banned;           // eos + stop ids, banned while n_output < min_tokens
    int n_banned;
    int max_tokens;            // resolved (-1 -> max_model_len - prompt)
    double t_arrival, t_scheduled;
    int n_unfinished;
    struct eseq *seqs;         // [r.n]
    struct ereq *next;         // incoming queue / active list
};

struct step_plan {             // a scheduled step's items, kept while it is in flight
    struct sched_item *items;
    int n, cap;
};

struct inflight {              // one executed, not yet collected step
    struct step_plan plan;     // its items (plan item i is batch sequence i)
    struct step_batch batch;
    struct step_seq *bseqs;
    int cap_bseqs;
    uint64_t id;
};

struct engine {
    struct engine_config cfg;
    const struct model_config *mcfg;
    const struct backend_ops *be;
    void *be_ctx;
    const struct tokenizer *tok;
    int vocab, num_blocks;
    struct kv_pool *pool;
    struct sched *sched;

    pthread_mutex_t mu;        // guards everything down to `thread`
    pthread_cond_t cv;
    struct ereq *in_head, *in_tail;
    int n_incoming;
    uint64_t *aborts;
    int n_aborts, cap_aborts;
    bool abort_all;
    uint64_t next_id;
    bool closed, stop_now, has_thread;
    double deadline;           // closed: abort what is left after this time
    int n_active_shared;       // mirror of n_active for engine_has_work
    struct engine_stats stats; // snapshot after each step
    pthread_t thread;

    // engine thread only:
    struct ereq *active;
    int n_active;
    uint64_t arrival;
    struct step_result *results;
    int cap_results;
    uint64_t prompt_tokens, generation_tokens, finished[5];
    bool warned_stall;
    int depth;                 // engine_pipeline_depth: most steps in flight
    struct inflight *fl;       // [depth] ring of steps in flight, oldest at fl_head
    int fl_head, n_fl;
    uint64_t n_launched;       // id of the most recently launched step (ids start at 1)
    struct step_plan next;     // the step being built
    struct eseq **emitq;       // accepted, to emit after the next launch
    int n_emitq, cap_emitq;
    uint64_t fed_seqs, steps_ahead;
};

// engine_req.c
int ereq_validate(const struct engine *e, const struct gen_request *r, char *err);
struct ereq *ereq_new(struct engine *e, const struct gen_request *r, uint64_t id);
void ereq_free(struct ereq *q);

// engine_output.c
// Applies one sampled token in two phases. eseq_accept (between collect and the next
// execute): the token joins the sequence, eos / stop ids / grammar / length decide whether it
// finishes (a finished sequence leaves the scheduler at once). eseq_emit (may overlap the
// next step): detokenization, stop strings (which can finish it too), the streamed update.
void eseq_accept(struct engine *e, struct eseq *s, const struct step_result *res);
void eseq_emit(struct engine *e, struct eseq *s);
// Finishes an unfinished sequence with reason (ABORT / ERROR): leaves the scheduler and
// delivers a final empty update.
void eseq_finish_now(struct engine *e, struct eseq *s, enum finish_reason reason);
