/* router: see router.h. Loading, saving and classifying; the file format
 * is a magic, a version, then the arrays of struct route_model in order,
 * little-endian as on every machine msoa targets (checked at load). */
#include "route/router.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "route/model.h"

#define MODEL_MAGIC "MSOAROUT"
#define MODEL_VERSION 1u
#define MODEL_ENDIAN 0x01020304u

route_model *route_model_new(int n_classes, char *const *names, unsigned features, uint32_t hash_bits,
                             uint32_t n_rows) {
    route_model *m = xcalloc(1, sizeof *m);
    m->n_classes = n_classes;
    m->n_out = n_classes + 1;
    m->class_names = xcalloc((size_t)n_classes, sizeof(char *));
    for (int i = 0; i < n_classes; i++) m->class_names[i] = xstrdup(names[i]);
    m->features = features;
    m->hash_bits = hash_bits;
    m->n_proto = n_classes + ROUTE_GUARD_PROTOS;
    m->nx = FEAT_HAND_N + 2 * m->n_proto;
    m->proj = xcalloc((size_t)n_rows * (size_t)m->n_out + 1, sizeof(float));
    m->proto_sim = xcalloc((size_t)n_rows * (size_t)m->n_proto + 1, sizeof(float));
    m->hash_w = hash_bits ? xcalloc(((size_t)1 << hash_bits) * (size_t)m->n_out, sizeof(float)) : NULL;
    m->temperature = 1.0f;
    m->guard_threshold = 0.5f;
    m->max_bytes = ROUTE_DEFAULT_MAX_BYTES;
    return m;
}

void route_model_free(route_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_classes; i++) free(m->class_names[i]);
    free(m->class_names);
    vocab_free(&m->vocab);
    free(m->proj);
    free(m->proto_sim);
    free(m->guard_word);
    free(m->row_ids);
    free(m->hash_w);
    free(m);
}

int route_model_n_classes(const route_model *m) { return m->n_classes; }
const char *route_model_class_name(const route_model *m, int i) {
    return i >= 0 && i < m->n_classes ? m->class_names[i] : NULL;
}
int route_model_has_guard(const route_model *m) { return m->has_guard; }
float route_model_guard_threshold(const route_model *m) { return m->guard_threshold; }
void route_model_set_max_bytes(route_model *m, size_t n) { m->max_bytes = n > 16 ? (uint32_t)n : 16; }
size_t route_model_max_bytes(const route_model *m) { return m->max_bytes; }
void route_model_set_guard_threshold(route_model *m, float t) { m->guard_threshold = t; }

/* ---- file I/O ---- */

typedef struct writer { FILE *f; int err; } writer;

static void put(writer *w, const void *p, size_t n) {
    if (!w->err && n && fwrite(p, 1, n, w->f) != n) w->err = 1;
}
static void put_u32(writer *w, uint32_t v) { put(w, &v, 4); }

