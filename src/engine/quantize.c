/* quantize: see quantize.h. GGUF v3 layout: magic, version, counts,
 * key/value pairs, tensor table, padding to the alignment, tensor data with
 * each tensor's start aligned. Strings are a u64 length and bytes. */
#include "engine/quantize.h"

#include "base/buf.h"
#include "base/xalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define ALIGNMENT 32

typedef struct wkv {
    char *key;
    buf val;               /* the encoded type id and value */
} wkv;

typedef struct wtensor {
    char *name;
    int type, n_dims;
    int64_t ne[4];
    uint64_t offset, nbytes;
} wtensor;

struct gguf_writer {
    wkv *kv;
    int n_kv;
    wtensor *t;
    int n_t;
    FILE *f;
    int cur;               /* tensor being written */
    uint64_t written;      /* bytes of it so far */
    uint64_t pos;          /* offset in the data section */
};

gguf_writer *gguf_writer_new(void) { return xcalloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_kv; i++) { free(w->kv[i].key); buf_free(&w->kv[i].val); }
    for (int i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* ---- encoding ---- */

static void put_u32(buf *b, uint32_t v) { uint8_t x[4] = {v, v >> 8, v >> 16, v >> 24}; buf_append(b, x, 4); }
static void put_u64(buf *b, uint64_t v) { put_u32(b, (uint32_t)v); put_u32(b, (uint32_t)(v >> 32)); }
static void put_str(buf *b, const char *s, size_t n) { put_u64(b, n); buf_append(b, s, n); }

static void put_f32(buf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}

/* A fresh (emptied) value slot for key, replacing an earlier one. */
static buf *slot(gguf_writer *w, const char *key) {
    for (int i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) { buf_clear(&w->kv[i].val); return &w->kv[i].val; }
    w->kv = xrealloc(w->kv, (size_t)(w->n_kv + 1) * sizeof *w->kv);
    wkv *kv = &w->kv[w->n_kv++];
    kv->key = xstrdup(key);
    kv->val = (buf)BUF_INIT;
    return &kv->val;
}

void gguf_writer_set_str(gguf_writer *w, const char *key, const char *val) {
    buf *b = slot(w, key);
    put_u32(b, GGUF_VT_STR);
    put_str(b, val, strlen(val));
}

void gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t val) {
    buf *b = slot(w, key);
    put_u32(b, GGUF_VT_U32);
    put_u32(b, val);
}

void gguf_writer_set_f32(gguf_writer *w, const char *key, float val) {
    buf *b = slot(w, key);
    put_u32(b, GGUF_VT_F32);
    put_f32(b, val);
}

static void arr_head(buf *b, int elem, size_t n) {
    put_u32(b, GGUF_VT_ARR);
    put_u32(b, (uint32_t)elem);
    put_u64(b, n);
}

void gguf_writer_set_str_arr(gguf_writer *w, const char *key, const char *const *vals, size_t n) {
    buf *b = slot(w, key);
    arr_head(b, GGUF_VT_STR, n);
    for (size_t i = 0; i < n; i++) put_str(b, vals[i], strlen(vals[i]));
}

void gguf_writer_set_f32_arr(gguf_writer *w, const char *key, const float *vals, size_t n) {
    buf *b = slot(w, key);
    arr_head(b, GGUF_VT_F32, n);
    for (size_t i = 0; i < n; i++) put_f32(b, vals[i]);
}

void gguf_writer_set_i32_arr(gguf_writer *w, const char *key, const int32_t *vals, size_t n) {
    buf *b = slot(w, key);
    arr_head(b, GGUF_VT_I32, n);
    for (size_t i = 0; i < n; i++) put_u32(b, (uint32_t)vals[i]);
}

static size_t scalar_size(int type) {
    switch (type) {
    case GGUF_VT_U8: case GGUF_VT_I8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_U16: case GGUF_VT_I16: return 2;
    case GGUF_VT_U32: case GGUF_VT_I32: case GGUF_VT_F32: return 4;
    case GGUF_VT_U64: case GGUF_VT_I64: case GGUF_VT_F64: return 8;
    default: return 0;
    }
}

