/* quant: see quant.h. Type table, conversions, the reference (scalar)
 * quantisers and dequantisers, and the scalar dot products that every SIMD
 * kernel is tested against. */
#include "engine/quant.h"

#include <math.h>
#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K layout");

/* ---- type facts ---- */

typedef struct { const char *name; size_t elems, bytes; qtype act; } type_info;

static const type_info types[QT_COUNT] = {
    [QT_F32] = {"f32", 1, 4, QT_F32},
    [QT_F16] = {"f16", 1, 2, QT_F32},
    [QT_BF16] = {"bf16", 1, 2, QT_F32},
    [QT_Q4_0] = {"q4_0", QK4_0, sizeof(block_q4_0), QT_Q8_0},
    [QT_Q4_1] = {"q4_1", 32, sizeof(block_q4_1), QT_Q8_0},
    [QT_Q5_0] = {"q5_0", 32, sizeof(block_q5_0), QT_Q8_0},
    [QT_Q5_1] = {"q5_1", 32, sizeof(block_q5_1), QT_Q8_0},
    [QT_Q8_0] = {"q8_0", QK8_0, sizeof(block_q8_0), QT_Q8_0},
    [QT_Q4_K] = {"q4_k", QK_K, sizeof(block_q4_K), QT_Q8_K},
    [QT_Q5_K] = {"q5_k", QK_K, sizeof(block_q5_K), QT_Q8_K},
    [QT_Q6_K] = {"q6_k", QK_K, sizeof(block_q6_K), QT_Q8_K},
    [QT_Q8_K] = {"q8_k", QK_K, sizeof(block_q8_K), QT_Q8_K},
};

int qtype_known(uint32_t type) { return type < QT_COUNT && types[type].name != NULL; }
const char *qtype_name(uint32_t type) { return qtype_known(type) ? types[type].name : NULL; }
size_t qtype_block_elems(qtype t) { return qtype_known(t) ? types[t].elems : 0; }
size_t qtype_block_bytes(qtype t) { return qtype_known(t) ? types[t].bytes : 0; }
qtype qtype_act_type(qtype t) { return types[t].act; }

int qtype_from_name(const char *name) {
    for (int t = 0; t < QT_COUNT; t++)
        if (types[t].name && strcasecmp(types[t].name, name) == 0) return t;
    return -1;
}

size_t qtype_row_bytes(qtype t, size_t n) {
    if (!qtype_known(t) || n % types[t].elems) return 0;
    return n / types[t].elems * types[t].bytes;
}

/* ---- fp16 / bf16 ---- */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000 | (mant << 13));
    return u2f(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x = f2u(f), sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return (uint16_t)(sign | 0x7e00);       /* NaN */
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00);      /* >= 65520 rounds to inf */
    if (ax < 0x38800000)                                          /* below 2^-14: subnormal */
        return (uint16_t)(sign | (uint32_t)nearbyintf(u2f(ax) * 16777216.0f));
    /* Normal: rebias the exponent, round the mantissa to 10 bits (ties to even);
     * a carry out of the mantissa correctly bumps the exponent. */
    uint32_t r = ax - ((uint32_t)(127 - 15) << 23);
    r += 0xfff + ((r >> 13) & 1);
    return (uint16_t)(sign | (r >> 13));
}

float bf16_to_fp32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t fp32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); /* keep NaN a NaN */
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

/* ---- k-quant scale packing ----
 * Eight 6-bit scales and eight 6-bit mins in 12 bytes: for j < 4 the low six
 * bits of bytes j and j+4; for j >= 4 a nibble of byte j+4 plus the top two
 * bits of bytes j-4 (scale) and j (min). */
static inline void get_scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void set_scale_min_k4(int j, uint8_t *q, int sc, int m) {
    if (j < 4) {
        q[j] = (uint8_t)((q[j] & 0xC0) | sc);
        q[j + 4] = (uint8_t)((q[j + 4] & 0xC0) | m);
    } else {
        q[j + 4] = (uint8_t)((sc & 0xF) | ((m & 0xF) << 4));
        q[j - 4] = (uint8_t)((q[j - 4] & 63) | ((sc >> 4) << 6));
        q[j] = (uint8_t)((q[j] & 63) | ((m >> 4) << 6));
    }
}

/* ---- dequantisation ---- */

