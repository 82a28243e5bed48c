/* test_engine_llama: the thread pool, the forward pass and the quantiser.
 *
 * - stories260K (F32) and its Q4_0 version must give exactly llama.cpp's
 *   greedy continuations (../shared/models/golden), 96 tokens per prompt;
 * - our own q4_0 quantisation of stories260K must be byte-identical to the
 *   reference file, and load and decode the same way;
 * - small random models written here (qwen2: NeoX RoPE, Q/K/V biases, tied
 *   output; llama: adjacent-pair RoPE, GQA; both with partial rotary
 *   dimensions and linear RoPE scaling) are compared with a plain double
 *   precision forward pass written out below, then quantised (q8_0, q4_k,
 *   q6_k) and compared with their F32 originals. Tolerances: F32 weights
 *   1e-2 of the largest logit (the KV cache is F16, as in llama.cpp);
 *   relative RMS logit error 0.08 for q8_0 and q6_k, 0.25 for q4_k;
 * - prefill in one batch or token by token, 1 or 2 threads, and contexts
 *   sharing a thread pool give bit-identical logits. */
#include "testlib.h"

#include "engine/llama.h"
#include "engine/quant.h"
#include "engine/quantize.h"
#include "engine/threadpool.h"
#include "engine/tokenizer.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- thread pool ---- */

/* Items [0, n) shared out with tp_claim: each must be done exactly once,
 * whichever threads join. */
typedef struct { atomic_long next; long n; atomic_int done[1001]; atomic_int caller_ran; } tp_arg;

static void tp_work(void *p, int ith, int nth) {
    tp_arg *a = p;
    long lo, hi;
    (void)nth;
    if (ith == 0) atomic_fetch_add(&a->caller_ran, 1);
    while (tp_claim(&a->next, a->n, 3, &lo, &hi))
        for (long i = lo; i < hi; i++) atomic_fetch_add(&a->done[i], 1);
}

/* Runs one step and checks that every item was done once. */
static int tp_step(threadpool *tp, tp_arg *a) {
    atomic_store(&a->next, 0);
    for (long i = 0; i < a->n; i++) atomic_store(&a->done[i], 0);
    tp_run(tp, tp_work, a);
    for (long i = 0; i < a->n; i++)
        if (atomic_load(&a->done[i]) != 1) return 0;
    return 1;
}

static void test_threadpool(void) {
    static tp_arg a = {.n = 1001};
    for (int n = 1; n <= 3; n++) {
        threadpool *tp = tp_create(n);
        CHECK(tp != NULL);
        if (!tp) continue;
        CHECK_EQ_INT(tp_size(tp), n);
        atomic_store(&a.caller_ran, 0);
        int ok = 1;
        for (int rep = 0; rep < 2000 && ok; rep++) ok = tp_step(tp, &a);   /* back to back: the spinning path */
        for (int rep = 0; rep < 3 && ok; rep++) {   /* with pauses: workers go to sleep */
            usleep(5000);
            ok = tp_step(tp, &a);
        }
        CHECK(ok);
        CHECK_EQ_INT(atomic_load(&a.caller_ran), 2003);
        tp_destroy(tp);
    }
    /* claims cover [0, n) in order, in runs of the size asked, the last cut short */
    atomic_long next = 0;
    long lo, hi, at = 0;
    while (tp_claim(&next, 100, 16, &lo, &hi)) {
        CHECK_EQ_INT(lo, at);
        CHECK_EQ_INT(hi - lo, hi == 100 ? 4 : 16);
        at = hi;
    }
    CHECK_EQ_INT(at, 100);
}

/* tp_ranges: every item done once whichever threads join (each starts in
 * its own part, then takes the others' leftovers), and the order a thread
 * takes them in: its own part from the front, the others' from the back. */
typedef struct { tp_ranges r; long n; atomic_int done[1001]; } ranges_arg;

static void ranges_work(void *p, int ith, int nth) {
    ranges_arg *a = p;
    long lo, hi;
    (void)nth;
    while (tp_ranges_claim(&a->r, ith, 7, &lo, &hi))
        for (long i = lo; i < hi; i++) atomic_fetch_add(&a->done[i], 1);
}

