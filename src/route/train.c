/* train: see train.h. */
#include "route/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "route/gunzip.h"
#include "route/model.h"

void route_train_defaults(route_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->seed = 1;
    /* with word dropout the router's head learns slower: 20 epochs instead
     * of 12 gave 82.6 / 83.5 / 82.8% instead of 82.1 / 83.0 / 82.5% (seeds
     * 1-3, leave-one-source-out over the shared sources); without it, 20
     * gave nothing (session 3). `msoa router train` takes ~50 s of CPU */
    o->epochs = 20;
    /* the guard has a few dozen inputs: cheap to train to convergence, and
     * at 12 epochs where its scores land (so its recall at the threshold)
     * depended on the seed */
    o->guard_epochs = 40;
    o->lr = 0.01f;
    /* the router head's L2; word dropout regularises it too: with
     * dropout and 20 epochs, 1e-2 gave 83.7 / 84.1 / 83.5% (seeds 1-3,
     * leave-one-source-out over the shared sources) and 3e-2 82.6 / 83.5 /
     * 82.8% (0.1: 80.0 / 81.1 / 80.2 at 12 epochs) */
    o->l2 = 1e-2f;
    o->l2_hash = 1e-3f;
    /* measured out of source: 1e-4 let a lexicon word's weight grow until
     * one such word scored ~1.0 whatever else the text said */
    o->l2_guard = 1e-3f;
    o->l2_mil = 1e-3f;
    o->mil_rank = 300;
    /* the guard's memory (FEATS_MEM, not in the default: see "Guard,
     * session 6: memory" in models/README.md for every setting measured) */
    o->l2_mem = 1e-3f;
    o->mem_lr = 100;
    o->mem_min = 3;
    o->mem_rank = 300;
    /* measured by leave-one-source-out (bench/router/ablate.sh): the
     * guard reads only signs of harm and of jailbreaks (lexicons, request
     * form), not the mean vector, which tells it the benign sources'
     * styles: an unseen benign style then looked harmful */
    o->features = FEATS_EMBED | FEATS_HAND | FEATS_PROTO | FEATS_HIDDEN | FEATS_LEX;
    /* nor the similarity to the harmful / jailbreak prototypes: with the
     * written lexicons (features.c) they only added the GloVe neighbours'
     * noise (recall 69/75/91% with them, 81/76/92% without) */
    o->guard_skip = FEATS_EMBED | FEATS_PROTO;
    o->proto_nn = 0.5f;
    o->guard_nn = 0.7f;
    o->harm_nn = 0.8f;
    o->unstyle = 1;
    o->hash_bits = 16;
    o->max_bytes = ROUTE_DEFAULT_MAX_BYTES;
    o->sif_a = 0;
    o->shrink = 4;
    /* measured by leave-one-source-out (seed 1): a stronger pull of a
     * short text's mean vector towards the average text, 78.8% at 4 ->
     * 80.6% at 32; the densities, which the guard reads too, keep 4 */
    o->shrink_embed = 32;
    o->cluster_tables = 8;
    o->cluster_bits = 6;
    o->hidden = 16;
    /* the router's soft lexicons, measured by leave-one-source-out (seeds
     * 1-3, mean over the shared sources): 80.4% without them, 81.0% with
     * the mean of each class's 2 best words, an L2 of 0.1 and a start at
     * the class's seed direction (the 3 best words: 80.9%; an L2 of 1e-3:
     * 69.4% with seed 1, the lexicons then learn each source's words) */
    o->lex_top = 2;
    o->l2_lex = 0.1f;
    o->lex_init = 1;
    /* measured by leave-one-source-out: with the weights of the last
     * epochs averaged, whole unseen tasks change class less with the seed
     * (seeds 1-3: 81.0, 81.1, 77.5% -> 80.6, 80.8, 80.0%) */
    o->average = 1;
    /* measured by leave-one-source-out (seeds 1-3, mean over the shared
     * sources): 81.0% with class weights (balance 1), 81.7% with logit
     * adjustment instead, 82.5% with word dropout 0.4 on top (0.15: 81.9,
     * 0.25: 82.3, 0.55: 82.2); dropout alone, with class weights, 0.25:
     * 80.9%. A class whose big source is held out keeps its few examples
     * at weight 1 instead of a dozen each, and a head that cannot count on
     * any one word learns more of what the rest of a text says */
    o->balance = 3;
    o->word_drop = 0.4f;
    /* label smoothing, measured by leave-one-source-out (seeds 1-3, mean
     * over the shared sources): 83.8% without, 86.6% at 0.1, a value
     * picked before measuring and the one tried on all three seeds. A head
     * trained towards 0.925 instead of 1 for the right class has no reason
     * to keep sharpening its weights on rows it already gets right; why it
     * helps this much on held-out sources was not analysed */
    o->smooth = 0.1f;
    o->guard_balance = 2;
    o->calibrate = 1;
    o->augment = 1;
}

int route_parse_features(const char *list, unsigned *out) {
    static const struct { const char *name; unsigned bit; } names[] = {
        {"embed", FEATS_EMBED}, {"hand", FEATS_HAND}, {"unigram", FEATS_UNIGRAM},
        {"bigram", FEATS_BIGRAM}, {"proto", FEATS_PROTO}, {"cluster", FEATS_CLUSTER},
        {"style", FEATS_STYLE}, {"mil", FEATS_MIL}, {"hidden", FEATS_HIDDEN},
        {"lex", FEATS_LEX}, {"mem", FEATS_MEM},
        {"all", FEATS_EMBED | FEATS_HAND | FEATS_UNIGRAM | FEATS_BIGRAM | FEATS_PROTO | FEATS_CLUSTER | FEATS_STYLE | FEATS_MIL | FEATS_HIDDEN | FEATS_LEX | FEATS_MEM},
    };
    unsigned f = 0;
    while (*list) {
        size_t n = strcspn(list, ",");
        size_t i = 0;
        for (; i < sizeof names / sizeof *names; i++)
            if (strlen(names[i].name) == n && strncmp(list, names[i].name, n) == 0) break;
        if (i == sizeof names / sizeof *names) return -1;
        f |= names[i].bit;
        list += n + (list[n] == ',');
    }
    if (!f) return -1;
    *out = f;
    return 0;
}

struct route_trainer {
    const route_dataset *d;
    route_train_opts o;
    route_vocab vocab;        /* GloVe words (rows) and lexicons */
    float *emb;               /* [vocab.n_rows][dim] */
    int dim;
    int n_classes;            /* router classes: the non-guard labels */
    int class_of_label[ROUTE_MAX_CLASSES * 2];   /* -1: guard label */
    char *class_names[ROUTE_MAX_CLASSES];
    int nx;                   /* named dense features (model.h) */
    int nd;                   /* dense features: nx + dim */
    int n_proto;              /* n_classes + ROUTE_GUARD_PROTOS */
    float *proto_sim;         /* [vocab.n_rows][n_proto] */
    uint32_t *row_ids;        /* [vocab.n_rows][cluster_tables] hashed cluster ids */
    float *dense;             /* [n][nd] */
    uint32_t *sp_off;         /* [n+1] into sp_idx */
    uint32_t *sp_idx;         /* hashed n-gram buckets, repeated per occurrence */
    float *sp_scale;          /* [n] */
    uint64_t *text_hash;      /* [n], to drop held-out texts from training */
    uint32_t *row_off;        /* [n+1] into rows: each example's distinct words */
    int32_t *rows;
    uint16_t *row_cnt;        /* [same as rows]: occurrences of each distinct word */
    float *mil_inv;           /* [vocab.n_rows] FEATS_MIL: 1/|v| of the words it may
                                 score, 0 for the words it may not (see mil_words) */
    /* FEATS_MEM, the guard's memory: an id per distinct word and pair of
     * words of the texts (mem_intern) */
    int32_t n_mem, cap_mem;
    uint64_t *mem_key;        /* [n_mem] the word's hash, or the pair's bigram hash */
    uint64_t *mem_first, *mem_second;   /* [n_mem] a pair's words (0: a word) */
    unsigned char *mem_form;  /* [n_mem] 1: no word of a form or a style (mem_form_ok) */
    unsigned char *mem_ok;    /* [n_mem] set per fit: mem_form and in mem_min harmful rows */
    uint64_t *map_key;        /* open addressing, key -> id */
    int32_t *map_id;
    uint32_t map_mask;
    uint32_t *mem_off;        /* [n+1] into mem_ids: each example's distinct ids */
    int32_t *mem_ids;
    uint16_t *mem_cnt;        /* occurrences of each */
    float *mem_scale;         /* [n] 1 / (words + ROUTE_MEM_PRIOR) */
};

/* ---- embeddings ---- */

/* Subtracts the mean vector: raw GloVe vectors share a large common
 * direction, which makes every word (even "the") look similar to every
 * prototype. */
static void center_embeddings(route_trainer *t) {
    int rows = t->vocab.n_rows, dim = t->dim;
    double *mean = xcalloc((size_t)dim + 1, sizeof(double));
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < dim; k++) mean[k] += t->emb[(size_t)r * (size_t)dim + (size_t)k];
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < dim; k++) t->emb[(size_t)r * (size_t)dim + (size_t)k] -= (float)(mean[k] / rows);
    free(mean);
}

/* Row's word vector dotted with u (dim floats), summed in order: the
 * score a learnt direction gives a word. */
static float emb_dot(const route_trainer *t, int32_t row, const float *u) {
    const float *v = t->emb + (size_t)row * (size_t)t->dim;
    float s = 0;
    for (int d = 0; d < t->dim; d++) s += v[d] * u[d];
    return s;
}

/* Reads a GloVe text file: "word v1 ... vD" per line, most frequent first.
 * Row r gets weight (r+1)/(r+1+a): the SIF idea that frequent words carry
 * less meaning, with rank standing in for frequency. */
static int load_embeddings(route_trainer *t, const char *path, char **err) {
    buf text = BUF_INIT;
    if (read_file_maybe_gz(path, &text) || !text.len) {
        buf_free(&text);
        buf m = BUF_INIT;
        buf_printf(&m, "%s: cannot read embeddings", path);
        *err = buf_detach(&m);
        return -1;
    }
    size_t lines = 0;
    for (size_t i = 0; i < text.len; i++) lines += text.data[i] == '\n';
    char *p = text.data, *nl = strchr(p, '\n');
    int dim = 0;
    for (char *q = p; q < (nl ? nl : p + strlen(p)); q++) dim += *q == ' ' && q[1] && q[1] != '\n';
    vocab_init(&t->vocab, (uint32_t)lines + 1024);
    t->emb = xmalloc(sizeof(float) * (lines + 1) * (size_t)dim);
    t->vocab.row_weight = xmalloc(sizeof(float) * (lines + 1));
    t->dim = dim;
    int32_t row = 0;
    while (p && *p) {
        char *end = strchr(p, '\n');
        if (end) *end = '\0';
        char *sp = strchr(p, ' ');
        if (sp && dim > 0) {
            uint64_t h = feat_hash_word(p, (size_t)(sp - p));
            float *v = t->emb + (size_t)row * (size_t)dim;
            char *q = sp;
            int k = 0;
            for (; k < dim; k++) {
                char *next;
                v[k] = strtof(q, &next);
                if (next == q) break;
                q = next;
            }
            /* a word seen twice keeps its first (more frequent) row */
            if (k == dim && !vocab_get(&t->vocab, h)) {
                vocab_put(&t->vocab, h, row, 0);
                float r = (float)(row + 1);
                t->vocab.row_weight[row] = t->o.sif_a > 0 ? r / (r + t->o.sif_a) : 1.0f;
                row++;
            }
        }
        p = end ? end + 1 : NULL;
    }
    t->vocab.n_rows = row;
    buf_free(&text);
    center_embeddings(t);
    return 0;
}

/* ---- class prototypes ---- */

/* Seed words of the four gateway domains; any other label is its own
 * seed. The prototype is the mean of the seeds' unit vectors. */
