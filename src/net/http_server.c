/* http_server: HTTP/1.1 + WebSocket server on libuv; see http_server.h.
 *
 * One conn per TCP connection holds everything a connection needs (input
 * buffers, parser, the one exchange in progress, the WebSocket state), so a
 * keep-alive request costs no allocation. Requests are parsed where they
 * were read; only when a handler answers later is the rest of the input
 * moved aside, so the request stays valid until the exchange is finished.
 *
 * Output goes through one buffer per connection: uv_try_write first (most
 * responses leave in that one syscall), the remainder through a single
 * uv_write while new output gathers behind it. Pipelined responses and
 * frames produced inside one read callback are written together ("corked").
 * A gateway's server may batch further (http_server_batch_writes): output
 * then waits for the end of the loop phase, so the answers made from one
 * poll's upstream events leave in one burst and wake the client's process
 * once rather than once each.
 *
 * Lifetime: a conn holds references for its TCP handle, its timer and an
 * unfinished exchange; it is freed when all are gone, so a handler may
 * finish an exchange after the client has left. */
#include "net/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "net/http_parse.h"
#include "net/ws_frame.h"

#define LINGER_MS 1000        /* after our last byte, wait this long for the peer to close */
#define WS_CLOSE_WAIT_MS 2000 /* after our close frame, wait this long for the peer's */
#define KEEP_BUF_CAP 65536    /* buffers larger than this are released between requests */
#define READ_RESERVE 8192

typedef struct conn conn;

struct http_exchange {
    conn *c;
    int active;     /* handler owns it, not finished yet */
    int aborted;
    int streaming;
    int chunked;    /* streamed body uses chunked framing */
    int head_only;  /* HEAD request: no body on the wire */
    int keep_alive;
    int http10;
    void (*on_drain)(void *ud);
    void (*on_abort)(void *ud);
    void *cb_ud;
    buf hdrs;       /* headers added by the handler, wire-ready */
};

struct ws_conn {
    conn *c;
    ws_callbacks cb;
    void *ud;
    ws_reader reader;
    int open;        /* on_close not called yet */
    int close_sent;
};

enum { MODE_HTTP, MODE_WS };
enum { T_NONE, T_IDLE, T_REQUEST, T_PROCESS, T_LINGER, T_WS_CLOSE, T_FAIL };

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    http_server *s;
    conn *prev, *next;
    int refs;
    int mode;
    int timer_kind;
    uint64_t timer_due;       /* loop time at which timer_kind is due */
    unsigned closed : 1;      /* uv_close called */
    unsigned failed : 1;      /* broken; closes on the next loop turn */
    unsigned closing : 1;     /* send what is queued, then shut down */
    unsigned lingering : 1;   /* shut down; discarding input until the peer closes */
    unsigned writing : 1;     /* a uv_write is in flight */
    unsigned backlogged : 1;  /* output went async: tell on_drain when it empties */
    unsigned corked : 1;
    unsigned processing : 1;
    unsigned receiving : 1;   /* part of a request is in */
    unsigned read_paused : 1;
    unsigned sent_continue : 1;
    unsigned flush_due : 1;   /* on the server's list of conns to flush at the end of the loop phase */
    conn *fprev, *fnext;      /* that list */
    size_t in_off;            /* start of the request being parsed in `in` */
    buf in;                   /* bytes read and not yet consumed */
    buf cur;                  /* the pending request, once moved out of `in` */
    buf out;                  /* output not yet handed to libuv */
    buf wbuf;                 /* output of the uv_write in flight */
    http_parser p;
    http_request req;
    http_header headers[HTTP_MAX_HEADERS];
    http_exchange x;
    ws_conn ws;
};

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    http_limits lim;
    http_handler handler;
    void *ud;
    conn *conns;
    int port;
    int tcp_inited;
    int closing;
    int listener_closed;
    int batch_writes;         /* output waits for the end of the loop phase */
    int flushing;             /* flushing that list now */
    int flushers_open;        /* the handles that flush it, until closed */
    uv_check_t flusher;       /* after the I/O callbacks */
    uv_prepare_t preflusher;  /* before the loop blocks */
    conn *flush_head;
    void (*done)(void *ud);
    void *done_ud;
    time_t date_t;
    char date[48];            /* "Date: ...\r\n" for date_t */
    atomic_long connections, streams, requests, rejected;
};

static void conn_close(conn *c);
static void flush(conn *c);
static void http_process(conn *c);
static void ws_process(conn *c);

