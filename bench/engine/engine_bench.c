/* engine_bench: speed of the built-in engine on Llama-shaped models.
 *
 *   engine_bench gen OUT.gguf --size 110m|1b --type f32|q8_0|q4_0|q4_k
 *       writes a model with random weights (the compute and the memory
 *       traffic of a forward pass do not depend on the values, so random
 *       blocks with small scales stand in for trained weights);
 *   engine_bench run MODEL.gguf [--threads K] [--prompt N] [--gen M]
 *       load time, prefill and decode tokens/s, weight bytes read per token,
 *       and the bandwidth of reading those very bytes (the model's mapped
 *       matrices, and the repacked copies decode reads instead where it
 *       made them; the faster counts) with the same threads right after
 *       decoding: the roofline decode is compared with. Where the weights fit in the last-level
 *       cache (the VMs measured report 480 MiB), so do these reads, and the
 *       roofline is the cache's, not the DRAM's;
 *   engine_bench bw [--threads K]
 *       DRAM read bandwidth (best of several passes over 2 GiB), for
 *       reference.
 * Output lines are "key value" pairs, one run per line, for run.sh. */
#include "base/clock.h"
#include "base/xalloc.h"
#include "engine/llama.h"
#include "engine/quant.h"
#include "engine/quantize.h"
#include "engine/threadpool.h"

#include <math.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

typedef struct shape { const char *name; int dim, layers, heads, kv_heads, ffn, vocab; } shape;

static const shape shapes[] = {
    {"110m", 768, 12, 12, 12, 2048, 32000},   /* stories110M / Llama 2 style */
    {"1b", 2048, 16, 32, 8, 5632, 32000},     /* TinyLlama-like, 16 layers */
};

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* One random row of n elements of type t: random bytes, then each block's
 * scale fields overwritten with a small finite value so activations stay
 * bounded. */
static void random_row(qtype t, size_t n, float scale, uint8_t *out) {
    size_t bytes = qtype_row_bytes(t, n), bb = qtype_block_bytes(t);
    if (t == QT_F32) {
        for (size_t i = 0; i < n; i++) ((float *)out)[i] = ((float)(next() >> 40) / (1 << 24) * 2 - 1) * scale;
        return;
    }
    for (size_t i = 0; i < bytes; i += 8) {
        uint64_t r = next();
        memcpy(out + i, &r, bytes - i < 8 ? bytes - i : 8);
    }
    uint16_t d = fp32_to_fp16(t == QT_Q8_0 ? scale / 127 : scale / 8), dmin = fp32_to_fp16(scale / 64);
    for (size_t b = 0; b < bytes / bb; b++) {
        uint8_t *blk = out + b * bb;
        if (t == QT_Q6_K) memcpy(blk + bb - 2, &d, 2);
        else memcpy(blk, &d, 2);
        if (t == QT_Q4_K) { d = fp32_to_fp16(scale / 8 / 32); memcpy(blk, &d, 2); memcpy(blk + 2, &dmin, 2); }
    }
}

typedef int (*tensor_fn)(gguf_writer *w, const char *name, qtype t, int cols, int rows);

static int declare(gguf_writer *w, const char *name, qtype t, int cols, int rows) {
    int64_t ne[2] = {cols, rows};
    gguf_writer_add_tensor(w, name, rows > 1 ? (int)t : GGUF_F32, rows > 1 ? 2 : 1, ne);
    return 0;
}

static int emit(gguf_writer *w, const char *name, qtype t, int cols, int rows) {
    char err[256];
    qtype rt = rows > 1 ? t : QT_F32;
    size_t rb = qtype_row_bytes(rt, (size_t)cols);
    uint8_t *row = xmalloc(rb);
    int rc = 0;
    for (int r = 0; r < rows && rc == 0; r++) {
        if (rows == 1) for (int i = 0; i < cols; i++) ((float *)row)[i] = 1.0f;   /* norms */
        else random_row(rt, (size_t)cols, 1.0f / sqrtf((float)cols) * 1.7f, row);
        rc = gguf_writer_write(w, row, rb, err, sizeof err);
    }
    if (rc) fprintf(stderr, "gen: %s: %s\n", name, err);
    free(row);
    return rc;
}

