/* metrics: see metrics.h.
 *
 * A family is a fixed table of series plus an open-addressing hash index
 * over it. A slot is fully written before its index entry (and the count the
 * scrape reads) is published with release order, so finding a series needs
 * no lock; adding one takes the family's mutex and looks again so two
 * threads cannot add the same labels twice. Whole-number counters are 64-bit atomic integers (exact
 * under any interleaving); USD amounts and histogram sums are doubles updated
 * by compare-and-swap. A histogram keeps per-bucket counts and is made
 * cumulative at scrape time; its _count is the +Inf bucket, so a scrape is
 * consistent with itself even while threads record. */
#include "api/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/xalloc.h"

#define MAX_LABELS 3
#define INDEX_SIZE (2 * METRICS_MAX_SERIES) /* a power of two, at most half full */

static const double bucket_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,   0.5,   1,      2.5,   5,    10,    30,    60};
#define N_BUCKETS (sizeof bucket_bounds / sizeof bucket_bounds[0])

typedef enum { COUNTER_INT, COUNTER_USD, HISTOGRAM } family_type;

typedef struct series {
    uint64_t hash;
    char *labels[MAX_LABELS];
    _Atomic uint64_t count;                 /* COUNTER_INT */
    _Atomic double value;                   /* COUNTER_USD; histogram sum */
    _Atomic uint64_t buckets[N_BUCKETS + 1]; /* last: above every bound */
} series;

typedef struct family {
    const char *name;
    const char *help;
    family_type type;
    const char *label_names[MAX_LABELS];
    int n_labels;
    pthread_mutex_t lock; /* adding series */
    _Atomic size_t n;
    _Atomic uint32_t index[INDEX_SIZE]; /* slot + 1; 0: empty */
    int overflow_logged;
    series slots[METRICS_MAX_SERIES];
} family;

#define FAMILY(nm, hp, ty, nl, ...) \
    {.name = nm, .help = hp, .type = ty, .n_labels = nl, .label_names = {__VA_ARGS__}, \
     .lock = PTHREAD_MUTEX_INITIALIZER}

static family f_requests = FAMILY("msoa_requests_total", "Requests answered, by route, HTTP status and node.",
                                  COUNTER_INT, 3, "route", "status", "node");
static family f_duration = FAMILY("msoa_request_duration_seconds", "Time from request to complete response.",
                                  HISTOGRAM, 1, "route");
static family f_first_chunk = FAMILY("msoa_time_to_first_chunk_seconds",
                                     "Time from request to the first streamed chunk.", HISTOGRAM, 0, NULL);
static family f_upstream = FAMILY("msoa_upstream_duration_seconds", "Duration of calls to nodes.", HISTOGRAM, 1,
                                  "node");
static family f_upstream_errors = FAMILY("msoa_upstream_errors_total", "Failed calls to nodes, by kind of failure.",
                                         COUNTER_INT, 2, "node", "kind");
static family f_tokens = FAMILY("msoa_tokens_total", "Tokens processed by nodes.", COUNTER_INT, 2, "node",
                                "direction");
static family f_cost = FAMILY("msoa_cost_usd_total", "USD spent at nodes.", COUNTER_USD, 1, "node");
static family f_baseline = FAMILY("msoa_baseline_cost_usd_total",
                                  "USD the same requests would have cost at the baseline model.", COUNTER_USD, 0, NULL);
static family f_saved = FAMILY("msoa_saved_usd_total", "USD saved against the baseline model.", COUNTER_USD, 0,
                               NULL);

/* In exposition order. */
static family *const families[] = {&f_requests, &f_duration, &f_first_chunk, &f_upstream, &f_upstream_errors,
                                   &f_tokens,   &f_cost,     &f_baseline,    &f_saved};
#define N_FAMILIES (sizeof families / sizeof families[0])

static void clear_family(family *f) {
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++)
        for (int l = 0; l < f->n_labels; l++) free(f->slots[i].labels[l]);
    memset(f->slots, 0, sizeof f->slots);
    for (size_t i = 0; i < INDEX_SIZE; i++) atomic_store(&f->index[i], 0);
    atomic_store(&f->n, 0);
    f->overflow_logged = 0;
}

void metrics_init(void) {
    for (size_t i = 0; i < N_FAMILIES; i++) clear_family(families[i]);
}

/* ------------------------------------------------------------------ */
/* Finding a series                                                   */

static uint64_t labels_hash(const char *const *values, int n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull; /* no byte of UTF-8 text: keeps ("ab","") apart from ("a","b") */
    }
    return h;
}