static const char *const proto_seeds[][96] = {
    {"code", "code", "program", "programming", "function", "software", "python", "java",
     "algorithm", "compile", "variable", "loop", "array", "string", "return", "implement",
     "list",
     /* the subject as questions about it name it, not only requests for code */
     "computer", "computing", "database", "server", "processor", "memory", "cache", "compiler",
     "kernel", "thread", "bytes", "bits", "binary", "boolean", "recursion", "pointer", "stack",
     "queue", "hash", "graph", "syntax", "debug", "bug", "programmer", "developer", "api",
     "sql", "query", "runtime", "neural", "classifier", "dataset", "protocol", NULL},
    {"math", "math", "mathematics", "equation", "calculate", "number", "sum", "fraction",
     "solve", "geometry", "algebra", "probability", "arithmetic", "integer", "percent",
     "compute", "total", "digits",
     /* statistics, algebra and analysis, and the quantities of word problems */
     "statistics", "variance", "deviation", "median", "regression", "correlation", "sample",
     "distribution", "theorem", "proof", "polynomial", "matrix", "vector", "subgroup",
     "homomorphism", "permutation", "modulo", "prime", "divisible", "ratio", "average",
     "area", "volume", "angle", "triangle", "radius", "integral", "derivative", "cost",
     "price", "dollars", "twice", "half", NULL},
    {"reasoning", "reasoning", "logic", "logical", "deduce", "infer", "conclusion", "premise",
     "argument", "valid", "true", "false", "therefore", "implies", "puzzle", "if", "which",
     "order", "following", "statement", "swap", "trade", "arrange", "sequence", "pattern",
     "clue", "riddle", "sort", "alphabetical", "rank", "position", NULL},
    {"language", "language", "write", "writing", "essay", "sentence", "translate", "grammar",
     "meaning", "story", "letter", "email", "summarize", "poem", "describe", "opinion",
     /* the humanities and everyday writing: what language models are asked about */
     "history", "culture", "religion", "religious", "society", "social", "philosophy",
     "marketing", "brand", "customer", "advertising", "geography", "country", "population",
     "economy", "politics", "government", "novel", "poetry", "author", "book", "article",
     "paragraph", "tone", "style", "summary", "review", "recipe", "travel", "advice", "friend",
     "conversation", "art", "music", "film", NULL},
    /* the topics of harmful requests: violence and weapons, drugs, attacks
     * on computers, crime for gain, hate and harassment, self-harm, and
     * deception; chosen from general knowledge, not from the data sets */
    {"harmful", "kill", "murder", "assassinate", "bomb", "explosive", "explosives", "grenade",
     "firearm", "firearms", "weapon", "weapons", "shoot", "stab", "torture", "kidnap",
     "hostage", "massacre", "terrorist", "terrorism", "violence", "arson", "detonate",
     "poison", "strangle", "behead", "drugs", "cocaine", "heroin", "methamphetamine",
     "fentanyl", "narcotics", "overdose", "smuggle", "trafficking", "hack", "hacking",
     "malware", "ransomware", "virus", "trojan", "keylogger", "botnet", "phishing",
     "exploit", "spyware", "steal", "theft", "fraud", "scam", "counterfeit", "launder",
     "embezzle", "bribe", "blackmail", "extortion", "forgery", "illegal", "illegally",
     "piracy", "racist", "racism", "hate", "harass", "harassment", "bully", "cyberbully",
     "slur", "supremacist", "genocide", "stalk", "threaten", "intimidate", "suicide",
     "anorexia", "bulimia", "misinformation", "disinformation", "propaganda", "hoax",
     "manipulate", "deceive", "radicalize", "extremist", "incite", "riot", "pornography",
     "sexual", "abuse", "abusive", "vandalize", "sabotage", "cheat", NULL},
    {"jailbreak", "pretend", "roleplay", "character", "persona", "unfiltered", "uncensored",
     "ignore", "rules", "restrictions", "jailbreak", "unrestricted", "immoral", "obey",
     "policy", "policies", "guidelines", "amoral", "unethical", "censorship", "censored",
     "filter", "filters", "limitations", "bypass", "override", "chatgpt", "openai",
     "simulate", "fictional", "hypothetical", "forget", "refuse", "disobey", NULL},
};

static const char *proto_name(const route_trainer *t, int p) {
    return p < t->n_classes ? t->class_names[p] : route_guard_protos[p - t->n_classes];
}

static int add_unit(const route_trainer *t, const char *word, float *acc) {
    const vocab_entry *e = vocab_get(&t->vocab, feat_hash_word(word, strlen(word)));
    if (!e || e->row < 0) return 0;
    const float *v = t->emb + (size_t)e->row * (size_t)t->dim;
    double n = 0;
    for (int k = 0; k < t->dim; k++) n += (double)v[k] * v[k];
    if (n <= 0) return 0;
    for (int k = 0; k < t->dim; k++) acc[k] += v[k] / (float)sqrt(n);
    return 1;
}

/* The unit vectors of class c's seed words into seeds[]; returns how many. */
static int class_seeds(const route_trainer *t, int c, float *seeds, int max) {
    int n = 0;
    for (size_t s = 0; s < sizeof proto_seeds / sizeof *proto_seeds; s++)
        if (strcmp(proto_seeds[s][0], proto_name(t, c)) == 0)
            for (int i = 1; proto_seeds[s][i] && n < max; i++)
                n += add_unit(t, proto_seeds[s][i], seeds + (size_t)n * (size_t)t->dim);
    if (!n) n = add_unit(t, proto_name(t, c), seeds);
    return n;
}

#define MAX_SEEDS 96

/* Marks the words of the harmful lexicon (LEX_HARM, counted by the
 * scanner): the seeds, also those without a vector, and the words within
 * cosine harm_nn of one (with a lower guard_nn the prototype's similarity
 * reaches further than the count). */
static void flag_harm_words(route_trainer *t) {
    int harm = t->n_classes;   /* route_guard_protos[0] */
    for (size_t s = 0; s < sizeof proto_seeds / sizeof *proto_seeds; s++)
        if (strcmp(proto_seeds[s][0], route_guard_protos[0]) == 0)
            for (int i = 1; proto_seeds[s][i]; i++)
                vocab_put(&t->vocab, feat_hash_word(proto_seeds[s][i], strlen(proto_seeds[s][i])), -1, LEX_HARM);
    for (uint32_t i = 0; i <= t->vocab.mask; i++) {
        vocab_entry *e = &t->vocab.slots[i];
        float sim = e->key && e->row >= 0 ? t->proto_sim[(size_t)e->row * (size_t)t->n_proto + (size_t)harm] : 0;
        if (t->o.proto_nn > 0 && sim > 0 && sim >= t->o.harm_nn)
            e->flags |= LEX_HARM;
    }
}

/* proto_sim[row][c]: how close every word is to class c. With proto_nn
 * 0, the cosine with the class prototype (the mean of its seeds' unit
 * vectors); else a lexicon grown from the seeds by their GloVe
 * neighbours: the cosine with the nearest seed where it is at least
 * proto_nn, 0 elsewhere, so that the mean over a text counts its words
 * of the class. */
static void build_prototypes(route_trainer *t) {
    int rows = t->vocab.n_rows, dim = t->dim, np = t->n_proto;
    float *seeds = xcalloc((size_t)MAX_SEEDS * (size_t)dim + 1, sizeof(float));
    t->proto_sim = xcalloc((size_t)rows * (size_t)np + 1, sizeof(float));
    for (int c = 0; c < np; c++) {
        memset(seeds, 0, sizeof(float) * (size_t)MAX_SEEDS * (size_t)dim);
        int ns = class_seeds(t, c, seeds, MAX_SEEDS);
        if (!t->o.proto_nn) {   /* one seed: their normalised mean */
            for (int s = 1; s < ns; s++)
                for (int k = 0; k < dim; k++) seeds[k] += seeds[(size_t)s * (size_t)dim + (size_t)k];
            double n = 0;
            for (int k = 0; k < dim; k++) n += (double)seeds[k] * seeds[k];
            for (int k = 0; k < dim && n > 0; k++) seeds[k] /= (float)sqrt(n);
            ns = ns ? 1 : 0;
        }
        for (int r = 0; r < rows; r++) {
            const float *v = t->emb + (size_t)r * (size_t)dim;
            double n = 0, best = -1;
            for (int k = 0; k < dim; k++) n += (double)v[k] * v[k];
            for (int s = 0; s < ns && n > 0; s++) {
                double dot = 0;
                for (int k = 0; k < dim; k++) dot += (double)v[k] * seeds[(size_t)s * (size_t)dim + (size_t)k];
                best = dot / sqrt(n) > best ? dot / sqrt(n) : best;
            }
            float nn = c < t->n_classes ? t->o.proto_nn : t->o.guard_nn;
            if (t->o.proto_nn && best < nn) best = 0;
            t->proto_sim[(size_t)r * (size_t)np + (size_t)c] = n > 0 && ns ? (float)best : 0.0f;
        }
    }
    free(seeds);
    flag_harm_words(t);
}

/* The words the guard's word scorer (FEATS_MIL) may score: not the most
 * frequent mil_rank words, whose use is a source's style more than a
 * topic, nor the words of a request's form, of code or mathematics, or of
 * talk about the assistant, which every source has its own habits of.
 * mil_inv[row]: 1/|v| (the scorer reads directions), or 0. */
static void mil_words(route_trainer *t) {
    const uint32_t style = LEX_ASK | LEX_GUIDE | LEX_AUX | LEX_HOW | LEX_META | LEX_JUDGE | LEX_CODE | LEX_MATH;
    t->mil_inv = xcalloc((size_t)t->vocab.n_rows + 1, sizeof(float));
    for (uint32_t i = 0; i <= t->vocab.mask; i++) {
        const vocab_entry *e = &t->vocab.slots[i];
        if (!e->key || e->row < t->o.mil_rank || (e->flags & style)) continue;
        const float *v = t->emb + (size_t)e->row * (size_t)t->dim;
        double n = 0;
        for (int k = 0; k < t->dim; k++) n += (double)v[k] * v[k];
        t->mil_inv[e->row] = n > 0 ? (float)(1.0 / sqrt(n)) : 0.0f;
    }
}

/* ---- word clusters ---- */

static uint64_t rng_next(uint64_t *s);

/* A uniform number in [-1, 1). */
static float rng_unit(uint64_t *s) { return (float)(rng_next(s) >> 40) / (float)(1u << 23) - 1.0f; }

/* Locality-sensitive hashing: each table is cluster_bits random hyperplanes
 * through the mean word vector; a word's bucket is the side it lies on of
 * each. Words with close vectors mostly share buckets, so a weight learnt
 * for "python" also moves "perl", which no training text may contain. */
static void build_clusters(route_trainer *t) {
    int rows = t->vocab.n_rows, dim = t->dim, nt = t->o.cluster_tables, nb = t->o.cluster_bits;
    uint64_t rng = t->o.seed * 0xd1342543de82ef95ull + 1;
    uint64_t mask = ((uint64_t)1 << t->o.hash_bits) - 1;
    float *planes = xmalloc(sizeof(float) * (size_t)(nt * nb) * (size_t)dim + 1);
    float *center = xcalloc((size_t)dim + 1, sizeof(float));
    for (size_t i = 0; i < (size_t)(nt * nb) * (size_t)dim; i++) planes[i] = rng_unit(&rng);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < dim; k++) center[k] += t->emb[(size_t)r * (size_t)dim + (size_t)k] / (float)rows;
    t->row_ids = xcalloc((size_t)rows * (size_t)nt + 1, sizeof(uint32_t));
    for (int r = 0; r < rows; r++) {
        const float *v = t->emb + (size_t)r * (size_t)dim;
        for (int tb = 0; tb < nt; tb++) {
            uint64_t bucket = 0;
            for (int b = 0; b < nb; b++) {
                const float *p = planes + (size_t)(tb * nb + b) * (size_t)dim;
                float dot = 0;
                for (int k = 0; k < dim; k++) dot += (v[k] - center[k]) * p[k];
                bucket = bucket << 1 | (dot > 0);
            }
            uint64_t id = ((uint64_t)(tb + 1) << 32 | bucket) * 0x9e3779b97f4a7c15ull;
            t->row_ids[(size_t)r * (size_t)nt + (size_t)tb] = (uint32_t)((id >> 20) & mask);
        }
    }
    free(planes);
    free(center);
}

/* ---- the guard's memory (FEATS_MEM): ids of words and pairs ---- */

/* Words the memory may not learn, alone or in a pair: the mem_rank most
 * frequent, whose use is a source's style more than a topic, and the
 * words of a request's form, of code or mathematics, of talk about the
 * assistant or of judging a text, which every source has its habits of
 * ("Write a tutorial on how to" is AdvBench's template, not a harm). */
static int mem_style_word(const route_trainer *t, uint64_t h) {
    const uint32_t style = LEX_ASK | LEX_GUIDE | LEX_AUX | LEX_HOW | LEX_META | LEX_JUDGE | LEX_CODE | LEX_MATH;
    const vocab_entry *e = vocab_get(&t->vocab, h);
    return e && ((e->flags & style) || (e->row >= 0 && e->row < t->o.mem_rank));
}

/* A word may be learnt if it is no style word; a pair if neither word is
 * one of form (the style flags) and one of them is no frequent word. */
static unsigned char mem_form_ok(const route_trainer *t, uint64_t a, uint64_t b) {
    if (!b) return !mem_style_word(t, a);
    const uint32_t form = LEX_ASK | LEX_GUIDE | LEX_AUX | LEX_HOW | LEX_META | LEX_JUDGE | LEX_CODE | LEX_MATH;
    const vocab_entry *ea = vocab_get(&t->vocab, a), *eb = vocab_get(&t->vocab, b);
    if ((ea && (ea->flags & form)) || (eb && (eb->flags & form))) return 0;
    return !mem_style_word(t, a) || !mem_style_word(t, b);
}

