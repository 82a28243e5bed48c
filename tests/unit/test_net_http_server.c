/* Tests for the HTTP/WebSocket server over real sockets on 127.0.0.1.
 *
 * The server runs on its own uv loop in a thread; the test is a plain
 * blocking-socket client (receive timeout 5 s, so a hang fails instead of
 * blocking). The handler picks its behaviour from the path. Limits are
 * small so timeouts and size errors happen within a second. */
#include "net/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/buf.h"
#include "net/ws_frame.h"
#include "testlib.h"

#define BIG_STREAM (16u << 20)   /* more than loopback socket buffers hold */

static atomic_int g_aborts, g_drains, g_ws_closed, g_big_sent, g_ws_drains;
static size_t g_flood_sent;   /* loop thread only */
static int g_flooding;

/* --- handlers (loop thread) --- */

typedef struct job {
    uv_timer_t timer;
    http_exchange *x;
    size_t sent;
    int ended;
} job;

static void job_free(uv_handle_t *h) { free(h->data); }

static job *job_new(http_exchange *x) {
    job *j = calloc(1, sizeof *j);
    j->x = x;
    uv_timer_init(http_exchange_loop(x), &j->timer);
    j->timer.data = j;
    return j;
}

static void job_end(job *j) {
    j->ended = 1;
    uv_close((uv_handle_t *)&j->timer, job_free);
}

static void sleep_done(uv_timer_t *t) {
    job *j = t->data;
    http_respond(j->x, 200, "text/plain", "slept", 5);
    job_end(j);
}

static void tick(uv_timer_t *t) {
    job *j = t->data;
    http_stream_write(j->x, "tick\n", 5);
}

static void slow_abort(void *ud) {
    job *j = ud;
    atomic_fetch_add(&g_aborts, 1);
    http_stream_write(j->x, "dropped", 7);
    http_stream_end(j->x);
    job_end(j);
}

/* Writes BIG_STREAM bytes of a known pattern, pausing while over 256 KB are
 * queued: exercises http_stream_backlog and on_drain. */
static void big_produce(void *ud) {
    job *j = ud;
    char piece[65536];
    while (j->sent < BIG_STREAM && http_stream_backlog(j->x) < (256u << 10)) {
        for (size_t i = 0; i < sizeof piece; i++) piece[i] = (char)('a' + (j->sent + i) % 26);
        http_stream_write(j->x, piece, sizeof piece);
        j->sent += sizeof piece;
    }
    if (j->sent == BIG_STREAM && !j->ended) {
        atomic_store(&g_big_sent, 1);
        http_stream_end(j->x);
        job_end(j);
    }
}

static void big_drain(void *ud) {
    atomic_fetch_add(&g_drains, 1);
    big_produce(ud);
}

static void big_abort(void *ud) {
    job *j = ud;
    http_stream_end(j->x);
    job_end(j);
}

static void hang_abort(void *ud) {
    atomic_fetch_add(&g_aborts, 1);
    http_respond(ud, 200, "text/plain", "late", 4);
}

/* Sends BIG_STREAM bytes in 64 KB messages, pausing on ws_backlog. */
static void ws_flood(ws_conn *ws) {
    static char piece[65536];
    memset(piece, 'f', sizeof piece);
    while (g_flooding && ws_backlog(ws) < (256u << 10)) {
        ws_send_text(ws, piece, sizeof piece);
        g_flood_sent += sizeof piece;
        g_flooding = g_flood_sent < BIG_STREAM;
    }
}

static void ws_drained(ws_conn *ws, void *ud) {
    (void)ud;
    atomic_fetch_add(&g_ws_drains, 1);
    ws_flood(ws);
}

static void ws_message(ws_conn *ws, int is_text, const char *data, size_t len, void *ud) {
    (void)ud;
    (void)is_text;
    if (len == 8 && memcmp(data, "close-me", 8) == 0) {
        ws_close(ws, 1000, "bye");
    } else if (len == 5 && memcmp(data, "flood", 5) == 0) {
        g_flood_sent = 0;
        g_flooding = 1;
        ws_flood(ws);
    } else {
        ws_send_text(ws, data, len);
    }
}

