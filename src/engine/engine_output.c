// Applying sampled tokens: stop conditions, detokenization, stop strings held back in
// streams, and delivering engine_output updates.
#include <stdlib.h>
#include <string.h>

#include "engine/engine_impl.h"
#include "grammar/grammar.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"


static void held_append(struct eseq *s, const char *p, size_t n) {
    if (!n) return;
    if (s->held_len + n + 1 > s->held_cap) {
        s->held_cap = (s->held_len + n + 1) * 2;
        s->held = pg_realloc(s->held, s->held_cap);
    }
    memcpy(s->held + s->held_len, p, n);
    s->held_len += n;
    s->held[s->held_len] = 0;
}

// Earliest complete stop string in held: returns its index and position, or -1.
static int find_stop(const struct ereq *q, const struct eseq *s, size_t *pos) {
    int best = -1;
    for (int i = 0; i < q->r.n_stop; i++) {
        const char *m = memmem(s->held, s->held_len, q->stops[i], q->stop_len[i]);
        if (m && (best < 0 || (size_t)(m - s->held) < *pos)) {
            best = i;
            *pos = (size_t)(m - s->held);
        }
    }
    return best;
}

// Length of the longest suffix of held that is a proper prefix of some stop string: text
// that could still become a stop string and must not be streamed yet.
static size_t held_back(const struct ereq *q, const struct eseq *s) {
    size_t keep = 0;
    for (int i = 0; i < q->r.n_stop; i++) {
        size_t L = q->stop_len[i] - 1;
        if (L > s->held_len) L = s->held_len;
        for (size_t k = L; k > keep; k--)
            if (!memcmp(s->held + s->held_len - k, q->stops[i], k)) {
                keep = k;
                break;
            }
    }
    return keep;
}

static bool in_list(const int32_t *ids, int n, int32_t t) {
    for (int i = 0; i < n; i++)
        if (ids[i] == t) return true;
    return false;
}

static void emit(struct engine *e, struct eseq *s, const int32_t *toks, int n_toks, size_t text_len,
                 const struct sample_output *lp, enum finish_reason fin, const char *stop_reason,
                 int32_t stop_token) {
    struct ereq *q = s->req;
    struct engine_output o = {
        .req_id = q->id, .index = s->index, .tokens = toks, .n_tokens = n_toks,
        .text = s->held ? s->held : "", .text_len = text_len, .logprobs = lp, .finish = fin,
        .stop_reason = stop_reason, .stop_token = stop_token, .n_prompt_tokens = q->r.n_prompt,
        .n_output_tokens = s->pend_n_out, .n_cached_tokens = s->s.n_cached_prompt,
        .t_arrival = q->t_arrival, .t_scheduled = q->t_scheduled, .t_first_token = s->t_first_token,
        .t_now = pg_now()};
    q->r.on_output(q->r.user, &o);
    // drop the emitted text from held
    if (!s->held) return;
    memmove(s->held, s->held + text_len, s->held_len - text_len);
    s->held_len -= text_len;
    s->held[s->held_len] = 0;
}

static void finish(struct engine *e, struct eseq *s, enum finish_reason why) {
    s->finished = true;
    sched_remove(e->sched, &s->s);
    s->req->n_unfinished--;
    e->finished[why]++;
}

void eseq_finish_now(struct engine *e, struct eseq *s, enum finish_reason reason) {
    if (s->pend) eseq_emit(e, s); // an update not yet delivered goes first
    if (s->finished) return;
    finish(e, s, reason);
    s->held_len = 0;
    emit(e, s, NULL, 0, 0, NULL, reason, NULL, -1);
}

