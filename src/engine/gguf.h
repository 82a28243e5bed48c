/* gguf: reader for GGUF model files (versions 2 and 3), over mmap or a buffer.
 *
 * A GGUF file is a header, a list of typed key/value metadata, a list of
 * tensor descriptions and an aligned data section holding the weights. The
 * reader parses and validates all of it at open time: every count, length,
 * dimension and offset is checked against the file size and for arithmetic
 * overflow, so that code using a successfully opened file can trust what it
 * gets (tensor data lies inside the file, strings are NUL-terminated, array
 * lengths are real). A bad file yields NULL and a one-line message naming
 * the problem, e.g.
 *   gguf: tensor 'blk.0.attn_q.weight': data [1024, 5120) beyond end of file (size 4096)
 *
 * Strings (keys, string values, tensor names) are copied into memory owned
 * by the gguf handle and are NUL-terminated; numeric arrays and tensor data
 * point into the mapping. Multi-byte values are read as little-endian (the
 * only byte order the reader accepts). */
#ifndef MSOA_ENGINE_GGUF_H
#define MSOA_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* Metadata value types, with their GGUF numeric ids. */
enum gguf_vtype {
    GGUF_VT_U8 = 0, GGUF_VT_I8 = 1, GGUF_VT_U16 = 2, GGUF_VT_I16 = 3,
    GGUF_VT_U32 = 4, GGUF_VT_I32 = 5, GGUF_VT_F32 = 6, GGUF_VT_BOOL = 7,
    GGUF_VT_STR = 8, GGUF_VT_ARR = 9, GGUF_VT_U64 = 10, GGUF_VT_I64 = 11,
    GGUF_VT_F64 = 12,
};

/* Tensor element types, with GGML's numeric ids (stable in the file format). */
enum gguf_dtype {
    GGUF_F32 = 0, GGUF_F16 = 1, GGUF_Q4_0 = 2, GGUF_Q4_1 = 3,
    GGUF_Q5_0 = 6, GGUF_Q5_1 = 7, GGUF_Q8_0 = 8, GGUF_Q8_1 = 9,
    GGUF_Q2_K = 10, GGUF_Q3_K = 11, GGUF_Q4_K = 12, GGUF_Q5_K = 13,
    GGUF_Q6_K = 14, GGUF_Q8_K = 15,
    GGUF_IQ2_XXS = 16, GGUF_IQ2_XS = 17, GGUF_IQ3_XXS = 18, GGUF_IQ1_S = 19,
    GGUF_IQ4_NL = 20, GGUF_IQ3_S = 21, GGUF_IQ2_S = 22, GGUF_IQ4_XS = 23,
    GGUF_I8 = 24, GGUF_I16 = 25, GGUF_I32 = 26, GGUF_I64 = 27, GGUF_F64 = 28,
    GGUF_IQ1_M = 29, GGUF_BF16 = 30, GGUF_TQ1_0 = 34, GGUF_TQ2_0 = 35,
    GGUF_MXFP4 = 39,
    GGUF_DTYPE_COUNT = 40 /* one past the largest id */
};

/* Type table: name ("Q4_0"), elements per block, bytes per block. For an
 * id that is not a known type, name is NULL and block/size are 0. */
const char *gguf_dtype_name(int type);
int gguf_dtype_block(int type);
int gguf_dtype_size(int type);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t gguf_row_bytes(int type, int64_t n);

/* One metadata value. Numeric arrays keep a pointer to their packed
 * little-endian elements in the file (read them with the gguf_arr_*
 * accessors: they may be unaligned); arrays of strings or of arrays have
 * one parsed gguf_value per element in `items`. */
