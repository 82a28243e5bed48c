/* planner: ordering candidate nodes by pool and score; see planner.h. */
#include "mesh/planner.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_TOKENS_OUT 256
#define DEFAULT_SPEED_TPS 50
#define DEFAULT_TTFT_MS 500

const char *plan_tier_name(plan_tier t) {
    switch (t) {
    case PLAN_SPECIALIST: return "specialist";
    case PLAN_GENERALIST: return "generalist";
    case PLAN_FALLBACK: return "fallback";
    }
    return "?";
}

static const char *pool_of(const char *domain) {
    return domain && *domain ? domain : PLAN_GENERAL;
}

static plan_tier tier_of(const char *pool, const char *wanted) {
    if (strcmp(pool, wanted) == 0) return strcmp(wanted, PLAN_GENERAL) ? PLAN_SPECIALIST : PLAN_GENERALIST;
    return strcmp(pool, PLAN_GENERAL) == 0 ? PLAN_GENERALIST : PLAN_FALLBACK;
}

static double positive_or(double v, double dflt) {
    return v > 0 ? v : dflt;
}

static void score(const plan_candidate *c, const plan_request *r, plan_entry *e) {
    double out_tokens = positive_or(r->tokens_out, DEFAULT_TOKENS_OUT);
    double speed = positive_or(c->speed_tps, positive_or(r->default_speed_tps, DEFAULT_SPEED_TPS));
    double ttft = positive_or(c->ttft_p95_ms, positive_or(r->default_ttft_ms, DEFAULT_TTFT_MS));
    double in_tokens = r->tokens_in > 0 ? r->tokens_in : 0;
    long queued = c->inflight > 0 ? c->inflight : 0;
    e->est_ms = ttft + (double)(queued + 1) * out_tokens * 1000 / speed;
    e->cost_usd = (in_tokens * positive_or(c->price_in, 0) + out_tokens * positive_or(c->price_out, 0)) / 1e6;
    double price_weight = r->ms_per_usd > 0 ? r->ms_per_usd : 0;
    e->score = (e->est_ms + price_weight * e->cost_usd) / positive_or(c->weight, 1);
}

static int by_tier_score_index(const void *a, const void *b) {
    const plan_entry *x = a, *y = b;
    if (x->tier != y->tier) return x->tier < y->tier ? -1 : 1;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* How one pool stands, for the reason text. */
typedef struct pool_stats {
    int configured, open, unreachable;
} pool_stats;

static void append(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *dst, size_t cap, const char *fmt, ...) {
    size_t len = strlen(dst);
    if (len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst + len, cap - len, fmt, ap);
    va_end(ap);
}

/* "no node serves pool 'x'" or "no healthy node in pool 'x' (2 circuit
 * open, 1 unreachable)". */
static void describe_pool(char *dst, size_t cap, const char *pool, const pool_stats *s) {
    if (!s->configured) {
        append(dst, cap, "no node serves pool '%s'", pool);
        return;
    }
    append(dst, cap, "no healthy node in pool '%s' (", pool);
    if (s->open) append(dst, cap, "%d circuit open%s", s->open, s->unreachable ? ", " : "");
    if (s->unreachable) append(dst, cap, "%d unreachable", s->unreachable);
    append(dst, cap, ")");
}

static void explain(const plan_candidate *cands, const plan_entry *out, int n_out, const char *wanted,
                    const pool_stats *spec, const pool_stats *gen, int others_down, plan_summary *sum) {
    char *r = sum->reason;
    size_t cap = sizeof sum->reason;
    int want_general = strcmp(wanted, PLAN_GENERAL) == 0;
    describe_pool(r, cap, wanted, want_general ? gen : spec);
    if (n_out && out[0].tier == PLAN_GENERALIST) {
        append(r, cap, "; answered by pool '%s'", PLAN_GENERAL);
        return;
    }
    if (!want_general) {
        append(r, cap, "; ");
        describe_pool(r, cap, PLAN_GENERAL, gen);
    }
    if (n_out)
        append(r, cap, "; falling back to node '%s' of pool '%s'", cands[out[0].index].name ? cands[out[0].index].name : "?",
               out[0].pool);
    else if (others_down)
        append(r, cap, "; %d other node%s unavailable", others_down, others_down == 1 ? "" : "s");
}

int plan_nodes(const plan_candidate *cands, int n, const plan_request *req, plan_entry *out, plan_summary *sum) {
    const char *wanted = pool_of(req->domain);
    pool_stats spec = {0}, gen = {0};
    int others_down = 0, n_out = 0;
    for (int i = 0; i < n; i++) {
        const plan_candidate *c = &cands[i];
        const char *pool = pool_of(c->domain);
        plan_tier tier = tier_of(pool, wanted);
        pool_stats *s = tier == PLAN_SPECIALIST ? &spec : tier == PLAN_GENERALIST ? &gen : NULL;
        if (s) s->configured++;
        if (!c->reachable || !c->breaker_allows) {
            if (s && !c->reachable)
                s->unreachable++;
            else if (s)
                s->open++;
            else
                others_down++;
            continue;
        }
        plan_entry *e = &out[n_out++];
        e->index = i;
        e->tier = tier;
        e->pool = pool;
        score(c, req, e);
    }
    qsort(out, (size_t)n_out, sizeof *out, by_tier_score_index);
    for (int i = 0; i < n_out && !req->terse; i++) {
        plan_entry *e = &out[i];
        snprintf(e->why, sizeof e->why, "%s pool '%s', score %.1f (est %.0f ms, $%.6f)", plan_tier_name(e->tier), e->pool,
                 e->score, e->est_ms, e->cost_usd);
    }
    sum->n = n_out;
    sum->degraded = n_out == 0 || strcmp(out[0].pool, wanted) != 0;
    sum->reason[0] = 0;
    if (sum->degraded) explain(cands, out, n_out, wanted, &spec, &gen, others_down, sum);
    return n_out;
}
