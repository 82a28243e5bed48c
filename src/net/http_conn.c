/* http_conn: our own HTTP/1.1 client on libuv for plain http:// URLs (the
 * hconn side of http_client_impl.h).
 *
 * libcurl cost about 40% of the gateway's instructions per proxied request
 * and tens of KB per open stream, for features an upstream on plain
 * HTTP/1.1 does not need. This client does one request per connection at a
 * time, with keep-alive:
 *
 * - Hosts: one entry per host:port, holding its addresses (uv_getaddrinfo,
 *   cached DNS_TTL_MS; numeric addresses skip resolution), the calls waiting
 *   for a resolution and the idle connections (most recent first, at most
 *   MAX_IDLE_PER_HOST, closed after IDLE_TIMEOUT_MS by a periodic sweep).
 *   Entries live as long as the client: a gateway talks to the few
 *   upstreams of its configuration.
 * - A cap: a call may say how many connections its host may have open at
 *   most (a node serves only so many requests at once; every request in
 *   flight beyond that is a socket on both sides for nothing). Beyond it
 *   the call waits in the host's queue, first come first served, and takes
 *   the first connection a finished call hands back (before it goes idle)
 *   or the room a closed one leaves. While queued only its total deadline
 *   runs; the connect and stall deadlines start when it leaves.
 * - Connections: one uv_tcp_t with TCP_NODELAY. Reads land in one buffer
 *   shared by the whole client, because a read is consumed before the next
 *   one is made; only bytes held back by a paused call are copied, into the
 *   connection's own buffer (at most one read: READ_BUF_SIZE, small, as
 *   LLM streams come in small pieces). Idle connections keep reading, so a
 *   close by the server is seen at once.
 * - Calls: the call, its timer and a buffer for its request head and body,
 *   written with one uv_try_write (uv_write for what does not fit) once
 *   the loop's phase that made it ends (a uv_check after the I/O
 *   callbacks, a uv_prepare before the loop blocks): requests made from
 *   one poll's events leave together, so a busy server wakes once for them
 *   all, not once for each (on a loaded gateway, waking peers was much of
 *   the kernel's time). One
 *   timer per call carries the connect, total and stall deadlines
 *   (checked when it fires: a byte does not re-arm it) and the work
 *   deferred to the next loop turn: delivering what a pause held back, and
 *   reporting a failure met inside http_client_start, which must not call
 *   back. A finished call is kept for the next one with its timer
 *   initialised and its request buffer (at most MAX_SPARE_CALLS): a
 *   timer's init, close and close callback, and two allocations, were a
 *   cost of every request.
 *
 * Callbacks may cancel, pause or start calls. A finished call is reused
 * only after the loop's phase that finished it (in the send phase), and a
 * connection is freed only by its handle's close callback, so both stay
 * readable until the stack that ran the callback unwinds; after each
 * callback the delivery loop checks the call still owns the connection.
 *
 * A request sent on a reused keep-alive connection that turns out closed
 * (EOF, reset or failed write before any byte of the response) is sent
 * again, once, on a fresh connection: the server closed an idle connection
 * as ours went out. As in browsers and curl this is done for POST too. It
 * is sound because nothing of an answer arrived and the connection had
 * served before; a server that died while processing exactly that request
 * would see it twice, which for an LLM call costs tokens, not correctness. */
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "net/http_client_impl.h"
#include "net/http_response_parse.h"

#define MAX_IDLE_PER_HOST 256
#define IDLE_TIMEOUT_MS 30000
#define SWEEP_EVERY_MS 5000
#define DNS_TTL_MS 60000
#define MAX_ADDRS 4
#define READ_BUF_SIZE (16u << 10)
#define MAX_HOST_LEN 255
#define MAX_REQUEST_HEADERS 64
#define MAX_SPARE_CALLS 256
#define SPARE_REQUEST_CAP (4u << 10) /* a spare call's request buffer is kept up to this */

typedef struct hc_host hc_host;
typedef struct hc_conn hc_conn;
typedef struct hc_call hc_call;
/* A first-come-first-served line of calls waiting at a host. */
typedef struct hc_line {
    hc_call *head, *tail;
} hc_line;

struct hc_host {
    hconn_client *cl;
    hc_host *next;
    int port;
    int numeric;
    int n_addrs;
    struct sockaddr_storage addrs[MAX_ADDRS];
    uint64_t resolved_ms;
    int n_open;                 /* connections open: connecting, busy or idle */
    hc_line room;               /* calls waiting under their cap, first come first served */
    uv_getaddrinfo_t *gai;      /* the resolution under way */
    unsigned gen;               /* resolutions started */
    hc_line dns;                /* calls waiting for the resolution */
    hc_conn *idle_head, *idle_tail;
    int n_idle;
    size_t name_len;
    char host_line[MAX_HOST_LEN + 16]; /* "Host: name[:port]\r\n" */
    size_t host_line_len;
    char name[];                /* as in the URL, without brackets */
};