static void test_ranges(void) {
    static ranges_arg a = {.n = 1001};
    for (int n = 1; n <= 3; n++) {
        threadpool *tp = tp_create(n);
        CHECK(tp != NULL);
        if (!tp) continue;
        int ok = 1;
        for (int rep = 0; rep < 500 && ok; rep++) {
            tp_ranges_init(&a.r, a.n, n);
            for (long i = 0; i < a.n; i++) atomic_store(&a.done[i], 0);
            tp_run(tp, ranges_work, &a);
            for (long i = 0; i < a.n; i++) ok &= atomic_load(&a.done[i]) == 1;
        }
        CHECK(ok);
        tp_destroy(tp);
    }
    /* one thread (ith 1) of two parts of 100: [50, 100) in runs of 16,
     * then [0, 50) from the back, a run never more than half of what is
     * left in its part (rounded up) */
    tp_ranges r;
    tp_ranges_init(&r, 100, 2);
    long lo, hi, want[][2] = {{50, 66}, {66, 82}, {82, 91}, {91, 96}, {96, 98}, {98, 99}, {99, 100},
                              {34, 50}, {18, 34}, {9, 18}, {4, 9}, {2, 4}, {1, 2}, {0, 1}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        CHECK(tp_ranges_claim(&r, 1, 16, &lo, &hi));
        CHECK_EQ_INT(lo, want[k][0]);
        CHECK_EQ_INT(hi, want[k][1]);
    }
    CHECK(!tp_ranges_claim(&r, 0, 16, &lo, &hi));
    tp_ranges_init(&r, 0, 2);   /* an empty step */
    CHECK(!tp_ranges_claim(&r, 1, 16, &lo, &hi));
}

/* ---- golden outputs ---- */

static const char *const prompts[4] = {
    "Once upon a time", "Lily wanted to", "The cat sat on the", "Tom and his dog went to the park. They",
};

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    buf b = BUF_INIT;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf_append(&b, tmp, n);
    fclose(f);
    return buf_detach(&b);
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* Prompt plus 96 greedy tokens, rendered as llama.cpp's llama-simple prints
 * them (BOS text included). NULL if the model does not load. */
static char *greedy_text(const char *model_path, const char *prompt, int n_threads) {
    char err[256];
    llama_model *m = llama_load(model_path, err, sizeof err);
    if (!m) { fprintf(stderr, "  %s\n", err); return NULL; }
    tokenizer *tk = tokenizer_load(llama_gguf(m), err, sizeof err);
    llama_ctx *c = llama_ctx_new(m, 256, n_threads);
    int32_t *ids = NULL;
    int n = tk && c ? tokenizer_encode(tk, prompt, strlen(prompt), TOK_ADD_SPECIAL, &ids) : 0;
    int32_t seq[512];
    memcpy(seq, ids, (size_t)n * sizeof *seq);
    const float *logits = n > 0 ? llama_forward(c, ids, n) : NULL;
    for (int i = 0; i < 96 && logits; i++) {
        seq[n] = argmax(logits, llama_model_hparams(m)->n_vocab);
        logits = llama_forward(c, &seq[n++], 1);
    }
    buf out = BUF_INIT;
    if (logits) tokenizer_decode(tk, seq, n, TOK_RENDER_SPECIAL, &out);
    free(ids);
    llama_ctx_free(c);
    tokenizer_free(tk);
    llama_free(m);
    return logits ? buf_detach(&out) : NULL;
}

static void check_golden(const char *path, const char *golden_name, int n_threads) {
    char model_path[512];   /* test_shared_path's buffer is reused below */
    snprintf(model_path, sizeof model_path, "%s", path);
    for (int p = 0; p < 4; p++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/golden/%s.p%d.txt", golden_name, p + 1);
        char *want = read_file(test_shared_path(rel));
        size_t len = want ? strlen(want) : 0;
        if (len && want[len - 1] == '\n') want[len - 1] = 0;   /* llama-simple ends with a newline */
        char *got = greedy_text(model_path, prompts[p], n_threads);
        CHECK(want != NULL);
        CHECK_STR(got, want);
        free(want);
        free(got);
    }
}

static void test_golden_f32(void) { check_golden(test_shared_path("models/stories260K.gguf"), "stories260K", 1); }

static void test_golden_q4_0(void) {
    check_golden(test_shared_path("models/stories260K-Q4_0-mixed.gguf"), "stories260K-Q4_0-mixed", 2);
}

/* ---- quantiser on the real model ---- */

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char p[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static void test_quantize_q4_0(void) {
    char err[256];
    const char *out = tmp_path("q4_0.gguf");
    CHECK_EQ_INT(quantize_file(test_shared_path("models/stories260K.gguf"), out, QT_Q4_0, NULL, err, sizeof err), 0);
    gguf *a = gguf_open(out, err, sizeof err), *b = gguf_open(test_shared_path("models/stories260K-Q4_0-mixed.gguf"), err, sizeof err);
    CHECK(a && b);
    if (a && b) {
        CHECK_EQ_INT(gguf_n_tensors(a), gguf_n_tensors(b));
        int same = 0;
        for (int i = 0; i < gguf_n_tensors(a); i++) {
            const gguf_tensor *x = gguf_tensor_at(a, i), *y = gguf_find_tensor(b, x->name);
            same += y && x->type == y->type && x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes);
        }
        CHECK_EQ_INT(same, gguf_n_tensors(b));   /* byte for byte the reference Q4_0 */
        uint32_t ft = 0;
        CHECK(gguf_get_u32(a, "general.file_type", &ft) == 0 && ft == 2);
        CHECK_STR(gguf_get_str(a, "tokenizer.ggml.model"), "llama");
        CHECK_EQ_INT(gguf_find_tensor(a, "blk.0.ffn_down.weight")->type, GGUF_F32);
        CHECK_EQ_INT(gguf_find_tensor(a, "blk.0.attn_norm.weight")->type, GGUF_F32);
    }
    gguf_close(a);
    gguf_close(b);
    check_golden(out, "stories260K-Q4_0-mixed", 1);
}

