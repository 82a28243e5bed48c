/* router: the public face of the router and the guard, for the gateway.
 *
 * A model file (trained by `msoa router train`, see train.h) is loaded
 * once; classifying a request reads it and nothing else, so any number of
 * threads may classify with one loaded model at the same time. To reload,
 * load the new file and swap the pointer; free the old model when no
 * thread uses it any more. A call allocates nothing and takes a few
 * microseconds for a 1 KB request (about 8 us on one core; 18 us with
 * ROUTE_EXPLAIN, which also puts about 30 KB on the caller's stack). */
#ifndef MSOA_ROUTE_ROUTER_H
#define MSOA_ROUTE_ROUTER_H

#include <stddef.h>

#include "base/buf.h"

#define ROUTE_MAX_CLASSES 32
#define ROUTE_TOP_N 3
#define ROUTE_DEFAULT_MAX_BYTES 2048

typedef struct route_model route_model;

/* One reason for a decision: a word of the request or a named signal
 * ("code-punctuation", "math-words"...), with its weight: how much it
 * moved the score towards the decision (logit units). */
typedef struct route_feature {
    char name[32];
    float weight;
} route_feature;

typedef struct route_decision {
    int domain;                 /* index of the most probable class */
    const char *domain_name;    /* owned by the model */
    int n_classes;
    float probs[ROUTE_MAX_CLASSES];   /* calibrated, sum to 1 */
    int has_guard;              /* 0: the model was trained without a guard */
    float guard_score;          /* probability that the request is unsafe */
    int unsafe;                 /* guard_score >= the model's threshold */
    int n_top, n_guard_top;     /* filled with ROUTE_EXPLAIN */
    route_feature top[ROUTE_TOP_N];         /* why this domain */
    route_feature guard_top[ROUTE_TOP_N];   /* why unsafe (only when unsafe) */
} route_decision;

enum { ROUTE_EXPLAIN = 1 };

/* Returns the model, or NULL with *err set (caller frees). */
route_model *route_model_load(const char *path, char **err);
void route_model_free(route_model *m);

int route_model_n_classes(const route_model *m);
const char *route_model_class_name(const route_model *m, int i);
int route_model_has_guard(const route_model *m);
float route_model_guard_threshold(const route_model *m);
/* How many bytes of a request are read (system prompt first, at most a
 * quarter of it, then the user message). Set before sharing the model. */
void route_model_set_max_bytes(route_model *m, size_t max_bytes);
size_t route_model_max_bytes(const route_model *m);
void route_model_set_guard_threshold(route_model *m, float threshold);

/* Classifies a request: system prompt (may be NULL) and last user message.
 * flags: ROUTE_EXPLAIN to fill the top features (costs a second pass).
 * Returns 0. */
int route_classify(const route_model *m, const char *system, size_t system_len,
                   const char *user, size_t user_len, unsigned flags, route_decision *out);

/* Writes the decision as the JSON object of `msoa route --jsonl`:
 * {"domain":…,"probs":{…},"guard":{"unsafe":…,"score":…}} plus "why" when
 * explained. Appends to a NUL-terminated string in the caller's buf. */
void route_decision_json(const route_model *m, const route_decision *d, buf *out);

#endif