static uint32_t mem_slot(const route_trainer *t, uint64_t key) {
    return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & t->map_mask;
}

static void mem_map_grow(route_trainer *t) {
    uint32_t cap = t->map_mask ? 2 * (t->map_mask + 1) : 1u << 16;
    free(t->map_key);
    free(t->map_id);
    t->map_key = xcalloc(cap, sizeof(uint64_t));
    t->map_id = xmalloc(sizeof(int32_t) * cap);
    t->map_mask = cap - 1;
    for (int32_t id = 0; id < t->n_mem; id++) {
        uint32_t i = mem_slot(t, t->mem_key[id]);
        while (t->map_key[i]) i = (i + 1) & t->map_mask;
        t->map_key[i] = t->mem_key[id];
        t->map_id[i] = id;
    }
}

/* The id of a word (second 0) or of the pair first-second (key: its
 * bigram hash), made on first sight. */
static int32_t mem_intern(route_trainer *t, uint64_t key, uint64_t first, uint64_t second) {
    if (2 * ((uint32_t)t->n_mem + 1) > t->map_mask) mem_map_grow(t);
    uint32_t i = mem_slot(t, key);
    while (t->map_key[i] && t->map_key[i] != key) i = (i + 1) & t->map_mask;
    if (t->map_key[i]) return t->map_id[i];
    if (t->n_mem == t->cap_mem) {
        t->cap_mem = t->cap_mem ? 2 * t->cap_mem : 1 << 16;
        t->mem_key = xrealloc(t->mem_key, sizeof(uint64_t) * (size_t)t->cap_mem);
        t->mem_first = xrealloc(t->mem_first, sizeof(uint64_t) * (size_t)t->cap_mem);
        t->mem_second = xrealloc(t->mem_second, sizeof(uint64_t) * (size_t)t->cap_mem);
        t->mem_form = xrealloc(t->mem_form, (size_t)t->cap_mem);
    }
    int32_t id = t->n_mem++;
    t->mem_key[id] = key;
    t->mem_first[id] = second ? first : 0;
    t->mem_second[id] = second;
    t->mem_form[id] = second ? mem_form_ok(t, first, second) : mem_form_ok(t, key, 0);
    t->map_key[i] = key;
    t->map_id[i] = id;
    return id;
}

/* ---- feature extraction ---- */

typedef struct extract_ctx {
    route_trainer *t;
    float *sum;            /* [dim] */
    float wsum;
    float pmean[ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS], pmax[ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS];
    uint32_t **ids;
    size_t *n_ids, *cap_ids;
    uint32_t count;
    int32_t *words;        /* rows of this example's words */
    size_t n_words, cap_words;
    int32_t *mems;         /* FEATS_MEM: ids of its words and pairs */
    size_t n_mems, cap_mems;
    uint64_t prev;         /* the word before (a pair's first) */
} extract_ctx;

/* Adds n occurrences of word row r, each weighing a, to the sums a text's
 * word features are made of: the weighted word vectors (sum, *wsum) and,
 * per class lexicon, the weighted similarity and its maximum (pmean,
 * pmax). Extraction adds each occurrence; word dropout each kept word. */
static void add_word_sums(const route_trainer *t, int32_t r, float a, float n, float *sum, float *wsum, float *pmean,
                          float *pmax) {
    float an = a * n;
    const float *v = t->emb + (size_t)r * (size_t)t->dim, *sim = t->proto_sim + (size_t)r * (size_t)t->n_proto;
    for (int k = 0; k < t->dim; k++) sum[k] += an * v[k];
    *wsum += an;
    for (int c = 0; c < t->n_proto; c++) {
        pmean[c] += an * sim[c];
        if (a * sim[c] > pmax[c]) pmax[c] = a * sim[c];
    }
}

/* The word features from add_word_sums' sums: the mean word vector
 * (emb[dim]; emb may be sum) and per class lexicon its density and
 * maximum (proto[2 * n_proto]); all 0 for a text without a known word. */
static void word_features(const route_trainer *t, const float *sum, float wsum, const float *pmean, const float *pmax,
                          float *emb, float *proto) {
    for (int k = 0; k < t->dim; k++) emb[k] = wsum > 0 ? sum[k] / (wsum + t->o.shrink_embed) : 0.0f;
    for (int c = 0; c < t->n_proto; c++) {
        proto[2 * c] = wsum > 0 ? pmean[c] / (wsum + t->o.shrink) : 0.0f;
        proto[2 * c + 1] = wsum > 0 ? pmax[c] : 0.0f;
    }
}

static void push_id(extract_ctx *x, uint32_t id) {
    if (*x->n_ids == *x->cap_ids) {
        *x->cap_ids = *x->cap_ids ? *x->cap_ids * 2 : 1 << 16;
        *x->ids = xrealloc(*x->ids, sizeof(uint32_t) * *x->cap_ids);
    }
    (*x->ids)[(*x->n_ids)++] = id;
    x->count++;
}

static void push_i32(int32_t **a, size_t *n, size_t *cap, int32_t v) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *a = xrealloc(*a, sizeof(int32_t) * *cap);
    }
    (*a)[(*n)++] = v;
}

static void extract_word(void *ctx, const char *w, size_t len, const vocab_entry *e, uint64_t h,
                         uint64_t bigram) {
    extract_ctx *x = ctx;
    route_trainer *t = x->t;
    (void)w;
    (void)len;
    if (e && e->row >= 0) {
        add_word_sums(t, e->row, t->vocab.row_weight[e->row], 1.0f, x->sum, &x->wsum, x->pmean, x->pmax);
        push_i32(&x->words, &x->n_words, &x->cap_words, e->row);
    }
    if (t->o.features & FEATS_MEM) {
        push_i32(&x->mems, &x->n_mems, &x->cap_mems, mem_intern(t, h, h, 0));
        if (bigram) push_i32(&x->mems, &x->n_mems, &x->cap_mems, mem_intern(t, bigram, x->prev, h));
        x->prev = h;
    }
    if (!t->o.hash_bits) return;
    if (e && e->row >= 0 && (t->o.features & FEATS_CLUSTER))
        for (int k = 0; k < t->o.cluster_tables; k++)
            push_id(x, t->row_ids[(size_t)e->row * (size_t)t->o.cluster_tables + (size_t)k]);
    uint64_t mask = ((uint64_t)1 << t->o.hash_bits) - 1;
    if (t->o.features & FEATS_UNIGRAM) push_id(x, (uint32_t)(h & mask));
    if ((t->o.features & FEATS_BIGRAM) && bigram) push_id(x, (uint32_t)(bigram & mask));
}

