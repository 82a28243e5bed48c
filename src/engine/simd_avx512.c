/* simd_avx512: AVX-512 (512-bit VNNI) versions of the two kernels decode
 * spends its time in: the 8-row Q4_0 kernel and the 4-row Q8_0 kernel,
 * both against Q8_0 activations.
 *
 * Why: the AVX2 kernels are bound by instructions, not memory, when the
 * weights come from cache (the 110M models) and too slow to keep memory
 * busy when they come from DRAM. A 512-bit register holds 4 rows' half
 * blocks (Q4_0) or 2 rows' blocks (Q8_0), and VPDPBUSD multiplies and sums
 * bytes in one instruction. Measured on a Granite Rapids class Xeon: the
 * Q8_0 kernel takes 5-8% less CPU per decoded token than AVX2; the Q4_0
 * kernel is no faster than the 256-bit AVX-VNNI one (loads, unpacking and
 * the per-block reduction do not shrink, and only 2 vector ports run 512-bit
 * instructions), so quant.c prefers that one where the CPU has AVX-VNNI.
 *
 * Same results, bit for bit, as the AVX2 tables' kernels: every int32 lane
 * holds exactly the integer the AVX2 kernel's lane holds (the sum of 4
 * adjacent byte products; integer sums are exact, whatever their order),
 * and the float work (scale products, fused multiply-adds per block, the
 * final hsum_ps) is done lane for lane in the same order. So golden
 * outputs cannot change with the instruction set.
 *
 * Like simd_avx2.c, compiled for the baseline target: only these functions
 * carry the target attribute, and quant.c installs them only when CPUID and
 * XCR0 say the CPU and the OS support AVX-512 F/BW/VL/VNNI. */
#include "engine/quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include "engine/simd_x86.h"

#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

/* 16 bytes from each of 4 rows row_bytes apart (from p on): row k's in
 * 128-bit lane k. */
AVX512 static inline __m512i load_4x16(const uint8_t *p, size_t row_bytes) {
    __m512i q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));
    q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(p + row_bytes)), 1);
    q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(p + 2 * row_bytes)), 2);
    return _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(p + 3 * row_bytes)), 3);
}

/* Eight Q4_0 rows against n_tok <= 4 activations, the contract of
 * gemm_q4_0_x8 (quant.h) and the layout of simd_q4_0_x8.h widened: one
 * register holds 16 elements of 4 rows (row 4p+k in 128-bit lane k), so 8
 * rows take 2 registers per half block. As there, row r's integer sum is
 * sum(q * y) - 8 * sum(y), exact, and it is folded into lane r of the
 * token's accumulator with one fused multiply-add per block. Always inlined
 * with a constant n_tok (below), so the accumulators stay in registers. */
AVX512 static INLINE void gemm_q4_0_x8_body(const void *w, size_t row_bytes, const void *act, size_t act_stride,
                                            int n_tok, size_t n, float *out, size_t out_stride) {
    const uint8_t *base = w, *acts = act;
    const __m512i m4 = _mm512_set1_epi8(0xF), eights = _mm512_set1_epi8(8);
    /* after the reduction below, lane 4k holds row k and lane 4k+1 row 4+k */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i stride = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)row_bytes));
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const uint8_t *ahead = rows_ahead(base, row_bytes), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, 8 * sizeof(block_q4_0), &pf);
        const block_q4_0 *x0 = (const block_q4_0 *)base + i;
        __m512i lo[2], hi[2];
        /* unrolled (here and below) so that lo, hi and v live in registers */
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {   /* rows 4p .. 4p+3, unpacked once for all the tokens */
            __m512i q = load_4x16((const uint8_t *)x0 + 4 * p * row_bytes + 2, row_bytes);
            lo[p] = _mm512_and_si512(q, m4);
            hi[p] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        }
        /* the 8 rows' fp16 scales: 32-bit gathers, low halves kept */
        __m256i dw = _mm256_and_si256(_mm256_i32gather_epi32((const int *)&x0->d, stride, 1), _mm256_set1_epi32(0xFFFF));
        __m256 dx = _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(dw), _mm256_extracti128_si256(dw, 1)));
