/* json_tape: see json_tape.h.
 *
 * One pass, no recursion: a stack of the open containers' tokens (on the C
 * stack, JSON_MAX_DEPTH deep) and the tape. A container's token is written
 * when it opens; its length and end when it closes. */
#include "base/json_tape.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "base/xalloc.h"

/* What a byte means inside a string: 0 goes on, else see below. */
enum { SC_PLAIN, SC_QUOTE, SC_ESCAPE, SC_CONTROL, SC_HIGH };
#define ROW(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char string_class[256] = {
    ROW(SC_CONTROL), ROW(SC_CONTROL),
    0, 0, SC_QUOTE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,        /* 0x20: '"' */
    ROW(0), ROW(0),
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, SC_ESCAPE, 0, 0, 0,       /* 0x50: '\\' */
    ROW(0), ROW(0),
    ROW(SC_HIGH), ROW(SC_HIGH), ROW(SC_HIGH), ROW(SC_HIGH),
    ROW(SC_HIGH), ROW(SC_HIGH), ROW(SC_HIGH), ROW(SC_HIGH),
};
#undef ROW

void json_doc_init(json_doc *d, json_tok *space, uint32_t cap) {
    memset(d, 0, sizeof *d);
    d->tok = space;
    d->cap = space ? cap : 0;
}

void json_doc_free(json_doc *d) {
    if (d->heap) free(d->tok);
    d->tok = NULL;
    d->n = d->cap = 0;
    d->heap = 0;
}

void json_doc_copy(json_doc *dst, const json_doc *src, const char *text) {
    if (src->n > dst->cap) {
        if (dst->heap) free(dst->tok);
        dst->tok = xmalloc(src->n * sizeof *dst->tok);
        dst->cap = src->n;
        dst->heap = 1;
    }
    if (src->n) memcpy(dst->tok, src->tok, src->n * sizeof *dst->tok);
    dst->n = src->n;
    dst->text = text;
    dst->len = src->len;
    dst->error = NULL;
    dst->error_at = 0;
}

static int fail(json_doc *d, const unsigned char *at, const char *why) {
    d->error = why;
    d->error_at = (size_t)(at - (const unsigned char *)d->text);
    return -1;
}

static uint32_t push(json_doc *d, int type, const unsigned char *at) {
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 64;
        if (d->heap) {
            d->tok = xrealloc(d->tok, cap * sizeof *d->tok);
        } else {
            json_tok *t = xmalloc(cap * sizeof *t);
            if (d->n) memcpy(t, d->tok, d->n * sizeof *t);
            d->tok = t;
            d->heap = 1;
        }
        d->cap = cap;
    }
    json_tok *t = &d->tok[d->n];
    t->start = (uint32_t)(at - (const unsigned char *)d->text);
    t->len = 0;
    t->end = d->n + 1;
    t->type = (uint8_t)type;
    t->escaped = 0;
    return d->n++;
}

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *e) {
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static int hex(unsigned c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    return -1;
}

/* p is at the opening quote; returns the byte after the closing one. */
static const unsigned char *read_string(json_doc *d, uint32_t t, const unsigned char *p, const unsigned char *e) {
    const unsigned char *q = p + 1;
    for (;;) {
        while (q < e && !string_class[*q]) q++;
        if (q == e) return fail(d, p, "a string is not closed"), NULL;
        switch (string_class[*q]) {
        case SC_QUOTE:
            d->tok[t].len = (uint32_t)(q + 1 - p);
            return q + 1;
        case SC_ESCAPE:
            d->tok[t].escaped = 1;
            if (q + 1 == e) return fail(d, q, "a string is not closed"), NULL;
            if (q[1] == 'u') {
                if (e - q < 6 || hex(q[2]) < 0 || hex(q[3]) < 0 || hex(q[4]) < 0 || hex(q[5]) < 0)
                    return fail(d, q, "\\u must be followed by four hex digits"), NULL;
                q += 6;
            } else if (q[1] && strchr("\"\\/bfnrt", q[1])) {
                q += 2;
            } else {
                return fail(d, q, "an unknown escape in a string"), NULL;
            }
            break;
        case SC_CONTROL:
            return fail(d, q, "a control character in a string (escape it)"), NULL;
        default: {
            size_t n = utf8_sequence_len((const char *)q, (size_t)(e - q));
            if (!n) return fail(d, q, "invalid UTF-8 in a string"), NULL;
            q += n;
        }
        }
    }
}

static int digit(const unsigned char *p, const unsigned char *e) { return p < e && *p >= '0' && *p <= '9'; }

static const unsigned char *read_number(json_doc *d, uint32_t t, const unsigned char *p, const unsigned char *e) {
    const unsigned char *q = p;
    if (*q == '-') q++;
    if (!digit(q, e)) return fail(d, q, "a digit was expected"), NULL;
    if (*q == '0') q++;
    else
        while (digit(q, e)) q++;
    if (q < e && *q == '.') {
        if (!digit(++q, e)) return fail(d, q, "a digit was expected after the decimal point"), NULL;
        while (digit(q, e)) q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < e && (*q == '+' || *q == '-')) q++;
        if (!digit(q, e)) return fail(d, q, "a digit was expected in the exponent"), NULL;
        while (digit(q, e)) q++;
    }
    d->tok[t].len = (uint32_t)(q - p);
    return q;
}