static void test_quantize_q8_0(void) {
    char err[256];
    const char *out = tmp_path("q8_0.gguf");
    CHECK_EQ_INT(quantize_file(test_shared_path("models/stories260K.gguf"), out, QT_Q8_0, NULL, err, sizeof err), 0);
    char *got = greedy_text(out, prompts[0], 1);
    CHECK(got != NULL);
    /* 8 bits keep the story on the F32 model's track for a good while */
    char *want = read_file(test_shared_path("models/golden/stories260K.p1.txt"));
    if (got && want) CHECK(strncmp(got, want, 60) == 0);
    free(got);
    free(want);
    CHECK_EQ_INT(quantize_file("/nonexistent.gguf", out, QT_Q8_0, NULL, err, sizeof err), -1);
    CHECK_EQ_INT(quantize_file(test_shared_path("models/stories260K.gguf"), "/nonexistent/dir/x.gguf", QT_Q8_0, NULL, err, sizeof err), -1);
    CHECK_CONTAINS(err, "/nonexistent/dir/x.gguf");
}

/* ---- context behaviour ---- */

static void test_batch_threads_rewind(void) {
    char err[256];
    llama_model *m = llama_load(test_shared_path("models/stories260K-Q4_0-mixed.gguf"), err, sizeof err);
    CHECK(m != NULL);
    if (!m) return;
    int nv = llama_model_hparams(m)->n_vocab;
    int32_t toks[80];
    for (int i = 0; i < 80; i++) toks[i] = (i * 37 + 1) % nv;   /* more than one prefill chunk */
    float *ref = malloc((size_t)nv * sizeof *ref);
    llama_ctx *a = llama_ctx_new(m, 100, 1), *b = llama_ctx_new(m, 100, 2);
    memcpy(ref, llama_forward(a, toks, 80), (size_t)nv * sizeof *ref);
    const float *lb = NULL;
    for (int i = 0; i < 80; i++) lb = llama_forward(b, &toks[i], 1);
    CHECK(lb && memcmp(ref, lb, (size_t)nv * sizeof *ref) == 0);
    CHECK_EQ_INT(llama_ctx_pos(b), 80);
    /* rewind and replay the tail: same logits */
    CHECK_EQ_INT(llama_ctx_rewind(b, 50), 0);
    lb = llama_forward(b, toks + 50, 30);
    CHECK(lb && memcmp(ref, lb, (size_t)nv * sizeof *ref) == 0);
    CHECK_EQ_INT(llama_ctx_rewind(b, 81), -1);
    /* refusals leave the context as it was */
    int32_t bad = nv;
    CHECK(llama_forward(b, &bad, 1) == NULL);
    CHECK(llama_forward(b, toks, 0) == NULL);
    CHECK(llama_forward(b, toks, 80) == NULL);   /* 80 + 80 > 100 (rounded up to 128) */
    CHECK_EQ_INT(llama_ctx_pos(b), 80);
    CHECK_EQ_INT(llama_ctx_size(b), 128);
    llama_ctx_free(a);
    llama_ctx_free(b);
    /* two contexts taking turns on one shared pool: same results */
    threadpool *tp = tp_create(2);
    llama_ctx *s1 = llama_ctx_new_shared(m, 100, tp), *s2 = llama_ctx_new_shared(m, 100, tp);
    const float *l1 = NULL, *l2 = NULL;
    for (int i = 0; i < 80; i++) {
        l1 = llama_forward(s1, &toks[i], 1);
        if (i < 40) l2 = llama_forward(s2, &toks[i], 1);
    }
    CHECK(l1 && memcmp(ref, l1, (size_t)nv * sizeof *ref) == 0);
    l2 = llama_forward(s2, toks + 40, 40);
    CHECK(l2 && memcmp(ref, l2, (size_t)nv * sizeof *ref) == 0);
    llama_ctx_free(s1);
    llama_ctx_free(s2);
    tp_destroy(tp);
    free(ref);
    llama_free(m);
}

