/* buf: a growable byte buffer, always NUL-terminated.
 *
 * The one way msoa builds strings and byte streams: responses, SSE frames,
 * JSON text, file contents. Growth failures abort (see xalloc.h): a gateway
 * that cannot allocate a few KB cannot do anything useful either. */
#ifndef MSOA_BUF_H
#define MSOA_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data;   /* NUL-terminated when cap > 0 */
    size_t len;
    size_t cap;
} buf;

#define BUF_INIT {NULL, 0, 0}

#include <string.h>

void buf_reserve(buf *b, size_t extra);           /* room for len+extra+1 */
void buf_append_slow(buf *b, const void *data, size_t len);

/* Inline: JSON writers call these once per token of output. */
static inline void buf_append(buf *b, const void *data, size_t len) {
    if (b->len + len < b->cap) {
        if (len) memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
        return;
    }
    buf_append_slow(b, data, len);
}

static inline void buf_putc(buf *b, char c) {
    if (b->len + 1 < b->cap) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return;
    }
    buf_append_slow(b, &c, 1);
}

/* Inline too: most are literals, whose length the compiler knows. */
static inline void buf_puts(buf *b, const char *s) { buf_append(b, s, strlen(s)); }
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(buf *b, const char *fmt, va_list ap);
void buf_consume(buf *b, size_t n);               /* drop the first n bytes */
void buf_clear(buf *b);                           /* len = 0, keeps memory */
void buf_free(buf *b);
char *buf_detach(buf *b);                         /* caller frees; b is reset */

#endif