// Phase 1 (on the critical path between collect and the next execute): the token joins the
// sequence (replacing its first unresolved placeholder), token-level stops are decided.
void eseq_accept(struct engine *e, struct eseq *s, const struct step_result *res) {
    struct ereq *q = s->req;
    int32_t t = res->token;
    if (s->pend) { // several steps collected in a row: deliver in order
        eseq_emit(e, s);
        if (s->finished) { // by a stop string in that text: this token is dropped
            if (s->s.n_unresolved > 0) s->s.n_unresolved--;
            return;
        }
    }
    if (s->s.n_unresolved > 0) {
        s->s.tokens[s->s.n_tokens - s->s.n_unresolved] = t;
        s->s.n_unresolved--;
        sched_seq_settle(e->sched, &s->s);
    } else {
        sched_seq_append(&s->s, t);
    }
    e->generation_tokens++;
    if (!s->t_first_token) s->t_first_token = pg_now();
    int n_known = s->s.n_tokens - s->s.n_unresolved; // later placeholders are not outputs yet
    int n_out = n_known - s->s.n_prompt;
    bool check_stops = n_out >= q->r.min_tokens; // no stop before min_tokens outputs (vLLM)
    bool is_eos = !q->r.ignore_eos && in_list(e->mcfg->eos_ids, e->mcfg->n_eos, t);
    bool is_stop_id = in_list(q->stop_ids, q->r.n_stop_token_ids, t);
    enum finish_reason fin = FINISH_NONE;
    s->pend_stop_token = -1;
    s->pend_text = true;
    if (check_stops && (is_eos || is_stop_id)) {
        fin = FINISH_STOP;
        s->pend_stop_token = t;
        s->pend_text = false; // the stop token's text is not part of the output
    } else if (s->gm && grammar_accept_token(s->gm, t)) {
        pg_warn("request %llu: sampled token %d is not allowed by its grammar",
                (unsigned long long)q->id, t);
        fin = FINISH_ERROR;
    } else if (s->gm && grammar_is_terminated(s->gm)) {
        fin = FINISH_STOP;
    }
    if (fin == FINISH_NONE && (n_out >= q->max_tokens || n_known >= e->cfg.max_model_len))
        fin = FINISH_LENGTH;
    s->pend = true;
    s->pend_n_out = n_out;
    s->pend_res = *res;
    s->pend_fin = fin;
    if (fin != FINISH_NONE) finish(e, s, fin); // blocks free now; the update follows in emit
}

// Phase 2 (overlapping the next step with async scheduling): detokenize, match stop
// strings, stream the update.
void eseq_emit(struct engine *e, struct eseq *s) {
    if (!s->pend) return;
    s->pend = false;
    struct ereq *q = s->req;
    int32_t t = s->pend_res.token;
    enum finish_reason fin = s->pend_fin;
    const char *stop_reason = NULL;
    bool stop_text = false;
    if (s->dt && s->pend_text) {
        const char *d;
        size_t dl;
        detok_push(s->dt, t, &d, &dl);
        held_append(s, d, dl);
    }
    int n_out = s->pend_n_out; // n_tokens may already hold the next step's placeholder
    size_t pos = 0;
    int si = n_out >= q->r.min_tokens && q->r.n_stop && (fin == FINISH_NONE || fin == FINISH_LENGTH)
                 ? find_stop(q, s, &pos) : -1;
    if (si >= 0) {
        s->held_len = pos; // the stop string and whatever follows are never emitted
        stop_reason = q->stops[si];
        stop_text = true;
        if (fin == FINISH_NONE) {
            finish(e, s, FINISH_STOP);
        } else { // the length limit and a stop string on the same token: report the stop
            e->finished[fin]--;
            e->finished[FINISH_STOP]++;
        }
        fin = FINISH_STOP;
    }
    size_t text_len;
    if (fin != FINISH_NONE) {
        if (s->dt && !stop_text) {
            const char *d;
            size_t dl;
            detok_flush(s->dt, &d, &dl);
            held_append(s, d, dl);
        }
        text_len = s->held_len;
    } else {
        text_len = s->held_len - held_back(q, s);
    }
    struct sample_output lp, *lpp = NULL;
    if (q->r.sp.logprobs >= 0) {
        lp.token = t;
        lp.logprob = s->pend_res.logprob;
        lp.n_top = s->pend_res.n_top;
        memcpy(lp.top_ids, s->pend_res.top_ids, sizeof lp.top_ids);
        memcpy(lp.top_logprobs, s->pend_res.top_logprobs, sizeof lp.top_logprobs);
        lpp = &lp;
    }
    emit(e, s, &t, 1, text_len, lpp, fin, stop_reason, s->pend_stop_token);
}