static int same_labels(const family *f, const series *s, uint64_t h, const char *const *values) {
    if (s->hash != h) return 0;
    for (int l = 0; l < f->n_labels; l++)
        if (strcmp(s->labels[l], values[l])) return 0;
    return 1;
}

/* The series with these labels, or NULL; *at is set to the empty index
 * entry where it would go. */
static series *lookup(family *f, uint64_t h, const char *const *values, size_t *at) {
    for (size_t i = h & (INDEX_SIZE - 1);; i = (i + 1) & (INDEX_SIZE - 1)) {
        uint32_t e = atomic_load_explicit(&f->index[i], memory_order_acquire);
        if (!e) {
            *at = i;
            return NULL;
        }
        if (same_labels(f, &f->slots[e - 1], h, values)) return &f->slots[e - 1];
    }
}

/* Fills slot `n` and publishes it at index entry `at`. Lock held. */
static series *add(family *f, size_t n, size_t at, uint64_t h, const char *const *values) {
    series *s = &f->slots[n];
    s->hash = h;
    for (int l = 0; l < f->n_labels; l++) s->labels[l] = xstrdup(values[l]);
    atomic_store_explicit(&f->n, n + 1, memory_order_release);
    atomic_store_explicit(&f->index[at], (uint32_t)n + 1, memory_order_release);
    return s;
}

/* The table is full: everything new goes to one series labelled "_other",
 * kept in the last slot. Lock held. */
static series *overflow(family *f) {
    static const char *const other[MAX_LABELS] = {"_other", "_other", "_other"};
    if (!f->overflow_logged) {
        log_warn("metrics: %s has %d label combinations; new ones are counted as \"_other\"", f->name,
                 METRICS_MAX_SERIES - 1);
        f->overflow_logged = 1;
    }
    uint64_t h = labels_hash(other, f->n_labels);
    size_t at;
    series *s = lookup(f, h, other, &at);
    return s ? s : add(f, METRICS_MAX_SERIES - 1, at, h, other);
}

static series *find(family *f, const char *const *values) {
    uint64_t h = labels_hash(values, f->n_labels);
    size_t at;
    series *s = lookup(f, h, values, &at);
    if (s) return s;
    pthread_mutex_lock(&f->lock);
    s = lookup(f, h, values, &at); /* added while we waited? */
    if (!s) {
        size_t n = atomic_load_explicit(&f->n, memory_order_relaxed);
        s = n < METRICS_MAX_SERIES - 1 ? add(f, n, at, h, values) : overflow(f);
    }
    pthread_mutex_unlock(&f->lock);
    return s;
}

/* ------------------------------------------------------------------ */
/* Recording                                                          */

static void add_double(_Atomic double *a, double v) {
    double old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, old + v, memory_order_relaxed, memory_order_relaxed)) {
    }
}

static void count(family *f, const char *const *values, uint64_t n) {
    atomic_fetch_add_explicit(&find(f, values)->count, n, memory_order_relaxed);
}

static void add_usd(family *f, const char *const *values, double usd) {
    if (!isfinite(usd) || usd <= 0) return;
    add_double(&find(f, values)->value, usd);
}

static void observe(family *f, const char *const *values, double seconds) {
    if (isnan(seconds)) return;
    if (seconds < 0) seconds = 0;
    size_t b = 0;
    while (b < N_BUCKETS && seconds > bucket_bounds[b]) b++;
    series *s = find(f, values);
    add_double(&s->value, seconds);
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
}

static const char *or_empty(const char *s) { return s ? s : ""; }

void metrics_request(const char *route, int status, const char *node, double seconds) {
    /* by hand for HTTP's three digits: snprintf cost more than the counting */
    char code[16];
    if (status >= 100 && status <= 999) {
        code[0] = (char)('0' + status / 100);
        code[1] = (char)('0' + status / 10 % 10);
        code[2] = (char)('0' + status % 10);
        code[3] = '\0';
    } else {
        snprintf(code, sizeof code, "%d", status);
    }
    const char *labels[] = {or_empty(route), code, or_empty(node)};
    count(&f_requests, labels, 1);
    observe(&f_duration, labels, seconds);
}

void metrics_first_chunk(double seconds) { observe(&f_first_chunk, NULL, seconds); }

void metrics_upstream(const char *node, double seconds) {
    const char *labels[] = {or_empty(node)};
    observe(&f_upstream, labels, seconds);
}

void metrics_upstream_error(const char *node, const char *kind) {
    const char *labels[] = {or_empty(node), or_empty(kind)};
    count(&f_upstream_errors, labels, 1);
}