void http_limits_default(http_limits *lim) {
    lim->max_body = 1 << 20;
    lim->max_header = 16 << 10;
    lim->max_connections = 10000;
    lim->idle_timeout_ms = 60000;
    lim->request_timeout_ms = 30000;
    lim->max_ws_message = 1 << 20;
}

static void stat_add(atomic_long *v, long d) { atomic_fetch_add_explicit(v, d, memory_order_relaxed); }

/* --- connection lifetime --- */

static void server_maybe_done(http_server *s) {
    if (!s->closing || !s->listener_closed || s->conns || s->flushers_open) return;
    if (s->done) s->done(s->done_ud);
    free(s);
}

static void flush_unlist(conn *c) {
    http_server *s = c->s;
    if (c->fprev) c->fprev->fnext = c->fnext;
    else s->flush_head = c->fnext;
    if (c->fnext) c->fnext->fprev = c->fprev;
    c->fprev = c->fnext = NULL;
    c->flush_due = 0;
}

static void conn_unref(conn *c) {
    if (--c->refs > 0) return;
    http_server *s = c->s;
    if (c->flush_due) flush_unlist(c);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    stat_add(&s->connections, -1);
    buf_free(&c->in);
    buf_free(&c->cur);
    buf_free(&c->out);
    buf_free(&c->wbuf);
    buf_free(&c->x.hdrs);
    ws_reader_free(&c->ws.reader);
    free(c);
    server_maybe_done(s);
}

static void on_handle_closed(uv_handle_t *h) { conn_unref(h->data); }

static void on_timer(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

/* The connection's one timer is set and cleared around every request (idle,
 * then request, then idle again), and each uv_timer_start or _stop is a
 * heap operation over all the loop's timers, which at hundreds of
 * connections touches as many cold cache lines. So the deadline lives in
 * the connection and the uv timer is moved only when it would fire too
 * late: a timer that fires early, or for a cleared deadline, is re-armed
 * for what is left or does nothing (on_timer). */
static void timer_set(conn *c, int kind, unsigned ms) {
    if (c->failed && kind != T_FAIL) return;
    uint64_t due = uv_now(c->s->loop) + ms;
    c->timer_kind = kind;
    c->timer_due = due;
    if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void timer_stop(conn *c) {
    if (c->failed) return;
    c->timer_kind = T_NONE;
}

/* Ends the connection now. An exchange still in the handler's hands is
 * aborted and a WebSocket gets on_close; both callbacks may respond or
 * write, which is dropped. */
static void conn_close(conn *c) {
    if (c->closed) return;
    c->closed = 1;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->ws.open) {
        c->ws.open = 0;
        stat_add(&c->s->streams, -1);
        c->ws.cb.on_close(&c->ws, c->ws.ud);
    }
    if (c->x.active && !c->x.aborted) {
        c->x.aborted = 1;
        if (c->x.on_abort) c->x.on_abort(c->x.cb_ud);
    }
}

/* A failure found inside a call from the handler (a write error, say):
 * output stops now, but the close, with its on_abort or on_close, runs on
 * the next loop turn and never inside the caller's own stack. */
static void conn_fail(conn *c) {
    if (c->closed || c->failed) return;
    timer_set(c, T_FAIL, 0);
    c->failed = 1;
    buf_clear(&c->out);
}

static int conn_dead(const conn *c) { return c->closed || c->failed; }

static void on_shutdown(uv_shutdown_t *req, int status) {
    conn *c = req->data;
    if (status < 0 && !c->closed) conn_close(c);
}

/* Everything is written: half-close, then read and drop whatever the peer
 * still sends until it closes, so our last response is not lost to a
 * reset caused by unread input. */
static void start_shutdown(conn *c) {
    if (c->lingering || c->closed) return;
    c->lingering = 1;
    buf_clear(&c->in);
    c->in_off = 0;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_fail(c);
        return;
    }
    timer_set(c, T_LINGER, LINGER_MS);
}

/* --- output --- */

static void notify_drain(conn *c) {
    if (c->mode == MODE_WS) {
        if (c->ws.open && c->ws.cb.on_drain) c->ws.cb.on_drain(&c->ws, c->ws.ud);
    } else if (c->x.active && c->x.streaming && c->x.on_drain) {
        c->x.on_drain(c->x.cb_ud);
    }
}

/* Once all output is out, on_drain tells a producer that met a backlog
 * (output that could not leave at once, or backlog() seen non-zero).
 * Called only from loop callbacks, so on_drain never runs inside the
 * producer's own write. */