int route_model_save(const route_model *m, const char *path, char **err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    writer w = {fopen(tmp, "wb"), 0};
    if (!w.f) goto fail;
    uint32_t no = (uint32_t)m->n_out, rows = (uint32_t)m->vocab.n_rows;
    put(&w, MODEL_MAGIC, 8);
    put_u32(&w, MODEL_VERSION);
    put_u32(&w, MODEL_ENDIAN);
    put_u32(&w, (uint32_t)m->n_classes);
    put_u32(&w, (uint32_t)m->has_guard);
    put_u32(&w, m->features);
    put_u32(&w, m->hash_bits);
    put_u32(&w, m->max_bytes);
    put(&w, &m->temperature, 4);
    put(&w, &m->guard_threshold, 4);
    for (int i = 0; i < m->n_classes; i++) {
        uint32_t len = (uint32_t)strlen(m->class_names[i]);
        put_u32(&w, len);
        put(&w, m->class_names[i], len);
    }
    put_u32(&w, m->vocab.n);
    for (uint32_t i = 0; i <= m->vocab.mask; i++)
        if (m->vocab.slots[i].key) {
            put(&w, &m->vocab.slots[i].key, 8);
            put(&w, &m->vocab.slots[i].row, 4);
            put(&w, &m->vocab.slots[i].flags, 4);
        }
    put_u32(&w, rows);
    put(&w, m->vocab.row_weight, sizeof(float) * rows);
    put(&w, m->proj, sizeof(float) * rows * no);
    size_t nx = (size_t)m->nx;
    put(&w, m->hand_w, sizeof(float) * nx * no);
    put(&w, m->hand_mean, sizeof(float) * nx);
    put(&w, m->hand_lo, sizeof(float) * nx);
    put(&w, m->hand_hi, sizeof(float) * nx);
    if (m->features & FEATS_PROTO) put(&w, m->proto_sim, sizeof(float) * rows * (size_t)m->n_proto);
    if (m->features & FEATS_MIL) put(&w, m->guard_word, sizeof(float) * rows);
    if (m->features & FEATS_CLUSTER) {
        put_u32(&w, m->n_tables);
        put(&w, m->row_ids, sizeof(uint32_t) * rows * m->n_tables);
    }
    put(&w, m->bias, sizeof(float) * no);
    if (m->hash_bits) put(&w, m->hash_w, sizeof(float) * ((size_t)1 << m->hash_bits) * no);
    put(&w, "END.", 4);
    if (fclose(w.f) != 0) w.err = 1;
    if (w.err || rename(tmp, path) != 0) {
        remove(tmp);
        goto fail;
    }
    return 0;
fail:;
    buf b = BUF_INIT;
    buf_printf(&b, "%s: cannot write model: %s", path, strerror(errno ? errno : EIO));
    *err = buf_detach(&b);
    return -1;
}

typedef struct reader { const char *p; size_t len, pos; int err; } reader;

