/* sampler: see sampler.h.
 *
 * Work is kept proportional to what each step needs: greedy is one pass;
 * top-k keeps a k-entry heap instead of sorting the vocabulary; top-p
 * first drops tokens too unlikely to matter (see keep_top_p) and sorts the
 * rest. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/xalloc.h"

struct sampler {
    sampler_params p;
    int n_vocab;
    uint64_t rng;
    int32_t *recent;      /* ring of the last repeat_last_n accepted tokens */
    int n_recent, next_recent;
    int32_t *count;       /* scratch: occurrences per token, zero between calls */
    sampler_cand *cand;
    int n_cand;
};

sampler_params sampler_defaults(void) {
    return (sampler_params){
        .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
        .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = SAMPLER_SEED_RANDOM,
    };
}

/* ---- random numbers: splitmix64 to seed, xorshift64* to draw ---- */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void seed_rng(sampler *s) {
    uint64_t seed = s->p.seed;
    if (seed == SAMPLER_SEED_RANDOM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 48);
    }
    s->rng = splitmix64(seed);
    if (!s->rng) s->rng = 1;   /* xorshift's one forbidden state */
}

static double next_uniform(sampler *s) {
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return (double)((x * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
}

/* ---- lifecycle ---- */

sampler *sampler_new(const sampler_params *p, int n_vocab) {
    sampler *s = xcalloc(1, sizeof *s);
    s->p = *p;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    s->n_vocab = n_vocab;
    s->recent = xmalloc((size_t)(s->p.repeat_last_n ? s->p.repeat_last_n : 1) * sizeof *s->recent);
    s->count = xcalloc((size_t)n_vocab, sizeof *s->count);
    s->cand = xmalloc((size_t)n_vocab * sizeof *s->cand);
    seed_rng(s);
    return s;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->recent);
    free(s->count);
    free(s->cand);
    free(s);
}

void sampler_accept(sampler *s, int32_t id) {
    if (!s->p.repeat_last_n || id < 0 || id >= s->n_vocab) return;
    s->recent[s->next_recent] = id;
    s->next_recent = (s->next_recent + 1) % s->p.repeat_last_n;
    if (s->n_recent < s->p.repeat_last_n) s->n_recent++;
}

void sampler_reset(sampler *s) {
    s->n_recent = s->next_recent = 0;
    seed_rng(s);
}

/* ---- steps ---- */

static int penalties_on(const sampler_params *p) {
    return p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}

/* Penalises each token of the window once, by its number of occurrences. */
static void apply_penalties(sampler *s) {
    if (!s->n_recent || !penalties_on(&s->p)) return;
    for (int i = 0; i < s->n_recent; i++) s->count[s->recent[i]]++;
    for (int i = 0; i < s->n_recent; i++) {
        int32_t id = s->recent[i];
        int n = s->count[id];
        if (!n) continue;   /* already done */
        float *l = &s->cand[id].logit;   /* candidates are still indexed by id here */
        *l = *l <= 0 ? *l * s->p.repeat_penalty : *l / s->p.repeat_penalty;
        *l -= (float)n * s->p.frequency_penalty + s->p.presence_penalty;
        s->count[id] = 0;
    }
}

static int cand_before(const sampler_cand *a, const sampler_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *a, const void *b) {
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

/* Sift for a min-heap (worst candidate on top) of the k best. */
static void heap_down(sampler_cand *h, int n, int i) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && cand_before(&h[c], &h[c + 1])) c++;
        if (!cand_before(&h[i], &h[c])) return;
        sampler_cand t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

/* Moves the k best of the n candidates to the front (unsorted). */
static void select_best(sampler_cand *c, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    for (int i = k; i < n; i++) {
        if (!cand_before(&c[i], &c[0])) continue;
        c[0] = c[i];
        heap_down(c, k, 0);
    }
}

static void sort_cands(sampler *s) { qsort(s->cand, (size_t)s->n_cand, sizeof *s->cand, cand_cmp); }

static void keep_top_k(sampler *s) {
    int k = s->p.top_k;
    if (k <= 0 || k >= s->n_cand) return;
    select_best(s->cand, s->n_cand, k);
    s->n_cand = k;
}

/* The smallest most-likely prefix whose probability reaches top_p (at
 * least one token). Sorting is the cost, so tokens with probability below
 * (1 - top_p) / n are dropped first: together they weigh less than
 * 1 - top_p, so the prefix lies entirely among the others. Probabilities
 * stay relative to all candidates. Leaves the candidates sorted. */
static void keep_top_p(sampler *s) {
    float top_p = s->p.top_p;
    float max = s->cand[0].logit;
    for (int i = 1; i < s->n_cand; i++)
        if (s->cand[i].logit > max) max = s->cand[i].logit;
    double sum = 0;
    for (int i = 0; i < s->n_cand; i++) sum += exp((double)s->cand[i].logit - max);
    double cut = (1.0 - top_p) / s->n_cand * sum;
    int n = 0;
    for (int i = 0; i < s->n_cand; i++)
        if (exp((double)s->cand[i].logit - max) >= cut) s->cand[n++] = s->cand[i];
    s->n_cand = n;
    sort_cands(s);
    double cum = 0;
    for (int i = 0; i < s->n_cand; i++) {
        cum += exp((double)s->cand[i].logit - max) / sum;
        if (cum >= top_p) {
            s->n_cand = i + 1;
            return;
        }
    }
}

/* p = softmax(logit) over the candidates (sorted: the first is the max). */
static void softmax(sampler *s) {
    double sum = 0;
    float max = s->cand[0].logit;
    for (int i = 0; i < s->n_cand; i++) {
        s->cand[i].p = expf(s->cand[i].logit - max);
        sum += s->cand[i].p;
    }
    for (int i = 0; i < s->n_cand; i++) s->cand[i].p = (float)(s->cand[i].p / sum);
}

/* Tokens at least min_p times as likely as the best one (sorted candidates). */
static void keep_min_p(sampler *s) {
    if (s->p.min_p <= 0.0f) return;
    float floor_logit = s->cand[0].logit + logf(s->p.min_p);
    int n = 1;
    while (n < s->n_cand && s->cand[n].logit >= floor_logit) n++;
    s->n_cand = n;
}

/* Greedy: the best penalised logit, lowest id on ties. */
static void keep_best(sampler *s) {
    int best = 0;
    for (int i = 1; i < s->n_cand; i++)
        if (s->cand[i].logit > s->cand[best].logit) best = i;
    s->cand[0] = s->cand[best];
    s->cand[0].p = 1.0f;
    s->n_cand = 1;
}

int sampler_distribution(sampler *s, const float *logits, const sampler_cand **out) {
    for (int i = 0; i < s->n_vocab; i++) s->cand[i] = (sampler_cand){i, logits[i], 0};
    s->n_cand = s->n_vocab;
    apply_penalties(s);
    if (s->p.temperature <= 0.0f) {
        keep_best(s);
    } else {
        keep_top_k(s);
        if (s->p.top_p < 1.0f) keep_top_p(s);
        else sort_cands(s);
        keep_min_p(s);
        for (int i = 0; i < s->n_cand; i++) s->cand[i].logit /= s->p.temperature;
        softmax(s);
    }
    *out = s->cand;
    return s->n_cand;
}

int32_t sampler_sample(sampler *s, const float *logits) {
    const sampler_cand *c;
    int n = sampler_distribution(s, logits, &c);
    if (n == 1) return c[0].id;
    double u = next_uniform(s), cum = 0, total = 0;
    for (int i = 0; i < n; i++) total += c[i].p;
    u *= total;
    for (int i = 0; i < n - 1; i++) {
        cum += c[i].p;
        if (u < cum) return c[i].id;
    }
    return c[n - 1].id;
}

/* ---- log-probabilities ---- */

static double log_sum_exp(const float *logits, int n, float *max_out) {
    float max = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > max) max = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - max);
    *max_out = max;
    return log(sum);
}

float sampler_logprob(const float *logits, int n_vocab, int32_t id) {
    float max;
    double lse = log_sum_exp(logits, n_vocab, &max);
    return id >= 0 && id < n_vocab ? (float)((double)logits[id] - max - lse) : -INFINITY;
}

int sampler_top_logprobs(const float *logits, int n_vocab, int k, sampler_logprob_entry *out) {
    if (k <= 0 || n_vocab <= 0) return 0;
    if (k > n_vocab) k = n_vocab;
    float max;
    double lse = log_sum_exp(logits, n_vocab, &max);
    sampler_cand *h = xmalloc((size_t)n_vocab * sizeof *h);
    for (int i = 0; i < n_vocab; i++) h[i] = (sampler_cand){i, logits[i], 0};
    select_best(h, n_vocab, k);
    qsort(h, (size_t)k, sizeof *h, cand_cmp);
    for (int i = 0; i < k; i++) out[i] = (sampler_logprob_entry){h[i].id, (float)((double)h[i].logit - max - lse)};
    free(h);
    return k;
}