static void ws_closed(ws_conn *ws, void *ud) {
    (void)ws;
    (void)ud;
    atomic_fetch_add(&g_ws_closed, 1);
}

static void handler(http_exchange *x, const http_request *req, void *ud) {
    (void)ud;
    if (strcmp(req->path, "/echo") == 0) {
        buf b = BUF_INIT;
        buf_printf(&b, "%s %s?%s %zu:", req->method, req->path, req->query, req->body_len);
        buf_append(&b, req->body, req->body_len);
        const char *h = http_request_header(req, "x-test");
        if (h) http_add_header(x, "X-Echo", h);
        http_respond(x, 200, "text/plain", b.data, b.len);
        buf_free(&b);
    } else if (strcmp(req->path, "/sleep") == 0) {
        uv_timer_start(&job_new(x)->timer, sleep_done, 100, 0);
    } else if (strcmp(req->path, "/chunks") == 0) {
        http_stream_start(x, 200, "text/event-stream");
        http_stream_write(x, "data: one\n\n", 11);
        http_stream_write(x, "data: two\n\n", 11);
        http_stream_end(x);
    } else if (strcmp(req->path, "/slowstream") == 0) {
        job *j = job_new(x);
        http_exchange_on(x, NULL, slow_abort, j);
        http_stream_start(x, 200, "text/plain");
        http_stream_write(x, "first\n", 6);
        uv_timer_start(&j->timer, tick, 20, 20);
    } else if (strcmp(req->path, "/bigstream") == 0) {
        job *j = job_new(x);
        http_exchange_on(x, big_drain, big_abort, j);
        http_stream_start(x, 200, "application/octet-stream");
        big_produce(j);
    } else if (strcmp(req->path, "/hang") == 0) {
        http_exchange_on(x, NULL, hang_abort, x);
    } else if (strcmp(req->path, "/ws") == 0) {
        ws_callbacks cb = {ws_message, ws_drained, ws_closed};
        http_upgrade_websocket(x, &cb, NULL);
    } else {
        http_respond(x, 404, "text/plain", "nope", 4);
    }
}

/* --- server thread --- */

typedef struct srv {
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t thread;
    http_server *s;
    int port;
    atomic_int done;
} srv;

static void run_loop(void *arg) {
    srv *v = arg;
    uv_run(&v->loop, UV_RUN_DEFAULT);
}

static void on_done(void *ud) { atomic_store(&((srv *)ud)->done, 1); }

static void on_stop(uv_async_t *a) {
    srv *v = a->data;
    http_server_close(v->s, on_done, v);
    uv_close((uv_handle_t *)a, NULL);
}

static int g_batch; /* servers batch their writes */

static srv *srv_start(int max_connections) {
    srv *v = calloc(1, sizeof *v);
    uv_loop_init(&v->loop);
    http_limits lim;
    http_limits_default(&lim);
    lim.max_body = 100000;
    lim.max_header = 2048;
    lim.request_timeout_ms = 400;
    lim.idle_timeout_ms = 1500;
    lim.max_ws_message = 100000;
    lim.max_connections = max_connections;
    v->s = http_server_new(&v->loop, &lim, handler, NULL);
    if (g_batch) http_server_batch_writes(v->s);
    CHECK_EQ_INT(http_server_listen(v->s, "127.0.0.1", 0, 1), 0);
    v->port = http_server_port(v->s);
    CHECK(v->port > 0);
    uv_async_init(&v->loop, &v->stop, on_stop);
    v->stop.data = v;
    uv_thread_create(&v->thread, run_loop, v);
    return v;
}

static void srv_stop(srv *v) {
    uv_async_send(&v->stop);
    uv_thread_join(&v->thread);
    CHECK_EQ_INT(atomic_load(&v->done), 1);
    CHECK_EQ_INT(uv_loop_close(&v->loop), 0);
    free(v);
}

static srv *g_srv;

/* --- client --- */

typedef struct client {
    int fd;
    buf in;
} client;