static void test_load_errors(void) {
    char err[256] = "";
    CHECK(llama_load("/nonexistent/model.gguf", err, sizeof err) == NULL);
    CHECK(err[0] != 0);
    err[0] = 0;
    CHECK(llama_load(test_shared_path("models/vocab/ggml-vocab-llama-spm.gguf"), err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "llama: ");
    llama_model *m = llama_load(test_shared_path("models/stories260K.gguf"), err, sizeof err);
    CHECK(m != NULL);
    if (!m) return;
    const llama_hparams *hp = llama_model_hparams(m);
    CHECK_STR(hp->arch, "llama");
    CHECK(hp->dim == 64 && hp->n_layers == 5 && hp->n_heads == 8 && hp->n_kv_heads == 4);
    CHECK(hp->n_vocab == 512 && hp->ffn_dim == 172 && hp->rope_dim == 8 && !hp->rope_neox && !hp->tied_output);
    /* per layer 4 * 64*64 (q, o) ... all F32: (64*64*2 + 64*32*2 + 3*64*172) * 4 bytes, plus output */
    CHECK_EQ_INT(llama_weight_bytes(m), (5 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 172) + 512 * 64) * 4);
    CHECK_EQ_INT(llama_prefault(m), 0);
    llama_free(m);
}

/* ---- synthetic models against a reference forward pass ---- */

typedef struct synth {
    const char *arch;
    int dim, layers, heads, kv_heads, ffn, vocab, bias, tied;
    int rope_dim;        /* 0: the whole head */
    float rope_factor;   /* linear RoPE scaling factor; 0: none */
} synth;

static uint64_t rng_state;

static float frand(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0) * 2 - 1);
}

/* Tensor values are a function of (name, index) so the reference can make
 * them again without reading the file. */
static float weight(const char *name, size_t i, int cols) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    rng_state = h ^ (i * 0x9E3779B97F4A7C15ull);
    if (!rng_state) rng_state = 1;
    frand();
    if (strstr(name, "norm")) return 1.0f + 0.2f * frand();
    if (strstr(name, "bias")) return 0.1f * frand();
    return frand() * 1.7f / sqrtf((float)cols);
}

static const char *drop_tensor;   /* a tensor write_synth leaves out, or NULL */

static void add(gguf_writer *w, const char *name, int cols, int rows) {
    if (drop_tensor && !strcmp(name, drop_tensor)) return;
    int64_t ne[2] = {cols, rows};
    gguf_writer_add_tensor(w, name, GGUF_F32, rows > 1 ? 2 : 1, ne);
}

static void put(gguf_writer *w, const char *name, int cols, int rows) {
    if (drop_tensor && !strcmp(name, drop_tensor)) return;
    char err[128];
    size_t n = (size_t)cols * rows;
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = weight(name, i, cols);
    CHECK_EQ_INT(gguf_writer_write(w, v, n * sizeof *v, err, sizeof err), 0);
    free(v);
}

/* Every tensor of the model, in file order, to declare or to write. */
static void tensors(gguf_writer *w, const synth *s, void (*f)(gguf_writer *, const char *, int, int)) {
    int hd = s->dim / s->heads, kv = s->kv_heads * hd;
    f(w, "token_embd.weight", s->dim, s->vocab);
    f(w, "output_norm.weight", s->dim, 1);
    if (!s->tied) f(w, "output.weight", s->dim, s->vocab);
    for (int l = 0; l < s->layers; l++) {
        char n[64];
#define T(suffix, c, r) (snprintf(n, sizeof n, "blk.%d." suffix, l), f(w, n, c, r))
        T("attn_norm.weight", s->dim, 1);
        T("attn_q.weight", s->dim, s->dim);
        T("attn_k.weight", s->dim, kv);
        T("attn_v.weight", s->dim, kv);
        if (s->bias) { T("attn_q.bias", s->dim, 1); T("attn_k.bias", kv, 1); T("attn_v.bias", kv, 1); }
        T("attn_output.weight", s->dim, s->dim);
        T("ffn_norm.weight", s->dim, 1);
        T("ffn_gate.weight", s->dim, s->ffn);
        T("ffn_up.weight", s->dim, s->ffn);
        T("ffn_down.weight", s->ffn, s->dim);
#undef T
    }
}

static int write_synth(const synth *s, const char *path) {
    gguf_writer *w = gguf_writer_new();
    char key[96], err[128];
#define KEY(k) (snprintf(key, sizeof key, "%s." k, s->arch), key)
    gguf_writer_set_str(w, "general.architecture", s->arch);
    gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)s->dim);
    gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)s->layers);
    gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)s->ffn);
    gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)s->heads);
    gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)s->kv_heads);
    gguf_writer_set_u32(w, KEY("context_length"), 512);
    gguf_writer_set_f32(w, KEY("rope.freq_base"), 50000.0f);
    gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    if (s->rope_dim) gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)s->rope_dim);
    if (s->rope_factor > 0) {
        gguf_writer_set_str(w, KEY("rope.scaling.type"), "linear");
        gguf_writer_set_f32(w, KEY("rope.scaling.factor"), s->rope_factor);
    }
