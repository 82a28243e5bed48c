/* Tests for the circuit breaker: every transition (closed -> open on a run
 * of failures or on the error rate, open -> half-open by time, half-open ->
 * closed / open), the doubling and capped open period, probe slots, the
 * sliding window, and use from several threads. */
#include <pthread.h>

#include "mesh/breaker.h"
#include "testlib.h"

/* A config with only the trigger under test enabled. */
static breaker_config only_consecutive(unsigned n) {
    breaker_config c;
    breaker_config_default(&c);
    c.consecutive_failures = n;
    c.error_rate = 0;
    return c;
}

static breaker_config only_rate(double rate, unsigned min_requests) {
    breaker_config c;
    breaker_config_default(&c);
    c.consecutive_failures = 0;
    c.error_rate = rate;
    c.min_requests = min_requests;
    return c;
}

static void test_defaults(void) {
    breaker_config c;
    breaker_config_default(&c);
    CHECK_EQ_INT(c.consecutive_failures, 5);
    CHECK(c.error_rate == 0.5);
    CHECK_EQ_INT(c.window_ms, 10000);
    CHECK_EQ_INT(c.min_requests, 10);
    CHECK_EQ_INT(c.open_ms, 5000);
    CHECK_EQ_INT(c.open_max_ms, 60000);
    CHECK_EQ_INT(c.half_open_probes, 1);
    breaker b;
    breaker_init(&b, NULL);
    CHECK_EQ_INT(breaker_state(&b, 0), BREAKER_CLOSED);
    CHECK_EQ_INT(breaker_allow(&b, 0), 1);
    /* five in a row trip the defaults */
    for (int i = 0; i < 4; i++) breaker_failure(&b, 100);
    CHECK_EQ_INT(breaker_state(&b, 100), BREAKER_CLOSED);
    breaker_failure(&b, 100);
    CHECK_EQ_INT(breaker_state(&b, 100), BREAKER_OPEN);
    CHECK_EQ_INT(breaker_state(&b, 5099), BREAKER_OPEN);
    CHECK_EQ_INT(breaker_state(&b, 5100), BREAKER_HALF_OPEN);
    breaker_destroy(&b);
    CHECK_STR(breaker_state_name(BREAKER_CLOSED), "closed");
    CHECK_STR(breaker_state_name(BREAKER_OPEN), "open");
    CHECK_STR(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
}

static void test_consecutive_reset_by_success(void) {
    breaker_config c = only_consecutive(3);
    breaker b;
    breaker_init(&b, &c);
    breaker_failure(&b, 1);
    breaker_failure(&b, 2);
    breaker_success(&b, 3); /* the run is broken */
    breaker_failure(&b, 4);
    breaker_failure(&b, 5);
    CHECK_EQ_INT(breaker_state(&b, 5), BREAKER_CLOSED);
    CHECK_EQ_INT(breaker_allow(&b, 5), 1);
    breaker_failure(&b, 6);
    CHECK_EQ_INT(breaker_state(&b, 6), BREAKER_OPEN);
    CHECK_EQ_INT(breaker_allow(&b, 6), 0);
    breaker_destroy(&b);
}

static void test_disabled_triggers_never_trip(void) {
    breaker_config c = only_consecutive(0);
    breaker b;
    breaker_init(&b, &c);
    for (int i = 0; i < 1000; i++) breaker_failure(&b, (uint64_t)i);
    CHECK_EQ_INT(breaker_state(&b, 1000), BREAKER_CLOSED);
    breaker_destroy(&b);
}

static void test_error_rate_trip(void) {
    breaker_config c = only_rate(0.5, 10);
    breaker b;
    breaker_init(&b, &c);
    /* 4 failures of 9: below the minimum count and below the rate */
    for (int i = 0; i < 9; i++) {
        if (i % 2)
            breaker_failure(&b, 1000);
        else
            breaker_success(&b, 1000);
    }
    CHECK_EQ_INT(breaker_state(&b, 1000), BREAKER_CLOSED);
    breaker_info in;
    breaker_snapshot(&b, 1000, &in);
    CHECK_EQ_INT(in.window_requests, 9);
    CHECK_EQ_INT(in.window_failures, 4);
    /* the 10th request, a failure: 5 of 10 = 50% >= 50% */
    breaker_failure(&b, 1000);
    CHECK_EQ_INT(breaker_state(&b, 1000), BREAKER_OPEN);
    breaker_destroy(&b);
}

static void test_error_rate_below_threshold(void) {
    breaker_config c = only_rate(0.5, 10);
    breaker b;
    breaker_init(&b, &c);
    /* 4 of 10 fail (40%) */
    for (int i = 0; i < 6; i++) breaker_success(&b, 10);
    for (int i = 0; i < 4; i++) breaker_failure(&b, 10);
    CHECK_EQ_INT(breaker_state(&b, 10), BREAKER_CLOSED);
    breaker_destroy(&b);
}

static void test_error_rate_needs_min_requests(void) {
    breaker_config c = only_rate(0.5, 10);
    breaker b;
    breaker_init(&b, &c);
    for (int i = 0; i < 9; i++) breaker_failure(&b, 10); /* 100%, but 9 < 10 */
    CHECK_EQ_INT(breaker_state(&b, 10), BREAKER_CLOSED);
    breaker_failure(&b, 10);
    CHECK_EQ_INT(breaker_state(&b, 10), BREAKER_OPEN);
    breaker_destroy(&b);
}

static void test_window_slides(void) {
    breaker_config c = only_rate(0.5, 10); /* 10 buckets of 1 s */
    breaker b;
    breaker_init(&b, &c);
    for (int i = 0; i < 9; i++) breaker_failure(&b, 0);
    breaker_info in;
    breaker_snapshot(&b, 9999, &in);
    CHECK_EQ_INT(in.window_requests, 9); /* bucket 0 still inside at 9.999 s */
    breaker_snapshot(&b, 10000, &in);
    CHECK_EQ_INT(in.window_requests, 0); /* gone once 10 s have passed */
    /* so a failure now is 1 of 1 and the minimum is not reached */
    breaker_failure(&b, 10000);
    CHECK_EQ_INT(breaker_state(&b, 10000), BREAKER_CLOSED);
    /* successes spread over the window dilute failures */
    for (int s = 0; s < 10; s++) breaker_success(&b, 10000 + (uint64_t)s * 1000);
    for (int i = 0; i < 9; i++) breaker_failure(&b, 19500);
    breaker_snapshot(&b, 19500, &in);
    CHECK_EQ_INT(in.window_requests, 20); /* 1 + 10 + 9 */
    CHECK_EQ_INT(in.window_failures, 10);
    CHECK_EQ_INT(in.state, BREAKER_OPEN); /* 10/20 = 50% */
    breaker_destroy(&b);
}

static void test_slot_reuse_after_full_cycle(void) {
    breaker_config c = only_rate(0.5, 2);
    breaker b;
    breaker_init(&b, &c);
    breaker_failure(&b, 500);   /* bucket 0, epoch 0 */
    breaker_success(&b, 10500); /* bucket 0 again, epoch 10: the old count is dropped */
    breaker_info in;
    breaker_snapshot(&b, 10500, &in);
    CHECK_EQ_INT(in.window_requests, 1);
    CHECK_EQ_INT(in.window_failures, 0);
    breaker_destroy(&b);
}

static void test_out_of_order_time(void) {
    breaker_config c = only_rate(0.5, 2);
    breaker b;
    breaker_init(&b, &c);
    breaker_success(&b, 12000);
    breaker_failure(&b, 2500); /* an older reading from another thread: same slot, kept */
    breaker_info in;
    breaker_snapshot(&b, 12000, &in);
    CHECK_EQ_INT(in.window_requests, 2);
    CHECK_EQ_INT(in.trips, 1);
    breaker_destroy(&b);
}

/* Trips a consecutive-1 breaker at `now`. */
static void trip_now(breaker *b, uint64_t now) {
    CHECK_EQ_INT(breaker_allow(b, now), 1);
    breaker_failure(b, now);
}

static void test_open_half_open_closed(void) {
    breaker_config c = only_consecutive(1);
    c.open_ms = 1000;
    breaker b;
    breaker_init(&b, &c);
    trip_now(&b, 100);
    CHECK_EQ_INT(breaker_state(&b, 100), BREAKER_OPEN);
    CHECK_EQ_INT(breaker_allow(&b, 1099), 0);
    breaker_info in;
    breaker_snapshot(&b, 600, &in);
    CHECK_EQ_INT(in.open_remaining_ms, 500);
    CHECK_EQ_INT(in.trips, 1);
    /* a late answer while open changes nothing */
    breaker_success(&b, 700);
    CHECK_EQ_INT(breaker_state(&b, 700), BREAKER_OPEN);
    breaker_failure(&b, 800);
    breaker_snapshot(&b, 800, &in);
    CHECK_EQ_INT(in.open_remaining_ms, 300);
    /* period over: one probe */
    CHECK_EQ_INT(breaker_state(&b, 1100), BREAKER_HALF_OPEN);
    CHECK_EQ_INT(breaker_allow(&b, 1100), 1);
    CHECK_EQ_INT(breaker_allow(&b, 1101), 0);
    CHECK_EQ_INT(breaker_state(&b, 1101), BREAKER_HALF_OPEN);
    breaker_success(&b, 1200);
    CHECK_EQ_INT(breaker_state(&b, 1200), BREAKER_CLOSED);
    CHECK_EQ_INT(breaker_allow(&b, 1200), 1);
    CHECK_EQ_INT(breaker_allow(&b, 1200), 1);
    breaker_snapshot(&b, 1200, &in);
    CHECK_EQ_INT(in.window_requests, 1); /* cleared on closing, then the success */
    CHECK_EQ_INT(in.window_failures, 0);
    CHECK_EQ_INT(in.open_remaining_ms, 0);
    breaker_destroy(&b);
}

static void test_open_period_doubles_and_caps(void) {
    breaker_config c = only_consecutive(1);
    c.open_ms = 1000;
    c.open_max_ms = 5000;
    breaker b;
    breaker_init(&b, &c);
    uint64_t now = 0;
    trip_now(&b, now);
    uint32_t expect[] = {2000, 4000, 5000, 5000};
    breaker_info in;
    breaker_snapshot(&b, now, &in);
    CHECK_EQ_INT(in.open_period_ms, 1000);
    uint32_t period = 1000;
    for (int i = 0; i < 4; i++) {
        now += period;
        CHECK_EQ_INT(breaker_state(&b, now - 1), BREAKER_OPEN);
        CHECK_EQ_INT(breaker_allow(&b, now), 1); /* the probe */
        breaker_failure(&b, now);                /* fails: open again, longer */
        breaker_snapshot(&b, now, &in);
        CHECK_EQ_INT(in.state, BREAKER_OPEN);
        CHECK_EQ_INT(in.open_period_ms, expect[i]);
        CHECK_EQ_INT(in.open_remaining_ms, expect[i]);
        period = expect[i];
    }
    /* a successful probe resets the period for the next trip */
    now += period;
    CHECK_EQ_INT(breaker_allow(&b, now), 1);
    breaker_success(&b, now);
    CHECK_EQ_INT(breaker_state(&b, now), BREAKER_CLOSED);
    trip_now(&b, now);
    breaker_snapshot(&b, now, &in);
    CHECK_EQ_INT(in.open_period_ms, 1000);
    CHECK_EQ_INT(in.trips, 6);
    breaker_destroy(&b);
}

static void test_several_probes(void) {
    breaker_config c = only_consecutive(1);
    c.open_ms = 10;
    c.half_open_probes = 3;
    breaker b;
    breaker_init(&b, &c);
    trip_now(&b, 0);
    CHECK_EQ_INT(breaker_allow(&b, 10), 1);
    CHECK_EQ_INT(breaker_allow(&b, 10), 1);
    CHECK_EQ_INT(breaker_allow(&b, 10), 1);
    CHECK_EQ_INT(breaker_allow(&b, 10), 0);
    breaker_release(&b, 11); /* one probe cancelled: its slot is free again */
    CHECK_EQ_INT(breaker_state(&b, 11), BREAKER_HALF_OPEN);
    CHECK_EQ_INT(breaker_allow(&b, 11), 1);
    CHECK_EQ_INT(breaker_allow(&b, 11), 0);
    breaker_failure(&b, 12); /* the first answer decides */
    CHECK_EQ_INT(breaker_state(&b, 12), BREAKER_OPEN);
    breaker_destroy(&b);
}

static void test_release_outside_half_open(void) {
    breaker_config c = only_consecutive(2);
    breaker b;
    breaker_init(&b, &c);
    breaker_failure(&b, 0);
    breaker_release(&b, 0); /* closed: no effect, the run of failures goes on */
    breaker_failure(&b, 0);
    CHECK_EQ_INT(breaker_state(&b, 0), BREAKER_OPEN);
    breaker_release(&b, 1); /* open: no effect */
    CHECK_EQ_INT(breaker_state(&b, 1), BREAKER_OPEN);
    breaker_destroy(&b);
}

static void test_lost_probe_reclaimed(void) {
    breaker_config c = only_consecutive(1);
    c.open_ms = 100;
    c.probe_timeout_ms = 1000;
    breaker b;
    breaker_init(&b, &c);
    trip_now(&b, 0);
    CHECK_EQ_INT(breaker_allow(&b, 100), 1);
    CHECK_EQ_INT(breaker_allow(&b, 1099), 0);
    CHECK_EQ_INT(breaker_allow(&b, 1100), 1); /* the first probe never reported */
    CHECK_EQ_INT(breaker_allow(&b, 1101), 0);
    breaker_destroy(&b);
}

static void test_config_clamped(void) {
    breaker_config c = only_consecutive(1);
    c.open_ms = 0;
    c.open_max_ms = 0;
    c.half_open_probes = 0;
    c.window_ms = 0;
    breaker b;
    breaker_init(&b, &c);
    trip_now(&b, 50);
    CHECK_EQ_INT(breaker_state(&b, 50), BREAKER_OPEN);
    CHECK_EQ_INT(breaker_state(&b, 51), BREAKER_HALF_OPEN);
    CHECK_EQ_INT(breaker_allow(&b, 51), 1);
    CHECK_EQ_INT(breaker_allow(&b, 51), 0);
    breaker_failure(&b, 51);
    breaker_info in;
    breaker_snapshot(&b, 51, &in);
    CHECK_EQ_INT(in.open_period_ms, 1); /* capped at max(open_max, open) */
    breaker_destroy(&b);
}

/* Several threads report on one breaker; no update may be lost. */
static breaker shared;
static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        if (breaker_allow(&shared, 5000)) breaker_success(&shared, 5000);
        breaker_failure(&shared, 5000);
    }
    return NULL;
}

static void test_threads(void) {
    breaker_config c = only_consecutive(0); /* never trips: every outcome is counted */
    breaker_init(&shared, &c);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    breaker_info in;
    breaker_snapshot(&shared, 5000, &in);
    CHECK_EQ_INT(in.state, BREAKER_CLOSED);
    CHECK_EQ_INT(in.window_requests, 16000);
    CHECK_EQ_INT(in.window_failures, 8000);
    breaker_destroy(&shared);
}

int main(void) {
    TEST(test_defaults);
    TEST(test_consecutive_reset_by_success);
    TEST(test_disabled_triggers_never_trip);
    TEST(test_error_rate_trip);
    TEST(test_error_rate_below_threshold);
    TEST(test_error_rate_needs_min_requests);
    TEST(test_window_slides);
    TEST(test_slot_reuse_after_full_cycle);
    TEST(test_out_of_order_time);
    TEST(test_open_half_open_closed);
    TEST(test_open_period_doubles_and_caps);
    TEST(test_several_probes);
    TEST(test_release_outside_half_open);
    TEST(test_lost_probe_reclaimed);
    TEST(test_config_clamped);
    TEST(test_threads);
    return test_done();
}
