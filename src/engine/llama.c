/* llama: see llama.h.
 *
 * The forward pass follows llama2.c's shape (embedding, then per layer:
 * RMSNorm, Q/K/V, RoPE, causal attention over the KV cache, output
 * projection, RMSNorm, SwiGLU FFN; final RMSNorm and logits), extended to a
 * batch of tokens so a prompt is read once per weight matrix rather than
 * once per token.
 *
 * Numerics follow llama.cpp's CPU backend closely enough to reproduce its
 * greedy output token for token (test_engine_llama checks this): the
 * activations are quantised to the weight type's activation format before
 * each product, the KV cache is F16 and the query and the softmax weights
 * are rounded to F16 before meeting it, sums run in ggml's order (see the
 * exact-order kernels in quant.h), RMSNorm sums in double and RoPE angles
 * are built by repeated multiplication in float. SwiGLU and the softmax
 * take quant_expf (within 1 ulp of exp, vectorised), not libm's expf.
 * Small differences would not matter to the quality, but they flip a
 * rounding somewhere and greedy text then diverges within a few dozen
 * tokens. */
#include "engine/llama.h"

#include "base/xalloc.h"
#include "engine/quant.h"
#include "engine/threadpool.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Tokens per batch step: bounds scratch memory while letting each weight row
 * be reused across many prompt tokens. */
#define CHUNK 64
/* Rows per tile in the products: their weights stay in L1 while every
 * token's activations pass over them. Later rows are prefetched meanwhile
 * (by the SIMD kernels themselves, see QUANT_PREFETCH_ROWS; here, the next
 * tile at a time, for the others): the hardware prefetcher alone left
 * decode at a fraction of the memory bandwidth on the virtual machines
 * measured. */
#define ROW_TILE 8
/* Attention sums over positions in multiples of this (weights beyond the
 * sequence are 0), as llama.cpp's padded KV cache does: same sums, same
 * order. */
#define ATT_PAD 32

/* A Q4_0 or Q8_0 matrix's rows repacked for the SIMD kernels (Q4_0:
 * quant_pack_q4_0_x16, no per-block reductions, about twice as fast as the
 * kernel on the file's layout; Q8_0: quant_pack_q8_0_x4, half the
 * instructions, with AVX-512 only). Made on first use, by the threads of the product that
 * first meets the matrix (each packs the tiles it computes), so that
 * loading stays a mapping of the file: load only reserves address space
 * for the copies (one anonymous mapping, 2 MiB pages where the kernel
 * gives them), the first token pays the copy (a few ms per 100 MB, next
 * to reading the file from disk), and the process then holds the copy
 * besides the file's pages (clean page cache, which the kernel reclaims
 * first), except for Q4_0 (see drop_file_rows). MSOA_REPACK=0 turns it
 * off. States go NONE -> BUSY (one product
 * packs it) -> READY. */
enum { PACK_NONE, PACK_BUSY, PACK_READY };

typedef struct wpack {
    atomic_int state;
    uint8_t *data;                      /* rows [0, pack_rows), same offsets as in the file */
    size_t bytes;
} wpack;

typedef struct wmat {
    const uint8_t *data;
    qtype type;
    int rows, cols;
    size_t row_bytes;
    wpack *pack;                        /* NULL: not repacked */
} wmat;

typedef struct layer {
    const float *attn_norm, *ffn_norm;
    const float *bq, *bk, *bv;          /* NULL when the file has none */
    wmat wq, wk, wv, wo, w_gate, w_up, w_down;
} layer;

struct llama_model {
    gguf *g;
    llama_hparams hp;
    wmat tok_embd, output;
    const float *output_norm;
    const float *rope_freqs;            /* Llama 3.1 per-frequency divisors, or NULL */
    layer *layers;
    float **owned;                      /* vectors converted to F32 at load */
    int n_owned;
    wpack *packs;                       /* one per repackable matrix */
    void *pack_map;                     /* the copies' reserved memory */
    size_t pack_map_len;
};

/* ---- loading ---- */

typedef struct loader {
    llama_model *m;
    char *err;
    size_t errlen;
} loader;

__attribute__((format(printf, 2, 3)))
static int load_fail(loader *ld, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (ld->err && ld->errlen) snprintf(ld->err, ld->errlen, "llama: %s", what);
    return -1;
}

static const gguf_tensor *find(loader *ld, const char *name, int required) {
    const gguf_tensor *t = gguf_find_tensor(ld->m->g, name);
    if (!t && required) load_fail(ld, "missing tensor '%s'", name);
    return t;
}

/* A 1-D vector of n floats: used in place when stored as F32, else
 * converted once. *out is NULL for an absent optional tensor. */
static int load_vec(loader *ld, const char *name, int n, int required, const float **out) {
    *out = NULL;
    const gguf_tensor *t = find(ld, name, required);
    if (!t) return required ? -1 : 0;
    if (t->n_elements != n) return load_fail(ld, "tensor '%s' has %lld elements, expected %d", name, (long long)t->n_elements, n);
    if (t->type == GGUF_F32) { *out = t->data; return 0; }
    if (t->type != GGUF_F16 && t->type != GGUF_BF16)
        return load_fail(ld, "tensor '%s': vector type %s not supported", name, gguf_dtype_name(t->type));
    float *v = xmalloc((size_t)n * sizeof *v);
    dequantize_row((qtype)t->type, t->data, v, (size_t)n);
    ld->m->owned = xrealloc(ld->m->owned, (size_t)(ld->m->n_owned + 1) * sizeof *ld->m->owned);
    ld->m->owned[ld->m->n_owned++] = v;
    *out = v;
    return 0;
}

static int load_mat(loader *ld, const char *name, int cols, int rows, int required, wmat *w) {
    memset(w, 0, sizeof *w);
    const gguf_tensor *t = find(ld, name, required);
    if (!t) return required ? -1 : 0;
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return load_fail(ld, "tensor '%s' is not %d x %d", name, rows, cols);
    if (!qtype_known(t->type) || t->type == GGUF_Q8_K)
        return load_fail(ld, "tensor '%s': type %s not supported", name, gguf_dtype_name(t->type));
    w->type = (qtype)t->type;
    w->row_bytes = qtype_row_bytes(w->type, (size_t)cols);
    if (!w->row_bytes) return load_fail(ld, "tensor '%s': row of %d not a multiple of its block", name, cols);
    w->data = t->data;
    w->rows = rows;
    w->cols = cols;
    return 0;
}

/* The matrices a token multiplies with, for those that walk them all. */
static int model_mats(const llama_model *m, const wmat **out) {
    int n = 0;
    out[n++] = &m->output;
    for (int i = 0; i < m->hp.n_layers; i++) {
        const layer *L = &m->layers[i];
        const wmat *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 7; k++) out[n++] = w[k];
    }
    return n;
}

/* The rows of w a repacked copy holds (whole groups of its kernel's, and
 * for Q8_0 whole 8-row tiles), 0 if the kernel table has no repacked
 * kernel for its type. */