static const unsigned char *read_literal(json_doc *d, uint32_t t, const unsigned char *p, const unsigned char *e) {
    static const char *const words[] = {"true", "false", "null"};
    static const uint8_t types[] = {JSON_TRUE, JSON_FALSE, JSON_NULL};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(e - p) >= n && !memcmp(p, words[i], n)) {
            d->tok[t].type = types[i];
            d->tok[t].len = (uint32_t)n;
            return p + n;
        }
    }
    return fail(d, p, "a value was expected"), NULL;
}

/* An object member's key and its colon; p is at the key. */
static const unsigned char *read_key(json_doc *d, const unsigned char *p, const unsigned char *e) {
    if (p == e || *p != '"') return fail(d, p, "a key (a string) was expected"), NULL;
    p = read_string(d, push(d, JSON_STRING, p), p, e);
    if (!p) return NULL;
    p = skip_ws(p, e);
    if (p == e || *p != ':') return fail(d, p, "':' was expected after the key"), NULL;
    return p + 1;
}

static void close_container(json_doc *d, uint32_t c, const unsigned char *after) {
    d->tok[c].len = (uint32_t)(after - (const unsigned char *)d->text) - d->tok[c].start;
    d->tok[c].end = d->n;
}

int json_parse(json_doc *d, const char *text, size_t len) {
    const unsigned char *p = (const unsigned char *)text, *e = p + len;
    uint32_t stack[JSON_MAX_DEPTH];
    int depth = 0;
    d->text = text;
    d->len = len;
    d->n = 0;
    d->error = NULL;
    d->error_at = 0;
    if (len >= UINT32_MAX) return fail(d, p, "the text is too large");
    for (;;) {
        /* a value */
        p = skip_ws(p, e);
        if (p == e) return fail(d, p, "a value was expected");
        uint32_t t = push(d, JSON_NUMBER, p);
        if (*p == '{' || *p == '[') {
            int object = *p == '{';
            if (depth == JSON_MAX_DEPTH) return fail(d, p, "containers are nested too deeply");
            d->tok[t].type = object ? JSON_OBJECT : JSON_ARRAY;
            p = skip_ws(p + 1, e);
            if (p < e && *p == (object ? '}' : ']')) {
                close_container(d, t, ++p);
            } else {
                stack[depth++] = t;
                if (object && !(p = read_key(d, p, e))) return -1;
                continue;
            }
        } else if (*p == '"') {
            d->tok[t].type = JSON_STRING;
            p = read_string(d, t, p, e);
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            p = read_number(d, t, p, e);
        } else {
            p = read_literal(d, t, p, e);
        }
        if (!p) return -1;
        /* after a value: the next member, or the ends of containers */
        for (;;) {
            p = skip_ws(p, e);
            if (depth == 0) return p == e ? 0 : fail(d, p, JSON_ERROR_TRAILING);
            uint32_t c = stack[depth - 1];
            int object = d->tok[c].type == JSON_OBJECT;
            if (p < e && *p == ',') {
                p = skip_ws(p + 1, e);
                if (object && !(p = read_key(d, p, e))) return -1;
                break;
            }
            if (p == e || *p != (object ? '}' : ']'))
                return fail(d, p, object ? "',' or '}' was expected" : "',' or ']' was expected");
            close_container(d, c, ++p);
            depth--;
        }
    }
}