/* Calls f for every tensor, in file order; nonzero if any call failed. */
static int tensors(const shape *s, qtype t, tensor_fn f, gguf_writer *w) {
    static const char *const names[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                        "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    int kv = s->kv_heads * (s->dim / s->heads);
    int cols[] = {s->dim, s->dim, s->dim, s->dim, s->dim, s->dim, s->dim, s->dim, s->ffn};
    int rows[] = {1, s->dim, kv, kv, s->dim, 1, s->ffn, s->ffn, s->dim};
    int bad = f(w, "token_embd.weight", t, s->dim, s->vocab) | f(w, "output_norm.weight", t, s->dim, 1) |
              f(w, "output.weight", t, s->dim, s->vocab);
    for (int l = 0; l < s->layers && !bad; l++)
        for (int k = 0; k < 9; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[k]);
            bad |= f(w, name, t, cols[k], rows[k]);
        }
    return bad;
}

static int gen(const char *path, const shape *s, qtype t) {
    gguf_writer *w = gguf_writer_new();
    char err[256] = "";
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "general.name", "msoa-bench-random");
    gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)s->dim);
    gguf_writer_set_u32(w, "llama.block_count", (uint32_t)s->layers);
    gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)s->ffn);
    gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)s->heads);
    gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)s->kv_heads);
    gguf_writer_set_u32(w, "llama.context_length", 2048);
    gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    tensors(s, t, declare, w);
    FILE *f = fopen(path, "wb");
    int rc = f ? gguf_writer_begin(w, f, err, sizeof err) : -1;
    if (rc == 0) rc = tensors(s, t, emit, w);
    if (rc == 0) rc = gguf_writer_finish(w, err, sizeof err);
    if (f && fclose(f)) rc = -1;
    if (rc) fprintf(stderr, "gen: %s: failed %s\n", path, err);
    gguf_writer_free(w);
    return rc ? 1 : 0;
}

/* ---- memory bandwidth ----
 *
 * Read bandwidth through the same pool as the model: memory ranges cut in
 * runs of at most 1 MiB, taken from a shared counter as the matrix products
 * take tiles, each word xor-ed into a sink. A prefetch past the end of a
 * range is harmless (prefetches never fault). */

#define BW_RUN ((size_t)1 << 20)
/* Reads are prefetched ahead, as the kernels prefetch theirs: the hardware
 * prefetcher alone got 20-40% less from the same memory here, which would
 * make the roofline too easy. Two ways, each pass done with both and the
 * faster kept: 2 KiB ahead into L1 (best from DRAM, 1-2 KiB measured best)
 * and 16 KiB ahead into L2, as the kernels do (from the last-level cache:
 * 25 vs 22 GB/s with 1 thread, 52 vs 37 with 2, on 110m-q8_0; with only
 * the first, 110m-q8_0 decoded at 106% of its 1-thread "roofline"). */
static const struct { int far, dist; } bw_ways[2] = {{0, 2048}, {1, 16384}};

typedef struct bw_job {
    const uint8_t **start;
    size_t *len;
    long n_runs;
    int way;                         /* bw_ways[way] */
    atomic_long next;
    uint64_t sink[64];
} bw_job;

static uint64_t xor_words(const uint8_t *p, size_t n, int way) {
    uint64_t a = 0, b = 0, c = 0, d = 0, w;
    size_t i = 0, dist = (size_t)bw_ways[way].dist;
    int far = bw_ways[way].far;
    for (; i + 32 <= n; i += 32) {
        if (i % 64 == 0) {
            if (far) __builtin_prefetch(p + i + dist, 0, 2);
            else __builtin_prefetch(p + i + dist);
        }
        const uint64_t *q = (const uint64_t *)(const void *)(p + i);
        a ^= q[0]; b ^= q[1]; c ^= q[2]; d ^= q[3];
    }
    for (; i + 8 <= n; i += 8) { memcpy(&w, p + i, 8); a ^= w; }
    return a ^ b ^ c ^ d;
}

