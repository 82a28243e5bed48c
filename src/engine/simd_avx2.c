/* simd_avx2: AVX2/FMA/F16C versions of the dot products in quant.c (and an
 * AVX-VNNI variant of the 8-row Q4_0 kernel).
 *
 * Compiled for the baseline target like everything else; only these
 * functions carry target attributes, and quant.c calls them only after
 * __builtin_cpu_supports said yes. Integer kernels use the usual trick for
 * signed x signed bytes: maddubs(|x|, sign(y, x)) multiplies u8 by s8 and
 * sums pairs to s16 without overflow for these ranges. Kernels that take
 * several prompt tokens at once compute each token's result exactly as the
 * one-token kernel does; they only share the loading and unpacking of the
 * weights. */
#include "engine/quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include <string.h>

#include "engine/simd_x86.h"

/* Sum of x*y over 32 signed bytes, as 8 int32 lanes. */
AVX2 static inline __m256i dot_s8(__m256i x, __m256i y) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* 32 nibbles of a Q4_0 block as bytes: low nibbles are elements 0..15,
 * high nibbles 16..31. */
AVX2 static inline __m256i unpack_nibbles(const uint8_t *qs) {
    __m128i lo = _mm_loadu_si128((const __m128i *)qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(lo, 4), lo);
    return _mm256_and_si256(both, _mm256_set1_epi8(0xF));
}

/* Four accumulators over each 32 elements, reduced like ggml's AVX2 build,
 * so F32 models sum in the same order as llama.cpp. */
AVX2 static float dot_f32(const void *w, const void *a, size_t n) {
    const float *x = w, *y = a;
    size_t np = n & ~(size_t)31;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const uint8_t *ahead = rows_ahead(w, n * sizeof *x), *pf = ahead;
    for (size_t i = 0; i < np; i += 32) {
        prefetch_ahead(ahead, i / 32, 32 * sizeof *x, &pf);
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * j), _mm256_loadu_ps(y + i + 8 * j), acc[j]);
    }
    __m256 r = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
    t = _mm_hadd_ps(t, t);
    t = _mm_hadd_ps(t, t);
    float s = _mm_cvtss_f32(t);
    for (size_t i = np; i < n; i++) s += x[i] * y[i];
    return s;
}

AVX2 static float dot_f16(const void *w, const void *a, size_t n) {
    const uint16_t *x = w;
    const float *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    const uint8_t *ahead = rows_ahead(w, n * sizeof *x), *pf = ahead;
    for (; i + 16 <= n; i += 16) {
        prefetch_ahead(ahead, i / 16, 16 * sizeof *x, &pf);
        __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8)));
        acc0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(y + i), acc0);
        acc1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(y + i + 8), acc1);
    }
    float s = hsum_ps(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += fp16_to_fp32(x[i]) * y[i];
    return s;
}

AVX2 static float dot_bf16(const void *w, const void *a, size_t n) {
    const uint16_t *x = w;
    const float *y = a;
    __m256 acc = _mm256_setzero_ps();
    size_t i = 0;
    const uint8_t *ahead = rows_ahead(w, n * sizeof *x), *pf = ahead;
    for (; i + 8 <= n; i += 8) {
        prefetch_ahead(ahead, i / 8, 8 * sizeof *x, &pf);
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        __m256 xf = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        acc = _mm256_fmadd_ps(xf, _mm256_loadu_ps(y + i), acc);
    }
    float s = hsum_ps(acc);
    for (; i < n; i++) s += bf16_to_fp32(x[i]) * y[i];
    return s;
}

AVX2 static float dot_q4_0(const void *w, const void *a, size_t n) {
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    const uint8_t *ahead = rows_ahead(w, n / QK8_0 * sizeof *x), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, sizeof *x, &pf);
        __m256i q = _mm256_sub_epi8(unpack_nibbles(x[i].qs), _mm256_set1_epi8(8));
        __m256i p = dot_s8(q, _mm256_loadu_si256((const __m256i *)y[i].qs));
        __m256 d = _mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    return hsum_ps(acc);
}

/* One block's integer dot at a time, folded in with a scalar fused
 * multiply-add: the order of quant.c's dot_q4_0_x8 (see quant.h). */
