// The host sampler (see sampling.h). Order of processing, as vLLM applies it:
//   1. masks: disallowed (allowed bitmask) and banned ids -> -inf
//   2. logit_bias added
//   3. repetition penalty (HF: over prompt and output tokens; positive logits divided,
//      negative multiplied), then presence/frequency penalties over output tokens (OpenAI)
//   -> logprobs are the log-softmax of the logits at this point (before temperature and
//      before top-k/top-p/min-p filtering), for the chosen token and the top-k list.
//   4. temperature == 0 (or < 1e-5): argmax, ties to the lowest id.
//   5. otherwise logits / temperature; the kept set is defined on the distribution sorted by
//      probability (ties: lower id first): top_k best, then top_p (smallest prefix whose mass,
//      normalized over the top_k set, is >= top_p), then min_p (prob >= min_p * max prob).
//      Draw: u = pg_uniform(seed, step, 0) * (sum of kept probs); walk the kept tokens in
//      ascending id order and take the first whose cumulative prob exceeds u.
//      (Nothing big is sorted: top_k by one pass keeping the k best when k <= 256, else by
//      quickselect; top_p by a weighted quickselect over weights computed once; without
//      top_k/top_p one pass computes the weights and their sum, then an inverse-CDF walk.)
//   logprobs < 0: no log-softmax is computed (out->logprob is 0).
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
    float bv = lg[0];
    for (int i = 1; i < vocab; i++)
        if (lg[i] > bv) bv = lg[i], best = i;
    return best;
}

static float logsumexp(const float *lg, int vocab, float mx) {
    if (mx == -INFINITY) return -INFINITY;
    double s = 0;
    for (int i = 0; i < vocab; i++) s += expf(lg[i] - mx);
    return mx + (float)log(s);
}

// Top-k ids by logit (desc, ties to lower id) with k <= SAMPLING_MAX_LOGPROBS.
static void top_logprobs(const float *lg, int vocab, int k, float lse, struct sample_output *out) {
    int n = 0;
    float kth = -INFINITY; // the k-th best so far once n == k
    for (int i = 0; i < vocab; i++) {
        if (n == k && !(lg[i] > kth)) continue;
        int j = n < k ? n++ : n - 1;
        while (j > 0 && lg[i] > lg[out->top_ids[j - 1]]) {
            out->top_ids[j] = out->top_ids[j - 1];
            j--;
        }
        out->top_ids[j] = i;
        if (n == k) kth = lg[out->top_ids[n - 1]];
    }
    out->n_top = n;
    for (int i = 0; i < n; i++) out->top_logprobs[i] = lg[out->top_ids[i]] - lse;
}

// Order: higher logit first, ties to the lower id.
static inline bool before(const float *v, int32_t x, int32_t y) { return v[x] > v[y] || (v[x] == v[y] && x < y); }

// Reorders idx[0, n) so that its first m entries are the m best (in any order): quickselect.
static void select_top(int32_t *idx, int n, int m, const float *v) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t piv = idx[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(v, idx[i], piv)) i++;
            while (before(v, piv, idx[j])) j--;
            if (i <= j) {
                int32_t t = idx[i]; idx[i] = idx[j]; idx[j] = t;
                i++, j--;
            }
        }
        if (m - 1 <= j) hi = j;
        else if (m - 1 >= i) lo = i;
        else return;
    }
}

// idx[0, n): candidates with weights w[id] (exp(v - mx), precomputed). Reorders idx so that
// its first c entries are the best c (by v), for the smallest c whose weight reaches target (at
// least 1; n when the target is never reached through rounding). Weighted quickselect: O(n).
static int select_mass(int32_t *idx, int n, const float *v, const float *w, double target) {
    int lo = 0, hi = n; // kept: [0, lo) with weight acc < target; the answer is in (lo, hi]
    double acc = 0;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, k = lo;
        int32_t piv = idx[mid];
        idx[mid] = idx[hi - 1], idx[hi - 1] = piv;
        double mb = 0;
        for (int i = lo; i < hi - 1; i++)
            if (before(v, idx[i], piv)) {
                int32_t t = idx[i]; idx[i] = idx[k]; idx[k] = t;
                mb += w[idx[k]];
                k++;
            }
        idx[hi - 1] = idx[k], idx[k] = piv; // better: [lo, k), pivot at k, worse: (k, hi)
        if (acc + mb >= target) {
            hi = k;
            continue;
        }
        acc += mb + w[piv];
        if (acc >= target) return k + 1;
        lo = k + 1;
    }
    return hi > 0 ? hi : 1;
}

