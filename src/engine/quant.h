/* quant: tensor element types, (de)quantisation and quantised dot products.
 *
 * Weights of a GGUF model are stored in ggml's block formats; this file
 * knows their byte layouts (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q4_K, Q5_K, Q6_K)
 * and the one operation inference needs from them: the dot product of a
 * weight row with an activation vector. As in ggml, the activation is first
 * quantised to the row's "activation type" (Q8_0 for the 32-element
 * formats, Q8_K for the k-quants, F32 otherwise) so the inner loops are
 * integer dot products.
 *
 * Every kernel has a portable scalar version; AVX2/FMA versions (simd_avx2.c,
 * some with AVX-VNNI variants) and AVX-512 VNNI versions of the two decode
 * kernels (simd_avx512.c) are picked at run time when the CPU has them. The type ids are ggml's, so
 * a GGUF tensor's type field can be used directly. */
#ifndef MSOA_ENGINE_QUANT_H
#define MSOA_ENGINE_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum qtype {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15, /* activations only */
    QT_BF16 = 30,
    QT_COUNT = 31 /* size of tables indexed by type id */
} qtype;

#define QK4_0 32
#define QK8_0 32
#define QK_K 256

/* The block layouts, exactly as stored in GGUF files (little-endian). */
typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;
/* Older 32-element formats, still found in downloads: Q4_K_M files use
 * Q5_0 for matrices whose rows are not a multiple of 256. x = q*d + m
 * (Q4_1, Q5_1) or (q - 16)*d (Q5_0); bit j of qh is element j's fifth bit. */
typedef struct { uint16_t d, m; uint8_t qs[16]; } block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } block_q5_1;
typedef struct {
    uint16_t d, dmin;     /* super-block scales for the 6-bit scales and mins */
    uint8_t scales[12];   /* 8 scales + 8 mins, 6 bits each, see get_scale_min_k4 */
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8]; /* fifth bit of each element */
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[QK_K / 2]; /* low 4 bits */
    uint8_t qh[QK_K / 4]; /* high 2 bits */
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;

/* Type facts. All return 0 / NULL for a type this file does not know. */
int qtype_known(uint32_t type);
const char *qtype_name(uint32_t type);          /* "q4_0", "f32"... */
int qtype_from_name(const char *name);          /* -1 if unknown */
size_t qtype_block_elems(qtype t);              /* 1, 32 or 256 */
size_t qtype_block_bytes(qtype t);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block. */
size_t qtype_row_bytes(qtype t, size_t n);
/* The type activations are quantised to for dot products with t. */
qtype qtype_act_type(qtype t);

/* fp16 / bf16 conversions (round to nearest even). */
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

/* n must be a multiple of the block size. quantize_row returns -1 for a type
 * it cannot produce (F32 and the others all work; Q8_K is produced too). */
void dequantize_row(qtype t, const void *src, float *dst, size_t n);
int quantize_row(qtype t, const float *src, void *dst, size_t n);

/* The dot product of a weight row (type t, n elements) with an activation
 * already converted by quantize_row(qtype_act_type(t), ...). */
typedef float (*vec_dot_fn)(const void *w, const void *act, size_t n);

/* One implementation of every dot product; entries are never NULL for the
 * weight types above (a SIMD table falls back to scalar where it has none).
 *
 * Two extra kernels exist to reproduce llama.cpp's results bit for bit
 * (greedy decoding of a quantised model is chaotic: activations are
 * re-quantised after every product, so a different float summation order
 * flips a rounding and the text diverges after a few dozen tokens):
 *  - dot_q4_0_x8: Q4_0 summed block after block with one fused multiply-add
 *    each, the order of ggml's repacked 8-row kernel, which llama.cpp uses
 *    on AVX2 CPUs for matrices whose row count is a multiple of 8;
 *  - dot_f16_f16: two F16 vectors (attention over an F16 KV cache) summed
 *    as ggml's AVX2 build does: 4 x 8 fused accumulators over each 32
 *    elements, a fixed reduction tree, the remainder added in double. The
 *    second vector is passed as floats holding F16 values (converted once,
 *    as it meets many rows); products of two halves are exact in float.
 * Scalar and AVX2 versions of these two give identical results. */
/* out[t * out_stride + r] = row r . activation t, for 8 rows (row_bytes
 * apart) and n_tok <= 4 activations (act_stride bytes apart). */
typedef void (*gemm8_fn)(const void *w, size_t row_bytes, const void *act, size_t act_stride, int n_tok,
                         size_t n, float *out, size_t out_stride);

