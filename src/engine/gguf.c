/* gguf: see gguf.h.
 *
 * Parsing is a single forward pass with a bounds-checked cursor. Every
 * length read from the file is compared with the bytes that remain before
 * anything is allocated for it, so a hostile count costs nothing; all
 * strings and element tables go into an arena freed with the handle. */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/xalloc.h"

#define GGUF_MAGIC "GGUF"
#define DEFAULT_ALIGNMENT 32
#define MAX_ARRAY_DEPTH 8      /* nested arrays: bounds recursion on hostile input */
#define MAX_NAME_LEN 1024      /* keys and tensor names */

/* ---- type table ---- */

static const struct dtype_info {
    const char *name;
    int block, size;
} dtypes[GGUF_DTYPE_COUNT] = {
    [GGUF_F32] = {"F32", 1, 4},         [GGUF_F16] = {"F16", 1, 2},
    [GGUF_Q4_0] = {"Q4_0", 32, 18},     [GGUF_Q4_1] = {"Q4_1", 32, 20},
    [GGUF_Q5_0] = {"Q5_0", 32, 22},     [GGUF_Q5_1] = {"Q5_1", 32, 24},
    [GGUF_Q8_0] = {"Q8_0", 32, 34},     [GGUF_Q8_1] = {"Q8_1", 32, 36},
    [GGUF_Q2_K] = {"Q2_K", 256, 84},    [GGUF_Q3_K] = {"Q3_K", 256, 110},
    [GGUF_Q4_K] = {"Q4_K", 256, 144},   [GGUF_Q5_K] = {"Q5_K", 256, 176},
    [GGUF_Q6_K] = {"Q6_K", 256, 210},   [GGUF_Q8_K] = {"Q8_K", 256, 292},
    [GGUF_IQ2_XXS] = {"IQ2_XXS", 256, 66}, [GGUF_IQ2_XS] = {"IQ2_XS", 256, 74},
    [GGUF_IQ3_XXS] = {"IQ3_XXS", 256, 98}, [GGUF_IQ1_S] = {"IQ1_S", 256, 50},
    [GGUF_IQ4_NL] = {"IQ4_NL", 32, 18}, [GGUF_IQ3_S] = {"IQ3_S", 256, 110},
    [GGUF_IQ2_S] = {"IQ2_S", 256, 82},  [GGUF_IQ4_XS] = {"IQ4_XS", 256, 136},
    [GGUF_I8] = {"I8", 1, 1},           [GGUF_I16] = {"I16", 1, 2},
    [GGUF_I32] = {"I32", 1, 4},         [GGUF_I64] = {"I64", 1, 8},
    [GGUF_F64] = {"F64", 1, 8},         [GGUF_IQ1_M] = {"IQ1_M", 256, 56},
    [GGUF_BF16] = {"BF16", 1, 2},       [GGUF_TQ1_0] = {"TQ1_0", 256, 54},
    [GGUF_TQ2_0] = {"TQ2_0", 256, 66},  [GGUF_MXFP4] = {"MXFP4", 32, 17},
};

static const struct dtype_info *dtype(int type) {
    if (type < 0 || type >= GGUF_DTYPE_COUNT || !dtypes[type].name) return NULL;
    return &dtypes[type];
}

const char *gguf_dtype_name(int type) { return dtype(type) ? dtype(type)->name : NULL; }
int gguf_dtype_block(int type) { return dtype(type) ? dtype(type)->block : 0; }
int gguf_dtype_size(int type) { return dtype(type) ? dtype(type)->size : 0; }

size_t gguf_row_bytes(int type, int64_t n) {
    const struct dtype_info *d = dtype(type);
    return d ? (size_t)(n / d->block) * (size_t)d->size : 0;
}

static const char *const vtype_names[] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
    "string", "array", "u64", "i64", "f64",
};

const char *gguf_vtype_name(int type) {
    return type >= 0 && type <= GGUF_VT_F64 ? vtype_names[type] : "unknown";
}

/* Bytes of one element of a fixed-size type, 0 for STR/ARR/unknown. */
static size_t vtype_size(int type) {
    static const unsigned char sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type >= 0 && type <= GGUF_VT_F64 ? sz[type] : 0;
}

