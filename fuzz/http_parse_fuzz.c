/* http_parse_fuzz: libFuzzer target for the HTTP request parser and its
 * chunked decoder.
 *
 * The first input byte picks a split point; the rest is fed in two steps,
 * each time in a buffer of exactly the bytes received (reallocated between
 * steps, as the server's buffer may move), so ASan catches any read past
 * what arrived and any stale pointer kept across feeds. Pipelined requests
 * are parsed one after another. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/http_parse.h"

/* Parses one request from in[0..n); returns bytes used, 0 to stop. */
static size_t one_request(const uint8_t *in, size_t n, size_t split) {
    http_parser p;
    http_parser_init(&p, 512, 2048);
    if (split > n) split = n;
    char *data = malloc(split ? split : 1);
    memcpy(data, in, split);
    int rc = http_parser_feed(&p, data, split);
    if (rc == HTTP_PARSE_MORE) {
        data = realloc(data, n ? n : 1);
        memcpy(data + split, in + split, n - split);
        rc = http_parser_feed(&p, data, n);
    }
    size_t used = 0;
    if (rc == HTTP_PARSE_DONE) {
        if (p.req_len == 0 || p.req_len > n) abort();
        /* http_parser_request writes the body's NUL at most at req_len. */
        data = realloc(data, p.req_len + 1);
        http_request req;
        http_header headers[HTTP_MAX_HEADERS];
        http_parser_request(&p, data, &req, headers);
        size_t total = strlen(req.method) + strlen(req.path) + strlen(req.query) + req.body_len;
        for (int i = 0; i < req.n_headers; i++) total += strlen(headers[i].name) + strlen(headers[i].value);
        if (total > p.req_len) abort();
        const char *cl = http_request_header(&req, "Content-Length");
        if (cl && strlen(cl) > p.req_len) abort();
        used = p.req_len;
    } else if (rc != HTTP_PARSE_MORE && !p.error) {
        abort();
    }
    free(data);
    return used;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n) {
    if (n < 1) return 0;
    size_t split = in[0];
    in++;
    n--;
    for (int i = 0; i < 8 && n > 0; i++) {
        size_t used = one_request(in, n, split);
        if (!used) break;
        in += used;
        n -= used;
    }
    return 0;
}