struct hc_conn {
    uv_tcp_t tcp;
    union {                     /* the write starts after the connect ended */
        uv_connect_t connect;
        uv_write_t write;
    } req;
    hc_host *host;
    hc_call *call;              /* NULL while idle */
    hc_conn *prev, *next;       /* host's idle list */
    hc_conn *sprev, *snext;     /* the client's list of requests to send */
    http_resp_parser resp;
    buf pending;                /* read but held back by a pause */
    uint64_t idle_since;
    unsigned connected : 1, writing : 1, reused : 1, reading : 1, closing : 1, idle : 1, queued : 1;
    unsigned fresh : 1;         /* nothing of the call's response read yet */
};

struct hc_call {
    http_call_tag tag;          /* first: see http_client_impl.h */
    /* Kept while the call is spare; the rest is cleared for each use. */
    uv_timer_t timer;
    buf req;                    /* request head, then body */
    hconn_client *cl;           /* the first member cleared */
    hc_host *host;
    hc_conn *conn;
    hc_call *prev, *next;       /* cl->calls */
    hc_line *line;              /* the host's line it waits in (dns or room), or NULL */
    hc_call *lprev, *lnext;     /* its neighbours there */
    unsigned wait_gen;          /* the resolution waited for */
    uint64_t start_ms, last_byte_ms;
    uint64_t connect_from_ms;   /* the connect deadline counts from here */
    unsigned connect_ms, total_ms, stall_ms;
    int max_conns;              /* opens no connection while the host has this many; 0: no cap */
    int grace;                  /* a deadline passed; one more I/O poll before it counts */
    int next_addr;              /* host address to try */
    enum http_call_error due_err;
    char *due_msg;              /* a failure the timer reports */
    const http_resp_parser *resp; /* the head, once in */
    unsigned starting : 1, paused : 1, cancelled : 1, done : 1, retried : 1;
    unsigned resume_due : 1, head_request : 1;
    void (*on_headers)(http_call *c, int status, void *ud);
    void (*on_data)(http_call *c, const char *data, size_t len, void *ud);
    void (*on_done)(http_call *c, enum http_call_error err, const char *message, void *ud);
    void *ud;
    size_t head_len, body_len;
};

struct hconn_client {
    uv_loop_t *loop;
    hc_host *hosts;
    hc_call *calls;
    hc_call *released;          /* finished in this loop phase; spare after it */
    hc_call *spare;             /* finished calls for new ones to reuse */
    int n_spare;
    char *rbuf;                 /* the shared read buffer, READ_BUF_SIZE */
    uv_timer_t sweep;
    uv_check_t sender;          /* sends the requests queued by I/O callbacks */
    uv_prepare_t presender;     /* and those queued before the loop polls */
    hc_conn *send_head;         /* connections with a request to send */
    int promote;                /* a host's cap has room for its queue */
    int open_handles;           /* the client is freed with the last */
};