static void dequant_q4_0(const block_q4_0 *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += QK4_0) {
        float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = (float)((x[i].qs[j] & 0xF) - 8) * d;
            y[j + QK4_0 / 2] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* The 32 values (before scale and offset) of a Q4_1/Q5_0/Q5_1 block:
 * nibbles as in Q4_0, plus the fifth bits when qh is given. */
static void unpack_32(const uint8_t *qs, const uint8_t *qh, int q[32]) {
    uint32_t h = 0;
    if (qh) memcpy(&h, qh, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0xF) | (int)((h >> j) & 1) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
    }
}

static void dequant_32(qtype t, const void *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += 32) {
        int q[32];
        float d, m = 0;
        if (t == QT_Q4_1) {
            const block_q4_1 *b = (const block_q4_1 *)src + i;
            unpack_32(b->qs, NULL, q);
            d = fp16_to_fp32(b->d);
            m = fp16_to_fp32(b->m);
        } else if (t == QT_Q5_0) {
            const block_q5_0 *b = (const block_q5_0 *)src + i;
            unpack_32(b->qs, b->qh, q);
            d = fp16_to_fp32(b->d);
            for (int j = 0; j < 32; j++) q[j] -= 16;
        } else {
            const block_q5_1 *b = (const block_q5_1 *)src + i;
            unpack_32(b->qs, b->qh, q);
            d = fp16_to_fp32(b->d);
            m = fp16_to_fp32(b->m);
        }
        for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d + m;
    }
}

static void dequant_q8_0(const block_q8_0 *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += QK8_0) {
        float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_0; j++) y[j] = (float)x[i].qs[j] * d;
    }
}

/* Q4_K and Q5_K share everything but the fifth bit. */
static void dequant_kx(const uint16_t *dd, const uint8_t *scales, const uint8_t *qh,
                       const uint8_t *qs, float *y) {
    float d = fp16_to_fp32(dd[0]), dmin = fp16_to_fp32(dd[1]);
    for (int c = 0; c < 4; c++) {             /* chunks of 64: two sub-blocks */
        for (int h = 0; h < 2; h++) {
            int sc, m;
            get_scale_min_k4(2 * c + h, scales, &sc, &m);
            float ds = d * (float)sc, dm = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                int q = h ? qs[c * 32 + l] >> 4 : qs[c * 32 + l] & 0xF;
                if (qh && (qh[l] >> (2 * c + h) & 1)) q += 16;
                *y++ = ds * (float)q - dm;
            }
        }
    }
}

/* The 6-bit value of element e (0..255) of a Q6_K block, 0..63. */
static inline int q6_value(const block_q6_K *b, int e) {
    int n = e / 128, r = e % 128, k = r / 32, l = r % 32;
    const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
    int lo = k & 1 ? ql[l + 32] : ql[l];
    lo = k >> 1 ? lo >> 4 : lo & 0xF;
    return lo | ((qh[l] >> (2 * k)) & 3) << 4;
}

static void dequant_q6_K(const block_q6_K *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        float d = fp16_to_fp32(x[i].d);
        for (int e = 0; e < QK_K; e++)
            *y++ = d * (float)x[i].scales[e / 16] * (float)(q6_value(&x[i], e) - 32);
    }
}

void dequantize_row(qtype t, const void *src, float *y, size_t n) {
    size_t nb = n / qtype_block_elems(t);
    switch (t) {
    case QT_F32: memcpy(y, src, n * sizeof(float)); break;
    case QT_F16: for (size_t i = 0; i < n; i++) y[i] = fp16_to_fp32(((const uint16_t *)src)[i]); break;
    case QT_BF16: for (size_t i = 0; i < n; i++) y[i] = bf16_to_fp32(((const uint16_t *)src)[i]); break;
    case QT_Q4_0: dequant_q4_0(src, y, nb); break;
    case QT_Q4_1: case QT_Q5_0: case QT_Q5_1: dequant_32(t, src, y, nb); break;
    case QT_Q8_0: dequant_q8_0(src, y, nb); break;
    case QT_Q4_K:
        for (size_t i = 0; i < nb; i++) {
            const block_q4_K *b = (const block_q4_K *)src + i;
            dequant_kx(&b->d, b->scales, NULL, b->qs, y + i * QK_K);
        }
        break;
    case QT_Q5_K:
        for (size_t i = 0; i < nb; i++) {
            const block_q5_K *b = (const block_q5_K *)src + i;
            dequant_kx(&b->d, b->scales, b->qh, b->qs, y + i * QK_K);
        }
        break;
    case QT_Q6_K: dequant_q6_K(src, y, nb); break;
    case QT_Q8_K:
        for (size_t i = 0; i < nb; i++) {
            const block_q8_K *b = (const block_q8_K *)src + i;
            for (int j = 0; j < QK_K; j++) y[i * QK_K + j] = b->d * (float)b->qs[j];
        }
        break;
    default: break;
    }
}