/* One row against n_tok <= 4 activations (act_stride bytes apart):
 * out[t * out_stride] = dot of activation t, exactly as dot[] computes it,
 * with the row's blocks unpacked once for all of them. */
typedef void (*vec_dotn_fn)(const void *w, const void *act, size_t act_stride, int n_tok, size_t n,
                            float *out, size_t out_stride);

/* The SIMD row kernels prefetch, as they go, the weights this many rows
 * further on (the rows of a matrix are contiguous): a caller that walks a
 * matrix row after row then finds them in cache. Two 8-row tiles ahead:
 * one tile's compute is about one memory latency, which was too close
 * (Q8_0 decode read memory ~25% faster with 16 than with 8). */
#define QUANT_PREFETCH_ROWS 16

/* Repacked Q4_0 ("x16p"): 16 rows of a matrix interleaved so that the
 * SIMD kernels need no per-block reduction. For each block i of the rows,
 * 288 bytes: the 16 rows' fp16 scales (row order), then 4 chunks of 64
 * bytes, chunk c holding bytes 4c..4c+3 of each row's nibbles (row r at
 * 4r). A 64-byte load then gives one 32-bit lane per row (32 bytes: 8
 * rows), and a byte dot product against 4 broadcast activation bytes sums
 * each row in its own lane. A matrix's groups have the bytes and offsets of
 * its 16-row tiles. */
#define Q4_0_X16P_BLOCK 288
void quant_pack_q4_0_x16(const void *rows, size_t row_bytes, size_t n, void *dst);

/* What the repacked kernels need of a Q8_0 activation block besides its
 * bytes, computed once per activation (quant_q8_0_aux): the scale as a
 * float and -8 * the sum of its bytes (Q4_0 values are q - 8). */
typedef struct q8_0_aux { float d; int32_t m8; } q8_0_aux;
void quant_q8_0_aux(const void *act, size_t n, q8_0_aux *aux);

/* gemm_q4_0_x8 on one repacked group of 16 rows: out[t * out_stride + r]
 * for r < 16 and n_tok <= 4 activations (act_stride bytes apart; aux of
 * token t at aux + t * n / 32), bit for bit dot_q4_0_x8 of the rows. */
typedef void (*gemm16p_fn)(const void *group, const void *act, size_t act_stride, const q8_0_aux *aux, int n_tok,
                           size_t n, float *out, size_t out_stride);

/* Repacked Q8_0 ("x4p"): 4 rows interleaved for the 4-row kernel. For
 * each block i, 136 bytes: the 4 rows' fp16 scales, then each row's 32
 * values as unsigned bytes x + 128 (x ^ 0x80), row after row: one load
 * per two rows' values, one conversion for the 4 scales, no sign flip. A
 * group has the bytes and offsets of its 4 rows in the file. */
#define Q8_0_X4P_BLOCK 136
void quant_pack_q8_0_x4(const void *rows, size_t row_bytes, size_t n, void *dst);

/* For each Q8_0 activation block, 8 int32: lane j holds -128 * the sum of
 * elements 4j..4j+3 (what the repacked Q8_0 kernel takes back out). */
void quant_q8_0_lane_sums(const void *act, size_t n, int32_t *out);

/* dot4[QT_Q8_0] on a repacked group (lane_sums of the activation, as
 * above): out[r] bit for bit what dot[QT_Q8_0] of the SIMD tables gives
 * row r. */
typedef void (*vec_dot4p_fn)(const void *group, const void *act, const int32_t *lane_sums, size_t n, float out[4]);

/* Four rows (row_bytes apart) against one activation: out[r] exactly as
 * dot[] computes row r. */
typedef void (*vec_dot4_fn)(const void *w, size_t row_bytes, const void *act, size_t n, float out[4]);