static uint64_t hash_bytes(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Appends the distinct values of words[0..n) to *out, and how often each
 * occurs to *cnt; returns the new length. Example i's words (rows) and
 * its memory ids are kept so. */
static size_t add_distinct(int32_t *words, size_t n, int32_t **out, uint16_t **cnt, size_t len, size_t *cap) {
    if (n) qsort(words, n, sizeof *words, cmp_i32);
    for (size_t k = 0; k < n; k++) {
        if (k && words[k] == words[k - 1]) {
            if ((*cnt)[len - 1] < UINT16_MAX) (*cnt)[len - 1]++;
            continue;
        }
        if (len == *cap) {
            *cap = *cap ? *cap * 2 : 1 << 16;
            *out = xrealloc(*out, sizeof(int32_t) * *cap);
            *cnt = xrealloc(*cnt, sizeof(uint16_t) * *cap);
        }
        (*cnt)[len] = 1;
        (*out)[len++] = words[k];
    }
    return len;
}

/* The hashed-count pseudo-count: shrink words' worth of hashed ids. */
static float prior_h(const route_trainer *t) {
    unsigned f = t->o.features;
    int per_word = (f & FEATS_CLUSTER ? t->o.cluster_tables : 0) + (f & FEATS_UNIGRAM ? 1 : 0) + (f & FEATS_BIGRAM ? 1 : 0);
    return t->o.shrink * (float)per_word;
}

static void extract_all(route_trainer *t) {
    const route_dataset *d = t->d;
    size_t n_ids = 0, cap_ids = 0, n_rows = 0, cap_rows = 0, n_mem = 0, cap_mem = 0;
    int32_t *words = NULL, *mems = NULL;
    size_t cap_words = 0, cap_mems = 0;
    t->nx = FEAT_HAND_N + 2 * t->n_proto;
    t->nd = t->nx + t->dim;
    t->dense = xcalloc((size_t)d->n * (size_t)t->nd, sizeof(float));
    t->sp_off = xcalloc((size_t)d->n + 1, sizeof(uint32_t));
    t->sp_scale = xcalloc((size_t)d->n, sizeof(float));
    t->text_hash = xcalloc((size_t)d->n, sizeof(uint64_t));
    t->row_off = xcalloc((size_t)d->n + 1, sizeof(uint32_t));
    t->mem_off = xcalloc((size_t)d->n + 1, sizeof(uint32_t));
    t->mem_scale = xcalloc((size_t)d->n + 1, sizeof(float));
    float *sum = xcalloc((size_t)t->dim + 1, sizeof(float));
    for (int i = 0; i < d->n; i++) {
        const char *text = d->ex[i].text;
        size_t len = strlen(text);
        if (len > t->o.max_bytes) len = t->o.max_bytes;   /* cut as route_classify does */
        memset(sum, 0, sizeof(float) * (size_t)t->dim);
        extract_ctx x = {t, sum, 0, {0}, {0}, &t->sp_idx, &n_ids, &cap_ids, 0, words, 0, cap_words,
                         mems, 0, cap_mems, 0};
        float *row = t->dense + (size_t)i * (size_t)t->nd;
        feat_state s;
        feat_begin(&s, &t->vocab, extract_word, &x);
        feat_feed(&s, text, len);
        feat_end(&s, row);
        word_features(t, sum, x.wsum, x.pmean, x.pmax, row + t->nx, row + FEAT_HAND_N);
        t->sp_off[i + 1] = (uint32_t)n_ids;
        t->sp_scale[i] = x.count ? 1.0f / sqrtf((float)x.count + prior_h(t)) : 0.0f;
        /* a rewording shares its original's hash: it is held out with it */
        int orig = d->ex[i].aug_of >= 0 ? d->ex[i].aug_of : i;
        t->text_hash[i] = hash_bytes(d->ex[orig].text);
        words = x.words;
        cap_words = x.cap_words;
        n_rows = add_distinct(words, x.n_words, &t->rows, &t->row_cnt, n_rows, &cap_rows);
        t->row_off[i + 1] = (uint32_t)n_rows;
        mems = x.mems;
        cap_mems = x.cap_mems;
        n_mem = add_distinct(mems, x.n_mems, &t->mem_ids, &t->mem_cnt, n_mem, &cap_mem);
        t->mem_off[i + 1] = (uint32_t)n_mem;
        t->mem_scale[i] = 1.0f / ((float)s.words + ROUTE_MEM_PRIOR);
    }
    free(words);
    free(mems);
    free(sum);
}

route_trainer *route_trainer_new(const route_dataset *d, const route_train_opts *o, char **err) {
    route_trainer *t = xcalloc(1, sizeof *t);
    t->d = d;
    t->o = *o;
    if (d->n_labels > ROUTE_MAX_CLASSES * 2) goto too_many;
    for (int l = 0; l < d->n_labels; l++) {
        if (d->label_guard[l]) {
            t->class_of_label[l] = -1;
            continue;
        }
        if (t->n_classes == ROUTE_MAX_CLASSES) goto too_many;
        t->class_names[t->n_classes] = d->labels[l];
        t->class_of_label[l] = t->n_classes++;
    }
    t->n_proto = t->n_classes + ROUTE_GUARD_PROTOS;
    if (o->embeddings && (o->features & (FEATS_EMBED | FEATS_PROTO | FEATS_CLUSTER | FEATS_MIL | FEATS_LEX))) {
        if (load_embeddings(t, o->embeddings, err)) {
            route_trainer_free(t);
            return NULL;
        }
    } else {
        vocab_init(&t->vocab, 1024);
        t->vocab.row_weight = xcalloc(1, sizeof(float));
        t->emb = xcalloc(1, sizeof(float));
    }
    vocab_add_lexicons(&t->vocab);
    build_prototypes(t);
    mil_words(t);
    build_clusters(t);
    extract_all(t);
    return t;
too_many:;
    buf m = BUF_INIT;
    buf_printf(&m, "too many labels (at most %d router classes)", ROUTE_MAX_CLASSES);
    *err = buf_detach(&m);
    route_trainer_free(t);
    return NULL;
}

void route_trainer_free(route_trainer *t) {
    if (!t) return;
    vocab_free(&t->vocab);
    free(t->emb);
    free(t->proto_sim);
    free(t->row_ids);
    free(t->dense);
    free(t->sp_off);
    free(t->sp_idx);
    free(t->sp_scale);
    free(t->text_hash);
    free(t->row_off);
    free(t->rows);
    free(t->row_cnt);
    free(t->mil_inv);
    free(t->mem_key);
    free(t->mem_first);
    free(t->mem_second);
    free(t->mem_form);
    free(t->mem_ok);
    free(t->map_key);
    free(t->map_id);
    free(t->mem_off);
    free(t->mem_ids);
    free(t->mem_cnt);
    free(t->mem_scale);
    free(t);
}

/* ---- SGD for softmax regression ---- */

typedef struct lin {
    int k;            /* outputs */
    float *wd;        /* [nd][k], on standardised dense features */
    float *wh;        /* [H][k] */
    float *b;         /* [k] */
    int sparse;       /* use the hashed features */
    float *u;         /* [dim] or NULL: FEATS_MIL word scorer: adds softplus(u_bias +
                         the max over the words of u . v_w / |v_w|) to output 1 */
    float u_bias;
    float *mw;        /* [n_mem] or NULL: the guard's memory (FEATS_MEM), >= 0, adds
                         the sum over the example's words and pairs to output 1 */
    float l2;         /* on wd */
    int nh;           /* hidden units (0: none): z += v . tanh(b1 + x . w1) */
    float *w1;        /* [nd][nh], rows of inputs the head may not read stay 0 */
    float *b1;        /* [nh] */
    float *v;         /* [nh][k] */
    float *uc;        /* [k][dim] or NULL: the router's soft lexicons (FEATS_LEX) */
    struct word_drop *drop;   /* NULL, or word dropout (o.word_drop) */
    float ladj[ROUTE_MAX_CLASSES + 1];   /* balance 3: log of each class's share, added to
                                            its logit in training only */
    float smooth;     /* label smoothing (o.smooth), the router's head only */
} lin;

static uint64_t rng_next(uint64_t *s) {   /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Fisher-Yates: the order in which an epoch visits the examples. */
static void shuffle(int *order, int n, uint64_t *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next(rng) % (uint64_t)(i + 1)), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

/* Example weights: with balance, every class weighs the same in total,
 * and (balance 2) within a class every source too, so that a big source
 * (6,000 BIG-Bench-Hard rows) cannot make its style the class. */
static void example_weights(const route_trainer *t, const int *idx, const int *y, int n, int k,
                            int balance, float *w) {
    int ns = t->d->n_sources;
    int *cnt = xcalloc((size_t)k * (size_t)ns, sizeof(int));
    int *ccnt = xcalloc((size_t)k, sizeof(int)), *csrc = xcalloc((size_t)k, sizeof(int));
    for (int i = 0; i < n; i++) {
        int s = t->d->ex[idx[i]].source;
        if (cnt[y[i] * ns + s]++ == 0) csrc[y[i]]++;
        ccnt[y[i]]++;
    }
    int present = 0;
    for (int c = 0; c < k; c++) present += ccnt[c] > 0;
    for (int i = 0; i < n; i++) {
        int c = y[i], s = t->d->ex[idx[i]].source;
        if (balance == 0) w[i] = 1.0f;
        else if (balance == 1) w[i] = (float)n / ((float)present * (float)ccnt[c]);
        else if (balance == 2) w[i] = (float)n / ((float)present * (float)csrc[c] * (float)cnt[c * ns + s]);
        else w[i] = 1.0f;   /* 3: logit adjustment instead (logit_adjust) */
    }
    free(cnt);
    free(ccnt);
    free(csrc);
}

/* balance 3, logit adjustment (Menon et al.): every example weighs 1,
 * and in training each class's logit gets the log of its share of the
 * examples. A class with few examples must then win by a margin, and the
 * head learnt is the balanced one, without multiplying the weight of the
 * few examples of a class whose big source is held out (a dozen times
 * each for "reasoning" without BIG-Bench-Hard). */
static void logit_adjust(const int *y, int n, int k, float *ladj) {
    int cnt[ROUTE_MAX_CLASSES + 1] = {0};
    for (int i = 0; i < n; i++) cnt[y[i]]++;
    for (int c = 0; c < k; c++) ladj[c] = cnt[c] ? logf((float)cnt[c] / (float)n) : 0.0f;
}

/* The max over the example's words of u . v_w / |v_w| (0 without words
 * it may score); *arg: the word, -1 if none. */
static float mil_score(const route_trainer *t, const float *u, int i, int32_t *arg) {
    float best = 0;
    *arg = -1;
    for (uint32_t p = t->row_off[i]; p < t->row_off[i + 1]; p++) {
        float inv = t->mil_inv[t->rows[p]];
        if (inv == 0) continue;
        float s = emb_dot(t, t->rows[p], u) * inv;
        if (*arg < 0 || s > best) best = s, *arg = t->rows[p];
    }
    return best;
}

static float softplus(float a) { return a > 20 ? a : log1pf(expf(a)); }

#define CLIP_SD 3.0f   /* named dense features are clipped to this many deviations */

static float clip_sd(float z) { return z < -CLIP_SD ? -CLIP_SD : z > CLIP_SD ? CLIP_SD : z; }

/* ---- word dropout (o.word_drop, the router's head) ----
 *
 * Each time an example is seen, every distinct word of it is left out
 * with probability word_drop, and the features made of its words (the
 * mean word vector, the class-lexicon densities and maxima) are computed
 * from the words kept, as extraction computes them from all. A head that
 * leans on the few words one source always uses (its template) then pays
 * for it in the examples where they are missing. The soft lexicons still
 * pool over every word (leaving words out there too: 81.7% instead of
 * 82.3%, models/README.md). Only training sees it: the model reads all
 * the words. */

/* x minus its projection on the orthonormal directions u[0..nu). */
static void project_out(float *x, const float *u, int nu, int dim) {
    for (int a = 0; a < nu; a++) {
        const float *v = u + (size_t)a * (size_t)dim;
        float dot = 0;
        for (int d = 0; d < dim; d++) dot += x[d] * v[d];
        for (int d = 0; d < dim; d++) x[d] -= dot * v[d];
    }
}

typedef struct word_drop {
    const float *mu, *sd;     /* standardisation of the dense features */
    float *dirs;              /* source-style directions projected out (remove_source_style) */
    int n_dirs;
    int proto;                /* the class-lexicon features are read (FEATS_PROTO) */
    uint64_t rng;
    float *x;                 /* the example's standardised row, recomputed [nd] */
} word_drop;

static word_drop *word_drop_init(const route_trainer *t, word_drop *w, const float *mu, const float *sd,
                                 unsigned feats) {
    w->mu = mu;
    w->sd = sd;
    w->proto = (feats & FEATS_PROTO) != 0;
    w->rng = t->o.seed * 0x2545f4914f6cdd1dull + 0x5851f42d4c957f2dull;
    w->x = xmalloc(sizeof(float) * (size_t)t->nd + 1);
    return w;
}

/* The standardised row of example i (x: with all its words) from a random
 * subset of its words. */
static const float *word_drop_row(const route_trainer *t, word_drop *w, const float *x, int i) {
    int dim = t->dim, nx = t->nx;
    uint32_t b = t->row_off[i], e = t->row_off[i + 1];
    float *emb = w->x + nx, wsum = 0, pmean[ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS] = {0},
          pmax[ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS] = {0}, proto[2 * (ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS)];
    memcpy(w->x, x, sizeof(float) * (size_t)nx);
    memset(emb, 0, sizeof(float) * (size_t)dim);
    uint32_t cut = (uint32_t)(t->o.word_drop * 4294967296.0);
    for (uint32_t p = b; p < e; p++) {
        if ((uint32_t)(rng_next(&w->rng) >> 32) < cut) continue;
        int32_t r = t->rows[p];
        add_word_sums(t, r, t->vocab.row_weight[r], (float)t->row_cnt[p], emb, &wsum, pmean, pmax);
    }
    word_features(t, emb, wsum, pmean, pmax, emb, proto);
    for (int d = 0; d < dim; d++) emb[d] = (emb[d] - w->mu[nx + d]) / w->sd[nx + d];
    project_out(emb, w->dirs, w->n_dirs, dim);
    for (int j = FEAT_HAND_N; j < nx && w->proto; j++) w->x[j] = clip_sd((proto[j - FEAT_HAND_N] - w->mu[j]) / w->sd[j]);
    return w->x;
}

/* ---- router: learnt soft lexicons (FEATS_LEX) ---- */

/* Class c's start: lex_init times the mean of its seeds' unit vectors
 * (0: no start, the words of the first examples decide). */
static float *lex_new(const route_trainer *t, int k) {
    int dim = t->dim;
    float *u = xcalloc((size_t)k * (size_t)dim + 1, sizeof(float));
    float *seeds = xcalloc((size_t)MAX_SEEDS * (size_t)dim + 1, sizeof(float));
    for (int c = 0; c < k && t->o.lex_init != 0; c++) {
        memset(seeds, 0, sizeof(float) * (size_t)MAX_SEEDS * (size_t)dim);
        int ns = class_seeds(t, c, seeds, MAX_SEEDS);
        for (int s = 0; s < ns; s++)
            for (int d = 0; d < dim; d++)
                u[(size_t)c * (size_t)dim + (size_t)d] += t->o.lex_init * seeds[(size_t)s * (size_t)dim + (size_t)d] / (float)ns;
    }
    free(seeds);
    return u;
}

/* emb_dot of row with the directions c0..c0+3 of u ([k][dim]; those past
 * k repeat c0 and are not to be read): each sum is taken in the same
 * order as emb_dot's, so the scores are the same floats, but the four
 * advance together and an add need not wait for the one before it. */
static void emb_dot4(const route_trainer *t, int32_t row, const float *u, int dim, int c0, int k, float *s) {
    const float *v = t->emb + (size_t)row * (size_t)dim, *u0 = u + (size_t)c0 * (size_t)dim;
    const float *u1 = c0 + 1 < k ? u0 + dim : u0, *u2 = c0 + 2 < k ? u0 + 2 * dim : u0,
                *u3 = c0 + 3 < k ? u0 + 3 * dim : u0;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int d = 0; d < dim; d++) {
        a0 += v[d] * u0[d];
        a1 += v[d] * u1[d];
        a2 += v[d] * u2[d];
        a3 += v[d] * u3[d];
    }
    s[0] = a0, s[1] = a1, s[2] = a2, s[3] = a3;
}

/* Per class c, the mean of the lex_top highest scores E_w . u_c over the
 * example's distinct words, added to z[c]; arg[c][..]: the pooled rows. */
static void lex_scores(const route_trainer *t, const lin *m, int i, float *z, int32_t *arg) {
    int k = m->k, top = t->o.lex_top, dim = t->dim;
    float best[ROUTE_LEX_SLOTS];
    for (int j = 0; j < k * ROUTE_LEX_TOP_MAX; j++) best[j] = 0, arg[j] = -1;
    float s[ROUTE_MAX_CLASSES + 3];
    for (uint32_t p = t->row_off[i]; p < t->row_off[i + 1]; p++) {
        for (int c = 0; c < k; c += 4) emb_dot4(t, t->rows[p], m->uc, dim, c, k, s + c);
        for (int c = 0; c < k; c++)
            route_lex_insert(best + c * ROUTE_LEX_TOP_MAX, arg + c * ROUTE_LEX_TOP_MAX, top, s[c], t->rows[p]);
    }
    for (int c = 0; c < k; c++) z[c] += route_lex_mean(best + c * ROUTE_LEX_TOP_MAX, arg + c * ROUTE_LEX_TOP_MAX, top);
}

/* The subgradient step: only the pooled words' vectors move u_c. g is
 * already times the learning rate. */
static void lex_update(const route_trainer *t, lin *m, const int32_t *arg, const float *g, float lr) {
    float shrink = 1.0f - lr * t->o.l2_lex;
    for (int c = 0; c < m->k; c++) {
        float *u = m->uc + (size_t)c * (size_t)t->dim;
        const int32_t *a = arg + c * ROUTE_LEX_TOP_MAX;
        int n = 0;
        while (n < t->o.lex_top && a[n] >= 0) n++;
        for (int d = 0; d < t->dim; d++) u[d] *= shrink;
        for (int q = 0; q < n; q++) {
            const float *v = t->emb + (size_t)a[q] * (size_t)t->dim;
            for (int d = 0; d < t->dim; d++) u[d] -= g[c] / (float)n * v[d];
        }
    }
}

/* Folds the soft lexicons into the model: each word's score per class. */
static void fold_lex(const route_trainer *t, route_model *m, const lin *h) {
    m->lex_top = t->o.lex_top;
    m->class_word = xcalloc((size_t)t->vocab.n_rows * (size_t)h->k + 1, sizeof(float));
    for (int32_t r = 0; r < t->vocab.n_rows; r++)
        for (int c = 0; c < h->k; c++)
            m->class_word[(size_t)r * (size_t)h->k + (size_t)c] = emb_dot(t, r, h->uc + (size_t)c * (size_t)t->dim);
}

/* hid: the hidden units' activations, for the update; *slope: the word
 * scorer's derivative (softplus'), 0 without it; larg: the words pooled by
 * the soft lexicons. */
static void lin_scores(const route_trainer *t, const lin *m, const float *x, int i, float *z, int32_t *arg,
                       float *hid, float *slope, int32_t *larg) {
    int k = m->k;
    memcpy(z, m->b, sizeof(float) * (size_t)k);
    if (m->nh) {
        memcpy(hid, m->b1, sizeof(float) * (size_t)m->nh);
        for (int j = 0; j < t->nd; j++)
            if (x[j] != 0)
                for (int h = 0; h < m->nh; h++) hid[h] += x[j] * m->w1[(size_t)j * (size_t)m->nh + (size_t)h];
        for (int h = 0; h < m->nh; h++) {
            hid[h] = tanhf(hid[h]);
            for (int c = 0; c < k; c++) z[c] += hid[h] * m->v[h * k + c];
        }
    }
    *slope = 0;
    *arg = -1;
    if (m->u) {
        float a = m->u_bias + mil_score(t, m->u, i, arg);
        if (*arg >= 0) {   /* a text without a word it may score: 0, as at run time */
            z[1] += softplus(a);
            *slope = 1.0f / (1.0f + expf(-a));
        }
    }
    if (m->uc) lex_scores(t, m, i, z, larg);
    for (int j = 0; j < t->nd; j++) {
        float v = x[j];
        if (v != 0)
            for (int c = 0; c < k; c++) z[c] += v * m->wd[j * k + c];
    }
    if (!m->sparse) return;
    float sc = t->sp_scale[i];
    for (uint32_t p = t->sp_off[i]; p < t->sp_off[i + 1]; p++)
        for (int c = 0; c < k; c++) z[c] += sc * m->wh[(size_t)t->sp_idx[p] * (size_t)k + c];
}

/* One step of the hidden layer for output gradient g (already times the
 * learning rate). */
static void backprop_hidden(const route_trainer *t, lin *m, const float *x, const float *hid, const float *g,
                            float shrink, const int *sign) {
    int k = m->k, nh = m->nh;
    float dh[ROUTE_MAX_HIDDEN];
    for (int h = 0; h < nh; h++) {
        float *vh = m->v + h * k, s = 0;
        for (int c = 0; c < k; c++) {
            s += g[c] * vh[c];
            vh[c] = vh[c] * shrink - g[c] * hid[h];
        }
        dh[h] = s * (1.0f - hid[h] * hid[h]);
        m->b1[h] -= dh[h];
    }
    for (int j = 0; j < t->nd; j++) {
        if (x[j] == 0 || (j < t->nx && sign[j] == -2)) continue;   /* decay only where the input moved */
        float *w = m->w1 + (size_t)j * (size_t)nh;
        for (int h = 0; h < nh; h++) w[h] = w[h] * shrink - dh[h] * x[j];
    }
}

static void lin_free(lin *m);

/* Weight averaging over the second half of the epochs (o.average, the
 * router's head: the one with a hidden layer): the weights at the end of
 * one epoch depend on the order of its last examples; their mean over
 * several epochs depends much less, and so does the class a model gives a
 * whole unseen task. The hidden units are the same units from epoch to
 * epoch, so their weights can be averaged too. */
static lin *lin_zero_like(const route_trainer *t, const lin *m) {
    lin *a = xcalloc(1, sizeof *a);
    *a = *m;
    a->wd = xcalloc((size_t)t->nd * (size_t)m->k, sizeof(float));
    a->b = xcalloc((size_t)m->k, sizeof(float));
    a->w1 = xcalloc((size_t)t->nd * (size_t)m->nh, sizeof(float));
    a->b1 = xcalloc((size_t)m->nh, sizeof(float));
    a->v = xcalloc((size_t)m->nh * (size_t)m->k, sizeof(float));
    a->wh = NULL;
    a->u = NULL;
    a->mw = NULL;
    a->uc = m->uc ? xcalloc((size_t)m->k * (size_t)t->dim, sizeof(float)) : NULL;
    return a;
}

static void add_to(float *acc, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}

static void lin_accumulate(const route_trainer *t, const lin *m, lin *a, int *n_avg) {
    add_to(a->wd, m->wd, (size_t)t->nd * (size_t)m->k);
    add_to(a->b, m->b, (size_t)m->k);
    add_to(a->w1, m->w1, (size_t)t->nd * (size_t)m->nh);
    add_to(a->b1, m->b1, (size_t)m->nh);
    add_to(a->v, m->v, (size_t)m->nh * (size_t)m->k);
    if (m->uc) add_to(a->uc, m->uc, (size_t)m->k * (size_t)t->dim);
    (*n_avg)++;
}

static void copy_mean(float *to, const float *sum, size_t n, int count) {
    for (size_t i = 0; i < n; i++) to[i] = sum[i] / (float)count;
}

static void lin_take_average(const route_trainer *t, lin *m, const lin *a, int n_avg) {
    if (!n_avg) return;
    copy_mean(m->wd, a->wd, (size_t)t->nd * (size_t)m->k, n_avg);
    copy_mean(m->b, a->b, (size_t)m->k, n_avg);
    copy_mean(m->w1, a->w1, (size_t)t->nd * (size_t)m->nh, n_avg);
    copy_mean(m->b1, a->b1, (size_t)m->nh, n_avg);
    copy_mean(m->v, a->v, (size_t)m->nh * (size_t)m->k, n_avg);
    if (m->uc) copy_mean(m->uc, a->uc, (size_t)m->k * (size_t)t->dim, n_avg);
}

/* One step of the word scorer for its output's gradient g (times the
 * learning rate, the example's weight and softplus'): only the text's
 * highest-scoring word moves u. L2 pulls u towards 0, towards the same
 * score for every word: a word that no training text needed stays at it. */
static void mil_step(const route_trainer *t, lin *m, int32_t arg, float g, float lr) {
    float shrink = 1.0f - lr * t->o.l2_mil;
    const float *v = arg >= 0 ? t->emb + (size_t)arg * (size_t)t->dim : NULL;
    float inv = arg >= 0 ? t->mil_inv[arg] : 0.0f;
    for (int d = 0; d < t->dim; d++) m->u[d] = m->u[d] * shrink - (v ? g * inv * v[d] : 0.0f);
    m->u_bias -= g;
}

/* Trains m on examples idx with labels y; xs are the standardised dense
 * rows [n][nd] (in idx order). Deterministic for t->o.seed. */
static void sgd(const route_trainer *t, lin *m, const int *idx, const int *y, const float *w, int n,
                const float *xs, const int *sign, int epochs) {
    int k = m->k, *order = xmalloc(sizeof(int) * (size_t)(n + 1)), n_avg = 0;
    float z[ROUTE_MAX_CLASSES + 1], g[ROUTE_MAX_CLASSES + 1];
    uint64_t rng = t->o.seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    lin *avg = t->o.average && m->nh ? lin_zero_like(t, m) : NULL;
    for (int i = 0; i < n; i++) order[i] = i;
    for (int ep = 0; ep < epochs; ep++) {
        shuffle(order, n, &rng);
        float lr = t->o.lr / sqrtf(1.0f + (float)ep);
        float shrink = 1.0f - lr * m->l2;
        for (int r = 0; r < n; r++) {
            int a = order[r], ex = idx[a];
            const float *x = xs + (size_t)a * (size_t)t->nd;
            if (m->drop) x = word_drop_row(t, m->drop, x, ex);
            int32_t arg;
            float hid[ROUTE_MAX_HIDDEN], slope;
            int32_t larg[ROUTE_LEX_SLOTS];
            lin_scores(t, m, x, ex, z, &arg, hid, &slope, larg);
            for (int c = 0; c < k; c++) z[c] += m->ladj[c];
            float mx = z[0], sum = 0;
            for (int c = 1; c < k; c++) mx = z[c] > mx ? z[c] : mx;
            for (int c = 0; c < k; c++) sum += z[c] = expf(z[c] - mx);
            for (int c = 0; c < k; c++)
                g[c] = lr * w[a] * (z[c] / sum - (1.0f - m->smooth) * (c == y[a]) - m->smooth / (float)k);
            for (int c = 0; c < k; c++) m->b[c] -= g[c];
            if (m->nh) backprop_hidden(t, m, x, hid, g, shrink, sign);
            if (m->uc) lex_update(t, m, larg, g, lr);
            for (int j = 0; j < t->nd; j++) {
                float *wj = m->wd + j * k;
                for (int c = 0; c < k; c++) wj[c] = wj[c] * shrink - g[c] * x[j];
                if (j < t->nx && sign[j] != -1)
                    for (int c = 0; c < k; c++)
                        if (c != sign[j] || wj[c] < 0) wj[c] = 0;
            }
            if (m->u) mil_step(t, m, arg, g[1] * slope, lr);
            float sc = t->sp_scale[ex], lh = lr * t->o.l2_hash;
            for (uint32_t p = t->sp_off[ex]; m->sparse && p < t->sp_off[ex + 1]; p++) {
                float *wh = m->wh + (size_t)t->sp_idx[p] * (size_t)k;
                for (int c = 0; c < k; c++) wh[c] -= g[c] * sc + lh * wh[c];
            }
        }
        if (avg && 2 * (ep + 1) > epochs) lin_accumulate(t, m, avg, &n_avg);
    }
    if (avg) {
        lin_take_average(t, m, avg, n_avg);
        lin_free(avg);
        free(avg);
    }
    free(order);
}

/* The examples' words and pairs the memory may learn (t->mem_ok), each
 * with its share of the example's mean, count / (words + ROUTE_MEM_PRIOR):
 * most words of the benign rows are in no harmful row, and training
 * skips them. */
typedef struct mem_rows {
    uint32_t *off;   /* [n+1], in idx order */
    int32_t *id;
    float *x;
} mem_rows;

static mem_rows mem_rows_of(const route_trainer *t, const int *idx, int n) {
    mem_rows r = {xmalloc(sizeof(uint32_t) * ((size_t)n + 1)), NULL, NULL};
    size_t len = 0, cap = 0;
    r.off[0] = 0;
    for (int a = 0; a < n; a++) {
        int ex = idx[a];
        for (uint32_t p = t->mem_off[ex]; p < t->mem_off[ex + 1]; p++) {
            if (!t->mem_ok[t->mem_ids[p]]) continue;
            if (len == cap) {
                cap = cap ? 2 * cap : 4096;
                r.id = xrealloc(r.id, sizeof(int32_t) * cap);
                r.x = xrealloc(r.x, sizeof(float) * cap);
            }
            r.id[len] = t->mem_ids[p];
            r.x[len++] = (float)t->mem_cnt[p] * t->mem_scale[ex];
        }
        r.off[a + 1] = (uint32_t)len;
    }
    return r;
}

/* The memory's raise of example a's guard logit, as the scanner sums it
 * at run time. */
static float mem_sum(const mem_rows *r, const float *mw, int a) {
    float s = 0;
    for (uint32_t p = r->off[a]; p < r->off[a + 1]; p++) s += mw[r->id[p]] * r->x[p];
    return s;
}

/* One step of the memory for the guard's gradient g (times the learning
 * rate and the example's weight): each word and pair of the example it
 * may learn moves by its share of the mean (mem_lr times faster than the
 * head: a mean over a dozen words moves each word little), then shrinks
 * (L2, only where the example moved it) and stays >= 0
 * (route_mem_update). */
static void mem_step(const route_trainer *t, const mem_rows *r, float *mw, int a, float g, float lr) {
    float shrink = 1.0f - lr * t->o.mem_lr * t->o.l2_mem, step = g * t->o.mem_lr;
    for (uint32_t p = r->off[a]; p < r->off[a + 1]; p++)
        mw[r->id[p]] = route_mem_update(mw[r->id[p]], step * r->x[p], shrink);
}

/* The memory, trained after the head and on top of it (the head's
 * weights stay as they are): a text without a learnt word or pair keeps
 * the head's score, and the memory learns what the head misses, the
 * harmful rows it scores low, while the benign rows that share their
 * words hold those words down. Trained with the head instead, the memory
 * took over the rows the lexicons had caught and the head's weights fell:
 * a harmful source held out, which shares few words with the others, lost
 * a tenth of its recall (models/README.md). */
static void mem_fit(const route_trainer *t, lin *m, const int *idx, const int *y, const float *w, int n,
                    const float *xs, int epochs) {
    float *base = xmalloc(sizeof(float) * (size_t)n + 1), *mw = m->mw;
    int *order = xmalloc(sizeof(int) * (size_t)n + 1);
    uint64_t rng = t->o.seed * 0x2545f4914f6cdd1dull + 0x9e3779b97f4a7c15ull;
    mem_rows rows = mem_rows_of(t, idx, n);
    m->mw = NULL;
    for (int a = 0; a < n; a++) {
        float z[2], hid[ROUTE_MAX_HIDDEN], slope;
        int32_t arg, larg[ROUTE_LEX_SLOTS];
        lin_scores(t, m, xs + (size_t)a * (size_t)t->nd, idx[a], z, &arg, hid, &slope, larg);
        base[a] = z[1] - z[0];
        order[a] = a;
    }
    m->mw = mw;
    for (int ep = 0; ep < epochs; ep++) {
        shuffle(order, n, &rng);
        float lr = t->o.lr / sqrtf(1.0f + (float)ep);
        for (int r = 0; r < n; r++) {
            int a = order[r];
            if (rows.off[a] == rows.off[a + 1]) continue;
            float p = 1.0f / (1.0f + expf(-(base[a] + mem_sum(&rows, mw, a))));
            mem_step(t, &rows, mw, a, lr * w[a] * (p - (float)(y[a] == 1)), lr);
        }
    }
    free(rows.off);
    free(rows.id);
    free(rows.x);
    free(order);
    free(base);
}

/* Standardisation statistics of the dense features over examples idx. */
static void dense_stats(const route_trainer *t, const int *idx, int n, float *mu, float *sd) {
    for (int j = 0; j < t->nd; j++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < n; i++) {
            double v = t->dense[(size_t)idx[i] * (size_t)t->nd + (size_t)j];
            s += v;
            s2 += v * v;
        }
        double mean = n ? s / n : 0, var = n ? s2 / n - mean * mean : 0;
        mu[j] = (float)mean;
        sd[j] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
    }
}