/* ---- quantisation ---- */

/* ggml's reference Q4_0: the element of largest magnitude maps to -8, so the
 * scale keeps its sign; (int8_t)(x + 8.5) truncates, as the reference does,
 * which is what makes files identical to llama.cpp's. */
static void quant_q4_0(const float *x, block_q4_0 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += QK4_0) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK4_0; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        float d = max / -8, id = d != 0 ? 1.0f / d : 0;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + QK4_0 / 2] * id + 8.5f);
            y[i].qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
        }
    }
}

/* Packs 32 values of 0..31 as nibbles plus fifth bits (qh may be NULL). */
static void pack_32(const int q[32], uint8_t *qs, uint8_t *qh) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
        h |= (uint32_t)(q[j] >> 4 & 1) << j | (uint32_t)(q[j + 16] >> 4 & 1) << (j + 16);
    }
    if (qh) memcpy(qh, &h, 4);
}

/* ggml's reference Q5_0: Q4_0 with 32 levels. */
static void quant_q5_0(const float *x, block_q5_0 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        float d = max / -16, id = d != 0 ? 1.0f / d : 0;
        int q[32];
        for (int j = 0; j < 32; j++) {
            int v = (int8_t)(x[j] * id + 16.5f);
            q[j] = v < 31 ? v : 31;
        }
        y[i].d = fp32_to_fp16(d);
        pack_32(q, y[i].qs, y[i].qh);
    }
}

/* ggml's reference Q4_1 / Q5_1: min and step from the block's range. */
static void quant_affine(const float *x, int levels, uint16_t *dm, uint8_t *qs, uint8_t *qh) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; j++) { lo = fminf(lo, x[j]); hi = fmaxf(hi, x[j]); }
    float d = (hi - lo) / (float)levels, id = d != 0 ? 1.0f / d : 0;
    dm[0] = fp32_to_fp16(d);
    dm[1] = fp32_to_fp16(lo);
    int q[32];
    for (int j = 0; j < 32; j++) {
        int v = (uint8_t)((x[j] - lo) * id + 0.5f);
        q[j] = v < levels ? v : levels;
    }
    pack_32(q, qs, qh);
}

static void quant_q8_0(const float *x, block_q8_0 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += QK8_0) {
        float amax = 0;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127, id = amax != 0 ? 127.0f / amax : 0;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)nearbyintf(x[j] * id);
    }
}

static void quant_q8_K(const float *x, block_q8_K *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += QK_K) {
        float amax = 0;
        for (int j = 0; j < QK_K; j++) amax = fmaxf(amax, fabsf(x[j]));
        float id = amax != 0 ? 127.0f / amax : 0;
        y[i].d = amax / 127;
        for (int j = 0; j < QK_K; j++) y[i].qs[j] = (int8_t)nearbyintf(x[j] * id);
        for (int g = 0; g < QK_K / 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += y[i].qs[g * 16 + j];
            y[i].bsums[g] = (int16_t)s;
        }
    }
}

/* Q4_K / Q5_K: each sub-block of 32 gets an affine map x ~ ds*q - dm with
 * q in 0..nmax, from its min (clamped to <= 0) and max. The 6-bit scales and
 * mins are then quantised against the super-block maxima and the elements
 * re-quantised with the rounded values, so dequantisation sees what was
 * optimised. Simpler than ggml's iterative search, same format. */
