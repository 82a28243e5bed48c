/* Tests for the HTTP/1.1 request parser: valid requests, every error status,
 * keep-alive rules, chunked bodies, and feeding at every byte boundary. */
#include "net/http_parse.h"

#include <stdlib.h>
#include <string.h>

#include "testlib.h"

typedef struct parsed {
    int rc;
    http_parser p;
    char *data;
    http_request req;
    http_header headers[HTTP_MAX_HEADERS];
} parsed;

/* Parses text whole, with small limits unless the test passes its own. */
static parsed *parse_lim(const char *text, size_t len, size_t max_header, size_t max_body) {
    parsed *r = calloc(1, sizeof *r);
    r->data = malloc(len + 1);
    memcpy(r->data, text, len);
    http_parser_init(&r->p, max_header, max_body);
    r->rc = http_parser_feed(&r->p, r->data, len);
    if (r->rc == HTTP_PARSE_DONE) http_parser_request(&r->p, r->data, &r->req, r->headers);
    return r;
}

static parsed *parse(const char *text) { return parse_lim(text, strlen(text), 1024, 4096); }

static void parsed_free(parsed *r) {
    free(r->data);
    free(r);
}

static int status_of(const char *text) {
    parsed *r = parse(text);
    int rc = r->rc;
    parsed_free(r);
    return rc;
}

static void test_simple_get(void) {
    parsed *r = parse("GET /v1/models?limit=2&x=y HTTP/1.1\r\nHost: example\r\n"
                      "X-Custom-NAME:   spaced value \t\r\nEmpty:\r\n\r\n");
    CHECK_EQ_INT(r->rc, HTTP_PARSE_DONE);
    CHECK_STR(r->req.method, "GET");
    CHECK_STR(r->req.path, "/v1/models");
    CHECK_STR(r->req.query, "limit=2&x=y");
    CHECK_EQ_INT(r->req.n_headers, 3);
    CHECK_STR(r->req.headers[1].name, "x-custom-name");
    CHECK_STR(r->req.headers[1].value, "spaced value");
    CHECK_STR(http_request_header(&r->req, "X-CUSTOM-name"), "spaced value");
    CHECK_STR(http_request_header(&r->req, "empty"), "");
    CHECK(http_request_header(&r->req, "missing") == NULL);
    CHECK_EQ_INT(r->req.body_len, 0);
    CHECK_STR(r->req.body, "");
    CHECK_EQ_INT(r->p.keep_alive, 1);
    CHECK_EQ_INT(r->p.req_len, strlen("GET /v1/models?limit=2&x=y HTTP/1.1\r\nHost: example\r\n"
                                      "X-Custom-NAME:   spaced value \t\r\nEmpty:\r\n\r\n"));
    parsed_free(r);
}

static void test_post_body_and_pipelining(void) {
    const char *two = "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
    parsed *r = parse(two);
    CHECK_EQ_INT(r->rc, HTTP_PARSE_DONE);
    CHECK_EQ_INT(r->p.req_len, strlen(two) - strlen("GET /b HTTP/1.1\r\n\r\n"));
    CHECK_EQ_INT(r->req.body_len, 5);
    CHECK(memcmp(r->req.body, "hello", 5) == 0);
    CHECK_STR(r->req.query, "");
    parsed *second = parse(two + r->p.req_len);
    CHECK_EQ_INT(second->rc, HTTP_PARSE_DONE);
    CHECK_STR(second->req.path, "/b");
    parsed_free(second);
    parsed_free(r);
}

static void test_incomplete(void) {
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: x\r\n"), HTTP_PARSE_MORE);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"), HTTP_PARSE_MORE);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"), HTTP_PARSE_MORE);
}

