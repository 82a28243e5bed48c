/* http_response_parse: incremental HTTP/1.x response parser, no I/O.
 *
 * The client's side of http_parse: kept pure so it can be unit-tested byte
 * by byte and fuzzed. It is pull-style: each http_resp_feed() call consumes
 * some of the bytes given and reports one event (head complete, a piece of
 * body, response complete, error), so the caller can stop between events
 * (back-pressure) and keep the unconsumed rest for later.
 *
 * Head bytes are copied into the parser's own buffer (bounded by
 * HTTP_RESP_MAX_HEAD), so a head may arrive in any number of pieces and the
 * caller's read buffer is free again after each feed. Body bytes are not
 * copied: they are reported in place, a chunked body decoded over its own
 * framing in the caller's buffer. Interim 1xx responses are skipped. */
#ifndef MSOA_HTTP_RESPONSE_PARSE_H
#define MSOA_HTTP_RESPONSE_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "net/http_parse.h"

#define HTTP_RESP_MAX_HEAD (64u << 10)  /* one head; also bounds the chunked trailers */

enum http_resp_event {
    HTTP_RESP_MORE,   /* everything given was consumed; feed more */
    HTTP_RESP_HEAD,   /* the final head is in: status, headers, keep_alive */
    HTTP_RESP_BODY,   /* *body, *body_len: body bytes, inside the data given */
    HTTP_RESP_DONE,   /* the response is complete; bytes left over are not ours */
    HTTP_RESP_ERROR   /* not valid HTTP: p->error says why */
};

typedef struct http_resp_parser {
    int state;
    int status;
    int keep_alive;        /* the connection may carry another request afterwards */
    int head_request;      /* the response to HEAD has no body */
    int have_head;         /* the final head is in */
    int version_minor;
    int conn_close, conn_keep_alive, chunked, has_length;
    uint64_t content_length;
    uint64_t remaining;    /* Content-Length bytes still to come */
    uint64_t body_bytes;   /* body bytes reported so far */
    uint64_t bytes_in;     /* bytes consumed of this response so far */
    buf head;              /* the head being read; after HEAD, "name\0value\0" pairs */
    size_t lead;           /* stray blank lines before the status line, in `head` */
    size_t line_start;     /* where the current head line starts in `head` */
    http_chunked ch;
    const char *error;     /* static message after HTTP_RESP_ERROR */
} http_resp_parser;

/* Prepares for a new response; keeps the head buffer's memory. */
void http_resp_init(http_resp_parser *p, int head_request);
void http_resp_free(http_resp_parser *p);
/* Consumes a prefix of data[0..len) (*consumed bytes) and reports one event.
 * May rewrite consumed bytes (chunk decoding in place), never the rest.
 * With len 0 it still reports DONE once the response is complete. */
enum http_resp_event http_resp_feed(http_resp_parser *p, char *data, size_t len, size_t *consumed,
                                    char **body, size_t *body_len);
/* The connection closed: true when that ends the response (a body without
 * length), false when the response was cut short. */
int http_resp_eof(const http_resp_parser *p);
/* True once the final head is in. */
int http_resp_head_done(const http_resp_parser *p);
/* A header of the final head (case-insensitive), or NULL. */
const char *http_resp_header(const http_resp_parser *p, const char *name);
/* Lookup in "name\0value\0" pairs, the form both client paths store. */
const char *http_header_pairs_find(const char *pairs, size_t len, const char *name);

#endif