#define MAX_STYLE_DIRS 64

/* Gram-Schmidt: makes u[nu] orthogonal to u[0..nu) and of unit length;
 * returns 1, or 0 if nothing of it is left. */
static int orthonormalise(float *u, int nu, int dim) {
    float *v = u + (size_t)nu * (size_t)dim;
    for (int a = 0; a < nu; a++) {
        const float *w = u + (size_t)a * (size_t)dim;
        float dot = 0;
        for (int d = 0; d < dim; d++) dot += v[d] * w[d];
        for (int d = 0; d < dim; d++) v[d] -= dot * w[d];
    }
    double nn = 0;
    for (int d = 0; d < dim; d++) nn += (double)v[d] * v[d];
    if (nn < 1e-6) return 0;
    for (int d = 0; d < dim; d++) v[d] /= (float)sqrt(nn);
    return 1;
}

/* Projects the mean-vector part of the standardised rows xs away from the
 * directions in which sources of one class differ from each other: what
 * tells GSM8K from MATH-500 is their style, not their domain, and a head
 * that cannot see it must learn what the sources of a class share. The
 * weights learnt then lie in the complement, so the model needs no
 * projection at classification time. Returns the directions (*n_dirs,
 * orthonormal; the caller frees them): word dropout projects them out of
 * the rows it recomputes. */
