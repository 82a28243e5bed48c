/* http_fields: see http_fields.h. */
#include "net/http_fields.h"

#include <stddef.h>
#include <strings.h>

unsigned http_connection_tokens(const char *v) {
    unsigned bits = 0;
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        const char *t = v;
        while (*v && *v != ',' && *v != ' ' && *v != '\t') v++;
        size_t n = (size_t)(v - t);
        if (n == 5 && strncasecmp(t, "close", 5) == 0) bits |= HTTP_CONN_CLOSE;
        else if (n == 10 && strncasecmp(t, "keep-alive", 10) == 0) bits |= HTTP_CONN_KEEP_ALIVE;
        else if (n == 7 && strncasecmp(t, "upgrade", 7) == 0) bits |= HTTP_CONN_UPGRADE;
    }
    return bits;
}

const char *http_content_length(const char *v, uint64_t *out) {
    if (!*v) return "empty Content-Length";
    uint64_t n = 0;
    for (; *v; v++) {
        if (*v < '0' || *v > '9') return "Content-Length is not a non-negative integer";
        if (n > (UINT64_MAX - 9) / 10) return "Content-Length overflows";
        n = n * 10 + (uint64_t)(*v - '0');
    }
    *out = n;
    return NULL;
}