static int pack_rows(const wmat *w) {
    const quant_kernels *k = quant_kernels_best();
    if (w->type == QT_Q4_0 && k->gemm_q4_0_x16p) return w->rows & ~15;
    if (w->type == QT_Q8_0 && k->dot4p_q8_0) return w->rows & ~7;
    return 0;
}

/* Marks the matrices to repack on first use (see wpack): those with at
 * least one group, when the kernel table has a repacked kernel for their
 * type. Only address space is reserved here (no page is touched); without
 * it, nothing is repacked. */
static void plan_packs(llama_model *m) {
    const char *env = getenv("MSOA_REPACK");
    if (env && !strcmp(env, "0")) return;
    const wmat **mats = xmalloc((size_t)(1 + 7 * m->hp.n_layers) * sizeof *mats);
    int n = model_mats(m, mats);
    size_t total = 0, huge = (size_t)2 << 20;
    for (int i = 0; i < n; i++) total += ((size_t)pack_rows(mats[i]) * mats[i]->row_bytes + 63) & ~(size_t)63;
    void *map = total ? mmap(NULL, total + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
                      : MAP_FAILED;
    if (map == MAP_FAILED) {
        free(mats);
        return;
    }
    m->pack_map = map;
    m->pack_map_len = total + huge;
    uint8_t *at = (uint8_t *)(((uintptr_t)map + huge - 1) & ~(uintptr_t)(huge - 1));
#ifdef MADV_HUGEPAGE
    madvise(at, total, MADV_HUGEPAGE);   /* a hint: without it, 4 KiB pages */
#endif
    m->packs = xcalloc((size_t)n, sizeof *m->packs);
    for (int i = 0; i < n; i++) {
        wmat *w = (wmat *)mats[i];   /* m's own, not const here */
        if (!pack_rows(w)) continue;
        atomic_init(&m->packs[i].state, PACK_NONE);
        m->packs[i].bytes = (size_t)pack_rows(w) * w->row_bytes;
        m->packs[i].data = at;
        at += (m->packs[i].bytes + 63) & ~(size_t)63;
        w->pack = &m->packs[i];
    }
    free(mats);
}

static int arch_rope_neox(const char *arch) {
    if (!strcmp(arch, "llama") || !strcmp(arch, "mistral")) return 0;
    if (!strcmp(arch, "qwen2")) return 1;
    return -1;
}

/* Reads {arch}.<key> as an integer; dflt < 0 means required. */
static int meta_int(loader *ld, const char *key, long dflt, int *out) {
    char full[128];
    int64_t v;
    snprintf(full, sizeof full, "%s.%s", ld->m->hp.arch, key);
    if (gguf_get_i64(ld->m->g, full, &v) < 0) {
        if (dflt < 0) return load_fail(ld, "missing or invalid metadata '%s'", full);
        v = dflt;
    }
    if (v < 0 || v > (1 << 30)) return load_fail(ld, "metadata '%s' = %lld out of range", full, (long long)v);
    *out = (int)v;
    return 0;
}

static float meta_float(loader *ld, const char *key, float dflt) {
    char full[128];
    float v;
    snprintf(full, sizeof full, "%s.%s", ld->m->hp.arch, key);
    return gguf_get_f32(ld->m->g, full, &v) == 0 ? v : dflt;
}

static int load_hparams(loader *ld) {
    llama_hparams *hp = &ld->m->hp;
    const char *arch = gguf_get_str(ld->m->g, "general.architecture");
    if (!arch) return load_fail(ld, "no general.architecture");
    if (strlen(arch) >= sizeof hp->arch || arch_rope_neox(arch) < 0)
        return load_fail(ld, "architecture '%s' not supported (llama, mistral, qwen2)", arch);
    strcpy(hp->arch, arch);
    hp->rope_neox = arch_rope_neox(arch);
    if (meta_int(ld, "embedding_length", -1, &hp->dim) < 0 || meta_int(ld, "block_count", -1, &hp->n_layers) < 0 ||
        meta_int(ld, "feed_forward_length", -1, &hp->ffn_dim) < 0 ||
        meta_int(ld, "attention.head_count", -1, &hp->n_heads) < 0 ||
        meta_int(ld, "attention.head_count_kv", hp->n_heads, &hp->n_kv_heads) < 0 ||
        meta_int(ld, "context_length", 2048, &hp->n_ctx_train) < 0)
        return -1;
    if (hp->dim < 1 || hp->n_layers < 1 || hp->ffn_dim < 1 || hp->n_heads < 1 || hp->n_kv_heads < 1 ||
        hp->n_heads % hp->n_kv_heads)
        return load_fail(ld, "inconsistent sizes (dim %d, %d layers, ffn %d, %d heads, %d kv heads)", hp->dim, hp->n_layers, hp->ffn_dim, hp->n_heads, hp->n_kv_heads);
    if (meta_int(ld, "attention.key_length", hp->dim / hp->n_heads, &hp->head_dim) < 0 ||
        meta_int(ld, "rope.dimension_count", hp->head_dim, &hp->rope_dim) < 0)
        return -1;
    if (hp->head_dim < 2 || hp->head_dim % 2 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return load_fail(ld, "bad head size %d / rope dimensions %d", hp->head_dim, hp->rope_dim);
    hp->rms_eps = meta_float(ld, "attention.layer_norm_rms_epsilon", 1e-5f);
    hp->rope_base = meta_float(ld, "rope.freq_base", 10000.0f);
    hp->rope_freq_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *scaling = gguf_get_str(ld->m->g, key);
    float factor = meta_float(ld, "rope.scaling.factor", meta_float(ld, "rope.scale_linear", 1.0f));
    if (scaling && strcmp(scaling, "linear") && strcmp(scaling, "none"))
        return load_fail(ld, "rope scaling '%s' not supported (linear)", scaling);
    if ((!scaling || !strcmp(scaling, "linear")) && factor > 0) hp->rope_freq_scale = 1.0f / factor;
    return 0;
}

static int load_layer(loader *ld, int i) {
    const llama_hparams *hp = &ld->m->hp;
    layer *L = &ld->m->layers[i];
    int q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim;
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s, i), n)
    if (load_vec(ld, NAME("attn_norm.weight"), hp->dim, 1, &L->attn_norm) < 0 ||
        load_vec(ld, NAME("ffn_norm.weight"), hp->dim, 1, &L->ffn_norm) < 0 ||
        load_vec(ld, NAME("attn_q.bias"), q_dim, 0, &L->bq) < 0 ||
        load_vec(ld, NAME("attn_k.bias"), kv_dim, 0, &L->bk) < 0 ||
        load_vec(ld, NAME("attn_v.bias"), kv_dim, 0, &L->bv) < 0 ||
        load_mat(ld, NAME("attn_q.weight"), hp->dim, q_dim, 1, &L->wq) < 0 ||
        load_mat(ld, NAME("attn_k.weight"), hp->dim, kv_dim, 1, &L->wk) < 0 ||
        load_mat(ld, NAME("attn_v.weight"), hp->dim, kv_dim, 1, &L->wv) < 0 ||
        load_mat(ld, NAME("attn_output.weight"), q_dim, hp->dim, 1, &L->wo) < 0 ||
        load_mat(ld, NAME("ffn_gate.weight"), hp->dim, hp->ffn_dim, 1, &L->w_gate) < 0 ||
        load_mat(ld, NAME("ffn_up.weight"), hp->dim, hp->ffn_dim, 1, &L->w_up) < 0 ||
        load_mat(ld, NAME("ffn_down.weight"), hp->ffn_dim, hp->dim, 1, &L->w_down) < 0)
        return -1;
#undef NAME
    return 0;
}

