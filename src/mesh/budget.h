/* budget: how much extra load retries and hedges may add, and how long to
 * wait before a retry.
 *
 * Retrying every failure doubles the load on a mesh that is failing because
 * it is overloaded. The retry budget is a token bucket: each first attempt
 * deposits `ratio` tokens (default 0.1), each retry or hedge withdraws one,
 * and the bucket holds at most `cap` (default 10), so over time extra
 * attempts stay within ratio (10%) of first attempts, with bursts of at
 * most cap. It starts holding `initial` tokens (default cap) so a fresh
 * gateway can still retry its first failures. It may also gain `per_second`
 * tokens a second whatever the traffic (budget_refill; default 0), so a
 * quiet gateway can still retry a little (as Finagle's minimum retries per
 * second).
 *
 * Thread-safety: lock-free (one atomic in thousandths of a token, changed
 * by compare-and-swap); any thread may use it. */
#ifndef MSOA_BUDGET_H
#define MSOA_BUDGET_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct budget_config {
    double ratio;   /* tokens deposited per first attempt (0.1) */
    double cap;     /* most tokens held (10) */
    double initial; /* tokens at start, at most cap (cap); < 0 means cap */
    double per_second; /* tokens gained per second whatever the traffic (0) */
} budget_config;

typedef struct budget {
    atomic_llong milli; /* tokens * 1000 */
    atomic_uint_least64_t refilled_ms; /* the last budget_refill; 0: none yet */
    long long ratio_milli, cap_milli, per_second_milli;
} budget;

void budget_config_default(budget_config *c);
/* cfg NULL: defaults. Negative ratio or cap count as 0. */
void budget_init(budget *b, const budget_config *cfg);
/* A first attempt was sent: deposit. */
void budget_deposit(budget *b);
/* Adds the per_second tokens due since the last call (the first call only
 * starts the clock). */
void budget_refill(budget *b, uint64_t now_ms);
/* 1 and one token withdrawn when a retry or hedge may be sent, else 0. */
int budget_try_withdraw(budget *b);
double budget_tokens(budget *b);

/* Full-jitter exponential backoff: a delay drawn uniformly from
 * [0, min(cap_ms, base_ms * 2^attempt)] using `rnd` (any uniformly random
 * 32-bit value), for retry number `attempt` (0 for the first retry).
 * Spreading retries over the whole interval keeps clients that failed
 * together from retrying together. */
uint32_t backoff_ms(unsigned attempt, uint32_t base_ms, uint32_t cap_ms, uint32_t rnd);

#endif