static void get(reader *r, void *out, size_t n) {
    if (r->err || n > r->len - r->pos) {
        r->err = 1;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
}
static uint32_t get_u32(reader *r) {
    uint32_t v;
    get(r, &v, 4);
    return v;
}

/* Parses the header and class names; the arrays follow. */
static route_model *parse_header(reader *r) {
    char magic[8];
    get(r, magic, 8);
    if (r->err || memcmp(magic, MODEL_MAGIC, 8) != 0 || get_u32(r) != MODEL_VERSION ||
        get_u32(r) != MODEL_ENDIAN)
        return NULL;
    uint32_t nc = get_u32(r), guard = get_u32(r), feats = get_u32(r), bits = get_u32(r);
    uint32_t max_bytes = get_u32(r);
    float temp, thr;
    get(r, &temp, 4);
    get(r, &thr, 4);
    if (r->err || nc < 1 || nc > ROUTE_MAX_CLASSES || bits > 24 || !(temp > 0)) return NULL;
    char *names[ROUTE_MAX_CLASSES];
    uint32_t got = 0;
    for (; got < nc; got++) {
        uint32_t len = get_u32(r);
        if (r->err || len > 255 || len > r->len - r->pos) break;
        names[got] = xstrndup(r->p + r->pos, len);
        r->pos += len;
    }
    route_model *m = NULL;
    if (got == nc) {
        m = route_model_new((int)nc, names, feats, bits, 0);
        m->has_guard = guard != 0;
        m->max_bytes = max_bytes;
        m->temperature = temp;
        m->guard_threshold = thr;
    }
    for (uint32_t i = 0; i < got; i++) free(names[i]);
    return m;
}

static int parse_body(reader *r, route_model *m) {
    size_t no = (size_t)m->n_out;
    uint32_t nv = get_u32(r);
    if (r->err || nv > (1u << 24)) return -1;
    vocab_init(&m->vocab, nv);
    for (uint32_t i = 0; i < nv && !r->err; i++) {
        uint64_t key;
        int32_t row;
        uint32_t flags;
        get(r, &key, 8);
        get(r, &row, 4);
        get(r, &flags, 4);
        if (!key) return -1;
        vocab_put(&m->vocab, key, row, flags);
    }
    uint32_t rows = get_u32(r);
    if (r->err || rows > (1u << 24) || (size_t)rows * no * 4 > r->len - r->pos) return -1;
    for (uint32_t i = 0; i <= m->vocab.mask; i++)
        if (m->vocab.slots[i].key && m->vocab.slots[i].row >= (int32_t)rows) return -1;
    m->vocab.n_rows = (int32_t)rows;
    m->vocab.row_weight = xcalloc(rows + 1, sizeof(float));
    get(r, m->vocab.row_weight, sizeof(float) * rows);
    free(m->proj);
    m->proj = xcalloc((size_t)rows * no + 1, sizeof(float));
    get(r, m->proj, sizeof(float) * rows * no);
    size_t nx = (size_t)m->nx;
    get(r, m->hand_w, sizeof(float) * nx * no);
    get(r, m->hand_mean, sizeof(float) * nx);
    get(r, m->hand_lo, sizeof(float) * nx);
    get(r, m->hand_hi, sizeof(float) * nx);
    if (m->features & FEATS_PROTO) {
        if ((size_t)rows * (size_t)m->n_proto * 4 > r->len - r->pos) return -1;
        free(m->proto_sim);
        m->proto_sim = xcalloc((size_t)rows * (size_t)m->n_proto + 1, sizeof(float));
        get(r, m->proto_sim, sizeof(float) * rows * (size_t)m->n_proto);
    }
    if (m->features & FEATS_MIL) {
        if ((size_t)rows * 4 > r->len - r->pos) return -1;
        m->guard_word = xcalloc((size_t)rows + 1, sizeof(float));
        get(r, m->guard_word, sizeof(float) * rows);
    }
    if (m->features & FEATS_CLUSTER) {
        m->n_tables = get_u32(r);
        if (r->err || !m->hash_bits || m->n_tables > 64 ||
            (size_t)rows * m->n_tables * 4 > r->len - r->pos)
            return -1;
        m->row_ids = xcalloc((size_t)rows * m->n_tables + 1, sizeof(uint32_t));
        get(r, m->row_ids, sizeof(uint32_t) * rows * m->n_tables);
        for (size_t i = 0; i < (size_t)rows * m->n_tables; i++)
            if (m->row_ids[i] >> m->hash_bits) return -1;
    }
    get(r, m->bias, sizeof(float) * no);
    if (m->hash_bits) get(r, m->hash_w, sizeof(float) * ((size_t)1 << m->hash_bits) * no);
    char end[4];
    get(r, end, 4);
    return r->err || memcmp(end, "END.", 4) != 0 || r->pos != r->len ? -1 : 0;
}

route_model *route_model_load(const char *path, char **err) {
    buf data = BUF_INIT;
    FILE *f = fopen(path, "rb");
    route_model *m = NULL;
    const char *why = "cannot read";
    if (f) {
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_append(&data, chunk, n);
        int bad = ferror(f);
        fclose(f);
        if (!bad) {
            reader r = {data.data ? data.data : "", data.len, 0, 0};
            why = "not a router model file (or a damaged one)";
            m = parse_header(&r);
            if (m && parse_body(&r, m) != 0) {
                route_model_free(m);
                m = NULL;
            }
        }
    }
    buf_free(&data);
    if (!m) {
        buf b = BUF_INIT;
        buf_printf(&b, "%s: %s", path, why);
        *err = buf_detach(&b);
    }
    return m;
}

/* ---- classifying ---- */

/* Sums of one request's words; lives on the caller's stack. */
typedef struct word_acc {
    const route_model *m;
    float emb[ROUTE_MAX_CLASSES + 1];
    float hash[ROUTE_MAX_CLASSES + 1];
    float wsum;
    uint32_t nhash;
    float pmean[ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS], pmax[ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS];
    float gmax;              /* FEATS_MIL: highest word harm score (0: no word) */
    int32_t gmax_row;        /* its row + 1; 0: no word yet */
} word_acc;

static inline void add_row(float *acc, const float *row, float a, int n) {
    for (int o = 0; o < n; o++) acc[o] += a * row[o];
}

static void acc_word(void *ctx, const char *w, size_t len, const vocab_entry *e, uint64_t h,
                     uint64_t bigram) {
    word_acc *a = ctx;
    const route_model *m = a->m;
    int no = m->n_out;
    (void)w;
    (void)len;
    if (e && e->row >= 0 && (m->features & FEATS_MIL) && (!a->gmax_row || m->guard_word[e->row] > a->gmax)) {
        a->gmax = m->guard_word[e->row];
        a->gmax_row = e->row + 1;
    }
    if (e && e->row >= 0 && (m->features & (FEATS_EMBED | FEATS_PROTO))) {
        float wt = m->vocab.row_weight[e->row];
        a->wsum += wt;
        if (m->features & FEATS_EMBED) add_row(a->emb, m->proj + (size_t)e->row * (size_t)no, wt, no);
    }
    if (e && e->row >= 0 && (m->features & FEATS_PROTO)) {
        float wt = m->vocab.row_weight[e->row];
        const float *sim = m->proto_sim + (size_t)e->row * (size_t)m->n_proto;
        for (int c = 0; c < m->n_proto; c++) {
            a->pmean[c] += wt * sim[c];
            if (wt * sim[c] > a->pmax[c]) a->pmax[c] = wt * sim[c];
        }
    }
    if (!m->hash_bits) return;
    if (e && e->row >= 0 && (m->features & FEATS_CLUSTER)) {
        const uint32_t *ids = m->row_ids + (size_t)e->row * m->n_tables;
        for (uint32_t t = 0; t < m->n_tables; t++) add_row(a->hash, m->hash_w + (size_t)ids[t] * (size_t)no, 1.0f, no);
        a->nhash += m->n_tables;
    }
    uint64_t mask = ((uint64_t)1 << m->hash_bits) - 1;
    if (m->features & FEATS_UNIGRAM) {
        add_row(a->hash, m->hash_w + (h & mask) * (size_t)no, 1.0f, no);
        a->nhash++;
    }
    if ((m->features & FEATS_BIGRAM) && bigram) {
        add_row(a->hash, m->hash_w + (bigram & mask) * (size_t)no, 1.0f, no);
        a->nhash++;
    }
}

/* The part of each text that is read: at most a quarter of the budget for
 * the system prompt (it is often a long generic preamble), the rest for
 * the user message, whose beginning states the task. */
static void cut(const route_model *m, size_t *slen, size_t *ulen) {
    size_t budget = m->max_bytes;
    if (*slen > budget / 4) *slen = budget / 4;
    if (*ulen > budget - *slen) *ulen = budget - *slen;
}

static void scan(const route_model *m, const char *sys, size_t slen, const char *user, size_t ulen,
                 feat_word_fn fn, void *ctx, float *hand) {
    feat_state s;
    feat_begin(&s, &m->vocab, fn, ctx);
    if (sys && slen) feat_feed(&s, sys, slen);
    if (user && ulen) feat_feed(&s, user, ulen);
    feat_end(&s, hand);
}

/* The named features of a scanned request. They are clipped to the range
 * seen in training: a linear model must not extrapolate from a value it
 * never saw (a whole file of code when no training text had any). */
static void named_features(const route_model *m, const word_acc *a, float *x) {
    float inv = a->wsum > 0 ? 1.0f / a->wsum : 0.0f;
    for (int c = 0; c < m->n_proto; c++) {
        x[FEAT_HAND_N + 2 * c] = a->pmean[c] * inv;
        x[FEAT_HAND_N + 2 * c + 1] = a->pmax[c];
    }
    for (int j = 0; j < m->nx; j++)
        x[j] = x[j] < m->hand_lo[j] ? m->hand_lo[j] : x[j] > m->hand_hi[j] ? m->hand_hi[j] : x[j];
}

/* 1/sqrt(n): hashed counts are normalised for length like the mean vector. */
static float hash_scale(uint32_t n) { return n ? 1.0f / sqrtf((float)n) : 0.0f; }

static void logits_of(const route_model *m, const word_acc *a, const float *hand, float *z) {
    int no = m->n_out;
    float inv = a->wsum > 0 ? 1.0f / a->wsum : 0.0f, hs = hash_scale(a->nhash);
    for (int o = 0; o < no; o++) z[o] = m->bias[o] + a->emb[o] * inv + a->hash[o] * hs;
    for (int j = 0; j < m->nx; j++) add_row(z, m->hand_w + j * no, hand[j], no);
    if (m->features & FEATS_MIL) z[m->n_classes] += a->gmax;
}

void route_model_logits(const route_model *m, const char *sys, size_t slen, const char *user,
                        size_t ulen, float *z) {
    word_acc a;
    float hand[ROUTE_NX_MAX];
    memset(&a, 0, sizeof a);
    a.m = m;
    if (!sys) slen = 0;
    if (!user) ulen = 0;
    cut(m, &slen, &ulen);
    scan(m, sys, slen, user, ulen, acc_word, &a, hand);
    named_features(m, &a, hand);
    logits_of(m, &a, hand, z);
}

/* ---- explanations ---- */

const char *const route_guard_protos[ROUTE_GUARD_PROTOS] = {"harmful", "jailbreak"};

static const char *proto_name(const route_model *m, int p) {
    return p < m->n_classes ? m->class_names[p] : route_guard_protos[p - m->n_classes];
}

/* The second pass: every word's share of the chosen output's logit, minus
 * its mean share over the router classes (a word that pushes every class
 * alike explains nothing). Repeated words add up. */
typedef struct explain_ctx {
    const route_model *m;
    int out;               /* output explained */
    int relative;          /* subtract the mean over router classes */
    float inv_wsum, hs;
    float gmax;            /* the guard's max-pooled word score, to credit */
    int32_t gmax_row;
    uint64_t keys[ROUTE_TOP_N * 8];
    route_feature items[ROUTE_TOP_N * 8];
    int n;
} explain_ctx;

static float share(const explain_ctx *x, const float *row) {
    if (!x->relative) return row[x->out];
    float mean = 0;
    for (int o = 0; o < x->m->n_classes; o++) mean += row[o];
    return row[x->out] - mean / (float)x->m->n_classes;
}

/* Adds weight to the item with this key, or takes a free or the weakest
 * slot when the new weight is larger. */
static void explain_add(explain_ctx *x, uint64_t key, const char *name, size_t len, float wt) {
    const int cap = ROUTE_TOP_N * 8;
    for (int i = 0; i < x->n; i++)
        if (x->keys[i] == key) {
            x->items[i].weight += wt;
            return;
        }
    int slot = x->n < cap ? x->n++ : -1;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < cap; i++)
            if (x->items[i].weight < x->items[slot].weight) slot = i;
        if (x->items[slot].weight >= wt) return;
    }
    if (len >= sizeof x->items[slot].name) len = sizeof x->items[slot].name - 1;
    x->keys[slot] = key;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        x->items[slot].name[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    x->items[slot].name[len] = '\0';
    x->items[slot].weight = wt;
}

