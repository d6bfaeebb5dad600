// The engine (vLLM's LLMEngine): requests in, streamed outputs out.
// Threading: engine_add / engine_abort / engine_stats may be called from any thread.
// engine_start runs the loop on its own thread; tests may instead call engine_step
// directly (never both). Outputs are delivered through each request's callback, on the
// engine thread; the callback must not block and must not call back into the engine
// except engine_abort.
#pragma once
#include "backend/backend.h"

struct tokenizer;
struct grammar;

enum sched_policy { SCHED_FCFS = 0, SCHED_PRIORITY };

struct engine_config {
    int block_size;              // --block-size (16)
    int max_num_seqs;            // --max-num-seqs (256)
    int max_num_batched_tokens;  // --max-num-batched-tokens (2048; >= max_model_len unless chunked)
    int max_model_len;           // --max-model-len (config's max_position_embeddings)
    bool enable_prefix_caching;  // default true
    bool enable_chunked_prefill; // default true
    int num_scheduler_steps;     // --num-scheduler-steps (1)
    bool async_scheduling;       // overlap scheduling of step n+1 with the backend's step n
    enum sched_policy policy;
    int max_waiting;             // waiting-queue limit; engine_add fails with ENGINE_EBUSY past it (0 = none)
    uint64_t seed;               // --seed: base for requests without a seed
};
void engine_config_defaults(struct engine_config *c);
// Steps the engine may have in flight: max(async_scheduling ? 2 : 1, num_scheduler_steps).
// Set backend_config.max_inflight to it wherever a backend is built for an engine.
int engine_pipeline_depth(const struct engine_config *c);

enum finish_reason { FINISH_NONE = 0, FINISH_STOP, FINISH_LENGTH, FINISH_ABORT, FINISH_ERROR };
const char *finish_reason_name(enum finish_reason r); // "stop", "length", "abort", "error"

// One streamed update for one of a request's n sequences.
struct engine_output {
    uint64_t req_id;
    int index;                   // 0..n-1
    const int32_t *tokens;       // tokens new since the last update
    int n_tokens;
    const char *text;            // detokenized text new since the last update (stop strings held back)
    size_t text_len;
    const struct sample_output *logprobs; // [n_tokens] when logprobs requested, else NULL
    enum finish_reason finish;   // FINISH_NONE while running
    const char *stop_reason;     // the matched stop string, when finish == STOP by a stop string
    int32_t stop_token;          // the matched stop token id, or -1
    int n_prompt_tokens;         // for usage
    int n_output_tokens;         // so far (this sequence)
    int n_cached_tokens;         // prompt tokens served from the prefix cache
    double t_arrival, t_scheduled, t_first_token, t_now; // pg_now() seconds, for metrics
};

typedef void (*engine_output_fn)(void *user, const struct engine_output *o);

#define ENGINE_MAX_STOP 16
struct gen_request {
    const int32_t *prompt;       // copied by engine_add
    int n_prompt;
    struct sampling_params sp;   // copied (logit_bias arrays too)
    bool seeded;                 // sp.seed given by the client; otherwise engine picks one
    int max_tokens;              // -1: up to max_model_len
    int min_tokens;
    bool ignore_eos;
    bool skip_special_tokens;    // default true
    const char *stop[ENGINE_MAX_STOP]; // stop strings (copied); never included in the output
    int n_stop;
    const int32_t *stop_token_ids;
    int n_stop_token_ids;
    int n;                       // parallel samples (>= 1)
    int priority;                // lower runs first under SCHED_PRIORITY
    struct grammar *grammar;     // structured output constraint (retained by the engine), or NULL
    engine_output_fn on_output;
    void *user;
};
void gen_request_defaults(struct gen_request *r);

enum { ENGINE_OK = 0, ENGINE_EINVAL = -1, ENGINE_EBUSY = -2, ENGINE_ECLOSED = -3 };

struct engine;

// The engine borrows backend, backend ctx, model config and tokenizer (tokenizer may be NULL:
// then no text and no stop strings). num_blocks comes from backend init.
struct engine *engine_create(const struct engine_config *cfg, const struct model_config *mcfg,
                             const struct backend_ops *be, void *be_ctx, int num_blocks,
                             const struct tokenizer *tok, char *err);
void engine_free(struct engine *e);

// Validates and queues a request. Returns ENGINE_OK and the id, or ENGINE_EINVAL (bad
// parameters, prompt + max_tokens over max_model_len: message in err) or ENGINE_EBUSY.
int engine_add(struct engine *e, const struct gen_request *r, uint64_t *req_id, char *err);
// Aborts a request (no-op if already finished). Its blocks are free by the next step; one
// final output with FINISH_ABORT is delivered for each unfinished sequence.
void engine_abort(struct engine *e, uint64_t req_id);

// Runs one scheduling round synchronously. Returns the number of requests still unfinished,
// or -1 on a backend error (all running requests then finish with FINISH_ERROR).
int engine_step(struct engine *e);
// Starts/stops the loop thread. engine_stop(e, grace_s) stops admitting, lets running
// requests finish for up to grace_s seconds, aborts the rest, and joins.
int engine_start(struct engine *e);
void engine_stop(struct engine *e, double grace_s);
bool engine_has_work(struct engine *e);

struct engine_stats {
    int num_running, num_waiting;
    int num_blocks, num_free_blocks;   // free includes cached-but-unreferenced blocks
    double kv_usage;                   // 1 - free / total
    uint64_t prefix_queries, prefix_hits; // tokens
    uint64_t prompt_tokens, generation_tokens, num_preemptions;
    uint64_t finished[5];              // by finish_reason
    uint64_t fed_seqs;                 // pipelining: sequences whose input token came from the device
    uint64_t steps_ahead;              // steps launched before the previous one was collected
};
void engine_stats(struct engine *e, struct engine_stats *s);