static void call_fail(hc_call *c, enum http_call_error err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_connect(hc_call *c, int allow_pool);
static void conn_read_start(hc_conn *k);

/* --- connections ------------------------------------------------------------ */

static void on_conn_closed(uv_handle_t *h) {
    hc_conn *k = h->data;
    http_resp_free(&k->resp);
    buf_free(&k->pending);
    free(k);
}

static void idle_remove(hc_conn *k) {
    hc_host *h = k->host;
    if (k->prev) k->prev->next = k->next;
    else h->idle_head = k->next;
    if (k->next) k->next->prev = k->prev;
    else h->idle_tail = k->prev;
    k->prev = k->next = NULL;
    k->idle = 0;
    h->n_idle--;
}

static void send_remove(hc_conn *k) {
    hconn_client *cl = k->host->cl;
    if (k->sprev) k->sprev->snext = k->snext;
    else cl->send_head = k->snext;
    if (k->snext) k->snext->sprev = k->sprev;
    k->sprev = k->snext = NULL;
    k->queued = 0;
}

static void conn_close(hc_conn *k) {
    if (k->closing) return;
    k->closing = 1;
    if (k->idle) idle_remove(k);
    if (k->queued) send_remove(k);
    hc_host *h = k->host;
    h->n_open--;
    /* Not opened from here: this may run inside a caller's callback, and
     * opening can fail and call back. The send phase does it. */
    if (h->room.head) h->cl->promote = 1;
    uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
}

/* The call gives the connection up, mid-way: nobody else can use it. */
static void conn_detach_close(hc_conn *k) {
    if (k->call) k->call->conn = NULL;
    k->call = NULL;
    conn_close(k);
}

static void conn_attach(hc_conn *k, hc_call *c);
static void send_request(hc_conn *k);
static void line_leave(hc_call *c);
static void arm_timer(hc_call *c);

/* A call leaves the queue for a connection: the time it waited there was
 * no node's silence, and a connect deadline starts now. */
static void call_dequeued(hc_call *c) {
    line_leave(c);
    c->connect_from_ms = c->last_byte_ms = uv_now(c->cl->loop);
    arm_timer(c);
}

static void pool_put(hc_conn *k) {
    hc_host *h = k->host;
    if (h->room.head) { /* the first call waiting for a connection takes it */
        hc_call *c = h->room.head;
        call_dequeued(c);
        buf_free(&k->pending);
        k->reused = 1;
        conn_attach(k, c);
        send_request(k);
        return;
    }
    if (h->n_idle >= MAX_IDLE_PER_HOST) conn_close(h->idle_tail);
    buf_free(&k->pending);
    k->idle = 1;
    k->idle_since = uv_now(h->cl->loop);
    k->prev = NULL;
    k->next = h->idle_head;
    if (h->idle_head) h->idle_head->prev = k;
    else h->idle_tail = k;
    h->idle_head = k;
    h->n_idle++;
    conn_read_start(k);
}

static hc_conn *pool_take(hc_host *h) {
    hc_conn *k = h->idle_head;
    idle_remove(k);
    k->reused = 1;
    return k;
}

static void on_sweep(uv_timer_t *t) {
    hconn_client *cl = t->data;
    uint64_t now = uv_now(cl->loop);
    for (hc_host *h = cl->hosts; h; h = h->next)
        while (h->idle_tail && now - h->idle_tail->idle_since >= IDLE_TIMEOUT_MS) conn_close(h->idle_tail);
}

static void conn_attach(hc_conn *k, hc_call *c) {
    k->call = c;
    k->fresh = 1;
    c->conn = k;
}

/* --- reading and delivering ----------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)suggested;
    hconn_client *cl = ((hc_conn *)h->data)->host->cl;
    if (!cl->rbuf) cl->rbuf = xmalloc(READ_BUF_SIZE);
    *b = uv_buf_init(cl->rbuf, READ_BUF_SIZE);
}

static void call_release(hc_call *c);

static void call_finish(hc_call *c, enum http_call_error err, const char *msg) {
    c->done = 1;
    if (err != HTTP_CALL_OK) log_debug("http_client: call failed (%s): %s", http_call_error_name(err), msg);
    c->on_done((http_call *)c, err, msg, c->ud);
    call_release(c);
}

/* The response ended; `leftover` bytes followed it, which no request asked
 * for, so the connection is not trusted again. */
static void call_complete(hc_conn *k, size_t leftover) {
    hc_call *c = k->call;
    int keep = k->resp.keep_alive && !leftover && !k->writing;
    k->call = NULL;
    c->conn = NULL;
    /* Pooled before on_done, so a call started there reuses it; the head
     * stays intact until the next response's first byte is read. */
    if (keep) pool_put(k);
    else conn_close(k);
    call_finish(c, HTTP_CALL_OK, "ok");
}

/* Feeds data[0..n) to the parser and the call's callbacks until all is
 * consumed, the call ends or it is paused; returns the bytes consumed. */
static size_t deliver(hc_conn *k, char *data, size_t n) {
    hc_call *c = k->call;
    if (k->fresh) {
        http_resp_init(&k->resp, c->head_request);
        k->fresh = 0;
    }
    size_t pos = 0;
    while (!c->paused) {
        size_t used, len;
        char *body = NULL;
        enum http_resp_event ev = http_resp_feed(&k->resp, data + pos, n - pos, &used, &body, &len);
        pos += used;
        switch (ev) {
        case HTTP_RESP_MORE:
            return pos;
        case HTTP_RESP_HEAD:
            c->resp = &k->resp;
            if (c->on_headers) c->on_headers((http_call *)c, k->resp.status, c->ud);
            break;
        case HTTP_RESP_BODY:
            if (c->on_data) c->on_data((http_call *)c, body, len, c->ud);
            break;
        case HTTP_RESP_DONE:
            call_complete(k, n - pos);
            return pos;
        case HTTP_RESP_ERROR:
            call_fail(c, HTTP_CALL_PROTOCOL, "invalid response from %s:%d: %s", k->host->name, k->host->port,
                      k->resp.error);
            return pos;
        }
        if (c->conn != k) return pos; /* cancelled from the callback */
    }
    return pos;
}

/* The connection broke (EOF, reset, failed write) while carrying a call. */
static void conn_broken(hc_conn *k, int status) {
    hc_call *c = k->call;
    hc_host *h = k->host;
    if (k->fresh && k->reused && !c->retried) {
        c->retried = 1;
        log_debug("http_client: %s:%d closed a kept-alive connection; sending again", h->name, h->port);
        conn_detach_close(k);
        call_connect(c, 0);
        return;
    }
    const char *what = status == UV_EOF ? "connection closed" : uv_strerror(status);
    const http_resp_parser *r = &k->resp;
    if (k->fresh || !http_resp_head_done(r))
        call_fail(c, HTTP_CALL_RESET, "%s:%d: %s before the end of the response head", h->name, h->port, what);
    else if (r->has_length && !r->chunked)
        call_fail(c, HTTP_CALL_RESET, "%s:%d: %s after %llu of %llu body bytes", h->name, h->port, what,
                  (unsigned long long)r->body_bytes, (unsigned long long)r->content_length);
    else
        call_fail(c, HTTP_CALL_RESET, "%s:%d: %s after %llu body bytes", h->name, h->port, what,
                  (unsigned long long)r->body_bytes);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
    hc_conn *k = s->data;
    hc_call *c = k->call;
    if (nread == 0) return;
    if (!c) { /* idle: the server closed it, or sent what nobody asked for */
        conn_close(k);
        return;
    }
    if (nread < 0) {
        if (!k->fresh && http_resp_eof(&k->resp)) call_complete(k, 0); /* a body that ends with the connection */
        else conn_broken(k, (int)nread);
        return;
    }
    c->last_byte_ms = uv_now(c->cl->loop);
    size_t used = deliver(k, b->base, (size_t)nread);
    if (c->conn == k && c->paused) { /* keep the rest for http_call_pause(c, 0) */
        buf_append(&k->pending, b->base + used, (size_t)nread - used);
        uv_read_stop(s);
        k->reading = 0;
    }
}

static void conn_read_start(hc_conn *k) {
    if (k->reading || k->closing || (k->call && k->call->paused)) return;
    int rc = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    if (rc == 0) {
        k->reading = 1;
    } else if (k->call) {
        conn_broken(k, rc);
    } else {
        conn_close(k);
    }
}

static void conn_read_stop(hc_conn *k) {
    if (!k->reading) return;
    uv_read_stop((uv_stream_t *)&k->tcp);
    k->reading = 0;
}

/* Delivers what a pause held back, then reads on. */
static void call_resume(hc_call *c) {
    static char nothing[1];
    hc_conn *k = c->conn;
    if (c->paused || !k || !k->connected) return;
    if (!k->fresh) {
        size_t used = deliver(k, k->pending.data ? k->pending.data : nothing, k->pending.len);
        if (c->conn != k) return; /* the call ended on the way */
        if (c->paused) {
            buf_consume(&k->pending, used);
            return;
        }
        buf_free(&k->pending); /* all consumed */
    }
    conn_read_start(k);
}

/* --- writing and connecting ---------------------------------------------------- */

static void on_written(uv_write_t *req, int status) {
    hc_conn *k = req->handle->data;
    if (status == UV_ECANCELED || k->closing) return;
    k->writing = 0;
    if (status < 0 && k->call) conn_broken(k, status);
}

/* The head and the body lie end to end in c->req. Most requests fit the
 * socket buffer and leave with uv_try_write; only a remainder goes through
 * uv_write, whose completion costs libuv an epoll_ctl per request. */
static void write_request(hc_conn *k) {
    hc_call *c = k->call;
    size_t total = c->head_len + c->body_len;
    uv_buf_t b = uv_buf_init(c->req.data, (unsigned)total);
    int sent = uv_try_write((uv_stream_t *)&k->tcp, &b, 1);
    if (sent < 0 && sent != UV_EAGAIN) {
        conn_broken(k, sent);
        return;
    }
    if (sent > 0) b = uv_buf_init(c->req.data + sent, (unsigned)(total - (size_t)sent));
    if (b.len) {
        int rc = uv_write(&k->req.write, (uv_stream_t *)&k->tcp, &b, 1, on_written);
        if (rc < 0) {
            conn_broken(k, rc);
            return;
        }
        k->writing = 1;
    }
    conn_read_start(k);
}

/* Queued for the end of the loop turn (on_send). */
static void send_request(hc_conn *k) {
    hconn_client *cl = k->host->cl;
    k->sprev = NULL;
    k->snext = cl->send_head;
    if (cl->send_head) cl->send_head->sprev = k;
    cl->send_head = k;
    k->queued = 1;
}

/* Calls waiting under a host's cap take the room closed connections left. */
static void promote_queued(hconn_client *cl) {
    cl->promote = 0;
    for (hc_host *h = cl->hosts; h; h = h->next)
        while (h->room.head && h->n_open < h->room.head->max_conns) {
            hc_call *c = h->room.head;
            call_dequeued(c);
            call_connect(c, 1);
        }
}

static void call_free(hc_call *c);

/* The calls finished in the phase that just ended become spare: no stack
 * that saw them runs any more. */
static void recycle_released(hconn_client *cl) {
    while (cl->released) {
        hc_call *c = cl->released;
        cl->released = c->next;
        if (cl->n_spare < MAX_SPARE_CALLS && c->req.cap <= SPARE_REQUEST_CAP) {
            c->next = cl->spare;
            cl->spare = c;
            cl->n_spare++;
        } else {
            call_free(c);
        }
    }
}

static void send_queued(hconn_client *cl) {
    if (cl->promote) promote_queued(cl);
    while (cl->send_head) {
        hc_conn *k = cl->send_head;
        send_remove(k);
        write_request(k);
    }
    recycle_released(cl);
}

static void on_send(uv_check_t *h) { send_queued(h->data); }
static void on_presend(uv_prepare_t *h) { send_queued(h->data); }

static void conn_open(hc_call *c);

static void connect_failed(hc_conn *k, int status) {
    hc_call *c = k->call;
    hc_host *h = k->host;
    conn_detach_close(k);
    if (++c->next_addr < h->n_addrs) {
        conn_open(c);
        return;
    }
    if (!h->numeric) h->n_addrs = 0; /* resolve again next time */
    call_fail(c, HTTP_CALL_CONNECT, "cannot connect to %s:%d: %s", h->name, h->port, uv_strerror(status));
}

static void on_connected(uv_connect_t *req, int status) {
    hc_conn *k = req->handle->data;
    if (status == UV_ECANCELED || k->closing) return;
    if (status < 0) {
        connect_failed(k, status);
        return;
    }
    k->connected = 1;
    int rc = uv_tcp_nodelay(&k->tcp, 1);
    if (rc < 0) log_debug("http_client: TCP_NODELAY: %s", uv_strerror(rc));
    send_request(k);
}

static void conn_open(hc_call *c) {
    hc_host *h = c->host;
    hc_conn *k = xcalloc(1, sizeof *k);
    k->host = h;
    int rc = uv_tcp_init(c->cl->loop, &k->tcp);
    if (rc < 0) {
        free(k);
        call_fail(c, HTTP_CALL_CONNECT, "cannot connect to %s:%d: %s", h->name, h->port, uv_strerror(rc));
        return;
    }
    k->tcp.data = k;
    h->n_open++;
    conn_attach(k, c);
    rc = uv_tcp_connect(&k->req.connect, &k->tcp, (const struct sockaddr *)&h->addrs[c->next_addr], on_connected);
    if (rc < 0) connect_failed(k, rc);
}

/* --- the lines calls wait in at a host: its resolution, room under the cap --- */

static void line_push(hc_line *l, hc_call *c) {
    c->line = l;
    c->lprev = l->tail;
    c->lnext = NULL;
    if (l->tail) l->tail->lnext = c;
    else l->head = c;
    l->tail = c;
}

static void line_leave(hc_call *c) {
    hc_line *l = c->line;
    if (!l) return;
    if (c->lprev) c->lprev->lnext = c->lnext;
    else l->head = c->lnext;
    if (c->lnext) c->lnext->lprev = c->lprev;
    else l->tail = c->lprev;
    c->lprev = c->lnext = NULL;
    c->line = NULL;
}

static int in_room_line(const hc_call *c) { return c->line == &c->host->room; }

/* --- DNS --------------------------------------------------------------------- */

static void keep_addrs(hc_host *h, const struct addrinfo *res) {
    h->n_addrs = 0;
    for (const struct addrinfo *a = res; a && h->n_addrs < MAX_ADDRS; a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) || a->ai_addrlen > sizeof h->addrs[0]) continue;
        memcpy(&h->addrs[h->n_addrs++], a->ai_addr, a->ai_addrlen);
    }
    h->resolved_ms = uv_now(h->cl->loop);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    hc_host *h = req->data;
    free(req);
    if (!h) { /* the client was freed meanwhile */
        uv_freeaddrinfo(res);
        return;
    }
    h->gai = NULL;
    if (status == 0) keep_addrs(h, res);
    uv_freeaddrinfo(res);
    if (status == 0 && h->n_addrs == 0) status = UV_EAI_ADDRFAMILY;
    /* Only the calls that waited for this resolution: one started from a
     * callback below starts its own. */
    unsigned gen = h->gen;
    hc_call *c;
    while ((c = h->dns.head) && c->wait_gen == gen) {
        line_leave(c);
        if (status < 0) call_fail(c, HTTP_CALL_CONNECT, "cannot resolve %s: %s", h->name, uv_strerror(status));
        else call_connect(c, 1);
    }
}

