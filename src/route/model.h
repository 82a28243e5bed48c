/* model: the in-memory layout of a trained router+guard, shared by
 * router.c (loading, classifying) and train.c (training, saving). Not
 * part of the public API (router.h).
 *
 * Outputs 0..n_classes-1 are the router classes; output n_classes is the
 * guard's logit (unsafe vs safe). The linear model over the mean word
 * vector is stored folded: each vocabulary row holds its projection onto
 * every output, so classifying costs one multiply-add per word and output
 * instead of one per embedding dimension. */
#ifndef MSOA_ROUTE_MODEL_H
#define MSOA_ROUTE_MODEL_H

#include <math.h>
#include <stdint.h>

#include "route/features.h"
#include "route/router.h"

/* Feature groups (model->features), also the switches of the ablations. */
enum {
    FEATS_EMBED = 1,    /* weighted mean of word vectors */
    FEATS_HAND = 2,     /* signs of code, mathematics, length... */
    FEATS_UNIGRAM = 4,  /* hashed words */
    FEATS_BIGRAM = 8,   /* hashed word pairs */
    FEATS_PROTO = 16,   /* similarity of the words to each class's prototype */
    FEATS_CLUSTER = 32, /* hashed word clusters: buckets of random hyperplanes
                           over the word vectors, so similar words share weights */
    FEATS_STYLE = 64,   /* let the hand features that are no sign of a class
                           (length, lines, question mark...) count too */
    FEATS_MIL = 128,    /* guard: a learnt word score, raise-only: softplus of
                           its max over the text's words (train.c mil_words:
                           which words it may score), not the mean vector */
    FEATS_HIDDEN = 256, /* router: a hidden tanh layer over the dense features
                           (mean vector and named features), added to the
                           linear logits */
    FEATS_LEX = 512,    /* router: learnt soft lexicons, per class the mean
                           of the top scores of the text's words on a
                           learnt direction of the word vectors */
    FEATS_MEM = 1024,   /* guard: a learnt memory of the words and pairs of
                           its training rows, raise-only, its mean over a
                           text's words (features.h LEX_MEM_SHIFT) */
};

#define ROUTE_MEM_SCALE 1024.0f   /* a memory unit is 1/1024 of the guard's logit */
/* The memory raises the guard's logit by the sum of its words' and pairs'
 * values over (the text's words + this many): a long text is not made
 * harmful by many words each slightly so, and a short one is pulled
 * towards no raise. */
#define ROUTE_MEM_PRIOR 4.0f

#define ROUTE_MAX_HIDDEN 128   /* n_hidden: a multiple of 8 up to this */
#define ROUTE_LEX_TOP_MAX 4    /* lex_top: words pooled per soft lexicon, up to this */
#define ROUTE_LEX_SLOTS (ROUTE_MAX_CLASSES * ROUTE_LEX_TOP_MAX)

/* Named dense features: the hand-made ones, then per class the mean and
 * the maximum similarity of the request's words to the class prototype
 * (the mean vector of a few seed words, or of the label's own name). */
#define ROUTE_GUARD_PROTOS 2   /* "harmful", "jailbreak": prototypes for the guard */
#define ROUTE_NX_MAX (FEAT_HAND_N + 2 * (ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS))
extern const char *const route_guard_protos[ROUTE_GUARD_PROTOS];

/* The longest packed row (see pack below): route_model_prepare's parts at
 * their largest, in whole 32-byte units. A part added there is added here
 * (classifying sums whole rows into an array of this length). */
#define ROUTE_PACK_MAX                                                                              \
    ((1 + 2 * (ROUTE_MAX_CLASSES + 1) + (ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS) + 1 + ROUTE_MAX_HIDDEN + \
      ROUTE_MAX_CLASSES + 7) & ~7)