#pragma GCC unroll 4
        for (int t = 0; t < n_tok; t++) {
            const block_q8_0 *y = (const block_q8_0 *)(acts + (size_t)t * act_stride) + i;
            __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)y->qs));
            __m512i yhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(y->qs + 16)));
            /* each row's lanes start from -8 * y, summed the same 4 at a time */
            __m512i y8 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), eights, ylo), eights, yhi);
            __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), y8), v[2];
#pragma GCC unroll 2
            for (int p = 0; p < 2; p++) v[p] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo[p], ylo), hi[p], yhi);
            /* within each 128-bit lane k: [a0..a3] of row k (v[0]) and
             * [b0..b3] of row 4+k (v[1]) -> [a, b, a, b] */
            __m512i s = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
            s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_BADC));
            __m256i isum = _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, s));
            __m256 d = _mm256_mul_ps(dx, _mm256_set1_ps(h2f(y->d)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[t]);
        }
    }
    for (int t = 0; t < n_tok; t++) _mm256_storeu_ps(out + (size_t)t * out_stride, acc[t]);
}

AVX512 static void gemm_q4_0_x8(const void *w, size_t row_bytes, const void *act, size_t act_stride, int n_tok,
                                size_t n, float *out, size_t out_stride) {
    switch (n_tok) {
    case 1: gemm_q4_0_x8_body(w, row_bytes, act, act_stride, 1, n, out, out_stride); break;
    case 2: gemm_q4_0_x8_body(w, row_bytes, act, act_stride, 2, n, out, out_stride); break;
    case 3: gemm_q4_0_x8_body(w, row_bytes, act, act_stride, 3, n, out, out_stride); break;
    default: gemm_q4_0_x8_body(w, row_bytes, act, act_stride, 4, n, out, out_stride); break;
    }
}

/* A repacked group of 16 Q4_0 rows (quant_pack_q4_0_x16) against n_tok
 * <= 4 activations, the contract of gemm_q4_0_x16p (quant.h) and the method
 * of simd_q4_0_x16p.h with one 512-bit register per chunk: lane r is row r,
 * so the 16 rows take 8 byte dot products per block and per token, and
 * their scales one conversion. Each lane's float work is that of the
 * 256-bit kernels (and of dot_q4_0_x8): the same results, bit for bit.
 * Always inlined with a constant n_tok (below). */
AVX512 static INLINE void gemm_q4_0_x16p_body(const void *w, const void *act, size_t act_stride, const q8_0_aux *aux,
                                              int n_tok, size_t n, float *out, size_t out_stride) {
    const uint8_t *g = w, *acts = act;
    const size_t nb = n / QK8_0;
    const __m512i m4 = _mm512_set1_epi8(0xF);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const uint8_t *ahead = g + 2 * nb * Q4_0_X16P_BLOCK;
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = g + i * Q4_0_X16P_BLOCK;
        prefetch_block(ahead + i * Q4_0_X16P_BLOCK, Q4_0_X16P_BLOCK);
        const __m512 dx = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        __m512i lo[4], hi[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512i q = _mm512_loadu_si512((const void *)(b + 32 + 64 * c));
            lo[c] = _mm512_and_si512(q, m4);
            hi[c] = _mm512_andnot_si512(m4, q);   /* 16 * q: the sum is divided by 16 */
        }
#pragma GCC unroll 4
        for (int t = 0; t < n_tok; t++) {
            const block_q8_0 *y = (const block_q8_0 *)(acts + (size_t)t * act_stride) + i;
            const q8_0_aux *a = aux + (size_t)t * nb + i;
            __m512i sl = _mm512_set1_epi32(a->m8), sh = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                sl = _mm512_dpbusd_epi32(sl, lo[c], _mm512_set1_epi32(act_u32(y->qs + 4 * c)));
                sh = _mm512_dpbusd_epi32(sh, hi[c], _mm512_set1_epi32(act_u32(y->qs + 16 + 4 * c)));
            }
            __m512i isum = _mm512_add_epi32(sl, _mm512_srai_epi32(sh, 4));
            __m512 d = _mm512_mul_ps(dx, _mm512_set1_ps(a->d));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc[t]);
        }
    }
    for (int t = 0; t < n_tok; t++) _mm512_storeu_ps(out + (size_t)t * out_stride, acc[t]);
}