llama_model *llama_load_gguf(gguf *g, char *err, size_t errlen) {
    llama_model *m = xcalloc(1, sizeof *m);
    m->g = g;
    loader ld = {m, err, errlen};
    llama_hparams *hp = &m->hp;
    const gguf_tensor *emb;
    if (load_hparams(&ld) < 0 || !(emb = find(&ld, "token_embd.weight", 1))) goto fail;
    hp->n_vocab = emb->n_dims == 2 ? (int)emb->ne[1] : 0;
    if (load_mat(&ld, "token_embd.weight", hp->dim, hp->n_vocab, 1, &m->tok_embd) < 0 ||
        load_vec(&ld, "output_norm.weight", hp->dim, 1, &m->output_norm) < 0 ||
        load_mat(&ld, "output.weight", hp->dim, hp->n_vocab, 0, &m->output) < 0 ||
        load_vec(&ld, "rope_freqs.weight", hp->rope_dim / 2, 0, &m->rope_freqs) < 0)
        goto fail;
    hp->tied_output = m->output.data == NULL;
    if (hp->tied_output) m->output = m->tok_embd;
    m->layers = xcalloc((size_t)hp->n_layers, sizeof *m->layers);
    for (int i = 0; i < hp->n_layers; i++)
        if (load_layer(&ld, i) < 0) goto fail;
    plan_packs(m);
    return m;
fail:
    llama_free(m);
    return NULL;
}

llama_model *llama_load(const char *path, char *err, size_t errlen) {
    gguf *g = gguf_open(path, err, errlen);
    return g ? llama_load_gguf(g, err, errlen) : NULL;
}

void llama_free(llama_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->packs);
    if (m->pack_map) munmap(m->pack_map, m->pack_map_len);
    free(m->layers);
    gguf_close(m->g);
    free(m);
}

int llama_prefault(const llama_model *m) {
    const uint8_t *base = gguf_base(m->g);
    size_t size = gguf_file_size(m->g), page = (size_t)sysconf(_SC_PAGESIZE);
    if ((uintptr_t)base % page) return -1;   /* a caller's buffer, not our mapping */
#ifdef MADV_POPULATE_READ
    if (madvise((void *)base, size, MADV_POPULATE_READ) == 0) return 0;
#endif
    volatile uint8_t sink = 0;   /* older kernels: touch each page */
    for (size_t off = 0; off < size; off += page) sink ^= base[off];
    (void)sink;
    return 0;
}

const llama_hparams *llama_model_hparams(const llama_model *m) { return &m->hp; }
const gguf *llama_gguf(const llama_model *m) { return m->g; }

static size_t mat_bytes(const wmat *w) { return w->row_bytes * (size_t)w->rows; }

void llama_weight_ranges(const llama_model *m, void (*f)(void *arg, const void *p, size_t n), void *arg) {
    const wmat **mats = xmalloc((size_t)(1 + 7 * m->hp.n_layers) * sizeof *mats);
    int n = model_mats(m, mats);
    for (int i = 0; i < n; i++) {
        const wmat *w = mats[i];
        size_t packed = 0;
        if (w->pack && atomic_load_explicit(&w->pack->state, memory_order_acquire) == PACK_READY) {
            packed = w->pack->bytes;
            f(arg, w->pack->data, packed);
        }
        if (mat_bytes(w) > packed) f(arg, w->data + packed, mat_bytes(w) - packed);
    }
    free(mats);
}

size_t llama_weight_bytes(const llama_model *m) {
    size_t s = mat_bytes(&m->output);
    for (int i = 0; i < m->hp.n_layers; i++) {
        const layer *L = &m->layers[i];
        s += mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) + mat_bytes(&L->wo) +
             mat_bytes(&L->w_gate) + mat_bytes(&L->w_up) + mat_bytes(&L->w_down);
    }
    return s;
}

/* ---- context ---- */

/* The KV cache is F16, as in llama.cpp (half the memory of F32, and the
 * same roundings). K is [layer][kv_head][n_ctx][head_dim], so that a
 * head's keys are one contiguous run; V is stored transposed,
 * [layer][kv_dim][n_ctx], so that each output element of attention is one
 * contiguous dot product over positions. Both put kv head g at offset
 * g * head_dim * n_ctx within the layer. */
struct llama_ctx {
    const llama_model *m;
    threadpool *tp;
    int own_tp;                      /* made by llama_ctx_new, not shared */
    const quant_kernels *kern;
    int n_ctx, pos;
    uint16_t *k_cache, *v_cache;
    /* per-chunk activations, [CHUNK][width] */
    float *x, *xb, *q, *k, *v, *att, *gate, *up, *logits;
    float *scores;                   /* [thread][n_ctx + head_dim]: scores or weights, then the query */
    uint16_t *att_f16;               /* [thread][n_ctx + head_dim]: the query or the weights in F16 */
    uint8_t *act[2];                 /* quantised activations: Q8_0, Q8_K */
    size_t act_stride;               /* bytes per token in act[] */
    q8_0_aux *act_aux;               /* [token][block] of act[0], for repacked Q4_0 */
    int32_t *act_lanes;              /* quant_q8_0_lane_sums of act[0]'s first token, for repacked Q8_0 */
    float *rope_cs;                  /* [CHUNK][rope_dim]: rope_angles of the chunk's positions */
    _Atomic unsigned *kv_state;      /* [n_kv_heads]: see kv_stored */
    unsigned att_steps;              /* attention steps run */
};