static void flush_and_notify(conn *c) {
    flush(c);
    if (conn_dead(c) || c->writing || c->out.len || !c->backlogged) return;
    c->backlogged = 0;
    notify_drain(c);
}

static void on_write(uv_write_t *req, int status) {
    conn *c = req->data;
    c->writing = 0;
    buf_clear(&c->wbuf);
    if (c->closed) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    flush_and_notify(c);
}

/* With batch_writes, output waits on the server's list for the end of the
 * loop phase: the responses made from one poll's events leave together,
 * so a client's process wakes once for them all, not once for each. */
static void flush(conn *c) {
    if (conn_dead(c)) return;
    if (c->corked || c->writing) return;
    http_server *s = c->s;
    if (s->batch_writes && !s->flushing) {
        if (c->flush_due) return;
        c->flush_due = 1;
        c->fprev = NULL;
        c->fnext = s->flush_head;
        if (s->flush_head) s->flush_head->fprev = c;
        s->flush_head = c;
        return;
    }
    if (c->out.len) {
        uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == UV_EAGAIN) n = 0;
        if (n < 0) {
            conn_fail(c);
            return;
        }
        if ((size_t)n < c->out.len) {
            buf t = c->wbuf;
            c->wbuf = c->out;
            c->out = t;
            b = uv_buf_init(c->wbuf.data + n, (unsigned)(c->wbuf.len - (size_t)n));
            c->wreq.data = c;
            if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
                conn_fail(c);
                return;
            }
            c->writing = 1;
            c->backlogged = 1;
            return;
        }
        buf_clear(&c->out);
    }
    if (c->closing) start_shutdown(c);
}

/* A producer that saw a backlog may be waiting for on_drain: remember to
 * send it (the conn is never const itself, only the public handle). */
static size_t backlog(const conn *c) {
    size_t n = c->out.len + uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
    if (n) ((conn *)c)->backlogged = 1;
    return n;
}

static const char *reason_phrase(int status) {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static void put_uint(buf *b, unsigned long long v) {
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, tmp + i, sizeof tmp - (size_t)i);
}

/* Status line plus the headers every response carries. */
static void put_head_start(conn *c, int status) {
    http_server *s = c->s;
    buf *o = &c->out;
    time_t now = time(NULL);
    if (now != s->date_t) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        s->date_t = now;
    }
    buf_reserve(o, 128);
    buf_append(o, "HTTP/1.1 ", 9);
    put_uint(o, (unsigned)status);
    buf_putc(o, ' ');
    buf_puts(o, reason_phrase(status));
    buf_append(o, "\r\nServer: msoa\r\n", 16);
    buf_puts(o, s->date);
}

static void put_content_type(buf *o, const char *type) {
    if (!type) return;
    buf_append(o, "Content-Type: ", 14);
    buf_puts(o, type);
    buf_append(o, "\r\n", 2);
}

/* Handler headers, Connection, and the blank line. */
static void put_head_end(conn *c) {
    http_exchange *x = &c->x;
    buf *o = &c->out;
    buf_append(o, x->hdrs.data, x->hdrs.len);
    if (!x->keep_alive) buf_append(o, "Connection: close\r\n", 19);
    else if (x->http10) buf_append(o, "Connection: keep-alive\r\n", 24);
    buf_append(o, "\r\n", 2);
}

static const char *error_code(int status) {
    switch (status) {
    case 408: return "request_timeout";
    case 413: return "request_too_large";
    case 431: return "headers_too_large";
    case 426: return "upgrade_required";
    case 501: return "not_implemented";
    case 503: return "server_busy";
    case 505: return "http_version_not_supported";
    default: return "bad_request";
    }
}

/* OpenAI-shaped error body. Messages are the server's own static text
 * (never request bytes), so they need no JSON escaping. */
static void put_error_body(buf *b, int status, const char *msg) {
    buf_printf(b, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"code\":\"%s\"}}", msg,
               status >= 500 && status != 501 && status != 505 ? "server_error" : "invalid_request_error",
               error_code(status));
}

/* The server answers by itself (limits, malformed input) and closes: after
 * a framing error the rest of the stream cannot be trusted. */
static void reject(conn *c, int status, const char *msg) {
    stat_add(&c->s->rejected, 1);
    log_debug("http: %d %s", status, msg);
    buf body = BUF_INIT;
    put_error_body(&body, status, msg);
    put_head_start(c, status);
    buf *o = &c->out;
    put_content_type(o, "application/json");
    buf_append(o, "Content-Length: ", 16);
    put_uint(o, body.len);
    buf_append(o, "\r\nConnection: close\r\n\r\n", 23);
    buf_append(o, body.data, body.len);
    buf_free(&body);
    c->closing = 1;
    c->receiving = 0;
    timer_stop(c);
    flush(c);
}

