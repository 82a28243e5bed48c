/* test_engine_sampler: each sampling step on small logit vectors with
 * distributions known in closed form, penalties, seeded determinism, and
 * log-probabilities. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "testlib.h"

#define CLOSE(a, b) CHECK(fabs((double)(a) - (double)(b)) < 1e-5)

/* Everything off: temperature 1, no filters, no penalties, fixed seed. */
static sampler_params plain(void) {
    sampler_params p = sampler_defaults();
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 42;
    return p;
}

/* logits with probabilities 1/7, 2/7, 4/7 */
static const float sevenths[3] = {0.0f, 0.69314718f, 1.38629436f};

static void test_greedy(void) {
    sampler_params p = plain();
    p.temperature = 0.0f;
    float logits[4] = {1, 3, 3, 2};
    sampler *s = sampler_new(&p, 4);
    CHECK_EQ_INT(sampler_sample(s, logits), 1);   /* ties: lowest id */
    sampler_free(s);
    p.repeat_penalty = 2.0f;
    s = sampler_new(&p, 4);
    sampler_accept(s, 1);
    CHECK_EQ_INT(sampler_sample(s, logits), 2);   /* 3/2 < 3 */
    sampler_accept(s, 2);
    CHECK_EQ_INT(sampler_sample(s, logits), 3);   /* 1.5, 1.5 < 2 */
    sampler_free(s);
}

static void expect_dist(sampler_params p, const float *logits, int n, int want_n, const int *ids, const double *probs) {
    sampler *s = sampler_new(&p, n);
    const sampler_cand *c;
    int got = sampler_distribution(s, logits, &c);
    CHECK_EQ_INT(got, want_n);
    for (int i = 0; i < got && i < want_n; i++) {
        CHECK_EQ_INT(c[i].id, ids[i]);
        CLOSE(c[i].p, probs[i]);
    }
    sampler_free(s);
}

static void test_temperature(void) {
    sampler_params p = plain();
    expect_dist(p, sevenths, 3, 3, (int[]){2, 1, 0}, (double[]){4 / 7.0, 2 / 7.0, 1 / 7.0});
    p.temperature = 0.5f;   /* squares the odds: 16:4:1 */
    expect_dist(p, sevenths, 3, 3, (int[]){2, 1, 0}, (double[]){16 / 21.0, 4 / 21.0, 1 / 21.0});
    p.temperature = 2.0f;   /* square roots: 2:sqrt2:1 */
    double z = 2 + sqrt(2.0) + 1;
    expect_dist(p, sevenths, 3, 3, (int[]){2, 1, 0}, (double[]){2 / z, sqrt(2.0) / z, 1 / z});
}

static void test_top_k(void) {
    sampler_params p = plain();
    p.top_k = 2;
    expect_dist(p, sevenths, 3, 2, (int[]){2, 1}, (double[]){4 / 6.0, 2 / 6.0});
    p.top_k = 1;
    expect_dist(p, sevenths, 3, 1, (int[]){2}, (double[]){1});
    p.top_k = 10;   /* more than the vocabulary: no-op */
    expect_dist(p, sevenths, 3, 3, (int[]){2, 1, 0}, (double[]){4 / 7.0, 2 / 7.0, 1 / 7.0});
}

static void test_top_p(void) {
    sampler_params p = plain();
    p.top_p = 0.6f;   /* 4/7 = 0.57 < 0.6 <= 6/7 */
    expect_dist(p, sevenths, 3, 2, (int[]){2, 1}, (double[]){4 / 6.0, 2 / 6.0});
    p.top_p = 0.5f;
    expect_dist(p, sevenths, 3, 1, (int[]){2}, (double[]){1});
    p.top_p = 0.9f;
    expect_dist(p, sevenths, 3, 3, (int[]){2, 1, 0}, (double[]){4 / 7.0, 2 / 7.0, 1 / 7.0});
}

/* top-p over a larger vocabulary, against a brute-force sort of everything */
static int by_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void test_top_p_large(void) {
    enum { N = 5000 };
    static float logits[N], sorted[N];
    for (int i = 0; i < N; i++) logits[i] = sorted[i] = (float)(sin(i * 0.7) * 6.0 + cos(i * 0.013) * 2.0);
    qsort(sorted, N, sizeof *sorted, by_desc);
    double sum = 0, cum = 0;
    for (int i = 0; i < N; i++) sum += exp(sorted[i] - sorted[0]);
    int want = 0;
    while (want < N && (cum += exp(sorted[want] - sorted[0]) / sum) < 0.9) want++;
    want++;
    sampler_params p = plain();
    p.top_p = 0.9f;
    sampler *s = sampler_new(&p, N);
    const sampler_cand *c;
    int n = sampler_distribution(s, logits, &c);
    CHECK_EQ_INT(n, want);
    CHECK(n > 100);   /* a real cut, not a trivial one */
    double total = 0;
    for (int i = 0; i < n; i++) total += c[i].p;
    CLOSE(total, 1.0);
    CHECK(c[0].logit == sorted[0] && c[n - 1].logit == sorted[n - 1]);
    sampler_free(s);
}