llama_ctx *llama_ctx_new_shared(const llama_model *m, int n_ctx, threadpool *tp) {
    const llama_hparams *hp = &m->hp;
    llama_ctx *c = xcalloc(1, sizeof *c);
    c->tp = tp;
    c->m = m;
    c->kern = quant_kernels_best();
    c->n_ctx = n_ctx > 0 ? n_ctx : hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    c->n_ctx = (c->n_ctx + ATT_PAD - 1) / ATT_PAD * ATT_PAD;
    size_t kv_dim = (size_t)hp->n_kv_heads * hp->head_dim, q_dim = (size_t)hp->n_heads * hp->head_dim;
    size_t cache = (size_t)hp->n_layers * c->n_ctx * kv_dim;
    c->k_cache = xmalloc(cache * sizeof(uint16_t));
    c->v_cache = xcalloc(cache, sizeof(uint16_t));   /* padding positions are read (times 0) */
    size_t wide = q_dim > (size_t)hp->dim ? q_dim : (size_t)hp->dim;
    if ((size_t)hp->ffn_dim > wide) wide = (size_t)hp->ffn_dim;
    c->x = xmalloc(CHUNK * (size_t)hp->dim * sizeof(float));
    c->xb = xmalloc(CHUNK * wide * sizeof(float));
    c->q = xmalloc(CHUNK * q_dim * sizeof(float));
    c->k = xmalloc(CHUNK * kv_dim * sizeof(float));
    c->v = xmalloc(CHUNK * kv_dim * sizeof(float));
    c->att = xmalloc(CHUNK * q_dim * sizeof(float));
    c->gate = xmalloc(CHUNK * (size_t)hp->ffn_dim * sizeof(float));
    c->up = xmalloc(CHUNK * (size_t)hp->ffn_dim * sizeof(float));
    c->logits = xmalloc((size_t)hp->n_vocab * sizeof(float));
    c->scores = xmalloc((size_t)tp_size(c->tp) * (c->n_ctx + hp->head_dim) * sizeof(float));
    c->att_f16 = xmalloc((size_t)tp_size(c->tp) * (c->n_ctx + hp->head_dim) * sizeof(uint16_t));
    /* Q8_0 and Q8_K both take at most 34/32 and 292/256 bytes per element */
    c->act_stride = qtype_row_bytes(QT_Q8_K, (wide + QK_K - 1) / QK_K * QK_K);
    for (int i = 0; i < 2; i++) c->act[i] = xmalloc(CHUNK * c->act_stride);
    c->act_aux = xmalloc(CHUNK * (wide / QK8_0 + 1) * sizeof *c->act_aux);
    c->act_lanes = xmalloc((wide / QK8_0 + 1) * 8 * sizeof *c->act_lanes);
    c->rope_cs = xmalloc(CHUNK * (size_t)hp->rope_dim * sizeof *c->rope_cs);
    c->kv_state = xcalloc((size_t)hp->n_kv_heads, sizeof *c->kv_state);
    return c;
}

llama_ctx *llama_ctx_new(const llama_model *m, int n_ctx, int n_threads) {
    threadpool *tp = tp_create(n_threads);
    if (!tp) return NULL;
    llama_ctx *c = llama_ctx_new_shared(m, n_ctx, tp);
    c->own_tp = 1;
    return c;
}

void llama_ctx_free(llama_ctx *c) {
    if (!c) return;
    if (c->own_tp) tp_destroy(c->tp);
    float *bufs[] = {c->x, c->xb, c->q, c->k, c->v, c->att, c->gate, c->up, c->logits, c->scores, c->rope_cs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c->k_cache);
    free(c->v_cache);
    free(c->att_f16);
    free(c->act[0]);
    free(c->act[1]);
    free(c->act_aux);
    free(c->act_lanes);
    free((void *)c->kv_state);
    free(c);
}

int llama_ctx_size(const llama_ctx *c) { return c->n_ctx; }
int llama_ctx_pos(const llama_ctx *c) { return c->pos; }

int llama_ctx_rewind(llama_ctx *c, int pos) {
    if (pos < 0 || pos > c->pos) return -1;
    /* Attention reads V up to a multiple of ATT_PAD, times weight 0: clear
     * what is forgotten so that nothing stale (an overflow to inf, say) can
     * turn into NaN there. */
    const llama_hparams *hp = &c->m->hp;
    size_t rows = (size_t)hp->n_layers * hp->n_kv_heads * hp->head_dim;
    for (size_t r = 0; r < rows; r++) memset(c->v_cache + r * c->n_ctx + pos, 0, (size_t)(c->pos - pos) * sizeof(uint16_t));
    c->pos = pos;
    return 0;
}

/* ---- matrix products ---- */

/* Up to three products sharing one input (Q/K/V, gate/up), run as one
 * parallel step: the rows of all of them are split across the threads. */
typedef struct mm_job {
    const quant_kernels *kern;
    int n_tok, n_mat;
    const wmat *w[3];
    float *out[3];                   /* [n_tok][rows] */
    const uint8_t *act[3];           /* the input in each matrix's activation type */
    size_t act_stride[3];
    uint8_t *packed[3];              /* a repacked copy to use (NULL: the file's rows) */
    int packing[3];                  /* ... which this step fills as it goes */
    const q8_0_aux *aux;             /* of act[0], for repacked Q4_0 */
    const int32_t *lanes;            /* of act[0], for repacked Q8_0 (one token) */
    long tiles[3], total;            /* tiles per matrix, work items in all */
    int swiglu;                      /* items are (gate, up) tile pairs, see mm_task */
    tp_ranges ranges;                /* of the tiles, see mm_task */
} mm_job;

static void prefetch(const uint8_t *p, size_t n) {
    for (size_t off = 0; off < n; off += 64) __builtin_prefetch(p + off);
}

/* o[r] = row r of w . a for r in [r0, r1), four rows at a time where a
 * kernel does that (same results). */
static void dot_rows(const quant_kernels *kern, const wmat *w, const uint8_t *a, long r0, long r1, float *o) {
    vec_dot4_fn dot4 = kern->dot4[w->type];
    long r = r0;
    if (dot4)
        for (; r + 4 <= r1; r += 4) dot4(w->data + (size_t)r * w->row_bytes, w->row_bytes, a, (size_t)w->cols, o + r);
    for (; r < r1; r++) o[r] = kern->dot[w->type](w->data + (size_t)r * w->row_bytes, a, (size_t)w->cols);
}

/* Rows per tile of matrix k: the repacked Q4_0 kernel's 16, or ROW_TILE. */
static long tile_rows(const mm_job *j, int k) { return j->packed[k] && j->w[k]->type == QT_Q4_0 ? 16 : ROW_TILE; }

/* One 8-row tile of a repacked Q8_0 matrix (packing it first if this step
 * makes the copy); 0 if it must be computed from the file's rows (prompt
 * batches: the kernel takes one token). */
static int mm_q8_tile(const mm_job *j, int k, long rt) {
    const wmat *w = j->w[k];
    size_t cols = (size_t)w->cols;
    uint8_t *g = j->packed[k] + (size_t)rt * w->row_bytes;
    if (j->packing[k])
        for (int h = 0; h < 2; h++)
            quant_pack_q8_0_x4(w->data + (size_t)(rt + 4 * h) * w->row_bytes, w->row_bytes, cols, g + 4 * h * w->row_bytes);
    if (j->n_tok != 1) return 0;
    for (int h = 0; h < 2; h++) j->kern->dot4p_q8_0(g + 4 * h * w->row_bytes, j->act[k], j->lanes, cols, j->out[k] + rt + 4 * h);
    return 1;
}

/* One 16-row group of a repacked matrix (packing it first if this step
 * makes the copy) for every token. */
