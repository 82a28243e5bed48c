/* gunzip: see gunzip.h. Canonical-Huffman inflate after RFC 1951: stored,
 * fixed and dynamic blocks; decoding walks code lengths bit by bit, which is
 * slow but short and plenty for a few MB read once. */
#include "route/gunzip.h"

#include <stdio.h>
#include <string.h>

typedef struct bits {
    const unsigned char *p;
    size_t len, pos;   /* pos in bytes */
    unsigned bitbuf, bitcnt;
    int err;
} bits;

typedef struct huff {
    short count[16];   /* codes of each length */
    short sym[320];    /* symbols ordered by code */
} huff;

static unsigned getbits(bits *s, unsigned n) {
    unsigned v = s->bitbuf;
    while (s->bitcnt < n) {
        if (s->pos >= s->len) { s->err = 1; return 0; }
        v |= (unsigned)s->p[s->pos++] << s->bitcnt;
        s->bitcnt += 8;
    }
    s->bitbuf = v >> n;
    s->bitcnt -= n;
    return v & ((1u << n) - 1);
}

static void huff_build(huff *h, const short *lens, int n) {
    short offs[16];
    memset(h->count, 0, sizeof h->count);
    for (int i = 0; i < n; i++) h->count[lens[i]]++;
    h->count[0] = 0;
    offs[1] = 0;
    for (int l = 1; l < 15; l++) offs[l + 1] = (short)(offs[l] + h->count[l]);
    for (int i = 0; i < n; i++)
        if (lens[i]) h->sym[offs[lens[i]]++] = (short)i;
}

static int huff_decode(bits *s, const huff *h) {
    int code = 0, first = 0, index = 0;
    for (int l = 1; l < 16; l++) {
        code |= (int)getbits(s, 1);
        int count = h->count[l];
        if (code - count < first) return h->sym[index + (code - first)];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
        if (s->err) return -1;
    }
    return -1;
}

