/* http_parse: incremental HTTP/1.1 request parser, no I/O.
 *
 * Kept apart from the server so it can be unit-tested byte by byte and
 * fuzzed. The caller owns one growing buffer holding the request so far and
 * calls http_parser_feed() each time more bytes arrive; the buffer may move
 * between calls (the parser keeps offsets, never pointers). Work done on
 * earlier calls is not repeated: the head is parsed line by line as lines
 * complete, and a chunked body is decoded in place as it arrives.
 *
 * The parser writes into the buffer: it NUL-terminates method, path, query
 * and header fields, lower-cases header names and moves decoded chunk data
 * down over the chunk framing. Nothing at or after the current length is
 * touched, so bytes of a following pipelined request are safe until
 * http_parser_request() (see there). */
#ifndef MSOA_HTTP_PARSE_H
#define MSOA_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "net/http_server.h"

#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_CHUNK_LINE 4096   /* chunk-size line incl. extensions */

/* Results of the feed functions; errors are the HTTP status to answer. */
enum { HTTP_PARSE_MORE = 0, HTTP_PARSE_DONE = 1 };

/* Chunked transfer-coding decoder (RFC 9112 section 7.1). Trailers are
 * checked and dropped. */
typedef struct http_chunked {
    int state;
    uint64_t remaining;   /* size being read, then data bytes left in the chunk */
    size_t line_len;      /* bytes of the current size or trailer line */
    size_t trailer_len;   /* bytes of the trailer section so far */
    size_t total;         /* decoded body bytes so far */
    size_t max_total;     /* body limit: over it -> 413 */
    size_t max_trailer;   /* trailer limit: over it -> 431 */
} http_chunked;

void http_chunked_init(http_chunked *c, size_t max_total, size_t max_trailer);
/* Decodes src[0..n) into dst; dst may equal or precede src (in place).
 * *consumed / *produced report progress even on error. Returns
 * HTTP_PARSE_MORE, HTTP_PARSE_DONE (consumed stops right after the final
 * CRLF) or an error status with *err set to a static message. */
int http_chunked_feed(http_chunked *c, const char *src, size_t n, char *dst,
                      size_t *consumed, size_t *produced, const char **err);

typedef struct http_parser {
    size_t max_header, max_body;
    int state;
    size_t scan;          /* next head byte to look at */
    size_t line_start;    /* start of the head line being read */
    size_t head_len;      /* bytes of request line + headers + blank line */
    int version_minor;    /* 0 or 1 */
    int keep_alive;       /* per version and Connection header */
    int chunked;
    int expect_continue;
    int upgrade;          /* Connection: upgrade was given */
    int has_length;
    uint64_t content_length;
    int conn_close, conn_keep_alive;
    size_t body_off, body_len;
    size_t in_pos;        /* chunked: next undecoded input byte */
    http_chunked ch;
    uint32_t method_off, path_off, query_off;  /* query_off 0: no query */
    struct { uint32_t name, value; } hoff[HTTP_MAX_HEADERS];
    int n_headers;
    size_t req_len;       /* bytes this request used, once done */
    const char *error;    /* static message when a feed returned an error */
} http_parser;

void http_parser_init(http_parser *p, size_t max_header, size_t max_body);
/* data[0..len) is everything received for this request (and maybe more).
 * Returns HTTP_PARSE_MORE, HTTP_PARSE_DONE (p->req_len bytes form the
 * request; anything after belongs to the next one) or an error status
 * (400, 413, 431, 501, 505) with p->error saying why. After an error or
 * DONE, re-init before the next request. */
int http_parser_feed(http_parser *p, char *data, size_t len);
/* True once the whole head is in, e.g. to answer Expect: 100-continue. */
int http_parser_head_done(const http_parser *p);
/* Fills req after DONE, with headers[] (room for HTTP_MAX_HEADERS) pointing
 * into data. NUL-terminates the body, which may overwrite data[req_len]:
 * move any following bytes away first. */
void http_parser_request(const http_parser *p, char *data, http_request *req,
                         http_header *headers);

#endif