static client *cl_open_rcvbuf(int port, int rcvbuf) {
    client *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ_INT(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    return c;
}

static client *cl_open(int port) { return cl_open_rcvbuf(port, 0); }

static client *cl(void) { return cl_open(g_srv->port); }

static void cl_close(client *c) {
    close(c->fd);
    buf_free(&c->in);
    free(c);
}

static void cl_send(client *c, const void *data, size_t len) {
    CHECK_EQ_INT(send(c->fd, data, len, MSG_NOSIGNAL), (long long)len);
}

static void cl_puts(client *c, const char *s) { cl_send(c, s, strlen(s)); }

/* Reads more; returns bytes read, 0 on EOF, -1 on error or timeout. */
static int cl_fill(client *c) {
    char tmp[65536];
    ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
    if (n > 0) buf_append(&c->in, tmp, (size_t)n);
    return (int)n;
}

static int cl_need(client *c, size_t n) {
    while (c->in.len < n)
        if (cl_fill(c) <= 0) return 0;
    return 1;
}

/* True when the server closed the connection (EOF or reset). */
static int cl_eof(client *c) {
    for (;;) {
        int n = cl_fill(c);
        if (n == 0) return 1;
        if (n < 0) return errno == ECONNRESET;
    }
}

typedef struct resp {
    int status;
    char head[4096];
    buf body;
} resp;

/* Reads one response; returns its status, 0 when none came. */
static int read_resp(client *c, resp *r) {
    buf_clear(&r->body);
    r->status = 0;
    char *end;
    while (!(end = strstr(c->in.data ? c->in.data : "", "\r\n\r\n")))
        if (cl_fill(c) <= 0) return 0;
    size_t hl = (size_t)(end + 4 - c->in.data);
    if (hl >= sizeof r->head) return 0;
    memcpy(r->head, c->in.data, hl);
    r->head[hl] = '\0';
    buf_consume(&c->in, hl);
    r->status = atoi(r->head + 9);
    const char *cl = strcasestr(r->head, "\r\ncontent-length:");
    if (r->status < 200) return r->status;
    if (strcasestr(r->head, "\r\ntransfer-encoding: chunked")) {
        for (;;) {
            char *nl;
            while (!(nl = strstr(c->in.data ? c->in.data : "", "\r\n")))
                if (cl_fill(c) <= 0) return 0;
            size_t size = strtoul(c->in.data, NULL, 16);
            buf_consume(&c->in, (size_t)(nl + 2 - c->in.data));
            if (!cl_need(c, size + 2)) return 0;
            buf_append(&r->body, c->in.data, size);
            buf_consume(&c->in, size + 2);
            if (size == 0) return r->status;
        }
    }
    if (cl) {
        size_t n = strtoul(cl + 17, NULL, 10);
        if (!cl_need(c, n)) return 0;
        buf_append(&r->body, c->in.data, n);
        buf_consume(&c->in, n);
        return r->status;
    }
    while (cl_fill(c) > 0) {}
    buf_append(&r->body, c->in.data, c->in.len);
    buf_clear(&c->in);
    return r->status;
}

static void resp_free(resp *r) { buf_free(&r->body); }

/* --- HTTP tests --- */

static void test_keep_alive(void) {
    client *c = cl();
    resp r = {0};
    for (int i = 0; i < 3; i++) {
        cl_puts(c, "GET /echo?n=1 HTTP/1.1\r\nHost: t\r\nX-Test: hi\r\n\r\n");
        CHECK_EQ_INT(read_resp(c, &r), 200);
        CHECK_STR(r.body.data, "GET /echo?n=1 0:");
        CHECK_CONTAINS(r.head, "\r\nX-Echo: hi\r\n");
        CHECK_CONTAINS(r.head, "\r\nServer: msoa\r\n");
        CHECK_CONTAINS(r.head, "\r\nDate: ");
        CHECK(!strstr(r.head, "Connection: close"));
    }
    cl_puts(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_STR(r.body.data, "POST /echo? 5:hello");
    cl_puts(c, "GET /missing HTTP/1.1\r\nConnection: close\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 404);
    CHECK_CONTAINS(r.head, "Connection: close");
    CHECK(cl_eof(c));
    resp_free(&r);
    cl_close(c);
}

static void test_http10(void) {
    client *c = cl();
    resp r = {0};
    cl_puts(c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_CONTAINS(r.head, "Connection: keep-alive");
    cl_puts(c, "GET /chunks HTTP/1.0\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 200);   /* no chunking in 1.0: body runs to EOF */
    CHECK_STR(r.body.data, "data: one\n\ndata: two\n\n");
    resp_free(&r);
    cl_close(c);
}

static void test_pipelining(void) {
    client *c = cl();
    resp r = {0};
    cl_puts(c, "GET /echo?a HTTP/1.1\r\n\r\nGET /sleep HTTP/1.1\r\n\r\n"
               "POST /echo?c HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /chunks HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_STR(r.body.data, "GET /echo?a 0:");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_STR(r.body.data, "slept");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_STR(r.body.data, "POST /echo?c 3:xyz");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_STR(r.body.data, "data: one\n\ndata: two\n\n");
    resp_free(&r);
    cl_close(c);
}

static void test_chunked_request(void) {
    client *c = cl();
    resp r = {0};
    cl_puts(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n");
    usleep(20000);
    cl_puts(c, "3\r\nefg\r\n0\r\nTrailer: t\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_STR(r.body.data, "POST /echo? 7:abcdefg");
    resp_free(&r);
    cl_close(c);
}

static void test_expect_continue(void) {
    client *c = cl();
    resp r = {0};
    cl_puts(c, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 100);
    cl_puts(c, "body");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_STR(r.body.data, "POST /echo? 4:body");
    resp_free(&r);
    cl_close(c);
}

/* Sends raw bytes; expects the server's own error and a closed connection. */
static void expect_error(const char *raw, size_t len, int status, const char *code) {
    client *c = cl();
    resp r = {0};
    cl_send(c, raw, len);
    CHECK_EQ_INT(read_resp(c, &r), status);
    CHECK_CONTAINS(r.head, "Connection: close");
    CHECK_CONTAINS(r.head, "Content-Type: application/json");
    CHECK_CONTAINS(r.body.data, "{\"error\":{\"message\":\"");
    CHECK_CONTAINS(r.body.data, "\"type\":\"invalid_request_error\"");
    CHECK_CONTAINS(r.body.data, code);
    CHECK(cl_eof(c));
    resp_free(&r);
    cl_close(c);
}

static void test_errors(void) {
    http_server_stats before, after;
    http_server_stats_get(g_srv->s, &before);
    const char *big_body = "POST /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n";
    expect_error(big_body, strlen(big_body), 413, "\"code\":\"request_too_large\"");
    char head[5000];
    memset(head, 'a', sizeof head);
    memcpy(head, "GET / HTTP/1.1\r\nX-Long: ", 24);
    expect_error(head, sizeof head, 431, "\"code\":\"headers_too_large\"");
    const char *bad = "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n";
    expect_error(bad, strlen(bad), 400, "\"code\":\"bad_request\"");
    const char *both = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    expect_error(both, strlen(both), 400, "Content-Length and Transfer-Encoding");
    const char *te = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
    expect_error(te, strlen(te), 501, "\"code\":\"not_implemented\"");
    const char *h2 = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    expect_error(h2, strlen(h2), 505, "\"code\":\"http_version_not_supported\"");
    http_server_stats_get(g_srv->s, &after);
    CHECK_EQ_INT(after.rejected - before.rejected, 6);
}

static void test_slow_client_408(void) {
    client *slow = cl();
    cl_puts(slow, "GET /echo HTTP/1.1\r\nHo");
    client *fast = cl();
    resp r = {0};
    cl_puts(fast, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(fast, &r), 200);
    CHECK_EQ_INT(slow->in.len, 0);
    CHECK_EQ_INT(read_resp(slow, &r), 408);
    CHECK_CONTAINS(r.body.data, "\"code\":\"request_timeout\"");
    CHECK(cl_eof(slow));
    /* A request completed in time on the fast connection is still fine. */
    cl_puts(fast, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(fast, &r), 200);
    resp_free(&r);
    cl_close(slow);
    cl_close(fast);
}

static void test_idle_timeout(void) {
    client *c = cl();
    resp r = {0};
    cl_puts(c, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK(cl_eof(c));   /* idle_timeout_ms is 1.5 s; the receive timeout 5 s */
    resp_free(&r);
    cl_close(c);
}

/* The idle timeout counts from the last response, not from the accept:
 * the connection's deadline moves later with each request while its timer
 * stays armed for the earlier one. */
static void test_idle_timeout_restarts_per_request(void) {
    client *c = cl();
    resp r = {0};
    usleep(1000000);
    cl_puts(c, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    resp_free(&r);
    usleep(1000000);    /* 2 s after the accept, 1 s after the response */
    cl_puts(c, "GET /echo HTTP/1.1\r\n\r\n");
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(read_resp(c, &r), 200);
    resp_free(&r);
    CHECK(cl_eof(c));   /* and it still ends, idle */
    cl_close(c);
}

static void test_streaming_chunked(void) {
    client *c = cl();
    resp r = {0};
    cl_puts(c, "GET /chunks HTTP/1.1\r\n\r\n");
    CHECK(cl_need(c, 1));
    while (!strstr(c->in.data, "0\r\n\r\n") && cl_fill(c) > 0) {}
    CHECK_CONTAINS(c->in.data, "Transfer-Encoding: chunked\r\n");
    CHECK_CONTAINS(c->in.data, "\r\n\r\nb\r\ndata: one\n\n\r\nb\r\ndata: two\n\n\r\n0\r\n\r\n");
    /* HEAD gets the GET headers and no body: the next response follows. */
    buf_clear(&c->in);
    cl_puts(c, "HEAD /echo HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_CONTAINS(r.head, "Content-Length: 14\r\n");
    CHECK_EQ_INT(r.body.len, 14);
    CHECK_STR(r.body.data, "HTTP/1.1 200 O");
    resp_free(&r);
    cl_close(c);
}

static void test_backpressure(void) {
    atomic_store(&g_big_sent, 0);
    client *c = cl_open_rcvbuf(g_srv->port, 65536);
    resp r = {0};
    cl_puts(c, "GET /bigstream HTTP/1.1\r\n\r\n");
    usleep(200000);   /* let the socket buffers fill: the server must wait */
    CHECK_EQ_INT(atomic_load(&g_big_sent), 0);
    CHECK_EQ_INT(read_resp(c, &r), 200);
    CHECK_EQ_INT(r.body.len, BIG_STREAM);
    int pattern_ok = 1;
    for (size_t i = 0; i < r.body.len; i++)
        if (r.body.data[i] != (char)('a' + i % 26)) {
            pattern_ok = 0;
            break;
        }
    CHECK(pattern_ok);
    CHECK(atomic_load(&g_drains) > 0);
    resp_free(&r);
    cl_close(c);
}

static int wait_int(atomic_int *v, int want) {
    for (int i = 0; i < 300 && atomic_load(v) < want; i++) usleep(10000);
    return atomic_load(v) >= want;
}

static void test_abort_mid_stream(void) {
    int before = atomic_load(&g_aborts);
    client *c = cl();
    cl_puts(c, "GET /slowstream HTTP/1.1\r\n\r\n");
    while (!strstr(c->in.data ? c->in.data : "", "first\n") && cl_fill(c) > 0) {}
    CHECK_CONTAINS(c->in.data, "first\n");
    cl_close(c);
    CHECK(wait_int(&g_aborts, before + 1));
    /* Closed while the handler still held the exchange. */
    c = cl();
    cl_puts(c, "GET /hang HTTP/1.1\r\n\r\n");
    usleep(50000);
    cl_close(c);
    CHECK(wait_int(&g_aborts, before + 2));
}

static void test_max_connections(void) {
    srv *v = srv_start(1);
    client *a = cl_open(v->port);
    resp r = {0};
    cl_puts(a, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(a, &r), 200);
    client *b = cl_open(v->port);
    CHECK_EQ_INT(read_resp(b, &r), 503);
    CHECK_CONTAINS(r.body.data, "server_busy");
    http_server_stats st;
    http_server_stats_get(v->s, &st);
    CHECK_EQ_INT(st.connections, 1);
    CHECK_EQ_INT(st.rejected, 1);
    CHECK_EQ_INT(st.requests, 1);
    /* Closing the server aborts a pending exchange and still completes. */
    int before = atomic_load(&g_aborts);
    cl_puts(a, "GET /hang HTTP/1.1\r\n\r\n");
    usleep(50000);
    srv_stop(v);
    CHECK_EQ_INT(atomic_load(&g_aborts), before + 1);
    resp_free(&r);
    cl_close(a);
    cl_close(b);
}

static void count_done(void *ud) { (*(int *)ud)++; }

static void test_reuseport(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    http_server *a = http_server_new(&loop, NULL, handler, NULL);
    http_server *b = http_server_new(&loop, NULL, handler, NULL);
    http_server *c = http_server_new(&loop, NULL, handler, NULL);
    if (g_batch) http_server_batch_writes(a); /* its handles close with it */
    CHECK_EQ_INT(http_server_listen(a, "127.0.0.1", 0, 1), 0);
    int port = http_server_port(a);
    CHECK_EQ_INT(http_server_listen(b, "127.0.0.1", port, 1), 0);
    CHECK_EQ_INT(http_server_port(b), port);
    CHECK_EQ_INT(http_server_listen(c, "127.0.0.1", port, 0), UV_EADDRINUSE);
    int done = 0;
    http_server_close(a, count_done, &done);
    http_server_close(b, count_done, &done);
    http_server_close(c, count_done, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(done, 3);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* --- WebSocket tests --- */

static void ws_send(client *c, int b0, const void *data, size_t len, int masked) {
    static const uint8_t mask[4] = {1, 2, 3, 4};
    uint8_t h[WS_FRAME_HEAD_MAX];
    size_t hl = ws_frame_head(h, 0, 0, len);
    h[0] = (uint8_t)b0;
    buf f = BUF_INIT;
    if (masked) h[1] |= 0x80;
    buf_append(&f, h, hl);
    if (masked) buf_append(&f, mask, 4);
    size_t at = f.len;
    buf_append(&f, data, len);
    if (masked) ws_mask((uint8_t *)f.data + at, len, mask, 0);
    cl_send(c, f.data, f.len);
    buf_free(&f);
}

/* Reads one server frame: returns its opcode (-1 on failure), payload in out. */
static int ws_recv(client *c, buf *out) {
    ws_frame f;
    int rc;
    while ((rc = ws_frame_parse((const uint8_t *)c->in.data, c->in.len, &f)) == 0)
        if (cl_fill(c) <= 0) return -1;
    if (rc < 0 || f.masked || !f.fin || !cl_need(c, f.head_len + f.len)) return -1;
    buf_clear(out);
    buf_append(out, c->in.data + f.head_len, (size_t)f.len);
    buf_consume(&c->in, f.head_len + (size_t)f.len);
    return f.opcode;
}

static client *ws_open_rcvbuf(int rcvbuf) {
    client *c = cl_open_rcvbuf(g_srv->port, rcvbuf);
    resp r = {0};
    cl_puts(c, "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 101);
    CHECK_CONTAINS(r.head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n");
    CHECK_CONTAINS(r.head, "Upgrade: websocket\r\n");
    resp_free(&r);
    return c;
}

static client *ws_open(void) { return ws_open_rcvbuf(0); }

static void test_ws_echo_ping_fragments(void) {
    int closed_before = atomic_load(&g_ws_closed);
    client *c = ws_open();
    buf m = BUF_INIT;
    ws_send(c, 0x81, "hello", 5, 1);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_TEXT);
    CHECK_STR(m.data, "hello");
    ws_send(c, 0x89, "png", 3, 1);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_PONG);
    CHECK_STR(m.data, "png");
    ws_send(c, 0x01, "frag", 4, 1);
    ws_send(c, 0x89, "", 0, 1);   /* control frame between fragments */
    ws_send(c, 0x00, "men", 3, 1);
    ws_send(c, 0x80, "ted", 3, 1);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_PONG);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_TEXT);
    CHECK_STR(m.data, "fragmented");
    size_t big = 70 * 1024;
    char *text = malloc(big);
    for (size_t i = 0; i < big; i++) text[i] = (char)('A' + i % 23);
    ws_send(c, 0x81, text, big, 1);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_TEXT);
    CHECK_EQ_INT(m.len, big);
    CHECK(m.len == big && memcmp(m.data, text, big) == 0);
    free(text);
    ws_send(c, 0x88, "\x03\xe8" "done", 6, 1);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_CLOSE);
    CHECK_EQ_INT(m.len, 2);
    CHECK(m.len == 2 && (uint8_t)m.data[0] == 0x03 && (uint8_t)m.data[1] == 0xe8);
    CHECK(cl_eof(c));
    cl_close(c);
    CHECK(wait_int(&g_ws_closed, closed_before + 1));
    buf_free(&m);
}

static void test_ws_server_close(void) {
    int closed_before = atomic_load(&g_ws_closed);
    client *c = ws_open();
    buf m = BUF_INIT;
    ws_send(c, 0x81, "close-me", 8, 1);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_CLOSE);
    CHECK(m.len == 5 && memcmp(m.data, "\x03\xe8" "bye", 5) == 0);
    ws_send(c, 0x88, m.data, 2, 1);
    CHECK(cl_eof(c));
    cl_close(c);
    CHECK(wait_int(&g_ws_closed, closed_before + 1));
    buf_free(&m);
}

static void test_ws_backpressure(void) {
    client *c = ws_open_rcvbuf(65536);
    buf m = BUF_INIT;
    ws_send(c, 0x81, "flood", 5, 1);
    size_t total = 0;
    int ok = 1;
    while (total < BIG_STREAM && ok) {
        ok = ws_recv(c, &m) == WS_OP_TEXT && m.len == 65536 && m.data[0] == 'f' && m.data[65535] == 'f';
        total += m.len;
    }
    CHECK(ok);
    CHECK_EQ_INT(total, BIG_STREAM);
    CHECK(atomic_load(&g_ws_drains) > 0);
    buf_free(&m);
    cl_close(c);
}

static void expect_ws_close_code(int b0, const void *data, size_t len, int masked, int code) {
    client *c = ws_open();
    buf m = BUF_INIT;
    ws_send(c, b0, data, len, masked);
    CHECK_EQ_INT(ws_recv(c, &m), WS_OP_CLOSE);
    CHECK(m.len >= 2);
    if (m.len >= 2) CHECK_EQ_INT((uint8_t)m.data[0] << 8 | (uint8_t)m.data[1], code);
    CHECK(cl_eof(c));
    buf_free(&m);
    cl_close(c);
}

static void test_ws_protocol_errors(void) {
    expect_ws_close_code(0x81, "unmasked", 8, 0, 1002);
    expect_ws_close_code(0x81, "\xc3\x28", 2, 1, 1007);
    expect_ws_close_code(0x83, "x", 1, 1, 1002);
    char *huge = calloc(1, 100001);
    expect_ws_close_code(0x82, huge, 100001, 1, 1009);
    free(huge);
}

static void test_ws_bad_handshake(void) {
    client *c = cl();
    resp r = {0};
    cl_puts(c, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 426);
    CHECK_CONTAINS(r.head, "Sec-WebSocket-Version: 13\r\n");
    cl_puts(c, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 400);
    cl_puts(c, "GET /ws HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(read_resp(c, &r), 400);
    resp_free(&r);
    cl_close(c);
}

static void run_all(const char *mode) {
    char name[80];
#define RUN(fn) (snprintf(name, sizeof name, "%s/%s", mode, #fn), test_run(name, fn))
    g_srv = srv_start(100);
    RUN(test_keep_alive);
    RUN(test_http10);
    RUN(test_pipelining);
    RUN(test_chunked_request);
    RUN(test_expect_continue);
    RUN(test_errors);
    RUN(test_slow_client_408);
    RUN(test_streaming_chunked);
    RUN(test_backpressure);
    RUN(test_abort_mid_stream);
    RUN(test_ws_echo_ping_fragments);
    RUN(test_ws_server_close);
    RUN(test_ws_backpressure);
    RUN(test_ws_protocol_errors);
    RUN(test_ws_bad_handshake);
    RUN(test_idle_timeout);
    RUN(test_idle_timeout_restarts_per_request);
    RUN(test_max_connections);
    RUN(test_reuseport);
    srv_stop(g_srv);
#undef RUN
}

/* Everything twice: output written at once, and batched to the end of the
 * loop phase (http_server_batch_writes, as the gateway does), which must
 * change nothing a client can see. */
int main(void) {
    run_all("direct");
    g_batch = 1;
    run_all("batched");
    return test_done();
}
