/* breaker: the circuit breaker state machine; see breaker.h. */
#include "mesh/breaker.h"

#include <string.h>

void breaker_config_default(breaker_config *c) {
    c->consecutive_failures = 5;
    c->error_rate = 0.5;
    c->window_ms = 10000;
    c->min_requests = 10;
    c->open_ms = 5000;
    c->open_max_ms = 60000;
    c->half_open_probes = 1;
    c->probe_timeout_ms = 30000;
}

void breaker_init(breaker *b, const breaker_config *cfg) {
    memset(b, 0, sizeof *b);
    if (cfg)
        b->cfg = *cfg;
    else
        breaker_config_default(&b->cfg);
    breaker_config *c = &b->cfg;
    if (c->window_ms == 0) c->window_ms = 1;
    if (c->open_ms == 0) c->open_ms = 1;
    if (c->open_max_ms < c->open_ms) c->open_max_ms = c->open_ms;
    if (c->half_open_probes == 0) c->half_open_probes = 1;
    if (c->probe_timeout_ms == 0) c->probe_timeout_ms = 1;
    b->state = BREAKER_CLOSED;
    b->open_period_ms = c->open_ms;
    pthread_mutex_init(&b->mu, NULL);
}

void breaker_destroy(breaker *b) {
    pthread_mutex_destroy(&b->mu);
}

static uint64_t bucket_epoch(const breaker *b, uint64_t now_ms) {
    uint32_t width = b->cfg.window_ms / BREAKER_BUCKETS;
    return now_ms / (width ? width : 1);
}

/* Callers read the clock before taking the lock, so a thread may report a
 * slightly older time than the last one: such a sample joins the newer
 * bucket in its slot instead of wiping it. */
static void window_add(breaker *b, uint64_t now_ms, int failed) {
    uint64_t e = bucket_epoch(b, now_ms);
    breaker_bucket *k = &b->buckets[e % BREAKER_BUCKETS];
    if (k->epoch < e) {
        k->epoch = e;
        k->requests = k->failures = 0;
    }
    k->requests++;
    if (failed) k->failures++;
}

static void window_count(const breaker *b, uint64_t now_ms, uint32_t *requests, uint32_t *failures) {
    uint64_t e = bucket_epoch(b, now_ms);
    *requests = *failures = 0;
    for (int i = 0; i < BREAKER_BUCKETS; i++) {
        const breaker_bucket *k = &b->buckets[i];
        if (k->epoch + BREAKER_BUCKETS > e) {
            *requests += k->requests;
            *failures += k->failures;
        }
    }
}

static void trip(breaker *b, uint64_t now_ms, uint32_t period_ms) {
    b->state = BREAKER_OPEN;
    b->open_period_ms = period_ms;
    b->open_until_ms = now_ms + period_ms;
    b->probes = 0;
    b->trips++;
}

static void close_circuit(breaker *b) {
    b->state = BREAKER_CLOSED;
    b->consecutive = 0;
    b->probes = 0;
    b->open_period_ms = b->cfg.open_ms;
    /* the failures that tripped it would trip it again at once */
    memset(b->buckets, 0, sizeof b->buckets);
}

/* Applies the transitions that time alone makes: the open period ending,
 * and lost probe slots being reclaimed. Caller holds the lock. */
static void advance(breaker *b, uint64_t now_ms) {
    if (b->state == BREAKER_OPEN && now_ms >= b->open_until_ms) {
        b->state = BREAKER_HALF_OPEN;
        b->probes = 0;
    }
    if (b->state == BREAKER_HALF_OPEN && b->probes && now_ms >= b->last_probe_ms + b->cfg.probe_timeout_ms)
        b->probes = 0;
}

int breaker_allow(breaker *b, uint64_t now_ms) {
    pthread_mutex_lock(&b->mu);
    advance(b, now_ms);
    int ok = 0;
    if (b->state == BREAKER_CLOSED) {
        ok = 1;
    } else if (b->state == BREAKER_HALF_OPEN && b->probes < b->cfg.half_open_probes) {
        b->probes++;
        b->last_probe_ms = now_ms;
        ok = 1;
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

void breaker_success(breaker *b, uint64_t now_ms) {
    pthread_mutex_lock(&b->mu);
    advance(b, now_ms);
    if (b->state == BREAKER_CLOSED) {
        b->consecutive = 0;
        window_add(b, now_ms, 0);
    } else if (b->state == BREAKER_HALF_OPEN) {
        close_circuit(b);
        window_add(b, now_ms, 0);
    }
    pthread_mutex_unlock(&b->mu);
}

static int should_trip(breaker *b, uint64_t now_ms) {
    const breaker_config *c = &b->cfg;
    if (c->consecutive_failures && b->consecutive >= c->consecutive_failures) return 1;
    if (c->error_rate <= 0) return 0;
    uint32_t requests, failures;
    window_count(b, now_ms, &requests, &failures);
    return requests >= c->min_requests && (double)failures >= c->error_rate * requests;
}

void breaker_failure(breaker *b, uint64_t now_ms) {
    pthread_mutex_lock(&b->mu);
    advance(b, now_ms);
    if (b->state == BREAKER_CLOSED) {
        b->consecutive++;
        window_add(b, now_ms, 1);
        if (should_trip(b, now_ms)) trip(b, now_ms, b->cfg.open_ms);
    } else if (b->state == BREAKER_HALF_OPEN) {
        uint64_t doubled = (uint64_t)b->open_period_ms * 2;
        trip(b, now_ms, doubled > b->cfg.open_max_ms ? b->cfg.open_max_ms : (uint32_t)doubled);
    }
    pthread_mutex_unlock(&b->mu);
}

void breaker_node_alive(breaker *b, uint64_t now_ms) {
    pthread_mutex_lock(&b->mu);
    if (b->state == BREAKER_OPEN) b->open_until_ms = now_ms;
    advance(b, now_ms);
    pthread_mutex_unlock(&b->mu);
}

void breaker_release(breaker *b, uint64_t now_ms) {
    pthread_mutex_lock(&b->mu);
    advance(b, now_ms);
    if (b->state == BREAKER_HALF_OPEN && b->probes) b->probes--;
    pthread_mutex_unlock(&b->mu);
}

breaker_state_t breaker_state(breaker *b, uint64_t now_ms) {
    pthread_mutex_lock(&b->mu);
    advance(b, now_ms);
    breaker_state_t s = b->state;
    pthread_mutex_unlock(&b->mu);
    return s;
}

void breaker_snapshot(breaker *b, uint64_t now_ms, breaker_info *out) {
    pthread_mutex_lock(&b->mu);
    advance(b, now_ms);
    out->state = b->state;
    out->consecutive_failures = b->consecutive;
    window_count(b, now_ms, &out->window_requests, &out->window_failures);
    out->open_remaining_ms = b->state == BREAKER_OPEN ? b->open_until_ms - now_ms : 0;
    out->open_period_ms = b->open_period_ms;
    out->trips = b->trips;
    pthread_mutex_unlock(&b->mu);
}

const char *breaker_state_name(breaker_state_t s) {
    switch (s) {
    case BREAKER_CLOSED: return "closed";
    case BREAKER_OPEN: return "open";
    case BREAKER_HALF_OPEN: return "half_open";
    }
    return "?";
}