static void quant_kx(const float *x, int nmax, uint16_t *dd, uint8_t *scales, uint8_t q[QK_K]) {
    float scale[8], min[8], max_scale = 0, max_min = 0;
    for (int s = 0; s < 8; s++) {
        float lo = 0, hi = 0;
        for (int l = 0; l < 32; l++) { lo = fminf(lo, x[s * 32 + l]); hi = fmaxf(hi, x[s * 32 + l]); }
        scale[s] = (hi - lo) / (float)nmax;
        min[s] = -lo;
        max_scale = fmaxf(max_scale, scale[s]);
        max_min = fmaxf(max_min, min[s]);
    }
    float d = max_scale / 63, dmin = max_min / 63;
    dd[0] = fp32_to_fp16(d);
    dd[1] = fp32_to_fp16(dmin);
    d = fp16_to_fp32(dd[0]);
    dmin = fp16_to_fp32(dd[1]);
    memset(scales, 0, 12);
    for (int s = 0; s < 8; s++) {
        int sc = d > 0 ? (int)nearbyintf(scale[s] / d) : 0, m = dmin > 0 ? (int)nearbyintf(min[s] / dmin) : 0;
        sc = sc > 63 ? 63 : sc;
        m = m > 63 ? 63 : m;
        set_scale_min_k4(s, scales, sc, m);
        float ds = d * (float)sc, dm = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int v = ds > 0 ? (int)nearbyintf((x[s * 32 + l] + dm) / ds) : 0;
            q[s * 32 + l] = (uint8_t)(v < 0 ? 0 : v > nmax ? nmax : v);
        }
    }
}

/* Element order of Q4_K/Q5_K nibbles: chunk c of 64 holds sub-block 2c in
 * the low nibbles and 2c+1 in the high nibbles of qs[32c .. 32c+31]. */
static void pack_kx_nibbles(const uint8_t q[QK_K], uint8_t *qs) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[c * 32 + l] = (uint8_t)((q[64 * c + l] & 0xF) | (q[64 * c + 32 + l] & 0xF) << 4);
}

static void quant_q4_K(const float *x, block_q4_K *y, size_t nb) {
    uint8_t q[QK_K];
    for (size_t i = 0; i < nb; i++, x += QK_K) {
        quant_kx(x, 15, &y[i].d, y[i].scales, q);
        pack_kx_nibbles(q, y[i].qs);
    }
}

static void quant_q5_K(const float *x, block_q5_K *y, size_t nb) {
    uint8_t q[QK_K];
    for (size_t i = 0; i < nb; i++, x += QK_K) {
        quant_kx(x, 31, &y[i].d, y[i].scales, q);
        pack_kx_nibbles(q, y[i].qs);
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int e = 0; e < QK_K; e++)   /* sub-block s's fifth bits are bit s of qh[l] */
            if (q[e] & 16) y[i].qh[e % 32] |= (uint8_t)(1 << (e / 32));
    }
}

/* Q6_K: sixteen groups of 16 with a signed 8-bit scale each, elements in
 * -32..31 stored biased by 32. */
static void quant_q6_K(const float *x, block_q6_K *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += QK_K) {
        float scale[16], amax_scale = 0;
        for (int g = 0; g < 16; g++) {
            float amax = 0, max = 0;
            for (int l = 0; l < 16; l++)
                if (fabsf(x[g * 16 + l]) > amax) { amax = fabsf(x[g * 16 + l]); max = x[g * 16 + l]; }
            scale[g] = max / -32;
            amax_scale = fmaxf(amax_scale, fabsf(scale[g]));
        }
        y[i].d = fp32_to_fp16(amax_scale / 127);
        float d = fp16_to_fp32(y[i].d);
        memset(y[i].ql, 0, sizeof y[i].ql);
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int g = 0; g < 16; g++) {
            int sc = d > 0 ? (int)nearbyintf(scale[g] / d) : 0;
            sc = sc > 127 ? 127 : sc < -128 ? -128 : sc;
            y[i].scales[g] = (int8_t)sc;
            float ds = d * (float)sc;
            for (int l = 0; l < 16; l++) {
                int e = g * 16 + l, v = ds != 0 ? (int)nearbyintf(x[e] / ds) : 0;
                v = (v < -32 ? -32 : v > 31 ? 31 : v) + 32;
                /* inverse of q6_value() */
                int n = e / 128, r = e % 128, k = r / 32, j = r % 32;
                uint8_t *ql = y[i].ql + 64 * n + (k & 1 ? 32 : 0) + j;
                *ql |= (uint8_t)(k >> 1 ? (v & 0xF) << 4 : (v & 0xF));
                y[i].qh[32 * n + j] |= (uint8_t)((v >> 4) << (2 * k));
            }
        }
    }
}