static void wait_for_dns(hc_call *c) {
    hc_host *h = c->host;
    if (!h->gai) {
        uv_getaddrinfo_t *req = xmalloc(sizeof *req);
        req->data = h;
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        char port[8];
        snprintf(port, sizeof port, "%d", h->port);
        int rc = uv_getaddrinfo(h->cl->loop, req, on_resolved, h->name, port, &hints);
        if (rc < 0) {
            free(req);
            call_fail(c, HTTP_CALL_CONNECT, "cannot resolve %s: %s", h->name, uv_strerror(rc));
            return;
        }
        h->gai = req;
        h->gen++;
    }
    c->wait_gen = h->gen;
    line_push(&h->dns, c);
}

/* --- calls ------------------------------------------------------------------- */

static void call_connect(hc_call *c, int allow_pool) {
    hc_host *h = c->host;
    if (allow_pool && h->idle_head) {
        hc_conn *k = pool_take(h);
        conn_attach(k, c);
        send_request(k);
    } else if (c->max_conns && h->n_open >= c->max_conns && !h->idle_tail) {
        line_push(&h->room, c);
    } else if (!h->numeric && (!h->n_addrs || uv_now(c->cl->loop) - h->resolved_ms >= DNS_TTL_MS)) {
        wait_for_dns(c);
    } else {
        /* a retry wants a fresh connection: at the cap, an idle one gives way */
        if (c->max_conns && h->n_open >= c->max_conns) conn_close(h->idle_tail);
        c->next_addr = 0;
        conn_open(c);
    }
}