static void explain_word(void *ctx, const char *w, size_t len, const vocab_entry *e, uint64_t h,
                         uint64_t bigram) {
    explain_ctx *x = ctx;
    const route_model *m = x->m;
    size_t no = (size_t)m->n_out;
    float wt = 0;
    (void)bigram;   /* a pair's weight is shared by two words; left out */
    if (e && e->row >= 0 && (m->features & FEATS_EMBED))
        wt += m->vocab.row_weight[e->row] * x->inv_wsum * share(x, m->proj + (size_t)e->row * no);
    if (m->hash_bits && (m->features & FEATS_UNIGRAM))
        wt += x->hs * share(x, m->hash_w + (h & (((uint64_t)1 << m->hash_bits) - 1)) * no);
    if (e && e->row >= 0 && (m->features & FEATS_CLUSTER))
        for (uint32_t t = 0; t < m->n_tables; t++)
            wt += x->hs * share(x, m->hash_w + (size_t)m->row_ids[(size_t)e->row * m->n_tables + t] * no);
    if (e && e->row == x->gmax_row && x->out == m->n_classes && (m->features & FEATS_MIL)) {
        wt += x->gmax;
        x->gmax = 0;   /* credit the first occurrence only */
    }
    explain_add(x, h, w, len, wt);
}

