/* Tests for the latency tracker: bucket arithmetic and its error bound,
 * quantiles, generations aging out by count and by time, the tokens/s
 * EWMA, the hedging delay, and recording from several threads. */
#include <pthread.h>
#include <stdlib.h>

#include "mesh/latency.h"
#include "testlib.h"

/* |got - want| <= want / 16: the histogram's promised accuracy. */
static int close_to(uint64_t got, uint64_t want) {
    uint64_t d = got > want ? got - want : want - got;
    return d * 16 <= want;
}

static void test_buckets(void) {
    for (uint64_t v = 0; v < 16; v++) {
        CHECK_EQ_INT(latency_bucket(v), v);
        CHECK_EQ_INT(latency_bucket_low((unsigned)v), v);
    }
    CHECK_EQ_INT(latency_bucket(16), 16);
    CHECK_EQ_INT(latency_bucket(17), 16); /* 16..17 share a bucket of width 2 */
    CHECK_EQ_INT(latency_bucket(18), 17);
    CHECK_EQ_INT(latency_bucket_low(17), 18);
    /* every value lies in its bucket and buckets ascend */
    unsigned prev = 0;
    for (uint64_t v = 1; v < ((uint64_t)1 << 37); v = v + v / 7 + 1) {
        unsigned b = latency_bucket(v);
        CHECK(b >= prev);
        CHECK(b < LATENCY_BUCKETS);
        CHECK(latency_bucket_low(b) <= v);
        if (b + 1 < LATENCY_BUCKETS) CHECK(v < latency_bucket_low(b + 1));
        prev = b;
    }
    CHECK_EQ_INT(latency_bucket((uint64_t)1 << 36), LATENCY_BUCKETS - 1);
    CHECK_EQ_INT(latency_bucket(UINT64_MAX), LATENCY_BUCKETS - 1);
    CHECK_EQ_INT(latency_bucket(((uint64_t)1 << 36) - 1), LATENCY_BUCKETS - 1);
}

static void test_quantiles(void) {
    latency_hist h;
    latency_hist_init(&h, NULL, 0);
    CHECK_EQ_INT(latency_hist_quantile(&h, 0.5), 0);
    CHECK_EQ_INT(latency_hist_count(&h), 0);
    /* 1..100 ms, shuffled order does not matter */
    for (int i = 100; i >= 1; i--) latency_hist_add(&h, 0, (uint64_t)i * 1000);
    CHECK_EQ_INT(latency_hist_count(&h), 100);
    CHECK(close_to(latency_hist_quantile(&h, 0.5), 50000));
    CHECK(close_to(latency_hist_quantile(&h, 0.95), 95000));
    CHECK(close_to(latency_hist_quantile(&h, 0.99), 99000));
    CHECK(close_to(latency_hist_quantile(&h, 1.0), 100000));
    CHECK(close_to(latency_hist_quantile(&h, 0.0), 1000)); /* the minimum */
    CHECK(close_to(latency_hist_quantile(&h, 7.0), 100000)); /* clamped */
    /* exact in the small range */
    latency_hist s;
    latency_hist_init(&s, NULL, 0);
    latency_hist_add(&s, 0, 3);
    latency_hist_add(&s, 0, 9);
    CHECK_EQ_INT(latency_hist_quantile(&s, 0.5), 3);
    CHECK_EQ_INT(latency_hist_quantile(&s, 0.51), 9);
}

static void test_generations_by_count(void) {
    latency_config c = {.window_samples = 10};
    latency_hist h;
    latency_hist_init(&h, &c, 0);
    for (int i = 0; i < 10; i++) latency_hist_add(&h, 0, 1000);
    for (int i = 0; i < 10; i++) latency_hist_add(&h, 0, 5000);
    CHECK_EQ_INT(latency_hist_count(&h), 20);
    CHECK(close_to(latency_hist_quantile(&h, 0.5), 1000)); /* old generation still there */
    CHECK(close_to(latency_hist_quantile(&h, 0.55), 5000));
    for (int i = 0; i < 10; i++) latency_hist_add(&h, 0, 5000);
    CHECK_EQ_INT(latency_hist_count(&h), 20);
    CHECK(close_to(latency_hist_quantile(&h, 0.0), 5000)); /* the 1 ms samples aged out */
    latency_hist_add(&h, 0, 7000);
    CHECK_EQ_INT(latency_hist_count(&h), 11);
}