/* The value without its type id (arrays of arrays recurse). */
static void put_value_body(buf *b, const gguf_value *v) {
    size_t sz = scalar_size(v->type);
    uint64_t bits = 0;
    switch (v->type) {
    case GGUF_VT_STR: put_str(b, v->str.s, v->str.len); return;
    case GGUF_VT_ARR:
        put_u32(b, v->arr.type);
        put_u64(b, v->arr.n);
        if (v->arr.type == GGUF_VT_STR || v->arr.type == GGUF_VT_ARR)
            for (uint64_t i = 0; i < v->arr.n; i++) put_value_body(b, &v->arr.items[i]);
        else
            buf_append(b, v->arr.raw, v->arr.n * scalar_size(v->arr.type));  /* already little-endian */
        return;
    case GGUF_VT_F32: { float f = (float)v->f64; memcpy(&bits, &f, 4); break; }
    case GGUF_VT_F64: memcpy(&bits, &v->f64, 8); break;
    case GGUF_VT_BOOL: bits = v->b != 0; break;
    case GGUF_VT_I8: case GGUF_VT_I16: case GGUF_VT_I32: case GGUF_VT_I64: bits = (uint64_t)v->i64; break;
    default: bits = v->u64; break;
    }
    for (size_t i = 0; i < sz; i++) buf_putc(b, (char)(bits >> (8 * i)));
}

void gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v) {
    buf *b = slot(w, key);
    put_u32(b, v->type);
    put_value_body(b, v);
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne) {
    w->t = xrealloc(w->t, (size_t)(w->n_t + 1) * sizeof *w->t);
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->type = type;
    t->n_dims = n_dims;
    int64_t rows = 1;
    for (int d = 0; d < 4; d++) {
        t->ne[d] = d < n_dims ? ne[d] : 1;
        if (d > 0) rows *= t->ne[d];
    }
    t->nbytes = gguf_row_bytes(type, t->ne[0]) * (uint64_t)rows;
    uint64_t off = 0;
    if (w->n_t > 0) {
        const wtensor *p = &w->t[w->n_t - 1];
        off = (p->offset + p->nbytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }
    t->offset = off;
    return w->n_t++;
}

/* ---- writing ---- */

__attribute__((format(printf, 3, 4)))
static int wfail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int out(gguf_writer *w, const void *p, size_t n, char *err, size_t errlen) {
    if (n && fwrite(p, 1, n, w->f) != n) return wfail(err, errlen, "gguf: write failed: %s", strerror(errno));
    return 0;
}

static int pad_to(gguf_writer *w, uint64_t target, char *err, size_t errlen) {
    static const char zeros[ALIGNMENT];
    if (target < w->pos) return wfail(err, errlen, "gguf: internal offset error");
    if (out(w, zeros, (size_t)(target - w->pos), err, errlen) < 0) return -1;
    w->pos = target;
    return 0;
}

int gguf_writer_begin(gguf_writer *w, FILE *f, char *err, size_t errlen) {
    buf h = BUF_INIT;
    buf_append(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, (uint64_t)w->n_t);
    put_u64(&h, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        put_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        buf_append(&h, w->kv[i].val.data, w->kv[i].val.len);
    }
    for (int i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&h, t->name, strlen(t->name));
        put_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&h, (uint64_t)t->ne[d]);
        put_u32(&h, (uint32_t)t->type);
        put_u64(&h, t->offset);
    }
    size_t padded = (h.len + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    while (h.len < padded) buf_putc(&h, 0);
    w->f = f;
    w->cur = 0;
    w->written = 0;
    w->pos = 0;
    int rc = out(w, h.data, h.len, err, errlen);
    buf_free(&h);
    return rc;
}

int gguf_writer_write(gguf_writer *w, const void *data, size_t n, char *err, size_t errlen) {
    while (n > 0) {
        if (w->cur >= w->n_t) return wfail(err, errlen, "gguf: more data than the declared tensors");
        wtensor *t = &w->t[w->cur];
        if (w->written == 0 && pad_to(w, t->offset, err, errlen) < 0) return -1;
        size_t take = t->nbytes - w->written < n ? (size_t)(t->nbytes - w->written) : n;
        if (out(w, data, take, err, errlen) < 0) return -1;
        w->written += take;
        w->pos += take;
        data = (const char *)data + take;
        n -= take;
        if (w->written == t->nbytes) { w->cur++; w->written = 0; }
    }
    return 0;
}

