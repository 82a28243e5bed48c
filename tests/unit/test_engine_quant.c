/* test_engine_quant: tensor types against hand-made blocks and an F32
 * reference, and every SIMD kernel against its scalar twin.
 *
 * Tolerances (relative RMS error of dequantise(quantise(x)) for Gaussian x;
 * ggml's own formats have about these errors): f16 1e-3, bf16 8e-3,
 * q8_0 1e-2, q6_k 2.5e-2, q5_k/q5_0/q5_1 6e-2, q4_0/q4_1/q4_k 1.2e-1.
 * Dot products with quantised activations: relative to |w|*|x|, 2e-2 for
 * 8-bit/6-bit rows and 4e-2 for the 4/5-bit ones. SIMD vs scalar: 1e-5 relative (only the
 * float summation order differs; integer parts are exact). */
#include "testlib.h"

#include "engine/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 88172645463325252ull;

static float frand_normal(void) {
    /* xorshift + Box-Muller: deterministic, no libc state */
    double u[2];
    for (int k = 0; k < 2; k++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        u[k] = ((rng >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

static void fill(float *x, size_t n) { for (size_t i = 0; i < n; i++) x[i] = frand_normal(); }

static double rel_rms(const float *a, const float *b, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) { e += (a[i] - b[i]) * (double)(a[i] - b[i]); r += (double)a[i] * a[i]; }
    return sqrt(e / r);
}

static double norm(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

static void test_fp16(void) {
    CHECK_EQ_INT(fp32_to_fp16(1.0f), 0x3c00);
    CHECK_EQ_INT(fp32_to_fp16(-2.0f), 0xc000);
    CHECK_EQ_INT(fp32_to_fp16(0.1f), 0x2e66);
    CHECK_EQ_INT(fp32_to_fp16(65504.0f), 0x7bff);
    CHECK_EQ_INT(fp32_to_fp16(65519.0f), 0x7bff);
    CHECK_EQ_INT(fp32_to_fp16(65520.0f), 0x7c00);
    CHECK_EQ_INT(fp32_to_fp16(5.9604645e-8f), 0x0001);  /* 2^-24, smallest subnormal */
    CHECK_EQ_INT(fp32_to_fp16(6.1035156e-5f), 0x0400);  /* 2^-14, smallest normal */
    CHECK_EQ_INT(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00); /* tie rounds to even */
    CHECK_EQ_INT(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);
    CHECK(fp16_to_fp32(0x3555) > 0.333f && fp16_to_fp32(0x3555) < 0.3334f);
    CHECK(fp16_to_fp32(0x0001) == 5.9604645e-8f);
    CHECK(isinf(fp16_to_fp32(0xfc00)) && fp16_to_fp32(0xfc00) < 0);
    CHECK(isnan(fp16_to_fp32(fp32_to_fp16(NAN))));
    for (uint32_t h = 0; h < 0x7c00; h++)   /* every finite half survives a round trip */
        if (fp32_to_fp16(fp16_to_fp32((uint16_t)h)) != h) { CHECK_EQ_INT(h, -1); break; }
    CHECK_EQ_INT(fp32_to_bf16(1.0f), 0x3f80);
    CHECK(bf16_to_fp32(fp32_to_bf16(3.140625f)) == 3.140625f);
    CHECK(isnan(bf16_to_fp32(fp32_to_bf16(NAN))));
}

static void test_type_facts(void) {
    CHECK_EQ_INT(qtype_row_bytes(QT_Q4_0, 64), 36);
    CHECK_EQ_INT(qtype_row_bytes(QT_Q4_0, 172), 0);
    CHECK_EQ_INT(qtype_row_bytes(QT_Q6_K, 512), 420);
    CHECK_EQ_INT(qtype_row_bytes(QT_BF16, 3), 6);
    CHECK_EQ_INT(qtype_from_name("Q4_K"), QT_Q4_K);
    CHECK_EQ_INT(qtype_from_name("q3_k"), -1);
    CHECK(!qtype_known(4) && !qtype_known(11) && !qtype_known(1000));   /* dropped Q4_2, Q3_K */
    CHECK(qtype_known(QT_Q5_0));
    CHECK_STR(qtype_name(QT_Q8_0), "q8_0");
    CHECK_EQ_INT(qtype_act_type(QT_Q4_0), QT_Q8_0);
    CHECK_EQ_INT(qtype_act_type(QT_Q6_K), QT_Q8_K);
}

/* Known bytes: the layouts are ggml's, so files from llama.cpp read right. */
static void test_q4_0_layout(void) {
    block_q4_0 b = {.d = 0x3c00};  /* d = 1 */
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    dequantize_row(QT_Q4_0, &b, y, 32);
    CHECK(y[0] == -8 && y[15] == 7);   /* low nibbles: elements 0..15 */
    CHECK(y[16] == 7 && y[31] == -8);  /* high nibbles: elements 16..31 */

    /* The reference quantiser maps the largest-magnitude element to -8. */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.5f;  /* -8 .. 7.5 */
    quantize_row(QT_Q4_0, x, &b, 32);
    CHECK_EQ_INT(b.d, fp32_to_fp16(1.0f));
    CHECK_EQ_INT(b.qs[0] & 0xF, 0);   /* -8 / 1 + 8 */
    CHECK_EQ_INT(b.qs[0] >> 4, 8);    /* 0 */
    CHECK_EQ_INT(b.qs[15] >> 4, 15);  /* 7.5 + 8.5 truncates to 16, clamped to 15 */
}

static void test_q5_layouts(void) {
    /* Q5_0: element j's fifth bit is bit j of qh, value (q - 16) * d */
    block_q5_0 b = {.d = 0x3c00, .qh = {0x01, 0x00, 0x01, 0x80}};   /* bits 0, 16, 31 */
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(3 | 5 << 4);
    float y[32];
    dequantize_row(QT_Q5_0, &b, y, 32);
    CHECK(y[0] == 3 && y[1] == 3 - 16 && y[15] == 3 - 16);
    CHECK(y[16] == 5 && y[17] == 5 - 16 && y[31] == 5);
    /* Q4_1: q * d + m */
    block_q4_1 c = {.d = fp32_to_fp16(0.5f), .m = fp32_to_fp16(-1.0f)};
    for (int j = 0; j < 16; j++) c.qs[j] = (uint8_t)(j | (15 - j) << 4);
    dequantize_row(QT_Q4_1, &c, y, 32);
    CHECK(y[0] == -1 && y[15] == 6.5f && y[16] == 6.5f && y[31] == -1);
    /* quantising a ramp with Q5_1 is exact up to fp16 rounding of d and m */
    float x[32], back[32];
    for (int j = 0; j < 32; j++) x[j] = 2.0f + (float)j * 0.25f;
    block_q5_1 q;
    quantize_row(QT_Q5_1, x, &q, 32);
    dequantize_row(QT_Q5_1, &q, back, 32);
    for (int j = 0; j < 32; j++) CHECK(fabsf(back[j] - x[j]) < 1e-3f);
}

static void test_k_layouts(void) {
    /* Q4_K: scale j = j+1, min j = 2j, d = 1, dmin = 0.5, all nibbles 3. */
    block_q4_K b = {.d = 0x3c00, .dmin = 0x3800};
    int sc[8] = {1, 2, 3, 4, 5, 60, 7, 63}, mn[8] = {0, 2, 4, 6, 8, 33, 12, 14};
    /* pack by hand, per the ggml layout */
    for (int j = 0; j < 4; j++) {
        b.scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        b.scales[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        b.scales[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | (mn[j + 4] & 0xF) << 4);
    }
    memset(b.qs, 0x53, sizeof b.qs);   /* low nibble 3, high nibble 5 */
    float y[256];
    dequantize_row(QT_Q4_K, &b, y, 256);
    for (int s = 0; s < 8; s++) {
        float want = (float)sc[s] * (s & 1 ? 5 : 3) - 0.5f * (float)mn[s];
        CHECK(y[s * 32] == want && y[s * 32 + 31] == want);
    }
    /* Q6_K: element 0 from ql[0] low + qh[0] bits 0-1; element 64 from
     * ql[0] high + qh[0] bits 4-5; element 128 from the second half. */
    block_q6_K c;
    memset(&c, 0, sizeof c);
    c.d = 0x3c00;
    for (int g = 0; g < 16; g++) c.scales[g] = (int8_t)(g - 8);
    c.ql[0] = 0x21;          /* e0 low = 1, e64 low = 2 */
    c.qh[0] = 0x30 | 0x02;   /* e0 high = 2 (+32), e64 high = 3 (+48) */
    c.ql[64] = 0x05;         /* e128 low = 5 */
    dequantize_row(QT_Q6_K, &c, y, 256);
    CHECK(y[0] == (float)(-8 * (33 - 32)));
    CHECK(y[64] == (float)(-4 * (50 - 32)));
    CHECK(y[128] == (float)(0 * (5 - 32)));
    CHECK(y[1] == (float)(-8 * -32));
    CHECK(y[144] == (float)(1 * -32));
}

static const struct { qtype t; double tol_rt, tol_dot; } cases[] = {
    {QT_F32, 1e-7, 1e-5}, {QT_F16, 1e-3, 1e-3}, {QT_BF16, 8e-3, 8e-3},
    {QT_Q8_0, 1e-2, 2e-2}, {QT_Q6_K, 2.5e-2, 2e-2}, {QT_Q5_K, 6e-2, 4e-2},
    {QT_Q4_0, 1.2e-1, 4e-2}, {QT_Q4_K, 1.2e-1, 4e-2},
    {QT_Q4_1, 1.2e-1, 4e-2}, {QT_Q5_0, 6e-2, 4e-2}, {QT_Q5_1, 6e-2, 4e-2},
};

enum { N = 1024 };

static void test_round_trip(void) {
    static float x[N], y[N];
    static uint8_t q[N * 4];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fill(x, N);
        CHECK_EQ_INT(quantize_row(cases[c].t, x, q, N), 0);
        dequantize_row(cases[c].t, q, y, N);
        double e = rel_rms(x, y, N);
        if (e > cases[c].tol_rt) {
            fprintf(stderr, "  %s: round-trip error %.4g > %.4g\n", qtype_name(cases[c].t), e, cases[c].tol_rt);
            CHECK(e <= cases[c].tol_rt);
        }
        /* quantising the dequantised values again changes little */
        CHECK_EQ_INT(quantize_row(cases[c].t, y, q, N), 0);
    }
    /* all-zero blocks stay zero rather than dividing by zero */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memset(x, 0, sizeof x);
        quantize_row(cases[c].t, x, q, N);
        dequantize_row(cases[c].t, q, y, N);
        CHECK(norm(y, N) == 0);
    }
}

/* Each weight type's dot product, with activations quantised as inference
 * does, against the exact F32 dot of the dequantised row. */
static void check_dot(const quant_kernels *k, qtype t, double tol) {
    static float w[N], x[N], wd[N];
    static uint8_t wq[N * 4], xq[N * 4];
    fill(w, N);
    fill(x, N);
    quantize_row(t, w, wq, N);
    dequantize_row(t, wq, wd, N);
    quantize_row(qtype_act_type(t), x, xq, N);
    double ref = 0;
    for (int i = 0; i < N; i++) ref += (double)wd[i] * x[i];
    double got = k->dot[t](wq, xq, N), scale = norm(wd, N) * norm(x, N);
    if (fabs(got - ref) > tol * scale) {
        fprintf(stderr, "  %s %s: dot %.6g vs %.6g (scale %.3g)\n", k->name, qtype_name(t), got, ref, scale);
        CHECK(fabs(got - ref) <= tol * scale);
    }
}

static void test_dot_vs_f32(void) {
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int rep = 0; rep < 4; rep++) {
            check_dot(quant_kernels_scalar(), cases[c].t, cases[c].tol_dot);
            if (quant_kernels_avx2()) check_dot(quant_kernels_avx2(), cases[c].t, cases[c].tol_dot);
        }
}

static void test_simd_vs_scalar(void) {
    const quant_kernels *s = quant_kernels_scalar(), *v = quant_kernels_avx2();
    if (!v) { fprintf(stderr, "  (no AVX2 on this CPU: SIMD comparison skipped)\n"); return; }
    static float w[N], x[N];
    static uint8_t wq[N * 4], xq[N * 4];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        qtype t = cases[c].t;
        /* odd lengths exercise the F32/F16 tails */
        size_t n = qtype_block_elems(t) == 1 ? N - 7 : N;
        for (int rep = 0; rep < 8; rep++) {
            fill(w, n);
            fill(x, n);
            if (rep == 0) for (size_t i = 0; i < n; i++) w[i] = x[i] = (i % 3 == 0) ? 1e3f : -1e-3f;
            quantize_row(t, w, wq, n);
            quantize_row(qtype_act_type(t), x, xq, n);
            float a = s->dot[t](wq, xq, n), b = v->dot[t](wq, xq, n);
            if (fabsf(a - b) > 1e-5f * (fabsf(a) + 1)) {
                fprintf(stderr, "  %s: scalar %.9g avx2 %.9g\n", qtype_name(t), a, b);
                CHECK(fabsf(a - b) <= 1e-5f * (fabsf(a) + 1));
            }
        }
    }
}

/* Random bytes are valid blocks too (any bit pattern decodes, given a finite
 * scale): the SIMD kernels must agree on all of them, not just on what our
 * quantisers happen to produce. */
static void test_random_blocks(void) {
    const quant_kernels *s = quant_kernels_scalar(), *v = quant_kernels_avx2();
    if (!v) return;
    static uint8_t wq[N * 4], xq[N * 4];
    static float x[N];
    const qtype ts[] = {QT_Q4_0, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K, QT_Q4_1, QT_Q5_0, QT_Q5_1};
    for (size_t c = 0; c < sizeof ts / sizeof ts[0]; c++) {
        qtype t = ts[c];
        size_t bb = qtype_block_bytes(t), nb = N / qtype_block_elems(t);
        for (size_t i = 0; i < nb * bb; i++) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; wq[i] = (uint8_t)rng; }
        for (size_t b = 0; b < nb; b++) {   /* small finite scales */
            uint8_t *blk = wq + b * bb;
            uint16_t d = fp32_to_fp16(0.01f), dmin = fp32_to_fp16(0.02f);
            if (t == QT_Q6_K) memcpy(blk + bb - 2, &d, 2);
            else { memcpy(blk, &d, 2); if (t == QT_Q4_K || t == QT_Q5_K || t == QT_Q4_1 || t == QT_Q5_1) memcpy(blk + 2, &dmin, 2); }
        }
        fill(x, N);
        quantize_row(qtype_act_type(t), x, xq, N);
        float a = s->dot[t](wq, xq, N), b = v->dot[t](wq, xq, N);
        if (fabsf(a - b) > 1e-5f * (fabsf(a) + 1)) {
            fprintf(stderr, "  %s random: scalar %.9g avx2 %.9g\n", qtype_name(t), a, b);
            CHECK(fabsf(a - b) <= 1e-5f * (fabsf(a) + 1));
        }
        /* and the scalar dot matches dequantise + F32 dot */
        static float wd[N], xd[N];
        dequantize_row(t, wq, wd, N);
        dequantize_row(qtype_act_type(t), xq, xd, N);
        double ref = 0;
        for (int i = 0; i < N; i++) ref += (double)wd[i] * xd[i];
        CHECK(fabs(a - ref) <= 1e-4 * (fabs(ref) + norm(wd, N) * norm(xd, N) * 1e-3));
    }
}