static void mm_group(const mm_job *j, int k, long rt) {
    const wmat *w = j->w[k];
    size_t cols = (size_t)w->cols, stride = j->act_stride[k], nb = cols / QK8_0;
    uint8_t *g = j->packed[k] + (size_t)rt * w->row_bytes;
    if (j->packing[k]) quant_pack_q4_0_x16(w->data + (size_t)rt * w->row_bytes, w->row_bytes, cols, g);
    for (int t = 0; t < j->n_tok; t += 4) {
        int nt = j->n_tok - t < 4 ? j->n_tok - t : 4;
        j->kern->gemm_q4_0_x16p(g, j->act[k] + (size_t)t * stride, stride, j->aux + (size_t)t * nb, nt, cols,
                                j->out[k] + (size_t)t * w->rows + rt, (size_t)w->rows);
    }
}

/* Rows [r0, r1) of matrix k (r0 a multiple of its tile) for every token:
 * each tile of rows is prefetched one tile ahead, then reused by all the
 * tokens while it is in L1. */
static void mm_rows(const mm_job *j, int k, long r0, long r1) {
    const wmat *w = j->w[k];
    /* llama.cpp repacks Q4_0 matrices whose rows are a multiple of 8 and sums
     * them in that kernel's order (quant.h); so do we, 8 rows at a time */
    int x8 = w->type == QT_Q4_0 && w->rows % 8 == 0;
    vec_dotn_fn dotn = j->n_tok > 1 ? j->kern->dotn[w->type] : NULL;
    size_t tile_bytes = ROW_TILE * w->row_bytes, cols = (size_t)w->cols, stride = j->act_stride[k];
    long tr = tile_rows(j, k);
    for (long rt = r0; rt < r1; rt += tr) {
        long re = rt + tr < r1 ? rt + tr : r1;
        if (j->packed[k] && w->type == QT_Q4_0 && re - rt == 16) {
            mm_group(j, k, rt);
            continue;
        }
        if (j->packed[k] && w->type == QT_Q8_0 && re - rt == 8 && mm_q8_tile(j, k, rt)) continue;
        const uint8_t *tile = w->data + (size_t)rt * w->row_bytes;
        if (!j->kern->prefetches && re < w->rows) prefetch(tile + tile_bytes, tile_bytes);
        /* several tokens per call where a kernel unpacks weights once for them */
        int step = x8 || dotn ? 4 : 1;
        for (int t = 0; t < j->n_tok; t += step) {
            const uint8_t *a = j->act[k] + (size_t)t * stride;
            float *o = j->out[k] + (size_t)t * w->rows;
            int nt = j->n_tok - t < step ? j->n_tok - t : step;
            if (x8)
                j->kern->gemm_q4_0_x8(tile, w->row_bytes, a, stride, nt, cols, o + rt, (size_t)w->rows);
            else if (dotn)
                for (long r = rt; r < re; r++) dotn(w->data + (size_t)r * w->row_bytes, a, stride, nt, cols, o + r, (size_t)w->rows);
            else
                dot_rows(j->kern, w, a, rt, re, o);
        }
    }
}

/* The FFN's gate and up products fused: item g is tile g of both, and
 * the thread that computed them applies SwiGLU to those rows (gate =
 * silu(gate) * up, in place), spreading the exponentials over the threads
 * and into the time the step streams weights, instead of one thread doing
 * them all after the step. */
static void mm_swiglu_pair(const mm_job *j, long g) {
    long tr = tile_rows(j, 0), rows = j->w[0]->rows, r0 = g * tr, r1 = r0 + tr < rows ? r0 + tr : rows;
    mm_rows(j, 0, r0, r1);
    mm_rows(j, 1, r0, r1);
    for (int t = 0; t < j->n_tok; t++) {
        size_t at = (size_t)t * rows + (size_t)r0;
        j->kern->silu_mul(j->out[0] + at, j->out[1] + at, (size_t)(r1 - r0));
    }
}

/* Threads take runs of tiles (tp_ranges: each its own contiguous part
 * first, then the others' leftovers), across all the matrices of the job,
 * until none are left: a thread that is slowed down (the machine may be
 * shared) simply takes fewer. Each row's result does not depend on which
 * thread computes it. */
static void mm_task(void *arg, int ith, int nth) {
    mm_job *j = arg;
    const long *tiles = j->tiles;
    long lo, hi;
    while (j->swiglu && tp_ranges_claim(&j->ranges, ith, j->total / (8L * nth) + 1, &lo, &hi))
        for (long g = lo; g < hi; g++) mm_swiglu_pair(j, g);
    while (!j->swiglu && tp_ranges_claim(&j->ranges, ith, j->total / (8L * nth) + 1, &lo, &hi)) {
        long base = 0;
        for (int k = 0; k < j->n_mat; base += tiles[k], k++) {
            long t0 = lo > base ? lo - base : 0, t1 = hi - base < tiles[k] ? hi - base : tiles[k];
            long rows = j->w[k]->rows, tr = tile_rows(j, k), r0 = t0 * tr, r1 = t1 * tr < rows ? t1 * tr : rows;
            if (t0 >= t1) continue;
            mm_rows(j, k, r0, r1);
        }
    }
}

/* The input of a product in its activation type (Q8_0 with a SIMD kernel
 * where there is one: it is done once per product, on one thread). */
static void quantize_act(const llama_ctx *c, qtype at, const float *x, uint8_t *out, size_t n) {
    if (at == QT_Q8_0) c->kern->quantize_q8_0(x, out, n);
    else quantize_row(at, x, out, n);
}

/* Which copy of w the product uses: the repacked one when it is ready, or
 * when this step gets to make it (*packing set); else NULL, the file's
 * rows (not repacked, or another context is making the copy right now:
 * the results are the same either way). */
static uint8_t *use_pack(const wmat *w, int *packing) {
    wpack *p = w->pack;
    *packing = 0;
    if (!p) return NULL;
    int st = atomic_load_explicit(&p->state, memory_order_acquire);
    if (st == PACK_READY) return p->data;
    if (st != PACK_NONE || !atomic_compare_exchange_strong(&p->state, &st, PACK_BUSY)) return NULL;
    *packing = 1;
    return p->data;
}

/* Once a Q4_0 matrix's copy is ready, the rows it holds are not read from
 * the file any more (unless they are also the token embeddings, read one
 * row per token): their pages leave the process's resident memory, which
 * would otherwise hold those matrices twice (1b-q4_0: 443 MB more). The
 * rows after the copy's last group stay. Not Q8_0: its repacked kernel
 * takes one token, so prompts are still computed from the file's rows. */
static void drop_file_rows(const llama_model *m, const wmat *w) {
    if (w->type == QT_Q4_0 && w->data != m->tok_embd.data) gguf_release(m->g, w->data, w->pack->bytes);
}

/* The job of out[k] = in x w[k]^T for n_tok rows of in (width
 * w[0]->cols), ready to run: the input converted once per activation type
 * the matrices need. With swiglu (two matrices of one shape: gate and up),
 * out[0] becomes silu(gate) * up where the two matrices' tiles match
 * (j->swiglu), else the caller does it. */
