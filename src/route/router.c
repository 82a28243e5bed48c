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
#define MODEL_VERSION 6u
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
    free(m->hid_w);
    free(m->hid_v);
    free(m->hid_proj);
    free(m->class_word);
    free(m->pack);
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
    if (m->pack_only) {
        *err = xstrdup("a model loaded from a file cannot be saved: save it when it is trained");
        return -1;
    }
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
    put(&w, &m->prior_w, 4);
    put(&w, &m->prior_h, 4);
    put(&w, &m->prior_e, 4);
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
    if (m->features & FEATS_HIDDEN) {
        size_t nh = (size_t)m->n_hidden;
        put_u32(&w, (uint32_t)nh);
        put(&w, m->hid_b, sizeof(float) * nh);
        put(&w, m->hid_w, sizeof(float) * nx * nh);
        put(&w, m->hid_v, sizeof(float) * nh * no);
        put(&w, m->hid_proj, sizeof(float) * rows * nh);
    }
    if (m->features & FEATS_LEX) {
        put_u32(&w, (uint32_t)m->lex_top);
        put(&w, m->class_word, sizeof(float) * rows * (size_t)m->n_classes);
    }
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
    uint32_t version = r->err ? 0 : get_u32(r);
    /* version 5 is 6 without the guard's memory (FEATS_MEM) */
    if (r->err || memcmp(magic, MODEL_MAGIC, 8) != 0 || (version != MODEL_VERSION && version != 5) ||
        get_u32(r) != MODEL_ENDIAN)
        return NULL;
    uint32_t nc = get_u32(r), guard = get_u32(r), feats = get_u32(r), bits = get_u32(r);
    if (version == 5 && (feats & FEATS_MEM)) return NULL;
    uint32_t max_bytes = get_u32(r);
    float temp, thr, pw, ph, pe;
    get(r, &temp, 4);
    get(r, &thr, 4);
    get(r, &pw, 4);
    get(r, &ph, 4);
    get(r, &pe, 4);
    if (r->err || nc < 1 || nc > ROUTE_MAX_CLASSES || bits > 24 || !(temp > 0) || !(pw >= 0) || !(ph >= 0) ||
        !(pe >= 0))
        return NULL;
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
        m->prior_w = pw;
        m->prior_h = ph;
        m->prior_e = pe;
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
        if (!key || (lex_mem(flags) && !(m->features & FEATS_MEM))) return -1;   /* a memory it cannot read */
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
    if (m->features & FEATS_HIDDEN) {
        uint32_t nh = get_u32(r);
        if (r->err || nh < 8 || nh > ROUTE_MAX_HIDDEN || nh % 8 || (size_t)rows * nh * 4 > r->len - r->pos) return -1;
        m->n_hidden = (int)nh;
        m->hid_w = xcalloc(nx * nh + 1, sizeof(float));
        m->hid_v = xcalloc(nh * no + 1, sizeof(float));
        m->hid_proj = xcalloc((size_t)rows * nh + 1, sizeof(float));
        get(r, m->hid_b, sizeof(float) * nh);
        get(r, m->hid_w, sizeof(float) * nx * nh);
        get(r, m->hid_v, sizeof(float) * nh * no);
        get(r, m->hid_proj, sizeof(float) * rows * nh);
    }
    if (m->features & FEATS_LEX) {
        uint32_t top = get_u32(r);
        size_t nc = (size_t)m->n_classes;
        if (r->err || top < 1 || top > ROUTE_LEX_TOP_MAX || (size_t)rows * nc * 4 > r->len - r->pos) return -1;
        m->lex_top = (int)top;
        m->class_word = xcalloc((size_t)rows * nc + 1, sizeof(float));
        get(r, m->class_word, sizeof(float) * rows * nc);
    }
    char end[4];
    get(r, end, 4);
    return r->err || memcmp(end, "END.", 4) != 0 || r->pos != r->len ? -1 : 0;
}

/* A loaded model serves classification only, which reads m->pack: the
 * per-row arrays it was built from are a third of the model's memory, and
 * a gateway holding 1,000 streams counts every megabyte. Such a model
 * cannot be saved again (route_model_save says so). */
