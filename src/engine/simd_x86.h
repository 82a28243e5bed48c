/* simd_x86: helpers shared by the x86 SIMD kernel files (simd_avx2.c,
 * simd_avx512.c), so that both sum and prefetch in the same way: a kernel
 * that must give the AVX2 kernel's results bit for bit reduces its
 * accumulators with the same hsum_ps. Internal to the engine; included
 * only on x86. The helpers carry the AVX2 target: a function compiled for
 * a wider target may inline them. */
#ifndef MSOA_ENGINE_SIMD_X86_H
#define MSOA_ENGINE_SIMD_X86_H

#include "engine/quant.h"

#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE __attribute__((always_inline)) inline

AVX2 static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

AVX2 static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 4 bytes of an activation block as one int (for a broadcast) */
static inline int act_u32(const int8_t *p) {
    int v;
    memcpy(&v, p, 4);
    return v;
}

/* The row kernels prefetch the weights QUANT_PREFETCH_ROWS rows further on
 * (quant.h), a little per block: `ahead` is where that part of the matrix
 * starts, and block i of `block` bytes is about to be read here. The cache
 * lines of the same part ahead are requested, so memory keeps working while
 * these rows are computed (prefetching a whole tile at once stalls on the
 * core's few outstanding-miss slots and leaves memory idle during the
 * arithmetic that follows). The lines go to L2 (hint T1): the core's loads
 * find them there soon enough, and decode used ~2-8% less CPU per token
 * than with L1 as the target. *pf starts at `ahead` and remembers the next
 * line to request. */
AVX2 static inline void prefetch_ahead(const uint8_t *ahead, size_t i, size_t block, const uint8_t **pf) {
    for (; *pf < ahead + (i + 1) * block; *pf += 64) _mm_prefetch((const char *)*pf, _MM_HINT_T1);
}

/* prefetch_ahead for a block size known at compile time (the loop
 * unrolls): one request per 64 bytes from p on, without the bookkeeping of
 * *pf, whose compare-and-branch per line cost more front-end slots than
 * the requests in the repacked Q4_0 kernel (from L2 it ran ~5% faster
 * without). A line shared with the next block may be requested twice (one
 * load slot), and consecutive blocks leave no line out. Always inlined: a
 * function doing nothing but prefetches counts as free of side effects, and
 * gcc drops calls to it that it does not inline (across target attributes). */
AVX2 static INLINE void prefetch_block(const uint8_t *p, size_t block) {
    for (size_t off = 0; off < block; off += 64) _mm_prefetch((const char *)p + off, _MM_HINT_T1);
}

/* The start of the rows QUANT_PREFETCH_ROWS further on than w. */
static inline const uint8_t *rows_ahead(const void *w, size_t row_bytes) {
    return (const uint8_t *)w + QUANT_PREFETCH_ROWS * row_bytes;
}

/* quant_expf of 8 lanes, operation for operation (quant.h): the same
 * bits. max_ps(x, lo) gives lo for a NaN lane; the NaN is put back last. */
AVX2 static inline __m256 exp_ps(__m256 x) {
    static const float c[] = QEXP_TAYLOR;
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(QEXP_MIN)), _mm256_set1_ps(QEXP_MAX));
    __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(QEXP_LOG2E), _mm256_set1_ps(QEXP_ROUND));
    __m256 n = _mm256_sub_ps(t, _mm256_set1_ps(QEXP_ROUND));
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-QEXP_LN2_HI), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-QEXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 8; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[i]));
    __m256i k = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000)), k1 = _mm256_srai_epi32(k, 1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(k, k1), bias), 23));
    __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

#endif