int gguf_writer_finish(gguf_writer *w, char *err, size_t errlen) {
    while (w->cur < w->n_t && w->t[w->cur].nbytes == 0) w->cur++;
    if (w->cur != w->n_t)
        return wfail(err, errlen, "gguf: tensor '%s' not completely written", w->t[w->cur].name);
    if (fflush(w->f) != 0) return wfail(err, errlen, "gguf: write failed: %s", strerror(errno));
    return 0;
}

/* ---- the quantiser ---- */

/* llama.cpp's general.file_type for a file mostly of type t. */
static uint32_t file_type(qtype t) {
    switch (t) {
    case QT_F32: return 0;
    case QT_F16: return 1;
    case QT_Q4_0: return 2;
    case QT_Q4_1: return 3;
    case QT_Q8_0: return 7;
    case QT_Q5_0: return 8;
    case QT_Q5_1: return 9;
    case QT_Q4_K: return 14;   /* Q4_K_S: every matrix Q4_K */
    case QT_Q5_K: return 16;   /* Q5_K_S */
    case QT_Q6_K: return 18;
    case QT_BF16: return 32;
    default: return 0;
    }
}

/* The type tensor t gets, or its own type when it stays as it is. */
static int target_type(const gguf_tensor *t, qtype type, FILE *log) {
    if (t->n_dims < 2) return t->type;
    if (!qtype_known(t->type) || (int)t->type == QT_Q8_K) {
        if (log) fprintf(log, "quantize: %s: type %s kept (cannot convert it)\n", t->name, gguf_dtype_name(t->type));
        return t->type;
    }
    if (t->ne[0] % (int64_t)qtype_block_elems(type)) {
        if (log)
            fprintf(log, "quantize: %s: rows of %lld are not a multiple of %zu, kept as %s\n", t->name,
                    (long long)t->ne[0], qtype_block_elems(type), gguf_dtype_name(t->type));
        return t->type;
    }
    return type;
}

/* Converts tensor t row by row into the writer. */
static int write_converted(gguf_writer *w, const gguf_tensor *t, qtype type, char *err, size_t errlen) {
    size_t n = (size_t)t->ne[0], rows = (size_t)(t->n_elements / t->ne[0]);
    size_t in_row = gguf_row_bytes(t->type, t->ne[0]), out_row = qtype_row_bytes(type, n);
    float *f = xmalloc(n * sizeof *f);
    uint8_t *q = xmalloc(out_row);
    int rc = 0;
    for (size_t r = 0; r < rows && rc == 0; r++) {
        dequantize_row((qtype)t->type, (const uint8_t *)t->data + r * in_row, f, n);
        quantize_row(type, f, q, n);
        rc = gguf_writer_write(w, q, out_row, err, errlen);
    }
    free(f);
    free(q);
    return rc;
}

int quantize_file(const char *in_path, const char *out_path, qtype type, FILE *log, char *err, size_t errlen) {
    if (!qtype_known(type) || type == QT_Q8_K) return wfail(err, errlen, "quantize: cannot write type %d", (int)type);
    gguf *g = gguf_open(in_path, err, errlen);
    if (!g) return -1;
    gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < gguf_n_kv(g); i++)
        if (strcmp(gguf_kv_key(g, i), "general.alignment") != 0)   /* we write with 32 */
            gguf_writer_set_value(w, gguf_kv_key(g, i), gguf_kv_value(g, i));
    gguf_writer_set_u32(w, "general.file_type", file_type(type));
    int n = gguf_n_tensors(g);
    int *types = xmalloc((size_t)(n ? n : 1) * sizeof *types);
    for (int i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        types[i] = target_type(t, type, log);
        gguf_writer_add_tensor(w, t->name, types[i], t->n_dims, t->ne);
    }
    FILE *f = fopen(out_path, "wb");
    int rc = f ? gguf_writer_begin(w, f, err, errlen) : wfail(err, errlen, "quantize: %s: %s", out_path, strerror(errno));
    for (int i = 0; i < n && rc == 0; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        rc = types[i] == (int)t->type ? gguf_writer_write(w, t->data, t->nbytes, err, errlen)
                                      : write_converted(w, t, (qtype)types[i], err, errlen);
    }
    if (rc == 0) rc = gguf_writer_finish(w, err, errlen);
    if (f && fclose(f) != 0 && rc == 0) rc = wfail(err, errlen, "quantize: %s: %s", out_path, strerror(errno));
    if (rc != 0 && f) remove(out_path);
    free(types);
    gguf_writer_free(w);
    gguf_close(g);
    return rc;
}