#undef KEY
    tensors(w, s, add);
    FILE *f = fopen(path, "wb");
    int rc = f ? gguf_writer_begin(w, f, err, sizeof err) : -1;
    if (rc == 0) tensors(w, s, put);
    if (rc == 0) rc = gguf_writer_finish(w, err, sizeof err);
    if (f) fclose(f);
    gguf_writer_free(w);
    return rc;
}

/* y = W x for the synthetic tensor `name` (rows x cols), in double. */
static void ref_matvec(const char *name, const double *x, int cols, int rows, double *y) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += weight(name, (size_t)r * cols + c, cols) * x[c];
        y[r] = s;
    }
}

static void ref_rmsnorm(const char *name, const double *x, int n, double *y) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double k = 1 / sqrt(ss / n + 1e-6);
    for (int i = 0; i < n; i++) y[i] = x[i] * k * weight(name, i, n);
}

/* RoPE on the first rope_dim dimensions of each head; the rest pass. */
static void ref_rope(const synth *s, double *v, int n_heads, int hd, int pos) {
    int rd = s->rope_dim ? s->rope_dim : hd, neox = !strcmp(s->arch, "qwen2");
    double scale = s->rope_factor > 0 ? 1.0 / s->rope_factor : 1.0;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < rd / 2; i++) {
            double th = scale * pos * pow(50000.0, -2.0 * i / rd);
            int a = neox ? i : 2 * i, b = neox ? i + rd / 2 : 2 * i + 1;
            double x0 = v[h * hd + a], x1 = v[h * hd + b];
            v[h * hd + a] = x0 * cos(th) - x1 * sin(th);
            v[h * hd + b] = x0 * sin(th) + x1 * cos(th);
        }
}

/* The logits after the last of n tokens: a direct transcription of the
 * model's equations, no cache tricks, no batching, no quantisation. */
static void ref_forward(const synth *s, const int32_t *toks, int n, double *logits) {
    int d = s->dim, hd = d / s->heads, kv = s->kv_heads * hd;
    double *Ks = calloc((size_t)s->layers * n * kv, sizeof *Ks), *Vs = calloc((size_t)s->layers * n * kv, sizeof *Vs);
    double *x = calloc((size_t)d, sizeof *x), *xb = calloc((size_t)d, sizeof *x), *q = calloc((size_t)d, sizeof *x);
    double *att = calloc((size_t)d, sizeof *x), *o = calloc((size_t)d, sizeof *x), *w = calloc((size_t)n, sizeof *w);
    double *g = calloc((size_t)s->ffn, sizeof *g), *u = calloc((size_t)s->ffn, sizeof *u);
    char nm[64];
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < d; i++) x[i] = weight("token_embd.weight", (size_t)toks[t] * d + i, d);
        for (int l = 0; l < s->layers; l++) {
#define N(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, l), nm)
            double *K = Ks + (size_t)l * n * kv, *V = Vs + (size_t)l * n * kv;
            ref_rmsnorm(N("attn_norm.weight"), x, d, xb);
            ref_matvec(N("attn_q.weight"), xb, d, d, q);
            ref_matvec(N("attn_k.weight"), xb, d, kv, K + (size_t)t * kv);
            ref_matvec(N("attn_v.weight"), xb, d, kv, V + (size_t)t * kv);
            if (s->bias) {
                for (int i = 0; i < d; i++) q[i] += weight(N("attn_q.bias"), i, d);
                for (int i = 0; i < kv; i++) K[(size_t)t * kv + i] += weight(N("attn_k.bias"), i, kv);
                for (int i = 0; i < kv; i++) V[(size_t)t * kv + i] += weight(N("attn_v.bias"), i, kv);
            }
            ref_rope(s, q, s->heads, hd, t);
            ref_rope(s, K + (size_t)t * kv, s->kv_heads, hd, t);
            for (int h = 0; h < s->heads; h++) {
                int kh = h / (s->heads / s->kv_heads);
                double max = -1e300, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double dd = 0;
                    for (int i = 0; i < hd; i++) dd += q[h * hd + i] * K[(size_t)p * kv + kh * hd + i];
                    w[p] = dd / sqrt(hd);
                    if (w[p] > max) max = w[p];
                }
                for (int p = 0; p <= t; p++) sum += (w[p] = exp(w[p] - max));
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int p = 0; p <= t; p++) a += w[p] / sum * V[(size_t)p * kv + kh * hd + i];
                    att[h * hd + i] = a;
                }
            }
            ref_matvec(N("attn_output.weight"), att, d, d, o);
            for (int i = 0; i < d; i++) x[i] += o[i];
            ref_rmsnorm(N("ffn_norm.weight"), x, d, xb);
            ref_matvec(N("ffn_gate.weight"), xb, d, s->ffn, g);
            ref_matvec(N("ffn_up.weight"), xb, d, s->ffn, u);
            for (int i = 0; i < s->ffn; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_matvec(N("ffn_down.weight"), g, s->ffn, d, o);
            for (int i = 0; i < d; i++) x[i] += o[i];
#undef N
        }
    }
    ref_rmsnorm("output_norm.weight", x, d, xb);
    ref_matvec(s->tied ? "token_embd.weight" : "output.weight", xb, d, s->vocab, logits);
    free(Ks); free(Vs); free(x); free(xb); free(q); free(att); free(o); free(w); free(g); free(u);
}