AVX2 static float dot_q4_0_x8(const void *w, const void *a, size_t n) {
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (size_t i = 0; i < n / QK8_0; i++) {
        __m256i q = _mm256_sub_epi8(unpack_nibbles(x[i].qs), _mm256_set1_epi8(8));
        int isum = hsum_epi32(dot_s8(q, _mm256_loadu_si256((const __m256i *)y[i].qs)));
        s = __builtin_fmaf((float)isum, h2f(x[i].d) * h2f(y[i].d), s);
    }
    return s;
}

/* Eight rows at once (see simd_q4_0_x8.h), with maddubs + madd ... */
#define Q4X8_NAME gemm_q4_0_x8
#define Q4X8_TARGET AVX2
#define Q4X8_DOT(acc, u, s) _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#include "engine/simd_q4_0_x8.h"
#undef Q4X8_NAME
#undef Q4X8_TARGET
#undef Q4X8_DOT

/* ... and with AVX-VNNI's byte dot product. */
#define VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define Q4X8_NAME gemm_q4_0_x8_vnni
#define Q4X8_TARGET VNNI
#define Q4X8_DOT(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#include "engine/simd_q4_0_x8.h"
#undef Q4X8_NAME
#undef Q4X8_TARGET
#undef Q4X8_DOT

/* The same on repacked rows (see simd_q4_0_x16p.h), both ways. */
#define X16P_NAME gemm_q4_0_x16p
#define X16P_TARGET AVX2
#define X16P_DOT(acc, u, s) _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#define X16P_HI_SHIFT 1
#include "engine/simd_q4_0_x16p.h"
#undef X16P_NAME
#undef X16P_TARGET
#undef X16P_DOT
#undef X16P_HI_SHIFT

#define X16P_NAME gemm_q4_0_x16p_vnni
#define X16P_TARGET VNNI
#define X16P_DOT(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#define X16P_HI_SHIFT 0
#include "engine/simd_q4_0_x16p.h"
#undef X16P_NAME
#undef X16P_TARGET
#undef X16P_DOT
#undef X16P_HI_SHIFT

/* ggml's F16 order (see quant.h): four 8-lane accumulators over each 32
 * elements, folded as (a0 + a2) + (a1 + a3), the two halves added, then
 * two horizontal adds; the remainder in double. Written for R rows against
 * one y (floats holding F16 values) at once (R = 1 or 4, inlined as
 * constants): the rows share the loads of y and the final horizontal adds,
 * each row's sum keeps its order. */
AVX2 static INLINE void dot_f16_rows(int R, const uint16_t *x, size_t stride, const float *y, size_t n, float *out) {
    size_t np = n & ~(size_t)31;
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = _mm256_setzero_ps();
    for (size_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++) {
            __m256 b = _mm256_loadu_ps(y + i + 8 * j);
            for (int r = 0; r < R; r++) {
                __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + r * stride + i + 8 * j)));
                acc[r][j] = _mm256_fmadd_ps(a, b, acc[r][j]);
            }
        }
    __m128 t[4];
    for (int r = 0; r < R; r++) {
        __m256 v = _mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][2]), _mm256_add_ps(acc[r][1], acc[r][3]));
        t[r] = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    }
    float sums[4];
    if (R == 4) {   /* [r0: t0+t1, t2+t3, r1: ...] then [r0, r1, r2, r3] */
        _mm_storeu_ps(sums, _mm_hadd_ps(_mm_hadd_ps(t[0], t[1]), _mm_hadd_ps(t[2], t[3])));
    } else {
        __m128 h = _mm_hadd_ps(t[0], t[0]);
        sums[0] = _mm_cvtss_f32(_mm_hadd_ps(h, h));
    }
    for (int r = 0; r < R; r++) {
        double s = sums[r];
        for (size_t i = np; i < n; i++) s += (double)(h2f(x[r * stride + i]) * y[i]);
        out[r] = (float)s;
    }
}

AVX2 static float dot_f16_f16(const uint16_t *x, const float *y, size_t n) {
    float s;
    dot_f16_rows(1, x, 0, y, n, &s);
    return s;
}

AVX2 static void dot_f16_f16_x4(const uint16_t *x, size_t stride, const float *y, size_t n, float out[4]) {
    dot_f16_rows(4, x, stride, y, n, out);
}

AVX2 static void to_f16(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = fp32_to_fp16(x[i]);
}

