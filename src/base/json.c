/* json: see json.h. */
#include "base/json.h"

#include <string.h>

void json_put_string(buf *out, const char *s) {
    if (!s) {
        buf_puts(out, "null");
        return;
    }
    buf_putc(out, '"');
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x20 && *p != '"' && *p != '\\') continue;
        buf_append(out, run, (size_t)((const char *)p - run));
        switch (*p) {
        case '"': buf_puts(out, "\\\""); break;
        case '\\': buf_puts(out, "\\\\"); break;
        case '\n': buf_puts(out, "\\n"); break;
        case '\r': buf_puts(out, "\\r"); break;
        case '\t': buf_puts(out, "\\t"); break;
        default: buf_printf(out, "\\u%04x", *p); break;
        }
        run = (const char *)p + 1;
    }
    buf_puts(out, run);
    buf_putc(out, '"');
}