static float *engine_logits(const char *path, const int32_t *toks, int n, int threads, int n_ctx) {
    char err[256];
    llama_model *m = llama_load(path, err, sizeof err);
    if (!m) { fprintf(stderr, "  %s\n", err); return NULL; }
    llama_ctx *c = llama_ctx_new(m, n_ctx, threads);
    const float *l = llama_forward(c, toks, n);
    int nv = llama_model_hparams(m)->n_vocab;
    float *out = l ? malloc((size_t)nv * sizeof *out) : NULL;
    if (out) memcpy(out, l, (size_t)nv * sizeof *out);
    llama_ctx_free(c);
    llama_free(m);
    return out;
}

static double rel_rms(const float *a, const float *b, int n) {
    double e = 0, r = 0;
    for (int i = 0; i < n; i++) { e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); r += (double)b[i] * b[i]; }
    return sqrt(e / r);
}

static void check_synth(const synth *s, const char *name) {
    char path[256];   /* tmp_path's buffers are reused below */
    snprintf(path, sizeof path, "%s", tmp_path(name));
    CHECK_EQ_INT(write_synth(s, path), 0);
    int32_t toks[9] = {1, 17, 5, 250, 3, 99, 17, 42, 7};
    int nt = 9;
    double *ref = malloc((size_t)s->vocab * sizeof *ref);
    ref_forward(s, toks, nt, ref);
    float *got = engine_logits(path, toks, nt, 2, 64);
    CHECK(got != NULL);
    if (!got) { free(ref); return; }
    /* a context shorter than a head (scratch sizes) gives the same logits */
    float *small = engine_logits(path, toks, nt, 1, 10);
    CHECK(small && memcmp(small, got, (size_t)s->vocab * sizeof *got) == 0);
    free(small);
    double maxabs = 0, maxerr = 0;
    for (int i = 0; i < s->vocab; i++) {
        maxabs = fmax(maxabs, fabs(ref[i]));
        maxerr = fmax(maxerr, fabs(ref[i] - got[i]));
    }
    if (getenv("VERBOSE")) fprintf(stderr, "  %s f32: %.3g of %.3g\n", s->arch, maxerr, maxabs);
    if (maxerr > 1e-2 * maxabs) {
        fprintf(stderr, "  %s: max logit error %.4g (largest logit %.4g)\n", s->arch, maxerr, maxabs);
        CHECK(maxerr <= 1e-2 * maxabs);
    }
    CHECK(maxabs > 0.5);   /* the comparison means something */
    /* quantised versions stay close to the F32 logits */
    static const struct { qtype t; double tol; } qs[] = {{QT_Q8_0, 0.08}, {QT_Q6_K, 0.08}, {QT_Q4_K, 0.25}, {QT_Q4_0, 0.25}};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        char err[256], qname[64];
        snprintf(qname, sizeof qname, "%s-%s", qtype_name(qs[k].t), name);
        const char *qpath = tmp_path(qname);
        if (quantize_file(path, qpath, qs[k].t, NULL, err, sizeof err) != 0) { fprintf(stderr, "  %s\n", err); CHECK(0); }
        gguf *g = gguf_open(qpath, err, sizeof err);
        CHECK(g && (int)gguf_find_tensor(g, "blk.0.attn_q.weight")->type == (int)qs[k].t);
        gguf_close(g);
        float *ql = engine_logits(qpath, toks, 9, 1, 64);
        CHECK(ql != NULL);
        if (ql) {
            double e = rel_rms(ql, got, s->vocab);
            if (getenv("VERBOSE")) fprintf(stderr, "  %s %s: %.3g\n", s->arch, qtype_name(qs[k].t), e);
            if (e > qs[k].tol) {
                fprintf(stderr, "  %s %s: relative logit error %.4g\n", s->arch, qtype_name(qs[k].t), e);
                CHECK(e <= qs[k].tol);
            }
        }
        free(ql);
        if (!getenv("KEEP")) remove(qpath);
    }
    free(ref);
    free(got);
    if (!getenv("KEEP")) remove(path);
}