/* The kernels that reproduce llama.cpp's summation order must agree bit for
 * bit between scalar, AVX2 and AVX-VNNI, and the 8-row kernel with the
 * 1-row one. */
static void test_exact_order_kernels(void) {
    const quant_kernels *s = quant_kernels_scalar(), *v = quant_kernels_avx2();
    enum { COLS = 512 };
    static float w[8 * COLS], x[COLS];
    static block_q4_0 wq[8 * COLS / QK4_0];
    static block_q8_0 xq[COLS / QK8_0];
    static uint16_t a16[1000], b16[1000];
    fill(w, 8 * COLS);
    fill(x, COLS);
    quantize_row(QT_Q4_0, w, wq, 8 * COLS);
    quantize_row(QT_Q8_0, x, xq, COLS);
    size_t rb = qtype_row_bytes(QT_Q4_0, COLS);
    float out_s[8], out_v[8];
    s->gemm_q4_0_x8(wq, rb, xq, 0, 1, COLS, out_s, 8);
    for (int r = 0; r < 8; r++) {
        float one = s->dot_q4_0_x8((const uint8_t *)wq + r * rb, xq, COLS);
        CHECK(memcmp(&one, &out_s[r], sizeof one) == 0);
        CHECK(fabsf(one - s->dot[QT_Q4_0]((const uint8_t *)wq + r * rb, xq, COLS)) < 1e-3f * (fabsf(one) + 1));
    }
    /* several tokens at once (prompt batches): 3 of them, outputs strided */
    static block_q8_0 xs[3][COLS / QK8_0];
    static float x3[COLS];
    float out3[3 * 10];
    const quant_kernels *tabs[4] = {s, v, quant_kernels_vnni(), quant_kernels_avx512()};
    for (int t = 0; t < 3; t++) { fill(x3, COLS); quantize_row(QT_Q8_0, x3, xs[t], COLS); }
    for (int k = 0; k < 4; k++) {
        if (!tabs[k]) continue;
        tabs[k]->gemm_q4_0_x8(wq, rb, xs, sizeof xs[0], 3, COLS, out3, 10);
        for (int t = 0; t < 3; t++)
            for (int r = 0; r < 8; r++) {
                float one = s->dot_q4_0_x8((const uint8_t *)wq + r * rb, xs[t], COLS);
                if (memcmp(&one, &out3[t * 10 + r], sizeof one)) {
                    fprintf(stderr, "  %s gemm token %d row %d: %.9g vs %.9g\n", tabs[k]->name, t, r, out3[t * 10 + r], one);
                    CHECK(0);
                }
            }
    }
    static float bf[1000];
    fill(w, 1000);
    quantize_row(QT_F16, w, a16, 1000);
    fill(w, 1000);
    quantize_row(QT_F16, w, b16, 1000);
    dequantize_row(QT_F16, b16, bf, 1000);
    if (!v) return;
    v->gemm_q4_0_x8(wq, rb, xq, 0, 1, COLS, out_v, 8);
    CHECK(memcmp(out_s, out_v, sizeof out_s) == 0);
    if (quant_kernels_vnni()) {
        quant_kernels_vnni()->gemm_q4_0_x8(wq, rb, xq, 0, 1, COLS, out_v, 8);
        CHECK(memcmp(out_s, out_v, sizeof out_s) == 0);
    } else {
        fprintf(stderr, "  (no AVX-VNNI on this CPU: that kernel not tested)\n");
    }
    for (int r = 0; r < 8; r++) {
        float a = s->dot_q4_0_x8((const uint8_t *)wq + r * rb, xq, COLS), b = v->dot_q4_0_x8((const uint8_t *)wq + r * rb, xq, COLS);
        CHECK(memcmp(&a, &b, sizeof a) == 0);
    }
    for (size_t n = 1; n <= 1000; n += 37) {   /* with and without a remainder */
        float a = s->dot_f16_f16(a16, bf, n), b = v->dot_f16_f16(a16, bf, n);
        if (memcmp(&a, &b, sizeof a)) { fprintf(stderr, "  f16 n=%zu: %.9g vs %.9g\n", n, a, b); CHECK(0); }
        /* four rows at a stride, as attention scores are computed */
        if (n > 200) continue;
        float four_s[4], four_v[4];
        s->dot_f16_f16_x4(a16, 200, bf, n, four_s);
        v->dot_f16_f16_x4(a16, 200, bf, n, four_v);
        for (int r = 0; r < 4; r++) {
            float one = s->dot_f16_f16(a16 + 200 * r, bf, n);
            CHECK(memcmp(&one, &four_s[r], sizeof one) == 0 && memcmp(&one, &four_v[r], sizeof one) == 0);
        }
    }
    /* F16 conversion: the SIMD version rounds like fp32_to_fp16, tails too */
    static float big[1003];
    static uint16_t h_s[1003], h_v[1003];
    fill(big, 1003);
    for (int i = 0; i < 1003; i += 7) big[i] *= (i % 2 ? 1e-6f : 3e4f);   /* subnormal halves, near-overflow */
    s->to_f16(big, h_s, 1003);
    v->to_f16(big, h_v, 1003);
    CHECK(memcmp(h_s, h_v, sizeof h_s) == 0);
    /* and back, exactly, every half (subnormals, infinities; NaNs stay
     * NaNs, the hardware quiets signalling ones) */
    static uint16_t all[65536];
    static float back_s[65536], back_v[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    s->from_f16(all, back_s, 65533);   /* a tail after the vector part */
    v->from_f16(all, back_v, 65533);
    int same = 1;
    for (int i = 0; i < 65533; i++)
        same &= isnan(back_s[i]) ? isnan(back_v[i]) != 0 : !memcmp(&back_s[i], &back_v[i], sizeof(float));
    CHECK(same);
    CHECK(back_s[0x3c00] == 1.0f && back_s[0x7c00] == INFINITY);
}

/* Multi-token kernels give each token exactly what the one-token kernel
 * gives (a prompt processed in a batch or token by token is the same). */
static void test_dotn(void) {
    const quant_kernels *tabs[4] = {quant_kernels_scalar(), quant_kernels_avx2(), quant_kernels_vnni(), quant_kernels_avx512()};
    enum { COLS = 1024 };
    static float w[COLS], x[COLS];
    static uint8_t wq[COLS * 4], xq[3][COLS * 2];
    for (int k = 0; k < 4; k++)
        for (int t = 0; t < QT_COUNT; t++) {
            if (!tabs[k] || !tabs[k]->dotn[t]) continue;
            fill(w, COLS);
            quantize_row((qtype)t, w, wq, COLS);
            for (int i = 0; i < 3; i++) { fill(x, COLS); quantize_row(qtype_act_type((qtype)t), x, xq[i], COLS); }
            float out[3 * 5];
            tabs[k]->dotn[t](wq, xq, sizeof xq[0], 3, COLS, out, 5);
            for (int i = 0; i < 3; i++) {
                float one = tabs[k]->dot[t](wq, xq[i], COLS);
                if (memcmp(&one, &out[5 * i], sizeof one)) {
                    fprintf(stderr, "  %s %s token %d: %.9g vs %.9g\n", tabs[k]->name, qtype_name((uint32_t)t), i, out[5 * i], one);
                    CHECK(0);
                }
            }
        }
}

/* Four-row kernels give each row exactly what the one-row kernel gives
 * (decode takes rows four at a time, the golden tests one at a time). */
static void test_dot4(void) {
    const quant_kernels *tabs[4] = {quant_kernels_scalar(), quant_kernels_avx2(), quant_kernels_vnni(), quant_kernels_avx512()};
    enum { COLS = 1024, ROWS = 4 };
    static float w[COLS], x[COLS];
    static uint8_t wq[ROWS][COLS * 2], xq[COLS * 2];
    int tried = 0;
    for (int k = 0; k < 4; k++)
        for (int t = 0; t < QT_COUNT; t++) {
            if (!tabs[k] || !tabs[k]->dot4[t]) continue;
            tried++;
            for (int r = 0; r < ROWS; r++) { fill(w, COLS); quantize_row((qtype)t, w, wq[r], COLS); }
            fill(x, COLS);
            quantize_row(qtype_act_type((qtype)t), x, xq, COLS);
            float out[ROWS];
            tabs[k]->dot4[t](wq, sizeof wq[0], xq, COLS, out);
            for (int r = 0; r < ROWS; r++) {
                float one = tabs[k]->dot[t](wq[r], xq, COLS);
                if (memcmp(&one, &out[r], sizeof one)) {
                    fprintf(stderr, "  %s %s row %d: %.9g vs %.9g\n", tabs[k]->name, qtype_name((uint32_t)t), r, out[r], one);
                    CHECK(0);
                }
            }
        }
    CHECK(tried > 0 || !quant_kernels_avx2());
}

/* Random bytes as weight blocks (any bit pattern is a valid block once its
 * scale is finite; Q8_0 bytes then include -128, which our quantiser never
 * writes), with small random scales. */
static void random_blocks(qtype t, uint8_t *q, size_t n_blocks) {
    size_t bb = qtype_block_bytes(t);
    for (size_t i = 0; i < n_blocks * bb; i++) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; q[i] = (uint8_t)rng; }
    for (size_t b = 0; b < n_blocks; b++) {
        uint16_t d = fp32_to_fp16((float)(rng % 1000 + 1) * 1e-5f);
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        memcpy(q + b * bb, &d, 2);
    }
}