static void mm_prepare(llama_ctx *c, const float *in, int n_tok, int n_mat, const wmat *const *w, float *const *out,
                       int swiglu, mm_job *jp) {
    mm_job j = {.kern = c->kern, .n_tok = n_tok, .n_mat = n_mat, .aux = c->act_aux, .lanes = c->act_lanes};
    int done[2] = {0, 0}, need_aux = 0, need_lanes = 0;
    size_t cols = (size_t)w[0]->cols;
    for (int k = 0; k < n_mat; k++) {
        j.w[k] = w[k];
        j.out[k] = out[k];
        j.packed[k] = use_pack(w[k], &j.packing[k]);
        need_aux |= j.packed[k] && w[k]->type == QT_Q4_0;
        need_lanes |= j.packed[k] && w[k]->type == QT_Q8_0 && n_tok == 1;
        qtype at = qtype_act_type(w[k]->type);
        if (at == QT_F32) {
            j.act[k] = (const uint8_t *)in;
            j.act_stride[k] = cols * sizeof(float);
            continue;
        }
        int slot = at == QT_Q8_K;
        if (!done[slot]) {
            for (int t = 0; t < n_tok; t++) quantize_act(c, at, in + (size_t)t * cols, c->act[slot] + (size_t)t * c->act_stride, cols);
            done[slot] = 1;
        }
        j.act[k] = c->act[slot];
        j.act_stride[k] = c->act_stride;
    }
    /* repacked matrices' input is act[0] (Q8_0) */
    if (need_aux)
        for (int t = 0; t < n_tok; t++)
            quant_q8_0_aux(c->act[0] + (size_t)t * c->act_stride, cols, c->act_aux + (size_t)t * (cols / QK8_0));
    if (need_lanes) quant_q8_0_lane_sums(c->act[0], cols, c->act_lanes);
    for (int k = 0; k < n_mat; k++) j.total += j.tiles[k] = (w[k]->rows + tile_rows(&j, k) - 1) / tile_rows(&j, k);
    j.swiglu = swiglu && n_mat == 2 && w[0]->rows == w[1]->rows && tile_rows(&j, 0) == tile_rows(&j, 1);
    if (j.swiglu) j.total = j.tiles[0];
    tp_ranges_init(&j.ranges, j.total, tp_size(c->tp));
    *jp = j;
}

/* After the step that ran j: the copies it made are ready. */
static void mm_finish(llama_ctx *c, const mm_job *j) {
    for (int k = 0; k < j->n_mat; k++)
        if (j->packing[k]) {
            atomic_store_explicit(&j->w[k]->pack->state, PACK_READY, memory_order_release);
            drop_file_rows(c->m, j->w[k]);
        }
}

/* mm_prepare's product as one step; returns whether SwiGLU was applied. */
static int matmul(llama_ctx *c, const float *in, int n_tok, int n_mat, const wmat *const *w, float *const *out,
                  int swiglu) {
    mm_job j;
    mm_prepare(c, in, n_tok, n_mat, w, out, swiglu, &j);
    tp_run(c->tp, mm_task, &j);
    mm_finish(c, &j);
    return j.swiglu;
}

static void matmul1(llama_ctx *c, const float *in, int n_tok, const wmat *w, float *out) {
    matmul(c, in, n_tok, 1, &w, &out, 0);
}

/* ---- the other operations ---- */

/* The sum of squares is in double, as 8 partial sums (element i goes to
 * sum i % 8) added pairwise: a fixed order, the same whatever the thread
 * count or kernel table, and 8 independent chains of additions instead of
 * one. Why: one thread does this between the parallel steps, twice a
 * layer, and 768 dependent additions took 0.45 us each time (110M). */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)x[i + l] * x[i + l];
    for (; i < n; i++) acc[i % 8] += (double)x[i] * x[i];
    double ss = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

static void add_bias(float *x, const float *b, int n) {
    if (b)
        for (int i = 0; i < n; i++) x[i] += b[i];
}

/* The cosine and sine of each RoPE angle at position pos (cs[2i], cs[2i+1]
 * for the i-th pair of dimensions), the same for every layer and head:
 * made once per token (rope_head applies them). */
static void rope_angles(const llama_model *m, int pos, float *cs) {
    const llama_hparams *hp = &m->hp;
    float theta_scale = powf(hp->rope_base, -2.0f / (float)hp->rope_dim), theta = (float)pos;
    for (int i = 0; i < hp->rope_dim / 2; i++, theta *= theta_scale) {
        float th = hp->rope_freq_scale * (m->rope_freqs ? theta / m->rope_freqs[i] : theta);
        cs[2 * i] = cosf(th);
        cs[2 * i + 1] = sinf(th);
    }
}

/* Rotates one head by rope_angles' cs. Normal mode pairs dimensions (2i,
 * 2i+1); NeoX mode pairs (i, i + rope_dim/2). */
static void rope_head(const llama_hparams *hp, float *v, const float *cs) {
    int half = hp->rope_dim / 2;
    for (int i = 0; i < half; i++) {
        int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
        v[b] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
    }
}

/* One attention step: (head, token) pairs, head-major; see att_task. */
typedef struct att_job {
    llama_ctx *c;
    int layer, n_tok, pos0;
    unsigned step;                   /* c->att_steps of this step, see kv_state */
    tp_ranges pairs;
} att_job;

/* Attention's loads run ATT_AHEAD keys (or rows of V) behind requests
 * for them. Why: the layer's products have pushed the KV cache out of L2,
 * and without the requests it came at under half the speed the products
 * stream their weights: 110M Q4_0 decode at positions 64-96, 2 threads,
 * the attention step took ~225 us of a ~1.5 ms token, ~180 with them. */
#define ATT_AHEAD 32

/* Requests the 8 rows (row_bytes each, contiguous) that are ATT_AHEAD rows
 * after row p, of n. */
static void att_prefetch_rows(const uint8_t *row_p, size_t row_bytes, int p, int n) {
    int ahead = n - p - ATT_AHEAD < 8 ? n - p - ATT_AHEAD : 8;
    if (ahead > 0) prefetch(row_p + ATT_AHEAD * row_bytes, (size_t)ahead * row_bytes);
}

/* Causal attention of one (token, head) pair: token t at position pos0+t
 * sees cache positions 0..pos0+t. The query and the softmax weights are
 * rounded to F16 and multiplied with the F16 cache, as llama.cpp does.
 * s and h16 are the thread's scratch (n_ctx + head_dim each). */
