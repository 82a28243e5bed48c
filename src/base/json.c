/* json: see json.h. */
#include "base/json.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Bytes a JSON string cannot hold as they are: controls, quote, backslash. */
#define ROW(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char must_escape[256] = {
    ROW(1), ROW(1),
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
    ROW(0), ROW(0),
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50: '\\' */
};
#undef ROW

void json_put_string(buf *out, const char *s) {
    if (!s) {
        buf_puts(out, "null");
        return;
    }
    size_t n = strlen(s);
    buf_reserve(out, n + 2);
    buf_putc(out, '"');
    const unsigned char *p = (const unsigned char *)s, *e = p + n, *run = p;
    for (; p < e; p++) {
        if (!must_escape[*p]) continue;
        buf_append(out, run, (size_t)(p - run));
        switch (*p) {
        case '"': buf_append(out, "\\\"", 2); break;
        case '\\': buf_append(out, "\\\\", 2); break;
        case '\n': buf_append(out, "\\n", 2); break;
        case '\r': buf_append(out, "\\r", 2); break;
        case '\t': buf_append(out, "\\t", 2); break;
        default: buf_printf(out, "\\u%04x", *p); break;
        }
        run = p + 1;
    }
    buf_append(out, run, (size_t)(e - run));
    buf_putc(out, '"');
}

static void put_uint(buf *out, uint64_t v, int min_digits) {
    char digits[24];
    int n = 0;
    do digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) || n < min_digits);
    buf_reserve(out, (size_t)n);
    while (n) out->data[out->len++] = digits[--n];
    out->data[out->len] = '\0';
}

void json_put_long(buf *out, long v) {
    if (v < 0) buf_putc(out, '-');
    put_uint(out, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, 1);
}

/* d rounded to `decimals` (<= 15) digits after the point, from one
 * integer; trailing zeros (and a sign on zero) dropped unless keep_zeros.
 * 0 when d times 10^decimals is not below 2^53 (or is NaN). */
static int put_decimal(buf *out, double d, int decimals, int keep_zeros) {
    double scale = 1;
    for (int i = 0; i < decimals; i++) scale *= 10;
    double mag = fabs(d);
    if (!(mag * scale < 9007199254740992.0)) return 0;
    uint64_t scaled = (uint64_t)llround(mag * scale);
    uint64_t whole = scaled / (uint64_t)scale, frac = scaled % (uint64_t)scale;
    if (keep_zeros ? signbit(d) : d < 0 && scaled) buf_putc(out, '-');
    put_uint(out, whole, 1);
    if (!decimals || (!frac && !keep_zeros)) return 1;
    while (!keep_zeros && frac % 10 == 0) {
        frac /= 10;
        decimals--;
    }
    buf_putc(out, '.');
    put_uint(out, frac, decimals);
    return 1;
}

void json_put_fixed(buf *out, double d, int decimals) {
    if (!isfinite(d)) {
        buf_puts(out, "null");
        return;
    }
    if (decimals > 15) decimals = 15;
    if (!put_decimal(out, d, decimals, 0)) buf_printf(out, "%.17g", d);
}

void json_put_decimal(buf *out, double d, int decimals) {
    if (decimals > 15) decimals = 15;
    if (!isfinite(d) || !put_decimal(out, d, decimals, 1)) buf_printf(out, "%.*f", decimals, d);
}

static void put_number(buf *out, double d) {
    if (!isfinite(d)) {
        buf_puts(out, "null");
        return;
    }
    if (d == floor(d) && fabs(d) < 9007199254740992.0) {
        if (d < 0) buf_putc(out, '-');
        put_uint(out, (uint64_t)fabs(d), 1);
        return;
    }
    buf_printf(out, "%.17g", d);
}

void json_write(buf *out, const cJSON *item) {
    switch (item->type & 0xff) {
    case cJSON_False: buf_puts(out, "false"); return;
    case cJSON_True: buf_puts(out, "true"); return;
    case cJSON_NULL: buf_puts(out, "null"); return;
    case cJSON_Number: put_number(out, item->valuedouble); return;
    case cJSON_String: json_put_string(out, item->valuestring); return;
    case cJSON_Raw: buf_puts(out, item->valuestring ? item->valuestring : "null"); return;
    case cJSON_Array:
    case cJSON_Object: {
        int object = (item->type & 0xff) == cJSON_Object;
        buf_putc(out, object ? '{' : '[');
        for (const cJSON *c = item->child; c; c = c->next) {
            if (c != item->child) buf_putc(out, ',');
            if (object) {
                json_put_string(out, c->string ? c->string : "");
                buf_putc(out, ':');
            }
            json_write(out, c);
        }
        buf_putc(out, object ? '}' : ']');
        return;
    }
    default: buf_puts(out, "null"); return;
    }
}