AVX2 static void from_f16(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = fp16_to_fp32(x[i]);
}

/* quant.c's silu_mul and exp_shift, 8 lanes at a time; the last n % 8
 * go through 8-lane buffers, so every element takes exp_ps. */
AVX2 static inline __m256 silu_mul8(const float *gate, const float *up) {
    __m256 g = _mm256_loadu_ps(gate), e = exp_ps(_mm256_xor_ps(g, _mm256_set1_ps(-0.0f)));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_loadu_ps(up));
}

AVX2 static void silu_mul(float *gate, const float *up, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(gate + i, silu_mul8(gate + i, up + i));
    if (i == n) return;
    float g[8] = {0}, u[8] = {0};
    memcpy(g, gate + i, (n - i) * sizeof *g);
    memcpy(u, up + i, (n - i) * sizeof *u);
    _mm256_storeu_ps(g, silu_mul8(g, u));
    memcpy(gate + i, g, (n - i) * sizeof *g);
}

AVX2 static void exp_shift(float *x, size_t n, float shift) {
    const __m256 sh = _mm256_set1_ps(shift);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
    if (i == n) return;
    float v[8] = {0};
    memcpy(v, x + i, (n - i) * sizeof *v);
    _mm256_storeu_ps(v, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(v), sh)));
    memcpy(x + i, v, (n - i) * sizeof *v);
}

/* quant.c's quant_q8_0, eight lanes at a time: the same maximum, the same
 * product with 127 / amax and the same rounding to nearest even, so the
 * same bytes. */
AVX2 static void quantize_q8_0(const float *x, void *dst, size_t n) {
    block_q8_0 *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
        float id = amax != 0 ? 127.0f / amax : 0;
        y[i].d = fp32_to_fp16(amax / 127);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], _mm256_set1_ps(id)),
                                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        /* int32 -> int8 within 128-bit lanes, then the lanes put back in order */
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)y[i].qs, _mm256_permutevar8x32_epi32(b, order));
    }
}

/* The fifth bits of a Q5_0/Q5_1 block as bytes 0x10 or 0 (element j from
 * bit j of qh): each byte picks its qh byte, tests its bit, keeps 0x10. */
AVX2 static inline __m256i fifth_bits(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), pick);
    b = _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x10));
}

AVX2 static float dot_q5_0(const void *w, const void *a, size_t n) {
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    const uint8_t *ahead = rows_ahead(w, n / QK8_0 * sizeof *x), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, sizeof *x, &pf);
        __m256i q = _mm256_or_si256(unpack_nibbles(x[i].qs), fifth_bits(x[i].qh));
        __m256i p = dot_s8(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum_ps(acc);
}

/* Q4_1 and Q5_1: unsigned values straight into maddubs; the offset m comes
 * back as m * dy * sum(y). */
AVX2 static void dot_affine(const uint16_t *dm, const uint8_t *qs, const uint8_t *qh, const block_q8_0 *y,
                            __m256 *acc, __m256 *acc_m) {
    __m256i q = unpack_nibbles(qs);
    if (qh) q = _mm256_or_si256(q, fifth_bits(qh));
    __m256i yv = _mm256_loadu_si256((const __m256i *)y->qs), ones = _mm256_set1_epi16(1);
    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, yv), ones);
    __m256i sy = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), yv), ones);
    float dy = h2f(y->d);
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(dm[0]) * dy), _mm256_cvtepi32_ps(p), *acc);
    *acc_m = _mm256_fmadd_ps(_mm256_set1_ps(h2f(dm[1]) * dy), _mm256_cvtepi32_ps(sy), *acc_m);
}

AVX2 static float dot_q4_1(const void *w, const void *a, size_t n) {
    const block_q4_1 *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
    const uint8_t *ahead = rows_ahead(w, n / QK8_0 * sizeof *x), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, sizeof *x, &pf);
        dot_affine(&x[i].d, x[i].qs, NULL, &y[i], &acc, &acc_m);
    }
    return hsum_ps(_mm256_add_ps(acc, acc_m));
}

AVX2 static float dot_q5_1(const void *w, const void *a, size_t n) {
    const block_q5_1 *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
    const uint8_t *ahead = rows_ahead(w, n / QK8_0 * sizeof *x), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, sizeof *x, &pf);
        dot_affine(&x[i].d, x[i].qs, x[i].qh, &y[i], &acc, &acc_m);
    }
    return hsum_ps(_mm256_add_ps(acc, acc_m));
}