static void attend(llama_ctx *c, const att_job *j, int t, int h, float *s, uint16_t *h16) {
    const llama_hparams *hp = &c->m->hp;
    const quant_kernels *k = c->kern;
    int hd = hp->head_dim, group = hp->n_heads / hp->n_kv_heads;
    size_t kv_dim = (size_t)hp->n_kv_heads * hd, q_dim = (size_t)hp->n_heads * hd;
    const uint16_t *kc = c->k_cache + (size_t)j->layer * c->n_ctx * kv_dim;
    const uint16_t *vc = c->v_cache + (size_t)j->layer * c->n_ctx * kv_dim;
    float *qf = s + c->n_ctx, scale = 1.0f / sqrtf((float)hd);
    int n = j->pos0 + t + 1, p = 0;
    int n_pad = (n + ATT_PAD - 1) / ATT_PAD * ATT_PAD;
    size_t kvh = (size_t)(h / group) * hd * c->n_ctx;   /* the kv head's K and V */
    const uint16_t *kh = kc + kvh, *v = vc + kvh;
    size_t v_row = (size_t)n_pad * sizeof *v;
    /* the query, rounded to F16 (held as floats: it meets every key) */
    k->to_f16(c->q + t * q_dim + (size_t)h * hd, h16, (size_t)hd);
    k->from_f16(h16, qf, (size_t)hd);
    prefetch((const uint8_t *)kh, (size_t)(n < ATT_AHEAD ? n : ATT_AHEAD) * hd * sizeof *kh);
    if (k->dot_f16_f16_x8)
        for (; p + 8 <= n; p += 8) {
            att_prefetch_rows((const uint8_t *)(kh + (size_t)p * hd), hd * sizeof *kh, p, n);
            k->dot_f16_f16_x8(kh + (size_t)p * hd, (size_t)hd, qf, (size_t)hd, s + p);
        }
    for (; p + 4 <= n; p += 4) k->dot_f16_f16_x4(kh + (size_t)p * hd, (size_t)hd, qf, (size_t)hd, s + p);
    for (; p < n; p++) s[p] = k->dot_f16_f16(kh + (size_t)p * hd, qf, (size_t)hd);
    for (int i = 0; i < hd && i < ATT_AHEAD; i++) prefetch((const uint8_t *)(v + (size_t)i * c->n_ctx), v_row);
    float max = -INFINITY;
    for (p = 0; p < n; p++) {
        s[p] *= scale;
        if (s[p] > max) max = s[p];
    }
    double sum = 0;
    k->exp_shift(s, (size_t)n, max);
    for (p = 0; p < n; p++) sum += s[p];
    /* the weights, rounded to F16 likewise, zero up to n_pad */
    float inv = (float)(1.0 / sum);
    for (p = 0; p < n; p++) s[p] *= inv;
    k->to_f16(s, h16, (size_t)n);
    k->from_f16(h16, s, (size_t)n);
    memset(s + n, 0, (size_t)(n_pad - n) * sizeof *s);
    float *o = c->att + t * q_dim + (size_t)h * hd;
    int i = 0;
    if (k->dot_f16_f16_x8)
        for (; i + 8 <= hd; i += 8) {
            for (int r = i + ATT_AHEAD; r < i + ATT_AHEAD + 8 && r < hd; r++) prefetch((const uint8_t *)(v + (size_t)r * c->n_ctx), v_row);
            k->dot_f16_f16_x8(v + (size_t)i * c->n_ctx, c->n_ctx, s, (size_t)n_pad, o + i);
        }
    for (; i + 4 <= hd; i += 4) k->dot_f16_f16_x4(v + (size_t)i * c->n_ctx, c->n_ctx, s, (size_t)n_pad, o + i);
    for (; i < hd; i++) o[i] = k->dot_f16_f16(v + (size_t)i * c->n_ctx, s, (size_t)n_pad);
}

/* KV head g's keys and values of the step's tokens into the cache: bias
 * added, keys rotated, both rounded to F16. v16 is head_dim of scratch. */
static void store_kv(const llama_ctx *c, const att_job *j, int g, uint16_t *v16) {
    const llama_hparams *hp = &c->m->hp;
    const layer *L = &c->m->layers[j->layer];
    int hd = hp->head_dim;
    size_t kv_dim = (size_t)hp->n_kv_heads * hd, at = (size_t)g * hd;
    size_t head = ((size_t)j->layer * hp->n_kv_heads + g) * c->n_ctx * hd;   /* K and V alike */
    for (int t = 0; t < j->n_tok; t++) {
        float *k = c->k + t * kv_dim + at, *v = c->v + t * kv_dim + at;
        add_bias(k, L->bk ? L->bk + at : NULL, hd);
        rope_head(hp, k, c->rope_cs + (size_t)t * hp->rope_dim);
        c->kern->to_f16(k, c->k_cache + head + (size_t)(j->pos0 + t) * hd, (size_t)hd);
        add_bias(v, L->bv ? L->bv + at : NULL, hd);
        c->kern->to_f16(v, v16, (size_t)hd);
        for (int i = 0; i < hd; i++) c->v_cache[head + (size_t)i * c->n_ctx + j->pos0 + t] = v16[i];
    }
}

/* Stores KV head g's new keys and values (store_kv) if no pair of this
 * step has, else waits until the one that took it is done: kv_state[g] is
 * 2 * step while a thread stores, 2 * step + 1 once it is done. */
static void kv_stored(llama_ctx *c, const att_job *j, int g, uint16_t *v16) {
    unsigned st = atomic_load_explicit(&c->kv_state[g], memory_order_acquire), taken = 2 * j->step;
    if (st != taken && st != taken + 1 && atomic_compare_exchange_strong(&c->kv_state[g], &st, taken)) {
        store_kv(c, j, g, v16);
        atomic_store_explicit(&c->kv_state[g], taken + 1, memory_order_release);
    } else {
        tp_wait_until(&c->kv_state[g], taken + 1);
    }
}

/* A layer's attention as one step: the threads take (head, token) pairs,
 * head-major (tp_ranges: each its own part first, so a head stays with
 * one thread from one token to the next), and the first pair of a KV head
 * to come stores its new keys and values in the cache (kv_stored). Why
 * here, and not where Q/K/V are computed and between the steps: V is
 * stored transposed, one cache line per value, and those lines were last
 * read, in the previous token's attention, by whichever thread attended
 * the head; stored by another thread in the Q/K/V step, each line crossed
 * between the cores twice (110M Q4_0 decode: the Q/K/V step took ~21 us
 * where its weights take ~16). A thread now mostly stores what it reads
 * itself, and the rotations of Q and K are shared by the threads instead
 * of done by one between the steps. A wait ends once the thread storing
 * that head is done with it, which never waits meanwhile, so any subset of
 * the threads that includes the caller completes the step. */
static void att_task(void *arg, int ith, int nth) {
    (void)nth;
    att_job *j = arg;
    llama_ctx *c = j->c;
    const llama_hparams *hp = &c->m->hp;
    const float *bq = c->m->layers[j->layer].bq;
    int hd = hp->head_dim, group = hp->n_heads / hp->n_kv_heads;
    size_t scratch = (size_t)c->n_ctx + hd, q_dim = (size_t)hp->n_heads * hd;
    float *s = c->scores + ith * scratch;
    uint16_t *h16 = c->att_f16 + ith * scratch;
    long lo, hi;
    while (tp_ranges_claim(&j->pairs, ith, 1, &lo, &hi))
        for (long pair = lo; pair < hi; pair++) {
            int h = (int)(pair / j->n_tok), t = (int)(pair % j->n_tok);
            float *q = c->q + t * q_dim + (size_t)h * hd;
            kv_stored(c, j, h / group, h16);
            add_bias(q, bq ? bq + (size_t)h * hd : NULL, hd);
            rope_head(hp, q, c->rope_cs + (size_t)t * hp->rope_dim);
            attend(c, j, t, h, s, h16);
        }
}

