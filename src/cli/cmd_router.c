/* cmd_router: see cmd_router.h.
 *
 *   msoa router train --data DIR --out FILE [--seed S] [options]
 *   msoa router eval  --data DIR [options]
 *
 * DIR is the shared data folder (router/ and embeddings/ inside) or a
 * folder of the user's own {"text","label"} files (or one such file). The
 * options beyond --data, --out and --seed exist for ablations. */
#include "cli/cmd_router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/clock.h"
#include "route/dataset.h"
#include "route/model.h"
#include "route/train.h"

static const char usage[] =
    "usage: msoa router train --data DIR --out FILE [--seed S] [options]\n"
    "       msoa router eval --data DIR [options]\n"
    "options:\n"
    "  --extra FILE        also a file of {\"text\",\"label\"} lines, as one more source\n"
    "                      (repeatable; the default model adds models/data/*.jsonl)\n"
    "  --embeddings FILE   GloVe text file (.gz ok); default DIR/embeddings/glove-100d-30k.txt.gz\n"
    "  --features LIST     embed,hand,proto,cluster,unigram,bigram,style,mil,hidden,lex,\n"
    "                      mem or all\n"
    "                      (default embed,hand,proto,hidden,lex)\n"
    "  --cluster-tables N  --cluster-bits N   word clusters (default 8 tables of 2^6)\n"
    "  --router-skip LIST  --guard-skip LIST   features one head does not read, or\n"
    "                      none (default: the router none, the guard embed,proto;\n"
    "                      the hidden layer is the router's only)\n"
    "  --hidden N          units of the router's hidden layer with 'hidden', a multiple\n"
    "                      of 8 up to 128 (default 16)\n"
    "  --lex-top N         router soft lexicons (feature 'lex'): the N best words of a\n"
    "                      text pooled per class (1 to 4, default 2)\n"
    "  --l2-lex X  --lex-init X   their L2, and their start (X times the class's\n"
    "                      seed direction; defaults 0.1 and 1)\n"
    "  --average 0|1       router: average the weights of the second half of the\n"
    "                      epochs (default 1)\n"
    "  --word-drop P       router training: each time an example is seen, leave out\n"
    "                      each of its words with probability P (default 0.4)\n"
    "  --smooth E          router training: label smoothing, the target E/k for\n"
    "                      every class plus 1-E for the right one (default 0.1)\n"
    "  --proto-nn X        class lexicons: words within cosine X of a seed word\n"
    "                      (0: similarity to the mean of the seeds instead)\n"
    "  --guard-nn X        the same for the guard's lexicons (default 0.7)\n"
    "  --harm-nn X         words counted as harmful: within cosine X of a seed (0.8)\n"
    "  --unstyle 0|1       hide from the router how sources of a class differ\n"
    "  --hash-bits N       hashed n-gram table size 2^N (default 16)\n"
    "  --epochs N  --guard-epochs N  --lr X  --l2 X  --l2-hash X  --l2-guard X\n"
    "  --mil-rank N  --l2-mil X   the guard's word scorer ('mil'): leaves out the N\n"
    "                      most frequent words (300); its L2 (1e-3)\n"
    "  --l2-mem X  --mem-lr X  --mem-min N  --mem-rank N   the guard's memory ('mem'):\n"
    "                      its L2 (1e-3) and learning rate (100 times --lr); it learns\n"
    "                      only words and pairs seen in N harmful rows (3), not the\n"
    "                      N most frequent words (300)\n"
    "  --sif A  --shrink W  --shrink-embed W   pseudo-words in the lexicon densities'\n"
    "                      and in the mean word vector's averages (defaults 4 and 32)\n"
    "  --balance 0|1|2|3  --guard-balance 0|1|2|3   example weights: none, by class,\n"
    "                      by class and source, or logit adjustment (defaults 3 and 2)\n"
    "  --guard-threshold X fixed guard threshold (default: lowest with <= 2% false\n"
    "                      positives on every benign source, out of source)\n"
    "  --max-bytes N       bytes of each text read (default 2048)\n"
    "  --folds N           eval: N random folds of rows instead of leave-one-source-out\n"
    "  --guard-folds N     eval: also the guard's recall with each harmful row scored\n"
    "                      by a model trained without its fold of the harmful rows\n"
    "                      (N random folds; every benign row in training)\n"
    "  --dump FILE         eval: each example's out-of-source prediction (source, label,\n"
    "                      predicted, guard score, text; tab-separated)\n"
    "  --no-calibrate      train: skip the leave-one-source-out pass (temperature 1)\n"
    "  --no-augment        no chat-phrased copies of the examples\n"
    "  -v                  progress on stderr\n";

#define MAX_EXTRA 16

typedef struct router_args {
    const char *data, *out;
    const char *extra[MAX_EXTRA];   /* more {"text","label"} files, a source each */
    int n_extra;
    int folds;
    route_train_opts o;
} router_args;

static int bad(const char *msg, const char *arg) {
    fprintf(stderr, "msoa router: %s%s%s\n%s", msg, arg ? ": " : "", arg ? arg : "", usage);
    return -1;
}