int json_get(const json_doc *d, int obj, const char *key) {
    size_t n = strlen(key);
    for (int k = json_member_next(d, obj, -1); k >= 0; k = json_member_next(d, obj, k)) {
        const json_tok *t = &d->tok[k];
        if (t->escaped ? json_str_eq(d, k, key) : t->len == n + 2 && !memcmp(d->text + t->start + 1, key, n))
            return k + 1;
    }
    return -1;
}

int json_at(const json_doc *d, int arr, int i) {
    if (arr < 0 || d->tok[arr].type != JSON_ARRAY || i < 0) return -1;
    for (uint32_t k = (uint32_t)arr + 1; k < d->tok[arr].end; k = d->tok[k].end)
        if (i-- == 0) return (int)k;
    return -1;
}

static void put_utf8(buf *out, unsigned cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | cp >> 6);
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | cp >> 12);
        b[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | cp >> 18);
        b[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_append(out, b, n);
}

static unsigned hex4(const char *s) {
    return (unsigned)(hex((unsigned char)s[0]) << 12 | hex((unsigned char)s[1]) << 8 |
                      hex((unsigned char)s[2]) << 4 | hex((unsigned char)s[3]));
}

void json_str_decode(const json_doc *d, int t, buf *out) {
    const json_tok *k = &d->tok[t];
    const char *s = d->text + k->start + 1, *e = d->text + k->start + k->len - 1;
    if (!k->escaped) {
        buf_append(out, s, (size_t)(e - s));
        return;
    }
    while (s < e) {
        const char *bs = memchr(s, '\\', (size_t)(e - s));
        if (!bs) bs = e;
        buf_append(out, s, (size_t)(bs - s));
        if (bs == e) return;
        char c = bs[1];
        s = bs + 2;
        switch (c) {
        case 'b': buf_putc(out, '\b'); break;
        case 'f': buf_putc(out, '\f'); break;
        case 'n': buf_putc(out, '\n'); break;
        case 'r': buf_putc(out, '\r'); break;
        case 't': buf_putc(out, '\t'); break;
        case 'u': {
            unsigned cp = hex4(s);
            s += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && e - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                unsigned lo = hex4(s + 2);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* unpaired */
            put_utf8(out, cp);
            break;
        }
        default: buf_putc(out, c); break; /* " \ / */
        }
    }
}

int json_str_eq_escaped(const json_doc *d, int t, const char *s) {
    size_t n = strlen(s);
    buf b = BUF_INIT;
    json_str_decode(d, t, &b);
    int eq = b.len == n && (n == 0 || !memcmp(b.data, s, n));
    buf_free(&b);
    return eq;
}

/* A whole number of up to 15 digits (below 2^53, so exact), as token
 * counts are: read without strtod, which cost ten times as much and ran
 * twice for every answer a node sent. 0 for anything else. */
static int small_integer(const char *s, size_t len, double *out) {
    size_t i = s[0] == '-';
    if (len <= i || len - i > 15) return 0;
    uint64_t v = 0;
    for (size_t j = i; j < len; j++) {
        if (s[j] < '0' || s[j] > '9') return 0;
        v = v * 10 + (uint64_t)(s[j] - '0');
    }
    *out = i ? -(double)v : (double)v;
    return 1;
}

int json_number(const json_doc *d, int t, double *out) {
    *out = 0;
    if (t < 0 || d->tok[t].type != JSON_NUMBER) return 0;
    const json_tok *k = &d->tok[t];
    if (small_integer(d->text + k->start, k->len, out)) return 1;
    char small[64];
    char *s = k->len < sizeof small ? small : xmalloc(k->len + 1);
    memcpy(s, d->text + k->start, k->len);
    s[k->len] = '\0';
    *out = strtod(s, NULL);
    if (s != small) free(s);
    return 1;
}