static void bw_task(void *arg, int ith, int nth) {
    (void)nth;
    bw_job *j = arg;
    long lo, hi;
    uint64_t x = 0;
    while (tp_claim(&j->next, j->n_runs, 1, &lo, &hi))
        for (long r = lo; r < hi; r++) x ^= xor_words(j->start[r], j->len[r], j->way);
    j->sink[ith] ^= x;
}

/* Adds [p, p + n) to the job, cut in runs. */
static void bw_add(bw_job *j, const uint8_t *p, size_t n) {
    for (size_t off = 0; off < n; off += BW_RUN) {
        j->start = xrealloc(j->start, (size_t)(j->n_runs + 1) * sizeof *j->start);
        j->len = xrealloc(j->len, (size_t)(j->n_runs + 1) * sizeof *j->len);
        j->start[j->n_runs] = p + off;
        j->len[j->n_runs++] = n - off < BW_RUN ? n - off : BW_RUN;
    }
}

/* GB/s of the best of `passes` reads of the job's ranges, each way. */
static double bw_measure(bw_job *j, int threads, int passes) {
    size_t bytes = 0;
    for (long r = 0; r < j->n_runs; r++) bytes += j->len[r];
    threadpool *tp = tp_create(threads);
    double best = 0;
    for (int rep = 0; rep < 2 * passes; rep++) {
        j->way = rep % 2;
        atomic_store(&j->next, 0);
        uint64_t t0 = clock_now_ns();
        tp_run(tp, bw_task, j);
        double gbs = (double)bytes / (double)(clock_now_ns() - t0);
        if (gbs > best) best = gbs;
    }
    tp_destroy(tp);
    free(j->start);
    free(j->len);
    return best;
}

static void bw_add_range(void *j, const void *p, size_t n) { bw_add(j, p, n); }

/* The bytes a decoded token reads, where it reads them (the model's
 * repacked copies of Q4_0 and Q8_0 matrices, once made, else the mapped
 * file). The file's own matrices (every one but the embeddings, read one
 * row per token, unless the output shares them) are read too: the faster
 * of the two is the roofline, so that neither copy's pages (huge or not)
 * make it easier. They are read through a mapping of their own, as
 * gguf_open maps a file: the model's mapping no longer holds the pages of
 * repacked Q4_0 matrices (gguf_release), and reading them there would map
 * them again 4 KiB at a time, a slower read that would lower the roofline. */
static double weights_bandwidth(const char *path, const llama_model *m, int threads) {
    char err[512];
    gguf *g = gguf_open(path, err, sizeof err);
    if (!g) { fprintf(stderr, "%s\n", err); exit(1); }
    bw_job j = {.n_runs = 0, .next = 0}, used = {.n_runs = 0, .next = 0};
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->n_dims == 2 && (strcmp(t->name, "token_embd.weight") || llama_model_hparams(m)->tied_output))
            bw_add(&j, t->data, t->nbytes);
    }
    llama_weight_ranges(m, bw_add_range, &used);
    double best = fmax(bw_measure(&j, threads, 5), bw_measure(&used, threads, 5));
    gguf_close(g);
    return best;
}

static int bw(int threads) {
    size_t bytes = (size_t)2 << 30;   /* well beyond the last-level cache */
    uint64_t *buf = xmalloc(bytes);
    for (size_t i = 0; i < bytes / 8; i++) buf[i] = i;
    bw_job j = {.n_runs = 0, .next = 0};
    bw_add(&j, (const uint8_t *)buf, bytes);
    printf("bandwidth threads %d gb_s %.2f\n", threads, bw_measure(&j, threads, 5));
    free(buf);
    return 0;
}

/* ---- run ---- */

/* CPU seconds used by the process: on a shared machine the wall clock also
 * counts time spent waiting for a core, the CPU time does not. */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* The process's resident memory in MB (VmRSS), -1 if unknown. */
static double rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double mb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) mb = atof(line + 6) / 1024;
    if (f) fclose(f);
    return mb;
}

/* Prefill of the prompt then decode of n_gen tokens, `repeat` times from an
 * empty cache; the best time of each phase is kept (on a shared machine the
 * best run is the one least disturbed by the others). */