/* ---- arena ---- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

static void *arena_alloc(chunk **head, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = xmalloc(sizeof *c + cap);
        c->used = 0;
        c->cap = cap;
        c->next = *head;
        *head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(chunk *c) {
    while (c) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* ---- the handle ---- */

typedef struct kv {
    const char *key;
    gguf_value v;
} kv;

/* Open-addressing name -> index table (slots hold index+1, 0 = empty). */
typedef struct name_index {
    int *slot;
    uint32_t mask;
} name_index;

struct gguf {
    const unsigned char *base;
    size_t size;
    int mapped;
    uint32_t version, alignment;
    uint64_t data_offset;
    int n_kv, n_tensors;
    kv *kvs;
    gguf_tensor *tensors;
    name_index kv_ix, tensor_ix;
    chunk *arena;
};

static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static void index_init(gguf *g, name_index *ix, int n) {
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2) cap *= 2;
    ix->slot = arena_alloc(&g->arena, cap * sizeof(int));
    memset(ix->slot, 0, cap * sizeof(int));
    ix->mask = cap - 1;
}

/* Finds name (names[i] via stride) or the empty slot where it belongs. */
static int *index_slot(const name_index *ix, const char *name, const char *(*name_of)(const gguf *, int),
                       const gguf *g) {
    uint32_t h = name_hash(name) & ix->mask;
    while (ix->slot[h] && strcmp(name_of(g, ix->slot[h] - 1), name) != 0) h = (h + 1) & ix->mask;
    return &ix->slot[h];
}

static const char *kv_name(const gguf *g, int i) { return g->kvs[i].key; }
static const char *tensor_name(const gguf *g, int i) { return g->tensors[i].name; }

/* ---- bounds-checked cursor ---- */

typedef struct reader {
    gguf *g;
    size_t pos;
    char ctx[MAX_NAME_LEN + 32];  /* what is being parsed, for messages */
    char *err;
    size_t errlen;
    int failed;
} reader;