static void free_call_cb(uv_handle_t *h) {
    hc_call *c = h->data;
    buf_free(&c->req);
    free(c);
}

static void call_free(hc_call *c) { uv_close((uv_handle_t *)&c->timer, free_call_cb); }

/* A list of released or spare calls, linked by next. */
static void free_calls(hc_call *c) {
    while (c) {
        hc_call *next = c->next;
        call_free(c);
        c = next;
    }
}

/* The call is over: its timer stops, and it waits in cl->released for the
 * send phase, which makes it spare. */
static void call_release(hc_call *c) {
    hconn_client *cl = c->cl;
    if (c->prev) c->prev->next = c->next;
    else cl->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    line_leave(c);
    free(c->due_msg);
    c->due_msg = NULL;
    uv_timer_stop(&c->timer);
    c->prev = NULL;
    c->next = cl->released;
    cl->released = c;
}

static void on_timer(uv_timer_t *t);

/* The connect deadline runs while a call has no connected connection,
 * from when it began to look for one; the stall deadline while it waits
 * for the server. A call queued under its host's cap has neither: it
 * waits for msoa, not for the server, within its total deadline only. */
static int connecting(const hc_call *c) {
    return c->connect_ms && !in_room_line(c) && !(c->conn && c->conn->connected);
}

