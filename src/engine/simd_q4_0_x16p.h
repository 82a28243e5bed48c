/* simd_q4_0_x16p: body of the 256-bit Q4_0 x Q8_0 kernel on repacked rows
 * (a 16-row group of quant_pack_q4_0_x16, quant.h, taken as two halves of
 * 8 rows), up to 4 tokens at a time, included by simd_avx2.c once per
 * instruction set. The includer defines:
 *   X16P_NAME     the function's name
 *   X16P_TARGET   its target attribute
 *   X16P_DOT(acc, u, s)  acc (8 x int32) plus the sums of 4 adjacent
 *                 products of unsigned bytes u and signed bytes s
 *   X16P_HI_SHIFT 1 if high nibbles must be shifted down to 0..15 before
 *                 X16P_DOT (maddubs saturates 16-bit pair sums of 240 * y);
 *                 0 to use them in place (16 * q) and divide the sum by 16.
 *
 * Why it is faster than simd_q4_0_x8.h's kernel on the file's layout: a
 * 32-byte load holds 4 bytes (8 values) of each of 8 rows, one row per
 * 32-bit lane, and the activation's matching 4 bytes are broadcast to every
 * lane, so each row's integer sum builds up in its own lane: no scale
 * gather, no reduction across lanes, and the -8 * sum(y) term is the
 * activation's (q8_0_aux), computed once per product instead of once per
 * 8 rows. The float work per block is the same as there: one product of
 * the scales and one fused multiply-add per row, in dot_q4_0_x8's order,
 * so the results are the same bit for bit (integer sums are exact in any
 * order; 16 * q * y sums stay far below 2^31). */

#define X16P_CAT_(a, b) a##b
#define X16P_CAT(a, b) X16P_CAT_(a, b)
#define X16P_BODY X16P_CAT(X16P_NAME, _body)

/* Rows 8h..8h+7 of the group. Inlined with constants h and n_tok (below),
 * so that the accumulators and the unpacked weights stay in registers. */
X16P_TARGET static INLINE void X16P_BODY(const void *w, const void *act, size_t act_stride, const q8_0_aux *aux,
                                         int h, int n_tok, size_t n, float *out, size_t out_stride) {
    const uint8_t *g = w, *acts = act;
    const size_t nb = n / QK8_0;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    /* the first half's pass prefetches two groups (32 rows) ahead, as the
     * other row kernels prefetch 16 rows ahead; the second finds the group
     * in cache */
    const uint8_t *ahead = g + 2 * nb * Q4_0_X16P_BLOCK, *pf = ahead;
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *b = g + i * Q4_0_X16P_BLOCK;
        if (h == 0) prefetch_ahead(ahead, i, Q4_0_X16P_BLOCK, &pf);
        const __m256 dx = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + 16 * h)));
        __m256i lo[4], hi[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b + 32 + 64 * c + 32 * h));
            lo[c] = _mm256_and_si256(q, m4);
#if X16P_HI_SHIFT
            hi[c] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
#else
            hi[c] = _mm256_andnot_si256(m4, q);
#endif
        }
#pragma GCC unroll 4
        for (int t = 0; t < n_tok; t++) {
            const block_q8_0 *y = (const block_q8_0 *)(acts + (size_t)t * act_stride) + i;
            const q8_0_aux *a = aux + (size_t)t * nb + i;
            /* low nibbles are elements 4c..4c+3, high ones 16+4c..19+4c */
            __m256i sl = _mm256_set1_epi32(a->m8), sh = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                sl = X16P_DOT(sl, lo[c], _mm256_set1_epi32(act_u32(y->qs + 4 * c)));
                sh = X16P_DOT(sh, hi[c], _mm256_set1_epi32(act_u32(y->qs + 16 + 4 * c)));
            }
#if !X16P_HI_SHIFT
            sh = _mm256_srai_epi32(sh, 4);
#endif
            __m256 d = _mm256_mul_ps(dx, _mm256_set1_ps(a->d));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(sl, sh)), d, acc[t]);
        }
    }
    for (int t = 0; t < n_tok; t++) _mm256_storeu_ps(out + (size_t)t * out_stride + 8 * h, acc[t]);
}

X16P_TARGET static void X16P_NAME(const void *w, const void *act, size_t act_stride, const q8_0_aux *aux, int n_tok,
                                  size_t n, float *out, size_t out_stride) {
    for (int h = 0; h < 2; h++) {
        if (h == 0) {
            switch (n_tok) {
            case 1: X16P_BODY(w, act, act_stride, aux, 0, 1, n, out, out_stride); break;
            case 2: X16P_BODY(w, act, act_stride, aux, 0, 2, n, out, out_stride); break;
            case 3: X16P_BODY(w, act, act_stride, aux, 0, 3, n, out, out_stride); break;
            default: X16P_BODY(w, act, act_stride, aux, 0, 4, n, out, out_stride); break;
            }
        } else {
            switch (n_tok) {
            case 1: X16P_BODY(w, act, act_stride, aux, 1, 1, n, out, out_stride); break;
            case 2: X16P_BODY(w, act, act_stride, aux, 1, 2, n, out, out_stride); break;
            case 3: X16P_BODY(w, act, act_stride, aux, 1, 3, n, out, out_stride); break;
            default: X16P_BODY(w, act, act_stride, aux, 1, 4, n, out, out_stride); break;
            }
        }
    }
}

#undef X16P_BODY
#undef X16P_CAT
#undef X16P_CAT_