static void test_generations_by_time(void) {
    latency_config c = {.window_samples = 1000, .window_ms = 1000};
    latency_hist h;
    latency_hist_init(&h, &c, 5000);
    latency_hist_add(&h, 5000, 100);
    latency_hist_add(&h, 5999, 100);
    CHECK_EQ_INT(latency_hist_count(&h), 2);
    latency_hist_add(&h, 6000, 200); /* a second generation begins */
    CHECK_EQ_INT(latency_hist_count(&h), 3);
    latency_hist_add(&h, 6500, 200);
    latency_hist_add(&h, 7000, 300); /* the 100 us samples go */
    CHECK_EQ_INT(latency_hist_count(&h), 3);
    CHECK(close_to(latency_hist_quantile(&h, 0.0), 200));
    /* an older clock reading does not rotate */
    latency_hist_add(&h, 100, 300);
    CHECK_EQ_INT(latency_hist_count(&h), 4);
}

static void test_speed(void) {
    latency_config c = {.speed_alpha = 0.5};
    latency_tracker t;
    latency_init(&t, &c, 0);
    CHECK(latency_speed(&t) == 0);
    /* 100 tokens in the 2 s after a 1 s first token: 50 tokens/s */
    latency_record_done(&t, 0, 1000000, 3000000, 100);
    CHECK(latency_speed(&t) == 50);
    /* not streamed: over the whole time; EWMA halfway to 100 */
    latency_record_done(&t, 0, 0, 1000000, 100);
    CHECK(latency_speed(&t) == 75);
    /* ttft not below total: over the whole time */
    latency_record_done(&t, 0, 2000000, 2000000, 150);
    CHECK(latency_speed(&t) == 75);
    /* no tokens, or no time: no sample */
    latency_record_done(&t, 0, 0, 1000000, 0);
    latency_record_done(&t, 0, 0, 0, 10);
    CHECK(latency_speed(&t) == 75);
    CHECK_EQ_INT(latency_hist_count(&t.total), 5);
    CHECK(close_to(latency_total_quantile(&t, 1.0), 3000000));
    /* alpha out of range takes the default */
    latency_config bad = {.speed_alpha = 2};
    latency_init(&t, &bad, 0);
    CHECK(t.speed_alpha == 0.3);
}

static void test_hedge_after(void) {
    latency_tracker t;
    latency_init(&t, NULL, 0);
    CHECK_EQ_INT(latency_hedge_after_us(&t, 0, 777), 777);
    for (int i = 1; i <= 19; i++) latency_record_ttft(&t, 0, (uint64_t)i * 10000);
    CHECK_EQ_INT(latency_hedge_after_us(&t, 20, 777), 777);
    latency_record_ttft(&t, 0, 200000);
    uint64_t h = latency_hedge_after_us(&t, 20, 777);
    CHECK(close_to(h, 190000)); /* rank 19 of 20 */
    CHECK_EQ_INT(h, latency_ttft_quantile(&t, 0.95));
}

static latency_hist shared;
static void *adder(void *arg) {
    uint64_t base = (uint64_t)(uintptr_t)arg;
    for (uint64_t i = 0; i < 20000; i++) latency_hist_add(&shared, i / 100, base + i % 1000);
    return NULL;
}

static void run_threads(void) {
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, adder, (void *)(i * 1000));
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
}

static void test_threads(void) {
    latency_config c = {.window_samples = 1000000, .window_ms = 1000000};
    latency_hist_init(&shared, &c, 0);
    run_threads();
    CHECK_EQ_INT(latency_hist_count(&shared), 80000); /* nothing lost without rotation */
    uint64_t p50 = latency_hist_quantile(&shared, 0.5);
    CHECK(p50 >= 1000 && p50 < 3000);
    /* constant rotation (how many samples a generation gains while another
     * thread clears the next one depends on scheduling): still sane */
    latency_config small = {.window_samples = 100, .window_ms = 10};
    latency_hist_init(&shared, &small, 0);
    run_threads();
    unsigned n = latency_hist_count(&shared);
    CHECK(n > 0 && n <= 80000);
    uint64_t q = latency_hist_quantile(&shared, 0.99);
    CHECK(q < 5000);
}

int main(void) {
    TEST(test_buckets);
    TEST(test_quantiles);
    TEST(test_generations_by_count);
    TEST(test_generations_by_time);
    TEST(test_speed);
    TEST(test_hedge_after);
    TEST(test_threads);
    return test_done();
}