/* Decode's Q/K/V products and attention as one step: item g is KV head g,
 * whose thread computes the rows of its keys and values and of its query
 * heads' queries, stores the new key and value and attends those heads.
 * Why: one synchronisation and one start of a weight stream fewer per
 * layer, and no wait for the last heads' rows (110M Q4_0 decode, 2
 * threads: 28.4 us per layer against 29.9 for the two steps and the gap
 * between them). No other item touches the KV head, so no kv_stored. */
typedef struct qkva_job {
    mm_job mm;
    att_job att;
    tp_ranges kv_heads;
} qkva_job;

static void qkva_task(void *arg, int ith, int nth) {
    (void)nth;
    qkva_job *q = arg;
    llama_ctx *c = q->att.c;
    const llama_hparams *hp = &c->m->hp;
    const float *bq = c->m->layers[q->att.layer].bq;
    long hd = hp->head_dim, group = hp->n_heads / hp->n_kv_heads;
    size_t scratch = (size_t)c->n_ctx + (size_t)hd;
    float *s = c->scores + ith * scratch;
    uint16_t *h16 = c->att_f16 + ith * scratch;
    long lo, hi;
    while (tp_ranges_claim(&q->kv_heads, ith, 1, &lo, &hi))
        for (long g = lo; g < hi; g++) {
            mm_rows(&q->mm, 0, g * group * hd, (g + 1) * group * hd);
            for (int k = 1; k < 3; k++) mm_rows(&q->mm, k, g * hd, (g + 1) * hd);
            store_kv(c, &q->att, (int)g, h16);
            for (long h = g * group; h < (g + 1) * group; h++) {
                float *qh = c->q + h * hd;
                add_bias(qh, bq ? bq + h * hd : NULL, (int)hd);
                rope_head(hp, qh, c->rope_cs);
                attend(c, &q->att, 0, (int)h, s, h16);
            }
        }
}

/* Whether decode runs Q/K/V and attention as one step (qkva_task): when
 * the rows of a head are whole tiles of the three products, and there are
 * enough KV heads to share (at least FUSE_KV_HEADS per thread: the items
 * are big, and with few of them the thread that takes the last one keeps
 * the others waiting; 1B, 8 KV heads for 2 threads, keeps two steps). */
#define FUSE_KV_HEADS 6
static int fuse_qkv_attention(const llama_ctx *c, const mm_job *j, int n_tok) {
    const llama_hparams *hp = &c->m->hp;
    if (n_tok != 1 || hp->n_kv_heads < FUSE_KV_HEADS * tp_size(c->tp)) return 0;
    for (int k = 0; k < 3; k++)
        if (hp->head_dim % tile_rows(j, k)) return 0;
    return 1;
}

static void attention_block(llama_ctx *c, int l, int n_tok) {
    const llama_hparams *hp = &c->m->hp;
    const layer *L = &c->m->layers[l];
    int dim = hp->dim;
    for (int t = 0; t < n_tok; t++)
        rmsnorm(c->xb + (size_t)t * dim, c->x + (size_t)t * dim, L->attn_norm, dim, hp->rms_eps);
    const wmat *w[3] = {&L->wq, &L->wk, &L->wv};
    float *out[3] = {c->q, c->k, c->v};
    att_job aj = {.c = c, .layer = l, .n_tok = n_tok, .pos0 = c->pos, .step = ++c->att_steps};
    qkva_job q;
    mm_prepare(c, c->xb, n_tok, 3, w, out, 0, &q.mm);
    if (fuse_qkv_attention(c, &q.mm, n_tok)) {
        q.att = aj;
        tp_ranges_init(&q.kv_heads, hp->n_kv_heads, tp_size(c->tp));
        tp_run(c->tp, qkva_task, &q);
        mm_finish(c, &q.mm);
    } else {
        tp_run(c->tp, mm_task, &q.mm);
        mm_finish(c, &q.mm);
        tp_ranges_init(&aj.pairs, (long)hp->n_heads * n_tok, tp_size(c->tp));
        tp_run(c->tp, att_task, &aj);
    }
    matmul1(c, c->att, n_tok, &L->wo, c->xb);
    for (size_t i = 0; i < (size_t)n_tok * dim; i++) c->x[i] += c->xb[i];
}

static void ffn_block(llama_ctx *c, int l, int n_tok) {
    const llama_hparams *hp = &c->m->hp;
    const layer *L = &c->m->layers[l];
    int dim = hp->dim;
    for (int t = 0; t < n_tok; t++)
        rmsnorm(c->xb + (size_t)t * dim, c->x + (size_t)t * dim, L->ffn_norm, dim, hp->rms_eps);
    const wmat *w[2] = {&L->w_gate, &L->w_up};
    float *out[2] = {c->gate, c->up};
    if (!matmul(c, c->xb, n_tok, 2, w, out, 1))
        c->kern->silu_mul(c->gate, c->up, (size_t)n_tok * hp->ffn_dim);
    matmul1(c, c->gate, n_tok, &L->w_down, c->xb);
    for (size_t i = 0; i < (size_t)n_tok * dim; i++) c->x[i] += c->xb[i];
}

/* One chunk of at most CHUNK tokens; leaves the final hidden states in x. */
static void forward_chunk(llama_ctx *c, const int32_t *tokens, int n_tok) {
    const llama_model *m = c->m;
    int dim = m->hp.dim;
    for (int t = 0; t < n_tok; t++) {
        dequantize_row(m->tok_embd.type, m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                       c->x + (size_t)t * dim, (size_t)dim);
        rope_angles(m, c->pos + t, c->rope_cs + (size_t)t * m->hp.rope_dim);
    }
    for (int l = 0; l < m->hp.n_layers; l++) {
        attention_block(c, l, n_tok);
        ffn_block(c, l, n_tok);
    }
    c->pos += n_tok;
}

const float *llama_forward(llama_ctx *c, const int32_t *tokens, int n) {
    const llama_hparams *hp = &c->m->hp;
    if (n < 1 || n > c->n_ctx - c->pos) return NULL;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab) return NULL;
    int last = 0;
    for (int done = 0; done < n; done += last) {
        last = n - done < CHUNK ? n - done : CHUNK;
        forward_chunk(c, tokens + done, last);
    }
    rmsnorm(c->xb, c->x + (size_t)(last - 1) * hp->dim, c->m->output_norm, hp->dim, hp->rms_eps);
    matmul1(c, c->xb, 1, &c->m->output, c->logits);
    return c->logits;
}
