/* it_limits: bad and hostile input at the socket: oversized bodies and
 * heads, a client sending one byte at a time, malformed requests, chunked
 * bodies, keep-alive. Each gets the right answer and the gateway keeps
 * serving everyone else. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "itgw.h"
#include "testlib.h"

static itgw g;

static int health_ok(void) {
    it_response r;
    int ok = it_http(g.msoa.port, "GET", "/health", NULL, NULL, 0, 3000, &r) == 0 && r.status == 200;
    it_response_free(&r);
    return ok;
}

static int raw_status(const char *request, size_t len) {
    buf out = BUF_INIT;
    it_raw(g.msoa.port, request, len, 3000, &out);
    int status = out.len > 12 && !strncmp(out.data, "HTTP/1.1 ", 9) ? atoi(out.data + 9) : 0;
    buf_free(&out);
    return status;
}

static void test_body_too_large(void) {
    size_t n = 5000;
    char *body = malloc(n);
    memset(body, 'a', n);
    it_response r;
    CHECK_EQ_INT(it_http(g.msoa.port, "POST", "/v1/chat/completions", NULL, body, n, 5000, &r), 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK_CONTAINS(r.body.data, "\"error\"");
    it_response_free(&r);
    free(body);
    CHECK(health_ok());
}

static void test_head_too_large(void) {
    buf req = BUF_INIT;
    buf_puts(&req, "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ");
    for (int i = 0; i < 3000; i++) buf_putc(&req, 'b');
    buf_puts(&req, "\r\n\r\n");
    CHECK_EQ_INT(raw_status(req.data, req.len), 431);
    buf_free(&req);
    CHECK(health_ok());
}

static void test_malformed_requests(void) {
    static const char *cases[] = {
        "GARBAGE\r\n\r\n",
        "GET /health HTTP/1.1\r\nNo colon here\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /health HTTP/9.9\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int status = raw_status(cases[i], strlen(cases[i]));
        if (status < 400 || status > 505) fprintf(stderr, "  case %zu got %d\n", i, status);
        CHECK(status >= 400 && status <= 505);
    }
    CHECK(health_ok());
}

static void test_slow_client_gets_408(void) {
    int fd = it_connect(g.msoa.port);
    CHECK(fd >= 0);
    const char *req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
    double start = clock_now_ms();
    buf out = BUF_INIT;
    int served_others = 1;
    /* one byte every 100 ms: the whole request would take 7 s; the limit is 1 s */
    for (size_t i = 0; i < strlen(req); i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1) break;
        if (i == 3) served_others = health_ok();
        usleep(100000);
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n > 0) {
            buf_append(&out, tmp, (size_t)n);
            break;
        }
        if (n == 0) break;
        if (clock_now_ms() - start > 4000) break;
    }
    CHECK(served_others);
    CHECK(out.len > 12 && atoi(out.data + 9) == 408);
    CHECK(clock_now_ms() - start < 3000);
    buf_free(&out);
    close(fd);
    CHECK(health_ok());
}

/* Two requests on one connection, the second with a chunked body; each is
 * sent once the previous answer is in (pipelining is the server's unit test). */
static void test_keep_alive_and_chunked_body(void) {
    int fd = it_connect(g.msoa.port);
    CHECK(fd >= 0);
    const char *first = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_EQ_INT(send(fd, first, strlen(first), MSG_NOSIGNAL), (long long)strlen(first));
    it_response r1 = {0}, r2 = {0};
    CHECK_EQ_INT(it_read_response(fd, 5000, &r1), 0);
    CHECK_EQ_INT(r1.status, 200);

    const char *body = "{\"model\":\"mock-small\",\"messages\":[{\"role\":\"user\",\"content\":\"chunked\"}]}";
    buf req = BUF_INIT;
    buf_puts(&req, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t half = strlen(body) / 2;
    buf_printf(&req, "%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n", half, (int)half, body, strlen(body) - half, body + half);
    CHECK_EQ_INT(send(fd, req.data, req.len, MSG_NOSIGNAL), (long long)req.len);
    CHECK_EQ_INT(it_read_response(fd, 10000, &r2), 0);
    CHECK_EQ_INT(r2.status, 200);
    CHECK_CONTAINS(r2.body.data, "chat.completion");
    it_response_free(&r1);
    it_response_free(&r2);
    buf_free(&req);
    close(fd);
}

int main(void) {
    const char *extra[] = {"--max-body", "4096", "--max-header", "2048", "--request-timeout-ms", "1000", NULL};
    if (itgw_start(&g, extra) < 0) return 1;
    TEST(test_body_too_large);
    TEST(test_head_too_large);
    TEST(test_malformed_requests);
    TEST(test_slow_client_gets_408);
    TEST(test_keep_alive_and_chunked_body);
    itgw_stop(&g);
    return test_done();
}