/* Files that are valid GGUF but not a usable model: a one-line reason. */
static void expect_reject(const synth *s, const char *drop, const char *why) {
    char path[256], err[256] = "";
    snprintf(path, sizeof path, "%s", tmp_path("bad.gguf"));
    drop_tensor = drop;
    CHECK_EQ_INT(write_synth(s, path), 0);
    drop_tensor = NULL;
    llama_model *m = llama_load(path, err, sizeof err);
    CHECK(m == NULL);
    CHECK_CONTAINS(err, why);
    llama_free(m);
    remove(path);
}

static void test_load_rejects(void) {
    synth ok = {"llama", 64, 1, 4, 2, 96, 50, 0, 0, 0, 0};
    synth arch = ok, heads = ok;
    arch.arch = "gpt2";
    heads.kv_heads = 3;
    expect_reject(&arch, NULL, "architecture 'gpt2' not supported");
    expect_reject(&heads, NULL, "3 kv heads");
    expect_reject(&ok, "blk.0.ffn_up.weight", "missing tensor 'blk.0.ffn_up.weight'");
    expect_reject(&ok, "output_norm.weight", "missing tensor 'output_norm.weight'");
    /* and the same model complete loads */
    char path[256], err[256];
    snprintf(path, sizeof path, "%s", tmp_path("good.gguf"));
    CHECK_EQ_INT(write_synth(&ok, path), 0);
    llama_model *m = llama_load(path, err, sizeof err);
    CHECK(m != NULL);
    if (m) CHECK(!llama_model_hparams(m)->tied_output && llama_model_hparams(m)->head_dim == 16);
    llama_free(m);
    remove(path);
}

static void test_synthetic_qwen2(void) {
    synth s = {"qwen2", 256, 2, 4, 2, 512, 300, 1, 1, 0, 0};
    check_synth(&s, "qwen2.gguf");
}

static void test_synthetic_llama(void) {
    synth s = {"llama", 256, 2, 8, 2, 768, 260, 0, 0, 0, 0};
    check_synth(&s, "llama.gguf");
}

/* Partial rotary dimensions, linear RoPE scaling, 4 query heads per KV head
 * (the metadata paths the two models above leave at their defaults). */
static void test_synthetic_rope_variants(void) {
    synth a = {"llama", 256, 1, 8, 2, 512, 260, 0, 0, 16, 4.0f};
    check_synth(&a, "llama-rope.gguf");
    synth b = {"qwen2", 256, 1, 4, 1, 512, 300, 1, 0, 32, 2.0f};
    check_synth(&b, "qwen2-rope.gguf");
}

/* Decode with many KV heads runs Q/K/V and attention as one step (llama.c,
 * qkva_task) where a prompt runs them as two: token by token, with 1 and 2
 * threads, the logits are those of the prompt in one batch, bit for bit
 * (F32, Q8_0 and Q4_0, one query head per KV head and two, with biases). */
static void check_fused_decode(const synth *s, const char *name) {
    char path[256], qpath[300], err[256];
    snprintf(path, sizeof path, "%s", tmp_path(name));
    CHECK_EQ_INT(write_synth(s, path), 0);
    int32_t toks[20];
    for (int i = 0; i < 20; i++) toks[i] = (i * 53 + 7) % s->vocab;
    static const qtype types[] = {QT_F32, QT_Q8_0, QT_Q4_0};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        snprintf(qpath, sizeof qpath, "%s.%s", path, qtype_name(types[k]));
        if (types[k] != QT_F32 && quantize_file(path, qpath, types[k], NULL, err, sizeof err) != 0) {
            fprintf(stderr, "  %s\n", err);
            CHECK(0);
            continue;
        }
        llama_model *m = llama_load(types[k] == QT_F32 ? path : qpath, err, sizeof err);
        CHECK(m != NULL);
        if (!m) continue;
        llama_ctx *batch = llama_ctx_new(m, 32, 1);
        const float *ref = llama_forward(batch, toks, 20);
        CHECK(ref != NULL);
        for (int threads = 1; ref && threads <= 2; threads++) {
            llama_ctx *c = llama_ctx_new(m, 32, threads);
            const float *l = NULL;
            for (int i = 0; i < 20; i++) l = llama_forward(c, &toks[i], 1);
            CHECK(l && memcmp(ref, l, (size_t)s->vocab * sizeof *l) == 0);
            llama_ctx_free(c);
        }
        llama_ctx_free(batch);
        llama_free(m);
        if (types[k] != QT_F32) remove(qpath);
    }
    remove(path);
}

static void test_fused_decode(void) {
    synth mha = {"llama", 384, 2, 12, 12, 256, 300, 1, 0, 0, 0};
    check_fused_decode(&mha, "fused-mha.gguf");
    synth gqa = {"llama", 384, 2, 12, 6, 256, 300, 1, 0, 0, 0};
    check_fused_decode(&gqa, "fused-gqa.gguf");
}