static const short len_base[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                   35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const short len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                    3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const short dist_base[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129,
                                    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
                                    6145, 8193, 12289, 16385, 24577};
static const short dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                     6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* Decodes one compressed block's symbols into out. */
static int inflate_codes(bits *s, buf *out, size_t start, const huff *lit, const huff *dist) {
    for (;;) {
        int sym = huff_decode(s, lit);
        if (sym < 0 || s->err) return -1;
        if (sym < 256) { buf_putc(out, (char)sym); continue; }
        if (sym == 256) return 0;
        sym -= 257;
        if (sym >= 29) return -1;
        size_t len = (size_t)len_base[sym] + getbits(s, (unsigned)len_extra[sym]);
        int ds = huff_decode(s, dist);
        if (ds < 0 || ds >= 30) return -1;
        size_t d = (size_t)dist_base[ds] + getbits(s, (unsigned)dist_extra[ds]);
        if (s->err || d > out->len - start) return -1;
        buf_reserve(out, len);
        /* byte by byte: copies may overlap their own output */
        for (size_t i = 0; i < len; i++) out->data[out->len + i] = out->data[out->len - d + i];
        out->len += len;
        out->data[out->len] = '\0';
    }
}

static int inflate_stored(bits *s, buf *out) {
    s->bitbuf = 0;
    s->bitcnt = 0;
    if (s->pos + 4 > s->len) return -1;
    unsigned n = s->p[s->pos] | (unsigned)s->p[s->pos + 1] << 8;
    unsigned nn = s->p[s->pos + 2] | (unsigned)s->p[s->pos + 3] << 8;
    s->pos += 4;
    if ((n ^ 0xffffu) != nn || s->pos + n > s->len) return -1;
    buf_append(out, s->p + s->pos, n);
    s->pos += n;
    return 0;
}

/* The fixed code is rebuilt per block rather than cached in statics: it
 * costs microseconds and keeps the function free of shared state. */
static int inflate_fixed(bits *s, buf *out, size_t start) {
    huff lit, dist;
    short l[288];
    for (int i = 0; i < 288; i++) l[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
    huff_build(&lit, l, 288);
    for (int i = 0; i < 30; i++) l[i] = 5;
    huff_build(&dist, l, 30);
    return inflate_codes(s, out, start, &lit, &dist);
}

static int inflate_dynamic(bits *s, buf *out, size_t start) {
    static const unsigned char order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    short lens[320] = {0};
    huff lit, dist, lencode;
    int nlen = (int)getbits(s, 5) + 257, ndist = (int)getbits(s, 5) + 1, ncode = (int)getbits(s, 4) + 4;
    if (s->err || nlen > 286 || ndist > 30) return -1;
    for (int i = 0; i < ncode; i++) lens[order[i]] = (short)getbits(s, 3);
    huff_build(&lencode, lens, 19);
    memset(lens, 0, sizeof lens);
    for (int i = 0; i < nlen + ndist;) {
        int sym = huff_decode(s, &lencode);
        if (sym < 0 || s->err) return -1;
        if (sym < 16) { lens[i++] = (short)sym; continue; }
        short v = 0;
        int rep;
        if (sym == 16) {
            if (i == 0) return -1;
            v = lens[i - 1];
            rep = 3 + (int)getbits(s, 2);
        } else if (sym == 17) {
            rep = 3 + (int)getbits(s, 3);
        } else {
            rep = 11 + (int)getbits(s, 7);
        }
        if (i + rep > nlen + ndist) return -1;
        while (rep--) lens[i++] = v;
    }
    huff_build(&lit, lens, nlen);
    huff_build(&dist, lens + nlen, ndist);
    return inflate_codes(s, out, start, &lit, &dist);
}

/* Inflates one deflate stream starting at s->pos; leaves pos after it. */
static int inflate_stream(bits *s, buf *out) {
    size_t start = out->len;
    int last;
    do {
        last = (int)getbits(s, 1);
        unsigned type = getbits(s, 2);
        int rc = type == 0 ? inflate_stored(s, out)
               : type == 1 ? inflate_fixed(s, out, start)
               : type == 2 ? inflate_dynamic(s, out, start) : -1;
        if (rc || s->err) return -1;
    } while (!last);
    s->bitbuf = 0;
    s->bitcnt = 0;
    return 0;
}

/* Skips a gzip member header (RFC 1952); returns its length or 0 if bad. */
static size_t gzip_header(const unsigned char *p, size_t len) {
    if (len < 18 || p[0] != 0x1f || p[1] != 0x8b || p[2] != 8) return 0;
    unsigned flg = p[3];
    size_t i = 10;
    if (flg & 4) {
        if (i + 2 > len) return 0;
        i += 2 + (p[i] | (size_t)p[i + 1] << 8);
    }
    for (unsigned f = 8; f <= 16; f <<= 1)   /* FNAME, FCOMMENT: NUL-terminated */
        if (flg & f) {
            while (i < len && p[i]) i++;
            i++;
        }
    if (flg & 2) i += 2;
    return i < len ? i : 0;
}

int gunzip_mem(const unsigned char *in, size_t len, buf *out) {
    size_t off = 0;
    while (off < len) {
        size_t h = gzip_header(in + off, len - off);
        if (!h) return -1;
        bits s = {in, len, off + h, 0, 0, 0};
        if (inflate_stream(&s, out)) return -1;
        off = s.pos + 8;   /* CRC32 and ISIZE */
        if (off > len) return -1;
    }
    return 0;
}

int read_file_maybe_gz(const char *path, buf *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    buf raw = BUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_append(&raw, chunk, n);
    int rc = ferror(f) ? -1 : 0;
    fclose(f);
    if (rc == 0) {
        const unsigned char *p = (const unsigned char *)raw.data;
        if (raw.len >= 2 && p[0] == 0x1f && p[1] == 0x8b) rc = gunzip_mem(p, raw.len, out);
        else buf_append(out, raw.data ? raw.data : "", raw.len);
    }
    buf_free(&raw);
    return rc;
}
