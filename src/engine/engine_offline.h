// Offline helpers on top of the engine: run a list of requests to completion through
// continuous batching on the calling thread (`pagoda generate --input`, benchmarks), and
// read sampling parameters from a JSON object with vLLM / OpenAI field names.
#pragma once
#include <jansson.h>

#include "engine/engine.h"

// The complete output of one sequence.
struct offline_seq {
    int32_t *tokens;            // malloc'd
    int n_tokens;
    char *text;                 // malloc'd, NUL-terminated ("" without a tokenizer)
    size_t text_len;
    struct sample_output *logprobs; // [n_tokens] when requested, else NULL
    enum finish_reason finish;
    char *stop_reason;          // the matched stop string, or NULL
    int32_t stop_token;         // -1 when none
    int n_prompt_tokens, n_cached_tokens;
    double t_first_token, t_done; // seconds after the request was added
};

struct offline_result {
    int n;                      // sequences (the request's n); 0 when it was rejected
    struct offline_seq *seqs;
    char error[PG_ERR_LEN];     // why engine_add rejected it (then n == 0)
};

// Adds every request (those engine_add rejects get their message in results[i].error and
// do not stop the others), runs engine_step until all are finished, and fills results[i].
// The requests' on_output / user fields are ignored (the runner installs its own).
// Must not be used while the engine's loop thread runs. Returns 0, or -1 if the backend
// failed (the affected sequences then have FINISH_ERROR). results: [n], caller frees with
// offline_results_free.
int engine_run_offline(struct engine *e, const struct gen_request *reqs, int n,
                       struct offline_result *results, char *err);
void offline_results_free(struct offline_result *results, int n);

// Fills r's sampling fields from a JSON object: max_tokens (or max_completion_tokens),
// min_tokens, temperature, top_p, top_k, min_p, repetition_penalty, presence_penalty,
// frequency_penalty, seed, n, stop (string or array of strings), stop_token_ids,
// ignore_eos, skip_special_tokens, logprobs (bool or int; with top_logprobs), priority.
// Unset fields keep r's values. Strings stay borrowed from obj; stop_token_ids are copied
// into stop_ids (max_stop_ids entries, caller-owned, must live as long as r). Wrong types
// and too many entries fail with a message naming the field; value ranges are checked by
// engine_add. logit_bias is not supported here (a non-empty one fails: use
// gen_request_from_json_bias). Returns 0 or -1.
int gen_request_from_json(struct gen_request *r, const json_t *obj, int32_t *stop_ids,
                          int max_stop_ids, char *err);
// The same, and also logit_bias as OpenAI: an object {"<token id>": bias in [-100, 100]},
// copied into bias_ids / bias_vals (max_bias entries, caller-owned, must live as long as r)
// and pointed to by r->sp. Keys must be decimal non-negative token ids (the vocabulary bound
// is checked by engine_add); null or absent keeps r's bias.
int gen_request_from_json_bias(struct gen_request *r, const json_t *obj, int32_t *stop_ids,
                               int max_stop_ids, int32_t *bias_ids, float *bias_vals,
                               int max_bias, char *err);