/* Q8_0 against n_tok <= 4 activations: each weight block is loaded (and
 * its absolute value taken, see dot_s8) once for all of them. Always inlined
 * with a constant n_tok (DOTN below), so the accumulators stay in registers. */
AVX2 static INLINE void dotn_q8_0_body(qtype type, const void *w, const void *act, size_t act_stride, int n_tok,
                                       size_t n, float *out, size_t out_stride) {
    (void)type;
    const block_q8_0 *x = w;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const uint8_t *ahead = rows_ahead(w, n / QK8_0 * sizeof *x), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, sizeof *x, &pf);
        __m256i xv = _mm256_loadu_si256((const __m256i *)x[i].qs), ax = _mm256_sign_epi8(xv, xv);
        float dx = h2f(x[i].d);
        for (int t = 0; t < n_tok; t++) {
            const block_q8_0 *y = (const block_q8_0 *)((const uint8_t *)act + t * act_stride) + i;
            __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y->qs), xv);
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * h2f(y->d)), _mm256_cvtepi32_ps(p), acc[t]);
        }
    }
    for (int t = 0; t < n_tok; t++) out[t * out_stride] = hsum_ps(acc[t]);
}

AVX2 static float dot_q8_0(const void *w, const void *a, size_t n) {
    float s;
    dotn_q8_0_body(QT_Q8_0, w, a, 0, 1, n, &s, 1);
    return s;
}

/* Four Q8_0 rows against one activation, each exactly as dot_q8_0: the
 * four independent sums hide the latency of each one's chain of fused
 * multiply-adds, which bounds a single row's speed. */
AVX2 static void dot4_q8_0(const void *w, size_t row_bytes, const void *a, size_t n, float out[4]) {
    const block_q8_0 *y = a;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const uint8_t *ahead = rows_ahead(w, row_bytes), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, 4 * sizeof *y, &pf);
        __m256i yv = _mm256_loadu_si256((const __m256i *)y[i].qs);
        float dy = h2f(y[i].d);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const block_q8_0 *x = (const block_q8_0 *)((const uint8_t *)w + r * row_bytes) + i;
            __m256i xv = _mm256_loadu_si256((const __m256i *)x->qs);
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(xv, xv), _mm256_sign_epi8(yv, xv)), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x->d) * dy), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) out[r] = hsum_ps(acc[r]);
}

/* The eight 6-bit scales (bytes 0-7) and mins (bytes 8-15) of a Q4_K/Q5_K
 * block, unpacked with 32-bit word operations: the same fields as
 * get_scale_min_k4 in quant.c, four at a time. */
AVX2 static inline __m128i unpack_scales_k4(const uint8_t *q) {
    uint32_t w[3], out[4];
    memcpy(w, q, 12);
    out[0] = w[0] & 0x3f3f3f3f;
    out[1] = (w[2] & 0x0f0f0f0f) | ((w[0] >> 6) & 0x03030303) << 4;
    out[2] = w[1] & 0x3f3f3f3f;
    out[3] = ((w[2] >> 4) & 0x0f0f0f0f) | ((w[1] >> 6) & 0x03030303) << 4;
    return _mm_loadu_si128((const __m128i *)out);
}

/* Q4_K and Q5_K: the 4- or 5-bit values are unsigned, so maddubs takes them
 * directly against the signed activations; the scales are applied with
 * madd, the mins through the activations' block sums. One super-block is
 * unpacked once for n_tok activations (prompt batches); sum[t] gets token
 * t's part, computed exactly as for a single token. */