static float *remove_source_style(const route_trainer *t, const int *idx, const int *y, int n, int k, float *xs,
                                  int *n_dirs) {
    int ns = t->d->n_sources, dim = t->dim, nd = t->nd, nx = t->nx, nu = 0;
    double *mean = xcalloc((size_t)k * (size_t)ns * (size_t)dim + 1, sizeof(double));
    int *cnt = xcalloc((size_t)k * (size_t)ns + 1, sizeof(int));
    float *u = xcalloc((size_t)MAX_STYLE_DIRS * (size_t)dim + 1, sizeof(float));
    double *cm = xmalloc(sizeof(double) * (size_t)dim + 1);
    for (int i = 0; i < n; i++) {
        int cs = y[i] * ns + t->d->ex[idx[i]].source;
        cnt[cs]++;
        for (int d = 0; d < dim; d++) mean[(size_t)cs * (size_t)dim + (size_t)d] += xs[(size_t)i * (size_t)nd + (size_t)(nx + d)];
    }
    for (int c = 0; c < k; c++) {
        int m = 0;
        memset(cm, 0, sizeof(double) * (size_t)dim);
        for (int s = 0; s < ns; s++)
            if (cnt[c * ns + s] >= 20) {
                m++;
                for (int d = 0; d < dim; d++) cm[d] += mean[(size_t)(c * ns + s) * (size_t)dim + (size_t)d] / cnt[c * ns + s];
            }
        for (int s = 0; s < ns && m > 1; s++) {
            if (cnt[c * ns + s] < 20 || nu == MAX_STYLE_DIRS) continue;
            float *v = u + (size_t)nu * (size_t)dim;
            for (int d = 0; d < dim; d++) v[d] = (float)(mean[(size_t)(c * ns + s) * (size_t)dim + (size_t)d] / cnt[c * ns + s] - cm[d] / m);
            nu += orthonormalise(u, nu, dim);
        }
    }
    for (int i = 0; i < n; i++) project_out(xs + (size_t)i * (size_t)nd + (size_t)nx, u, nu, dim);
    free(mean);
    free(cnt);
    free(cm);
    *n_dirs = nu;
    return u;
}

/* Small random input weights (seeded), zero output weights: the hidden
 * layer starts as no change to the linear head. Inputs the linear head
 * may not read (sign -2, the style features) stay unread. */
static void init_hidden(const route_trainer *t, lin *m, const int *sign) {
    uint64_t rng = t->o.seed * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
    float a = 1.0f / sqrtf((float)t->nd);
    m->w1 = xcalloc((size_t)t->nd * (size_t)m->nh + 1, sizeof(float));
    m->b1 = xcalloc((size_t)m->nh + 1, sizeof(float));
    m->v = xcalloc((size_t)m->nh * (size_t)m->k + 1, sizeof(float));
    for (int j = 0; j < t->nd; j++)
        for (int h = 0; h < m->nh; h++) {
            float r = rng_unit(&rng) * a;
            m->w1[(size_t)j * (size_t)m->nh + (size_t)h] = j < t->nx && sign[j] == -2 ? 0.0f : r;
        }
}

/* Trains one softmax head; returns it (caller frees the arrays). sign[j]:
 * the only output dense feature j may raise (-1: any). nh: hidden units
 * (0: linear); unstyle: see remove_source_style. */
static lin train_head(const route_trainer *t, const int *idx, const int *y, int n, int k,
                      const float *mu, const float *sd, const int *sign, unsigned feats, float l2,
                      int balance, int nh, int unstyle, int epochs) {
    lin m = {.k = k,
             .wd = xcalloc((size_t)t->nd * (size_t)k, sizeof(float)),
             .wh = xcalloc(((size_t)1 << t->o.hash_bits) * (size_t)k + 1, sizeof(float)),
             .b = xcalloc((size_t)k, sizeof(float)),
             .sparse = (feats & (FEATS_UNIGRAM | FEATS_BIGRAM | FEATS_CLUSTER)) != 0,
             .u = feats & FEATS_MIL ? xcalloc((size_t)t->dim + 1, sizeof(float)) : NULL,
             .mw = feats & FEATS_MEM ? xcalloc((size_t)t->n_mem + 1, sizeof(float)) : NULL,
             .l2 = l2,
             .nh = nh};
    if (nh) init_hidden(t, &m, sign);
    if (feats & FEATS_LEX) m.uc = lex_new(t, k);
    float *xs = xmalloc(sizeof(float) * (size_t)n * (size_t)t->nd + 1);
    float *w = xmalloc(sizeof(float) * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < t->nd; j++) {
            float v = t->dense[(size_t)idx[i] * (size_t)t->nd + (size_t)j];
            unsigned group = j < FEAT_HAND_N ? FEATS_HAND : j < t->nx ? FEATS_PROTO : FEATS_EMBED;
            float z = (v - mu[j]) / sd[j];
            if (j < t->nx) z = clip_sd(z);
            int on = (feats & group) != 0;
            xs[(size_t)i * (size_t)t->nd + (size_t)j] = on ? z : 0.0f;
        }
    word_drop drop = {0};
    if (unstyle && (feats & FEATS_EMBED)) drop.dirs = remove_source_style(t, idx, y, n, k, xs, &drop.n_dirs);
    if (nh && t->o.word_drop > 0 && (feats & FEATS_EMBED)) m.drop = word_drop_init(t, &drop, mu, sd, feats);
    if (nh) m.smooth = t->o.smooth;
    example_weights(t, idx, y, n, k, balance, w);
    if (balance == 3) logit_adjust(y, n, k, m.ladj);
    sgd(t, &m, idx, y, w, n, xs, sign, epochs);
    if (m.mw) mem_fit(t, &m, idx, y, w, n, xs, epochs);
    free(drop.dirs);
    free(drop.x);
    free(xs);
    free(w);
    return m;
}

static void lin_free(lin *m) {
    free(m->uc);
    free(m->w1);
    free(m->b1);
    free(m->v);
    free(m->u);
    free(m->mw);
    free(m->wd);
    free(m->wh);
    free(m->b);
}

/* Writes head output c (minus output c0 if c0 >= 0) into model output o,
 * undoing the standardisation and projecting the embedding weights onto
 * every vocabulary row. */
static void fold(const route_trainer *t, route_model *m, const lin *h, int c, int c0, int o,
                 const float *mu, const float *sd) {
    int k = h->k, no = m->n_out;
#define W(arr, j) ((arr)[(size_t)(j) * (size_t)k + (size_t)c] - (c0 >= 0 ? (arr)[(size_t)(j) * (size_t)k + (size_t)c0] : 0.0f))
    float bias = W(h->b, 0);
    float *we = xcalloc((size_t)t->dim + 1, sizeof(float));
    for (int j = 0; j < t->nd; j++) {
        float wj = W(h->wd, j) / sd[j];
        bias -= wj * mu[j];
        if (j < t->nx) m->hand_w[j * no + o] = wj;
        else we[j - t->nx] = wj;
    }
    m->bias[o] = bias;
    for (int32_t r = 0; r < t->vocab.n_rows; r++) m->proj[(size_t)r * (size_t)no + (size_t)o] = emb_dot(t, r, we);
    if (m->hash_bits)
        for (size_t b = 0; b < (size_t)1 << m->hash_bits; b++) m->hash_w[b * (size_t)no + (size_t)o] = W(h->wh, b);
#undef W
    free(we);
}

/* The model's hidden-layer arrays, zeroed, for nh units. */
static void alloc_hidden(const route_trainer *t, route_model *m, int nh) {
    m->n_hidden = nh;
    m->hid_w = xcalloc((size_t)t->nx * (size_t)nh + 1, sizeof(float));
    m->hid_v = xcalloc((size_t)nh * (size_t)m->n_out + 1, sizeof(float));
    m->hid_proj = xcalloc((size_t)t->vocab.n_rows * (size_t)nh + 1, sizeof(float));
}

/* Writes the router head's hidden layer into the model, undoing the
 * standardisation and projecting W1's embedding rows onto every
 * vocabulary row, as fold does for the linear weights. */
static void fold_hidden(const route_trainer *t, route_model *m, const lin *h, const float *mu, const float *sd) {
    int nh = h->nh, no = m->n_out, nx = t->nx;
    float *we = xcalloc((size_t)t->dim * (size_t)nh + 1, sizeof(float));
    for (int u = 0; u < nh; u++) {
        float bias = h->b1[u];
        for (int j = 0; j < t->nd; j++) {
            float wj = h->w1[(size_t)j * (size_t)nh + (size_t)u] / sd[j];
            bias -= wj * mu[j];
            if (j < nx) m->hid_w[j * nh + u] = wj;
            else we[(size_t)(j - nx) * (size_t)nh + (size_t)u] = wj;
        }
        m->hid_b[u] = bias;
        for (int c = 0; c < h->k; c++) m->hid_v[u * no + c] = h->v[u * h->k + c];
    }
    for (int32_t r = 0; r < t->vocab.n_rows; r++) {
        const float *v = t->emb + (size_t)r * (size_t)t->dim;
        float *p = m->hid_proj + (size_t)r * (size_t)nh;
        for (int d = 0; d < t->dim; d++)
            for (int u = 0; u < nh; u++) p[u] += v[d] * we[(size_t)d * (size_t)nh + (size_t)u];
    }
    free(we);
}

/* The word scorer's score of every vocabulary row, softplus included (it
 * is monotone, so the max over a text's words commutes with it); 0 for
 * the words it may not score. */
static void fold_mil(const route_trainer *t, route_model *m, const lin *g) {
    m->guard_word = xcalloc((size_t)t->vocab.n_rows + 1, sizeof(float));
    for (int32_t w = 0; w < t->vocab.n_rows; w++)
        if (t->mil_inv[w] != 0) m->guard_word[w] = softplus(g->u_bias + emb_dot(t, w, g->u) * t->mil_inv[w]);
}

