// The host sampler (see sampling.h). Order of processing, as vLLM applies it:
//   1. masks: disallowed (allowed bitmask) and banned ids -> -inf
//   2. logit_bias added
//   3. repetition penalty (HF: over prompt and output tokens; positive logits divided,
//      negative multiplied), then presence/frequency penalties over output tokens (OpenAI)
//   -> logprobs are the log-softmax of the logits at this point (before temperature and
//      before top-k/top-p/min-p filtering), for the chosen token and the top-k list.
//   4. temperature == 0 (or < 1e-5): argmax, ties to the lowest id.
//   5. otherwise logits / temperature, top_k, softmax, top_p (smallest prefix of the sorted
//      distribution with mass >= top_p), min_p (prob >= min_p * max prob), renormalize, and
//      draw with u = pg_uniform(seed, step, 0) by walking the sorted distribution.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/sampling.h"

size_t sampler_scratch_size(int vocab) { return (size_t)vocab * (2 * sizeof(float) + sizeof(int32_t)); }

static void apply_masks(float *lg, int vocab, const struct sample_input *in) {
    if (in->allowed)
        for (int i = 0; i < vocab; i++)
            if (!((in->allowed[i >> 5] >> (i & 31)) & 1u)) lg[i] = -INFINITY;
    for (int i = 0; i < in->n_banned; i++)
        if (in->banned[i] >= 0 && in->banned[i] < vocab) lg[in->banned[i]] = -INFINITY;
    const struct sampling_params *p = in->params;
    for (int i = 0; i < p->n_logit_bias; i++) {
        int id = p->logit_bias_ids[i];
        if (id >= 0 && id < vocab) lg[id] += p->logit_bias_vals[i];
    }
}

// counts: vocab ints, zero on entry and on return.
static void apply_penalties(float *lg, int vocab, const struct sample_input *in, int32_t *counts) {
    const struct sampling_params *p = in->params;
    if (p->repetition_penalty != 1.0f && p->repetition_penalty > 0) {
        const int32_t *lists[2] = {in->prompt, in->output};
        int ns[2] = {in->n_prompt, in->n_output};
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < ns[l]; i++) {
                int id = lists[l][i];
                if (id < 0 || id >= vocab || counts[id]) continue;
                counts[id] = 1;
                lg[id] = lg[id] > 0 ? lg[id] / p->repetition_penalty : lg[id] * p->repetition_penalty;
            }
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < ns[l]; i++)
                if (lists[l][i] >= 0 && lists[l][i] < vocab) counts[lists[l][i]] = 0;
    }
    if (p->presence_penalty != 0 || p->frequency_penalty != 0) {
        for (int i = 0; i < in->n_output; i++)
            if (in->output[i] >= 0 && in->output[i] < vocab) counts[in->output[i]]++;
        for (int i = 0; i < in->n_output; i++) {
            int id = in->output[i];
            if (id < 0 || id >= vocab || !counts[id]) continue;
            lg[id] -= p->presence_penalty + p->frequency_penalty * (float)counts[id];
            counts[id] = 0;
        }
    }
}

static int argmax(const float *lg, int vocab) {
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (lg[i] > lg[best]) best = i;
    return best;
}

static float logsumexp(const float *lg, int vocab, float mx) {
    if (mx == -INFINITY) return -INFINITY;
    double s = 0;
    for (int i = 0; i < vocab; i++) s += exp((double)(lg[i] - mx));
    return mx + (float)log(s);
}

// Top-k ids by logit (desc, ties to lower id) with k <= SAMPLING_MAX_LOGPROBS.
static void top_logprobs(const float *lg, int vocab, int k, float lse, struct sample_output *out) {
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        if (n == k && !(lg[i] > lg[out->top_ids[n - 1]])) continue;
        int j = n < k ? n++ : n - 1;
        while (j > 0 && lg[i] > lg[out->top_ids[j - 1]]) {
            out->top_ids[j] = out->top_ids[j - 1];
            j--;
        }
        out->top_ids[j] = i;
    }
    out->n_top = n;
    for (int i = 0; i < n; i++) out->top_logprobs[i] = lg[out->top_ids[i]] - lse;
}

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *v = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (v[x] > v[y]) return -1;
    if (v[x] < v[y]) return 1;
    return (x > y) - (x < y);
}

static int sample_random(float *lg, int vocab, const struct sample_input *in, float *probs, int32_t *idx) {
    const struct sampling_params *p = in->params;
    int n = 0;
    for (int i = 0; i < vocab; i++)
        if (lg[i] > -INFINITY) idx[n++] = i;
    if (n == 0) return 0;
    for (int i = 0; i < n; i++) lg[idx[i]] /= p->temperature;
    qsort_r(idx, (size_t)n, sizeof *idx, cmp_desc, lg);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    double sum = 0;
    float mx = lg[idx[0]];
    for (int i = 0; i < n; i++) sum += probs[i] = expf(lg[idx[i]] - mx);
    if (p->top_p > 0 && p->top_p < 1) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += probs[i] / sum;
            if (cum >= p->top_p) { n = i + 1; break; }
        }
    }
    if (p->min_p > 0) { // probs[0] is the max
        int m = 1;
        while (m < n && probs[m] >= p->min_p * probs[0]) m++;
        n = m;
    }
    sum = 0;
    for (int i = 0; i < n; i++) sum += probs[i];
    double u = pg_uniform(p->seed, in->step, 0) * sum, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += probs[i];
        if (u < cum) return idx[i];
    }
    return idx[n - 1];
}

void sampler_sample(float *logits, int vocab, const struct sample_input *in, void *scratch,
                    struct sample_output *out) {
    const struct sampling_params *p = in->params;
    float *probs = scratch;
    float *raw = probs + vocab;
    int32_t *idx = (int32_t *)(raw + vocab);
    memset(idx, 0, (size_t)vocab * sizeof *idx);
    apply_masks(logits, vocab, in);
    apply_penalties(logits, vocab, in, idx);
    int best = argmax(logits, vocab);
    float lse = logsumexp(logits, vocab, logits[best]);
    memset(out, 0, sizeof *out);
    if (p->logprobs > 0)
        top_logprobs(logits, vocab, p->logprobs < SAMPLING_MAX_LOGPROBS ? p->logprobs : SAMPLING_MAX_LOGPROBS, lse, out);
    int tok = best;
    if (p->temperature >= 1e-5f) {
        memcpy(raw, logits, (size_t)vocab * sizeof *raw);
        tok = sample_random(logits, vocab, in, probs, idx);
        out->logprob = raw[tok] - lse;
    } else {
        out->logprob = logits[tok] - lse;
    }
    out->token = tok;
}