/* Bytes of the ranges, and of those in the model's file mapping. */
typedef struct { const uint8_t *file; size_t file_size, bytes, in_file; } ranges;

static void add_range(void *arg, const void *p, size_t n) {
    ranges *r = arg;
    r->bytes += n;
    if ((const uint8_t *)p >= r->file && (const uint8_t *)p < r->file + r->file_size) r->in_file += n;
}

/* Q4_0 and Q8_0 matrices are repacked by their first product (see
 * llama.c): the logits are the same bit for bit with the copy (MSOA_REPACK
 * unset) and without it (MSOA_REPACK=0), prompt and decode, 1 and 2
 * threads; then a token reads as many weight bytes as before, from the
 * copy where the CPU has a repacked kernel for the type. */
static void check_repack(const char *path, qtype type, int group, int have_kernel) {
    char err[256];
    setenv("MSOA_REPACK", "0", 1);
    llama_model *plain = llama_load(path, err, sizeof err);
    unsetenv("MSOA_REPACK");
    llama_model *packed = llama_load(path, err, sizeof err);
    CHECK(plain && packed);
    if (!plain || !packed) { llama_free(plain); llama_free(packed); return; }
    int nv = llama_model_hparams(plain)->n_vocab;
    int32_t toks[24];
    for (int i = 0; i < 24; i++) toks[i] = (i * 53 + 7) % nv;
    for (int threads = 1; threads <= 2; threads++) {
        llama_ctx *a = llama_ctx_new(plain, 64, threads), *b = llama_ctx_new(packed, 64, threads);
        const float *la = llama_forward(a, toks, 16), *lb = llama_forward(b, toks, 16);
        CHECK(la && lb && memcmp(la, lb, (size_t)nv * sizeof *la) == 0);
        for (int i = 16; i < 24; i++) {
            la = llama_forward(a, &toks[i], 1);
            lb = llama_forward(b, &toks[i], 1);
            CHECK(la && lb && memcmp(la, lb, (size_t)nv * sizeof *la) == 0);
        }
        llama_ctx_free(a);
        llama_ctx_free(b);
    }
    ranges rp = {gguf_base(llama_gguf(plain)), gguf_file_size(llama_gguf(plain)), 0, 0};
    ranges rq = {gguf_base(llama_gguf(packed)), gguf_file_size(llama_gguf(packed)), 0, 0};
    llama_weight_ranges(plain, add_range, &rp);
    llama_weight_ranges(packed, add_range, &rq);
    CHECK(rp.bytes == llama_weight_bytes(plain) && rp.in_file == rp.bytes && rq.bytes == rp.bytes);
    /* the copy: the matrices' whole groups (the embeddings are not
     * multiplied with: these models have an output matrix) */
    const gguf *g = llama_gguf(packed);
    size_t want = 0;
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->type == (uint32_t)type && t->n_dims == 2 && strcmp(t->name, "token_embd.weight"))
            want += (size_t)(t->ne[1] / group * group) * qtype_row_bytes(type, (size_t)t->ne[0]);
    }
    CHECK(want > 0);
    if (have_kernel) CHECK_EQ_INT(rq.bytes - rq.in_file, want);
    else fprintf(stderr, "  (no repacked %s kernel on this CPU: the copy is not made)\n", qtype_name(type));
    llama_free(plain);
    llama_free(packed);
}

static void test_repack(void) {
    char err[256];
    const quant_kernels *k = quant_kernels_best();
    check_repack(test_shared_path("models/stories260K-Q4_0-mixed.gguf"), QT_Q4_0, 16, k->gemm_q4_0_x16p != NULL);
    const char *q8 = tmp_path("repack-q8_0.gguf");
    CHECK_EQ_INT(quantize_file(test_shared_path("models/stories260K.gguf"), q8, QT_Q8_0, NULL, err, sizeof err), 0);
    check_repack(q8, QT_Q8_0, 8, k->dot4p_q8_0 != NULL);
    remove(q8);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/msoa-test-llama-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    TEST(test_threadpool);
    TEST(test_ranges);
    TEST(test_load_errors);
    TEST(test_golden_f32);
    TEST(test_golden_q4_0);
    TEST(test_quantize_q4_0);
    TEST(test_quantize_q8_0);
    TEST(test_batch_threads_rewind);
    TEST(test_repack);
    TEST(test_load_rejects);
    TEST(test_synthetic_qwen2);
    TEST(test_synthetic_llama);
    TEST(test_synthetic_rope_variants);
    TEST(test_fused_decode);
    remove(tmp_path("q4_0.gguf"));
    remove(tmp_path("q8_0.gguf"));
    if (!getenv("KEEP")) rmdir(tmpdir);
    return test_done();
}