static int run(const char *path, int threads, int n_prompt, int n_gen, int repeat) {
    char err[512];
    uint64_t t0 = clock_now_ns();
    llama_model *m = llama_load(path, err, sizeof err);
    if (!m) { fprintf(stderr, "%s\n", err); return 1; }
    double load_ms = (double)(clock_now_ns() - t0) / 1e6;
    t0 = clock_now_ns();
    if (getenv("PREFAULT")) llama_prefault(m);
    double prefault_ms = (double)(clock_now_ns() - t0) / 1e6;
    const llama_hparams *hp = llama_model_hparams(m);
    llama_ctx *c = llama_ctx_new(m, n_prompt + n_gen + 1, threads);
    int32_t *toks = xmalloc((size_t)n_prompt * sizeof *toks);
    for (int i = 0; i < n_prompt; i++) toks[i] = (int32_t)(next() % (uint64_t)hp->n_vocab);
    /* the first token also maps the weights' pages: timed on its own */
    t0 = clock_now_ns();
    const float *logits = llama_forward(c, toks, 1);
    double first_ms = (double)(clock_now_ns() - t0) / 1e6, prefill_s = 1e30, decode_s = 1e30, decode_cpu = 0;
    /* what serving holds once the first token has made the repacked copies
     * (before the bandwidth passes below read the file's matrices again) */
    double rss = rss_mb();
    /* the weights' bandwidth before and after each decode, the best kept
     * like the best decode: on a shared machine both get the same chances */
    double wbw = weights_bandwidth(path, m, threads);
    for (int r = 0; r < repeat && logits; r++) {
        llama_ctx_rewind(c, 0);
        t0 = clock_now_ns();
        logits = llama_forward(c, toks, n_prompt);
        double p = (double)(clock_now_ns() - t0) / 1e9, cpu0 = cpu_seconds();
        t0 = clock_now_ns();
        for (int i = 0; i < n_gen && logits; i++) {
            int32_t next_tok = (int32_t)(next() % (uint64_t)hp->n_vocab);
            logits = llama_forward(c, &next_tok, 1);
        }
        double d = (double)(clock_now_ns() - t0) / 1e9;
        if (p < prefill_s) prefill_s = p;
        if (d < decode_s) { decode_s = d; decode_cpu = cpu_seconds() - cpu0; }
        wbw = fmax(wbw, weights_bandwidth(path, m, threads));
    }
    printf("model %s threads %d load_ms %.2f prefault_ms %.1f first_token_ms %.1f weight_mb %.1f prefill_tok_s %.2f "
           "decode_tok_s %.3f decode_cpu_ms_per_tok %.2f weights_bw_gb_s %.2f rss_mb %.0f kernels %s\n", path, threads,
           load_ms, prefault_ms, first_ms, (double)llama_weight_bytes(m) / 1e6, n_prompt / prefill_s, n_gen / decode_s,
           decode_cpu * 1000 / n_gen, wbw, rss, quant_kernels_best()->name);
    free(toks);
    llama_ctx_free(c);
    llama_free(m);
    return logits ? 0 : 1;
}

static const char usage[] =
    "usage: engine_bench gen OUT.gguf --size 110m|1b --type f32|q8_0|q4_0|q4_k\n"
    "       engine_bench run MODEL.gguf [--threads K] [--prompt N] [--gen M] [--repeat R]\n"
    "       engine_bench bw [--threads K]\n";

static const char *opt(int argc, char **argv, const char *name, const char *dflt) {
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return dflt;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "gen")) {
        const char *size = opt(argc, argv, "--size", "110m");
        int t = qtype_from_name(opt(argc, argv, "--type", "q4_0"));
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            if (!strcmp(shapes[i].name, size) && t >= 0) return gen(argv[2], &shapes[i], (qtype)t);
    } else if (argc >= 3 && !strcmp(argv[1], "run")) {
        return run(argv[2], atoi(opt(argc, argv, "--threads", "1")), atoi(opt(argc, argv, "--prompt", "64")),
                   atoi(opt(argc, argv, "--gen", "32")), atoi(opt(argc, argv, "--repeat", "3")));
    } else if (argc >= 2 && !strcmp(argv[1], "bw")) {
        return bw(atoi(opt(argc, argv, "--threads", "1")));
    }
    fputs(usage, stderr);
    return 2;
}
