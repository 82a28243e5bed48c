/* latency: what a node (or a pool of nodes) has recently been like to talk
 * to: time to first token, total time, and generation speed.
 *
 * Hedging needs the pool's p95 time-to-first-token (send a second request
 * when the first has no token by then); the planner needs each node's p95
 * TTFT and its speed in tokens/s. Both are read on every request, so they
 * must be cheap and lock-free.
 *
 * A latency_hist is a log-scale histogram of microseconds: exact below 16 us,
 * then 8 buckets per power of two, so a quantile is within 6.25% of the true
 * sample value; values from 2^36 us (19 h) up share the last bucket. It keeps
 * two generations: samples go into the current one, and when it holds
 * window_samples samples, or is window_ms old when the next sample arrives,
 * the older one is cleared and becomes current. Quantiles read both, so they
 * describe the last window_samples .. 2 * window_samples samples: old
 * behaviour ages out without any per-sample decay arithmetic.
 *
 * Thread-safety: everything is atomics; any thread may record and read at
 * any time. A sample that races with a generation change may be lost, and a
 * reader may see a generation half cleared: estimates stay estimates. */
#ifndef MSOA_LATENCY_H
#define MSOA_LATENCY_H

#include <stdatomic.h>
#include <stdint.h>

#define LATENCY_BUCKETS 272

typedef struct latency_config {
    unsigned window_samples; /* samples per generation (default 512) */
    uint32_t window_ms;      /* a generation's longest life (default 60000) */
    double speed_alpha;      /* weight of a new tokens/s sample in the EWMA (default 0.3) */
} latency_config;

typedef struct latency_hist {
    atomic_uint counts[2][LATENCY_BUCKETS];
    atomic_uint totals[2];
    atomic_uint gen;                    /* counts[gen & 1] is current */
    atomic_uint_least64_t gen_start_ms; /* when the current generation began */
    atomic_int rotating;                /* held by the one thread changing generation */
    unsigned window_samples;
    uint32_t window_ms;
} latency_hist;

typedef struct latency_tracker {
    latency_hist ttft, total;
    atomic_uint_least64_t speed_bits; /* the EWMA, a double's bits; 0 = no sample yet */
    double speed_alpha;
} latency_tracker;

void latency_config_default(latency_config *c);

/* cfg NULL: defaults; zero fields take their defaults too. */
void latency_hist_init(latency_hist *h, const latency_config *cfg, uint64_t now_ms);
void latency_hist_add(latency_hist *h, uint64_t now_ms, uint64_t us);
/* Samples in the two generations. */
unsigned latency_hist_count(latency_hist *h);
/* The q-quantile (0 < q <= 1; 0.5 = median) of the samples, as the middle
 * of its bucket; 0 when there are none. */
uint64_t latency_hist_quantile(latency_hist *h, double q);

void latency_init(latency_tracker *t, const latency_config *cfg, uint64_t now_ms);
/* The first token arrived ttft_us after the request was sent. */
void latency_record_ttft(latency_tracker *t, uint64_t now_ms, uint64_t ttft_us);
/* A request completed: total_us after it was sent, with `tokens` completion
 * tokens. The speed sample is tokens over the time after the first token
 * (total_us - ttft_us), or over total_us when ttft_us is 0 (not streamed)
 * or not below total_us; requests with no tokens give no speed sample. */
void latency_record_done(latency_tracker *t, uint64_t now_ms, uint64_t ttft_us, uint64_t total_us,
                         uint64_t tokens);
uint64_t latency_ttft_quantile(latency_tracker *t, double q);
uint64_t latency_total_quantile(latency_tracker *t, double q);
/* Tokens per second (EWMA), 0 when nothing has been measured. */
double latency_speed(latency_tracker *t);
/* When to hedge: the p95 TTFT once at least min_samples first tokens were
 * seen, else fallback_us. */
uint64_t latency_hedge_after_us(latency_tracker *t, unsigned min_samples, uint64_t fallback_us);

/* Bucket arithmetic, exposed for tests: the bucket of a value and the
 * smallest value in a bucket. */
unsigned latency_bucket(uint64_t us);
uint64_t latency_bucket_low(unsigned bucket);

#endif