AVX512 static void gemm_q4_0_x16p(const void *w, const void *act, size_t act_stride, const q8_0_aux *aux, int n_tok,
                                  size_t n, float *out, size_t out_stride) {
    switch (n_tok) {
    case 1: gemm_q4_0_x16p_body(w, act, act_stride, aux, 1, n, out, out_stride); break;
    case 2: gemm_q4_0_x16p_body(w, act, act_stride, aux, 2, n, out, out_stride); break;
    case 3: gemm_q4_0_x16p_body(w, act, act_stride, aux, 3, n, out, out_stride); break;
    default: gemm_q4_0_x16p_body(w, act, act_stride, aux, 4, n, out, out_stride); break;
    }
}

/* Four Q8_0 rows against one activation, each exactly as the AVX2 dot_q8_0
 * computes it: 8 float lanes per row (lane j sums elements 4j..4j+3 of
 * every block), one fused multiply-add per block, hsum_ps at the end. Two
 * rows share a register (row 2p+h in 256-bit half h). The signed x signed
 * byte products use x + 128 (x ^ 0x80, unsigned) and take 128 * y back
 * out: sum((x + 128) * y) - 128 * sum(y), exact in int32. */
AVX512 static void dot4_q8_0(const void *w, size_t row_bytes, const void *a, size_t n, float out[4]) {
    const block_q8_0 *y = a;
    const uint8_t *rows = w;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    /* which row's scale each lane takes: [row 0 x 8 | row 1 x 8], [2 | 3] */
    const __m512i pick0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i pick1 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    const uint8_t *ahead = rows_ahead(w, row_bytes), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, 4 * sizeof *y, &pf);
        __m512i yv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)y[i].qs));
        __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, yv));
        /* the 4 rows' scales times the activation's, as the AVX2 kernel
         * multiplies them (one float product each) */
        const block_q8_0 *x[4];
        for (int r = 0; r < 4; r++) x[r] = (const block_q8_0 *)(rows + r * row_bytes) + i;
        __m128i dh = _mm_setr_epi16((short)x[0]->d, (short)x[1]->d, (short)x[2]->d, (short)x[3]->d, 0, 0, 0, 0);
        __m512 d4 = _mm512_castps128_ps512(_mm_mul_ps(_mm_cvtph_ps(dh), _mm_set1_ps(h2f(y[i].d))));
        __m512 d[2] = {_mm512_permutexvar_ps(pick0, d4), _mm512_permutexvar_ps(pick1, d4)};
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
            __m512i xv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[2 * p]->qs)),
                                            _mm256_loadu_si256((const __m256i *)x[2 * p + 1]->qs), 1);
            __m512i isum = _mm512_dpbusd_epi32(start, _mm512_xor_si512(xv, flip), yv);
            acc[p] = _mm512_fmadd_ps(d[p], _mm512_cvtepi32_ps(isum), acc[p]);
        }
    }
    for (int p = 0; p < 2; p++) {
        out[2 * p] = hsum_ps(_mm512_castps512_ps256(acc[p]));
        out[2 * p + 1] = hsum_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p]), 1)));
    }
}

/* dot_f16_f16 of 8 rows (stride elements apart) with one y, each row
 * exactly as simd_avx2.c's dot_f16_rows computes it (ggml's F16 order: 4 x
 * 8 lanes over each 32 elements, (a0 + a2) + (a1 + a3), halves added, two
 * horizontal adds, the remainder in double), for the attention scores and
 * values. A row's 4 accumulators are two 512-bit registers, [a0 | a1] and
 * [a2 | a3], so each is fed by one 16-element load converted from F16 and
 * one 16-float load of y: no lane shuffling in the loop, and
 * [a0 + a2 | a1 + a3] is their plain sum. */