/* The words and pairs the guard may learn in this fit (t->mem_ok): no
 * word of form or style (mem_form) and seen in at least mem_min harmful
 * rows (rewordings not counted): a word of one or two harmful texts is
 * that text's, not a sign of harm. */
static void mem_select(route_trainer *t, const int *gidx, const int *gy, int gn) {
    int32_t *rows = xcalloc((size_t)t->n_mem + 1, sizeof(int32_t));
    for (int i = 0; i < gn; i++) {
        int ex = gidx[i];
        if (!gy[i] || t->d->ex[ex].aug_of >= 0) continue;
        for (uint32_t p = t->mem_off[ex]; p < t->mem_off[ex + 1]; p++) rows[t->mem_ids[p]]++;
    }
    free(t->mem_ok);
    t->mem_ok = xmalloc((size_t)t->n_mem + 1);
    for (int32_t id = 0; id < t->n_mem; id++) t->mem_ok[id] = t->mem_form[id] && rows[id] >= t->o.mem_min;
    free(rows);
}

/* Writes the memory into the model's vocabulary, in the high bits of each
 * word's or pair's flags; a pair's words are marked so that the scanner
 * looks the pair up. Weights below half a unit are left out. */
static void fold_mem(const route_trainer *t, route_model *m, const float *mw) {
    for (int32_t id = 0; id < t->n_mem; id++) {
        float q = mw[id] * ROUTE_MEM_SCALE + 0.5f;
        if (!(q >= 1)) continue;
        uint32_t v = q >= (float)LEX_MEM_MAX ? LEX_MEM_MAX : (uint32_t)q;
        vocab_put(&m->vocab, t->mem_key[id], -1, v << LEX_MEM_SHIFT);
        if (!t->mem_second[id]) continue;
        vocab_put(&m->vocab, t->mem_first[id], -1, LEX_PAIR_START);
        vocab_put(&m->vocab, t->mem_second[id], -1, LEX_PAIR);
    }
}

/* The vocabulary is copied into the model as it is: every GloVe word keeps
 * its row (30k words x 5 outputs of float is under 1 MB). */
static void copy_vocab(const route_trainer *t, route_model *m) {
    vocab_init(&m->vocab, t->vocab.n);
    for (uint32_t i = 0; i <= t->vocab.mask; i++)
        if (t->vocab.slots[i].key) vocab_put(&m->vocab, t->vocab.slots[i].key, t->vocab.slots[i].row, t->vocab.slots[i].flags);
    m->vocab.n_rows = t->vocab.n_rows;
    m->vocab.row_weight = xmalloc(sizeof(float) * ((size_t)t->vocab.n_rows + 1));
    memcpy(m->vocab.row_weight, t->vocab.row_weight, sizeof(float) * (size_t)t->vocab.n_rows);
}

/* Maps feat_hand_sign to outputs: a router class of that name, or the
 * guard's unsafe output; -1 when the label set has no such class. */
static void sign_classes(const route_trainer *t, int *rsign, int *gsign) {
    for (int c = 0; c < t->n_proto; c++) {
        int router = c < t->n_classes;
        rsign[FEAT_HAND_N + 2 * c] = rsign[FEAT_HAND_N + 2 * c + 1] = router ? c : -2;
        gsign[FEAT_HAND_N + 2 * c] = gsign[FEAT_HAND_N + 2 * c + 1] = router ? -2 : 1;
    }
    for (int j = 0; j < FEAT_HAND_N; j++) {
        const char *c = feat_hand_sign[j];
        rsign[j] = gsign[j] = t->o.features & FEATS_STYLE ? -1 : -2;
        if (c && strcmp(c, "unsafe") == 0) gsign[j] = 1;
        if (c && strcmp(c, "safe") == 0) gsign[j] = 0;
        for (int k = 0; c && k < t->n_classes; k++)
            if (strcmp(t->class_names[k], c) == 0) rsign[j] = k;
    }
}

route_model *route_trainer_fit(route_trainer *t, const unsigned char *mask, char **err) {
    const route_dataset *d = t->d;
    int *idx = xmalloc(sizeof(int) * ((size_t)d->n + 1)), *y = xmalloc(sizeof(int) * ((size_t)d->n + 1));
    int *gidx = xmalloc(sizeof(int) * ((size_t)d->n + 1)), *gy = xmalloc(sizeof(int) * ((size_t)d->n + 1));
    int n = 0, gn = 0, pos = 0;
    for (int i = 0; i < d->n; i++) {
        if (mask && !mask[i]) continue;
        int c = t->class_of_label[d->ex[i].label];
        gidx[gn] = i;
        gy[gn++] = c < 0;
        pos += c < 0;
        if (c >= 0 && d->ex[i].aug_of < 0) {   /* rewordings train the guard only */
            idx[n] = i;
            y[n++] = c;
        }
    }
    route_model *m = NULL;
    if (n == 0 || t->n_classes == 0) {
        buf b = BUF_INIT;
        buf_puts(&b, "no examples of a router class to train on");
        *err = buf_detach(&b);
    } else {
        float *mu = xmalloc(sizeof(float) * (size_t)t->nd), *sd = xmalloc(sizeof(float) * (size_t)t->nd);
        unsigned feats = t->o.features;
        if (!t->vocab.n_rows) feats &= ~(unsigned)(FEATS_EMBED | FEATS_PROTO | FEATS_CLUSTER | FEATS_MIL | FEATS_LEX);
        uint32_t bits = feats & (FEATS_UNIGRAM | FEATS_BIGRAM | FEATS_CLUSTER) ? t->o.hash_bits : 0;
        m = route_model_new(t->n_classes, t->class_names, feats, bits, (uint32_t)t->vocab.n_rows);
        m->max_bytes = t->o.max_bytes;
        m->prior_w = t->o.shrink;
        m->prior_e = t->o.shrink_embed;
        m->prior_h = prior_h(t);
        copy_vocab(t, m);
        dense_stats(t, gidx, gn, mu, sd);
        for (int j = 0; j < t->nx; j++) {
            m->hand_mean[j] = mu[j];
            m->hand_lo[j] = mu[j] - CLIP_SD * sd[j];
            m->hand_hi[j] = mu[j] + CLIP_SD * sd[j];
        }
        memcpy(m->proto_sim, t->proto_sim, sizeof(float) * (size_t)t->vocab.n_rows * (size_t)t->n_proto);
        if (feats & FEATS_CLUSTER) {
            m->n_tables = (uint32_t)t->o.cluster_tables;
            m->row_ids = xmalloc(sizeof(uint32_t) * (size_t)t->vocab.n_rows * m->n_tables + 1);
            memcpy(m->row_ids, t->row_ids, sizeof(uint32_t) * (size_t)t->vocab.n_rows * m->n_tables);
        }
        int rsign[ROUTE_NX_MAX], gsign[ROUTE_NX_MAX];
        sign_classes(t, rsign, gsign);
        unsigned rfeats = feats & ~(unsigned)(FEATS_MIL | FEATS_MEM) & ~t->o.router_skip;
        int nh = rfeats & FEATS_HIDDEN ? t->o.hidden : 0;
        if (nh) alloc_hidden(t, m, nh);
        else m->features &= ~(unsigned)FEATS_HIDDEN;
        lin r = train_head(t, idx, y, n, t->n_classes, mu, sd, rsign, rfeats, t->o.l2,
                           t->o.balance, nh, t->o.unstyle, t->o.epochs);
        for (int c = 0; c < t->n_classes; c++) fold(t, m, &r, c, -1, c, mu, sd);
        if (nh) fold_hidden(t, m, &r, mu, sd);
        if (r.uc) fold_lex(t, m, &r);
        else m->features &= ~(unsigned)FEATS_LEX;
        lin_free(&r);
        if (pos > 0 && pos < gn) {
            /* with FEATS_MIL the guard reads the named features and its
             * word scores only: the mean vector carries a source's style */
            unsigned gfeats = feats & FEATS_MIL ? feats & (FEATS_HAND | FEATS_PROTO | FEATS_STYLE | FEATS_MIL) : feats;
            gfeats &= ~t->o.guard_skip & ~(unsigned)FEATS_LEX;   /* the router's */
            if (gfeats & FEATS_MEM) mem_select(t, gidx, gy, gn);
            lin g = train_head(t, gidx, gy, gn, 2, mu, sd, gsign, gfeats, t->o.l2_guard, t->o.guard_balance, 0, 0,
                               t->o.guard_epochs);
            fold(t, m, &g, 1, 0, t->n_classes, mu, sd);
            if (g.u) fold_mil(t, m, &g);
            if (g.mw) fold_mem(t, m, g.mw);
            m->has_guard = 1;
            lin_free(&g);
        }
        free(mu);
        free(sd);
    }
    if (m) route_model_prepare(m);
    free(idx);
    free(y);
    free(gidx);
    free(gy);
    return m;
}

/* ---- leave-one-source-out evaluation ---- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Expected calibration error over 10 confidence bins. */
static float ece_of(const float *logits, const int *truth, int n, int k, float temp) {
    double conf[10] = {0}, acc[10] = {0};
    int cnt[10] = {0};
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * (size_t)k;
        int best = 0;
        double sum = 0;
        for (int c = 1; c < k; c++) best = z[c] > z[best] ? c : best;
        for (int c = 0; c < k; c++) sum += exp((z[c] - z[best]) / temp);
        double p = 1.0 / sum;
        int b = (int)(p * 10);
        b = b > 9 ? 9 : b;
        conf[b] += p;
        acc[b] += best == truth[i];
        cnt[b]++;
    }
    double e = 0;
    for (int b = 0; b < 10; b++) e += fabs(acc[b] - conf[b]);
    return n ? (float)(e / n) : 0.0f;
}

/* Negative log-likelihood at temperature temp. */
static double nll_of(const float *logits, const int *truth, int n, int k, float temp) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * (size_t)k;
        float mx = z[0];
        for (int c = 1; c < k; c++) mx = z[c] > mx ? z[c] : mx;
        double sum = 0;
        for (int c = 0; c < k; c++) sum += exp((z[c] - mx) / temp);
        s += log(sum) - (z[truth[i]] - mx) / temp;
    }
    return s;
}

static float fit_temperature(const float *logits, const int *truth, int n, int k) {
    float best = 1.0f;
    double bn = nll_of(logits, truth, n, k, 1.0f);
    for (float tp = 0.25f; tp <= 8.0f; tp *= 1.05f) {
        double v = nll_of(logits, truth, n, k, tp);
        if (v < bn) bn = v, best = tp;
    }
    return best;
}

#define GUARD_MAX_FPR 0.02f   /* the target: false positives on every benign source */

/* The lowest threshold at which no benign source has more than
 * GUARD_MAX_FPR false positives. Candidates are even steps of the logit,
 * since out-of-source scores crowd near 1. */
static float pick_threshold(const route_trainer *t, const float *score, const int *guard_label,
                            const int *predicted) {
    const route_dataset *d = t->d;
    int neg[ROUTE_EVAL_MAX_SOURCES], fp[ROUTE_EVAL_MAX_SOURCES];
    for (int step = 0; step <= 240; step++) {
        float thr = 1.0f / (1.0f + expf(3.0f - 0.05f * (float)step)), worst = 0;
        memset(neg, 0, sizeof neg);
        memset(fp, 0, sizeof fp);
        for (int i = 0; i < d->n; i++)
            if (!guard_label[i] && predicted[i]) {
                neg[d->ex[i].source]++;
                fp[d->ex[i].source] += score[i] >= thr;
            }
        for (int s = 0; s < d->n_sources; s++)
            if (neg[s] && (float)fp[s] / (float)neg[s] > worst) worst = (float)fp[s] / (float)neg[s];
        if (worst <= GUARD_MAX_FPR) return thr;
    }
    return 1.0f / (1.0f + expf(-9.0f));
}

static void report_guard_folds(const route_trainer *t, const route_eval *r, buf *out) {
    buf_printf(out, "guard, harmful rows held out by %d random folds of their texts (every benign row\n"
                    "in training), at the threshold above:\n", r->guard_folds);
    buf_printf(out, "%-22s %6s %13s %16s\n", "source", "n", "row held out", "source held out");
    for (int s = 0; s < r->n_sources; s++)
        if (r->guard_harmful[s])
            buf_printf(out, "%-22s %6d %12.1f%% %15.1f%%\n", t->d->sources[s], r->guard_n[s],
                       100.0 * r->guard_row_recall[s], 100.0 * r->guard_rate[s]);
}