int quantize_row(qtype t, const float *x, void *dst, size_t n) {
    size_t nb = n / qtype_block_elems(t);
    switch (t) {
    case QT_F32: memcpy(dst, x, n * sizeof(float)); return 0;
    case QT_F16: for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = fp32_to_fp16(x[i]); return 0;
    case QT_BF16: for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = fp32_to_bf16(x[i]); return 0;
    case QT_Q4_0: quant_q4_0(x, dst, nb); return 0;
    case QT_Q5_0: quant_q5_0(x, dst, nb); return 0;
    case QT_Q4_1:
        for (size_t i = 0; i < nb; i++) quant_affine(x + 32 * i, 15, &((block_q4_1 *)dst)[i].d, ((block_q4_1 *)dst)[i].qs, NULL);
        return 0;
    case QT_Q5_1:
        for (size_t i = 0; i < nb; i++) {
            block_q5_1 *b = (block_q5_1 *)dst + i;
            quant_affine(x + 32 * i, 31, &b->d, b->qs, b->qh);
        }
        return 0;
    case QT_Q8_0: quant_q8_0(x, dst, nb); return 0;
    case QT_Q4_K: quant_q4_K(x, dst, nb); return 0;
    case QT_Q5_K: quant_q5_K(x, dst, nb); return 0;
    case QT_Q6_K: quant_q6_K(x, dst, nb); return 0;
    case QT_Q8_K: quant_q8_K(x, dst, nb); return 0;
    default: return -1;
    }
}

/* ---- scalar dot products ---- */

static float dot_f32(const void *w, const void *a, size_t n) {
    const float *x = w, *y = a;
    float s = 0;
    for (size_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

static float dot_f16(const void *w, const void *a, size_t n) {
    const uint16_t *x = w;
    const float *y = a;
    float s = 0;
    for (size_t i = 0; i < n; i++) s += fp16_to_fp32(x[i]) * y[i];
    return s;
}

static float dot_bf16(const void *w, const void *a, size_t n) {
    const uint16_t *x = w;
    const float *y = a;
    float s = 0;
    for (size_t i = 0; i < n; i++) s += bf16_to_fp32(x[i]) * y[i];
    return s;
}

static float dot_q4_0(const void *w, const void *a, size_t n) {
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (size_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++)
            isum += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        s += (float)isum * fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d);
    }
    return s;
}

/* Q4_1, Q5_0, Q5_1 against Q8_0: d*dy*sum(q*y) + m*dy*sum(y). */
static float dot_32(qtype t, const void *w, const void *a, size_t n) {
    const block_q8_0 *y = a;
    float s = 0;
    for (size_t i = 0; i < n / 32; i++) {
        int q[32], qy = 0, sy = 0;
        float d, m = 0;
        if (t == QT_Q4_1) {
            const block_q4_1 *b = (const block_q4_1 *)w + i;
            unpack_32(b->qs, NULL, q);
            d = fp16_to_fp32(b->d);
            m = fp16_to_fp32(b->m);
        } else if (t == QT_Q5_0) {
            const block_q5_0 *b = (const block_q5_0 *)w + i;
            unpack_32(b->qs, b->qh, q);
            d = fp16_to_fp32(b->d);
            m = -16 * d;
        } else {
            const block_q5_1 *b = (const block_q5_1 *)w + i;
            unpack_32(b->qs, b->qh, q);
            d = fp16_to_fp32(b->d);
            m = fp16_to_fp32(b->m);
        }
        for (int j = 0; j < 32; j++) { qy += q[j] * y[i].qs[j]; sy += y[i].qs[j]; }
        float dy = fp16_to_fp32(y[i].d);
        s += d * dy * (float)qy + m * dy * (float)sy;
    }
    return s;
}

static float dot_q4_1(const void *w, const void *a, size_t n) { return dot_32(QT_Q4_1, w, a, n); }
static float dot_q5_0(const void *w, const void *a, size_t n) { return dot_32(QT_Q5_0, w, a, n); }
static float dot_q5_1(const void *w, const void *a, size_t n) { return dot_32(QT_Q5_1, w, a, n); }

static float dot_q8_0(const void *w, const void *a, size_t n) {
    const block_q8_0 *x = w, *y = a;
    float s = 0;
    for (size_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += x[i].qs[j] * y[i].qs[j];
        s += (float)isum * fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d);
    }
    return s;
}

/* Q4_K/Q5_K against Q8_K: per sub-block, scale * sum(q*a) - min * sum(a);
 * the activation sums come precomputed in bsums. */
