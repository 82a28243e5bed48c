/* test_net_http_client: the HTTP client against a tiny raw TCP server
 * (plain sockets, one thread per connection) that sends canned bytes, so
 * every failure mode (refused, reset, stall, garbage) is produced exactly.
 *
 * The common cases run twice: with our own client (http:// by default) and
 * with libcurl (MSOA_HTTP_CLIENT=curl, the path https:// takes). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "net/http_client.h"
#include "testlib.h"

/* --- the canned server ---------------------------------------------------- */

#define MAX_CONNS 256
#define BIG_LEN (16u << 20)

static struct {
    int lfd, port;
    pthread_t acceptor;
    pthread_t conns[MAX_CONNS];
    int n_conns;
    pthread_mutex_t mu;
    atomic_int accepted;
    atomic_int peer_closed; /* connections the client closed while we waited */
    atomic_long big_sent;
    atomic_int busy, max_busy; /* /slow requests being answered now, and the most at once */
    atomic_int slow_seq;       /* /slow answers so far: the n-th gets body "n" */
    sem_t go;               /* /chunked: the client saw the first piece */
} srv;

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_str(int fd, const char *s) { return send_all(fd, s, strlen(s)); }

/* Reads one request (path, body, X-Echo value); -1 at EOF. */
static int read_request(int fd, buf *in, char path[256], buf *body, char *echo, size_t echo_cap) {
    for (;;) {
        char *end = in->data ? strstr(in->data, "\r\n\r\n") : NULL;
        if (end) {
            size_t head = (size_t)(end - in->data) + 4;
            size_t clen = 0;
            const char *cl = strcasestr(in->data, "\r\ncontent-length:");
            if (cl && cl < end) clen = strtoul(cl + 17, NULL, 10);
            echo[0] = '\0';
            const char *x = strcasestr(in->data, "\r\nx-echo:");
            if (x && x < end) {
                x += 9;
                while (*x == ' ') x++;
                size_t n = strcspn(x, "\r");
                if (n >= echo_cap) n = echo_cap - 1;
                memcpy(echo, x, n);
                echo[n] = '\0';
            }
            if (in->len >= head + clen) {
                sscanf(in->data, "%*s %255s", path);
                buf_clear(body);
                buf_append(body, in->data + head, clen);
                buf_consume(in, head + clen);
                return 0;
            }
        }
        char tmp[65536];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        buf_append(in, tmp, (size_t)r);
    }
}

/* Blocks until the client closes the connection. */
static void wait_peer_close(int fd) {
    char tmp[4096];
    for (;;) {
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
    }
    atomic_fetch_add(&srv.peer_closed, 1);
}

static void send_big(int fd) {
    char head[128];
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", BIG_LEN);
    if (send_str(fd, head)) return;
    static char block[65536];
    for (unsigned off = 0; off < BIG_LEN; off += sizeof block) {
        for (unsigned i = 0; i < sizeof block; i++) block[i] = (char)((off + i) % 251);
        if (send_all(fd, block, sizeof block)) return;
        atomic_fetch_add(&srv.big_sent, (long)sizeof block);
    }
}

static void send_big_head(int fd) {
    buf h = BUF_INIT;
    buf_puts(&h, "HTTP/1.1 200 OK\r\n");
    while (h.len < (70u << 10)) buf_puts(&h, "X-Filler: 0123456789012345678901234567890123456789\r\n");
    buf_puts(&h, "Content-Length: 2\r\n\r\nok");
    send_all(fd, h.data, h.len);
    buf_free(&h);
}