/* The AVX-512 kernels against the scalar reference: the 8-row Q4_0 kernel
 * bit for bit (it follows dot_q4_0_x8's order), the 4-row Q8_0 kernel bit
 * for bit against the AVX2 one-row kernel (same lanes, same order) and
 * within 1e-5 of the scalar one (which sums block after block in one
 * float). Rows of several lengths, quantised and random, 1 to 4 tokens. */
static void test_avx512_vs_scalar(void) {
    const quant_kernels *s = quant_kernels_scalar(), *v = quant_kernels_avx2(), *z = quant_kernels_avx512();
    if (!z) {
        fprintf(stderr, "  SKIPPED: this CPU (or its OS) has no AVX-512 F/BW/VL/VNNI with ZMM state enabled; "
                        "the AVX-512 kernels were not tested\n");
        return;
    }
    CHECK(!strncmp(quant_kernels_best()->name, "avx512-vnni", 11) || getenv("MSOA_SIMD"));
    CHECK(quant_kernels_best()->dot4[QT_Q8_0] == z->dot4[QT_Q8_0] || getenv("MSOA_SIMD"));
    enum { MAXC = 4096 };
    static float w[8 * MAXC], x[4][MAXC];
    static uint8_t wq[8 * MAXC * 2], xq[4][MAXC * 2];
    const size_t cols[] = {32, 64, 96, 224, 768, 2048, 4096};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++)
        for (int rnd = 0; rnd < 2; rnd++) {
            size_t n = cols[c];
            for (int t = 0; t < 4; t++) { fill(x[t], n); quantize_row(QT_Q8_0, x[t], xq[t], n); }
            /* Q4_0, 8 rows */
            size_t rb = qtype_row_bytes(QT_Q4_0, n);
            if (rnd) random_blocks(QT_Q4_0, wq, 8 * n / QK4_0);
            else { fill(w, 8 * n); quantize_row(QT_Q4_0, w, wq, 8 * n); }
            for (int nt = 1; nt <= 4; nt++) {
                float got[4 * 9], want[4 * 9];
                z->gemm_q4_0_x8(wq, rb, xq, sizeof xq[0], nt, n, got, 9);
                s->gemm_q4_0_x8(wq, rb, xq, sizeof xq[0], nt, n, want, 9);
                for (int t = 0; t < nt; t++)
                    for (int r = 0; r < 8; r++) {
                        float g = got[9 * t + r], e = want[9 * t + r], plain = s->dot[QT_Q4_0](wq + r * rb, xq[t], n);
                        if (memcmp(&g, &e, sizeof g) || fabsf(g - plain) > 1e-5f * (fabsf(plain) + 1)) {
                            fprintf(stderr, "  avx512 q4_0 n=%zu tokens=%d t=%d row %d: %.9g, scalar %.9g / %.9g\n", n, nt, t, r, g, e, plain);
                            CHECK(0);
                        }
                    }
            }
            /* Q8_0, 4 rows */
            rb = qtype_row_bytes(QT_Q8_0, n);
            if (rnd) random_blocks(QT_Q8_0, wq, 4 * n / QK8_0);
            else { fill(w, 4 * n); quantize_row(QT_Q8_0, w, wq, 4 * n); }
            float got[4];
            z->dot4[QT_Q8_0](wq, rb, xq[0], n, got);
            for (int r = 0; r < 4; r++) {
                float e = v->dot[QT_Q8_0](wq + r * rb, xq[0], n), plain = s->dot[QT_Q8_0](wq + r * rb, xq[0], n);
                if (memcmp(&got[r], &e, sizeof e) || fabsf(got[r] - plain) > 1e-5f * (fabsf(plain) + 1)) {
                    fprintf(stderr, "  avx512 q8_0 n=%zu row %d: %.9g, avx2 %.9g, scalar %.9g\n", n, r, got[r], e, plain);
                    CHECK(0);
                }
            }
        }
}