AVX2 static INLINE void dot_kx(const uint16_t *dd, const uint8_t *scales, const uint8_t *qh, const uint8_t *qs,
                        const block_q8_K *const *y, int n_tok, float *sum) {
    __m256i sm = _mm256_cvtepu8_epi16(unpack_scales_k4(scales));   /* 8 scales | 8 mins, int16 */
    __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
    const __m256i mask = _mm256_set1_epi8(0xF);
    __m256i hbits = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i q0 = _mm256_and_si256(q, mask);
        __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
        if (qh) { /* bit 2c (sub-block 2c) and 2c+1 of each qh byte, moved to bit 4 */
            __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c), _mm256_set1_epi8(1));
            __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c + 1), _mm256_set1_epi8(1));
            q0 = _mm256_or_si256(q0, _mm256_slli_epi16(b0, 4));
            q1 = _mm256_or_si256(q1, _mm256_slli_epi16(b1, 4));
        }
        /* scales 2c and 2c+1 (int16 elements) copied to every 16-bit lane */
        __m256i s0 = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)((4 * c + 1) << 8 | 4 * c)));
        __m256i s1 = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)((4 * c + 3) << 8 | (4 * c + 2))));
        for (int t = 0; t < n_tok; t++) {
            __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)(y[t]->qs + 64 * c)));
            __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(y[t]->qs + 64 * c + 32)));
            acc[t] = _mm256_add_epi32(acc[t], _mm256_add_epi32(_mm256_madd_epi16(p0, s0), _mm256_madd_epi16(p1, s1)));
        }
    }
    __m128i mins = _mm256_extracti128_si256(sm, 1);
    float d = h2f(dd[0]), dmin = h2f(dd[1]);
    for (int t = 0; t < n_tok; t++) {
        __m128i pair_sums = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)y[t]->bsums),
                                           _mm_loadu_si128((const __m128i *)(y[t]->bsums + 8)));
        __m128i mm = _mm_madd_epi16(mins, pair_sums);
        mm = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, _MM_SHUFFLE(1, 0, 3, 2)));
        int summ = _mm_cvtsi128_si32(_mm_add_epi32(mm, _mm_shuffle_epi32(mm, _MM_SHUFFLE(2, 3, 0, 1))));
        sum[t] += y[t]->d * (d * (float)hsum_epi32(acc[t]) - dmin * (float)summ);
    }
}

/* Q6_K: values 0..63 (biased by 32) times activations with maddubs; the
 * bias comes back out as 32 * sum(scale * bsum). Within each 32-element
 * vector the first 16 elements use one scale and the next 16 another. */
AVX2 static INLINE void dot_q6_K_block(const block_q6_K *x, const block_q8_K *const *y, int n_tok, float *sum) {
    const __m256i mask4 = _mm256_set1_epi8(0xF), mask2 = _mm256_set1_epi8(3);
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = x->ql + 64 * h;
        const int8_t *sc = x->scales + 8 * h;
        __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        __m256i lo[4] = {_mm256_and_si256(l0, mask4), _mm256_and_si256(l1, mask4),
                         _mm256_and_si256(_mm256_srli_epi16(l0, 4), mask4),
                         _mm256_and_si256(_mm256_srli_epi16(l1, 4), mask4)};
        for (int k = 0; k < 4; k++) {
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), mask2);
            __m256i q = _mm256_or_si256(lo[k], _mm256_slli_epi16(hi, 4));
            __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
            for (int t = 0; t < n_tok; t++) {
                __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)(y[t]->qs + 128 * h + 32 * k)));
                acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(p, scv));
            }
        }
    }
    float d = h2f(x->d);
    for (int t = 0; t < n_tok; t++) {
        int bias = 0;
        for (int g = 0; g < 16; g++) bias += x->scales[g] * y[t]->bsums[g];
        sum[t] += y[t]->d * d * (float)(hsum_epi32(acc[t]) - 32 * bias);
    }
}

/* One k-quant row against n_tok <= 4 activations (act_stride bytes apart).
 * Always inlined with a constant type and token count (DOTN, dot_q*_K),
 * so that the accumulators stay in registers. */
AVX2 static INLINE void dotn_k(qtype t, const void *w, const void *act, size_t act_stride, int n_tok, size_t n,
                        float *out, size_t out_stride) {
    float sum[4] = {0, 0, 0, 0};
    size_t bb = t == QT_Q4_K ? sizeof(block_q4_K) : t == QT_Q5_K ? sizeof(block_q5_K) : sizeof(block_q6_K);
    const uint8_t *ahead = rows_ahead(w, n / QK_K * bb), *pf = ahead;
    for (size_t i = 0; i < n / QK_K; i++) {
        prefetch_ahead(ahead, i, bb, &pf);
        const block_q8_K *y[4];
        for (int k = 0; k < n_tok; k++) y[k] = (const block_q8_K *)((const uint8_t *)act + k * act_stride) + i;
        if (t == QT_Q4_K) {
            const block_q4_K *x = (const block_q4_K *)w + i;
            dot_kx(&x->d, x->scales, NULL, x->qs, y, n_tok, sum);
        } else if (t == QT_Q5_K) {
            const block_q5_K *x = (const block_q5_K *)w + i;
            dot_kx(&x->d, x->scales, x->qh, x->qs, y, n_tok, sum);
        } else {
            dot_q6_K_block((const block_q6_K *)w + i, y, n_tok, sum);
        }
    }
    for (int k = 0; k < n_tok; k++) out[k * out_stride] = sum[k];
}