void metrics_tokens(const char *node, uint64_t in, uint64_t out) {
    const char *in_labels[] = {or_empty(node), "in"}, *out_labels[] = {or_empty(node), "out"};
    count(&f_tokens, in_labels, in);
    count(&f_tokens, out_labels, out);
}

void metrics_cost(const char *node, double cost, double baseline, double saved) {
    const char *labels[] = {or_empty(node)};
    add_usd(&f_cost, labels, cost);
    add_usd(&f_baseline, NULL, baseline);
    add_usd(&f_saved, NULL, saved);
}

/* ------------------------------------------------------------------ */
/* Exposition                                                         */

/* Shortest text that reads back as the same double, with Prometheus'
 * spellings of the special values; t must hold 32 bytes. */
static const char *format_double(char *t, double v) {
    if (isnan(v)) return "NaN";
    if (isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    snprintf(t, 32, "%.15g", v);
    if (strtod(t, NULL) != v) snprintf(t, 32, "%.17g", v);
    return t;
}

static void put_double(buf *out, double v) {
    char t[32];
    buf_puts(out, format_double(t, v));
}

/* HELP text escapes \ and newline; label values also escape ". */
static void put_escaped(buf *out, const char *s, int quote) {
    for (; *s; s++) {
        if (*s == '\\') buf_puts(out, "\\\\");
        else if (*s == '\n') buf_puts(out, "\\n");
        else if (*s == '"' && quote) buf_puts(out, "\\\"");
        else buf_putc(out, *s);
    }
}

/* name{a="x",b="y"[,le="..."]} — braces left out when there is no label */
static void put_sample_name(buf *out, const family *f, const char *suffix, const series *s, const char *le) {
    buf_puts(out, f->name);
    buf_puts(out, suffix);
    if (f->n_labels == 0 && !le) return;
    buf_putc(out, '{');
    for (int l = 0; l < f->n_labels; l++) {
        buf_printf(out, "%s%s=\"", l ? "," : "", f->label_names[l]);
        put_escaped(out, s->labels[l], 1);
        buf_putc(out, '"');
    }
    if (le) buf_printf(out, "%sle=\"%s\"", f->n_labels ? "," : "", le);
    buf_putc(out, '}');
}

static void put_header(buf *out, const char *name, const char *help, const char *type) {
    buf_printf(out, "# HELP %s ", name);
    put_escaped(out, help, 0);
    buf_printf(out, "\n# TYPE %s %s\n", name, type);
}

static void render_histogram(buf *out, const family *f, const series *s) {
    uint64_t total = 0;
    for (size_t b = 0; b <= N_BUCKETS; b++) {
        char t[32];
        const char *le = b < N_BUCKETS ? format_double(t, bucket_bounds[b]) : "+Inf";
        total += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
        put_sample_name(out, f, "_bucket", s, le);
        buf_printf(out, " %llu\n", (unsigned long long)total);
    }
    put_sample_name(out, f, "_sum", s, NULL);
    buf_putc(out, ' ');
    put_double(out, atomic_load_explicit(&s->value, memory_order_relaxed));
    buf_putc(out, '\n');
    put_sample_name(out, f, "_count", s, NULL);
    buf_printf(out, " %llu\n", (unsigned long long)total);
}

static void render_family(buf *out, family *f) {
    static const series zero; /* an unlabelled family that saw nothing yet */
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    if (n == 0 && f->n_labels > 0) return;
    put_header(out, f->name, f->help, f->type == HISTOGRAM ? "histogram" : "counter");
    for (size_t i = 0; i < (n ? n : 1); i++) {
        const series *s = n ? &f->slots[i] : &zero;
        if (f->type == HISTOGRAM) {
            render_histogram(out, f, s);
            continue;
        }
        put_sample_name(out, f, "", s, NULL);
        buf_putc(out, ' ');
        if (f->type == COUNTER_INT)
            buf_printf(out, "%llu", (unsigned long long)atomic_load_explicit(&s->count, memory_order_relaxed));
        else
            put_double(out, atomic_load_explicit(&s->value, memory_order_relaxed));
        buf_putc(out, '\n');
    }
}

static void render_gauge(buf *out, const char *name, const char *help, long v) {
    put_header(out, name, help, "gauge");
    buf_printf(out, "%s %ld\n", name, v);
}

void metrics_render(buf *out, long open_connections, long open_streams) {
    for (size_t i = 0; i < N_FAMILIES; i++) render_family(out, families[i]);
    render_gauge(out, "msoa_open_connections", "Client connections open now.", open_connections);
    render_gauge(out, "msoa_open_streams", "Streamed responses in progress now.", open_streams);
}