static int stall_counts(const hc_call *c) { return c->stall_ms && !in_room_line(c); }

/* Sets the timer for the nearest deadline. */
static void arm_timer(hc_call *c) {
    uint64_t now = uv_now(c->cl->loop), due = UINT64_MAX;
    if (connecting(c)) due = c->connect_from_ms + c->connect_ms;
    if (c->total_ms && c->start_ms + c->total_ms < due) due = c->start_ms + c->total_ms;
    if (stall_counts(c) && c->last_byte_ms + c->stall_ms < due) due = c->last_byte_ms + c->stall_ms;
    if (due == UINT64_MAX) uv_timer_stop(&c->timer);
    else uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

static int deadline_passed(const hc_call *c, uint64_t now) {
    return (connecting(c) && now - c->connect_from_ms >= c->connect_ms) ||
           (c->total_ms && now - c->start_ms >= c->total_ms) ||
           (stall_counts(c) && now - c->last_byte_ms >= c->stall_ms);
}

static void check_deadlines(hc_call *c) {
    uint64_t now = uv_now(c->cl->loop);
    hc_host *h = c->host;
    if (c->paused) c->last_byte_ms = now; /* our own pause is not the server's stall */
    /* libuv runs due timers before it polls sockets: after a lag of the
     * process (a busy machine), bytes that did arrive in time are still
     * unread. So a passed deadline is looked at again after one more poll. */
    if (deadline_passed(c, now) && !c->grace) {
        c->grace = 1;
        uv_timer_start(&c->timer, on_timer, 1, 0);
        return;
    }
    c->grace = 0;
    if (connecting(c) && now - c->connect_from_ms >= c->connect_ms)
        call_fail(c, HTTP_CALL_TIMEOUT, "connecting to %s:%d timed out after %u ms", h->name, h->port, c->connect_ms);
    else if (c->total_ms && now - c->start_ms >= c->total_ms && in_room_line(c))
        call_fail(c, HTTP_CALL_TIMEOUT, "no connection to %s:%d came free within %u ms (at most %d are open)",
                  h->name, h->port, c->total_ms, c->max_conns);
    else if (c->total_ms && now - c->start_ms >= c->total_ms)
        call_fail(c, HTTP_CALL_TIMEOUT, "no complete response from %s:%d within %u ms", h->name, h->port,
                  c->total_ms);
    else if (stall_counts(c) && now - c->last_byte_ms >= c->stall_ms)
        call_fail(c, HTTP_CALL_TIMEOUT, "no data from the server for %u ms", c->stall_ms);
    else
        arm_timer(c);
}

static void on_timer(uv_timer_t *t) {
    hc_call *c = t->data;
    if (c->due_msg) {
        char *msg = c->due_msg;
        c->due_msg = NULL;
        call_finish(c, c->due_err, msg);
        free(msg);
        return;
    }
    if (c->resume_due) {
        c->resume_due = 0;
        call_resume(c);
        if (c->done || c->cancelled) return;
    }
    check_deadlines(c);
}

/* Ends the call with an error, closing its connection. Inside
 * http_client_start the report waits for the timer. */
static void call_fail(hc_call *c, enum http_call_error err, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->conn) conn_detach_close(c->conn);
    line_leave(c);
    if (!c->starting) {
        call_finish(c, err, msg);
        return;
    }
    if (c->due_msg) return;
    c->due_err = err;
    c->due_msg = xstrdup(msg);
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

/* --- the request ---------------------------------------------------------------- */

typedef struct url_parts {
    const char *host;
    size_t host_len;
    int bracketed;             /* an IPv6 literal */
    int port;
    const char *target;        /* path and query; "" means "/" */
    size_t target_len;
} url_parts;

static int host_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '.' || ch == '_';
}

/* "http://host[:port][/path][?query][#fragment]"; -1 for what is left to
 * curl (user info, odd host names, characters that need escaping). */
static int parse_url(const char *url, url_parts *u) {
    const char *p = url + 7, *auth_end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(auth_end - p))) return -1;
    u->bracketed = *p == '[';
    if (u->bracketed) {
        const char *rb = memchr(p, ']', (size_t)(auth_end - p));
        if (!rb) return -1;
        u->host = p + 1;
        u->host_len = (size_t)(rb - p - 1);
        p = rb + 1;
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        u->host = p;
        p = colon ? colon : auth_end;
        u->host_len = (size_t)(p - u->host);
        for (size_t i = 0; i < u->host_len; i++)
            if (!host_char(u->host[i])) return -1;
    }
    if (!u->host_len || u->host_len > MAX_HOST_LEN) return -1;
    u->port = 80;
    if (p < auth_end) {
        if (*p++ != ':') return -1;
        if (p < auth_end) u->port = 0;
        for (; p < auth_end; p++) {
            if (*p < '0' || *p > '9' || u->port > 6553) return -1;
            u->port = u->port * 10 + (*p - '0');
        }
        if (u->port < 1 || u->port > 65535) return -1;
    }
    u->target = auth_end;
    u->target_len = strcspn(auth_end, "#");
    for (size_t i = 0; i < u->target_len; i++) {
        unsigned char ch = (unsigned char)u->target[i];
        if (ch <= ' ' || ch >= 0x7f) return -1;
    }
    return 0;
}