/* Answers one request; returns 0 to keep the connection, -1 to close it. */
static int answer(int fd, const char *path, const buf *body, const char *echo) {
    char head[512];
    if (!strcmp(path, "/hello") || !strcmp(path, "/drop-next")) {
        return send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test:  yes \r\n\r\nhello");
    } else if (!strcmp(path, "/echo")) {
        snprintf(head, sizeof head, "HTTP/1.1 201 Created\r\nContent-Length: %zu\r\nX-Echoed: %s\r\n\r\n",
                 body->len, echo);
        if (send_str(fd, head)) return -1;
        return send_all(fd, body->data ? body->data : "", body->len);
    } else if (!strcmp(path, "/chunked")) {
        if (send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")) return -1;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        while (sem_timedwait(&srv.go, &ts) < 0 && errno == EINTR) {}
        return send_str(fd, "6\r\nsecond\r\n0\r\n\r\n");
    } else if (!strcmp(path, "/reset")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
        struct linger lg = {1, 0}; /* close with RST */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        return -1;
    } else if (!strcmp(path, "/close")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n");
        return -1;
    } else if (!strcmp(path, "/stall")) {
        if (send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ntick\r\n")) return -1;
        wait_peer_close(fd);
        return -1;
    } else if (!strcmp(path, "/big")) {
        send_big(fd);
        return -1;
    } else if (!strcmp(path, "/garbage")) {
        send_str(fd, "this is not http at all\r\n\r\n");
        return -1;
    } else if (!strcmp(path, "/drop")) {
        return -1; /* closes without a byte of answer */
    } else if (!strcmp(path, "/interim")) {
        return send_str(fd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                            "X-Final: 1\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n");
    } else if (!strcmp(path, "/until-close")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nX-Test: close\r\n\r\nbody until close");
        return -1;
    } else if (!strcmp(path, "/close-after")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        return -1;
    } else if (!strcmp(path, "/slow")) { /* 30 ms of work; counts how many run at once */
        int now = atomic_fetch_add(&srv.busy, 1) + 1;
        for (int m = atomic_load(&srv.max_busy); now > m && !atomic_compare_exchange_weak(&srv.max_busy, &m, now);) {}
        usleep(30000);
        atomic_fetch_sub(&srv.busy, 1);
        char n[16];
        snprintf(n, sizeof n, "%d", atomic_fetch_add(&srv.slow_seq, 1));
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(n), n);
        return send_str(fd, head);
    } else if (!strcmp(path, "/bighead")) {
        send_big_head(fd);
        return -1;
    }
    return send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
}

static void *conn_main(void *arg) {
    int fd = (int)(intptr_t)arg;
    buf in = BUF_INIT, body = BUF_INIT;
    char path[256], echo[128];
    int drop = 0; /* /drop-next: the next request on this connection finds it closed */
    while (!drop && read_request(fd, &in, path, &body, echo, sizeof echo) == 0) {
        if (answer(fd, path, &body, echo) < 0) break;
        drop = !strcmp(path, "/drop-next");
        if (drop) read_request(fd, &in, path, &body, echo, sizeof echo);
    }
    close(fd);
    buf_free(&in);
    buf_free(&body);
    return NULL;
}

static void *acceptor_main(void *arg) {
    (void)arg;
    for (;;) {
        int fd = accept(srv.lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return NULL; /* shutdown() by srv_stop */
        }
        atomic_fetch_add(&srv.accepted, 1);
        pthread_mutex_lock(&srv.mu);
        if (srv.n_conns < MAX_CONNS &&
            pthread_create(&srv.conns[srv.n_conns], NULL, conn_main, (void *)(intptr_t)fd) == 0)
            srv.n_conns++;
        else
            close(fd);
        pthread_mutex_unlock(&srv.mu);
    }
}

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 256) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        abort();
    *port = ntohs(a.sin_port);
    return fd;
}

static void srv_start(void) {
    srv.n_conns = 0;
    atomic_store(&srv.accepted, 0);
    atomic_store(&srv.peer_closed, 0);
    atomic_store(&srv.big_sent, 0);
    atomic_store(&srv.busy, 0);
    atomic_store(&srv.max_busy, 0);
    atomic_store(&srv.slow_seq, 0);
    pthread_mutex_init(&srv.mu, NULL);
    sem_init(&srv.go, 0, 0);
    srv.lfd = listen_any(&srv.port);
    if (pthread_create(&srv.acceptor, NULL, acceptor_main, NULL)) abort();
}

/* Call after the client is freed, so every connection thread sees EOF. */
static void srv_stop(void) {
    shutdown(srv.lfd, SHUT_RDWR);
    pthread_join(srv.acceptor, NULL);
    close(srv.lfd);
    for (int i = 0; i < srv.n_conns; i++) pthread_join(srv.conns[i], NULL);
    sem_destroy(&srv.go);
    pthread_mutex_destroy(&srv.mu);
}

static const char *url(const char *path) {
    static char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d%s", srv.port, path);
    return u;
}

/* --- loop plumbing --------------------------------------------------------- */

static uv_loop_t loop;
static http_client *client;
static uv_timer_t guard;

static void guard_tick(uv_timer_t *t) { (void)t; }

static void setup(void) {
    srv_start();
    uv_loop_init(&loop);
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, guard_tick, 20, 20); /* bounds every UV_RUN_ONCE */
    client = http_client_new(&loop);
    CHECK(client != NULL);
}

