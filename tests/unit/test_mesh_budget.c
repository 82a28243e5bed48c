/* Tests for the retry budget (token bucket: deposits, withdrawals, cap,
 * start, steady-state ratio, use from several threads) and for full-jitter
 * exponential backoff (range, growth, cap, uniformity, overflow). */
#include <pthread.h>

#include "mesh/budget.h"
#include "testlib.h"

static void test_defaults(void) {
    budget b;
    budget_init(&b, NULL);
    CHECK(budget_tokens(&b) == 10);
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(budget_try_withdraw(&b), 1);
    CHECK_EQ_INT(budget_try_withdraw(&b), 0);
    CHECK(budget_tokens(&b) == 0);
    for (int i = 0; i < 9; i++) budget_deposit(&b);
    CHECK(budget_tokens(&b) == 0.9);
    CHECK_EQ_INT(budget_try_withdraw(&b), 0); /* 0.9 is not a whole token */
    budget_deposit(&b);
    CHECK_EQ_INT(budget_try_withdraw(&b), 1);
    CHECK(budget_tokens(&b) == 0);
}

static void test_cap(void) {
    budget_config c = {.ratio = 0.5, .cap = 2, .initial = 0};
    budget b;
    budget_init(&b, &c);
    CHECK(budget_tokens(&b) == 0);
    for (int i = 0; i < 100; i++) budget_deposit(&b);
    CHECK(budget_tokens(&b) == 2);
    CHECK_EQ_INT(budget_try_withdraw(&b), 1);
    CHECK_EQ_INT(budget_try_withdraw(&b), 1);
    CHECK_EQ_INT(budget_try_withdraw(&b), 0);
    /* initial above cap is capped; negative values count as zero */
    budget_config big = {.ratio = 0.1, .cap = 3, .initial = 50};
    budget_init(&b, &big);
    CHECK(budget_tokens(&b) == 3);
    budget_config neg = {.ratio = -1, .cap = 5, .initial = 0};
    budget_init(&b, &neg);
    budget_deposit(&b);
    CHECK(budget_tokens(&b) == 0);
    budget_config none = {.ratio = 1, .cap = -5, .initial = -1};
    budget_init(&b, &none);
    budget_deposit(&b);
    CHECK_EQ_INT(budget_try_withdraw(&b), 0);
}

/* Every request fails and wants a retry: extra load stays at the ratio. */
static void test_steady_ratio(void) {
    budget_config c;
    budget_config_default(&c);
    c.initial = 0;
    budget b;
    budget_init(&b, &c);
    int retries = 0;
    for (int i = 0; i < 10000; i++) {
        budget_deposit(&b);
        retries += budget_try_withdraw(&b);
    }
    CHECK_EQ_INT(retries, 1000);
}

static budget shared;
static int granted[4];
static void *worker(void *arg) {
    int k = (int)(intptr_t)arg;
    for (int i = 0; i < 5000; i++) {
        budget_deposit(&shared);
        granted[k] += budget_try_withdraw(&shared);
        granted[k] += budget_try_withdraw(&shared);
    }
    return NULL;
}

static void test_threads(void) {
    budget_config c = {.ratio = 0.25, .cap = 1000000, .initial = 100};
    budget_init(&shared, &c);
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    int total = granted[0] + granted[1] + granted[2] + granted[3];
    while (budget_try_withdraw(&shared)) total++;
    /* 100 + 20000 * 0.25 tokens were deposited: none lost, none doubled */
    CHECK_EQ_INT(total, 5100);
    CHECK(budget_tokens(&shared) == 0);
}

static void test_backoff(void) {
    CHECK_EQ_INT(backoff_ms(0, 100, 10000, 0), 0);
    CHECK_EQ_INT(backoff_ms(0, 100, 10000, UINT32_MAX), 100);
    CHECK_EQ_INT(backoff_ms(0, 100, 10000, 1u << 31), 50);
    CHECK_EQ_INT(backoff_ms(1, 100, 10000, UINT32_MAX), 200);
    CHECK_EQ_INT(backoff_ms(3, 100, 10000, UINT32_MAX), 800);
    CHECK_EQ_INT(backoff_ms(7, 100, 10000, UINT32_MAX), 10000); /* 12800 capped */
    CHECK_EQ_INT(backoff_ms(31, 100, 10000, UINT32_MAX), 10000);
    CHECK_EQ_INT(backoff_ms(32, 100, 10000, UINT32_MAX), 10000);
    CHECK_EQ_INT(backoff_ms(1000, UINT32_MAX, UINT32_MAX, UINT32_MAX), UINT32_MAX);
    CHECK_EQ_INT(backoff_ms(5, 0, 10000, UINT32_MAX), 0);
    CHECK_EQ_INT(backoff_ms(5, 100, 0, UINT32_MAX), 0);
    /* uniform: 256 evenly spaced random values hit each of 0..255 once */
    int seen[256] = {0};
    for (uint32_t i = 0; i < 256; i++) seen[backoff_ms(0, 255, 1000, i << 24)]++;
    int all_once = 1;
    for (int i = 0; i < 256; i++) all_once &= seen[i] == 1;
    CHECK(all_once);
}

/* Tokens gained with time, whatever the traffic: none before the clock
 * starts, per_second after, up to the cap. */
static void test_refill(void) {
    budget b;
    budget_config c = {.ratio = 0.1, .cap = 10, .initial = 0, .per_second = 2};
    budget_init(&b, &c);
    budget_refill(&b, 1000);
    CHECK_EQ_INT(budget_try_withdraw(&b), 0);
    budget_refill(&b, 1500);
    CHECK_EQ_INT(budget_try_withdraw(&b), 1);
    CHECK_EQ_INT(budget_try_withdraw(&b), 0);
    budget_refill(&b, 1500); /* no time passed */
    budget_refill(&b, 1200); /* a late clock reading */
    CHECK_EQ_INT(budget_try_withdraw(&b), 0);
    budget_refill(&b, 100000);
    CHECK(budget_tokens(&b) == 10);
    budget_config none = {.ratio = 0.1, .cap = 10, .initial = 0};
    budget_init(&b, &none);
    budget_refill(&b, 1000);
    budget_refill(&b, 9000);
    CHECK(budget_tokens(&b) == 0);
}

int main(void) {
    TEST(test_defaults);
    TEST(test_refill);
    TEST(test_cap);
    TEST(test_steady_ratio);
    TEST(test_threads);
    TEST(test_backoff);
    return test_done();
}