/* 1: send the caller's header, 0: leave it out, -1: invalid; *len: its
 * length. Headers we write ourselves are left out; "Name:" with no value
 * means "do not send Name", as with curl. */
static int header_action(const char *hdr, size_t *len, int *is_host) {
    const char *colon = hdr;
    while (*colon && *colon != ':' && *colon != ' ' && *colon != '\t' && *colon != '\r' && *colon != '\n') colon++;
    if (*colon != ':' || colon == hdr) return -1;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    const char *end = v + strcspn(v, "\r\n");
    if (*end) return -1;
    *len = (size_t)(end - hdr);
    size_t n = (size_t)(colon - hdr);
    *is_host = n == 4 && !strncasecmp(hdr, "host", 4);
    if (v == end) return 0;
    if ((n == 14 && !strncasecmp(hdr, "content-length", 14)) ||
        (n == 17 && !strncasecmp(hdr, "transfer-encoding", 17)) ||
        (n == 10 && !strncasecmp(hdr, "connection", 10)))
        return 0;
    return 1;
}

static int valid_method(const char *m) {
    if (!*m) return 0;
    for (; *m; m++)
        if (!((*m >= 'A' && *m <= 'Z') || *m == '-' || *m == '_')) return 0;
    return 1;
}

static char *put(char *w, const char *s, size_t n) {
    memcpy(w, s, n);
    return w + n;
}

#define PUT_LIT(w, lit) put(w, lit, sizeof lit - 1)