/* --- exchanges --- */

uv_loop_t *http_exchange_loop(const http_exchange *x) { return x->c->s->loop; }

void http_exchange_on(http_exchange *x, void (*on_drain)(void *), void (*on_abort)(void *), void *ud) {
    x->on_drain = on_drain;
    x->on_abort = on_abort;
    x->cb_ud = ud;
}

int http_exchange_aborted(const http_exchange *x) { return x->aborted || x->c->failed; }

static int dropping(const http_exchange *x) { return x->aborted || conn_dead(x->c); }

void http_add_header(http_exchange *x, const char *name, const char *value) {
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n")) {
        log_error("http_add_header: refusing header %s with CR, LF or colon", name);
        return;
    }
    buf_puts(&x->hdrs, name);
    buf_append(&x->hdrs, ": ", 2);
    buf_puts(&x->hdrs, value);
    buf_append(&x->hdrs, "\r\n", 2);
}

static void release_big(buf *b) {
    if (b->cap > KEEP_BUF_CAP && b->len == 0) buf_free(b);
}

/* The handler is done with the exchange: go on with the next request. */
static void exchange_finish(conn *c) {
    http_exchange *x = &c->x;
    x->active = 0;
    if (x->streaming) {
        x->streaming = 0;
        stat_add(&c->s->streams, -1);
    }
    /* The request in `cur` is left as is (dispatch clears it for reuse);
     * only a large one is let go now. */
    if (c->cur.cap > KEEP_BUF_CAP) buf_free(&c->cur);
    if (!conn_dead(c)) {
        if (c->mode == MODE_HTTP && !x->keep_alive) c->closing = 1;
        if (c->read_paused) {
            c->read_paused = 0;
            if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) conn_fail(c);
        }
        /* Inside http_process the loop goes on by itself; otherwise look
         * at buffered input on the next loop turn, outside the caller's
         * stack. */
        if (!c->processing && !c->closing) {
            if (c->in.len) timer_set(c, T_PROCESS, 0);
            else if (c->mode == MODE_HTTP) timer_set(c, T_IDLE, c->s->lim.idle_timeout_ms);
        }
        flush(c);
    }
    conn_unref(c);
}

static int exchange_usable(const http_exchange *x, const char *fn) {
    if (x->active) return 1;
    log_error("%s: exchange already finished", fn);
    return 0;
}

void http_respond(http_exchange *x, int status, const char *content_type, const char *body, size_t len) {
    if (!exchange_usable(x, "http_respond")) return;
    if (x->streaming) {
        log_error("http_respond: exchange is streaming; use http_stream_end");
        return;
    }
    conn *c = x->c;
    if (!dropping(x)) {
        put_head_start(c, status);
        buf *o = &c->out;
        put_content_type(o, content_type);
        buf_append(o, "Content-Length: ", 16);
        put_uint(o, len);
        buf_append(o, "\r\n", 2);
        put_head_end(c);
        if (!x->head_only) buf_append(o, body, len);
    }
    exchange_finish(c);
}

void http_stream_start(http_exchange *x, int status, const char *content_type) {
    if (!exchange_usable(x, "http_stream_start") || x->streaming) return;
    conn *c = x->c;
    x->streaming = 1;
    stat_add(&c->s->streams, 1);
    /* HTTP/1.0 has no chunked coding: the body ends when the connection does. */
    x->chunked = !x->http10 && !x->head_only;
    if (x->http10) x->keep_alive = 0;
    if (dropping(x)) return;
    put_head_start(c, status);
    put_content_type(&c->out, content_type);
    if (!x->http10) buf_append(&c->out, "Transfer-Encoding: chunked\r\n", 28);
    put_head_end(c);
    flush(c);
}

void http_stream_write(http_exchange *x, const char *data, size_t len) {
    if (!exchange_usable(x, "http_stream_write")) return;
    if (!x->streaming) {
        log_error("http_stream_write: stream not started");
        return;
    }
    if (dropping(x) || len == 0 || x->head_only) return;
    buf *o = &x->c->out;
    if (x->chunked) {
        char hex[20];
        int i = sizeof hex;
        hex[--i] = '\n';
        hex[--i] = '\r';
        for (size_t v = len; v; v >>= 4) hex[--i] = "0123456789abcdef"[v & 15];
        buf_reserve(o, len + sizeof hex + 2);
        buf_append(o, hex + i, sizeof hex - (size_t)i);
        buf_append(o, data, len);
        buf_append(o, "\r\n", 2);
    } else {
        buf_append(o, data, len);
    }
    flush(x->c);
}

