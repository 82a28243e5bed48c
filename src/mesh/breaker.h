/* breaker: a circuit breaker for one node.
 *
 * A node that keeps failing gets no traffic for a while instead of eating
 * every request's deadline; then a few probe requests find out whether it is
 * back. Pure state machine: no I/O, time passed in (monotonic ms).
 *
 *   CLOSED --(N consecutive failures, or error rate >= R over the window
 *             with >= M requests)--> OPEN
 *   OPEN --(open period elapsed; checked lazily on the next call)--> HALF_OPEN
 *   HALF_OPEN: admits at most K requests at once (the probes)
 *   HALF_OPEN --(a success)--> CLOSED   (window cleared, open period reset)
 *   HALF_OPEN --(a failure)--> OPEN     (open period doubled, up to the cap)
 *
 * Outcomes are not tied to admissions: a success or failure reported in
 * HALF_OPEN counts whichever request it came from (a late answer from before
 * the trip is as good evidence as a probe); outcomes reported while OPEN are
 * ignored. A probe that ends without a verdict on the node (cancelled as a
 * hedge loser, client gone) must give its slot back with breaker_release;
 * slots not given back within probe_timeout_ms are reclaimed anyway so a
 * lost probe cannot wedge the breaker half-open.
 *
 * The window is BREAKER_BUCKETS buckets of window_ms / BREAKER_BUCKETS each,
 * so "the last W ms" is exact to one bucket (1 s with the defaults).
 *
 * Thread-safety: every call takes the breaker's own mutex (a few dozen
 * instructions inside; no call blocks on anything else), so one breaker may
 * be used from any number of threads. */
#ifndef MSOA_BREAKER_H
#define MSOA_BREAKER_H

#include <pthread.h>
#include <stdint.h>

#define BREAKER_BUCKETS 10

typedef struct breaker_config {
    unsigned consecutive_failures; /* trip after this many in a row; 0 = never (default 5) */
    double error_rate;             /* trip when failures/requests >= this; <= 0 = never (0.5) */
    uint32_t window_ms;            /* the error-rate window (10000) */
    unsigned min_requests;         /* fewer requests in the window never trip on rate (10) */
    uint32_t open_ms;              /* first open period (5000) */
    uint32_t open_max_ms;          /* cap for the doubling open period (60000) */
    unsigned half_open_probes;     /* requests admitted at once when half-open (1) */
    uint32_t probe_timeout_ms;     /* a probe slot not given back is reclaimed after (30000) */
} breaker_config;

typedef enum { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN } breaker_state_t;

typedef struct breaker_bucket {
    uint64_t epoch; /* now_ms / bucket width when last written */
    uint32_t requests, failures;
} breaker_bucket;

typedef struct breaker {
    pthread_mutex_t mu;
    breaker_config cfg;
    breaker_state_t state;     /* as of the last call; OPEN may have expired since */
    unsigned consecutive;      /* failures in a row while closed */
    uint64_t open_until_ms;    /* OPEN: when it turns half-open */
    uint32_t open_period_ms;   /* the period the next trip from half-open doubles */
    unsigned probes;           /* HALF_OPEN: probes admitted and not yet answered */
    uint64_t last_probe_ms;    /* HALF_OPEN: when the last probe was admitted */
    uint64_t trips;            /* times it went to OPEN, for metrics */
    breaker_bucket buckets[BREAKER_BUCKETS];
} breaker;

/* What breaker_snapshot reports, for metrics and the `msoa` object. */
typedef struct breaker_info {
    breaker_state_t state;
    unsigned consecutive_failures;
    uint32_t window_requests, window_failures;
    uint64_t open_remaining_ms; /* OPEN: time until half-open, else 0 */
    uint32_t open_period_ms;
    uint64_t trips;
} breaker_info;

/* The defaults named in breaker_config's comments. */
void breaker_config_default(breaker_config *c);
/* cfg NULL means the defaults; zero periods are raised to 1 ms and
 * half_open_probes to 1, open_max_ms to at least open_ms. */
void breaker_init(breaker *b, const breaker_config *cfg);
void breaker_destroy(breaker *b);

/* 1 when a request may be sent now. In HALF_OPEN this takes a probe slot,
 * which the request's breaker_success / breaker_failure / breaker_release
 * gives back. */
int breaker_allow(breaker *b, uint64_t now_ms);
void breaker_success(breaker *b, uint64_t now_ms);
void breaker_failure(breaker *b, uint64_t now_ms);
/* The request admitted by breaker_allow ended without saying anything
 * about the node. Harmless when it was not a probe. */
void breaker_release(breaker *b, uint64_t now_ms);
/* A health probe reached the node: an open circuit turns half-open now, so
 * a restarted node gets its trial request without waiting out the period. */
void breaker_node_alive(breaker *b, uint64_t now_ms);

/* State at now_ms (OPEN whose period has elapsed reads HALF_OPEN). */
breaker_state_t breaker_state(breaker *b, uint64_t now_ms);
void breaker_snapshot(breaker *b, uint64_t now_ms, breaker_info *out);
const char *breaker_state_name(breaker_state_t s); /* "closed", "open", "half_open" */

#endif