/* "Content-Length: N\r\n" into out (room for 48); returns its length. */
static size_t content_length_line(char *out, size_t n) {
    char digits[24];
    size_t d = sizeof digits;
    do {
        digits[--d] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    char *w = PUT_LIT(out, "Content-Length: ");
    w = put(w, digits + d, sizeof digits - d);
    w = PUT_LIT(w, "\r\n");
    return (size_t)(w - out);
}

/* A spare call, or a new one with its timer initialised; cleared but for
 * the timer and the request buffer. */
static hc_call *call_take(hconn_client *cl) {
    hc_call *c = cl->spare;
    if (c) {
        cl->spare = c->next;
        cl->n_spare--;
    } else {
        c = xcalloc(1, sizeof *c);
        uv_timer_init(cl->loop, &c->timer);
        c->timer.data = c;
    }
    memset(&c->cl, 0, sizeof *c - offsetof(hc_call, cl));
    return c;
}

/* The call with its request written out: head, then the body. */
static hc_call *call_new(hconn_client *cl, const http_call_opts *o, const url_parts *u, const hc_host *h) {
    const char *method = o->method ? o->method : o->body ? "POST" : "GET";
    if (!valid_method(method) || o->body_len > UINT32_MAX) return NULL;
    int with_length = o->body || !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH");
    size_t lens[MAX_REQUEST_HEADERS], headers_len = 0;
    signed char act[MAX_REQUEST_HEADERS];
    int n = 0, own_host = 1, is_host;
    for (const char *const *hp = o->headers; hp && *hp; hp++, n++) {
        if (n == MAX_REQUEST_HEADERS) return NULL;
        act[n] = (signed char)header_action(*hp, &lens[n], &is_host);
        if (act[n] < 0) return NULL;
        if (is_host) own_host = 0;
        if (act[n]) headers_len += lens[n] + 2;
    }
    char length[48];
    size_t length_n = with_length ? content_length_line(length, o->body_len) : 0;
    size_t host_n = own_host ? h->host_line_len : 0;
    int slash = u->target_len == 0 || u->target[0] == '?';
    size_t method_len = strlen(method);
    size_t head_len = method_len + 1 + (size_t)slash + u->target_len + sizeof " HTTP/1.1\r\n" - 1 + host_n +
                      length_n + sizeof "Connection: keep-alive\r\n" - 1 + headers_len + 2;
    hc_call *c = call_take(cl);
    c->req.len = 0;
    buf_reserve(&c->req, head_len + o->body_len);
    c->req.len = head_len + o->body_len;
    char *w = put(c->req.data, method, method_len);
    *w++ = ' ';
    if (slash) *w++ = '/';
    w = put(w, u->target, u->target_len);
    w = PUT_LIT(w, " HTTP/1.1\r\n");
    w = put(w, h->host_line, host_n);
    w = put(w, length, length_n);
    w = PUT_LIT(w, "Connection: keep-alive\r\n");
    for (int i = 0; i < n; i++) {
        if (!act[i]) continue;
        w = put(w, o->headers[i], lens[i]);
        w = PUT_LIT(w, "\r\n");
    }
    w = PUT_LIT(w, "\r\n");
    if (o->body_len) memcpy(w, o->body, o->body_len);
    c->req.data[c->req.len] = '\0';
    c->head_len = head_len;
    c->body_len = o->body_len;
    c->head_request = !strcmp(method, "HEAD");
    return c;
}

static hc_host *host_get(hconn_client *cl, const url_parts *u) {
    for (hc_host *h = cl->hosts; h; h = h->next)
        if (h->port == u->port && h->name_len == u->host_len && !strncasecmp(h->name, u->host, u->host_len))
            return h;
    hc_host *h = xcalloc(1, sizeof *h + u->host_len + 1);
    memcpy(h->name, u->host, u->host_len);
    h->name_len = u->host_len;
    h->port = u->port;
    h->cl = cl;
    int n = snprintf(h->host_line, sizeof h->host_line, u->port == 80 ? "Host: %s%s%s\r\n" : "Host: %s%s%s:%d\r\n",
                     u->bracketed ? "[" : "", h->name, u->bracketed ? "]" : "", u->port);
    h->host_line_len = (size_t)n;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (uv_ip4_addr(h->name, u->port, &a4) == 0) {
        memcpy(&h->addrs[0], &a4, sizeof a4);
    } else if (uv_ip6_addr(h->name, u->port, &a6) == 0) {
        memcpy(&h->addrs[0], &a6, sizeof a6);
    } else if (u->bracketed) {
        free(h);
        return NULL;
    }
    h->numeric = h->n_addrs = h->addrs[0].ss_family != 0;
    h->next = cl->hosts;
    cl->hosts = h;
    return h;
}

/* --- public (to http_client.c) ------------------------------------------------ */

hconn_client *hconn_client_new(uv_loop_t *loop) {
    hconn_client *cl = xcalloc(1, sizeof *cl);
    cl->loop = loop;
    uv_timer_init(loop, &cl->sweep);
    cl->sweep.data = cl;
    uv_timer_start(&cl->sweep, on_sweep, SWEEP_EVERY_MS, SWEEP_EVERY_MS);
    uv_unref((uv_handle_t *)&cl->sweep); /* idle connections alone do not keep a loop running */
    uv_check_init(loop, &cl->sender);
    cl->sender.data = cl;
    uv_check_start(&cl->sender, on_send);
    uv_unref((uv_handle_t *)&cl->sender);
    uv_prepare_init(loop, &cl->presender);
    cl->presender.data = cl;
    uv_prepare_start(&cl->presender, on_presend);
    uv_unref((uv_handle_t *)&cl->presender);
    cl->open_handles = 3;
    return cl;
}

static void free_client_cb(uv_handle_t *h) {
    hconn_client *cl = h->data;
    if (--cl->open_handles == 0) free(cl);
}

void hconn_client_free(hconn_client *cl) {
    if (!cl) return;
    while (cl->calls) {
        hc_call *c = cl->calls;
        c->cancelled = 1;
        if (c->conn) conn_detach_close(c->conn);
        call_release(c);
    }
    free_calls(cl->released);
    free_calls(cl->spare);
    while (cl->hosts) {
        hc_host *h = cl->hosts;
        cl->hosts = h->next;
        while (h->idle_head) conn_close(h->idle_head);
        if (h->gai) {
            h->gai->data = NULL; /* on_resolved frees it, cancelled or not */
            if (uv_cancel((uv_req_t *)h->gai) < 0) log_debug("http_client: a resolution of %s runs on", h->name);
        }
        free(h);
    }
    free(cl->rbuf);
    uv_close((uv_handle_t *)&cl->sweep, free_client_cb);
    uv_close((uv_handle_t *)&cl->sender, free_client_cb);
    uv_close((uv_handle_t *)&cl->presender, free_client_cb);
}

http_call *hconn_start(hconn_client *cl, const http_call_opts *o, int *unsupported) {
    url_parts u;
    *unsupported = parse_url(o->url, &u) < 0;
    if (*unsupported) return NULL;
    hc_host *h = host_get(cl, &u);
    if (!h) {
        *unsupported = 1;
        return NULL;
    }
    hc_call *c = call_new(cl, o, &u, h);
    if (!c) return NULL;
    c->cl = cl;
    c->host = h;
    c->connect_ms = o->connect_timeout_ms;
    c->total_ms = o->total_timeout_ms;
    c->stall_ms = o->stall_timeout_ms;
    c->on_headers = o->on_headers;
    c->on_data = o->on_data;
    c->on_done = o->on_done;
    c->ud = o->ud;
    c->next = cl->calls;
    if (cl->calls) cl->calls->prev = c;
    cl->calls = c;
    c->start_ms = c->last_byte_ms = c->connect_from_ms = uv_now(cl->loop);
    c->max_conns = o->max_connections > INT_MAX ? INT_MAX : (int)o->max_connections;
    c->starting = 1;
    call_connect(c, 1);
    c->starting = 0;
    if (!c->due_msg) arm_timer(c);
    return (http_call *)c;
}

void hconn_pause(http_call *call, int paused) {
    hc_call *c = (hc_call *)call;
    if (c->cancelled || c->done) return;
    paused = paused != 0;
    if (paused == (int)c->paused) return;
    c->paused = (unsigned)paused;
    c->last_byte_ms = uv_now(c->cl->loop);
    if (paused) {
        if (c->conn) conn_read_stop(c->conn);
        return;
    }
    c->resume_due = 1; /* not from here: the caller may be inside one of our callbacks */
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

void hconn_cancel(http_call *call) {
    hc_call *c = (hc_call *)call;
    if (c->cancelled || c->done) return;
    c->cancelled = 1;
    if (c->conn) conn_detach_close(c->conn);
    call_release(c);
}

const char *hconn_header(const http_call *call, const char *name) {
    const hc_call *c = (const hc_call *)call;
    return c->resp ? http_resp_header(c->resp, name) : NULL;
}