/* Runs the loop until *flag is set or ms pass; returns whether it was set. */
static int run_until(const atomic_int *flag, unsigned ms) {
    uint64_t end = uv_now(&loop) + ms;
    while (!atomic_load(flag) && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    return atomic_load(flag) != 0;
}

static void run_for(unsigned ms) {
    atomic_int never = 0;
    run_until(&never, ms);
}

static void teardown(void) {
    http_client_free(client);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    srv_stop();
}

/* One call's record. */
typedef struct rec {
    http_call *call;
    int status, headers_calls, data_calls, done_calls;
    atomic_int finished;
    enum http_call_error err;
    char msg[512];
    buf body;
    char x_test[32], ctype[32], echoed[64];
    int x_missing;
    int headers_before_done;
    /* hooks */
    int cancel_on_data, pause_on_data, data_after_pause;
    int paused;
} rec;

static void r_headers(http_call *c, int status, void *ud) {
    rec *r = ud;
    r->status = status;
    r->headers_calls++;
    const char *v = http_call_header(c, "x-test");
    snprintf(r->x_test, sizeof r->x_test, "%s", v ? v : "(null)");
    v = http_call_header(c, "CONTENT-length");
    snprintf(r->ctype, sizeof r->ctype, "%s", v ? v : "(null)");
    r->x_missing = http_call_header(c, "x-nope") == NULL;
    v = http_call_header(c, "x-echoed");
    snprintf(r->echoed, sizeof r->echoed, "%s", v ? v : "(null)");
}

static void r_data(http_call *c, const char *d, size_t n, void *ud) {
    rec *r = ud;
    r->data_calls++;
    if (r->paused) r->data_after_pause++;
    buf_append(&r->body, d, n);
    if (r->cancel_on_data) http_call_cancel(c);
    if (r->pause_on_data && r->data_calls == 1) {
        http_call_pause(c, 1);
        r->paused = 1;
    }
}

static void r_done(http_call *c, enum http_call_error err, const char *msg, void *ud) {
    rec *r = ud;
    (void)c;
    r->done_calls++;
    r->err = err;
    r->headers_before_done = r->headers_calls;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "(null)");
    atomic_store(&r->finished, 1);
}

static http_call *start(rec *r, const char *method, const char *u, const char *body, http_call_opts *extra) {
    http_call_opts o = extra ? *extra : (http_call_opts){0};
    o.method = method;
    o.url = u;
    if (body) {
        o.body = body;
        o.body_len = strlen(body);
    }
    o.on_headers = r_headers;
    o.on_data = r_data;
    o.on_done = r_done;
    o.ud = r;
    r->call = http_client_start(client, &o);
    CHECK(r->call != NULL);
    return r->call;
}

/* --- cases ---------------------------------------------------------------- */

static void test_content_length(void) {
    setup();
    rec r = {0};
    start(&r, "GET", url("/hello"), NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    CHECK_STR(r.msg, "ok");
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.headers_calls, 1);
    CHECK_EQ_INT(r.headers_before_done, 1);
    CHECK_EQ_INT(r.done_calls, 1);
    CHECK_STR(r.body.data, "hello");
    CHECK_STR(r.x_test, "yes");
    CHECK_STR(r.ctype, "5");
    CHECK(r.x_missing);
    buf_free(&r.body);
    teardown();
}

static void test_post_echo_and_headers_sent(void) {
    setup();
    rec r = {0};
    const char *hdrs[] = {"X-Echo: sent-by-client", "Content-Type: application/json", NULL};
    http_call_opts o = {.headers = hdrs};
    start(&r, "POST", url("/echo"), "{\"model\":\"m\"}", &o);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    CHECK_EQ_INT(r.status, 201);
    CHECK_STR(r.body.data, "{\"model\":\"m\"}");
    CHECK_STR(r.echoed, "sent-by-client");
    buf_free(&r.body);
    teardown();
}

/* Sequential calls from inside on_done reuse one keep-alive connection. */
static int chain_left;
static rec chain_rec;

static void chain_done(http_call *c, enum http_call_error err, const char *msg, void *ud) {
    r_done(c, err, msg, ud);
    if (err != HTTP_CALL_OK || --chain_left == 0) return;
    atomic_store(&chain_rec.finished, 0);
    http_call_opts o = {.url = url("/hello"), .on_headers = r_headers, .on_data = r_data,
                        .on_done = chain_done, .ud = &chain_rec};
    CHECK(http_client_start(client, &o) != NULL);
    /* the next call took the connection: this call's head is still ours */
    const char *v = http_call_header(c, "X-Test");
    CHECK_STR(v, "yes");
}

