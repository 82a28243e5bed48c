/* train: training and leave-one-source-out evaluation of the router and
 * the guard, in C, deterministic for a seed.
 *
 * Features of every example are extracted once (features.h, plus the
 * weighted mean word vector from a GloVe text file); the router is a
 * multinomial logistic regression and the guard a binary one over the same
 * features, both trained by SGD with L2 (the router with logit adjustment
 * and word dropout, the guard with class/source-balanced example weights).
 * The learned weights are folded into a route_model (model.h). */
#ifndef MSOA_ROUTE_TRAIN_H
#define MSOA_ROUTE_TRAIN_H

#include <stdint.h>

#include "base/buf.h"
#include "route/dataset.h"
#include "route/router.h"

typedef struct route_train_opts {
    uint64_t seed;
    int epochs;
    int guard_epochs;    /* the guard head's (binary, no hidden layer) */
    float lr;
    float l2;            /* on dense weights (standardised features) */
    float l2_hash;       /* on hashed n-gram weights */
    float l2_guard;      /* on the guard's dense weights */
    float l2_mil;        /* on the guard's word scorer (FEATS_MIL) */
    int mil_rank;        /* the word scorer leaves out the mil_rank most frequent words */
    float l2_mem;        /* on the guard's memory (FEATS_MEM) */
    float mem_lr;        /* its learning rate, times lr */
    int mem_min;         /* the memory learns only words in this many harmful rows */
    int mem_rank;        /* nor the mem_rank most frequent words (model.h FEATS_MEM) */
    unsigned features;   /* FEATS_* of model.h */
    uint32_t hash_bits;
    uint32_t max_bytes;  /* training texts are cut like requests */
    int cluster_tables;  /* word clusters: hash tables ... */
    int cluster_bits;    /* ... of 2^bits buckets each */
    float proto_nn;      /* > 0: class lexicons of the seeds' neighbours (see build_prototypes) */
    float guard_nn;      /* the same for the guard's lexicons (harmful, jailbreak) */
    float harm_nn;       /* words counted as harmful (LEX_HARM): within this cosine of a seed */
    unsigned router_skip;     /* FEATS_* of features the router does not read */
    unsigned guard_skip;      /* FEATS_* of features the guard does not read */
    int unstyle;         /* hide from the heads how sources of a class differ (remove_source_style) */
    int hidden;          /* units of the router's hidden layer (FEATS_HIDDEN) */
    int lex_top;         /* router soft lexicons (FEATS_LEX): words pooled per class */
    float l2_lex;        /* on the soft lexicons' directions */
    float lex_init;      /* their start: this times the class's seed direction */
    int average;         /* router: weights averaged over the second half of the epochs */
    float word_drop;     /* router training: each word of an example left out with this probability */
    float smooth;        /* router training: label smoothing (this share of the target spread evenly) */
    float shrink;        /* pseudo-words added when averaging (see model.h prior_w) */
    float shrink_embed;  /* the same for the mean word vector (model.h prior_e) */
    float sif_a;         /* word weight rank/(rank+a): frequent words count less; 0: all 1 */
    int balance;         /* 0 none, 1 classes, 2 classes and sources within a class,
                            3 logit adjustment (weights 1, class shares in the logits) */
    int guard_balance;   /* the same for the guard (safe/unsafe) */
    const char *embeddings;   /* GloVe text(.gz) file, or NULL */
    int augment;         /* add chat-phrased copies (dataset_augment) */
    int calibrate;       /* fit the temperature on leave-one-source-out predictions */
    float guard_threshold;    /* > 0: use it; else pick the lowest with <= 2% FPR per benign source */
    const char *dump;    /* eval: write every example's out-of-group prediction here (TSV) */
    int guard_folds;     /* eval, >= 2: also score each harmful row by a model trained
                            without its fold of the harmful rows (route_guard_fold_mask) */
    int verbose;         /* progress on stderr */
} route_train_opts;

void route_train_defaults(route_train_opts *o);
/* Parses "embed,hand,unigram,bigram" (or "all"); returns -1 if unknown. */
int route_parse_features(const char *list, unsigned *out);

typedef struct route_trainer route_trainer;

/* Loads the embeddings and extracts the features of every example of d
 * (which must outlive the trainer). NULL with *err on failure. */
route_trainer *route_trainer_new(const route_dataset *d, const route_train_opts *o, char **err);
void route_trainer_free(route_trainer *t);

/* Trains on the examples whose mask byte is set (NULL: all). Returns NULL
 * with *err if the data has no router class. */
route_model *route_trainer_fit(route_trainer *t, const unsigned char *mask, char **err);

#define ROUTE_EVAL_MAX_SOURCES 64

typedef struct route_eval {
    int folds;                                /* 0: leave-one-source-out */
    int n_sources;
    int router_n[ROUTE_EVAL_MAX_SOURCES];     /* router examples per source */
    float accuracy[ROUTE_EVAL_MAX_SOURCES];   /* leave-one-source-out */
    float mean_accuracy;                      /* over sources with router examples */
    float mean_accuracy_main;                 /* the same over the --data sources only */
    float ece, ece_calibrated, temperature;
    int guard_n[ROUTE_EVAL_MAX_SOURCES];      /* harmful: positives; benign: negatives */
    float guard_rate[ROUTE_EVAL_MAX_SOURCES]; /* recall (harmful) or FPR (benign) */
    int guard_harmful[ROUTE_EVAL_MAX_SOURCES];
    float guard_threshold;
    int guard_folds;                          /* o.guard_folds: the next is set */
    float guard_row_recall[ROUTE_EVAL_MAX_SOURCES];   /* harmful sources, at guard_threshold,
                                                         each row scored without its fold */
    int confusion[ROUTE_MAX_CLASSES][ROUTE_MAX_CLASSES];
    double seconds;
} route_eval;

/* folds 0: leave-one-source-out: for each source, trains on all the others
 * (minus any text that also occurs in the held-out source) and tests on
 * it. folds >= 2: the same over random folds of rows (how well seen
 * sources are learnt). With folds 0 and o.guard_folds >= 2, also the
 * guard's recall on each harmful source with its rows held out by
 * route_guard_fold_mask (what the guard learns from rows like them), at
 * the threshold set out of source. Fills r and, if report is not NULL, appends a
 * readable report. */
int route_trainer_eval(route_trainer *t, int folds, route_eval *r, buf *report, char **err);

/* One step of a word's or pair's memory (FEATS_MEM): moved down the
 * gradient by step, shrunk (L2), and never below 0: the memory can only
 * raise the guard's score, so a text without a learnt word keeps the
 * score of the guard's head. */
static inline float route_mem_update(float w, float step, float shrink) {
    float v = (w - step) * shrink;
    return v > 0 ? v : 0.0f;
}

/* The training mask of guard fold f of `folds` (o.guard_folds): every
 * row but the guard's harmful rows whose text falls in fold f, by text
 * hash as --folds splits rows, so the copies and rewordings of a text
 * share its fold; every benign row stays in training. */
void route_guard_fold_mask(const route_trainer *t, int folds, int f, unsigned char *mask);

/* The whole of `msoa router train`: fit on everything; with o->calibrate,
 * first a leave-one-source-out pass for the temperature and the guard
 * threshold (r: its results). */
route_model *route_train_all(route_trainer *t, route_eval *r, char **err);

#endif