/* A feature list, or "none". */
static int parse_skip(const char *v, unsigned *out) {
    if (strcmp(v, "none") == 0) {
        *out = 0;
        return 0;
    }
    return route_parse_features(v, out);
}

/* Parses the flags after the sub-command. */
static int parse_args(int argc, char **argv, router_args *a) {
    route_train_defaults(&a->o);
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(f, "-v") == 0) { a->o.verbose = 1; takes = 0; }
        else if (strcmp(f, "--no-calibrate") == 0) { a->o.calibrate = 0; takes = 0; }
        else if (strcmp(f, "--no-augment") == 0) { a->o.augment = 0; takes = 0; }
        else if (!v) return bad("missing value for", f);
        else if (strcmp(f, "--data") == 0) a->data = v;
        else if (strcmp(f, "--out") == 0) a->out = v;
        else if (strcmp(f, "--extra") == 0) {
            if (a->n_extra == MAX_EXTRA) return bad("too many --extra files", v);
            a->extra[a->n_extra++] = v;
        }
        else if (strcmp(f, "--seed") == 0) a->o.seed = strtoull(v, NULL, 10);
        else if (strcmp(f, "--folds") == 0) a->folds = atoi(v);
        else if (strcmp(f, "--guard-folds") == 0) a->o.guard_folds = atoi(v);
        else if (strcmp(f, "--l2-mem") == 0) a->o.l2_mem = strtof(v, NULL);
        else if (strcmp(f, "--mem-lr") == 0) a->o.mem_lr = strtof(v, NULL);
        else if (strcmp(f, "--mem-min") == 0) a->o.mem_min = atoi(v);
        else if (strcmp(f, "--mem-rank") == 0) a->o.mem_rank = atoi(v);
        else if (strcmp(f, "--embeddings") == 0) a->o.embeddings = v;
        else if (strcmp(f, "--features") == 0) {
            if (route_parse_features(v, &a->o.features)) return bad("unknown feature list", v);
        } else if (strcmp(f, "--hash-bits") == 0) a->o.hash_bits = (uint32_t)atoi(v);
        else if (strcmp(f, "--epochs") == 0) a->o.epochs = atoi(v);
        else if (strcmp(f, "--lr") == 0) a->o.lr = strtof(v, NULL);
        else if (strcmp(f, "--l2") == 0) a->o.l2 = strtof(v, NULL);
        else if (strcmp(f, "--l2-hash") == 0) a->o.l2_hash = strtof(v, NULL);
        else if (strcmp(f, "--l2-guard") == 0) a->o.l2_guard = strtof(v, NULL);
        else if (strcmp(f, "--l2-mil") == 0) a->o.l2_mil = strtof(v, NULL);
        else if (strcmp(f, "--mil-rank") == 0) a->o.mil_rank = atoi(v);
        else if (strcmp(f, "--sif") == 0) a->o.sif_a = strtof(v, NULL);
        else if (strcmp(f, "--shrink") == 0) a->o.shrink = strtof(v, NULL);
        else if (strcmp(f, "--shrink-embed") == 0) a->o.shrink_embed = strtof(v, NULL);
        else if (strcmp(f, "--guard-threshold") == 0) a->o.guard_threshold = strtof(v, NULL);
        else if (strcmp(f, "--cluster-tables") == 0) a->o.cluster_tables = atoi(v);
        else if (strcmp(f, "--cluster-bits") == 0) a->o.cluster_bits = atoi(v);
        else if (strcmp(f, "--hidden") == 0) a->o.hidden = atoi(v);
        else if (strcmp(f, "--average") == 0) a->o.average = atoi(v);
        else if (strcmp(f, "--word-drop") == 0) a->o.word_drop = strtof(v, NULL);
        else if (strcmp(f, "--smooth") == 0) a->o.smooth = strtof(v, NULL);
        else if (strcmp(f, "--lex-top") == 0) a->o.lex_top = atoi(v);
        else if (strcmp(f, "--l2-lex") == 0) a->o.l2_lex = strtof(v, NULL);
        else if (strcmp(f, "--lex-init") == 0) a->o.lex_init = strtof(v, NULL);
        else if (strcmp(f, "--proto-nn") == 0) a->o.proto_nn = strtof(v, NULL);
        else if (strcmp(f, "--guard-epochs") == 0) a->o.guard_epochs = atoi(v);
        else if (strcmp(f, "--guard-nn") == 0) a->o.guard_nn = strtof(v, NULL);
        else if (strcmp(f, "--harm-nn") == 0) a->o.harm_nn = strtof(v, NULL);
        else if (strcmp(f, "--unstyle") == 0) a->o.unstyle = atoi(v);
        else if (strcmp(f, "--router-skip") == 0) {
            if (parse_skip(v, &a->o.router_skip)) return bad("unknown feature list", v);
        } else if (strcmp(f, "--guard-skip") == 0) {
            if (parse_skip(v, &a->o.guard_skip)) return bad("unknown feature list", v);
        }
        else if (strcmp(f, "--balance") == 0) a->o.balance = atoi(v);
        else if (strcmp(f, "--guard-balance") == 0) a->o.guard_balance = atoi(v);
        else if (strcmp(f, "--dump") == 0) a->o.dump = v;
        else if (strcmp(f, "--max-bytes") == 0) a->o.max_bytes = (uint32_t)atoi(v);
        else return bad("unknown option", f);
        i += takes;
    }
    if (!a->data) return bad("--data is required", NULL);
    if (a->o.hash_bits > 22 || a->o.cluster_tables < 1 || a->o.cluster_tables > 64 ||
        a->o.cluster_bits < 1 || a->o.cluster_bits > 20 || a->o.hidden < 8 || a->o.hidden > ROUTE_MAX_HIDDEN || a->o.hidden % 8 || a->o.average < 0 || a->o.average > 1 ||
        a->o.lex_top < 1 || a->o.lex_top > ROUTE_LEX_TOP_MAX || !(a->o.l2_lex >= 0) || !(a->o.word_drop >= 0 && a->o.word_drop < 1) ||
        !(a->o.smooth >= 0 && a->o.smooth < 1) ||
        !(a->o.proto_nn >= 0 && a->o.proto_nn < 1) || !(a->o.guard_nn > 0 && a->o.guard_nn < 1) || !(a->o.harm_nn > 0 && a->o.harm_nn <= 1) || a->o.unstyle < 0 || a->o.unstyle > 1 || a->o.epochs < 1 || a->o.guard_epochs < 1 || a->o.max_bytes < 16 || !(a->o.shrink >= 0) || !(a->o.shrink_embed >= 0) || a->o.balance < 0 || a->o.balance > 3 ||
        a->o.guard_balance < 0 || a->o.guard_balance > 3 ||
        a->folds < 0 || a->folds == 1 || a->folds > 20 || a->o.guard_folds < 0 || a->o.guard_folds == 1 ||
        a->o.guard_folds > 20 || (a->o.guard_folds && a->folds) || !(a->o.l2_mem >= 0) || !(a->o.mem_lr > 0) || a->o.mem_min < 1 ||
        a->o.mem_rank < 0)
        return bad("option out of range", NULL);
    return 0;
}