/* The repacked Q4_0 kernels (quant_pack_q4_0_x16's layout) of every SIMD
 * table the CPU has, bit for bit against the scalar dot_q4_0_x8 of the
 * original rows: quantised and random blocks (every nibble value, every
 * activation byte), 7 row lengths, 1 to 4 tokens, outputs strided. Also
 * the activation facts they use (quant_q8_0_aux). */
static void test_repacked_q4_0(void) {
    const quant_kernels *s = quant_kernels_scalar();
    const quant_kernels *tabs[3] = {quant_kernels_avx2(), quant_kernels_vnni(), quant_kernels_avx512()};
    static const char *const names[3] = {"AVX2", "AVX-VNNI", "AVX-512 VNNI"};
    CHECK(s->gemm_q4_0_x16p == NULL);   /* no copy for the scalar path: it would not be faster */
    enum { MAXC = 4096 };
    static float w[16 * MAXC], x[4][MAXC];
    static uint8_t wq[16 * MAXC], packed[16 * MAXC], xq[4][MAXC * 2];
    static q8_0_aux aux[4 * MAXC / QK8_0];
    const size_t cols[] = {32, 64, 96, 224, 768, 2048, 4096};
    for (int k = 0; k < 3; k++) {
        if (!tabs[k] || !tabs[k]->gemm_q4_0_x16p) {
            fprintf(stderr, "  SKIPPED: no %s on this CPU: its repacked Q4_0 kernel was not tested\n", names[k]);
            continue;
        }
        for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++)
            for (int rnd = 0; rnd < 2; rnd++) {
                size_t n = cols[c], nb = n / QK8_0, rb = qtype_row_bytes(QT_Q4_0, n);
                for (int t = 0; t < 4; t++) {
                    fill(x[t], n);
                    if (rnd) for (size_t i = 0; i < n; i++) x[t][i] = (float)((int)(i * 37 + t * 11) % 255 - 127);
                    quantize_row(QT_Q8_0, x[t], xq[t], n);
                    quant_q8_0_aux(xq[t], n, aux + t * nb);
                    for (size_t b = 0; b < nb; b++) {
                        const block_q8_0 *y = (const block_q8_0 *)xq[t] + b;
                        int sum = 0;
                        for (int j = 0; j < QK8_0; j++) sum += y->qs[j];
                        CHECK(aux[t * nb + b].m8 == -8 * sum && aux[t * nb + b].d == fp16_to_fp32(y->d));
                    }
                }
                if (rnd) random_blocks(QT_Q4_0, wq, 16 * nb);
                else { fill(w, 16 * n); quantize_row(QT_Q4_0, w, wq, 16 * n); }
                memset(packed, 0xAA, sizeof packed);
                quant_pack_q4_0_x16(wq, rb, n, packed);
                CHECK(packed[16 * rb] == 0xAA);   /* 16 rows' bytes, no more */
                for (int nt = 1; nt <= 4; nt++) {
                    float got[4 * 17];
                    for (int i = 0; i < 4 * 17; i++) got[i] = -1;
                    tabs[k]->gemm_q4_0_x16p(packed, xq, sizeof xq[0], aux, nt, n, got, 17);
                    for (int t = 0; t < nt; t++) {
                        CHECK(got[17 * t + 16] == -1);   /* nothing beyond the 16 rows */
                        for (int r = 0; r < 16; r++) {
                            float e = s->dot_q4_0_x8(wq + r * rb, xq[t], n);
                            if (memcmp(&got[17 * t + r], &e, sizeof e)) {
                                fprintf(stderr, "  %s repacked q4_0 n=%zu %s tokens=%d t=%d row %d: %.9g, scalar %.9g\n",
                                        tabs[k]->name, n, rnd ? "random" : "quantised", nt, t, r, got[17 * t + r], e);
                                CHECK(0);
                            }
                        }
                    }
                }
            }
    }
}