struct route_model {
    int n_classes;
    char **class_names;
    int has_guard;
    int n_out;                 /* n_classes + 1 */
    unsigned features;         /* FEATS_* */
    route_vocab vocab;         /* rows index proj; vocab.row_weight per row */
    float *proj;               /* [vocab.n_rows][n_out] */
    int n_proto;               /* n_classes + ROUTE_GUARD_PROTOS */
    int nx;                    /* named dense features: FEAT_HAND_N + 2 * n_proto */
    float hand_w[ROUTE_NX_MAX * (ROUTE_MAX_CLASSES + 1)];   /* [j][n_out] */
    float hand_mean[ROUTE_NX_MAX];  /* for explanations: contribution vs typical */
    float hand_lo[ROUTE_NX_MAX], hand_hi[ROUTE_NX_MAX];   /* clip to the training range */
    float *proto_sim;          /* [vocab.n_rows][n_proto], with FEATS_PROTO */
    float *guard_word;         /* [vocab.n_rows] with FEATS_MIL: each word's harm score (>= 0) */
    uint32_t n_tables;         /* with FEATS_CLUSTER: cluster ids per word */
    uint32_t *row_ids;         /* [vocab.n_rows][n_tables], indexes of hash_w */
    float bias[ROUTE_MAX_CLASSES + 1];
    /* With FEATS_HIDDEN: h = tanh(hid_b + hand . hid_w + mean vector . W1),
     * logits += h . hid_v. W1 is folded like proj: hid_proj holds each
     * row's projection onto the n_hidden units. */
    int n_hidden;
    float hid_b[ROUTE_MAX_HIDDEN];
    float *hid_w;              /* [nx][n_hidden] */
    float *hid_v;              /* [n_hidden][n_out] */
    float *hid_proj;           /* [vocab.n_rows][n_hidden] */
    /* With FEATS_LEX: class_word[row][c] is word row's score in class c's
     * soft lexicon; the class's logit gets the mean of the lex_top
     * highest scores among the request's distinct words. */
    int lex_top;
    float *class_word;         /* [vocab.n_rows][n_classes] */
    uint32_t hash_bits;        /* 0: no hashed features */
    float *hash_w;             /* [1 << hash_bits][n_out] */
    /* Built from the arrays above by route_model_prepare: per vocabulary
     * row, everything classifying reads for a word, side by side, so that
     * a word costs one or two cache lines: [weight, weight*proj[n_out],
     * then the parts of the features the model has: cluster weights
     * summed[n_out], weight*proto_sim[n_proto], guard_word,
     * weight*hid_proj[n_hidden], class_word[n_classes]]. */
    float *pack;
    int pack_stride;
    int pack_cluster, pack_proto, pack_guard, pack_hid, pack_lex;   /* offsets in a row */
    int pack_only;             /* loaded from a file: the arrays above are freed */
    float prior_w, prior_h;    /* pseudo-counts added to the word weight sum and to
                                  the hashed count: a short text is pulled
                                  towards the average text instead of being
                                  read as an extreme one */
    float prior_e;             /* the same for the mean word vector (prior_w: for
                                  the lexicon densities, which the guard reads too) */
    float temperature;         /* router logits are divided by it */
    float guard_threshold;
    uint32_t max_bytes;
};

route_model *route_model_new(int n_classes, char *const *names, unsigned features, uint32_t hash_bits,
                             uint32_t n_rows);
int route_model_save(const route_model *m, const char *path, char **err);
/* Builds m->pack; call once the arrays are final (after load or training). */
void route_model_prepare(route_model *m);
/* Computes the raw logits (before temperature) of a text. */
void route_model_logits(const route_model *m, const char *system, size_t system_len,
                        const char *user, size_t user_len, float *logits);
/* The guard's score (probability of unsafe) from a text's logits: 0
 * for a model without a guard. */
static inline float route_guard_score(const route_model *m, const float *logits) {
    return m->has_guard ? 1.0f / (1.0f + expf(-logits[m->n_classes])) : 0.0f;
}

/* Keeps the top (descending) highest scores of distinct rows in
 * best[0..top) / row[0..top) (row -1: empty); shared by training and
 * classifying so both pool the same words. */
static inline void route_lex_insert(float *best, int32_t *row, int top, float s, int32_t r) {
    int at = top;
    for (int j = 0; j < top; j++) {
        if (row[j] == r) return;
        if (at == top && (row[j] < 0 || s > best[j])) at = j;
    }
    if (at == top) return;
    for (int j = top - 1; j > at; j--) {
        best[j] = best[j - 1];
        row[j] = row[j - 1];
    }
    best[at] = s;
    row[at] = r;
}

/* The mean of the filled entries of a top list (0 if none). */
static inline float route_lex_mean(const float *best, const int32_t *row, int top) {
    float s = 0;
    int n = 0;
    for (int j = 0; j < top && row[j] >= 0; j++) s += best[j], n++;
    return n ? s / (float)n : 0.0f;
}

#endif