static void test_keepalive_reuse(void) {
    setup();
    memset(&chain_rec, 0, sizeof chain_rec);
    chain_left = 5;
    http_call_opts o = {.url = url("/hello"), .on_headers = r_headers, .on_data = r_data,
                        .on_done = chain_done, .ud = &chain_rec};
    CHECK(http_client_start(client, &o) != NULL);
    uint64_t end = uv_now(&loop) + 5000;
    while (chain_left > 0 && chain_rec.err == HTTP_CALL_OK && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ_INT(chain_left, 0);
    CHECK_EQ_INT(chain_rec.done_calls, 5);
    CHECK_STR(chain_rec.body.data, "hellohellohellohellohello");
    CHECK_EQ_INT(atomic_load(&srv.accepted), 1);
    buf_free(&chain_rec.body);
    teardown();
}

/* A call started from inside another call's on_headers (curl is running). */
static rec inner_rec;

static void outer_headers(http_call *c, int status, void *ud) {
    r_headers(c, status, ud);
    start(&inner_rec, "POST", url("/echo"), "inner", NULL);
}

static void test_start_from_callback(void) {
    setup();
    memset(&inner_rec, 0, sizeof inner_rec);
    rec r = {0};
    http_call_opts o = {.url = url("/hello"), .on_headers = outer_headers, .on_data = r_data,
                        .on_done = r_done, .ud = &r};
    CHECK(http_client_start(client, &o) != NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK(run_until(&inner_rec.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    CHECK_EQ_INT(inner_rec.err, HTTP_CALL_OK);
    CHECK_STR(inner_rec.body.data, "inner");
    buf_free(&r.body);
    buf_free(&inner_rec.body);
    teardown();
}

/* The first piece reaches on_data while the server still holds the rest. */
static void chunk_data(http_call *c, const char *d, size_t n, void *ud) {
    rec *r = ud;
    r_data(c, d, n, ud);
    if (r->data_calls == 1) {
        CHECK_EQ_INT(r->done_calls, 0);
        CHECK_STR(r->body.data, "first");
        sem_post(&srv.go);
    }
}

static void test_chunked_incremental(void) {
    setup();
    rec r = {0};
    http_call_opts o = {.url = url("/chunked"), .on_headers = r_headers, .on_data = chunk_data,
                        .on_done = r_done, .ud = &r};
    CHECK(http_client_start(client, &o) != NULL);
    CHECK(run_until(&r.finished, 8000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    CHECK(r.data_calls >= 2);
    CHECK_STR(r.body.data, "firstsecond");
    CHECK_STR(r.x_test, "(null)");
    buf_free(&r.body);
    teardown();
}

static void test_connect_refused(void) {
    setup();
    int port;
    close(listen_any(&port)); /* a port nobody listens on */
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", port);
    rec r = {0};
    start(&r, "GET", u, NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_CONNECT);
    CHECK_EQ_INT(r.headers_calls, 0);
    CHECK(strlen(r.msg) > 5);
    CHECK_STR(http_call_error_name(r.err), "connect");
    teardown();
}

static void test_reset_mid_body(void) {
    setup();
    rec r = {0}, r2 = {0};
    start(&r, "GET", url("/reset"), NULL, NULL);
    start(&r2, "GET", url("/close"), NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK(run_until(&r2.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_RESET); /* the RST may even beat the head: no status check */
    CHECK_EQ_INT(r2.err, HTTP_CALL_RESET);
    CHECK_STR(r2.body.data, "0123456789");
    buf_free(&r.body);
    buf_free(&r2.body);
    teardown();
}

/* A listener whose accept queue is full drops SYNs: the connect hangs
 * until the connect timeout. */
static void test_connect_timeout(void) {
    setup();
    int port, lfd = listen_any(&port);
    if (listen(lfd, 0)) abort();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof a); /* EINPROGRESS, or queued */
    }
    run_for(100);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", port);
    rec r = {0};
    http_call_opts o = {.connect_timeout_ms = 200};
    start(&r, "GET", u, NULL, &o);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_TIMEOUT);
    CHECK_CONTAINS(r.msg, "connect"); /* the connect timeout, not another */
    CHECK_EQ_INT(r.headers_calls, 0);
    for (int i = 0; i < 4; i++) close(fill[i]);
    close(lfd);
    teardown();
}

static void test_garbage_reply(void) {
    setup();
    rec r = {0};
    start(&r, "GET", url("/garbage"), NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_PROTOCOL);
    teardown();
}

static void test_stall_timeout(void) {
    setup();
    rec r = {0}, t = {0};
    http_call_opts o = {.stall_timeout_ms = 150};
    start(&r, "GET", url("/stall"), NULL, &o);
    http_call_opts o2 = {.total_timeout_ms = 150};
    start(&t, "GET", url("/stall"), NULL, &o2);
    uint64_t t0 = uv_now(&loop);
    CHECK(run_until(&r.finished, 5000));
    CHECK(uv_now(&loop) - t0 >= 150);
    CHECK_EQ_INT(r.err, HTTP_CALL_TIMEOUT);
    CHECK_CONTAINS(r.msg, "150 ms");
    CHECK_STR(r.body.data, "tick");
    CHECK(run_until(&t.finished, 5000));
    CHECK_EQ_INT(t.err, HTTP_CALL_TIMEOUT);
    /* both connections were closed by the client */
    uint64_t end = uv_now(&loop) + 5000;
    while (atomic_load(&srv.peer_closed) < 2 && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ_INT(atomic_load(&srv.peer_closed), 2);
    buf_free(&r.body);
    buf_free(&t.body);
    teardown();
}

static void test_cancel_mid_stream(void) {
    setup();
    /* from inside on_data */
    rec r = {0};
    r.cancel_on_data = 1;
    start(&r, "GET", url("/stall"), NULL, NULL);
    uint64_t end = uv_now(&loop) + 5000;
    while (atomic_load(&srv.peer_closed) < 1 && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ_INT(atomic_load(&srv.peer_closed), 1);
    CHECK_EQ_INT(r.data_calls, 1);
    /* from outside any callback */
    rec r2 = {0};
    http_call_opts o = {.stall_timeout_ms = 100};
    start(&r2, "GET", url("/stall"), NULL, &o);
    end = uv_now(&loop) + 5000;
    while (r2.data_calls == 0 && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ_INT(r2.data_calls, 1);
    http_call_cancel(r2.call);
    end = uv_now(&loop) + 5000;
    while (atomic_load(&srv.peer_closed) < 2 && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ_INT(atomic_load(&srv.peer_closed), 2);
    run_for(200); /* longer than the stall timeout: its timer must be gone too */
    CHECK_EQ_INT(r.done_calls + r2.done_calls, 0);
    CHECK_EQ_INT(r.data_calls + r2.data_calls, 2);
    buf_free(&r.body);
    buf_free(&r2.body);
    teardown();
}

/* Freeing the client with calls open cancels them without callbacks. */
static void test_free_with_open_calls(void) {
    setup();
    rec r[3] = {{0}};
    for (int i = 0; i < 3; i++) start(&r[i], "GET", url("/stall"), NULL, NULL);
    uint64_t end = uv_now(&loop) + 5000;
    while (r[0].data_calls + r[1].data_calls + r[2].data_calls < 3 && uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    teardown(); /* joins the server threads: only returns if the sockets closed */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(r[i].done_calls, 0);
        buf_free(&r[i].body);
    }
}

static void check_pattern(const buf *b) {
    CHECK_EQ_INT(b->len, BIG_LEN);
    size_t bad = 0;
    for (size_t i = 0; i < b->len; i++)
        if ((unsigned char)b->data[i] != i % 251) bad++;
    CHECK_EQ_INT(bad, 0);
}

static rec pause_rec;
static long sent_while_paused;

static void unpause_cb(uv_timer_t *t) {
    (void)t;
    sent_while_paused = atomic_load(&srv.big_sent);
    pause_rec.paused = 0;
    if (!atomic_load(&pause_rec.finished)) http_call_pause(pause_rec.call, 0); /* else: failed already */
}

static void test_pause_backpressure(void) {
    setup();
    memset(&pause_rec, 0, sizeof pause_rec);
    pause_rec.pause_on_data = 1;
    start(&pause_rec, "GET", url("/big"), NULL, NULL);
    uint64_t end = uv_now(&loop) + 5000;
    while (!pause_rec.paused && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK(pause_rec.paused);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, unpause_cb, 300, 0);
    CHECK(run_until(&pause_rec.finished, 20000));
    CHECK_EQ_INT(pause_rec.err, HTTP_CALL_OK);
    CHECK_EQ_INT(pause_rec.data_after_pause, 0);
    /* the server could not push everything while we were not reading */
    CHECK(sent_while_paused < (long)BIG_LEN);
    check_pattern(&pause_rec.body);
    uv_close((uv_handle_t *)&t, NULL);
    buf_free(&pause_rec.body);
    teardown();
}

/* One wave of N concurrent calls; returns how many succeeded with their body. */
static int echo_wave(int n) {
    static rec r[64];
    static char bodies[64][32];
    memset(r, 0, sizeof r);
    for (int i = 0; i < n; i++) {
        snprintf(bodies[i], sizeof bodies[i], "call-%d", i);
        start(&r[i], "POST", url("/echo"), bodies[i], NULL);
    }
    uint64_t end = uv_now(&loop) + 10000;
    int done = 0;
    while (done < n && uv_now(&loop) < end) {
        uv_run(&loop, UV_RUN_ONCE);
        done = 0;
        for (int i = 0; i < n; i++) done += atomic_load(&r[i].finished);
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        ok += r[i].err == HTTP_CALL_OK && r[i].body.data && !strcmp(r[i].body.data, bodies[i]);
        buf_free(&r[i].body);
    }
    return ok;
}

static void unpause_and_go(uv_timer_t *t) {
    pause_rec.paused = 0;
    if (!atomic_load(&pause_rec.finished)) http_call_pause(pause_rec.call, 0); /* else: failed already */
    sem_post(&srv.go);
    uv_close((uv_handle_t *)t, NULL);
}

/* Waiting while paused is ours, not the server's: no stall timeout. */
static void test_pause_is_not_a_stall(void) {
    setup();
    memset(&pause_rec, 0, sizeof pause_rec);
    pause_rec.pause_on_data = 1;
    http_call_opts o = {.stall_timeout_ms = 150};
    start(&pause_rec, "GET", url("/chunked"), NULL, &o);
    uint64_t end = uv_now(&loop) + 5000;
    while (!pause_rec.paused && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK(pause_rec.paused);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, unpause_and_go, 600, 0);
    CHECK(run_until(&pause_rec.finished, 5000));
    CHECK_EQ_INT(pause_rec.err, HTTP_CALL_OK);
    CHECK_STR(pause_rec.body.data, "firstsecond");
    CHECK_EQ_INT(pause_rec.data_after_pause, 0);
    buf_free(&pause_rec.body);
    teardown();
}

static void test_many_concurrent(void) {
    setup();
    CHECK_EQ_INT(echo_wave(50), 50);
    int first = atomic_load(&srv.accepted);
    CHECK(first >= 1 && first <= 50);
    /* the second burst finds the first one's connections still open */
    CHECK_EQ_INT(echo_wave(50), 50);
    CHECK_EQ_INT(atomic_load(&srv.accepted), first);
    teardown();
}

static void test_invalid_options(void) {
    setup();
    rec r = {0};
    http_call_opts o = {.on_done = r_done, .ud = &r};
    CHECK(http_client_start(client, &o) == NULL);
    o.url = "ftp://127.0.0.1/x";
    CHECK(http_client_start(client, &o) == NULL);
    o.url = url("/hello");
    o.on_done = NULL;
    CHECK(http_client_start(client, &o) == NULL);
    run_for(50);
    CHECK_EQ_INT(r.done_calls, 0);
    teardown();
}

/* A pooled connection the server closed as the next request went out: the
 * request is sent again on a fresh connection. */
static void test_stale_connection_retried(void) {
    setup();
    rec r = {0}, r2 = {0};
    start(&r, "GET", url("/drop-next"), NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    start(&r2, "POST", url("/echo"), "again", NULL);
    CHECK(run_until(&r2.finished, 5000));
    CHECK_EQ_INT(r2.err, HTTP_CALL_OK);
    CHECK_STR(r2.body.data, "again");
    CHECK_EQ_INT(atomic_load(&srv.accepted), 2);
    buf_free(&r.body);
    buf_free(&r2.body);
    teardown();
}

/* On a fresh connection the same close is the server's failure: no retry. */
static void test_close_before_answer(void) {
    setup();
    rec r = {0};
    start(&r, "POST", url("/drop"), "x", NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_RESET);
    CHECK_EQ_INT(r.headers_calls, 0);
    CHECK_EQ_INT(atomic_load(&srv.accepted), 1);
    teardown();
}

static void test_interim_and_trailers(void) {
    setup();
    rec r = {0};
    start(&r, "GET", url("/interim"), NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.headers_calls, 1);
    CHECK_STR(r.body.data, "hello");
    buf_free(&r.body);
    teardown();
}

/* A body without length ends with the connection; Connection: close is
 * obeyed (the next call opens a new connection). */
static void test_body_until_close_and_connection_close(void) {
    setup();
    rec r = {0}, r2 = {0}, r3 = {0};
    start(&r, "GET", url("/until-close"), NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    CHECK_STR(r.body.data, "body until close");
    CHECK_STR(r.x_test, "close");
    start(&r2, "GET", url("/close-after"), NULL, NULL);
    CHECK(run_until(&r2.finished, 5000));
    CHECK_EQ_INT(r2.err, HTTP_CALL_OK);
    CHECK_STR(r2.body.data, "ok");
    start(&r3, "GET", url("/hello"), NULL, NULL);
    CHECK(run_until(&r3.finished, 5000));
    CHECK_EQ_INT(r3.err, HTTP_CALL_OK);
    CHECK_EQ_INT(atomic_load(&srv.accepted), 3);
    buf_free(&r.body);
    buf_free(&r2.body);
    buf_free(&r3.body);
    teardown();
}

/* A host name goes through the resolver (localhost may give ::1 first,
 * where nobody listens: the next address is tried). */
static void test_host_name(void) {
    setup();
    rec r = {0}, r2 = {0};
    char u[64];
    snprintf(u, sizeof u, "http://localhost:%d/hello", srv.port);
    start(&r, "GET", u, NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_OK);
    CHECK_STR(r.body.data, "hello");
    start(&r2, "GET", u, NULL, NULL); /* the cached address and the pooled connection */
    CHECK(run_until(&r2.finished, 5000));
    CHECK_EQ_INT(r2.err, HTTP_CALL_OK);
    CHECK_EQ_INT(atomic_load(&srv.accepted), 1);
    buf_free(&r.body);
    buf_free(&r2.body);
    teardown();
}

static void test_head_too_large(void) {
    setup();
    rec r = {0};
    start(&r, "GET", url("/bighead"), NULL, NULL);
    CHECK(run_until(&r.finished, 5000));
    CHECK_EQ_INT(r.err, HTTP_CALL_PROTOCOL);
    CHECK_CONTAINS(r.msg, "64 KB");
    teardown();
}

/* Cancelled while paused with bytes held back: nothing more is delivered. */
static void test_cancel_while_paused(void) {
    setup();
    memset(&pause_rec, 0, sizeof pause_rec);
    pause_rec.pause_on_data = 1;
    start(&pause_rec, "GET", url("/big"), NULL, NULL);
    uint64_t end = uv_now(&loop) + 5000;
    while (!pause_rec.paused && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    CHECK(pause_rec.paused);
    run_for(100);
    http_call_pause(pause_rec.call, 0); /* curl may deliver right here, ours on the next turn */
    http_call_cancel(pause_rec.call);
    int calls = pause_rec.data_calls;
    run_for(200);
    CHECK_EQ_INT(pause_rec.data_calls, calls);
    CHECK_EQ_INT(pause_rec.done_calls, 0);
    buf_free(&pause_rec.body);
    teardown();
}

static void test_invalid_headers(void) {
    setup();
    rec r = {0};
    const char *bad[] = {"X-Injected: a\r\nX-Other: b", NULL};
    const char *nocolon[] = {"NoColon", NULL};
    http_call_opts o = {.url = url("/hello"), .on_done = r_done, .ud = &r, .headers = bad};
    CHECK(http_client_start(client, &o) == NULL);
    o.headers = nocolon;
    CHECK(http_client_start(client, &o) == NULL);
    run_for(50);
    CHECK_EQ_INT(r.done_calls, 0);
    teardown();
}

/* --- the cap on a host's connections (our client only) --------------------- */

/* Beyond the cap, calls wait and all complete, on the cap's connections. */
static void test_cap_queues_and_all_complete(void) {
    setup();
    enum { N = 20 };
    rec r[N];
    memset(r, 0, sizeof r);
    http_call_opts o = {.max_connections = 3, .connect_timeout_ms = 5000, .stall_timeout_ms = 5000};
    for (int i = 0; i < N; i++) start(&r[i], "GET", url("/slow"), NULL, &o);
    for (int i = 0; i < N; i++) {
        CHECK(run_until(&r[i].finished, 10000));
        CHECK_EQ_INT(r[i].err, HTTP_CALL_OK);
        CHECK_EQ_INT(r[i].status, 200);
        buf_free(&r[i].body);
    }
    CHECK_EQ_INT(atomic_load(&srv.slow_seq), N);
    CHECK_EQ_INT(atomic_load(&srv.accepted), 3);
    CHECK_EQ_INT(atomic_load(&srv.max_busy), 3);
    teardown();
}

/* With one connection, waiting calls go first come first served; a call
 * cancelled while it waits never calls back and takes no turn. */
static void test_cap_fifo_and_cancel(void) {
    setup();
    enum { N = 5 };
    rec r[N];
    memset(r, 0, sizeof r);
    http_call_opts o = {.max_connections = 1};
    for (int i = 0; i < N; i++) start(&r[i], "GET", url("/slow"), NULL, &o);
    http_call_cancel(r[2].call);
    for (int i = 0; i < N; i++) {
        if (i == 2) continue;
        CHECK(run_until(&r[i].finished, 10000));
        CHECK_EQ_INT(r[i].err, HTTP_CALL_OK);
        char want[8];
        snprintf(want, sizeof want, "%d", i < 2 ? i : i - 1);
        CHECK_STR(r[i].body.data, want);
        buf_free(&r[i].body);
    }
    CHECK_EQ_INT(r[2].done_calls, 0);
    CHECK_EQ_INT(atomic_load(&srv.accepted), 1);
    CHECK_EQ_INT(atomic_load(&srv.slow_seq), N - 1);
    teardown();
}

/* A connection the server closes after its answer makes room for the next
 * waiting call on a new one. */
static void test_cap_room_from_closed(void) {
    setup();
    rec r[3];
    memset(r, 0, sizeof r);
    http_call_opts o = {.max_connections = 1};
    for (int i = 0; i < 3; i++) start(&r[i], "GET", url("/close-after"), NULL, &o);
    for (int i = 0; i < 3; i++) {
        CHECK(run_until(&r[i].finished, 5000));
        CHECK_EQ_INT(r[i].err, HTTP_CALL_OK);
        CHECK_STR(r[i].body.data, "ok");
        buf_free(&r[i].body);
    }
    CHECK_EQ_INT(atomic_load(&srv.accepted), 3);
    teardown();
}

/* A waiting call keeps its total deadline; its connect and stall deadlines
 * do not run while it waits. A call without a cap (a health probe) does not
 * wait behind capped ones, and the connection it leaves serves the next
 * waiting call. */
static void test_cap_deadline_while_waiting(void) {
    setup();
    rec hold = {0}, late = {0}, next = {0}, probe = {0};
    http_call_opts capped = {.max_connections = 1};
    start(&hold, "GET", url("/stall"), NULL, &capped);
    http_call_opts o = {.max_connections = 1, .connect_timeout_ms = 50, .stall_timeout_ms = 50,
                        .total_timeout_ms = 300};
    start(&late, "GET", url("/hello"), NULL, &o);
    CHECK(run_until(&late.finished, 5000));
    CHECK_EQ_INT(late.err, HTTP_CALL_TIMEOUT);
    CHECK_CONTAINS(late.msg, "no connection");
    CHECK_CONTAINS(late.msg, "300 ms");
    CHECK_EQ_INT(late.headers_calls, 0);
    start(&next, "GET", url("/hello"), NULL, &capped);
    start(&probe, "GET", url("/hello"), NULL, NULL);
    CHECK(run_until(&probe.finished, 5000));
    CHECK_EQ_INT(probe.err, HTTP_CALL_OK);
    CHECK(run_until(&next.finished, 5000));
    CHECK_EQ_INT(next.err, HTTP_CALL_OK);
    CHECK_STR(next.body.data, "hello");
    CHECK_EQ_INT(atomic_load(&srv.accepted), 2);
    CHECK_EQ_INT(hold.done_calls, 0);
    http_call_cancel(hold.call);
    buf_free(&hold.body);
    buf_free(&next.body);
    buf_free(&probe.body);
    teardown();
}

static void run_common(const char *impl) {
    char name[64];
#define COMMON(fn) (snprintf(name, sizeof name, "%s/%s", impl, #fn), test_run(name, fn))
    COMMON(test_content_length);
    COMMON(test_post_echo_and_headers_sent);
    COMMON(test_keepalive_reuse);
    COMMON(test_start_from_callback);
    COMMON(test_chunked_incremental);
    COMMON(test_connect_refused);
    COMMON(test_reset_mid_body);
    COMMON(test_garbage_reply);
    COMMON(test_connect_timeout);
    COMMON(test_stall_timeout);
    COMMON(test_cancel_mid_stream);
    COMMON(test_free_with_open_calls);
    COMMON(test_pause_backpressure);
    COMMON(test_pause_is_not_a_stall);
    COMMON(test_many_concurrent);
    COMMON(test_invalid_options);
    COMMON(test_stale_connection_retried);
    COMMON(test_interim_and_trailers);
    COMMON(test_body_until_close_and_connection_close);
    COMMON(test_host_name);
    COMMON(test_cancel_while_paused);
#undef COMMON
}

int main(void) {
    unsetenv("MSOA_HTTP_CLIENT");
    run_common("own");
    TEST(test_close_before_answer);   /* curl retries any connection once */
    TEST(test_head_too_large);        /* curl allows 100 KB */
    TEST(test_invalid_headers);       /* curl sends them as given */
    TEST(test_cap_queues_and_all_complete); /* curl's https:// calls have no cap */
    TEST(test_cap_fifo_and_cancel);
    TEST(test_cap_room_from_closed);
    TEST(test_cap_deadline_while_waiting);
    setenv("MSOA_HTTP_CLIENT", "curl", 1);
    run_common("curl");
    return test_done();
}