static float dot_kx(const uint16_t *dd, const uint8_t *scales, const uint8_t *qh,
                    const uint8_t *qs, const block_q8_K *y) {
    int sumi = 0, summ = 0;
    for (int s = 0; s < 8; s++) {
        int sc, m, isum = 0, c = s / 2, hi = s & 1;
        get_scale_min_k4(s, scales, &sc, &m);
        for (int l = 0; l < 32; l++) {
            int q = hi ? qs[c * 32 + l] >> 4 : qs[c * 32 + l] & 0xF;
            if (qh && (qh[l] >> s & 1)) q += 16;
            isum += q * y->qs[s * 32 + l];
        }
        sumi += sc * isum;
        summ += m * (y->bsums[2 * s] + y->bsums[2 * s + 1]);
    }
    return y->d * (fp16_to_fp32(dd[0]) * (float)sumi - fp16_to_fp32(dd[1]) * (float)summ);
}

static float dot_q4_K(const void *w, const void *a, size_t n) {
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (size_t i = 0; i < n / QK_K; i++) s += dot_kx(&x[i].d, x[i].scales, NULL, x[i].qs, &y[i]);
    return s;
}

static float dot_q5_K(const void *w, const void *a, size_t n) {
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (size_t i = 0; i < n / QK_K; i++) s += dot_kx(&x[i].d, x[i].scales, x[i].qh, x[i].qs, &y[i]);
    return s;
}

static float dot_q6_K(const void *w, const void *a, size_t n) {
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (size_t i = 0; i < n / QK_K; i++) {
        int sumi = 0;
        for (int g = 0; g < 16; g++) {
            int isum = 0;
            for (int l = 0; l < 16; l++) isum += (q6_value(&x[i], g * 16 + l) - 32) * y[i].qs[g * 16 + l];
            sumi += x[i].scales[g] * isum;
        }
        s += y[i].d * fp16_to_fp32(x[i].d) * (float)sumi;
    }
    return s;
}

/* See quant.h: the order of ggml's repacked Q4_0 kernel. */
static float dot_q4_0_x8(const void *w, const void *a, size_t n) {
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (size_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++)
            isum += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        s = fmaf((float)isum, fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d), s);
    }
    return s;
}

void quant_pack_q4_0_x16(const void *rows, size_t row_bytes, size_t n, void *dst) {
    uint8_t *o = dst;
    for (size_t i = 0; i < n / QK4_0; i++, o += Q4_0_X16P_BLOCK)
        for (int r = 0; r < 16; r++) {
            const block_q4_0 *x = (const block_q4_0 *)((const uint8_t *)rows + r * row_bytes) + i;
            memcpy(o + 2 * r, &x->d, 2);
            for (int c = 0; c < 4; c++) memcpy(o + 32 + 64 * c + 4 * r, x->qs + 4 * c, 4);
        }
}

void quant_pack_q8_0_x4(const void *rows, size_t row_bytes, size_t n, void *dst) {
    uint8_t *o = dst;
    for (size_t i = 0; i < n / QK8_0; i++, o += Q8_0_X4P_BLOCK)
        for (int r = 0; r < 4; r++) {
            const block_q8_0 *x = (const block_q8_0 *)((const uint8_t *)rows + r * row_bytes) + i;
            memcpy(o + 2 * r, &x->d, 2);
            for (int k = 0; k < QK8_0; k += 8) {
                uint64_t v;
                memcpy(&v, x->qs + k, 8);
                v ^= 0x8080808080808080ull;
                memcpy(o + 8 + 32 * r + k, &v, 8);
            }
        }
}

void quant_q8_0_lane_sums(const void *act, size_t n, int32_t *out) {
    const block_q8_0 *y = act;
    for (size_t i = 0; i < n / QK8_0; i++)
        for (int l = 0; l < 8; l++)
            out[8 * i + l] = -128 * (y[i].qs[4 * l] + y[i].qs[4 * l + 1] + y[i].qs[4 * l + 2] + y[i].qs[4 * l + 3]);
}

void quant_q8_0_aux(const void *act, size_t n, q8_0_aux *aux) {
    const block_q8_0 *y = act;
    for (size_t i = 0; i < n / QK8_0; i++) {
        int s = 0;
        for (int j = 0; j < QK8_0; j++) s += y[i].qs[j];
        aux[i].d = fp16_to_fp32(y[i].d);
        aux[i].m8 = -8 * s;
    }
}

