/* simd_q4_0_x8: body of the 8-row Q4_0 x Q8_0 kernel (up to 4 tokens at a
 * time, for batched prompts), included by
 * simd_avx2.c once per instruction set (plain AVX2, and AVX-VNNI where the
 * byte dot product is one instruction). The includer defines:
 *   Q4X8_NAME     the function's name
 *   Q4X8_TARGET   its target attribute
 *   Q4X8_DOT(acc, u, s)  acc (8 x int32) plus the sums of 4 adjacent
 *                 products of unsigned bytes u (0..15 here) and signed s
 *
 * Layout trick: one register holds 16 elements of two rows, so 8 rows take
 * 4 registers per half block and the per-row reduction is short. Row r's
 * sum of (q - 8) * y is computed as sum(q * y) - 8 * sum(y), exactly, and
 * each row's total is folded into lane r with one fused multiply-add per
 * block: the order of dot_q4_0_x8 (quant.h), bit for bit. The weights of a
 * block are unpacked once and used for every token.
 * The 8 rows QUANT_PREFETCH_ROWS further on are prefetched a little per
 * block (see prefetch_ahead), as one row of 8 x 18 bytes per block. */

#define Q4X8_CAT_(a, b) a##b
#define Q4X8_CAT(a, b) Q4X8_CAT_(a, b)
#define Q4X8_BODY Q4X8_CAT(Q4X8_NAME, _body)

/* Inlined with a constant n_tok (below), so that the accumulators and
 * partial sums stay in registers. */
Q4X8_TARGET static INLINE void Q4X8_BODY(const void *w, size_t row_bytes, const void *act, size_t act_stride,
                                         int n_tok, size_t n, float *out, size_t out_stride) {
    const uint8_t *base = w, *acts = act;
    const __m256i m4 = _mm256_set1_epi8(0xF), eights = _mm256_set1_epi8(8);
    /* lane order after the reduction below is rows 0,2,4,6,1,3,5,7 */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i stride = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)row_bytes));
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const uint8_t *ahead = rows_ahead(base, row_bytes), *pf = ahead;
    for (size_t i = 0; i < n / QK8_0; i++) {
        prefetch_ahead(ahead, i, 8 * sizeof(block_q4_0), &pf);
        /* the 8 rows' nibbles, unpacked once for all the tokens */
        const block_q4_0 *x0 = (const block_q4_0 *)base + i;
        __m256i lo[4], hi[4];
        /* unrolled so that lo, hi and v below live in registers */
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {   /* rows 2p and 2p+1 */
            const uint8_t *r0 = (const uint8_t *)x0 + 2 * p * row_bytes + 2;
            __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)r0)),
                                                _mm_loadu_si128((const __m128i *)(r0 + row_bytes)), 1);
            lo[p] = _mm256_and_si256(q, m4);
            hi[p] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        /* the 8 rows' fp16 scales: 32-bit gathers, low halves kept */
        __m256i dw = _mm256_and_si256(_mm256_i32gather_epi32((const int *)&x0->d, stride, 1), _mm256_set1_epi32(0xFFFF));
        __m256 dx = _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(dw), _mm256_extracti128_si256(dw, 1)));
#pragma GCC unroll 4
        for (int t = 0; t < n_tok; t++) {
            const block_q8_0 *y = (const block_q8_0 *)(acts + (size_t)t * act_stride) + i;
            __m256i ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)y->qs));
            __m256i yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y->qs + 16)));
            /* -8 * y in the same 4-lane layout: each row's lanes start from
             * it, so the reduction below yields sum(q * y) - 8 * sum(y) */
            __m256i y8 = Q4X8_DOT(Q4X8_DOT(_mm256_setzero_si256(), eights, ylo), eights, yhi);
            __m256i start = _mm256_sub_epi32(_mm256_setzero_si256(), y8), v[4];
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) v[p] = Q4X8_DOT(Q4X8_DOT(start, lo[p], ylo), hi[p], yhi);
            /* v[p] = [row 2p: 4 lanes | row 2p+1: 4 lanes] -> one lane per row */
            __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            __m256i isum = _mm256_permutevar8x32_epi32(h, order);
            __m256 d = _mm256_mul_ps(dx, _mm256_set1_ps(h2f(y->d)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[t]);
        }
    }
    for (int t = 0; t < n_tok; t++) _mm256_storeu_ps(out + (size_t)t * out_stride, acc[t]);
}

Q4X8_TARGET static void Q4X8_NAME(const void *w, size_t row_bytes, const void *act, size_t act_stride, int n_tok,
                                  size_t n, float *out, size_t out_stride) {
    switch (n_tok) {
    case 1: Q4X8_BODY(w, row_bytes, act, act_stride, 1, n, out, out_stride); break;
    case 2: Q4X8_BODY(w, row_bytes, act, act_stride, 2, n, out, out_stride); break;
    case 3: Q4X8_BODY(w, row_bytes, act, act_stride, 3, n, out, out_stride); break;
    default: Q4X8_BODY(w, row_bytes, act, act_stride, 4, n, out, out_stride); break;
    }
}

#undef Q4X8_BODY
#undef Q4X8_CAT
#undef Q4X8_CAT_
