/* sse: Server-Sent Events writer and incremental parser (see sse.h).
 *
 * The parser follows the WHATWG event-stream rules that matter for
 * OpenAI-style streams: only data: fields carry payload, several data lines
 * join with "\n", a blank line ends the event. Upstreams send their bytes in
 * arbitrary pieces, so every state (partial line, pending CR) survives
 * between sse_parser_feed calls. */
#include "net/sse.h"

#include <string.h>

#define SSE_DEFAULT_MAX_EVENT (4u << 20)

void sse_write_data(buf *out, const char *payload, size_t len) {
    buf_reserve(out, len + 8);
    buf_append(out, "data: ", 6);
    buf_append(out, payload, len);
    buf_append(out, "\n\n", 2);
}

void sse_parser_init(sse_parser *p) {
    memset(p, 0, sizeof *p);
    p->max_event = SSE_DEFAULT_MAX_EVENT;
}

void sse_parser_free(sse_parser *p) {
    buf_free(&p->line);
    buf_free(&p->data);
    p->have_data = 0;
    p->last_cr = 0;
}

/* Forget the event in progress: after an oversize event the stream is not
 * trusted, but the parser stays usable (and leak-free) for the caller. */
static void parser_reset(sse_parser *p) {
    buf_clear(&p->line);
    buf_clear(&p->data);
    p->have_data = 0;
}

/* One complete line (without its terminator). */
static int process_line(sse_parser *p, const char *s, size_t n, sse_event_fn fn, void *ud) {
    if (n == 0) {
        if (p->have_data) {
            p->have_data = 0;
            fn(p->data.data ? p->data.data : "", p->data.len, ud);
            buf_clear(&p->data);
        }
        return 0;
    }
    if (s[0] == ':') return 0; /* comment, e.g. keep-alive pings */
    const char *colon = memchr(s, ':', n);
    size_t name_len = colon ? (size_t)(colon - s) : n;
    if (name_len != 4 || memcmp(s, "data", 4) != 0) return 0; /* event:, id:, retry:, unknown */
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen && *v == ' ') { v++; vlen--; }
    if (p->data.len + vlen + 1 > p->max_event) return -1;
    if (p->have_data) buf_putc(&p->data, '\n');
    buf_append(&p->data, v, vlen);
    p->have_data = 1;
    return 0;
}

int sse_parser_feed(sse_parser *p, const char *data, size_t len, sse_event_fn fn, void *ud) {
    size_t i = 0;
    if (len && p->last_cr) {
        p->last_cr = 0;
        if (data[0] == '\n') i = 1; /* second half of a CRLF split across feeds */
    }
    while (i < len) {
        /* Find the next line end; CR and LF are rare enough that a byte scan is fine. */
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r') j++;
        if (j == len) {
            if (p->line.len + (len - i) > p->max_event) { parser_reset(p); return -1; }
            buf_append(&p->line, data + i, len - i);
            break;
        }
        int rc;
        if (p->line.len) {
            if (p->line.len + (j - i) > p->max_event) { parser_reset(p); return -1; }
            buf_append(&p->line, data + i, j - i);
            rc = process_line(p, p->line.data, p->line.len, fn, ud);
            buf_clear(&p->line);
        } else {
            rc = process_line(p, data + i, j - i, fn, ud);
        }
        if (rc < 0) { parser_reset(p); return -1; }
        if (data[j] == '\r') {
            if (j + 1 == len) { p->last_cr = 1; return 0; }
            if (data[j + 1] == '\n') j++;
        }
        i = j + 1;
    }
    return 0;
}