static void report_eval(const route_trainer *t, const route_eval *r, buf *out) {
    const route_dataset *d = t->d;
    if (r->folds)
        buf_printf(out, "%d-fold random split: every row tested by a model trained without it\n", r->folds);
    else
        buf_printf(out, "leave-one-source-out: train on every other source, test on this one\n");
    buf_printf(out, "%-22s %6s %9s   %s\n", "source", "n", "accuracy", "guard (threshold held fixed)");
    for (int s = 0; s < r->n_sources; s++) {
        buf_printf(out, "%-22s %6d ", d->sources[s], r->router_n[s] ? r->router_n[s] : r->guard_n[s]);
        if (r->router_n[s]) buf_printf(out, "%8.1f%%", 100.0 * r->accuracy[s]);
        else buf_printf(out, "%9s", "-");
        if (r->guard_harmful[s]) buf_printf(out, "   recall %5.1f%%\n", 100.0 * r->guard_rate[s]);
        else if (r->guard_n[s]) buf_printf(out, "   false positives %4.1f%%\n", 100.0 * r->guard_rate[s]);
        else buf_printf(out, "\n");
    }
    buf_printf(out, "mean accuracy over sources: %.1f%%\n", 100.0 * r->mean_accuracy);
    buf_printf(out, "mean accuracy over the --data sources (extra files left out): %.1f%%\n",
               100.0 * r->mean_accuracy_main);
    buf_printf(out, "calibration error (ECE, 10 bins): %.3f raw, %.3f at temperature %.2f\n", r->ece,
               r->ece_calibrated, r->temperature);
    buf_printf(out, "guard threshold: %.4f (the lowest with <= %.0f%% false positives on every benign source)\n",
               r->guard_threshold, 100.0 * GUARD_MAX_FPR);
    if (r->guard_folds) report_guard_folds(t, r, out);
    buf_printf(out, "confusion (rows: true class, columns: predicted)\n%-12s", "");
    for (int c = 0; c < t->n_classes; c++) buf_printf(out, " %10.10s", t->class_names[c]);
    buf_putc(out, '\n');
    for (int a = 0; a < t->n_classes; a++) {
        buf_printf(out, "%-12.12s", t->class_names[a]);
        for (int c = 0; c < t->n_classes; c++) buf_printf(out, " %10d", r->confusion[a][c]);
        buf_putc(out, '\n');
    }
    buf_printf(out, "took %.1f s\n", r->seconds);
}

/* Holdout group of example i: its source (leave-one-source-out) or one
 * of `folds` random folds chosen by text hash, so that copies of a text
 * always fall in the same fold. */
static int group_of(const route_trainer *t, int folds, int i) {
    if (!folds) return t->d->ex[i].source;
    uint64_t h = (t->text_hash[i] ^ t->o.seed) * 0x9e3779b97f4a7c15ull;
    return (int)((h >> 33) % (uint64_t)folds);
}

/* Training mask for holding out group g: every other group, minus texts
 * that also occur in g (AdvBench is in two sources). */
static void group_mask(const route_trainer *t, int folds, int g, unsigned char *mask) {
    const route_dataset *d = t->d;
    uint64_t *held = xmalloc(sizeof(uint64_t) * ((size_t)d->n + 1));
    size_t nh = 0;
    for (int i = 0; i < d->n; i++)
        if (group_of(t, folds, i) == g) held[nh++] = t->text_hash[i];
    qsort(held, nh, sizeof *held, cmp_u64);
    for (int i = 0; i < d->n; i++)
        mask[i] = group_of(t, folds, i) != g && !bsearch(&t->text_hash[i], held, nh, sizeof *held, cmp_u64);
    free(held);
}

void route_guard_fold_mask(const route_trainer *t, int folds, int f, unsigned char *mask) {
    for (int i = 0; i < t->d->n; i++)
        mask[i] = t->class_of_label[t->d->ex[i].label] >= 0 || group_of(t, folds, i) != f;
}

/* A model trained on the rows mask keeps, or NULL when it cannot be
 * trained (e.g. the only source of every router class held out): its
 * held-out rows then go unscored. */
static route_model *fit_without(route_trainer *t, const unsigned char *mask) {
    char *e = NULL;
    route_model *m = route_trainer_fit(t, mask, &e);
    free(e);
    return m;
}

/* o.guard_folds: each harmful row scored by a model trained without its
 * fold (route_guard_fold_mask), counted at the threshold r already has. */
static void guard_fold_recall(route_trainer *t, const int *glabel, route_eval *r) {
    const route_dataset *d = t->d;
    int folds = t->o.guard_folds, pos[ROUTE_EVAL_MAX_SOURCES] = {0}, tp[ROUTE_EVAL_MAX_SOURCES] = {0};
    unsigned char *mask = xmalloc((size_t)d->n + 1);
    double t0 = clock_now_ms();
    for (int f = 0; f < folds; f++) {
        route_guard_fold_mask(t, folds, f, mask);
        route_model *m = fit_without(t, mask);
        for (int i = 0; m && m->has_guard && i < d->n; i++) {
            if (mask[i] || !glabel[i] || d->ex[i].aug_of >= 0) continue;
            float z[ROUTE_MAX_CLASSES + 1];
            route_model_logits(m, NULL, 0, d->ex[i].text, strlen(d->ex[i].text), z);
            pos[d->ex[i].source]++;
            tp[d->ex[i].source] += route_guard_score(m, z) >= r->guard_threshold;
        }
        if (t->o.verbose) fprintf(stderr, "msoa router: held out guard fold %d (%.1f s)\n", f, (clock_now_ms() - t0) / 1000);
        route_model_free(m);
    }
    r->guard_folds = folds;
    for (int s = 0; s < d->n_sources; s++) r->guard_row_recall[s] = pos[s] ? (float)tp[s] / (float)pos[s] : 0.0f;
    free(mask);
}

/* Out-of-group predictions of every example: router logits and guard score. */
typedef struct oog {
    float *logits;   /* [n][k] */
    float *score;    /* [n] */
    int *predicted;  /* [n] 0: its group's model could not be trained */
    int has_guard;
} oog;

static void predict_groups(route_trainer *t, int folds, oog *p) {
    const route_dataset *d = t->d;
    int k = t->n_classes, groups = folds ? folds : d->n_sources;
    unsigned char *mask = xmalloc((size_t)d->n + 1);
    double t0 = clock_now_ms();
    for (int g = 0; g < groups; g++) {
        group_mask(t, folds, g, mask);
        route_model *m = fit_without(t, mask);
        for (int i = 0; m && i < d->n; i++) {
            if (group_of(t, folds, i) != g || d->ex[i].aug_of >= 0) continue;
            float z[ROUTE_MAX_CLASSES + 1];
            route_model_logits(m, NULL, 0, d->ex[i].text, strlen(d->ex[i].text), z);
            memcpy(p->logits + (size_t)i * (size_t)k, z, sizeof(float) * (size_t)k);
            p->score[i] = route_guard_score(m, z);
            p->predicted[i] = 1;
        }
        if (m) p->has_guard |= m->has_guard;
        if (t->o.verbose)
            fprintf(stderr, "msoa router: held out %s %d (%.1f s)\n", folds ? "fold" : d->sources[g], g,
                    (clock_now_ms() - t0) / 1000);
        route_model_free(m);
    }
    free(mask);
}

/* One line per example: source, label, predicted class, guard score,
 * the text on one line: to read what each source's errors are. */
static int dump_predictions(const route_trainer *t, const oog *p, const char *path, char **err) {
    const route_dataset *d = t->d;
    int k = t->n_classes;
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < d->n; i++) {
        if (!p->predicted[i]) continue;
        const float *z = p->logits + (size_t)i * (size_t)k;
        int best = 0;
        for (int j = 1; j < k; j++) best = z[j] > z[best] ? j : best;
        fprintf(f, "%s\t%s\t%s\t%.3f\t", d->sources[d->ex[i].source], d->labels[d->ex[i].label],
                t->class_names[best], p->score[i]);
        for (const char *c = d->ex[i].text; *c; c++) fputc(*c == '\t' || *c == '\n' || *c == '\r' ? ' ' : *c, f);
        fputc('\n', f);
    }
    if (f && fclose(f) == 0) return 0;
    buf m = BUF_INIT;
    buf_printf(&m, "%s: cannot write", path);
    *err = buf_detach(&m);
    return -1;
}

int route_trainer_eval(route_trainer *t, int folds, route_eval *r, buf *report, char **err) {
    const route_dataset *d = t->d;
    int k = t->n_classes;
    double t0 = clock_now_ms();
    memset(r, 0, sizeof *r);
    if (d->n_sources > ROUTE_EVAL_MAX_SOURCES || (!folds && d->n_sources < 2) || folds == 1) {
        buf b = BUF_INIT;
        buf_printf(&b, "evaluation needs 2 to %d sources (have %d) or 2 or more folds", ROUTE_EVAL_MAX_SOURCES,
                   d->n_sources);
        *err = buf_detach(&b);
        return -1;
    }
    int rc = 0;
    r->folds = folds;
    r->n_sources = d->n_sources;
    oog p = {xcalloc((size_t)d->n * (size_t)k + 1, sizeof(float)), xcalloc((size_t)d->n + 1, sizeof(float)),
             xcalloc((size_t)d->n + 1, sizeof(int)), 0};
    predict_groups(t, folds, &p);
    float *logits = xmalloc(sizeof(float) * (size_t)d->n * (size_t)k + 1);
    int *truth = xmalloc(sizeof(int) * ((size_t)d->n + 1)), nl = 0;
    int *glabel = xcalloc((size_t)d->n + 1, sizeof(int));
    int right[ROUTE_EVAL_MAX_SOURCES] = {0};
    for (int i = 0; i < d->n; i++) {
        int c = t->class_of_label[d->ex[i].label], s = d->ex[i].source;
        glabel[i] = c < 0;
        if (c < 0 || !p.predicted[i]) continue;
        const float *z = p.logits + (size_t)i * (size_t)k;
        int best = 0;
        for (int j = 1; j < k; j++) best = z[j] > z[best] ? j : best;
        right[s] += best == c;
        r->router_n[s]++;
        r->confusion[c][best]++;
        memcpy(logits + (size_t)nl * (size_t)k, z, sizeof(float) * (size_t)k);
        truth[nl++] = c;
    }
    int with = 0, with_main = 0, n_main = d->n_main_sources ? d->n_main_sources : d->n_sources;
    for (int s = 0; s < d->n_sources; s++)
        if (r->router_n[s]) {
            r->accuracy[s] = (float)right[s] / (float)r->router_n[s];
            r->mean_accuracy += r->accuracy[s];
            with++;
            if (s < n_main) r->mean_accuracy_main += r->accuracy[s], with_main++;
        }
    r->mean_accuracy = with ? r->mean_accuracy / (float)with : 0;
    r->mean_accuracy_main = with_main ? r->mean_accuracy_main / (float)with_main : 0;
    r->ece = ece_of(logits, truth, nl, k, 1.0f);
    r->temperature = fit_temperature(logits, truth, nl, k);
    r->ece_calibrated = ece_of(logits, truth, nl, k, r->temperature);
    r->guard_threshold = t->o.guard_threshold > 0 ? t->o.guard_threshold
                         : p.has_guard ? pick_threshold(t, p.score, glabel, p.predicted) : 0.5f;
    for (int s = 0; s < d->n_sources && p.has_guard; s++) {
        int pos = 0, neg = 0, tp = 0, fp = 0;
        for (int i = 0; i < d->n; i++) {
            if (d->ex[i].source != s || !p.predicted[i]) continue;
            int hit = p.score[i] >= r->guard_threshold;
            if (glabel[i]) pos++, tp += hit;
            else neg++, fp += hit;
        }
        r->guard_harmful[s] = pos > neg;
        r->guard_n[s] = pos > neg ? pos : neg;
        r->guard_rate[s] = pos > neg ? (float)tp / (float)pos : neg ? (float)fp / (float)neg : 0;
    }
    if (!folds && t->o.guard_folds >= 2 && p.has_guard) guard_fold_recall(t, glabel, r);
    r->seconds = (clock_now_ms() - t0) / 1000.0;
    if (report) report_eval(t, r, report);
    if (t->o.dump && dump_predictions(t, &p, t->o.dump, err)) rc = -1;
    free(p.logits);
    free(p.score);
    free(p.predicted);
    free(logits);
    free(truth);
    free(glabel);
    return rc;
}

route_model *route_train_all(route_trainer *t, route_eval *r, char **err) {
    int calibrated = 0;
    memset(r, 0, sizeof *r);
    if (t->o.calibrate && t->d->n_sources >= 2) {
        /* temperature and guard threshold from sources unseen in training:
         * probabilities should be honest, and false positives few, on
         * requests unlike the training data */
        char *e = NULL;
        int guard_folds = t->o.guard_folds;
        t->o.guard_folds = 0;   /* calibrating needs the out-of-source scores only */
        calibrated = route_trainer_eval(t, 0, r, NULL, &e) == 0;
        t->o.guard_folds = guard_folds;
        free(e);   /* keep temperature 1 and the default threshold */
    }
    route_model *m = route_trainer_fit(t, NULL, err);
    if (m && calibrated) {
        m->temperature = r->temperature;
        if (m->has_guard) m->guard_threshold = r->guard_threshold;
    }
    return m;
}