/* The 8-row F16 attention kernel gives each row exactly what the scalar
 * dot_f16_f16 gives (ggml's order), lengths with and without a
 * remainder. */
static void test_f16_x8(void) {
    const quant_kernels *s = quant_kernels_scalar(), *z = quant_kernels_avx512();
    if (!z || !z->dot_f16_f16_x8) {
        fprintf(stderr, "  SKIPPED: no AVX-512 on this CPU: the 8-row F16 kernel was not tested\n");
        return;
    }
    enum { STRIDE = 300 };
    static float w[8 * STRIDE], y[STRIDE];
    static uint16_t x[8 * STRIDE], yh[STRIDE];
    fill(w, 8 * STRIDE);
    quantize_row(QT_F16, w, x, 8 * STRIDE);
    fill(w, STRIDE);
    quantize_row(QT_F16, w, yh, STRIDE);
    dequantize_row(QT_F16, yh, y, STRIDE);
    for (size_t n = 1; n <= STRIDE; n += 13) {
        float got[8];
        z->dot_f16_f16_x8(x, STRIDE, y, n, got);
        for (int r = 0; r < 8; r++) {
            float e = s->dot_f16_f16(x + r * STRIDE, y, n);
            if (memcmp(&e, &got[r], sizeof e)) {
                fprintf(stderr, "  f16 x8 n=%zu row %d: %.9g vs %.9g\n", n, r, got[r], e);
                CHECK(0);
            }
        }
    }
}