/* The multi-token entry points: the token count made a constant for the
 * inlined body. */
#define DOTN(name, body, type)                                                                               \
    AVX2 static void name(const void *w, const void *act, size_t act_stride, int n_tok, size_t n, float *out, \
                          size_t out_stride) {                                                                \
        switch (n_tok) {                                                                                      \
        case 1: body(type, w, act, act_stride, 1, n, out, out_stride); break;                                \
        case 2: body(type, w, act, act_stride, 2, n, out, out_stride); break;                                \
        case 3: body(type, w, act, act_stride, 3, n, out, out_stride); break;                                \
        default: body(type, w, act, act_stride, 4, n, out, out_stride); break;                               \
        }                                                                                                     \
    }
DOTN(dotn_q8_0, dotn_q8_0_body, QT_Q8_0)
DOTN(dotn_q4_K, dotn_k, QT_Q4_K)
DOTN(dotn_q5_K, dotn_k, QT_Q5_K)
DOTN(dotn_q6_K, dotn_k, QT_Q6_K)

AVX2 static float dot_q4_K(const void *w, const void *a, size_t n) {
    float s;
    dotn_k(QT_Q4_K, w, a, 0, 1, n, &s, 1);
    return s;
}
AVX2 static float dot_q5_K(const void *w, const void *a, size_t n) {
    float s;
    dotn_k(QT_Q5_K, w, a, 0, 1, n, &s, 1);
    return s;
}
AVX2 static float dot_q6_K(const void *w, const void *a, size_t n) {
    float s;
    dotn_k(QT_Q6_K, w, a, 0, 1, n, &s, 1);
    return s;
}

void quant_vnni_fill(quant_kernels *k) {
    k->gemm_q4_0_x8 = gemm_q4_0_x8_vnni;
    k->gemm_q4_0_x16p = gemm_q4_0_x16p_vnni;
}

void quant_avx2_fill(quant_kernels *k) {
    k->prefetches = 1;
    k->dot[QT_F32] = dot_f32;
    k->dot[QT_F16] = dot_f16;
    k->dot[QT_BF16] = dot_bf16;
    k->dot[QT_Q4_0] = dot_q4_0;
    k->dot[QT_Q8_0] = dot_q8_0;
    k->dotn[QT_Q8_0] = dotn_q8_0;
    k->dot4[QT_Q8_0] = dot4_q8_0;
    k->dot[QT_Q4_1] = dot_q4_1;
    k->dot[QT_Q5_0] = dot_q5_0;
    k->dot[QT_Q5_1] = dot_q5_1;
    k->dot[QT_Q4_K] = dot_q4_K;
    k->dot[QT_Q5_K] = dot_q5_K;
    k->dot[QT_Q6_K] = dot_q6_K;
    k->dotn[QT_Q4_K] = dotn_q4_K;
    k->dotn[QT_Q5_K] = dotn_q5_K;
    k->dotn[QT_Q6_K] = dotn_q6_K;
    k->dot_q4_0_x8 = dot_q4_0_x8;
    k->gemm_q4_0_x8 = gemm_q4_0_x8;
    k->gemm_q4_0_x16p = gemm_q4_0_x16p;
    k->dot_f16_f16 = dot_f16_f16;
    k->dot_f16_f16_x4 = dot_f16_f16_x4;
    k->to_f16 = to_f16;
    k->from_f16 = from_f16;
    k->quantize_q8_0 = quantize_q8_0;
    k->silu_mul = silu_mul;
    k->exp_shift = exp_shift;
}

#else

void quant_vnni_fill(quant_kernels *k) { (void)k; }

void quant_avx2_fill(quant_kernels *k) { (void)k; }

#endif