static int fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(reader *r, const char *fmt, ...) {
    if (r->failed++ || !r->err || !r->errlen) return -1;
    int n = snprintf(r->err, r->errlen, "gguf: %s%s", r->ctx, r->ctx[0] ? ": " : "");
    if (n < 0 || (size_t)n >= r->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t remaining(const reader *r) { return r->g->size - r->pos; }

static int need(reader *r, uint64_t n, const char *what) {
    if (n > remaining(r))
        return fail(r, "truncated: %s at offset %zu needs %llu bytes, file size %zu", what, r->pos,
                    (unsigned long long)n, r->g->size);
    return 0;
}

static int read_bytes(reader *r, void *out, size_t n, const char *what) {
    if (need(r, n, what) < 0) return -1;
    memcpy(out, r->g->base + r->pos, n);
    r->pos += n;
    return 0;
}

/* Fixed-size reads, written out so the copies compile to single loads. */
static int read_u32(reader *r, uint32_t *out, const char *what) {
    if (need(r, 4, what) < 0) return -1;
    memcpy(out, r->g->base + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int read_u64(reader *r, uint64_t *out, const char *what) {
    if (need(r, 8, what) < 0) return -1;
    memcpy(out, r->g->base + r->pos, 8);
    r->pos += 8;
    return 0;
}

/* A GGUF string (u64 length + bytes) copied NUL-terminated into the arena. */
static int read_str(reader *r, const char **s, uint64_t *len, const char *what) {
    uint64_t n;
    if (read_u64(r, &n, what) < 0) return -1;
    if (n > remaining(r))
        return fail(r, "%s length %llu at offset %zu beyond end of file (size %zu)", what,
                    (unsigned long long)n, r->pos - 8, r->g->size);
    char *p = arena_alloc(&r->g->arena, n + 1);
    memcpy(p, r->g->base + r->pos, n);
    p[n] = '\0';
    r->pos += n;
    *s = p;
    if (len) *len = n;
    return 0;
}

/* Keys and tensor names: bounded, and without embedded NULs (lookups use C strings). */
static int read_name(reader *r, const char **s, const char *what) {
    uint64_t len;
    if (read_str(r, s, &len, what) < 0) return -1;
    if (len == 0 || len > MAX_NAME_LEN) return fail(r, "%s length %llu not in 1..%d", what, (unsigned long long)len, MAX_NAME_LEN);
    if (strlen(*s) != len) return fail(r, "%s contains a NUL byte", what);
    return 0;
}

static int read_value(reader *r, int type, gguf_value *v, int depth);

static int read_array(reader *r, gguf_value *v, int depth) {
    uint32_t et;
    uint64_t n;
    if (read_u32(r, &et, "array element type") < 0 || read_u64(r, &n, "array length") < 0) return -1;
    if (et > GGUF_VT_F64) return fail(r, "array of unknown value type %u", et);
    if (et == GGUF_VT_ARR && depth >= MAX_ARRAY_DEPTH) return fail(r, "arrays nested deeper than %d", MAX_ARRAY_DEPTH);
    v->arr.type = (enum gguf_vtype)et;
    v->arr.n = n;
    v->arr.raw = NULL;
    v->arr.items = NULL;
    size_t esize = vtype_size((int)et);
    if (esize) {
        if (n > remaining(r) / esize)
            return fail(r, "array of %llu %s beyond end of file (size %zu)", (unsigned long long)n,
                        gguf_vtype_name((int)et), r->g->size);
        v->arr.raw = r->g->base + r->pos;
        if (et == GGUF_VT_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (v->arr.raw[i] > 1) return fail(r, "bool array element %llu is %u", (unsigned long long)i, v->arr.raw[i]);
        r->pos += n * esize;
        return 0;
    }
    /* strings take at least 8 bytes each, arrays 12: a cheap bound before allocating */
    size_t min = et == GGUF_VT_STR ? 8 : 12;
    if (n > remaining(r) / min)
        return fail(r, "array of %llu %s beyond end of file (size %zu)", (unsigned long long)n,
                    gguf_vtype_name((int)et), r->g->size);
    gguf_value *items = arena_alloc(&r->g->arena, n ? n * sizeof *items : 1);
    for (uint64_t i = 0; i < n; i++)
        if (read_value(r, (int)et, &items[i], depth + 1) < 0) return -1;
    v->arr.items = items;
    return 0;
}

static int read_value(reader *r, int type, gguf_value *v, int depth) {
    v->type = (enum gguf_vtype)type;
    unsigned char b[8];
    switch (type) {
    case GGUF_VT_STR: return read_str(r, &v->str.s, &v->str.len, "string");
    case GGUF_VT_ARR: return read_array(r, v, depth);
    case GGUF_VT_BOOL:
        if (read_bytes(r, b, 1, "bool") < 0) return -1;
        if (b[0] > 1) return fail(r, "bool value %u", b[0]);
        v->b = b[0];
        return 0;
    default: break;
    }
    size_t n = vtype_size(type);
    if (!n) return fail(r, "unknown value type %d", type);
    if (read_bytes(r, b, n, gguf_vtype_name(type)) < 0) return -1;
    switch (type) {
    case GGUF_VT_U8: v->u64 = b[0]; break;
    case GGUF_VT_I8: v->i64 = (int8_t)b[0]; break;
    case GGUF_VT_U16: { uint16_t x; memcpy(&x, b, 2); v->u64 = x; break; }
    case GGUF_VT_I16: { int16_t x; memcpy(&x, b, 2); v->i64 = x; break; }
    case GGUF_VT_U32: { uint32_t x; memcpy(&x, b, 4); v->u64 = x; break; }
    case GGUF_VT_I32: { int32_t x; memcpy(&x, b, 4); v->i64 = x; break; }
    case GGUF_VT_F32: { float x; memcpy(&x, b, 4); v->f64 = x; break; }
    case GGUF_VT_U64: memcpy(&v->u64, b, 8); break;
    case GGUF_VT_I64: memcpy(&v->i64, b, 8); break;
    case GGUF_VT_F64: memcpy(&v->f64, b, 8); break;
    }
    return 0;
}

static int parse_header(reader *r, uint64_t *n_tensors, uint64_t *n_kv) {
    char magic[4];
    if (read_bytes(r, magic, 4, "magic") < 0) return -1;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) return fail(r, "not a GGUF file (bad magic)");
    if (read_u32(r, &r->g->version, "version") < 0) return -1;
    uint32_t v = r->g->version;
    if (v == 1) return fail(r, "GGUF version 1 is not supported (only 2 and 3)");
    if (v != 2 && v != 3) {
        if ((v & 0xffff) == 0) return fail(r, "big-endian GGUF files are not supported");
        return fail(r, "unsupported GGUF version %u", v);
    }
    if (read_u64(r, n_tensors, "tensor count") < 0 || read_u64(r, n_kv, "metadata count") < 0) return -1;
    if (*n_kv > (1u << 28) || *n_tensors > (1u << 28))
        return fail(r, "implausible counts: %llu tensors, %llu metadata entries", (unsigned long long)*n_tensors,
                    (unsigned long long)*n_kv);
    /* a key/value needs >= 13 bytes (8 length + 1 char + 4 type), a tensor info >= 29 */
    if (*n_kv > remaining(r) / 13)
        return fail(r, "metadata count %llu impossible in a file of %zu bytes", (unsigned long long)*n_kv, r->g->size);
    if (*n_tensors > remaining(r) / 29)
        return fail(r, "tensor count %llu impossible in a file of %zu bytes", (unsigned long long)*n_tensors, r->g->size);
    return 0;
}

static int parse_kvs(reader *r, int n) {
    gguf *g = r->g;
    g->kvs = arena_alloc(&g->arena, (size_t)(n ? n : 1) * sizeof *g->kvs);
    index_init(g, &g->kv_ix, n);
    for (int i = 0; i < n; i++) {
        kv *e = &g->kvs[i];
        uint32_t type;
        snprintf(r->ctx, sizeof r->ctx, "metadata #%d", i);
        if (read_name(r, &e->key, "key") < 0) return -1;
        snprintf(r->ctx, sizeof r->ctx, "key '%s'", e->key);
        if (read_u32(r, &type, "value type") < 0) return -1;
        if (type > GGUF_VT_F64) return fail(r, "unknown value type %u", type);
        if (read_value(r, (int)type, &e->v, 0) < 0) return -1;
        int *slot = index_slot(&g->kv_ix, e->key, kv_name, g);
        if (*slot) return fail(r, "duplicate key");
        g->n_kv = i + 1;
        *slot = i + 1;
    }
    r->ctx[0] = '\0';
    return 0;
}

static int parse_alignment(reader *r) {
    gguf *g = r->g;
    g->alignment = DEFAULT_ALIGNMENT;
    if (!gguf_get(g, "general.alignment")) return 0;
    uint32_t a;
    if (gguf_get_u32(g, "general.alignment", &a) < 0 || a == 0 || (a & (a - 1)) != 0 || a > (1u << 30))
        return fail(r, "general.alignment is not a power of two integer up to 2^30");
    g->alignment = a;
    return 0;
}

static int parse_tensor_info(reader *r, gguf_tensor *t, int i) {
    snprintf(r->ctx, sizeof r->ctx, "tensor #%d", i);
    if (read_name(r, &t->name, "tensor name") < 0) return -1;
    snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", t->name);
    uint32_t n_dims, type;
    if (read_u32(r, &n_dims, "dimension count") < 0) return -1;
    if (n_dims > 4) return fail(r, "%u dimensions (at most 4)", n_dims);
    t->n_dims = (int)n_dims;
    t->n_elements = 1;
    for (int d = 0; d < 4; d++) {
        uint64_t ne = 1;
        if (d < (int)n_dims && read_u64(r, &ne, "dimension") < 0) return -1;
        if (ne > (uint64_t)INT64_MAX || (ne && (uint64_t)t->n_elements > (uint64_t)INT64_MAX / ne))
            return fail(r, "dimensions overflow (dim %d = %llu)", d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        t->n_elements *= (int64_t)ne;
    }
    if (read_u32(r, &type, "tensor type") < 0 || read_u64(r, &t->offset, "tensor offset") < 0) return -1;
    const struct dtype_info *d = dtype((int)type);
    if (!d) return fail(r, "unknown tensor type %u", type);
    t->type = (enum gguf_dtype)type;
    if (t->ne[0] % d->block)
        return fail(r, "row length %lld is not a multiple of the %s block size %d", (long long)t->ne[0], d->name, d->block);
    uint64_t blocks = (uint64_t)t->n_elements / (uint64_t)d->block;
    if (blocks > SIZE_MAX / (uint64_t)d->size) return fail(r, "size overflows");
    t->nbytes = (size_t)(blocks * (uint64_t)d->size);
    return 0;
}

/* Places each tensor's data now that the data section start is known. */
static int place_tensor(reader *r, gguf_tensor *t) {
    gguf *g = r->g;
    snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", t->name);
    if (t->offset % g->alignment)
        return fail(r, "data offset %llu is not a multiple of the alignment %u", (unsigned long long)t->offset, g->alignment);
    if (t->offset > g->size)
        return fail(r, "data offset %llu beyond end of file (size %zu)", (unsigned long long)t->offset, g->size);
    uint64_t start = g->data_offset + t->offset;
    if (start > g->size || t->nbytes > g->size - start)
        return fail(r, "data [%llu, %llu) beyond end of file (size %zu)", (unsigned long long)start,
                    (unsigned long long)(start + t->nbytes), g->size);
    t->offset = start;
    t->data = g->base + start;
    return 0;
}

static int parse_tensors(reader *r, int n) {
    gguf *g = r->g;
    g->tensors = arena_alloc(&g->arena, (size_t)(n ? n : 1) * sizeof *g->tensors);
    index_init(g, &g->tensor_ix, n);
    for (int i = 0; i < n; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (parse_tensor_info(r, t, i) < 0) return -1;
        int *slot = index_slot(&g->tensor_ix, t->name, tensor_name, g);
        if (*slot) return fail(r, "duplicate tensor name");
        g->n_tensors = i + 1;
        *slot = i + 1;
    }
    r->ctx[0] = '\0';
    g->data_offset = (r->pos + g->alignment - 1) / g->alignment * g->alignment;
    for (int i = 0; i < n; i++)
        if (place_tensor(r, &g->tensors[i]) < 0) return -1;
    r->ctx[0] = '\0';
    return 0;
}

static gguf *parse(gguf *g, char *err, size_t errlen) {
    reader r = {.g = g, .err = err, .errlen = errlen};
    uint64_t n_tensors = 0, n_kv = 0;
    if (err && errlen) err[0] = '\0';
    if (parse_header(&r, &n_tensors, &n_kv) < 0 || parse_kvs(&r, (int)n_kv) < 0 || parse_alignment(&r) < 0 ||
        parse_tensors(&r, (int)n_tensors) < 0) {
        gguf_close(g);
        return NULL;
    }
    return g;
}

gguf *gguf_open_mem(const void *data, size_t size, char *err, size_t errlen) {
    gguf *g = xcalloc(1, sizeof *g);
    g->base = data;
    g->size = size;
    return parse(g, err, errlen);
}

/* Asks for 2 MiB pages where the file is read in through this mapping: the
 * page cache then allocates 2 MiB folios for it and maps them whole (Linux
 * with transparent huge pages in "madvise" mode; pages already cached stay
 * as they are). A model's matrices are read end to end for every token,
 * and with 4 KiB pages they read ~25% slower (1b-q4_0 with 2 threads:
 * 23 vs 29 GB/s). Only advice: where the kernel
 * cannot follow it (no THP, another OS), the mapping works the same with
 * small pages, so a failure is not an error. */
static void advise_huge_pages(void *map, size_t size) {
#ifdef MADV_HUGEPAGE
    (void)madvise(map, size, MADV_HUGEPAGE);
#else
    (void)map;
    (void)size;
#endif
}

gguf *gguf_open(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    const char *why = NULL;
    if (fd < 0) why = strerror(errno);
    else if (fstat(fd, &st) < 0) why = strerror(errno);
    else if (!S_ISREG(st.st_mode)) why = "not a regular file";
    else if (st.st_size < 24) why = "file too small for a GGUF header";
    void *map = MAP_FAILED;
    if (!why) {
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) why = strerror(errno);
        else advise_huge_pages(map, (size_t)st.st_size);
    }
    if (fd >= 0) close(fd);
    if (why) {
        if (err && errlen) snprintf(err, errlen, "gguf: %s: %s", path, why);
        return NULL;
    }
    gguf *g = xcalloc(1, sizeof *g);
    g->base = map;
    g->size = (size_t)st.st_size;
    g->mapped = 1;
    char why_parse[512];
    g = parse(g, why_parse, sizeof why_parse);
    /* name the file: "gguf: PATH: what is wrong" */
    if (!g && err && errlen) {
        const char *what = strncmp(why_parse, "gguf: ", 6) == 0 ? why_parse + 6 : why_parse;
        snprintf(err, errlen, "gguf: %s: %s", path, what);
    }
    return g;
}

void gguf_close(gguf *g) {
    if (!g) return;
    if (g->mapped) munmap((void *)g->base, g->size);
    arena_free(g->arena);
    free(g);
}

size_t gguf_release(const gguf *g, const void *p, size_t n) {
    uintptr_t start = (uintptr_t)p, end = start + n, base = (uintptr_t)g->base, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!g->mapped || start < base || end > base + g->size) return 0;
    start = (start + page - 1) & ~(page - 1);
    end &= ~(page - 1);
    if (end <= start) return 0;
#ifdef MADV_NOHUGEPAGE
    /* Else the 2 MiB page cache folios the range shares with pages still
     * read (vectors, other rows) are mapped whole again, by a fault or by
     * khugepaged, dropped pages included (measured: 110m-q4_0 back to 45
     * of 62 MB after 8 tokens). Advice on a part of the mapping: it splits
     * off a mapping of its own, where 4 KiB pages will do (never read). */
    (void)madvise((void *)start, end - start, MADV_NOHUGEPAGE);
#endif
    /* MADV_DONTNEED on a private file mapping never written to: the pages
     * are unmapped, and read again from the file's cache when touched */
    if (madvise((void *)start, end - start, MADV_DONTNEED) != 0) return 0;
    return end - start;
}

uint32_t gguf_version(const gguf *g) { return g->version; }
size_t gguf_file_size(const gguf *g) { return g->size; }
uint32_t gguf_alignment(const gguf *g) { return g->alignment; }
uint64_t gguf_data_offset(const gguf *g) { return g->data_offset; }
const void *gguf_base(const gguf *g) { return g->base; }

int gguf_n_kv(const gguf *g) { return g->n_kv; }
const char *gguf_kv_key(const gguf *g, int i) { return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL; }
const gguf_value *gguf_kv_value(const gguf *g, int i) { return i >= 0 && i < g->n_kv ? &g->kvs[i].v : NULL; }

const gguf_value *gguf_get(const gguf *g, const char *key) {
    if (!g->kv_ix.slot) return NULL;
    int i = *index_slot(&g->kv_ix, key, kv_name, g);
    return i ? &g->kvs[i - 1].v : NULL;
}

/* ---- typed access: one conversion routine for scalars and array elements ---- */

static int is_unsigned(int t) { return t == GGUF_VT_U8 || t == GGUF_VT_U16 || t == GGUF_VT_U32 || t == GGUF_VT_U64; }
static int is_signed(int t) { return t == GGUF_VT_I8 || t == GGUF_VT_I16 || t == GGUF_VT_I32 || t == GGUF_VT_I64; }

/* Decodes element i of a packed numeric array into a scalar value. */
static void unpack(const gguf_value *arr, uint64_t i, gguf_value *out) {
    size_t n = vtype_size(arr->arr.type);
    const unsigned char *p = arr->arr.raw + i * n;
    unsigned char b[8] = {0};
    memcpy(b, p, n);
    out->type = arr->arr.type;
    switch (arr->arr.type) {
    case GGUF_VT_I8: out->i64 = (int8_t)b[0]; break;
    case GGUF_VT_I16: { int16_t x; memcpy(&x, b, 2); out->i64 = x; break; }
    case GGUF_VT_I32: { int32_t x; memcpy(&x, b, 4); out->i64 = x; break; }
    case GGUF_VT_I64: memcpy(&out->i64, b, 8); break;
    case GGUF_VT_F32: { float x; memcpy(&x, b, 4); out->f64 = x; break; }
    case GGUF_VT_F64: memcpy(&out->f64, b, 8); break;
    case GGUF_VT_BOOL: out->b = b[0]; break;
    default: { uint64_t x; memcpy(&x, b, 8); out->u64 = x; break; } /* unsigned, zero-extended */
    }
}

static int to_i64(const gguf_value *v, int64_t *out) {
    if (is_signed(v->type)) *out = v->i64;
    else if (is_unsigned(v->type) && v->u64 <= (uint64_t)INT64_MAX) *out = (int64_t)v->u64;
    else return -1;
    return 0;
}

static int to_f64(const gguf_value *v, double *out) {
    int64_t i;
    if (v->type == GGUF_VT_F32 || v->type == GGUF_VT_F64) *out = v->f64;
    else if (is_unsigned(v->type)) *out = (double)v->u64;
    else if (to_i64(v, &i) == 0) *out = (double)i;
    else return -1;
    return 0;
}

int gguf_get_i64(const gguf *g, const char *key, int64_t *out) {
    const gguf_value *v = gguf_get(g, key);
    return v ? to_i64(v, out) : -1;
}

int gguf_get_u64(const gguf *g, const char *key, uint64_t *out) {
    const gguf_value *v = gguf_get(g, key);
    if (!v) return -1;
    if (is_unsigned(v->type)) *out = v->u64;
    else if (is_signed(v->type) && v->i64 >= 0) *out = (uint64_t)v->i64;
    else return -1;
    return 0;
}

int gguf_get_u32(const gguf *g, const char *key, uint32_t *out) {
    uint64_t x;
    if (gguf_get_u64(g, key, &x) < 0 || x > UINT32_MAX) return -1;
    *out = (uint32_t)x;
    return 0;
}

int gguf_get_f64(const gguf *g, const char *key, double *out) {
    const gguf_value *v = gguf_get(g, key);
    return v ? to_f64(v, out) : -1;
}

int gguf_get_f32(const gguf *g, const char *key, float *out) {
    double d;
    if (gguf_get_f64(g, key, &d) < 0) return -1;
    *out = (float)d;
    return 0;
}

int gguf_get_bool(const gguf *g, const char *key, int *out) {
    const gguf_value *v = gguf_get(g, key);
    if (!v || v->type != GGUF_VT_BOOL) return -1;
    *out = v->b;
    return 0;
}

const char *gguf_get_str(const gguf *g, const char *key) {
    const gguf_value *v = gguf_get(g, key);
    return v && v->type == GGUF_VT_STR ? v->str.s : NULL;
}

const gguf_value *gguf_get_arr(const gguf *g, const char *key, int elem_type) {
    const gguf_value *v = gguf_get(g, key);
    if (!v || v->type != GGUF_VT_ARR) return NULL;
    return elem_type < 0 || (int)v->arr.type == elem_type ? v : NULL;
}

int gguf_arr_i64(const gguf_value *arr, uint64_t i, int64_t *out) {
    if (arr->type != GGUF_VT_ARR || i >= arr->arr.n || !arr->arr.raw) return -1;
    gguf_value v;
    unpack(arr, i, &v);
    return to_i64(&v, out);
}

int gguf_arr_f32(const gguf_value *arr, uint64_t i, float *out) {
    if (arr->type != GGUF_VT_ARR || i >= arr->arr.n || !arr->arr.raw) return -1;
    gguf_value v;
    double d;
    unpack(arr, i, &v);
    if (to_f64(&v, &d) < 0) return -1;
    *out = (float)d;
    return 0;
}

const char *gguf_arr_str(const gguf_value *arr, uint64_t i, uint64_t *len) {
    if (arr->type != GGUF_VT_ARR || arr->arr.type != GGUF_VT_STR || i >= arr->arr.n) return NULL;
    if (len) *len = arr->arr.items[i].str.len;
    return arr->arr.items[i].str.s;
}

int gguf_n_tensors(const gguf *g) { return g->n_tensors; }
const gguf_tensor *gguf_tensor_at(const gguf *g, int i) { return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL; }

const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name) {
    if (!g->tensor_ix.slot) return NULL;
    int i = *index_slot(&g->tensor_ix, name, tensor_name, g);
    return i ? &g->tensors[i - 1] : NULL;
}