AVX512 static void dot_f16_f16_x8(const uint16_t *x, size_t stride, const float *y, size_t n, float out[8]) {
    size_t np = n & ~(size_t)31;
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t i = 0; i < np; i += 32) {
        __m512 y0 = _mm512_loadu_ps(y + i), y1 = _mm512_loadu_ps(y + i + 16);
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const uint16_t *row = x + r * stride + i;
            acc[r][0] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)row)), y0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 16))), y1, acc[r][1]);
        }
    }
    __m128 t[8];
    for (int r = 0; r < 8; r++) {
        __m512 v = _mm512_add_ps(acc[r][0], acc[r][1]);
        __m256 e = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        t[r] = _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1));
    }
    float sums[8];
    _mm_storeu_ps(sums, _mm_hadd_ps(_mm_hadd_ps(t[0], t[1]), _mm_hadd_ps(t[2], t[3])));
    _mm_storeu_ps(sums + 4, _mm_hadd_ps(_mm_hadd_ps(t[4], t[5]), _mm_hadd_ps(t[6], t[7])));
    for (int r = 0; r < 8; r++) {
        double s = sums[r];
        for (size_t i = np; i < n; i++) s += (double)(h2f(x[r * stride + i]) * y[i]);
        out[r] = (float)s;
    }
}

/* dot4_q8_0 above on a repacked group (quant_pack_q8_0_x4): the scales
 * come in one load, two rows' values in another, already offset by 128,
 * and the -128 * sum(y) lanes with the activation (lane_sums): about half
 * the instructions per block, the same lanes and float operations, so the
 * same results bit for bit. */
AVX512 static void dot4p_q8_0(const void *w, const void *a, const int32_t *lane_sums, size_t n, float out[4]) {
    const block_q8_0 *y = a;
    const uint8_t *g = w;
    const size_t nb = n / QK8_0;
    const __m512i pick0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i pick1 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    /* QUANT_PREFETCH_ROWS rows (groups of 4) ahead, as dot4_q8_0 */
    const uint8_t *ahead = g + QUANT_PREFETCH_ROWS / 4 * nb * Q8_0_X4P_BLOCK, *pf = ahead;
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = g + i * Q8_0_X4P_BLOCK;
        prefetch_ahead(ahead, i, Q8_0_X4P_BLOCK, &pf);
        __m512i yv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)y[i].qs));
        __m512i start = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(lane_sums + 8 * i)));
        __m512 d4 = _mm512_castps128_ps512(_mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)b)), _mm_set1_ps(h2f(y[i].d))));
        __m512 d[2] = {_mm512_permutexvar_ps(pick0, d4), _mm512_permutexvar_ps(pick1, d4)};
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
            __m512i isum = _mm512_dpbusd_epi32(start, _mm512_loadu_si512((const void *)(b + 8 + 64 * p)), yv);
            acc[p] = _mm512_fmadd_ps(d[p], _mm512_cvtepi32_ps(isum), acc[p]);
        }
    }
    for (int p = 0; p < 2; p++) {
        out[2 * p] = hsum_ps(_mm512_castps512_ps256(acc[p]));
        out[2 * p + 1] = hsum_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p]), 1)));
    }
}

void quant_avx512_fill(quant_kernels *k) {
    k->dot4p_q8_0 = dot4p_q8_0;
    k->dot_f16_f16_x8 = dot_f16_f16_x8;
    k->gemm_q4_0_x8 = gemm_q4_0_x8;
    k->gemm_q4_0_x16p = gemm_q4_0_x16p;
    k->dot4[QT_Q8_0] = dot4_q8_0;
}

#else

void quant_avx512_fill(quant_kernels *k) { (void)k; }

#endif