typedef struct gguf_value {
    enum gguf_vtype type;
    union {
        uint64_t u64;                /* U8, U16, U32, U64 */
        int64_t i64;                 /* I8, I16, I32, I64 */
        double f64;                  /* F32, F64 */
        int b;                       /* BOOL */
        struct { const char *s; uint64_t len; } str; /* s NUL-terminated */
        struct {
            enum gguf_vtype type;    /* element type */
            uint64_t n;
            const unsigned char *raw;        /* numeric and bool elements */
            const struct gguf_value *items;  /* STR and ARR elements */
        } arr;
    };
} gguf_value;

typedef struct gguf_tensor {
    const char *name;
    enum gguf_dtype type;
    int n_dims;             /* 1..4 */
    int64_t ne[4];          /* ne[0] is the row length; unused dims are 1 */
    int64_t n_elements;
    uint64_t offset;        /* absolute offset of the data in the file */
    size_t nbytes;
    const void *data;       /* inside the mapping */
} gguf_tensor;

typedef struct gguf gguf;

/* Open and validate a file (mmap'ed read-only until gguf_close). On error
 * returns NULL and writes a message naming the file to err (may be NULL):
 * "gguf: PATH: what is wrong". */
gguf *gguf_open(const char *path, char *err, size_t errlen);
/* The same over a caller-owned buffer that must outlive the handle. */
gguf *gguf_open_mem(const void *data, size_t size, char *err, size_t errlen);
void gguf_close(gguf *g);

uint32_t gguf_version(const gguf *g);
size_t gguf_file_size(const gguf *g);
uint32_t gguf_alignment(const gguf *g);      /* general.alignment or 32 */
uint64_t gguf_data_offset(const gguf *g);    /* start of the data section */
const void *gguf_base(const gguf *g);        /* the whole file in memory */

/* Tells the mapping that this process no longer reads [p, p + n) (part of
 * the file, e.g. a matrix copied elsewhere): the whole pages inside it are
 * dropped from the process's mapping (they stay in the page cache, clean;
 * a later read maps them again, same bytes), so that they no longer count
 * in its resident memory. Returns the bytes dropped: 0 over a caller's
 * buffer (gguf_open_mem), which is left untouched. */
size_t gguf_release(const gguf *g, const void *p, size_t n);

/* Metadata, in file order. */
int gguf_n_kv(const gguf *g);
const char *gguf_kv_key(const gguf *g, int i);
const gguf_value *gguf_kv_value(const gguf *g, int i);
const gguf_value *gguf_get(const gguf *g, const char *key);   /* NULL if absent */

/* Typed getters: return 0 and set *out, or -1 when the key is absent or its
 * value cannot be represented (integers convert between integer types when
 * the value fits; floats accept F32/F64 and integers). */
int gguf_get_u32(const gguf *g, const char *key, uint32_t *out);
int gguf_get_i64(const gguf *g, const char *key, int64_t *out);
int gguf_get_u64(const gguf *g, const char *key, uint64_t *out);
int gguf_get_f32(const gguf *g, const char *key, float *out);
int gguf_get_f64(const gguf *g, const char *key, double *out);
int gguf_get_bool(const gguf *g, const char *key, int *out);
const char *gguf_get_str(const gguf *g, const char *key);      /* NULL if absent/not a string */
/* The array under key (NULL if absent or not an array), optionally
 * requiring an element type (pass -1 for any). */
const gguf_value *gguf_get_arr(const gguf *g, const char *key, int elem_type);

/* Array element accessors; -1 if i is out of range or the type does not fit. */
int gguf_arr_i64(const gguf_value *arr, uint64_t i, int64_t *out);
int gguf_arr_f32(const gguf_value *arr, uint64_t i, float *out);
const char *gguf_arr_str(const gguf_value *arr, uint64_t i, uint64_t *len); /* NULL if not */

/* Tensors, in file order, and lookup by name (NULL if absent). */
int gguf_n_tensors(const gguf *g);
const gguf_tensor *gguf_tensor_at(const gguf *g, int i);
const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name);

/* Names for messages: "u32", "string", "array"... */
const char *gguf_vtype_name(int type);

#endif