size_t http_stream_backlog(const http_exchange *x) { return conn_dead(x->c) ? 0 : backlog(x->c); }

void http_stream_end(http_exchange *x) {
    if (!exchange_usable(x, "http_stream_end")) return;
    if (!x->streaming) {
        log_error("http_stream_end: stream not started");
        return;
    }
    if (!dropping(x) && x->chunked) buf_append(&x->c->out, "0\r\n\r\n", 5);
    exchange_finish(x->c);
}

void http_exchange_abort(http_exchange *x) {
    if (!exchange_usable(x, "http_exchange_abort")) return;
    x->keep_alive = 0; /* exchange_finish closes after the flush */
    exchange_finish(x->c);
}

/* --- reading HTTP --- */

/* The request at in[in_off..] is complete: hand it to the handler. If the
 * handler keeps it, the bytes after it move to a fresh buffer so `in` can
 * keep growing without moving the request. */
static void dispatch(conn *c) {
    http_parser *p = &c->p;
    char *data = c->in.data + c->in_off;
    size_t end = p->req_len;
    char after = data[end];  /* http_parser_request puts the body's NUL there */
    http_parser_request(p, data, &c->req, c->headers);
    timer_stop(c);
    http_exchange *x = &c->x;
    x->active = 1;
    x->aborted = x->streaming = 0;
    x->on_drain = NULL;
    x->on_abort = NULL;
    x->keep_alive = p->keep_alive;
    x->http10 = p->version_minor == 0;
    x->head_only = strcmp(c->req.method, "HEAD") == 0;
    buf_clear(&x->hdrs);
    c->refs++;
    stat_add(&c->s->requests, 1);
    c->s->handler(x, &c->req, c->s->ud);
    if (!x->active) {
        data[end] = after;
        c->in_off += end;
        return;
    }
    buf_clear(&c->cur);
    buf_append(&c->cur, data + end, c->in.len - c->in_off - end);
    if (c->cur.len) c->cur.data[0] = after;
    buf t = c->in;
    c->in = c->cur;
    c->cur = t;
    c->in_off = 0;
}

