/* latency: two-generation log-scale histograms and a speed EWMA; see
 * latency.h. */
#include "mesh/latency.h"

#include <math.h>
#include <string.h>

#define SUB_BITS 3               /* 2^3 = 8 buckets per power of two */
#define MAX_LOG2 35              /* values >= 2^36 share the last bucket */

void latency_config_default(latency_config *c) {
    c->window_samples = 512;
    c->window_ms = 60000;
    c->speed_alpha = 0.3;
}

static latency_config resolve(const latency_config *cfg) {
    latency_config d;
    latency_config_default(&d);
    if (!cfg) return d;
    latency_config c = *cfg;
    if (!c.window_samples) c.window_samples = d.window_samples;
    if (!c.window_ms) c.window_ms = d.window_ms;
    if (!(c.speed_alpha > 0 && c.speed_alpha <= 1)) c.speed_alpha = d.speed_alpha;
    return c;
}

unsigned latency_bucket(uint64_t us) {
    if (us < (1u << (SUB_BITS + 1))) return (unsigned)us;
    int e = 63 - __builtin_clzll(us);
    if (e > MAX_LOG2) return LATENCY_BUCKETS - 1;
    unsigned sub = (unsigned)(us >> (e - SUB_BITS)) & ((1u << SUB_BITS) - 1);
    return (1u << SUB_BITS) + (unsigned)(e - SUB_BITS) * (1u << SUB_BITS) + sub;
}

/* The power of two a bucket at or above 8 belongs to. */
static unsigned bucket_log2(unsigned bucket) {
    return SUB_BITS + (bucket - (1u << SUB_BITS)) / (1u << SUB_BITS);
}

uint64_t latency_bucket_low(unsigned bucket) {
    if (bucket < (1u << SUB_BITS)) return bucket;
    uint64_t sub = (bucket - (1u << SUB_BITS)) % (1u << SUB_BITS);
    return (((uint64_t)1 << SUB_BITS) + sub) << (bucket_log2(bucket) - SUB_BITS);
}

/* The value reported for a bucket: its middle. */
static uint64_t bucket_mid(unsigned bucket) {
    if (bucket < (1u << SUB_BITS)) return bucket;
    return latency_bucket_low(bucket) + ((uint64_t)1 << (bucket_log2(bucket) - SUB_BITS)) / 2;
}

void latency_hist_init(latency_hist *h, const latency_config *cfg, uint64_t now_ms) {
    latency_config c = resolve(cfg);
    memset(h, 0, sizeof *h);
    h->window_samples = c.window_samples;
    h->window_ms = c.window_ms;
    atomic_store(&h->gen_start_ms, now_ms);
}

/* Makes the older generation the current one, emptied first so no thread
 * adds to it before it is clear. One thread does it; the others carry on
 * adding to the generation they saw. */
static void rotate(latency_hist *h, unsigned gen, uint64_t now_ms) {
    if (atomic_exchange(&h->rotating, 1)) return;
    if (atomic_load(&h->gen) == gen) {
        unsigned next = (gen + 1) & 1;
        for (unsigned i = 0; i < LATENCY_BUCKETS; i++) atomic_store_explicit(&h->counts[next][i], 0, memory_order_relaxed);
        atomic_store(&h->totals[next], 0);
        atomic_store(&h->gen_start_ms, now_ms);
        atomic_store(&h->gen, gen + 1);
    }
    atomic_store(&h->rotating, 0);
}

void latency_hist_add(latency_hist *h, uint64_t now_ms, uint64_t us) {
    unsigned gen = atomic_load(&h->gen);
    unsigned cur = gen & 1;
    uint64_t start = atomic_load(&h->gen_start_ms);
    if (atomic_load(&h->totals[cur]) >= h->window_samples || (now_ms > start && now_ms - start >= h->window_ms)) {
        rotate(h, gen, now_ms);
        gen = atomic_load(&h->gen);
        cur = gen & 1;
    }
    atomic_fetch_add_explicit(&h->counts[cur][latency_bucket(us)], 1, memory_order_relaxed);
    atomic_fetch_add(&h->totals[cur], 1);
}

unsigned latency_hist_count(latency_hist *h) {
    return atomic_load(&h->totals[0]) + atomic_load(&h->totals[1]);
}

uint64_t latency_hist_quantile(latency_hist *h, double q) {
    unsigned n[LATENCY_BUCKETS];
    uint64_t total = 0;
    for (unsigned i = 0; i < LATENCY_BUCKETS; i++) {
        n[i] = atomic_load_explicit(&h->counts[0][i], memory_order_relaxed) +
               atomic_load_explicit(&h->counts[1][i], memory_order_relaxed);
        total += n[i];
    }
    if (!total) return 0;
    if (!(q > 0)) q = 0;
    if (q > 1) q = 1;
    /* the rank of the q-quantile, 1-based: the smallest r with r >= q * total */
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LATENCY_BUCKETS; i++) {
        seen += n[i];
        if (seen >= rank) return bucket_mid(i);
    }
    return bucket_mid(LATENCY_BUCKETS - 1);
}

void latency_init(latency_tracker *t, const latency_config *cfg, uint64_t now_ms) {
    latency_config c = resolve(cfg);
    latency_hist_init(&t->ttft, &c, now_ms);
    latency_hist_init(&t->total, &c, now_ms);
    atomic_store(&t->speed_bits, 0);
    t->speed_alpha = c.speed_alpha;
}

void latency_record_ttft(latency_tracker *t, uint64_t now_ms, uint64_t ttft_us) {
    latency_hist_add(&t->ttft, now_ms, ttft_us);
}

static uint64_t double_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bits_double(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void speed_add(latency_tracker *t, double tps) {
    uint64_t old = atomic_load(&t->speed_bits), next;
    do {
        double ewma = old ? bits_double(old) : tps; /* the first sample is the estimate */
        next = double_bits(ewma + t->speed_alpha * (tps - ewma));
    } while (!atomic_compare_exchange_weak(&t->speed_bits, &old, next));
}

void latency_record_done(latency_tracker *t, uint64_t now_ms, uint64_t ttft_us, uint64_t total_us,
                         uint64_t tokens) {
    latency_hist_add(&t->total, now_ms, total_us);
    uint64_t gen_us = ttft_us && ttft_us < total_us ? total_us - ttft_us : total_us;
    if (tokens && gen_us) speed_add(t, (double)tokens * 1e6 / (double)gen_us);
}

uint64_t latency_ttft_quantile(latency_tracker *t, double q) {
    return latency_hist_quantile(&t->ttft, q);
}

uint64_t latency_total_quantile(latency_tracker *t, double q) {
    return latency_hist_quantile(&t->total, q);
}

double latency_speed(latency_tracker *t) {
    uint64_t u = atomic_load(&t->speed_bits);
    return u ? bits_double(u) : 0;
}

uint64_t latency_hedge_after_us(latency_tracker *t, unsigned min_samples, uint64_t fallback_us) {
    unsigned n = latency_hist_count(&t->ttft);
    if (n == 0 || n < min_samples) return fallback_us;
    return latency_hist_quantile(&t->ttft, 0.95);
}