static void keep_only_pack(route_model *m) {
    free(m->proj);
    free(m->proto_sim);
    free(m->guard_word);
    free(m->row_ids);
    free(m->hid_proj);
    free(m->class_word);
    free(m->vocab.row_weight);
    m->proj = m->proto_sim = m->guard_word = m->hid_proj = m->class_word = m->vocab.row_weight = NULL;
    m->row_ids = NULL;
    m->pack_only = 1;
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
            if (m) {
                route_model_prepare(m);
                keep_only_pack(m);
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
    /* the sum of the packed rows of the request's words: at 0 the weight
     * sum, at 1 the mean vector's logits, at pack_proto the prototype
     * similarities, at pack_hid the hidden layer's (FEATS_HIDDEN) */
    float sum[ROUTE_PACK_MAX];
    float hash[ROUTE_MAX_CLASSES + 1];
    uint32_t nhash;
    float pmax[ROUTE_MAX_CLASSES + ROUTE_GUARD_PROTOS];
    float mem, mem_unit;     /* FEATS_MEM: the memory's raise of the guard's logit (scan) */
    float gmax;              /* FEATS_MIL: highest word harm score (0: no word) */
    int32_t gmax_row;        /* its row + 1; 0: no word yet */
    float lex[ROUTE_LEX_SLOTS];     /* FEATS_LEX: per class the top */
    int32_t lex_row[ROUTE_LEX_SLOTS]; /* scores and their rows (-1: none) */
    float lex_floor[ROUTE_MAX_CLASSES];   /* the score a word must beat to enter (-inf: room) */
} word_acc;

static inline void add_row(float *restrict acc, const float *restrict row, float a, int n) {
    for (int o = 0; o < n; o++) acc[o] += a * row[o];
}

/* add_row for n a multiple of 8: a loop of known length, which the
 * compiler turns into vector adds at -O2. */
static inline void add_row8(float *restrict acc, const float *restrict row, float a, int n) {
    for (int o = 0; o < n; o += 8)
        for (int k = 0; k < 8; k++) acc[o + k] += a * row[o + k];
}

/* acc = max(acc, row) elementwise, with max instructions (four at a time,
 * then one at a time) instead of a branch per element. */
static inline void max_row(float *restrict acc, const float *restrict row, int n) {
    int o = 0;
    for (; o + 4 <= n; o += 4)
        for (int k = 0; k < 4; k++) acc[o + k] = row[o + k] > acc[o + k] ? row[o + k] : acc[o + k];
    for (; o < n; o++) acc[o] = row[o] > acc[o] ? row[o] : acc[o];
}

/* Places a part of n floats (0: the model has none) at *off: returns where. */
static int pack_part(int *off, int n) {
    int at = *off;
    *off += n;
    return at;
}

void route_model_prepare(route_model *m) {
    int no = m->n_out, np = m->n_proto, rows = m->vocab.n_rows;
    int nh = m->features & FEATS_HIDDEN ? m->n_hidden : 0;
    int nl = m->features & FEATS_LEX ? m->n_classes : 0;
    int off = 1 + no;
    m->pack_cluster = pack_part(&off, m->features & FEATS_CLUSTER ? no : 0);
    m->pack_proto = pack_part(&off, m->features & FEATS_PROTO ? np : 0);
    m->pack_guard = pack_part(&off, m->features & FEATS_MIL ? 1 : 0);
    m->pack_hid = pack_part(&off, nh);
    m->pack_lex = pack_part(&off, nl);
    /* whole 32-byte units (classifying adds a row 8 floats at a time); a
     * row of 32 floats is two whole cache lines */
    int stride = (off + 7) & ~7;
    free(m->pack);
    m->pack = xcalloc_aligned(sizeof(float) * ((size_t)rows * (size_t)stride + 1), 64);
    m->pack_stride = stride;
    for (int r = 0; r < rows; r++) {
        float *p = m->pack + (size_t)r * (size_t)stride;
        float wt = m->features & (FEATS_EMBED | FEATS_PROTO) ? m->vocab.row_weight[r] : 0.0f;
        p[0] = wt;
        for (int o = 0; o < no && (m->features & FEATS_EMBED); o++) p[1 + o] = wt * m->proj[(size_t)r * (size_t)no + (size_t)o];
        for (uint32_t t = 0; m->hash_bits && (m->features & FEATS_CLUSTER) && t < m->n_tables; t++) {
            const float *h = m->hash_w + (size_t)m->row_ids[(size_t)r * m->n_tables + t] * (size_t)no;
            for (int o = 0; o < no; o++) p[m->pack_cluster + o] += h[o];
        }
        for (int c = 0; c < np && (m->features & FEATS_PROTO); c++) p[m->pack_proto + c] = wt * m->proto_sim[(size_t)r * (size_t)np + (size_t)c];
        if (m->features & FEATS_MIL) p[m->pack_guard] = m->guard_word[r];
        for (int k = 0; k < nh; k++) p[m->pack_hid + k] = m->vocab.row_weight[r] * m->hid_proj[(size_t)r * (size_t)nh + (size_t)k];
        for (int c = 0; c < nl; c++) p[m->pack_lex + c] = m->class_word[(size_t)r * (size_t)nl + (size_t)c];
    }
}

static void acc_init(word_acc *a, const route_model *m) {
    memset(a, 0, sizeof *a);
    a->m = m;
    for (int j = 0; j < ROUTE_LEX_SLOTS; j++) a->lex_row[j] = -1;
    for (int c = 0; c < ROUTE_MAX_CLASSES; c++) a->lex_floor[c] = -INFINITY;
}

/* Enters a word into class c's top: the rare case (most words of a
 * request beat no class's floor), kept out of line so that the common
 * path of acc_word needs few registers. */
static __attribute__((noinline)) void lex_enter(word_acc *a, int c, float score, int32_t row) {
    int top = a->m->lex_top;
    float *best = a->lex + c * ROUTE_LEX_TOP_MAX;
    int32_t *rows = a->lex_row + c * ROUTE_LEX_TOP_MAX;
    route_lex_insert(best, rows, top, score, row);
    if (rows[top - 1] >= 0) a->lex_floor[c] = best[top - 1];
}

/* A word's scores in the soft lexicons: kept if among a class's top.
 * Most words cost one compare per class. */
static void lex_word(word_acc *a, const float *score, int32_t row) {
    for (int c = 0; c < a->m->n_classes; c++)
        if (score[c] > a->lex_floor[c]) lex_enter(a, c, score[c], row);
}

/* A word of the vocabulary: its packed row. */
static inline void acc_row(word_acc *a, int32_t row) {
    const route_model *m = a->m;
    const float *p = m->pack + (size_t)row * (size_t)m->pack_stride;
    /* one add for every part that is summed (each element is still its
     * own sum in word order); the others are read below */
    add_row8(a->sum, p, 1.0f, m->pack_stride);
    if (m->features & FEATS_CLUSTER) {
        add_row(a->hash, p + m->pack_cluster, 1.0f, m->n_out);
        a->nhash += m->n_tables;
    }
    if (m->features & FEATS_PROTO) max_row(a->pmax, p + m->pack_proto, m->n_proto);
    float g = m->features & FEATS_MIL ? p[m->pack_guard] : 0.0f;
    if ((m->features & FEATS_MIL) && (!a->gmax_row || g > a->gmax)) {
        a->gmax = g;
        a->gmax_row = row + 1;
    }
    if (m->features & FEATS_LEX) lex_word(a, p + m->pack_lex, row);
}

/* Hashed words and pairs (FEATS_UNIGRAM, FEATS_BIGRAM): out of line, so
 * that models without them (the default) classify with fewer registers. */
static __attribute__((noinline)) void acc_hashed(word_acc *a, uint64_t h, uint64_t bigram) {
    const route_model *m = a->m;
    int no = m->n_out;
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

static void acc_word(void *ctx, const char *w, size_t len, const vocab_entry *e, uint64_t h,
                     uint64_t bigram) {
    word_acc *a = ctx;
    (void)w;
    (void)len;
    if (e && e->row >= 0) acc_row(a, e->row);
    if (a->m->features & (FEATS_UNIGRAM | FEATS_BIGRAM)) acc_hashed(a, h, bigram);
}

/* 1 / (word weight sum + prior): prior_e for the mean word vector,
 * prior_w for the lexicon densities. */
static float mean_scale(float prior, const word_acc *a) {
    return a->sum[0] > 0 ? 1.0f / (a->sum[0] + prior) : 0.0f;
}

/* The part of each text that is read: at most a quarter of the budget for
 * the system prompt (it is often a long generic preamble), the rest for
 * the user message, whose beginning states the task. */
static void cut(const route_model *m, size_t *slen, size_t *ulen) {
    size_t budget = m->max_bytes;
    if (*slen > budget / 4) *slen = budget / 4;
    if (*ulen > budget - *slen) *ulen = budget - *slen;
}

/* Sets a->mem, the guard memory's raise of the logit (0 without
 * FEATS_MEM): the memory of the words and pairs read over the words +
 * ROUTE_MEM_PRIOR, and a->mem_unit, what one stored unit adds. */
static void scan(const route_model *m, const char *sys, size_t slen, const char *user, size_t ulen,
                 feat_word_fn fn, void *ctx, float *hand, word_acc *a) {
    feat_state s;
    feat_begin(&s, &m->vocab, fn, ctx);
    if (sys && slen) feat_feed(&s, sys, slen);
    if (user && ulen) feat_feed(&s, user, ulen);
    feat_end(&s, hand);
    if (!a || !(m->features & FEATS_MEM)) return;
    a->mem_unit = 1.0f / (ROUTE_MEM_SCALE * ((float)s.words + ROUTE_MEM_PRIOR));
    a->mem = (float)s.mem * a->mem_unit;
}

/* The named features of a scanned request. They are clipped to the range
 * seen in training: a linear model must not extrapolate from a value it
 * never saw (a whole file of code when no training text had any). */
static void named_features(const route_model *m, const word_acc *a, float *x) {
    float inv = mean_scale(m->prior_w, a);
    for (int c = 0; c < m->n_proto; c++) {
        x[FEAT_HAND_N + 2 * c] = a->sum[m->pack_proto + c] * inv;
        x[FEAT_HAND_N + 2 * c + 1] = a->pmax[c];
    }
    for (int j = 0; j < m->nx; j++)
        x[j] = x[j] < m->hand_lo[j] ? m->hand_lo[j] : x[j] > m->hand_hi[j] ? m->hand_hi[j] : x[j];
}

/* 1/sqrt(n): hashed counts are normalised for length like the mean vector. */
static float hash_scale(const route_model *m, uint32_t n) {
    return n ? 1.0f / sqrtf((float)n + m->prior_h) : 0.0f;
}

/* The hidden layer's share of the logits (explanations leave it out: it
 * has no per-word share). */
static void hidden_logits(const route_model *m, const word_acc *a, const float *hand, float inv, float *z) {
    int nh = m->n_hidden, no = m->n_out;
    float h[ROUTE_MAX_HIDDEN];
    for (int k = 0; k < nh; k++) h[k] = m->hid_b[k] + a->sum[m->pack_hid + k] * inv;
    for (int j = 0; j < m->nx; j++) add_row8(h, m->hid_w + j * nh, hand[j], nh);
    for (int k = 0; k < nh; k++) add_row(z, m->hid_v + k * no, tanhf(h[k]), no);
}

static void logits_of(const route_model *m, const word_acc *a, const float *hand, float *z) {
    int no = m->n_out;
    float inv = mean_scale(m->prior_e, a), hs = hash_scale(m, a->nhash);
    for (int o = 0; o < no; o++) z[o] = m->bias[o] + a->sum[1 + o] * inv + a->hash[o] * hs;
    for (int j = 0; j < m->nx; j++) add_row(z, m->hand_w + j * no, hand[j], no);
    if (m->features & FEATS_MIL) z[m->n_classes] += a->gmax;
    z[m->n_classes] += a->mem;
    if (m->features & FEATS_HIDDEN) hidden_logits(m, a, hand, inv, z);
    for (int c = 0; c < m->n_classes && (m->features & FEATS_LEX); c++)
        z[c] += route_lex_mean(a->lex + c * ROUTE_LEX_TOP_MAX, a->lex_row + c * ROUTE_LEX_TOP_MAX, m->lex_top);
}

void route_model_logits(const route_model *m, const char *sys, size_t slen, const char *user,
                        size_t ulen, float *z) {
    word_acc a;
    float hand[ROUTE_NX_MAX];
    acc_init(&a, m);
    if (!sys) slen = 0;
    if (!user) ulen = 0;
    cut(m, &slen, &ulen);
    scan(m, sys, slen, user, ulen, acc_word, &a, hand, &a);
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
 * alike explains nothing). Repeated words add up in a small hash table
 * on the stack; names point into the request until the end. */
#define EXPLAIN_SLOTS 512   /* power of two; more than the words of a cut request */

typedef struct explain_ctx {
    const route_model *m;
    int out;               /* output explained */
    int relative;          /* subtract the mean over router classes */
    float inv_wsum, hs;
    float gmax;            /* the guard's max-pooled word score, to credit */
    float mem_unit;        /* FEATS_MEM: what a unit of a word's memory adds */
    int32_t gmax_row;
    float lex[ROUTE_LEX_SLOTS];         /* FEATS_LEX: each pooled word's share of its class's logit */
    int32_t lex_row[ROUTE_LEX_SLOTS];   /* their rows (-1: none, or credited) */
    int n;                 /* slots used */
    uint64_t keys[EXPLAIN_SLOTS];   /* word hash, or 1 + index of a named feature */
    float weight[EXPLAIN_SLOTS];
    const char *name[EXPLAIN_SLOTS];   /* NULL: named feature */
    uint32_t len[EXPLAIN_SLOTS];
} explain_ctx;

static float share(const explain_ctx *x, const float *row) {
    if (!x->relative) return row[x->out];
    float mean = 0;
    for (int o = 0; o < x->m->n_classes; o++) mean += row[o];
    return row[x->out] - mean / (float)x->m->n_classes;
}

static void explain_add(explain_ctx *x, uint64_t key, const char *name, size_t len, float wt) {
    uint32_t i = (uint32_t)(key * 0x9e3779b97f4a7c15ull >> 40) & (EXPLAIN_SLOTS - 1);
    while (x->keys[i] && x->keys[i] != key) i = (i + 1) & (EXPLAIN_SLOTS - 1);
    if (!x->keys[i]) {
        if (4 * (x->n + 1) > 3 * EXPLAIN_SLOTS) return;   /* full enough: later words are dropped */
        x->n++;
        x->keys[i] = key;
        x->name[i] = name;
        x->len[i] = (uint32_t)len;
        x->weight[i] = 0;
    }
    x->weight[i] += wt;
}

/* A word's share of the soft lexicons' logits: in each class whose top
 * pooled it, its score over the pooled count. Credited once. */
static float lex_share(explain_ctx *x, int32_t row) {
    const route_model *m = x->m;
    float z[ROUTE_MAX_CLASSES + 1] = {0};
    int found = 0;
    for (int c = 0; c < m->n_classes; c++)
        for (int j = 0; j < m->lex_top; j++)
            if (x->lex_row[c * ROUTE_LEX_TOP_MAX + j] == row) {
                z[c] = x->lex[c * ROUTE_LEX_TOP_MAX + j];
                x->lex_row[c * ROUTE_LEX_TOP_MAX + j] = -1;
                found = 1;
            }
    return found ? share(x, z) : 0.0f;
}

static void explain_word(void *ctx, const char *w, size_t len, const vocab_entry *e, uint64_t h,
                         uint64_t bigram) {
    explain_ctx *x = ctx;
    const route_model *m = x->m;
    size_t no = (size_t)m->n_out;
    float wt = 0;
    (void)bigram;   /* a pair's weight is shared by two words; left out */
    if (e && e->row >= 0) {
        const float *p = m->pack + (size_t)e->row * (size_t)m->pack_stride;
        wt += x->inv_wsum * share(x, p + 1);
        if (m->features & FEATS_CLUSTER) wt += x->hs * share(x, p + m->pack_cluster);
    }
    if (m->hash_bits && (m->features & FEATS_UNIGRAM))
        wt += x->hs * share(x, m->hash_w + (h & (((uint64_t)1 << m->hash_bits) - 1)) * no);
    if (e && e->row == x->gmax_row && x->out == m->n_classes && (m->features & FEATS_MIL)) {
        wt += x->gmax;
        x->gmax = 0;   /* credit the first occurrence only */
    }
    if (e && e->row >= 0 && (m->features & FEATS_LEX) && x->out < m->n_classes) wt += lex_share(x, e->row);
    if (e && x->out == m->n_classes) wt += (float)lex_mem(e->flags) * x->mem_unit;
    explain_add(x, h, w, len, wt);
}

/* One scan explains the router's class and the guard together. */
static void explain_both(void *ctx, const char *w, size_t len, const vocab_entry *e, uint64_t h,
                         uint64_t bigram) {
    explain_ctx *x = ctx;
    explain_word(&x[0], w, len, e, h, bigram);
    if (x[1].m) explain_word(&x[1], w, len, e, h, bigram);
}

static void explain_init(explain_ctx *x, const route_model *m, const word_acc *a, int out, int relative) {
    memset(x->keys, 0, sizeof x->keys);   /* the other arrays are set on insert */
    x->n = 0;
    x->m = m;
    x->out = out;
    x->relative = relative;
    x->inv_wsum = mean_scale(m->prior_e, a);
    x->hs = hash_scale(m, a->nhash);
    x->gmax = a->gmax;
    x->mem_unit = a->mem_unit;
    x->gmax_row = a->gmax > 0 ? a->gmax_row - 1 : -1;
    memcpy(x->lex_row, a->lex_row, sizeof x->lex_row);
    for (int c = 0; c < m->n_classes && (m->features & FEATS_LEX); c++) {
        const int32_t *rows = a->lex_row + c * ROUTE_LEX_TOP_MAX;
        int n = 0;
        while (n < m->lex_top && rows[n] >= 0) n++;
        for (int j = 0; j < n; j++) x->lex[c * ROUTE_LEX_TOP_MAX + j] = a->lex[c * ROUTE_LEX_TOP_MAX + j] / (float)n;
    }
}

static void name_of(const explain_ctx *x, int i, route_feature *f) {
    const route_model *m = x->m;
    if (x->name[i]) {
        size_t len = x->len[i] < sizeof f->name ? x->len[i] : sizeof f->name - 1;
        for (size_t k = 0; k < len; k++) {
            char c = x->name[i][k];
            f->name[k] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        f->name[len] = '\0';
        return;
    }
    int j = (int)x->keys[i] - 1;
    if (j < FEAT_HAND_N)
        snprintf(f->name, sizeof f->name, "%s", feat_hand_names[j]);
    else
        snprintf(f->name, sizeof f->name, "%s:%.20s", (j - FEAT_HAND_N) % 2 ? "like" : "about",
                 proto_name(m, (j - FEAT_HAND_N) / 2));
}

/* Adds the named features and fills top[] with the ROUTE_TOP_N strongest
 * positive reasons, strongest first. */
static int explain_finish(explain_ctx *x, const float *hand, route_feature *top) {
    const route_model *m = x->m;
    for (int j = 0; j < m->nx; j++)
        explain_add(x, (uint64_t)j + 1, NULL, 0, (hand[j] - m->hand_mean[j]) * share(x, m->hand_w + j * m->n_out));
    int pick[ROUTE_TOP_N], n = 0;
    for (int i = 0; i < EXPLAIN_SLOTS; i++) {
        if (!x->keys[i] || !(x->weight[i] > 0)) continue;
        if (n < ROUTE_TOP_N) pick[n++] = i;
        else if (x->weight[i] > x->weight[pick[n - 1]]) pick[n - 1] = i;
        else continue;
        for (int at = n - 1; at > 0 && x->weight[pick[at]] > x->weight[pick[at - 1]]; at--) {
            int t = pick[at];
            pick[at] = pick[at - 1];
            pick[at - 1] = t;
        }
    }
    for (int i = 0; i < n; i++) {
        name_of(x, pick[i], &top[i]);
        top[i].weight = x->weight[pick[i]];
    }
    return n;
}

static void explain(const route_model *m, const char *sys, size_t slen, const char *user, size_t ulen,
                    const word_acc *a, const float *hand, route_decision *d) {
    explain_ctx x[2];
    int guard = m->has_guard && d->unsafe;   /* the guard's reasons matter when it refuses */
    explain_init(&x[0], m, a, d->domain, 1);
    if (guard) explain_init(&x[1], m, a, m->n_classes, 0);
    else x[1].m = NULL;
    float ignored[FEAT_HAND_N];
    scan(m, sys, slen, user, ulen, explain_both, x, ignored, NULL);
    d->n_top = explain_finish(&x[0], hand, d->top);
    if (guard) d->n_guard_top = explain_finish(&x[1], hand, d->guard_top);
}

int route_classify(const route_model *m, const char *sys, size_t slen, const char *user, size_t ulen,
                   unsigned flags, route_decision *d) {
    word_acc a;
    float hand[ROUTE_NX_MAX], z[ROUTE_MAX_CLASSES + 1];
    acc_init(&a, m);
    if (!sys) slen = 0;
    if (!user) ulen = 0;
    cut(m, &slen, &ulen);
    scan(m, sys, slen, user, ulen, acc_word, &a, hand, &a);
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
    d->guard_score = route_guard_score(m, z);
    d->unsafe = m->has_guard && d->guard_score >= m->guard_threshold;
    d->n_top = d->n_guard_top = 0;
    if (flags & ROUTE_EXPLAIN) explain(m, sys, slen, user, ulen, &a, hand, d);
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