/* The repacked Q8_0 kernel (quant_pack_q8_0_x4's layout) against the
 * 4-row kernel of the same table on the original rows, bit for bit (and so
 * against the AVX2 one-row kernel, see test_avx512_vs_scalar), random
 * blocks with -128 included; and the lane sums it takes. */
static void test_repacked_q8_0(void) {
    const quant_kernels *z = quant_kernels_avx512();
    CHECK(quant_kernels_scalar()->dot4p_q8_0 == NULL);
    enum { MAXC = 4096 };
    static float x[MAXC];
    static uint8_t wq[4 * MAXC * 2], packed[4 * MAXC * 2], xq[MAXC * 2];
    static int32_t lanes[8 * MAXC / QK8_0];
    const size_t cols[] = {32, 64, 96, 224, 768, 2048, 4096};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        size_t n = cols[c], nb = n / QK8_0, rb = qtype_row_bytes(QT_Q8_0, n);
        fill(x, n);
        quantize_row(QT_Q8_0, x, xq, n);
        quant_q8_0_lane_sums(xq, n, lanes);
        for (size_t b = 0; b < nb; b++)
            for (int l = 0; l < 8; l++) {
                const int8_t *q = ((const block_q8_0 *)xq)[b].qs + 4 * l;
                CHECK(lanes[8 * b + l] == -128 * (q[0] + q[1] + q[2] + q[3]));
            }
        random_blocks(QT_Q8_0, wq, 4 * nb);
        memset(packed, 0xAA, sizeof packed);
        quant_pack_q8_0_x4(wq, rb, n, packed);
        CHECK(packed[4 * rb] == 0xAA);
        if (!z) continue;
        float got[4], want[4];
        z->dot4p_q8_0(packed, xq, lanes, n, got);
        z->dot4[QT_Q8_0](wq, rb, xq, n, want);
        for (int r = 0; r < 4; r++)
            if (memcmp(&got[r], &want[r], sizeof got[r])) {
                fprintf(stderr, "  repacked q8_0 n=%zu row %d: %.9g, 4-row kernel %.9g\n", n, r, got[r], want[r]);
                CHECK(0);
            }
    }
    if (!z) fprintf(stderr, "  SKIPPED: no AVX-512 VNNI on this CPU: the repacked Q8_0 kernel was not tested\n");
}