static void maybe_continue(conn *c) {
    if (c->sent_continue || !http_parser_head_done(&c->p) || !c->p.expect_continue || c->p.version_minor == 0)
        return;
    c->sent_continue = 1;
    buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static void http_process(conn *c) {
    if (c->processing) return;
    c->processing = 1;
    c->corked = 1;
    http_server *s = c->s;
    while (c->mode == MODE_HTTP && !c->x.active && !c->closing && !conn_dead(c) && c->in_off < c->in.len) {
        if (!c->receiving) {
            c->receiving = 1;
            c->sent_continue = 0;
            http_parser_init(&c->p, s->lim.max_header, s->lim.max_body);
            timer_set(c, T_REQUEST, s->lim.request_timeout_ms);
        }
        int rc = http_parser_feed(&c->p, c->in.data + c->in_off, c->in.len - c->in_off);
        if (rc == HTTP_PARSE_MORE) {
            maybe_continue(c);
            break;
        }
        c->receiving = 0;
        if (rc != HTTP_PARSE_DONE) {
            reject(c, rc, c->p.error);
            break;
        }
        dispatch(c);
    }
    if (c->in_off) {
        buf_consume(&c->in, c->in_off);
        c->in_off = 0;
        release_big(&c->in);
    }
    c->processing = 0;
    c->corked = 0;
    if (conn_dead(c)) return;
    if (c->mode == MODE_WS) {
        ws_process(c);
        return;
    }
    if (!c->x.active && !c->receiving && !c->closing && c->in.len == 0)
        timer_set(c, T_IDLE, s->lim.idle_timeout_ms);
    flush_and_notify(c);
}

static void on_timer(uv_timer_t *t) {
    conn *c = t->data;
    uint64_t now = uv_now(c->s->loop);
    if (c->timer_kind == T_NONE) return;
    if (c->timer_due > now) {  /* moved later since it was armed */
        uv_timer_start(&c->timer, on_timer, c->timer_due - now, 0);
        return;
    }
    int kind = c->timer_kind;
    c->timer_kind = T_NONE;
    switch (kind) {
    case T_REQUEST:
        if (c->receiving) reject(c, 408, "request not completed in time");
        break;
    case T_PROCESS:
        if (c->mode == MODE_WS) ws_process(c);
        else http_process(c);
        break;
    case T_IDLE:
    case T_LINGER:
    case T_WS_CLOSE:
    case T_FAIL:
        conn_close(c);
        break;
    default:
        break;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)suggested;
    conn *c = h->data;
    if (c->in.cap - c->in.len < READ_RESERVE) buf_reserve(&c->in, READ_RESERVE);
    b->base = c->in.data + c->in.len;
    b->len = c->in.cap - c->in.len - 1;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
    (void)b;
    conn *c = st->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->in.len += (size_t)nread;
    c->in.data[c->in.len] = '\0';
    if (c->lingering || c->failed || c->closing) {  /* nothing more will be read from it */
        buf_clear(&c->in);
        return;
    }
    if (c->mode == MODE_WS) {
        ws_process(c);
        return;
    }
    /* A client pipelining far ahead of a pending handler waits. */
    if (c->x.active && c->in.len > c->s->lim.max_header + c->s->lim.max_body) {
        uv_read_stop(st);
        c->read_paused = 1;
    }
    http_process(c);
}

/* --- WebSocket --- */

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* Sec-WebSocket-Accept for a key; 0 when the key is not 16 bytes of base64. */
static int ws_accept_key(const char *key, char out[29]) {
    unsigned char raw[20];
    if (strlen(key) != 24 || key[22] != '=' || key[23] != '=' ||
        EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18)
        return 0;
    char cat[24 + sizeof WS_GUID];
    memcpy(cat, key, 24);
    memcpy(cat + 24, WS_GUID, sizeof WS_GUID);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    if (!EVP_Digest(cat, 24 + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL)) return 0;
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    return 1;
}

static int token_in(const char *list, const char *tok) {
    size_t n = strlen(tok);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        if (strncasecmp(p, tok, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t')) return 1;
        p = strchr(p, ',');
    }
    return 0;
}

static void respond_error(http_exchange *x, int status, const char *msg) {
    buf body = BUF_INIT;
    put_error_body(&body, status, msg);
    http_respond(x, status, "application/json", body.data, body.len);
    buf_free(&body);
}

static void ws_send_frame(conn *c, int opcode, const void *data, size_t len) {
    uint8_t h[WS_FRAME_HEAD_MAX];
    size_t hl = ws_frame_head(h, opcode, 1, len);
    buf_reserve(&c->out, hl + len);
    buf_append(&c->out, h, hl);
    buf_append(&c->out, data, len);
    flush(c);
}

static void ws_send_close(conn *c, int code, const char *reason) {
    uint8_t p[125];
    size_t n = 0;
    if (code != WS_CLOSE_NO_STATUS) {
        size_t rlen = reason ? strlen(reason) : 0;
        if (rlen > sizeof p - 2) rlen = sizeof p - 2;
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        if (rlen) memcpy(p + 2, reason, rlen);
        n = 2 + rlen;
    }
    c->ws.close_sent = 1;
    ws_send_frame(c, WS_OP_CLOSE, p, n);
}

ws_conn *http_upgrade_websocket(http_exchange *x, const ws_callbacks *cb, void *ud) {
    if (!exchange_usable(x, "http_upgrade_websocket")) return NULL;
    conn *c = x->c;
    const http_request *req = &c->req;
    const char *version = http_request_header(req, "sec-websocket-version");
    const char *key = http_request_header(req, "sec-websocket-key");
    char accept[29];
    if (strcmp(req->method, "GET") != 0 || !c->p.upgrade ||
        !token_in(http_request_header(req, "upgrade"), "websocket")) {
        respond_error(x, 400, "not a WebSocket upgrade request");
        return NULL;
    }
    if (!version || strcmp(version, "13") != 0) {
        http_add_header(x, "Sec-WebSocket-Version", "13");
        respond_error(x, 426, "unsupported Sec-WebSocket-Version (13 is)");
        return NULL;
    }
    if (!key || !ws_accept_key(key, accept)) {
        respond_error(x, 400, "missing or invalid Sec-WebSocket-Key");
        return NULL;
    }
    if (dropping(x)) {
        exchange_finish(c);
        return NULL;
    }
    put_head_start(c, 101);
    buf_append(&c->out, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ", 63);
    buf_append(&c->out, accept, 28);
    buf_append(&c->out, "\r\n", 2);
    buf_append(&c->out, x->hdrs.data, x->hdrs.len);
    buf_append(&c->out, "\r\n", 2);
    ws_conn *ws = &c->ws;
    ws->c = c;
    ws->cb = *cb;
    ws->ud = ud;
    ws->open = 1;
    ws->close_sent = 0;
    ws_reader_init(&ws->reader, c->s->lim.max_ws_message, 1);
    c->mode = MODE_WS;
    stat_add(&c->s->streams, 1);
    exchange_finish(c);
    return ws;
}

/* Acts on complete frames in `in`. Our close frame (an echo, or a protocol
 * error's) ends the connection once it is written. */
static void ws_process(conn *c) {
    if (c->processing) return;
    c->processing = 1;
    c->corked = 1;
    ws_conn *ws = &c->ws;
    size_t off = 0;
    while (!conn_dead(c) && !c->closing) {
        ws_event ev;
        size_t used;
        int t = ws_reader_next(&ws->reader, (uint8_t *)c->in.data + off, c->in.len - off, &used, &ev);
        off += used;
        if (t == WS_EV_NONE) break;
        if (t == WS_EV_MESSAGE) {
            if (ws->open && !ws->close_sent) ws->cb.on_message(ws, ev.is_text, ev.data, ev.len, ws->ud);
        } else if (t == WS_EV_PING) {
            if (!ws->close_sent) ws_send_frame(c, WS_OP_PONG, ev.data, ev.len);
        } else if (t == WS_EV_CLOSE) {
            if (!ws->close_sent) ws_send_close(c, ev.code, NULL);
            c->closing = 1;
        } else if (t == WS_EV_ERROR) {
            log_debug("ws: closing with %d: %s", ev.code, ev.reason);
            if (!ws->close_sent) ws_send_close(c, ev.code, ev.reason);
            c->closing = 1;
        }
    }
    if (!c->closed) buf_consume(&c->in, off);
    c->processing = 0;
    c->corked = 0;
    flush_and_notify(c);
}

void ws_send_text(ws_conn *ws, const char *data, size_t len) {
    if (!ws->open || ws->close_sent || conn_dead(ws->c)) return;
    ws_send_frame(ws->c, WS_OP_TEXT, data, len);
}

size_t ws_backlog(const ws_conn *ws) { return conn_dead(ws->c) ? 0 : backlog(ws->c); }

void ws_close(ws_conn *ws, int code, const char *reason) {
    conn *c = ws->c;
    if (!ws->open || ws->close_sent || conn_dead(c)) return;
    if (code < 1000 || code == WS_CLOSE_NO_STATUS || code == 1006 || code == 1015 || code > 4999)
        code = WS_CLOSE_NORMAL;
    ws_send_close(c, code, reason);
    timer_set(c, T_WS_CLOSE, WS_CLOSE_WAIT_MS);
}

uv_loop_t *ws_loop(const ws_conn *ws) { return ws->c->s->loop; }

/* --- server --- */

static void free_handle(uv_handle_t *h) { free(h); }

/* Over max_connections: answer 503 with what fits in the socket buffer
 * and close, without setting up a conn. */
static void refuse_busy(http_server *s) {
    uv_tcp_t *t = xmalloc(sizeof *t);
    uv_tcp_init(s->loop, t);
    if (uv_accept((uv_stream_t *)&s->tcp, (uv_stream_t *)t) == 0) {
        stat_add(&s->rejected, 1);
        buf body = BUF_INIT, msg = BUF_INIT;
        put_error_body(&body, 503, "too many open connections");
        buf_printf(&msg, "HTTP/1.1 503 Service Unavailable\r\nServer: msoa\r\n"
                   "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                   body.len, body.data);
        uv_buf_t b = uv_buf_init(msg.data, (unsigned)msg.len);
        if (uv_try_write((uv_stream_t *)t, &b, 1) < 0) log_debug("http: could not send 503");
        buf_free(&body);
        buf_free(&msg);
    }
    uv_close((uv_handle_t *)t, free_handle);
}

static void on_connection(uv_stream_t *server, int status) {
    http_server *s = server->data;
    if (status < 0) {
        log_warn("http: accept failed: %s", uv_strerror(status));
        return;
    }
    if (s->closing) return;
    if (atomic_load_explicit(&s->connections, memory_order_relaxed) >= s->lim.max_connections) {
        refuse_busy(s);
        return;
    }
    conn *c = xcalloc(1, sizeof *c);
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->x.c = c;
    c->ws.c = c;
    c->refs = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    stat_add(&s->connections, 1);
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        log_warn("http: accept failed: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    timer_set(c, T_IDLE, s->lim.idle_timeout_ms);
}

http_server *http_server_new(uv_loop_t *loop, const http_limits *lim, http_handler handler, void *ud) {
    http_server *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    http_limits_default(&s->lim);
    if (lim) {
        /* Zero fields keep their defaults. */
        if (lim->max_body) s->lim.max_body = lim->max_body;
        if (lim->max_header) s->lim.max_header = lim->max_header;
        if (lim->max_connections) s->lim.max_connections = lim->max_connections;
        if (lim->idle_timeout_ms) s->lim.idle_timeout_ms = lim->idle_timeout_ms;
        if (lim->request_timeout_ms) s->lim.request_timeout_ms = lim->request_timeout_ms;
        if (lim->max_ws_message) s->lim.max_ws_message = lim->max_ws_message;
    }
    s->handler = handler;
    s->ud = ud;
    return s;
}

int http_server_listen(http_server *s, const char *host, int port, int reuseport) {
    struct sockaddr_storage addr;
    if (!host || !*host) host = "0.0.0.0";
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc < 0) return rc;
    if (!s->tcp_inited) {
        rc = uv_tcp_init_ex(s->loop, &s->tcp, addr.ss_family);
        if (rc < 0) return rc;
        s->tcp_inited = 1;
        s->tcp.data = s;
    }
    if (reuseport) {
        uv_os_fd_t fd;
        int one = 1;
        rc = uv_fileno((uv_handle_t *)&s->tcp, &fd);
        if (rc < 0) return rc;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) return uv_translate_sys_error(errno);
    }
    rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->tcp, 511, on_connection);
    if (rc < 0) return rc;
    int len = sizeof addr;
    rc = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&addr, &len);
    if (rc < 0) return rc;
    s->port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                               : ((struct sockaddr_in *)&addr)->sin_port);
    return 0;
}