static int cmp_weight_desc(const void *a, const void *b) {
    float x = ((const route_feature *)a)->weight, y = ((const route_feature *)b)->weight;
    return (x < y) - (x > y);
}

/* Fills top[] with the ROUTE_TOP_N strongest positive reasons. */
static int explain(const route_model *m, const char *sys, size_t slen, const char *user, size_t ulen,
                   const word_acc *a, const float *hand, int out, int relative, route_feature *top) {
    explain_ctx x;
    memset(&x, 0, sizeof x);
    x.m = m;
    x.out = out;
    x.relative = relative;
    x.inv_wsum = a->wsum > 0 ? 1.0f / a->wsum : 0.0f;
    x.hs = hash_scale(a->nhash);
    x.gmax = a->gmax;
    x.gmax_row = a->gmax > 0 ? a->gmax_row - 1 : -1;
    float ignored[FEAT_HAND_N];
    scan(m, sys, slen, user, ulen, explain_word, &x, ignored);
    for (int j = 0; j < m->nx; j++) {
        char nm[32];
        if (j < FEAT_HAND_N)
            snprintf(nm, sizeof nm, "%s", feat_hand_names[j]);
        else
            snprintf(nm, sizeof nm, "%s:%.20s", (j - FEAT_HAND_N) % 2 ? "like" : "about",
                     proto_name(m, (j - FEAT_HAND_N) / 2));
        float wt = (hand[j] - m->hand_mean[j]) * share(&x, m->hand_w + j * m->n_out);
        explain_add(&x, (uint64_t)j + 1, nm, strlen(nm), wt);
    }
    qsort(x.items, (size_t)x.n, sizeof *x.items, cmp_weight_desc);
    int n = 0;
    for (int i = 0; i < x.n && n < ROUTE_TOP_N; i++)
        if (x.items[i].weight > 0) top[n++] = x.items[i];
    return n;
}

