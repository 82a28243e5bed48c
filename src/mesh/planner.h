/* planner: which nodes to try for a request, in order, and why.
 *
 * Graceful degradation per domain: the specialist pool (nodes whose domain
 * is the request's) first, then the generalist pool ("general"), then any
 * other healthy node. Nodes that are unreachable or whose breaker does not
 * admit a request are left out. When the first node offered is not a
 * specialist the plan is degraded and says why; when no node is left the
 * reason names what is unavailable (for the 503 message).
 *
 * Within a pool, lower score first:
 *
 *   est_ms   = ttft_p95_ms + (inflight + 1) * tokens_out * 1000 / speed_tps
 *   cost_usd = (tokens_in * price_in + tokens_out * price_out) / 1e6
 *   score    = (est_ms + ms_per_usd * cost_usd) / weight
 *
 * est_ms is the expected completion time as if the node served its
 * outstanding requests one after another: pessimistic for batching servers
 * but growing with load, which is what ranking needs (least outstanding
 * requests, weighted by measured speed). ms_per_usd says how many ms of
 * waiting one dollar is worth (0: price is ignored). weight (> 1: preferred,
 * e.g. same region) divides the score. Unmeasured speed or TTFT (0) take the
 * request's defaults, so new nodes are neither starved nor flooded. Equal
 * scores keep the candidates' order.
 *
 * A pure function over plain structs: the caller copies what it knows about
 * each node (registry, breaker, latency tracker) into plan_candidate. Set
 * breaker_allows from breaker_state() != BREAKER_OPEN rather than from
 * breaker_allow(), which takes a half-open probe slot: call that just
 * before actually sending. */
#ifndef MSOA_PLANNER_H
#define MSOA_PLANNER_H

#define PLAN_GENERAL "general"

typedef struct plan_candidate {
    const char *name;
    const char *domain;         /* its pool; NULL or "" = "general" */
    double price_in, price_out; /* USD per million tokens */
    long inflight;              /* requests outstanding now */
    double speed_tps;           /* measured tokens/s (EWMA); 0 = unknown */
    double ttft_p95_ms;         /* measured p95 time to first token; 0 = unknown */
    int breaker_allows;         /* 0: circuit open, leave it out */
    int reachable;              /* 0: leave it out */
    double weight;              /* preference; 0 = 1 */
} plan_candidate;

typedef struct plan_request {
    const char *domain;        /* NULL or "" = "general" */
    double tokens_in;          /* estimated prompt tokens */
    double tokens_out;         /* estimated completion tokens; 0 = 256 */
    double ms_per_usd;         /* price weight; 0 = price ignored */
    int terse;                 /* 1: leave plan_entry.why empty (its formatting costs on a hot path) */
    double default_speed_tps;  /* for unmeasured nodes; 0 = 50 */
    double default_ttft_ms;    /* for unmeasured nodes; 0 = 500 */
} plan_request;

typedef enum { PLAN_SPECIALIST, PLAN_GENERALIST, PLAN_FALLBACK } plan_tier;

typedef struct plan_entry {
    int index;        /* into the candidate array */
    plan_tier tier;
    const char *pool; /* the candidate's domain, or the static "general" when it had none */
    double est_ms, cost_usd, score;
    char why[160];    /* e.g. "specialist pool 'math', score 812.5 (est 800 ms, $0.000125)" */
} plan_entry;

typedef struct plan_summary {
    int n;             /* entries written */
    int degraded;      /* the first entry is not a specialist, or there is none */
    char reason[320];  /* why degraded or why empty; "" otherwise */
} plan_summary;

/* Writes the ordered plan into out (room for n entries) and the summary.
 * Returns the number of entries (also sum->n). */
int plan_nodes(const plan_candidate *cands, int n, const plan_request *req, plan_entry *out, plan_summary *sum);
const char *plan_tier_name(plan_tier t); /* "specialist", "generalist", "fallback" */

#endif