static void gemm_q4_0_x8(const void *w, size_t row_bytes, const void *act, size_t act_stride, int n_tok,
                         size_t n, float *out, size_t out_stride) {
    for (int t = 0; t < n_tok; t++)
        for (int r = 0; r < 8; r++)
            out[t * out_stride + r] = dot_q4_0_x8((const uint8_t *)w + r * row_bytes, (const uint8_t *)act + t * act_stride, n);
}

/* See quant.h: ggml's F16 dot order, lane by lane. Products of two halves
 * are exact in float, so only the order of the additions matters. */
static float dot_f16_f16(const uint16_t *x, const float *y, size_t n) {
    size_t np = n & ~(size_t)31;
    float acc[4][8] = {{0}};
    for (size_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++)
                acc[j][l] = fmaf(fp16_to_fp32(x[i + 8 * j + l]), y[i + 8 * j + l], acc[j][l]);
    float t[4];
    for (int l = 0; l < 8; l++) acc[0][l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    for (int l = 0; l < 4; l++) t[l] = acc[0][l] + acc[0][l + 4];
    double s = (t[0] + t[1]) + (t[2] + t[3]);
    for (size_t i = np; i < n; i++) s += (double)(fp16_to_fp32(x[i]) * y[i]);
    return (float)s;
}

static void dot_f16_f16_x4(const uint16_t *x, size_t stride, const float *y, size_t n, float out[4]) {
    for (int r = 0; r < 4; r++) out[r] = dot_f16_f16(x + r * stride, y, n);
}

static void to_f16(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = fp32_to_fp16(x[i]);
}

static void quantize_q8_0(const float *x, void *y, size_t n) { quant_q8_0(x, y, n / QK8_0); }

static void from_f16(const uint16_t *x, float *y, size_t n) { dequantize_row(QT_F16, x, y, n); }

static float bits_float(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* The step-by-step reference the SIMD versions follow lane by lane. */
float quant_expf(float x) {
    static const float c[] = QEXP_TAYLOR;
    if (isnan(x)) return x;
    x = x < QEXP_MIN ? QEXP_MIN : x > QEXP_MAX ? QEXP_MAX : x;
    float t = fmaf(x, QEXP_LOG2E, QEXP_ROUND), n = t - QEXP_ROUND;
    float r = fmaf(n, -QEXP_LN2_HI, x);
    r = fmaf(n, -QEXP_LN2_LO, r);
    float p = c[0];
    for (int i = 1; i < 8; i++) p = fmaf(p, r, c[i]);
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    int32_t k = (int32_t)(tb - 0x4B400000u), k1 = k >> 1;   /* n (0x4B400000: QEXP_ROUND's bits), half of it */
    return p * bits_float((uint32_t)(k1 + 127) << 23) * bits_float((uint32_t)(k - k1 + 127) << 23);
}

static void silu_mul(float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + quant_expf(-gate[i])) * up[i];
}

static void exp_shift(float *x, size_t n, float shift) {
    for (size_t i = 0; i < n; i++) x[i] = quant_expf(x[i] - shift);
}

static const quant_kernels scalar_kernels = {
    .name = "scalar",
    .dot = {
        [QT_F32] = dot_f32, [QT_F16] = dot_f16, [QT_BF16] = dot_bf16,
        [QT_Q4_0] = dot_q4_0, [QT_Q8_0] = dot_q8_0,
        [QT_Q4_1] = dot_q4_1, [QT_Q5_0] = dot_q5_0, [QT_Q5_1] = dot_q5_1,
        [QT_Q4_K] = dot_q4_K, [QT_Q5_K] = dot_q5_K, [QT_Q6_K] = dot_q6_K,
    },
    .dot_q4_0_x8 = dot_q4_0_x8,
    .gemm_q4_0_x8 = gemm_q4_0_x8,
    .dot_f16_f16 = dot_f16_f16,
    .dot_f16_f16_x4 = dot_f16_f16_x4,
    .to_f16 = to_f16,
    .from_f16 = from_f16,
    .quantize_q8_0 = quantize_q8_0,
    .silu_mul = silu_mul,
    .exp_shift = exp_shift,
};

const quant_kernels *quant_kernels_scalar(void) { return &scalar_kernels; }

/* Defined in simd_avx2.c and simd_avx512.c: fill the entries they have,
 * leave the rest. */
void quant_avx2_fill(quant_kernels *k);
void quant_vnni_fill(quant_kernels *k);
void quant_avx512_fill(quant_kernels *k);

static quant_kernels avx2_kernels, vnni_kernels, avx512_kernels, mixed_kernels;
static int have_avx2, have_vnni, have_avx512;
static const quant_kernels *best;
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;

/* F16C (CPUID 1, ECX bit 29) and AVX-VNNI (CPUID 7.1, EAX bit 4) are read
 * from CPUID directly: clang 14's __builtin_cpu_supports knows neither name. */
static int cpuid_bit(unsigned leaf, unsigned sub, int reg, unsigned bit) {
    unsigned r[4];
    if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) return 0;
    return (r[reg] >> bit) & 1;
}