int http_server_port(const http_server *s) { return s->port; }

static void flush_due(http_server *s) {
    s->flushing = 1;
    while (s->flush_head) {
        conn *c = s->flush_head;
        flush_unlist(c);
        flush_and_notify(c);
    }
    s->flushing = 0;
}

static void on_flusher(uv_check_t *h) { flush_due(h->data); }
static void on_preflusher(uv_prepare_t *h) { flush_due(h->data); }

void http_server_batch_writes(http_server *s) {
    if (s->batch_writes) return;
    s->batch_writes = 1;
    uv_check_init(s->loop, &s->flusher);
    uv_prepare_init(s->loop, &s->preflusher);
    s->flusher.data = s->preflusher.data = s;
    uv_check_start(&s->flusher, on_flusher);
    uv_prepare_start(&s->preflusher, on_preflusher);
    uv_unref((uv_handle_t *)&s->flusher); /* they alone do not keep a loop running */
    uv_unref((uv_handle_t *)&s->preflusher);
    s->flushers_open = 2;
}

void http_server_stats_get(const http_server *s, http_server_stats *out) {
    out->connections = atomic_load_explicit(&s->connections, memory_order_relaxed);
    out->streams = atomic_load_explicit(&s->streams, memory_order_relaxed);
    out->requests = atomic_load_explicit(&s->requests, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&s->rejected, memory_order_relaxed);
}

static void on_listener_closed(uv_handle_t *h) {
    http_server *s = h->data;
    s->listener_closed = 1;
    server_maybe_done(s);
}

static void on_flusher_closed(uv_handle_t *h) {
    http_server *s = h->data;
    s->flushers_open--;
    server_maybe_done(s);
}

void http_server_close(http_server *s, void (*done)(void *), void *ud) {
    s->closing = 1;
    s->done = done;
    s->done_ud = ud;
    if (s->batch_writes) {
        flush_due(s);
        s->batch_writes = 0; /* what closing conns still write goes at once */
        uv_close((uv_handle_t *)&s->flusher, on_flusher_closed);
        uv_close((uv_handle_t *)&s->preflusher, on_flusher_closed);
    }
    /* Each conn_close may run handler callbacks that finish exchanges and
     * free other, already closed conns: keep the next one pinned. */
    conn *c = s->conns;
    if (c) c->refs++;
    while (c) {
        conn *n = c->next;
        if (n) n->refs++;
        conn_close(c);
        conn_unref(c);
        c = n;
    }
    if (s->tcp_inited) {
        uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
    } else {
        s->listener_closed = 1;
        server_maybe_done(s);
    }
}
