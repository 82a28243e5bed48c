/* sampler: choosing the next token from a vector of logits.
 *
 * The steps and their order follow llama.cpp's default chain, so that the
 * same settings mean the same thing here:
 *   penalties (repeat, frequency, presence over the last repeat_last_n
 *   accepted tokens) -> top-k -> top-p -> min-p -> temperature -> draw.
 * temperature <= 0 means greedy: the highest penalised logit (lowest id on
 * ties), no randomness. The draw uses the sampler's own seeded generator
 * (xorshift64*), so a seed gives the same sequence on every machine.
 *
 * Log-probabilities for OpenAI `logprobs` are taken from the raw logits
 * (log-softmax before any penalty or filter), independently of sampling. */
#ifndef MSOA_ENGINE_SAMPLER_H
#define MSOA_ENGINE_SAMPLER_H

#include <stdint.h>

#define SAMPLER_SEED_RANDOM UINT64_MAX   /* seed from the clock */

typedef struct sampler_params {
    float temperature;        /* <= 0: greedy */
    int top_k;                /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repeat_penalty;     /* 1: off; > 1 discourages repeats */
    float frequency_penalty;  /* 0: off; subtracted once per earlier occurrence */
    float presence_penalty;   /* 0: off; subtracted once if the token occurred */
    int repeat_last_n;        /* window of accepted tokens the penalties look at; 0: off */
    uint64_t seed;
} sampler_params;

/* llama.cpp's defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05,
 * no penalties, window 64, random seed. */
sampler_params sampler_defaults(void);

typedef struct sampler sampler;

sampler *sampler_new(const sampler_params *p, int n_vocab);
void sampler_free(sampler *s);
/* Records a token the model has seen or produced (prompt tokens too), for
 * the penalties. */
void sampler_accept(sampler *s, int32_t id);
/* Forgets accepted tokens and restarts the generator from the seed. */
void sampler_reset(sampler *s);

/* Picks a token (logits are not modified). */
int32_t sampler_sample(sampler *s, const float *logits);

/* The distribution sampler_sample draws from: the candidates left after
 * penalties and filters and their probabilities (summing to 1), in
 * decreasing probability. Valid until the next call on s. Greedy gives the
 * single chosen token with p = 1. */
typedef struct sampler_cand {
    int32_t id;
    float logit;   /* after penalties and temperature */
    float p;
} sampler_cand;
int sampler_distribution(sampler *s, const float *logits, const sampler_cand **out);

/* log-softmax of the raw logits at id. */
float sampler_logprob(const float *logits, int n_vocab, int32_t id);
/* The k most likely tokens with their log-probabilities, most likely first
 * (ties: lower id first); returns min(k, n_vocab). */
typedef struct sampler_logprob_entry {
    int32_t id;
    float logprob;
} sampler_logprob_entry;
int sampler_top_logprobs(const float *logits, int n_vocab, int k, sampler_logprob_entry *out);

#endif