/* AVX-512 F, BW, VL (CPUID 7, EBX bits 16, 30, 31) and VNNI (ECX bit 11),
 * and an OS that saves the state they use: XSAVE enabled (CPUID 1, ECX bit
 * 27) and XCR0 bits 1-2 (SSE, AVX) and 5-7 (opmask, upper ZMM halves,
 * ZMM16-31) set. Without the OS part the instructions fault. */
static int have_avx512_vnni(void) {
    if (!cpuid_bit(7, 0, 1, 16) || !cpuid_bit(7, 0, 1, 30) || !cpuid_bit(7, 0, 1, 31) || !cpuid_bit(7, 0, 2, 11) ||
        !cpuid_bit(1, 0, 2, 27))
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 0xE6) == 0xE6;
}

static void choose_kernels(void) {
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpuid_bit(1, 0, 2, 29);
    have_vnni = have_avx2 && cpuid_bit(7, 1, 0, 4);
    have_avx512 = have_avx2 && have_avx512_vnni();
    if (have_avx2) {
        avx2_kernels = scalar_kernels;
        avx2_kernels.name = "avx2";
        quant_avx2_fill(&avx2_kernels);
    }
    if (have_vnni) {
        vnni_kernels = avx2_kernels;
        vnni_kernels.name = "avx-vnni";
        quant_vnni_fill(&vnni_kernels);
    }
    if (have_avx512) {   /* its kernels replace every AVX-VNNI one */
        avx512_kernels = avx2_kernels;
        avx512_kernels.name = "avx512-vnni";
        quant_avx512_fill(&avx512_kernels);
    }
    /* With AVX-VNNI too, its 256-bit Q4_0 kernel decodes as fast or a
     * little faster (1b-q4_0, 1 thread: 40.0 vs 42.2 CPU ms per token,
     * medians of 3; 512-bit instructions leave 2 of the 3 vector ports);
     * the 512-bit Q8_0 kernel is ~8% faster. Best of both. */
    if (have_avx512 && have_vnni) {
        mixed_kernels = avx512_kernels;
        mixed_kernels.name = "avx512-vnni+avx-vnni";
        mixed_kernels.gemm_q4_0_x8 = vnni_kernels.gemm_q4_0_x8;
    }
    const quant_kernels *tabs[] = {have_avx512 && have_vnni ? &mixed_kernels : NULL,
                                   have_avx512 ? &avx512_kernels : NULL, have_vnni ? &vnni_kernels : NULL,
                                   have_avx2 ? &avx2_kernels : NULL, &scalar_kernels};
    /* the first one this CPU has, or the one MSOA_SIMD names if it has it */
    const char *cap = getenv("MSOA_SIMD");
    best = NULL;
    for (size_t i = 0; i < sizeof tabs / sizeof tabs[0]; i++) {
        if (!tabs[i]) continue;
        if (!best) best = tabs[i];
        if (cap && !strcmp(cap, tabs[i]->name)) { best = tabs[i]; break; }
    }
}

const quant_kernels *quant_kernels_avx2(void) {
    pthread_once(&kernels_once, choose_kernels);
    return have_avx2 ? &avx2_kernels : NULL;
}

const quant_kernels *quant_kernels_vnni(void) {
    pthread_once(&kernels_once, choose_kernels);
    return have_vnni ? &vnni_kernels : NULL;
}

const quant_kernels *quant_kernels_avx512(void) {
    pthread_once(&kernels_once, choose_kernels);
    return have_avx512 ? &avx512_kernels : NULL;
}

const quant_kernels *quant_kernels_best(void) {
    pthread_once(&kernels_once, choose_kernels);
    return best;
}