static void test_min_p(void) {
    sampler_params p = plain();
    p.min_p = 0.3f;   /* keeps p >= 0.3 * 4/7: 4/7 and 2/7 */
    expect_dist(p, sevenths, 3, 2, (int[]){2, 1}, (double[]){4 / 6.0, 2 / 6.0});
    p.min_p = 0.6f;
    expect_dist(p, sevenths, 3, 1, (int[]){2}, (double[]){1});
}

static void test_penalties(void) {
    sampler_params p = plain();
    p.repeat_penalty = 2.0f;
    float logits[3] = {2.0f, -1.0f, 0.5f};
    sampler *s = sampler_new(&p, 3);
    sampler_accept(s, 0);
    sampler_accept(s, 1);
    sampler_accept(s, 0);   /* repeat penalty counts a token once */
    const sampler_cand *c;
    int n = sampler_distribution(s, logits, &c);
    CHECK_EQ_INT(n, 3);
    /* sorted: 1.0 (id 0), 0.5 (id 2), -2.0 (id 1) */
    CHECK(c[0].id == 0 && c[1].id == 2 && c[2].id == 1);
    CLOSE(c[0].logit, 1.0);
    CLOSE(c[2].logit, -2.0);
    sampler_free(s);

    p = plain();
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    s = sampler_new(&p, 3);
    sampler_accept(s, 0);
    sampler_accept(s, 0);
    n = sampler_distribution(s, logits, &c);
    CHECK(c[0].id == 0);
    CLOSE(c[0].logit, 2.0 - 2 * 0.5 - 0.25);
    sampler_free(s);

    p = plain();   /* only the last repeat_last_n tokens count */
    p.repeat_penalty = 100.0f;
    p.repeat_last_n = 2;
    s = sampler_new(&p, 3);
    sampler_accept(s, 0);
    sampler_accept(s, 1);
    sampler_accept(s, 2);
    n = sampler_distribution(s, logits, &c);
    CHECK(c[0].id == 0);
    CLOSE(c[0].logit, 2.0);
    sampler_reset(s);   /* forgets them */
    sampler_accept(s, 0);
    n = sampler_distribution(s, logits, &c);
    CHECK(c[0].id == 2);
    sampler_free(s);
}

static void test_seeded(void) {
    sampler_params p = plain();
    p.seed = 1234;
    sampler *a = sampler_new(&p, 3), *b = sampler_new(&p, 3);
    p.seed = 1235;
    sampler *other = sampler_new(&p, 3);
    int same = 1, differs = 0, counts[3] = {0};
    int32_t first[50];
    enum { DRAWS = 21000 };
    for (int i = 0; i < DRAWS; i++) {
        int32_t x = sampler_sample(a, sevenths), y = sampler_sample(b, sevenths);
        if (i < 50) first[i] = x;
        same &= x == y;
        differs |= x != sampler_sample(other, sevenths);
        counts[x]++;
    }
    CHECK(same);
    CHECK(differs);
    /* 3000 / 6000 / 12000 expected; 5 standard deviations is about 300 */
    CHECK(abs(counts[0] - 3000) < 300);
    CHECK(abs(counts[1] - 6000) < 350);
    CHECK(abs(counts[2] - 12000) < 350);
    sampler_reset(a);   /* restarts the same sequence */
    int again = 1;
    for (int i = 0; i < 50; i++) again &= sampler_sample(a, sevenths) == first[i];
    CHECK(again);
    sampler_free(a);
    sampler_free(b);
    sampler_free(other);
}

static void test_logprobs(void) {
    CLOSE(sampler_logprob(sevenths, 3, 2), log(4 / 7.0));
    CLOSE(sampler_logprob(sevenths, 3, 0), log(1 / 7.0));
    CHECK(isinf(sampler_logprob(sevenths, 3, 3)));
    float big[3] = {1000.0f, 1000.0f, -INFINITY};   /* stable for large logits */
    CLOSE(sampler_logprob(big, 3, 0), log(0.5));
    sampler_logprob_entry top[4];
    CHECK_EQ_INT(sampler_top_logprobs(sevenths, 3, 2, top), 2);
    CHECK(top[0].id == 2 && top[1].id == 1);
    CLOSE(top[0].logprob, log(4 / 7.0));
    CLOSE(top[1].logprob, log(2 / 7.0));
    CHECK_EQ_INT(sampler_top_logprobs(sevenths, 3, 10, top), 3);
    CHECK(top[2].id == 0);
    float ties[4] = {1, 5, 5, 5};
    CHECK_EQ_INT(sampler_top_logprobs(ties, 4, 2, top), 2);
    CHECK(top[0].id == 1 && top[1].id == 2);
}

int main(void) {
    TEST(test_greedy);
    TEST(test_temperature);
    TEST(test_top_k);
    TEST(test_top_p);
    TEST(test_top_p_large);
    TEST(test_min_p);
    TEST(test_penalties);
    TEST(test_seeded);
    TEST(test_logprobs);
    return test_done();
}