// The k best finite ids of v (k small): one pass keeping a sorted list (ties -> lower id, as
// `before`), most tokens rejected by a single compare with the current k-th best.
static int small_top(const float *v, int vocab, int k, int32_t *idx) {
    int n = 0;
    float kth = -INFINITY; // the k-th best so far once n == k; -inf is never kept
    for (int i = 0; i < vocab; i++) {
        if (!(v[i] > kth)) continue;
        int j = n < k ? n++ : n - 1;
        while (j > 0 && v[i] > v[idx[j - 1]]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
        if (n == k) kth = v[idx[n - 1]];
    }
    return n;
}

static int cmp_id(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

// No top_k / top_p: every finite token is a candidate. One pass scales the logits (in place)
// and computes the weights (min_p applied) and their sum, then the inverse-CDF walk in id
// order. mx: the max of the scaled logits.
static int draw_all(float *lg, int vocab, const struct sample_input *in, float mx, float *e) {
    const struct sampling_params *p = in->params;
    double sum = 0;
    for (int i = 0; i < vocab; i++) {
        lg[i] /= p->temperature; // -inf stays -inf
        float w = lg[i] > -INFINITY ? expf(lg[i] - mx) : 0.0f; // the max has w = 1
        if (p->min_p > 0 && w < p->min_p) w = 0;
        e[i] = w;
        sum += w;
    }
    double u = pg_uniform(p->seed, in->step, 0) * sum, cum = 0;
    int last = 0;
    for (int i = 0; i < vocab; i++) {
        if (e[i] == 0) continue;
        cum += e[i];
        last = i;
        if (u < cum) return i;
    }
    return last;
}

// Candidates idx[0, n) (weights w[id] when have_w, else computed here; z: the candidates'
// total weight, or < 0 to sum it here): the top_p nucleus, then min_p; the kept ids sorted
// and walked in id order.
static int draw_some(const float *lg, const struct sample_input *in, float mx, float *w, bool have_w,
                     double z, int32_t *idx, int n) {
    const struct sampling_params *p = in->params;
    if (!have_w)
        for (int i = 0; i < n; i++) w[idx[i]] = expf(lg[idx[i]] - mx);
    if (p->top_p > 0 && p->top_p < 1) {
        if (z < 0) {
            z = 0;
            for (int i = 0; i < n; i++) z += w[idx[i]];
        }
        n = select_mass(idx, n, lg, w, p->top_p * z);
    }
    int m = 0;
    for (int i = 0; i < n; i++) // the max is always in the kept set (w = 1 >= min_p)
        if (!(p->min_p > 0 && w[idx[i]] < p->min_p)) idx[m++] = idx[i];
    qsort(idx, (size_t)m, sizeof *idx, cmp_id);
    double sum = 0;
    for (int i = 0; i < m; i++) sum += w[idx[i]];
    double u = pg_uniform(p->seed, in->step, 0) * sum, cum = 0;
    for (int i = 0; i < m; i++) {
        cum += w[idx[i]];
        if (u < cum) return idx[i];
    }
    return m ? idx[m - 1] : 0;
}

#define SMALL_TOP_K 256

// Temperature; the kept set (top_k best, then the top_p nucleus of those, then min_p); a draw
// walking the kept tokens in id order. best: the argmax of lg before scaling.
static int sample_random(float *lg, int vocab, const struct sample_input *in, int best, float *e, int32_t *idx) {
    const struct sampling_params *p = in->params;
    if (!(lg[best] > -INFINITY)) return 0;
    float mx = lg[best] / p->temperature; // division by t > 0 is monotonic: still the max
    bool k_on = p->top_k > 0 && p->top_k < vocab, p_on = p->top_p > 0 && p->top_p < 1;
    if (!k_on && !p_on) return draw_all(lg, vocab, in, mx, e);
    for (int i = 0; i < vocab; i++) lg[i] /= p->temperature; // -inf stays -inf
    if (k_on && p->top_k <= SMALL_TOP_K) {
        int n = small_top(lg, vocab, p->top_k, idx);
        return draw_some(lg, in, mx, e, false, -1, idx, n);
    }
    int n = 0;
    if (k_on) {
        for (int i = 0; i < vocab; i++)
            if (lg[i] > -INFINITY) idx[n++] = i;
        if (p->top_k < n) {
            select_top(idx, n, p->top_k, lg);
            n = p->top_k;
        }
        return draw_some(lg, in, mx, e, false, -1, idx, n);
    }
    // top_p alone: every weight once, then the selection among the tokens that can be in the
    // nucleus. The tokens lighter than t = (1 - top_p) z / vocab weigh less than (1 - top_p) z
    // together, so the nucleus (sorted prefix reaching top_p z) holds none of them; t is
    // halved as a margin for rounding.
    double z = 0;
    for (int i = 0; i < vocab; i++) {
        e[i] = lg[i] > -INFINITY ? expf(lg[i] - mx) : 0.0f;
        z += e[i];
    }
    double t = 0.5 * (1.0 - p->top_p) * z / vocab;
    for (int i = 0; i < vocab; i++)
        if (e[i] > 0 && e[i] >= t) idx[n++] = i;
    return draw_some(lg, in, mx, e, true, z, idx, n);
}

void sampler_sample(float *logits, int vocab, const struct sample_input *in, void *scratch,
                    struct sample_output *out) {
    const struct sampling_params *p = in->params;
    float *probs = scratch;
    float *raw = probs + vocab;
    int32_t *idx = (int32_t *)(raw + vocab);
    apply_masks(logits, vocab, in);
    if (sampling_penalized(p)) {
        memset(idx, 0, (size_t)vocab * sizeof *idx);
        apply_penalties(logits, vocab, in, idx);
    }
    int best = argmax(logits, vocab);
    memset(out, 0, sizeof *out);
    // logprobs < 0: no log-softmax at all (out->logprob stays 0; nobody reads it)
    float lse = p->logprobs >= 0 ? logsumexp(logits, vocab, logits[best]) : 0.0f;
    if (p->logprobs > 0)
        top_logprobs(logits, vocab, p->logprobs < SAMPLING_MAX_LOGPROBS ? p->logprobs : SAMPLING_MAX_LOGPROBS, lse, out);
    int tok = best;
    if (p->temperature >= 1e-5f) {
        if (p->logprobs >= 0) memcpy(raw, logits, (size_t)vocab * sizeof *raw);
        tok = sample_random(logits, vocab, in, best, probs, idx);
        if (p->logprobs >= 0) out->logprob = raw[tok] - lse;
    } else if (p->logprobs >= 0) {
        out->logprob = logits[tok] - lse;
    }
    out->token = tok;
}
