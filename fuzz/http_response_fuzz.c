/* http_response_fuzz: libFuzzer target for the HTTP response parser.
 *
 * The input is what a server sends on one connection (several responses
 * when kept alive). It is parsed twice: in pieces of 1..16 bytes, each in a
 * buffer of exactly its size (so ASan catches a read past what arrived or a
 * pointer kept across feeds), and all at once. Both must report the same
 * heads, body bytes, ends and errors: the result may not depend on how the
 * network cut the stream. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "net/http_response_parse.h"

#define MAX_RESPONSES 8

typedef struct record {
    buf events;   /* "H<status>,<keep-alive>;", "D;", "E<message>;", "F<eof ends it>" */
    buf body;     /* all body bytes, de-chunked */
} record;

/* One piece: returns 0 to go on, -1 after an error or enough responses. */
static int feed_piece(http_resp_parser *p, int head_request, char *piece, size_t len, record *r, int *responses) {
    size_t pos = 0;
    for (;;) {
        size_t used, blen;
        char *body = NULL;
        enum http_resp_event ev = http_resp_feed(p, piece + pos, len - pos, &used, &body, &blen);
        if (used > len - pos) abort();
        if (ev == HTTP_RESP_BODY && (body < piece || body + blen > piece + pos + used || !blen)) abort();
        pos += used;
        switch (ev) {
        case HTTP_RESP_MORE:
            if (pos != len) abort();
            return 0;
        case HTTP_RESP_HEAD: {
            buf_printf(&r->events, "H%d,%d;", p->status, p->keep_alive);
            const char *cl = http_resp_header(p, "content-length");
            if (cl && strlen(cl) > HTTP_RESP_MAX_HEAD) abort();
            break;
        }
        case HTTP_RESP_BODY:
            buf_append(&r->body, body, blen);
            break;
        case HTTP_RESP_DONE:
            buf_puts(&r->events, "D;");
            if (++*responses == MAX_RESPONSES) return -1;
            http_resp_init(p, head_request);
            break;
        case HTTP_RESP_ERROR:
            if (!p->error) abort();
            buf_printf(&r->events, "E%s;", p->error);
            return -1;
        }
    }
}

static void parse(const uint8_t *in, size_t n, size_t step, int head_request, record *r) {
    http_resp_parser p;
    memset(&p, 0, sizeof p);
    http_resp_init(&p, head_request);
    int responses = 0, stopped = 0;
    for (size_t off = 0; off < n && !stopped; off += step) {
        size_t len = n - off < step ? n - off : step;
        char *piece = malloc(len);
        memcpy(piece, in + off, len);
        stopped = feed_piece(&p, head_request, piece, len, r, &responses) < 0;
        free(piece);
    }
    if (!stopped) buf_printf(&r->events, "F%d", http_resp_eof(&p));
    http_resp_free(&p);
}

static int same(const buf *a, const buf *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n) {
    if (n < 1) return 0;
    size_t step = (size_t)(in[0] & 15) + 1;
    int head_request = (in[0] & 16) != 0;
    in++;
    n--;
    if (n == 0) return 0;
    record pieces = {BUF_INIT, BUF_INIT}, whole = {BUF_INIT, BUF_INIT};
    parse(in, n, step, head_request, &pieces);
    parse(in, n, n, head_request, &whole);
    if (!same(&pieces.events, &whole.events) || !same(&pieces.body, &whole.body)) {
        fprintf(stderr, "split %zu: %s\nwhole: %s\n", step, pieces.events.data, whole.events.data);
        abort();
    }
    buf_free(&pieces.events);
    buf_free(&pieces.body);
    buf_free(&whole.events);
    buf_free(&whole.body);
    return 0;
}