/* The SIMD activation quantiser writes quantize_row's bytes, ties that
 * round to even included. */
static void test_quantize_q8_0(void) {
    const quant_kernels *tabs[4] = {quant_kernels_scalar(), quant_kernels_avx2(), quant_kernels_vnni(), quant_kernels_avx512()};
    enum { N = 32 * 40 };
    static float x[N];
    static uint8_t ref[N * 2], got[N * 2];
    fill(x, N);
    for (int j = 0; j < 32; j++) x[j] = (float)j - 15.5f;   /* ties: amax 15.5 -> scale 127/15.5 */
    x[40] = 127.0f;
    for (int j = 32; j < 64; j++) if (j != 40) x[j] = (float)(j - 48) + 0.5f;   /* ties with scale 1 */
    for (int j = 64; j < 96; j++) x[j] = 0;   /* an all-zero block */
    for (int j = 96; j < 128; j++) x[j] = -0.0f;
    CHECK_EQ_INT(quantize_row(QT_Q8_0, x, ref, N), 0);
    for (int k = 0; k < 4; k++) {
        if (!tabs[k]) continue;
        memset(got, 0xAA, sizeof got);
        tabs[k]->quantize_q8_0(x, got, N);
        CHECK(memcmp(ref, got, qtype_row_bytes(QT_Q8_0, N)) == 0);
    }
}