/* The shared data folder carries its embeddings; use them unless told. */
static void default_embeddings(router_args *a, buf *path) {
    struct stat st;
    if (a->o.embeddings) return;
    buf_printf(path, "%s/embeddings/glove-100d-30k.txt.gz", a->data);
    if (stat(path->data, &st) == 0) a->o.embeddings = path->data;
}

static int run(int train, router_args *a) {
    route_dataset d;
    char *err = NULL;
    buf emb = BUF_INIT, report = BUF_INIT;
    route_trainer *t = NULL;
    route_model *m = NULL;
    int rc = 1;
    double t0 = clock_now_ms();
    dataset_init(&d);
    default_embeddings(a, &emb);
    if (dataset_load(&d, a->data, &err)) goto done;
    for (int i = 0; i < a->n_extra; i++)
        if (dataset_load_user_file(&d, a->extra[i], &err)) goto done;
    if (a->o.augment) dataset_augment(&d, a->o.seed);
    if (!(t = route_trainer_new(&d, &a->o, &err))) goto done;
    if (a->o.verbose)
        fprintf(stderr, "msoa router: %d examples from %d sources, features ready (%.1f s)\n", d.n,
                d.n_sources, (clock_now_ms() - t0) / 1000);
    route_eval r;
    if (!train) {
        if (route_trainer_eval(t, a->folds, &r, &report, &err)) goto done;
        fputs(report.data, stdout);
        rc = 0;
        goto done;
    }
    if (!(m = route_train_all(t, &r, &err)) || route_model_save(m, a->out, &err)) goto done;
    printf("wrote %s: %d classes, guard %s, temperature %.2f, guard threshold %.4f, %.1f s\n", a->out,
           m->n_classes, m->has_guard ? "yes" : "no", m->temperature, m->guard_threshold,
           (clock_now_ms() - t0) / 1000);
    if (r.n_sources)
        printf("leave-one-source-out mean accuracy %.1f%% over the --data sources (%.1f%% with the extra files)\n",
               100.0 * r.mean_accuracy_main, 100.0 * r.mean_accuracy);
    rc = 0;
done:
    if (err) fprintf(stderr, "msoa router: %s\n", err);
    free(err);
    route_model_free(m);
    route_trainer_free(t);
    dataset_free(&d);
    buf_free(&emb);
    buf_free(&report);
    return rc;
}

int cmd_router(int argc, char **argv) {
    router_args a = {0};
    if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc < 1 || (strcmp(argv[0], "train") != 0 && strcmp(argv[0], "eval") != 0)) {
        fputs(usage, stderr);
        return 2;
    }
    int train = strcmp(argv[0], "train") == 0;
    if (parse_args(argc - 1, argv + 1, &a)) return 2;
    if (train && !a.out) {
        bad("--out is required", NULL);
        return 2;
    }
    return run(train, &a);
}