int route_classify(const route_model *m, const char *sys, size_t slen, const char *user, size_t ulen,
                   unsigned flags, route_decision *d) {
    word_acc a;
    float hand[ROUTE_NX_MAX], z[ROUTE_MAX_CLASSES + 1];
    memset(&a, 0, sizeof a);
    a.m = m;
    if (!sys) slen = 0;
    if (!user) ulen = 0;
    cut(m, &slen, &ulen);
    scan(m, sys, slen, user, ulen, acc_word, &a, hand);
    named_features(m, &a, hand);
    logits_of(m, &a, hand, z);

    int k = m->n_classes, best = 0;
    float mx = z[0] / m->temperature, sum = 0;
    for (int i = 1; i < k; i++)
        if (z[i] / m->temperature > mx) mx = z[i] / m->temperature, best = i;
    for (int i = 0; i < k; i++) sum += d->probs[i] = expf(z[i] / m->temperature - mx);
    for (int i = 0; i < k; i++) d->probs[i] /= sum;
    d->n_classes = k;
    d->domain = best;
    d->domain_name = m->class_names[best];
    d->has_guard = m->has_guard;
    d->guard_score = m->has_guard ? 1.0f / (1.0f + expf(-z[k])) : 0.0f;
    d->unsafe = m->has_guard && d->guard_score >= m->guard_threshold;
    d->n_top = d->n_guard_top = 0;
    if (flags & ROUTE_EXPLAIN) {
        d->n_top = explain(m, sys, slen, user, ulen, &a, hand, best, 1, d->top);
        if (m->has_guard) d->n_guard_top = explain(m, sys, slen, user, ulen, &a, hand, k, 0, d->guard_top);
    }
    return 0;
}

/* ---- JSON ---- */

static void json_str(buf *out, const char *s) {
    buf_putc(out, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') buf_printf(out, "\\%c", c);
        else if (c < 0x20) buf_printf(out, "\\u%04x", c);
        else buf_putc(out, (char)c);
    }
    buf_putc(out, '"');
}

static void json_features(buf *out, const route_feature *f, int n) {
    buf_putc(out, '[');
    for (int i = 0; i < n; i++) {
        buf_puts(out, i ? ",{\"feature\":" : "{\"feature\":");
        json_str(out, f[i].name);
        buf_printf(out, ",\"weight\":%.3f}", f[i].weight);
    }
    buf_putc(out, ']');
}

void route_decision_json(const route_model *m, const route_decision *d, buf *out) {
    buf_puts(out, "{\"domain\":");
    json_str(out, d->domain_name);
    buf_puts(out, ",\"probs\":{");
    for (int i = 0; i < d->n_classes; i++) {
        if (i) buf_putc(out, ',');
        json_str(out, m->class_names[i]);
        buf_printf(out, ":%.4f", d->probs[i]);
    }
    buf_printf(out, "},\"guard\":{\"unsafe\":%s,\"score\":%.4f", d->unsafe ? "true" : "false",
               d->guard_score);
    if (d->n_guard_top) {
        buf_puts(out, ",\"why\":");
        json_features(out, d->guard_top, d->n_guard_top);
    }
    buf_putc(out, '}');
    if (d->n_top) {
        buf_puts(out, ",\"why\":");
        json_features(out, d->top, d->n_top);
    }
    buf_putc(out, '}');
}