typedef struct quant_kernels {
    const char *name;           /* "scalar", "avx2", "avx-vnni", "avx512-vnni"... */
    int prefetches;             /* the weight kernels prefetch QUANT_PREFETCH_ROWS ahead */
    vec_dot_fn dot[QT_COUNT];
    vec_dotn_fn dotn[QT_COUNT]; /* NULL where there is none: use dot[] per token */
    vec_dot4_fn dot4[QT_COUNT]; /* NULL where there is none: use dot[] per row */
    vec_dot_fn dot_q4_0_x8;
    /* dot_q4_0_x8 of 8 consecutive rows and up to 4 activations at once,
     * same results; the rows' sums advance side by side in one vector. */
    gemm8_fn gemm_q4_0_x8;
    /* the same on repacked rows; NULL where the table has none (then
     * matrices are not repacked) */
    gemm16p_fn gemm_q4_0_x16p;
    vec_dot4p_fn dot4p_q8_0;    /* NULL where the table has none: not repacked */
    float (*dot_f16_f16)(const uint16_t *x, const float *y, size_t n);
    /* dot_f16_f16 of 4 rows x (stride elements apart) with one y, each
     * exactly as dot_f16_f16 computes it (4 positions, or 4 outputs) */
    void (*dot_f16_f16_x4)(const uint16_t *x, size_t stride, const float *y, size_t n, float out[4]);
    /* the same for 8 rows; NULL where the table has none (use x4) */
    void (*dot_f16_f16_x8)(const uint16_t *x, size_t stride, const float *y, size_t n, float out[8]);
    /* n floats to F16, rounding to nearest even (the F16 KV cache) */
    void (*to_f16)(const float *x, uint16_t *y, size_t n);
    /* n F16 values to floats (exact), as dequantize_row(QT_F16, ...) */
    void (*from_f16)(const uint16_t *x, float *y, size_t n);
    /* quantize_row(QT_Q8_0, ...), the same bytes: the activations of every
     * product with a 32-element weight type */
    void (*quantize_q8_0)(const float *x, void *y, size_t n);
    /* gate[i] = gate[i] / (1 + quant_expf(-gate[i])) * up[i] (SwiGLU), the
     * same bits as that expression in scalar code */
    void (*silu_mul)(float *gate, const float *up, size_t n);
    /* x[i] = quant_expf(x[i] - shift) (the softmax), the same bits */
    void (*exp_shift)(float *x, size_t n, float shift);
} quant_kernels;

/* exp(x) for floats, the engine's own, so that SIMD kernels compute it
 * lane by lane with the same operations and give the same bits (libm's
 * expf is one value per call: SwiGLU's 2048 values took 4.4 us of CPU per
 * layer of 110M decode with it, 0.9 with the 8-lane kernel). x = n ln2 + r with n = round(x log2 e) and
 * |r| <= ln2/2 (ln2 in two parts, fused multiply-adds), exp(r) by its
 * Taylor series to r^7 (Horner, fused), times 2^n as two powers of two so
 * that results near overflow and in the subnormal range come out right.
 * Inputs are first clamped to [QEXP_MIN, QEXP_MAX] (exp(QEXP_MIN) rounds
 * to 0, exp(QEXP_MAX) overflows to inf); NaN gives NaN. Error: within 1
 * ulp of exp (test_engine_quant measures it). The constants are shared
 * with the SIMD versions. */
#define QEXP_MIN (-104.0f)
#define QEXP_MAX 89.0f
#define QEXP_LOG2E 1.44269504088896341f
#define QEXP_LN2_HI 0x1.62e4p-1f            /* ln2's high bits: n * QEXP_LN2_HI is exact */
#define QEXP_LN2_LO 1.42860682030941723e-6f /* ln2 - QEXP_LN2_HI */
#define QEXP_ROUND 0x1.8p23f                /* x + this rounds x to an integer, in the low bits */
#define QEXP_TAYLOR {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}
float quant_expf(float x);

const quant_kernels *quant_kernels_scalar(void);
/* NULL if this CPU (or this build) has no AVX2/FMA/F16C. */
const quant_kernels *quant_kernels_avx2(void);
/* AVX2 plus AVX-VNNI byte dot products; NULL without AVX-VNNI. */
const quant_kernels *quant_kernels_vnni(void);
/* AVX2 plus 512-bit AVX-512 VNNI kernels for Q4_0 (gemm_q4_0_x8) and Q8_0
 * (dot4), bit-identical to the AVX2 ones; NULL unless the CPU has AVX-512
 * F/BW/VL/VNNI and the OS saves ZMM state. */
const quant_kernels *quant_kernels_avx512(void);
/* The best table for this CPU; chosen once. With both AVX-512 VNNI and
 * AVX-VNNI that is "avx512-vnni+avx-vnni": the AVX-512 table with the
 * AVX-VNNI Q4_0 kernel (see quant.c). MSOA_SIMD=<a table's name>
 * ("avx512-vnni", "avx-vnni", "avx2", "scalar") picks another one the CPU
 * has (for comparisons). */
const quant_kernels *quant_kernels_best(void);

static inline float vec_dot(qtype t, const void *w, const void *act, size_t n) {
    return quant_kernels_best()->dot[t](w, act, n);
}

#endif
