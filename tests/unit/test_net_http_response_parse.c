/* test_net_http_response_parse: the HTTP/1.x response parser, fed whole
 * and byte by byte (every split must give the same result). */
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "net/http_response_parse.h"
#include "testlib.h"

typedef struct result {
    int heads, done, error;
    int status, keep_alive;
    buf body;
    char error_msg[128];
    size_t leftover;
} result;

/* Feeds text in pieces of `step` bytes (0: all at once), as a connection
 * would, keeping the unconsumed rest; eof: the connection closes after. */
static void run(const char *text, size_t step, int eof, int head_request, result *r) {
    http_resp_parser p;
    memset(&p, 0, sizeof p);
    http_resp_init(&p, head_request);
    memset(r, 0, sizeof *r);
    size_t n = strlen(text), off = 0;
    char *data = malloc(n + 1);
    memcpy(data, text, n + 1);
    while (!r->done && !r->error) {
        size_t len = step && n - off > step ? step : n - off;
        size_t pos = 0;
        for (;;) {
            size_t used, blen;
            char *body;
            enum http_resp_event ev = http_resp_feed(&p, data + off + pos, len - pos, &used, &body, &blen);
            pos += used;
            if (ev == HTTP_RESP_MORE) break;
            if (ev == HTTP_RESP_HEAD) {
                r->heads++;
                r->status = p.status;
                r->keep_alive = p.keep_alive;
            } else if (ev == HTTP_RESP_BODY) {
                buf_append(&r->body, body, blen);
            } else if (ev == HTTP_RESP_DONE) {
                r->done = 1;
                r->leftover = n - off - pos;
                break;
            } else {
                r->error = 1;
                snprintf(r->error_msg, sizeof r->error_msg, "%s", p.error);
                break;
            }
        }
        off += pos;
        if (off == n && !r->done && !r->error) {
            if (eof && http_resp_eof(&p)) r->done = 1;
            else if (eof) r->error = 1;
            break;
        }
    }
    free(data);
    http_resp_free(&p);
}

/* Same result at every split size. */
static void check_all_steps(const char *text, int eof, int want_status, const char *want_body, int want_error) {
    size_t steps[] = {0, 1, 2, 3, 7, 64};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        result r;
        run(text, steps[i], eof, 0, &r);
        CHECK_EQ_INT(r.error, want_error);
        if (!want_error) {
            CHECK_EQ_INT(r.done, 1);
            CHECK_EQ_INT(r.heads, 1);
            CHECK_EQ_INT(r.status, want_status);
            CHECK_STR(r.body.data ? r.body.data : "", want_body);
        }
        buf_free(&r.body);
    }
}

static void test_content_length(void) {
    check_all_steps("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, 200, "hello", 0);
    check_all_steps("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0, 404, "", 0);
    check_all_steps("HTTP/1.1 200\nContent-Length: 2\n\nok", 0, 200, "ok", 0); /* bare LF, no reason */
}

static void test_chunked_with_extensions_and_trailers(void) {
    check_all_steps("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n",
                    0, 200, "hello world", 0);
}

static void test_interim_responses_skipped(void) {
    check_all_steps("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                    "HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc",
                    0, 201, "abc", 0);
}

static void test_body_until_close(void) {
    check_all_steps("HTTP/1.1 200 OK\r\n\r\nall of it", 1, 200, "all of it", 0);
    check_all_steps("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nab", 1, 0, "", 1); /* cut short */
    result r;
    run("HTTP/1.1 200 OK\r\n\r\nx", 0, 1, 0, &r);
    CHECK_EQ_INT(r.keep_alive, 0);
    buf_free(&r.body);
}

static void test_no_body_statuses_and_head(void) {
    check_all_steps("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", 0, 204, "", 0);
    check_all_steps("HTTP/1.1 304 Not Modified\r\n\r\n", 0, 304, "", 0);
    result r;
    run("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 0, 0, 1, &r);
    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.body.len, 0);
    buf_free(&r.body);
}

static void test_keep_alive_rules(void) {
    result r;
    run("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0, 0, &r);
    CHECK_EQ_INT(r.keep_alive, 1);
    run("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 0, 0, 0, &r);
    CHECK_EQ_INT(r.keep_alive, 0);
    run("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0, 0, &r);
    CHECK_EQ_INT(r.keep_alive, 0);
    run("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", 0, 0, 0, &r);
    CHECK_EQ_INT(r.keep_alive, 1);
    /* bytes after the response are reported as left over, untouched */
    run("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA", 0, 0, 0, &r);
    CHECK_EQ_INT(r.leftover, 5);
    buf_free(&r.body);
}

static void test_headers_lookup(void) {
    http_resp_parser p;
    memset(&p, 0, sizeof p);
    http_resp_init(&p, 0);
    char text[] = "HTTP/1.1 429 Too Many\r\nRetry-After:  7 \r\nX-Empty:\r\nContent-Length: 0\r\n\r\n";
    size_t used, blen;
    char *body;
    CHECK(http_resp_header(&p, "retry-after") == NULL);
    CHECK_EQ_INT(http_resp_feed(&p, text, strlen(text), &used, &body, &blen), HTTP_RESP_HEAD);
    CHECK_EQ_INT(used, strlen(text));
    CHECK_STR(http_resp_header(&p, "RETRY-AFTER"), "7");
    CHECK_STR(http_resp_header(&p, "x-empty"), "");
    CHECK(http_resp_header(&p, "x-missing") == NULL);
    CHECK_EQ_INT(http_resp_feed(&p, text + used, 0, &used, &body, &blen), HTTP_RESP_DONE);
    http_resp_free(&p);
}

static void test_malformed(void) {
    check_all_steps("this is not http\r\n\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/2 200 OK\r\n\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 20 OK\r\n\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 200 OK\r\n folded\r\n\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, 0, "", 1);
    check_all_steps("HTTP/1.1 101 Switching Protocols\r\n\r\n", 0, 0, "", 1);
    /* a bad chunk after good ones: the good bytes still come out first */
    result r;
    run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nQ\r\n", 0, 0, 0, &r);
    CHECK_EQ_INT(r.error, 1);
    CHECK_STR(r.body.data, "abc");
    buf_free(&r.body);
}

static void test_head_size_limit(void) {
    buf t = BUF_INIT;
    buf_puts(&t, "HTTP/1.1 200 OK\r\n");
    while (t.len <= HTTP_RESP_MAX_HEAD) buf_puts(&t, "X-Filler: 0123456789012345678901234567890123456789\r\n");
    buf_puts(&t, "\r\n");
    result r;
    run(t.data, 4096, 0, 0, &r);
    CHECK_EQ_INT(r.error, 1);
    CHECK_CONTAINS(r.error_msg, "64 KB");
    buf_free(&r.body);
    buf_free(&t);
}

int main(void) {
    TEST(test_content_length);
    TEST(test_chunked_with_extensions_and_trailers);
    TEST(test_interim_responses_skipped);
    TEST(test_body_until_close);
    TEST(test_no_body_statuses_and_head);
    TEST(test_keep_alive_rules);
    TEST(test_headers_lookup);
    TEST(test_malformed);
    TEST(test_head_size_limit);
    return test_done();
}