static void test_keep_alive_rules(void) {
    parsed *r = parse("GET / HTTP/1.0\r\n\r\n");
    CHECK_EQ_INT(r->p.keep_alive, 0);
    parsed_free(r);
    r = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    CHECK_EQ_INT(r->p.keep_alive, 1);
    parsed_free(r);
    r = parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
    CHECK_EQ_INT(r->p.keep_alive, 0);
    parsed_free(r);
    r = parse("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    CHECK_EQ_INT(r->p.keep_alive, 1);
    CHECK_EQ_INT(r->p.upgrade, 1);
    parsed_free(r);
}

static void test_expect_continue(void) {
    parsed *r = parse("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    CHECK_EQ_INT(r->rc, HTTP_PARSE_MORE);
    CHECK(http_parser_head_done(&r->p));
    CHECK_EQ_INT(r->p.expect_continue, 1);
    parsed_free(r);
    r = parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n");
    CHECK(!http_parser_head_done(&r->p));
    parsed_free(r);
}

static void test_chunked_extensions_trailers(void) {
    parsed *r = parse("POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
                      "5;ext=1\r\nhello\r\n6 ; a=\"b\"\r\n world\r\nA\r\n0123456789\r\n"
                      "0\r\nX-Trailer: yes\r\nMore: x\r\n\r\n");
    CHECK_EQ_INT(r->rc, HTTP_PARSE_DONE);
    CHECK_EQ_INT(r->req.body_len, 21);
    CHECK_STR(r->req.body, "hello world0123456789");
    CHECK(http_request_header(&r->req, "x-trailer") == NULL);
    parsed_free(r);
    r = parse("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nNEXT");
    CHECK_EQ_INT(r->rc, HTTP_PARSE_DONE);
    CHECK_EQ_INT(r->req.body_len, 0);
    CHECK_EQ_INT(r->p.req_len, strlen("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
    parsed_free(r);
}

static void test_target_forms(void) {
    parsed *r = parse("\r\nGET http://host:80/p/q?z=1 HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(r->rc, HTTP_PARSE_DONE);
    CHECK_STR(r->req.method, "GET");
    CHECK_STR(r->req.path, "/p/q");
    CHECK_STR(r->req.query, "z=1");
    parsed_free(r);
    r = parse("OPTIONS * HTTP/1.1\r\n\r\n");
    CHECK_STR(r->req.path, "*");
    parsed_free(r);
    CHECK_EQ_INT(status_of("GET http://host HTTP/1.1\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET relative HTTP/1.1\r\n\r\n"), 400);
}

static void test_errors_400(void) {
    const char *bad[] = {
        "GET /\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\n: x\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        "GET /a\x7f HTTP/1.1\r\n\r\n",
        "GET / HTTQ/1.1\r\n\r\n",
        "GET / HTTP/1.1x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: x\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rX",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        parsed *r = parse(bad[i]);
        if (r->rc != 400) fprintf(stderr, "  case %zu: got %d\n", i, r->rc);
        CHECK_EQ_INT(r->rc, 400);
        CHECK(r->p.error != NULL && r->p.error[0]);
        parsed_free(r);
    }
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc"), HTTP_PARSE_DONE);
}

static void test_errors_limits(void) {
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n"), 413);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nContent-Length: 4096\r\n\r\n"), HTTP_PARSE_MORE);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n"), HTTP_PARSE_MORE);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n"), 413);

    char big[2048];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    parsed *r = parse_lim(big, sizeof big, 1024, 4096);   /* no end of line yet */
    CHECK_EQ_INT(r->rc, 431);
    parsed_free(r);
    memcpy(big + 1500, "\r\n\r\n", 4);
    r = parse_lim(big, 1504, 1024, 4096);
    CHECK_EQ_INT(r->rc, 431);
    parsed_free(r);

    char many[4096] = "GET / HTTP/1.1\r\n";
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++) strcat(many, "a: b\r\n");
    strcat(many, "\r\n");
    r = parse_lim(many, strlen(many), 8192, 4096);
    CHECK_EQ_INT(r->rc, 431);
    parsed_free(r);

    char trailers[2048] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
    for (int i = 0; i < 30; i++) strcat(trailers, "trailer-field: some value\r\n");
    r = parse_lim(trailers, strlen(trailers), 512, 4096);
    CHECK_EQ_INT(r->rc, 431);
    parsed_free(r);
}

static void test_errors_501_505(void) {
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"), 501);
    CHECK_EQ_INT(status_of("GET / HTTP/2.0\r\n\r\n"), 505);
    CHECK_EQ_INT(status_of("GET / HTTP/0.9\r\n\r\n"), 505);
    CHECK_EQ_INT(status_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
    /* h2c upgrade is not spoken: the request is served as HTTP/1.1. */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                           "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
                 HTTP_PARSE_DONE);
}

/* Feeds text one more byte at a time, in a buffer that is reallocated to
 * exactly the bytes received so far, and checks the outcome matches a
 * whole-buffer parse. */
static void check_every_split(const char *text, size_t len, int want_rc, const char *want_body, size_t want_body_len) {
    http_parser p;
    http_parser_init(&p, 1024, 4096);
    char *data = NULL;
    int rc = HTTP_PARSE_MORE;
    size_t k;
    for (k = 1; k <= len && rc == HTTP_PARSE_MORE; k++) {
        data = realloc(data, k + 1);
        data[k - 1] = text[k - 1];
        rc = http_parser_feed(&p, data, k);
    }
    CHECK_EQ_INT(rc, want_rc);
    if (rc == HTTP_PARSE_DONE) {
        CHECK_EQ_INT(k - 1, len);
        CHECK_EQ_INT(p.req_len, len);
        http_request req;
        http_header headers[HTTP_MAX_HEADERS];
        http_parser_request(&p, data, &req, headers);
        CHECK_EQ_INT(req.body_len, want_body_len);
        CHECK(memcmp(req.body, want_body, want_body_len) == 0);
        CHECK_STR(req.path, "/split");
        CHECK_STR(http_request_header(&req, "host"), "h");
    }
    free(data);
}

static void test_split_every_byte(void) {
    const char *plain = "GET /split?q HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n";
    check_every_split(plain, strlen(plain), HTTP_PARSE_DONE, "", 0);
    const char *cl = "POST /split HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";
    check_every_split(cl, strlen(cl), HTTP_PARSE_DONE, "hello world", 11);
    const char *ch = "POST /split HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5;e=v\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nT: t\r\n\r\n";
    check_every_split(ch, strlen(ch), HTTP_PARSE_DONE, "hello world", 11);
    static const char bin[] = "POST /split HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\na\0b";
    check_every_split(bin, sizeof bin - 1, HTTP_PARSE_DONE, "a\0b", 3);
    const char *bad = "POST /split HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX";
    check_every_split(bad, strlen(bad), 400, NULL, 0);
}

int main(void) {
    TEST(test_simple_get);
    TEST(test_post_body_and_pipelining);
    TEST(test_incomplete);
    TEST(test_keep_alive_rules);
    TEST(test_expect_continue);
    TEST(test_chunked_extensions_trailers);
    TEST(test_target_forms);
    TEST(test_errors_400);
    TEST(test_errors_limits);
    TEST(test_errors_501_505);
    TEST(test_split_every_byte);
    return test_done();
}