/* Error of quant_expf in units of the last place of exp(x) (double libm
 * as the truth; subnormal results in units of 2^-149). */
static double exp_ulps(float x, float got) {
    double want = exp((double)x);
    int e;
    frexp(want, &e);
    double ulp = ldexp(1.0, (e - 24 < -149 ? -149 : e - 24));
    if (want > 3.4028234663852886e38) return isinf(got) ? 0 : 1e9;
    return fabs((double)got - want) / ulp;
}

/* quant_expf over the floats of [QEXP_MIN, QEXP_MAX] (every 509th bit
 * pattern: all exponents, so tiny and large arguments alike): within 1 ulp
 * of exp, inf above, 0 far below, NaN kept; and every table's exp_shift
 * and silu_mul give the scalar ones' bits, tails included. */
static void test_expf(void) {
    double worst = 0, worst_libm = 0;
    float worst_x = 0;
    long n = 0;
    enum { B = 4099 };   /* not a multiple of 8: the kernels' tails */
    static float xs[B], ref[B], got[B], up[B], gref[B], ggot[B];
    const quant_kernels *tabs[3] = {quant_kernels_avx2(), quant_kernels_vnni(), quant_kernels_avx512()};
    int m = 0;
    for (int sign = 0; sign < 2; sign++)
        for (uint32_t b = 0;; b += 509) {
            uint32_t bits = b | (uint32_t)sign << 31;
            float x;
            memcpy(&x, &bits, sizeof x);
            if (x < QEXP_MIN || x > QEXP_MAX) break;
            float e = quant_expf(x);
            double u = exp_ulps(x, e), ul = exp_ulps(x, expf(x));
            if (u > worst) { worst = u; worst_x = x; }
            if (ul > worst_libm) worst_libm = ul;
            n++;
            xs[m++] = x;
            if (m < B) continue;
            for (int i = 0; i < B; i++) ref[i] = quant_expf(xs[i]);
            fill(up, B);
            memcpy(gref, xs, sizeof xs);
            quant_kernels_scalar()->silu_mul(gref, up, B);
            for (int k = 0; k < 3; k++) {
                if (!tabs[k]) continue;
                memcpy(got, xs, sizeof xs);
                tabs[k]->exp_shift(got, B, 0.0f);
                memcpy(ggot, xs, sizeof xs);
                tabs[k]->silu_mul(ggot, up, B);
                CHECK(memcmp(got, ref, sizeof ref) == 0);
                CHECK(memcmp(ggot, gref, sizeof gref) == 0);
            }
            m = 0;
        }
    fprintf(stderr, "  quant_expf: %ld arguments, max error %.3f ulp (at %.9g); libm expf %.3f ulp\n", n, worst, worst_x,
            worst_libm);
    CHECK(worst <= 1.0);
    float special[] = {INFINITY, -INFINITY, NAN, 89.0f, 88.72f, 1e30f, -1e30f, -104.0f, -103.9f, -87.5f, 0.0f, -0.0f};
    float want[] = {INFINITY, 0.0f, NAN, INFINITY, expf(88.72f), INFINITY, 0.0f, 0.0f, expf(-103.9f), expf(-87.5f), 1.0f, 1.0f};
    int ns = (int)(sizeof special / sizeof special[0]);
    for (int i = 0; i < ns; i++) {
        float e = quant_expf(special[i]);
        if (isnan(want[i])) CHECK(isnan(e));
        else CHECK(e == want[i] || fabs((double)e - want[i]) <= 1.0 * fabs((double)want[i]) * 0x1p-23);
        for (int k = 0; k < 3; k++) {
            if (!tabs[k]) continue;
            float v = special[i];
            tabs[k]->exp_shift(&v, 1, 0.0f);
            CHECK(isnan(e) ? isnan(v) : memcmp(&v, &e, sizeof e) == 0);
        }
    }
    CHECK(quant_expf(-103.9f) > 0);   /* subnormal, not flushed */
}

int main(void) {
    fprintf(stderr, "kernels: %s\n", quant_kernels_best()->name);
    TEST(test_fp16);
    TEST(test_type_facts);
    TEST(test_q4_0_layout);
    TEST(test_q5_layouts);
    TEST(test_k_layouts);
    TEST(test_round_trip);
    TEST(test_dot_vs_f32);
    TEST(test_simd_vs_scalar);
    TEST(test_random_blocks);
    TEST(test_exact_order_kernels);
    TEST(test_dotn);
    TEST(test_dot4);
    TEST(test_avx512_vs_scalar);
    TEST(test_repacked_q4_0);
    TEST(test_repacked_q8_0);
    TEST(test_f16_x8);
    TEST(test_quantize_q8_0);
    TEST(test_expf);
    return test_done();
}
